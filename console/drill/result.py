"""A drill's result as data (the JSON `redwarden drill --json` prints), the summary over runs, and the
text a person reads for both.

Layer: the drill's pure core: observations and write samples in, a `DrillResult` out; results in,
a `Summary` and text out. Times in a result are seconds relative to the fault.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict

from console.drill.model import (
    MASTER_FAULTS,
    NEW_MASTER,
    REDUNDANCY_RESTORED,
    REPLACEMENT_CREATED,
    REPLICA_IN_SYNC,
    STEPS,
    WHOLE_CLUSTER_FAULTS,
    WRITES_ACCEPTED,
)
from console.drill.observer import Observations, Step
from console.drill.writes import LostWrites, WriteSample, write_unavailability


class StepJson(TypedDict):
    name: str
    at_s: float | None
    detail: str | None


class ActionJson(TypedDict):
    at_s: float
    kind: str
    node: str | None
    description: str
    status: str


class DrillResult(TypedDict):
    fault: str
    target: str
    node: str
    old_master: str | None
    fault_at: float
    steps: list[StepJson]
    write_unavailable_s: float | None
    writes_acked: int
    writes_lost: int | None
    writes_plain_acked: int
    writes_plain_lost: int | None
    writes_plain_lost_last_s: float | None  # when the last lost write without a replica was accepted
    writes_failed: int
    write_errors: dict[str, int]
    redundancy_restored_s: float | None
    findings_seen: list[dict[str, float | str]]
    actions: list[ActionJson]
    held: list[str]
    timed_out: bool
    notes: list[str]
    sentinel_order: str | None  # the order of the writer's Sentinel list (console.drill.orders), None: as given
    sentinels: list[str]  # the writer's Sentinel list, "ip:port", in the order it asks them
    failover_leader_rank: int | None  # where in that list the Sentinel the controller asked to fail over was
    # partition-master only (else None): from the new master seen to the last write the old master accepted
    # that is lost (<= 0: it accepted none after the promotion; 0.0 when none was lost), and how many it lost
    split_brain_s: float | None
    old_master_writes_lost: int | None


@dataclass(frozen=True, slots=True)
class FaultInfo:
    fault: str
    target: str  # "sandbox /tmp/sb", "cluster shop"
    node: str  # the victim's name
    node_address: str
    old_master: str | None
    at: float
    detail: str


def _rel(at: float | None, origin: float) -> float | None:
    return None if at is None else round(at - origin, 3)


SPLIT_BRAIN_FAULTS = frozenset({"partition-master"})  # the old master lives on, cut off from its replicas


def split_brain(fault: str, new_master_at: float | None, lost: LostWrites | None) -> tuple[float | None, int | None]:
    """(split-brain window, writes the old master accepted that were lost) for a fault that leaves the old
    master running apart. The window runs from the new master (as the drill saw it) to the last write
    accepted without a replica that is missing afterwards: the old master's, since the new one's writes
    are read back from it. 0.0 when none was lost; None when not such a fault, or unknown."""
    if fault not in SPLIT_BRAIN_FAULTS or lost is None:
        return None, None
    if lost.plain == 0:
        return 0.0, 0
    if new_master_at is None or lost.plain_last_at is None:
        return None, lost.plain
    return round(lost.plain_last_at - new_master_at, 3), lost.plain


def assemble_result(
    info: FaultInfo,
    obs: Observations,
    samples: Sequence[WriteSample],
    end_at: float,
    lost: LostWrites | None,
    timed_out: bool = False,
    write_errors: Mapping[str, int] | None = None,
    notes: Sequence[str] = (),
    sentinel_order: str | None = None,
    sentinels: Sequence[str] = (),
    failover_leader_rank: int | None = None,
) -> DrillResult:
    """The drill's result: every step in order, null when it did not happen, times relative to the fault."""
    steps = dict(obs.steps)
    unavailable_s, accepted_at = write_unavailability(samples, info.at, end_at)
    if accepted_at is not None:
        steps[WRITES_ACCEPTED] = Step(accepted_at, f"after {unavailable_s:.2f} s without an acknowledged write")
    restored = steps.get(REDUNDANCY_RESTORED)
    new_master = steps.get(NEW_MASTER)
    split_brain_s, old_master_lost = split_brain(info.fault, new_master.at if new_master else None, lost)
    return {
        "fault": info.fault,
        "target": info.target,
        "node": info.node,
        "old_master": info.old_master,
        "fault_at": info.at,
        "steps": [
            {"name": name, "at_s": _rel(s.at, info.at) if s else None, "detail": s.detail if s else None}
            for name in STEPS
            for s in [steps.get(name)]
        ],
        "write_unavailable_s": round(unavailable_s, 3),
        "writes_acked": sum(1 for s in samples if s.outcome == "acked"),
        "writes_lost": lost.acked if lost else None,
        "writes_plain_acked": sum(1 for s in samples if s.outcome == "plain"),
        "writes_plain_lost": lost.plain if lost else None,
        "writes_plain_lost_last_s": _rel(lost.plain_last_at, info.at) if lost else None,
        "writes_failed": sum(1 for s in samples if s.outcome == "failed"),
        "write_errors": dict(sorted((write_errors or {}).items(), key=lambda kv: -kv[1])),
        "redundancy_restored_s": _rel(restored.at, info.at) if restored else None,
        "findings_seen": [{"code": code, "at_s": round(at - info.at, 3)} for code, at in obs.findings_seen],
        "actions": [{"at_s": round(a.started_at - info.at, 3), "kind": a.kind, "node": a.node,
                     "description": a.description, "status": a.status} for a in obs.actions],
        "held": [f"{what}: {reason}" for what, reason in obs.held],
        "timed_out": timed_out,
        "notes": list(notes),
        "sentinel_order": sentinel_order,
        "sentinels": list(sentinels),
        "failover_leader_rank": failover_leader_rank,
        "split_brain_s": split_brain_s,
        "old_master_writes_lost": old_master_lost,
    }


