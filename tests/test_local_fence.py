"""The agent's local fence rule (`agent.fence`), pure: when a master is alone, and for how long, before it
pauses its own writes; and that it never fences without peers to lose, or while one still answers."""

from __future__ import annotations

import dataclasses

from agent.fence import LocalFence, silence_ms
from protocol.report import ConnectedReplica, RedisHealth, SentinelHealth, SentinelMasterView, SentinelPeer

NAME = "mymaster"
DOWN_AFTER = 5000


def _redis(*lags: int, role: str = "master", min_replicas: int = 1) -> RedisHealth:
    return RedisHealth(reachable=True, role=role, min_replicas_to_write=min_replicas,
                       connected_replicas=tuple(ConnectedReplica(f"10.0.0.{i + 2}:6379", "online", 100, lag)
                                                for i, lag in enumerate(lags)))


def _peer(ping_ms: int | None, *flags: str) -> SentinelPeer:
    return SentinelPeer("10.0.0.9:26379", flags=("sentinel", *flags), last_ok_ping_ms=ping_ms)


def _sentinel(*peers: SentinelPeer, replicas: int = 1) -> SentinelHealth:
    view = SentinelMasterView(NAME, "10.0.0.1:6379", down_after_ms=DOWN_AFTER, sentinels=peers,
                              replicas=tuple(SentinelPeer(f"10.0.0.{i + 2}:6379") for i in range(replicas)))
    return SentinelHealth(reachable=True, masters=(view,))


def test_not_alone_while_a_replica_acks_or_a_peer_sentinel_answers() -> None:
    assert silence_ms(_redis(0), _sentinel(_peer(9000, "s_down")), NAME) is None  # the replica acks
    assert silence_ms(_redis(), _sentinel(_peer(300)), NAME) is None  # the peer Sentinel answers
    assert silence_ms(_redis(7), _sentinel(_peer(9000, "s_down"), _peer(200)), NAME) is None  # one of two


def test_alone_since_the_freshest_answer() -> None:
    assert silence_ms(_redis(7, 4), _sentinel(_peer(6500, "s_down")), NAME) == 4000
    assert silence_ms(_redis(7), _sentinel(_peer(3500)), NAME) == 3500  # stale ping, no flag yet
    assert silence_ms(_redis(), _sentinel(_peer(9000, "s_down")), NAME) == 0  # the replica is gone: since now
    assert silence_ms(_redis(9), _sentinel(_peer(100, "disconnected")), NAME) == 100


def test_never_without_peers_to_lose_or_where_it_would_not_refuse_writes() -> None:
    alone = _sentinel(_peer(9000, "s_down"))
    assert silence_ms(_redis(), _sentinel(), NAME) is None  # no other Sentinel known
    assert silence_ms(_redis(), _sentinel(_peer(9000, "s_down"), replicas=0), NAME) is None  # no replica known
    assert silence_ms(_redis(), alone, "other") is None  # its Sentinel does not monitor this master
    assert silence_ms(_redis(role="replica"), alone, NAME) is None
    assert silence_ms(_redis(min_replicas=0), alone, NAME) is None  # Redis itself would write on alone
    assert silence_ms(RedisHealth(reachable=False), alone, NAME) is None
    assert silence_ms(_redis(), SentinelHealth(reachable=False), NAME) is None
    assert silence_ms(_redis(), dataclasses.replace(alone, masters=()), NAME) is None


def test_fences_only_once_alone_for_down_after_then_renews_and_ends() -> None:
    fence = LocalFence(DOWN_AFTER)
    assert fence.step(None, 100.0).action == "none"
    assert fence.step(0, 101.0).action == "none"  # alone from now (a replica gone)
    assert fence.step(0, 104.0).action == "none"  # 3 s: not yet
    assert fence.step(0, 105.9).action == "none"
    step = fence.step(0, 106.0)  # 5 s since 101
    assert (step.action, step.alone_ms, fence.fenced) == ("start", 5000, True)
    assert fence.step(0, 107.0).action == "renew"
    assert fence.step(None, 108.0).action == "end"  # a replica acks again
    assert not fence.fenced
    assert fence.step(None, 109.0).action == "none"
    assert fence.step(0, 110.0).action == "none"  # alone again: the hold starts over


def test_the_evidence_dates_the_start_and_a_break_resets_it() -> None:
    fence = LocalFence(DOWN_AFTER)
    assert fence.step(3000, 200.0).action == "none"  # alone since 197
    assert fence.step(None, 201.0).action == "none"  # an answer: reset
    assert fence.step(3000, 202.0).action == "none"  # since 199
    assert fence.step(6000, 203.0).action == "start"  # the lag shows it since 197


def test_the_sentinels_own_down_after_wins_over_the_configured_one() -> None:
    fence = LocalFence(DOWN_AFTER)
    assert fence.step(0, 0.0, down_after_ms=10000).action == "none"
    assert fence.step(0, 6.0, down_after_ms=10000).action == "none"
    assert fence.step(0, 10.0, down_after_ms=10000).action == "start"


def test_a_failed_start_is_started_again() -> None:
    fence = LocalFence(DOWN_AFTER)
    fence.step(0, 0.0)
    assert fence.step(0, 5.0).action == "start"
    fence.start_failed()
    assert fence.step(0, 6.0).action == "start"
