"""No self-inflicted pages (issue 12, item 3): what the controller's own plan in flight causes is held
below a page, with the plan named, and nothing else is.

Layer: tests of the pure core. One scenario per planned action (the Sentinel reset sequence, the
replacement of a node, a fast failover), each a constructed view of the transient that plan causes, run
through `check` -> `expect` -> `track` cycle by cycle: no critical alert event, and every held finding
names the plan. Then what a plan does not explain (a master dying during a replacement, a split brain
after a failover, a stalled plan) still pages, and a property: `expect` never raises a severity, never
changes a key, and with no plan in flight changes nothing.
"""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.core.checks import check
from controller.core.expected import expect
from controller.core.findings import Code, Finding, Severity
from controller.core.incidents import Incident, track
from controller.core.planner import HealPolicy, HealState, Reprovision, ResetSequence
from controller.core.policy import Policy
from controller.core.view import ClusterView
from protocol.report import SentinelPeer
from tests.factories import (
    kill_redis,
    kill_sentinel,
    scenario_view,
    with_age,
    with_redis,
    with_sentinel_master,
)
from tests.test_checks_properties import mutated, recorded_or_synthetic

POLICY = Policy()
HEAL = HealPolicy()
STALE_REPLICA = SentinelPeer("10.9.9.9:6379", ("slave", "s_down", "disconnected"))
STALE_SENTINEL = SentinelPeer("10.9.9.9:26379", ("sentinel", "s_down", "disconnected"))


def healthy() -> ClusterView:
    return scenario_view("healthy")


def at(view: ClusterView, now: float) -> ClusterView:
    """The same reports, judged `now` (received just before)."""
    return dataclasses.replace(
        view, now=now, nodes=tuple(dataclasses.replace(n, received_at=now - 0.1) for n in view.nodes)
    )


def criticals(findings: tuple[Finding, ...]) -> set[str]:
    return {f"{f.code.value} {f.subject}" for f in findings if f.severity is Severity.CRITICAL}


def run_cycles(views: list[ClusterView], state: HealState, start: float) -> tuple[list[Finding], list[str]]:
    """Each view one cycle later (1 s apart) through check -> expect -> track; the findings seen and the
    severities of every alert event sent."""
    incidents: tuple[Incident, ...] = ()
    seen: list[Finding] = []
    sent: list[str] = []
    for i, view in enumerate(views):
        now = start + i
        findings = expect(check(at(view, now), POLICY, now), state, HEAL, now)
        seen += findings
        tracked = track(incidents, findings, POLICY, now)
        incidents = tracked.incidents
        sent += [e.severity for e in tracked.events if e.action == "trigger"]
    return seen, sent


def reset_sentinel(view: ClusterView, node: str) -> ClusterView:
    """Just after SENTINEL RESET: it knows no peer and no replica yet, and its CKQUORUM refuses."""
    return with_sentinel_master(view, node, sentinels=(), replicas=(), num_other_sentinels=0, ckquorum_ok=False,
                                ckquorum_message="NOQUORUM 1 usable Sentinels. Not enough available Sentinels")


def with_stale_entries(view: ClusterView, node: str) -> ClusterView:
    current = next(n for n in view.nodes if n.name == node).report.sentinel.masters[0]
    return with_sentinel_master(view, node, replicas=(*current.replicas, STALE_REPLICA),
                                sentinels=(*current.sentinels, STALE_SENTINEL))


def flags_peer_down(view: ClusterView, node: str, peer_address: str) -> ClusterView:
    current = next(n for n in view.nodes if n.name == node).report.sentinel.masters[0]
    peers = tuple(dataclasses.replace(p, flags=("sentinel", "disconnected")) if p.address == peer_address else p
                  for p in current.sentinels)
    return with_sentinel_master(view, node, sentinels=peers)


# -- one scenario per planned action ---------------------------------------------------------------------


def test_sentinel_reset_sequence_pages_nobody_and_names_itself() -> None:
    """redis-1 reset (knows nobody, NOQUORUM), redis-2 momentarily flagging redis-3's Sentinel disconnected
    while it re-handshakes, redis-2 and redis-3 still listing the replaced node: a QUORUM_LOST that flaps
    three times, which paged someone at night before (issue 12)."""
    start = 1_000_000.0
    base = with_stale_entries(with_stale_entries(healthy(), "redis-2"), "redis-3")
    transient = flags_peer_down(reset_sentinel(base, "redis-1"), "redis-2", "127.0.0.5:26379")
    raw = check(at(transient, start), POLICY, start)
    assert Code.QUORUM_LOST in {f.code for f in raw}, "the transient is a lost quorum for a moment"
    state = HealState(cluster="sandbox", reset=ResetSequence(pending=("redis-2", "redis-3"), last_at=start,
                                                             done=("redis-1",)))
    only_reset = reset_sentinel(base, "redis-1")  # the others still see each other: redis-1 is cut off
    views = [transient] * 3 + [base] + [transient] * 3 + [only_reset] * 6 + [transient] * 3 + [base]
    seen, sent = run_cycles(views, state, start)
    assert "critical" not in sent, sent
    held = [f for f in seen if f.message.startswith("Expected during")]
    assert {f.code for f in held} >= {Code.QUORUM_LOST, Code.SENTINEL_STALE_ENTRIES, Code.SENTINEL_ISOLATED}
    assert all("the Sentinel reset sequence (reset: redis-1; next: redis-2, redis-3)" in f.message for f in held)
    assert all(dict(f.evidence)["expected_during"].startswith("the Sentinel reset sequence") for f in held)
    # the same transient without the plan in flight pages: the hold is the plan's, not a blanket one
    _, unplanned = run_cycles(views, HealState(cluster="sandbox"), start)
    assert "critical" in unplanned


