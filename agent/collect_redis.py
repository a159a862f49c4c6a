"""Collects the health of the local redis-server and redis-sentinel over the network.

Layer: adapter (I/O). It sends a handful of read-only commands through the agent's own RESP2 client
(`agent.resp`), so every reply reaches `agent.parse` exactly as the server sent it (decoded text, flat
lists); all interpretation lives there. It never raises: a failure becomes `reachable=False` with a short
error text, which never contains the password the client was built with.

Commands sent: to Redis `PING`, `INFO` (the default sections: server, clients, memory, persistence,
stats, replication, cpu, errorstats, keyspace; no commandstats) and one pipelined `CONFIG GET` per
parameter; to Sentinel `PING`, `SENTINEL MYID`, `SENTINEL MASTERS` (or `SENTINEL MASTER <name>`), and per
master `SENTINEL REPLICAS`, `SENTINEL SENTINELS` and `SENTINEL CKQUORUM`, then `SENTINEL DEBUG` with no
arguments (it only lists Sentinel's runtime tunables, for its INFO-PERIOD).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

from agent.parse import (
    CONFIG_KEYS,
    default_user_all_commands,
    pairs_to_dict,
    parse_ckquorum,
    redis_health_from_info,
    sentinel_info_period_ms,
    sentinel_master_view,
)
from agent.resp import RedisError, RespClient, ResponseError
from protocol.report import RedisHealth, SentinelHealth, SentinelMasterView

__all__ = ["collect_redis", "collect_sentinel", "raw_client"]

_ERROR_MAX_CHARS = 200


def raw_client(host: str, port: int, password: str | None = None, timeout_s: float = 2.0,
               username: str | None = None) -> RespClient:
    """A client for `collect_redis` / `collect_sentinel`: raw replies, bounded time, no retries.

    No connection is made until the first command. RESP2 keeps INFO a single text and SENTINEL replies
    flat lists, handed back untouched. A dead server costs one timeout, not several. Undecodable bytes are
    replaced rather than raised, so odd data cannot fail a whole collection.
    """
    return RespClient(host, port, password or None, timeout_s, username=username)


def collect_redis(client: RespClient, anonymous: RespClient | None = None) -> RedisHealth:
    """PING, INFO and CONFIG GET on a `raw_client`; any failure -> `RedisHealth(reachable=False, error)`.

    A CONFIG GET that fails (renamed command, ACL) only leaves its field None; it does not fail the rest.
    The security posture: `ACL GETUSER default` where the agent's user may (the one-password `default`; the
    `monitor` user may not: None), and, on `anonymous` (a client that sends no AUTH), whether PING answers.
    """
    try:
        ping_ms = _ping_ms(client)
        info_text = _command(client, "INFO")
        if not isinstance(info_text, str):
            raise ValueError(f"INFO returned {type(info_text).__name__}, expected text")
        config = _config_get(client, CONFIG_KEYS)
        health = redis_health_from_info(info_text, config, ping_ms)
        try:
            everything = default_user_all_commands(_command(client, "ACL", "GETUSER", "default"))
        except ResponseError:  # NOPERM (the monitor user), or no ACL (Redis < 6)
            everything = None
        return dataclasses.replace(health, acl_user=client.username or "default",
                                   default_user_all_commands=everything,
                                   open_without_auth=_answers_anonymously(anonymous))
    except Exception as e:  # a collector reports failures; it must never take the agent down
        return RedisHealth(reachable=False, error=_describe(e, client))


def collect_sentinel(client: RespClient, master_names: Sequence[str] | None = None,
                     anonymous: RespClient | None = None) -> SentinelHealth:
    """PING, SENTINEL MYID and one `SentinelMasterView` per monitored master (or per name given).

    A named master the Sentinel does not monitor is left out of `masters`. Per master, an error reply
    to SENTINEL REPLICAS or SENTINELS leaves that tuple empty, and CKQUORUM's error reply (NOQUORUM) is
    kept as `ckquorum_ok=False` with its text; one master's failures never lose the others. Connection
    failures and timeouts fail the whole collection (`reachable=False`): by then nothing else is known.
    """
    try:
        ping_ms = _ping_ms(client)
        myid = _command(client, "SENTINEL", "MYID")
        masters: list[SentinelMasterView] = []
        for name, master_reply in _master_replies(client, master_names):
            view = _master_view(client, name, master_reply)
            if view is not None:
                masters.append(view)
        probe = anonymous if anonymous is not None else (client if client.username is None else None)
        return SentinelHealth(
            reachable=True,
            ping_ms=ping_ms,
            myid=myid if isinstance(myid, str) and myid else None,
            masters=tuple(masters),
            info_period_ms=_info_period_ms(client),
            open_to_state_changes=_open_to_state_changes(probe),
        )
    except Exception as e:  # a collector reports failures; it must never take the agent down
        return SentinelHealth(reachable=False, error=_describe(e, client))


# ---------------------------------------------------------------------------------------------------------


def _answers_anonymously(anonymous: RespClient | None) -> bool | None:
    """PONG without AUTH: the `default` user is on without a password. Refused (NOAUTH, NOPERM): False."""
    if anonymous is None:
        return None
    try:
        return _command(anonymous, "PING") == "PONG"
    except RedisError:
        return False
    except OSError:
        return None
    finally:  # no idle connection as `default`: `cluster secure` waits for none to be left before default goes off
        anonymous.close()


def _open_to_state_changes(probe: RespClient | None) -> bool | None:
    """Whether a client that sent no AUTH may use SENTINEL CONFIG (read-only here: GET; an ACL that lets it
    through lets SET, FAILOVER and RESET through as well, as does no ACL at all). NOPERM or NOAUTH: False.
    Sentinel 6.0 has neither ACLs nor SENTINEL CONFIG: its "unknown subcommand" is True."""
    if probe is None:
        return None
    try:
        _command(probe, "SENTINEL", "CONFIG", "GET", "resolve-hostnames")
    except ResponseError as e:
        return not str(e).startswith("NOPERM")
    except RedisError:
        return False
    except OSError:
        return None
    return True


def _command(client: RespClient, *args: str) -> object:
    """One command, its raw reply typed as `object` for the parsers to narrow."""
    return client.execute_command(*args)


# Error replies to PING from a redis-server that is alive and answering: a master that cannot persist
# (MISCONF: a full disk, a failing AOF write or background save refuses writes and PING, but serves INFO and
# reads) and one loading its data set. Sentinel counts both as answers too; restarting such a server cures
# nothing (a full disk stays full, a load starts over) and can corrupt an AOF cut short by ENOSPC.
_ALIVE_ERRORS = ("MISCONF", "LOADING")


def _ping_ms(client: RespClient) -> float:
    started = time.perf_counter()
    try:
        _command(client, "PING")
    except ResponseError as e:
        if not str(e).startswith(_ALIVE_ERRORS):
            raise
    return round((time.perf_counter() - started) * 1000.0, 3)


def _config_get(client: RespClient, keys: Sequence[str]) -> dict[str, str]:
    """One CONFIG GET per key in one round trip; keys whose command failed are simply absent."""
    config: dict[str, str] = {}
    for reply in client.pipeline([("CONFIG", "GET", key) for key in keys]):
        if not isinstance(reply, list):  # an error reply (renamed command, ACL): that key stays unknown
            continue
        try:
            config.update(pairs_to_dict(reply))
        except ValueError:
            continue
    return config


def _master_replies(client: RespClient, master_names: Sequence[str] | None) -> list[tuple[str, Sequence[str]]]:
    """(name, SENTINEL MASTER reply) for every master to report on."""
    if master_names is None:
        reply = _command(client, "SENTINEL", "MASTERS")
        if not isinstance(reply, list):
            raise ValueError(f"SENTINEL MASTERS returned {type(reply).__name__}, expected a list")
        found: list[tuple[str, Sequence[str]]] = []
        for entry in reply:
            try:
                name = pairs_to_dict(entry).get("name")
            except ValueError:
                continue
            if name:
                found.append((name, entry))
        return found
    named: list[tuple[str, Sequence[str]]] = []
    for name in master_names:
        try:
            entry = _command(client, "SENTINEL", "MASTER", name)
        except ResponseError:
            continue  # "No such master with that name": not monitored by this Sentinel
        if isinstance(entry, list):
            named.append((name, entry))
    return named


def _master_view(client: RespClient, name: str, master_reply: Sequence[str]) -> SentinelMasterView | None:
    replicas = _list_or_empty(client, "REPLICAS", name)
    sentinels = _list_or_empty(client, "SENTINELS", name)
    try:
        ckquorum = parse_ckquorum(_text_reply(_command(client, "SENTINEL", "CKQUORUM", name)))
    except ResponseError as e:
        ckquorum = parse_ckquorum(str(e))
    try:
        return sentinel_master_view(name, master_reply, replicas, sentinels, ckquorum)
    except ValueError:
        return None


def _info_period_ms(client: RespClient) -> int | None:
    """The Sentinel's INFO-PERIOD; None when SENTINEL DEBUG is refused (Redis < 7.0, an ACL)."""
    try:
        return sentinel_info_period_ms(_command(client, "SENTINEL", "DEBUG"))
    except ResponseError:
        return None


def _list_or_empty(client: RespClient, subcommand: str, name: str) -> list[list[str]]:
    try:
        reply = _command(client, "SENTINEL", subcommand, name)
    except ResponseError:
        return []
    return reply if isinstance(reply, list) else []


def _text_reply(reply: object) -> str:
    if isinstance(reply, bytes):
        return reply.decode("utf-8", errors="replace")
    return reply if isinstance(reply, str) else str(reply)


def _describe(error: BaseException, client: RespClient) -> str:
    """`Type: message`, short, with the client's password (if any) cut out."""
    text = client.scrub(f"{type(error).__name__}: {error}".strip())
    if len(text) > _ERROR_MAX_CHARS:
        text = text[: _ERROR_MAX_CHARS - 3] + "..."
    return text
