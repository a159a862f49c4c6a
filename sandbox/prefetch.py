"""What a `--droplets systemd` sandbox takes from the network, fetched or built on the host before `sandbox up`
enters the sandbox's network namespace (issue 19).

Layer: sandbox. That namespace has no route and no DNS, so everything from outside must be there first: the
containers' Debian root (debootstrapped from Debian's mirror into the nspawn cache, about 2 minutes the first
time), systemd-nspawn (systemd-container's binary from apt, unpacked into the cache, where this machine has
none), debootstrap itself, and the agent and controller packages (`packaging/build-debs`, which takes their
dependencies from PyPI; only where none is given or in dist/). `ensure_all` gets whichever is missing, with a
progress line for the long steps, and its error names the step that failed. Inside the namespace
`sysdroplets.prepare` and the local DigitalOcean only take what is there (`fetch=False`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sandbox import ctlcontainer, nspawn, sysdroplets

REPO = Path(__file__).resolve().parents[1]
BUILD_LOG = REPO / "build" / "build-debs.log"


class PrefetchError(Exception):
    """A thing the sandbox needs from the network could not be fetched or built; the message names it."""


@dataclass(frozen=True, slots=True)
class Prefetched:
    """What `sandbox up --droplets systemd` found or made on the host."""

    root: Path
    nspawn: str
    agent_deb: Path
    controller_deb: Path


def ensure_debootstrap(progress: Callable[[str], None]) -> None:
    """debootstrap, installed with apt-get if missing (as packaging/boot-test does)."""
    if shutil.which("debootstrap") is not None:
        return
    progress("installing debootstrap (apt-get install debootstrap)")
    try:
        done = subprocess.run(["apt-get", "install", "-y", "-qq", "debootstrap"], capture_output=True, text=True,
                              timeout=600, check=False, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PrefetchError(f"installing debootstrap: {e}") from None
    if done.returncode != 0 or shutil.which("debootstrap") is None:
        raise PrefetchError(f"installing debootstrap (apt-get install debootstrap): "
                            f"{(done.stderr or done.stdout).strip()[-300:]}")


def build_debs(names: Sequence[str], progress: Callable[[str], None], log: Path = BUILD_LOG) -> None:
    """`packaging/build-debs <names>` into dist/, its own progress lines passed on, all its output in `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = ["bash", str(REPO / "packaging" / "build-debs"), *names]
    env = {**os.environ, "REDWARDEN_DIST": str(REPO / "dist")}  # where find_deb and find_agent_deb look
    with log.open("w") as out:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, errors="replace", env=env)
        except OSError as e:
            raise PrefetchError(f"packaging/build-debs {' '.join(names)}: {e}") from None
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            if line.startswith("build-debs: "):
                progress(line.rstrip())
        code = proc.wait()
    if code != 0:
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
        raise PrefetchError(f"packaging/build-debs {' '.join(names)} failed (exit {code}; log {log}): {tail}")


def packages(agent_deb: str | None, progress: Callable[[str], None]) -> tuple[Path, Path]:
    """The agent and controller packages: the ones named (--agent-deb, $REDWARDEN_AGENT_DEB,
    $REDWARDEN_CONTROLLER_DEB), else the newest in dist/, else built into dist/ now."""
    missing = []
    try:
        agent = sysdroplets.find_agent_deb(agent_deb)
    except sysdroplets.SysDropletError as e:
        if agent_deb or os.environ.get(sysdroplets.DEB_ENV):  # a package named but not there: nothing to build
            raise PrefetchError(str(e)) from None
        missing.append("agent")
    try:
        controller = ctlcontainer.find_deb()
    except ctlcontainer.ControllerContainerError as e:
        if os.environ.get(ctlcontainer.DEB_ENV):
            raise PrefetchError(str(e)) from None
        missing.append("controller")
    if missing:
        started = time.monotonic()
        progress(f"no {' and no '.join(missing)} package in {REPO / 'dist'}: packaging/build-debs "
                 f"{' '.join(missing)} (about 40 s; log {BUILD_LOG})")
        build_debs(missing, progress)
        try:
            agent, controller = sysdroplets.find_agent_deb(agent_deb), ctlcontainer.find_deb()
        except (sysdroplets.SysDropletError, ctlcontainer.ControllerContainerError) as e:
            raise PrefetchError(f"after packaging/build-debs: {e}") from None
        progress(f"packages built in {time.monotonic() - started:.0f} s")
    return agent, controller


def ensure_all(cache: Path, agent_deb: str | None, progress: Callable[[str], None]) -> Prefetched:
    """Everything a systemd sandbox needs from the network, in the cache and dist/ (fetched or built if not).
    The packages first: a package named but missing is an error at once, not after the debootstrap."""
    agent, controller = packages(agent_deb, progress)
    started = time.monotonic()
    cached = (cache.resolve() / f"root-{nspawn.root_key()}" / nspawn.COMPLETE).exists()
    try:
        if not cached:
            ensure_debootstrap(progress)
        root = nspawn.ensure_root(cache, progress)
    except nspawn.NspawnError as e:
        raise PrefetchError(f"the containers' Debian root: {e}") from None
    if not cached:
        progress(f"Debian root {root} ready after {time.monotonic() - started:.0f} s")
    try:
        binary = nspawn.nspawn_binary(cache, progress)
    except nspawn.NspawnError as e:
        raise PrefetchError(f"systemd-nspawn: {e}") from None
    return Prefetched(root, binary, agent, controller)
