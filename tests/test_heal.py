"""The healing planner: plans as data, and every safety rail, over recorded reports. Pure, no patching."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.core.checks import check
from controller.core.planner import (
    ActionResult,
    CreateReplacement,
    DestroyDroplet,
    Droplet,
    Failover,
    FinishReprovision,
    ForgetNode,
    HealPolicy,
    HealSnapshot,
    HealState,
    PowerCycle,
    Reboot,
    ResetSentinel,
    RestartService,
    StartReprovision,
    apply_result,
    observe,
    plan_heal,
    utc_day,
)
from controller.core.policy import Policy
from controller.core.view import ClusterView, cluster_status
from tests.factories import (
    kill_redis,
    kill_sentinel,
    scenario_view,
    with_age,
    with_redis,
    with_report,
    with_sentinel_master,
)

POLICY = HealPolicy()
DROPLETS = (Droplet(101, "redis-1", "active", "127.0.0.3"), Droplet(102, "redis-2", "active", "127.0.0.4"),
            Droplet(103, "redis-3", "active", "127.0.0.5"))


def snap(view: ClusterView, state: HealState | None = None, droplets: tuple[Droplet, ...] | None = DROPLETS,
         ) -> HealSnapshot:
    findings = check(view, Policy(), view.now)
    s = HealSnapshot(view, findings, state or HealState(cluster=view.name), droplets)
    return dataclasses.replace(s, state=observe(s, view.now))


def silent_down(view: ClusterView, name: str, age_s: float = 30.0) -> ClusterView:
    """`name`'s agent silent for `age_s`, and its Redis corroborated down: the master no longer lists it."""
    master = view.master_node()
    assert master is not None
    address = view.node(name).report.identity.redis_address  # type: ignore[union-attr]
    kept = tuple(r for r in master.report.redis.connected_replicas if r.address != address)
    return with_age(with_redis(view, master.name, connected_replicas=kept), name, age_s)


def plan(view: ClusterView, state: HealState | None = None, policy: HealPolicy = POLICY,
         droplets: tuple[Droplet, ...] | None = DROPLETS):  # type: ignore[no-untyped-def]
    s = snap(view, state, droplets)
    return plan_heal(s, policy, view.now)


def healthy() -> ClusterView:
    return scenario_view("healthy")


def test_a_healthy_cluster_needs_nothing() -> None:
    p = plan(healthy())
    assert p.actions == () and p.summary == "no action: nothing to heal"


def test_a_dead_replica_redis_is_restarted_by_its_agent() -> None:
    p = plan(kill_redis(healthy(), "redis-2"))
    assert p.actions == (RestartService("redis-2", "redis", p.actions[0].reason, "127.0.0.3:6379"),)
    assert "restart 1 of 2" in p.actions[0].reason


def test_the_ladder_restart_restart_power_cycle_reprovision() -> None:
    fast = HealPolicy(restart_wait_s=0, power_cycle_wait_s=0, node_cooldown_s=0, cluster_cooldown_s=0)
    view = kill_redis(healthy(), "redis-2")
    state = HealState(cluster="sandbox")
    kinds = []
    for step in range(5):
        v = dataclasses.replace(view, now=view.now + step * 0.1)  # reports stay fresh
        s = snap(v, state)
        for a in plan_heal(s, fast, v.now).actions:
            kinds.append(type(a).__name__)
            state = apply_result(s, s.state, a, ActionResult(True), v.now)
    assert kinds[:4] == ["RestartService", "RestartService", "PowerCycle", "StartReprovision"]


def test_a_silent_replica_droplet_is_power_cycled_then_replaced() -> None:
    view = silent_down(healthy(), "redis-3")
    p = plan(view)
    assert [type(a) for a in p.actions] == [PowerCycle]
    assert p.actions[0].droplet_id == 103  # type: ignore[union-attr]
    # a destroyed droplet is replaced without a power-cycle
    p = plan(view, droplets=DROPLETS[:2])
    assert [type(a) for a in p.actions] == [StartReprovision]


def test_never_power_cycle_or_rebuild_the_master() -> None:
    view = with_age(healthy(), "redis-1", 30.0)  # the master's agent and redis silent
    p = plan(view)
    assert not any(isinstance(a, PowerCycle | StartReprovision) for a in p.actions)
    assert any("current master" in h.reason for h in p.held) or "undecided" in p.summary


