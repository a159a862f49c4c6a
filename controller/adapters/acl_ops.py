"""The Redis and Sentinel commands of `redwarden cluster secure` (the migration to ACL users).

Layer: adapter. Each call opens its own connection, authenticated as `admin` where that user exists yet and
otherwise as the cluster's one `requirepass` (Redis) or without a password (a Sentinel from before users);
`try_auth` asks whether a given user and password are accepted on a fresh connection. Errors come back as
`OpsError` naming the address and the command's first words, with every secret cut out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from controller.adapters.redis_ops import OpsError


class AclOps:
    def __init__(self, admin_password: str, legacy_password: str | None, secrets: Sequence[str] = (),
                 timeout_s: float = 2.0, also_admin: str | None = None) -> None:
        self._admin = admin_password
        self._also_admin = also_admin  # during admin's rotation: the other of its two secrets
        self._legacy = legacy_password
        self._secrets = tuple(s for s in (admin_password, legacy_password, *secrets) if s)
        self._timeout_s = timeout_s

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "<redacted>")
        return text

    def _client(self, address: str, username: str | None, password: str | None) -> redis.Redis:
        host, port = address.rsplit(":", 1)
        # no retries: redis-py's default retries a refused AUTH (an AuthenticationError is a ConnectionError)
        return redis.Redis(host=host, port=int(port), username=username, password=password, decode_responses=True,
                           socket_timeout=self._timeout_s, socket_connect_timeout=self._timeout_s,
                           retry=Retry(NoBackoff(), 0))

    def _connected(self, address: str, sentinel: bool) -> redis.Redis:
        """A client as admin if admin is accepted (with either of its secrets), else as the legacy credential."""
        for password in (self._admin, self._also_admin):
            if password is None:
                continue
            client = self._client(address, "admin", password)
            try:
                client.ping()
                return client
            except redis.AuthenticationError:
                client.close()
            except redis.ResponseError as e:  # a Sentinel 6.0 without users: "no password is set"
                client.close()
                if "password" not in str(e):
                    raise
        return self._client(address, None, None if sentinel else self._legacy)

    def run(self, address: str, *command: str, sentinel: bool = False) -> Any:
        try:
            client = self._connected(address, sentinel)
            try:
                return client.execute_command(*command)  # type: ignore[no-untyped-call]
            finally:
                client.close()
        except (redis.RedisError, OSError) as e:
            raise OpsError(f"{' '.join(command[:2])} on {address} failed: {type(e).__name__}: "
                           f"{self._scrub(str(e))[:200]}") from None

    def client_list(self, address: str, sentinel: bool = False) -> list[dict[str, str]]:
        """CLIENT LIST as one dict per client (id, addr, name, user, flags, ...)."""
        text = str(self.run(address, "CLIENT", "LIST", sentinel=sentinel))
        out = []
        for line in text.splitlines():
            fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
            out.append(fields)
        return out

    def info(self, address: str, section: str) -> dict[str, str]:
        reply = self.run(address, "INFO", section)
        if isinstance(reply, dict):  # redis-py parses INFO
            return {str(k): str(v) for k, v in reply.items()}
        text = str(reply)
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))

    def try_auth(self, address: str, username: str | None, password: str | None, *command: str) -> str | None:
        """None when a fresh connection as `username` (None: no AUTH, or `default` with a password) may run
        `command` (PING by default); else the server's refusal (secrets cut out)."""
        client = self._client(address, username, password)
        try:
            client.execute_command(*(command or ("PING",)))  # type: ignore[no-untyped-call]
            return None
        except (redis.RedisError, OSError) as e:
            return f"{type(e).__name__}: {self._scrub(str(e))[:200]}"
        finally:
            client.close()
