"""How a console command reaches the controller: its URL, the operator's token, the CA of its certificate.

Layer: console. One set of options for every command, each with its environment variable:

    --controller URL     REDWARDEN_CONTROLLER_URL   (default http://127.0.0.1:8787, a controller on loopback)
    --token-file FILE    REDWARDEN_TOKEN            (the token itself; a read token for status and history,
                                                     an admin token for what changes things)
    --ca-cert FILE       REDWARDEN_CA_CERT          (the CA `redwarden controller init-tls` made)

`--admin-token-file` and `REDWARDEN_ADMIN_TOKEN`, the older names, still work.
"""

from __future__ import annotations

import argparse
import os

from protocol.settings import read_secret

DEFAULT_CONTROLLER_URL = "http://127.0.0.1:8787"


def add_connection_args(parser: argparse.ArgumentParser, default_url: str = DEFAULT_CONTROLLER_URL) -> None:
    parser.add_argument("--controller", help=f"controller URL (env REDWARDEN_CONTROLLER_URL; default {default_url})")
    parser.add_argument("--token-file", metavar="FILE", help="file with an operator token (env REDWARDEN_TOKEN)")
    parser.add_argument("--admin-token-file", metavar="FILE", help=argparse.SUPPRESS)  # the older name
    parser.add_argument("--ca-cert", metavar="FILE",
                        help="CA certificate of the controller's TLS (env REDWARDEN_CA_CERT)")


def controller_url(args: argparse.Namespace) -> str:
    url: str = getattr(args, "controller", None) or os.environ.get("REDWARDEN_CONTROLLER_URL") or \
        DEFAULT_CONTROLLER_URL
    return url.rstrip("/")


def operator_token(args: argparse.Namespace) -> str | None:
    for flag in ("token_file", "admin_token_file"):
        path = getattr(args, flag, None)
        if path:
            return (read_secret(path, f"--{flag.replace('_', '-')}") or "").strip() or None
    return os.environ.get("REDWARDEN_TOKEN") or os.environ.get("REDWARDEN_ADMIN_TOKEN") or None


def ca_cert(args: argparse.Namespace) -> str | None:
    return getattr(args, "ca_cert", None) or os.environ.get("REDWARDEN_CA_CERT") or None
