"""Runs `redwarden cluster secure`: the plan of `controller.core.secure`, one step at a time, each verified
before the next, each written to the actions log; stops at the first step that fails or is held.

Layer: app. A dry run (`plan`) only reads: the plan and what each node runs now. A run (`start`) goes in a
thread of its own; the API serves its progress (`job`). Before every step the Sentinels are asked who the
master is and under which config epoch: a change (a failover) stops the run, which can then be started
again (every step sets its end state, whatever was there, so a second run redoes nothing harmful). No
secret reaches the job, the log or the actions log.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from controller.adapters.acl_ops import AclOps
from controller.adapters.redis_ops import OpsError
from controller.adapters.storage.acl_users import AclUsersStore
from controller.adapters.storage.heal_log import HealStore
from controller.app.fleet import Fleet
from controller.config import ClusterConfig
from controller.core.rotate import CONTROLLER, ON_REDIS, ON_SENTINEL, describe, node_set_change, plan_rotate
from controller.core.secure import SecureNode, SecureStep, plan_problem, plan_secure
from protocol.acl import ClusterUsers, NodeUsers, redis_user_lines, sentinel_user_lines, setuser_args, user_name
from protocol.directives import DIRECTIVE_TTL_S, SetRedisUsersDirective
from protocol.report import DirectiveAck
from protocol.seal import seal

log = structlog.get_logger("redwarden.controller")

ACTION_KIND = "SecureCluster"
VERIFY_TIMEOUT_S = 20.0
AGENT_TIMEOUT_S = 45.0
ACL_VERSION = (7, 0)  # the rules are written for Redis >= 6.2 (channel rules); older servers are refused


class StepFailed(Exception):
    """A step could not be done or verified; the message says which and why (no secret)."""


class StepHeld(Exception):
    """A step must wait for the operator (clients still on `default`); the message says what to do."""


class DirectiveSender(Protocol):
    def send(self, cluster: str, node: str, directive: SetRedisUsersDirective) -> None: ...

    def on_ack(self, handler: Callable[[str, str, DirectiveAck], None]) -> None: ...


class KeySource(Protocol):
    def key(self, cluster: str, node: str) -> bytes | None: ...


class RotationRun(Protocol):
    """One rotation's steps, done and verified (`controller.app.rotate.Rotator`)."""

    def do(self, step: SecureStep) -> str: ...

    def ops(self) -> AclOps:
        """The connections as admin, with whichever of its secrets the controller holds now."""
        ...


# (securer, cluster, users, legacy password, steps, role, finish, SHA-256 of an operator's new password) -> the
# run, its rotation recorded; PermissionError when none can start (`controller.app.rotate.start_rotation`)
StartRotation = Callable[["Securer", str, ClusterUsers, str | None, tuple[SecureStep, ...], str, bool, str | None],
                         RotationRun]


@dataclass
class SecureJob:
    cluster: str
    steps: list[dict[str, Any]]
    state: str = "running"  # running | done | failed | held
    message: str = ""
    started_at: float = 0.0
    finished_at: float | None = None
    master: str | None = None
    config_epoch: int | None = None
    acks: dict[str, DirectiveAck] = field(default_factory=dict)
    rotate: str | None = None  # the role whose secret this run rotates (None: the migration)

    def as_dict(self) -> dict[str, Any]:
        return {"cluster": self.cluster, "rotate": self.rotate, "state": self.state, "message": self.message,
                "started_at": self.started_at, "finished_at": self.finished_at, "master": self.master,
                "config_epoch": self.config_epoch, "steps": [dict(s) for s in self.steps]}


