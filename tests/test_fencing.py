"""Fencing (issue 12): an old master the Sentinel majority has replaced is demoted at once, and only then.
Plans as data over recorded reports; pure, no patching."""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.core.checks import check
from controller.core.expected import expect
from controller.core.fencing import (
    Fence,
    FenceRecord,
    FollowMaster,
    RepointSentinel,
    check_fences,
    confirmed_master,
    plan_fences,
    promoted_replica,
)
from controller.core.findings import Code, Severity
from controller.core.planner import (
    ActionResult,
    HealPolicy,
    HealSnapshot,
    HealState,
    NodeHealth,
    Plan,
    apply_result,
    observe,
    plan_heal,
    utc_day,
)
from controller.core.policy import Policy
from controller.core.view import ClusterView
from protocol.report import SentinelPeer
from tests.factories import scenario_view, synthetic_view, with_redis, with_sentinel_master
from tests.test_findings_truth import _edit_peers

OLD = "127.0.0.3:6379"  # redis-1
NEW = "127.0.0.5:6379"  # redis-3


def cut_off(view: ClusterView, cut: str = "redis-1") -> ClusterView:
    """The Sentinels of `cut` and of the other nodes flag each other disconnected; the controller reaches all."""
    addresses = {n.name: n.report.identity.sentinel_address for n in view.nodes}
    for node in view.nodes:
        mine = node.name == cut
        sv = node.report.sentinel.masters[0]
        peers = tuple(
            dataclasses.replace(p, flags=("sentinel", "s_down", "disconnected"))
            if any(addresses[o] == p.address and (o == cut) != mine for o in addresses) else p
            for p in sv.sentinels
        )
        view = with_sentinel_master(view, node.name, sentinels=peers)
    return view


def promoted(view: ClusterView, confirmed: bool = True, named_by: tuple[str, ...] = ("redis-2", "redis-3")
             ) -> ClusterView:
    """The majority's Sentinels name redis-3 (epoch 1); with `confirmed`, redis-3's own agent says master."""
    for name in named_by:
        view = with_sentinel_master(view, name, master_address=NEW, config_epoch=1)
    if confirmed:
        view = with_redis(view, "redis-3", role="master", master_host=None, master_port=None,
                          master_link_status=None)
        view = with_redis(view, "redis-2", master_host="127.0.0.5")
    return view


def split() -> ClusterView:
    """The partition-master picture after the promotion: redis-1 still says master, its Sentinel names it."""
    return promoted(cut_off(scenario_view("healthy")))


def snap(view: ClusterView, state: HealState | None = None) -> HealSnapshot:
    s = HealSnapshot(view, check(view, Policy(), view.now), state or HealState(cluster=view.name), None)
    return dataclasses.replace(s, state=observe(s, view.now))


POLICY = HealPolicy()


def plan(view: ClusterView, state: HealState | None = None, policy: HealPolicy = POLICY) -> Plan:
    return plan_heal(snap(view, state), policy, view.now)


def test_the_old_master_is_fenced_once_the_majority_names_a_confirmed_new_master() -> None:
    view = split()
    assert {f.code for f in check(view, Policy(), view.now)} >= {Code.SPLIT_BRAIN}
    p = plan(view)
    fences = [a for a in p.actions if isinstance(a, Fence)]
    assert fences == [Fence("redis-1", NEW, fences[0].reason)]
    assert "redis-2, redis-3" in fences[0].reason and "redis-3's own agent confirms" in fences[0].reason
    # its Sentinel, cut off and naming the fenced node, is re-pointed in the same plan, with the side's settings
    repoint = [a for a in p.actions if isinstance(a, RepointSentinel)]
    assert [(a.node, a.master, a.quorum, a.down_after_ms) for a in repoint] == [("redis-1", NEW, 2, 5000)]
    assert p.summary.startswith("fence redis-1") and not p.dry_run


def test_no_fence_without_the_new_masters_own_confirmation() -> None:
    view = promoted(cut_off(scenario_view("healthy")), confirmed=False)
    assert confirmed_master(view) is None
    assert plan(view).actions == ()


def test_no_fence_without_a_side_able_to_fail_over() -> None:
    # only redis-3's Sentinel names the new master; redis-2's still names the old one: no unanimous side
    view = promoted(cut_off(scenario_view("healthy")), named_by=("redis-3",))
    assert confirmed_master(view) is None
    assert not any(isinstance(a, Fence) for a in plan(view).actions)
    # every Sentinel cut off from every other: no side reaches 2
    view = split()
    for name in ("redis-2", "redis-3"):
        sv = view.node(name).report.sentinel.masters[0]  # type: ignore[union-attr]
        view = with_sentinel_master(view, name, sentinels=tuple(
            dataclasses.replace(p, flags=("sentinel", "s_down", "disconnected")) for p in sv.sentinels))
    assert confirmed_master(view) is None and plan(view).actions == ()