def step_at(result: DrillResult, name: str) -> float | None:
    return next((s["at_s"] for s in result["steps"] if s["name"] == name), None)


class Stat(TypedDict):
    median: float | None
    worst: float | None
    values: list[float | None]


def _stat(values: Sequence[float | None]) -> Stat:
    present = [v for v in values if v is not None]
    return {
        "median": round(statistics.median(present), 3) if present else None,
        "worst": round(max(present), 3) if present else None,
        "values": list(values),
    }


def boot_and_sync_s(result: DrillResult) -> float | None:
    """replacement_created -> replica_in_sync: the droplet's boot and initial sync, for reference."""
    created, synced = step_at(result, REPLACEMENT_CREATED), step_at(result, REPLICA_IN_SYNC)
    return round(synced - created, 3) if created is not None and synced is not None else None


class OrderStat(TypedDict):
    order: str
    runs: int
    write_unavailable_s: Stat


class Summary(TypedDict):
    fault: str
    runs: int
    timed_out: int
    write_unavailable_s: Stat
    sentinel_orders: list[OrderStat]  # write unavailability per order of the writer's Sentinel list
    worst_sentinel_order: OrderStat | None  # the one with the highest median (then worst); None: no order known
    redundancy_restored_s: Stat
    boot_and_sync_s: Stat
    writes_acked: int
    writes_lost: int | None
    writes_plain_lost: int | None
    split_brain_s: Stat  # partition-master: per run (null for other faults)
    old_master_writes_lost: int | None  # in total over the runs that know it


def by_sentinel_order(results: Sequence[DrillResult]) -> list[OrderStat]:
    """Write unavailability per order of the writer's Sentinel list, orders in their first run's order."""
    orders = list(dict.fromkeys(r["sentinel_order"] for r in results if r["sentinel_order"] is not None))
    return [{"order": order, "runs": len(values), "write_unavailable_s": _stat(values)}
            for order in orders
            for values in [[r["write_unavailable_s"] for r in results if r["sentinel_order"] == order]]]


def worst_order(stats: Sequence[OrderStat]) -> OrderStat | None:
    """The order a client fares worst with: the highest median, then the highest worst run."""
    known = [s for s in stats if s["write_unavailable_s"]["median"] is not None]
    return max(known, key=lambda s: (s["write_unavailable_s"]["median"] or 0.0,
                                     s["write_unavailable_s"]["worst"] or 0.0), default=None)


def summarize(results: Sequence[DrillResult]) -> Summary:
    """Median and worst over runs (a run where a step did not happen shows as null in `values`), and the
    write unavailability per order of the writer's Sentinel list with the worst of them."""
    lost = [r["writes_lost"] for r in results]
    plain = [r["writes_plain_lost"] for r in results]
    orders = by_sentinel_order(results)
    return {
        "fault": results[0]["fault"] if results else "",
        "runs": len(results),
        "timed_out": sum(1 for r in results if r["timed_out"]),
        "write_unavailable_s": _stat([r["write_unavailable_s"] for r in results]),
        "sentinel_orders": orders,
        "worst_sentinel_order": worst_order(orders),
        "redundancy_restored_s": _stat([r["redundancy_restored_s"] for r in results]),
        "boot_and_sync_s": _stat([boot_and_sync_s(r) for r in results]),
        "writes_acked": sum(r["writes_acked"] for r in results),
        "writes_lost": None if any(v is None for v in lost) else sum(v for v in lost if v is not None),
        "writes_plain_lost": None if any(v is None for v in plain) else sum(v for v in plain if v is not None),
        "split_brain_s": _stat([r.get("split_brain_s") for r in results]),
        "old_master_writes_lost": sum(v for r in results if (v := r.get("old_master_writes_lost")) is not None)
        if any(r.get("old_master_writes_lost") is not None for r in results) else None,
    }


