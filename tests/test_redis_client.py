"""The agent's redis-py client (`agent.redis_client`) against a real redis-server, and against a server that
never answers.

Layer: tests of an adapter. A module-scoped redis-server with a password on 127.0.0.1 (a free port) checks
that replies come back raw (what agent.parse reads), that the handshake is AUTH alone (no HELLO, no CLIENT
SETINFO, no health-check PING), that a connection the server closed while idle, and a whole restart of the
server between two reads, cost no failed read, and that no error text carries the password, even when
Redis quotes it back. A listening socket that accepts and never answers stands for a hung server: one
collection costs one timeout and one connection (no retry). Every process and thread is stopped in teardown.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from redis.exceptions import RedisError, ResponseError

from agent.collect_redis import collect_redis, collect_sentinel
from agent.parse import parse_info
from agent.redis_client import command, error_text, pipeline, raw_client, username_of
from agent.urgent import read_signal
from tests.helpers import free_port, kill_all, wait_until

if shutil.which("redis-server") is None:
    pytest.skip("redis-server is not on PATH: these tests need a real Redis", allow_module_level=True)

HOST = "127.0.0.1"
PASSWORD = "rc-test-pw-0d7e41"
TIMEOUT_S = 2.0


@dataclass
class Server:
    port: int
    workdir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, *extra: str) -> None:
        self.procs.append(subprocess.Popen(
            ["redis-server", "--bind", HOST, "--port", str(self.port), "--dir", str(self.workdir), "--save", "",
             "--appendonly", "no", "--requirepass", PASSWORD, *extra], stdout=subprocess.DEVNULL))
        admin = raw_client(HOST, self.port, PASSWORD, TIMEOUT_S)
        try:
            wait_until(lambda: command(admin, "PING") == "PONG", 10, "redis-server to answer")
        finally:
            admin.close()

    def stop(self) -> None:
        proc = self.procs[-1]
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(free_port(), tmp_path_factory.mktemp("redis-client"))
    try:
        s.start()
        yield s
    finally:
        kill_all(s.procs)


def _commandstats(port: int) -> dict[str, int]:
    admin = raw_client(HOST, port, PASSWORD, TIMEOUT_S)
    try:
        info = parse_info(str(command(admin, "INFO", "commandstats")))
    finally:
        admin.close()
    return {k.removeprefix("cmdstat_"): int(v.split("calls=")[1].split(",")[0]) for k, v in info.items()}


def test_replies_come_back_as_the_server_sent_them(server: Server) -> None:
    client = raw_client(HOST, server.port, PASSWORD, TIMEOUT_S)
    try:
        assert command(client, "PING") == "PONG"  # redis-py's own callback would say True
        assert command(client, "CONFIG", "GET", "maxmemory-policy") == ["maxmemory-policy", "noeviction"]
        info = command(client, "INFO")
        assert isinstance(info, str) and "# Replication\r\n" in info  # one text, not redis-py's dict
        assert isinstance(command(client, "DBSIZE"), int)
        assert command(client, "GET", "no-such-key-3a9f") is None  # nil bulk
        assert command(client, "EVAL", "return '\\255ok'", "0") == "\ufffdok"  # an undecodable byte is replaced
        assert command(client, "ROLE")[:1] == ["master"]  # type: ignore[index]
        with pytest.raises(ResponseError):
            command(client, "NO-SUCH-COMMAND")
        assert command(client, "PING") == "PONG"  # an error reply leaves the connection usable
        replies = pipeline(client, [("PING",), ("NO-SUCH-COMMAND",), ("CONFIG", "GET", "maxmemory-policy")])
        assert replies[0] == "PONG"
        assert isinstance(replies[1], ResponseError)
        assert replies[2] == ["maxmemory-policy", "noeviction"]
        assert username_of(client) == "default"
        assert username_of(raw_client(HOST, server.port, None)) is None
    finally:
        client.close()


def test_the_handshake_is_auth_alone(server: Server) -> None:
    """RESP2 with no HELLO, no CLIENT SETINFO, no health-check PING: one AUTH, then the commands sent."""
    admin = raw_client(HOST, server.port, PASSWORD, TIMEOUT_S)
    client = raw_client(HOST, server.port, PASSWORD, TIMEOUT_S)
    try:
        command(admin, "CONFIG", "RESETSTAT")
        for _ in range(3):
            assert command(client, "PING") == "PONG"
        stats = _commandstats(server.port)  # its own connection's AUTH counts too: 2
        assert stats.get("auth") == 2 and stats.get("ping") == 3
        assert "hello" not in stats and not any(name.startswith("client|") for name in stats)
        # a Redis < 7.2 refuses CLIENT SETINFO, so it would be counted as an error reply instead
        assert parse_info(str(command(admin, "INFO", "stats")))["total_error_replies"] == "0"
    finally:
        admin.close()
        client.close()


def test_a_connection_the_server_closed_while_idle_is_replaced(server: Server) -> None:
    admin = raw_client(HOST, server.port, PASSWORD, TIMEOUT_S)
    client = raw_client(HOST, server.port, PASSWORD, TIMEOUT_S)
    try:
        client_id = command(client, "CLIENT", "ID")
        assert command(admin, "CLIENT", "KILL", "ID", str(client_id)) == 1
        wait_until(lambda: f"id={client_id} " not in str(command(admin, "CLIENT", "LIST")), 10,
                   "the server to drop the killed connection")
        assert command(client, "PING") == "PONG"
        assert command(client, "CLIENT", "ID") != client_id
    finally:
        admin.close()
        client.close()


def test_a_redis_restarted_between_two_collections_costs_no_failed_one(tmp_path: Path) -> None:
    """The agent's client keeps its connection between cycles; the restarted server closed it. The pool sees
    that when the next cycle checks the connection out and opens a new one: that cycle succeeds."""
    s = Server(free_port(), tmp_path)
    client = raw_client(HOST, s.port, PASSWORD, TIMEOUT_S)
    try:
        s.start()
        first = collect_redis(client)
        assert first.reachable, first.error
        s.stop()
        s.start()  # answering again (its own fresh client said PONG)
        second = collect_redis(client)
        assert second.reachable, second.error
        assert _commandstats(s.port).get("info", 0) == 1  # the collection ran on the new server, once
    finally:
        client.close()
        kill_all(s.procs)


def test_no_error_text_carries_the_password(server: Server, tmp_path: Path) -> None:
    """A refused AUTH, a closed port, and a Redis that quotes the password back (AUTH renamed away: "unknown
    command 'AUTH', with args beginning with: '<password>'")."""
    wrong = collect_redis(raw_client(HOST, server.port, "wrong-pw-6b2c", TIMEOUT_S))
    assert wrong.error is not None and wrong.error.startswith("AuthenticationError: ")
    # the reply's code in front, as Redis sent it, where redis-py (>= 8) keeps it
    assert "invalid username-password pair" in wrong.error
    assert "WRONGPASS invalid" in wrong.error or not hasattr(RedisError(), "status_code")
    assert "wrong-pw-6b2c" not in wrong.error
    closed = collect_redis(raw_client(HOST, free_port(), PASSWORD, TIMEOUT_S))
    assert closed.error is not None and closed.error.startswith("ConnectionError: Error 111 connecting to")
    assert PASSWORD not in closed.error

    quoting = Server(free_port(), tmp_path)
    try:
        quoting.procs.append(subprocess.Popen(
            ["redis-server", "--bind", HOST, "--port", str(quoting.port), "--dir", str(tmp_path), "--save", "",
             "--rename-command", "AUTH", ""], stdout=subprocess.DEVNULL))
        anonymous = raw_client(HOST, quoting.port, None, TIMEOUT_S)
        wait_until(lambda: command(anonymous, "PING") == "PONG", 10, "redis-server to answer")
        anonymous.close()
        client = raw_client(HOST, quoting.port, PASSWORD, TIMEOUT_S)
        health = collect_redis(client)
        assert health.error is not None and health.error.startswith("ResponseError: ")
        assert "unknown command 'AUTH', with args beginning with: '<redacted>'" in health.error
        assert PASSWORD not in health.error
        with pytest.raises(ResponseError) as raised:
            command(client, "PING")
        assert PASSWORD in str(raised.value)  # what redis-py raises does quote it: the texts above are scrubbed
        assert PASSWORD not in error_text(raised.value, client)
    finally:
        kill_all(quoting.procs)


class Silent:
    """A listening socket that accepts connections, reads what is sent and never answers: a hung server."""

    def __init__(self) -> None:
        self._sock = socket.create_server((HOST, 0))
        self.port: int = self._sock.getsockname()[1]
        self.connections = 0
        self.received = b""
        self._markers = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        self._sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
            reader = threading.Thread(target=self._read, args=(conn,), daemon=True)
            self._threads.append(reader)
            reader.start()

    def _read(self, conn: socket.socket) -> None:
        conn.settimeout(0.1)
        with conn:
            while not self._stop.is_set():
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                with self._lock:
                    self.received += data

    def settled(self) -> int:
        """The connections made so far: a marker connection is accepted after every one queued before it."""
        with self._lock:
            self._markers += 1
            marker = f"MARK{self._markers}".encode()
        with socket.create_connection((HOST, self.port), timeout=5) as conn:
            conn.sendall(marker)
            wait_until(lambda: marker in self.received, 10, "the listener to accept the marker connection")
        with self._lock:
            return self.connections - self._markers

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        for t in self._threads:
            t.join(timeout=5)


@pytest.fixture
def silent() -> Iterator[Silent]:
    s = Silent()
    try:
        yield s
    finally:
        s.close()


def test_a_hung_server_costs_one_timeout_and_one_connection(silent: Silent) -> None:
    health = collect_redis(raw_client(HOST, silent.port, PASSWORD, 0.3))
    assert health.reachable is False
    assert health.error is not None and health.error.startswith("TimeoutError: Timeout reading from")
    assert PASSWORD not in health.error
    assert silent.settled() == 1  # redis-py >= 6 would have retried 3 times, on new connections
    assert silent.received.count(b"AUTH") == 1 and b"PING" not in silent.received  # AUTH timed out, nothing after


def test_a_hung_sentinel_and_the_urgent_probe_cost_one_timeout_each(silent: Silent) -> None:
    health = collect_sentinel(raw_client(HOST, silent.port, None, 0.3), ["mymaster"])
    assert health.reachable is False and health.error is not None and health.error.startswith("TimeoutError")
    assert silent.settled() == 1 and silent.received.count(b"PING") == 1  # no AUTH: the PING timed out, once
    redis_client, sentinel = raw_client(HOST, silent.port, None, 0.3), raw_client(HOST, silent.port, None, 0.3)
    try:
        signal = read_signal(redis_client, sentinel, "mymaster")
    finally:
        redis_client.close()
        sentinel.close()
    assert (signal.role, signal.master) == (None, None)
    assert silent.settled() == 3  # one more for each client's one command
