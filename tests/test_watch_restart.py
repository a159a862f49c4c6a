"""A restarted controller keeps its open incidents open until evidence clears them: while a cluster is not
yet armed (the first moments after a start), nothing opens and nothing resolves (issue #11)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from controller.app.watch import Watcher
from controller.core.alerts import AlertEvent
from controller.core.findings import Finding
from controller.core.incidents import Incident
from controller.core.policy import Policy
from controller.core.view import ClusterView
from tests.factories import scenario_view, without_node


class FakeFleet:
    def __init__(self, view: ClusterView) -> None:
        self._view = view

    def names(self) -> list[str]:
        return [self._view.name]

    def view(self, cluster: str, now: float) -> ClusterView:
        return dataclasses.replace(self._view, now=now)

    def policy_for(self, cluster: str) -> Policy:
        return Policy()

    def set_findings(self, cluster: str, findings: tuple[Finding, ...]) -> None:
        pass


class FakeIncidentLog:
    def __init__(self, active: list[Incident]) -> None:
        self.active = active
        self.saved: list[Incident] = []

    def load_active(self) -> list[Incident]:
        return list(self.active)

    def save(self, incidents: Sequence[Incident]) -> None:
        self.saved.extend(incidents)


class Sink:
    def __init__(self) -> None:
        self.events: list[AlertEvent] = []

    def enqueue(self, events: Sequence[AlertEvent]) -> object:
        self.events.extend(events)
        return None


def test_open_incidents_survive_a_restart_while_the_cluster_is_unarmed() -> None:
    view = without_node(scenario_view("healthy"), "redis-3")  # incomplete: the cluster does not arm at once
    start = view.now
    incident = Incident(key="sandbox/SOME_OLD_FINDING/cluster", cluster=view.name, code="REPLICA_DOWN",
                        severity="warning", subject="node redis-3", message="Replica redis-3 is down",
                        evidence=(), first_seen_at=start - 600, last_seen_at=start - 5, opened_at=start - 590)
    log, sink = FakeIncidentLog([incident]), Sink()
    watcher = Watcher(FakeFleet(view), log, sink, clock=lambda: start)  # type: ignore[arg-type]
    for dt in (0.0, 10.0, 30.0, 60.0, 100.0):  # within the arming grace: its finding is gone, yet it stays open
        watcher.run_cycle(start + dt)
    assert sink.events == [] and log.saved == []
    assert [i.key for i in watcher._active[view.name]] == [incident.key]
    # once armed (the grace is over), evidence decides: the finding is gone, so it clears and then resolves
    for dt in (130.0, 200.0, 400.0, 1000.0):
        watcher.run_cycle(start + dt)
    assert [e.action for e in sink.events if e.code == "REPLICA_DOWN"] == ["resolve"]


class TwoClusters(FakeFleet):
    """Cluster "broken" trips an error in its view; cluster "sandbox" is the healthy scenario."""

    def names(self) -> list[str]:
        return ["broken", self._view.name]

    def view(self, cluster: str, now: float) -> ClusterView:
        if cluster == "broken":
            raise RuntimeError("a bug met by one cluster's data")
        return super().view(cluster, now)


def test_one_failing_cluster_never_stops_another_clusters_alerts() -> None:
    view = scenario_view("healthy")
    log, sink = FakeIncidentLog([]), Sink()
    watcher = Watcher(TwoClusters(view), log, sink, clock=lambda: view.now)  # type: ignore[arg-type]
    watcher.run_cycle(view.now)  # the healthy cluster arms
    sick = without_node(view, "redis-3")
    watcher.fleet = TwoClusters(sick)  # type: ignore[assignment]
    for dt in (1.0, 40.0, 80.0):
        sentence = watcher.run_cycle(view.now + dt)
    assert "broken: cycle failed" in sentence
    assert any(e.action == "trigger" for e in sink.events)  # the other cluster still alerted
