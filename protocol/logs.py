"""structlog set-up, once per program: JSON lines for services, a console renderer for people.

Layer: protocol (shared set-up, used by every program: the agent, the controller, the console, the sandbox),
so that a line has one shape wherever it comes from: the event's keys, then `event`, `level`, an ISO UTC
`timestamp` ("...Z") and, when an exception is being handled (`log.exception`), `exception` (its traceback).
Event names are dotted and past tense (`report.pushed`); context is bound once; never a secret in a line.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

__all__ = ["LEVELS", "configure_logging"]

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR,
          "critical": logging.CRITICAL}


def level_number(name: str) -> int:
    """The stdlib number of a level name ("warn" is "warning"); ValueError naming the choices otherwise."""
    key = {"warn": "warning"}.get(name.lower(), name.lower())
    if key not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {name!r}")
    return LEVELS[key]


def configure_logging(fmt: str = "json", level: str = "info", stream: TextIO | None = None,
                      libraries_level: str | None = None) -> None:
    """`fmt` "json" (services) or "console" (people); events below `level` are dropped; lines go to `stream`
    (default: stderr). With `libraries_level`, the libraries' own records (stdlib `logging`: APScheduler,
    urllib3) at or above it are written as the same lines and the rest dropped; without it stdlib logging is
    left as it is."""
    if fmt not in ("json", "console"):
        raise ValueError(f"log format must be 'json' or 'console', not {fmt!r}")
    out = stream or sys.stderr
    renderer: structlog.types.Processor
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    shared: list[structlog.types.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level_number(level)),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )
    if libraries_level is not None:
        handler = logging.StreamHandler(out)
        handler.setFormatter(structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        ))
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(level_number(libraries_level))
