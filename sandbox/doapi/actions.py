"""The local DigitalOcean API's actions: `/v2/actions` and a droplet's `/v2/droplets/{id}/actions`.

Layer: sandbox. Posting a droplet action (power_on, power_off, shutdown, reboot, power_cycle, rename) stores it
in progress and hands it to the runner; one droplet has at most one pending action. The spec's other droplet
action types are refused with a 422 saying the sandbox does not support them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sandbox.doapi.catalog import region_object
from sandbox.doapi.droplets import DROPLET_NAME_RE
from sandbox.doapi.runner import ActionRunner
from sandbox.doapi.state import Cloud
from sandbox.doapi.wire import ApiRequest, ApiResponse, Json, json_body, not_found, unprocessable

DROPLET_ACTIONS = ("power_cycle", "power_on", "power_off", "reboot", "shutdown", "rename")
SPEC_DROPLET_ACTIONS = ("enable_backups", "disable_backups", "reboot", "power_cycle", "shutdown", "power_off",
                        "power_on", "restore", "password_reset", "resize", "rebuild", "rename",
                        "change_kernel", "enable_ipv6", "snapshot")


def render_action(a: Mapping[str, Any]) -> Json:
    """A stored action in the shape of the API."""
    out = {k: a[k] for k in ("id", "status", "type", "started_at", "completed_at", "resource_id",
                             "resource_type", "region_slug")}
    out["region"] = region_object(a["region_slug"]) if a.get("region_slug") else None
    if out["region"] is None:
        del out["region"]
    return out


class ActionsApi:
    """`/v2/actions` (all of them) and `/v2/droplets/{id}/actions` (post, list, get)."""

    def __init__(self, cloud: Cloud, runner: ActionRunner) -> None:
        self.cloud = cloud
        self.runner = runner

    def post_droplet_action(self, req: ApiRequest, droplet_id: str) -> ApiResponse:
        body = json_body(req)
        type_ = body.get("type")
        if not isinstance(type_, str) or type_ not in SPEC_DROPLET_ACTIONS:
            raise unprocessable(f"type must be one of {', '.join(SPEC_DROPLET_ACTIONS)}.")
        if type_ not in DROPLET_ACTIONS:
            raise unprocessable(f"The {type_} action is not supported by this sandbox.")
        params: Json = {}
        if type_ == "rename":
            name = body.get("name")
            if not isinstance(name, str) or not DROPLET_NAME_RE.match(name):
                raise unprocessable("name must be a valid hostname.")
            params["name"] = name
        with self.cloud.lock:
            d = self.cloud.droplet(droplet_id)
            if self.cloud.pending_action("droplet", d["id"]) is not None:
                raise unprocessable("Droplet already has a pending event.")
            action = self.cloud.new_action(type_, "droplet", d["id"], d["region"], params)
            self.cloud.save()
        self.runner.start(action)
        return ApiResponse(201, {"action": render_action(action)})

    def list_droplet_actions(self, req: ApiRequest, droplet_id: str) -> ApiResponse:
        with self.cloud.lock:
            d = self.cloud.droplet(droplet_id)
            items = [render_action(a) for a in sorted(self.cloud.state["actions"].values(), key=lambda a: -a["id"])
                     if a["resource_type"] == "droplet" and a["resource_id"] == d["id"]]
        return self.cloud.page(req, "actions", items)

    def get_droplet_action(self, req: ApiRequest, droplet_id: str, action_id: str) -> ApiResponse:
        with self.cloud.lock:
            d = self.cloud.droplet(droplet_id)
            a = self.cloud.state["actions"].get(action_id)
            if a is None or a["resource_type"] != "droplet" or a["resource_id"] != d["id"]:
                raise not_found()
            return ApiResponse(200, {"action": render_action(a)})

    def list_actions(self, req: ApiRequest) -> ApiResponse:
        with self.cloud.lock:
            items = [render_action(a) for a in sorted(self.cloud.state["actions"].values(), key=lambda a: -a["id"])]
        return self.cloud.page(req, "actions", items)

    def get_action(self, req: ApiRequest, action_id: str) -> ApiResponse:
        with self.cloud.lock:
            a = self.cloud.state["actions"].get(action_id)
            if a is None:
                raise not_found()
            return ApiResponse(200, {"action": render_action(a)})

