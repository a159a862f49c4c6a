"""One cluster as the controller shows it (GET /v1/clusters/{name}), as typed snapshots, and the console's one
answer to "is it healthy yet?": a predicate that names the first problem, and a wait built on it.

Layer: console, pure core. `parse_cluster` is the wire boundary: the status contract's JSON becomes small
frozen snapshots, and what cannot be read becomes a `ControllerError` (the controller's answer is unusable).
`redundancy_problem` and its parts take a snapshot and return a sentence a person can read, or None. The
wait (`wait_healthy`) is the one loop: its fetch and its clock are injected, so it runs as well over a
scripted controller and a fake clock as over HTTP. Used by `redwarden cluster create` (and so `redwarden
sandbox up`) and by `redwarden drill`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from console.client import ControllerError, ControllerNotFound

# -- the wire boundary ----------------------------------------------------------------------------------


def as_object(data: object, what: str) -> Mapping[str, object]:
    """`data` as a JSON object, or a `ControllerError` naming what it should have been."""
    if not isinstance(data, dict):
        raise ControllerError(f"the controller sent something unexpected for {what}: not an object")
    return data


def as_list(data: object) -> list[object]:
    """`data` as a JSON array; anything else reads as empty."""
    return data if isinstance(data, list) else []


def str_at(data: Mapping[str, object], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


def float_at(data: Mapping[str, object], key: str) -> float | None:
    value = data.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def int_at(data: Mapping[str, object], key: str) -> int | None:
    value = data.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class NodeSnap:
    name: str
    address: str
    role: str | None
    redis_up: bool
    sentinel_up: bool
    stale: bool  # its agent has gone silent: the rest of the row is old news
    link: str | None
    master_of_replica: str | None
    droplet_id: int | None
    sentinel_known_sentinels: int | None = None  # how many other Sentinels its Sentinel knows
    sentinel_known_replicas: int | None = None  # how many replicas its Sentinel knows
    sentinel_address: str | None = None  # its Sentinel's "ip:port"


@dataclass(frozen=True, slots=True)
class FindingSnap:
    key: str  # stable across cycles: the same finding keeps its key
    code: str
    severity: str  # "info", "warning" or "critical"


@dataclass(frozen=True, slots=True)
class ClusterSnap:
    """One GET /v1/clusters/{name}, reduced to what the console looks at."""

    master: str | None
    health: str
    nodes: tuple[NodeSnap, ...]
    sentinels_expected: int
    sentinels_reachable: int
    sentinels_agree: bool
    votes: tuple[tuple[str, int], ...]
    findings: tuple[FindingSnap, ...]
    healing_in_flight: bool  # a reprovision or a Sentinel reset sequence is running
    held: tuple[tuple[str, str], ...] = ()  # (what, reason) the healer holds back this cycle
    heal_enabled: bool | None = None
    budget_left: int | None = None  # None: no budget reported, or acknowledged (unlimited today)
    # the Sentinels' "ip:port" in the order the controller walks them (empty from a controller that does not
    # say): its fast failover asks the last reachable one that is not the master's
    sentinel_order: tuple[str, ...] = ()

    def node(self, name: str) -> NodeSnap | None:
        return next((n for n in self.nodes if n.name == name), None)

    def node_at(self, address: str | None) -> NodeSnap | None:
        return next((n for n in self.nodes if n.address == address), None)


def parse_cluster(data: object) -> ClusterSnap:
    d = as_object(data, "the cluster")
    nodes = []
    for raw in as_list(d.get("nodes")):
        n = as_object(raw, "a node")
        nodes.append(NodeSnap(
            name=str_at(n, "name") or "?",
            address=str_at(n, "address") or "?",
            role=str_at(n, "role"),
            redis_up=n.get("redis_up") is True,
            sentinel_up=n.get("sentinel_up") is True,
            stale=n.get("stale") is True,
            link=str_at(n, "link"),
            master_of_replica=str_at(n, "master_of_replica"),
            droplet_id=int_at(n, "droplet_id"),
            sentinel_known_sentinels=int_at(n, "sentinel_known_sentinels"),
            sentinel_known_replicas=int_at(n, "sentinel_known_replicas"),
            sentinel_address=str_at(n, "sentinel_address"),
        ))
    sentinels = as_object(d.get("sentinels", {}), "the sentinels")
    votes = as_object(sentinels.get("votes", {}), "the votes")
    findings = tuple(FindingSnap(str_at(f, "key") or "?", str_at(f, "code") or "?", str_at(f, "severity") or "?")
                     for f in (as_object(x, "a finding") for x in as_list(d.get("findings"))))
    heal = d.get("heal")
    in_flight, enabled, left = False, None, None
    held: tuple[tuple[str, str], ...] = ()
    if isinstance(heal, dict):
        in_flight = heal.get("reprovision") is not None or heal.get("sentinel_reset") is not None
        held = tuple((str_at(h, "what") or "?", str_at(h, "reason") or "?")
                     for h in (as_object(x, "a held action") for x in as_list(heal.get("held"))))
        enabled = heal.get("enabled") is True and heal.get("dry_run") is not True
        budget = heal.get("budget")
        if isinstance(budget, dict) and budget.get("acked") is not True:
            per_day, used = int_at(budget, "per_day"), int_at(budget, "used_today")
            left = per_day - used if per_day is not None and used is not None else None
    return ClusterSnap(
        master=str_at(d, "master"),
        health=str_at(d, "health") or "unknown",
        nodes=tuple(sorted(nodes, key=lambda n: n.name)),
        sentinels_expected=int_at(sentinels, "expected") or 0,
        sentinels_reachable=int_at(sentinels, "reachable") or 0,
        sentinels_agree=sentinels.get("agree") is True,
        votes=tuple(sorted((k, v) for k, v in votes.items() if isinstance(v, int))),
        findings=findings,
        healing_in_flight=in_flight,
        held=held,
        heal_enabled=enabled,
        budget_left=left,
        sentinel_order=tuple(a for a in as_list(sentinels.get("order")) if isinstance(a, str)),
    )


# -- the predicate: the first problem, or None ------------------------------------------------------------


def replica_problem(snap: ClusterSnap, name: str) -> str | None:
    """None when `name` reports role replica with its link up, replicating the current master."""
    n = snap.node(name)
    if n is None:
        return f"{name} is not listed"
    if n.stale:
        return f"{name}'s agent is silent"
    if not n.redis_up:
        return f"{name}'s redis is down"
    if n.role != "replica":
        return f"{name} reports role {n.role or 'unknown'}, not replica"
    if snap.master is None:
        return "no agreed master yet"
    if n.master_of_replica != snap.master:
        return f"{name} replicates {n.master_of_replica or 'nothing'}, not the master {snap.master}"
    if n.link != "up":
        return f"{name} still syncing (link {n.link or 'unknown'})"
    return None


def sentinels_problem(snap: ClusterSnap, nodes: int, *, controller_verdict: bool = True) -> str | None:
    """None when `nodes` Sentinels are reachable and every one of them names the current master (and, with
    `controller_verdict`, the controller expects exactly `nodes` Sentinels: see `redundancy_problem`)."""
    if snap.master is None:
        return "no agreed master yet"
    if snap.sentinels_reachable != nodes:
        return f"{snap.sentinels_reachable}/{nodes} Sentinels reachable"
    if not snap.sentinels_agree:
        return "the Sentinels do not agree on the master"
    if controller_verdict and snap.sentinels_expected != nodes:
        return f"the controller expects {snap.sentinels_expected} Sentinels, not {nodes}"
    if dict(snap.votes) != {snap.master: nodes}:
        named = ", ".join(f"{address} by {count}" for address, count in snap.votes) or "nothing"
        return f"the Sentinels name {named}, not {snap.master} by all {nodes}"
    return None


def _down(n: NodeSnap) -> str:
    if n.stale:
        return f"{n.name} silent"
    services = [service for service, up in (("redis", n.redis_up), ("sentinel", n.sentinel_up)) if not up]
    return f"{n.name} {' and '.join(services)} down"


def redundancy_problem(snap: ClusterSnap, nodes: int, *, ignore_stale: bool = False,
                       controller_verdict: bool = True) -> str | None:
    """Whether the cluster is fully redundant with `nodes` nodes: None, or the first thing still missing, as a
    sentence for a person. Checked in this order (the order a cluster comes together in):

    1. as many nodes as expected;  2. a master the Sentinels agree on;  3. every redis and Sentinel up,
    every agent reporting;  4. exactly one node reporting role master, the agreed one;  5. every other
    node a replica of it with its link up;  6. every Sentinel reachable, all naming that master;
    7. every Sentinel knowing the others and every replica (nodes - 1 of each);  8. with
    `controller_verdict`: no reprovision or Sentinel reset in flight, and health "healthy".

    The two parameters are what `redwarden cluster create` needs on a brand-new real cluster, where some
    things never become true (`redwarden drill` leaves both at their defaults: it starts from, and waits
    for, a cluster the controller itself calls healthy):
    - `ignore_stale`: leave out nodes whose agent is silent. A new cluster may take the name of an old one
      whose nodes the controller still lists; they never report again (the create refused to start if
      one was still reporting). The drill counts them: a destroyed node still listed is no redundancy.
    - `controller_verdict=False`: skip what depends on the controller's own judgement rather than on the
      topology: its health (a warning that outlives the build, such as CONFIG_RISK from a droplet's
      settings, DISK_PRESSURE on a small disk, or AGENT_SILENT about a leftover, would keep the create
      waiting for ever; info findings never count, they leave health "healthy"), its expected Sentinel
      count (its configured `expected_nodes`, which need not be `--nodes`), and healing in flight (about
      a leftover, it may not end while the create waits).
    """
    listed = [n for n in snap.nodes if not (ignore_stale and n.stale)]
    if len(listed) < nodes:
        return f"{len(listed)}/{nodes} agents reporting" if ignore_stale else f"{len(listed)}/{nodes} nodes listed"
    if len(listed) > nodes:
        return f"{len(listed)} nodes listed, {nodes} expected"
    if snap.master is None:
        return "no agreed master yet"
    down = [_down(n) for n in listed if n.stale or not (n.redis_up and n.sentinel_up)]
    if down:
        return f"not every redis and sentinel is up ({', '.join(down)})"
    masters = [n for n in listed if n.role == "master"]
    if len(masters) != 1:
        return f"{len(masters)} nodes report role master" if masters else "no node reports role master yet"
    if masters[0].address != snap.master:
        return f"{masters[0].name} reports role master at {masters[0].address}, the Sentinels name {snap.master}"
    for n in listed:
        problem = None if n is masters[0] else replica_problem(snap, n.name)
        if problem is not None:
            return problem
    problem = sentinels_problem(snap, nodes, controller_verdict=controller_verdict)
    if problem is not None:
        return problem
    others = nodes - 1
    unsettled = [n.name for n in listed
                 if n.sentinel_known_sentinels != others or n.sentinel_known_replicas != others]
    if unsettled:
        return (f"sentinels still discovering each other ({', '.join(unsettled)} not yet knowing {others} "
                f"other Sentinels and {others} replicas)")
    if controller_verdict and snap.healing_in_flight:
        return "the controller is healing it (a reprovision or a Sentinel reset sequence is running)"
    if controller_verdict and snap.health != "healthy":
        codes = sorted({f.code for f in snap.findings if f.severity != "info"})
        return f"health {snap.health}" + (f" ({', '.join(codes)})" if codes else "")
    return None


# -- the wait ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Clock:
    """Injectable clocks: `now` for timestamps (Unix seconds, comparable with the controller's),
    `monotonic` for deadlines, `sleep` between polls."""

    now: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


class ClusterNotHealthy(Exception):
    """The wait ran out: `problem` is the last thing missing, `last` the last snapshot (None: no answer)."""

    def __init__(self, timeout_s: float, problem: str, last: ClusterSnap | None) -> None:
        super().__init__(f"not healthy after {timeout_s:.0f} s: {problem}")
        self.timeout_s = timeout_s
        self.problem = problem
        self.last = last


def _quiet(_: str) -> None:
    pass


def wait_healthy(fetch: Callable[[], ClusterSnap], problem: Callable[[ClusterSnap], str | None], timeout_s: float,
                 *, settle_s: float = 0.0, clock: Clock | None = None, progress: Callable[[str], None] = _quiet,
                 poll_s: float = 0.2) -> ClusterSnap:
    """Poll `fetch` until `problem` finds nothing and that has held for `settle_s`; the snapshot then.

    Each new problem is said once through `progress` ("waiting: ..."). A fetch that fails with a
    `ControllerError` is a gap (its message is the problem for that poll); a `ControllerNotFound` (no such
    cluster) is the caller's mistake and propagates. Raises `ClusterNotHealthy` after `timeout_s`."""
    clock = clock or Clock()
    deadline = clock.monotonic() + timeout_s
    since: float | None = None
    last: ClusterSnap | None = None
    found: str | None = "no answer from the controller"
    said = ""
    while clock.monotonic() < deadline:
        try:
            last = fetch()
            found = problem(last)
        except ControllerNotFound:
            raise
        except ControllerError as e:
            last, found = None, str(e)
        if found is None and last is not None:
            since = since if since is not None else clock.monotonic()
            if clock.monotonic() - since >= settle_s:
                return last
        else:
            since = None
            if found is not None and found != said:
                progress(f"waiting: {found}")
                said = found
        clock.sleep(poll_s)
    raise ClusterNotHealthy(timeout_s, found or f"healthy for less than {settle_s:.0f} s", last)
