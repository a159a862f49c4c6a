"""The state file's schema, as its history: an ordered list of forward migrations, the one place it is written.

Layer: adapters (storage). `Database` applies at open, in order, each migration newer than the file's
`schema_version`, in one transaction each, and records it. A migration is never edited once released:
a change to the schema is a new entry at the end (a number, a one-line description, its SQL statements
or a function of the open transaction's cursor). SQL stays plain (no SQLite-only syntax beyond what
PostgreSQL also reads, apart from the `?` placeholders and AUTOINCREMENT of the 0.1.0 tables).

Migration 1 is the schema of release 0.1.0, which had these tables but no `schema_version`: every
statement is `IF NOT EXISTS`, so a file made by 0.1.0 is adopted as it is, and a fresh file gets the same.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Migration:
    """One forward step of the schema: `sql` statements run in order, then `run` (if any), in one transaction."""

    version: int
    description: str
    sql: tuple[str, ...] = ()
    run: Callable[[sqlite3.Cursor], None] | None = None


# -- 1: release 0.1.0, exactly as it created its tables -----------------------------------------------------

_NODE_REPORTS = """
CREATE TABLE IF NOT EXISTS node_reports (
    cluster TEXT NOT NULL,
    node TEXT NOT NULL,
    received_at REAL NOT NULL,
    report TEXT NOT NULL,
    PRIMARY KEY (cluster, node)
)"""

_INCIDENTS = """
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    cluster TEXT NOT NULL,
    status TEXT NOT NULL,
    opened_at REAL,
    resolved_at REAL,
    data TEXT NOT NULL
)"""

_HEAL_STATE = """
CREATE TABLE IF NOT EXISTS heal_state (
    cluster TEXT PRIMARY KEY,
    data TEXT NOT NULL
)"""

_ACTIONS = """
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
)"""

_ENROLLMENTS = """
CREATE TABLE IF NOT EXISTS enrollments (
    token_sha256 TEXT PRIMARY KEY,
    cluster TEXT NOT NULL,
    node TEXT NOT NULL,
    expires_at REAL NOT NULL,
    used_at REAL
)"""

_ALERT_OUTBOX = """
CREATE TABLE IF NOT EXISTS alert_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- enqueue order: the delivery order per notifier
    event_id TEXT NOT NULL,
    notifier TEXT NOT NULL,                 -- Notifier.name
    action TEXT NOT NULL,                   -- trigger | resolve
    incident_key TEXT NOT NULL,
    event TEXT NOT NULL,                    -- AlertEvent.to_dict() as JSON (no secrets in it)
    enqueued_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_attempt_at REAL,
    last_error TEXT,                        -- never a URL or key: see controller.adapters.notify
    delivered_at REAL,
    failed_at REAL,                         -- given up: permanent failure, or notifier no longer configured
    UNIQUE (event_id, notifier)
)"""

RELEASE_0_1_0 = (
    _NODE_REPORTS,
    _INCIDENTS,
    "CREATE INDEX IF NOT EXISTS incidents_cluster_opened ON incidents (cluster, opened_at)",
    _HEAL_STATE,
    _ACTIONS,
    "CREATE INDEX IF NOT EXISTS actions_cluster ON actions (cluster, id)",
    _ENROLLMENTS,
    _ALERT_OUTBOX,
    "CREATE INDEX IF NOT EXISTS alert_outbox_open ON alert_outbox (notifier, id) "
    "WHERE delivered_at IS NULL AND failed_at IS NULL",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "tables of release 0.1.0: node reports, incidents, heal state and actions, enrollments, "
                 "alert outbox", sql=RELEASE_0_1_0),
    # An agent's acknowledgement finds its action by directive id (HealStore.acknowledged): without this,
    # every acknowledgement scanned the whole audit log.
    Migration(2, "index the actions audit log by directive id",
              sql=("CREATE INDEX IF NOT EXISTS actions_directive ON actions (directive_id) "
                   "WHERE directive_id IS NOT NULL",)),
    # Each node's own credential (its push key, issued at enrollment) and the droplet the controller's own
    # records bind it to (set when the controller creates the droplet): who a report comes from and which
    # droplet a disruptive action may touch are never taken from what an agent says.
    Migration(3, "node credentials and droplet bindings",
              sql=("CREATE TABLE IF NOT EXISTS node_credentials ("
                   "cluster TEXT NOT NULL, node TEXT NOT NULL, key_hex TEXT, droplet_id INTEGER, "
                   "issued_at REAL, revoked_at REAL, PRIMARY KEY (cluster, node))",)),
)

LATEST_VERSION = MIGRATIONS[-1].version
