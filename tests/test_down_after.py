"""A fast failover lowers its leading Sentinel's down-after, and the controller sets it back (issue #11, item 4).

Pure planner tests over recorded reports: lowered only with a fast failover and only on the Sentinel asked,
restored once that Sentinel names the new master (or after failover-timeout), owed across a controller
restart (the heal state's JSON), and a drifted Sentinel set back only while a majority runs the configured
value. No patching.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from controller.adapters.redis_ops import OpsError
from controller.adapters.storage.db import Database
from controller.adapters.storage.heal_log import STATE_ADAPTER, HealStore
from controller.app.executor import Executor
from controller.core.checks import check
from controller.core.down_after import DOWN_AFTER_RETRY_S, SentinelDownAfter
from controller.core.planner import (
    ActionResult,
    Failover,
    HealPolicy,
    HealSnapshot,
    HealState,
    Plan,
    apply_result,
    observe,
    plan_heal,
)
from controller.core.policy import Policy
from controller.core.view import ClusterView
from tests.factories import kill_redis, scenario_view, with_redis, with_report, with_sentinel_master

POLICY = HealPolicy()
CONFIGURED_MS = 5000
OLD_MASTER = "127.0.0.3:6379"  # redis-1
NEW_MASTER = "127.0.0.4:6379"  # redis-2
NODES = ("redis-1", "redis-2", "redis-3")


def snap(view: ClusterView, state: HealState | None = None, configured: int | None = CONFIGURED_MS) -> HealSnapshot:
    s = HealSnapshot(view, check(view, Policy(), view.now), state or HealState(cluster=view.name), None,
                     down_after_ms=configured, failover_timeout_ms=60000)
    return dataclasses.replace(s, state=observe(s, view.now))


def run(s: HealSnapshot, policy: HealPolicy = POLICY, ok: bool = True) -> tuple[Plan, HealState]:
    """Plan, and fold every action as if carried out with `ok`."""
    p = plan_heal(s, policy, s.view.now)
    state = s.state
    for a in p.actions:
        state = apply_result(s, state, a, ActionResult(ok), s.view.now)
    return p, state


def crashed(at: float = 0.0) -> ClusterView:
    view = kill_redis(scenario_view("healthy"), "redis-1")
    return dataclasses.replace(view, now=view.now + at)


def after(view: ClusterView, at: float, leader_ms: int = 300, leader_done: bool = True) -> ClusterView:
    """`at` s after the crash: the Sentinels name redis-2; the leader (redis-3) too once `leader_done`, and it
    reports `leader_ms` as its down-after. Every report is fresh."""
    view = with_redis(dataclasses.replace(view, now=view.now + at), "redis-2", role="master")
    for name in NODES:
        done = name != "redis-3" or leader_done
        view = with_sentinel_master(view, name, master_address=NEW_MASTER if done else OLD_MASTER,
                                    failover_in_progress=not done,
                                    down_after_ms=leader_ms if name == "redis-3" else CONFIGURED_MS)
        view = dataclasses.replace(view, nodes=tuple(dataclasses.replace(n, received_at=view.now)
                                                     if n.name == name else n for n in view.nodes))
    return view


def down_afters(p: Plan) -> list[SentinelDownAfter]:
    return [a for a in p.actions if isinstance(a, SentinelDownAfter)]


def test_a_fast_failover_lowers_the_down_after_of_the_sentinel_it_asks_and_of_no_other() -> None:
    p, state = run(snap(crashed()))
    assert [type(a) for a in p.actions] == [Failover, SentinelDownAfter]
    failover, lowering = p.actions
    assert isinstance(failover, Failover) and isinstance(lowering, SentinelDownAfter)
    assert lowering.node == failover.via_node == "redis-3"
    assert (lowering.down_after_ms, lowering.failover_of) == (300, OLD_MASTER)
    (owed,) = state.down_after_owed
    assert (owed.node, owed.restore_ms, owed.failover_of) == ("redis-3", CONFIGURED_MS, OLD_MASTER)
    assert owed.restore_by == crashed().now + 60
    # a lowering is no action against the budget or the cooldowns
    assert state.actions_today == 1
    # the failover asked again before the reports show it in progress: lowered once only
    again = plan_heal(snap(crashed(0.25), state), POLICY, crashed(0.25).now)
    assert down_afters(again) == []


def test_no_lowering_without_a_fast_failover_the_configured_value_or_the_policy() -> None:
    hung = with_redis(scenario_view("healthy"), "redis-1", reachable=False, error="TimeoutError: Timeout reading")
    assert down_afters(plan_heal(snap(hung), POLICY, hung.now)) == []
    assert down_afters(plan_heal(snap(scenario_view("healthy")), POLICY, crashed().now)) == []
    off = plan_heal(snap(crashed()), HealPolicy(failover_down_after_ms=0), crashed().now)
    assert [type(a) for a in off.actions] == [Failover]
    unknown = plan_heal(snap(crashed(), configured=None), POLICY, crashed().now)
    assert [type(a) for a in unknown.actions] == [Failover]
    assert any("not known" in h.reason for h in unknown.held)
    # the Sentinel asked runs with another value than the configured one: left alone, and said so
    odd = with_sentinel_master(crashed(), "redis-3", down_after_ms=10000)
    p = plan_heal(snap(odd), POLICY, odd.now)
    assert Failover in [type(a) for a in p.actions]
    assert all(a.failover_of is None for a in down_afters(p))  # no lowering (the drift is set back: the others')
    assert any("10000 ms, not the configured 5000 ms" in h.reason for h in p.held)


def test_restored_once_the_leader_names_the_new_master_not_before() -> None:
    _, state = run(snap(crashed()))
    # the others have switched, the leader is still in its failover: nothing yet
    p, state = run(snap(after(crashed(), 0.5, leader_done=False), state))
    assert down_afters(p) == []
    assert any("restored when its failover has ended" in h.reason for h in p.held)
    # the leader names redis-2 too: set back to the configured value, on the leader only
    p, state = run(snap(after(crashed(), 1.5), state))
    assert [(a.node, a.down_after_ms, a.failover_of) for a in down_afters(p)] == [("redis-3", CONFIGURED_MS, None)]
    assert "failover has ended" in down_afters(p)[0].reason
    # its next report still shows 300 (taken before the restore): no second restore for that "drift"
    p, state = run(snap(after(crashed(), 1.8), state))
    assert down_afters(p) == [] and state.down_after_owed
    # a report after the restore shows the configured value: nothing owed any more
    p, state = run(snap(after(crashed(), 3.0, leader_ms=CONFIGURED_MS), state))
    assert down_afters(p) == [] and state.down_after_owed == ()


def test_restored_after_failover_timeout_when_the_failover_never_ends() -> None:
    _, state = run(snap(crashed()))
    stuck = with_sentinel_master(crashed(59), "redis-3", down_after_ms=300)
    p, state = run(snap(stuck, state))
    assert down_afters(p) == []
    p, state = run(snap(with_sentinel_master(crashed(60), "redis-3", down_after_ms=300), state))
    assert [(a.node, a.down_after_ms) for a in down_afters(p)] == [("redis-3", CONFIGURED_MS)]
    assert "failover-timeout" in down_afters(p)[0].reason


def test_a_failed_restore_is_retried_later_not_every_cycle() -> None:
    _, state = run(snap(crashed()))
    p, state = run(snap(after(crashed(), 1.5), state), ok=False)
    assert len(down_afters(p)) == 1 and state.down_after_owed[0].last_try_at == crashed().now + 1.5
    p, state = run(snap(after(crashed(), 2.0), state))
    assert down_afters(p) == []
    p, state = run(snap(after(crashed(), 1.5 + DOWN_AFTER_RETRY_S), state))
    assert [(a.node, a.down_after_ms) for a in down_afters(p)] == [("redis-3", CONFIGURED_MS)]


def test_what_is_owed_survives_a_controller_restart() -> None:
    _, state = run(snap(crashed()))
    reloaded = STATE_ADAPTER.validate_json(STATE_ADAPTER.dump_json(state))
    assert reloaded == state
    p, _ = run(snap(after(crashed(), 1.5), reloaded))
    assert [(a.node, a.down_after_ms) for a in down_afters(p)] == [("redis-3", CONFIGURED_MS)]
    # a heal state written before this field existed still reads (the schema only grew, with a default)
    old = b'{"cluster": "sandbox", "paused": true}'
    assert STATE_ADAPTER.validate_json(old) == HealState(cluster="sandbox", paused=True)


def test_a_drifted_sentinel_is_set_back_when_the_majority_runs_the_configured_value() -> None:
    # a controller that died between its SENTINEL SET and saving its state: nothing owed, the leader at 300
    p, _ = run(snap(after(crashed(), 5.0)))
    assert [(a.node, a.down_after_ms) for a in down_afters(p)] == [("redis-3", CONFIGURED_MS)]
    assert "what redis-1, redis-2 run with" in down_afters(p)[0].reason
    # not while a failover is in flight
    p, _ = run(snap(after(crashed(), 5.0, leader_done=False)))
    assert down_afters(p) == []
    # not against the cluster: two of three Sentinels run with another value than the file's
    view = with_sentinel_master(scenario_view("healthy"), "redis-1", down_after_ms=10000)
    view = with_sentinel_master(view, "redis-2", down_after_ms=10000)
    p = plan_heal(snap(view), POLICY, view.now)
    assert down_afters(p) == []
    assert any("only 1 of 3 Sentinels run with the configured 5000 ms" in h.reason for h in p.held)
    # a paused cluster: nothing
    paused = plan_heal(snap(after(crashed(), 5.0), HealState(cluster="sandbox", paused=True)), POLICY,
                       crashed().now + 5)
    assert paused.actions == ()


def test_nothing_is_owed_for_a_node_the_cluster_no_longer_has() -> None:
    _, state = run(snap(crashed()))
    renamed = with_report(after(crashed(), 1.5), "redis-3", identity=dataclasses.replace(
        after(crashed(), 1.5).node("redis-3").report.identity, node="redis-9"))  # type: ignore[union-attr]
    assert snap(renamed, state).state.down_after_owed == ()


# -- the executor: a lowering goes with its failover, and every change is in the actions log ------------------


class RecordingOps:
    """A RedisOps that records what it is asked; `failover_reply` None: the failover is refused."""

    def __init__(self, failover_reply: str | None) -> None:
        self.failover_reply = failover_reply
        self.calls: list[tuple[str, ...]] = []

    def failover(self, sentinel: str, master_name: str) -> str:
        self.calls.append(("failover", sentinel))
        if self.failover_reply is None:
            raise OpsError(f"SENTINEL FAILOVER on {sentinel} failed: ResponseError: INPROG")
        return self.failover_reply

    def reset_sentinel(self, sentinel: str, master_name: str) -> str:
        raise AssertionError("not planned")

    def set_down_after(self, sentinel: str, master_name: str, down_after_ms: int) -> str:
        self.calls.append(("set_down_after", sentinel, master_name, str(down_after_ms)))
        return "OK"

    def replicaof(self, node: str, master: str) -> str:
        raise AssertionError("not planned")


@pytest.mark.parametrize("accepted", [True, False])
def test_the_executor_lowers_only_after_an_accepted_failover_and_audits_it(tmp_path: Path, accepted: bool) -> None:
    s = snap(crashed())
    p = plan_heal(s, POLICY, s.view.now)
    ops = RecordingOps("OK" if accepted else None)
    db = Database(str(tmp_path / "state.db"))
    try:
        store = HealStore(db)
        directives: Any = type("D", (), {"on_ack": lambda self, handler: None})()
        nothing: Any = None
        executor = Executor(store, directives, nothing, nothing, lambda _: ops, None, nothing, lambda: s.view.now)
        state = executor.execute(s, p, s.state)
        leader = s.view.node("redis-3").report.identity.sentinel_address  # type: ignore[union-attr]
        rows = {r["kind"]: r for r in store.history("sandbox")}
        assert rows["SentinelDownAfter"]["node"] == "redis-3"
        if accepted:
            assert ops.calls == [("failover", leader), ("set_down_after", leader, "mymaster", "300")]
            assert rows["SentinelDownAfter"]["status"] == "succeeded"
            assert [o.node for o in state.down_after_owed] == ["redis-3"]
            assert store.load("sandbox").down_after_owed == state.down_after_owed  # saved: a restart restores
        else:
            assert ops.calls == [("failover", leader)]  # the Sentinel is left as it was
            assert rows["SentinelDownAfter"]["status"] == "failed"
            assert "not accepted" in rows["SentinelDownAfter"]["detail"]
            assert state.down_after_owed == ()
    finally:
        db.close()
