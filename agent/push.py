"""Pushes reports to the controller over one keep-alive HTTPS connection, signed with the node's own key,
with backoff and jitter.

Layer: adapter. Health is a level, not a log: when the controller is away the agent keeps only the
latest report and sends that one when its backoff allows, never a backlog. The transport is one requests
session (agent/session.py: the controller's CA only, no retries); every way of getting no HTTP answer
(refused, timed out, TLS refused, reset) is a result whose error names requests' exception type, and any
HTTP status is an answer.
"""

from __future__ import annotations

import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from agent.session import agent_session
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
        session: requests.Session | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._url = url.rstrip("/") + "/v1/reports"
        self._cluster = cluster
        self._node = node
        self._key = key
        self._max_backoff_s = max_backoff_s
        self._clock = clock
        self._rng = rng or random.Random()
        # (connect, read): a controller that is there accepts a connection at once; reading gets the full time
        self._timeouts_s = (min(timeout_s, 1.0), timeout_s)
        self._session = session or agent_session(ssl_context)
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
            resp = self._session.post(self._url, data=body, headers=headers, timeout=self._timeouts_s,
                                      allow_redirects=False)
        except requests.RequestException as e:
            return self._failed(None, f"{type(e).__name__}: controller unreachable")
        if resp.status_code >= 300:
            detail = resp.text[:300].replace("\n", " ")
            return self._failed(resp.status_code, f"HTTP {resp.status_code}: {detail}")
        self._failures = 0
        self.next_attempt_at = 0.0
        try:
            parsed = resp.json()
        except ValueError:  # requests' JSONDecodeError is one
            parsed = None
        return PushResult(True, resp.status_code, None, parsed if isinstance(parsed, dict) else None)

    def _failed(self, status: int | None, error: str) -> PushResult:
        self._failures += 1
        # Full jitter: uniform in [0, min(cap, base * 2^n)], so a fleet that lost its controller does
        # not come back in lock step.
        ceiling = min(self._max_backoff_s, 0.5 * 2 ** min(self._failures, 16))
        self.next_attempt_at = self._clock() + self._rng.uniform(0, ceiling)
        return PushResult(False, status, error)

    def close(self) -> None:
        self._session.close()
