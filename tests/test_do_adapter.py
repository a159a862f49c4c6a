"""The controller's DigitalOcean adapter through real pydo calls, against the sandbox's local API over HTTPS.

What is checked is what the controller relies on: all pages are read, documented 404s become None,
a 429 is waited out, a lost or duplicated create still leaves exactly one droplet, rate-limit headers slow
the adapter down before a 429, droplets boot their user_data and obey power actions, and the token
never shows in an error, a repr or a log line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from controller.adapters.cloud import (
    ActionResult,
    Cloud,
    Droplet,
    DropletSpec,
    FirewallRule,
    ProviderError,
    ProviderTimeout,
    PydoCloud,
)
from sandbox.addresses import DEFAULT_CLAIMS_DIR
from sandbox.doapi.processes import owned_processes
from tests.test_doapi import IMAGE, REGION, SIZE, TOKEN, LocalApi, cloud_config, local_doapi


class Sleeps:
    """An injectable sleep that records what the adapter asked for and returns at once."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[LocalApi]:
    with local_doapi(tmp_path / "sandbox") as a:
        yield a


def make_cloud(api: LocalApi, **kwargs: Any) -> PydoCloud:
    kwargs.setdefault("poll_interval_s", 0.05)
    cloud = PydoCloud(kwargs.pop("token", TOKEN), api.url, api.handle.ca_path, **kwargs)
    api.closers.append(cloud.close)
    return cloud


def spec(name: str, **fields: Any) -> DropletSpec:
    return DropletSpec(name=name, region=REGION, size=SIZE, image=IMAGE, **fields)


def posts_to_droplets(api: LocalApi) -> int:
    return sum(1 for r in api.requests_log() if (r["method"], r["path"]) == ("POST", "/v2/droplets"))


def test_pydo_cloud_is_a_cloud(api: LocalApi) -> None:
    cloud: Cloud = make_cloud(api)
    assert cloud.list_droplets() == []


def test_list_reads_every_page(api: LocalApi) -> None:
    cloud = make_cloud(api, page_size=2)
    made = [cloud.create_droplet(spec(f"page-{i}", tags=("fleet",))) for i in range(5)]
    cloud.create_droplet(spec("outsider-1"))
    api.call("DELETE", "/_sandbox/requests")
    listed = cloud.list_droplets("fleet")
    assert [d.id for d in listed] == [d.id for d in made]
    pages = [r["query"].get("page") for r in api.requests_log() if r["path"] == "/v2/droplets"]
    assert pages == ["1", "2", "3"]
    assert len(cloud.list_droplets()) == 6


def test_documented_404s_become_none_or_false(api: LocalApi) -> None:
    cloud = make_cloud(api)
    assert cloud.get_droplet(99) is None
    assert cloud.get_action(99) is None
    assert cloud.get_reserved_ip("127.0.9.9") is None
    assert cloud.destroy_droplet(99) is False
    with pytest.raises(ProviderError) as e:
        cloud.power_cycle(99)
    assert (e.value.status, e.value.error_id) == (404, "not_found")
    with pytest.raises(ProviderError) as e:
        cloud.wait_action(99, 1)
    assert e.value.status == 404


def test_429_is_waited_out_for_its_retry_after(api: LocalApi) -> None:
    sleeps = Sleeps()
    cloud = make_cloud(api, sleep=sleeps)
    api.faults(fail=[{"method": "GET", "path_regex": "^/v2/droplets$", "status": 429, "count": 1,
                      "retry_after_s": 7}])
    assert cloud.list_droplets() == []
    assert sleeps.calls == [7.0]
    assert [r["status"] for r in api.requests_log()] == [429, 200]


def test_503_on_a_read_is_retried_with_backoff(api: LocalApi) -> None:
    sleeps = Sleeps()
    cloud = make_cloud(api, sleep=sleeps, backoff_s=0.25)
    api.faults(fail=[{"method": "GET", "path_regex": "^/v2/droplets$", "status": 503, "count": 2}])
    assert cloud.list_droplets() == []
    assert sleeps.calls == [0.25, 0.5]


def test_500_before_the_create_is_committed_retries_once_and_makes_one_droplet(api: LocalApi) -> None:
    cloud = make_cloud(api, sleep=Sleeps())
    api.faults(fail=[{"method": "POST", "path_regex": "^/v2/droplets$", "status": 500, "count": 1}])
    droplet = cloud.create_droplet(spec("retry-1"))
    assert posts_to_droplets(api) == 2
    assert [d.id for d in cloud.list_droplets()] == [droplet.id]


