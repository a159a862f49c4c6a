"""Fencing: an old master that the Sentinel majority has replaced is demoted at once, not when it rejoins.

Layer: pure core. `plan_fences(view, last_action_at, paused_nodes)` returns the fences a view calls for
and what holds them back; no I/O, no clock (`view.now`).

The rule (issue 12): once a side of Sentinels that can authorize a failover (`checks.sentinel_sides`, at
least the larger of the quorum and a majority of the expected Sentinels) names M' (every member naming M'
and none flagging it down; or, in the second or two before its Sentinels have heard the news, the side's
leader has its failover in progress towards the replica M' it promoted, and every other member names M'
or flags the old master down), and M''s own agent (a fresh report) says its Redis is role master, every
*other* node whose fresh report says role master is fenced: `Fence(node, M')` makes it a
replica of M' (REPLICAOF + CONFIG REWRITE + CLIENT KILL TYPE normal), so its writes are refused at once
(READONLY) and its clients reconnect and ask Sentinel again. Never without that side and that
confirmation; never the node the side names. A Sentinel outside every such side that still names a node
that is no longer (or is being made no longer) a master is re-pointed at M' (`RepointSentinel`): a client
that lists it first would otherwise be sent back to the fenced node until the partition heals.

A fence is not disruptive to a healthy node: it puts a node the majority has already replaced into the
state Sentinel itself puts a returning old master in. So it is held by no budget and no cooldown (only
by a pause, and it is planned but not carried out in dry-run); it is audited and alerted like any action.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from controller.core.checks import sentinel_sides
from controller.core.findings import Code, Finding, Severity
from controller.core.view import ClusterView, NodeState
from protocol import sentinel as defaults
from protocol.report import SentinelMasterView


@dataclass(frozen=True, slots=True)
class Fence:
    """Demote `node`'s Redis to a replica of `new_master` and disconnect its clients."""

    node: str
    new_master: str  # "ip:port", named by a Sentinel side able to fail over and confirmed by its own agent
    reason: str


@dataclass(frozen=True, slots=True)
class FollowMaster:
    """Make replica `node` follow `master` (REPLICAOF + CONFIG REWRITE): what the Sentinel leader sends the other
    replicas once its next INFO of the promoted one shows it master (up to a second after the promotion), sent
    with the fence instead. Until a replica follows it, a new master with `min-replicas-to-write 1` refuses
    writes and `WAIT 1` has no one to wait for."""

    node: str
    master: str  # "ip:port": the confirmed new master
    reason: str


@dataclass(frozen=True, slots=True)
class RepointSentinel:
    """Make `node`'s Sentinel monitor `master` again from scratch (SENTINEL REMOVE + MONITOR + SET), with the
    settings of the side that named it."""

    node: str
    master: str  # "ip:port"
    quorum: int
    down_after_ms: int
    failover_timeout_ms: int
    parallel_syncs: int
    reason: str


@dataclass(frozen=True, slots=True)
class FenceRecord:
    """A fence carried out (kept in the heal state): when, the master the node was made a replica of, and
    whether Redis took it."""

    node: str
    new_master: str
    at: float
    ok: bool


@dataclass(frozen=True, slots=True)
class ConfirmedMaster:
    """The master a Sentinel side able to fail over names, confirmed by its own agent."""

    address: str
    node: str
    side: tuple[str, ...]  # the side's Sentinels (node names)
    quorum: int
    down_after_ms: int
    failover_timeout_ms: int
    parallel_syncs: int
    leader_promoting: str | None = None  # named through this Sentinel's failover in progress, not yet by all


@dataclass(frozen=True, slots=True)
class FenceHold:
    what: str
    reason: str


def _side_label(side: tuple[str, ...]) -> str:
    return ", ".join(side)


def promoted_replica(sentinel_view: SentinelMasterView) -> str | None:
    """The replica a Sentinel leading a failover has promoted (REPLICAOF NO ONE sent: flagged "promoted" in
    its SENTINEL REPLICAS) while its failover is in progress; None otherwise. Only the leader flags one,
    and it has won the votes of a majority to get there."""
    if not sentinel_view.failover_in_progress:
        return None
    promoted = {p.address for p in sentinel_view.replicas if "promoted" in p.flags}
    return promoted.pop() if len(promoted) == 1 else None


def _side_names(leader: str, members: tuple[str, ...], by_name: Mapping[str, SentinelMasterView]) -> str | None:
    """The master a side names: every member names it and none flags it down; or, before the side's
    Sentinels have heard the news (a hello period, up to 2 s after the promotion), its leader (`leader`, the
    Sentinel whose side this is) has a failover in progress towards a promoted replica M' and every other
    member names either M' (not flagging it down) or the old master flagged down (s_down or o_down)."""
    member_views = [by_name[m] for m in members]
    named = {v.master_address for v in member_views}
    if len(named) == 1 and not any(v.s_down or v.o_down for v in member_views):
        return named.pop()
    own = by_name[leader]
    new, old = promoted_replica(own), own.master_address
    if new is None or old is None or new == old:
        return None
    for v in member_views:
        if v.master_address == new and not (v.s_down or v.o_down):
            continue
        if v.master_address == old and (v.s_down or v.o_down):
            continue
        return None
    return new


