"""The controller's HTTP API (FastAPI): report ingest, enrollment, the fleet view, operator switches.

Layer: adapter. Requests are authenticated and validated here, at the wire boundary (who may call what:
`controller.adapters.auth`); what passes is a frozen `Report` handed to the store, or a call on one of the
narrow interfaces below. Bodies are read with their size limit enforced while they arrive (413 past it);
every refusal is a 4xx JSON body naming the field (`{"detail": [{"loc": "redis.ping_ms", "msg": ...}]}`),
never a 5xx; caller-supplied strings reach the log clipped; nothing that may block (a cloud call) runs on
the event loop.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import pydantic
import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from controller import __version__
from controller.adapters.auth import OperatorTokens, Role, allows, clip, role_of, valid_name
from controller.adapters.cloud import Droplet, ProviderError
from controller.adapters.storage.reports import REPORT_ADAPTER
from controller.config import ClusterConfig
from controller.core.rotate import ROLES as ROTATABLE_ROLES
from controller.core.view import NodeState, vitals_changed
from protocol.directives import valid_address
from protocol.report import DirectiveAck, Report
from protocol.signing import (
    HEADER_CLUSTER,
    HEADER_NODE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    ReplayGuard,
    parse_timestamp,
    verify_report,
)

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

    def sentinel_addresses(self, cluster: str, now: float) -> set[str]:
        """The "ip:port" of the Sentinels of the cluster's own live nodes."""
        ...


class History(Protocol):
    def history(self, cluster: str | None, limit: int) -> list[dict[str, Any]]: ...


class NodeKeys(Protocol):
    def key(self, cluster: str, node: str) -> bytes | None:
        """The node's push key, or None for a node without a credential (or revoked)."""
        ...


class Enroller(Protocol):
    def enroll(self, cluster: str, node: str, token: str, now: float) -> dict[str, Any] | str:
        """The new node's secrets (its key, the Redis password), or why the token is refused."""
        ...

    def issue_key(self, cluster: str, node: str, now: float) -> str:
        """A new key (hex) for an existing node; the old one stops working."""
        ...


class Directives(Protocol):
    def acknowledge(self, cluster: str, node: str, acks: tuple[DirectiveAck, ...]) -> None: ...

    def for_node(self, cluster: str, node: str) -> list[dict[str, Any]]: ...


class HealSwitches(Protocol):
    def pause(self, cluster: str, node: str | None = None) -> object: ...

    def resume(self, cluster: str, node: str | None = None) -> object: ...

    def ack(self, cluster: str) -> object: ...

    def reset_state(self, cluster: str) -> object:
        """Replace an unreadable heal state with a fresh one (audited); PermissionError if it reads fine."""
        ...

    def status(self, cluster: str) -> dict[str, Any]: ...

    def create_node(self, cluster: str, name: str, sentinels: tuple[str, ...], firewall: bool,
                    controller_address: str | None) -> Droplet:
        """An operator's new node: counted against the budget and written to the audit log."""
        ...


class Securing(Protocol):
    """`redwarden cluster secure`: the migration to ACL users (`controller.app.secure`)."""

    def plan(self, cluster: str, rotate: str | None = None, finish: bool = False) -> dict[str, Any]:
        """The dry run (of the migration, or of `rotate`'s rotation); PermissionError (its reason) when no plan
        can be made."""
        ...

    def start(self, cluster: str, rotate: str | None = None, finish: bool = False,
              new_sha256: str | None = None) -> dict[str, Any]:
        """Start the run; PermissionError when one runs already or no plan can be made."""
        ...

    def job(self, cluster: str) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class ApiDeps:
    """What the API needs, each behind the narrowest interface that serves it (wired by `app.service`)."""

    clusters: Mapping[str, ClusterConfig]
    reports: ReportSink
    directives: Directives
    fleet: FleetReader
    node_keys: NodeKeys
    tokens: OperatorTokens = field(default_factory=OperatorTokens)
    clock: Callable[[], float] = time.time
    max_report_bytes: int = 256 * 1024
    max_request_bytes: int = 16 * 1024  # enroll and admin bodies
    listen_host: str = "127.0.0.1"
    incidents: History | None = None
    actions: History | None = None
    enroller: Enroller | None = None
    heal: HealSwitches | None = None
    securer: Securing | None = None
    on_vitals_changed: Callable[[], None] = lambda: None  # wakes the watch loop
    # what keeps the controller from doing its whole job (a failing state writer, a cluster whose cycle
    # fails), one sentence each; empty when all is well
    problems: Callable[[], list[str]] = list


