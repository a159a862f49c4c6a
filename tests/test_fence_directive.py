"""The fence through the agent (issue #12): a `FenceDirective` signed for one node, run by its agent against
its own real Redis as the `monitor` user, and the controller's executor falling back to it when its own
connection to the old master fails while the node's agent still reports.

Real parts: two redis-servers on 127.0.0.1 (free ports; the "old master" with the `monitor` ACL user that
bootstrap creates, protocol/acl.py, and a config file Redis may rewrite), the agent's directive runner and
redis-py client, the controller's executor with its real directive queue and audit log (SQLite). The
controller's direct connection is a stand-in that fails as an unreachable node does. Every process is
killed in teardown, also when a test fails.
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
from redis.exceptions import RedisError

from agent.directives import DirectiveRunner, LocalRedisControl
from agent.redis_client import raw_client
from controller.adapters.directives import DirectiveQueue
from controller.adapters.redis_ops import OpsError
from controller.adapters.storage.db import Database
from controller.adapters.storage.heal_log import HealStore
from controller.app.executor import Executor, agent_fence_refusal
from controller.core.checks import check
from controller.core.fencing import Fence
from controller.core.planner import HealSnapshot, HealState, Plan
from controller.core.policy import Policy
from protocol.acl import MONITOR_ON_REDIS
from protocol.directives import FenceDirective, RestartServiceDirective, parse_directive, signed_wire
from protocol.report import DirectiveAck
from tests.factories import scenario_view, with_age, with_redis
from tests.helpers import free_port, kill_all, wait_until

KEY = b"f" * 32
NOW = 1_000.0
ADMIN_PW = "fence-dir-admin-pw-3a8c"
MONITOR_PW = "fence-dir-monitor-pw-91d0"


# -- the wire (pure) ---------------------------------------------------------------------------------------
def fence_wire(**changes: object) -> dict[str, object]:
    out = signed_wire(FenceDirective("f-1", "redis-1", "10.0.0.2:6379", NOW + 30), KEY)
    out.update(changes)
    return out


def test_a_signed_fence_parses_back_to_its_type() -> None:
    assert parse_directive(fence_wire(), NOW, "redis-1", KEY) == FenceDirective("f-1", "redis-1", "10.0.0.2:6379",
                                                                                 NOW + 30)


@pytest.mark.parametrize(("raw", "node", "now", "why"), [
    (fence_wire(master="10.0.0.9:6379"), "redis-1", NOW, "signature"),  # changed after signing
    (fence_wire(), "redis-2", NOW, "another node"),
    (fence_wire(), "redis-1", NOW + 31, "expired"),
    ({**fence_wire(), "service": "redis"}, "redis-1", NOW, "unknown field"),  # a restart's field
    (signed_wire(FenceDirective("f-2", "redis-1", "10.0.0.2:6379\nrequirepass x", NOW + 30), KEY), "redis-1", NOW,
     "IP literal"),
    (signed_wire(FenceDirective("f-3", "redis-1", "redis-2:6379", NOW + 30), KEY), "redis-1", NOW, "IP literal"),
])
def test_fence_refusals(raw: dict[str, object], node: str, now: float, why: str) -> None:
    parsed = parse_directive(raw, now, node, KEY)
    assert isinstance(parsed, DirectiveAck) and not parsed.ok and why in (parsed.error or "")
    assert parsed.kind in ("fence", "?")


def test_a_restart_cannot_carry_a_fences_field() -> None:
    raw = signed_wire(RestartServiceDirective("r-1", "redis-1", "redis", None, NOW + 30), KEY)
    raw = {**raw, "master": "10.0.0.2:6379"}
    parsed = parse_directive(raw, NOW, "redis-1", KEY)
    assert isinstance(parsed, DirectiveAck) and "unknown field" in (parsed.error or "")


# -- the fallback decision (pure) ---------------------------------------------------------------------
def test_the_agent_fences_only_a_node_whose_agent_is_fresh_and_says_master() -> None:
    assert agent_fence_refusal(True, "master") is None
    assert "stale" in (agent_fence_refusal(False, "master") or "")
    assert "no longer reports it master" in (agent_fence_refusal(True, "replica") or "")
    assert "unknown" in (agent_fence_refusal(True, None) or "")


# -- real Redis ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Pair:
    old_port: int
    new_port: int
    old_conf: Path


def _start(d: Path, extra: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    d.mkdir()
    port = free_port()
    conf = d / "redis.conf"
    conf.write_text(f"bind 127.0.0.1\nport {port}\ndir {d}\nlogfile {d}/redis.log\npidfile {d}/redis.pid\n"
                    f"save ''\nappendonly no\n{extra}")
    return subprocess.Popen(["redis-server", str(conf)], cwd=d), port, conf


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH (scripts/test installs it)")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        new, new_port, _ = _start(tmp_path / "new", f"requirepass {ADMIN_PW}\n")
        procs.append(new)
        old, old_port, old_conf = _start(tmp_path / "old", f"masterauth {ADMIN_PW}\n")
        procs.append(old)
        for port in (new_port, old_port):
            pw = ADMIN_PW if port == new_port else None
            wait_until(lambda port=port, pw=pw: _ping(port, pw), 10, "redis-server answering")  # type: ignore[misc]
        with raw_client("127.0.0.1", old_port, None, 5.0) as c:  # bootstrap's users: monitor, default off
            c.execute_command("ACL", "SETUSER", "admin", "on", f">{ADMIN_PW}", "~*", "+@all")
            c.execute_command("ACL", "SETUSER", "monitor", "on", f">{MONITOR_PW}", *MONITOR_ON_REDIS.split())
        with raw_client("127.0.0.1", old_port, ADMIN_PW, 5.0, username="admin") as c:
            c.execute_command("ACL", "SETUSER", "default", "off")
        yield Pair(old_port, new_port, old_conf)
    finally:
        kill_all(procs)


def _ping(port: int, password: str | None) -> bool:
    try:
        with raw_client("127.0.0.1", port, password, 1.0) as c:
            return c.execute_command("PING") == "PONG"
    except (OSError, RedisError):
        return False


def _admin(port: int) -> redis.Redis:
    return raw_client("127.0.0.1", port, ADMIN_PW, 5.0, username="admin")


def _monitor(port: int) -> redis.Redis:
    return raw_client("127.0.0.1", port, MONITOR_PW, 5.0, username="monitor")


class NoServices:
    def restart(self, service: str) -> None:
        raise AssertionError("a fence restarts nothing")


def test_the_agent_fences_its_redis_as_the_monitor_user(pair: Pair) -> None:
    monitor, admin = _monitor(pair.old_port), _admin(pair.old_port)
    app = socket.create_connection(("127.0.0.1", pair.old_port), timeout=5)  # a client of the old master
    try:
        app.sendall(f"AUTH admin {ADMIN_PW}\r\nSET k before\r\n".encode())
        got = b""
        while got.count(b"+OK\r\n") < 2:  # AUTH's and SET's replies, however the bytes arrive
            chunk = app.recv(64)
            assert chunk, f"the connection closed after {got!r}"
            got += chunk
        assert got == b"+OK\r\n+OK\r\n"
        assert admin.execute_command("PING") == "PONG"
        runner = DirectiveRunner(NoServices(), "redis-1", KEY, redis=LocalRedisControl(monitor),  # type: ignore[arg-type]
                                 clock=lambda: NOW)
        runner.run([signed_wire(FenceDirective("f-1", "redis-1", f"127.0.0.1:{pair.new_port}", NOW + 30), KEY)])
        (ack,) = runner.acks()
        assert (ack.id, ack.kind, ack.ok, ack.error) == ("f-1", "fence", True, None)
        role = admin.execute_command("ROLE")
        assert isinstance(role, list) and role[0] == "slave" and int(role[2]) == pair.new_port
        assert app.recv(64) == b""  # its clients were disconnected (this one's connection closed)
        assert f"replicaof 127.0.0.1 {pair.new_port}" in pair.old_conf.read_text()  # a restart keeps it a replica
        runner.run([signed_wire(FenceDirective("f-1", "redis-1", f"127.0.0.1:{pair.new_port}", NOW + 30), KEY)])
        assert len(runner.acks()) == 1  # a re-sent directive runs once
    finally:
        for c in (monitor, app, admin):
            c.close()


def test_the_agent_refuses_to_fence_the_master_a_majority_names(pair: Pair) -> None:
    monitor, admin = _monitor(pair.old_port), _admin(pair.old_port)
    try:
        runner = DirectiveRunner(NoServices(), "redis-1", KEY, redis=LocalRedisControl(monitor),  # type: ignore[arg-type]
                                 confirmed_master=lambda: True, clock=lambda: NOW)
        runner.run([signed_wire(FenceDirective("f-9", "redis-1", f"127.0.0.1:{pair.new_port}", NOW + 30), KEY)])
        (ack,) = runner.acks()
        assert not ack.ok and "refused" in (ack.error or "")
        role = admin.execute_command("ROLE")
        assert isinstance(role, list) and role[0] == "master"
        assert "replicaof" not in pair.old_conf.read_text()
    finally:
        monitor.close()
        admin.close()


# -- the executor: direct fence fails, the agent fences ------------------------------------------------------
class Unreachable:
    def __init__(self) -> None:
        self.fenced: list[tuple[str, str]] = []

    def fence(self, node: str, master: str) -> str:
        self.fenced.append((node, master))
        raise OpsError(f"cannot reach {node}: timed out")


class Keys:
    def key(self, cluster: str, node: str) -> bytes | None:
        return KEY if node == "redis-1" else None


def _snapshot(fresh: bool) -> HealSnapshot:
    view = with_redis(scenario_view("healthy"), "redis-1", role="master")
    if not fresh:
        view = with_age(view, "redis-1", 3600)
    return HealSnapshot(view, check(view, Policy(), view.now), HealState(cluster=view.name), None)


@pytest.mark.parametrize("fresh", [True, False])
def test_the_executor_falls_back_to_the_agent_and_audits_its_ack(pair: Pair, tmp_path: Path, fresh: bool) -> None:
    snap = _snapshot(fresh)
    new_master = f"127.0.0.1:{pair.new_port}"
    plan = Plan((Fence("redis-1", new_master, "a side of 2 names it"),), (), False, "fence")
    ops = Unreachable()
    db = Database(str(tmp_path / "state.db"))
    monitor, admin = _monitor(pair.old_port), _admin(pair.old_port)
    try:
        store = HealStore(db)
        queue = DirectiveQueue(Keys())
        nothing: Any = None
        executor = Executor(store, queue, nothing, nothing, lambda _: ops, None, nothing, lambda: snap.view.now)
        executor.execute(snap, plan, snap.state)
        assert [n for n, _ in ops.fenced] == [snap.view.node("redis-1").report.identity.redis_address]  # type: ignore[union-attr]
        (row,) = store.history(snap.view.name)
        wire = queue.for_node(snap.view.name, "redis-1")
        if not fresh:
            assert wire == []
            assert row["status"] == "failed" and "stale" in row["detail"] and "timed out" in row["detail"]
            return
        assert row["kind"] == "Fence" and row["status"] == "sent" and "fence directive sent" in row["detail"]
        (sent,) = wire
        assert sent["kind"] == "fence" and sent["master"] == new_master
        # the agent: what its next push's response carries, against its own Redis
        runner = DirectiveRunner(NoServices(), "redis-1", KEY, redis=LocalRedisControl(monitor),  # type: ignore[arg-type]
                                 clock=lambda: snap.view.now)
        runner.run(wire)
        queue.acknowledge(snap.view.name, "redis-1", runner.acks())
        role = admin.execute_command("ROLE")
        assert isinstance(role, list) and role[0] == "slave" and int(role[2]) == pair.new_port
        (row,) = store.history(snap.view.name)
        assert row["status"] == "succeeded"
        assert queue.for_node(snap.view.name, "redis-1") == []  # acknowledged: not sent again
    finally:
        monitor.close()
        admin.close()
        db.close()
