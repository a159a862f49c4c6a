"""Benchmark: the agent's resident memory and CPU per report cycle, on a 3-node sandbox at the real 1 s interval.

Brings up `redwarden sandbox up --nodes 3` (per droplet a real redis-server, redis-sentinel and agent; one
controller), finds the three agents' pids (`redwarden sandbox status --json`) and samples each agent's RSS
and CPU times (psutil) at the start, after 1 minute and after --minutes (default 10). Cycles are the
controller's `report_seq` for that node (`redwarden status --json`); CPU ms per cycle is the agent
process's own user+system time over the window divided by the cycles in it, so other load on the machine
does not inflate it (the load average is printed beside it anyway). Then it prints where an agent's memory
goes: RSS after each group of the imports that `redwarden-agent run` makes (its libraries: psutil,
requests, structlog, APScheduler, redis-py), in a fresh interpreter; `--imports-only` prints just that
table, without a sandbox. Prints figures, asserts nothing: the targets are <= 42 MiB RSS per agent after
10 minutes and <= 5 ms CPU per cycle (issue 19).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

REDWARDEN = [sys.executable, "-m", "console.cli"]
MIB = 2**20
SAMPLE_EVERY_S = 5.0

# The imports of `redwarden-agent run`, grouped by what they are for, the libraries before the agent's own code
# (which imports them). Each group is measured as the RSS it adds to the groups before it (shared pages
# count once: OpenSSL is one library behind hashlib, hmac and ssl; asyncio is loaded by structlog and by
# redis-py, and counted once, before both).
RUN_IMPORTS: list[tuple[str, list[str]]] = [
    ("psutil (host health, process watch)", ["psutil"]),
    ("stdlib: argparse, json, dataclasses, tomllib, typing, socket, threading, select, random",
     ["argparse", "json", "dataclasses", "tomllib", "typing", "socket", "threading", "select", "random"]),
    ("OpenSSL via hashlib + hmac (report signatures)", ["hashlib", "hmac"]),
    ("ssl (HTTPS to the controller)", ["ssl"]),
    ("requests (urllib3, charset_normalizer, idna, http.client, http.cookiejar): pushes, enrollment, metadata",
     ["requests"]),
    ("asyncio (loaded by structlog.stdlib and by redis-py)", ["asyncio"]),
    ("structlog (the log lines)", ["structlog"]),
    ("APScheduler BackgroundScheduler + thread pool (tzlocal, zoneinfo, concurrent.futures): the schedule",
     ["apscheduler.schedulers.background", "apscheduler.executors.pool"]),
    ("redis-py (Redis and Sentinel probes, directives)", ["redis"]),
    ("agent.cli + agent.config + protocol (settings, report, logs)", ["agent.cli"]),
    ("agent.runtime and the rest of the agent", ["agent.runtime"]),
]
# What the agent's process must not load (tests/test_agent_footprint.py fails on it too).
FORBIDDEN = ("sandbox", "controller", "console", "fastapi", "pydantic", "uvicorn", "starlette", "httpx")

_PROBE = r"""
import importlib, json, os, sys
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
out = [rss()]
for group in json.loads(sys.argv[1]):
    for name in group:
        importlib.import_module(name)
    out.append(rss())
