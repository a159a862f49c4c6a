"""Runs the controller: the state store, the watch cycle, the alert outbox and the HTTP API (uvicorn).

Layer: application wiring.
"""

from __future__ import annotations

import os
import signal

import structlog
import uvicorn

from controller import __version__
from controller.app import Controller, create_app
from controller.config import ControllerConfig, load_cluster_secrets
from controller.cycle import Watcher
from controller.incident_store import IncidentLog
from controller.notify_config import build_notifiers
from controller.outbox import Outbox
from controller.store import StateStore

log = structlog.get_logger("redwarden.controller")


def run_controller(config: ControllerConfig) -> None:
    secrets = load_cluster_secrets(config)
    notifiers = build_notifiers(config.notify)
    store = StateStore(config.state_path)
    store.start()
    incident_log = IncidentLog(config.state_path)
    outbox = Outbox(config.state_path, notifiers)
    outbox.start()
    ctl = Controller(config, secrets, store, incident_log=incident_log)
    watcher = Watcher(ctl, incident_log, outbox, clock=ctl.clock)
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
        outbox.close()
        for n in notifiers:
            n.close()  # type: ignore[attr-defined]
        incident_log.close()
        store.close()
        log.info("controller.stopped")
