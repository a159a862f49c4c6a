"""`redwarden cluster secure CLUSTER [--apply]`: the dry run's plan, or a run followed step by step.

Layer: console. The controller does the work (`POST/GET /v1/clusters/{c}/secure`); this prints the plan and
what each node runs now, or each step as it finishes, and exits 0 when the run is done, 3 when it is held
(clients still on `default`: move them to the app user and run it again), 1 when a step failed.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

from console.client import ControllerClient

EXIT_HELD = 3


def render_plan(plan: dict[str, Any]) -> str:
    lines = [f"cluster {plan['cluster']}: dry run (nothing changed); master {plan.get('master')}", "", "now:"]
    for name, seen in sorted(plan.get("observed", {}).items()):
        lines.append(f"  {name}: redis users {seen.get('redis_users', '?')}, default on {seen.get('default_on')}, "
                     f"masteruser {seen.get('masteruser')}, agent as {seen.get('agent_user')}, "
                     f"sentinel users {seen.get('sentinel_users', '?')}")
    lines += ["", "plan (each step verified before the next; run again with --apply):"]
    for i, step in enumerate(plan.get("steps", []), 1):
        lines.append(f"  {i:2d}. [{step['phase']}] {step['description']}")
    return "\n".join(lines) + "\n"


def secure(client: ControllerClient, cluster: str, apply: bool, timeout_s: float, as_json: bool,
           out: Callable[[str], None] = print, sleep: Callable[[float], None] = time.sleep) -> int:
    if not apply:
        plan = client.secure(cluster)
        out(json.dumps(plan, indent=2) if as_json else render_plan(plan).rstrip("\n"))
        return 0
    job = client.secure(cluster, apply=True)
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
    out(json.dumps(job, indent=2) if as_json else f"cluster {cluster}: {job['state']}: {job['message']}")
    if job["state"] == "running":
        raise RuntimeError(f"still running after {timeout_s:.0f} s: `redwarden cluster secure {cluster}` ... "
                           "follow it with GET /v1/clusters/{cluster}/secure")
    return {"done": 0, "held": EXIT_HELD}.get(job["state"], 1)
