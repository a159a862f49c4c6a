"""The production path end to end in `sandbox up --droplets systemd` (issue 14): every droplet a systemd-nspawn
container booted from the cached Debian 12 root, given the production user_data (user-data-droplet.tmpl) by
cloud-init's NoCloud datasource from the local DigitalOcean, installing the agent .deb from the gateway (its
checksum checked) and running redis-server, redis-sentinel and redwarden-agent as the packages' units with
their hardening; the controller the controller package's unit (redwarden-controller.service, user redwarden) in
a container of its own on the hub's bridge, the local DigitalOcean on the hub's gateway.

- the cluster is created through cloud-init and is healthy;
- SIGKILL of the master's redis-server: fast failover, the old master back as a replica (Debian's unit
  restarts it within ~0.5 s and races the failover: what that race breaks is an expected failure until the
  agent package leaves redis-server's restarts to the agent, see the test);
- a replica's redis-server stopped: its agent restarts it through polkit (`systemctl restart` as the
  unprivileged user redwarden) on the controller's directive;
- a replica droplet destroyed: the replacement boots through cloud-init and the cluster is healthy again;
- `sandbox down` leaves no container, mount, cgroup, network namespace or process behind.

Needs root and debootstrap; the first run debootstraps the root into build/nspawn-cache (about 2 minutes;
REDWARDEN_NSPAWN_CACHE moves it), later runs reuse it. The agent and controller .debs are built from this
tree first (packaging/build-debs, about 40 s), unless REDWARDEN_AGENT_DEB and REDWARDEN_CONTROLLER_DEB name them.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
import requests

from sandbox import ctlcontainer, nspawn, sysdroplets
from tests.helpers import wait_until
from tests.test_drill_e2e import fully_redundant as redundant

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "console.cli"]
CLONE_NEWNET = 0x40000000

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("debootstrap") is None,
    reason="needs root and debootstrap (apt-get install debootstrap): the droplets are systemd-nspawn containers")


def cli(*args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False)


def in_netns(name: str, fn: Callable[[], T]) -> T:
    """`fn()` in a thread of its own that has entered the network namespace `name` (only that thread does)."""
    libc = ctypes.CDLL(None, use_errno=True)
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {name}")
            finally:
                os.close(fd)
            out["value"] = fn()
        except BaseException as e:  # handed to the caller's thread
            out["error"] = e

    t = threading.Thread(target=run, name=f"in-{name}")
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    value: T = out["value"]
    return value


class SysBox:
    """A running `--droplets systemd` sandbox, seen from outside its namespace."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def status(self) -> dict[str, Any]:
        proc = cli("sandbox", "status", "--dir", str(self.root), "--json", timeout=120)
        assert proc.returncode == 0, proc.stderr
        out: dict[str, Any] = json.loads(proc.stdout)
        return out

    def cluster(self) -> dict[str, Any]:
        """The controller's view (GET /v1/clusters over HTTPS on the gateway, from inside the namespace)."""
        st = self.status()

        def get() -> dict[str, Any]:
            s = requests.Session()
            s.trust_env = False
            resp = s.get(f"{st['controller_url']}/v1/clusters", timeout=5, verify=st["controller_ca_cert"],
                         headers={"Authorization": f"Bearer {st['admin_token']}"})
            resp.raise_for_status()
            c: dict[str, Any] = resp.json()["clusters"][0]
            return c

        return in_netns(str(st["netns"]), get)

    def run_in(self, node: str, argv: list[str]) -> str:
        d = next(d for d in self.status()["droplets"] if d["name"] == node)
        done = nspawn.run_in(self.root / "containers", sysdroplets.container_of(d), argv, timeout_s=60)
        return done.stdout.strip()

    def drill(self, fault: str) -> dict[str, Any]:
        proc = cli("drill", "sandbox", "--fault", fault, "--sandbox", str(self.root), "--json", "--timeout", "200",
                   timeout=300)
        assert proc.returncode == 0, f"drill {fault} failed ({proc.returncode}): {proc.stderr[-3000:]}"
        result: dict[str, Any] = json.loads(proc.stdout)
        assert result["fault"] == fault
        return result

    def in_controller(self, argv: list[str]) -> str:
        """A command in the controller's container, as root."""
        done = nspawn.run_in(ctlcontainer.base(self.root), ctlcontainer.NAME, argv, timeout_s=60)
        return done.stdout.strip()

    def controller_events(self, event: str) -> list[dict[str, Any]]:
        out = []
        journal = self.in_controller(["journalctl", "-u", ctlcontainer.UNIT, "-o", "cat", "--no-pager"])
        for line in journal.splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if isinstance(e, dict) and e.get("event") == event:
                out.append(e)
        return out


def fully_redundant(sb: SysBox) -> dict[str, Any] | None:
    """The process mode's definition (tests/test_drill_e2e.py), over this sandbox's controller."""
    return redundant(cast(Any, sb))


def at(result: dict[str, Any], step: str) -> float | None:
    value: float | None = next(s["at_s"] for s in result["steps"] if s["name"] == step)
    return value


def packages(tmp: Path) -> tuple[Path, Path]:
    """The agent and controller .debs of this source tree, built into `tmp` (about 40 s): a package left in
    dist/ by an older build would test older code (an older controller refuses a newer config and its unit
    fails). REDWARDEN_AGENT_DEB and REDWARDEN_CONTROLLER_DEB, when both set, are taken as they are."""
    given = os.environ.get("REDWARDEN_AGENT_DEB"), os.environ.get(ctlcontainer.DEB_ENV)
    if given[0] and given[1]:
        return Path(given[0]), Path(given[1])
    proc = subprocess.run(["bash", str(REPO / "packaging" / "build-debs")], capture_output=True, text=True,
                          timeout=900, env={**os.environ, "REDWARDEN_DIST": str(tmp)}, check=False)
    assert proc.returncode == 0, f"packaging/build-debs failed: {proc.stderr[-2000:]}"
    return next(tmp.glob("redwarden-agent_*.deb")), next(tmp.glob("redwarden-controller_*.deb"))


def leftovers(root: Path, netns_name: str | None) -> list[str]:
    """What of the sandbox is still there: containers running, mounts, namespaces, cgroups, processes."""
    found = []
    bases = [root / "containers", ctlcontainer.base(root)]
    found += [f"container {n} running" for base in bases for n in nspawn.names(base)
              if nspawn.nspawn_pid(base, n) is not None]
    mounts = Path("/proc/self/mounts").read_text()
    found += [f"mount {line.split()[1]}" for line in mounts.splitlines() if str(root) in line.split()[1]]
    netns_names = os.listdir("/run/netns") if Path("/run/netns").is_dir() else []
    found += [f"netns {n}" for n in netns_names if n == netns_name]
    for base, n in [(b, n) for b in bases for n in nspawn.names(b)]:
        found += [f"netns {nspawn.netns_of(base, n)}"] if nspawn.netns_of(base, n) in netns_names else []
        found += [f"cgroup {c}" for c in nspawn._recorded_cgroups(base, n) if c.exists()]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(root) in cmd and int(proc.name) != os.getpid():
                found.append(f"process {proc.name}: {cmd[:120]}")
    return found


@pytest.fixture(scope="module")
def sysbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SysBox]:
    root = tmp_path_factory.mktemp("sysmode")
    deb, controller_deb = packages(tmp_path_factory.mktemp("dist"))
    saved = os.environ.get(ctlcontainer.DEB_ENV)
    os.environ[ctlcontainer.DEB_ENV] = str(controller_deb)  # for `sandbox up`, which the fixture runs
    netns_name = None
    try:
        proc = cli("sandbox", "up", "--droplets", "systemd", "--dir", str(root), "--agent-deb", str(deb),
                   "--report-interval-s", "0.5", "--timeout", "300", timeout=900)
        netns_name = json.loads((root / "netns.json").read_text())["name"] if (root / "netns.json").exists() \
            else None
        if proc.returncode != 0:
            logs = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-1500:]}"
                             for p in sorted(root.glob("droplets/*/*.log")) + sorted(root.glob("controlplane/*/*.log"))
                             if p.exists())
            raise AssertionError(f"sandbox up --droplets systemd failed: {proc.stderr[-3000:]}\n{logs}")
        yield SysBox(root)
    finally:
        down = cli("sandbox", "down", "--dir", str(root), timeout=300)
        if saved is None:
            os.environ.pop(ctlcontainer.DEB_ENV, None)
        else:
            os.environ[ctlcontainer.DEB_ENV] = saved
        left = leftovers(root, netns_name)
        assert down.returncode == 0 and not left, f"sandbox down: {down.stderr[-2000:]}; left behind: {left}"


