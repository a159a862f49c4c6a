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
from protocol.report import SentinelMasterView
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


COUNTS = re.compile(r"(\d+) of (\d+) Sentinels reachable \((\d+) down, (\d+) silent\)")
LARGEST = re.compile(r"the largest group that see each other has (\d+) \(([^)]*)\)")
ALL_SEE = re.compile(r"all (\d+) reachable see each other")
NEEDS = re.compile(r"failover needs (\d+)")
FLAGGED = re.compile(r"(\d+) of (\d+) reachable Sentinels flag it")
REPLICAS_UP = re.compile(r"(\d+) of (\d+) replicas up")
X_OF_Y = re.compile(r"(\d+) of (?:the )?(\d+)")


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
            assert needed_for(view) <= size < needed_for(view) + 1, text
        if f.code is Code.SENTINEL_ISOLATED:
            assert Code.QUORUM_LOST not in codes or "flags the master" in text, text
    if view.fresh_nodes():
        assert (Code.QUORUM_LOST in codes) == (not some_side_can_fail_over(view)), [f.message for f in findings]


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