def test_fast_failover_when_the_masters_own_host_confirms_redis_gone() -> None:
    p = plan(kill_redis(healthy(), "redis-1"))
    assert [type(a) for a in p.actions] == [Failover]
    assert p.actions[0].old_master == "127.0.0.3:6379"  # type: ignore[union-attr]
    assert p.actions[0].via_node == "redis-3"  # type: ignore[union-attr]  # the Sentinel clients ask last
    # the status tells clients (and the drill) which that is: the last of its order that is not the master's
    order = cluster_status(healthy())["sentinels"]["order"]
    by_node = {n.name: n.report.identity.sentinel_address for n in healthy().nodes}
    assert order == [by_node[name] for name in sorted(by_node)]
    assert [a for a in order if a != by_node["redis-1"]][-1] == by_node["redis-3"]
    off = plan(kill_redis(healthy(), "redis-1"), policy=HealPolicy(fast_failover=False))
    assert not any(isinstance(a, Failover) for a in off.actions)
    assert any("fast failover is off" in h.reason for h in off.held)


def test_a_hung_master_is_not_confirmed_gone() -> None:
    from tests.factories import with_redis

    view = with_redis(healthy(), "redis-1", reachable=False, error="TimeoutError: Timeout reading from socket")
    p = plan(view)
    assert not any(isinstance(a, Failover) for a in p.actions)


def test_no_action_while_a_failover_is_in_progress() -> None:
    view = kill_redis(healthy(), "redis-2")
    for node in ("redis-1", "redis-2", "redis-3"):
        view = with_sentinel_master(view, node, failover_in_progress=True, flags=("master", "failover_in_progress"))
    p = plan(view)
    assert p.actions == () and "failover in progress" in p.summary


def test_no_action_without_a_sentinel_majority_unless_the_policy_says_so() -> None:
    view = kill_redis(kill_sentinel(kill_sentinel(healthy(), "redis-2"), "redis-3"), "redis-3")
    p = plan(view)
    assert p.actions == () and "no Sentinel majority" in p.summary
    p = plan(view, policy=HealPolicy(act_without_majority=True))
    assert p.actions


def test_paused_cluster_and_paused_node() -> None:
    view = kill_redis(healthy(), "redis-2")
    p = plan(view, HealState(cluster="sandbox", paused=True))
    assert p.actions == () and "paused" in p.summary
    p = plan(view, HealState(cluster="sandbox", paused_nodes=("redis-2",)))
    assert p.actions == () and any("node paused" in h.reason for h in p.held)


def test_dry_run_plans_but_marks_it() -> None:
    p = plan(kill_redis(healthy(), "redis-2"), policy=HealPolicy(dry_run=True))
    assert p.dry_run and p.actions


def test_budget_exhausted_holds_until_acknowledged() -> None:
    view = kill_redis(healthy(), "redis-2")
    from controller.core.planner import utc_day

    spent = HealState(cluster="sandbox", budget_day=utc_day(view.now), actions_today=3)
    p = plan(view, spent, policy=HealPolicy(daily_budget=3))
    assert p.actions == () and any("daily budget of 3" in h.reason for h in p.held)
    p = plan(view, dataclasses.replace(spent, budget_acked=True), policy=HealPolicy(daily_budget=3))
    assert p.actions


def test_one_reprovision_at_a_time() -> None:
    view = with_age(with_age(healthy(), "redis-2", 30.0), "redis-3", 30.0)
    p = plan(view, droplets=DROPLETS[:1])
    assert p.actions == () and "no Sentinel majority" in p.summary  # two of three gone: hands off
    p = plan(view, droplets=DROPLETS[:1], policy=HealPolicy(act_without_majority=True))
    assert sum(isinstance(a, StartReprovision) for a in p.actions) == 1
    assert any("one at a time" in h.reason or "cooldown" in h.reason for h in p.held)


