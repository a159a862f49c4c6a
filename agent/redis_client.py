"""The agent's Redis and Sentinel clients (redis-py), and how their errors read in reports and acks.

Layer: adapter (I/O). Every command the agent sends, to its own redis-server and redis-sentinel and while
bootstrapping to peer Sentinels, goes through a `raw_client`: a `redis.Redis` that hands each reply back as
the server sent it (RESP2, no HELLO: INFO one text, SENTINEL replies flat lists, text decoded as UTF-8 with
undecodable bytes replaced, nil as None), because `agent.parse` and `agent.urgent` interpret them, not
redis-py's response callbacks. Time is bounded by the agent's `timeout_s` and nothing is retried, so a dead
server costs one timeout and one connection. A connection the server closed while idle (a restarted Redis)
is noticed by the pool when it is checked out, and replaced before the command is sent.

The client is thread-safe (a connection pool): two threads asking at once get two connections. The agent's
threads (the report cycle, the urgent probe, the exit watch) take one lock around every use, so each client
holds one connection.

Errors keep the names the agent's reports have always used (`error_text`): `ConnectionError`,
`TimeoutError`, `AuthenticationError` (a refused or missing password) and `ResponseError` (any other error
reply, with its code: `NOPERM ...`, `LOADING ...`), and no text ever contains the client's password.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, ConnectionError, RedisError, ResponseError, TimeoutError
from redis.retry import Retry

__all__ = ["command", "error_message", "error_text", "pipeline", "raw_client", "scrub", "username_of"]

_REDACTED = "<redacted>"

try:  # CLIENT SETINFO (two more commands on every connect) is off: redis-py >= 7.1 says so with driver_info
    import redis.driver_info

    _NO_CLIENT_SETINFO: dict[str, Any] = {"driver_info": None}
except ImportError:  # redis-py 5.0 to 7.0
    _NO_CLIENT_SETINFO = {"lib_name": None, "lib_version": None}


def raw_client(host: str, port: int, password: str | None = None, timeout_s: float = 2.0,
               username: str | None = None) -> redis.Redis:
    """A client of `host:port` that authenticates with `password` (if any) on connect, as `username` when one
    is given (an ACL user), else as Redis's `default` user. No connection is made until the first command."""
    client = redis.Redis(
        host=host,
        port=port,
        username=username or None,
        password=password or None,
        protocol=2,  # RESP2 and no HELLO: the replies agent.parse was written for
        decode_responses=True,
        encoding_errors="replace",  # odd bytes in a reply cannot fail a whole collection
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),  # redis-py >= 6 retries connection errors and timeouts 3 times by default
        health_check_interval=0,  # no PING before a command: the pool's checkout test finds a closed connection
        **_NO_CLIENT_SETINFO,
    )
    client.response_callbacks.clear()  # every reply raw (PING is "PONG", INFO a text), pipelines included
    return client


def command(client: redis.Redis, *args: str | int) -> object:
    """One command, its raw reply typed as `object` for the parsers to narrow; an error reply is raised."""
    reply: object = client.execute_command(*args)  # type: ignore[no-untyped-call]
    return reply


def pipeline(client: redis.Redis, commands: Sequence[Sequence[str | int]]) -> list[object]:
    """`commands` in one round trip, their replies in order; an error reply is returned in its place as a
    `RedisError`, not raised, so one failing command leaves the others' replies usable."""
    pipe = client.pipeline(transaction=False)
    for args in commands:
        pipe.execute_command(*args)  # type: ignore[no-untyped-call]
    replies: list[object] = pipe.execute(raise_on_error=False)
    return replies


def username_of(client: redis.Redis) -> str | None:
    """The user `client` authenticates as: its username, "default" for a password alone, None if no AUTH."""
    kwargs = client.get_connection_kwargs()
    if not kwargs.get("password"):
        return None
    name = kwargs.get("username")
    return name if isinstance(name, str) and name else "default"


def scrub(client: redis.Redis | None, text: str) -> str:
    """`text` with the client's password (if any) cut out: a server's error reply may quote a command's
    arguments (an AUTH the server does not know, for one)."""
    password = client.get_connection_kwargs().get("password") if client is not None else None
    return text.replace(password, _REDACTED) if isinstance(password, str) and password else text


def error_message(error: BaseException, client: redis.Redis | None = None) -> str:
    """The error's text, an error reply's code in front as the server sent it (redis-py >= 8 keeps it aside
    as `status_code` for the codes it makes a class of: `NOPERM`, `LOADING`, `WRONGPASS`, `ERR` ...), with the
    client's password cut out."""
    text = str(error)
    code = getattr(error, "status_code", None)
    if isinstance(code, str) and code and not text.startswith(code):
        text = f"{code} {text}"
    return scrub(client, text)


def error_text(error: BaseException, client: redis.Redis | None = None) -> str:
    """`Name: message`, as a report's `error` says it: the name of the kind of failure (redis-py's name for
    it; an error reply of a kind redis-py has a class for, such as NOPERM or LOADING, is a `ResponseError`,
    as every error reply always was in these reports), the message as `error_message` gives it."""
    return f"{_error_name(error)}: {error_message(error, client)}".strip()


def _error_name(error: BaseException) -> str:
    if isinstance(error, AuthenticationError):
        return "AuthenticationError"
    if isinstance(error, ResponseError) or (isinstance(error, RedisError) and getattr(error, "status_code", None)):
        return "ResponseError"  # BusyLoadingError and MaxClientsReachedError are error replies too
    if isinstance(error, TimeoutError):
        return "TimeoutError"
    if isinstance(error, ConnectionError):
        return "ConnectionError"
    return type(error).__name__
