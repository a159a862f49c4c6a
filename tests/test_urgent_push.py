"""Reports pushed at once when they matter (agent/urgent.py): the pure decision, and a real agent whose
real redis-server is made a replica with REPLICAOF between two scheduled reports.

Real parts: two redis-servers on 127.0.0.1 (free ports), the agent's real collectors and probe, real HTTP
pushes to a local stand-in for the controller (tests/helpers.py `ReportSink`). Every process is killed in
teardown, also when a test fails.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.exceptions import RedisError

from agent.config import AgentConfig, AgentSecrets
from agent.redis_client import raw_client
from agent.runtime import Agent
from agent.urgent import EXTRA_BURST, EXTRA_PER_S, Budget, Signal, decide, promoted_of, role_of, signal_of, view_of
from controller.core.view import NodeState, vitals_changed
from protocol.report import RedisHealth, SentinelHealth, SentinelMasterView, SentinelPeer
from tests.factories import load_report
from tests.helpers import ReportSink, free_port, kill_all, wait_until

PASSWORD = "urgent-test-pw-5e1b"
MASTER_NAME = "mymaster"

MASTER = Signal("master", None, "10.0.0.1:6379", ())


# -- the decision (pure) ------------------------------------------------------------------------------
@pytest.mark.parametrize("now_signal", [
    Signal("replica", "10.0.0.2:6379", "10.0.0.1:6379", ()),  # demoted
    Signal("master", None, "10.0.0.2:6379", ()),  # the Sentinel names another master
    Signal("master", None, "10.0.0.1:6379", ("s_down",)),  # flagged down
    Signal("master", None, "10.0.0.1:6379", ("o_down", "failover_in_progress")),  # failover started
    Signal(None, None, "10.0.0.1:6379", ()),  # Redis stopped answering
    Signal("master", None, "10.0.0.1:6379", ("o_down", "failover_in_progress"), ("10.0.0.2:6379",)),  # promoted
    Signal("master", None, None, ()),  # the Sentinel stopped answering
])
def test_a_change_of_role_or_of_the_sentinels_view_is_pushed(now_signal: Signal) -> None:
    assert decide(MASTER, now_signal, 100.0, None) == Budget(EXTRA_BURST - 1, 100.0)
    assert decide(MASTER, now_signal, 100.0, Budget(0.0, 99.5)) == Budget(0.0, 100.0)  # refilled one in 0.5 s


def test_no_change_no_first_report_and_a_flapping_node_are_not_pushed() -> None:
    changed = Signal("replica", "10.0.0.2:6379", "10.0.0.1:6379", ())
    assert decide(MASTER, MASTER, 100.0, None) is None
    assert decide(None, changed, 100.0, None) is None  # the schedule sends the first report
    assert decide(MASTER, changed, 100.0, Budget(0.0, 99.7)) is None  # spent: one more only 0.5 s after
    # the steps of one failover, a fraction of a second apart, each go at once
    budget = None
    for i, step in enumerate((Signal("replica", "10.0.0.2:6379", "10.0.0.1:6379", ("s_down",)),
                              Signal("replica", "10.0.0.2:6379", "10.0.0.1:6379", ("s_down", "failover_in_progress")),
                              Signal("replica", "10.0.0.2:6379", "10.0.0.1:6379", ("s_down", "failover_in_progress"),
                                     ("10.0.0.3:6379",)))):
        budget = decide(MASTER, step, 100.0 + i * 0.1, budget)
        assert budget is not None
    # a node flapping at every probe (0.25 s) for 10 s: the burst, then one per 0.5 s
    reported, budget, pushed = MASTER, None, 0
    for i in range(40):
        now = 100.0 + i * 0.25
        spent = decide(reported, changed if i % 2 else MASTER, now, budget)
        if spent is not None:
            reported, budget, pushed = (changed if i % 2 else MASTER), spent, pushed + 1
    assert EXTRA_BURST < pushed <= EXTRA_BURST + 10 * EXTRA_PER_S


def test_the_probe_reads_the_same_signal_as_the_report() -> None:
    assert role_of(["master", 10, []]) == ("master", None)
    assert role_of(["slave", "10.0.0.2", 6380, "connected", 5]) == ("replica", "10.0.0.2:6380")
    assert role_of("garbage") == (None, None)
    reply = ["name", "m", "ip", "10.0.0.1", "port", "6379", "flags", "master,s_down,o_down,disconnected"]
    assert view_of(reply) == ("10.0.0.1:6379", ("s_down", "o_down"))
    assert view_of(["name"]) == (None, ())
    view = SentinelMasterView(name="m", master_address="10.0.0.1:6379", flags=("master", "s_down", "o_down"),
                              s_down=True, o_down=True)
    report_signal = signal_of(RedisHealth(reachable=True, role="replica", master_host="10.0.0.2", master_port=6380),
                              SentinelHealth(reachable=True, masters=(view,)), "m")
    assert report_signal == Signal("replica", "10.0.0.2:6380", "10.0.0.1:6379", ("s_down", "o_down"))
    replicas = ["ip", "10.0.0.2", "port", "6379", "flags", "slave,promoted"], ["ip", "10.0.0.3", "port", "6379",
                                                                                "flags", "slave"]
    assert promoted_of(list(replicas)) == ("10.0.0.2:6379",)
    assert promoted_of("garbage") == () and promoted_of([["ip"]]) == ()
    leading = dataclasses.replace(view, failover_in_progress=True, replicas=(
        SentinelPeer("10.0.0.2:6379", ("slave", "promoted")), SentinelPeer("10.0.0.3:6379", ("slave",))))
    assert signal_of(RedisHealth(reachable=True, role="master"), SentinelHealth(reachable=True, masters=(leading,)),
                     "m").promoted == ("10.0.0.2:6379",)
    no_failover = dataclasses.replace(leading, failover_in_progress=False)  # a stale flag outside a failover
    assert signal_of(RedisHealth(reachable=True, role="master"),
                     SentinelHealth(reachable=True, masters=(no_failover,)), "m").promoted == ()
    assert signal_of(RedisHealth(reachable=False), SentinelHealth(reachable=False), "m") == Signal(None, None, None, ())


# -- a real agent, a real Redis -------------------------------------------------------------------------
def _start(tmp_path: Path, name: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    d = tmp_path / name
    d.mkdir()
    pidfile = d / "redis.pid"
    (d / "redis.conf").write_text(f"bind 127.0.0.1\nport {port}\ndir {d}\nlogfile {d}/redis.log\npidfile {pidfile}\n"
                                  f"save ''\nappendonly no\nrequirepass {PASSWORD}\nmasterauth {PASSWORD}\n")
    return subprocess.Popen(["redis-server", str(d / "redis.conf")], cwd=d), port, pidfile


@dataclasses.dataclass(frozen=True)
class Nodes:
    port: int  # the agent's Redis
    pidfile: Path
    other_port: int  # another master, the one its Sentinel monitors
    sentinel_port: int


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    if shutil.which("redis-server") is None or shutil.which("redis-sentinel") is None:
        pytest.skip("redis-server or redis-sentinel is not on PATH (scripts/test installs them)")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        node, node_port, pidfile = _start(tmp_path, "node")
        procs.append(node)
        other, other_port, other_pid = _start(tmp_path, "other")
        procs.append(other)
        for p in (pidfile, other_pid):
            wait_until(lambda p=p: p.exists() and p.read_text().strip(), 10, "redis-server's pidfile")  # type: ignore[misc]
        sentinel_port = free_port()
        conf = tmp_path / "sentinel.conf"
        conf.write_text(f"bind 127.0.0.1\nport {sentinel_port}\ndir {tmp_path}\nlogfile {tmp_path}/sentinel.log\n"
                        f"sentinel monitor {MASTER_NAME} 127.0.0.1 {other_port} 1\n"
                        f"sentinel auth-pass {MASTER_NAME} {PASSWORD}\n")
        procs.append(subprocess.Popen(["redis-sentinel", str(conf)], cwd=tmp_path))
        wait_until(lambda: _sentinel_sees(sentinel_port), 10, "the Sentinel connected to its master")
        yield Nodes(node_port, pidfile, other_port, sentinel_port)
    finally:
        kill_all(procs)


def _sentinel_sees(port: int) -> bool:
    """Its master is known, linked (not `disconnected`) and not flagged down."""
    try:
        with raw_client("127.0.0.1", port, None, 1.0) as c:
            reply = c.execute_command("SENTINEL", "MASTER", MASTER_NAME)
    except (OSError, RedisError):
        return False
    return view_of(reply)[0] is not None and view_of(reply)[1] == () and "disconnected" not in str(reply)


def test_a_role_change_is_pushed_before_the_next_scheduled_report(nodes: Nodes, tmp_path: Path) -> None:
    port, pidfile, other_port = nodes.port, nodes.pidfile, nodes.other_port
    sink = ReportSink()
    config = AgentConfig(cluster="c", node="n1", address="127.0.0.1", controller_url=sink.url,
                         redis_port=port, sentinel_port=nodes.sentinel_port, redis_pidfile=str(pidfile),
                         sentinel_pidfile=str(tmp_path / "no-sentinel.pid"), redis_data_dir=str(tmp_path),
                         report_interval_s=3600)  # the next scheduled report is an hour away
    agent = Agent(config, AgentSecrets(PASSWORD, None, b"k" * 32))
    admin = raw_client("127.0.0.1", port, PASSWORD, 5.0)
    try:
        wait_until(lambda: "redis up" in agent.run_cycle(), 10, "a first report with redis up")
        assert sink.reports[-1]["redis"]["role"] == "master"
        assert [m["master_address"] for m in sink.reports[-1]["sentinel"]["masters"]] == [f"127.0.0.1:{other_port}"]
        count = len(sink.reports)
        assert agent.probe() is None  # nothing changed (the probe reads what the report read): nothing pushed
        assert len(sink.reports) == count

        admin.execute_command("REPLICAOF", "127.0.0.1", other_port)
        said = wait_until(agent.probe, 10, "the probe pushing the role change")
        assert "pushed" in said
        assert len(sink.reports) == count + 1
        assert sink.reports[-1]["redis"]["role"] == "replica"
        assert sink.reports[-1]["redis"]["master_port"] == other_port
        assert agent.probe() is None  # said once: the change is now what was reported
        assert len(sink.reports) == count + 1

        admin.execute_command("REPLICAOF", "NO", "ONE")  # and back: pushed again, once the gap allows
        wait_until(agent.probe, 10, "the probe pushing the promotion")
        assert [r["redis"]["role"] for r in sink.reports[count:]] == ["replica", "master"]
        assert [r["seq"] for r in sink.reports] == sorted(r["seq"] for r in sink.reports)
    finally:
        admin.close()
        agent.close()
        sink.close()


# -- the controller: such a report wakes its watch cycle (pure) ------------------------------------------
def test_a_sentinels_failover_or_promotion_wakes_the_controllers_cycle() -> None:
    report = load_report("healthy", "redis-3")
    state = NodeState(report, report.collected_at)
    (view,) = report.sentinel.masters
    assert not vitals_changed(state, report)
    for changed in (dataclasses.replace(view, failover_in_progress=True),
                    dataclasses.replace(view, failover_in_progress=True, replicas=tuple(
                        dataclasses.replace(p, flags=(*p.flags, "promoted")) for p in view.replicas[:1])),
                    dataclasses.replace(view, s_down=True),
                    dataclasses.replace(view, master_address="10.9.9.9:6379")):
        after = dataclasses.replace(report, sentinel=dataclasses.replace(report.sentinel, masters=(changed,)))
        assert vitals_changed(state, after)
    busy = dataclasses.replace(view, replicas=tuple(dataclasses.replace(p, last_ok_ping_ms=999) for p in view.replicas))
    assert not vitals_changed(state, dataclasses.replace(report, sentinel=dataclasses.replace(
        report.sentinel, masters=(busy,))))  # what moves all the time does not
