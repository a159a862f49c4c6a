"""Alert payloads, the local receiver that stands in for Slack/PagerDuty/webhooks, and the senders."""

from __future__ import annotations

import dataclasses
import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from controller.adapters.notify import (
    DeliveryResult,
    PagerDutyNotifier,
    SlackNotifier,
    WebhookNotifier,
    admits,
    build_notifiers,
    pagerduty_payload,
    parse_retry_after,
    route,
    slack_payload,
    webhook_payload,
)
from controller.core.alerts import AlertEvent
from controller.notify_config import PAGERDUTY_EVENTS_URL, NotifyConfig, WebhookConfig
from protocol.settings import ConfigError, load_settings
from sandbox.receiver import Receiver, validate_pagerduty, validate_slack

ROUTING_KEY = "R0UT1NGKEYSECRETR0UT1NGKEYSECRET"  # 32 characters, like a real one
SLACK_SECRET = "XOXSECRETxoxsecretXOXSECRET"


def make_event(**changes: Any) -> AlertEvent:
    event = AlertEvent(
        event_id="ev-1",
        action="trigger",
        incident_key="sandbox/MASTER_DOWN/redis-1",
        cluster="sandbox",
        code="MASTER_DOWN",
        severity="critical",
        subject="node redis-1",
        summary="redis-1 has not answered PING for 12 s; 2 of 3 sentinels see it down",
        evidence=(("down_for_s", 12.0), ("sentinels_agreeing", 2), ("master", "127.0.0.3:6379")),
        opened_at=1_700_000_000.0,
        at=1_700_000_000.0,
    )
    return dataclasses.replace(event, **changes)


