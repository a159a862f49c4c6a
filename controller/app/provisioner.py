"""Making Redis droplets for a cluster: user_data that bootstraps them, created through the cloud.

Layer: app. Used by the executor (a replacement during a reprovision) and by the API (`redwarden cluster
create` asks for each node). A create is idempotent per request id (the cloud adapter adopts a droplet a
lost answer already made), and each new droplet gets a one-time enrollment token instead of secrets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from controller.adapters.cloud import Cloud, Droplet, DropletSpec, FirewallRule, ProviderError
from controller.adapters.storage.credentials import NodeCredentials
from controller.adapters.storage.enrollments import Enrollments
from controller.adapters.userdata import DEFAULT_TEMPLATES, NodeBoot, render_user_data
from controller.config import ClusterConfig
from protocol import sentinel

log = structlog.get_logger("redwarden.controller")


@dataclass(frozen=True, slots=True)
class Provisioning:
    """How new droplets of a cluster are made (from the cluster's settings)."""

    region: str
    size: str
    image: str
    tag: str
    vpc_uuid: str | None
    ssh_keys: tuple[str, ...]
    controller_url: str
    controller_ca: str | None  # the PEM agents verify the controller with (public)
    services: str
    agent_deb_url: str | None
    agent_deb_sha256: str | None
    metadata_url: str | None
    user_data_template: str | None


class Provisioner:
    def __init__(self, clusters: Mapping[str, ClusterConfig], cloud: Cloud | None, enrollments: Enrollments,
                 credentials: NodeCredentials, provisioning: Callable[[str], Provisioning | None],
                 clock: Callable[[], float]) -> None:
        self.clusters = clusters
        self.credentials = credentials
        self.cloud = cloud
        self.enrollments = enrollments
        self.provisioning = provisioning
        self.clock = clock

    def _cloud(self) -> Cloud:
        if self.cloud is None:
            raise ProviderError("no DigitalOcean adapter configured", operation="create")
        return self.cloud

    def create_node(
        self,
        cluster: str,
        name: str,
        sentinels: tuple[str, ...],
        quorum: int | None = None,
        down_after_ms: int | None = None,
        failover_timeout_ms: int | None = None,
        request_id: str | None = None,
    ) -> Droplet:
        """Create one Redis droplet whose user_data bootstraps it into `cluster` (idempotent per request_id)."""
        prov = self.provisioning(cluster)
        if prov is None:
            raise ProviderError(f"clusters.{cluster} has no region, size and image to create droplets with",
                                operation="create")
        cfg = self.clusters[cluster]
        boot = NodeBoot(cluster=cluster, node=name, controller_url=prov.controller_url, master_name=cfg.master_name,
                        sentinels=sentinels,
                        quorum=quorum or cfg.quorum or sentinel.majority_quorum(cfg.expected_nodes),
                        down_after_ms=down_after_ms or cfg.down_after_ms,
                        failover_timeout_ms=failover_timeout_ms or cfg.failover_timeout_ms,
                        report_interval_s=cfg.report_interval_s, services=prov.services,
                        agent_deb_url=prov.agent_deb_url, agent_deb_sha256=prov.agent_deb_sha256,
                        metadata_url=prov.metadata_url, controller_ca=prov.controller_ca,
                        acl=bool(cfg.acl_users_file))
        template = Path(prov.user_data_template or DEFAULT_TEMPLATES[prov.services]).read_text()
        token = self.enrollments.issue(cluster, name, self.clock())
        spec = DropletSpec(name=name, region=prov.region, size=prov.size, image=prov.image, vpc_uuid=prov.vpc_uuid,
                           ssh_keys=prov.ssh_keys, tags=(prov.tag,), user_data=render_user_data(template, boot, token),
                           request_id=request_id or f"{cluster}-{name}")
        droplet = self._cloud().create_droplet(spec)
        self.credentials.bind(cluster, name, droplet.id)  # who this droplet is: our record, not its word
        log.info("droplet.created", cluster=cluster, name=name, droplet_id=droplet.id)
        return droplet

    def ensure_firewall(self, cluster: str, controller_address: str | None) -> None:
        """Redis and Sentinel reachable only from the cluster's own droplets (and the controller)."""
        prov = self.provisioning(cluster)
        if prov is None:
            return
        cloud = self._cloud()
        cloud.ensure_tag(prov.tag)
        addresses = (f"{controller_address}/32",) if controller_address else ()
        ports = (str(sentinel.REDIS_PORT), str(sentinel.SENTINEL_PORT))
        rules = [FirewallRule("tcp", port, tags=(prov.tag,), addresses=addresses) for port in ports]
        cloud.create_firewall(f"{prov.tag}-redis", rules, tags=(prov.tag,))
