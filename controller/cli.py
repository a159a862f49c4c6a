"""`redwarden`: the controller's command line.

    redwarden controller run --config PATH
    redwarden status [--json] [--controller URL]
    redwarden sandbox up|status|down|fault ...

Layer: entry point. Errors a person can fix end with exit code 2 (usage/config) or 1 (runtime) and one
line that says what to do; no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import requests

from agent.settings import ConfigError
from controller import __version__

DEFAULT_CONTROLLER_URL = "http://127.0.0.1:8787"


def _controller_url(args: argparse.Namespace) -> str:
    url: str = args.controller or os.environ.get("REDWARDEN_CONTROLLER_URL") or DEFAULT_CONTROLLER_URL
    return url.rstrip("/")


def _get_json(url: str) -> Any:
    try:
        resp = requests.get(url, timeout=5)
    except requests.RequestException as e:
        raise RuntimeError(f"cannot reach the controller at {url}: {type(e).__name__}") from None
    if resp.status_code != 200:
        raise RuntimeError(f"{url} answered HTTP {resp.status_code}: {resp.text[:200]}")
    return resp.json()


def cmd_controller_run(args: argparse.Namespace) -> int:
    from agent.logs import configure_logging
    from controller.config import load_config
    from controller.service import run_controller

    config = load_config(args.config)
    configure_logging(config.log_format, config.log_level)
    run_controller(config)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from controller.status import render_status

    base = _controller_url(args)
    data = _get_json(f"{base}/v1/clusters")
    if args.cluster:
        data = {"clusters": [c for c in data["clusters"] if c["name"] == args.cluster]}
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(render_status(data), end="")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from controller.status import render_history

    base = _controller_url(args)
    query = f"?limit={args.limit}" + (f"&cluster={args.cluster}" if args.cluster else "")
    data = _get_json(f"{base}/v1/incidents{query}")
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(render_history(data), end="")
    return 0


def _admin_token(args: argparse.Namespace) -> str | None:
    from agent.settings import read_secret

    return os.environ.get("REDWARDEN_ADMIN_TOKEN") or read_secret(args.admin_token_file, "--admin-token-file")


def cmd_cluster_create(args: argparse.Namespace) -> int:
    from controller.provision import ControllerClient, create_cluster

    client = ControllerClient(_controller_url(args), _admin_token(args))
    cluster = create_cluster(client, args.name, args.nodes, prefix=args.prefix, timeout_s=args.timeout,
                             progress=lambda m: print(f"  {m}", file=sys.stderr))
    print(f"cluster {args.name} is healthy: master {cluster['master']}, {len(cluster['nodes'])} nodes")
    return 0


def _switch(args: argparse.Namespace, verb: str) -> int:
    import requests as rq

    url = f"{_controller_url(args)}/v1/clusters/{args.cluster}/{verb}"
    params = {"node": args.node} if getattr(args, "node", None) else {}
    token = _admin_token(args)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        resp = rq.post(url, params=params, headers=headers, timeout=10)
    except rq.RequestException as e:
        raise RuntimeError(f"cannot reach the controller: {type(e).__name__}") from None
    if resp.status_code != 200:
        raise RuntimeError(f"{verb} refused: HTTP {resp.status_code} {resp.text[:200]}")
    heal = resp.json()
    target = f"{args.cluster}/{args.node}" if getattr(args, "node", None) else args.cluster
    print(f"{target}: {verb} done; paused={heal['paused']} paused_nodes={heal['paused_nodes']} "
          f"budget {heal['budget']['used_today']}/{heal['budget']['per_day']} acked={heal['budget']['acked']}")
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    from sandbox import cluster as sb

    root = Path(args.dir)
    if args.sandbox_command == "up":
        opts = sb.SandboxOptions(
            nodes=args.nodes,
            down_after_ms=args.down_after_ms,
            failover_timeout_ms=args.failover_timeout_ms,
            report_interval_s=args.report_interval_s,
            heal=not args.no_heal,
            dry_run=args.dry_run,
            fast_failover=not args.no_fast_failover,
            sentinel_reset_interval_s=args.sentinel_reset_interval_s,
            daily_budget=args.daily_budget,
            reserved_ip=args.reserved_ip,
            slack_webhook=args.slack_webhook,
            pagerduty_url=args.pagerduty_url,
            pagerduty_routing_key=args.pagerduty_routing_key,
            webhook_url=args.webhook_url,
        )
        state = sb.up(root, opts, timeout_s=args.timeout, progress=lambda m: print(f"  {m}", file=sys.stderr))
        print(state["controller_url"])
        return 0
    if args.sandbox_command == "status":
        st = sb.status(root)
        if args.json:
            print(json.dumps(st, indent=2))
        else:
            print(f"sandbox {st['dir']}: {'up' if st['up'] else 'down'}, controller {st['controller_url']} "
                  f"(pid {st['controller_pid']})")
            for d in st["droplets"]:
                pids = ", ".join(f"{k} {v or 'stopped'}" for k, v in d["pids"].items())
                print(f"  {d['name']:<10} {d['address']:<12} {pids}")
        return 0
    if args.sandbox_command == "down":
        sb.down(root)
        print(f"sandbox {root} is down")
        return 0
    if args.sandbox_command == "fault":
        print(sb.fault(root, args.node, args.service, args.action))
        return 0
    raise AssertionError(args.sandbox_command)  # pragma: no cover


def cmd_drill(args: argparse.Namespace) -> int:
    from controller.drill import main as drill_main

    return drill_main(args)


def _add_drill_parser(sub: Any) -> None:
    dr = sub.add_parser("drill", help="a failover drill with a writer running through it, and its timeline")
    dr.add_argument("cluster")
    dr.add_argument("--fault", required=True, choices=("kill-master", "stop-master", "destroy-replica",
                                                       "destroy-master"))
    dr.add_argument("--sandbox", metavar="DIR", help="drill on the sandbox in DIR")
    dr.add_argument("--runs", type=int, default=1, help="repeat, each from a healthy cluster; prints a summary")
    dr.add_argument("--between", type=float, default=0.0, metavar="S", help="at least S seconds between two faults")
    dr.add_argument("--timeout", type=float, default=300.0, metavar="S", help="per run, from the fault")
    dr.add_argument("--json", action="store_true", help="machine-readable output")
    dr.add_argument("--controller", help="controller URL (default: the sandbox's)")
    dr.add_argument("--i-know-this-is-production", action="store_true", help="allow a drill on a real cluster")
    dr.add_argument("--sentinel", action="append", metavar="HOST:PORT", help="real cluster: a Sentinel (repeat)")
    dr.add_argument("--master-name", default="mymaster", help="real cluster: the Sentinel master name")
    dr.add_argument("--redis-password-file", help="real cluster: file with the Redis password")
    dr.add_argument("--do-token-file", help="real cluster: file with a DigitalOcean API token")
    dr.add_argument("--do-api-url", help="real cluster: https://api.digitalocean.com")
    dr.add_argument("--do-ca-file", help="real cluster: a private CA for --do-api-url")
    dr.set_defaults(func=cmd_drill)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="redwarden", description="Self-healing monitor for Redis Sentinel.")
    parser.add_argument("--version", action="version", version=f"redwarden {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    ctl = sub.add_parser("controller", help="run the controller service")
    ctl_sub = ctl.add_subparsers(dest="controller_command", required=True)
    run = ctl_sub.add_parser("run", help="serve the API and watch the clusters")
    run.add_argument("--config", required=True, help="controller TOML (e.g. /etc/redwarden/controller.toml)")
    run.set_defaults(func=cmd_controller_run)

    st = sub.add_parser("status", help="the fleet at a glance")
    st.add_argument("cluster", nargs="?", help="only this cluster")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.add_argument("--controller", help=f"controller URL (env REDWARDEN_CONTROLLER_URL; {DEFAULT_CONTROLLER_URL})")
    st.set_defaults(func=cmd_status)

    hi = sub.add_parser("history", help="open and past incidents with their timelines")
    hi.add_argument("cluster", nargs="?", help="only this cluster")
    hi.add_argument("--json", action="store_true", help="machine-readable output")
    hi.add_argument("--limit", type=int, default=50)
    hi.add_argument("--controller", help="controller URL (env REDWARDEN_CONTROLLER_URL)")
    hi.set_defaults(func=cmd_history)

    cl = sub.add_parser("cluster", help="create clusters through the controller")
    cl_sub = cl.add_subparsers(dest="cluster_command", required=True)
    cc = cl_sub.add_parser("create", help="provision a new cluster and wait until it is healthy")
    cc.add_argument("--name", required=True)
    cc.add_argument("--nodes", type=int, default=3)
    cc.add_argument("--prefix", default="redis", help="droplet names: PREFIX-1, PREFIX-2, ...")
    cc.add_argument("--timeout", type=float, default=900.0)
    cc.add_argument("--controller", help="controller URL (env REDWARDEN_CONTROLLER_URL)")
    cc.add_argument("--admin-token-file", help="file with the controller's admin token (env REDWARDEN_ADMIN_TOKEN)")
    cc.set_defaults(func=cmd_cluster_create)

    for verb, text in (("pause", "maintenance: the controller alerts but acts on nothing in CLUSTER (or NODE)"),
                       ("resume", "end maintenance"),
                       ("ack", "acknowledge an exhausted daily action budget: the controller may act again")):
        sw = sub.add_parser(verb, help=text)
        sw.add_argument("cluster")
        if verb != "ack":
            sw.add_argument("node", nargs="?")
        sw.add_argument("--controller", help="controller URL (env REDWARDEN_CONTROLLER_URL)")
        sw.add_argument("--admin-token-file", help="file with the controller's admin token")
        sw.set_defaults(func=lambda a, v=verb: _switch(a, v))

    sb = sub.add_parser("sandbox", help="a local cluster of real Redis and Sentinel processes")
    sb_sub = sb.add_subparsers(dest="sandbox_command", required=True)
    up = sb_sub.add_parser("up", help="start a cluster and return once it is healthy")
    up.add_argument("--dir", required=True)
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument("--down-after-ms", type=int, default=5000)
    up.add_argument("--failover-timeout-ms", type=int, default=60000)
    up.add_argument("--report-interval-s", type=float, default=1.0)
    up.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for health")
    up.add_argument("--no-heal", action="store_true", help="the controller watches and alerts but never acts")
    up.add_argument("--dry-run", action="store_true", help="the controller plans and logs actions, takes none")
    up.add_argument("--no-fast-failover", action="store_true", help="leave a dead master to Sentinel's timer")
    up.add_argument("--daily-budget", type=int, default=30, help="healing actions per day before alert-only")
    up.add_argument("--reserved-ip", action="store_true",
                    help="create a reserved IP the controller keeps on the master's droplet")
    up.add_argument("--sentinel-reset-interval-s", type=float, default=5.0,
                    help="between two SENTINEL RESETs (production: >= 30)")
    up.add_argument("--slack-webhook", metavar="URL", help="Slack incoming webhook for the controller's alerts")
    up.add_argument("--pagerduty-url", metavar="URL", help="PagerDuty Events API v2 URL (e.g. a local receiver)")
    up.add_argument("--pagerduty-routing-key", metavar="KEY", help="PagerDuty routing key")
    up.add_argument("--webhook-url", metavar="URL", help="generic JSON webhook for every alert")
    sbs = sb_sub.add_parser("status", help="addresses and pids of the sandbox's processes")
    sbs.add_argument("--dir", required=True)
    sbs.add_argument("--json", action="store_true")
    dn = sb_sub.add_parser("down", help="stop every process of the sandbox")
    dn.add_argument("--dir", required=True)
    ft = sb_sub.add_parser("fault", help="inject a fault or undo it")
    ft.add_argument("--dir", required=True)
    ft.add_argument("node")
    ft.add_argument("service", choices=("redis", "sentinel", "agent"))
    ft.add_argument("action", choices=("kill", "freeze", "thaw", "start"))
    sb.set_defaults(func=cmd_sandbox)
    _add_drill_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except ConfigError as e:
        print(f"redwarden: configuration error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        from controller.provision import ProvisionError
        from sandbox.cluster import SandboxError

        if isinstance(e, SandboxError | RuntimeError | ProvisionError):
            print(f"redwarden: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
