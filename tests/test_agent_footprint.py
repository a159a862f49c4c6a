"""The agent stays light (issue #9): what its process loads, and the small parts that replaced libraries.

Layer: tests. The first test runs `redwarden-agent run` for real in a subprocess (against a local stand-in
for the controller's POST /v1/reports and closed Redis ports), stops it with SIGTERM once a report has
arrived, and reads the modules it had loaded: none of the libraries it does not use may be among them.
The others test the agent's own scheduler loop (`run_every`, on a fake clock) and its log lines
(`agent.log`). Memory and CPU figures live in bench/bench_agent.py, not here.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import log as agent_log
from agent.runtime import run_every
from tests.helpers import ReportSink, free_port, wait_until

# Modules the agent's process must not load: event loops and observability it does not use, charset
# detection, the libraries it replaced with its own small clients, and every other program's code.
NOT_IN_THE_AGENT = (
    "asyncio", "opentelemetry", "charset_normalizer", "chardet",
    "redis", "requests", "urllib3", "structlog", "apscheduler",
    "sandbox", "controller", "console", "fastapi", "pydantic", "uvicorn", "starlette", "httpx",
)

_RUN = """
import atexit, json, sys
atexit.register(lambda: print("MODULES " + json.dumps(sorted(sys.modules)), flush=True))
from agent.cli import main
sys.exit(main(["run", "--config", sys.argv[1]]))
"""


@pytest.fixture
def controller() -> Iterator[ReportSink]:
    c = ReportSink()
    try:
        yield c
    finally:
        c.close()


def test_the_agents_run_loads_none_of_the_libraries_it_does_not_use(controller: ReportSink, tmp_path: Path) -> None:
    conf = tmp_path / "agent.toml"
    conf.write_text(
        f'cluster = "c"\nnode = "n1"\naddress = "127.0.0.1"\ncontroller_url = "{controller.url}"\n'
        f"redis_port = {free_port()}\nsentinel_port = {free_port()}\ntimeout_s = 0.5\n"
        f'redis_pidfile = "{tmp_path}/redis.pid"\nsentinel_pidfile = "{tmp_path}/sentinel.pid"\n'
        f'redis_data_dir = "{tmp_path}"\nservices = "process"\nreport_interval_s = 0.2\n'
    )
    env = {**os.environ, "REDWARDEN_AGENT_NODE_KEY": "ab" * 32}
    env.pop("REDWARDEN_DROPLET_ROOT", None)
    proc = subprocess.Popen([sys.executable, "-c", _RUN, str(conf)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: len(controller.reports) >= 2 or proc.poll() is not None, 30, "two reports from the agent")
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, err
    assert controller.reports[0]["redis"]["reachable"] is False  # it really collected (from closed ports)
    assert '"event": "agent.stopped"' in err  # and left through run_forever's own exit
    loaded = json.loads(out.split("MODULES ", 1)[1])
    tops = {name.split(".")[0] for name in loaded}
    assert sorted(tops & set(NOT_IN_THE_AGENT)) == []
    assert "agent.runtime" in loaded and "agent.push" in loaded


def test_run_every_keeps_its_grid_and_skips_what_a_slow_cycle_overlapped() -> None:
    now = [100.0]
    durations = iter([0.2, 2.5, 0.1, 0.9999, 0.3])
    started: list[float] = []
    waits: list[float] = []

    def job() -> None:
        started.append(round(now[0] - 100.0, 4))
        now[0] += next(durations)

    def wait(timeout_s: float) -> bool:
        waits.append(round(timeout_s, 4))
        now[0] += timeout_s
        return len(waits) == 5

    run_every(1.0, job, wait, clock=lambda: now[0])
    # 0 -> 1; the 2.5 s cycle from 1 overlaps 2 and 3: skipped, next at 4; never two cycles back to back
    assert started == [0.0, 1.0, 4.0, 5.0, 6.0]
    assert waits == [0.8, 0.5, 0.9, 0.0001, 0.7]


def test_the_agents_log_lines_have_the_controllers_shape() -> None:
    out = io.StringIO()
    log = agent_log.get_logger("redwarden.agent")
    agent_log.configure("json", "info", stream=out)
    try:
        log.debug("cycle.skipped")  # below the level: dropped
        log.warning("push.failed", seq=3, status=None, error="HTTP 503")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("cycle.failed")
        agent_log.configure("console", "debug", stream=out)
        log.debug("cycle.done", seq=4)
    finally:
        agent_log.configure()
    lines = out.getvalue().splitlines()
    first = json.loads(lines[0])
    assert list(first) == ["seq", "status", "error", "event", "level", "timestamp"]
    assert first["event"] == "push.failed" and first["level"] == "warning" and first["status"] is None
    assert first["timestamp"].endswith("Z")
    failed = json.loads(lines[1])
    assert failed["level"] == "error" and "RuntimeError: boom" in failed["exception"]
    assert "[debug" in lines[2] and "cycle.done" in lines[2] and "seq=4" in lines[2]
    assert len(lines) == 3
    with pytest.raises(ValueError):
        agent_log.configure("json", "loud")
