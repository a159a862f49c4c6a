"""The walking skeleton end to end: real redis-server and redis-sentinel -> agents -> controller -> status."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
import requests

from protocol.signing import HEADER_CLUSTER, HEADER_NODE, HEADER_SIGNATURE, HEADER_TIMESTAMP, sign_report
from tests.conftest import Sandbox, redwarden, start_sandbox
from tests.helpers import wait_until

pytestmark = pytest.mark.sandbox


def test_healthy_cluster_shows_one_master_two_replicas_three_agreeing_sentinels(sandbox: Sandbox) -> None:
    cluster = json.loads(redwarden("status", "--json", *sandbox.conn_args()).stdout)["clusters"][0]
    roles = sorted(n["role"] for n in cluster["nodes"])
    assert roles == ["master", "replica", "replica"]
    master = next(n for n in cluster["nodes"] if n["role"] == "master")
    assert cluster["master"] == master["address"]
    assert cluster["sentinels"] == {**cluster["sentinels"], "expected": 3, "reachable": 3, "agree": True}
    for n in cluster["nodes"]:
        assert n["redis_up"] and n["sentinel_up"]
        assert n["sentinel_master"] == master["address"]
        assert set(n) >= {"name", "address", "role", "redis_up", "sentinel_up", "lag_bytes", "report_age_s"}
    assert all(isinstance(n["lag_bytes"], int) for n in cluster["nodes"] if n["role"] == "replica")


def test_status_table_is_readable(sandbox: Sandbox) -> None:
    out = redwarden("status", *sandbox.conn_args()).stdout
    assert "cluster sandbox: master 127.0.0." in out
    assert "sentinels 3/3 reachable, agree" in out
    assert out.count("replica") == 2


def test_sandbox_status_lists_droplets_with_pids_and_password(sandbox: Sandbox) -> None:
    st = sandbox.status()
    assert st["master_name"] == "mymaster"
    assert st["redis_password"]
    assert st["controller_url"].startswith("https://127.0.0.")
    assert len(st["droplets"]) == 3
    for d in st["droplets"]:
        assert d["address"].startswith("127.0.0.")
        assert all(isinstance(pid, int) and psutil.pid_exists(pid) for pid in d["pids"].values())


def test_killed_replica_redis_shows_down_and_agent_keeps_reporting(sandbox: Sandbox) -> None:
    replica = next(n for n in sandbox.cluster()["nodes"] if n["role"] == "replica")["name"]
    interval_s = 0.5
    sandbox.fault(replica, "redis", "kill")
    try:
        down = wait_until(
            lambda: n if not (n := sandbox.node(replica))["redis_up"] else None,
            timeout_s=3 * interval_s + 1.0,  # the spec: within 3 report intervals (+1 s for the CLI round trip)
            what=f"{replica} redis shown down",
        )
        assert down["sentinel_up"] and not down["stale"]
        assert "Connection refused" in (down["redis_error"] or "")
        pid = next(d for d in sandbox.status()["droplets"] if d["name"] == replica)["pids"]
        assert pid["redis"] is None and pid["agent"] is not None
        # the agent keeps reporting: its report stays fresh over several intervals
        first_age = down["report_age_s"]
        wait_until(lambda: sandbox.node(replica)["report_age_s"] < 2 * interval_s, 5, "fresh reports")
        assert first_age < 3 * interval_s
    finally:
        sandbox.fault(replica, "redis", "start")
    wait_until(lambda: sandbox.node(replica)["redis_up"] and sandbox.node(replica)["link"] == "up", 30,
               f"{replica} back as a linked replica")


PROBE_NODE = "redis-2"  # these reports are all refused: the real redis-2 is never disturbed


def _post(sandbox: Sandbox, body: bytes, ts: str | None = None, key: bytes | None = None,
          cluster: str = "sandbox") -> requests.Response:
    # 5 s ahead: newer than the real agent's last push, so a refusal is about what the test means
    ts = ts or f"{time.time() + 5:.6f}"
    headers = {
        "Content-Type": "application/json",
        HEADER_CLUSTER: cluster,
        HEADER_NODE: PROBE_NODE,
        HEADER_TIMESTAMP: ts,
        HEADER_SIGNATURE: sign_report(key or sandbox.node_key(PROBE_NODE), ts, cluster, PROBE_NODE, body),
    }
    return requests.post(f"{sandbox.controller_url}/v1/reports", data=body, headers=headers, timeout=5,
                         verify=sandbox.status()["controller_ca_cert"])


def _recorded_report() -> dict[str, object]:
    path = Path(__file__).parent / "fixtures" / "reports" / "healthy-redis-2.json"
    report: dict[str, object] = json.loads(path.read_text())
    return report


def test_forged_signature_gets_401(sandbox: Sandbox) -> None:
    body = json.dumps(_recorded_report()).encode()
    resp = _post(sandbox, body, key=b"not-the-node-key-0123456789abcdef")
    assert resp.status_code == 401
    assert "signature" in resp.text
    assert sandbox.node_key(PROBE_NODE).hex() not in resp.text


def test_stale_timestamp_gets_401(sandbox: Sandbox) -> None:
    body = json.dumps(_recorded_report()).encode()
    resp = _post(sandbox, body, ts=f"{time.time() - 120:.3f}")
    assert resp.status_code == 401
    assert "timestamp" in resp.text


def test_unknown_cluster_gets_401(sandbox: Sandbox) -> None:
    resp = _post(sandbox, b"{}", cluster="nope")
    assert resp.status_code == 401


def test_malformed_report_gets_4xx_naming_the_field(sandbox: Sandbox) -> None:
    report = _recorded_report()
    report["redis"] = {**report["redis"], "ping_ms": "fast"}  # type: ignore[dict-item]
    resp = _post(sandbox, json.dumps(report).encode())
    assert resp.status_code == 422
    locs = [d["loc"] for d in resp.json()["detail"]]
    assert "redis.ping_ms" in locs

    del report["identity"]
    resp = _post(sandbox, json.dumps(report).encode())
    assert resp.status_code == 422
    assert "identity" in [d["loc"] for d in resp.json()["detail"]]

    resp = _post(sandbox, b"{not json")
    assert 400 <= resp.status_code < 500


def test_a_second_sandbox_does_not_collide_and_down_leaves_nothing(sandbox: Sandbox, tmp_path: Path) -> None:
    other = start_sandbox(tmp_path / "second", "--nodes", "1", "--report-interval-s", "0.5")
    try:
        mine = {d["address"] for d in sandbox.status()["droplets"]}
        theirs = {d["address"] for d in other.status()["droplets"]}
        assert mine.isdisjoint(theirs)
        assert other.controller_url != sandbox.controller_url
        assert other.cluster()["master"] is not None
        pids = [p for d in other.status()["droplets"] for p in d["pids"].values() if p]
        pids.append(other.status()["controller_pid"])
        assert len(pids) == 4
    finally:
        redwarden("sandbox", "down", "--dir", str(other.root))
    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    st = other.status()
    assert st["up"] is False
    assert all(v is None for d in st["droplets"] for v in d["pids"].values())
    # the first sandbox is untouched
    assert sandbox.cluster()["sentinels"]["reachable"] == 3


# -- the local DigitalOcean underneath (issue 4); these run last: they change the cluster ----------------

def _cloud(sandbox: Sandbox) -> Any:
    from controller.adapters.cloud import PydoCloud

    st = sandbox.status()
    return PydoCloud(st["do_token"], api_url=st["do_api_url"], ca_path=st["do_ca_cert"])


def test_droplets_are_real_and_tagged_through_pydo(sandbox: Sandbox) -> None:
    droplets = _cloud(sandbox).list_droplets("redwarden-sandbox")
    st = sandbox.status()
    assert sorted(d.name for d in droplets) == sorted(d["name"] for d in st["droplets"])
    for d in droplets:
        assert d.status == "active" and d.private_ip and d.private_ip.startswith("127.0.0.")
    # each agent reports its droplet id, learned at boot
    ids = {n["name"]: n["droplet_id"] for n in sandbox.cluster()["nodes"]}
    assert ids == {d.name: d.id for d in droplets}


def test_power_cycled_replica_rejoins_with_its_data(sandbox: Sandbox) -> None:
    st = sandbox.status()
    cluster = sandbox.cluster()
    master = cluster["master"]
    replica = next(n for n in cluster["nodes"] if n["role"] == "replica")
    client = redis.Redis(host=master.split(":")[0], password=st["redis_password"],
                    username=st.get("redis_username"), socket_timeout=2)
    client.set("before-power-cycle", "kept")
    client.execute_command("WAIT", 2, 2000)
    client.close()
    droplet = next(d for d in st["droplets"] if d["name"] == replica["name"])
    old_pid = droplet["pids"]["redis"]
    action = _cloud(sandbox).power_cycle(droplet["id"])
    assert _cloud(sandbox).wait_action(action.id, 60).ok
    back = wait_until(lambda: n if (n := sandbox.node(replica["name"]))["redis_up"] and n["link"] == "up" else None,
                      60, "the power-cycled replica linked again")
    assert back["role"] == "replica"
    new_pid = next(d for d in sandbox.status()["droplets"] if d["name"] == replica["name"])["pids"]["redis"]
    assert new_pid not in (None, old_pid)
    r = redis.Redis(host=droplet["address"], password=st["redis_password"],
                    username=st.get("redis_username"), socket_timeout=2)
    assert r.get("before-power-cycle") == b"kept"
    r.close()


def test_destroyed_replica_leaves_stale_sentinel_entries(sandbox: Sandbox) -> None:
    cluster = sandbox.cluster()
    replica = next(n for n in cluster["nodes"] if n["role"] == "replica")
    droplet_id = next(d["id"] for d in sandbox.status()["droplets"] if d["name"] == replica["name"])
    assert _cloud(sandbox).destroy_droplet(droplet_id)
    assert _cloud(sandbox).get_droplet(droplet_id) is None
    # this sandbox does not heal: the Sentinels keep the dead replica, which is for the healer to fix
    found = wait_until(lambda: [f for f in sandbox.cluster()["findings"]
                                if f["code"] in ("SENTINEL_STALE_ENTRIES", "AGENT_SILENT")], 30,
                       "the destroyed node reported silent and stale in the Sentinels")
    assert any(f["code"] == "AGENT_SILENT" for f in found)
    for n in sandbox.cluster()["nodes"]:
        if n["name"] != replica["name"]:
            assert n["sentinel_known_replicas"] == 2  # the dead replica is still listed
