"""The controller's periodic work on its APScheduler scheduler (controller/app/jobs.py, issue 19): a wake
brings the next run forward but never closer than the min gap after the previous run began, a wake during
a run gives exactly one more run after it, a slow run is neither overlapped nor followed by a burst; the
watch cycle, the cloud poll and the outbox's purge are such jobs, `Parts.close()` stops them all, and
`GET /healthz` names a job whose runs fail (logged once per streak) and a scheduler that stopped.

Real parts: APScheduler's BackgroundScheduler and its worker threads, a real state file, the service's
own wiring (`assemble`), the API in process (TestClient). The cloud is a stand-in (its poll is the job under
test, not DigitalOcean). No fixed sleeps: every wait polls with a deadline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_JOB_MAX_INSTANCES
from fastapi.testclient import TestClient
from structlog.testing import capture_logs

from controller.adapters.cloud import Droplet
from controller.adapters.notify import WebhookNotifier
from controller.adapters.outbox import PURGE_EVERY_S, Outbox
from controller.adapters.storage.db import Database
from controller.adapters.storage.incidents import IncidentLog
from controller.app.jobs import Periodic, new_scheduler
from controller.app.service import assemble
from controller.app.watch import Watcher
from controller.config import ClusterConfig, ControllerConfig
from tests.factories import scenario_view
from tests.helpers import wait_until
from tests.test_outbox import event
from tests.test_watch_restart import FakeFleet, Sink

LONG_S = 3600.0  # an interval no test waits out: a run before it was brought forward


@pytest.fixture
def scheduler() -> Iterator[Any]:
    s = new_scheduler()
    s.start()
    try:
        yield s
    finally:
        if s.running:
            s.shutdown(wait=True)


class Runs:
    """A job's body that counts its runs, records when each began, and can be held (a slow run)."""

    def __init__(self) -> None:
        self.started: list[datetime] = []
        self.finished = 0
        self.running = 0
        self.most_at_once = 0
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self.started.append(datetime.now(timezone.utc))
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            assert self.gate.wait(30), "the test never let the run end"
        finally:
            with self._lock:
                self.running -= 1
                self.finished += 1


def periodic(scheduler: Any, runs: Runs, job_id: str = "test-job") -> Periodic:
    return Periodic(scheduler, job_id, runs, what="test job", failed_event="test.failed",
                    recovered_event="test.recovered")


def next_run(job: Periodic) -> datetime:
    at: datetime = job.scheduler.get_job(job.job_id).next_run_time
    return at


def test_a_wake_brings_the_next_run_forward_but_never_closer_than_the_min_gap(scheduler: Any) -> None:
    runs = Runs()
    job = periodic(scheduler, runs)
    job.start(LONG_S, min_gap_s=600)
    try:
        assert next_run(job) > datetime.now(timezone.utc) + timedelta(seconds=LONG_S - 60)  # on its interval
        job.wake()
        wait_until(lambda: runs.finished == 1, 10, "the woken run")
        first = runs.started[0]
        # the interval starts again from the woken run (from its scheduled time, a moment before it began)
        assert next_run(job) >= first + timedelta(seconds=LONG_S - 1)
        job.wake()  # a second change: the next run comes forward, but to 600 s after the first began
        gap = next_run(job) - first
        assert timedelta(seconds=599) <= gap <= timedelta(seconds=600), gap
        assert runs.finished == 1
    finally:
        job.close()


def test_a_wake_during_a_run_gives_exactly_one_more_run_after_it(scheduler: Any) -> None:
    runs = Runs()
    job = periodic(scheduler, runs)
    job.start(LONG_S)
    try:
        runs.gate.clear()  # the first run is slow
        job.wake()
        wait_until(lambda: runs.running == 1, 10, "the first run under way")
        for _ in range(3):
            job.wake()  # three changes while it runs
        runs.gate.set()
        wait_until(lambda: runs.finished == 2, 10, "one more run after the slow one")
        wait_until(lambda: job.problem() is None and not job._running, 10, "the second run counted finished")
        assert next_run(job) > datetime.now(timezone.utc) + timedelta(seconds=LONG_S - 60)  # no third one due
        assert runs.finished == 2 and runs.most_at_once == 1
    finally:
        job.close()