def test_the_named_master_is_never_fenced() -> None:
    view = split()
    # the named master and the old one both say master: only the old one is fenced, whatever the order
    for a in plan(view).actions:
        assert not (isinstance(a, Fence) and a.node == "redis-3")
    # a healthy cluster fences nobody
    assert plan(scenario_view("healthy")).actions == ()


def test_dry_run_plans_the_fence_and_a_pause_holds_it() -> None:
    p = plan(split(), policy=HealPolicy(dry_run=True))
    assert p.dry_run and any(isinstance(a, Fence) for a in p.actions)
    p = plan(split(), HealState(cluster="sandbox", paused=True))
    assert p.actions == ()
    p = plan(split(), HealState(cluster="sandbox", paused_nodes=("redis-1",)))
    assert p.actions == () and any("paused" in h.reason for h in p.held if h.what == "fence redis-1")
    assert plan(split(), policy=HealPolicy(enabled=False)).actions == ()


def test_a_fence_is_held_by_no_budget_or_cooldown_and_counts_against_neither() -> None:
    view = split()
    state = HealState(cluster="sandbox", actions_today=99, budget_day=utc_day(view.now), last_action_at=view.now - 0.1)
    p = plan(view, state, HealPolicy(daily_budget=1))
    assert any(isinstance(a, Fence) for a in p.actions)
    fence = next(a for a in p.actions if isinstance(a, Fence))
    after = apply_result(snap(view, state), state, fence, ActionResult(True, "ok"), view.now)
    assert after.actions_today == state.actions_today and after.last_action_at == state.last_action_at
    assert after.fences == (FenceRecord("redis-1", NEW, view.now, True),)


def acted_on_since_its_report(view: ClusterView, name: str) -> Plan:
    """The plan once the controller acted on `name` just after its latest report: nothing may be done."""
    node = view.node(name)
    assert node is not None
    state = HealState(cluster="sandbox").with_node(name, NodeHealth(last_action_at=node.received_at + 0.01))
    p = plan(view, state)
    assert not any(isinstance(a, Fence | RepointSentinel) for a in p.actions)
    return p


def test_a_fenced_node_is_not_fenced_again_until_a_newer_report_shows_it_still_master() -> None:
    view = split()
    node = view.node("redis-1")
    assert node is not None
    p = acted_on_since_its_report(view, "redis-1")
    assert any(h.what == "fence redis-1" and "waiting for its next report" in h.reason for h in p.held)
    state = HealState(cluster="sandbox").with_node("redis-1", NodeHealth(last_action_at=node.received_at - 0.5))
    assert any(isinstance(a, Fence) for a in plan(view, state).actions)


def test_after_the_fence_only_the_stale_sentinel_is_repointed() -> None:
    view = with_redis(split(), "redis-1", role="replica", master_host="127.0.0.5", master_port=6379,
                      master_link_status="down")
    p = plan(view)
    assert [type(a).__name__ for a in p.actions] == ["RepointSentinel"]
    # once it names the new master, nothing is left to do about the fence
    view = with_sentinel_master(view, "redis-1", master_address=NEW, config_epoch=0)
    assert not any(isinstance(a, Fence | RepointSentinel) for a in plan(view).actions)


def test_node_fenced_is_a_warning_naming_the_new_master_for_a_while() -> None:
    record = FenceRecord("redis-1", NEW, 1000.0, True)
    (finding,) = check_fences("sandbox", (record,), 1010.0, 60.0)
    assert finding.code is Code.NODE_FENCED and finding.severity is Severity.WARNING
    assert finding.subject_name == "redis-1" and NEW in finding.message and "not on the new master" in finding.message
    assert check_fences("sandbox", (record,), 1061.0, 60.0) == ()


def test_what_a_fenced_node_shows_while_cut_off_is_expected_during_the_fence() -> None:
    view = with_redis(split(), "redis-1", role="replica", master_host="127.0.0.5", master_port=6379,
                      master_link_status="down", master_link_down_since_s=5)
    view = with_sentinel_master(view, "redis-1", master_address=NEW, config_epoch=0)
    findings = check(view, Policy(), view.now)
    assert Code.REPLICA_LINK_DOWN in {f.code for f in findings}
    state = HealState(cluster="sandbox", fences=(FenceRecord("redis-1", NEW, view.now - 2, True),))
    explained = expect(findings, state, HealPolicy(), view.now)
    link = next(f for f in explained if f.code is Code.REPLICA_LINK_DOWN)
    assert link.message.startswith("Expected during the fence of redis-1")
    assert all(f.severity is not Severity.CRITICAL for f in explained)


