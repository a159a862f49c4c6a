"""Unit tests of the health checks over the recorded sandbox reports, one table row per situation.

Layer: tests of the pure core. Each case starts from recorded reports (healthy, or one of the two
recorded faults) and edits them with `dataclasses.replace` through tests/factories.py, then asserts the
exact set of findings as "CODE subject[/qualifier] severity" and a few words of evidence from the messages.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from controller.core.checks import check, cluster_health
from controller.core.findings import Code, Finding, Severity
from controller.core.policy import DEFAULT_CONFIRM_S, MIB, Policy
from controller.core.view import ClusterView
from protocol.report import ConnectedReplica, SentinelPeer
from tests.factories import (
    CLUSTER,
    MASTER,
    kill_redis,
    kill_sentinel,
    scenario_view,
    with_age,
    with_host,
    with_redis,
    with_sentinel,
    with_sentinel_master,
    without_node,
)

ALL_NODES = ("redis-1", "redis-2", "redis-3")


def healthy() -> ClusterView:
    return scenario_view("healthy")


def summary(findings: tuple[Finding, ...]) -> set[str]:
    out = set()
    for f in findings:
        qualifier = f"/{f.qualifier}" if f.qualifier else ""
        out.add(f"{f.code.value} {f.subject}{qualifier} {f.severity.value}")
    return out


def partition(view: ClusterView, cut: set[str], odown: bool = True) -> ClusterView:
    """The Sentinels of `cut` and of the other nodes flag each other down (disconnected); with `odown`, the
    other side's Sentinels flag the master (redis-1) o_down, else s_down. The controller reaches everyone."""
    addresses = {n.name: n.report.identity.sentinel_address for n in view.nodes}
    for node in view.nodes:
        mine = node.name in cut
        sentinel_view = node.report.sentinel.masters[0]
        peers = tuple(
            dataclasses.replace(p, flags=("sentinel", "s_down", "disconnected"))
            if any(addresses[o] == p.address and (o in cut) != mine for o in addresses) else p
            for p in sentinel_view.sentinels
        )
        changes: dict[str, object] = {"sentinels": peers}
        if not mine and "redis-1" in cut:
            changes.update(s_down=True, o_down=odown, flags=("master", "s_down", *(("o_down",) if odown else ())))
        view = with_sentinel_master(view, node.name, **changes)
    return view


def on_all(view: ClusterView, edit: Callable[[ClusterView, str], ClusterView]) -> ClusterView:
    for node in ALL_NODES:
        view = edit(view, node)
    return view


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[], ClusterView]
    expected: set[str]
    evidence: tuple[str, ...] = ()  # substrings of the joined messages
    policy: Policy = field(default_factory=Policy)


