"""Benchmark: failover drills with a Sentinel-aware writer (`redwarden drill`), on sandboxes.

Sandbox A (report interval 1 s, down-after 5000 ms, Sentinel reset interval 30 s, fast failover on):
kill-master --runs N --sentinel-order all (N runs with the writer's Sentinel list in each order: the
controller's, reversed, shuffled; interleaved), at least 65 s apart (no fast failover back to a node
failed away from within 60 s, and with 3 nodes both replicas can be that), then destroy-replica --runs N. Sandbox B, the
same but started with --no-fast-failover: kill-master --runs N (Sentinel's own timer). Prints every run's
timeline, then median and worst of write unavailability, time to full redundancy and lost writes, and the
replacement droplet's boot + initial sync (replacement_created -> replica_in_sync) for reference.
Targets (README): unavailability with fast failover, worst over the Sentinel orders, <= 1.5 s median and
<= 2 s worst; redundancy after a destroyed replica <= boot +
initial sync + 10 s; 0 lost writes acknowledged with WAIT 1. Asserts nothing.

Each sandbox's daily healing budget (30 actions) is lifted with `redwarden ack` once it is up: N
destroy-replica drills alone can use more than that.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from console.drill.result import boot_and_sync_s, render_summary, render_timeline, summarize

REDWARDEN = [sys.executable, "-m", "console.cli"]


def cli(*args: str) -> str:
    return subprocess.run([*REDWARDEN, *args], check=True, capture_output=True, text=True).stdout


def drills(root: Path, fault: str, runs: int, between_s: float = 0.0,
           order: str = "controller") -> list[dict[str, Any]]:
    """`redwarden drill --json`; its progress lines go to our stderr as they happen."""
    proc = subprocess.run([*REDWARDEN, "drill", "sandbox", "--fault", fault, "--sandbox", str(root), "--runs",
                           str(runs), "--between", str(between_s), "--sentinel-order", order, "--json"],
                          stdout=subprocess.PIPE, text=True)
    if not proc.stdout.strip():
        print(f"drill {fault} produced no result (exit {proc.returncode})")
        return []
    doc = json.loads(proc.stdout)
    runs: list[dict[str, Any]] = doc.get("runs", [doc])
    return runs


def sandbox_up(root: Path, *extra: str) -> str:
    url = cli("sandbox", "up", "--dir", str(root), "--report-interval-s", "1", "--down-after-ms", "5000",
              *extra).strip()
    cli("ack", "sandbox", "--controller", url)
    return url


def report(title: str, results: list[dict[str, Any]]) -> None:
    print(f"== {title}")
    for i, r in enumerate(results, 1):
        print(f"-- run {i}")
        print(render_timeline(r), end="")
        sync = boot_and_sync_s(r)
        if sync is not None:
            print(f"boot + initial sync {sync:.2f} s -> target for redundancy {sync + 10:.2f} s "
                  f"(+ {next(s['at_s'] for s in r['steps'] if s['name'] == 'replacement_created'):.2f} s "
                  "to detect and create)")
    if results:
        print(render_summary(summarize(results)), end="")
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json-out", metavar="FILE", help="also write every run's full result (JSON) here")
    args = ap.parse_args()
    out: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp:
        # production Sentinel timings for the reset sequence (the sandbox's default interval is 5 s)
        for name, extra in (("fast", ("--sentinel-reset-interval-s", "30")), ("timer", ("--no-fast-failover",))):
            root = Path(tmp) / name
            try:
                sandbox_up(root, *extra)
                if name == "fast":
                    out["kill-master, fast failover, every Sentinel order"] = drills(
                        root, "kill-master", args.runs, between_s=65, order="all")
                    out["destroy-replica"] = drills(root, "destroy-replica", args.runs)
                else:
                    out["kill-master, Sentinel's timer only (--no-fast-failover)"] = drills(root, "kill-master",
                                                                                             args.runs)
            finally:
                subprocess.run([*REDWARDEN, "sandbox", "down", "--dir", str(root)], check=False, capture_output=True)
    for title, results in out.items():
        report(title, results)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=2))
    print("report interval 1 s, down-after 5000 ms, writer: SET + WAIT 1 200 every 10 ms through redis-py's "
          "Sentinel client")


if __name__ == "__main__":
    main()
