"""A durable outbox for alerts: every (event, notifier) delivery is a row in SQLite until it is delivered.

Layer: adapter (SQLite, a thread; notifiers are injected). The incident tracker calls `enqueue` and moves
on; delivery happens here, one notifier at a time, strictly in enqueue order per notifier: a notifier's
next row waits until the earlier one is delivered (or has failed for good), so a resolve never overtakes
its trigger. Failures are retried with capped exponential backoff and jitter, or after the destination's
Retry-After; permanent failures (a 400 from PagerDuty, a revoked Slack webhook) are marked failed and
logged once. `min_interval_s` spaces a notifier's messages (Slack: one per second per webhook).

Delivery is at-least-once: a crash between a destination's "ok" and the commit that marks the row
delivered re-sends that one message after restart (PagerDuty de-duplicates it by dedup_key). A restarted
controller (a new `Outbox` on the same file) carries on with what is pending; delivered rows are kept for
`retention_s` and are never re-sent, and enqueuing an event again is a no-op (idempotent on event_id).

The table (`alert_outbox`) lives in the controller's state file, the shared `Database` (defined in
`controller.adapters.storage.migrations`); this module owns its rows, the delivery thread, and the hourly
purge of rows past `retention_s` (a job on the service's APScheduler scheduler, or on one of its own).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

# APScheduler 3 ships no type information: its objects are `Any` here, used through the few calls below
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_RUNNING

from controller.adapters.notify import DeliveryResult, Notifier, admits
from controller.adapters.storage.db import Database, error_text
from controller.core.alerts import AlertEvent

log = structlog.get_logger("redwarden.controller")

_OPEN = "delivered_at IS NULL AND failed_at IS NULL"
PURGE_EVERY_S = 3600.0


@dataclass(frozen=True, slots=True)
class PendingDelivery:
    """One delivery not yet done (for status pages and tests)."""

    id: int
    event_id: str
    notifier: str
    action: str
    incident_key: str
    enqueued_at: float
    attempts: int
    next_attempt_at: float
    last_error: str | None


@dataclass(frozen=True, slots=True)
class NotifierStats:
    pending: int
    delivered: int
    failed: int
    oldest_pending_at: float | None  # enqueued_at of the oldest pending row: how far behind we are
    last_delivered_at: float | None
    last_error: str | None  # of the head pending row, else of the latest failed row

    def to_dict(self) -> dict[str, Any]:
        return {
            "pending": self.pending,
            "delivered": self.delivered,
            "failed": self.failed,
            "oldest_pending_at": self.oldest_pending_at,
            "last_delivered_at": self.last_delivered_at,
            "last_error": self.last_error,
        }


@dataclass(frozen=True, slots=True)
class _Head:
    id: int
    event: str
    attempts: int
    next_attempt_at: float


class Outbox:
    """Durable, ordered, rate-limited alert delivery. Thread-safe; one delivery pass at a time."""

    def __init__(
        self,
        db: Database,
        notifiers: Sequence[Notifier],
        clock: Callable[[], float] = time.time,
        *,
        poll_interval_s: float = 0.5,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 60.0,
        max_retry_after_s: float = 600.0,
        retention_s: float = 7 * 86400.0,
        rng: random.Random | None = None,
        scheduler: BackgroundScheduler | None = None,
    ) -> None:
        """`scheduler`: the service's, on which `start` puts the purge (one of the outbox's own if none)."""
        names = [n.name for n in notifiers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"notifier names must be unique, {duplicates[0]!r} is used twice")
        self._notifiers = tuple(notifiers)
        self._clock = clock
        self._poll_interval_s = poll_interval_s
        self._backoff_base_s = backoff_base_s
        self._backoff_cap_s = backoff_cap_s
        self._max_retry_after_s = max_retry_after_s
        self._retention_s = retention_s
        self._rng = rng or random.Random()
        self._db = db
        self._deliver_lock = threading.Lock()  # one delivery pass at a time (thread or a direct call)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._own_scheduler = scheduler is None  # no thread until `start`
        self._scheduler = BackgroundScheduler(timezone=datetime.timezone.utc) if scheduler is None else scheduler
        self._purge_scheduled = False
        self._purge_error: str | None = None  # why the last purge failed (logged once per streak), or None
        self._loop_error: str | None = None
        self._last_sent: dict[str, float] = self._load_last_sent()
        self._abandon_orphans()

    # -- writing ------------------------------------------------------------------------------------

    def enqueue(self, events: Iterable[AlertEvent]) -> int:
        """Store one delivery per (event, notifier admitting its severity), in one transaction; returns how
        many were new (an event enqueued before, even before a restart, adds nothing)."""
        now = self._clock()
        rows = [
            (e.event_id, n.name, e.action, e.incident_key, json.dumps(e.to_dict()), now, now)
            for e in events
            for n in self._notifiers
            if admits(n.min_severity, e.severity)
        ]
        if not rows:
            return 0
        with self._db.transaction() as tx:
            tx.executemany(
                "INSERT INTO alert_outbox "
                "(event_id, notifier, action, incident_key, event, enqueued_at, next_attempt_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id, notifier) DO NOTHING",
                rows,
            )
            added = tx.rowcount  # summed over the rows: 0 for each one already there
        if added:
            self._wake.set()
        return added

    # -- delivering ---------------------------------------------------------------------------------

    def deliver_due(self, now: float) -> int:
        """Try every due delivery, per notifier oldest first; returns how many were delivered.

        A notifier stops at its first row that is not yet due, is rate-limited, or fails with a retry.
        `now` should come from the outbox's clock (the rate limit also reads the clock after each send).
        """
        delivered = 0
        with self._deliver_lock:
            for notifier in self._notifiers:
                delivered += self._deliver_for(notifier, now)
        return delivered

    def _deliver_for(self, notifier: Notifier, now: float) -> int:
        delivered = 0
        while not self._stop.is_set():
            head = self._head(notifier.name)
            if head is None or head.next_attempt_at > now:
                break
            if self._last_sent.get(notifier.name, float("-inf")) + notifier.min_interval_s > now:
                break
            attempts = head.attempts + 1
            try:
                event = AlertEvent.from_dict(json.loads(head.event))
            except (ValueError, KeyError, TypeError) as e:
                self._give_up(notifier, head.id, None, attempts, now, f"stored event unreadable ({type(e).__name__})")
                continue
            result = self._send(notifier, event)
            self._last_sent[notifier.name] = max(now, self._clock())
            if result.ok:
                self._update(
                    "UPDATE alert_outbox SET attempts = ?, last_attempt_at = ?, delivered_at = ?, last_error = NULL "
                    "WHERE id = ?",
                    (attempts, now, now, head.id),
                )
                log.info("alert.delivered", notifier=notifier.name, attempts=attempts, **_event_context(event))
                delivered += 1
            elif result.permanent:
                self._give_up(notifier, head.id, event, attempts, now, result.error or "permanent failure")
            else:
                delay = self._retry_delay(attempts, result.retry_after_s)
                self._update(
                    "UPDATE alert_outbox SET attempts = ?, last_attempt_at = ?, next_attempt_at = ?, last_error = ? "
                    "WHERE id = ?",
                    (attempts, now, now + delay, result.error, head.id),
                )
                log.warning(
                    "alert.delivery_deferred",
                    notifier=notifier.name,
                    attempts=attempts,
                    retry_in_s=round(delay, 3),
                    error=result.error,
                    **_event_context(event),
                )
                break
        return delivered

    @staticmethod
    def _send(notifier: Notifier, event: AlertEvent) -> DeliveryResult:
        try:
            return notifier.send(event)
        except Exception as e:  # a buggy notifier must not stop the others; its message may hold a secret
            return DeliveryResult.retry(f"{notifier.name} raised {type(e).__name__}")

    def _retry_delay(self, attempts: int, retry_after_s: float | None) -> float:
        if retry_after_s is not None:
            return max(0.05, min(retry_after_s, self._max_retry_after_s))
        # "Equal jitter": at least half the exponential step, so retries spread out but never hammer.
        ceiling = min(self._backoff_cap_s, self._backoff_base_s * 2.0 ** min(attempts - 1, 30))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def _give_up(
        self, notifier: Notifier, row_id: int, event: AlertEvent | None, attempts: int, now: float, error: str
    ) -> None:
        self._update(
            "UPDATE alert_outbox SET attempts = ?, last_attempt_at = ?, failed_at = ?, last_error = ? WHERE id = ?",
            (attempts, now, now, error, row_id),
        )
        context = _event_context(event) if event is not None else {"row_id": row_id}
        log.error("alert.delivery_failed", notifier=notifier.name, attempts=attempts, error=error, **context)

    # -- the background thread and the purge job --------------------------------------------------
    # Delivery stays a thread rather than a job on the scheduler: it is a queue consumer, woken by
    # `enqueue`, and the time to its next pass comes from the rows (the earliest retry or rate-limit slot,
    # `next_due_at`, in the outbox's clock), not from a schedule; as a job, every pass and every enqueue
    # would have to move its next run (and one that came during a pass be kept for after it), which
    # `_wake.wait(wait_s)` says in one line. The purge has a schedule (hourly): it is a job.

    def start(self) -> None:
        """Deliver in a daemon thread until `close()`: woken by `enqueue`, else every `poll_interval_s` at most;
        purge rows past `retention_s` now and every hour."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="alert-outbox", daemon=True)
        self._thread.start()
        # an executor of its own: close() removing it waits for a purge under way, and only for that
        self._scheduler.add_executor(ThreadPoolExecutor(1, pool_kwargs={"thread_name_prefix": "job-outbox-purge"}),
                                     alias="outbox-purge")
        self._scheduler.add_job(self.purge_expired, "interval", seconds=PURGE_EVERY_S, id="outbox-purge",
                                name="alert outbox purge", executor="outbox-purge", max_instances=1,
                                coalesce=True, misfire_grace_time=None,
                                next_run_time=datetime.datetime.now(datetime.timezone.utc))
        self._purge_scheduled = True
        if self._own_scheduler:
            self._scheduler.start()

    def purge_expired(self) -> None:
        """The purge job: forget deliveries done or given up more than `retention_s` ago. A failure is logged
        once per streak and named by `problem()`; the next hour tries again."""
        try:
            self.purge(self._clock() - self._retention_s)
        except Exception as e:
            if self._purge_error is None:
                log.error("outbox.purge_failed", error=error_text(e))
            self._purge_error = error_text(e)
        else:
            if self._purge_error is not None:
                log.info("outbox.purge_recovered", error=self._purge_error)
                self._purge_error = None

    def _run(self) -> None:
        while not self._stop.is_set():
            wait_s = self._poll_interval_s
            try:
                self.deliver_due(self._clock())
                next_at = self.next_due_at()
                if next_at is not None:
                    wait_s = min(wait_s, max(0.01, next_at - self._clock()))
                if self._loop_error is not None:
                    log.info("outbox.recovered", error=self._loop_error)
                    self._loop_error = None
            except Exception as e:  # one bad pass must not end delivery; log it once, not every pass
                if self._stop.is_set():
                    break
                if type(e).__name__ != self._loop_error:
                    self._loop_error = type(e).__name__
                    log.error("outbox.pass_failed", error=self._loop_error)
            self._wake.wait(wait_s)
            self._wake.clear()

    def problem(self) -> str | None:
        """Why alerts are not being delivered as they should (for `GET /healthz`), or None."""
        if self._loop_error is not None:
            return f"alert outbox failing ({self._loop_error}): deliveries wait in the state file and are retried"
        if self._thread is not None and not self._thread.is_alive() and not self._stop.is_set():
            return "alert outbox thread is not running: alerts are not delivered"
        if self._purge_error is not None:
            return (f"alert outbox purge failing ({self._purge_error}): finished deliveries past their retention "
                    "stay in the state file")
        if self._purge_scheduled and not self._stop.is_set() and self._scheduler.state != STATE_RUNNING:
            return "alert outbox purge is not running: its scheduler is not running"
        return None

    def close(self) -> None:
        """Stop the thread (after its current send); pending rows stay for next time. The `Database` stays open
        (its owner closes it after the stores)."""
        if self._closed:
            return
        self._stop.set()
        self._wake.set()
        if self._purge_scheduled:
            with contextlib.suppress(JobLookupError):  # gone already
                self._scheduler.remove_job("outbox-purge")
            self._scheduler.remove_executor("outbox-purge")  # waits for a purge under way
            if self._own_scheduler and self._scheduler.running:
                self._scheduler.shutdown(wait=True)
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._deliver_lock:  # a direct deliver_due() in another thread finishes its send first
            self._closed = True

    # -- reading ------------------------------------------------------------------------------------

    def next_due_at(self) -> float | None:
        """When the earliest pending delivery may next be tried (rate limits included), or None if none."""
        rows = self._db.read(
            "SELECT notifier, next_attempt_at FROM alert_outbox WHERE id IN "
            f"(SELECT MIN(id) FROM alert_outbox WHERE {_OPEN} GROUP BY notifier)"
        )
        intervals = {n.name: n.min_interval_s for n in self._notifiers}
        times = [
            max(float(at), self._last_sent.get(name, float("-inf")) + intervals[name])
            for name, at in rows
            if name in intervals
        ]
        return min(times, default=None)

    def pending(self) -> list[PendingDelivery]:
        """Deliveries not yet done nor given up, oldest first."""
        rows = self._db.read(
            "SELECT id, event_id, notifier, action, incident_key, enqueued_at, attempts, next_attempt_at, "
            f"last_error FROM alert_outbox WHERE {_OPEN} ORDER BY id"
        )
        return [PendingDelivery(*row) for row in rows]

    def stats(self) -> dict[str, NotifierStats]:
        """Per configured notifier: counts, how old the oldest pending delivery is, the last error."""
        with self._db.transaction() as tx:  # both reads see the same rows
            counts = tx.execute(
                "SELECT notifier, "
                f"SUM({_OPEN}), SUM(delivered_at IS NOT NULL), SUM(failed_at IS NOT NULL), "
                f"MIN(CASE WHEN {_OPEN} THEN enqueued_at END), MAX(delivered_at) "
                "FROM alert_outbox GROUP BY notifier"
            ).fetchall()
            errors = dict(
                tx.execute(
                    "SELECT notifier, last_error FROM alert_outbox WHERE id IN ("
                    f"SELECT COALESCE(MIN(CASE WHEN {_OPEN} THEN id END), MAX(CASE WHEN failed_at IS NOT NULL "
                    "THEN id END)) FROM alert_outbox GROUP BY notifier)"
                ).fetchall()
            )
        by_name = {row[0]: row for row in counts}
        out: dict[str, NotifierStats] = {}
        for n in self._notifiers:
            row = by_name.get(n.name)
            if row is None:
                out[n.name] = NotifierStats(0, 0, 0, None, None, None)
                continue
            _, pending, delivered, failed, oldest, last_delivered = row
            out[n.name] = NotifierStats(
                int(pending or 0), int(delivered or 0), int(failed or 0), oldest, last_delivered, errors.get(n.name)
            )
        return out

    def purge(self, before: float) -> int:
        """Forget deliveries done or given up before `before` (their event ids become enqueueable again)."""
        with self._db.transaction() as tx:
            tx.execute("DELETE FROM alert_outbox WHERE delivered_at < ? OR failed_at < ?", (before, before))
            return tx.rowcount

    # -- internals ----------------------------------------------------------------------------------

    def _head(self, notifier: str) -> _Head | None:
        rows = self._db.read(
            f"SELECT id, event, attempts, next_attempt_at FROM alert_outbox WHERE notifier = ? AND {_OPEN} "
            "ORDER BY id LIMIT 1",
            (notifier,),
        )
        if not rows:
            return None
        row = rows[0]
        return _Head(int(row[0]), str(row[1]), int(row[2]), float(row[3]))

    def _update(self, sql: str, params: tuple[Any, ...]) -> None:
        with self._db.transaction() as tx:
            tx.execute(sql, params)

    def _load_last_sent(self) -> dict[str, float]:
        """Each notifier's last attempt before a restart, so the rate limit holds across it."""
        rows = self._db.read(
            "SELECT notifier, MAX(last_attempt_at) FROM alert_outbox WHERE last_attempt_at IS NOT NULL "
            "GROUP BY notifier"
        )
        return {str(name): float(at) for name, at in rows}

    def _abandon_orphans(self) -> None:
        """Rows for a notifier that is no longer configured would wait forever: give them up, say so once."""
        names = [n.name for n in self._notifiers]
        marks = ",".join("?" * len(names))
        where = f"{_OPEN} AND notifier NOT IN ({marks})" if names else _OPEN
        now = self._clock()
        with self._db.transaction() as tx:
            orphans = tx.execute(
                f"SELECT notifier, COUNT(*) FROM alert_outbox WHERE {where} GROUP BY notifier", names
            ).fetchall()
            for name, count in orphans:
                tx.execute(
                    f"UPDATE alert_outbox SET failed_at = ?, last_error = ? WHERE {_OPEN} AND notifier = ?",
                    (now, f"notifier {name!r} is no longer configured", name),
                )
                log.warning("alert.deliveries_abandoned", notifier=name, count=count, reason="notifier not configured")


def _event_context(event: AlertEvent) -> dict[str, str]:
    return {
        "event_id": event.event_id,
        "action": event.action,
        "incident_key": event.incident_key,
        "cluster": event.cluster,
        "code": event.code,
    }
