"""The controller's writable copy of each cluster's ACL users, and its record of a rotation in progress.

Layer: adapter (files). A cluster's `acl_users_file` is often a systemd credential (read-only to the service,
ProtectSystem=strict), so what `redwarden cluster secure --rotate` changes is kept in the controller's state
directory instead, next to its state file: `acl-users/<cluster>.json` (the users the controller now holds; read
in place of `acl_users_file` once it exists) and `acl-users/<cluster>.rotating.json` (the role being rotated,
the users before and after: written before anything changes in the cluster, removed when the run is done, so a
second run after a crash takes the same new secret and finishes the job). Both 0600 in a 0700 directory,
each written at once (a crash leaves the old file or the new one). No secret reaches an error message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from protocol.acl import ClusterUsers
from protocol.settings import store_private


@dataclass(frozen=True, slots=True)
class Rotation:
    """A rotation in progress: `role`'s secret goes from what `old` holds to what `new` holds."""

    role: str
    old: ClusterUsers
    new: ClusterUsers
    # app/discovery: the SHA-256 of new passwords an earlier first run added and a first run again replaced
    # (the operator never got them, or lost them): removed by the next `add_secret`, not left working
    superseded: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps({"role": self.role, "old": json.loads(self.old.to_json()),
                           "new": json.loads(self.new.to_json()), "superseded": list(self.superseded)})

    @staticmethod
    def from_json(text: str) -> Rotation:
        try:
            data = json.loads(text)
            return Rotation(str(data["role"]), ClusterUsers.from_json(json.dumps(data["old"])),
                            ClusterUsers.from_json(json.dumps(data["new"])),
                            tuple(str(h) for h in data.get("superseded", ())))
        except (ValueError, KeyError, TypeError):
            raise ValueError("the rotation record is unreadable") from None


class AclUsersStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def users_path(self, cluster: str) -> Path:
        return self.directory / f"{cluster}.json"

    def _rotation_path(self, cluster: str) -> Path:
        return self.directory / f"{cluster}.rotating.json"

    def _write(self, path: Path, text: str) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            store_private(path, text)
        except OSError as e:
            raise PermissionError(f"cannot write {path}: {e.strerror or type(e).__name__}") from None

    def users(self, cluster: str) -> ClusterUsers | None:
        """The users the controller holds since its last rotation (None: never rotated; `acl_users_file` holds them)."""
        try:
            text = self.users_path(cluster).read_text()
        except FileNotFoundError:
            return None
        try:
            return ClusterUsers.from_json(text)
        except ValueError as e:
            raise ValueError(f"{self.users_path(cluster)}: {e}") from None

    def store_users(self, cluster: str, users: ClusterUsers) -> None:
        self._write(self.users_path(cluster), users.to_json() + "\n")

    def rotation(self, cluster: str) -> Rotation | None:
        try:
            text = self._rotation_path(cluster).read_text()
        except FileNotFoundError:
            return None
        return Rotation.from_json(text)

    def store_rotation(self, cluster: str, rotation: Rotation) -> None:
        self._write(self._rotation_path(cluster), rotation.to_json() + "\n")

    def clear_rotation(self, cluster: str) -> None:
        self._rotation_path(cluster).unlink(missing_ok=True)
