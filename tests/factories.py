"""Test factories for the pure core: recorded reports as `ClusterView`s, and small edits of them.

Layer: tests. The recorded reports in fixtures/reports/ come from the 3-node sandbox (master redis-1 at
127.0.0.3:6379, replicas at 127.0.0.4 and 127.0.0.5). Every edit goes through `dataclasses.replace`, so
a case reads as "the healthy cluster, except ...". `synthetic_view` builds clusters of any size from the
same recorded reports, for property tests and the benchmark.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from controller.adapters.storage.reports import REPORT_ADAPTER
from controller.core.view import ClusterView, NodeState
from protocol.report import (
    ConnectedReplica,
    HostHealth,
    Identity,
    RedisHealth,
    Report,
    SentinelHealth,
    SentinelMasterView,
    SentinelPeer,
)

FIXTURES = Path(__file__).parent / "fixtures" / "reports"
SCENARIOS = ("healthy", "replica2-redis-killed", "sentinel3-killed")
NODES = ("redis-1", "redis-2", "redis-3")
MASTER_NAME = "mymaster"
CLUSTER = "sandbox"
MASTER = "127.0.0.3:6379"


@functools.cache
def load_report(scenario: str, node: str) -> Report:
    return REPORT_ADAPTER.validate_json((FIXTURES / f"{scenario}-{node}.json").read_bytes())


def load_scenario(scenario: str) -> tuple[Report, ...]:
    return tuple(load_report(scenario, node) for node in NODES)


def make_view(
    reports: Sequence[Report],
    *,
    now: float | None = None,
    ages_s: Mapping[str, float] | None = None,
    expected_nodes: int = 3,
    report_interval_s: float = 1.0,
    stale_after_s: float = 3.0,
    name: str = CLUSTER,
    master_name: str = MASTER_NAME,
) -> ClusterView:
    """A view of `reports`, each received when it was collected (or `ages_s[node]` before `now`);
    `now` defaults to 0.1 s after the newest collection."""
    if now is None:
        now = max(r.collected_at for r in reports) + 0.1
    ages_s = ages_s or {}
    nodes = tuple(
        sorted(
            (
                NodeState(r, now - ages_s[r.identity.node] if r.identity.node in ages_s else r.collected_at)
                for r in reports
            ),
            key=lambda n: n.name,
        )
    )
    return ClusterView(
        name=name,
        master_name=master_name,
        expected_nodes=expected_nodes,
        report_interval_s=report_interval_s,
        stale_after_s=stale_after_s,
        now=now,
        nodes=nodes,
    )


def scenario_view(scenario: str, **kwargs: Any) -> ClusterView:
    return make_view(load_scenario(scenario), **kwargs)


# -- edits -----------------------------------------------------------------------------------------------


def _edit_node(view: ClusterView, node: str, edit: Any) -> ClusterView:
    found = False
    nodes = []
    for state in view.nodes:
        if state.name == node:
            found = True
            state = edit(state)
        nodes.append(state)
    if not found:
        raise KeyError(f"no node {node!r} in the view")
    return dataclasses.replace(view, nodes=tuple(nodes))


def with_report(view: ClusterView, node: str, **changes: Any) -> ClusterView:
    """Replace fields of a node's `Report` (identity, seq, ...)."""
    return _edit_node(view, node, lambda s: dataclasses.replace(s, report=dataclasses.replace(s.report, **changes)))


def with_redis(view: ClusterView, node: str, **changes: Any) -> ClusterView:
    return _edit_node(
        view,
        node,
        lambda s: dataclasses.replace(
            s, report=dataclasses.replace(s.report, redis=dataclasses.replace(s.report.redis, **changes))
        ),
    )


def with_sentinel(view: ClusterView, node: str, **changes: Any) -> ClusterView:
    return _edit_node(
        view,
        node,
        lambda s: dataclasses.replace(
            s, report=dataclasses.replace(s.report, sentinel=dataclasses.replace(s.report.sentinel, **changes))
        ),
    )


def with_sentinel_master(view: ClusterView, node: str, **changes: Any) -> ClusterView:
    """Replace fields of what a node's Sentinel believes about the cluster's master."""

    def edit(state: NodeState) -> NodeState:
        sentinel = state.report.sentinel
        masters = tuple(
            dataclasses.replace(m, **changes) if m.name == view.master_name else m for m in sentinel.masters
        )
        return dataclasses.replace(
            state, report=dataclasses.replace(state.report, sentinel=dataclasses.replace(sentinel, masters=masters))
        )

    return _edit_node(view, node, edit)


def with_host(view: ClusterView, node: str, **changes: Any) -> ClusterView:
    return _edit_node(
        view,
        node,
        lambda s: dataclasses.replace(
            s, report=dataclasses.replace(s.report, host=dataclasses.replace(s.report.host, **changes))
        ),
    )


def with_age(view: ClusterView, node: str, age_s: float) -> ClusterView:
    """Make a node's latest report `age_s` old at `view.now`."""
    return _edit_node(view, node, lambda s: dataclasses.replace(s, received_at=view.now - age_s))


