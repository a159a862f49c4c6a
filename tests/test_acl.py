"""Least privilege in Redis and Sentinel (issue #13), against real redis-server and redis-sentinel processes.

Layer: integration tests. A module-scoped fixture builds a three-node cluster exactly as bootstrap writes
it in ACL mode (`agent.bootstrap.write_configs` with `protocol.acl.NodeUsers`) on loopback addresses
claimed like a sandbox's, waits (polling, with deadlines) until replication and the Sentinels are complete,
and kills every process in teardown, also when startup or a test fails. The one test that changes the
topology (a failover as the controller's admin) runs last.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
import redis.sentinel

from agent.bootstrap import redis_server_version, write_configs
from agent.collect_redis import collect_redis, collect_sentinel, raw_client
from agent.layout import NodeLayout
from controller.adapters.redis_ops import DirectRedisOps, OpsError
from protocol.acl import ClusterUsers
from sandbox.addresses import claim_addresses, release_addresses
from tests.helpers import wait_until

if shutil.which("redis-server") is None or shutil.which("redis-sentinel") is None:
    pytest.skip("redis-server and redis-sentinel are needed", allow_module_level=True)

MASTER_NAME = "mymaster"


@dataclass(frozen=True)
class AclCluster:
    addresses: list[str]
    users: ClusterUsers
    app_password: str
    discovery_password: str
    layouts: list[NodeLayout]

    def redis(self, address: str, user: str | None, password: str | None, db: int = 0) -> redis.Redis:
        return redis.Redis(host=address, port=6379, username=user, password=password, db=db, socket_timeout=3,
                           decode_responses=True)

    def app(self, address: str, db: int = 0) -> redis.Redis:
        return self.redis(address, "app", self.app_password, db)

    def admin(self, address: str) -> redis.Redis:
        return self.redis(address, "admin", self.users.admin)

    def sentinel(self, address: str, user: str | None = None, password: str | None = None) -> redis.Redis:
        return redis.Redis(host=address, port=26379, username=user, password=password, socket_timeout=3,
                           decode_responses=True)

    def discovery(self, **kwargs: Any) -> redis.sentinel.Sentinel:
        return redis.sentinel.Sentinel([(a, 26379) for a in self.addresses], socket_timeout=3,
                                       sentinel_kwargs=kwargs or None)

    def master(self) -> str:
        host, port = self.discovery().discover_master(MASTER_NAME)
        return f"{host}:{port}"


def _complete(cluster: AclCluster) -> bool:
    """Two replicas online on the master, and every Sentinel knowing the other two and both replicas (asked
    without a password: discovery is open)."""
    master = cluster.master().rsplit(":", 1)[0]
    if cluster.admin(master).info("replication").get("connected_slaves") != 2:
        return False
    for a in cluster.addresses:
        s = cluster.sentinel(a)
        if len(s.execute_command("SENTINEL", "SENTINELS", MASTER_NAME)) != 2:
            return False
        replicas = s.execute_command("SENTINEL", "REPLICAS", MASTER_NAME)
        if len(replicas) != 2 or any("disconnected" in str(r) or "s_down" in str(r) for r in replicas):
            return False
    return True


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclCluster]:
    root = tmp_path_factory.mktemp("acl")
    (root / "sandbox.json").write_text(json.dumps({"up": True}))  # our address claims count as held
    addresses = claim_addresses(root, 3, (6379, 26379))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        users, app_password, discovery_password = ClusterUsers.generate(lambda: secrets.token_hex(16))
        version = redis_server_version()
        layouts = [NodeLayout(address=a, quorum=2, down_after_ms=2000, root=str(root / a)) for a in addresses]
        for i, layout in enumerate(layouts):
            write_configs(layout, users.node_users(), None if i == 0 else layouts[0].redis_address, version)
            log = (root / f"{layout.address}.log").open("wb")
            procs.append(subprocess.Popen(["redis-server", str(layout.redis_conf)], stdout=log, stderr=log))
            procs.append(subprocess.Popen(["redis-sentinel", str(layout.sentinel_conf)], stdout=log, stderr=log))
        c = AclCluster(addresses, users, app_password, discovery_password, layouts)
        wait_until(lambda: all(p.poll() is None for p in procs) and _complete(c), 60, "the ACL cluster to form")
        yield c
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
        release_addresses(root, addresses)


REFUSED_TO_APP = [
    ("CONFIG", "SET", "maxmemory", "1"),
    ("CONFIG", "GET", "masterauth"),
    ("REPLICAOF", "127.0.0.1", "6380"),
    ("SHUTDOWN", "NOSAVE"),
    ("DEBUG", "SLEEP", "0"),
    ("FLUSHALL",),
    ("MODULE", "LOAD", "/nonexistent.so"),
    ("ACL", "SETUSER", "intruder", "on", ">pw", "+@all"),
    ("CLIENT", "KILL", "TYPE", "replica"),
    ("MONITOR",),
    ("SAVE",),
    ("FAILOVER",),
]


@pytest.mark.parametrize("command", REFUSED_TO_APP, ids=lambda c: " ".join(c[:2]))
def test_the_app_credential_cannot_administer_redis(cluster: AclCluster, command: tuple[str, ...]) -> None:
    """NOPERM; DEBUG and MODULE are also off for everyone (enable-debug-command / enable-module-command no,
    Redis 7's defaults), which Redis checks first."""
    master = cluster.master().rsplit(":", 1)[0]
    with pytest.raises(redis.exceptions.ResponseError, match="^(NOPERM|this user has no permissions)|not allowed"):
        cluster.app(master).execute_command(*command)


def test_the_app_credential_runs_what_magento_sends(cluster: AclCluster) -> None:
    master = cluster.master().rsplit(":", 1)[0]
    app = cluster.app(master)
    app.hset("zc:k:abc", mapping={"d": "data", "t": "tag1"})
    app.sadd("zc:ti:tag1", "abc")
    app.expire("zc:k:abc", 600)
    clean = app.register_script("return redis.call('SMEMBERS', KEYS[1])")  # EVALSHA, EVAL on NOSCRIPT
    assert clean(keys=["zc:ti:tag1"]) == ["abc"]
    assert app.eval("return redis.call('HGET', KEYS[1], 'd')", 1, "zc:k:abc") == "data"
    assert "redis_version" in app.info()
    sessions = cluster.app(master, db=2)  # Cm_RedisSession's own database, cleared with FLUSHDB
    sessions.set("sess:1", "x")
    assert sessions.flushdb() and sessions.dbsize() == 0
    assert app.hget("zc:k:abc", "d") == "data"  # FLUSHDB of db 2 left db 0 alone
    with pytest.raises(redis.exceptions.ResponseError, match="can't run this command"):  # the caller's rights
        app.eval("return redis.call('FLUSHALL')", 0)


def test_redis_refuses_a_client_without_credentials(cluster: AclCluster) -> None:
    for a in cluster.addresses:
        with pytest.raises(redis.exceptions.AuthenticationError):
            cluster.redis(a, None, None).ping()
        with pytest.raises(redis.exceptions.AuthenticationError):  # `default` is off: its old password is no key
            cluster.redis(a, None, cluster.app_password).ping()


def test_the_replication_and_monitor_users_do_only_their_jobs(cluster: AclCluster) -> None:
    a = cluster.addresses[1]
    replication = cluster.redis(a, "replication", cluster.users.replication)
    assert replication.ping()
    for command in (("GET", "zc:k:abc"), ("INFO",), ("CONFIG", "GET", "bind")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            replication.execute_command(*command)
    monitor = cluster.redis(a, "monitor", cluster.users.monitor)
    assert monitor.info("replication")["role"] == "slave"
    for command in (("GET", "zc:k:abc"), ("CONFIG", "SET", "maxmemory", "1"), ("SHUTDOWN",), ("FLUSHALL",),
                    ("ACL", "GETUSER", "default"), ("CLIENT", "LIST"), ("CLIENT", "NO-EVICT", "on")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            monitor.execute_command(*command)
    # the agent's local fence (agent/fence.py): a pause that lapses by itself, its end, and the disconnect
    assert monitor.execute_command("CLIENT", "PAUSE", "1", "WRITE") in (b"OK", "OK", True)
    assert monitor.execute_command("CLIENT", "UNPAUSE") in (b"OK", "OK", True)
    assert monitor.execute_command("CLIENT", "KILL", "ID", "999999999") == 0  # allowed (no such client)


def test_the_agent_collects_as_monitor_and_reports_a_locked_down_node(cluster: AclCluster) -> None:
    a = cluster.addresses[1]
    health = collect_redis(raw_client(a, 6379, cluster.users.monitor, 2.0, username="monitor"),
                           raw_client(a, 6379, None, 2.0))
    assert health.reachable and health.role == "replica" and health.master_link_status == "up"
    assert health.acl_user == "monitor" and health.open_without_auth is False
    assert health.default_user_all_commands is None  # monitor may not ask: the anonymous probe covers it
    assert health.protected_mode is True and health.bind == a
    sentinel = collect_sentinel(raw_client(a, 26379, None, 2.0), [MASTER_NAME])
    assert sentinel.reachable and sentinel.myid and sentinel.masters[0].ckquorum_ok is True
    assert len(sentinel.masters[0].replicas) == 2 and len(sentinel.masters[0].sentinels) == 2
    assert sentinel.open_to_state_changes is False


def test_sentinel_answers_discovery_without_a_password(cluster: AclCluster) -> None:
    master = cluster.master()
    discovery = cluster.discovery()
    assert len(discovery.discover_slaves(MASTER_NAME)) == 2
    assert discovery.master_for(MASTER_NAME, username="app", password=cluster.app_password).set("via", "sentinel")
    s = cluster.sentinel(cluster.addresses[2])
    assert s.ping()
    described = s.sentinel_master(MASTER_NAME)
    assert f"{described['ip']}:{described['port']}" == master
    assert len(s.execute_command("SENTINEL", "MASTERS")) == 1
    pubsub = s.pubsub()
    pubsub.subscribe("+switch-master")  # the event clients follow failovers with
    message = wait_until(lambda: pubsub.get_message(timeout=0.5), 5, "the subscription's confirmation")
    assert message["type"] == "subscribe"
    pubsub.close()


SENTINEL_STATE_CHANGES = [
    ("SENTINEL", "FAILOVER", MASTER_NAME),
    ("SENTINEL", "REMOVE", MASTER_NAME),
    ("SENTINEL", "RESET", MASTER_NAME),
    ("SENTINEL", "SET", MASTER_NAME, "quorum", "1"),
    ("SENTINEL", "MONITOR", "other", "127.0.0.1", "6379", "1"),
    ("SENTINEL", "CONFIG", "SET", "resolve-hostnames", "yes"),
    ("SENTINEL", "FLUSHCONFIG"),
    ("SENTINEL", "SIMULATE-FAILURE", "crash-after-election"),
    ("SENTINEL", "IS-MASTER-DOWN-BY-ADDR", "127.0.0.1", "6379", "0", "*"),
    ("PUBLISH", "__sentinel__:hello", "forged"),
    ("ACL", "SETUSER", "intruder", "on", ">pw", "+@all"),
    ("SHUTDOWN",),
]


@pytest.mark.parametrize("command", SENTINEL_STATE_CHANGES, ids=lambda c: " ".join(c[:2]))
@pytest.mark.parametrize("as_user", ["anonymous", "discovery"])
def test_sentinel_takes_no_state_change_from_clients(cluster: AclCluster, command: tuple[str, ...],
                                                     as_user: str) -> None:
    user, password = ("discovery", cluster.discovery_password) if as_user == "discovery" else (None, None)
    with pytest.raises(redis.exceptions.NoPermissionError):
        cluster.sentinel(cluster.addresses[0], user, password).execute_command(*command)


def test_the_app_credential_opens_no_sentinel(cluster: AclCluster) -> None:
    with pytest.raises(redis.exceptions.AuthenticationError):
        cluster.sentinel(cluster.addresses[0], "app", cluster.app_password).execute_command(
            "SENTINEL", "FAILOVER", MASTER_NAME)
    with pytest.raises(OpsError, match="invalid username-password pair"):  # nor do the controller's ops with it
        DirectRedisOps(cluster.app_password, cluster.app_password, username="app").failover(
            f"{cluster.addresses[0]}:26379", MASTER_NAME)


def test_the_discovery_user_discovers(cluster: AclCluster) -> None:
    discovery = cluster.discovery(username="discovery", password=cluster.discovery_password)
    host, port = discovery.discover_master(MASTER_NAME)
    assert f"{host}:{port}" == cluster.master()
    with pytest.raises(redis.exceptions.AuthenticationError):
        cluster.discovery(username="discovery", password="wrong").sentinels[0].ping()


PHP_CLIENT = r"""
$master = null;
foreach (explode(",", getenv("SENTINELS")) as $address) {
    [$host, $port] = explode(":", $address);
    try {
        $sentinel = new RedisSentinel($host, (int)$port, 2.0);  // php-redis 5.3: no way to authenticate
        $master = $sentinel->getMasterAddrByName("mymaster");
        if ($master) break;
    } catch (Exception $e) {}
}
try {
    $failover = $sentinel->failover("mymaster");
} catch (RedisException $e) {
    $failover = $e->getMessage();
}
$redis = new Redis();
$redis->connect($master[0], (int)$master[1], 2.0);
$redis->auth(["app", getenv("APP_PASSWORD")]);
$written = $redis->set(getenv("KEY"), "php");
echo json_encode(["master" => $master[0] . ":" . $master[1], "written" => $written, "failover" => $failover]);
"""


def _php_discovers_and_writes(cluster: AclCluster, key: str) -> str | None:
    """php-redis's RedisSentinel, as a Magento on Debian 12 has it: discovery without a password, then a
    write as `app`; its SENTINEL FAILOVER must be refused. The master it wrote to, or None without PHP."""
    if shutil.which("php") is None:
        return None
    probe = subprocess.run(["php", "-r", "echo class_exists('RedisSentinel') ? 'yes' : 'no';"], capture_output=True,
                           text=True, timeout=30)
    if probe.stdout != "yes":
        return None
    env = {"SENTINELS": ",".join(f"{a}:26379" for a in cluster.addresses), "APP_PASSWORD": cluster.app_password,
           "KEY": key, "PATH": "/usr/bin:/bin"}  # the password by environment, never on a command line
    done = subprocess.run(["php", "-r", PHP_CLIENT], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr[-500:]
    answer = json.loads(done.stdout)
    assert answer["written"] is True and "NOPERM" in answer["failover"]
    assert cluster.app(answer["master"].rsplit(":", 1)[0]).get(key) == "php"
    return str(answer["master"])


def test_zz_failover_by_the_controllers_admin_keeps_replication(cluster: AclCluster) -> None:
    """Runs last (it moves the master): the controller's SENTINEL FAILOVER as `admin`, then the Sentinels
    reconfigure every replica with their own user (REPLICAOF + CONFIG REWRITE) and the replicas follow the
    new master as `replication`; the application writes on, through discovery, as `app`."""
    old = cluster.master()
    old_host = old.rsplit(":", 1)[0]
    assert _php_discovers_and_writes(cluster, "php-before") in (old, None)
    assert cluster.app(old_host).set("before", "1")
    assert cluster.app(old_host).execute_command("WAIT", "2", "5000") == 2
    ops = DirectRedisOps(cluster.users.admin, cluster.users.admin, username="admin")
    sentinel = next(a for a in cluster.addresses if f"{a}:6379" != old)
    assert ops.failover(f"{sentinel}:26379", MASTER_NAME) == "OK"
    new = wait_until(lambda: (m := cluster.master()) != old and m, 30, "a new master")
    new_host = new.rsplit(":", 1)[0]
    writer = cluster.discovery().master_for(MASTER_NAME, username="app", password=cluster.app_password,
                                            decode_responses=True)
    assert writer.set("after", "2") and writer.get("before") == "1"
    wait_until(lambda: _complete(cluster), 30, "both replicas online under the new master")
    assert cluster.app(new_host).execute_command("WAIT", "2", "5000") == 2
    old_layout = next(lay for lay in cluster.layouts if lay.redis_address == old)
    assert f"replicaof {new_host} 6379" in old_layout.redis_conf.read_text()  # Sentinel's CONFIG REWRITE
    assert cluster.admin(old_host).info("replication")["master_link_status"] == "up"
    assert ops.replicaof(old, new).startswith("OK")  # the controller's own healing command, as admin
    assert _php_discovers_and_writes(cluster, "php-after") in (new, None)  # PHP follows the failover
