"""Benchmark: the sandbox's two droplet modes side by side (issue 14).

Prints, for `sandbox up --droplets systemd` (each droplet a systemd-nspawn container running the production
user_data with cloud-init, the agent .deb and the packages' units): the time from `sandbox up` to a healthy
cluster, the memory (PSS) of each container droplet, the kill-master drill's write unavailability, and a
destroyed replica's replacement from its create to an in-sync replica; then the same `up` time, kill-master
unavailability and replacement time for `--droplets process`. `--runs N` repeats each drill. Needs root and
debootstrap for the systemd mode (skips it otherwise); the Debian root is cached in build/nspawn-cache.
Asserts nothing.
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
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox import nspawn, sysdroplets

CLI = [sys.executable, "-m", "console.cli"]


def _cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False)


def _drill(root: Path, fault: str) -> dict[str, Any] | None:
    proc = _cli("drill", "sandbox", "--fault", fault, "--sandbox", str(root), "--json", "--timeout", "200")
    if proc.returncode != 0:
        print(f"  drill {fault} failed ({proc.returncode}): {proc.stderr.strip()[-300:]}")
        return None
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def _step(result: dict[str, Any], name: str) -> float | None:
    value: float | None = next((s["at_s"] for s in result["steps"] if s["name"] == name), None)
    return value


def _fmt(values: list[float]) -> str:
    if not values:
        return "-"
    return ", ".join(f"{v:.2f}" for v in values) + (f" (median {statistics.median(values):.2f})"
                                                   if len(values) > 2 else "")


def bench_mode(mode: str, runs: int, deb: str | None) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"bench-{mode}-"))
    out: dict[str, Any] = {"mode": mode, "kill_master_unavailable_s": [], "replacement_s": [], "kill_master": []}
    extra = ["--agent-deb", deb] if deb else []
    try:
        t0 = time.monotonic()
        proc = _cli("sandbox", "up", "--droplets", mode, "--dir", str(root), "--report-interval-s", "0.5",
                    "--timeout", "300", *extra)
        if proc.returncode != 0:
            print(f"  sandbox up --droplets {mode} failed: {proc.stderr.strip()[-500:]}")
            return out
        out["up_s"] = time.monotonic() - t0
        st = json.loads(_cli("sandbox", "status", "--dir", str(root), "--json").stdout)
        if mode == "process":  # its redis-server, redis-sentinel and agent
            out["memory_kib"] = [sum(_pss_kib(pid) for pid in d["pids"].values() if pid) for d in st["droplets"]]
        else:  # every process of the container, systemd, journald, dbus and polkitd included
            out["memory_kib"] = [sysdroplets.memory_kib(root, d) for d in st["droplets"]]
            out["upper_mb"] = [_du_mb(root / "containers" / sysdroplets.container_of(d) / "upper")
                               for d in st["droplets"]]
        for _ in range(runs):
            r = _drill(root, "kill-master")
            if r is not None:
                out["kill_master_unavailable_s"].append(float(r["write_unavailable_s"]))
                failover = "failover" if _step(r, "new_master") is not None else "no failover"
                out["kill_master"].append(f"{failover}, {r['writes_lost']} lost")
            r = _drill(root, "destroy-replica")
            if r is not None:
                created, in_sync = _step(r, "replacement_created"), _step(r, "replica_in_sync")
                if created is not None and in_sync is not None:
                    out["replacement_s"].append(in_sync - created)
    finally:
        _cli("sandbox", "down", "--dir", str(root))
        shutil.rmtree(root, ignore_errors=True)
    return out


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _du_mb(path: Path) -> float:
    done = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=False)
    return int(done.stdout.split()[0]) / 1e6 if done.returncode == 0 else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=1, help="drills of each kind per mode")
    ap.add_argument("--modes", default="systemd,process")
    ap.add_argument("--agent-deb", help="the agent package (default: the newest dist/redwarden-agent_*.deb)")
    args = ap.parse_args()
    results = []
    for mode in args.modes.split(","):
        if mode == "systemd" and (os.geteuid() != 0 or shutil.which("debootstrap") is None):
            print("systemd: skipped (needs root and debootstrap)")
            continue
        if mode == "systemd":
            cache = sysdroplets.default_cache()
            t0 = time.monotonic()
            nspawn.ensure_root(cache, progress=lambda m: print(f"  {m}"))
            print(f"Debian root ready in {time.monotonic() - t0:.1f} s ({cache})")
        print(f"{mode}: sandbox up, {args.runs} kill-master and destroy-replica drill(s) ...", flush=True)
        results.append(bench_mode(mode, args.runs, args.agent_deb if mode == "systemd" else None))
    print()
    print(f"{'':40} " + " ".join(f"{r['mode']:>22}" for r in results))
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
            ("sandbox up to healthy (s)", lambda r: f"{r['up_s']:.1f}" if "up_s" in r else "-"),
            ("kill-master write unavailability (s)", lambda r: _fmt(r["kill_master_unavailable_s"])),
            ("kill-master: failover? acked writes lost", lambda r: "; ".join(r["kill_master"]) or "-"),
            ("replacement: create -> in-sync (s)", lambda r: _fmt(r["replacement_s"])),
            ("memory per droplet, PSS (MiB)", lambda r: ", ".join(f"{m / 1024:.0f}" for m in r["memory_kib"] if m)
             if r.get("memory_kib") else "-"),
            ("disk per droplet, own layer (MB)", lambda r: ", ".join(f"{m:.0f}" for m in r["upper_mb"])
             if r.get("upper_mb") else "-")]
    for label, cell in rows:
        print(f"{label:40} " + " ".join(f"{cell(r):>22}" for r in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