def test_reprovision_state_machine_create_boot_reset_destroy() -> None:
    view = with_age(healthy(), "redis-3", 30.0)
    s = snap(view, droplets=DROPLETS[:2])
    start = plan_heal(s, POLICY, view.now).actions[0]
    assert isinstance(start, StartReprovision)
    state = apply_result(s, s.state, start, ActionResult(True), view.now)
    assert state.reprovision is not None and state.reprovision.step == "create"
    assert state.reprovision.new_name == "redis-4"
    # create (again after a restart at this step: the same job, the same name)
    s = snap(view, state, DROPLETS[:2])
    create = plan_heal(s, POLICY, view.now + 1).actions
    assert [type(a) for a in create] == [CreateReplacement]
    state = apply_result(s, state, create[0], ActionResult(True, droplet_id=104), view.now + 1)
    assert state.reprovision is not None and state.reprovision.step == "boot"
    # while it boots: nothing but waiting (and no second reprovision of redis-3)
    p = plan_heal(snap(view, state, DROPLETS[:2]), POLICY, view.now + 2)
    assert p.actions == ()
    # destroy_old: the old droplet (if it still exists) goes, the node is forgotten, the job ends
    # (a droplet destroyed from outside: only forget it)
    state = dataclasses.replace(state, reprovision=dataclasses.replace(state.reprovision, step="destroy_old"))
    p = plan_heal(snap(view, state, DROPLETS[:2]), POLICY, view.now + 3)
    assert [type(a) for a in p.actions] == [ForgetNode, FinishReprovision]
    # (a broken but existing droplet: destroy it too)
    state = dataclasses.replace(state, reprovision=dataclasses.replace(state.reprovision, old_droplet_id=103))
    p = plan_heal(snap(view, state, DROPLETS), POLICY, view.now + 3)
    assert [type(a) for a in p.actions] == [DestroyDroplet, ForgetNode, FinishReprovision]


def test_stale_sentinel_entries_reset_one_sentinel_at_a_time() -> None:
    from protocol.report import SentinelPeer
    from tests.factories import with_sentinel_master as wsm

    view = healthy()
    for node in ("redis-1", "redis-2", "redis-3"):
        sv = next(n for n in view.nodes if n.name == node).report.sentinel.masters[0]
        view = wsm(view, node, replicas=(*sv.replicas, SentinelPeer("127.0.0.99:6379", ("slave", "s_down"))))
    s = snap(view)
    p = plan_heal(s, POLICY, view.now)
    resets = [a for a in p.actions if isinstance(a, ResetSentinel)]
    assert len(resets) == 1
    state = apply_result(s, s.state, resets[0], ActionResult(True), view.now)
    assert state.reset is not None and len(state.reset.pending) == 2
    # the next one waits for the interval
    p = plan_heal(snap(view, state), POLICY, view.now + 1)
    assert not any(isinstance(a, ResetSentinel) for a in p.actions)


def test_the_next_reset_waits_for_peer_sentinels_and_the_sequence_ends_when_all_list_the_replicas() -> None:
    from controller.core.planner import ResetSequence

    view = healthy()  # every Sentinel lists 2 peers and 2 replicas
    reset_at = view.now - 10  # long enough ago for the interval and the settle time
    fast = HealPolicy(sentinel_reset_interval_s=5, sentinel_settle_s=2)
    seq = ResetSequence(pending=("redis-3",), last_at=reset_at, done=("redis-1", "redis-2"))
    state = HealState(cluster="sandbox", reset=seq)

    # redis-2's Sentinel has its peers back but not yet the replicas (its next INFO of the master): go on
    no_replicas = with_sentinel_master(view, "redis-2", replicas=())
    p = plan_heal(snap(no_replicas, state), fast, view.now)
    assert [(type(a), a.node) for a in p.actions if isinstance(a, ResetSentinel)] == [(ResetSentinel, "redis-3")]
    # its peers not back yet: the next reset waits, and says why
    no_peers = with_sentinel_master(view, "redis-2", num_other_sentinels=0)
    p = plan_heal(snap(no_peers, state), fast, view.now)
    assert not any(isinstance(a, ResetSentinel) for a in p.actions)
    assert any("rediscover its peer Sentinels" in h.reason for h in p.held)

    # peers and replicas both back in a report after the settle time: the next reset goes at once, long
    # before a production interval of 30 s
    slow = HealPolicy(sentinel_reset_interval_s=30, sentinel_settle_s=2)
    p = plan_heal(snap(view, state), slow, view.now)
    assert [(type(a), a.node) for a in p.actions if isinstance(a, ResetSentinel)] == [(ResetSentinel, "redis-3")]
    # the replicas not back yet: that waits for the interval
    p = plan_heal(snap(no_replicas, state), slow, view.now)
    assert not any(isinstance(a, ResetSentinel) for a in p.actions)
    assert any("list the replicas again, or 30 s" in h.reason for h in p.held)

    # the last one done: the sequence ends only once every Sentinel it reset lists the replicas again
    last = ResetSequence(pending=(), last_at=reset_at, done=("redis-1", "redis-2", "redis-3"))
    state = HealState(cluster="sandbox", reset=last)
    assert snap(with_sentinel_master(view, "redis-1", replicas=()), state).state.reset == last
    assert snap(view, state).state.reset is None