tops = sorted({m.split(".")[0] for m in sys.modules})
print(json.dumps({"rss": out, "modules": len(sys.modules), "tops": tops}))
"""


@dataclass(frozen=True)
class Imported:
    rss: list[int]  # bytes: the fresh interpreter, then after each group
    modules: int
    tops: list[str]  # top-level names in sys.modules


def import_rss(groups: list[list[str]], python: str = sys.executable) -> Imported:
    """RSS of a fresh interpreter, then after each group of imports (this tree's code, `python`'s libraries)."""
    done = subprocess.run([python, "-c", _PROBE, json.dumps(groups)], check=True, capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parent.parent)
    data = json.loads(done.stdout)
    return Imported([int(x) for x in data["rss"]], int(data["modules"]), list(data["tops"]))


def print_import_breakdown(python: str = sys.executable) -> None:
    run = import_rss([g for _, g in RUN_IMPORTS], python)
    rss = run.rss
    print(f"\nWhere an agent's memory goes ({python}, fresh; the imports of `run`, libraries first):")
    print(f"  {'interpreter':<100} {rss[0] / MIB:6.1f} MiB")
    for (label, _), before, after in zip(RUN_IMPORTS, rss, rss[1:], strict=False):
        print(f"  + {label:<98} {(after - before) / MIB:+6.1f} MiB")
    print(f"  {'= after the imports of run':<100} {rss[-1] / MIB:6.1f} MiB  ({run.modules} modules)")
    loaded = [t for t in run.tops if t in FORBIDDEN]
    print(f"  forbidden modules loaded: {', '.join(loaded) if loaded else 'none'}")


@dataclass
class Sample:
    at_s: float
    rss: int
    cpu_s: float
    seq: int


def redwarden(*args: str) -> str:
    return subprocess.run([*REDWARDEN, *args], check=True, capture_output=True, text=True).stdout


def report_seqs(controller_url: str, ca_cert: str, token: str) -> dict[str, int]:
    data = json.loads(redwarden("status", "--json", "--controller", controller_url, "--ca-cert", ca_cert,
                                "--token-file", token))
    return {n["name"]: int(n["report_seq"]) for c in data["clusters"] for n in c["nodes"]}


def sample(procs: dict[str, psutil.Process], seqs: dict[str, int], at_s: float) -> dict[str, Sample]:
    out = {}
    for name, proc in procs.items():
        cpu = proc.cpu_times()
        out[name] = Sample(at_s, proc.memory_info().rss, cpu.user + cpu.system, seqs.get(name, 0))
    return out


def measure(root: Path, minutes: float) -> None:
    st = json.loads(redwarden("sandbox", "status", "--dir", str(root), "--json"))
    url = st["controller_url"]

    def seqs_now() -> dict[str, int]:
        return report_seqs(url, st["controller_ca_cert"], str(root / "secrets" / "read.token"))

    procs = {d["name"]: psutil.Process(d["pids"]["agent"]) for d in st["droplets"] if d["pids"].get("agent")}
    print(f"agents: {', '.join(f'{n} pid {p.pid}' for n, p in procs.items())}; controller {url}")
    t0 = time.monotonic()
    marks = {"start": sample(procs, seqs_now(), 0.0)}
    peak = {n: s.rss for n, s in marks["start"].items()}
    loads = [os.getloadavg()[0]]
    targets = [("1 min", 60.0)] if minutes > 1 else []
    targets.append((f"{minutes:g} min", minutes * 60.0))
    for label, at_s in targets:
        while (left := t0 + at_s - time.monotonic()) > 0:
            time.sleep(min(SAMPLE_EVERY_S, left))
            for n, p in procs.items():
                peak[n] = max(peak[n], p.memory_info().rss)
            loads.append(os.getloadavg()[0])
        marks[label] = sample(procs, seqs_now(), time.monotonic() - t0)
    labels = list(marks)
    first, last = marks[labels[0]], marks[labels[-1]]
    head = "".join(f"{'RSS ' + lb:>14}" for lb in labels)
    print(f"\n{'agent':<10}{head}{'peak':>10}{'cycles':>9}{'CPU ms/cycle':>14}{'(after 1 min)':>15}")
    for n in procs:
        rss = "".join(f"{marks[lb][n].rss / MIB:>10.1f} MiB" for lb in labels)
        cycles = last[n].seq - first[n].seq
        per = 1000 * (last[n].cpu_s - first[n].cpu_s) / max(cycles, 1)
        after1 = ""
        if "1 min" in marks and len(labels) > 2:
            c2 = last[n].seq - marks["1 min"][n].seq
            after1 = f"{1000 * (last[n].cpu_s - marks['1 min'][n].cpu_s) / max(c2, 1):.2f}"
        print(f"{n:<10}{rss}{peak[n] / MIB:>6.1f} MiB{cycles:>9}{per:>14.2f}{after1:>15}")
    span = last[next(iter(procs))].at_s
    print(f"window {span:.0f} s at a 1 s report interval; load average (1 min) over it "
          f"{min(loads):.2f}..{max(loads):.2f} on {os.cpu_count()} CPUs")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="how long to watch the agents (default 10)")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--skip-imports", action="store_true", help="leave out the import breakdown")
    ap.add_argument("--imports-only", action="store_true", help="only the import breakdown (no sandbox)")
    # the development venv holds optional extras the libraries load when present (rich and pygments under
    # structlog, cryptography and opentelemetry under redis-py): the agent package's venv has none of them
    ap.add_argument("--python", default=sys.executable,
                    help="the interpreter for the import breakdown, e.g. /opt/redwarden/agent/bin/python")
    args = ap.parse_args()
    if args.imports_only:
        print_import_breakdown(args.python)
        return
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
        root = Path(tmp) / "sb"
        up = subprocess.run([*REDWARDEN, "sandbox", "up", "--dir", str(root), "--nodes", str(args.nodes),
                             "--report-interval-s", "1"], capture_output=True, text=True)
        try:
            if up.returncode != 0:
                sys.exit(f"sandbox up failed ({up.returncode}):\n{up.stderr[-2000:]}")
            measure(root, args.minutes)
        finally:
            subprocess.run([*REDWARDEN, "sandbox", "down", "--dir", str(root)], check=False, capture_output=True)
    if not args.skip_imports:
        print_import_breakdown(args.python)


if __name__ == "__main__":
    main()
