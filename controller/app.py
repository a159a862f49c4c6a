"""The controller's HTTP API (FastAPI): report ingest, the fleet view, health.

Layer: adapter. Requests are authenticated and validated here, at the wire boundary; what passes is a
frozen `Report` handed to the store. Invalid input gets a 4xx whose body names the bad field
(`{"detail": [{"loc": "redis.ping_ms", "msg": ...}]}`), never a 5xx.
"""

from __future__ import annotations

import dataclasses
import hmac
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pydantic
import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from agent.report import Report
from agent.signing import HEADER_CLUSTER, HEADER_SIGNATURE, HEADER_TIMESTAMP, verify
from controller import __version__
from controller.checks import check, cluster_health
from controller.config import ControllerConfig, cluster_redis_password
from controller.directives import DirectiveQueue
from controller.do_adapter import ProviderError
from controller.enroll import Enrollments
from controller.findings import Finding
from controller.heal_store import HealStore
from controller.incident_store import IncidentLog
from controller.policy import Policy
from controller.store import REPORT_ADAPTER, StateStore
from controller.view import ClusterView, cluster_status, vitals_changed

if TYPE_CHECKING:
    from controller.healing import Healer

log = structlog.get_logger("redwarden.controller")


def _error(status: int, message: str, loc: str | None = None) -> JSONResponse:
    detail: list[dict[str, Any]] = [{"loc": loc, "msg": message}] if loc else [{"msg": message}]
    return JSONResponse({"detail": detail}, status_code=status)


def validation_detail(err: pydantic.ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": ".".join(str(p) for p in e["loc"]) or "(body)", "msg": e["msg"], "type": e["type"]}
        for e in err.errors(include_url=False, include_input=False)
    ]


class Controller:
    """Holds config, secrets and the store; builds views. Shared by the API and the cycle."""

    def __init__(
        self,
        config: ControllerConfig,
        secrets: dict[str, bytes],
        store: StateStore,
        clock: Callable[[], float] = time.time,
        policy: Policy | None = None,
        incident_log: IncidentLog | None = None,
    ) -> None:
        self.config = config
        self.secrets = secrets
        self.store = store
        self.clock = clock
        self.policy = policy or Policy()
        self.incident_log = incident_log
        self.directives = DirectiveQueue()
        self.healer: Healer | None = None  # set by the service when healing is wired
        self.heal_store: HealStore | None = None
        self.enrollments: Enrollments | None = None
        self.admin_token: str | None = None
        # written by the watch cycle; read by the API (a dict assignment is atomic under the GIL)
        self.latest_findings: dict[str, tuple[Finding, ...]] = {}
        # set by the API when a report changes a node's vitals; wakes the watch cycle before its interval
        self.changed = threading.Event()

    def view(self, cluster: str, now: float | None = None) -> ClusterView:
        cfg = self.config.clusters[cluster]
        return ClusterView(
            name=cluster,
            master_name=cfg.master_name,
            expected_nodes=cfg.expected_nodes,
            report_interval_s=cfg.report_interval_s,
            stale_after_s=cfg.stale_after_s,
            now=self.clock() if now is None else now,
            nodes=self.store.nodes(cluster),
        )

    def policy_for(self, cluster: str) -> Policy:
        """The policy, with the cluster's own idea of silence (one setting, not two that could differ)."""
        cfg = self.config.clusters[cluster]
        return dataclasses.replace(self.policy, agent_silent_intervals=float(cfg.stale_after_intervals))

    def status(self, cluster: str, now: float) -> dict[str, Any]:
        """A cluster in the status contract, with its health and the findings of the last cycle."""
        view = self.view(cluster, now)
        findings = self.latest_findings.get(cluster)
        if findings is None:  # no cycle has run yet
            findings = check(view, self.policy_for(cluster), now)
        out = cluster_status(view)
        out["health"] = cluster_health(findings)
        if self.healer is not None:
            out["heal"] = self.healer.status(cluster)
        out["findings"] = [
            {"code": str(f.code), "severity": str(f.severity), "subject": f.subject, "message": f.message,
             "key": f.key}
            for f in findings
        ]
        return out


