"""Enrollment tokens and the user_data a new droplet boots with: no secret in it, one use, expiry."""

from __future__ import annotations

import dataclasses
import json

import pytest

from controller.adapters.storage.db import Database
from controller.adapters.storage.enrollments import Enrollments
from controller.adapters.userdata import DEFAULT_TEMPLATES, MAX_USER_DATA_BYTES, NodeBoot, render_user_data

CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
DEB_SHA256 = "ab" * 32
BOOT = NodeBoot(cluster="shop", node="redis-4", controller_url="https://10.0.0.2:8787", master_name="mymaster",
                sentinels=("10.0.0.5:26379", "10.0.0.6:26379"), quorum=2, down_after_ms=5000,
                failover_timeout_ms=60000, report_interval_s=1.0, services="systemd",
                agent_deb_url="https://example.invalid/redwarden-agent.deb", agent_deb_sha256=DEB_SHA256,
                metadata_url="http://metadata.invalid/v1", controller_ca=CA_PEM)


def test_tokens_are_single_use_bound_and_expiring(state_db: Database) -> None:
    e = Enrollments(state_db)
    token = e.issue("shop", "redis-4", now=100.0, ttl_s=60)
    assert e.redeem("shop", "redis-5", token, now=110) == "token issued for another node"
    assert e.redeem("shop", "redis-4", "guess", now=110) == "unknown token"
    assert e.redeem("shop", "redis-4", token, now=110) is None
    assert e.redeem("shop", "redis-4", token, now=111) == "token already used"
    late = e.issue("shop", "redis-6", now=100.0, ttl_s=60)
    assert e.redeem("shop", "redis-6", late, now=161) == "token expired"


@pytest.mark.parametrize("services", ["systemd", "sandbox"])
def test_user_data_carries_settings_and_token_but_no_secret(services: str) -> None:
    boot = dataclasses.replace(BOOT, services=services)
    text = render_user_data(DEFAULT_TEMPLATES[services].read_text(), boot, "ONE-TIME-TOKEN")
    assert text.startswith("#cloud-config")
    assert len(text.encode()) < MAX_USER_DATA_BYTES
    assert "ONE-TIME-TOKEN" in text
    # the secrets are only ever files the bootstrap fills after enrolling, never values here
    assert "redis_password =" not in text and "cluster_secret =" not in text and "requirepass" not in text
    assert 'sentinels = [\\"10.0.0.5:26379\\", \\"10.0.0.6:26379\\"]' in text or \
        'sentinels = ["10.0.0.5:26379", "10.0.0.6:26379"]' in text
    assert "redwarden-agent bootstrap --config" in text
    # the controller's CA (public) rides along for the agent to verify the controller with; the package is
    # installed only when its checksum is the configured one
    assert "controller_ca_pem" in text and "MIIB" in text
    assert f"{DEB_SHA256}" in text and "sha256sum -c" in text
    assert text.index("sha256sum -c") < text.index("apt-get install -y /tmp/redwarden-agent.deb")
    if services == "sandbox":
        doc = json.loads(text.split("\n", 1)[1])
        paths = [f["path"] for f in doc["write_files"]]
        assert paths == ["/etc/redwarden/agent.toml", "/etc/redwarden/enroll.token"]


def test_oversized_user_data_is_refused() -> None:
    with pytest.raises(ValueError, match="limit is 65536"):
        render_user_data("#cloud-config\n" + "x" * MAX_USER_DATA_BYTES + "${agent_toml}${enroll_token}${install_agent}",
                         BOOT, "t")


def test_a_package_url_without_its_checksum_is_refused() -> None:
    with pytest.raises(ValueError, match="agent_deb_sha256"):
        render_user_data(DEFAULT_TEMPLATES["systemd"].read_text(), dataclasses.replace(BOOT, agent_deb_sha256=None),
                         "t")
