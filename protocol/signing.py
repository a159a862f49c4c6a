"""Signatures on both directions of the agent <-> controller channel, with each node's own key.

Layer: protocol (pure functions; `now` is passed in). Every node has its own key, issued by the controller
at enrollment; nobody else holds it. Two things are signed with it (HMAC-SHA256), each with its own label
so that one can never be replayed as the other:

- a report push: `"report." + timestamp + "." + cluster + "." + node + "." + body`, sent in the headers
  below; the controller refuses a signature that does not match the key of the node the headers name, a
  timestamp that is not a finite number within `MAX_SKEW_S` of its clock, and a timestamp not newer than
  the node's last accepted one (replays; see `ReplayGuard`);
- a directive: `"directive." + canonical JSON` of the directive without its `sig` (keys sorted, no
  spaces); the directive names its node, its expiry and a unique id, which the agent checks too.

Header values are ASCII by definition; anything else is refused with a reason, never an exception.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from typing import Any

HEADER_CLUSTER = "X-Redwarden-Cluster"
HEADER_NODE = "X-Redwarden-Node"
HEADER_TIMESTAMP = "X-Redwarden-Timestamp"
HEADER_SIGNATURE = "X-Redwarden-Signature"
MAX_SKEW_S = 60.0
_PREFIX = "sha256="


def _mac(key: bytes, label: str, payload: bytes) -> str:
    return _PREFIX + hmac.new(key, label.encode() + b"." + payload, hashlib.sha256).hexdigest()


def _report_payload(timestamp: str, cluster: str, node: str, body: bytes) -> bytes:
    return f"{timestamp}.{cluster}.{node}.".encode() + body


def sign_report(key: bytes, timestamp: str, cluster: str, node: str, body: bytes) -> str:
    return _mac(key, "report", _report_payload(timestamp, cluster, node, body))


def _same(expected: str, given: str) -> bool:
    try:
        given_bytes = given.encode("ascii")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(expected.encode("ascii"), given_bytes)


def parse_timestamp(timestamp: str) -> float | None:
    """A finite Unix time from a header value, or None (`nan`, `inf`, non-ASCII and garbage are None)."""
    if not timestamp.isascii() or len(timestamp) > 32:
        return None
    try:
        ts = float(timestamp)
    except ValueError:
        return None
    return ts if math.isfinite(ts) else None


def verify_report(key: bytes, timestamp: str, cluster: str, node: str, body: bytes, signature: str, now: float,
                  max_skew_s: float = MAX_SKEW_S) -> str | None:
    """None when the signature is good and fresh, else the reason (safe to show: no secret in it)."""
    ts = parse_timestamp(timestamp)
    if ts is None:
        return "timestamp header is not a finite number"
    if abs(now - ts) > max_skew_s:
        return f"timestamp is {now - ts:.0f} s away from the controller's clock (limit {max_skew_s:.0f} s)"
    if not _same(sign_report(key, timestamp, cluster, node, body), signature):
        return "signature does not match"
    return None


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def sign_directive(key: bytes, unsigned: dict[str, Any]) -> str:
    return _mac(key, "directive", canonical_json(unsigned))


def verify_directive(key: bytes, wire: dict[str, Any]) -> bool:
    """The directive's `sig` is the controller's signature over the rest of it with this node's key."""
    sig = wire.get("sig")
    if not isinstance(sig, str):
        return False
    unsigned = {k: v for k, v in wire.items() if k != "sig"}
    try:
        expected = sign_directive(key, unsigned)
    except (TypeError, ValueError):  # not JSON-serialisable as sent: not ours
        return False
    return _same(expected, sig)


class ReplayGuard:
    """Refuses a report whose timestamp is not newer than the last one accepted from the same node: a
    captured request cannot be sent again, and the memory is one float per node. An agent signs with
    microsecond timestamps and pushes one report at a time, so its own timestamps always increase."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], float] = {}

    def check(self, cluster: str, node: str, timestamp: float) -> str | None:
        """None when `timestamp` is newer than the node's last accepted one, else the reason."""
        last = self._last.get((cluster, node))
        if last is not None and timestamp <= last:
            return "replayed or out-of-order report: its timestamp is not newer than the last one accepted"
        return None

    def accept(self, cluster: str, node: str, timestamp: float) -> None:
        self._last[(cluster, node)] = timestamp