def confirmed_master(view: ClusterView) -> ConfirmedMaster | None:
    """The master M' that a side of Sentinels able to authorize a failover names (`_side_names`: unanimously,
    or through its leader's failover in progress), when M''s own fresh report says role master; None
    otherwise, and None when two such sides name different masters (ambiguous: nothing is fenced)."""
    views = tuple(sorted(view.sentinel_views(), key=lambda nv: nv[0].name))
    if not views:
        return None
    by_name = {n.name: v for n, v in views}
    quorum = max((v.quorum for _, v in views if v.quorum), default=0)
    needed = max(quorum, view.expected_sentinels // 2 + 1)
    found: list[ConfirmedMaster] = []
    for leader, members in sentinel_sides(view, views):
        if len(members) < needed:
            continue
        address = _side_names(leader, members, by_name)
        unanimous = {by_name[m].master_address for m in members} == {address}
        node = view.node_at(address) if address else None
        if address is None or node is None or not view.redis_up(node) or node.report.redis.role != "master":
            continue
        member_views = [by_name[m] for m in members]
        found.append(ConfirmedMaster(
            address, node.name, members,
            quorum=max((v.quorum for v in member_views if v.quorum), default=defaults.majority_quorum(
                view.expected_sentinels)),
            down_after_ms=next((v.down_after_ms for v in member_views if v.down_after_ms), defaults.DOWN_AFTER_MS),
            failover_timeout_ms=next((v.failover_timeout_ms for v in member_views if v.failover_timeout_ms),
                                     defaults.FAILOVER_TIMEOUT_MS),
            parallel_syncs=next((v.parallel_syncs for v in member_views if v.parallel_syncs),
                                defaults.PARALLEL_SYNCS),
            leader_promoting=None if unanimous else leader,
        ))
    if len({c.address for c in found}) != 1:
        return None
    return max(found, key=lambda c: (len(c.side), c.side))


def _acting_master(view: ClusterView, node: NodeState, confirmed: ConfirmedMaster) -> bool:
    redis = node.report.redis
    return (node.name != confirmed.node and node.report.identity.redis_address != confirmed.address
            and view.redis_up(node) and redis.role == "master")


def _newer_than_the_side(view: ClusterView, node: NodeState, confirmed: ConfirmedMaster) -> str:
    """Why `node`'s role master may be newer than what the side said (then it is not fenced), or "".

    Each report is a snapshot of its own moment: a replica that a failover has just promoted reports role
    master (and is seen at once: a role change wakes the controller) while the side's Sentinels' latest
    reports, a second old, still name the old master healthy. Fencing it then would make the new master a
    replica of the old one and undo the failover. So a node that a Sentinel's failover in progress has
    promoted is never fenced, nor one that a member of the side lists as a healthy replica: its word
    "master" is newer than theirs; their next reports settle it. A replica entry whose Sentinel has never
    heard from it (no run id: a Sentinel that has just switched to the new master lists the old one as its
    replica at once, unreached, and flags it down only down-after later) is not such a word: it would hold
    every fence that comes after the side's switch-master, and the agents' urgent reports bring that
    switch to the controller within a fraction of a second (a bench run held its fence to the end of the
    partition, 23 s without an acknowledged write)."""
    address = node.report.identity.redis_address
    for other, sentinel_view in view.sentinel_views():
        if promoted_replica(sentinel_view) == address:
            return (f"{node.name} is the replica the failover in progress on {other.name}'s Sentinel promoted: "
                    "never fenced")
    by_name = dict((n.name, v) for n, v in view.sentinel_views())
    listing = sorted(name for name in confirmed.side if name in by_name and any(
        p.address == address and not p.down and p.run_id is not None for p in by_name[name].replicas))
    if listing:
        return (f"the Sentinels on {_side_label(tuple(listing))} last listed {node.name} as a healthy replica of "
                f"{confirmed.address}: its role master is newer than their reports (a promotion they have not "
                "reported yet?); waiting for their next reports")
    return ""


def plan_fences(
    view: ClusterView, last_action_at: Mapping[str, float], paused_nodes: tuple[str, ...] = ()
) -> tuple[tuple[Fence | FollowMaster | RepointSentinel, ...], tuple[FenceHold, ...]]:
    """The fences and Sentinel re-points the view calls for, and what is held back. A node acted on is not
    acted on again until a report of it received after that action shows it still needs it."""
    confirmed = confirmed_master(view)
    if confirmed is None:
        return (), ()
    actions: list[Fence | FollowMaster | RepointSentinel] = []
    held: list[FenceHold] = []
    side = _side_label(confirmed.side)
    names_it = "name" if confirmed.leader_promoting is None else \
        f"are failing over (their leader {confirmed.leader_promoting} promoted it) to"

    def waiting(node: NodeState, what: str) -> bool:
        last = last_action_at.get(node.name)
        if node.name in paused_nodes:
            held.append(FenceHold(what, f"{node.name} is paused for maintenance: it is not fenced (an operator "
                                        "must demote it)"))
            return True
        if last is not None and node.received_at <= last:
            held.append(FenceHold(what, f"acted on {node.name} {view.now - last:.1f} s ago: waiting for its "
                                        "next report"))
            return True
        return False

    confirming = view.node(confirmed.node)
    last = last_action_at.get(confirmed.node)
    if confirming is not None and last is not None and confirming.received_at <= last:
        return (), (FenceHold("fence", f"acted on {confirmed.node} {view.now - last:.1f} s ago: its word that it "
                                       "is master is older than that; waiting for its next report"),)
    fenced: set[str] = set()
    for node in view.fresh_nodes():
        if not _acting_master(view, node, confirmed):
            continue
        what = f"fence {node.name}"
        newer = _newer_than_the_side(view, node, confirmed)
        if newer:
            held.append(FenceHold(what, newer))
            continue
        fenced.add(node.report.identity.redis_address)
        if waiting(node, what):
            continue
        actions.append(Fence(node.name, confirmed.address,
                             f"the Sentinels of {side} (able to fail over) {names_it} {confirmed.address} and "
                             f"{confirmed.node}'s own agent confirms it is master, while "
                             f"{node.name} ({node.report.identity.redis_address}) still says role master: "
                             "demoted to a replica, its clients disconnected"))
    # the other replicas still following a node fenced now follow the new master at once (Sentinel's leader
    # would send them the same REPLICAOF up to a second later; Redis answers a second one "already connected")
    for node in view.fresh_nodes():
        redis = node.report.redis
        if (node.name == confirmed.node or not view.redis_up(node) or redis.role != "replica"
                or redis.master_address not in fenced):
            continue
        what = f"REPLICAOF {confirmed.address} on {node.name}"
        if waiting(node, what):
            continue
        actions.append(FollowMaster(node.name, confirmed.address,
                                    f"{node.name} still follows {redis.master_address}, fenced now: made a replica "
                                    f"of {confirmed.address} (what the Sentinels of {side} send it next)"))
    for node, sentinel_view in view.sentinel_views():
        named = sentinel_view.master_address
        if node.name in confirmed.side or named is None or named == confirmed.address:
            continue
        target = view.node_at(named)
        replaced = named in fenced or (target is not None and view.redis_up(target)
                                       and target.report.redis.role == "replica")
        if not replaced:
            continue
        what = f"re-point the Sentinel on {node.name}"
        if any(a.node == node.name for a in actions):
            pass  # fenced in this same plan: its Sentinel goes with it
        elif waiting(node, what):
            continue
        actions.append(RepointSentinel(
            node.name, confirmed.address, confirmed.quorum, confirmed.down_after_ms, confirmed.failover_timeout_ms,
            confirmed.parallel_syncs,
            f"the Sentinel on {node.name}, cut off from {side}, still names {named}, which is no master any more: "
            f"a client asking it first would be sent there; re-pointed at {confirmed.address}"))
    return tuple(actions), tuple(held)


def check_fences(cluster: str, records: tuple[FenceRecord, ...], now: float, notice_s: float) -> tuple[Finding, ...]:
    """NODE_FENCED (warning) for each node fenced in the last `notice_s`: the alert that says what was done,
    to whom, and what it cost (the writes the node accepted since it was cut off are not on the new master)."""
    latest = {r.node: r for r in records if now - r.at <= notice_s}
    out = []
    for record in sorted(latest.values(), key=lambda r: r.node):
        if record.ok:
            done = (f"demoted to a replica of {record.new_master} {now - record.at:.0f} s ago; its clients were "
                    "disconnected and rediscover the master through Sentinel")
        else:
            done = (f"demoting it to a replica of {record.new_master} failed {now - record.at:.0f} s ago "
                    "(`redwarden history` says why)")
        out.append(Finding(
            Code.NODE_FENCED, Severity.WARNING, cluster, "node", record.node,
            f"{record.node} still acted as master after the Sentinel majority promoted {record.new_master}: {done}. "
            "Writes it accepted after it was cut off from its replicas are not on the new master (with WAIT 1, "
            "none of them was acknowledged).",
            evidence=(("new_master", record.new_master), ("fenced_at", record.at), ("ok", record.ok))))
    return tuple(out)
