"""The controller's DigitalOcean adapter: droplets, actions, reserved IPs, tags and firewalls behind `Cloud`.

Layer: adapter. The core sees the `Cloud` Protocol and the frozen dataclasses of this module, never pydo;
`PydoCloud` is the implementation on pydo (azure-core underneath). What it adds to pydo:

- One droplet per `create_droplet`, even when an answer is lost. Every create carries a request tag
  (`rw-req-<id>`); after an ambiguous failure (5xx, no answer) and before any retry it lists that tag and
  adopts what it finds instead of creating again, and after a create it lists the tag once more and
  destroys any extra droplet (the newest) so exactly one is left. azure-core's own retries are off: it
  would re-POST on 500/503/504 and on any answer with Retry-After. A `DropletSpec.request_id` makes the
  create idempotent across calls too (a controller restarting mid-create adopts the first droplet).
- Rate limits: the `ratelimit-remaining`/`ratelimit-reset` headers of every answer are read; when few
  requests remain, the next call waits until the reset instead of running into a 429 (`sleep` and the
  clock are injectable). A 429 waits for its Retry-After.
- pydo returns some documented 404s as the error body instead of raising: `get_*` normalise them to None,
  other calls to a `ProviderError` with `status=404`.
- Errors are `ProviderError`s naming the operation, the HTTP status and DigitalOcean's error id and message,
  raised `from` the library's exception. The token never reaches a message, a repr or a log line.
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlparse

import structlog

from protocol.net import is_loopback

log = structlog.get_logger("redwarden.do")

T = TypeVar("T")

DEFAULT_API_URL = "https://api.digitalocean.com"
REQUEST_TAG_PREFIX = "rw-req-"
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
ACTION_CLOCK_SKEW_S = 5.0  # an adopted action must have started no earlier than this before our first attempt


class ProviderError(Exception):
    """A call to the cloud provider failed; the message says which call and what the provider answered."""

    def __init__(self, message: str, *, operation: str, status: int | None = None, error_id: str | None = None,
                 retryable: bool = False) -> None:
        super().__init__(message)
        self.operation = operation
        self.status = status
        self.error_id = error_id
        self.retryable = retryable


class ProviderTimeout(ProviderError):
    """An action or a droplet did not reach the awaited state in time."""


# -- what the core sees ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DropletSpec:
    name: str  # make it unique (e.g. "redis-4-<short id>"): names are how people and logs tell droplets apart
    region: str
    size: str
    image: str | int  # a slug ("debian-12-x64") or an image/snapshot id
    vpc_uuid: str | None = None
    ssh_keys: tuple[str | int, ...] = ()
    tags: tuple[str, ...] = ()
    user_data: str | None = None
    monitoring: bool = False
    request_id: str | None = None  # idempotency key: a create with the same key adopts the droplet made before


@dataclass(frozen=True, slots=True)
class Droplet:
    id: int
    name: str
    status: str  # "new", "active", "off", "archive"
    region: str
    size: str
    image: str  # the image slug, or its id as a string when it has none (snapshots)
    vpc_uuid: str | None
    tags: tuple[str, ...]
    private_ip: str | None
    public_ip: str | None
    created_at: datetime

    @property
    def request_tag(self) -> str | None:
        return next((t for t in self.tags if t.startswith(REQUEST_TAG_PREFIX)), None)


@dataclass(frozen=True, slots=True)
class ActionResult:
    id: int
    type: str  # "create", "power_cycle", "assign_ip", ...
    status: str  # "in-progress", "completed", "errored"
    resource_id: int | None
    resource_type: str
    started_at: datetime | None
    completed_at: datetime | None

    @property
    def done(self) -> bool:
        return self.status != "in-progress"

    @property
    def ok(self) -> bool:
        return self.status == "completed"


@dataclass(frozen=True, slots=True)
class ReservedIp:
    ip: str
    region: str
    droplet_id: int | None


@dataclass(frozen=True, slots=True)
class FirewallRule:
    protocol: str  # "tcp", "udp", "icmp"
    ports: str = "all"  # "6379", "8000-9000", "all"; not sent for icmp
    tags: tuple[str, ...] = ()  # inbound: sources; outbound: destinations
    addresses: tuple[str, ...] = ()
    droplet_ids: tuple[int, ...] = ()


ALLOW_ALL_OUTBOUND = (
    FirewallRule("tcp", "all", addresses=("0.0.0.0/0", "::/0")),
    FirewallRule("udp", "all", addresses=("0.0.0.0/0", "::/0")),
    FirewallRule("icmp", addresses=("0.0.0.0/0", "::/0")),
)


@dataclass(frozen=True, slots=True)
class Firewall:
    id: str
    name: str
    status: str  # "waiting", "succeeded", "failed"
    tags: tuple[str, ...]
    droplet_ids: tuple[int, ...]
    inbound_rules: tuple[FirewallRule, ...]
    outbound_rules: tuple[FirewallRule, ...]


class Cloud(Protocol):
    """What the controller may do to its cloud. Actions return at once (in progress): `wait_action` them."""

    def list_droplets(self, tag: str | None = None) -> list[Droplet]: ...
    def get_droplet(self, droplet_id: int) -> Droplet | None: ...
    def create_droplet(self, spec: DropletSpec) -> Droplet: ...
    def wait_action(self, action_id: int, timeout_s: float) -> ActionResult: ...
    def wait_active(self, droplet_id: int, timeout_s: float) -> Droplet: ...
    def destroy_droplet(self, droplet_id: int) -> bool: ...
    def power_cycle(self, droplet_id: int) -> ActionResult: ...
    def power_on(self, droplet_id: int) -> ActionResult: ...
    def power_off(self, droplet_id: int) -> ActionResult: ...
    def shutdown(self, droplet_id: int) -> ActionResult: ...
    def reboot(self, droplet_id: int) -> ActionResult: ...
    def get_action(self, action_id: int) -> ActionResult | None: ...
    def assign_reserved_ip(self, ip: str, droplet_id: int) -> ActionResult: ...
    def get_reserved_ip(self, ip: str) -> ReservedIp | None: ...
    def create_firewall(self, name: str, inbound_rules: Sequence[FirewallRule], *, tags: Sequence[str] = (),
                        droplet_ids: Sequence[int] = (),
                        outbound_rules: Sequence[FirewallRule] | None = None) -> Firewall: ...
    def ensure_tag(self, name: str) -> None: ...


# -- the wire boundary: DigitalOcean's JSON to our types ---------------------------------------------------


class _Malformed(ValueError):
    pass


def _obj(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _Malformed(f"{what} is not an object")
    return value


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Malformed(f"{what} is not an integer")
    return value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise _Malformed(f"{what} is not a string")
    return value


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _Malformed(f"{what} is not a list")
    return tuple(_str(v, what) for v in value)


def parse_droplet(raw: Any) -> Droplet:
    d = _obj(raw, "droplet")
    v4 = _obj(d.get("networks") or {}, "droplet.networks").get("v4") or []
    addresses = {str(n.get("type")): str(n.get("ip_address")) for n in reversed(v4) if isinstance(n, Mapping)}
    image = _obj(d.get("image") or {}, "droplet.image")
    region = d.get("region")
    size_slug = d.get("size_slug") or _obj(d.get("size") or {}, "droplet.size").get("slug")
    created_at = _time(d.get("created_at"))
    if created_at is None:
        raise _Malformed("droplet.created_at is not a date-time")
    return Droplet(
        id=_int(d.get("id"), "droplet.id"),
        name=_str(d.get("name"), "droplet.name"),
        status=_str(d.get("status"), "droplet.status"),
        region=_str(_obj(region, "droplet.region").get("slug") if isinstance(region, Mapping) else region,
                    "droplet.region"),
        size=_str(size_slug, "droplet.size_slug"),
        image=str(image.get("slug") or image.get("id") or ""),
        vpc_uuid=d.get("vpc_uuid") if isinstance(d.get("vpc_uuid"), str) else None,
        tags=_strings(d.get("tags"), "droplet.tags"),
        private_ip=addresses.get("private"),
        public_ip=addresses.get("public"),
        created_at=created_at,
    )


def parse_action(raw: Any) -> ActionResult:
    a = _obj(raw, "action")
    resource_id = a.get("resource_id")
    return ActionResult(
        id=_int(a.get("id"), "action.id"),
        type=_str(a.get("type"), "action.type"),
        status=_str(a.get("status"), "action.status"),
        resource_id=resource_id if isinstance(resource_id, int) and not isinstance(resource_id, bool) else None,
        resource_type=str(a.get("resource_type") or ""),
        started_at=_time(a.get("started_at")),
        completed_at=_time(a.get("completed_at")),
    )


def parse_reserved_ip(raw: Any) -> ReservedIp:
    r = _obj(raw, "reserved_ip")
    droplet = r.get("droplet")
    region = r.get("region")
    return ReservedIp(
        ip=_str(r.get("ip"), "reserved_ip.ip"),
        region=_str(_obj(region, "reserved_ip.region").get("slug") if isinstance(region, Mapping) else region,
                    "reserved_ip.region"),
        droplet_id=_int(_obj(droplet, "reserved_ip.droplet").get("id"), "reserved_ip.droplet.id") if droplet else None,
    )


def _parse_rule(raw: Any, key: str) -> FirewallRule:
    r = _obj(raw, "firewall rule")
    targets = _obj(r.get(key) or {}, f"firewall rule {key}")
    ids = targets.get("droplet_ids") or []
    return FirewallRule(
        protocol=_str(r.get("protocol"), "firewall rule protocol"),
        ports=str(r.get("ports", "")),
        tags=_strings(targets.get("tags"), f"{key}.tags"),
        addresses=_strings(targets.get("addresses"), f"{key}.addresses"),
        droplet_ids=tuple(_int(i, f"{key}.droplet_ids") for i in ids),
    )


def parse_firewall(raw: Any) -> Firewall:
    f = _obj(raw, "firewall")
    return Firewall(
        id=_str(f.get("id"), "firewall.id"),
        name=_str(f.get("name"), "firewall.name"),
        status=str(f.get("status") or ""),
        tags=_strings(f.get("tags"), "firewall.tags"),
        droplet_ids=tuple(_int(i, "firewall.droplet_ids") for i in f.get("droplet_ids") or []),
        inbound_rules=tuple(_parse_rule(r, "sources") for r in f.get("inbound_rules") or []),
        outbound_rules=tuple(_parse_rule(r, "destinations") for r in f.get("outbound_rules") or []),
    )


def _rule_json(rule: FirewallRule, key: str) -> dict[str, Any]:
    targets: dict[str, Any] = {}
    if rule.addresses:
        targets["addresses"] = list(rule.addresses)
    if rule.droplet_ids:
        targets["droplet_ids"] = list(rule.droplet_ids)
    if rule.tags:
        targets["tags"] = list(rule.tags)
    out: dict[str, Any] = {"protocol": rule.protocol, key: targets}
    if rule.protocol != "icmp":
        out["ports"] = rule.ports
    return out


def _error_body(result: Any) -> tuple[str, str] | None:
    """(id, message) when pydo handed back an error body instead of raising.

    Most endpoints answer `{"id", "message"}`; the tags service answers a 400 as `{"error", "messages",
    "root_causes"}` (documented), which pydo returns from `tags.create` too.
    """
    if isinstance(result, Mapping) and isinstance(result.get("id"), str) and "message" in result:
        return result["id"], str(result["message"])
    if isinstance(result, Mapping) and isinstance(result.get("error"), str) and "root_causes" in result:
        return "bad_request", result["error"]
    return None


def _header_int(headers: Any, name: str) -> int | None:
    try:
        value = headers.get(name)
        return int(float(value)) if value is not None else None
    except (TypeError, ValueError, AttributeError):
        return None


def _header_float(headers: Any, name: str) -> float | None:
    try:
        value = headers.get(name)
        return float(value) if value is not None else None
    except (TypeError, ValueError, AttributeError):
        return None


# -- pydo ------------------------------------------------------------------------------------------------


class PydoCloud:
    """`Cloud` on pydo. `api_url` must be https (pydo sends a token over TLS only); `ca_path` verifies a
    private CA (the sandbox's). `sleep`, `clock` (epoch seconds) and `monotonic` are injectable for tests."""

    def __init__(
        self,
        token: str,
        api_url: str = DEFAULT_API_URL,
        ca_path: str | Path | None = None,
        *,
        timeout_s: float = 30.0,
        page_size: int = 200,
        max_attempts: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        min_remaining: int = 10,
        max_throttle_s: float = 60.0,
        poll_interval_s: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        new_request_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        import pydo

        parsed = urlparse(api_url)
        if not token:
            raise ProviderError("no DigitalOcean API token was given", operation="connect")
        if parsed.scheme != "https" or not parsed.hostname:
            raise ProviderError(f"the DigitalOcean API URL must be https://HOST[:PORT], not {api_url!r} "
                                "(pydo sends the token over TLS only)", operation="connect")
        self.api_url = api_url.rstrip("/")
        self._page_size = max(1, min(200, page_size))
        self._max_attempts = max(1, max_attempts)
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._min_remaining = min_remaining
        self._max_throttle_s = max_throttle_s
        self._poll_interval_s = poll_interval_s
        self._sleep = sleep
        self._clock = clock
        self._monotonic = monotonic
        self._new_request_id = new_request_id
        self._lock = threading.Lock()
        self._remaining: int | None = None
        self._reset_at: float | None = None
        kwargs: dict[str, Any] = {
            "endpoint": self.api_url,
            "retry_total": 0,  # we retry ourselves: azure-core would re-POST a create on a 5xx
            "raw_response_hook": self._on_response,
            "timeout": max(1, int(timeout_s)),
            "connection_timeout": timeout_s,
            "read_timeout": timeout_s,
        }
        if ca_path is not None:
            kwargs["connection_verify"] = str(ca_path)
        if is_loopback(parsed.hostname):
            kwargs["use_env_settings"] = False  # never send loopback traffic to a proxy from the environment
        self._client: Any = pydo.Client(token=token, **kwargs)

    def __repr__(self) -> str:
        return f"PydoCloud({self.api_url!r})"

    def close(self) -> None:
        """Close the kept-alive connections."""
        self._client.close()

    def __enter__(self) -> PydoCloud:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- transport: rate limit, retries, errors --

    def _on_response(self, pipeline_response: Any) -> None:
        headers = pipeline_response.http_response.headers
        remaining, reset = _header_int(headers, "ratelimit-remaining"), _header_float(headers, "ratelimit-reset")
        if remaining is not None:
            with self._lock:
                self._remaining, self._reset_at = remaining, reset

    def _throttle(self) -> None:
        with self._lock:
            remaining, reset_at = self._remaining, self._reset_at
        if remaining is None or remaining > self._min_remaining or reset_at is None:
            return
        wait_s = min(max(0.0, reset_at - self._clock()), self._max_throttle_s)
        with self._lock:
            self._remaining = None  # unknown until the next answer
        if wait_s > 0:
            log.info("do.throttled", remaining=remaining, wait_s=round(wait_s, 3))
            self._sleep(wait_s)

    def _backoff(self, attempt: int) -> float:
        return float(min(self._max_backoff_s, self._backoff_s * 2 ** (attempt - 1)))

    def _classify(self, e: Exception, operation: str) -> tuple[ProviderError, bool, float | None]:
        """(the error to raise, whether a retry may help, the wait the provider asked for)."""
        import requests
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ServiceRequestError,
            ServiceResponseError,
        )

        if isinstance(e, ClientAuthenticationError):
            return ProviderError(f"{operation}: the DigitalOcean API refused the token (HTTP 401)",
                                 operation=operation, status=401, error_id="Unauthorized"), False, None
        if isinstance(e, HttpResponseError):
            status = e.status_code
            error_id, message = "unknown", (e.reason or "")
            headers: Any = None
            response: Any = e.response
            if response is not None:
                headers = response.headers
                try:
                    found = _error_body(response.json())
                except Exception:
                    found = None
                if found is not None:
                    error_id, message = found
            retryable = status in RETRYABLE_STATUSES
            wait_s = _header_float(headers, "Retry-After") if headers is not None else None
            if status == 429 and wait_s is None and headers is not None:
                reset = _header_float(headers, "ratelimit-reset")
                wait_s = max(0.0, reset - self._clock()) if reset is not None else None
            err = ProviderError(f"{operation}: HTTP {status} {error_id}: {message}", operation=operation,
                                status=status, error_id=error_id, retryable=retryable)
            return err, retryable, wait_s
        if isinstance(e, (ServiceRequestError, ServiceResponseError)):
            inner = getattr(e, "inner_exception", None)
            if isinstance(inner, requests.exceptions.SSLError) or "CERTIFICATE_VERIFY_FAILED" in str(e):
                return ProviderError(f"{operation}: TLS verification of the DigitalOcean API failed "
                                     f"(wrong CA?): {type(inner or e).__name__}", operation=operation), False, None
            return ProviderError(f"{operation}: no answer from the DigitalOcean API ({type(e).__name__})",
                                 operation=operation, retryable=True), True, None
        return ProviderError(f"{operation}: {type(e).__name__}", operation=operation), False, None

    def _call(self, operation: str, fn: Callable[[], T], *, adopt: Callable[[], T | None] | None = None,
              idempotent: bool = True) -> T:
        """Run one API call with throttling and bounded retries.

        A call that is not idempotent is retried only with `adopt`: before each retry, `adopt` looks for
        what an earlier attempt may have made, and what it finds is returned instead of trying again.
        """
        from azure.core.exceptions import AzureError

        attempt = 0
        while True:
            attempt += 1
            self._throttle()
            try:
                return fn()
            except ProviderError:
                raise
            except (AzureError, OSError) as e:
                err, retryable, wait_s = self._classify(e, operation)
                if not retryable or attempt >= self._max_attempts or (not idempotent and adopt is None):
                    raise err from e
            wait = wait_s if wait_s is not None else self._backoff(attempt)
            wait = min(wait, self._max_throttle_s)
            log.warning("do.retrying", operation=operation, attempt=attempt, status=err.status, error_id=err.error_id,
                        wait_s=round(wait, 3))
            if wait > 0:
                self._sleep(wait)
            if adopt is not None:
                found = adopt()
                if found is not None:
                    log.info("do.adopted", operation=operation, attempt=attempt)
                    return found

    def _expect(self, result: Any, key: str, operation: str) -> Mapping[str, Any]:
        """The answer's object, or a ProviderError for the error body pydo returned instead of raising."""
        error = _error_body(result)
        if error is not None:
            error_id, message = error
            status = 404 if error_id == "not_found" else 400 if error_id == "bad_request" else None
            raise ProviderError(f"{operation}: {error_id}: {message}", operation=operation, status=status,
                                error_id=error_id)
        if not isinstance(result, Mapping) or key not in result:
            raise ProviderError(f"{operation}: the answer has no {key!r}", operation=operation)
        return result

    def _parse(self, parse: Callable[[Any], T], raw: Any, operation: str) -> T:
        try:
            return parse(raw)
        except _Malformed as e:
            raise ProviderError(f"{operation}: malformed answer: {e}", operation=operation) from e

    def _get(self, operation: str, fn: Callable[[], Any], key: str, parse: Callable[[Any], T]) -> T | None:
        result = self._call(operation, fn)
        error = _error_body(result)
        if error is not None and error[0] == "not_found":
            return None
        return self._parse(parse, self._expect(result, key, operation)[key], operation)

    def _all_pages(self, operation: str, fetch: Callable[[int, int], Any], key: str) -> list[Any]:
        items: list[Any] = []
        page = 1
        while True:
            body = self._expect(self._call(operation, functools.partial(fetch, page, self._page_size)), key,
                                operation)
            chunk = body[key]
            if not isinstance(chunk, list):
                raise ProviderError(f"{operation}: {key!r} is not a list", operation=operation)
            items.extend(chunk)
            pages = (body.get("links") or {}).get("pages") or {}
            if not chunk or "next" not in pages:
                return items
            page += 1

    # -- droplets --

    def list_droplets(self, tag: str | None = None) -> list[Droplet]:
        operation = f"list droplets tagged {tag}" if tag else "list droplets"
        raw = self._all_pages(operation, lambda page, per_page: self._client.droplets.list(
            tag_name=tag, per_page=per_page, page=page), "droplets")
        seen: dict[int, Droplet] = {}
        for item in raw:  # a droplet made or gone between two pages may shift another across them
            d = self._parse(parse_droplet, item, operation)
            seen.setdefault(d.id, d)
        return sorted(seen.values(), key=lambda d: d.id)

    def get_droplet(self, droplet_id: int) -> Droplet | None:
        return self._get(f"get droplet {droplet_id}", lambda: self._client.droplets.get(droplet_id), "droplet",
                         parse_droplet)

    def create_droplet(self, spec: DropletSpec) -> Droplet:
        request_tag = f"{REQUEST_TAG_PREFIX}{spec.request_id or self._new_request_id()}"
        operation = f"create droplet {spec.name}"

        def adopt() -> Droplet | None:
            found = self.list_droplets(request_tag)
            return found[0] if found else None  # the oldest

        if spec.request_id is not None:
            earlier = adopt()
            if earlier is not None:
                log.info("do.adopted", operation=operation, droplet_id=earlier.id, request_tag=request_tag)
                return self._one_per_request(request_tag, earlier)
        body: dict[str, Any] = {
            "name": spec.name, "region": spec.region, "size": spec.size, "image": spec.image,
            "ssh_keys": list(spec.ssh_keys), "tags": [*dict.fromkeys(spec.tags), request_tag],
            "monitoring": spec.monitoring,
        }
        if spec.vpc_uuid is not None:
            body["vpc_uuid"] = spec.vpc_uuid
        if spec.user_data is not None:
            body["user_data"] = spec.user_data

        def create() -> Droplet:
            result = self._client.droplets.create(body=body)
            return self._parse(parse_droplet, self._expect(result, "droplet", operation)["droplet"], operation)

        droplet = self._call(operation, create, adopt=adopt, idempotent=False)
        log.info("do.droplet_created", droplet_id=droplet.id, name=droplet.name, request_tag=request_tag)
        return self._one_per_request(request_tag, droplet)

    def _one_per_request(self, request_tag: str, droplet: Droplet) -> Droplet:
        """Keep the oldest droplet carrying this request's tag and destroy the others (a retried create)."""
        same = self.list_droplets(request_tag)
        if len(same) <= 1:
            return same[0] if same else droplet
        keep = same[0]
        for extra in same[1:]:
            self.destroy_droplet(extra.id)
            log.warning("do.duplicate_destroyed", droplet_id=extra.id, kept_droplet_id=keep.id,
                        request_tag=request_tag)
        return keep

    def destroy_droplet(self, droplet_id: int) -> bool:
        """True when destroyed now, False when there was no such droplet (already gone)."""
        operation = f"destroy droplet {droplet_id}"
        result = self._call(operation, lambda: self._client.droplets.destroy(droplet_id))
        error = _error_body(result)
        if error is not None:
            if error[0] == "not_found":
                return False
            self._expect(result, "", operation)
        log.info("do.droplet_destroyed", droplet_id=droplet_id)
        return True

    def wait_active(self, droplet_id: int, timeout_s: float) -> Droplet:
        deadline = self._monotonic() + timeout_s
        while True:
            droplet = self.get_droplet(droplet_id)
            if droplet is None:
                raise ProviderError(f"droplet {droplet_id} is gone", operation=f"wait for droplet {droplet_id}",
                                    status=404, error_id="not_found")
            if droplet.status == "active":
                return droplet
            left = deadline - self._monotonic()
            if left <= 0:
                raise ProviderTimeout(f"droplet {droplet_id} is still {droplet.status} after {timeout_s:.0f} s",
                                      operation=f"wait for droplet {droplet_id}")
            self._sleep(min(self._poll_interval_s, left))

    # -- actions --

    def get_action(self, action_id: int) -> ActionResult | None:
        return self._get(f"get action {action_id}", lambda: self._client.actions.get(action_id), "action",
                         parse_action)

    def wait_action(self, action_id: int, timeout_s: float) -> ActionResult:
        """The action once it is no longer in progress (completed or errored: check `.ok`)."""
        deadline = self._monotonic() + timeout_s
        while True:
            action = self.get_action(action_id)
            if action is None:
                raise ProviderError(f"action {action_id} does not exist", operation=f"wait for action {action_id}",
                                    status=404, error_id="not_found")
            if action.done:
                return action
            left = deadline - self._monotonic()
            if left <= 0:
                raise ProviderTimeout(f"action {action_id} ({action.type}) is still in progress after "
                                      f"{timeout_s:.0f} s", operation=f"wait for action {action_id}")
            self._sleep(min(self._poll_interval_s, left))

    def _recent_action(self, operation: str, list_first_page: Callable[[], Any], type_: str,
                       since: float) -> ActionResult | None:
        """The newest action of `type_` started since our first attempt: what a lost POST did start."""
        body = self._expect(self._call(operation, list_first_page), "actions", operation)
        for raw in body["actions"]:
            action = self._parse(parse_action, raw, operation)
            started = action.started_at.timestamp() if action.started_at else None
            if action.type == type_ and started is not None and started >= since - ACTION_CLOCK_SKEW_S:
                return action
        return None

    def _droplet_action(self, droplet_id: int, type_: str) -> ActionResult:
        operation = f"{type_} droplet {droplet_id}"
        since = self._clock()

        def post() -> ActionResult:
            result = self._client.droplet_actions.post(droplet_id, body={"type": type_})
            return self._parse(parse_action, self._expect(result, "action", operation)["action"], operation)

        def adopt() -> ActionResult | None:
            return self._recent_action(operation, lambda: self._client.droplet_actions.list(
                droplet_id, per_page=20, page=1), type_, since)

        action = self._call(operation, post, adopt=adopt, idempotent=False)
        log.info("do.action_started", action_id=action.id, type=type_, droplet_id=droplet_id)
        return action

    def power_cycle(self, droplet_id: int) -> ActionResult:
        return self._droplet_action(droplet_id, "power_cycle")

    def power_on(self, droplet_id: int) -> ActionResult:
        return self._droplet_action(droplet_id, "power_on")

    def power_off(self, droplet_id: int) -> ActionResult:
        return self._droplet_action(droplet_id, "power_off")

    def shutdown(self, droplet_id: int) -> ActionResult:
        return self._droplet_action(droplet_id, "shutdown")

    def reboot(self, droplet_id: int) -> ActionResult:
        return self._droplet_action(droplet_id, "reboot")

    # -- reserved IPs --

    def get_reserved_ip(self, ip: str) -> ReservedIp | None:
        return self._get(f"get reserved IP {ip}", lambda: self._client.reserved_ips.get(ip), "reserved_ip",
                         parse_reserved_ip)

    def assign_reserved_ip(self, ip: str, droplet_id: int) -> ActionResult:
        operation = f"assign reserved IP {ip} to droplet {droplet_id}"
        since = self._clock()

        def post() -> ActionResult:
            result = self._client.reserved_ips_actions.post(ip, body={"type": "assign", "droplet_id": droplet_id})
            return self._parse(parse_action, self._expect(result, "action", operation)["action"], operation)

        def adopt() -> ActionResult | None:
            return self._recent_action(operation, lambda: self._client.reserved_ips_actions.list(ip),
                                       "assign_ip", since)

        action = self._call(operation, post, adopt=adopt, idempotent=False)
        log.info("do.action_started", action_id=action.id, type="assign_ip", reserved_ip=ip, droplet_id=droplet_id)
        return action

    # -- firewalls and tags --

    def create_firewall(self, name: str, inbound_rules: Sequence[FirewallRule], *, tags: Sequence[str] = (),
                        droplet_ids: Sequence[int] = (),
                        outbound_rules: Sequence[FirewallRule] | None = None) -> Firewall:
        """A firewall; with no `outbound_rules` all outbound traffic is allowed (DigitalOcean denies what no
        outbound rule allows, so a firewall with inbound rules only would cut the droplets off)."""
        operation = f"create firewall {name}"
        since = self._clock()
        outbound = ALLOW_ALL_OUTBOUND if outbound_rules is None else tuple(outbound_rules)
        body: dict[str, Any] = {
            "name": name, "tags": list(tags), "droplet_ids": list(droplet_ids),
            "inbound_rules": [_rule_json(r, "sources") for r in inbound_rules],
            "outbound_rules": [_rule_json(r, "destinations") for r in outbound],
        }

        def create() -> Firewall:
            result = self._client.firewalls.create(body=body)
            return self._parse(parse_firewall, self._expect(result, "firewall", operation)["firewall"], operation)

        def adopt() -> Firewall | None:
            raw = self._all_pages(operation, lambda page, per_page: self._client.firewalls.list(
                per_page=per_page, page=page), "firewalls")
            for item in raw:
                created = _time(item.get("created_at")) if isinstance(item, Mapping) else None
                if (isinstance(item, Mapping) and item.get("name") == name and created is not None
                        and created.timestamp() >= since - ACTION_CLOCK_SKEW_S):
                    return self._parse(parse_firewall, item, operation)
            return None

        firewall = self._call(operation, create, adopt=adopt, idempotent=False)
        log.info("do.firewall_created", firewall_id=firewall.id, name=name)
        return firewall

    def ensure_tag(self, name: str) -> None:
        operation = f"create tag {name}"
        self._expect(self._call(operation, lambda: self._client.tags.create(body={"name": name})), "tag", operation)
