"""A local stand-in for Slack, PagerDuty and a generic webhook, for tests, the demo and benchmarks.

Layer: application (sandbox). A threaded stdlib HTTP server on loopback that answers like the real
services and checks what it receives against their documented shapes:

    POST /slack/<anything>        Slack incoming webhook: 200 "ok", or 400 "invalid_payload"
    POST /pagerduty/v2/enqueue    PagerDuty Events API v2: 202 {"status": "success", ...}, or
                                  400 {"status": "invalid event", "message": ..., "errors": [...]}
    POST /webhook                 any JSON object: 200 {"ok": true}
    POST /_control/mode           {"mode": "up" | "down" | "429"}: down answers 503, 429 answers 429
                                  with Retry-After: 1 (requests are still recorded)
    GET  /_control/received       what was received so far (`?kind=slack|pagerduty|webhook`)

Every request to a service route is recorded with its kind, time, answer and validation result, in
memory and (if given) as one JSON line in a log file. Run it as a process with
`python -m sandbox.receiver --host 127.0.0.1 --port 0 --log received.jsonl`: it prints its URL on stdout,
then serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

Mode = Literal["up", "down", "429"]
Kind = Literal["slack", "pagerduty", "webhook"]
MODES: tuple[Mode, ...] = ("up", "down", "429")

PD_ACTIONS = ("trigger", "acknowledge", "resolve")
PD_SEVERITIES = ("critical", "error", "warning", "info")


@dataclass(frozen=True, slots=True)
class Received:
    """One request to a service route, as answered."""

    kind: Kind
    path: str
    at: float  # Unix seconds
    status: int  # what we answered
    mode: Mode
    valid: bool
    errors: tuple[str, ...]
    body: Any  # the parsed JSON, or the raw text if it was not JSON

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": self.path,
            "at": self.at,
            "status": self.status,
            "mode": self.mode,
            "valid": self.valid,
            "errors": list(self.errors),
            "body": self.body,
        }


# ---------------------------------------------------------------------------------------------------------
# Validators: the documented shapes (and the limits that make the real services answer 400)


def validate_slack(body: Any) -> list[str]:
    if not isinstance(body, dict):
        return ["body must be a JSON object"]
    errors: list[str] = []
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        errors.append("text must be a non-empty string")
    blocks = body.get("blocks")
    if blocks is None:
        return errors
    if not isinstance(blocks, list):
        return [*errors, "blocks must be a list"]
    if len(blocks) > 50:
        errors.append(f"blocks: at most 50, got {len(blocks)}")
    for i, block in enumerate(blocks):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            errors.append(f"blocks[{i}] must be an object with a string type")
            continue
        errors.extend(_validate_block(i, block))
    return errors


def _text_object(where: str, obj: Any, limit: int, plain_only: bool = False) -> list[str]:
    types = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
    if not isinstance(obj, dict) or obj.get("type") not in types:
        return [f"{where} must be a {'plain_text' if plain_only else 'text'} object"]
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return [f"{where}.text must be a non-empty string"]
    if len(text) > limit:
        return [f"{where}.text: at most {limit} characters, got {len(text)}"]
    return []


def _validate_block(i: int, block: dict[str, Any]) -> list[str]:
    kind = block["type"]
    where = f"blocks[{i}]"
    if kind == "header":
        return _text_object(f"{where}.text", block.get("text"), 150, plain_only=True)
    if kind == "section":
        errors: list[str] = []
        if "text" not in block and "fields" not in block:
            errors.append(f"{where}: a section needs text or fields")
        if "text" in block:
            errors.extend(_text_object(f"{where}.text", block["text"], 3000))
        fields = block.get("fields", [])
        if not isinstance(fields, list) or len(fields) > 10:
            errors.append(f"{where}.fields must be a list of at most 10")
        else:
            for j, field in enumerate(fields):
                errors.extend(_text_object(f"{where}.fields[{j}]", field, 2000))
        return errors
    if kind == "context":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
            return [f"{where}.elements must be a list of 1 to 10"]
        return [e for j, el in enumerate(elements) for e in _text_object(f"{where}.elements[{j}]", el, 3000)]
    return []  # other block types: shape not checked here


def validate_pagerduty(body: Any) -> list[str]:
    if not isinstance(body, dict):
        return ["body must be a JSON object"]
    errors: list[str] = []
    key = body.get("routing_key")
    if not isinstance(key, str) or not key:
        errors.append("routing_key must be a non-empty string")  # real keys are 32 characters
    action = body.get("event_action")
    if action not in PD_ACTIONS:
        errors.append(f"event_action must be one of {', '.join(PD_ACTIONS)}")
    dedup_key = body.get("dedup_key")
    if dedup_key is not None and (not isinstance(dedup_key, str) or not dedup_key or len(dedup_key) > 255):
        errors.append("dedup_key must be a non-empty string of at most 255 characters")
    if action in ("acknowledge", "resolve") and dedup_key is None:
        errors.append(f"dedup_key is required to {action}")
    if action == "trigger":
        errors.extend(_validate_pd_payload(body.get("payload")))
    return errors


def _validate_pd_payload(payload: Any) -> list[str]:
    if not isinstance(payload, dict):
        return ["payload must be an object for a trigger"]
    errors: list[str] = []
    summary = payload.get("summary")
    if not isinstance(summary, str) or not summary:
        errors.append("payload.summary must be a non-empty string")
    elif len(summary) > 1024:
        errors.append(f"payload.summary: at most 1024 characters, got {len(summary)}")
    source = payload.get("source")
    if not isinstance(source, str) or not source:
        errors.append("payload.source must be a non-empty string")
    if payload.get("severity") not in PD_SEVERITIES:
        errors.append(f"payload.severity must be one of {', '.join(PD_SEVERITIES)}")
    timestamp = payload.get("timestamp")
    if timestamp is not None:
        try:
            datetime.fromisoformat(str(timestamp).replace("Z", "+00:00"))
        except ValueError:
            errors.append("payload.timestamp must be ISO 8601")
    for name in ("component", "group", "class"):
        if name in payload and not isinstance(payload[name], str):
            errors.append(f"payload.{name} must be a string")
    return errors


# ---------------------------------------------------------------------------------------------------------
# The server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    receiver: Receiver


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = 30  # idle keep-alive connections end after this

    def setup(self) -> None:
        super().setup()
        self.server.receiver._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.receiver._track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the records are the log
        pass

    def _reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/_control/received":
            kind = parse_qs(url.query).get("kind", [""])[0]
            records = [r for r in self.server.receiver.received() if not kind or r.kind == kind]
            self._reply(200, [r.to_dict() for r in records])
        elif url.path == "/_control/mode":
            self._reply(200, {"mode": self.server.receiver.mode})
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        raw = self._read_body()
        path = urlsplit(self.path).path
        receiver = self.server.receiver
        if path == "/_control/mode":
            try:
                mode = json.loads(raw)["mode"]
                receiver.set_mode(mode)
            except (ValueError, KeyError, TypeError) as e:
                self._reply(400, {"error": f"expected {{'mode': one of {list(MODES)}}}: {e}"})
                return
            self._reply(200, {"mode": mode})
            return
        kind: Kind
        if path.startswith("/slack/") and len(path) > len("/slack/"):
            kind = "slack"
        elif path == "/pagerduty/v2/enqueue":
            kind = "pagerduty"
        elif path == "/webhook":
            kind = "webhook"
        else:
            self._reply(404, {"error": "not found"})
            return
        status, answer, headers = receiver._handle(kind, path, raw)  # recorded before the client hears back
        self._reply(status, answer, headers)


class Receiver:
    """The stand-in services on `host:port` (port 0: any free port; read `url` after `start()`)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, log_path: str | Path | None = None) -> None:
        self._host = host
        self._port = port
        self._log_path = Path(log_path) if log_path is not None else None
        self._lock = threading.Lock()
        self._records: list[Received] = []
        self._connections: set[socket.socket] = set()
        self._mode: Mode = "up"
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- control ------------------------------------------------------------------------------------

    def start(self) -> Receiver:
        server = _Server((self._host, self._port), _Handler)
        server.receiver = self
        self._server = server
        self._port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, name="receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open keep-alive connections, so nothing is answered after this."""
        server = self._server
        if server is None:
            return
        # serve_forever notices shutdown() only when its select() returns: poke it with a connection
        # rather than wait out its poll interval.
        stopper = threading.Thread(target=server.shutdown, name="receiver-stop")
        stopper.start()
        while stopper.is_alive():
            with contextlib.suppress(OSError):
                socket.create_connection((self._host, self._port), timeout=1).close()
            stopper.join(0.02)
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}"

    @property
    def mode(self) -> Mode:
        return self._mode

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        self._mode = next(m for m in MODES if m == mode)

    def received(self, kind: Kind | None = None) -> list[Received]:
        """Every request so far to a service route (optionally of one kind), whatever we answered."""
        with self._lock:
            return [r for r in self._records if kind is None or r.kind == kind]

    def accepted(self, kind: Kind | None = None) -> list[Received]:
        """Only the requests answered 2xx: what the real service would have taken."""
        return [r for r in self.received(kind) if r.accepted]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    # -- request handling (called from handler threads) -----------------------------------------------

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _handle(self, kind: Kind, path: str, raw: bytes) -> tuple[int, Any, dict[str, str]]:
        mode = self._mode
        body: Any
        try:
            body = json.loads(raw)
            errors = {"slack": validate_slack, "pagerduty": validate_pagerduty, "webhook": _validate_webhook}[kind](
                body
            )
        except ValueError:
            body = raw.decode(errors="replace")
            errors = ["body is not JSON"]
        status, answer, headers = self._answer(kind, mode, body, errors)
        self._record(Received(kind, path, time.time(), status, mode, not errors, tuple(errors), body))
        return status, answer, headers

    @staticmethod
    def _answer(kind: Kind, mode: Mode, body: Any, errors: list[str]) -> tuple[int, Any, dict[str, str]]:
        if mode == "down":
            return 503, "service unavailable" if kind == "slack" else {"status": "unavailable"}, {}
        if mode == "429":
            if kind == "pagerduty":
                return (
                    429,
                    {"status": "throttle event", "message": "Requests for this service are throttled"},
                    {"Retry-After": "1"},
                )
            return 429, "rate_limited" if kind == "slack" else {"status": "rate limited"}, {"Retry-After": "1"}
        if kind == "slack":
            return (400, "invalid_payload", {}) if errors else (200, "ok", {})
        if kind == "pagerduty":
            if errors:
                return 400, {"status": "invalid event", "message": "Event object is invalid", "errors": errors}, {}
            dedup_key = body.get("dedup_key") or uuid.uuid4().hex
            return 202, {"status": "success", "message": "Event processed", "dedup_key": dedup_key}, {}
        return (400, {"ok": False, "errors": errors}, {}) if errors else (200, {"ok": True}, {})

    def _record(self, record: Received) -> None:
        with self._lock:
            self._records.append(record)
            if self._log_path is not None:
                with self._log_path.open("a") as fh:
                    fh.write(json.dumps(record.to_dict()) + "\n")


def _validate_webhook(body: Any) -> list[str]:
    return [] if isinstance(body, dict) else ["body must be a JSON object"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.receiver", description="Local Slack/PagerDuty/webhook stand-in."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log", default=None, help="append every received request to this JSONL file")
    args = parser.parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    receiver = Receiver(args.host, args.port, args.log).start()
    print(receiver.url, flush=True)
    try:
        while not stop.wait(1.0):  # a timed wait so the signal handler runs promptly on every platform
            pass
    finally:
        receiver.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
