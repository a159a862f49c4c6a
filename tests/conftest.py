"""Shared fixtures: a sandbox cluster of real redis-server/redis-sentinel processes, torn down always; the
controller's state file (a `Database`), closed always."""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from controller.adapters.storage.db import Database

REDWARDEN = [sys.executable, "-m", "console.cli"]


def need_redis() -> None:
    missing = [b for b in ("redis-server", "redis-sentinel") if shutil.which(b) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (scripts/test installs them)")


def redwarden(*args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*REDWARDEN, *args], capture_output=True, text=True, check=check, timeout=timeout)


class Sandbox:
    def __init__(self, root: Path) -> None:
        self.root = root

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(redwarden("sandbox", "status", "--dir", str(self.root), "--json").stdout)
        return out

    @functools.cached_property
    def controller_url(self) -> str:
        url: str = self.status()["controller_url"]
        return url

    def fleet(self) -> dict[str, Any]:
        """GET /v1/clusters over real HTTP (the CLI's own output is tested in its own tests)."""
        out: dict[str, Any] = requests.get(f"{self.controller_url}/v1/clusters", timeout=5).json()
        return out

    def cluster(self) -> dict[str, Any]:
        c: dict[str, Any] = self.fleet()["clusters"][0]
        return c

    def node(self, name: str) -> dict[str, Any]:
        return next(n for n in self.cluster()["nodes"] if n["name"] == name)

    def fault(self, node: str, service: str, action: str) -> None:
        redwarden("sandbox", "fault", "--dir", str(self.root), node, service, action)

    def secret(self) -> bytes:
        return (self.root / "secrets" / "cluster.secret").read_text().strip().encode()


def start_sandbox(root: Path, *extra: str) -> Sandbox:
    need_redis()
    proc = redwarden("sandbox", "up", "--dir", str(root), *extra, check=False)
    if proc.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in root.rglob("*.log"))
        redwarden("sandbox", "down", "--dir", str(root), check=False)
        raise AssertionError(f"sandbox up failed: {proc.stderr}\n{logs}")
    return Sandbox(root)


@contextlib.contextmanager
def running_sandbox(root: Path, *extra: str) -> Iterator[Sandbox]:
    """A sandbox for the duration of the block, taken down even when the block fails."""
    sb = start_sandbox(root, *extra)
    try:
        yield sb
    finally:
        redwarden("sandbox", "down", "--dir", str(root), check=False)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A 3-node cluster reporting every 0.5 s, watched but not healed (faults stay until undone);
    module-scoped so scenarios share the boot cost."""
    with running_sandbox(tmp_path_factory.mktemp("sandbox"), "--report-interval-s", "0.5", "--no-heal") as sb:
        yield sb


@pytest.fixture
def open_db() -> Iterator[Callable[[Path], Database]]:
    """Opens a state file (as a controller start does; call again on the same path for a restart); every
    one opened is closed at the end of the test."""
    opened: list[Database] = []

    def open_(path: Path) -> Database:
        db = Database(path)
        opened.append(db)
        return db

    yield open_
    for db in opened:
        db.close()


@pytest.fixture
def state_db(open_db: Callable[[Path], Database], tmp_path: Path) -> Database:
    """A fresh state file in the test's directory."""
    return open_db(tmp_path / "state.db")
