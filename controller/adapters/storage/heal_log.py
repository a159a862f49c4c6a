"""Persists healing: each cluster's `HealState` (pauses, budget, ladders, the reprovision in flight) and
the audit log of every action step (start, result, error).

Layer: adapter (the tables `heal_state` and `actions` of the shared `Database`, defined in
`controller.adapters.storage.migrations`). A reprovision survives a controller killed at any step because
its state is written before the step's effect is attempted (`started` row + state) and again after it
(`result` row + state).

A heal state that cannot be read (damaged, or written by a release whose `HealState` this one does not
know) is never replaced silently by defaults: `load` raises `HealStateUnreadable`, the healer holds that
cluster, and only `reset` (an operator's `redwarden heal reset-state CLUSTER`) replaces it, in the same
transaction as its audit row, which keeps the start of the old data.
"""

from __future__ import annotations

from typing import Any

import pydantic

from controller.adapters.storage.db import Database
from controller.core.planner import HealState

STATE_ADAPTER: pydantic.TypeAdapter[HealState] = pydantic.TypeAdapter(HealState)


class HealStateUnreadable(Exception):
    """A cluster's persisted heal state cannot be read; `reason` says why in one line (no data from it)."""

    def __init__(self, cluster: str, reason: str) -> None:
        super().__init__(f"heal state of cluster {cluster} cannot be read: {reason}")
        self.cluster = cluster
        self.reason = reason


def _why(e: pydantic.ValidationError) -> str:
    first = e.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in first["loc"])
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return f"{where + ': ' if where else ''}{first['msg']}{more}"


class HealStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def load(self, cluster: str) -> HealState:
        """The cluster's state; a fresh one for a cluster without a row. Raises `HealStateUnreadable` for a
        row it cannot read: the caller holds healing rather than start afresh (a paused cluster would come
        back unpaused, a reprovision in flight would be forgotten)."""
        rows = self._db.read("SELECT data FROM heal_state WHERE cluster = ?", (cluster,))
        if not rows:
            return HealState(cluster=cluster)
        try:
            state = STATE_ADAPTER.validate_json(rows[0][0])
        except pydantic.ValidationError as e:
            raise HealStateUnreadable(cluster, _why(e)) from None
        if state.cluster != cluster:
            raise HealStateUnreadable(cluster, f"its row names another cluster ({state.cluster[:64]!r})")
        return state

    def reset(self, cluster: str, now: float) -> HealState:
        """An operator's reset: the cluster's state becomes a fresh one, and the audit log gets a row (in the
        same transaction) keeping the start of what was there, for whoever wants to know what was lost."""
        fresh = HealState(cluster=cluster)
        with self._db.transaction() as tx:
            row = tx.execute("SELECT data FROM heal_state WHERE cluster = ?", (cluster,)).fetchone()
            old = "none" if row is None else repr(row[0])[:600]
            tx.execute(
                "INSERT INTO heal_state (cluster, data) VALUES (?, ?) "
                "ON CONFLICT (cluster) DO UPDATE SET data = excluded.data",
                (cluster, STATE_ADAPTER.dump_json(fresh).decode()),
            )
            tx.execute(
                "INSERT INTO actions (cluster, node, kind, description, reason, status, detail, started_at, "
                "finished_at) VALUES (?, NULL, 'ResetHealState', ?, ?, 'succeeded', ?, ?, ?)",
                (cluster, "reset the heal state to a fresh one", "asked by an operator (the state was unreadable)",
                 f"previous data: {old}", now, now),
            )
        return fresh

    def save(self, state: HealState) -> None:
        data = STATE_ADAPTER.dump_json(state).decode()
        with self._db.transaction() as tx:
            tx.execute(
                "INSERT INTO heal_state (cluster, data) VALUES (?, ?) "
                "ON CONFLICT (cluster) DO UPDATE SET data = excluded.data",
                (state.cluster, data),
            )

    def started(self, cluster: str, node: str | None, kind: str, description: str, reason: str, now: float,
                status: str = "started") -> int:
        with self._db.transaction() as tx:
            tx.execute(
                "INSERT INTO actions (cluster, node, kind, description, reason, status, started_at, finished_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (cluster, node, kind, description, reason, status, now, None if status == "started" else now),
            )
            return int(tx.lastrowid or 0)

    def finished(self, action_id: int, ok: bool, detail: str, now: float, directive_id: str | None = None,
                 pending: bool = False) -> None:
        status = "sent" if pending else ("succeeded" if ok else "failed")
        with self._db.transaction() as tx:
            tx.execute(
                "UPDATE actions SET status = ?, detail = ?, directive_id = COALESCE(?, directive_id), "
                "finished_at = ? WHERE id = ?",
                (status, detail[:1000], directive_id, None if pending else now, action_id),
            )

    def acknowledged(self, directive_id: str, ok: bool, detail: str, now: float) -> None:
        with self._db.transaction() as tx:
            tx.execute(
                "UPDATE actions SET status = ?, detail = ?, finished_at = ? WHERE directive_id = ?",
                ("succeeded" if ok else "failed", detail[:1000], now, directive_id),
            )

    def history(self, cluster: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        query = "SELECT id, cluster, node, kind, description, reason, status, detail, started_at, finished_at " \
                "FROM actions"
        args: tuple[Any, ...] = ()
        if cluster is not None:
            query += " WHERE cluster = ?"
            args = (cluster,)
        query += " ORDER BY id DESC LIMIT ?"
        rows = self._db.read(query, (*args, limit))
        keys = ("id", "cluster", "node", "kind", "description", "reason", "status", "detail", "started_at",
                "finished_at")
        return [dict(zip(keys, r, strict=True)) for r in rows]
