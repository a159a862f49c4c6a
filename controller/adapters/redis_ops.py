"""The controller's own Redis and Sentinel commands: SENTINEL FAILOVER, SENTINEL RESET, SENTINEL SET
down-after-milliseconds, SENTINEL DEBUG INFO-PERIOD, REPLICAOF, and a fence (REPLICAOF + CLIENT KILL +
CONFIG REWRITE) with the re-pointing of a stale Sentinel. In ACL mode (`protocol.acl`) it is the `admin`
user on both Redis and Sentinel.

Layer: adapter. Short timeouts, no retries: the next cycle decides again from fresh facts. Errors come
back as `OpsError` with the address and the server's message, never a password.
"""

from __future__ import annotations

from typing import Protocol, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from protocol.directives import split_address


class OpsError(Exception):
    """A Redis or Sentinel command failed."""


class _Unauthenticated(Exception):
    """A Sentinel without users refused AUTH: ask it again without a password."""


class _NoSuchUser(Exception):
    """AUTH as `username` was refused: a cluster not yet moved to ACL users (`redwarden cluster secure`)."""


class RedisOps(Protocol):
    def failover(self, sentinel: str, master_name: str) -> str: ...
    def reset_sentinel(self, sentinel: str, master_name: str) -> str: ...
    def set_down_after(self, sentinel: str, master_name: str, down_after_ms: int) -> str: ...
    def info_period(self, sentinel: str) -> int: ...
    def set_info_period(self, sentinel: str, info_period_ms: int) -> str: ...
    def replicaof(self, node: str, master: str) -> str: ...
    def fence(self, node: str, master: str) -> str: ...
    def repoint_sentinel(self, sentinel: str, master_name: str, master: str, quorum: int, down_after_ms: int,
                         failover_timeout_ms: int, parallel_syncs: int) -> str: ...


_NO_PASSWORD_SET = "without any password configured"  # AUTH to a server that has no users (Sentinel 6.0)