def test_a_replaced_node_back_with_its_redis_down_does_not_hold_the_reset_sequence_forever() -> None:
    """Issue 20, found by the CI campaign on a fresh machine: redis-3 was being replaced; its agent came back
    with its Redis down while the reset sequence ran. The reset Sentinels cannot relearn a Redis that is
    down, so they list one replica, not two: the sequence must still end (and the job move on)."""
    from controller.core.planner import Reprovision, ResetSequence

    view = kill_redis(healthy(), "redis-3")
    gone = view.node("redis-3").report.identity.redis_address  # type: ignore[union-attr]
    for node in ("redis-1", "redis-2"):
        sv = view.node(node).report.sentinel.masters[0]  # type: ignore[union-attr]
        view = with_sentinel_master(view, node, replicas=tuple(r for r in sv.replicas if r.address != gone))
    reset_at = view.now - 10
    job = Reprovision(job_id="j", old_node="redis-3", old_droplet_id=103, new_name="redis-4", step="reset",
                      started_at=reset_at - 60, step_at=reset_at - 5)
    state = HealState(cluster="sandbox", reprovision=job,
                      reset=ResetSequence(pending=(), last_at=reset_at, done=("redis-1", "redis-2")))
    after = snap(view, state).state
    assert after.reset is None
    assert after.reprovision is not None and after.reprovision.step == "destroy_old"
    # a Redis that is up but not yet relearnt still holds it, as before
    view_up = with_sentinel_master(healthy(), "redis-1", replicas=())
    assert snap(view_up, state).state.reset is not None


# -- properties of the rails ----------------------------------------------------------------------

NODES = ("redis-1", "redis-2", "redis-3")
faults = st.lists(st.tuples(st.sampled_from(("kill_redis", "kill_sentinel", "silent")), st.sampled_from(NODES)),
                  max_size=4)


def faulty(fs: list[tuple[str, str]]) -> ClusterView:
    view = healthy()
    for kind, node in fs:
        if kind == "kill_redis":
            view = kill_redis(view, node)
        elif kind == "kill_sentinel":
            view = kill_sentinel(view, node)
        else:
            view = with_age(view, node, 60.0)
    return view


@settings(max_examples=150, deadline=None)
@given(faults, st.booleans(), st.booleans())
def test_rails_hold_for_any_faults(fs: list[tuple[str, str]], paused: bool, dry_run: bool) -> None:
    view = faulty(fs)
    s = snap(view, HealState(cluster="sandbox", paused=paused))
    p = plan_heal(s, HealPolicy(dry_run=dry_run), view.now)
    master = view.master_address()
    master_node = view.master_node()
    if paused:
        assert p.actions == ()
    if dry_run:
        assert p.dry_run or not p.actions
    # never power-cycle, rebuild or destroy the current master
    for a in p.actions:
        if isinstance(a, PowerCycle | StartReprovision | DestroyDroplet):
            assert master_node is None or a.node != master_node.name
    # nothing but a failover without a decided master or Sentinel majority
    if master is None or len(view.sentinel_views()) * 2 <= view.expected_sentinels:
        assert all(isinstance(a, Failover) for a in p.actions) or p.actions == ()
    # at most one reprovision, one new cooling action per cycle
    assert sum(isinstance(a, StartReprovision) for a in p.actions) <= 1