def test_500_after_the_create_is_committed_adopts_the_droplet_instead_of_creating_again(api: LocalApi) -> None:
    cloud = make_cloud(api, sleep=Sleeps())
    api.faults(fail=[{"method": "POST", "path_regex": "^/v2/droplets$", "status": 500, "count": 1,
                      "after_commit": True}])
    droplet = cloud.create_droplet(spec("lost-answer-1"))
    assert posts_to_droplets(api) == 1
    assert [d.id for d in cloud.list_droplets()] == [droplet.id]
    assert droplet.name == "lost-answer-1" and droplet.request_tag is not None


def test_a_duplicate_create_is_destroyed_keeping_the_oldest(api: LocalApi) -> None:
    cloud = make_cloud(api, new_request_id=lambda: "dup")
    first = api.create("twin-1", tags=["rw-req-dup"])  # what a retried POST of this request made earlier
    droplet = cloud.create_droplet(spec("twin-1"))
    assert droplet.id == first["id"]
    assert [d.id for d in cloud.list_droplets()] == [first["id"]]


def test_a_request_id_makes_create_idempotent_across_calls(api: LocalApi) -> None:
    cloud = make_cloud(api)
    one = cloud.create_droplet(spec("idem-1", request_id="plan-42-step-1"))
    again = cloud.create_droplet(spec("idem-1", request_id="plan-42-step-1"))
    assert again.id == one.id
    assert posts_to_droplets(api) == 1
    assert "rw-req-plan-42-step-1" in one.tags


def test_low_ratelimit_remaining_slows_down_before_a_429(api: LocalApi) -> None:
    sleeps = Sleeps()
    cloud = make_cloud(api, sleep=sleeps, min_remaining=5)
    api.faults(ratelimit={"limit": 100, "refill_per_s": 0.5, "remaining": 4})
    cloud.list_droplets()  # answers ratelimit-remaining 3: at or below the floor of 5
    assert sleeps.calls == []
    cloud.list_droplets()
    assert len(sleeps.calls) == 1 and 0 < sleeps.calls[0] <= 3.0  # until ratelimit-reset, whole seconds
    assert 429 not in [r["status"] for r in api.requests_log()]


def test_a_droplet_boots_its_user_data_and_obeys_power_actions(api: LocalApi) -> None:
    cloud = make_cloud(api)
    boot_script = (
        "#!/bin/sh\n"
        'echo "$REDWARDEN_DROPLET_NAME $REDWARDEN_DROPLET_ADDRESS" >> "$REDWARDEN_DROPLET_ROOT/var/log/boots"\n'
        "sleep 300 >/dev/null 2>&1 &\n"
    )
    user_data = cloud_config({
        "write_files": [
            {"path": "/etc/redwarden/hello.txt", "content": "hello\n", "permissions": "0600"},
            {"path": "/etc/redwarden/boot.d/50-services", "content": boot_script, "permissions": "0755"},
        ],
        "runcmd": [
            "mkdir -p var/log && echo first >> var/log/cloud-init-ran",
            ["sh", "-c", "env > var/log/env"],
            '"$REDWARDEN_DROPLET_ROOT/etc/redwarden/boot.d/50-services"',  # the services start on this boot too
        ],
    })
    created = cloud.create_droplet(spec("redis-1", user_data=user_data, tags=("redis",)))
    assert created.status == "new"
    droplet = cloud.wait_active(created.id, 20)
    assert droplet.private_ip is not None and droplet.private_ip == droplet.public_ip
    assert (DEFAULT_CLAIMS_DIR / droplet.private_ip).read_text().strip() == str(api.root)
    root = api.root / "droplets" / f"redis-1-{droplet.id}" / "root"
    hello = root / "etc" / "redwarden" / "hello.txt"
    assert hello.read_text() == "hello\n" and hello.stat().st_mode & 0o777 == 0o600
    env = dict(line.split("=", 1) for line in (root / "var/log/env").read_text().splitlines() if "=" in line)
    assert env["REDWARDEN_DROPLET_ROOT"] == str(root) and env["REDWARDEN_DROPLET_ID"] == str(droplet.id)
    assert env["REDWARDEN_DROPLET_NAME"] == "redis-1" and env["REDWARDEN_DROPLET_ADDRESS"] == droplet.private_ip
    assert env["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)
    first_pids = {p.pid for p in owned_processes(root, droplet.id)}
    assert first_pids and api.sandbox_droplet(droplet.id)["pids"] == sorted(first_pids)
    assert all(psutil.Process(pid).environ()["REDWARDEN_DROPLET_ID"] == str(droplet.id) for pid in first_pids)

    off = cloud.wait_action(cloud.power_off(droplet.id).id, 20)
    assert off.ok and off.type == "power_off"
    assert owned_processes(root, droplet.id) == []
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                   for pid in first_pids)
    stopped = cloud.get_droplet(droplet.id)
    assert stopped is not None and stopped.status == "off" and stopped.private_ip == droplet.private_ip

    on = cloud.wait_action(cloud.power_on(droplet.id).id, 20)
    assert on.ok
    assert cloud.wait_active(droplet.id, 5).status == "active"
    second_pids = {p.pid for p in owned_processes(root, droplet.id)}
    assert second_pids and not second_pids & first_pids
    assert (root / "var/log/cloud-init-ran").read_text() == "first\n"  # cloud-init ran once, boot.d twice
    assert (root / "var/log/boots").read_text().splitlines() == [f"redis-1 {droplet.private_ip}"] * 2
    assert (root / "etc/redwarden/hello.txt").exists()  # the disk is kept

    assert cloud.wait_action(cloud.reboot(droplet.id).id, 20).ok
    assert cloud.wait_action(cloud.power_cycle(droplet.id).id, 20).ok
    assert len((root / "var/log/boots").read_text().splitlines()) == 4

    assert cloud.destroy_droplet(droplet.id) is True
    assert cloud.get_droplet(droplet.id) is None
    assert owned_processes(root, droplet.id) == []
    claim = DEFAULT_CLAIMS_DIR / droplet.private_ip
    assert not claim.exists() or claim.read_text().strip() != str(api.root)
    assert (api.root / "destroyed" / f"redis-1-{droplet.id}" / "cloud-init-output.log").exists()