class Securer:
    def __init__(self, clusters: Mapping[str, ClusterConfig], fleet: Fleet, directives: DirectiveSender,
                 keys: KeySource, audit: HealStore,
                 users: Callable[[str, ClusterConfig], ClusterUsers | None],
                 legacy_password: Callable[[str, ClusterConfig], str | None],
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
                 ops: Callable[[ClusterUsers, str | None], AclOps] | None = None,
                 store: AclUsersStore | None = None, rotations: StartRotation | None = None) -> None:
        self.clusters = clusters
        self.fleet = fleet
        self.directives = directives
        self.keys = keys
        self.audit = audit
        self.users = users
        self.legacy_password = legacy_password
        self.clock = clock
        self.sleep = sleep
        self.store = store  # where rotations keep the users they made (None: no rotation here)
        self.rotations = rotations
        self._ops = ops or (lambda u, legacy: AclOps(u.admin, legacy, (u.replication, u.sentinel, u.monitor)))
        self._lock = threading.Lock()
        self._jobs: dict[str, SecureJob] = {}
        self._acks: dict[str, DirectiveAck] = {}
        directives.on_ack(self._acknowledged)

    # -- the API's three questions ------------------------------------------------------------------------
    def plan(self, cluster: str, rotate: str | None = None, finish: bool = False) -> dict[str, Any]:
        """The dry run: the steps, and what each node runs now (read only). PermissionError if no plan can be
        made (the reason in its message). `rotate`: the plan that gives that role a new secret."""
        users, legacy, nodes = self._prepare(cluster)
        ops = self._ops(users, legacy)
        observed = {n.name: self._observe(ops, cluster, n) for n in nodes}
        if rotate is not None:
            if (problem := self._rotation_problem(ops, cluster, rotate, nodes)) is not None:
                raise PermissionError(problem)
            pending = self.store.rotation(cluster) if self.store is not None else None
            return {"cluster": cluster, "dry_run": True, "rotate": rotate, "finish": finish,
                    "unfinished_rotation": pending.role if pending else None,
                    "steps": self._rotation_rows(rotate, nodes, finish), "observed": observed,
                    "master": next(n.redis_address for n in nodes if n.is_master)}
        steps = [{"phase": s.phase, "node": s.node, "description": s.description} for s in plan_secure(nodes)]
        return {"cluster": cluster, "dry_run": True, "steps": steps, "observed": observed,
                "master": next(n.redis_address for n in nodes if n.is_master)}

    def start(self, cluster: str, rotate: str | None = None, finish: bool = False,
              new_sha256: str | None = None) -> dict[str, Any]:
        """Start a run in its own thread; PermissionError when one runs already or no plan can be made.
        `rotate`: give that role a new secret (`controller.app.rotate`) instead of the migration."""
        with self._lock:
            running = self._jobs.get(cluster)
            if running is not None and running.state == "running":
                raise PermissionError(f"cluster {cluster} is being secured already")
        users, legacy, nodes = self._prepare(cluster)
        if rotate is None:
            if self.store is not None and (pending := self.store.rotation(cluster)) is not None:
                raise PermissionError(f"the rotation of {pending.role} is unfinished: finish it first")
            steps = plan_secure(nodes)
            rows = [(s, s.description) for s in steps]
            ops = self._ops(users, legacy)
            do: Callable[[SecureStep], str] = lambda step: self._do(  # noqa: E731
                ops, cluster, users, legacy, step, steps)
            ops_now: Callable[[], AclOps] = lambda: ops  # noqa: E731
            done = "every role has its own user; default is off; no failover happened"
        else:
            if self.store is None or self.rotations is None:
                raise PermissionError("this controller keeps no state directory for rotated users")
            try:
                steps = plan_rotate(rotate, nodes, finish)
            except ValueError as e:
                raise PermissionError(str(e)) from None
            if (problem := self._rotation_problem(self._ops(users, legacy), cluster, rotate, nodes)) is not None:
                raise PermissionError(problem)  # before the rotation is recorded: nothing left to finish
            rotator = self.rotations(self, cluster, users, legacy, steps, rotate, finish, new_sha256)
            rows = [(s, describe(s, rotate)) for s in steps]
            do, ops_now = rotator.do, rotator.ops
            done = f"{rotate} has its new secret only; every consumer uses it; no failover happened"
        job = SecureJob(cluster, [{"phase": s.phase, "node": s.node, "description": text,
                                   "status": "pending", "detail": ""} for s, text in rows],
                        started_at=self.clock(), rotate=rotate)
        with self._lock:
            self._jobs[cluster] = job
        threading.Thread(target=self._run, args=(job, steps, do, ops_now, done), name=f"secure-{cluster}",
                         daemon=True).start()
        return job.as_dict()

    @staticmethod
    def _rotation_problem(ops: AclOps, cluster: str, role: str, nodes: tuple[SecureNode, ...]) -> str | None:
        """Why `role` cannot be rotated now (a node without that user: the cluster is not on ACL users yet, or
        cannot be asked), or None."""
        for node in nodes:
            places = [(node.redis_address, False)] if role in ON_REDIS else []
            places += [(node.sentinel_address, True)] if role in ON_SENTINEL else []
            for address, sentinel in places:
                try:
                    users = {str(u) for u in ops.run(address, "ACL", "USERS", sentinel=sentinel) or ()}
                except OpsError as e:
                    return f"cannot ask {node.name} for its users: {e}"
                if role not in users:
                    return (f"{node.name} has no user {role} on {address}: move the cluster to ACL users first "
                            f"(`redwarden cluster secure {cluster} --apply`)")
        return None

    @staticmethod
    def _rotation_rows(role: str, nodes: tuple[SecureNode, ...], finish: bool) -> list[dict[str, Any]]:
        try:
            steps = plan_rotate(role, nodes, finish)
        except ValueError as e:
            raise PermissionError(str(e)) from None
        return [{"phase": s.phase, "node": s.node, "description": describe(s, role)} for s in steps]

    def job(self, cluster: str) -> dict[str, Any] | None:
        with self._lock:
            job = self._jobs.get(cluster)
            return job.as_dict() if job else None

    # -- preparing ------------------------------------------------------------------------------------------
    def _prepare(self, cluster: str) -> tuple[ClusterUsers, str | None, tuple[SecureNode, ...]]:
        cfg = self.clusters[cluster]
        users = self.users(cluster, cfg)
        if users is None:
            raise PermissionError(f"clusters.{cluster}.acl_users_file is not set on the controller: make the users "
                                  "first (`redwarden controller acl-users`), then restart the controller")
        nodes = self._nodes(cluster)
        problem = plan_problem(nodes, cfg.expected_nodes)
        if problem is not None:
            raise PermissionError(problem)
        return users, self.legacy_password(cluster, cfg), nodes

    def _nodes(self, cluster: str) -> tuple[SecureNode, ...]:
        view = self.fleet.view(cluster, self.clock())
        return tuple(SecureNode(n.name, n.report.identity.redis_address, n.report.identity.sentinel_address,
                                n.report.redis.role == "master") for n in view.fresh_nodes())

    def _observe(self, ops: AclOps, cluster: str, node: SecureNode) -> dict[str, Any]:
        """What a node runs now, for the dry run: its Redis users, masteruser, whether default is on, the user
        its agent reports as, its Sentinel's users and auth-user (None where it could not be read)."""
        out: dict[str, Any] = {"address": node.redis_address, "master": node.is_master}
        try:
            out["redis_users"] = sorted(str(u) for u in ops.run(node.redis_address, "ACL", "USERS"))
            flags = ops.run(node.redis_address, "ACL", "GETUSER", "default")
            out["default_on"] = _flag_on(flags)
            out["masteruser"] = str(pairs(ops.run(node.redis_address, "CONFIG", "GET", "masteruser"))
                                    .get("masteruser") or "") or None
        except OpsError as e:
            out["redis_error"] = str(e)
        try:
            out["sentinel_users"] = sorted(str(u) for u in ops.run(node.sentinel_address, "ACL", "USERS",
                                                                   sentinel=True))
            master = pairs(ops.run(node.sentinel_address, "SENTINEL", "MASTER", self._master_name(cluster),
                                    sentinel=True))
            out["sentinel_auth_user"] = master.get("auth-user")  # absent before Redis 7.2's reply lists it
        except OpsError as e:
            out["sentinel_error"] = str(e)
        state = self.fleet.view(cluster, self.clock()).node(node.name)
        out["agent_user"] = state.report.redis.acl_user if state else None
        return out

    def _master_name(self, cluster: str) -> str:
        return self.clusters[cluster].master_name

    def _acknowledged(self, cluster: str, node: str, ack: DirectiveAck) -> None:
        with self._lock:
            self._acks[ack.id] = ack

    # -- running --------------------------------------------------------------------------------------------
    def _run(self, job: SecureJob, steps: tuple[SecureStep, ...], do: Callable[[SecureStep], str],
             ops: Callable[[], AclOps], done: str) -> None:
        why = "asked by an operator: redwarden cluster secure" + (f" --rotate {job.rotate}" if job.rotate else "")
        try:
            job.master, job.config_epoch = self._master_and_epoch(ops(), job.cluster, steps)
            for i, step in enumerate(steps):
                try:
                    self._guard(ops(), job, steps)
                except StepHeld as e:
                    self._set(job, i, "held", str(e))
                    self._finish(job, "held", str(e))
                    return
                self._set(job, i, "running", "")
                action = self.audit.started(job.cluster, step.node, ACTION_KIND, job.steps[i]["description"], why,
                                            self.clock())
                try:
                    detail = do(step)
                except StepHeld as e:
                    self.audit.finished(action, False, f"held: {e}", self.clock())
                    self._set(job, i, "held", str(e))
                    self._finish(job, "held", str(e))
                    return
                except (StepFailed, OpsError) as e:
                    self.audit.finished(action, False, str(e), self.clock())
                    self._set(job, i, "failed", str(e))
                    self._finish(job, "failed", f"{step.phase} on {step.node}: {e}")
                    return
                self.audit.finished(action, True, detail, self.clock())
                self._set(job, i, "done", detail)
            self._guard(ops(), job, steps)
            self._finish(job, "done", done)
        except StepHeld as e:
            self._finish(job, "held", str(e))
        except (StepFailed, OpsError) as e:
            self._finish(job, "failed", str(e))
        except Exception as e:  # a run never dies silently: the job says what broke
            log.exception("secure.crashed", cluster=job.cluster)
            self._finish(job, "failed", f"internal error: {type(e).__name__}")

    def _set(self, job: SecureJob, i: int, status: str, detail: str) -> None:
        with self._lock:
            job.steps[i] = {**job.steps[i], "status": status, "detail": detail}
        log.info("secure.step", cluster=job.cluster, phase=job.steps[i]["phase"], node=job.steps[i]["node"],
                 status=status)

    def _finish(self, job: SecureJob, state: str, message: str) -> None:
        with self._lock:
            job.state, job.message, job.finished_at = state, message, self.clock()
        log.warning("secure.finished", cluster=job.cluster, state=state, message=message)

    def _master_and_epoch(self, ops: AclOps, cluster: str, steps: tuple[SecureStep, ...]) -> tuple[str, int | None]:
        """The master a strict majority of the Sentinels names, and the highest config epoch among them."""
        named: dict[str, int] = {}
        epochs: list[int] = []
        sentinels = sorted({s.sentinel_address for s in steps if s.sentinel_address})
        for address in sentinels:
            try:
                reply = pairs(ops.run(address, "SENTINEL", "MASTER", self._master_name(cluster), sentinel=True))
            except OpsError:
                continue
            master = f"{reply.get('ip')}:{reply.get('port')}"
            named[master] = named.get(master, 0) + 1
            if str(reply.get("config-epoch", "")).isdigit():
                epochs.append(int(reply["config-epoch"]))
        best = max(named.items(), key=lambda kv: kv[1], default=None)
        if best is None or best[1] * 2 <= len(sentinels):
            raise StepFailed(f"no majority of the {len(sentinels)} Sentinels names one master ({named})")
        return best[0], max(epochs) if epochs else None

    def _guard(self, ops: AclOps, job: SecureJob, steps: tuple[SecureStep, ...]) -> None:
        """Stops the run (StepFailed) when the master moved; holds it (StepHeld) when the nodes changed."""
        planned = {SecureNode(s.node, s.redis_address, s.sentinel_address, s.is_master) for s in steps
                   if s.node != CONTROLLER}
        if (changed := node_set_change(planned, self._nodes(job.cluster))) is not None:
            raise StepHeld(changed)
        master, epoch = self._master_and_epoch(ops, job.cluster, steps)
        if master != job.master or epoch != job.config_epoch:
            raise StepFailed(f"the master moved (now {master}, config epoch {epoch}; was {job.master}, "
                             f"{job.config_epoch}): stopped; run it again once the cluster is healthy")

    def wait(self, what: str, check: Callable[[], str | None], timeout_s: float = VERIFY_TIMEOUT_S) -> None:
        """Poll `check` (None: done; else what is still missing) until done, or fail with its last answer."""
        deadline = time.monotonic() + timeout_s
        while True:
            missing = check()
            if missing is None:
                return
            if time.monotonic() >= deadline:
                raise StepFailed(f"{what}: not within {timeout_s:.0f} s: {missing}")
            self.sleep(0.2)

    def _do(self, ops: AclOps, cluster: str, users: ClusterUsers, legacy: str | None, step: SecureStep,
            steps: tuple[SecureStep, ...]) -> str:
        node_users = users.node_users()
        if step.phase == "redis_users":
            return self._redis_users(ops, step, node_users, users)
        if step.phase == "replication_auth":
            return self.replication_auth(ops, step, users, steps)
        if step.phase == "sentinel_users":
            for line in sentinel_user_lines(node_users):
                if user_name(line) != "default":
                    ops.run(step.sentinel_address, *setuser_args(line), sentinel=True)
            ops.run(step.sentinel_address, "SENTINEL", "FLUSHCONFIG", sentinel=True)
            for user, password in (("sentinel", users.sentinel), ("admin", users.admin)):
                if (refused := ops.try_auth(step.sentinel_address, user, password)) is not None:
                    raise StepFailed(f"the Sentinel refuses {user}: {refused}")
            return "users sentinel and admin accepted; sentinel.conf rewritten"
        if step.phase == "sentinel_peer_auth":
            return self._sentinel_peer_auth(ops, step, users, steps)
        if step.phase == "sentinel_auth":
            return self._sentinel_auth(ops, cluster, step, users, steps)
        if step.phase == "agent_user":
            return self.agent_user(cluster, step, node_users)
        if step.phase == "controller_admin":
            # the controller's healing (`DirectRedisOps`) tries admin first: it is admin wherever admin is accepted
            for address in (step.redis_address, step.sentinel_address):
                if (refused := ops.try_auth(address, "admin", users.admin, "ROLE")) is not None:
                    raise StepFailed(f"{address} refuses the controller's admin user: {refused}")
            return "the controller's healing authenticates as admin on its Redis and its Sentinel"
        if step.phase == "default_off":
            return self._default_off(ops, step, legacy, steps, node_users)
        raise StepFailed(f"unknown phase {step.phase}")

    def _redis_users(self, ops: AclOps, step: SecureStep, node_users: NodeUsers, users: ClusterUsers) -> str:
        version = _version(ops.info(step.redis_address, "server").get("redis_version", ""))
        if version < (6, 2):
            raise StepFailed(f"Redis {version[0]}.{version[1]} on {step.node}: the migration needs Redis >= 6.2")
        for line in redis_user_lines(node_users, ACL_VERSION):
            if user_name(line) != "default":
                ops.run(step.redis_address, *setuser_args(line))
        ops.run(step.redis_address, "CONFIG", "REWRITE")
        for user, password in (("admin", users.admin), ("replication", users.replication),
                               ("sentinel", users.sentinel), ("monitor", users.monitor)):
            if (refused := ops.try_auth(step.redis_address, user, password)) is not None:
                raise StepFailed(f"{step.node} refuses {user}: {refused}")
        return "users set and accepted; redis.conf rewritten"

    def replication_auth(self, ops: AclOps, step: SecureStep, users: ClusterUsers,
                          steps: tuple[SecureStep, ...]) -> str:
        address = step.redis_address
        ops.run(address, "CONFIG", "SET", "masteruser", "replication")
        ops.run(address, "CONFIG", "SET", "masterauth", users.replication)
        ops.run(address, "CONFIG", "REWRITE")
        if step.is_master:
            return "masteruser/masterauth set for after a failover (no link to verify on the master)"
        master = next(s.redis_address for s in steps if s.is_master)
        ops.run(address, "CLIENT", "KILL", "TYPE", "master")  # reconnect now, as replication (a partial resync)

        def linked() -> str | None:
            info = ops.info(address, "replication")
            if info.get("master_link_status") != "up":
                return f"link {info.get('master_link_status')}"
            replicas = [c for c in ops.client_list(master) if "S" in c.get("flags", "")]
            if not any(c.get("user") == "replication" for c in replicas):
                return f"the master's replica links authenticate as {sorted({c.get('user', '?') for c in replicas})}"
            return None

        self.wait("the replication link as user replication", linked)
        return "link up again as user replication"

    def _sentinel_peer_auth(self, ops: AclOps, step: SecureStep, users: ClusterUsers,
                            steps: tuple[SecureStep, ...]) -> str:
        address = step.sentinel_address
        peers = sorted({s.sentinel_address for s in steps} - {address})
        for peer in peers:  # every peer must know the user before this Sentinel authenticates as it
            if (refused := ops.try_auth(peer, "sentinel", users.sentinel)) is not None:
                raise StepFailed(f"the peer Sentinel {peer} refuses user sentinel: {refused}")
        # user first: a user without a password sends no AUTH (the peers' default still answers)
        ops.run(address, "SENTINEL", "CONFIG", "SET", "sentinel-user", "sentinel", sentinel=True)
        ops.run(address, "SENTINEL", "CONFIG", "SET", "sentinel-pass", users.sentinel, sentinel=True)
        prefix = f"sentinel-{str(ops.run(address, 'SENTINEL', 'MYID', sentinel=True))[:8]}-"
        self._relink(ops, prefix, peers, sentinel=True)
        return f"its links to {len(peers)} peers authenticate as sentinel"

    def _sentinel_auth(self, ops: AclOps, cluster: str, step: SecureStep, users: ClusterUsers,
                       steps: tuple[SecureStep, ...]) -> str:
        address = step.sentinel_address
        ops.run(address, "SENTINEL", "SET", self._master_name(cluster), "auth-user", "sentinel", "auth-pass",
                users.sentinel, sentinel=True)
        prefix = f"sentinel-{str(ops.run(address, 'SENTINEL', 'MYID', sentinel=True))[:8]}-"
        self._relink(ops, prefix, sorted({s.redis_address for s in steps}), sentinel=False)

        def master_ok() -> str | None:
            reply = pairs(ops.run(address, "SENTINEL", "MASTER", self._master_name(cluster), sentinel=True))
            flags = str(reply.get("flags", ""))
            return None if flags == "master" else f"the Sentinel flags its master {flags}"

        self.wait("the Sentinel sees its master up", master_ok)
        return "its links to every Redis authenticate as sentinel; the master is up in its view"

    def _relink(self, ops: AclOps, prefix: str, addresses: list[str], sentinel: bool) -> None:
        """Drop a Sentinel's connections (named `prefix`...) that still authenticate as another user than
        `sentinel` on each of `addresses`, then wait until it is connected again, as `sentinel`."""
        for address in addresses:
            for c in ops.client_list(address, sentinel=sentinel):
                if c.get("name", "").startswith(prefix) and c.get("user") != "sentinel":
                    with contextlib.suppress(OpsError):  # gone already
                        ops.run(address, "CLIENT", "KILL", "ID", c["id"], sentinel=sentinel)

            def relinked(address: str = address) -> str | None:
                mine = [c for c in ops.client_list(address, sentinel=sentinel)
                        if c.get("name", "").startswith(prefix)]
                if not any(c.get("name", "").endswith("-cmd") for c in mine):
                    return f"no command link from the Sentinel on {address} yet"
                wrong = sorted({c.get("user", "?") for c in mine} - {"sentinel"})
                return f"links on {address} authenticate as {wrong}" if wrong else None

            self.wait(f"the Sentinel's links on {address} as sentinel", relinked)

    def agent_user(self, cluster: str, step: SecureStep, node_users: NodeUsers) -> str:
        key = self.keys.key(cluster, step.node)
        if key is None:
            raise StepFailed(f"{step.node} has no node key: its agent cannot verify a directive")
        directive = SetRedisUsersDirective(f"secure-{uuid.uuid4().hex[:12]}", step.node,
                                           seal(key, os.urandom(16), node_users.to_json()),
                                           self.clock() + DIRECTIVE_TTL_S)
        sent_at = self.clock()
        self.directives.send(cluster, step.node, directive)

        def acknowledged() -> str | None:
            with self._lock:
                ack = self._acks.get(directive.id)
            if ack is None:
                return "no acknowledgement from the agent"
            if not ack.ok:
                raise StepFailed(f"the agent refused: {ack.error}")
            return None

        self.wait(f"{step.node}'s agent takes its users", acknowledged, AGENT_TIMEOUT_S)

        def reports_as_monitor() -> str | None:
            state = self.fleet.view(cluster, self.clock()).node(step.node)
            if state is None or state.received_at <= sent_at:
                return "no report since"
            return None if state.report.redis.acl_user == "monitor" else f"reports as {state.report.redis.acl_user}"

        self.wait(f"{step.node}'s agent reports as monitor", reports_as_monitor, AGENT_TIMEOUT_S)
        return "the agent stored its users and reports as monitor"

    def _default_off(self, ops: AclOps, step: SecureStep, legacy: str | None, steps: tuple[SecureStep, ...],
                     node_users: NodeUsers) -> str:
        # held while anybody still logs in as default anywhere: once default is off, their next connection fails
        # (connected at two looks 1.5 s apart: a passing probe without AUTH also shows as `default`)
        def on_default_now() -> set[tuple[str, str, str]]:
            return {(s.node, c.get("id", "?"), c.get("addr", "?")) for s in steps if s.phase == "default_off"
                    for c in ops.client_list(s.redis_address)
                    if c.get("user") == "default" and not set(c.get("flags", "")) & {"M", "S"}}

        first = on_default_now()
        self.sleep(1.5)
        on_default = sorted(f"{addr} on {node}" for node, _, addr in first & on_default_now())
        if on_default:
            raise StepHeld(f"{len(on_default)} client(s) still authenticate as default ({', '.join(on_default[:5])}"
                           f"{' ...' if len(on_default) > 5 else ''}): move the application to the app user, then "
                           "run `redwarden cluster secure --apply` again")
        default_line = next(line for line in redis_user_lines(node_users, ACL_VERSION) if user_name(line) == "default")
        ops.run(step.redis_address, *setuser_args(default_line))
        ops.run(step.redis_address, "CONFIG", "SET", "requirepass", "")  # default is off already: stays off
        ops.run(step.redis_address, "CONFIG", "REWRITE")
        if legacy and ops.try_auth(step.redis_address, None, legacy) is None:
            raise StepFailed(f"{step.node} still accepts the old password")
        if ops.try_auth(step.redis_address, None, None) is None:
            raise StepFailed(f"{step.node} answers without a password")
        sentinel_default = next(line for line in sentinel_user_lines(node_users) if user_name(line) == "default")
        ops.run(step.sentinel_address, *setuser_args(sentinel_default), sentinel=True)
        ops.run(step.sentinel_address, "SENTINEL", "FLUSHCONFIG", sentinel=True)
        if ops.try_auth(step.sentinel_address, None, None, "SENTINEL", "FLUSHCONFIG") is None:
            raise StepFailed(f"{step.node}'s Sentinel still obeys a client without a password")
        if (refused := ops.try_auth(step.sentinel_address, None, None, "SENTINEL", "MASTERS")) is not None:
            raise StepFailed(f"{step.node}'s Sentinel refuses discovery without a password: {refused}")
        return "default off on Redis (the old password refused); Sentinel's default answers discovery only"


def pairs(reply: object) -> dict[str, Any]:
    """A flat [k, v, k, v ...] reply (SENTINEL MASTER) as a dict; redis-py may have made it a dict already."""
    if isinstance(reply, dict):
        return {str(k): v for k, v in reply.items()}
    if isinstance(reply, list):
        return {str(reply[i]): reply[i + 1] for i in range(0, len(reply) - 1, 2)}
    return {}


def _flag_on(getuser: object) -> bool | None:
    data = pairs(getuser)
    flags = data.get("flags")
    return "on" in [str(f) for f in flags] if isinstance(flags, list) else None


def _version(text: str) -> tuple[int, int]:
    parts = text.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return (0, 0)
