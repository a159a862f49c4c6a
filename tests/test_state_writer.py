"""The state writer under a failing disk (issue #11): a failed flush loses no report, is retried with capped
backoff, is logged once per failure streak and once on recovery, and `GET /healthz` says "degraded" while it
lasts. Once over a real full file system (a small tmpfs holding the state file), once over an injected
failing `Database`; and the other writes of the hot path (incidents, the heal log) fail visibly."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from structlog.testing import capture_logs

from controller.adapters.cloud import ActionResult
from controller.adapters.cloud import Droplet as CloudDroplet
from controller.adapters.storage.db import Database
from controller.adapters.storage.reports import ReportStore
from controller.app.executor import Executor, UnrecordedAction
from controller.app.service import assemble
from controller.app.watch import Watcher
from controller.config import ClusterConfig, ControllerConfig
from controller.core.incidents import Incident
from controller.core.planner import Droplet, HealSnapshot, HealState, Plan, Reboot
from protocol.report import Report
from protocol.signing import HEADER_CLUSTER, HEADER_NODE, HEADER_SIGNATURE, HEADER_TIMESTAMP, sign_report
from tests.factories import FIXTURES, NODES, load_report, scenario_view, without_node
from tests.helpers import wait_until
from tests.test_watch_restart import FakeFleet, Sink

FULL = "database or disk is full"


# -- over an injected failing Database -------------------------------------------------------------


class FailingDatabase(Database):
    """A real state file whose writes fail like a full disk while `full` is set; `during_write` runs inside
    the failing write (a report that arrives while the writer is busy)."""

    def __init__(self, path: Path) -> None:
        self.full = False
        self.during_write: list[Any] = []
        super().__init__(path)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        if self.full:
            for hook in self.during_write:
                hook()
            self.during_write.clear()
            raise sqlite3.OperationalError(FULL)
        with super().transaction() as cur:
            yield cur


def report_of(node: str, replica_priority: int) -> Report:
    """The healthy recorded report of `node`, its replica_priority set (to tell two bodies of one node apart)."""
    r = load_report("healthy", node)
    return dataclasses.replace(r, redis=dataclasses.replace(r.redis, replica_priority=replica_priority))


def stored(db: Database) -> dict[str, int]:
    return {node: json.loads(raw)["redis"]["replica_priority"]
            for node, raw in db.read("SELECT node, report FROM node_reports")}


@pytest.fixture
def failing_db(tmp_path: Path) -> Iterator[FailingDatabase]:
    db = FailingDatabase(tmp_path / "state.db")
    yield db
    db.close()


def test_a_failed_flush_keeps_its_batch_and_a_newer_body_wins(failing_db: FailingDatabase) -> None:
    clock = [100.0]
    store = ReportStore(failing_db, flush_interval_s=1.0, max_backoff_s=8.0, clock=lambda: clock[0])
    store.put_report(report_of("redis-1", 1), 1.0)
    store.put_report(report_of("redis-2", 2), 1.0)
    failing_db.full = True
    # redis-1 reports again while the failing write is under way: its newer body must not be overwritten
    failing_db.during_write.append(lambda: store.put_report(report_of("redis-1", 11), 2.0))
    with capture_logs() as logs:
        assert store.flush_supervised() is False
        clock[0] += 5
        assert store.flush_supervised() is False
        assert store.flush_supervised() is False
    assert [e["event"] for e in logs] == ["state.write_failed"]  # once per streak, not every attempt
    assert logs[0]["error"] == f"OperationalError: {FULL}" and logs[0]["pending"] == 2
    assert store.pending() == 2 and stored(failing_db) == {}
    problem = store.problem()
    assert problem is not None and "state writer failing for 5 s (3 attempt(s)" in problem and FULL in problem
    assert store.next_wait_s() == 8.0  # 1 s doubled per failure, capped

    failing_db.full = False
    with capture_logs() as logs:
        assert store.flush_supervised() is True
    assert [e["event"] for e in logs] == ["state.write_recovered"] and logs[0]["attempts"] == 3
    assert stored(failing_db) == {"redis-1": 11, "redis-2": 2}
    assert store.problem() is None and store.pending() == 0 and store.next_wait_s() == 1.0


def test_a_forgotten_node_is_not_brought_back_by_a_failed_flush(failing_db: FailingDatabase) -> None:
    store = ReportStore(failing_db)
    store.put_report(report_of("redis-3", 3), 1.0)
    failing_db.full = True
    failing_db.during_write.append(lambda: store._latest.pop(("sandbox", "redis-3")))  # forget() mid-write
    assert store.flush_supervised() is False
    failing_db.full = False
    assert store.pending() == 0 and store.flush_supervised() and stored(failing_db) == {}


def test_the_writer_thread_retries_until_the_disk_recovers_and_survives_a_crashing_pass(
        failing_db: FailingDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ReportStore(failing_db, flush_interval_s=0.02, max_backoff_s=0.1)
    crashed = threading.Event()
    real = store.flush_supervised

    def crash_once() -> bool:
        if not crashed.is_set():
            crashed.set()
            raise RuntimeError("a bug in one pass")
        return real()

    monkeypatch.setattr(store, "flush_supervised", crash_once)
    failing_db.full = True
    store.start()
    try:
        store.put_report(report_of("redis-1", 7), 1.0)
        wait_until(lambda: store.problem(), 5, "the writer to report its failure")
        failing_db.full = False
        wait_until(lambda: stored(failing_db) == {"redis-1": 7}, 5, "the kept batch to be written")
        wait_until(lambda: store.problem() is None, 5, "the writer to recover")
        assert crashed.is_set() and store._writer is not None and store._writer.is_alive()
    finally:
        store.close()
    assert store._writer is not None and not store._writer.is_alive()


def test_a_writer_thread_that_ended_is_named_by_health(failing_db: FailingDatabase) -> None:
    store = ReportStore(failing_db)
    store._writer = threading.Thread(target=lambda: None)
    store._writer.start()
    store._writer.join()
    assert store.problem() == ("state writer thread is not running: node reports are no longer written to the "
                               "state file")
    store.close()  # a stopped store is not a problem
    assert store.problem() is None


class FlakyIncidentLog:
    def __init__(self) -> None:
        self.fail = False
        self.saved: list[Incident] = []

    def load_active(self) -> list[Incident]:
        return []

    def save(self, incidents: Sequence[Incident]) -> None:
        if self.fail:
            raise sqlite3.OperationalError(FULL)
        self.saved.extend(incidents)


def test_an_incident_write_that_fails_is_visible_retried_and_never_alerts_twice() -> None:
    view = scenario_view("healthy")
    incidents, sink = FlakyIncidentLog(), Sink()
    watcher = Watcher(FakeFleet(view), incidents, sink, clock=lambda: view.now)  # type: ignore[arg-type]
    watcher.run_cycle(view.now)  # arms
    watcher.fleet = FakeFleet(without_node(view, "redis-3"))  # type: ignore[assignment]
    incidents.fail = True
    with capture_logs() as logs:
        for dt in (1.0, 20.0, 40.0, 60.0):
            watcher.run_cycle(view.now + dt)
    triggers = [e for e in sink.events if e.action == "trigger"]
    assert triggers and len(triggers) == len({e.incident_key for e in triggers})  # each alerted once
    assert [e["event"] for e in logs if e["event"].startswith("cycle.cluster")] == ["cycle.cluster_failed"]
    assert watcher.problems() == [f"watch cycle failing for cluster sandbox (OperationalError: {FULL})"]
    incidents.fail = False
    watcher.run_cycle(view.now + 61)
    assert watcher.problems() == []
    assert {i.key for i in incidents.saved} == {e.incident_key for e in triggers}  # written once the disk is back


# -- over a real full file system --------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of its own (we run as root); skipped where mounting is not permitted."""
    where = tmp_path / "small"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(directory: Path) -> Path:
    """A file that takes every free byte of `directory`'s file system."""
    filler = directory / "filler"
    chunk = b"\0" * 4096
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    with filler.open("ab", buffering=0) as f, contextlib.suppress(OSError):  # the last partial block
        while True:
            f.write(b"\0")
    return filler


