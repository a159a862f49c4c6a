"""Redis and Sentinel ACL users per role: who may send which command, and which secret lives where.

Layer: data (pure; shared by agent and controller). A cluster in ACL mode has five Redis users and the
`default` user off:

- `app`: the application (Magento): data commands, scripting (Cm_Cache_Backend_Redis cleans tags with Lua
  EVAL/EVALSHA), FLUSHDB (cache clears), INFO; nothing of @admin or @dangerous beyond that (no CONFIG,
  REPLICAOF, SHUTDOWN, DEBUG, MODULE, FLUSHALL, ACL, CLIENT KILL, MONITOR, SAVE, MIGRATE, RESTORE ...).
- `replication`: a replica's `masteruser` (PSYNC, REPLCONF, PING: Redis's documented set).
- `sentinel`: what Sentinel sends to Redis (Redis's documented set, with every channel for `__sentinel__:hello`);
  on Sentinel the same user is the peers' `sentinel-user` (IS-MASTER-DOWN-BY-ADDR, hello PUBLISH).
- `monitor`: the agent: what its collectors send (PING, INFO, CONFIG GET, ROLE) and what its one whitelisted
  directive needs (REPLICAOF + CONFIG REWRITE around its restart of Redis), and its local fence (CLIENT PAUSE,
  UNPAUSE, KILL: agent/fence.py). Those are no more than the agent can already do on its own droplet (it
  restarts Redis as a service, reads redis.conf), and the `sentinel` credential on the same droplet has
  REPLICAOF, CONFIG REWRITE and CLIENT KILL too: a separate secret there would add no isolation.
- `admin`: the controller's healing and the migration (all of @admin but DEBUG, MODULE, SHUTDOWN, MONITOR).

Sentinel (Redis >= 6.2): its `default` user answers discovery to anyone without a password (php-redis 5.3's
`RedisSentinel` cannot authenticate), never a command that changes state; `discovery` is the same set for
clients that can authenticate; `sentinel` (the peers) and `admin` (the controller) may do everything.

Where each secret lives: the droplets hold the passwords of `replication`, `sentinel` and `monitor` (the
roles that run there) and only the SHA-256 of `app`, `admin` and `discovery` (Redis accepts `#<sha256>` for
a user's password); the controller holds `admin` and the droplets' three, and the hashes; the app password
is handed to the operator for the application servers and kept nowhere else.

Redis 6.0 (Ubuntu 22.04): no channel rules (`&`, `allchannels`, `resetchannels` are 6.2 syntax) and no
Sentinel ACL or `sentinel auth-user` (both 6.2): there the Redis users still apply, Redis's `default` user
carries the `sentinel` role (Sentinel 6.0 can only AUTH with a password), and Sentinel stays as before
(no auth) with a CONFIG_RISK finding naming the version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

REDIS_ROLES = ("app", "replication", "sentinel", "monitor", "admin")
NODE_PASSWORDS = ("replication", "sentinel", "monitor")  # the roles that run on a droplet
NODE_HASHES = ("app", "admin", "discovery")  # the roles that do not: only their SHA-256 is there

_CLIENT_SELF = "+client|setname +client|getname +client|id"

# Redis's documented sets for Sentinel and replicas (redis.io, "ACL rules for Sentinel and Replicas")
SENTINEL_ON_REDIS = ("-@all +multi +slaveof +ping +exec +subscribe +config|rewrite +role +publish +info "
                     "+client|setname +client|kill +script|kill")
REPLICATION_ON_REDIS = "-@all +psync +replconf +ping"
MONITOR_ON_REDIS = ("-@all +ping +info +config|get +role +replicaof +config|rewrite "
                    "+client|pause +client|unpause +client|kill")
APP_ON_REDIS = f"+@all -@admin -@dangerous +flushdb +info +keys +role {_CLIENT_SELF}"
ADMIN_ON_REDIS = "-@all +@connection +@admin +info +role +ping -debug -module -shutdown -monitor"

# What anyone may ask a Sentinel: discovery (clients), CKQUORUM and MYID (read-only, the agent's collector),
# and SUBSCRIBE to its event channels (+switch-master ...); never PUBLISH (a forged hello can carry a
# master address and epoch), IS-MASTER-DOWN-BY-ADDR (it casts a leader vote), or anything that changes state.
SENTINEL_DISCOVERY = (
    "-@all +ping +hello +role " + _CLIENT_SELF + " +subscribe +psubscribe +unsubscribe +punsubscribe "
    + " ".join(f"+sentinel|{sub}" for sub in (
        "get-master-addr-by-name", "masters", "master", "replicas", "slaves", "sentinels", "myid", "ckquorum"))
)
# subcommands that change a Sentinel's state, or act on others; the tests send each of them unauthenticated
SENTINEL_STATE_CHANGING = ("failover", "remove", "reset", "set", "monitor", "flushconfig", "config",
                           "simulate-failure", "is-master-down-by-addr", "debug")

_HEX64 = re.compile(r"[0-9a-f]{64}")


def sha256_hex(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def channels_supported(version: tuple[int, int]) -> bool:
    """Channel rules (`&*`, `allchannels`, `resetchannels`) and Sentinel ACLs came in Redis 6.2."""
    return version >= (6, 2)


def parse_version(text: str) -> tuple[int, int] | None:
    """(major, minor) from `redis-server --version` ("... v=7.0.15 ...") or INFO's "7.0.15"."""
    m = re.search(r"(?:v=|^)(\d+)\.(\d+)\.\d+", text.strip())
    return (int(m.group(1)), int(m.group(2))) if m else None


