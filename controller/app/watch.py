"""The controller's watch cycle: view -> findings -> incidents -> alerts -> heal, for every cluster.

Layer: application. One `run_cycle` reads like a paragraph and returns its sentence; the decisions are
the pure core's (`check`; `expect`, which holds what the controller's own plan in flight causes below a
page; `track`), the effects are the adapters' (incident log, outbox). A job on the service's scheduler
(`controller.app.jobs.Periodic`) runs it every `cycle_interval_s`, and at once when a report changes a
node's vitals (a process died, a role moved), never two cycles closer than a fifth of the interval; one bad
cycle is logged once and the next one runs. Healing runs on its own thread (`HealWorker`), handed the
latest view and confirmed findings: a slow cloud call never holds up an alert.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import structlog

from controller.adapters.storage.db import error_text
from controller.adapters.storage.incidents import IncidentLog
from controller.app.fleet import Fleet
from controller.app.healer import Healer, HealWorker
from controller.app.jobs import BackgroundScheduler, Periodic
from controller.core.alerts import AlertEvent
from controller.core.checks import check, cluster_health
from controller.core.expected import expect
from controller.core.findings import Finding, Severity
from controller.core.incidents import Incident, Tracked, track
from controller.core.view import ClusterView

log = structlog.get_logger("redwarden.controller")

ARM_GRACE_S = 120.0


class AlertSink(Protocol):
    def enqueue(self, events: Sequence[AlertEvent]) -> object: ...


class Watcher:
    def __init__(
        self,
        fleet: Fleet,
        incidents: IncidentLog,
        alerts: AlertSink,
        clock: Callable[[], float],
        healer: Healer | None = None,
        scheduler: BackgroundScheduler | None = None,
    ) -> None:
        """`scheduler`: the service's, on which `start` puts the cycle (a scheduler of its own if none)."""
        self.fleet = fleet
        self.incidents = incidents
        self.alerts = alerts
        self.clock = clock
        self._active: dict[str, tuple[Incident, ...]] = {}
        for inc in incidents.load_active():
            self._active[inc.cluster] = (*self._active.get(inc.cluster, ()), inc)
        self._last_sentence: dict[str, str] = {}
        self._started_at = clock()
        self._armed: set[str] = set()
        self._failing: dict[str, str] = {}  # clusters whose last cycle failed -> why (logged once per streak)
        # incidents changed but not yet written (a failed write): written with the next cycle's changes
        self._unsaved: dict[str, dict[str, Incident]] = {}
        self.healer = healer
        self._heal_worker = HealWorker(healer) if healer is not None else None
        self._job = Periodic(scheduler, "watch-cycle", lambda: self.run_cycle(self.clock()), what="watch cycle",
                             failed_event="cycle.failed", recovered_event="cycle.recovered")

    def run_cycle(self, now: float) -> str:
        """Every cluster, each on its own: one cluster's failure (bad data that trips a bug, a store error)
        is logged once and said in the sentence, and never stops another cluster's findings and alerts."""
        sentences = []
        for name in self.fleet.names():
            try:
                sentence = self._cycle_one(name, now)
                if self._failing.pop(name, None) is not None:
                    log.info("cycle.cluster_recovered", cluster=name)
            except Exception as e:
                if name not in self._failing:
                    log.exception("cycle.cluster_failed", cluster=name)
                self._failing[name] = error_text(e)
                sentence = f"{name}: cycle failed (logged); other clusters go on"
            sentences.append(sentence)
        return "; ".join(sentences)

    def _cycle_one(self, name: str, now: float) -> str:
        view = self.fleet.view(name, now)
        policy = self.fleet.policy_for(name)
        findings = check(view, policy, now)
        if self.healer is not None:  # what the controller's own plan in flight causes pages nobody
            findings = expect(findings, self.healer.state(name), self.healer.policy, now)
        active = self._active.get(name, ())
        armed = self._arm(view, findings, now)  # on the cluster's own findings, not the controller's
        if self._heal_worker is not None:
            findings = (*findings, *self._heal_worker.healer.findings(name))
        if armed:
            tracked = track(active, findings, policy, now)
        else:  # unarmed (just started): nothing opens, and nothing resolves for want of evidence
            tracked = Tracked(incidents=active, resolved=(), changed=(), events=())
        self.alerts.enqueue(tracked.events)  # first: a crash after this loses no alert
        # the alerts are out: the incidents move on in memory even if writing them fails (else the next
        # cycle would alert again); what was not written is written with the next cycle's changes
        self._active[name] = tracked.incidents
        unsaved = self._unsaved.setdefault(name, {})
        unsaved.update((i.id, i) for i in tracked.changed)
        self.incidents.save(tuple(unsaved.values()))
        unsaved.clear()
        self.fleet.set_findings(name, findings)
        self._log_changes(name, tracked.events)
        sentence = self._sentence(name, findings, tracked.incidents)
        if self._heal_worker is not None:
            # heal only what is confirmed (an open incident), never a blip inside its window
            confirmed_keys = {i.key for i in tracked.incidents if i.opened_at is not None}
            confirmed = tuple(f for f in findings if f.key in confirmed_keys)
            self._heal_worker.submit(view, confirmed, now)
        return sentence

    def problems(self) -> list[str]:
        """What keeps a cluster from being watched or healed fully (for `GET /healthz`), one sentence each."""
        out = [f"watch cycle failing for cluster {name} ({why})" for name, why in sorted(self._failing.items())]
        if (job_problem := self._job.problem()) is not None:
            out.append(job_problem)
        if self._heal_worker is not None:
            out += self._heal_worker.problems()
        return out

    def _arm(self, view: ClusterView, findings: Sequence[Finding], now: float) -> bool:
        """Incidents (and so alerts and healing) start once the cluster has been seen complete and without
        findings (info ones aside: they leave a cluster healthy, and a standing one such as the one-password
        CONFIG_RISK would otherwise hold arming off until the grace), or ARM_GRACE_S after the controller
        started: a cluster being created (Sentinels still discovering each other) pages nobody, and a cluster
        broken at start is alerted on after the grace."""
        complete = len(view.nodes) >= view.expected_nodes and all(f.severity is Severity.INFO for f in findings)
        if view.name not in self._armed and (complete or now - self._started_at >= ARM_GRACE_S):
            self._armed.add(view.name)
            log.info("cluster.armed", cluster=view.name, nodes=len(view.nodes))
        return view.name in self._armed

    def _sentence(self, cluster: str, findings: Sequence[Finding], active: Sequence[Incident]) -> str:
        health = cluster_health(tuple(findings))
        opened = [i for i in active if i.opened_at is not None]
        if not findings and not opened:
            sentence = f"{cluster}: healthy, no incident"
        else:
            codes = ", ".join(sorted({str(f.code) for f in findings})) or "none"
            sentence = f"{cluster}: {health}; findings {codes}; {len(opened)} open incident(s)"
        if self._last_sentence.get(cluster) != sentence:
            log.info("cycle.changed", cluster=cluster, summary=sentence)
            self._last_sentence[cluster] = sentence
        return sentence

    @staticmethod
    def _log_changes(cluster: str, events: Sequence[AlertEvent]) -> None:
        for e in events:
            log.warning(
                "incident.triggered" if e.action == "trigger" else "incident.resolved",
                cluster=cluster,
                code=e.code,
                severity=e.severity,
                subject=e.subject,
                summary=e.summary,
            )

    # -- the schedule ---------------------------------------------------------------------------
    def wake(self) -> None:
        """A report changed a node's vitals (a process died, a role moved): run the next cycle now (or once
        the cycle under way has ended)."""
        self._job.wake()

    def start(self, interval_s: float) -> None:
        """Run a cycle every `interval_s`, and at once when a report changed a node's vitals."""
        if self._heal_worker is not None:
            self._heal_worker.start()
        # a storm of changes still leaves the API most of the time
        self._job.start(interval_s, min_gap_s=interval_s / 5)

    def close(self) -> None:
        """No more cycles; returns once the cycle under way has ended, then stops the heal worker."""
        self._job.close()
        if self._heal_worker is not None:
            self._heal_worker.close()
