"""Runs `redwarden cluster secure CLUSTER --rotate ROLE`: the steps of `controller.core.rotate`, each done and
verified here; the run itself (one step at a time, audited, stopped by a failover or a changed node set) is
the migration's (`controller.app.secure.Securer`).

Layer: app. The new secret is made here (the application's roles: the console made it and sends its SHA-256)
and recorded (`AclUsersStore.store_rotation`) before anything changes in the cluster; a second run takes the
recorded one. Both secrets are accepted until every consumer has moved. No secret reaches a step's detail,
an error, the log or the actions log: the commands' errors come back scrubbed (`AclOps`).
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Callable

from controller.adapters.acl_ops import AclOps
from controller.adapters.redis_ops import OpsError
from controller.adapters.storage.acl_users import AclUsersStore, Rotation
from controller.app.secure import Securer, StepFailed, StepHeld, pairs
from controller.core.rotate import CONTROLLER, ON_REDIS, ON_SENTINEL, OPERATOR_ROLES, ROLES
from controller.core.secure import SecureStep
from protocol.acl import ClusterUsers

_HEX64 = re.compile(r"[0-9a-f]{64}")


def new_password() -> str:
    return secrets.token_hex(24)


class Rotator:
    """One rotation run's steps over a cluster (`do`), given the recorded rotation."""

    def __init__(self, securer: Securer, cluster: str, rotation: Rotation, legacy: str | None,
                 steps: tuple[SecureStep, ...]) -> None:
        self.s = securer
        self.cluster = cluster
        self.rotation = rotation
        self.role = rotation.role
        self.legacy = legacy
        self.steps = steps
        self.old_sha = rotation.old.role_sha256(self.role) or ""
        self.new_sha = rotation.new.role_sha256(self.role) or ""
        self._moved = False  # controller_users done in this run: the controller is admin with the new secret

    # -- the connections -------------------------------------------------------------------------------------
    def ops(self) -> AclOps:
        """As admin: the new admin secret once the controller holds it (admin's rotation), else the old."""
        old, new = self.rotation.old, self.rotation.new
        first, then = (new.admin, old.admin) if self._moved else (old.admin, new.admin)
        every = [u for u in (old.admin, old.replication, old.sentinel, old.monitor, new.admin, new.replication,
                             new.sentinel, new.monitor) if u]
        return AclOps(first, self.legacy, every, also_admin=then if then != first else None)

    def _places(self, step: SecureStep) -> list[tuple[str, bool]]:
        """Where the role's user is on a node: (address, is_sentinel)."""
        out = []
        if self.role in ON_REDIS:
            out.append((step.redis_address, False))
        if self.role in ON_SENTINEL:
            out.append((step.sentinel_address, True))
        return out

    def _password(self, users: ClusterUsers) -> str | None:
        return None if self.role in OPERATOR_ROLES else str(getattr(users, self.role))

    def _hashes(self, ops: AclOps, address: str, sentinel: bool) -> set[str]:
        reply = ops.run(address, "ACL", "GETUSER", self.role, sentinel=sentinel)
        if reply is None:
            raise OpsError(f"{address} has no user {self.role}: run `redwarden cluster secure` first")
        data = pairs(reply)
        return {str(h) for h in data.get("passwords") or []}

    def _persist(self, ops: AclOps, address: str, sentinel: bool) -> None:
        if sentinel:
            ops.run(address, "SENTINEL", "FLUSHCONFIG", sentinel=True)
        else:
            ops.run(address, "CONFIG", "REWRITE")

    # -- the steps ------------------------------------------------------------------------------------------
    def do(self, step: SecureStep) -> str:
        ops = self.ops()
        phase = step.phase
        if phase == "add_secret":
            return self._set_secrets(ops, step, {self.old_sha, self.new_sha}, "the old and the new secret")
        if phase == "hold_for_operator":
            raise StepHeld(f"the new {self.role} password works on every node next to the old one: move the "
                           f"application to it, then run `redwarden cluster secure {self.cluster} --rotate "
                           f"{self.role} --apply --finish` to remove the old one")
        if phase == "controller_users":
            return self._controller_users()
        if phase == "replication_secret":
            self.s.replication_auth(ops, step, self.rotation.new, self.steps)
            return "masterauth is the new secret" + ("" if step.is_master else "; the link is up again as replication")
        if phase == "sentinel_secret":
            return self._sentinel_secret(ops, step)
        if phase == "agent_users":
            return self.s.agent_user(self.cluster, step, self.rotation.new.node_users())
        if phase == "remove_old":
            detail = self._set_secrets(ops, step, {self.new_sha}, "only the new secret")
            old, new = self._password(self.rotation.old), self._password(self.rotation.new)
            for address, _ in self._places(step):
                if old is not None and ops.try_auth(address, self.role, old) is None:
                    raise StepFailed(f"{address} still accepts the old {self.role} secret")
                if new is not None and (refused := ops.try_auth(address, self.role, new)) is not None:
                    raise StepFailed(f"{address} refuses the new {self.role} secret: {refused}")
            return detail + ("; the old one is refused" if old is not None else "")
        if phase == "verify":
            return self._verify(ops, step)
        if phase == "done":
            assert self.s.store is not None
            self.s.store.clear_rotation(self.cluster)
            return f"the rotation of {self.role} is complete"
        raise StepFailed(f"unknown phase {phase}")

    def _set_secrets(self, ops: AclOps, step: SecureStep, wanted: set[str], what: str) -> str:
        known = {self.old_sha, self.new_sha, *self.rotation.superseded}
        for address, sentinel in self._places(step):
            have = self._hashes(ops, address, sentinel)
            if not have & known or have - known:
                # resetpass would drop a password the controller does not know (somebody set it): refuse
                raise StepFailed(f"user {self.role} on {address} has {len(have - known)} password(s) the controller "
                              "does not know: stopped, nothing changed there")
            ops.run(address, "ACL", "SETUSER", self.role, "resetpass", *(f"#{h}" for h in sorted(wanted)),
                    sentinel=sentinel)
            self._persist(ops, address, sentinel)
            if self._hashes(ops, address, sentinel) != wanted:
                raise StepFailed(f"user {self.role} on {address} does not hold {what}")
            new = self._password(self.rotation.new)
            if new is not None and (refused := ops.try_auth(address, self.role, new)) is not None:
                raise StepFailed(f"{address} refuses the new {self.role} secret: {refused}")
        return f"user {self.role} accepts {what} on {', '.join(a for a, _ in self._places(step))} (persisted)"

    def _controller_users(self) -> str:
        store = self.s.store
        assert store is not None
        store.store_users(self.cluster, self.rotation.new)
        if self.s.users(self.cluster, self.s.clusters[self.cluster]) != self.rotation.new:
            raise StepFailed(f"the controller reads back other users than it wrote to {store.users_path(self.cluster)}")
        self._moved = True
        if self.role != "admin":
            return f"the controller holds the new {self.role} secret ({store.users_path(self.cluster).name})"
        ops = self.ops()
        for s in self.steps:
            if s.node == CONTROLLER or s.phase != "add_secret":
                continue
            for address in (s.redis_address, s.sentinel_address):
                if (refused := ops.try_auth(address, "admin", self.rotation.new.admin, "ROLE")) is not None:
                    raise StepFailed(f"{address} refuses the controller's new admin secret: {refused}")
        return "the controller holds the new admin secret and authenticates with it on every Redis and Sentinel"

    def _sentinel_secret(self, ops: AclOps, step: SecureStep) -> str:
        address, new = step.sentinel_address, self.rotation.new.sentinel
        ops.run(address, "SENTINEL", "CONFIG", "SET", "sentinel-pass", new, sentinel=True)
        ops.run(address, "SENTINEL", "SET", self.s.clusters[self.cluster].master_name, "auth-pass", new,
                sentinel=True)
        return self._relink_sentinel(ops, step)

    def _relink_sentinel(self, ops: AclOps, step: SecureStep) -> str:
        """Drop every link of this Sentinel (to its peers and to every Redis) once; wait until it has new ones,
        as `sentinel` (a fresh connection authenticates with what the Sentinel holds now), and sees its master up."""
        address = step.sentinel_address
        prefix = f"sentinel-{str(ops.run(address, 'SENTINEL', 'MYID', sentinel=True))[:8]}-"
        targets = [(s.sentinel_address, True) for s in self.steps if s.phase == "add_secret" and s.node != step.node]
        targets += [(s.redis_address, False) for s in self.steps if s.phase == "add_secret"]
        for target, is_sentinel in targets:
            killed = set()
            for c in ops.client_list(target, sentinel=is_sentinel):
                if c.get("name", "").startswith(prefix):
                    killed.add(c.get("id", ""))
                    with contextlib.suppress(OpsError):  # gone already
                        ops.run(target, "CLIENT", "KILL", "ID", c["id"], sentinel=is_sentinel)

            def relinked(target: str = target, is_sentinel: bool = is_sentinel,
                         killed: set[str] = killed) -> str | None:
                mine = [c for c in ops.client_list(target, sentinel=is_sentinel)
                        if c.get("name", "").startswith(prefix)]
                if not any(c.get("name", "").endswith("-cmd") and c.get("id") not in killed for c in mine):
                    return f"no new command link from the Sentinel on {target} yet"
                wrong = sorted({c.get("user", "?") for c in mine} - {"sentinel"})
                return f"links on {target} authenticate as {wrong}" if wrong else None

            self.s.wait(f"the Sentinel's links on {target} again, as sentinel", relinked)
        master_name = self.s.clusters[self.cluster].master_name

        def master_ok() -> str | None:
            flags = str(pairs(ops.run(address, "SENTINEL", "MASTER", master_name, sentinel=True)).get("flags", ""))
            return None if flags == "master" else f"the Sentinel flags its master {flags}"

        self.s.wait("the Sentinel sees its master up", master_ok)
        peers = sum(1 for _, is_sentinel in targets if is_sentinel)
        return (f"its links to {peers} peer Sentinels and {len(targets) - peers} Redis are new, as sentinel; its "
                "master is up in its view")

    def _verify(self, ops: AclOps, step: SecureStep) -> str:
        if self.role == "replication":
            if step.is_master:
                return "the master has no link of its own to verify"
            self.s.replication_auth(ops, step, self.rotation.new, self.steps)
            return "the link is up again as replication, with only the new secret"
        if self.role == "sentinel":
            return self._relink_sentinel(ops, step)
        if self.role == "monitor":
            killed_at = self.s.clock()
            ops.run(step.redis_address, "CLIENT", "KILL", "USER", "monitor")

            def reports_again() -> str | None:
                state = self.s.fleet.view(self.cluster, self.s.clock()).node(step.node)
                if state is None or state.received_at <= killed_at + 0.1:
                    return "no report since its connection was dropped"
                redis = state.report.redis
                if not redis.reachable or redis.acl_user != "monitor":
                    return f"its report: Redis reachable {redis.reachable} as {redis.acl_user}"
                return None

            self.s.wait(f"{step.node}'s agent reports again as monitor", reports_again, 45.0)
            return "the agent reconnected as monitor with only the new secret and reports"
        return "nothing more to verify"


