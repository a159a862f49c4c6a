"""Runs the controller: the state store, the watch cycle, the alert outbox and the HTTP API (uvicorn).

Layer: application wiring.
"""

from __future__ import annotations

import os
import signal

import structlog
import uvicorn

from agent.settings import read_secret
from controller import __version__
from controller.app import Controller, create_app
from controller.config import ControllerConfig, cluster_redis_password, load_cluster_secrets
from controller.cycle import Watcher
from controller.do_adapter import Cloud, PydoCloud
from controller.enroll import Enrollments
from controller.executor import Executor, Provisioning
from controller.heal_store import HealStore
from controller.healing import Healer
from controller.incident_store import IncidentLog
from controller.notify_config import build_notifiers
from controller.outbox import Outbox
from controller.redis_ops import DirectRedisOps, RedisOps
from controller.store import StateStore

log = structlog.get_logger("redwarden.controller")


def build_cloud(config: ControllerConfig) -> Cloud | None:
    token = os.environ.get("REDWARDEN_DO_TOKEN") or read_secret(config.do_token_file, "do_token_file")
    if not token:
        return None
    return PydoCloud(token, api_url=config.do_api_url, ca_path=config.do_ca_file)


def build_healer(config: ControllerConfig, ctl: Controller) -> Healer:
    cloud = build_cloud(config)
    heal_store = HealStore(config.state_path)
    enrollments = Enrollments(config.state_path)
    ctl.heal_store, ctl.enrollments = heal_store, enrollments
    ctl.admin_token = read_secret(config.admin_token_file, "admin_token_file")
    public_url = config.public_url or f"http://{config.listen_host}:{config.listen_port}"
    tags = {name: c.tag or f"redwarden-{name}" for name, c in config.clusters.items()}

    def ops_for(cluster: str) -> RedisOps:
        c = config.clusters[cluster]
        return DirectRedisOps(cluster_redis_password(cluster, c),
                              read_secret(c.sentinel_password_file, f"clusters.{cluster}.sentinel_password_file"))

    def provisioning(cluster: str) -> Provisioning | None:
        c = config.clusters[cluster]
        if not (c.region and c.size and c.image):
            return None
        return Provisioning(region=c.region, size=c.size, image=c.image, tag=tags[cluster], vpc_uuid=c.vpc_uuid,
                            ssh_keys=c.ssh_keys, controller_url=public_url, services=c.services,
                            agent_deb_url=c.agent_deb_url, metadata_url=c.metadata_url,
                            user_data_template=c.user_data_template)

    executor = Executor(ctl, heal_store, ops_for, cloud, enrollments, provisioning, ctl.clock)
    reserved = {name: c.reserved_ip for name, c in config.clusters.items() if c.reserved_ip}
    healer = Healer(config.heal, heal_store, executor, cloud, tags, ctl.clock, reserved_ips=reserved)
    ctl.healer = healer
    return healer


def run_controller(config: ControllerConfig) -> None:
    secrets = load_cluster_secrets(config)
    notifiers = build_notifiers(config.notify)
    store = StateStore(config.state_path)
    store.start()
    incident_log = IncidentLog(config.state_path)
    outbox = Outbox(config.state_path, notifiers)
    outbox.start()
    ctl = Controller(config, secrets, store, incident_log=incident_log)
    healer = build_healer(config, ctl)
    healer.start(config.cloud_poll_s)
    watcher = Watcher(ctl, incident_log, outbox, clock=ctl.clock, healer=healer)
    watcher.start(config.cycle_interval_s)
    app = create_app(ctl)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.listen_host,
            port=config.listen_port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
    )
    log.info(
        "controller.started",
        listen=f"{config.listen_host}:{config.listen_port}",
        clusters=sorted(config.clusters),
        notifiers=[n.name for n in notifiers],
        pid=os.getpid(),
        version=__version__,
    )
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        server.run()
    finally:
        watcher.close()
        healer.close()
        outbox.close()
        for n in notifiers:
            n.close()  # type: ignore[attr-defined]
        incident_log.close()
        store.close()
        log.info("controller.stopped")
