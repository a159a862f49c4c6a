"""A local Redis Sentinel cluster on the production path: droplets created through a local DigitalOcean.

Layer: application (sandbox). `up` starts, on one claimed loopback address, the local DigitalOcean API
(`sandbox.doapi`, HTTPS with its own CA) and the controller (configured with that API, pydo and all);
then it runs `redwarden cluster create` against the controller, which creates each droplet through the
API with the same user_data a real droplet gets; each droplet boots on its own `127.0.0.N`, runs
`redwarden-agent bootstrap` (Redis on :6379 and Sentinel on :26379 bound to and announcing that address,
`requirepass`/`masterauth` everywhere, `sentinel auth-pass`, master name `mymaster`, quorum a majority)
and starts its agent. Layout of a sandbox dir:

    sandbox.json                 what `status` reads
    secrets/                     redis.pass, do.token, admin.token, read.token, alert URLs (mode 0600);
                                 with --acl: acl-users.json (the controller's), redis.pass is the app user's,
                                 discovery.pass
    controller/                  controller.toml, state.db, controller.log, tls/ (its CA and certificate)
    doapi/                       the local DigitalOcean's state, TLS files and log
    droplets/<name>-<id>/root/   each droplet's filesystem (etc/redis, var/lib/redis, var/log/redwarden ...)

With `--droplets systemd` (`sandbox.sysdroplets`) the sandbox runs in its own network namespace with a hub
bridge (gateway 10.77.0.1, where the local DigitalOcean's API listens), the controller is the controller
package's unit in a container of its own on the bridge (`sandbox.ctlcontainer`, 10.77.0.2; controller/ then
holds only controller.toml and tls/) with the production droplet settings
(`services = "systemd"`, the production user_data template, `agent_deb_url` and its SHA-256, `metadata_url`
on the gateway), and each droplet is a systemd-nspawn container the local DigitalOcean boots:

    containers/<name>-<id>/      the container: upper/ (its own disk), merged/ (its root while it runs),
                                 console.log, container.json
    files/redwarden-agent.deb    what the droplets download (served on the gateway)
    controlplane/redwarden-controller/   the controller's container (its journal.log once powered off)
    droplets/<name>-<id>/        a destroyed container's console and cloud-init logs (moved to destroyed/)
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from agent import processes as runner
from agent.layout import NodeLayout
from agent.processes import ServiceSpec
from agent.services import ProcessServices
from controller.adapters.tls import ensure_tls
from protocol.acl import ClusterUsers
from sandbox import ctlcontainer, disks, netns, nspawn, sysdroplets
from sandbox.addresses import claim_addresses, release_addresses
from sandbox.doapi.containers import hub_of

CONTROLLER_PORT = 8787
DOAPI_PORT = 8443
REDIS_PORT = 6379
SENTINEL_PORT = 26379
SERVICES = ("redis", "sentinel", "agent")
ACTIONS = ("kill", "freeze", "thaw", "start")
DROPLET_MODES = ("process", "systemd")


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
    sentinel_reset_interval_s: float = 5.0  # production wants >= 30 s; the sandbox's timings are short
    heal: bool = True
    dry_run: bool = False
    fast_failover: bool = True
    daily_budget: int = 30
    reserved_ip: bool = False  # create a reserved IP that the controller keeps on the master's droplet
    acl: bool = False  # per-role ACL users (protocol.acl) instead of one requirepass
    # alert destinations, handed to the sandbox's controller (written as secret files, never logged)
    slack_webhook: str | None = None
    pagerduty_url: str | None = None
    pagerduty_routing_key: str | None = None
    webhook_url: str | None = None
    # "process": each droplet is processes on a loopback address (fast); "systemd": a systemd-nspawn container
    # that runs the production user_data with cloud-init and the packages' units (issue 14)
    droplets: str = "process"
    agent_deb: str | None = None  # systemd: the agent package (default: the newest in dist/)

    def __post_init__(self) -> None:
        if self.droplets not in DROPLET_MODES:
            raise SandboxError(f"--droplets must be one of {', '.join(DROPLET_MODES)}")
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


def state_exists(root: Path) -> bool:
    return _state_path(root).exists()


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


# -- the control plane: local DigitalOcean and controller -------------------------------------------

def doapi_spec(root: Path, address: str, extra: tuple[str, ...] = ()) -> ServiceSpec:
    """`address`: where it listens (a loopback address; in systemd mode the hub's gateway, for the controller's
    container)."""
    d = root / "doapi"
    token = root / "secrets" / "do.token"
    return ServiceSpec("doapi", (sys.executable, "-m", "sandbox.doapi", "--dir", str(root), "--host", address,
                                 "--port", str(DOAPI_PORT), "--token-file", str(token), "--log-format", "json",
                                 *extra),
                       d / "doapi.pid", d / "doapi.log", str(token), cwd=root)


def controller_spec(root: Path) -> ServiceSpec:
    c = root / "controller"
    conf = c / "controller.toml"
    group = netns.CONTROLLER_GID if netns.in_sandbox_netns() else None  # so a network cut can tell it apart
    return ServiceSpec("controller", (sys.executable, "-m", "console.cli", "controller", "run", "--config",
                                      str(conf)), c / "controller.pid", c / "controller.log", str(conf), cwd=c,
                       group=group)


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


@dataclass(frozen=True, slots=True)
class DropletBoot:
    """How the controller's droplets boot: the sandbox's user_data (processes) or the production one."""

    services: str = "sandbox"
    metadata_url: str = ""
    agent_deb_url: str | None = None
    agent_deb_sha256: str | None = None

    def toml_lines(self) -> list[str]:
        lines = [f'services = "{self.services}"', f'metadata_url = "{self.metadata_url}"']
        if self.agent_deb_url and self.agent_deb_sha256:
            lines += [f'agent_deb_url = "{self.agent_deb_url}"', f'agent_deb_sha256 = "{self.agent_deb_sha256}"']
        return lines


def controller_toml(root: Path, address: str, do_api_url: str, opts: SandboxOptions,
                    reserved_ip: str | None = None, boot: DropletBoot = DropletBoot()) -> str:
    s = root / "secrets"
    return "\n".join([
        f'listen_host = "{address}"',
        f"listen_port = {CONTROLLER_PORT}",
        f'state_path = "{root / "controller" / "state.db"}"',
        f'do_api_url = "{do_api_url}"',
        f'do_token_file = "{s / "do.token"}"',
        f'do_ca_file = "{root / "doapi" / "tls" / "ca.pem"}"',
        "cloud_poll_s = 1.0",
        "do_timeout_s = 5",  # the local API answers in milliseconds; the cloud-timeouts fault waits longer
        f'admin_token_file = "{s / "admin.token"}"',
        f'read_token_file = "{s / "read.token"}"',
        f'tls_cert_file = "{root / "controller" / "tls" / "server.pem"}"',
        f'tls_key_file = "{root / "controller" / "tls" / "server.key"}"',
        f'tls_ca_file = "{root / "controller" / "tls" / "ca.pem"}"',
        "",
        f"[clusters.{opts.cluster}]",
        f'acl_users_file = "{s / "acl-users.json"}"' if opts.acl else f'redis_password_file = "{s / "redis.pass"}"',
        f'master_name = "{opts.master_name}"',
        f"expected_nodes = {opts.nodes}",
        f"report_interval_s = {opts.report_interval_s}",
        f"quorum = {opts.quorum}",
        f"down_after_ms = {opts.down_after_ms}",
        f"failover_timeout_ms = {opts.failover_timeout_ms}",
        'region = "nyc3"',
        'size = "s-1vcpu-1gb"',
        'image = "debian-12-x64"',
        *boot.toml_lines(),
        f'reserved_ip = "{reserved_ip}"' if reserved_ip else "",
        "",
        "[heal]",
        f"enabled = {'true' if opts.heal else 'false'}",
        f"dry_run = {'true' if opts.dry_run else 'false'}",
        f"fast_failover = {'true' if opts.fast_failover else 'false'}",
        f"sentinel_reset_interval_s = {opts.sentinel_reset_interval_s}",
        f"daily_budget = {opts.daily_budget}",
        f"restart_wait_s = {max(2.0, 4 * opts.report_interval_s)}",
        f"power_cycle_wait_s = {max(10.0, opts.down_after_ms / 1000 * 3)}",
        "reprovision_boot_timeout_s = 180",
        "",
        *notify_toml(root, opts),
    ]) + "\n"


def _wait_http(url: str, timeout_s: float, what: str, ca: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if ca is None or ca.exists():
                requests.get(url, timeout=1, verify=str(ca) if ca else True)
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise SandboxError(f"{what} did not answer on {url} within {timeout_s:.0f} s")


def _create_reserved_ip(do_api_url: str, token: str, root: Path) -> str:
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would override `verify`
    resp = session.post(f"{do_api_url}/v2/reserved_ips", json={"region": "nyc3"}, timeout=10,
                        headers={"Authorization": f"Bearer {token}"}, verify=str(root / "doapi" / "tls" / "ca.pem"))
    if resp.status_code not in (200, 201, 202):
        raise SandboxError(f"creating a reserved IP failed: HTTP {resp.status_code} {resp.text[:200]}")
    ip: str = resp.json()["reserved_ip"]["ip"]
    return ip


# -- droplets ------------------------------------------------------------------------------------------

def droplets(root: Path) -> list[dict[str, Any]]:
    """The local DigitalOcean's droplets (from its state file, so it works while the API is down)."""
    try:
        state = json.loads((root / "doapi" / "state.json").read_text())
    except (OSError, ValueError):
        return []
    containers = (root / "sandbox.json").exists() and load_state(root).get("droplets_mode") == "systemd"
    out = []
    for d in sorted(state.get("droplets", {}).values(), key=lambda d: d["id"]):
        droot = (root / "containers" / Path(str(d["dir"])).name / "merged" if containers
                 else root / str(d["dir"]) / "root")
        out.append({"id": d["id"], "name": d["name"], "status": d["status"], "address": d.get("address"),
                    "root": str(droot), "dir": str(d["dir"])})
    return out


