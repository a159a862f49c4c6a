"""Where alerts go: pure payload builders for Slack, PagerDuty and a generic webhook, and their senders.

Layer: core (the `*_payload` builders, `admits`, `parse_retry_after`: pure functions of an `AlertEvent`)
plus thin adapters (the `*Notifier` classes: one HTTP POST each, behind the `Notifier` Protocol, with an
injectable `requests.Session`). A sender never raises and never retries: it classifies the answer into a
`DeliveryResult` (delivered, retry later, or give up) and the outbox decides what to do with it.

Webhook URLs and routing keys are secrets: they never appear in a `DeliveryResult.error`, a `repr` or a
log line. Destinations are named by kind ("slack", "pagerduty", "webhook"), exceptions are reported by
type only (requests' `ConnectionError` text contains the URL), and any answer text we quote is scrubbed.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

import requests

from controller.core.alerts import SEVERITY_RANK, AlertEvent, EvidenceValue
from controller.notify_config import (
    ENV_PAGERDUTY_ROUTING_KEY,
    ENV_SLACK_WEBHOOK_URL,
    ENV_WEBHOOK_URL,
    PAGERDUTY_EVENTS_URL,
    NotifyConfig,
    PagerDutyConfig,
    SlackConfig,
    WebhookConfig,
    check_severity,
)
from protocol.settings import ConfigError, read_secret

# Our severities in PagerDuty's vocabulary (critical, error, warning, info); anything unknown is "error",
# loud enough to be seen and not pretending to be a page-worthy critical.
PAGERDUTY_SEVERITY = {"critical": "critical", "warning": "warning", "info": "info"}

PAGERDUTY_SUMMARY_MAX = 1024
PAGERDUTY_DEDUP_KEY_MAX = 255
SLACK_HEADER_MAX = 150  # Block Kit: header text
SLACK_TEXT_MAX = 3000  # Block Kit: section text
SLACK_FIELD_MAX = 2000  # Block Kit: one section field
SLACK_FIELDS_PER_SECTION = 10
SLACK_EVIDENCE_SECTIONS_MAX = 4
MAX_RETRY_AFTER_S = 3600.0

_SLACK_EMOJI = {"critical": ":red_circle:", "warning": ":warning:", "info": ":information_source:"}


# ---------------------------------------------------------------------------------------------------------
# Pure helpers


def admits(min_severity: str, severity: str) -> bool:
    """Whether a notifier set to `min_severity` receives an event of `severity`.

    An unknown event severity ranks highest: a malformed alert is delivered everywhere rather than dropped.
    """
    return SEVERITY_RANK.get(severity, max(SEVERITY_RANK.values())) >= SEVERITY_RANK[min_severity]


def iso8601(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds")


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _duration(seconds: float) -> str:
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def _slack_escape(text: str) -> str:
    """Slack mrkdwn treats &, < and > as control characters (links, mentions)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_field(label: str, value: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": _truncate(f"*{_slack_escape(label)}*\n{_slack_escape(value)}", SLACK_FIELD_MAX)}


def _evidence_text(value: EvidenceValue) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _title(event: AlertEvent) -> str:
    if event.action == "resolve":
        return f":white_check_mark: RESOLVED [{event.cluster}] {event.code} on {event.subject}"
    emoji = _SLACK_EMOJI.get(event.severity, ":red_circle:")
    return f"{emoji} {event.severity.upper()} [{event.cluster}] {event.code} on {event.subject}"


def slack_payload(event: AlertEvent) -> dict[str, Any]:
    """A Slack incoming-webhook message (Block Kit) for a trigger or a resolve, with a plain `text` fallback."""
    title = _title(event)
    if event.action == "resolve":
        lead = f"Resolved after {_duration(event.at - event.opened_at)}: {event.summary}"
    else:
        lead = event.summary
    fields = [
        _slack_field("Severity", event.severity),
        _slack_field("Cluster", event.cluster),
        _slack_field("Code", event.code),
        _slack_field("Subject", event.subject),
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _truncate(title, SLACK_HEADER_MAX), "emoji": True}},
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": _truncate(_slack_escape(lead), SLACK_TEXT_MAX)},
            "fields": fields,
        },
    ]
    evidence = [_slack_field(k, _evidence_text(v)) for k, v in event.evidence]
    shown = SLACK_FIELDS_PER_SECTION * SLACK_EVIDENCE_SECTIONS_MAX
    for i in range(0, min(len(evidence), shown), SLACK_FIELDS_PER_SECTION):
        blocks.append({"type": "section", "fields": evidence[i : i + SLACK_FIELDS_PER_SECTION]})
    context = f"incident `{_slack_escape(event.incident_key)}` · opened {iso8601(event.opened_at)}"
    if len(evidence) > shown:
        context += f" · {len(evidence) - shown} more evidence items not shown"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _truncate(context, SLACK_TEXT_MAX)}]})
    return {"text": _truncate(f"{title}: {event.summary}", SLACK_TEXT_MAX), "blocks": blocks}