def resolve_of(event: AlertEvent, at_offset_s: float = 125.0) -> AlertEvent:
    return dataclasses.replace(
        event, event_id=event.event_id + "-r", action="resolve", at=event.opened_at + at_offset_s
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    r = Receiver(log_path=tmp_path / "received.jsonl").start()
    try:
        yield r
    finally:
        r.stop()


# -- payload builders ---------------------------------------------------------------------------------


def test_slack_trigger_payload_carries_severity_cluster_code_subject_summary_and_evidence() -> None:
    body = slack_payload(make_event())
    assert body["text"].startswith(":red_circle: CRITICAL [sandbox] MASTER_DOWN on node redis-1")
    assert "12 s" in body["text"]
    header, section, evidence, context = body["blocks"]
    assert header["type"] == "header" and header["text"]["type"] == "plain_text"
    assert "MASTER_DOWN" in header["text"]["text"]
    assert section["text"]["text"] == make_event().summary
    field_texts = [f["text"] for f in section["fields"]]
    assert field_texts == [
        "*Severity*\ncritical",
        "*Cluster*\nsandbox",
        "*Code*\nMASTER_DOWN",
        "*Subject*\nnode redis-1",
    ]
    assert [f["text"] for f in evidence["fields"]] == [
        "*down_for_s*\n12.0",
        "*sentinels_agreeing*\n2",
        "*master*\n127.0.0.3:6379",
    ]
    assert context["type"] == "context" and "sandbox/MASTER_DOWN/redis-1" in context["elements"][0]["text"]
    assert validate_slack(body) == []


def test_slack_resolve_is_distinct_and_says_how_long() -> None:
    body = slack_payload(resolve_of(make_event()))
    assert body["text"].startswith(":white_check_mark: RESOLVED [sandbox] MASTER_DOWN on node redis-1")
    assert body["blocks"][1]["text"]["text"].startswith("Resolved after 2m 05s: ")
    assert validate_slack(body) == []


def test_slack_escapes_control_characters_and_respects_block_limits() -> None:
    many = tuple((f"k{i:02d}", i) for i in range(45))
    body = slack_payload(make_event(summary="a < b & c > d", subject="x" * 400, evidence=many))
    assert body["blocks"][1]["text"]["text"] == "a &lt; b &amp; c &gt; d"
    assert len(body["blocks"][0]["text"]["text"]) <= 150
    evidence_sections = [b for b in body["blocks"][2:] if b["type"] == "section"]
    assert [len(b["fields"]) for b in evidence_sections] == [10, 10, 10, 10]
    assert "5 more evidence items" in body["blocks"][-1]["elements"][0]["text"]
    assert validate_slack(body) == []


@pytest.mark.parametrize(
    ("ours", "theirs"), [("critical", "critical"), ("warning", "warning"), ("info", "info"), ("bogus", "error")]
)
def test_pagerduty_trigger_payload(ours: str, theirs: str) -> None:
    body = pagerduty_payload(make_event(severity=ours), ROUTING_KEY)
    assert body["routing_key"] == ROUTING_KEY
    assert body["event_action"] == "trigger"
    assert body["dedup_key"] == "sandbox/MASTER_DOWN/redis-1"
    payload = body["payload"]
    assert payload["severity"] == theirs
    assert payload["source"] == "sandbox" and payload["group"] == "sandbox"
    assert payload["component"] == "node redis-1" and payload["class"] == "MASTER_DOWN"
    assert payload["custom_details"] == {"down_for_s": 12.0, "sentinels_agreeing": 2, "master": "127.0.0.3:6379"}
    assert datetime.fromisoformat(payload["timestamp"]).timestamp() == 1_700_000_000.0
    assert make_event().summary in payload["summary"]
    assert validate_pagerduty(body) == []


def test_pagerduty_summary_is_capped_and_long_dedup_keys_stay_stable() -> None:
    event = make_event(summary="s" * 5000, incident_key="k" * 400)
    body = pagerduty_payload(event, ROUTING_KEY)
    assert len(body["payload"]["summary"]) == 1024
    assert len(body["dedup_key"]) <= 255
    assert pagerduty_payload(resolve_of(event), ROUTING_KEY)["dedup_key"] == body["dedup_key"]
    assert validate_pagerduty(body) == []


def test_pagerduty_resolve_sends_only_the_key_and_the_action() -> None:
    body = pagerduty_payload(resolve_of(make_event()), ROUTING_KEY)
    assert body == {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": "sandbox/MASTER_DOWN/redis-1"}
    assert validate_pagerduty(body) == []


def test_webhook_payload_is_the_event_plus_a_version() -> None:
    body = webhook_payload(make_event())
    assert body.pop("version") == 1
    assert AlertEvent.from_dict(body) == dataclasses.replace(
        make_event(), evidence=tuple(sorted(make_event().evidence))
    )


def test_severity_routing_sends_a_resolve_where_its_trigger_went() -> None:
    assert admits("warning", "critical") and admits("warning", "warning") and not admits("warning", "info")
    assert admits("critical", "unknown")  # a malformed severity is delivered, not dropped
    slack = SlackNotifier("http://127.0.0.1:9/slack/x", min_severity="warning")
    pd = PagerDutyNotifier(ROUTING_KEY, min_severity="critical")
    hook = WebhookNotifier("http://127.0.0.1:9/webhook", min_severity="info")
    for severity, expected in [("info", ["webhook"]), ("warning", ["slack", "webhook"]), ("critical", None)]:
        trigger = make_event(severity=severity)
        names = [n.name for n in route(trigger, [slack, pd, hook])]
        assert names == (expected or ["slack", "pagerduty", "webhook"])
        assert [n.name for n in route(resolve_of(trigger), [slack, pd, hook])] == names


def test_parse_retry_after() -> None:
    assert parse_retry_after("3", 0) == 3.0
    assert parse_retry_after(None, 0) is None
    assert parse_retry_after("soon", 0) is None
    assert parse_retry_after("-5", 0) == 0.0
    assert parse_retry_after("999999", 0) == 3600.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", 1445412480.0) == 10.0


# -- the receiver -------------------------------------------------------------------------------------


def test_receiver_accepts_our_payloads(receiver: Receiver) -> None:
    event = make_event()
    r = requests.post(f"{receiver.url}/slack/T0/B0/abc", json=slack_payload(event), timeout=5)
    assert (r.status_code, r.text) == (200, "ok")
    r = requests.post(f"{receiver.url}/pagerduty/v2/enqueue", json=pagerduty_payload(event, ROUTING_KEY), timeout=5)
    assert r.status_code == 202
    assert r.json() == {"status": "success", "message": "Event processed", "dedup_key": event.incident_key}
    r = requests.post(f"{receiver.url}/webhook", json=webhook_payload(event), timeout=5)
    assert r.status_code == 200
    assert [(x.kind, x.valid, x.status) for x in receiver.received()] == [
        ("slack", True, 200),
        ("pagerduty", True, 202),
        ("webhook", True, 200),
    ]
    assert receiver.received("webhook")[0].body["version"] == 1


@pytest.mark.parametrize(
    "body",
    [
        {"text": "", "blocks": []},
        {"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "x"}}]},
        {"text": "x", "blocks": {"type": "header"}},
        {"text": "x", "blocks": [{"text": "no type"}]},
        {"text": "x", "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}]},
        ["not", "an", "object"],
    ],
)
def test_receiver_rejects_malformed_slack_messages(receiver: Receiver, body: Any) -> None:
    r = requests.post(f"{receiver.url}/slack/T0/B0/abc", json=body, timeout=5)
    assert (r.status_code, r.text) == (400, "invalid_payload")
    (record,) = receiver.received("slack")
    assert not record.valid and record.errors


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"routing_key": 42}, "routing_key"),
        ({"event_action": "explode"}, "event_action"),
        ({"payload": {"source": "s", "severity": "critical"}}, "payload.summary"),
        ({"payload": {"summary": "x", "source": "s", "severity": "fatal"}}, "payload.severity"),
        ({"payload": {"summary": "x", "severity": "info"}}, "payload.source"),
    ],
)
def test_receiver_rejects_malformed_pagerduty_events(receiver: Receiver, change: dict[str, Any], error: str) -> None:
    body = {**pagerduty_payload(make_event(), ROUTING_KEY), **change}
    r = requests.post(f"{receiver.url}/pagerduty/v2/enqueue", json=body, timeout=5)
    assert r.status_code == 400
    answer = r.json()
    assert answer["status"] == "invalid event" and answer["message"]
    assert any(e.startswith(error) for e in answer["errors"]), answer


