"""The agent's process watch: a redis-server that exits between two reports is reported at once.

Real parts: a real redis-server on 127.0.0.1 (a free port), the agent's real collectors, and real HTTP
pushes to a small local receiver standing in for the controller. The redis-server is killed in teardown
if a test fails before killing it.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.collect_host import wait_exit
from agent.config import AgentConfig, AgentSecrets
from agent.runtime import Agent
from tests.helpers import ReportSink, free_port, wait_until

if shutil.which("redis-server") is None:
    pytest.skip("redis-server is not on PATH (scripts/test installs it)", allow_module_level=True)

PASSWORD = "watch-test-pw-41c2"


@pytest.fixture
def pushes() -> Iterator[ReportSink]:
    p = ReportSink()
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    port = free_port()
    pidfile = tmp_path / "redis.pid"
    conf = tmp_path / "redis.conf"
    conf.write_text(f"bind 127.0.0.1\nport {port}\ndir {tmp_path}\nlogfile {tmp_path}/redis.log\n"
                    f"pidfile {pidfile}\nsave ''\nappendonly no\nrequirepass {PASSWORD}\n")
    proc = subprocess.Popen(["redis-server", str(conf)], cwd=tmp_path)
    try:
        wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, "redis-server's pidfile")
        yield proc, port, pidfile
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_a_redis_exit_between_reports_is_reported_at_once(
        redis_server: tuple[subprocess.Popen[bytes], int, Path], pushes: ReportSink, tmp_path: Path) -> None:
    proc, port, pidfile = redis_server
    config = AgentConfig(cluster="c", node="n1", address="127.0.0.1", controller_url=pushes.url,
                         redis_port=port, sentinel_port=free_port(), redis_pidfile=str(pidfile),
                         sentinel_pidfile=str(tmp_path / "no-sentinel.pid"), redis_data_dir=str(tmp_path),
                         report_interval_s=3600)
    agent = Agent(config, AgentSecrets(PASSWORD, None, b"k" * 32))
    try:
        wait_until(lambda: "redis up" in agent.run_cycle(), 10, "a first report with redis up")
        count = len(pushes.reports)
        assert agent.watch() is None  # still running: nothing to say between reports
        assert len(pushes.reports) == count

        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        said = wait_until(agent.watch, 10, "the watch noticing the exit")
        assert "redis down" in said
        assert len(pushes.reports) == count + 1
        last = pushes.reports[-1]
        assert last["redis"]["reachable"] is False
        assert last["host"]["redis_process"]["alive"] is False
        assert agent.watch() is None  # said once: the next report comes on the schedule
        assert len(pushes.reports) == count + 1
    finally:
        agent.close()


def test_wait_exit_returns_when_the_process_exits_and_not_before() -> None:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        assert wait_exit(proc.pid, 0.05) is False  # still running at the timeout
        waiter: list[bool] = []
        t = threading.Thread(target=lambda: waiter.append(wait_exit(proc.pid, 30)))
        t.start()
        proc.kill()
        t.join(timeout=30)
        assert waiter == [True]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
    assert wait_exit(proc.pid, 0.05) is True  # reaped: no such process
