"""Commands that other packages add to `redwarden`, found through the entry point group `redwarden.cli`.

Layer: console. The sandbox sits on top of the console and registers itself here (see `sandbox.cli`), so
`redwarden sandbox ...` and `redwarden drill --sandbox DIR` work where it is installed, and the console
never imports it: on a controller installed from its package the plugin is simply absent.
"""

from __future__ import annotations

import argparse
from importlib.metadata import entry_points
from typing import Any, Protocol

from console.drill.targets import Endpoints, FaultTarget

GROUP = "redwarden.cli"


class CliPlugin(Protocol):
    errors: tuple[type[Exception], ...]  # what its commands raise for a person to read (exit code 1)

    def add_commands(self, sub: Any) -> None: ...

    def drill_target(self, args: argparse.Namespace) -> tuple[FaultTarget, Endpoints]: ...


def load_plugins() -> list[CliPlugin]:
    """The installed plugins; one whose package is missing (an entry point left behind) is skipped."""
    found: list[CliPlugin] = []
    for ep in entry_points(group=GROUP):
        try:
            found.append(ep.load())
        except ImportError:
            continue
    return found
