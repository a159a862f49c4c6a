"""Property tests: no finding's message contradicts the view it was computed from (issue 12, item 2).

Layer: tests of the pure core (hypothesis). Views are generated as partitions: a healthy cluster of 3-5
nodes whose nodes fall into groups that cannot talk to each other (each Sentinel flags the others'
Sentinels down), plus killed Sentinels, silent agents, CKQUORUM refusals, one-sided flags and odd
quorums; and the field-by-field mutations of tests/test_checks_properties.py. For each, the numbers the
messages state are read back and compared with the view, and whether QUORUM_LOST is there is compared
with an oracle written from the definition (a set of reachable Sentinels, one of them a leader that talks
with every other member, as large as a failover needs), not from the code under test.
"""

from __future__ import annotations

import dataclasses
import itertools
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.core.checks import check
from controller.core.findings import Code, Finding
from controller.core.policy import Policy
from controller.core.view import ClusterView, NodeState
from protocol.report import SentinelMasterView, SentinelPeer
from tests.factories import synthetic_view, with_age, with_sentinel_master
from tests.test_checks_properties import mutated, recorded_or_synthetic

POLICY = Policy()
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DOWN = ("sentinel", "s_down", "disconnected")


def _master_view(node: NodeState, view: ClusterView) -> SentinelMasterView | None:
    return node.report.sentinel.master(view.master_name) if node.report.sentinel.reachable else None


def _edit_peers(view: ClusterView, node: str, flagged: set[str]) -> ClusterView:
    """`node`'s Sentinel flags the Sentinels of the nodes in `flagged` down."""
    addresses = {n.report.identity.sentinel_address for n in view.nodes if n.name in flagged}
    state = view.node(node)
    assert state is not None
    current = _master_view(state, view)
    if current is None:
        return view
    peers = tuple(dataclasses.replace(p, flags=DOWN) if p.address in addresses else p for p in current.sentinels)
    return with_sentinel_master(view, node, sentinels=peers)


@st.composite
def partitioned_views(draw: st.DrawFn) -> ClusterView:
    n = draw(st.integers(3, 5))
    view = synthetic_view(n, quorum=draw(st.integers(1, n + 1)))
    names = [node.name for node in view.nodes]
    groups = {name: draw(st.integers(0, 2)) for name in names}
    for name in names:
        flagged = {o for o in names if groups[o] != groups[name]}
        flagged |= {o for o in names if o != name and draw(st.integers(0, 9)) == 0}  # a one-sided flag now and then
        view = _edit_peers(view, name, flagged)
    for name in names:
        roll = draw(st.integers(0, 9))
        if roll == 0:
            view = with_sentinel_master(view, name, ckquorum_ok=False, ckquorum_message="NOQUORUM 1 usable Sentinels")
        elif roll == 1:
            view = with_age(view, name, 10.0)
        elif roll == 2:
            state = view.node(name)
            assert state is not None
            sentinel = dataclasses.replace(state.report.sentinel, reachable=False, masters=())
            report = dataclasses.replace(state.report, sentinel=sentinel)
            view = dataclasses.replace(
                view, nodes=tuple(NodeState(report, s.received_at) if s.name == name else s for s in view.nodes)
            )
        elif roll == 3:  # a freshly reset Sentinel: no peers at all for a moment
            view = with_sentinel_master(view, name, sentinels=(), num_other_sentinels=0)
    return view


def _sees(view: ClusterView) -> dict[str, set[str]]:
    """Whom each reachable Sentinel talks with, by the definition: it lists them without a down flag, unless
    its CKQUORUM refuses (then nobody) or its SENTINELS reply failed (then, by benefit of the doubt, all)."""
    views = view.sentinel_views()
    names = {n.name for n, _ in views}
    by_address = {n.report.identity.sentinel_address: n.name for n, _ in views}
    out = {}
    for node, v in views:
        if v.ckquorum_ok is False:
            out[node.name] = set()
        elif not v.sentinels and (v.num_other_sentinels or 0) > 0:
            out[node.name] = names - {node.name}
        else:
            out[node.name] = {by_address[p.address] for p in v.sentinels if p.address in by_address and not p.down}
    return out


