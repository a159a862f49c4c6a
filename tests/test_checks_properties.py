"""Property tests of the health checks: healthy clusters are quiet, one master is never a split brain,
the output depends only on the snapshot, and no data, however odd, makes `check` raise.

Layer: tests of the pure core (hypothesis). Clusters are generated from the recorded healthy reports
(tests/factories.py `synthetic_view`), then edited field by field with values of each field's type,
None included where the schema allows it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from controller.core.checks import check
from controller.core.findings import Code
from controller.core.policy import MIB, Policy
from controller.core.view import ClusterView, NodeState
from protocol.report import ConnectedReplica, ProcessHealth, SentinelMasterView, SentinelPeer
from tests.factories import scenario_view, synthetic_view

POLICY = Policy()
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ADDRESSES = ("10.0.0.1:6379", "10.0.0.2:6379", "127.0.0.3:6379", "127.0.0.4:6379", "127.0.0.5:26379", "", "x")
FLAGS = ("master", "slave", "sentinel", "s_down", "o_down", "disconnected", "failover_in_progress")


@st.composite
def healthy_views(draw: st.DrawFn) -> ClusterView:
    n = draw(st.integers(3, 5))
    replicas = n - 1
    return synthetic_view(
        n,
        cluster=draw(st.sampled_from(["sandbox", "prod-eu", "c1"])),
        subnet=draw(st.sampled_from(["10.0.0", "192.168.7", "127.0.1"])),
        master_index=draw(st.integers(0, n - 1)),
        master_offset=draw(st.integers(POLICY.replica_lag_high_bytes, 2**40)),
        behind_bytes=draw(
            st.lists(st.integers(0, POLICY.replica_lag_high_bytes), min_size=replicas, max_size=replicas)
        ),
        last_io_s=draw(st.lists(st.integers(0, int(POLICY.replica_lag_high_s)), min_size=replicas, max_size=replicas)),
        lag_s=draw(st.lists(st.integers(0, int(POLICY.replica_lag_high_s)), min_size=replicas, max_size=replicas)),
        ages_s=draw(st.lists(st.floats(0.0, 2.9), min_size=n, max_size=n)),
        config_epoch=draw(st.integers(0, 1000)),
    )


def _value_for(draw: st.DrawFn, annotation: str, current: object) -> object:
    """A value of the field's declared type (annotations are strings under `from __future__ import annotations`)."""
    options: list[st.SearchStrategy[Any]] = []
    if "None" in annotation:
        options.append(st.none())
    if isinstance(current, bool) or annotation.startswith("bool"):
        options.append(st.booleans())
    elif annotation.startswith("int"):
        options.append(st.integers(-(2**40), 2**40) | st.sampled_from([0, 1, -1, 10 * MIB + 1]))
    elif annotation.startswith("float"):
        options.append(st.floats(allow_nan=True, allow_infinity=True))
    elif annotation.startswith("str"):
        options.append(st.sampled_from(ADDRESSES) | st.sampled_from(["up", "down", "master", "replica", "online"]))
        options.append(st.text(max_size=8))
    elif annotation.startswith("tuple[str"):
        options.append(st.lists(st.sampled_from(FLAGS), max_size=4).map(tuple))
    elif annotation.startswith("tuple["):
        assert isinstance(current, tuple)
        options.append(st.just(()))
        if current:
            options.append(st.just(current[:-1]))
            options.append(st.just((*current, current[0])))  # a duplicate entry
    elif annotation == "ProcessHealth":
        options.append(st.builds(ProcessHealth, alive=st.booleans()))
    else:
        options.append(st.just(current))
    return draw(st.one_of(options))


def _mutate(draw: st.DrawFn, obj: Any, keep: tuple[str, ...] = ()) -> Any:
    field = draw(st.sampled_from([f for f in dataclasses.fields(obj) if f.name not in keep]))
    return dataclasses.replace(obj, **{field.name: _value_for(draw, str(field.type), getattr(obj, field.name))})


