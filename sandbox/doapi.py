"""A local DigitalOcean API whose droplets really boot: the sandbox's cloud.

Layer: application (sandbox). It answers the `/v2` endpoints redwarden uses with the shapes of the official
OpenAPI description (droplets and their actions, actions, reserved IPs, tags, firewalls, VPCs, regions,
sizes, images), over HTTPS with a CA made per sandbox, behind a bearer token, with DigitalOcean's error
bodies (`{"id", "message"}`), rate-limit headers and pagination links. Faults are injected at run time
through `/_sandbox/faults`.

A droplet is a directory and a loopback address. Creating one claims the next free `127.0.0.N` for the
sandbox (`sandbox.addresses`), makes `<sandbox>/droplets/<name>-<id>/root/` its filesystem root and runs
its `user_data`, a cloud-config subset (see `parse_user_data`): `write_files` rooted in that directory,
then `runcmd`, each command in its own session with the droplet's environment markers
(`REDWARDEN_DROPLET_ROOT`, `_ID`, `_NAME`, `_ADDRESS`). The droplet owns every process whose environment
carries its id and root, so power_off kills exactly those, whatever daemonized itself. A reboot does not
run cloud-init again: it runs the executables in `<root>/etc/redwarden/boot.d/`, in name order.

Layout under the sandbox dir:

    doapi/state.json             droplets, actions, reserved IPs, tags, firewalls, VPCs (atomic writes)
    doapi/tls/                   ca.pem (give it to clients), ca.key, server.pem, server.key
    doapi/endpoint.json          {"url", "ca_path", "pid"} of the running API (CLI only)
    droplets/<name>-<id>/        root/ (the droplet's /), cloud-init-output.log
    destroyed/<name>-<id>/       what a destroyed droplet left, for post-mortems

Run it with `python -m sandbox.doapi --dir SANDBOX --host 127.0.0.N --port P --token-file F` (prints its
URL once listening; SIGTERM stops the API, not the droplets), or in-process with `start_doapi(...)`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import collections
import contextlib
import copy
import datetime as dt
import gzip
import hmac
import ipaddress
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal
from urllib.parse import urlencode

import psutil
import structlog
import uvicorn
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from sandbox.addresses import DEFAULT_CLAIMS_DIR, claim_addresses, release_addresses

log = structlog.get_logger("redwarden.doapi")

Json = dict[str, Any]
Outcome = Literal["completed", "errored", "interrupted"]

DROPLET_PORTS = (6379, 26379)  # a droplet's address is only taken where Redis and Sentinel can bind
FIRST_DROPLET_ID = 100000001
FIRST_ACTION_ID = 1000000001
USER_DATA_MAX_BYTES = 64 * 1024
DEFAULT_PER_PAGE = 20
BOOT_TIMEOUT_S = 120.0
SHUTDOWN_TIMEOUT_S = 10.0
RATELIMIT_LIMIT = 5000
MAX_PER_PAGE = 200
MAX_REQUEST_LOG = 10000
BOOT_D = "/etc/redwarden/boot.d"
# How each power action stops a droplet's processes: SIGTERM then SIGKILL (graceful), or SIGKILL at once.
GRACEFUL_STOP = {"power_off": False, "shutdown": True, "power_on": False, "reboot": True, "power_cycle": False}

ENV_ROOT = "REDWARDEN_DROPLET_ROOT"
ENV_ID = "REDWARDEN_DROPLET_ID"
ENV_NAME = "REDWARDEN_DROPLET_NAME"
ENV_ADDRESS = "REDWARDEN_DROPLET_ADDRESS"

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

DROPLET_NAME_RE = re.compile(r"^[a-zA-Z0-9]?[a-z0-9A-Z.\-]*[a-z0-9A-Z]$")
TAG_NAME_RE = re.compile(r"^[a-zA-Z0-9_\-:]+$")
FIREWALL_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9.-]+$")
VPC_NAME_RE = re.compile(r"^[a-zA-Z0-9\-.]+$")
PORTS_RE = re.compile(r"^(all|\d{1,5}(-\d{1,5})?)$")

# -- catalog: what a create is validated against --------------------------------------------------------

REGIONS = {
    "nyc1": "New York 1", "nyc3": "New York 3", "sfo3": "San Francisco 3", "ams3": "Amsterdam 3",
    "fra1": "Frankfurt 1", "lon1": "London 1", "sgp1": "Singapore 1", "tor1": "Toronto 1",
    "blr1": "Bangalore 1", "syd1": "Sydney 1",
}
DEFAULT_REGION = "nyc3"
REGION_FEATURES = ["backups", "ipv6", "metadata", "install_agent", "storage", "image_transfer"]
# slug: (memory MiB, vcpus, disk GiB, transfer TiB, price monthly USD, description)
SIZES: dict[str, tuple[int, int, int, float, float, str]] = {
    "s-1vcpu-512mb-10gb": (512, 1, 10, 0.5, 4.0, "Basic"),
    "s-1vcpu-1gb": (1024, 1, 25, 1.0, 6.0, "Basic"),
    "s-1vcpu-2gb": (2048, 1, 50, 2.0, 12.0, "Basic"),
    "s-2vcpu-2gb": (2048, 2, 60, 3.0, 18.0, "Basic"),
    "s-2vcpu-4gb": (4096, 2, 80, 4.0, 24.0, "Basic"),
    "s-4vcpu-8gb": (8192, 4, 160, 5.0, 48.0, "Basic"),
    "g-2vcpu-8gb": (8192, 2, 25, 4.0, 63.0, "General Purpose"),
}
# id: (slug or None, name, distribution, type, public)
IMAGES: dict[int, tuple[str | None, str, str, str, bool]] = {
    150000001: ("debian-12-x64", "12 x64", "Debian", "base", True),
    150000002: ("ubuntu-22-04-x64", "22.04 (LTS) x64", "Ubuntu", "base", True),
    150000003: ("ubuntu-24-04-x64", "24.04 (LTS) x64", "Ubuntu", "base", True),
    150000100: (None, "redwarden-node-snapshot", "Debian", "snapshot", False),
}
CATALOG_CREATED_AT = "2024-01-01T00:00:00Z"


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def region_object(slug: str) -> Json:
    return {"name": REGIONS.get(slug, slug), "slug": slug, "features": list(REGION_FEATURES), "available": True,
            "sizes": list(SIZES)}


def size_object(slug: str) -> Json:
    memory, vcpus, disk, transfer, monthly, description = SIZES[slug]
    return {"slug": slug, "memory": memory, "vcpus": vcpus, "disk": disk, "transfer": transfer,
            "price_monthly": monthly, "price_hourly": round(monthly / 672, 5), "regions": list(REGIONS),
            "available": True, "description": description,
            "disk_info": [{"type": "local", "size": {"amount": disk, "unit": "gib"}}]}


def image_object(image_id: int) -> Json:
    slug, name, distribution, kind, public = IMAGES[image_id]
    return {"id": image_id, "name": name, "type": kind, "distribution": distribution, "slug": slug,
            "public": public, "regions": list(REGIONS), "created_at": CATALOG_CREATED_AT, "min_disk_size": 10,
            "size_gigabytes": 2.36, "description": f"{distribution} {name}", "tags": [], "status": "available",
            "error_message": ""}


def find_image(ref: str | int) -> int | None:
    """The catalog id of an image given by id or slug."""
    if isinstance(ref, int):
        return ref if ref in IMAGES else None
    if ref.isdigit() and int(ref) in IMAGES:
        return int(ref)
    return next((i for i, spec in IMAGES.items() if spec[0] == ref), None)


# -- errors ------------------------------------------------------------------------------------------


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


def _not_found() -> ApiError:
    return ApiError(404, NOT_FOUND_MESSAGE)


def _unprocessable(message: str) -> ApiError:
    return ApiError(422, message)


def _bad_request(message: str) -> ApiError:
    return ApiError(400, message)


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


# -- TLS ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca_path: Path  # what clients verify against (pydo: connection_verify=, requests: verify=)
    cert_path: Path
    key_path: Path


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    tmp.replace(path)


def ensure_tls(tls_dir: Path, host: str) -> TlsFiles:
    """A CA for this sandbox (made once, kept) and a server certificate for `host` signed by it (made anew)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_path, ca_key_path = tls_dir / "ca.pem", tls_dir / "ca.key"
    cert_path, key_path = tls_dir / "server.pem", tls_dir / "server.key"
    now = dt.datetime.now(dt.timezone.utc)
    ca_key: ec.EllipticCurvePrivateKey
    if ca_path.exists() and ca_key_path.exists():
        ca_cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
        loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise RuntimeError(f"{ca_key_path} is not the EC key this module writes; remove {tls_dir} to renew")
        ca_key = loaded
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "redwarden sandbox"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"redwarden sandbox DigitalOcean CA {uuid.uuid4().hex[:8]}"),
        ])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(ca_key_path, ca_key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
        ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        san = x509.DNSName(host)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return TlsFiles(ca_path, cert_path, key_path)


# -- cloud-config: what a droplet runs on its first boot ------------------------------------------------


@dataclass(frozen=True, slots=True)
class WriteFile:
    path: str  # absolute inside the droplet
    content: bytes
    permissions: int = 0o644
    append: bool = False


@dataclass(frozen=True, slots=True)
class CloudConfig:
    write_files: tuple[WriteFile, ...] = ()
    runcmd: tuple[tuple[str, ...], ...] = ()  # argv each; a string entry becomes ("sh", "-c", entry)
    script: str | None = None  # user_data that is a "#!" script: run as it is
    problems: tuple[str, ...] = ()  # what was ignored or refused, for cloud-init-output.log


def _load_cloud_config(text: str) -> Any:
    """JSON after the `#cloud-config` line when it parses as such (JSON is YAML), else YAML via PyYAML."""
    rest = text.split("\n", 1)[1] if "\n" in text else ""
    with contextlib.suppress(ValueError):
        return json.loads(rest)
    try:
        import yaml
    except ImportError:
        raise ValueError("not JSON, and PyYAML is not installed to read it as YAML") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"not valid YAML: {e}") from None


