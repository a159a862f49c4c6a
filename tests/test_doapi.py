"""The sandbox's local DigitalOcean API over real HTTPS: shapes, errors, faults, rate limit, persistence, CLI.

Droplets here really boot (cloud-config runs under their own root dir, their processes are owned through
their environment); the lifecycle through pydo is in test_do_adapter.py. Every API runs on 127.0.0.1 with
its own sandbox dir, and is stopped, its droplets' processes killed and its addresses released, always.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from sandbox.addresses import DEFAULT_CLAIMS_DIR, release_addresses
from sandbox.doapi.cloud_config import parse_user_data, rooted
from sandbox.doapi.processes import kill_droplet_processes, owned_processes
from sandbox.doapi.server import DoApiHandle, start_doapi
from sandbox.doapi.state import DoApiOptions
from tests.helpers import wait_until

TOKEN = "doapi-test-token-" + os.urandom(8).hex()  # random, so a leak into output would be recognisable
SIZE, IMAGE, REGION = "s-1vcpu-1gb", "debian-12-x64", "nyc3"


@dataclass
class LocalApi:
    """A running local API and a requests session that trusts its CA and carries the token."""

    handle: DoApiHandle
    root: Path
    session: requests.Session
    closers: list[Callable[[], None]] = field(default_factory=list)  # clients to close before the API stops

    @property
    def url(self) -> str:
        return self.handle.url

    def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        return self.session.request(method, self.url + path, json=body, timeout=15, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, body: Any = None) -> requests.Response:
        return self.call("POST", path, body)

    def delete(self, path: str, body: Any = None) -> requests.Response:
        return self.call("DELETE", path, body)

    def faults(self, **doc: Any) -> dict[str, Any]:
        resp = self.post("/_sandbox/faults", doc)
        assert resp.status_code == 200, resp.text
        out: dict[str, Any] = resp.json()
        return out

    def requests_log(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = self.get("/_sandbox/requests").json()["requests"]
        return out

    def create(self, name: str, **fields: Any) -> dict[str, Any]:
        resp = self.post("/v2/droplets", {"name": name, "region": REGION, "size": SIZE, "image": IMAGE, **fields})
        assert resp.status_code == 202, resp.text
        out: dict[str, Any] = resp.json()["droplet"]
        return out

    def droplet(self, droplet_id: int) -> dict[str, Any]:
        out: dict[str, Any] = self.get(f"/v2/droplets/{droplet_id}").json()["droplet"]
        return out

    def wait_status(self, droplet_id: int, status: str, timeout_s: float = 20.0) -> dict[str, Any]:
        return wait_until(lambda: (d := self.droplet(droplet_id))["status"] == status and d,
                          timeout_s, f"droplet {droplet_id} {status}")

    def wait_action(self, action_id: int, timeout_s: float = 20.0) -> dict[str, Any]:
        return wait_until(lambda: (a := self.get(f"/v2/actions/{action_id}").json()["action"])["status"]
                          != "in-progress" and a, timeout_s, f"action {action_id} done")

    def sandbox_droplet(self, droplet_id: int) -> dict[str, Any]:
        rows = self.get("/_sandbox/droplets").json()["droplets"]
        return next(r for r in rows if r["id"] == droplet_id)


def mark_up(root: Path, up: bool) -> None:
    """`sandbox.json` says whether this sandbox is up: its address claims are only held while it is."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "sandbox.json").write_text(json.dumps({"up": up}))


def teardown_sandbox(root: Path) -> None:
    kill_droplet_processes(root)
    release_addresses(root)
    mark_up(root, False)


@contextlib.contextmanager
def local_doapi(root: Path, options: DoApiOptions | None = None, token: str = TOKEN) -> Iterator[LocalApi]:
    mark_up(root, True)
    handle = start_doapi(root, "127.0.0.1", 0, token,
                         options=options or DoApiOptions(boot_timeout_s=20.0, shutdown_timeout_s=5.0,
                                                         shutdown_grace_s=0.2))
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would override `verify`; no proxy for loopback either
    session.verify = str(handle.ca_path)
    session.headers["Authorization"] = f"Bearer {token}"
    api = LocalApi(handle, root.resolve(), session)
    try:
        yield api
    finally:
        for close in [session.close, *api.closers]:
            close()
        handle.stop()
        teardown_sandbox(root)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[LocalApi]:
    with local_doapi(tmp_path / "sandbox") as a:
        yield a


