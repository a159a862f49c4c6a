"""Benchmark: controller ingest of signed reports over real HTTPS on loopback, each node with its own key.

Starts a real controller process (uvicorn, TLS with a CA made for the run), with a credential issued for
every simulated node, then drives it from this process with asyncio: many simulated agents, each on its own
keep-alive TLS connection, pushing the recorded report of a real node (~4 KiB) signed with its node's key
and a fresh timestamp (the controller refuses a timestamp not newer than the node's last). The agents form
clusters of three, as Sentinel deployments do (one cluster of 1,000 nodes would measure the health checks'
cost on a shape nobody runs, not ingest). Two phases:
  * open loop: every agent pushes every `interval` so that the offered load is --rate reports/s;
  * closed loop: --concurrency connections push back to back (the ceiling).
Prints sustained reports/s and p50/p99 latency. Asserts nothing: targets live in the README.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from controller.adapters.storage.credentials import NodeCredentials
from controller.adapters.storage.db import Database
from controller.adapters.tls import ensure_tls
from protocol.signing import HEADER_CLUSTER, HEADER_NODE, HEADER_SIGNATURE, HEADER_TIMESTAMP, sign_report
from sandbox.addresses import port_free

KEYS: dict[str, bytes] = {}
CA: list[ssl.SSLContext] = []
FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "reports" / "healthy-redis-2.json"


def cluster_of(i: int) -> str:
    return f"bench-{i // 3:04d}"


def start_controller(tmp: Path, port: int, expected: int, nodes: int) -> subprocess.Popen[bytes]:
    tls = ensure_tls(tmp / "tls", ["127.0.0.1"])
    CA.append(ssl.create_default_context(cafile=str(tls.ca_path)))
    db = Database(tmp / "state.db")  # every simulated node enrolled: its key in the controller's records
    credentials = NodeCredentials(db)
    for i in range(nodes):
        KEYS[f"node-{i:05d}"] = credentials.issue(cluster_of(i), f"node-{i:05d}", time.time())
    db.close()
    clusters = "".join(f"[clusters.{cluster_of(i)}]\nexpected_nodes = 3\n" for i in range(0, nodes, 3))
    conf = tmp / "controller.toml"
    conf.write_text(
        f'listen_host = "127.0.0.1"\nlisten_port = {port}\nstate_path = "{tmp / "state.db"}"\n'
        f'log_format = "json"\nlog_level = "warning"\n'
        f'tls_cert_file = "{tls.cert_path}"\ntls_key_file = "{tls.key_path}"\ntls_ca_file = "{tls.ca_path}"\n'
        + clusters
    )
    proc = subprocess.Popen([sys.executable, "-m", "console.cli", "controller", "run", "--config", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=(tmp / "controller.log").open("wb"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if requests.get(f"https://127.0.0.1:{port}/healthz", timeout=1, verify=str(tls.ca_path)).ok:
                return proc
        except requests.RequestException:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("controller did not start: " + (tmp / "controller.log").read_text()[-2000:])


def bodies(n: int) -> list[bytes]:
    base = json.loads(FIXTURE.read_text())
    out = []
    for i in range(n):
        base["identity"]["node"] = f"node-{i:05d}"
        base["identity"]["cluster"] = cluster_of(i)
        out.append(json.dumps(base, separators=(",", ":")).encode())
    return out


class Conn:
    def __init__(self, port: int, body: bytes) -> None:
        self.port, self.body = port, body
        identity = json.loads(body)["identity"]
        self.node, self.cluster = identity["node"], identity["cluster"]
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last_ts = 0.0

    async def push(self) -> float:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, ssl=CA[0])
        assert self.reader is not None
        self.last_ts = max(time.time(), self.last_ts + 1e-6)
        ts = f"{self.last_ts:.6f}"
        sig = sign_report(KEYS[self.node], ts, self.cluster, self.node, self.body)
        head = (
            f"POST /v1/reports HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(self.body)}\r\n{HEADER_CLUSTER}: {self.cluster}\r\n{HEADER_NODE}: {self.node}\r\n"
            f"{HEADER_TIMESTAMP}: {ts}\r\n{HEADER_SIGNATURE}: {sig}\r\n\r\n"
        ).encode()
        t0 = time.perf_counter()
        self.writer.write(head + self.body)
        status = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await self.reader.readexactly(length)
        elapsed = time.perf_counter() - t0
        if b" 200 " not in status:
            raise RuntimeError(f"controller answered {status!r}")
        return elapsed


async def open_loop(port: int, agents: int, rate: float, seconds: float) -> tuple[int, list[float], float]:
    interval = agents / rate
    conns = [Conn(port, b) for b in bodies(agents)]
    latencies: list[float] = []
    start = time.perf_counter()

    async def agent(i: int, c: Conn) -> None:
        await asyncio.sleep(interval * i / agents)  # spread the fleet evenly over one interval
        n = 0
        while True:
            due = start + interval * i / agents + n * interval
            if due - start >= seconds:
                return
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            latencies.append(await c.push())
            n += 1

    await asyncio.gather(*(agent(i, c) for i, c in enumerate(conns)))
    return len(latencies), latencies, time.perf_counter() - start


async def closed_loop(port: int, concurrency: int, seconds: float) -> tuple[int, list[float], float]:
    conns = [Conn(port, b) for b in bodies(concurrency)]
    latencies: list[float] = []
    start = time.perf_counter()

    async def worker(c: Conn) -> None:
        while time.perf_counter() - start < seconds:
            latencies.append(await c.push())

    await asyncio.gather(*(worker(c) for c in conns))
    return len(latencies), latencies, time.perf_counter() - start


def summary(name: str, count: int, lat: list[float], elapsed: float) -> str:
    lat_ms = sorted(x * 1000 for x in lat)
    p50 = statistics.median(lat_ms)
    p99 = lat_ms[min(len(lat_ms) - 1, int(len(lat_ms) * 0.99))]
    return f"{name}: {count / elapsed:,.0f} reports/s over {elapsed:.1f} s; latency p50 {p50:.2f} ms, p99 {p99:.2f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=1000, help="simulated agents in the open-loop phase")
    ap.add_argument("--rate", type=float, default=2000, help="offered reports/s in the open-loop phase")
    ap.add_argument("--concurrency", type=int, default=32, help="connections in the closed-loop phase")
    ap.add_argument("--seconds", type=float, default=10)
    args = ap.parse_args()
    port = next(p for p in range(18787, 18900) if port_free("127.0.0.1", p))
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_controller(Path(tmp), port, args.agents, max(args.agents, args.concurrency, 50))
        try:
            asyncio.run(open_loop(port, 50, 500, 2))  # warm up
            count, lat, elapsed = asyncio.run(open_loop(port, args.agents, args.rate, args.seconds))
            print(summary(f"open loop, {args.agents} agents offering {args.rate:.0f}/s", count, lat, elapsed))
            count, lat, elapsed = asyncio.run(closed_loop(port, args.concurrency, args.seconds))
            print(summary(f"closed loop, {args.concurrency} connections back to back", count, lat, elapsed))
        finally:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
