"""The fault matrix and the seeded campaign (issue 11): the pure parts (the draw, the network cuts, when a
fault is undone, the invariants' judge), then the campaign end to end on a sandbox in a network namespace
of its own (root, ip and nft; scripts/test installs them), every fault of the matrix once, with a fixed seed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from console.drill.campaign import draw_faults
from console.drill.invariants import FaultRecord, NodeSeen, ProbeRound, harmful_actions, judge
from console.drill.model import CAMPAIGN_FAULTS, IncidentSnap, undo_due
from console.drill.result import DrillResult
from sandbox import netns
from tests.conftest import REDWARDEN, need_redis, redwarden

# -- pure ---------------------------------------------------------------------------------------------------


def test_the_draw_covers_the_matrix_before_it_repeats_and_a_seed_repeats_itself() -> None:
    first = draw_faults(len(CAMPAIGN_FAULTS), 7, CAMPAIGN_FAULTS)
    assert sorted(first) == sorted(CAMPAIGN_FAULTS)
    assert draw_faults(30, 7, CAMPAIGN_FAULTS) == draw_faults(30, 7, CAMPAIGN_FAULTS)
    assert draw_faults(30, 7, CAMPAIGN_FAULTS) != draw_faults(30, 8, CAMPAIGN_FAULTS)
    assert draw_faults(3, 7, CAMPAIGN_FAULTS) == first[:3]


def test_a_cut_drops_both_directions_by_group_and_address_and_touches_no_one_else() -> None:
    a = netns.Party("redis-1", (4100000001,), ("127.0.0.3",))
    b = netns.Party("others", (4100000002, 4100000003), ("127.0.0.4", "127.0.0.5"))
    rules = netns.cut_rules(a, b)
    assert "meta skgid 4100000001 ip daddr 127.0.0.4 drop" in rules
    assert "meta skgid 4100000003 ip daddr 127.0.0.3 drop" in rules
    assert "meta skgid 4100000001 ct mark 4100000002 drop" in rules  # replies on connections b opened
    assert "meta skgid 4100000002 ct mark 4100000001 drop" in rules
    assert not [r for r in rules if "skgid 0 " in r or "127.0.0.1 " in r]  # clients and the drill untouched
    assert len(rules) == 2 + 2 + 2 + 2  # addresses and marks, both ways (1 x 2 groups each way)


def test_network_rules_refuse_to_run_outside_a_sandbox_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(netns.ENV, raising=False)
    with pytest.raises(netns.NetnsError, match="only inside a sandbox's own network namespace"):
        netns.apply_cut(["meta skgid 1 drop"])
    with pytest.raises(netns.NetnsError):
        netns.clear_cuts()


def test_a_partitioned_master_stays_apart_until_a_new_master_is_seen() -> None:
    assert not undo_due("partition-master", 0.0, 12.0, None, 12.0)
    assert undo_due("partition-master", 0.0, 12.0, 7.0, 12.0)
    assert undo_due("partition-master", 0.0, 36.0, None, 12.0)  # but not for ever
    assert not undo_due("kill-agent", 0.0, 11.9, None, 12.0)
    assert undo_due("kill-agent", 0.0, 12.0, None, 12.0)
    assert not undo_due("kill-master", 0.0, 99.0, 1.0, 12.0)  # not a timed fault: nothing to undo


def _result(fault: str, actions: list[dict[str, Any]] | None = None, lost: int | None = 0,
            plain_lost_last_s: float | None = None, new_master_s: float | None = None) -> DrillResult:
    return {
        "fault": fault, "target": "t", "node": "redis-2", "old_master": "127.0.0.3:6379", "fault_at": 1000.0,
        "steps": [{"name": "new_master", "at_s": new_master_s, "detail": None}],
        "write_unavailable_s": 0.0, "writes_acked": 100, "writes_lost": lost, "writes_plain_acked": 0,
        "writes_plain_lost": 1 if plain_lost_last_s is not None else 0,
        "writes_plain_lost_last_s": plain_lost_last_s, "writes_failed": 0, "write_errors": {},
        "redundancy_restored_s": 20.0, "findings_seen": [], "actions": actions or [], "held": [],
        "timed_out": False, "notes": [],
    }


ADDRESSES = {"redis-1": "127.0.0.3:6379", "redis-2": "127.0.0.4:6379", "redis-3": "127.0.0.5:6379"}


def _rounds(up: dict[str, bool], start: float = 995.0, end: float = 1030.0,
            masters: tuple[str, ...] = ("127.0.0.3:6379",)) -> list[ProbeRound]:
    out = []
    t = start
    while t <= end:
        out.append(ProbeRound(t, {a: NodeSeen(up.get(a, True), "master" if a in masters else "slave",
                                              1 if a in masters else 0) for a in ADDRESSES.values()}))
        t += 0.5
    return out


def test_a_power_cycle_of_a_node_whose_redis_answered_is_harmful_and_of_a_dead_one_is_not() -> None:
    cycle = {"at_s": 10.0, "kind": "PowerCycle", "node": "redis-2", "description": "power-cycle", "status": "x"}
    healthy = FaultRecord(_result("isolate-controller", [cycle]), ADDRESSES, _rounds({}), [], None)
    dead = FaultRecord(_result("isolate-controller", [cycle]), ADDRESSES, _rounds({"127.0.0.4:6379": False}), [],
                       None)
    assert [h["kind"] for h in harmful_actions(0, healthy)] == ["PowerCycle"]
    assert harmful_actions(0, dead) == []
    # destroyed at the fault, its processes gone half a second later: a reprovision 2.5 s after is no harm
    gone = [r if r.at <= 1000.5 else ProbeRound(r.at, {**r.nodes, "127.0.0.4:6379": NodeSeen(False)})
            for r in _rounds({})]
    replace = {"at_s": 2.5, "kind": "StartReprovision", "node": "redis-2", "description": "r", "status": "x"}
    assert harmful_actions(0, FaultRecord(_result("destroy-replica", [replace]), ADDRESSES, gone, [], None)) == []
    failover = {"at_s": 3.0, "kind": "Failover", "node": "redis-1", "description": "failover", "status": "x"}
    assert harmful_actions(0, FaultRecord(_result("kill-agent", [failover]), ADDRESSES, _rounds({}), [], None))
    assert not harmful_actions(0, FaultRecord(_result("kill-master", [failover]), ADDRESSES, _rounds({}), [], None))


def test_the_judge_finds_two_masters_a_duplicate_droplet_a_reopened_incident_and_an_unbounded_loss() -> None:
    two = _rounds({}, masters=("127.0.0.3:6379", "127.0.0.4:6379"))
    inc = [IncidentSnap("MASTER_DOWN", "critical", 1001.0, 1002.0, "MASTER_DOWN:c", 1010.0),
           IncidentSnap("MASTER_DOWN", "critical", 1011.0, 1012.0, "MASTER_DOWN:c", None)]
    records = [FaultRecord(_result("partition-master", plain_lost_last_s=25.0, new_master_s=6.0), ADDRESSES, two,
                           inc, ["redis-1", "redis-2", "redis-2"])]
    verdict = {v["name"]: v for v in judge(records, 3, True, None, max_lag_s=10.0)}
    assert not verdict["one_master_accepting_acknowledged_writes"]["held"]
    assert not verdict["no_duplicate_droplet"]["held"]
    assert "redis-2 twice" in verdict["no_duplicate_droplet"]["detail"]
    assert not verdict["each_incident_opened_once_and_resolved"]["held"]
    assert not verdict["partition_loss_bounded_by_min_replicas_max_lag"]["held"]
    assert verdict["no_acknowledged_write_lost"]["held"]
    clean = [FaultRecord(_result("partition-master", plain_lost_last_s=9.0, new_master_s=6.0), ADDRESSES, _rounds({}),
                         inc[:1], ["redis-1", "redis-2", "redis-3"])]
    assert all(v["held"] for v in judge(clean, 3, True, None, max_lag_s=10.0))
    moved = [FaultRecord(_result("partition-replica", new_master_s=6.0), ADDRESSES, _rounds({}), [], None)]
    assert not {v["name"]: v for v in judge(moved, 3, True, None, 10.0)}["master_changed_only_for_master_faults"][
        "held"]


# -- end to end --------------------------------------------------------------------------------------------


def _need_netns() -> None:
    need_redis()
    if os.geteuid() != 0:
        pytest.skip("the network faults need root (a network namespace and nftables rules in it)")
    missing = [t for t in ("ip", "nft") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (scripts/test installs iproute2 and nftables)")


@pytest.fixture(scope="module")
def netns_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Any:
    _need_netns()
    root = tmp_path_factory.mktemp("netns-sandbox")
    try:
        # one pass through the matrix takes about 25 healing actions, near a day's default budget (30)
        proc = redwarden("sandbox", "up", "--netns", "--dir", str(root), "--daily-budget", "500", check=False,
                         timeout=240)
        assert proc.returncode == 0, f"sandbox up --netns failed: {proc.stderr[-3000:]}"
        yield root
    finally:
        redwarden("sandbox", "down", "--dir", str(root), check=False)
        name = netns.name_for(root)
        assert not Path("/run/netns", name).exists(), f"the namespace {name} was left behind"
        mounts = [line for line in Path("/proc/self/mounts").read_text().splitlines() if str(root) in line]
        assert not mounts, f"mounts left behind: {mounts}"


def test_the_sandbox_runs_in_its_own_namespace_with_each_droplet_in_its_own_group(netns_sandbox: Path) -> None:
    st = json.loads(redwarden("sandbox", "status", "--dir", str(netns_sandbox), "--json").stdout)
    assert st["netns"] == netns.name_for(netns_sandbox)
    host_ns = os.stat("/proc/self/ns/net").st_ino
    for d in st["droplets"]:
        for pid in d["pids"].values():
            assert pid, f"{d['name']} has a service down"
            assert os.stat(f"/proc/{pid}/ns/net").st_ino != host_ns
            gids = Path(f"/proc/{pid}/status").read_text().split("Gid:")[1].split()
            assert int(gids[0]) == netns.droplet_gid(int(d["id"]))


@pytest.mark.timeout(1800)  # ~6 min alone on 2 cores; allow for a loaded machine
def test_a_seeded_campaign_through_every_fault_keeps_every_invariant(netns_sandbox: Path) -> None:
    st = json.loads(redwarden("sandbox", "status", "--dir", str(netns_sandbox), "--json").stdout)
    n = len(CAMPAIGN_FAULTS)
    proc = subprocess.run([*REDWARDEN, "drill", "sandbox", "--campaign", str(n), "--seed", "11", "--sandbox",
                           str(netns_sandbox), "--json"], capture_output=True, text=True, timeout=1500)
    for secret in (st["redis_password"], st["admin_token"], st["do_token"]):
        assert secret not in proc.stdout and secret not in proc.stderr
    assert proc.stdout.strip(), f"no JSON (exit {proc.returncode}): {proc.stderr[-3000:]}"
    doc = json.loads(proc.stdout)
    assert doc["seed"] == 11
    assert sorted(f["fault"] for f in doc["faults"]) == sorted(CAMPAIGN_FAULTS), doc["faults"]
    for f in doc["faults"]:
        assert {"fault", "node", "steps", "write_unavailable_s", "writes_lost", "actions"} <= set(f)
    broken = [inv for inv in doc["invariants"] if not inv["held"]]
    assert not broken, json.dumps(broken, indent=2)
    assert doc["harmful_actions"] == 0
    assert doc["writes_lost"] == 0 and doc["writes_acked"] > 0
    assert proc.returncode == 0, proc.stderr[-3000:]
