"""`redwarden drill`: a failover drill with a Sentinel-aware writer running through it, and its timeline.

Layer: application (a tool), over a pure core. The core (snapshots parsed at the wire boundary, the
`Observer` that turns what the controller shows into timeline steps, the write-unavailability and
lost-write arithmetic, result assembly, summary and rendering) takes every time as an argument and does
no I/O. Around it, thin adapters: `ControllerApi` (the controller's HTTP API), `SentinelKeyStore`
(redis-py's Sentinel client), `Writer` (a thread writing through it), and the fault targets
(`SandboxTarget`: signals and the local DigitalOcean; `CloudTarget`: DigitalOcean only).

One run: wait for a healthy cluster; start the writer (SET `drill:<run>:<n>` then `WAIT 1`, every
10 ms, on one connection); inject the fault; poll the controller until full redundancy has held for a
few seconds (or the timeout); stop the writer; read every acknowledged key back from the master.

The steps, and where each comes from (times are Unix seconds; the controller's own timestamps are used
where it keeps them, which assumes its clock and ours agree, as they do on the sandbox):

    fault                the moment just before the fault was injected (our clock)
    first_finding        the earliest of: a finding not present before the fault first shown by
                         GET /v1/clusters/{name} (our clock, at poll resolution), and the `first_seen_at`
                         of an incident first seen after the fault (controller clock)
    alert_sent           `opened_at` of the first incident opened after the fault: the moment the
                         controller confirmed it and put its alert in the durable outbox. The API does not
                         expose outbox deliveries, so this is "alert enqueued", not "alert delivered"
    new_master           the cluster's master (as the Sentinels' majority names it) differs from the old one
    writes_accepted      the first write acknowledged by WAIT 1 that ends the longest outage (writer's clock);
                         null when no write was ever refused after the fault
    replacement_created  a CreateReplacement action that succeeded (its `finished_at`), or a node name
                         that was not there before appearing, whichever is first
    replica_in_sync      the replacement (destroy-*) or the faulted node (kill-/stop-master) reports role
                         replica, link up, replicating the current master
    sentinels_agree      every Sentinel reachable (reachable == expected == nodes before the fault) and all
                         naming the current master
    redundancy_restored  health "healthy", the node count as before, one master, every other node a linked
                         replica of it, Sentinels agreeing, no reprovision or Sentinel reset in flight; the
                         start of the period over which this held until the drill ended (>= settle_s)

Steps that describe a recovery (the last three) only count once their condition was seen broken after
the fault, or once the master moved: a picture that has not yet changed is not a recovery.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, TypedDict

import requests

from console.client import ControllerClient, ControllerError, ControllerNotFound

if TYPE_CHECKING:
    from controller.adapters.cloud import Cloud

# -- the vocabulary --------------------------------------------------------------------------------

FAULT = "fault"
FIRST_FINDING = "first_finding"
ALERT_SENT = "alert_sent"
NEW_MASTER = "new_master"
WRITES_ACCEPTED = "writes_accepted"
REPLACEMENT_CREATED = "replacement_created"
REPLICA_IN_SYNC = "replica_in_sync"
SENTINELS_AGREE = "sentinels_agree"
REDUNDANCY_RESTORED = "redundancy_restored"
STEPS = (FAULT, FIRST_FINDING, ALERT_SENT, NEW_MASTER, WRITES_ACCEPTED, REPLACEMENT_CREATED, REPLICA_IN_SYNC,
         SENTINELS_AGREE, REDUNDANCY_RESTORED)

Fault = Literal["kill-master", "stop-master", "destroy-replica", "destroy-master"]
FAULTS: tuple[Fault, ...] = ("kill-master", "stop-master", "destroy-replica", "destroy-master")
MASTER_FAULTS = frozenset({"kill-master", "stop-master", "destroy-master"})
DESTROY_FAULTS = frozenset({"destroy-replica", "destroy-master"})
REMOTE_FAULTS = DESTROY_FAULTS  # what a drill can do to a real cluster: through DigitalOcean only

Outcome = Literal["acked", "plain", "failed"]  # WAIT saw >= 1 replica; SET ok but no replica; refused or error


class DrillError(RuntimeError):
    """The drill could not run or finish; the message says what to do."""


class DrillUsageError(DrillError):
    """Wrong or missing options (exit code 2)."""


# -- the wire boundary: the controller's JSON to small frozen snapshots -------------------------------


def _obj(data: object, what: str) -> Mapping[str, object]:
    if not isinstance(data, dict):
        raise DrillError(f"the controller sent something unexpected for {what}: not an object")
    return data


def _list(data: object) -> list[object]:
    return data if isinstance(data, list) else []


def _str(data: Mapping[str, object], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


def _float(data: Mapping[str, object], key: str) -> float | None:
    value = data.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int(data: Mapping[str, object], key: str) -> int | None:
    value = data.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class NodeSnap:
    name: str
    address: str
    role: str | None
    redis_up: bool
    sentinel_up: bool
    stale: bool
    link: str | None
    master_of_replica: str | None
    droplet_id: int | None


@dataclass(frozen=True, slots=True)
class ClusterSnap:
    """One GET /v1/clusters/{name}, reduced to what a drill looks at."""

    master: str | None
    health: str
    nodes: tuple[NodeSnap, ...]
    sentinels_expected: int
    sentinels_reachable: int
    sentinels_agree: bool
    votes: tuple[tuple[str, int], ...]
    findings: tuple[tuple[str, str], ...]  # (key, code)
    healing_in_flight: bool  # a reprovision or a Sentinel reset sequence is running
    held: tuple[tuple[str, str], ...] = ()  # (what, reason) the healer holds back this cycle
    heal_enabled: bool | None = None
    budget_left: int | None = None  # None: no budget reported, or acknowledged (unlimited today)

    def node(self, name: str) -> NodeSnap | None:
        return next((n for n in self.nodes if n.name == name), None)

    def node_at(self, address: str | None) -> NodeSnap | None:
        return next((n for n in self.nodes if n.address == address), None)


def parse_cluster(data: object) -> ClusterSnap:
    d = _obj(data, "the cluster")
    nodes = []
    for raw in _list(d.get("nodes")):
        n = _obj(raw, "a node")
        nodes.append(NodeSnap(
            name=_str(n, "name") or "?",
            address=_str(n, "address") or "?",
            role=_str(n, "role"),
            redis_up=n.get("redis_up") is True,
            sentinel_up=n.get("sentinel_up") is True,
            stale=n.get("stale") is True,
            link=_str(n, "link"),
            master_of_replica=_str(n, "master_of_replica"),
            droplet_id=_int(n, "droplet_id"),
        ))
    sentinels = _obj(d.get("sentinels", {}), "the sentinels")
    votes = _obj(sentinels.get("votes", {}), "the votes")
    findings = tuple((_str(f, "key") or "?", _str(f, "code") or "?")
                     for f in (_obj(x, "a finding") for x in _list(d.get("findings"))))
    heal = d.get("heal")
    in_flight, enabled, left = False, None, None
    held: tuple[tuple[str, str], ...] = ()
    if isinstance(heal, dict):
        in_flight = heal.get("reprovision") is not None or heal.get("sentinel_reset") is not None
        held = tuple((_str(h, "what") or "?", _str(h, "reason") or "?")
                     for h in (_obj(x, "a held action") for x in _list(heal.get("held"))))
        enabled = heal.get("enabled") is True and heal.get("dry_run") is not True
        budget = heal.get("budget")
        if isinstance(budget, dict) and budget.get("acked") is not True:
            per_day, used = _int(budget, "per_day"), _int(budget, "used_today")
            left = per_day - used if per_day is not None and used is not None else None
    return ClusterSnap(
        master=_str(d, "master"),
        health=_str(d, "health") or "unknown",
        nodes=tuple(sorted(nodes, key=lambda n: n.name)),
        sentinels_expected=_int(sentinels, "expected") or 0,
        sentinels_reachable=_int(sentinels, "reachable") or 0,
        sentinels_agree=sentinels.get("agree") is True,
        votes=tuple(sorted((k, v) for k, v in votes.items() if isinstance(v, int))),
        findings=findings,
        healing_in_flight=in_flight,
        held=held,
        heal_enabled=enabled,
        budget_left=left,
    )


@dataclass(frozen=True, slots=True)
class IncidentSnap:
    code: str
    severity: str
    first_seen_at: float | None
    opened_at: float | None


def parse_incidents(data: object) -> tuple[IncidentSnap, ...]:
    out = []
    for raw in _list(_obj(data, "the incidents").get("incidents")):
        i = _obj(raw, "an incident")
        out.append(IncidentSnap(_str(i, "code") or "?", _str(i, "severity") or "?", _float(i, "first_seen_at"),
                                _float(i, "opened_at")))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class ActionSnap:
    id: int
    kind: str
    description: str
    status: str
    detail: str | None
    started_at: float
    finished_at: float | None


def parse_actions(data: object) -> tuple[ActionSnap, ...]:
    out = []
    for raw in _list(_obj(data, "the actions").get("actions")):
        a = _obj(raw, "an action")
        started = _float(a, "started_at")
        if started is None:
            continue
        out.append(ActionSnap(_int(a, "id") or 0, _str(a, "kind") or "?", _str(a, "description") or "?",
                              _str(a, "status") or "?", _str(a, "detail"), started, _float(a, "finished_at")))
    return tuple(out)


# -- the pure core: conditions on a snapshot -------------------------------------------------------


def linked_replica(snap: ClusterSnap, name: str) -> bool:
    """`name` reports role replica with its link up, replicating the current master."""
    n = snap.node(name)
    return (n is not None and n.redis_up and not n.stale and n.role == "replica" and n.link == "up"
            and snap.master is not None and n.master_of_replica == snap.master)


def sentinels_settled(snap: ClusterSnap, expected_nodes: int) -> bool:
    """Every expected Sentinel reachable, and all of them naming the current master."""
    return (snap.master is not None and snap.sentinels_agree and snap.sentinels_reachable == expected_nodes
            and snap.sentinels_expected == expected_nodes and dict(snap.votes) == {snap.master: expected_nodes})


def fully_redundant(snap: ClusterSnap, expected_nodes: int) -> bool:
    """Healthy, as many nodes as expected, one master, every other node a linked replica of it, Sentinels
    settled, and the healer not in the middle of a reprovision or a Sentinel reset sequence."""
    if snap.health != "healthy" or snap.master is None or len(snap.nodes) != expected_nodes or snap.healing_in_flight:
        return False
    masters = [n for n in snap.nodes if n.role == "master"]
    if len(masters) != 1 or masters[0].address != snap.master:
        return False
    if not all(n.redis_up and n.sentinel_up and not n.stale for n in snap.nodes):
        return False
    replicas_ok = all(linked_replica(snap, n.name) for n in snap.nodes if n.name != masters[0].name)
    return replicas_ok and sentinels_settled(snap, expected_nodes)


def pick_victim(snap: ClusterSnap, fault: str) -> NodeSnap:
    """The master for *-master faults; the first replica by name for destroy-replica."""
    if fault in MASTER_FAULTS:
        node = snap.node_at(snap.master)
        if node is None:
            raise DrillError(f"no node has the master's address {snap.master}")
        return node
    replicas = [n for n in snap.nodes if n.role == "replica"]
    if not replicas:
        raise DrillError("the cluster has no replica to destroy")
    return replicas[0]


# -- the pure core: writes -------------------------------------------------------------------------


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


def count_lost(samples: Sequence[WriteSample], found: Mapping[int, int | None]) -> LostWrites:
    """Compare what was acknowledged with what the master holds (`found`: key number -> value read)."""
    acked = sum(1 for s in samples if s.outcome == "acked" and found.get(s.n) != s.n)
    plain = sum(1 for s in samples if s.outcome == "plain" and found.get(s.n) != s.n)
    return LostWrites(acked, plain)


# -- the pure core: observing the controller ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    at: float
    detail: str


@dataclass(frozen=True, slots=True)
class Observations:
    steps: Mapping[str, Step]
    findings_seen: tuple[tuple[str, float], ...]  # (code, first seen) for findings new after the fault
    actions: tuple[ActionSnap, ...]  # the controller's actions started after the fault
    held: tuple[tuple[str, str], ...]  # distinct (what, reason) held back after the fault


class Observer:
    """Turns what the controller shows after a fault into timeline steps. Pure: every time is passed in."""

    def __init__(self, fault: str, before: ClusterSnap, victim: str, fault_at: float, fault_detail: str,
                 settle_s: float = 3.0) -> None:
        self.fault = fault
        self.before = before
        self.victim = victim
        self.fault_at = fault_at
        self.settle_s = settle_s
        self.expected_nodes = len(before.nodes)
        self.old_master = before.master
        self._baseline = {key for key, _ in before.findings}
        self._names_before = {n.name for n in before.nodes}
        self.steps: dict[str, Step] = {FAULT: Step(fault_at, fault_detail)}
        self._findings: dict[str, float] = {}
        self._actions: dict[int, ActionSnap] = {}
        self._held: dict[tuple[str, str], None] = {}
        self._broken: set[str] = set()
        self._restored_since: float | None = None
        self.last: ClusterSnap | None = None

    def _earliest(self, step: str, at: float, detail: str) -> None:
        if step == FAULT:
            return
        current = self.steps.get(step)
        if current is None or at < current.at:
            self.steps[step] = Step(at, detail)

    def replacement(self, snap: ClusterSnap) -> str | None:
        new = sorted(n.name for n in snap.nodes if n.name not in self._names_before)
        return new[0] if new else None

    def on_cluster(self, snap: ClusterSnap, now: float) -> None:
        self.last = snap
        new_codes = [code for key, code in snap.findings if key not in self._baseline]
        for code in new_codes:
            self._findings.setdefault(code, now)
        if new_codes:
            self._earliest(FIRST_FINDING, now, new_codes[0])
        for h in snap.held:
            self._held.setdefault(h, None)
        moved = snap.master is not None and snap.master != self.old_master
        if moved and NEW_MASTER not in self.steps:
            node = snap.node_at(snap.master)
            self._earliest(NEW_MASTER, now, f"{snap.master}" + (f" ({node.name})" if node else ""))
        replacement = self.replacement(snap)
        if replacement is not None:
            self._earliest(REPLACEMENT_CREATED, now, f"{replacement} appeared")
        watched = replacement if self.fault in DESTROY_FAULTS else self.victim
        conditions = {
            REPLICA_IN_SYNC: watched is not None and linked_replica(snap, watched),
            SENTINELS_AGREE: sentinels_settled(snap, self.expected_nodes),
            REDUNDANCY_RESTORED: fully_redundant(snap, self.expected_nodes),
        }
        for step, holds in conditions.items():
            if not holds:
                self._broken.add(step)
        recovering = {step for step in conditions if step in self._broken or moved}
        if conditions[REPLICA_IN_SYNC] and REPLICA_IN_SYNC in recovering:
            self._earliest(REPLICA_IN_SYNC, now, f"{watched} replicates {snap.master} with its link up")
        if conditions[SENTINELS_AGREE] and SENTINELS_AGREE in recovering:
            self._earliest(SENTINELS_AGREE, now, f"{snap.sentinels_reachable}/{self.expected_nodes} Sentinels "
                                                  f"name {snap.master}")
        if conditions[REDUNDANCY_RESTORED] and REDUNDANCY_RESTORED in recovering:
            if self._restored_since is None:
                self._restored_since = now
        else:
            self._restored_since = None

    def on_incidents(self, incidents: Iterable[IncidentSnap]) -> None:
        for i in incidents:
            if i.first_seen_at is not None and i.first_seen_at >= self.fault_at:
                self._earliest(FIRST_FINDING, i.first_seen_at, i.code)
                self._findings[i.code] = min(self._findings.get(i.code, i.first_seen_at), i.first_seen_at)
            if i.opened_at is not None and i.opened_at >= self.fault_at:
                self._earliest(ALERT_SENT, i.opened_at, f"{i.code} ({i.severity}) incident opened")

    def on_actions(self, actions: Iterable[ActionSnap]) -> None:
        for a in actions:
            if a.started_at < self.fault_at:
                continue
            self._actions[a.id] = a
            if a.kind == "CreateReplacement" and a.status == "succeeded":
                self._earliest(REPLACEMENT_CREATED, a.finished_at or a.started_at, a.detail or a.description)

    @property
    def restored_since(self) -> float | None:
        return self._restored_since

    def settled(self, now: float) -> bool:
        """Full redundancy has held for settle_s: the drill can end."""
        return self._restored_since is not None and now - self._restored_since >= self.settle_s

    def finish(self) -> Observations:
        steps = dict(self.steps)
        if self._restored_since is not None:
            steps[REDUNDANCY_RESTORED] = Step(self._restored_since, f"{self.expected_nodes} nodes, 1 master, "
                                              f"{self.expected_nodes - 1} linked replicas, Sentinels agree")
        return Observations(
            steps=steps,
            findings_seen=tuple(sorted(self._findings.items(), key=lambda kv: kv[1])),
            actions=tuple(sorted(self._actions.values(), key=lambda a: a.id)),
            held=tuple(self._held),
        )


# -- the pure core: the result, its summary and its rendering ----------------------------------------


class StepJson(TypedDict):
    name: str
    at_s: float | None
    detail: str | None


class ActionJson(TypedDict):
    at_s: float
    kind: str
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
    writes_failed: int
    write_errors: dict[str, int]
    redundancy_restored_s: float | None
    findings_seen: list[dict[str, float | str]]
    actions: list[ActionJson]
    held: list[str]
    timed_out: bool
    notes: list[str]


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


def assemble_result(
    info: FaultInfo,
    obs: Observations,
    samples: Sequence[WriteSample],
    end_at: float,
    lost: LostWrites | None,
    timed_out: bool = False,
    write_errors: Mapping[str, int] | None = None,
    notes: Sequence[str] = (),
) -> DrillResult:
    """The drill's result: every step in order, null when it did not happen, times relative to the fault."""
    steps = dict(obs.steps)
    unavailable_s, accepted_at = write_unavailability(samples, info.at, end_at)
    if accepted_at is not None:
        steps[WRITES_ACCEPTED] = Step(accepted_at, f"after {unavailable_s:.2f} s without an acknowledged write")
    restored = steps.get(REDUNDANCY_RESTORED)
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
        "writes_failed": sum(1 for s in samples if s.outcome == "failed"),
        "write_errors": dict(sorted((write_errors or {}).items(), key=lambda kv: -kv[1])),
        "redundancy_restored_s": _rel(restored.at, info.at) if restored else None,
        "findings_seen": [{"code": code, "at_s": round(at - info.at, 3)} for code, at in obs.findings_seen],
        "actions": [{"at_s": round(a.started_at - info.at, 3), "kind": a.kind, "description": a.description,
                     "status": a.status} for a in obs.actions],
        "held": [f"{what}: {reason}" for what, reason in obs.held],
        "timed_out": timed_out,
        "notes": list(notes),
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


