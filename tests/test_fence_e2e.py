"""Scenario (issue 12): the master is cut off from its replicas and their Sentinels, the controller still
reaches every node. The majority promotes a replica; the controller fences the old master at once (a
`Fence` in the actions log), so it accepts no write after its fence, no write acknowledged with WAIT 1 is
lost, and the cluster is whole again once the network mends.

Layer: end-to-end, on a sandbox in its own network namespace (root, `ip`, `nft`; skipped otherwise).
Figures (the split-brain window, the writes lost) are printed by bench/bench_partition.py, not asserted.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import redwarden
from tests.test_fault_campaign import netns_sandbox  # noqa: F401  (the fixture: a sandbox up --netns)


def test_a_partitioned_old_master_is_fenced_and_accepts_nothing_after_it(netns_sandbox: Path) -> None:  # noqa: F811
    proc = redwarden("drill", "sandbox", "--fault", "partition-master", "--sandbox", str(netns_sandbox),
                     "--sentinel-order", "controller", "--json", check=False, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert not result["timed_out"], result["notes"]
    old = result["node"]
    fences = [a for a in result["actions"] if a["kind"] == "Fence"]
    assert fences, f"no fence in {result['actions']}"
    assert all(a["node"] == old and a["status"] == "succeeded" for a in fences), fences
    new_master = next(s["detail"] for s in result["steps"] if s["name"] == "new_master")
    assert old not in (new_master or ""), "the node the majority named was fenced"
    assert result["writes_lost"] == 0, "a write acknowledged by a replica was lost"
    # the old master accepted nothing after its fence (one write may have been in flight when it began)
    last_lost = result["writes_plain_lost_last_s"]
    if last_lost is not None:
        assert last_lost <= fences[0]["at_s"] + 0.5, (last_lost, fences[0])
    assert result["old_master_writes_lost"] == result["writes_plain_lost"]
    assert result["split_brain_s"] is not None