def test_the_cluster_is_created_through_cloud_init_and_runs_the_packages_units(sysbox: SysBox) -> None:
    st = sysbox.status()
    assert st["droplets_mode"] == "systemd" and st["netns"]
    assert [d["status"] for d in st["droplets"]] == ["active"] * 3
    for d in st["droplets"]:
        node = d["name"]
        assert sysbox.run_in(node, ["systemctl", "is-system-running"]) == "running"
        assert sysbox.run_in(node, ["cat", "/proc/1/comm"]) == "systemd"
        ci = sysbox.run_in(node, ["cloud-init", "status", "--long"])
        assert "status: done" in ci and "DataSourceNoCloudNet" in ci, ci
        # the production template's install line: the .deb fetched from the gateway, its SHA-256 checked
        # (it holds the enrollment token, used up by now, still never printed: only whether the lines are there)
        user_data = sysbox.run_in(node, ["cat", "/var/lib/cloud/instance/user-data.txt"])
        production = all(line in user_data for line in ("redwarden-agent bootstrap --config /etc/redwarden/agent.toml",
                                                        "sha256sum -c", "/files/redwarden-agent.deb"))
        assert production, "the droplet's user_data is not the production template's"
        assert sysbox.run_in(node, ["dpkg-query", "-W", "-f=${Status}", "redwarden-agent"]) == "install ok installed"
        units = sysbox.run_in(node, ["systemctl", "is-active", *sysdroplets.UNITS.values()]).split()
        assert units == ["active"] * 3, units
        agent = sysbox.run_in(node, ["systemctl", "show", "-p", "User", "-p", "ProtectSystem", "-p", "NoNewPrivileges",
                                     "redwarden-agent.service"])
        assert set(agent.splitlines()) == {"User=redwarden", "ProtectSystem=strict", "NoNewPrivileges=yes"}, agent
        assert sysbox.run_in(node, ["systemctl", "show", "-p", "ProtectSystem", "--value",
                                    "redis-server.service"]) == "strict"
        assert all(d["pids"][s] for s in sysdroplets.UNITS), d["pids"]
    wait_until(lambda: fully_redundant(sysbox), 60, "a fully redundant cluster")


def test_the_controller_runs_as_the_controller_packages_unit_in_its_own_container(sysbox: SysBox) -> None:
    st = sysbox.status()
    assert st["controller_container"] == ctlcontainer.NAME
    host = st["controller_url"].split("//", 1)[1].rsplit(":", 1)[0]
    assert host != sysdroplets.GATEWAY and host not in {d["address"] for d in st["droplets"]}, st["controller_url"]
    assert sysbox.in_controller(["hostname", "-I"]).split() == [host]
    assert sysbox.in_controller(["systemctl", "is-active", ctlcontainer.UNIT]) == "active"
    assert sysbox.in_controller(["dpkg-query", "-W", "-f=${Status}", "redwarden-controller"]) == "install ok installed"
    unit = sysbox.in_controller(["systemctl", "show", "-p", "User", "-p", "ProtectSystem", "-p", "NoNewPrivileges",
                                 "-p", "PrivateUsers", ctlcontainer.UNIT])
    assert set(unit.splitlines()) == {"User=redwarden", "ProtectSystem=strict", "NoNewPrivileges=yes",
                                      "PrivateUsers=yes"}, unit
    main = sysbox.in_controller(["systemctl", "show", "-p", "MainPID", "--value", ctlcontainer.UNIT])
    assert main.isdigit() and int(main) > 0, main
    uid = sysbox.in_controller(["awk", "/^Uid:/ {print $2, $3, $4, $5}", f"/proc/{main}/status"]).split()
    redwarden = sysbox.in_controller(["id", "-u", "redwarden"])
    assert redwarden != "0" and uid == [redwarden] * 4, (uid, redwarden)
    assert st["controller_pid"] is not None and Path(f"/proc/{st['controller_pid']}").exists()
    # its state is in the container, in the unit's StateDirectory; no controller process of the sandbox's own
    assert sysbox.in_controller(["stat", "-c", "%U", "/var/lib/redwarden/state.db"]) == "redwarden"
    assert not (sysbox.root / "controller" / "state.db").exists()
    assert not (sysbox.root / "controller" / "controller.pid").exists()
    print(f"controller container: {ctlcontainer.memory_kib(sysbox.root)} KiB PSS")