class DirectRedisOps:
    """`username` (ACL mode: "admin") authenticates to Redis and Sentinel alike; a Sentinel too old for ACLs
    (6.0: no users, no password) answers AUTH with "no password configured", and is then asked without."""

    def __init__(self, redis_password: str | None, sentinel_password: str | None = None, timeout_s: float = 2.0,
                 username: str | None = None, sentinel_auth: tuple[str, str] | None = None,
                 fallback_password: str | None = None):
        """`sentinel_auth`: the user and password a Sentinel logs in to Redis with (ACL mode: `sentinel`), for
        a re-pointed Sentinel's `auth-user`/`auth-pass`; None: `auth-pass` is the Redis password.
        `fallback_password`: where AUTH as `username` is refused (a cluster being moved to ACL users), Redis
        is asked again as `default` with it, and Sentinel without a password."""
        self._fallback_password = fallback_password
        self._redis_password = redis_password
        self._sentinel_password = sentinel_password
        self._timeout_s = timeout_s
        self._username = username
        self._sentinel_auth = sentinel_auth

    def _run(self, address: str, password: str | None, *command: str, sentinel: bool = False) -> str:
        return str(self._call(address, password, *command, sentinel=sentinel))

    def _call(self, address: str, password: str | None, *command: str, sentinel: bool = False) -> object:
        """One command; its reply as redis-py decodes it."""
        return self._calls(address, password, [command], sentinel=sentinel)[0]

    def _run_all(self, address: str, password: str | None, commands: list[tuple[str, ...]],
                 sentinel: bool = False) -> list[str]:
        return [str(reply) for reply in self._calls(address, password, commands, sentinel=sentinel)]

    def _calls(self, address: str, password: str | None, commands: list[tuple[str, ...]],
               sentinel: bool = False) -> list[object]:
        """The commands in order on one connection; the first that fails raises (the rest are not sent). A
        Sentinel too old for users (6.0) refuses AUTH: it is asked again without a password; AUTH as
        `username` refused (a cluster not yet moved to ACL users): again with the fallback password."""
        try:
            return self._once(address, password, commands, sentinel)
        except _Unauthenticated:
            return self._once(address, None, commands, False)
        except _NoSuchUser:
            return self._once(address, None if sentinel else self._fallback_password, commands, False, plain=True)

    def _once(self, address: str, password: str | None, commands: list[tuple[str, ...]],
              sentinel: bool, plain: bool = False) -> list[object]:
        host, port = address.rsplit(":", 1)
        username = self._username if password and not plain else None
        client = redis.Redis(host=host, port=int(port), password=password, socket_timeout=self._timeout_s,
                             username=username, retry=Retry(NoBackoff(), 0),
                             socket_connect_timeout=self._timeout_s, decode_responses=True)
        replies: list[object] = []
        try:
            for command in commands:
                try:
                    replies.append(cast(object, client.execute_command(*command)))  # type: ignore[no-untyped-call]
                except (redis.RedisError, OSError) as e:
                    if sentinel and password and not replies and _NO_PASSWORD_SET in str(e):
                        raise _Unauthenticated() from None
                    if username and self._fallback_password and not replies and \
                            isinstance(e, redis.AuthenticationError):
                        raise _NoSuchUser() from None
                    text = str(e)
                    for secret in (self._redis_password, self._sentinel_password, self._fallback_password,
                                   self._sentinel_auth[1] if self._sentinel_auth else None):
                        if secret:
                            text = text.replace(secret, "<redacted>")
                    done = f" (after {len(replies)} of {len(commands)} commands)" if replies else ""
                    raise OpsError(f"{' '.join(command[:2])} on {address} failed{done}: {type(e).__name__}: "
                                   f"{text[:200]}") from None
        finally:
            client.close()
        return replies

    def failover(self, sentinel: str, master_name: str) -> str:
        return self._run(sentinel, self._sentinel_password, "SENTINEL", "FAILOVER", master_name, sentinel=True)

    def reset_sentinel(self, sentinel: str, master_name: str) -> str:
        return self._run(sentinel, self._sentinel_password, "SENTINEL", "RESET", master_name, sentinel=True)

    def set_down_after(self, sentinel: str, master_name: str, down_after_ms: int) -> str:
        """SENTINEL SET <master> down-after-milliseconds (Sentinel rewrites its own file: it outlives a restart)."""
        if not 0 < down_after_ms <= 86_400_000:
            raise OpsError(f"down-after-milliseconds {down_after_ms!r} is out of range")
        return self._run(sentinel, self._sentinel_password, "SENTINEL", "SET", master_name,
                         "down-after-milliseconds", str(int(down_after_ms)), sentinel=True)

    def info_period(self, sentinel: str) -> int:
        """The Sentinel's INFO-PERIOD from SENTINEL DEBUG (Redis >= 7.0; an older one answers an error: OpsError)."""
        reply = self._call(sentinel, self._sentinel_password, "SENTINEL", "DEBUG", sentinel=True)
        if isinstance(reply, dict):  # redis-py pairs the flat list up itself
            fields = {str(k): str(v) for k, v in reply.items()}
        else:
            items = [str(x) for x in reply] if isinstance(reply, list) else []
            fields = dict(zip(items[0::2], items[1::2], strict=False))
        value = fields.get("INFO-PERIOD", "")
        if not value.isdigit():
            raise OpsError(f"SENTINEL DEBUG on {sentinel} did not list INFO-PERIOD")
        return int(value)

    def set_info_period(self, sentinel: str, info_period_ms: int) -> str:
        """SENTINEL DEBUG INFO-PERIOD: runtime only (Sentinel never writes it to its file; a restart resets it)."""
        if not 0 < info_period_ms <= 3_600_000:
            raise OpsError(f"INFO-PERIOD {info_period_ms!r} is out of range")
        return self._run(sentinel, self._sentinel_password, "SENTINEL", "DEBUG", "INFO-PERIOD",
                         str(int(info_period_ms)), sentinel=True)

    def replicaof(self, node: str, master: str) -> str:
        """REPLICAOF, then CONFIG REWRITE so that the change outlives a restart (Redis writes its own file)."""
        if split_address(master) is None or split_address(node) is None:
            raise OpsError(f"REPLICAOF wants IP literals and ports, not {node!r} -> {master!r}")
        host, port = master.rsplit(":", 1)
        reply = self._run(node, self._redis_password, "REPLICAOF", host, port)
        self._run(node, self._redis_password, "CONFIG", "REWRITE")
        return reply

    def fence(self, node: str, master: str) -> str:
        """Make an old master a replica of `master` at once: REPLICAOF (its writes are refused from now on:
        READONLY), CLIENT KILL TYPE normal (its clients reconnect and ask Sentinel again; this connection is
        spared, SKIPME is the default), then CONFIG REWRITE (a restart keeps it a replica). What Sentinel
        itself sends an old master it reconfigures."""
        if split_address(master) is None or split_address(node) is None:
            raise OpsError(f"a fence wants IP literals and ports, not {node!r} -> {master!r}")
        host, port = master.rsplit(":", 1)
        replies = self._run_all(node, self._redis_password, [
            ("REPLICAOF", host, port), ("CLIENT", "KILL", "TYPE", "normal"), ("CONFIG", "REWRITE")])
        return f"REPLICAOF {replies[0]}, {replies[1]} client(s) disconnected, CONFIG REWRITE {replies[2]}"

    def repoint_sentinel(self, sentinel: str, master_name: str, master: str, quorum: int, down_after_ms: int,
                         failover_timeout_ms: int, parallel_syncs: int) -> str:
        """Make a Sentinel monitor `master` under `master_name` afresh (SENTINEL REMOVE, MONITOR, SET with the
        cluster's settings and the Redis password): for a Sentinel cut off from its peers that still names a
        fenced old master. It relearns its peers and replicas from the master's hello channel once it can."""
        if split_address(master) is None or split_address(sentinel) is None:
            raise OpsError(f"SENTINEL MONITOR wants IP literals and ports, not {sentinel!r} -> {master!r}")
        host, port = master.rsplit(":", 1)
        settings = ["down-after-milliseconds", str(down_after_ms), "failover-timeout", str(failover_timeout_ms),
                    "parallel-syncs", str(parallel_syncs)]
        if self._sentinel_auth is not None:
            settings = ["auth-user", self._sentinel_auth[0], "auth-pass", self._sentinel_auth[1], *settings]
        elif self._redis_password:
            settings = ["auth-pass", self._redis_password, *settings]
        try:
            self._run(sentinel, self._sentinel_password, "SENTINEL", "REMOVE", master_name, sentinel=True)
        except OpsError as e:
            if "no such master" not in str(e).lower():
                raise
        self._run_all(sentinel, self._sentinel_password, [
            ("SENTINEL", "MONITOR", master_name, host, port, str(quorum)),
            ("SENTINEL", "SET", master_name, *settings)], sentinel=True)
        return f"{master_name} monitored at {master} (quorum {quorum}, down-after {down_after_ms} ms)"