class Summary(TypedDict):
    fault: str
    runs: int
    timed_out: int
    write_unavailable_s: Stat
    redundancy_restored_s: Stat
    boot_and_sync_s: Stat
    writes_acked: int
    writes_lost: int | None
    writes_plain_lost: int | None


def summarize(results: Sequence[DrillResult]) -> Summary:
    """Median and worst over runs (a run where a step did not happen shows as null in `values`)."""
    lost = [r["writes_lost"] for r in results]
    plain = [r["writes_plain_lost"] for r in results]
    return {
        "fault": results[0]["fault"] if results else "",
        "runs": len(results),
        "timed_out": sum(1 for r in results if r["timed_out"]),
        "write_unavailable_s": _stat([r["write_unavailable_s"] for r in results]),
        "redundancy_restored_s": _stat([r["redundancy_restored_s"] for r in results]),
        "boot_and_sync_s": _stat([boot_and_sync_s(r) for r in results]),
        "writes_acked": sum(r["writes_acked"] for r in results),
        "writes_lost": None if any(v is None for v in lost) else sum(v for v in lost if v is not None),
        "writes_plain_lost": None if any(v is None for v in plain) else sum(v for v in plain if v is not None),
    }


def render_timeline(result: DrillResult) -> str:
    """The table a person reads: steps in time order, those that did not happen last."""
    master = f" (master {result['node']} {result['old_master']})" if result["fault"] in MASTER_FAULTS else (
        f" (replica {result['node']}, master {result['old_master']})")
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
        f"  redundancy restored   {_fmt_stat(summary['redundancy_restored_s'])}",
    ]
    if summary["boot_and_sync_s"]["median"] is not None:
        lines.append(f"  boot + initial sync   {_fmt_stat(summary['boot_and_sync_s'])}")
    lines.append(f"  writes                {summary['writes_acked']} acknowledged (WAIT 1), {lost} lost in total; "
                 f"{plain} accepted without a replica lost")
    return "\n".join(lines) + "\n"


