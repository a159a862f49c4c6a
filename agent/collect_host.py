"""Host health from psutil: CPU, load, memory, the Redis data dir's disk, and the Redis processes.

Layer: adapter. Processes are found by pidfile (or the pid Redis itself reported in INFO), never by
scanning every process each second: the agent must stay light. A SIGSTOPped process is still
alive here (a hung Redis is for the PING to reveal).
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil

from agent.report import HostHealth, ProcessHealth


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
