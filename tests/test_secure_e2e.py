"""`redwarden cluster secure` on a live sandbox cluster built without --acl, with a writer running through it:
the dry run changes nothing; the run holds while the writer still logs in as `default`, and finishes once it
uses the `app` user; no acknowledged write is lost, no failover happens (the master's address and run_id, the
Sentinels' config epoch unchanged); afterwards the app credential is refused admin commands, the agents report
as `monitor`, `default` is off, Sentinel obeys no anonymous client, and healing still restarts a killed Redis."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import redis

from console.drill.writer import SentinelKeyStore
from protocol.acl import ClusterUsers
from sandbox.cluster import add_acl_users
from tests.conftest import Sandbox, assert_no_secret_leaks, redwarden, running_sandbox
from tests.helpers import wait_until

pytestmark = pytest.mark.sandbox


class AckedWriter:
    """SET + WAIT 1 in a thread through redis-py's Sentinel client (the drill's store); remembers what was
    acknowledged by a replica."""

    def __init__(self, sentinels: list[tuple[str, int]], password: str, username: str | None, prefix: str) -> None:
        self.store = SentinelKeyStore(sentinels, "mymaster", password, username=username, wait_timeout_ms=500)
        self.prefix = prefix
        self.acked: dict[str, int] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(0.01):
            i += 1
            key = f"{self.prefix}:{i}"
            try:
                if self.store.write(key, i) >= 1:
                    self.acked[key] = i
            except Exception as e:  # a refused write is a sample, not an error
                self.errors.append(type(e).__name__)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.store.close()
        self.store._client.connection_pool.disconnect()  # no idle connection left as its user


def _client(address: str, username: str | None, password: str | None) -> redis.Redis:
    host, port = address.rsplit(":", 1)
    return redis.Redis(host=host, port=int(port), username=username, password=password, decode_responses=True,
                       socket_timeout=3, socket_connect_timeout=3)


def _master(sb: Sandbox) -> str:
    return wait_until(lambda: sb.cluster().get("master"), 30, "a master")


def _sentinel_master(address: str) -> dict[str, Any]:
    reply: dict[str, Any] = _client(address, None, None).sentinel_master("mymaster")
    return reply


def _acl_lists(addresses: list[str], users: ClusterUsers, legacy: str) -> dict[str, list[str]]:
    out = {}
    for a in addresses:
        try:
            out[a] = _client(a, "admin", users.admin).acl_list()
        except redis.AuthenticationError:
            out[a] = _client(a, None, legacy).acl_list()
    return out


def test_secure_moves_a_live_cluster_to_acl_users_without_a_failover(tmp_path: Path) -> None:
    with running_sandbox(tmp_path / "sb", "--report-interval-s", "0.5") as sb:
        st = sb.status()
        assert st["redis_username"] is None
        legacy = st["redis_password"]
        redis_addresses = [f"{d['address']}:6379" for d in st["droplets"]]
        sentinel_addresses = [f"{d['address']}:26379" for d in st["droplets"]]
        sentinels = [(d["address"], 26379) for d in st["droplets"]]
        master = _master(sb)
        run_id = _client(master, None, legacy).info("server")["run_id"]
        epochs = {a: _sentinel_master(a)["config-epoch"] for a in sentinel_addresses}

        add_acl_users(sb.root)
        users = ClusterUsers.from_json((sb.root / "secrets" / "acl-users.json").read_text())
        app = (sb.root / "secrets" / "app.pass").read_text().strip()
        wait_until(lambda: sum(1 for n in sb.cluster()["nodes"] if not n["stale"]) == 3 or None, 30,
                   "the restarted controller hears from every node")
        writer = AckedWriter(sentinels, legacy, None, "legacy")
        app_writer: AckedWriter | None = None
        try:
            # the dry run: the plan, and nothing changed
            before = _acl_lists(redis_addresses, users, legacy)
            dry = redwarden("cluster", "secure", "sandbox", *sb.conn_args(), check=False)
            assert dry.returncode == 0, dry.stderr
            assert "dry run" in dry.stdout and "[default_off]" in dry.stdout
            assert _acl_lists(redis_addresses, users, legacy) == before
            assert all(len(v) == 1 for v in before.values())  # only `default`
            # a rotation before the migration is refused, and leaves no rotation behind to block the migration
            early = redwarden("cluster", "secure", "sandbox", "--rotate", "monitor", "--apply", *sb.conn_args(),
                              check=False)
            assert early.returncode == 1 and "has no user monitor" in early.stderr, early.stdout + early.stderr
            assert not (sb.root / "controller" / "acl-users" / "sandbox.rotating.json").exists()

            # the run holds at default_off while the writer still logs in as default
            held = redwarden("cluster", "secure", "sandbox", "--apply", *sb.conn_args(), check=False, timeout=600)
            assert held.returncode == 3, held.stdout + held.stderr
            assert "authenticate as default" in held.stdout
            for n in sb.cluster()["nodes"]:
                assert sb.node(n["name"])["name"]  # still reporting
            # the application moves to the app user; the old writer's connections go
            app_writer = AckedWriter(sentinels, app, "app", "app")
            wait_until(lambda: len(app_writer.acked) > 20 or None, 30, "the app writer's writes")
            writer.stop()
            done = redwarden("cluster", "secure", "sandbox", "--apply", "--json", *sb.conn_args(), check=False,
                             timeout=600)
            assert done.returncode == 0, done.stdout + done.stderr
            job = json.loads(done.stdout)
            assert job["state"] == "done" and all(s["status"] == "done" for s in job["steps"])
            so_far = len(app_writer.acked)
            wait_until(lambda: len(app_writer.acked) > so_far + 20 or None, 30, "writes after default went off")
            app_writer.stop()

            # no failover: the same master, the same run_id, the same config epoch everywhere
            assert _master(sb) == master
            assert _client(master, "admin", users.admin).info("server")["run_id"] == run_id
            assert {a: _sentinel_master(a)["config-epoch"] for a in sentinel_addresses} == epochs
            # no acknowledged write lost: every one read back as app from the master
            reader = _client(master, "app", app)
            for w in (writer, app_writer):
                assert len(w.acked) > 20
                keys = sorted(w.acked)
                assert [int(v) if v else None for v in reader.mget(keys)] == [w.acked[k] for k in keys]

            # least privilege now holds
            for address in redis_addresses:
                c = _client(address, "app", app)
                for command in (("CONFIG", "SET", "maxmemory", "0"), ("REPLICAOF", "NO", "ONE"), ("SHUTDOWN",)):
                    with pytest.raises(redis.exceptions.NoPermissionError):
                        c.execute_command(*command)
                with pytest.raises(redis.AuthenticationError):
                    _client(address, None, legacy).ping()
                with pytest.raises(redis.AuthenticationError):
                    _client(address, None, None).ping()
                assert _client(address, "replication", users.replication).ping()
            for address in sentinel_addresses:
                anonymous = _client(address, None, None)
                assert anonymous.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")[0] == \
                    master.rsplit(":", 1)[0]
                with pytest.raises(redis.exceptions.NoPermissionError):
                    anonymous.execute_command("SENTINEL", "FAILOVER", "mymaster")
            wait_until(lambda: all(sb.node(n["name"]).get("redis_up") for n in sb.cluster()["nodes"]) or None,
                       20, "every node up")
            # the agents report as monitor (the report's user: the fleet row has no field for it)
            for path in (sb.root / "droplets").glob("*/root/etc/redwarden/redis-users.json"):
                assert json.loads(path.read_text())["monitor"] == users.monitor
                assert (path.parent / "redis.pass").read_text().strip() == users.monitor
            # the users are in each redis.conf, default off in it, no requirepass left: a restart keeps them
            for conf in (sb.root / "droplets").glob("*/root/etc/redis/redis.conf"):
                text = conf.read_text()
                assert "user default off" in text and "requirepass" not in text and "user monitor on" in text
                assert 'masteruser "replication"' in text or "masteruser replication" in text

            # healing still works: a replica's Redis killed comes back (restarted by the agent, as monitor)
            victim = next(n for n in sb.cluster()["nodes"] if n["address"] != master)
            sb.fault(victim["name"], "redis", "kill")
            wait_until(lambda: sb.node(victim["name"]).get("redis_up") is False or None, 20, "the kill seen")
            wait_until(lambda: (sb.node(victim["name"]).get("redis_up") and
                                sb.node(victim["name"]).get("link") == "up") or None, 60, "the replica healed")
            assert _master(sb) == master
            assert_no_secret_leaks(sb)
        finally:
            writer.stop()
            if app_writer is not None:
                app_writer.stop()
