"""The `Observer`: turns what the controller shows after a fault into the drill's timeline steps.

Layer: the drill's pure core. It is handed snapshots (`console.cluster.ClusterSnap`, the controller's
incidents and actions) and the time each was seen; it keeps the earliest moment of each step (see the
package docstring for where each comes from) and when full redundancy, as `redundancy_problem` judges
it, last started to hold.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from console.cluster import ClusterSnap, redundancy_problem, replica_problem, sentinels_problem
from console.drill.model import (
    ALERT_SENT,
    DESTROY_FAULTS,
    FAULT,
    FIRST_FINDING,
    NEW_MASTER,
    REDUNDANCY_RESTORED,
    REPLACEMENT_CREATED,
    REPLICA_IN_SYNC,
    SENTINELS_AGREE,
    ActionSnap,
    IncidentSnap,
)


@dataclass(frozen=True, slots=True)
class Step:
    at: float
    detail: str


@dataclass(frozen=True, slots=True)
class Observations:
    steps: Mapping[str, Step]
    findings_seen: tuple[tuple[str, float], ...]  # (code, first seen) for findings new after the fault
    actions: tuple[ActionSnap, ...]  # the controller's actions started after the fault
    held: tuple[tuple[str, str], ...]  # distinct (what, reason) held back after the fault


class Observer:
    """Turns what the controller shows after a fault into timeline steps. Pure: every time is passed in."""

    def __init__(self, fault: str, before: ClusterSnap, victim: str, fault_at: float, fault_detail: str,
                 settle_s: float = 3.0) -> None:
        self.fault = fault
        self.before = before
        self.victim = victim
        self.fault_at = fault_at
        self.settle_s = settle_s
        self.expected_nodes = len(before.nodes)
        self.old_master = before.master
        self._baseline = {f.key for f in before.findings}
        self._names_before = {n.name for n in before.nodes}
        self.steps: dict[str, Step] = {FAULT: Step(fault_at, fault_detail)}
        self._findings: dict[str, float] = {}
        self._actions: dict[int, ActionSnap] = {}
        self._held: dict[tuple[str, str], None] = {}
        self._broken: set[str] = set()
        self._restored_since: float | None = None
        self._released_at: float | None = None
        self.last: ClusterSnap | None = None

    def _earliest(self, step: str, at: float, detail: str) -> None:
        if step == FAULT:
            return
        current = self.steps.get(step)
        if current is None or at < current.at:
            self.steps[step] = Step(at, detail)

    def replacement(self, snap: ClusterSnap) -> str | None:
        new = sorted(n.name for n in snap.nodes if n.name not in self._names_before)
        return new[0] if new else None

    def on_cluster(self, snap: ClusterSnap, now: float) -> None:
        self.last = snap
        new_codes = [f.code for f in snap.findings if f.key not in self._baseline]
        for code in new_codes:
            self._findings.setdefault(code, now)
        if new_codes:
            self._earliest(FIRST_FINDING, now, new_codes[0])
        for h in snap.held:
            self._held.setdefault(h, None)
        moved = snap.master is not None and snap.master != self.old_master
        if moved and NEW_MASTER not in self.steps:
            node = snap.node_at(snap.master)
            self._earliest(NEW_MASTER, now, f"{snap.master}" + (f" ({node.name})" if node else ""))
        replacement = self.replacement(snap)
        if replacement is not None:
            self._earliest(REPLACEMENT_CREATED, now, f"{replacement} appeared")
        watched = replacement if self.fault in DESTROY_FAULTS else self.victim
        conditions = {
            REPLICA_IN_SYNC: watched is not None and replica_problem(snap, watched) is None,
            SENTINELS_AGREE: sentinels_problem(snap, self.expected_nodes) is None,
            REDUNDANCY_RESTORED: redundancy_problem(snap, self.expected_nodes) is None,
        }
        for step, holds in conditions.items():
            if not holds:
                self._broken.add(step)
        released = self._released_at is not None and now >= self._released_at
        recovering = {step for step in conditions if step in self._broken or moved or released}
        if conditions[REPLICA_IN_SYNC] and REPLICA_IN_SYNC in recovering:
            self._earliest(REPLICA_IN_SYNC, now, f"{watched} replicates {snap.master} with its link up")
        if conditions[SENTINELS_AGREE] and SENTINELS_AGREE in recovering:
            self._earliest(SENTINELS_AGREE, now, f"{snap.sentinels_reachable}/{self.expected_nodes} Sentinels "
                                                  f"name {snap.master}")
        if conditions[REDUNDANCY_RESTORED] and REDUNDANCY_RESTORED in recovering:
            if self._restored_since is None:
                self._restored_since = now
        else:
            self._restored_since = None

    def on_incidents(self, incidents: Iterable[IncidentSnap]) -> None:
        for i in incidents:
            if i.first_seen_at is not None and i.first_seen_at >= self.fault_at:
                self._earliest(FIRST_FINDING, i.first_seen_at, i.code)
                self._findings[i.code] = min(self._findings.get(i.code, i.first_seen_at), i.first_seen_at)
            if i.opened_at is not None and i.opened_at >= self.fault_at:
                self._earliest(ALERT_SENT, i.opened_at, f"{i.code} ({i.severity}) incident opened")

    def on_actions(self, actions: Iterable[ActionSnap]) -> None:
        for a in actions:
            if a.started_at < self.fault_at:
                continue
            self._actions[a.id] = a
            if a.kind == "CreateReplacement" and a.status == "succeeded":
                self._earliest(REPLACEMENT_CREATED, a.finished_at or a.started_at, a.detail or a.description)

    def release(self, at: float) -> None:
        """The fault was undone at `at`: from then on, what holds counts as restored even if the fault never
        visibly broke it (a killed agent, a cut the cluster rode out)."""
        self._released_at = at

    @property
    def restored_since(self) -> float | None:
        return self._restored_since

    def settled(self, now: float) -> bool:
        """Full redundancy has held for settle_s: the drill can end."""
        return self._restored_since is not None and now - self._restored_since >= self.settle_s

    def finish(self) -> Observations:
        steps = dict(self.steps)
        if self._restored_since is not None:
            steps[REDUNDANCY_RESTORED] = Step(self._restored_since, f"{self.expected_nodes} nodes, 1 master, "
                                              f"{self.expected_nodes - 1} linked replicas, Sentinels agree")
        return Observations(
            steps=steps,
            findings_seen=tuple(sorted(self._findings.items(), key=lambda kv: kv[1])),
            actions=tuple(sorted(self._actions.values(), key=lambda a: a.id)),
            held=tuple(self._held),
        )
