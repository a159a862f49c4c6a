"""`redwarden`: the operator's command line.

    redwarden controller run --config PATH
    redwarden status [--json] [--controller URL]
    redwarden history | cluster create | pause | resume | ack | drill ...
    redwarden sandbox up|status|down|fault ...      (where the sandbox is installed: a plugin)

Layer: console (entry point). Every command but `controller run` is an HTTP client of the controller
(`console.client`). Errors a person can fix end with exit code 2 (usage/config) or 1 (runtime) and one
line that says what to do; no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from console import __version__
from console.client import ControllerClient
from console.connection import add_connection_args, ca_cert, controller_url, operator_token
from console.drill.orders import ORDER_CHOICES
from console.plugins import CliPlugin, load_plugins
from controller.adapters.storage.db import StateFileError
from protocol.settings import ConfigError


def _client(args: argparse.Namespace) -> ControllerClient:
    return ControllerClient(controller_url(args), operator_token(args), ca_cert=ca_cert(args))


def cmd_controller_run(args: argparse.Namespace) -> int:
    from controller.app.service import run_controller
    from controller.config import load_config
    from protocol.logs import configure_logging

    config = load_config(args.config)
    # the libraries' own warnings (APScheduler skipping a run that is still going) as the same JSON lines
    configure_logging(config.log_format, config.log_level, libraries_level="warning")
    run_controller(config)
    return 0


def cmd_controller_init_tls(args: argparse.Namespace) -> int:
    from controller.adapters.tls import TlsError, ensure_tls

    try:
        files = ensure_tls(Path(args.dir), args.host)
    except TlsError as e:
        raise RuntimeError(str(e)) from None
    print(f"# the controller's TLS, made in {args.dir} (the CA key stays there; keep it safe)\n"
          f'tls_cert_file = "{files.cert_path}"\ntls_key_file = "{files.key_path}"\n'
          f'tls_ca_file = "{files.ca_path}"   # public: agents and `redwarden --ca-cert` verify with it')
    return 0


def cmd_controller_acl_users(args: argparse.Namespace) -> int:
    import secrets

    from protocol.acl import ClusterUsers
    from protocol.settings import store_private

    out = Path(args.out)
    if out.exists():
        raise RuntimeError(f"{out} exists: the users in it may be in use (rotate them instead of replacing them)")
    users, app, discovery = ClusterUsers.generate(lambda: secrets.token_hex(24))
    store_private(out, users.to_json() + "\n")
    store_private(Path(args.app_password_out), app + "\n")
    store_private(Path(args.discovery_password_out), discovery + "\n")
    print(f"# ACL users made: {out} (the controller's), {args.app_password_out} (the application servers': AUTH "
          f"app <password>), {args.discovery_password_out} (Sentinel clients that authenticate); all 0600.\n"
          f"# Add to the cluster's section of controller.toml (keep redis_password_file until the migration is "
          f"done), restart the controller, then `redwarden cluster secure CLUSTER`:\n"
          f'acl_users_file = "{out.resolve()}"')
    return 0


def cmd_cluster_secure(args: argparse.Namespace) -> int:
    from console.secure import secure

    if (args.finish or args.password_out) and not args.rotate:
        raise RuntimeError("--finish and --password-out go with --rotate")
    return secure(_client(args), args.cluster, apply=args.apply, timeout_s=args.timeout, as_json=args.json,
                  rotate=args.rotate, finish=args.finish, password_out=args.password_out)


def cmd_node_key(args: argparse.Namespace) -> int:
    key = _client(args).issue_node_key(args.cluster, args.node)
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    print(f"{args.cluster}/{args.node}: a new key is in {args.out} (0600); install it on the node as its "
          "node_key_file (/etc/redwarden/node.key) and restart redwarden-agent. The previous key no longer works.")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from console.render import render_status

    data = _client(args).clusters()
    if args.cluster:
        data = {"clusters": [c for c in data["clusters"] if c["name"] == args.cluster]}
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(render_status(data), end="")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from console.render import render_history

    data = _client(args).incidents(args.cluster, args.limit)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(render_history(data), end="")
    return 0


def cmd_cluster_create(args: argparse.Namespace) -> int:
    from console.provision import create_cluster

    cluster = create_cluster(_client(args), args.name, args.nodes, prefix=args.prefix,
                             timeout_s=args.timeout, progress=lambda m: print(f"  {m}", file=sys.stderr))
    print(f"cluster {args.name} is healthy: master {cluster.master}, {len(cluster.nodes)} nodes")
    return 0


def _switch(args: argparse.Namespace, verb: str) -> int:
    node = getattr(args, "node", None)
    heal = _client(args).switch(args.cluster, verb, node)
    target = f"{args.cluster}/{node}" if node else args.cluster
    print(f"{target}: {verb} done; paused={heal['paused']} paused_nodes={heal['paused_nodes']} "
          f"budget {heal['budget']['used_today']}/{heal['budget']['per_day']} acked={heal['budget']['acked']}")
    return 0


def cmd_heal_reset_state(args: argparse.Namespace) -> int:
    heal = _client(args).reset_heal_state(args.cluster)
    print(f"{args.cluster}: heal state reset (the old one is kept in the actions log); healing may act again; "
          f"paused={heal['paused']}: `redwarden pause {args.cluster}` if it was in maintenance")
    return 0


def cmd_drill(args: argparse.Namespace) -> int:
    from console.drill.command import main as drill_main

    resolvers = [p.drill_target for p in args.plugins]
    return drill_main(args, sandbox_target=resolvers[0] if resolvers else None)


def _add_drill_parser(sub: Any) -> None:
    from console.drill.model import FAULTS

    dr = sub.add_parser("drill", help="a failover drill with a writer running through it, and its timeline")
    dr.add_argument("cluster")
    what = dr.add_mutually_exclusive_group(required=True)
    what.add_argument("--fault", choices=FAULTS, help="one fault (network faults need `sandbox up --netns`)")
    what.add_argument("--campaign", type=int, metavar="N",
                      help="N faults drawn from the matrix one after another, with invariants (sandbox only)")
    dr.add_argument("--seed", type=int, default=1, help="--campaign: the seed of the draw (the same seed, the same "
                                                        "faults and victims)")
    dr.add_argument("--hold", type=float, default=12.0, metavar="S",
                    help="how long a timed fault (a cut, a killed agent, a full disk, a slow cloud) lasts")
    dr.add_argument("--sandbox", metavar="DIR", help="drill on the sandbox in DIR")
    dr.add_argument("--runs", type=int, default=1, help="repeat, each from a healthy cluster; prints a summary")
    dr.add_argument("--sentinel-order", choices=ORDER_CHOICES, default="controller",
                    help="the order of the writer's Sentinel list: the controller's (default), reversed, shuffled, "
                         "or all: --runs of each, with the unavailability per order and the worst")
    dr.add_argument("--between", type=float, default=0.0, metavar="S", help="at least S seconds between two faults")
    dr.add_argument("--timeout", type=float, default=300.0, metavar="S", help="per run, from the fault")
    dr.add_argument("--json", action="store_true", help="machine-readable output")
    add_connection_args(dr, default_url="the sandbox's")
    dr.add_argument("--i-know-this-is-production", action="store_true", help="allow a drill on a real cluster")
    dr.add_argument("--sentinel", action="append", metavar="HOST:PORT", help="real cluster: a Sentinel (repeat)")
    dr.add_argument("--master-name", default="mymaster", help="real cluster: the Sentinel master name")
    dr.add_argument("--redis-password-file", help="real cluster: file with the Redis password")
    dr.add_argument("--redis-username", help="real cluster with ACL users: the application's user (app)")
    dr.add_argument("--do-token-file", help="real cluster: file with a DigitalOcean API token")
    dr.add_argument("--do-api-url", help="real cluster: https://api.digitalocean.com")
    dr.add_argument("--do-ca-file", help="real cluster: a private CA for --do-api-url")
    dr.set_defaults(func=cmd_drill)


def build_parser(plugins: Sequence[CliPlugin] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="redwarden", description="Self-healing monitor for Redis Sentinel.")
    parser.add_argument("--version", action="version", version=f"redwarden {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    ctl = sub.add_parser("controller", help="run the controller service")
    ctl_sub = ctl.add_subparsers(dest="controller_command", required=True)
    run = ctl_sub.add_parser("run", help="serve the API and watch the clusters")
    run.add_argument("--config", required=True, help="controller TOML (e.g. /etc/redwarden/controller.toml)")
    run.set_defaults(func=cmd_controller_run)
    tls = ctl_sub.add_parser("init-tls", help="make a CA and a server certificate for the controller's HTTPS")
    tls.add_argument("--dir", default="/etc/redwarden/tls", help="where to keep them (default /etc/redwarden/tls)")
    tls.add_argument("--host", action="append", required=True,
                     help="a name or address agents use to reach the controller (repeat)")
    tls.set_defaults(func=cmd_controller_init_tls)
    au = ctl_sub.add_parser("acl-users", help="make a cluster's ACL users (for acl_users_file and `cluster secure`)")
    au.add_argument("--out", required=True, help="the controller's users file (JSON, 0600): acl_users_file")
    au.add_argument("--app-password-out", required=True, help="where the app user's password goes (0600)")
    au.add_argument("--discovery-password-out", required=True,
                    help="where the Sentinel discovery user's password goes (0600)")
    au.set_defaults(func=cmd_controller_acl_users)

    st = sub.add_parser("status", help="the fleet at a glance")
    st.add_argument("cluster", nargs="?", help="only this cluster")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    add_connection_args(st)
    st.set_defaults(func=cmd_status)

    hi = sub.add_parser("history", help="open and past incidents with their timelines")
    hi.add_argument("cluster", nargs="?", help="only this cluster")
    hi.add_argument("--json", action="store_true", help="machine-readable output")
    hi.add_argument("--limit", type=int, default=50)
    add_connection_args(hi)
    hi.set_defaults(func=cmd_history)

    cl = sub.add_parser("cluster", help="create clusters through the controller")
    cl_sub = cl.add_subparsers(dest="cluster_command", required=True)
    cc = cl_sub.add_parser("create", help="provision a new cluster and wait until it is healthy")
    cc.add_argument("--name", required=True)
    cc.add_argument("--nodes", type=int, default=3)
    cc.add_argument("--prefix", default="redis", help="droplet names: PREFIX-1, PREFIX-2, ...")
    cc.add_argument("--timeout", type=float, default=900.0)
    add_connection_args(cc)
    cc.set_defaults(func=cmd_cluster_create)
    cs = cl_sub.add_parser("secure", help="move CLUSTER from one requirepass to ACL users per role, or (--rotate) "
                                          "give one user a new secret; one node at a time, without a failover "
                                          "(dry run unless --apply; exit 0 done, 3 held, 1 failed)")
    cs.add_argument("cluster")
    cs.add_argument("--apply", action="store_true", help="run it (default: print the plan and change nothing)")
    cs.add_argument("--rotate", choices=("admin", "replication", "sentinel", "monitor", "app", "discovery"),
                    metavar="ROLE", help="instead: give ROLE's user a new secret, without a restart or a failover "
                                         "(admin, replication, sentinel, monitor, app, discovery)")
    cs.add_argument("--finish", action="store_true",
                    help="app/discovery: remove the old password (once the application uses the new one)")
    cs.add_argument("--password-out", metavar="FILE",
                    help="app/discovery: write the new password here (0600) instead of showing it once")
    cs.add_argument("--timeout", type=float, default=900.0, metavar="S", help="how long to follow the run")
    cs.add_argument("--json", action="store_true", help="machine-readable output")
    add_connection_args(cs)
    cs.set_defaults(func=cmd_cluster_secure)

    for verb, text in (("pause", "maintenance: the controller alerts but acts on nothing in CLUSTER (or NODE)"),
                       ("resume", "end maintenance"),
                       ("ack", "acknowledge an exhausted daily action budget: the controller may act again")):
        sw = sub.add_parser(verb, help=text)
        sw.add_argument("cluster")
        if verb != "ack":
            sw.add_argument("node", nargs="?")
        add_connection_args(sw)
        sw.set_defaults(func=lambda a, v=verb: _switch(a, v))

    he = sub.add_parser("heal", help="the controller's healing state")
    he_sub = he.add_subparsers(dest="heal_command", required=True)
    hr = he_sub.add_parser("reset-state", help="replace CLUSTER's unreadable heal state (HEAL_STATE_UNREADABLE) "
                                               "with a fresh one, so healing acts again (audited)")
    hr.add_argument("cluster")
    add_connection_args(hr)
    hr.set_defaults(func=cmd_heal_reset_state)

    nk = sub.add_parser("node-key", help="issue a node a new key (rotation, or a node from before 0.2)")
    nk.add_argument("cluster")
    nk.add_argument("node")
    nk.add_argument("--out", required=True, metavar="FILE", help="where to write the key (mode 0600)")
    add_connection_args(nk)
    nk.set_defaults(func=cmd_node_key)
    _add_drill_parser(sub)
    for plugin in plugins:
        plugin.add_commands(sub)
    parser.set_defaults(plugins=list(plugins))
    return parser


def main(argv: list[str] | None = None) -> int:
    plugins = load_plugins()
    args = build_parser(plugins).parse_args(argv)
    plugin_errors = tuple(e for p in plugins for e in p.errors)
    try:
        code: int = args.func(args)
        return code
    except ConfigError as e:
        print(f"redwarden: configuration error: {e}", file=sys.stderr)
        return 2
    except StateFileError as e:  # a corrupt or newer state file: restarting cannot help (exit 2 stops systemd)
        print(f"redwarden: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        from console.provision import ProvisionError

        if isinstance(e, (RuntimeError, ProvisionError, *plugin_errors)):
            print(f"redwarden: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
