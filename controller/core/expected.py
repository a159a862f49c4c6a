"""Findings the controller's own plan explains: held below a page while the plan runs, the plan named.

Layer: pure core. `expect(findings, state, policy, now)` is a function of this cycle's findings, the
healing state (what plan is in flight: a reprovision, a Sentinel reset sequence, a fast failover) and
`now`; it returns the same findings, those that the plan in flight is expected to cause capped at
warning (so they never page; PagerDuty takes criticals) with a message that starts with "Expected
during <the plan>:" and an `expected_during` evidence entry. Keys do not change: an incident already open
stays the same incident (and keeps its severity), and the healer still sees what it heals.

Each plan lists what it causes as `Expectation`s: which codes, on which subjects, until when (a plan
that stalls past its bound stops excusing anything), and, where a code can be worse than the plan
explains, the condition under which it is the plan's. What a plan does not explain is left alone: a
master dying while a replica is replaced still pages.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from controller.core.checks import finding_order
from controller.core.findings import Code, EvidenceValue, Finding, Severity
from controller.core.planner import HealPolicy, HealState, Reprovision, ResetSequence

# What a node being replaced (the old one going, the new one booting and syncing) shows about itself.
NODE_IN_REPLACEMENT = frozenset({
    Code.REPLICA_DOWN, Code.AGENT_SILENT, Code.SENTINEL_DOWN, Code.SENTINEL_ISOLATED, Code.SENTINEL_STALE_ENTRIES,
    Code.SENTINEL_COUNT_MISMATCH, Code.REPLICA_LINK_DOWN, Code.REPLICA_LAG_HIGH, Code.REPLICA_WRONG_MASTER,
})
# Every Sentinel's table lists the old node and not yet the new one until the reset sequence fixes it.
SENTINEL_TABLES = frozenset({Code.SENTINEL_STALE_ENTRIES, Code.SENTINEL_COUNT_MISMATCH})
# What Sentinel reconfiguring the cluster after a failover shows for a few seconds.
FAILOVER_TRANSIENTS = frozenset({
    Code.FAILOVER_IN_PROGRESS, Code.SENTINEL_DISAGREEMENT, Code.NO_MASTER, Code.REPLICA_WRONG_MASTER,
    Code.REPLICA_LINK_DOWN, Code.REPLICA_LAG_HIGH, Code.SENTINEL_COUNT_MISMATCH,
})


@dataclass(frozen=True, slots=True)
class Expectation:
    """Findings one plan in flight is expected to cause."""

    plan: str  # names the plan, e.g. "the replacement of redis-2 by redis-4 (step boot)"
    codes: frozenset[Code]
    until: float  # the plan excuses nothing after this (a stalled plan is a finding's own again)
    subjects: frozenset[str] | None = None  # subject names (nodes; the cluster's name); None: any subject
    condition: Callable[[Finding], bool] | None = None  # when the code alone could be worse than the plan

    def covers(self, finding: Finding, now: float) -> bool:
        return (
            now <= self.until
            and finding.code in self.codes
            and (self.subjects is None or finding.subject_name in self.subjects)
            and (self.condition is None or self.condition(finding))
        )


def _number(finding: Finding, name: str) -> int | None:
    value: EvidenceValue = dict(finding.evidence).get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _missing_at_most(n: int) -> Callable[[Finding], bool]:
    """REDUNDANCY_DEGRADED short of no more than `n` replicas (the ones the plan accounts for)."""

    def check(finding: Finding) -> bool:
        have, want = _number(finding, "in_sync_replicas"), _number(finding, "desired_replicas")
        return have is not None and want is not None and have > 0 and want - have <= n

    return check


def _short_by_reset(seq: ResetSequence) -> Callable[[Finding], bool]:
    """QUORUM_LOST whose shortfall the Sentinels this sequence reset account for: a reset Sentinel forgets
    its peers for a hello period or two, so the largest side may lack up to that many."""

    def check(finding: Finding) -> bool:
        largest, needed = _number(finding, "largest_side"), _number(finding, "needed")
        return largest is not None and needed is not None and needed - largest <= len(seq.done)

    return check


def _short_by_joining(new_name: str) -> Callable[[Finding], bool]:
    """QUORUM_LOST only for want of the joining node's Sentinel: it counts among the expected Sentinels (and
    so raises the majority) as soon as it reports, and is in nobody's side until its peers know it."""

    def check(finding: Finding) -> bool:
        largest, needed = _number(finding, "largest_side"), _number(finding, "needed")
        members = str(dict(finding.evidence).get("largest_side_sentinels") or "").split(", ")
        return largest is not None and needed is not None and needed - largest <= 1 and new_name not in members

    return check


