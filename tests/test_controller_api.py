"""The controller's HTTP API and view, in process (TestClient), over recorded reports and a fixed clock."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from console.render import render_status
from controller.adapters.api import ApiDeps, create_app
from controller.adapters.auth import OperatorTokens
from controller.adapters.directives import DirectiveQueue
from controller.adapters.storage.credentials import NodeCredentials
from controller.adapters.storage.db import Database
from controller.adapters.storage.reports import ReportStore
from controller.app.fleet import Fleet
from controller.config import ClusterConfig, ControllerConfig
from protocol.signing import HEADER_CLUSTER, HEADER_NODE, HEADER_SIGNATURE, HEADER_TIMESTAMP, sign_report

FIXTURES = Path(__file__).parent / "fixtures" / "reports"
READ_TOKEN = "read-token-for-tests-0123456789"
ADMIN_TOKEN = "admin-token-for-tests-0123456789"
NODES = ("redis-1", "redis-2", "redis-3")


def recorded(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Api:
    """The API wired to a real report store and fleet, as the service wires it; `changed` stands for the
    watch loop's wake-up."""

    def __init__(self, db: Database, clock: Clock) -> None:
        config = ControllerConfig(state_path=db.path, clusters={"sandbox": ClusterConfig(report_interval_s=1.0)})
        self.store = ReportStore(db)
        self.credentials = NodeCredentials(db)
        self.keys = {n: self.credentials.issue("sandbox", n, 0.0) for n in NODES}
        self.changed = threading.Event()
        self.directives = DirectiveQueue(self.credentials)
        self.deps = ApiDeps(clusters=config.clusters, reports=self.store, directives=self.directives,
                            fleet=Fleet(config.clusters, self.store), node_keys=self.credentials,
                            tokens=OperatorTokens(read=(READ_TOKEN,), admin=(ADMIN_TOKEN,)), clock=clock,
                            on_vitals_changed=self.changed.set)


def make(db: Database, now: float, token: str | None = READ_TOKEN) -> tuple[TestClient, Api, Clock]:
    clock = Clock(now)
    api = Api(db, clock)
    client = TestClient(create_app(api.deps))
    _API[client] = api
    if token:
        client.headers["Authorization"] = f"Bearer {token}"
    return client, api, clock


_TICK = itertools.count(1)


def signed_headers(key: bytes, node: str, body: bytes, now: float, cluster: str = "sandbox") -> dict[str, str]:
    ts = f"{now + next(_TICK) * 1e-6:.6f}"  # every push of a node carries a newer timestamp, as an agent's do
    return {HEADER_CLUSTER: cluster, HEADER_NODE: node, HEADER_TIMESTAMP: ts,
            HEADER_SIGNATURE: sign_report(key, ts, cluster, node, body)}


def post(client: TestClient, report: dict[str, Any], now: float, api: Api | None = None) -> Any:
    """Push `report` signed with its node's key, as that node's agent does."""
    body = json.dumps(report).encode()
    node = report["identity"]["node"]
    key = (api or _API[client]).keys[node]
    return client.post("/v1/reports", content=body, headers=signed_headers(key, node, body, now))


_API: dict[TestClient, Api] = {}


def test_ingest_and_derive_the_cluster_view(state_db: Database) -> None:
    reports = [recorded(f"healthy-redis-{i}") for i in (1, 2, 3)]
    now = reports[0]["collected_at"]
    client, _, clock = make(state_db, now)
    for r in reports:
        assert post(client, r, now).json() == {"accepted": True, "directives": []}
    clock.now = now + 0.5
    c = client.get("/v1/clusters/sandbox").json()
    assert c["master"] == "127.0.0.3:6379"
    assert c["sentinels"]["expected"] == 3 and c["sentinels"]["reachable"] == 3 and c["sentinels"]["agree"]
    assert [n["role"] for n in c["nodes"]] == ["master", "replica", "replica"]
    assert [n["report_age_s"] for n in c["nodes"]] == [0.5, 0.5, 0.5]
    assert c["nodes"][1]["lag_bytes"] is not None and c["nodes"][1]["lag_bytes"] >= 0
    assert [n["fenced_locally"] for n in c["nodes"]] == [None, None, None]  # recorded before the field
    text = render_status({"clusters": [c]})
    assert "master 127.0.0.3:6379; sentinels 3/3 reachable, agree" in text
    assert " PAUSED" not in text

    # silent for longer than 3 intervals: stale, no longer counted up
    clock.now = now + 3.5
    c = client.get("/v1/clusters").json()["clusters"][0]
    assert all(n["stale"] and not n["redis_up"] for n in c["nodes"])
    assert c["master"] is None and c["sentinels"]["reachable"] == 0
    assert "STALE" in render_status({"clusters": [c]})
    assert client.get("/v1/clusters/nope").status_code == 404