def _decode_content(entry: Mapping[str, Any]) -> bytes:
    content = entry.get("content", "")
    raw = content if isinstance(content, str) else str(content)
    encoding = str(entry.get("encoding", "text/plain")).lower()
    if encoding in ("b64", "base64"):
        return base64.b64decode(raw, validate=False)
    if encoding in ("gz+b64", "gzip+base64", "gz+base64", "gzip+b64"):
        return gzip.decompress(base64.b64decode(raw, validate=False))
    if encoding in ("text/plain", ""):
        return raw.encode()
    raise ValueError(f"unsupported encoding {encoding!r}")


def _permissions(value: Any) -> int:
    if value is None:
        return 0o644
    if isinstance(value, bool):
        raise ValueError("permissions must be an octal string like '0644'")
    if isinstance(value, int):  # YAML 1.1 reads an unquoted 0644 as the octal number it is
        return value
    return int(str(value), 8)


def parse_user_data(user_data: str | None) -> CloudConfig:
    """The part of a droplet's user_data this stand-in runs.

    Supported: `#cloud-config` with `write_files` (path, content, encoding text/plain|b64|gz+b64,
    permissions as an octal string, append; owner and defer are ignored) and `runcmd` (strings run with
    `sh -c`, lists run as argv), in that order, as cloud-init does; or a script starting with `#!`.
    The cloud-config body is read as JSON when the text after the first line is JSON, else as YAML
    (PyYAML, when importable). Anything else is listed in `problems` and otherwise ignored.
    """
    if not user_data or not user_data.strip():
        return CloudConfig()
    if user_data.startswith("#!"):
        return CloudConfig(script=user_data)
    if not user_data.startswith("#cloud-config"):
        return CloudConfig(problems=("user_data is neither #cloud-config nor a #! script: ignored",))
    try:
        doc = _load_cloud_config(user_data)
    except ValueError as e:
        return CloudConfig(problems=(f"cloud-config unreadable: {e}",))
    if doc is None:
        return CloudConfig()
    if not isinstance(doc, dict):
        return CloudConfig(problems=("cloud-config is not a mapping: ignored",))
    problems = [f"cloud-config key {k!r} is not supported here: ignored"
                for k in doc if k not in ("write_files", "runcmd")]
    files: list[WriteFile] = []
    for i, entry in enumerate(doc.get("write_files") or []):
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            problems.append(f"write_files[{i}] has no path: skipped")
            continue
        try:
            files.append(WriteFile(entry["path"], _decode_content(entry), _permissions(entry.get("permissions")),
                                   bool(entry.get("append", False))))
        except (ValueError, binascii.Error, OSError) as e:
            problems.append(f"write_files[{i}] ({entry['path']}): {e}: skipped")
    commands: list[tuple[str, ...]] = []
    for i, cmd in enumerate(doc.get("runcmd") or []):
        if isinstance(cmd, str):
            commands.append(("sh", "-c", cmd))
        elif isinstance(cmd, list) and cmd and all(isinstance(a, (str, int, float)) for a in cmd):
            commands.append(tuple(str(a) for a in cmd))
        else:
            problems.append(f"runcmd[{i}] is neither a string nor a list of strings: skipped")
    return CloudConfig(tuple(files), tuple(commands), None, tuple(problems))


def rooted(root: Path, path: str) -> Path:
    """`path` inside the droplet, as a path under its root directory; refuses to leave the root."""
    p = PurePosixPath(path)
    if not p.is_absolute() or ".." in p.parts:
        raise ValueError(f"{path!r} must be absolute, without '..'")
    return root.joinpath(*p.parts[1:])


def droplet_env(base: Mapping[str, str], root: Path, droplet_id: int, name: str, address: str) -> dict[str, str]:
    """The environment of a droplet's processes: the API's own, its markers, and the venv's bin first."""
    env = dict(base)
    env.update({ENV_ROOT: str(root), ENV_ID: str(droplet_id), ENV_NAME: name, ENV_ADDRESS: address})
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "/usr/bin:/bin")
    return env


def owned_processes(root: Path, droplet_id: int | None = None) -> list[psutil.Process]:
    """Live processes whose environment marks them as the droplet's (or, with no id, any droplet under root)."""
    want_root = str(root)
    out: list[psutil.Process] = []
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            env = proc.environ()
            if ENV_ID not in env:
                continue
            if droplet_id is None:
                if not env.get(ENV_ROOT, "").startswith(want_root + os.sep):
                    continue
            elif env.get(ENV_ID) != str(droplet_id) or env.get(ENV_ROOT) != want_root:
                continue
            if proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    return out


