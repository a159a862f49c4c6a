"""What a fault campaign must never do, judged from what it recorded: the invariants and the harmful actions.

Layer: the drill's pure core. A `FaultRecord` is one fault's drill result plus what the campaign saw
around it from its own vantage point (the probe's rounds: each node's Redis answering or not, its role,
how many replicas acknowledge it), the incidents opened after the fault and the cloud's droplet names.
`judge` turns the records into `InvariantJson` rows; `harmful_actions` names every action that hit a node
whose Redis was answering (and, for a failover, a master that was).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict

from console.drill.model import FAILOVER_FAULTS, NETWORK_FAULTS, IncidentSnap
from console.drill.result import DrillResult, step_at

DISRUPTIVE_KINDS = frozenset({"PowerCycle", "StartReprovision", "DestroyDroplet", "RebootDroplet"})
# a failover ordered by the controller is wrong unless the master is in trouble: disk-full is left out (a
# master that cannot persist may fairly be failed away from)
NO_FAILOVER_FAULTS = frozenset({"kill-agent", "partition-replica", "isolate-controller", "blind-controller",
                                "restart-sentinels", "cloud-timeouts", "destroy-replica"})
ANSWERED_WITHIN_S = 1.0  # a node's Redis counts as healthy when its latest answer to the probe is this recent


@dataclass(frozen=True, slots=True)
class NodeSeen:
    up: bool
    role: str | None = None
    acking_replicas: int = 0  # replicas whose last acknowledgement is at most a second old
    at: float | None = None  # when its answer (or its failure) came; None: the round's start


@dataclass(frozen=True, slots=True)
class ProbeRound:
    at: float
    nodes: Mapping[str, NodeSeen]  # by Redis address "ip:port"


@dataclass(frozen=True, slots=True)
class FaultRecord:
    result: DrillResult
    addresses: Mapping[str, str]  # node name -> Redis address, before the fault
    rounds: Sequence[ProbeRound]
    incidents: Sequence[IncidentSnap]  # opened after the fault, as they stood when the campaign moved on
    droplet_names: Sequence[str] | None  # the cloud's droplets after the fault (None: not known)


class InvariantJson(TypedDict):
    name: str
    held: bool
    detail: str


class HarmJson(TypedDict):
    fault_index: int
    fault: str
    kind: str
    node: str | None
    at_s: float
    why: str


def _answered_before(rounds: Sequence[ProbeRound], address: str | None, at: float, since: float) -> bool:
    """Whether the Redis at `address` was answering when the action started: the probe's latest word on it
    before `at` is an answer that came at most ANSWERED_WITHIN_S before, and after `since` (the fault: a
    destroyed node answers until its processes are gone, and its address may be a replacement's soon
    after). No recent word is no evidence of health."""
    if address is None:
        return False
    seen = [(n.at if n.at is not None else r.at, n) for r in rounds
            if (n := r.nodes.get(address)) is not None and (n.at if n.at is not None else r.at) <= at]
    if not seen:
        return False
    when, latest = max(seen, key=lambda pair: pair[0])
    return latest.up and when >= since and at - when <= ANSWERED_WITHIN_S


def harmful_actions(index: int, record: FaultRecord) -> list[HarmJson]:
    """Disruptive actions on a node whose Redis answered the probe just before; failovers the controller
    ordered while the master answered, in a fault that gives no reason to fail over."""
    out: list[HarmJson] = []
    r = record.result
    old_master = r["old_master"]
    for a in r["actions"]:
        at = r["fault_at"] + a["at_s"]
        address = record.addresses.get(a["node"] or "")
        if a["kind"] in DISRUPTIVE_KINDS and _answered_before(record.rounds, address, at, r["fault_at"]):
            out.append({"fault_index": index, "fault": r["fault"], "kind": a["kind"], "node": a["node"],
                        "at_s": a["at_s"], "why": f"its Redis ({address}) answered the probe just before"})
        if a["kind"] == "Failover" and r["fault"] in NO_FAILOVER_FAULTS and \
                _answered_before(record.rounds, old_master, at, r["fault_at"]):
            out.append({"fault_index": index, "fault": r["fault"], "kind": a["kind"], "node": a["node"],
                        "at_s": a["at_s"], "why": f"the master {old_master} answered and {r['fault']} is no "
                                                  "reason to fail over"})
    return out


def _most_acking_masters(rounds: Sequence[ProbeRound]) -> tuple[int, float | None]:
    best, when = 0, None
    for rnd in rounds:
        n = sum(1 for seen in rnd.nodes.values() if seen.up and seen.role == "master" and seen.acking_replicas > 0)
        if n > best:
            best, when = n, rnd.at
    return best, when


def judge(records: Sequence[FaultRecord], expected_nodes: int, healthy_at_end: bool, end_problem: str | None,
          max_lag_s: float) -> list[InvariantJson]:
    """The campaign's invariants, each held or not, with the evidence."""
    out: list[InvariantJson] = []

    def add(name: str, held: bool, detail: str) -> None:
        out.append({"name": name, "held": held, "detail": detail})

    worst, where = 0, ""
    for i, rec in enumerate(records):
        n, at = _most_acking_masters(rec.rounds)
        if n > worst:
            worst, where = n, f"fault {i} ({rec.result['fault']}) at +{(at or 0) - rec.result['fault_at']:.2f} s"
    add("one_master_accepting_acknowledged_writes", worst <= 1,
        f"at most {worst} master(s) with an acknowledging replica at once" + (f", {where}" if where else "")
        + f", over {sum(len(r.rounds) for r in records)} probe rounds")

    lost = [(i, r.result["fault"], r.result["writes_lost"]) for i, r in enumerate(records)]
    unknown = [f"{i} ({f})" for i, f, n in lost if n is None]
    bad = [f"{i} ({f}): {n}" for i, f, n in lost if n]
    add("no_acknowledged_write_lost", not bad and not unknown,
        "; ".join(filter(None, [f"lost: {', '.join(bad)}" if bad else "",
                                f"not read back: {', '.join(unknown)}" if unknown else ""]))
        or f"0 of {sum(r.result['writes_acked'] for r in records)} acknowledged writes lost")

    bounds = []
    held = True
    for i, rec in enumerate(records):
        r = rec.result
        if r["fault"] not in NETWORK_FAULTS:
            continue
        last = r["writes_plain_lost_last_s"]
        ok = last is None or last <= max_lag_s + 2.0
        held = held and ok
        bounds.append(f"{i} ({r['fault']}): {r['writes_plain_lost'] or 0} lost"
                      + (f", the last accepted at +{last:.2f} s" if last is not None else ""))
    add("partition_loss_bounded_by_min_replicas_max_lag", held,
        (f"bound {max_lag_s:g} s (+2 s): " + "; ".join(bounds)) if bounds else "no partition in this campaign")

    harms = [h for i, rec in enumerate(records) for h in harmful_actions(i, rec)]
    add("no_disruptive_action_on_a_healthy_node", not harms,
        "; ".join(f"{h['fault_index']} ({h['fault']}): {h['kind']} on {h['node']}: {h['why']}" for h in harms)
        or f"{sum(len(r.result['actions']) for r in records)} actions, none harmful")

    moved = [f"{i} ({r.result['fault']})" for i, r in enumerate(records)
             if step_at(r.result, "new_master") is not None and r.result["fault"] not in FAILOVER_FAULTS
             and r.result["fault"] != "disk-full"]
    add("master_changed_only_for_master_faults", not moved,
        f"a new master after {', '.join(moved)}" if moved else "the master moved only after master faults")

    dups = []
    for i, rec in enumerate(records):
        if rec.droplet_names is None:
            continue
        twice = sorted(name for name, n in Counter(rec.droplet_names).items() if n > 1)
        if twice or len(rec.droplet_names) > expected_nodes:
            dups.append(f"{i} ({rec.result['fault']}): {len(rec.droplet_names)} droplets"
                        + (f", {', '.join(twice)} twice" if twice else ""))
    add("no_duplicate_droplet", not dups, "; ".join(dups) or f"never more than {expected_nodes} droplets")

    incident_problems = []
    for i, rec in enumerate(records):
        # info incidents page nobody, and a standing one (the one-password posture of a cluster from before
        # ACL users) opens anew after any fault that hid it: only warnings and criticals are judged
        judged = [inc for inc in rec.incidents if inc.opened_at is not None and inc.severity != "info"]
        opened = Counter(inc.key or inc.code for inc in judged)
        again = sorted(k for k, n in opened.items() if n > 1)
        open_still = sorted({inc.key or inc.code for inc in judged if inc.resolved_at is None})
        if again:
            incident_problems.append(f"{i} ({rec.result['fault']}): opened more than once: {', '.join(again)}")
        if open_still:
            incident_problems.append(f"{i} ({rec.result['fault']}): not resolved: {', '.join(open_still)}")
    add("each_incident_opened_once_and_resolved", not incident_problems,
        "; ".join(incident_problems)
        or f"{sum(1 for r in records for inc in r.incidents if inc.opened_at is not None and inc.severity != 'info')} "
           "warning and critical incidents, each opened once and resolved")

    timed_out = [f"{i} ({r.result['fault']})" for i, r in enumerate(records) if r.result["timed_out"]]
    add("every_fault_healed", not timed_out,
        f"timed out: {', '.join(timed_out)}" if timed_out else f"all {len(records)} faults healed")
    add("healthy_at_end", healthy_at_end, end_problem or "fully redundant at the end")
    return out
