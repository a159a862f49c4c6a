"""The pieces of `redwarden cluster secure` that need no cluster: sealing a secret for one node, the
`set_redis_users` directive on the wire and in the agent's runner, and the plan's order."""

from __future__ import annotations

import json

from agent.directives import DirectiveRunner
from controller.core.secure import PHASES, SecureNode, plan_problem, plan_secure
from protocol.acl import ClusterUsers, NodeUsers, setuser_args
from protocol.directives import SetRedisUsersDirective, parse_directive, signed_wire
from protocol.seal import seal, unseal
from tests.test_directives import FakeServices

KEY = b"k" * 32
NONCE = bytes(range(16))
USERS, _APP, _DISCOVERY = ClusterUsers.generate(iter(f"secret-{i:02d}-xxxxxxxx" for i in range(10)).__next__)


def test_a_sealed_secret_opens_only_with_the_node_key_and_does_not_show_in_the_wire() -> None:
    text = USERS.node_users().to_json()
    sealed = seal(KEY, NONCE, text)
    assert unseal(KEY, sealed) == text
    assert USERS.monitor not in sealed and USERS.replication not in sealed
    assert unseal(b"x" * 32, sealed) != text
    assert unseal(KEY, "not base64 !") is None
    assert seal(KEY, bytes(16), text) != seal(KEY, NONCE, text)  # the nonce changes everything


def test_set_redis_users_is_verified_then_handed_to_the_agent_once() -> None:
    seen: list[NodeUsers] = []
    runner = DirectiveRunner(FakeServices(), "redis-2", KEY, clock=lambda: 5.0, set_users=seen.append)
    directive = SetRedisUsersDirective("d1", "redis-2", seal(KEY, NONCE, USERS.node_users().to_json()), 60.0)
    wire = signed_wire(directive, KEY)
    assert "monitor" not in repr(directive) and USERS.monitor not in json.dumps(wire)
    runner.run([wire, wire])
    assert seen == [USERS.node_users()]
    (ack,) = runner.acks()
    assert ack.ok and ack.kind == "set_redis_users"

    tampered = dict(wire, users_sealed=seal(KEY, bytes(16), USERS.node_users().to_json()))
    refused = parse_directive(tampered, 5.0, "redis-2", KEY)  # the signature covers the sealed value
    assert not isinstance(refused, SetRedisUsersDirective) and "signature" in str(refused.error)


def test_users_sealed_with_another_key_fail_the_directive_without_a_secret_in_the_ack() -> None:
    other = b"o" * 32
    runner = DirectiveRunner(FakeServices(), "redis-2", KEY, clock=lambda: 5.0, set_users=lambda u: None)
    sealed = seal(other, NONCE, USERS.node_users().to_json())
    runner.run([signed_wire(SetRedisUsersDirective("d2", "redis-2", sealed, 60.0), KEY)])
    (ack,) = runner.acks()
    assert not ack.ok and "node's key" in str(ack.error) and sealed not in str(ack.error)


def test_the_plan_goes_phase_by_phase_replicas_before_the_master() -> None:
    nodes = (SecureNode("redis-1", "10.0.0.1:6379", "10.0.0.1:26379", True),
             SecureNode("redis-2", "10.0.0.2:6379", "10.0.0.2:26379", False),
             SecureNode("redis-3", "10.0.0.3:6379", "10.0.0.3:26379", False))
    steps = plan_secure(nodes)
    assert [s.phase for s in steps] == [p for p in PHASES for _ in nodes]
    assert [s.node for s in steps[:3]] == ["redis-2", "redis-3", "redis-1"]
    assert steps[-1].phase == "default_off" and steps[-1].is_master
    assert plan_problem(nodes, 3) is None
    assert "2 of 3" in str(plan_problem(nodes[:2], 3))
    assert "exactly one" in str(plan_problem(nodes[1:], 2))


def test_a_user_line_becomes_the_command_that_sets_exactly_it() -> None:
    assert setuser_args("user monitor on >pw resetchannels -@all +ping") == \
        ("ACL", "SETUSER", "monitor", "reset", "on", ">pw", "resetchannels", "-@all", "+ping")