def _gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE  # dead; its parent (maybe init) reaps it
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def wait_processes(procs: Sequence[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait until each process has exited (a zombie counts as exited); return those still alive."""
    deadline = time.monotonic() + timeout_s
    alive = list(procs)
    while alive:
        alive = [p for p in alive if not _gone(p)]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    return alive


def kill_processes(find: Callable[[], list[psutil.Process]], graceful_timeout_s: float | None) -> int:
    """Stop what `find` returns until it returns nothing: SIGTERM first when graceful, SIGKILL after."""
    killed = 0
    for attempt in range(6):
        procs = find()
        if not procs:
            break
        killed += len(procs) if attempt == 0 else 0
        if graceful_timeout_s is not None and attempt == 0:
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    p.send_signal(signal.SIGCONT)  # a frozen process cannot exit
                    p.terminate()
            procs = wait_processes(procs, graceful_timeout_s)
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.kill()
        wait_processes(procs, 5.0)
    return killed


def kill_droplet_processes(sandbox_dir: Path) -> int:
    """SIGKILL every process of every droplet of this sandbox (teardown); returns how many there were."""
    return kill_processes(lambda: owned_processes(sandbox_dir.resolve() / "droplets"), None)


# -- faults and the rate limit -------------------------------------------------------------------------


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


class TokenBucket:
    """DigitalOcean-like rate limit: `limit` requests, refilled continuously at `refill_per_s`."""

    def __init__(self, limit: int, refill_per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.refill_per_s = refill_per_s
        self.tokens = float(limit)
        self._clock = clock
        self._updated = clock()

    def _refill(self) -> None:
        now = self._clock()
        self.tokens = min(float(self.limit), self.tokens + (now - self._updated) * self.refill_per_s)
        self._updated = now

    def take(self) -> float | None:
        """Take one token: None when taken, else the seconds until one is there."""
        self._refill()
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return self._seconds_to_next()

    def _seconds_to_next(self) -> float:
        if self.tokens >= self.limit:
            return 0.0
        if self.refill_per_s <= 0:
            return 3600.0
        return (math.floor(self.tokens) + 1 - self.tokens) / self.refill_per_s

    def headers(self) -> dict[str, str]:
        self._refill()
        reset = time.time() + self._seconds_to_next()
        return {"ratelimit-limit": str(self.limit), "ratelimit-remaining": str(max(0, math.floor(self.tokens))),
                "ratelimit-reset": str(math.ceil(reset))}

    def set(self, limit: int | None = None, refill_per_s: float | None = None, remaining: int | None = None) -> None:
        self._refill()
        if limit is not None:
            self.limit = limit
            self.tokens = float(limit)
        if refill_per_s is not None:
            self.refill_per_s = refill_per_s
        if remaining is not None:
            self.tokens = float(min(remaining, self.limit))


# -- the API -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DoApiOptions:
    boot_timeout_s: float = BOOT_TIMEOUT_S  # a droplet is active when runcmd is done, or after this long
    shutdown_timeout_s: float = SHUTDOWN_TIMEOUT_S  # shutdown/reboot: SIGTERM, then SIGKILL after this long
    action_delay_s: float = 0.05  # how long an action with nothing to wait for stays in-progress
    ratelimit_limit: int = RATELIMIT_LIMIT
    ratelimit_refill_per_s: float = RATELIMIT_LIMIT / 3600  # DigitalOcean: 5,000 requests an hour
    claims_dir: Path = DEFAULT_CLAIMS_DIR
    # On stop, how long open connections may take to close: asyncio would wait up to 30 s for the TLS
    # close_notify of idle keep-alive clients, which often never send it.
    shutdown_grace_s: float = 1.0


@dataclass(slots=True)
class _Runtime:
    """What a droplet has in this process: a cancel flag for destroy, its current action's thread."""

    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)


Handler = Callable[..., ApiResponse]


class DoApi:
    """The API's state and handlers, independent of HTTP: `handle(ApiRequest) -> ApiResponse`."""

    def __init__(self, sandbox_dir: Path, token: str, base_url: str, options: DoApiOptions | None = None) -> None:
        if not token:
            raise ValueError("the API token must not be empty")
        self.sandbox_dir = sandbox_dir.resolve()
        self.state_dir = self.sandbox_dir / "doapi"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.base_url = base_url.rstrip("/")
        self.options = options or DoApiOptions()
        self._token = token.encode()
        self._lock = threading.RLock()
        self._closing = threading.Event()
        self._faults = Faults()
        self._bucket = TokenBucket(self.options.ratelimit_limit, self.options.ratelimit_refill_per_s)
        self._requests: collections.deque[Json] = collections.deque(maxlen=MAX_REQUEST_LOG)
        self._runtimes: dict[int, _Runtime] = {}
        self._threads: list[threading.Thread] = []
        self._state = self._load()
        self._routes = self._make_routes()
        self._sandbox_routes: list[tuple[str, re.Pattern[str], Handler]] = [
            ("GET", re.compile(r"/_sandbox/faults"), self._get_faults),
            ("POST", re.compile(r"/_sandbox/faults"), self._post_faults),
            ("DELETE", re.compile(r"/_sandbox/faults"), self._delete_faults),
            ("GET", re.compile(r"/_sandbox/requests"), self._get_requests),
            ("DELETE", re.compile(r"/_sandbox/requests"), self._delete_requests),
            ("GET", re.compile(r"/_sandbox/droplets"), self._get_sandbox_droplets),
        ]

    def __repr__(self) -> str:  # never the token
        return f"DoApi({self.sandbox_dir}, {self.base_url})"

    # -- persistence --

    @property
    def _state_path(self) -> Path:
        return self.state_dir / "state.json"

    def _load(self) -> Json:
        try:
            state: Json = json.loads(self._state_path.read_text())
        except FileNotFoundError:
            state = {}
        state.setdefault("version", 1)
        state.setdefault("next_droplet_id", FIRST_DROPLET_ID)
        state.setdefault("next_action_id", FIRST_ACTION_ID)
        for key in ("droplets", "actions", "reserved_ips", "tags", "firewalls", "vpcs"):
            state.setdefault(key, {})
        return state

    def _save(self) -> None:
        with self._lock:
            data = json.dumps(self._state, indent=1, sort_keys=True)
            tmp = self._state_path.with_name(f"state.json.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(data)
            tmp.replace(self._state_path)

    # -- lifecycle --

    def resume(self) -> None:
        """Carry on the actions a previous API process left in progress (a boot, a reboot, an assign)."""
        with self._lock:
            pending = sorted((a for a in self._state["actions"].values() if a["status"] == "in-progress"),
                             key=lambda a: a["id"])
        for action in pending:
            log.info("action.resumed", action_id=action["id"], type=action["type"])
            self._start_action(action, forced_error=False)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the workers; droplets' processes run on, and in-progress actions resume at the next start."""
        self._closing.set()
        deadline = time.monotonic() + timeout_s
        for t in list(self._threads):
            t.join(max(0.0, deadline - time.monotonic()))

    def latency_s(self) -> float:
        return self._faults.latency_ms / 1000.0

    # -- dispatch --

    def handle(self, req: ApiRequest) -> ApiResponse:
        sandbox = req.path.startswith("/_sandbox/")
        try:
            self._authenticate(req)
            if sandbox:
                resp = self._route(req, self._sandbox_routes)
            else:
                with self._lock:
                    wait_s = self._bucket.take()
                if wait_s is not None:
                    raise ApiError(429, headers={"Retry-After": str(max(1, math.ceil(wait_s)))})
                rule = self._match_fault(req)
                if rule is not None and not rule.after_commit:
                    raise rule.error()
                resp = self._route(req, self._routes)
                if rule is not None:
                    resp = rule.error().response()
        except ApiError as e:
            resp = e.response()
        except Exception:
            log.exception("request.failed", method=req.method, path=req.path)
            resp = ApiError(500).response()
        with self._lock:
            resp.headers.update(self._bucket.headers())
            if not sandbox:
                self._requests.append({"method": req.method, "path": req.path, "query": dict(req.query),
                                       "status": resp.status, "at": time.time()})
        return resp

    def _authenticate(self, req: ApiRequest) -> None:
        auth = req.authorization or ""
        scheme, _, given = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._token):
            raise ApiError(401, UNAUTHORIZED["message"], UNAUTHORIZED["id"])

    def _match_fault(self, req: ApiRequest) -> FailRule | None:
        with self._lock:
            for rule in self._faults.fail:
                if rule.matches(req.method, req.path):
                    if rule.count is not None:
                        rule.count -= 1
                    return rule
        return None

    def _route(self, req: ApiRequest, routes: Sequence[tuple[str, re.Pattern[str], Handler]]) -> ApiResponse:
        path_matched = False
        for method, pattern, handler in routes:
            m = pattern.fullmatch(req.path.rstrip("/") or "/")
            if m is None:
                continue
            path_matched = True
            if method == req.method.upper():
                return handler(req, **m.groupdict())
        if path_matched:
            raise ApiError(405)
        raise _not_found()

    def _make_routes(self) -> list[tuple[str, re.Pattern[str], Handler]]:
        d, a, ip = r"(?P<droplet_id>\d+)", r"(?P<action_id>\d+)", r"(?P<ip>[0-9.]+)"
        table: list[tuple[str, str, Handler]] = [
            ("GET", "/v2/droplets", self._list_droplets),
            ("POST", "/v2/droplets", self._create_droplets),
            ("DELETE", "/v2/droplets", self._delete_droplets_by_tag),
            ("GET", f"/v2/droplets/{d}", self._get_droplet),
            ("DELETE", f"/v2/droplets/{d}", self._delete_droplet),
            ("GET", f"/v2/droplets/{d}/actions", self._list_droplet_actions),
            ("POST", f"/v2/droplets/{d}/actions", self._post_droplet_action),
            ("GET", f"/v2/droplets/{d}/actions/{a}", self._get_droplet_action),
            ("GET", "/v2/actions", self._list_actions),
            ("GET", f"/v2/actions/{a}", self._get_action),
            ("GET", "/v2/reserved_ips", self._list_reserved_ips),
            ("POST", "/v2/reserved_ips", self._create_reserved_ip),
            ("GET", f"/v2/reserved_ips/{ip}", self._get_reserved_ip),
            ("DELETE", f"/v2/reserved_ips/{ip}", self._delete_reserved_ip),
            ("GET", f"/v2/reserved_ips/{ip}/actions", self._list_reserved_ip_actions),
            ("POST", f"/v2/reserved_ips/{ip}/actions", self._post_reserved_ip_action),
            ("GET", f"/v2/reserved_ips/{ip}/actions/{a}", self._get_reserved_ip_action),
            ("GET", "/v2/tags", self._list_tags),
            ("POST", "/v2/tags", self._create_tag),
            ("GET", "/v2/tags/(?P<tag>[^/]+)", self._get_tag),
            ("DELETE", "/v2/tags/(?P<tag>[^/]+)", self._delete_tag),
            ("POST", "/v2/tags/(?P<tag>[^/]+)/resources", self._tag_resources),
            ("DELETE", "/v2/tags/(?P<tag>[^/]+)/resources", self._untag_resources),
            ("GET", "/v2/firewalls", self._list_firewalls),
            ("POST", "/v2/firewalls", self._create_firewall),
            ("GET", "/v2/firewalls/(?P<fw>[0-9a-f-]+)", self._get_firewall),
            ("PUT", "/v2/firewalls/(?P<fw>[0-9a-f-]+)", self._update_firewall),
            ("DELETE", "/v2/firewalls/(?P<fw>[0-9a-f-]+)", self._delete_firewall),
            ("POST", "/v2/firewalls/(?P<fw>[0-9a-f-]+)/tags", self._firewall_add_tags),
            ("DELETE", "/v2/firewalls/(?P<fw>[0-9a-f-]+)/tags", self._firewall_remove_tags),
            ("POST", "/v2/firewalls/(?P<fw>[0-9a-f-]+)/droplets", self._firewall_add_droplets),
            ("DELETE", "/v2/firewalls/(?P<fw>[0-9a-f-]+)/droplets", self._firewall_remove_droplets),
            ("GET", "/v2/vpcs", self._list_vpcs),
            ("POST", "/v2/vpcs", self._create_vpc),
            ("GET", "/v2/vpcs/(?P<vpc>[0-9a-f-]+)", self._get_vpc),
            ("GET", "/v2/regions", self._list_regions),
            ("GET", "/v2/sizes", self._list_sizes),
            ("GET", "/v2/images", self._list_images),
            ("GET", "/v2/images/(?P<image>[^/]+)", self._get_image),
        ]
        return [(m, re.compile(p), h) for m, p, h in table]

    # -- request helpers --

    @staticmethod
    def _body(req: ApiRequest, status: int = 422, required: bool = True) -> Json:
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

    @staticmethod
    def _query_int(req: ApiRequest, name: str, default: int) -> int:
        raw = req.query.get(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise _bad_request(f"{name} must be an integer") from None

    def _page(self, req: ApiRequest, key: str, items: list[Json],
              extra: Mapping[str, str] | None = None) -> ApiResponse:
        per_page = min(MAX_PER_PAGE, max(1, self._query_int(req, "per_page", DEFAULT_PER_PAGE)))
        page = max(1, self._query_int(req, "page", 1))
        total = len(items)
        last = max(1, math.ceil(total / per_page))
        chunk = items[(page - 1) * per_page: page * per_page]

        def link(n: int) -> str:
            return f"{self.base_url}{req.path}?{urlencode({'page': n, 'per_page': per_page, **(extra or {})})}"

        pages: dict[str, str] = {}
        if page > 1:
            pages["first"] = link(1)
            pages["prev"] = link(min(page - 1, last))
        if page < last:
            pages["next"] = link(page + 1)
            pages["last"] = link(last)
        return ApiResponse(200, {key: chunk, "links": {"pages": pages} if pages else {}, "meta": {"total": total}})

    # -- state accessors (call with the lock held) --

    def _droplet(self, droplet_id: int | str) -> Json:
        d = self._state["droplets"].get(str(droplet_id))
        if d is None:
            raise _not_found()
        return d  # type: ignore[no-any-return]

    def _droplet_dir(self, d: Mapping[str, Any]) -> Path:
        return self.sandbox_dir / str(d["dir"])

    def _runtime(self, droplet_id: int) -> _Runtime:
        rt = self._runtimes.get(droplet_id)
        if rt is None:
            rt = self._runtimes[droplet_id] = _Runtime()
        return rt

    def _pending_action(self, resource_type: str, resource_id: int) -> Json | None:
        for action in self._state["actions"].values():
            if (action["status"] == "in-progress" and action["resource_type"] == resource_type
                    and action["resource_id"] == resource_id):
                return action  # type: ignore[no-any-return]
        return None

    def _ensure_tag(self, name: str) -> None:
        self._state["tags"].setdefault(name, {"created_at": _now_iso()})

    # -- rendering --

    def _render_droplet(self, d: Mapping[str, Any]) -> Json:
        size = size_object(d["size"])
        v4: list[Json] = []
        if d.get("address"):
            for kind in ("private", "public"):
                v4.append({"ip_address": d["address"], "netmask": "255.0.0.0", "gateway": "127.0.0.1", "type": kind})
        features = ["droplet_agent", "private_networking"]
        if d.get("monitoring"):
            features.append("monitoring")
        if d.get("ipv6"):
            features.append("ipv6")
        if d.get("backups"):
            features.append("backups")
        return {
            "id": d["id"], "name": d["name"], "memory": size["memory"], "vcpus": size["vcpus"], "disk": size["disk"],
            "disk_info": size["disk_info"], "locked": False, "status": d["status"], "kernel": None,
            "created_at": d["created_at"], "features": features, "backup_ids": [], "next_backup_window": None,
            "snapshot_ids": [], "image": image_object(d["image_id"]), "volume_ids": [], "size": size,
            "size_slug": d["size"], "networks": {"v4": v4, "v6": []}, "region": region_object(d["region"]),
            "tags": list(d["tags"]), "vpc_uuid": d["vpc_uuid"],
        }

    @staticmethod
    def _render_action(a: Mapping[str, Any]) -> Json:
        out = {k: a[k] for k in ("id", "status", "type", "started_at", "completed_at", "resource_id",
                                 "resource_type", "region_slug")}
        out["region"] = region_object(a["region_slug"]) if a.get("region_slug") else None
        if out["region"] is None:
            del out["region"]
        return out

    def _render_reserved_ip(self, r: Mapping[str, Any]) -> Json:
        droplet = self._state["droplets"].get(str(r.get("droplet_id")))
        return {"ip": r["ip"], "region": region_object(r["region"]),
                "droplet": self._render_droplet(droplet) if droplet else None, "locked": False,
                "project_id": r["project_id"]}

    def _render_tag(self, name: str) -> Json:
        tagged = sorted((d for d in self._state["droplets"].values() if name in d["tags"]), key=lambda d: d["id"])
        droplets: Json = {"count": len(tagged)}
        if tagged:
            droplets["last_tagged_uri"] = f"{self.base_url}/v2/droplets/{tagged[-1]['id']}"
        resources = {"count": len(tagged), **({"last_tagged_uri": droplets["last_tagged_uri"]} if tagged else {}),
                     "droplets": droplets, "images": {"count": 0}, "volumes": {"count": 0},
                     "volume_snapshots": {"count": 0}, "databases": {"count": 0}}
        return {"name": name, "resources": resources}

    # -- droplets --

    def _list_droplets(self, req: ApiRequest) -> ApiResponse:
        tag, name = req.query.get("tag_name"), req.query.get("name")
        with self._lock:
            rows = sorted(self._state["droplets"].values(), key=lambda d: d["id"])
            items = [self._render_droplet(d) for d in rows
                     if (tag is None or tag in d["tags"]) and (name is None or d["name"] == name)]
        extra = {k: v for k, v in (("tag_name", tag), ("name", name)) if v is not None}
        return self._page(req, "droplets", items, extra)

    def _get_droplet(self, req: ApiRequest, droplet_id: str) -> ApiResponse:
        with self._lock:
            return ApiResponse(200, {"droplet": self._render_droplet(self._droplet(droplet_id))})

    def _validate_create(self, body: Json) -> tuple[list[str], Json]:
        """(names, the droplet fields) of a create request, or a 422 naming what is wrong."""
        if ("name" in body) == ("names" in body):
            raise _unprocessable("Specify exactly one of name (a string) or names (a list of up to 10 strings).")
        if "name" in body:
            names = [body["name"]]
        else:
            names = body["names"]
            if not isinstance(names, list) or not 1 <= len(names) <= 10:
                raise _unprocessable("names must be a list of 1 to 10 droplet names.")
        for n in names:
            if not isinstance(n, str) or not n or len(n) > 255 or not DROPLET_NAME_RE.match(n):
                raise _unprocessable(f"Name {n!r} is invalid: only valid hostname characters are allowed "
                                     "(a-z, A-Z, 0-9, . and -).")
        region = body.get("region", DEFAULT_REGION)
        if not isinstance(region, str):
            raise _unprocessable("region must be a string (a region slug).")
        if region not in REGIONS:
            raise _unprocessable(f"Region {region!r} is not available.")
        size = body.get("size")
        if not isinstance(size, str):
            raise _unprocessable("size is required (a size slug).")
        if size not in SIZES:
            raise _unprocessable(f"Size {size!r} is not available in this region.")
        image = body.get("image")
        if isinstance(image, bool) or not isinstance(image, (str, int)):
            raise _unprocessable("image is required (an image slug or id).")
        image_id = find_image(image)
        if image_id is None:
            raise _unprocessable(f"You specified an invalid image for Droplet creation: {image!r}.")
        ssh_keys = body.get("ssh_keys") or []
        if not isinstance(ssh_keys, list) or not all(
                isinstance(k, (str, int)) and not isinstance(k, bool) for k in ssh_keys):
            raise _unprocessable("ssh_keys must be a list of SSH key ids or fingerprints.")
        for flag in ("backups", "ipv6", "monitoring", "private_networking", "with_droplet_agent"):
            if flag in body and not isinstance(body[flag], bool):
                raise _unprocessable(f"{flag} must be a boolean.")
        tags = body.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) and TAG_NAME_RE.match(t) for t in tags):
            raise _unprocessable("tags must be a list of tag names (letters, digits, '_', '-', ':').")
        user_data = body.get("user_data")
        if user_data is not None:
            if not isinstance(user_data, str):
                raise _unprocessable("user_data must be a string.")
            if len(user_data.encode()) > USER_DATA_MAX_BYTES:
                raise _unprocessable("user_data must not exceed 64 KiB (65536 bytes).")
        volumes = body.get("volumes") or []
        if volumes:
            raise _unprocessable("volumes are not supported by this sandbox.")
        vpc_uuid = body.get("vpc_uuid")
        if vpc_uuid is not None:
            if not isinstance(vpc_uuid, str):
                raise _unprocessable("vpc_uuid must be a string.")
            vpc = self._state["vpcs"].get(vpc_uuid)
            if vpc is None:
                raise _unprocessable(f"VPC {vpc_uuid} could not be found.")
            if vpc["region"] != region:
                raise _unprocessable(f"VPC {vpc_uuid} is in region {vpc['region']}, not {region}.")
        fields = {"region": region, "size": size, "image_id": image_id, "ssh_keys": list(ssh_keys),
                  "backups": bool(body.get("backups", False)), "ipv6": bool(body.get("ipv6", False)),
                  "monitoring": bool(body.get("monitoring", False)), "tags": list(dict.fromkeys(tags)),
                  "user_data": user_data, "vpc_uuid": vpc_uuid}
        return names, fields

    def _default_vpc(self, region: str) -> str:
        for vpc in self._state["vpcs"].values():
            if vpc["region"] == region and vpc["default"]:
                return str(vpc["id"])
        vpc = self._new_vpc(f"default-{region}", region, None, "", default=True)
        return str(vpc["id"])

    def _create_droplets(self, req: ApiRequest) -> ApiResponse:
        body = self._body(req)
        created: list[tuple[Json, Json]] = []
        with self._lock:
            names, fields = self._validate_create(body)
            if fields["vpc_uuid"] is None:
                fields["vpc_uuid"] = self._default_vpc(fields["region"])
            for tag in fields["tags"]:
                self._ensure_tag(tag)
            for name in names:
                droplet_id = self._state["next_droplet_id"]
                self._state["next_droplet_id"] = droplet_id + 1
                d = {"id": droplet_id, "name": name, **copy.deepcopy(fields), "status": "new",
                     "created_at": _now_iso(), "address": None, "dir": f"droplets/{name}-{droplet_id}",
                     "cloud_init_started": False}
                self._state["droplets"][str(droplet_id)] = d
                action = self._new_action("create", "droplet", droplet_id, fields["region"])
                created.append((d, action))
            self._save()
            rendered = [self._render_droplet(d) for d, _ in created]
        for _, action in created:
            self._start_action(action)
        links = {"actions": [{"id": a["id"], "rel": "create", "href": f"{self.base_url}/v2/actions/{a['id']}"}
                             for _, a in created]}
        if "name" in body:
            return ApiResponse(202, {"droplet": rendered[0], "links": links})
        return ApiResponse(202, {"droplets": rendered, "links": links})

    def _delete_droplet(self, req: ApiRequest, droplet_id: str) -> ApiResponse:
        self._destroy(int(droplet_id))
        return ApiResponse(204)

    def _delete_droplets_by_tag(self, req: ApiRequest) -> ApiResponse:
        tag = req.query.get("tag_name")
        if not tag:
            raise _bad_request("tag_name is required to delete droplets by tag.")
        with self._lock:
            ids = [d["id"] for d in self._state["droplets"].values() if tag in d["tags"]]
        for droplet_id in ids:
            with contextlib.suppress(ApiError):
                self._destroy(droplet_id)
        return ApiResponse(204)

    def _destroy(self, droplet_id: int) -> None:
        with self._lock:
            d = self._droplet(droplet_id)
            del self._state["droplets"][str(droplet_id)]
            for r in self._state["reserved_ips"].values():
                if r.get("droplet_id") == droplet_id:
                    r["droplet_id"] = None
            for fw in self._state["firewalls"].values():
                fw["droplet_ids"] = [i for i in fw["droplet_ids"] if i != droplet_id]
            rt = self._runtimes.pop(droplet_id, None) or _Runtime()
            self._save()
        rt.cancel.set()
        root = self._droplet_dir(d) / "root"
        kill_processes(lambda: owned_processes(root, droplet_id), None)
        if rt.thread is not None and rt.thread is not threading.current_thread():
            rt.thread.join(timeout=10.0)
        kill_processes(lambda: owned_processes(root, droplet_id), None)  # anything a boot step started meanwhile
        self._reap(rt)
        if d.get("address"):
            release_addresses(self.sandbox_dir, [d["address"]], self.options.claims_dir)
        src = self._droplet_dir(d)
        if src.exists():
            dst = self.sandbox_dir / "destroyed" / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.exists():
                dst = dst.with_name(f"{src.name}.{int(time.time() * 1000)}")
            shutil.move(str(src), str(dst))
        log.info("droplet.destroyed", droplet_id=droplet_id, name=d["name"], address=d.get("address"))

    # -- actions --

    def _new_action(self, type_: str, resource_type: str, resource_id: int | None, region: str | None,
                    params: Json | None = None) -> Json:
        with self._lock:
            action_id = self._state["next_action_id"]
            self._state["next_action_id"] = action_id + 1
            action = {"id": action_id, "status": "in-progress", "type": type_, "started_at": _now_iso(),
                      "completed_at": None, "resource_id": resource_id, "resource_type": resource_type,
                      "region_slug": region, "params": params or {}}
            self._state["actions"][str(action_id)] = action
            return action

    def _start_action(self, action: Json, forced_error: bool | None = None) -> None:
        if forced_error is None:
            with self._lock:
                forced_error = action["type"] in self._faults.action_errors
        t = threading.Thread(target=self._run_action, args=(action["id"], forced_error), daemon=True,
                             name=f"doapi-action-{action['id']}")
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)
            if action["resource_type"] == "droplet":
                self._runtime(action["resource_id"]).thread = t
        t.start()

    def _run_action(self, action_id: int, forced_error: bool) -> None:
        with self._lock:
            action = copy.deepcopy(self._state["actions"][str(action_id)])
        outcome: Outcome
        try:
            if forced_error:
                self._closing.wait(self.options.action_delay_s)
                outcome = "errored"
            else:
                outcome = self._perform(action)
        except Exception:
            log.exception("action.crashed", action_id=action_id, type=action["type"])
            outcome = "errored"
        if outcome == "interrupted":
            return  # the API is closing: resumed at the next start
        with self._lock:
            stored = self._state["actions"].get(str(action_id))
            if stored is not None:
                stored["status"] = outcome
                stored["completed_at"] = _now_iso()
                self._save()
        log.info("action.finished", action_id=action_id, type=action["type"], resource_id=action["resource_id"],
                 status=outcome)

    def _perform(self, action: Json) -> Outcome:
        kind, type_ = action["resource_type"], action["type"]
        if kind == "reserved_ip":
            return self._perform_reserved_ip(action)
        droplet_id = int(action["resource_id"])
        with self._lock:
            rt = self._runtime(droplet_id)
        if type_ == "create":
            return self._boot(droplet_id, rt)
        if type_ == "rename":
            with self._lock:
                if str(droplet_id) not in self._state["droplets"]:
                    return "errored"
                self._state["droplets"][str(droplet_id)]["name"] = action["params"]["name"]
                self._save()
            return self._pause(rt)
        graceful = GRACEFUL_STOP.get(type_)
        if graceful is None:
            return "errored"
        if not self._stop_droplet(droplet_id, rt, graceful=graceful):
            return "errored"
        if type_ in ("power_off", "shutdown"):
            return "completed"
        return self._boot(droplet_id, rt)

    def _pause(self, rt: _Runtime) -> Outcome:
        """An action with nothing to wait for still takes a moment, as it does on the real cloud."""
        if self._sleep(rt, self.options.action_delay_s):
            return self._interrupted(rt)
        return "completed"

    def _stopped(self, rt: _Runtime) -> bool:
        return rt.cancel.is_set() or self._closing.is_set()

    def _sleep(self, rt: _Runtime, seconds: float) -> bool:
        """Wait `seconds` unless the droplet is destroyed or the API closes first (then True)."""
        deadline = time.monotonic() + seconds
        while not self._stopped(rt):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            rt.cancel.wait(min(left, 0.05))
        return True

    def _interrupted(self, rt: _Runtime) -> Outcome:
        return "errored" if rt.cancel.is_set() else "interrupted"

    def _stop_droplet(self, droplet_id: int, rt: _Runtime, graceful: bool) -> bool:
        with self._lock:
            d = self._state["droplets"].get(str(droplet_id))
            if d is None:
                return False
            root = self._droplet_dir(d) / "root"
        timeout = self.options.shutdown_timeout_s if graceful else None
        n = kill_processes(lambda: owned_processes(root, droplet_id), timeout)
        self._reap(rt)
        with self._lock:
            d = self._state["droplets"].get(str(droplet_id))
            if d is None:
                return False
            if d["status"] == "active":
                d["status"] = "off"
                self._save()
        log.info("droplet.stopped", droplet_id=droplet_id, processes=n, graceful=graceful)
        return True

    @staticmethod
    def _reap(rt: _Runtime) -> None:
        rt.children = [p for p in rt.children if p.poll() is None]

    # -- booting --

    def _boot(self, droplet_id: int, rt: _Runtime) -> Outcome:
        delay = self._faults.boot_delay_s
        if delay > 0 and self._sleep(rt, delay):
            return self._interrupted(rt)
        with self._lock:
            d = self._state["droplets"].get(str(droplet_id))
            if d is None:
                return "errored"
            if d["address"] is None:
                try:
                    d["address"] = claim_addresses(self.sandbox_dir, 1, DROPLET_PORTS, self.options.claims_dir)[0]
                except RuntimeError as e:
                    log.warning("droplet.boot_failed", droplet_id=droplet_id, reason=str(e))
                    return "errored"
            first = not d["cloud_init_started"]
            d["cloud_init_started"] = True
            self._save()
            ddir = self._droplet_dir(d)
            name, address, user_data = d["name"], d["address"], d["user_data"]
        root = ddir / "root"
        root.mkdir(parents=True, exist_ok=True)
        env = droplet_env(os.environ, root, droplet_id, name, address)
        deadline = time.monotonic() + self.options.boot_timeout_s
        with (ddir / "cloud-init-output.log").open("ab") as out:
            self._say(out, f"boot of droplet {droplet_id} ({name}, {address}): "
                           f"{'first boot, cloud-init' if first else f'reboot, {BOOT_D}/*'}")
            steps = self._first_boot_steps(root, ddir, user_data, out) if first else self._boot_d_steps(root, out)
            for i, argv in enumerate(steps):
                if self._stopped(rt):
                    return self._interrupted(rt)
                if time.monotonic() >= deadline:
                    self._say(out, f"boot timeout ({self.options.boot_timeout_s:g} s): steps {i}-{len(steps) - 1} "
                                   "not run")
                    break
                self._say(out, f"step {i}: {' '.join(argv)}")
                rc = self._run_step(argv, env, root, out, deadline, rt)
                self._say(out, f"step {i}: " + ("still running at the boot timeout; left running" if rc is None
                                                else f"exit {rc}"))
            if self._stopped(rt):
                return self._interrupted(rt)
            with self._lock:
                d = self._state["droplets"].get(str(droplet_id))
                if d is None:
                    return "errored"
                d["status"] = "active"
                self._save()
            self._say(out, "droplet active")
        log.info("droplet.booted", droplet_id=droplet_id, name=name, address=address, first_boot=first)
        return "completed"

    @staticmethod
    def _say(out: IO[bytes], line: str) -> None:
        out.write(f"[{_now_iso()}] [doapi] {line}\n".encode())
        out.flush()

    def _first_boot_steps(self, root: Path, ddir: Path, user_data: str | None,
                          out: IO[bytes]) -> list[tuple[str, ...]]:
        config = parse_user_data(user_data)
        for problem in config.problems:
            self._say(out, problem)
        for wf in config.write_files:
            try:
                target = rooted(root, wf.path)
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("ab" if wf.append else "wb") as fh:
                    fh.write(wf.content)
                target.chmod(wf.permissions)
                self._say(out, f"write_files: {wf.path} ({len(wf.content)} bytes, mode {wf.permissions:o})")
            except (OSError, ValueError) as e:
                self._say(out, f"write_files: {wf.path} failed: {e}")
        steps = list(config.runcmd)
        if config.script is not None:
            script = root / "var/lib/cloud/instance/scripts/part-001"
            script.parent.mkdir(parents=True, exist_ok=True)
            script.write_text(config.script)
            script.chmod(0o700)
            steps.insert(0, (str(script),))
        return steps

    def _boot_d_steps(self, root: Path, out: IO[bytes]) -> list[tuple[str, ...]]:
        boot_d = rooted(root, BOOT_D)
        if not boot_d.is_dir():
            self._say(out, f"no {BOOT_D}: nothing to start")
            return []
        steps: list[tuple[str, ...]] = []
        for path in sorted(boot_d.iterdir()):
            if path.is_file() and os.access(path, os.X_OK):
                steps.append((str(path),))
            else:
                self._say(out, f"{BOOT_D}/{path.name} is not an executable file: skipped")
        return steps

    def _run_step(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path, out: IO[bytes], deadline: float,
                  rt: _Runtime) -> int | None:
        try:
            proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    cwd=cwd, env=dict(env), start_new_session=True, close_fds=True)
        except OSError as e:
            self._say(out, f"cannot run {argv[0]}: {e}")
            return 127
        with self._lock:
            rt.children.append(proc)
        while True:
            try:
                return proc.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                if self._stopped(rt) or time.monotonic() >= deadline:
                    return None

    # -- droplet actions --

    DROPLET_ACTIONS = ("power_cycle", "power_on", "power_off", "reboot", "shutdown", "rename")
    SPEC_DROPLET_ACTIONS = ("enable_backups", "disable_backups", "reboot", "power_cycle", "shutdown", "power_off",
                            "power_on", "restore", "password_reset", "resize", "rebuild", "rename",
                            "change_kernel", "enable_ipv6", "snapshot")

    def _post_droplet_action(self, req: ApiRequest, droplet_id: str) -> ApiResponse:
        body = self._body(req)
        type_ = body.get("type")
        if not isinstance(type_, str) or type_ not in self.SPEC_DROPLET_ACTIONS:
            raise _unprocessable(f"type must be one of {', '.join(self.SPEC_DROPLET_ACTIONS)}.")
        if type_ not in self.DROPLET_ACTIONS:
            raise _unprocessable(f"The {type_} action is not supported by this sandbox.")
        params: Json = {}
        if type_ == "rename":
            name = body.get("name")
            if not isinstance(name, str) or not DROPLET_NAME_RE.match(name):
                raise _unprocessable("name must be a valid hostname.")
            params["name"] = name
        with self._lock:
            d = self._droplet(droplet_id)
            if self._pending_action("droplet", d["id"]) is not None:
                raise _unprocessable("Droplet already has a pending event.")
            action = self._new_action(type_, "droplet", d["id"], d["region"], params)
            self._save()
        self._start_action(action)
        return ApiResponse(201, {"action": self._render_action(action)})

    def _list_droplet_actions(self, req: ApiRequest, droplet_id: str) -> ApiResponse:
        with self._lock:
            d = self._droplet(droplet_id)
            items = [self._render_action(a) for a in sorted(self._state["actions"].values(), key=lambda a: -a["id"])
                     if a["resource_type"] == "droplet" and a["resource_id"] == d["id"]]
        return self._page(req, "actions", items)

    def _get_droplet_action(self, req: ApiRequest, droplet_id: str, action_id: str) -> ApiResponse:
        with self._lock:
            d = self._droplet(droplet_id)
            a = self._state["actions"].get(action_id)
            if a is None or a["resource_type"] != "droplet" or a["resource_id"] != d["id"]:
                raise _not_found()
            return ApiResponse(200, {"action": self._render_action(a)})

    def _list_actions(self, req: ApiRequest) -> ApiResponse:
        with self._lock:
            items = [self._render_action(a) for a in sorted(self._state["actions"].values(), key=lambda a: -a["id"])]
        return self._page(req, "actions", items)

    def _get_action(self, req: ApiRequest, action_id: str) -> ApiResponse:
        with self._lock:
            a = self._state["actions"].get(action_id)
            if a is None:
                raise _not_found()
            return ApiResponse(200, {"action": self._render_action(a)})

    # -- reserved IPs --

    def _reserved_ip(self, ip: str) -> Json:
        r = self._state["reserved_ips"].get(ip)
        if r is None:
            raise _not_found()
        return r  # type: ignore[no-any-return]

    def _list_reserved_ips(self, req: ApiRequest) -> ApiResponse:
        with self._lock:
            items = [self._render_reserved_ip(r) for r in sorted(self._state["reserved_ips"].values(),
                                                                 key=lambda r: ipaddress.ip_address(r["ip"]))]
        return self._page(req, "reserved_ips", items)

    def _create_reserved_ip(self, req: ApiRequest) -> ApiResponse:
        body = self._body(req)
        droplet_id, region = body.get("droplet_id"), body.get("region")
        if (droplet_id is None) == (region is None):
            raise _unprocessable("Specify exactly one of droplet_id or region.")
        if droplet_id is not None and (not isinstance(droplet_id, int) or isinstance(droplet_id, bool)):
            raise _unprocessable("droplet_id must be an integer.")
        if region is not None and (not isinstance(region, str) or region not in REGIONS):
            raise _unprocessable(f"Region {region!r} is not available.")
        action = None
        with self._lock:
            d = None
            if droplet_id is not None:
                d = self._state["droplets"].get(str(droplet_id))
                if d is None:
                    raise _unprocessable(f"Droplet {droplet_id} could not be found.")
                region = d["region"]
            try:
                ip = claim_addresses(self.sandbox_dir, 1, DROPLET_PORTS, self.options.claims_dir)[0]
            except RuntimeError as e:
                raise _unprocessable(f"No reserved IP is available: {e}.") from None
            r = {"ip": ip, "region": region, "droplet_id": None, "project_id": str(uuid.uuid4()),
                 "created_at": _now_iso()}
            self._state["reserved_ips"][ip] = r
            if d is not None:
                action = self._new_action("assign_ip", "reserved_ip", int(ipaddress.ip_address(ip)), region,
                                          {"ip": ip, "droplet_id": d["id"]})
            self._save()
            rendered = self._render_reserved_ip(r)
        links: Json = {}
        if action is not None and d is not None:
            self._start_action(action)
            links = {"droplets": [{"id": d["id"], "rel": "droplet", "href": f"{self.base_url}/v2/droplets/{d['id']}"}],
                     "actions": [{"id": action["id"], "rel": "assign_ip",
                                  "href": f"{self.base_url}/v2/actions/{action['id']}"}]}
        return ApiResponse(202, {"reserved_ip": rendered, "links": links})

    def _get_reserved_ip(self, req: ApiRequest, ip: str) -> ApiResponse:
        with self._lock:
            return ApiResponse(200, {"reserved_ip": self._render_reserved_ip(self._reserved_ip(ip))})

    def _delete_reserved_ip(self, req: ApiRequest, ip: str) -> ApiResponse:
        with self._lock:
            self._reserved_ip(ip)
            del self._state["reserved_ips"][ip]
            self._save()
        release_addresses(self.sandbox_dir, [ip], self.options.claims_dir)
        return ApiResponse(204)

    def _post_reserved_ip_action(self, req: ApiRequest, ip: str) -> ApiResponse:
        body = self._body(req)
        type_ = body.get("type")
        if type_ not in ("assign", "unassign"):
            raise _unprocessable("type must be assign or unassign.")
        with self._lock:
            r = self._reserved_ip(ip)
            params: Json = {"ip": ip, "droplet_id": None}
            if type_ == "assign":
                droplet_id = body.get("droplet_id")
                if not isinstance(droplet_id, int) or isinstance(droplet_id, bool):
                    raise _unprocessable("droplet_id is required to assign a reserved IP.")
                d = self._state["droplets"].get(str(droplet_id))
                if d is None:
                    raise _unprocessable(f"Droplet {droplet_id} could not be found.")
                if d["region"] != r["region"]:
                    raise _unprocessable(f"The reserved IP is in {r['region']}, the droplet in {d['region']}.")
                params["droplet_id"] = droplet_id
            resource_id = int(ipaddress.ip_address(ip))
            if self._pending_action("reserved_ip", resource_id) is not None:
                raise _unprocessable("Reserved IP already has a pending event.")
            action = self._new_action(f"{type_}_ip", "reserved_ip", resource_id, r["region"], params)
            self._save()
        self._start_action(action)
        return ApiResponse(201, {"action": self._render_action(action)})

    def _perform_reserved_ip(self, action: Json) -> Outcome:
        if self._closing.wait(self.options.action_delay_s):
            return "interrupted"
        params = action["params"]
        with self._lock:
            r = self._state["reserved_ips"].get(params["ip"])
            if r is None:
                return "errored"
            droplet_id = params.get("droplet_id")
            if droplet_id is not None and str(droplet_id) not in self._state["droplets"]:
                return "errored"
            r["droplet_id"] = droplet_id
            self._save()
        return "completed"

    def _ip_actions(self, ip: str) -> list[Json]:
        resource_id = int(ipaddress.ip_address(ip))
        return [a for a in sorted(self._state["actions"].values(), key=lambda a: -a["id"])
                if a["resource_type"] == "reserved_ip" and a["resource_id"] == resource_id]

    def _list_reserved_ip_actions(self, req: ApiRequest, ip: str) -> ApiResponse:
        with self._lock:
            self._reserved_ip(ip)
            items = [self._render_action(a) for a in self._ip_actions(ip)]
        return self._page(req, "actions", items)

    def _get_reserved_ip_action(self, req: ApiRequest, ip: str, action_id: str) -> ApiResponse:
        with self._lock:
            self._reserved_ip(ip)
            for a in self._ip_actions(ip):
                if str(a["id"]) == action_id:
                    return ApiResponse(200, {"action": self._render_action(a)})
        raise _not_found()

    # -- tags --

    def _list_tags(self, req: ApiRequest) -> ApiResponse:
        with self._lock:
            items = [self._render_tag(name) for name in sorted(self._state["tags"])]
        return self._page(req, "tags", items)

    def _create_tag(self, req: ApiRequest) -> ApiResponse:
        body = self._body(req, status=400)
        name = body.get("name")
        if not isinstance(name, str) or len(name) > 255 or not TAG_NAME_RE.match(name):
            # the tags service answers in its own shape (documented): {"error", "messages", "root_causes"}
            error = f'Error validating resource tag: "tag-name \\"{name}\\" contains invalid characters"'
            raise ApiError(400, error, body={"error": error, "messages": None,
                                             "root_causes": [f"rpc error: code = InvalidArgument desc = {error}"]})
        with self._lock:
            self._ensure_tag(name)
            self._save()
            return ApiResponse(201, {"tag": self._render_tag(name)})

    def _get_tag(self, req: ApiRequest, tag: str) -> ApiResponse:
        with self._lock:
            if tag not in self._state["tags"]:
                raise _not_found()
            return ApiResponse(200, {"tag": self._render_tag(tag)})

    def _delete_tag(self, req: ApiRequest, tag: str) -> ApiResponse:
        with self._lock:
            if tag not in self._state["tags"]:
                raise _not_found()
            del self._state["tags"][tag]
            for d in self._state["droplets"].values():
                d["tags"] = [t for t in d["tags"] if t != tag]
            for fw in self._state["firewalls"].values():
                fw["tags"] = [t for t in fw["tags"] if t != tag]
            self._save()
        return ApiResponse(204)

    def _tag_targets(self, req: ApiRequest, tag: str) -> list[Json]:
        body = self._body(req)
        resources = body.get("resources")
        if not isinstance(resources, list) or not resources:
            raise _unprocessable("resources must be a non-empty list of {resource_id, resource_type}.")
        if tag not in self._state["tags"]:
            raise _not_found()
        targets = []
        for r in resources:
            if not isinstance(r, dict) or r.get("resource_type") != "droplet":
                raise _unprocessable("Only droplets can be tagged in this sandbox.")
            d = self._state["droplets"].get(str(r.get("resource_id")))
            if d is None:
                raise _unprocessable(f"Droplet {r.get('resource_id')} could not be found.")
            targets.append(d)
        return targets

    def _tag_resources(self, req: ApiRequest, tag: str) -> ApiResponse:
        with self._lock:
            for d in self._tag_targets(req, tag):
                if tag not in d["tags"]:
                    d["tags"].append(tag)
            self._save()
        return ApiResponse(204)

    def _untag_resources(self, req: ApiRequest, tag: str) -> ApiResponse:
        with self._lock:
            for d in self._tag_targets(req, tag):
                d["tags"] = [t for t in d["tags"] if t != tag]
            self._save()
        return ApiResponse(204)

    # -- firewalls (kept and shown; loopback traffic is not filtered) --

    def _firewall(self, fw_id: str) -> Json:
        fw = self._state["firewalls"].get(fw_id)
        if fw is None:
            raise _not_found()
        return fw  # type: ignore[no-any-return]

    @staticmethod
    def _rules(raw: Any, direction: str, targets_key: str) -> list[Json]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise _bad_request(f"{direction} must be a list of rules.")
        rules = []
        for i, rule in enumerate(raw):
            where = f"{direction}[{i}]"
            if not isinstance(rule, dict):
                raise _bad_request(f"{where} must be an object.")
            protocol = rule.get("protocol")
            if protocol not in ("tcp", "udp", "icmp"):
                raise _bad_request(f"{where}.protocol must be tcp, udp or icmp.")
            ports = rule.get("ports", "0" if protocol == "icmp" else None)
            if not isinstance(ports, str) or not PORTS_RE.match(ports) or any(
                    int(p) > 65535 for p in ports.split("-") if p.isdigit()):
                raise _bad_request(f"{where}.ports must be 'all', a port or a range like '8000-9000'.")
            targets = rule.get(targets_key)
            if not isinstance(targets, dict):
                raise _bad_request(f"{where}.{targets_key} is required.")
            norm: Json = {}
            for key, kind in (("addresses", str), ("droplet_ids", int), ("load_balancer_uids", str),
                              ("kubernetes_ids", str), ("tags", str)):
                value = targets.get(key)
                if value is None:
                    continue
                if not isinstance(value, list) or not all(isinstance(v, kind) and not isinstance(v, bool)
                                                          for v in value):
                    raise _bad_request(f"{where}.{targets_key}.{key} must be a list of {kind.__name__}.")
                if key == "addresses":
                    for addr in value:
                        try:
                            ipaddress.ip_network(addr, strict=False)
                        except ValueError:
                            raise _bad_request(f"{where}.{targets_key}.addresses: {addr!r} is not an address "
                                               "or CIDR.") from None
                norm[key] = list(value)
            if not any(norm.values()):
                raise _bad_request(f"{where}.{targets_key} must name at least one address, droplet or tag.")
            rules.append({"protocol": protocol, "ports": ports, targets_key: norm})
        return rules

    def _firewall_fields(self, body: Json) -> Json:
        name = body.get("name")
        if not isinstance(name, str) or not FIREWALL_NAME_RE.match(name):
            raise _bad_request("name is required: letters, digits, '.' and '-', starting with a letter or digit.")
        if body.get("inbound_rules") is None and body.get("outbound_rules") is None:
            raise _bad_request("At least one of inbound_rules or outbound_rules is required.")
        inbound = self._rules(body.get("inbound_rules"), "inbound_rules", "sources")
        outbound = self._rules(body.get("outbound_rules"), "outbound_rules", "destinations")
        droplet_ids = body.get("droplet_ids") or []
        tags = body.get("tags") or []
        if not isinstance(droplet_ids, list) or not all(isinstance(i, int) and not isinstance(i, bool)
                                                        for i in droplet_ids):
            raise _bad_request("droplet_ids must be a list of droplet ids.")
        for i in droplet_ids:
            if str(i) not in self._state["droplets"]:
                raise _bad_request(f"Droplet {i} could not be found.")
        if not isinstance(tags, list) or not all(isinstance(t, str) and TAG_NAME_RE.match(t) for t in tags):
            raise _bad_request("tags must be a list of tag names.")
        for tag in tags:
            self._ensure_tag(tag)
        return {"name": name, "inbound_rules": inbound, "outbound_rules": outbound,
                "droplet_ids": list(dict.fromkeys(droplet_ids)), "tags": list(dict.fromkeys(tags))}

    def _list_firewalls(self, req: ApiRequest) -> ApiResponse:
        with self._lock:
            items = [copy.deepcopy(fw) for fw in sorted(self._state["firewalls"].values(),
                                                        key=lambda f: (f["created_at"], f["id"]))]
        return self._page(req, "firewalls", items)

    def _create_firewall(self, req: ApiRequest) -> ApiResponse:
        body = self._body(req, status=400)
        with self._lock:
            fields = self._firewall_fields(body)
            fw = {"id": str(uuid.uuid4()), "status": "succeeded", "created_at": _now_iso(), "pending_changes": [],
                  **fields}
            self._state["firewalls"][fw["id"]] = fw
            self._save()
            return ApiResponse(202, {"firewall": copy.deepcopy(fw)})

    def _get_firewall(self, req: ApiRequest, fw: str) -> ApiResponse:
        with self._lock:
            return ApiResponse(200, {"firewall": copy.deepcopy(self._firewall(fw))})

    def _update_firewall(self, req: ApiRequest, fw: str) -> ApiResponse:
        body = self._body(req, status=400)
        with self._lock:
            current = self._firewall(fw)
            current.update(self._firewall_fields(body))
            self._save()
            return ApiResponse(200, {"firewall": copy.deepcopy(current)})

    def _delete_firewall(self, req: ApiRequest, fw: str) -> ApiResponse:
        with self._lock:
            self._firewall(fw)
            del self._state["firewalls"][fw]
            self._save()
        return ApiResponse(204)

    def _firewall_members(self, req: ApiRequest, fw: str, key: str, add: bool) -> ApiResponse:
        body = self._body(req, status=400)
        values = body.get(key)
        kind = int if key == "droplet_ids" else str
        if not isinstance(values, list) or not values or not all(isinstance(v, kind) for v in values):
            raise _bad_request(f"{key} must be a non-empty list.")
        with self._lock:
            current = self._firewall(fw)
            if add:
                if key == "droplet_ids" and any(str(v) not in self._state["droplets"] for v in values):
                    raise _bad_request("A droplet could not be found.")
                if key == "tags":
                    for t in values:
                        self._ensure_tag(t)
                current[key] = list(dict.fromkeys([*current[key], *values]))
            else:
                current[key] = [v for v in current[key] if v not in values]
            self._save()
        return ApiResponse(204)

    def _firewall_add_tags(self, req: ApiRequest, fw: str) -> ApiResponse:
        return self._firewall_members(req, fw, "tags", add=True)

    def _firewall_remove_tags(self, req: ApiRequest, fw: str) -> ApiResponse:
        return self._firewall_members(req, fw, "tags", add=False)

    def _firewall_add_droplets(self, req: ApiRequest, fw: str) -> ApiResponse:
        return self._firewall_members(req, fw, "droplet_ids", add=True)

    def _firewall_remove_droplets(self, req: ApiRequest, fw: str) -> ApiResponse:
        return self._firewall_members(req, fw, "droplet_ids", add=False)

    # -- VPCs --

    def _new_vpc(self, name: str, region: str, ip_range: str | None, description: str, default: bool) -> Json:
        if ip_range is None:
            used = {v["ip_range"] for v in self._state["vpcs"].values()}
            ip_range = next(f"10.{n}.0.0/20" for n in range(100, 256) if f"10.{n}.0.0/20" not in used)
        vpc_id = str(uuid.uuid4())
        vpc = {"id": vpc_id, "urn": f"do:vpc:{vpc_id}", "name": name, "description": description, "region": region,
               "ip_range": ip_range, "default": default, "created_at": _now_iso()}
        self._state["vpcs"][vpc_id] = vpc
        return vpc

    def _list_vpcs(self, req: ApiRequest) -> ApiResponse:
        with self._lock:
            items = [copy.deepcopy(v) for v in sorted(self._state["vpcs"].values(),
                                                      key=lambda v: (v["created_at"], v["id"]))]
        return self._page(req, "vpcs", items)

    def _create_vpc(self, req: ApiRequest) -> ApiResponse:
        body = self._body(req)
        name, region = body.get("name"), body.get("region")
        ip_range, description = body.get("ip_range"), body.get("description", "")
        if not isinstance(name, str) or not VPC_NAME_RE.match(name):
            raise _unprocessable("name is required: letters, digits, '-' and '.'.")
        if not isinstance(region, str) or region not in REGIONS:
            raise _unprocessable(f"Region {region!r} is not available.")
        if not isinstance(description, str):
            raise _unprocessable("description must be a string.")
        if ip_range is not None:
            try:
                if not isinstance(ip_range, str):
                    raise ValueError
                ipaddress.ip_network(ip_range)
            except ValueError:
                raise _unprocessable(f"ip_range {ip_range!r} is not a CIDR block.") from None
        with self._lock:
            if any(v["name"] == name for v in self._state["vpcs"].values()):
                raise _unprocessable(f"A VPC named {name} already exists.")
            vpc = self._new_vpc(name, region, ip_range, description, default=False)
            self._save()
            return ApiResponse(201, {"vpc": copy.deepcopy(vpc)})

    def _get_vpc(self, req: ApiRequest, vpc: str) -> ApiResponse:
        with self._lock:
            found = self._state["vpcs"].get(vpc)
            if found is None:
                raise _not_found()
            return ApiResponse(200, {"vpc": copy.deepcopy(found)})

    # -- catalog --

    def _list_regions(self, req: ApiRequest) -> ApiResponse:
        return self._page(req, "regions", [region_object(slug) for slug in REGIONS])

    def _list_sizes(self, req: ApiRequest) -> ApiResponse:
        return self._page(req, "sizes", [size_object(slug) for slug in SIZES])

    def _list_images(self, req: ApiRequest) -> ApiResponse:
        kind, private = req.query.get("type"), req.query.get("private")
        items = []
        for image_id, (_, _, _, image_type, public) in IMAGES.items():
            if kind == "distribution" and image_type != "base":
                continue
            if kind == "application":
                continue
            if private == "true" and public:
                continue
            items.append(image_object(image_id))
        return self._page(req, "images", items)

    def _get_image(self, req: ApiRequest, image: str) -> ApiResponse:
        image_id = find_image(image)
        if image_id is None:
            raise _not_found()
        return ApiResponse(200, {"image": image_object(image_id)})

    # -- /_sandbox: faults and the request log --

    def _faults_json(self) -> Json:
        with self._lock:
            return {
                "latency_ms": self._faults.latency_ms,
                "fail": [r.to_json() for r in self._faults.fail],
                "action_errors": sorted(self._faults.action_errors),
                "boot_delay_s": self._faults.boot_delay_s,
                "ratelimit": {"limit": self._bucket.limit, "refill_per_s": self._bucket.refill_per_s,
                              "remaining": math.floor(self._bucket.tokens)},
            }

    def _get_faults(self, req: ApiRequest) -> ApiResponse:
        return ApiResponse(200, self._faults_json())

    def _post_faults(self, req: ApiRequest) -> ApiResponse:
        body = self._body(req)
        self.set_faults(body)
        return ApiResponse(200, self._faults_json())

    def _delete_faults(self, req: ApiRequest) -> ApiResponse:
        with self._lock:
            self._faults = Faults()
            self._bucket = TokenBucket(self.options.ratelimit_limit, self.options.ratelimit_refill_per_s)
        return ApiResponse(200, self._faults_json())

    def set_faults(self, body: Mapping[str, Any]) -> None:
        """Merge a faults document (see `_post_faults`); a key given replaces that key. 422 naming a bad key."""
        unknown = set(body) - {"latency_ms", "fail", "action_errors", "boot_delay_s", "ratelimit"}
        if unknown:
            raise _unprocessable(f"unknown fault keys: {', '.join(sorted(unknown))}")

        def number(key: str, value: Any) -> float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise _unprocessable(f"{key} must be a number >= 0")
            return float(value)

        rules: list[FailRule] | None = None
        if "fail" in body:
            if not isinstance(body["fail"], list):
                raise _unprocessable("fail must be a list of rules")
            rules = []
            for i, raw in enumerate(body["fail"]):
                if not isinstance(raw, dict):
                    raise _unprocessable(f"fail[{i}] must be an object")
                extra = set(raw) - {"method", "path_regex", "status", "count", "retry_after_s", "after_commit",
                                    "message"}
                if extra:
                    raise _unprocessable(f"fail[{i}]: unknown keys {', '.join(sorted(extra))}")
                status = raw.get("status")
                if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599:
                    raise _unprocessable(f"fail[{i}].status must be an HTTP error status (400-599)")
                try:
                    path_regex = str(raw.get("path_regex", ".*"))
                    re.compile(path_regex)
                except re.error as e:
                    raise _unprocessable(f"fail[{i}].path_regex: {e}") from None
                count = raw.get("count", 1)
                if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
                    raise _unprocessable(f"fail[{i}].count must be an integer >= 0, or null for always")
                retry_after = raw.get("retry_after_s")
                method = raw.get("method")
                if method is not None and not isinstance(method, str):
                    raise _unprocessable(f"fail[{i}].method must be a string")
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
            raise _unprocessable("action_errors must be a list of action types")
        ratelimit = body.get("ratelimit")
        if ratelimit is not None:
            if not isinstance(ratelimit, dict) or set(ratelimit) - {"limit", "refill_per_s", "remaining"}:
                raise _unprocessable("ratelimit must be an object with limit, refill_per_s and/or remaining")
            for key in ("limit", "remaining"):
                v = ratelimit.get(key)
                if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                    raise _unprocessable(f"ratelimit.{key} must be an integer >= 0")
        latency = number("latency_ms", body["latency_ms"]) if "latency_ms" in body else None
        boot_delay = number("boot_delay_s", body["boot_delay_s"]) if "boot_delay_s" in body else None
        refill = None
        if ratelimit is not None and ratelimit.get("refill_per_s") is not None:
            refill = number("ratelimit.refill_per_s", ratelimit["refill_per_s"])
        with self._lock:
            if latency is not None:
                self._faults.latency_ms = latency
            if rules is not None:
                self._faults.fail = rules
            if action_errors is not None:
                self._faults.action_errors = set(action_errors)
            if boot_delay is not None:
                self._faults.boot_delay_s = boot_delay
            if ratelimit is not None:
                self._bucket.set(ratelimit.get("limit"), refill, ratelimit.get("remaining"))
        log.info("faults.set", keys=sorted(body))

    def _get_requests(self, req: ApiRequest) -> ApiResponse:
        with self._lock:
            return ApiResponse(200, {"requests": list(self._requests)})

    def _delete_requests(self, req: ApiRequest) -> ApiResponse:
        with self._lock:
            self._requests.clear()
        return ApiResponse(204)

    def _get_sandbox_droplets(self, req: ApiRequest) -> ApiResponse:
        """Where each droplet lives on this machine, and its processes: what `sandbox status` shows."""
        with self._lock:
            rows = [copy.deepcopy(d) for d in sorted(self._state["droplets"].values(), key=lambda d: d["id"])]
        out = []
        for d in rows:
            ddir = self._droplet_dir(d)
            out.append({"id": d["id"], "name": d["name"], "status": d["status"], "address": d["address"],
                        "tags": d["tags"], "dir": str(ddir), "root": str(ddir / "root"),
                        "pids": sorted(p.pid for p in owned_processes(ddir / "root", d["id"]))})
        return ApiResponse(200, {"droplets": out})


