"""The local DigitalOcean API's requests and answers, apart from any server: the HTTP plumbing.

Layer: sandbox. `ApiRequest` and `ApiResponse` are what a handler takes and gives back; `ApiError` is an
answer other than success in DigitalOcean's error shape (`{"id", "message", "request_id"}`); the helpers read
a JSON body and an integer query parameter, and `page` cuts a list into DigitalOcean's pages with their
`links` and `meta`. Timestamps are written as DigitalOcean writes them (`now_iso`).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

Json = dict[str, Any]

DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 200

NOT_FOUND_MESSAGE = "The resource you were accessing could not be found."
UNAUTHORIZED = {"id": "Unauthorized", "message": "Unable to authenticate you"}
ERROR_IDS = {
    400: ("bad_request", "The request could not be understood."),
    401: ("Unauthorized", "Unable to authenticate you"),
    403: ("forbidden", "You do not have access for the attempted action."),
    404: ("not_found", NOT_FOUND_MESSAGE),
    405: ("method_not_allowed", "The method is not allowed for this resource."),
    409: ("conflict", "The request conflicts with the current state of the resource."),
    422: ("unprocessable_entity", "The request could not be processed."),
    429: ("too_many_requests", "API Rate limit exceeded."),
    500: ("server_error", "Unexpected server-side error"),
    502: ("bad_gateway", "Bad Gateway"),
    503: ("service_unavailable", "Service Unavailable"),
    504: ("gateway_timeout", "Gateway Timeout"),
}


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class ApiRequest:
    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    authorization: str | None = None
    body: bytes = b""


@dataclass(slots=True)
class ApiResponse:
    status: int
    body: Any = None  # JSON-serialisable, or None for no content
    headers: dict[str, str] = field(default_factory=dict)


class ApiError(Exception):
    """An answer other than success, in DigitalOcean's error shape."""

    def __init__(self, status: int, message: str | None = None, error_id: str | None = None,
                 headers: Mapping[str, str] | None = None, body: Json | None = None) -> None:
        default_id, default_message = ERROR_IDS.get(status, ("error", "Error"))
        self.status = status
        self.error_id = error_id or default_id
        self.message = message or default_message
        self.headers = dict(headers or {})
        self.body = body  # an endpoint's own error shape, where DigitalOcean documents one
        super().__init__(f"{status} {self.error_id}: {self.message}")

    def response(self) -> ApiResponse:
        body = self.body or {"id": self.error_id, "message": self.message, "request_id": str(uuid.uuid4())}
        return ApiResponse(self.status, body, dict(self.headers))


def not_found() -> ApiError:
    return ApiError(404, NOT_FOUND_MESSAGE)


def unprocessable(message: str) -> ApiError:
    return ApiError(422, message)


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def json_body(req: ApiRequest, status: int = 422, required: bool = True) -> Json:
    """The request's body, a JSON object; else the error `status` (or `{}` for no body when not required)."""
    if not req.body.strip():
        if required:
            raise ApiError(status, "The request body must be a JSON object.")
        return {}
    try:
        body = json.loads(req.body)
    except ValueError:
        raise ApiError(status, "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(status, "The request body must be a JSON object.")
    return body


def query_int(req: ApiRequest, name: str, default: int) -> int:
    raw = req.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise bad_request(f"{name} must be an integer") from None


def page(req: ApiRequest, key: str, items: list[Json], base_url: str,
         extra: Mapping[str, str] | None = None) -> ApiResponse:
    """The page of `items` the request asks for (`page`, `per_page`), with links to the others under `base_url`."""
    per_page = min(MAX_PER_PAGE, max(1, query_int(req, "per_page", DEFAULT_PER_PAGE)))
    page_no = max(1, query_int(req, "page", 1))
    total = len(items)
    last = max(1, math.ceil(total / per_page))
    chunk = items[(page_no - 1) * per_page: page_no * per_page]

    def link(n: int) -> str:
        return f"{base_url}{req.path}?{urlencode({'page': n, 'per_page': per_page, **(extra or {})})}"

    pages: dict[str, str] = {}
    if page_no > 1:
        pages["first"] = link(1)
        pages["prev"] = link(min(page_no - 1, last))
    if page_no < last:
        pages["next"] = link(page_no + 1)
        pages["last"] = link(last)
    return ApiResponse(200, {key: chunk, "links": {"pages": pages} if pages else {}, "meta": {"total": total}})
