"""Health checks: from one snapshot of a cluster, the findings that describe what is wrong with it.

Layer: pure core. `check(view, policy, now)` is a deterministic function of its arguments: no I/O, no
clock, no logging, and odd data (missing fields, contradictory flags) is skipped or becomes a finding,
never an exception. It works in two steps: `assess` derives the facts every check needs once (who is
master, which Sentinels are reachable, whether the topology is clear), then small `check_*` functions turn
those facts into findings.

Rules that decide between overlapping codes (orchestrator-style: a master is only *dead* when vantage
points agree, and an ambiguous picture is reported, never guessed through):

* Only what fresh reports say counts. A silent agent yields AGENT_SILENT and nothing derived from its
  old data; when no agent at all is fresh, AGENT_SILENT is the only finding.
* Master picture, in precedence order: SPLIT_BRAIN (two fresh nodes say role master, or Sentinels name
  different masters under different config epochs) > SENTINEL_DISAGREEMENT (Sentinels name different
  masters otherwise; critical when no majority names one) > NO_MASTER (no master can be determined, or
  the one the Sentinels name says it is a replica). While a Sentinel reports a failover in progress,
  FAILOVER_IN_PROGRESS replaces NO_MASTER: Sentinel is working on it.
* MASTER_DOWN when the master's redis-server process is gone, when a majority of reachable Sentinels
  flag it o_down, or when its own agent cannot reach it and either a Sentinel flags it s_down or no
  Sentinel is reachable to contradict. An agent that cannot reach a master whose process is alive while
  every reachable Sentinel still sees it is a vantage-point disagreement: MASTER_UNREACHABLE (critical).
  Sentinels that merely flag s_down are MASTER_UNREACHABLE too, and so is a silent master agent when a
  Sentinel flags it down; a silent master agent whose master the Sentinels see up is AGENT_SILENT only.
* Replica relationships (REPLICA_WRONG_MASTER, REPLICA_LINK_DOWN, REPLICA_LAG_HIGH, REDUNDANCY_DEGRADED)
  are judged only when the topology is clear: one master determined, no split brain, no failover in
  progress, and the master not down (its replicas' links being down is part of MASTER_DOWN). A replica
  following the wrong master gets REPLICA_WRONG_MASTER only, not also link or lag findings.
  REPLICA_DOWN (the node's own process) needs only a determined master, to know the node is a replica.
* REPLICA_DOWN names the cause, REDUNDANCY_DEGRADED the consequence for the cluster; both are reported.
  A replica whose agent is silent counts as in sync when the master's fresh report lists it online and
  current: the master is a vantage point too. With the master's agent silent as well nothing says
  either way, and REDUNDANCY_DEGRADED counts only what is known out of sync.
* Quorum counts only Sentinels confirmed reachable by a fresh report; silent ones are named as silent in
  the message, not as down. Reachable is not enough: a failover is authorized by one Sentinel with the
  peers it can talk to (its *side*: itself and the reachable Sentinels it lists without s_down,
  o_down or disconnected and that list it back; a Sentinel whose CKQUORUM refuses has no peers).
  QUORUM_LOST means the fresh reports prove that no side reaches what a failover needs (the larger of
  the quorum and a majority of the expected Sentinels), whatever the controller itself reaches: a
  Sentinel on a silent node is unknown, not down, and counts as a possible member of every side whose
  members do not flag it down. QUORUM_AT_RISK that the largest confirmed side would fall short after
  losing one more, or that no side is confirmed while the silent ones could complete one (the
  controller cut off from the nodes: agents go silent one after another).
* A Sentinel cut off from its peers while another side can still fail over is SENTINEL_ISOLATED (a
  warning about that Sentinel, not a lost quorum); so is a minority of Sentinels flagging a master down
  that its own agent and the other Sentinels reach (not MASTER_UNREACHABLE: the master is fine).
* SENTINEL_STALE_ENTRIES is judged only when every expected node has reported (an unknown address may
  be a node whose agent never reported), and a Sentinel with stale entries gets no
  SENTINEL_COUNT_MISMATCH: its counts are off because of them, and SENTINEL RESET fixes both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Literal

from controller.core.findings import Code, Evidence, EvidenceValue, Finding, Severity, SubjectKind
from controller.core.policy import MIB, Policy
from controller.core.view import ClusterView, NodeState
from protocol.report import ConnectedReplica, RedisHealth, SentinelMasterView, SentinelPeer

Health = Literal["healthy", "degraded", "critical"]

SentinelView = tuple[NodeState, SentinelMasterView]


# -- facts -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MasterAssessment:
    """How the vantage points see the determined master."""

    down_reasons: tuple[str, ...] = ()
    unreachable_reasons: tuple[str, ...] = ()
    unreachable_critical: bool = False

    @property
    def down(self) -> bool:
        return bool(self.down_reasons)


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything the checks derive from a view, computed once per `check`."""

    view: ClusterView
    policy: Policy
    fresh: tuple[NodeState, ...]  # sorted by name
    sentinel_views: tuple[SentinelView, ...]  # fresh, reachable Sentinels monitoring the master name
    expected_total: int  # nodes, and so Sentinels, the cluster should have
    master_address: str | None
    master_node: NodeState | None
    declared_masters: tuple[NodeState, ...]  # fresh nodes whose redis says role master
    named_masters: tuple[tuple[str, tuple[str, ...]], ...]  # (address, names of Sentinels naming it)
    epochs_split: bool  # Sentinels naming different masters do so under different config epochs
    failover_sentinels: tuple[str, ...]
    master_role: str | None  # the determined master's own idea of its role, when fresh and reachable
    master_replicas: tuple[tuple[str, ConnectedReplica], ...]  # from the master's fresh report
    master_offset: int | None
    master: MasterAssessment
    sides: tuple[tuple[str, tuple[str, ...]], ...]  # (Sentinel, its side: itself and the peers it talks with)
    possible_side: int  # the largest side Sentinels without a fresh report could complete (`possible_side`)
    quorum: int  # the most demanding quorum of the reachable Sentinels, or the policy's, or a majority
    needed: int  # Sentinels a failover needs: the larger of `quorum` and a majority of the expected ones

    @property
    def cluster(self) -> str:
        return self.view.name

    @property
    def majority(self) -> int:
        return self.expected_total // 2 + 1

    def authorizing_sides(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """The sides that can authorize a failover (largest first, then by name)."""
        able = [(name, members) for name, members in self.sides if len(members) >= self.needed]
        return tuple(sorted(able, key=lambda side: (-len(side[1]), side[0])))

    def largest_side(self) -> tuple[str, ...]:
        """The members of the largest side (first by name among equals); empty with no reachable Sentinel."""
        if not self.sides:
            return ()
        return min((members for _, members in self.sides), key=lambda m: (-len(m), m))

    @property
    def split_brain(self) -> bool:
        return len(self.declared_masters) >= 2 or self.epochs_split

    @property
    def disagreement(self) -> bool:
        return len(self.named_masters) >= 2 and not self.split_brain

    @property
    def role_mismatch(self) -> bool:
        return self.master_role is not None and self.master_role != "master"

    @property
    def replication_clear(self) -> bool:
        """Whether replica relationships can be judged against one master without guessing."""
        return (
            self.master_address is not None
            and not self.split_brain
            and not self.failover_sentinels
            and not self.role_mismatch
            and not self.master.down
        )

    def replica_of_master(self, address: str) -> ConnectedReplica | None:
        for replica_address, replica in self.master_replicas:
            if replica_address == address:
                return replica
        return None

    def replica_nodes(self) -> tuple[NodeState, ...]:
        """Known nodes other than the master (all sorted by name); empty while no master is determined."""
        if self.master_address is None:
            return ()
        return tuple(n for n in self.view.nodes if n.report.identity.redis_address != self.master_address)


def _by_name(nodes: Iterable[NodeState]) -> tuple[NodeState, ...]:
    return tuple(sorted(nodes, key=lambda n: (n.name, n.report.identity.redis_address, n.received_at, n.report.seq)))


def _label(node: NodeState) -> str:
    return f"{node.name} ({node.report.identity.redis_address})"


def _redis_down_reasons(node: NodeState) -> tuple[str, ...]:
    """Why a node's own agent says its redis is down (empty: it is up). Only meaningful for fresh reports."""
    report = node.report
    reasons = []
    if not report.redis.reachable:
        reasons.append(f"its agent cannot reach redis ({report.redis.error or 'no error given'})")
    # An unreachable host collector leaves `alive` at its default False: that says nothing about the process.
    if report.host.reachable and not report.host.redis_process.alive:
        reasons.append("the redis-server process is not running")
    return tuple(reasons)


def _assess_master(view: ClusterView, views: tuple[SentinelView, ...], address: str) -> MasterAssessment:
    node = view.node_at(address)
    on_master = [(n, v) for n, v in views if v.master_address == address]
    o_down = sorted(n.name for n, v in on_master if v.o_down)
    s_down = sorted(n.name for n, v in on_master if v.s_down or v.o_down)
    reachable = len(views)
    down: list[str] = []
    unreachable: list[str] = []
    agent_reaches = node is not None and view.is_fresh(node) and node.report.redis.reachable
    # A minority flagging down a master that its own agent and the other Sentinels reach says something
    # about those Sentinels (SENTINEL_ISOLATED), not about the master.
    if s_down and agent_reaches and len(s_down) * 2 <= reachable and not o_down:
        s_down = []
    critical = bool(s_down)
    agent_cannot_reach = False
    if node is None:
        unreachable.append("no agent reports from that address")
    elif not view.is_fresh(node):
        # The Sentinels naming it are vantage points that reach it: a silent agent alone says something
        # about the agent or the controller's own network (AGENT_SILENT), nothing about the master.
        if s_down:
            unreachable.append(f"its agent has been silent for {view.age_s(node):.1f} s")
    else:
        if node.report.host.reachable and not node.report.host.redis_process.alive:
            down.append("the redis-server process is not running")
        if not node.report.redis.reachable:
            agent_cannot_reach = True
            critical = True
            reason = f"its agent cannot reach redis ({node.report.redis.error or 'no error given'})"
            if s_down or reachable == 0 or down:
                down.append(reason)
            else:
                unreachable.append(f"{reason} but its process is alive and no reachable Sentinel flags it down")
    if o_down and len(o_down) * 2 > reachable:
        down.append(f"{len(o_down)} of {reachable} reachable Sentinels flag it o_down ({', '.join(o_down)})")
    elif s_down:
        text = f"{len(s_down)} of {reachable} reachable Sentinels flag it down ({', '.join(s_down)})"
        if agent_cannot_reach or down:
            down.append(text)  # corroborates the agent
        else:
            unreachable.append(text)  # the master's own agent still reaches it: only some vantage points fail
    if down:
        return MasterAssessment(down_reasons=tuple(down))
    return MasterAssessment(unreachable_reasons=tuple(unreachable), unreachable_critical=critical)


def sentinel_sides(view: ClusterView, views: tuple[SentinelView, ...]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Each reachable Sentinel's side: itself and the reachable Sentinels it lists as usable (no s_down,
    o_down or disconnected flag) that list it back. A Sentinel whose CKQUORUM refuses says it has no usable
    peer; one whose SENTINELS reply failed (an empty list while it counts other Sentinels) is taken to
    see every reachable peer, so that missing data never looks like a partition."""
    reachable = {node.name for node, _ in views}
    by_address = {node.report.identity.sentinel_address: node.name for node, _ in views}
    sees: dict[str, set[str]] = {}
    for node, sentinel_view in views:
        if sentinel_view.ckquorum_ok is False:
            sees[node.name] = set()
        elif not sentinel_view.sentinels and (sentinel_view.num_other_sentinels or 0) > 0:
            sees[node.name] = reachable - {node.name}
        else:
            sees[node.name] = {
                by_address[p.address] for p in sentinel_view.sentinels if not p.down and p.address in by_address
            } - {node.name}
    return tuple(
        (name, tuple(sorted({name} | {peer for peer in sees[name] if name in sees[peer]})))
        for name in sorted(sees)
    )


def _usable_addresses(sentinel_view: SentinelMasterView) -> frozenset[str] | None:
    """The Sentinel addresses a Sentinel lists without a down flag; None for "every one" (its SENTINELS reply
    failed: the benefit of the doubt, as in `sentinel_sides`); empty when its CKQUORUM refuses."""
    if sentinel_view.ckquorum_ok is False:
        return frozenset()
    if not sentinel_view.sentinels and (sentinel_view.num_other_sentinels or 0) > 0:
        return None
    return frozenset(p.address for p in sentinel_view.sentinels if not p.down)


def possible_side(view: ClusterView, views: tuple[SentinelView, ...]) -> int:
    """The largest side that could exist if every Sentinel no fresh report speaks for (on a silent agent's
    node, or a node never heard from) were up and talked with every Sentinel that does not flag it down.

    The controller's own blindness is no evidence about those Sentinels: only what the fresh reports say
    (a reachable Sentinel flags a peer down, refuses CKQUORUM, or the node's own agent finds its Sentinel
    down) narrows what they could do. With no unknown Sentinel this is the largest confirmed side."""
    sides = dict(sentinel_sides(view, views))
    largest = max((len(members) for members in sides.values()), default=0)
    fresh = view.fresh_nodes()
    slots = max(0, view.expected_sentinels - len(fresh))  # Sentinels without a fresh report
    if slots == 0:
        return largest
    known = {n.report.identity.sentinel_address for n in view.nodes}
    stale = [n.report.identity.sentinel_address for n in view.nodes if not view.is_fresh(n)]
    never_seen = max(0, slots - len(stale))
    usable = {node.name: _usable_addresses(v) for node, v in views}

    def unknown_seen_by(name: str) -> int:
        addresses = usable[name]
        if addresses is None:
            return slots
        return min(slots, sum(1 for a in stale if a in addresses) + min(never_seen, len(addresses - known)))

    best = max((len(sides[name]) + unknown_seen_by(name) for name in sides), default=0)

    def lists(addresses: frozenset[str] | None, leader: str | None) -> bool:
        if addresses is None:
            return True
        return leader in addresses if leader is not None else bool(addresses - known)

    # a side led by an unknown Sentinel (None: one never heard from): the other unknowns, and each
    # reachable Sentinel that lists it usable
    leaders: list[str | None] = [*stale, *([None] if never_seen else [])]
    for leader in leaders:
        best = max(best, slots + sum(1 for addresses in usable.values() if lists(addresses, leader)))
    return max(best, largest)


def assess(view: ClusterView, policy: Policy) -> Facts:
    """Derive once what the checks share. `view.now` is the time everything is judged at."""
    fresh = _by_name(view.fresh_nodes())
    views = tuple(sorted(view.sentinel_views(), key=lambda nv: nv[0].name))
    master_address = view.master_address()
    master_node = view.node_at(master_address) if master_address else None
    declared = _by_name(n for n in fresh if n.report.redis.reachable and n.report.redis.role == "master")

    named: dict[str, list[str]] = {}
    epochs: dict[str, set[int]] = {}
    for node, sentinel_view in views:
        if sentinel_view.master_address:
            named.setdefault(sentinel_view.master_address, []).append(node.name)
            if sentinel_view.config_epoch is not None:
                epochs.setdefault(sentinel_view.master_address, set()).add(sentinel_view.config_epoch)
    all_epochs = {e for address_epochs in epochs.values() for e in address_epochs}
    epochs_split = len(named) >= 2 and len(epochs) >= 2 and len(all_epochs) >= 2

    master_role = None
    master_replicas: tuple[tuple[str, ConnectedReplica], ...] = ()
    master_offset = None
    if master_node is not None and view.is_fresh(master_node) and master_node.report.redis.reachable:
        redis = master_node.report.redis
        master_role = redis.role
        if redis.role == "master":
            master_replicas = tuple(
                sorted(((r.address, r) for r in redis.connected_replicas), key=lambda ar: (ar[0], ar[1].offset))
            )
            master_offset = redis.master_repl_offset

    total = view.expected_sentinels
    quorums = [v.quorum for _, v in views if v.quorum is not None and v.quorum > 0]
    # The most demanding quorum decides; without any, the policy's, or a majority.
    quorum = max(quorums) if quorums else policy.fallback_quorum or total // 2 + 1

    return Facts(
        view=view,
        policy=policy,
        fresh=fresh,
        sentinel_views=views,
        expected_total=view.expected_sentinels,
        master_address=master_address,
        master_node=master_node,
        declared_masters=declared,
        named_masters=tuple(sorted((a, tuple(sorted(ns))) for a, ns in named.items())),
        epochs_split=epochs_split,
        failover_sentinels=tuple(sorted(n.name for n, v in views if v.failover_in_progress)),
        master_role=master_role,
        master_replicas=master_replicas,
        master_offset=master_offset,
        master=_assess_master(view, views, master_address) if master_address else MasterAssessment(),
        sides=sentinel_sides(view, views),
        possible_side=possible_side(view, views),
        quorum=quorum,
        needed=max(quorum, total // 2 + 1),
    )


# -- building findings -----------------------------------------------------------------------------------


def _finding(
    facts: Facts,
    code: Code,
    severity: Severity,
    message: str,
    *,
    kind: SubjectKind = "cluster",
    name: str | None = None,
    qualifier: str = "",
    evidence: Iterable[tuple[str, EvidenceValue]] = (),
) -> Finding:
    return Finding(
        code=code,
        severity=severity,
        cluster=facts.cluster,
        subject_kind=kind,
        subject_name=facts.cluster if name is None else name,
        message=message,
        qualifier=qualifier,
        evidence=tuple(evidence),
    )


def _mib(n: int) -> str:
    return f"{n / MIB:.1f} MiB"


def _join(items: Iterable[str]) -> str:
    return ", ".join(items)


# -- agents ----------------------------------------------------------------------------------------------


def _corroboration(view: ClusterView, node: NodeState) -> str:
    verdict, why = view.silent_redis(node)
    return {"up": f"its Redis is corroborated healthy ({why})", "down": f"its Redis is corroborated down ({why})",
            }.get(verdict, f"its Redis is not corroborated either way ({why})")


def check_agents(facts: Facts) -> list[Finding]:
    """AGENT_SILENT: per node whose last report is too old, and once for expected nodes never heard from."""
    view, policy = facts.view, facts.policy
    silent_after_s = policy.agent_silent_after_s(view.report_interval_s)
    out = []
    for node in view.nodes:
        age_s = view.age_s(node)
        if view.is_fresh(node) and age_s <= silent_after_s:
            continue
        threshold_s = min(silent_after_s, view.stale_after_s)
        out.append(
            _finding(
                facts,
                Code.AGENT_SILENT,
                Severity.WARNING,
                f"No report from {_label(node)} for {age_s:.1f} s (silent after {threshold_s:.1f} s); "
                f"last seq {node.report.seq}; {_corroboration(view, node)}.",
                kind="node",
                name=node.name,
                evidence=(("age_s", round(age_s, 3)), ("silent_after_s", threshold_s), ("last_seq", node.report.seq)),
            )
        )
    missing = view.expected_nodes - len(view.nodes)
    if missing > 0:
        known = _join(sorted(n.name for n in view.nodes)) or "none"
        out.append(
            _finding(
                facts,
                Code.AGENT_SILENT,
                Severity.WARNING,
                f"{missing} of {view.expected_nodes} expected nodes have never reported (known: {known}).",
                evidence=(("missing_nodes", missing), ("expected_nodes", view.expected_nodes)),
            )
        )
    return out


# -- master and topology ---------------------------------------------------------------------------------


def _votes_text(facts: Facts) -> str:
    return "; ".join(f"{address} by {_join(names)}" for address, names in facts.named_masters) or "none"


def check_topology(facts: Facts) -> list[Finding]:
    """SPLIT_BRAIN, SENTINEL_DISAGREEMENT, NO_MASTER and FAILOVER_IN_PROGRESS, in that precedence."""
    out = []
    votes = _votes_text(facts)
    reachable = len(facts.sentinel_views)
    if facts.split_brain:
        reasons = []
        if len(facts.declared_masters) >= 2:
            reasons.append(f"nodes {_join(_label(n) for n in facts.declared_masters)} all report role master")
        if facts.epochs_split:
            epochs = sorted({v.config_epoch for _, v in facts.sentinel_views if v.config_epoch is not None})
            reasons.append(f"Sentinels name different masters under config epochs {_join(map(str, epochs))}")
        out.append(
            _finding(
                facts,
                Code.SPLIT_BRAIN,
                Severity.CRITICAL,
                f"Split brain: {'; '.join(reasons)} (Sentinel votes: {votes}).",
                evidence=(
                    ("self_declared_masters", _join(n.report.identity.redis_address for n in facts.declared_masters)),
                    ("sentinel_votes", votes),
                ),
            )
        )
    elif facts.disagreement:
        majority = facts.master_address is not None
        tail = f"the majority names {facts.master_address}" if majority else "no majority names a master"
        out.append(
            _finding(
                facts,
                Code.SENTINEL_DISAGREEMENT,
                Severity.WARNING if majority else Severity.CRITICAL,
                f"Reachable Sentinels name different masters ({votes}); {tail}.",
                qualifier="master_address",
                evidence=(("sentinel_votes", votes), ("reachable_sentinels", reachable)),
            )
        )
    if facts.failover_sentinels:
        out.append(
            _finding(
                facts,
                Code.FAILOVER_IN_PROGRESS,
                Severity.WARNING,
                f"Sentinel on {_join(facts.failover_sentinels)} reports a failover in progress for "
                f"{facts.view.master_name} (Sentinel votes: {votes}).",
                evidence=(("sentinels", _join(facts.failover_sentinels)), ("sentinel_votes", votes)),
            )
        )
    if facts.split_brain or facts.disagreement or facts.failover_sentinels:
        return out
    if facts.master_address is None:
        if reachable:
            why = f"no majority of the {reachable} reachable Sentinels names a master (votes: {votes})"
        else:
            why = "no Sentinel is reachable and no fresh node's redis reports role master"
        down = [_label(n) for n in facts.fresh if _redis_down_reasons(n)]
        if down:
            why += f"; redis is down on {_join(down)}"
        out.append(
            _finding(
                facts,
                Code.NO_MASTER,
                Severity.CRITICAL,
                f"No master for {facts.view.master_name}: {why}.",
                evidence=(("sentinel_votes", votes), ("reachable_sentinels", reachable)),
            )
        )
    elif facts.role_mismatch and not facts.master.down and facts.master_node is not None:
        redis = facts.master_node.report.redis
        of = f" of {redis.master_address}" if redis.master_address else ""
        out.append(
            _finding(
                facts,
                Code.NO_MASTER,
                Severity.CRITICAL,
                f"No writable master: Sentinels name {_label(facts.master_node)} as master but its redis reports "
                f"role {facts.master_role}{of}.",
                evidence=(
                    ("sentinel_master", facts.master_address),
                    ("reported_role", facts.master_role),
                    ("reported_master", redis.master_address),
                ),
            )
        )
    return out


def check_master(facts: Facts) -> list[Finding]:
    """MASTER_DOWN when the vantage points agree the determined master is dead, MASTER_UNREACHABLE when
    only some of them fail to see it."""
    if facts.master_address is None:
        return []
    node = facts.master_node
    who = _label(node) if node is not None else facts.master_address
    assessment = facts.master
    evidence: Evidence = (
        ("master", facts.master_address),
        ("master_node", node.name if node is not None else None),
        ("reachable_sentinels", len(facts.sentinel_views)),
    )
    if assessment.down:
        return [
            _finding(
                facts,
                Code.MASTER_DOWN,
                Severity.CRITICAL,
                f"Master {who} is down: {'; '.join(assessment.down_reasons)}.",
                evidence=(*evidence, ("reasons", "; ".join(assessment.down_reasons))),
            )
        ]
    if assessment.unreachable_reasons:
        return [
            _finding(
                facts,
                Code.MASTER_UNREACHABLE,
                Severity.CRITICAL if assessment.unreachable_critical else Severity.WARNING,
                f"Master {who} is unreachable from some vantage points: {'; '.join(assessment.unreachable_reasons)}.",
                evidence=(*evidence, ("reasons", "; ".join(assessment.unreachable_reasons))),
            )
        ]
    return []


# -- sentinels -------------------------------------------------------------------------------------------


def _side_text(facts: Facts, members: tuple[str, ...]) -> str:
    reachable = len(facts.sentinel_views)
    if reachable and len(members) == reachable:
        return f"all {reachable} reachable see each other"
    return f"the largest group that see each other has {len(members)} ({_join(members) or 'none'})"


def check_quorum(facts: Facts) -> list[Finding]:
    """QUORUM_LOST when the fresh reports prove that no side can authorize a failover: too few Sentinels
    are up, or they do not see each other (a partition, CKQUORUM refusals), even if every Sentinel on a
    silent node were up and talked with all that do not flag it down (`possible_side`). QUORUM_AT_RISK
    when the largest confirmed side would fall short after losing one more, or when no side is confirmed
    but the silent ones could complete one: the controller's own blindness (every agent going silent) is
    AGENT_SILENT, never a lost quorum."""
    total = facts.expected_total
    reachable = len(facts.sentinel_views)
    unknown = max(0, total - len(facts.fresh))  # on silent or never-seen nodes: maybe fine, not confirmed
    down = max(0, total - reachable - unknown)
    quorum, needed, majority = facts.quorum, facts.needed, facts.majority
    largest = facts.largest_side()
    counts = f"{reachable} of {total} Sentinels reachable ({down} down, {unknown} silent)"
    sides = _side_text(facts, largest)
    need = f"failover needs {needed} (quorum {quorum}, majority of {total} is {majority})"
    evidence: Evidence = (
        ("reachable_sentinels", reachable),
        ("expected_sentinels", total),
        ("down_sentinels", down),
        ("silent_sentinels", unknown),
        ("largest_side", len(largest)),
        ("largest_side_sentinels", _join(largest) or None),
        ("quorum", quorum),
        ("needed", needed),
    )
    refusals = [(n.name, v.ckquorum_message) for n, v in facts.sentinel_views if v.ckquorum_ok is False]
    possible = facts.possible_side
    if not facts.authorizing_sides() and unknown and possible >= needed:
        # Not lost, not confirmed: the Sentinels on silent agents could complete a side (the controller
        # cut off from the nodes looks like this until every agent is silent).
        return [
            _finding(
                facts,
                Code.QUORUM_AT_RISK,
                Severity.WARNING,
                f"Sentinel quorum not confirmed: {counts}; {sides}; {need}; with the {unknown} Sentinels on "
                f"silent agents a side of up to {possible} is possible, so it is not judged lost while they "
                "are silent.",
                evidence=(*evidence, ("possible_side", possible)),
            )
        ]
    if not facts.authorizing_sides():
        said = _join(f"Sentinel on {name} says {msg or 'no quorum'!r}" for name, msg in refusals)
        reasons = [f"{counts}; {sides}; {need}"] + ([said] if said else [])
        if unknown:
            reasons.append(f"even with the {unknown} Sentinels on silent agents up, a side of at most {possible} "
                           "(the reachable ones flag them down or see no peer)")
        return [
            _finding(
                facts,
                Code.QUORUM_LOST,
                Severity.CRITICAL,
                f"Sentinel quorum lost, no side can authorize a failover: {'; '.join(reasons)}.",
                evidence=(*evidence, ("ckquorum_refused_by", _join(n for n, _ in refusals) or None),
                          ("possible_side", possible)),
            )
        ]
    if len(largest) - 1 < needed:
        return [
            _finding(
                facts,
                Code.QUORUM_AT_RISK,
                Severity.WARNING,
                f"Sentinel quorum at risk: {counts}; {sides}; {need}, so losing one more would prevent failover.",
                evidence=evidence,
            )
        ]
    return []


def check_sentinel_isolation(facts: Facts) -> list[Finding]:
    """SENTINEL_ISOLATED per reachable Sentinel that belongs to no side able to authorize a failover while
    another side can (with none able, it is QUORUM_LOST's), or that flags the master down while the
    master's own agent and most Sentinels reach it."""
    able = facts.authorizing_sides()
    in_able = {name for _, members in able for name in members}
    by_address = {n.report.identity.sentinel_address: n.name for n, _ in facts.sentinel_views}
    master_up = (
        facts.master_node is not None
        and facts.view.is_fresh(facts.master_node)
        and facts.master_node.report.redis.reachable
        and not facts.master.down
    )
    reachable = len(facts.sentinel_views)
    on_master = [(n, v) for n, v in facts.sentinel_views if v.master_address == facts.master_address]
    flagging = sorted(n.name for n, v in on_master if v.s_down or v.o_down)
    # the same rule as `_assess_master`: a minority's s_down (no o_down anywhere) is about those Sentinels
    minority = bool(flagging) and len(flagging) * 2 <= reachable and not any(v.o_down for _, v in on_master)
    out = []
    for node, sentinel_view in facts.sentinel_views:
        reasons = []
        if able and node.name not in in_able:
            cut = sorted(by_address[p.address] for p in sentinel_view.sentinels if p.down and p.address in by_address)
            sides = dict(facts.sides)
            text = f"it talks with {len(sides[node.name]) - 1} of the {reachable - 1} other reachable Sentinels"
            if cut:
                text += f" (it flags {_join(cut)} down)"
            if sentinel_view.ckquorum_ok is False:
                text += f" and says {sentinel_view.ckquorum_message or 'no quorum'!r}"
            reasons.append(f"{text}, so it cannot take part in a failover; the side of {_join(able[0][1])} can")
        if master_up and minority and node.name in flagging:
            reasons.append(
                f"it flags the master {facts.master_address} down while the master's own agent and "
                f"{reachable - len(flagging)} of the {reachable} reachable Sentinels reach it"
            )
        if reasons:
            address = node.report.identity.sentinel_address
            out.append(
                _finding(
                    facts,
                    Code.SENTINEL_ISOLATED,
                    Severity.WARNING,
                    f"Sentinel on {node.name} ({address}) is cut off: {'; '.join(reasons)}.",
                    kind="sentinel",
                    name=node.name,
                    evidence=(
                        ("sentinel", address),
                        ("side", _join(dict(facts.sides)[node.name])),
                        ("needed", facts.needed),
                        ("flags_master_down", node.name in flagging),
                    ),
                )
            )
    return out


def check_sentinel_processes(facts: Facts) -> list[Finding]:
    """SENTINEL_DOWN per fresh node whose Sentinel is unreachable, not running, or not monitoring the master."""
    master_name = facts.view.master_name
    out = []
    for node in facts.fresh:
        sentinel = node.report.sentinel
        reasons = []
        if not sentinel.reachable:
            reasons.append(f"its agent cannot reach sentinel ({sentinel.error or 'no error given'})")
        elif sentinel.master(master_name) is None:
            reasons.append(f"it does not monitor {master_name}")
        if node.report.host.reachable and not node.report.host.sentinel_process.alive:
            reasons.append("the redis-sentinel process is not running")
        if reasons:
            address = node.report.identity.sentinel_address
            out.append(
                _finding(
                    facts,
                    Code.SENTINEL_DOWN,
                    Severity.WARNING,
                    f"Sentinel on {node.name} ({address}) is down: {'; '.join(reasons)}.",
                    kind="sentinel",
                    name=node.name,
                    evidence=(("sentinel", address), ("reasons", "; ".join(reasons))),
                )
            )
    return out


def _peer_text(peer: SentinelPeer) -> str:
    return f"{peer.address} [{','.join(peer.flags)}]" if peer.flags else peer.address


def _stale_entries(facts: Facts, sentinel_view: SentinelMasterView) -> tuple[SentinelPeer, ...]:
    nodes = facts.view.nodes
    redis_addresses = {n.report.identity.redis_address for n in nodes}
    sentinel_addresses = {n.report.identity.sentinel_address for n in nodes}
    return tuple(p for p in sentinel_view.replicas if p.address not in redis_addresses) + tuple(
        p for p in sentinel_view.sentinels if p.address not in sentinel_addresses
    )


def check_sentinel_tables(facts: Facts) -> list[Finding]:
    """SENTINEL_STALE_ENTRIES and SENTINEL_COUNT_MISMATCH, per reachable Sentinel."""
    view = facts.view
    all_known = len(view.nodes) >= view.expected_nodes
    want_sentinels = facts.expected_total - 1
    want_replicas = facts.expected_total - 1
    out = []
    for node, sentinel_view in facts.sentinel_views:
        stale = _stale_entries(facts, sentinel_view) if all_known else ()
        if stale:
            listed = _join(sorted(_peer_text(p) for p in stale))
            out.append(
                _finding(
                    facts,
                    Code.SENTINEL_STALE_ENTRIES,
                    Severity.WARNING,
                    f"Sentinel on {node.name} lists {len(stale)} entries that are no node of the cluster: {listed}; "
                    "it needs SENTINEL RESET.",
                    kind="sentinel",
                    name=node.name,
                    evidence=(("stale_entries", listed), ("stale_count", len(stale))),
                )
            )
            continue
        # num-other-sentinels is Sentinel's own count; the SENTINELS list is empty when that reply failed.
        known_sentinels = sentinel_view.num_other_sentinels
        if known_sentinels is None:
            known_sentinels = len(sentinel_view.sentinels)
        known_replicas = len(sentinel_view.replicas)
        wrong = []
        if known_sentinels != want_sentinels:
            wrong.append(f"{known_sentinels} other Sentinels (expected {want_sentinels})")
        if known_replicas != want_replicas:
            wrong.append(f"{known_replicas} replicas (expected {want_replicas})")
        if wrong:
            out.append(
                _finding(
                    facts,
                    Code.SENTINEL_COUNT_MISMATCH,
                    Severity.WARNING,
                    f"Sentinel on {node.name} knows {' and '.join(wrong)}.",
                    kind="sentinel",
                    name=node.name,
                    evidence=(
                        ("known_sentinels", known_sentinels),
                        ("expected_sentinels", want_sentinels),
                        ("known_replicas", known_replicas),
                        ("expected_replicas", want_replicas),
                    ),
                )
            )
    return out


# -- replicas --------------------------------------------------------------------------------------------


def _lag_problems(facts: Facts, node: NodeState) -> tuple[list[str], Evidence]:
    """Why a replica (fresh, or vouched for by the master) counts as lagging, with the numbers."""
    policy = facts.policy
    address = node.report.identity.redis_address
    problems = []
    entry = facts.replica_of_master(address)
    # The offsets `ClusterView.lag_bytes` uses, but only from a fresh master report (a silent master's old
    # numbers never count), and without re-deriving the master for every replica.
    lag_bytes = None
    if entry is not None and facts.master_offset is not None:
        lag_bytes = max(0, facts.master_offset - entry.offset)
    if facts.view.is_fresh(node):
        last_io_s = node.report.redis.master_last_io_s
        if last_io_s is not None and last_io_s > policy.replica_lag_high_s:
            problems.append(f"last I/O from the master {last_io_s} s ago")
    if lag_bytes is not None and lag_bytes > policy.replica_lag_high_bytes:
        problems.append(f"{lag_bytes} bytes ({_mib(lag_bytes)}) behind")
    if entry is not None and entry.lag_s > policy.replica_lag_high_s:
        problems.append(f"the master last heard from it {entry.lag_s} s ago")
    evidence: Evidence = (
        ("lag_bytes", lag_bytes),
        ("master_last_io_s", node.report.redis.master_last_io_s if facts.view.is_fresh(node) else None),
        ("master_side_lag_s", entry.lag_s if entry is not None else None),
    )
    return problems, evidence


def _in_sync(facts: Facts, node: NodeState) -> bool:
    """Up, linked to the right master and within the lag thresholds. A silent replica counts when the
    master vouches for it: the master is a vantage point too."""
    if facts.view.is_fresh(node):
        redis = node.report.redis
        return (
            not _redis_down_reasons(node)
            and redis.role == "replica"
            and redis.master_address == facts.master_address
            and redis.master_link_status == "up"
            and not _lag_problems(facts, node)[0]
        )
    entry = facts.replica_of_master(node.report.identity.redis_address)
    return entry is not None and entry.state == "online" and not _lag_problems(facts, node)[0]


def _vouched_unknown(facts: Facts, replica: ConnectedReplica) -> bool:
    """A replica at no known node's address that the master lists online and current."""
    policy = facts.policy
    lag_bytes = max(0, facts.master_offset - replica.offset) if facts.master_offset is not None else 0
    return (
        replica.state == "online"
        and replica.lag_s <= policy.replica_lag_high_s
        and lag_bytes <= policy.replica_lag_high_bytes
    )


def check_replicas(facts: Facts) -> list[Finding]:
    """REPLICA_DOWN, REPLICA_WRONG_MASTER, REPLICA_LINK_DOWN and REPLICA_LAG_HIGH, per replica node."""
    replicas = facts.replica_nodes()
    view = facts.view
    down = {n.name: _redis_down_reasons(n) for n in replicas if view.is_fresh(n)}
    up = sum(
        1
        for n in replicas
        if (view.is_fresh(n) and not down[n.name])
        or (not view.is_fresh(n) and facts.replica_of_master(n.report.identity.redis_address) is not None)
    )
    out = []
    for node in replicas:
        if not view.is_fresh(node):
            continue
        redis = node.report.redis
        if down[node.name]:
            reasons = "; ".join(down[node.name])
            out.append(
                _finding(
                    facts,
                    Code.REPLICA_DOWN,
                    Severity.CRITICAL if up == 0 else Severity.WARNING,
                    f"Replica {_label(node)} is down: {reasons}; {up} of {len(replicas)} replicas up.",
                    kind="node",
                    name=node.name,
                    evidence=(
                        ("replica", node.report.identity.redis_address),
                        ("reasons", reasons),
                        ("replicas_up", up),
                    ),
                )
            )
            continue
        if not facts.replication_clear or redis.role != "replica":
            continue  # a second self-declared master is SPLIT_BRAIN's; an unknown role says nothing
        address = node.report.identity.redis_address
        if redis.master_address != facts.master_address:
            out.append(
                _finding(
                    facts,
                    Code.REPLICA_WRONG_MASTER,
                    Severity.WARNING,
                    f"Replica {_label(node)} replicates from {redis.master_address} instead of the master "
                    f"{facts.master_address}.",
                    kind="node",
                    name=node.name,
                    evidence=(
                        ("replica", address),
                        ("its_master", redis.master_address),
                        ("master", facts.master_address),
                    ),
                )
            )
            continue
        if redis.master_link_status != "up":
            since = redis.master_link_down_since_s
            detail = f"down for {since} s" if since is not None else "down"
            if redis.master_sync_in_progress:
                detail += ", full sync in progress"
            out.append(
                _finding(
                    facts,
                    Code.REPLICA_LINK_DOWN,
                    Severity.WARNING,
                    f"Replica {_label(node)} has its link to master {facts.master_address} {detail} "
                    f"(status {redis.master_link_status!r}).",
                    kind="node",
                    name=node.name,
                    evidence=(
                        ("replica", address),
                        ("master_link_status", redis.master_link_status),
                        ("link_down_since_s", since),
                        ("sync_in_progress", redis.master_sync_in_progress),
                    ),
                )
            )
            continue
        problems, evidence = _lag_problems(facts, node)
        if problems:
            out.append(
                _finding(
                    facts,
                    Code.REPLICA_LAG_HIGH,
                    Severity.WARNING,
                    f"Replica {_label(node)} lags master {facts.master_address}: {'; '.join(problems)} "
                    f"(thresholds {_mib(facts.policy.replica_lag_high_bytes)}, {facts.policy.replica_lag_high_s:g} s).",
                    kind="node",
                    name=node.name,
                    evidence=(("replica", address), *evidence),
                )
            )
    return out


def check_redundancy(facts: Facts) -> list[Finding]:
    """REDUNDANCY_DEGRADED: fewer in-sync replicas than desired. Critical with none left, or fewer than the
    master's min-replicas-to-write (it then refuses writes)."""
    if not facts.replication_clear:
        return []
    desired = facts.policy.desired_replicas_for(facts.view.expected_nodes)
    replicas = facts.replica_nodes()
    in_sync = sorted(n.name for n in replicas if _in_sync(facts, n))
    known = {n.report.identity.redis_address for n in facts.view.nodes}
    extra = sorted(a for a, r in facts.master_replicas if a not in known and _vouched_unknown(facts, r))
    count = len(in_sync) + len(extra)
    # With the master's agent silent too, a silent replica is unknown: no vantage point speaks for it.
    master_silent = facts.master_node is None or not facts.view.is_fresh(facts.master_node)
    unknown = sorted(n.name for n in replicas if master_silent and not facts.view.is_fresh(n))
    if count + len(unknown) >= desired:
        return []
    min_to_write = None
    if facts.master_node is not None and facts.master_role == "master":
        min_to_write = facts.master_node.report.redis.min_replicas_to_write
    refuses_writes = min_to_write is not None and count < min_to_write
    severity = Severity.CRITICAL if count + len(unknown) == 0 or refuses_writes else Severity.WARNING
    message = f"{count} of {desired} desired replicas are in sync ({_join([*in_sync, *extra]) or 'none'})"
    if unknown:
        message += f"; {_join(unknown)} not known either way (their agents and the master's are silent)"
    if refuses_writes:
        message += f"; the master wants {min_to_write} (min-replicas-to-write) and may refuse writes"
    return [
        _finding(
            facts,
            Code.REDUNDANCY_DEGRADED,
            severity,
            message + ".",
            evidence=(
                ("in_sync_replicas", count),
                ("desired_replicas", desired),
                ("unknown_replicas", len(unknown)),
                ("min_replicas_to_write", min_to_write),
            ),
        )
    ]


# -- resources -------------------------------------------------------------------------------------------


def check_persistence(facts: Facts) -> list[Finding]:
    """PERSISTENCE_FAILING: the last RDB save or AOF write failed. Critical on the master, which then
    refuses writes (stop-writes-on-bgsave-error, AOF write errors)."""
    out = []
    for node in facts.fresh:
        redis = node.report.redis
        if not redis.reachable:
            continue
        failing = []
        if redis.rdb_last_bgsave_ok is False:
            failing.append("the last RDB background save failed")
        if redis.aof_last_write_ok is False and redis.aof_enabled is not False:
            failing.append("the last AOF write failed")
        if failing:
            is_master = node.report.identity.redis_address == facts.master_address or redis.role == "master"
            out.append(
                _finding(
                    facts,
                    Code.PERSISTENCE_FAILING,
                    Severity.CRITICAL if is_master else Severity.WARNING,
                    f"Persistence failing on {_label(node)}: {' and '.join(failing)}"
                    f" ({redis.rdb_changes_since_last_save} changes since the last save).",
                    kind="node",
                    name=node.name,
                    evidence=(
                        ("rdb_last_bgsave_ok", redis.rdb_last_bgsave_ok),
                        ("aof_last_write_ok", redis.aof_last_write_ok),
                        ("rdb_changes_since_last_save", redis.rdb_changes_since_last_save),
                        ("is_master", is_master),
                    ),
                )
            )
    return out


def _ratio(part: int | None, whole: int | None) -> float | None:
    if part is None or whole is None or whole <= 0 or part < 0:
        return None
    return part / whole


def check_memory(facts: Facts) -> list[Finding]:
    """MEMORY_PRESSURE: redis near maxmemory (critical when full under noeviction: writes fail), or, without
    maxmemory, redis or the host near the host's memory."""
    threshold = facts.policy.memory_pressure_ratio
    out = []
    for node in facts.fresh:
        redis, host = node.report.redis, node.report.host
        used = redis.used_memory_bytes if redis.reachable else None
        reasons = []
        severity = Severity.WARNING
        maxmemory = redis.maxmemory_bytes if redis.reachable else None
        if maxmemory:
            ratio = _ratio(used, maxmemory)
            if ratio is not None and ratio >= threshold:
                reasons.append(f"redis uses {ratio:.0%} of maxmemory ({used} of {maxmemory} bytes)")
                if ratio >= 1 and redis.maxmemory_policy == "noeviction":
                    severity = Severity.CRITICAL
                    reasons.append("maxmemory-policy noeviction rejects writes")
        elif host.reachable:
            ratio = _ratio(used, host.memory_total_bytes)
            if ratio is not None and ratio >= threshold:
                reasons.append(f"redis uses {ratio:.0%} of the host's memory and has no maxmemory")
        if host.reachable and host.memory_available_bytes is not None:
            ratio = _ratio(host.memory_available_bytes, host.memory_total_bytes)
            if ratio is not None and 1 - ratio >= threshold:
                reasons.append(
                    f"the host has {host.memory_available_bytes} of {host.memory_total_bytes} bytes available "
                    f"({ratio:.0%})"
                )
        if reasons:
            out.append(
                _finding(
                    facts,
                    Code.MEMORY_PRESSURE,
                    severity,
                    f"Memory pressure on {_label(node)}: {'; '.join(reasons)}.",
                    kind="node",
                    name=node.name,
                    evidence=(
                        ("used_memory_bytes", used),
                        ("maxmemory_bytes", maxmemory),
                        ("host_memory_total_bytes", host.memory_total_bytes),
                        ("host_memory_available_bytes", host.memory_available_bytes),
                        ("threshold_ratio", threshold),
                    ),
                )
            )
    return out


def check_disk(facts: Facts) -> list[Finding]:
    """DISK_PRESSURE: the data directory's disk has less free space than the policy wants."""
    threshold = facts.policy.disk_free_min_ratio
    out = []
    for node in facts.fresh:
        host = node.report.host
        if not host.reachable:
            continue
        ratio = _ratio(host.disk_free_bytes, host.disk_total_bytes)
        if ratio is not None and ratio < threshold:
            out.append(
                _finding(
                    facts,
                    Code.DISK_PRESSURE,
                    Severity.WARNING,
                    f"Disk pressure on {_label(node)}: {host.disk_free_bytes} of {host.disk_total_bytes} bytes free "
                    f"({ratio:.1%}, minimum {threshold:.0%}) at {host.disk_path}.",
                    kind="node",
                    name=node.name,
                    evidence=(
                        ("disk_path", host.disk_path),
                        ("disk_free_bytes", host.disk_free_bytes),
                        ("disk_total_bytes", host.disk_total_bytes),
                        ("min_free_ratio", threshold),
                    ),
                )
            )
    return out


# -- configuration ---------------------------------------------------------------------------------------

_SENTINEL_SETTINGS: tuple[tuple[str, Callable[[SentinelMasterView], int | None]], ...] = (
    ("quorum", lambda v: v.quorum),
    ("down_after_ms", lambda v: v.down_after_ms),
    ("failover_timeout_ms", lambda v: v.failover_timeout_ms),
    ("parallel_syncs", lambda v: v.parallel_syncs),
)


def _config_risk(facts: Facts, qualifier: str, message: str, evidence: Evidence,
                 severity: Severity = Severity.WARNING) -> Finding:
    return _finding(facts, Code.CONFIG_RISK, severity, message, qualifier=qualifier, evidence=evidence)


def check_config(facts: Facts) -> list[Finding]:
    """CONFIG_RISK, one finding per risk (the qualifier names it): settings that are fine today and hurt
    during the next failure."""
    out = []
    up = [n for n in facts.fresh if n.report.redis.reachable]
    if any(n.report.redis.requirepass_set for n in up):
        missing = sorted(n.name for n in up if n.report.redis.masterauth_set is False)
        if missing:
            out.append(
                _config_risk(
                    facts,
                    "masterauth_missing",
                    f"requirepass is set but masterauth is missing on {_join(missing)}: after a failover they "
                    "cannot authenticate to the new master.",
                    (("nodes", _join(missing)),),
                )
            )
    total = facts.expected_total
    if total < facts.policy.min_sentinels:
        out.append(
            _config_risk(
                facts,
                "too_few_sentinels",
                f"Only {total} Sentinels are expected; at least {facts.policy.min_sentinels} are needed to survive "
                "the loss of one.",
                (("expected_sentinels", total), ("min_sentinels", facts.policy.min_sentinels)),
            )
        )
    quorums = [v.quorum for _, v in facts.sentinel_views if v.quorum is not None]
    if quorums and max(quorums) > total:
        out.append(
            _config_risk(
                facts,
                "quorum_exceeds_sentinels",
                f"Sentinel quorum {max(quorums)} exceeds the {total} Sentinels: the master can never be "
                "agreed down, so no failover.",
                (("quorum", max(quorums)), ("expected_sentinels", total)),
            )
        )
    for setting, read in _SENTINEL_SETTINGS:
        values: dict[int, list[str]] = {}
        for node, sentinel_view in facts.sentinel_views:
            value = read(sentinel_view)
            if value is not None:
                values.setdefault(value, []).append(node.name)
        if len(values) > 1:
            text = "; ".join(f"{value} on {_join(sorted(names))}" for value, names in sorted(values.items()))
            out.append(
                _config_risk(
                    facts,
                    f"sentinel_{setting}_mismatch",
                    f"Sentinels disagree on {setting}: {text}.",
                    (("setting", setting), ("values", text)),
                )
            )
    if facts.policy.require_min_replicas_to_write and facts.policy.desired_replicas_for(facts.view.expected_nodes):
        # Every node, not only the master: a replica is promoted with its own setting (CONFIG SET on the
        # master does not travel).
        off = sorted(n.name for n in up if n.report.redis.min_replicas_to_write == 0)
        if off:
            out.append(
                _config_risk(
                    facts,
                    "min_replicas_to_write_off",
                    f"min-replicas-to-write is 0 on {_join(off)}: a master cut off from its replicas keeps "
                    "accepting writes that a failover will discard.",
                    (("nodes", _join(off)),),
                )
            )
    replicas = [n for n in up if n.report.redis.role == "replica" and n.report.redis.replica_priority is not None]
    if replicas and all(n.report.redis.replica_priority == 0 for n in replicas):
        names = _join(sorted(n.name for n in replicas))
        out.append(
            _config_risk(
                facts,
                "no_promotable_replica",
                f"Every replica ({names}) has replica-priority 0: Sentinel can promote none of them.",
                (("replicas", names),),
            )
        )
    out += _least_privilege_risks(facts, up)
    writable = sorted(
        n.name for n in up if n.report.redis.role == "replica" and n.report.redis.replica_read_only is False
    )
    if writable:
        out.append(
            _config_risk(
                facts,
                "replica_writable",
                f"replica-read-only is off on {_join(writable)}: writes to a replica diverge from the master.",
                (("nodes", _join(writable)),),
            )
        )
    return out


def _beyond_loopback(bind: str | None) -> bool:
    """Whether a `bind` value names an address other machines can reach ("0.0.0.0", "*", a private IP)."""
    if bind is None:
        return False
    addresses = [a.lstrip("-") for a in bind.split()]
    return any(not (a.startswith("127.") or a in ("::1", "localhost")) for a in addresses)


def _least_privilege_risks(facts: Facts, up: list[NodeState]) -> list[Finding]:
    """Who may do what to Redis and Sentinel (issue #13), each risk with its fix. Redis open to anyone without
    a password, or exposed without protected-mode, is a warning. The posture of a cluster built before #13
    (one requirepass for every role, a Sentinel without ACLs) is reported at info: it is a standing choice
    with a documented fix, not a change for the worse, and as a warning it would leave every such cluster
    "degraded" for good, drowning the warnings that mean something broke."""
    out = []
    secure = f"`redwarden cluster secure {facts.cluster}` (per-role ACL users, `default` off)"
    exposed = sorted((n for n in up if n.report.redis.protected_mode is False
                      and _beyond_loopback(n.report.redis.bind)), key=lambda n: n.name)
    if exposed:
        binds = "; ".join(f"{n.name} binds {n.report.redis.bind}" for n in exposed)
        out.append(_config_risk(
            facts, "protected_mode_off",
            f"protected-mode is off and Redis listens beyond loopback ({binds}). Fix: `protected-mode yes` "
            "(CONFIG SET protected-mode yes, then CONFIG REWRITE) and bind the private address only.",
            (("nodes", _join(n.name for n in exposed)),)))
    risks: tuple[tuple[str, Callable[[RedisHealth], bool | None], str, Severity], ...] = (
        ("redis_open_without_auth", lambda r: r.open_without_auth,
         "Redis on {nodes} answers a connection that sent no password", Severity.WARNING),
        ("default_user_all_commands", lambda r: r.default_user_all_commands,
         "The `default` user is on with every command on {nodes}: its password can CONFIG SET, REPLICAOF, "
         "SHUTDOWN, FLUSHALL and DEBUG", Severity.INFO),
        ("one_password_all_roles", lambda r: r.acl_user == "default" and r.requirepass_set and r.masterauth_set,
         "One password (requirepass = masterauth = Sentinel's auth-pass = the agent's) serves every role on "
         "{nodes}: the application's credential is also the administrator's", Severity.INFO),
    )
    for qualifier, holds, text, severity in risks:
        names = sorted(n.name for n in up if holds(n.report.redis))
        if names:
            out.append(_config_risk(facts, qualifier, text.format(nodes=_join(names)) + f". Fix: {secure}.",
                                    (("nodes", _join(names)),), severity))
    open_sentinels = sorted((n for n in facts.fresh if n.report.sentinel.reachable
                             and n.report.sentinel.open_to_state_changes), key=lambda n: n.name)
    if open_sentinels:
        old = sorted({n.report.redis.version for n in open_sentinels
                      if n.report.redis.version and _older_than(n.report.redis.version, (6, 2))})
        fix = (f"Redis {', '.join(old)} has no Sentinel ACLs (they came in 6.2): firewall port 26379 to the "
               "cluster, the controller and the application servers, and upgrade Redis" if old else
               f"Sentinel ACL users (discovery open, every other subcommand for the peers and the controller): "
               f"{secure}")
        out.append(_config_risk(
            facts, "sentinel_open_to_state_changes",
            f"Sentinel on {_join(n.name for n in open_sentinels)} takes state-changing commands (SENTINEL "
            f"FAILOVER, SET, REMOVE, RESET) from anyone who reaches it, without a password. Fix: {fix}.",
            (("nodes", _join(n.name for n in open_sentinels)),) + ((("versions", ", ".join(old)),) if old else ()),
            Severity.INFO))
    return out


def _older_than(version: str, than: tuple[int, int]) -> bool:
    parts = version.split(".")
    try:
        return (int(parts[0]), int(parts[1])) < than
    except (IndexError, ValueError):
        return False


# -- entry points ----------------------------------------------------------------------------------------

CHECKS = (
    check_topology,
    check_master,
    check_quorum,
    check_sentinel_isolation,
    check_sentinel_processes,
    check_sentinel_tables,
    check_replicas,
    check_redundancy,
    check_persistence,
    check_memory,
    check_disk,
    check_config,
)


def finding_order(finding: Finding) -> tuple[int, str, str]:
    """Most severe first, then by key: the order `check` returns findings in."""
    return (-finding.severity.rank, finding.key, finding.message)


def check(view: ClusterView, policy: Policy, now: float) -> tuple[Finding, ...]:
    """Every finding about `view` at `now` (which replaces `view.now`), most severe first, then by key."""
    # Judge at `now`, and on nodes in one canonical order: helpers such as `node_at` return the first
    # match, and the result must not depend on the order the store listed the nodes in.
    view = replace(view, now=now, nodes=_by_name(view.nodes))
    facts = assess(view, policy)
    findings = check_agents(facts)
    if facts.fresh:  # with no fresh report, silence is all there is to say
        for check_one in CHECKS:
            findings.extend(check_one(facts))
    return tuple(sorted(findings, key=finding_order))


def cluster_health(findings: Iterable[Finding]) -> Health:
    """The cluster's health: "critical" if any finding is critical, "degraded" if any is a warning, else "healthy"."""
    worst = Severity.worst([f.severity for f in findings])
    if worst is Severity.CRITICAL:
        return "critical"
    if worst is Severity.WARNING:
        return "degraded"
    return "healthy"
