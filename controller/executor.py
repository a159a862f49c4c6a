"""Carries out a healing plan through the adapters, recording every step in the audit log.

Layer: application (effects). Each action is written as `started` before its effect and as its result
after; the heal state is saved after every action, so a controller killed mid-plan resumes from what
was recorded. Dry-run records what would have been done and does nothing. An adapter error fails that
action (recorded, alerted by the findings that remain) and never the cycle.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from controller.app import Controller
from controller.do_adapter import Cloud, Droplet, DropletSpec, FirewallRule, ProviderError
from controller.enroll import Enrollments
from controller.heal import (
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
    Replicaof,
    ResetSentinel,
    RestartService,
    StartReprovision,
    action_node,
    apply_result,
    describe,
)
from controller.heal_store import HealStore
from controller.redis_ops import OpsError, RedisOps
from controller.userdata import DEFAULT_TEMPLATES, NodeBoot, render_user_data

log = structlog.get_logger("redwarden.controller")


@dataclass(frozen=True, slots=True)
class Provisioning:
    """How new droplets of a cluster are made (from the cluster's settings)."""

    region: str
    size: str
    image: str
    tag: str
    vpc_uuid: str | None
    ssh_keys: tuple[str, ...]
    controller_url: str
    services: str
    agent_deb_url: str | None
    metadata_url: str | None
    user_data_template: str | None


class Executor:
    def __init__(
        self,
        ctl: Controller,
        store: HealStore,
        ops_for: Callable[[str], RedisOps],
        cloud: Cloud | None,
        enrollments: Enrollments,
        provisioning: Callable[[str], Provisioning | None],
        clock: Callable[[], float],
    ) -> None:
        self.ctl = ctl
        self.store = store
        self.ops_for = ops_for
        self.cloud = cloud
        self.enrollments = enrollments
        self.provisioning = provisioning
        self.clock = clock
        ctl.directives.on_ack(self._on_ack)

    def _on_ack(self, cluster: str, node: str, ack: object) -> None:
        from agent.report import DirectiveAck

        if isinstance(ack, DirectiveAck):
            self.store.acknowledged(ack.id, ack.ok, ack.error or "done by the agent", self.clock())
            log.info("action.acknowledged", cluster=cluster, node=node, directive=ack.id, ok=ack.ok)

    def execute(self, snapshot: HealSnapshot, plan: Plan, state: HealState) -> HealState:
        cluster = snapshot.view.name
        for action in plan.actions:
            now = self.clock()
            node = action_node(action)
            if plan.dry_run:
                self.store.started(cluster, node, type(action).__name__, describe(action), action.reason, now,
                                   status="dry-run")
                log.info("action.planned", cluster=cluster, action=describe(action), reason=action.reason,
                         dry_run=True)
                continue
            action_id = self.store.started(cluster, node, type(action).__name__, describe(action), action.reason,
                                           now)
            log.info("action.started", cluster=cluster, action=describe(action), reason=action.reason)
            result, directive_id = self._do(snapshot, action, state)
            self.store.finished(action_id, result.ok, result.detail, self.clock(), directive_id,
                                pending=directive_id is not None and result.ok)
            (log.info if result.ok else log.warning)(
                "action.succeeded" if result.ok else "action.failed", cluster=cluster, action=describe(action),
                detail=result.detail)
            state = apply_result(snapshot, state, action, result, self.clock())
            self.store.save(state)
        return state

    # -- one action -------------------------------------------------------------------------------
    def _do(self, snapshot: HealSnapshot, action: Action, state: HealState) -> tuple[ActionResult, str | None]:
        view = snapshot.view
        cluster = view.name
        try:
            match action:
                case RestartService(node=n, service=service, replicaof=replicaof):
                    directive_id = f"{cluster}-{n}-{service}-{uuid.uuid4().hex[:8]}"
                    directive = {"id": directive_id, "kind": "restart_service", "service": service}
                    if replicaof is not None:
                        directive["replicaof"] = replicaof
                    self.ctl.directives.send(cluster, n, directive)
                    return ActionResult(True, "directive sent to the agent"), directive_id
                case Failover(via_node=n):
                    reply = self.ops_for(cluster).failover(self._sentinel(snapshot, n), view.master_name)
                    return ActionResult(True, f"SENTINEL FAILOVER answered {reply}"), None
                case ResetSentinel(node=n):
                    reply = self.ops_for(cluster).reset_sentinel(self._sentinel(snapshot, n), view.master_name)
                    return ActionResult(True, f"SENTINEL RESET answered {reply}"), None
                case Replicaof(node=n, master=m):
                    node = view.node(n)
                    if node is None:
                        return ActionResult(False, f"{n} is not known"), None
                    reply = self.ops_for(cluster).replicaof(node.report.identity.redis_address, m)
                    return ActionResult(True, f"REPLICAOF answered {reply}"), None
                case PowerCycle(droplet_id=d):
                    result = self._cloud().power_cycle(d)
                    return ActionResult(result.ok or not result.done, f"power_cycle action {result.id} "
                                        f"{result.status}"), None
                case StartReprovision():
                    if self.provisioning(cluster) is None:
                        return ActionResult(False, "no provisioning settings (region, size, image)"), None
                    return ActionResult(True, "reprovision started"), None
                case CreateReplacement(job_id=job_id, name=name):
                    return self._create(snapshot, state, job_id, name), None
                case DestroyDroplet(droplet_id=d):
                    gone = self._cloud().destroy_droplet(d)
                    return ActionResult(True, "destroyed" if gone else "already gone"), None
                case ForgetNode(node=n):
                    self.ctl.store.forget(cluster, n)
                    return ActionResult(True, f"{n} forgotten"), None
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

    def _cloud(self) -> Cloud:
        if self.cloud is None:
            raise ProviderError("no DigitalOcean adapter configured", operation="heal")
        return self.cloud

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
        droplet = self.create_node(
            cluster, name,
            sentinels=tuple(n.report.identity.sentinel_address for n in live),
            quorum=next((v.quorum for _, v in views if v.quorum), None),
            down_after_ms=next((v.down_after_ms for _, v in views if v.down_after_ms), None),
            failover_timeout_ms=next((v.failover_timeout_ms for _, v in views if v.failover_timeout_ms), None),
            request_id=job_id,
        )
        return ActionResult(True, f"droplet {droplet.id} ({droplet.name}) created", droplet_id=droplet.id)

    def create_node(
        self,
        cluster: str,
        name: str,
        sentinels: tuple[str, ...],
        quorum: int | None = None,
        down_after_ms: int | None = None,
        failover_timeout_ms: int | None = None,
        request_id: str | None = None,
    ) -> Droplet:
        """Create one Redis droplet whose user_data bootstraps it into `cluster` (idempotent per request_id)."""
        prov = self.provisioning(cluster)
        if prov is None:
            raise ProviderError(f"clusters.{cluster} has no region, size and image to create droplets with",
                                operation="create")
        cfg = self.ctl.config.clusters[cluster]
        boot = NodeBoot(cluster=cluster, node=name, controller_url=prov.controller_url, master_name=cfg.master_name,
                        sentinels=sentinels, quorum=quorum or cfg.quorum or cfg.expected_nodes // 2 + 1,
                        down_after_ms=down_after_ms or cfg.down_after_ms,
                        failover_timeout_ms=failover_timeout_ms or cfg.failover_timeout_ms,
                        report_interval_s=cfg.report_interval_s, services=prov.services,
                        agent_deb_url=prov.agent_deb_url, metadata_url=prov.metadata_url)
        template = Path(prov.user_data_template or DEFAULT_TEMPLATES[prov.services]).read_text()
        token = self.enrollments.issue(cluster, name, self.clock())
        spec = DropletSpec(name=name, region=prov.region, size=prov.size, image=prov.image, vpc_uuid=prov.vpc_uuid,
                           ssh_keys=prov.ssh_keys, tags=(prov.tag,), user_data=render_user_data(template, boot, token),
                           request_id=request_id or f"{cluster}-{name}")
        droplet = self._cloud().create_droplet(spec)
        log.info("droplet.created", cluster=cluster, name=name, droplet_id=droplet.id)
        return droplet

    def ensure_firewall(self, cluster: str, controller_address: str | None) -> None:
        """Redis and Sentinel reachable only from the cluster's own droplets (and the controller)."""
        prov = self.provisioning(cluster)
        if prov is None:
            return
        cloud = self._cloud()
        cloud.ensure_tag(prov.tag)
        addresses = (f"{controller_address}/32",) if controller_address else ()
        rules = [FirewallRule("tcp", port, tags=(prov.tag,), addresses=addresses) for port in ("6379", "26379")]
        cloud.create_firewall(f"{prov.tag}-redis", rules, tags=(prov.tag,))
