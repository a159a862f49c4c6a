"""The controller's own Redis and Sentinel commands: SENTINEL FAILOVER, SENTINEL RESET, SENTINEL SET
down-after-milliseconds, SENTINEL DEBUG INFO-PERIOD, REPLICAOF.

Layer: adapter. Short timeouts, no retries: the next cycle decides again from fresh facts. Errors come
back as `OpsError` with the address and the server's message, never a password.
"""

from __future__ import annotations

from typing import Protocol, cast

import redis

from protocol.directives import split_address


class OpsError(Exception):
    """A Redis or Sentinel command failed."""


class RedisOps(Protocol):
    def failover(self, sentinel: str, master_name: str) -> str: ...
    def reset_sentinel(self, sentinel: str, master_name: str) -> str: ...
    def set_down_after(self, sentinel: str, master_name: str, down_after_ms: int) -> str: ...
    def info_period(self, sentinel: str) -> int: ...
    def set_info_period(self, sentinel: str, info_period_ms: int) -> str: ...
    def replicaof(self, node: str, master: str) -> str: ...


class DirectRedisOps:
    def __init__(self, redis_password: str | None, sentinel_password: str | None = None, timeout_s: float = 2.0):
        self._redis_password = redis_password
        self._sentinel_password = sentinel_password
        self._timeout_s = timeout_s

    def _run(self, address: str, password: str | None, *command: str) -> str:
        return str(self._call(address, password, *command))

    def _call(self, address: str, password: str | None, *command: str) -> object:
        host, port = address.rsplit(":", 1)
        client = redis.Redis(host=host, port=int(port), password=password, socket_timeout=self._timeout_s,
                             socket_connect_timeout=self._timeout_s, decode_responses=True)
        try:
            reply = client.execute_command(*command)  # type: ignore[no-untyped-call]
        except (redis.RedisError, OSError) as e:
            text = str(e)
            for secret in (self._redis_password, self._sentinel_password):
                if secret:
                    text = text.replace(secret, "<redacted>")
            raise OpsError(f"{' '.join(command[:2])} on {address} failed: {type(e).__name__}: {text[:200]}") from None
        finally:
            client.close()
        return cast(object, reply)

    def failover(self, sentinel: str, master_name: str) -> str:
        return self._run(sentinel, self._sentinel_password, "SENTINEL", "FAILOVER", master_name)

    def reset_sentinel(self, sentinel: str, master_name: str) -> str:
        return self._run(sentinel, self._sentinel_password, "SENTINEL", "RESET", master_name)

    def set_down_after(self, sentinel: str, master_name: str, down_after_ms: int) -> str:
        """SENTINEL SET <master> down-after-milliseconds (Sentinel rewrites its own file: it outlives a restart)."""
        if not 0 < down_after_ms <= 86_400_000:
            raise OpsError(f"down-after-milliseconds {down_after_ms!r} is out of range")
        return self._run(sentinel, self._sentinel_password, "SENTINEL", "SET", master_name,
                         "down-after-milliseconds", str(int(down_after_ms)))

    def info_period(self, sentinel: str) -> int:
        """The Sentinel's INFO-PERIOD from SENTINEL DEBUG (Redis >= 7.0; an older one answers an error: OpsError)."""
        reply = self._call(sentinel, self._sentinel_password, "SENTINEL", "DEBUG")
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
                         str(int(info_period_ms)))

    def replicaof(self, node: str, master: str) -> str:
        """REPLICAOF, then CONFIG REWRITE so that the change outlives a restart (Redis writes its own file)."""
        if split_address(master) is None or split_address(node) is None:
            raise OpsError(f"REPLICAOF wants IP literals and ports, not {node!r} -> {master!r}")
        host, port = master.rsplit(":", 1)
        reply = self._run(node, self._redis_password, "REPLICAOF", host, port)
        self._run(node, self._redis_password, "CONFIG", "REWRITE")
        return reply
