"""Each node's credential and the droplet it is bound to, as the controller's own records say.

Layer: adapters (storage). A node's key is 32 random bytes, issued when its droplet enrolls (or when an
operator asks for one, to rotate it); only the controller and that node hold it. The binding of node to
droplet id is written when the controller creates the droplet. Keys are held in memory too (the ingest path
asks for one per report) and written through. A forgotten node's key is revoked: its agent can no longer
report, so a dead node that comes back cannot rejoin the fleet view unseen.

The keys sit in the state file in the clear, as the cluster secrets sat in files before: the state file is
the controller's alone (0600 under its StateDirectory).
"""

from __future__ import annotations

import secrets
import threading

from controller.adapters.storage.db import Database

KEY_BYTES = 32


class NodeCredentials:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._keys: dict[tuple[str, str], bytes] = {}
        self._droplets: dict[tuple[str, str], int] = {}
        for cluster, node, key_hex, droplet_id, revoked_at in db.read(
            "SELECT cluster, node, key_hex, droplet_id, revoked_at FROM node_credentials"
        ):
            if key_hex and revoked_at is None:
                self._keys[(cluster, node)] = bytes.fromhex(key_hex)
            if droplet_id is not None and revoked_at is None:
                self._droplets[(cluster, node)] = int(droplet_id)

    def issue(self, cluster: str, node: str, now: float) -> bytes:
        """A new key for the node (any earlier one stops working at once)."""
        key = secrets.token_bytes(KEY_BYTES)
        with self._db.transaction() as tx:
            tx.execute(
                "INSERT INTO node_credentials (cluster, node, key_hex, issued_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (cluster, node) DO UPDATE SET key_hex = excluded.key_hex, "
                "issued_at = excluded.issued_at, revoked_at = NULL",
                (cluster, node, key.hex(), now),
            )
        with self._lock:
            self._keys[(cluster, node)] = key
        return key

    def key(self, cluster: str, node: str) -> bytes | None:
        return self._keys.get((cluster, node))

    def bind(self, cluster: str, node: str, droplet_id: int) -> None:
        """The controller created `droplet_id` for `node`."""
        with self._db.transaction() as tx:
            tx.execute(
                "INSERT INTO node_credentials (cluster, node, droplet_id) VALUES (?, ?, ?) "
                "ON CONFLICT (cluster, node) DO UPDATE SET droplet_id = excluded.droplet_id, revoked_at = NULL",
                (cluster, node, droplet_id),
            )
        with self._lock:
            self._droplets[(cluster, node)] = droplet_id

    def bindings(self, cluster: str) -> tuple[tuple[str, int], ...]:
        with self._lock:
            return tuple(sorted((n, d) for (c, n), d in self._droplets.items() if c == cluster))

    def revoke(self, cluster: str, node: str, now: float) -> None:
        """The node is forgotten: its key stops working and its binding is dropped."""
        with self._db.transaction() as tx:
            tx.execute("UPDATE node_credentials SET revoked_at = ? WHERE cluster = ? AND node = ?",
                       (now, cluster, node))
        with self._lock:
            self._keys.pop((cluster, node), None)
            self._droplets.pop((cluster, node), None)
