"""Benchmark: the agent's steady resident memory and CPU per report cycle, against real Redis and Sentinel.

Boots a 1-node sandbox (real redis-server, redis-sentinel, agent, controller), lets the agent warm up,
then watches the agent process for --seconds: CPU seconds used (psutil) divided by the cycles it
reported (the controller's `report_seq`), and its RSS. Asserts nothing: targets live in the README.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests

REDWARDEN = [sys.executable, "-m", "console.cli"]


def seq(url: str) -> int:
    node = requests.get(f"{url}/v1/clusters", timeout=5).json()["clusters"][0]["nodes"][0]
    return int(node["report_seq"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--interval", type=float, default=0.2, help="report interval for the measurement")
    ap.add_argument("--seconds", type=float, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "sb"
        subprocess.run([*REDWARDEN, "sandbox", "up", "--dir", str(root), "--nodes", "1",
                        "--report-interval-s", str(args.interval)], check=True, capture_output=True)
        try:
            st = json.loads(subprocess.run([*REDWARDEN, "sandbox", "status", "--dir", str(root), "--json"],
                                           check=True, capture_output=True, text=True).stdout)
            agent = psutil.Process(st["droplets"][0]["pids"]["agent"])
            url = st["controller_url"]
            warm_until = time.monotonic() + 5
            while time.monotonic() < warm_until:  # let imports, pools and caches settle
                time.sleep(0.5)
            cpu0, seq0 = sum(agent.cpu_times()[:2]), seq(url)
            rss_peak = 0
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                rss_peak = max(rss_peak, agent.memory_info().rss)
                time.sleep(0.5)
            cpu1, seq1 = sum(agent.cpu_times()[:2]), seq(url)
            cycles = seq1 - seq0
            print(f"agent: {cycles} cycles in {args.seconds:.0f} s at {args.interval} s interval; "
                  f"CPU {1000 * (cpu1 - cpu0) / max(cycles, 1):.2f} ms per cycle; "
                  f"RSS {agent.memory_info().rss / 2**20:.1f} MiB (peak {rss_peak / 2**20:.1f} MiB)")
        finally:
            subprocess.run([*REDWARDEN, "sandbox", "down", "--dir", str(root)], check=False, capture_output=True)


if __name__ == "__main__":
    main()
