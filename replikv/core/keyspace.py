"""The keyspace: every key's record, and the one place where changes are applied.

Owns: the in-memory map of key -> Entry (type, value, expiry, the log position of the write
that produced it, and a ``meta`` slot for replication metadata later modes need: version
vectors, siblings, tombstones), and ``apply``, which turns an *effect* into a change.

An effect is a small deterministic tuple describing one change to one key (the logical,
row-level change: "set k to v expiring at t", "delete k", "add members to set s"). Commands
(core/commands.py) never mutate entries themselves: they *emit* effects, which are applied
here and written to the log. Recovery, followers and the simulator replay the very same
effects through the very same ``apply``, so a replica can only ever be in a state the
leader was in. Effects carry absolute times only, never "now" or randomness.

Does not know: the log, files, sockets, the clock (time arrives as ``now_ms`` arguments).

Tricky cases:
- Expiry. A leader deletes an expired key lazily (on access) or actively (sampling), and
  the deletion is an effect like any other, so replicas never expire keys by their own
  clocks; a follower only *hides* a logically expired key (as Redis replicas do).
- WATCH: any applied effect that touches a watched key marks its watchers dirty.
"""

from __future__ import annotations

# Types, as TYPE reports them.
T_STRING = 0
T_HASH = 1
T_SET = 2
TYPE_NAMES = {T_STRING: "string", T_HASH: "hash", T_SET: "set"}

# Effect opcodes: (op, key, ...). Keep the numbers stable: they are in logs on disk.
E_SET = 0       # (E_SET, key, value: bytes, expire_at_ms: int, 0 = none)
E_DEL = 1       # (E_DEL, key)
E_EXPIRE = 2    # (E_EXPIRE, key, expire_at_ms: int, 0 = persist)
E_HSET = 3      # (E_HSET, key, [field, value, field, value, ...])
E_HDEL = 4      # (E_HDEL, key, [field, ...]); the key goes when its last field does
E_SADD = 5      # (E_SADD, key, [member, ...])
E_SREM = 6      # (E_SREM, key, [member, ...]); the key goes when its last member does
E_RENAME = 7    # (E_RENAME, src, dst); keeps the TTL, replaces dst
E_FLUSH = 8     # (E_FLUSH,)
E_APPEND = 9    # (E_APPEND, key, data)
E_META = 10     # (E_META, key, {"deps": [[partition, seq], ...]}): replication metadata of an entry
E_PUT = 11      # (E_PUT, key, type, value in wire form, expire_at_ms[, meta]): a row image (log_format
                # "row"); replaces the whole entry

EFFECT_NAMES = {E_SET: "set", E_DEL: "del", E_EXPIRE: "expire", E_HSET: "hset", E_HDEL: "hdel",
                E_SADD: "sadd", E_SREM: "srem", E_RENAME: "rename", E_FLUSH: "flush",
                E_APPEND: "append", E_META: "meta", E_PUT: "put"}


try:
    # A record type whose instances the cyclic garbage collector does not track. An entry
    # holds only bytes, ints, None and containers of bytes, never a reference back to an
    # entry, so it can be part of no cycle; a tracked entry (a class with __slots__) made
    # every full collection walk the whole keyspace: 65 ms for 500k keys, against 3 ms
    # untracked, and a follower stalled that long in the middle of a burst.
    from recordclass import dataobject as _Untracked
except ImportError:   # the same fields, tracked by the collector: slower full collections
    _Untracked = None


def _entry_repr(self) -> str:
    return f"Entry({TYPE_NAMES[self.type]}, {self.value!r}, exp={self.expire_at}, pos={self.pos})"


if _Untracked is not None:
    class Entry(_Untracked, gc=False, fast_new=True):
        """One key's record. ``value`` is bytes (string), dict (hash) or set (set);
        ``expire_at`` absolute ms since epoch (0 = no expiry); ``pos`` the log sequence
        number of the write that produced it; ``meta`` replication metadata (version
        vectors, siblings) later."""

        type: int
        value: object
        expire_at: int = 0
        pos: int = 0
        meta: object = None

        __repr__ = _entry_repr

        # identity, as the fallback class (a dataobject compares fields, but hashes by id)
        def __eq__(self, other) -> bool:
            return self is other

        def __ne__(self, other) -> bool:
            return self is not other

        __hash__ = object.__hash__
else:
    class Entry:  # type: ignore[no-redef]
        """One key's record: the same fields as above, in a class with __slots__."""

        __slots__ = ("type", "value", "expire_at", "pos", "meta")

        def __init__(self, type: int, value, expire_at: int = 0, pos: int = 0, meta=None) -> None:
            self.type = type
            self.value = value
            self.expire_at = expire_at
            self.pos = pos
            self.meta = meta

        __repr__ = _entry_repr


