"""Polling helpers for tests: wait for a condition with a deadline, never a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(probe: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 0.1) -> T:
    """Call `probe` until it returns something truthy; fail with `what` and the last value at the deadline."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while True:
        try:
            last = probe()
        except Exception as e:  # a probe may race a restarting process
            last = None
            error: Exception | None = e
        else:
            error = None
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:.1f} s waiting for {what} (last: {last!r}, {error!r})")
        time.sleep(interval_s)
