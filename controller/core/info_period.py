"""A reset Sentinel's faster INFO period, and setting it back: what to do and when.

Layer: pure core (used by `controller.core.planner`). After SENTINEL RESET a Sentinel relearns its peer
Sentinels within a hello period (2 s) but the replicas only at its next INFO of the master, up to its
INFO-PERIOD (10 s) later, and the reset sequence waits for both. Right before it resets a Sentinel (the
same executor step), the controller sets that Sentinel's INFO-PERIOD to `reset_info_period_ms` (1000 ms)
with SENTINEL DEBUG, so it relearns the replicas within about a second. SENTINEL DEBUG is documented as a
debugging command; its tunables are runtime only (never written to sentinel.conf; a restarted Sentinel is
back at 10000 ms), and a lowered one costs INFO traffic (ten times as much from that Sentinel to every
instance it monitors) for as long as it lasts. So the lowered value is owed back (`InfoPeriodOwed`,
persisted in the heal state) and set back once that Sentinel lists the replicas again, the sequence has
ended, or `INFO_PERIOD_RESTORE_AFTER_S` after the reset at the latest. A Sentinel that reports an
INFO-PERIOD other than the default while no reset sequence is in flight and nothing is owed for it (a
restore lost to a controller that died in between, a hand-made SENTINEL DEBUG) is set back to the default,
but only while a majority of the cluster's Sentinels run with the default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from controller.core.down_after import drift_repairs, settle_owed
from controller.core.view import ClusterView

__all__ = ["InfoPeriodOwed", "SentinelInfoPeriod", "owe_after_restore", "owe_lowered", "plan_info_period_restores",
           "settle_owed"]

INFO_PERIOD_DEFAULT_MS = 10_000  # Redis's SENTINEL_INFO_PERIOD (what a started Sentinel runs with)
INFO_PERIOD_RETRY_S = 5.0  # a failed restore is tried again this long after
INFO_PERIOD_RESTORE_AFTER_S = 60.0  # set back this long after the reset whatever the Sentinel lists


@dataclass(frozen=True, slots=True)
class SentinelInfoPeriod:
    """SENTINEL DEBUG INFO-PERIOD on one node's Sentinel: a restore (the lowering is part of its ResetSentinel)."""

    node: str
    info_period_ms: int
    reason: str


@dataclass(frozen=True, slots=True)
class InfoPeriodOwed:
    """A Sentinel whose INFO-PERIOD the controller owes a restore to `restore_ms`: lowered right before its
    SENTINEL RESET (`for_reset`), or a restore of a drift that failed and is tried again."""

    node: str
    restore_ms: int
    since: float  # when it was lowered (its reset), or when the restore first failed
    for_reset: bool = True
    last_try_at: float | None = None  # the last restore that failed (tried again INFO_PERIOD_RETRY_S later)
    # restored then: kept until a report of that node from after the restore shows it (the report before
    # still shows the lowered value, which is no drift to repair again)
    restored_at: float | None = None


def _lists_replicas(view: ClusterView, owed: InfoPeriodOwed, settle_s: float) -> bool:
    """Its Sentinel lists every live replica again, in a report received `settle_s` after its reset (an
    earlier one may show the tables of before)."""
    node = view.node(owed.node)
    if node is None or not view.sentinel_up(node) or node.received_at < owed.since + settle_s:
        return False
    sv = node.report.sentinel.master(view.master_name)
    live = len(view.fresh_nodes())
    return sv is not None and len(sv.replicas) >= live - 1


