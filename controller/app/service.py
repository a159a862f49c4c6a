"""Runs the controller: the state file and its stores, the watch loop, the healer, the alert outbox and the HTTP API.

Layer: app (wiring). `assemble` builds every part and connects each to exactly what it uses (no object
that every part holds); `run_controller` starts their threads, serves the API with uvicorn, and closes
them in order on the way out.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
import uvicorn
from fastapi import FastAPI

from controller import __version__
from controller.adapters.api import ApiDeps, create_app
from controller.adapters.cloud import Cloud, PydoCloud
from controller.adapters.directives import DirectiveQueue
from controller.adapters.notify import Notifier, build_notifiers
from controller.adapters.outbox import Outbox
from controller.adapters.redis_ops import DirectRedisOps, RedisOps
from controller.adapters.storage.db import Database
from controller.adapters.storage.enrollments import Enrollments
from controller.adapters.storage.heal_log import HealStore
from controller.adapters.storage.incidents import IncidentLog
from controller.adapters.storage.reports import ReportStore
from controller.app.executor import Executor
from controller.app.fleet import Fleet
from controller.app.healer import Healer
from controller.app.provisioner import Provisioner, Provisioning
from controller.app.watch import Watcher
from controller.config import ControllerConfig, cluster_redis_password, load_cluster_secrets
from protocol.settings import read_secret

log = structlog.get_logger("redwarden.controller")


def build_cloud(config: ControllerConfig) -> Cloud | None:
    token = os.environ.get("REDWARDEN_DO_TOKEN") or read_secret(config.do_token_file, "do_token_file")
    if not token:
        return None
    return PydoCloud(token, api_url=config.do_api_url, ca_path=config.do_ca_file)


@dataclass
class Parts:
    """The controller's parts, built and connected but not started."""

    config: ControllerConfig
    db: Database  # the state file every store below shares; closed last
    reports: ReportStore
    incidents: IncidentLog
    heal_log: HealStore
    enrollments: Enrollments
    outbox: Outbox
    notifiers: list[Notifier]
    healer: Healer
    watcher: Watcher
    app: FastAPI


def assemble(config: ControllerConfig, secrets: dict[str, bytes] | None = None,
             clock: Callable[[], float] = time.time, cloud: Cloud | None = None) -> Parts:
    """Every part of a controller, connected. `cloud` defaults to the one the settings name. Raises
    `StateFileError` when the state file cannot be used (its message says what to do)."""
    secrets = load_cluster_secrets(config) if secrets is None else secrets
    cloud = build_cloud(config) if cloud is None else cloud
    notifiers = build_notifiers(config.notify)
    db = Database(config.state_path)
    try:
        return _assemble(config, secrets, clock, cloud, notifiers, db)
    except BaseException:
        db.close()
        raise


def _assemble(config: ControllerConfig, secrets: dict[str, bytes], clock: Callable[[], float],
              cloud: Cloud | None, notifiers: list[Notifier], db: Database) -> Parts:
    reports = ReportStore(db)
    incidents = IncidentLog(db)
    heal_log = HealStore(db)
    enrollments = Enrollments(db)
    outbox = Outbox(db, notifiers)
    directives = DirectiveQueue()
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

    provisioner = Provisioner(config.clusters, cloud, enrollments, provisioning, clock)
    executor = Executor(heal_log, directives, reports, ops_for, cloud, provisioner, clock)
    reserved = {name: c.reserved_ip for name, c in config.clusters.items() if c.reserved_ip}
    healer = Healer(config.heal, heal_log, executor, cloud, tags, clock, reserved_ips=reserved)
    fleet = Fleet(config.clusters, reports, heal_status=healer.status)
    watcher = Watcher(fleet, incidents, outbox, clock=clock, healer=healer)
    app = create_app(ApiDeps(
        clusters=config.clusters,
        secrets=secrets,
        reports=reports,
        directives=directives,
        fleet=fleet,
        clock=clock,
        max_report_bytes=config.max_report_bytes,
        listen_host=config.listen_host,
        admin_token=read_secret(config.admin_token_file, "admin_token_file"),
        incidents=incidents,
        actions=heal_log,
        enrollments=enrollments,
        heal=healer,
        provisioner=provisioner,
        on_vitals_changed=watcher.wake,
    ))
    return Parts(config, db, reports, incidents, heal_log, enrollments, outbox, notifiers, healer, watcher, app)


def run_controller(config: ControllerConfig) -> None:
    parts = assemble(config)
    parts.reports.start()
    parts.outbox.start()
    parts.healer.start(config.cloud_poll_s)
    parts.watcher.start(config.cycle_interval_s)
    server = uvicorn.Server(
        uvicorn.Config(
            parts.app,
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
        notifiers=[n.name for n in parts.notifiers],
        pid=os.getpid(),
        version=__version__,
    )
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        server.run()
    finally:
        parts.watcher.close()
        parts.healer.close()
        parts.outbox.close()
        for n in parts.notifiers:
            n.close()  # type: ignore[attr-defined]
        parts.reports.close()  # its last flush
        parts.db.close()
        log.info("controller.stopped")
