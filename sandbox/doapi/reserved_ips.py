"""The local DigitalOcean API's reserved IPs: `/v2/reserved_ips` and their assign/unassign actions.

Layer: sandbox. A reserved IP is one more loopback address claimed for the sandbox (`sandbox.addresses`),
kept with the droplet it is assigned to; assigning is an action, done by the runner after a moment. Creating
one for a droplet assigns it at once; destroying the droplet unassigns it.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Mapping
from typing import Any

from sandbox.addresses import claim_addresses, release_addresses
from sandbox.doapi.actions import render_action
from sandbox.doapi.catalog import REGIONS, region_object
from sandbox.doapi.droplets import render_droplet
from sandbox.doapi.power import DROPLET_PORTS
from sandbox.doapi.runner import ActionRunner
from sandbox.doapi.state import Cloud
from sandbox.doapi.wire import ApiRequest, ApiResponse, Json, json_body, not_found, now_iso, unprocessable


class ReservedIpsApi:
    """`/v2/reserved_ips` (list, create, get, delete) and `/v2/reserved_ips/{ip}/actions` (post, list, get)."""

    def __init__(self, cloud: Cloud, runner: ActionRunner) -> None:
        self.cloud = cloud
        self.runner = runner

    def _render_reserved_ip(self, r: Mapping[str, Any]) -> Json:
        droplet = self.cloud.state["droplets"].get(str(r.get("droplet_id")))
        return {"ip": r["ip"], "region": region_object(r["region"]),
                "droplet": render_droplet(droplet) if droplet else None, "locked": False,
                "project_id": r["project_id"]}

    def _reserved_ip(self, ip: str) -> Json:
        r = self.cloud.state["reserved_ips"].get(ip)
        if r is None:
            raise not_found()
        return r  # type: ignore[no-any-return]

    def list_reserved_ips(self, req: ApiRequest) -> ApiResponse:
        with self.cloud.lock:
            items = [self._render_reserved_ip(r) for r in sorted(self.cloud.state["reserved_ips"].values(),
                                                                 key=lambda r: ipaddress.ip_address(r["ip"]))]
        return self.cloud.page(req, "reserved_ips", items)

    def create_reserved_ip(self, req: ApiRequest) -> ApiResponse:
        body = json_body(req)
        droplet_id, region = body.get("droplet_id"), body.get("region")
        if (droplet_id is None) == (region is None):
            raise unprocessable("Specify exactly one of droplet_id or region.")
        if droplet_id is not None and (not isinstance(droplet_id, int) or isinstance(droplet_id, bool)):
            raise unprocessable("droplet_id must be an integer.")
        if region is not None and (not isinstance(region, str) or region not in REGIONS):
            raise unprocessable(f"Region {region!r} is not available.")
        action = None
        with self.cloud.lock:
            d = None
            if droplet_id is not None:
                d = self.cloud.state["droplets"].get(str(droplet_id))
                if d is None:
                    raise unprocessable(f"Droplet {droplet_id} could not be found.")
                region = d["region"]
            try:
                ip = claim_addresses(self.cloud.sandbox_dir, 1, DROPLET_PORTS, self.cloud.options.claims_dir)[0]
            except RuntimeError as e:
                raise unprocessable(f"No reserved IP is available: {e}.") from None
            r = {"ip": ip, "region": region, "droplet_id": None, "project_id": str(uuid.uuid4()),
                 "created_at": now_iso()}
            self.cloud.state["reserved_ips"][ip] = r
            if d is not None:
                action = self.cloud.new_action("assign_ip", "reserved_ip", int(ipaddress.ip_address(ip)), region,
                                               {"ip": ip, "droplet_id": d["id"]})
            self.cloud.save()
            rendered = self._render_reserved_ip(r)
        links: Json = {}
        if action is not None and d is not None:
            self.runner.start(action)
            base_url = self.cloud.base_url
            links = {"droplets": [{"id": d["id"], "rel": "droplet", "href": f"{base_url}/v2/droplets/{d['id']}"}],
                     "actions": [{"id": action["id"], "rel": "assign_ip",
                                  "href": f"{base_url}/v2/actions/{action['id']}"}]}
        return ApiResponse(202, {"reserved_ip": rendered, "links": links})

    def get_reserved_ip(self, req: ApiRequest, ip: str) -> ApiResponse:
        with self.cloud.lock:
            return ApiResponse(200, {"reserved_ip": self._render_reserved_ip(self._reserved_ip(ip))})

    def delete_reserved_ip(self, req: ApiRequest, ip: str) -> ApiResponse:
        with self.cloud.lock:
            self._reserved_ip(ip)
            del self.cloud.state["reserved_ips"][ip]
            self.cloud.save()
        release_addresses(self.cloud.sandbox_dir, [ip], self.cloud.options.claims_dir)
        return ApiResponse(204)

    def post_reserved_ip_action(self, req: ApiRequest, ip: str) -> ApiResponse:
        body = json_body(req)
        type_ = body.get("type")
        if type_ not in ("assign", "unassign"):
            raise unprocessable("type must be assign or unassign.")
        with self.cloud.lock:
            r = self._reserved_ip(ip)
            params: Json = {"ip": ip, "droplet_id": None}
            if type_ == "assign":
                droplet_id = body.get("droplet_id")
                if not isinstance(droplet_id, int) or isinstance(droplet_id, bool):
                    raise unprocessable("droplet_id is required to assign a reserved IP.")
                d = self.cloud.state["droplets"].get(str(droplet_id))
                if d is None:
                    raise unprocessable(f"Droplet {droplet_id} could not be found.")
                if d["region"] != r["region"]:
                    raise unprocessable(f"The reserved IP is in {r['region']}, the droplet in {d['region']}.")
                params["droplet_id"] = droplet_id
            resource_id = int(ipaddress.ip_address(ip))
            if self.cloud.pending_action("reserved_ip", resource_id) is not None:
                raise unprocessable("Reserved IP already has a pending event.")
            action = self.cloud.new_action(f"{type_}_ip", "reserved_ip", resource_id, r["region"], params)
            self.cloud.save()
        self.runner.start(action)
        return ApiResponse(201, {"action": render_action(action)})

    def _ip_actions(self, ip: str) -> list[Json]:
        resource_id = int(ipaddress.ip_address(ip))
        return [a for a in sorted(self.cloud.state["actions"].values(), key=lambda a: -a["id"])
                if a["resource_type"] == "reserved_ip" and a["resource_id"] == resource_id]

    def list_reserved_ip_actions(self, req: ApiRequest, ip: str) -> ApiResponse:
        with self.cloud.lock:
            self._reserved_ip(ip)
            items = [render_action(a) for a in self._ip_actions(ip)]
        return self.cloud.page(req, "actions", items)

    def get_reserved_ip_action(self, req: ApiRequest, ip: str, action_id: str) -> ApiResponse:
        with self.cloud.lock:
            self._reserved_ip(ip)
            for a in self._ip_actions(ip):
                if str(a["id"]) == action_id:
                    return ApiResponse(200, {"action": render_action(a)})
        raise not_found()