def pagerduty_dedup_key(incident_key: str) -> str:
    """`incident_key` itself when PagerDuty accepts it (<= 255 chars), else a stable digest of it."""
    if len(incident_key) <= PAGERDUTY_DEDUP_KEY_MAX:
        return incident_key
    digest = hashlib.sha256(incident_key.encode()).hexdigest()
    return f"{incident_key[: PAGERDUTY_DEDUP_KEY_MAX - len(digest) - 1]}~{digest}"


def pagerduty_payload(event: AlertEvent, routing_key: str) -> dict[str, Any]:
    """A PagerDuty Events API v2 event; a resolve carries only routing_key, event_action and dedup_key."""
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": event.action,
        "dedup_key": pagerduty_dedup_key(event.incident_key),
    }
    if event.action == "trigger":
        body["payload"] = {
            "summary": _truncate(
                f"[{event.cluster}] {event.code} on {event.subject}: {event.summary}", PAGERDUTY_SUMMARY_MAX
            ),
            "source": event.cluster,
            "severity": PAGERDUTY_SEVERITY.get(event.severity, "error"),
            "timestamp": iso8601(event.at),
            "component": event.subject,
            "group": event.cluster,
            "class": event.code,
            "custom_details": dict(event.evidence),
        }
    return body


def webhook_payload(event: AlertEvent) -> dict[str, Any]:
    """The event as our own JSON (see `AlertEvent.to_dict`), versioned for receivers."""
    return {**event.to_dict(), "version": 1}


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), clamped to [0, 1 h]."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        delay = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        delay = when.timestamp() - now
    if math.isnan(delay):
        return None
    return min(max(delay, 0.0), MAX_RETRY_AFTER_S)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret (and every long path segment of a secret URL) replaced by `***`."""
    for secret in secrets:
        if not secret:
            continue
        text = text.replace(secret, "***")
        for part in secret.split("/"):
            if len(part) >= 16 and "." not in part and ":" not in part:  # token-like segments, not hosts
                text = text.replace(part, "***")
    return text


# ---------------------------------------------------------------------------------------------------------
# The sender interface


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What became of one send: delivered, to retry (after `retry_after_s` if the destination said so),
    or failed for good (`permanent`). `error` never contains a secret."""

    ok: bool
    retry_after_s: float | None = None
    error: str | None = None
    permanent: bool = False

    @staticmethod
    def delivered() -> DeliveryResult:
        return DeliveryResult(ok=True)

    @staticmethod
    def retry(error: str, retry_after_s: float | None = None) -> DeliveryResult:
        return DeliveryResult(ok=False, retry_after_s=retry_after_s, error=error)

    @staticmethod
    def failed(error: str) -> DeliveryResult:
        return DeliveryResult(ok=False, error=error, permanent=True)


