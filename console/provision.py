"""`redwarden cluster create` (client side): provision a new cluster through the controller, and wait,
with progress, until it is healthy (the sandbox's `up` creates its cluster with it too).

Layer: console (a client of the controller's API, through `console.client`). The controller holds the
DigitalOcean token and creates the droplets; this side decides the order: the first droplet bootstraps as
master, the others join it as replicas once it reports. "Healthy" is `console.cluster.redundancy_problem`,
the predicate `redwarden drill` waits on too, minus what a brand-new cluster may never show (see there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from console.client import ControllerClient as ControllerClient  # re-exported: `sandbox up` takes it from here
from console.client import ControllerError
from console.cluster import Clock, ClusterNotHealthy, ClusterSnap, parse_cluster, redundancy_problem, wait_healthy


class ProvisionError(Exception):
    """The cluster could not be created or did not become healthy; the message says what is missing."""


class ClusterAdmin(Protocol):
    """What creating a cluster needs of the controller (`ControllerClient` with an admin token)."""

    def cluster(self, name: str) -> dict[str, Any]: ...

    def create_node(self, cluster: str, name: str, sentinels: list[str], firewall: bool = False) -> dict[str, Any]: ...


def new_cluster_problem(snap: ClusterSnap, nodes: int) -> str | None:
    """What a freshly created cluster of `nodes` nodes still lacks, or None: the topology complete, without
    the controller's own verdict and without the nodes of an earlier cluster of that name that it still
    lists as silent (`redundancy_problem(ignore_stale=True, controller_verdict=False)`; why, see there)."""
    return redundancy_problem(snap, nodes, ignore_stale=True, controller_verdict=False)


def create_cluster(client: ClusterAdmin, name: str, nodes: int, prefix: str = "redis", timeout_s: float = 600.0,
                   progress: Callable[[str], None] = lambda _: None, clock: Clock | None = None) -> ClusterSnap:
    clock = clock or Clock()
    existing = [n for n in parse_cluster(client.cluster(name)).nodes if not n.stale]
    if existing:
        raise ProvisionError(f"cluster {name} already has {len(existing)} reporting node(s): nothing to create")
    first = f"{prefix}-1"
    droplet = client.create_node(name, first, [], firewall=True)
    progress(f"droplet {first} ({droplet['id']}) created: it bootstraps as master")
    deadline = clock.monotonic() + timeout_s

    def first_up() -> str | None:
        n = parse_cluster(client.cluster(name)).node(first)
        return n.address if n is not None and n.redis_up and n.sentinel_up and n.role == "master" else None

    address = None
    while address is None:
        if clock.monotonic() > deadline:
            raise ProvisionError(f"{first} did not report as master within {timeout_s:.0f} s")
        try:
            address = first_up()
        except ControllerError:
            address = None
        if address is None:
            clock.sleep(0.2)
    sentinel = address.rsplit(":", 1)[0] + ":26379"
    progress(f"{first} is master at {address}")
    for i in range(2, nodes + 1):
        d = client.create_node(name, f"{prefix}-{i}", [sentinel])
        progress(f"droplet {prefix}-{i} ({d['id']}) created: it joins {address} as a replica")
    try:
        return wait_healthy(lambda: parse_cluster(client.cluster(name)), lambda snap: new_cluster_problem(snap, nodes),
                            max(1.0, deadline - clock.monotonic()), clock=clock, progress=progress)
    except ClusterNotHealthy as e:
        raise ProvisionError(f"cluster not healthy after {e.timeout_s:.0f} s: {e.problem}") from None
