"""Rendering cluster status for the terminal (``replikv status``, ``replikv up``)."""

from __future__ import annotations


def _lag(stage: dict | None) -> str:
    if not stage:
        return "-"
    return f"{stage['entries']} / {stage['seconds']:.3f}s"


def status_renderable(rows: list[dict]):
    """A rich renderable: one table of nodes, and for leader mode one table of followers."""
    from rich.console import Group
    from rich.table import Table

    t = Table(title="replikv cluster", expand=False)
    for col in ("node", "address", "role", "position (history:seq)", "keys", "fsync", "clients", "peer", "http",
                "state"):
        t.add_column(col)
    followers = []
    leader_row = None
    for r in rows:
        state = "up" if r.get("reachable") else ("running, not answering" if r.get("running") else "down")
        pos = f"{str(r.get('history_id', '?'))[:8]}:{r.get('last_seq', '?')}" if r.get("reachable") else "-"
        t.add_row(str(r["node_id"]), r["address"], str(r.get("role", "-")), pos, str(r.get("keys", "-")),
                  str(r.get("fsync", "-")), str(r.get("clients", "-")), str(r.get("peer", "-")), r["http"], state)
        repl = r.get("replication") or {}
        if repl.get("role") == "leader":
            leader_row = r
        elif repl.get("role") == "follower":
            followers.append(r)
    parts = [t]
    if leader_row is not None or followers:
        lrep = (leader_row or {}).get("replication") or {}
        ack = lrep.get("ack", "?")
        if lrep.get("semi_sync_degraded"):
            ack += " (DEGRADED: fell back to async)"
        ft = Table(title=f"followers (ack {ack})", expand=False)
        for col in ("node", "state", "link", "sync", "io task", "apply task", "received", "flushed", "applied",
                    "lag received", "lag flushed", "lag applied", "delay", "resyncs"):
            ft.add_column(col)
        seen_by_leader = {f["node_id"]: f for f in lrep.get("followers", [])}
        for r in followers:
            rp = r["replication"]
            lv = seen_by_leader.get(r["node_id"], {}).get("lag") or rp.get("lag") or {}
            ft.add_row(str(r["node_id"]), rp.get("state", "-"), rp.get("link", "-"),
                       seen_by_leader.get(r["node_id"], {}).get("sync_state", "-"), rp.get("io_task", "-"),
                       rp.get("apply_task", "-"), str(rp.get("received")), str(rp.get("flushed")),
                       str(rp.get("applied")), _lag(lv.get("received")), _lag(lv.get("flushed")),
                       _lag(lv.get("applied")), f"{rp.get('apply_delay_ms', 0)} ms", str(rp.get("full_resyncs", 0)))
        for fid, f in seen_by_leader.items():
            if not any(r["node_id"] == fid for r in followers):
                ft.add_row(str(fid), f.get("state", "-"), f.get("link", "-"), f.get("sync_state", "-"), "?", "?",
                           str(f.get("received")),
                           str(f.get("flushed")), str(f.get("applied")), _lag(f["lag"]["received"]),
                           _lag(f["lag"]["flushed"]), _lag(f["lag"]["applied"]), "?", str(f.get("full_resyncs", 0)))
        parts.append(ft)
    return Group(*parts)
