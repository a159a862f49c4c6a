"""Cloud-config: what a droplet of the local DigitalOcean API runs on its first boot.

Layer: sandbox. `parse_user_data` reads the subset of cloud-init this stand-in runs (`write_files`, then
`runcmd`; or a `#!` script) into a `CloudConfig`, listing what it ignored; `rooted` maps a path inside the
droplet to one under the droplet's root directory.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gzip
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any


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