def needed_for(view: ClusterView) -> int:
    total = view.expected_sentinels
    quorums = [v.quorum for _, v in view.sentinel_views() if v.quorum is not None and v.quorum > 0]
    quorum = max(quorums) if quorums else POLICY.fallback_quorum or total // 2 + 1
    return max(quorum, total // 2 + 1)


def some_side_can_fail_over(view: ClusterView) -> bool:
    """Oracle: some set of reachable Sentinels, as large as a failover needs, has a leader that talks with
    every other member and is talked with back (brute force over the sets)."""
    sees = _sees(view)
    needed = needed_for(view)
    names = sorted(sees)
    for size in range(needed, len(names) + 1):
        for group in itertools.combinations(names, size):
            for leader in group:
                if all(p == leader or (p in sees[leader] and leader in sees[p]) for p in group):
                    return True
    return False


def _usable(v: SentinelMasterView) -> set[str] | None:
    """The Sentinel addresses `v`'s Sentinel lists without a down flag; None for all (a failed SENTINELS
    reply); none when its CKQUORUM refuses."""
    if v.ckquorum_ok is False:
        return set()
    if not v.sentinels and (v.num_other_sentinels or 0) > 0:
        return None
    return {p.address for p in v.sentinels if not p.down}


def some_side_could_fail_over(view: ClusterView) -> bool:
    """Oracle: as `some_side_can_fail_over`, but every Sentinel without a fresh report (a silent agent's, or
    a never-heard-from node's) may be up and talk with everyone (by the benefit of the doubt, a reachable
    Sentinel listing an address of no known node, usable, may be listing a never-heard-from one). Only what
    the fresh reports say (a peer flagged down, a refused CKQUORUM, a Sentinel its own agent finds down)
    rules a side out. Brute force over the sets."""
    sees = _sees(view)
    fresh_views = {n.name: v for n, v in view.sentinel_views()}
    slots = max(0, view.expected_sentinels - len(view.fresh_nodes()))
    known = {n.report.identity.sentinel_address for n in view.nodes}
    stale = [(f"stale:{n.name}", n.report.identity.sentinel_address) for n in view.nodes if not view.is_fresh(n)]
    never = [(f"never:{i}", None) for i in range(max(0, slots - len(stale)))]
    unknown: dict[str, str | None] = dict(stale + never)

    def talks(a: str, b: str) -> bool:
        if a in unknown:
            return True
        if b in sees:
            return b in sees[a]
        usable = _usable(fresh_views[a])
        address = unknown[b]
        return usable is None or (address in usable if address is not None else bool(usable - known))

    names = sorted(sees) + sorted(unknown)
    needed = needed_for(view)
    for size in range(needed, len(names) + 1):
        for group in itertools.combinations(names, size):
            if sum(1 for p in group if p in unknown) > slots:
                continue
            for leader in group:
                if all(p == leader or (talks(leader, p) and talks(p, leader)) for p in group):
                    return True
    return False


def completed(view: ClusterView) -> ClusterView:
    """The view at its most hopeful: every node without a fresh report reports now, its Sentinel up, its
    CKQUORUM fine and every other node's Sentinel listed usable. A lost quorum in `view` must be lost in
    this one too (the fresh reports alone prove it), and a quorum only unconfirmed in `view` is found here."""
    template = next((v for n in view.nodes if (v := _master_view(n, view)) is not None), None)
    if template is None:
        return view
    nodes = []
    for state in view.nodes:
        if view.is_fresh(state):
            nodes.append(state)
            continue
        own = _master_view(state, view) or template
        peers = tuple(SentinelPeer(n.report.identity.sentinel_address, ("sentinel",))
                      for n in view.nodes if n.name != state.name)
        master_view = dataclasses.replace(own, sentinels=peers, num_other_sentinels=len(peers), ckquorum_ok=True,
                                          s_down=False, o_down=False)
        sentinel = dataclasses.replace(state.report.sentinel, reachable=True, masters=(master_view,))
        nodes.append(NodeState(dataclasses.replace(state.report, sentinel=sentinel), view.now))
    return dataclasses.replace(view, nodes=tuple(nodes))


COUNTS = re.compile(r"(\d+) of (\d+) Sentinels reachable \((\d+) down, (\d+) silent\)")
LARGEST = re.compile(r"the largest group that see each other has (\d+) \(([^)]*)\)")
ALL_SEE = re.compile(r"all (\d+) reachable see each other")
NEEDS = re.compile(r"failover needs (\d+)")
POSSIBLE = re.compile(r"a side of up to (\d+) is possible")
FLAGGED = re.compile(r"(\d+) of (\d+) reachable Sentinels flag it")
REPLICAS_UP = re.compile(r"(\d+) of (\d+) replicas up")
X_OF_Y = re.compile(r"(\d+) of (?:the )?(\d+)\b(?! bytes)")  # a count of a whole ("used of maxmemory bytes" may exceed)


def assert_true_to(view: ClusterView, findings: tuple[Finding, ...]) -> None:
    reachable = len(view.sentinel_views())
    total = view.expected_sentinels
    codes = {f.code for f in findings}
    for f in findings:
        text = f.message
        for x, y in X_OF_Y.findall(text):
            assert int(x) <= int(y), text
        for m in COUNTS.finditer(text):
            r, t, d, s = map(int, m.groups())
            assert (r, t) == (reachable, total), text
            assert r + d + s == t, text
        for m in FLAGGED.finditer(text):
            assert int(m.group(2)) == reachable, text
        for m in NEEDS.finditer(text):
            assert int(m.group(1)) == needed_for(view), text
        for m in LARGEST.finditer(text):
            names = [n for n in m.group(2).split(", ") if n and n != "none"]
            assert int(m.group(1)) == len(names) <= reachable, text
            assert set(names) <= {n.name for n, _ in view.sentinel_views()}, text
        for m in ALL_SEE.finditer(text):
            assert int(m.group(1)) == reachable, text
        for m in REPLICAS_UP.finditer(text):
            master = view.master_address()
            assert int(m.group(2)) == sum(1 for n in view.nodes if n.report.identity.redis_address != master), text
        if f.code is Code.QUORUM_LOST:
            # "N of N reachable, all see each other" with a lost quorum only when a failover needs more than N
            if ALL_SEE.search(text):
                assert needed_for(view) > reachable, text
            largest = LARGEST.search(text)
            if largest:
                assert int(largest.group(1)) < needed_for(view), text
        if f.code is Code.QUORUM_AT_RISK:
            size = int(m.group(1)) if (m := LARGEST.search(text) or ALL_SEE.search(text)) else -1
            if "not confirmed" in text:  # no side confirmed, but the silent ones could complete one
                assert 0 <= size < needed_for(view), text
                assert not some_side_can_fail_over(view) and some_side_could_fail_over(view), text
                possible = POSSIBLE.search(text)
                assert possible is not None and int(possible.group(1)) >= needed_for(view), text
            else:
                assert needed_for(view) <= size < needed_for(view) + 1, text
        if f.code is Code.SENTINEL_ISOLATED:
            assert Code.QUORUM_LOST not in codes or "flags the master" in text, text
        if f.code is Code.MASTER_UNREACHABLE:
            # a silent master agent alone is the controller's blindness, not the master's
            assert "flag it" in text or "agent cannot reach" in text or "no agent reports" in text, text
    if view.fresh_nodes():
        assert (Code.QUORUM_LOST in codes) == (not some_side_could_fail_over(view)), [f.message for f in findings]


@FAST
@given(partitioned_views())
def test_partition_findings_agree_with_the_view(view: ClusterView) -> None:
    assert_true_to(view, check(view, POLICY, view.now))


@FAST
@given(st.data())
def test_mutated_findings_agree_with_the_view(data: st.DataObject) -> None:
    view = data.draw(mutated(data.draw(recorded_or_synthetic())))
    assert_true_to(view, check(view, POLICY, view.now))


def test_the_pages_of_issue_12_no_longer_contradict_themselves() -> None:
    """The master's host cut off from both replicas' hosts, the controller reaching all three: "3 of 3
    Sentinels reachable" never comes with QUORUM_LOST, and the cut-off Sentinel is a warning of its own."""
    view = synthetic_view(3)
    names = [n.name for n in view.nodes]
    master = names[0]
    view = _edit_peers(view, master, set(names[1:]))
    for name in names[1:]:
        view = _edit_peers(view, name, {master})
        view = with_sentinel_master(view, name, s_down=True, o_down=True, flags=("master", "s_down", "o_down"))
    findings = check(view, POLICY, view.now)
    by_code = {f.code: f for f in findings}
    assert Code.QUORUM_LOST not in by_code
    isolated = by_code[Code.SENTINEL_ISOLATED]
    assert isolated.subject_name == master and isolated.severity.value == "warning"
    assert_true_to(view, findings)


# -- the controller going blind (issue 12: the blind-controller fault of the 50-fault campaign) -------------


@st.composite
def blind_views(draw: st.DrawFn) -> ClusterView:
    """A partitioned view (often no partition at all) of which any set of agents has gone silent: what the
    controller sees while it loses sight of the nodes one after another."""
    view = draw(partitioned_views())
    names = [node.name for node in view.nodes]
    for name in draw(st.sets(st.sampled_from(names))):
        view = with_age(view, name, draw(st.floats(4.0, 120.0)))
    return view


@FAST
@given(blind_views())
def test_silent_agents_alone_never_lose_the_quorum(view: ClusterView) -> None:
    """QUORUM_LOST only when the fresh reports prove it: the same view with every silent node reporting at
    its most hopeful (its Sentinel up and talking with everyone) has lost its quorum too, and a quorum
    that view finds is never called lost here."""
    findings = check(view, POLICY, view.now)
    assert_true_to(view, findings)
    if not view.fresh_nodes():
        assert {f.code for f in findings} == {Code.AGENT_SILENT}
        return
    hopeful = completed(view)
    assert not any(not hopeful.is_fresh(n) for n in hopeful.nodes)
    if needed_for(hopeful) != needed_for(view):
        return  # no fresh Sentinel said what quorum it runs: the two are judged against different needs
    lost_here = Code.QUORUM_LOST in {f.code for f in findings}
    lost_there = Code.QUORUM_LOST in {f.code for f in check(hopeful, POLICY, hopeful.now)}
    assert lost_here == lost_there, [f.message for f in findings]


@FAST
@given(st.integers(3, 5), st.data())
def test_a_blind_controller_pages_nobody(n: int, data: st.DataObject) -> None:
    """A healthy cluster whose agents the controller no longer hears (any of them, for any time): warnings
    at most, and only about the silence (AGENT_SILENT) and what it leaves unconfirmed (QUORUM_AT_RISK);
    never QUORUM_LOST, MASTER_UNREACHABLE, REDUNDANCY_DEGRADED or anything critical."""
    view = synthetic_view(n, master_index=data.draw(st.integers(0, n - 1)))
    names = [node.name for node in view.nodes]
    for name in data.draw(st.sets(st.sampled_from(names), min_size=1)):
        view = with_age(view, name, data.draw(st.floats(3.5, 600.0)))
    findings = check(view, POLICY, view.now)
    assert {f.code for f in findings} <= {Code.AGENT_SILENT, Code.QUORUM_AT_RISK}, [f.message for f in findings]
    assert all(f.severity.value == "warning" for f in findings)
    assert_true_to(view, findings)


def test_agents_going_silent_one_after_another_keep_one_warning() -> None:
    """The blind-controller fault as the controller lives it: the agents' reports stop arriving one after
    another. Each cycle says the same thing under the same keys (one incident each), and the quorum is
    never called lost: the Sentinels themselves still see each other."""
    view = synthetic_view(3)
    names = [node.name for node in view.nodes]
    keys: set[str] = set()
    for i, name in enumerate(names[:-1]):
        view = with_age(view, name, 4.0 + i)
        findings = check(view, POLICY, view.now)
        codes = {f.code for f in findings}
        assert Code.QUORUM_LOST not in codes and Code.MASTER_UNREACHABLE not in codes
        assert all(f.severity.value == "warning" for f in findings), [f.message for f in findings]
        keys |= {f.key for f in findings if f.code is Code.QUORUM_AT_RISK}
    assert len(keys) == 1
    last = check(with_age(view, names[-1], 3.5), POLICY, view.now)
    assert {f.code for f in last} == {Code.AGENT_SILENT}


def test_a_lost_quorum_is_still_found_when_the_silent_ones_are_flagged_down() -> None:
    """Fresh evidence still proves a lost quorum: one node silent and flagged down by the one reachable
    Sentinel, whose other peer's own agent finds its Sentinel down."""
    view = synthetic_view(3)
    names = [n.name for n in view.nodes]
    view = _edit_peers(view, names[0], {names[1], names[2]})
    view = with_age(view, names[1], 10.0)
    state = view.node(names[2])
    assert state is not None
    sentinel = dataclasses.replace(state.report.sentinel, reachable=False, masters=())
    view = dataclasses.replace(view, nodes=tuple(
        NodeState(dataclasses.replace(s.report, sentinel=sentinel), s.received_at) if s.name == names[2] else s
        for s in view.nodes))
    findings = check(view, POLICY, view.now)
    lost = [f for f in findings if f.code is Code.QUORUM_LOST]
    assert len(lost) == 1 and lost[0].severity.value == "critical"
    assert "1 silent" in lost[0].message and "a side of at most 1" in lost[0].message
    assert_true_to(view, findings)
