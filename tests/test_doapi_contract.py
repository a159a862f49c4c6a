"""Contract: every answer of the local DigitalOcean API matches the official OpenAPI description.

A scripted run (catalog, VPC, tags, droplets single and multiple, pagination, droplet actions, actions,
reserved IPs and their actions, firewalls, deletes, and the errors 401, 404, 422, 429, 500) goes through a
requests session that records each request and response; each is then validated with openapi-core against
`../shared/do-openapi/do-subset.json` (beside CI checkouts; the test skips where it is not).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.test_doapi import IMAGE, REGION, SIZE, TOKEN, LocalApi, cloud_config, local_doapi

SPEC_PATH = Path(__file__).resolve().parents[1].parent / "shared" / "do-openapi" / "do-subset.json"
SPEC_SERVER = "https://api.digitalocean.com"


@pytest.fixture(scope="module")
def openapi() -> Any:
    if not SPEC_PATH.exists():
        pytest.skip("../shared/do-openapi/do-subset.json not found: the DigitalOcean API description is only "
                    "beside CI checkouts")
    from openapi_core import OpenAPI

    return OpenAPI.from_file_path(str(SPEC_PATH))


class Recorder:
    """Every (request, response) the session sees, in order."""

    def __init__(self, session: requests.Session) -> None:
        self.exchanges: list[requests.Response] = []
        session.hooks["response"].append(self._record)

    def _record(self, response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
        self.exchanges.append(response)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[LocalApi]:
    with local_doapi(tmp_path / "sandbox") as a:
        yield a


def run_script(api: LocalApi) -> None:
    """What the controller and the sandbox do, and the errors they meet. Statuses are checked on the way."""

    def expect(resp: requests.Response, status: int) -> Any:
        assert resp.status_code == status, f"{resp.request.method} {resp.request.url}: {resp.status_code} {resp.text}"
        return resp.json() if resp.content else None

    for path in ("/v2/regions", "/v2/sizes", "/v2/images", f"/v2/images/{IMAGE}", "/v2/images/150000100"):
        expect(api.get(path), 200)
    vpc = expect(api.post("/v2/vpcs", {"name": "shop-net", "region": REGION, "description": "redis"}), 201)["vpc"]
    expect(api.get("/v2/vpcs"), 200)
    expect(api.get(f"/v2/vpcs/{vpc['id']}"), 200)
    expect(api.post("/v2/tags", {"name": "redis"}), 201)
    expect(api.get("/v2/tags"), 200)
    expect(api.get("/v2/tags/redis"), 200)

    user_data = cloud_config({"write_files": [{"path": "/etc/motd", "content": "redis\n"}], "runcmd": ["true"]})
    one = expect(api.post("/v2/droplets", {"name": "redis-1", "region": REGION, "size": SIZE, "image": IMAGE,
                                           "vpc_uuid": vpc["id"], "tags": ["redis"], "user_data": user_data,
                                           "monitoring": True, "ssh_keys": [289794]}), 202)["droplet"]
    many = expect(api.post("/v2/droplets", {"names": ["redis-2", "redis-3"], "region": REGION, "size": SIZE,
                                            "image": IMAGE, "tags": ["redis"]}), 202)["droplets"]
    for d in [one, *many]:
        api.wait_status(d["id"], "active")
    for page in (1, 2, 3):
        expect(api.get("/v2/droplets", params={"tag_name": "redis", "per_page": 1, "page": page}), 200)
    expect(api.get(f"/v2/droplets/{one['id']}"), 200)

    action = expect(api.post(f"/v2/droplets/{one['id']}/actions", {"type": "power_cycle"}), 201)["action"]
    api.wait_action(action["id"])
    expect(api.get(f"/v2/droplets/{one['id']}/actions"), 200)
    expect(api.get(f"/v2/droplets/{one['id']}/actions/{action['id']}"), 200)
    expect(api.get("/v2/actions", params={"per_page": 2}), 200)
    expect(api.get(f"/v2/actions/{action['id']}"), 200)

    resources = {"resources": [{"resource_id": str(one["id"]), "resource_type": "droplet"}]}
    expect(api.post("/v2/tags", {"name": "master"}), 201)
    expect(api.post("/v2/tags/master/resources", resources), 204)
    expect(api.get("/v2/tags/master"), 200)
    expect(api.delete("/v2/tags/master/resources", resources), 204)

    rip = expect(api.post("/v2/reserved_ips", {"region": REGION}), 202)["reserved_ip"]
    rip2 = expect(api.post("/v2/reserved_ips", {"droplet_id": many[0]["id"]}), 202)["reserved_ip"]
    assign = expect(api.post(f"/v2/reserved_ips/{rip['ip']}/actions",
                             {"type": "assign", "droplet_id": one["id"]}), 201)["action"]
    api.wait_action(assign["id"])
    expect(api.get("/v2/reserved_ips"), 200)
    expect(api.get(f"/v2/reserved_ips/{rip['ip']}"), 200)
    expect(api.get(f"/v2/reserved_ips/{rip['ip']}/actions"), 200)
    expect(api.get(f"/v2/reserved_ips/{rip['ip']}/actions/{assign['id']}"), 200)
    unassign = expect(api.post(f"/v2/reserved_ips/{rip['ip']}/actions", {"type": "unassign"}), 201)["action"]
    api.wait_action(unassign["id"])
    expect(api.delete(f"/v2/reserved_ips/{rip2['ip']}"), 204)

    rules = [{"protocol": "tcp", "ports": port, "sources": {"tags": ["redis"]}} for port in ("6379", "26379")]
    outbound = [{"protocol": p, "ports": "all", "destinations": {"addresses": ["0.0.0.0/0", "::/0"]}}
                for p in ("tcp", "udp")] + [{"protocol": "icmp", "destinations": {"addresses": ["0.0.0.0/0"]}}]
    fw = expect(api.post("/v2/firewalls", {"name": "redis-shop", "tags": ["redis"], "inbound_rules": rules,
                                           "outbound_rules": outbound}), 202)["firewall"]
    expect(api.get("/v2/firewalls"), 200)
    expect(api.get(f"/v2/firewalls/{fw['id']}"), 200)
    expect(api.call("PUT", f"/v2/firewalls/{fw['id']}", {"name": "redis-shop", "inbound_rules": rules[:1],
                                                         "droplet_ids": [one["id"]]}), 200)

    # errors, each in DigitalOcean's shape
    expect(api.get("/v2/droplets/1"), 404)
    expect(api.get("/v2/actions/1"), 404)
    expect(api.get(f"/v2/reserved_ips/{rip2['ip']}"), 404)
    expect(api.post("/v2/tags", {"name": "not a tag"}), 400)
    expect(api.post("/v2/firewalls", {"name": "no-rules"}), 400)
    expect(api.post("/v2/droplets", {"name": "x-1", "region": "mars1", "size": SIZE, "image": IMAGE}), 422)
    expect(api.session.get(api.url + "/v2/droplets", headers={"Authorization": "Bearer nope"}, timeout=10), 401)
    api.faults(fail=[{"method": "GET", "path_regex": "^/v2/droplets$", "status": 429, "retry_after_s": 1},
                     {"method": "GET", "path_regex": r"^/v2/droplets/\d+$", "status": 500},
                     {"method": "POST", "path_regex": "^/v2/droplets$", "status": 500, "after_commit": True}])
    expect(api.get("/v2/droplets"), 429)
    expect(api.get(f"/v2/droplets/{one['id']}"), 500)
    expect(api.post("/v2/droplets", {"name": "redis-4", "region": REGION, "size": SIZE, "image": IMAGE}), 500)

    expect(api.delete(f"/v2/firewalls/{fw['id']}"), 204)
    expect(api.delete(f"/v2/reserved_ips/{rip['ip']}"), 204)
    expect(api.delete(f"/v2/droplets/{one['id']}"), 204)
    expect(api.call("DELETE", "/v2/droplets", params={"tag_name": "redis"}), 204)
    expect(api.delete("/v2/tags/redis"), 204)


def test_every_answer_matches_the_digitalocean_openapi_description(api: LocalApi, openapi: Any) -> None:
    from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse

    class AsProduction(RequestsOpenAPIRequest):
        """The recorded request, as if sent to the description's server (the stand-in runs on loopback)."""

        @property
        def host_url(self) -> str:
            return SPEC_SERVER

    recorder = Recorder(api.session)
    run_script(api)
    checked = [r for r in recorder.exchanges if r.request.path_url.startswith("/v2/")]
    assert len(checked) > 60
    failures = []
    for resp in checked:
        try:
            openapi.validate_response(AsProduction(resp.request), RequestsOpenAPIResponse(resp))
        except Exception as e:
            detail = "; ".join(str(x) for x in getattr(e, "schema_errors", []) or [])[:1500]
            failures.append(f"{resp.request.method} {resp.request.path_url} -> {resp.status_code}: "
                            f"{type(e).__name__}: {e} {detail}\n  body: {resp.text[:300]}")
    assert not failures, "\n".join(failures)
    assert TOKEN not in json.dumps([r.text for r in checked])
