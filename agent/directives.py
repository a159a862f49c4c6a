"""The only things a controller can make an agent do: a closed whitelist of typed directives.

Layer: adapter. The controller answers a push with `{"directives": [...]}`; each is parsed into one of
the types below or refused (an unknown kind or service is an error ack, never executed). Today the
whitelist is: restart redis-server or redis-sentinel. Everything else the controller does itself
(Sentinel and Redis commands over the network, droplets through DigitalOcean).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


def parse_directive(raw: Any) -> RestartService | DirectiveAck:
    """A typed directive, or the error ack that refuses it."""
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
        return DirectiveAck(id=str(raw.get("id") if isinstance(raw, dict) else ""), kind="?", ok=False,
                            error="directive without an id", at=time.time())
    kind = raw.get("kind")
    if kind == "restart_service" and raw.get("service") in ALLOWED_SERVICES:
        return RestartService(raw["id"], raw["service"])
    return DirectiveAck(id=raw["id"], kind=str(kind), ok=False, at=time.time(),
                        error=f"not in the agent's whitelist: {kind} {raw.get('service', '')}".strip())


class DirectiveRunner:
    """Executes each directive once (ids are remembered), keeps the acks until a push delivers them."""

    def __init__(self, services: Services, clock: Callable[[], float] = time.time) -> None:
        self._services = services
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
                self._services.restart(parsed.service)
                ack = DirectiveAck(parsed.id, "restart_service", True, None, self._clock())
                log.info("directive.executed", id=parsed.id, kind="restart_service", service=parsed.service)
            except ServiceError as e:
                ack = DirectiveAck(parsed.id, "restart_service", False, str(e)[:300], self._clock())
                log.warning("directive.failed", id=parsed.id, service=parsed.service, error=str(e)[:300])
            self._pending_acks.append(ack)

    def acks(self) -> tuple[DirectiveAck, ...]:
        return tuple(self._pending_acks)

    def delivered(self, acks: Sequence[DirectiveAck]) -> None:
        sent = {a.id for a in acks}
        self._pending_acks = [a for a in self._pending_acks if a.id not in sent]