# -- adapters: the controller's API ----------------------------------------------------------------


class ClusterSource(Protocol):
    """What a drill reads from the controller, for one cluster."""

    def cluster(self) -> ClusterSnap: ...

    def incidents(self) -> tuple[IncidentSnap, ...]: ...

    def actions(self) -> tuple[ActionSnap, ...]: ...


class ControllerApi:
    """GET-only view of the controller's API for one cluster (a `ClusterSource`), over `ControllerClient`."""

    def __init__(self, base_url: str, cluster: str, timeout_s: float = 2.0,
                 session: requests.Session | None = None) -> None:
        self.client = ControllerClient(base_url, timeout_s=timeout_s, session=session)
        self.base_url = self.client.url
        self.cluster_name = cluster

    def _get(self, path: str, params: Mapping[str, str | int] | None = None) -> object:
        try:
            data: object = self.client.get(path, params)
        except ControllerNotFound as e:
            raise DrillUsageError(str(e)) from None
        except ControllerError as e:
            raise DrillError(str(e)) from None
        return data

    def cluster(self) -> ClusterSnap:
        return parse_cluster(self._get(f"/v1/clusters/{self.cluster_name}"))

    def incidents(self) -> tuple[IncidentSnap, ...]:
        return parse_incidents(self._get("/v1/incidents", {"cluster": self.cluster_name, "limit": 50}))

    def actions(self) -> tuple[ActionSnap, ...]:
        return parse_actions(self._get("/v1/actions", {"cluster": self.cluster_name, "limit": 50}))


