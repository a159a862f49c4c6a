"""An unreadable heal state fails closed (issue #11): it is never replaced silently by defaults (a paused
cluster must not come back unpaused); healing for that cluster is held with a critical
HEAL_STATE_UNREADABLE finding, other clusters are unaffected, and only an operator's audited
`redwarden heal reset-state CLUSTER` replaces it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from controller.adapters.storage.db import Database
from controller.adapters.storage.heal_log import HealStateUnreadable, HealStore
from controller.app.service import Parts, assemble
from controller.config import ClusterConfig, ControllerConfig
from controller.core.checks import check
from controller.core.findings import Code, Severity
from controller.core.planner import HealPolicy, HealSnapshot, HealState, RestartService, check_heal_state, plan_heal
from controller.core.policy import Policy
from protocol.signing import HEADER_CLUSTER, HEADER_NODE, HEADER_SIGNATURE, HEADER_TIMESTAMP, sign_report
from tests.factories import FIXTURES, kill_redis, scenario_view

GARBAGE = '{"cluster": "shop", "paused": "maybe", "nodes": 7}'
ADMIN = "admin-token-for-tests-0123456789"


# -- the core ---------------------------------------------------------------------------------------


def test_an_unreadable_state_holds_every_action_with_the_fix_in_the_reason() -> None:
    view = kill_redis(scenario_view("healthy"), "redis-2")
    snapshot = HealSnapshot(view, check(view, Policy(), view.now), HealState(cluster=view.name), None)
    assert [type(a) for a in plan_heal(snapshot, HealPolicy(), view.now).actions] == [RestartService]
    held = plan_heal(HealSnapshot(view, snapshot.findings, snapshot.state, None, state_unreadable="bad JSON"),
                     HealPolicy(), view.now)
    assert held.actions == () and held.summary == "no action: heal state unreadable"
    assert [h.what for h in held.held] == ["any action"]
    assert "bad JSON" in held.held[0].reason and "`redwarden heal reset-state sandbox`" in held.held[0].reason


def test_the_finding_is_critical_and_names_the_command() -> None:
    assert check_heal_state("shop", None) == ()
    (finding,) = check_heal_state("shop", "paused: Input should be a valid boolean")
    assert finding.code is Code.HEAL_STATE_UNREADABLE and finding.severity is Severity.CRITICAL
    assert finding.key == "shop/HEAL_STATE_UNREADABLE/cluster"
    assert "redwarden heal reset-state shop" in finding.message and "valid boolean" in finding.message


# -- the store ----------------------------------------------------------------------------------------


def put_raw(db: Database, cluster: str, data: str) -> None:
    with db.transaction() as tx:
        tx.execute("INSERT INTO heal_state (cluster, data) VALUES (?, ?) ON CONFLICT (cluster) DO UPDATE SET "
                   "data = excluded.data", (cluster, data))


@pytest.mark.parametrize(("data", "why"), [
    (GARBAGE, "paused"),
    ("not json at all", "JSON"),
    ('{"cluster": "other", "paused": true}', "another cluster"),
])
def test_the_store_raises_for_a_state_it_cannot_read_and_changes_nothing(state_db: Database, data: str,
                                                                         why: str) -> None:
    store = HealStore(state_db)
    put_raw(state_db, "shop", data)
    with pytest.raises(HealStateUnreadable, match=why):
        store.load("shop")
    assert state_db.read("SELECT data FROM heal_state") == [(data,)]
    assert store.load("fresh") == HealState(cluster="fresh")  # no row: a fresh state, as before


def test_reset_writes_a_fresh_state_and_audits_the_old_data(state_db: Database) -> None:
    store = HealStore(state_db)
    put_raw(state_db, "shop", GARBAGE)
    assert store.reset("shop", 1000.0) == HealState(cluster="shop")
    assert store.load("shop") == HealState(cluster="shop")
    (row,) = store.history("shop")
    assert row["kind"] == "ResetHealState" and row["status"] == "succeeded" and "operator" in row["reason"]
    assert "maybe" in row["detail"]  # the start of what was lost, for whoever wants to know


# -- end to end: a controller started on a state file with a garbage row --------------------------------


def signed(key: bytes, node: str, body: bytes, now: float) -> dict[str, str]:
    ts = f"{now:.6f}"
    return {HEADER_CLUSTER: "sandbox", HEADER_NODE: node, HEADER_TIMESTAMP: ts,
            HEADER_SIGNATURE: sign_report(key, ts, "sandbox", node, body)}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[tuple[Parts, Clock]]:
    """Clusters "sandbox" (its heal state a garbage row) and "shop" (none), a fixed clock; not started:
    the test runs the cycles."""
    db = Database(tmp_path / "state.db")
    put_raw(db, "sandbox", GARBAGE)
    db.close()
    (tmp_path / "admin.token").write_text(ADMIN)
    config = ControllerConfig(state_path=str(tmp_path / "state.db"), admin_token_file=str(tmp_path / "admin.token"),
                              clusters={"sandbox": ClusterConfig(report_interval_s=1.0), "shop": ClusterConfig()},
                              heal=HealPolicy(node_cooldown_s=0, cluster_cooldown_s=0))
    clock = Clock(json.loads((FIXTURES / "healthy-redis-1.json").read_text())["collected_at"])
    parts = assemble(config, clock=clock)
    try:
        yield parts, clock
    finally:
        parts.outbox.close()
        parts.reports.close()
        parts.db.close()


def cycle(parts: Parts, client: TestClient, keys: dict[str, bytes], clock: Clock, dt: float) -> None:
    """The nodes report (redis-2's Redis is down), then one watch cycle and one heal step."""
    clock.now += dt
    for node, key in keys.items():
        body = (FIXTURES / f"replica2-redis-killed-{node}.json").read_bytes()
        assert client.post("/v1/reports", content=body, headers=signed(key, node, body, clock.now)).status_code == 200
    parts.watcher.run_cycle(clock.now)
    assert parts.watcher._heal_worker is not None
    parts.watcher._heal_worker.run_pending()


def test_a_controller_holds_a_cluster_whose_heal_state_is_garbage_until_an_operator_resets_it(
        controller: tuple[Parts, Clock]) -> None:
    parts, clock = controller
    client = TestClient(parts.app)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    keys = {n: parts.credentials.issue("sandbox", n, clock.now) for n in ("redis-1", "redis-2", "redis-3")}
    for dt in (0.0, 121.0, 5.0, 5.0):  # armed after the grace; REPLICA_DOWN confirmed
        cycle(parts, client, keys, clock, dt)

    status = client.get("/v1/clusters/sandbox", headers=admin).json()
    codes = {f["code"] for f in status["findings"]}
    assert {"HEAL_STATE_UNREADABLE", "REPLICA_DOWN"} <= codes and status["health"] == "critical"
    assert status["heal"]["plan"] == "no action: heal state unreadable"
    assert "paused" in status["heal"]["state_unreadable"]
    assert parts.heal_log.history("sandbox", 10) == []  # nothing was done
    assert parts.db.read("SELECT data FROM heal_state WHERE cluster = 'sandbox'") == [(GARBAGE,)]  # untouched
    assert any(i["code"] == "HEAL_STATE_UNREADABLE" for i in parts.incidents.history("sandbox", 10))
    # other clusters are unaffected
    assert "HEAL_STATE_UNREADABLE" not in {f["code"] for f in client.get("/v1/clusters/shop", headers=admin)
                                           .json()["findings"]}
    # no switch changes the unreadable state; a cluster whose state reads fine has nothing to reset
    refused = client.post("/v1/clusters/sandbox/pause", headers=admin)
    assert refused.status_code == 409 and "reset-state" in refused.text
    assert client.post("/v1/clusters/shop/heal-state/reset", headers=admin).status_code == 409

    reset = client.post("/v1/clusters/sandbox/heal-state/reset", headers=admin)
    assert reset.status_code == 200 and reset.json()["state_unreadable"] is None
    (audit,) = parts.heal_log.history("sandbox", 10)
    assert audit["kind"] == "ResetHealState" and "maybe" in audit["detail"]
    cycle(parts, client, keys, clock, 1.0)
    status = client.get("/v1/clusters/sandbox", headers=admin).json()
    assert "HEAL_STATE_UNREADABLE" not in {f["code"] for f in status["findings"]}
    assert status["heal"]["plan"].startswith("restart redis on redis-2")  # healing acts again
    assert [a["kind"] for a in parts.heal_log.history("sandbox", 10)] == ["RestartService", "ResetHealState"]