@settings(max_examples=100, deadline=None)
@given(faults)
def test_plans_are_deterministic(fs: list[tuple[str, str]]) -> None:
    view = faulty(fs)
    assert plan_heal(snap(view), POLICY, view.now) == plan_heal(snap(view), POLICY, view.now)


@pytest.mark.parametrize("policy", [HealPolicy(enabled=False), HealPolicy(daily_budget=0)])
def test_disabled_or_zero_budget_acts_on_nothing(policy: HealPolicy) -> None:
    assert plan(kill_redis(healthy(), "redis-2"), policy=policy).actions == ()


def test_the_reserved_ip_follows_the_master() -> None:
    from controller.core.planner import MoveReservedIp

    s = dataclasses.replace(snap(healthy()), reserved_ip=("127.0.0.50", 102))
    p = plan_heal(s, POLICY, s.view.now)
    assert [(type(a), a.droplet_id) for a in p.actions] == [(MoveReservedIp, 101)]  # type: ignore[union-attr]
    s = dataclasses.replace(snap(healthy()), reserved_ip=("127.0.0.50", 101))
    assert plan_heal(s, POLICY, s.view.now).actions == ()


def test_a_failing_create_is_retried_with_backoff_not_every_cycle() -> None:
    view = with_age(healthy(), "redis-3", 30.0)
    s = snap(view, droplets=DROPLETS[:2])
    state = apply_result(s, s.state, plan_heal(s, POLICY, view.now).actions[0], ActionResult(True), view.now)
    create = plan_heal(snap(view, state, DROPLETS[:2]), POLICY, view.now).actions[0]
    state = apply_result(s, state, create, ActionResult(False, "boom"), view.now)
    p = plan_heal(snap(view, state, DROPLETS[:2]), POLICY, view.now + 1)
    assert p.actions == () and any("retrying 5 s" in h.reason for h in p.held)
    assert [type(a) for a in plan_heal(snap(view, state, DROPLETS[:2]), POLICY, view.now + 5).actions] == [
        CreateReplacement]


def test_nothing_is_done_to_a_node_before_its_finding_is_confirmed() -> None:
    view = kill_redis(healthy(), "redis-2")
    unconfirmed = dataclasses.replace(snap(view), findings=())  # the watch cycle passes confirmed findings only
    assert plan_heal(unconfirmed, POLICY, view.now).actions == ()


# -- the target's identity comes from the controller's records and the cloud, never from the node -------------


def test_a_node_claiming_the_masters_droplet_gets_its_own_droplet_power_cycled() -> None:
    view = silent_down(healthy(), "redis-3")
    lying = with_report(view, "redis-3", identity=dataclasses.replace(
        view.node("redis-3").report.identity, droplet_id=101))  # type: ignore[union-attr]
    s = dataclasses.replace(snap(lying), bindings=(("redis-3", 103),))
    p = plan_heal(s, POLICY, lying.now)
    assert [(type(a), a.droplet_id) for a in p.actions] == [(PowerCycle, 103)]  # type: ignore[union-attr]
    # with no record either, the droplet is found by its name among the cluster's tagged droplets
    p = plan_heal(snap(lying), POLICY, lying.now)
    assert [(type(a), a.droplet_id) for a in p.actions] == [(PowerCycle, 103)]  # type: ignore[union-attr]


def test_a_droplet_with_the_masters_ip_is_never_touched() -> None:
    view = silent_down(healthy(), "redis-3")
    impostor = (DROPLETS[0], DROPLETS[1], Droplet(103, "redis-3", "active", "127.0.0.3"))  # the master's IP
    p = plan(view, droplets=impostor)
    assert p.actions == ()
    assert any("the master is never touched" in h.reason for h in p.held)