# -- adapters: the writer --------------------------------------------------------------------------


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
                 timeout_s: float = 0.5, wait_timeout_ms: int = 200, ttl_s: int = 3600) -> None:
        from redis.backoff import NoBackoff
        from redis.retry import Retry
        from redis.sentinel import Sentinel

        # sentinel_kwargs as redis-py derives them when None (the socket_* settings), plus no retries: its
        # default (10 retries with backoff) would make a destroyed droplet's Sentinel cost seconds per lookup
        sentinel_kwargs = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s,
                           "retry": Retry(NoBackoff(), 0)}
        self._sentinel = Sentinel(list(sentinels), socket_timeout=timeout_s,  # type: ignore[no-untyped-call]
                                  sentinel_kwargs=sentinel_kwargs)
        self._client = self._sentinel.master_for(  # type: ignore[no-untyped-call]
            master_name, password=password, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            retry_on_timeout=False, retry=Retry(NoBackoff(), 0))
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


def _error_kind(e: BaseException) -> str:
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
                self.errors[_error_kind(e)] += 1
            with self._lock:
                self._samples.append(WriteSample(self._clock(), n, outcome))
            next_at += self.interval_s
            delay = next_at - self._monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_at = self._monotonic()  # behind (a timeout): no burst to catch up


# -- adapters: fault targets -----------------------------------------------------------------------


