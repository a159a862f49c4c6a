"""The drill's pure core: write unavailability, lost writes, the observer's steps, result assembly and
rendering, over hand-built controller answers and write timestamps (no processes, no sockets)."""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Sequence
from typing import Any

import pytest

from console.cluster import parse_cluster, redundancy_problem
from console.drill.model import (
    ALERT_SENT,
    FAULT,
    FIRST_FINDING,
    NEW_MASTER,
    REDUNDANCY_RESTORED,
    REPLACEMENT_CREATED,
    REPLICA_IN_SYNC,
    SENTINELS_AGREE,
    STEPS,
    WRITES_ACCEPTED,
    parse_actions,
    parse_incidents,
    pick_victim,
)
from console.drill.observer import Observer, Step
from console.drill.result import FaultInfo, assemble_result, render_summary, render_timeline, split_brain, summarize
from console.drill.writer import Writer
from console.drill.writes import LostWrites, WriteSample, count_lost, write_unavailability
from tests.helpers import wait_until

M1, M2, M3, M4 = "10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379", "10.0.0.4:6379"
ADDRESSES = {"redis-1": M1, "redis-2": M2, "redis-3": M3, "redis-4": M4}


def node(name: str, role: str | None, master: str | None = None, *, up: bool = True, link: str | None = "up",
         stale: bool = False, known: int = 2) -> dict[str, Any]:
    """A node as the status contract shows it; its Sentinel knows `known` other Sentinels and replicas."""
    return {
        "name": name, "address": ADDRESSES[name], "role": role if up else None, "redis_up": up,
        "sentinel_up": not stale, "stale": stale, "link": link if role == "replica" and up else None,
        "master_of_replica": master if role == "replica" and up else None, "droplet_id": 100 + int(name[-1]),
        "lag_bytes": 0, "report_age_s": 0.2, "sentinel_master": None if stale else master,
        "sentinel_known_sentinels": None if stale else known, "sentinel_known_replicas": None if stale else known,
    }


def cluster(master: str | None, nodes: Sequence[dict[str, Any]], health: str = "healthy",
            findings: Sequence[str] = (), reachable: int | None = None, votes: dict[str, int] | None = None,
            heal: dict[str, Any] | None = None) -> dict[str, Any]:
    reachable = len(nodes) if reachable is None else reachable
    return {
        "name": "shop", "master": master, "nodes": list(nodes), "health": health,
        "sentinels": {"expected": max(3, len(nodes)), "reachable": reachable, "agree": True,
                      "votes": votes if votes is not None else ({master: reachable} if master else {})},
        "findings": [{"code": c, "severity": "critical", "subject": "cluster", "message": "...",
                      "key": f"shop/{c}/cluster"} for c in findings],
        "heal": heal or {"enabled": True, "dry_run": False, "paused": False, "paused_nodes": [],
                         "budget": {"per_day": 30, "used_today": 4, "acked": False}, "plan": "no action",
                         "held": [], "reprovision": None, "sentinel_reset": None},
    }


def healthy(master_name: str = "redis-1", names: Sequence[str] = ("redis-1", "redis-2", "redis-3")) -> dict[str, Any]:
    master = ADDRESSES[master_name]
    return cluster(master, [node(n, "master") if n == master_name else node(n, "replica", master) for n in names])


def acks(start: float, stop: float, step: float = 0.01, outcome: str = "acked", first_n: int = 0) -> list[WriteSample]:
    out = []
    t, n = start, first_n
    while t < stop - 1e-9:
        n += 1
        out.append(WriteSample(round(t, 4), n, outcome))  # type: ignore[arg-type]
        t += step
    return out


# -- write unavailability ----------------------------------------------------------------------------


def assert_unavailable(got: tuple[float, float | None], unavailable_s: float, accepted_at: float | None) -> None:
    assert got[0] == pytest.approx(unavailable_s)
    assert got[1] == accepted_at


def test_no_failed_write_means_no_unavailability_and_no_writes_accepted_step() -> None:
    samples = acks(9.0, 12.0)
    assert write_unavailability(samples, fault_at=10.0, end_at=12.0) == (0.0, None)


