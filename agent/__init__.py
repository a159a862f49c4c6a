"""redwarden agent: collects the health of the local Redis, Sentinel and host and pushes it to the controller.

Layer: agent (above `protocol`; it imports nothing from the controller, the console or the sandbox).
"""

from protocol import __version__

__all__ = ["__version__"]
