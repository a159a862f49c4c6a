"""The console's one health predicate and one wait (`console.cluster`), as `redwarden cluster create` (and so
`redwarden sandbox up`) and `redwarden drill` use them.

The status contract here is the controller's own: recorded agent reports (tests/fixtures/reports) through
`cluster_status` and the checks, as GET /v1/clusters/{name} builds it; edits say "the healthy cluster,
except ...". The wait and `create_cluster` run over a scripted controller and a fake clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from console.client import ControllerError, ControllerNotFound
from console.cluster import (
    Clock,
    ClusterNotHealthy,
    ClusterSnap,
    parse_cluster,
    redundancy_problem,
    wait_healthy,
)
from console.provision import ProvisionError, create_cluster, new_cluster_problem
from controller.core.checks import check, cluster_health
from controller.core.policy import Policy
from controller.core.view import ClusterView, cluster_status
from tests.factories import (
    MASTER,
    load_report,
    load_scenario,
    make_view,
    scenario_view,
    with_host,
    with_sentinel_master,
    without_node,
)


def status(view: ClusterView) -> dict[str, Any]:
    """The cluster as the controller's API shows it (without `heal`: healing off)."""
    findings = check(view, Policy(), view.now)
    return {**cluster_status(view), "health": cluster_health(findings),
            "findings": [{"code": str(f.code), "severity": str(f.severity), "subject": f.subject,
                          "message": f.message, "key": f.key} for f in findings]}


def snap(view: ClusterView) -> ClusterSnap:
    return parse_cluster(status(view))


def drill_problem(s: ClusterSnap) -> str | None:
    return redundancy_problem(s, 3)


def create_problem(s: ClusterSnap) -> str | None:
    return new_cluster_problem(s, 3)


BOTH = pytest.mark.parametrize("problem", [drill_problem, create_problem], ids=["drill", "create"])


# -- the predicate: what both callers ask ----------------------------------------------------------------


@BOTH
def test_the_recorded_healthy_cluster_is_fully_redundant(problem: Callable[[ClusterSnap], str | None]) -> None:
    assert problem(snap(scenario_view("healthy"))) is None


@BOTH
def test_a_killed_redis_or_sentinel_is_named(problem: Callable[[ClusterSnap], str | None]) -> None:
    assert problem(snap(scenario_view("replica2-redis-killed"))) == (
        "not every redis and sentinel is up (redis-2 redis down)")
    assert problem(snap(scenario_view("sentinel3-killed"))) == (
        "not every redis and sentinel is up (redis-3 sentinel down)")


@BOTH
def test_a_sentinel_that_does_not_know_every_other_one_yet(problem: Callable[[ClusterSnap], str | None]) -> None:
    view = scenario_view("healthy")
    sentinels = next(m for m in load_report("healthy", "redis-2").sentinel.masters if m.name == "mymaster").sentinels
    view = with_sentinel_master(view, "redis-2", sentinels=sentinels[:1], num_other_sentinels=1)
    assert problem(snap(view)) == ("sentinels still discovering each other (redis-2 not yet knowing 2 other "
                                   "Sentinels and 2 replicas)")


@BOTH
def test_a_cluster_coming_together_says_what_it_still_lacks_in_order(
        problem: Callable[[ClusterSnap], str | None]) -> None:
    healthy = scenario_view("healthy")
    alone = snap(without_node(without_node(healthy, "redis-2"), "redis-3"))
    assert problem(alone) in ("1/3 agents reporting", "1/3 nodes listed")
    # every node there, one replica still syncing and pointing elsewhere: the first such node is named
    data = status(healthy)
    data["nodes"][2] = {**data["nodes"][2], "link": "down"}
    assert problem(parse_cluster(data)) == "redis-3 still syncing (link down)"
    data["nodes"][1] = {**data["nodes"][1], "master_of_replica": "127.0.0.9:6379"}
    assert problem(parse_cluster(data)) == f"redis-2 replicates 127.0.0.9:6379, not the master {MASTER}"
    data = status(healthy)
    data["nodes"][0] = {**data["nodes"][0], "role": "replica"}
    assert problem(parse_cluster(data)) == "no node reports role master yet"


