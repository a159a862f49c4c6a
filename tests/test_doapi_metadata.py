"""What a container droplet asks the local DigitalOcean over plain HTTP on the gateway (sandbox.doapi.metadata):
its own metadata (told apart by the address asking), its NoCloud seed, the files; and the addresses container
droplets get on the hub's bridge. No root needed: the service listens on loopback here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from sandbox.doapi.containers import free_address
from sandbox.doapi.metadata import MetadataServer
from sandbox.doapi.state import Cloud, ContainerSettings
from tests.helpers import free_port

USER_DATA = "#cloud-config\nruncmd:\n  - echo hi\n"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Cloud, ContainerSettings]]:
    files = tmp_path / "files"
    files.mkdir()
    (files / "redwarden-agent.deb").write_bytes(b"\x00deb bytes")
    settings = ContainerSettings(netns="unused", bridge="unused", gateway="127.0.0.1", cache=tmp_path / "cache",
                                 files_dir=files, meta_port=free_port())
    cloud = Cloud(tmp_path, "https://127.0.0.1:1")
    cloud.state["droplets"]["100000007"] = {"id": 100000007, "name": "redis-7", "address": "127.0.0.1",
                                            "user_data": USER_DATA, "dir": "droplets/redis-7-100000007"}
    cloud.state["droplets"]["100000008"] = {"id": 100000008, "name": "redis-8", "address": "10.77.0.12",
                                            "user_data": None, "dir": "droplets/redis-8-100000008"}
    server = MetadataServer(cloud, settings)
    try:
        yield cloud, settings
    finally:
        server.close()


def get(url: str) -> requests.Response:
    s = requests.Session()
    s.trust_env = False
    return s.get(url, timeout=5)


def test_a_droplet_gets_its_own_metadata_by_the_address_it_asks_from(
        served: tuple[Cloud, ContainerSettings]) -> None:
    _, settings = served
    base = settings.metadata_url
    assert base == f"http://127.0.0.1:{settings.meta_port}/metadata/v1"
    assert get(f"{base}/id").text == "100000007"  # the droplet at 127.0.0.1, not redis-8
    assert get(f"{base}/hostname").text == "redis-7"
    assert get(f"{base}/interfaces/private/0/ipv4/address").text == "127.0.0.1"
    assert get(f"{base}/interfaces/public/0/ipv4/address").status_code == 404


def test_metadata_is_refused_to_an_address_no_droplet_has(served: tuple[Cloud, ContainerSettings]) -> None:
    cloud, settings = served
    cloud.state["droplets"]["100000007"]["address"] = "10.77.0.11"
    assert get(f"{settings.metadata_url}/id").status_code == 404


def test_the_nocloud_seed_is_the_droplets_user_data(served: tuple[Cloud, ContainerSettings]) -> None:
    _, settings = served
    seed = settings.seed_url(100000007)
    assert get(seed + "user-data").text == USER_DATA
    meta = get(seed + "meta-data").text
    assert "instance-id: droplet-100000007\n" in meta and "local-hostname: redis-7\n" in meta
    assert get(seed + "vendor-data").text == ""
    assert get(settings.seed_url(100000008) + "user-data").text == ""  # none given: empty, still a seed
    assert get(settings.seed_url(100000009) + "user-data").status_code == 404
    assert get(seed + "network-config").status_code == 404


def test_files_are_served_and_nothing_outside_them(served: tuple[Cloud, ContainerSettings]) -> None:
    _, settings = served
    assert get(settings.file_url("redwarden-agent.deb")).content == b"\x00deb bytes"
    assert get(settings.file_url("missing.deb")).status_code == 404
    base = f"http://127.0.0.1:{settings.meta_port}"
    assert get(f"{base}/files/../cache/x").status_code == 404
    assert get(f"{base}/files/%2e%2e%2fstate.json").status_code == 404


def test_container_droplets_take_the_free_addresses_after_the_gateway(tmp_path: Path) -> None:
    settings = ContainerSettings(netns="n", bridge="b", gateway="10.77.0.1", cache=tmp_path, files_dir=tmp_path)
    assert free_address(settings, set()) == "10.77.0.11"
    assert free_address(settings, {"10.77.0.11", "10.77.0.12"}) == "10.77.0.13"
    assert free_address(settings, {"10.77.0.12"}) == "10.77.0.11"  # a destroyed droplet's address is reused
    full = {f"10.77.0.{n}" for n in range(11, 255)}
    with pytest.raises(RuntimeError):
        free_address(settings, full)