class FaultTarget(Protocol):
    label: str

    def inject(self, fault: str, node: NodeSnap) -> str:
        """Do it; a short sentence saying what was done."""
        ...

    def undo(self, fault: str, node: NodeSnap) -> str | None:
        """Undo what can be undone (a frozen redis-server is thawed); what was done, or None."""
        ...


def destroy_node(cloud: Cloud, node: NodeSnap, droplet_id: int | None) -> str:
    if droplet_id is None:
        raise DrillError(f"no droplet id is known for {node.name}: cannot destroy it")
    from controller.adapters.cloud import ProviderError

    try:
        gone = cloud.destroy_droplet(droplet_id)
    except ProviderError as e:
        raise DrillError(f"destroying droplet {droplet_id} ({node.name}) failed: {e}") from None
    return f"droplet {droplet_id} ({node.name}) destroyed through the DigitalOcean API" + ("" if gone else
                                                                                          " (it was already gone)")


class CloudTarget:
    """Faults on a real cluster: only destroying droplets, through DigitalOcean."""

    def __init__(self, cloud: Cloud, label: str) -> None:
        self.cloud = cloud
        self.label = label

    def inject(self, fault: str, node: NodeSnap) -> str:
        if fault not in REMOTE_FAULTS:
            raise DrillUsageError(f"--fault {fault} needs --sandbox: redwarden cannot signal a remote redis-server")
        return destroy_node(self.cloud, node, node.droplet_id)

    def undo(self, fault: str, node: NodeSnap) -> str | None:
        return None


