"""The order of a drill writer's Sentinel list (`console.drill.orders`), and the summary per order with the
worst of them (`console.drill.result`): pure, no processes."""

from __future__ import annotations

import random

import pytest

from console.cluster import parse_cluster
from console.drill.observer import Observations
from console.drill.orders import SENTINEL_ORDERS, controller_order, leader_rank, order_sentinels, planned_orders
from console.drill.result import DrillResult, FaultInfo, assemble_result, render_summary, render_timeline, summarize
from console.drill.writes import LostWrites, WriteSample

S1, S2, S3, S4 = ("10.0.0.1", 26379), ("10.0.0.2", 26379), ("10.0.0.3", 26379), ("10.0.0.4", 26379)
CONTROLLER = ["10.0.0.1:26379", "10.0.0.2:26379", "10.0.0.3:26379", "10.0.0.4:26379"]


def test_all_plans_runs_rounds_of_every_order_interleaved() -> None:
    assert planned_orders("all", 2) == ["controller", "reversed", "shuffled", "controller", "reversed", "shuffled"]
    assert planned_orders("reversed", 3) == ["reversed"] * 3
    assert planned_orders("controller", 1) == ["controller"]
    with pytest.raises(ValueError, match="sideways"):
        planned_orders("sideways", 1)


def test_the_controllers_order_comes_from_the_controller_not_from_the_list_given() -> None:
    assert controller_order([S3, S1, S2], CONTROLLER) == ((S1, S2, S3), True)
    # a Sentinel the controller does not list (another address of it, say) keeps its place, after the others
    assert controller_order([S4, ("192.0.2.9", 26379), S2], CONTROLLER[:3]) == ((S2, S4, ("192.0.2.9", 26379)),
                                                                                 False)
    assert controller_order([S2, S1], []) == ((S2, S1), False)
    assert controller_order([], CONTROLLER) == ((), False)


def test_reversed_is_the_controllers_order_backwards() -> None:
    rng = random.Random(1)
    assert order_sentinels([S2, S3, S1], CONTROLLER, "controller", rng) == (S1, S2, S3)
    assert order_sentinels([S2, S3, S1], CONTROLLER, "reversed", rng) == (S3, S2, S1)


@pytest.mark.parametrize("sentinels", [[S1, S2, S3], [S4, S3, S2, S1]])
def test_shuffled_is_a_third_order_neither_the_controllers_nor_reversed(sentinels: list[tuple[str, int]]) -> None:
    base = tuple(sorted(sentinels))
    seen = set()
    for seed in range(40):
        got = order_sentinels(sentinels, CONTROLLER, "shuffled", random.Random(seed))
        assert sorted(got) == list(base)
        assert got not in (base, tuple(reversed(base)))
        seen.add(got)
    assert len(seen) > 1  # random, not one fixed third order


def test_shuffled_with_two_sentinels_is_one_of_the_two_orders() -> None:
    got = {order_sentinels([S1, S2], CONTROLLER, "shuffled", random.Random(seed)) for seed in range(20)}
    assert got == {(S1, S2), (S2, S1)}


def test_the_controllers_order_is_read_from_its_status_and_absent_from_an_older_one() -> None:
    status = {"master": "10.0.0.1:6379", "health": "healthy", "nodes": [],
              "sentinels": {"expected": 3, "reachable": 3, "agree": True, "votes": {}, "order": CONTROLLER[:3]}}
    assert parse_cluster(status).sentinel_order == tuple(CONTROLLER[:3])
    del status["sentinels"]["order"]  # type: ignore[attr-defined]
    assert parse_cluster(status).sentinel_order == ()


# -- the summary: per order, and the worst ------------------------------------------------------------------


def result(order: str | None, unavailable_s: float) -> DrillResult:
    fault_at = 100.0
    samples = [WriteSample(99.9, 1, "acked"), WriteSample(100.1, 2, "failed"),
               WriteSample(fault_at + unavailable_s, 3, "acked")]
    info = FaultInfo("kill-master", "sandbox /tmp/x", "redis-1", "10.0.0.1:6379", "10.0.0.1:6379", fault_at, "kill")
    return assemble_result(info, Observations(steps={}, findings_seen=(), actions=(), held=()), samples, 110.0,
                           LostWrites(0, 0), sentinel_order=order,
                           sentinels=["10.0.0.1:26379", "10.0.0.2:26379", "10.0.0.3:26379"])


def test_summary_gives_each_order_and_the_worst_by_median() -> None:
    runs = [result(o, u) for o, u in [("controller", 1.1), ("reversed", 2.0), ("shuffled", 1.2),
                                      ("controller", 1.2), ("reversed", 1.1), ("shuffled", 2.5),
                                      ("controller", 1.1), ("reversed", 2.1), ("shuffled", 1.1)]]
    summary = summarize(runs)
    by = {o["order"]: o for o in summary["sentinel_orders"]}
    assert [o["order"] for o in summary["sentinel_orders"]] == list(SENTINEL_ORDERS)
    assert by["controller"]["runs"] == 3 and by["controller"]["write_unavailable_s"]["median"] == 1.1
    assert by["reversed"]["write_unavailable_s"] == {"median": 2.0, "worst": 2.1, "values": [2.0, 1.1, 2.1]}
    # shuffled has the single worst run, reversed the worst median: the worst order is the one a client of that
    # order typically sees; the single worst run stays in the overall worst
    assert summary["worst_sentinel_order"] == by["reversed"]
    assert summary["write_unavailable_s"]["worst"] == 2.5
    text = render_summary(summary)
    assert "    reversed order      median 2.00 s, worst 2.10 s (3 runs)" in text
    assert "    worst order         reversed: median 2.00 s, worst 2.10 s" in text


def test_summary_of_one_order_names_it_and_of_runs_without_one_has_none() -> None:
    summary = summarize([result("controller", 1.0), result("controller", 1.4)])
    assert summary["worst_sentinel_order"] is not None and summary["worst_sentinel_order"]["order"] == "controller"
    assert "median 1.20 s, worst 1.40 s (writer's Sentinels in controller order)" in render_summary(summary)
    summary = summarize([result(None, 1.0)])
    assert summary["sentinel_orders"] == [] and summary["worst_sentinel_order"] is None
    assert "order" not in render_summary(summary)


def test_a_runs_result_and_timeline_name_its_order_and_list() -> None:
    r = result("reversed", 1.5)
    assert r["sentinel_order"] == "reversed" and r["sentinels"][0] == "10.0.0.1:26379"
    assert "writer's Sentinels (reversed order): 10.0.0.1:26379, 10.0.0.2:26379, 10.0.0.3:26379\n" in render_timeline(r)
    r["failover_leader_rank"] = 1
    assert "10.0.0.3:26379; the failover's leader is number 1" in render_timeline(r)


def test_leader_rank_is_where_the_writer_listed_the_failovers_leader() -> None:
    listed = ["10.0.0.3:26379", "10.0.0.1:26379", "10.0.0.2:26379"]
    assert leader_rank(listed, "10.0.0.3:26379") == 1 and leader_rank(listed, "10.0.0.2:26379") == 3
    assert leader_rank(listed, "10.0.0.9:26379") is None and leader_rank(listed, None) is None
