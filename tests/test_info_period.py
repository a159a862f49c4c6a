"""A Sentinel reset lowers that Sentinel's INFO-PERIOD first, and the controller sets it back (issue #11).

Pure planner tests over recorded reports: lowered only with a reset, restored once that Sentinel lists the
replicas again (or the sequence has ended), owed across a controller restart (the heal state's JSON), a
failed restore tried again, a drifted Sentinel set back only with no reset in flight and a majority at the
default. Then the executor with a recording RedisOps (lowering and reset in one step, a Sentinel without
SENTINEL DEBUG reset as before), and `DirectRedisOps` against a real redis-sentinel: set, read back, never
written to sentinel.conf, gone after a restart.
"""

from __future__ import annotations

import dataclasses
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from controller.adapters.redis_ops import DirectRedisOps, OpsError
from controller.adapters.storage.db import Database
from controller.adapters.storage.heal_log import STATE_ADAPTER, HealStore
from controller.app.executor import Executor
from controller.core.checks import check
from controller.core.info_period import INFO_PERIOD_RESTORE_AFTER_S, INFO_PERIOD_RETRY_S, SentinelInfoPeriod
from controller.core.planner import (
    ActionResult,
    HealPolicy,
    HealSnapshot,
    HealState,
    Plan,
    ResetSentinel,
    ResetSequence,
    apply_result,
    observe,
    plan_heal,
)
from controller.core.policy import Policy
from controller.core.view import ClusterView
from protocol.report import SentinelPeer
from tests.factories import scenario_view, with_sentinel, with_sentinel_master
from tests.helpers import wait_until

POLICY = HealPolicy(sentinel_reset_interval_s=30, sentinel_settle_s=2)
NODES = ("redis-1", "redis-2", "redis-3")


def snap(view: ClusterView, state: HealState | None = None) -> HealSnapshot:
    s = HealSnapshot(view, check(view, Policy(), view.now), state or HealState(cluster=view.name), None)
    return dataclasses.replace(s, state=observe(s, view.now, POLICY))


def run(s: HealSnapshot, lowered_from: int | None = 10000, ok: bool = True) -> tuple[Plan, HealState]:
    """Plan, and fold every action as if carried out with `ok` (a reset: its INFO-PERIOD lowered from
    `lowered_from`)."""
    p = plan_heal(s, POLICY, s.view.now)
    state = s.state
    for a in p.actions:
        result = ActionResult(ok, info_period_lowered_from_ms=lowered_from if isinstance(a, ResetSentinel) else None)
        state = apply_result(s, state, a, result, s.view.now)
    return p, state


def at(view: ClusterView, t: float) -> ClusterView:
    """`t` s later, every report fresh."""
    view = dataclasses.replace(view, now=view.now + t)
    return dataclasses.replace(view, nodes=tuple(dataclasses.replace(n, received_at=view.now) for n in view.nodes))


def stale_entries() -> ClusterView:
    """Every Sentinel still lists a gone replica: the reset sequence is wanted."""
    view = scenario_view("healthy")
    for node in NODES:
        sv = view.node(node).report.sentinel.masters[0]  # type: ignore[union-attr]
        view = with_sentinel_master(view, node, replicas=(*sv.replicas, SentinelPeer("127.0.0.99:6379",
                                                                                     ("slave", "s_down"))))
    return view


def resets(p: Plan) -> list[ResetSentinel]:
    return [a for a in p.actions if isinstance(a, ResetSentinel)]


def restores(p: Plan) -> list[tuple[str, int]]:
    return [(a.node, a.info_period_ms) for a in p.actions if isinstance(a, SentinelInfoPeriod)]


def test_a_reset_lowers_the_info_period_of_the_sentinel_it_resets_and_owes_it_back() -> None:
    p, state = run(snap(stale_entries()))
    (reset,) = resets(p)
    assert (reset.node, reset.info_period_ms) == ("redis-1", 1000)
    (owed,) = state.info_period_owed
    assert (owed.node, owed.restore_ms, owed.for_reset, owed.since) == ("redis-1", 10000, True, stale_entries().now)
    # no reset, no lowering: a healthy cluster plans nothing of the kind
    assert resets(plan_heal(snap(scenario_view("healthy")), POLICY, stale_entries().now)) == []
    # off in the policy: the reset goes as before
    off = plan_heal(snap(stale_entries()), dataclasses.replace(POLICY, reset_info_period_ms=0), stale_entries().now)
    assert [r.info_period_ms for r in resets(off)] == [None]
    # a Sentinel without SENTINEL DEBUG (nothing lowered): reset, nothing owed
    _, state = run(snap(stale_entries()), lowered_from=None)
    assert state.reset is not None and state.info_period_owed == ()


