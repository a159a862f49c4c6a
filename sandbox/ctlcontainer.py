"""The controller of a `--droplets systemd` sandbox as the controller package's unit, in a container of its own
(issue 14).

Layer: sandbox. The container is booted like a droplet (`sandbox.nspawn`: an overlay of the same cached Debian
root, a veth into the hub's bridge) but is no droplet of the local DigitalOcean: it lives under
`<sandbox>/controlplane/`, has the fixed address `CONTROLLER_HOST` on the bridge (below the droplets' first
address) and is booted and powered off by the sandbox itself. In it, the controller .deb (dist/, or
$REDWARDEN_CONTROLLER_DEB) is installed offline (`dpkg -i`, its dependencies are in the root), then the
sandbox's controller.toml is written to /etc/redwarden/controller.toml with its paths mapped into the
container: the secrets under `<sandbox>/secrets/` become files of /etc/redwarden/controller.secrets/ (root,
0600), which the unit loads as the credentials `secret_<file name>`; the TLS certificates and the local
DigitalOcean's CA go to /etc/redwarden/tls/, the TLS key to the credential `secret_tls-key`; the state to
/var/lib/redwarden/state.db (the unit's StateDirectory). Then `redwarden-controller.service` is restarted
and runs with its hardening, as user redwarden.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from sandbox import nspawn

REPO = Path(__file__).resolve().parents[1]
DEB_ENV = "REDWARDEN_CONTROLLER_DEB"
NAME = "redwarden-controller"
UNIT = "redwarden-controller.service"
HOST_NUMBER = 2  # the bridge's network + 2 (the droplets start at + 11)
DEB_IN = "root/redwarden-controller.deb"
TLS_DIR = "/etc/redwarden/tls"
SECRETS_DIR = "etc/redwarden/controller.secrets"
STATE_PATH = "/var/lib/redwarden/state.db"


class ControllerContainerError(Exception):
    """The controller's container could not be made, booted or configured; the message says why."""


def base(root: Path) -> Path:
    return root.resolve() / "controlplane"


def address(hub: nspawn.Hub) -> str:
    net = ipaddress.ip_interface(f"{hub.gateway}/{hub.prefix}").network
    return str(net.network_address + HOST_NUMBER)


