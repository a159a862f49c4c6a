"""Directives: the closed whitelist of things a controller can ask an agent to do, typed on both sides.

Layer: protocol (pure: no I/O, no clock; `now` is passed in). The controller builds a typed directive and
sends `to_wire()` with a push's response; the agent parses it back with `parse_directive`, which returns
the same type or the error acknowledgement that refuses it (an unknown kind or service is never run).
Today the whitelist is: restart redis-server or redis-sentinel; a redis restart may name the master to come
back as a replica of (`replicaof`: "ip:port"), so an old master restarted after a failover does not return
as a second master.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from protocol.report import DirectiveAck

ALLOWED_SERVICES = ("redis", "sentinel")
KIND_RESTART_SERVICE = "restart_service"


@dataclass(frozen=True, slots=True)
class RestartServiceDirective:
    """Restart one of the node's services; for redis, optionally as a replica of `replicaof`."""

    id: str
    service: str  # "redis" | "sentinel"
    replicaof: str | None = None  # "ip:port": come back as a replica of it (redis only)

    kind = KIND_RESTART_SERVICE

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "kind": self.kind, "service": self.service}
        if self.replicaof is not None:
            out["replicaof"] = self.replicaof
        return out


Directive = RestartServiceDirective  # the closed set; a union once there is more than one kind


def valid_address(value: object) -> bool:
    """An "ip:port" with an IPv4 or IPv6 literal and a port in 1..65535."""
    if not isinstance(value, str) or ":" not in value:
        return False
    host, port = value.rsplit(":", 1)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return port.isdigit() and 0 < int(port) < 65536


def parse_directive(raw: Any, now: float) -> Directive | DirectiveAck:
    """A typed directive, or the error acknowledgement that refuses it (dated `now`)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
        return DirectiveAck(id=str(raw.get("id") if isinstance(raw, dict) else ""), kind="?", ok=False,
                            error="directive without an id", at=now)
    kind = raw.get("kind")
    replicaof = raw.get("replicaof")
    if replicaof is not None and (raw.get("service") != "redis" or not valid_address(replicaof)):
        return DirectiveAck(id=raw["id"], kind=str(kind), ok=False, at=now,
                            error=f"replicaof must be ip:port and only with service redis, not {replicaof!r}")
    if kind == KIND_RESTART_SERVICE and raw.get("service") in ALLOWED_SERVICES:
        return RestartServiceDirective(raw["id"], raw["service"], replicaof)
    return DirectiveAck(id=raw["id"], kind=str(kind), ok=False, at=now,
                        error=f"not in the agent's whitelist: {kind} {raw.get('service', '')}".strip())