def test_an_errored_action_is_returned_not_raised(api: LocalApi) -> None:
    cloud = make_cloud(api)
    droplet = cloud.wait_active(cloud.create_droplet(spec("flaky-1")).id, 20)
    api.faults(action_errors=["reboot"])
    result = cloud.wait_action(cloud.reboot(droplet.id).id, 20)
    assert isinstance(result, ActionResult) and result.status == "errored" and not result.ok


def test_waits_time_out_with_provider_timeout(api: LocalApi) -> None:
    cloud = make_cloud(api)
    api.faults(boot_delay_s=30)
    created = cloud.create_droplet(spec("stuck-1"))
    with pytest.raises(ProviderTimeout, match="still new"):
        cloud.wait_active(created.id, 0.3)
    create_action = next(r for r in api.get("/v2/actions").json()["actions"] if r["type"] == "create")
    with pytest.raises(ProviderTimeout, match="in progress"):
        cloud.wait_action(create_action["id"], 0.3)
    assert cloud.destroy_droplet(created.id) is True


def test_invalid_creates_are_provider_errors_with_do_ids(api: LocalApi) -> None:
    cloud = make_cloud(api)
    with pytest.raises(ProviderError) as e:
        cloud.create_droplet(DropletSpec("x-1", "mars1", SIZE, IMAGE))
    assert (e.value.status, e.value.error_id) == (422, "unprocessable_entity") and "mars1" in str(e.value)
    with pytest.raises(ProviderError) as e:
        cloud.create_droplet(spec("big-1", user_data="#cloud-config\n" + "#" * (64 * 1024)))
    assert e.value.status == 422 and "64 KiB" in str(e.value)
    assert cloud.list_droplets() == []


def test_a_bad_token_is_a_401_provider_error_that_never_shows_the_token(
        api: LocalApi, capsys: pytest.CaptureFixture[str]) -> None:
    secret = "wrong-" + TOKEN
    cloud = make_cloud(api, token=secret)
    with pytest.raises(ProviderError) as e:
        cloud.list_droplets()
    assert e.value.status == 401 and not e.value.retryable
    shown = [str(e.value), repr(e.value), repr(cloud), str(e.value.__cause__), repr(e.value.__cause__)]
    with pytest.raises(ProviderError) as e2:
        cloud.create_droplet(spec("nope-1"))
    shown += [str(e2.value), repr(e2.value)]
    out = capsys.readouterr()
    assert not any(secret in s or TOKEN in s for s in [*shown, out.out, out.err])
    assert api.get("/v2/droplets").json()["meta"]["total"] == 0


