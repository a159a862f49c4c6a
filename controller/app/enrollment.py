"""Enrollment: a new droplet trades its one-time token for its own key and the Redis password.

Layer: app. The token was put in the droplet's user_data by the provisioner; it is spent here, once, and
the node's key is issued (a new one on every enrollment: re-enrolling rotates it). The answer travels over
the controller's TLS.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from controller.adapters.storage.credentials import NodeCredentials
from controller.adapters.storage.enrollments import Enrollments
from controller.adapters.storage.heal_log import HealStore
from controller.config import ClusterConfig, cluster_redis_password, cluster_users
from protocol.acl import ClusterUsers


class Enroller:
    def __init__(self, clusters: Mapping[str, ClusterConfig], tokens: Enrollments, credentials: NodeCredentials,
                 redis_password: Callable[[str, ClusterConfig], str | None] = cluster_redis_password,
                 audit: HealStore | None = None,
                 users: Callable[[str, ClusterConfig], ClusterUsers | None] = cluster_users) -> None:
        self.clusters = clusters
        self.tokens = tokens
        self.credentials = credentials
        self.redis_password = redis_password
        self.audit = audit
        self.users = users

    def enroll(self, cluster: str, node: str, token: str, now: float) -> dict[str, Any] | str:
        """A cluster in ACL mode hands over the node's users (`redis_users`: the passwords of the roles that
        run on a droplet, the hashes of the others), never the admin password; else the one password."""
        users = self.users(cluster, self.clusters[cluster])
        password = None if users else self.redis_password(cluster, self.clusters[cluster])
        if not users and not password:
            return f"clusters.{cluster}.redis_password_file (or acl_users_file) is not set on the controller"
        refused = self.tokens.redeem(cluster, node, token, now)
        if refused is not None:
            return refused
        key = self.credentials.issue(cluster, node, now)
        if users is not None:
            return {"redis_users": json.loads(users.node_users().to_json()), "node_key": key.hex()}
        return {"redis_password": password, "node_key": key.hex()}

    def issue_key(self, cluster: str, node: str, now: float) -> str:
        """A new key for an existing node, asked by an admin (rotation, or a node from before keys): the old
        one stops working at once. Written to the audit log; the key itself is not."""
        action_id = self.audit.started(cluster, node, "IssueNodeKey", f"issue a new key for {node}",
                                       "asked by an operator", now) if self.audit else None
        key = self.credentials.issue(cluster, node, now)
        if self.audit is not None and action_id is not None:
            self.audit.finished(action_id, True, "issued; the previous key no longer works", now)
        return key.hex()
