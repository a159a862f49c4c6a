"""Alerting end to end: real Redis/Sentinel faults -> findings -> incidents -> Slack, PagerDuty, webhook.

A local receiver stands in for Slack and PagerDuty and validates every payload's shape. Each scenario
injects a fault, waits (with a deadline) for the alert, undoes it and waits for the resolve.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from sandbox.receiver import Received, Receiver
from tests.conftest import Sandbox, assert_no_secret_leaks, redwarden, running_sandbox
from tests.helpers import wait_until

pytestmark = pytest.mark.sandbox
ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture(scope="module")
def alerting(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Sandbox]:
    with running_sandbox(
        tmp_path_factory.mktemp("alerting"),
        "--report-interval-s", "0.5", "--down-after-ms", "2000", "--failover-timeout-ms", "6000", "--no-heal",
        "--slack-webhook", f"{receiver.url}/slack/T000/B000/XXXXSECRETXXXX",
        "--pagerduty-url", f"{receiver.url}/pagerduty/v2/enqueue",
        "--pagerduty-routing-key", ROUTING_KEY,
        "--webhook-url", f"{receiver.url}/webhook",
    ) as sb:
        yield sb


def events(receiver: Receiver, kind: str, code: str, action: str | None = None) -> list[Received]:
    """Accepted deliveries of `code` to `kind`, optionally only triggers or resolves."""
    out = []
    for r in receiver.accepted(kind):  # type: ignore[arg-type]
        body: dict[str, Any] = r.body
        if kind == "webhook":
            match, act = body.get("code") == code, body.get("action")
        elif kind == "pagerduty":
            match = f"/{code}/" in body.get("dedup_key", "")
            act = body.get("event_action")
        else:
            match, act = code in body.get("text", ""), "resolve" if "RESOLVED" in body.get("text", "") else "trigger"
        if match and (action is None or act == action):
            out.append(r)
    return out


def with_finding(sb: Sandbox, code: str) -> dict[str, Any] | None:
    """The cluster, when its findings include `code`."""
    c = sb.cluster()
    return c if code in {f["code"] for f in c["findings"]} else None


def healthy(sb: Sandbox) -> bool:
    c = sb.cluster()
    return c["health"] == "healthy" and c["sentinels"]["reachable"] == 3 and c["master"] is not None


def test_every_delivery_has_a_valid_shape_and_no_secret_in_logs(alerting: Sandbox, receiver: Receiver) -> None:
    wait_until(lambda: healthy(alerting), 30, "a healthy cluster")
    assert all(r.valid for r in receiver.received()), [r.errors for r in receiver.received() if not r.valid]
    log = (alerting.root / "controller" / "controller.log").read_text()
    assert "XXXXSECRETXXXX" not in log and ROUTING_KEY not in log


def test_killed_replica_redis_triggers_one_replica_down_then_resolves(alerting: Sandbox, receiver: Receiver) -> None:
    wait_until(lambda: healthy(alerting), 30, "a healthy cluster")
    replica = next(n["name"] for n in alerting.cluster()["nodes"] if n["role"] == "replica")
    alerting.fault(replica, "redis", "kill")
    wait_until(lambda: events(receiver, "webhook", "REPLICA_DOWN", "trigger"), 15, "REPLICA_DOWN trigger")
    wait_until(lambda: events(receiver, "slack", "REPLICA_DOWN", "trigger"), 15, "REPLICA_DOWN on Slack")
    trigger = events(receiver, "webhook", "REPLICA_DOWN", "trigger")[0].body
    assert trigger["subject"] == f"node {replica}" and trigger["severity"] == "warning"
    assert "unreachable" in trigger["summary"] or "not running" in trigger["summary"]
    assert not events(receiver, "pagerduty", "REPLICA_DOWN")  # a warning does not page
    alerting.fault(replica, "redis", "start")
    wait_until(lambda: events(receiver, "webhook", "REPLICA_DOWN", "resolve"), 30, "REPLICA_DOWN resolve")
    assert len(events(receiver, "webhook", "REPLICA_DOWN", "trigger")) == 1
    wait_until(lambda: healthy(alerting), 30, "healthy again")
    history = redwarden("history", *alerting.conn_args()).stdout
    assert "REPLICA_DOWN" in history and "resolved after" in history


def test_sentinels_down_quorum_at_risk_then_lost(alerting: Sandbox, receiver: Receiver) -> None:
    wait_until(lambda: healthy(alerting), 30, "a healthy cluster")
    names = [n["name"] for n in alerting.cluster()["nodes"]]
    alerting.fault(names[1], "sentinel", "kill")
    try:
        wait_until(lambda: {"SENTINEL_DOWN", "QUORUM_AT_RISK"} <= {f["code"] for f in alerting.cluster()["findings"]},
                   15, "SENTINEL_DOWN and QUORUM_AT_RISK")
        alerting.fault(names[2], "sentinel", "kill")
        cluster = wait_until(lambda: with_finding(alerting, "QUORUM_LOST"), 15, "QUORUM_LOST")
        assert cluster["health"] == "critical"
        wait_until(lambda: events(receiver, "pagerduty", "QUORUM_LOST", "trigger"), 15, "QUORUM_LOST pages")
        page = events(receiver, "pagerduty", "QUORUM_LOST", "trigger")[0].body
        assert page["routing_key"] == ROUTING_KEY and page["payload"]["severity"] == "critical"
        assert page["payload"]["custom_details"]
    finally:
        alerting.fault(names[1], "sentinel", "start")
        alerting.fault(names[2], "sentinel", "start")
    wait_until(lambda: events(receiver, "pagerduty", "QUORUM_LOST", "resolve"), 30, "QUORUM_LOST resolves")
    wait_until(lambda: healthy(alerting), 30, "healthy again")


def test_alerts_wait_out_a_receiver_outage(alerting: Sandbox, receiver: Receiver) -> None:
    wait_until(lambda: healthy(alerting), 30, "a healthy cluster")
    replica = next(n["name"] for n in alerting.cluster()["nodes"] if n["role"] == "replica")
    before = len(events(receiver, "webhook", "REPLICA_DOWN"))
    receiver.set_mode("down")
    try:
        alerting.fault(replica, "redis", "kill")
        wait_until(lambda: any(r.status == 503 and isinstance(r.body, dict) and r.body.get("code") == "REPLICA_DOWN"
                               for r in receiver.received("webhook")), 20,
                   "the REPLICA_DOWN trigger refused while the receiver is down")
        alerting.fault(replica, "redis", "start")
        wait_until(lambda: healthy(alerting), 30, "healthy again while the receiver is still down")
    finally:
        receiver.set_mode("up")
    got = wait_until(lambda: e if len(e := events(receiver, "webhook", "REPLICA_DOWN")) >= before + 2 else None,
                     60, "the trigger and the resolve delivered after the outage")
    assert [r.body["action"] for r in got[before:]] == ["trigger", "resolve"]


def test_frozen_master_is_master_down_then_failover(alerting: Sandbox, receiver: Receiver) -> None:
    wait_until(lambda: healthy(alerting), 30, "a healthy cluster")
    cluster = alerting.cluster()
    old = next(n for n in cluster["nodes"] if n["role"] == "master")
    alerting.fault(old["name"], "redis", "freeze")
    try:
        wait_until(lambda: events(receiver, "pagerduty", "MASTER_DOWN", "trigger")
                   or events(receiver, "pagerduty", "MASTER_UNREACHABLE", "trigger"), 30, "the master's loss paged")
        new = wait_until(lambda: m if (m := alerting.cluster()["master"]) not in (None, old["address"]) else None,
                         40, "Sentinel failed over to a new master")
    finally:
        alerting.fault(old["name"], "redis", "thaw")
    wait_until(lambda: alerting.node(old["name"])["role"] == "replica", 40, "the old master rejoins as a replica")
    st = alerting.status()
    client = redis.Redis(host=new.split(":")[0], password=st["redis_password"],
                    username=st.get("redis_username"), socket_timeout=2)
    assert client.set("after-failover", "1")
    client.close()
    wait_until(lambda: healthy(alerting), 60, "healthy again")


def test_status_and_history_json_carry_health_and_findings(alerting: Sandbox, tmp_path: Path) -> None:
    c = alerting.cluster()
    assert c["health"] in ("healthy", "degraded", "critical")
    assert isinstance(c["findings"], list)
    for f in c["findings"]:
        assert set(f) >= {"code", "severity", "subject", "message"}


def test_no_secret_leaked_after_the_alerts(alerting: Sandbox) -> None:
    """Webhook URLs and the routing key went out with every alert: none of them (nor any other secret) in
    a log, an API answer, an outbox row or a command line."""
    assert_no_secret_leaks(alerting)
