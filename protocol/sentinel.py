"""The Sentinel settings a cluster runs with, and their defaults, declared once for every program.

Layer: protocol (pure). The agent's bootstrap writes them into sentinel.conf, the controller creates and
replaces droplets with them, and both read their defaults from here, so the two sides can never disagree
on what "the default down-after" is.
"""

from __future__ import annotations

MASTER_NAME = "mymaster"
DOWN_AFTER_MS = 5000  # sentinel down-after-milliseconds
FAILOVER_TIMEOUT_MS = 60000  # sentinel failover-timeout
PARALLEL_SYNCS = 1
QUORUM = 2  # for the usual three nodes; see majority_quorum
MIN_REPLICAS_TO_WRITE = 1
MIN_REPLICAS_MAX_LAG_S = 10
REDIS_PORT = 6379
SENTINEL_PORT = 26379


def majority_quorum(nodes: int) -> int:
    """The quorum a cluster of `nodes` Sentinels is created with: a strict majority."""
    return nodes // 2 + 1
