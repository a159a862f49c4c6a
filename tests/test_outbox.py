"""The durable alert outbox, against the real local receiver: order, idempotence, retries, restarts, rate limits."""

from __future__ import annotations

import dataclasses
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from controller.adapters.notify import DeliveryResult, Notifier, PagerDutyNotifier, SlackNotifier, WebhookNotifier
from controller.adapters.outbox import Outbox
from controller.adapters.storage.db import Database
from controller.core.alerts import AlertEvent
from sandbox.receiver import Received, Receiver
from tests.helpers import wait_until

ROUTING_KEY = "R0UT1NGKEYSECRETR0UT1NGKEYSECRET"
SLACK_SECRET = "XOXSECRETxoxsecretXOXSECRET"
T0 = 1_700_000_000.0


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        self.t += seconds
        return self.t


class Recording:
    """A notifier that notes when (on the injected clock) each send happened."""

    def __init__(self, inner: Notifier, clock: Callable[[], float]) -> None:
        self.inner = inner
        self.clock = clock
        self.sent_at: list[float] = []
        self.name = inner.name
        self.min_severity = inner.min_severity
        self.min_interval_s = inner.min_interval_s

    def send(self, event: AlertEvent) -> DeliveryResult:
        self.sent_at.append(self.clock())
        return self.inner.send(event)


class Exploding:
    name = "exploding"
    min_severity = "info"
    min_interval_s = 0.0

    def send(self, event: AlertEvent) -> DeliveryResult:
        raise RuntimeError(f"boom with a secret in it: {SLACK_SECRET}")


def event(n: int, action: str = "trigger", severity: str = "critical", cluster: str = "sandbox") -> AlertEvent:
    return AlertEvent(
        event_id=f"ev-{n}-{action}",
        action=action,  # type: ignore[arg-type]
        incident_key=f"{cluster}/REPLICA_DOWN/redis-{n}",
        cluster=cluster,
        code="REPLICA_DOWN",
        severity=severity,
        subject=f"node redis-{n}",
        summary=f"redis-{n} is down",
        evidence=(("n", n),),
        opened_at=T0,
        at=T0 + (10 if action == "resolve" else 0),
    )


def notifiers_for(receiver: Receiver, clock: Callable[[], float] = lambda: T0) -> list[Notifier]:
    return [
        SlackNotifier(f"{receiver.url}/slack/T0/B0/{SLACK_SECRET}", clock=clock),
        PagerDutyNotifier(ROUTING_KEY, f"{receiver.url}/pagerduty/v2/enqueue", clock=clock),
        WebhookNotifier(f"{receiver.url}/webhook", clock=clock),
    ]


def sent(records: list[Received]) -> list[tuple[str, str]]:
    """What each accepted request was about, as (action, incident), whatever the destination's format."""
    out = []
    for r in records:
        body: dict[str, Any] = r.body
        if r.kind == "slack":
            action = "resolve" if "RESOLVED" in body["text"] else "trigger"
            out.append((action, body["text"].split(" on ")[1].split(":")[0]))
        elif r.kind == "pagerduty":
            out.append((body["event_action"], "node " + body["dedup_key"].rsplit("/", 1)[1]))
        else:
            out.append((body["action"], body["subject"]))
    return out


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture
def make_outbox(tmp_path: Path, open_db: Callable[[Path], Database]) -> Iterator[Callable[..., Outbox]]:
    """An outbox on the test's state file, opened afresh each call (a second call is a controller restart)."""
    made: list[Outbox] = []

    def make(notifiers: list[Notifier], clock: Callable[[], float], **kw: Any) -> Outbox:
        kw.setdefault("backoff_base_s", 1.0)
        ob = Outbox(open_db(tmp_path / "state.db"), notifiers, clock, **kw)
        made.append(ob)
        return ob

    yield make
    for ob in made:
        ob.close()


def drain(outbox: Outbox, clock: Clock, step_s: float = 1.0, max_steps: int = 500) -> None:
    for _ in range(max_steps):
        outbox.deliver_due(clock())
        if not outbox.pending():
            return
        clock.advance(step_s)
    raise AssertionError(f"still pending after {max_steps} steps: {outbox.pending()}")


