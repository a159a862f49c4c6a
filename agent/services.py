"""Starting and restarting a droplet's services: one interface, two implementations.

Layer: adapter. On a real droplet the services are systemd units (`redis-server`, `redis-sentinel`,
`redwarden-agent`); the agent runs unprivileged (and with NoNewPrivileges, so no sudo) and asks
systemd over D-Bus, where a polkit rule from the package allows the `redwarden` user to start, stop
and restart exactly those units (see packaging/). In the sandbox they are processes under the droplet's own directory,
run by `agent.processes`. The agent's directives and the bootstrap only see `Services`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from agent import processes
from agent.config import AgentConfig
from agent.layout import SERVICES, NodeLayout
from agent.processes import ServiceSpec

PROCESS_SERVICES = ("process", "sandbox")  # "sandbox": the name older sandbox droplets were configured with
UNITS = {"redis": "redis-server", "sentinel": "redis-sentinel", "agent": "redwarden-agent"}


class ServiceError(Exception):
    """A service could not be started, stopped or restarted."""


class Services(Protocol):
    def start(self, service: str) -> None: ...
    def restart(self, service: str) -> None: ...
    def stop(self, service: str) -> None: ...
    def running(self, service: str) -> bool: ...


def _check(service: str) -> None:
    if service not in SERVICES:
        raise ServiceError(f"unknown service {service!r} (known: {', '.join(SERVICES)})")


class SystemdServices:
    def _systemctl(self, action: str, service: str) -> None:
        _check(service)
        argv = ["systemctl", "--no-ask-password", action, UNITS[service]]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if proc.returncode != 0:
            raise ServiceError(f"systemctl {action} {UNITS[service]} failed: {proc.stderr.strip()[:300]}")

    def start(self, service: str) -> None:
        self._systemctl("enable", service)
        self._systemctl("start", service)

    def restart(self, service: str) -> None:
        self._systemctl("restart", service)

    def stop(self, service: str) -> None:
        self._systemctl("stop", service)

    def running(self, service: str) -> bool:
        _check(service)
        proc = subprocess.run(["systemctl", "is-active", "--quiet", UNITS[service]], check=False, timeout=10)
        return proc.returncode == 0


class ProcessServices:
    """Processes under the droplet's directory, started detached with pidfiles (agent.processes)."""

    def __init__(self, layout: NodeLayout, agent_config: Path, env: Mapping[str, str] | None = None,
                 group: int | None = None) -> None:
        """`env`: extra environment for the processes (the droplet's markers when started from outside it);
        `group`: the group id they run with (None: the caller's)."""

        extra = dict(env or {})
        logs = layout.log_dir
        redis_server = os.environ.get("REDWARDEN_REDIS_SERVER") or shutil.which("redis-server") or "redis-server"
        redis_sentinel = (
            os.environ.get("REDWARDEN_REDIS_SENTINEL") or shutil.which("redis-sentinel") or "redis-sentinel"
        )
        self.specs = {
            "redis": ServiceSpec("redis", (redis_server, str(layout.redis_conf)), layout.redis_pidfile,
                                 logs / "redis-server.log", str(layout.redis_conf), cwd=layout.redis_data_dir,
                                 env=extra, group=group),
            "sentinel": ServiceSpec("sentinel", (redis_sentinel, str(layout.sentinel_conf)), layout.sentinel_pidfile,
                                    logs / "redis-sentinel.log", str(layout.sentinel_conf), cwd=layout.sentinel_dir,
                                    env=extra, group=group),
            "agent": ServiceSpec("agent", (sys.executable, "-m", "agent.cli", "run", "--config", str(agent_config)),
                                 layout.path("/run/redwarden/agent.pid"), logs / "agent.log", str(agent_config),
                                 cwd=layout.path("/"), env=extra, group=group),
        }

    def start(self, service: str) -> None:

        _check(service)
        processes.start(self.specs[service])

    def stop(self, service: str) -> None:

        _check(service)
        processes.stop_all([self.specs[service]])

    def restart(self, service: str) -> None:
        self.stop(service)
        self.start(service)

    def running(self, service: str) -> bool:

        _check(service)
        return processes.pid_of(self.specs[service]) is not None


def services_for(config: AgentConfig, config_path: Path) -> Services:
    """The services as this node runs them: systemd units on a droplet, processes where there is no systemd."""
    if config.services in PROCESS_SERVICES:
        return ProcessServices(config.layout(), config_path)
    return SystemdServices()
