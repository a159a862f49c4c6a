"""The agent's process: what it loads, how it schedules its cycle, and the shape of its log lines.

Layer: tests. The first test runs `redwarden-agent run` for real in a subprocess (against a local stand-in
for the controller's POST /v1/reports and closed Redis ports), stops it with SIGTERM once reports have
arrived, and reads the modules it had loaded: its own libraries (requests, structlog, APScheduler) are
there, and none of the controller's, the console's or the sandbox's code and libraries. The others test the
schedule (a real APScheduler scheduler: a slow cycle skips the runs it overlaps, never queues them) and the
log lines (structlog, configured by protocol/logs.py). Memory and CPU figures live in bench/bench_agent.py.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import structlog
from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_JOB_MAX_INSTANCES, JobEvent, JobExecutionEvent

from agent.runtime import add_every, new_scheduler
from protocol.logs import configure_logging
from tests.helpers import ReportSink, free_port, wait_until

# What the agent's process must not load: the other programs' code and the controller's web stack.
NOT_IN_THE_AGENT = ("sandbox", "controller", "console", "fastapi", "pydantic", "uvicorn", "starlette", "httpx")
# The libraries the agent runs on (redis-py too, once its Redis client is on it).
IN_THE_AGENT = ("requests", "structlog", "apscheduler")

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


def test_the_agents_run_loads_its_libraries_and_nothing_of_the_other_programs(
        controller: ReportSink, tmp_path: Path) -> None:
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
        wait_until(lambda: len(controller.reports) >= 3 or proc.poll() is not None, 30, "reports from the agent")
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, err
    assert controller.reports[0]["redis"]["reachable"] is False  # it really collected (from closed ports)
    seqs = [r["seq"] for r in controller.reports]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # one cycle at a time, in order
    lines = [json.loads(line) for line in err.splitlines()]  # every line on stderr is one JSON object
    assert all({"event", "level", "timestamp"} <= set(line) for line in lines), err
    assert lines[0]["event"] == "agent.started"
    assert lines[-1]["event"] == "agent.stopped"  # it left through run_forever's own exit
    loaded = json.loads(out.split("MODULES ", 1)[1])
    tops = {name.split(".")[0] for name in loaded}
    assert sorted(tops & set(NOT_IN_THE_AGENT)) == []
    assert sorted(tops & set(IN_THE_AGENT)) == sorted(IN_THE_AGENT)
    assert "agent.runtime" in loaded and "agent.push" in loaded


def test_a_slow_cycle_skips_the_runs_it_overlaps_rather_than_queueing_them() -> None:
    interval_s = 0.05
    release = threading.Event()
    running, most_at_once, calls = [0], [0], [0]
    lock = threading.Lock()
    skipped: list[JobEvent] = []
    executed: list[JobExecutionEvent] = []

    def cycle() -> None:
        with lock:
            calls[0] += 1
            first = calls[0] == 1
            running[0] += 1
            most_at_once[0] = max(most_at_once[0], running[0])
        try:
            if first:  # the slow one: a server timing out, say
                release.wait(30)
        finally:
            with lock:
                running[0] -= 1

    def on_event(event: JobEvent) -> None:
        (executed if isinstance(event, JobExecutionEvent) else skipped).append(event)

    scheduler = new_scheduler()
    scheduler.add_listener(on_event, EVENT_JOB_EXECUTED | EVENT_JOB_MAX_INSTANCES)
    add_every(scheduler, "report", interval_s, cycle, "cycle.failed")
    scheduler.start()
    try:
        wait_until(lambda: len(skipped) >= 5, 30, "runs due while the slow cycle runs")
        released_at = datetime.now(timezone.utc)
        release.set()
        wait_until(lambda: len(executed) >= 4, 30, "the cycles after the slow one")
    finally:
        release.set()
        scheduler.shutdown(wait=True)
    assert most_at_once[0] == 1
    # the slow run was due before the release; every run after it was due at most one interval before the
    # release: none of the runs due while it ran was kept for later
    due = [e.scheduled_run_time for e in executed]
    assert due[0] < released_at - timedelta(seconds=interval_s)
    assert all(d >= released_at - timedelta(seconds=interval_s) for d in due[1:]), (released_at, due)
    assert due == sorted(due)


def test_a_failing_cycle_is_logged_and_the_next_one_runs() -> None:
    calls = [0]

    def cycle() -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("boom")

    scheduler = new_scheduler()
    add_every(scheduler, "report", 0.05, cycle, "cycle.failed")
    scheduler.start()
    try:
        wait_until(lambda: calls[0] >= 3, 30, "cycles after the failing one")
    finally:
        scheduler.shutdown(wait=True)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_the_log_lines_keys_then_event_level_timestamp_and_the_traceback() -> None:
    out = io.StringIO()
    configure_logging("json", "info", stream=out, libraries_level="error")
    log = structlog.get_logger("redwarden.agent")
    log.debug("cycle.skipped")  # below the level: dropped
    log.warning("push.failed", seq=3, status=None, error="HTTP 503")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("cycle.failed")
    logging.getLogger("apscheduler.scheduler").warning("Execution of job skipped")  # a library's: below its level
    logging.getLogger("apscheduler.scheduler").error("Error submitting job")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 3, out.getvalue()
    first = lines[0]
    assert list(first) == ["seq", "status", "error", "event", "level", "timestamp"]
    assert first["event"] == "push.failed" and first["level"] == "warning" and first["status"] is None
    assert first["timestamp"].endswith("Z") and datetime.fromisoformat(first["timestamp"][:-1])
    assert lines[1]["level"] == "error" and "RuntimeError: boom" in lines[1]["exception"]
    assert lines[2]["event"] == "Error submitting job" and lines[2]["level"] == "error"
    assert lines[2]["logger"] == "apscheduler.scheduler" and lines[2]["timestamp"].endswith("Z")

    console = io.StringIO()
    configure_logging("console", "debug", stream=console)
    structlog.get_logger("redwarden.agent").debug("cycle.done", seq=4)
    text = console.getvalue()
    assert "[debug" in text and "cycle.done" in text and "seq=4" in text
    with pytest.raises(ValueError):
        configure_logging("json", "loud")
    with pytest.raises(ValueError):
        configure_logging("xml", "info")