# -- before the side's Sentinels have heard the news: the leader's failover in progress (issue 12) ---------

DOWN = ("master", "s_down", "o_down")


def promoting(view: ClusterView, leader: str = "redis-2", confirmed: bool = True, promote: str = NEW,
              others_flag_down: bool = True, in_progress: bool = True) -> ClusterView:
    """The moment after the majority's leader sent REPLICAOF NO ONE to `promote`: it still names the old
    master (o_down, failover in progress) and flags the replica "promoted"; the side's other Sentinel names
    the old master s_down (the hello with the new config is up to 2 s away); with `confirmed`, the promoted
    node's own agent says master."""
    sv = view.node(leader).report.sentinel.masters[0]  # type: ignore[union-attr]
    replicas = tuple(dataclasses.replace(p, flags=("slave", "promoted")) if p.address == promote else p
                     for p in sv.replicas)
    view = with_sentinel_master(view, leader, s_down=True, o_down=True, failover_in_progress=in_progress,
                                flags=(*DOWN, *(("failover_in_progress",) if in_progress else ())), replicas=replicas)
    for name in ("redis-2", "redis-3"):
        if name != leader:
            view = with_sentinel_master(view, name, s_down=others_flag_down,
                                        flags=("master", "s_down") if others_flag_down else ("master",))
    if confirmed:
        node = next(n.name for n in view.nodes if n.report.identity.redis_address == promote)
        view = with_redis(view, node, role="master", master_host=None, master_port=None, master_link_status=None)
    return view


def in_progress_split(**kwargs: object) -> ClusterView:
    return promoting(cut_off(scenario_view("healthy")), **kwargs)  # type: ignore[arg-type]


def test_the_old_master_is_fenced_as_soon_as_the_leader_promotes_a_replica_that_confirms_it() -> None:
    view = in_progress_split()
    confirmed = confirmed_master(view)
    assert confirmed is not None and (confirmed.address, confirmed.node) == (NEW, "redis-3")
    assert confirmed.side == ("redis-2", "redis-3")
    p = plan(view)
    assert [(a.node, a.new_master) for a in p.actions if isinstance(a, Fence)] == [("redis-1", NEW)]
    fence = next(a for a in p.actions if isinstance(a, Fence))
    assert "their leader redis-2 promoted it" in fence.reason and "redis-3's own agent confirms" in fence.reason
    # the cut-off Sentinel is re-pointed; the side's own Sentinels, mid-failover, are left to Sentinel
    assert [(a.node, a.master) for a in p.actions if isinstance(a, RepointSentinel)] == [("redis-1", NEW)]
    # the promoted node may lead too: the same fence
    view = in_progress_split(leader="redis-3")
    assert [(a.node, a.new_master) for a in plan(view).actions if isinstance(a, Fence)] == [("redis-1", NEW)]


def test_the_other_replica_follows_the_new_master_with_the_fence() -> None:
    # mid-failover, redis-2 still follows the old master: REPLICAOF the new one in the same plan (Sentinel's
    # leader would send it only after its next INFO of the promoted replica)
    p = plan(in_progress_split())
    follow = [a for a in p.actions if isinstance(a, FollowMaster)]
    assert [(a.node, a.master) for a in follow] == [("redis-2", NEW)]
    assert "still follows 127.0.0.3:6379, fenced now" in follow[0].reason
    # the promoted node never; a replica that already follows the new master is left alone
    assert not [a for a in plan(split()).actions if isinstance(a, FollowMaster)]
    # no fence, no re-point: without the promoted node's confirmation nothing moves
    assert not [a for a in plan(in_progress_split(confirmed=False)).actions if isinstance(a, (Fence, FollowMaster))]


def test_no_fence_mid_failover_without_the_promoted_nodes_own_confirmation() -> None:
    view = in_progress_split(confirmed=False)
    assert confirmed_master(view) is None and plan(view).actions == ()


def test_no_fence_mid_failover_when_a_side_member_still_sees_the_old_master_up() -> None:
    view = in_progress_split(others_flag_down=False)
    assert confirmed_master(view) is None
    assert not any(isinstance(a, Fence | RepointSentinel) for a in plan(view).actions)


