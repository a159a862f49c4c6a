"""`redwarden drill CLUSTER --fault F ...`: the command. Options, the endpoints and target of a real cluster
(the sandbox's come from its CLI plugin), the runs, and what is printed: the timeline of each run (or
JSON), a summary over several, progress on stderr. Exit codes: 0 when every run ended healthy, 1 on a
timeout or an error, 2 on a usage error (a wrong cluster name included).

Layer: the drill's command (top of `console.drill`): parses and prints; everything else is `run`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from console.client import ControllerError, ControllerNotFound
from console.connection import ca_cert, operator_token
from console.drill.controller_api import ControllerApi
from console.drill.model import REMOTE_FAULTS, DrillError, DrillUsageError
from console.drill.result import DrillResult, render_summary, render_timeline, summarize
from console.drill.run import DrillOptions, run_drills
from console.drill.targets import CloudTarget, Endpoints, FaultTarget, TargetResolver


def _parse_sentinel(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise DrillUsageError(f"--sentinel wants HOST:PORT, not {text!r}")
    return host, int(port)


def _real_cluster(args: argparse.Namespace) -> tuple[FaultTarget, Endpoints]:
    from protocol.settings import read_secret

    if not args.i_know_this_is_production:
        raise DrillUsageError("a drill without --sandbox runs on a real cluster: it destroys a droplet. Give "
                              "--sandbox DIR, or --i-know-this-is-production with --controller, --sentinel, "
                              "--redis-password-file, --do-token-file and --do-api-url")
    if args.campaign is not None:
        raise DrillUsageError("--campaign needs --sandbox: it cuts networks and fills disks")
    if args.fault not in REMOTE_FAULTS:
        raise DrillUsageError(f"--fault {args.fault} needs --sandbox: redwarden cannot kill or freeze a remote "
                              "redis-server; on a real cluster use destroy-replica or destroy-master")
    missing = [flag for flag, value in (("--controller", args.controller), ("--sentinel", args.sentinel),
                                        ("--redis-password-file", args.redis_password_file),
                                        ("--do-token-file", args.do_token_file), ("--do-api-url", args.do_api_url))
               if not value]
    if missing:
        raise DrillUsageError(f"a drill on a real cluster needs {', '.join(missing)}")
    from controller.adapters.cloud import PydoCloud

    token = read_secret(args.do_token_file, "--do-token-file") or ""
    cloud = PydoCloud(token, args.do_api_url, ca_path=args.do_ca_file)
    sentinels = tuple(_parse_sentinel(s) for s in args.sentinel)
    endpoints = Endpoints(args.controller, args.cluster, args.master_name,
                          read_secret(args.redis_password_file, "--redis-password-file"), lambda: sentinels,
                          token=operator_token(args), ca_cert=ca_cert(args),
                          redis_username=getattr(args, "redis_username", None))
    return CloudTarget(cloud, f"cluster {args.cluster}"), endpoints


def _campaign(args: argparse.Namespace, api: ControllerApi, target: FaultTarget, endpoints: Endpoints,
              opts: DrillOptions, emit: Callable[[str], None]) -> int:
    """`--campaign N --seed S`: 0 when every invariant held, 1 otherwise."""
    from console.drill.campaign import CampaignOptions, render_campaign, run_campaign

    names = getattr(target, "droplet_names", None)
    doc = run_campaign(api, target, endpoints, CampaignOptions(args.campaign, args.seed, opts),
                       droplet_names=names if callable(names) else None, progress=emit)
    print(json.dumps(doc, indent=2) if args.json else render_campaign(doc), end="" if not args.json else "\n")
    return 0 if doc["held"] else 1


def main(args: argparse.Namespace, sandbox_target: TargetResolver | None = None) -> int:
    """`redwarden drill CLUSTER --fault F ...`: 0 when every run ended healthy, 1 on a timeout or error,
    2 on a usage error."""
    from protocol.logs import configure_logging

    configure_logging("console", "warning")  # adapters' log lines go to stderr; stdout stays the result
    try:
        if args.runs < 1:
            raise DrillUsageError("--runs must be >= 1")
        if args.campaign is not None and args.campaign < 1:
            raise DrillUsageError("--campaign must be >= 1")
        if args.hold <= 0:
            raise DrillUsageError("--hold must be > 0")
        if args.sandbox:
            if sandbox_target is None:
                raise DrillUsageError("--sandbox needs the sandbox, which is not installed here "
                                      "(pip install 'redwarden[sandbox]')")
            target, endpoints = sandbox_target(args)
        else:
            target, endpoints = _real_cluster(args)
        opts = DrillOptions(fault=args.fault or "", runs=args.runs, timeout_s=args.timeout, between_s=args.between,
                            hold_s=args.hold, sentinel_order=args.sentinel_order)
        api = ControllerApi(endpoints.controller_url, endpoints.cluster, token=endpoints.token,
                            ca_cert=endpoints.ca_cert)

        def emit(line: str) -> None:
            print(f"  {line}", file=sys.stderr, flush=True)

        if args.campaign is not None:
            return _campaign(args, api, target, endpoints, opts, emit)

        def each(result: DrillResult) -> None:
            if not args.json:
                print(render_timeline(result), flush=True)

        results = run_drills(api, target, endpoints, opts, progress=emit, each=each)
    except (DrillUsageError, ControllerNotFound) as e:
        print(f"redwarden: drill: {e}", file=sys.stderr)
        return 2
    except (DrillError, ControllerError) as e:
        print(f"redwarden: drill: {e}", file=sys.stderr)
        return 1
    several = len(opts.planned_orders()) > 1
    if args.json:
        doc: object = {"runs": results, "summary": summarize(results)} if several else results[0]
        print(json.dumps(doc, indent=2))
    elif several:
        print(render_summary(summarize(results)), end="")
    return 1 if any(r["timed_out"] for r in results) else 0
