"""Replication log formats: what the leader logs for replication, ships, and how a follower
applies it.

The storage log's own records stay what they always were, effects (so local recovery is
unchanged). What differs per cluster setting ``log_format`` is the *replication event*,
built on the leader when the record is written (never later from the current keyspace,
which would give a wrong after-image to a follower catching up) and kept in the record as
an optional 5th element ``repl``:

- ``physical`` (the default): no event; the sender ships the log frames byte for byte and a
  follower stores them byte for byte. Cheapest, but both ends must share the storage format.
- ``statement``: the record's commands, each a list of byte strings, rewritten by the leader
  to be deterministic (relative expiry -> absolute PXAT / PEXPIREAT, SPOP -> SREM of the
  members popped, INCRBYFLOAT -> SET result KEEPTTL, HINCRBYFLOAT -> HSET result, expiry
  deletes -> DEL). A follower executes them through core/commands with its own clock and
  random source. ``statement_unsafe = true`` logs commands exactly as issued (with a warning
  per nondeterministic one, as MySQL does): followers then diverge.
- ``row``: the after-image of every key the record touched, ``[key, type, value, expire_at]``
  or ``[key, None]`` for a deletion, ``["*flush"]`` for FLUSHDB/FLUSHALL; a follower puts them
  (effect E_PUT), independent of the leader's storage format.

Under statement and row the sender re-frames each record as an event
``[seq, epoch, ts_ms, kind, payload]``; a follower's relay log stores the events as they came,
and its apply task writes its *own* record at the same seq, so positions stay aligned and
failover, WAITPOS and catch-up work as with physical shipping.

Triggers (replikv/logformats/triggers.py) need after-images of the keys they watch: when a
cluster has triggers, records also carry ``images`` (6th element) for matching keys, unless
the row images already hold them.
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from collections import OrderedDict

import msgpack

from ..core import commands as C
from ..core.keyspace import (
    E_DEL,
    E_EXPIRE,
    E_FLUSH,
    E_HSET,
    E_PUT,
    E_RENAME,
    E_SET,
    E_SREM,
    Keyspace,
    value_to_wire,
)
from ..storage.log import FRAME, Event, encode_frame

log = logging.getLogger("replikv.logformat")

RAW = b"\x00effects"          # a statement that carries effects no command produced (CAUSAL metadata)
FLUSH_IMAGE = "*flush"
KINDS = {"physical": None, "statement": "stmt", "row": "row"}
_packb = msgpack.Packer(use_bin_type=True).pack


# ---------------------------------------------------------------------------- row images

def row_images(ks: Keyspace, effects: list, match=None) -> list:
    """After-images of the keys ``effects`` touched, as they are in ``ks`` now (call right
    after the effects were applied). ``match``: only keys it accepts."""
    touched: dict = {}
    flush = False
    for eff in effects:
        op = eff[0]
        if op == E_FLUSH:
            touched.clear()
            flush = True
        elif op == E_RENAME:
            touched[eff[1]] = None
            touched[eff[2]] = None
        else:
            touched[eff[1]] = None
    out: list = [[FLUSH_IMAGE]] if flush else []
    data = ks.data
    for k in touched:
        if match is not None and not match(k):
            continue
        e = data.get(k)
        if e is None:
            out.append([k, None])
        elif e.meta is not None:
            out.append([k, e.type, value_to_wire(e), e.expire_at, e.meta])
        else:
            out.append([k, e.type, value_to_wire(e), e.expire_at])
    return out


def image_effects(images: list) -> list:
    """Row images as effects (E_PUT / E_DEL / E_FLUSH)."""
    out = []
    for img in images:
        if len(img) == 1:
            out.append([E_FLUSH])
        elif img[1] is None:
            out.append([E_DEL, img[0]])
        else:
            out.append([E_PUT, *img])
    return out


def repl_kind(repl) -> str | None:
    """Whether a record's ``repl`` element holds statements ("stmt") or row images ("row")."""
    if not repl:
        return None
    for item in repl:
        if len(item) >= 2:
            return "stmt" if isinstance(item[1], bytes) else "row"
        if item and isinstance(item[0], str):
            return "row"
    return "stmt"


