"""Benchmark: a long seeded fault campaign (`redwarden drill --campaign 50`) on a sandbox in its own network
namespace (`sandbox up --netns`: root, ip, nft).

Prints the campaign (every fault, its victim, write unavailability, writes lost, the controller's actions),
the invariants, then per fault type: how many ran, median and worst write unavailability, acknowledged
writes lost and writes accepted without a replica then lost. Targets (README): 0 harmful actions, every
invariant held, 0 acknowledged writes lost. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from console.drill.campaign import render_campaign

REDWARDEN = [sys.executable, "-m", "console.cli"]


def per_fault(doc: dict[str, Any]) -> str:
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in doc["faults"]:
        rows[f["fault"]].append(f)
    out = [f"{'fault':<20} {'runs':>4} {'unavail. median':>16} {'worst':>7} {'acked lost':>10} {'plain lost':>10}"]
    for fault, fs in sorted(rows.items()):
        un = [f["write_unavailable_s"] or 0.0 for f in fs]
        acked = sum(f["writes_lost"] or 0 for f in fs)
        plain = sum(f["writes_plain_lost"] or 0 for f in fs)
        out.append(f"{fault:<20} {len(fs):>4} {statistics.median(un):>14.2f} s {max(un):>5.2f} s {acked:>10} "
                   f"{plain:>10}")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faults", type=int, default=50)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--json-out", metavar="FILE", help="also write the campaign's JSON here")
    args = ap.parse_args()
    if os.geteuid() != 0 or not shutil.which("nft"):
        print("bench_campaign: skipped (needs root and nft for `sandbox up --netns`)")
        return
    with tempfile.TemporaryDirectory(prefix="bench-campaign-") as tmp:
        root = Path(tmp) / "sb"
        try:
            # 50 faults take more healing actions than a day's default budget (30)
            subprocess.run([*REDWARDEN, "sandbox", "up", "--netns", "--dir", str(root), "--daily-budget", "1000"],
                           check=True, capture_output=True, text=True)
            proc = subprocess.run([*REDWARDEN, "drill", "sandbox", "--campaign", str(args.faults), "--seed",
                                   str(args.seed), "--sandbox", str(root), "--json"], stdout=subprocess.PIPE,
                                  text=True)
        finally:
            subprocess.run([*REDWARDEN, "sandbox", "down", "--dir", str(root)], check=False, capture_output=True)
    if not proc.stdout.strip():
        print(f"the campaign produced no result (exit {proc.returncode})")
        return
    doc = json.loads(proc.stdout)
    print(render_campaign(doc), end="")
    print(per_fault(doc), end="")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
