"""Reports that cannot wait for the schedule: a change of this node's role or of its Sentinel's view of the
master is pushed at once (issue #12).

Layer: domain (pure decision) with one small reader. Between the regular collections the agent reads a
`Signal` (Redis `ROLE`, and `SENTINEL MASTER <name>` on its own Sentinel: two round trips, every
`PROBE_INTERVAL_S`) and compares it with the one read just before its last report: `decide` says whether
to push a report now. The controller's fence waits on exactly these changes (the promoted replica saying
master, the Sentinel leader's failover in progress, the side flagging the old master down), so hearing
them within a probe interval rather than a report interval shortens the write unavailability by up to a
report interval.

What counts: Redis's role (master / replica) and, for a replica, the master it follows; the Sentinel's
address for the master, its flags `s_down`, `o_down`, `failover_in_progress`, and while a failover is in
progress the replica it has promoted (flagged `promoted` in `SENTINEL REPLICAS`, a third round trip asked
only then: the leader picks it a second or so after its failover starts, and the controller's fence waits on
that too). Not counted: offsets,
link state, `disconnected` (they move all the time and the regular report carries them). Unknown (an
unreachable Redis or Sentinel) is a value like any other: losing the Sentinel is news too. Rate limit:
a token bucket, `EXTRA_BURST` extra reports at once and then one per `1 / EXTRA_PER_S` s, so a flapping
node cannot flood the controller (2 extra reports a second at the most, sustained) while the steps of one
failover, a fraction of a second apart (the leader's failover starts, then it promotes a replica), each go
at once: with one per 0.5 s the leader's promotion waited for its regular report, measured. A change held
back is pushed by the first probe with a token (or by the regular report, whichever comes first).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from redis.exceptions import RedisError

from agent.redis_client import command
from protocol.report import RedisHealth, SentinelHealth

__all__ = ["EXTRA_BURST", "EXTRA_PER_S", "PROBE_INTERVAL_S", "Budget", "Signal", "decide", "promoted_of",
           "read_signal", "role_of", "signal_of", "view_of"]

PROBE_INTERVAL_S = 0.25
EXTRA_PER_S = 2.0  # extra reports a second, sustained
EXTRA_BURST = 3  # extra reports at once
WATCHED_FLAGS = ("s_down", "o_down", "failover_in_progress")


@dataclass(frozen=True, slots=True)
class Signal:
    """What a push is owed for. `role`: "master", "replica" or None (no answer); `follows`: a replica's
    master "host:port"; `master`: the Sentinel's "ip:port" for the master (None: no answer or unknown);
    `flags`: the watched flags the Sentinel sets on it, in `WATCHED_FLAGS` order; `promoted`: the replicas it
    flags promoted while its failover is in progress, sorted."""

    role: str | None
    follows: str | None
    master: str | None
    flags: tuple[str, ...]
    promoted: tuple[str, ...] = ()


def role_of(reply: object) -> tuple[str | None, str | None]:
    """(role, master followed) from a ROLE reply: ["master", ...] or ["slave", host, port, state, offset]."""
    if not isinstance(reply, list) or not reply or not isinstance(reply[0], str):
        return None, None
    if reply[0] == "master":
        return "master", None
    if reply[0] in ("slave", "replica") and len(reply) >= 3:
        return "replica", f"{reply[1]}:{reply[2]}"
    return reply[0], None  # "sentinel" or something newer: its name is the signal


def view_of(reply: object) -> tuple[str | None, tuple[str, ...]]:
    """(master "ip:port", watched flags) from a SENTINEL MASTER reply (a flat field/value list)."""
    if not isinstance(reply, list) or len(reply) % 2:
        return None, ()
    fields = {str(reply[i]): reply[i + 1] for i in range(0, len(reply), 2)}
    ip, port, flags = fields.get("ip"), fields.get("port"), fields.get("flags")
    address = f"{ip}:{port}" if isinstance(ip, str) and isinstance(port, str | int) else None
    set_flags = set(str(flags).split(",")) if isinstance(flags, str) else set()
    return address, tuple(f for f in WATCHED_FLAGS if f in set_flags)


def promoted_of(reply: object) -> tuple[str, ...]:
    """The "ip:port" of each replica flagged promoted in a SENTINEL REPLICAS reply (a list of field/value
    lists), sorted."""
    found: list[str] = []
    for entry in reply if isinstance(reply, list) else ():
        if not isinstance(entry, list) or len(entry) % 2:
            continue
        fields = {str(entry[i]): entry[i + 1] for i in range(0, len(entry), 2)}
        ip, port, flags = fields.get("ip"), fields.get("port"), fields.get("flags")
        if isinstance(flags, str) and "promoted" in flags.split(",") and isinstance(ip, str) \
                and isinstance(port, str | int):
            found.append(f"{ip}:{port}")
    return tuple(sorted(found))


def read_signal(redis_client: redis.Redis, sentinel: redis.Redis, master_name: str) -> Signal:
    """One probe: `ROLE` on Redis, `SENTINEL MASTER <name>` on the Sentinel (and `SENTINEL REPLICAS <name>`
    while its failover is in progress); a failed one reads as None."""
    try:
        role, follows = role_of(command(redis_client, "ROLE"))
    except (OSError, RedisError):
        role, follows = None, None
    try:
        master, flags = view_of(command(sentinel, "SENTINEL", "MASTER", master_name))
    except (OSError, RedisError):
        master, flags = None, ()
    promoted: tuple[str, ...] = ()
    if "failover_in_progress" in flags:
        try:
            promoted = promoted_of(command(sentinel, "SENTINEL", "REPLICAS", master_name))
        except (OSError, RedisError):
            promoted = ()
    return Signal(role, follows, master, flags, promoted)


@dataclass(frozen=True, slots=True)
class Budget:
    """The extra reports that may go now (`tokens`, as of `at`, monotonic seconds)."""

    tokens: float
    at: float


def decide(reported: Signal | None, now_signal: Signal, now: float, budget: Budget | None,
           per_s: float = EXTRA_PER_S, burst: int = EXTRA_BURST) -> Budget | None:
    """Whether to push a report now: the signal differs from the one read before the last report (None: no
    report yet, the schedule sends the first) and the budget (None: full) has a token. Returns the budget
    with that token spent, or None: do not push (the budget is then unchanged)."""
    if reported is None or now_signal == reported:
        return None
    tokens = float(burst) if budget is None else min(float(burst), budget.tokens + (now - budget.at) * per_s)
    if tokens < 1.0:
        return None
    return Budget(tokens - 1.0, now)


def signal_of(redis: RedisHealth, sentinel: SentinelHealth, master_name: str) -> Signal:
    """The same `Signal` read out of a report's collection (INFO and SENTINEL MASTER), for the comparison."""
    role = redis.role if redis.reachable else None
    follows = (f"{redis.master_host}:{redis.master_port}"
               if role == "replica" and redis.master_host is not None and redis.master_port is not None else None)
    view = sentinel.master(master_name) if sentinel.reachable else None
    if view is None:
        return Signal(role, follows, None, ())
    flags = tuple(f for f, on in (("s_down", view.s_down), ("o_down", view.o_down),
                                  ("failover_in_progress", view.failover_in_progress)) if on)
    promoted = tuple(sorted(p.address for p in view.replicas if "promoted" in p.flags)) \
        if view.failover_in_progress else ()
    return Signal(role, follows, view.master_address, flags, promoted)
