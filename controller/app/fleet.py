"""The fleet as the controller sees it: each cluster's view from the latest reports, its latest findings,
and the status document of the API's contract.

Layer: app. Written by the watch loop (`set_findings`), read by the API (`status`); the views themselves
are the core's (`ClusterView`), built from the report store and the cluster's settings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from controller.adapters.storage.reports import ReportStore
from controller.config import ClusterConfig
from controller.core.checks import check, cluster_health
from controller.core.findings import Finding
from controller.core.policy import Policy
from controller.core.view import ClusterView, cluster_status

HealStatus = Callable[[str], dict[str, Any]]


class Fleet:
    def __init__(self, clusters: Mapping[str, ClusterConfig], reports: ReportStore, policy: Policy | None = None,
                 heal_status: HealStatus | None = None) -> None:
        self.clusters = clusters
        self.reports = reports
        self.policy = policy or Policy()
        self.heal_status = heal_status  # the healer's status, when healing runs
        # written by the watch loop; read by the API (a dict assignment is atomic under the GIL)
        self._findings: dict[str, tuple[Finding, ...]] = {}

    def names(self) -> list[str]:
        return sorted(self.clusters)

    def view(self, cluster: str, now: float) -> ClusterView:
        cfg = self.clusters[cluster]
        return ClusterView(
            name=cluster,
            master_name=cfg.master_name,
            expected_nodes=cfg.expected_nodes,
            report_interval_s=cfg.report_interval_s,
            stale_after_s=cfg.stale_after_s,
            now=now,
            nodes=self.reports.nodes(cluster),
        )

    def policy_for(self, cluster: str) -> Policy:
        """The policy, with the cluster's own idea of silence (one setting, not two that could differ)."""
        cfg = self.clusters[cluster]
        return dataclasses.replace(self.policy, agent_silent_intervals=float(cfg.stale_after_intervals))

    def sentinel_addresses(self, cluster: str, now: float) -> set[str]:
        """The "ip:port" of the Sentinels of the cluster's own live (fresh) nodes."""
        view = self.view(cluster, now)
        return {n.report.identity.sentinel_address for n in view.fresh_nodes()}

    def set_findings(self, cluster: str, findings: tuple[Finding, ...]) -> None:
        self._findings[cluster] = findings

    def status(self, cluster: str, now: float) -> dict[str, Any]:
        """A cluster in the status contract, with its health and the findings of the last cycle."""
        view = self.view(cluster, now)
        findings = self._findings.get(cluster)
        if findings is None:  # no cycle has run yet
            findings = check(view, self.policy_for(cluster), now)
        out = cluster_status(view)
        out["health"] = cluster_health(findings)
        if self.heal_status is not None:
            out["heal"] = self.heal_status(cluster)
        out["findings"] = [
            {"code": str(f.code), "severity": str(f.severity), "subject": f.subject, "message": f.message,
             "key": f.key}
            for f in findings
        ]
        return out