def test_replacement_of_a_replica_pages_nobody_and_names_itself() -> None:
    """A 2-node cluster replacing its only replica (redis-3 killed, its droplet gone): REPLICA_DOWN of
    the node being replaced is critical (no replica up) on its own; the master's redundancy is too, and
    stays so (it is real, and not the plan's doing)."""
    start = 2_000_000.0
    view = dataclasses.replace(kill_redis(healthy(), "redis-3"), expected_nodes=2)
    view = dataclasses.replace(view, nodes=tuple(n for n in view.nodes if n.name != "redis-2"))
    master = next(n for n in view.nodes if n.name == "redis-1").report.redis
    view = with_redis(view, "redis-1", connected_replicas=tuple(
        r for r in master.connected_replicas if r.address != "127.0.0.4:6379"))
    job = Reprovision(job_id="sandbox-redis-4-1", old_node="redis-3", old_droplet_id=3, new_name="redis-4",
                      step="boot", started_at=start - 30, step_at=start - 10, new_droplet_id=4)
    state = HealState(cluster="sandbox", reprovision=job)
    raw = check(at(view, start), POLICY, start)
    assert "REPLICA_DOWN node redis-3" in criticals(raw)
    findings = expect(raw, state, HEAL, start)
    replica_down = next(f for f in findings if f.code is Code.REPLICA_DOWN)
    assert replica_down.severity is Severity.WARNING
    assert replica_down.message.startswith(
        "Expected during the replacement of redis-3 by redis-4 (reprovision sandbox-redis-4-1, step boot): Replica")
    assert criticals(findings) == {"REDUNDANCY_DEGRADED cluster"}  # no replica in sync at all: real


def with_new_node(view: ClusterView, name: str, ip: str) -> ClusterView:
    """A replacement booting: redis-3's healthy report under a new name and address, syncing from the master,
    its Sentinel knowing the others (the others do not know it yet)."""
    template = next(n for n in healthy().nodes if n.name == "redis-3")
    identity = dataclasses.replace(template.report.identity, node=name, address=ip)
    redis = dataclasses.replace(template.report.redis, master_link_status="down", master_sync_in_progress=True)
    report = dataclasses.replace(template.report, identity=identity, redis=redis)
    return dataclasses.replace(view, nodes=(*view.nodes, dataclasses.replace(template, report=report)))


def test_replacement_in_a_three_node_cluster_sends_no_critical_event() -> None:
    """redis-3 killed, then its droplet gone (agent silent); redis-4 booting and syncing; the Sentinels
    still listing the old node and not yet the new one."""
    start = 3_000_000.0
    job = Reprovision(job_id="sandbox-redis-4-1", old_node="redis-3", old_droplet_id=3, new_name="redis-4",
                      step="boot", started_at=start - 30, step_at=start - 10, new_droplet_id=4)
    state = HealState(cluster="sandbox", reprovision=job)
    dead = kill_sentinel(kill_redis(healthy(), "redis-3"), "redis-3")
    booting = with_new_node(dead, "redis-4", "127.0.0.6")
    views = [dead] * 4 + [booting] * 12
    seen: list[Finding] = []
    sent: list[str] = []
    # redis-4 joins while redis-3's agent still reports (4 Sentinels expected, so 3 needed, and nobody knows
    # redis-4's yet: a lost quorum for want of the joining Sentinel); then redis-3's droplet is gone
    incidents: tuple[Incident, ...] = ()
    for i, view in enumerate(views):
        now = start + i
        judged = at(view, now)
        if i >= 8:
            judged = with_age(judged, "redis-3", 10.0)
        findings = expect(check(judged, POLICY, now), state, HEAL, now)
        seen += findings
        tracked = track(incidents, findings, POLICY, now)
        incidents = tracked.incidents
        sent += [e.severity for e in tracked.events if e.action == "trigger"]
    assert "critical" not in sent, sent
    named = [f for f in seen if f.message.startswith("Expected during the replacement of redis-3 by redis-4")]
    assert {f.code for f in named} >= {Code.REPLICA_DOWN, Code.SENTINEL_DOWN, Code.AGENT_SILENT, Code.QUORUM_LOST,
                                       Code.SENTINEL_ISOLATED, Code.REPLICA_LINK_DOWN, Code.REDUNDANCY_DEGRADED}


