"""Who may call the controller's API: operators with bearer tokens, nodes with their own keys.

Layer: adapter (pure checks over header values; the tokens are read once by the service). The one auth
model of the controller:

| caller                    | credential                                  | may                                    |
| ------------------------- | ------------------------------------------- | -------------------------------------- |
| anyone                    | none                                        | `GET /healthz`                         |
| a new droplet             | its one-time enrollment token               | `POST /v1/enroll`, once                |
| a node's agent            | its own key (HMAC of each push)             | `POST /v1/reports` as that node only   |
| a read-only operator      | `Authorization: Bearer <read token>`        | every GET                              |
| an admin operator         | `Authorization: Bearer <admin token>`       | everything (pause, resume, ack, nodes) |

The admin's "everything" includes `POST /v1/clusters/{name}/heal-state/reset`.

Header values that are not ASCII, or tokens compared, never raise: they simply do not match.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from typing import Literal

Role = Literal["read", "admin"]
_BEARER = re.compile(r"Bearer ([\x21-\x7e]{1,512})")
NAME = re.compile(r"[a-z0-9]([a-z0-9.-]{0,62}[a-z0-9])?")  # cluster and node names (DigitalOcean's droplet names)


def valid_name(value: object) -> bool:
    return isinstance(value, str) and value.isascii() and NAME.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class OperatorTokens:
    read: tuple[str, ...] = ()
    admin: tuple[str, ...] = ()

    @property
    def configured(self) -> bool:
        return bool(self.read or self.admin)


def _matches(given: bytes, candidates: tuple[str, ...]) -> bool:
    found = False
    for token in candidates:  # every candidate compared: the time does not tell which one matched
        found |= hmac.compare_digest(given, token.encode())
    return found


def role_of(authorization: str | None, tokens: OperatorTokens) -> Role | None:
    """The role a request's `Authorization` header grants, or None."""
    if not authorization or not authorization.isascii():
        return None
    m = _BEARER.fullmatch(authorization.strip())
    if m is None:
        return None
    given = m.group(1).encode()
    if _matches(given, tokens.admin):
        return "admin"
    if _matches(given, tokens.read):
        return "read"
    return None


def allows(role: Role | None, needed: Role) -> bool:
    return role == "admin" or (role == "read" and needed == "read")


def clip(value: object, limit: int = 64) -> str:
    """A caller-supplied string as it may appear in a log line: printable, at most `limit` characters."""
    text = value if isinstance(value, str) else repr(value)
    text = "".join(c if c.isprintable() else "?" for c in text[: limit + 1])
    return text if len(text) <= limit else text[:limit] + "..."