def create_app(ctl: Controller) -> FastAPI:
    app = FastAPI(title="redwarden controller", version=__version__)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"ok": True, "version": __version__, "clusters": len(ctl.config.clusters)}

    @app.post("/v1/reports", responses={401: {}, 413: {}, 422: {}})
    async def post_report(request: Request) -> Response:
        cluster = request.headers.get(HEADER_CLUSTER)
        timestamp = request.headers.get(HEADER_TIMESTAMP)
        signature = request.headers.get(HEADER_SIGNATURE)
        if not cluster or not timestamp or not signature:
            missing = [h for h, v in ((HEADER_CLUSTER, cluster), (HEADER_TIMESTAMP, timestamp),
                                      (HEADER_SIGNATURE, signature)) if not v]
            return _error(401, f"missing header {missing[0]}", loc=f"header.{missing[0]}")
        secret = ctl.secrets.get(cluster)
        if secret is None:
            return _error(401, "unknown cluster", loc=f"header.{HEADER_CLUSTER}")
        body = await request.body()
        if len(body) > ctl.config.max_report_bytes:
            return _error(413, f"report is {len(body)} bytes, limit {ctl.config.max_report_bytes}")
        now = ctl.clock()
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
        previous = ctl.store.put_report(report, now, raw=body)
        if vitals_changed(previous, report):
            ctl.changed.set()  # a process died or came back, a role moved: the watch cycle runs now
        ctl.directives.acknowledge(cluster, report.identity.node, report.acks)
        return JSONResponse({"accepted": True, "directives": ctl.directives.for_node(cluster, report.identity.node)})

    @app.get("/v1/clusters")
    def list_clusters() -> dict[str, Any]:
        now = ctl.clock()
        return {"clusters": [ctl.status(name, now) for name in sorted(ctl.config.clusters)]}

    @app.get("/v1/clusters/{name}", responses={404: {}})
    def get_cluster(name: str) -> Response:
        if name not in ctl.config.clusters:
            return _error(404, f"no cluster named {name!r}", loc="path.name")
        return JSONResponse(ctl.status(name, ctl.clock()))

    @app.get("/v1/incidents")
    def list_incidents(cluster: str | None = None, limit: int = 100) -> Response:
        if cluster is not None and cluster not in ctl.config.clusters:
            return _error(404, f"no cluster named {cluster!r}", loc="query.cluster")
        if not 1 <= limit <= 10_000:
            return _error(422, "limit must be between 1 and 10000", loc="query.limit")
        incidents = ctl.incident_log.history(cluster, limit) if ctl.incident_log else []
        return JSONResponse({"incidents": incidents})

    @app.get("/v1/actions")
    def list_actions(cluster: str | None = None, limit: int = 100) -> Response:
        if cluster is not None and cluster not in ctl.config.clusters:
            return _error(404, f"no cluster named {cluster!r}", loc="query.cluster")
        if not 1 <= limit <= 10_000:
            return _error(422, "limit must be between 1 and 10000", loc="query.limit")
        actions = ctl.heal_store.history(cluster, limit) if ctl.heal_store else []
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
        if cluster not in ctl.config.clusters or ctl.enrollments is None:
            return _error(404, f"no cluster named {cluster!r} accepts enrollments", loc="cluster")
        reason = ctl.enrollments.redeem(cluster, body["node"], body["token"], ctl.clock())
        if reason is not None:
            log.warning("enroll.refused", cluster=cluster, node=body["node"], reason=reason)
            return _error(403, reason, loc="token")
        password = cluster_redis_password(cluster, ctl.config.clusters[cluster])
        if not password:
            return _error(404, f"clusters.{cluster}.redis_password_file is not set on the controller")
        log.info("enroll.accepted", cluster=cluster, node=body["node"])
        return JSONResponse({"redis_password": password, "cluster_secret": ctl.secrets[cluster].decode()})

    def _admin(request: Request, cluster: str) -> Response | None:
        if cluster not in ctl.config.clusters:
            return _error(404, f"no cluster named {cluster!r}", loc="path.cluster")
        if ctl.healer is None:
            return _error(409, "healing is not running on this controller")
        if ctl.admin_token is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given, f"Bearer {ctl.admin_token}"):
                return _error(401, "admin token required (Authorization: Bearer ...)", loc="header.Authorization")
        return None

    def _switch(request: Request, cluster: str, verb: str, node: str | None = None) -> Response:
        if (refused := _admin(request, cluster)) is not None:
            return refused
        assert ctl.healer is not None
        if verb == "pause":
            ctl.healer.pause(cluster, node)
        elif verb == "resume":
            ctl.healer.resume(cluster, node)
        else:
            ctl.healer.ack(cluster)
        log.warning("heal.switched", verb=verb, cluster=cluster, node=node)
        return JSONResponse(ctl.healer.status(cluster))

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
        assert ctl.healer is not None
        try:
            if body.get("firewall"):
                ctl.healer.executor.ensure_firewall(cluster, ctl.config.listen_host)
            droplet = await run_in_threadpool(ctl.healer.executor.create_node, cluster, body["name"],
                                              tuple(sentinels))
        except ProviderError as e:
            return _error(502, str(e))
        return JSONResponse({"droplet": {"id": droplet.id, "name": droplet.name, "status": droplet.status}},
                            status_code=202)

    return app
