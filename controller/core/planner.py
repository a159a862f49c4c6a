"""Healing: the plan for a cluster, from its findings, its view, its droplets and what was done before.

Layer: pure core. `plan_heal(snapshot, policy, now)` returns a `Plan`: typed actions, each with its
reason, plus the actions held back and why (a safety rail, a cooldown, a pause). No I/O, no clock; the
executor carries the plan out and records every step, then `apply_results` folds what happened into the
next cycle's `HealState`.

Safety rails (each visible as a hold reason):
  * never act on a node while the master is undecided or a failover is in progress;
  * never power-cycle, rebuild or destroy the current master: a dead master is Sentinel's to fail over;
  * never act without a majority of Sentinels reachable, unless the policy says so;
  * at most one reprovision in flight per cluster; cooldowns per node and per cluster; a daily budget,
    after which only alerts go out until `redwarden ack CLUSTER`;
  * maintenance pauses (cluster or node) and dry-run (plans, logs, alerts; acts on nothing).
A fast failover also lowers the asked Sentinel's down-after-milliseconds (`failover_down_after_ms`) for the
master, so that it flags the dead old master down at once and clients skip its stale answer while it
finishes the failover; the value is restored once the failover has ended (or after failover-timeout at the
latest), and a Sentinel whose down-after drifted from the configured value is set back
(`controller.core.down_after`).

The one exception to "nothing while undecided": fencing (`controller.core.fencing`), which settles a split
brain once a Sentinel side able to fail over names a new master that its own agent confirms.

Each SENTINEL RESET of the reset sequence first lowers that Sentinel's INFO-PERIOD (`reset_info_period_ms`)
so it relearns the replicas within about a second, owed back once it lists them (`controller.core.info_period`).
Escalation ladder per node: restart the service -> power-cycle the droplet -> reprovision it. A node whose
agent alone is silent (its Redis corroborated healthy) gets no ladder: an alert, and, only when
`agent_silent_reboot_after_s` is set, one graceful reboot after that long (never the master's droplet, and
only while the rest of the cluster keeps its Sentinel quorum and an in-sync replica).
A reprovision is a persisted state machine: create -> boot (active, reporting as an in-sync replica)
-> Sentinel reset sequence -> destroy the old droplet -> done.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from controller.core.down_after import (
    DownAfterOwed,
    SentinelDownAfter,
    owe_after,
    plan_down_after_restores,
    plan_lowering,
    settle_owed,
)
from controller.core.fencing import Fence, FenceRecord, FollowMaster, RepointSentinel, plan_fences
from controller.core.findings import Code, Finding, Severity
from controller.core.info_period import (
    InfoPeriodOwed,
    SentinelInfoPeriod,
    owe_after_restore,
    owe_lowered,
    plan_info_period_restores,
)
from controller.core.info_period import settle_owed as settle_info_period_owed
from controller.core.view import ClusterView, NodeState
from protocol import sentinel

# -- the policy ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HealPolicy:
    """How far the controller may go on its own. Loaded from `[heal]` in controller.toml."""

    enabled: bool = True
    dry_run: bool = False  # plan, log and alert; act on nothing
    fast_failover: bool = True  # SENTINEL FAILOVER at once when the master's own host confirms it dead
    act_without_majority: bool = False
    restart_attempts: int = 2  # service restarts before the droplet is power-cycled
    restart_wait_s: float = 10.0  # after a restart, before the next rung
    power_cycle_wait_s: float = 90.0  # after a power-cycle, before reprovisioning
    node_cooldown_s: float = 5.0  # between two actions on one node (the ladder's waits come on top)
    cluster_cooldown_s: float = 2.0  # between two actions in one cluster
    # no fast failover that could only promote a node failed away from less than this ago (ping-pong guard,
    # per node: a different master crashing soon after still gets the fast path); Sentinel's failover-timeout
    failover_cooldown_s: float = 60.0
    daily_budget: int = 30  # actions per cluster per UTC day before the controller only alerts
    sentinel_reset_interval_s: float = 30.0  # Redis's docs: >= 30 s between resets on production timings
    sentinel_settle_s: float = 2.0  # a reset Sentinel must list its peers again for this long
    replicaof_after_s: float = 15.0  # a replica on the wrong master this long gets REPLICAOF
    reprovision_boot_timeout_s: float = 900.0
    # AGENT_SILENT's gentler remedy: a node whose agent has been silent this long while its Redis is
    # corroborated healthy gets one graceful reboot (DigitalOcean's `reboot`, not a power-cycle) to bring
    # its agent back; 0: off (alert only), the default. Hours, not seconds: a reboot costs a resync.
    agent_silent_reboot_after_s: float = 0.0
    # the Sentinel asked for a fast failover gets this down-after-milliseconds for the master until the failover
    # has ended: it flags the dead old master down at once, so a client asking it first skips its answer
    # naming the old master (it names it until its failover ends, ~1 s after the others); 0: off
    failover_down_after_ms: int = 300
    # each Sentinel the reset sequence resets gets this INFO-PERIOD (SENTINEL DEBUG, Redis >= 7.0; runtime only)
    # right before its reset, so it relearns the replicas within about this long instead of up to 10 s; set
    # back once it lists them again; 0: off
    reset_info_period_ms: int = 1000

    def __post_init__(self) -> None:
        for name in ("restart_wait_s", "power_cycle_wait_s", "node_cooldown_s", "cluster_cooldown_s",
                     "failover_cooldown_s", "sentinel_reset_interval_s", "sentinel_settle_s",
                     "replicaof_after_s", "reprovision_boot_timeout_s", "agent_silent_reboot_after_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.restart_attempts < 0:
            raise ValueError("restart_attempts must be >= 0")
        if self.daily_budget < 0:
            raise ValueError("daily_budget must be >= 0")
        if self.failover_down_after_ms < 0:
            raise ValueError("failover_down_after_ms must be >= 0 (0: off)")
        if self.reset_info_period_ms < 0:
            raise ValueError("reset_info_period_ms must be >= 0 (0: off)")


# -- actions: a plan is data -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RestartService:
    node: str
    service: Literal["redis", "sentinel"]
    reason: str
    replicaof: str | None = None  # redis on a non-master: come back as a replica of the current master


@dataclass(frozen=True, slots=True)
class Replicaof:
    node: str
    master: str  # "ip:port"
    reason: str


@dataclass(frozen=True, slots=True)
class ResetSentinel:
    node: str
    reason: str
    info_period_ms: int | None = None  # lower its INFO-PERIOD to this first (controller.core.info_period)


@dataclass(frozen=True, slots=True)
class Failover:
    via_node: str  # whose Sentinel is asked
    old_master: str  # "ip:port"
    reason: str


@dataclass(frozen=True, slots=True)
class PowerCycle:
    node: str
    droplet_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class Reboot:
    """A graceful reboot of a droplet (ACPI, then DigitalOcean forces it off after its timeout)."""

    node: str
    droplet_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class StartReprovision:
    node: str
    droplet_id: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class CreateReplacement:
    job_id: str
    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class DestroyDroplet:
    node: str
    droplet_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class ForgetNode:
    node: str
    reason: str


@dataclass(frozen=True, slots=True)
class MoveReservedIp:
    ip: str
    droplet_id: int
    node: str  # the master it follows
    reason: str


@dataclass(frozen=True, slots=True)
class FinishReprovision:
    job_id: str
    ok: bool
    reason: str


Action = (
    RestartService | Replicaof | ResetSentinel | Failover | PowerCycle | Reboot | StartReprovision | CreateReplacement
    | DestroyDroplet | ForgetNode | FinishReprovision | MoveReservedIp | SentinelDownAfter | SentinelInfoPeriod
    | Fence | FollowMaster | RepointSentinel
)
# bookkeeping steps of a running reprovision, and a Sentinel's down-after lowered with a failover and set
# back: not counted against cooldowns and budget (a restore held by a used budget would leave it lowered)
FREE_ACTIONS = (ForgetNode, FinishReprovision, CreateReplacement, DestroyDroplet, SentinelDownAfter,
                SentinelInfoPeriod)
# fencing a replaced old master (controller.core.fencing): held by no budget or cooldown and counted in none,
# but the node's last action is kept (a node is fenced again only on a report newer than the fence)
FENCE_ACTIONS = (Fence, FollowMaster, RepointSentinel)


def describe(action: Action) -> str:
    """A short human name: "restart redis on redis-2", "reset sentinel on redis-3"."""
    match action:
        case RestartService(node=n, service=s):
            return f"restart {s} on {n}"
        case Replicaof(node=n, master=m):
            return f"REPLICAOF {m} on {n}"
        case ResetSentinel(node=n):
            return f"SENTINEL RESET on {n}"
        case Failover(via_node=n, old_master=m):
            return f"SENTINEL FAILOVER (via {n}, master {m})"
        case PowerCycle(node=n, droplet_id=d):
            return f"power-cycle droplet {d} ({n})"
        case Reboot(node=n, droplet_id=d):
            return f"reboot droplet {d} ({n})"
        case StartReprovision(node=n):
            return f"reprovision {n}"
        case CreateReplacement(name=name):
            return f"create replacement droplet {name}"
        case DestroyDroplet(node=n, droplet_id=d):
            return f"destroy droplet {d} ({n})"
        case ForgetNode(node=n):
            return f"forget {n}"
        case FinishReprovision(job_id=j, ok=ok):
            return f"finish reprovision {j} ({'done' if ok else 'failed'})"
        case MoveReservedIp(ip=ip, node=n, droplet_id=d):
            return f"move reserved IP {ip} to {n} (droplet {d})"
        case SentinelDownAfter(node=n, down_after_ms=ms):
            return f"SENTINEL SET down-after-milliseconds {ms} on {n}"
        case Fence(node=n, new_master=m):
            return f"fence {n} (REPLICAOF {m}, clients disconnected)"
        case FollowMaster(node=n, master=m):
            return f"REPLICAOF {m} on {n} (with the fence)"
        case RepointSentinel(node=n, master=m):
            return f"re-point the Sentinel on {n} at {m}"
        case SentinelInfoPeriod(node=n, info_period_ms=ms):
            return f"SENTINEL DEBUG INFO-PERIOD {ms} on {n}"
    raise AssertionError(action)  # pragma: no cover


def action_node(action: Action) -> str | None:
    return getattr(action, "node", None) or getattr(action, "via_node", None)


@dataclass(frozen=True, slots=True)
class Held:
    what: str  # describe(action), or a class of actions ("any action")
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[Action, ...]
    held: tuple[Held, ...]
    dry_run: bool
    summary: str


# -- state that survives cycles and restarts ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeHealth:
    """What was done to one node lately (for the escalation ladder and cooldowns)."""

    restarts: int = 0  # restarts since the node was last healthy
    last_restart_at: float | None = None
    power_cycled_at: float | None = None
    rebooted_at: float | None = None  # AGENT_SILENT's reboot: once per silence, cleared when healthy again
    last_action_at: float | None = None
    wrong_master_since: float | None = None


@dataclass(frozen=True, slots=True)
class Reprovision:
    """A persisted reprovision: survives a controller restart at any step."""

    job_id: str
    old_node: str
    old_droplet_id: int | None
    new_name: str
    step: Literal["create", "boot", "reset", "destroy_old"]
    started_at: float
    step_at: float
    new_droplet_id: int | None = None
    failed_creates: int = 0  # creates that failed; the next waits longer (5 s, 10 s, ... 60 s)
    last_create_at: float | None = None

    def create_backoff_s(self) -> float:
        return min(60.0, 5.0 * 2 ** max(0, self.failed_creates - 1)) if self.failed_creates else 0.0


@dataclass(frozen=True, slots=True)
class ResetSequence:
    pending: tuple[str, ...]  # nodes whose Sentinel is still to be reset, in order
    last_at: float | None = None  # when the last one was reset
    done: tuple[str, ...] = ()  # nodes whose Sentinel this sequence has reset, in order

    @property
    def last_node(self) -> str | None:
        return self.done[-1] if self.done else None


@dataclass(frozen=True, slots=True)
class HealState:
    cluster: str
    paused: bool = False
    paused_nodes: tuple[str, ...] = ()
    budget_day: str = ""  # UTC date the counter counts
    actions_today: int = 0
    budget_acked: bool = False  # `redwarden ack` lifts an exhausted budget for the rest of the day
    last_action_at: float | None = None
    last_failover_at: float | None = None
    failed_away: tuple[tuple[str, float], ...] = ()  # ("ip:port" of an old master, when it was failed away from)
    nodes: tuple[tuple[str, NodeHealth], ...] = ()
    reset: ResetSequence | None = None
    reprovision: Reprovision | None = None
    next_node_number: int = 0  # for replacement names; 0: derived from the names seen
    down_after_owed: tuple[DownAfterOwed, ...] = ()  # Sentinels to set back to the configured down-after
    fences: tuple[FenceRecord, ...] = ()  # the latest fences (a few), for their alert and what they explain
    info_period_owed: tuple[InfoPeriodOwed, ...] = ()  # Sentinels to set back to their INFO-PERIOD

    def node(self, name: str) -> NodeHealth:
        return dict(self.nodes).get(name, NodeHealth())

    def with_node(self, name: str, health: NodeHealth) -> HealState:
        nodes = dict(self.nodes)
        nodes[name] = health
        return dataclasses.replace(self, nodes=tuple(sorted(nodes.items())))


@dataclass(frozen=True, slots=True)
class Droplet:
    """The cloud's view of one droplet of the cluster (the adapter's result, reduced)."""

    id: int
    name: str
    status: str  # "new", "active", "off", "archive"
    private_ip: str | None = None


@dataclass(frozen=True, slots=True)
class HealSnapshot:
    view: ClusterView
    findings: tuple[Finding, ...]
    state: HealState
    droplets: tuple[Droplet, ...] | None  # None: no cloud adapter configured
    reserved_ip: tuple[str, int | None] | None = None  # (ip, the droplet it is assigned to), when configured
    # node -> the droplet id the controller's own records bind it to (the droplets it created); a node
    # without a record is matched by name among the droplets carrying the cluster's tag. Never the
    # droplet id an agent reports: a node could name another node's droplet.
    bindings: tuple[tuple[str, int], ...] = ()
    # why the cluster's persisted HealState could not be read, when it could not: healing is held (fail
    # closed: a paused cluster must not come back unpaused) until an operator resets it
    state_unreadable: str | None = None
    # the cluster's configured Sentinel timings (controller.toml); None: not known, the controller leaves
    # every Sentinel's down-after alone (it could not restore it)
    down_after_ms: int | None = None
    failover_timeout_ms: int | None = None


def reset_command(cluster: str) -> str:
    return f"redwarden heal reset-state {cluster}"


def check_heal_state(cluster: str, unreadable: str | None) -> tuple[Finding, ...]:
    """HEAL_STATE_UNREADABLE when the cluster's heal state (pauses, budget, a reprovision in flight) could
    not be read: critical, because healing is held until an operator resets it."""
    if unreadable is None:
        return ()
    return (Finding(Code.HEAL_STATE_UNREADABLE, Severity.CRITICAL, cluster, "cluster", cluster,
                    f"The controller cannot read cluster {cluster}'s heal state ({unreadable}): healing is held, "
                    "alerts go on. Check whether the cluster was paused or a reprovision was under way (`redwarden "
                    f"history`, the actions log), then `{reset_command(cluster)}` and pause again if needed",
                    evidence=(("reason", unreadable),)),)


# -- the planner ----------------------------------------------------------------------------------

UNDECIDED = (Code.NO_MASTER, Code.SPLIT_BRAIN, Code.FAILOVER_IN_PROGRESS)
NODE_CODES = {Code.REPLICA_DOWN, Code.SENTINEL_DOWN, Code.AGENT_SILENT, Code.REPLICA_WRONG_MASTER,
              Code.REPLICA_LINK_DOWN, Code.MASTER_DOWN}


def utc_day(now: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now))


def _codes(findings: Sequence[Finding], subject: str | None = None) -> set[Code]:
    return {f.code for f in findings if subject is None or f.subject_name == subject}


def _sentinel_majority(view: ClusterView) -> bool:
    return len(view.sentinel_views()) * 2 > view.expected_sentinels


def _in_sync_replica(view: ClusterView, node: NodeState, master: str | None) -> bool:
    redis = node.report.redis
    return (
        view.redis_up(node) and redis.role == "replica" and redis.master_link_status == "up"
        and master is not None and redis.master_address == master and not bool(redis.master_sync_in_progress)
    )


def _next_name(snapshot: HealSnapshot, old: str) -> str:
    """A fresh, unique node name for a replacement: the old name's stem with the next free number."""
    stem = old.rstrip("0123456789").rstrip("-") or "redis"
    taken = {n.name for n in snapshot.view.nodes} | {d.name for d in snapshot.droplets or ()}
    numbers = [int(n[len(stem) + 1:]) for n in taken if n.startswith(stem + "-") and n[len(stem) + 1:].isdigit()]
    k = max([snapshot.state.next_node_number - 1, *numbers, 0]) + 1
    while f"{stem}-{k}" in taken:
        k += 1
    return f"{stem}-{k}"