class Keyspace:
    __slots__ = ("data", "expires", "watchers", "deleted_pos", "deleted_floor", "track_deletes")

    def __init__(self) -> None:
        self.data: dict[bytes, Entry] = {}
        self.expires: dict[bytes, int] = {}      # keys that have a TTL -> expire_at
        self.watchers: dict[bytes, set] = {}     # key -> client states with a ``dirty`` flag
        # key -> position of a delete that is not visible yet (see server visibility rules)
        self.deleted_pos: dict[bytes, int] = {}
        # the position any absent key may have been deleted at, when deletions up to it are not
        # known one by one (a snapshot loaded at recovery covers records not yet confirmed)
        self.deleted_floor = 0
        self.track_deletes = False

    def __len__(self) -> int:
        return len(self.data)

    # ------------------------------------------------------------------ reads
    def get(self, key: bytes, now_ms: int) -> Entry | None:
        """The live entry for ``key``, or None if missing or logically expired."""
        e = self.data.get(key)
        if e is not None and e.expire_at and e.expire_at <= now_ms:
            return None
        return e

    def is_expired(self, key: bytes, now_ms: int) -> bool:
        e = self.data.get(key)
        return e is not None and bool(e.expire_at) and e.expire_at <= now_ms

    def key_pos(self, key: bytes) -> int:
        e = self.data.get(key)
        if e is not None:
            return e.pos
        return self.deleted_pos.get(key, self.deleted_floor)

    def expired_keys(self, now_ms: int, limit: int = 20) -> list[bytes]:
        """Up to ``limit`` expired keys (the active expiry cycle samples these)."""
        out = []
        for k, at in self.expires.items():
            if at <= now_ms:
                out.append(k)
                if len(out) >= limit:
                    break
        return out

    # ------------------------------------------------------------------ writes
    def apply(self, effect: tuple, pos: int) -> None:
        """Apply one effect, stamping touched keys with ``pos``."""
        op = effect[0]
        data = self.data
        if op == E_SET:
            _, key, value, exp = effect
            e = data.get(key)
            if e is None:
                data[key] = Entry(T_STRING, value, exp, pos)
            else:
                e.type = T_STRING
                e.value = value
                e.expire_at = exp
                e.pos = pos
                e.meta = None
            if exp:
                self.expires[key] = exp
            elif e is not None:
                self.expires.pop(key, None)
            if self.watchers:
                self._touch(key)
        elif op == E_DEL:
            self._remove(effect[1], pos)
        elif op == E_EXPIRE:
            _, key, exp = effect
            e = data.get(key)
            if e is not None:
                e.expire_at = exp
                e.pos = pos
                if exp:
                    self.expires[key] = exp
                else:
                    self.expires.pop(key, None)
                if self.watchers:
                    self._touch(key)
        elif op == E_HSET:
            _, key, flat = effect
            e = data.get(key)
            if e is None or e.type != T_HASH:
                if e is not None:
                    self.expires.pop(key, None)
                e = data[key] = Entry(T_HASH, {}, 0, pos)
            h = e.value
            for i in range(0, len(flat), 2):
                h[flat[i]] = flat[i + 1]
            e.pos = pos
            if self.watchers:
                self._touch(key)
        elif op == E_HDEL:
            _, key, fields = effect
            e = data.get(key)
            if e is not None and e.type == T_HASH:
                h = e.value
                for f in fields:
                    h.pop(f, None)
                e.pos = pos
                if not h:
                    self._remove(key, pos)
                elif self.watchers:
                    self._touch(key)
        elif op == E_SADD:
            _, key, members = effect
            e = data.get(key)
            if e is None or e.type != T_SET:
                if e is not None:
                    self.expires.pop(key, None)
                e = data[key] = Entry(T_SET, set(), 0, pos)
            e.value.update(members)
            e.pos = pos
            if self.watchers:
                self._touch(key)
        elif op == E_SREM:
            _, key, members = effect
            e = data.get(key)
            if e is not None and e.type == T_SET:
                e.value.difference_update(members)
                e.pos = pos
                if not e.value:
                    self._remove(key, pos)
                elif self.watchers:
                    self._touch(key)
        elif op == E_APPEND:
            _, key, extra = effect
            e = data.get(key)
            if e is None:
                data[key] = Entry(T_STRING, extra, 0, pos)
            else:
                e.value = e.value + extra
                e.pos = pos
            if self.watchers:
                self._touch(key)
        elif op == E_RENAME:
            _, src, dst = effect
            e = data.pop(src, None)
            if e is None:
                return
            self.expires.pop(src, None)
            if self.track_deletes:
                self.deleted_pos[src] = pos
            if dst in data:
                self.expires.pop(dst, None)
            e.pos = pos
            data[dst] = e
            if e.expire_at:
                self.expires[dst] = e.expire_at
            if self.watchers:
                self._touch(src)
                self._touch(dst)
        elif op == E_META:
            e = data.get(effect[1])
            if e is not None:
                e.meta = effect[2]
        elif op == E_PUT:
            _, key, type_, v, exp = effect[:5]
            old = data.get(key)
            data[key] = Entry(type_, value_from_wire(type_, v), exp, pos, effect[5] if len(effect) > 5 else None)
            if exp:
                self.expires[key] = exp
            elif old is not None:
                self.expires.pop(key, None)
            if self.watchers:
                self._touch(key)
        elif op == E_FLUSH:
            if self.watchers:
                for k in list(self.watchers):
                    if k in data:
                        self._touch(k)
            if self.track_deletes:
                for k in data:
                    self.deleted_pos[k] = pos
            data.clear()
            self.expires.clear()
        else:
            raise ValueError(f"unknown effect opcode {op!r}")

    def _remove(self, key: bytes, pos: int) -> None:
        if self.data.pop(key, None) is not None:
            self.expires.pop(key, None)
            if self.track_deletes:
                self.deleted_pos[key] = pos
            if self.watchers:
                self._touch(key)

    def touch(self, key: bytes) -> None:
        """A write that changed nothing stored still counts as a modification for WATCH (as
        Redis's signalModifiedKey), e.g. SET with a time already past on a missing key."""
        if self.watchers:
            self._touch(key)

    def _touch(self, key: bytes) -> None:
        ws = self.watchers.get(key)
        if ws:
            for w in ws:
                w.dirty = True

    # ------------------------------------------------------------------ whole keyspace
    def clear(self) -> None:
        self.data.clear()
        self.expires.clear()
        self.deleted_pos.clear()
        self.deleted_floor = 0

    def load_entry(self, key: bytes, type_: int, value, expire_at: int, pos: int) -> None:
        """Insert an entry read from a snapshot."""
        self.data[key] = Entry(type_, value, expire_at, pos)
        if expire_at:
            self.expires[key] = expire_at


