"""The pieces of `redwarden cluster secure --rotate` that need no cluster: the plan's order, the rail that holds a
run when the cluster's nodes change under it, the record that makes a second run take the same new secret,
the controller's copy of the users read in place of acl_users_file, and where the agent keeps users handed to
it after bootstrap (its systemd StateDirectory, not /etc/redwarden)."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig, load_config, load_secrets, users_state_path
from controller.adapters.storage.acl_users import AclUsersStore
from controller.app.rotate import prepare_rotation
from controller.config import ClusterConfig, cluster_users
from controller.core.rotate import node_set_change, plan_rotate
from controller.core.secure import SecureNode
from protocol.acl import ClusterUsers, sha256_hex

USERS = ClusterUsers("admin-pw-1", "repl-pw-2", "sent-pw-3", "mon-pw-4", sha256_hex("app-pw-5"), sha256_hex("d-6"))
NODES = (SecureNode("redis-2", "10.0.0.2:6379", "10.0.0.2:26379", False),
         SecureNode("redis-1", "10.0.0.1:6379", "10.0.0.1:26379", True),
         SecureNode("redis-3", "10.0.0.3:6379", "10.0.0.3:26379", False))
ORDER = ["redis-2", "redis-3", "redis-1"]  # replicas first, the master last


def _phases(role: str, finish: bool = False) -> list[tuple[str, str]]:
    return [(s.phase, s.node) for s in plan_rotate(role, NODES, finish)]


def test_a_rotation_moves_every_consumer_before_the_old_secret_goes() -> None:
    steps = _phases("replication")
    per_node = lambda phase: [(phase, n) for n in ORDER]  # noqa: E731
    assert steps == [*per_node("add_secret"), ("controller_users", "controller"), *per_node("replication_secret"),
                     *per_node("agent_users"), *per_node("remove_old"), *per_node("verify"), ("done", "controller")]
    sentinel = [p for p, _ in _phases("sentinel")]
    assert sentinel.index("remove_old") > max(i for i, p in enumerate(sentinel) if p == "sentinel_secret")
    monitor = [p for p, _ in _phases("monitor")]
    assert "replication_secret" not in monitor and monitor.count("agent_users") == 3 and monitor.count("verify") == 3
    admin = [p for p, _ in _phases("admin")]
    assert admin.index("controller_users") < admin.index("remove_old") and "verify" not in admin


def test_the_application_roles_take_two_runs() -> None:
    first = _phases("app")
    assert first == [("add_secret", n) for n in ORDER] + [("hold_for_operator", "controller")]
    finish = [p for p, _ in _phases("app", finish=True)]
    assert finish[:3] == ["add_secret"] * 3 and "remove_old" in finish and "hold_for_operator" not in finish
    assert finish[-1] == "done"
    with pytest.raises(ValueError, match="unknown role"):
        plan_rotate("default", NODES)


def test_a_run_holds_when_a_node_joins_moves_or_goes() -> None:
    assert node_set_change(NODES, reversed(NODES)) is None
    joined = node_set_change(NODES, (*NODES, SecureNode("redis-4", "10.0.0.4:6379", "10.0.0.4:26379", False)))
    assert joined is not None and "redis-4 joined" in joined and "run it again" in joined
    moved = node_set_change(NODES, (NODES[0], NODES[1], SecureNode("redis-3", "10.0.0.9:6379", "", False)))
    assert moved is not None and "redis-3 changed address" in moved
    gone = node_set_change(NODES, NODES[:2])
    assert gone is not None and "redis-3 stopped reporting" in gone


def test_a_second_run_takes_the_recorded_secret_and_another_role_waits(tmp_path: Path) -> None:
    store = AclUsersStore(tmp_path / "acl-users")
    made = iter(["new-monitor-1", "new-monitor-2"])
    first = prepare_rotation(store, "shop", USERS, "monitor", False, None, make=made.__next__)
    assert first.old == USERS and first.new.monitor == "new-monitor-1" and first.new.admin == USERS.admin
    again = prepare_rotation(store, "shop", USERS, "monitor", False, None, make=made.__next__)
    assert again == first  # after a crash: the same new secret, not a third one
    path = tmp_path / "acl-users" / "shop.rotating.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "acl-users").stat().st_mode) == 0o700
    with pytest.raises(PermissionError, match="rotation of monitor is unfinished"):
        prepare_rotation(store, "shop", USERS, "admin", False, None)
    store.clear_rotation("shop")
    with pytest.raises(PermissionError, match="shares|own password"):  # a secret another role has is refused
        prepare_rotation(store, "shop", USERS, "admin", False, None, make=lambda: USERS.monitor)


def test_the_application_password_never_reaches_the_controller(tmp_path: Path) -> None:
    store = AclUsersStore(tmp_path)
    with pytest.raises(PermissionError, match="SHA-256"):
        prepare_rotation(store, "shop", USERS, "app", False, None)
    with pytest.raises(PermissionError, match="nothing to finish|no rotation of app"):
        prepare_rotation(store, "shop", USERS, "app", True, None)
    first = prepare_rotation(store, "shop", USERS, "app", False, sha256_hex("new-app-1"))
    assert first.new.app_sha256 == sha256_hex("new-app-1") and "new-app-1" not in first.to_json()
    # the first run again (the operator lost the password): a new one, the old stays the one to remove
    second = prepare_rotation(store, "shop", first.new, "app", False, sha256_hex("new-app-2"))
    assert second.old == USERS and second.new.app_sha256 == sha256_hex("new-app-2")
    assert second.superseded == (sha256_hex("new-app-1"),)  # the next add_secret removes it from every node
    assert prepare_rotation(store, "shop", USERS, "app", True, None) == second


def test_the_controller_reads_its_rotated_copy_in_place_of_acl_users_file(tmp_path: Path) -> None:
    configured = tmp_path / "acl-users.json"
    configured.write_text(USERS.to_json())
    cluster = ClusterConfig(acl_users_file=str(configured))
    store = AclUsersStore(tmp_path / "state" / "acl-users")
    assert cluster_users("shop", cluster, store.users_path("shop")) == USERS
    rotated = USERS.with_secret("sentinel", "sent-pw-new")
    store.store_users("shop", rotated)
    assert cluster_users("shop", cluster, store.users_path("shop")) == rotated
    assert cluster_users("shop", ClusterConfig(), store.users_path("shop")) is None  # no ACL users configured


def test_the_agent_keeps_handed_users_in_its_state_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "agent.toml"
    toml.write_text('cluster = "c"\nnode = "n"\naddress = "10.0.0.5"\ncontroller_url = "http://127.0.0.1:8787"\n'
                    'redis_username = "monitor"\nredis_password_file = "redis.pass"\n')
    state = tmp_path / "state"
    config = load_config(toml, {"STATE_DIRECTORY": str(state)})  # systemd's StateDirectory=redwarden-agent
    assert config.state_dir == str(state) and users_state_path(config) == state / "redis-users.json"
    assert load_config(toml, {}).state_dir is None  # the process sandbox: bootstrap's files, as before

    credential = tmp_path / "creds" / "redis.pass"  # what systemd's LoadCredential copied (bootstrap's monitor)
    credential.parent.mkdir()
    credential.write_text("mon-pw-4\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credential.parent))
    env = {"REDWARDEN_AGENT_NODE_KEY": "ab" * 16}
    assert load_secrets(config, env).redis_password == "mon-pw-4"
    state.mkdir(mode=0o700)
    (state / "redis-users.json").write_text(USERS.with_secret("monitor", "mon-pw-new").node_users().to_json())
    secrets = load_secrets(config, env)  # handed over since bootstrap: before the credential
    assert (secrets.redis_username, secrets.redis_password) == ("monitor", "mon-pw-new")
    assert AgentConfig(cluster="c", node="n", address="a", controller_url="http://127.0.0.1:1").state_dir is None


def test_bootstrap_takes_the_users_a_rotation_handed_the_agent(tmp_path: Path) -> None:
    """bootstrap runs as root outside the agent's unit (no STATE_DIRECTORY): the unit's state directory still
    comes before the users file enrollment wrote, which a rotation since made stale."""
    from agent.bootstrap import load_or_enroll_secrets
    from agent.config import DEFAULT_STATE_DIR

    etc = tmp_path / "etc" / "redwarden"
    etc.mkdir(parents=True)
    (etc / "redis-users.json").write_text(USERS.node_users().to_json())
    (etc / "node.key").write_text("ab" * 16 + "\n")
    config = AgentConfig(cluster="c", node="n", address="10.0.0.5", controller_url="http://127.0.0.1:1",
                         root=str(tmp_path), redis_users_file=str(etc / "redis-users.json"),
                         redis_password_file=str(etc / "redis.pass"), node_key_file=str(etc / "node.key"))
    assert load_or_enroll_secrets(config) == USERS.node_users()
    rotated = USERS.with_secret("replication", "repl-pw-new").node_users()
    state = Path(str(tmp_path) + DEFAULT_STATE_DIR)
    state.mkdir(parents=True, mode=0o700)
    (state / "redis-users.json").write_text(rotated.to_json())
    assert load_or_enroll_secrets(config) == rotated


class _FakeController:
    """The two calls `console.secure` makes, answering a first app run that holds after every node took it."""

    def __init__(self, last_status: str) -> None:
        self.sent: dict[str, object] = {}
        self.last_status = last_status

    def secure(self, cluster: str, apply: bool = False, rotate: str | None = None, finish: bool = False,
               new_sha256: str | None = None) -> dict[str, object]:
        self.sent = {"apply": apply, "rotate": rotate, "finish": finish, "new_sha256": new_sha256}
        return {"state": "running", "message": "", "steps": []}

    def secure_progress(self, cluster: str) -> dict[str, object]:
        return {"state": "held" if self.last_status == "held" else "failed", "message": "m",
                "steps": [{"phase": "add_secret", "node": "redis-1", "status": "done", "detail": ""},
                          {"phase": "hold_for_operator", "node": "controller", "status": self.last_status,
                           "detail": ""}]}


def test_the_console_makes_the_app_password_sends_its_hash_and_shows_it_once_held(tmp_path: Path) -> None:
    import hashlib
    import json

    from console.secure import secure

    lines: list[str] = []
    fake = _FakeController("held")
    code = secure(fake, "shop", apply=True, timeout_s=5, as_json=True, out=lines.append,  # type: ignore[arg-type]
                  sleep=lambda s: None, rotate="app")
    assert code == 3 and len(lines) == 1
    shown = json.loads(lines[0])["new_password"]  # --json: stdout stays one JSON document
    assert fake.sent["new_sha256"] == hashlib.sha256(shown.encode()).hexdigest() and shown not in json.dumps(fake.sent)

    lines.clear()
    out = tmp_path / "app.pass"
    assert secure(fake, "shop", apply=True, timeout_s=5, as_json=False, out=lines.append,  # type: ignore[arg-type]
                  sleep=lambda s: None, rotate="app", password_out=str(out)) == 3
    written = out.read_text().strip()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and written not in "\n".join(lines)
    assert fake.sent["new_sha256"] == hashlib.sha256(written.encode()).hexdigest()

    lines.clear()  # a run that failed before every node took it: the password is of no use, never shown
    failed = _FakeController("failed")
    assert secure(failed, "shop", apply=True, timeout_s=5, as_json=False, out=lines.append,  # type: ignore[arg-type]
                  sleep=lambda s: None, rotate="app") == 1
    assert not any("password" in line for line in lines)


def test_the_api_checks_a_rotation_request_before_the_securer_sees_it(state_db: Any) -> None:
    import dataclasses

    from fastapi.testclient import TestClient

    from controller.adapters.api import create_app
    from tests.test_controller_api import ADMIN_TOKEN, make

    calls: list[tuple[object, ...]] = []

    class Securer:
        def plan(self, cluster: str, rotate: str | None = None, finish: bool = False) -> dict[str, Any]:
            calls.append(("plan", cluster, rotate, finish))
            return {"cluster": cluster}

        def start(self, cluster: str, rotate: str | None = None, finish: bool = False,
                  new_sha256: str | None = None) -> dict[str, Any]:
            calls.append(("start", cluster, rotate, finish, new_sha256))
            return {"cluster": cluster, "state": "running"}

        def job(self, cluster: str) -> dict[str, Any] | None:
            return None

    _, api, _ = make(state_db, 1000.0)
    client = TestClient(create_app(dataclasses.replace(api.deps, securer=Securer(), heal=object())))  # type: ignore[arg-type]
    client.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
    url = "/v1/clusters/sandbox/secure"
    for body, loc in (({"rotate": "default"}, "rotate"), ({"rotate": "app", "new_sha256": "ABC"}, "new_sha256"),
                      ({"finish": True}, "rotate"), ({"rotate": "app", "finish": "yes"}, "finish"),
                      ({"rotate": "app", "password": "x"}, "password")):
        answer = client.post(url, json=body)
        assert answer.status_code == 422 and loc in answer.text, (body, answer.text)
    assert calls == []
    assert client.post(url, json={"rotate": "monitor"}).status_code == 200
    digest = sha256_hex("new-app-password")
    assert client.post(url, json={"rotate": "app", "apply": True, "new_sha256": digest}).status_code == 202
    assert calls == [("plan", "sandbox", "monitor", False), ("start", "sandbox", "app", False, digest)]


def test_a_running_agent_stores_handed_users_in_its_state_directory_only(tmp_path: Path) -> None:
    """A real redis-server with the rotated monitor user: the agent (as under systemd: state_dir set) checks the
    password, writes the users into its state directory (0600) and nowhere under /etc, then reports as monitor;
    a restarted agent reads them back before its (stale) credential."""
    import shutil
    import subprocess

    import redis

    from agent.config import AgentSecrets
    from agent.runtime import Agent
    from tests.helpers import ReportSink, free_port, wait_until

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH")
    rotated = USERS.with_secret("monitor", "mon-pw-rotated").node_users()
    port = free_port()
    conf = tmp_path / "redis.conf"
    conf.write_text(f"bind 127.0.0.1\nport {port}\ndir {tmp_path}\nlogfile {tmp_path}/redis.log\nsave ''\n"
                    f"appendonly no\nuser default on >{USERS.monitor} +@all ~*\n"
                    f"user monitor on >{USERS.monitor} >mon-pw-rotated +@all ~*\n")
    proc = subprocess.Popen(["redis-server", str(conf)], cwd=tmp_path)
    sink = ReportSink()
    etc, state = tmp_path / "etc" / "redwarden", tmp_path / "var" / "lib" / "redwarden-agent"
    state.mkdir(parents=True, mode=0o700)  # systemd's StateDirectory=, StateDirectoryMode=0700
    config = AgentConfig(cluster="c", node="n1", address="127.0.0.1", controller_url=sink.url, redis_port=port,
                         sentinel_port=free_port(), redis_data_dir=str(tmp_path), report_interval_s=3600,
                         redis_users_file=str(etc / "redis-users.json"), redis_password_file=str(etc / "redis.pass"),
                         state_dir=str(state), redis_username="monitor")
    agent = Agent(config, AgentSecrets(USERS.monitor, None, b"k" * 32, redis_username="monitor"))
    try:
        wait_until(lambda: "redis up" in agent.run_cycle() or None, 10, "a first report with redis up")
        agent.set_users(rotated)
        stored = state / "redis-users.json"
        assert stat.S_IMODE(stored.stat().st_mode) == 0o600 and stat.S_IMODE(state.stat().st_mode) == 0o700
        assert not etc.exists()  # read-only to the hardened unit: nothing written there
        admin = redis.Redis(port=port, password=USERS.monitor, socket_timeout=3)
        admin.execute_command("ACL", "SETUSER", "monitor", "resetpass", ">mon-pw-rotated")  # the old one goes
        admin.execute_command("CLIENT", "KILL", "USER", "monitor")
        admin.close()
        wait_until(lambda: "redis up" in agent.run_cycle() or None, 10, "a report with only the new password")
        assert sink.reports[-1]["redis"]["acl_user"] == "monitor"
        again = load_secrets(config, {"REDWARDEN_AGENT_REDIS_PASSWORD": USERS.monitor,
                                      "REDWARDEN_AGENT_NODE_KEY": "ab" * 16})
        assert (again.redis_username, again.redis_password) == ("monitor", "mon-pw-rotated")
    finally:
        agent.close()
        sink.close()
        proc.kill()
        proc.wait(timeout=10)
