"""Unit tests of `agent.parse` over raw Redis 7.0 / Sentinel 7.0 replies recorded in tests/fixtures/redis7/.

Layer: tests of the pure core; no processes, no sockets. The fixtures come from
tests/fixtures/redis7/record.py; after re-recording, update the literals in "values of the recording".
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.parse import (
    CONFIG_KEYS,
    pairs_to_dict,
    parse_ckquorum,
    parse_info,
    redis_health_from_info,
    sentinel_info_period_ms,
    sentinel_master_view,
    sentinel_peer,
)
from protocol.report import ConnectedReplica, RedisHealth, SentinelPeer

FIXTURES = Path(__file__).parent / "fixtures" / "redis7"

# values of the recording (they change when record.py runs again)
MASTER_RUN_ID = "a53ff8f279dc5c2342cc863d98672f2b02b9f712"
REPLICA_RUN_ID = "072067947be3b7e2c579dd10db2b2b714b195880"  # 127.0.0.201
REPLICA2_RUN_ID = "5e393b3e76f76136c707f978737aef72207e05ed"  # 127.0.0.202
REPLID = "4b864bc82ea66186649fc2d00eeae665001413a3"
MASTER_REPL_OFFSET = 781
ACKED_OFFSET = 370  # what the master (slaveN: offset=) and Sentinel (slave-repl-offset) last heard
SENTINEL_201_ID = "e1138cedc3c76397d9de3f54c8b30ec3d30e113d"


def text(name: str) -> str:
    # newline="" keeps INFO's CRLF line ends as Redis sent them
    with open(FIXTURES / name, encoding="utf-8", newline="") as f:
        return f.read()


def reply(name: str) -> list[str]:
    loaded: list[str] = json.loads(text(name))
    return loaded


def replies(name: str) -> list[list[str]]:
    loaded: list[list[str]] = json.loads(text(name))
    return loaded


def config(name: str) -> dict[str, str]:
    return pairs_to_dict(reply(name))


# ---------------------------------------------------------------------------------------------------------
# parse_info


def test_parse_info_reads_key_values_and_skips_section_headers() -> None:
    info = parse_info(text("info_master.txt"))
    assert text("info_master.txt").startswith("# Server\r\n")
    assert info["redis_version"] == "7.0.15"
    assert info["role"] == "master"
    assert not any(key.startswith("#") for key in info)
    assert not any("\r" in key or "\r" in value for key, value in info.items())


def test_parse_info_splits_at_the_first_colon_only() -> None:
    info = parse_info(text("info_master.txt"))
    assert info["config_file"].startswith("/tmp/")
    assert info["config_file"].endswith("/redis-127.0.0.200/redis.conf")
    assert parse_info("a:b:c\r\nno colon here\r\n:empty key\r\nd:\r\n") == {"a": "b:c", "d": ""}


def test_parse_info_rejects_a_non_text_reply() -> None:
    with pytest.raises(ValueError, match="INFO reply must be text"):
        parse_info(b"role:master")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------
# redis_health_from_info


def test_master_health() -> None:
    health = redis_health_from_info(text("info_master.txt"), config("config_master.json"), 0.42)
    assert health.reachable is True
    assert health.error is None
    assert health.ping_ms == 0.42
    assert health.version == "7.0.15"
    assert health.role == "master"
    assert health.run_id == MASTER_RUN_ID
    assert health.replid == REPLID
    assert health.master_repl_offset == MASTER_REPL_OFFSET
    assert health.connected_replicas == (
        ConnectedReplica("127.0.0.201:6379", "online", ACKED_OFFSET, 0),
        ConnectedReplica("127.0.0.202:6379", "online", ACKED_OFFSET, 0),
    )
    assert health.master_host is None
    assert health.master_address is None
    assert health.master_link_status is None
    assert health.master_link_down_since_s is None
    assert health.replica_repl_offset is None
    assert health.min_replicas_to_write == 1
    assert health.min_replicas_max_lag_s == 10
    assert health.replica_priority == 100
    assert health.replica_read_only is True
    assert health.uptime_s == 7
    assert health.used_memory_bytes == 1328136
    assert health.maxmemory_bytes == 100 * 1024 * 1024
    assert health.maxmemory_policy == "volatile-lru"
    assert health.loading is False
    assert health.rdb_last_bgsave_ok is True
    assert health.rdb_last_save_time == 1795711740
    assert health.rdb_changes_since_last_save == 10
    assert health.aof_enabled is False
    assert health.aof_last_write_ok is True
    assert health.requirepass_set is True
    assert health.masterauth_set is True


def test_replica_health_normalises_slave_to_replica() -> None:
    health = redis_health_from_info(text("info_replica.txt"), config("config_replica.json"), None)
    assert parse_info(text("info_replica.txt"))["role"] == "slave"
    assert health.role == "replica"
    assert health.run_id == REPLICA_RUN_ID
    assert health.replid == REPLID
    assert health.master_host == "127.0.0.200"
    assert health.master_port == 6379
    assert health.master_address == "127.0.0.200:6379"
    assert health.master_link_status == "up"
    # Redis 7.0 omits master_link_down_since_seconds while the link is up
    assert "master_link_down_since_seconds" not in parse_info(text("info_replica.txt"))
    assert health.master_link_down_since_s is None
    assert health.master_last_io_s == 0
    assert health.replica_repl_offset == MASTER_REPL_OFFSET
    assert health.master_repl_offset == MASTER_REPL_OFFSET
    assert health.master_sync_in_progress is False
    assert health.connected_replicas == ()
    assert health.min_replicas_to_write == 0
    assert health.maxmemory_bytes == 0
    assert health.maxmemory_policy == "noeviction"
    assert health.requirepass_set is True
    assert health.masterauth_set is True
    assert health.ping_ms is None


def test_replica_with_its_link_down() -> None:
    health = redis_health_from_info(text("info_replica_link_down.txt"), config("config_replica.json"), 1.0)
    assert health.role == "replica"
    assert health.master_link_status == "down"
    assert health.master_link_down_since_s == 1
    assert health.master_last_io_s is None  # INFO says -1 while the link is down
    assert health.replica_repl_offset == MASTER_REPL_OFFSET


def test_link_down_since_minus_one_is_none() -> None:
    info = text("info_replica_link_down.txt").replace(
        "master_link_down_since_seconds:1\r\n", "master_link_down_since_seconds:-1\r\n"
    )
    assert "master_link_down_since_seconds:-1" in info
    assert redis_health_from_info(info, {}, None).master_link_down_since_s is None


def test_fixtures_hold_no_secret_values() -> None:
    for name in ("config_master.json", "config_replica.json"):
        values = config(name)
        assert values["requirepass"] == "<redacted>"
        assert values["masterauth"] == "<redacted>"


def test_secrets_are_reduced_to_booleans() -> None:
    secret = "s3cret-value"
    health = redis_health_from_info(text("info_master.txt"), {"requirepass": secret, "masterauth": ""}, None)
    assert health.requirepass_set is True
    assert health.masterauth_set is False
    assert secret not in repr(health)


def test_config_missing_leaves_config_fields_none() -> None:
    """CONFIG renamed: only INFO is known. Fields that INFO also reports fall back to it."""
    master = redis_health_from_info(text("info_master.txt"), {}, 0.1)
    assert master.requirepass_set is None
    assert master.masterauth_set is None
    assert master.min_replicas_to_write is None
    assert master.min_replicas_max_lag_s is None
    assert master.replica_priority is None  # a master's INFO has no slave_priority
    assert master.replica_read_only is None
    assert master.maxmemory_policy == "volatile-lru"  # from INFO's maxmemory_policy
    assert master.role == "master"

    replica = redis_health_from_info(text("info_replica.txt"), {}, 0.1)
    assert replica.replica_priority == 100  # from INFO's slave_priority
    assert replica.replica_read_only is True  # from INFO's slave_read_only


def test_config_values_win_over_info() -> None:
    health = redis_health_from_info(
        text("info_replica.txt"), {"replica-priority": "0", "replica-read-only": "no"}, None
    )
    assert health.replica_priority == 0
    assert health.replica_read_only is False


def test_malformed_values_become_none() -> None:
    info = (
        "# Replication\r\nrole:slave\r\nmaster_host:\r\nmaster_port:six\r\nmaster_link_status:up\r\n"
        "slave_repl_offset:12.5\r\nmaster_sync_in_progress:maybe\r\nuptime_in_seconds:1_000\r\n"
        "used_memory: \r\nloading:2\r\nrdb_last_bgsave_status:unknown\r\naof_enabled:yes\r\n"
        "master_last_io_seconds_ago:99999999999999999999999\r\n"
    )
    health = redis_health_from_info(
        info, {"min-replicas-to-write": "x", "replica-read-only": "perhaps", "requirepass": ""}, None
    )
    assert health.reachable is True
    assert health.role == "replica"
    assert health.master_host is None
    assert health.master_port is None
    assert health.master_address is None
    assert health.master_link_status == "up"
    assert health.replica_repl_offset is None
    assert health.master_sync_in_progress is None
    assert health.uptime_s is None
    assert health.used_memory_bytes is None
    assert health.loading is None
    assert health.rdb_last_bgsave_ok is None
    assert health.aof_enabled is None
    assert health.master_last_io_s is None
    assert health.min_replicas_to_write is None
    assert health.replica_read_only is None
    assert health.requirepass_set is False
    assert health.version is None


def test_failed_bgsave_and_aof_write_are_false() -> None:
    info = "rdb_last_bgsave_status:err\r\naof_enabled:1\r\naof_last_write_status:err\r\n"
    health = redis_health_from_info(info, {}, None)
    assert health.rdb_last_bgsave_ok is False
    assert health.aof_enabled is True
    assert health.aof_last_write_ok is False


def test_unusable_replica_lines_are_left_out_and_order_follows_n() -> None:
    info = (
        "role:master\r\n"
        "slave10:ip=10.0.0.10,port=6379,state=online,offset=5,lag=1\r\n"
        "slave2:ip=10.0.0.2,port=6379,state=wait_bgsave,offset=0,lag=0\r\n"
        "slave3:ip=10.0.0.3,port=x,state=online,offset=5,lag=0\r\n"
        "slave4:garbage\r\n"
        "slave5:ip=10.0.0.5,port=6379,offset=7,lag=2\r\n"
        "slave_repl_offset:3\r\n"
    )
    assert redis_health_from_info(info, {}, None).connected_replicas == (
        ConnectedReplica("10.0.0.2:6379", "wait_bgsave", 0, 0),
        ConnectedReplica("10.0.0.5:6379", "unknown", 7, 2),
        ConnectedReplica("10.0.0.10:6379", "online", 5, 1),
    )


def test_empty_info_is_all_unknown() -> None:
    assert redis_health_from_info("", {}, None) == RedisHealth(reachable=True)


_INFO_KEYS = (
    "role",
    "redis_version",
    "master_host",
    "master_port",
    "master_link_status",
    "master_link_down_since_seconds",
    "master_last_io_seconds_ago",
    "slave_repl_offset",
    "master_repl_offset",
    "slave0",
    "slave1",
    "loading",
    "rdb_last_bgsave_status",
    "aof_enabled",
    "used_memory",
    "slave_priority",
    "slave_read_only",
)


@settings(max_examples=300)
@given(st.text(), st.dictionaries(st.sampled_from(CONFIG_KEYS) | st.text(), st.text()))
def test_parsers_never_raise_on_arbitrary_text(info_text: str, config_values: dict[str, str]) -> None:
    assert isinstance(parse_info(info_text), dict)
    assert redis_health_from_info(info_text, config_values, None).reachable is True


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(_INFO_KEYS),
            st.text(alphabet=st.characters(blacklist_characters="\r\n"))
            | st.from_regex(r"ip=[0-9.]*,port=-?[0-9]*,state=\w*,offset=-?[0-9]*,lag=[0-9x]*", fullmatch=True),
        )
    ),
    st.sampled_from(["\r\n", "\n"]),
)
def test_parsers_never_raise_on_known_keys_with_arbitrary_values(lines: list[tuple[str, str]], newline: str) -> None:
    info_text = newline.join(f"{key}:{value}" for key, value in lines)
    health = redis_health_from_info(info_text, {}, 3.0)
    assert health.reachable is True
    raw_role = parse_info(info_text).get("role", "").strip()
    assert health.role == ("replica" if raw_role == "slave" else raw_role or None)
    for replica in health.connected_replicas:
        host, _, port = replica.address.rpartition(":")
        assert host
        assert str(int(port)) == port


# ---------------------------------------------------------------------------------------------------------
# Sentinel


def test_pairs_to_dict() -> None:
    assert pairs_to_dict(["a", "1", "b", "2", "dangling"]) == {"a": "1", "b": "2"}
    assert pairs_to_dict([b"a", 1]) == {"a": "1"}
    with pytest.raises(ValueError, match="flat key/value list"):
        pairs_to_dict("name")
    with pytest.raises(ValueError, match="flat key/value list"):
        pairs_to_dict(None)  # type: ignore[arg-type]


def test_healthy_master_view() -> None:
    view = sentinel_master_view(
        "mymaster",
        reply("sentinel_master.json"),
        replies("sentinel_replicas.json"),
        replies("sentinel_sentinels.json"),
        parse_ckquorum(text("sentinel_ckquorum_ok.txt")),
    )
    assert view.name == "mymaster"
    assert view.master_address == "127.0.0.200:6379"
    assert view.flags == ("master",)
    assert (view.s_down, view.o_down, view.failover_in_progress) == (False, False, False)
    assert view.config_epoch == 0
    assert view.quorum == 2
    assert view.num_other_sentinels == 2
    assert view.down_after_ms == 5000
    assert view.failover_timeout_ms == 60000
    assert view.parallel_syncs == 1
    assert view.ckquorum_ok is True
    assert view.ckquorum_message == "OK 3 usable Sentinels. Quorum and failover authorization can be reached"

    replicas = {peer.address: peer for peer in view.replicas}
    assert set(replicas) == {"127.0.0.201:6379", "127.0.0.202:6379"}
    first = replicas["127.0.0.201:6379"]
    assert first.flags == ("slave",)
    assert first.down is False
    assert first.run_id == REPLICA_RUN_ID
    assert first.master_link_status == "ok"  # Sentinel says ok/err where INFO says up/down
    assert first.replica_priority == 100
    assert first.repl_offset == ACKED_OFFSET
    assert first.last_ok_ping_ms == 974
    assert replicas["127.0.0.202:6379"].replica_priority == 50
    assert replicas["127.0.0.202:6379"].run_id == REPLICA2_RUN_ID

    sentinels = {peer.address: peer for peer in view.sentinels}
    assert set(sentinels) == {"127.0.0.201:26379", "127.0.0.202:26379"}
    assert sentinels["127.0.0.201:26379"].run_id == SENTINEL_201_ID
    assert sentinels["127.0.0.201:26379"].flags == ("sentinel",)
    assert sentinels["127.0.0.201:26379"].last_ok_ping_ms == 79
    assert sentinels["127.0.0.201:26379"].master_link_status is None
    assert sentinels["127.0.0.201:26379"].replica_priority is None
    assert sentinels["127.0.0.201:26379"].repl_offset is None


def test_masters_reply_entries_parse_like_master() -> None:
    (entry,) = replies("sentinel_masters.json")
    assert pairs_to_dict(entry)["name"] == "mymaster"
    assert sentinel_master_view("mymaster", entry, [], [], None) == sentinel_master_view(
        "mymaster", reply("sentinel_master.json"), [], [], None
    )


def test_replica_s_down() -> None:
    view = sentinel_master_view(
        "mymaster", reply("sentinel_master.json"), replies("sentinel_replicas_sdown.json"), [], None
    )
    replicas = {peer.address: peer for peer in view.replicas}
    down = replicas["127.0.0.202:6379"]
    assert down.flags == ("s_down", "slave", "disconnected")
    assert down.down is True
    assert down.last_ok_ping_ms == 2092
    assert replicas["127.0.0.201:6379"].down is False
    assert view.ckquorum_ok is None
    assert view.ckquorum_message is None
    assert view.sentinels == ()


def test_master_o_down() -> None:
    view = sentinel_master_view("mymaster", reply("sentinel_master_odown.json"), [], [], None)
    assert view.flags == ("s_down", "o_down", "master", "disconnected")
    assert view.s_down is True
    assert view.o_down is True
    assert view.failover_in_progress is False
    assert view.down_after_ms == 1000  # lowered by the recording for the replica scenario


def test_failover_in_progress() -> None:
    view = sentinel_master_view("mymaster", reply("sentinel_master_failover.json"), [], [], None)
    assert view.failover_in_progress is True
    assert view.o_down is True
    assert view.master_address == "127.0.0.200:6379"  # the old master until the failover ends
    assert pairs_to_dict(reply("sentinel_master_failover.json"))["failover-state"] == "send_slaveof_noone"


def test_no_quorum() -> None:
    ckquorum = parse_ckquorum(text("sentinel_ckquorum_noquorum.txt"))
    assert ckquorum == (
        False,
        "NOQUORUM 3 usable Sentinels. Not enough available Sentinels to reach the specified quorum for this master",
    )
    view = sentinel_master_view("mymaster", reply("sentinel_master_noquorum.json"), [], [], ckquorum)
    assert view.quorum == 5
    assert view.ckquorum_ok is False
    assert view.ckquorum_message is not None
    assert view.ckquorum_message.startswith("NOQUORUM ")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("OK 3 usable Sentinels.", (True, "OK 3 usable Sentinels.")),
        ("+OK 2 usable Sentinels.\r\n", (True, "OK 2 usable Sentinels.")),
        (b"OK", (True, "OK")),
        ("-NOQUORUM 1 usable Sentinels.", (False, "NOQUORUM 1 usable Sentinels.")),
        ("No such master with that name", (False, "No such master with that name")),
        ("OKAY", (False, "OKAY")),
        ("", (False, "")),
    ],
)
def test_parse_ckquorum(raw: str | bytes, expected: tuple[bool, str]) -> None:
    assert parse_ckquorum(raw) == expected


def test_master_view_with_missing_and_garbled_fields() -> None:
    master = ["name", "mymaster", "ip", "10.0.0.1", "flags", "", "quorum", "two", "config-epoch", "7"]
    replicas: list[list[str]] = [
        ["ip", "10.0.0.2", "port", "6379", "slave-repl-offset", "", "flags", "slave"],
        ["name", "10.0.0.3:6379", "port", "nope", "replica-priority", "10"],  # falls back to name
        ["flags", "slave"],  # no address at all: left out
        "not-a-list",  # type: ignore[list-item]
    ]
    view = sentinel_master_view("mymaster", master, replicas, [], None)
    assert view.master_address is None  # no port
    assert view.flags == ()
    assert view.quorum is None
    assert view.config_epoch == 7
    assert view.num_other_sentinels is None
    assert view.replicas == (
        SentinelPeer(address="10.0.0.2:6379", flags=("slave",)),
        SentinelPeer(address="10.0.0.3:6379", replica_priority=10),
    )


def test_master_view_rejects_replies_that_are_not_lists() -> None:
    with pytest.raises(ValueError, match="flat key/value list"):
        sentinel_master_view("mymaster", "ERR", [], [], None)
    with pytest.raises(ValueError, match="SENTINEL REPLICAS reply must be a list"):
        sentinel_master_view("mymaster", [], "ERR", [], None)


def test_sentinel_peer_without_address_is_none() -> None:
    assert sentinel_peer(["flags", "slave"]) is None
    assert sentinel_peer(["name", "abc", "flags", "sentinel"]) == SentinelPeer("abc", flags=("sentinel",))


def test_sentinel_info_period_from_sentinel_debug() -> None:
    assert sentinel_info_period_ms(json.loads(text("sentinel_debug.json"))) == 10000
    assert sentinel_info_period_ms(["PING-PERIOD", "1000", "info-period", "1000"]) == 1000
    # not there, not a number, not positive, not a list: unknown
    assert sentinel_info_period_ms(["PING-PERIOD", "1000"]) is None
    assert sentinel_info_period_ms(["INFO-PERIOD", "ten"]) is None
    assert sentinel_info_period_ms(["INFO-PERIOD", "0"]) is None
    assert sentinel_info_period_ms("ERR Unknown subcommand") is None
    assert sentinel_info_period_ms(None) is None
