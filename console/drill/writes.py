"""The writer's record, judged: how long writes were unavailable after the fault, and how many writes that
were acknowledged are missing from the master afterwards.

Layer: the drill's pure core. Samples come from `console.drill.writer.Writer`; every time is an argument.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from console.drill.model import Outcome


@dataclass(frozen=True, slots=True)
class WriteSample:
    at: float  # when the attempt ended (Unix seconds)
    n: int  # the key's number (drill:<run>:<n>), also its value
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class Outage:
    start: float  # the last acknowledged write before it, or the fault if later
    end: float | None  # the first acknowledged write after it; None: not over when the drill ended

    def length_s(self, end_at: float) -> float:
        return (self.end if self.end is not None else end_at) - self.start


def longest_outage(samples: Sequence[WriteSample], fault_at: float, end_at: float) -> Outage | None:
    """The longest stretch after the fault between two writes acknowledged by WAIT 1 with at least one
    attempt in between that was not (refused, failed, or accepted without a replica). Slow but successful
    writes are not an outage. None when no attempt after the fault went wrong."""
    best: Outage | None = None
    last_ok = fault_at
    broken = False
    for s in sorted(samples, key=lambda s: s.at):
        if s.at < fault_at:
            continue
        if s.outcome != "acked":
            broken = True
            continue
        if broken:
            outage = Outage(last_ok, s.at)
            if best is None or outage.length_s(end_at) > best.length_s(end_at):
                best = outage
            broken = False
        last_ok = max(last_ok, s.at)
    if broken:
        outage = Outage(last_ok, None)
        if best is None or outage.length_s(end_at) > best.length_s(end_at):
            best = outage
    return best


def write_unavailability(samples: Sequence[WriteSample], fault_at: float, end_at: float) -> tuple[float, float | None]:
    """(seconds without an acknowledged write, when writes were accepted again), from the longest outage;
    (0.0, None) when writes never failed. An outage not over by `end_at` counts up to `end_at`."""
    outage = longest_outage(samples, fault_at, end_at)
    if outage is None:
        return 0.0, None
    return outage.length_s(end_at), outage.end


@dataclass(frozen=True, slots=True)
class LostWrites:
    acked: int  # acknowledged by WAIT 1, missing (or changed) on the master afterwards
    plain: int  # accepted without a replica's acknowledgement, missing afterwards
    plain_last_at: float | None = None  # when the last of those was accepted


def count_lost(samples: Sequence[WriteSample], found: Mapping[int, int | None]) -> LostWrites:
    """Compare what was acknowledged with what the master holds (`found`: key number -> value read)."""
    acked = sum(1 for s in samples if s.outcome == "acked" and found.get(s.n) != s.n)
    lost_plain = [s.at for s in samples if s.outcome == "plain" and found.get(s.n) != s.n]
    return LostWrites(acked, len(lost_plain), max(lost_plain) if lost_plain else None)
