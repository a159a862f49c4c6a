"""Parsers from the raw replies of Redis 7 and Sentinel 7 into the report's value types.

Layer: pure core of the agent. No I/O, no clock, no logging: every function takes the reply exactly as
the server sent it (RESP2, decoded to str, no client-side callbacks) and returns a frozen dataclass from
`protocol.report`. The adapter that fetches the replies is `agent.collect_redis`; the tests feed recorded
replies from `tests/fixtures/redis7/`.

Malformed data never raises out of the public functions: a missing key or a value that is not what
Redis documents becomes `None` (or is left out, for list entries that have no empty value). Only a reply
of the wrong shape altogether (e.g. not a list where Redis returns a list) raises `ValueError`.

Secrets: `redis_health_from_info` reads `requirepass` and `masterauth` only to say whether they are set;
their values are never copied into the result.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from protocol.report import ConnectedReplica, RedisHealth, SentinelMasterView, SentinelPeer

__all__ = [
    "CONFIG_KEYS",
    "pairs_to_dict",
    "parse_ckquorum",
    "parse_info",
    "redis_health_from_info",
    "sentinel_info_period_ms",
    "sentinel_master_view",
    "sentinel_peer",
]

# The CONFIG GET parameters `redis_health_from_info` understands; the adapter asks for exactly these.
CONFIG_KEYS: tuple[str, ...] = (
    "requirepass",
    "masterauth",
    "min-replicas-to-write",
    "min-replicas-max-lag",
    "replica-priority",
    "replica-read-only",
    "maxmemory-policy",
    "protected-mode",
    "bind",
)

# ASCII digits only: int() would also accept "1_000", " 7 " and non-ASCII digits, none of which Redis sends.
_INT_RE = re.compile(r"-?[0-9]{1,19}")
_SLAVE_KEY_RE = re.compile(r"slave([0-9]+)")


# ---------------------------------------------------------------------------------------------------------
# small value helpers: each returns None for anything that is not the documented form


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    if not _INT_RE.fullmatch(value):
        return None
    return int(value)


def _non_negative_int(value: str | None) -> int | None:
    """Redis uses -1 for "never" or "not applicable" (e.g. master_link_down_since_seconds)."""
    number = _int(value)
    return number if number is not None and number >= 0 else None


def _flag01(value: str | None) -> bool | None:
    return {"1": True, "0": False}.get(value.strip()) if value is not None else None


def _yes_no(value: str | None) -> bool | None:
    return {"yes": True, "no": False}.get(value.strip().lower()) if value is not None else None


def _ok_err(value: str | None) -> bool | None:
    return {"ok": True, "err": False}.get(value.strip().lower()) if value is not None else None


def _non_empty(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


def _is_set(value: str | None) -> bool | None:
    """Whether a secret is configured; never returns the secret."""
    return None if value is None else value != ""


def _flags(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(flag for flag in (part.strip() for part in value.split(",")) if flag)


def _address(ip: str | None, port: str | None) -> str | None:
    ip = _non_empty(ip)
    port_number = _int(port)
    if ip is None or port_number is None:
        return None
    return f"{ip}:{port_number}"


# ---------------------------------------------------------------------------------------------------------
# INFO


def parse_info(text: str) -> dict[str, str]:
    """The `key:value` lines of an INFO reply as a flat dict.

    Section headers (`# Replication`), blank lines and lines without a colon are skipped. Values are
    split at the first colon only, so `executable:/usr/bin/redis-server` keeps its path. A repeated key
    keeps its last value.
    """
    if not isinstance(text, str):
        raise ValueError(f"INFO reply must be text, got {type(text).__name__}")
    fields: dict[str, str] = {}
    for raw_line in text.split("\n"):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if sep and key:
            fields[key] = value
    return fields


def _info_kv(value: str) -> dict[str, str]:
    """`ip=10.0.0.2,port=6379,state=online` -> dict; entries without `=` are skipped."""
    out: dict[str, str] = {}
    for part in value.split(","):
        key, sep, item = part.partition("=")
        if sep and key:
            out[key.strip()] = item.strip()
    return out


def _connected_replicas(info: Mapping[str, str]) -> tuple[ConnectedReplica, ...]:
    """The master's `slaveN:` lines, in N order.

    A line without a usable ip, port, offset or lag is left out: `ConnectedReplica` has no empty value
    for them, and a made-up number would look like a measurement.
    """
    numbered: list[tuple[int, ConnectedReplica]] = []
    for key, value in info.items():
        match = _SLAVE_KEY_RE.fullmatch(key)
        if match is None:
            continue
        fields = _info_kv(value)
        address = _address(fields.get("ip"), fields.get("port"))
        offset = _int(fields.get("offset"))
        lag_s = _int(fields.get("lag"))
        if address is None or offset is None or lag_s is None:
            continue
        state = _non_empty(fields.get("state")) or "unknown"
        numbered.append((int(match.group(1)), ConnectedReplica(address, state, offset, lag_s)))
    numbered.sort(key=lambda pair: pair[0])
    return tuple(replica for _, replica in numbered)


def _role(value: str | None) -> str | None:
    role = _non_empty(value)
    return "replica" if role == "slave" else role


def redis_health_from_info(info_text: str, config: Mapping[str, str], ping_ms: float | None) -> RedisHealth:
    """A reachable Redis's health from its INFO text, a CONFIG GET result and the PING round trip.

    `config` maps the parameters of `CONFIG_KEYS` to their values; a missing key (CONFIG renamed or
    denied) leaves its field None. `replica_priority`, `replica_read_only` and `maxmemory_policy` fall
    back to the same values as INFO reports them (`slave_priority`, `slave_read_only`, `maxmemory_policy`)
    when CONFIG did not give them. Never raises on any text.
    """
    info = parse_info(info_text)

    def cfg(key: str) -> str | None:
        value = config.get(key)
        return value if isinstance(value, str) else None

    replica_priority = _int(cfg("replica-priority"))
    if replica_priority is None:
        replica_priority = _int(info.get("slave_priority"))
    replica_read_only = _yes_no(cfg("replica-read-only"))
    if replica_read_only is None:
        replica_read_only = _flag01(info.get("slave_read_only"))

    return RedisHealth(
        reachable=True,
        ping_ms=ping_ms,
        version=_non_empty(info.get("redis_version")),
        role=_role(info.get("role")),
        run_id=_non_empty(info.get("run_id")),
        replid=_non_empty(info.get("master_replid")),
        master_repl_offset=_int(info.get("master_repl_offset")),
        master_host=_non_empty(info.get("master_host")),
        master_port=_int(info.get("master_port")),
        master_link_status=_non_empty(info.get("master_link_status")),
        master_link_down_since_s=_non_negative_int(info.get("master_link_down_since_seconds")),
        master_last_io_s=_non_negative_int(info.get("master_last_io_seconds_ago")),
        replica_repl_offset=_int(info.get("slave_repl_offset")),
        master_sync_in_progress=_flag01(info.get("master_sync_in_progress")),
        replica_priority=replica_priority,
        replica_read_only=replica_read_only,
        connected_replicas=_connected_replicas(info),
        min_replicas_to_write=_int(cfg("min-replicas-to-write")),
        min_replicas_max_lag_s=_int(cfg("min-replicas-max-lag")),
        uptime_s=_int(info.get("uptime_in_seconds")),
        used_memory_bytes=_int(info.get("used_memory")),
        maxmemory_bytes=_int(info.get("maxmemory")),
        maxmemory_policy=_non_empty(cfg("maxmemory-policy")) or _non_empty(info.get("maxmemory_policy")),
        loading=_flag01(info.get("loading")),
        rdb_last_bgsave_ok=_ok_err(info.get("rdb_last_bgsave_status")),
        rdb_last_save_time=_int(info.get("rdb_last_save_time")),
        rdb_changes_since_last_save=_int(info.get("rdb_changes_since_last_save")),
        aof_enabled=_flag01(info.get("aof_enabled")),
        aof_last_write_ok=_ok_err(info.get("aof_last_write_status")),
        requirepass_set=_is_set(cfg("requirepass")),
        masterauth_set=_is_set(cfg("masterauth")),
        protected_mode=_yes_no(cfg("protected-mode")),
        bind=_non_empty(cfg("bind")),
    )


def default_user_all_commands(reply: object) -> bool | None:
    """From `ACL GETUSER default` ([flags, [...], passwords, [...], commands, "+@all ...", ...]): whether the
    default user is on and may run every command; None for anything else."""
    if not isinstance(reply, list) or len(reply) < 2:
        return None
    fields = {str(k): v for k, v in zip(reply[0::2], reply[1::2], strict=False)}
    flags, commands = fields.get("flags"), fields.get("commands")
    if not isinstance(flags, list) or not isinstance(commands, str):
        return None
    return "on" in flags and commands.split()[:1] == ["+@all"] and " -" not in commands


# ---------------------------------------------------------------------------------------------------------
# Sentinel


def pairs_to_dict(reply: Sequence[object]) -> dict[str, str]:
    """A flat `[k1, v1, k2, v2, ...]` reply (SENTINEL MASTER, CONFIG GET) as a dict.

    Non-text items are kept as their `str()`, bytes are decoded leniently, and an odd trailing key is
    dropped. Raises `ValueError` if the reply is not a list at all.
    """
    if isinstance(reply, (str, bytes)) or not isinstance(reply, Sequence):
        raise ValueError(f"expected a flat key/value list, got {type(reply).__name__}")
    items = [_text(item) for item in reply]
    return dict(zip(items[0::2], items[1::2], strict=False))  # an odd trailing key is dropped


def _text(item: object) -> str:
    if isinstance(item, bytes):
        return item.decode("utf-8", errors="replace")
    return item if isinstance(item, str) else str(item)


def sentinel_peer(reply: Sequence[object]) -> SentinelPeer | None:
    """One entry of SENTINEL REPLICAS or SENTINEL SENTINELS; None if it has no usable address.

    The address is `ip:port`, or Sentinel's `name` for the entry when ip or port are unusable (a
    replica's name is its `ip:port`; a Sentinel's is its run id, better than nothing).
    """
    fields = pairs_to_dict(reply)
    address = _address(fields.get("ip"), fields.get("port")) or _non_empty(fields.get("name"))
    if address is None:
        return None
    priority = fields.get("slave-priority", fields.get("replica-priority"))
    offset = fields.get("slave-repl-offset", fields.get("replica-repl-offset"))
    return SentinelPeer(
        address=address,
        flags=_flags(fields.get("flags")),
        run_id=_non_empty(fields.get("runid")),
        last_ok_ping_ms=_int(fields.get("last-ok-ping-reply")),
        master_link_status=_non_empty(fields.get("master-link-status")),
        replica_priority=_int(priority),
        repl_offset=_int(offset),
    )


def _peers(replies: Sequence[Sequence[object]], what: str) -> tuple[SentinelPeer, ...]:
    if isinstance(replies, (str, bytes)) or not isinstance(replies, Sequence):
        raise ValueError(f"SENTINEL {what} reply must be a list of entries, got {type(replies).__name__}")
    peers: list[SentinelPeer] = []
    for entry in replies:
        try:
            peer = sentinel_peer(entry)
        except ValueError:
            continue  # one garbled entry must not hide the others
        if peer is not None:
            peers.append(peer)
    return tuple(peers)


def sentinel_master_view(
    name: str,
    master: Sequence[str],
    replicas: Sequence[Sequence[str]],
    sentinels: Sequence[Sequence[str]],
    ckquorum: tuple[bool, str] | None,
) -> SentinelMasterView:
    """What one Sentinel believes about master `name`, from its SENTINEL MASTER / REPLICAS / SENTINELS
    replies and the parsed CKQUORUM (`parse_ckquorum`), or None if CKQUORUM was not asked.

    Raises `ValueError` only when a reply is not a list at all; unusable fields become None and unusable
    peer entries are left out.
    """
    fields = pairs_to_dict(master)
    flags = _flags(fields.get("flags"))
    return SentinelMasterView(
        name=name,
        master_address=_address(fields.get("ip"), fields.get("port")),
        flags=flags,
        s_down="s_down" in flags,
        o_down="o_down" in flags,
        failover_in_progress="failover_in_progress" in flags,
        config_epoch=_int(fields.get("config-epoch")),
        quorum=_int(fields.get("quorum")),
        num_other_sentinels=_int(fields.get("num-other-sentinels")),
        down_after_ms=_int(fields.get("down-after-milliseconds")),
        failover_timeout_ms=_int(fields.get("failover-timeout")),
        parallel_syncs=_int(fields.get("parallel-syncs")),
        ckquorum_ok=None if ckquorum is None else ckquorum[0],
        ckquorum_message=None if ckquorum is None else ckquorum[1],
        replicas=_peers(replicas, "REPLICAS"),
        sentinels=_peers(sentinels, "SENTINELS"),
    )


def sentinel_info_period_ms(reply: object) -> int | None:
    """INFO-PERIOD from SENTINEL DEBUG's reply with no arguments (Redis >= 7.0: a flat list of tunable names
    and values, `INFO-PERIOD 10000 PING-PERIOD 1000 ...`); None if it is not there or not a positive number."""
    if not isinstance(reply, list):
        return None
    fields = pairs_to_dict(reply)
    value = _int(next((v for k, v in fields.items() if k.upper() == "INFO-PERIOD"), None))
    return value if value is not None and value > 0 else None


def parse_ckquorum(reply_or_error_text: str | bytes) -> tuple[bool, str]:
    """(ok, message) from SENTINEL CKQUORUM's status reply or the text of its error reply.

    `OK 3 usable Sentinels. Quorum and failover authorization can be reached` -> (True, the text);
    `NOQUORUM 1 usable Sentinels. Not enough ...` (or any other error) -> (False, the text). A leading
    RESP `+`/`-` is tolerated. The message is the whole text, stripped.
    """
    text = _text(reply_or_error_text).strip()
    if text[:1] in ("+", "-"):
        text = text[1:].lstrip()
    ok = text == "OK" or text.startswith("OK ")
    return ok, text
