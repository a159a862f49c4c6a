"""Renders the user_data a new Redis droplet boots with (cloud-config), from a template users can read
and override (`user_data_template` in a cluster's settings). Defaults: `templates/user-data-droplet.tmpl`
for real droplets (installs the agent package, keeps the stock Redis units from starting, runs the
bootstrap), `templates/user-data-sandbox.tmpl` for the sandbox's (no apt, no systemd: JSON after
`#cloud-config`, which is YAML too).

Layer: pure (the template text is read by the caller). Placeholders: `${agent_toml}`, `${enroll_token}`,
`${install_agent}`, each rendered as a JSON string. The result carries no password and no cluster
secret, only a one-time enrollment token (see controller/enroll.py).
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path

TEMPLATES = Path(__file__).parent / "templates"
DEFAULT_TEMPLATES = {"systemd": TEMPLATES / "user-data-droplet.tmpl", "sandbox": TEMPLATES / "user-data-sandbox.tmpl"}
MAX_USER_DATA_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class NodeBoot:
    cluster: str
    node: str
    controller_url: str
    master_name: str
    sentinels: tuple[str, ...]
    quorum: int
    down_after_ms: int
    failover_timeout_ms: int
    report_interval_s: float
    services: str  # "systemd" on droplets, "sandbox" in the sandbox
    agent_deb_url: str | None = None  # where to get the agent package when the image lacks it
    metadata_url: str | None = None  # the droplet's metadata service (gives its private IP and id)


def agent_toml(boot: NodeBoot) -> str:
    sentinels = ", ".join(json.dumps(s) for s in boot.sentinels)
    return "\n".join([
        "# Written by the controller for this droplet (user_data). address and droplet_id come from the droplet.",
        f"cluster = {json.dumps(boot.cluster)}",
        f"node = {json.dumps(boot.node)}",
        'address = ""',
        f"controller_url = {json.dumps(boot.controller_url)}",
        f"master_name = {json.dumps(boot.master_name)}",
        f"report_interval_s = {boot.report_interval_s}",
        f"sentinels = [{sentinels}]",
        f"quorum = {boot.quorum}",
        f"down_after_ms = {boot.down_after_ms}",
        f"failover_timeout_ms = {boot.failover_timeout_ms}",
        f"services = {json.dumps(boot.services)}",
        f"metadata_url = {json.dumps(boot.metadata_url)}" if boot.metadata_url else "",
        'redis_password_file = "/etc/redwarden/redis.pass"',
        'cluster_secret_file = "/etc/redwarden/cluster.secret"',
        'enroll_token_file = "/etc/redwarden/enroll.token"',
        "",
    ])


def render_user_data(template: str, boot: NodeBoot, enroll_token: str) -> str:
    if boot.agent_deb_url:
        install = (f"command -v redwarden-agent >/dev/null 2>&1 || {{ curl -fsSL {json.dumps(boot.agent_deb_url)} "
                   "-o /tmp/redwarden-agent.deb && apt-get install -y /tmp/redwarden-agent.deb; }")
    else:
        install = "command -v redwarden-agent >/dev/null 2>&1 || { echo 'redwarden-agent missing' >&2; exit 1; }"
    text = string.Template(template).substitute(
        agent_toml=json.dumps(agent_toml(boot)),
        enroll_token=json.dumps(enroll_token + "\n"),
        install_agent=json.dumps(install),
    )
    size = len(text.encode())
    if size > MAX_USER_DATA_BYTES:
        raise ValueError(f"user_data is {size} bytes, DigitalOcean's limit is {MAX_USER_DATA_BYTES}")
    return text

