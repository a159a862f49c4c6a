"""Shared fixtures: a sandbox cluster of real redis-server/redis-sentinel processes, torn down always; the
controller's state file (a `Database`), closed always."""

from __future__ import annotations

import contextlib
import functools
import json
import os
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

    @functools.cached_property
    def session(self) -> requests.Session:
        """An operator's HTTPS session with the controller: its CA, the admin token."""
        st = self.status()
        s = requests.Session()
        s.trust_env = False  # REQUESTS_CA_BUNDLE would override the session's CA
        s.verify = st["controller_ca_cert"]
        s.headers["Authorization"] = f"Bearer {st['admin_token']}"
        return s

    def conn_args(self) -> list[str]:
        """The console's options to reach this sandbox's controller as its admin."""
        st = self.status()
        token = self.root / "secrets" / "admin.token"
        return ["--controller", st["controller_url"], "--token-file", str(token), "--ca-cert",
                st["controller_ca_cert"]]

    def fleet(self) -> dict[str, Any]:
        """GET /v1/clusters over real HTTPS (the CLI's own output is tested in its own tests)."""
        out: dict[str, Any] = self.session.get(f"{self.controller_url}/v1/clusters", timeout=5).json()
        return out

    def cluster(self) -> dict[str, Any]:
        c: dict[str, Any] = self.fleet()["clusters"][0]
        return c

    def node(self, name: str) -> dict[str, Any]:
        return next(n for n in self.cluster()["nodes"] if n["name"] == name)

    def fault(self, node: str, service: str, action: str) -> None:
        redwarden("sandbox", "fault", "--dir", str(self.root), node, service, action)

    def node_key(self, node: str) -> bytes:
        """The key the node's agent signs with (what its bootstrap received at enrollment)."""
        found = list((self.root / "droplets").glob("*/root/etc/redwarden/node.key"))
        for path in found:
            conf = path.parent / "agent.toml"
            if f'node = "{node}"' in conf.read_text():
                return bytes.fromhex(path.read_text().strip())
        raise AssertionError(f"no node.key for {node} under {self.root / 'droplets'}")


ACL_ENV = "REDWARDEN_TEST_ACL"  # "1": every sandbox of the tests is built with per-role ACL users (--acl)


def start_sandbox(root: Path, *extra: str) -> Sandbox:
    need_redis()
    if os.environ.get(ACL_ENV) == "1" and "--acl" not in extra:
        extra = (*extra, "--acl")
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


def secrets_of(sb: Sandbox) -> dict[str, str]:
    """Every secret a sandbox holds: what must never show up in a log, an answer or a command line."""
    st = sb.status()
    found = {"redis password": st["redis_password"], "admin token": st["admin_token"], "read token": st["read_token"],
             "DigitalOcean token": st["do_token"]}
    for path in (sb.root / "droplets").glob("*/root/etc/redwarden/node.key"):
        found[f"node key {path.parts[-5]}"] = path.read_text().strip()
    acl = sb.root / "secrets" / "acl-users.json"
    if acl.exists():  # ACL mode: every role's password (the hashes in it are no secret)
        found.update({f"{role} password": v for role, v in json.loads(acl.read_text()).items()
                      if not role.endswith("_sha256")})
    for name in ("slack.url", "pagerduty.key", "webhook.url", "discovery.pass"):
        if (sb.root / "secrets" / name).exists():
            found[name] = (sb.root / "secrets" / name).read_text().strip()
    return {k: v for k, v in found.items() if v}


def assert_no_secret_leaks(sb: Sandbox) -> None:
    """No secret in any log line, API answer, audit, incident or outbox row, or process command line."""
    import sqlite3

    import psutil

    secrets = secrets_of(sb)
    places: dict[str, str] = {}
    for log in sb.root.rglob("*.log"):
        places[str(log)] = log.read_text(errors="replace")
    for path in ("/v1/clusters", "/v1/incidents?limit=10000", "/v1/actions?limit=10000", "/openapi.json", "/healthz"):
        places[f"GET {path}"] = sb.session.get(f"{sb.controller_url}{path}", timeout=10).text
    db = sqlite3.connect(sb.root / "controller" / "state.db")
    try:
        for table in ("actions", "incidents", "alert_outbox", "heal_state", "node_reports", "enrollments"):
            places[f"table {table}"] = "\n".join(repr(row) for row in db.execute(f"SELECT * FROM {table}"))
    finally:
        db.close()
    st = sb.status()
    pids = [st["controller_pid"], *(p for d in st["droplets"] for p in d["pids"].values())]
    for pid in (p for p in pids if p):
        with contextlib.suppress(psutil.Error):
            places[f"cmdline of {pid}"] = " ".join(psutil.Process(pid).cmdline())
    leaks = [f"{what} in {where}" for what, secret in secrets.items() for where, text in places.items()
             if secret in text]
    assert not leaks, leaks
    assert len(secrets) >= 5 and len(places) >= 10  # the check looked at something
