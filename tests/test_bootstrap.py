"""`redwarden-agent bootstrap` on real processes: the first node becomes master, the next one its replica."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from agent.bootstrap import decide_master
from agent.config import load_config
from agent.layout import NodeLayout, render_sentinel_conf
from agent.services import ProcessServices
from sandbox.addresses import claim_addresses, release_addresses
from tests.conftest import need_redis
from tests.helpers import wait_until

PASSWORD = "bootstrap-test-password"


def test_decide_master_needs_a_strict_majority() -> None:
    assert decide_master([]) is None
    assert decide_master([None, None]) is None
    assert decide_master(["a:1", None, "a:1"]) == "a:1"
    assert decide_master(["a:1", "b:1"]) is None
    assert decide_master(["a:1", "a:1", "b:1"]) == "a:1"


def test_sentinel_conf_has_one_monitor_line_and_no_myid() -> None:
    text = render_sentinel_conf(NodeLayout(address="127.0.0.9"), "pw", "127.0.0.8:6379")
    assert text.count("sentinel monitor ") == 1
    assert "myid" not in text.replace("no myid", "")
    assert "sentinel announce-ip 127.0.0.9" in text


def _write_node(root: Path, name: str, address: str, peers: list[str]) -> Path:
    etc = root / "etc" / "redwarden"
    etc.mkdir(parents=True)
    (etc / "redis.pass").write_text(PASSWORD + "\n")
    (etc / "node.key").write_text("00" * 32 + "\n")
    conf = etc / "agent.toml"
    conf.write_text(
        f'cluster = "boot"\nnode = "{name}"\naddress = "{address}"\ncontroller_url = "http://127.0.0.1:9"\n'
        f'redis_password_file = "/etc/redwarden/redis.pass"\nnode_key_file = "/etc/redwarden/node.key"\n'
        f'services = "process"\nsentinels = {peers!r}\nquorum = 1\nroot = "{root}"\n'.replace("'", '"')
    )
    return conf


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[list[tuple[Path, str]]]:
    need_redis()
    owner = tmp_path / "owner"
    owner.mkdir()
    (owner / "sandbox.json").write_text('{"up": true}')
    addresses = claim_addresses(owner, 2, (6379, 26379))
    nodes = [(tmp_path / f"n{i}", a) for i, a in enumerate(addresses)]
    try:
        yield nodes
    finally:
        for root, _ in nodes:
            conf = root / "etc" / "redwarden" / "agent.toml"
            if conf.exists():
                cfg = load_config(conf)
                services = ProcessServices(cfg.layout(), conf)
                for s in ("agent", "sentinel", "redis"):
                    services.stop(s)
        release_addresses(owner)


def test_first_node_bootstraps_as_master_second_as_its_replica(two_nodes: list[tuple[Path, str]]) -> None:
    (root1, a1), (root2, a2) = two_nodes
    peers = [f"{a1}:26379", f"{a2}:26379"]
    for root, address, name in ((root1, a1, "n1"), (root2, a2, "n2")):
        conf = _write_node(root, name, address, peers)
        out = subprocess.run([sys.executable, "-m", "agent.cli", "bootstrap", "--config", str(conf)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert PASSWORD not in out.stdout + out.stderr
        if name == "n1":
            assert "as master (first node)" in out.stdout
            r1 = redis.Redis(host=a1, password=PASSWORD, decode_responses=True)
            wait_until(r1.ping, 10, "n1 redis up")
            s1 = redis.Redis(host=a1, port=26379, decode_responses=True)
            wait_until(s1.ping, 10, "n1 sentinel up")
        else:
            assert f"as replica of {a1}:6379" in out.stdout
    r2 = redis.Redis(host=a2, password=PASSWORD, decode_responses=True)
    wait_until(lambda: r2.info("replication").get("master_link_status") == "up", 20, "n2 linked to n1")
    s1 = redis.Redis(host=a1, port=26379, decode_responses=True)
    wait_until(lambda: len(s1.sentinel_sentinels("mymaster")) == 1, 20, "the two Sentinels discover each other")
    # the boot script a rebooted sandbox droplet runs
    assert (root2 / "etc" / "redwarden" / "boot.d" / "50-redwarden").exists()
    # the configs were written with the password but are private
    assert (root2 / "etc" / "redis" / "redis.conf").stat().st_mode & 0o077 == 0
    r1.close(), r2.close(), s1.close()


def test_bootstrap_refuses_a_node_whose_redis_already_runs(two_nodes: list[tuple[Path, str]]) -> None:
    (root1, a1), _ = two_nodes
    conf = _write_node(root1, "n1", a1, [])
    first = subprocess.run([sys.executable, "-m", "agent.cli", "bootstrap", "--config", str(conf)],
                           capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    again = subprocess.run([sys.executable, "-m", "agent.cli", "bootstrap", "--config", str(conf)],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 1
    assert "already running" in again.stderr
