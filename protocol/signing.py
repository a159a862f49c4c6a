"""HMAC-SHA256 signatures over timestamp + body for agent -> controller pushes.

Layer: pure functions. The agent signs `f"{timestamp}.".encode() + body` with the cluster's secret;
the controller recomputes it and refuses a mismatch or a timestamp outside its window.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER_CLUSTER = "X-Redwarden-Cluster"
HEADER_TIMESTAMP = "X-Redwarden-Timestamp"
HEADER_SIGNATURE = "X-Redwarden-Signature"
MAX_SKEW_S = 60.0


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: bytes, timestamp: str, body: bytes, signature: str, now: float, max_skew_s: float = MAX_SKEW_S
) -> str | None:
    """Return None when the signature is good and fresh, else the reason (safe to show: no secret in it)."""
    try:
        ts = float(timestamp)
    except ValueError:
        return "timestamp header is not a number"
    if abs(now - ts) > max_skew_s:
        return f"timestamp is {now - ts:.0f} s away from the controller's clock (limit {max_skew_s:.0f} s)"
    if not hmac.compare_digest(sign(secret, timestamp, body), signature):
        return "signature does not match"
    return None
