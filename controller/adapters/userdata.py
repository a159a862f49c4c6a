"""Renders the user_data a new Redis droplet boots with (cloud-config), from a template users can read
and override (`user_data_template` in a cluster's settings). Defaults: `templates/user-data-droplet.tmpl`
for real droplets (installs the agent package, keeps the stock Redis units from starting, runs the
bootstrap), `templates/user-data-sandbox.tmpl` for the sandbox's (no apt, no systemd: JSON after
`#cloud-config`, which is YAML too).

Layer: pure (the template text is read by the caller). Placeholders: `${agent_toml}`, `${enroll_token}`,
`${install_agent}`, each rendered as a JSON string. The result carries no password and no key, only a
one-time enrollment token (see `controller.app.enrollment`), and the controller's CA certificate, which is
public. A package fetched from `agent_deb_url` is installed only when its SHA-256 is the configured one.
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
    agent_deb_sha256: str | None = None  # its checksum, verified before installing
    metadata_url: str | None = None  # the droplet's metadata service (gives its private IP and id)
    controller_ca: str | None = None  # PEM of the CA the agent verifies the controller with (public)
    acl: bool = False  # the cluster has ACL users: the agent connects to Redis as `monitor`


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
        f"controller_ca_pem = {json.dumps(boot.controller_ca)}" if boot.controller_ca else "",
        'redis_password_file = "/etc/redwarden/redis.pass"',
        'redis_users_file = "/etc/redwarden/redis-users.json"',  # ACL mode: what the enrollment hands over
        'redis_username = "monitor"' if boot.acl else "",
        'node_key_file = "/etc/redwarden/node.key"',
        'enroll_token_file = "/etc/redwarden/enroll.token"',
        "",
    ])


def render_user_data(template: str, boot: NodeBoot, enroll_token: str) -> str:
    if boot.agent_deb_url:
        if not boot.agent_deb_sha256:
            raise ValueError("agent_deb_url without agent_deb_sha256: the package could not be checked")
        check = f"echo {boot.agent_deb_sha256.lower()}'  /tmp/redwarden-agent.deb' | sha256sum -c --quiet -"
        install = (f"command -v redwarden-agent >/dev/null 2>&1 || {{ curl -fsSL {json.dumps(boot.agent_deb_url)} "
                   f"-o /tmp/redwarden-agent.deb && {check} && apt-get install -y /tmp/redwarden-agent.deb; }}")
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