def signed(key: bytes, node: str, body: bytes) -> dict[str, str]:
    ts = f"{time.time():.6f}"
    return {HEADER_CLUSTER: "sandbox", HEADER_NODE: node, HEADER_TIMESTAMP: ts,
            HEADER_SIGNATURE: sign_report(key, ts, "sandbox", node, body)}


def test_on_a_full_disk_reports_are_kept_healthz_degrades_and_both_recover(small_fs: Path) -> None:
    config = ControllerConfig(state_path=str(small_fs / "state.db"),
                              clusters={"sandbox": ClusterConfig(report_interval_s=1.0)})
    parts = assemble(config)
    try:
        client = TestClient(parts.app)
        keys = {n: parts.credentials.issue("sandbox", n, time.time()) for n in NODES}
        assert client.get("/healthz").json()["status"] == "ok"
        parts.db.read("PRAGMA wal_checkpoint(TRUNCATE)")  # every later write needs new pages
        filler = fill(small_fs)

        bodies = {n: (FIXTURES / f"healthy-{n}.json").read_bytes() for n in NODES}
        for node, body in bodies.items():
            answer = client.post("/v1/reports", content=body, headers=signed(keys[node], node, body))
            assert answer.status_code == 200, answer.text  # ingest goes on from memory
        with capture_logs() as logs:
            assert parts.reports.flush_supervised() is False
            assert parts.reports.flush_supervised() is False
        assert [e["event"] for e in logs] == ["state.write_failed"] and FULL in logs[0]["error"]
        health = client.get("/healthz")
        assert health.status_code == 200
        body = health.json()
        assert body["status"] == "degraded" and body["ok"] is True and body["clusters"] == 1
        assert any(r.startswith("state writer failing") and FULL in r for r in body["reasons"]), body
        assert parts.db.read("SELECT COUNT(*) FROM node_reports") == [(0,)]
        # the other writes of the hot path fail loudly, never silently
        with pytest.raises(sqlite3.OperationalError, match="full"):
            parts.heal_log.started("sandbox", "redis-2", "RestartService", "restart redis on redis-2", "test",
                                   time.time())

        filler.unlink()
        wait_until(lambda: parts.reports.flush_supervised(), 10, "the kept batch to be written")
        assert sorted(r[0] for r in parts.db.read("SELECT node FROM node_reports")) == list(NODES)
        raw = dict(parts.db.read("SELECT node, report FROM node_reports"))
        assert all(json.loads(raw[n]) == json.loads(bodies[n]) for n in NODES)
        assert client.get("/healthz").json() == {**body, "status": "ok", "reasons": []}
    finally:
        parts.outbox.close()
        parts.reports.close()
        parts.db.close()


