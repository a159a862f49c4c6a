"""Runs the directives a controller sends with a push's response: each once, acknowledged in a later push.

Layer: adapter. The whitelist and its types are the protocol's (`protocol.directives`): a directive runs
only when it is for this node, unexpired, signed by the controller with this node's key, and every field is
what the schema allows; anything else is refused with an error acknowledgement and never executed. A
`replicaof` is refused while this node's Redis is the master a Sentinel majority names (a controller that
is wrong, or not the controller, must not demote the live master), and it is applied through Redis itself
(`REPLICAOF`, then `CONFIG REWRITE`), never by editing redis.conf: no value of a directive reaches a file
but through Redis's own writer, and the agent needs no write access to /etc/redis (its unit has
ProtectSystem=strict; Debian's redis-server unit lets Redis write /etc/redis: packaging/boot-test). One
path for both service modes (systemd units, sandbox processes):
- Redis answers: `REPLICAOF` + `CONFIG REWRITE` first, then the restart; Redis reads the rewritten file and
  comes back as a replica at once, never as a master with its old data. Between the two the agent waits
  (up to its ready timeout, 15 s) until the new link is up and no AOF rewrite runs: right after a full
  sync, a replica with appendonly writes its first AOF, and a SIGTERM then is refused ("Writing initial
  AOF, can't exit"), which Debian's redis-server unit (TimeoutStopSec=0) would wait on forever. If it
  does not settle in time, the node stays a replica (file rewritten) and the restart is not done: the
  directive fails, saying so.
- Redis does not answer (down, or hung past the client's timeout): the restart starts it with whatever its
  file says, and `REPLICAOF` + `CONFIG REWRITE` follow as soon as it answers PING (polled every 0.1 s). In
  between, a node whose file still says master (an old master that was down through a failover) is a
  master with its old data: its writes are refused while it has fewer than min-replicas-to-write
  replicas (1 by default), Sentinel-aware clients are not sent to it, and its Sentinels would turn it
  into a replica themselves about 8 s after they see it claim master (+convert-to-slave) if the agent did not.
- If the change before the restart fails (e.g. CONFIG REWRITE cannot write the file), the restart happens
  all the same and the change is tried once more after it; the directive fails if that fails too.

A `set_redis_users` directive (the migration to ACL users) is unsealed with the node's key and handed to
`set_users`, which checks the monitor password against the local Redis before it stores anything or
switches; the users are never logged. A `fence` (issue #12: the controller cannot reach this node's Redis,
this agent still reports) sends the local Redis `REPLICAOF <master>`, `CLIENT KILL TYPE normal` and `CONFIG
REWRITE` as the agent's own (monitor) credential, refused like a `replicaof` while a Sentinel majority names
this node; its ack says whether it was done, or what failed. Everything else the controller does itself
(Sentinel and Redis commands over the network, droplets through DigitalOcean).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import redis
from redis.exceptions import RedisError
from structlog import get_logger

from agent.parse import parse_info
from agent.redis_client import command, error_message
from agent.services import ServiceError, Services
from protocol.acl import NodeUsers
from protocol.directives import (
    KIND_FENCE,
    KIND_SET_REDIS_USERS,
    FenceDirective,
    SetRedisUsersDirective,
    parse_directive,
)
from protocol.report import DirectiveAck
from protocol.seal import unseal

log = get_logger("redwarden.agent")

MAX_REMEMBERED = 256


class RedisControl(Protocol):
    """The node's own Redis, for the one configuration change a directive makes: whom it replicates."""

    def answers(self) -> bool:
        """Whether Redis answers PING now (one try, the client's timeout)."""
        ...

    def wait_ready(self, timeout_s: float) -> None:
        """Return once Redis answers PING, or raise ServiceError."""
        ...

    def replicaof(self, host: str, port: int) -> None:
        """`REPLICAOF host port`, then `CONFIG REWRITE` (Redis writes its own file: no text edit of ours)."""
        ...

    def wait_settled(self, timeout_s: float) -> str | None:
        """Wait until Redis is linked to its master, not syncing, loading or rewriting its AOF (a restart then
        is clean and quick); None once it is, else why not when `timeout_s` is up."""
        ...

    def fence(self, host: str, port: int) -> str:
        """`REPLICAOF host port`, `CLIENT KILL TYPE normal`, `CONFIG REWRITE`; what Redis answered."""
        ...


