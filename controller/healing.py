"""The healing step of the watch cycle, per cluster: observe -> plan -> execute -> remember.

Layer: application. Owns each cluster's `HealState` (persisted through `HealStore` after every action),
the cloud view (a poller thread lists each cluster's droplets by tag), and the operator's switches
(pause, resume, ack). The decisions are `controller.heal`'s; the effects are the executor's.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from controller.do_adapter import Cloud, ProviderError
from controller.executor import Executor
from controller.findings import Finding
from controller.heal import Droplet, HealPolicy, HealSnapshot, HealState, Plan, observe, plan_heal, utc_day
from controller.heal_store import HealStore
from controller.view import ClusterView

log = structlog.get_logger("redwarden.controller")


class Healer:
    def __init__(
        self,
        policy: HealPolicy,
        store: HealStore,
        executor: Executor,
        cloud: Cloud | None,
        cluster_tags: dict[str, str],
        clock: Callable[[], float],
        reserved_ips: dict[str, str] | None = None,
    ) -> None:
        self.policy = policy
        self.store = store
        self.executor = executor
        self.cloud = cloud
        self.cluster_tags = cluster_tags
        self.clock = clock
        self._lock = threading.RLock()
        self._states: dict[str, HealState] = {c: store.load(c) for c in cluster_tags}
        self._droplets: dict[str, tuple[Droplet, ...]] = {}
        self.reserved_ips = reserved_ips or {}
        self._reserved: dict[str, tuple[str, int | None]] = {}
        self.latest: dict[str, Plan] = {}
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    # -- the cycle's step -------------------------------------------------------------------------
    def step(self, view: ClusterView, findings: Sequence[Finding], now: float) -> str:
        with self._lock:
            cluster = view.name
            droplets = self._droplets.get(cluster) if self.cloud is not None else None
            if self.cloud is not None and droplets is None:
                return "no action: the droplet list is not known yet"
            state = self._states.get(cluster) or HealState(cluster=cluster)
            snapshot = HealSnapshot(view, tuple(findings), state, droplets, self._reserved.get(cluster))
            state = observe(snapshot, now, self.policy)
            snapshot = dataclasses.replace(snapshot, state=state)
            plan = plan_heal(snapshot, self.policy, now)
            if plan.actions:
                state = self.executor.execute(snapshot, plan, state)
            if state != self._states.get(cluster):
                self.store.save(state)
            self._states[cluster] = state
            previous = self.latest.get(cluster)
            if previous is None or previous.summary != plan.summary:
                log.info("plan.changed", cluster=cluster, summary=plan.summary,
                         held=[f"{h.what}: {h.reason}" for h in plan.held])
            self.latest[cluster] = plan
            return plan.summary

    # -- operator switches --------------------------------------------------------------------------
    def _update(self, cluster: str, change: Callable[[HealState], HealState]) -> HealState:
        with self._lock:
            state = change(self._states.get(cluster) or HealState(cluster=cluster))
            self._states[cluster] = state
            self.store.save(state)
            return state

    def pause(self, cluster: str, node: str | None = None) -> HealState:
        if node is None:
            return self._update(cluster, lambda s: dataclasses.replace(s, paused=True))
        return self._update(cluster, lambda s: dataclasses.replace(
            s, paused_nodes=tuple(sorted({*s.paused_nodes, node}))))

    def resume(self, cluster: str, node: str | None = None) -> HealState:
        if node is None:
            return self._update(cluster, lambda s: dataclasses.replace(s, paused=False, paused_nodes=()))
        return self._update(cluster, lambda s: dataclasses.replace(
            s, paused_nodes=tuple(n for n in s.paused_nodes if n != node)))

    def ack(self, cluster: str) -> HealState:
        day = utc_day(self.clock())
        return self._update(cluster, lambda s: dataclasses.replace(s, budget_acked=True, budget_day=day))

    def status(self, cluster: str) -> dict[str, Any]:
        # no lock: `redwarden status` must answer while a slow DigitalOcean call holds it; each read is of
        # one immutable value (a dict lookup is atomic), at worst the plan is one step behind the state
        state = self._states.get(cluster) or HealState(cluster=cluster)
        plan = self.latest.get(cluster)
        used = state.actions_today if state.budget_day == utc_day(self.clock()) else 0
        job = state.reprovision
        return {
            "enabled": self.policy.enabled,
            "dry_run": self.policy.dry_run,
            "paused": state.paused,
            "paused_nodes": list(state.paused_nodes),
            "budget": {"per_day": self.policy.daily_budget, "used_today": used, "acked": state.budget_acked},
            "plan": plan.summary if plan else None,
            "held": [{"what": h.what, "reason": h.reason} for h in plan.held] if plan else [],
            "reprovision": dataclasses.asdict(job) if job else None,
            "sentinel_reset": ({**dataclasses.asdict(state.reset), "last_node": state.reset.last_node}
                               if state.reset else None),
        }

    # -- the cloud view -----------------------------------------------------------------------------
    def poll_cloud(self) -> None:
        if self.cloud is None:
            return
        for cluster, tag in self.cluster_tags.items():
            try:
                found = self.cloud.list_droplets(tag)
            except ProviderError as e:
                log.warning("cloud.poll_failed", cluster=cluster, error=str(e))
                continue
            droplets = tuple(Droplet(d.id, d.name, d.status, d.private_ip) for d in found)
            reserved = None
            if cluster in self.reserved_ips:
                try:
                    rip = self.cloud.get_reserved_ip(self.reserved_ips[cluster])
                    reserved = (rip.ip, rip.droplet_id) if rip is not None else None
                except ProviderError as e:
                    log.warning("cloud.poll_failed", cluster=cluster, error=str(e))
            with self._lock:
                self._droplets[cluster] = droplets
                if reserved is not None:
                    self._reserved[cluster] = reserved

    def start(self, interval_s: float) -> None:
        if self.cloud is None:
            return
        self.poll_cloud()

        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.poll_cloud()
                except Exception:
                    log.exception("cloud.poll_crashed")

        self._poller = threading.Thread(target=loop, name="cloud-poller", daemon=True)
        self._poller.start()

    def close(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)
