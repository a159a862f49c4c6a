"""A small Redis client for the agent: RESP2 over one TCP connection, exactly what its probes need.

Layer: adapter (I/O). The agent sends a handful of read-only commands to its own redis-server and
redis-sentinel (PING, INFO, CONFIG GET, SENTINEL ...) and, while bootstrapping, one question to each peer
Sentinel. redis-py would do, but importing it loads its asyncio client, its cluster client and (when it is
installed) OpenTelemetry: ~9 MiB of an agent that must stay small (issue #9). This client sends no HELLO, so
the server speaks RESP2; it hands every reply back as the server sent it (text as `str`, decoded as UTF-8
with undecodable bytes replaced; integers as `int`; nil as None; arrays as lists), with no response
callbacks and no retries: a dead server costs one timeout. A connection the server closed while idle (a
restarted Redis) is noticed before the next command and replaced, as redis-py's pool does. It is not
thread-safe: one caller at a time.

Errors keep the names redis-py gives them, because a report's `error` text starts with the name:
`ConnectionError` and `TimeoutError` (the built-in ones, both `OSError`s), `AuthenticationError` (a refused
or missing password) and `ResponseError` (any other error reply; the connection stays usable). After a
connection or protocol error the connection is closed and the next command opens a new one. No message
ever contains the password.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Sequence
from typing import BinaryIO

__all__ = ["AuthenticationError", "ProtocolError", "RedisError", "RespClient", "ResponseError"]

MAX_LINE_BYTES = 64 * 1024  # a status line, error line or length header; bulk replies are read by length
_AUTH_PREFIXES = ("NOAUTH", "WRONGPASS", "ERR invalid password", "ERR invalid username-password pair")
_REDACTED = "<redacted>"


class RedisError(Exception):
    """The server answered, but not with what was asked for."""


class ResponseError(RedisError):
    """An error reply (`-ERR ...`, `-NOQUORUM ...`): the command failed, the connection is fine."""


class AuthenticationError(RedisError):
    """The server wants a password it was not given, or refused the one it was given."""


class ProtocolError(RedisError):
    """The bytes on the wire are not RESP2; the connection is dropped."""


def _error_reply(text: str) -> RedisError:
    return AuthenticationError(text) if text.startswith(_AUTH_PREFIXES) else ResponseError(text)


def _encode(args: Sequence[str | int]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class RespClient:
    """One lazily opened connection to `host:port`, authenticated with `password` (if any) on connect, as
    `username` when one is given (`AUTH username password`, an ACL user), else as Redis's `default` user."""

    def __init__(self, host: str, port: int, password: str | None = None, timeout_s: float = 2.0,
                 username: str | None = None) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self._password = password or None
        self._username = username or None
        self._sock: socket.socket | None = None
        self._reader: BinaryIO | None = None

    def __repr__(self) -> str:
        return f"RespClient({self.host}:{self.port})"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def username(self) -> str | None:
        """The user this client authenticates as: its username, "default" for a password alone, None if no
        AUTH is sent."""
        return (self._username or "default") if self._password else None

    def set_credentials(self, username: str | None, password: str | None) -> None:
        """Authenticate as `username` with `password` from the next connection on (the current one is closed)."""
        self._username, self._password = username or None, password or None
        self.close()

    def execute_command(self, *args: str | int) -> object:
        """Send one command, return its reply; an error reply is raised (`ResponseError`, ...)."""
        (reply,) = self._round_trip([args])
        if isinstance(reply, RedisError):
            raise reply
        return reply

    def pipeline(self, commands: Sequence[Sequence[str | int]]) -> list[object]:
        """Send `commands` in one write, return their replies in order; error replies are returned as
        `RedisError` values, not raised, so one failing command leaves the others' replies usable."""
        if not commands:
            return []
        return self._round_trip(commands)

    def scrub(self, text: str) -> str:
        """`text` with this client's password (if any) cut out: for error texts that may have quoted it."""
        return text.replace(self._password, _REDACTED) if self._password else text

    def close(self) -> None:
        reader, sock = self._reader, self._sock
        self._reader = self._sock = None
        if reader is not None:
            reader.close()
        if sock is not None:
            sock.close()

    def __enter__(self) -> RespClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -----------------------------------------------------------------------------------------------------

    def _round_trip(self, commands: Sequence[Sequence[str | int]]) -> list[object]:
        reader = self._connected()
        try:
            self._send(b"".join(_encode(c) for c in commands))
            return [self._read(reader) for _ in commands]
        except BaseException:
            self.close()  # a half-read reply leaves the stream out of step: never reuse it
            raise

    def _connected(self) -> BinaryIO:
        if self._reader is not None and self._sock is not None:
            # Between commands nothing is owed to us: a readable socket means the server closed it (a
            # restarted Redis, CLIENT KILL). Open a fresh one rather than fail a command on the old one.
            readable, _, _ = select.select([self._sock], [], [], 0)
            if not readable:
                return self._reader
            self.close()
        return self._open()

    def _open(self) -> BinaryIO:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        except TimeoutError:
            raise TimeoutError(f"Timeout connecting to {self.address}") from None
        except OSError as e:
            raise ConnectionError(f"Error {e.errno} connecting to {self.address}. {e.strerror or e}.") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader: BinaryIO = sock.makefile("rb")
        self._sock, self._reader = sock, reader
        if self._password is not None:
            try:
                auth = ("AUTH", self._username, self._password) if self._username else ("AUTH", self._password)
                self._send(_encode(auth))
                reply = self._read(reader)
            except BaseException:
                self.close()
                raise
            if isinstance(reply, RedisError):  # any refusal of AUTH, also "no password is set"
                self.close()
                raise AuthenticationError(str(reply))
        return reader

    def _send(self, data: bytes) -> None:
        assert self._sock is not None
        try:
            self._sock.sendall(data)
        except TimeoutError:
            raise TimeoutError(f"Timeout writing to {self.address}") from None
        except OSError as e:
            raise ConnectionError(f"Error {e.errno} while writing to {self.address}. {e.strerror or e}.") from None

    def _read(self, reader: BinaryIO) -> object:
        line = self._readline(reader)
        kind, rest = line[:1], line[1:]
        if kind == b"$":
            size = self._int(rest)
            if size < 0:
                return None
            data = self._exactly(reader, size + 2)
            return data[:-2].decode("utf-8", errors="replace")
        if kind == b"+":
            return rest.decode("utf-8", errors="replace")
        if kind == b":":
            return self._int(rest)
        if kind == b"*":
            count = self._int(rest)
            return None if count < 0 else [self._read(reader) for _ in range(count)]
        if kind == b"-":
            return _error_reply(rest.decode("utf-8", errors="replace"))
        raise ProtocolError(f"unexpected reply type {kind!r} from {self.address}")

    def _readline(self, reader: BinaryIO) -> bytes:
        try:
            line = reader.readline(MAX_LINE_BYTES)
        except TimeoutError:
            raise TimeoutError(f"Timeout reading from {self.address}") from None
        except OSError as e:
            raise ConnectionError(f"Error {e.errno} while reading from {self.address}. {e.strerror or e}.") from None
        if not line:
            raise ConnectionError(f"Connection closed by {self.address}.")
        if not line.endswith(b"\r\n"):
            raise ProtocolError(f"a reply line from {self.address} is cut short or too long")
        return line[:-2]

    def _exactly(self, reader: BinaryIO, size: int) -> bytes:
        try:
            data = reader.read(size)
        except TimeoutError:
            raise TimeoutError(f"Timeout reading from {self.address}") from None
        except OSError as e:
            raise ConnectionError(f"Error {e.errno} while reading from {self.address}. {e.strerror or e}.") from None
        if len(data) != size:
            raise ConnectionError(f"Connection closed by {self.address}.")
        return data

    def _int(self, text: bytes) -> int:
        try:
            return int(text)
        except ValueError:
            raise ProtocolError(f"{text[:20]!r} from {self.address} is not a number") from None
