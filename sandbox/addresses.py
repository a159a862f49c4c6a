"""Claims loopback addresses (127.0.0.N, N >= 2) for a sandbox, so two sandboxes never collide.

A claim is a file `<claims_dir>/<address>` created with O_EXCL that names the sandbox dir owning it.
A claim whose sandbox is no longer up (dir removed, `sandbox.json` says down) is stale and reclaimed.
Any process of a sandbox (the CLI, the local DigitalOcean API booting a droplet) may claim more.
An address whose ports are already bound by anything else is skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterable
from pathlib import Path

DEFAULT_CLAIMS_DIR = Path(os.environ.get("REDWARDEN_SANDBOX_CLAIMS", "/tmp/redwarden-sandbox-claims"))


def port_free(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def _owner_up(owner: Path) -> bool:
    try:
        state = json.loads((owner / "sandbox.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(state.get("up"))


def claim_addresses(
    sandbox_dir: Path, count: int, ports: Iterable[int], claims_dir: Path = DEFAULT_CLAIMS_DIR
) -> list[str]:
    claims_dir.mkdir(parents=True, exist_ok=True)
    ports = tuple(ports)
    owner = str(sandbox_dir.resolve())
    got: list[str] = []
    for n in range(2, 255):
        if len(got) == count:
            break
        address = f"127.0.0.{n}"
        claim = claims_dir / address
        try:
            current = claim.read_text().strip()
        except OSError:
            current = None
        if current == owner or (current is not None and _owner_up(Path(current))):
            continue  # ours already (in use) or another live sandbox's
        if not all(port_free(address, p) for p in ports):
            continue
        if current is not None:
            with contextlib.suppress(OSError):
                claim.unlink()
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue  # another sandbox won the race for it
        with os.fdopen(fd, "w") as fh:
            fh.write(owner)
        got.append(address)
    if len(got) < count:
        release_addresses(sandbox_dir, got, claims_dir)
        raise RuntimeError(f"only {len(got)} free loopback addresses in 127.0.0.2-254, {count} needed")
    return got


def release_addresses(
    sandbox_dir: Path, addresses: Iterable[str] | None = None, claims_dir: Path = DEFAULT_CLAIMS_DIR
) -> None:
    """Give back `addresses`, or every address this sandbox holds when None."""
    owner = str(sandbox_dir.resolve())
    claims = [claims_dir / a for a in addresses] if addresses is not None else list(claims_dir.glob("127.*"))
    for claim in claims:
        with contextlib.suppress(OSError):
            if claim.read_text().strip() == owner:
                claim.unlink()
