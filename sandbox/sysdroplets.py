"""The sandbox's droplets when they are systemd containers (`sandbox up --droplets systemd`): the hub, the
Debian root and the agent's .deb they need, their units' processes, faults on them, powering them off.

Layer: sandbox. The local DigitalOcean boots the containers (`sandbox.doapi.containers`); this module is
what the sandbox's commands (`status`, `fault`, `down`) and the drill do to them from outside. A service's
process is its unit's main process (`systemctl show -p MainPID` inside), as this machine sees it: faults
signal it from here, as the process mode signals its droplets' processes; `start` is `systemctl start`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sandbox import nspawn
from sandbox.doapi.containers import containers_dir, hub_of
from sandbox.doapi.state import ContainerSettings

REPO = Path(__file__).resolve().parents[1]
CACHE_ENV = "REDWARDEN_NSPAWN_CACHE"  # the same as tests/test_nspawn.py's
DEB_ENV = "REDWARDEN_AGENT_DEB"
BRIDGE = "rwbr0"
GATEWAY = "10.77.0.1"  # inside the sandbox's own network namespace: no address of the host's
META_PORT = 80
DEB_NAME = "redwarden-agent.deb"
UNITS = {"redis": "redis-server.service", "sentinel": "redis-sentinel.service", "agent": "redwarden-agent.service"}


class SysDropletError(Exception):
    """A container droplet could not be prepared, asked or signalled; the message says why."""


def default_cache() -> Path:
    return Path(os.environ.get(CACHE_ENV, REPO / "build" / "nspawn-cache"))


def find_agent_deb(explicit: str | None = None) -> Path:
    """The agent package the droplets install: `explicit`, $REDWARDEN_AGENT_DEB, else the newest in dist/."""
    wanted = explicit or os.environ.get(DEB_ENV)
    if wanted:
        path = Path(wanted)
        if not path.is_file():
            raise SysDropletError(f"no agent package at {path}")
        return path
    found = sorted((REPO / "dist").glob("redwarden-agent_*.deb"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SysDropletError(f"no agent package in {REPO / 'dist'}: build it first (packaging/build-debs agent) "
                              f"or name one with --agent-deb or ${DEB_ENV}")
    return found[-1]


def settings(root: Path, netns_name: str, cache: Path | None = None) -> ContainerSettings:
    return ContainerSettings(netns=netns_name, bridge=BRIDGE, gateway=GATEWAY,
                             cache=(cache or default_cache()).resolve(), files_dir=root.resolve() / "files",
                             meta_port=META_PORT)


def prepare(root: Path, s: ContainerSettings, deb: Path, progress: Callable[[str], None]) -> str:
    """The Debian root and nspawn (already in the cache: this runs in the sandbox's namespace, which has no
    network; `sandbox.prefetch` put them there), the hub's bridge, the agent's .deb served under /files/; its
    SHA-256."""
    try:
        nspawn.ensure_root(s.cache, fetch=False)
        nspawn.nspawn_binary(s.cache, fetch=False)
        nspawn.create_hub(hub_of(s))
    except nspawn.NspawnError as e:
        raise SysDropletError(str(e)) from None
    s.files_dir.mkdir(parents=True, exist_ok=True)
    target = s.files_dir / DEB_NAME
    shutil.copyfile(deb, target)
    return hashlib.sha256(target.read_bytes()).hexdigest()


def container_of(d: dict[str, Any]) -> str:
    return Path(str(d["dir"])).name


def running(root: Path, d: dict[str, Any]) -> bool:
    base = containers_dir(root)
    return (base / container_of(d) / nspawn.STATE).exists() and nspawn.nspawn_pid(base, container_of(d)) is not None


def any_running(root: Path) -> bool:
    base = containers_dir(root)
    return any(nspawn.nspawn_pid(base, n) is not None for n in nspawn.names(base))


def power_off_all(root: Path) -> None:
    """Every container of the sandbox shut down (its processes, mount, namespace and cgroups gone)."""
    base = containers_dir(root)
    errors = []
    for name in nspawn.names(base):
        try:
            nspawn.power_off(base, name, timeout_s=20.0)
        except nspawn.NspawnError as e:
            errors.append(str(e))
    if errors:
        raise SysDropletError("; ".join(errors))


def unit_pids(root: Path, d: dict[str, Any]) -> dict[str, int | None]:
    """Each service's main process (as this machine sees it), None where the unit does not run."""
    pids: dict[str, int | None] = {s: None for s in UNITS}
    base, name = containers_dir(root), container_of(d)
    if not running(root, d):
        return pids
    try:
        out = nspawn.run_in(base, name, ["systemctl", "show", "-p", "MainPID", "--value", *UNITS.values()],
                            timeout_s=15).stdout.split()
    except nspawn.NspawnError:
        return pids
    if len(out) != len(UNITS):
        return pids
    for service, value in zip(UNITS, out, strict=True):
        if value.isdigit() and int(value) > 0:
            pids[service] = nspawn.host_pid(base, name, int(value))
    return pids


def fault(root: Path, d: dict[str, Any], service: str, action: str) -> str:
    """kill (SIGKILL), freeze (SIGSTOP), thaw (SIGCONT) the unit's main process, or `systemctl start` it."""
    node, unit = str(d["name"]), UNITS[service]
    if not running(root, d):
        raise SysDropletError(f"{node}'s container is not running")
    if action == "start":
        systemctl(root, d, "start", service)
        return f"{node} {unit} started (pid {unit_pids(root, d)[service]})"
    pid = unit_pids(root, d)[service]
    if pid is None:
        raise SysDropletError(f"{node} {unit} is not running")
    sig = {"kill": signal.SIGKILL, "freeze": signal.SIGSTOP, "thaw": signal.SIGCONT}[action]
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        raise SysDropletError(f"{node} {unit} is not running") from None
    if action == "kill":
        _wait_gone(pid, 5.0)
    return f"{node} {unit} {action} done (pid {pid})"


def systemctl(root: Path, d: dict[str, Any], verb: str, service: str) -> None:
    """`systemctl <verb>` the service's unit in the droplet's container, as root."""
    try:
        done = nspawn.run_in(containers_dir(root), container_of(d), ["systemctl", verb, UNITS[service]], timeout_s=60)
    except nspawn.NspawnError as e:
        raise SysDropletError(str(e)) from None
    if done.returncode != 0:
        raise SysDropletError(f"systemctl {verb} {UNITS[service]} on {d['name']}: {done.stderr.strip()[-300:]}")


def _wait_gone(pid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return
        if state == "Z":
            return
        time.sleep(0.02)


def memory_kib(root: Path, d: dict[str, Any]) -> int | None:
    return nspawn.memory_kib(containers_dir(root), container_of(d)) if running(root, d) else None