def plan_info_period_restores(view: ClusterView, owed: Sequence[InfoPeriodOwed], reset_in_flight: bool,
                              settle_s: float, now: float
                              ) -> tuple[list[SentinelInfoPeriod], list[tuple[str, str]]]:
    """The restores due now: each owed one whose Sentinel lists the replicas again, whose sequence has ended
    (or INFO_PERIOD_RESTORE_AFTER_S after its reset), and, with no reset sequence in flight, every Sentinel
    that reports a non-default INFO-PERIOD while a majority run the default. Returns (actions, holds as
    (what, why))."""
    actions: list[SentinelInfoPeriod] = []
    held: list[tuple[str, str]] = []
    for o in owed:
        if o.restored_at is not None:
            continue
        what = f"SENTINEL DEBUG INFO-PERIOD {o.restore_ms} on {o.node}"
        if o.last_try_at is not None and now - o.last_try_at < INFO_PERIOD_RETRY_S:
            held.append((what, f"the last restore failed {now - o.last_try_at:.0f} s ago: tried again after "
                               f"{INFO_PERIOD_RETRY_S:.0f} s"))
            continue
        if not o.for_reset:
            why = "restoring the default (the last try failed)"
        elif _lists_replicas(view, o, settle_s):
            why = f"{o.node}'s Sentinel lists the replicas again after its reset"
        elif not reset_in_flight:
            why = "the Sentinel reset sequence it was lowered for has ended"
        elif now - o.since >= INFO_PERIOD_RESTORE_AFTER_S:
            why = f"{now - o.since:.0f} s since its reset (set back after {INFO_PERIOD_RESTORE_AFTER_S:.0f} s at most)"
        else:
            held.append((what, "lowered for its SENTINEL RESET: set back once it lists the replicas again"))
            continue
        actions.append(SentinelInfoPeriod(o.node, o.restore_ms, why))
    if reset_in_flight:
        return actions, held
    owing = {o.node for o in owed}
    reported = [(n.name, n.report.sentinel.info_period_ms) for n in view.fresh_nodes()
                if view.sentinel_up(n) and n.report.sentinel.info_period_ms is not None]
    drifted, drift_held = drift_repairs(
        reported, INFO_PERIOD_DEFAULT_MS, owing, view.expected_sentinels,
        lambda name: f"SENTINEL DEBUG INFO-PERIOD {INFO_PERIOD_DEFAULT_MS} on {name}",
        lambda ms, agree: f"its INFO-PERIOD is {ms} ms, but only {agree} of {view.expected_sentinels} Sentinels "
                          f"run with the default {INFO_PERIOD_DEFAULT_MS} ms: an operator's to settle")
    held += drift_held
    actions += [SentinelInfoPeriod(name, INFO_PERIOD_DEFAULT_MS, f"its INFO-PERIOD is {ms} ms with no Sentinel "
                                   f"reset in flight; {', '.join(agree)} run with the default "
                                   f"{INFO_PERIOD_DEFAULT_MS} ms")
                for name, ms, agree in drifted]
    return actions, held


def owe_lowered(owed: Sequence[InfoPeriodOwed], node: str, lowered_from_ms: int | None,
                now: float) -> tuple[InfoPeriodOwed, ...]:
    """What is owed after `node`'s Sentinel was reset with its INFO-PERIOD lowered from `lowered_from_ms`
    (None: not lowered: unsupported, or already at most the lowered value). A restore still owed from an
    earlier lowering keeps its value (what it ran with before either) and counts from this reset."""
    mine = next((o for o in owed if o.node == node and o.restored_at is None), None)
    rest = tuple(o for o in owed if o.node != node)
    if mine is not None:
        return (*rest, InfoPeriodOwed(node, mine.restore_ms, since=now))
    if lowered_from_ms is None:
        return tuple(owed)
    return (*rest, InfoPeriodOwed(node, lowered_from_ms, since=now))


def owe_after_restore(owed: Sequence[InfoPeriodOwed], action: SentinelInfoPeriod, ok: bool,
                      now: float) -> tuple[InfoPeriodOwed, ...]:
    """What is owed after the restore `action` was carried out (`ok`) or failed."""
    mine = next((o for o in owed if o.node == action.node), None)
    rest = tuple(o for o in owed if o.node != action.node)
    if ok:
        return (*rest, InfoPeriodOwed(action.node, action.info_period_ms, since=now, for_reset=False,
                                      restored_at=now))
    since = mine.since if mine is not None and mine.restored_at is None else now
    return (*rest, InfoPeriodOwed(action.node, action.info_period_ms, since=since, for_reset=False, last_try_at=now))