def test_enqueue_then_deliver_to_every_admitting_notifier(receiver: Receiver, make_outbox: Any) -> None:
    clock = Clock()
    outbox = make_outbox(notifiers_for(receiver), clock)
    assert outbox.enqueue([event(1)]) == 3
    assert [(p.notifier, p.action, p.attempts) for p in outbox.pending()] == [
        ("slack", "trigger", 0),
        ("pagerduty", "trigger", 0),
        ("webhook", "trigger", 0),
    ]
    assert outbox.deliver_due(clock()) == 3
    assert outbox.pending() == []
    assert [(r.kind, r.valid, r.status) for r in receiver.received()] == [
        ("slack", True, 200),
        ("pagerduty", True, 202),
        ("webhook", True, 200),
    ]
    stats = outbox.stats()
    assert {name: (s.pending, s.delivered, s.failed) for name, s in stats.items()} == {
        "slack": (0, 1, 0),
        "pagerduty": (0, 1, 0),
        "webhook": (0, 1, 0),
    }
    assert stats["slack"].last_delivered_at == T0
    assert outbox.deliver_due(clock.advance(5)) == 0
    assert len(receiver.received()) == 3


def test_enqueue_is_idempotent_on_event_id(receiver: Receiver, make_outbox: Any) -> None:
    clock = Clock()
    outbox = make_outbox(notifiers_for(receiver), clock)
    assert outbox.enqueue([event(1)]) == 3
    assert outbox.enqueue([event(1), event(1)]) == 0
    drain(outbox, clock)
    assert outbox.enqueue([event(1)]) == 0  # delivered ones too
    drain(outbox, clock)
    assert [r.kind for r in receiver.received()] == ["slack", "pagerduty", "webhook"]


def test_severity_routing_resolves_go_where_their_triggers_went(receiver: Receiver, make_outbox: Any) -> None:
    clock = Clock()
    outbox = make_outbox(notifiers_for(receiver), clock)
    events = [event(n, "trigger", sev) for n, sev in [(1, "info"), (2, "warning"), (3, "critical")]]
    events += [event(n, "resolve", sev) for n, sev in [(1, "info"), (2, "warning"), (3, "critical")]]
    assert outbox.enqueue(events) == 2 * (1 + 2 + 3)
    drain(outbox, clock)
    assert sent(receiver.accepted("webhook")) == [
        ("trigger", "node redis-1"),
        ("trigger", "node redis-2"),
        ("trigger", "node redis-3"),
        ("resolve", "node redis-1"),
        ("resolve", "node redis-2"),
        ("resolve", "node redis-3"),
    ]
    assert sent(receiver.accepted("slack")) == [
        ("trigger", "node redis-2"),
        ("trigger", "node redis-3"),
        ("resolve", "node redis-2"),
        ("resolve", "node redis-3"),
    ]
    assert sent(receiver.accepted("pagerduty")) == [("trigger", "node redis-3"), ("resolve", "node redis-3")]


def test_receiver_down_for_a_while_then_everything_arrives_once_in_order(receiver: Receiver, make_outbox: Any) -> None:
    clock = Clock()
    outbox = make_outbox(notifiers_for(receiver, clock), clock)
    receiver.set_mode("down")
    outbox.enqueue([event(1), event(2)])
    outbox.enqueue([event(1, "resolve"), event(2, "resolve")])
    assert outbox.deliver_due(clock()) == 0
    # Only each notifier's oldest row was tried: the others wait behind it.
    assert [r.kind for r in receiver.received()] == ["slack", "pagerduty", "webhook"]
    heads = [p for p in outbox.pending() if p.attempts]
    assert [(p.notifier, p.event_id) for p in heads] == [(n, "ev-1-trigger") for n in ("slack", "pagerduty", "webhook")]
    assert all(T0 + 0.5 <= p.next_attempt_at <= T0 + 1.0 for p in heads)  # backoff base 1 s, equal jitter
    assert all(p.last_error and "HTTP 503" in p.last_error for p in heads)
    for _ in range(20):  # five minutes of outage
        outbox.deliver_due(clock.advance(15))
    assert receiver.accepted() == []
    tries = [p.attempts for p in outbox.pending() if p.event_id == "ev-1-trigger"]
    assert all(5 <= n <= 20 for n in tries), tries  # backed off (capped at 60 s), not hammering
    receiver.set_mode("up")
    drain(outbox, clock)
    expected = [
        ("trigger", "node redis-1"),
        ("trigger", "node redis-2"),
        ("resolve", "node redis-1"),
        ("resolve", "node redis-2"),
    ]
    for kind in ("slack", "pagerduty", "webhook"):
        assert sent(receiver.accepted(kind)) == expected, kind


