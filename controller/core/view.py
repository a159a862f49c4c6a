"""The controller's picture of a cluster: the latest report of each node, and what follows from them.

Layer: pure core. A `ClusterView` is an immutable snapshot taken at `now`; its helpers derive who each
node and each Sentinel says is master, which reports are fresh, and the replication lag in bytes. No
I/O and no clock reads: `now` is part of the snapshot.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from protocol.report import Report, SentinelMasterView


@dataclass(frozen=True, slots=True)
class NodeState:
    """A node's latest report and when the controller received it (controller clock)."""

    report: Report
    received_at: float

    @property
    def name(self) -> str:
        return self.report.identity.node


SentinelWord = tuple[str, str | None, bool, bool, bool, tuple[str, ...]]


def vitals(report: Report) -> tuple[bool, bool, str | None, bool, bool, tuple[SentinelWord, ...]]:
    """What a node's report says about life and roles: redis reachable, its process alive, its role,
    Sentinel reachable, its process alive, and its Sentinel's word on each master (the address it names,
    s_down, o_down, failover in progress, the replicas it flags promoted). A change in these is worth a
    watch cycle at once: a fence waits on the promoted replica's role and on the Sentinel leader's failover,
    and the agent pushes either at once (agent/urgent.py)."""
    host = report.host
    words = tuple((m.name, m.master_address, m.s_down, m.o_down, m.failover_in_progress,
                   tuple(sorted(p.address for p in m.replicas if "promoted" in p.flags)))
                  for m in report.sentinel.masters)
    return (report.redis.reachable, host.redis_process.alive, report.redis.role, report.sentinel.reachable,
            host.sentinel_process.alive, words)


def vitals_changed(before: NodeState | None, after: Report) -> bool:
    return before is None or vitals(before.report) != vitals(after)


@dataclass(frozen=True, slots=True)
class ClusterView:
    name: str
    master_name: str
    expected_nodes: int
    report_interval_s: float
    stale_after_s: float
    now: float
    nodes: tuple[NodeState, ...]  # sorted by node name

    # -- freshness -------------------------------------------------------------------------------
    def age_s(self, node: NodeState) -> float:
        return max(0.0, self.now - node.received_at)

    def is_fresh(self, node: NodeState) -> bool:
        return self.age_s(node) <= self.stale_after_s

    def fresh_nodes(self) -> tuple[NodeState, ...]:
        return tuple(n for n in self.nodes if self.is_fresh(n))

    def node(self, name: str) -> NodeState | None:
        for n in self.nodes:
            if n.name == name:
                return n
        return None

    def node_at(self, redis_address: str) -> NodeState | None:
        for n in self.nodes:
            if n.report.identity.redis_address == redis_address:
                return n
        return None

    # -- what the nodes say ----------------------------------------------------------------------
    def redis_up(self, node: NodeState) -> bool:
        return self.is_fresh(node) and node.report.redis.reachable

    def sentinel_up(self, node: NodeState) -> bool:
        return self.is_fresh(node) and node.report.sentinel.reachable

    def self_declared_masters(self) -> tuple[str, ...]:
        """Redis addresses of fresh nodes whose own Redis says role master."""
        return tuple(
            n.report.identity.redis_address
            for n in self.fresh_nodes()
            if n.report.redis.reachable and n.report.redis.role == "master"
        )

    def sentinel_views(self) -> tuple[tuple[NodeState, SentinelMasterView], ...]:
        """(node, its Sentinel's view of this cluster's master) for every fresh, reachable Sentinel."""
        out = []
        for n in self.fresh_nodes():
            if n.report.sentinel.reachable:
                view = n.report.sentinel.master(self.master_name)
                if view is not None:
                    out.append((n, view))
        return tuple(out)

    def sentinel_votes(self) -> Counter[str]:
        """How many reachable Sentinels name each address as master."""
        return Counter(v.master_address for _, v in self.sentinel_views() if v.master_address)

    def sentinels_agree(self) -> bool:
        views = self.sentinel_views()
        return bool(views) and len({v.master_address for _, v in views}) == 1

    def master_address(self) -> str | None:
        """The master as the Sentinels name it (a strict majority of the reachable ones); failing any
        reachable Sentinel, the one node that says it is master; otherwise None (undecided)."""
        views = self.sentinel_views()
        if views:
            votes = self.sentinel_votes().most_common(1)
            if not votes:
                return None
            address, count = votes[0]
            return address if count * 2 > len(views) else None
        masters = self.self_declared_masters()
        return masters[0] if len(masters) == 1 else None

    def master_node(self) -> NodeState | None:
        address = self.master_address()
        return self.node_at(address) if address else None

    def silent_redis(self, node: NodeState) -> tuple[str, str]:
        """For a node whose agent is silent, what the other vantage points say of its Redis: ("down", why)
        when a majority of the expected Sentinels flag it down or the (fresh) master no longer lists it as
        a connected replica; ("up", why) when the master lists it online; ("unknown", why) otherwise. A silent
        agent alone is never evidence that its Redis is down (a network blip, a crashed agent)."""
        address = node.report.identity.redis_address
        views = [(n, v) for n, v in self.sentinel_views() if n.name != node.name]
        flagged = sorted(n.name for n, v in views if any(p.address == address and p.down for p in v.replicas))
        if flagged and len(flagged) * 2 > self.expected_sentinels:
            return "down", f"{len(flagged)} of {self.expected_sentinels} Sentinels flag it down ({', '.join(flagged)})"
        master = self.master_node()
        if master is None or master.name == node.name or not self.is_fresh(master):
            return "unknown", "no fresh master to ask and no Sentinel majority flagging it down"
        listed = [r for r in master.report.redis.connected_replicas if r.address == address]
        if any(r.state == "online" for r in listed):
            return "up", f"the master {master.name} lists it as an online replica"
        return "down", f"the master {master.name} no longer lists it as a connected replica"

    def lag_bytes(self, node: NodeState) -> int | None:
        """How far a replica is behind, from the master's own report (offsets from one INFO)."""
        redis = node.report.redis
        if not redis.reachable or redis.role != "replica":
            return None
        master = self.master_node()
        if (
            master is not None
            and self.redis_up(master)  # a stale master report says nothing about now
            and master.report.redis.master_repl_offset is not None
        ):
            for replica in master.report.redis.connected_replicas:
                if replica.address == node.report.identity.redis_address:
                    return max(0, master.report.redis.master_repl_offset - replica.offset)
        return None

    @property
    def expected_sentinels(self) -> int:
        """One Sentinel per node: the cluster's size, or more while more nodes report (a replacement
        joining before the node it replaces is forgotten counts; a silent one does not add)."""
        return max(self.expected_nodes, len(self.fresh_nodes()))