# -- the drill -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DrillOptions:
    fault: str
    runs: int = 1
    timeout_s: float = 300.0  # per run, from the fault
    healthy_timeout_s: float = 300.0  # waiting for a healthy cluster before a run
    between_s: float = 0.0  # at least this long between two faults
    poll_interval_s: float = 0.15
    history_poll_s: float = 0.5
    settle_s: float = 3.0
    write_interval_s: float = 0.01
    thaw_after_s: float = 30.0  # stop-master: thaw even if no new master was seen by then
    warmup_acked: int = 20  # writes acknowledged before the fault


@dataclass(frozen=True, slots=True)
class Endpoints:
    controller_url: str
    cluster: str
    master_name: str
    redis_password: str | None
    sentinels: Callable[[], tuple[tuple[str, int], ...]]  # asked before every run: droplets come and go


TargetResolver = Callable[[argparse.Namespace], "tuple[FaultTarget, Endpoints]"]


@dataclass(frozen=True, slots=True)
class Clock:
    """The drill's clocks, injectable: `now` for timestamps (Unix seconds, comparable with the controller's),
    `monotonic` for deadlines."""

    now: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


def wait_healthy(api: ClusterSource, timeout_s: float, settle_s: float, clock: Clock) -> ClusterSnap:
    """A cluster fully redundant for settle_s, with nothing being healed."""
    deadline = clock.monotonic() + timeout_s
    since: float | None = None
    last: ClusterSnap | None = None
    error = ""
    while clock.monotonic() < deadline:
        try:
            last = api.cluster()
        except DrillUsageError:
            raise
        except DrillError as e:
            error, last = str(e), None
        if last is not None and fully_redundant(last, len(last.nodes)) and len(last.nodes) >= 2:
            since = since if since is not None else clock.monotonic()
            if clock.monotonic() - since >= settle_s:
                return last
        else:
            since = None
        clock.sleep(0.2)
    what = (f"health {last.health}, master {last.master}, {len(last.nodes)} nodes" if last else error or "no answer")
    raise DrillError(f"the cluster was not fully redundant within {timeout_s:.0f} s ({what}); "
                     "a drill starts from a healthy cluster")


def _quiet(_: str) -> None:
    pass


def run_drill(api: ClusterSource, target: FaultTarget, endpoints: Endpoints, opts: DrillOptions,
              connect: Callable[[Endpoints], KeyStore] | None = None, clock: Clock | None = None,
              progress: Callable[[str], None] = _quiet) -> DrillResult:
    """One drill: from a healthy cluster, through the fault, back to full redundancy (or the timeout)."""
    clock = clock or Clock()
    connect = connect or (lambda e: SentinelKeyStore(e.sentinels(), e.master_name, e.redis_password))
    progress(f"waiting for {endpoints.cluster} to be fully redundant")
    before = wait_healthy(api, opts.healthy_timeout_s, opts.settle_s, clock)
    notes = _preflight(before, endpoints.cluster)
    victim = pick_victim(before, opts.fault)
    store = connect(endpoints)
    writer = Writer(store, f"drill:{uuid.uuid4().hex[:8]}:", opts.write_interval_s, clock.now, clock.monotonic)
    writer.start()
    try:
        _warm_up(writer, opts.warmup_acked, clock)
        progress(f"writer running ({writer.acked()} writes acknowledged); {opts.fault} on {victim.name}")
        fault_at = clock.now()
        detail = target.inject(opts.fault, victim)
        obs = Observer(opts.fault, before, victim.name, fault_at, detail, opts.settle_s)
        timed_out = _watch(api, obs, writer, target, victim, opts, clock, progress, notes)
    finally:
        writer.stop()
        store.close()
    end_at = clock.now()
    with contextlib.suppress(DrillError):  # the last actions and incidents, with their final timestamps
        obs.on_incidents(api.incidents())
        obs.on_actions(api.actions())
    samples = writer.samples()
    lost = _read_back(connect(endpoints), writer, samples, clock, notes)
    observations = obs.finish()
    if opts.fault in MASTER_FAULTS and not any(a.kind == "Failover" for a in observations.actions):
        # why the controller left it to Sentinel's own timer (after its own failover, the same hold is normal)
        notes += [f"no fast failover: {reason}" for what, reason in observations.held if what == "fast failover"]
    info = FaultInfo(opts.fault, target.label, victim.name, victim.address, before.master, fault_at, detail)
    return assemble_result(info, observations, samples, end_at, lost, timed_out, writer.errors, notes)