class FullAuditLog:
    """The heal log on a full disk: `started` works or not as told; every later write fails."""

    def __init__(self, start_ok: bool) -> None:
        self.start_ok = start_ok

    def started(self, *args: Any, **kwargs: Any) -> int:
        if not self.start_ok:
            raise sqlite3.OperationalError(FULL)
        return 1

    def finished(self, *args: Any, **kwargs: Any) -> None:
        raise sqlite3.OperationalError(FULL)

    def save(self, state: HealState) -> None:
        raise sqlite3.OperationalError(FULL)


class RebootingCloud:
    def __init__(self) -> None:
        self.rebooted: list[int] = []

    def get_droplet(self, droplet_id: int) -> CloudDroplet:
        return CloudDroplet(103, "redis-3", "active", "nyc3", "s", "i", None, ("redwarden-sandbox",), "127.0.0.5", None,
                            datetime.now(timezone.utc))

    def reboot(self, droplet_id: int) -> ActionResult:
        self.rebooted.append(droplet_id)
        return ActionResult(7, "reboot", "in-progress", droplet_id, "droplet", None, None)


def test_an_action_whose_audit_cannot_be_written_is_not_done_or_its_result_is_kept_in_memory() -> None:
    view = scenario_view("healthy")
    snapshot = HealSnapshot(view, (), HealState(cluster=view.name), (Droplet(103, "redis-3", "active", "127.0.0.5"),))
    plan = Plan((Reboot("redis-3", 103, "test"), Reboot("redis-2", 102, "a second action")), (), False, "test")
    nothing: Any = None

    def executor(store: FullAuditLog, cloud: RebootingCloud) -> Executor:
        directives: Any = type("D", (), {"on_ack": lambda self, handler: None})()
        return Executor(store, directives, nothing, nothing, lambda _: nothing, cloud,  # type: ignore[arg-type]
                        nothing, lambda: view.now, cluster_tags={"sandbox": "redwarden-sandbox"})

    cloud = RebootingCloud()
    with pytest.raises(UnrecordedAction, match="not carried out") as refused:
        executor(FullAuditLog(start_ok=False), cloud).execute(snapshot, plan, snapshot.state)
    assert cloud.rebooted == [] and refused.value.state == snapshot.state  # nothing done that is not audited

    with capture_logs() as logs, pytest.raises(UnrecordedAction, match="carried out but") as unrecorded:
        executor(FullAuditLog(start_ok=True), cloud).execute(snapshot, plan, snapshot.state)
    assert cloud.rebooted == [103]  # the first took effect; the rest of the plan is not carried out
    assert unrecorded.value.state.node("redis-3").rebooted_at == view.now  # kept: never planned again
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["action.unrecorded"]
