"""The local DigitalOcean API's TLS: a CA made once per sandbox, and a server certificate signed by it.

Layer: sandbox. Clients trust `<sandbox>/doapi/tls/ca.pem` (pydo: `connection_verify=`, requests: `verify=`);
the keys are written mode 0600. Made by the controller's own `ensure_tls`, the one CA maker of the project.
"""

from __future__ import annotations

from pathlib import Path

from controller.adapters.tls import TlsFiles
from controller.adapters.tls import ensure_tls as _ensure_tls

__all__ = ["TlsFiles", "ensure_tls"]


def ensure_tls(tls_dir: Path, host: str) -> TlsFiles:
    """A CA for this sandbox (made once, kept) and a server certificate for `host` signed by it (made anew)."""
    return _ensure_tls(tls_dir, [host], ca_label="redwarden sandbox DigitalOcean CA", server_days=365)
