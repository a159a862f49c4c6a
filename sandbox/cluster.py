"""A local Redis Sentinel cluster: one "droplet" per loopback address, real processes, an agent each.

Layer: application (sandbox). Layout of a sandbox dir:

    sandbox.json                 what `status` reads: addresses, controller URL, droplets
    secrets/                     redis.pass, cluster.secret (mode 0600)
    controller/                  controller.toml, state.db, controller.log
    droplets/<name>/             redis.conf, sentinel.conf, agent.toml, data/, run/*.pid, *.log

Node configs follow the production layout: Redis on :6379 and Sentinel on :26379 bound to and
announcing the droplet's own address, `requirepass` and `masterauth` on every node, `sentinel auth-pass`,
master name `mymaster`, quorum 2 (a majority), parallel-syncs 1.
"""

from __future__ import annotations

import json
import secrets
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from sandbox import runner
from sandbox.addresses import claim_addresses, release_addresses
from sandbox.runner import ServiceSpec

REDIS_PORT = 6379
SENTINEL_PORT = 26379
CONTROLLER_PORT = 8787
SERVICES = ("redis", "sentinel", "agent")
ACTIONS = ("kill", "freeze", "thaw", "start")


class SandboxError(Exception):
    """Something the person running the sandbox must fix or know about."""


@dataclass(frozen=True, slots=True)
class SandboxOptions:
    nodes: int = 3
    cluster: str = "sandbox"
    master_name: str = "mymaster"
    down_after_ms: int = 5000
    failover_timeout_ms: int = 60000
    report_interval_s: float = 1.0
    redis_server: str = "redis-server"
    redis_sentinel: str = "redis-sentinel"
    # alert destinations, handed to the sandbox's controller (written as secret files, never logged)
    slack_webhook: str | None = None
    pagerduty_url: str | None = None
    pagerduty_routing_key: str | None = None
    webhook_url: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.nodes <= 50:
            raise SandboxError("--nodes must be between 1 and 50")
        if self.down_after_ms < 100:
            raise SandboxError("--down-after-ms must be >= 100")
        if self.failover_timeout_ms < 1000:
            raise SandboxError("--failover-timeout-ms must be >= 1000")
        if self.report_interval_s <= 0:
            raise SandboxError("--report-interval-s must be > 0")
        if (self.pagerduty_url is None) != (self.pagerduty_routing_key is None):
            raise SandboxError("--pagerduty-url and --pagerduty-routing-key go together")

    @property
    def quorum(self) -> int:
        return self.nodes // 2 + 1


def _state_path(root: Path) -> Path:
    return root / "sandbox.json"


