"""Pushes reports to the controller over one keep-alive HTTPS connection, signed with the node's own key,
with backoff and jitter.

Layer: adapter. Health is a level, not a log: when the controller is away the agent keeps only the
latest report and sends that one when its backoff allows, never a backlog.
"""

from __future__ import annotations

import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.httpclient import HttpConnection, HttpError, split_url
from protocol.signing import HEADER_CLUSTER, HEADER_NODE, HEADER_SIGNATURE, HEADER_TIMESTAMP, sign_report


@dataclass(frozen=True, slots=True)
class PushResult:
    ok: bool
    status: int | None
    error: str | None
    body: dict[str, Any] | None = None


class Pusher:
    """Sends one signed body per call; tells the caller when the next attempt is allowed."""

    def __init__(
        self,
        url: str,
        cluster: str,
        node: str,
        key: bytes,
        timeout_s: float,
        max_backoff_s: float,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        connection: HttpConnection | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        origin, self._target = split_url(url.rstrip("/") + "/v1/reports")
        self._cluster = cluster
        self._node = node
        self._key = key
        self._max_backoff_s = max_backoff_s
        self._clock = clock
        self._rng = rng or random.Random()
        self._connection = connection or HttpConnection(origin, min(timeout_s, 1.0), timeout_s, ssl_context)
        self._last_ts = 0.0
        self._failures = 0
        self.next_attempt_at = 0.0

    def due(self, now: float) -> bool:
        return now >= self.next_attempt_at

    def push(self, body: bytes) -> PushResult:
        # the controller refuses a timestamp not newer than the node's last (replays): never repeat one
        now = max(self._clock(), self._last_ts + 1e-6)
        self._last_ts = now
        ts = f"{now:.6f}"
        headers = {
            "Content-Type": "application/json",
            HEADER_CLUSTER: self._cluster,
            HEADER_NODE: self._node,
            HEADER_TIMESTAMP: ts,
            HEADER_SIGNATURE: sign_report(self._key, ts, self._cluster, self._node, body),
        }
        try:
            resp = self._connection.request("POST", self._target, body, headers)
        except HttpError as e:
            return self._failed(None, f"{e.reason}: controller unreachable")
        if resp.status >= 300:
            detail = resp.text[:300].replace("\n", " ")
            return self._failed(resp.status, f"HTTP {resp.status}: {detail}")
        self._failures = 0
        self.next_attempt_at = 0.0
        try:
            parsed = resp.json()
        except ValueError:
            parsed = None
        return PushResult(True, resp.status, None, parsed if isinstance(parsed, dict) else None)

    def _failed(self, status: int | None, error: str) -> PushResult:
        self._failures += 1
        # Full jitter: uniform in [0, min(cap, base * 2^n)], so a fleet that lost its controller does
        # not come back in lock step.
        ceiling = min(self._max_backoff_s, 0.5 * 2 ** min(self._failures, 16))
        self.next_attempt_at = self._clock() + self._rng.uniform(0, ceiling)
        return PushResult(False, status, error)

    def close(self) -> None:
        self._connection.close()
