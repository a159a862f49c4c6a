"""The controller's periodic work, as jobs on one APScheduler `BackgroundScheduler` that the service owns.

Layer: application. `new_scheduler` makes that scheduler (UTC); `Periodic` is one job on it: an interval
whose runs never overlap nor queue up after a slow one (one instance at a time, late runs coalesced), a
failure logged once per streak and named for `GET /healthz`, `wake()` to bring the next run forward
(never closer than `min_gap_s` after the previous run began; a wake while a run is under way gives exactly
one more run after it), and `close()` that waits for a run under way. Each job runs on an executor of its
own (one worker thread): `close()` removing it is what waits for that job alone, and a slow cloud poll
never holds a watch cycle's worker.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import structlog

# APScheduler 3 ships no type information: its objects are `Any` here, used through the few calls below
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_PAUSED, STATE_RUNNING

from controller.adapters.storage.db import error_text

log = structlog.get_logger("redwarden.controller")

__all__ = ["BackgroundScheduler", "Periodic", "new_scheduler"]

OVERDUE_MIN_S = 10.0  # a next run this far in the past (or two intervals, if longer): the scheduler is stuck


def new_scheduler() -> BackgroundScheduler:
    """The scheduler of the controller's periodic jobs (UTC: run times never move with a local DST change)."""
    return BackgroundScheduler(timezone=timezone.utc)


def scheduler_state(scheduler: BackgroundScheduler) -> str:
    state = scheduler.state
    return "running" if state == STATE_RUNNING else "paused" if state == STATE_PAUSED else "stopped"


class Periodic:
    """One periodic job: `run` every `interval_s` from `start`, on `scheduler` (or on a scheduler of its own,
    started and shut down with it, when none is given: a part used without the service).

    `what` names the work in /healthz sentences ("watch cycle"); `failed_event` and `recovered_event` are
    the log events of a failure streak (the first failure with its traceback, then nothing until it ends)."""

    def __init__(self, scheduler: BackgroundScheduler | None, job_id: str, run: Callable[[], object], *,
                 what: str, failed_event: str, recovered_event: str) -> None:
        self._own_scheduler = scheduler is None
        self._scheduler = new_scheduler() if scheduler is None else scheduler
        self.job_id = job_id
        self._fn = run
        self.what = what
        self._failed_event = failed_event
        self._recovered_event = recovered_event
        self._lock = threading.Lock()
        self._started = False
        self._closed = False
        self._min_gap = timedelta(0)
        self._overdue_s = OVERDUE_MIN_S
        self._running = False  # from a run's start until the executor has counted it finished
        self._woken = False  # a wake came while a run was under way: one more run after it
        self._last_start: datetime | None = None
        self._error: str | None = None  # why the last run failed (the current streak), or None

    @property
    def scheduler(self) -> BackgroundScheduler:
        return self._scheduler

    def start(self, interval_s: float, *, min_gap_s: float = 0.0, first_run_now: bool = False) -> None:
        """Schedule the job: first run after `interval_s` (or at once with `first_run_now`)."""
        with self._lock:
            if self._started or self._closed:
                return
            self._started = True
            self._min_gap = timedelta(seconds=min_gap_s)
            self._overdue_s = max(2 * interval_s, OVERDUE_MIN_S)
        s = self._scheduler
        s.add_executor(ThreadPoolExecutor(1, pool_kwargs={"thread_name_prefix": f"job-{self.job_id}"}),
                       alias=self.job_id)
        s.add_listener(self._on_finished, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
        s.add_job(self._run, "interval", seconds=interval_s, id=self.job_id, name=self.what,
                  executor=self.job_id,
                  max_instances=1,  # a slow run is never overlapped by the next one
                  coalesce=True,  # and the ticks it spans become one run, not a burst after it
                  misfire_grace_time=None,  # a late run (a suspended host, a busy scheduler) still runs, once
                  **({"next_run_time": datetime.now(timezone.utc)} if first_run_now else {}))
        if self._own_scheduler:
            s.start()

    def wake(self) -> None:
        """Run the job now rather than at its next interval, but never closer than `min_gap_s` after the
        previous run began. While a run is under way: one more run after it, however many wakes came."""
        with self._lock:
            if not self._started or self._closed:
                return
            if self._running:
                self._woken = True
                return
            self._bring_forward()

    def _bring_forward(self) -> None:  # under self._lock
        now = datetime.now(timezone.utc)
        at = max(now, self._last_start + self._min_gap) if self._last_start is not None else now
        try:
            job = self._scheduler.get_job(self.job_id)
            if job is not None and (job.next_run_time is None or at < job.next_run_time):
                job.modify(next_run_time=at)
        except JobLookupError:
            pass  # removed by close() meanwhile

    def _run(self) -> None:
        with self._lock:
            self._running = True
            self._woken = False  # this run reads the world after every wake so far
            self._last_start = datetime.now(timezone.utc)
        try:
            self._fn()
        except Exception as e:  # one bad run never ends the job: the next one runs at its time
            if self._error is None:
                log.exception(self._failed_event)
            self._error = error_text(e)
        else:
            if self._error is not None:
                log.info(self._recovered_event, error=self._error)
                self._error = None

    def _on_finished(self, event: JobExecutionEvent) -> None:
        """The executor has counted the run finished (so a run brought forward now is not refused as a second
        instance): if a wake came during it, the next run comes now (or at the min gap)."""
        if event.job_id != self.job_id:
            return
        with self._lock:
            self._running = False
            if self._woken and not self._closed:
                self._woken = False
                self._bring_forward()

    def problem(self) -> str | None:
        """Why this job is not doing its work (for `GET /healthz`), or None."""
        error = self._error
        if error is not None:
            return f"{self.what} failing ({error})"
        if not self._started or self._closed:
            return None
        if self._scheduler.state != STATE_RUNNING:
            return f"{self.what} is not running: its scheduler is {scheduler_state(self._scheduler)}"
        # a running scheduler whose thread died or hangs leaves the job's next run in the past
        job = self._scheduler.get_job(self.job_id)
        if job is not None and job.next_run_time is not None:
            late_s = (datetime.now(timezone.utc) - job.next_run_time).total_seconds()
            if late_s > self._overdue_s:
                return f"{self.what} is {late_s:.0f} s overdue: the scheduler is not running its jobs"
        return None

    def close(self) -> None:
        """No more runs; returns once a run under way has finished. A scheduler of its own is shut down."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            started = self._started
        if not started:
            return
        s = self._scheduler
        with contextlib.suppress(JobLookupError):  # gone already
            s.remove_job(self.job_id)
        s.remove_executor(self.job_id)  # shuts its pool down, waiting for the run under way
        s.remove_listener(self._on_finished)
        if self._own_scheduler and s.running:
            s.shutdown(wait=True)

