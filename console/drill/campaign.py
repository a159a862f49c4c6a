"""`redwarden drill CLUSTER --campaign N --seed S`: N faults drawn from the matrix, one after another, each
healed (or timed out) before the next, with the invariants checked over all of them.

Layer: the drill's application, beside `run`: it draws the faults and victims from a seeded random
generator (the same seed, the same campaign), runs each as a drill (`run_drill`), watches every node's
Redis from its own vantage point meanwhile (`RedisProbe`: who answers, who is master, how many replicas
acknowledge it), waits for the incidents each fault opened to resolve, and hands it all to the pure
judge (`console.drill.invariants`). The draw goes through the whole matrix in a shuffled order before it
repeats a fault, so any N >= len(matrix) covers every fault.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol, TypedDict

from console.client import ControllerError
from console.cluster import Clock, ClusterNotHealthy, NodeSnap, redundancy_problem, wait_healthy
from console.drill.controller_api import ClusterSource
from console.drill.invariants import (
    FaultRecord,
    HarmJson,
    InvariantJson,
    NodeSeen,
    ProbeRound,
    harmful_actions,
    judge,
)
from console.drill.model import CAMPAIGN_FAULTS, WHOLE_CLUSTER_FAULTS, DrillError, IncidentSnap
from console.drill.result import DrillResult, StepJson
from console.drill.run import DrillOptions, run_drill
from console.drill.targets import Endpoints, FaultTarget


class Probe(Protocol):
    def start(self) -> None: ...

    def stop(self) -> list[ProbeRound]: ...


class RedisProbe:
    """A thread asking every node's Redis `INFO replication` every `interval_s` (redis-py, 0.5 s timeouts)."""

    def __init__(self, addresses: Sequence[str], password: str | None, interval_s: float = 0.25,
                 username: str | None = None) -> None:
        """`username`: an ACL cluster's application user (`app`: INFO is among its commands); None: `default`."""
        import redis

        self._clients = {a: redis.Redis(host=a.rsplit(":", 1)[0], port=int(a.rsplit(":", 1)[1]), password=password,
                                        username=username, socket_timeout=0.5, socket_connect_timeout=0.2)
                         for a in addresses}
        self._interval_s = interval_s
        self._rounds: list[ProbeRound] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="campaign-probe", daemon=True)

    def _seen(self, address: str) -> NodeSeen:
        try:
            info = self._clients[address].info("replication")
        except Exception:  # down, cut off, refusing: not answering
            return NodeSeen(False, at=time.time())
        acking = 0
        for key, value in info.items():
            if key.startswith("slave") and isinstance(value, dict) and int(value.get("lag", 99)) <= 1:
                acking += 1
        return NodeSeen(True, str(info.get("role")), acking, at=time.time())

    def _run(self) -> None:
        while not self._stop.is_set():
            self._rounds.append(ProbeRound(time.time(), {a: self._seen(a) for a in self._clients}))
            self._stop.wait(self._interval_s)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> list[ProbeRound]:
        self._stop.set()
        self._thread.join(timeout=10)
        for client in self._clients.values():
            client.close()
        return list(self._rounds)


@dataclasses.dataclass(frozen=True, slots=True)
class CampaignOptions:
    faults: int
    seed: int
    drill: DrillOptions  # the template of each drill (its fault is replaced)
    matrix: tuple[str, ...] = CAMPAIGN_FAULTS
    incidents_timeout_s: float = 150.0  # waiting for a fault's incidents to resolve before the next
    max_lag_s: float = 10.0  # the cluster's min-replicas-max-lag: the bound on writes lost in a partition


class FaultJson(TypedDict):
    fault: str
    node: str
    steps: list[StepJson]
    write_unavailable_s: float | None
    writes_lost: int | None
    writes_plain_lost: int | None
    actions: list[dict[str, object]]
    incidents: list[dict[str, object]]
    timed_out: bool
    notes: list[str]


class CampaignJson(TypedDict):
    seed: int
    faults: list[FaultJson]
    invariants: list[InvariantJson]
    harmful_actions: int
    harmful: list[HarmJson]
    writes_acked: int
    writes_lost: int | None
    held: bool


def draw_faults(n: int, seed: int, matrix: Sequence[str]) -> list[str]:
    """`n` faults: the matrix in a shuffled order, again and again (each pass shuffled anew)."""
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        cycle = list(matrix)
        rng.shuffle(cycle)
        out.extend(cycle)
    return out[:n]


def _fault_json(record: FaultRecord) -> FaultJson:
    r = record.result
    return {
        "fault": r["fault"],
        "node": "all" if r["fault"] in WHOLE_CLUSTER_FAULTS else r["node"],
        "steps": r["steps"],
        "write_unavailable_s": r["write_unavailable_s"],
        "writes_lost": r["writes_lost"],
        "writes_plain_lost": r["writes_plain_lost"],
        "actions": [dict(a) for a in r["actions"]],
        "incidents": [{"code": i.code, "key": i.key, "severity": i.severity,
                       "opened_at_s": None if i.opened_at is None else round(i.opened_at - r["fault_at"], 3),
                       "resolved_at_s": None if i.resolved_at is None else round(i.resolved_at - r["fault_at"], 3)}
                      for i in record.incidents],
        "timed_out": r["timed_out"],
        "notes": r["notes"],
    }