def _droplet_of(snapshot: HealSnapshot, node: NodeState) -> Droplet | None:
    """The node's droplet by the controller's records and the cloud (the droplets with the cluster's tag);
    what the node's own agent reports about its droplet is not asked."""
    bound = dict(snapshot.bindings).get(node.name)
    if bound is not None:
        return next((d for d in snapshot.droplets or () if d.id == bound), None)
    named = [d for d in snapshot.droplets or () if d.name == node.name]
    return named[0] if len(named) == 1 else None


DISRUPTIVE = (PowerCycle, Reboot, StartReprovision, DestroyDroplet)


def _host(address: str | None) -> str | None:
    return address.rsplit(":", 1)[0] if address else None


def _identity_hold(snapshot: HealSnapshot, action: Action, master: str | None,
                   master_node: NodeState | None) -> str | None:
    """Why a disruptive action may not touch its droplet, or None: the droplet must be the cloud's, carry the
    cluster's tag (it is in the tag's list) and have a private IP, which must not be the master's."""
    if not isinstance(action, DISRUPTIVE):
        return None
    if master is not None and master_node is None:
        return (f"the master {master} (by Sentinel majority) is no node of this cluster: nothing is powered "
                "off or destroyed until it is")
    droplet_id = action.droplet_id
    if droplet_id is None:
        return None  # a reprovision of a droplet that is already gone touches no droplet
    droplet = next((d for d in snapshot.droplets or () if d.id == droplet_id), None)
    if droplet is None:
        if isinstance(action, StartReprovision):
            return None  # gone from the cloud: replacing it touches nothing
        return f"droplet {droplet_id} does not carry the cluster's tag"
    if not droplet.private_ip:
        return f"droplet {droplet_id} has no private IP to check it against the master's"
    if droplet.private_ip == _host(master):
        return f"droplet {droplet_id} has the master's IP {droplet.private_ip}: the master is never touched"
    return None