def test_kill_master_fails_over_fast_and_the_old_master_comes_back_as_a_replica(sysbox: SysBox) -> None:
    before = wait_until(lambda: fully_redundant(sysbox), 90, "a fully redundant cluster")
    old = next(n for n in before["nodes"] if n["role"] == "master")
    old_pid = next(d for d in sysbox.status()["droplets"] if d["name"] == old["name"])["pids"]["redis"]
    restarts = int(sysbox.run_in(old["name"], ["systemctl", "show", "-p", "NRestarts", "--value", "redis-server"]))

    result = sysbox.drill("kill-master")

    assert result["node"] == old["name"] and result["writes_acked"] > 0
    assert at(result, "first_finding") is not None
    after = wait_until(lambda: fully_redundant(sysbox), 120, "a fully redundant cluster after the kill")
    new_pid = next(d for d in sysbox.status()["droplets"] if d["name"] == old["name"])["pids"]["redis"]
    assert new_pid and new_pid != old_pid  # the old master's redis-server runs again, a new process
    by_unit = int(sysbox.run_in(old["name"], ["systemctl", "show", "-p", "NRestarts", "--value",
                                              "redis-server"])) > restarts
    # Debian's redis-server unit (Restart=always, 100 ms) would race the failover, bringing the killed master back
    # as a master from its AOF within ~0.5 s; the agent package's drop-in (Restart=no) leaves the restart to the
    # agent, as a replica of the new master
    assert not by_unit, "systemd restarted the killed master: the agent package's drop-in is not in effect"
    assert at(result, "new_master") is not None, "no failover"
    assert any(a["kind"] == "Failover" for a in result["actions"]), result["actions"]  # fast, not the timer
    assert after["master"] != old["address"]
    rejoined = next(n for n in after["nodes"] if n["name"] == old["name"])
    assert rejoined["role"] == "replica" and rejoined["link"] == "up"
    assert result["writes_lost"] == 0


def test_a_replicas_redis_is_restarted_by_its_agent_through_polkit(sysbox: SysBox) -> None:
    before = wait_until(lambda: fully_redundant(sysbox), 90, "a fully redundant cluster")
    replica = next(n for n in before["nodes"] if n["role"] == "replica")
    acked_before = len(sysbox.controller_events("action.acknowledged"))
    # stopped cleanly (as root): the unit's Restart= leaves a stopped service alone, so only the agent
    # (user redwarden, no privileges: systemd asks polkit) can start it again
    sysbox.run_in(replica["name"], ["systemctl", "stop", "redis-server.service"])
    assert sysbox.run_in(replica["name"], ["systemctl", "is-active", "redis-server.service"]) != "active"
    started = time.monotonic()

    wait_until(lambda: sysbox.run_in(replica["name"], ["systemctl", "is-active", "redis-server.service"]) == "active",
               120, f"{replica['name']}'s redis-server started again")
    after = wait_until(lambda: fully_redundant(sysbox), 120, "the replica back in sync")
    assert next(n for n in after["nodes"] if n["name"] == replica["name"])["role"] == "replica"
    acks = [e for e in sysbox.controller_events("action.acknowledged")[acked_before:]
            if e.get("node") == replica["name"]]
    assert any(e.get("ok") is True for e in acks), acks  # the agent ran the restart directive
    journal = sysbox.run_in(replica["name"], ["journalctl", "-u", "redwarden-agent", "--no-pager", "-o", "cat",
                                              "--since", f"-{int(time.monotonic() - started) + 30}s"])
    executed = [json.loads(line) for line in journal.splitlines()
                if line.startswith("{") and '"directive.executed"' in line]
    assert any(e.get("service") == "redis" for e in executed), journal[-2000:]


def test_a_destroyed_replica_is_replaced_by_a_droplet_booted_through_cloud_init(sysbox: SysBox) -> None:
    before = wait_until(lambda: fully_redundant(sysbox), 90, "a fully redundant cluster")
    ids_before = {d["id"]: d for d in sysbox.status()["droplets"]}

    result = sysbox.drill("destroy-replica")

    assert at(result, "replacement_created") is not None and at(result, "replica_in_sync") is not None
    assert result["writes_lost"] == 0
    after = wait_until(lambda: fully_redundant(sysbox), 120, "a fully redundant cluster with the replacement")
    assert after["master"] == before["master"]
    st = sysbox.status()
    gone = [i for i in ids_before if i not in {d["id"] for d in st["droplets"]}]
    new = [d for d in st["droplets"] if d["id"] not in ids_before]
    assert len(gone) == 1 and len(new) == 1, (gone, new)
    assert not (sysbox.root / "containers" / sysdroplets.container_of(ids_before[gone[0]])).exists()
    assert (sysbox.root / "destroyed" / Path(ids_before[gone[0]]["dir"]).name / "cloud-init-output.log").exists()
    ci = sysbox.run_in(new[0]["name"], ["cloud-init", "status", "--long"])
    assert "status: done" in ci and f"/seed/{new[0]['id']}/" in ci, ci
    assert sysbox.run_in(new[0]["name"], ["dpkg-query", "-W", "-f=${Status}", "redwarden-agent"]) == \
        "install ok installed"
    assert next(n for n in after["nodes"] if n["name"] == new[0]["name"])["role"] == "replica"
