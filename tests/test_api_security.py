"""The controller's API refuses what an attacker on the private network would try (issue #10's list), in
process over recorded reports: each test is one attack, and asserts what happens now."""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi.testclient import TestClient

from controller.adapters.api import absurd_number, create_app
from controller.adapters.storage.db import Database
from tests.test_controller_api import ADMIN_TOKEN, READ_TOKEN, Api, Clock, make, post, recorded, signed_headers


def test_every_endpoint_but_the_agents_own_and_healthz_needs_a_token(state_db: Database) -> None:
    client, _, _ = make(state_db, 1000.0, token=None)
    assert client.get("/healthz").status_code == 200
    for path in ("/v1/clusters", "/v1/clusters/sandbox", "/v1/incidents", "/v1/actions", "/openapi.json"):
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers={"Authorization": f"Bearer {READ_TOKEN}"}).status_code == 200, path
        assert client.get(path, headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
    for path in ("/v1/clusters/sandbox/pause", "/v1/clusters/sandbox/resume", "/v1/clusters/sandbox/ack",
                 "/v1/clusters/sandbox/nodes", "/v1/clusters/sandbox/heal-state/reset"):
        assert client.post(path).status_code == 401, path
        assert client.post(path, headers={"Authorization": f"Bearer {READ_TOKEN}"}).status_code == 403, path
        # the admin token passes auth; this in-process API has no healer, so it answers 409, not 2xx
        assert client.post(path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 409, path


def test_headers_that_are_not_ascii_are_refused_not_crashed_on(state_db: Database) -> None:
    client, api, _ = make(state_db, 1000.0, token=None)
    resp = client.get("/v1/clusters", headers={"Authorization": "Bearer t\u00f6ken-0123456789".encode("latin-1")})
    assert resp.status_code == 401
    report = recorded("healthy-redis-1")
    body = json.dumps(report).encode()
    headers = signed_headers(api.keys["redis-1"], "redis-1", body, report["collected_at"])
    headers["X-Redwarden-Signature"] = "sha256=\u00e9\u00e9".encode("latin-1")  # type: ignore[assignment]
    assert client.post("/v1/reports", content=body, headers=headers).status_code == 401


def test_a_node_reports_only_as_itself(state_db: Database) -> None:
    report = recorded("healthy-redis-1")
    now = report["collected_at"]
    client, api, _ = make(state_db, now)
    body = json.dumps(report).encode()
    # redis-2's key, claiming to be redis-1 in the headers: the signature is not redis-1's
    forged = signed_headers(api.keys["redis-2"], "redis-1", body, now)
    assert client.post("/v1/reports", content=body, headers=forged).status_code == 401
    # redis-2 signing as itself a body that says it is redis-1: refused, naming the field
    resp = client.post("/v1/reports", content=body, headers=signed_headers(api.keys["redis-2"], "redis-2", body, now))
    assert resp.status_code == 422 and resp.json()["detail"][0]["loc"] == "identity.node"
    # a node the controller never enrolled cannot register itself (no ghost nodes)
    ghost = json.loads(json.dumps(report))
    ghost["identity"]["node"] = "ghost-1"
    gbody = json.dumps(ghost).encode()
    resp = client.post("/v1/reports", content=gbody, headers=signed_headers(api.keys["redis-1"], "ghost-1", gbody, now))
    assert resp.status_code == 401
    assert [n["name"] for n in client.get("/v1/clusters/sandbox").json()["nodes"]] == []


def test_a_captured_report_cannot_be_sent_again(state_db: Database) -> None:
    report = recorded("healthy-redis-1")
    now = report["collected_at"]
    client, api, _ = make(state_db, now)
    body = json.dumps(report).encode()
    headers = signed_headers(api.keys["redis-1"], "redis-1", body, now)
    assert client.post("/v1/reports", content=body, headers=headers).status_code == 200
    again = client.post("/v1/reports", content=body, headers=headers)
    assert again.status_code == 401 and "replayed" in again.text


def test_timestamps_that_are_not_finite_are_refused(state_db: Database) -> None:
    report = recorded("healthy-redis-1")
    client, api, _ = make(state_db, report["collected_at"])
    body = json.dumps(report).encode()
    for ts in ("nan", "inf", "-inf", "1e400", "NaN"):
        headers = signed_headers(api.keys["redis-1"], "redis-1", body, report["collected_at"])
        headers["X-Redwarden-Timestamp"] = ts
        resp = client.post("/v1/reports", content=body, headers=headers)
        assert resp.status_code == 401 and "finite" in resp.text, ts


def test_numbers_no_agent_can_mean_get_422_naming_the_field(state_db: Database) -> None:
    report = recorded("healthy-redis-1")
    now = report["collected_at"]
    client, api, _ = make(state_db, now)
    for path, raw in ((("redis", "ping_ms"), "NaN"), (("collect_ms",), "Infinity"), (("seq",), str(2**70))):
        doc = json.loads(json.dumps(report))
        target = doc
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = "@@"
        body = json.dumps(doc).replace('"@@"', raw).encode()
        resp = client.post("/v1/reports", content=body, headers=signed_headers(api.keys["redis-1"], "redis-1", body,
                                                                                now))
        assert resp.status_code == 422, path
        assert resp.json()["detail"][0]["loc"] == ".".join(path)


def test_absurd_number_finds_the_path() -> None:
    assert absurd_number({"a": 1}) is None  # plain dicts are not walked: reports are dataclasses
    assert absurd_number((1.0, math.nan)) == ".1"
    assert absurd_number(2**64) == ""


def test_bodies_are_limited_while_they_arrive(state_db: Database) -> None:
    client, api, _ = make(state_db, 1000.0)
    big = b"{" + b" " * (api.deps.max_report_bytes + 10) + b"}"
    resp = client.post("/v1/reports", content=big, headers=signed_headers(api.keys["redis-1"], "redis-1", big, 1000.0))
    assert resp.status_code == 413

    def chunks() -> Any:  # no Content-Length: the limit holds on the stream itself
        for _ in range(40):
            yield b" " * 1024

    resp = client.post("/v1/enroll", content=chunks())
    assert resp.status_code == 413


def test_deeply_nested_json_is_a_422_not_a_500(state_db: Database) -> None:
    client, _, _ = make(state_db, 1000.0, token=ADMIN_TOKEN)
    nested = b"[" * 5000 + b"]" * 5000
    assert client.post("/v1/enroll", content=nested).status_code == 422
    deep_obj = ('{"a":' * 2500 + "1" + "}" * 2500).encode()  # 15 KiB: under the size limit
    assert client.post("/v1/enroll", content=deep_obj).status_code == 422


def test_enroll_refuses_names_that_are_not_droplet_names(state_db: Database) -> None:
    client, _, _ = make(state_db, 1000.0, token=None)
    resp = client.post("/v1/enroll", json={"cluster": "sandbox", "node": "x" * 300, "token": "t"})
    assert resp.status_code == 422 and resp.json()["detail"][0]["loc"] == "node"
    resp = client.post("/v1/enroll", json={"cluster": "sandbox", "node": "Bad Name\n", "token": "t"})
    assert resp.status_code == 422


class _FakeHeal:
    """A healer that records the nodes it was asked to create (the rails live in the real one)."""

    def __init__(self) -> None:
        self.created: list[tuple[str, tuple[str, ...]]] = []

    def pause(self, cluster: str, node: str | None = None) -> object:
        return None

    resume = pause

    def ack(self, cluster: str) -> object:
        return None

    def status(self, cluster: str) -> dict[str, Any]:
        return {"paused": False}

    def create_node(self, cluster: str, name: str, sentinels: tuple[str, ...], firewall: bool,
                    controller_address: str | None) -> Any:
        from datetime import datetime, timezone

        from controller.adapters.cloud import Droplet

        self.created.append((name, sentinels))
        return Droplet(7, name, "new", "nyc3", "s", "i", None, (), None, None, datetime.now(timezone.utc))


def test_nodes_join_only_the_clusters_own_sentinels(state_db: Database) -> None:
    import dataclasses

    report = recorded("healthy-redis-1")
    now = report["collected_at"]
    api = Api(state_db, Clock(now))
    heal = _FakeHeal()
    client = TestClient(create_app(dataclasses.replace(api.deps, heal=heal)))
    client.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
    assert post(client, report, now, api).status_code == 200
    own = report["identity"]["address"] + ":26379"
    attacker = client.post("/v1/clusters/sandbox/nodes", json={"name": "redis-4", "sentinels": ["10.9.9.9:26379"]})
    assert attacker.status_code == 422 and attacker.json()["detail"][0]["loc"] == "sentinels"
    injected = client.post("/v1/clusters/sandbox/nodes",
                           json={"name": "redis-4", "sentinels": ["fe80::1%x 6379\nrequirepass x:26379"]})
    assert injected.status_code == 422
    assert client.post("/v1/clusters/sandbox/nodes", json={"name": "../etc", "sentinels": []}).status_code == 422
    assert client.post("/v1/clusters/sandbox/nodes", json={"name": "redis-4", "extra": 1}).status_code == 422
    ok = client.post("/v1/clusters/sandbox/nodes", json={"name": "redis-4", "sentinels": [own]})
    assert ok.status_code == 202 and heal.created == [("redis-4", (own,))]


def _with_enroller(state_db: Database, now: float) -> tuple[TestClient, Api, Any]:
    import dataclasses

    from controller.adapters.storage.enrollments import Enrollments
    from controller.adapters.storage.heal_log import HealStore
    from controller.app.enrollment import Enroller

    api = Api(state_db, Clock(now))
    tokens = Enrollments(state_db)
    enroller = Enroller(api.deps.clusters, tokens, api.credentials, redis_password=lambda *_: "redis-pw",
                        audit=HealStore(state_db))
    client = TestClient(create_app(dataclasses.replace(api.deps, enroller=enroller)))
    return client, api, tokens


def test_enrollment_gives_a_node_its_own_key_once(state_db: Database) -> None:
    report = recorded("healthy-redis-1")
    now = report["collected_at"]
    client, api, tokens = _with_enroller(state_db, now)
    token = tokens.issue("sandbox", "redis-1", now)
    got = client.post("/v1/enroll", json={"cluster": "sandbox", "node": "redis-1", "token": token}).json()
    assert set(got) == {"redis_password", "node_key"} and got["redis_password"] == "redis-pw"
    assert client.post("/v1/enroll", json={"cluster": "sandbox", "node": "redis-1", "token": token}).status_code == 403
    body = json.dumps(report).encode()
    old = client.post("/v1/reports", content=body, headers=signed_headers(api.keys["redis-1"], "redis-1", body, now))
    assert old.status_code == 401  # enrolling again rotated the key
    new = bytes.fromhex(got["node_key"])
    fresh = client.post("/v1/reports", content=body, headers=signed_headers(new, "redis-1", body, now))
    assert fresh.status_code == 200


def test_an_admin_rotates_a_node_key_and_the_old_one_stops_working(state_db: Database) -> None:
    report = recorded("healthy-redis-1")
    now = report["collected_at"]
    client, api, _ = _with_enroller(state_db, now)
    path = "/v1/clusters/sandbox/nodes/redis-1/key"
    assert client.post(path).status_code == 401
    assert client.post(path, headers={"Authorization": f"Bearer {READ_TOKEN}"}).status_code == 403
    resp = client.post(path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert resp.status_code == 200
    new = bytes.fromhex(resp.json()["node_key"])
    body = json.dumps(report).encode()
    assert client.post("/v1/reports", content=body,
                       headers=signed_headers(api.keys["redis-1"], "redis-1", body, now)).status_code == 401
    fresh = client.post("/v1/reports", content=body, headers=signed_headers(new, "redis-1", body, now))
    assert fresh.status_code == 200
    from controller.adapters.storage.heal_log import HealStore

    audit = HealStore(state_db).history("sandbox")
    assert [a["kind"] for a in audit] == ["IssueNodeKey"] and audit[0]["status"] == "succeeded"
    assert resp.json()["node_key"] not in json.dumps(audit)  # audited, never the key itself
