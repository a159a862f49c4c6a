"""The incident tracker: confirmation windows, hysteresis, escalation, persistence. Pure, no clock."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.adapters.storage.db import Database
from controller.adapters.storage.incidents import IncidentLog
from controller.core.findings import Code, Finding, Severity
from controller.core.incidents import Incident, incident_from_dict, track
from controller.core.policy import Policy

POLICY = Policy(confirm_s={Code.REPLICA_DOWN: 2.0, Code.MASTER_DOWN: 0.0}, clear_s={Code.REPLICA_DOWN: 5.0})


def replica_down(severity: Severity = Severity.WARNING, n: int = 2) -> Finding:
    return Finding(Code.REPLICA_DOWN, severity, "shop", "node", f"redis-{n}",
                   f"redis-{n}'s redis-server at 127.0.0.{n + 1}:6379 is unreachable: connection refused",
                   evidence=(("address", f"127.0.0.{n + 1}:6379"),))


def run(steps: list[tuple[float, list[Finding]]]) -> tuple[list[Incident], list[tuple[float, str, str]]]:
    """Feed findings at the given times; return the final incidents and (time, action, key) events."""
    active: tuple[Incident, ...] = ()
    events = []
    for now, findings in steps:
        t = track(active, findings, POLICY, now)
        active = t.incidents
        events += [(now, e.action, e.incident_key) for e in t.events]
    return list(active), events


def test_a_finding_must_hold_for_its_confirmation_window() -> None:
    f = replica_down()
    _, events = run([(0, [f]), (1, [f]), (1.9, [f])])
    assert events == []
    _, events = run([(0, [f]), (1, [f]), (2.0, [f])])
    assert events == [(2.0, "trigger", f.key)]


def test_a_finding_gone_before_confirmation_never_was_an_incident() -> None:
    f = replica_down()
    active, events = run([(0, [f]), (1, []), (2, [f]), (3, [])])
    assert events == [] and active == []


def test_master_down_triggers_at_once() -> None:
    f = Finding(Code.MASTER_DOWN, Severity.CRITICAL, "shop", "node", "redis-1", "master down")
    _, events = run([(10, [f])])
    assert events == [(10, "trigger", f.key)]


def test_resolve_after_the_clear_window_and_flapping_pages_once() -> None:
    f = replica_down()
    steps: list[tuple[float, list[Finding]]] = [(0, [f]), (2, [f])]
    # a flapping link: gone for 1-4 s at a time, never 5 s
    t = 2.0
    for gap in (1, 3, 4, 2, 1, 4):
        t += 1
        steps.append((t, []))
        t += gap
        steps.append((t, [f]))
    active, events = run(steps)
    assert [e[1] for e in events] == ["trigger"]
    assert active[0].status == "open"
    assert any("back before it cleared" in e for _, e in active[0].timeline)
    # now it stays away: one resolve after 5 s, not before
    _, events = run([*steps, (t + 1, []), (t + 5.9, [])])
    assert [e[1] for e in events] == ["trigger"]
    _, events = run([*steps, (t + 1, []), (t + 6, [])])
    assert [e[1] for e in events] == ["trigger", "resolve"]


def test_escalation_triggers_again_with_the_same_key() -> None:
    warn, crit = replica_down(Severity.WARNING), replica_down(Severity.CRITICAL)
    active, events = run([(0, [warn]), (2, [warn]), (3, [crit]), (4, [warn])])
    assert [(a, k == warn.key) for _, a, k in events] == [("trigger", True), ("trigger", True)]
    assert active[0].severity == "critical"  # an incident does not de-escalate while open


def test_incidents_survive_a_restart(tmp_path: Path, open_db: Callable[[Path], Database]) -> None:
    first = open_db(tmp_path / "state.db")
    log = IncidentLog(first)
    f = replica_down()
    t1 = track((), [f], POLICY, 0)
    t2 = track(t1.incidents, [f], POLICY, 2)
    log.save(t2.changed)
    first.close()
    log = IncidentLog(open_db(tmp_path / "state.db"))
    active = log.load_active()
    assert [i.key for i in active] == [f.key] and active[0].opened_at == 2
    # the restarted tracker does not trigger again, and resolves it later
    t3 = track(active, [f], POLICY, 3)
    assert t3.events == ()
    t4 = track(track(t3.incidents, [], POLICY, 4).incidents, [], POLICY, 9)
    assert [e.action for e in t4.events] == ["resolve"]
    log.save(t4.changed)
    assert [i["status"] for i in log.history("shop")] == ["resolved"]
    assert log.history("other") == []


def test_incident_round_trips_through_its_dict() -> None:
    f = replica_down()
    inc = track(track((), [f], POLICY, 0).incidents, [f], POLICY, 2).incidents[0]
    assert incident_from_dict(inc.to_dict()) == inc


@settings(max_examples=200, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=60), st.floats(min_value=0.1, max_value=3.0))
def test_at_most_one_open_incident_and_alternating_events(present: list[bool], step_s: float) -> None:
    f = replica_down()
    steps = [(i * step_s, [f] if p else []) for i, p in enumerate(present)]
    active, events = run(steps)
    actions = [a for _, a, _ in events]
    # triggers and resolves alternate, starting with a trigger: never two pages for one open incident
    assert all(a != b for a, b in itertools.pairwise(actions))
    assert not actions or actions[0] == "trigger"
    assert len(active) <= 1
