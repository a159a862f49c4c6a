"""One-time enrollment tokens: how a new droplet gets its secrets without them being in its user_data.

Layer: adapter (the `enrollments` table of the shared `Database`, defined in
`controller.adapters.storage.migrations`). The controller puts a fresh random token in the droplet's
user_data; the bootstrap trades it once, within `ttl_s`, for the Redis password and the cluster secret
(`POST /v1/enroll`). Only a SHA-256 of the token is stored. Trade-off: user_data stays readable from
the droplet's metadata service for its whole life, so anything in it is as good as public to a process
on that droplet; a spent, expiring token is worthless there, while a password would not be. The cost is
that the controller must be reachable when the droplet boots (it is the one creating it anyway).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from controller.adapters.storage.db import Database


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Enrollments:
    def __init__(self, db: Database) -> None:
        self._db = db

    def issue(self, cluster: str, node: str, now: float, ttl_s: float = 3600.0) -> str:
        token = secrets.token_urlsafe(32)
        with self._db.transaction() as tx:
            tx.execute(
                "INSERT INTO enrollments (token_sha256, cluster, node, expires_at) VALUES (?, ?, ?, ?)",
                (_digest(token), cluster, node, now + ttl_s),
            )
        return token

    def redeem(self, cluster: str, node: str, token: str, now: float) -> str | None:
        """None when the token is good (it is spent now), else why not (safe to show)."""
        with self._db.transaction() as tx:  # read and spend in one transaction: a token is good once
            row = tx.execute(
                "SELECT cluster, node, expires_at, used_at FROM enrollments WHERE token_sha256 = ?",
                (_digest(token),),
            ).fetchone()
            if row is None:
                return "unknown token"
            if not (hmac.compare_digest(row[0], cluster) and hmac.compare_digest(row[1], node)):
                return "token issued for another node"
            if row[3] is not None:
                return "token already used"
            if now > row[2]:
                return "token expired"
            tx.execute("UPDATE enrollments SET used_at = ? WHERE token_sha256 = ?", (now, _digest(token)))
        return None