@dataclass(frozen=True, slots=True)
class NodeUsers:
    """The ACL secrets a droplet holds: passwords of its own roles, SHA-256 of the others."""

    replication: str
    sentinel: str
    monitor: str
    app_sha256: str
    admin_sha256: str
    discovery_sha256: str | None = None

    def __post_init__(self) -> None:
        for name in NODE_PASSWORDS:
            value = getattr(self, name)
            if not value or not value.isprintable() or len(value) > 512 or " " in value:
                raise ValueError(f"the {name} password must be printable, without spaces, at most 512 characters")
        for name in ("app_sha256", "admin_sha256", "discovery_sha256"):
            value = getattr(self, name)
            if value is not None and not _HEX64.fullmatch(value):
                raise ValueError(f"{name} must be 64 lowercase hex digits")
        if len({self.replication, self.sentinel, self.monitor}) < 3:
            raise ValueError("every role needs its own password")

    def to_json(self) -> str:
        data = {"replication": self.replication, "sentinel": self.sentinel, "monitor": self.monitor,
                "app_sha256": self.app_sha256, "admin_sha256": self.admin_sha256}
        if self.discovery_sha256:
            data["discovery_sha256"] = self.discovery_sha256
        return json.dumps(data)

    @staticmethod
    def from_json(text: str) -> NodeUsers:
        """Raises ValueError (never quoting a secret) on anything but the object `to_json` writes."""
        return NodeUsers(**_strings(text, "the users file", {"replication", "sentinel", "monitor", "app_sha256",
                                                             "admin_sha256"}))


def _strings(text: str, what: str, required: set[str]) -> dict[str, str]:
    """One JSON object of strings with the `required` keys and optionally `discovery_sha256`; the error never
    quotes a value."""
    try:
        data = json.loads(text)
    except ValueError:
        raise ValueError(f"{what} is not JSON") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"{what} must be one JSON object of strings")
    unknown = set(data) - required - {"discovery_sha256"}
    if required - set(data) or unknown:
        raise ValueError(f"{what} lacks {sorted(required - set(data))} or has unknown keys {sorted(unknown)}")
    return data


def _secret(password: str | None, sha256: str | None) -> str:
    return f">{password}" if password is not None else f"#{sha256}"


def redis_user_lines(users: NodeUsers, version: tuple[int, int]) -> list[str]:
    """redis.conf `user` lines (Redis >= 6.0). From 6.2 every user starts from `resetchannels`, and only the
    app (its own pub/sub) and Sentinel (`__sentinel__:hello`) get channels."""
    ch = channels_supported(version)
    reset = " resetchannels" if ch else ""
    every = " &*" if ch else ""
    lines = [
        f"user app on {_secret(None, users.app_sha256)} ~*{reset}{every} {APP_ON_REDIS}",
        f"user replication on {_secret(users.replication, None)}{reset} {REPLICATION_ON_REDIS}",
        f"user monitor on {_secret(users.monitor, None)}{reset} {MONITOR_ON_REDIS}",
        f"user admin on {_secret(None, users.admin_sha256)}{reset} {ADMIN_ON_REDIS}",
    ]
    if ch:
        lines.append(f"user sentinel on {_secret(users.sentinel, None)}{reset}{every} {SENTINEL_ON_REDIS}")
        lines.append("user default off nopass resetchannels -@all")
    else:  # Sentinel 6.0 authenticates with a password only, i.e. as `default`: default is the sentinel role
        lines.append(f"user default on {_secret(users.sentinel, None)} {SENTINEL_ON_REDIS}")
    return lines


