"""The controller's settings: /etc/redwarden/controller.toml, top-level keys overridable by `REDWARDEN_*`.

Layer: configuration. Each cluster has its own push secret (a file, or `REDWARDEN_CLUSTER_<NAME>_SECRET`
in the environment, name upper-cased with `-` as `_`): a leaked agent secret exposes one cluster only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from controller.core.planner import HealPolicy
from controller.notify_config import NotifyConfig
from protocol import sentinel
from protocol.settings import ConfigError, load_settings, read_secret

ENV_PREFIX = "REDWARDEN_"


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    secret_file: str | None = None
    master_name: str = sentinel.MASTER_NAME
    expected_nodes: int = 3
    report_interval_s: float = 1.0
    stale_after_intervals: int = 3  # a node whose report is older than this many intervals is silent
    # the Sentinel settings a new cluster is created with (replacements copy the live Sentinels')
    quorum: int | None = None  # None: a majority of expected_nodes
    down_after_ms: int = sentinel.DOWN_AFTER_MS
    failover_timeout_ms: int = sentinel.FAILOVER_TIMEOUT_MS
    # what the controller itself needs to heal: REPLICAOF needs the Redis password
    redis_password_file: str | None = None  # or REDWARDEN_CLUSTER_<NAME>_REDIS_PASSWORD
    sentinel_password_file: str | None = None
    # how replacement droplets are made (same region, size, image, VPC and tag as the cluster's)
    region: str | None = None
    size: str | None = None
    image: str | None = None
    vpc_uuid: str | None = None
    ssh_keys: tuple[str, ...] = ()
    tag: str | None = None  # the cluster's droplet tag; default "redwarden-<name>"
    reserved_ip: str | None = None  # moved to the master's droplet after a failover (clients without Sentinel)
    agent_deb_url: str | None = None  # where a fresh droplet fetches the agent package (None: in the image)
    metadata_url: str | None = "http://169.254.169.254/metadata/v1"
    services: str = "systemd"  # "sandbox" in the sandbox
    user_data_template: str | None = None  # default: controller/templates/user-data-<droplet|sandbox>.tmpl

    def __post_init__(self) -> None:
        if self.expected_nodes < 1:
            raise ValueError("expected_nodes must be >= 1")
        if self.report_interval_s <= 0:
            raise ValueError("report_interval_s must be > 0")
        if self.stale_after_intervals < 1:
            raise ValueError("stale_after_intervals must be >= 1")
        if self.services not in ("systemd", "sandbox"):
            raise ValueError("services must be 'systemd' or 'sandbox'")

    @property
    def stale_after_s(self) -> float:
        return self.report_interval_s * self.stale_after_intervals


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    listen_host: str = "127.0.0.1"
    listen_port: int = 8787
    state_path: str = "/var/lib/redwarden/state.db"
    log_format: str = "json"
    log_level: str = "info"
    max_report_bytes: int = 1_048_576
    cycle_interval_s: float = 0.25  # how often findings, incidents and alerts are re-derived
    public_url: str | None = None  # how agents reach this controller (for new droplets); default from listen_*
    admin_token_file: str | None = None  # when set, pause/resume/ack need `Authorization: Bearer <token>`
    do_api_url: str = "https://api.digitalocean.com"
    do_token_file: str | None = None  # or REDWARDEN_DO_TOKEN; no token: no cloud actions (alert only)
    do_ca_file: str | None = None  # a private CA for do_api_url (the sandbox's)
    cloud_poll_s: float = 5.0
    clusters: dict[str, ClusterConfig] = field(default_factory=dict)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    heal: HealPolicy = field(default_factory=HealPolicy)

    def __post_init__(self) -> None:
        if not 0 < self.listen_port < 65536:
            raise ValueError("listen_port must be between 1 and 65535")
        if self.log_format not in ("json", "console"):
            raise ValueError("log_format must be 'json' or 'console'")
        if self.cycle_interval_s <= 0:
            raise ValueError("cycle_interval_s must be > 0")


def load_config(path: str | Path | None) -> ControllerConfig:
    return load_settings(ControllerConfig, path, ENV_PREFIX)


def secret_env_name(cluster: str) -> str:
    return f"REDWARDEN_CLUSTER_{cluster.upper().replace('-', '_')}_SECRET"


def load_cluster_secrets(config: ControllerConfig, environ: Mapping[str, str] | None = None) -> dict[str, bytes]:
    env = os.environ if environ is None else environ
    secrets: dict[str, bytes] = {}
    for name, cluster in config.clusters.items():
        value = env.get(secret_env_name(name)) or read_secret(cluster.secret_file, f"clusters.{name}.secret_file")
        if not value:
            raise ConfigError(f"clusters.{name}.secret_file is not set (nor {secret_env_name(name)})")
        secrets[name] = value.encode()
    return secrets


def cluster_redis_password(name: str, cluster: ClusterConfig, environ: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    key = f"REDWARDEN_CLUSTER_{name.upper().replace('-', '_')}_REDIS_PASSWORD"
    return env.get(key) or read_secret(cluster.redis_password_file, f"clusters.{name}.redis_password_file")