def test_retry_after_is_honoured(receiver: Receiver, make_outbox: Any) -> None:
    clock = Clock()
    outbox = make_outbox([WebhookNotifier(f"{receiver.url}/webhook", clock=clock)], clock)
    receiver.set_mode("429")
    outbox.enqueue([event(1)])
    outbox.deliver_due(clock())
    (p,) = outbox.pending()
    assert p.next_attempt_at == T0 + 1.0
    assert outbox.deliver_due(clock.advance(0.9)) == 0
    receiver.set_mode("up")
    assert outbox.deliver_due(clock.advance(0.1)) == 1


def test_restart_delivers_what_was_pending_and_never_resends_what_was_delivered(
    receiver: Receiver, make_outbox: Any
) -> None:
    clock = Clock()
    first = make_outbox(notifiers_for(receiver), clock)
    first.enqueue([event(1)])
    assert first.deliver_due(clock()) == 3
    receiver.set_mode("down")
    first.enqueue([event(1, "resolve"), event(2)])
    first.deliver_due(clock.advance(2))
    assert len(first.pending()) == 6
    first.close()

    receiver.set_mode("up")
    second = make_outbox(notifiers_for(receiver), clock)
    assert second.enqueue([event(1), event(2)]) == 0  # known across the restart
    assert len(second.pending()) == 6
    drain(second, clock)
    for kind in ("slack", "pagerduty", "webhook"):
        assert sent(receiver.accepted(kind)) == [
            ("trigger", "node redis-1"),
            ("resolve", "node redis-1"),
            ("trigger", "node redis-2"),
        ], kind


def test_slack_gets_at_most_one_message_per_second(receiver: Receiver, make_outbox: Any) -> None:
    clock = Clock()
    slack = Recording(SlackNotifier(f"{receiver.url}/slack/T0/B0/x", clock=clock), clock)
    hook = Recording(WebhookNotifier(f"{receiver.url}/webhook", clock=clock), clock)
    outbox = make_outbox([slack, hook], clock)
    outbox.enqueue([event(n, severity="warning") for n in (1, 2, 3)])
    assert outbox.deliver_due(clock()) == 1 + 3  # one to Slack, all three to the webhook
    assert outbox.deliver_due(clock.advance(0.5)) == 0
    assert outbox.deliver_due(clock.advance(0.49)) == 0
    assert outbox.deliver_due(clock.advance(0.01)) == 1
    for _ in range(8):
        outbox.deliver_due(clock.advance(0.25))
    assert slack.sent_at == [T0, T0 + 1.0, T0 + 2.0]
    assert hook.sent_at == [T0, T0, T0]
    assert outbox.pending() == []


def test_the_slack_rate_limit_holds_across_a_restart(receiver: Receiver, make_outbox: Any) -> None:
    clock = Clock()
    first = make_outbox([SlackNotifier(f"{receiver.url}/slack/T0/B0/x")], clock)
    first.enqueue([event(1, severity="warning")])
    assert first.deliver_due(clock()) == 1
    first.close()
    second = make_outbox([SlackNotifier(f"{receiver.url}/slack/T0/B0/x")], clock)
    second.enqueue([event(2, severity="warning")])
    assert second.deliver_due(clock.advance(0.5)) == 0
    assert second.deliver_due(clock.advance(0.5)) == 1


def test_a_permanent_failure_is_given_up_once_and_does_not_block_the_next(receiver: Receiver, make_outbox: Any) -> None:
    clock = Clock()
    outbox = make_outbox([PagerDutyNotifier(ROUTING_KEY, f"{receiver.url}/pagerduty/v2/enqueue")], clock)
    outbox.enqueue([event(1, cluster=""), event(2)])  # an empty source: PagerDuty answers 400
    with structlog.testing.capture_logs() as logs:
        assert outbox.deliver_due(clock()) == 1
        assert outbox.deliver_due(clock.advance(120)) == 0
    failures = [e for e in logs if e["event"] == "alert.delivery_failed"]
    assert len(failures) == 1
    assert failures[0]["notifier"] == "pagerduty" and "HTTP 400" in failures[0]["error"]
    assert len(receiver.received("pagerduty")) == 2
    stats = outbox.stats()["pagerduty"]
    assert (stats.pending, stats.delivered, stats.failed) == (0, 1, 1)
    assert stats.last_error is not None and "payload.source" in stats.last_error
    assert ROUTING_KEY not in repr(logs) + stats.last_error


