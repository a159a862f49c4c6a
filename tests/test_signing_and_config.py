"""Unit tests: push signatures, settings loading and the errors that name the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import AgentConfig, load_secrets
from controller.config import ControllerConfig, load_cluster_secrets
from protocol.settings import ConfigError, load_settings
from protocol.signing import sign, verify


def test_signature_round_trip_and_refusals() -> None:
    secret, body = b"s3cret", b'{"a":1}'
    sig = sign(secret, "1000.000", body)
    assert sig.startswith("sha256=")
    assert verify(secret, "1000.000", body, sig, now=1010) is None
    assert verify(secret, "1000.000", body + b" ", sig, now=1010) == "signature does not match"
    assert verify(b"other", "1000.000", body, sig, now=1010) == "signature does not match"
    assert "away from the controller's clock" in (verify(secret, "1000.000", body, sig, now=1061) or "")
    assert "away from the controller's clock" in (verify(secret, "1000.000", body, sig, now=939) or "")
    assert verify(secret, "soon", body, sig, now=1000) == "timestamp header is not a number"


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
    secret_file = tmp_path / "cluster.secret"
    secret_file.write_text("hunter2\n")
    cfg = load_settings(AgentConfig, _write(tmp_path, BASE + f'cluster_secret_file = "{secret_file}"\n'), "X_", {})
    assert load_secrets(cfg, {}).cluster_secret == b"hunter2"
    cfg = load_settings(AgentConfig, _write(tmp_path, BASE), "X_", {})
    with pytest.raises(ConfigError, match="cluster_secret_file is not set"):
        load_secrets(cfg, {})
    cfg = load_settings(AgentConfig, _write(tmp_path, BASE + f'cluster_secret_file = "{tmp_path}/missing"\n'), "X_", {})
    with pytest.raises(ConfigError, match="cluster_secret_file: cannot read"):
        load_secrets(cfg, {})


def test_controller_config_nested_clusters(tmp_path: Path) -> None:
    path = _write(tmp_path, '[clusters.shop]\nexpected_nodes = 3\n[clusters.blog]\nexpected_nodes = 0\n')
    with pytest.raises(ConfigError, match="clusters.blog: expected_nodes must be >= 1"):
        load_settings(ControllerConfig, path, "REDWARDEN_", environ={})
    path = _write(tmp_path, "[clusters.shop-eu]\nreport_interval_s = 2\n")
    cfg = load_settings(ControllerConfig, path, "REDWARDEN_", environ={})
    assert cfg.clusters["shop-eu"].stale_after_s == 6.0
    assert load_cluster_secrets(cfg, {"REDWARDEN_CLUSTER_SHOP_EU_SECRET": "k"}) == {"shop-eu": b"k"}
    with pytest.raises(ConfigError, match="clusters.shop-eu.secret_file is not set"):
        load_cluster_secrets(cfg, {})
    with pytest.raises(ConfigError, match="unknown setting clusters.shop-eu.colour"):
        load_settings(ControllerConfig, _write(tmp_path, "[clusters.shop-eu]\ncolour = 2\n"), "R_", environ={})