def test_the_adapter_refuses_plain_http_and_an_empty_token(api: LocalApi) -> None:
    with pytest.raises(ProviderError, match="https"):
        PydoCloud(TOKEN, api.url.replace("https://", "http://"))
    with pytest.raises(ProviderError, match="token"):
        PydoCloud("", api.url, api.handle.ca_path)


def test_a_wrong_ca_is_a_tls_error_without_retries(api: LocalApi, tmp_path: Path) -> None:
    with local_doapi(tmp_path / "other") as other:
        sleeps = Sleeps()
        with PydoCloud(TOKEN, api.url, other.handle.ca_path, sleep=sleeps) as cloud, \
                pytest.raises(ProviderError, match="TLS"):
            cloud.list_droplets()
        assert sleeps.calls == []


def test_reserved_ip_firewall_and_tag(api: LocalApi) -> None:
    cloud = make_cloud(api)
    droplet = cloud.wait_active(cloud.create_droplet(spec("master-1", tags=("redis",))).id, 20)
    ip = api.post("/v2/reserved_ips", {"region": REGION}).json()["reserved_ip"]["ip"]
    reserved = cloud.get_reserved_ip(ip)
    assert reserved is not None and reserved.droplet_id is None and reserved.region == REGION
    assert cloud.wait_action(cloud.assign_reserved_ip(ip, droplet.id).id, 20).ok
    assigned = cloud.get_reserved_ip(ip)
    assert assigned is not None and assigned.droplet_id == droplet.id

    cloud.ensure_tag("redis")
    cloud.ensure_tag("redis")
    with pytest.raises(ProviderError) as e:
        cloud.ensure_tag("not a tag")
    assert e.value.status == 400

    rules = [FirewallRule("tcp", "6379", tags=("redis",)), FirewallRule("tcp", "26379", tags=("redis",))]
    firewall = cloud.create_firewall("redis-shop", rules, tags=["redis"])
    assert firewall.status == "succeeded" and firewall.tags == ("redis",)
    assert [(r.ports, r.tags) for r in firewall.inbound_rules] == [("6379", ("redis",)), ("26379", ("redis",))]
    assert {r.protocol for r in firewall.outbound_rules} == {"tcp", "udp", "icmp"}
    with pytest.raises(ProviderError) as e:
        cloud.create_firewall("bad name", rules)
    assert e.value.status == 400


def test_a_lost_firewall_answer_is_adopted(api: LocalApi) -> None:
    cloud = make_cloud(api, sleep=Sleeps())
    api.faults(fail=[{"method": "POST", "path_regex": "^/v2/firewalls$", "status": 503, "count": 1,
                      "after_commit": True}])
    firewall = cloud.create_firewall("redis-once", [FirewallRule("tcp", "6379", tags=("redis",))])
    listed = api.get("/v2/firewalls").json()["firewalls"]
    assert [f["id"] for f in listed] == [firewall.id]


def test_a_lost_power_cycle_answer_is_adopted(api: LocalApi) -> None:
    cloud = make_cloud(api, sleep=Sleeps())
    droplet = cloud.wait_active(cloud.create_droplet(spec("cycle-1")).id, 20)
    api.faults(fail=[{"method": "POST", "path_regex": r"/actions$", "status": 504, "count": 1,
                      "after_commit": True}])
    action = cloud.power_cycle(droplet.id)
    assert action.type == "power_cycle"
    assert cloud.wait_action(action.id, 20).ok
    cycles = [a for a in api.get(f"/v2/droplets/{droplet.id}/actions").json()["actions"] if a["type"] == "power_cycle"]
    assert [a["id"] for a in cycles] == [action.id]


def test_droplet_parsing_keeps_what_the_core_needs(api: LocalApi) -> None:
    cloud = make_cloud(api)
    vpc = api.post("/v2/vpcs", {"name": "shop-net", "region": REGION}).json()["vpc"]
    created = cloud.create_droplet(spec("parsed-1", vpc_uuid=vpc["id"], tags=("a", "b"), monitoring=True))
    droplet = cloud.wait_active(created.id, 20)
    assert isinstance(droplet, Droplet)
    assert (droplet.region, droplet.size, droplet.image, droplet.vpc_uuid) == (REGION, SIZE, IMAGE, vpc["id"])
    assert droplet.tags[:2] == ("a", "b") and droplet.created_at.tzinfo is not None
    snapshot = api.get("/v2/images", params={"private": "true"}).json()["images"][0]
    from_snapshot = cloud.create_droplet(DropletSpec("snap-1", REGION, SIZE, snapshot["id"]))
    assert from_snapshot.image == str(snapshot["id"])