def _said(actions: Sequence[Action]) -> str:
    return "; ".join(f"{describe(a)}: {a.reason}" for a in actions)


def plan_heal(snapshot: HealSnapshot, policy: HealPolicy, now: float) -> Plan:
    view, state, findings = snapshot.view, snapshot.state, snapshot.findings
    actions: list[Action] = []
    held: list[Held] = []

    def done(summary: str) -> Plan:
        return Plan(tuple(actions), tuple(held), policy.dry_run, summary)

    if not policy.enabled:
        return done("healing disabled by policy: alerting only")
    if snapshot.state_unreadable is not None:
        held.append(Held("any action", f"the heal state cannot be read ({snapshot.state_unreadable}): held until "
                                       f"`{reset_command(view.name)}`"))
        return done("no action: heal state unreadable")
    if state.paused:
        held.append(Held("any action", "cluster paused for maintenance (`redwarden resume` to act again)"))
        return done("no action: cluster paused")

    # fencing goes before every rail that waits for a settled picture: it is what settles a split brain
    fences, fence_held = plan_fences(view, {n: h.last_action_at for n, h in state.nodes
                                            if h.last_action_at is not None}, state.paused_nodes)
    actions += fences
    held += [Held(h.what, h.reason) for h in fence_held]

    codes = _codes(findings)
    master = view.master_address()
    undecided = master is None or bool(codes & set(UNDECIDED))
    majority = _sentinel_majority(view)
    budget_used = state.actions_today if state.budget_day == utc_day(now) else 0
    budget_left = policy.daily_budget - budget_used
    cluster_cool = state.last_action_at is not None and now - state.last_action_at < policy.cluster_cooldown_s

    # a Sentinel's down-after owed back after a fast failover (or drifted): set back even while undecided
    # once failover-timeout has passed, and regardless of budget and cooldowns (it undoes the controller's own
    # change, or restores the configuration the majority runs with)
    restores, restore_holds = plan_down_after_restores(view, state.down_after_owed, snapshot.down_after_ms, master,
                                                       not undecided, now)
    actions += restores
    held += [Held(what, why) for what, why in restore_holds]
    # likewise a reset Sentinel's INFO-PERIOD, lowered for its reset
    info_restores, info_holds = plan_info_period_restores(view, state.info_period_owed, state.reset is not None,
                                                          policy.sentinel_settle_s, now)
    actions += info_restores
    held += [Held(what, why) for what, why in info_holds]

    # the reprovision state machine goes first: it must finish what it started
    job = state.reprovision
    if job is not None:
        job_actions, job_held = _advance_reprovision(snapshot, job, policy, now, master, undecided)
        for step in job_actions:
            if (why_not := _identity_hold(snapshot, step, master, view.master_node())) is not None:
                held.append(Held(describe(step), why_not))
            else:
                actions.append(step)
        held += job_held

    if undecided:
        why = "failover in progress" if Code.FAILOVER_IN_PROGRESS in codes else "master undecided"
        if codes & {Code.MASTER_DOWN, Code.AGENT_SILENT, Code.REPLICA_DOWN, Code.SENTINEL_DOWN}:
            held.append(Held("node actions", f"{why}: nothing is touched until Sentinel settles it"))
        if not actions:
            return done(f"no action: {why}")
        return done(f"{_said(actions)} ({why})")
    if not majority and not policy.act_without_majority:
        held.append(Held("any action", f"only {len(view.sentinel_views())} of {view.expected_sentinels} Sentinels "
                                       "reachable: no majority, acting could make things worse"))
        if not actions:
            return done("no action: no Sentinel majority")
        return done(f"{_said(actions)} (no Sentinel majority)")

    wanted: list[Action] = []
    master_node = view.master_node()

    # fast failover: the master's own host says its redis-server is gone
    fast = _fast_failover(snapshot, policy, now, master, master_node)
    if isinstance(fast, Failover):
        wanted.append(fast)
    elif isinstance(fast, Held):
        held.append(fast)

    for node in view.nodes:
        if master_node is not None and node.name == master_node.name:
            if not view.is_fresh(node) or Code.MASTER_DOWN in _codes(findings, node.name):
                held.append(Held(f"power-cycle or rebuild {node.name}",
                                 "it is the current master: a dead master is Sentinel's to fail over first"))
            silent_s = view.age_s(node)
            if policy.agent_silent_reboot_after_s > 0 and silent_s >= policy.agent_silent_reboot_after_s:
                held.append(Held(f"reboot {node.name}", f"its agent has been silent {silent_s:.0f} s, but it is the "
                                 "current master: the controller never reboots it (an operator may fail over first)"))
            continue
        if job is not None and node.name in (job.old_node, job.new_name):
            continue  # the reprovision owns these
        if not _codes(findings, node.name) & NODE_CODES:
            continue  # act on a node only for a confirmed finding about it (which has alerted someone)
        if node.name in state.paused_nodes:
            held.append(Held(f"any action on {node.name}", "node paused for maintenance"))
            continue
        wanted += _node_ladder(snapshot, node, policy, now, master, held)

    # the reserved IP follows the master, for clients that cannot speak Sentinel
    if snapshot.reserved_ip is not None and master_node is not None and view.redis_up(master_node):
        ip, assigned = snapshot.reserved_ip
        droplet = _droplet_of(snapshot, master_node)
        if droplet is not None and assigned != droplet.id:
            wanted.append(MoveReservedIp(ip, droplet.id, master_node.name,
                                         f"the master is {master_node.name}; {ip} points at "
                                         f"{'droplet ' + str(assigned) if assigned else 'no droplet'}"))

    reset = _sentinel_reset(snapshot, policy, now)
    if isinstance(reset, ResetSentinel):
        wanted.append(dataclasses.replace(reset, info_period_ms=policy.reset_info_period_ms or None))
    elif isinstance(reset, Held):
        held.append(reset)

    # rails that apply to everything wanted
    reprovisions = sum(1 for a in wanted if isinstance(a, StartReprovision))
    for action in wanted:
        if (why_not := _identity_hold(snapshot, action, master, master_node)) is not None:
            held.append(Held(describe(action), why_not))
            continue
        if isinstance(action, StartReprovision) and (job is not None or reprovisions > 1):
            held.append(Held(describe(action), "another reprovision is in flight in this cluster (one at a time)"))
            reprovisions -= 1
            continue
        if budget_left <= 0 and not state.budget_acked:
            held.append(Held(describe(action), f"daily budget of {policy.daily_budget} actions used: alerting only "
                                               "until `redwarden ack` or tomorrow (UTC)"))
            continue
        subject = action_node(action)
        last = state.node(subject).last_action_at if subject else None
        sequenced = isinstance(action, ResetSentinel) and state.reset is not None  # paced by its own interval
        if not isinstance(action, Failover) and not sequenced:
            if cluster_cool:
                held.append(Held(describe(action), f"cluster cooldown ({policy.cluster_cooldown_s:.0f} s)"))
                continue
            if last is not None and now - last < policy.node_cooldown_s:
                held.append(Held(describe(action), f"node cooldown ({policy.node_cooldown_s:.0f} s)"))
                continue
        actions.append(action)
        budget_left -= 1
        cluster_cool = True  # one new action per cluster per cycle: the next cycle sees its effect
        if isinstance(action, Failover):
            lowering = plan_lowering(view, state.down_after_owed, action.via_node, action.old_master,
                                     snapshot.down_after_ms, policy.failover_down_after_ms)
            if isinstance(lowering, SentinelDownAfter):
                actions.append(lowering)  # right after the failover is asked: the executor skips it if refused
            elif lowering is not None:
                held.append(Held(f"lower down-after on {action.via_node}", lowering))

    if not actions:
        return done("no action: " + (held[0].reason if held else "nothing to heal"))
    return done(_said(actions))


