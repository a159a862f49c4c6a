"""Two rails of issue #10 checked on their own: bootstrap writes no value it has not checked into a config
file, and the executor re-reads a droplet from the cloud before a disruptive action and refuses one that is
not what the plan saw."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from typing import Any

import pytest

from agent.bootstrap import _address
from agent.layout import NodeLayout, render_redis_conf, render_sentinel_conf
from controller.adapters.cloud import Droplet as CloudDroplet
from controller.adapters.cloud import ProviderError
from controller.app.executor import Executor
from controller.core.planner import Droplet, HealSnapshot, HealState
from tests.factories import scenario_view

LAYOUT = NodeLayout(address="10.0.0.5")


@pytest.mark.parametrize(("password", "master"), [
    ("pw\nenable-module-command yes", None),  # a second line through the password
    ("pw", "fe80::1%x 6379\nrequirepass attacker:6379"),  # the reproduced injection through the master
    ("pw", "host.example:6379"),
])
def test_bootstrap_refuses_values_that_would_add_a_line(password: str, master: str | None) -> None:
    with pytest.raises(ValueError):
        render_redis_conf(LAYOUT, password, master)
    with pytest.raises(ValueError):
        render_sentinel_conf(LAYOUT, password, master or "10.0.0.6:6379")
    with pytest.raises(ValueError):
        render_redis_conf(dataclasses.replace(LAYOUT, address="10.0.0.5 6379\nbind 0.0.0.0"), "pw", None)


def test_a_sentinels_answer_counts_only_as_an_ip_literal_and_port() -> None:
    assert _address(["10.0.0.6", "6379"]) == "10.0.0.6:6379"
    assert _address(["fe80::1%x 6379\nrequirepass attacker", "6379"]) is None
    assert _address(["redis.example", "6379"]) is None


class Cloud:
    def __init__(self, droplet: CloudDroplet | None) -> None:
        self.droplet = droplet
        self.destroyed: list[int] = []

    def get_droplet(self, droplet_id: int) -> CloudDroplet | None:
        return self.droplet

    def destroy_droplet(self, droplet_id: int) -> bool:
        self.destroyed.append(droplet_id)
        return True


def cloud_droplet(ip: str | None, tags: tuple[str, ...] = ("redwarden-sandbox",)) -> CloudDroplet:
    return CloudDroplet(103, "redis-3", "active", "nyc3", "s", "i", None, tags, ip, None, datetime.now(timezone.utc))


class Directives:
    def on_ack(self, handler: Any) -> None:
        pass


def executor(cloud: Cloud) -> Executor:
    nothing: Any = None
    return Executor(nothing, Directives(), nothing, nothing, lambda _: nothing, cloud, nothing,  # type: ignore[arg-type]
                    lambda: 0.0, cluster_tags={"sandbox": "redwarden-sandbox"})


def snapshot() -> HealSnapshot:
    view = scenario_view("healthy")  # master redis-1 at 127.0.0.3
    return HealSnapshot(view, (), HealState(cluster=view.name), (Droplet(103, "redis-3", "active", "127.0.0.5"),))


def test_the_executor_touches_only_the_droplet_the_plan_saw() -> None:
    assert executor(Cloud(cloud_droplet("127.0.0.5")))._verify_target(snapshot(), 103) is True
    assert executor(Cloud(None))._verify_target(snapshot(), 103) is False  # gone: nothing to touch
    for bad, why in ((cloud_droplet("127.0.0.5", tags=("someone-else",)), "tag"),
                     (cloud_droplet("127.0.0.9"), "private IP"),
                     (cloud_droplet(None), "private IP")):
        with pytest.raises(ProviderError, match=why):
            executor(Cloud(bad))._verify_target(snapshot(), 103)
    master_ip = dataclasses.replace(snapshot(), droplets=(Droplet(103, "redis-3", "active", "127.0.0.3"),))
    with pytest.raises(ProviderError, match="master's IP"):
        executor(Cloud(cloud_droplet("127.0.0.3")))._verify_target(master_ip, 103)
