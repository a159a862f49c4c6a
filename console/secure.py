"""`redwarden cluster secure CLUSTER [--rotate ROLE [--finish]] [--apply]`: the dry run's plan, or a run
followed step by step.

Layer: console. The controller does the work (`POST/GET /v1/clusters/{c}/secure`); this prints the plan and
what each node runs now, or each step as it finishes, and exits 0 when the run is done, 3 when it is held
(clients still on `default`: move them to the app user and run it again; a rotation of app or discovery
waiting for the application to move; the cluster's nodes changed), 1 when a step failed.

Rotating `app` or `discovery`: their passwords belong to the application servers, so the controller never
sees them. The console makes the new one here and sends only its SHA-256; once the controller has added it
next to the old one on every node (the run holds there), it is shown once on this terminal (stdout) or
written to `--password-out` (0600), and kept nowhere else.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from console.client import ControllerClient
from protocol.settings import store_private

EXIT_HELD = 3


def render_plan(plan: dict[str, Any]) -> str:
    what = f"rotation of {plan['rotate']}{' (finish)' if plan.get('finish') else ''}, " if plan.get("rotate") else ""
    lines = [f"cluster {plan['cluster']}: {what}dry run (nothing changed); master {plan.get('master')}", "", "now:"]
    if plan.get("unfinished_rotation"):
        lines.insert(1, f"unfinished: the rotation of {plan['unfinished_rotation']} (a run again finishes it)")
    for name, seen in sorted(plan.get("observed", {}).items()):
        lines.append(f"  {name}: redis users {seen.get('redis_users', '?')}, default on {seen.get('default_on')}, "
                     f"masteruser {seen.get('masteruser')}, agent as {seen.get('agent_user')}, "
                     f"sentinel users {seen.get('sentinel_users', '?')}")
    lines += ["", "plan (each step verified before the next; run again with --apply):"]
    for i, step in enumerate(plan.get("steps", []), 1):
        lines.append(f"  {i:2d}. [{step['phase']}] {step['description']}")
    return "\n".join(lines) + "\n"


OPERATOR_ROLES = ("app", "discovery")


def secure(client: ControllerClient, cluster: str, apply: bool, timeout_s: float, as_json: bool,
           out: Callable[[str], None] = print, sleep: Callable[[float], None] = time.sleep,
           rotate: str | None = None, finish: bool = False, password_out: str | None = None) -> int:
    if not apply:
        plan = client.secure(cluster, rotate=rotate, finish=finish)
        out(json.dumps(plan, indent=2) if as_json else render_plan(plan).rstrip("\n"))
        return 0
    password = secrets.token_hex(24) if rotate in OPERATOR_ROLES and not finish else None
    job = client.secure(cluster, apply=True, rotate=rotate, finish=finish,
                        new_sha256=hashlib.sha256(password.encode()).hexdigest() if password else None)
    shown: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while True:
        for i, step in enumerate(job["steps"], 1):
            if i not in shown and step["status"] in ("done", "failed", "held"):
                shown.add(i)
                if not as_json:
                    print(f"  {i:2d}/{len(job['steps'])} {step['status']:6s} [{step['phase']}] {step['node']}: "
                          f"{step['detail']}", file=sys.stderr)
        if job["state"] != "running" or time.monotonic() > deadline:
            break
        sleep(0.5)
        job = client.secure_progress(cluster)
    # added on every node (the hold is the last step, after every node took it): the operator's, now
    show = password is not None and job["state"] == "held" and job["steps"][-1]["status"] == "held"
    if show and password_out:
        store_private(Path(password_out), f"{password}\n")
    if as_json:  # stdout stays one JSON document
        out(json.dumps({**job, "new_password": password} if show and not password_out else job, indent=2))
    else:
        out(f"cluster {cluster}: {job['state']}: {job['message']}")
        if show and password_out:
            out(f"the new {rotate} password is in {password_out} (0600); it is kept nowhere else")
        elif show:
            out(f"the new {rotate} password (shown once, kept nowhere else): {password}")
    if job["state"] == "running":
        raise RuntimeError(f"still running after {timeout_s:.0f} s: `redwarden cluster secure {cluster}` ... "
                           "follow it with GET /v1/clusters/{cluster}/secure")
    return {"done": 0, "held": EXIT_HELD}.get(job["state"], 1)
