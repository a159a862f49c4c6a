"""Integration tests of `agent.collect_redis` against real redis-server and redis-sentinel processes.

Layer: tests of an adapter. A module-scoped fixture starts, on loopback addresses reserved for these
tests, a password-protected master (127.0.0.210:6379), one replica (127.0.0.211:6379) and one Sentinel
with its own password (127.0.0.212:26379, quorum 1), each in a temporary directory; it waits by polling
with a deadline and kills every process it started in teardown, also when startup or a test fails.
Nothing listens on 127.0.0.212:6379, which serves as the closed port. Skipped without redis-server. The
client itself (raw replies, no retries, a restarted server) is tested in tests/test_redis_client.py.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
import redis
from redis.exceptions import RedisError, ResponseError

from agent.collect_redis import collect_redis, collect_sentinel, raw_client
from agent.parse import parse_info
from agent.redis_client import command
from tests.helpers import wait_until

if shutil.which("redis-server") is None:
    pytest.skip("redis-server is not on PATH: these tests need a real Redis 7", allow_module_level=True)

MASTER_IP = "127.0.0.210"
REPLICA_IP = "127.0.0.211"
SENTINEL_IP = "127.0.0.212"
CLOSED_IP = "127.0.0.212"  # nothing listens on its port 6379
REDIS_PORT = 6379
SENTINEL_PORT = 26379
MASTER_NAME = "mymaster"
REDIS_PASSWORD = "it-redis-pw-5b1d0c"
SENTINEL_PASSWORD = "it-sentinel-pw-90ae77"
TIMEOUT_S = 2.0

T = TypeVar("T")


def wait_for(
    what: str, probe: Callable[[], T | None], procs: list[subprocess.Popen[bytes]], timeout_s: float = 30.0
) -> T:
    """Poll `probe` until it returns non-None; fail early if one of `procs` died."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        dead = [p.args for p in procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"while waiting for {what}: process exited: {dead}")
        try:
            result = probe()
        except (RedisError, OSError) as e:
            last_error = e
        else:
            if result is not None:
                return result
        time.sleep(0.05)
    raise TimeoutError(f"gave up waiting for {what} after {timeout_s} s (last error: {last_error})")


@dataclass(frozen=True)
class Cluster:
    master: redis.Redis
    replica: redis.Redis
    sentinel: redis.Redis


def _start_redis(root: Path, ip: str, extra: str) -> subprocess.Popen[bytes]:
    workdir = root / f"redis-{ip}"
    workdir.mkdir()
    conf = workdir / "redis.conf"
    conf.write_text(
        f"bind {ip}\nport {REDIS_PORT}\ndir {workdir}\nlogfile {workdir}/redis.log\ndaemonize no\n"
        f"save ''\nappendonly no\nrequirepass {REDIS_PASSWORD}\nmasterauth {REDIS_PASSWORD}\n"
        f"replica-announce-ip {ip}\n{extra}"
    )
    return subprocess.Popen(["redis-server", str(conf)], cwd=workdir)


def _start_sentinel(root: Path) -> subprocess.Popen[bytes]:
    workdir = root / f"sentinel-{SENTINEL_IP}"
    workdir.mkdir()
    conf = workdir / "sentinel.conf"
    conf.write_text(
        f"bind {SENTINEL_IP}\nport {SENTINEL_PORT}\ndir {workdir}\nlogfile {workdir}/sentinel.log\n"
        f"daemonize no\nrequirepass {SENTINEL_PASSWORD}\n"
        f"sentinel announce-ip {SENTINEL_IP}\nsentinel resolve-hostnames no\n"
        f"sentinel monitor {MASTER_NAME} {MASTER_IP} {REDIS_PORT} 1\n"
        f"sentinel auth-pass {MASTER_NAME} {REDIS_PASSWORD}\n"
        f"sentinel down-after-milliseconds {MASTER_NAME} 5000\n"
        f"sentinel failover-timeout {MASTER_NAME} 60000\n"
    )
    binary = shutil.which("redis-sentinel")
    argv = [binary, str(conf)] if binary else ["redis-server", str(conf), "--sentinel"]
    return subprocess.Popen(argv, cwd=workdir)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("redis")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(_start_redis(root, MASTER_IP, "min-replicas-to-write 1\nmin-replicas-max-lag 10\n"))
        procs.append(_start_redis(root, REPLICA_IP, f"replicaof {MASTER_IP} {REDIS_PORT}\n"))
        master = raw_client(MASTER_IP, REDIS_PORT, REDIS_PASSWORD, TIMEOUT_S)
        replica = raw_client(REPLICA_IP, REDIS_PORT, REDIS_PASSWORD, TIMEOUT_S)

        def replica_online() -> bool | None:
            info = parse_info(str(command(master, "INFO", "replication")))
            return True if "state=online" in info.get("slave0", "") else None

        wait_for("the replica to be online", replica_online, procs)
        command(master, "SET", "written-by", "test_collect_redis")  # so replication offsets are > 0
        assert command(master, "WAIT", "1", "5000") == 1

        procs.append(_start_sentinel(root))
        sentinel = raw_client(SENTINEL_IP, SENTINEL_PORT, SENTINEL_PASSWORD, TIMEOUT_S)

        def sentinel_sees_replica() -> bool | None:
            entries = command(sentinel, "SENTINEL", "REPLICAS", MASTER_NAME)
            return True if isinstance(entries, list) and len(entries) == 1 else None

        wait_for("the Sentinel to discover the replica", sentinel_sees_replica, procs)
        yield Cluster(master, replica, sentinel)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