def load_state(root: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(_state_path(root).read_text())
    except FileNotFoundError:
        raise SandboxError(f"no sandbox in {root} (run `redwarden sandbox up --dir {root}` first)") from None
    return data


def _save_state(root: Path, state: dict[str, Any]) -> None:
    tmp = _state_path(root).with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(_state_path(root))


def _write_secret(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.touch(mode=0o600)
    path.write_text(value + "\n")


# -- configs -----------------------------------------------------------------------------------

def redis_conf(droplet: Path, address: str, password: str, master: str | None) -> str:
    lines = [
        f"bind {address}",
        f"port {REDIS_PORT}",
        "daemonize no",
        f"pidfile {droplet / 'run' / 'redis.pid'}",
        'logfile ""',
        f"dir {droplet / 'data'}",
        'proc-title-template "{title} {listen-addr} {server-mode} {config-file}"',
        f"requirepass {password}",
        f"masterauth {password}",
        f"replica-announce-ip {address}",
        "min-replicas-to-write 1",
        "min-replicas-max-lag 10",
        "appendonly yes",
        "save 60 1000",
    ]
    if master:
        lines.append(f"replicaof {master} {REDIS_PORT}")
    return "\n".join(lines) + "\n"


def sentinel_conf(droplet: Path, address: str, password: str, master: str, opts: SandboxOptions) -> str:
    name = opts.master_name
    return "\n".join([
        f"bind {address}",
        f"port {SENTINEL_PORT}",
        "daemonize no",
        f"pidfile {droplet / 'run' / 'sentinel.pid'}",
        'logfile ""',
        f"dir {droplet / 'sentinel'}",
        'proc-title-template "{title} {listen-addr} {server-mode} {config-file}"',
        f"sentinel announce-ip {address}",
        "sentinel resolve-hostnames no",
        f"sentinel monitor {name} {master} {REDIS_PORT} {opts.quorum}",
        f"sentinel auth-pass {name} {password}",
        f"sentinel down-after-milliseconds {name} {opts.down_after_ms}",
        f"sentinel failover-timeout {name} {opts.failover_timeout_ms}",
        f"sentinel parallel-syncs {name} 1",
    ]) + "\n"


def agent_toml(root: Path, droplet: Path, name: str, address: str, controller_url: str, opts: SandboxOptions) -> str:
    return "\n".join([
        f'cluster = "{opts.cluster}"',
        f'node = "{name}"',
        f'address = "{address}"',
        f'controller_url = "{controller_url}"',
        f'master_name = "{opts.master_name}"',
        f"report_interval_s = {opts.report_interval_s}",
        f'redis_password_file = "{root / "secrets" / "redis.pass"}"',
        f'cluster_secret_file = "{root / "secrets" / "cluster.secret"}"',
        f'redis_pidfile = "{droplet / "run" / "redis.pid"}"',
        f'sentinel_pidfile = "{droplet / "run" / "sentinel.pid"}"',
        f'redis_data_dir = "{droplet / "data"}"',
        f"timeout_s = {min(1.0, max(0.2, opts.report_interval_s))}",
        f"push_timeout_s = {max(1.0, opts.report_interval_s * 2)}",
        "max_backoff_s = 5.0",
    ]) + "\n"


def notify_toml(root: Path, opts: SandboxOptions) -> list[str]:
    """[notify.*] sections; the URLs and the routing key go to files under secrets/."""
    lines: list[str] = []
    secrets_dir = root / "secrets"
    if opts.slack_webhook:
        _write_secret(secrets_dir / "slack.url", opts.slack_webhook)
        lines += ["[notify.slack]", f'webhook_url_file = "{secrets_dir / "slack.url"}"', 'min_severity = "warning"', ""]
    if opts.pagerduty_url and opts.pagerduty_routing_key:
        _write_secret(secrets_dir / "pagerduty.key", opts.pagerduty_routing_key)
        lines += ["[notify.pagerduty]", f'routing_key_file = "{secrets_dir / "pagerduty.key"}"',
                  f'events_url = "{opts.pagerduty_url}"', 'min_severity = "critical"', ""]
    if opts.webhook_url:
        _write_secret(secrets_dir / "webhook.url", opts.webhook_url)
        lines += ["[notify.webhook]", f'url_file = "{secrets_dir / "webhook.url"}"', 'min_severity = "info"', ""]
    return lines


def controller_toml(root: Path, address: str, opts: SandboxOptions) -> str:
    return "\n".join([
        f'listen_host = "{address}"',
        f"listen_port = {CONTROLLER_PORT}",
        f'state_path = "{root / "controller" / "state.db"}"',
        "",
        f"[clusters.{opts.cluster}]",
        f'secret_file = "{root / "secrets" / "cluster.secret"}"',
        f'master_name = "{opts.master_name}"',
        f"expected_nodes = {opts.nodes}",
        f"report_interval_s = {opts.report_interval_s}",
        "",
        *notify_toml(root, opts),
    ]) + "\n"


# -- services ----------------------------------------------------------------------------------

def droplet_specs(root: Path, name: str, state: dict[str, Any]) -> dict[str, ServiceSpec]:
    d = root / "droplets" / name
    redis_server = state.get("redis_server", "redis-server")
    redis_sentinel = state.get("redis_sentinel", "redis-sentinel")
    return {
        "redis": ServiceSpec("redis", (redis_server, str(d / "redis.conf")), d / "run" / "redis.pid",
                             d / "redis.log", str(d / "redis.conf"), cwd=d),
        "sentinel": ServiceSpec("sentinel", (redis_sentinel, str(d / "sentinel.conf")),
                                d / "run" / "sentinel.pid", d / "sentinel.log", str(d / "sentinel.conf"), cwd=d),
        "agent": ServiceSpec("agent", (sys.executable, "-m", "agent.cli", "run", "--config", str(d / "agent.toml")),
                             d / "run" / "agent.pid", d / "agent.log", str(d / "agent.toml"), cwd=d),
    }


def controller_spec(root: Path) -> ServiceSpec:
    c = root / "controller"
    conf = c / "controller.toml"
    return ServiceSpec("controller", (sys.executable, "-m", "controller.cli", "controller", "run", "--config",
                                      str(conf)), c / "controller.pid", c / "controller.log", str(conf), cwd=c)


def all_specs(root: Path, state: dict[str, Any]) -> list[ServiceSpec]:
    specs = []
    for d in state.get("droplets", []):
        s = droplet_specs(root, d["name"], state)
        specs.extend([s["agent"], s["sentinel"], s["redis"]])
    specs.append(controller_spec(root))
    return specs


def any_running(root: Path, state: dict[str, Any]) -> bool:
    return any(runner.pid_of(s) is not None for s in all_specs(root, state))


# -- up / down / status / fault ----------------------------------------------------------------

def up(
    root: Path,
    opts: SandboxOptions,
    timeout_s: float = 90.0,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    if _state_path(root).exists():
        old = load_state(root)
        if any_running(root, old):
            raise SandboxError(f"a sandbox is already running in {root} (run `redwarden sandbox down` first)")
        release_addresses(root)
    _save_state(root, {"up": True, "starting": True})  # our claims count as held from here on
    addresses = claim_addresses(root, opts.nodes + 1, (REDIS_PORT, SENTINEL_PORT, CONTROLLER_PORT))
    controller_address, node_addresses = addresses[0], addresses[1:]
    controller_url = f"http://{controller_address}:{CONTROLLER_PORT}"
    password = secrets.token_hex(16)
    _write_secret(root / "secrets" / "redis.pass", password)
    _write_secret(root / "secrets" / "cluster.secret", secrets.token_hex(32))
    droplets = [{"name": f"redis-{i + 1}", "address": a} for i, a in enumerate(node_addresses)]
    state: dict[str, Any] = {
        "up": True,
        "cluster": opts.cluster,
        "master_name": opts.master_name,
        "controller_url": controller_url,
        "controller_address": controller_address,
        "addresses": addresses,
        "redis_password": password,
        "droplets": droplets,
        "redis_server": opts.redis_server,
        "redis_sentinel": opts.redis_sentinel,
        "options": {
            "down_after_ms": opts.down_after_ms,
            "failover_timeout_ms": opts.failover_timeout_ms,
            "report_interval_s": opts.report_interval_s,
        },
    }
    _save_state(root, state)
    try:
        c = root / "controller"
        c.mkdir(parents=True, exist_ok=True)
        (c / "controller.toml").write_text(controller_toml(root, controller_address, opts))
        runner.start(controller_spec(root))
        progress(f"controller on {controller_url}")
        master = node_addresses[0]
        for d in droplets:
            path = root / "droplets" / d["name"]
            for sub in ("data", "run", "sentinel"):
                (path / sub).mkdir(parents=True, exist_ok=True)
            is_master = d["address"] == master
            (path / "redis.conf").write_text(redis_conf(path, d["address"], password, None if is_master else master))
            (path / "sentinel.conf").write_text(sentinel_conf(path, d["address"], password, master, opts))
            (path / "agent.toml").write_text(agent_toml(root, path, d["name"], d["address"], controller_url, opts))
            specs = droplet_specs(root, d["name"], state)
            for service in ("redis", "sentinel", "agent"):
                runner.start(specs[service])
            progress(f"droplet {d['name']} on {d['address']} ({'master' if is_master else 'replica'})")
        wait_healthy(controller_url, opts, timeout_s, progress)
    except BaseException:
        down(root)
        raise
    return state


def _healthy_problem(cluster: dict[str, Any], opts: SandboxOptions) -> str | None:
    """None when the cluster looks healthy, else what is still missing."""
    nodes = cluster["nodes"]
    if len(nodes) < opts.nodes:
        return f"{len(nodes)}/{opts.nodes} agents reporting"
    if cluster["master"] is None:
        return "no agreed master yet"
    if not all(n["redis_up"] and n["sentinel_up"] for n in nodes):
        return "not every redis and sentinel is up"
    replicas = [n for n in nodes if n["role"] == "replica"]
    if len(replicas) != opts.nodes - 1 or any(n["link"] != "up" for n in replicas):
        return "replicas still syncing"
    s = cluster["sentinels"]
    if s["reachable"] != opts.nodes or not s["agree"]:
        return f"sentinels {s['reachable']}/{opts.nodes} reachable, agree={s['agree']}"
    others = opts.nodes - 1
    if any(n["sentinel_known_sentinels"] != others or n["sentinel_known_replicas"] != others for n in nodes):
        return "sentinels still discovering each other"
    return None


def wait_healthy(controller_url: str, opts: SandboxOptions, timeout_s: float,
                 progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    problem = "controller not answering"
    last_said = ""
    session = requests.Session()
    while time.monotonic() < deadline:
        try:
            cluster: dict[str, Any] = session.get(f"{controller_url}/v1/clusters/{opts.cluster}", timeout=2).json()
            found = _healthy_problem(cluster, opts)
            if found is None:
                return cluster
            problem = found
        except (requests.RequestException, ValueError, KeyError):
            problem = "controller not answering"
        if problem != last_said:
            progress(f"waiting: {problem}")
            last_said = problem
        time.sleep(0.2)
    raise SandboxError(f"cluster not healthy after {timeout_s:.0f} s: {problem}")


def down(root: Path) -> None:
    root = root.resolve()
    state = load_state(root)
    runner.stop_all(all_specs(root, state))
    release_addresses(root)
    state["up"] = False
    _save_state(root, state)


def status(root: Path) -> dict[str, Any]:
    root = root.resolve()
    state = load_state(root)
    droplets = []
    for d in state.get("droplets", []):
        specs = droplet_specs(root, d["name"], state)
        droplets.append({
            "name": d["name"],
            "address": d["address"],
            "pids": {service: runner.pid_of(specs[service]) for service in SERVICES},
        })
    return {
        "dir": str(root),
        "up": bool(state.get("up")),
        "cluster": state["cluster"],
        "controller_url": state["controller_url"],
        "controller_pid": runner.pid_of(controller_spec(root)),
        "master_name": state["master_name"],
        "redis_password": state["redis_password"],
        "redis_port": REDIS_PORT,
        "sentinel_port": SENTINEL_PORT,
        "droplets": droplets,
    }


def fault(root: Path, node: str, service: str, action: str) -> str:
    root = root.resolve()
    state = load_state(root)
    names = [d["name"] for d in state.get("droplets", [])]
    if node not in names:
        raise SandboxError(f"no droplet named {node!r} (droplets: {', '.join(names)})")
    if service not in SERVICES:
        raise SandboxError(f"SERVICE must be one of {', '.join(SERVICES)}, not {service!r}")
    if action not in ACTIONS:
        raise SandboxError(f"ACTION must be one of {', '.join(ACTIONS)}, not {action!r}")
    spec = droplet_specs(root, node, state)[service]
    if action == "start":
        started = runner.start(spec)
        return f"{node} {service} running (pid {started})"
    sig = {"kill": signal.SIGKILL, "freeze": signal.SIGSTOP, "thaw": signal.SIGCONT}[action]
    pid = runner.pid_of(spec)
    if not runner.send(spec, sig):
        raise SandboxError(f"{node} {service} is not running")
    if action == "kill" and pid is not None:
        runner.wait_gone([pid], 5.0)
    return f"{node} {service} {action} done (pid {pid})"
