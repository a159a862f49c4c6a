"""State the controller keeps: the latest report per node in memory, persisted to SQLite.

Layer: adapter. Ingest is the hot path (thousands of reports per second), so `put_report` only updates
a dict under a lock; a writer thread flushes the nodes that changed to SQLite once per
`flush_interval_s`, in one transaction, as the JSON body the agent sent (no re-serialisation on the
hot path or under the GIL-heavy flush). On start the last persisted reports are loaded, so a restarted
controller knows its fleet (their ages tell it how old that knowledge is). The table (`node_reports`) is
defined in `controller.adapters.storage.migrations`; the file is the shared `Database`.

A flush that fails (a full disk: "database or disk is full", an I/O error) loses nothing: its batch goes
back into the dirty set, under the lock, without overwriting a newer body a node sent meanwhile, and the
writer retries with capped exponential backoff (`flush_interval_s` doubled up to `max_backoff_s`). The
failure is logged once per streak (`state.write_failed`) and once on recovery (`state.write_recovered`),
and `problem()` names it for `GET /healthz` while it lasts. The writer thread is supervised: a pass that
raises never ends it, and a thread that ended anyway (it should not) is named by `problem()` too.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import pydantic
import structlog

from controller.adapters.storage.db import Database, error_text
from controller.core.view import NodeState
from protocol.report import Report, report_to_dict

REPORT_ADAPTER: pydantic.TypeAdapter[Report] = pydantic.TypeAdapter(Report)

log = structlog.get_logger("redwarden.controller")


class ReportStore:
    """The latest report per node, and the writer thread that keeps the state file current.

    The writer stays a thread rather than a job on the service's scheduler: its wait is not an interval
    but `next_wait_s()`, recomputed after every flush from the failure streak (the backoff); a job would
    have to reschedule itself after each flush to say what `self._stop.wait(self.next_wait_s())` says."""

    def __init__(self, db: Database, flush_interval_s: float = 2.0, max_backoff_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._latest: dict[tuple[str, str], NodeState] = {}
        self._dirty: dict[tuple[str, str], bytes] = {}
        self._flush_interval_s = flush_interval_s
        self._max_backoff_s = max(max_backoff_s, flush_interval_s)
        self._clock = clock
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None
        # the current failure streak: its first error, when it began, how many flushes failed in it
        self._failure: tuple[str, float, int] | None = None
        self._load()

    def _load(self) -> None:
        rows = self._db.read("SELECT cluster, node, received_at, report FROM node_reports")
        for cluster, node, received_at, raw in rows:
            try:
                report = REPORT_ADAPTER.validate_json(raw)
            except pydantic.ValidationError:
                continue  # an older schema: the agent's next report replaces it
            self._latest[(cluster, node)] = NodeState(report, received_at)

    def start(self) -> None:
        self._writer = threading.Thread(target=self._run_writer, name="state-writer", daemon=True)
        self._writer.start()

    def put_report(self, report: Report, received_at: float, raw: bytes | None = None) -> NodeState | None:
        """Keep `report` as its node's latest; `raw` is its JSON as received (saves re-serialising).
        Returns the node's state before it (None for a node not seen yet)."""
        key = (report.identity.cluster, report.identity.node)
        body = raw if raw is not None else json.dumps(report_to_dict(report)).encode()
        with self._lock:
            previous = self._latest.get(key)
            self._latest[key] = NodeState(report, received_at)
            self._dirty[key] = body
        return previous

    def forget(self, cluster: str, node: str) -> None:
        """Drop a node that no longer exists (replaced): its last report must not haunt the view."""
        with self._lock:
            self._latest.pop((cluster, node), None)
            self._dirty.pop((cluster, node), None)
        with self._db.transaction() as tx:
            tx.execute("DELETE FROM node_reports WHERE cluster = ? AND node = ?", (cluster, node))

    def nodes(self, cluster: str) -> tuple[NodeState, ...]:
        with self._lock:
            states = [s for (c, _), s in self._latest.items() if c == cluster]
        return tuple(sorted(states, key=lambda s: s.name))

    def flush(self) -> int:
        """Write the nodes that changed since the last flush, in one transaction; the number written. When
        the write fails, the batch is kept for the next flush (a body newer than the one that failed wins)
        and the error is raised."""
        with self._lock:
            dirty, self._dirty = self._dirty, {}
            rows = [(c, n, self._latest[(c, n)].received_at, body.decode()) for (c, n), body in dirty.items()
                    if (c, n) in self._latest]
        if not rows:
            return 0
        try:
            with self._db.transaction() as tx:
                tx.executemany(
                    "INSERT INTO node_reports (cluster, node, received_at, report) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (cluster, node) DO UPDATE SET received_at = excluded.received_at, "
                    "report = excluded.report",
                    rows,
                )
        except BaseException:
            with self._lock:
                for key, body in dirty.items():
                    # a node that reported again meanwhile has its newer body dirty; a forgotten one stays gone
                    if key not in self._dirty and key in self._latest:
                        self._dirty[key] = body
            raise
        return len(rows)

    def pending(self) -> int:
        """How many nodes have a report not yet written."""
        with self._lock:
            return len(self._dirty)

    def problem(self) -> str | None:
        """Why the state writer is not keeping the state file current, or None when it is."""
        failure = self._failure
        if failure is not None:
            error, since, failed = failure
            return (f"state writer failing for {self._clock() - since:.0f} s ({failed} attempt(s), {error}); "
                    f"{self.pending()} node report(s) kept in memory and retried")
        if self._writer is not None and not self._writer.is_alive() and not self._stop.is_set():
            return "state writer thread is not running: node reports are no longer written to the state file"
        return None

    def flush_supervised(self) -> bool:
        """One flush as the writer does it: a failure is recorded (logged once per streak), never raised.
        True when the state file is current."""
        try:
            written = self.flush()
        except Exception as e:
            if self._failure is None:
                self._failure = (error_text(e), self._clock(), 1)
                log.error("state.write_failed", error=self._failure[0], pending=self.pending(),
                          path=self._db.path)
            else:
                error, since, failed = self._failure
                self._failure = (error, since, failed + 1)
            return False
        if self._failure is not None:
            error, since, failed = self._failure
            self._failure = None
            log.info("state.write_recovered", error=error, failed_for_s=round(self._clock() - since, 1),
                     attempts=failed, written=written, path=self._db.path)
        return True

    def next_wait_s(self) -> float:
        """The flush interval, doubled per failed attempt of the current streak up to `max_backoff_s`."""
        failed = self._failure[2] if self._failure is not None else 0
        return float(min(self._max_backoff_s, self._flush_interval_s * 2.0 ** min(failed, 16)))

    def _run_writer(self) -> None:
        while not self._stop.wait(self.next_wait_s()):
            try:
                self.flush_supervised()
            except Exception:  # a bug (not a write error, those are handled): the writer must go on
                log.exception("state.writer_pass_crashed")

    def close(self) -> None:
        """Stop the writer and flush what it had not written yet (the `Database` stays open: its owner
        closes it). A last flush that fails is logged, with how many reports are lost."""
        self._stop.set()
        if self._writer is not None:
            self._writer.join(timeout=5)
        try:
            self.flush()
        except Exception as e:
            log.error("state.final_write_failed", error=error_text(e), lost=self.pending(), path=self._db.path)
