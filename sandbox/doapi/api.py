"""The local DigitalOcean API as one object, independent of HTTP: `DoApi.handle(ApiRequest) -> ApiResponse`.

Layer: sandbox. The router: it authenticates the bearer token, takes a token from the rate-limit bucket,
applies the injected failures (`FailRule`: before the request, or after it was performed), and dispatches
by method and path to the handler of each family of resources, all sharing one `Cloud`. The table in
`_make_routes` is the whole of the API.
"""

from __future__ import annotations

import hmac
import math
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from sandbox.doapi.actions import ActionsApi
from sandbox.doapi.admin import SandboxApi
from sandbox.doapi.catalog import CatalogApi
from sandbox.doapi.containers import ContainerPower
from sandbox.doapi.droplets import DropletsApi
from sandbox.doapi.faults import FailRule
from sandbox.doapi.firewalls import FirewallsApi
from sandbox.doapi.power import Power
from sandbox.doapi.reserved_ips import ReservedIpsApi
from sandbox.doapi.runner import ActionRunner
from sandbox.doapi.state import Cloud, DoApiOptions
from sandbox.doapi.tags import TagsApi
from sandbox.doapi.vpcs import VpcsApi
from sandbox.doapi.wire import UNAUTHORIZED, ApiError, ApiRequest, ApiResponse, not_found

log = structlog.get_logger("redwarden.doapi")

Handler = Callable[..., ApiResponse]
Route = tuple[str, re.Pattern[str], Handler]