def test_slow_but_successful_writes_are_not_an_outage() -> None:
    samples = [WriteSample(9.99, 1, "acked"), WriteSample(10.8, 2, "acked"), WriteSample(10.81, 3, "acked")]
    assert write_unavailability(samples, fault_at=10.0, end_at=11.0) == (0.0, None)


def test_outage_is_counted_from_the_fault_not_from_the_last_write_before_it() -> None:
    samples = acks(9.0, 10.0) + acks(10.005, 11.4, outcome="failed") + [WriteSample(11.45, 999, "acked")]
    unavailable, accepted = write_unavailability(samples, fault_at=10.0, end_at=13.0)
    assert unavailable == pytest.approx(1.45)
    assert accepted == 11.45


def test_outage_starts_at_the_last_acknowledged_write_after_the_fault() -> None:
    samples = [WriteSample(10.02, 1, "acked"), WriteSample(10.03, 2, "failed"), WriteSample(10.5, 3, "acked")]
    assert_unavailable(write_unavailability(samples, fault_at=10.0, end_at=11.0), 0.48, 10.5)


def test_the_longest_of_two_outages_counts() -> None:
    samples = [
        WriteSample(10.1, 1, "failed"), WriteSample(10.3, 2, "acked"),  # 0.3 s
        WriteSample(11.0, 3, "failed"), WriteSample(11.9, 4, "failed"), WriteSample(12.0, 5, "acked"),  # 1.7 s
        WriteSample(12.1, 6, "failed"), WriteSample(12.2, 7, "acked"),  # 0.2 s
    ]
    # from the last acknowledged write before the failures, not from the first failure
    assert_unavailable(write_unavailability(samples, fault_at=10.0, end_at=13.0), 1.7, 12.0)


def test_writes_accepted_without_a_replica_do_not_end_an_outage() -> None:
    samples = [WriteSample(10.1, 1, "failed"), WriteSample(10.4, 2, "plain"), WriteSample(10.9, 3, "acked")]
    assert_unavailable(write_unavailability(samples, fault_at=10.0, end_at=11.0), 0.9, 10.9)


def test_an_outage_still_running_at_the_end_counts_up_to_the_end() -> None:
    samples = [WriteSample(10.2, 1, "acked"), WriteSample(10.3, 2, "failed")]
    assert_unavailable(write_unavailability(samples, fault_at=10.0, end_at=40.0), 29.8, None)


def test_samples_out_of_order_give_the_same_answer() -> None:
    samples = acks(10.005, 11.4, outcome="failed") + [WriteSample(11.45, 999, "acked")]
    assert write_unavailability(list(reversed(samples)), 10.0, 12.0) == write_unavailability(samples, 10.0, 12.0)


# -- lost writes -------------------------------------------------------------------------------------------


def test_lost_writes_are_acknowledged_keys_missing_or_changed_on_the_master() -> None:
    samples = [WriteSample(1.0, 1, "acked"), WriteSample(1.1, 2, "acked"), WriteSample(1.2, 3, "acked"),
               WriteSample(1.3, 4, "plain"), WriteSample(1.4, 5, "plain"), WriteSample(1.5, 6, "failed")]
    found = {1: 1, 2: None, 3: 7, 4: None, 5: 5, 6: None}
    assert count_lost(samples, found) == LostWrites(acked=2, plain=1, plain_last_at=1.3)


# -- parsing the controller's answers -----------------------------------------------------------------------


def test_parse_cluster_reads_the_status_contract() -> None:
    data = healthy()
    data["heal"]["sentinel_reset"] = {"pending": ["redis-2"], "last_node": "redis-1", "last_at": 1.0}
    data["heal"]["held"] = [{"what": "fast failover", "reason": "cooldown"}]
    snap = parse_cluster(data)
    assert snap.master == M1 and snap.health == "healthy"
    assert [n.name for n in snap.nodes] == ["redis-1", "redis-2", "redis-3"]
    assert snap.node("redis-2") is not None and snap.node("redis-2").link == "up"  # type: ignore[union-attr]
    assert snap.healing_in_flight and snap.held == (("fast failover", "cooldown"),)
    assert snap.budget_left == 26 and snap.heal_enabled is True
    assert redundancy_problem(snap, 3) == ("the controller is healing it (a reprovision or a Sentinel reset "
                                           "sequence is running)")  # a reset sequence in flight is not "restored"


