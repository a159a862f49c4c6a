"""Small real file systems for droplets' data directories, so that a disk can really fill up.

Layer: sandbox. In a sandbox with its own network namespace (`sandbox up --netns`, which runs as root),
the local DigitalOcean mounts a tmpfs of `DATA_DIR_MB` on each droplet's `/var/lib/redis` before it
boots; the drill's `disk-full` fault fills it with a file (Redis then gets ENOSPC on its own writes) and
removes the file to undo. Every mount under a sandbox is unmounted when its droplet is destroyed and
at `sandbox down`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path

DATA_DIR_MB = 64
FILLER = ".redwarden-disk-full"


class DiskError(Exception):
    pass


def _mounts(pid: int | str = "self") -> list[str]:
    try:
        lines = Path(f"/proc/{pid}/mounts").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) > 1:
            out.append(parts[1].replace("\\040", " "))
    return out


def is_mount(path: Path, pid: int | str = "self") -> bool:
    """Whether `path` is a mount point in the mount namespace of process `pid`."""
    return str(path.resolve() if pid == "self" else path) in _mounts(pid)


def mount_data_dir(path: Path, size_mb: int = DATA_DIR_MB) -> None:
    """A tmpfs of `size_mb` on `path` (made if missing), unless one is there already."""
    path.mkdir(parents=True, exist_ok=True)
    if is_mount(path):
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0750", "tmpfs", str(path)],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise DiskError(f"mounting a {size_mb} MiB tmpfs on {path} failed: {done.stderr.strip()[:200]}")


def unmount_under(root: Path) -> int:
    """Unmount (lazily: a process may still hold a file) every mount at or below `root`; how many."""
    base = str(root.resolve())
    n = 0
    for mount in sorted(_mounts(), key=len, reverse=True):
        if mount == base or mount.startswith(base + os.sep):
            subprocess.run(["umount", "-l", mount], capture_output=True, timeout=30)
            n += 1
    return n


def seen_by(pid: int, path: Path) -> Path:
    """`path` as process `pid` sees it, in its mount namespace (the sandbox's processes share the host's;
    going through the local DigitalOcean's view keeps that true even if they did not)."""
    return Path(f"/proc/{pid}/root") / str(path).lstrip("/")


def fill(path: Path, pid: int) -> int:
    """Fill the file system of `path`, as process `pid` sees it, to the last byte with a filler file; the bytes
    written."""
    if not is_mount(path, pid):
        raise DiskError(f"{path} is not a file system of its own: filling it would fill the host's disk")
    path = seen_by(pid, path)
    written = 0
    chunk = b"\0" * (1 << 20)
    fd = os.open(path / FILLER, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while chunk:
            try:
                written += os.write(fd, chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                chunk = chunk[: len(chunk) // 2]  # down to the last byte
    finally:
        os.close(fd)
    return written


def unfill(path: Path, pid: int) -> bool:
    with contextlib.suppress(FileNotFoundError):
        (seen_by(pid, path) / FILLER).unlink()
        return True
    return False
