"""`redwarden cluster create` (client side): provision a new cluster through the controller, and wait,
with progress, until it is healthy. Also the health wait the sandbox uses.

Layer: console (a client of the controller's API, through `console.client`). The controller holds the
DigitalOcean token and creates the droplets; this side decides the order: the first droplet bootstraps as
master, the others join it as replicas once it reports.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import requests

from console.client import ControllerClient, ControllerError


class ProvisionError(Exception):
    """The cluster could not be created or did not become healthy; the message says what is missing."""


def healthy_problem(cluster: dict[str, Any], nodes: int) -> str | None:
    """None when the cluster is healthy with `nodes` nodes, else what is still missing."""
    live = [n for n in cluster["nodes"] if not n.get("stale")]
    if len(live) < nodes:
        return f"{len(live)}/{nodes} agents reporting"
    if cluster["master"] is None:
        return "no agreed master yet"
    if not all(n["redis_up"] and n["sentinel_up"] for n in live):
        return "not every redis and sentinel is up"
    replicas = [n for n in live if n["role"] == "replica"]
    if len(replicas) != nodes - 1 or any(n["link"] != "up" for n in replicas):
        return "replicas still syncing"
    s = cluster["sentinels"]
    if s["reachable"] != nodes or not s["agree"]:
        return f"sentinels {s['reachable']}/{nodes} reachable, agree={s['agree']}"
    others = nodes - 1
    if any(n["sentinel_known_sentinels"] != others or n["sentinel_known_replicas"] != others for n in live):
        return "sentinels still discovering each other"
    return None


def wait_healthy(fetch: Callable[[], dict[str, Any]], nodes: int, timeout_s: float,
                 progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    problem, said = "controller not answering", ""
    while time.monotonic() < deadline:
        try:
            cluster = fetch()
            found = healthy_problem(cluster, nodes)
            if found is None:
                return cluster
            problem = found
        except (requests.RequestException, ValueError, KeyError, ControllerError, ProvisionError):
            problem = "controller not answering"
        if problem != said:
            progress(f"waiting: {problem}")
            said = problem
        time.sleep(0.2)
    raise ProvisionError(f"cluster not healthy after {timeout_s:.0f} s: {problem}")


def create_cluster(client: ControllerClient, name: str, nodes: int, prefix: str = "redis", timeout_s: float = 600.0,
                   progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    existing = [n for n in client.cluster(name)["nodes"] if not n.get("stale")]
    if existing:
        raise ProvisionError(f"cluster {name} already has {len(existing)} reporting node(s): nothing to create")
    first = f"{prefix}-1"
    droplet = client.create_node(name, first, [], firewall=True)
    progress(f"droplet {first} ({droplet['id']}) created: it bootstraps as master")
    deadline = time.monotonic() + timeout_s

    def first_up() -> str | None:
        for n in client.cluster(name)["nodes"]:
            if n["name"] == first and n["redis_up"] and n["sentinel_up"] and n["role"] == "master":
                return str(n["address"])
        return None

    address = None
    while address is None:
        if time.monotonic() > deadline:
            raise ProvisionError(f"{first} did not report as master within {timeout_s:.0f} s")
        try:
            address = first_up()
        except (requests.RequestException, ControllerError, ProvisionError):
            address = None
        if address is None:
            time.sleep(0.2)
    sentinel = address.rsplit(":", 1)[0] + ":26379"
    progress(f"{first} is master at {address}")
    for i in range(2, nodes + 1):
        d = client.create_node(name, f"{prefix}-{i}", [sentinel])
        progress(f"droplet {prefix}-{i} ({d['id']}) created: it joins {address} as a replica")
    return wait_healthy(lambda: client.cluster(name), nodes, max(1.0, deadline - time.monotonic()), progress)
