"""The agent's settings: one typed object, read from /etc/redwarden/agent.toml, env `REDWARDEN_AGENT_*`.

Layer: configuration. Secrets are given as files (`*_file`) or, for the sandbox and containers, as the
env variables `REDWARDEN_AGENT_REDIS_PASSWORD` / `REDWARDEN_AGENT_NODE_KEY`; never in the TOML. A cluster
in ACL mode has `redis_users_file` instead of the one Redis password (see `protocol.acl`). The
controller's CA certificate is public and may sit in the TOML (`controller_ca_pem`, as user_data writes it).
"""

from __future__ import annotations

import dataclasses
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent.layout import NodeLayout
from protocol import sentinel
from protocol.acl import NodeUsers
from protocol.net import is_loopback
from protocol.settings import ConfigError, load_settings, read_secret, secret_path

ENV_PREFIX = "REDWARDEN_AGENT_"
ROOT_ENV = "REDWARDEN_DROPLET_ROOT"  # set by the sandbox's local DigitalOcean for a droplet's processes
USERS_STATE_FILE = "redis-users.json"  # in state_dir: the users a migration or rotation handed the agent
DEFAULT_STATE_DIR = "/var/lib/redwarden-agent"  # the unit's StateDirectory=redwarden-agent
ROOTED_FIELDS = (
    "redis_password_file", "redis_users_file", "state_dir", "sentinel_password_file", "node_key_file",
    "enroll_token_file", "controller_ca_file",
    "redis_pidfile", "sentinel_pidfile", "redis_data_dir",
)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    cluster: str
    node: str
    address: str  # the address Redis and Sentinel announce; "" = this droplet's private IP (env or metadata)
    controller_url: str
    master_name: str = sentinel.MASTER_NAME
    report_interval_s: float = 1.0
    # between reports, watch the redis-server seen at the last report; the moment it exits, report at once
    # (the controller's fast failover starts from that report)
    watch_redis_exit: bool = True
    # a master that has heard from no replica and no other Sentinel for down-after-milliseconds pauses its
    # own writes (agent/fence.py): Redis would refuse them after min-replicas-max-lag anyway, only later
    local_fence: bool = True
    redis_host: str | None = None  # where to connect; defaults to `address`
    redis_port: int = sentinel.REDIS_PORT
    sentinel_port: int = sentinel.SENTINEL_PORT
    redis_password_file: str | None = None
    # ACL mode (protocol.acl): the roles' secrets as bootstrap stored them from the enrollment (JSON); when
    # the file exists the agent connects to Redis as the `monitor` user and to Sentinel without a password
    redis_users_file: str | None = None
    # where the agent itself may write (0700, its own): the Redis users a migration or rotation hands it over
    # (`set_redis_users`), read in preference to redis_users_file and the redis_password_file credential. Under
    # systemd: the unit's StateDirectory (env STATE_DIRECTORY), since /etc/redwarden is read-only to the
    # service (ProtectSystem=strict) and root's. None (the process sandbox): they go to those two files instead.
    state_dir: str | None = None
    # the ACL user the agent is in Redis ("monitor" in ACL mode; user_data sets it); None: `default`
    redis_username: str | None = None
    sentinel_password_file: str | None = None
    node_key_file: str | None = None  # this node's own key (hex), written by bootstrap from its enrollment
    cluster_secret_file: str | None = None  # ignored since 0.2 (pushes are signed with the node's own key)
    # the CA that signed the controller's certificate: a file, or the PEM itself (user_data carries it)
    controller_ca_file: str | None = None
    controller_ca_pem: str | None = None
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
    # bootstrap: how this node joins its cluster (see agent/bootstrap.py)
    sentinels: tuple[str, ...] = ()  # "ip:port" of the cluster's Sentinels, asked for the current master
    quorum: int = sentinel.QUORUM
    down_after_ms: int = sentinel.DOWN_AFTER_MS
    failover_timeout_ms: int = sentinel.FAILOVER_TIMEOUT_MS
    parallel_syncs: int = sentinel.PARALLEL_SYNCS
    min_replicas_to_write: int = sentinel.MIN_REPLICAS_TO_WRITE
    min_replicas_max_lag_s: int = sentinel.MIN_REPLICAS_MAX_LAG_S
    services: str = "systemd"  # how services are run: "systemd" on droplets, "process" without systemd
    enroll_token_file: str | None = None  # one-time token to fetch the secrets from the controller
    root: str = ""  # filesystem root (the sandbox droplet's directory); "" on a real droplet

    def __post_init__(self) -> None:
        if self.report_interval_s <= 0:
            raise ValueError("report_interval_s must be > 0")
        if not self.controller_url.startswith(("http://", "https://")):
            raise ValueError("controller_url must start with http:// or https://")
        host = urlsplit(self.controller_url).hostname or ""
        if self.controller_url.startswith("http://") and not is_loopback(host):
            raise ValueError(f"controller_url: plain http:// only to a controller on loopback, not {host}; "
                             "use https:// (and controller_ca_file)")
        if self.controller_ca_pem is not None and "-----BEGIN CERTIFICATE-----" not in self.controller_ca_pem:
            raise ValueError("controller_ca_pem holds no PEM certificate")
        if self.log_format not in ("json", "console"):
            raise ValueError("log_format must be 'json' or 'console'")
        if self.log_level.lower() not in ("debug", "info", "warning", "warn", "error", "critical"):
            raise ValueError("log_level must be one of debug, info, warning, error, critical")
        if self.timeout_s <= 0 or self.push_timeout_s <= 0:
            raise ValueError("timeout_s and push_timeout_s must be > 0")
        if self.services not in ("systemd", "process", "sandbox"):
            raise ValueError("services must be 'systemd' or 'process' ('sandbox' is the old name of 'process')")
        for peer in self.sentinels:
            host, _, port = peer.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"sentinels: {peer!r} is not ip:port")
        if self.quorum < 1:
            raise ValueError("quorum must be >= 1")

    def layout(self) -> NodeLayout:
        return NodeLayout(
            address=self.address,
            master_name=self.master_name,
            quorum=self.quorum,
            down_after_ms=self.down_after_ms,
            failover_timeout_ms=self.failover_timeout_ms,
            parallel_syncs=self.parallel_syncs,
            min_replicas_to_write=self.min_replicas_to_write,
            min_replicas_max_lag_s=self.min_replicas_max_lag_s,
            redis_port=self.redis_port,
            sentinel_port=self.sentinel_port,
            root=self.root,
        )

    @property
    def connect_host(self) -> str:
        return self.redis_host or self.address


