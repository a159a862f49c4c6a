"""Starts, signals and stops long-running processes without systemd, detached from the caller.

Layer: adapter. Each service is a `ServiceSpec`: argv, a pidfile, a log file. Processes run in their
own session so the caller (the bootstrap, `redwarden sandbox up`) can return while they go on; a pid is
trusted only while the process it names still has the spec's marker (its config path) in its command
line, so a recycled pid is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str  # "redis", "sentinel", "agent", "controller"
    argv: tuple[str, ...]
    pidfile: Path
    logfile: Path
    marker: str  # a string the process's command line must contain (its config path)
    cwd: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    group: int | None = None  # run with this group id (root only); None: the caller's


def _matching_process(spec: ServiceSpec, pid: int) -> psutil.Process | None:
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            return None
        if any(spec.marker in part for part in proc.cmdline()):
            return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass
    return None


def pid_of(spec: ServiceSpec) -> int | None:
    """The running process of this service, or None."""
    try:
        pid = int(spec.pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _matching_process(spec, pid) else None


def start(spec: ServiceSpec) -> int:
    """Start the service unless it runs already; returns its pid."""
    running = pid_of(spec)
    if running is not None:
        return running
    spec.logfile.parent.mkdir(parents=True, exist_ok=True)
    spec.pidfile.parent.mkdir(parents=True, exist_ok=True)
    with spec.logfile.open("ab") as log:
        proc = subprocess.Popen(
            list(spec.argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=spec.cwd,
            env={**os.environ, **spec.env},
            start_new_session=True,
            close_fds=True,
            group=spec.group,
        )
    spec.pidfile.write_text(f"{proc.pid}\n")
    return proc.pid


def send(spec: ServiceSpec, sig: signal.Signals) -> bool:
    pid = pid_of(spec)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    return True


def wait_gone(pids: Sequence[int], timeout_s: float) -> list[int]:
    """Wait until every pid has exited (reaping our own children); return those still alive."""
    deadline = time.monotonic() + timeout_s
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        still = []
        for pid in alive:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    still.append(pid)
            except psutil.NoSuchProcess:
                pass
        alive = still
        if alive:
            time.sleep(0.05)
    return alive


def stop_all(specs: Sequence[ServiceSpec], timeout_s: float = 10.0) -> None:
    """SIGCONT (a frozen process cannot exit), SIGTERM, then SIGKILL whatever is left after timeout_s."""
    pids = [p for p in (pid_of(s) for s in specs) if p is not None]
    for pid in pids:
        for sig in (signal.SIGCONT, signal.SIGTERM):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
    for pid in wait_gone(pids, timeout_s):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_gone(pids, 5.0)