def _fast_failover(
    snapshot: HealSnapshot, policy: HealPolicy, now: float, master: str | None, master_node: NodeState | None
) -> Failover | Held | None:
    view = snapshot.view
    if master is None or master_node is None or Code.MASTER_DOWN not in _codes(snapshot.findings):
        return None
    redis = master_node.report.redis
    own_host_confirms = view.is_fresh(master_node) and (
        not master_node.report.host.redis_process.alive or "refused" in (redis.error or "").lower()
    )
    if not own_host_confirms:
        return Held("fast failover", "the master's own host does not confirm its redis-server gone "
                                     "(hung or unreachable): Sentinel's own timer applies")
    if not policy.fast_failover:
        return Held("fast failover", "fast failover is off in the policy: Sentinel's own timer applies")
    state = snapshot.state
    candidates = [n for n, v in view.sentinel_views() if n.name != master_node.name]
    replicas = [n for n in view.fresh_nodes() if _in_sync_replica(view, n, master) or (
        view.redis_up(n) and n.report.redis.role == "replica")]
    if not candidates or not replicas:
        return Held("fast failover", "no other Sentinel or no replica to promote")
    recent = {address for address, at in state.failed_away if now - at < policy.failover_cooldown_s}
    if master in recent:  # asked already: the Sentinel is carrying it out (asking again only gets INPROG)
        asked = max(at for address, at in state.failed_away if address == master)
        return Held("fast failover", f"a failover away from {master} was asked {now - asked:.1f} s ago: "
                                     "Sentinel is carrying it out")
    if all(n.report.identity.redis_address in recent for n in replicas):
        return Held("fast failover", "the only replicas to promote were failed away from less than "
                                     f"{policy.failover_cooldown_s:.0f} s ago: no ping-pong, Sentinel's timer applies")
    # The Sentinel asked leads the failover, and until it has reconfigured every replica it still names the
    # old master to SENTINEL MASTERS (what redis-py's Sentinel client asks), about a second after the others
    # have switched. Clients list the Sentinels in the cluster's order and stay with the first that answers:
    # ask the last one.
    return Failover(candidates[-1].name, master, "the master's own agent confirms its redis-server is gone "
                    f"({redis.error or 'process not running'}); failing over now instead of after down-after")