class LocalRedisControl:
    """`RedisControl` over the agent's redis-py client of the local Redis (with the node's credential).

    `client` is replaced when the agent changes its Redis user (`Agent.set_users`); every call uses the
    current one."""

    def __init__(self, client: redis.Redis, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self._clock = clock
        self._sleep = sleep

    def answers(self) -> bool:
        try:
            return command(self.client, "PING") == "PONG"
        except (OSError, RedisError):
            return False

    def wait_ready(self, timeout_s: float) -> None:
        deadline = self._clock() + timeout_s
        while True:
            if self.answers():
                return
            if self._clock() >= deadline:
                raise ServiceError(f"redis-server did not answer PING within {timeout_s:.0f} s of its restart")
            self._sleep(0.1)

    def replicaof(self, host: str, port: int) -> None:
        for argv in (("REPLICAOF", host, port), ("CONFIG", "REWRITE")):
            try:
                command(self.client, *argv)
            except (OSError, RedisError) as e:
                what = " ".join(map(str, argv))
                raise ServiceError(f"{what} failed: {error_message(e, self.client)[:200]}") from None

    def fence(self, host: str, port: int) -> str:
        """The controller's fence (controller/adapters/redis_ops.py `fence`), sent from the node itself: REPLICAOF
        first (writes refused from that moment), then the clients disconnected (this connection is spared:
        SKIPME), then the file rewritten (a restart keeps it a replica). Raises ServiceError naming the step."""
        replies: list[object] = []
        for argv in (("REPLICAOF", host, port), ("CLIENT", "KILL", "TYPE", "normal"), ("CONFIG", "REWRITE")):
            try:
                replies.append(command(self.client, *argv))
            except (OSError, RedisError) as e:
                what = " ".join(map(str, argv))
                done = f" (after {len(replies)} of 3 steps)" if replies else ""
                raise ServiceError(f"{what} failed{done}: {error_message(e, self.client)[:200]}") from None
        return f"REPLICAOF {replies[0]}, {replies[1]} client(s) disconnected, CONFIG REWRITE {replies[2]}"

    def _unsettled(self) -> str | None:
        """Why a restart now would be refused or wasted, from INFO replication then persistence (in that order:
        a finished sync starts its AOF rewrite in the same event, so a link seen up is seen with it)."""
        try:
            repl = parse_info(str(command(self.client, "INFO", "replication")))
            pers = parse_info(str(command(self.client, "INFO", "persistence")))
        except (OSError, RedisError) as e:
            return f"INFO failed: {error_message(e, self.client)[:200]}"
        if repl.get("master_link_status") != "up" or repl.get("master_sync_in_progress") == "1":
            return f"its link to the master is not up (master_link_status: {repl.get('master_link_status')})"
        for field in ("loading", "aof_rewrite_in_progress", "aof_rewrite_scheduled"):
            if pers.get(field) == "1":
                return f"{field} is 1"
        return None

    def wait_settled(self, timeout_s: float) -> str | None:
        deadline = self._clock() + timeout_s
        while True:
            reason = self._unsettled()
            if reason is None or self._clock() >= deadline:
                return reason
            self._sleep(0.1)

    def pause_writes(self, pause_ms: int, disconnect: bool) -> None:
        """The local fence (agent/fence.py): `CLIENT PAUSE <ms> WRITE`, lapsing by itself unless renewed;
        with `disconnect`, then `CLIENT KILL TYPE normal` (not this connection: SKIPME is the default) so
        clients reconnect and ask Sentinel again."""
        try:
            command(self.client, "CLIENT", "PAUSE", pause_ms, "WRITE")
        except (OSError, RedisError) as e:
            raise ServiceError(f"CLIENT PAUSE failed: {error_message(e, self.client)[:200]}") from None
        if disconnect:
            try:
                command(self.client, "CLIENT", "KILL", "TYPE", "normal")
            except (OSError, RedisError) as e:  # paused all the same: a waiting client times out, reconnects
                log.warning("fence.disconnect_failed", error=error_message(e, self.client)[:200])

    def unpause(self) -> None:
        try:
            command(self.client, "CLIENT", "UNPAUSE")
        except (OSError, RedisError) as e:
            raise ServiceError(f"CLIENT UNPAUSE failed: {error_message(e, self.client)[:200]}") from None


class DirectiveRunner:
    """Executes each directive once (ids are remembered), keeps the acks until a push delivers them."""

    def __init__(self, services: Services, node: str, key: bytes, redis: RedisControl | None = None,
                 confirmed_master: Callable[[], bool] = lambda: False,
                 clock: Callable[[], float] = time.time, ready_timeout_s: float = 15.0,
                 set_users: Callable[[NodeUsers], None] | None = None) -> None:
        """`confirmed_master`: whether this node's Redis is master and a Sentinel majority names it.
        `set_users`: check, store and switch to the node's ACL users (raises ServiceError naming no secret)."""
        self._services = services
        self._node = node
        self._key = key
        self._redis = redis
        self._confirmed_master = confirmed_master
        self._clock = clock
        self._ready_timeout_s = ready_timeout_s
        self._set_users = set_users
        self._done: list[str] = []
        self._pending_acks: list[DirectiveAck] = []

    def run(self, directives: Sequence[Any]) -> None:
        for raw in directives:
            parsed = parse_directive(raw, self._clock(), self._node, self._key)
            if parsed.id in self._done:
                continue  # a retried response: already executed
            self._done = [*self._done[-MAX_REMEMBERED:], parsed.id]
            if isinstance(parsed, DirectiveAck):
                log.warning("directive.refused", id=parsed.id, error=parsed.error)
                self._pending_acks.append(parsed)
                continue
            if isinstance(parsed, SetRedisUsersDirective):
                self._pending_acks.append(self._run_set_users(parsed))
                continue
            if isinstance(parsed, FenceDirective):
                self._pending_acks.append(self._run_fence(parsed))
                continue
            try:
                if parsed.replicaof is None:
                    self._services.restart(parsed.service)
                else:
                    if self._confirmed_master():
                        raise ServiceError("refused: this node is the master a Sentinel majority names; it is not "
                                           "made a replica of another")
                    host, port = parsed.replicaof.rsplit(":", 1)
                    self._restart_as_replica(parsed.service, host, int(port))
                ack = DirectiveAck(parsed.id, "restart_service", True, None, self._clock())
                log.info("directive.executed", id=parsed.id, kind="restart_service", service=parsed.service)
            except (ServiceError, OSError) as e:
                ack = DirectiveAck(parsed.id, "restart_service", False, str(e)[:300], self._clock())
                log.warning("directive.failed", id=parsed.id, service=parsed.service, error=str(e)[:300])
            self._pending_acks.append(ack)

    def _restart_as_replica(self, service: str, host: str, port: int) -> None:
        """Restart Redis so that it comes back as a replica of host:port (the module's docstring says how)."""
        if self._redis is None:
            raise ServiceError("this agent has no connection to its Redis to set its master")
        changed = False
        if self._redis.answers():
            try:
                self._redis.replicaof(host, port)
                changed = True
            except ServiceError as e:
                log.warning("directive.replicaof_before_restart_failed", service=service, error=str(e)[:300])
            if changed and (why := self._redis.wait_settled(self._ready_timeout_s)) is not None:
                raise ServiceError(f"now a replica of {host}:{port} (redis.conf rewritten by Redis), but not "
                                   f"restarted: not settled within {self._ready_timeout_s:.0f} s ({why})")
        self._services.restart(service)
        self._redis.wait_ready(self._ready_timeout_s)
        if not changed:
            self._redis.replicaof(host, port)

    def _run_fence(self, directive: FenceDirective) -> DirectiveAck:
        error = None
        try:
            if self._redis is None:
                raise ServiceError("this agent has no connection to its Redis to fence it")
            if self._confirmed_master():
                raise ServiceError("refused: this node is the master a Sentinel majority names; it is not fenced")
            host, port = directive.master.rsplit(":", 1)
            detail = self._redis.fence(host, int(port))
        except (ServiceError, OSError) as e:
            error = str(e)[:300]
        if error is None:
            log.warning("fence.directive_executed", id=directive.id, master=directive.master, detail=detail)
        else:
            log.warning("directive.failed", id=directive.id, kind=KIND_FENCE, error=error)
        return DirectiveAck(directive.id, KIND_FENCE, error is None, error, self._clock())

    def _run_set_users(self, directive: SetRedisUsersDirective) -> DirectiveAck:
        text = unseal(self._key, directive.users_sealed)
        error = None
        if text is None:
            error = "users_sealed is not sealed with this node's key"
        elif self._set_users is None:
            error = "this agent cannot change its Redis credential"
        else:
            try:
                self._set_users(NodeUsers.from_json(text))
            except ValueError as e:  # NodeUsers never quotes a secret
                error = f"the users are unusable: {e}"
            except (ServiceError, OSError) as e:
                error = str(e)[:300]
        if error is None:
            log.info("directive.executed", id=directive.id, kind=KIND_SET_REDIS_USERS)
        else:
            log.warning("directive.failed", id=directive.id, kind=KIND_SET_REDIS_USERS, error=error)
        return DirectiveAck(directive.id, KIND_SET_REDIS_USERS, error is None, error, self._clock())

    def acks(self) -> tuple[DirectiveAck, ...]:
        return tuple(self._pending_acks)

    def delivered(self, acks: Sequence[DirectiveAck]) -> None:
        sent = {a.id for a in acks}
        self._pending_acks = [a for a in self._pending_acks if a.id not in sent]