def node_status(view: ClusterView, node: NodeState) -> dict[str, Any]:
    report = node.report
    redis = report.redis
    sentinel_view = report.sentinel.master(view.master_name) if report.sentinel.reachable else None
    fresh = view.is_fresh(node)
    return {
        "name": node.name,
        "address": report.identity.redis_address,
        "role": redis.role if fresh and redis.reachable else None,
        "redis_up": view.redis_up(node),
        "sentinel_up": view.sentinel_up(node),
        "lag_bytes": view.lag_bytes(node) if fresh else None,
        "report_age_s": round(view.age_s(node), 3),
        "stale": not fresh,
        "report_seq": report.seq,
        "link": redis.master_link_status if fresh and redis.role == "replica" else None,
        "master_of_replica": redis.master_address if fresh and redis.role == "replica" else None,
        "sentinel_master": sentinel_view.master_address if fresh and sentinel_view else None,
        "sentinel_known_replicas": len(sentinel_view.replicas) if fresh and sentinel_view else None,
        "sentinel_known_sentinels": len(sentinel_view.sentinels) if fresh and sentinel_view else None,
        "droplet_id": report.identity.droplet_id,
        "sentinel_address": report.identity.sentinel_address,
        "redis_error": redis.error if fresh and not redis.reachable else None,
        "sentinel_error": report.sentinel.error if fresh and not report.sentinel.reachable else None,
        # its own agent holds its writes paused: a master alone for down-after (agent/fence.py); None: not
        # known (stale, down, an older agent, or the rule off)
        "fenced_locally": redis.fenced_locally if fresh and redis.reachable else None,
    }


def cluster_status(view: ClusterView) -> dict[str, Any]:
    """One cluster in the `redwarden status --json` contract (extend, don't rename)."""
    views = view.sentinel_views()
    return {
        "name": view.name,
        "master": view.master_address(),
        "nodes": [node_status(view, n) for n in view.nodes],
        "sentinels": {
            "expected": view.expected_sentinels,
            "reachable": len(views),
            "agree": view.sentinels_agree(),
            "votes": dict(view.sentinel_votes()),
            # every node's Sentinel in the order the controller walks them (its fast failover asks the last
            # reachable one that is not the master's): a drill's writer lists them in this order and others
            "order": [n.report.identity.sentinel_address for n in view.nodes],
        },
    }
