"""Healing end to end on the sandbox, through the local DigitalOcean API (real pydo, real droplets).

Stories: a killed master is failed over at once, its leading Sentinel's down-after lowered and set back;
a destroyed master droplet is failed over by Sentinel and then replaced; the API failing with
500 (after committing) and 429 during the replacement's create still yields one droplet; a controller
killed in the middle of a reprovision finishes it after a restart; a paused cluster, a dry run and an
exhausted budget take no action and say why.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest
import redis
import requests

from agent import processes as runner
from controller.adapters.cloud import PydoCloud
from sandbox.cluster import controller_spec
from sandbox.receiver import Receiver
from tests.conftest import Sandbox, assert_no_secret_leaks, redwarden, running_sandbox
from tests.helpers import wait_until

pytestmark = pytest.mark.sandbox

FAST = ("--report-interval-s", "0.5", "--down-after-ms", "2000", "--failover-timeout-ms", "6000",
        "--sentinel-reset-interval-s", "2")


@pytest.fixture(scope="module")
def pages() -> Iterator[Receiver]:
    """A local PagerDuty: what the healing sandbox would page someone for."""
    with Receiver() as r:
        yield r


@pytest.fixture(scope="module")
def healing(tmp_path_factory: pytest.TempPathFactory, pages: Receiver) -> Iterator[Sandbox]:
    with running_sandbox(tmp_path_factory.mktemp("healing"), *FAST, "--reserved-ip",
                         "--pagerduty-url", f"{pages.url}/pagerduty/v2/enqueue",
                         "--pagerduty-routing-key", "R0UT1NGKEY0123456789abcdefABCDEF") as sb:
        yield sb


def critical_pages(pages: Receiver) -> list[dict[str, Any]]:
    return [r.body for r in pages.accepted("pagerduty")
            if r.body.get("event_action") == "trigger" and r.body.get("payload", {}).get("severity") == "critical"]


def api(sb: Sandbox) -> requests.Session:
    st = sb.status()
    s = requests.Session()
    s.trust_env = False
    s.verify = st["do_ca_cert"]
    s.headers["Authorization"] = f"Bearer {st['do_token']}"
    s.base_url = st["do_api_url"]  # type: ignore[attr-defined]
    return s


def cloud(sb: Sandbox) -> PydoCloud:
    st = sb.status()
    return PydoCloud(st["do_token"], api_url=st["do_api_url"], ca_path=st["do_ca_cert"])


def fully_healthy(sb: Sandbox) -> dict[str, Any] | None:
    """3 live nodes, 1 master + 2 linked replicas, every Sentinel listing exactly the live others."""
    c = sb.cluster()
    live = [n for n in c["nodes"] if not n["stale"]]
    if len(c["nodes"]) != 3 or len(live) != 3 or c["health"] != "healthy":
        return None
    if sorted(n["role"] for n in live) != ["master", "replica", "replica"]:
        return None
    if any(n["sentinel_known_sentinels"] != 2 or n["sentinel_known_replicas"] != 2 for n in live):
        return None
    return c


def healthy_without(sb: Sandbox, name: str) -> dict[str, Any] | None:
    """The cluster once fully healthy again with the node `name` gone from it (replaced)."""
    c = fully_healthy(sb)
    return c if c is not None and name not in {n["name"] for n in c["nodes"]} else None


def sentinel_tables(sb: Sandbox) -> dict[str, tuple[set[str], set[str]]]:
    """Each Sentinel's replicas and peers, asked directly."""
    out = {}
    for d in sb.status()["droplets"]:
        if d["status"] != "active":
            continue
        s = redis.Redis(host=d["address"], port=26379, decode_responses=True, socket_timeout=2)
        try:
            replicas = {f"{r['ip']}:{r['port']}" for r in s.sentinel_slaves("mymaster")}
            peers = {f"{p['ip']}:{p['port']}" for p in s.sentinel_sentinels("mymaster")}
        finally:
            s.close()
        out[d["name"]] = (replicas, peers)
    return out


def gone_or_stale(sb: Sandbox, name: str) -> bool:
    return all(n["stale"] for n in sb.cluster()["nodes"] if n["name"] == name)


def held_because(sb: Sandbox, words: str) -> dict[str, Any] | None:
    """The cluster's heal status when its plan holds something back for a reason containing `words`."""
    heal: dict[str, Any] = sb.cluster()["heal"]
    return heal if any(words in h["reason"] for h in heal["held"]) else None


