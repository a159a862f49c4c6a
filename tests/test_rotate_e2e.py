"""`redwarden cluster secure CLUSTER --rotate ROLE` on a live sandbox cluster in ACL mode, with a `WAIT 1` writer
running as the app user through it: rotating replication, sentinel, monitor and admin loses no acknowledged
write and causes no failover (the master's address and run_id, every Sentinel's config epoch unchanged); the
old secret is refused afterwards and the new one accepted; replicas stay linked, Sentinels keep their peers,
agents keep reporting. A controller killed in the middle of a rotation leaves both secrets working and a second
run finishes the job. The app and discovery users' rotations take two runs (the operator moves the application
between them). No old or new secret shows in the console's output, the logs, the API or the audit log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from agent import processes as runner
from protocol.acl import ClusterUsers, NodeUsers, sha256_hex
from sandbox.cluster import controller_spec
from tests.conftest import REDWARDEN, Sandbox, assert_no_secret_leaks, redwarden, running_sandbox
from tests.helpers import wait_until
from tests.test_secure_e2e import AckedWriter, _client, _master, _sentinel_master

pytestmark = pytest.mark.sandbox

ROLES_ON_SENTINEL = ("sentinel", "admin", "discovery")


def _users(sb: Sandbox) -> ClusterUsers:
    rotated = sb.root / "controller" / "acl-users" / "sandbox.json"
    path = rotated if rotated.exists() else sb.root / "secrets" / "acl-users.json"
    return ClusterUsers.from_json(path.read_text())


def _accepts(address: str, user: str, password: str) -> bool:
    try:
        return bool(_client(address, user, password).ping())
    except redis.AuthenticationError:
        return False


def _places(sb: Sandbox, role: str) -> list[str]:
    st = sb.status()
    out = [f"{d['address']}:6379" for d in st["droplets"]] if role != "discovery" else []
    if role in ROLES_ON_SENTINEL:
        out += [f"{d['address']}:26379" for d in st["droplets"]]
    return out


def _healthy(sb: Sandbox, master: str) -> str | None:
    """None when every node reports fresh and up, every replica is linked and every Sentinel sees two peers."""
    nodes = sb.cluster()["nodes"]
    if len([n for n in nodes if not n["stale"] and n.get("redis_up")]) != 3:
        return "a node is stale or down"
    if any(n.get("link") != "up" for n in nodes if n["address"] != master):
        return "a replica's link is down"
    for n in nodes:
        peers: list[dict[str, Any]] = _client(n["sentinel_address"], None, None).sentinel_sentinels("mymaster")  # type: ignore[assignment]
        if len(peers) != 2 or any("s_down" in str(p.get("flags", "")) for p in peers):
            return f"the Sentinel on {n['sentinel_address']} sees {len(peers)} healthy peers"
    return None


def _wait_healthy(sb: Sandbox, master: str, what: str) -> None:
    last: list[str | None] = []

    def healthy() -> bool | None:
        last.append(_healthy(sb, master))
        return last[-1] is None or None

    try:
        wait_until(healthy, 60, what)
    except AssertionError as e:
        raise AssertionError(f"{e}: {last[-1:]}") from None


def _leaks(texts: dict[str, str], secrets: dict[str, str]) -> list[str]:
    return [f"{what} in {where}" for what, secret in secrets.items() for where, text in texts.items()
            if secret and secret in text]


def _places_to_search(sb: Sandbox) -> dict[str, str]:
    import sqlite3

    places = {str(p): p.read_text(errors="replace") for p in sb.root.rglob("*.log")}
    for path in ("/v1/clusters", "/v1/actions?limit=10000", "/v1/clusters/sandbox/secure"):
        places[f"GET {path}"] = sb.session.get(f"{sb.controller_url}{path}", timeout=10).text
    db = sqlite3.connect(sb.root / "controller" / "state.db")
    try:
        places["table actions"] = "\n".join(repr(row) for row in db.execute("SELECT * FROM actions"))
    finally:
        db.close()
    return places


def _rotate(sb: Sandbox, role: str, *extra: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = redwarden("cluster", "secure", "sandbox", "--rotate", role, *extra, *sb.conn_args(), check=False,
                     timeout=600)
    return done, time.monotonic() - started


def _restart_controller(sb: Sandbox, crash: bool) -> None:
    spec = controller_spec(sb.root)
    if crash:
        os.kill(sb.status()["controller_pid"], signal.SIGKILL)
        wait_until(lambda: runner.pid_of(spec) is None or None, 20, "the controller gone")
    runner.start(spec)
    ca = sb.status()["controller_ca_cert"]
    wait_until(lambda: requests.get(f"{sb.controller_url}/healthz", timeout=3, verify=ca).ok or None, 30,
               "the controller back")
    wait_until(lambda: sum(1 for n in sb.cluster()["nodes"] if not n["stale"]) == 3 or None, 30,
               "the restarted controller hears from every node")


def test_rotating_every_role_loses_no_write_and_causes_no_failover(tmp_path: Path) -> None:
    figures: dict[str, dict[str, float]] = {}
    with running_sandbox(tmp_path / "sb", "--report-interval-s", "0.5", "--acl") as sb:
        st = sb.status()
        app = st["redis_password"]
        sentinels = [(d["address"], 26379) for d in st["droplets"]]
        sentinel_addresses = [f"{d['address']}:26379" for d in st["droplets"]]
        _wait_healthy(sb, _master(sb), "a healthy cluster")
        master = _master(sb)
        users = _users(sb)
        run_id = _client(master, "admin", users.admin).info("server")["run_id"]
        epochs = {a: _sentinel_master(a)["config-epoch"] for a in sentinel_addresses}
        secrets = {f"old {r}": getattr(users, r) for r in ("admin", "replication", "sentinel", "monitor")}
        secrets["app"] = app
        outputs: dict[str, str] = {}
        writer = AckedWriter(sentinels, app, "app", "w1")
        writer2: AckedWriter | None = None
        try:
            wait_until(lambda: len(writer.acked) > 20 or None, 30, "the writer's first writes")
            for role in ("replication", "sentinel", "monitor", "admin"):
                old = getattr(_users(sb), role)
                dry = redwarden("cluster", "secure", "sandbox", "--rotate", role, *sb.conn_args(), check=False)
                assert dry.returncode == 0, dry.stderr
                assert f"rotation of {role}" in dry.stdout and "[remove_old]" in dry.stdout
                assert not (sb.root / "controller" / "acl-users" / "sandbox.rotating.json").exists()
                assert getattr(_users(sb), role) == old  # the dry run changed nothing

                before = acked_before = len(writer.acked)
                done, seconds = _rotate(sb, role, "--apply")
                acked_during = len(writer.acked) - before
                outputs[f"rotate {role}"] = done.stdout + done.stderr
                assert done.returncode == 0, done.stdout + done.stderr
                assert "done" in done.stdout
                new = getattr(_users(sb), role)
                assert new != old
                secrets[f"new {role}"] = new
                for address in _places(sb, role):
                    assert not _accepts(address, role, old), f"{address} still takes the old {role} secret"
                    assert _accepts(address, role, new), f"{address} refuses the new {role} secret"
                assert not (sb.root / "controller" / "acl-users" / "sandbox.rotating.json").exists()
                # each droplet's copy of its users (what a later bootstrap renders) holds the new secret
                copies = list((sb.root / "droplets").glob("*/root/etc/redwarden/redis-users.json"))
                assert len(copies) == 3
                for copy in copies:
                    kept = NodeUsers.from_json(copy.read_text())
                    assert (kept.admin_sha256 == sha256_hex(new) if role == "admin" else getattr(kept, role) == new)
                wait_until(lambda n=acked_before: len(writer.acked) > n + 20 or None, 30,  # type: ignore[misc]
                           f"writes after rotating {role}")
                _wait_healthy(sb, master, f"a healthy cluster after rotating {role}")
                figures[role] = {"steps": done.stderr.count(" done   ["), "seconds": round(seconds, 1),
                                 "acked_during": acked_during, "writer_errors_so_far": len(writer.errors)}

            # a crash in the middle: the controller killed while the replicas move to the new replication secret
            old = _users(sb).replication
            run = subprocess.Popen([*REDWARDEN, "cluster", "secure", "sandbox", "--rotate", "replication", "--apply",
                                    *sb.conn_args()], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

            def moving() -> bool | None:
                job = sb.session.get(f"{sb.controller_url}/v1/clusters/sandbox/secure", timeout=5).json()
                return any(s["phase"] == "replication_secret" and s["status"] == "done" for s in job["steps"]) or None

            wait_until(moving, 120, "the first replica on the new replication secret")
            _restart_controller(sb, crash=True)
            out, err = run.communicate(timeout=60)
            outputs["rotate replication, killed"] = out + err
            pending = json.loads((sb.root / "controller" / "acl-users" / "sandbox.rotating.json").read_text())
            new = pending["new"]["replication"]
            secrets["new replication (2)"] = new
            for address in _places(sb, "replication"):  # both work until every consumer has moved
                assert _accepts(address, "replication", old) and _accepts(address, "replication", new)
            _wait_healthy(sb, master, "a healthy cluster after the crash")
            done, seconds = _rotate(sb, "replication", "--apply")
            outputs["rotate replication, again"] = done.stdout + done.stderr
            assert done.returncode == 0, done.stdout + done.stderr
            assert _users(sb).replication == new  # the recorded secret, not a third one
            for address in _places(sb, "replication"):
                assert not _accepts(address, "replication", old) and _accepts(address, "replication", new)
            figures["replication after a crash"] = {"steps": done.stderr.count(" done   ["),
                                                    "seconds": round(seconds, 1)}

            # the app user: two runs, the application moved in between
            password_file = tmp_path / "app.new"
            held, _ = _rotate(sb, "app", "--apply", "--password-out", str(password_file))
            outputs["rotate app"] = held.stdout + held.stderr
            assert held.returncode == 3, held.stdout + held.stderr
            new_app = password_file.read_text().strip()
            secrets["new app"] = new_app
            for address in _places(sb, "app"):
                assert _accepts(address, "app", app) and _accepts(address, "app", new_app)
            writer2 = AckedWriter(sentinels, new_app, "app", "w2")
            wait_until(lambda: len(writer2.acked) > 20 or None, 30, "the moved application's writes")
            writer.stop()
            done, _ = _rotate(sb, "app", "--apply", "--finish")
            outputs["rotate app --finish"] = done.stdout + done.stderr
            assert done.returncode == 0, done.stdout + done.stderr
            for address in _places(sb, "app"):
                assert not _accepts(address, "app", app) and _accepts(address, "app", new_app)
            so_far = len(writer2.acked)
            wait_until(lambda: len(writer2.acked) > so_far + 20 or None, 30, "writes after the old app password")
            writer2.stop()

            # the discovery user (Sentinel only): the same two runs
            old_discovery = (sb.root / "secrets" / "discovery.pass").read_text().strip()
            secrets["discovery"] = old_discovery
            discovery_file = tmp_path / "discovery.new"
            held, _ = _rotate(sb, "discovery", "--apply", "--password-out", str(discovery_file))
            outputs["rotate discovery"] = held.stdout.replace(str(discovery_file), "") + held.stderr
            assert held.returncode == 3, held.stdout + held.stderr
            new_discovery = secrets["new discovery"] = discovery_file.read_text().strip()
            for address in _places(sb, "discovery"):
                assert _accepts(address, "discovery", old_discovery) and _accepts(address, "discovery", new_discovery)
            done, _ = _rotate(sb, "discovery", "--apply", "--finish")
            outputs["rotate discovery --finish"] = done.stdout + done.stderr
            assert done.returncode == 0, done.stdout + done.stderr
            for address in _places(sb, "discovery"):
                assert not _accepts(address, "discovery", old_discovery), address
                assert _client(address, "discovery", new_discovery).sentinel_get_master_addr_by_name("mymaster")

            # no failover, no acknowledged write lost
            assert _master(sb) == master
            admin = _users(sb).admin
            assert _client(master, "admin", admin).info("server")["run_id"] == run_id
            assert {a: _sentinel_master(a)["config-epoch"] for a in sentinel_addresses} == epochs
            reader = _client(master, "app", new_app)
            for w in (writer, writer2):
                keys = sorted(w.acked)
                assert len(keys) > 20
                assert [int(v) if v else None for v in reader.mget(keys)] == [w.acked[k] for k in keys]
            _wait_healthy(sb, master, "a healthy cluster at the end")

            # every step audited: a SecureCluster row per step of each run, with why
            actions = sb.session.get(f"{sb.controller_url}/v1/actions?limit=10000", timeout=10).json()["actions"]
            for role in ("replication", "sentinel", "monitor", "admin", "app"):
                rows = [a for a in actions if a["kind"] == "SecureCluster" and a["reason"].endswith(f"--rotate {role}")]
                removed = [a for a in rows if a["description"].startswith(f"user {role} accepts only the new secret")]
                assert len([a for a in removed if a["status"] == "succeeded"]) >= 3, (role, removed)

            # no secret, old or new, in the console's output, the logs, the API, the audit log
            places = {**_places_to_search(sb), **outputs}
            places["rotate app"] = places["rotate app"].replace(str(password_file), "")
            assert not _leaks(places, secrets), _leaks(places, secrets)
            assert_no_secret_leaks(sb)
            figures["writer"] = {"acked": len(writer.acked) + len(writer2.acked),
                                 "refused": len(writer.errors) + len(writer2.errors)}
            print(json.dumps(figures))
        finally:
            writer.stop()
            if writer2 is not None:
                writer2.stop()