def test_receiver_resolve_needs_a_dedup_key(receiver: Receiver) -> None:
    body = {"routing_key": ROUTING_KEY, "event_action": "resolve"}
    r = requests.post(f"{receiver.url}/pagerduty/v2/enqueue", json=body, timeout=5)
    assert r.status_code == 400 and "dedup_key is required to resolve" in r.json()["errors"]


def test_receiver_modes_and_log_file(receiver: Receiver, tmp_path: Path) -> None:
    url = f"{receiver.url}/webhook"
    assert requests.post(f"{receiver.url}/_control/mode", json={"mode": "down"}, timeout=5).status_code == 200
    assert requests.post(url, json={"a": 1}, timeout=5).status_code == 503
    receiver.set_mode("429")
    r = requests.post(url, json={"a": 2}, timeout=5)
    assert (r.status_code, r.headers["Retry-After"]) == (429, "1")
    receiver.set_mode("up")
    assert requests.post(url, json={"a": 3}, timeout=5).status_code == 200
    assert requests.post(url, data=b"not json", timeout=5).status_code == 400
    assert requests.post(f"{receiver.url}/nowhere", json={}, timeout=5).status_code == 404
    assert [x.status for x in receiver.received()] == [503, 429, 200, 400]
    assert [x.body for x in receiver.accepted()] == [{"a": 3}]
    lines = [json.loads(line) for line in (tmp_path / "received.jsonl").read_text().splitlines()]
    assert [(x["kind"], x["status"], x["mode"]) for x in lines] == [
        ("webhook", 503, "down"),
        ("webhook", 429, "429"),
        ("webhook", 200, "up"),
        ("webhook", 400, "up"),
    ]
    listed = requests.get(f"{receiver.url}/_control/received?kind=webhook", timeout=5).json()
    assert len(listed) == 4
    with pytest.raises(ValueError, match="mode must be one of"):
        receiver.set_mode("sideways")