@BOTH
def test_an_info_finding_does_not_hold_anyone_back(problem: Callable[[ClusterSnap], str | None]) -> None:
    data = status(scenario_view("healthy"))
    data["findings"].append({"code": "CONFIG_RISK", "severity": "info", "subject": "cluster", "message": "...",
                             "key": "sandbox/CONFIG_RISK/cluster/x"})
    assert data["health"] == "healthy" and problem(parse_cluster(data)) is None


# -- the predicate: what only the drill asks -----------------------------------------------------------


def test_a_warning_that_outlives_the_build_holds_the_drill_but_not_the_create() -> None:
    view = with_host(scenario_view("healthy"), "redis-3", disk_total_bytes=100, disk_free_bytes=1)
    s = snap(view)
    assert drill_problem(s) == "health degraded (DISK_PRESSURE)"
    assert create_problem(s) is None


def test_a_controller_configured_for_another_size_holds_the_drill_but_not_the_create() -> None:
    s = snap(make_view(load_scenario("healthy"), expected_nodes=5))
    assert drill_problem(s) == "the controller expects 5 Sentinels, not 3"
    assert create_problem(s) is None


def test_a_silent_leftover_of_an_earlier_cluster_counts_for_the_drill_not_for_the_create() -> None:
    old = load_report("healthy", "redis-3")
    old = dataclasses.replace(old, identity=dataclasses.replace(old.identity, node="old-1", address="127.0.0.9"))
    reports = (*load_scenario("healthy"), old)
    s = snap(make_view(reports, ages_s={"old-1": 3600.0}))
    assert s.node("old-1") is not None and s.node("old-1").stale  # type: ignore[union-attr]
    assert drill_problem(s) == "4 nodes listed, 3 expected"
    assert redundancy_problem(s, 4) == "not every redis and sentinel is up (old-1 silent)"
    assert create_problem(s) is None


def test_healing_in_flight_holds_the_drill_but_not_the_create() -> None:
    data = status(scenario_view("healthy"))
    data["heal"] = {"enabled": True, "dry_run": False, "held": [], "reprovision": None,
                    "sentinel_reset": {"pending": ["redis-2"]}}
    s = parse_cluster(data)
    assert drill_problem(s) == "the controller is healing it (a reprovision or a Sentinel reset sequence is running)"
    assert create_problem(s) is None


# -- the wait --------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def sleep(self, s: float) -> None:
        self.t += s

    def clock(self) -> Clock:
        return Clock(now=lambda: self.t, monotonic=lambda: self.t, sleep=self.sleep)


def scripted(answers: Sequence[ClusterSnap | Exception]) -> Callable[[], ClusterSnap]:
    """One answer per poll; the last one for ever after."""
    it: Iterator[ClusterSnap | Exception] = iter(answers)
    last: list[ClusterSnap | Exception] = [answers[0]]

    def fetch() -> ClusterSnap:
        last[0] = next(it, last[0])
        if isinstance(last[0], Exception):
            raise last[0]
        return last[0]

    return fetch


HEALTHY = snap(scenario_view("healthy"))
KILLED = snap(scenario_view("replica2-redis-killed"))


def test_the_wait_needs_the_cluster_healthy_for_the_whole_settle_time_and_says_each_problem_once() -> None:
    clock = FakeClock()
    said: list[str] = []
    answers: list[ClusterSnap | Exception] = [KILLED, KILLED, ControllerError("cannot reach the controller"),
                                               HEALTHY, KILLED, *[HEALTHY] * 20]
    start = clock.t
    got = wait_healthy(scripted(answers), drill_problem, 60, settle_s=1.0, clock=clock.clock(),
                       progress=said.append)
    assert got == HEALTHY
    # healthy from the 6th poll (t = start + 1.0), then 1.0 s more: the break at the 5th poll restarted it
    assert clock.t - start == pytest.approx(2.0)
    assert said == ["waiting: not every redis and sentinel is up (redis-2 redis down)",
                    "waiting: cannot reach the controller",
                    "waiting: not every redis and sentinel is up (redis-2 redis down)"]


