"""`redwarden cluster secure CLUSTER --rotate ROLE`: the plan that gives one ACL user a new secret without a
restart and without a failover, and the rail that holds a run when the cluster's node set changes under it.

Layer: core (pure). The plan is data, as the migration's (`controller.core.secure`): phases in order, a step
per node (replicas before the master) or one for the controller, each idempotent and verified by the runner
(`controller.app.rotate`) before the next. The old and the new secret are both accepted from the first phase
until every consumer has moved (a crash anywhere before `remove_old` leaves a cluster where both work, and
a second run redoes every step harmlessly); only then is the old one removed, and the consumers made to
authenticate once more, now with nothing but the new one.

1. `add_secret`: the user accepts exactly {old, new} on each node's Redis (and Sentinel where the user is
   there) (`ACL SETUSER u resetpass #old #new`: one atomic command), persisted (CONFIG REWRITE, FLUSHCONFIG).
2. `controller_users`: the controller's own copy of the users holds the new secret (written atomically, in its
   state directory: `acl_users_file` is often a read-only systemd credential; the copy is read in its place
   from then on): its healing, its enrollments of new nodes and (for admin) this run itself use it.
3. The role's consumers, each moved and verified: `replication_secret` (masterauth on every node; a replica's
   link dropped once, up again as `replication`), `sentinel_secret` (sentinel-pass and auth-pass on each
   Sentinel; its links to peers and Redis dropped once, back as `sentinel`), `agent_users` (the node's agent
   gets its users, sealed, and reports again; for the other roles it only keeps the droplet's copy current).
4. `remove_old`: the user accepts only the new secret on each node (`resetpass #new`), the old is refused.
5. `verify`: each consumer authenticates again, with only the new secret there (a replica's link, a
   Sentinel's links, an agent's connection dropped once; back up).
6. `done`: the controller forgets the rotation (its record of the old and the new secret).

The application's roles (`app` on Redis, `discovery` on Sentinel) are held by people, not by the controller:
it keeps only their SHA-256, the console makes the new password and sends the hash. A first run adds it and
holds (exit 3: move the application servers to the new password printed once on the operator's terminal); a
second run with `finish` (after the operator moved them) removes the old one. The controller cannot see which
password a client used (Redis does not say), so only the operator can say the application has moved.
"""

from __future__ import annotations

from collections.abc import Iterable

from controller.core.secure import SecureNode, SecureStep

ROLES = ("admin", "replication", "sentinel", "monitor", "app", "discovery")
OPERATOR_ROLES = ("app", "discovery")  # their passwords are the application's: the controller keeps hashes
ON_REDIS = ("admin", "replication", "sentinel", "monitor", "app")
ON_SENTINEL = ("admin", "sentinel", "discovery")
CONTROLLER = "controller"  # the `node` of a step the controller does for itself

_TEXT = {
    "add_secret": "user {role} accepts the old and the new secret on {target} (persisted)",
    "controller_users": "the controller's own copy of the users holds the new {role} secret (its state directory, "
                        "acl-users/CLUSTER.json, written atomically; read in place of acl_users_file from now on)",
    "replication_secret": "masterauth is the new secret on {target} (+ CONFIG REWRITE), its link up again as "
                          "replication",
    "sentinel_secret": "sentinel-pass and auth-pass are the new secret on {target}'s Sentinel, its links back as "
                       "sentinel",
    "agent_users": "{target}'s agent gets its users (signed, sealed directive) and reports again",
    "hold_for_operator": "held: move the application to the new {role} password, then run again with --finish",
    "remove_old": "user {role} accepts only the new secret on {target} (the old one refused; persisted)",
    "verify": "{target}'s {role} consumers authenticate again, with only the new secret",
    "done": "the controller forgets the rotation of {role}",
}


def rotation_step(phase: str, role: str, node: SecureNode | None) -> SecureStep:
    if node is None:
        return SecureStep(phase, CONTROLLER, "", "", False)
    return SecureStep(phase, node.name, node.redis_address, node.sentinel_address, node.is_master)


def describe(step: SecureStep, role: str) -> str:
    return _TEXT[step.phase].format(role=role, target=step.node)


def _consumer_phase(role: str) -> str | None:
    return {"replication": "replication_secret", "sentinel": "sentinel_secret", "monitor": "agent_users"}.get(role)


def plan_rotate(role: str, nodes: tuple[SecureNode, ...], finish: bool = False) -> tuple[SecureStep, ...]:
    """The steps that rotate `role`'s secret over `nodes` (replicas first, the master last in each phase).
    For an operator's role (`app`, `discovery`) without `finish`: add the new and hold; with `finish`: the rest."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    ordered = sorted(nodes, key=lambda n: (n.is_master, n.name))

    def per_node(phase: str) -> list[SecureStep]:
        return [rotation_step(phase, role, n) for n in ordered]

    steps = per_node("add_secret")
    if role in OPERATOR_ROLES and not finish:
        return (*steps, rotation_step("hold_for_operator", role, None))
    steps.append(rotation_step("controller_users", role, None))
    consumer = _consumer_phase(role)
    if consumer is not None and consumer != "agent_users":
        steps += per_node(consumer)
    steps += per_node("agent_users")  # monitor's consumer; for the others the droplet's copy of its users
    steps += per_node("remove_old")
    if consumer is not None:
        steps += per_node("verify")
    steps.append(rotation_step("done", role, None))
    return tuple(steps)


def node_set_change(planned: Iterable[SecureNode], seen: Iterable[SecureNode]) -> str | None:
    """Why a run planned over `planned` must stop now that the controller sees `seen` (a sentence naming the
    nodes), or None. A node that joined (an enrollment, a replacement) has the users the controller handed it
    at enrollment, not what this run set; a node whose address changed is another machine; a node gone (stale)
    cannot take the next step. Each holds the run: it is started again once the node set is stable."""
    before = {n.name: n.redis_address for n in planned}
    now = {n.name: n.redis_address for n in seen}
    joined = sorted(set(now) - set(before))
    moved = sorted(name for name in set(now) & set(before) if now[name] != before[name])
    gone = sorted(set(before) - set(now))
    parts = []
    if joined:
        parts.append(f"{', '.join(joined)} joined")
    if moved:
        parts.append(f"{', '.join(moved)} changed address")
    if gone:
        parts.append(f"{', '.join(gone)} stopped reporting")
    if not parts:
        return None
    return (f"the cluster's nodes changed during the run ({'; '.join(parts)}): held; run it again once every node "
            "reports (the new plan covers them)")
