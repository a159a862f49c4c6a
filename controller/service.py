"""Runs the controller: the store, the HTTP API under uvicorn, and (later) the decision cycle.

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
from controller.store import StateStore

log = structlog.get_logger("redwarden.controller")


def run_controller(config: ControllerConfig) -> None:
    secrets = load_cluster_secrets(config)
    store = StateStore(config.state_path)
    store.start()
    ctl = Controller(config, secrets, store)
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
        pid=os.getpid(),
        version=__version__,
    )
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        server.run()
    finally:
        store.close()
        log.info("controller.stopped")
