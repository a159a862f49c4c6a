"""`redwarden-agent`: the agent's command line (`run`, `collect`, `--version`).

Layer: entry point. Configuration errors end the program with exit code 2 and one line naming the key.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from agent import __version__
from agent.config import AgentConfig, load_config, load_secrets
from protocol.logs import configure_logging
from protocol.report import report_to_dict
from protocol.settings import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="redwarden-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"redwarden-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="collect and push health every report_interval_s")
    run.add_argument("--config", required=True, help="agent TOML file (e.g. /etc/redwarden/agent.toml)")
    once = sub.add_parser("collect", help="collect one report and print it as JSON (no push)")
    once.add_argument("--config", required=True)
    boot = sub.add_parser("bootstrap", help="join this new node to its cluster and start its services")
    boot.add_argument("--config", required=True)
    start = sub.add_parser("start-services", help="start redis, sentinel and the agent as bootstrap left them")
    start.add_argument("--config", required=True)
    args = parser.parse_args(argv)

    try:
        config = load_config(args.config)
        if args.command in ("bootstrap", "start-services"):
            return _setup(args.command, config, Path(args.config))
        secrets = load_secrets(config, dict(os.environ))
    except ConfigError as e:
        print(f"redwarden-agent: configuration error: {e}", file=sys.stderr)
        return 2
    _configure_logging(config)

    from agent.runtime import Agent, run_forever  # the rest of the agent once the config is known good

    agent = Agent(config, secrets, config_path=Path(args.config))
    if args.command == "collect":
        try:
            print(json.dumps(report_to_dict(agent.collect()), indent=2))
        finally:
            agent.close()
        return 0
    run_forever(agent)
    return 0


def _setup(command: str, config: AgentConfig, config_path: Path) -> int:
    from agent.bootstrap import BootstrapError, bootstrap, start_services
    from agent.services import ServiceError

    _configure_logging(config)
    try:
        sentence = bootstrap(config, config_path) if command == "bootstrap" else start_services(config, config_path)
    except (BootstrapError, ServiceError) as e:
        print(f"redwarden-agent {command}: {e}", file=sys.stderr)
        return 1
    print(sentence)
    return 0


def _configure_logging(config: AgentConfig) -> None:
    # APScheduler says at warning level each time it skips a run because the last one is still going (the
    # point of its settings: agent/runtime.py), urllib3 each time it drops a pooled connection: the
    # libraries' own records only from errors on, as JSON lines like the agent's
    configure_logging(config.log_format, config.log_level, libraries_level="error")


if __name__ == "__main__":
    sys.exit(main())
