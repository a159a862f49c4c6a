"""What the incident tracker hands to notifiers: one trigger or resolve of one incident.

Layer: data. Frozen, serialisable, with no secret in it: where it goes (webhook URLs, routing keys) is
the notifiers' business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

EvidenceValue = str | int | float | bool | None

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


@dataclass(frozen=True, slots=True)
class AlertEvent:
    event_id: str  # unique per event: the outbox's idempotency key
    action: Literal["trigger", "resolve"]
    incident_key: str  # stable per incident (a finding's key): PagerDuty's dedup_key
    cluster: str
    code: str  # a finding code, e.g. "REPLICA_DOWN"
    severity: str  # "info" | "warning" | "critical"
    subject: str  # e.g. "node redis-2"
    summary: str  # one sentence with the evidence
    evidence: tuple[tuple[str, EvidenceValue], ...]
    opened_at: float  # Unix seconds
    at: float  # when this trigger/resolve happened (Unix seconds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "action": self.action,
            "incident_key": self.incident_key,
            "cluster": self.cluster,
            "code": self.code,
            "severity": self.severity,
            "subject": self.subject,
            "summary": self.summary,
            "evidence": dict(self.evidence),
            "opened_at": self.opened_at,
            "at": self.at,
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> AlertEvent:
        action = d["action"]
        if action not in ("trigger", "resolve"):
            raise ValueError(f"action must be trigger or resolve, not {action!r}")
        return AlertEvent(
            event_id=str(d["event_id"]),
            action=action,
            incident_key=str(d["incident_key"]),
            cluster=str(d["cluster"]),
            code=str(d["code"]),
            severity=str(d["severity"]),
            subject=str(d["subject"]),
            summary=str(d["summary"]),
            evidence=tuple(sorted(dict(d.get("evidence") or {}).items())),
            opened_at=float(d["opened_at"]),
            at=float(d["at"]),
        )