def systemd_mode(root: Path) -> bool:
    """Whether the sandbox's droplets are systemd containers (`up --droplets systemd`)."""
    return state_exists(root) and load_state(root).get("droplets_mode") == "systemd"


def droplet_services(d: dict[str, Any]) -> ProcessServices:
    """The droplet's services, started from outside it with its markers (so the local DigitalOcean's
    power_off finds them, and the agent learns its address as it would at boot)."""
    from sandbox.doapi.processes import droplet_env

    droot = Path(d["root"])
    env = droplet_env({}, droot, int(d["id"]), str(d["name"]), str(d["address"] or ""))
    group = netns.droplet_gid(int(d["id"])) if netns.in_sandbox_netns() else None
    return ProcessServices(NodeLayout(address=d["address"] or "", root=str(droot)),
                           droot / "etc" / "redwarden" / "agent.toml", env=env, group=group)


# -- up / down / status / fault ------------------------------------------------------------------------

def up(root: Path, opts: SandboxOptions, timeout_s: float = 180.0,
       progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    from console.client import ControllerClient
    from console.provision import ProvisionError, create_cluster

    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    systemd = opts.droplets == "systemd"
    if systemd and not netns.in_sandbox_netns():
        raise SandboxError("--droplets systemd runs in the sandbox's own network namespace "
                           "(`redwarden sandbox up --droplets systemd` makes it)")
    if _state_path(root).exists():
        old = load_state(root)
        if old.get("up") and any_running(root):
            raise SandboxError(f"a sandbox is already running in {root} (run `redwarden sandbox down` first)")
        if old.get("droplets_mode") == "systemd":
            ctlcontainer.power_off(root)
            sysdroplets.power_off_all(root)
        # a sandbox is throwaway: a new one starts from nothing (old droplet roots hold old secrets)
        disks.unmount_under(root)
        for stale in ("droplets", "destroyed", "doapi", "controller", "secrets", "claims", "containers", "files",
                      "controlplane"):
            shutil.rmtree(root / stale, ignore_errors=True)
        release_addresses(root)
    _save_state(root, {"up": True, "starting": True})  # our claims count as held from here on
    (address,) = claim_addresses(root, 1, (CONTROLLER_PORT, DOAPI_PORT))
    password = secrets.token_hex(16)
    do_token = secrets.token_hex(32)
    if opts.acl:  # the controller keeps the admin and droplet secrets; the app's password is the operator's
        users, password, discovery = ClusterUsers.generate(lambda: secrets.token_hex(16))
        _write_secret(root / "secrets" / "acl-users.json", users.to_json())
        _write_secret(root / "secrets" / "discovery.pass", discovery)
    _write_secret(root / "secrets" / "redis.pass", password)  # the app user's password in ACL mode
    _write_secret(root / "secrets" / "do.token", do_token)
    admin_token = secrets.token_urlsafe(32)
    _write_secret(root / "secrets" / "admin.token", admin_token)
    _write_secret(root / "secrets" / "read.token", secrets.token_urlsafe(32))
    listen, boot, doapi_host = address, DropletBoot(), address
    doapi_extra: tuple[str, ...] = ()
    if systemd:  # the controller in a container of its own on the hub's bridge; the API on the gateway
        try:
            containers = sysdroplets.settings(root, os.environ[netns.ENV])
            deb = sysdroplets.find_agent_deb(opts.agent_deb)
            controller_deb = ctlcontainer.find_deb()
            sha = sysdroplets.prepare(root, containers, deb, progress)
        except (sysdroplets.SysDropletError, ctlcontainer.ControllerContainerError) as e:
            _save_state(root, {"up": False})
            release_addresses(root)
            raise SandboxError(str(e)) from None
        progress(f"hub bridge {containers.bridge} on {containers.gateway}; agent package {deb.name} "
                 f"on {containers.file_url(sysdroplets.DEB_NAME)}")
        listen, doapi_host = ctlcontainer.address(hub_of(containers)), containers.gateway
        boot = DropletBoot("systemd", containers.metadata_url, containers.file_url(sysdroplets.DEB_NAME), sha)
        doapi_extra = ("--droplets", "systemd", "--hub-netns", containers.netns, "--bridge", containers.bridge,
                       "--gateway", containers.gateway, "--prefix", str(containers.prefix),
                       "--meta-port", str(containers.meta_port), "--nspawn-cache", str(containers.cache),
                       "--files-dir", str(containers.files_dir))
    controller_tls = ensure_tls(root / "controller" / "tls", [listen], ca_label="redwarden sandbox controller CA")
    controller_url = f"https://{listen}:{CONTROLLER_PORT}"
    do_api_url = f"https://{doapi_host}:{DOAPI_PORT}"
    state: dict[str, Any] = {
        "up": True,
        "droplets_mode": opts.droplets,
        "controller_address": listen,
        "cluster": opts.cluster,
        "master_name": opts.master_name,
        "controller_url": controller_url,
        "control_address": address,
        "doapi_address": doapi_host,
        "controller_container": ctlcontainer.NAME if systemd else None,
        "netns": os.environ.get(netns.ENV) if netns.in_sandbox_netns() else None,
        "do_api_url": do_api_url,
        "do_ca_cert": str(root / "doapi" / "tls" / "ca.pem"),
        "controller_ca_cert": str(controller_tls.ca_path),
        "options": {"nodes": opts.nodes, "down_after_ms": opts.down_after_ms,
                    "failover_timeout_ms": opts.failover_timeout_ms, "report_interval_s": opts.report_interval_s},
    }
    _save_state(root, state)
    try:
        runner.start(doapi_spec(root, doapi_host, doapi_extra))
        _wait_http(f"{do_api_url}/v2/regions", 30, "the local DigitalOcean API", ca=root / "doapi" / "tls" / "ca.pem")
        progress(f"local DigitalOcean API on {do_api_url}")
        reserved_ip = _create_reserved_ip(do_api_url, do_token, root) if opts.reserved_ip else None
        if reserved_ip:
            state["reserved_ip"] = reserved_ip
            _save_state(root, state)
            progress(f"reserved IP {reserved_ip}")
        c = root / "controller"
        c.mkdir(parents=True, exist_ok=True)
        (c / "controller.toml").write_text(controller_toml(root, listen, do_api_url, opts, reserved_ip, boot))
        if systemd:  # the controller package's unit in its own container
            started = time.monotonic()
            try:
                ctlcontainer.start(root, nspawn.ensure_root(containers.cache, fetch=False),
                                   nspawn.nspawn_binary(containers.cache, fetch=False),
                                   hub_of(containers), controller_deb, (c / "controller.toml").read_text(), progress)
            except (nspawn.NspawnError, ctlcontainer.ControllerContainerError) as e:
                raise SandboxError(f"the controller's container: {e}") from None
            where = f"journalctl -u {ctlcontainer.UNIT} in the container {ctlcontainer.NAME}"
        else:
            runner.start(controller_spec(root))
            where = f"log: {c / 'controller.log'}"
        _wait_http(f"{controller_url}/healthz", 60, f"the controller ({where})", ca=controller_tls.ca_path)
        progress(f"controller on {controller_url}" + (f" (healthy {time.monotonic() - started:.1f} s after its "
                                                        "container was created)" if systemd else ""))
        client = ControllerClient(controller_url, token=admin_token, ca_cert=str(controller_tls.ca_path))
        create_cluster(client, opts.cluster, opts.nodes, timeout_s=timeout_s, progress=progress)
    except ProvisionError as e:
        down(root)
        raise SandboxError(f"{e} (logs: {root}/controller/controller.log, {root}/droplets/*/)") from None
    except BaseException:
        down(root)
        raise
    return state


def add_acl_users(root: Path, timeout_s: float = 30.0) -> None:
    """Give a sandbox built without --acl its ACL users, as an operator does before `redwarden cluster secure`:
    the users file (secrets/acl-users.json, as `redwarden controller acl-users` makes it), the app and
    discovery passwords (secrets/app.pass, discovery.pass), `acl_users_file` in the cluster's section of
    controller.toml next to its redis_password_file, and the controller restarted to read them."""
    root = root.resolve()
    if (root / "secrets" / "acl-users.json").exists():
        raise SandboxError(f"the sandbox in {root} has ACL users already")
    state = load_state(root)
    users, app, discovery = ClusterUsers.generate(lambda: secrets.token_hex(16))
    _write_secret(root / "secrets" / "acl-users.json", users.to_json())
    _write_secret(root / "secrets" / "app.pass", app)
    _write_secret(root / "secrets" / "discovery.pass", discovery)
    conf = root / "controller" / "controller.toml"
    line = f'redis_password_file = "{root / "secrets" / "redis.pass"}"'
    conf.write_text(conf.read_text().replace(line, f'{line}\nacl_users_file = "{root / "secrets" / "acl-users.json"}"'))
    spec = controller_spec(root)
    runner.stop_all([spec])
    runner.start(spec)
    _wait_http(f"{state['controller_url']}/healthz", timeout_s, "the controller", ca=Path(state["controller_ca_cert"]))


def any_running(root: Path) -> bool:
    state = load_state(root)
    specs = [controller_spec(root)]
    if state.get("control_address"):
        specs.append(doapi_spec(root, state["control_address"]))
    if any(runner.pid_of(s) is not None for s in specs):
        return True
    if state.get("droplets_mode") == "systemd":
        return ctlcontainer.running(root) or sysdroplets.any_running(root)
    return any(droplet_services(d).running(s) for d in droplets(root) if d["address"] for s in SERVICES)


def down(root: Path) -> None:
    from sandbox.doapi.processes import kill_droplet_processes

    root = root.resolve()
    state = load_state(root)
    specs = [controller_spec(root)]
    if state.get("control_address"):
        specs.append(doapi_spec(root, state["control_address"]))
    if state.get("droplets_mode") == "systemd":  # first the controller, so nothing heals what we stop
        try:
            ctlcontainer.power_off(root)
        except ctlcontainer.ControllerContainerError as e:
            raise SandboxError(f"powering off the controller's container: {e}") from None
    runner.stop_all(specs)  # first the controller, so nothing heals what we stop
    if state.get("droplets_mode") == "systemd":
        try:
            sysdroplets.power_off_all(root)  # their processes, overlays, namespaces and cgroups
        except sysdroplets.SysDropletError as e:
            raise SandboxError(f"powering off the containers: {e}") from None
    for d in droplets(root):  # by pidfile, then whatever else carries a droplet's marker
        if d["address"]:
            runner.stop_all(list(droplet_services(d).specs.values()), timeout_s=5.0)
    kill_droplet_processes(root)
    disks.unmount_under(root)  # the droplets' data dirs of a sandbox in its own namespace
    release_addresses(root)
    state["up"] = False
    _save_state(root, state)
    netns.delete(root)


def status(root: Path) -> dict[str, Any]:
    root = root.resolve()
    state = load_state(root)
    rows = []
    containers = state.get("droplets_mode") == "systemd"
    for d in droplets(root):
        services = droplet_services(d) if d["address"] and not containers else None
        pids: dict[str, int | None] = {s: None for s in SERVICES}
        if containers and d["address"]:
            pids = sysdroplets.unit_pids(root, d)
        elif services is not None:
            pids = {s: runner.pid_of(services.specs[s]) for s in SERVICES}
        rows.append({"id": d["id"], "name": d["name"], "status": d["status"], "address": d["address"],
                     "root": d["root"], "dir": d["dir"], "pids": pids})
    token_file = root / "secrets" / "do.token"
    admin_file, read_file = root / "secrets" / "admin.token", root / "secrets" / "read.token"
    return {
        "dir": str(root),
        "up": bool(state.get("up")),
        "droplets_mode": state.get("droplets_mode") or "process",
        "cluster": state.get("cluster"),
        "controller_url": state.get("controller_url"),
        # systemd mode: the main process of redwarden-controller.service in its container (as this machine sees it)
        "controller_pid": ctlcontainer.main_pid(root) if containers else runner.pid_of(controller_spec(root)),
        "controller_container": state.get("controller_container"),
        "controller_ca_cert": state.get("controller_ca_cert"),
        "admin_token": admin_file.read_text().strip() if admin_file.exists() else None,
        "read_token": read_file.read_text().strip() if read_file.exists() else None,
        "master_name": state.get("master_name"),
        # ACL mode: redis_password is the `app` user's (AUTH app <password>); the discovery user's for Sentinel
        # (a sandbox given users after `up`, for `cluster secure`: app.pass; redis.pass stays the old one)
        "redis_password": (root / "secrets" / ("app.pass" if (root / "secrets" / "app.pass").exists()
                                                else "redis.pass")).read_text().strip(),
        "redis_username": "app" if (root / "secrets" / "acl-users.json").exists() else None,
        "discovery_password": ((root / "secrets" / "discovery.pass").read_text().strip()
                               if (root / "secrets" / "acl-users.json").exists() else None),
        "redis_port": REDIS_PORT,
        "sentinel_port": SENTINEL_PORT,
        "do_api_url": state.get("do_api_url"),
        "do_token": token_file.read_text().strip() if token_file.exists() else None,
        "do_ca_cert": state.get("do_ca_cert"),
        "reserved_ip": state.get("reserved_ip"),
        "netns": state.get("netns"),
        "droplets": rows,
    }


def fault(root: Path, node: str, service: str, action: str) -> str:
    root = root.resolve()
    found = {d["name"]: d for d in droplets(root) if d["address"]}
    if node not in found:
        raise SandboxError(f"no droplet named {node!r} (droplets: {', '.join(sorted(found))})")
    if service not in SERVICES:
        raise SandboxError(f"SERVICE must be one of {', '.join(SERVICES)}, not {service!r}")
    if action not in ACTIONS:
        raise SandboxError(f"ACTION must be one of {', '.join(ACTIONS)}, not {action!r}")
    if systemd_mode(root):
        try:
            return sysdroplets.fault(root, found[node], service, action)
        except sysdroplets.SysDropletError as e:
            raise SandboxError(str(e)) from None
    spec = droplet_services(found[node]).specs[service]
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
