"""`redwarden drill --sandbox DIR`: the fault target and endpoints of a sandbox, for the console's drill.

Layer: sandbox (on top of everything). Faults are signals to the sandbox's processes, and destroyed
droplets go through its local DigitalOcean with the production adapter (pydo).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from console.cluster import NodeSnap
from console.drill.model import DrillUsageError
from console.drill.targets import Endpoints, FaultTarget, destroy_node
from controller.adapters.cloud import PydoCloud
from sandbox import cluster as sb


class SandboxTarget:
    """Faults on a sandbox: signals to its processes, droplets destroyed through its local DigitalOcean."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.label = f"sandbox {self.root}"

    def _status(self) -> dict[str, object]:
        return sb.status(self.root)

    def inject(self, fault: str, node: NodeSnap) -> str:
        if fault == "kill-master":
            sb.fault(self.root, node.name, "redis", "kill")
            return f"SIGKILL redis-server on {node.name}"
        if fault == "stop-master":
            sb.fault(self.root, node.name, "redis", "freeze")
            return f"SIGSTOP redis-server on {node.name} (thawed once a new master is seen)"
        st = self._status()
        droplet_id = node.droplet_id
        if droplet_id is None:
            rows = st.get("droplets")
            for d in rows if isinstance(rows, list) else []:
                if isinstance(d, dict) and d.get("name") == node.name and isinstance(d.get("id"), int):
                    droplet_id = d["id"]
        cloud = PydoCloud(str(st["do_token"]), str(st["do_api_url"]), ca_path=str(st["do_ca_cert"]))
        return destroy_node(cloud, node, droplet_id)

    def undo(self, fault: str, node: NodeSnap) -> str | None:
        if fault != "stop-master":
            return None
        try:
            sb.fault(self.root, node.name, "redis", "thaw")
        except sb.SandboxError as e:  # restarted by its agent meanwhile: nothing left frozen
            return f"thaw of {node.name}'s redis-server skipped: {e}"
        return f"SIGCONT redis-server on {node.name}"

    def sentinels(self) -> tuple[tuple[str, int], ...]:
        rows = self._status().get("droplets")
        out = []
        for d in rows if isinstance(rows, list) else []:
            if isinstance(d, dict) and d.get("status") == "active" and isinstance(d.get("address"), str):
                out.append((str(d["address"]), sb.SENTINEL_PORT))
        return tuple(out)




def drill_target(args: argparse.Namespace) -> tuple[FaultTarget, Endpoints]:
    st = sb.status(Path(args.sandbox))
    if not st["up"]:
        raise DrillUsageError(f"the sandbox in {args.sandbox} is down (`redwarden sandbox up --dir {args.sandbox}`)")
    if st["cluster"] != args.cluster:
        raise DrillUsageError(f"the sandbox in {args.sandbox} runs cluster {st['cluster']!r}, not {args.cluster!r}")
    target = SandboxTarget(Path(args.sandbox))
    url = args.controller or str(st["controller_url"])
    return target, Endpoints(url, args.cluster, str(st["master_name"]), str(st["redis_password"]), target.sentinels,
                             token=st.get("admin_token"), ca_cert=st.get("controller_ca_cert"))
