"""Droplets that are systemd-nspawn containers (`sandbox up --droplets systemd`): boot, stop, destroy.

Layer: sandbox. `ContainerPower` is `Power` for the container mode: a droplet's first boot takes the next
free address on the hub's bridge (`ContainerSettings`), lays out its container (`sandbox.nspawn`: an overlay
above the cached Debian root, named `<name>-<id>` under `<sandbox>/containers/`) with cloud-init's NoCloud
seed at `seed_url(id)` (served by `sandbox.doapi.metadata`), and boots it; the droplet is active once systemd
inside reports `running` or `degraded` (cloud-init's final stage, and so the user_data, is part of that
boot), or after the boot timeout. Power actions shut the container down (systemd powers off; a hard
power-off waits only briefly before SIGKILL) and boot it again with its disk; destroy removes it, keeping
its console and cloud-init logs in `<sandbox>/destroyed/<name>-<id>/`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
import threading
import time
from pathlib import Path

import structlog

from sandbox import nspawn
from sandbox.doapi.power import Outcome, Power
from sandbox.doapi.state import Cloud, ContainerSettings, Runtime
from sandbox.doapi.wire import Json

log = structlog.get_logger("redwarden.doapi")

HARD_STOP_S = 3.0  # power_off / power_cycle: systemd gets this long before nspawn is killed
BOOTED = ("running", "degraded")
LOGS = ("var/log/cloud-init-output.log", "var/log/cloud-init.log")


def containers_dir(sandbox_dir: Path) -> Path:
    return sandbox_dir.resolve() / "containers"


def container_name(d: Json) -> str:
    """A droplet's container: `<name>-<id>` (a replacement may reuse a destroyed droplet's name)."""
    return Path(str(d["dir"])).name


def hub_of(settings: ContainerSettings) -> nspawn.Hub:
    return nspawn.Hub(netns=settings.netns, bridge=settings.bridge, gateway=settings.gateway,
                      prefix=settings.prefix)


def free_address(settings: ContainerSettings, taken: set[str]) -> str:
    net = ipaddress.ip_interface(f"{settings.gateway}/{settings.prefix}").network
    for host in list(net.hosts())[settings.first_host - 1:]:
        if str(host) != settings.gateway and str(host) not in taken:
            return str(host)
    raise RuntimeError(f"no free address left on {net}")


class ContainerPower(Power):
    """Boots, stops and destroys droplets that are containers."""

    def __init__(self, cloud: Cloud, settings: ContainerSettings) -> None:
        super().__init__(cloud)
        self.settings = settings
        self.hub = hub_of(settings)
        self.base = containers_dir(cloud.sandbox_dir)
        # in the sandbox's namespace, which has no network: `sandbox up` put both in the cache beforehand
        self.root = nspawn.ensure_root(settings.cache, fetch=False)
        self.binary = nspawn.nspawn_binary(settings.cache, fetch=False)
        self._boot_lock = threading.Lock()  # one container's network and overlay set up at a time

    def _new_address(self) -> str:  # called with the lock held
        taken = {str(x["address"]) for x in self.cloud.state["droplets"].values() if x.get("address")}
        return free_address(self.settings, taken)

    def boot(self, droplet_id: int, rt: Runtime) -> Outcome:
        begun = self._begin_boot(droplet_id, rt)
        if isinstance(begun, str):
            return begun
        d, first = begun
        name, address, cname = d["name"], d["address"], container_name(d)
        self.cloud.droplet_dir(d).mkdir(parents=True, exist_ok=True)
        try:
            with self._boot_lock:
                if self.stopped(rt):
                    return self.interrupted(rt)
                if not (self.base / cname / nspawn.STATE).exists():
                    nspawn.create(self.base, self.root, nspawn.ContainerSpec(
                        name=cname, address=address, hub=self.hub, seed_url=self.settings.seed_url(droplet_id)))
                if nspawn.nspawn_pid(self.base, cname) is None:
                    nspawn.power_on(self.base, cname, self.binary)
        except nspawn.NspawnError as e:
            log.warning("droplet.boot_failed", droplet_id=droplet_id, reason=str(e))
            return "errored"
        deadline = time.monotonic() + self.options.boot_timeout_s
        state = "offline"
        while not self.stopped(rt) and time.monotonic() < deadline:
            state = nspawn.system_state(self.base, cname)
            if state in BOOTED:
                break
            if nspawn.nspawn_pid(self.base, cname) is None:
                log.warning("droplet.boot_failed", droplet_id=droplet_id, reason="the container exited")
                return "errored"
            self.sleep(rt, 0.5)
        if self.stopped(rt):
            return self.interrupted(rt)
        if not self._set_status(droplet_id, "active"):
            return "errored"
        log.info("droplet.booted", droplet_id=droplet_id, name=name, address=address, first_boot=first,
                 container=cname, system_state=state)
        return "completed"

    def stop(self, droplet_id: int, rt: Runtime, graceful: bool) -> bool:
        with self.cloud.lock:
            d = self.cloud.state["droplets"].get(str(droplet_id))
            if d is None:
                return False
            cname = container_name(d)
        if (self.base / cname / nspawn.STATE).exists():
            try:
                nspawn.power_off(self.base, cname,
                                 timeout_s=self.options.shutdown_timeout_s if graceful else HARD_STOP_S)
            except nspawn.NspawnError as e:
                log.warning("droplet.stop_failed", droplet_id=droplet_id, reason=str(e))
        if not self._set_status(droplet_id, "off", only_from="active"):
            return False
        log.info("droplet.stopped", droplet_id=droplet_id, container=cname, graceful=graceful)
        return True

    def _discard(self, d: Json, droplet_id: int, rt: Runtime) -> None:
        if rt.thread is not None and rt.thread is not threading.current_thread():
            rt.thread.join(timeout=30.0)  # a boot in progress sees the cancel flag within a poll
        cname = container_name(d)
        ddir = self.cloud.droplet_dir(d)
        ddir.mkdir(parents=True, exist_ok=True)
        cdir = self.base / cname
        with contextlib.suppress(OSError):
            shutil.copy2(cdir / "console.log", ddir / "console.log")
        for rel in LOGS:  # what cloud-init wrote, from the container's own disk
            with contextlib.suppress(OSError):
                shutil.copy2(cdir / "upper" / rel, ddir / Path(rel).name)
        try:
            nspawn.destroy(self.base, cname)
        except nspawn.NspawnError as e:
            log.warning("droplet.destroy_failed", droplet_id=droplet_id, reason=str(e))
