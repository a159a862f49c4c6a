"""Renders `redwarden status` for people: one table per cluster, readable at a glance.

Layer: presentation, pure: JSON (the `/v1/clusters` contract) in, text out.
"""

from __future__ import annotations

import time
from typing import Any


def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return "-"  # pragma: no cover


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def render_status(data: dict[str, Any]) -> str:
    out: list[str] = []
    for c in data.get("clusters", []):
        s = c["sentinels"]
        agree = "agree" if s["agree"] else "DISAGREE"
        health = f"  health {c['health']}" if "health" in c else ""
        out.append(
            f"cluster {c['name']}: master {c['master'] or 'UNDECIDED'}; sentinels {s['reachable']}/{s['expected']}"
            f" reachable, {agree}{health}"
        )
        rows = [["NODE", "ADDRESS", "ROLE", "REDIS", "SENTINEL", "LINK", "LAG", "SENTINEL SAYS", "AGE"]]
        for n in c["nodes"]:
            rows.append([
                n["name"],
                n["address"],
                (n["role"] or "-") + (" PAUSED" if n.get("fenced_locally") else ""),
                "up" if n["redis_up"] else "DOWN",
                "up" if n["sentinel_up"] else "DOWN",
                n.get("link") or "-",
                _fmt_bytes(n["lag_bytes"]),
                n.get("sentinel_master") or "-",
                f"{n['report_age_s']:.1f}s" + (" STALE" if n.get("stale") else ""),
            ])
        out.extend("  " + line for line in _table(rows))
        for f in c.get("findings", []):
            out.append(f"  [{f['severity']}] {f['code']} {f['subject']}: {f['message']}")
        out.append("")
    if not out:
        return "no clusters configured\n"
    return "\n".join(out)


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def render_history(data: dict[str, Any]) -> str:
    """`redwarden history`: newest incident first, each with its timeline."""
    incidents = data.get("incidents", [])
    if not incidents:
        return "no incidents\n"
    out: list[str] = []
    for i in incidents:
        opened, resolved = i.get("opened_at"), i.get("resolved_at")
        span = f"resolved after {resolved - opened:.1f}s" if opened and resolved else i["status"].upper()
        out.append(f"{_when(opened)} UTC  [{i['severity']}] {i['code']} {i['cluster']}/{i['subject']}  {span}")
        out.append(f"    {i['message']}")
        for step in i.get("timeline", []):
            offset = step["at"] - (i.get("first_seen_at") or step["at"])
            out.append(f"    +{offset:7.1f}s  {step['event']}")
    return "\n".join(out) + "\n"