CASES = [
    # -- recorded --------------------------------------------------------------------------------------
    Case("healthy", healthy, set()),
    Case(
        "recorded-replica2-redis-killed",
        lambda: scenario_view("replica2-redis-killed"),
        {"REPLICA_DOWN node redis-2 warning", "REDUNDANCY_DEGRADED cluster warning"},
        ("127.0.0.4:6379", "Connection refused", "process is not running", "1 of 2 desired replicas"),
    ),
    # Recorded 2 s after redis-2 came back from the previous fault: its link to the master was still
    # down (the master lists it in wait_bgsave). That is a genuine, if transient, finding.
    Case(
        "recorded-sentinel3-killed",
        lambda: scenario_view("sentinel3-killed"),
        {
            "SENTINEL_DOWN sentinel redis-3 warning",
            "QUORUM_AT_RISK cluster warning",
            "REPLICA_LINK_DOWN node redis-2 warning",
            "REDUNDANCY_DEGRADED cluster warning",
        },
        ("127.0.0.5:26379", "2 of 3 Sentinels reachable", "failover needs 2"),
    ),
    Case(
        "recorded-sentinel3-killed-replica-resynced",
        lambda: with_redis(scenario_view("sentinel3-killed"), "redis-2", master_link_status="up", master_last_io_s=0),
        {"SENTINEL_DOWN sentinel redis-3 warning", "QUORUM_AT_RISK cluster warning"},
        ("redis-sentinel process is not running", "1 down, 0 silent"),
    ),
    # -- master ----------------------------------------------------------------------------------------
    Case(
        "master-process-killed",
        lambda: kill_redis(healthy(), "redis-1"),
        {"MASTER_DOWN cluster critical"},
        (MASTER, "redis-server process is not running"),
    ),
    Case(
        "master-odown-by-majority",
        lambda: with_sentinel_master(
            with_sentinel_master(healthy(), "redis-2", s_down=True, o_down=True, flags=("master", "s_down", "o_down")),
            "redis-3",
            s_down=True,
            o_down=True,
            flags=("master", "s_down", "o_down"),
        ),
        {"MASTER_DOWN cluster critical"},
        ("2 of 3 reachable Sentinels flag it o_down (redis-2, redis-3)",),
    ),
    Case(
        "master-hung-and-sdown",
        lambda: with_sentinel_master(
            with_redis(healthy(), "redis-1", reachable=False, error="TimeoutError: Timeout reading from socket"),
            "redis-2",
            s_down=True,
            flags=("master", "s_down"),
        ),
        {"MASTER_DOWN cluster critical"},
        ("TimeoutError", "1 of 3 reachable Sentinels flag it down (redis-2)"),
    ),
    Case(
        "master-agent-cannot-reach-but-sentinels-can",
        lambda: with_redis(healthy(), "redis-1", reachable=False, error="AuthenticationError: invalid password"),
        {"MASTER_UNREACHABLE cluster critical"},
        ("AuthenticationError", "process is alive and no reachable Sentinel flags it down"),
    ),
    Case(
        "master-sdown-by-one-sentinel",
        lambda: with_sentinel_master(healthy(), "redis-3", s_down=True, flags=("master", "s_down")),
        {"SENTINEL_ISOLATED sentinel redis-3 warning"},
        ("flags the master 127.0.0.3:6379 down while the master's own agent and 2 of the 3 reachable Sentinels",),
    ),
    Case(
        "master-sdown-by-majority-not-yet-odown",
        lambda: with_sentinel_master(
            with_sentinel_master(healthy(), "redis-3", s_down=True, flags=("master", "s_down")),
            "redis-2", s_down=True, flags=("master", "s_down"),
        ),
        {"MASTER_UNREACHABLE cluster critical"},
        ("2 of 3 reachable Sentinels flag it down (redis-2, redis-3)",),
    ),
    Case(
        "master-agent-silent",
        lambda: with_age(healthy(), "redis-1", 10.0),
        {"AGENT_SILENT node redis-1 warning", "QUORUM_AT_RISK cluster warning"},
        ("No report from redis-1 (127.0.0.3:6379) for 10.0 s", "1 silent"),
    ),
    Case(
        "master-agent-silent-and-a-sentinel-flags-it-down",
        lambda: with_age(with_sentinel_master(healthy(), "redis-2", s_down=True, flags=("master", "s_down")),
                         "redis-1", 10.0),
        {"MASTER_UNREACHABLE cluster critical", "AGENT_SILENT node redis-1 warning", "QUORUM_AT_RISK cluster warning"},
        ("its agent has been silent for 10.0 s; 1 of 2 reachable Sentinels flag it down (redis-2)",),
    ),
    Case(
        "no-master-named-master-says-replica",
        lambda: with_redis(
            healthy(), "redis-1", role="replica", master_host="127.0.0.4", master_port=6379, master_link_status="up"
        ),
        {"NO_MASTER cluster critical"},
        ("reports role replica of 127.0.0.4:6379",),
    ),
    Case(
        "no-master-no-sentinel-and-master-dead",
        lambda: kill_redis(on_all(healthy(), kill_sentinel), "redis-1"),
        {
            "NO_MASTER cluster critical",
            "QUORUM_LOST cluster critical",
            "SENTINEL_DOWN sentinel redis-1 warning",
            "SENTINEL_DOWN sentinel redis-2 warning",
            "SENTINEL_DOWN sentinel redis-3 warning",
        },
        ("no Sentinel is reachable", "redis is down on redis-1 (127.0.0.3:6379)", "0 of 3 Sentinels reachable"),
    ),
    # -- topology --------------------------------------------------------------------------------------
    Case(
        "split-brain-two-self-declared-masters",
        lambda: with_redis(
            healthy(), "redis-2", role="master", master_host=None, master_port=None, master_link_status=None
        ),
        {"SPLIT_BRAIN cluster critical"},
        ("redis-1 (127.0.0.3:6379), redis-2 (127.0.0.4:6379) all report role master",),
    ),
    Case(
        "split-brain-sentinels-different-epochs",
        lambda: with_sentinel_master(healthy(), "redis-3", master_address="127.0.0.4:6379", config_epoch=1),
        {"SPLIT_BRAIN cluster critical"},
        ("config epochs 0, 1", "127.0.0.4:6379 by redis-3"),
    ),
    Case(
        "sentinel-disagreement-same-epoch-with-majority",
        lambda: with_sentinel_master(healthy(), "redis-3", master_address="127.0.0.4:6379"),
        {"SENTINEL_DISAGREEMENT cluster/master_address warning"},
        ("127.0.0.3:6379 by redis-1, redis-2; 127.0.0.4:6379 by redis-3", f"the majority names {MASTER}"),
    ),
    Case(
        "sentinel-disagreement-without-majority",
        lambda: with_sentinel_master(kill_sentinel(healthy(), "redis-1"), "redis-3", master_address="127.0.0.4:6379"),
        {
            "SENTINEL_DISAGREEMENT cluster/master_address critical",
            "SENTINEL_DOWN sentinel redis-1 warning",
            "QUORUM_AT_RISK cluster warning",
        },
        ("no majority names a master",),
    ),
    Case(
        "failover-in-progress",
        lambda: with_sentinel_master(
            healthy(), "redis-2", failover_in_progress=True, flags=("master", "failover_in_progress")
        ),
        {"FAILOVER_IN_PROGRESS cluster warning"},
        ("Sentinel on redis-2 reports a failover in progress for mymaster",),
    ),
    # -- sentinels -------------------------------------------------------------------------------------
    Case(
        "quorum-lost-two-sentinels-killed",
        lambda: kill_sentinel(kill_sentinel(healthy(), "redis-2"), "redis-3"),
        {
            "QUORUM_LOST cluster critical",
            "SENTINEL_DOWN sentinel redis-2 warning",
            "SENTINEL_DOWN sentinel redis-3 warning",
        },
        ("1 of 3 Sentinels reachable (2 down, 0 silent)", "failover needs 2"),
    ),
    # One Sentinel refusing CKQUORUM while the other two see each other: that Sentinel is cut off, and
    # the other side can still fail over (the pages of issue 12 said "3 of 3 reachable" with QUORUM_LOST).
    Case(
        "one-sentinel-refuses-ckquorum-the-others-can-fail-over",
        lambda: with_sentinel_master(
            healthy(), "redis-1", ckquorum_ok=False, ckquorum_message="NOQUORUM 1 usable Sentinels"
        ),
        {"SENTINEL_ISOLATED sentinel redis-1 warning", "QUORUM_AT_RISK cluster warning"},
        ("says 'NOQUORUM 1 usable Sentinels'", "the side of redis-2, redis-3 can",
         "3 of 3 Sentinels reachable (0 down, 0 silent); the largest group that see each other has 2"),
    ),
    Case(
        "quorum-lost-every-sentinel-refuses-ckquorum",
        lambda: on_all(
            healthy(),
            lambda v, n: with_sentinel_master(v, n, ckquorum_ok=False, ckquorum_message="NOQUORUM 1 usable Sentinels"),
        ),
        {"QUORUM_LOST cluster critical"},
        ("no side can authorize a failover", "3 of 3 Sentinels reachable", "the largest group that see each "
         "other has 1 (redis-1)", "Sentinel on redis-2 says 'NOQUORUM 1 usable Sentinels'"),
    ),
    # The partition of issue 12: the master's host cut off from both replicas' hosts, the controller still
    # reaching all three. The majority side flags it o_down and can fail over: no QUORUM_LOST.
    Case(
        "partition-master-cut-off-majority-can-fail-over",
        lambda: partition(healthy(), {"redis-1"}),
        {
            "MASTER_DOWN cluster critical",
            "SENTINEL_ISOLATED sentinel redis-1 warning",
            "QUORUM_AT_RISK cluster warning",
        },
        ("2 of 3 reachable Sentinels flag it o_down (redis-2, redis-3)", "it talks with 0 of the 2 other reachable "
         "Sentinels (it flags redis-2, redis-3 down)", "the side of redis-2, redis-3 can"),
    ),
    Case(
        "partition-three-ways-quorum-lost",
        lambda: partition(partition(healthy(), {"redis-1"}, odown=False), {"redis-2"}),
        {"QUORUM_LOST cluster critical", "MASTER_UNREACHABLE cluster critical"},
        ("3 of 3 Sentinels reachable (0 down, 0 silent); the largest group that see each other has 1",),
    ),
    Case(
        "quorum-at-risk-sentinel-not-monitoring",
        lambda: with_sentinel(healthy(), "redis-3", masters=()),
        {"QUORUM_AT_RISK cluster warning", "SENTINEL_DOWN sentinel redis-3 warning"},
        ("it does not monitor mymaster",),
    ),
    Case(
        "sentinel-stale-entries",
        lambda: with_sentinel_master(
            healthy(),
            "redis-1",
            replicas=(
                *healthy().nodes[0].report.sentinel.masters[0].replicas,
                SentinelPeer("10.9.9.9:6379", ("slave", "s_down", "disconnected")),
            ),
            sentinels=(
                *healthy().nodes[0].report.sentinel.masters[0].sentinels,
                SentinelPeer("10.9.9.9:26379", ("sentinel", "s_down", "disconnected")),
            ),
        ),
        {"SENTINEL_STALE_ENTRIES sentinel redis-1 warning"},
        ("10.9.9.9:26379 [sentinel,s_down,disconnected]", "10.9.9.9:6379 [slave,s_down,disconnected]", "RESET"),
    ),
    Case(
        "sentinel-count-mismatch",
        lambda: with_sentinel_master(
            healthy(),
            "redis-2",
            num_other_sentinels=1,
            sentinels=healthy().nodes[1].report.sentinel.masters[0].sentinels[:1],
        ),
        {"SENTINEL_COUNT_MISMATCH sentinel redis-2 warning"},
        ("knows 1 other Sentinels (expected 2)",),
    ),
    Case(
        "sentinel-count-mismatch-replicas",
        lambda: with_sentinel_master(
            healthy(), "redis-3", replicas=healthy().nodes[2].report.sentinel.masters[0].replicas[1:]
        ),
        {"SENTINEL_COUNT_MISMATCH sentinel redis-3 warning"},
        ("knows 1 replicas (expected 2)",),
    ),
    # -- replicas --------------------------------------------------------------------------------------
    Case(
        "both-replicas-killed",
        lambda: kill_redis(kill_redis(healthy(), "redis-2"), "redis-3"),
        {
            "REPLICA_DOWN node redis-2 critical",
            "REPLICA_DOWN node redis-3 critical",
            "REDUNDANCY_DEGRADED cluster critical",
        },
        ("0 of 2 replicas up", "0 of 2 desired replicas", "min-replicas-to-write"),
    ),
    Case(
        "replica-link-down",
        lambda: with_redis(
            healthy(), "redis-3", master_link_status="down", master_link_down_since_s=12, master_sync_in_progress=True
        ),
        {"REPLICA_LINK_DOWN node redis-3 warning", "REDUNDANCY_DEGRADED cluster warning"},
        ("down for 12 s, full sync in progress",),
    ),
    Case(
        "replica-lag-bytes",
        lambda: with_redis(
            healthy(),
            "redis-1",
            master_repl_offset=50_000_000,
            connected_replicas=(
                ConnectedReplica("127.0.0.5:6379", "online", 50_000_000 - 20 * MIB, 1),
                ConnectedReplica("127.0.0.4:6379", "online", 50_000_000 - 100, 1),
            ),
        ),
        {"REPLICA_LAG_HIGH node redis-3 warning", "REDUNDANCY_DEGRADED cluster warning"},
        (f"{20 * MIB} bytes (20.0 MiB) behind", "thresholds 10.0 MiB, 10 s"),
    ),
    Case(
        "replica-lag-seconds",
        lambda: with_redis(healthy(), "redis-2", master_last_io_s=25),
        {"REPLICA_LAG_HIGH node redis-2 warning", "REDUNDANCY_DEGRADED cluster warning"},
        ("last I/O from the master 25 s ago",),
    ),
    Case(
        "replica-lag-master-side",
        lambda: with_redis(
            healthy(),
            "redis-1",
            connected_replicas=(
                ConnectedReplica("127.0.0.5:6379", "online", 6096, 1),
                ConnectedReplica("127.0.0.4:6379", "online", 6096, 42),
            ),
        ),
        {"REPLICA_LAG_HIGH node redis-2 warning", "REDUNDANCY_DEGRADED cluster warning"},
        ("the master last heard from it 42 s ago",),
    ),
    Case(
        "replica-wrong-master",
        lambda: with_redis(healthy(), "redis-3", master_host="127.0.0.4"),
        {"REPLICA_WRONG_MASTER node redis-3 warning", "REDUNDANCY_DEGRADED cluster warning"},
        ("replicates from 127.0.0.4:6379 instead of the master 127.0.0.3:6379",),
    ),
    Case(
        "redundancy-below-desired",
        healthy,
        {"REDUNDANCY_DEGRADED cluster warning"},
        ("2 of 3 desired replicas are in sync (redis-2, redis-3)",),
        Policy(desired_replicas=3),
    ),
    # -- agents ----------------------------------------------------------------------------------------
    Case(
        "replica-agent-silent-master-vouches",
        lambda: with_age(healthy(), "redis-3", 10.0),
        {"AGENT_SILENT node redis-3 warning", "QUORUM_AT_RISK cluster warning"},
        ("for 10.0 s (silent after 3.0 s)",),
    ),
    Case(
        "stale-report-says-nothing-but-silence",
        lambda: with_age(with_sentinel(kill_redis(healthy(), "redis-3"), "redis-3", reachable=False), "redis-3", 10.0),
        {"AGENT_SILENT node redis-3 warning", "QUORUM_AT_RISK cluster warning"},
    ),
    Case(
        "two-agents-silent-quorum-unconfirmed",  # the controller going blind: no lost quorum, no page
        lambda: with_age(with_age(healthy(), "redis-2", 10.0), "redis-3", 10.0),
        {"AGENT_SILENT node redis-2 warning", "AGENT_SILENT node redis-3 warning", "QUORUM_AT_RISK cluster warning"},
        ("Sentinel quorum not confirmed: 1 of 3 Sentinels reachable (0 down, 2 silent)", "a side of up to 3"),
    ),
    Case(
        "master-and-replica-agents-silent",
        lambda: with_age(with_age(healthy(), "redis-1", 10.0), "redis-2", 10.0),
        {"AGENT_SILENT node redis-1 warning", "AGENT_SILENT node redis-2 warning", "QUORUM_AT_RISK cluster warning"},
        ("1 of 3 Sentinels reachable (0 down, 2 silent)",),
    ),
    Case(
        "silent-sentinel-flagged-down-and-one-dead-quorum-lost",  # proven by the fresh reports themselves
        lambda: kill_sentinel(with_age(partition(healthy(), {"redis-2"}), "redis-2", 10.0), "redis-3"),
        {"AGENT_SILENT node redis-2 warning", "SENTINEL_DOWN sentinel redis-3 warning", "QUORUM_LOST cluster critical"},
        ("1 of 3 Sentinels reachable (1 down, 1 silent)", "even with the 1 Sentinels on silent agents up, a side "
         "of at most 1"),
    ),
    Case(
        "node-never-reported",
        lambda: without_node(healthy(), "redis-3"),
        {"AGENT_SILENT cluster warning", "QUORUM_AT_RISK cluster warning"},
        ("1 of 3 expected nodes have never reported (known: redis-1, redis-2)",),
    ),
    Case(
        "every-agent-silent",
        lambda: dataclasses.replace(healthy(), now=healthy().now + 60),
        {"AGENT_SILENT node redis-1 warning", "AGENT_SILENT node redis-2 warning", "AGENT_SILENT node redis-3 warning"},
    ),
    # -- resources -------------------------------------------------------------------------------------
    Case(
        "persistence-failing-on-master",
        lambda: with_redis(healthy(), "redis-1", rdb_last_bgsave_ok=False, rdb_changes_since_last_save=1234),
        {"PERSISTENCE_FAILING node redis-1 critical"},
        ("the last RDB background save failed (1234 changes",),
    ),
    Case(
        "persistence-failing-on-replica",
        lambda: with_redis(healthy(), "redis-2", aof_last_write_ok=False),
        {"PERSISTENCE_FAILING node redis-2 warning"},
        ("the last AOF write failed",),
    ),
    Case(
        "memory-pressure-near-maxmemory",
        lambda: with_redis(healthy(), "redis-2", maxmemory_bytes=100 * MIB, used_memory_bytes=95 * MIB),
        {"MEMORY_PRESSURE node redis-2 warning"},
        ("redis uses 95% of maxmemory",),
    ),
    Case(
        "memory-full-noeviction-master",
        lambda: with_redis(healthy(), "redis-1", maxmemory_bytes=100 * MIB, used_memory_bytes=101 * MIB),
        {"MEMORY_PRESSURE node redis-1 critical"},
        ("noeviction rejects writes",),
    ),
    Case(
        "memory-pressure-host",
        lambda: with_host(healthy(), "redis-3", memory_total_bytes=8 * 1024 * MIB, memory_available_bytes=400 * MIB),
        {"MEMORY_PRESSURE node redis-3 warning"},
        ("the host has 419430400 of 8589934592 bytes available (5%)",),
    ),
    Case(
        "disk-pressure",
        lambda: with_host(healthy(), "redis-3", disk_total_bytes=100 * 1024 * MIB, disk_free_bytes=5 * 1024 * MIB),
        {"DISK_PRESSURE node redis-3 warning"},
        ("5368709120 of 107374182400 bytes free (5.0%, minimum 10%)",),
    ),
    # -- configuration ---------------------------------------------------------------------------------
    Case(
        "seed-layout-mistakes-masterauth-and-min-replicas",
        lambda: on_all(healthy(), lambda v, n: with_redis(v, n, masterauth_set=False, min_replicas_to_write=0)),
        {
            "CONFIG_RISK cluster/masterauth_missing warning",
            "CONFIG_RISK cluster/min_replicas_to_write_off warning",
        },
        ("masterauth is missing on redis-1, redis-2, redis-3", "min-replicas-to-write is 0 on redis-1, redis-2"),
    ),
    Case(
        "config-masterauth-missing-on-one-replica",
        lambda: with_redis(healthy(), "redis-2", masterauth_set=False),
        {"CONFIG_RISK cluster/masterauth_missing warning"},
        ("masterauth is missing on redis-2:",),
    ),
    Case(
        "config-min-replicas-to-write-not-required",
        lambda: on_all(healthy(), lambda v, n: with_redis(v, n, min_replicas_to_write=0)),
        set(),
        (),
        Policy(require_min_replicas_to_write=False),
    ),
    Case(
        "config-too-few-sentinels",
        healthy,
        {"CONFIG_RISK cluster/too_few_sentinels warning"},
        ("Only 3 Sentinels are expected; at least 5",),
        Policy(min_sentinels=5),
    ),
    Case(
        "config-quorum-exceeds-sentinels",
        lambda: on_all(healthy(), lambda v, n: with_sentinel_master(v, n, quorum=4)),
        {"CONFIG_RISK cluster/quorum_exceeds_sentinels warning", "QUORUM_LOST cluster critical"},
        ("quorum 4 exceeds the 3 Sentinels", "failover needs 4"),
    ),
    Case(
        "config-sentinels-disagree-on-quorum",
        lambda: with_sentinel_master(healthy(), "redis-3", quorum=3),
        {"CONFIG_RISK cluster/sentinel_quorum_mismatch warning", "QUORUM_AT_RISK cluster warning"},
        ("Sentinels disagree on quorum: 2 on redis-1, redis-2; 3 on redis-3",),
    ),
    Case(
        "config-sentinels-disagree-on-down-after",
        lambda: with_sentinel_master(healthy(), "redis-3", down_after_ms=30000),
        {"CONFIG_RISK cluster/sentinel_down_after_ms_mismatch warning"},
        ("5000 on redis-1, redis-2; 30000 on redis-3",),
    ),
    Case(
        "config-no-promotable-replica",
        lambda: with_redis(with_redis(healthy(), "redis-2", replica_priority=0), "redis-3", replica_priority=0),
        {"CONFIG_RISK cluster/no_promotable_replica warning"},
        ("Every replica (redis-2, redis-3) has replica-priority 0",),
    ),
    Case(
        "config-replica-writable",
        lambda: with_redis(healthy(), "redis-3", replica_read_only=False),
        {"CONFIG_RISK cluster/replica_writable warning"},
        ("replica-read-only is off on redis-3",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_check(case: Case) -> None:
    view = case.build()
    findings = check(view, case.policy, view.now)
    assert summary(findings) == case.expected, "\n".join(f.message for f in findings)
    text = "\n".join(f.message for f in findings)
    for snippet in case.evidence:
        assert snippet in text
    assert all(f.cluster == CLUSTER for f in findings)
    assert len({f.key for f in findings}) == len(findings), "keys must be unique within one check"


def test_every_code_has_a_case() -> None:
    covered = {line.split()[0] for case in CASES for line in case.expected}
    # not found by the checks: tests/test_heal_state.py, tests/test_fencing.py
    healers_own = {Code.HEAL_STATE_UNREADABLE.value, Code.NODE_FENCED.value}
    assert covered | healers_own == {c.value for c in Code} and not covered & healers_own


def test_findings_are_sorted_most_severe_first() -> None:
    view = kill_sentinel(kill_sentinel(kill_redis(healthy(), "redis-2"), "redis-2"), "redis-3")
    findings = check(view, Policy(), view.now)
    ranks = [f.severity.rank for f in findings]
    assert ranks == sorted(ranks, reverse=True)
    assert findings[0].code is Code.QUORUM_LOST


def test_now_argument_wins_over_view_now() -> None:
    view = healthy()
    later = view.now + 60
    assert check(view, Policy(), later) == check(dataclasses.replace(view, now=later), Policy(), later)
    assert check(dataclasses.replace(view, now=later), Policy(), view.now) == ()
    assert {f.code for f in check(view, Policy(), view.now + 60)} == {Code.AGENT_SILENT}


def test_key_is_stable_while_the_numbers_change() -> None:
    first = check(with_age(healthy(), "redis-3", 10.0), Policy(), healthy().now)
    later = check(with_age(healthy(), "redis-3", 20.0), Policy(), healthy().now)
    assert [f.key for f in first] == [f.key for f in later]
    assert [f.message for f in first] != [f.message for f in later]
    assert "sandbox/AGENT_SILENT/node redis-3" in {f.key for f in first}


@pytest.mark.parametrize(
    ("severities", "health"),
    [
        ((), "healthy"),
        ((Severity.INFO,), "healthy"),
        ((Severity.INFO, Severity.WARNING), "degraded"),
        ((Severity.WARNING, Severity.CRITICAL, Severity.INFO), "critical"),
    ],
    ids=["none", "info-only", "warning", "critical"],
)
def test_cluster_health(severities: tuple[Severity, ...], health: str) -> None:
    findings = [Finding(Code.CONFIG_RISK, s, CLUSTER, "cluster", CLUSTER, "m", qualifier=s.value) for s in severities]
    assert cluster_health(findings) == health


def test_cluster_health_of_recorded_faults() -> None:
    assert cluster_health(check(healthy(), Policy(), healthy().now)) == "healthy"
    replica_killed = scenario_view("replica2-redis-killed")
    assert cluster_health(check(replica_killed, Policy(), replica_killed.now)) == "degraded"
    master_killed = kill_redis(healthy(), "redis-1")
    assert cluster_health(check(master_killed, Policy(), master_killed.now)) == "critical"


def test_finding_to_dict_and_key() -> None:
    finding = Finding(
        Code.CONFIG_RISK,
        Severity.WARNING,
        CLUSTER,
        "cluster",
        CLUSTER,
        "requirepass is set but masterauth is missing on redis-2.",
        qualifier="masterauth_missing",
        evidence=(("nodes", "redis-2"), ("count", 1)),
    )
    assert finding.key == "sandbox/CONFIG_RISK/cluster/masterauth_missing"
    node_finding = dataclasses.replace(finding, code=Code.REPLICA_DOWN, subject_kind="node", subject_name="redis-2")
    assert node_finding.subject == "node redis-2"
    assert node_finding.key == "sandbox/REPLICA_DOWN/node redis-2/masterauth_missing"
    assert finding.to_dict() == {
        "code": "CONFIG_RISK",
        "severity": "warning",
        "cluster": CLUSTER,
        "subject": "cluster",
        "subject_kind": "cluster",
        "subject_name": CLUSTER,
        "qualifier": "masterauth_missing",
        "key": "sandbox/CONFIG_RISK/cluster/masterauth_missing",
        "message": "requirepass is set but masterauth is missing on redis-2.",
        "evidence": {"nodes": "redis-2", "count": 1},
    }


def test_severity_order() -> None:
    assert Severity.CRITICAL.at_least(Severity.WARNING)
    assert not Severity.INFO.at_least(Severity.WARNING)
    assert Severity.worst([Severity.WARNING, Severity.CRITICAL, Severity.INFO]) is Severity.CRITICAL
    assert Severity.worst([]) is None


def test_policy_windows() -> None:
    policy = Policy()
    assert policy.confirm_after_s(Code.MASTER_DOWN) == 0
    assert policy.confirm_after_s(Code.REPLICA_DOWN) == policy.default_confirm_s
    assert policy.clear_after_s(Code.SPLIT_BRAIN) == 30
    assert policy.clear_after_s(Code.REPLICA_DOWN) == policy.default_clear_s
    windows = {Code.REPLICA_DOWN: 7.0}
    custom = Policy(confirm_s=windows)
    windows[Code.REPLICA_DOWN] = 99.0  # the policy took a copy
    assert custom.confirm_after_s(Code.REPLICA_DOWN) == 7.0
    assert Policy(confirm_s={"MASTER_DOWN": 1}).confirm_after_s(Code.MASTER_DOWN) == 1.0  # type: ignore[dict-item]
    assert DEFAULT_CONFIRM_S[Code.MASTER_DOWN] == 0
    assert Policy().desired_replicas_for(3) == 2
    assert Policy(desired_replicas=1).desired_replicas_for(3) == 1


@pytest.mark.parametrize(
    ("kwargs", "field_name"),
    [
        ({"replica_lag_high_bytes": -1}, "replica_lag_high_bytes"),
        ({"replica_lag_high_s": 0}, "replica_lag_high_s"),
        ({"desired_replicas": -1}, "desired_replicas"),
        ({"agent_silent_intervals": 0.5}, "agent_silent_intervals"),
        ({"memory_pressure_ratio": 1.5}, "memory_pressure_ratio"),
        ({"memory_pressure_ratio": float("nan")}, "memory_pressure_ratio"),
        ({"disk_free_min_ratio": 1.0}, "disk_free_min_ratio"),
        ({"min_sentinels": 0}, "min_sentinels"),
        ({"fallback_quorum": 0}, "fallback_quorum"),
        ({"default_confirm_s": -1.0}, "default_confirm_s"),
        ({"confirm_s": {"NOT_A_CODE": 1.0}}, "confirm_s"),
        ({"clear_s": {Code.MASTER_DOWN: -1.0}}, "clear_s[MASTER_DOWN]"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_policy_validation_names_the_field(kwargs: dict[str, object], field_name: str) -> None:
    with pytest.raises(ValueError, match=field_name.replace("[", r"\[").replace("]", r"\]")):
        Policy(**kwargs)  # type: ignore[arg-type]