def sentinel_user_lines(users: NodeUsers) -> list[str]:
    """sentinel.conf `user` lines (Sentinel >= 6.2)."""
    lines = [
        f"user default on nopass resetchannels &* {SENTINEL_DISCOVERY}",
        f"user sentinel on {_secret(users.sentinel, None)} allchannels +@all",
        f"user admin on {_secret(None, users.admin_sha256)} allchannels +@all",
    ]
    if users.discovery_sha256:
        lines.append(f"user discovery on {_secret(None, users.discovery_sha256)} resetchannels &* {SENTINEL_DISCOVERY}")
    return lines


@dataclass(frozen=True, slots=True)
class ClusterUsers:
    """The ACL secrets the controller holds for a cluster (its `acl_users_file`, JSON): `admin` (its own), the
    three a droplet needs (handed over at enrollment), and only the SHA-256 of `app` and `discovery`, whose
    passwords belong to the application servers."""

    admin: str
    replication: str
    sentinel: str
    monitor: str
    app_sha256: str
    discovery_sha256: str | None = None

    def __post_init__(self) -> None:
        if not self.admin or not self.admin.isprintable() or " " in self.admin or len(self.admin) > 512:
            raise ValueError("the admin password must be printable, without spaces, at most 512 characters")
        if self.admin in (self.replication, self.sentinel, self.monitor):
            raise ValueError("every role needs its own password")
        self.node_users()  # the droplets' part, checked the same way

    def node_users(self) -> NodeUsers:
        return NodeUsers(self.replication, self.sentinel, self.monitor, self.app_sha256, sha256_hex(self.admin),
                         self.discovery_sha256)

    def to_json(self) -> str:
        data = {"admin": self.admin, "replication": self.replication, "sentinel": self.sentinel,
                "monitor": self.monitor, "app_sha256": self.app_sha256}
        if self.discovery_sha256:
            data["discovery_sha256"] = self.discovery_sha256
        return json.dumps(data, indent=1)

    @staticmethod
    def from_json(text: str) -> ClusterUsers:
        """Raises ValueError (never quoting a secret) on anything but the object `to_json` writes."""
        return ClusterUsers(**_strings(text, "the ACL users file", {"admin", "replication", "sentinel", "monitor",
                                                                    "app_sha256"}))

    def role_sha256(self, role: str) -> str | None:
        """The SHA-256 Redis and Sentinel keep of `role`'s secret (None: no discovery user)."""
        if role in ("app", "discovery"):
            return self.app_sha256 if role == "app" else self.discovery_sha256
        return sha256_hex(str(getattr(self, role)))

    def with_secret(self, role: str, secret: str) -> ClusterUsers:
        """The same users with `role`'s new secret: a password (admin, replication, sentinel, monitor) or, for
        the application's roles (app, discovery), the SHA-256 of theirs."""
        field = {"app": "app_sha256", "discovery": "discovery_sha256"}.get(role, role)
        if field not in ("admin", "replication", "sentinel", "monitor", "app_sha256", "discovery_sha256"):
            raise ValueError(f"unknown role {role!r}")
        return dataclasses.replace(self, **{field: secret})

    @staticmethod
    def generate(token: Callable[[], str]) -> tuple[ClusterUsers, str, str]:
        """New users for a new cluster: (the controller's users, the app password, the discovery password);
        the last two go to the operator, only their hashes stay here. `token` makes one password."""
        app, discovery = token(), token()
        return ClusterUsers(token(), token(), token(), token(), sha256_hex(app), sha256_hex(discovery)), app, discovery


def setuser_args(line: str) -> tuple[str, ...]:
    """A config `user NAME rules...` line as the command that sets exactly it on a running server:
    `ACL SETUSER NAME reset rules...` (reset first, so the user ends with these rules and no others)."""
    words = line.split()
    if len(words) < 2 or words[0] != "user":
        raise ValueError("not a `user` line")
    return ("ACL", "SETUSER", words[1], "reset", *words[2:])


def user_name(line: str) -> str:
    return line.split()[1]
