"""The state file: one `Database` for every store, versioned migrations, a file of release 0.1.0 adopted
with every record, and a typed error for a file this code cannot use."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest

from controller.adapters.notify import DeliveryResult
from controller.adapters.outbox import Outbox
from controller.adapters.storage.db import Database, StateFileError
from controller.adapters.storage.enrollments import Enrollments
from controller.adapters.storage.heal_log import HealStore
from controller.adapters.storage.incidents import IncidentLog
from controller.adapters.storage.migrations import LATEST_VERSION, MIGRATIONS, Migration
from controller.adapters.storage.reports import REPORT_ADAPTER, ReportStore
from controller.app.service import assemble
from controller.config import ClusterConfig, ControllerConfig
from controller.core.alerts import AlertEvent
from controller.core.planner import HealState, NodeHealth

FIXTURES = Path(__file__).parent / "fixtures"
V0_1_0 = FIXTURES / "state" / "v0_1_0.db"  # made by tests/fixtures/state/make_v0_1_0.py with 0.1.0's code
# what make_v0_1_0.py wrote (it imports 0.1.0's modules, so its constants are repeated here)
T0 = 1_790_000_000.0
ENROLLMENT_TOKEN = "fixture-enrollment-token-0.1.0"
TABLES = ("node_reports", "incidents", "heal_state", "actions", "enrollments", "alert_outbox")


class Recorder:
    """A notifier that accepts everything and remembers what it got, in order."""

    min_severity = "info"
    min_interval_s = 0.0

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[AlertEvent] = []

    def send(self, event: AlertEvent) -> DeliveryResult:
        self.sent.append(event)
        return DeliveryResult.delivered()


def copy_of_v0_1_0(tmp_path: Path) -> Path:
    path = tmp_path / "state.db"
    shutil.copyfile(V0_1_0, path)
    return path


def versions(db: Database) -> list[int]:
    return [int(r[0]) for r in db.read("SELECT version FROM schema_version ORDER BY version")]


# -- a file made by release 0.1.0 -----------------------------------------------------------------------


def test_a_state_file_of_release_0_1_0_keeps_every_record(tmp_path: Path) -> None:
    path = copy_of_v0_1_0(tmp_path)
    db = Database(path)
    try:
        assert db.applied == tuple(m.version for m in MIGRATIONS)
        assert db.schema_version() == LATEST_VERSION and versions(db) == list(range(1, LATEST_VERSION + 1))

        # the latest report of each node, as the agent sent it
        nodes = ReportStore(db).nodes("sandbox")
        assert [(s.name, s.received_at) for s in nodes] == [(f"redis-{n}", T0 + n) for n in (1, 2, 3)]
        for n, state in zip((1, 2, 3), nodes, strict=True):
            assert state.report == REPORT_ADAPTER.validate_json((FIXTURES / "reports" / f"healthy-redis-{n}.json")
                                                                .read_bytes())

        # incidents: the open one is loaded back as active, both are in the history with their timelines
        incidents = IncidentLog(db)
        active = incidents.load_active()
        assert [(i.key, i.status, i.opened_at) for i in active] == [
            ("sandbox/REPLICA_DOWN/node redis-2", "open", T0 + 12)]
        history = incidents.history("sandbox")
        assert [(h["subject"], h["status"]) for h in history] == [("node redis-3", "resolved"),
                                                                   ("node redis-2", "open")]
        assert history[0]["resolved_at"] == T0 + 30 and len(history[0]["timeline"]) >= 3

        # healing: the pause, the budget and the ladder; the audit log, newest first
        heal = HealStore(db)
        assert heal.load("sandbox") == HealState(
            cluster="sandbox", paused=True, paused_nodes=("redis-3",), budget_day="2026-09-21", actions_today=2,
            last_action_at=T0 + 40,
            nodes=(("redis-2", NodeHealth(restarts=1, last_restart_at=T0 + 40, last_action_at=T0 + 40)),))
        assert [(a["id"], a["node"], a["status"]) for a in heal.history("sandbox")] == [
            (4, "redis-2", "sent"), (3, "redis-3", "held"), (2, "redis-2", "succeeded"), (1, "redis-2", "failed")]
        heal.acknowledged("dir-0002", True, "sentinel reset", T0 + 51)  # found through migration 2's index
        assert heal.history("sandbox", limit=1)[0]["status"] == "succeeded"
        assert heal.started("sandbox", None, "wait", "wait", "why", T0 + 60) == 5  # ids carry on

        # alerts: pagerduty's were delivered; webhook's wait, the head tried once, and go out in order
        recorders = [Recorder("pagerduty"), Recorder("webhook")]
        outbox = Outbox(db, recorders, clock=lambda: T0 + 100)
        stats = outbox.stats()
        assert (stats["pagerduty"].delivered, stats["pagerduty"].pending) == (3, 0)
        assert (stats["webhook"].pending, stats["webhook"].last_error) == (3, "webhook unreachable (ConnectionError)")
        assert [(p.notifier, p.attempts) for p in outbox.pending()] == [("webhook", 1), ("webhook", 0), ("webhook", 0)]
        stored = AlertEvent.from_dict(json.loads(db.read("SELECT event FROM alert_outbox WHERE id = 1")[0][0]))
        assert outbox.enqueue([stored]) == 0  # the same event is not enqueued twice across the upgrade
        assert outbox.deliver_due(T0 + 100) == 3
        assert recorders[0].sent == []
        assert [(e.action, e.subject) for e in recorders[1].sent] == [
            ("trigger", "node redis-2"), ("trigger", "node redis-3"), ("resolve", "node redis-3")]
        outbox.close()

        # the enrollment token: good once, for its node
        enrollments = Enrollments(db)
        other = enrollments.redeem("sandbox", "redis-5", ENROLLMENT_TOKEN, now=T0 + 61)
        assert other == "token issued for another node"
        assert enrollments.redeem("sandbox", "redis-4", ENROLLMENT_TOKEN, now=T0 + 61) is None
        assert enrollments.redeem("sandbox", "redis-4", ENROLLMENT_TOKEN, now=T0 + 62) == "token already used"
    finally:
        db.close()

    again = Database(path)
    try:
        assert again.applied == ()
        assert again.schema_version() == LATEST_VERSION and versions(again) == list(range(1, LATEST_VERSION + 1))
        assert len(ReportStore(again).nodes("sandbox")) == 3
    finally:
        again.close()


def shape(db: Database) -> dict[str, object]:
    """Tables with their columns (name, type, not null, default, primary key) and the indexes on them."""
    out: dict[str, object] = {}
    for table in (*TABLES, "schema_version"):
        out[table] = db.read(f"SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info('{table}')")
        out[f"{table} indexes"] = sorted(db.read(f"SELECT name, \"unique\", partial FROM pragma_index_list('{table}')"))
    return out


def test_an_adopted_file_has_the_same_schema_as_a_fresh_one(tmp_path: Path) -> None:
    adopted = Database(copy_of_v0_1_0(tmp_path))
    fresh = Database(tmp_path / "fresh.db")
    try:
        assert shape(adopted) == shape(fresh)
        assert ("actions_directive", 0, 1) in shape(fresh)["actions indexes"]  # type: ignore[operator]
    finally:
        adopted.close()
        fresh.close()


# -- fresh files, migration mechanics ----------------------------------------------------------------------


def test_a_fresh_file_gets_every_migration_once(tmp_path: Path) -> None:
    path = tmp_path / "var" / "lib" / "redwarden" / "state.db"  # its directory is made
    db = Database(path)
    try:
        assert db.applied == tuple(range(1, LATEST_VERSION + 1)) and versions(db) == list(db.applied)
        assert all(isinstance(r[0], float) and r[0] > 1.7e9 for r in db.read("SELECT applied_at FROM schema_version"))
        assert db.read("PRAGMA journal_mode") == [("wal",)]
        names = {r[0] for r in db.read("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert set(TABLES) <= names
    finally:
        db.close()
    again = Database(path)
    assert again.applied == () and again.schema_version() == LATEST_VERSION
    again.close()


def test_an_in_memory_database_works(tmp_path: Path) -> None:
    db = Database(":memory:")
    assert db.schema_version() == LATEST_VERSION
    db.close()


def seed(cur: sqlite3.Cursor) -> None:
    cur.executemany("INSERT INTO t (v) VALUES (?)", [(1,), (2,)])


STEPS = (
    Migration(1, "a table", sql=("CREATE TABLE t (v INTEGER NOT NULL)",)),
    Migration(2, "two rows, by a function", run=seed),
)


def test_a_failing_migration_is_rolled_back_and_named(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = Database(path, STEPS)
    assert db.applied == (1, 2) and db.read("SELECT v FROM t ORDER BY v") == [(1,), (2,)]
    db.close()
    broken = (*STEPS, Migration(3, "a column and a typo", sql=("ALTER TABLE t ADD COLUMN w TEXT", "SELEC 1")))
    with pytest.raises(StateFileError) as caught:
        Database(path, broken)
    message = str(caught.value)
    assert str(path) in message and "migration 3 (a column and a typo) failed and was rolled back" in message
    assert "Traceback" not in message and "\n" not in message
    db = Database(path, STEPS)
    assert db.applied == () and versions(db) == [1, 2]
    assert [r[0] for r in db.read("SELECT name FROM pragma_table_info('t')")] == ["v"]  # no column w
    db.close()


def test_migrations_must_be_numbered_in_order(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="numbered 1, 2, 3"):
        Database(tmp_path / "state.db", (STEPS[1], STEPS[0]))


# -- files this code cannot use -----------------------------------------------------------------------------


def test_a_file_from_a_newer_release_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = Database(path)
    with db.transaction() as tx:
        tx.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (LATEST_VERSION + 1, T0))
    db.close()
    before = path.read_bytes()
    with pytest.raises(StateFileError) as caught:
        Database(path)
    message = str(caught.value)
    assert str(path) in message
    assert f"schema version {LATEST_VERSION + 1}, newer than this redwarden knows (up to {LATEST_VERSION})" in message
    assert "restore a copy" in message and "Traceback" not in message and "\n" not in message
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    assert path.read_bytes() == before


@pytest.mark.parametrize("content", [b"not a database\n" * 100, b"SQLite format 3\x00" + b"\xff" * 200],
                         ids=["text", "bad-header"])
def test_a_file_that_is_not_a_database_is_refused_untouched(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(content)
    with pytest.raises(StateFileError) as caught:
        Database(path)
    message = str(caught.value)
    assert message.startswith(f"state file {path} is not a SQLite database or is damaged")
    assert "move it aside" in message and "Traceback" not in message and "\n" not in message
    assert caught.value.__suppress_context__  # SQLite's exception is not chained into what a person reads
    assert path.read_bytes() == content


def test_a_state_path_that_cannot_be_opened_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state.db").mkdir()  # a directory where the file should be
    with pytest.raises(StateFileError, match=r"state file .*state\.db"):
        Database(tmp_path / "state.db")


# -- the transaction helper ---------------------------------------------------------------------------------


def test_a_transaction_rolls_back_when_its_block_raises(state_db: Database) -> None:
    heal = HealStore(state_db)
    heal.save(HealState(cluster="shop", paused=True))
    with pytest.raises(RuntimeError, match="boom"), state_db.transaction() as tx:
        tx.execute("DELETE FROM heal_state")
        tx.execute("INSERT INTO heal_state (cluster, data) VALUES ('other', '{}')")
        raise RuntimeError("boom")
    assert heal.load("shop").paused and state_db.read("SELECT cluster FROM heal_state") == [("shop",)]
    # a failing statement rolls back the ones before it, and the connection is usable afterwards
    with pytest.raises(sqlite3.IntegrityError), state_db.transaction() as tx:
        tx.execute("INSERT INTO heal_state (cluster, data) VALUES ('a', '{}')")
        tx.execute("INSERT INTO heal_state (cluster, data) VALUES ('shop', '{}')")
    assert state_db.read("SELECT cluster FROM heal_state") == [("shop",)]
    with state_db.transaction() as tx:
        tx.execute("INSERT INTO heal_state (cluster, data) VALUES ('b', '{}')")
    assert state_db.read("SELECT cluster FROM heal_state ORDER BY cluster") == [("b",), ("shop",)]


def test_stores_share_the_connection_across_threads(state_db: Database) -> None:
    """The report writer, the audit log and enrollments at once, from several threads, on one connection."""
    reports = ReportStore(state_db, flush_interval_s=0.001)
    heal = HealStore(state_db)
    enrollments = Enrollments(state_db)
    report = REPORT_ADAPTER.validate_json((FIXTURES / "reports" / "healthy-redis-1.json").read_bytes())
    ids: list[int] = []
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(100):
                ids.append(heal.started("shop", f"redis-{n}", "restart", "r", "why", float(i)))
                reports.put_report(report, float(i))
                assert enrollments.redeem("shop", "x", enrollments.issue("shop", "x", now=0.0), now=1.0) is None
                heal.history("shop", limit=5)
        except BaseException as e:
            errors.append(e)

    reports.start()
    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reports.close()
    assert errors == []
    assert sorted(ids) == list(range(1, 401))
    assert state_db.read("SELECT COUNT(*) FROM enrollments WHERE used_at IS NOT NULL") == [(400,)]
    assert state_db.read("SELECT received_at FROM node_reports") == [(99.0,)]


def test_assemble_hands_one_database_to_every_store(tmp_path: Path) -> None:
    config = ControllerConfig(state_path=str(tmp_path / "state.db"), clusters={"shop": ClusterConfig()})
    parts = assemble(config)
    try:
        assert parts.db.path == config.state_path and parts.db.schema_version() == LATEST_VERSION
        parts.heal_log.save(HealState(cluster="shop", paused=True))
        token = parts.enrollments.issue("shop", "redis-9", now=T0)
        assert parts.db.read("SELECT cluster FROM heal_state") == [("shop",)]
        assert parts.enrollments.redeem("shop", "redis-9", token, now=T0 + 1) is None
        assert parts.db.read("SELECT COUNT(*) FROM enrollments WHERE used_at IS NOT NULL") == [(1,)]
    finally:
        parts.outbox.close()
        parts.reports.close()
        parts.db.close()
    with pytest.raises(sqlite3.ProgrammingError):  # closed once, for all of them
        parts.heal_log.load("shop")
