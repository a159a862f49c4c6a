"""What a drill talks about: the names of its steps and faults, write outcomes, its errors, the controller's
incidents and actions as snapshots, and which node a fault hits.

Layer: the drill's pure core. `parse_incidents` and `parse_actions` are the wire boundary for GET
/v1/incidents and /v1/actions (the cluster itself is `console.cluster.ClusterSnap`); what cannot be read
there is a `ControllerError`, like any other unusable answer of the controller.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from console.cluster import ClusterSnap, NodeSnap, as_list, as_object, float_at, int_at, str_at

# -- the vocabulary --------------------------------------------------------------------------------

FAULT = "fault"
FIRST_FINDING = "first_finding"
ALERT_SENT = "alert_sent"
NEW_MASTER = "new_master"
WRITES_ACCEPTED = "writes_accepted"
REPLACEMENT_CREATED = "replacement_created"
REPLICA_IN_SYNC = "replica_in_sync"
SENTINELS_AGREE = "sentinels_agree"
REDUNDANCY_RESTORED = "redundancy_restored"
STEPS = (FAULT, FIRST_FINDING, ALERT_SENT, NEW_MASTER, WRITES_ACCEPTED, REPLACEMENT_CREATED, REPLICA_IN_SYNC,
         SENTINELS_AGREE, REDUNDANCY_RESTORED)

Fault = Literal["kill-master", "stop-master", "destroy-replica", "destroy-master", "kill-agent", "partition-master",
                "partition-replica", "isolate-controller", "blind-controller", "restart-sentinels", "empty-master",
                "disk-full", "cloud-timeouts"]
FAULTS: tuple[Fault, ...] = ("kill-master", "stop-master", "destroy-replica", "destroy-master", "kill-agent",
                             "partition-master", "partition-replica", "isolate-controller", "blind-controller",
                             "restart-sentinels", "empty-master", "disk-full", "cloud-timeouts")
MASTER_FAULTS = frozenset({"kill-master", "stop-master", "destroy-master", "partition-master", "empty-master",
                           "disk-full"})
FAILOVER_FAULTS = frozenset({"kill-master", "stop-master", "destroy-master", "partition-master", "empty-master"})
DESTROY_FAULTS = frozenset({"destroy-replica", "destroy-master", "cloud-timeouts"})  # a replacement is expected
REMOTE_FAULTS = frozenset({"destroy-replica", "destroy-master"})  # on a real cluster: through DigitalOcean only
NETWORK_FAULTS = frozenset({"partition-master", "partition-replica", "isolate-controller", "blind-controller"})
WHOLE_CLUSTER_FAULTS = frozenset({"blind-controller", "restart-sentinels"})  # no one victim
ANY_NODE_FAULTS = frozenset({"kill-agent", "isolate-controller"})  # the master or a replica
CRASH_FAULTS = frozenset({"kill-master", "stop-master", "destroy-replica", "destroy-master", "kill-agent",
                          "restart-sentinels", "empty-master", "disk-full", "cloud-timeouts"})
# faults that last a while and are then undone (the network mends, the agent is restarted, the disk has
# room again, the cloud answers in time): a partitioned master is kept apart until a new master is seen.
# Restarted Sentinels have nothing to undo, but may break nothing the controller shows either: the drill
# watches them for as long before it calls the cluster recovered.
TIMED_FAULTS = frozenset({"kill-agent", "partition-master", "partition-replica", "isolate-controller",
                          "blind-controller", "disk-full", "cloud-timeouts", "restart-sentinels"})
CAMPAIGN_FAULTS: tuple[Fault, ...] = ("kill-agent", "partition-master", "partition-replica", "isolate-controller",
                                      "blind-controller", "restart-sentinels", "empty-master", "disk-full",
                                      "cloud-timeouts", "kill-master", "destroy-replica")

Outcome = Literal["acked", "plain", "failed"]  # WAIT saw >= 1 replica; SET ok but no replica; refused or error


class DrillError(RuntimeError):
    """The drill could not run or finish; the message says what to do."""


class DrillUsageError(DrillError):
    """Wrong or missing options (exit code 2)."""


# -- the controller's history, as snapshots ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IncidentSnap:
    code: str
    severity: str
    first_seen_at: float | None
    opened_at: float | None
    key: str = ""  # the finding's stable key (code and subject)
    resolved_at: float | None = None


def parse_incidents(data: object) -> tuple[IncidentSnap, ...]:
    out = []
    for raw in as_list(as_object(data, "the incidents").get("incidents")):
        i = as_object(raw, "an incident")
        out.append(IncidentSnap(str_at(i, "code") or "?", str_at(i, "severity") or "?", float_at(i, "first_seen_at"),
                                float_at(i, "opened_at"), str_at(i, "key") or "", float_at(i, "resolved_at")))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class ActionSnap:
    id: int
    kind: str
    description: str
    status: str
    detail: str | None
    started_at: float
    finished_at: float | None
    node: str | None = None  # the node acted on (a failover: whose Sentinel was asked)


def parse_actions(data: object) -> tuple[ActionSnap, ...]:
    out = []
    for raw in as_list(as_object(data, "the actions").get("actions")):
        a = as_object(raw, "an action")
        started = float_at(a, "started_at")
        if started is None:
            continue
        out.append(ActionSnap(int_at(a, "id") or 0, str_at(a, "kind") or "?", str_at(a, "description") or "?",
                              str_at(a, "status") or "?", str_at(a, "detail"), started, float_at(a, "finished_at"),
                              str_at(a, "node")))
    return tuple(out)


# -- the victim -------------------------------------------------------------------------------------


def undo_due(fault: str, injected_at: float, now: float, new_master_at: float | None, hold_s: float) -> bool:
    """Whether a timed fault is over: after `hold_s`; a partitioned master stays apart until a new master
    has been seen as well (or three times as long)."""
    if fault not in TIMED_FAULTS:
        return False
    held = now - injected_at
    if fault == "partition-master":
        return held >= 3 * hold_s or (held >= hold_s and new_master_at is not None)
    return held >= hold_s


def pick_victim(snap: ClusterSnap, fault: str, choose: Callable[[Sequence[NodeSnap]], NodeSnap] | None = None
                ) -> NodeSnap:
    """The master for master faults (and for whole-cluster ones, to name someone); a replica for the others,
    and either for kill-agent and isolate-controller. `choose` picks among the candidates (a campaign's
    seeded choice); by default the first by name."""
    pick = choose or (lambda nodes: nodes[0])
    if fault in ANY_NODE_FAULTS:
        return pick(sorted(snap.nodes, key=lambda n: n.name))
    if fault in MASTER_FAULTS or fault in WHOLE_CLUSTER_FAULTS:
        node = snap.node_at(snap.master)
        if node is None:
            raise DrillError(f"no node has the master's address {snap.master}")
        return node
    replicas = sorted((n for n in snap.nodes if n.role == "replica"), key=lambda n: n.name)
    if not replicas:
        raise DrillError(f"the cluster has no replica for {fault}")
    return pick(replicas)
