"""redwarden controller: holds the fleet view, checks it, alerts and heals."""

from agent import __version__

__all__ = ["__version__"]
