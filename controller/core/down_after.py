"""A fast failover's lowered Sentinel down-after, and setting it back: what to do and when.

Layer: pure core (used by `controller.core.planner`). The Sentinel the controller asks for a fast failover
leads it, and until it has reconfigured the other replicas (about a second after the others have switched)
it names the old, dead master to `SENTINEL MASTERS`; a client asking it first (redis-py's `discover_master`)
takes that answer unless the old master is flagged down, which happens only after down-after. Lowering that
one Sentinel's down-after-milliseconds right after asking it to fail over makes it flag the old master down
at once, and clients go on to the next Sentinel. The lowered value is owed back (`DownAfterOwed`, persisted
in the heal state) and restored once that Sentinel itself names the new master with no failover in flight,
or after failover-timeout at the latest. A Sentinel whose down-after differs from the configured value
while no failover is in flight (a restore lost to a controller crash, a hand edit) is set back, but only
while a majority of the cluster's Sentinels run with the configured value: the configuration is then
corroborated by the cluster itself, not only by the controller's file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from controller.core.view import ClusterView

DOWN_AFTER_RETRY_S = 5.0  # a failed restore is tried again this long after


@dataclass(frozen=True, slots=True)
class SentinelDownAfter:
    """SENTINEL SET <master> down-after-milliseconds on one node's Sentinel."""

    node: str
    down_after_ms: int
    reason: str
    failover_of: str | None = None  # a fast failover's lowering: the old master ("ip:port"); None: a restore


@dataclass(frozen=True, slots=True)
class DownAfterOwed:
    """A Sentinel whose down-after-milliseconds the controller owes a restore to `restore_ms`: lowered with a
    fast failover of `failover_of`, or a restore (of a drift) that failed and is tried again."""

    node: str
    restore_ms: int
    since: float  # when it was lowered, or when the restore first failed
    restore_by: float  # restored from this time on, failover ended or not (failover-timeout)
    failover_of: str | None = None  # the old master ("ip:port") of the failover it was lowered for
    last_try_at: float | None = None  # the last restore that failed (tried again DOWN_AFTER_RETRY_S later)
    # restored then: kept until a report of that node from after the restore shows it (the report before
    # still shows the old value, which is no drift to repair again)
    restored_at: float | None = None


def plan_lowering(view: ClusterView, owed: Sequence[DownAfterOwed], via_node: str, old_master: str,
                  configured_ms: int | None, lowered_ms: int) -> SentinelDownAfter | str | None:
    """The lowering that goes with a fast failover asked of `via_node`'s Sentinel; a string: why not; None: off
    or already done (the failover asked again while the reports do not show it in progress yet). Only when the
    configured value is known and that Sentinel runs with it: the restore gives it back exactly what it had."""
    if lowered_ms <= 0 or any(o.node == via_node and o.restored_at is None for o in owed):
        return None
    if configured_ms is None:
        return "the cluster's configured down-after is not known: it could not be restored"
    if lowered_ms >= configured_ms:
        return None  # nothing to gain
    node = view.node(via_node)
    sv = node.report.sentinel.master(view.master_name) if node is not None and view.sentinel_up(node) else None
    if sv is None or sv.down_after_ms != configured_ms:
        return (f"{via_node}'s Sentinel reports down-after {sv.down_after_ms if sv else 'unknown'} ms, not the "
                f"configured {configured_ms} ms: left alone")
    return SentinelDownAfter(via_node, lowered_ms, f"it leads the fast failover away from {old_master}: it flags "
                             f"the dead master down after {lowered_ms} ms, so clients skip its stale answer until "
                             f"its failover ends (restored to {configured_ms} ms then)", failover_of=old_master)


def _failover_in_flight(view: ClusterView) -> bool:
    return any(v.failover_in_progress for _, v in view.sentinel_views())


def _ended(view: ClusterView, owed: DownAfterOwed, master: str | None) -> str | None:
    """Why the failover `owed` was lowered for has ended, as that Sentinel sees it; None: not (yet) known."""
    if master is None or _failover_in_flight(view) or master == owed.failover_of:
        return None
    node = view.node(owed.node)
    sv = node.report.sentinel.master(view.master_name) if node is not None and view.sentinel_up(node) else None
    if sv is None or sv.master_address != master or sv.failover_in_progress:
        return None
    return f"the failover has ended: {owed.node}'s Sentinel names the master {master} like the majority"


