"""The thresholds the health checks and the incident tracker decide with.

Layer: pure core (a validated value type, no I/O). Units are in the names. `confirm_s` says how long a
finding must persist before it opens an incident, `clear_s` how long it must be gone before the incident
closes (hysteresis); the checks themselves ignore both, the incident tracker reads them through
`confirm_after_s(code)` and `clear_after_s(code)`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from controller.core.findings import Code

MIB = 1024 * 1024

# Seconds a finding must persist before it counts. 0: act on first sight, because the condition is
# already the result of several vantage points agreeing (o_down), or of elapsed time (AGENT_SILENT).
# Conditions that Sentinel itself resolves within seconds (a returning old master, a replica resyncing)
# get longer windows so a normal failover does not page anybody.
DEFAULT_CONFIRM_S: Mapping[Code, float] = MappingProxyType(
    {
        Code.MASTER_DOWN: 0.0,
        Code.AGENT_SILENT: 0.0,
        Code.FAILOVER_IN_PROGRESS: 0.0,
        Code.SPLIT_BRAIN: 5.0,
        Code.SENTINEL_DISAGREEMENT: 5.0,
        Code.SENTINEL_COUNT_MISMATCH: 10.0,  # peers are discovered through hello messages every 2 s
        Code.SENTINEL_ISOLATED: 5.0,  # a restarted or reset Sentinel sees its peers again within a hello or two
        Code.REPLICA_LINK_DOWN: 5.0,
        Code.REPLICA_LAG_HIGH: 30.0,  # short spikes under a write burst are normal
        Code.REDUNDANCY_DEGRADED: 5.0,
        Code.MEMORY_PRESSURE: 60.0,
        Code.DISK_PRESSURE: 60.0,
        Code.CONFIG_RISK: 10.0,
    }
)
DEFAULT_CLEAR_S: Mapping[Code, float] = MappingProxyType(
    {
        Code.MASTER_DOWN: 10.0,
        Code.SPLIT_BRAIN: 30.0,
        Code.QUORUM_LOST: 10.0,
        Code.REPLICA_LAG_HIGH: 30.0,
        Code.MEMORY_PRESSURE: 120.0,
        Code.DISK_PRESSURE: 120.0,
    }
)


def _frozen_windows(name: str, windows: Mapping[Code, float]) -> Mapping[Code, float]:
    out: dict[Code, float] = {}
    for raw_code, seconds in windows.items():
        try:
            code = Code(raw_code)
        except ValueError:
            raise ValueError(f"{name}: unknown finding code {raw_code!r}") from None
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not math.isfinite(seconds):
            raise ValueError(f"{name}[{code.value}] must be a finite number of seconds, got {seconds!r}")
        if seconds < 0:
            raise ValueError(f"{name}[{code.value}] must be >= 0, got {seconds!r}")
        out[code] = float(seconds)
    return MappingProxyType(out)


@dataclass(frozen=True, slots=True)
class Policy:
    """Health-check thresholds. The defaults suit a 3-node cluster with quorum 2 reporting every second."""

    replica_lag_high_bytes: int = 10 * MIB
    replica_lag_high_s: float = 10.0  # replica's master_last_io_s, or the master's view of the replica's lag_s
    # How many in-sync replicas the cluster should have; None: every other expected node (expected_nodes - 1).
    desired_replicas: int | None = None
    agent_silent_intervals: float = 3.0  # a report older than this many report intervals is silence
    memory_pressure_ratio: float = 0.9  # of maxmemory, or of the host's memory when maxmemory is 0
    disk_free_min_ratio: float = 0.1
    require_min_replicas_to_write: bool = True
    min_sentinels: int = 3
    # The quorum to assume when no reachable Sentinel reports one; None: a majority of expected Sentinels.
    fallback_quorum: int | None = None
    confirm_s: Mapping[Code, float] = field(default_factory=lambda: DEFAULT_CONFIRM_S, hash=False)
    clear_s: Mapping[Code, float] = field(default_factory=lambda: DEFAULT_CLEAR_S, hash=False)
    default_confirm_s: float = 2.0  # for codes not in confirm_s: two report intervals at the default 1 s
    default_clear_s: float = 5.0

    def __post_init__(self) -> None:
        if self.replica_lag_high_bytes < 0:
            raise ValueError(f"replica_lag_high_bytes must be >= 0, got {self.replica_lag_high_bytes}")
        if not self.replica_lag_high_s > 0:
            raise ValueError(f"replica_lag_high_s must be > 0, got {self.replica_lag_high_s}")
        if self.desired_replicas is not None and self.desired_replicas < 0:
            raise ValueError(f"desired_replicas must be >= 0 or None, got {self.desired_replicas}")
        if not self.agent_silent_intervals >= 1:
            raise ValueError(f"agent_silent_intervals must be >= 1, got {self.agent_silent_intervals}")
        if not 0 < self.memory_pressure_ratio <= 1:
            raise ValueError(f"memory_pressure_ratio must be in (0, 1], got {self.memory_pressure_ratio}")
        if not 0 <= self.disk_free_min_ratio < 1:
            raise ValueError(f"disk_free_min_ratio must be in [0, 1), got {self.disk_free_min_ratio}")
        if self.min_sentinels < 1:
            raise ValueError(f"min_sentinels must be >= 1, got {self.min_sentinels}")
        if self.fallback_quorum is not None and self.fallback_quorum < 1:
            raise ValueError(f"fallback_quorum must be >= 1 or None, got {self.fallback_quorum}")
        for name in ("default_confirm_s", "default_clear_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        # Copy into read-only mappings: a caller's dict mutated later must not change a frozen policy.
        object.__setattr__(self, "confirm_s", _frozen_windows("confirm_s", self.confirm_s))
        object.__setattr__(self, "clear_s", _frozen_windows("clear_s", self.clear_s))

    def confirm_after_s(self, code: Code) -> float:
        """How long `code` must persist before it opens an incident."""
        return self.confirm_s.get(code, self.default_confirm_s)

    def clear_after_s(self, code: Code) -> float:
        """How long `code` must be absent before its incident closes."""
        return self.clear_s.get(code, self.default_clear_s)

    def desired_replicas_for(self, expected_nodes: int) -> int:
        return self.desired_replicas if self.desired_replicas is not None else max(0, expected_nodes - 1)

    def agent_silent_after_s(self, report_interval_s: float) -> float:
        return self.agent_silent_intervals * report_interval_s