def test_parse_cluster_without_healing_and_with_an_acknowledged_budget() -> None:
    data = healthy()
    data["heal"]["budget"]["acked"] = True
    assert parse_cluster(data).budget_left is None
    del data["heal"]
    snap = parse_cluster(data)
    assert snap.heal_enabled is None and not snap.healing_in_flight and redundancy_problem(snap, 3) is None


def test_parse_incidents_and_actions_skip_what_they_cannot_read() -> None:
    incidents = parse_incidents({"incidents": [{"code": "MASTER_DOWN", "severity": "critical",
                                                "first_seen_at": 10.5, "opened_at": 10.5}]})
    assert incidents[0].opened_at == 10.5
    actions = parse_actions({"actions": [{"id": 3, "kind": "Failover", "description": "d", "status": "succeeded",
                                          "started_at": 10.6, "finished_at": 10.61}, {"id": 4}]})
    assert [a.id for a in actions] == [3]


def test_fully_redundant_needs_every_replica_linked_to_the_master() -> None:
    assert redundancy_problem(parse_cluster(healthy()), 3) is None
    down = healthy()
    down["nodes"][2]["link"] = "down"
    assert redundancy_problem(parse_cluster(down), 3) == "redis-3 still syncing (link down)"
    wrong = healthy()
    wrong["nodes"][1]["master_of_replica"] = M3
    assert redundancy_problem(parse_cluster(wrong), 3) == f"redis-2 replicates {M3}, not the master {M1}"
    assert redundancy_problem(parse_cluster(healthy()), 4) == "3/4 nodes listed"  # a node short


def test_pick_victim() -> None:
    snap = parse_cluster(healthy("redis-2"))
    assert pick_victim(snap, "kill-master").name == "redis-2"
    assert pick_victim(snap, "destroy-replica").name == "redis-1"


# -- the observer ------------------------------------------------------------------------------------------


def test_kill_master_steps_in_order_and_recovery_only_after_the_picture_changed() -> None:
    before = parse_cluster(healthy())
    obs = Observer("kill-master", before, "redis-1", fault_at=100.0, fault_detail="SIGKILL", settle_s=3.0)
    # right after the fault the controller still shows the old, healthy picture: no recovery step yet
    obs.on_cluster(before, 100.1)
    assert set(obs.steps) == {FAULT}
    obs.on_cluster(parse_cluster(cluster(M1, [node("redis-1", "master", up=False), node("redis-2", "replica", M1),
                                              node("redis-3", "replica", M1)], "critical", ["MASTER_DOWN"])), 100.6)
    obs.on_incidents(parse_incidents({"incidents": [
        {"code": "MASTER_DOWN", "severity": "critical", "first_seen_at": 100.4, "opened_at": 100.4},
        {"code": "CONFIG_RISK", "severity": "info", "first_seen_at": 50.0, "opened_at": 50.0},  # before: ignored
    ]}))
    assert obs.steps[FIRST_FINDING].at == 100.4 and obs.steps[FIRST_FINDING].detail == "MASTER_DOWN"
    assert obs.steps[ALERT_SENT].at == 100.4
    # new master; the old one still down
    obs.on_cluster(parse_cluster(cluster(M2, [node("redis-1", None, up=False), node("redis-2", "master"),
                                              node("redis-3", "replica", M2)], "degraded", ["REPLICA_DOWN"])), 101.5)
    assert obs.steps[NEW_MASTER].at == 101.5 and M2 in obs.steps[NEW_MASTER].detail
    assert obs.steps[SENTINELS_AGREE].at == 101.5
    assert REPLICA_IN_SYNC not in obs.steps
    # the old master back as a replica: in sync, and fully redundant
    back = parse_cluster(healthy("redis-2"))
    obs.on_cluster(back, 108.0)
    assert obs.steps[REPLICA_IN_SYNC].at == 108.0
    assert not obs.settled(110.0)
    obs.on_cluster(back, 111.0)
    assert obs.settled(111.0)
    result = obs.finish()
    assert result.steps[REDUNDANCY_RESTORED].at == 108.0
    assert [code for code, _ in result.findings_seen] == ["MASTER_DOWN", "REPLICA_DOWN"]