def pattern_matcher(patterns: list[str]):
    ms = [C.glob_matcher(p.encode()) for p in patterns]
    if len(ms) == 1:
        return ms[0].match
    return lambda k: any(m.match(k) for m in ms)


# ---------------------------------------------------------------------------- statements (leader)

_UNSAFE = {
    "spop": "SPOP picks members at random",
    "setex": "it sets an expiry relative to the clock", "psetex": "it sets an expiry relative to the clock",
    "expire": "it sets an expiry relative to the clock", "pexpire": "it sets an expiry relative to the clock",
    "incrbyfloat": "floating-point results may differ between versions or platforms",
    "hincrbyfloat": "floating-point results may differ between versions or platforms",
}


def _unsafe_reason(cmd, args, own, lazy) -> str | None:
    name = cmd.name
    why = _UNSAFE.get(name)
    if why is None and name == "set" and any(a.upper() in (b"EX", b"PX") for a in args[3:]):
        why = "it sets an expiry relative to the clock"
    if why is None and own and own[-1][0] == E_DEL and name in ("set", "expireat", "pexpireat"):
        why = "a time already past deletes the key on the leader only"
    if why is None and lazy:
        why = (f"it touched key(s) that had expired by the leader's clock "
               f"({', '.join(k.decode('utf-8', 'replace') for k in lazy[:3])})")
    return why


def _rewrite(cmd, args: list, own: list) -> list:
    """A deterministic statement with the effects ``own`` that ``args`` had on the leader."""
    name = cmd.name
    last = own[-1]
    op = last[0]
    if name == "set":
        if op == E_DEL:
            return [b"DEL", args[1]]
        out = [b"SET", args[1], args[2]]
        i, n = 3, len(args)
        while i < n:
            tok = args[i].upper()
            if tok in (b"EX", b"PX") and i + 1 < n:
                out += [b"PXAT", b"%d" % last[3]]
                i += 2
            else:
                out.append(args[i])
                i += 1
        return out
    if name in ("setex", "psetex"):
        return [b"SET", args[1], args[3], b"PXAT", b"%d" % last[3]]
    if name in ("expire", "pexpire", "expireat", "pexpireat"):
        if op == E_DEL:
            return [b"DEL", args[1]]
        if op == E_EXPIRE and name in ("expire", "pexpire"):
            return [b"PEXPIREAT", args[1], b"%d" % last[2], *args[3:]]
        return list(args)
    if name == "spop" and op == E_SREM:
        return [b"SREM", args[1], *last[2]]
    if name == "incrbyfloat" and op == E_SET:
        return [b"SET", args[1], last[2], b"KEEPTTL"]
    if name == "hincrbyfloat" and op == E_HSET:
        return [b"HSET", args[1], last[2][0], last[2][1]]
    return list(args)


def _raw(effects: list) -> list:
    return [RAW, _packb(effects)]