def test_secrets_never_reach_logs_or_the_table_when_unreachable(make_outbox: Any, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    clock = Clock()
    outbox = make_outbox(
        [
            SlackNotifier(f"http://127.0.0.1:{port}/slack/T0/B0/{SLACK_SECRET}"),
            PagerDutyNotifier(ROUTING_KEY, f"http://127.0.0.1:{port}/v2/enqueue"),
            Exploding(),
        ],
        clock,
    )
    outbox.enqueue([event(1)])
    with structlog.testing.capture_logs() as logs:
        outbox.deliver_due(clock())
    deferred = [e for e in logs if e["event"] == "alert.delivery_deferred"]
    assert [e["notifier"] for e in deferred] == ["slack", "pagerduty", "exploding"]
    assert [p.last_error for p in outbox.pending()] == [
        "slack unreachable (ConnectionError)",
        "pagerduty unreachable (ConnectionError)",
        "exploding raised RuntimeError",
    ]
    outbox.close()
    dump = "\n".join(sqlite3.connect(tmp_path / "state.db").iterdump())
    for text in (repr(logs), dump):
        assert SLACK_SECRET not in text and ROUTING_KEY not in text


def test_rows_of_a_notifier_no_longer_configured_are_given_up(receiver: Receiver, make_outbox: Any) -> None:
    clock = Clock()
    receiver.set_mode("down")
    first = make_outbox(notifiers_for(receiver), clock)
    first.enqueue([event(1)])
    first.close()
    receiver.set_mode("up")
    second = make_outbox([WebhookNotifier(f"{receiver.url}/webhook")], clock)
    assert [p.notifier for p in second.pending()] == ["webhook"]
    drain(second, clock)
    assert [r.kind for r in receiver.accepted()] == ["webhook"]


def test_purge_forgets_old_finished_rows(receiver: Receiver, make_outbox: Any) -> None:
    clock = Clock()
    outbox = make_outbox([WebhookNotifier(f"{receiver.url}/webhook")], clock)
    outbox.enqueue([event(1)])
    outbox.deliver_due(clock())
    assert outbox.purge(T0) == 0
    assert outbox.purge(T0 + 1) == 1
    assert outbox.stats()["webhook"].delivered == 0


def test_duplicate_notifier_names_are_refused(receiver: Receiver, state_db: Database) -> None:
    hooks: list[Notifier] = [WebhookNotifier(f"{receiver.url}/webhook"), WebhookNotifier(f"{receiver.url}/webhook")]
    with pytest.raises(ValueError, match="'webhook' is used twice"):
        Outbox(state_db, hooks)


def test_background_thread_delivers_after_an_outage(receiver: Receiver, make_outbox: Any) -> None:
    outbox = make_outbox(
        notifiers_for(receiver, clock=lambda: 0.0)[1:],  # PagerDuty and webhook: no rate limit to wait out
        clock=time.time,
        poll_interval_s=0.05,
        backoff_base_s=0.05,
        backoff_cap_s=0.2,
    )
    receiver.set_mode("down")
    outbox.start()
    outbox.enqueue([event(1), event(2)])
    outbox.enqueue([event(1, "resolve")])
    wait_until(lambda: len(receiver.received("webhook")) >= 3, 5, "three attempts at the webhook while down")
    receiver.set_mode("up")
    wait_until(lambda: not outbox.pending(), 5, "the outbox to drain")
    expected = [("trigger", "node redis-1"), ("trigger", "node redis-2"), ("resolve", "node redis-1")]
    assert sent(receiver.accepted("webhook")) == expected
    assert sent(receiver.accepted("pagerduty")) == expected
    outbox.close()
    assert not any(t.name == "alert-outbox" for t in threading.enumerate())


def test_enqueue_wakes_the_thread(receiver: Receiver, make_outbox: Any) -> None:
    outbox = make_outbox([WebhookNotifier(f"{receiver.url}/webhook")], clock=time.time, poll_interval_s=30)
    outbox.start()
    wait_until(lambda: outbox.next_due_at() is None, 2, "the thread to go idle")
    outbox.enqueue([dataclasses.replace(event(1), severity="info")])
    wait_until(lambda: receiver.accepted("webhook"), 2, "delivery without waiting out the 30 s poll")
