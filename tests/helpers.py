"""Test helpers: wait for a condition with a deadline (never a fixed sleep), a free loopback port, and a
stand-in for the controller's report endpoint, and a fixture's teardown of the processes it started."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

T = TypeVar("T")


def wait_until(probe: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 0.1) -> T:
    """Call `probe` until it returns something truthy; fail with `what` and the last value at the deadline."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while True:
        try:
            last = probe()
        except Exception as e:  # a probe may race a restarting process
            last = None
            error: Exception | None = e
        else:
            error = None
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:.1f} s waiting for {what} (last: {last!r}, {error!r})")
        time.sleep(interval_s)


def kill_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """Kill every process still running and reap them all (a fixture's `finally`)."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ReportSink:
    """A stand-in for the controller's POST /v1/reports over plain HTTP on loopback: keeps every report
    body it is given and answers as the controller does, with no directive."""

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []
        reports = self.reports

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                reports.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                answer = b'{"accepted": true, "directives": []}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
