"""The agent's directive whitelist: what it runs, what it refuses, and that it runs each id once."""

from __future__ import annotations

from pathlib import Path

from agent.directives import DirectiveRunner, set_replicaof
from protocol.directives import parse_directive


class FakeServices:
    def __init__(self) -> None:
        self.restarted: list[str] = []

    def start(self, service: str) -> None: ...
    def stop(self, service: str) -> None: ...
    def running(self, service: str) -> bool:
        return True

    def restart(self, service: str) -> None:
        self.restarted.append(service)


def test_only_whitelisted_directives_run_once_and_are_acknowledged(tmp_path: Path) -> None:
    conf = tmp_path / "redis.conf"
    conf.write_text("port 6379\nreplicaof 10.0.0.1 6379\n")
    services = FakeServices()
    runner = DirectiveRunner(services, conf, clock=lambda: 5.0)
    runner.run([
        {"id": "a", "kind": "restart_service", "service": "redis", "replicaof": "10.0.0.9:6379"},
        {"id": "a", "kind": "restart_service", "service": "redis"},  # a retried response: not twice
        {"id": "b", "kind": "shell", "command": "rm -rf /"},
        {"id": "c", "kind": "restart_service", "service": "sshd"},
        {"id": "d", "kind": "restart_service", "service": "sentinel", "replicaof": "10.0.0.9:6379"},
        {"id": "e", "kind": "restart_service", "service": "redis", "replicaof": "evil; rm -rf /:1"},
        "not a directive",
    ])
    assert services.restarted == ["redis"]
    assert conf.read_text() == "port 6379\nreplicaof 10.0.0.9 6379\n"
    acks = {a.id: a for a in runner.acks()}
    assert acks["a"].ok and not acks["b"].ok and not acks["c"].ok and not acks["d"].ok and not acks["e"].ok
    assert "whitelist" in (acks["b"].error or "")
    runner.delivered(runner.acks())
    assert runner.acks() == ()


def test_parse_directive_refuses_missing_ids() -> None:
    ack = parse_directive({"kind": "restart_service", "service": "redis"}, 0.0)
    assert not getattr(ack, "ok", True)


def test_set_replicaof_keeps_one_line(tmp_path: Path) -> None:
    conf = tmp_path / "redis.conf"
    conf.write_text("bind 1.2.3.4\nslaveof 1.1.1.1 6379\n")
    set_replicaof(conf, "2.2.2.2:6380")
    assert conf.read_text().splitlines() == ["bind 1.2.3.4", "replicaof 2.2.2.2 6380"]