@st.composite
def mutated(draw: st.DrawFn, base: ClusterView) -> ClusterView:
    """`base` with a few edits: fields of any node's redis, sentinel, Sentinel views, peers and replica
    entries, host, identity; report ages; nodes removed."""
    view = base
    for _ in range(draw(st.integers(1, 8))):
        if not view.nodes:
            break
        index = draw(st.integers(0, len(view.nodes) - 1))
        state = view.nodes[index]
        report = state.report
        part = draw(
            st.sampled_from(
                ["redis", "sentinel", "sentinel_view", "peer", "connected", "host", "identity", "age", "drop"]
            )
        )
        if part == "redis":
            report = dataclasses.replace(report, redis=_mutate(draw, report.redis))
        elif part == "sentinel":
            report = dataclasses.replace(report, sentinel=_mutate(draw, report.sentinel))
        elif part in ("sentinel_view", "peer") and report.sentinel.masters:
            master_view: SentinelMasterView = report.sentinel.masters[0]
            if part == "sentinel_view":
                master_view = _mutate(draw, master_view)
            elif master_view.replicas or master_view.sentinels:
                peers_field = draw(st.sampled_from([f for f in ("replicas", "sentinels") if getattr(master_view, f)]))
                peers: tuple[SentinelPeer, ...] = getattr(master_view, peers_field)
                i = draw(st.integers(0, len(peers) - 1))
                peers = (*peers[:i], _mutate(draw, peers[i]), *peers[i + 1 :])
                if peers_field == "replicas":
                    master_view = dataclasses.replace(master_view, replicas=peers)
                else:
                    master_view = dataclasses.replace(master_view, sentinels=peers)
            sentinel = dataclasses.replace(report.sentinel, masters=(master_view, *report.sentinel.masters[1:]))
            report = dataclasses.replace(report, sentinel=sentinel)
        elif part == "connected" and report.redis.connected_replicas:
            entries = report.redis.connected_replicas
            i = draw(st.integers(0, len(entries) - 1))
            entry: ConnectedReplica = _mutate(draw, entries[i])
            redis = dataclasses.replace(report.redis, connected_replicas=(*entries[:i], entry, *entries[i + 1 :]))
            report = dataclasses.replace(report, redis=redis)
        elif part == "host":
            report = dataclasses.replace(report, host=_mutate(draw, report.host))
        elif part == "identity":
            # The store keys reports by (cluster, node): one view never holds two reports of one node.
            report = dataclasses.replace(report, identity=_mutate(draw, report.identity, keep=("cluster", "node")))
        if part == "drop":
            view = dataclasses.replace(view, nodes=view.nodes[:index] + view.nodes[index + 1 :])
            continue
        received_at = state.received_at
        if part == "age":
            received_at = view.now - draw(st.floats(-5.0, 100.0))
        nodes = list(view.nodes)
        nodes[index] = NodeState(report, received_at)
        view = dataclasses.replace(view, nodes=tuple(nodes))
    return view


def recorded_or_synthetic() -> st.SearchStrategy[ClusterView]:
    recorded = st.sampled_from(["healthy", "replica2-redis-killed", "sentinel3-killed"]).map(scenario_view)
    return st.one_of(recorded, healthy_views())


# -- properties ------------------------------------------------------------------------------------------


@FAST
@given(healthy_views())
def test_healthy_cluster_has_no_findings(view: ClusterView) -> None:
    assert check(view, POLICY, view.now) == ()


@FAST
@given(st.data())
def test_one_master_and_agreeing_sentinels_is_never_split_brain(data: st.DataObject) -> None:
    view = data.draw(mutated(data.draw(healthy_views())))
    views = view.sentinel_views()
    assume(len(view.self_declared_masters()) <= 1)
    assume(len({v.master_address for _, v in views if v.master_address}) <= 1)
    assert Code.SPLIT_BRAIN not in {f.code for f in check(view, POLICY, view.now)}


@FAST
@given(st.data())
def test_check_is_deterministic_and_ignores_node_order(data: st.DataObject) -> None:
    view = data.draw(mutated(data.draw(recorded_or_synthetic())))
    first = check(view, POLICY, view.now)
    assert check(view, POLICY, view.now) == first
    shuffled = dataclasses.replace(view, nodes=tuple(data.draw(st.permutations(view.nodes))))
    assert check(shuffled, POLICY, view.now) == first


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_check_never_raises_on_odd_data(data: st.DataObject) -> None:
    view = data.draw(mutated(data.draw(recorded_or_synthetic())))
    now = view.now + data.draw(st.sampled_from([0.0, 0.0, 2.0, 5.0, 60.0]))
    findings = check(view, POLICY, now)
    # The output contract holds on any input: sorted, unique keys, and silent nodes only ever silent.
    ranks = [f.severity.rank for f in findings]
    assert ranks == sorted(ranks, reverse=True)
    assert len({f.key for f in findings}) == len(findings)
    judged = dataclasses.replace(view, now=now)
    stale = {n.name for n in judged.nodes if not judged.is_fresh(n)}
    assert len({n.name for n in judged.nodes}) == len(judged.nodes)
    for finding in findings:
        if finding.subject_kind != "cluster" and finding.subject_name in stale:
            assert finding.code is Code.AGENT_SILENT, finding