def test_a_master_that_maps_to_no_node_holds_every_disruptive_action() -> None:
    view = silent_down(healthy(), "redis-3")
    # redis-1 is the master by Sentinel majority, but its droplet says another address: no node is the master
    moved = with_report(view, "redis-1", identity=dataclasses.replace(
        view.node("redis-1").report.identity, address="127.0.0.9"))  # type: ignore[union-attr]
    assert moved.master_address() == "127.0.0.3:6379" and moved.master_node() is None
    off = (DROPLETS[0], DROPLETS[1], Droplet(103, "redis-3", "off", "127.0.0.5"))  # the cloud corroborates
    p = plan(moved, droplets=off)
    assert not any(isinstance(a, PowerCycle | StartReprovision | DestroyDroplet) for a in p.actions)
    assert any("is no node of this cluster" in h.reason for h in p.held)


# -- corroboration: a silent agent alone is not a dead Redis (issue #11) ------------------------------------------


def test_a_silent_agent_whose_redis_the_master_still_lists_is_alerted_not_power_cycled() -> None:
    view = with_age(healthy(), "redis-3", 30.0)  # agent silent; the master's INFO still lists redis-3 online
    assert view.silent_redis(view.node("redis-3"))[0] == "up"  # type: ignore[arg-type]
    p = plan(view)
    assert not any(isinstance(a, PowerCycle | StartReprovision) for a in p.actions)
    assert any("corroborated healthy" in h.reason and "master" in h.reason for h in p.held)


def test_the_cloud_showing_the_droplet_off_corroborates_a_silent_agent() -> None:
    view = with_age(healthy(), "redis-3", 30.0)
    off = (DROPLETS[0], DROPLETS[1], Droplet(103, "redis-3", "off", "127.0.0.5"))
    p = plan(view, droplets=off)
    assert [type(a) for a in p.actions] == [PowerCycle] and "cloud shows droplet 103 off" in p.actions[0].reason


def test_fast_failover_guards_ping_pong_per_node_not_per_cluster() -> None:
    view = kill_redis(healthy(), "redis-1")
    first = plan(view)
    assert [type(a) for a in first.actions] == [Failover]
    # record the first failover, 127.0.0.3 (redis-1) failed away from
    s = snap(view)
    state = apply_result(s, s.state, first.actions[0], ActionResult(True, "OK"), view.now)
    assert state.failed_away == (("127.0.0.3:6379", view.now),)
    # a quarter of a second later the master is still down (Sentinel is promoting): not asked again, which
    # only got INPROG errors (three Failover rows per crash, seen in the fault campaign)
    again = plan_heal(dataclasses.replace(snap(view), state=state), POLICY, view.now + 0.25)
    assert not any(isinstance(a, Failover) for a in again.actions)
    assert any("Sentinel is carrying it out" in h.reason for h in again.held)
    # 15 s later another master crashes (the first one, 127.0.0.9, was failed away from) and its replicas
    # are nodes nobody failed away from: the fast path again (the guard is per node; a cluster-wide
    # cooldown used to hold this one)
    other = dataclasses.replace(view, now=view.now + 15)
    state = dataclasses.replace(state, failed_away=(("127.0.0.9:6379", view.now),))
    s2 = dataclasses.replace(snap(kill_redis(healthy(), "redis-1")), state=state)
    p = plan_heal(s2, POLICY, view.now + 15)
    assert [type(a) for a in p.actions] == [Failover], p.summary
    # but when the only replica to promote is the node failed away from 15 s ago: held, Sentinel's timer
    recent = dataclasses.replace(state, failed_away=(("127.0.0.4:6379", other.now - 15),
                                                     ("127.0.0.5:6379", other.now - 15)))
    s3 = dataclasses.replace(snap(kill_redis(healthy(), "redis-1")), state=recent)
    p = plan_heal(s3, POLICY, view.now + 15)
    assert not any(isinstance(a, Failover) for a in p.actions)
    assert any("ping-pong" in h.reason for h in p.held)


# -- AGENT_SILENT's gentler remedy: one graceful reboot after a long silence, off by default (issue #11) -----

REBOOT = HealPolicy(agent_silent_reboot_after_s=600)


def test_a_long_silent_agent_is_never_rebooted_by_default() -> None:
    view = with_age(healthy(), "redis-3", 86400.0)
    assert POLICY.agent_silent_reboot_after_s == 0
    p = plan(view)
    assert p.actions == () and not any(h.what.startswith("reboot") for h in p.held)


