"""Faults injected into the local DigitalOcean API at run time: the `/_sandbox/faults` document.

Layer: sandbox. `Faults` holds what is in force (latency, failing requests as `FailRule`s, actions that
error, a boot delay); `parse_faults` validates a faults document into a `FaultsUpdate` (422 naming a bad key)
that the API then applies under its lock.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sandbox.doapi.wire import ApiError, Json, unprocessable


@dataclass(slots=True)
class FailRule:
    status: int
    path_regex: str = ".*"
    method: str | None = None  # None: any
    count: int | None = 1  # None: every time
    retry_after_s: float | None = None
    after_commit: bool = False  # perform the request, then answer the error (the ambiguous real case)
    message: str | None = None

    def matches(self, method: str, path: str) -> bool:
        if self.count is not None and self.count <= 0:
            return False
        if self.method is not None and self.method.upper() not in ("*", method.upper()):
            return False
        return re.search(self.path_regex, path) is not None

    def error(self) -> ApiError:
        headers = {}
        if self.retry_after_s is not None:
            ra = self.retry_after_s
            headers["Retry-After"] = str(int(ra)) if float(ra).is_integer() else str(ra)
        return ApiError(self.status, self.message, headers=headers)

    def to_json(self) -> Json:
        return {"method": self.method, "path_regex": self.path_regex, "status": self.status, "count": self.count,
                "retry_after_s": self.retry_after_s, "after_commit": self.after_commit, "message": self.message}


@dataclass(slots=True)
class Faults:
    latency_ms: float = 0.0
    fail: list[FailRule] = field(default_factory=list)
    action_errors: set[str] = field(default_factory=set)
    boot_delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class FaultsUpdate:
    """A faults document, validated: each key given replaces that key (None: not given)."""

    latency_ms: float | None = None
    fail: tuple[FailRule, ...] | None = None
    action_errors: frozenset[str] | None = None
    boot_delay_s: float | None = None
    ratelimit: tuple[int | None, float | None, int | None] | None = None  # (limit, refill_per_s, remaining)


FAULT_KEYS = {"latency_ms", "fail", "action_errors", "boot_delay_s", "ratelimit"}
FAIL_RULE_KEYS = {"method", "path_regex", "status", "count", "retry_after_s", "after_commit", "message"}


def parse_faults(body: Mapping[str, Any]) -> FaultsUpdate:
    """The update a faults document asks for; 422 naming the first bad key."""
    unknown = set(body) - FAULT_KEYS
    if unknown:
        raise unprocessable(f"unknown fault keys: {', '.join(sorted(unknown))}")

    def number(key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise unprocessable(f"{key} must be a number >= 0")
        return float(value)

    rules: list[FailRule] | None = None
    if "fail" in body:
        if not isinstance(body["fail"], list):
            raise unprocessable("fail must be a list of rules")
        rules = []
        for i, raw in enumerate(body["fail"]):
            if not isinstance(raw, dict):
                raise unprocessable(f"fail[{i}] must be an object")
            extra = set(raw) - FAIL_RULE_KEYS
            if extra:
                raise unprocessable(f"fail[{i}]: unknown keys {', '.join(sorted(extra))}")
            status = raw.get("status")
            if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599:
                raise unprocessable(f"fail[{i}].status must be an HTTP error status (400-599)")
            try:
                path_regex = str(raw.get("path_regex", ".*"))
                re.compile(path_regex)
            except re.error as e:
                raise unprocessable(f"fail[{i}].path_regex: {e}") from None
            count = raw.get("count", 1)
            if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
                raise unprocessable(f"fail[{i}].count must be an integer >= 0, or null for always")
            retry_after = raw.get("retry_after_s")
            method = raw.get("method")
            if method is not None and not isinstance(method, str):
                raise unprocessable(f"fail[{i}].method must be a string")
            message = raw.get("message")
            rules.append(FailRule(
                status=status, path_regex=path_regex, method=method, count=count,
                retry_after_s=None if retry_after is None else number(f"fail[{i}].retry_after_s", retry_after),
                after_commit=bool(raw.get("after_commit", False)),
                message=None if message is None else str(message),
            ))
    action_errors = body.get("action_errors")
    if action_errors is not None and (not isinstance(action_errors, list)
                                      or not all(isinstance(a, str) for a in action_errors)):
        raise unprocessable("action_errors must be a list of action types")
    ratelimit = body.get("ratelimit")
    if ratelimit is not None:
        if not isinstance(ratelimit, dict) or set(ratelimit) - {"limit", "refill_per_s", "remaining"}:
            raise unprocessable("ratelimit must be an object with limit, refill_per_s and/or remaining")
        for key in ("limit", "remaining"):
            v = ratelimit.get(key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise unprocessable(f"ratelimit.{key} must be an integer >= 0")
    latency = number("latency_ms", body["latency_ms"]) if "latency_ms" in body else None
    boot_delay = number("boot_delay_s", body["boot_delay_s"]) if "boot_delay_s" in body else None
    refill = None
    if ratelimit is not None and ratelimit.get("refill_per_s") is not None:
        refill = number("ratelimit.refill_per_s", ratelimit["refill_per_s"])
    return FaultsUpdate(
        latency_ms=latency,
        fail=None if rules is None else tuple(rules),
        action_errors=None if action_errors is None else frozenset(action_errors),
        boot_delay_s=boot_delay,
        ratelimit=None if ratelimit is None else (ratelimit.get("limit"), refill, ratelimit.get("remaining")),
    )