def test_collect_redis_on_the_master(cluster: Cluster) -> None:
    health = collect_redis(cluster.master)
    assert health.reachable is True, health.error
    assert health.error is None
    assert health.role == "master"
    assert health.version is not None and health.version.startswith("7.")
    assert health.ping_ms is not None and health.ping_ms > 0
    assert [r.address for r in health.connected_replicas] == [f"{REPLICA_IP}:{REDIS_PORT}"]
    assert health.connected_replicas[0].state == "online"
    assert health.master_repl_offset is not None and health.master_repl_offset > 0
    assert health.min_replicas_to_write == 1
    assert health.min_replicas_max_lag_s == 10
    assert health.replica_priority == 100
    assert health.maxmemory_policy == "noeviction"
    assert health.requirepass_set is True
    assert health.masterauth_set is True
    assert health.loading is False
    assert REDIS_PASSWORD not in repr(health)


def test_collect_redis_on_the_replica(cluster: Cluster) -> None:
    health = collect_redis(cluster.replica)
    assert health.reachable is True, health.error
    assert health.role == "replica"
    assert health.master_address == f"{MASTER_IP}:{REDIS_PORT}"
    assert health.master_link_status == "up"
    assert health.master_link_down_since_s is None
    assert health.master_sync_in_progress is False
    assert health.replica_read_only is True
    assert health.replica_repl_offset is not None and health.replica_repl_offset > 0
    assert health.connected_replicas == ()


def test_collect_redis_on_a_closed_port() -> None:
    health = collect_redis(raw_client(CLOSED_IP, REDIS_PORT, REDIS_PASSWORD, 0.5))
    assert health.reachable is False
    assert health.error is not None
    assert health.error.startswith("ConnectionError")
    assert REDIS_PASSWORD not in health.error
    assert health.role is None
    assert health.ping_ms is None


@pytest.mark.parametrize("password", [None, "wrong-password-7f3e"])
def test_collect_redis_with_a_bad_password(cluster: Cluster, password: str | None) -> None:
    health = collect_redis(raw_client(MASTER_IP, REDIS_PORT, password, TIMEOUT_S))
    assert health.reachable is False
    assert health.error is not None
    assert health.error.startswith("AuthenticationError")
    assert "wrong-password-7f3e" not in health.error
    assert REDIS_PASSWORD not in health.error


def test_collect_redis_keeps_the_password_out_of_error_text(monkeypatch: pytest.MonkeyPatch) -> None:
    client = raw_client(CLOSED_IP, REDIS_PORT, REDIS_PASSWORD, 0.5)

    def leaky(*args: str) -> object:
        raise ConnectionError(f"failed with AUTH {REDIS_PASSWORD} " + "x" * 500)

    monkeypatch.setattr(client, "execute_command", leaky)
    health = collect_redis(client)
    assert health.reachable is False
    assert health.error is not None
    assert REDIS_PASSWORD not in health.error
    assert "AUTH <redacted>" in health.error
    assert len(health.error) <= 200


def test_collect_sentinel(cluster: Cluster) -> None:
    health = collect_sentinel(cluster.sentinel, None)
    assert health.reachable is True, health.error
    assert health.ping_ms is not None and health.ping_ms > 0
    assert health.myid is not None and len(health.myid) == 40
    assert [view.name for view in health.masters] == [MASTER_NAME]
    view = health.master(MASTER_NAME)
    assert view is not None
    assert view.master_address == f"{MASTER_IP}:{REDIS_PORT}"
    assert view.flags == ("master",)
    assert view.quorum == 1
    assert view.num_other_sentinels == 0
    assert view.down_after_ms == 5000
    assert view.failover_timeout_ms == 60000
    assert view.ckquorum_ok is True
    assert view.ckquorum_message is not None and view.ckquorum_message.startswith("OK 1 usable")
    assert [peer.address for peer in view.replicas] == [f"{REPLICA_IP}:{REDIS_PORT}"]
    assert view.replicas[0].replica_priority == 100
    assert view.sentinels == ()
    assert health.info_period_ms == 10000  # SENTINEL DEBUG: Redis's default