def test_restored_once_that_sentinel_lists_the_replicas_again_not_before() -> None:
    _, state = run(snap(stale_entries()))
    # redis-1 reset: its next reports show no replicas yet (its next INFO of the master)
    forgot = with_sentinel_master(stale_entries(), "redis-1", replicas=())
    p, state = run(snap(at(forgot, 1.0), state))
    assert restores(p) == []
    assert any("set back once it lists the replicas again" in h.reason for h in p.held)
    # a report received before the settle time still shows the old tables: no restore on it
    p, state = run(snap(at(scenario_view("healthy"), 1.0), state))
    assert restores(p) == []
    # it lists both replicas in a report after the settle time: set back to what it ran with, on it only
    p, state = run(snap(at(scenario_view("healthy"), 2.5), state))
    assert restores(p) == [("redis-1", 10000)]
    assert "lists the replicas again" in next(a for a in p.actions if isinstance(a, SentinelInfoPeriod)).reason
    # and the sequence goes on at once: the next Sentinel is reset, lowered in turn
    assert [(r.node, r.info_period_ms) for r in resets(p)] == [("redis-2", 1000)]
    # done: nothing more planned for redis-1, and its entry goes once a report after the restore is in
    p, state = run(snap(at(scenario_view("healthy"), 3.0), state))
    assert restores(p) == []
    assert {o.node: o.restored_at is not None for o in state.info_period_owed} == {"redis-1": True, "redis-2": False}
    view = with_sentinel(at(scenario_view("healthy"), 6.0), "redis-1", info_period_ms=10000)
    assert [o.node for o in snap(view, state).state.info_period_owed] == ["redis-2"]


def test_restored_when_the_sequence_ends_or_after_a_bound_whatever_it_lists() -> None:
    forgot = with_sentinel_master(scenario_view("healthy"), "redis-2", replicas=())
    _, state = run(snap(stale_entries()))
    # the sequence is gone (ended, or the heal state reset): set back although it lists no replicas
    ended = dataclasses.replace(state, reset=None)
    p, _ = run(snap(at(forgot, 1.0), dataclasses.replace(ended, info_period_owed=(
        dataclasses.replace(state.info_period_owed[0], node="redis-2"),))))
    assert restores(p) == [("redis-2", 10000)]
    assert "sequence it was lowered for has ended" in p.actions[0].reason
    # still in flight, never listing the replicas: set back INFO_PERIOD_RESTORE_AFTER_S after its reset
    in_flight = dataclasses.replace(state, reset=ResetSequence(pending=("redis-3",), last_at=forgot.now,
                                                               done=("redis-1", "redis-2")),
                                    info_period_owed=(dataclasses.replace(state.info_period_owed[0], node="redis-2"),))
    p, _ = run(snap(at(forgot, INFO_PERIOD_RESTORE_AFTER_S - 1), in_flight))
    assert restores(p) == []
    p, _ = run(snap(at(forgot, INFO_PERIOD_RESTORE_AFTER_S), in_flight))
    assert restores(p) == [("redis-2", 10000)]


def test_a_failed_restore_is_retried_later_not_every_cycle() -> None:
    _, state = run(snap(stale_entries()))
    p, state = run(snap(at(scenario_view("healthy"), 2.5), state), ok=False)
    assert restores(p) == [("redis-1", 10000)]
    owed = next(o for o in state.info_period_owed if o.node == "redis-1")
    assert owed.last_try_at == stale_entries().now + 2.5 and owed.restored_at is None
    p, state = run(snap(at(scenario_view("healthy"), 3.0), state))
    assert restores(p) == []
    assert any("last restore failed" in h.reason for h in p.held)
    p, state = run(snap(at(scenario_view("healthy"), 2.5 + INFO_PERIOD_RETRY_S), state))
    assert ("redis-1", 10000) in restores(p)
    assert next(o for o in state.info_period_owed if o.node == "redis-1").restored_at is not None