def cloud_config(doc: dict[str, Any]) -> str:
    """What the controller renders: JSON after the #cloud-config line (JSON is YAML)."""
    return "#cloud-config\n" + json.dumps(doc)


# -- auth, errors, validation ---------------------------------------------------------------------------


def test_wrong_or_missing_token_is_401_with_do_body_and_ratelimit_headers(api: LocalApi) -> None:
    for headers in ({"Authorization": "Bearer nope"}, {"Authorization": ""}, {"Authorization": "Basic x"}):
        resp = requests.get(api.url + "/v2/droplets", headers=headers, verify=str(api.handle.ca_path), timeout=10)
        assert resp.status_code == 401
        body = resp.json()
        assert (body["id"], body["message"]) == ("Unauthorized", "Unable to authenticate you")
        assert {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"} <= set(resp.headers)
    assert TOKEN not in json.dumps(api.requests_log())


def test_unknown_resources_are_404_not_found(api: LocalApi) -> None:
    for path in ("/v2/droplets/12345", "/v2/actions/1", "/v2/reserved_ips/127.0.9.9", "/v2/tags/nope",
                 "/v2/firewalls/00000000-0000-0000-0000-000000000000", "/v2/vpcs/00000000-0000-0000-0000-00000000",
                 "/v2/images/nope", "/v2/nothing-here"):
        resp = api.get(path)
        assert resp.status_code == 404, path
        assert resp.json()["id"] == "not_found"
        assert resp.json()["message"] == "The resource you were accessing could not be found."
        assert "ratelimit-remaining" in resp.headers


@pytest.mark.parametrize(("fields", "says"), [
    ({"region": "mars1"}, "Region"),
    ({"size": "s-64vcpu-1tb"}, "Size"),
    ({"image": "windows-95"}, "image"),
    ({"image": 42}, "image"),
    ({"name": None}, "name"),
    ({"name": "bad name!"}, "Name"),
    ({"tags": "redis"}, "tags"),
    ({"monitoring": "yes"}, "monitoring"),
    ({"user_data": 5}, "user_data"),
    ({"user_data": "#cloud-config\n" + "x" * (64 * 1024)}, "64 KiB"),
    ({"vpc_uuid": "00000000-0000-0000-0000-000000000000"}, "VPC"),
])
def test_invalid_creates_are_422_and_make_nothing(api: LocalApi, fields: dict[str, Any], says: str) -> None:
    body = {"name": "ok-1", "region": REGION, "size": SIZE, "image": IMAGE, **fields}
    body = {k: v for k, v in body.items() if not (k == "name" and v is None)}
    resp = api.post("/v2/droplets", body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["id"] == "unprocessable_entity"
    assert says in resp.json()["message"]
    assert api.get("/v2/droplets").json()["meta"]["total"] == 0


def test_user_data_of_exactly_64_kib_is_accepted(api: LocalApi) -> None:
    user_data = "#cloud-config\n"
    user_data += "#" * (64 * 1024 - len(user_data))
    created = api.create("edge-1", user_data=user_data)
    assert created["status"] == "new"


def test_malformed_bodies_are_refused(api: LocalApi) -> None:
    resp = api.call("POST", "/v2/droplets", data=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status_code == 422
    assert api.post("/v2/droplets", ["a", "list"]).status_code == 422
    assert api.post("/v2/droplets", {"name": "a", "names": ["b"], "size": SIZE, "image": IMAGE}).status_code == 422
    assert api.post("/v2/tags", {"name": "no spaces"}).status_code == 400
    assert api.post("/v2/firewalls", {"name": "fw"}).status_code == 400
    assert api.call("PATCH", "/v2/droplets").status_code == 405


# -- droplets: create, list, pagination, delete -----------------------------------------------------------


def test_create_answers_202_new_with_action_link_then_boots_active(api: LocalApi) -> None:
    resp = api.post("/v2/droplets", {"name": "web-1", "region": REGION, "size": SIZE, "image": IMAGE,
                                     "tags": ["web"], "monitoring": True})
    assert resp.status_code == 202
    body = resp.json()
    droplet, links = body["droplet"], body["links"]
    assert droplet["status"] == "new" and droplet["id"] >= 100000001
    assert droplet["networks"]["v4"] == [] or droplet["networks"]["v4"][0]["ip_address"].startswith("127.0.0.")
    assert [a["rel"] for a in links["actions"]] == ["create"]
    action_id = links["actions"][0]["id"]
    assert links["actions"][0]["href"] == f"{api.url}/v2/actions/{action_id}"
    assert api.wait_action(action_id)["status"] == "completed"
    active = api.wait_status(droplet["id"], "active")
    private = next(n for n in active["networks"]["v4"] if n["type"] == "private")
    public = next(n for n in active["networks"]["v4"] if n["type"] == "public")
    assert private["ip_address"] == public["ip_address"]
    assert private["ip_address"].startswith("127.0.0.")
    assert (private["netmask"], private["gateway"]) == ("255.0.0.0", "127.0.0.1")
    assert (DEFAULT_CLAIMS_DIR / private["ip_address"]).read_text().strip() == str(api.root)
    assert active["tags"] == ["web"] and "monitoring" in active["features"]
    assert active["region"]["slug"] == REGION and active["size_slug"] == SIZE and active["image"]["slug"] == IMAGE
    vpcs = api.get("/v2/vpcs").json()["vpcs"]
    assert active["vpc_uuid"] in {v["id"] for v in vpcs if v["default"] and v["region"] == REGION}


def test_multiple_create_pagination_links_and_tag_filter(api: LocalApi) -> None:
    resp = api.post("/v2/droplets", {"names": [f"node-{i}" for i in range(5)], "region": REGION, "size": SIZE,
                                     "image": IMAGE, "tags": ["pool"]})
    assert resp.status_code == 202
    assert len(resp.json()["droplets"]) == 5 and len(resp.json()["links"]["actions"]) == 5
    api.create("other-1")
    first = api.get("/v2/droplets", params={"tag_name": "pool", "per_page": 2}).json()
    assert first["meta"]["total"] == 5
    assert [d["name"] for d in first["droplets"]] == ["node-0", "node-1"]
    pages = first["links"]["pages"]
    assert set(pages) == {"next", "last"}
    assert "page=2" in pages["next"] and "tag_name=pool" in pages["next"] and "page=3" in pages["last"]
    middle = api.get("/v2/droplets", params={"tag_name": "pool", "per_page": 2, "page": 2}).json()
    assert set(middle["links"]["pages"]) == {"first", "prev", "next", "last"}
    last = api.get("/v2/droplets", params={"tag_name": "pool", "per_page": 2, "page": 3}).json()
    assert [d["name"] for d in last["droplets"]] == ["node-4"]
    assert set(last["links"]["pages"]) == {"first", "prev"}
    assert api.get("/v2/droplets").json()["meta"]["total"] == 6
    assert api.get("/v2/droplets", params={"name": "other-1"}).json()["meta"]["total"] == 1
    tag = api.get("/v2/tags/pool").json()["tag"]
    assert tag["resources"]["droplets"]["count"] == 5
    assert api.delete("/v2/droplets").status_code == 400
    resp = api.call("DELETE", "/v2/droplets", params={"tag_name": "pool"})
    assert resp.status_code == 204 and resp.content == b""
    assert [d["name"] for d in api.get("/v2/droplets").json()["droplets"]] == ["other-1"]


# -- actions ---------------------------------------------------------------------------------------------


def test_actions_progress_and_an_injected_error(api: LocalApi) -> None:
    droplet = api.create("act-1")
    api.wait_status(droplet["id"], "active")
    api.faults(action_errors=["power_cycle"])
    resp = api.post(f"/v2/droplets/{droplet['id']}/actions", {"type": "power_cycle"})
    assert resp.status_code == 201
    action = resp.json()["action"]
    assert (action["status"], action["type"], action["resource_type"]) == ("in-progress", "power_cycle", "droplet")
    assert action["completed_at"] is None
    busy = api.post(f"/v2/droplets/{droplet['id']}/actions", {"type": "reboot"})
    assert busy.status_code == 422 and busy.json()["message"] == "Droplet already has a pending event."
    done = api.wait_action(action["id"])
    assert done["status"] == "errored" and done["completed_at"] is not None
    api.faults(action_errors=[])
    ok = api.post(f"/v2/droplets/{droplet['id']}/actions", {"type": "reboot"}).json()["action"]
    assert api.wait_action(ok["id"])["status"] == "completed"
    listed = api.get(f"/v2/droplets/{droplet['id']}/actions").json()
    assert [a["type"] for a in listed["actions"]] == ["reboot", "power_cycle", "create"]
    one = api.get(f"/v2/droplets/{droplet['id']}/actions/{ok['id']}").json()["action"]
    assert one["id"] == ok["id"]
    assert api.get(f"/v2/droplets/{droplet['id']}/actions/1").status_code == 404
    assert api.get("/v2/actions", params={"per_page": 1}).json()["meta"]["total"] == 3
    assert api.post(f"/v2/droplets/{droplet['id']}/actions", {"type": "snapshot"}).status_code == 422
    assert api.post(f"/v2/droplets/{droplet['id']}/actions", {"type": "explode"}).status_code == 422


def test_boot_delay_keeps_a_droplet_new_for_a_while(api: LocalApi) -> None:
    api.faults(boot_delay_s=1.0)
    droplet = api.create("slow-1")
    started = time.monotonic()
    assert api.droplet(droplet["id"])["status"] == "new"
    api.wait_status(droplet["id"], "active")
    assert time.monotonic() - started >= 0.9


def test_a_boot_that_overruns_its_timeout_leaves_the_step_running_and_skips_the_rest(tmp_path: Path) -> None:
    options = DoApiOptions(boot_timeout_s=0.5, shutdown_grace_s=0.2)
    with local_doapi(tmp_path / "sandbox", options) as api:
        droplet = api.create("overrun-1", user_data=cloud_config({"runcmd": ["sleep 300", "touch after"]}))
        api.wait_status(droplet["id"], "active")
        root = api.root / "droplets" / f"overrun-1-{droplet['id']}" / "root"
        assert any("sleep" in " ".join(p.cmdline()) for p in owned_processes(root, droplet["id"]))
        assert not (root / "after").exists()
        log = (root.parent / "cloud-init-output.log").read_text()
        assert "left running" in log and "not run" in log


TERM_TRAP = ("import os, signal, sys, time\n"
             "def bye(*_):\n"
             "    open(os.environ['REDWARDEN_DROPLET_ROOT'] + '/termed', 'w').write('SIGTERM')\n"
             "    sys.exit(0)\n"
             "signal.signal(signal.SIGTERM, bye)\n"
             "open('ready', 'w').write('yes')\n"
             "time.sleep(300)\n")


@pytest.mark.parametrize(("action", "termed"), [("shutdown", True), ("power_off", False)])
def test_shutdown_is_sigterm_and_power_off_is_sigkill(api: LocalApi, action: str, termed: bool) -> None:
    user_data = cloud_config({"write_files": [{"path": "/trap.py", "content": TERM_TRAP}],
                              "runcmd": ["python trap.py >/dev/null 2>&1 &"]})
    droplet = api.create(f"{action.replace('_', '-')}-1", user_data=user_data)
    api.wait_status(droplet["id"], "active")
    root = api.root / "droplets" / f"{droplet['name']}-{droplet['id']}" / "root"
    wait_until(lambda: (root / "ready").exists(), 10, "the trap process ready")
    action_id = api.post(f"/v2/droplets/{droplet['id']}/actions", {"type": action}).json()["action"]["id"]
    assert api.wait_action(action_id)["status"] == "completed"
    assert api.droplet(droplet["id"])["status"] == "off"
    assert owned_processes(root, droplet["id"]) == []
    assert (root / "termed").exists() is termed


# -- faults, request log, rate limit ---------------------------------------------------------------------


def test_fail_rules_count_down_retry_after_and_request_log(api: LocalApi) -> None:
    api.faults(fail=[{"method": "GET", "path_regex": "^/v2/regions$", "status": 503, "count": 2},
                     {"method": "GET", "path_regex": "^/v2/sizes$", "status": 429, "count": 1, "retry_after_s": 3}])
    assert [api.get("/v2/regions").status_code for _ in range(3)] == [503, 503, 200]
    limited = api.get("/v2/sizes")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "3"
    assert limited.json()["id"] == "too_many_requests"
    assert api.get("/v2/sizes").status_code == 200
    assert [r["count"] for r in api.get("/_sandbox/faults").json()["fail"]] == [0, 0]
    log = [(r["method"], r["path"], r["status"]) for r in api.requests_log()]
    assert log == [("GET", "/v2/regions", 503), ("GET", "/v2/regions", 503), ("GET", "/v2/regions", 200),
                   ("GET", "/v2/sizes", 429), ("GET", "/v2/sizes", 200)]
    assert api.delete("/_sandbox/requests").status_code == 204
    assert api.requests_log() == []


def test_after_commit_fault_performs_the_request_then_answers_the_error(api: LocalApi) -> None:
    api.faults(fail=[{"method": "POST", "path_regex": "^/v2/droplets$", "status": 500, "after_commit": True}])
    resp = api.post("/v2/droplets", {"name": "ghost-1", "region": REGION, "size": SIZE, "image": IMAGE})
    assert resp.status_code == 500 and resp.json()["id"] == "server_error"
    assert [d["name"] for d in api.get("/v2/droplets").json()["droplets"]] == ["ghost-1"]


def test_bad_fault_documents_are_422(api: LocalApi) -> None:
    for doc in ({"latency": 5}, {"fail": [{"status": 200}]}, {"fail": [{"status": 500, "path_regex": "("}]},
                {"boot_delay_s": -1}, {"action_errors": "power_on"}, {"ratelimit": {"limit": "many"}}):
        resp = api.post("/_sandbox/faults", doc)
        assert resp.status_code == 422, doc
    assert api.delete("/_sandbox/faults").json()["fail"] == []


def test_token_bucket_answers_429_when_empty_and_headers_count_down(api: LocalApi) -> None:
    api.faults(ratelimit={"limit": 3, "refill_per_s": 0.5})
    remaining = [int(api.get("/v2/regions").headers["ratelimit-remaining"]) for _ in range(3)]
    assert remaining == [2, 1, 0]
    limited = api.get("/v2/regions")
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 2
    assert int(limited.headers["ratelimit-reset"]) >= int(time.time())
    assert api.get("/_sandbox/faults").status_code == 200  # the sandbox's own endpoints are not limited


def test_latency_is_added_to_api_calls(api: LocalApi) -> None:
    api.faults(latency_ms=300)
    started = time.monotonic()
    assert api.get("/v2/regions").status_code == 200
    assert time.monotonic() - started >= 0.3


# -- reserved IPs, tags, firewalls, VPCs -----------------------------------------------------------------


def test_reserved_ip_create_assign_unassign_delete(api: LocalApi) -> None:
    droplet = api.create("rip-1")
    api.wait_status(droplet["id"], "active")
    resp = api.post("/v2/reserved_ips", {"region": REGION})
    assert resp.status_code == 202
    ip = resp.json()["reserved_ip"]["ip"]
    assert ip.startswith("127.0.0.") and resp.json()["reserved_ip"]["droplet"] is None
    assert api.post(f"/v2/reserved_ips/{ip}/actions", {"type": "assign"}).status_code == 422
    assert api.post(f"/v2/reserved_ips/{ip}/actions", {"type": "assign", "droplet_id": 1}).status_code == 422
    action = api.post(f"/v2/reserved_ips/{ip}/actions", {"type": "assign", "droplet_id": droplet["id"]})
    assert action.status_code == 201 and action.json()["action"]["type"] == "assign_ip"
    api.wait_action(action.json()["action"]["id"])
    assert api.get(f"/v2/reserved_ips/{ip}").json()["reserved_ip"]["droplet"]["id"] == droplet["id"]
    unassign = api.post(f"/v2/reserved_ips/{ip}/actions", {"type": "unassign"}).json()["action"]
    api.wait_action(unassign["id"])
    assert api.get(f"/v2/reserved_ips/{ip}").json()["reserved_ip"]["droplet"] is None
    assert [a["type"] for a in api.get(f"/v2/reserved_ips/{ip}/actions").json()["actions"]] == [
        "unassign_ip", "assign_ip"]
    with_droplet = api.post("/v2/reserved_ips", {"droplet_id": droplet["id"]}).json()
    assert with_droplet["links"]["droplets"][0]["id"] == droplet["id"]
    assert api.delete(f"/v2/reserved_ips/{ip}").status_code == 204
    assert api.get(f"/v2/reserved_ips/{ip}").status_code == 404
    assert not (DEFAULT_CLAIMS_DIR / ip).exists() or (DEFAULT_CLAIMS_DIR / ip).read_text().strip() != str(api.root)


def test_tags_resources_and_delete(api: LocalApi) -> None:
    droplet = api.create("tagged-1")
    assert api.post("/v2/tags", {"name": "redis:shop"}).status_code == 201
    assert api.post("/v2/tags", {"name": "redis:shop"}).status_code == 201  # idempotent
    body = {"resources": [{"resource_id": str(droplet["id"]), "resource_type": "droplet"}]}
    assert api.post("/v2/tags/redis:shop/resources", body).status_code == 204
    assert "redis:shop" in api.droplet(droplet["id"])["tags"]
    assert api.get("/v2/tags/redis:shop").json()["tag"]["resources"]["count"] == 1
    assert api.delete("/v2/tags/redis:shop/resources", body).status_code == 204
    assert "redis:shop" not in api.droplet(droplet["id"])["tags"]
    assert api.post("/v2/tags/missing/resources", body).status_code == 404
    assert api.delete("/v2/tags/redis:shop").status_code == 204
    assert api.get("/v2/tags/redis:shop").status_code == 404


def test_firewall_with_tag_sources_on_redis_ports(api: LocalApi) -> None:
    rules = [{"protocol": "tcp", "ports": port, "sources": {"tags": ["redis"]}} for port in ("6379", "26379")]
    resp = api.post("/v2/firewalls", {"name": "redis-fw", "tags": ["redis"], "inbound_rules": rules,
                                      "outbound_rules": [{"protocol": "icmp",
                                                          "destinations": {"addresses": ["0.0.0.0/0"]}}]})
    assert resp.status_code == 202, resp.text
    fw = resp.json()["firewall"]
    assert fw["status"] == "succeeded" and fw["tags"] == ["redis"]
    assert [r["ports"] for r in fw["inbound_rules"]] == ["6379", "26379"]
    assert fw["outbound_rules"][0]["ports"] == "0"
    assert api.get("/v2/tags/redis").status_code == 200
    update = {"name": "redis-fw", "inbound_rules": rules[:1], "tags": ["redis"]}
    assert api.call("PUT", f"/v2/firewalls/{fw['id']}", update).json()["firewall"]["inbound_rules"] == rules[:1]
    assert api.get("/v2/firewalls").json()["meta"]["total"] == 1
    bad = {"name": "x-fw", "inbound_rules": [{"protocol": "tcp", "ports": "99999", "sources": {"tags": ["a"]}}]}
    assert api.post("/v2/firewalls", bad).status_code == 400
    assert api.delete(f"/v2/firewalls/{fw['id']}").status_code == 204
    assert api.get(f"/v2/firewalls/{fw['id']}").status_code == 404


def test_vpcs_and_droplets_in_them(api: LocalApi) -> None:
    resp = api.post("/v2/vpcs", {"name": "redis-net", "region": REGION, "ip_range": "10.20.0.0/20"})
    assert resp.status_code == 201
    vpc = resp.json()["vpc"]
    assert vpc["urn"] == f"do:vpc:{vpc['id']}" and not vpc["default"]
    assert api.post("/v2/vpcs", {"name": "redis-net", "region": REGION}).status_code == 422
    assert api.post("/v2/vpcs", {"name": "elsewhere", "region": "mars1"}).status_code == 422
    assert api.get(f"/v2/vpcs/{vpc['id']}").json()["vpc"]["ip_range"] == "10.20.0.0/20"
    assert api.create("in-vpc-1", vpc_uuid=vpc["id"])["vpc_uuid"] == vpc["id"]
    other_region = api.post("/v2/droplets", {"name": "x-1", "region": "ams3", "size": SIZE, "image": IMAGE,
                                             "vpc_uuid": vpc["id"]})
    assert other_region.status_code == 422


def test_catalog_regions_sizes_images(api: LocalApi) -> None:
    regions = api.get("/v2/regions").json()
    assert REGION in {r["slug"] for r in regions["regions"]}
    sizes = api.get("/v2/sizes", params={"per_page": 200}).json()
    assert SIZE in {s["slug"] for s in sizes["sizes"]}
    images = api.get("/v2/images", params={"type": "distribution"}).json()["images"]
    assert IMAGE in {i["slug"] for i in images}
    snapshot = api.get("/v2/images", params={"private": "true"}).json()["images"][0]
    assert snapshot["type"] == "snapshot"
    assert api.get(f"/v2/images/{snapshot['id']}").json()["image"]["id"] == snapshot["id"]
    assert api.create("from-snapshot-1", image=snapshot["id"])["image"]["id"] == snapshot["id"]


# -- persistence and the CLI -----------------------------------------------------------------------------


def test_state_survives_a_restart_of_the_api(tmp_path: Path) -> None:
    root = tmp_path / "sandbox"
    with local_doapi(root) as api:
        droplet = api.create("keep-1", tags=["kept"])
        api.wait_status(droplet["id"], "active")
        vpc = api.post("/v2/vpcs", {"name": "kept-net", "region": REGION}).json()["vpc"]
        ip = api.post("/v2/reserved_ips", {"region": REGION}).json()["reserved_ip"]["ip"]
        fw = api.post("/v2/firewalls", {"name": "kept-fw", "inbound_rules": [
            {"protocol": "tcp", "ports": "6379", "sources": {"tags": ["kept"]}}]}).json()["firewall"]
        ca_before = api.handle.ca_path.read_bytes()
        mark_up(root, True)
        api.handle.stop()
        with local_doapi(root) as again:
            assert again.handle.ca_path.read_bytes() == ca_before
            kept = again.droplet(droplet["id"])
            assert (kept["name"], kept["status"], kept["tags"]) == ("keep-1", "active", ["kept"])
            assert again.get(f"/v2/vpcs/{vpc['id']}").status_code == 200
            assert again.get(f"/v2/reserved_ips/{ip}").status_code == 200
            assert again.get(f"/v2/firewalls/{fw['id']}").status_code == 200
            assert again.get("/v2/tags/kept").status_code == 200
            assert again.create("next-1")["id"] == droplet["id"] + 1
            assert again.get("/v2/actions").json()["meta"]["total"] == 2


def test_a_boot_cut_short_by_a_stop_resumes_at_the_next_start(tmp_path: Path) -> None:
    root = tmp_path / "sandbox"
    with local_doapi(root) as api:
        api.faults(boot_delay_s=60)
        droplet = api.create("resumed-1", user_data=cloud_config({"runcmd": ["touch booted"]}))
        mark_up(root, True)
        api.handle.stop()
        with local_doapi(root) as again:  # faults are not kept: this one boots at once
            again.wait_status(droplet["id"], "active")
            create = again.get(f"/v2/droplets/{droplet['id']}/actions").json()["actions"][0]
            assert (create["type"], create["status"]) == ("create", "completed")
            assert (root / "droplets" / f"resumed-1-{droplet['id']}" / "root" / "booted").exists()


def _read_line(proc: subprocess.Popen[str], timeout_s: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    if not ready:
        raise AssertionError(f"the API printed no URL within {timeout_s} s")
    return proc.stdout.readline().strip()


def test_cli_prints_its_url_and_sigterm_leaves_the_droplets_running(tmp_path: Path) -> None:
    root = tmp_path / "sandbox"
    mark_up(root, True)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    argv = [sys.executable, "-m", "sandbox.doapi", "--dir", str(root), "--host", "127.0.0.1", "--port", "0",
            "--token-file", str(token_file), "--log-format", "json"]
    stderr = (tmp_path / "doapi.log").open("w")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        url = _read_line(proc, 20)
        assert url.startswith("https://127.0.0.1:")
        endpoint = json.loads((root / "doapi" / "endpoint.json").read_text())
        assert endpoint["url"] == url and endpoint["pid"] == proc.pid
        session = requests.Session()
        session.trust_env = False
        session.verify = endpoint["ca_path"]
        session.headers["Authorization"] = f"Bearer {TOKEN}"
        user_data = cloud_config({"runcmd": ["sleep 300 >/dev/null 2>&1 &"]})
        resp = session.post(url + "/v2/droplets", json={"name": "survivor-1", "size": SIZE, "image": IMAGE,
                                                         "user_data": user_data}, timeout=10)
        assert resp.status_code == 202
        droplet_id = resp.json()["droplet"]["id"]
        wait_until(lambda: session.get(f"{url}/v2/droplets/{droplet_id}", timeout=10).json()["droplet"]["status"]
                   == "active", 20, "droplet active")
        droplet_root = root.resolve() / "droplets" / f"survivor-1-{droplet_id}" / "root"
        before = {p.pid for p in owned_processes(droplet_root, droplet_id)}
        assert before
        session.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert not (root / "doapi" / "endpoint.json").exists()
        assert {p.pid for p in owned_processes(droplet_root, droplet_id)} == before  # droplets run on
        log_text = (tmp_path / "doapi.log").read_text()
        assert "doapi.started" in log_text and TOKEN not in log_text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        stderr.close()
        teardown_sandbox(root)


def test_cli_refuses_a_non_loopback_host_and_an_empty_token(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    base = [sys.executable, "-m", "sandbox.doapi", "--dir", str(tmp_path / "sb"), "--token-file", str(token_file)]
    out = subprocess.run([*base, "--host", "10.0.0.1"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "loopback" in out.stderr
    token_file.write_text("\n")
    out = subprocess.run([*base, "--host", "127.0.0.1"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "empty" in out.stderr


# -- cloud-config parsing (pure) -------------------------------------------------------------------------


def test_parse_user_data_json_cloud_config() -> None:
    config = parse_user_data(cloud_config({
        "write_files": [
            {"path": "/etc/redwarden/agent.toml", "content": "x = 1\n", "permissions": "0600", "owner": "redwarden"},
            {"path": "/etc/blob", "content": base64.b64encode(b"\x00\x01").decode(), "encoding": "b64"},
            {"content": "no path"},
        ],
        "runcmd": ["echo hi", ["redwarden-agent", "bootstrap", "--config", "/etc/redwarden/agent.toml"], {"x": 1}],
        "packages": ["redis-server"],
    }))
    assert [(f.path, f.content, f.permissions) for f in config.write_files] == [
        ("/etc/redwarden/agent.toml", b"x = 1\n", 0o600), ("/etc/blob", b"\x00\x01", 0o644)]
    assert config.runcmd == (("sh", "-c", "echo hi"),
                             ("redwarden-agent", "bootstrap", "--config", "/etc/redwarden/agent.toml"))
    assert len(config.problems) == 3  # "packages", the file without a path, the bad runcmd entry


def test_parse_user_data_yaml_script_and_garbage() -> None:
    pytest.importorskip("yaml")
    config = parse_user_data("#cloud-config\nwrite_files:\n  - path: /a\n    content: hi\n    permissions: 0640\n"
                             "runcmd:\n  - [touch, /b]\n")
    assert config.write_files[0].permissions == 0o640 and config.runcmd == (("touch", "/b"),)
    assert parse_user_data("#!/bin/sh\necho hi\n").script == "#!/bin/sh\necho hi\n"
    assert parse_user_data(None).runcmd == () and parse_user_data("").problems == ()
    assert parse_user_data("just text").problems
    assert parse_user_data("#cloud-config\n: : [").problems


def test_rooted_paths_stay_inside_the_droplet(tmp_path: Path) -> None:
    assert rooted(tmp_path, "/etc/redis/redis.conf") == tmp_path / "etc" / "redis" / "redis.conf"
    for bad in ("relative/path", "/etc/../../outside"):
        with pytest.raises(ValueError):
            rooted(tmp_path, bad)


def test_owned_processes_need_both_the_id_and_the_root(tmp_path: Path) -> None:
    env = {**os.environ, "REDWARDEN_DROPLET_ID": "7", "REDWARDEN_DROPLET_ROOT": str(tmp_path / "droplets" / "a")}
    proc = subprocess.Popen(["sleep", "60"], env=env, start_new_session=True)
    try:
        # until the child has exec'd, /proc shows the parent's environment: poll, do not race it
        wait_until(lambda: [p.pid for p in owned_processes(tmp_path / "droplets" / "a", 7)] == [proc.pid], 5,
                   "the child listed as the droplet's own")
        assert owned_processes(tmp_path / "droplets" / "a", 8) == []
        assert owned_processes(tmp_path / "droplets" / "b", 7) == []
        assert kill_droplet_processes(tmp_path) == 1
        assert proc.wait(5) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not psutil.pid_exists(proc.pid) or psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE
