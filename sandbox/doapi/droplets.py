"""The local DigitalOcean API's droplets: `/v2/droplets` (list, get, create one or many, delete, by tag).

Layer: sandbox. A create is validated against the catalog, stored as `new` with a `create` action that
boots it (`sandbox.doapi.power`, run by `sandbox.doapi.runner`); a delete destroys it at once.
"""

from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Mapping
from typing import Any

from sandbox.doapi.catalog import DEFAULT_REGION, REGIONS, SIZES, find_image, image_object, region_object, size_object
from sandbox.doapi.power import Power
from sandbox.doapi.runner import ActionRunner
from sandbox.doapi.state import Cloud
from sandbox.doapi.tags import TAG_NAME_RE
from sandbox.doapi.vpcs import default_vpc_id
from sandbox.doapi.wire import (
    ApiError,
    ApiRequest,
    ApiResponse,
    Json,
    bad_request,
    json_body,
    now_iso,
    unprocessable,
)

DROPLET_NAME_RE = re.compile(r"^[a-zA-Z0-9]?[a-z0-9A-Z.\-]*[a-z0-9A-Z]$")
USER_DATA_MAX_BYTES = 64 * 1024


def render_droplet(d: Mapping[str, Any]) -> Json:
    """A stored droplet in the shape of the API, its catalog objects and loopback address included."""
    size = size_object(d["size"])
    v4: list[Json] = []
    if d.get("address"):
        for kind in ("private", "public"):
            v4.append({"ip_address": d["address"], "netmask": "255.0.0.0", "gateway": "127.0.0.1", "type": kind})
    features = ["droplet_agent", "private_networking"]
    if d.get("monitoring"):
        features.append("monitoring")
    if d.get("ipv6"):
        features.append("ipv6")
    if d.get("backups"):
        features.append("backups")
    return {
        "id": d["id"], "name": d["name"], "memory": size["memory"], "vcpus": size["vcpus"], "disk": size["disk"],
        "disk_info": size["disk_info"], "locked": False, "status": d["status"], "kernel": None,
        "created_at": d["created_at"], "features": features, "backup_ids": [], "next_backup_window": None,
        "snapshot_ids": [], "image": image_object(d["image_id"]), "volume_ids": [], "size": size,
        "size_slug": d["size"], "networks": {"v4": v4, "v6": []}, "region": region_object(d["region"]),
        "tags": list(d["tags"]), "vpc_uuid": d["vpc_uuid"],
    }


class DropletsApi:
    """`/v2/droplets`: droplets are kept in the shared `Cloud`, booted by the runner, destroyed by `Power`."""

    def __init__(self, cloud: Cloud, runner: ActionRunner, power: Power) -> None:
        self.cloud = cloud
        self.runner = runner
        self.power = power

    def list_droplets(self, req: ApiRequest) -> ApiResponse:
        tag, name = req.query.get("tag_name"), req.query.get("name")
        with self.cloud.lock:
            rows = sorted(self.cloud.state["droplets"].values(), key=lambda d: d["id"])
            items = [render_droplet(d) for d in rows
                     if (tag is None or tag in d["tags"]) and (name is None or d["name"] == name)]
        extra = {k: v for k, v in (("tag_name", tag), ("name", name)) if v is not None}
        return self.cloud.page(req, "droplets", items, extra)

    def get_droplet(self, req: ApiRequest, droplet_id: str) -> ApiResponse:
        with self.cloud.lock:
            return ApiResponse(200, {"droplet": render_droplet(self.cloud.droplet(droplet_id))})

    def _validate_create(self, body: Json) -> tuple[list[str], Json]:
        """(names, the droplet fields) of a create request, or a 422 naming what is wrong."""
        if ("name" in body) == ("names" in body):
            raise unprocessable("Specify exactly one of name (a string) or names (a list of up to 10 strings).")
        if "name" in body:
            names = [body["name"]]
        else:
            names = body["names"]
            if not isinstance(names, list) or not 1 <= len(names) <= 10:
                raise unprocessable("names must be a list of 1 to 10 droplet names.")
        for n in names:
            if not isinstance(n, str) or not n or len(n) > 255 or not DROPLET_NAME_RE.match(n):
                raise unprocessable(f"Name {n!r} is invalid: only valid hostname characters are allowed "
                                     "(a-z, A-Z, 0-9, . and -).")
        region = body.get("region", DEFAULT_REGION)
        if not isinstance(region, str):
            raise unprocessable("region must be a string (a region slug).")
        if region not in REGIONS:
            raise unprocessable(f"Region {region!r} is not available.")
        size = body.get("size")
        if not isinstance(size, str):
            raise unprocessable("size is required (a size slug).")
        if size not in SIZES:
            raise unprocessable(f"Size {size!r} is not available in this region.")
        image = body.get("image")
        if isinstance(image, bool) or not isinstance(image, (str, int)):
            raise unprocessable("image is required (an image slug or id).")
        image_id = find_image(image)
        if image_id is None:
            raise unprocessable(f"You specified an invalid image for Droplet creation: {image!r}.")
        ssh_keys = body.get("ssh_keys") or []
        if not isinstance(ssh_keys, list) or not all(
                isinstance(k, (str, int)) and not isinstance(k, bool) for k in ssh_keys):
            raise unprocessable("ssh_keys must be a list of SSH key ids or fingerprints.")
        for flag in ("backups", "ipv6", "monitoring", "private_networking", "with_droplet_agent"):
            if flag in body and not isinstance(body[flag], bool):
                raise unprocessable(f"{flag} must be a boolean.")
        tags = body.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) and TAG_NAME_RE.match(t) for t in tags):
            raise unprocessable("tags must be a list of tag names (letters, digits, '_', '-', ':').")
        user_data = body.get("user_data")
        if user_data is not None:
            if not isinstance(user_data, str):
                raise unprocessable("user_data must be a string.")
            if len(user_data.encode()) > USER_DATA_MAX_BYTES:
                raise unprocessable("user_data must not exceed 64 KiB (65536 bytes).")
        volumes = body.get("volumes") or []
        if volumes:
            raise unprocessable("volumes are not supported by this sandbox.")
        vpc_uuid = body.get("vpc_uuid")
        if vpc_uuid is not None:
            if not isinstance(vpc_uuid, str):
                raise unprocessable("vpc_uuid must be a string.")
            vpc = self.cloud.state["vpcs"].get(vpc_uuid)
            if vpc is None:
                raise unprocessable(f"VPC {vpc_uuid} could not be found.")
            if vpc["region"] != region:
                raise unprocessable(f"VPC {vpc_uuid} is in region {vpc['region']}, not {region}.")
        fields = {"region": region, "size": size, "image_id": image_id, "ssh_keys": list(ssh_keys),
                  "backups": bool(body.get("backups", False)), "ipv6": bool(body.get("ipv6", False)),
                  "monitoring": bool(body.get("monitoring", False)), "tags": list(dict.fromkeys(tags)),
                  "user_data": user_data, "vpc_uuid": vpc_uuid}
        return names, fields

    def create_droplets(self, req: ApiRequest) -> ApiResponse:
        body = json_body(req)
        created: list[tuple[Json, Json]] = []
        with self.cloud.lock:
            names, fields = self._validate_create(body)
            if fields["vpc_uuid"] is None:
                fields["vpc_uuid"] = default_vpc_id(self.cloud.state, fields["region"])
            for tag in fields["tags"]:
                self.cloud.ensure_tag(tag)
            for name in names:
                droplet_id = self.cloud.state["next_droplet_id"]
                self.cloud.state["next_droplet_id"] = droplet_id + 1
                d = {"id": droplet_id, "name": name, **copy.deepcopy(fields), "status": "new",
                     "created_at": now_iso(), "address": None, "dir": f"droplets/{name}-{droplet_id}",
                     "cloud_init_started": False}
                self.cloud.state["droplets"][str(droplet_id)] = d
                action = self.cloud.new_action("create", "droplet", droplet_id, fields["region"])
                created.append((d, action))
            self.cloud.save()
            rendered = [render_droplet(d) for d, _ in created]
        for _, action in created:
            self.runner.start(action)
        links = {"actions": [{"id": a["id"], "rel": "create", "href": f"{self.cloud.base_url}/v2/actions/{a['id']}"}
                             for _, a in created]}
        if "name" in body:
            return ApiResponse(202, {"droplet": rendered[0], "links": links})
        return ApiResponse(202, {"droplets": rendered, "links": links})

    def delete_droplet(self, req: ApiRequest, droplet_id: str) -> ApiResponse:
        self.power.destroy(int(droplet_id))
        return ApiResponse(204)

    def delete_droplets_by_tag(self, req: ApiRequest) -> ApiResponse:
        tag = req.query.get("tag_name")
        if not tag:
            raise bad_request("tag_name is required to delete droplets by tag.")
        with self.cloud.lock:
            ids = [d["id"] for d in self.cloud.state["droplets"].values() if tag in d["tags"]]
        for droplet_id in ids:
            with contextlib.suppress(ApiError):
                self.power.destroy(droplet_id)
        return ApiResponse(204)

