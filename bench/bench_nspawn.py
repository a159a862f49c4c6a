"""Benchmark: systemd-nspawn droplets (issue 14): the cached Debian 12 root and N containers booted from it.

Prints the root's debootstrap time (only when this run made it; `--fresh` makes a new one in a temporary
cache) and size, then for each of N containers the time from `power_on` to `systemctl is-system-running`
saying running (systemd as PID 1, cloud-init's NoCloud datasource fed over the hub's bridge, Debian's
redis-server unit started by the user_data), and the memory (PSS) of each container once all N run, and
the time to power one off. Needs root and debootstrap: skips otherwise. Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox import nspawn

REPO = Path(__file__).resolve().parents[1]
GATEWAY = "10.213.0.1"
PORT = 8099
USER_DATA = "#cloud-config\nruncmd:\n  - systemctl start redis-server.service\n"


def _du_mb(path: Path) -> float:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0]) / 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--containers", type=int, default=3)
    ap.add_argument("--fresh", action="store_true", help="debootstrap a new root into a temporary cache")
    args = ap.parse_args()
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        print("skipped: needs root and debootstrap")
        return 0
    with tempfile.TemporaryDirectory(prefix="rw-bench-nspawn-") as tmp:
        work = Path(tmp)
        cache = work / "cache" if args.fresh else REPO / "build" / "nspawn-cache"
        made = not (cache / f"root-{nspawn.root_key()}").exists()
        t0 = time.monotonic()
        root = nspawn.ensure_root(cache, progress=lambda m: print(m, file=sys.stderr))
        if made:
            print(f"debootstrap (minbase + {len(nspawn.PACKAGES)} packages): {time.monotonic() - t0:.1f} s")
        print(f"root: {_du_mb(root):.0f} MB ({root})")
        binary = nspawn.nspawn_binary(cache)
        hub = nspawn.Hub(netns=f"rwb-{os.getpid():x}", bridge="rwbbr0", gateway=GATEWAY)
        nspawn.create_hub(hub)
        base = work / "containers"
        seed = work / "seed"
        server = None
        names = [f"b{i}" for i in range(1, args.containers + 1)]
        try:
            for name in names:
                (seed / name).mkdir(parents=True)
                (seed / name / "meta-data").write_text(f"instance-id: {name}\nlocal-hostname: {name}\n")
                (seed / name / "user-data").write_text(USER_DATA)
                (seed / name / "vendor-data").write_text("")
            server = subprocess.Popen(["nsenter", f"--net=/run/netns/{hub.netns}", sys.executable, "-m",
                                       "http.server", "--bind", GATEWAY, str(PORT), "--directory", str(seed)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for i, name in enumerate(names):
                spec = nspawn.ContainerSpec(name=name, address=f"10.213.0.{11 + i}", hub=hub,
                                            seed_url=f"http://{GATEWAY}:{PORT}/{name}/")
                nspawn.create(base, root, spec)
                t0 = time.monotonic()
                nspawn.power_on(base, name, binary)
                state = "offline"
                while time.monotonic() - t0 < 300:
                    state = nspawn.system_state(base, name)
                    if state in ("running", "degraded"):
                        break
                    time.sleep(0.2)
                print(f"{name}: power_on -> {state} in {time.monotonic() - t0:.1f} s")
            for name in names:
                print(f"{name}: memory (PSS) {(nspawn.memory_kib(base, name) or 0) / 1024:.1f} MiB, "
                      f"own disk {_du_mb(base / name / 'upper'):.1f} MB")
            t0 = time.monotonic()
            nspawn.power_off(base, names[0])
            print(f"{names[0]}: power_off in {time.monotonic() - t0:.1f} s")
        finally:
            for name in nspawn.names(base):
                nspawn.destroy(base, name)
            if server is not None:
                server.terminate()
                server.wait(timeout=10)
            nspawn.delete_hub(hub)
    return 0


if __name__ == "__main__":
    sys.exit(main())
