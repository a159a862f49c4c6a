"""Directives: the closed whitelist of things a controller can ask an agent to do, typed and signed.

Layer: protocol (pure: no I/O, no clock; `now` is passed in). The controller builds a typed directive for
one node and sends `signed_wire(directive, node_key)` with a push's response; the agent runs
`parse_directive`, which returns the same type only when the directive is for this node, has not expired,
carries the controller's signature made with this node's key, and every field is exactly what the schema
allows (no unknown key, addresses are IPv4/IPv6 literals without scope id, ports integers in 1..65535).
Anything else comes back as the error acknowledgement that refuses it, and is never run.

Today the whitelist is: restart redis-server or redis-sentinel; a redis restart may name the master to come
back as a replica of (`replicaof`: "ip:port"), so an old master restarted after a failover does not return
as a second master; and hand the agent its node's ACL users (`set_redis_users`, during `redwarden cluster
secure`): the JSON of `protocol.acl.NodeUsers`, sealed with the node's key (`protocol.seal`), which the agent
checks against its own Redis, stores where bootstrap stores it, and then connects as `monitor`; and fence an
old master the controller cannot reach itself (`fence`, issue #12): `REPLICAOF <master>`, `CLIENT KILL TYPE
normal`, `CONFIG REWRITE` on the node's own Redis, what the controller's direct fence sends.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass
from typing import Any

from protocol.report import DirectiveAck
from protocol.signing import sign_directive, verify_directive

ALLOWED_SERVICES = ("redis", "sentinel")
KIND_RESTART_SERVICE = "restart_service"
KIND_SET_REDIS_USERS = "set_redis_users"
KIND_FENCE = "fence"
FENCE_TTL_S = 30.0  # a fence is for now: one that waited longer than this is refused (the next plan decides)
DIRECTIVE_TTL_S = 120.0  # how long a directive may wait for its agent (it is re-sent until acknowledged)
_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_PORT = re.compile(r"[0-9]{1,5}")
_FIELDS = {"id", "kind", "node", "service", "replicaof", "expires_at", "sig"}
_USERS_FIELDS = {"id", "kind", "node", "users_sealed", "expires_at", "sig"}
_FENCE_FIELDS = {"id", "kind", "node", "master", "expires_at", "sig"}


@dataclass(frozen=True, slots=True)
class RestartServiceDirective:
    """Restart one of the node's services; for redis, optionally as a replica of `replicaof`."""

    id: str
    node: str  # the one node it is for
    service: str  # "redis" | "sentinel"
    replicaof: str | None = None  # "ip:port": come back as a replica of it (redis only)
    expires_at: float = 0.0  # Unix seconds; after that the agent refuses it

    kind = KIND_RESTART_SERVICE

    def to_wire(self) -> dict[str, Any]:
        """The directive without its signature."""
        out: dict[str, Any] = {"id": self.id, "kind": self.kind, "node": self.node, "service": self.service,
                               "expires_at": self.expires_at}
        if self.replicaof is not None:
            out["replicaof"] = self.replicaof
        return out


@dataclass(frozen=True, slots=True)
class SetRedisUsersDirective:
    """The node's ACL users (`protocol.acl.NodeUsers` as JSON), sealed with the node's key: the agent switches
    to `monitor` once it has checked the password against its own Redis and stored them."""

    id: str
    node: str
    users_sealed: str  # `protocol.seal.seal(node_key, nonce, NodeUsers.to_json())`; never logged
    expires_at: float = 0.0

    kind = KIND_SET_REDIS_USERS

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "node": self.node, "users_sealed": self.users_sealed,
                "expires_at": self.expires_at}

    def __repr__(self) -> str:  # the sealed value stays out of reprs (and so of logged exceptions)
        return f"SetRedisUsersDirective(id={self.id!r}, node={self.node!r})"


@dataclass(frozen=True, slots=True)
class FenceDirective:
    """Fence this node's Redis, an old master a Sentinel side has replaced: make it a replica of `master`
    (the side's confirmed new master), disconnect its clients, rewrite its file."""

    id: str
    node: str
    master: str  # "ip:port"
    expires_at: float = 0.0

    kind = KIND_FENCE

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "node": self.node, "master": self.master,
                "expires_at": self.expires_at}