def _preflight(before: ClusterSnap, cluster: str) -> list[str]:
    """Refuse a drill the controller cannot heal; notes for one it may heal only partly."""
    if before.budget_left is not None and before.budget_left <= 0:
        raise DrillError(f"the controller's daily action budget for {cluster} is used up: it would only alert; "
                         f"`redwarden ack {cluster}` first")
    notes = []
    if before.heal_enabled is False:
        notes.append("healing is off or dry-run on this controller: expect the drill to time out")
    if before.budget_left is not None and before.budget_left < 10:
        notes.append(f"only {before.budget_left} healing actions left in the controller's daily budget")
    return notes


def _warm_up(writer: Writer, acked: int, clock: Clock, timeout_s: float = 30.0) -> None:
    deadline = clock.monotonic() + timeout_s
    while writer.acked() < acked:
        if clock.monotonic() > deadline:
            raise DrillError(f"no write was acknowledged by WAIT 1 within {timeout_s:.0f} s before the fault "
                             f"(errors: {dict(writer.errors) or 'none'}; {writer.acked()} acknowledged)")
        clock.sleep(0.05)


def _watch(api: ClusterSource, obs: Observer, writer: Writer, target: FaultTarget, victim: NodeSnap,
           opts: DrillOptions, clock: Clock, progress: Callable[[str], None], notes: list[str]) -> bool:
    """Poll the controller until full redundancy has settled and writes flow; True on a timeout. A frozen
    master is thawed once a new one is seen (or after thaw_after_s), and in any case before returning."""
    deadline = clock.monotonic() + opts.timeout_s
    next_history = 0.0
    reported: set[str] = {FAULT}
    frozen = opts.fault == "stop-master"
    try:
        while True:
            try:
                obs.on_cluster(api.cluster(), clock.now())
                if clock.monotonic() >= next_history:
                    obs.on_incidents(api.incidents())
                    obs.on_actions(api.actions())
                    next_history = clock.monotonic() + opts.history_poll_s
            except DrillUsageError:
                raise
            except DrillError as e:  # a poll that failed is a gap in the picture, not the end of the drill
                if f"poll failed: {e}" not in notes:
                    notes.append(f"poll failed: {e}")
            for name, step in obs.steps.items():
                if name not in reported:
                    reported.add(name)
                    progress(f"+{step.at - obs.fault_at:.2f}s {name}: {step.detail}")
            now = clock.now()
            if frozen and (NEW_MASTER in obs.steps or now - obs.fault_at >= opts.thaw_after_s):
                frozen = False
                undone = target.undo(opts.fault, victim)
                if undone:
                    notes.append(f"+{clock.now() - obs.fault_at:.2f}s {undone}")
            restored = obs.restored_since
            if obs.settled(now) and (writer.last_outcome() == "acked" or now - (restored or now) > opts.settle_s + 10):
                return False
            if clock.monotonic() >= deadline:
                return True
            clock.sleep(opts.poll_interval_s)
    finally:
        if frozen:  # never leave a frozen redis-server behind
            target.undo(opts.fault, victim)


def _read_back(reader: KeyStore, writer: Writer, samples: Sequence[WriteSample], clock: Clock,
               notes: list[str], attempts: int = 20) -> LostWrites | None:
    """Read every accepted key back from the master (retrying while it settles), then delete the drill's keys."""
    accepted = [s for s in samples if s.outcome != "failed"]
    lost: LostWrites | None = None
    try:
        for attempt in range(attempts):
            try:
                values = reader.read([writer.key(s.n) for s in accepted])
                lost = count_lost(samples, dict(zip((s.n for s in accepted), values, strict=True)))
                break
            except Exception as e:  # whatever the client raises: retry, then report the count as unknown
                if attempt == attempts - 1:
                    notes.append(f"could not read the written keys back: {_error_kind(e)}")
                else:
                    clock.sleep(0.5)
        try:
            reader.delete([writer.key(s.n) for s in samples])
        except Exception as e:  # they expire within the hour anyway
            notes.append(f"could not delete the drill's keys ({_error_kind(e)}); they expire within an hour")
    finally:
        reader.close()
    return lost


