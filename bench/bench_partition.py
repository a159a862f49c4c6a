"""Benchmark: the master cut off from its replicas (`redwarden drill --fault partition-master`), and a
replica replaced (`--fault destroy-replica`), on a sandbox in its own network namespace.

Sandbox (report interval 1 s, down-after 5000 ms, `sandbox up --netns`): partition-master --runs N with
the writer's Sentinels in the cluster's own order (`--sentinel-order controller`, the old master's
Sentinel first), then destroy-replica once. Prints every run's timeline, then per partition the
split-brain window (from the new master seen to the last write the old master accepted that was lost),
the writes the old master accepted and lost, the write unavailability and the time to the fence; and the
critical incidents opened during the replacement of a replica (`redwarden history --json`).
Targets (issue 12): split-brain window <= 1 s; unavailability <= down-after + 2 s; 0 critical pages
during a replacement. Needs root, `ip` and `nft`: skips otherwise. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_failover import cli, drills  # the same `redwarden drill --json` runs

from console.drill.result import render_summary, render_timeline, summarize
from sandbox import netns

REDWARDEN = [sys.executable, "-m", "console.cli"]


def cli_inside(root: Path, url: str, *args: str) -> str:
    """A `redwarden` command to the sandbox's controller as its admin (its token and CA from the sandbox's
    directory), inside the sandbox's network namespace (`sandbox` and `drill --sandbox` commands enter it
    themselves, `ack` and `history` do not)."""
    name = netns.recorded(root)
    enter = ["nsenter", f"--net=/run/netns/{name}", "--"] if name else []
    state = json.loads((root / "sandbox.json").read_text())
    conn = ["--controller", url, "--token-file", str(root / "secrets" / "admin.token"), "--ca-cert",
            str(state["controller_ca_cert"])]
    return subprocess.run([*enter, *REDWARDEN, *args, *conn], check=True, capture_output=True, text=True).stdout


def critical_incidents_since(root: Path, url: str, since: float) -> list[str]:
    """The critical incidents opened at or after `since` (their code and subject)."""
    data = json.loads(cli_inside(root, url, "history", "--json"))
    rows = data.get("incidents", data) if isinstance(data, dict) else data
    return [f"{i.get('code')} {i.get('subject', '')}".strip() for i in rows
            if isinstance(i, dict) and i.get("severity") == "critical" and (i.get("opened_at") or 0) >= since]


def _at(at_s: float | None) -> str:
    return "never" if at_s is None else f"+{at_s:.2f}s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json-out", metavar="FILE", help="also write every run's full result (JSON) here")
    args = ap.parse_args()
    missing = [t for t in ("ip", "nft", "redis-server") if shutil.which(t) is None]
    if os.geteuid() != 0 or missing:
        print(f"skipped: needs root and {', '.join(missing) or 'ip, nft'} (a sandbox in its own network namespace)")
        return
    with tempfile.TemporaryDirectory(prefix="bench-partition-") as tmp:
        root = Path(tmp) / "sb"
        try:
            url = cli("sandbox", "up", "--netns", "--dir", str(root), "--report-interval-s", "1",
                      "--down-after-ms", "5000").strip().splitlines()[-1]
            cli_inside(root, url, "ack", "sandbox")
            partitions = drills(root, "partition-master", args.runs, between_s=65)
            replacement = drills(root, "destroy-replica", 1)
            pages = critical_incidents_since(root, url, replacement[0]["fault_at"]) if replacement else []
        finally:
            subprocess.run([*REDWARDEN, "sandbox", "down", "--dir", str(root)], check=False, capture_output=True)
    print("== partition-master, writer's Sentinels in the cluster's own order")
    for i, r in enumerate(partitions, 1):
        print(f"-- run {i}")
        print(render_timeline(r), end="")
        fence = next((a["at_s"] for a in r["actions"] if a["kind"] == "Fence"), None)
        new_master = next((s["at_s"] for s in r["steps"] if s["name"] == "new_master"), None)
        print(f"fence at {_at(fence)} (new master seen at {_at(new_master)}); split-brain window "
              f"{r.get('split_brain_s')} s; old master's writes lost {r.get('old_master_writes_lost')}; "
              f"unavailable {r['write_unavailable_s']:.2f} s (target <= 7.00 s)")
    if partitions:
        print(render_summary(summarize(partitions)), end="")
    print("== destroy-replica: critical incidents opened during the replacement")
    for r in replacement:
        print(render_timeline(r), end="")
    print(f"critical pages: {len(pages)}" + (f" ({', '.join(pages)})" if pages else ""))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"partition-master": partitions, "destroy-replica": replacement,
                                                   "critical_pages": pages}, indent=2))
    print("report interval 1 s, down-after 5000 ms, min-replicas-max-lag 10 s, writer: SET + WAIT 1 200 every "
          "10 ms through redis-py's Sentinel client")


if __name__ == "__main__":
    main()
