"""A droplet's processes coming and going: boot, stop, destroy.

Layer: sandbox. A droplet is a directory and a loopback address. Its first boot claims the next free
`127.0.0.N` (`sandbox.addresses`) and runs its `user_data` (`sandbox.doapi.cloud_config`): `write_files`
rooted in `<sandbox>/droplets/<name>-<id>/root/`, then `runcmd`, each command in its own session with the
droplet's environment markers (`sandbox.doapi.processes`); a reboot runs the executables in
`<root>/etc/redwarden/boot.d/` instead, in name order. What each step says goes to `cloud-init-output.log`.
Stopping kills exactly the processes the droplet owns; destroying also frees its address and moves its
directory to `<sandbox>/destroyed/`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Literal

import structlog

from sandbox import disks, netns
from sandbox.addresses import claim_addresses, release_addresses
from sandbox.doapi.cloud_config import parse_user_data, rooted
from sandbox.doapi.processes import droplet_env, kill_processes, owned_processes
from sandbox.doapi.state import Cloud, Runtime
from sandbox.doapi.wire import Json, now_iso

log = structlog.get_logger("redwarden.doapi")

Outcome = Literal["completed", "errored", "interrupted"]

DROPLET_PORTS = (6379, 26379)  # a droplet's address is only taken where Redis and Sentinel can bind
BOOT_D = "/etc/redwarden/boot.d"


class Power:
    """Boots, stops and destroys droplets: the processes behind the droplet actions."""

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self.options = cloud.options

    def destroy(self, droplet_id: int) -> None:
        """Forget the droplet (404 if unknown), kill its processes, free its address, keep its dir in destroyed/."""
        d, rt = self._forget(droplet_id)
        rt.cancel.set()
        self._discard(d, droplet_id, rt)
        self._keep_dir(d)
        log.info("droplet.destroyed", droplet_id=droplet_id, name=d["name"], address=d.get("address"))

    def _forget(self, droplet_id: int) -> tuple[Json, Runtime]:
        """Take the droplet out of the state (404 if unknown), with its reserved IPs and firewalls."""
        with self.cloud.lock:
            d = self.cloud.droplet(droplet_id)
            del self.cloud.state["droplets"][str(droplet_id)]
            for r in self.cloud.state["reserved_ips"].values():
                if r.get("droplet_id") == droplet_id:
                    r["droplet_id"] = None
            for fw in self.cloud.state["firewalls"].values():
                fw["droplet_ids"] = [i for i in fw["droplet_ids"] if i != droplet_id]
            rt = self.cloud.runtimes.pop(droplet_id, None) or Runtime()
            self.cloud.save()
        return d, rt

    def _discard(self, d: Json, droplet_id: int, rt: Runtime) -> None:
        """What a destroyed droplet ran and held: its processes, its address, its data dir's mount."""
        root = self.cloud.droplet_dir(d) / "root"
        kill_processes(lambda: owned_processes(root, droplet_id), None)
        if rt.thread is not None and rt.thread is not threading.current_thread():
            rt.thread.join(timeout=10.0)
        kill_processes(lambda: owned_processes(root, droplet_id), None)  # anything a boot step started meanwhile
        self._reap(rt)
        if d.get("address"):
            release_addresses(self.cloud.sandbox_dir, [d["address"]], self.options.claims_dir)
        disks.unmount_under(self.cloud.droplet_dir(d))  # a mounted data dir cannot be moved

    def _keep_dir(self, d: Json) -> None:
        src = self.cloud.droplet_dir(d)
        if src.exists():
            dst = self.cloud.sandbox_dir / "destroyed" / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.exists():
                dst = dst.with_name(f"{src.name}.{int(time.time() * 1000)}")
            shutil.move(str(src), str(dst))

    def stopped(self, rt: Runtime) -> bool:
        return rt.cancel.is_set() or self.cloud.closing.is_set()

    def sleep(self, rt: Runtime, seconds: float) -> bool:
        """Wait `seconds` unless the droplet is destroyed or the API closes first (then True)."""
        deadline = time.monotonic() + seconds
        while not self.stopped(rt):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            rt.cancel.wait(min(left, 0.05))
        return True

    def interrupted(self, rt: Runtime) -> Outcome:
        return "errored" if rt.cancel.is_set() else "interrupted"

    def stop(self, droplet_id: int, rt: Runtime, graceful: bool) -> bool:
        """Kill the droplet's processes (SIGTERM first when graceful); an active droplet is off. False: gone."""
        with self.cloud.lock:
            d = self.cloud.state["droplets"].get(str(droplet_id))
            if d is None:
                return False
            root = self.cloud.droplet_dir(d) / "root"
        timeout = self.options.shutdown_timeout_s if graceful else None
        n = kill_processes(lambda: owned_processes(root, droplet_id), timeout)
        self._reap(rt)
        if not self._set_status(droplet_id, "off", only_from="active"):
            return False
        log.info("droplet.stopped", droplet_id=droplet_id, processes=n, graceful=graceful)
        return True

    @staticmethod
    def _reap(rt: Runtime) -> None:
        rt.children = [p for p in rt.children if p.poll() is None]

    def _set_status(self, droplet_id: int, status: str, only_from: str | None = None) -> bool:
        """Set the droplet's status (if it is `only_from`, when given); False: the droplet is gone."""
        with self.cloud.lock:
            d = self.cloud.state["droplets"].get(str(droplet_id))
            if d is None:
                return False
            if only_from is None or d["status"] == only_from:
                d["status"] = status
                self.cloud.save()
        return True

    def _new_address(self) -> str:
        """An address for a droplet's first boot (RuntimeError: none left)."""
        return claim_addresses(self.cloud.sandbox_dir, 1, DROPLET_PORTS, self.options.claims_dir)[0]

    def _begin_boot(self, droplet_id: int, rt: Runtime) -> tuple[Json, bool] | Outcome:
        """The boot delay fault, an address at the first boot; (a copy of the droplet, whether first boot)."""
        delay = self.cloud.faults.boot_delay_s
        if delay > 0 and self.sleep(rt, delay):
            return self.interrupted(rt)
        with self.cloud.lock:
            d = self.cloud.state["droplets"].get(str(droplet_id))
            if d is None:
                return "errored"
            if d["address"] is None:
                try:
                    d["address"] = self._new_address()
                except RuntimeError as e:
                    log.warning("droplet.boot_failed", droplet_id=droplet_id, reason=str(e))
                    return "errored"
            first = not d["cloud_init_started"]
            d["cloud_init_started"] = True
            self.cloud.save()
            return dict(d), first

    def boot(self, droplet_id: int, rt: Runtime) -> Outcome:
        """Run the droplet's boot steps (cloud-init the first time, boot.d after); then it is active."""
        begun = self._begin_boot(droplet_id, rt)
        if isinstance(begun, str):
            return begun
        d, first = begun
        ddir = self.cloud.droplet_dir(d)
        name, address, user_data = d["name"], d["address"], d["user_data"]
        root = ddir / "root"
        root.mkdir(parents=True, exist_ok=True)
        group = None
        if netns.in_sandbox_netns():  # a sandbox of its own (root): a real small disk, the droplet's group
            group = netns.droplet_gid(droplet_id)
            try:
                disks.mount_data_dir(root / "var/lib/redis")
            except disks.DiskError as e:
                log.warning("droplet.boot_failed", droplet_id=droplet_id, reason=str(e))
                return "errored"
        env = droplet_env(os.environ, root, droplet_id, name, address)
        deadline = time.monotonic() + self.options.boot_timeout_s
        with (ddir / "cloud-init-output.log").open("ab") as out:
            self._say(out, f"boot of droplet {droplet_id} ({name}, {address}): "
                           f"{'first boot, cloud-init' if first else f'reboot, {BOOT_D}/*'}")
            steps = self._first_boot_steps(root, ddir, user_data, out) if first else self._boot_d_steps(root, out)
            for i, argv in enumerate(steps):
                if self.stopped(rt):
                    return self.interrupted(rt)
                if time.monotonic() >= deadline:
                    self._say(out, f"boot timeout ({self.options.boot_timeout_s:g} s): steps {i}-{len(steps) - 1} "
                                   "not run")
                    break
                self._say(out, f"step {i}: {' '.join(argv)}")
                rc = self._run_step(argv, env, root, out, deadline, rt, group)
                self._say(out, f"step {i}: " + ("still running at the boot timeout; left running" if rc is None
                                                else f"exit {rc}"))
            if self.stopped(rt):
                return self.interrupted(rt)
            if not self._set_status(droplet_id, "active"):
                return "errored"
            self._say(out, "droplet active")
        log.info("droplet.booted", droplet_id=droplet_id, name=name, address=address, first_boot=first)
        return "completed"

    @staticmethod
    def _say(out: IO[bytes], line: str) -> None:
        out.write(f"[{now_iso()}] [doapi] {line}\n".encode())
        out.flush()

    def _first_boot_steps(self, root: Path, ddir: Path, user_data: str | None,
                          out: IO[bytes]) -> list[tuple[str, ...]]:
        config = parse_user_data(user_data)
        for problem in config.problems:
            self._say(out, problem)
        for wf in config.write_files:
            try:
                target = rooted(root, wf.path)
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("ab" if wf.append else "wb") as fh:
                    fh.write(wf.content)
                target.chmod(wf.permissions)
                self._say(out, f"write_files: {wf.path} ({len(wf.content)} bytes, mode {wf.permissions:o})")
            except (OSError, ValueError) as e:
                self._say(out, f"write_files: {wf.path} failed: {e}")
        steps = list(config.runcmd)
        if config.script is not None:
            script = root / "var/lib/cloud/instance/scripts/part-001"
            script.parent.mkdir(parents=True, exist_ok=True)
            script.write_text(config.script)
            script.chmod(0o700)
            steps.insert(0, (str(script),))
        return steps

    def _boot_d_steps(self, root: Path, out: IO[bytes]) -> list[tuple[str, ...]]:
        boot_d = rooted(root, BOOT_D)
        if not boot_d.is_dir():
            self._say(out, f"no {BOOT_D}: nothing to start")
            return []
        steps: list[tuple[str, ...]] = []
        for path in sorted(boot_d.iterdir()):
            if path.is_file() and os.access(path, os.X_OK):
                steps.append((str(path),))
            else:
                self._say(out, f"{BOOT_D}/{path.name} is not an executable file: skipped")
        return steps

    def _run_step(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path, out: IO[bytes], deadline: float,
                  rt: Runtime, group: int | None = None) -> int | None:
        try:
            proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    cwd=cwd, env=dict(env), start_new_session=True, close_fds=True, group=group)
        except OSError as e:
            self._say(out, f"cannot run {argv[0]}: {e}")
            return 127
        with self.cloud.lock:
            rt.children.append(proc)
        while True:
            try:
                return proc.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                if self.stopped(rt) or time.monotonic() >= deadline:
                    return None