def prepare_rotation(store: AclUsersStore, cluster: str, users: ClusterUsers, role: str, finish: bool,
                     new_sha256: str | None, make: Callable[[], str] = new_password) -> Rotation:
    """The rotation this run carries out, recorded before anything changes; PermissionError (why) when none can
    be: another role's rotation is unfinished, `finish` without a first run, an application role without the
    SHA-256 of its new password."""
    if role not in ROLES:
        raise PermissionError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    pending = store.rotation(cluster)
    if pending is not None and pending.role != role:
        raise PermissionError(f"the rotation of {pending.role} is unfinished: run `redwarden cluster secure {cluster} "
                              f"--rotate {pending.role} --apply{' --finish' if pending.role in OPERATOR_ROLES else ''}`"
                              " first")
    if role == "discovery" and users.discovery_sha256 is None and pending is None:
        raise PermissionError("this cluster has no discovery user to rotate")
    if role in OPERATOR_ROLES:
        if finish:
            if pending is None:
                raise PermissionError(f"no rotation of {role} to finish: run `--rotate {role} --apply` first")
            return pending
        if new_sha256 is None or not _HEX64.fullmatch(new_sha256):
            raise PermissionError(f"the SHA-256 of the new {role} password (64 hex digits) is missing: the console "
                                  "makes the password and sends its hash")
        old = pending.old if pending is not None else users
        if old.role_sha256(role) == new_sha256:
            raise PermissionError(f"the new {role} password is the old one")
        # a first run again (the operator lost the password, or never saw it): a new one; the earlier one goes
        superseded = (*pending.superseded, pending.new.role_sha256(role) or "") if pending is not None else ()
        rotation = Rotation(role, old, old.with_secret(role, new_sha256),
                            tuple(h for h in dict.fromkeys(superseded) if h and h != new_sha256))
    elif pending is not None:
        return pending  # a second run: the same new secret
    else:
        try:
            rotation = Rotation(role, users, users.with_secret(role, make()))
        except ValueError as e:
            raise PermissionError(str(e)) from None
    store.store_rotation(cluster, rotation)
    return rotation


def start_rotation(securer: Securer, cluster: str, users: ClusterUsers, legacy: str | None,
                   steps: tuple[SecureStep, ...], role: str, finish: bool, new_sha256: str | None) -> Rotator:
    """The run of `steps` (`plan_rotate`), its rotation recorded first (`prepare_rotation`): the Securer's
    `rotations` (`controller.app.service` wires it)."""
    assert securer.store is not None
    return Rotator(securer, cluster, prepare_rotation(securer.store, cluster, users, role, finish, new_sha256),
                   legacy, steps)
