"""Settings for alert destinations (`[notify.slack]`, `[notify.pagerduty]`, `[notify.webhook]`).

Layer: configuration. Each destination is optional. Its secret (webhook URL, routing key) lives in a file
named by a `*_file` setting, read only by `controller.adapters.notify.build_notifiers`, or comes from the
environment
(`REDWARDEN_SLACK_WEBHOOK_URL`, `REDWARDEN_PAGERDUTY_ROUTING_KEY`, `REDWARDEN_WEBHOOK_URL`); setting the
variable enables the destination with its defaults even without a section. Errors name the key, never the
secret.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.core.alerts import SEVERITY_RANK

SEVERITIES = tuple(sorted(SEVERITY_RANK, key=SEVERITY_RANK.__getitem__))  # ("info", "warning", "critical")
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
PAGERDUTY_EVENTS_URL_EU = "https://events.eu.pagerduty.com/v2/enqueue"

ENV_SLACK_WEBHOOK_URL = "REDWARDEN_SLACK_WEBHOOK_URL"
ENV_PAGERDUTY_ROUTING_KEY = "REDWARDEN_PAGERDUTY_ROUTING_KEY"
ENV_WEBHOOK_URL = "REDWARDEN_WEBHOOK_URL"


def check_severity(value: str, key: str) -> None:
    """Raise ValueError naming `key` unless `value` is one of our severities."""
    if value not in SEVERITY_RANK:
        raise ValueError(f"{key} must be one of {', '.join(SEVERITIES)}, not {value!r}")


def _check_timeout(timeout_s: float) -> None:
    if timeout_s <= 0:
        raise ValueError("timeout_s must be > 0")


@dataclass(frozen=True, slots=True)
class SlackConfig:
    webhook_url_file: str | None = None
    min_severity: str = "warning"
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        check_severity(self.min_severity, "min_severity")
        _check_timeout(self.timeout_s)


@dataclass(frozen=True, slots=True)
class PagerDutyConfig:
    routing_key_file: str | None = None
    events_url: str = PAGERDUTY_EVENTS_URL  # or https://events.eu.pagerduty.com/v2/enqueue
    min_severity: str = "critical"
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        check_severity(self.min_severity, "min_severity")
        _check_timeout(self.timeout_s)
        if not self.events_url.startswith(("https://", "http://")):
            raise ValueError(f"events_url must be an http(s) URL, not {self.events_url!r}")


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    url_file: str | None = None
    min_severity: str = "info"
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        check_severity(self.min_severity, "min_severity")
        _check_timeout(self.timeout_s)


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    """The `[notify]` table of the controller's settings; a missing section means "not configured"."""

    slack: SlackConfig | None = None
    pagerduty: PagerDutyConfig | None = None
    webhook: WebhookConfig | None = None