def ssl_context(config: AgentConfig) -> ssl.SSLContext | None:
    """How the agent verifies the controller over HTTPS: against the configured CA (file or PEM), else the
    system's CAs; None for plain HTTP (loopback only)."""
    if not config.controller_url.startswith("https://"):
        return None
    try:
        if config.controller_ca_pem:
            return ssl.create_default_context(cadata=config.controller_ca_pem)
        return ssl.create_default_context(cafile=config.controller_ca_file)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"controller_ca_file/controller_ca_pem: cannot load the CA ({type(e).__name__})") from None


@dataclass(frozen=True, slots=True)
class AgentSecrets:
    redis_password: str | None
    sentinel_password: str | None
    node_key: bytes
    redis_username: str | None = None  # "monitor" in ACL mode; None: Redis's `default` user (requirepass)


def users_state_path(config: AgentConfig) -> Path | None:
    """Where the agent stores the users it is handed after bootstrap (None: no state_dir)."""
    return Path(config.state_dir) / USERS_STATE_FILE if config.state_dir else None


def load_users(config: AgentConfig) -> NodeUsers | None:
    """The ACL users: the ones last handed to the agent (its state_dir) if any, else the users file bootstrap
    wrote; None where there are none (a cluster on one requirepass)."""
    state = users_state_path(config)
    if state is not None and state.exists():
        try:
            return NodeUsers.from_json(state.read_text())
        except (ValueError, OSError) as e:
            raise ConfigError(f"{state}: {e if isinstance(e, ValueError) else type(e).__name__}") from None
    if not config.redis_users_file or not secret_path(config.redis_users_file).exists():
        return None
    try:
        return NodeUsers.from_json(read_secret(config.redis_users_file, "redis_users_file") or "")
    except ValueError as e:
        raise ConfigError(f"redis_users_file: {e}") from None


