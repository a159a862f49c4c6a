"""A droplet's processes: the environment that marks them, finding them, stopping them.

Layer: sandbox. Every process a droplet starts carries its markers (`REDWARDEN_DROPLET_ROOT`, `_ID`, `_NAME`,
`_ADDRESS`) in its environment, so the droplet owns exactly those (`owned_processes`), whatever daemonized
itself; `kill_processes` stops them (SIGTERM then SIGKILL, or SIGKILL at once) until none is left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import psutil

ENV_ROOT = "REDWARDEN_DROPLET_ROOT"
ENV_ID = "REDWARDEN_DROPLET_ID"
ENV_NAME = "REDWARDEN_DROPLET_NAME"
ENV_ADDRESS = "REDWARDEN_DROPLET_ADDRESS"


def droplet_env(base: Mapping[str, str], root: Path, droplet_id: int, name: str, address: str) -> dict[str, str]:
    """The environment of a droplet's processes: the API's own, its markers, and the venv's bin first."""
    env = dict(base)
    env.update({ENV_ROOT: str(root), ENV_ID: str(droplet_id), ENV_NAME: name, ENV_ADDRESS: address})
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "/usr/bin:/bin")
    return env


def owned_processes(root: Path, droplet_id: int | None = None) -> list[psutil.Process]:
    """Live processes whose environment marks them as the droplet's (or, with no id, any droplet under root)."""
    want_root = str(root)
    out: list[psutil.Process] = []
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            env = proc.environ()
            if ENV_ID not in env:
                continue
            if droplet_id is None:
                if not env.get(ENV_ROOT, "").startswith(want_root + os.sep):
                    continue
            elif env.get(ENV_ID) != str(droplet_id) or env.get(ENV_ROOT) != want_root:
                continue
            if proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    return out


def _gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE  # dead; its parent (maybe init) reaps it
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def wait_processes(procs: Sequence[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait until each process has exited (a zombie counts as exited); return those still alive."""
    deadline = time.monotonic() + timeout_s
    alive = list(procs)
    while alive:
        alive = [p for p in alive if not _gone(p)]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    return alive


def kill_processes(find: Callable[[], list[psutil.Process]], graceful_timeout_s: float | None) -> int:
    """Stop what `find` returns until it returns nothing: SIGTERM first when graceful, SIGKILL after."""
    killed = 0
    for attempt in range(6):
        procs = find()
        if not procs:
            break
        killed += len(procs) if attempt == 0 else 0
        if graceful_timeout_s is not None and attempt == 0:
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    p.send_signal(signal.SIGCONT)  # a frozen process cannot exit
                    p.terminate()
            procs = wait_processes(procs, graceful_timeout_s)
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.kill()
        wait_processes(procs, 5.0)
    return killed


def kill_droplet_processes(sandbox_dir: Path) -> int:
    """SIGKILL every process of every droplet of this sandbox (teardown); returns how many there were."""
    return kill_processes(lambda: owned_processes(sandbox_dir.resolve() / "droplets"), None)