class LeaderFormat:
    """A node's log-format behaviour (set on the node as ``node.logfmt``; None = physical
    without triggers, the default, which costs nothing on the write path)."""

    def __init__(self, node, cluster) -> None:
        self.node = node
        self.kind = KINDS[cluster.log_format]
        self.unsafe = bool(cluster.statement_unsafe)
        self.match = pattern_matcher([t.pattern for t in cluster.triggers]) if cluster.triggers else None
        self.marks: list = []
        self._wrapped: dict = {}
        self._events: OrderedDict = OrderedDict()   # (first, last, size) -> re-framed events
        self.unsafe_statements = 0
        self.events_built = 0
        self.triggers: list = []      # TriggerRunner, started by attach()

    # ------------------------------------------------------------------ leader: building records
    def begin(self, batch: list) -> list:
        """Node._run: wrap the batch's commands so the record's statements can be built."""
        if self.kind != "stmt":
            return batch
        self.marks = []
        out = []
        for cmd, args in batch:
            if isinstance(cmd, C.Command):
                w = self._wrapped.get(id(cmd))
                if w is None:
                    w = self._wrapped[id(cmd)] = (self._wrap(cmd), cmd)
                cmd = w[0]
            out.append((cmd, args))
        return out

    def _wrap(self, cmd: C.Command) -> C.Command:
        orig = cmd.fn
        is_write = cmd.is_write

        def fn(ctx, args):
            lazy = None
            if is_write:
                data = ctx.ks.data
                now = ctx.now_ms
                for k in cmd.keys(args):
                    e = data.get(k)
                    if e is not None and e.expire_at and e.expire_at <= now:
                        if lazy is None:
                            lazy = []
                        lazy.append(k)
            start = len(ctx.effects)
            ok = False
            try:
                r = orig(ctx, args)
                ok = True
                return r
            finally:
                self.marks.append((cmd, args, start, len(ctx.effects), lazy, ok))

        return dataclasses.replace(cmd, fn=fn)

    def append(self, effects: list, now_ms: int, expiry: bool = False) -> int:
        """Storage.append with the record's replication event (and trigger images)."""
        st = self.node.storage
        kind = self.kind
        if kind == "stmt":
            repl = self._expiry_statements(effects) if expiry else self._statements(effects)
        elif kind == "row":
            repl = row_images(st.ks, effects)
        else:
            repl = None
        if self.match is not None and kind != "row":
            return st.append(effects, now_ms, extra=[repl, row_images(st.ks, effects, self.match)])
        if repl is None:
            return st.append(effects, now_ms)
        return st.append(effects, now_ms, extra=[repl])

    def _expiry_statements(self, effects: list) -> list:
        out = []
        for eff in effects:
            if eff[0] == E_DEL:
                out.append([b"DEL", eff[1]])
            else:
                out.append(_raw([eff]))
        return out

    def _statements(self, effects: list) -> list:
        out: list = []
        covered = 0
        marks, self.marks = self.marks, []
        for cmd, args, start, end, lazy, ok in marks:
            if start > covered:
                out.append(_raw(effects[covered:start]))
            covered = end
            if start == end:
                continue
            own = []
            pending = set(lazy) if lazy else None
            for eff in effects[start:end]:
                if eff[0] == E_DEL and (not cmd.is_write or (pending and eff[1] in pending)):
                    if pending:
                        pending.discard(eff[1])
                    if not self.unsafe:
                        out.append([b"DEL", eff[1]])   # an expiry the leader decided
                else:
                    own.append(eff)
            if not own:
                continue
            if not ok or not cmd.is_write:
                out.append(_raw(own))
                continue
            if self.unsafe:
                out.append(list(args))
                why = _unsafe_reason(cmd, args, own, lazy)
                if why is not None:
                    self.unsafe_statements += 1
                    log.warning("Unsafe statement written to the replication log using statement format since "
                                "log_format = statement and statement_unsafe = true. The statement is unsafe "
                                "because %s: %s", why, _show(args))
            else:
                out.append(_rewrite(cmd, args, own))
        if covered < len(effects):
            out.append(_raw(effects[covered:]))
        return out

    # ------------------------------------------------------------------ leader: shipping
    def to_events(self, frames: bytes, first: int, last: int) -> bytes:
        """Log frames first..last re-framed as events ``[seq, epoch, ts_ms, kind, payload]``
        (a record without an event of its own becomes kind "eff", its effects)."""
        key = (first, last, zlib.crc32(frames))
        got = self._events.get(key)
        if got is not None:
            return got
        out = []
        mv = memoryview(frames)
        off = 0
        n = len(frames)
        kind = _packb(self.kind)
        eff = _packb("eff")
        while off < n:
            ln, _crc = FRAME.unpack_from(frames, off)
            payload = bytes(mv[off + 8:off + 8 + ln])
            off += 8 + ln
            out.append(encode_frame(event_payload(payload, kind, eff)))
        data = b"".join(out)
        self.events_built += last - first + 1
        self._events[key] = data
        while len(self._events) > 64:
            self._events.popitem(last=False)
        return data

    def status(self) -> dict:
        out = {"log_format": {None: "physical", "stmt": "statement", "row": "row"}[self.kind]}
        if self.kind == "stmt":
            out["statement_unsafe"] = self.unsafe
            out["unsafe_statements"] = self.unsafe_statements
        if self.triggers:
            out["triggers"] = [t.status() for t in self.triggers]
        return out


