"""`redwarden-agent bootstrap`: make a new droplet a member of its cluster.

Layer: application. Steps, each logged:
  1. secrets: read the Redis password (or, in ACL mode, the roles' users: `protocol.acl`) and this node's
     key; if they are not there yet and a one-time enrollment token is, trade it with the controller for
     them (see `enroll`);
  2. ask the configured Sentinels who the master is (`SENTINEL GET-MASTER-ADDR-BY-NAME`); a strict
     majority of those that answer decides; nobody answers: this is the first node, it is the master;
  3. write redis.conf (replica of that master, auth both ways, announce address) and sentinel.conf
     (exactly one monitor line, no myid), never over a running service's config;
  4. start redis-server, redis-sentinel, then the agent (systemd on a droplet, `agent.processes` where
     there is no systemd), and leave a boot script so a rebooted node without systemd starts them again
     (systemd units are enabled).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import requests
import structlog
from redis.exceptions import RedisError

from agent.config import DEFAULT_STATE_DIR, USERS_STATE_FILE, AgentConfig, load_users, ssl_context
from agent.layout import NodeLayout, render_redis_conf, render_sentinel_conf
from agent.redis_client import command, raw_client
from agent.services import PROCESS_SERVICES, Services, services_for
from agent.session import agent_session
from protocol.acl import NodeUsers, parse_version
from protocol.directives import valid_address
from protocol.settings import ConfigError, read_secret

log = structlog.get_logger("redwarden.bootstrap")


class BootstrapError(Exception):
    """The node could not join its cluster; the message says why."""


def decide_master(answers: Sequence[str | None]) -> str | None:
    """The address a strict majority of the answering Sentinels name, else None. Pure."""
    named = [a for a in answers if a]
    if not named:
        return None
    address, count = Counter(named).most_common(1)[0]
    return address if count * 2 > len(named) else None


def ask_sentinels(
    sentinels: Sequence[str], master_name: str, password: str | None, timeout_s: float
) -> list[str | None]:
    """Each Sentinel's answer to GET-MASTER-ADDR-BY-NAME ("ip:port"), None where it did not answer."""
    answers: list[str | None] = []
    for peer in sentinels:
        host, port = peer.rsplit(":", 1)
        with raw_client(host, int(port), password, timeout_s) as client:
            try:
                reply = command(client, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", master_name)
            except (RedisError, OSError):
                reply = None
        answers.append(_address(reply))
    return answers


def _address(reply: object) -> str | None:
    """"ip:port" from a GET-MASTER-ADDR-BY-NAME reply ([ip, port]); None for nil or anything else."""
    if isinstance(reply, list) and len(reply) == 2 and all(isinstance(x, str) for x in reply):
        address = f"{reply[0]}:{reply[1]}"
        return address if valid_address(address) else None  # it goes into redis.conf: IP literals only
    return None


def enroll(config: AgentConfig, token: str, timeout_s: float = 300.0,
           sleep: Callable[[float], None] = time.sleep) -> tuple[str | NodeUsers, str]:
    """Trade a one-time enrollment token for (the Redis secrets, this node's key as hex) at the controller,
    over HTTPS verified with the controller's CA. The Redis secrets are the one password of a cluster on
    `requirepass`, or the ACL users (`protocol.acl.NodeUsers`) of a cluster in ACL mode.

    The controller may be restarting while this droplet boots: unreachable and 5xx answers are retried
    with backoff for `timeout_s`; a refusal (403, 404, 422) is final."""
    url = config.controller_url.rstrip("/") + "/v1/enroll"
    deadline = time.monotonic() + timeout_s
    delay = 0.5
    with agent_session(ssl_context(config)) as session:
        while True:
            try:
                resp = session.post(url, json={"cluster": config.cluster, "node": config.node, "token": token},
                                    timeout=(config.push_timeout_s, config.push_timeout_s), allow_redirects=False)
                if resp.status_code == 200:
                    body = resp.json()
                    if isinstance(body.get("redis_users"), dict):
                        try:
                            return NodeUsers.from_json(json.dumps(body["redis_users"])), str(body["node_key"])
                        except ValueError as e:
                            raise BootstrapError(f"enrollment answer unusable: {e}") from None
                    return str(body["redis_password"]), str(body["node_key"])
                if resp.status_code < 500:
                    raise BootstrapError(f"enrollment refused: HTTP {resp.status_code} {resp.text[:200]}")
                problem = f"HTTP {resp.status_code}"
            except requests.RequestException as e:
                problem = f"controller unreachable ({type(e).__name__})"
            if time.monotonic() + delay > deadline:
                raise BootstrapError(f"enrollment failed for {timeout_s:.0f} s: {problem}")
            log.warning("bootstrap.enroll_retrying", problem=problem, retry_in_s=delay)
            sleep(delay)
            delay = min(delay * 2, 10.0)


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def load_or_enroll_secrets(config: AgentConfig) -> str | NodeUsers:
    """The Redis password (or the ACL users), enrolling first when only a token is at hand."""
    # bootstrap runs outside the agent's unit (no STATE_DIRECTORY): the users a rotation handed the agent since
    # are in the unit's state directory all the same
    with_state = config if config.state_dir else dataclasses.replace(config, state_dir=config.root + DEFAULT_STATE_DIR)
    try:
        users = load_users(with_state)
    except ConfigError as e:
        raise BootstrapError(str(e)) from None
    password = users or os.environ.get("REDWARDEN_AGENT_REDIS_PASSWORD") or _maybe_read(config.redis_password_file)
    if password and (os.environ.get("REDWARDEN_AGENT_NODE_KEY") or _maybe_read(config.node_key_file)):
        return password
    token = _maybe_read(config.enroll_token_file)
    if not token:
        raise BootstrapError("no redis password and node key, and no enroll_token_file to fetch them with")
    if not config.redis_password_file or not config.node_key_file:
        raise BootstrapError("enrollment needs redis_password_file and node_key_file to store the secrets")
    secret, key = enroll(config, token)
    if isinstance(secret, NodeUsers):
        if not config.redis_users_file:
            raise BootstrapError("the cluster uses ACL users: enrollment needs redis_users_file to store them")
        _write_private(Path(config.redis_users_file), secret.to_json() + "\n")
        # the agent service's one Redis credential (systemd LoadCredential): the monitor user's password
        _write_private(Path(config.redis_password_file), secret.monitor + "\n")
    else:
        _write_private(Path(config.redis_password_file), secret + "\n")
    _write_private(Path(config.node_key_file), key + "\n")
    # users handed to an agent before this enrollment would shadow the new ones (`load_users`)
    Path(str(with_state.state_dir), USERS_STATE_FILE).unlink(missing_ok=True)
    Path(config.enroll_token_file or "").unlink(missing_ok=True)  # single use: nothing left to steal
    log.info("bootstrap.enrolled", node=config.node, acl=isinstance(secret, NodeUsers))
    return secret


def _maybe_read(path: str | None) -> str | None:
    if not path or not Path(path).exists():
        return None
    return read_secret(path, "secret file")


def redis_server_version(binary: str | None = None) -> tuple[int, int]:
    """(major, minor) of the redis-server this node runs (`redis-server --version`): ACL syntax depends on it."""
    exe = binary or os.environ.get("REDWARDEN_REDIS_SERVER") or shutil.which("redis-server") or "redis-server"
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise BootstrapError(f"cannot run {exe} --version: {e}") from None
    version = parse_version(out)
    if version is None or version < (6, 0):
        raise BootstrapError(f"ACL users need redis-server >= 6.0; `{exe} --version` says {out.strip()[:80]!r}")
    return version


def write_configs(layout: NodeLayout, password: str | NodeUsers, master: str | None,
                  version: tuple[int, int] = (7, 0)) -> None:
    users = password if isinstance(password, NodeUsers) else None
    plain = users.replication if users else str(password)
    for d in (layout.redis_data_dir, layout.sentinel_dir, layout.redis_pidfile.parent,
              layout.sentinel_pidfile.parent, layout.log_dir, layout.redis_conf.parent):
        d.mkdir(parents=True, exist_ok=True)
    _write_private(layout.redis_conf, render_redis_conf(layout, plain, master, users, version))
    _write_private(layout.sentinel_conf,
                   render_sentinel_conf(layout, plain, master or layout.redis_address, users, version))


def install_boot_script(layout: NodeLayout, config_path: Path) -> Path:
    """A boot.d script that starts the services again after a reboot (nodes without systemd)."""
    script = layout.path("/etc/redwarden/boot.d/50-redwarden")
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(f'#!/bin/sh\nexec redwarden-agent start-services --config "{config_path}"\n')
    script.chmod(0o755)
    return script


def bootstrap(config: AgentConfig, config_path: Path, services: Services | None = None,
              version: Callable[[], tuple[int, int]] = redis_server_version) -> str:
    layout = config.layout()
    if services is None:
        services = services_for(config, config_path)
    password = load_or_enroll_secrets(config)
    redis_version = version() if isinstance(password, NodeUsers) else (7, 0)
    if services.running("redis") or services.running("sentinel"):
        raise BootstrapError("redis-server or redis-sentinel is already running here: bootstrap is for new nodes")
    peers = [s for s in config.sentinels if s != f"{config.address}:{config.sentinel_port}"]
    sentinel_password = os.environ.get("REDWARDEN_AGENT_SENTINEL_PASSWORD") or _maybe_read(
        config.sentinel_password_file
    )
    answers = ask_sentinels(peers, config.master_name, sentinel_password, config.timeout_s)
    master = decide_master(answers)
    if master is None and any(answers):
        raise BootstrapError(f"the Sentinels do not agree on a master ({answers}); refusing to guess")
    if master == layout.redis_address:
        raise BootstrapError(f"the Sentinels name this node's own address {master} as master; refusing to guess")
    role = "master (first node)" if master is None else f"replica of {master}"
    log.info("bootstrap.decided", node=config.node, role=role, sentinels_answering=sum(1 for a in answers if a))
    try:
        write_configs(layout, password, master, redis_version)
    except ValueError as e:
        raise BootstrapError(f"refusing to write the configuration: {e}") from None
    for service in ("redis", "sentinel", "agent"):
        services.start(service)
        log.info("bootstrap.started", service=service)
    if config.services in PROCESS_SERVICES:
        install_boot_script(layout, config_path)
    return f"{config.node} joined {config.cluster} as {role}"


def start_services(config: AgentConfig, config_path: Path) -> str:
    """After a reboot: start what bootstrap set up, with the configs as Redis and Sentinel left them."""
    if not config.layout().redis_conf.exists():
        raise ConfigError(f"{config.layout().redis_conf} does not exist: run `redwarden-agent bootstrap` first")
    services = services_for(config, config_path)
    for service in ("redis", "sentinel", "agent"):
        services.start(service)
    return f"{config.node}: redis, sentinel and agent started"