def test_the_wait_gives_up_with_the_last_problem_and_a_wrong_cluster_name_is_not_retried() -> None:
    clock = FakeClock()
    with pytest.raises(ClusterNotHealthy) as caught:
        wait_healthy(scripted([KILLED]), drill_problem, 5, clock=clock.clock())
    assert caught.value.problem == "not every redis and sentinel is up (redis-2 redis down)"
    assert caught.value.last == KILLED and str(caught.value).startswith("not healthy after 5 s")
    polls = []

    def not_found() -> ClusterSnap:
        polls.append(1)
        raise ControllerNotFound("http://c/v1/clusters/nope: no such cluster")

    with pytest.raises(ControllerNotFound):
        wait_healthy(not_found, drill_problem, 5, clock=clock.clock())
    assert len(polls) == 1


# -- create_cluster over a scripted controller ---------------------------------------------------------


class ScriptedController:
    """The controller as `create_cluster` sees it: no node until the first droplet is created, then that
    one as master, then all three with one Sentinel still discovering, then healthy."""

    def __init__(self, listed_before: dict[str, Any] | None = None) -> None:
        healthy = scenario_view("healthy")
        sentinels = next(m for m in load_report("healthy", "redis-2").sentinel.masters
                         if m.name == "mymaster").sentinels
        self.stages = [
            listed_before or {**status(healthy), "nodes": [], "master": None},
            status(without_node(without_node(healthy, "redis-2"), "redis-3")),
            status(with_sentinel_master(healthy, "redis-2", sentinels=sentinels[:1], num_other_sentinels=1)),
            status(healthy),
        ]
        self.created: list[tuple[str, list[str], bool]] = []
        self.polls = 0

    def cluster(self, name: str) -> dict[str, Any]:
        assert name == "shop"
        stage = {0: 0, 1: 1}.get(len(self.created), 2)
        if stage == 2:
            self.polls += 1
            stage = 2 if self.polls < 5 else 3
        return self.stages[stage]

    def create_node(self, cluster: str, name: str, sentinels: list[str], firewall: bool = False) -> dict[str, Any]:
        self.created.append((name, sentinels, firewall))
        return {"id": 100 + len(self.created), "name": name}


def test_create_cluster_bootstraps_a_master_joins_replicas_and_waits_for_the_sentinels() -> None:
    controller = ScriptedController()
    said: list[str] = []
    got = create_cluster(controller, "shop", 3, clock=FakeClock().clock(), progress=said.append)
    assert controller.created == [("redis-1", [], True), ("redis-2", ["127.0.0.3:26379"], False),
                                  ("redis-3", ["127.0.0.3:26379"], False)]
    assert got.master == MASTER and len(got.nodes) == 3
    assert "waiting: sentinels still discovering each other (redis-2 not yet knowing 2 other Sentinels and " \
           "2 replicas)" in said


def test_create_cluster_refuses_a_cluster_with_reporting_nodes_and_times_out_naming_the_problem() -> None:
    with pytest.raises(ProvisionError, match="already has 3 reporting node"):
        create_cluster(ScriptedController(status(scenario_view("healthy"))), "shop", 3,
                       clock=FakeClock().clock())
    controller = ScriptedController()
    controller.stages[3] = controller.stages[2]  # a Sentinel that never learns of the others
    with pytest.raises(ProvisionError, match=r"cluster not healthy after \d+ s: sentinels still discovering"):
        create_cluster(controller, "shop", 3, timeout_s=30, clock=FakeClock().clock())