def test_collect_sentinel_reports_a_changed_info_period(cluster: Cluster) -> None:
    command(cluster.sentinel, "SENTINEL", "DEBUG", "INFO-PERIOD", "1000")
    try:
        health = collect_sentinel(cluster.sentinel, [MASTER_NAME])
    finally:
        command(cluster.sentinel, "SENTINEL", "DEBUG", "INFO-PERIOD", "10000")
    assert health.reachable is True, health.error
    assert health.info_period_ms == 1000
    assert health.master(MASTER_NAME) is not None


def test_collect_sentinel_named_masters_skip_unknown_names(cluster: Cluster) -> None:
    health = collect_sentinel(cluster.sentinel, ["no-such-master", MASTER_NAME])
    assert health.reachable is True, health.error
    assert [view.name for view in health.masters] == [MASTER_NAME]
    assert health.master("no-such-master") is None


def test_collect_sentinel_reports_noquorum_and_keeps_the_rest(cluster: Cluster) -> None:
    command(cluster.sentinel, "SENTINEL", "SET", MASTER_NAME, "quorum", "2")
    try:
        health = collect_sentinel(cluster.sentinel, [MASTER_NAME])
    finally:
        command(cluster.sentinel, "SENTINEL", "SET", MASTER_NAME, "quorum", "1")
    view = health.master(MASTER_NAME)
    assert view is not None
    assert view.quorum == 2
    assert view.ckquorum_ok is False
    assert view.ckquorum_message is not None and view.ckquorum_message.startswith("NOQUORUM 1 usable")
    assert [peer.address for peer in view.replicas] == [f"{REPLICA_IP}:{REDIS_PORT}"]


@pytest.mark.parametrize("password", [None, "wrong-password-7f3e"])
def test_collect_sentinel_with_a_bad_password(cluster: Cluster, password: str | None) -> None:
    health = collect_sentinel(raw_client(SENTINEL_IP, SENTINEL_PORT, password, TIMEOUT_S), None)
    assert health.reachable is False
    assert health.error is not None
    assert health.error.startswith("AuthenticationError")
    assert SENTINEL_PASSWORD not in health.error
    assert health.masters == ()


def test_collect_sentinel_on_a_closed_port() -> None:
    health = collect_sentinel(raw_client(CLOSED_IP, REDIS_PORT, SENTINEL_PASSWORD, 0.5), None)
    assert health.reachable is False
    assert health.error is not None
    assert SENTINEL_PASSWORD not in health.error


def test_a_master_whose_disk_is_full_is_answering_not_down(tmp_path: Path) -> None:
    """A real full disk (a 2 MiB tmpfs as its data dir): Redis refuses writes and even PING with MISCONF, but
    it is alive and serves INFO. The agent reports it reachable, with the failing AOF write, so the
    controller alerts on persistence instead of restarting it (which cures nothing and, with an AOF cut short
    by ENOSPC, can leave a Redis that no longer starts: seen in the fault campaign)."""
    import os

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    data = tmp_path / "data"
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(data)], check=True)
    proc: subprocess.Popen[bytes] | None = None
    try:
        proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.213", "--port", "6379", "--dir", str(data),
                                 "--appendonly", "yes", "--save", "", "--requirepass", REDIS_PASSWORD],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = raw_client("127.0.0.213", REDIS_PORT, REDIS_PASSWORD, TIMEOUT_S)
        wait_for("redis on the small disk", lambda: client.execute_command("PING"), [proc])
        with (data / "filler").open("wb") as fh:  # fill it to the last byte
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError:
                pass

        def refused() -> bool | None:
            try:
                client.execute_command("SET", "k", "v" * 1000)
            except ResponseError as e:
                return True if str(e).startswith("MISCONF") else None
            return None

        wait_until(lambda: bool(refused()), 15, "writes refused with MISCONF")
        health = collect_redis(client)
        assert health.reachable is True, health.error
        assert health.role == "master"
        assert health.aof_last_write_ok is False
        client.close()
    finally:
        if proc is not None:
            proc.kill()
            proc.wait(timeout=10)
        subprocess.run(["umount", "-l", str(data)], check=False)


def test_collect_redis_reports_the_one_password_posture(cluster: Cluster) -> None:
    """requirepass alone: the agent is `default`, which may run every command; a client without the password
    is refused; a Sentinel the agent reaches with a password says nothing of unauthenticated clients."""
    health = collect_redis(cluster.master, raw_client(MASTER_IP, REDIS_PORT, None, TIMEOUT_S))
    assert health.acl_user == "default" and health.default_user_all_commands is True
    assert health.open_without_auth is False and health.bind == MASTER_IP
    assert collect_sentinel(cluster.sentinel, [MASTER_NAME]).open_to_state_changes is None
    anonymous = raw_client(SENTINEL_IP, SENTINEL_PORT, None, TIMEOUT_S)
    assert collect_sentinel(cluster.sentinel, [MASTER_NAME], anonymous).open_to_state_changes is False  # NOAUTH
