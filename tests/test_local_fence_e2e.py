"""The agent's local fence against real processes: a master whose only replica and only peer Sentinel stop
answering gets its writes paused by its own agent once alone for down-after, and unpaused when the replica
is back.

The partition is made by freezing the processes (SIGSTOP): their connections stay open and say nothing, as
across a cut network, so the master's INFO shows the replica's lag growing and its Sentinel sees the peer's
last ping age. (A killed replica closes its connection, and Redis refuses writes at once with NOREPLICAS
under `min-replicas-to-write 1`: the window the fence closes is the partition's, up to
`min-replicas-max-lag`.)

Real parts: redis-server master (127.0.0.240) and replica (127.0.0.241), two redis-sentinels (the master's
own on 127.0.0.240:26379 and its peer on 127.0.0.242; down-after 2000 ms), the agent's real cycle pushing to a local
stand-in for the controller. Every process is killed in teardown, also when a test fails.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import TimeoutError as RedisTimeout

from agent.config import AgentConfig, AgentSecrets
from agent.fence import silence_ms
from agent.redis_client import raw_client
from agent.runtime import Agent
from tests.helpers import ReportSink, wait_until

if shutil.which("redis-server") is None:
    pytest.skip("redis-server is not on PATH: these tests need a real Redis 7", allow_module_level=True)

MASTER_IP, REPLICA_IP, PEER_IP = "127.0.0.240", "127.0.0.241", "127.0.0.242"
PORT, SENTINEL_PORT, NAME = 6379, 26379, "mymaster"
PASSWORD = "fence-test-pw-7d31e0"
DOWN_AFTER_MS = 2000


class Procs:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def redis(self, ip: str, extra: str = "") -> None:
        workdir = self.root / f"redis-{ip}"
        workdir.mkdir(exist_ok=True)
        conf = workdir / "redis.conf"
        conf.write_text(f"bind {ip}\nport {PORT}\ndir {workdir}\nlogfile {workdir}/redis.log\nsave ''\n"
                        f"appendonly no\nrequirepass {PASSWORD}\nmasterauth {PASSWORD}\n"
                        f"replica-announce-ip {ip}\n{extra}")
        self.running[ip] = subprocess.Popen(["redis-server", str(conf)], cwd=workdir)

    def sentinel(self, ip: str) -> None:
        workdir = self.root / f"sentinel-{ip}"
        workdir.mkdir(exist_ok=True)
        conf = workdir / "sentinel.conf"
        conf.write_text(f"bind {ip}\nport {SENTINEL_PORT}\ndir {workdir}\nlogfile {workdir}/sentinel.log\n"
                        f"sentinel announce-ip {ip}\nsentinel resolve-hostnames no\n"
                        f"sentinel monitor {NAME} {MASTER_IP} {PORT} 2\nsentinel auth-pass {NAME} {PASSWORD}\n"
                        f"sentinel down-after-milliseconds {NAME} {DOWN_AFTER_MS}\n"
                        f"sentinel failover-timeout {NAME} 60000\n")
        self.running[f"sentinel-{ip}"] = subprocess.Popen(["redis-server", str(conf), "--sentinel"], cwd=workdir)

    def signal(self, name: str, signum: int) -> None:
        self.running[name].send_signal(signum)

    def kill(self, name: str) -> None:
        proc = self.running.pop(name)
        proc.kill()
        proc.wait(timeout=10)

    def close(self) -> None:
        for proc in self.running.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def pushes() -> Iterator[ReportSink]:
    p = ReportSink()
    try:
        yield p
    finally:
        p.close()


def _write(timeout_s: float = 0.5) -> object:
    with raw_client(MASTER_IP, PORT, PASSWORD, timeout_s) as client:
        return client.execute_command("SET", "fence-probe", "x")


def _cluster_and_agent(procs: Procs, pushes: ReportSink, tmp_path: Path,
                       local_fence: bool) -> tuple[Agent, Callable[[], dict[str, Any]]]:
    """The four processes, in sync, and an agent on the master; `last()` runs one cycle, returns its report."""
    procs.redis(MASTER_IP, "min-replicas-to-write 1\nmin-replicas-max-lag 10\n")
    procs.redis(REPLICA_IP, f"replicaof {MASTER_IP} {PORT}\n")
    procs.sentinel(MASTER_IP)
    procs.sentinel(PEER_IP)
    config = AgentConfig(cluster="c", node="n1", address=MASTER_IP, controller_url=pushes.url, redis_port=PORT,
                         sentinel_port=SENTINEL_PORT, redis_pidfile=str(tmp_path / "none.pid"),
                         sentinel_pidfile=str(tmp_path / "none.pid"), redis_data_dir=str(tmp_path),
                         master_name=NAME, report_interval_s=1.0, down_after_ms=DOWN_AFTER_MS,
                         local_fence=local_fence)
    agent = Agent(config, AgentSecrets(PASSWORD, None, b"k" * 32))

    def last() -> dict[str, Any]:
        agent.run_cycle()
        return pushes.reports[-1]

    def knows_its_peers() -> bool:
        view = last()["sentinel"]["masters"]
        return bool(view) and len(view[0]["replicas"]) == 1 and len(view[0]["sentinels"]) == 1
    try:
        wait_until(knows_its_peers, 30, "the master's Sentinel to know the replica and the peer Sentinel")
        wait_until(lambda: _write() == "OK", 30, "the replica in sync: the master takes writes")
    except BaseException:
        agent.close()
        raise
    return agent, last


def _freeze(procs: Procs) -> None:
    procs.signal(REPLICA_IP, signal.SIGSTOP)
    procs.signal(f"sentinel-{PEER_IP}", signal.SIGSTOP)


def _thaw(procs: Procs) -> None:
    for name in (REPLICA_IP, f"sentinel-{PEER_IP}"):
        if name in procs.running:
            procs.signal(name, signal.SIGCONT)


def test_a_partitioned_master_pauses_its_writes_and_resumes_when_a_replica_is_back(
        procs: Procs, pushes: ReportSink, tmp_path: Path) -> None:
    agent, last = _cluster_and_agent(procs, pushes, tmp_path, local_fence=True)
    try:
        assert last()["redis"]["fenced_locally"] is False

        with raw_client(MASTER_IP, PORT, PASSWORD, 2.0) as app:  # a client connected before the fence
            my_id = app.execute_command("CLIENT", "ID")
            _freeze(procs)
            wait_until(lambda: last()["redis"]["fenced_locally"], 30, "the agent to fence its master")
            with pytest.raises(RedisTimeout):  # paused: the write waits past its timeout (not yet NOREPLICAS:
                _write()  # the replica's lag is below min-replicas-max-lag's 10 s)
            listed = str(_command("CLIENT", "LIST"))
            assert f"id={my_id} " not in listed  # disconnected, to ask Sentinel again
        # still alone: the pause is renewed every cycle
        assert last()["redis"]["fenced_locally"] is True
        with pytest.raises(RedisTimeout):
            _write()

        procs.signal(REPLICA_IP, signal.SIGCONT)
        wait_until(lambda: last()["redis"]["fenced_locally"] is False, 30, "the fence to end")
        assert _write() == "OK"
        assert last()["redis"]["fenced_locally"] is False
    finally:
        agent.close()
        _thaw(procs)


def test_without_the_fence_the_same_partition_still_takes_writes(
        procs: Procs, pushes: ReportSink, tmp_path: Path) -> None:
    """The window the fence closes: alone for down-after by the rule, the master still says OK (until
    min-replicas-max-lag), and the report says nothing of a fence."""
    agent, last = _cluster_and_agent(procs, pushes, tmp_path, local_fence=False)
    try:
        _freeze(procs)

        def alone_for_down_after() -> bool:
            report = agent.collect()
            silence = silence_ms(report.redis, report.sentinel, NAME)
            return silence is not None and silence >= DOWN_AFTER_MS
        wait_until(alone_for_down_after, 30, "the master alone for down-after by the rule")
        assert _write() == "OK"
        assert last()["redis"]["fenced_locally"] is None
    finally:
        agent.close()
        _thaw(procs)


def _command(*args: str) -> object:
    with raw_client(MASTER_IP, PORT, PASSWORD, 2.0) as client:
        return client.execute_command(*args)