def run_drills(api: ClusterSource, target: FaultTarget, endpoints: Endpoints, opts: DrillOptions,
               clock: Clock | None = None, progress: Callable[[str], None] = _quiet,
               each: Callable[[DrillResult], None] = lambda _: None) -> list[DrillResult]:
    """`opts.runs` drills, each from a healthy cluster, at least `between_s` apart; stops after a timeout
    (the cluster did not recover, so the next run could not start from a healthy one)."""
    clock = clock or Clock()
    results: list[DrillResult] = []
    for i in range(opts.runs):
        if i and opts.between_s > 0:
            wait_s = results[-1]["fault_at"] + opts.between_s - clock.now()
            if wait_s > 0:
                progress(f"waiting {wait_s:.0f} s before the next fault (--between {opts.between_s:.0f})")
                clock.sleep(wait_s)
        result = run_drill(api, target, endpoints, opts, clock=clock, progress=progress)
        results.append(result)
        each(result)
        if result["timed_out"]:
            break
    return results


# -- the command -----------------------------------------------------------------------------------


def _parse_sentinel(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise DrillUsageError(f"--sentinel wants HOST:PORT, not {text!r}")
    return host, int(port)


def _real_cluster(args: argparse.Namespace) -> tuple[FaultTarget, Endpoints]:
    from protocol.settings import read_secret

    if not args.i_know_this_is_production:
        raise DrillUsageError("a drill without --sandbox runs on a real cluster: it destroys a droplet. Give "
                              "--sandbox DIR, or --i-know-this-is-production with --controller, --sentinel, "
                              "--redis-password-file, --do-token-file and --do-api-url")
    if args.fault not in REMOTE_FAULTS:
        raise DrillUsageError(f"--fault {args.fault} needs --sandbox: redwarden cannot kill or freeze a remote "
                              "redis-server; on a real cluster use destroy-replica or destroy-master")
    missing = [flag for flag, value in (("--controller", args.controller), ("--sentinel", args.sentinel),
                                        ("--redis-password-file", args.redis_password_file),
                                        ("--do-token-file", args.do_token_file), ("--do-api-url", args.do_api_url))
               if not value]
    if missing:
        raise DrillUsageError(f"a drill on a real cluster needs {', '.join(missing)}")
    from controller.adapters.cloud import PydoCloud

    token = read_secret(args.do_token_file, "--do-token-file") or ""
    cloud = PydoCloud(token, args.do_api_url, ca_path=args.do_ca_file)
    sentinels = tuple(_parse_sentinel(s) for s in args.sentinel)
    endpoints = Endpoints(args.controller, args.cluster, args.master_name,
                          read_secret(args.redis_password_file, "--redis-password-file"), lambda: sentinels)
    return CloudTarget(cloud, f"cluster {args.cluster}"), endpoints


def main(args: argparse.Namespace, sandbox_target: TargetResolver | None = None) -> int:
    """`redwarden drill CLUSTER --fault F ...`: 0 when every run ended healthy, 1 on a timeout or error,
    2 on a usage error."""
    from protocol.logs import configure_logging

    configure_logging("console", "warning")  # adapters' log lines go to stderr; stdout stays the result
    try:
        if args.runs < 1:
            raise DrillUsageError("--runs must be >= 1")
        if args.sandbox:
            if sandbox_target is None:
                raise DrillUsageError("--sandbox needs the sandbox, which is not installed here "
                                      "(pip install 'redwarden[sandbox]')")
            target, endpoints = sandbox_target(args)
        else:
            target, endpoints = _real_cluster(args)
        opts = DrillOptions(fault=args.fault, runs=args.runs, timeout_s=args.timeout, between_s=args.between)
        api = ControllerApi(endpoints.controller_url, endpoints.cluster)

        def emit(line: str) -> None:
            print(f"  {line}", file=sys.stderr, flush=True)

        def each(result: DrillResult) -> None:
            if not args.json:
                print(render_timeline(result), flush=True)

        results = run_drills(api, target, endpoints, opts, progress=emit, each=each)
    except DrillUsageError as e:
        print(f"redwarden: drill: {e}", file=sys.stderr)
        return 2
    except DrillError as e:
        print(f"redwarden: drill: {e}", file=sys.stderr)
        return 1
    if args.json:
        doc: object = results[0] if opts.runs == 1 else {"runs": results, "summary": summarize(results)}
        print(json.dumps(doc, indent=2))
    elif opts.runs > 1:
        print(render_summary(summarize(results)), end="")
    return 1 if any(r["timed_out"] for r in results) else 0
