"""Unit tests of least privilege (issue #13) without processes: the rendered configs per Redis version, what
enrollment hands a droplet, how the agent finds its credential, and the CONFIG_RISK findings.

Layer: tests of pure code and of small adapters over temporary files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig, load_secrets
from agent.layout import NodeLayout, render_redis_conf, render_sentinel_conf
from controller.adapters.userdata import NodeBoot, agent_toml
from controller.app.enrollment import Enroller
from controller.config import ClusterConfig
from controller.core.checks import check
from controller.core.findings import Code
from controller.core.policy import Policy
from protocol.acl import ClusterUsers, NodeUsers, parse_version, sha256_hex
from tests.factories import scenario_view, with_redis, with_sentinel

USERS, APP, DISCOVERY = ClusterUsers("admin-pw-1", "repl-pw-2", "sent-pw-3", "mon-pw-4", sha256_hex("app-pw-5"),
                                     sha256_hex("disc-pw-6")), "app-pw-5", "disc-pw-6"
LAYOUT = NodeLayout(address="10.0.0.5")


def test_a_droplet_holds_its_roles_passwords_and_only_hashes_of_the_others() -> None:
    node = USERS.node_users()
    held = node.to_json()
    for secret in (USERS.replication, USERS.sentinel, USERS.monitor):
        assert secret in held
    for foreign in (USERS.admin, APP, DISCOVERY):
        assert foreign not in held
    assert node.admin_sha256 == sha256_hex(USERS.admin)
    assert NodeUsers.from_json(held) == node
    redis_conf = render_redis_conf(LAYOUT, node.replication, "10.0.0.6:6379", node, (7, 0))
    sentinel_conf = render_sentinel_conf(LAYOUT, node.replication, "10.0.0.6:6379", node, (7, 0))
    for foreign in (USERS.admin, APP, DISCOVERY):
        assert foreign not in redis_conf + sentinel_conf
    assert "requirepass" not in redis_conf and "user default off" in redis_conf
    assert "masteruser replication" in redis_conf and "protected-mode yes" in redis_conf
    assert "sentinel deny-scripts-reconfig yes" in sentinel_conf
    assert "sentinel auth-user mymaster sentinel" in sentinel_conf
    assert "sentinel sentinel-user sentinel" in sentinel_conf
    assert f"#{sha256_hex(DISCOVERY)}" in sentinel_conf


def test_on_redis_6_0_the_users_lose_channel_rules_and_sentinel_stays_as_before() -> None:
    node = USERS.node_users()
    redis_conf = render_redis_conf(LAYOUT, node.replication, None, node, (6, 0))
    sentinel_conf = render_sentinel_conf(LAYOUT, node.replication, "10.0.0.5:6379", node, (6, 0))
    assert "&" not in redis_conf and "channels" not in redis_conf  # 6.2 syntax: 6.0 would refuse to start
    assert f"user default on >{USERS.sentinel} -@all +multi +slaveof" in redis_conf  # Sentinel 6.0 AUTHs as default
    assert "user " not in sentinel_conf and "auth-user" not in sentinel_conf
    assert f'sentinel auth-pass mymaster "{USERS.sentinel}"' in sentinel_conf


def test_legacy_configs_are_unchanged_in_substance() -> None:
    redis_conf = render_redis_conf(LAYOUT, "pw", None)
    assert 'requirepass "pw"' in redis_conf and 'masterauth "pw"' in redis_conf and "user " not in redis_conf
    assert 'sentinel auth-pass mymaster "pw"' in render_sentinel_conf(LAYOUT, "pw", "10.0.0.5:6379")


@pytest.mark.parametrize("text, version", [("Redis server v=7.0.15 sha=00000000:0", (7, 0)),
                                            ("Redis server v=6.0.16 sha=0", (6, 0)), ("6.2.14", (6, 2)),
                                            ("nonsense", None)])
def test_parse_version(text: str, version: tuple[int, int] | None) -> None:
    assert parse_version(text) == version


def test_users_files_refuse_shared_or_malformed_secrets() -> None:
    with pytest.raises(ValueError, match="own password"):
        ClusterUsers("same", "same", "s", "m", sha256_hex("a"))
    with pytest.raises(ValueError, match="64 lowercase hex") as e:
        NodeUsers("r", "s", "m", "not-a-hash", sha256_hex("a"))
    assert "not-a-hash" not in str(e.value).replace("64 lowercase hex digits", "")
    with pytest.raises(ValueError, match="lacks"):
        ClusterUsers.from_json(json.dumps({"admin": "x"}))
    assert ClusterUsers.from_json(USERS.to_json()) == USERS


class _Tokens:
    def redeem(self, cluster: str, node: str, token: str, now: float) -> str | None:
        return None if token == "good" else "bad token"


class _Credentials:
    def issue(self, cluster: str, node: str, now: float) -> bytes:
        return b"k" * 32


def test_enrollment_in_acl_mode_hands_over_the_node_users_never_the_admin_password() -> None:
    enroller = Enroller({"c": ClusterConfig()}, _Tokens(), _Credentials(),  # type: ignore[arg-type]
                        redis_password=lambda *_: None, users=lambda *_: USERS)
    got = enroller.enroll("c", "n1", "good", 0.0)
    assert isinstance(got, dict) and set(got) == {"redis_users", "node_key"}
    assert NodeUsers.from_json(json.dumps(got["redis_users"])) == USERS.node_users()
    assert USERS.admin not in json.dumps(got)
    assert enroller.enroll("c", "n1", "bad", 0.0) == "bad token"


def test_user_data_tells_an_acl_agent_its_user() -> None:
    boot: dict[str, Any] = dict(cluster="c", node="n", controller_url="https://10.0.0.2:8787", master_name="m",
                                sentinels=(), quorum=2, down_after_ms=5000, failover_timeout_ms=60000,
                                report_interval_s=1.0, services="systemd")
    assert 'redis_username = "monitor"' in agent_toml(NodeBoot(**boot, acl=True))
    assert "redis_username" not in agent_toml(NodeBoot(**boot))


def test_the_agent_authenticates_as_monitor(tmp_path: Path) -> None:
    users_file, password_file = tmp_path / "redis-users.json", tmp_path / "redis.pass"
    users_file.write_text(USERS.node_users().to_json())
    password_file.write_text(USERS.monitor + "\n")
    base = dict(cluster="c", node="n", address="10.0.0.5", controller_url="http://127.0.0.1:8787")
    env = {"REDWARDEN_AGENT_NODE_KEY": "ab" * 16}
    direct = load_secrets(AgentConfig(**base, redis_users_file=str(users_file)), env)  # no systemd: reads it
    assert (direct.redis_username, direct.redis_password) == ("monitor", USERS.monitor)
    service = load_secrets(AgentConfig(**base, redis_username="monitor", redis_password_file=str(password_file),
                                       redis_users_file="/nonexistent/redis-users.json"), env)
    assert (service.redis_username, service.redis_password) == ("monitor", USERS.monitor)
    legacy = load_secrets(AgentConfig(**base, redis_password_file=str(password_file)), env)
    assert legacy.redis_username is None


def _risks(view: Any) -> dict[str, str]:
    return {f.qualifier or "": f.message for f in check(view, Policy(), view.now) if f.code is Code.CONFIG_RISK}


LEAST_PRIVILEGE = {"protected_mode_off", "redis_open_without_auth", "default_user_all_commands",
                   "one_password_all_roles", "sentinel_open_to_state_changes"}


def test_reports_without_the_new_fields_raise_no_least_privilege_finding() -> None:
    assert not LEAST_PRIVILEGE & set(_risks(scenario_view("healthy")))  # recorded by an agent before #13


def test_the_seed_configuration_raises_every_least_privilege_finding_with_its_fix() -> None:
    view = scenario_view("healthy")
    for node in ("redis-1", "redis-2", "redis-3"):
        view = with_redis(view, node, protected_mode=False, bind="0.0.0.0", acl_user="default",
                          requirepass_set=True, masterauth_set=True, default_user_all_commands=True,
                          open_without_auth=node == "redis-3")
        view = with_sentinel(view, node, open_to_state_changes=True)
    risks = _risks(view)
    assert set(risks) >= LEAST_PRIVILEGE
    assert "redis-1 binds 0.0.0.0" in risks["protected_mode_off"]
    assert "protected-mode yes" in risks["protected_mode_off"]
    assert "redis-3" in risks["redis_open_without_auth"] and "redis-1" not in risks["redis_open_without_auth"]
    for qualifier in ("default_user_all_commands", "one_password_all_roles", "sentinel_open_to_state_changes"):
        assert f"redwarden cluster secure {view.name}" in risks[qualifier]
    assert "SENTINEL FAILOVER" in risks["sentinel_open_to_state_changes"]


def test_an_open_sentinel_on_redis_6_0_is_named_with_its_version() -> None:
    view = with_redis(scenario_view("healthy"), "redis-2", version="6.0.16")
    view = with_sentinel(view, "redis-2", open_to_state_changes=True)
    message = _risks(view)["sentinel_open_to_state_changes"]
    assert "Redis 6.0.16 has no Sentinel ACLs" in message and "firewall port 26379" in message
    locked = with_sentinel(scenario_view("healthy"), "redis-2", open_to_state_changes=False)
    assert "sentinel_open_to_state_changes" not in _risks(locked)


def test_the_one_password_posture_is_info_and_leaves_a_cluster_healthy() -> None:
    """A cluster from before #13 is reported with the fix, but not made "degraded" for good."""
    from controller.core.checks import cluster_health

    view = scenario_view("healthy")
    for node in ("redis-1", "redis-2", "redis-3"):
        view = with_redis(view, node, acl_user="default", requirepass_set=True, masterauth_set=True,
                          default_user_all_commands=True)
        view = with_sentinel(view, node, open_to_state_changes=True)
    findings = check(view, Policy(), view.now)
    assert {f.qualifier for f in findings} >= {"one_password_all_roles", "sentinel_open_to_state_changes"}
    assert cluster_health(findings) == "healthy"
    exposed = with_redis(view, "redis-1", open_without_auth=True)
    assert cluster_health(check(exposed, Policy(), view.now)) == "degraded"
