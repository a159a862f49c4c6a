"""What the health checks can say about a cluster: a closed set of finding codes, severities, and `Finding`.

Layer: pure core (value types only, no I/O). A `Finding` is one diagnosis of one subject (the cluster, a
node's Redis, a node's Sentinel) with a one-sentence message carrying the numbers that justify it, and a
stable `key` for alert de-duplication: the same condition on the same subject keeps the same key from one
cycle to the next, whatever the numbers in its message do.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

from controller.core.alerts import SEVERITY_RANK

EvidenceValue = str | int | float | bool | None
Evidence = tuple[tuple[str, EvidenceValue], ...]
SubjectKind = Literal["cluster", "node", "sentinel"]


class Code(str, Enum):
    """Every diagnosis the checks can make, named subject-condition-qualifier."""

    MASTER_DOWN = "MASTER_DOWN"
    MASTER_UNREACHABLE = "MASTER_UNREACHABLE"
    NO_MASTER = "NO_MASTER"
    SPLIT_BRAIN = "SPLIT_BRAIN"
    SENTINEL_DISAGREEMENT = "SENTINEL_DISAGREEMENT"
    FAILOVER_IN_PROGRESS = "FAILOVER_IN_PROGRESS"
    QUORUM_AT_RISK = "QUORUM_AT_RISK"
    QUORUM_LOST = "QUORUM_LOST"
    SENTINEL_DOWN = "SENTINEL_DOWN"
    SENTINEL_ISOLATED = "SENTINEL_ISOLATED"
    SENTINEL_STALE_ENTRIES = "SENTINEL_STALE_ENTRIES"
    SENTINEL_COUNT_MISMATCH = "SENTINEL_COUNT_MISMATCH"
    REPLICA_DOWN = "REPLICA_DOWN"
    REPLICA_LINK_DOWN = "REPLICA_LINK_DOWN"
    REPLICA_LAG_HIGH = "REPLICA_LAG_HIGH"
    REPLICA_WRONG_MASTER = "REPLICA_WRONG_MASTER"
    REDUNDANCY_DEGRADED = "REDUNDANCY_DEGRADED"
    AGENT_SILENT = "AGENT_SILENT"
    PERSISTENCE_FAILING = "PERSISTENCE_FAILING"
    MEMORY_PRESSURE = "MEMORY_PRESSURE"
    DISK_PRESSURE = "DISK_PRESSURE"
    CONFIG_RISK = "CONFIG_RISK"
    HEAL_STATE_UNREADABLE = "HEAL_STATE_UNREADABLE"  # the controller's own record, not the cluster's health
    NODE_FENCED = "NODE_FENCED"  # the controller's own action: an old master demoted after a failover

    def __str__(self) -> str:
        return self.value




class Severity(str, Enum):
    """How bad a finding is. Ordered by `rank` (the string values themselves do not sort meaningfully)."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return SEVERITY_RANK[self.value]

    def at_least(self, other: Severity) -> bool:
        return self.rank >= other.rank

    @staticmethod
    def worst(severities: tuple[Severity, ...] | list[Severity]) -> Severity | None:
        """The highest severity among `severities`, None for none."""
        return max(severities, key=lambda s: s.rank) if severities else None

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Finding:
    """One diagnosis. `qualifier` distinguishes several findings of one code on one subject (which
    CONFIG_RISK, which fact the Sentinels disagree on); it is part of `key`."""

    code: Code
    severity: Severity
    cluster: str
    subject_kind: SubjectKind
    subject_name: str  # the node's name, or the cluster's name for cluster-wide findings
    message: str
    qualifier: str = ""
    evidence: Evidence = ()

    @property
    def subject(self) -> str:
        """What the finding is about: "cluster", "node redis-2" or "sentinel redis-3"."""
        if self.subject_kind == "cluster":
            return "cluster"
        return f"{self.subject_kind} {self.subject_name}"

    @property
    def key(self) -> str:
        """Stable across cycles for the same condition on the same subject: the alert de-dup key."""
        base = f"{self.cluster}/{self.code.value}/{self.subject}"
        return f"{base}/{self.qualifier}" if self.qualifier else base

    def to_dict(self) -> dict[str, str | dict[str, EvidenceValue]]:
        """JSON-ready; `evidence` becomes a flat mapping (PagerDuty `custom_details`)."""
        return {
            "code": self.code.value,
            "severity": self.severity.value,
            "cluster": self.cluster,
            "subject": self.subject,
            "subject_kind": self.subject_kind,
            "subject_name": self.subject_name,
            "qualifier": self.qualifier,
            "key": self.key,
            "message": self.message,
            "evidence": dict(self.evidence),
        }