def test_no_fence_on_a_promoted_flag_without_a_failover_in_progress() -> None:
    view = in_progress_split(in_progress=False)
    assert confirmed_master(view) is None and plan(view).actions == ()


def test_no_fence_mid_failover_when_the_leader_has_no_side_able_to_fail_over() -> None:
    # the other majority Sentinel flags the leader disconnected: the leader's side is itself alone
    view = in_progress_split()
    sv = view.node("redis-3").report.sentinel.masters[0]  # type: ignore[union-attr]
    leader = view.node("redis-2").report.identity.sentinel_address  # type: ignore[union-attr]
    view = with_sentinel_master(view, "redis-3", sentinels=tuple(
        dataclasses.replace(p, flags=("sentinel", "s_down", "disconnected")) if p.address == leader else p
        for p in sv.sentinels))
    assert confirmed_master(view) is None and plan(view).actions == ()
    # a cut-off minority Sentinel claiming a failover of its own (it cannot get the votes) confirms nothing:
    # the majority still names the old master, which is not fenced
    view = promoting(cut_off(scenario_view("healthy")), leader="redis-1", others_flag_down=False)
    confirmed = confirmed_master(view)
    assert confirmed is not None and confirmed.address == OLD
    assert not any(isinstance(a, Fence) and a.node == "redis-1" for a in plan(view).actions)


def test_no_fence_mid_failover_when_a_member_names_a_third_master_or_two_replicas_are_promoted() -> None:
    view = with_sentinel_master(in_progress_split(), "redis-3", master_address="127.0.0.9:6379")
    assert confirmed_master(view) is None
    view = in_progress_split()
    sv = view.node("redis-2").report.sentinel.masters[0]  # type: ignore[union-attr]
    view = with_sentinel_master(view, "redis-2", replicas=tuple(
        dataclasses.replace(p, flags=("slave", "promoted")) for p in sv.replicas))
    assert confirmed_master(view) is None and plan(view).actions == ()


def test_mid_failover_the_promoted_node_is_never_fenced() -> None:
    # the promoted replica and the old master both say master: only the old one is fenced
    for leader in ("redis-2", "redis-3"):
        for a in plan(in_progress_split(leader=leader)).actions:
            assert not (isinstance(a, Fence) and a.node == "redis-3")
            assert not (isinstance(a, RepointSentinel) and a.node in ("redis-2", "redis-3"))


def test_a_just_promoted_replica_is_never_fenced_on_the_sides_older_reports() -> None:
    """The bench's 128 s outage: the replica a failover had just promoted reported role master at once (a
    role change wakes the controller), while the majority's Sentinels' reports, a second older, still named
    the old master healthy and listed that replica as theirs. It was fenced to the old master, and the old
    master then fenced to it: no master left. Now it is held, saying why, and nothing else is done."""
    view = cut_off(scenario_view("healthy"))
    view = with_redis(view, "redis-3", role="master", master_host=None, master_port=None, master_link_status=None)
    confirmed = confirmed_master(view)
    assert confirmed is not None and confirmed.address == OLD  # what the side's older reports say
    p = plan(view)
    assert not any(isinstance(a, Fence | RepointSentinel) for a in p.actions), p.actions
    hold = next(h for h in p.held if h.what == "fence redis-3")
    assert "last listed redis-3 as a healthy replica" in hold.reason
    # a replica some Sentinel's failover in progress has promoted is never fenced either, whatever the side says
    view = with_sentinel_master(view, "redis-2", replicas=())  # the side no longer lists it ...
    view = with_sentinel_master(view, "redis-3", replicas=())
    # (a master the side does not know as its replica is a stray one: fenced)
    assert any(isinstance(a, Fence) and a.node == "redis-3" for a in plan(view).actions)
    sv = scenario_view("healthy").node("redis-1").report.sentinel.masters[0]  # type: ignore[union-attr]
    promoting_view = with_sentinel_master(view, "redis-1", failover_in_progress=True, replicas=tuple(
        dataclasses.replace(r, flags=("slave", "promoted")) if r.address == NEW else r for r in sv.replicas))
    p = plan(promoting_view)
    assert not any(isinstance(a, Fence) and a.node == "redis-3" for a in p.actions)
    assert any(h.what == "fence redis-3" and "promoted: never fenced" in h.reason for h in p.held)


def test_no_fence_on_the_word_of_a_master_the_controller_acted_on_since_its_report() -> None:
    """The second half of that cascade: the new master's report that said master predates the controller's
    own action on it; nothing is fenced on it until a newer report confirms it."""
    p = acted_on_since_its_report(in_progress_split(), "redis-3")
    assert any("its word that it is master is older" in h.reason for h in p.held)


