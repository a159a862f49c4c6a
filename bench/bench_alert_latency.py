"""Benchmark: SIGKILL of the master's redis-server -> first PagerDuty trigger at a local receiver.

Boots a 3-node sandbox (real Redis and Sentinel, report interval 1 s, down-after 5000 ms) whose
controller pages a local PagerDuty stand-in; then, --runs times: kill the master's redis-server, time
the MASTER_DOWN trigger's arrival, start redis-server again, wait until the cluster is healthy and the
incident resolved. Prints every run, the median and the worst. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sandbox.receiver import Receiver

REDWARDEN = [sys.executable, "-m", "console.cli"]


def cli(*args: str) -> str:
    return subprocess.run([*REDWARDEN, *args], check=True, capture_output=True, text=True).stdout


def wait(probe, timeout_s: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Receiver() as receiver:
        root = Path(tmp) / "sb"
        cli("sandbox", "up", "--dir", str(root), "--report-interval-s", "1",
            "--pagerduty-url", f"{receiver.url}/pagerduty/v2/enqueue", "--pagerduty-routing-key", "k" * 32)
        try:
            st = json.loads(cli("sandbox", "status", "--dir", str(root), "--json"))
            url = st["controller_url"]
            api = requests.Session()  # the sandbox's controller: HTTPS with its own CA, and a token
            api.trust_env = False
            api.verify = st["controller_ca_cert"]
            api.headers["Authorization"] = f"Bearer {st['read_token']}"

            def cluster() -> dict:  # type: ignore[type-arg]
                return api.get(f"{url}/v1/clusters", timeout=5).json()["clusters"][0]  # type: ignore[no-any-return]

            results = []
            for run in range(args.runs):
                wait(lambda: cluster()["health"] == "healthy", 120, "a healthy cluster")
                master = next(n for n in cluster()["nodes"] if n["role"] == "master")["name"]
                seen = len(receiver.accepted("pagerduty"))
                t0 = time.time()
                cli("sandbox", "fault", "--dir", str(root), master, "redis", "kill")
                page = wait(lambda seen=seen: next((r for r in receiver.accepted("pagerduty")[seen:]
                                                    if r.body.get("event_action") == "trigger"
                                                    and "MASTER_DOWN" in r.body.get("dedup_key", "")), None),
                            30, "a page")
                results.append(page.at - t0)
                print(f"run {run + 1}: first PagerDuty trigger {page.at - t0:.2f} s after SIGKILL of {master}'s redis")
                cli("sandbox", "fault", "--dir", str(root), master, "redis", "start")
                # the same incident must be over, or the next kill would only be "back before it cleared"
                wait(lambda: all(i["status"] == "resolved" for i in
                                 api.get(f"{url}/v1/incidents", timeout=5).json()["incidents"]), 120,
                     "every incident resolved")
            print(f"kill -> page: median {statistics.median(results):.2f} s, worst {max(results):.2f} s "
                  f"over {len(results)} runs (report interval 1 s, down-after 5000 ms)")
        finally:
            subprocess.run([*REDWARDEN, "sandbox", "down", "--dir", str(root)], check=False, capture_output=True)


if __name__ == "__main__":
    main()