def event_payload(payload: bytes, kind: bytes, eff: bytes) -> bytes:
    """A record payload ``[seq, epoch, ts, effects, repl?, images?]`` as an event payload,
    without decoding the effects or the event (byte slices of the msgpack)."""
    up = msgpack.Unpacker(raw=False)
    up.feed(payload)
    n = up.read_array_header()
    up.skip()
    up.skip()
    up.skip()
    head_end = up.tell()
    up.skip()
    eff_end = up.tell()
    if n >= 5:
        up.skip()
        repl_end = up.tell()
        repl = payload[eff_end:repl_end]
        if repl != b"\xc0":
            return b"\x95" + payload[1:head_end] + kind + repl
    return b"\x95" + payload[1:head_end] + eff + payload[head_end:eff_end]


def _show(args: list) -> str:
    s = " ".join(a.decode("utf-8", "backslashreplace") for a in args)
    return s if len(s) <= 200 else s[:200] + "..."


# ---------------------------------------------------------------------------- follower: applying events

class ReplayCtx(C.Ctx):
    """A Ctx for statements replayed on a follower: its own clock and random source, but no
    key counts as expired and no time as already past (the leader logged its deletes), as
    for a Redis replica applying its master's stream."""

    __slots__ = ()
    replica = True

    def lookup(self, key: bytes):
        return self.ks.data.get(key)


def apply_event(node, ev: Event, seq: int, epoch: int, ts_ms: int) -> None:
    """Apply a shipped statement / row event and append this node's own record at ``seq``
    (its effects, and the event, so that this node can ship it in turn after a failover)."""
    st = node.storage
    ks = st.ks
    kind = ev.kind
    payload = ev.payload
    fmt = node.logfmt
    if kind == "stmt":
        effects = replay_statements(node, payload, seq)
        repl = payload
    elif kind == "row":
        effects = image_effects(payload)
        for e in effects:
            ks.apply(e, seq)
        repl = payload
    elif kind == "eff":
        effects = payload
        for e in effects:
            ks.apply(e, seq)
        repl = None
    else:
        raise ValueError(f"unknown replication event kind {kind!r} at seq {seq}")
    if epoch > st.epoch:
        st.epoch = epoch
    if fmt is not None and fmt.match is not None and kind != "row":
        st.append(effects, ts_ms, seq=seq, epoch=epoch, extra=[repl, row_images(ks, effects, fmt.match)])
    elif repl is None:
        st.append(effects, ts_ms, seq=seq, epoch=epoch)
    else:
        st.append(effects, ts_ms, seq=seq, epoch=epoch, extra=[repl])


def replay_statements(node, stmts: list, seq: int) -> list:
    ctx = ReplayCtx(node.storage.ks, node.clock.now_ms(), seq, node.rng, False, node.config.max_bulk_len)
    for args in stmts:
        if args and args[0] == RAW:
            for e in msgpack.unpackb(args[1], raw=False, use_list=True, strict_map_key=False):
                ctx.emit(e)
            continue
        cmd = C.lookup(args) if args else None
        if cmd is None or not C.arity_ok(cmd, len(args)):
            log.warning("replicated statement at seq %d is not a data command this node knows: %s", seq, _show(args))
            continue
        try:
            cmd.fn(ctx, args)
        except C.CommandError as e:
            log.warning("replicated statement at seq %d failed on this replica (%s): %s", seq, e.text, _show(args))
    return ctx.effects
