"""The sandbox's commands: `redwarden sandbox up|status|down|fault` and `redwarden-sandbox ...`.

Layer: sandbox (entry point). The console's `redwarden` command finds this module through the entry point
group `redwarden.cli` (`PLUGIN`), so it never imports the sandbox; `redwarden-sandbox` (or
`python -m sandbox`) runs the same commands on their own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from console.drill.targets import Endpoints, FaultTarget
from sandbox import cluster as sb
from sandbox import ctlcontainer, netns, nspawn, prefetch, sysdroplets


def _refuse_if_running(root: Path) -> None:
    if sb.state_exists(root) and sb.load_state(root).get("up") and sb.any_running(root):
        raise sb.SandboxError(f"a sandbox is already running in {root} (run `redwarden sandbox down` first)")


def _netns_for_up(root: Path, wanted: bool) -> None:
    """`up --netns`: make the namespace and re-execute inside it; `up` without it: forget an old one."""
    if netns.in_sandbox_netns():
        return
    root.mkdir(parents=True, exist_ok=True)
    _refuse_if_running(root)
    netns.delete(root)
    if wanted:
        netns.create(root)
        netns.enter(root)  # does not return


def _prefetch_for_systemd(root: Path, agent_deb: str | None, progress: Callable[[str], None]) -> None:
    """On the host, before the namespace (no route, no DNS) is made: root, tools, and everything from the
    network (the Debian root, systemd-nspawn, the packages); the packages found are named to the command
    re-executed inside it, so it takes these and no others."""
    if netns.in_sandbox_netns():  # the re-executed command: done before it was entered
        return
    try:
        nspawn.preflight()
        netns.preflight()
    except (nspawn.NspawnError, netns.NetnsError) as e:
        raise sb.SandboxError(f"--droplets systemd: {e}") from None
    root.mkdir(parents=True, exist_ok=True)
    _refuse_if_running(root)  # before minutes of debootstrap, not after
    try:
        got = prefetch.ensure_all(sysdroplets.default_cache(), agent_deb, progress)
    except prefetch.PrefetchError as e:
        raise sb.SandboxError(f"--droplets systemd, on the host before entering the sandbox's network "
                              f"namespace: {e}") from None
    os.environ[sysdroplets.DEB_ENV] = str(got.agent_deb.resolve())
    os.environ[ctlcontainer.DEB_ENV] = str(got.controller_deb.resolve())


def _progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def cmd_sandbox(args: argparse.Namespace) -> int:
    root = Path(args.dir).resolve()
    progress = _progress
    if args.sandbox_command == "up" and args.droplets == "systemd":
        _prefetch_for_systemd(root, args.agent_deb, progress)
    try:
        if args.sandbox_command == "up":
            # systemd droplets sit on a bridge inside the sandbox's own namespace
            _netns_for_up(root, args.netns or args.droplets == "systemd")
        else:
            netns.enter(root)  # a sandbox in its own namespace is started, signalled and stopped from inside it
    except netns.NetnsError as e:
        raise sb.SandboxError(str(e)) from None
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
            acl=args.acl,
            slack_webhook=args.slack_webhook,
            pagerduty_url=args.pagerduty_url,
            pagerduty_routing_key=args.pagerduty_routing_key,
            webhook_url=args.webhook_url,
            droplets=args.droplets,
            agent_deb=args.agent_deb,
        )
        state = sb.up(root, opts, timeout_s=args.timeout, progress=progress)
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


def add_commands(sub: Any) -> None:
    """Add `sandbox` and its subcommands to a `redwarden` argument parser's subparsers."""
    sp = sub.add_parser("sandbox", help="a local cluster of real Redis and Sentinel processes")
    sb_sub = sp.add_subparsers(dest="sandbox_command", required=True)
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
    up.add_argument("--acl", action="store_true",
                    help="per-role ACL users (app, replication, sentinel, monitor, admin), `default` off, Sentinel "
                         "discovery open and everything else for its peers and the controller (issue #13)")
    up.add_argument("--sentinel-reset-interval-s", type=float, default=5.0,
                    help="between two SENTINEL RESETs (production: >= 30)")
    up.add_argument("--slack-webhook", metavar="URL", help="Slack incoming webhook for the controller's alerts")
    up.add_argument("--pagerduty-url", metavar="URL", help="PagerDuty Events API v2 URL (e.g. a local receiver)")
    up.add_argument("--pagerduty-routing-key", metavar="KEY", help="PagerDuty routing key")
    up.add_argument("--webhook-url", metavar="URL", help="generic JSON webhook for every alert")
    up.add_argument("--netns", action="store_true",
                    help="run the whole sandbox in a network namespace of its own (root, ip, nft), where the "
                         "drill's network faults can cut it; its data dirs are small real file systems")
    up.add_argument("--droplets", choices=sb.DROPLET_MODES, default="process",
                    help="process (default): each droplet is processes on a loopback address, booted from the "
                         "sandbox's user_data; systemd: each droplet is a systemd-nspawn container (cached Debian 12 "
                         "root) that runs the production user_data with cloud-init, installs the agent .deb and runs "
                         "the packages' units (root, debootstrap; implies --netns)")
    up.add_argument("--agent-deb", metavar="PATH",
                    help="--droplets systemd: the agent package to install "
                         "(default: the newest dist/redwarden-agent_*.deb, built first if there is none)")
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
    sp.set_defaults(func=cmd_sandbox)


def drill_target(args: argparse.Namespace) -> tuple[FaultTarget, Endpoints]:
    from sandbox.drill_target import drill_target as resolve

    return resolve(args)


class _Plugin:
    """What the console asks of the sandbox (see `console.plugins.CliPlugin`)."""

    errors: tuple[type[Exception], ...] = (sb.SandboxError,)

    @staticmethod
    def add_commands(sub: Any) -> None:
        add_commands(sub)

    @staticmethod
    def drill_target(args: argparse.Namespace) -> tuple[FaultTarget, Endpoints]:
        return drill_target(args)


PLUGIN = _Plugin()


def main(argv: list[str] | None = None) -> int:
    """`redwarden-sandbox up|status|down|fault ...`: the sandbox's commands without the console."""
    parser = argparse.ArgumentParser(prog="redwarden-sandbox", description="A local redwarden cluster.")
    add_commands(parser.add_subparsers(dest="command", required=True))
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(["sandbox", *argv])
    try:
        code: int = args.func(args)
        return code
    except KeyboardInterrupt:
        return 130
    except sb.SandboxError as e:
        print(f"redwarden-sandbox: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
