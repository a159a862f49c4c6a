"""What a drill talks about: the names of its steps and faults, write outcomes, its errors, the controller's
incidents and actions as snapshots, and which node a fault hits.

Layer: the drill's pure core. `parse_incidents` and `parse_actions` are the wire boundary for GET
/v1/incidents and /v1/actions (the cluster itself is `console.cluster.ClusterSnap`); what cannot be read
there is a `ControllerError`, like any other unusable answer of the controller.
"""

from __future__ import annotations

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

Fault = Literal["kill-master", "stop-master", "destroy-replica", "destroy-master"]
FAULTS: tuple[Fault, ...] = ("kill-master", "stop-master", "destroy-replica", "destroy-master")
MASTER_FAULTS = frozenset({"kill-master", "stop-master", "destroy-master"})
DESTROY_FAULTS = frozenset({"destroy-replica", "destroy-master"})
REMOTE_FAULTS = DESTROY_FAULTS  # what a drill can do to a real cluster: through DigitalOcean only

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


def parse_incidents(data: object) -> tuple[IncidentSnap, ...]:
    out = []
    for raw in as_list(as_object(data, "the incidents").get("incidents")):
        i = as_object(raw, "an incident")
        out.append(IncidentSnap(str_at(i, "code") or "?", str_at(i, "severity") or "?", float_at(i, "first_seen_at"),
                                float_at(i, "opened_at")))
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


def pick_victim(snap: ClusterSnap, fault: str) -> NodeSnap:
    """The master for *-master faults; the first replica by name for destroy-replica."""
    if fault in MASTER_FAULTS:
        node = snap.node_at(snap.master)
        if node is None:
            raise DrillError(f"no node has the master's address {snap.master}")
        return node
    replicas = [n for n in snap.nodes if n.role == "replica"]
    if not replicas:
        raise DrillError("the cluster has no replica to destroy")
    return replicas[0]
