"""A Redis droplet's layout: where its files live and how its Redis and Sentinel are configured.

Layer: pure. Paths are Debian's (`/etc/redis/redis.conf`, `/var/lib/redis`, `/run/redis/...`); in the
sandbox the same paths live under the droplet's own directory (`root`), so the bootstrap that runs on a
real droplet runs unchanged on a sandbox "droplet". The renderers produce complete configuration
files: exactly one `sentinel monitor` line and no `myid` (Sentinel makes a fresh one: a copied
sentinel.conf would make two Sentinels one and the same to their peers).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from protocol import sentinel
from protocol.acl import NodeUsers, channels_supported, redis_user_lines, sentinel_user_lines
from protocol.directives import split_address

SERVICES = ("redis", "sentinel", "agent")


@dataclass(frozen=True, slots=True)
class NodeLayout:
    address: str  # what Redis and Sentinel bind to and announce
    master_name: str = sentinel.MASTER_NAME
    quorum: int = sentinel.QUORUM
    down_after_ms: int = sentinel.DOWN_AFTER_MS
    failover_timeout_ms: int = sentinel.FAILOVER_TIMEOUT_MS
    parallel_syncs: int = sentinel.PARALLEL_SYNCS
    min_replicas_to_write: int = sentinel.MIN_REPLICAS_TO_WRITE
    min_replicas_max_lag_s: int = sentinel.MIN_REPLICAS_MAX_LAG_S
    redis_port: int = sentinel.REDIS_PORT
    sentinel_port: int = sentinel.SENTINEL_PORT
    root: str = ""  # "" on a real droplet; the droplet's directory in the sandbox

    def path(self, absolute: str) -> Path:
        return Path(self.root + absolute) if self.root else Path(absolute)

    @property
    def redis_conf(self) -> Path:
        return self.path("/etc/redis/redis.conf")

    @property
    def sentinel_conf(self) -> Path:
        return self.path("/etc/redis/sentinel.conf")

    @property
    def redis_data_dir(self) -> Path:
        return self.path("/var/lib/redis")

    @property
    def sentinel_dir(self) -> Path:
        return self.path("/var/lib/redis-sentinel")

    @property
    def redis_pidfile(self) -> Path:
        return self.path("/run/redis/redis-server.pid")

    @property
    def sentinel_pidfile(self) -> Path:
        return self.path("/run/sentinel/redis-sentinel.pid")

    @property
    def log_dir(self) -> Path:
        return self.path("/var/log/redwarden")

    @property
    def redis_address(self) -> str:
        return f"{self.address}:{self.redis_port}"


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def check_values(layout: NodeLayout, password: str, master: str | None) -> None:
    """Every value the renderers write into a config file, checked first (ValueError naming it): addresses
    are IP literals, the master name a plain word, the password printable and on one line. A value that came
    over the network (the Sentinels' answer, the enrollment) can then not add a line to redis.conf."""
    if split_address(layout.redis_address) is None:
        raise ValueError(f"address {layout.address!r} is not an IP literal")
    if master is not None and split_address(master) is None:
        raise ValueError(f"master {master!r} is not an IP literal and port")
    if not _NAME.fullmatch(layout.master_name):
        raise ValueError(f"master_name {layout.master_name!r} must be letters, digits, '.', '_' or '-'")
    if not password or not password.isprintable() or len(password) > 512:
        raise ValueError("the Redis password must be printable, on one line, at most 512 characters")


def render_redis_conf(layout: NodeLayout, password: str, master: str | None, users: NodeUsers | None = None,
                      version: tuple[int, int] = (7, 0)) -> str:
    """redis.conf for a master (`master` None) or a replica of `master` ("ip:port"). With `users` (ACL mode),
    a `user` line per role and the `default` user off (see `protocol.acl`) instead of one `requirepass`;
    `password` is then the replication user's (`masterauth`). `version` is redis-server's (major, minor)."""
    check_values(layout, password, master)
    if users is not None:
        auth = ["masteruser replication", f"masterauth {_quote(users.replication)}",
                *redis_user_lines(users, version)]
    else:
        auth = [f"requirepass {_quote(password)}", f"masterauth {_quote(password)}"]
    lines = [
        "# Written by redwarden-agent bootstrap. Redis and Sentinel rewrite parts of it at run time.",
        f"bind {layout.address}",
        f"port {layout.redis_port}",
        "daemonize no",
        "supervised auto",
        f"pidfile {layout.redis_pidfile}",
        'logfile ""',
        f"dir {layout.redis_data_dir}",
        "set-proc-title no",  # keep argv and environ intact: the sandbox finds its processes by them
        "protected-mode yes",
        *auth,
        f"replica-announce-ip {layout.address}",
        f"min-replicas-to-write {layout.min_replicas_to_write}",
        f"min-replicas-max-lag {layout.min_replicas_max_lag_s}",
        "appendonly yes",
        "save 60 1000",
        "repl-diskless-sync yes",
        "repl-diskless-sync-delay 0",  # a replacement or returning replica syncs at once, not 5 s later
    ]
    if master is not None:
        host, port = master.rsplit(":", 1)
        lines.append(f"replicaof {host} {port}")
    return "\n".join(lines) + "\n"


def render_sentinel_conf(layout: NodeLayout, password: str, master: str, users: NodeUsers | None = None,
                         version: tuple[int, int] = (7, 0)) -> str:
    """sentinel.conf. With `users` on Sentinel >= 6.2: its own users (discovery open, everything else for the
    peers and the controller), `auth-user sentinel` towards Redis, `sentinel-user` towards the peers, and
    `deny-scripts-reconfig`. On 6.0 (no Sentinel ACL, no auth-user) with `users`: Redis's `default` user is
    the sentinel role, so `auth-pass` is the sentinel user's password and Sentinel itself stays open."""
    check_values(layout, password, master)
    host, port = master.rsplit(":", 1)
    name = layout.master_name
    if users is None:
        auth = [f"sentinel auth-pass {name} {_quote(password)}"]
    elif channels_supported(version):
        auth = [f"sentinel auth-user {name} sentinel", f"sentinel auth-pass {name} {_quote(users.sentinel)}",
                "sentinel sentinel-user sentinel", f"sentinel sentinel-pass {_quote(users.sentinel)}",
                *sentinel_user_lines(users)]
    else:
        auth = [f"sentinel auth-pass {name} {_quote(users.sentinel)}"]
    return "\n".join([
        "# Written by redwarden-agent bootstrap: one monitor line, no myid (Sentinel generates its own).",
        f"bind {layout.address}",
        f"port {layout.sentinel_port}",
        "daemonize no",
        "supervised auto",
        f"pidfile {layout.sentinel_pidfile}",
        'logfile ""',
        f"dir {layout.sentinel_dir}",
        "set-proc-title no",  # keep argv and environ intact: the sandbox finds its processes by them
        f"sentinel announce-ip {layout.address}",
        "sentinel resolve-hostnames no",
        f"sentinel monitor {name} {host} {port} {layout.quorum}",
        "sentinel deny-scripts-reconfig yes",
        *auth,
        f"sentinel down-after-milliseconds {name} {layout.down_after_ms}",
        f"sentinel failover-timeout {name} {layout.failover_timeout_ms}",
        f"sentinel parallel-syncs {name} {layout.parallel_syncs}",
    ]) + "\n"