def find_deb(explicit: str | None = None) -> Path:
    wanted = explicit or os.environ.get(DEB_ENV)
    if wanted:
        if not Path(wanted).is_file():
            raise ControllerContainerError(f"no controller package at {wanted}")
        return Path(wanted)
    found = sorted((REPO / "dist").glob("redwarden-controller_*.deb"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise ControllerContainerError(f"no controller package in {REPO / 'dist'}: build it first "
                                       f"(packaging/build-debs controller) or name one with ${DEB_ENV}")
    return found[-1]


def container_toml(root: Path, toml: str) -> tuple[str, dict[str, Path]]:
    """The sandbox's controller.toml with its paths mapped into the container, and the files it names there
    (path inside the container -> file of the sandbox)."""
    root = root.resolve()
    files: dict[str, Path] = {}
    mapping = {
        root / "controller" / "state.db": STATE_PATH,
        root / "doapi" / "tls" / "ca.pem": f"{TLS_DIR}/do-ca.pem",
        root / "controller" / "tls" / "server.pem": f"{TLS_DIR}/server.pem",
        root / "controller" / "tls" / "ca.pem": f"{TLS_DIR}/ca.pem",
        root / "controller" / "tls" / "server.key": "secret_tls-key",
    }
    for src, dst in list(mapping.items()):
        if dst.startswith("secret_"):
            files[f"/{SECRETS_DIR}/{dst.removeprefix('secret_')}"] = src
        elif dst != STATE_PATH:
            files[dst] = src
    for secret in sorted((root / "secrets").iterdir()):
        mapping[secret] = f"secret_{secret.name}"
        files[f"/{SECRETS_DIR}/{secret.name}"] = secret
    for src, dst in mapping.items():
        toml = toml.replace(f'"{src}"', f'"{dst}"')
    return toml, files


def start(root: Path, rootfs: Path, binary: str, hub: nspawn.Hub, deb: Path, toml: str,
          progress: Callable[[str], None] = lambda _m: None, timeout_s: float = 120.0) -> str:
    """Boot the controller's container, install the package, configure and restart the unit; its address."""
    b, addr = base(root), address(hub)
    started = time.monotonic()
    try:
        nspawn.destroy(b, NAME)  # an earlier sandbox's
        d = nspawn.create(b, rootfs, nspawn.ContainerSpec(NAME, addr, hub))
        (d / "upper" / "root").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(deb, d / "upper" / DEB_IN)
        nspawn.power_on(b, NAME, binary)
        deadline = started + timeout_s
        while nspawn.system_state(b, NAME) not in ("running", "degraded"):
            if time.monotonic() > deadline or nspawn.nspawn_pid(b, NAME) is None:
                raise ControllerContainerError(
                    f"the controller's container did not boot (console: {d / 'console.log'})")
            time.sleep(0.2)
        progress(f"controller container {NAME} on {addr} booted after {time.monotonic() - started:.1f} s")
        done = nspawn.run_in(b, NAME, ["dpkg", "-i", "/" + DEB_IN], timeout_s=timeout_s)
        if done.returncode != 0:
            raise ControllerContainerError(f"dpkg -i {deb.name} in the controller's container: "
                                           f"{(done.stderr or done.stdout).strip()[-400:]}")
        merged = d / "merged"
        text, files = container_toml(root, toml)
        for inside, src in files.items():
            target = merged / inside.lstrip("/")
            secret = inside.startswith("/" + SECRETS_DIR)
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700 if secret else 0o755)
            target.touch(mode=0o600 if secret else 0o644)
            target.write_bytes(src.read_bytes())
        conf = merged / "etc/redwarden/controller.toml"
        conf.write_text(text)  # keeps the package's owner root:redwarden and mode 0640
        done = nspawn.run_in(b, NAME, ["systemctl", "restart", UNIT], timeout_s=60)
        if done.returncode != 0:
            raise ControllerContainerError(f"systemctl restart {UNIT}: {done.stderr.strip()[-300:]}")
    except nspawn.NspawnError as e:
        raise ControllerContainerError(str(e)) from None
    progress(f"{UNIT} installed and restarted after {time.monotonic() - started:.1f} s")
    return addr


def running(root: Path) -> bool:
    b = base(root)
    return (b / NAME / nspawn.STATE).exists() and nspawn.nspawn_pid(b, NAME) is not None


def save_journal(root: Path) -> Path | None:
    """The unit's journal, kept as `controlplane/redwarden-controller/journal.log` (what `down` leaves to read)."""
    if not running(root):
        return None
    target = base(root) / NAME / "journal.log"
    try:
        done = nspawn.run_in(base(root), NAME, ["journalctl", "-u", UNIT, "-o", "cat", "--no-pager"], timeout_s=30)
    except nspawn.NspawnError:
        return None
    target.write_text(done.stdout)
    return target


def power_off(root: Path) -> None:
    b = base(root)
    save_journal(root)
    if (b / NAME / nspawn.STATE).exists():
        try:
            nspawn.power_off(b, NAME, timeout_s=20.0)
        except nspawn.NspawnError as e:
            raise ControllerContainerError(str(e)) from None


def main_pid(root: Path) -> int | None:
    """The unit's main process as this machine sees it, or None."""
    if not running(root):
        return None
    try:
        out = nspawn.run_in(base(root), NAME, ["systemctl", "show", "-p", "MainPID", "--value", UNIT],
                            timeout_s=15).stdout.strip()
    except nspawn.NspawnError:
        return None
    return nspawn.host_pid(base(root), NAME, int(out)) if out.isdigit() and int(out) > 0 else None


def memory_kib(root: Path) -> int | None:
    return nspawn.memory_kib(base(root), NAME) if running(root) else None
