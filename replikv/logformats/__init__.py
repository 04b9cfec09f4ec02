"""Replication log formats (physical, row, statement), change data capture and triggers.

- formats.py: the replication event a leader builds with each record, the re-framing of
  records into events for the sender, and a follower's applying of events.
- changes.py: per-key changes of a record (for CDC and triggers).
- reader.py: reading a log directory incrementally (``tail -f`` of the segments).
- cdc.py: ``replikv cdc`` and the node's ``GET /cdc`` endpoint.
- triggers.py, sinks.py: user hooks on committed changes, SQLite and PostgreSQL sinks.
"""

from __future__ import annotations

from .formats import LeaderFormat, apply_event

__all__ = ["LeaderFormat", "apply_event", "attach"]


def attach(node):
    """The node's log-format object for its cluster file: None for the default (physical
    shipping, no triggers), which leaves the write path exactly as it was."""
    c = node.cluster
    if c is None or (c.log_format == "physical" and not c.triggers):
        return None
    fmt = LeaderFormat(node, c)
    if c.triggers:
        from .triggers import TriggerRunner

        fmt.triggers = [TriggerRunner(node, spec) for spec in c.triggers]
    return fmt


def start_tasks(node) -> None:
    """Start the trigger runners (once the event loop runs); they act only while this node leads."""
    import asyncio

    fmt = node.logfmt
    if fmt is None:
        return
    for t in fmt.triggers:
        node._tasks.append(asyncio.ensure_future(t.run()))
