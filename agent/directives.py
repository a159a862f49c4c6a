"""The only things a controller can make an agent do: a closed whitelist of typed directives.

Layer: adapter. The controller answers a push with `{"directives": [...]}`; each is parsed into one of
the types below or refused (an unknown kind or service is an error ack, never executed). Today the
whitelist is: restart redis-server or redis-sentinel; a redis restart may name the master to come back
as a replica of (`replicaof`: "ip:port"), so an old master restarted after a failover does not return
as a second master. Everything else the controller does itself (Sentinel and Redis commands over the
network, droplets through DigitalOcean).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from agent.report import DirectiveAck
from agent.services import ServiceError, Services

log = structlog.get_logger("redwarden.agent")

ALLOWED_SERVICES = ("redis", "sentinel")
MAX_REMEMBERED = 256


@dataclass(frozen=True, slots=True)
class RestartService:
    id: str
    service: str  # "redis" | "sentinel"
    replicaof: str | None = None  # "ip:port": come back as a replica of it (redis only)


def _valid_address(value: object) -> bool:
    if not isinstance(value, str) or ":" not in value:
        return False
    host, port = value.rsplit(":", 1)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return port.isdigit() and 0 < int(port) < 65536


def set_replicaof(redis_conf: Path, master: str) -> None:
    """Point redis.conf at `master` (one `replicaof` line), atomically."""
    host, port = master.rsplit(":", 1)
    lines = [ln for ln in redis_conf.read_text().splitlines() if not ln.strip().lower().startswith(("replicaof ",
                                                                                                     "slaveof "))]
    lines.append(f"replicaof {host} {port}")
    tmp = redis_conf.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.chmod(redis_conf.stat().st_mode & 0o777)
    tmp.replace(redis_conf)


def parse_directive(raw: Any) -> RestartService | DirectiveAck:
    """A typed directive, or the error ack that refuses it."""
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
        return DirectiveAck(id=str(raw.get("id") if isinstance(raw, dict) else ""), kind="?", ok=False,
                            error="directive without an id", at=time.time())
    kind = raw.get("kind")
    replicaof = raw.get("replicaof")
    if replicaof is not None and (raw.get("service") != "redis" or not _valid_address(replicaof)):
        return DirectiveAck(id=raw["id"], kind=str(kind), ok=False, at=time.time(),
                            error=f"replicaof must be ip:port and only with service redis, not {replicaof!r}")
    if kind == "restart_service" and raw.get("service") in ALLOWED_SERVICES:
        return RestartService(raw["id"], raw["service"], replicaof)
    return DirectiveAck(id=raw["id"], kind=str(kind), ok=False, at=time.time(),
                        error=f"not in the agent's whitelist: {kind} {raw.get('service', '')}".strip())


class DirectiveRunner:
    """Executes each directive once (ids are remembered), keeps the acks until a push delivers them."""

    def __init__(self, services: Services, redis_conf: Path | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._services = services
        self._redis_conf = redis_conf
        self._clock = clock
        self._done: list[str] = []
        self._pending_acks: list[DirectiveAck] = []

    def run(self, directives: Sequence[Any]) -> None:
        for raw in directives:
            parsed = parse_directive(raw)
            if parsed.id in self._done:
                continue  # a retried response: already executed
            self._done = [*self._done[-MAX_REMEMBERED:], parsed.id]
            if isinstance(parsed, DirectiveAck):
                log.warning("directive.refused", id=parsed.id, error=parsed.error)
                self._pending_acks.append(parsed)
                continue
            try:
                if parsed.replicaof is not None:
                    if self._redis_conf is None:
                        raise ServiceError("this agent does not know its redis.conf")
                    set_replicaof(self._redis_conf, parsed.replicaof)
                self._services.restart(parsed.service)
                ack = DirectiveAck(parsed.id, "restart_service", True, None, self._clock())
                log.info("directive.executed", id=parsed.id, kind="restart_service", service=parsed.service)
            except (ServiceError, OSError) as e:
                ack = DirectiveAck(parsed.id, "restart_service", False, str(e)[:300], self._clock())
                log.warning("directive.failed", id=parsed.id, service=parsed.service, error=str(e)[:300])
            self._pending_acks.append(ack)

    def acks(self) -> tuple[DirectiveAck, ...]:
        return tuple(self._pending_acks)

    def delivered(self, acks: Sequence[DirectiveAck]) -> None:
        sent = {a.id for a in acks}
        self._pending_acks = [a for a in self._pending_acks if a.id not in sent]