def test_a_break_in_redundancy_restarts_the_settle_period() -> None:
    before = parse_cluster(healthy())
    obs = Observer("kill-master", before, "redis-1", 100.0, "SIGKILL", settle_s=3.0)
    obs.on_cluster(parse_cluster(healthy("redis-2")), 105.0)
    obs.on_cluster(parse_cluster(cluster(M2, healthy("redis-2")["nodes"], "critical", ["QUORUM_LOST"])), 106.0)
    obs.on_cluster(parse_cluster(healthy("redis-2")), 107.0)
    assert not obs.settled(109.0) and obs.settled(110.0)
    assert obs.finish().steps[REDUNDANCY_RESTORED].at == 107.0


def test_destroy_replica_steps_from_a_replacement() -> None:
    before = parse_cluster(healthy())
    obs = Observer("destroy-replica", before, "redis-2", 100.0, "destroyed", settle_s=2.0)
    silent = node("redis-2", "replica", M1, stale=True)
    silent["redis_up"] = False
    obs.on_cluster(parse_cluster(cluster(M1, [node("redis-1", "master"), silent, node("redis-3", "replica", M1)],
                                         "degraded", ["AGENT_SILENT"], reachable=2)), 101.6)
    obs.on_actions(parse_actions({"actions": [
        {"id": 1, "kind": "StartReprovision", "description": "reprovision redis-2", "status": "succeeded",
         "started_at": 101.6, "finished_at": 101.6},
        {"id": 2, "kind": "CreateReplacement", "description": "create replacement droplet redis-4",
         "status": "succeeded", "detail": "droplet 104 (redis-4) created", "started_at": 101.8, "finished_at": 101.9},
        {"id": 0, "kind": "Failover", "description": "old", "status": "succeeded", "started_at": 50.0},
    ]}))
    assert obs.steps[REPLACEMENT_CREATED].at == 101.9
    syncing = [node("redis-1", "master"), silent, node("redis-3", "replica", M1), node("redis-4", "replica", M1,
                                                                                         link="down")]
    obs.on_cluster(parse_cluster(cluster(M1, syncing, "degraded", ["AGENT_SILENT"], reachable=3)), 103.0)
    assert obs.steps[REPLACEMENT_CREATED].at == 101.9  # the action's own time stays: it is earlier
    assert REPLICA_IN_SYNC not in obs.steps
    synced = [*syncing[:3], node("redis-4", "replica", M1)]
    obs.on_cluster(parse_cluster(cluster(M1, synced, "degraded", ["AGENT_SILENT"], reachable=3)), 107.0)
    assert obs.steps[REPLICA_IN_SYNC].at == 107.0
    assert SENTINELS_AGREE not in obs.steps  # 3 of 4 expected while redis-2 is still listed
    after = parse_cluster(healthy(names=("redis-1", "redis-3", "redis-4")))
    obs.on_cluster(after, 118.0)
    obs.on_cluster(after, 120.5)
    assert obs.steps[SENTINELS_AGREE].at == 118.0 and obs.settled(120.5)
    result = obs.finish()
    assert NEW_MASTER not in result.steps
    assert [a.id for a in result.actions] == [1, 2]


# -- the result ------------------------------------------------------------------------------------------

REQUIRED = {"fault", "steps", "write_unavailable_s", "writes_acked", "writes_lost", "redundancy_restored_s"}


