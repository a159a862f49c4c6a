"""Persists incidents (open and past, with their timelines) in the controller's SQLite state file.

Layer: adapter. Only confirmed incidents are written; pending findings live in memory and are simply
re-observed after a restart. On start the open ones are loaded, so a restart neither forgets an open
incident nor triggers it again. The table (`incidents`) is defined in
`controller.adapters.storage.migrations`; the file is the shared `Database`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from controller.adapters.storage.db import Database
from controller.core.incidents import Incident, incident_from_dict


class IncidentLog:
    def __init__(self, db: Database) -> None:
        self._db = db

    def save(self, incidents: Sequence[Incident]) -> None:
        rows = [
            (i.id, i.key, i.cluster, i.status, i.opened_at, i.resolved_at, json.dumps(i.to_dict()))
            for i in incidents
            if i.opened_at is not None
        ]
        if not rows:
            return
        with self._db.transaction() as tx:
            tx.executemany(
                "INSERT INTO incidents (id, key, cluster, status, opened_at, resolved_at, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET status = excluded.status, "
                "resolved_at = excluded.resolved_at, data = excluded.data",
                rows,
            )

    def load_active(self) -> list[Incident]:
        rows = self._db.read("SELECT data FROM incidents WHERE status IN ('open', 'clearing')")
        return [incident_from_dict(json.loads(r[0])) for r in rows]

    def history(self, cluster: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first: open ones and past ones, each with its timeline."""
        query = "SELECT data FROM incidents"
        args: tuple[Any, ...] = ()
        if cluster is not None:
            query += " WHERE cluster = ?"
            args = (cluster,)
        query += " ORDER BY opened_at DESC LIMIT ?"
        rows = self._db.read(query, (*args, limit))
        return [json.loads(r[0]) for r in rows]
