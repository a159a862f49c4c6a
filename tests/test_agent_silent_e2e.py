"""AGENT_SILENT's gentler remedy end to end on the sandbox (issue #11): with `agent_silent_reboot_after_s`
set to a few seconds, a replica whose agent is killed (its Redis and Sentinel untouched) gets one graceful
reboot through the local DigitalOcean API, never a power-cycle, and its agent comes back."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from agent import processes as runner
from sandbox.cluster import controller_spec
from tests.conftest import Sandbox, redwarden, running_sandbox
from tests.helpers import wait_until
from tests.test_heal_e2e import FAST, actions, fully_healthy

pytestmark = pytest.mark.sandbox

REBOOT_AFTER_S = 4


def restart_controller_with(sb: Sandbox, heal_line: str) -> None:
    """Stop the sandbox's controller, add `heal_line` to its [heal] section, start it again."""
    spec = controller_spec(sb.root)
    conf = sb.root / "controller" / "controller.toml"
    conf.write_text(conf.read_text().replace("[heal]\n", f"[heal]\n{heal_line}\n", 1))
    pid = runner.pid_of(spec)
    assert pid is not None
    psutil.Process(pid).send_signal(signal.SIGTERM)
    runner.wait_gone([pid], 20)
    runner.start(spec)


@pytest.fixture(scope="module")
def gentle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with running_sandbox(tmp_path_factory.mktemp("gentle"), *FAST) as sb:
        restart_controller_with(sb, f"agent_silent_reboot_after_s = {REBOOT_AFTER_S}")
        yield sb


def droplet_of(sb: Sandbox, node: str) -> dict[str, Any]:
    return next(d for d in sb.status()["droplets"] if d["name"] == node)


def test_a_replica_whose_agent_died_is_rebooted_once_never_power_cycled_and_its_agent_returns(
        gentle: Sandbox) -> None:
    wait_until(lambda: fully_healthy(gentle), 90, "a fully healthy cluster")
    replica = next(n["name"] for n in gentle.cluster()["nodes"] if n["role"] == "replica")
    agent_before = droplet_of(gentle, replica)["pids"]["agent"]
    mark = max((a["id"] for a in actions(gentle)), default=0)

    gentle.fault(replica, "agent", "kill")
    rebooted = wait_until(lambda: [a for a in actions(gentle, "Reboot") if a["id"] > mark and a["node"] == replica
                                   and a["status"] in ("succeeded", "failed")], 60, f"a reboot of {replica}")
    assert [a["status"] for a in rebooted] == ["succeeded"], rebooted
    assert "silent" in rebooted[0]["reason"] and "Redis is healthy" in rebooted[0]["reason"]
    wait_until(lambda: fully_healthy(gentle), 120, f"{replica}'s agent back and the cluster fully healthy")
    agent_after = droplet_of(gentle, replica)["pids"]["agent"]
    assert agent_after is not None and agent_after != agent_before
    since = [a for a in actions(gentle) if a["id"] > mark]
    assert [a["kind"] for a in since] == ["Reboot"], since  # once; no power-cycle, no reprovision

    # the readable heal state is not reset by the operator command (it is only for an unreadable one)
    refused = redwarden("heal", "reset-state", "sandbox", *gentle.conn_args(), check=False)
    assert refused.returncode == 1 and "reads fine" in refused.stderr