def _replacement(job: Reprovision, policy: HealPolicy) -> tuple[Expectation, ...]:
    plan = f"the replacement of {job.old_node} by {job.new_name} (reprovision {job.job_id}, step {job.step})"
    until = job.step_at + policy.reprovision_boot_timeout_s
    return (
        Expectation(plan, NODE_IN_REPLACEMENT, until, frozenset({job.old_node, job.new_name})),
        Expectation(plan, SENTINEL_TABLES, until),
        Expectation(plan, frozenset({Code.QUORUM_AT_RISK, Code.AGENT_SILENT}), until,
                    condition=lambda f: f.subject_kind == "cluster"),
        Expectation(plan, frozenset({Code.REDUNDANCY_DEGRADED}), until, condition=_missing_at_most(1)),
        Expectation(plan, frozenset({Code.QUORUM_LOST}), until, condition=_short_by_joining(job.new_name)),
    )


def _reset(seq: ResetSequence, policy: HealPolicy, now: float) -> tuple[Expectation, ...]:
    done = ", ".join(seq.done) or "none yet"
    plan = f"the Sentinel reset sequence (reset: {done}; next: {', '.join(seq.pending) or 'none'})"
    # until the next reset is due and the last one has settled; a sequence held longer excuses nothing
    until = (seq.last_at if seq.last_at is not None else now) + max(policy.sentinel_reset_interval_s, 10.0) \
        + policy.sentinel_settle_s
    return (
        Expectation(plan, SENTINEL_TABLES | {Code.SENTINEL_ISOLATED}, until),
        Expectation(plan, frozenset({Code.QUORUM_AT_RISK}), until),
        Expectation(plan, frozenset({Code.QUORUM_LOST}), until, condition=_short_by_reset(seq)),
    )


def _failover(state: HealState, policy: HealPolicy) -> tuple[Expectation, ...]:
    if state.last_failover_at is None:
        return ()
    old = next((address for address, at in reversed(state.failed_away) if at == state.last_failover_at), None)
    plan = "the fast failover" + (f" away from {old}" if old else "") + " the controller asked Sentinel for"
    until = state.last_failover_at + policy.failover_cooldown_s  # Sentinel's failover-timeout
    return (
        Expectation(plan, FAILOVER_TRANSIENTS, until),
        Expectation(plan, frozenset({Code.REDUNDANCY_DEGRADED}), until, condition=_missing_at_most(1)),
    )


# What a fenced old master shows while it stays cut off: a replica of the new master whose link is down,
# its Sentinel isolated (or just re-pointed, knowing no peers), one replica short.
NODE_FENCED_SHOWS = frozenset({
    Code.REPLICA_LINK_DOWN, Code.REPLICA_LAG_HIGH, Code.REPLICA_WRONG_MASTER, Code.SENTINEL_ISOLATED,
    Code.SENTINEL_STALE_ENTRIES, Code.SENTINEL_COUNT_MISMATCH,
})


def _fences(state: HealState, policy: HealPolicy) -> tuple[Expectation, ...]:
    out: list[Expectation] = []
    for record in state.fences:
        if not record.ok:
            continue
        plan = f"the fence of {record.node} (made a replica of {record.new_master} after the failover)"
        until = record.at + policy.failover_cooldown_s
        out += [
            Expectation(plan, NODE_FENCED_SHOWS, until, frozenset({record.node})),
            Expectation(plan, frozenset({Code.QUORUM_AT_RISK}), until, condition=lambda f: f.subject_kind == "cluster"),
            Expectation(plan, frozenset({Code.REDUNDANCY_DEGRADED}), until, condition=_missing_at_most(1)),
        ]
    return tuple(out)


def expectations(state: HealState, policy: HealPolicy, now: float) -> tuple[Expectation, ...]:
    """What the plans in flight in `state` are expected to cause, most specific plan first."""
    out: list[Expectation] = []
    if state.reset is not None:
        out += _reset(state.reset, policy, now)
    if state.reprovision is not None:
        out += _replacement(state.reprovision, policy)
    out += _failover(state, policy)
    out += _fences(state, policy)
    return tuple(out)


def explain(findings: Iterable[Finding], plans: Sequence[Expectation], now: float) -> tuple[Finding, ...]:
    """`findings` with those a plan covers capped at warning and naming the plan; most severe first, as
    `check` returns them."""
    out = []
    for finding in findings:
        plan = next((e.plan for e in plans if e.covers(finding, now)), None)
        if plan is not None:
            finding = dataclasses.replace(
                finding,
                severity=Severity.WARNING if finding.severity is Severity.CRITICAL else finding.severity,
                message=f"Expected during {plan}: {finding.message}",
                evidence=(*finding.evidence, ("expected_during", plan)),
            )
        out.append(finding)
    return tuple(sorted(out, key=finding_order))


def expect(findings: Iterable[Finding], state: HealState, policy: HealPolicy, now: float) -> tuple[Finding, ...]:
    """The findings of one cycle, with what the plans in flight explain held below a page."""
    return explain(findings, expectations(state, policy, now), now)
