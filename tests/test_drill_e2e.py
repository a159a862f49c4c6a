"""`redwarden drill` end to end on a sandbox: real redis-server, redis-sentinel, agents, a healing controller
and a local DigitalOcean; a Sentinel-aware writer runs through each fault.

The kill-master scenario is also the story "master redis SIGKILL: fast failover, the old master restarted by
its agent and back as a replica, every Sentinel agrees".
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Sandbox, redwarden, start_sandbox
from tests.helpers import wait_until

pytestmark = pytest.mark.sandbox

REQUIRED = {"fault", "steps", "write_unavailable_s", "writes_acked", "writes_lost", "redundancy_restored_s"}


@pytest.fixture(scope="module")
def healing_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A 3-node cluster reporting every 0.5 s, with healing on (the default); torn down always."""
    root: Path = tmp_path_factory.mktemp("drill")
    sb = start_sandbox(root, "--report-interval-s", "0.5")
    try:
        yield sb
    finally:
        redwarden("sandbox", "down", "--dir", str(root), check=False)


def drill(sb: Sandbox, fault: str) -> dict[str, Any]:
    proc = redwarden("drill", "sandbox", "--fault", fault, "--sandbox", str(sb.root), "--json", "--timeout", "200",
                     check=False, timeout=280)
    assert proc.returncode == 0, f"drill {fault} failed ({proc.returncode}): {proc.stderr}\n{proc.stdout[-3000:]}"
    result: dict[str, Any] = json.loads(proc.stdout)
    assert set(result) >= REQUIRED
    assert result["fault"] == fault
    return result


def at(result: dict[str, Any], step: str) -> float | None:
    value: float | None = next(s["at_s"] for s in result["steps"] if s["name"] == step)
    return value


def fully_redundant(sb: Sandbox) -> dict[str, Any] | None:
    c = sb.cluster()
    roles = sorted(n["role"] or "-" for n in c["nodes"])
    ok = (c["health"] == "healthy" and roles == ["master", "replica", "replica"]
          and all(n["redis_up"] and n["sentinel_up"] for n in c["nodes"])
          and all(n["link"] == "up" and n["master_of_replica"] == c["master"] for n in c["nodes"]
                  if n["role"] == "replica")
          and c["sentinels"]["reachable"] == 3 and c["sentinels"]["agree"]
          and c["sentinels"]["votes"] == {c["master"]: 3})
    return c if ok else None


def test_kill_master_fails_over_fast_loses_no_acknowledged_write_and_the_old_master_rejoins(
        healing_sandbox: Sandbox) -> None:
    sb = healing_sandbox
    before = wait_until(lambda: fully_redundant(sb), 60, "a fully redundant cluster")
    old = next(n for n in before["nodes"] if n["role"] == "master")

    result = drill(sb, "kill-master")

    assert result["node"] == old["name"] and result["old_master"] == old["address"]
    assert at(result, "new_master") is not None and at(result, "writes_accepted") is not None
    assert at(result, "first_finding") is not None and at(result, "redundancy_restored") is not None
    assert result["writes_acked"] > 0
    assert result["writes_lost"] == 0
    assert any(a["kind"] == "Failover" for a in result["actions"]), result["actions"]  # fast failover, not the timer
    # the old master is back, as a replica of the new one, and every Sentinel names the new one
    after = wait_until(lambda: fully_redundant(sb), 30, "the old master back as a replica")
    assert after["master"] != old["address"]
    rejoined = next(n for n in after["nodes"] if n["name"] == old["name"])
    assert (rejoined["role"], rejoined["link"], rejoined["master_of_replica"]) == ("replica", "up", after["master"])
    assert all(n["sentinel_master"] == after["master"] for n in after["nodes"])


def test_destroy_replica_is_replaced_and_redundancy_restored(healing_sandbox: Sandbox) -> None:
    sb = healing_sandbox
    wait_until(lambda: fully_redundant(sb), 60, "a fully redundant cluster")

    result = drill(sb, "destroy-replica")

    for step in ("replacement_created", "replica_in_sync", "redundancy_restored"):
        assert at(result, step) is not None, (step, result["steps"])
    assert at(result, "new_master") is None  # a replica's loss moves no master
    assert result["writes_lost"] == 0 and result["writes_acked"] > 0
    destroyed = result["node"]
    after = wait_until(lambda: fully_redundant(sb), 30, "3 healthy nodes after the replacement")
    names = {n["name"] for n in after["nodes"]}
    assert destroyed not in names and len(names) == 3
    active = {d["name"] for d in sb.status()["droplets"] if d["status"] == "active"}
    assert destroyed not in active and names <= active