def _result(steps: dict[str, float], samples: list[WriteSample], lost: LostWrites | None) -> Any:
    before = parse_cluster(healthy())
    obs = Observer("kill-master", before, "redis-1", 100.0, "SIGKILL redis-server on redis-1")
    for name, at in steps.items():
        obs.steps[name] = Step(at, name)
    info = FaultInfo("kill-master", "sandbox /tmp/x", "redis-1", M1, M1, 100.0, "SIGKILL redis-server on redis-1")
    return assemble_result(info, obs.finish(), samples, end_at=120.0, lost=lost, write_errors={"ConnectionError": 3})


def test_result_has_every_step_in_order_with_null_for_those_that_did_not_happen() -> None:
    failed = acks(100.01, 101.2, outcome="failed", first_n=100)
    samples = acks(99.0, 100.0) + failed + acks(101.25, 102.0, first_n=300)
    result = _result({FIRST_FINDING: 100.6, NEW_MASTER: 101.1, REDUNDANCY_RESTORED: 109.0}, samples,
                     LostWrites(0, 0))
    assert set(result) >= REQUIRED
    assert [s["name"] for s in result["steps"]] == list(STEPS)
    at = {s["name"]: s["at_s"] for s in result["steps"]}
    assert at[FAULT] == 0.0 and at[FIRST_FINDING] == 0.6 and at[NEW_MASTER] == pytest.approx(1.1)
    assert at[WRITES_ACCEPTED] == pytest.approx(1.25)
    assert at[REPLACEMENT_CREATED] is None and at[ALERT_SENT] is None
    assert result["write_unavailable_s"] == pytest.approx(1.25)
    assert result["redundancy_restored_s"] == 9.0
    assert result["writes_acked"] == len(acks(99.0, 100.0)) + len(acks(101.25, 102.0))
    assert result["writes_failed"] == len(failed) and result["writes_lost"] == 0


def test_partition_master_reports_the_split_brain_window_and_what_the_old_master_lost() -> None:
    # the new master seen at +6.5 s; the old master's last lost write accepted at +8.0 s: 1.5 s of split brain
    lost = LostWrites(0, 40, plain_last_at=108.0)
    assert split_brain("partition-master", 106.5, lost) == (1.5, 40)
    assert split_brain("partition-master", 106.5, LostWrites(0, 3, plain_last_at=105.0)) == (-1.5, 3)
    assert split_brain("partition-master", 106.5, LostWrites(0, 0)) == (0.0, 0)
    assert split_brain("partition-master", None, lost) == (None, 40)
    assert split_brain("partition-master", 106.5, None) == (None, None)
    assert split_brain("kill-master", 106.5, lost) == (None, None)
    before = parse_cluster(healthy())
    obs = Observer("partition-master", before, "redis-1", 100.0, "cut")
    obs.steps[NEW_MASTER] = Step(106.5, "10.0.0.3:6379")
    info = FaultInfo("partition-master", "sandbox /tmp/x", "redis-1", M1, M1, 100.0, "cut")
    result = assemble_result(info, obs.finish(), acks(99.0, 101.0), end_at=120.0, lost=lost)
    assert (result["split_brain_s"], result["old_master_writes_lost"]) == (1.5, 40)
    assert "split brain: the old master accepted writes until 1.50 s after the new master was seen; 40 of them lost" \
        in render_timeline(result)
    summary = summarize([result, _result({}, acks(99.0, 101.0), LostWrites(0, 0))])
    assert summary["split_brain_s"]["values"] == [1.5, None] and summary["old_master_writes_lost"] == 40
    assert "split-brain window    median 1.50 s" in render_summary(summary)


def test_result_without_a_read_back_says_unknown_not_zero() -> None:
    result = _result({}, acks(99.0, 101.0), None)
    assert result["writes_lost"] is None and result["redundancy_restored_s"] is None
    assert result["write_unavailable_s"] == 0.0
    assert {s["name"] for s in result["steps"] if s["at_s"] is not None} == {FAULT}