def without_node(view: ClusterView, node: str) -> ClusterView:
    return dataclasses.replace(view, nodes=tuple(n for n in view.nodes if n.name != node))


def kill_redis(view: ClusterView, node: str) -> ClusterView:
    """What an agent reports once its redis-server is SIGKILLed."""
    address = next(n.report.identity.redis_address for n in view.nodes if n.name == node)
    view = with_redis(view, node, reachable=False, error=f"ConnectionError: Error 111 connecting to {address}.")
    return with_host(view, node, redis_process=dataclasses.replace(_host(view, node).redis_process, alive=False))


def kill_sentinel(view: ClusterView, node: str) -> ClusterView:
    """What an agent reports once its redis-sentinel is SIGKILLed."""
    view = with_sentinel(
        view, node, reachable=False, error="ConnectionError: Error 111. Connection refused.", masters=()
    )
    return with_host(view, node, sentinel_process=dataclasses.replace(_host(view, node).sentinel_process, alive=False))


def _host(view: ClusterView, node: str) -> HostHealth:
    return next(n.report.host for n in view.nodes if n.name == node)


# -- synthetic clusters ----------------------------------------------------------------------------------


def synthetic_view(
    n_nodes: int = 3,
    *,
    cluster: str = CLUSTER,
    subnet: str = "10.0.0",
    master_index: int = 0,
    master_offset: int = 1_000_000,
    behind_bytes: Sequence[int] = (),
    last_io_s: Sequence[int] = (),
    lag_s: Sequence[int] = (),
    ages_s: Sequence[float] = (),
    now: float = 2_000_000_000.0,
    quorum: int | None = None,
    config_epoch: int = 0,
) -> ClusterView:
    """A healthy cluster of `n_nodes` at `subnet`.1.. (names `{cluster}-1`...), built from the recorded healthy
    reports: one master, the rest replicas. Per-replica sequences (`behind_bytes`, `last_io_s`, `lag_s`, in
    replica order) and per-node `ages_s` default to 0."""
    master_template, replica_template = load_report("healthy", "redis-1"), load_report("healthy", "redis-2")
    names = [f"{cluster}-{i + 1}" for i in range(n_nodes)]
    ips = [f"{subnet}.{i + 1}" for i in range(n_nodes)]
    master_ip = ips[master_index]
    master_address = f"{master_ip}:6379"
    replica_indexes = [i for i in range(n_nodes) if i != master_index]
    quorum = quorum if quorum is not None else n_nodes // 2 + 1

    def per_replica(values: Sequence[int], j: int) -> int:
        return values[j] if j < len(values) else 0

    replica_offset = {i: master_offset - per_replica(behind_bytes, j) for j, i in enumerate(replica_indexes)}
    connected = tuple(
        ConnectedReplica(f"{ips[i]}:6379", "online", replica_offset[i], per_replica(lag_s, j))
        for j, i in enumerate(replica_indexes)
    )
    sentinel_replicas = tuple(
        SentinelPeer(f"{ips[i]}:6379", ("slave",), run_id=f"run-{cluster}-{i}", master_link_status="ok")
        for i in replica_indexes
    )
    template_view = master_template.sentinel.masters[0]
    reports = []
    for i in range(n_nodes):
        template = master_template if i == master_index else replica_template
        if i == master_index:
            redis: RedisHealth = dataclasses.replace(
                template.redis, master_repl_offset=master_offset, connected_replicas=connected
            )
        else:
            j = replica_indexes.index(i)
            redis = dataclasses.replace(
                template.redis,
                master_host=master_ip,
                master_repl_offset=replica_offset[i],
                replica_repl_offset=replica_offset[i],
                master_last_io_s=per_replica(last_io_s, j),
            )
        sentinel_view: SentinelMasterView = dataclasses.replace(
            template_view,
            name=MASTER_NAME,
            master_address=master_address,
            config_epoch=config_epoch,
            quorum=quorum,
            num_other_sentinels=n_nodes - 1,
            replicas=sentinel_replicas,
            sentinels=tuple(
                SentinelPeer(f"{ips[k]}:26379", ("sentinel",), run_id=f"sentinel-{cluster}-{k}")
                for k in range(n_nodes)
                if k != i
            ),
        )
        reports.append(
            Report(
                identity=Identity(cluster=cluster, node=names[i], address=ips[i]),
                collected_at=now,
                seq=1,
                redis=redis,
                sentinel=SentinelHealth(reachable=True, myid=f"sentinel-{cluster}-{i}", masters=(sentinel_view,)),
                host=template.host,
            )
        )
    nodes = tuple(NodeState(r, now - (ages_s[i] if i < len(ages_s) else 0.0)) for i, r in enumerate(reports))
    return ClusterView(
        name=cluster,
        master_name=MASTER_NAME,
        expected_nodes=n_nodes,
        report_interval_s=1.0,
        stale_after_s=3.0,
        now=now,
        nodes=tuple(sorted(nodes, key=lambda n: n.name)),
    )