def plan_down_after_restores(view: ClusterView, owed: Sequence[DownAfterOwed], configured_ms: int | None,
                             master: str | None, decided: bool, now: float
                             ) -> tuple[list[SentinelDownAfter], list[tuple[str, str]]]:
    """The restores due now: each owed one whose failover has ended (or whose failover-timeout has passed),
    and, with the master decided and no failover in flight, every Sentinel whose down-after drifted from the
    configured value. Returns (actions, holds as (what, why))."""
    actions: list[SentinelDownAfter] = []
    held: list[tuple[str, str]] = []
    owing = {o.node for o in owed}
    for o in owed:
        if o.restored_at is not None:
            continue
        what = f"SENTINEL SET down-after-milliseconds {o.restore_ms} on {o.node}"
        if o.last_try_at is not None and now - o.last_try_at < DOWN_AFTER_RETRY_S:
            held.append((what, f"the last restore failed {now - o.last_try_at:.0f} s ago: tried again after "
                               f"{DOWN_AFTER_RETRY_S:.0f} s"))
            continue
        if o.failover_of is None:
            why = "restoring the configured value (the last try failed)"
        elif (ended := _ended(view, o, master)) is not None:
            why = ended
        elif now >= o.restore_by:
            why = f"failover-timeout has passed since it was lowered ({now - o.since:.0f} s ago)"
        else:
            held.append((what, f"lowered for the fast failover away from {o.failover_of}: restored when its "
                               "failover has ended"))
            continue
        actions.append(SentinelDownAfter(o.node, o.restore_ms, why))
    if configured_ms is None or not decided or _failover_in_flight(view):
        return actions, held
    reported = [(n.name, v.down_after_ms) for n, v in view.sentinel_views() if v.down_after_ms is not None]
    drifted, drift_held = drift_repairs(
        reported, configured_ms, owing, view.expected_sentinels,
        lambda name: f"SENTINEL SET down-after-milliseconds {configured_ms} on {name}",
        lambda ms, agree: f"its down-after is {ms} ms, but only {agree} of {view.expected_sentinels} Sentinels "
                          f"run with the configured {configured_ms} ms: an operator's to settle")
    held += drift_held
    actions += [SentinelDownAfter(name, configured_ms, f"its down-after is {ms} ms with no failover in flight; "
                                  f"the configured value, {configured_ms} ms, is what {', '.join(agree)} run with")
                for name, ms, agree in drifted]
    return actions, held


def drift_repairs(reported: Sequence[tuple[str, int]], want: int, owing: set[str], expected: int,
                  what: Callable[[str], str], why_held: Callable[[int, int], str],
                  ) -> tuple[list[tuple[str, int, list[str]]], list[tuple[str, str]]]:
    """The Sentinels whose reported value (`reported`: (node, value)) drifted from `want` and are owed
    nothing: each set back, (node, its value, the nodes that run `want`), while a majority of the
    `expected` Sentinels runs `want`; else held, an operator's to settle (never impose a config file on a
    cluster that runs another value)."""
    agree = [name for name, value in reported if value == want]
    repairs: list[tuple[str, int, list[str]]] = []
    held: list[tuple[str, str]] = []
    for name, value in reported:
        if value == want or name in owing:
            continue
        if len(agree) * 2 <= expected:
            held.append((what(name), why_held(value, len(agree))))
        else:
            repairs.append((name, value, agree))
    return repairs, held


class _Owed(Protocol):
    @property
    def node(self) -> str: ...
    @property
    def restored_at(self) -> float | None: ...


OwedT = TypeVar("OwedT", bound=_Owed)


def settle_owed(view: ClusterView, owed: Sequence[OwedT], now: float) -> tuple[OwedT, ...]:
    """The owed restores still to keep: a restored one goes once its node has reported after the restore (a
    report interval later, or a minute without one), and one whose node the cluster no longer has goes.
    Shared with `controller.core.info_period`'s owed INFO-PERIOD restores."""
    keep = []
    for o in owed:
        node = view.node(o.node)
        if node is None:
            continue
        if o.restored_at is not None and (node.received_at >= o.restored_at + view.report_interval_s
                                          or now - o.restored_at >= 60.0):
            continue
        keep.append(o)
    return tuple(keep)


def owe_after(owed: Sequence[DownAfterOwed], action: SentinelDownAfter, ok: bool, now: float,
              configured_ms: int | None, failover_timeout_s: float) -> tuple[DownAfterOwed, ...]:
    """What is owed after `action` was carried out (`ok`) or failed."""
    mine = next((o for o in owed if o.node == action.node), None)
    rest = tuple(o for o in owed if o.node != action.node)
    if action.failover_of is not None:  # a lowering
        if not ok or configured_ms is None:
            return tuple(owed)  # not lowered (or not known to be): the drift rule looks after a doubt
        return (*rest, DownAfterOwed(action.node, configured_ms, since=now, restore_by=now + failover_timeout_s,
                                     failover_of=action.failover_of))
    if ok:
        return (*rest, DownAfterOwed(action.node, action.down_after_ms, since=now, restore_by=now,
                                     restored_at=now))
    if mine is None:
        mine = DownAfterOwed(action.node, action.down_after_ms, since=now, restore_by=now)
    return (*rest, DownAfterOwed(mine.node, mine.restore_ms, mine.since, mine.restore_by, failover_of=None,
                                 last_try_at=now))
