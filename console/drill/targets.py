"""Where a drill acts: the endpoints of a cluster, the `FaultTarget` seam, and the target for a real
cluster (`CloudTarget`: destroying droplets through DigitalOcean is all a drill can do to one).

Layer: the drill's adapters. The sandbox's target (signals to local processes) is `sandbox.drill_target`,
found through the CLI plugin (`console.plugins`); both share `destroy_node`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from console.cluster import NodeSnap
from console.drill.model import REMOTE_FAULTS, DrillError, DrillUsageError

if TYPE_CHECKING:
    from controller.adapters.cloud import Cloud


@dataclass(frozen=True, slots=True)
class Endpoints:
    controller_url: str
    cluster: str
    master_name: str
    redis_password: str | None
    sentinels: Callable[[], tuple[tuple[str, int], ...]]  # asked before every run: droplets come and go
    token: str | None = None  # the operator's token for the controller's API
    ca_cert: str | None = None  # the CA of the controller's certificate
    redis_username: str | None = None  # an ACL cluster's application user ("app"); None: `default` (requirepass)


class FaultTarget(Protocol):
    label: str

    def inject(self, fault: str, node: NodeSnap) -> str:
        """Do it; a short sentence saying what was done."""
        ...

    def undo(self, fault: str, node: NodeSnap) -> str | None:
        """Undo what can be undone (a frozen redis-server is thawed); what was done, or None."""
        ...


def destroy_node(cloud: Cloud, node: NodeSnap, droplet_id: int | None) -> str:
    if droplet_id is None:
        raise DrillError(f"no droplet id is known for {node.name}: cannot destroy it")
    from controller.adapters.cloud import ProviderError

    try:
        gone = cloud.destroy_droplet(droplet_id)
    except ProviderError as e:
        raise DrillError(f"destroying droplet {droplet_id} ({node.name}) failed: {e}") from None
    return f"droplet {droplet_id} ({node.name}) destroyed through the DigitalOcean API" + ("" if gone else
                                                                                          " (it was already gone)")


class CloudTarget:
    """Faults on a real cluster: only destroying droplets, through DigitalOcean."""

    def __init__(self, cloud: Cloud, label: str) -> None:
        self.cloud = cloud
        self.label = label

    def inject(self, fault: str, node: NodeSnap) -> str:
        if fault not in REMOTE_FAULTS:
            raise DrillUsageError(f"--fault {fault} needs --sandbox: redwarden cannot signal a remote redis-server")
        return destroy_node(self.cloud, node, node.droplet_id)

    def undo(self, fault: str, node: NodeSnap) -> str | None:
        return None


TargetResolver = Callable[[argparse.Namespace], "tuple[FaultTarget, Endpoints]"]
