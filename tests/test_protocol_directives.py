"""Directives are typed, signed for one node, and refused when anything about them is off (issue #10)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.directives import (
    RestartServiceDirective,
    parse_directive,
    signed_wire,
    split_address,
    valid_address,
)
from protocol.report import DirectiveAck

KEY = b"k" * 32
OTHER = b"o" * 32
NOW = 1_000.0


def wire(**changes: object) -> dict[str, object]:
    d = RestartServiceDirective("d-1", "redis-2", "redis", "10.0.0.3:6379", expires_at=NOW + 60)
    out = signed_wire(d, KEY)
    out.update(changes)
    return out


def test_a_signed_directive_for_this_node_parses_back_to_its_type() -> None:
    parsed = parse_directive(wire(), NOW, "redis-2", KEY)
    assert parsed == RestartServiceDirective("d-1", "redis-2", "redis", "10.0.0.3:6379", NOW + 60)


@pytest.mark.parametrize(("raw", "node", "key", "now", "why"), [
    (wire(), "redis-2", OTHER, NOW, "signature"),  # not this node's controller
    (wire(service="sentinel"), "redis-2", KEY, NOW, "signature"),  # changed after signing
    (wire(), "redis-3", KEY, NOW, "another node"),  # signed for another node
    (wire(), "redis-2", KEY, NOW + 61, "expired"),
    ({**wire(), "extra": 1}, "redis-2", KEY, NOW, "unknown field"),
    ({"kind": "restart_service"}, "redis-2", KEY, NOW, "id"),
    ("not a dict", "redis-2", KEY, NOW, "object"),
])
def test_refusals(raw: object, node: str, key: bytes, now: float, why: str) -> None:
    parsed = parse_directive(raw, now, node, key)
    assert isinstance(parsed, DirectiveAck) and not parsed.ok and why in (parsed.error or "")


def test_a_signed_directive_outside_the_whitelist_is_still_refused() -> None:
    for bad in (RestartServiceDirective("d-2", "redis-2", "agent", None, NOW + 60),
                RestartServiceDirective("d-3", "redis-2", "sentinel", "10.0.0.3:6379", NOW + 60)):
        parsed = parse_directive(signed_wire(bad, KEY), NOW, "redis-2", KEY)
        assert isinstance(parsed, DirectiveAck) and not parsed.ok


@pytest.mark.parametrize("address", [
    "fe80::1%x 6379\nrequirepass attacker\nenable-module-command yes",  # the injection that was reproduced
    "fe80::1%eth0:6379", "[::1]:6379", "10.0.0.1:0", "10.0.0.1:65536", "10.0.0.1:63\u0667\u0669",  # Arabic digits
    "10.0.0.1: 6379", "host.example:6379", "10.0.0.1", ":6379", "10.0.0.1:6379\n",
])
def test_addresses_are_ip_literals_without_scope_and_a_port(address: str) -> None:
    assert not valid_address(address)
    signed = signed_wire(RestartServiceDirective("d-4", "redis-2", "redis", address, NOW + 60), KEY)
    assert isinstance(parse_directive(signed, NOW, "redis-2", KEY), DirectiveAck)


def test_good_addresses() -> None:
    assert split_address("10.0.0.3:6379") == ("10.0.0.3", 6379)
    assert split_address("::1:26379") == ("::1", 26379)


@given(st.text(max_size=80))
def test_no_text_with_whitespace_or_a_percent_sign_is_an_address(text: str) -> None:
    if valid_address(text):
        host, port = split_address(text)  # type: ignore[misc]
        assert not any(c.isspace() or c == "%" for c in text)
        assert 0 < port < 65536 and f"{host}:{port}" == text