def test_a_slow_run_is_neither_overlapped_nor_followed_by_the_ticks_it_spanned(scheduler: Any) -> None:
    runs = Runs()
    refused: list[datetime] = []
    ran: list[datetime] = []
    scheduler.add_listener(lambda e: refused.extend(e.scheduled_run_times) if e.job_id == "test-job" else None,
                           EVENT_JOB_MAX_INSTANCES)
    scheduler.add_listener(lambda e: ran.append(e.scheduled_run_time) if e.job_id == "test-job" else None,
                           EVENT_JOB_EXECUTED)
    job = periodic(scheduler, runs)
    runs.gate.clear()
    job.start(0.05)
    try:
        wait_until(lambda: len(refused) >= 3, 10, "ticks refused while the first run is under way")
        released = datetime.now(timezone.utc)
        runs.gate.set()
        wait_until(lambda: len(ran) >= 3, 10, "runs on the interval again")
        job.close()
        assert runs.most_at_once == 1
        assert not set(refused) & set(ran), "a tick refused during the slow run was run later"
        # the ticks the slow run spanned are not queued behind it: at most the one the scheduler was
        # about to take as the run ended runs after it
        spanned = [t for t in ran[1:] if t < released]
        assert len(spanned) <= 1, f"a burst of {len(spanned)} runs for ticks during the slow run"
        assert ran == sorted(set(ran))
    finally:
        job.close()


def test_a_failing_job_is_logged_once_per_streak_and_named_until_it_recovers(scheduler: Any) -> None:
    failing = threading.Event()
    failing.set()
    calls: list[float] = []

    def body() -> None:
        calls.append(time.monotonic())
        if failing.is_set():
            raise RuntimeError("the body's own words, which may hold data")

    job = Periodic(scheduler, "flaky", body, what="flaky job", failed_event="flaky.failed",
                   recovered_event="flaky.recovered")
    with capture_logs() as logs:
        job.start(0.02)
        try:
            wait_until(lambda: len(calls) >= 4, 10, "several failing runs")
            assert job.problem() == "flaky job failing (RuntimeError)"
            failing.clear()
            wait_until(lambda: job.problem() is None, 10, "a good run")
        finally:
            job.close()
    events = [e["event"] for e in logs if e["event"].startswith("flaky.")]
    assert events == ["flaky.failed", "flaky.recovered"]


def test_the_watch_cycle_runs_at_once_when_woken(tmp_path: Path) -> None:
    view = scenario_view("healthy")
    db = Database(tmp_path / "state.db")
    watcher = Watcher(FakeFleet(view), IncidentLog(db), Sink(), clock=lambda: view.now)  # type: ignore[arg-type]
    try:
        watcher.start(LONG_S)
        assert watcher._last_sentence == {}
        watcher.wake()
        wait_until(lambda: watcher._last_sentence.get(view.name), 10, "a cycle before its interval")
        assert watcher.problems() == []
    finally:
        watcher.close()
        db.close()
    assert not [t.name for t in threading.enumerate() if t.name.startswith("job-watch-cycle")]


def test_the_outbox_purges_at_start_then_hourly(tmp_path: Path, scheduler: Any) -> None:
    db = Database(tmp_path / "state.db")
    clock = [1000.0]
    outbox = Outbox(db, [WebhookNotifier("http://127.0.0.1:9/unused")], lambda: clock[0], retention_s=60,
                    scheduler=scheduler)
    try:
        outbox.enqueue([event(1)])
        with db.transaction() as tx:  # delivered long ago (a delivery itself is test_outbox.py's matter)
            tx.execute("UPDATE alert_outbox SET delivered_at = 1000.0")
        clock[0] = 1000.0 + 61
        outbox.start()
        wait_until(lambda: db.read("SELECT COUNT(*) FROM alert_outbox") == [(0,)], 10, "the purge at start")
        job = scheduler.get_job("outbox-purge")
        assert job.trigger.interval == timedelta(seconds=PURGE_EVERY_S)
        assert outbox.problem() is None
    finally:
        outbox.close()
        db.close()
    assert scheduler.get_job("outbox-purge") is None


