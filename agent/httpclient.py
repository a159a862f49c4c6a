"""A small HTTP/1.1 client for the agent, on the standard library: pushes, the metadata service, enrollment.

Layer: adapter (I/O). The agent makes three kinds of request: a signed POST of its report every second over
one keep-alive connection (`HttpConnection`), and at start or bootstrap a GET to DigitalOcean's metadata
service and a POST to the controller's enrollment (`request`). requests would do, but importing it loads
charset detection (charset_normalizer), urllib3, idna and http.cookiejar: ~6 MiB of an agent that must
stay small (issue #9); `http.client` is what they stand on, and it already loads `ssl` for HTTPS.

Every way of getting no HTTP answer (refused, timed out, reset, a malformed response, a bad URL) is raised
as one `HttpError` whose `reason` names the cause's type (`ConnectionRefusedError`, `TimeoutError`, ...);
any HTTP status is an answer, returned, never raised.
"""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["HttpConnection", "HttpError", "Response", "post_json", "request", "split_url"]


class HttpError(Exception):
    """No HTTP answer; `reason` is the type name of what went wrong (safe to log: no URL, no secret)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.reason = type(cause).__name__


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON; ValueError when it is not."""
        return json.loads(self.body)


def split_url(url: str) -> tuple[str, str]:
    """("scheme://host:port", "/path?query") of an http(s) URL; ValueError for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {url!r}")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return f"{parts.scheme}://{parts.netloc}", target


# The server closed a kept-alive connection between two requests: the request never reached it, so it is
# sent once more on a fresh connection (RemoteDisconnected is a ConnectionResetError).
_STALE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class HttpConnection:
    """A keep-alive connection to one origin ("http://host:port" or "https://..."), opened when first needed
    and again after a failure. `ssl_context` verifies an HTTPS server (default: the system's CAs). One
    caller at a time."""

    def __init__(
        self,
        origin: str,
        connect_timeout_s: float,
        read_timeout_s: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) origin: {origin!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._ssl_context = ssl_context
        self._conn: http.client.HTTPConnection | None = None

    def request(
        self, method: str, target: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Response:
        for attempt in (1, 2):
            reused = self._conn is not None
            conn = self._conn or self._open()
            try:
                conn.request(method, target, body=body, headers=headers or {})
                answer = conn.getresponse()
                data = answer.read()
            except _STALE as e:
                self.close()
                if reused and attempt == 1:
                    continue
                raise HttpError(e) from e
            except (OSError, http.client.HTTPException) as e:
                self.close()
                raise HttpError(e) from e
            if answer.will_close:
                self.close()
            return Response(answer.status, data)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _open(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self._https:
            context = self._ssl_context or ssl.create_default_context()
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=self._connect_timeout_s,
                                               context=context)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._connect_timeout_s)
        try:
            conn.connect()  # TCP (and TLS) within the connect timeout; then the read timeout applies
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise HttpError(e) from e
        if conn.sock is not None:
            conn.sock.settimeout(self._read_timeout_s)
        self._conn = conn
        return conn


def request(
    method: str,
    url: str,
    timeout_s: float,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> Response:
    """One request on a connection of its own. A malformed URL is an `HttpError` too."""
    try:
        origin, target = split_url(url)
        conn = HttpConnection(origin, timeout_s, timeout_s, ssl_context)
    except ValueError as e:
        raise HttpError(e) from e
    try:
        return conn.request(method, target, body, headers)
    finally:
        conn.close()


def post_json(url: str, payload: Any, timeout_s: float, ssl_context: ssl.SSLContext | None = None) -> Response:
    """POST `payload` as a JSON body."""
    return request("POST", url, timeout_s, json.dumps(payload).encode(), {"Content-Type": "application/json"},
                   ssl_context)
