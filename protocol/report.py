"""The health report an agent pushes to the controller: the wire schema, shared by both sides.

Layer: data. Immutable value types only, no I/O. The agent builds a `Report` from its collectors and
serialises it with `report_to_json`; the controller validates the same types at its HTTP boundary
(pydantic understands these dataclasses) and hands them, still frozen, to its pure core.

Conventions: units in names (`_ms`, `_s`, `_bytes`), addresses as "ip:port" strings, timestamps as
Unix seconds (float). A collector that fails sets `reachable=False` and `error` to the error's text and
leaves every measured field at its empty value: health is a level, and "unknown" is a level too.
Booleans like `requirepass_set` say whether a secret is configured; the secret itself never leaves Redis.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class ConnectedReplica:
    """A replica as its master sees it (INFO replication `slaveN:` lines)."""

    address: str
    state: str  # "online", "wait_bgsave", "send_bulk", ...
    offset: int
    lag_s: int  # seconds since the replica's last REPLCONF ACK


@dataclass(frozen=True, slots=True)
class RedisHealth:
    """The local redis-server, from PING, INFO and a few CONFIG GETs."""

    reachable: bool
    error: str | None = None
    ping_ms: float | None = None
    version: str | None = None
    role: str | None = None  # "master" or "replica" (INFO's "slave" is normalised)
    run_id: str | None = None
    replid: str | None = None
    master_repl_offset: int | None = None
    # replica side
    master_host: str | None = None
    master_port: int | None = None
    master_link_status: str | None = None  # "up" or "down"
    master_link_down_since_s: int | None = None
    master_last_io_s: int | None = None
    replica_repl_offset: int | None = None
    master_sync_in_progress: bool | None = None
    replica_priority: int | None = None
    replica_read_only: bool | None = None
    # master side
    connected_replicas: tuple[ConnectedReplica, ...] = ()
    min_replicas_to_write: int | None = None
    min_replicas_max_lag_s: int | None = None
    # resources and persistence
    uptime_s: int | None = None
    used_memory_bytes: int | None = None
    maxmemory_bytes: int | None = None
    maxmemory_policy: str | None = None
    loading: bool | None = None
    rdb_last_bgsave_ok: bool | None = None
    rdb_last_save_time: int | None = None
    rdb_changes_since_last_save: int | None = None
    aof_enabled: bool | None = None
    aof_last_write_ok: bool | None = None
    # security posture (booleans only, never the values)
    requirepass_set: bool | None = None
    masterauth_set: bool | None = None
    # least privilege (issue #13; None: not known, e.g. an older agent)
    protected_mode: bool | None = None  # CONFIG GET protected-mode
    bind: str | None = None  # CONFIG GET bind: the addresses Redis listens on ("0.0.0.0" = every interface)
    acl_user: str | None = None  # the user the agent authenticated as ("default": the one requirepass)
    default_user_all_commands: bool | None = None  # `default` is on and may run every command (ACL GETUSER)
    open_without_auth: bool | None = None  # a connection that sent no AUTH got PONG
    # the agent's local fence (issue #12, agent/fence.py): True while it holds this master's writes paused
    # because it has heard from no replica and no other Sentinel for down-after; None: the rule is off, or
    # an older agent
    fenced_locally: bool | None = None

    @property
    def master_address(self) -> str | None:
        if self.master_host is None or self.master_port is None:
            return None
        return f"{self.master_host}:{self.master_port}"


@dataclass(frozen=True, slots=True)
class SentinelPeer:
    """A replica or another Sentinel as a Sentinel lists it (SENTINEL REPLICAS / SENTINELS)."""

    address: str
    flags: tuple[str, ...] = ()
    run_id: str | None = None
    last_ok_ping_ms: int | None = None
    # replicas only
    master_link_status: str | None = None
    replica_priority: int | None = None
    repl_offset: int | None = None

    @property
    def down(self) -> bool:
        return "s_down" in self.flags or "o_down" in self.flags or "disconnected" in self.flags


@dataclass(frozen=True, slots=True)
class SentinelMasterView:
    """What one Sentinel believes about one monitored master (SENTINEL MASTER + REPLICAS + SENTINELS)."""

    name: str
    master_address: str | None
    flags: tuple[str, ...] = ()
    s_down: bool = False
    o_down: bool = False
    failover_in_progress: bool = False
    config_epoch: int | None = None
    quorum: int | None = None
    num_other_sentinels: int | None = None
    down_after_ms: int | None = None
    failover_timeout_ms: int | None = None
    parallel_syncs: int | None = None
    ckquorum_ok: bool | None = None
    ckquorum_message: str | None = None
    replicas: tuple[SentinelPeer, ...] = ()
    sentinels: tuple[SentinelPeer, ...] = ()


@dataclass(frozen=True, slots=True)
class SentinelHealth:
    """The local redis-sentinel."""

    reachable: bool
    error: str | None = None
    ping_ms: float | None = None
    myid: str | None = None
    masters: tuple[SentinelMasterView, ...] = ()
    # SENTINEL DEBUG's INFO-PERIOD (Redis >= 7.0): how often it sends INFO to the instances it monitors;
    # None: not known (an older Sentinel, or the command refused). The controller lowers it for a reset.
    info_period_ms: int | None = None
    # a connection that sent no AUTH may use a state-changing subcommand (SENTINEL CONFIG ...): no ACL
    # keeps anyone who reaches the port from FAILOVER, SET, REMOVE, RESET (None: not known)
    open_to_state_changes: bool | None = None

    def master(self, name: str) -> SentinelMasterView | None:
        for view in self.masters:
            if view.name == name:
                return view
        return None


@dataclass(frozen=True, slots=True)
class ProcessHealth:
    """One local process found by name (psutil)."""

    alive: bool
    pid: int | None = None
    rss_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class HostHealth:
    """The droplet itself."""

    reachable: bool = True
    error: str | None = None
    cpu_percent: float | None = None
    load_1m: float | None = None
    load_5m: float | None = None
    load_15m: float | None = None
    memory_total_bytes: int | None = None
    memory_available_bytes: int | None = None
    disk_path: str | None = None
    disk_total_bytes: int | None = None
    disk_free_bytes: int | None = None
    redis_process: ProcessHealth = field(default_factory=lambda: ProcessHealth(alive=False))
    sentinel_process: ProcessHealth = field(default_factory=lambda: ProcessHealth(alive=False))


@dataclass(frozen=True, slots=True)
class Identity:
    """Who sent the report."""

    cluster: str
    node: str
    address: str  # the address Redis announces, without port
    redis_port: int = 6379
    sentinel_port: int = 26379
    droplet_id: int | None = None
    agent_version: str = ""

    @property
    def redis_address(self) -> str:
        return f"{self.address}:{self.redis_port}"

    @property
    def sentinel_address(self) -> str:
        return f"{self.address}:{self.sentinel_port}"


@dataclass(frozen=True, slots=True)
class DirectiveAck:
    """The agent's answer to a directive the controller sent with an earlier push's response."""

    id: str
    kind: str
    ok: bool
    error: str | None = None
    at: float = 0.0  # Unix seconds, when it finished


@dataclass(frozen=True, slots=True)
class Report:
    """One push: the latest health of one droplet."""

    identity: Identity
    collected_at: float  # Unix seconds, the agent's clock
    seq: int  # increases by one per collection since the agent started
    redis: RedisHealth
    sentinel: SentinelHealth
    host: HostHealth
    collect_ms: float | None = None
    acks: tuple[DirectiveAck, ...] = ()
    schema: int = SCHEMA_VERSION


def report_to_dict(report: Report) -> dict[str, Any]:
    return dataclasses.asdict(report)


def report_to_json(report: Report) -> bytes:
    return json.dumps(report_to_dict(report), separators=(",", ":")).encode()
