"""The drill's writer: a thread writing through redis-py's Sentinel client as an application would, and
recording when each write was acknowledged, accepted without a replica, or refused.

Layer: the drill's adapters. `KeyStore` is the seam (tests write into a dict); `SentinelKeyStore` is
redis-py, imported only when one is made. Samples are judged in `console.drill.writes`.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Protocol

from console.drill.model import Outcome
from console.drill.writes import WriteSample


class KeyStore(Protocol):
    def write(self, key: str, value: int) -> int:
        """SET the key, then WAIT 1 on the same connection; how many replicas acknowledged. Raises if refused."""
        ...

    def read(self, keys: Sequence[str]) -> list[int | None]: ...

    def delete(self, keys: Sequence[str]) -> None: ...

    def close(self) -> None: ...


class SentinelKeyStore:
    """redis-py's Sentinel client, as an application uses it: the master is re-resolved through the
    Sentinels on every new connection (a ConnectionError or a READONLY reply drops the old one).
    No retries inside redis-py (the writer's own pace is the retry), 0.5 s socket timeouts."""

    def __init__(self, sentinels: Sequence[tuple[str, int]], master_name: str, password: str | None,
                 timeout_s: float = 0.5, wait_timeout_ms: int = 200, ttl_s: int = 3600,
                 username: str | None = None) -> None:
        """`username`: an ACL cluster's application user (`app`); None logs in as `default` (requirepass).
        The Sentinels are asked without a password (discovery is open to anyone in an ACL cluster)."""
        from redis.backoff import NoBackoff
        from redis.retry import Retry
        from redis.sentinel import Sentinel

        # sentinel_kwargs as redis-py derives them when None (the socket_* settings), plus no retries: its
        # default (10 retries with backoff) would make a destroyed droplet's Sentinel cost seconds per lookup
        sentinel_kwargs = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s,
                           "retry": Retry(NoBackoff(), 0)}
        # redis-py 8.2 annotates Sentinel; 8.1 (the lock's pin on Python 3.10, which 8.2 dropped) does not
        self._sentinel = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
            list(sentinels), socket_timeout=timeout_s, sentinel_kwargs=sentinel_kwargs)
        self._client = self._sentinel.master_for(  # type: ignore[no-untyped-call,unused-ignore]
            master_name, username=username, password=password, socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s, retry_on_timeout=False, retry=Retry(NoBackoff(), 0))
        self._wait_timeout_ms = wait_timeout_ms
        self._ttl_s = ttl_s  # a drill's keys expire on their own if the drill is interrupted

    def write(self, key: str, value: int) -> int:
        pipe = self._client.pipeline(transaction=False)  # one connection for both: WAIT counts that client's writes
        pipe.set(key, value, ex=self._ttl_s)
        pipe.wait(1, self._wait_timeout_ms)
        set_reply, wait_reply = pipe.execute(raise_on_error=False)
        if isinstance(set_reply, Exception):
            raise set_reply
        return int(wait_reply) if isinstance(wait_reply, int) else 0

    def read(self, keys: Sequence[str]) -> list[int | None]:
        out: list[int | None] = []
        for i in range(0, len(keys), 1000):
            for raw in self._client.mget(list(keys[i:i + 1000])):
                try:
                    out.append(int(raw) if raw is not None else None)
                except ValueError:
                    out.append(None)
        return out

    def delete(self, keys: Sequence[str]) -> None:
        for i in range(0, len(keys), 1000):
            self._client.unlink(*keys[i:i + 1000])

    def close(self) -> None:
        self._client.close()


def error_kind(e: BaseException) -> str:
    """A short, secret-free name for a failed write: the class, and a server error's code word."""
    name = type(e).__name__
    words = str(e).split()
    if name == "ResponseError" and words:
        return f"{name} {words[0]}"
    return name


class Writer:
    """A thread writing `<prefix><n>` = n at a steady pace through a `KeyStore`, recording each outcome."""

    def __init__(self, store: KeyStore, prefix: str, interval_s: float = 0.01,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.prefix = prefix
        self.interval_s = interval_s
        self._clock = clock
        self._monotonic = monotonic
        self._samples: list[WriteSample] = []
        self.errors: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drill-writer", daemon=True)

    def key(self, n: int) -> str:
        return f"{self.prefix}{n}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def samples(self) -> list[WriteSample]:
        with self._lock:
            return list(self._samples)

    def acked(self) -> int:
        with self._lock:
            return sum(1 for s in self._samples if s.outcome == "acked")

    def last_outcome(self) -> Outcome | None:
        with self._lock:
            return self._samples[-1].outcome if self._samples else None

    def _run(self) -> None:
        n = 0
        next_at = self._monotonic()
        while not self._stop.is_set():
            n += 1
            outcome: Outcome
            try:
                outcome = "acked" if self.store.write(self.key(n), n) >= 1 else "plain"
            except Exception as e:  # whatever the client raises, the writer goes on: that is the point
                outcome = "failed"
                self.errors[error_kind(e)] += 1
            with self._lock:
                self._samples.append(WriteSample(self._clock(), n, outcome))
            next_at += self.interval_s
            delay = next_at - self._monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_at = self._monotonic()  # behind (a timeout): no burst to catch up
