"""A droplet as a systemd-nspawn container (issue 14): booted from the cached Debian 12 root with systemd as
PID 1, given its user_data by cloud-init's NoCloud datasource over the hub's bridge, running Debian's
hardened redis-server unit; powered off and on (its disk kept, cloud-init not run twice); destroyed.

Needs root and debootstrap (`apt-get install debootstrap`); the first run debootstraps the root into
build/nspawn-cache (about 2 minutes; REDWARDEN_NSPAWN_CACHE moves it), later runs reuse it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import nspawn
from tests.helpers import wait_until

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("REDWARDEN_NSPAWN_CACHE", REPO / "build" / "nspawn-cache"))
GATEWAY = "10.213.0.1"  # the hub's bridge, inside a namespace of this test's own
ADDRESS = "10.213.0.11"
SEED_PORT = 8099

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("debootstrap") is None,
    reason="needs root and debootstrap (apt-get install debootstrap)")

USER_DATA = """#cloud-config
write_files:
  - path: /run/redwarden-init/seeded
    permissions: "0600"
    content: "from the hub"
runcmd:
  - set -eu
  - echo ran >> /root/runcmd-runs
  - systemctl start redis-server.service
"""


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[nspawn.Hub]:
    h = nspawn.Hub(netns=f"rwt-{os.getpid():x}", bridge="rwtbr0", gateway=GATEWAY)
    nspawn.create_hub(h)
    try:
        yield h
    finally:
        nspawn.delete_hub(h)


@pytest.fixture
def seed_server(tmp_path: Path, hub: nspawn.Hub) -> Iterator[str]:
    """meta-data, user-data and an empty vendor-data over HTTP on the hub's gateway address."""
    seed = tmp_path / "seed" / "d1"
    seed.mkdir(parents=True)
    (seed / "meta-data").write_text("instance-id: droplet-d1\nlocal-hostname: d1\n")
    (seed / "user-data").write_text(USER_DATA)
    (seed / "vendor-data").write_text("")
    proc = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{hub.netns}", sys.executable, "-m", "http.server", "--bind", GATEWAY,
         str(SEED_PORT), "--directory", str(tmp_path / "seed")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        probe = ["nsenter", f"--net=/run/netns/{hub.netns}", sys.executable, "-c",
                 f"import socket; socket.create_connection(('{GATEWAY}', {SEED_PORT}), 1)"]
        wait_until(lambda: subprocess.run(probe, capture_output=True, timeout=10).returncode == 0, 15,
                   "the seed server")
        yield f"http://{GATEWAY}:{SEED_PORT}/d1/"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _in(base: Path, argv: list[str]) -> str:
    done = nspawn.run_in(base, "d1", argv)
    return done.stdout.strip()


def _booted(base: Path) -> str | None:
    state = nspawn.system_state(base, "d1")
    return state if state in ("running", "degraded") else None


def test_a_container_boots_runs_its_user_data_powers_off_and_on_and_is_destroyed(
        tmp_path: Path, hub: nspawn.Hub, seed_server: str) -> None:
    root = nspawn.ensure_root(CACHE, progress=lambda m: print(m, file=sys.stderr))
    binary = nspawn.nspawn_binary(CACHE)
    base = tmp_path / "containers"
    spec = nspawn.ContainerSpec(name="d1", address=ADDRESS, hub=hub, seed_url=seed_server)
    nspawn.create(base, root, spec)
    try:
        nspawn.power_on(base, "d1", binary)
        state = wait_until(lambda: _booted(base), 240, "the container to finish booting", interval_s=0.5)
        failed = _in(base, ["systemctl", "--failed", "--no-legend", "--plain"])
        assert state == "running", f"{state}: failed units: {failed}"
        assert _in(base, ["cat", "/proc/1/comm"]) == "systemd"
        assert _in(base, ["hostname"]) == "d1"
        assert f"inet {ADDRESS}/24" in _in(base, ["ip", "-4", "-o", "addr", "show", "eth0"])
        # cloud-init took the user_data from the hub over the bridge and ran it once
        assert "DataSourceNoCloudNet" in _in(base, ["cloud-init", "status", "--long"])
        assert _in(base, ["cat", "/run/redwarden-init/seeded"]) == "from the hub"
        assert _in(base, ["cat", "/root/runcmd-runs"]) == "ran"
        # Debian's redis-server unit, with its hardening (ProtectSystem=strict, PrivateUsers, ...), runs
        assert _in(base, ["systemctl", "is-active", "redis-server"]) == "active"
        assert _in(base, ["systemctl", "show", "-p", "ProtectSystem", "--value", "redis-server"]) == "strict"
        assert _in(base, ["redis-cli", "ping"]) == "PONG"
        memory = nspawn.memory_kib(base, "d1")
        print(f"container memory (PSS): {memory} KiB", file=sys.stderr)
        machine_id = _in(base, ["cat", "/etc/machine-id"])

        nspawn.power_off(base, "d1")
        assert nspawn.nspawn_pid(base, "d1") is None
        assert nspawn.system_state(base, "d1") == "offline"
        assert not Path("/run/netns", nspawn.netns_of(base, "d1")).exists()

        nspawn.power_on(base, "d1", binary)
        state = wait_until(lambda: _booted(base), 240, "the container to boot again", interval_s=0.5)
        assert state == "running", _in(base, ["systemctl", "--failed", "--no-legend", "--plain"])
        assert _in(base, ["cat", "/etc/machine-id"]) == machine_id  # the same disk
        assert _in(base, ["cat", "/root/runcmd-runs"]) == "ran"  # the same instance: user_data not run again
    finally:
        nspawn.destroy(base, "d1")
    assert not (base / "d1").exists()
    assert not Path("/run/netns", nspawn.netns_of(base, "d1")).exists()
