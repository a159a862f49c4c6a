"""What every part of the local DigitalOcean API shares: its options, its persisted state, its runtime.

Layer: sandbox. `Cloud` holds the state persisted in `<sandbox>/doapi/state.json` (droplets, actions, reserved
IPs, tags, firewalls, VPCs; atomic writes) behind one lock, the faults and the rate limit in force, the log of
requests, and what each droplet has in this process (`Runtime`). The resource handlers, the action runner and
the router are each given the one `Cloud`; its accessors are called with `lock` held.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.addresses import DEFAULT_CLAIMS_DIR
from sandbox.doapi.faults import Faults
from sandbox.doapi.ratelimit import RATELIMIT_LIMIT, TokenBucket
from sandbox.doapi.wire import ApiRequest, ApiResponse, Json, not_found, now_iso, page

FIRST_DROPLET_ID = 100000001
FIRST_ACTION_ID = 1000000001
BOOT_TIMEOUT_S = 120.0
SHUTDOWN_TIMEOUT_S = 10.0
MAX_REQUEST_LOG = 10000


@dataclass(frozen=True, slots=True)
class ContainerSettings:
    """Droplets as systemd-nspawn containers (`sandbox up --droplets systemd`): the hub bridge they join (in
    the namespace `netns`, the sandbox's own), the cache of the Debian root and the nspawn binary, and the
    plain-HTTP service on the gateway (`meta_port`) that gives them their metadata, their NoCloud seed and
    the files under `files_dir` (the agent's .deb)."""

    netns: str
    bridge: str
    gateway: str
    cache: Path
    files_dir: Path
    prefix: int = 24
    meta_port: int = 80
    first_host: int = 11  # droplets get gateway's network + first_host, first_host + 1, ...

    @property
    def metadata_url(self) -> str:
        return f"http://{self.gateway}:{self.meta_port}/metadata/v1"

    def seed_url(self, droplet_id: int) -> str:
        return f"http://{self.gateway}:{self.meta_port}/seed/{droplet_id}/"

    def file_url(self, name: str) -> str:
        return f"http://{self.gateway}:{self.meta_port}/files/{name}"


@dataclass(frozen=True, slots=True)
class DoApiOptions:
    boot_timeout_s: float = BOOT_TIMEOUT_S  # a droplet is active when runcmd is done, or after this long
    shutdown_timeout_s: float = SHUTDOWN_TIMEOUT_S  # shutdown/reboot: SIGTERM, then SIGKILL after this long
    action_delay_s: float = 0.05  # how long an action with nothing to wait for stays in-progress
    ratelimit_limit: int = RATELIMIT_LIMIT
    ratelimit_refill_per_s: float = RATELIMIT_LIMIT / 3600  # DigitalOcean: 5,000 requests an hour
    claims_dir: Path = DEFAULT_CLAIMS_DIR
    # On stop, how long open connections may take to close: asyncio would wait up to 30 s for the TLS
    # close_notify of idle keep-alive clients, which often never send it.
    shutdown_grace_s: float = 1.0
    containers: ContainerSettings | None = None  # None: droplets are processes (the default)


@dataclass(slots=True)
class Runtime:
    """What a droplet has in this process: a cancel flag for destroy, its current action's thread."""

    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)


class Cloud:
    """The API's shared state: persisted resources, faults, rate limit, request log, droplets' runtimes."""

    def __init__(self, sandbox_dir: Path, base_url: str, options: DoApiOptions | None = None) -> None:
        self.sandbox_dir = sandbox_dir.resolve()
        self.state_dir = self.sandbox_dir / "doapi"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.base_url = base_url.rstrip("/")
        self.options = options or DoApiOptions()
        self.lock = threading.RLock()
        self.closing = threading.Event()
        self.faults = Faults()
        self.bucket = TokenBucket(self.options.ratelimit_limit, self.options.ratelimit_refill_per_s)
        self.requests: collections.deque[Json] = collections.deque(maxlen=MAX_REQUEST_LOG)
        self.runtimes: dict[int, Runtime] = {}
        self.threads: list[threading.Thread] = []
        self.state = self._load()

    def __repr__(self) -> str:
        return f"Cloud({self.sandbox_dir}, {self.base_url})"

    # -- persistence --

    @property
    def _state_path(self) -> Path:
        return self.state_dir / "state.json"

    def _load(self) -> Json:
        try:
            state: Json = json.loads(self._state_path.read_text())
        except FileNotFoundError:
            state = {}
        state.setdefault("version", 1)
        state.setdefault("next_droplet_id", FIRST_DROPLET_ID)
        state.setdefault("next_action_id", FIRST_ACTION_ID)
        for key in ("droplets", "actions", "reserved_ips", "tags", "firewalls", "vpcs"):
            state.setdefault(key, {})
        return state

    def save(self) -> None:
        with self.lock:
            data = json.dumps(self.state, indent=1, sort_keys=True)
            tmp = self._state_path.with_name(f"state.json.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(data)
            tmp.replace(self._state_path)

    def reset_faults(self) -> None:
        """No faults, and a full bucket with the rate limit of the options."""
        with self.lock:
            self.faults = Faults()
            self.bucket = TokenBucket(self.options.ratelimit_limit, self.options.ratelimit_refill_per_s)

    # -- accessors (call with the lock held) --

    def droplet(self, droplet_id: int | str) -> Json:
        d = self.state["droplets"].get(str(droplet_id))
        if d is None:
            raise not_found()
        return d  # type: ignore[no-any-return]

    def droplet_dir(self, d: Mapping[str, Any]) -> Path:
        return self.sandbox_dir / str(d["dir"])

    def runtime(self, droplet_id: int) -> Runtime:
        rt = self.runtimes.get(droplet_id)
        if rt is None:
            rt = self.runtimes[droplet_id] = Runtime()
        return rt

    def pending_action(self, resource_type: str, resource_id: int) -> Json | None:
        for action in self.state["actions"].values():
            if (action["status"] == "in-progress" and action["resource_type"] == resource_type
                    and action["resource_id"] == resource_id):
                return action  # type: ignore[no-any-return]
        return None

    def new_action(self, type_: str, resource_type: str, resource_id: int | None, region: str | None,
                   params: Json | None = None) -> Json:
        with self.lock:
            action_id = self.state["next_action_id"]
            self.state["next_action_id"] = action_id + 1
            action = {"id": action_id, "status": "in-progress", "type": type_, "started_at": now_iso(),
                      "completed_at": None, "resource_id": resource_id, "resource_type": resource_type,
                      "region_slug": region, "params": params or {}}
            self.state["actions"][str(action_id)] = action
            return action

    def ensure_tag(self, name: str) -> None:
        self.state["tags"].setdefault(name, {"created_at": now_iso()})

    def page(self, req: ApiRequest, key: str, items: list[Json],
             extra: Mapping[str, str] | None = None) -> ApiResponse:
        return page(req, key, items, self.base_url, extra)