def test_a_silent_agent_whose_redis_is_healthy_gets_one_graceful_reboot_after_the_set_time() -> None:
    early = plan(with_age(healthy(), "redis-3", 300.0), policy=REBOOT)
    assert early.actions == ()
    assert any(h.what == "reboot redis-3" and "only after 600 s" in h.reason for h in early.held)

    view = with_age(healthy(), "redis-3", 700.0)
    p = plan(view, policy=REBOOT)
    assert [type(a) for a in p.actions] == [Reboot] and p.actions[0].droplet_id == 103  # type: ignore[union-attr]
    assert "silent 700 s" in p.actions[0].reason and "redis-2 in sync" in p.actions[0].reason
    assert not any(isinstance(a, PowerCycle) for a in p.actions)  # graceful, never a power-cycle

    # once: still silent afterwards, no second reboot; the operator is told why
    s = snap(view)
    state = apply_result(s, s.state, p.actions[0], ActionResult(True, "reboot action 7 in-progress"), view.now)
    later = with_age(healthy(), "redis-3", 900.0)
    again = plan(later, state=state, policy=REBOOT)
    assert again.actions == () and any("one reboot per silence" in h.reason for h in again.held)
    # back and healthy: the count starts afresh for a later silence
    assert observe(snap(healthy(), state), healthy().now).node("redis-3").rebooted_at is None


def test_while_it_reboots_its_redis_being_down_does_not_start_the_power_cycle_ladder() -> None:
    view = silent_down(healthy(), "redis-3", age_s=720.0)  # the reboot took Redis down with it
    s = snap(view)
    rebooted = apply_result(s, s.state, Reboot("redis-3", 103, "test"), ActionResult(True), view.now - 10)
    p = plan(view, state=rebooted, policy=REBOOT)
    assert p.actions == () and any("rebooted 10 s ago" in h.reason for h in p.held)
    # still down long after the reboot: the ladder goes on
    long_ago = apply_result(s, s.state, Reboot("redis-3", 103, "test"), ActionResult(True),
                            view.now - REBOOT.power_cycle_wait_s)
    assert [type(a) for a in plan(view, state=long_ago, policy=REBOOT).actions] == [PowerCycle]


def test_the_master_is_never_rebooted_and_the_hold_says_why() -> None:
    p = plan(with_age(healthy(), "redis-1", 700.0), policy=REBOOT)
    assert not any(isinstance(a, Reboot) for a in p.actions)
    assert any(h.what == "reboot redis-1" and "current master" in h.reason for h in p.held)


def test_no_reboot_unless_the_rest_keeps_quorum_and_an_in_sync_replica() -> None:
    view = with_age(healthy(), "redis-3", 700.0)
    high_quorum = with_sentinel_master(with_sentinel_master(view, "redis-1", quorum=3), "redis-2", quorum=3)
    p = plan(high_quorum, policy=REBOOT)
    assert not any(isinstance(a, Reboot) for a in p.actions)
    assert any(h.what == "reboot redis-3" and "3 needed to keep quorum" in h.reason for h in p.held)
    lagging = with_redis(view, "redis-2", master_link_status="down")
    p = plan(lagging, policy=REBOOT)
    assert not any(isinstance(a, Reboot) for a in p.actions)
    assert any(h.what == "reboot redis-3" and "no other in-sync replica" in h.reason for h in p.held)


def test_a_reboot_is_held_by_the_daily_budget_and_touches_only_a_droplet_of_the_cluster() -> None:
    view = with_age(healthy(), "redis-3", 700.0)
    spent = HealState(cluster="sandbox", budget_day=utc_day(view.now), actions_today=REBOOT.daily_budget)
    p = plan(view, state=spent, policy=REBOOT)
    assert p.actions == () and any("daily budget" in h.reason for h in p.held)
    untagged = (DROPLETS[0], DROPLETS[1])  # redis-3's droplet gone from the tag's list: a reprovision, no reboot
    assert [type(a) for a in plan(view, droplets=untagged, policy=REBOOT).actions] == [StartReprovision]
    no_ip = (DROPLETS[0], DROPLETS[1], Droplet(103, "redis-3", "active", None))
    p = plan(view, droplets=no_ip, policy=REBOOT)
    assert p.actions == () and any("no private IP" in h.reason for h in p.held)