def tables_exact(sb: Sandbox) -> bool:
    """Every Sentinel lists exactly the live replicas and the other live Sentinels (no stale entries)."""
    c = sb.cluster()
    live = {n["address"] for n in c["nodes"] if not n["stale"]}
    for name, (replicas, peers) in sentinel_tables(sb).items():
        me = next(n["address"] for n in c["nodes"] if n["name"] == name)
        if replicas != live - {c["master"]} or {p.replace(":26379", ":6379") for p in peers} != live - {me}:
            return False
    return True


def actions(sb: Sandbox, kind: str | None = None) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = sb.session.get(f"{sb.controller_url}/v1/actions?limit=500", timeout=5).json()["actions"]
    return [a for a in got if kind is None or a["kind"] == kind]


def reserved_ip_droplet(sb: Sandbox) -> int | None:
    rip = cloud(sb).get_reserved_ip(sb.status()["reserved_ip"])
    return rip.droplet_id if rip else None


def master_droplet(sb: Sandbox) -> int | None:
    c = sb.cluster()
    name = next((n["name"] for n in c["nodes"] if n["address"] == c["master"]), None)
    return next((d["id"] for d in sb.status()["droplets"] if d["name"] == name), None)


def test_the_reserved_ip_follows_the_master_through_a_fast_failover(healing: Sandbox) -> None:
    wait_until(lambda: fully_healthy(healing), 90, "a fully healthy cluster")
    first = wait_until(lambda: d if (d := reserved_ip_droplet(healing)) == master_droplet(healing) else None, 30,
                       "the reserved IP on the master's droplet")
    old = healing.cluster()
    old_master = next(n for n in old["nodes"] if n["address"] == old["master"])
    healing.fault(old_master["name"], "redis", "kill")
    wait_until(lambda: healing.cluster()["master"] not in (None, old["master"]), 30, "a new master")
    moved = wait_until(lambda: d if (d := reserved_ip_droplet(healing)) not in (None, first)
                       and d == master_droplet(healing) else None, 30, "the reserved IP on the new master's droplet")
    assert moved != first
    failover = [a for a in actions(healing, "Failover") if a["status"] == "succeeded"]
    assert failover, "fast failover asked Sentinel at once"
    wait_until(lambda: healing.node(old_master["name"])["role"] == "replica", 60, "the old master back as a replica")
    wait_until(lambda: fully_healthy(healing), 90, "healthy again")
    # the Sentinel asked to fail over had its down-after lowered with it, and set back once the failover ended:
    # every Sentinel runs with the configured value again, and nothing is owed
    changes = [(a["node"], a["description"], a["status"]) for a in reversed(actions(healing, "SentinelDownAfter"))]
    leader = failover[-1]["node"]
    assert (leader, "SENTINEL SET down-after-milliseconds 300 on " + leader, "succeeded") in changes
    assert (leader, "SENTINEL SET down-after-milliseconds 2000 on " + leader, "succeeded") in changes
    assert {node for node, _, _ in changes} == {leader}  # never another Sentinel's
    assert sentinel_down_afters(healing) == dict.fromkeys(sentinel_down_afters(healing), 2000)
    assert len(sentinel_down_afters(healing)) == 3
    assert healing.cluster()["heal"]["sentinel_down_after_owed"] == []


def ask_sentinels(sb: Sandbox, ask: Callable[[redis.Redis], int]) -> dict[str, int]:
    """`ask` of each active droplet's Sentinel, directly."""
    out = {}
    for d in sb.status()["droplets"]:
        if d["status"] != "active":
            continue
        s = redis.Redis(host=d["address"], port=26379, decode_responses=True, socket_timeout=2)
        try:
            out[d["name"]] = ask(s)
        finally:
            s.close()
    return out


def sentinel_down_afters(sb: Sandbox) -> dict[str, int]:
    """Each Sentinel's down-after-milliseconds for the master."""
    return ask_sentinels(sb, lambda s: int(s.sentinel_master("mymaster")["down-after-milliseconds"]))


def sentinel_info_periods(sb: Sandbox) -> dict[str, int]:
    """Each Sentinel's INFO-PERIOD (SENTINEL DEBUG)."""
    return ask_sentinels(sb, lambda s: int(s.execute_command("SENTINEL", "DEBUG")["INFO-PERIOD"]))


def assert_info_periods_restored(sb: Sandbox) -> None:
    """The reset sequence lowered each Sentinel it reset to INFO-PERIOD 1000 ms and set every one back."""
    lowered = [a["node"] for a in actions(sb, "ResetSentinel") if "INFO-PERIOD 10000 -> 1000 ms first" in a["detail"]]
    assert lowered, "no Sentinel reset with its INFO-PERIOD lowered"
    wait_until(lambda: sb.cluster()["heal"]["sentinel_info_period_owed"] == [], 30, "nothing owed")
    restored = {a["node"] for a in actions(sb, "SentinelInfoPeriod") if a["status"] == "succeeded"}
    assert set(lowered) <= restored
    periods = sentinel_info_periods(sb)
    assert len(periods) == 3 and set(periods.values()) == {10000}, periods