def render_timeline(result: DrillResult) -> str:
    """The table a person reads: steps in time order, those that did not happen last."""
    if result["fault"] in WHOLE_CLUSTER_FAULTS:
        master = f" (every node, master {result['old_master']})"
    elif result["fault"] in MASTER_FAULTS:
        master = f" (master {result['node']} {result['old_master']})"
    else:
        master = f" ({result['node']}, master {result['old_master']})"
    out = [f"drill {result['fault']} on {result['target']}{master}"]
    happened = sorted((s for s in result["steps"] if s["at_s"] is not None), key=lambda s: s["at_s"] or 0.0)
    missing = [s for s in result["steps"] if s["at_s"] is None]
    width = max(len(name) for name in STEPS)
    for s in happened:
        out.append(f"  {'+' + format(s['at_s'], '.2f') + 's':>9}  {s['name']:<{width}}  {s['detail'] or ''}".rstrip())
    for s in missing:
        out.append(f"  {'-':>9}  {s['name']:<{width}}  did not happen")
    lost = "?" if result["writes_lost"] is None else str(result["writes_lost"])
    plain_lost = "?" if result["writes_plain_lost"] is None else str(result["writes_plain_lost"])
    out.append(f"writes: {result['writes_acked']} acknowledged (WAIT 1), {lost} lost; "
               f"{result['writes_plain_acked']} accepted without a replica, {plain_lost} of them lost; "
               f"{result['writes_failed']} refused; unavailable {result['write_unavailable_s'] or 0.0:.2f} s")
    if result["write_errors"]:
        out.append("refusals: " + ", ".join(f"{kind} x{count}" for kind, count in result["write_errors"].items()))
    if result["sentinels"]:
        order = f"{result['sentinel_order']} order" if result["sentinel_order"] else "order as given"
        leader = result["failover_leader_rank"]
        tail = f"; the failover's leader is number {leader}" if leader is not None else ""
        out.append(f"writer's Sentinels ({order}): {', '.join(result['sentinels'])}{tail}")
    if result.get("split_brain_s") is not None:
        window = result["split_brain_s"] or 0.0
        when = (f"until {window:.2f} s after the new master was seen" if window > 0
                else f"no write after the new master was seen (the last {-window:.2f} s before)")
        out.append(f"split brain: the old master accepted writes {when}; {result['old_master_writes_lost']} of "
                   "them lost")
    restored = result["redundancy_restored_s"]
    out.append(f"redundancy restored after {restored:.2f} s" if restored is not None else "redundancy NOT restored")
    if result["timed_out"]:
        out.append("TIMED OUT: the cluster did not get back to full redundancy within the drill's timeout")
    out.extend(f"note: {n}" for n in result["notes"])
    return "\n".join(out) + "\n"


def _fmt_stat(stat: Stat) -> str:
    if stat["median"] is None:
        return "n/a"
    missing = sum(1 for v in stat["values"] if v is None)
    tail = f" ({missing} run(s) without it)" if missing else ""
    return f"median {stat['median']:.2f} s, worst {stat['worst']:.2f} s{tail}"


def render_summary(summary: Summary) -> str:
    lost = "?" if summary["writes_lost"] is None else str(summary["writes_lost"])
    plain = "?" if summary["writes_plain_lost"] is None else str(summary["writes_plain_lost"])
    lines = [
        f"summary of {summary['runs']} {summary['fault']} runs"
        + (f" ({summary['timed_out']} timed out)" if summary["timed_out"] else ""),
        f"  write unavailability  {_fmt_stat(summary['write_unavailable_s'])}",
    ]
    orders = summary["sentinel_orders"]
    if len(orders) > 1:
        lines.extend(f"    {o['order'] + ' order':<20}{_fmt_stat(o['write_unavailable_s'])} ({o['runs']} runs)"
                     for o in orders)
        worst = summary["worst_sentinel_order"]
        if worst is not None:
            lines.append(f"    worst order         {worst['order']}: {_fmt_stat(worst['write_unavailable_s'])}")
    elif orders:
        lines[-1] += f" (writer's Sentinels in {orders[0]['order']} order)"
    lines.append(f"  redundancy restored   {_fmt_stat(summary['redundancy_restored_s'])}")
    if summary["boot_and_sync_s"]["median"] is not None:
        lines.append(f"  boot + initial sync   {_fmt_stat(summary['boot_and_sync_s'])}")
    if summary["split_brain_s"]["median"] is not None:
        lines.append(f"  split-brain window    {_fmt_stat(summary['split_brain_s'])} after the new master; "
                     f"{summary['old_master_writes_lost']} writes the old master accepted lost")
    lines.append(f"  writes                {summary['writes_acked']} acknowledged (WAIT 1), {lost} lost in total; "
                 f"{plain} accepted without a replica lost")
    return "\n".join(lines) + "\n"
