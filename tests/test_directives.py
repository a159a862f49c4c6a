"""The agent's directive runner: it runs only signed, whitelisted directives for its node, each once; a
`replicaof` goes through Redis itself, and never to the master a Sentinel majority names."""

from __future__ import annotations

from agent.directives import DirectiveRunner
from agent.services import ServiceError
from protocol.directives import RestartServiceDirective, signed_wire

KEY = b"n" * 32
NOW = 5.0


class FakeServices:
    def __init__(self, events: list[str] | None = None) -> None:
        self.restarted: list[str] = []
        self.events = events if events is not None else []

    def start(self, service: str) -> None: ...
    def stop(self, service: str) -> None: ...
    def running(self, service: str) -> bool:
        return True

    def restart(self, service: str) -> None:
        self.restarted.append(service)
        self.events.append(f"restart {service}")


class FakeRedis:
    def __init__(self, ready: bool = True, answering: bool = True, events: list[str] | None = None,
                 rewrite_fails: int = 0, settles: bool = True) -> None:
        self.ready = ready
        self.settles = settles
        self.answering = answering
        self.rewrite_fails = rewrite_fails
        self.replicaof_calls: list[tuple[str, int]] = []
        self.events = events if events is not None else []

    def answers(self) -> bool:
        return self.answering

    def wait_ready(self, timeout_s: float) -> None:
        if not self.ready:
            raise ServiceError("redis-server did not answer PING")
        self.events.append("ready")

    def replicaof(self, host: str, port: int) -> None:
        self.replicaof_calls.append((host, port))
        self.events.append(f"replicaof {host} {port}")
        if self.rewrite_fails:
            self.rewrite_fails -= 1
            raise ServiceError("CONFIG REWRITE failed: ERR Rewriting config file: Read-only file system")

    def wait_settled(self, timeout_s: float) -> str | None:
        self.events.append("settled" if self.settles else "unsettled")
        return None if self.settles else "aof_rewrite_in_progress is 1"


def signed(ident: str, service: str = "redis", replicaof: str | None = None, node: str = "redis-2",
           key: bytes = KEY) -> dict[str, object]:
    return signed_wire(RestartServiceDirective(ident, node, service, replicaof, expires_at=NOW + 60), key)


def test_only_signed_whitelisted_directives_for_this_node_run_once_and_are_acknowledged() -> None:
    services, redis = FakeServices(), FakeRedis()
    runner = DirectiveRunner(services, "redis-2", KEY, redis=redis, clock=lambda: NOW)
    runner.run([
        signed("a", replicaof="10.0.0.9:6379"),
        signed("a"),  # a retried response: not twice
        {"id": "b", "kind": "shell", "command": "rm -rf /"},
        signed("c", service="sshd"),
        signed("d", service="sentinel", replicaof="10.0.0.9:6379"),
        signed("e", replicaof="evil; rm -rf /:1"),
        signed("f", node="redis-3"),  # for another node
        signed("g", key=b"x" * 32),  # not signed with this node's key
        {**signed("h"), "service": "sentinel"},  # changed after signing
        "not a directive",
    ])
    assert services.restarted == ["redis"]
    assert redis.replicaof_calls == [("10.0.0.9", 6379)]  # through Redis (REPLICAOF + CONFIG REWRITE)
    acks = {a.id: a for a in runner.acks()}
    assert acks["a"].ok
    assert all(not acks[i].ok for i in "bcdefgh")
    assert "whitelist" in (acks["c"].error or "") and "signature" in (acks["g"].error or "")
    runner.delivered(runner.acks())
    assert runner.acks() == ()


def test_replicaof_is_refused_on_the_master_a_sentinel_majority_names() -> None:
    services, redis = FakeServices(), FakeRedis()
    runner = DirectiveRunner(services, "redis-2", KEY, redis=redis, confirmed_master=lambda: True, clock=lambda: NOW)
    runner.run([signed("a", replicaof="10.0.0.9:6379"), signed("b")])
    acks = {a.id: a for a in runner.acks()}
    assert not acks["a"].ok and "majority" in (acks["a"].error or "")
    assert acks["b"].ok  # a plain restart is still allowed
    assert services.restarted == ["redis"] and redis.replicaof_calls == []


def test_a_redis_that_does_not_come_back_fails_the_directive() -> None:
    runner = DirectiveRunner(FakeServices(), "redis-2", KEY, redis=FakeRedis(ready=False), clock=lambda: NOW)
    runner.run([signed("a", replicaof="10.0.0.9:6379")])
    (ack,) = runner.acks()
    assert not ack.ok and "PING" in (ack.error or "")


def test_a_redis_that_answers_is_made_a_replica_before_its_restart() -> None:
    events: list[str] = []
    runner = DirectiveRunner(FakeServices(events), "redis-2", KEY, redis=FakeRedis(events=events), clock=lambda: NOW)
    runner.run([signed("a", replicaof="10.0.0.9:6379")])
    (ack,) = runner.acks()
    assert ack.ok
    # it restarts from a rewritten file, once the new link is up and no AOF rewrite would refuse the SIGTERM
    assert events == ["replicaof 10.0.0.9 6379", "settled", "restart redis", "ready"]


def test_a_replica_that_does_not_settle_is_not_restarted() -> None:
    events: list[str] = []
    runner = DirectiveRunner(FakeServices(events), "redis-2", KEY, redis=FakeRedis(events=events, settles=False),
                             clock=lambda: NOW)
    runner.run([signed("a", replicaof="10.0.0.9:6379")])
    (ack,) = runner.acks()
    assert not ack.ok and "not restarted" in (ack.error or "") and "aof_rewrite_in_progress" in (ack.error or "")
    assert events == ["replicaof 10.0.0.9 6379", "unsettled"]


def test_a_redis_that_is_down_is_started_then_made_a_replica() -> None:
    events: list[str] = []
    redis = FakeRedis(answering=False, events=events)
    runner = DirectiveRunner(FakeServices(events), "redis-2", KEY, redis=redis, clock=lambda: NOW)
    runner.run([signed("a", replicaof="10.0.0.9:6379")])
    (ack,) = runner.acks()
    assert ack.ok
    assert events == ["restart redis", "ready", "replicaof 10.0.0.9 6379"]


def test_a_failed_change_before_the_restart_is_tried_again_after_it() -> None:
    events: list[str] = []
    runner = DirectiveRunner(FakeServices(events), "redis-2", KEY, redis=FakeRedis(events=events, rewrite_fails=1),
                             clock=lambda: NOW)
    runner.run([signed("a", replicaof="10.0.0.9:6379")])
    assert runner.acks()[0].ok
    assert events == ["replicaof 10.0.0.9 6379", "restart redis", "ready", "replicaof 10.0.0.9 6379"]
    events.clear()
    failing = DirectiveRunner(FakeServices(events), "redis-2", KEY, redis=FakeRedis(events=events, rewrite_fails=2),
                              clock=lambda: NOW)
    failing.run([signed("b", replicaof="10.0.0.9:6379")])
    (ack,) = failing.acks()
    assert not ack.ok and "CONFIG REWRITE failed" in (ack.error or "")
    assert events.count("restart redis") == 1  # the restart itself still happened
