"""redwarden console: the operator's `redwarden` command; every command but `controller run` is an HTTP
client of the controller (status, history, cluster create, pause/resume/ack, drill).

Layer: console (above the controller; imports `protocol` and, for `controller run` only, the controller's
service). The sandbox adds its commands as a plugin (entry point group `redwarden.cli`), so the console
never imports it.
"""

from protocol import __version__

__all__ = ["__version__"]
