"""The agent's structured log: one JSON line per event on stderr, or a readable line for people.

Layer: adapter. It writes the lines `controller.logs` makes structlog write for the controller: the event's
keys, then `event`, `level` and an ISO UTC `timestamp`, and `exception` (the traceback) when there is one;
with the same calls (`log.info("push.failed", seq=3, error=...)`). It does so without structlog, whose
package imports `structlog.stdlib` and with it asyncio: memory the agent does not spend (issue #9).
Configured once per program (`configure`); loggers made before that follow the configuration. Event names
are dotted and past tense; never pass a secret.
"""

from __future__ import annotations

import json
import sys
import threading
import traceback
from datetime import datetime, timezone
from typing import TextIO

__all__ = ["Logger", "configure", "get_logger"]

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


class _Config:
    fmt = "json"
    min_level = LEVELS["info"]
    stream: TextIO | None = None  # None: sys.stderr at the time of writing (tests swap it)
    lock = threading.Lock()


def configure(fmt: str = "json", level: str = "info", stream: TextIO | None = None) -> None:
    """`fmt` "json" (services) or "console" (people); events below `level` are dropped."""
    if fmt not in ("json", "console"):
        raise ValueError(f"log format must be 'json' or 'console', not {fmt!r}")
    name = {"warn": "warning"}.get(level.lower(), level.lower())
    if name not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
    _Config.fmt = fmt
    _Config.min_level = LEVELS[name]
    _Config.stream = stream


def _timestamp() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def render_json(event: str, level: str, fields: dict[str, object], exception: str | None) -> str:
    line: dict[str, object] = {**fields, "event": event, "level": level, "timestamp": _timestamp()}
    if exception is not None:
        line["exception"] = exception
    return json.dumps(line, default=repr)


def render_console(event: str, level: str, fields: dict[str, object], exception: str | None) -> str:
    pairs = " ".join(f"{k}={v if isinstance(v, str) else repr(v)}" for k, v in fields.items())
    text = f"{_timestamp()} [{level:<8}] {event:<24} {pairs}".rstrip()
    return text + "\n" + exception.rstrip("\n") if exception is not None else text


class Logger:
    """Write one line per call at or above the configured level. Thread-safe (one write per line)."""

    def __init__(self, name: str) -> None:
        self.name = name  # kept for the reader of the code; structlog's lines do not carry it either

    def debug(self, event: str, **fields: object) -> None:
        self._log(event, "debug", fields)

    def info(self, event: str, **fields: object) -> None:
        self._log(event, "info", fields)

    def warning(self, event: str, **fields: object) -> None:
        self._log(event, "warning", fields)

    def error(self, event: str, **fields: object) -> None:
        self._log(event, "error", fields)

    def exception(self, event: str, **fields: object) -> None:
        """An error with the traceback of the exception being handled."""
        self._log(event, "error", fields, exception=traceback.format_exc())

    def _log(self, event: str, level: str, fields: dict[str, object], exception: str | None = None) -> None:
        if LEVELS[level] < _Config.min_level:
            return
        render = render_json if _Config.fmt == "json" else render_console
        line = render(event, level, fields, exception) + "\n"
        stream = _Config.stream or sys.stderr
        with _Config.lock:
            stream.write(line)
            stream.flush()


def get_logger(name: str) -> Logger:
    return Logger(name)
