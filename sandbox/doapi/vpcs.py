"""The local DigitalOcean API's VPCs: `/v2/vpcs`, and the default VPC of a region.

Layer: sandbox. A droplet created without `vpc_uuid` joins its region's default VPC, made on first use.
"""

from __future__ import annotations

import copy
import ipaddress
import re
import uuid

from sandbox.doapi.catalog import REGIONS
from sandbox.doapi.state import Cloud
from sandbox.doapi.wire import ApiRequest, ApiResponse, Json, json_body, not_found, now_iso, unprocessable

VPC_NAME_RE = re.compile(r"^[a-zA-Z0-9\-.]+$")


def new_vpc(state: Json, name: str, region: str, ip_range: str | None, description: str, default: bool) -> Json:
    """Store a new VPC in `state` (its ip_range: the next free 10.N.0.0/20 unless given); call with the lock held."""
    if ip_range is None:
        used = {v["ip_range"] for v in state["vpcs"].values()}
        ip_range = next(f"10.{n}.0.0/20" for n in range(100, 256) if f"10.{n}.0.0/20" not in used)
    vpc_id = str(uuid.uuid4())
    vpc = {"id": vpc_id, "urn": f"do:vpc:{vpc_id}", "name": name, "description": description, "region": region,
           "ip_range": ip_range, "default": default, "created_at": now_iso()}
    state["vpcs"][vpc_id] = vpc
    return vpc


def default_vpc_id(state: Json, region: str) -> str:
    """The id of the region's default VPC, made on first use; call with the lock held."""
    for vpc in state["vpcs"].values():
        if vpc["region"] == region and vpc["default"]:
            return str(vpc["id"])
    vpc = new_vpc(state, f"default-{region}", region, None, "", default=True)
    return str(vpc["id"])


class VpcsApi:
    """`/v2/vpcs` (list, create, get)."""

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud

    def list_vpcs(self, req: ApiRequest) -> ApiResponse:
        with self.cloud.lock:
            items = [copy.deepcopy(v) for v in sorted(self.cloud.state["vpcs"].values(),
                                                      key=lambda v: (v["created_at"], v["id"]))]
        return self.cloud.page(req, "vpcs", items)

    def create_vpc(self, req: ApiRequest) -> ApiResponse:
        body = json_body(req)
        name, region = body.get("name"), body.get("region")
        ip_range, description = body.get("ip_range"), body.get("description", "")
        if not isinstance(name, str) or not VPC_NAME_RE.match(name):
            raise unprocessable("name is required: letters, digits, '-' and '.'.")
        if not isinstance(region, str) or region not in REGIONS:
            raise unprocessable(f"Region {region!r} is not available.")
        if not isinstance(description, str):
            raise unprocessable("description must be a string.")
        if ip_range is not None:
            try:
                if not isinstance(ip_range, str):
                    raise ValueError
                ipaddress.ip_network(ip_range)
            except ValueError:
                raise unprocessable(f"ip_range {ip_range!r} is not a CIDR block.") from None
        with self.cloud.lock:
            if any(v["name"] == name for v in self.cloud.state["vpcs"].values()):
                raise unprocessable(f"A VPC named {name} already exists.")
            vpc = new_vpc(self.cloud.state, name, region, ip_range, description, default=False)
            self.cloud.save()
            return ApiResponse(201, {"vpc": copy.deepcopy(vpc)})

    def get_vpc(self, req: ApiRequest, vpc: str) -> ApiResponse:
        with self.cloud.lock:
            found = self.cloud.state["vpcs"].get(vpc)
            if found is None:
                raise not_found()
            return ApiResponse(200, {"vpc": copy.deepcopy(found)})