def _node_ladder(
    snapshot: HealSnapshot, node: NodeState, policy: HealPolicy, now: float, master: str | None,
    held: list[Held],
) -> list[Action]:
    """restart the service -> power-cycle the droplet -> reprovision it."""
    view, state = snapshot.view, snapshot.state
    health = state.node(node.name)
    droplet = _droplet_of(snapshot, node)
    droplet_id = droplet.id if droplet else node.report.identity.droplet_id
    if not view.is_fresh(node):  # the agent is silent: act on the droplet only if its Redis is down too
        if snapshot.droplets is None:
            held.append(Held(f"power-cycle {node.name}", "no DigitalOcean adapter configured"))
            return []
        if droplet is None:
            return [StartReprovision(node.name, droplet_id, f"{node.name}'s droplet no longer exists")]
        verdict, why = ("down", f"the cloud shows droplet {droplet.id} {droplet.status}") \
            if droplet.status == "off" else view.silent_redis(node)
        if verdict == "up":
            held.append(Held(f"power-cycle {node.name}",
                             f"its agent is silent but its Redis is corroborated healthy ({why}): alert only"))
            reboot = _silent_agent_reboot(snapshot, node, droplet, policy, now, master, why)
            if isinstance(reboot, Reboot):
                return [reboot]
            if reboot is not None:
                held.append(reboot)
            return []
        if verdict != "down":
            held.append(Held(f"power-cycle {node.name}",
                             f"its agent is silent and nothing corroborates its Redis down ({why})"))
            return []
        if health.rebooted_at is not None and now - health.rebooted_at < policy.power_cycle_wait_s:
            held.append(Held(f"power-cycle {node.name}", f"rebooted {now - health.rebooted_at:.0f} s ago: its Redis "
                             f"is down while it boots ({policy.power_cycle_wait_s:.0f} s before the ladder goes on)"))
            return []
        if health.power_cycled_at is None:
            return [PowerCycle(node.name, droplet.id, f"{node.name}'s agent has been silent for "
                               f"{view.age_s(node):.0f} s and {why}")]
        if now - health.power_cycled_at >= policy.power_cycle_wait_s:
            return [StartReprovision(node.name, droplet.id, f"still silent {now - health.power_cycled_at:.0f} s "
                                     "after a power-cycle")]
        return []
    report = node.report
    out: list[Action] = []
    if not report.redis.reachable:
        if health.restarts < policy.restart_attempts:
            if health.last_restart_at is None or now - health.last_restart_at >= policy.restart_wait_s:
                out.append(RestartService(node.name, "redis", f"redis-server unreachable on {node.name}: "
                                          f"{report.redis.error or 'down'} (restart {health.restarts + 1} of "
                                          f"{policy.restart_attempts}, as a replica of {master})", master))
        elif health.last_restart_at is not None and now - health.last_restart_at < policy.restart_wait_s:
            pass  # give the last restart its time
        elif droplet is not None and health.power_cycled_at is None:
            out.append(PowerCycle(node.name, droplet.id, f"redis-server still down after {health.restarts} restarts"))
        elif droplet is not None and health.power_cycled_at is not None:
            if now - health.power_cycled_at >= policy.power_cycle_wait_s:
                out.append(StartReprovision(node.name, droplet.id, "redis-server still down after a power-cycle"))
        else:
            held.append(Held(f"power-cycle {node.name}", "restarts did not help and no droplet is known for it"))
    if not report.sentinel.reachable:
        out.append(RestartService(node.name, "sentinel", f"redis-sentinel unreachable on {node.name}: "
                                  f"{report.sentinel.error or 'down'}"))
    redis = report.redis
    if (
        redis.reachable and redis.role == "replica" and master is not None and redis.master_address != master
        and health.wrong_master_since is not None and now - health.wrong_master_since >= policy.replicaof_after_s
    ):
        out.append(Replicaof(node.name, master, f"{node.name} replicates {redis.master_address}, not the master "
                             f"{master}, for {now - health.wrong_master_since:.0f} s"))
    return out


