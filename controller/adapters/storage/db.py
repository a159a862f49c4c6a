"""The controller's state file: the one SQLite connection every store shares, and its schema kept current.

Layer: adapters (storage). `Database(path)` opens the file (WAL, synchronous=NORMAL), brings its schema
up to date with the migrations of `controller.adapters.storage.migrations`, and then offers a small
surface to the stores: `transaction()` (BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any error), `read()`
(one query, all its rows) and `close()`. One lock serialises every use of the connection, so the stores
may be called from any thread. The surface is small and the SQL plain so that another backend
(PostgreSQL) could stand behind it later.

A file this code cannot use raises `StateFileError`, whose message names the file and what to do: not a
SQLite database (or damaged), written by a newer release (its `schema_version` is beyond ours), or not
openable at all. It is a `RuntimeError`, so the CLI prints it as one line and exits 1.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog

from controller.adapters.storage.migrations import MIGRATIONS, Migration

log = structlog.get_logger("redwarden.controller")

_SCHEMA_VERSION = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    applied_at REAL NOT NULL
)"""

_DAMAGED = {"SQLITE_NOTADB", "SQLITE_CORRUPT"}


class StateFileError(RuntimeError):
    """The state file cannot be used as it is. The message names the file and what to do; it holds no
    traceback and no secret (SQLite's own messages name no data)."""


class Database:
    """The state file, open and migrated. Thread-safe: one lock around the one connection."""

    def __init__(self, path: str | Path, migrations: Sequence[Migration] = MIGRATIONS) -> None:
        _check_numbering(migrations)
        self.path = str(path)
        self._lock = threading.RLock()
        self._conn = _connect(self.path)
        try:
            self.applied: tuple[int, ...] = self._migrate(migrations)
        except BaseException:
            self._conn.close()
            raise

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """A cursor inside BEGIN IMMEDIATE; COMMIT when the block ends, ROLLBACK if it raises. Not nestable."""
        with self._lock:
            cur = self._conn.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (a full disk, an I/O error): then there is nothing to undo
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            finally:
                cur.close()

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one query."""
        with self._lock:
            rows: list[tuple[Any, ...]] = self._conn.execute(sql, params).fetchall()
        return rows

    def schema_version(self) -> int:
        rows = self.read("SELECT MAX(version) FROM schema_version")
        return int(rows[0][0] or 0)

    def close(self) -> None:
        """Close the connection (after the stores that use it are closed); idempotent."""
        with self._lock:
            self._conn.close()

    # -- migrations ---------------------------------------------------------------------------------

    def _migrate(self, migrations: Sequence[Migration]) -> tuple[int, ...]:
        """Apply, in order and one transaction each, the migrations newer than the file; return their versions.
        The version is read inside each transaction, so two processes opening one file apply each step once."""
        latest = migrations[-1].version if migrations else 0
        try:
            with self.transaction() as tx:
                tx.execute(_SCHEMA_VERSION)
            found = self.schema_version()
        except sqlite3.Error as e:
            raise _unusable(self.path, e) from None
        if found > latest:
            raise StateFileError(
                f"state file {self.path} has schema version {found}, newer than this redwarden knows (up to "
                f"{latest}): it was written by a newer release. Run that release (or a newer one) with it, or "
                "restore a copy of the file saved before the upgrade"
            )
        applied: list[int] = []
        for m in migrations:
            if m.version <= found:
                continue
            try:
                with self.transaction() as tx:
                    current = int(tx.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0)
                    if current >= m.version:
                        continue  # another process applied it meanwhile
                    for statement in m.sql:
                        tx.execute(statement)
                    if m.run is not None:
                        m.run(tx)
                    tx.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                               (m.version, time.time()))
            except sqlite3.Error as e:
                raise StateFileError(
                    f"state file {self.path}: migration {m.version} ({m.description}) failed and was rolled "
                    f"back, the file is as it was ({_sqlite_message(e)}). Keep a copy of the file and report this"
                ) from None
            applied.append(m.version)
            log.info("state.migrated", path=self.path, version=m.version, description=m.description)
        return tuple(applied)


def _connect(path: str) -> sqlite3.Connection:
    try:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
    except (OSError, sqlite3.Error) as e:
        raise StateFileError(
            f"cannot open state file {path} ({_sqlite_message(e)}): check that its directory exists and "
            "that the controller's user may write there, or set state_path to another file"
        ) from None
    try:
        conn.execute("PRAGMA journal_mode=WAL")  # the first read of the file: a non-database fails here
        conn.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.Error as e:
        conn.close()
        raise _unusable(path, e) from None
    return conn


def _unusable(path: str, e: sqlite3.Error) -> StateFileError:
    if getattr(e, "sqlite_errorname", None) in _DAMAGED or "not a database" in str(e) or "malformed" in str(e):
        return StateFileError(
            f"state file {path} is not a SQLite database or is damaged ({_sqlite_message(e)}): restore it from "
            "a copy, or move it aside to start afresh (open incidents, heal pauses, the action log and pending "
            "alerts are then forgotten; agents re-report within seconds)"
        )
    return StateFileError(
        f"cannot use state file {path} ({_sqlite_message(e)}): check that no other program holds it and that "
        "the controller's user may write it and its directory"
    )


def error_text(e: BaseException) -> str:
    """A failure as one short line for a log or `GET /healthz` (which anyone may read): the type, and for
    SQLite and OS errors their first line, whose words are the library's own ("database or disk is full")
    and name no data and no secret; any other exception's message could carry data, so only its type."""
    first = str(e).splitlines()[0][:200] if str(e) and isinstance(e, sqlite3.Error | OSError) else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def _sqlite_message(e: BaseException) -> str:
    """The library's one-line reason (e.g. "file is not a database"): no path of ours, no data, no traceback."""
    if isinstance(e, OSError):
        return e.strerror or type(e).__name__
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _check_numbering(migrations: Sequence[Migration]) -> None:
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migrations must be numbered 1, 2, 3... in order, got {versions}")
