"""Collects the health of the local redis-server and redis-sentinel over the network.

Layer: adapter (I/O). It sends a handful of read-only commands through a redis-py client with its
response callbacks off (`agent.redis_client.raw_client`), so every reply reaches `agent.parse` exactly as
the server sent it (decoded text, flat lists); all interpretation lives there. It never raises: a failure
becomes `reachable=False` with a short error text (`Name: message`), which never contains the password the
client was built with.

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

import redis
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    ConnectionError,
    NoPermissionError,
    RedisError,
    ResponseError,
    TimeoutError,
)

from agent.parse import (
    CONFIG_KEYS,
    default_user_all_commands,
    pairs_to_dict,
    parse_ckquorum,
    redis_health_from_info,
    sentinel_info_period_ms,
    sentinel_master_view,
)
from agent.redis_client import command, error_message, error_text, pipeline, raw_client, username_of
from protocol.report import RedisHealth, SentinelHealth, SentinelMasterView

__all__ = ["collect_redis", "collect_sentinel", "raw_client"]

_ERROR_MAX_CHARS = 200


def collect_redis(client: redis.Redis, anonymous: redis.Redis | None = None) -> RedisHealth:
    """PING, INFO and CONFIG GET on a `raw_client`; any failure -> `RedisHealth(reachable=False, error)`.

    A CONFIG GET that fails (renamed command, ACL) only leaves its field None; it does not fail the rest.
    The security posture: `ACL GETUSER default` where the agent's user may (the one-password `default`; the
    `monitor` user may not: None), and, on `anonymous` (a client that sends no AUTH), whether PING answers.
    """
    try:
        ping_ms = _ping_ms(client)
        info_text = command(client, "INFO")
        if not isinstance(info_text, str):
            raise ValueError(f"INFO returned {type(info_text).__name__}, expected text")
        config = _config_get(client, CONFIG_KEYS)
        health = redis_health_from_info(info_text, config, ping_ms)
        try:
            everything = default_user_all_commands(command(client, "ACL", "GETUSER", "default"))
        except ResponseError:  # NOPERM (the monitor user), or no ACL (Redis < 6)
            everything = None
        return dataclasses.replace(health, acl_user=username_of(client) or "default",
                                   default_user_all_commands=everything,
                                   open_without_auth=_answers_anonymously(anonymous))
    except Exception as e:  # a collector reports failures; it must never take the agent down
        return RedisHealth(reachable=False, error=_describe(e, client))


def collect_sentinel(client: redis.Redis, master_names: Sequence[str] | None = None,
                     anonymous: redis.Redis | None = None) -> SentinelHealth:
    """PING, SENTINEL MYID and one `SentinelMasterView` per monitored master (or per name given).

    A named master the Sentinel does not monitor is left out of `masters`. Per master, an error reply
    to SENTINEL REPLICAS or SENTINELS leaves that tuple empty, and CKQUORUM's error reply (NOQUORUM) is
    kept as `ckquorum_ok=False` with its text; one master's failures never lose the others. Connection
    failures and timeouts fail the whole collection (`reachable=False`): by then nothing else is known.
    """
    try:
        ping_ms = _ping_ms(client)
        myid = command(client, "SENTINEL", "MYID")
        masters: list[SentinelMasterView] = []
        for name, master_reply in _master_replies(client, master_names):
            view = _master_view(client, name, master_reply)
            if view is not None:
                masters.append(view)
        probe = anonymous if anonymous is not None else (client if username_of(client) is None else None)
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


def _answers_anonymously(anonymous: redis.Redis | None) -> bool | None:
    """PONG without AUTH: the `default` user is on without a password. Refused (NOAUTH, NOPERM): False."""
    if anonymous is None:
        return None
    try:
        return command(anonymous, "PING") == "PONG"
    except AuthenticationError:  # NOAUTH (redis-py counts it a ConnectionError: it drops the connection)
        return False
    except (ConnectionError, TimeoutError, OSError):
        return None
    except RedisError:  # NOPERM, or any other error reply
        return False
    finally:  # no idle connection as `default`: `cluster secure` waits for none to be left before default goes off
        anonymous.close()


def _open_to_state_changes(probe: redis.Redis | None) -> bool | None:
    """Whether a client that sent no AUTH may use SENTINEL CONFIG (read-only here: GET; an ACL that lets it
    through lets SET, FAILOVER and RESET through as well, as does no ACL at all). NOPERM or NOAUTH: False.
    Sentinel 6.0 has neither ACLs nor SENTINEL CONFIG: its "unknown subcommand" is True."""
    if probe is None:
        return None
    try:
        command(probe, "SENTINEL", "CONFIG", "GET", "resolve-hostnames")
    except ResponseError as e:
        return not isinstance(e, NoPermissionError)
    except AuthenticationError:  # NOAUTH
        return False
    except (ConnectionError, TimeoutError, OSError):
        return None
    except RedisError:
        return False
    return True


# Error replies to PING from a redis-server that is alive and answering: a master that cannot persist
# (MISCONF: a full disk, a failing AOF write or background save refuses writes and PING, but serves INFO and
# reads) and one loading its data set. Sentinel counts both as answers too; restarting such a server cures
# nothing (a full disk stays full, a load starts over) and can corrupt an AOF cut short by ENOSPC.
_ALIVE_ERRORS = ("MISCONF", "LOADING")


def _ping_ms(client: redis.Redis) -> float:
    started = time.perf_counter()
    try:
        command(client, "PING")
    except (ResponseError, BusyLoadingError) as e:  # redis-py makes LOADING a BusyLoadingError
        if not isinstance(e, BusyLoadingError) and not error_message(e).startswith(_ALIVE_ERRORS):
            raise
    return round((time.perf_counter() - started) * 1000.0, 3)


def _config_get(client: redis.Redis, keys: Sequence[str]) -> dict[str, str]:
    """One CONFIG GET per key in one round trip; keys whose command failed are simply absent."""
    config: dict[str, str] = {}
    for reply in pipeline(client, [("CONFIG", "GET", key) for key in keys]):
        if not isinstance(reply, list):  # an error reply (renamed command, ACL): that key stays unknown
            continue
        try:
            config.update(pairs_to_dict(reply))
        except ValueError:
            continue
    return config


def _master_replies(client: redis.Redis, master_names: Sequence[str] | None) -> list[tuple[str, Sequence[str]]]:
    """(name, SENTINEL MASTER reply) for every master to report on."""
    if master_names is None:
        reply = command(client, "SENTINEL", "MASTERS")
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
            entry = command(client, "SENTINEL", "MASTER", name)
        except ResponseError:
            continue  # "No such master with that name": not monitored by this Sentinel
        if isinstance(entry, list):
            named.append((name, entry))
    return named


def _master_view(client: redis.Redis, name: str, master_reply: Sequence[str]) -> SentinelMasterView | None:
    replicas = _list_or_empty(client, "REPLICAS", name)
    sentinels = _list_or_empty(client, "SENTINELS", name)
    try:
        ckquorum = parse_ckquorum(_text_reply(command(client, "SENTINEL", "CKQUORUM", name)))
    except ResponseError as e:
        ckquorum = parse_ckquorum(error_message(e))
    try:
        return sentinel_master_view(name, master_reply, replicas, sentinels, ckquorum)
    except ValueError:
        return None


def _info_period_ms(client: redis.Redis) -> int | None:
    """The Sentinel's INFO-PERIOD; None when SENTINEL DEBUG is refused (Redis < 7.0, an ACL)."""
    try:
        return sentinel_info_period_ms(command(client, "SENTINEL", "DEBUG"))
    except ResponseError:
        return None


def _list_or_empty(client: redis.Redis, subcommand: str, name: str) -> list[list[str]]:
    try:
        reply = command(client, "SENTINEL", subcommand, name)
    except ResponseError:
        return []
    return reply if isinstance(reply, list) else []


def _text_reply(reply: object) -> str:
    if isinstance(reply, bytes):
        return reply.decode("utf-8", errors="replace")
    return reply if isinstance(reply, str) else str(reply)


def _describe(error: BaseException, client: redis.Redis) -> str:
    """`Name: message` (`agent.redis_client.error_text`), short, with the client's password (if any) cut out."""
    text = error_text(error, client)
    if len(text) > _ERROR_MAX_CHARS:
        text = text[: _ERROR_MAX_CHARS - 3] + "..."
    return text
