"""Persists healing: each cluster's `HealState` (pauses, budget, ladders, the reprovision in flight) and
the audit log of every action step (start, result, error).

Layer: adapter (the tables `heal_state` and `actions` of the shared `Database`, defined in
`controller.adapters.storage.migrations`). A reprovision survives a controller killed at any step because
its state is written before the step's effect is attempted (`started` row + state) and again after it
(`result` row + state).
"""

from __future__ import annotations

from typing import Any

import pydantic

from controller.adapters.storage.db import Database
from controller.core.planner import HealState

STATE_ADAPTER: pydantic.TypeAdapter[HealState] = pydantic.TypeAdapter(HealState)


class HealStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def load(self, cluster: str) -> HealState:
        rows = self._db.read("SELECT data FROM heal_state WHERE cluster = ?", (cluster,))
        if not rows:
            return HealState(cluster=cluster)
        try:
            return STATE_ADAPTER.validate_json(rows[0][0])
        except pydantic.ValidationError:
            return HealState(cluster=cluster)  # an older schema: start afresh (pauses are re-applied by hand)

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