def test_fast_failover_transients_page_nobody() -> None:
    """Two seconds after the controller asked Sentinel to fail over: the Sentinels name different masters
    with no majority (one already switched, one still on the old master, one unreachable), critical alone."""
    start = 4_000_000.0
    view = with_sentinel_master(kill_sentinel(healthy(), "redis-2"), "redis-3", master_address="127.0.0.4:6379")
    raw = check(at(view, start), POLICY, start)
    assert "SENTINEL_DISAGREEMENT cluster" in criticals(raw)
    state = HealState(cluster="sandbox", last_failover_at=start - 2, failed_away=(("127.0.0.3:6379", start - 2),))
    findings = expect(raw, state, HEAL, start)
    assert criticals(findings) == set()
    disagreement = next(f for f in findings if f.code is Code.SENTINEL_DISAGREEMENT)
    assert "the fast failover away from 127.0.0.3:6379" in disagreement.message


# -- what no plan explains -------------------------------------------------------------------------------


def test_a_master_dying_during_a_replacement_still_pages() -> None:
    start = 5_000_000.0
    job = Reprovision(job_id="j", old_node="redis-3", old_droplet_id=3, new_name="redis-4", step="reset",
                      started_at=start - 60, step_at=start - 5)
    state = HealState(cluster="sandbox", reprovision=job,
                      reset=ResetSequence(pending=("redis-2",), last_at=start - 1, done=("redis-1",)))
    view = kill_redis(healthy(), "redis-1")
    findings = expect(check(at(view, start), POLICY, start), state, HEAL, start)
    master_down = next(f for f in findings if f.code is Code.MASTER_DOWN)
    assert master_down.severity is Severity.CRITICAL and "Expected" not in master_down.message


def test_split_brain_after_a_fast_failover_still_pages() -> None:
    start = 6_000_000.0
    view = with_redis(healthy(), "redis-2", role="master", master_host=None, master_port=None,
                      master_link_status=None)
    state = HealState(cluster="sandbox", last_failover_at=start - 2)
    findings = expect(check(at(view, start), POLICY, start), state, HEAL, start)
    assert "SPLIT_BRAIN cluster" in criticals(findings)


def test_a_stalled_plan_excuses_nothing() -> None:
    start = 7_000_000.0
    view = with_age(kill_redis(healthy(), "redis-3"), "redis-3", 0.0)
    job = Reprovision(job_id="j", old_node="redis-3", old_droplet_id=3, new_name="redis-4", step="boot",
                      started_at=start - 2000, step_at=start - HEAL.reprovision_boot_timeout_s - 1)
    state = HealState(cluster="sandbox", reprovision=job,
                      reset=ResetSequence(pending=("redis-2",), last_at=start - 3600, done=("redis-1",)),
                      last_failover_at=start - 3600)
    raw = check(at(view, start), POLICY, start)
    assert expect(raw, state, HEAL, start) == raw


# -- property --------------------------------------------------------------------------------------------


@st.composite
def heal_states(draw: st.DrawFn, now: float) -> HealState:
    names = st.sampled_from(["redis-1", "redis-2", "redis-3", "redis-4", "sandbox-1", "sandbox-2"])
    reset = draw(st.none() | st.builds(
        ResetSequence, pending=st.lists(names, max_size=3).map(tuple),
        last_at=st.none() | st.floats(now - 100, now), done=st.lists(names, max_size=3).map(tuple)))
    job = draw(st.none() | st.builds(
        Reprovision, job_id=st.just("j"), old_node=names, old_droplet_id=st.none() | st.integers(1, 9),
        new_name=names, step=st.sampled_from(["create", "boot", "reset", "destroy_old"]),
        started_at=st.floats(now - 2000, now), step_at=st.floats(now - 2000, now)))
    failover_at = draw(st.none() | st.floats(now - 120, now))
    return HealState(cluster="sandbox", reset=reset, reprovision=job, last_failover_at=failover_at,
                     failed_away=(("127.0.0.3:6379", failover_at),) if failover_at is not None else ())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_expect_only_ever_lowers_and_names_the_plan(data: st.DataObject) -> None:
    view = data.draw(mutated(data.draw(recorded_or_synthetic())))
    raw = check(view, POLICY, view.now)
    state = data.draw(heal_states(view.now))
    held = expect(raw, state, HEAL, view.now)
    assert expect(raw, HealState(cluster="sandbox"), HEAL, view.now) == raw
    before = {f.key: f for f in raw}
    assert sorted(f.key for f in held) == sorted(before)
    for f in held:
        original = before[f.key]
        assert f.severity.rank <= original.severity.rank
        if f != original:
            plan = dict(f.evidence)["expected_during"]
            assert isinstance(plan, str)
            assert f.message == f"Expected during {plan}: {original.message}"
            assert f.severity is Severity.WARNING or f.severity is original.severity