def test_render_timeline_orders_by_time_and_lists_what_did_not_happen() -> None:
    samples = acks(100.01, 101.2, outcome="failed") + acks(101.25, 102.0, first_n=500)
    text = render_timeline(_result({ALERT_SENT: 100.7, FIRST_FINDING: 100.6, NEW_MASTER: 101.1}, samples,
                                   LostWrites(0, 0)))
    lines = text.splitlines()
    assert lines[0] == "drill kill-master on sandbox /tmp/x (master redis-1 10.0.0.1:6379)"
    names = [line.split()[1] for line in lines[1:10]]
    assert names[:5] == [FAULT, FIRST_FINDING, ALERT_SENT, NEW_MASTER, WRITES_ACCEPTED]
    assert "+0.60s  first_finding" in text
    assert "did not happen" in text.split("replacement_created")[1].splitlines()[0]
    assert "75 acknowledged (WAIT 1), 0 lost" in text and "unavailable 1.25 s" in text
    assert "redundancy NOT restored" in text


def test_summary_median_and_worst_over_runs() -> None:
    runs = [_result({REDUNDANCY_RESTORED: 100.0 + r, REPLACEMENT_CREATED: 101.0, REPLICA_IN_SYNC: 106.0 + i},
                    [WriteSample(100.1, 1, "failed"), WriteSample(100.0 + u, 2, "acked")], LostWrites(0, i))
            for i, (r, u) in enumerate([(10.0, 1.0), (20.0, 2.0), (12.0, 1.5)])]
    summary = summarize(runs)
    assert summary["runs"] == 3
    assert summary["write_unavailable_s"]["median"] == 1.5 and summary["write_unavailable_s"]["worst"] == 2.0
    assert summary["redundancy_restored_s"]["median"] == 12.0 and summary["redundancy_restored_s"]["worst"] == 20.0
    assert summary["boot_and_sync_s"]["median"] == 6.0 and summary["boot_and_sync_s"]["worst"] == 7.0
    assert summary["writes_lost"] == 0 and summary["writes_plain_lost"] == 3
    text = render_summary(summary)
    assert "median 1.50 s, worst 2.00 s" in text and "median 12.00 s, worst 20.00 s" in text


def test_summary_with_a_run_missing_a_step() -> None:
    runs = [_result({REDUNDANCY_RESTORED: 110.0}, [], LostWrites(0, 0)), _result({}, [], None)]
    summary = summarize(runs)
    assert summary["redundancy_restored_s"] == {"median": 10.0, "worst": 10.0, "values": [10.0, None]}
    assert summary["writes_lost"] is None
    assert "1 run(s) without it" in render_summary(summary)


# -- the writer, over a fake store ----------------------------------------------------------------------


class FakeStore:
    """Acknowledges writes, refuses them while `down`, and accepts them without a replica while `lonely`."""

    def __init__(self) -> None:
        self.down = False
        self.lonely = False
        self.data: dict[str, int] = {}

    def write(self, key: str, value: int) -> int:
        if self.down:
            raise ConnectionError("Error 111 connecting to 10.0.0.1:6379. Connection refused.")
        self.data[key] = value
        return 0 if self.lonely else 1

    def read(self, keys: Sequence[str]) -> list[int | None]:
        return [self.data.get(k) for k in keys]

    def delete(self, keys: Sequence[str]) -> None:
        for k in keys:
            self.data.pop(k, None)

    def close(self) -> None:
        pass


def test_writer_records_each_outcome_and_keeps_going_through_errors() -> None:
    store = FakeStore()
    writer = Writer(store, "drill:t:", interval_s=0.001)
    writer.start()
    try:
        wait_until(lambda: writer.acked() >= 5, 5, "acknowledged writes")
        store.down = True
        wait_until(lambda: writer.errors["ConnectionError"] >= 5, 5, "refused writes")
        store.down, store.lonely = False, True
        wait_until(lambda: any(s.outcome == "plain" for s in writer.samples()), 5, "writes without a replica")
        store.lonely = False
        acked = writer.acked()
        wait_until(lambda: writer.acked() > acked, 5, "acknowledged writes again")
    finally:
        writer.stop()
    samples = writer.samples()
    assert [s.n for s in samples] == list(range(1, len(samples) + 1))
    assert {s.outcome for s in samples} == {"acked", "plain", "failed"}
    assert all(a.at <= b.at <= time.time() for a, b in itertools.pairwise(samples))
    stored = store.read([writer.key(s.n) for s in samples])
    assert count_lost(samples, {s.n: v for s, v in zip(samples, stored, strict=True)}) == LostWrites(0, 0)


