"""Keyspace entries stay out of the cyclic garbage collector.

A full collection walks every tracked object; with entries tracked it walked the whole
keyspace (65 ms for 500k keys, measured) and stalled a follower that long in the middle
of a burst. An entry only ever holds bytes, ints, None and containers of bytes, so it can
be in no reference cycle and reference counting frees it. These tests pin that down: a
change that makes entries tracked again, or that loses values when the collector runs,
fails here (recordclass is a dependency: without it the keyspace falls back to a tracked
class, and the first test says so).
"""

from __future__ import annotations

import gc

from replikv.core.keyspace import E_HSET, E_META, E_SADD, E_SET, T_HASH, T_SET, T_STRING, Entry, Keyspace


def _filled() -> Keyspace:
    ks = Keyspace()
    pos = 0
    for i in range(3000):
        pos += 1
        ks.apply((E_SET, b"s:%d" % i, b"v%d" % i, 0), pos)
        pos += 1
        ks.apply((E_HSET, b"h:%d" % i, [b"f", b"%d" % i]), pos)
        pos += 1
        ks.apply((E_SADD, b"m:%d" % i, [b"a", b"%d" % i]), pos)
    pos += 1
    ks.apply((E_META, b"s:0", {"deps": [[0, 1]]}), pos)
    return ks


def test_entries_of_every_type_are_not_tracked_by_the_collector():
    ks = _filled()
    kinds = {T_STRING: 0, T_HASH: 0, T_SET: 0}
    for e in ks.data.values():
        assert not gc.is_tracked(e), e
        kinds[e.type] += 1
    assert kinds == {T_STRING: 3000, T_HASH: 3000, T_SET: 3000}
    assert ks.data[b"s:0"].meta == {"deps": [[0, 1]]}


def test_collections_keep_every_value_and_entries_stay_mutable():
    ks = _filled()
    gc.collect()
    gc.collect()
    for i in range(3000):
        assert ks.data[b"s:%d" % i].value == b"v%d" % i
        assert ks.data[b"h:%d" % i].value == {b"f": b"%d" % i}
        assert ks.data[b"m:%d" % i].value == {b"a", b"%d" % i}
    e = ks.data[b"s:7"]
    e.value, e.pos, e.expire_at = b"new", 99, 5
    gc.collect()
    assert (ks.data[b"s:7"].value, ks.data[b"s:7"].pos, ks.data[b"s:7"].expire_at) == (b"new", 99, 5)


def test_an_entry_has_the_fields_and_defaults_the_keyspace_uses():
    e = Entry(T_STRING, b"x")
    assert (e.type, e.value, e.expire_at, e.pos, e.meta) == (T_STRING, b"x", 0, 0, None)
    assert repr(Entry(T_STRING, b"x", 7, 3)) == "Entry(string, b'x', exp=7, pos=3)"
    a, b = Entry(T_STRING, b"x"), Entry(T_STRING, b"x")
    assert a == a and a != b and hash(a) != hash(b)   # identity, as a plain class
