"""Carries out a healing plan through the adapters, recording every step in the audit log.

Layer: application (effects). Each action is written as `started` before its effect and as its result
after; the heal state is saved after every action, so a controller killed mid-plan resumes from what
was recorded. Dry-run records what would have been done and does nothing. An adapter error fails that
action (recorded, alerted by the findings that remain) and never the cycle.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping

import structlog

from controller.adapters.cloud import Cloud, ProviderError
from controller.adapters.directives import DirectiveQueue
from controller.adapters.redis_ops import OpsError, RedisOps
from controller.adapters.storage.credentials import NodeCredentials
from controller.adapters.storage.db import error_text
from controller.adapters.storage.heal_log import HealStore
from controller.adapters.storage.reports import ReportStore
from controller.app.provisioner import Provisioner
from controller.core.down_after import SentinelDownAfter
from controller.core.fencing import Fence, FollowMaster, RepointSentinel
from controller.core.info_period import SentinelInfoPeriod
from controller.core.planner import (
    Action,
    ActionResult,
    CreateReplacement,
    DestroyDroplet,
    Failover,
    FinishReprovision,
    ForgetNode,
    HealSnapshot,
    HealState,
    MoveReservedIp,
    Plan,
    PowerCycle,
    Reboot,
    Replicaof,
    ResetSentinel,
    RestartService,
    StartReprovision,
    action_node,
    apply_result,
    describe,
)
from protocol.directives import DIRECTIVE_TTL_S, FENCE_TTL_S, FenceDirective, RestartServiceDirective
from protocol.report import DirectiveAck

log = structlog.get_logger("redwarden.controller")


def agent_fence_refusal(agent_fresh: bool, reported_role: str | None) -> str | None:
    """When the controller's own connection to a node it fences fails: why its agent cannot fence it instead,
    or None to send the agent a `FenceDirective`. The agent must still report (its report fresh: it will
    fetch the directive with its next push) and say its Redis is master (else there is nothing to fence)."""
    if not agent_fresh:
        return "its agent's last report is stale (the agent is cut off too)"
    if reported_role != "master":
        return f"its agent no longer reports it master (role {reported_role or 'unknown'})"
    return None


class UnrecordedAction(RuntimeError):
    """The audit log or the heal state could not be written (the state file failed). An action whose start
    could not be recorded is not carried out, and the rest of the plan neither (nothing is done that
    cannot be audited). `state` holds the results of what was done, so the caller keeps it in memory and
    never plans the same action again for want of a write."""

    def __init__(self, state: HealState, what: str) -> None:
        super().__init__(what)
        self.state = state


class Executor:
    def __init__(
        self,
        store: HealStore,
        directives: DirectiveQueue,
        reports: ReportStore,
        credentials: NodeCredentials,
        ops_for: Callable[[str], RedisOps],
        cloud: Cloud | None,
        provisioner: Provisioner,
        clock: Callable[[], float],
        cluster_tags: Mapping[str, str] | None = None,
    ) -> None:
        self.store = store
        self.directives = directives
        self.reports = reports
        self.credentials = credentials
        self.ops_for = ops_for
        self.cloud = cloud
        self.provisioner = provisioner
        self.clock = clock
        self.cluster_tags = dict(cluster_tags or {})
        directives.on_ack(self._on_ack)

    def _on_ack(self, cluster: str, node: str, ack: DirectiveAck) -> None:
        self.store.acknowledged(ack.id, ack.ok, ack.error or "done by the agent", self.clock())
        log.info("action.acknowledged", cluster=cluster, node=node, directive=ack.id, ok=ack.ok)

    def execute(self, snapshot: HealSnapshot, plan: Plan, state: HealState) -> HealState:
        cluster = snapshot.view.name
        failover_ok: bool | None = None  # the last Failover's result in this plan
        for action in plan.actions:
            now = self.clock()
            node = action_node(action)
            if plan.dry_run:
                self.store.started(cluster, node, type(action).__name__, describe(action), action.reason, now,
                                   status="dry-run")
                log.info("action.planned", cluster=cluster, action=describe(action), reason=action.reason,
                         dry_run=True)
                continue
            try:
                action_id = self.store.started(cluster, node, type(action).__name__, describe(action),
                                               action.reason, now)
            except Exception as e:
                log.error("action.unrecorded", cluster=cluster, action=describe(action), done=False,
                          error=error_text(e))
                raise UnrecordedAction(state, f"{describe(action)} not carried out: its start could not be "
                                       f"recorded ({error_text(e)})") from e
            log.info("action.started", cluster=cluster, action=describe(action), reason=action.reason)
            if isinstance(action, SentinelDownAfter) and action.failover_of is not None and not failover_ok:
                # a lowering goes with its failover: a refused failover leaves the Sentinel as it was
                result, directive_id = ActionResult(False, "not done: the failover it goes with was not "
                                                    "accepted"), None
            else:
                result, directive_id = self._do(snapshot, action, state)
            if isinstance(action, Failover):
                failover_ok = result.ok
            (log.info if result.ok else log.warning)(
                "action.succeeded" if result.ok else "action.failed", cluster=cluster, action=describe(action),
                detail=result.detail)
            state = apply_result(snapshot, state, action, result, self.clock())
            try:
                self.store.finished(action_id, result.ok, result.detail, self.clock(), directive_id,
                                    pending=directive_id is not None and result.ok)
                self.store.save(state)
            except Exception as e:
                log.error("action.unrecorded", cluster=cluster, action=describe(action), done=True, ok=result.ok,
                          error=error_text(e))
                raise UnrecordedAction(state, f"{describe(action)} was carried out but its result could not "
                                       f"be recorded ({error_text(e)})") from e
        return state

    # -- one action -------------------------------------------------------------------------------
    def _do(self, snapshot: HealSnapshot, action: Action, state: HealState) -> tuple[ActionResult, str | None]:
        view = snapshot.view
        cluster = view.name
        try:
            match action:
                case RestartService(node=n, service=service, replicaof=replicaof):
                    directive_id = f"{cluster}-{n}-{service}-{uuid.uuid4().hex[:8]}"
                    self.directives.send(cluster, n, RestartServiceDirective(
                        directive_id, n, service, replicaof, expires_at=self.clock() + DIRECTIVE_TTL_S))
                    return ActionResult(True, "directive sent to the agent"), directive_id
                case Failover(via_node=n):
                    reply = self.ops_for(cluster).failover(self._sentinel(snapshot, n), view.master_name)
                    return ActionResult(True, f"SENTINEL FAILOVER answered {reply}"), None
                case SentinelDownAfter(node=n, down_after_ms=ms):
                    reply = self.ops_for(cluster).set_down_after(self._sentinel(snapshot, n), view.master_name, ms)
                    return ActionResult(True, f"SENTINEL SET down-after-milliseconds {ms} answered {reply}"), None
                case ResetSentinel(node=n, info_period_ms=fast_ms):
                    return self._reset_sentinel(snapshot, n, fast_ms), None
                case SentinelInfoPeriod(node=n, info_period_ms=ms):
                    reply = self.ops_for(cluster).set_info_period(self._sentinel(snapshot, n), ms)
                    return ActionResult(True, f"SENTINEL DEBUG INFO-PERIOD {ms} answered {reply}"), None
                case Replicaof(node=n, master=m) | FollowMaster(node=n, master=m):
                    node = view.node(n)
                    if node is None:
                        return ActionResult(False, f"{n} is not known"), None
                    reply = self.ops_for(cluster).replicaof(node.report.identity.redis_address, m)
                    return ActionResult(True, f"REPLICAOF answered {reply}"), None
                case Fence(node=n, new_master=m):
                    node = view.node(n)
                    if node is None:
                        return ActionResult(False, f"{n} is not known"), None
                    try:
                        return ActionResult(True, self.ops_for(cluster).fence(node.report.identity.redis_address,
                                                                              m)), None
                    except OpsError as e:
                        why_not = agent_fence_refusal(view.is_fresh(node), node.report.redis.role)
                        if why_not is not None:
                            return ActionResult(False, f"{e}; not through its agent: {why_not}"), None
                        directive_id = f"{cluster}-{n}-fence-{uuid.uuid4().hex[:8]}"
                        self.directives.send(cluster, n, FenceDirective(directive_id, n, m,
                                                                        expires_at=self.clock() + FENCE_TTL_S))
                        log.warning("fence.through_agent", cluster=cluster, node=n, new_master=m, error=str(e))
                        return ActionResult(True, f"{e}; fence directive sent to its agent"), directive_id
                case RepointSentinel(node=n, master=m):
                    detail = self.ops_for(cluster).repoint_sentinel(
                        self._sentinel(snapshot, n), view.master_name, m, action.quorum, action.down_after_ms,
                        action.failover_timeout_ms, action.parallel_syncs)
                    return ActionResult(True, detail), None
                case PowerCycle(droplet_id=d):
                    self._verify_target(snapshot, d)
                    result = self._cloud().power_cycle(d)
                    return ActionResult(result.ok or not result.done, f"power_cycle action {result.id} "
                                        f"{result.status}"), None
                case Reboot(droplet_id=d):
                    self._verify_target(snapshot, d)
                    result = self._cloud().reboot(d)
                    return ActionResult(result.ok or not result.done, f"reboot action {result.id} "
                                        f"{result.status}"), None
                case StartReprovision():
                    if self.provisioner.provisioning(cluster) is None:
                        return ActionResult(False, "no provisioning settings (region, size, image)"), None
                    return ActionResult(True, "reprovision started"), None
                case CreateReplacement(job_id=job_id, name=name):
                    return self._create(snapshot, state, job_id, name), None
                case DestroyDroplet(droplet_id=d):
                    if not self._verify_target(snapshot, d):
                        return ActionResult(True, "already gone"), None
                    gone = self._cloud().destroy_droplet(d)
                    return ActionResult(True, "destroyed" if gone else "already gone"), None
                case ForgetNode(node=n):
                    self.reports.forget(cluster, n)
                    self.credentials.revoke(cluster, n, self.clock())
                    return ActionResult(True, f"{n} forgotten, its key revoked"), None
                case FinishReprovision(ok=ok, reason=reason):
                    return ActionResult(ok, reason), None
                case MoveReservedIp(ip=ip, droplet_id=d):
                    result = self._cloud().assign_reserved_ip(ip, d)
                    return ActionResult(result.ok or not result.done, f"assign_ip action {result.id} "
                                        f"{result.status}"), None
        except (OpsError, ProviderError) as e:
            return ActionResult(False, str(e)), None
        except Exception as e:  # a bug or a bad setting: record it as this action's failure, never loop on it
            log.exception("action.crashed", cluster=cluster, action=describe(action))
            return ActionResult(False, f"{type(e).__name__}: {e}"), None
        raise AssertionError(action)  # pragma: no cover

    def _reset_sentinel(self, snapshot: HealSnapshot, node: str, fast_ms: int | None) -> ActionResult:
        """SENTINEL RESET, after lowering the Sentinel's INFO-PERIOD to `fast_ms` (read first: what it is owed
        back). A Sentinel without SENTINEL DEBUG (Redis < 7.0) is reset as it is; that is said in the detail."""
        ops = self.ops_for(snapshot.view.name)
        sentinel = self._sentinel(snapshot, node)
        lowered_from, said = None, ""
        if fast_ms is not None:
            try:
                before = ops.info_period(sentinel)
                if before > fast_ms:
                    ops.set_info_period(sentinel, fast_ms)
                    lowered_from, said = before, f"; INFO-PERIOD {before} -> {fast_ms} ms first"
                else:
                    said = f"; INFO-PERIOD already {before} ms"
            except OpsError as e:
                said = f"; INFO-PERIOD left as it was ({e})"
        try:
            reply = ops.reset_sentinel(sentinel, snapshot.view.master_name)
        except OpsError as e:  # the lowering stays owed back
            return ActionResult(False, f"{e}{said}", info_period_lowered_from_ms=lowered_from)
        return ActionResult(True, f"SENTINEL RESET answered {reply}{said}", info_period_lowered_from_ms=lowered_from)

    def _cloud(self) -> Cloud:
        if self.cloud is None:
            raise ProviderError("no DigitalOcean adapter configured", operation="heal")
        return self.cloud

    def _verify_target(self, snapshot: HealSnapshot, droplet_id: int) -> bool:
        """Read the droplet from the cloud right before acting on it: it must still carry the cluster's tag
        and the private IP the plan saw, and that IP must not be the master's. False: it is gone."""
        cluster = snapshot.view.name
        fresh = self._cloud().get_droplet(droplet_id)
        if fresh is None:
            return False
        tag = self.cluster_tags.get(cluster)
        if tag is None or tag not in fresh.tags:
            raise ProviderError(f"droplet {droplet_id} does not carry the cluster's tag {tag}: not touched",
                                operation="verify")
        planned = next((d.private_ip for d in snapshot.droplets or () if d.id == droplet_id), None)
        if not fresh.private_ip or fresh.private_ip != planned:
            raise ProviderError(f"droplet {droplet_id}'s private IP is {fresh.private_ip}, not {planned} as "
                                "planned: not touched", operation="verify")
        master = snapshot.view.master_address()
        if master is not None and master.rsplit(":", 1)[0] == fresh.private_ip:
            raise ProviderError(f"droplet {droplet_id} has the master's IP: not touched", operation="verify")
        return True

    @staticmethod
    def _sentinel(snapshot: HealSnapshot, node_name: str) -> str:
        node = snapshot.view.node(node_name)
        if node is None:
            raise OpsError(f"{node_name} is not known")
        return node.report.identity.sentinel_address

    def _create(self, snapshot: HealSnapshot, state: HealState, job_id: str, name: str) -> ActionResult:
        """A replacement: it asks the live Sentinels for the master, with their own settings."""
        cluster = snapshot.view.name
        live = [n for n in snapshot.view.nodes if snapshot.view.is_fresh(n)]
        views = snapshot.view.sentinel_views()
        droplet = self.provisioner.create_node(
            cluster, name,
            sentinels=tuple(n.report.identity.sentinel_address for n in live),
            quorum=next((v.quorum for _, v in views if v.quorum), None),
            down_after_ms=next((v.down_after_ms for _, v in views if v.down_after_ms), None),
            failover_timeout_ms=next((v.failover_timeout_ms for _, v in views if v.failover_timeout_ms), None),
            request_id=job_id,
        )
        return ActionResult(True, f"droplet {droplet.id} ({droplet.name}) created", droplet_id=droplet.id)
