"""The local DigitalOcean API's own endpoints under `/_sandbox/`: faults, the request log, droplets' processes.

Layer: sandbox. Not DigitalOcean's: what tests and `redwarden sandbox` use to steer and watch the stand-in.
`/_sandbox/faults` reads (GET), merges (POST, see `sandbox.doapi.faults.parse_faults`) and clears (DELETE) the
faults in force; `/_sandbox/requests` is the log of `/v2` requests; `/_sandbox/droplets` says where each
droplet lives on this machine and which processes it owns. These requests need the token but are neither
rate-limited, delayed, failed by faults nor logged.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import structlog

from sandbox.doapi.faults import parse_faults
from sandbox.doapi.processes import owned_processes
from sandbox.doapi.state import Cloud
from sandbox.doapi.wire import ApiRequest, ApiResponse, Json, json_body

log = structlog.get_logger("redwarden.doapi")


class SandboxApi:
    """`/_sandbox/faults`, `/_sandbox/requests`, `/_sandbox/droplets`."""

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud

    def _faults_json(self) -> Json:
        cloud = self.cloud
        with cloud.lock:
            return {
                "latency_ms": cloud.faults.latency_ms,
                "fail": [r.to_json() for r in cloud.faults.fail],
                "action_errors": sorted(cloud.faults.action_errors),
                "boot_delay_s": cloud.faults.boot_delay_s,
                "ratelimit": {"limit": cloud.bucket.limit, "refill_per_s": cloud.bucket.refill_per_s,
                              "remaining": math.floor(cloud.bucket.tokens)},
            }

    def get_faults(self, req: ApiRequest) -> ApiResponse:
        return ApiResponse(200, self._faults_json())

    def post_faults(self, req: ApiRequest) -> ApiResponse:
        body = json_body(req)
        self.set_faults(body)
        return ApiResponse(200, self._faults_json())

    def delete_faults(self, req: ApiRequest) -> ApiResponse:
        self.cloud.reset_faults()
        return ApiResponse(200, self._faults_json())

    def set_faults(self, body: Mapping[str, Any]) -> None:
        """Merge a faults document (see `post_faults`); a key given replaces that key. 422 naming a bad key."""
        update = parse_faults(body)
        cloud = self.cloud
        with cloud.lock:
            if update.latency_ms is not None:
                cloud.faults.latency_ms = update.latency_ms
            if update.fail is not None:
                cloud.faults.fail = list(update.fail)
            if update.action_errors is not None:
                cloud.faults.action_errors = set(update.action_errors)
            if update.boot_delay_s is not None:
                cloud.faults.boot_delay_s = update.boot_delay_s
            if update.ratelimit is not None:
                cloud.bucket.set(*update.ratelimit)
        log.info("faults.set", keys=sorted(body))

    def get_requests(self, req: ApiRequest) -> ApiResponse:
        with self.cloud.lock:
            return ApiResponse(200, {"requests": list(self.cloud.requests)})

    def delete_requests(self, req: ApiRequest) -> ApiResponse:
        with self.cloud.lock:
            self.cloud.requests.clear()
        return ApiResponse(204)

    def get_sandbox_droplets(self, req: ApiRequest) -> ApiResponse:
        """Where each droplet lives on this machine, and its processes: what `sandbox status` shows."""
        with self.cloud.lock:
            rows = [copy.deepcopy(d) for d in sorted(self.cloud.state["droplets"].values(), key=lambda d: d["id"])]
        out = []
        for d in rows:
            ddir = self.cloud.droplet_dir(d)
            out.append({"id": d["id"], "name": d["name"], "status": d["status"], "address": d["address"],
                        "tags": d["tags"], "dir": str(ddir), "root": str(ddir / "root"),
                        "pids": sorted(p.pid for p in owned_processes(ddir / "root", d["id"]))})
        return ApiResponse(200, {"droplets": out})
