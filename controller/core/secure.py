"""`redwarden cluster secure`: the plan that moves a cluster from one `requirepass` to ACL users per role
(`protocol.acl`), one node at a time, without a restart and without a failover.

Layer: core (pure). The plan is data: phases in order, each a step per node (or per Sentinel), each step
idempotent (it sets the end state, whatever was there) and verified by the runner (`controller.app.secure`)
before the next one starts. Replicas go before the master within a phase. The phases:

1. `redis_users`: every role's user on the node's Redis (`ACL SETUSER`, then `CONFIG REWRITE`: Redis writes
   them into redis.conf as bootstrap does for a new cluster); `default` keeps working.
2. `replication_auth`: `masteruser replication` + `masterauth` (on the master too, for after a failover); a
   replica's link is dropped once so it reconnects, and is verified, as `replication`.
3. `sentinel_users`: `sentinel`, `admin` (and `discovery`) users on each Sentinel, written to sentinel.conf.
4. `sentinel_peer_auth`: `sentinel-user`/`sentinel-pass` on each Sentinel; its links to the peers are verified
   to authenticate as `sentinel`.
5. `sentinel_auth`: `SENTINEL SET <master> auth-user sentinel auth-pass ...` on each Sentinel; its links to
   every Redis verified as `sentinel`.
6. `agent_user`: the node's agent gets its users (a sealed, signed directive) and reports as `monitor`.
7. `controller_admin`: the controller's own healing connection authenticates as `admin` everywhere.
8. `default_off`: held while any client still authenticates as `default` (the application must move to the
   `app` user first); then Redis's `default` off (and `requirepass` emptied), and each Sentinel's `default`
   limited to discovery.
"""

from __future__ import annotations

from dataclasses import dataclass

PHASES = ("redis_users", "replication_auth", "sentinel_users", "sentinel_peer_auth", "sentinel_auth", "agent_user",
          "controller_admin", "default_off")

_TEXT = {
    "redis_users": "ACL users app, replication, sentinel, monitor, admin on {target}'s Redis (+ CONFIG REWRITE)",
    "replication_auth": "masteruser replication + masterauth on {target} (+ CONFIG REWRITE), link verified",
    "sentinel_users": "users sentinel, admin (and discovery) on {target}'s Sentinel (+ FLUSHCONFIG)",
    "sentinel_peer_auth": "sentinel-user/sentinel-pass on {target}'s Sentinel, its peer links verified",
    "sentinel_auth": "auth-user sentinel + auth-pass for the master on {target}'s Sentinel, its Redis links verified",
    "agent_user": "{target}'s agent gets its users (signed, sealed directive) and reports as monitor",
    "controller_admin": "the controller's healing connection authenticates as admin on {target}",
    "default_off": "default off on {target}'s Redis (requirepass emptied), its Sentinel's default limited to "
                   "discovery; held while a client still logs in as default",
}


@dataclass(frozen=True, slots=True)
class SecureNode:
    name: str
    redis_address: str
    sentinel_address: str
    is_master: bool


@dataclass(frozen=True, slots=True)
class SecureStep:
    phase: str  # one of PHASES
    node: str
    redis_address: str
    sentinel_address: str
    is_master: bool

    @property
    def description(self) -> str:
        return _TEXT[self.phase].format(target=self.node)


def plan_secure(nodes: tuple[SecureNode, ...]) -> tuple[SecureStep, ...]:
    """Every phase over every node, replicas first (the master last in each phase), by name within that."""
    ordered = sorted(nodes, key=lambda n: (n.is_master, n.name))
    return tuple(SecureStep(phase, n.name, n.redis_address, n.sentinel_address, n.is_master)
                 for phase in PHASES for n in ordered)


def plan_problem(nodes: tuple[SecureNode, ...], expected_nodes: int) -> str | None:
    """Why no plan can be made from what the controller sees (a sentence), or None."""
    if len(nodes) < expected_nodes:
        return f"{len(nodes)} of {expected_nodes} nodes report: every node must be up to be migrated"
    masters = [n.name for n in nodes if n.is_master]
    if len(masters) != 1:
        return f"{len(masters)} nodes are master ({', '.join(masters) or 'none'}): the cluster must have exactly one"
    return None
