"""Unit tests: push signatures, settings loading and the errors that name the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import AgentConfig, load_secrets
from controller.config import ControllerConfig
from protocol.settings import ConfigError, load_settings
from protocol.signing import ReplayGuard, sign_report, verify_report


def test_signature_round_trip_and_refusals() -> None:
    key, body = b"s3cret", b'{"a":1}'
    sig = sign_report(key, "1000.000", "shop", "redis-1", body)
    assert sig.startswith("sha256=")
    assert verify_report(key, "1000.000", "shop", "redis-1", body, sig, now=1010) is None
    assert verify_report(key, "1000.000", "shop", "redis-1", body + b" ", sig, now=1010) == "signature does not match"
    assert verify_report(b"other", "1000.000", "shop", "redis-1", body, sig, now=1010) == "signature does not match"
    # the node and the cluster are signed too: a node's signature does not pass as another node's
    assert verify_report(key, "1000.000", "shop", "redis-2", body, sig, now=1010) == "signature does not match"
    assert verify_report(key, "1000.000", "blog", "redis-1", body, sig, now=1010) == "signature does not match"
    assert "away from the controller's clock" in (verify_report(key, "1000.000", "shop", "redis-1", body, sig,
                                                                now=1061) or "")
    for ts in ("soon", "nan", "inf", "-inf", "1e999", "\u0661000"):
        reason = verify_report(key, ts, "shop", "redis-1", body, sig, now=1000)
        assert reason == "timestamp header is not a finite number", ts
    assert verify_report(key, "1000.000", "shop", "redis-1", body, "sha256=\u00e9", now=1000) == \
        "signature does not match"


def test_replay_guard_wants_a_newer_timestamp_per_node() -> None:
    guard = ReplayGuard()
    assert guard.check("shop", "redis-1", 10.0) is None
    guard.accept("shop", "redis-1", 10.0)
    assert guard.check("shop", "redis-1", 10.0) is not None and guard.check("shop", "redis-1", 9.0) is not None
    assert guard.check("shop", "redis-2", 10.0) is None and guard.check("shop", "redis-1", 10.000001) is None


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


BASE = 'cluster = "shop"\nnode = "redis-1"\naddress = "10.0.0.5"\ncontroller_url = "http://127.0.0.1:8787"\n'


def test_agent_config_defaults_and_env_override(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE)
    cfg = load_settings(AgentConfig, path, "REDWARDEN_AGENT_", environ={"REDWARDEN_AGENT_REPORT_INTERVAL_S": "2.5"})
    assert cfg.report_interval_s == 2.5
    assert cfg.master_name == "mymaster"
    assert cfg.connect_host == "10.0.0.5"


@pytest.mark.parametrize(
    ("extra", "environ", "message"),
    [
        ('colour = "blue"\n', {}, "unknown setting colour"),
        ("report_interval_s = 'often'\n", {}, "report_interval_s: expected a number"),
        ("report_interval_s = 0\n", {}, "report_interval_s must be > 0"),
        ("redis_port = true\n", {}, "redis_port: expected an integer"),
        ("", {"REDWARDEN_AGENT_REDIS_PORT": "x"}, "redis_port: expected an integer, got 'x'"),
        ('log_format = "xml"\n', {}, "log_format must be"),
    ],
)
def test_agent_config_errors_name_the_key(tmp_path: Path, extra: str, environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(AgentConfig, _write(tmp_path, BASE + extra), "REDWARDEN_AGENT_", environ=environ)


def test_missing_required_key_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing required setting controller_url"):
        load_settings(AgentConfig, _write(tmp_path, 'cluster = "a"\nnode = "b"\naddress = "c"\n'), "X_", environ={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(AgentConfig, _write(tmp_path, "cluster = "), "X_", environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(AgentConfig, tmp_path / "nope.toml", "X_", environ={})


def test_secrets_come_from_files_and_errors_do_not_show_them(tmp_path: Path) -> None:
    key_file = tmp_path / "node.key"
    key_file.write_text("00112233445566778899aabbccddeeff\n")
    cfg = load_settings(AgentConfig, _write(tmp_path, BASE + f'node_key_file = "{key_file}"\n'), "X_", {})
    assert load_secrets(cfg, {}).node_key == bytes.fromhex("00112233445566778899aabbccddeeff")
    cfg = load_settings(AgentConfig, _write(tmp_path, BASE), "X_", {})
    with pytest.raises(ConfigError, match="node_key_file is not set"):
        load_secrets(cfg, {})
    cfg = load_settings(AgentConfig, _write(tmp_path, BASE + f'node_key_file = "{tmp_path}/missing"\n'), "X_", {})
    with pytest.raises(ConfigError, match="node_key_file: cannot read"):
        load_secrets(cfg, {})
    key_file.write_text("hunter2-not-hex\n")
    cfg = load_settings(AgentConfig, _write(tmp_path, BASE + f'node_key_file = "{key_file}"\n'), "X_", {})
    with pytest.raises(ConfigError, match="not hex") as err:
        load_secrets(cfg, {})
    assert "hunter2" not in str(err.value)


def test_an_agent_talks_plain_http_only_to_a_controller_on_loopback(tmp_path: Path) -> None:
    remote = BASE.replace("http://127.0.0.1:8787", "http://10.0.0.2:8787")
    with pytest.raises(ConfigError, match="controller_url: plain http:// only to a controller on loopback"):
        load_settings(AgentConfig, _write(tmp_path, remote), "X_", {})
    tls = BASE.replace("http://127.0.0.1:8787", "https://10.0.0.2:8787")
    assert load_settings(AgentConfig, _write(tmp_path, tls), "X_", {}).controller_url.startswith("https://")


def test_controller_config_nested_clusters(tmp_path: Path) -> None:
    path = _write(tmp_path, '[clusters.shop]\nexpected_nodes = 3\n[clusters.blog]\nexpected_nodes = 0\n')
    with pytest.raises(ConfigError, match="clusters.blog: expected_nodes must be >= 1"):
        load_settings(ControllerConfig, path, "REDWARDEN_", environ={})
    path = _write(tmp_path, "[clusters.shop-eu]\nreport_interval_s = 2\n")
    cfg = load_settings(ControllerConfig, path, "REDWARDEN_", environ={})
    assert cfg.clusters["shop-eu"].stale_after_s == 6.0
    with pytest.raises(ConfigError, match="unknown setting clusters.shop-eu.colour"):
        load_settings(ControllerConfig, _write(tmp_path, "[clusters.shop-eu]\ncolour = 2\n"), "R_", environ={})


def test_a_controller_beyond_loopback_needs_tls_and_an_admin_token(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="listen_host 10.0.0.2 is not loopback: tls_cert_file"):
        load_settings(ControllerConfig, _write(tmp_path, 'listen_host = "10.0.0.2"\n'), "R_", environ={})
    tls = 'tls_cert_file = "/c.pem"\ntls_key_file = "k"\n'
    with pytest.raises(ConfigError, match="admin_token_file is required"):
        load_settings(ControllerConfig, _write(tmp_path, 'listen_host = "10.0.0.2"\n' + tls), "R_", environ={})
    cfg = load_settings(ControllerConfig, _write(tmp_path, 'listen_host = "10.0.0.2"\nadmin_token_file = "a"\n'
                                                 + tls), "R_", environ={})
    assert cfg.tls
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.9"):
        assert not load_settings(ControllerConfig, _write(tmp_path, f'listen_host = "{host}"\n'), "R_", environ={}).tls
    with pytest.raises(ConfigError, match="tls_cert_file and tls_key_file go together"):
        load_settings(ControllerConfig, _write(tmp_path, 'tls_cert_file = "/c.pem"\n'), "R_", environ={})


def test_a_package_url_needs_its_checksum(tmp_path: Path) -> None:
    url = '[clusters.shop]\nagent_deb_url = "https://example.org/a.deb"\n'
    with pytest.raises(ConfigError, match="agent_deb_sha256"):
        load_settings(ControllerConfig, _write(tmp_path, url), "R_", environ={})
    cfg = load_settings(ControllerConfig, _write(tmp_path, url + f'agent_deb_sha256 = "{"a" * 64}"\n'), "R_",
                        environ={})
    assert cfg.clusters["shop"].agent_deb_sha256 == "a" * 64
