"""The agent's settings: one typed object, read from /etc/redwarden/agent.toml, env `REDWARDEN_AGENT_*`.

Layer: configuration. Secrets are given as files (`*_file`) or, for the sandbox and containers, as the
env variables `REDWARDEN_AGENT_REDIS_PASSWORD` / `REDWARDEN_AGENT_CLUSTER_SECRET`; never in the TOML.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.settings import ConfigError, load_settings, read_secret

ENV_PREFIX = "REDWARDEN_AGENT_"


@dataclass(frozen=True, slots=True)
class AgentConfig:
    cluster: str
    node: str
    address: str  # the address this node's Redis and Sentinel announce
    controller_url: str
    master_name: str = "mymaster"
    report_interval_s: float = 1.0
    redis_host: str | None = None  # where to connect; defaults to `address`
    redis_port: int = 6379
    sentinel_port: int = 26379
    redis_password_file: str | None = None
    sentinel_password_file: str | None = None
    cluster_secret_file: str | None = None
    redis_pidfile: str = "/run/redis/redis-server.pid"
    sentinel_pidfile: str = "/run/sentinel/redis-sentinel.pid"
    redis_data_dir: str = "/var/lib/redis"
    droplet_id: int | None = None
    metadata_url: str | None = None  # e.g. http://169.254.169.254/metadata/v1 on a real droplet
    timeout_s: float = 1.0  # per Redis/Sentinel command
    push_timeout_s: float = 2.0
    max_backoff_s: float = 30.0
    log_format: str = "json"  # "json" for services, "console" for people
    log_level: str = "info"

    def __post_init__(self) -> None:
        if self.report_interval_s <= 0:
            raise ValueError("report_interval_s must be > 0")
        if not self.controller_url.startswith(("http://", "https://")):
            raise ValueError("controller_url must start with http:// or https://")
        if self.log_format not in ("json", "console"):
            raise ValueError("log_format must be 'json' or 'console'")
        if self.timeout_s <= 0 or self.push_timeout_s <= 0:
            raise ValueError("timeout_s and push_timeout_s must be > 0")

    @property
    def connect_host(self) -> str:
        return self.redis_host or self.address


@dataclass(frozen=True, slots=True)
class AgentSecrets:
    redis_password: str | None
    sentinel_password: str | None
    cluster_secret: bytes


def load_config(path: str | Path | None) -> AgentConfig:
    return load_settings(AgentConfig, path, ENV_PREFIX)


def load_secrets(config: AgentConfig, environ: dict[str, str]) -> AgentSecrets:
    redis_password = environ.get(ENV_PREFIX + "REDIS_PASSWORD") or read_secret(
        config.redis_password_file, "redis_password_file"
    )
    sentinel_password = environ.get(ENV_PREFIX + "SENTINEL_PASSWORD") or read_secret(
        config.sentinel_password_file, "sentinel_password_file"
    )
    secret = environ.get(ENV_PREFIX + "CLUSTER_SECRET") or read_secret(
        config.cluster_secret_file, "cluster_secret_file"
    )
    if not secret:
        raise ConfigError(
            "cluster_secret_file is not set (or REDWARDEN_AGENT_CLUSTER_SECRET): pushes must be signed"
        )
    return AgentSecrets(redis_password, sentinel_password, secret.encode())