class _TooLarge(Exception):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"body is over {limit} bytes (at least {size})")


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it passes `limit`: a large post costs at most `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise _TooLarge(int(declared), limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


_INT_LIMIT = 2**63
# what a report's JSON must contain for absurd_number to find anything: the walk is for suspects only
# (it costs ~80 us a report; this scan a few)
_SUSPECT = re.compile(rb"[:\[,]\s*-?(?:NaN|Infinity|[0-9]{19}|[0-9.]+[eE]\+?[0-9]{3})")  # a number, not a string


def absurd_number(value: object, path: str = "") -> str | None:
    """The path of the first number in a validated report that no agent can mean (NaN, an infinity, an
    integer beyond 64 bits), or None. Such a value would poison every sum and comparison downstream."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return path if not math.isfinite(value) else None
    if isinstance(value, int):
        return path if not -_INT_LIMIT < value < _INT_LIMIT else None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            if (found := absurd_number(getattr(value, f.name), f"{path}.{f.name}" if path else f.name)) is not None:
                return found
    elif isinstance(value, tuple | list):
        for i, item in enumerate(value):
            if (found := absurd_number(item, f"{path}.{i}")) is not None:
                return found
    return None


def _json_object(body: bytes) -> dict[str, Any] | str:
    """The body as a JSON object, or the reason it is not one (nesting beyond the parser's depth included)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return "body is not JSON (or nested too deeply)"
    return data if isinstance(data, dict) else "body must be a JSON object"


class _IngestFastPath:
    """Serves `POST /v1/reports` ahead of FastAPI's router: the hot path (thousands of reports a second)
    skips the routing, dependency and exception layers it does not use; its handler refuses with 4xx bodies
    itself and is the same function the declared route calls."""

    def __init__(self, app: ASGIApp, handler: Callable[[Request], Awaitable[Response]]) -> None:
        self.app = app
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/v1/reports":
            response = await self.handler(Request(scope, receive))
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_app(deps: ApiDeps) -> FastAPI:
    app = FastAPI(title="redwarden controller", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url=None)
    replays = ReplayGuard()

    def _refused(request: Request, needed: Role) -> Response | None:
        role = role_of(request.headers.get("authorization"), deps.tokens)
        if allows(role, needed):
            return None
        if role is None:
            return _error(401, f"a {needed} token is required (Authorization: Bearer ...)",
                          loc="header.Authorization")
        return _error(403, f"this token is read-only; {needed} is required", loc="header.Authorization")

    @app.exception_handler(_TooLarge)
    async def too_large(_: Request, exc: _TooLarge) -> Response:
        return _error(413, str(exc), loc="body")

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        """Anyone may ask. `status` is "ok", or "degraded" with `reasons` (one sentence each, naming the
        part: "state writer failing ..."). The HTTP status stays 200 and `ok` true while degraded: the
        controller still takes reports, watches, alerts and heals from memory, and a 503 would make a load
        balancer or supervisor restart it, losing the unwritten batch without freeing the disk. Monitor
        `status`, not the HTTP code."""
        reasons = deps.problems()
        return {"ok": True, "status": "degraded" if reasons else "ok", "reasons": reasons, "version": __version__,
                "clusters": len(deps.clusters)}

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(request: Request) -> Response:
        if (refused := _refused(request, "read")) is not None:
            return refused
        return JSONResponse(app.openapi())

    async def ingest(request: Request) -> Response:
        try:
            return await _ingest(request)
        except _TooLarge as e:
            return _error(413, str(e), loc="body")

    @app.post("/v1/reports", responses={401: {}, 413: {}, 422: {}})
    async def post_report(request: Request) -> Response:
        """A node's signed report (served by the ingest fast path below; declared here for the OpenAPI)."""
        return await ingest(request)

    async def _ingest(request: Request) -> Response:
        headers = {h: request.headers.get(h) for h in (HEADER_CLUSTER, HEADER_NODE, HEADER_TIMESTAMP,
                                                        HEADER_SIGNATURE)}
        for name, value in headers.items():
            if not value:
                return _error(401, f"missing header {name}", loc=f"header.{name}")
        cluster, node = str(headers[HEADER_CLUSTER]), str(headers[HEADER_NODE])
        timestamp, signature = str(headers[HEADER_TIMESTAMP]), str(headers[HEADER_SIGNATURE])
        key = deps.node_keys.key(cluster, node) if valid_name(cluster) and valid_name(node) else None
        if cluster not in deps.clusters or key is None:
            return _error(401, "unknown node (no credential for this cluster and node)", loc=f"header.{HEADER_NODE}")
        body = await _read_body(request, deps.max_report_bytes)
        now = deps.clock()
        reason = verify_report(key, timestamp, cluster, node, body, signature, now)
        ts = parse_timestamp(timestamp)
        if reason is None and ts is not None:
            reason = replays.check(cluster, node, ts)
        if reason is not None or ts is None:
            log.warning("report.rejected", cluster=cluster, node=node, reason=reason)
            return _error(401, reason or "bad timestamp", loc=f"header.{HEADER_SIGNATURE}")
        try:
            report: Report = REPORT_ADAPTER.validate_json(body)
        except pydantic.ValidationError as e:
            return JSONResponse({"detail": validation_detail(e)}, status_code=422)
        if _SUSPECT.search(body) and (where := absurd_number(report)) is not None:
            return _error(422, "not a finite number within 64 bits", loc=where)
        signed = (("identity.cluster", report.identity.cluster, cluster), ("identity.node", report.identity.node, node))
        for field_name, claimed, credential in signed:
            if claimed != credential:
                return _error(422, f"{field_name} {clip(claimed)!r} is not what this credential belongs to",
                              loc=field_name)
        replays.accept(cluster, node, ts)
        previous = deps.reports.put_report(report, now, raw=body)
        if vitals_changed(previous, report):
            deps.on_vitals_changed()  # a process died or came back, a role moved: the watch cycle runs now
        deps.directives.acknowledge(cluster, node, report.acks)
        return JSONResponse({"accepted": True, "directives": deps.directives.for_node(cluster, node)})

    app.add_middleware(_IngestFastPath, handler=ingest)

    @app.get("/v1/clusters", responses={401: {}, 403: {}})
    def list_clusters(request: Request) -> Response:
        if (refused := _refused(request, "read")) is not None:
            return refused
        now = deps.clock()
        return JSONResponse({"clusters": [deps.fleet.status(name, now) for name in deps.fleet.names()]})

    @app.get("/v1/clusters/{name}", responses={401: {}, 403: {}, 404: {}})
    def get_cluster(request: Request, name: str) -> Response:
        if (refused := _refused(request, "read")) is not None:
            return refused
        if name not in deps.clusters:
            return _error(404, f"no cluster named {clip(name)!r}", loc="path.name")
        return JSONResponse(deps.fleet.status(name, deps.clock()))

    def _history(request: Request, source: History | None, key: str, cluster: str | None, limit: int) -> Response:
        if (refused := _refused(request, "read")) is not None:
            return refused
        if cluster is not None and cluster not in deps.clusters:
            return _error(404, f"no cluster named {clip(cluster)!r}", loc="query.cluster")
        if not 1 <= limit <= 10_000:
            return _error(422, "limit must be between 1 and 10000", loc="query.limit")
        return JSONResponse({key: source.history(cluster, limit) if source else []})

    @app.get("/v1/incidents", responses={401: {}, 403: {}, 404: {}, 422: {}})
    def list_incidents(request: Request, cluster: str | None = None, limit: int = 100) -> Response:
        return _history(request, deps.incidents, "incidents", cluster, limit)

    @app.get("/v1/actions", responses={401: {}, 403: {}, 404: {}, 422: {}})
    def list_actions(request: Request, cluster: str | None = None, limit: int = 100) -> Response:
        return _history(request, deps.actions, "actions", cluster, limit)

    @app.post("/v1/enroll", responses={403: {}, 404: {}, 413: {}, 422: {}})
    async def enroll(request: Request) -> Response:
        body = _json_object(await _read_body(request, deps.max_request_bytes))
        if isinstance(body, str):
            return _error(422, body, loc="body")
        for key in ("cluster", "node", "token"):
            value = body.get(key)
            if not isinstance(value, str) or not value or len(value) > 256 or not value.isascii():
                return _error(422, f"{key} is required (a short ASCII string)", loc=key)
        cluster, node = body["cluster"], body["node"]
        if not valid_name(node):
            return _error(422, "node must be a droplet name (a-z, 0-9, '.', '-')", loc="node")
        if cluster not in deps.clusters or deps.enroller is None:
            return _error(404, f"no cluster named {clip(cluster)!r} accepts enrollments", loc="cluster")
        enroller = deps.enroller
        result = await run_in_threadpool(enroller.enroll, cluster, node, body["token"], deps.clock())
        if isinstance(result, str):
            log.warning("enroll.refused", cluster=cluster, node=node, reason=result)
            return _error(403, result, loc="token")
        log.info("enroll.accepted", cluster=cluster, node=node)
        return JSONResponse(result)

    def _admin(request: Request, cluster: str, part: object = True,
               missing: str = "healing is not running on this controller") -> Response | None:
        """Refused unless an admin asks about a known cluster, and `part` (default: healing) is there."""
        if (refused := _refused(request, "admin")) is not None:
            return refused
        if cluster not in deps.clusters:
            return _error(404, f"no cluster named {clip(cluster)!r}", loc="path.cluster")
        if deps.heal is None or part is None:
            return _error(409, missing)
        return None

    def _switch(request: Request, cluster: str, verb: str, node: str | None = None) -> Response:
        if (refused := _admin(request, cluster)) is not None:
            return refused
        if node is not None and not valid_name(node):
            return _error(422, "node must be a node name (a-z, 0-9, '.', '-')", loc="query.node")
        assert deps.heal is not None
        try:
            if verb == "pause":
                deps.heal.pause(cluster, node)
            elif verb == "resume":
                deps.heal.resume(cluster, node)
            elif verb == "reset-state":
                deps.heal.reset_state(cluster)
            else:
                deps.heal.ack(cluster)
        except PermissionError as e:  # a rail holds it (an unreadable heal state; a readable one to reset)
            return _error(409, str(e))
        log.warning("heal.switched", verb=verb, cluster=cluster, node=node)
        return JSONResponse(deps.heal.status(cluster))

    @app.post("/v1/clusters/{cluster}/pause", responses={401: {}, 403: {}, 404: {}, 409: {}, 422: {}})
    def pause(request: Request, cluster: str, node: str | None = None) -> Response:
        """Maintenance: alert, but act on nothing in the cluster (or only not on `node`)."""
        return _switch(request, cluster, "pause", node)

    @app.post("/v1/clusters/{cluster}/resume", responses={401: {}, 403: {}, 404: {}, 409: {}, 422: {}})
    def resume(request: Request, cluster: str, node: str | None = None) -> Response:
        return _switch(request, cluster, "resume", node)

    @app.post("/v1/clusters/{cluster}/ack", responses={401: {}, 403: {}, 404: {}, 409: {}})
    def ack(request: Request, cluster: str) -> Response:
        """Acknowledge an exhausted daily action budget: healing may act again today."""
        return _switch(request, cluster, "ack")

    @app.post("/v1/clusters/{cluster}/heal-state/reset", responses={401: {}, 403: {}, 404: {}, 409: {}})
    def reset_heal_state(request: Request, cluster: str) -> Response:
        """Replace the cluster's unreadable heal state with a fresh one (not paused, budget unused), which
        lets healing act again; written to the audit log with the start of the old data. 409 when the state
        reads fine (nothing to reset)."""
        return _switch(request, cluster, "reset-state")

    @app.post("/v1/clusters/{cluster}/nodes", responses={401: {}, 403: {}, 404: {}, 409: {}, 413: {}, 422: {},
                                                         502: {}})
    async def create_node(request: Request, cluster: str) -> Response:
        """Create one Redis droplet that bootstraps into the cluster (admin; used by `redwarden cluster create`).
        Its Sentinels must be the cluster's own; it counts against the daily budget and is audited."""
        if (refused := _admin(request, cluster)) is not None:
            return refused
        body = _json_object(await _read_body(request, deps.max_request_bytes))
        if isinstance(body, str):
            return _error(422, body, loc="body")
        unknown = sorted(str(k) for k in body if k not in ("name", "sentinels", "firewall"))
        if unknown:
            return _error(422, f"unknown field {clip(unknown[0])!r}", loc=clip(unknown[0]))
        if not valid_name(body.get("name")):
            return _error(422, "name is required: a droplet name (a-z, 0-9, '.', '-', at most 64)", loc="name")
        sentinels = body.get("sentinels", [])
        if not isinstance(sentinels, list) or len(sentinels) > 16 or not all(valid_address(x) for x in sentinels):
            return _error(422, "sentinels must be a list of ip:port (IP literals)", loc="sentinels")
        own = deps.fleet.sentinel_addresses(cluster, deps.clock())
        strangers = [x for x in sentinels if x not in own]
        if strangers:
            return _error(422, f"{strangers[0]} is not a Sentinel of cluster {cluster}'s live nodes",
                          loc="sentinels")
        if not isinstance(body.get("firewall", False), bool):
            return _error(422, "firewall must be true or false", loc="firewall")
        heal = deps.heal
        assert heal is not None
        try:
            droplet = await run_in_threadpool(heal.create_node, cluster, body["name"], tuple(sentinels),
                                              bool(body.get("firewall", False)), deps.listen_host)
        except ProviderError as e:
            return _error(502, str(e))
        except PermissionError as e:  # a rail (budget, pause) holds it
            return _error(409, str(e))
        return JSONResponse({"droplet": {"id": droplet.id, "name": droplet.name, "status": droplet.status}},
                            status_code=202)

    @app.post("/v1/clusters/{cluster}/secure", responses={401: {}, 403: {}, 404: {}, 409: {}, 413: {}, 422: {}})
    async def secure(request: Request, cluster: str) -> Response:
        """Move the cluster from one requirepass to ACL users per role (admin). `{"apply": false}` (the
        default) answers the plan and what each node runs now, changing nothing; `{"apply": true}` starts the
        run (202) and `GET` on the same path follows it. Each step is written to the actions log."""
        if (refused := _admin(request, cluster, deps.securer, "this controller cannot secure clusters")) is not None:
            return refused
        body = _json_object(await _read_body(request, deps.max_request_bytes) or b"{}")
        if isinstance(body, str):
            return _error(422, body, loc="body")
        unknown = sorted(str(k) for k in body if k not in ("apply", "rotate", "finish", "new_sha256"))
        if unknown:
            return _error(422, f"unknown field {clip(unknown[0])!r}", loc=clip(unknown[0]))
        for flag in ("apply", "finish"):
            if not isinstance(body.get(flag, False), bool):
                return _error(422, f"{flag} must be true or false", loc=flag)
        rotate, new_sha256 = body.get("rotate"), body.get("new_sha256")
        if rotate is not None and rotate not in ROTATABLE_ROLES:
            return _error(422, f"rotate must be one of {', '.join(ROTATABLE_ROLES)}", loc="rotate")
        if new_sha256 is not None and not (isinstance(new_sha256, str) and re.fullmatch(r"[0-9a-f]{64}", new_sha256)):
            return _error(422, "new_sha256 must be 64 lowercase hex digits", loc="new_sha256")
        if rotate is None and (body.get("finish") or new_sha256 is not None):
            return _error(422, "finish and new_sha256 go with rotate", loc="rotate")
        securer = deps.securer
        assert securer is not None
        try:
            if body.get("apply"):
                job = await run_in_threadpool(securer.start, cluster, rotate, bool(body.get("finish")), new_sha256)
                log.warning("secure.started", cluster=cluster, rotate=rotate)
                return JSONResponse(job, status_code=202)
            return JSONResponse(await run_in_threadpool(securer.plan, cluster, rotate, bool(body.get("finish"))))
        except PermissionError as e:
            return _error(409, str(e))

    @app.get("/v1/clusters/{cluster}/secure", responses={401: {}, 403: {}, 404: {}})
    def secure_progress(request: Request, cluster: str) -> Response:
        """The last `secure` run of the cluster: its state and each step's (404 when none ran)."""
        if (refused := _refused(request, "read")) is not None:
            return refused
        job = deps.securer.job(cluster) if deps.securer is not None and cluster in deps.clusters else None
        if job is None:
            return _error(404, f"no secure run for {clip(cluster)!r} since the controller started", loc="path.cluster")
        return JSONResponse(job)

    @app.post("/v1/clusters/{cluster}/nodes/{node}/key", responses={401: {}, 403: {}, 404: {}, 409: {}, 422: {}})
    def issue_node_key(request: Request, cluster: str, node: str) -> Response:
        """A new key for `node` (admin): its agent must get it (`node_key_file`) before its next push."""
        if (refused := _refused(request, "admin")) is not None:
            return refused
        if cluster not in deps.clusters:
            return _error(404, f"no cluster named {clip(cluster)!r}", loc="path.cluster")
        if not valid_name(node):
            return _error(422, "node must be a node name (a-z, 0-9, '.', '-')", loc="path.node")
        if deps.enroller is None:
            return _error(409, "this controller issues no keys")
        key = deps.enroller.issue_key(cluster, node, deps.clock())
        log.warning("node.key_issued", cluster=cluster, node=node)
        return JSONResponse({"cluster": cluster, "node": node, "node_key": key})

    return app
