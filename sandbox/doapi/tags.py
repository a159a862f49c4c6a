"""The local DigitalOcean API's tags: `/v2/tags` and tagging droplets.

Layer: sandbox. A tag exists once created, or once a droplet or a firewall names it; only droplets can be
tagged here. Deleting a tag takes it off every droplet and firewall.
"""

from __future__ import annotations

import re

from sandbox.doapi.state import Cloud
from sandbox.doapi.wire import ApiError, ApiRequest, ApiResponse, Json, json_body, not_found, unprocessable

TAG_NAME_RE = re.compile(r"^[a-zA-Z0-9_\-:]+$")


class TagsApi:
    """`/v2/tags` (list, create, get, delete) and `/v2/tags/{tag}/resources` (tag, untag droplets)."""

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud

    def _render_tag(self, name: str) -> Json:
        tagged = sorted((d for d in self.cloud.state["droplets"].values() if name in d["tags"]),
                        key=lambda d: d["id"])
        droplets: Json = {"count": len(tagged)}
        if tagged:
            droplets["last_tagged_uri"] = f"{self.cloud.base_url}/v2/droplets/{tagged[-1]['id']}"
        resources = {"count": len(tagged), **({"last_tagged_uri": droplets["last_tagged_uri"]} if tagged else {}),
                     "droplets": droplets, "images": {"count": 0}, "volumes": {"count": 0},
                     "volume_snapshots": {"count": 0}, "databases": {"count": 0}}
        return {"name": name, "resources": resources}

    def list_tags(self, req: ApiRequest) -> ApiResponse:
        with self.cloud.lock:
            items = [self._render_tag(name) for name in sorted(self.cloud.state["tags"])]
        return self.cloud.page(req, "tags", items)

    def create_tag(self, req: ApiRequest) -> ApiResponse:
        body = json_body(req, status=400)
        name = body.get("name")
        if not isinstance(name, str) or len(name) > 255 or not TAG_NAME_RE.match(name):
            # the tags service answers in its own shape (documented): {"error", "messages", "root_causes"}
            error = f'Error validating resource tag: "tag-name \\"{name}\\" contains invalid characters"'
            raise ApiError(400, error, body={"error": error, "messages": None,
                                             "root_causes": [f"rpc error: code = InvalidArgument desc = {error}"]})
        with self.cloud.lock:
            self.cloud.ensure_tag(name)
            self.cloud.save()
            return ApiResponse(201, {"tag": self._render_tag(name)})

    def get_tag(self, req: ApiRequest, tag: str) -> ApiResponse:
        with self.cloud.lock:
            if tag not in self.cloud.state["tags"]:
                raise not_found()
            return ApiResponse(200, {"tag": self._render_tag(tag)})

    def delete_tag(self, req: ApiRequest, tag: str) -> ApiResponse:
        with self.cloud.lock:
            if tag not in self.cloud.state["tags"]:
                raise not_found()
            del self.cloud.state["tags"][tag]
            for d in self.cloud.state["droplets"].values():
                d["tags"] = [t for t in d["tags"] if t != tag]
            for fw in self.cloud.state["firewalls"].values():
                fw["tags"] = [t for t in fw["tags"] if t != tag]
            self.cloud.save()
        return ApiResponse(204)

    def _tag_targets(self, req: ApiRequest, tag: str) -> list[Json]:
        body = json_body(req)
        resources = body.get("resources")
        if not isinstance(resources, list) or not resources:
            raise unprocessable("resources must be a non-empty list of {resource_id, resource_type}.")
        if tag not in self.cloud.state["tags"]:
            raise not_found()
        targets = []
        for r in resources:
            if not isinstance(r, dict) or r.get("resource_type") != "droplet":
                raise unprocessable("Only droplets can be tagged in this sandbox.")
            d = self.cloud.state["droplets"].get(str(r.get("resource_id")))
            if d is None:
                raise unprocessable(f"Droplet {r.get('resource_id')} could not be found.")
            targets.append(d)
        return targets

    def tag_resources(self, req: ApiRequest, tag: str) -> ApiResponse:
        with self.cloud.lock:
            for d in self._tag_targets(req, tag):
                if tag not in d["tags"]:
                    d["tags"].append(tag)
            self.cloud.save()
        return ApiResponse(204)

    def untag_resources(self, req: ApiRequest, tag: str) -> ApiResponse:
        with self.cloud.lock:
            for d in self._tag_targets(req, tag):
                d["tags"] = [t for t in d["tags"] if t != tag]
            self.cloud.save()
        return ApiResponse(204)