def test_destroyed_master_droplet_fails_over_then_is_replaced(healing: Sandbox) -> None:
    before = wait_until(lambda: fully_healthy(healing), 90, "a fully healthy cluster")
    master = next(n for n in before["nodes"] if n["role"] == "master")
    droplet_id = next(d["id"] for d in healing.status()["droplets"] if d["name"] == master["name"])
    assert cloud(healing).destroy_droplet(droplet_id)
    new_master = wait_until(lambda: m if (m := healing.cluster()["master"]) not in (None, master["address"]) else None,
                            60, "Sentinel's failover to a new master")
    after = wait_until(lambda: healthy_without(healing, master["name"]), 240,
                       "the lost node replaced: 3 healthy nodes again")
    names = {n["name"] for n in after["nodes"]}
    assert master["name"] not in names and len(names) == 3
    assert after["master"] == new_master
    wait_until(lambda: tables_exact(healing), 60, "every Sentinel listing exactly the live replicas and Sentinels")
    kinds = [a["kind"] for a in actions(healing)]
    assert "CreateReplacement" in kinds and "ResetSentinel" in kinds and "FinishReprovision" in kinds
    assert "PowerCycle" not in kinds  # never on the (then) master's droplet: it was gone, not silent


def test_create_failing_with_500_after_commit_and_429_yields_one_replacement(healing: Sandbox, pages: Receiver) -> None:
    wait_until(lambda: fully_healthy(healing), 90, "a fully healthy cluster")
    paged_before = len(critical_pages(pages))
    s = api(healing)
    base = s.base_url  # type: ignore[attr-defined]
    s.delete(f"{base}/_sandbox/requests").raise_for_status()
    s.post(f"{base}/_sandbox/faults", json={"fail": [
        {"method": "POST", "path_regex": "^/v2/droplets$", "status": 500, "count": 1, "after_commit": True},
        {"method": "GET", "path_regex": "^/v2/droplets$", "status": 429, "count": 1, "retry_after_s": 1},
    ]}).raise_for_status()
    try:
        replica = next(n for n in healing.cluster()["nodes"] if n["role"] == "replica")
        droplet_id = next(d["id"] for d in healing.status()["droplets"] if d["name"] == replica["name"])
        before = {d["id"] for d in healing.status()["droplets"]}
        assert cloud(healing).destroy_droplet(droplet_id)
        wait_until(lambda: gone_or_stale(healing, replica["name"]), 15, "the destroyed replica seen silent")
        after = wait_until(lambda: healthy_without(healing, replica["name"]), 240, "the replica replaced")
    finally:
        s.delete(f"{base}/_sandbox/faults")
    created = {d["id"] for d in healing.status()["droplets"] if d["status"] != "archive"} - before
    assert len(created) == 1, f"replacement droplets: {created}"
    log = s.get(f"{base}/_sandbox/requests").json()["requests"]
    posts = [r["status"] for r in log if r["method"] == "POST" and r["path"] == "/v2/droplets"]
    assert posts == [500]  # the create happened, its answer was lost: the adapter adopted it, no second POST
    assert 429 in [r["status"] for r in log if r["method"] == "GET" and r["path"] == "/v2/droplets"]
    assert replica["name"] not in {n["name"] for n in after["nodes"]}
    wait_until(lambda: tables_exact(healing), 60, "the Sentinel reset sequence done")
    assert_info_periods_restored(healing)
    # a replica replaced, its Sentinel reset sequence run: routine, planned, nobody paged (issue 12)
    assert critical_pages(pages)[paged_before:] == []


def test_controller_killed_mid_reprovision_finishes_with_one_replacement(healing: Sandbox) -> None:
    wait_until(lambda: fully_healthy(healing), 90, "a fully healthy cluster")
    replica = next(n for n in healing.cluster()["nodes"] if n["role"] == "replica")
    droplet_id = next(d["id"] for d in healing.status()["droplets"] if d["name"] == replica["name"])
    before = {d["id"] for d in healing.status()["droplets"]}
    mark = max((a["id"] for a in actions(healing)), default=0)  # earlier tests' replacements don't count
    assert cloud(healing).destroy_droplet(droplet_id)
    wait_until(lambda: any(a["kind"] == "CreateReplacement" and a["status"] == "succeeded" and a["id"] > mark
                           for a in actions(healing)), 60, "this replacement's create")
    spec = controller_spec(healing.root)
    pid = runner.pid_of(spec)
    assert pid is not None
    psutil.Process(pid).send_signal(signal.SIGKILL)
    runner.wait_gone([pid], 10)
    runner.start(spec)
    after = wait_until(lambda: healthy_without(healing, replica["name"]), 240,
                       "the reprovision finished after the restart")
    created = {d["id"] for d in healing.status()["droplets"] if d["status"] != "archive"} - before
    assert len(created) == 1, f"replacement droplets: {created}"
    assert replica["name"] not in {n["name"] for n in after["nodes"]}
    heal = healing.cluster()["heal"]
    assert heal["reprovision"] is None


