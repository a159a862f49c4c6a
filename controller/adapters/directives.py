"""Directives waiting for an agent: sent with every push's response until the agent acknowledges them.

Layer: adapter (in-memory state shared by the API and the executor). The agent executes each id once,
so re-sending until acknowledged is safe; an acknowledgement closes the directive and is handed to
whoever waits for it (the executor's audit log). Each goes on the wire signed with its node's own key
(`protocol.directives.signed_wire`), which the agent verifies before anything runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from protocol.directives import Directive, signed_wire
from protocol.report import DirectiveAck

AckHandler = Callable[[str, str, DirectiveAck], None]  # (cluster, node, ack)


class KeySource(Protocol):
    def key(self, cluster: str, node: str) -> bytes | None: ...


class DirectiveQueue:
    def __init__(self, keys: KeySource) -> None:
        self._keys = keys
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], dict[str, Directive]] = {}
        self._handlers: list[AckHandler] = []

    def on_ack(self, handler: AckHandler) -> None:
        self._handlers.append(handler)

    def send(self, cluster: str, node: str, directive: Directive) -> None:
        with self._lock:
            self._pending.setdefault((cluster, node), {})[directive.id] = directive

    def for_node(self, cluster: str, node: str) -> list[dict[str, Any]]:
        """What goes on the wire to this node: its unacknowledged directives."""
        key = self._keys.key(cluster, node)
        if key is None:
            return []  # a node without a key cannot verify anything: nothing is sent
        with self._lock:
            pending = list(self._pending.get((cluster, node), {}).values())
        return [signed_wire(d, key) for d in pending]

    def acknowledge(self, cluster: str, node: str, acks: tuple[DirectiveAck, ...]) -> None:
        if not acks:
            return
        closed = []
        with self._lock:
            waiting = self._pending.get((cluster, node), {})
            for ack in acks:
                if waiting.pop(ack.id, None) is not None:
                    closed.append(ack)
        for ack in closed:
            for handler in self._handlers:
                handler(cluster, node, ack)