class DoApi:
    """The API's state and handlers, independent of HTTP: `handle(ApiRequest) -> ApiResponse`."""

    def __init__(self, sandbox_dir: Path, token: str, base_url: str, options: DoApiOptions | None = None) -> None:
        if not token:
            raise ValueError("the API token must not be empty")
        self.cloud = Cloud(sandbox_dir, base_url, options)
        self.sandbox_dir = self.cloud.sandbox_dir
        self.state_dir = self.cloud.state_dir
        self.base_url = self.cloud.base_url
        self.options = self.cloud.options
        self._token = token.encode()
        containers = self.options.containers
        self.power = Power(self.cloud) if containers is None else ContainerPower(self.cloud, containers)
        self.runner = ActionRunner(self.cloud, self.power)
        self._routes = self._make_routes()
        sandbox = SandboxApi(self.cloud)
        self._sandbox_routes: list[Route] = [
            ("GET", re.compile(r"/_sandbox/faults"), sandbox.get_faults),
            ("POST", re.compile(r"/_sandbox/faults"), sandbox.post_faults),
            ("DELETE", re.compile(r"/_sandbox/faults"), sandbox.delete_faults),
            ("GET", re.compile(r"/_sandbox/requests"), sandbox.get_requests),
            ("DELETE", re.compile(r"/_sandbox/requests"), sandbox.delete_requests),
            ("GET", re.compile(r"/_sandbox/droplets"), sandbox.get_sandbox_droplets),
        ]

    def __repr__(self) -> str:  # never the token
        return f"DoApi({self.sandbox_dir}, {self.base_url})"

    # -- lifecycle --

    def resume(self) -> None:
        """Carry on the actions a previous API process left in progress (a boot, a reboot, an assign)."""
        self.runner.resume()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the workers; droplets' processes run on, and in-progress actions resume at the next start."""
        self.runner.close(timeout_s)

    def latency_s(self) -> float:
        return self.cloud.faults.latency_ms / 1000.0

    # -- dispatch --

    def handle(self, req: ApiRequest) -> ApiResponse:
        sandbox = req.path.startswith("/_sandbox/")
        try:
            self._authenticate(req)
            if sandbox:
                resp = self._route(req, self._sandbox_routes)
            else:
                with self.cloud.lock:
                    wait_s = self.cloud.bucket.take()
                if wait_s is not None:
                    raise ApiError(429, headers={"Retry-After": str(max(1, math.ceil(wait_s)))})
                rule = self._match_fault(req)
                if rule is not None and not rule.after_commit:
                    raise rule.error()
                resp = self._route(req, self._routes)
                if rule is not None:
                    resp = rule.error().response()
        except ApiError as e:
            resp = e.response()
        except Exception:
            log.exception("request.failed", method=req.method, path=req.path)
            resp = ApiError(500).response()
        with self.cloud.lock:
            resp.headers.update(self.cloud.bucket.headers())
            if not sandbox:
                self.cloud.requests.append({"method": req.method, "path": req.path, "query": dict(req.query),
                                            "status": resp.status, "at": time.time()})
        return resp

    def _authenticate(self, req: ApiRequest) -> None:
        auth = req.authorization or ""
        scheme, _, given = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._token):
            raise ApiError(401, UNAUTHORIZED["message"], UNAUTHORIZED["id"])

    def _match_fault(self, req: ApiRequest) -> FailRule | None:
        with self.cloud.lock:
            for rule in self.cloud.faults.fail:
                if rule.matches(req.method, req.path):
                    if rule.count is not None:
                        rule.count -= 1
                    return rule
        return None

    @staticmethod
    def _route(req: ApiRequest, routes: Sequence[Route]) -> ApiResponse:
        path_matched = False
        for method, pattern, handler in routes:
            m = pattern.fullmatch(req.path.rstrip("/") or "/")
            if m is None:
                continue
            path_matched = True
            if method == req.method.upper():
                return handler(req, **m.groupdict())
        if path_matched:
            raise ApiError(405)
        raise not_found()

    def _make_routes(self) -> list[Route]:
        cloud, runner = self.cloud, self.runner
        droplets, actions = DropletsApi(cloud, runner, self.power), ActionsApi(cloud, runner)
        ips, tags, fws = ReservedIpsApi(cloud, runner), TagsApi(cloud), FirewallsApi(cloud)
        vpcs, catalog = VpcsApi(cloud), CatalogApi(cloud.base_url)
        d, a, ip = r"(?P<droplet_id>\d+)", r"(?P<action_id>\d+)", r"(?P<ip>[0-9.]+)"
        table: list[tuple[str, str, Handler]] = [
            ("GET", "/v2/droplets", droplets.list_droplets),
            ("POST", "/v2/droplets", droplets.create_droplets),
            ("DELETE", "/v2/droplets", droplets.delete_droplets_by_tag),
            ("GET", f"/v2/droplets/{d}", droplets.get_droplet),
            ("DELETE", f"/v2/droplets/{d}", droplets.delete_droplet),
            ("GET", f"/v2/droplets/{d}/actions", actions.list_droplet_actions),
            ("POST", f"/v2/droplets/{d}/actions", actions.post_droplet_action),
            ("GET", f"/v2/droplets/{d}/actions/{a}", actions.get_droplet_action),
            ("GET", "/v2/actions", actions.list_actions),
            ("GET", f"/v2/actions/{a}", actions.get_action),
            ("GET", "/v2/reserved_ips", ips.list_reserved_ips),
            ("POST", "/v2/reserved_ips", ips.create_reserved_ip),
            ("GET", f"/v2/reserved_ips/{ip}", ips.get_reserved_ip),
            ("DELETE", f"/v2/reserved_ips/{ip}", ips.delete_reserved_ip),
            ("GET", f"/v2/reserved_ips/{ip}/actions", ips.list_reserved_ip_actions),
            ("POST", f"/v2/reserved_ips/{ip}/actions", ips.post_reserved_ip_action),
            ("GET", f"/v2/reserved_ips/{ip}/actions/{a}", ips.get_reserved_ip_action),
            ("GET", "/v2/tags", tags.list_tags),
            ("POST", "/v2/tags", tags.create_tag),
            ("GET", "/v2/tags/(?P<tag>[^/]+)", tags.get_tag),
            ("DELETE", "/v2/tags/(?P<tag>[^/]+)", tags.delete_tag),
            ("POST", "/v2/tags/(?P<tag>[^/]+)/resources", tags.tag_resources),
            ("DELETE", "/v2/tags/(?P<tag>[^/]+)/resources", tags.untag_resources),
            ("GET", "/v2/firewalls", fws.list_firewalls),
            ("POST", "/v2/firewalls", fws.create_firewall),
            ("GET", "/v2/firewalls/(?P<fw>[0-9a-f-]+)", fws.get_firewall),
            ("PUT", "/v2/firewalls/(?P<fw>[0-9a-f-]+)", fws.update_firewall),
            ("DELETE", "/v2/firewalls/(?P<fw>[0-9a-f-]+)", fws.delete_firewall),
            ("POST", "/v2/firewalls/(?P<fw>[0-9a-f-]+)/tags", fws.firewall_add_tags),
            ("DELETE", "/v2/firewalls/(?P<fw>[0-9a-f-]+)/tags", fws.firewall_remove_tags),
            ("POST", "/v2/firewalls/(?P<fw>[0-9a-f-]+)/droplets", fws.firewall_add_droplets),
            ("DELETE", "/v2/firewalls/(?P<fw>[0-9a-f-]+)/droplets", fws.firewall_remove_droplets),
            ("GET", "/v2/vpcs", vpcs.list_vpcs),
            ("POST", "/v2/vpcs", vpcs.create_vpc),
            ("GET", "/v2/vpcs/(?P<vpc>[0-9a-f-]+)", vpcs.get_vpc),
            ("GET", "/v2/regions", catalog.list_regions),
            ("GET", "/v2/sizes", catalog.list_sizes),
            ("GET", "/v2/images", catalog.list_images),
            ("GET", "/v2/images/(?P<image>[^/]+)", catalog.get_image),
        ]
        return [(m, re.compile(p), h) for m, p, h in table]