Directive = RestartServiceDirective | SetRedisUsersDirective | FenceDirective  # the closed set


def signed_wire(directive: Directive, key: bytes) -> dict[str, Any]:
    body = directive.to_wire()
    return {**body, "sig": sign_directive(key, body)}


def split_address(value: object) -> tuple[str, int] | None:
    """("ip", port) from an "ip:port" whose ip is an IPv4 or IPv6 literal (no scope id, no brackets, no
    white space) and whose port is 1..65535 in ASCII digits; None for anything else."""
    if not isinstance(value, str) or not value.isascii() or len(value) > 64 or ":" not in value:
        return None
    host, port = value.rsplit(":", 1)
    if not _PORT.fullmatch(port) or not 0 < int(port) < 65536:
        return None
    if not host or any(c in host for c in "%[] \t\r\n"):
        return None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return host, int(port)


def valid_address(value: object) -> bool:
    return split_address(value) is not None


def _refuse(raw: Any, now: float, error: str) -> DirectiveAck:
    ident = raw.get("id") if isinstance(raw, dict) else None
    kind = raw.get("kind") if isinstance(raw, dict) else None
    safe_id = ident if isinstance(ident, str) and _ID.fullmatch(ident) else "?"
    safe_kind = kind if isinstance(kind, str) and _ID.fullmatch(kind) else "?"
    return DirectiveAck(id=safe_id, kind=safe_kind, ok=False, error=error, at=now)


def parse_directive(raw: Any, now: float, node: str, key: bytes) -> Directive | DirectiveAck:
    """A typed directive for `node`, verified with its key; or the error acknowledgement that refuses it."""
    if not isinstance(raw, dict):
        return _refuse(raw, now, "a directive must be an object")
    if not isinstance(raw.get("id"), str) or not _ID.fullmatch(raw["id"]):
        return _refuse(raw, now, "directive without a valid id")
    kind_named = raw.get("kind") if isinstance(raw.get("kind"), str) else None
    allowed = {KIND_SET_REDIS_USERS: _USERS_FIELDS, KIND_FENCE: _FENCE_FIELDS}.get(kind_named or "", _FIELDS)
    unknown = sorted(str(k) for k in raw if k not in allowed)
    if unknown:
        return _refuse(raw, now, f"unknown field {unknown[0][:40]!r}")
    if not verify_directive(key, raw):
        return _refuse(raw, now, "signature missing or wrong: not from this node's controller")
    if raw.get("node") != node:
        return _refuse(raw, now, "directive is for another node")
    expires_at = raw.get("expires_at")
    if not isinstance(expires_at, int | float) or isinstance(expires_at, bool) or not math.isfinite(expires_at):
        return _refuse(raw, now, "expires_at must be a finite number")
    if now > expires_at:
        return _refuse(raw, now, "directive expired")
    if raw.get("kind") == KIND_SET_REDIS_USERS:
        sealed = raw.get("users_sealed")
        if not isinstance(sealed, str) or not 0 < len(sealed) <= 8192:
            return _refuse(raw, now, "users_sealed must be a non-empty string")
        return SetRedisUsersDirective(raw["id"], node, sealed, float(expires_at))
    if raw.get("kind") == KIND_FENCE:
        if not valid_address(raw.get("master")):
            return _refuse(raw, now, "master must be an IP literal and port")
        return FenceDirective(raw["id"], node, raw["master"], float(expires_at))
    kind, service, replicaof = raw.get("kind"), raw.get("service"), raw.get("replicaof")
    if kind != KIND_RESTART_SERVICE or service not in ALLOWED_SERVICES:
        return _refuse(raw, now, "not in the agent's whitelist")
    if replicaof is not None and (service != "redis" or not valid_address(replicaof)):
        return _refuse(raw, now, "replicaof must be an IP literal and port, and only with service redis")
    return RestartServiceDirective(raw["id"], node, service, replicaof, float(expires_at))
