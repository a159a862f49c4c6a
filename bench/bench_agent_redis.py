"""Benchmark: what the agent's Redis client costs: import memory and the time of one collection.

Layer: bench. Two figures, printed, nothing asserted:
- RSS (psutil) of a fresh interpreter after `import agent.collect_redis` (the agent's Redis client and
  its parsers), beside a bare interpreter's, median of --imports runs;
- the time of one collect cycle, `collect_redis` + `collect_sentinel` (what `Agent.collect` asks of Redis
  and Sentinel every report), against a local password-protected redis-server and a redis-sentinel watching
  it (both started here on loopback ports, stopped at the end), over --cycles cycles on the same clients,
  as the agent keeps them; median, p90 and mean in ms, and the benchmark process's own CPU time a cycle.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.collect_redis import collect_redis, collect_sentinel, raw_client
from tests.helpers import free_port, kill_all, wait_until

MIB = 2**20
PASSWORD = "bench-redis-pw-1e9c"
MASTER_NAME = "mymaster"


def import_rss_mib(statement: str) -> float:
    code = f"{statement}\nimport psutil\nprint(psutil.Process().memory_info().rss)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    return int(out.stdout.strip().splitlines()[-1]) / MIB


def cycle_ms(cycles: int) -> tuple[list[float], float]:
    """Wall-clock ms of each cycle, and this process's CPU ms per cycle (the client's own cost, which other
    load on the machine inflates less than the wall clock)."""
    root = Path(tempfile.mkdtemp(prefix="bench-agent-redis-"))
    redis_port, sentinel_port = free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), "--dir", str(root), "--save", "",
             "--appendonly", "no", "--requirepass", PASSWORD], stdout=subprocess.DEVNULL))
        conf = root / "sentinel.conf"
        conf.write_text(f"bind 127.0.0.1\nport {sentinel_port}\ndir {root}\nrequirepass {PASSWORD}\n"
                        f"sentinel monitor {MASTER_NAME} 127.0.0.1 {redis_port} 1\n"
                        f"sentinel auth-pass {MASTER_NAME} {PASSWORD}\n")
        procs.append(subprocess.Popen([shutil.which("redis-sentinel") or "redis-sentinel", str(conf)],
                                      stdout=subprocess.DEVNULL))
        redis = raw_client("127.0.0.1", redis_port, PASSWORD, 2.0)
        anonymous = raw_client("127.0.0.1", redis_port, None, 2.0)
        sentinel = raw_client("127.0.0.1", sentinel_port, PASSWORD, 2.0)
        wait_until(lambda: collect_redis(redis).reachable and collect_sentinel(sentinel, [MASTER_NAME]).masters,
                   20, "redis-server and redis-sentinel to answer")
        times: list[float] = []
        cpu_started = time.process_time()
        for _ in range(cycles):
            started = time.perf_counter()
            r = collect_redis(redis, anonymous)
            s = collect_sentinel(sentinel, [MASTER_NAME])
            times.append((time.perf_counter() - started) * 1000.0)
            assert r.reachable and s.reachable, (r.error, s.error)
        cpu_ms = (time.process_time() - cpu_started) * 1000.0 / cycles
        redis.close()
        anonymous.close()
        sentinel.close()
        return times, cpu_ms
    finally:
        kill_all(procs)
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--imports", type=int, default=5)
    parser.add_argument("--cycles", type=int, default=500)
    args = parser.parse_args()
    bare = statistics.median(import_rss_mib("pass") for _ in range(args.imports))
    agent = statistics.median(import_rss_mib("import agent.collect_redis") for _ in range(args.imports))
    print(f"RSS: bare interpreter {bare:.1f} MiB; after `import agent.collect_redis` {agent:.1f} MiB "
          f"(+{agent - bare:.1f} MiB)")
    wall, cpu_ms = cycle_ms(args.cycles)
    times = sorted(wall)
    p90 = times[int(len(times) * 0.9)]
    print(f"one collect cycle (collect_redis + collect_sentinel), {len(times)} cycles: median "
          f"{statistics.median(times):.3f} ms, p90 {p90:.3f} ms, mean {statistics.fmean(times):.3f} ms; "
          f"client CPU {cpu_ms:.3f} ms a cycle (load average {psutil.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
