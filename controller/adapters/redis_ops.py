"""The controller's own Redis and Sentinel commands: SENTINEL FAILOVER, SENTINEL RESET, REPLICAOF.
In ACL mode (`protocol.acl`) it is the `admin` user on both Redis and Sentinel.

Layer: adapter. Short timeouts, no retries: the next cycle decides again from fresh facts. Errors come
back as `OpsError` with the address and the server's message, never a password.
"""

from __future__ import annotations

from typing import Protocol

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
    def replicaof(self, node: str, master: str) -> str: ...


_NO_PASSWORD_SET = "without any password configured"  # AUTH to a server that has no users (Sentinel 6.0)


class DirectRedisOps:
    """`username` (ACL mode: "admin") authenticates to Redis and Sentinel alike; a Sentinel too old for ACLs
    (6.0: no users, no password) answers AUTH with "no password configured", and is then asked without."""

    def __init__(self, redis_password: str | None, sentinel_password: str | None = None, timeout_s: float = 2.0,
                 username: str | None = None, fallback_password: str | None = None):
        """`fallback_password`: where AUTH as `username` is refused (a cluster being moved to ACL users), Redis
        is asked again as `default` with it, and Sentinel without a password."""
        self._fallback_password = fallback_password
        self._redis_password = redis_password
        self._sentinel_password = sentinel_password
        self._timeout_s = timeout_s
        self._username = username

    def _run(self, address: str, password: str | None, *command: str, sentinel: bool = False) -> str:
        try:
            return self._once(address, password, *command, sentinel=sentinel)
        except _Unauthenticated:
            return self._once(address, None, *command)
        except _NoSuchUser:
            return self._once(address, None if sentinel else self._fallback_password, *command, plain=True)

    def _once(self, address: str, password: str | None, *command: str, sentinel: bool = False,
              plain: bool = False) -> str:
        host, port = address.rsplit(":", 1)
        username = self._username if password and not plain else None
        client = redis.Redis(host=host, port=int(port), password=password, socket_timeout=self._timeout_s,
                             username=username, retry=Retry(NoBackoff(), 0),
                             socket_connect_timeout=self._timeout_s, decode_responses=True)
        try:
            reply = client.execute_command(*command)  # type: ignore[no-untyped-call]
        except (redis.RedisError, OSError) as e:
            if sentinel and password and _NO_PASSWORD_SET in str(e):
                raise _Unauthenticated() from None
            if username and self._fallback_password and isinstance(e, redis.AuthenticationError):
                raise _NoSuchUser() from None
            text = str(e)
            for secret in (self._redis_password, self._sentinel_password, self._fallback_password):
                if secret:
                    text = text.replace(secret, "<redacted>")
            raise OpsError(f"{' '.join(command[:2])} on {address} failed: {type(e).__name__}: {text[:200]}") from None
        finally:
            client.close()
        return str(reply)

    def failover(self, sentinel: str, master_name: str) -> str:
        return self._run(sentinel, self._sentinel_password, "SENTINEL", "FAILOVER", master_name, sentinel=True)

    def reset_sentinel(self, sentinel: str, master_name: str) -> str:
        return self._run(sentinel, self._sentinel_password, "SENTINEL", "RESET", master_name, sentinel=True)

    def replicaof(self, node: str, master: str) -> str:
        """REPLICAOF, then CONFIG REWRITE so that the change outlives a restart (Redis writes its own file)."""
        if split_address(master) is None or split_address(node) is None:
            raise OpsError(f"REPLICAOF wants IP literals and ports, not {node!r} -> {master!r}")
        host, port = master.rsplit(":", 1)
        reply = self._run(node, self._redis_password, "REPLICAOF", host, port)
        self._run(node, self._redis_password, "CONFIG", "REWRITE")
        return reply
