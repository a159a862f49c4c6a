"""`redwarden drill --sandbox DIR`: the fault target and endpoints of a sandbox, for the console's drill.

Layer: sandbox (on top of everything). Faults are signals to the sandbox's processes, cuts in the network
namespace of a sandbox that has one (`sandbox up --netns`: partitions, an isolated or blind controller),
a filled data directory (its own small file system there), faults of the local DigitalOcean API, and
droplets destroyed through it with the production adapter (pydo).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import requests

from agent import processes as runner
from console.cluster import NodeSnap
from console.drill.model import NETWORK_FAULTS, DrillError, DrillUsageError
from console.drill.targets import Endpoints, FaultTarget, destroy_node
from controller.adapters.cloud import PydoCloud
from sandbox import cluster as sb
from sandbox import disks, netns, sysdroplets

SYSTEMD_UNSUPPORTED = {
    **{f: "a container's traffic crosses the hub bridge, where the namespace's output hook cannot tell its sender"
       for f in NETWORK_FAULTS},
    "empty-master": "not done to a container's disk yet",
    "disk-full": "a container's data dir is not a file system of its own yet",
}
CLOUD_LATENCY_MS = 7000  # above the sandbox controller's do_timeout_s (5 s): every call times out


class SandboxTarget:
    """Faults on a sandbox: signals to its processes, cuts in its namespace, a full disk, a slow cloud,
    droplets destroyed through its local DigitalOcean."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.label = f"sandbox {self.root}"

    def _status(self) -> dict[str, Any]:
        return sb.status(self.root)

    def _droplets(self) -> list[dict[str, Any]]:
        rows = self._status().get("droplets")
        return [d for d in rows if isinstance(d, dict) and d.get("address")] if isinstance(rows, list) else []

    def _droplet(self, name: str) -> dict[str, Any]:
        for d in self._droplets():
            if d.get("name") == name:
                return d
        raise DrillError(f"no droplet named {name} in {self.label}")

    def _party(self, rows: list[dict[str, Any]], label: str) -> netns.Party:
        return netns.Party(label, tuple(netns.droplet_gid(int(d["id"])) for d in rows),
                           tuple(str(d["address"]) for d in rows))

    def _controller(self) -> netns.Party:
        address = sb.load_state(self.root).get("control_address")
        return netns.Party("controller", (netns.CONTROLLER_GID,), (str(address),) if address else ())

    def _cut(self, a: netns.Party, b: netns.Party) -> str:
        try:
            netns.apply_cut(netns.cut_rules(a, b))
        except netns.NetnsError as e:
            raise DrillUsageError(str(e)) from None
        return f"network cut between {a.name} and {b.name}"

    def _cloud_faults(self, body: dict[str, Any]) -> None:
        st = self._status()
        session = requests.Session()
        session.trust_env = False
        resp = session.post(f"{st['do_api_url']}/_sandbox/faults", json=body, timeout=10,
                            headers={"Authorization": f"Bearer {st['do_token']}"}, verify=str(st["do_ca_cert"]))
        if resp.status_code != 200:
            raise DrillError(f"the local DigitalOcean refused the fault: HTTP {resp.status_code}")

    def _data_dir(self, name: str) -> tuple[Path, int]:
        """A droplet's data dir and the pid of the local DigitalOcean, in whose mount namespace it is mounted."""
        address = sb.load_state(self.root).get("control_address")
        pid = runner.pid_of(sb.doapi_spec(self.root, str(address))) if address else None
        if pid is None:
            raise DrillError(f"the local DigitalOcean of {self.label} is not running")
        return Path(str(self._droplet(name)["root"])) / "var/lib/redis", pid

    def _destroy(self, node: NodeSnap) -> str:
        st = self._status()
        droplet_id = node.droplet_id
        if droplet_id is None:
            droplet_id = int(self._droplet(node.name)["id"])
        cloud = PydoCloud(str(st["do_token"]), str(st["do_api_url"]), ca_path=str(st["do_ca_cert"]))
        return destroy_node(cloud, node, droplet_id)

    def inject(self, fault: str, node: NodeSnap) -> str:
        if sb.systemd_mode(self.root) and fault in SYSTEMD_UNSUPPORTED:
            raise DrillUsageError(f"--fault {fault} runs on process droplets only (`sandbox up --netns`): "
                                  + SYSTEMD_UNSUPPORTED[fault])
        if fault in NETWORK_FAULTS and not netns.in_sandbox_netns():
            raise DrillUsageError(f"--fault {fault} cuts the network: it needs a sandbox in its own network namespace "
                                  f"(`redwarden sandbox up --netns --dir {self.root}`)")
        if fault == "kill-master":
            sb.fault(self.root, node.name, "redis", "kill")
            return f"SIGKILL redis-server on {node.name}"
        if fault == "stop-master":
            sb.fault(self.root, node.name, "redis", "freeze")
            return f"SIGSTOP redis-server on {node.name} (thawed once a new master is seen)"
        if fault == "kill-agent":
            sb.fault(self.root, node.name, "agent", "kill")
            return f"SIGKILL redwarden-agent on {node.name} (its Redis and Sentinel untouched)"
        if fault in ("partition-master", "partition-replica"):
            rows = self._droplets()
            mine = [d for d in rows if d["name"] == node.name]
            others = [d for d in rows if d["name"] != node.name]
            return self._cut(self._party(mine, node.name), self._party(others, "the other nodes")) + \
                " (Redis, Sentinel and agent; the controller and clients still reach every node)"
        if fault == "isolate-controller":
            return self._cut(self._party([self._droplet(node.name)], node.name), self._controller())
        if fault == "blind-controller":
            return self._cut(self._party(self._droplets(), "every node"), self._controller())
        if fault == "restart-sentinels" and sb.systemd_mode(self.root):
            rows = self._droplets()
            try:
                for d in rows:
                    sysdroplets.systemctl(self.root, d, "restart", "sentinel")
            except sysdroplets.SysDropletError as e:
                raise DrillError(str(e)) from None
            return f"restarted all {len(rows)} Sentinels at once (systemctl restart redis-sentinel)"
        if fault == "restart-sentinels":
            rows = self._droplets()
            services = [sb.droplet_services(d) for d in rows]
            runner.stop_all([s.specs["sentinel"] for s in services], timeout_s=5.0)
            for s in services:
                s.start("sentinel")
            return f"restarted all {len(rows)} Sentinels at once (SIGTERM, then started again)"
        if fault == "empty-master":
            sb.fault(self.root, node.name, "redis", "kill")
            path, pid = self._data_dir(node.name)
            data = disks.seen_by(pid, path)
            removed = 0
            for path in list(data.iterdir()) if data.is_dir() else []:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed += 1
            return f"SIGKILL redis-server on {node.name} and its data dir emptied ({removed} entries)"
        if fault == "disk-full":
            data, pid = self._data_dir(node.name)
            try:
                written = disks.fill(data, pid)
            except disks.DiskError as e:
                raise DrillUsageError(f"--fault disk-full: {e} (`sandbox up --netns` gives data dirs their own "
                                      "file system)") from None
            return f"{node.name}'s data dir file system filled ({written // (1 << 20)} MiB of filler)"
        if fault == "cloud-timeouts":
            destroyed = self._destroy(node)
            self._cloud_faults({"latency_ms": CLOUD_LATENCY_MS,
                                "fail": [{"method": "POST", "path_regex": "^/v2/droplets$", "status": 504,
                                          "after_commit": True, "count": 1}]})
            return (f"{destroyed}; then every DigitalOcean call takes {CLOUD_LATENCY_MS / 1000:.0f} s (past the "
                    "controller's timeout) and the next droplet create is made but answered 504")
        return self._destroy(node)

    def undo(self, fault: str, node: NodeSnap) -> str | None:
        if fault == "stop-master":
            try:
                sb.fault(self.root, node.name, "redis", "thaw")
            except sb.SandboxError as e:  # restarted by its agent meanwhile: nothing left frozen
                return f"thaw of {node.name}'s redis-server skipped: {e}"
            return f"SIGCONT redis-server on {node.name}"
        if fault == "kill-agent":
            sb.fault(self.root, node.name, "agent", "start")
            return f"redwarden-agent on {node.name} started again (as systemd's Restart= would)"
        if fault in NETWORK_FAULTS:
            netns.clear_cuts()
            return "network cut removed"
        if fault == "disk-full":
            data, pid = self._data_dir(node.name)
            disks.unfill(data, pid)
            return f"{node.name}'s data dir has room again"
        if fault == "cloud-timeouts":
            self._cloud_faults({"latency_ms": 0})
            return "DigitalOcean answers in time again"
        return None

    def sentinels(self) -> tuple[tuple[str, int], ...]:
        out = []
        for d in self._droplets():
            if d.get("status") == "active":
                out.append((str(d["address"]), sb.SENTINEL_PORT))
        return tuple(out)

    def droplet_names(self) -> list[str]:
        """Names of the local DigitalOcean's droplets (for the no-duplicate invariant)."""
        return [str(d["name"]) for d in self._droplets() if d.get("status") in ("new", "active", "off")]


def drill_target(args: argparse.Namespace) -> tuple[FaultTarget, Endpoints]:
    root = Path(args.sandbox).resolve()
    try:
        netns.enter(root)  # a sandbox in its own namespace is drilled from inside it
    except netns.NetnsError as e:
        raise DrillUsageError(str(e)) from None
    st = sb.status(root)
    if not st["up"]:
        raise DrillUsageError(f"the sandbox in {args.sandbox} is down (`redwarden sandbox up --dir {args.sandbox}`)")
    if st["cluster"] != args.cluster:
        raise DrillUsageError(f"the sandbox in {args.sandbox} runs cluster {st['cluster']!r}, not {args.cluster!r}")
    target = SandboxTarget(root)
    url = args.controller or str(st["controller_url"])
    return target, Endpoints(url, args.cluster, str(st["master_name"]), str(st["redis_password"]), target.sentinels,
                             token=st.get("admin_token"), ca_cert=st.get("controller_ca_cert"),
                             redis_username=st.get("redis_username"))