def entry_to_wire(key: bytes, e: Entry) -> list:
    """An entry as a msgpack-friendly list (snapshots, full resync)."""
    v = e.value
    if e.type == T_HASH:
        flat = []
        for f, x in v.items():
            flat.append(f)
            flat.append(x)
        v = flat
    elif e.type == T_SET:
        v = list(v)
    if e.meta is not None:
        return [key, e.type, v, e.expire_at, e.pos, e.meta]
    return [key, e.type, v, e.expire_at, e.pos]


def value_to_wire(e: Entry):
    """An entry's value in wire form: bytes, a flat [field, value, ...] list, or members."""
    v = e.value
    if e.type == T_HASH:
        flat = []
        for f, x in v.items():
            flat.append(f)
            flat.append(x)
        return flat
    if e.type == T_SET:
        return list(v)
    return v


def value_from_wire(type_: int, v):
    if type_ == T_HASH:
        return dict(zip(v[::2], v[1::2], strict=True))
    if type_ == T_SET:
        return set(v)
    if type_ != T_STRING:
        raise ValueError(f"unknown type {type_!r}")
    return v


def entry_from_wire(ks: Keyspace, item: list) -> None:
    key, type_, v, exp, pos = item[:5]
    try:
        v = value_from_wire(type_, v)
    except ValueError:
        raise ValueError(f"unknown type {type_!r} for key {key!r}") from None
    ks.load_entry(key, type_, v, exp, pos)
    if len(item) > 5:
        ks.data[key].meta = item[5]


def digest(ks: Keyspace, now_ms: int | None = None) -> str:
    """A digest of the whole logical keyspace (keys, types, values, expiry times), independent
    of insertion order and of log positions: two replicas with the same data have the same
    digest. Keys logically expired at ``now_ms`` are left out when ``now_ms`` is given."""
    import hashlib

    acc = 0
    for k, e in ks.data.items():
        if now_ms is not None and e.expire_at and e.expire_at <= now_ms:
            continue
        h = hashlib.sha1(k)
        h.update(b"\x00%d\x00%d\x00" % (e.type, e.expire_at))
        if e.type == T_STRING:
            h.update(e.value)
        elif e.type == T_HASH:
            for f in sorted(e.value):
                h.update(b"%d:%s%d:%s" % (len(f), f, len(e.value[f]), e.value[f]))
        else:
            for m in sorted(e.value):
                h.update(b"%d:%s" % (len(m), m))
        acc ^= int.from_bytes(h.digest(), "big")
    return "%040x" % acc
