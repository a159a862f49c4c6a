"""The controller's settings: /etc/redwarden/controller.toml, top-level keys overridable by `REDWARDEN_*`.

Layer: configuration. Cross-field checks name the key: a controller that listens beyond loopback needs TLS
and an admin token; a package URL needs its checksum. Each node signs its reports with its own key
(`controller.adapters.storage.credentials`), not with a secret of the cluster's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from controller.core.planner import HealPolicy
from controller.notify_config import NotifyConfig
from protocol import sentinel
from protocol.acl import ClusterUsers
from protocol.net import is_loopback
from protocol.settings import ConfigError, load_settings, read_secret

ENV_PREFIX = "REDWARDEN_"


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    secret_file: str | None = None  # ignored since 0.2 (each node signs with its own key); kept so old files load
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
    # ACL mode (protocol.acl): the roles' secrets (JSON: admin, replication, sentinel, monitor passwords and
    # the app's SHA-256). New droplets get per-role users and the `default` user off; the controller heals as
    # `admin`. Without it the cluster runs on the one redis_password_file (`requirepass`), as before.
    acl_users_file: str | None = None
    # how replacement droplets are made (same region, size, image, VPC and tag as the cluster's)
    region: str | None = None
    size: str | None = None
    image: str | None = None
    vpc_uuid: str | None = None
    ssh_keys: tuple[str, ...] = ()
    tag: str | None = None  # the cluster's droplet tag; default "redwarden-<name>"
    reserved_ip: str | None = None  # moved to the master's droplet after a failover (clients without Sentinel)
    agent_deb_url: str | None = None  # where a fresh droplet fetches the agent package (None: in the image)
    agent_deb_sha256: str | None = None  # its SHA-256, checked before it is installed (required with the URL)
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
        if self.agent_deb_url and not (self.agent_deb_sha256 and len(self.agent_deb_sha256) == 64
                                       and all(c in "0123456789abcdef" for c in self.agent_deb_sha256.lower())):
            raise ValueError("agent_deb_sha256 (64 hex digits: sha256sum of the package) is required with "
                             "agent_deb_url: a droplet installs nothing it cannot check")
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
    # operators: bearer tokens (files, or systemd credentials); admin may change things, read may only look
    admin_token_file: str | None = None
    read_token_file: str | None = None
    # TLS: the server certificate and key agents and operators connect to, and the CA that signed it (public:
    # it goes into new droplets' user_data so their agents verify this controller); `redwarden controller
    # init-tls` makes all three. Without them the controller serves plain HTTP, on loopback only.
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_ca_file: str | None = None
    do_api_url: str = "https://api.digitalocean.com"
    do_token_file: str | None = None  # or REDWARDEN_DO_TOKEN; no token: no cloud actions (alert only)
    do_ca_file: str | None = None  # a private CA for do_api_url (the sandbox's)
    cloud_poll_s: float = 5.0
    do_timeout_s: float = 30.0  # per request to the DigitalOcean API (connect and read); a timeout is retried
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
        if not 1 <= self.do_timeout_s <= 300:
            raise ValueError("do_timeout_s must be between 1 and 300")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        if not is_loopback(self.listen_host):
            if not self.tls_cert_file:
                raise ValueError(f"listen_host {self.listen_host} is not loopback: tls_cert_file and tls_key_file "
                                 "are required there (`redwarden controller init-tls` makes them)")
            if not self.admin_token_file:
                raise ValueError(f"listen_host {self.listen_host} is not loopback: admin_token_file is required "
                                 "there")

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert_file)


def load_config(path: str | Path | None) -> ControllerConfig:
    return load_settings(ControllerConfig, path, ENV_PREFIX)


def cluster_redis_password(name: str, cluster: ClusterConfig, environ: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    key = f"REDWARDEN_CLUSTER_{name.upper().replace('-', '_')}_REDIS_PASSWORD"
    return env.get(key) or read_secret(cluster.redis_password_file, f"clusters.{name}.redis_password_file")


def cluster_users(name: str, cluster: ClusterConfig, rotated: Path | None = None) -> ClusterUsers | None:
    """The cluster's ACL users (its `acl_users_file`, or the controller's copy `rotated` once a rotation wrote
    it: `controller.adapters.storage.acl_users`), or None for a cluster on one `requirepass`."""
    what = f"clusters.{name}.acl_users_file"
    if cluster.acl_users_file and rotated is not None and rotated.exists():
        text: str | None = rotated.read_text()
        what = str(rotated)
    else:
        text = read_secret(cluster.acl_users_file, what)
    if text is None:
        return None
    try:
        return ClusterUsers.from_json(text)
    except ValueError as e:
        raise ConfigError(f"{what}: {e}") from None