# -- one whole drill over fakes: the glue between writer, fault, observer and read-back ---------------------


class ScriptedController:
    """Healthy until the fault; then, one picture per poll: master down, a new master, the old one back."""

    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self.faulted = False
        self.polls = 0
        self.script = [
            cluster(M1, [node("redis-1", "master", up=False), node("redis-2", "replica", M1),
                         node("redis-3", "replica", M1)], "critical", ["MASTER_DOWN"]),
            cluster(M2, [node("redis-1", None, up=False), node("redis-2", "master"), node("redis-3", "replica", M2)],
                    "degraded", ["REPLICA_DOWN"]),
            healthy("redis-2"),
        ]

    def cluster(self) -> Any:
        if not self.faulted:
            return parse_cluster(healthy())
        self.polls += 1
        step = min(self.polls // 3, len(self.script) - 1)
        if step >= 1:
            self.store.down = False  # the writer's client found the new master
        return parse_cluster(self.script[step])

    def incidents(self) -> Any:
        return parse_incidents({"incidents": []})

    def actions(self) -> Any:
        return parse_actions({"actions": []})


class FakeTarget:
    label = "fake"

    def __init__(self, controller: ScriptedController) -> None:
        self.controller = controller
        self.undone: list[str] = []

    def inject(self, fault: str, victim: Any) -> str:
        self.controller.faulted = True
        self.controller.store.down = True
        return f"{fault} on {victim.name}"

    def undo(self, fault: str, victim: Any) -> str | None:
        self.undone.append(victim.name)
        return f"thawed {victim.name}"


def test_a_whole_drill_over_fakes_thaws_what_it_froze_and_reads_every_write_back() -> None:
    from console.drill.run import DrillOptions, run_drill
    from console.drill.targets import Endpoints

    store = FakeStore()
    controller = ScriptedController(store)
    target = FakeTarget(controller)
    opts = DrillOptions(fault="stop-master", timeout_s=20, healthy_timeout_s=5, poll_interval_s=0.01,
                        history_poll_s=0.05, settle_s=0.1, write_interval_s=0.002, warmup_acked=5)
    endpoints = Endpoints("http://fake", "shop", "mymaster", None, lambda: ())
    result = run_drill(controller, target, endpoints, opts, connect=lambda _: store)
    assert not result["timed_out"]
    assert target.undone == ["redis-1"]  # thawed once, when the new master showed
    at = {s["name"]: s["at_s"] for s in result["steps"]}
    assert at[NEW_MASTER] is not None and at[FIRST_FINDING] is not None and at[REDUNDANCY_RESTORED] is not None
    assert at[WRITES_ACCEPTED] is not None and result["writes_failed"] > 0
    assert result["writes_lost"] == 0 and result["writes_acked"] > 5
    assert any("thawed redis-1" in n for n in result["notes"])
    assert store.data == {}  # the drill's keys are deleted afterwards


def test_each_run_gives_the_writer_the_sentinels_in_its_order_from_the_controllers() -> None:
    """--sentinel-order all: a round of every order; the writer's list comes from the controller's order, not
    from the order the endpoints give, and each result says which list it used."""
    import random

    from console.drill.run import DrillOptions, run_drill
    from console.drill.targets import Endpoints

    s1, s2, s3 = ("10.0.0.1", 26379), ("10.0.0.2", 26379), ("10.0.0.3", 26379)
    lists: list[tuple[tuple[str, int], ...]] = []

    class Ordered(ScriptedController):
        def cluster(self) -> Any:
            snap = super().cluster()
            nodes = tuple(dataclasses.replace(n, sentinel_address=f"10.0.0.{n.name[-1]}:26379") for n in snap.nodes)
            return dataclasses.replace(snap, nodes=nodes,
                                       sentinel_order=("10.0.0.1:26379", "10.0.0.2:26379", "10.0.0.3:26379"))

        def actions(self) -> Any:
            return parse_actions({"actions": [
                {"id": 1, "kind": "Failover", "node": "redis-3", "description": "SENTINEL FAILOVER (via redis-3)",
                 "status": "succeeded", "started_at": time.time(), "finished_at": time.time()}]} if self.faulted
                else {"actions": []})

    opts = DrillOptions(fault="kill-master", timeout_s=20, healthy_timeout_s=5, poll_interval_s=0.01,
                        history_poll_s=0.05, settle_s=0.1, write_interval_s=0.002, warmup_acked=5,
                        sentinel_order="all")
    endpoints = Endpoints("http://fake", "shop", "mymaster", None, lambda: (s2, s3, s1))
    results = []
    for order in opts.planned_orders():  # a fresh scripted controller per run: each run starts healthy
        store = FakeStore()
        controller = Ordered(store)

        def connect(e: Endpoints, store: FakeStore = store) -> FakeStore:
            lists.append(e.sentinels())
            return store

        results.append(run_drill(controller, FakeTarget(controller), endpoints, opts, connect=connect, order=order,
                                 rng=random.Random(3)))
    assert [r["sentinel_order"] for r in results] == ["controller", "reversed", "shuffled"]
    assert [r["sentinels"][0] for r in results[:2]] == ["10.0.0.1:26379", "10.0.0.3:26379"]
    assert results[2]["sentinels"] not in ([a for a in results[0]["sentinels"]], results[1]["sentinels"])
    # the writer and the read-back both got the run's list
    assert lists[0] == lists[1] == (s1, s2, s3) and lists[2] == lists[3] == (s3, s2, s1)
    assert not any("does not list" in n for r in results for n in r["notes"])
    # the controller asked redis-3's Sentinel: last in the controller's order, first in the reversed one
    assert [r["failover_leader_rank"] for r in results[:2]] == [3, 1]


# -- where a drill starts, and a wrong cluster name ----------------------------------------------------------


def test_a_drill_starts_only_from_a_fully_redundant_cluster_and_says_what_is_missing() -> None:
    from console.cluster import Clock
    from console.drill.model import DrillError
    from console.drill.run import wait_fully_redundant

    syncing = healthy()
    syncing["nodes"][2]["link"] = "down"

    class Source:
        def cluster(self) -> Any:
            return parse_cluster(syncing)

    t = [0.0]
    clock = Clock(now=lambda: t[0], monotonic=lambda: t[0], sleep=lambda s: t.__setitem__(0, t[0] + s))
    said: list[str] = []
    with pytest.raises(DrillError) as caught:
        wait_fully_redundant(Source(), 10.0, 3.0, clock, said.append)  # type: ignore[arg-type]
    assert str(caught.value) == (f"the cluster was not fully redundant within 10 s (health healthy, master {M1}, "
                                 "3 nodes: redis-3 still syncing (link down)); a drill starts from a healthy cluster")
    assert said == ["waiting: redis-3 still syncing (link down)"]


def test_a_wrong_cluster_name_is_a_usage_error(capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Over real HTTP: the controller answers 404, the drill exits 2 at once, saying so."""
    # main configures structlog for the process, onto the stderr pytest captures here: not for the tests after
    monkeypatch.setattr("protocol.logs.configure_logging", lambda *_: None)
    import argparse
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from console.drill.command import main
    from console.drill.targets import Endpoints

    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.end_headers()
            self.wfile.write(b'{"detail": "no cluster nope"}')

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        target = FakeTarget(ScriptedController(FakeStore()))
        args = argparse.Namespace(cluster="nope", fault="kill-master", sandbox="/tmp/x", runs=1, between=0.0,
                                  timeout=5.0, json=True, campaign=None, seed=1, hold=12.0,
                                  sentinel_order="controller")
        code = main(args, sandbox_target=lambda _: (target, Endpoints(url, "nope", "mymaster", None, lambda: ())))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert code == 2
    assert "no cluster nope" in capsys.readouterr().err
    assert target.undone == [] and not target.controller.faulted
