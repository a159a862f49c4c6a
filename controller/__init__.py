"""redwarden controller: holds the fleet view, checks it, alerts and heals.

Layer: controller (above `protocol`; it imports nothing from the agent, the console or the sandbox).
Its rooms, whose imports point one way (core < config < adapters < app):

- `core/`: the pure decisions: the view of a cluster, findings and checks, incidents, the heal planner;
- `config.py`, `notify_config.py`: the controller's typed settings;
- `adapters/`: the HTTP API, storage (one SQLite base), the outbox and notifiers, the cloud, Redis
  operations, the directive queue, user_data;
- `app/`: what wires them into a running service: the watch loop, the healer, the executor, the
  provisioner, the service.
"""

from protocol import __version__

__all__ = ["__version__"]
