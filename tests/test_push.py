"""Unit tests of the agent's pusher against a real local HTTP(S) server: signing, backoff with jitter,
keep-alive, and HTTPS verified against the controller's CA alone."""

from __future__ import annotations

import http.server
import json
import random
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import AgentConfig, ssl_context
from agent.push import Pusher
from controller.adapters.tls import ensure_tls
from protocol.signing import HEADER_NODE, HEADER_SIGNATURE, HEADER_TIMESTAMP, sign_report, verify_report
from tests.helpers import wait_until


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200
    seen: list[tuple[str, str, bytes]] = []
    nodes: list[str] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append((self.headers[HEADER_TIMESTAMP], self.headers[HEADER_SIGNATURE], body))
        self.nodes.append(self.headers[HEADER_NODE])
        payload = json.dumps({"accepted": True, "directives": []}).encode()
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("H", (_Handler,), {"seen": [], "nodes": [], "status": 200})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_push_is_signed_over_timestamp_and_body(server: tuple[str, type[_Handler]]) -> None:
    url, handler = server
    pusher = Pusher(url, "shop", "redis-1", b"k", timeout_s=2, max_backoff_s=10, clock=lambda: 1000.0)
    result = pusher.push(b'{"x":1}')
    assert result.ok and result.body == {"accepted": True, "directives": []}
    ts, sig, body = handler.seen[0]
    assert ts == "1000.000000" and body == b'{"x":1}' and sig == sign_report(b"k", ts, "shop", "redis-1", body)
    assert handler.nodes == ["redis-1"]
    assert verify_report(b"k", ts, "shop", "redis-1", body, sig, now=1000.0) is None
    pusher.push(b'{"x":1}')  # the same clock reading: the timestamp still moves on (the controller refuses replays)
    assert float(handler.seen[1][0]) > float(ts)


def test_backoff_grows_with_jitter_and_resets(server: tuple[str, type[_Handler]]) -> None:
    url, handler = server
    handler.status = 503
    now = [1000.0]
    pusher = Pusher(url, "shop", "redis-1", b"k", timeout_s=2, max_backoff_s=8, clock=lambda: now[0],
                    rng=random.Random(7))
    waits = []
    for _ in range(8):
        result = pusher.push(b"{}")
        assert not result.ok and result.status == 503 and "HTTP 503" in (result.error or "")
        waits.append(pusher.next_attempt_at - now[0])
        assert not pusher.due(now[0] - 0.001) or waits[-1] == 0
    assert all(0 <= w <= 8 for w in waits)
    assert max(waits[4:]) > max(waits[:1])  # the ceiling grows
    handler.status = 200
    assert pusher.push(b"{}").ok
    assert pusher.due(now[0])


def test_unreachable_controller_is_a_result_not_an_exception() -> None:
    pusher = Pusher("http://127.0.0.1:9", "shop", "redis-1", b"k", timeout_s=0.5, max_backoff_s=1)
    result = pusher.push(b"{}")
    assert not result.ok and result.status is None
    assert "controller unreachable" in (result.error or "")


class _KeepAliveHandler(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive; with `drop_after_reply` it closes each connection after answering without
    saying so (as a server whose idle timeout expired between two pushes does)."""

    protocol_version = "HTTP/1.1"
    drop_after_reply = False
    peers: list[int] = []
    closed: list[int] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.peers.append(self.client_address[1])
        payload = b'{"accepted": true, "directives": []}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()
        if self.drop_after_reply:
            self.close_connection = True

    def finish(self) -> None:
        super().finish()
        if self.close_connection:
            self.closed.append(self.client_address[1])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(params=[False, True], ids=["kept-alive", "dropped-between-pushes"])
def keepalive_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, type[_KeepAliveHandler]]]:
    handler = type("K", (_KeepAliveHandler,), {"peers": [], "closed": [], "drop_after_reply": request.param})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_pushes_keep_one_connection_and_survive_its_loss(
        keepalive_server: tuple[str, type[_KeepAliveHandler]]) -> None:
    url, handler = keepalive_server
    pusher = Pusher(url, "shop", "redis-1", b"k", timeout_s=2, max_backoff_s=10)
    try:
        for n in range(1, 4):
            assert pusher.push(b"{}").ok
            if handler.drop_after_reply:
                wait_until(lambda n=n: len(handler.closed) == n, 10, "the server to close the connection")
        assert len(handler.peers) == 3  # each push reached the server exactly once
        if handler.drop_after_reply:
            assert len(set(handler.peers)) == 3  # a fresh connection after each loss
        else:
            assert len(set(handler.peers)) == 1  # one keep-alive connection for all
    finally:
        pusher.close()


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[str, type[_Handler]]]:
    """The controller's side: a server certificate for 127.0.0.1 signed by a CA of its own (tmp_path/ca)."""
    tls = ensure_tls(tmp_path / "ca", ["127.0.0.1"])
    handler = type("S", (_Handler,), {"seen": [], "nodes": [], "status": 200})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.cert_path, tls.key_path)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def _verifying(url: str, ca_file: Path) -> ssl.SSLContext:
    context = ssl_context(AgentConfig(cluster="shop", node="redis-1", address="127.0.0.1", controller_url=url,
                                      controller_ca_file=str(ca_file)))
    assert context is not None
    return context


def test_https_is_verified_against_the_controllers_ca_and_no_other(
        https_server: tuple[str, type[_Handler]], tmp_path: Path) -> None:
    url, handler = https_server
    pinned = _verifying(url, tmp_path / "ca" / "ca.pem")
    pusher = Pusher(url, "shop", "redis-1", b"k", timeout_s=2, max_backoff_s=1, ssl_context=pinned)
    try:
        assert pusher.push(b"{}").ok and len(handler.seen) == 1
    finally:
        pusher.close()
    # requests' own CA bundle (certifi) was not added to the context: it trusts the one CA it was given
    assert len(pinned.get_ca_certs()) == 1

    other = _verifying(url, ensure_tls(tmp_path / "other", ["127.0.0.1"]).ca_path)
    stranger = Pusher(url, "shop", "redis-1", b"k", timeout_s=2, max_backoff_s=1, ssl_context=other)
    try:
        result = stranger.push(b"{}")
    finally:
        stranger.close()
    assert not result.ok and result.status is None
    assert result.error == "SSLError: controller unreachable"
    assert len(handler.seen) == 1  # nothing reached the server's handler
