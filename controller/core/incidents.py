"""Incidents: findings that held long enough to wake someone, and their end.

Layer: pure core. `track(previous, findings, policy, now)` is a function of the incidents as they were,
this cycle's findings, the policy and `now`; it returns the incidents as they are now and the alert
events to send. No I/O, no clock.

The life of an incident, per finding key:
  pending   the finding appeared; it must hold for `policy.confirm_after_s(code)` (0 = at once)
  open      confirmed: one `trigger` is sent; a worse severity later sends one more `trigger`
  clearing  the finding went away; if it stays away for `policy.clear_after_s(code)` the incident
            resolves (one `resolve`); if it comes back first, it is still the same open incident.
            This hysteresis is why a flapping link pages once, not ten times.
A pending finding that goes away before its confirmation window was never an incident.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from controller.core.alerts import SEVERITY_RANK, AlertEvent
from controller.core.findings import Code, Finding
from controller.core.policy import Policy


@dataclass(frozen=True, slots=True)
class Incident:
    key: str  # the finding's stable key
    cluster: str
    code: str
    severity: str
    subject: str
    message: str  # the latest description
    evidence: tuple[tuple[str, str | int | float | bool | None], ...]
    first_seen_at: float
    last_seen_at: float
    opened_at: float | None = None  # None while pending
    clear_since: float | None = None
    resolved_at: float | None = None
    timeline: tuple[tuple[float, str], ...] = ()

    @property
    def id(self) -> str:
        return f"{self.key}@{self.first_seen_at:.3f}"

    @property
    def status(self) -> str:
        if self.resolved_at is not None:
            return "resolved"
        if self.opened_at is None:
            return "pending"
        return "clearing" if self.clear_since is not None else "open"

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "key": self.key,
            "cluster": self.cluster,
            "code": self.code,
            "severity": self.severity,
            "subject": self.subject,
            "message": self.message,
            "evidence": dict(self.evidence),
            "status": self.status,
            "first_seen_at": self.first_seen_at,
            "last_seen_at": self.last_seen_at,
            "opened_at": self.opened_at,
            "clear_since": self.clear_since,
            "resolved_at": self.resolved_at,
            "timeline": [{"at": at, "event": event} for at, event in self.timeline],
        }


def incident_from_dict(d: Mapping[str, object]) -> Incident:
    """The inverse of `Incident.to_dict` (for the state store)."""

    def opt(name: str) -> float | None:
        v = d.get(name)
        return float(v) if isinstance(v, int | float) else None

    evidence = d.get("evidence")
    timeline = d.get("timeline")
    first = float(d["first_seen_at"])  # type: ignore[arg-type]
    return Incident(
        key=str(d["key"]),
        cluster=str(d["cluster"]),
        code=str(d["code"]),
        severity=str(d["severity"]),
        subject=str(d["subject"]),
        message=str(d["message"]),
        evidence=tuple(sorted(evidence.items())) if isinstance(evidence, dict) else (),
        first_seen_at=first,
        last_seen_at=opt("last_seen_at") or first,
        opened_at=opt("opened_at"),
        clear_since=opt("clear_since"),
        resolved_at=opt("resolved_at"),
        timeline=tuple((float(e["at"]), str(e["event"])) for e in timeline) if isinstance(timeline, list) else (),
    )


@dataclass(frozen=True, slots=True)
class Tracked:
    incidents: tuple[Incident, ...]  # pending, open and clearing ones: the next cycle's `previous`
    resolved: tuple[Incident, ...]  # resolved in this cycle
    changed: tuple[Incident, ...]  # opened, escalated, cleared or resolved in this cycle (to persist)
    events: tuple[AlertEvent, ...]


def _event(inc: Incident, action: str, now: float) -> AlertEvent:
    return AlertEvent(
        event_id=f"{inc.id}/{action}/{now:.3f}",
        action="trigger" if action == "trigger" else "resolve",
        incident_key=inc.key,
        cluster=inc.cluster,
        code=inc.code,
        severity=inc.severity,
        subject=inc.subject,
        summary=inc.message,
        evidence=inc.evidence,
        opened_at=inc.opened_at if inc.opened_at is not None else inc.first_seen_at,
        at=now,
    )


def _from_finding(f: Finding, now: float) -> Incident:
    return Incident(
        key=f.key,
        cluster=f.cluster,
        code=str(f.code),
        severity=str(f.severity),
        subject=f.subject,
        message=f.message,
        evidence=f.evidence,
        first_seen_at=now,
        last_seen_at=now,
        timeline=((now, f"seen: {f.message}"),),
    )


def track(previous: Iterable[Incident], findings: Sequence[Finding], policy: Policy, now: float) -> Tracked:
    before: Mapping[str, Incident] = {i.key: i for i in previous}
    current = {f.key: f for f in findings}
    kept: list[Incident] = []
    resolved: list[Incident] = []
    changed: list[Incident] = []
    events: list[AlertEvent] = []

    for key in sorted(set(before) | set(current)):
        inc = before.get(key)
        f = current.get(key)
        if f is not None:
            if inc is None:
                inc = _from_finding(f, now)
            else:
                escalated = SEVERITY_RANK.get(str(f.severity), 0) > SEVERITY_RANK.get(inc.severity, 0)
                note = []
                if inc.clear_since is not None:
                    note.append((now, "back before it cleared"))
                if escalated and inc.opened_at is not None:
                    note.append((now, f"escalated to {f.severity}: {f.message}"))
                inc = dataclasses.replace(
                    inc,
                    severity=str(f.severity) if escalated else inc.severity,
                    message=f.message,
                    evidence=f.evidence,
                    last_seen_at=now,
                    clear_since=None,
                    timeline=inc.timeline + tuple(note),
                )
                if escalated and inc.opened_at is not None:
                    events.append(_event(inc, "trigger", now))
                    changed.append(inc)
                elif note:
                    changed.append(inc)
            if inc.opened_at is None and now - inc.first_seen_at >= policy.confirm_after_s(f.code):
                inc = dataclasses.replace(inc, opened_at=now, timeline=inc.timeline + ((now, "opened"),))
                events.append(_event(inc, "trigger", now))
                changed.append(inc)
            kept.append(inc)
            continue

        assert inc is not None
        if inc.opened_at is None:
            continue  # never confirmed: not an incident, nothing to tell
        clear_since = inc.clear_since if inc.clear_since is not None else now
        if inc.clear_since is None:
            inc = dataclasses.replace(inc, clear_since=now, timeline=inc.timeline + ((now, "cleared"),))
            changed.append(inc)
        if now - clear_since >= _clear_after_s(policy, inc.code):
            inc = dataclasses.replace(inc, resolved_at=now, timeline=inc.timeline + ((now, "resolved"),))
            events.append(_event(inc, "resolve", now))
            resolved.append(inc)
            changed.append(inc)
            continue
        kept.append(inc)

    # one entry per incident in `changed` (the last state wins)
    last: dict[str, Incident] = {}
    for inc in changed:
        last[inc.key] = inc
    return Tracked(tuple(kept), tuple(resolved), tuple(last.values()), tuple(events))


def _clear_after_s(policy: Policy, code: str) -> float:
    try:
        return policy.clear_after_s(Code(code))
    except ValueError:  # a code from an older version, loaded from the state file
        return policy.default_clear_s
