"""redwarden agent: collects the health of the local Redis, Sentinel and host and pushes it to the controller."""

__version__ = "0.1.0"