def load_config(path: str | Path | None, environ: Mapping[str, str] | None = None) -> AgentConfig:
    """Load and validate; under a droplet root (sandbox) every absolute path setting is rooted there."""
    env = os.environ if environ is None else environ
    config = load_settings(AgentConfig, path, ENV_PREFIX, env)
    config = _identify(config, env)
    if config.state_dir is None and env.get("STATE_DIRECTORY"):  # systemd's StateDirectory=
        config = dataclasses.replace(config, state_dir=env["STATE_DIRECTORY"].split(":")[0])
    root = config.root or env.get(ROOT_ENV, "")
    if not root:
        return config
    rooted: dict[str, Any] = {
        name: root + value
        for name in ROOTED_FIELDS
        if isinstance(value := getattr(config, name), str) and value.startswith("/") and not value.startswith(root)
    }
    return dataclasses.replace(config, root=root, **rooted)


def _identify(config: AgentConfig, env: Mapping[str, str]) -> AgentConfig:
    """Fill an empty `address` and a missing `droplet_id` from the droplet: the sandbox's local
    DigitalOcean sets REDWARDEN_DROPLET_*; a real droplet answers on its metadata service."""
    address, droplet_id = config.address, config.droplet_id
    if not address:
        address = env.get("REDWARDEN_DROPLET_ADDRESS", "")
    if not address and config.metadata_url:
        address = _metadata(config.metadata_url, "/interfaces/private/0/ipv4/address", config.timeout_s) or ""
    if not address:
        raise ConfigError("address is empty and neither REDWARDEN_DROPLET_ADDRESS nor metadata_url gives it")
    if droplet_id is None and env.get("REDWARDEN_DROPLET_ID", "").isdigit():
        droplet_id = int(env["REDWARDEN_DROPLET_ID"])
    return dataclasses.replace(config, address=address, droplet_id=droplet_id)


def _metadata(base_url: str, path: str, timeout_s: float) -> str | None:
    import requests  # only where the droplet's address must be asked for

    from agent.session import agent_session

    try:
        with agent_session() as session:
            resp = session.get(base_url.rstrip("/") + path, timeout=(timeout_s, timeout_s), allow_redirects=False)
    except requests.RequestException:
        return None
    return (resp.text.strip() or None) if resp.status_code < 400 else None


def load_secrets(config: AgentConfig, environ: dict[str, str]) -> AgentSecrets:
    # The service (systemd) gets only redis_password_file as a credential: in ACL mode bootstrap wrote the
    # monitor password there. Where the users file is readable (no systemd, the sandbox) it is used directly;
    # users handed over since (a migration, a rotation: state_dir) come before both.
    state = users_state_path(config)
    users = load_users(config) if not config.redis_username or (state is not None and state.exists()) else None
    redis_password = users.monitor if users else environ.get(ENV_PREFIX + "REDIS_PASSWORD") or read_secret(
        config.redis_password_file, "redis_password_file"
    )
    sentinel_password = environ.get(ENV_PREFIX + "SENTINEL_PASSWORD") or read_secret(
        config.sentinel_password_file, "sentinel_password_file"
    )
    key_hex = environ.get(ENV_PREFIX + "NODE_KEY") or read_secret(config.node_key_file, "node_key_file")
    if not key_hex:
        raise ConfigError("node_key_file is not set (or REDWARDEN_AGENT_NODE_KEY): pushes are signed with the "
                          "node's own key, which bootstrap writes when the node enrolls")
    try:
        key = bytes.fromhex(key_hex.strip())
    except ValueError:
        raise ConfigError("node_key_file: the key in it is not hex") from None
    if len(key) < 16:
        raise ConfigError("node_key_file: the key in it is shorter than 16 bytes")
    return AgentSecrets(redis_password, sentinel_password, key, config.redis_username or ("monitor" if users else None))
