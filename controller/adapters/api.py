"""The controller's HTTP API (FastAPI): report ingest, the fleet view, health.

Layer: adapter. Requests are authenticated and validated here, at the wire boundary; what passes is a
frozen `Report` handed to the store. Invalid input gets a 4xx whose body names the bad field
(`{"detail": [{"loc": "redis.ping_ms", "msg": ...}]}`), never a 5xx.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import pydantic
import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from controller import __version__
from controller.adapters.cloud import Droplet, ProviderError
from controller.adapters.directives import DirectiveQueue
from controller.adapters.storage.reports import REPORT_ADAPTER
from controller.config import ClusterConfig, cluster_redis_password
from controller.core.view import NodeState, vitals_changed
from protocol.report import Report
from protocol.signing import HEADER_CLUSTER, HEADER_SIGNATURE, HEADER_TIMESTAMP, verify

log = structlog.get_logger("redwarden.controller")


def _error(status: int, message: str, loc: str | None = None) -> JSONResponse:
    detail: list[dict[str, Any]] = [{"loc": loc, "msg": message}] if loc else [{"msg": message}]
    return JSONResponse({"detail": detail}, status_code=status)


def validation_detail(err: pydantic.ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": ".".join(str(p) for p in e["loc"]) or "(body)", "msg": e["msg"], "type": e["type"]}
        for e in err.errors(include_url=False, include_input=False)
    ]


class ReportSink(Protocol):
    def put_report(self, report: Report, received_at: float, raw: bytes | None = None) -> NodeState | None: ...


class FleetReader(Protocol):
    def names(self) -> list[str]: ...

    def status(self, cluster: str, now: float) -> dict[str, Any]: ...


class History(Protocol):
    def history(self, cluster: str | None, limit: int) -> list[dict[str, Any]]: ...


class Enrollment(Protocol):
    def redeem(self, cluster: str, node: str, token: str, now: float) -> str | None: ...


class HealSwitches(Protocol):
    def pause(self, cluster: str, node: str | None = None) -> object: ...

    def resume(self, cluster: str, node: str | None = None) -> object: ...

    def ack(self, cluster: str) -> object: ...

    def status(self, cluster: str) -> dict[str, Any]: ...


class NodeCreator(Protocol):
    def create_node(self, cluster: str, name: str, sentinels: tuple[str, ...]) -> Droplet: ...

    def ensure_firewall(self, cluster: str, controller_address: str | None) -> None: ...


@dataclass(frozen=True)
class ApiDeps:
    """What the API needs, each behind the narrowest interface that serves it (wired by `app.service`)."""

    clusters: Mapping[str, ClusterConfig]
    secrets: Mapping[str, bytes]  # each cluster's push secret
    reports: ReportSink
    directives: DirectiveQueue
    fleet: FleetReader
    clock: Callable[[], float] = time.time
    max_report_bytes: int = 256 * 1024
    listen_host: str = "127.0.0.1"
    admin_token: str | None = None
    incidents: History | None = None
    actions: History | None = None
    enrollments: Enrollment | None = None
    heal: HealSwitches | None = None
    provisioner: NodeCreator | None = None
    on_vitals_changed: Callable[[], None] = lambda: None  # wakes the watch loop


def create_app(deps: ApiDeps) -> FastAPI:
    app = FastAPI(title="redwarden controller", version=__version__)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"ok": True, "version": __version__, "clusters": len(deps.clusters)}

    @app.post("/v1/reports", responses={401: {}, 413: {}, 422: {}})
    async def post_report(request: Request) -> Response:
        cluster = request.headers.get(HEADER_CLUSTER)
        timestamp = request.headers.get(HEADER_TIMESTAMP)
        signature = request.headers.get(HEADER_SIGNATURE)
        if not cluster or not timestamp or not signature:
            missing = [h for h, v in ((HEADER_CLUSTER, cluster), (HEADER_TIMESTAMP, timestamp),
                                      (HEADER_SIGNATURE, signature)) if not v]
            return _error(401, f"missing header {missing[0]}", loc=f"header.{missing[0]}")
        secret = deps.secrets.get(cluster)
        if secret is None:
            return _error(401, "unknown cluster", loc=f"header.{HEADER_CLUSTER}")
        body = await request.body()
        if len(body) > deps.max_report_bytes:
            return _error(413, f"report is {len(body)} bytes, limit {deps.max_report_bytes}")
        now = deps.clock()
        reason = verify(secret, timestamp, body, signature, now)
        if reason is not None:
            log.warning("report.rejected", cluster=cluster, reason=reason)
            return _error(401, reason, loc=f"header.{HEADER_SIGNATURE}")
        try:
            report: Report = REPORT_ADAPTER.validate_json(body)
        except pydantic.ValidationError as e:
            return JSONResponse({"detail": validation_detail(e)}, status_code=422)
        if report.identity.cluster != cluster:
            return _error(422, f"identity.cluster {report.identity.cluster!r} does not match the signed "
                          f"cluster {cluster!r}", loc="identity.cluster")
        previous = deps.reports.put_report(report, now, raw=body)
        if vitals_changed(previous, report):
            deps.on_vitals_changed()  # a process died or came back, a role moved: the watch cycle runs now
        deps.directives.acknowledge(cluster, report.identity.node, report.acks)
        return JSONResponse({"accepted": True, "directives": deps.directives.for_node(cluster, report.identity.node)})

    @app.get("/v1/clusters")
    def list_clusters() -> dict[str, Any]:
        now = deps.clock()
        return {"clusters": [deps.fleet.status(name, now) for name in deps.fleet.names()]}

    @app.get("/v1/clusters/{name}", responses={404: {}})
    def get_cluster(name: str) -> Response:
        if name not in deps.clusters:
            return _error(404, f"no cluster named {name!r}", loc="path.name")
        return JSONResponse(deps.fleet.status(name, deps.clock()))

    @app.get("/v1/incidents")
    def list_incidents(cluster: str | None = None, limit: int = 100) -> Response:
        if cluster is not None and cluster not in deps.clusters:
            return _error(404, f"no cluster named {cluster!r}", loc="query.cluster")
        if not 1 <= limit <= 10_000:
            return _error(422, "limit must be between 1 and 10000", loc="query.limit")
        incidents = deps.incidents.history(cluster, limit) if deps.incidents else []
        return JSONResponse({"incidents": incidents})

    @app.get("/v1/actions")
    def list_actions(cluster: str | None = None, limit: int = 100) -> Response:
        if cluster is not None and cluster not in deps.clusters:
            return _error(404, f"no cluster named {cluster!r}", loc="query.cluster")
        if not 1 <= limit <= 10_000:
            return _error(422, "limit must be between 1 and 10000", loc="query.limit")
        actions = deps.actions.history(cluster, limit) if deps.actions else []
        return JSONResponse({"actions": actions})

    @app.post("/v1/enroll", responses={403: {}, 404: {}, 422: {}})
    async def enroll(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(422, "body is not JSON", loc="body")
        if not isinstance(body, dict):
            return _error(422, "body must be an object", loc="body")
        for key in ("cluster", "node", "token"):
            if not isinstance(body.get(key), str) or not body[key]:
                return _error(422, f"{key} is required (a string)", loc=key)
        cluster = body["cluster"]
        if cluster not in deps.clusters or deps.enrollments is None:
            return _error(404, f"no cluster named {cluster!r} accepts enrollments", loc="cluster")
        reason = deps.enrollments.redeem(cluster, body["node"], body["token"], deps.clock())
        if reason is not None:
            log.warning("enroll.refused", cluster=cluster, node=body["node"], reason=reason)
            return _error(403, reason, loc="token")
        password = cluster_redis_password(cluster, deps.clusters[cluster])
        if not password:
            return _error(404, f"clusters.{cluster}.redis_password_file is not set on the controller")
        log.info("enroll.accepted", cluster=cluster, node=body["node"])
        return JSONResponse({"redis_password": password, "cluster_secret": deps.secrets[cluster].decode()})

    def _admin(request: Request, cluster: str) -> Response | None:
        if cluster not in deps.clusters:
            return _error(404, f"no cluster named {cluster!r}", loc="path.cluster")
        if deps.heal is None:
            return _error(409, "healing is not running on this controller")
        if deps.admin_token is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given, f"Bearer {deps.admin_token}"):
                return _error(401, "admin token required (Authorization: Bearer ...)", loc="header.Authorization")
        return None

    def _switch(request: Request, cluster: str, verb: str, node: str | None = None) -> Response:
        if (refused := _admin(request, cluster)) is not None:
            return refused
        assert deps.heal is not None
        if verb == "pause":
            deps.heal.pause(cluster, node)
        elif verb == "resume":
            deps.heal.resume(cluster, node)
        else:
            deps.heal.ack(cluster)
        log.warning("heal.switched", verb=verb, cluster=cluster, node=node)
        return JSONResponse(deps.heal.status(cluster))

    @app.post("/v1/clusters/{cluster}/pause")
    def pause(request: Request, cluster: str, node: str | None = None) -> Response:
        """Maintenance: alert, but act on nothing in the cluster (or only not on `node`)."""
        return _switch(request, cluster, "pause", node)

    @app.post("/v1/clusters/{cluster}/resume")
    def resume(request: Request, cluster: str, node: str | None = None) -> Response:
        return _switch(request, cluster, "resume", node)

    @app.post("/v1/clusters/{cluster}/ack")
    def ack(request: Request, cluster: str) -> Response:
        """Acknowledge an exhausted daily action budget: healing may act again today."""
        return _switch(request, cluster, "ack")

    @app.post("/v1/clusters/{cluster}/nodes", responses={401: {}, 404: {}, 409: {}, 422: {}, 502: {}})
    async def create_node(request: Request, cluster: str) -> Response:
        """Create one Redis droplet that bootstraps into the cluster (admin; used by `redwarden cluster create`)."""
        if (refused := _admin(request, cluster)) is not None:
            return refused
        try:
            body = await request.json()
        except ValueError:
            return _error(422, "body is not JSON", loc="body")
        if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"]:
            return _error(422, "name is required (a string)", loc="name")
        sentinels = body.get("sentinels", [])
        if not isinstance(sentinels, list) or not all(isinstance(x, str) for x in sentinels):
            return _error(422, "sentinels must be a list of ip:port strings", loc="sentinels")
        if deps.provisioner is None:
            return _error(409, "this controller has no DigitalOcean adapter to create droplets with")
        provisioner = deps.provisioner
        try:
            if body.get("firewall"):
                await run_in_threadpool(provisioner.ensure_firewall, cluster, deps.listen_host)
            droplet = await run_in_threadpool(provisioner.create_node, cluster, body["name"], tuple(sentinels))
        except ProviderError as e:
            return _error(502, str(e))
        return JSONResponse({"droplet": {"id": droplet.id, "name": droplet.name, "status": droplet.status}},
                            status_code=202)

    return app
