"""Trigger-based replication: user hooks on committed changes, written into another database.

A cluster file lists triggers::

    [[triggers]]
    pattern = "user:*"                 # which keys
    hook = "mymodule:to_row"           # optional: transform (default: identity)
    sink = "sqlite"                    # or "postgres" (dsn = "host=... dbname=...")
    path = "/var/lib/replikv/users.db"
    table = "users"

On the leader, one runner per trigger reads the log from the position its sink holds, up to
the leader's visible (committed) position, turns each record into per-key changes (the
after-images the leader wrote with the record: see formats.py), keeps those whose key matches
the pattern, passes each to the hook, and writes what the hook returns into the sink together
with the new position, in one transaction (sinks.py). Exactly once, in order: a hook or sink
error is logged and delivery is retried with backoff from the position the sink holds; the
sink never holds a change twice, nor misses one, also across a leader restart or a failover
(the new leader's runner continues from the sink's position).

A hook is ``module:function`` (or ``/path/to/file.py:function``) taking a ``Change`` and
returning a Change (possibly modified), None (skip it) or a list of Changes.

A sink without a position yet gets the whole log if the log still starts at position 1;
otherwise a copy of the matching keys as of the leader's current position (an initial
load), then the log from there.

Caveat: under an asynchronous ack policy a failover can lose writes the old leader had
committed (see docs/architecture.md); a trigger may have delivered them already.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from ..core import commands as C
from ..core.keyspace import TYPE_NAMES, value_to_wire
from .changes import effect_changes, image_changes, record_images
from .reader import LogTailer, PositionGone
from .sinks import make_sink

log = logging.getLogger("replikv.triggers")
POLL_S = 0.05
MAX_BACKOFF_S = 5.0


@dataclass
class Change:
    """One committed change, as a hook sees it. ``value``: a str (string), a dict (hash) or
    a sorted list (set) for ``put``; None for ``del`` and ``flush``."""
    pos: int
    ts_ms: int
    op: str                  # put | del | flush
    key: str | None
    type: str | None = None
    value: Any = None
    expire_at: int = 0
    key_bytes: bytes | None = None

    def with_value(self, value) -> Change:
        return replace(self, value=value)


def identity(change: Change) -> Change:
    return change


def _text(b: bytes) -> str:
    return b.decode("utf-8", "backslashreplace")


def _py_value(v):
    if isinstance(v, bytes):
        return _text(v)
    if isinstance(v, dict):
        return {_text(f): _text(x) for f, x in v.items()}
    if isinstance(v, (set, list)):
        return sorted(_text(m) for m in v)
    return v


def load_hook(spec: str):
    mod, _, fn = spec.rpartition(":")
    if mod.endswith(".py") or os.sep in mod:
        name = "replikv_hook_" + os.path.splitext(os.path.basename(mod))[0]
        s = importlib.util.spec_from_file_location(name, mod)
        if s is None or s.loader is None:
            raise ImportError(f"cannot load hook file {mod}")
        m = importlib.util.module_from_spec(s)
        s.loader.exec_module(m)
    else:
        m = importlib.import_module(mod)
    f = getattr(m, fn, None)
    if not callable(f):
        raise ImportError(f"hook {spec}: {fn} is not a function of {mod}")
    return f


class TriggerRunner:
    def __init__(self, node, spec) -> None:
        self.node = node
        self.spec = spec
        self.match = C.glob_matcher(spec.pattern.encode()).match
        self.hook = None
        self.sink = None
        self.pos: int | None = None          # the last position the sink holds (None: ask it)
        self.state = "standby"
        self.delivered = 0
        self.errors = 0
        self.last_error = ""
        self.skipped = 0
        self._exec = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replikv-trigger")
        self.tailer = LogTailer(os.path.join(node.config.data_dir, "log"))

    def status(self) -> dict:
        return {"name": self.spec.name, "pattern": self.spec.pattern, "sink": self.spec.sink,
                "state": self.state, "position": self.pos, "delivered": self.delivered,
                "errors": self.errors, "last_error": self.last_error or None}

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = 0.1
        node = self.node
        try:
            while True:
                if node.role != "leader" or node.loading:
                    if self.state != "standby":
                        self.state = "standby"
                        self.pos = None      # another leader may deliver meanwhile
                    await asyncio.sleep(0.1)
                    continue
                try:
                    if self.sink is None:
                        await loop.run_in_executor(self._exec, self._open)
                    if self.pos is None:
                        self.pos = await loop.run_in_executor(self._exec, self.sink.position)
                        if self.pos is None and self.tailer.first_seq() <= 1:
                            self.pos = 0         # the whole history is in the log: deliver it all
                        if self.pos is None and not await self._initial_load(loop):
                            await asyncio.sleep(POLL_S)
                            continue
                    limit = node.visible_seq
                    if self.pos < limit:
                        self.state = "delivering"
                        try:
                            n = await loop.run_in_executor(self._exec, self._deliver, self.pos + 1, limit)
                        except PositionGone as e:
                            log.warning("trigger %s: %s; reloading the sink from the current data", self.spec.name, e)
                            if not await self._initial_load(loop, reload=True):
                                await asyncio.sleep(POLL_S)
                            continue
                        backoff = 0.1
                        if n:
                            continue
                    self.state = "caught-up"
                    await asyncio.sleep(POLL_S)
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # noqa: BLE001 - a hook or sink error: log, back off, retry
                    self.errors += 1
                    self.last_error = f"{type(e).__name__}: {e}"
                    self.state = "retrying"
                    log.error("trigger %s: delivery after position %s failed: %s; retrying from the sink's "
                              "position in %.2fs", self.spec.name, self.pos, self.last_error, backoff)
                    self.pos = None
                    await loop.run_in_executor(self._exec, self._close)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
        finally:
            self._exec.submit(self._close)
            self._exec.shutdown(wait=False)

    # ------------------------------------------------------------------ on the runner's thread
    def _open(self) -> None:
        if self.hook is None:
            self.hook = load_hook(self.spec.hook)
        sink = make_sink(self.spec)
        sink.open()
        self.sink = sink
        log.info("trigger %s: %s sink open (table %s)", self.spec.name, self.spec.sink, self.spec.table)

    def _close(self) -> None:
        if self.sink is not None:
            self.sink.close()
            self.sink = None

    async def _initial_load(self, loop, reload: bool = False) -> bool:
        """A sink with no position (or one the log no longer reaches back to): load the
        matching keys as of the current position (when everything written is committed),
        then follow the log from there."""
        node = self.node
        st = node.storage
        if node.visible_seq != st.last_seq:
            return False
        pos = st.last_seq
        changes = [Change(pos, 0, "flush", None)] if reload else []
        for k, e in st.ks.data.items():
            if self.match(k):
                changes.append(Change(pos, 0, "put", _text(k), TYPE_NAMES[e.type], _py_value(e.value),
                                      e.expire_at, k))
        out = self._hooked(changes)
        await loop.run_in_executor(self._exec, self.sink.deliver, [(pos, out)] if out else [], pos)
        self.pos = pos
        self.delivered += len(out)
        log.info("trigger %s: initial load of %d key(s) at position %d", self.spec.name, len(out), pos)
        return True

    def _hooked(self, changes: list) -> list:
        out = []
        hook = self.hook
        for c in changes:
            r = hook(c)
            if r is None:
                continue
            if isinstance(r, Change):
                out.append(r)
            else:
                out.extend(r)
        return out

    def _deliver(self, first: int, limit: int) -> int:
        recs = self.tailer.read(first, limit, self.spec.batch)
        if not recs:
            return 0
        batch = []
        n = 0
        for rec in recs:
            imgs = record_images(rec)
            chs = image_changes(imgs) if imgs is not None else self._from_effects(rec)
            picked = []
            for ch in chs:
                k = ch.get("key")
                if k is not None and not self.match(k):
                    continue
                if ch["op"] == "put":
                    picked.append(Change(rec.seq, rec.ts_ms, "put", _text(k), ch["type"], _py_value(ch["value"]),
                                         ch["expire_at"], k))
                else:
                    picked.append(Change(rec.seq, rec.ts_ms, ch["op"], None if k is None else _text(k), key_bytes=k))
            if picked:
                out = self._hooked(picked)
                if out:
                    batch.append((rec.seq, out))
                    n += len(out)
        last = recs[-1].seq
        if batch:
            t = time.perf_counter()
            self.sink.deliver(batch, last)
            log.debug("trigger %s: %d change(s) up to %d in %.1f ms", self.spec.name, n, last,
                      (time.perf_counter() - t) * 1000)
        self.pos = last
        self.delivered += n
        return len(recs)

    def _from_effects(self, rec) -> list:
        """A record without after-images (written before this cluster had triggers): the
        changes whose after-image the effect itself gives; others are skipped, with a warning."""
        out = []
        for ch in effect_changes(rec.effects):
            op = ch["op"]
            if op == "set":
                out.append({"op": "put", "key": ch["key"], "type": "string", "value": ch["value"],
                            "expire_at": ch["expire_at"]})
            elif op in ("del", "flush"):
                out.append(ch)
            elif ch.get("key") is None or self.match(ch["key"]):
                self.skipped += 1
                log.warning("trigger %s: record %d has no after-images (written before the cluster had triggers); "
                            "its %s of %r is not delivered", self.spec.name, rec.seq, op, ch.get("key"))
        return out


__all__ = ["Change", "TriggerRunner", "identity", "load_hook", "value_to_wire"]