def _settled_incidents(api: ClusterSource, since: float, timeout_s: float, clock: Clock) -> list[IncidentSnap]:
    """The incidents first seen since `since`, once none is open any more (or as they stand at the timeout)."""
    deadline = clock.monotonic() + timeout_s
    mine: list[IncidentSnap] = []
    while True:
        with contextlib.suppress(ControllerError):  # a failed poll: ask again
            mine = [i for i in api.incidents() if i.first_seen_at is not None and i.first_seen_at >= since]
        if all(i.resolved_at is not None or i.opened_at is None for i in mine) or clock.monotonic() >= deadline:
            return mine
        clock.sleep(1.0)


def run_campaign(api: ClusterSource, target: FaultTarget, endpoints: Endpoints, opts: CampaignOptions,
                 make_probe: Callable[[Sequence[str]], Probe] | None = None,
                 droplet_names: Callable[[], list[str]] | None = None, clock: Clock | None = None,
                 progress: Callable[[str], None] = lambda _: None,
                 each: Callable[[FaultJson], None] = lambda _: None) -> CampaignJson:
    clock = clock or Clock()
    rng = random.Random(opts.seed + 1)  # the victims' draw, apart from the faults' draw
    make_probe = make_probe or (lambda addresses: RedisProbe(addresses, endpoints.redis_password,
                                                             username=endpoints.redis_username))
    faults = draw_faults(opts.faults, opts.seed, opts.matrix)
    records: list[FaultRecord] = []
    error: str | None = None

    def choose(nodes: Sequence[NodeSnap]) -> NodeSnap:
        return rng.choice(list(nodes))

    for i, fault in enumerate(faults):
        progress(f"fault {i + 1}/{len(faults)}: {fault}")
        before = api.cluster()
        addresses = {n.name: n.address for n in before.nodes}
        probe = make_probe(sorted(set(addresses.values())))
        probe.start()
        rounds: list[ProbeRound] = []
        try:
            result: DrillResult = run_drill(api, target, endpoints, dataclasses.replace(opts.drill, fault=fault),
                                            clock=clock, progress=progress, choose=choose)
        except (DrillError, ControllerError, OSError) as e:  # the campaign stops; what it saw is still judged
            error = f"fault {i + 1} ({fault}) could not run: {e}"
            progress(error)
            break
        finally:
            rounds = probe.stop()
        incidents = _settled_incidents(api, result["fault_at"], opts.incidents_timeout_s, clock)
        record = FaultRecord(result, addresses, rounds, incidents, droplet_names() if droplet_names else None)
        records.append(record)
        each(_fault_json(record))
        if result["timed_out"]:
            progress(f"fault {i + 1} ({fault}) did not heal within the drill's timeout: the campaign stops")
            break
    expected = len(api.cluster().nodes) if records else 0
    healthy, problem = True, None
    try:
        wait_healthy(api.cluster, lambda snap: redundancy_problem(snap, max(2, len(snap.nodes))),
                     opts.drill.healthy_timeout_s, settle_s=opts.drill.settle_s, clock=clock)
    except ClusterNotHealthy as e:
        healthy, problem = False, f"not fully redundant at the end: {e.problem}"
    except DrillError as e:
        healthy, problem = False, str(e)
    invariants = judge(records, expected, healthy, problem, opts.max_lag_s)
    invariants.append({"name": "every_fault_ran", "held": len(records) == len(faults),
                       "detail": error or f"{len(records)} of {len(faults)} faults ran"})
    harms = [h for i, rec in enumerate(records) for h in harmful_actions(i, rec)]
    lost = [r.result["writes_lost"] for r in records]
    return {
        "seed": opts.seed,
        "faults": [_fault_json(r) for r in records],
        "invariants": invariants,
        "harmful_actions": len(harms),
        "harmful": harms,
        "writes_acked": sum(r.result["writes_acked"] for r in records),
        "writes_lost": None if any(n is None for n in lost) else sum(n for n in lost if n is not None),
        "held": all(inv["held"] for inv in invariants),
    }


def render_campaign(doc: CampaignJson) -> str:
    lines = [f"campaign of {len(doc['faults'])} faults, seed {doc['seed']}"]
    for i, f in enumerate(doc["faults"]):
        kinds = ", ".join(str(a["kind"]) for a in f["actions"]) or "no action"
        lost = "?" if f["writes_lost"] is None else str(f["writes_lost"])
        lines.append(f"  {i:>2} {f['fault']:<19} {f['node']:<10} unavailable {f['write_unavailable_s'] or 0.0:6.2f} s, "
                     f"lost {lost} (+{f['writes_plain_lost'] or 0} without a replica); {kinds}"
                     + ("; TIMED OUT" if f["timed_out"] else ""))
    lines.append("invariants:")
    for inv in doc["invariants"]:
        lines.append(f"  {'held  ' if inv['held'] else 'BROKEN'} {inv['name']}: {inv['detail']}")
    lost = "?" if doc["writes_lost"] is None else str(doc["writes_lost"])
    lines.append(f"harmful actions: {doc['harmful_actions']}; writes: {doc['writes_acked']} acknowledged, "
                 f"{lost} of them lost")
    return "\n".join(lines) + "\n"
