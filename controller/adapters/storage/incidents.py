"""Persists incidents (open and past, with their timelines) in the controller's SQLite state file.

Layer: adapter. Only confirmed incidents are written; pending findings live in memory and are simply
re-observed after a restart. On start the open ones are loaded, so a restart neither forgets an open
incident nor triggers it again.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from controller.core.incidents import Incident, incident_from_dict

SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    cluster TEXT NOT NULL,
    status TEXT NOT NULL,
    opened_at REAL,
    resolved_at REAL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_cluster_opened ON incidents (cluster, opened_at);
"""


class IncidentLog:
    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def save(self, incidents: Sequence[Incident]) -> None:
        rows = [
            (i.id, i.key, i.cluster, i.status, i.opened_at, i.resolved_at, json.dumps(i.to_dict()))
            for i in incidents
            if i.opened_at is not None
        ]
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO incidents (id, key, cluster, status, opened_at, resolved_at, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET status = excluded.status, "
                "resolved_at = excluded.resolved_at, data = excluded.data",
                rows,
            )
            self._db.execute("COMMIT")

    def load_active(self) -> list[Incident]:
        with self._lock:
            rows = self._db.execute("SELECT data FROM incidents WHERE status IN ('open', 'clearing')").fetchall()
        return [incident_from_dict(json.loads(r[0])) for r in rows]

    def history(self, cluster: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first: open ones and past ones, each with its timeline."""
        query = "SELECT data FROM incidents"
        args: tuple[Any, ...] = ()
        if cluster is not None:
            query += " WHERE cluster = ?"
            args = (cluster,)
        query += " ORDER BY opened_at DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(query, (*args, limit)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
