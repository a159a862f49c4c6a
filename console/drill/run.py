"""One drill, and a series of them: the writer, the fault, the controller and the read-back wired together.

Layer: the drill's application: it holds the loops and the clock (injected, `console.cluster.Clock`),
hands what it sees to the pure core (`Observer`, `assemble_result`) and acts through the adapters
(`ClusterSource`, `KeyStore`/`Writer`, `FaultTarget`). Waiting for a healthy cluster is the console's one
wait (`console.cluster.wait_healthy`) over the one predicate (`redundancy_problem`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from console.client import ControllerError, ControllerNotFound
from console.cluster import Clock, ClusterNotHealthy, ClusterSnap, NodeSnap, redundancy_problem, wait_healthy
from console.drill.controller_api import ClusterSource
from console.drill.model import (
    FAILOVER_FAULTS,
    FAULT,
    NEW_MASTER,
    TIMED_FAULTS,
    DrillError,
    pick_victim,
    undo_due,
)
from console.drill.observer import Observer
from console.drill.orders import (
    SentinelOrder,
    controller_order,
    describe_order,
    leader_rank,
    order_sentinels,
    planned_orders,
)
from console.drill.result import DrillResult, FaultInfo, assemble_result
from console.drill.targets import Endpoints, FaultTarget
from console.drill.writer import KeyStore, SentinelKeyStore, Writer, error_kind
from console.drill.writes import LostWrites, WriteSample, count_lost


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
    hold_s: float = 12.0  # how long a timed fault (a cut, a killed agent, a full disk, a slow cloud) lasts
    warmup_acked: int = 20  # writes acknowledged before the fault
    # the order of the writer's Sentinel list (console.drill.orders): one order for every run, or "all":
    # `runs` rounds of every order
    sentinel_order: str = "controller"

    def planned_orders(self) -> list[SentinelOrder]:
        return planned_orders(self.sentinel_order, self.runs)


def _quiet(_: str) -> None:
    pass


def wait_fully_redundant(api: ClusterSource, timeout_s: float, settle_s: float, clock: Clock,
                         progress: Callable[[str], None] = _quiet) -> ClusterSnap:
    """The cluster fully redundant for `settle_s`, with nothing being healed, in whatever size it is listed
    (at least a master and a replica): where a drill starts."""
    try:
        return wait_healthy(api.cluster, lambda snap: redundancy_problem(snap, max(2, len(snap.nodes))), timeout_s,
                            settle_s=settle_s, clock=clock, progress=progress)
    except ClusterNotHealthy as e:
        last = e.last
        what = (f"health {last.health}, master {last.master}, {len(last.nodes)} nodes: {e.problem}" if last
                else e.problem)
        raise DrillError(f"the cluster was not fully redundant within {timeout_s:.0f} s ({what}); "
                         "a drill starts from a healthy cluster") from None


def run_drill(api: ClusterSource, target: FaultTarget, endpoints: Endpoints, opts: DrillOptions,
              connect: Callable[[Endpoints], KeyStore] | None = None, clock: Clock | None = None,
              progress: Callable[[str], None] = _quiet, order: SentinelOrder = "controller",
              rng: random.Random | None = None,
              choose: Callable[[Sequence[NodeSnap]], NodeSnap] | None = None) -> DrillResult:
    """One drill: from a healthy cluster, through the fault, back to full redundancy (or the timeout), with
    the writer listing the Sentinels in `order`; `choose` picks the victim among the candidates (a
    campaign's seeded choice)."""
    clock = clock or Clock()
    connect = connect or (lambda e: SentinelKeyStore(e.sentinels(), e.master_name, e.redis_password,
                                                     username=e.redis_username))
    progress(f"waiting for {endpoints.cluster} to be fully redundant")
    before = wait_fully_redundant(api, opts.healthy_timeout_s, opts.settle_s, clock, progress)
    notes = _preflight(before, endpoints.cluster)
    endpoints = _in_order(endpoints, before, order, rng or random.Random(), notes)
    sentinels = endpoints.sentinels()
    progress(f"writer's Sentinels in {describe_order(order, sentinels)}")
    victim = pick_victim(before, opts.fault, choose)
    store = connect(endpoints)
    writer = Writer(store, f"drill:{uuid.uuid4().hex[:8]}:", opts.write_interval_s, clock.now, clock.monotonic)
    writer.start()
    try:
        _warm_up(writer, opts.warmup_acked, clock)
        progress(f"writer running ({writer.acked()} writes acknowledged); {opts.fault} on {victim.name}")
        fault_at = clock.now()
        try:
            detail = target.inject(opts.fault, victim)
        except BaseException:
            with contextlib.suppress(Exception):  # half a fault (a cut made, a disk part filled) is undone
                target.undo(opts.fault, victim)
            raise
        obs = Observer(opts.fault, before, victim.name, fault_at, detail, opts.settle_s)
        timed_out = _watch(api, obs, writer, target, victim, opts, clock, progress, notes)
    finally:
        writer.stop()
        store.close()
    end_at = clock.now()
    with contextlib.suppress(ControllerError):  # the last actions and incidents, with their final timestamps
        obs.on_incidents(api.incidents())
        obs.on_actions(api.actions())
    samples = writer.samples()
    lost = _read_back(connect(endpoints), writer, samples, clock, notes)
    observations = obs.finish()
    if opts.fault in FAILOVER_FAULTS and not any(a.kind == "Failover" for a in observations.actions):
        # why the controller left it to Sentinel's own timer (after its own failover, the same hold is normal)
        notes += [f"no fast failover: {reason}" for what, reason in observations.held if what == "fast failover"]
    listed = [f"{h}:{p}" for h, p in sentinels]
    asked = next((a.node for a in observations.actions if a.kind == "Failover" and a.status == "succeeded"), None)
    asked_node = before.node(asked) if asked else None
    leader = asked_node.sentinel_address if asked_node else None
    info = FaultInfo(opts.fault, target.label, victim.name, victim.address, before.master, fault_at, detail)
    return assemble_result(info, observations, samples, end_at, lost, timed_out, writer.errors, notes,
                           sentinel_order=order, sentinels=listed, failover_leader_rank=leader_rank(listed, leader))


def _in_order(endpoints: Endpoints, before: ClusterSnap, order: SentinelOrder, rng: random.Random,
              notes: list[str]) -> Endpoints:
    """The endpoints with the Sentinel list fixed for this run, in `order` relative to the controller's."""
    given = endpoints.sentinels()
    if not controller_order(given, before.sentinel_order)[1]:
        notes.append("the controller does not list every Sentinel the writer uses (GET /v1/clusters: "
                     "sentinels.order): the ones it does not list keep their given order, last")
    ordered = order_sentinels(given, before.sentinel_order, order, rng)
    return dataclasses.replace(endpoints, sentinels=lambda: ordered)


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
    """Poll the controller until the fault is undone (if it is one that is), full redundancy has settled and
    writes flow; True on a timeout. A frozen master is thawed once a new one is seen (or after
    thaw_after_s), a timed fault undone after hold_s (`undo_due`), and in any case before returning."""
    deadline = clock.monotonic() + opts.timeout_s
    next_history = 0.0
    reported: set[str] = {FAULT}
    pending = opts.fault == "stop-master" or opts.fault in TIMED_FAULTS
    try:
        while True:
            try:
                obs.on_cluster(api.cluster(), clock.now())
                if clock.monotonic() >= next_history:
                    obs.on_incidents(api.incidents())
                    obs.on_actions(api.actions())
                    next_history = clock.monotonic() + opts.history_poll_s
            except ControllerNotFound:
                raise
            except ControllerError as e:  # a poll that failed is a gap in the picture, not the end of the drill
                if f"poll failed: {e}" not in notes:
                    notes.append(f"poll failed: {e}")
            for name, step in obs.steps.items():
                if name not in reported:
                    reported.add(name)
                    progress(f"+{step.at - obs.fault_at:.2f}s {name}: {step.detail}")
            now = clock.now()
            new_master = obs.steps.get(NEW_MASTER)
            if opts.fault == "stop-master":
                due = new_master is not None or now - obs.fault_at >= opts.thaw_after_s
            else:
                due = undo_due(opts.fault, obs.fault_at, now, new_master.at if new_master else None, opts.hold_s)
            if pending and due:
                pending = False
                undone = target.undo(opts.fault, victim)
                obs.release(clock.now())
                if undone:
                    notes.append(f"+{clock.now() - obs.fault_at:.2f}s {undone}")
                    progress(f"+{clock.now() - obs.fault_at:.2f}s {undone}")
            restored = obs.restored_since
            flowing = writer.last_outcome() == "acked" or now - (restored or now) > opts.settle_s + 10
            if not pending and obs.settled(now) and flowing:
                return False
            if clock.monotonic() >= deadline:
                return True
            clock.sleep(opts.poll_interval_s)
    finally:
        if pending:  # never leave a frozen redis-server, a cut or a full disk behind
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
                    notes.append(f"could not read the written keys back: {error_kind(e)}")
                else:
                    clock.sleep(0.5)
        try:
            reader.delete([writer.key(s.n) for s in samples])
        except Exception as e:  # they expire within the hour anyway
            notes.append(f"could not delete the drill's keys ({error_kind(e)}); they expire within an hour")
    finally:
        reader.close()
    return lost


def run_drills(api: ClusterSource, target: FaultTarget, endpoints: Endpoints, opts: DrillOptions,
               clock: Clock | None = None, progress: Callable[[str], None] = _quiet,
               each: Callable[[DrillResult], None] = lambda _: None,
               rng: random.Random | None = None) -> list[DrillResult]:
    """`opts.runs` drills (with every Sentinel order: `opts.runs` of each, interleaved), each from a healthy
    cluster, at least `between_s` apart; stops after a timeout (the cluster did not recover, so the next run
    could not start from a healthy one)."""
    clock = clock or Clock()
    rng = rng or random.Random()
    results: list[DrillResult] = []
    for i, order in enumerate(opts.planned_orders()):
        if i and opts.between_s > 0:
            wait_s = results[-1]["fault_at"] + opts.between_s - clock.now()
            if wait_s > 0:
                progress(f"waiting {wait_s:.0f} s before the next fault (--between {opts.between_s:.0f})")
                clock.sleep(wait_s)
        result = run_drill(api, target, endpoints, opts, clock=clock, progress=progress, order=order, rng=rng)
        results.append(result)
        each(result)
        if result["timed_out"]:
            break
    return results
