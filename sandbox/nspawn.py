"""Droplets that are real machines: systemd-nspawn containers booted from a cached Debian 12 root (issue 14).

Layer: sandbox. The foundation of `sandbox up --droplets systemd` (`sandbox.doapi.containers` boots droplets
with it, `sandbox.sysdroplets` acts on them); the default process droplets do not use it.

- The root: `ensure_root` debootstraps a minimal Debian 12 (`--variant=minbase`, `PACKAGES`) into a cache
  dir keyed by a hash of everything that goes into it (suite, packages, image config), once; every later
  run reuses it. Like a DigitalOcean image, it has cloud-init; unlike one, it already holds what the agent
  package depends on (redis-server, redis-sentinel, polkitd), because a container reaches no mirror.
  redis-server and redis-sentinel are disabled in it, as in the snapshot images the README describes.
  It and systemd-nspawn (`nspawn_binary`) come from the network: a caller inside a namespace with no way out
  passes `fetch=False` and gets an error saying so instead of a failed download (`sandbox.prefetch` gets
  both on the host before `sandbox up` enters the sandbox's namespace).
- The network: `create_hub` makes a bridge inside a network namespace of ours (never the host's); every
  container gets a namespace of its own with one veth into that bridge, its address on it and no default
  route (so anything bound for the outside fails at once instead of timing out). Whatever runs in the hub
  namespace on the bridge's gateway address (a NoCloud seed, the agent's .deb, a controller) is reachable
  from every container, and every container's address from the hub namespace.
- A container: `create` lays out an overlay (the cached root read-only below, the droplet's own disk
  above), `power_on` boots it (`systemd-nspawn --boot`, systemd as PID 1, cloud-init's NoCloud datasource
  fed from `seed_url`), `power_off` shuts it down cleanly (SIGTERM to nspawn: systemd powers off) keeping
  its disk, `destroy` powers off and removes it. Each nspawn runs in a cgroup of its own below the
  caller's: on a host whose PID 1 is not systemd, nspawn otherwise makes `payload`/`supervisor` at the
  caller's cgroup and two containers would share them.

Seen on the project's machine (Debian 12, hybrid cgroups, PID 1 not systemd; bench/bench_nspawn.py):
debootstrap of the root 85-110 s, 313 MB; `systemd-nspawn --boot` with `--network-namespace-path`,
`--register=no --keep-unit` (no machined here) boots to `running` (not degraded) in 2.5-3.2 s, cloud-init
included; 17 MiB PSS per container with redis-server running; power off 0.3 s. systemd-container is not
installed: its candidate (252.39) would upgrade this machine's systemd (252.38), so its binary is unpacked.
The agent .deb installs offline (`apt-get install -y ./redwarden-agent.deb`: its dependencies are in the
root); packaging/boot-test shows its hardened unit and the polkit rule working in such a container.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

SUITE = "bookworm"
MIRROR_ENV = "REDWARDEN_BOOT_MIRROR"  # the same as packaging/boot-test's
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# debootstrap's resolver does not follow virtual packages: python3-cffi-backend provides what
# python3-cryptography (cloud-init -> python3-oauthlib) needs, so it is named here.
PACKAGES = ("systemd", "systemd-sysv", "libpam-systemd", "dbus", "polkitd", "redis-server", "redis-sentinel",
            "python3.11", "adduser", "ca-certificates", "cloud-init", "python3-cffi-backend", "curl", "iproute2")
CLOUD_CFG = "etc/cloud/cloud.cfg.d/90-redwarden-sandbox.cfg"
# The image's own cloud-init settings (a DigitalOcean image has its own too): only NoCloud; the network is
# set up from outside, so cloud-init leaves it alone; no locale or SSH host keys (minbase has neither).
IMAGE_CLOUD_CFG = ("datasource_list: [NoCloud]\n"
                   "network: {config: disabled}\n"
                   "locale: C.UTF-8\n"
                   "ssh_genkeytypes: []\n")
DISABLED_UNITS = ("redis-server.service", "redis-sentinel.service")
COMPLETE = ".redwarden-complete"
STATE = "container.json"


class NspawnError(Exception):
    """A root, a hub or a container could not be made or run; the message says which step and why."""


def _run(argv: Sequence[str], what: str, timeout_s: float = 60.0) -> str:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NspawnError(f"{what}: {e}") from None
    if done.returncode != 0:
        raise NspawnError(f"{what}: {(done.stderr or done.stdout).strip()[-400:]}")
    return done.stdout


def preflight() -> None:
    """What containers need here: root, ip, nsenter, mount (debootstrap only to make the root: `ensure_root`)."""
    if os.geteuid() != 0:
        raise NspawnError("systemd droplets need root (debootstrap, network namespaces, mounts)")
    missing = [t for t in ("ip", "nsenter", "mount") if shutil.which(t) is None]
    if missing:
        raise NspawnError(f"systemd droplets need {' and '.join(missing)} "
                          "(apt-get install iproute2 util-linux mount)")


# ---- the root ------------------------------------------------------------------------------------------

def root_key(suite: str = SUITE, packages: Sequence[str] = PACKAGES, cloud_cfg: str = IMAGE_CLOUD_CFG,
             disabled: Sequence[str] = DISABLED_UNITS) -> str:
    """The cache key of a root: a hash of everything that goes into it."""
    blob = json.dumps({"suite": suite, "packages": sorted(packages), "cloud_cfg": cloud_cfg,
                       "disabled": sorted(disabled), "layout": 1}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _configure_image(root: Path) -> None:
    cfg = root / CLOUD_CFG
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(IMAGE_CLOUD_CFG)
    for unit in DISABLED_UNITS:
        with contextlib.suppress(FileNotFoundError):
            (root / "etc/systemd/system/multi-user.target.wants" / unit).unlink()
    # each container gets its own /etc/machine-id when it is created (an empty one would be a "first
    # boot", where systemd runs preset-all and enables the disabled units again); D-Bus reads that one
    with contextlib.suppress(FileNotFoundError):
        (root / "var/lib/dbus/machine-id").unlink()
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()


# debootstrap's own stages (`I: Retrieving adduser 3.134`, then `I: Validating adduser 3.134`, ...)
STAGES = {"Retrieving": "downloading packages", "Validating": "downloading packages",
          "Extracting": "extracting packages", "Installing": "installing the core packages",
          "Unpacking": "unpacking packages", "Configuring": "configuring packages",
          "Base": "base system installed"}
PROGRESS_EVERY_S = 15.0  # within one long stage (downloading ~200 packages), a line this often


@dataclass(slots=True)
class DebootstrapProgress:
    """debootstrap's output, line by line, as a few progress lines: one as a stage begins, one every
    PROGRESS_EVERY_S within it with how many packages it has done (pure: the clock is passed in)."""

    started: float
    stage: str = ""
    done: int = 0
    said: float = 0.0

    def feed(self, line: str, now: float) -> str | None:
        words = line.split()
        if len(words) < 2 or words[0] != "I:" or words[1] not in STAGES:
            return None
        label, begun = STAGES[words[1]], False
        if label != self.stage:
            self.stage, self.done, self.said, begun = label, 0, now, True
        if words[1] != "Validating":  # each package is retrieved, then validated: counted once
            self.done += 1
        if begun:
            return f"debootstrap: {label} ({now - self.started:.0f} s)"
        if now - self.said < PROGRESS_EVERY_S:
            return None
        self.said = now
        return f"debootstrap: {label}, {self.done} so far ({now - self.started:.0f} s)"


def _debootstrap(tmp: Path, mirror: str, log: Path, progress: Callable[[str], None],
                 timeout_s: float = 1800.0) -> None:
    """debootstrap into `tmp`, its output into `log`, a progress line at each of its stages (and every
    PROGRESS_EVERY_S within one): it takes about 2 minutes and prints a line per package."""
    argv = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(tmp), mirror]
    reporter = DebootstrapProgress(time.monotonic())
    with log.open("w") as out:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, errors="replace")
        except OSError as e:
            raise NspawnError(f"debootstrap: {e}") from None
        watchdog = threading.Timer(timeout_s, proc.kill)  # a stalled mirror must not hang `up` for ever
        watchdog.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                out.write(line)
                if (message := reporter.feed(line, time.monotonic())) is not None:
                    progress(message)
            code = proc.wait()
        finally:
            watchdog.cancel()
    if code != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        why = f"killed after {timeout_s:.0f} s" if code == -signal.SIGKILL else f"exit {code}"
        raise NspawnError(f"debootstrap of Debian {SUITE} from {mirror} failed ({why}; log {log}): "
                          + " | ".join(tail))


def ensure_root(cache: Path, progress: Callable[[str], None] = lambda _m: None,
                mirror: str | None = None, fetch: bool = True) -> Path:
    """The cached root for the current `root_key()`, debootstrapped first if it is not there yet.
    `fetch=False` (a caller in a network namespace with no way out): a root not there is an error."""
    key = root_key()
    root = cache.resolve() / f"root-{key}"
    if (root / COMPLETE).exists():
        return root
    if not fetch:
        raise NspawnError(f"no Debian root {root.name} in {cache.resolve()}, and it cannot be debootstrapped from "
                          "inside a network namespace with no route out (`redwarden sandbox up --droplets "
                          "systemd` makes it on the host first)")
    preflight()
    if shutil.which("debootstrap") is None:
        raise NspawnError("making the containers' root needs debootstrap (apt-get install debootstrap)")
    with _locked(cache.resolve() / ".lock"):
        if (root / COMPLETE).exists():  # another process made it while this one waited
            return root
        tmp = root.with_name(root.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        url = mirror or os.environ.get(MIRROR_ENV, DEFAULT_MIRROR)
        progress(f"debootstrap {SUITE} from {url} into {root} (about 2 minutes, once; log "
                 f"{cache.resolve() / f'debootstrap-{key}.log'})")
        _debootstrap(tmp, url, cache.resolve() / f"debootstrap-{key}.log", progress)
        _configure_image(tmp)
        (tmp / COMPLETE).write_text(key + "\n")
        tmp.rename(root)
    return root


def _apt_download(package: str, into: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["apt-get", "download", "-qq", package], cwd=into, capture_output=True, text=True,
                              timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NspawnError(f"apt-get download {package}: {e}") from None


def nspawn_binary(cache: Path, progress: Callable[[str], None] = lambda _m: None, fetch: bool = True) -> str:
    """systemd-nspawn: the installed one, else Debian's systemd-container package's binary unpacked into
    the cache (its version may differ from this machine's systemd, which installing it would upgrade).
    `fetch=False` (a caller with no network): a binary not there is an error."""
    found = shutil.which("systemd-nspawn")
    if found:
        return found
    unpacked = cache.resolve() / "systemd-container" / "usr/bin/systemd-nspawn"
    if unpacked.exists():
        return str(unpacked)
    if not fetch:
        raise NspawnError(f"no systemd-nspawn installed or unpacked in {unpacked.parents[2]}, and systemd-container "
                          "cannot be downloaded from inside a network namespace with no route out "
                          "(`redwarden sandbox up --droplets systemd` gets it on the host first)")
    with _locked(cache.resolve() / ".lock"):
        if unpacked.exists():
            return str(unpacked)
        dl = cache.resolve() / "systemd-container.download"
        shutil.rmtree(dl, ignore_errors=True)
        dl.mkdir(parents=True)
        progress(f"systemd-nspawn: downloading systemd-container (apt-get download) to unpack it into "
                 f"{unpacked.parents[2]}")
        done = _apt_download("systemd-container", dl)
        if done.returncode != 0:  # a fresh machine may have no package lists yet
            progress("systemd-nspawn: apt-get download failed, running apt-get update and trying again")
            update = subprocess.run(["apt-get", "update", "-qq"], capture_output=True, text=True, timeout=600,
                                    check=False)
            if update.returncode != 0:
                raise NspawnError(f"apt-get download systemd-container: {done.stderr.strip()[-300:]}; then "
                                  f"apt-get update: {update.stderr.strip()[-300:]}")
            done = _apt_download("systemd-container", dl)
        debs = list(dl.glob("systemd-container_*.deb"))
        if done.returncode != 0 or not debs:
            raise NspawnError(f"apt-get download systemd-container: {done.stderr.strip()[-300:]}")
        _run(["dpkg-deb", "-x", str(debs[0]), str(unpacked.parents[2])], "unpacking systemd-container")
        shutil.rmtree(dl, ignore_errors=True)
    return str(unpacked)


# ---- the network ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Hub:
    """A bridge inside the network namespace `netns` (ours), with the gateway address `gateway/prefix`."""

    netns: str
    bridge: str
    gateway: str
    prefix: int = 24


def _netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def create_hub(hub: Hub) -> None:
    """The namespace (if missing: `ip netns add`, loopback up) and the bridge in it (if missing)."""
    if not _netns_exists(hub.netns):
        _run(["ip", "netns", "add", hub.netns], f"creating the network namespace {hub.netns}")
        _run(["ip", "-n", hub.netns, "link", "set", "lo", "up"], f"loopback up in {hub.netns}")
    links = _run(["ip", "-n", hub.netns, "-o", "link", "show"], f"listing links in {hub.netns}")
    if f" {hub.bridge}:" not in links:
        _run(["ip", "-n", hub.netns, "link", "add", hub.bridge, "type", "bridge"], f"adding bridge {hub.bridge}")
        _run(["ip", "-n", hub.netns, "addr", "add", f"{hub.gateway}/{hub.prefix}", "dev", hub.bridge],
             f"addressing bridge {hub.bridge}")
    _run(["ip", "-n", hub.netns, "link", "set", hub.bridge, "up"], f"bringing up bridge {hub.bridge}")


def delete_hub(hub: Hub) -> None:
    """Remove the hub's namespace (and so its bridge and every veth end in it)."""
    if _netns_exists(hub.netns):
        _run(["ip", "netns", "delete", hub.netns], f"deleting the network namespace {hub.netns}")


# ---- containers ----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """One droplet: its name (also its hostname), its address on the hub's bridge and its NoCloud seed
    (a URL that serves meta-data and user-data, ending in `/`; `None`: cloud-init finds no data)."""

    name: str
    address: str
    hub: Hub
    seed_url: str | None = None


def _tag(base: Path, name: str) -> str:
    return hashlib.sha256(f"{base.resolve()}\0{name}".encode()).hexdigest()[:8]


def _dir(base: Path, name: str) -> Path:
    return base.resolve() / name


def _load(base: Path, name: str) -> dict[str, object]:
    try:
        data = json.loads((_dir(base, name) / STATE).read_text())
    except (OSError, ValueError):
        raise NspawnError(f"no container {name!r} in {base}") from None
    if not isinstance(data, dict):
        raise NspawnError(f"{_dir(base, name) / STATE} is damaged")
    return data


def _save(base: Path, name: str, data: dict[str, object]) -> None:
    path = _dir(base, name) / STATE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def _spec(data: dict[str, object]) -> ContainerSpec:
    raw = data["spec"]
    assert isinstance(raw, dict)
    return ContainerSpec(name=raw["name"], address=raw["address"], hub=Hub(**raw["hub"]),
                         seed_url=raw.get("seed_url"))


def netns_of(base: Path, name: str) -> str:
    return f"rwc-{_tag(base, name)}"


def create(base: Path, root: Path, spec: ContainerSpec) -> Path:
    """Lay out a container's dir (its own disk is empty: an overlay above `root`); it is not started."""
    d = _dir(base, spec.name)
    if (d / STATE).exists():
        raise NspawnError(f"a container {spec.name!r} exists already in {base}")
    for sub in ("upper", "work", "merged"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    (d / "upper/etc").mkdir(exist_ok=True)
    (d / "upper/etc/machine-id").write_text(uuid.uuid4().hex + "\n")
    _save(base, spec.name, {"spec": asdict(spec), "root": str(root.resolve()), "pid": None})
    return d


def _cgroup_dirs() -> list[Path]:
    """The caller's own cgroup in every hierarchy nspawn uses (unified, and name=systemd if mounted)."""
    own: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        num, ctrls, path = line.split(":", 2)
        if num == "0":
            own["unified"] = path
        elif ctrls == "name=systemd":
            own["systemd"] = path
    fs = Path("/sys/fs/cgroup")
    out = []
    if (fs / "cgroup.controllers").exists():  # a unified hierarchy only
        out.append(fs / own.get("unified", "/").lstrip("/"))
    else:
        if (fs / "unified/cgroup.controllers").exists() and "unified" in own:
            out.append(fs / "unified" / own["unified"].lstrip("/"))
        if (fs / "systemd").is_dir() and "systemd" in own:
            out.append(fs / "systemd" / own["systemd"].lstrip("/"))
    return out


def _container_cgroups(base: Path, name: str) -> list[Path]:
    return [c / "redwarden-nspawn" / f"{name}-{_tag(base, name)}" for c in _cgroup_dirs()]


def _recorded_cgroups(base: Path, name: str) -> list[Path]:
    """The cgroups `power_on` put the container in (recorded: the caller of `power_off` may sit in another
    cgroup than the one that booted it), else those below the caller's own."""
    with contextlib.suppress(NspawnError):
        raw = _load(base, name).get("cgroups")
        if isinstance(raw, list) and raw:
            return [Path(str(c)) for c in raw]
    return _container_cgroups(base, name)


def _cgroup_pids(cgroups: Sequence[Path]) -> set[int]:
    pids: set[int] = set()
    for cg in cgroups:
        if not cg.is_dir():
            continue
        for procs in cg.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(x) for x in procs.read_text().split())
    return pids


def _kill_cgroups(cgroups: Sequence[Path], timeout_s: float = 10.0) -> None:
    """SIGKILL whatever is left in the container's cgroups (a container whose nspawn was killed keeps its
    processes) until none is left."""
    deadline = time.monotonic() + timeout_s
    while (pids := _cgroup_pids(cgroups)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            _reap(pid)
        time.sleep(0.05)


def _remove_cgroups(base: Path, name: str) -> None:
    for cg in _recorded_cgroups(base, name):
        if cg.is_dir():
            for sub in sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    sub.rmdir()
            with contextlib.suppress(OSError):
                cg.rmdir()
        with contextlib.suppress(OSError):  # the common parent, once no container uses it
            cg.parent.rmdir()


def _is_mount(path: Path) -> bool:
    target = str(path.resolve())
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 1 and parts[1].replace("\\040", " ") == target:
                return True
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (our own child not yet reaped) is not alive
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def nspawn_pid(base: Path, name: str) -> int | None:
    pid = _load(base, name).get("pid")
    return pid if isinstance(pid, int) and _alive(pid) else None


def _setup_network(base: Path, spec: ContainerSpec) -> str:
    ns = netns_of(base, spec.name)
    if _netns_exists(ns):
        _run(["ip", "netns", "delete", ns], f"removing the old namespace {ns}")
    _run(["ip", "netns", "add", ns], f"creating the network namespace {ns}")
    veth = f"rwv{_tag(base, spec.name)}"
    try:
        _run(["ip", "-n", spec.hub.netns, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns],
             f"adding veth {veth}")
        _run(["ip", "-n", spec.hub.netns, "link", "set", veth, "master", spec.hub.bridge, "up"], f"attaching {veth}")
        _run(["ip", "-n", ns, "link", "set", "lo", "up"], f"loopback up in {ns}")
        _run(["ip", "-n", ns, "addr", "add", f"{spec.address}/{spec.hub.prefix}", "dev", "eth0"],
             f"addressing eth0 in {ns}")
        _run(["ip", "-n", ns, "link", "set", "eth0", "up"], f"bringing up eth0 in {ns}")
    except NspawnError:
        _teardown_network(base, spec)
        raise
    return ns


def _teardown_network(base: Path, spec: ContainerSpec) -> None:
    ns = netns_of(base, spec.name)
    if _netns_exists(ns):  # deleting the namespace deletes eth0 and so its peer in the hub
        _run(["ip", "netns", "delete", ns], f"deleting the network namespace {ns}")


def _write_instance_files(merged: Path, spec: ContainerSpec) -> None:
    if not (merged.parent / "upper/etc/hostname").exists():  # the first boot's; cloud-init may set another
        (merged / "etc/hostname").write_text(spec.name + "\n")
    cfg = merged / "etc/cloud/cloud.cfg.d/91-redwarden-seed.cfg"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    if spec.seed_url:
        cfg.write_text("datasource:\n  NoCloud:\n    seedfrom: " + json.dumps(spec.seed_url) + "\n")
    else:
        with contextlib.suppress(FileNotFoundError):
            cfg.unlink()


def power_on(base: Path, name: str, nspawn: str) -> int:
    """Boot the container (network, overlay, `systemd-nspawn --boot` in the background); nspawn's pid."""
    data = _load(base, name)
    spec = _spec(data)
    if nspawn_pid(base, name) is not None:
        raise NspawnError(f"container {name!r} is already running")
    d = _dir(base, name)
    root = Path(str(data["root"]))
    ns = _setup_network(base, spec)
    try:
        merged = d / "merged"
        if not _is_mount(merged):
            _run(["mount", "-t", "overlay", "overlay", "-o",
                  f"lowerdir={root},upperdir={d / 'upper'},workdir={d / 'work'}", str(merged)],
                 f"mounting the overlay for {name}")
        _write_instance_files(merged, spec)
        cgroups = _container_cgroups(base, name)
        for cg in cgroups:
            cg.mkdir(parents=True, exist_ok=True)

        def enter_cgroups() -> None:  # runs in the child before exec: nspawn starts in its own cgroup
            for cg in cgroups:
                (cg / "cgroup.procs").write_text(str(os.getpid()))

        argv = [nspawn, "--quiet", "--boot", f"--directory={merged}", f"--machine={name}",
                f"--network-namespace-path=/run/netns/{ns}", "--register=no", "--keep-unit",
                "--resolv-conf=delete", "--link-journal=no", "--console=read-only"]
        with (d / "console.log").open("ab") as console:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                                    start_new_session=True, preexec_fn=enter_cgroups)
    except (NspawnError, OSError) as e:
        with contextlib.suppress(NspawnError):
            _teardown_network(base, spec)
        if _is_mount(d / "merged"):
            subprocess.run(["umount", str(d / "merged")], capture_output=True, timeout=30, check=False)
        raise e if isinstance(e, NspawnError) else NspawnError(f"starting {name}: {e}") from None
    data["pid"] = proc.pid
    data["cgroups"] = [str(c) for c in cgroups]
    _save(base, name, data)
    return proc.pid


def leader(base: Path, name: str) -> int | None:
    """The container's PID 1 (systemd) as the host sees it: nspawn's child's child."""
    pid = nspawn_pid(base, name)
    for _ in range(2):
        if pid is None:
            return None
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return None
        pid = int(children[0]) if children else None
    return pid


def run_in(base: Path, name: str, argv: Sequence[str], timeout_s: float = 60.0,
           env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command inside the running container (all its namespaces), as root; `env`: added to this
    process's environment (a secret for the command goes there, not into its argv)."""
    pid = leader(base, name)
    if pid is None:
        raise NspawnError(f"container {name!r} is not running")
    try:
        return subprocess.run(["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "--", *argv],
                              capture_output=True, text=True, timeout=timeout_s, check=False,
                              env={**os.environ, **env} if env else None)
    except subprocess.TimeoutExpired as e:
        raise NspawnError(f"{' '.join(argv)} in {name}: timed out after {timeout_s} s") from e


def system_state(base: Path, name: str) -> str:
    """`systemctl is-system-running` inside (initializing, starting, running, degraded, ...), or `offline`."""
    try:
        out = run_in(base, name, ["systemctl", "is-system-running"], timeout_s=15).stdout.strip()
    except NspawnError:
        return "offline"
    return out or "offline"


def _procs_in(pid: int) -> Iterator[Path]:
    """The /proc entries of every process in the PID namespace of process `pid`."""
    try:
        pidns = os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(proc / "ns/pid").st_ino == pidns:
                    yield proc


def host_pid(base: Path, name: str, inner: int) -> int | None:
    """The pid this machine sees for the process that is pid `inner` inside the running container."""
    pid = leader(base, name)
    for proc in _procs_in(pid) if pid is not None else ():
        with contextlib.suppress(OSError, ValueError):
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("NSpid:"):
                    if int(line.split()[-1]) == inner:
                        return int(proc.name)
                    break
    return None


def memory_kib(base: Path, name: str) -> int | None:
    """The container's processes' proportional set size (PSS) in KiB: what it costs this machine."""
    pid = leader(base, name)
    if pid is None:
        return None
    total = 0
    for proc in _procs_in(pid):
        with contextlib.suppress(OSError, ValueError):
            for line in (proc / "smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
    return total


def power_off(base: Path, name: str, timeout_s: float = 60.0) -> None:
    """Shut the container down (SIGTERM to nspawn: systemd inside powers off; SIGKILL after `timeout_s`),
    then take its network and overlay down. Its own disk (the overlay's upper dir) stays."""
    data = _load(base, name)
    pid = nspawn_pid(base, name)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.1)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            while _alive(pid) and time.monotonic() < deadline + 10:
                _reap(pid)
                time.sleep(0.1)
        _reap(pid)
    _kill_cgroups(_recorded_cgroups(base, name))
    merged = _dir(base, name) / "merged"
    if _is_mount(merged):
        _run(["umount", str(merged)], f"unmounting {name}'s overlay")
    _teardown_network(base, _spec(data))
    _remove_cgroups(base, name)
    data["pid"] = None
    _save(base, name, data)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def destroy(base: Path, name: str) -> None:
    """Power off and remove the container with its disk."""
    if not (_dir(base, name) / STATE).exists():
        return
    power_off(base, name)
    shutil.rmtree(_dir(base, name))


def names(base: Path) -> list[str]:
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / STATE).exists())