def test_receiver_runs_as_a_process(tmp_path: Path) -> None:
    log = tmp_path / "r.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox.receiver", "--port", "0", "--log", str(log)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert requests.post(f"{url}/webhook", json={"hello": "world"}, timeout=5).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert json.loads(log.read_text())["body"] == {"hello": "world"}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- senders against the receiver ---------------------------------------------------------------------


def test_senders_deliver_to_the_receiver(receiver: Receiver) -> None:
    event = make_event()
    assert SlackNotifier(f"{receiver.url}/slack/T0/B0/{SLACK_SECRET}").send(event) == DeliveryResult(ok=True)
    assert PagerDutyNotifier(ROUTING_KEY, f"{receiver.url}/pagerduty/v2/enqueue").send(event).ok
    assert WebhookNotifier(f"{receiver.url}/webhook").send(resolve_of(event)).ok
    assert all(r.valid and r.accepted for r in receiver.received())
    assert receiver.received("pagerduty")[0].body["routing_key"] == ROUTING_KEY
    assert receiver.received("webhook")[0].body["action"] == "resolve"


def test_non_finite_evidence_is_still_valid_json(receiver: Receiver) -> None:
    event = make_event(evidence=(("lag_s", float("nan")), ("ratio", float("inf"))))
    assert PagerDutyNotifier(ROUTING_KEY, f"{receiver.url}/pagerduty/v2/enqueue").send(event).ok
    assert receiver.received("pagerduty")[0].body["payload"]["custom_details"] == {"lag_s": "nan", "ratio": "inf"}


def test_429_is_retried_after_retry_after(receiver: Receiver) -> None:
    receiver.set_mode("429")
    for notifier in (
        SlackNotifier(f"{receiver.url}/slack/T0/B0/{SLACK_SECRET}"),
        PagerDutyNotifier(ROUTING_KEY, f"{receiver.url}/pagerduty/v2/enqueue"),
        WebhookNotifier(f"{receiver.url}/webhook"),
    ):
        result = notifier.send(make_event())
        assert not result.ok and not result.permanent, notifier
        assert result.retry_after_s == 1.0
        assert result.error is not None and "429" in result.error


def test_503_is_retried(receiver: Receiver) -> None:
    receiver.set_mode("down")
    for notifier in (
        SlackNotifier(f"{receiver.url}/slack/T0/B0/{SLACK_SECRET}"),
        PagerDutyNotifier(ROUTING_KEY, f"{receiver.url}/pagerduty/v2/enqueue"),
    ):
        result = notifier.send(make_event())
        assert (result.ok, result.permanent, result.retry_after_s) == (False, False, None)
        assert result.error is not None and result.error.startswith(f"{notifier.name} answered HTTP 503")


def test_pagerduty_400_is_permanent_and_names_no_secret(receiver: Receiver) -> None:
    result = PagerDutyNotifier(ROUTING_KEY, f"{receiver.url}/pagerduty/v2/enqueue").send(make_event(cluster=""))
    assert (result.ok, result.permanent) == (False, True)
    assert result.error is not None and "HTTP 400" in result.error and "payload.source" in result.error
    assert ROUTING_KEY not in result.error


def test_slack_4xx_is_permanent(receiver: Receiver) -> None:
    # A webhook URL that the "Slack" does not know: 404, like a revoked webhook.
    result = SlackNotifier(f"{receiver.url}/slack/").send(make_event())
    assert (result.ok, result.permanent) == (False, True)


