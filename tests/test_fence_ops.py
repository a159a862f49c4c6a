"""The fence's Redis commands (`DirectRedisOps.fence`, `repoint_sentinel`) and the executor carrying out a
planned fence, against real redis-server and redis-sentinel processes.

Layer: tests of an adapter and the executor. Two password-protected masters on loopback addresses reserved
for these tests (the "new" one 127.0.0.230, the "old" one 127.0.0.231, each with a config file Redis may
rewrite) and a Sentinel with its own password (127.0.0.232:26379) that still monitors the old one, as a
Sentinel cut off with it does. Every process is killed in teardown, also when startup or a test fails.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from controller.adapters.redis_ops import DirectRedisOps, OpsError
from tests.helpers import wait_until

if shutil.which("redis-server") is None:
    pytest.skip("redis-server is not on PATH: these tests need a real Redis 7", allow_module_level=True)

NEW_IP, OLD_IP, SENTINEL_IP = "127.0.0.230", "127.0.0.231", "127.0.0.232"
NEW, OLD, SENTINEL = f"{NEW_IP}:6379", f"{OLD_IP}:6379", f"{SENTINEL_IP}:26379"
MASTER_NAME = "mymaster"
REDIS_PASSWORD = "fence-redis-pw-7c21e0"
SENTINEL_PASSWORD = "fence-sentinel-pw-4d9a13"


@dataclass(frozen=True)
class Nodes:
    root: Path
    procs: tuple[subprocess.Popen[bytes], ...]


def _redis(address: str, password: str = REDIS_PASSWORD) -> redis.Redis:
    host, port = address.rsplit(":", 1)
    return redis.Redis(host=host, port=int(port), password=password, socket_timeout=2, decode_responses=True)


def _start_redis(root: Path, ip: str) -> subprocess.Popen[bytes]:
    workdir = root / f"redis-{ip}"
    workdir.mkdir()
    conf = workdir / "redis.conf"
    conf.write_text(f"bind {ip}\nport 6379\ndir {workdir}\nlogfile {workdir}/redis.log\ndaemonize no\nsave ''\n"
                    f"appendonly no\nrequirepass {REDIS_PASSWORD}\nmasterauth {REDIS_PASSWORD}\n"
                    f"replica-announce-ip {ip}\n")
    return subprocess.Popen(["redis-server", str(conf)], cwd=workdir)


def _start_sentinel(root: Path) -> subprocess.Popen[bytes]:
    workdir = root / "sentinel"
    workdir.mkdir()
    conf = workdir / "sentinel.conf"
    conf.write_text(f"bind {SENTINEL_IP}\nport 26379\ndir {workdir}\nlogfile {workdir}/sentinel.log\ndaemonize no\n"
                    f"requirepass {SENTINEL_PASSWORD}\nsentinel announce-ip {SENTINEL_IP}\n"
                    f"sentinel resolve-hostnames no\nsentinel monitor {MASTER_NAME} {OLD_IP} 6379 1\n"
                    f"sentinel auth-pass {MASTER_NAME} {REDIS_PASSWORD}\n"
                    f"sentinel down-after-milliseconds {MASTER_NAME} 5000\n")
    binary = shutil.which("redis-sentinel")
    return subprocess.Popen([binary, str(conf)] if binary else ["redis-server", str(conf), "--sentinel"], cwd=workdir)


def _answers(address: str, password: str) -> bool | None:
    try:
        return True if _redis(address, password).ping() else None
    except redis.RedisError:
        return None


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs += [_start_redis(tmp_path, NEW_IP), _start_redis(tmp_path, OLD_IP), _start_sentinel(tmp_path)]
        for address, password in ((NEW, REDIS_PASSWORD), (OLD, REDIS_PASSWORD), (SENTINEL, SENTINEL_PASSWORD)):
            wait_until(lambda a=address, p=password: _answers(a, p), 30, f"{address} to answer")  # type: ignore[misc]
        yield Nodes(tmp_path, tuple(procs))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


def test_a_fence_refuses_writes_at_once_disconnects_clients_and_survives_a_restart(nodes: Nodes) -> None:
    app = _redis(OLD)
    app.set("before", "1")
    client_id = app.client_id()
    detail = DirectRedisOps(REDIS_PASSWORD, SENTINEL_PASSWORD).fence(OLD, NEW)
    assert detail.startswith("REPLICAOF OK") and "CONFIG REWRITE OK" in detail
    info = _redis(OLD).info("replication")
    assert info["role"] == "slave" and info["master_host"] == NEW_IP and info["master_port"] == 6379
    # the application's connection was killed (it reconnects and is refused writes: READONLY)
    assert app.client_id() != client_id
    with pytest.raises(redis.ReadOnlyError):
        app.set("after", "1")
    # CONFIG REWRITE: a restart keeps it a replica of the new master
    conf = (nodes.root / f"redis-{OLD_IP}" / "redis.conf").read_text()
    assert f"replicaof {NEW_IP} 6379" in conf
    # and it syncs from the new master (the fence is what Sentinel would do)
    _redis(NEW).set("on-new", "yes")
    wait_until(lambda: _redis(OLD).get("on-new"), 30, "the fenced node to sync from the new master")


def test_a_stale_sentinel_is_repointed_with_the_clusters_settings(nodes: Nodes) -> None:
    sentinel = _redis(SENTINEL, SENTINEL_PASSWORD)
    assert sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME) == [OLD_IP, "6379"]
    detail = DirectRedisOps(REDIS_PASSWORD, SENTINEL_PASSWORD).repoint_sentinel(
        SENTINEL, MASTER_NAME, NEW, quorum=2, down_after_ms=4321, failover_timeout_ms=54321, parallel_syncs=1)
    assert NEW in detail and REDIS_PASSWORD not in detail
    assert sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME) == [NEW_IP, "6379"]
    fields = _master_fields(sentinel)
    assert (fields["quorum"], fields["down-after-milliseconds"], fields["failover-timeout"]) == ("2", "4321", "54321")
    # the auth-pass took: the Sentinel reaches the new master (not flagged down for a wrong password)
    wait_until(lambda: True if "s_down" not in _flags(sentinel) and _last_ok(sentinel) < 1000 else None, 15,
               "the re-pointed Sentinel to reach the new master")
    # again on a Sentinel that already names it: idempotent
    DirectRedisOps(REDIS_PASSWORD, SENTINEL_PASSWORD).repoint_sentinel(
        SENTINEL, MASTER_NAME, NEW, quorum=2, down_after_ms=4321, failover_timeout_ms=54321, parallel_syncs=1)
    assert sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME) == [NEW_IP, "6379"]


def _master_fields(sentinel: redis.Redis) -> dict[str, str]:
    master = sentinel.execute_command("SENTINEL", "MASTER", MASTER_NAME)
    return dict(zip(master[::2], master[1::2], strict=True)) if isinstance(master, list) else dict(master)


def _flags(sentinel: redis.Redis) -> str:
    return _master_fields(sentinel)["flags"]


def _last_ok(sentinel: redis.Redis) -> int:
    return int(_master_fields(sentinel)["last-ok-ping-reply"])


def test_a_fence_that_cannot_reach_the_node_fails_without_the_password(nodes: Nodes) -> None:
    with pytest.raises(OpsError) as e:
        DirectRedisOps(REDIS_PASSWORD, SENTINEL_PASSWORD, timeout_s=0.5).fence("127.0.0.233:6379", NEW)
    assert "127.0.0.233:6379" in str(e.value) and REDIS_PASSWORD not in str(e.value)
    with pytest.raises(OpsError):
        DirectRedisOps(REDIS_PASSWORD).fence(OLD, "redis-new:6379")  # not an IP literal: nothing sent
    assert _redis(OLD).info("replication")["role"] == "master"
