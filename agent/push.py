"""Pushes reports to the controller over one keep-alive HTTP connection, signed, with backoff and jitter.

Layer: adapter. Health is a level, not a log: when the controller is away the agent keeps only the
latest report and sends that one when its backoff allows, never a backlog.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.httpclient import HttpConnection, HttpError, split_url
from protocol.signing import HEADER_CLUSTER, HEADER_SIGNATURE, HEADER_TIMESTAMP, sign


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
        secret: bytes,
        timeout_s: float,
        max_backoff_s: float,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        connection: HttpConnection | None = None,
    ) -> None:
        origin, self._target = split_url(url.rstrip("/") + "/v1/reports")
        self._cluster = cluster
        self._secret = secret
        self._max_backoff_s = max_backoff_s
        self._clock = clock
        self._rng = rng or random.Random()
        self._connection = connection or HttpConnection(origin, min(timeout_s, 1.0), timeout_s)
        self._failures = 0
        self.next_attempt_at = 0.0

    def due(self, now: float) -> bool:
        return now >= self.next_attempt_at

    def push(self, body: bytes) -> PushResult:
        ts = f"{self._clock():.3f}"
        headers = {
            "Content-Type": "application/json",
            HEADER_CLUSTER: self._cluster,
            HEADER_TIMESTAMP: ts,
            HEADER_SIGNATURE: sign(self._secret, ts, body),
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