def test_paused_cluster_takes_no_action_and_says_why(healing: Sandbox) -> None:
    wait_until(lambda: fully_healthy(healing), 90, "a fully healthy cluster")
    replica = next(n["name"] for n in healing.cluster()["nodes"] if n["role"] == "replica")
    out = redwarden("pause", "sandbox", *healing.conn_args()).stdout
    assert "paused=True" in out
    restarts_before = len(actions(healing, "RestartService"))
    healing.fault(replica, "redis", "kill")
    try:
        held = wait_until(lambda: held_because(healing, "paused"), 30, "the plan held back by the pause")
        assert held["paused"] is True
        # several cycles later: still down, still nothing done
        wait_until(lambda: any(f["code"] == "REPLICA_DOWN" for f in healing.cluster()["findings"]), 10, "REPLICA_DOWN")
        assert len(actions(healing, "RestartService")) == restarts_before
        assert not healing.node(replica)["redis_up"]
    finally:
        redwarden("resume", "sandbox", *healing.conn_args())
    wait_until(lambda: healing.node(replica)["redis_up"], 60, "healed after resume")
    assert len(actions(healing, "RestartService")) > restarts_before


def test_no_secret_leaked_after_failovers_and_replacements(healing: Sandbox) -> None:
    """After creation, fast failovers, replacements and a controller restart: no secret anywhere it should
    not be (logs, API answers, audit and outbox rows, command lines)."""
    assert_no_secret_leaks(healing)


@pytest.fixture(scope="module")
def cautious(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """Dry-run healing: plans and records, acts on nothing."""
    with running_sandbox(tmp_path_factory.mktemp("cautious"), *FAST, "--dry-run") as sb:
        yield sb


def test_dry_run_plans_and_records_but_acts_on_nothing(cautious: Sandbox) -> None:
    wait_until(lambda: fully_healthy(cautious), 90, "a fully healthy cluster")
    replica = next(n["name"] for n in cautious.cluster()["nodes"] if n["role"] == "replica")
    cautious.fault(replica, "redis", "kill")
    try:
        planned = wait_until(lambda: [a for a in actions(cautious) if a["status"] == "dry-run"
                                      and a["node"] == replica], 30, "a dry-run restart recorded")
        assert planned[0]["kind"] == "RestartService"
        assert cautious.cluster()["heal"]["dry_run"] is True
        # the operator's own node creations are real (and audited); nothing the healer planned was done
        assert not any(a["status"] in ("succeeded", "sent", "started") for a in actions(cautious)
                       if a["kind"] != "CreateNode")
        assert not cautious.node(replica)["redis_up"]
    finally:
        cautious.fault(replica, "redis", "start")


def test_exhausted_budget_alerts_only_until_acknowledged(tmp_path_factory: pytest.TempPathFactory) -> None:
    # creating the 3 nodes counts against the budget too (issue #10): 3 of 4, leaving one heal
    with running_sandbox(tmp_path_factory.mktemp("budget"), *FAST, "--daily-budget", "4") as sb:
        assert [a["kind"] for a in actions(sb)].count("CreateNode") == 3
        wait_until(lambda: fully_healthy(sb), 90, "a fully healthy cluster")
        replica = next(n["name"] for n in sb.cluster()["nodes"] if n["role"] == "replica")
        sb.fault(replica, "redis", "kill")
        wait_until(lambda: not sb.node(replica)["redis_up"], 10, "redis shown down")
        wait_until(lambda: actions(sb, "RestartService") and sb.node(replica)["redis_up"], 60,
                   "the first restart (the whole budget)")
        sb.fault(replica, "redis", "kill")
        wait_until(lambda: held_because(sb, "daily budget"), 30, "the budget rail holding the second restart")
        assert not sb.node(replica)["redis_up"]
        assert "acked=True" in redwarden("ack", "sandbox", *sb.conn_args()).stdout
        wait_until(lambda: sb.node(replica)["redis_up"], 60, "healed after the acknowledgement")
        status = json.loads(redwarden("status", "--json", *sb.conn_args()).stdout)
        assert status["clusters"][0]["heal"]["budget"]["acked"] is True