class Notifier(Protocol):
    """One destination. `name` is unique within an outbox (it keys the outbox's rows); `min_severity` is
    the lowest severity it receives; `min_interval_s` the least time between two of its messages."""

    @property
    def name(self) -> str: ...

    @property
    def min_severity(self) -> str: ...

    @property
    def min_interval_s(self) -> float: ...

    def send(self, event: AlertEvent) -> DeliveryResult: ...


def route(event: AlertEvent, notifiers: Iterable[Notifier]) -> list[Notifier]:
    """The notifiers that receive `event`. A resolve carries its trigger's severity, so it goes exactly
    where the trigger went."""
    return [n for n in notifiers if admits(n.min_severity, event.severity)]


# ---------------------------------------------------------------------------------------------------------
# HTTP adapters

RETRYABLE_STATUSES = frozenset({408, 429})
_JSON_HEADERS = {"Content-Type": "application/json"}


def _json_safe(value: Any) -> Any:
    """`value` with NaN and infinities as strings: strict JSON parsers (PagerDuty's) reject them."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


class _HttpNotifier:
    """POSTs one JSON body and classifies the answer; subclasses say what to send and what "ok" is."""

    kind = "http"

    def __init__(
        self,
        url: str,
        secrets: tuple[str, ...],
        session: requests.Session | None,
        name: str,
        min_severity: str,
        min_interval_s: float,
        timeout_s: float,
        clock: Callable[[], float],
    ) -> None:
        check_severity(min_severity, "min_severity")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        if min_interval_s < 0:
            raise ValueError("min_interval_s must be >= 0")
        self._url = url
        self._secrets = tuple(s for s in secrets if s)
        self._session = session if session is not None else requests.Session()
        self._timeout = (min(timeout_s, 3.05), timeout_s)
        self._clock = clock
        self.name = name
        self.min_severity = min_severity
        self.min_interval_s = min_interval_s

    def __repr__(self) -> str:  # never the URL or the key
        return f"{type(self).__name__}(name={self.name!r}, min_severity={self.min_severity!r})"

    def payload(self, event: AlertEvent) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def is_ok(self, status: int) -> bool:
        return 200 <= status < 300

    def send(self, event: AlertEvent) -> DeliveryResult:
        try:
            data = json.dumps(_json_safe(self.payload(event)), allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as e:  # not JSON-serialisable: our bug, and retrying will not fix it
            return DeliveryResult.failed(f"{self.kind}: payload could not be encoded ({type(e).__name__})")
        try:
            resp = self._session.post(self._url, data=data.encode(), headers=_JSON_HEADERS, timeout=self._timeout)
        except (
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema,
            requests.exceptions.InvalidURL,
        ) as e:
            return DeliveryResult.failed(f"{self.kind}: invalid destination URL ({type(e).__name__})")
        except requests.RequestException as e:
            # The exception's text names the URL: report its type only.
            return DeliveryResult.retry(f"{self.kind} unreachable ({type(e).__name__})")
        status = resp.status_code
        if self.is_ok(status):
            return DeliveryResult.delivered()
        excerpt = " ".join(resp.text[:200].split())
        error = scrub(f"{self.kind} answered HTTP {status}" + (f": {excerpt}" if excerpt else ""), self._secrets)
        if status in RETRYABLE_STATUSES or status >= 500:
            return DeliveryResult.retry(error, parse_retry_after(resp.headers.get("Retry-After"), self._clock()))
        return DeliveryResult.failed(error)

    def close(self) -> None:
        self._session.close()


class SlackNotifier(_HttpNotifier):
    """A Slack incoming webhook: 200 is delivered; 429 and 5xx are retried (after Retry-After if given);
    any other 4xx (invalid_payload, no_service, channel_is_archived...) is permanent. Slack allows one
    message per second per webhook, hence `min_interval_s=1.0`."""

    kind = "slack"

    def __init__(
        self,
        webhook_url: str,
        session: requests.Session | None = None,
        *,
        name: str = "slack",
        min_severity: str = "warning",
        min_interval_s: float = 1.0,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(webhook_url, (webhook_url,), session, name, min_severity, min_interval_s, timeout_s, clock)

    def payload(self, event: AlertEvent) -> dict[str, Any]:
        return slack_payload(event)


class PagerDutyNotifier(_HttpNotifier):
    """PagerDuty Events API v2 (`events_url` may be the EU endpoint): 202 is delivered; 429 and 5xx are
    retried; 400 (invalid event) and other 4xx are permanent."""

    kind = "pagerduty"

    def __init__(
        self,
        routing_key: str,
        events_url: str = PAGERDUTY_EVENTS_URL,
        session: requests.Session | None = None,
        *,
        name: str = "pagerduty",
        min_severity: str = "critical",
        min_interval_s: float = 0.0,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(events_url, (routing_key,), session, name, min_severity, min_interval_s, timeout_s, clock)
        self._routing_key = routing_key

    def payload(self, event: AlertEvent) -> dict[str, Any]:
        return pagerduty_payload(event, self._routing_key)


class WebhookNotifier(_HttpNotifier):
    """Our own JSON (`webhook_payload`) to any URL: 2xx is delivered; 408, 429 and 5xx are retried;
    other 4xx are permanent."""

    kind = "webhook"

    def __init__(
        self,
        url: str,
        session: requests.Session | None = None,
        *,
        name: str = "webhook",
        min_severity: str = "info",
        min_interval_s: float = 0.0,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(url, (url,), session, name, min_severity, min_interval_s, timeout_s, clock)

    def payload(self, event: AlertEvent) -> dict[str, Any]:
        return webhook_payload(event)


# -- building them from the settings -------------------------------------------------------------


def _secret(env: Mapping[str, str], env_key: str, path: str | None, key: str) -> str:
    value = env.get(env_key) or read_secret(path, key)
    if not value or not value.strip():
        raise ConfigError(f"{key} is not set or empty (nor {env_key})")
    return value.strip()


def _check_url(value: str, key: str) -> None:
    if not value.startswith(("https://", "http://")):
        raise ConfigError(f"{key}: the URL it holds must start with https:// or http://")  # not the URL itself


def build_notifiers(
    cfg: NotifyConfig,
    environ: Mapping[str, str] | None = None,
    session_factory: Callable[[], requests.Session] = requests.Session,
) -> list[Notifier]:
    """The configured notifiers (Slack, PagerDuty, webhook, in that order), secrets read now.

    Raises ConfigError naming the setting when a configured destination has no readable secret.
    """
    env = os.environ if environ is None else environ
    notifiers: list[Notifier] = []
    slack = cfg.slack or (SlackConfig() if env.get(ENV_SLACK_WEBHOOK_URL) else None)
    if slack is not None:
        url = _secret(env, ENV_SLACK_WEBHOOK_URL, slack.webhook_url_file, "notify.slack.webhook_url_file")
        _check_url(url, "notify.slack.webhook_url_file")
        notifiers.append(
            SlackNotifier(url, session_factory(), min_severity=slack.min_severity, timeout_s=slack.timeout_s)
        )
    pd = cfg.pagerduty or (PagerDutyConfig() if env.get(ENV_PAGERDUTY_ROUTING_KEY) else None)
    if pd is not None:
        key = _secret(env, ENV_PAGERDUTY_ROUTING_KEY, pd.routing_key_file, "notify.pagerduty.routing_key_file")
        notifiers.append(
            PagerDutyNotifier(
                key, pd.events_url, session_factory(), min_severity=pd.min_severity, timeout_s=pd.timeout_s
            )
        )
    hook = cfg.webhook or (WebhookConfig() if env.get(ENV_WEBHOOK_URL) else None)
    if hook is not None:
        url = _secret(env, ENV_WEBHOOK_URL, hook.url_file, "notify.webhook.url_file")
        _check_url(url, "notify.webhook.url_file")
        notifiers.append(
            WebhookNotifier(url, session_factory(), min_severity=hook.min_severity, timeout_s=hook.timeout_s)
        )
    return notifiers
