"""The healing step of the watch cycle, per cluster: observe -> plan -> execute -> remember.

Layer: application. Owns each cluster's `HealState` (persisted through `HealStore` after every action),
the cloud view (a job on the service's scheduler lists each cluster's droplets by tag every `cloud_poll_s`),
and the operator's switches (pause, resume, ack). The daily budget needs no job: it is counted per UTC day,
and a state whose `budget_day` is not today reads as unused (`utc_day`), so nothing has to reset it. The
decisions are `controller.core.planner`'s; the effects are the executor's.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from controller.adapters.cloud import Cloud, ProviderError
from controller.adapters.cloud import Droplet as CloudDroplet
from controller.adapters.storage.db import error_text
from controller.adapters.storage.heal_log import HealStateUnreadable, HealStore
from controller.app.executor import Executor, UnrecordedAction
from controller.app.jobs import BackgroundScheduler, Periodic
from controller.app.provisioner import Provisioner
from controller.core.fencing import check_fences
from controller.core.findings import Finding
from controller.core.planner import (
    Droplet,
    HealPolicy,
    HealSnapshot,
    HealState,
    Plan,
    check_heal_state,
    observe,
    plan_heal,
    reset_command,
    utc_day,
)
from controller.core.view import ClusterView

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
        provisioner: Provisioner | None = None,
        bindings: Callable[[str], tuple[tuple[str, int], ...]] = lambda _: (),
        sentinel_timings: dict[str, tuple[int, int]] | None = None,
        scheduler: BackgroundScheduler | None = None,
    ) -> None:
        """`scheduler`: the service's, on which `start` puts the cloud poll (a scheduler of its own if none)."""
        self.policy = policy
        self.store = store
        self.executor = executor
        self.cloud = cloud
        self.cluster_tags = cluster_tags
        self.clock = clock
        self.provisioner = provisioner
        self.bindings = bindings  # node -> droplet id, from the controller's own records
        # cluster -> its configured (down_after_ms, failover_timeout_ms): what a lowered down-after goes back to
        self.sentinel_timings = sentinel_timings or {}
        self._lock = threading.RLock()
        self._states: dict[str, HealState] = {}
        self._unreadable: dict[str, str] = {}  # cluster -> why its persisted state cannot be read (held)
        for c in cluster_tags:
            try:
                self._states[c] = store.load(c)
            except HealStateUnreadable as e:
                self._unreadable[c] = e.reason
                log.error("heal.state_unreadable", cluster=c, reason=e.reason, fix=reset_command(c))
        self._unsaved: set[str] = set()  # clusters whose state in memory is newer than the state file
        self._droplets: dict[str, tuple[Droplet, ...]] = {}
        self.reserved_ips = reserved_ips or {}
        self._reserved: dict[str, tuple[str, int | None]] = {}
        self.latest: dict[str, Plan] = {}
        self._poll_job = Periodic(scheduler, "cloud-poll", self.poll_cloud, what="cloud poll",
                                  failed_event="cloud.poll_crashed", recovered_event="cloud.poll_recovered")

    # -- the cycle's step -------------------------------------------------------------------------
    def step(self, view: ClusterView, findings: Sequence[Finding], now: float) -> str:
        with self._lock:
            cluster = view.name
            droplets = self._droplets.get(cluster) if self.cloud is not None else None
            if self.cloud is not None and droplets is None:
                return "no action: the droplet list is not known yet"
            state = self._states.get(cluster) or HealState(cluster=cluster)
            snapshot = HealSnapshot(view, tuple(findings), state, droplets, self._reserved.get(cluster),
                                    bindings=self.bindings(cluster), state_unreadable=self._unreadable.get(cluster))
            if cluster in self.sentinel_timings:
                down_after_ms, failover_timeout_ms = self.sentinel_timings[cluster]
                snapshot = dataclasses.replace(snapshot, down_after_ms=down_after_ms,
                                               failover_timeout_ms=failover_timeout_ms)
            if cluster in self._unreadable:  # held: nothing planned, nothing written over the unreadable row
                return self._remember(cluster, plan_heal(snapshot, self.policy, now))
            state = observe(snapshot, now, self.policy)
            snapshot = dataclasses.replace(snapshot, state=state)
            plan = plan_heal(snapshot, self.policy, now)
            if plan.actions:
                try:
                    state = self.executor.execute(snapshot, plan, state)
                except UnrecordedAction as e:
                    self._states[cluster] = e.state  # what was done is never planned again for want of a write
                    raise
            previous_state = self._states.get(cluster)
            self._states[cluster] = state  # memory first: a failed write below is retried with the next change
            if state != previous_state or cluster in self._unsaved:
                self._unsaved.add(cluster)
                self.store.save(state)
                self._unsaved.discard(cluster)
            return self._remember(cluster, plan)

    def _remember(self, cluster: str, plan: Plan) -> str:
        previous = self.latest.get(cluster)
        if previous is None or previous.summary != plan.summary:
            log.info("plan.changed", cluster=cluster, summary=plan.summary,
                     held=[f"{h.what}: {h.reason}" for h in plan.held])
        self.latest[cluster] = plan
        return plan.summary

    def findings(self, cluster: str) -> tuple[Finding, ...]:
        """The healer's own findings about a cluster (its heal state unreadable, a node it fenced lately), for
        the watch cycle."""
        fences = check_fences(cluster, self.state(cluster).fences, self.clock(), self.policy.failover_cooldown_s)
        return (*check_heal_state(cluster, self._unreadable.get(cluster)), *fences)

    # -- operator switches --------------------------------------------------------------------------
    def _update(self, cluster: str, change: Callable[[HealState], HealState]) -> HealState:
        with self._lock:
            if cluster in self._unreadable:
                raise PermissionError(f"cluster {cluster}'s heal state cannot be read ({self._unreadable[cluster]})"
                                      f": nothing changes it but `{reset_command(cluster)}`")
            state = change(self._states.get(cluster) or HealState(cluster=cluster))
            self._states[cluster] = state  # holds even if the write fails (retried with the next step)
            self._unsaved.add(cluster)
            self.store.save(state)
            self._unsaved.discard(cluster)
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

    def reset_state(self, cluster: str) -> HealState:
        """An operator's explicit reset of an unreadable heal state (audited): healing resumes from a fresh
        state (not paused, budget unused). Refused (PermissionError) for a state that reads fine."""
        with self._lock:
            if cluster not in self._unreadable:
                raise PermissionError(f"cluster {cluster}'s heal state reads fine: nothing to reset (pause, "
                                      "resume and ack change it)")
            state = self.store.reset(cluster, self.clock())
            self._states[cluster] = state
            reason = self._unreadable.pop(cluster)
        log.warning("heal.state_reset", cluster=cluster, was=reason)
        return state

    def create_node(self, cluster: str, name: str, sentinels: tuple[str, ...], firewall: bool,
                    controller_address: str | None) -> CloudDroplet:
        """An operator's new node (`redwarden cluster create`): held like any action by a pause and the daily
        budget (PermissionError saying which), counted against the budget, and written to the audit log."""
        if self.provisioner is None:
            raise PermissionError("this controller has no DigitalOcean adapter (do_token_file) to create droplets")
        now = self.clock()
        day = utc_day(now)
        with self._lock:
            state = self._states.get(cluster) or HealState(cluster=cluster)
            if state.paused:
                raise PermissionError(f"cluster {cluster} is paused for maintenance: `redwarden resume` first")
            used = state.actions_today if state.budget_day == day else 0
            if used >= self.policy.daily_budget and not (state.budget_acked and state.budget_day == day):
                raise PermissionError(f"the daily budget of {self.policy.daily_budget} actions is used: "
                                      "`redwarden ack` to allow more today")
            self._update(cluster, lambda s: dataclasses.replace(
                s, budget_day=day, actions_today=used + 1, budget_acked=s.budget_acked and s.budget_day == day))
        description = f"create droplet {name}" + (f" joining {', '.join(sentinels)}" if sentinels else " as master")
        action_id = self.store.started(cluster, name, "CreateNode", description, "asked by an operator", now)
        try:
            if firewall:
                self.provisioner.ensure_firewall(cluster, controller_address)
            droplet = self.provisioner.create_node(cluster, name, sentinels)
        except Exception as e:
            self.store.finished(action_id, False, str(e)[:300], self.clock())
            raise
        self.store.finished(action_id, True, f"droplet {droplet.id} ({droplet.name}) created", self.clock())
        log.info("node.created", cluster=cluster, node=name, droplet_id=droplet.id)
        return droplet

    def state(self, cluster: str) -> HealState:
        """The cluster's healing state as of the last step (no lock, as `status`: one immutable value)."""
        return self._states.get(cluster) or HealState(cluster=cluster)

    def status(self, cluster: str) -> dict[str, Any]:
        # no lock: `redwarden status` must answer while a slow DigitalOcean call holds it; each read is of
        # one immutable value (a dict lookup is atomic), at worst the plan is one step behind the state
        state = self._states.get(cluster) or HealState(cluster=cluster)
        plan = self.latest.get(cluster)
        used = state.actions_today if state.budget_day == utc_day(self.clock()) else 0
        job = state.reprovision
        return {
            "enabled": self.policy.enabled,
            "state_unreadable": self._unreadable.get(cluster),
            "dry_run": self.policy.dry_run,
            "paused": state.paused,
            "paused_nodes": list(state.paused_nodes),
            "budget": {"per_day": self.policy.daily_budget, "used_today": used, "acked": state.budget_acked},
            "plan": plan.summary if plan else None,
            "held": [{"what": h.what, "reason": h.reason} for h in plan.held] if plan else [],
            "reprovision": dataclasses.asdict(job) if job else None,
            "sentinel_reset": ({**dataclasses.asdict(state.reset), "last_node": state.reset.last_node}
                               if state.reset else None),
            # Sentinels whose down-after the controller lowered for a fast failover (or failed to restore)
            "sentinel_down_after_owed": [dataclasses.asdict(o) for o in state.down_after_owed],
            # Sentinels whose INFO-PERIOD the controller lowered for a reset (or failed to set back)
            "sentinel_info_period_owed": [dataclasses.asdict(o) for o in state.info_period_owed],
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
        """Poll the cloud now (the first heal step needs the droplet list), then every `interval_s`."""
        if self.cloud is None:
            return
        self.poll_cloud()
        self._poll_job.start(interval_s)

    def problem(self) -> str | None:
        """Why the cloud view is not kept current (for `GET /healthz`), or None. A DigitalOcean error is not
        one: it is logged (`cloud.poll_failed`) and the last list is kept."""
        return self._poll_job.problem()

    def close(self) -> None:
        """No more polls; returns once a poll under way has ended."""
        self._poll_job.close()


class HealWorker:
    """Runs the healer on its own thread, so that a slow DigitalOcean call delays healing but never the
    findings and alerts of any cluster. It keeps only the latest (view, confirmed findings) per cluster:
    after a slow call the healer acts on what the cluster looks like now, not on the backlog.

    A thread, not a job on the scheduler: it has no schedule. It is a queue consumer woken by each watch
    cycle's `submit` and idle otherwise, and a step lasts as long as its DigitalOcean and Redis calls (each
    up to its timeout); as a job it would be an interval that never fires plus a run brought forward per
    submit, where one Event says "work is waiting" and survives a submit during a step."""

    def __init__(self, healer: Healer) -> None:
        self.healer = healer
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[ClusterView, tuple[Finding, ...], float]] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing: dict[str, str] = {}  # cluster -> why its last heal step failed (logged once per streak)

    def problems(self) -> list[str]:
        """Clusters whose healing step fails (for `GET /healthz`), one sentence each."""
        out = [f"healing failing for cluster {name} ({why})" for name, why in sorted(self._failing.items())]
        if self._thread is not None and not self._thread.is_alive() and not self._stop.is_set():
            out.append("heal worker thread is not running: nothing is healed")
        return out

    def submit(self, view: ClusterView, confirmed: tuple[Finding, ...], now: float) -> None:
        with self._lock:
            self._latest[view.name] = (view, confirmed, now)
        self._wake.set()

    def run_pending(self) -> None:
        """Heal every cluster with a submitted view, once each."""
        with self._lock:
            pending, self._latest = self._latest, {}
        for view, confirmed, now in pending.values():
            try:
                self.healer.step(view, confirmed, now)
            except Exception as e:
                if view.name not in self._failing:
                    log.exception("heal.step_failed", cluster=view.name)
                self._failing[view.name] = error_text(e)
            else:
                if self._failing.pop(view.name, None) is not None:
                    log.info("heal.step_recovered", cluster=view.name)

    def start(self) -> None:
        def loop() -> None:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stop.is_set():
                    return
                self.run_pending()

        self._thread = threading.Thread(target=loop, name="heal-worker", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
