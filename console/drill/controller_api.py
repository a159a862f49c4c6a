"""The controller's HTTP API as a drill reads it, for one cluster: a `ClusterSource`.

Layer: the drill's adapters, over `console.client.ControllerClient` (the one client of the controller).
Errors are the client's: `ControllerNotFound` for a wrong cluster name (the caller's mistake), a
`ControllerError` for anything else that makes an answer unusable; the run decides which is fatal.
"""

from __future__ import annotations

from typing import Protocol

import requests

from console.client import ControllerClient
from console.cluster import ClusterSnap, parse_cluster
from console.drill.model import ActionSnap, IncidentSnap, parse_actions, parse_incidents


class ClusterSource(Protocol):
    """What a drill reads from the controller, for one cluster. Raises `ControllerError` when the
    controller cannot answer (`ControllerNotFound`: no such cluster)."""

    def cluster(self) -> ClusterSnap: ...

    def incidents(self) -> tuple[IncidentSnap, ...]: ...

    def actions(self) -> tuple[ActionSnap, ...]: ...


class ControllerApi:
    """GET-only view of the controller's API for one cluster (a `ClusterSource`), over `ControllerClient`."""

    def __init__(self, base_url: str, cluster: str, timeout_s: float = 2.0,
                 session: requests.Session | None = None, token: str | None = None,
                 ca_cert: str | None = None) -> None:
        self.client = ControllerClient(base_url, token=token, timeout_s=timeout_s, session=session, ca_cert=ca_cert)
        self.base_url = self.client.url
        self.cluster_name = cluster

    def cluster(self) -> ClusterSnap:
        return parse_cluster(self.client.cluster(self.cluster_name))

    def incidents(self) -> tuple[IncidentSnap, ...]:
        return parse_incidents(self.client.incidents(self.cluster_name, limit=50))

    def actions(self) -> tuple[ActionSnap, ...]:
        return parse_actions(self.client.actions(self.cluster_name, limit=50))