def test_a_master_fenced_by_its_own_agent_shows_in_its_node_row(state_db: Database) -> None:
    reports = [recorded(f"healthy-redis-{i}") for i in (1, 2, 3)]
    now = reports[0]["collected_at"]
    reports[0]["redis"]["fenced_locally"] = True
    reports[1]["redis"]["fenced_locally"] = False
    client, _, clock = make(state_db, now)
    for r in reports:
        assert post(client, r, now).json()["accepted"] is True
    clock.now = now + 0.5
    c = client.get("/v1/clusters").json()["clusters"][0]
    assert [n["fenced_locally"] for n in c["nodes"]] == [True, False, None]
    assert "master PAUSED" in render_status({"clusters": [c]})


def test_reports_survive_a_controller_restart(tmp_path: Path, open_db: Callable[[Path], Database]) -> None:
    report = recorded("healthy-redis-1")
    now = report["collected_at"]
    client, ctl, _ = make(open_db(tmp_path / "state.db"), now)
    post(client, report, now)
    ctl.store.close()
    client2, ctl2, _ = make(open_db(tmp_path / "state.db"), now + 1)
    nodes = client2.get("/v1/clusters/sandbox").json()["nodes"]
    assert [(n["name"], n["report_age_s"]) for n in nodes] == [("redis-1", 1.0)]
    ctl2.store.close()


@pytest.mark.parametrize(
    ("mutate", "loc"),
    [
        (lambda r: r["redis"].update(ping_ms="fast"), "redis.ping_ms"),
        (lambda r: r["sentinel"]["masters"][0].update(quorum=[2]), "sentinel.masters.0.quorum"),
        (lambda r: r.pop("host"), "host"),
        (lambda r: r["identity"].update(cluster="other"), "identity.cluster"),
        (lambda r: r.update(seq=None), "seq"),
    ],
)
def test_invalid_reports_get_422_naming_the_field(state_db: Database, mutate: Any, loc: str) -> None:
    report = recorded("healthy-redis-1")
    mutate(report)
    client, _, _ = make(state_db, report["collected_at"])
    resp = post(client, report, report["collected_at"])
    assert resp.status_code == 422
    assert loc in [d.get("loc") for d in resp.json()["detail"]]


def test_non_json_and_non_object_bodies_are_4xx(state_db: Database) -> None:
    client, api, _ = make(state_db, 1000.0)
    for body in (b"{", b"[]", b"null", b"\xff\xfe"):
        resp = client.post("/v1/reports", content=body, headers=signed_headers(api.keys["redis-1"], "redis-1",
                                                                                body, 1000.0))
        assert 400 <= resp.status_code < 500, body
    resp = client.post("/v1/reports", content=b"{}")
    assert resp.status_code == 401 and "missing header" in resp.text


def test_a_report_that_changes_a_nodes_vitals_wakes_the_watch_cycle(state_db: Database) -> None:
    report = recorded("healthy-redis-1")
    now = report["collected_at"]
    client, ctl, _ = make(state_db, now)
    post(client, report, now)
    assert ctl.changed.is_set()  # a node not seen before
    ctl.changed.clear()
    assert post(client, {**report, "seq": report["seq"] + 1}, now).status_code == 200
    assert not ctl.changed.is_set()  # the same health again: the cycle keeps its pace
    down = json.loads(json.dumps(report))
    down["redis"] = {"reachable": False, "error": "ConnectionRefusedError: connection refused"}
    down["host"]["redis_process"] = {"alive": False}
    assert post(client, down, now).status_code == 200
    assert ctl.changed.is_set()  # the redis-server died: the cycle runs now
