"""Persists healing: each cluster's `HealState` (pauses, budget, ladders, the reprovision in flight) and
the audit log of every action step (start, result, error).

Layer: adapter (SQLite, its own connection to the controller's state file). A reprovision survives a
controller killed at any step because its state is written before the step's effect is attempted
(`started` row + state) and again after it (`result` row + state).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pydantic

from controller.core.planner import HealState

STATE_ADAPTER: pydantic.TypeAdapter[HealState] = pydantic.TypeAdapter(HealState)

SCHEMA = """
CREATE TABLE IF NOT EXISTS heal_state (
    cluster TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cluster TEXT NOT NULL,
    node TEXT,
    kind TEXT NOT NULL,
    description TEXT NOT NULL,
    reason TEXT NOT NULL,
    status TEXT NOT NULL,          -- started | succeeded | failed | dry-run | held
    detail TEXT,
    directive_id TEXT,
    started_at REAL NOT NULL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS actions_cluster ON actions (cluster, id);
"""


class HealStore:
    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def load(self, cluster: str) -> HealState:
        with self._lock:
            row = self._db.execute("SELECT data FROM heal_state WHERE cluster = ?", (cluster,)).fetchone()
        if row is None:
            return HealState(cluster=cluster)
        try:
            return STATE_ADAPTER.validate_json(row[0])
        except pydantic.ValidationError:
            return HealState(cluster=cluster)  # an older schema: start afresh (pauses are re-applied by hand)

    def save(self, state: HealState) -> None:
        data = STATE_ADAPTER.dump_json(state).decode()
        with self._lock:
            self._db.execute(
                "INSERT INTO heal_state (cluster, data) VALUES (?, ?) "
                "ON CONFLICT (cluster) DO UPDATE SET data = excluded.data",
                (state.cluster, data),
            )

    def started(self, cluster: str, node: str | None, kind: str, description: str, reason: str, now: float,
                status: str = "started") -> int:
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO actions (cluster, node, kind, description, reason, status, started_at, finished_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (cluster, node, kind, description, reason, status, now, None if status == "started" else now),
            )
            return int(cur.lastrowid or 0)

    def finished(self, action_id: int, ok: bool, detail: str, now: float, directive_id: str | None = None,
                 pending: bool = False) -> None:
        status = "sent" if pending else ("succeeded" if ok else "failed")
        with self._lock:
            self._db.execute(
                "UPDATE actions SET status = ?, detail = ?, directive_id = COALESCE(?, directive_id), "
                "finished_at = ? WHERE id = ?",
                (status, detail[:1000], directive_id, None if pending else now, action_id),
            )

    def acknowledged(self, directive_id: str, ok: bool, detail: str, now: float) -> None:
        with self._lock:
            self._db.execute(
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
        with self._lock:
            rows = self._db.execute(query, (*args, limit)).fetchall()
        keys = ("id", "cluster", "node", "kind", "description", "reason", "status", "detail", "started_at",
                "finished_at")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()