def _silent_agent_reboot(snapshot: HealSnapshot, node: NodeState, droplet: Droplet, policy: HealPolicy,
                         now: float, master: str | None, why_healthy: str) -> Reboot | Held | None:
    """AGENT_SILENT's gentler remedy, for a non-master whose Redis is corroborated healthy: one graceful
    reboot after `agent_silent_reboot_after_s` of silence, if the rest of the cluster keeps a Sentinel
    quorum (and majority) and an in-sync replica while it reboots. None: the remedy is off."""
    after_s = policy.agent_silent_reboot_after_s
    if after_s <= 0:
        return None
    view = snapshot.view
    what = f"reboot {node.name}"
    silent_s = view.age_s(node)
    rebooted_at = snapshot.state.node(node.name).rebooted_at
    if rebooted_at is not None:
        return Held(what, f"rebooted {now - rebooted_at:.0f} s ago and its agent is still silent: one reboot per "
                          "silence, the rest is an operator's (look at the droplet's console)")
    if silent_s < after_s:
        return Held(what, f"its agent has been silent {silent_s:.0f} s; a graceful reboot only after {after_s:.0f} s")
    others = [v for n, v in view.sentinel_views() if n.name != node.name]
    quorum = max((v.quorum for v in others if v.quorum), default=0)
    needed = max(quorum, view.expected_sentinels // 2 + 1)
    if len(others) < needed:
        return Held(what, f"only {len(others)} other Sentinels reachable, {needed} needed to keep quorum and a "
                          "majority while it reboots")
    replicas = [n.name for n in view.fresh_nodes() if n.name != node.name and _in_sync_replica(view, n, master)]
    if not replicas:
        return Held(what, "no other in-sync replica: the master would be left without one while it reboots")
    return Reboot(node.name, droplet.id, f"{node.name}'s agent has been silent {silent_s:.0f} s (reboot after "
                  f"{after_s:.0f} s) while its Redis is healthy ({why_healthy}); {len(others)} other Sentinels and "
                  f"{', '.join(replicas)} in sync keep the cluster whole: a graceful reboot to bring its agent back")


def _sentinel_reset(snapshot: HealSnapshot, policy: HealPolicy, now: float) -> ResetSentinel | Held | None:
    view, state = snapshot.view, snapshot.state
    seq = state.reset
    if seq is None:
        stale = _codes(snapshot.findings) & {Code.SENTINEL_STALE_ENTRIES, Code.SENTINEL_COUNT_MISMATCH}
        if not stale:
            return None
        order = tuple(n.name for n, _ in view.sentinel_views())
        if not order:
            return None
        return ResetSentinel(order[0], f"Sentinels list entries that no longer exist ({', '.join(sorted(stale))}): "
                             f"reset one at a time, {order[0]} first")
    if not seq.pending:
        return None
    if seq.last_node is not None and not _rediscovered(view, seq, policy.sentinel_settle_s, replicas=False):
        return Held(f"SENTINEL RESET on {seq.pending[0]}", f"waiting for {seq.last_node}'s Sentinel to rediscover "
                                                            "its peer Sentinels")
    # Redis's docs ask for 30 s between resets so that a reset Sentinel has relearnt its peers and replicas
    # before the next one forgets them; the reports show when it has: with that evidence the next reset
    # goes at once, without it (peers back, replicas not yet) only after the interval, as before
    relearnt = _rediscovered(view, seq, policy.sentinel_settle_s, replicas=True)
    if not relearnt and seq.last_at is not None and now - seq.last_at < policy.sentinel_reset_interval_s:
        return Held(f"SENTINEL RESET on {seq.pending[0]}", f"waiting for the reset Sentinels to list the replicas "
                                                            f"again, or {policy.sentinel_reset_interval_s:.0f} s")
    return ResetSentinel(seq.pending[0], "continuing the Sentinel reset sequence")


def _rediscovered(view: ClusterView, seq: ResetSequence, settle_s: float, replicas: bool = True) -> bool:
    """The last reset Sentinel lists its live peer Sentinels again, in a report received at least `settle_s`
    after the reset (an earlier report shows the tables before it); with `replicas`, every Sentinel this
    sequence reset also lists the live replicas again. A reset Sentinel finds its peers within a hello
    period (2 s) but the replicas only at its next INFO of the master (up to 10 s): the next reset waits
    for the peers, which carry the votes, and the sequence ends once all have both.

    Only what a Sentinel can find counts: the Sentinels that are up, the Redis servers that are up. A node
    whose agent reports but whose Redis is down (a replaced node that came back during its replacement's
    reset, issue 20) cannot be relearnt until it runs again, and waiting for it would wait forever."""
    if seq.last_node is None:
        return True
    sentinels = len([n for n in view.nodes if view.sentinel_up(n)])
    redises = len([n for n in view.nodes if view.redis_up(n)])
    last = view.node(seq.last_node)
    if last is None or (seq.last_at is not None and last.received_at < seq.last_at + settle_s):
        return False
    if not _sentinel_lists(view, last, peers=sentinels - 1, replicas=0):
        return False
    return not replicas or all(_sentinel_lists(view, view.node(name), peers=0, replicas=redises - 1)
                               for name in seq.done)


def _sentinel_lists(view: ClusterView, node: NodeState | None, peers: int, replicas: int) -> bool:
    """The node's Sentinel is up and lists at least `peers` other Sentinels and `replicas` replicas."""
    if node is None or not view.sentinel_up(node):
        return False
    sv = node.report.sentinel.master(view.master_name)
    return sv is not None and (sv.num_other_sentinels or 0) >= peers and len(sv.replicas) >= replicas


def _advance_reprovision(
    snapshot: HealSnapshot, job: Reprovision, policy: HealPolicy, now: float, master: str | None, undecided: bool
) -> tuple[list[Action], list[Held]]:
    view = snapshot.view
    if now - job.started_at > policy.reprovision_boot_timeout_s and job.step in ("create", "boot"):
        why = f"the replacement {job.new_name} did not join within {policy.reprovision_boot_timeout_s:.0f} s"
        cleanup: list[Action] = []
        if job.new_droplet_id is not None and any(d.id == job.new_droplet_id for d in snapshot.droplets or ()):
            cleanup.append(DestroyDroplet(job.new_name, job.new_droplet_id, f"{why}: no orphan droplets"))
        return [*cleanup, FinishReprovision(job.job_id, False, why)], []
    if job.step == "create":
        if undecided:
            return [], [Held(f"create {job.new_name}", "master undecided: the replacement waits")]
        if job.last_create_at is not None and now - job.last_create_at < job.create_backoff_s():
            return [], [Held(f"create {job.new_name}", f"{job.failed_creates} create(s) failed: retrying "
                             f"{job.create_backoff_s():.0f} s after the last")]
        return [CreateReplacement(job.job_id, job.new_name, f"replacing {job.old_node}")], []
    if job.step == "boot":
        new = view.node(job.new_name)
        if new is not None and _in_sync_replica(view, new, master):
            return [], [Held(f"reprovision {job.job_id}", "replacement in sync; Sentinel reset sequence next")]
        return [], [Held(f"reprovision {job.job_id}", f"waiting for {job.new_name} to boot and sync")]
    if job.step == "reset":
        return [], [Held(f"reprovision {job.job_id}", "Sentinel reset sequence running")]
    # destroy_old
    if undecided:
        return [], [Held(f"destroy {job.old_node}", "master undecided")]
    old = view.node(job.old_node)
    if old is not None and master is not None and old.report.identity.redis_address == master:
        return [], [Held(f"destroy {job.old_node}", "it is the current master: never destroyed")]
    steps: list[Action] = []
    if job.old_droplet_id is not None and any(d.id == job.old_droplet_id for d in snapshot.droplets or ()):
        steps.append(DestroyDroplet(job.old_node, job.old_droplet_id, f"replaced by {job.new_name}"))
    steps.append(ForgetNode(job.old_node, f"replaced by {job.new_name}"))
    steps.append(FinishReprovision(job.job_id, True, f"{job.old_node} replaced by {job.new_name}"))
    return steps, []


def start_reprovision(snapshot: HealSnapshot, action: StartReprovision, now: float) -> Reprovision:
    """The job a StartReprovision opens (the executor persists it; the next cycles advance it)."""
    name = _next_name(snapshot, action.node)
    return Reprovision(job_id=f"{snapshot.view.name}-{name}-{int(now)}", old_node=action.node,
                       old_droplet_id=action.droplet_id, new_name=name, step="create", started_at=now, step_at=now)


def observe(snapshot: HealSnapshot, now: float, policy: HealPolicy = HealPolicy()) -> HealState:
    """Fold what the view shows into the state before planning: healed nodes forget their ladder, wrong
    masters start their clock, a booted replacement moves its reprovision on, a finished reset sequence ends."""
    view, state = snapshot.view, snapshot.state
    master = view.master_address()
    for node in view.nodes:
        h = state.node(node.name)
        r = node.report.redis
        healthy = view.redis_up(node) and view.sentinel_up(node)
        new = h
        if healthy and (h.restarts or h.power_cycled_at is not None or h.rebooted_at is not None):
            new = dataclasses.replace(new, restarts=0, last_restart_at=None, power_cycled_at=None, rebooted_at=None)
        wrong = (view.redis_up(node) and r.role == "replica" and master is not None and r.master_address != master)
        if wrong and h.wrong_master_since is None:
            new = dataclasses.replace(new, wrong_master_since=now)
        elif not wrong and h.wrong_master_since is not None:
            new = dataclasses.replace(new, wrong_master_since=None)
        if new != h:
            state = state.with_node(node.name, new)
    if state.budget_day != utc_day(now):
        state = dataclasses.replace(state, budget_day=utc_day(now), actions_today=0, budget_acked=False)
    job = state.reprovision
    if job is not None and job.step == "boot":
        new_node = view.node(job.new_name)
        if new_node is not None and _in_sync_replica(view, new_node, master):
            # the replacement's own Sentinel never knew the lost node: it needs no reset
            order = tuple(n.name for n, _ in view.sentinel_views() if n.name not in (job.old_node, job.new_name))
            state = dataclasses.replace(state, reprovision=dataclasses.replace(job, step="reset", step_at=now),
                                        reset=ResetSequence(pending=order))
    owed = settle_owed(view, state.down_after_owed, now)
    if owed != state.down_after_owed:
        state = dataclasses.replace(state, down_after_owed=owed)
    info_owed = settle_info_period_owed(view, state.info_period_owed, now)
    if info_owed != state.info_period_owed:
        state = dataclasses.replace(state, info_period_owed=info_owed)
    seq = state.reset
    if seq is not None and not seq.pending and _rediscovered(view, seq, policy.sentinel_settle_s):
        state = dataclasses.replace(state, reset=None)
        job = state.reprovision
        if job is not None and job.step == "reset":
            state = dataclasses.replace(state, reprovision=dataclasses.replace(job, step="destroy_old", step_at=now))
    return state


@dataclass(frozen=True, slots=True)
class ActionResult:
    ok: bool
    detail: str = ""
    droplet_id: int | None = None  # CreateReplacement: the new droplet
    info_period_lowered_from_ms: int | None = None  # ResetSentinel: its INFO-PERIOD was lowered from this


def apply_result(snapshot: HealSnapshot, state: HealState, action: Action, result: ActionResult,
                 now: float) -> HealState:
    """Fold one executed action into the state. Pure; a failed action still counts (it was tried)."""
    if isinstance(action, FENCE_ACTIONS):
        fenced = action.node
        state = state.with_node(fenced, dataclasses.replace(state.node(fenced), last_action_at=now))
        if isinstance(action, Fence):
            record = FenceRecord(fenced, action.new_master, now, result.ok)
            state = dataclasses.replace(state, fences=(*state.fences[-7:], record))
        return state
    if not isinstance(action, FREE_ACTIONS):
        day = utc_day(now)
        used = state.actions_today if state.budget_day == day else 0
        state = dataclasses.replace(state, budget_day=day, actions_today=used + 1, last_action_at=now)
    node = action_node(action)
    if node is not None and not isinstance(action, FREE_ACTIONS):
        h = state.node(node)
        state = state.with_node(node, dataclasses.replace(h, last_action_at=now))
    match action:
        case RestartService(node=n, service="redis"):
            h = state.node(n)
            state = state.with_node(n, dataclasses.replace(h, restarts=h.restarts + 1, last_restart_at=now))
        case PowerCycle(node=n):
            state = state.with_node(n, dataclasses.replace(state.node(n), power_cycled_at=now))
        case Reboot(node=n):
            state = state.with_node(n, dataclasses.replace(state.node(n), rebooted_at=now))
        case Failover(old_master=old):
            state = dataclasses.replace(state, last_failover_at=now,
                                        failed_away=(*state.failed_away[-7:], (old, now)))
        case ResetSentinel(node=n):
            seq = state.reset
            if seq is None:
                rest = tuple(x.name for x, _ in snapshot.view.sentinel_views() if x.name != n)
                seq = ResetSequence(pending=rest, last_at=now, done=(n,))
            else:
                seq = ResetSequence(pending=tuple(x for x in seq.pending if x != n), last_at=now,
                                    done=(*seq.done, n))
            state = dataclasses.replace(state, reset=seq, info_period_owed=owe_lowered(
                state.info_period_owed, n, result.info_period_lowered_from_ms, now))
        case StartReprovision():
            if result.ok and state.reprovision is None:
                state = dataclasses.replace(state, reprovision=start_reprovision(snapshot, action, now))
        case CreateReplacement():
            job = state.reprovision
            if result.ok and job is not None and result.droplet_id is not None:
                state = dataclasses.replace(state, reprovision=dataclasses.replace(
                    job, step="boot", step_at=now, new_droplet_id=result.droplet_id))
            elif job is not None:
                state = dataclasses.replace(state, reprovision=dataclasses.replace(
                    job, failed_creates=job.failed_creates + 1, last_create_at=now))
        case ForgetNode(node=n):
            state = dataclasses.replace(state, nodes=tuple((k, v) for k, v in state.nodes if k != n),
                                        down_after_owed=tuple(o for o in state.down_after_owed if o.node != n),
                                        info_period_owed=tuple(o for o in state.info_period_owed if o.node != n))
        case FinishReprovision():
            state = dataclasses.replace(state, reprovision=None)
        case SentinelDownAfter(node=n):
            via = snapshot.view.node(n)
            sv = via.report.sentinel.master(snapshot.view.master_name) if via is not None else None
            timeout_ms = snapshot.failover_timeout_ms or (sv.failover_timeout_ms if sv else None) \
                or sentinel.FAILOVER_TIMEOUT_MS
            state = dataclasses.replace(state, down_after_owed=owe_after(
                state.down_after_owed, action, result.ok, now, snapshot.down_after_ms, timeout_ms / 1000))
        case SentinelInfoPeriod():
            state = dataclasses.replace(state, info_period_owed=owe_after_restore(
                state.info_period_owed, action, result.ok, now))
    return state
