"""Settings for alert destinations (`[notify.slack]`, `[notify.pagerduty]`, `[notify.webhook]`) and the
notifiers built from them.

Layer: configuration. Each destination is optional. Its secret (webhook URL, routing key) lives in a file
named by a `*_file` setting, read only by `build_notifiers`, or comes from the environment
(`REDWARDEN_SLACK_WEBHOOK_URL`, `REDWARDEN_PAGERDUTY_ROUTING_KEY`, `REDWARDEN_WEBHOOK_URL`); setting the
variable enables the destination with its defaults even without a section. Errors name the key, never the
secret.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import requests

from agent.settings import ConfigError, read_secret
from controller.notify import (
    PAGERDUTY_EVENTS_URL,
    Notifier,
    PagerDutyNotifier,
    SlackNotifier,
    WebhookNotifier,
    check_severity,
)

ENV_SLACK_WEBHOOK_URL = "REDWARDEN_SLACK_WEBHOOK_URL"
ENV_PAGERDUTY_ROUTING_KEY = "REDWARDEN_PAGERDUTY_ROUTING_KEY"
ENV_WEBHOOK_URL = "REDWARDEN_WEBHOOK_URL"


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
