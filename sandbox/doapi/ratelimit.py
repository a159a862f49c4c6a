"""The local DigitalOcean API's rate limit: a token bucket, and the `ratelimit-*` headers it answers.

Layer: sandbox. DigitalOcean allows 5,000 requests an hour, refilled continuously; the sandbox's faults may
set the limit, the refill and what remains (`/_sandbox/faults`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

RATELIMIT_LIMIT = 5000


class TokenBucket:
    """DigitalOcean-like rate limit: `limit` requests, refilled continuously at `refill_per_s`."""

    def __init__(self, limit: int, refill_per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.refill_per_s = refill_per_s
        self.tokens = float(limit)
        self._clock = clock
        self._updated = clock()

    def _refill(self) -> None:
        now = self._clock()
        self.tokens = min(float(self.limit), self.tokens + (now - self._updated) * self.refill_per_s)
        self._updated = now

    def take(self) -> float | None:
        """Take one token: None when taken, else the seconds until one is there."""
        self._refill()
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return self._seconds_to_next()

    def _seconds_to_next(self) -> float:
        if self.tokens >= self.limit:
            return 0.0
        if self.refill_per_s <= 0:
            return 3600.0
        return (math.floor(self.tokens) + 1 - self.tokens) / self.refill_per_s

    def headers(self) -> dict[str, str]:
        self._refill()
        reset = time.time() + self._seconds_to_next()
        return {"ratelimit-limit": str(self.limit), "ratelimit-remaining": str(max(0, math.floor(self.tokens))),
                "ratelimit-reset": str(math.ceil(reset))}

    def set(self, limit: int | None = None, refill_per_s: float | None = None, remaining: int | None = None) -> None:
        self._refill()
        if limit is not None:
            self.limit = limit
            self.tokens = float(limit)
        if refill_per_s is not None:
            self.refill_per_s = refill_per_s
        if remaining is not None:
            self.tokens = float(min(remaining, self.limit))
