"""State the controller keeps: the latest report per node in memory, persisted to SQLite.

Layer: adapter. Ingest is the hot path (thousands of reports per second), so `put_report` only updates
a dict under a lock; a writer thread flushes the nodes that changed to SQLite once per
`flush_interval_s`, in one transaction, as the JSON body the agent sent (no re-serialisation on the
hot path or under the GIL-heavy flush). On start the last persisted reports are loaded, so a restarted
controller knows its fleet (their ages tell it how old that knowledge is). The table (`node_reports`) is
defined in `controller.adapters.storage.migrations`; the file is the shared `Database`.
"""

from __future__ import annotations

import json
import threading

import pydantic

from controller.adapters.storage.db import Database
from controller.core.view import NodeState
from protocol.report import Report, report_to_dict

REPORT_ADAPTER: pydantic.TypeAdapter[Report] = pydantic.TypeAdapter(Report)


class ReportStore:
    def __init__(self, db: Database, flush_interval_s: float = 2.0) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._latest: dict[tuple[str, str], NodeState] = {}
        self._dirty: dict[tuple[str, str], bytes] = {}
        self._flush_interval_s = flush_interval_s
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None
        self._load()

    def _load(self) -> None:
        rows = self._db.read("SELECT cluster, node, received_at, report FROM node_reports")
        for cluster, node, received_at, raw in rows:
            try:
                report = REPORT_ADAPTER.validate_json(raw)
            except pydantic.ValidationError:
                continue  # an older schema: the agent's next report replaces it
            self._latest[(cluster, node)] = NodeState(report, received_at)

    def start(self) -> None:
        self._writer = threading.Thread(target=self._run_writer, name="state-writer", daemon=True)
        self._writer.start()

    def put_report(self, report: Report, received_at: float, raw: bytes | None = None) -> NodeState | None:
        """Keep `report` as its node's latest; `raw` is its JSON as received (saves re-serialising).
        Returns the node's state before it (None for a node not seen yet)."""
        key = (report.identity.cluster, report.identity.node)
        body = raw if raw is not None else json.dumps(report_to_dict(report)).encode()
        with self._lock:
            previous = self._latest.get(key)
            self._latest[key] = NodeState(report, received_at)
            self._dirty[key] = body
        return previous

    def forget(self, cluster: str, node: str) -> None:
        """Drop a node that no longer exists (replaced): its last report must not haunt the view."""
        with self._lock:
            self._latest.pop((cluster, node), None)
            self._dirty.pop((cluster, node), None)
        with self._db.transaction() as tx:
            tx.execute("DELETE FROM node_reports WHERE cluster = ? AND node = ?", (cluster, node))

    def nodes(self, cluster: str) -> tuple[NodeState, ...]:
        with self._lock:
            states = [s for (c, _), s in self._latest.items() if c == cluster]
        return tuple(sorted(states, key=lambda s: s.name))

    def flush(self) -> int:
        with self._lock:
            dirty, self._dirty = self._dirty, {}
            rows = [(c, n, self._latest[(c, n)].received_at, body.decode()) for (c, n), body in dirty.items()]
        if rows:
            with self._db.transaction() as tx:
                tx.executemany(
                    "INSERT INTO node_reports (cluster, node, received_at, report) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (cluster, node) DO UPDATE SET received_at = excluded.received_at, "
                    "report = excluded.report",
                    rows,
                )
        return len(rows)

    def _run_writer(self) -> None:
        while not self._stop.wait(self._flush_interval_s):
            self.flush()

    def close(self) -> None:
        """Stop the writer and flush what it had not written yet (the `Database` stays open: its owner closes it)."""
        self._stop.set()
        if self._writer is not None:
            self._writer.join(timeout=5)
        self.flush()
