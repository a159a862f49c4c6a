"""The agent's local fence: a master cut off from every peer pauses its own writes (issue #12).

Layer: domain (pure; no I/O). `silence_ms` reads one cycle's report; `LocalFence` keeps, across cycles,
since when the node has been alone and says what to send its Redis. The runtime sends it (`CLIENT PAUSE
<ms> WRITE`, renewed every cycle so that it lapses by itself if the agent stops; `CLIENT KILL TYPE normal`
once when the fence starts; `CLIENT UNPAUSE` when it ends).

The rule: this node's Redis is master and has something to lose (its Sentinel knows at least one other
Sentinel and at least one replica for the master, and Redis itself already refuses writes without a
replica: `min-replicas-to-write` >= 1), and for down-after-milliseconds no replica has acknowledged it
(INFO replication's lag) and no other Sentinel has answered its Sentinel (flagged down or disconnected,
or its last good ping older than `ANSWER_STALE_MS`). Then the majority on the other side can promote a
replica now, and whatever this node accepts is lost when it rejoins. Redis would refuse those writes
anyway after `min-replicas-max-lag` (10 s); the fence only brings that to down-after. Unknown is not
alone: an unreachable Redis or Sentinel, no view of the master, or no peer known never fences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from protocol.report import RedisHealth, SentinelHealth

__all__ = ["ANSWER_STALE_MS", "FenceStep", "LocalFence", "silence_ms"]

# A replica sends REPLCONF ACK every second and a Sentinel pings its peers every second: an answer older
# than this is a missed one (INFO's lag is whole seconds, so 3 s is "at least two acks missed").
ANSWER_STALE_MS = 3000


def silence_ms(redis: RedisHealth, sentinel: SentinelHealth, master_name: str) -> int | None:
    """How long this master has evidently been without any replica or peer Sentinel, in ms (0: alone now,
    since an unknown time), or None when it is not alone or the rule does not apply."""
    if not (redis.reachable and redis.role == "master" and sentinel.reachable):
        return None
    if not redis.min_replicas_to_write:  # Redis would go on taking writes alone: not ours to stop them
        return None
    view = sentinel.master(master_name)
    if view is None or not view.sentinels or not view.replicas:
        return None  # no peer to lose: a single node, or a Sentinel that has not met its peers yet
    ages: list[int] = []
    for replica in redis.connected_replicas:
        age = replica.lag_s * 1000
        if age < ANSWER_STALE_MS:
            return None
        ages.append(age)
    replica_age = min(ages) if ages else 0  # none connected: gone since we cannot tell when
    peer_ages: list[int] = []
    for peer in view.sentinels:
        ping_ms = peer.last_ok_ping_ms
        if not peer.down and ping_ms is not None and ping_ms < ANSWER_STALE_MS:
            return None
        peer_ages.append(ping_ms if ping_ms is not None else 0)
    return min(replica_age, min(peer_ages))


Action = Literal["none", "start", "renew", "end"]


@dataclass(frozen=True, slots=True)
class FenceStep:
    """What to send this cycle: "start" (pause writes, disconnect clients), "renew" (pause again), "end"
    (unpause) or "none"; `alone_ms` is how long the node has been alone (None: not alone)."""

    action: Action
    alone_ms: int | None


class LocalFence:
    """Since when the node has been alone, and whether it is fenced; one `step` per cycle."""

    def __init__(self, down_after_ms: int) -> None:
        self.down_after_ms = down_after_ms
        self._alone_since: float | None = None  # seconds on the caller's monotonic clock
        self.fenced = False

    def step(self, silence: int | None, now: float, down_after_ms: int | None = None) -> FenceStep:
        """`silence`: `silence_ms` of this cycle's report; `down_after_ms`: the Sentinel's own value when
        it reports one (it is what the majority waits), else the configured one."""
        hold_ms = down_after_ms if down_after_ms else self.down_after_ms
        if silence is None:
            self._alone_since = None
            if self.fenced:
                self.fenced = False
                return FenceStep("end", None)
            return FenceStep("none", None)
        since = now - silence / 1000.0
        if self._alone_since is None or since < self._alone_since:
            self._alone_since = since
        alone_ms = round((now - self._alone_since) * 1000)
        if self.fenced:
            return FenceStep("renew", alone_ms)
        if alone_ms >= hold_ms:
            self.fenced = True
            return FenceStep("start", alone_ms)
        return FenceStep("none", alone_ms)

    def start_failed(self) -> None:
        """The pause could not be sent: the next alone cycle starts the fence again (disconnecting too)."""
        self.fenced = False
