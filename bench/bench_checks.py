"""Micro-benchmark of the health checks: one `check()` pass over 1,000 three-node clusters.

Layer: tooling (not shipped). Clusters are the recorded sandbox reports (healthy, replica2-redis-killed,
sentinel3-killed, in turn) with the cluster name, node names and addresses rewritten, so each cluster is
distinct. Prints the median of several passes; asserts nothing. Run from the repository root:

    python bench/bench_checks.py [--clusters 1000] [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from controller.adapters.storage.reports import REPORT_ADAPTER  # noqa: E402
from controller.core.checks import check  # noqa: E402
from controller.core.policy import Policy  # noqa: E402
from controller.core.view import ClusterView, NodeState  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "reports"
SCENARIOS = ("healthy", "replica2-redis-killed", "sentinel3-killed")
NODES = ("redis-1", "redis-2", "redis-3")


def build_cluster(index: int) -> ClusterView:
    scenario = SCENARIOS[index % len(SCENARIOS)]
    name = f"bench-{index:04d}"
    subnet = f"10.{index // 250}.{index % 250}"
    nodes = []
    for node in NODES:
        text = (FIXTURES / f"{scenario}-{node}.json").read_text()
        text = text.replace('"sandbox"', f'"{name}"')
        for old, new in (("127.0.0.3", f"{subnet}.3"), ("127.0.0.4", f"{subnet}.4"), ("127.0.0.5", f"{subnet}.5")):
            text = text.replace(old, new)
        for n in NODES:
            text = text.replace(f'"{n}"', f'"{name}-{n}"')
        report = REPORT_ADAPTER.validate_json(text)
        nodes.append(NodeState(report, report.collected_at))
    return ClusterView(
        name=name,
        master_name="mymaster",
        expected_nodes=3,
        report_interval_s=1.0,
        stale_after_s=3.0,
        now=max(n.received_at for n in nodes) + 0.1,
        nodes=tuple(sorted(nodes, key=lambda n: n.name)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    views = [build_cluster(i) for i in range(args.clusters)]
    policy = Policy()
    findings = sum(len(check(v, policy, v.now)) for v in views)  # warm-up, and a sanity figure
    timings_ms = []
    for _ in range(args.runs):
        start = time.perf_counter()
        for view in views:
            check(view, policy, view.now)
        timings_ms.append((time.perf_counter() - start) * 1000)
    median_ms = statistics.median(timings_ms)
    print(
        f"check() over {len(views)} clusters of 3 nodes: median {median_ms:.1f} ms per pass "
        f"({median_ms * 1000 / len(views):.0f} us per cluster; min {min(timings_ms):.1f} ms, "
        f"max {max(timings_ms):.1f} ms over {args.runs} runs; {findings} findings per pass)"
    )


if __name__ == "__main__":
    main()
