"""In-process checks of the record / event encodings and the log tailer."""

from __future__ import annotations

import os

import msgpack

from replikv.core.keyspace import E_DEL, E_HSET, E_PUT, E_SADD, E_SET, T_HASH, Keyspace, digest
from replikv.logformats.changes import record_changes
from replikv.logformats.formats import event_payload, image_effects, repl_kind, row_images
from replikv.logformats.reader import LogTailer
from replikv.storage.engine import Storage
from replikv.storage.log import Event, Record, decode_payload


def test_old_four_element_records_still_decode():
    rec = decode_payload(msgpack.packb([3, 1, 99, [[E_SET, b"k", b"v", 0]]], use_bin_type=True))
    assert (rec.seq, rec.epoch, rec.ts_ms, rec.repl, rec.images) == (3, 1, 99, None, None)


def test_records_with_repl_and_images_and_events():
    effects = [[E_SET, b"k", b"v", 0]]
    for repl, images in (([[b"SET", b"k", b"v"]], None), ([[b"k", 0, b"v", 0]], None), (None, [[b"k", 0, b"v", 0]])):
        payload = Record(7, 2, 5, effects, repl, images).to_payload()
        rec = decode_payload(payload)
        assert (rec.effects, rec.repl, rec.images) == (effects, repl, images)
        ev = decode_payload(event_payload(payload, msgpack.packb("row"), msgpack.packb("eff")))
        assert (ev.seq, ev.epoch, ev.ts_ms) == (7, 2, 5)
        if repl is None:
            assert ev.effects == Event("eff", effects)
        else:
            assert ev.effects == Event("row", repl)


def test_row_images_replace_entries_exactly():
    a, b = Keyspace(), Keyspace()
    effs = [(E_SET, b"s", b"v", 123), (E_HSET, b"h", [b"f", b"1", b"g", b"2"]), (E_SADD, b"set", [b"x", b"y"]),
            (E_SET, b"gone", b"1", 0), (E_DEL, b"gone")]
    for e in effs:
        a.apply(e, 1)
    images = row_images(a, effs)
    assert repl_kind(images) == "row" and repl_kind([[b"DEL", b"k"]]) == "stmt"
    b.apply((E_SET, b"h", b"old", 0), 1)
    for e in image_effects(images):
        b.apply(e, 1)
    assert digest(a) == digest(b) and b.data[b"h"].type == T_HASH
    assert any(e[0] == E_PUT for e in image_effects(images))


def test_tailer_follows_segments_and_changes(tmp_path):
    st = Storage(str(tmp_path), segment_bytes=300)
    st.recover()
    t = LogTailer(os.path.join(str(tmp_path), "log"))
    seen = []
    for i in range(1, 60):
        st.append([(E_SET, b"k%d" % i, b"x" * 20, 0)], 0)
        st.write_out(*st.take_buffer(), sync=False)
        if i % 7 == 0:
            seen += t.read(len(seen) + 1)
    seen += t.read(len(seen) + 1)
    assert [r.seq for r in seen] == list(range(1, 60))
    assert len(os.listdir(os.path.join(str(tmp_path), "log"))) > 3
    assert record_changes(seen[4]) == [{"op": "set", "key": b"k5", "value": b"x" * 20, "expire_at": 0}]
    st.close()
