"""Runs the controller: the state file and its stores, the watch loop, the healer, the alert outbox and the HTTP API.

Layer: app (wiring). `assemble` builds every part and connects each to exactly what it uses (no object
that every part holds); the periodic work (the watch cycle, the cloud poll, the outbox's purge) runs as jobs
on one APScheduler scheduler owned here and handed to the parts that have such work. `run_controller`
starts the parts and the scheduler (`Parts.start`), serves the API with uvicorn, and closes them in order
on the way out (`Parts.close`).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
import uvicorn
from fastapi import FastAPI

from controller import __version__
from controller.adapters.api import ApiDeps, create_app
from controller.adapters.auth import OperatorTokens
from controller.adapters.cloud import Cloud, PydoCloud
from controller.adapters.directives import DirectiveQueue
from controller.adapters.notify import Notifier, build_notifiers
from controller.adapters.outbox import Outbox
from controller.adapters.redis_ops import DirectRedisOps, RedisOps
from controller.adapters.storage.acl_users import AclUsersStore
from controller.adapters.storage.credentials import NodeCredentials
from controller.adapters.storage.db import Database
from controller.adapters.storage.enrollments import Enrollments
from controller.adapters.storage.heal_log import HealStore
from controller.adapters.storage.incidents import IncidentLog
from controller.adapters.storage.reports import ReportStore
from controller.app.enrollment import Enroller
from controller.app.executor import Executor
from controller.app.fleet import Fleet
from controller.app.healer import Healer
from controller.app.jobs import BackgroundScheduler, new_scheduler
from controller.app.provisioner import Provisioner, Provisioning
from controller.app.rotate import start_rotation
from controller.app.secure import Securer
from controller.app.watch import Watcher
from controller.config import ClusterConfig, ControllerConfig, cluster_redis_password, cluster_users
from protocol.acl import ClusterUsers
from protocol.settings import ConfigError, read_secret, secret_path

log = structlog.get_logger("redwarden.controller")


def build_cloud(config: ControllerConfig) -> Cloud | None:
    token = os.environ.get("REDWARDEN_DO_TOKEN") or read_secret(config.do_token_file, "do_token_file")
    if not token:
        return None
    return PydoCloud(token, api_url=config.do_api_url, ca_path=config.do_ca_file, timeout_s=config.do_timeout_s)


@dataclass
class Parts:
    """The controller's parts, built and connected but not started."""

    config: ControllerConfig
    db: Database  # the state file every store below shares; closed last
    reports: ReportStore
    incidents: IncidentLog
    heal_log: HealStore
    enrollments: Enrollments
    credentials: NodeCredentials
    outbox: Outbox
    notifiers: list[Notifier]
    healer: Healer
    watcher: Watcher
    app: FastAPI
    scheduler: BackgroundScheduler  # the periodic jobs of the watcher, the healer and the outbox

    def start(self) -> None:
        """The threads (state writer, alert delivery, heal worker) and the jobs, then the scheduler."""
        self.reports.start()
        self.outbox.start()
        self.healer.start(self.config.cloud_poll_s)  # its first poll now: the first heal step needs the list
        self.watcher.start(self.config.cycle_interval_s)
        self.scheduler.start()

    def close(self) -> None:
        """Each part stops its jobs and threads, waiting for a cycle, poll or pass under way, in this order:
        the watch cycle (no new alert, no new heal), the healer, the outbox; then the scheduler, the
        notifiers, the state writer's last flush, and the state file."""
        self.watcher.close()
        self.healer.close()
        self.outbox.close()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        for n in self.notifiers:
            n.close()  # type: ignore[attr-defined]
        self.reports.close()  # its last flush
        self.db.close()


def _read_ca(path: str | None) -> str | None:
    if not path:
        return None
    try:
        text = secret_path(path).read_text()
    except OSError as e:
        raise ConfigError(f"tls_ca_file: cannot read {path}: {e.strerror}") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ConfigError(f"tls_ca_file: {path} holds no PEM certificate")
    return text


def operator_tokens(config: ControllerConfig) -> OperatorTokens:
    admin = read_secret(config.admin_token_file, "admin_token_file")
    read = read_secret(config.read_token_file, "read_token_file")
    for key, value in (("admin_token_file", admin), ("read_token_file", read)):
        if value is not None and len(value.strip()) < 16:
            raise ConfigError(f"{key}: the token in it is shorter than 16 characters")
    return OperatorTokens(read=(read.strip(),) if read else (), admin=(admin.strip(),) if admin else ())


def assemble(config: ControllerConfig, clock: Callable[[], float] = time.time, cloud: Cloud | None = None) -> Parts:
    """Every part of a controller, connected. `cloud` defaults to the one the settings name. Raises
    `StateFileError` when the state file cannot be used (its message says what to do)."""
    tokens = operator_tokens(config)
    cloud = build_cloud(config) if cloud is None else cloud
    notifiers = build_notifiers(config.notify)
    db = Database(config.state_path)
    try:
        return _assemble(config, tokens, clock, cloud, notifiers, db)
    except BaseException:
        db.close()
        raise