# -- properties: whatever the reports say, the rails hold ----------------------------------------------------


@st.composite
def failover_moments(draw: st.DrawFn) -> ClusterView:
    """A cluster of 3-5 whose master (the first node) is cut off from the others' Sentinels, caught at any
    moment of the failover that follows, each report from its own moment: any node may say master (the old
    and the new one most often), any majority Sentinel may name the old master, the new one or another,
    flag it down or not, be mid-failover with any replica flagged promoted, list any replica healthy or down,
    heard from (a run id) or not yet (a Sentinel just switched to the new master lists the old one unreached)."""
    n = draw(st.integers(3, 5))
    view = synthetic_view(n)
    names = [node.name for node in view.nodes]
    addresses = [node.report.identity.redis_address for node in view.nodes]
    old, new = addresses[0], draw(st.sampled_from(addresses[1:]))
    cut = {names[0]}
    for name in names:
        view = _edit_peers(view, name, {o for o in names if (o in cut) != (name in cut)})
    for name, address in zip(names, addresses, strict=True):
        likely = address in (old, new)
        if draw(st.integers(0, 9)) < (8 if likely else 2):
            view = with_redis(view, name, role="master", master_host=None, master_port=None,
                              master_link_status=None)
    for name in names[1:]:
        named = draw(st.sampled_from([old, new, new, *addresses]))
        down = draw(st.booleans())
        promoted_address = draw(st.sampled_from([new, new, *addresses]))
        view = with_sentinel_master(
            view, name, master_address=named, s_down=down, o_down=down and draw(st.booleans()),
            failover_in_progress=draw(st.booleans()),
            replicas=tuple(SentinelPeer(a, ("slave", *(("promoted",) if a == promoted_address else ()),
                                            *(("s_down", "disconnected") if draw(st.booleans()) else ())),
                                        run_id=("r" * 40) if draw(st.integers(0, 3)) > 0 else None)
                           for a in addresses if a != named and draw(st.integers(0, 3)) > 0))
    return view


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(failover_moments())
def test_a_fence_never_hits_the_named_master_a_promoted_replica_or_one_the_side_calls_its_replica(
        view: ClusterView) -> None:
    fences, _ = plan_fences(view, {})
    confirmed = confirmed_master(view)
    if confirmed is None:
        assert fences == ()
        return
    node = view.node(confirmed.node)
    assert node is not None and view.redis_up(node) and node.report.redis.role == "master"
    assert len(confirmed.side) >= max(view.expected_sentinels // 2 + 1,
                                      max((v.quorum or 0 for _, v in view.sentinel_views()), default=0))
    views = dict((n.name, v) for n, v in view.sentinel_views())
    for action in fences:
        if not isinstance(action, Fence):
            continue
        target = view.node(action.node)
        assert target is not None and action.new_master == confirmed.address
        address = target.report.identity.redis_address
        assert action.node != confirmed.node and address != confirmed.address
        assert not any(promoted_replica(v) == address for v in views.values())
        assert not any(p.address == address and not p.down and p.run_id is not None
                       for m in confirmed.side for p in views[m].replicas)


def test_a_sides_switch_to_the_new_master_does_not_hold_the_fence_of_the_old_one() -> None:
    """Right after its switch-master a Sentinel lists the old master as a replica of the new one, unreached
    (no run id) and not yet flagged down: that is no word that the old master is a healthy replica. A
    replica entry the Sentinel has heard from still holds the fence (the just-promoted race)."""
    view = split()
    old_as_replica = SentinelPeer(OLD, ("slave",), run_id=None, master_link_status="err")
    for name in ("redis-2", "redis-3"):
        sv = view.node(name).report.sentinel.masters[0]  # type: ignore[union-attr]
        view = with_sentinel_master(view, name, replicas=(*[r for r in sv.replicas if r.address != NEW],
                                                          old_as_replica))
    assert any(isinstance(a, Fence) and a.node == "redis-1" for a in plan(view).actions)
    heard = dataclasses.replace(old_as_replica, run_id="a" * 40, master_link_status="ok")
    sv = view.node("redis-2").report.sentinel.masters[0]  # type: ignore[union-attr]
    view = with_sentinel_master(view, "redis-2", replicas=tuple(heard if r.address == OLD else r
                                                                for r in sv.replicas))
    p = plan(view)
    assert not any(isinstance(a, Fence) and a.node == "redis-1" for a in p.actions)
    assert any("healthy replica" in h.reason for h in p.held if h.what == "fence redis-1")
