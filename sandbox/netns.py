"""A sandbox in a network namespace of its own, where network faults are cut without touching the host.

Layer: sandbox. `redwarden sandbox up --netns` creates a namespace (`ip netns add rw-<hash of the dir>`),
brings its loopback up and starts the whole sandbox inside it (the command re-executes itself there with
`nsenter --net`: only the network namespace changes, every process shares the host's file systems);
`redwarden drill --sandbox DIR` enters it the same way, and `sandbox down` deletes it. The host's
interfaces, routes and firewall are never touched: every rule lives in the namespace's own nftables.

Processes are told apart by group id, not by address (every client on loopback sends from 127.0.0.1):
each droplet's processes run with `droplet_gid(id)` (its boot and everything it starts inherit it), the
controller with `CONTROLLER_GID`; the drill, its writer and the local DigitalOcean keep the caller's.
The namespace's output hook marks every new connection with the group of the process that opened it, so
a cut between two parties drops what one party's processes send to the other's addresses and what they
send on connections the other party opened (the replies of a replication stream, a Sentinel's hello
subscription). `cut_rules` is pure; `apply_cut` and `clear_cuts` run `nft` inside the namespace and
refuse to run anywhere else.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ENV = "REDWARDEN_SANDBOX_NETNS"  # set in every process the sandbox runs inside its namespace
STATE_FILE = "netns.json"
TABLE = "redwarden_sandbox"
GID_BASE = 4_000_000_000  # far above any real group; droplet ids of the local DigitalOcean start at 100000001
CONTROLLER_GID = GID_BASE
FIRST_DROPLET_ID = 100000001
MARKED_DROPLETS = 2000  # droplet ids marked in advance (a 50-fault campaign creates a few dozen)


class NetnsError(Exception):
    """The namespace cannot be made, entered or used; the message says what to do."""


@dataclass(frozen=True, slots=True)
class Party:
    """Processes (by group id) and the addresses they listen on."""

    name: str
    gids: tuple[int, ...]
    addresses: tuple[str, ...]


def droplet_gid(droplet_id: int) -> int:
    return GID_BASE + droplet_id


def name_for(root: Path) -> str:
    return "rw-" + hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:10]


def recorded(root: Path) -> str | None:
    """The namespace a sandbox runs in, or None (a sandbox on the host's loopback)."""
    try:
        data = json.loads((root / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name.startswith("rw-") else None


def _run(argv: Sequence[str], what: str, stdin: str | None = None) -> None:
    try:
        done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NetnsError(f"{what}: {e}") from None
    if done.returncode != 0:
        raise NetnsError(f"{what}: {(done.stderr or done.stdout).strip()[:300]}")


def _base_ruleset() -> str:
    marks = ", ".join(f"{droplet_gid(i)} : {droplet_gid(i)}"
                      for i in range(FIRST_DROPLET_ID, FIRST_DROPLET_ID + MARKED_DROPLETS))
    return (f"table inet {TABLE} {{\n"
            f"  map gid_mark {{ type gid : mark; elements = {{ {CONTROLLER_GID} : {CONTROLLER_GID}, {marks} }} }}\n"
            "  chain cuts { }\n"
            "  chain out {\n"
            "    type filter hook output priority 0; policy accept;\n"
            "    ct state new ct mark set meta skgid map @gid_mark\n"
            "    jump cuts\n"
            "  }\n"
            "}\n")


def preflight() -> None:
    """What --netns needs: root, `ip`, `nft` and `nsenter`."""
    if os.geteuid() != 0:
        raise NetnsError("--netns needs root (it creates a network namespace and nftables rules in it)")
    missing = [tool for tool in ("ip", "nft", "nsenter") if shutil.which(tool) is None]
    if missing:
        raise NetnsError(f"--netns needs {' and '.join(missing)} (apt-get install iproute2 nftables util-linux)")


def create(root: Path) -> str:
    """Make the sandbox's namespace (again, if a previous one was left), loopback up, connections marked."""
    preflight()
    name = name_for(root)
    if Path("/run/netns", name).exists():
        _run(["ip", "netns", "delete", name], f"removing the old namespace {name}")
    _run(["ip", "netns", "add", name], f"creating the network namespace {name}")
    try:
        _run(["ip", "-n", name, "link", "set", "lo", "up"], f"bringing up loopback in {name}")
        _run(["ip", "netns", "exec", name, "nft", "-f", "-"], f"installing nftables in {name}", _base_ruleset())
    except NetnsError:
        _run(["ip", "netns", "delete", name], f"removing the namespace {name}")
        raise
    (root / STATE_FILE).write_text(json.dumps({"name": name}) + "\n")
    return name


def delete(root: Path) -> None:
    name = recorded(root)
    if name is None:
        return
    if Path("/run/netns", name).exists():
        _run(["ip", "netns", "delete", name], f"deleting the network namespace {name}")
    with contextlib.suppress(OSError):
        (root / STATE_FILE).unlink()


def inside(name: str) -> bool:
    """Whether this process runs in the namespace `name`."""
    try:
        mine, theirs = os.stat("/proc/self/ns/net"), os.stat(f"/run/netns/{name}")
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)


def claims_dir(root: Path) -> Path:
    """Inside its namespace a sandbox's loopback addresses are its own: it claims them in its own dir."""
    return root.resolve() / "claims"


def enter(root: Path) -> None:
    """Re-execute this command inside the sandbox's namespace, if it has one and this is not it yet."""
    name = recorded(root)
    if name is None or inside(name):
        return
    if not Path("/run/netns", name).exists():
        raise NetnsError(f"the sandbox in {root} ran in the network namespace {name}, which is gone "
                         f"(`redwarden sandbox down --dir {root}`, then up again)")
    env = {**os.environ, ENV: name, "REDWARDEN_SANDBOX_CLAIMS": str(claims_dir(root))}
    sys.stdout.flush()
    sys.stderr.flush()
    # nsenter, not `ip netns exec`: that also gives the command a mount namespace of its own, so a process
    # the drill starts (an agent restarted after kill-agent) would not see the droplets' data dirs
    os.execvpe("nsenter", ["nsenter", f"--net=/run/netns/{name}", "--", *sys.orig_argv], env)


def in_sandbox_netns() -> bool:
    name = os.environ.get(ENV)
    return name is not None and inside(name)


def cut_rules(a: Party, b: Party) -> list[str]:
    """nftables rules that cut `a` off from `b` both ways: what one side's processes send to the other's
    addresses, and what they send on connections the other side's processes opened."""
    rules: list[str] = []
    for x, y in ((a, b), (b, a)):
        for gid in x.gids:
            rules += [f"meta skgid {gid} ip daddr {addr} drop" for addr in y.addresses]
            rules += [f"meta skgid {gid} ct mark {other} drop" for other in y.gids]
    return rules


def _require_inside() -> None:
    if not in_sandbox_netns():
        raise NetnsError("network faults run only inside a sandbox's own network namespace "
                         "(`redwarden sandbox up --netns`); this process is not in one")


def apply_cut(rules: Sequence[str]) -> None:
    """Add `rules` to the namespace's cuts (what is cut stays cut until `clear_cuts`)."""
    _require_inside()
    script = "".join(f"add rule inet {TABLE} cuts {rule}\n" for rule in rules)
    _run(["nft", "-f", "-"], "adding a network cut", script)
    # a cut takes effect on packets; conntrack entries of connections cut mid-stream stay, harmlessly


def clear_cuts() -> None:
    _require_inside()
    _run(["nft", "flush", "chain", "inet", TABLE, "cuts"], "removing the network cuts")