# -- HTTP ----------------------------------------------------------------------------------------------


def make_asgi(api: DoApi) -> ASGIApp:
    """The ASGI app: reads the request, waits the injected latency, hands it to `api.handle` in a thread."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        body = await request.body()
        req = ApiRequest(method=request.method, path=request.url.path, query=dict(request.query_params),
                         authorization=request.headers.get("authorization"), body=body)
        if not req.path.startswith("/_sandbox/"):
            latency = api.latency_s()
            if latency > 0:
                await asyncio.sleep(latency)
        resp = await run_in_threadpool(api.handle, req)
        content = b"" if resp.body is None else json.dumps(resp.body).encode()
        media_type = "application/json; charset=utf-8" if resp.body is not None else None
        await Response(content, status_code=resp.status, headers=resp.headers, media_type=media_type)(
            scope, receive, send)

    return app


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(False)
    return sock


def _server(api: DoApi, tls: TlsFiles) -> uvicorn.Server:
    config = uvicorn.Config(make_asgi(api), ssl_certfile=str(tls.cert_path), ssl_keyfile=str(tls.key_path),
                            log_level="warning", access_log=False, lifespan="off", server_header=False,
                            # typed int, used as asyncio.wait_for's timeout: a float is fine
                            timeout_graceful_shutdown=api.options.shutdown_grace_s)  # type: ignore[arg-type]
    return uvicorn.Server(config)


@dataclass
class DoApiHandle:
    """A running in-process API: `url`, `ca_path` for clients, `stop()` (droplets' processes run on)."""

    url: str
    ca_path: Path
    api: DoApi
    _server: uvicorn.Server
    _thread: threading.Thread

    def stop(self, timeout_s: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout_s)
        self.api.close()


def start_doapi(sandbox_dir: Path, host: str = "127.0.0.1", port: int = 0, token: str = "",
                options: DoApiOptions | None = None, timeout_s: float = 10.0) -> DoApiHandle:
    """Start the API in a thread of this process, on `host:port` (0: any free port), state under `<dir>/doapi/`."""
    sock = _listen(host, port)
    url = f"https://{host}:{sock.getsockname()[1]}"
    try:
        api = DoApi(sandbox_dir, token, url, options)
        tls = ensure_tls(api.state_dir / "tls", host)
        server = _server(api, tls)
    except BaseException:
        sock.close()
        raise
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="doapi-server")
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"the local DigitalOcean API did not start on {url}")
        time.sleep(0.01)
    api.resume()
    return DoApiHandle(url, tls.ca_path, api, server, thread)


