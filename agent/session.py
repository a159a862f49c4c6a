"""The agent's HTTP sessions (requests): to the controller (pushes, enrollment), verified against its CA and
nothing else, and to DigitalOcean's metadata service.

Layer: adapter (I/O). What the sessions do differently from requests' defaults, and why:
- HTTPS is verified against the one `ssl.SSLContext` given (agent/config.py `ssl_context`: the controller's
  CA, or the system's CAs when none is configured). requests would load its certifi bundle into that
  context on every new connection, trusting any public CA for the controller's name: `_VerifiedBy` stops it.
- No retries (`max_retries=0`, said aloud): a failed push is a result the pusher backs off from, and a
  retry hidden in the transport would double the wait of a cycle.
- Nothing from the environment (`trust_env = False`): no proxy, .netrc or REQUESTS_CA_BUNDLE, as with the
  standard library client before; an agent talks to its controller and its droplet's metadata directly.
- One pooled connection per origin: one caller at a time (the report cycle's lock), kept alive.
Callers pass explicit (connect, read) timeouts and `allow_redirects=False` on each request.
"""

from __future__ import annotations

import ssl
from typing import Any

import requests
from requests.adapters import HTTPAdapter

__all__ = ["agent_session"]


class _VerifiedBy(HTTPAdapter):
    """An adapter whose HTTPS connections verify the server with `context` alone (certificate and name)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context  # before super().__init__, which makes the pool manager
        super().__init__(pool_connections=1, pool_maxsize=1, max_retries=0)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, ssl_context=self._context, **pool_kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        # requests' own would set ca_certs to certifi's bundle, which urllib3 then adds to our context
        conn.cert_reqs = "CERT_REQUIRED"
        conn.ca_certs = None
        conn.ca_cert_dir = None


def agent_session(context: ssl.SSLContext | None = None) -> requests.Session:
    """A session for plain HTTP (loopback or the metadata service) and, with `context`, HTTPS verified by it."""
    session = requests.Session()
    session.trust_env = False
    session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=0))
    if context is not None:
        session.mount("https://", _VerifiedBy(context))
    return session
