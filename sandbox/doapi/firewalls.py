"""The local DigitalOcean API's firewalls: `/v2/firewalls`, their rules, tags and droplets.

Layer: sandbox. Firewalls are validated, kept and shown as DigitalOcean does (errors 400, not 422); loopback
traffic is not filtered.
"""

from __future__ import annotations

import copy
import ipaddress
import re
import uuid
from typing import Any

from sandbox.doapi.state import Cloud
from sandbox.doapi.tags import TAG_NAME_RE
from sandbox.doapi.wire import ApiRequest, ApiResponse, Json, bad_request, json_body, not_found, now_iso

FIREWALL_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9.-]+$")
PORTS_RE = re.compile(r"^(all|\d{1,5}(-\d{1,5})?)$")


class FirewallsApi:
    """`/v2/firewalls` (list, create, get, update, delete) and adding or removing their tags and droplets."""

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud

    def _firewall(self, fw_id: str) -> Json:
        fw = self.cloud.state["firewalls"].get(fw_id)
        if fw is None:
            raise not_found()
        return fw  # type: ignore[no-any-return]

    @staticmethod
    def _rules(raw: Any, direction: str, targets_key: str) -> list[Json]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise bad_request(f"{direction} must be a list of rules.")
        rules = []
        for i, rule in enumerate(raw):
            where = f"{direction}[{i}]"
            if not isinstance(rule, dict):
                raise bad_request(f"{where} must be an object.")
            protocol = rule.get("protocol")
            if protocol not in ("tcp", "udp", "icmp"):
                raise bad_request(f"{where}.protocol must be tcp, udp or icmp.")
            ports = rule.get("ports", "0" if protocol == "icmp" else None)
            if not isinstance(ports, str) or not PORTS_RE.match(ports) or any(
                    int(p) > 65535 for p in ports.split("-") if p.isdigit()):
                raise bad_request(f"{where}.ports must be 'all', a port or a range like '8000-9000'.")
            targets = rule.get(targets_key)
            if not isinstance(targets, dict):
                raise bad_request(f"{where}.{targets_key} is required.")
            norm: Json = {}
            for key, kind in (("addresses", str), ("droplet_ids", int), ("load_balancer_uids", str),
                              ("kubernetes_ids", str), ("tags", str)):
                value = targets.get(key)
                if value is None:
                    continue
                if not isinstance(value, list) or not all(isinstance(v, kind) and not isinstance(v, bool)
                                                          for v in value):
                    raise bad_request(f"{where}.{targets_key}.{key} must be a list of {kind.__name__}.")
                if key == "addresses":
                    for addr in value:
                        try:
                            ipaddress.ip_network(addr, strict=False)
                        except ValueError:
                            raise bad_request(f"{where}.{targets_key}.addresses: {addr!r} is not an address "
                                               "or CIDR.") from None
                norm[key] = list(value)
            if not any(norm.values()):
                raise bad_request(f"{where}.{targets_key} must name at least one address, droplet or tag.")
            rules.append({"protocol": protocol, "ports": ports, targets_key: norm})
        return rules

    def _firewall_fields(self, body: Json) -> Json:
        name = body.get("name")
        if not isinstance(name, str) or not FIREWALL_NAME_RE.match(name):
            raise bad_request("name is required: letters, digits, '.' and '-', starting with a letter or digit.")
        if body.get("inbound_rules") is None and body.get("outbound_rules") is None:
            raise bad_request("At least one of inbound_rules or outbound_rules is required.")
        inbound = self._rules(body.get("inbound_rules"), "inbound_rules", "sources")
        outbound = self._rules(body.get("outbound_rules"), "outbound_rules", "destinations")
        droplet_ids = body.get("droplet_ids") or []
        tags = body.get("tags") or []
        if not isinstance(droplet_ids, list) or not all(isinstance(i, int) and not isinstance(i, bool)
                                                        for i in droplet_ids):
            raise bad_request("droplet_ids must be a list of droplet ids.")
        for i in droplet_ids:
            if str(i) not in self.cloud.state["droplets"]:
                raise bad_request(f"Droplet {i} could not be found.")
        if not isinstance(tags, list) or not all(isinstance(t, str) and TAG_NAME_RE.match(t) for t in tags):
            raise bad_request("tags must be a list of tag names.")
        for tag in tags:
            self.cloud.ensure_tag(tag)
        return {"name": name, "inbound_rules": inbound, "outbound_rules": outbound,
                "droplet_ids": list(dict.fromkeys(droplet_ids)), "tags": list(dict.fromkeys(tags))}

    def list_firewalls(self, req: ApiRequest) -> ApiResponse:
        with self.cloud.lock:
            items = [copy.deepcopy(fw) for fw in sorted(self.cloud.state["firewalls"].values(),
                                                        key=lambda f: (f["created_at"], f["id"]))]
        return self.cloud.page(req, "firewalls", items)

    def create_firewall(self, req: ApiRequest) -> ApiResponse:
        body = json_body(req, status=400)
        with self.cloud.lock:
            fields = self._firewall_fields(body)
            fw = {"id": str(uuid.uuid4()), "status": "succeeded", "created_at": now_iso(), "pending_changes": [],
                  **fields}
            self.cloud.state["firewalls"][fw["id"]] = fw
            self.cloud.save()
            return ApiResponse(202, {"firewall": copy.deepcopy(fw)})

    def get_firewall(self, req: ApiRequest, fw: str) -> ApiResponse:
        with self.cloud.lock:
            return ApiResponse(200, {"firewall": copy.deepcopy(self._firewall(fw))})

    def update_firewall(self, req: ApiRequest, fw: str) -> ApiResponse:
        body = json_body(req, status=400)
        with self.cloud.lock:
            current = self._firewall(fw)
            current.update(self._firewall_fields(body))
            self.cloud.save()
            return ApiResponse(200, {"firewall": copy.deepcopy(current)})

    def delete_firewall(self, req: ApiRequest, fw: str) -> ApiResponse:
        with self.cloud.lock:
            self._firewall(fw)
            del self.cloud.state["firewalls"][fw]
            self.cloud.save()
        return ApiResponse(204)

    def _firewall_members(self, req: ApiRequest, fw: str, key: str, add: bool) -> ApiResponse:
        body = json_body(req, status=400)
        values = body.get(key)
        kind = int if key == "droplet_ids" else str
        if not isinstance(values, list) or not values or not all(isinstance(v, kind) for v in values):
            raise bad_request(f"{key} must be a non-empty list.")
        with self.cloud.lock:
            current = self._firewall(fw)
            if add:
                if key == "droplet_ids" and any(str(v) not in self.cloud.state["droplets"] for v in values):
                    raise bad_request("A droplet could not be found.")
                if key == "tags":
                    for t in values:
                        self.cloud.ensure_tag(t)
                current[key] = list(dict.fromkeys([*current[key], *values]))
            else:
                current[key] = [v for v in current[key] if v not in values]
            self.cloud.save()
        return ApiResponse(204)

    def firewall_add_tags(self, req: ApiRequest, fw: str) -> ApiResponse:
        return self._firewall_members(req, fw, "tags", add=True)

    def firewall_remove_tags(self, req: ApiRequest, fw: str) -> ApiResponse:
        return self._firewall_members(req, fw, "tags", add=False)

    def firewall_add_droplets(self, req: ApiRequest, fw: str) -> ApiResponse:
        return self._firewall_members(req, fw, "droplet_ids", add=True)

    def firewall_remove_droplets(self, req: ApiRequest, fw: str) -> ApiResponse:
        return self._firewall_members(req, fw, "droplet_ids", add=False)