def _assemble(config: ControllerConfig, tokens: OperatorTokens, clock: Callable[[], float],
              cloud: Cloud | None, notifiers: list[Notifier], db: Database) -> Parts:
    reports = ReportStore(db)
    incidents = IncidentLog(db)
    heal_log = HealStore(db)
    enrollments = Enrollments(db)
    credentials = NodeCredentials(db)
    scheduler = new_scheduler()
    outbox = Outbox(db, notifiers, scheduler=scheduler)
    directives = DirectiveQueue(credentials)
    scheme = "https" if config.tls else "http"
    public_url = config.public_url or f"{scheme}://{config.listen_host}:{config.listen_port}"
    controller_ca = _read_ca(config.tls_ca_file)
    tags = {name: c.tag or f"redwarden-{name}" for name, c in config.clusters.items()}

    acl_store = AclUsersStore(Path(config.state_path).parent / "acl-users")

    def users_of(cluster: str, c: ClusterConfig) -> ClusterUsers | None:  # after a rotation: the controller's copy
        return cluster_users(cluster, c, acl_store.users_path(cluster))

    def ops_for(cluster: str) -> RedisOps:
        c = config.clusters[cluster]
        users = users_of(cluster, c)
        if users is not None:  # ACL mode: the controller heals as `admin` on Redis and on Sentinel; until
            # `redwarden cluster secure` made that user, with the one password it had (`fallback_password`)
            return DirectRedisOps(users.admin, users.admin, username="admin",
                                  sentinel_auth=("sentinel", users.sentinel),
                                  fallback_password=cluster_redis_password(cluster, c))
        return DirectRedisOps(cluster_redis_password(cluster, c),
                              read_secret(c.sentinel_password_file, f"clusters.{cluster}.sentinel_password_file"))

    def provisioning(cluster: str) -> Provisioning | None:
        c = config.clusters[cluster]
        if not (c.region and c.size and c.image):
            return None
        return Provisioning(region=c.region, size=c.size, image=c.image, tag=tags[cluster], vpc_uuid=c.vpc_uuid,
                            ssh_keys=c.ssh_keys, controller_url=public_url, controller_ca=controller_ca,
                            services=c.services,
                            agent_deb_url=c.agent_deb_url, agent_deb_sha256=c.agent_deb_sha256,
                            metadata_url=c.metadata_url,
                            user_data_template=c.user_data_template)

    provisioner = Provisioner(config.clusters, cloud, enrollments, credentials, provisioning, clock)
    executor = Executor(heal_log, directives, reports, credentials, ops_for, cloud, provisioner, clock,
                        cluster_tags=tags)
    reserved = {name: c.reserved_ip for name, c in config.clusters.items() if c.reserved_ip}
    healer = Healer(config.heal, heal_log, executor, cloud, tags, clock, reserved_ips=reserved,
                    provisioner=provisioner if cloud is not None else None, bindings=credentials.bindings,
                    sentinel_timings={name: (c.down_after_ms, c.failover_timeout_ms)
                                      for name, c in config.clusters.items()},
                    scheduler=scheduler)
    fleet = Fleet(config.clusters, reports, heal_status=healer.status)
    watcher = Watcher(fleet, incidents, outbox, clock=clock, healer=healer, scheduler=scheduler)
    app = create_app(ApiDeps(
        clusters=config.clusters,
        reports=reports,
        directives=directives,
        fleet=fleet,
        node_keys=credentials,
        tokens=tokens,
        clock=clock,
        max_report_bytes=config.max_report_bytes,
        listen_host=config.listen_host,
        incidents=incidents,
        actions=heal_log,
        enroller=Enroller(config.clusters, enrollments, credentials, audit=heal_log, users=users_of),
        heal=healer,
        securer=Securer(config.clusters, fleet, directives, credentials, heal_log, users_of,
                        cluster_redis_password, clock=clock, store=acl_store,
                        rotations=start_rotation),
        on_vitals_changed=watcher.wake,
        problems=lambda: [p for p in (reports.problem(), outbox.problem(), healer.problem()) if p]
        + watcher.problems(),
    ))
    return Parts(config, db, reports, incidents, heal_log, enrollments, credentials, outbox, notifiers, healer,
                 watcher, app, scheduler)


def run_controller(config: ControllerConfig) -> None:
    parts = assemble(config)
    parts.start()
    server = uvicorn.Server(
        uvicorn.Config(
            parts.app,
            host=config.listen_host,
            port=config.listen_port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ssl_certfile=str(secret_path(config.tls_cert_file)) if config.tls_cert_file else None,
            ssl_keyfile=str(secret_path(config.tls_key_file)) if config.tls_key_file else None,
        )
    )
    log.info(
        "controller.started",
        listen=f"{'https' if config.tls else 'http'}://{config.listen_host}:{config.listen_port}",
        clusters=sorted(config.clusters),
        notifiers=[n.name for n in parts.notifiers],
        pid=os.getpid(),
        version=__version__,
    )
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        server.run()
    finally:
        parts.close()
        log.info("controller.stopped")
