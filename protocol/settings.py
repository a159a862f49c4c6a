"""Typed settings from a TOML file, overridable by environment variables; shared by agent and controller.

Layer: adapter (reads files and the environment). A settings class is a frozen dataclass whose fields
have simple types (str, int, float, bool, optional of those, or a dict of nested settings classes).
Every problem is raised as a `ConfigError` that names the offending key, so an operator can fix the
file without reading code. Fields ending in `_file` name files whose content is a secret: the loader
never reads or prints them; the program reads them when it needs them (see `read_secret`).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


class ConfigError(Exception):
    """A configuration problem, with the key it concerns in the message."""


T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(key: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or value == "":
            return None
        return _convert(key, args[0], value)
    if origin is dict:
        _, value_type = typing.get_args(hint)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a table, got {type(value).__name__}")
        return {str(k): _build(value_type, v, f"{key}.{k}") for k, v in value.items()}
    if origin in (list, tuple):
        (item_type, *_) = typing.get_args(hint)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        return tuple(_convert(f"{key}[{i}]", item_type, v) for i, v in enumerate(value))
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if hint is str:
        if not isinstance(value, str | int | float):
            raise ConfigError(f"{key}: expected a string, got {type(value).__name__}")
        return str(value)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    raise ConfigError(f"{key}: unsupported setting type {hint!r}")  # pragma: no cover


def _build(cls: Any, data: Any, prefix: str = "") -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'settings'}: expected a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown setting {where}{unknown[0]} (known: {', '.join(sorted(fields))})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in data:
            kwargs[name] = _convert(key, hints[name], data[name])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required setting {key}")
    try:
        obj = cls(**kwargs)
    except ValueError as e:  # __post_init__ cross-field checks
        raise ConfigError(f"{prefix + ': ' if prefix else ''}{e}") from None
    return obj


def load_settings(
    cls: type[T], path: str | Path | None, env_prefix: str, environ: Mapping[str, str] | None = None
) -> T:
    """Read `path` (TOML; optional), apply `<env_prefix><FIELD>` overrides for top-level fields, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            with p.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {p} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {p} is not valid TOML: {e}") from None
    env = os.environ if environ is None else environ
    assert dataclasses.is_dataclass(cls)
    for f in dataclasses.fields(cls):
        env_key = env_prefix + f.name.upper()
        if env_key in env:
            data[f.name] = env[env_key]
    return typing.cast(T, _build(cls, data))


def secret_path(path: str) -> Path:
    """Where a secret file named in the settings is: a relative name is a systemd credential (LoadCredential=)
    when the program runs with one, else a path as given."""
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    p = Path(path)
    return Path(cred_dir) / p if not p.is_absolute() and cred_dir else p


def store_private(path: Path, text: str) -> None:
    """Write a secret file (mode 0600) in place of the old one at once: a crash leaves the old or the new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def read_secret(path: str | None, what: str) -> str | None:
    """Read a secret from a file (trailing newline stripped); the error names the setting, not the value."""
    if not path:
        return None
    p = secret_path(path)  # systemd LoadCredential= for relative names
    try:
        return p.read_text().rstrip("\r\n")
    except OSError as e:
        raise ConfigError(f"{what}: cannot read {p}: {e.strerror}") from None