def test_what_is_owed_survives_a_controller_restart_and_old_heal_states_still_load() -> None:
    _, state = run(snap(stale_entries()))
    reloaded = STATE_ADAPTER.validate_json(STATE_ADAPTER.dump_json(state))
    assert reloaded == state and reloaded.info_period_owed
    p, _ = run(snap(at(scenario_view("healthy"), 2.5), reloaded))
    assert restores(p) == [("redis-1", 10000)]
    old = b'{"cluster": "sandbox", "reset": {"pending": ["redis-2"], "last_at": 1.0, "done": ["redis-1"]}}'
    assert STATE_ADAPTER.validate_json(old).info_period_owed == ()


def test_a_second_reset_before_the_restore_keeps_the_value_it_ran_with_before() -> None:
    _, state = run(snap(stale_entries()))
    # a new sequence resets redis-1 again while its 1000 ms is still owed: the executor finds 1000, lowers
    # nothing; the restore still goes back to 10000, counted from the new reset
    again = dataclasses.replace(state, reset=None)
    _, state = run(snap(at(stale_entries(), 1.0), again), lowered_from=None)
    (owed,) = state.info_period_owed
    assert (owed.restore_ms, owed.since) == (10000, stale_entries().now + 1.0)


def test_a_drifted_info_period_is_set_back_only_with_no_reset_in_flight_and_a_majority_at_the_default() -> None:
    view = scenario_view("healthy")
    for node in NODES:
        view = with_sentinel(view, node, info_period_ms=10000)
    lost = with_sentinel(view, "redis-3", info_period_ms=1000)  # a restore lost to a controller crash
    p, _ = run(snap(lost))
    assert restores(p) == [("redis-3", 10000)]
    assert "redis-1, redis-2 run with the default" in p.actions[0].reason
    # not while a reset sequence is in flight: the lowering may be its own
    seq = HealState(cluster="sandbox", reset=ResetSequence(pending=(), last_at=view.now, done=("redis-3",)))
    assert restores(plan_heal(snap(lost, seq), POLICY, view.now)) == []
    # not against the cluster: two of three run with another value
    odd = with_sentinel(with_sentinel(view, "redis-1", info_period_ms=5000), "redis-2", info_period_ms=5000)
    p = plan_heal(snap(odd), POLICY, view.now)
    assert restores(p) == []
    assert any("only 1 of 3 Sentinels run with the default 10000 ms" in h.reason for h in p.held)
    # Sentinels that do not report it (older agents, Redis < 7.0): nothing
    assert restores(plan_heal(snap(scenario_view("healthy")), POLICY, view.now)) == []


# -- the executor: the lowering and the reset are one step, audited --------------------------------------------


class RecordingOps:
    """A RedisOps that records what it is asked; `debug` False: a Sentinel without SENTINEL DEBUG."""

    def __init__(self, debug: bool = True, reset_ok: bool = True) -> None:
        self.debug = debug
        self.reset_ok = reset_ok
        self.calls: list[tuple[str, ...]] = []

    def failover(self, sentinel: str, master_name: str) -> str:
        raise AssertionError("not planned")

    def reset_sentinel(self, sentinel: str, master_name: str) -> str:
        self.calls.append(("reset", sentinel))
        if not self.reset_ok:
            raise OpsError(f"SENTINEL RESET on {sentinel} failed: TimeoutError")
        return "1"

    def set_down_after(self, sentinel: str, master_name: str, down_after_ms: int) -> str:
        raise AssertionError("not planned")

    def info_period(self, sentinel: str) -> int:
        if not self.debug:
            raise OpsError(f"SENTINEL DEBUG on {sentinel} failed: ResponseError: unknown subcommand 'DEBUG'")
        return 10000

    def set_info_period(self, sentinel: str, info_period_ms: int) -> str:
        self.calls.append(("info_period", sentinel, str(info_period_ms)))
        return "OK"

    def replicaof(self, node: str, master: str) -> str:
        raise AssertionError("not planned")


