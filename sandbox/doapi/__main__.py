"""`python -m sandbox.doapi --dir SANDBOX --host 127.0.0.N --port P --token-file F`: the API as a process.

Layer: sandbox. Prints its URL once listening and writes `<sandbox>/doapi/endpoint.json` (`url`, `ca_path`,
`pid`); SIGTERM or SIGINT stops the API, not the droplets (their in-progress actions resume at the next start).
This is how `sandbox.cluster` runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import structlog

import sandbox.doapi
from sandbox.doapi.api import DoApi
from sandbox.doapi.metadata import MetadataServer
from sandbox.doapi.ratelimit import RATELIMIT_LIMIT
from sandbox.doapi.server import listen, make_server
from sandbox.doapi.state import BOOT_TIMEOUT_S, SHUTDOWN_TIMEOUT_S, ContainerSettings, DoApiOptions
from sandbox.doapi.tls import ensure_tls

log = structlog.get_logger("redwarden.doapi")


def main(argv: Sequence[str] | None = None) -> int:
    from protocol.logs import configure_logging

    description = (sandbox.doapi.__doc__ or "").splitlines()[0]  # the package's first line, as before the split
    parser = argparse.ArgumentParser(prog="python -m sandbox.doapi", description=description)
    parser.add_argument("--dir", required=True, type=Path, help="the sandbox dir (state under DIR/doapi/)")
    parser.add_argument("--host", default="127.0.0.1", help="a loopback address to listen on (systemd: or the gateway)")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--token-file", required=True, type=Path, help="file holding the bearer token")
    parser.add_argument("--boot-timeout-s", type=float, default=BOOT_TIMEOUT_S)
    parser.add_argument("--shutdown-timeout-s", type=float, default=SHUTDOWN_TIMEOUT_S)
    parser.add_argument("--ratelimit-limit", type=int, default=RATELIMIT_LIMIT)
    parser.add_argument("--ratelimit-refill-per-s", type=float, default=RATELIMIT_LIMIT / 3600)
    parser.add_argument("--log-format", choices=("json", "console"), default="console")
    parser.add_argument("--droplets", choices=("process", "systemd"), default="process",
                        help="systemd: droplets are systemd-nspawn containers on a bridge (root; the options below)")
    parser.add_argument("--hub-netns", help="systemd: the network namespace of the bridge (this process runs in it)")
    parser.add_argument("--bridge", default="rwbr0", help="systemd: the bridge's name")
    parser.add_argument("--gateway", help="systemd: the bridge's address (metadata, seed and files listen there)")
    parser.add_argument("--prefix", type=int, default=24)
    parser.add_argument("--meta-port", type=int, default=80)
    parser.add_argument("--nspawn-cache", type=Path, help="systemd: the cache of the Debian root and nspawn")
    parser.add_argument("--files-dir", type=Path, help="systemd: the files served under /files/ (the agent .deb)")
    args = parser.parse_args(argv)
    configure_logging(args.log_format)
    on_gateway = args.droplets == "systemd" and args.host == args.gateway
    if not ipaddress.ip_address(args.host).is_loopback and not on_gateway:
        parser.error("--host must be a loopback address (127.0.0.0/8), or with --droplets systemd the --gateway "
                     "(inside the sandbox's own network namespace): the sandbox never listens elsewhere")
    try:
        token = args.token_file.read_text().strip()
    except OSError as e:
        parser.error(f"cannot read --token-file: {e.strerror}")
    if not token:
        parser.error("--token-file is empty")
    containers = None
    if args.droplets == "systemd":
        if not (args.hub_netns and args.gateway and args.nspawn_cache and args.files_dir):
            parser.error("--droplets systemd needs --hub-netns, --gateway, --nspawn-cache and --files-dir")
        containers = ContainerSettings(netns=args.hub_netns, bridge=args.bridge, gateway=args.gateway,
                                       prefix=args.prefix, meta_port=args.meta_port, cache=args.nspawn_cache,
                                       files_dir=args.files_dir)
    options = DoApiOptions(boot_timeout_s=args.boot_timeout_s, shutdown_timeout_s=args.shutdown_timeout_s,
                           ratelimit_limit=args.ratelimit_limit, ratelimit_refill_per_s=args.ratelimit_refill_per_s,
                           containers=containers)
    sock = listen(args.host, args.port)
    url = f"https://{args.host}:{sock.getsockname()[1]}"
    api = DoApi(args.dir, token, url, options)
    tls = ensure_tls(api.state_dir / "tls", args.host)
    server = make_server(api, tls)
    metadata = MetadataServer(api.cloud, containers) if containers is not None else None

    def announce() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.02)
        if server.started:
            (api.state_dir / "endpoint.json").write_text(json.dumps(
                {"url": url, "ca_path": str(tls.ca_path), "pid": os.getpid()}, indent=2))
            api.resume()
            log.info("doapi.started", url=url, ca_path=str(tls.ca_path), sandbox_dir=str(api.sandbox_dir))
            print(url, flush=True)

    threading.Thread(target=announce, daemon=True, name="doapi-announce").start()
    # uvicorn re-raises the signal that stopped it once it is done; with these handlers that is a no-op, so
    # the state is closed properly below.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _sig, _frame: None)
    server.run(sockets=[sock])  # SIGTERM/SIGINT: stop serving; the droplets' processes run on
    api.close()
    if metadata is not None:
        metadata.close()
    with contextlib.suppress(OSError):
        (api.state_dir / "endpoint.json").unlink()
    log.info("doapi.stopped", url=url)
    return 0


if __name__ == "__main__":
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
