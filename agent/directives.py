"""Runs the directives a controller sends with a push's response: each once, acknowledged in a later push.

Layer: adapter. The whitelist and its types are the protocol's (`protocol.directives`): what does not
parse into one of them is refused with an error acknowledgement and never executed. Everything else the
controller does itself (Sentinel and Redis commands over the network, droplets through DigitalOcean).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agent.log import get_logger
from agent.services import ServiceError, Services
from protocol.directives import parse_directive
from protocol.report import DirectiveAck

log = get_logger("redwarden.agent")

MAX_REMEMBERED = 256


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
            parsed = parse_directive(raw, self._clock())
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