def test_secrets_never_in_errors_or_reprs_even_when_the_connection_is_refused() -> None:
    port = closed_port()
    slack_url = f"http://127.0.0.1:{port}/slack/T0/B0/{SLACK_SECRET}"
    hook_url = f"http://127.0.0.1:{port}/hooks/{SLACK_SECRET}"
    # The premise: requests itself puts the URL in the exception text.
    with pytest.raises(requests.ConnectionError, match=SLACK_SECRET):
        requests.post(slack_url, json={}, timeout=2)
    notifiers = [
        SlackNotifier(slack_url),
        PagerDutyNotifier(ROUTING_KEY, f"http://127.0.0.1:{port}/pagerduty/v2/enqueue"),
        WebhookNotifier(hook_url),
    ]
    for notifier in notifiers:
        result = notifier.send(make_event())
        assert (result.ok, result.permanent) == (False, False)
        assert result.error == f"{notifier.name} unreachable (ConnectionError)"
        for text in (result.error, repr(notifier), repr(result)):
            assert SLACK_SECRET not in text and ROUTING_KEY not in text and str(port) not in text


def test_an_invalid_url_is_permanent_and_not_quoted() -> None:
    result = WebhookNotifier(f"htp:/{SLACK_SECRET}").send(make_event())
    assert result.permanent and result.error is not None and SLACK_SECRET not in result.error


# -- settings -----------------------------------------------------------------------------------------


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_build_notifiers_reads_secret_files_and_env(tmp_path: Path) -> None:
    slack_file = _write(tmp_path / "slack.url", "https://hooks.slack.com/services/T0/B0/xyz\n")
    pd_file = _write(tmp_path / "pd.key", ROUTING_KEY + "\n")
    toml = tmp_path / "notify.toml"
    toml.write_text(
        f'[slack]\nwebhook_url_file = "{slack_file}"\nmin_severity = "critical"\n'
        f'[pagerduty]\nrouting_key_file = "{pd_file}"\nevents_url = "https://events.eu.pagerduty.com/v2/enqueue"\n'
    )
    cfg = load_settings(NotifyConfig, toml, "X_", environ={})
    notifiers = build_notifiers(cfg, environ={})
    assert [(n.name, n.min_severity, n.min_interval_s) for n in notifiers] == [
        ("slack", "critical", 1.0),
        ("pagerduty", "critical", 0.0),
    ]
    assert "xyz" not in repr(notifiers) and ROUTING_KEY not in repr(notifiers)
    # Environment variables alone enable a destination with its defaults.
    env = {"REDWARDEN_WEBHOOK_URL": "http://127.0.0.1:9/webhook", "REDWARDEN_PAGERDUTY_ROUTING_KEY": ROUTING_KEY}
    notifiers = build_notifiers(NotifyConfig(), environ=env)
    assert [(n.name, n.min_severity) for n in notifiers] == [("pagerduty", "critical"), ("webhook", "info")]
    assert isinstance(notifiers[0], PagerDutyNotifier) and PAGERDUTY_EVENTS_URL.startswith("https://")


def test_notify_settings_errors_name_the_key(tmp_path: Path) -> None:
    toml = tmp_path / "notify.toml"
    toml.write_text('[slack]\nmin_severity = "loud"\n')
    with pytest.raises(ConfigError, match=r"slack: min_severity must be one of info, warning, critical, not 'loud'"):
        load_settings(NotifyConfig, toml, "X_", environ={})
    toml.write_text("[webhook]\n")
    cfg = load_settings(NotifyConfig, toml, "X_", environ={})
    with pytest.raises(ConfigError, match=r"notify.webhook.url_file is not set or empty \(nor REDWARDEN_WEBHOOK_URL\)"):
        build_notifiers(cfg, environ={})
    secret_file = _write(tmp_path / "hook.url", f"ftp://example/{SLACK_SECRET}")
    with pytest.raises(ConfigError, match=r"notify.webhook.url_file: the URL it holds must start") as info:
        build_notifiers(NotifyConfig(webhook=WebhookConfig(url_file=secret_file)), {})
    assert SLACK_SECRET not in str(info.value)