@pytest.mark.parametrize(("debug", "reset_ok"), [(True, True), (False, True), (True, False)])
def test_the_executor_lowers_then_resets_in_one_step_and_audits_it(tmp_path: Path, debug: bool,
                                                                   reset_ok: bool) -> None:
    s = snap(stale_entries())
    p = plan_heal(s, POLICY, s.view.now)
    ops = RecordingOps(debug, reset_ok)
    db = Database(str(tmp_path / "state.db"))
    try:
        store = HealStore(db)
        directives: Any = type("D", (), {"on_ack": lambda self, handler: None})()
        nothing: Any = None
        state = Executor(store, directives, nothing, nothing, lambda _: ops, None, nothing,
                         lambda: s.view.now).execute(s, p, s.state)
        sentinel = s.view.node("redis-1").report.identity.sentinel_address  # type: ignore[union-attr]
        (row,) = [r for r in store.history("sandbox") if r["kind"] == "ResetSentinel"]
        if debug:
            assert ops.calls == [("info_period", sentinel, "1000"), ("reset", sentinel)]
            assert "INFO-PERIOD 10000 -> 1000 ms first" in row["detail"]
            # lowered: owed back, whether the reset itself went through or not, and saved for a restart
            assert [(o.node, o.restore_ms) for o in state.info_period_owed] == [("redis-1", 10000)]
            assert store.load("sandbox").info_period_owed == state.info_period_owed
        else:
            assert ops.calls == [("reset", sentinel)]  # reset as before
            assert "INFO-PERIOD left as it was" in row["detail"] and "unknown subcommand" in row["detail"]
            assert state.info_period_owed == ()
        assert row["status"] == ("succeeded" if reset_ok else "failed")
        # the restore is its own audited action
        later = snap(at(scenario_view("healthy"), 2.5), state)
        back = Plan(tuple(a for a in plan_heal(later, POLICY, later.view.now).actions
                          if isinstance(a, SentinelInfoPeriod)), (), False, "")
        assert len(back.actions) == (1 if debug else 0)
        state = Executor(store, directives, nothing, nothing, lambda _: ops, None, nothing,
                         lambda: later.view.now).execute(later, back, state)
        if debug:
            assert ops.calls[-1] == ("info_period", sentinel, "10000")
            rows = [r for r in store.history("sandbox") if r["kind"] == "SentinelInfoPeriod"]
            assert [(r["node"], r["status"]) for r in rows] == [("redis-1", "succeeded")]
            assert state.info_period_owed[0].restored_at is not None
    finally:
        db.close()


# -- DirectRedisOps against a real redis-sentinel ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[tuple[str, Path, list[subprocess.Popen[bytes]]]]:
    """A real redis-sentinel on 127.0.0.1 (it monitors a master that is not there: SENTINEL DEBUG does not
    care), its config file, and its processes (a restart appends one); all stopped at the end."""
    binary = shutil.which("redis-sentinel")
    if binary is None:
        pytest.skip("redis-sentinel not installed (scripts/test installs it)")
    port = _free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"bind 127.0.0.1\nport {port}\ndir {tmp_path}\nlogfile {tmp_path}/sentinel.log\n"
                    f"sentinel monitor mymaster 127.0.0.1 {_free_port()} 1\n")
    procs = [subprocess.Popen([binary, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        wait_until(lambda: _answers(port), 10, "the Sentinel answering")
        yield f"127.0.0.1:{port}", conf, procs
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)


def _answers(port: int) -> bool:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def test_sentinel_debug_info_period_is_set_read_back_runtime_only(
        sentinel: tuple[str, Path, list[subprocess.Popen[bytes]]]) -> None:
    address, conf, procs = sentinel
    ops = DirectRedisOps(None)
    assert ops.info_period(address) == 10000
    ops.set_info_period(address, 1000)
    assert ops.info_period(address) == 1000
    # Sentinel rewrites its file on every change it persists (here SENTINEL SET, a reset): never INFO-PERIOD
    ops.set_down_after(address, "mymaster", 4000)
    ops.reset_sentinel(address, "mymaster")
    assert "4000" in conf.read_text() and "period" not in conf.read_text().lower()
    assert ops.info_period(address) == 1000
    with pytest.raises(OpsError, match="out of range"):
        ops.set_info_period(address, 0)
    # a restarted Sentinel runs the default again
    procs[0].kill()
    procs[0].wait(10)
    port = int(address.rsplit(":", 1)[1])
    wait_until(lambda: not _answers(port), 10, "the Sentinel gone")
    procs.append(subprocess.Popen([shutil.which("redis-sentinel") or "redis-sentinel", str(conf)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    wait_until(lambda: _answers(port), 10, "the Sentinel back")
    assert ops.info_period(address) == 10000
