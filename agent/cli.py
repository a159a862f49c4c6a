"""`redwarden-agent`: the agent's command line (`run`, `collect`, `--version`).

Layer: entry point. Configuration errors end the program with exit code 2 and one line naming the key.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from agent import __version__
from agent.config import load_config, load_secrets
from agent.logs import configure_logging
from agent.report import report_to_dict
from agent.settings import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="redwarden-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"redwarden-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="collect and push health every report_interval_s")
    run.add_argument("--config", required=True, help="agent TOML file (e.g. /etc/redwarden/agent.toml)")
    once = sub.add_parser("collect", help="collect one report and print it as JSON (no push)")
    once.add_argument("--config", required=True)
    args = parser.parse_args(argv)

    try:
        config = load_config(args.config)
        secrets = load_secrets(config, dict(os.environ))
    except ConfigError as e:
        print(f"redwarden-agent: configuration error: {e}", file=sys.stderr)
        return 2
    configure_logging(config.log_format, config.log_level)

    from agent.runtime import Agent, run_forever  # heavy imports after the config is known good

    agent = Agent(config, secrets)
    if args.command == "collect":
        try:
            print(json.dumps(report_to_dict(agent.collect()), indent=2))
        finally:
            agent.close()
        return 0
    run_forever(agent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