def main(argv: Sequence[str] | None = None) -> int:
    from protocol.logs import configure_logging

    parser = argparse.ArgumentParser(prog="python -m sandbox.doapi", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, type=Path, help="the sandbox dir (state under DIR/doapi/)")
    parser.add_argument("--host", default="127.0.0.1", help="a loopback address to listen on")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--token-file", required=True, type=Path, help="file holding the bearer token")
    parser.add_argument("--boot-timeout-s", type=float, default=BOOT_TIMEOUT_S)
    parser.add_argument("--shutdown-timeout-s", type=float, default=SHUTDOWN_TIMEOUT_S)
    parser.add_argument("--ratelimit-limit", type=int, default=RATELIMIT_LIMIT)
    parser.add_argument("--ratelimit-refill-per-s", type=float, default=RATELIMIT_LIMIT / 3600)
    parser.add_argument("--log-format", choices=("json", "console"), default="console")
    args = parser.parse_args(argv)
    configure_logging(args.log_format)
    if not ipaddress.ip_address(args.host).is_loopback:
        parser.error("--host must be a loopback address (127.0.0.0/8): the sandbox never listens elsewhere")
    try:
        token = args.token_file.read_text().strip()
    except OSError as e:
        parser.error(f"cannot read --token-file: {e.strerror}")
    if not token:
        parser.error("--token-file is empty")
    options = DoApiOptions(boot_timeout_s=args.boot_timeout_s, shutdown_timeout_s=args.shutdown_timeout_s,
                           ratelimit_limit=args.ratelimit_limit, ratelimit_refill_per_s=args.ratelimit_refill_per_s)
    sock = _listen(args.host, args.port)
    url = f"https://{args.host}:{sock.getsockname()[1]}"
    api = DoApi(args.dir, token, url, options)
    tls = ensure_tls(api.state_dir / "tls", args.host)
    server = _server(api, tls)

    def announce() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.02)
        if server.started:
            (api.state_dir / "endpoint.json").write_text(json.dumps(
                {"url": url, "ca_path": str(tls.ca_path), "pid": os.getpid()}, indent=2))
            api.resume()
            log.info("doapi.started", url=url, ca_path=str(tls.ca_path), sandbox_dir=str(api.sandbox_dir))
            print(url, flush=True)

    threading.Thread(target=announce, daemon=True, name="doapi-announce").start()
    # uvicorn re-raises the signal that stopped it once it is done; with these handlers that is a no-op, so
    # the state is closed properly below.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _sig, _frame: None)
    server.run(sockets=[sock])  # SIGTERM/SIGINT: stop serving; the droplets' processes run on
    api.close()
    with contextlib.suppress(OSError):
        (api.state_dir / "endpoint.json").unlink()
    log.info("doapi.stopped", url=url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
