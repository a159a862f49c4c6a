"""Host health from psutil: CPU, load, memory, the Redis data dir's disk, and the Redis processes.

Layer: adapter. Processes are found by pidfile (or the pid Redis itself reported in INFO), never by
scanning every process each second: the agent must stay light. A SIGSTOPped process is still
alive here (a hung Redis is for the PING to reveal).
"""

from __future__ import annotations

import os
import select
import time
from pathlib import Path

import psutil

from protocol.report import HostHealth, ProcessHealth


def _read_pid(pidfile: str) -> int | None:
    try:
        return int(Path(pidfile).read_text().strip())
    except (OSError, ValueError):
        return None


def process_health(pidfile: str) -> ProcessHealth:
    """The process named by `pidfile`, alive only if it exists, runs and is a redis."""
    pid = _read_pid(pidfile)
    if pid is not None:
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                running = proc.status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
                is_redis = "redis" in proc.name()
                rss = proc.memory_info().rss
            if running and is_redis:
                return ProcessHealth(alive=True, pid=pid, rss_bytes=rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return ProcessHealth(alive=False)


def still_running(pid: int) -> bool:
    """Whether process `pid` still runs (not gone, not a zombie): the cheap check made between reports."""
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True


def wait_exit(pid: int, timeout_s: float) -> bool:
    """Block until process `pid` exits (True) or `timeout_s` passes (False). A pidfd (Linux >= 5.3) is
    readable the moment the process exits, so waiting costs nothing; without one, poll every 50 ms."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (OSError, AttributeError):  # an old kernel, or the call filtered
        deadline = time.monotonic() + timeout_s
        while still_running(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout_s)
        return bool(readable)
    finally:
        os.close(fd)


def collect_host(
    data_dir: str,
    redis_pidfile: str,
    sentinel_pidfile: str,
) -> HostHealth:
    try:
        mem = psutil.virtual_memory()
        load1, load5, load15 = os.getloadavg()
        disk_total = disk_free = None
        try:
            disk = psutil.disk_usage(data_dir)
            disk_total, disk_free = disk.total, disk.free
        except OSError:
            pass
        return HostHealth(
            reachable=True,
            cpu_percent=psutil.cpu_percent(interval=None),
            load_1m=load1,
            load_5m=load5,
            load_15m=load15,
            memory_total_bytes=mem.total,
            memory_available_bytes=mem.available,
            disk_path=data_dir,
            disk_total_bytes=disk_total,
            disk_free_bytes=disk_free,
            redis_process=process_health(redis_pidfile),
            sentinel_process=process_health(sentinel_pidfile),
        )
    except Exception as e:  # one failing collector never kills the agent
        return HostHealth(reachable=False, error=f"{type(e).__name__}: {e}")