class FlakyCloud:
    """DigitalOcean as the cloud poll sees it: lists the cluster's droplets, or raises what no adapter
    should (a bug, not a ProviderError) while `broken` is set."""

    def __init__(self) -> None:
        self.broken = threading.Event()
        self.calls = 0

    def list_droplets(self, tag: str | None = None) -> list[Droplet]:
        self.calls += 1
        if self.broken.is_set():
            raise RuntimeError("a bug in the adapter")
        return []


def test_healthz_names_a_failing_job_and_a_stopped_scheduler_and_close_stops_every_job(tmp_path: Path) -> None:
    config = ControllerConfig(state_path=str(tmp_path / "state.db"), cloud_poll_s=0.02,
                              clusters={"sandbox": ClusterConfig(report_interval_s=1.0)})
    cloud = FlakyCloud()
    parts = assemble(config, cloud=cloud)  # type: ignore[arg-type]
    closed = False
    try:
        parts.start()
        client = TestClient(parts.app)
        assert {j.id for j in parts.scheduler.get_jobs()} == {"watch-cycle", "cloud-poll", "outbox-purge"}
        wait_until(lambda: parts.watcher._last_sentence.get("sandbox"), 10, "a watch cycle on the scheduler")
        assert client.get("/healthz").json()["status"] == "ok"

        with capture_logs() as logs:
            cloud.broken.set()
            calls = cloud.calls
            wait_until(lambda: cloud.calls >= calls + 4, 10, "several failing polls")
            health = client.get("/healthz").json()
            assert health["status"] == "degraded"
            assert "cloud poll failing (RuntimeError)" in health["reasons"], health
            cloud.broken.clear()
            wait_until(lambda: client.get("/healthz").json()["reasons"] == [], 10, "the poll to recover")
        assert [e["event"] for e in logs if e["event"].startswith("cloud.poll")] == \
            ["cloud.poll_crashed", "cloud.poll_recovered"]

        parts.scheduler.shutdown(wait=True)  # as if the scheduler had died
        reasons = client.get("/healthz").json()["reasons"]
        assert "watch cycle is not running: its scheduler is stopped" in reasons, reasons
        assert "cloud poll is not running: its scheduler is stopped" in reasons, reasons
        assert any(r.startswith("alert outbox purge is not running") for r in reasons), reasons
        parts.close()
        closed = True
    finally:
        if not closed:
            parts.close()
    assert parts.scheduler.get_jobs() == []
    left = [t.name for t in threading.enumerate()
            if t.name.startswith(("job-", "APScheduler", "alert-outbox", "heal-worker", "state-writer"))]
    assert left == []


def test_close_stops_every_job_and_waits_for_a_cycle_under_way(tmp_path: Path) -> None:
    config = ControllerConfig(state_path=str(tmp_path / "state.db"),
                              clusters={"sandbox": ClusterConfig(report_interval_s=1.0)})
    parts = assemble(config)
    inside = threading.Event()
    release = threading.Event()
    ended: list[bool] = []
    real_cycle = parts.watcher.run_cycle

    def slow_cycle(now: float) -> str:
        inside.set()
        release.wait(30)
        sentence = real_cycle(now)
        ended.append(True)
        return sentence

    parts.watcher.run_cycle = slow_cycle  # type: ignore[method-assign]
    parts.start()
    closer = threading.Thread(target=parts.close)
    try:
        wait_until(inside.is_set, 10, "a cycle under way")
        closer.start()
        wait_until(lambda: parts.scheduler.get_job("watch-cycle") is None, 10, "the cycle's job removed")
        assert closer.is_alive() and not ended  # close() waits for the cycle
        release.set()
        closer.join(30)
        assert not closer.is_alive() and ended == [True]
    finally:
        release.set()
        if closer.ident is None:
            parts.close()
        closer.join(30)
    assert not parts.scheduler.running and parts.scheduler.get_jobs() == []
