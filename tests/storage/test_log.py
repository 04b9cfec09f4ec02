"""Unit tests of the record log and the storage engine, without sockets.

The log is exercised the way the node drives it (``append`` -> ``take_buffer`` ->
``write_out`` [-> ``sync``], snapshots forked at an exact position, ``roll``,
``finish_snapshot``), and then reopened: recovery must give back exactly what was written,
cut a torn tail (and say so), and refuse, with a clear error, a log that is damaged anywhere
else or that no longer reaches back to the snapshot it would start from.
"""

from __future__ import annotations

import os
import threading

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replikv.core.keyspace import (
    E_APPEND,
    E_DEL,
    E_EXPIRE,
    E_FLUSH,
    E_HDEL,
    E_HSET,
    E_RENAME,
    E_SADD,
    E_SET,
    E_SREM,
    Keyspace,
    digest,
)
from replikv.storage import snapshot as snap
from replikv.storage.engine import Storage
from replikv.storage.log import (
    MAGIC,
    CorruptLogError,
    Event,
    Record,
    RecordLog,
    encode_frame,
    encode_record,
    iter_frames,
    split_records,
)

# ---------------------------------------------------------------------------- helpers


def rec_effects(seq: int) -> list:
    return [(E_SET, b"k%d" % (seq % 7), b"v%d" % seq, 0)]


def write_log(directory: str, n: int, batch: int = 3, segment_bytes: int = 1 << 20, first: int = 1,
              log: RecordLog | None = None) -> RecordLog:
    """Append records first..first+n-1 in batches of ``batch`` frames per write_out."""
    if log is None:
        log = RecordLog(directory, segment_bytes)
        list(log.open())
        log.start(first)
    seq = first
    end = first + n
    while seq < end:
        hi = min(seq + batch, end)
        data = b"".join(encode_record(s, 0, 1000 + s, [list(e) for e in rec_effects(s)])
                        for s in range(seq, hi))
        log.write_out(data, hi - 1, seq)
        seq = hi
    log.sync()
    return log


def reopen(directory: str, segment_bytes: int = 1 << 20, after: int = 0):
    log = RecordLog(directory, segment_bytes)
    recs = list(log.open(after_seq=after))
    return log, recs


def seg_files(directory: str) -> list[str]:
    return sorted(os.path.join(directory, f) for f in os.listdir(directory) if f.endswith(".log"))


def frame_offsets(path: str) -> list[tuple[int, int]]:
    with open(path, "rb") as fh:
        data = fh.read()
    return [(off, end) for off, end, p in iter_frames(data, len(MAGIC)) if p is not None]


def flip(path: str, offset: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0x5A]))


def cut(path: str, size: int) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(size)


def drive(st_: Storage, effects_batches: list[list[tuple]], now: int = 10_000) -> None:
    """Apply batches of effects the way the node does: in memory, then one record each."""
    for effects in effects_batches:
        pos = st_.last_seq + 1
        for e in effects:
            st_.ks.apply(e, pos)
        st_.append([list(e) for e in effects], now)


def flush(st_: Storage, sync: bool = True) -> None:
    pending = st_.take_buffer()
    if pending is not None:
        st_.write_out(*pending, sync=sync)


def snapshot(st_: Storage, keep_log_bytes: int = 0, write_between: list | None = None) -> int:
    """A background snapshot as node.start_snapshot does it: fork at the current position,
    write the pending records, roll, wait for the child, finish. ``write_between`` batches
    are applied and written out *before* the roll runs (as the event loop may do under
    fsync everysec while the roll waits on the IO thread)."""
    pid, seq, pending = st_.fork_snapshot()
    if pending is not None:
        st_.write_out(*pending, sync=True)
    if write_between:
        drive(st_, write_between)
        flush(st_, sync=False)
    st_.log.roll(seq + 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    st_.finish_snapshot(seq, keep_log_bytes)
    return seq


def recovered(data_dir: str, segment_bytes: int = 1 << 20) -> Storage:
    s = Storage(data_dir, segment_bytes, log=lambda m: None)
    s.recover()
    return s


def replay(records) -> Keyspace:
    ks = Keyspace()
    for r in records:
        for e in r.effects:
            ks.apply(e, r.seq)
    return ks


# ---------------------------------------------------------------------------- RecordLog


def test_append_write_out_reopen_same_records(tmp_path):
    d = str(tmp_path / "log")
    log = write_log(d, 50, batch=4)
    log.close()
    log2, recs = reopen(d)
    assert [r.seq for r in recs] == list(range(1, 51))
    for r in recs:
        assert r.ts_ms == 1000 + r.seq
        assert r.effects == [list(e) for e in rec_effects(r.seq)]
    assert log2.last_seq == 50 and not log2.truncation_note
    # continue appending after a reopen, then reopen again
    log2.start(51)
    write_log(d, 10, log=log2, first=51)
    log2.close()
    _, recs = reopen(d)
    assert [r.seq for r in recs] == list(range(1, 61))
    _, tail = reopen(d, after=55)
    assert [r.seq for r in tail] == [56, 57, 58, 59, 60]


def test_write_out_refuses_out_of_order(tmp_path):
    log = write_log(str(tmp_path / "log"), 5)
    with pytest.raises(CorruptLogError):
        log.write_out(encode_record(7, 0, 0, []), 7, 7)
    with pytest.raises(CorruptLogError):
        log.write_out(encode_record(5, 0, 0, []), 5, 5)


def test_read_from_across_segments(tmp_path):
    d = str(tmp_path / "log")
    log = write_log(d, 200, batch=5, segment_bytes=600)
    assert len(log.segments) > 4
    got = log.read_from(1, max_bytes=1 << 30)
    assert [s for s, _ in got] == list(range(1, 201))
    for s, frame in got:
        ((_, _, payload),) = list(iter_frames(frame))
        assert payload is not None and frame == encode_record(s, 0, 1000 + s,
                                                              [list(e) for e in rec_effects(s)])
    for start in (1, 2, 57, 199, 200):
        got = log.read_from(start, max_bytes=1 << 30)
        assert [s for s, _ in got] == list(range(start, 201))
    assert log.read_from(201) == []
    # max_bytes bounds a batch; consecutive batches cover everything exactly once
    seen, seq = [], 1
    while True:
        batch = log.read_from(seq, max_bytes=300)
        if not batch:
            break
        assert sum(len(f) for _, f in batch) < 300 + 100
        seen += [s for s, _ in batch]
        seq = batch[-1][0] + 1
    assert seen == list(range(1, 201))


def test_roll_and_remove_through(tmp_path):
    d = str(tmp_path / "log")
    log = write_log(d, 30)
    log.roll(31)
    write_log(d, 30, log=log, first=31)
    log.roll(61)
    write_log(d, 5, log=log, first=61)
    assert [s.first_seq for s in log.segments] == [1, 31, 61]
    assert log.remove_through(29) == 0           # segment 1..30 still holds record 30
    assert log.remove_through(30) == 1
    assert log.first_seq == 31
    assert log.remove_through(10_000) == 1       # never the current segment
    assert [s.first_seq for s in log.segments] == [61]
    assert len(seg_files(d)) == 1
    assert [s for s, _ in log.read_from(1)] == list(range(61, 66))
    log.close()
    _, recs = reopen(d)
    assert [r.seq for r in recs] == list(range(61, 66))


def test_remove_through_keeps_bytes(tmp_path):
    d = str(tmp_path / "log")
    log = write_log(d, 10)
    for first in (11, 21, 31):
        log.roll(first)
        write_log(d, 10, log=log, first=first)
    sizes = [s.size for s in log.segments]
    # keep the newest removable segment (bytes for one), remove the two before it
    assert log.remove_through(30, keep_bytes=sizes[2]) == 2
    assert [s.first_seq for s in log.segments] == [21, 31]


def test_roll_after_later_records_were_written(tmp_path):
    """A roll asked for at snapshot seq+1 that runs after records past the snapshot were
    already written must not name the new segment after records it does not hold."""
    d = str(tmp_path / "log")
    log = write_log(d, 10)
    write_log(d, 3, log=log, first=11)      # written before the roll ran
    log.roll(11)
    write_log(d, 2, log=log, first=14)
    assert [s.first_seq for s in log.segments] == [1, 14]
    assert log.remove_through(10) == 0      # the first segment holds 11..13: keep it
    log.close()
    _, recs = reopen(d)
    assert [r.seq for r in recs] == list(range(1, 16))


def test_roll_on_size(tmp_path):
    d = str(tmp_path / "log")
    log = write_log(d, 100, batch=1, segment_bytes=300)
    files = seg_files(d)
    assert len(files) > 5
    for f in files[:-1]:
        assert os.path.getsize(f) < 300 + 100
    log.close()
    _, recs = reopen(d, 300)
    assert [r.seq for r in recs] == list(range(1, 101))


def test_concurrent_write_out_and_sync(tmp_path):
    """write_out on one thread (the event loop under everysec) while another fsyncs and
    rolls (the IO thread): no EBADF, no record out of place."""
    d = str(tmp_path / "log")
    log = RecordLog(d, 2000)
    list(log.open())
    log.start(1)
    stop = threading.Event()
    errors = []

    def syncer():
        try:
            i = 0
            while not stop.is_set():
                log.sync()
                i += 1
                if i % 50 == 0:
                    log.roll(log.last_seq + 1)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=syncer)
    t.start()
    try:
        write_log(d, 3000, batch=2, log=log)
    finally:
        stop.set()
        t.join()
    assert not errors
    log.close()
    _, recs = reopen(d, 2000)
    assert [r.seq for r in recs] == list(range(1, 3001))


# ---------------------------------------------------------------------------- torn tails


def test_torn_tail_every_cut_point(tmp_path):
    """Cut the last segment anywhere inside its last frame: that record goes, the rest stays,
    and the truncation is reported; appending afterwards continues cleanly."""
    base = str(tmp_path / "base")
    write_log(base, 8, batch=1, segment_bytes=100).close()
    files = seg_files(base)
    assert len(files) >= 2
    last = files[-1]
    frames = frame_offsets(last)
    off, end = frames[-1]
    last_seq_full = 8
    for cut_at in range(off + 1, end):
        d = str(tmp_path / f"c{cut_at}")
        os.makedirs(d)
        for f in files:
            with open(f, "rb") as a, open(os.path.join(d, os.path.basename(f)), "wb") as b:
                b.write(a.read())
        cut(os.path.join(d, os.path.basename(last)), cut_at)
        log, recs = reopen(d, 100)
        assert [r.seq for r in recs] == list(range(1, last_seq_full)), cut_at
        assert log.truncation_note and "torn tail" in log.truncation_note
        assert log.truncated_bytes == cut_at - off
        assert os.path.getsize(os.path.join(d, os.path.basename(last))) == off
        log.start(last_seq_full)
        write_log(d, 2, log=log, first=last_seq_full)
        log.close()
        log, recs = reopen(d, 100)
        assert [r.seq for r in recs] == list(range(1, last_seq_full + 2))
        assert not log.truncation_note


def test_torn_header_of_new_segment(tmp_path):
    d = str(tmp_path / "log")
    log = write_log(d, 5)
    log.roll(6)
    log.close()
    files = seg_files(d)
    assert len(files) == 2
    for size in (0, 3):
        cut(files[-1], size)
        log, recs = reopen(d)
        assert [r.seq for r in recs] == [1, 2, 3, 4, 5]
        assert log.last_seq == 5
        log.start(6)
        log.close()


@pytest.mark.parametrize("where", ["length", "crc", "payload", "last byte"])
def test_flipped_byte_in_last_record_is_a_torn_tail(tmp_path, where):
    d = str(tmp_path / "log")
    write_log(d, 12).close()
    path = seg_files(d)[-1]
    off, end = frame_offsets(path)[-1]
    at = {"length": off + 1, "crc": off + 5, "payload": off + 12, "last byte": end - 1}[where]
    flip(path, at)
    log, recs = reopen(d)
    assert [r.seq for r in recs] == list(range(1, 12))
    assert "torn tail" in log.truncation_note
    assert os.path.getsize(path) == off


def test_zero_filled_tail_is_a_torn_tail(tmp_path):
    """After a power loss a file can end in zeroed blocks (size updated, data not)."""
    d = str(tmp_path / "log")
    write_log(d, 6).close()
    path = seg_files(d)[-1]
    size = os.path.getsize(path)
    with open(path, "ab") as fh:
        fh.write(b"\0" * 4096)
    log, recs = reopen(d)
    assert [r.seq for r in recs] == list(range(1, 7))
    assert log.truncation_note and os.path.getsize(path) == size


def test_frame_shaped_user_value_in_torn_record_is_still_a_torn_tail(tmp_path):
    """A value that itself contains a well-formed frame (say someone stores log bytes in a
    key) must not turn an honest torn tail into a refusal to start."""
    d = str(tmp_path / "log")
    log = write_log(d, 3)
    inner = encode_record(1, 0, 0, [[E_SET, b"x", b"y", 0]])
    big = encode_record(4, 0, 0, [[E_SET, b"blob", b"A" * 50 + inner + b"B" * 50, 0]])
    log.write_out(big, 4, 4)
    log.close()
    path = seg_files(d)[-1]
    cut(path, os.path.getsize(path) - 10)
    log, recs = reopen(d)
    assert [r.seq for r in recs] == [1, 2, 3]
    assert log.truncation_note


# ---------------------------------------------------------------------------- corruption


def test_flipped_byte_in_earlier_segment_is_corruption(tmp_path):
    d = str(tmp_path / "log")
    write_log(d, 40, segment_bytes=400).close()
    files = seg_files(d)
    assert len(files) >= 3
    # the last record of a non-last segment: a torn tail there is impossible
    off, end = frame_offsets(files[1])[-1]
    flip(files[1], off + 10)
    with pytest.raises(CorruptLogError) as ei:
        reopen(d, 400)
    msg = str(ei.value)
    assert os.path.basename(files[1]) in msg and f"offset {off}" in msg
    assert "refusing to start" in msg


def test_flipped_byte_mid_last_segment_is_corruption(tmp_path):
    d = str(tmp_path / "log")
    write_log(d, 20).close()
    path = seg_files(d)[-1]
    frames = frame_offsets(path)
    off, _ = frames[10]
    flip(path, off + 9)
    with pytest.raises(CorruptLogError) as ei:
        reopen(d)
    assert "valid records after it" in str(ei.value)
    # the file was not touched (no truncation of good data)
    assert len(frame_offsets(path)) == 10


def test_bad_magic_and_version(tmp_path):
    d = str(tmp_path / "log")
    write_log(d, 3).close()
    path = seg_files(d)[-1]
    with open(path, "r+b") as fh:
        fh.seek(7)
        fh.write(b"\x09")
    with pytest.raises(CorruptLogError, match="format version 9"):
        reopen(d)
    with open(path, "r+b") as fh:
        fh.write(b"XXXXXX")
    with pytest.raises(CorruptLogError, match="bad magic"):
        reopen(d)


def test_gap_between_segments_is_corruption(tmp_path):
    d = str(tmp_path / "log")
    log = write_log(d, 10)
    log.roll(11)
    write_log(d, 10, log=log, first=11)
    log.roll(21)
    write_log(d, 10, log=log, first=21)
    log.close()
    os.unlink(seg_files(d)[1])
    with pytest.raises(CorruptLogError, match="previous segment ends at 10"):
        reopen(d)


# ---------------------------------------------------------------------------- Storage


def test_storage_snapshot_plus_log_recovers_same_digest(tmp_path):
    d = str(tmp_path / "n")
    s = recovered(d, 2000)
    drive(s, [[(E_SET, b"a%d" % i, b"x" * i, 0)] for i in range(100)])
    flush(s)
    drive(s, [[(E_HSET, b"h", [b"f%d" % i, b"%d" % i])] for i in range(50)])
    seq = snapshot(s)
    assert seq == 150
    drive(s, [[(E_SADD, b"s", [b"m%d" % i]), (E_DEL, b"a%d" % i)] for i in range(40)])
    flush(s)
    want = digest(s.ks)
    s.close()
    assert len(os.listdir(os.path.join(d, "snapshots"))) == 1
    r = recovered(d, 2000)
    assert digest(r.ks) == want
    assert r.snapshot_seq == 150 and r.last_seq == 190 and r.recovered_records == 40
    assert r.log.first_seq == 151                    # covered segments went
    r.close()


def test_fork_snapshot_is_at_exact_position_while_writes_continue(tmp_path):
    d = str(tmp_path / "n")
    s = recovered(d)
    drive(s, [[(E_SET, b"k", b"%d" % i, 0)] for i in range(20)])
    pid, seq, pending = s.fork_snapshot()
    s.write_out(*pending, sync=True)
    drive(s, [[(E_SET, b"k", b"after", 0)]])         # the parent goes on writing
    flush(s)
    s.log.roll(seq + 1)
    os.waitpid(pid, 0)
    s.finish_snapshot(seq)
    ((header, chunks, _),) = list(snap.newest_valid(s.snap_dir))[:1]
    assert header["seq"] == 20
    ks = Keyspace()
    snap.load_into(ks, chunks)
    assert ks.data[b"k"].value == b"19"
    s.close()
    assert recovered(d).ks.data[b"k"].value == b"after"


def test_writes_between_fork_and_roll_survive(tmp_path):
    d = str(tmp_path / "n")
    s = recovered(d)
    drive(s, [[(E_SET, b"a%d" % i, b"1", 0)] for i in range(10)])
    flush(s)
    snapshot(s, write_between=[[(E_SET, b"b%d" % i, b"2", 0)] for i in range(5)])
    drive(s, [[(E_SET, b"c", b"3", 0)]])
    flush(s)
    want = digest(s.ks)
    s.close()
    r = recovered(d)
    assert digest(r.ks) == want and len(r.ks) == 16
    r.close()
    assert digest(recovered(d).ks) == want


def test_corrupt_newest_snapshot_falls_back_to_full_log(tmp_path):
    d = str(tmp_path / "n")
    s = recovered(d, 500)
    drive(s, [[(E_SET, b"k%d" % (i % 13), b"%d" % i, 0)] for i in range(60)])
    flush(s)
    snapshot(s, keep_log_bytes=1 << 30)             # keep the whole log
    drive(s, [[(E_DEL, b"k3")]])
    flush(s)
    want = digest(s.ks)
    s.close()
    ((_, path),) = snap.list_snapshots(os.path.join(d, "snapshots"))
    flip(path, os.path.getsize(path) // 2)
    notes = []
    r = Storage(d, 500, log=notes.append)
    r.recover()
    assert digest(r.ks) == want and r.snapshot_seq == 0
    assert any("invalid" in n for n in notes)


def test_corrupt_newest_snapshot_falls_back_to_older_snapshot(tmp_path):
    """Two snapshots on disk (the node died before the second one's finish step removed the
    first and the covered log): the newest is damaged, the older one plus the log serves."""
    d = str(tmp_path / "n")
    s = recovered(d, 300)
    drive(s, [[(E_SET, b"k%d" % (i % 11), b"%d" % i, 0)] for i in range(40)])
    flush(s)
    snapshot(s)
    for _ in range(2):
        drive(s, [[(E_HSET, b"h", [b"f%d" % i, b"%d" % i])] for i in range(30)])
        pid, seq, pending = s.fork_snapshot()
        s.write_out(*pending, sync=True)
        s.log.roll(seq + 1)
        os.waitpid(pid, 0)
        snap.publish_snapshot(s.snap_dir, seq)      # ... then killed before the clean-up
    drive(s, [[(E_DEL, b"k1")]])
    flush(s)
    want = digest(s.ks)
    s.close()
    snaps = snap.list_snapshots(os.path.join(d, "snapshots"))
    assert [q for q, _ in snaps] == [40, 70, 100]
    flip(snaps[-1][1], os.path.getsize(snaps[-1][1]) // 2)
    r = recovered(d, 300)
    assert r.snapshot_seq == 70 and digest(r.ks) == want and r.last_seq == 101


def test_corrupt_newest_snapshot_with_log_removed_fails_clearly(tmp_path):
    d = str(tmp_path / "n")
    s = recovered(d, 500)
    drive(s, [[(E_SET, b"k%d" % (i % 13), b"%d" % i, 0)] for i in range(60)])
    flush(s)
    snapshot(s)
    drive(s, [[(E_SET, b"z", b"1", 0)]])
    flush(s)
    s.close()
    ((_, path),) = snap.list_snapshots(os.path.join(d, "snapshots"))
    flip(path, os.path.getsize(path) // 2)
    with pytest.raises(CorruptLogError, match="records 1..60 are missing") as ei:
        recovered(d, 500)
    assert "newer snapshot was invalid" in str(ei.value)


def test_corrupt_only_snapshot_with_empty_log_after_it_fails_clearly(tmp_path):
    """No record after the snapshot (the log was just rolled): without the snapshot, the
    node must not come up empty at the snapshot's position."""
    d = str(tmp_path / "n")
    s = recovered(d, 500)
    drive(s, [[(E_SET, b"k%d" % i, b"v", 0)] for i in range(30)])
    flush(s)
    snapshot(s)
    s.close()
    ((_, path),) = snap.list_snapshots(os.path.join(d, "snapshots"))
    cut(path, os.path.getsize(path) - 3)
    with pytest.raises(CorruptLogError, match="log starts at seq 31 .* records 1..30 are missing"):
        recovered(d, 500)


def test_snapshot_ahead_of_log_recovers_twice(tmp_path):
    """The snapshot child finished before the parent's records reached the disk, then a
    crash: recovery continues after the snapshot, and so does the recovery after that."""
    d = str(tmp_path / "n")
    s = recovered(d)
    drive(s, [[(E_SET, b"a%d" % i, b"1", 0)] for i in range(10)])
    flush(s)
    drive(s, [[(E_SET, b"b%d" % i, b"2", 0)] for i in range(5)])
    pid, seq, pending = s.fork_snapshot()          # records 11..15 are never written out
    os.waitpid(pid, 0)
    snap.publish_snapshot(s.snap_dir, seq)         # (fsync everysec, then a power loss)
    s.close()
    want = digest(s.ks)
    r = recovered(d)
    assert r.last_seq == 15 and digest(r.ks) == want
    drive(r, [[(E_SET, b"c", b"3", 0)]])
    flush(r)
    want = digest(r.ks)
    r.close()
    r2 = recovered(d)
    assert r2.last_seq == 16 and digest(r2.ks) == want
    r2.close()


def test_snapshot_forked_before_a_rollback_is_discarded(tmp_path):
    """A rollback (failover) replaces the data while a snapshot child writes: the child's
    snapshot describes records that no longer exist and must not become the base of the
    log (nor remove the segments now holding the new records at those positions)."""
    from replikv.storage.rollback import rollback

    d = str(tmp_path / "n")
    s = recovered(d, 400)
    drive(s, [[(E_SET, b"k%d" % i, b"old", 0)] for i in range(20)])
    flush(s)
    pid, seq, pending = s.fork_snapshot()
    assert seq == 20 and pending is None
    s.log.roll(seq + 1)
    os.waitpid(pid, 0)                        # the child wrote snap-20 (not yet published)
    assert rollback(s, 10, 1, "test") == 10   # its recovery must not pick that file up
    assert s.snapshot_seq == 0 and s.last_seq == 10
    drive(s, [[(E_SET, b"k%d" % i, b"new", 0)] for i in range(15)])
    flush(s)
    assert s.finish_snapshot(seq) == 0
    assert snap.list_snapshots(s.snap_dir) == [] and s.snapshot_seq == 0
    want = digest(s.ks)
    s.close()
    r = recovered(d, 400)
    assert digest(r.ks) == want and r.last_seq == 25
    assert r.ks.data[b"k14"].value == b"new" and b"k19" not in r.ks.data


def test_epoch_survives_in_snapshot(tmp_path):
    d = str(tmp_path / "n")
    s = recovered(d)
    s.epoch = 7
    drive(s, [[(E_SET, b"a", b"1", 0)]])
    flush(s)
    snapshot(s)
    s.close()
    assert recovered(d).epoch == 7


def test_child_never_publishes_its_snapshot(tmp_path):
    """Only the parent's finish_snapshot renames the child's file into place: a parent that
    dies first leaves a temp file (removed at the next start), never a snapshot."""
    d = str(tmp_path / "n")
    s = recovered(d)
    drive(s, [[(E_SET, b"a%d" % i, b"1", 0)] for i in range(10)])
    flush(s)
    pid, seq, _ = s.fork_snapshot()
    os.waitpid(pid, 0)
    assert snap.list_snapshots(s.snap_dir) == []
    assert os.path.exists(s.snapshot_path(seq) + ".tmp")
    s.close()
    r = recovered(d)
    assert os.listdir(r.snap_dir) == [] and len(r.ks) == 10


def test_stale_snapshot_tmp_is_removed(tmp_path):
    d = str(tmp_path / "n")
    s = recovered(d)
    drive(s, [[(E_SET, b"a", b"1", 0)]])
    flush(s)
    s.close()
    os.makedirs(os.path.join(d, "snapshots"), exist_ok=True)
    junk = os.path.join(d, "snapshots", snap.snapshot_name(1) + ".tmp")
    with open(junk, "wb") as fh:
        fh.write(b"half a snapshot")
    r = recovered(d)
    assert not os.path.exists(junk) and len(r.ks) == 1


# ---------------------------------------------------------------------------- property

KEYS = st.sampled_from([b"a", b"b", b"c", b"d"])
VALS = st.binary(max_size=12)
FIELDS = st.lists(st.sampled_from([b"f1", b"f2", b"f3"]), min_size=1, max_size=3)


def _ns(prefix: bytes):
    return KEYS.map(lambda k: prefix + k)


EFFECT = st.one_of(
    st.tuples(st.just(E_SET), _ns(b"s"), VALS, st.sampled_from([0, 0, 5_000, 20_000])),
    st.tuples(st.just(E_APPEND), _ns(b"s"), VALS),
    st.tuples(st.just(E_DEL), st.one_of(_ns(b"s"), _ns(b"h"), _ns(b"t"))),
    st.tuples(st.just(E_EXPIRE), st.one_of(_ns(b"s"), _ns(b"h")), st.sampled_from([0, 7_000, 30_000])),
    st.tuples(st.just(E_HSET), _ns(b"h"), FIELDS.map(lambda fs: [x for f in fs for x in (f, f + b"v")])),
    st.tuples(st.just(E_HDEL), _ns(b"h"), FIELDS),
    st.tuples(st.just(E_SADD), _ns(b"t"), FIELDS),
    st.tuples(st.just(E_SREM), _ns(b"t"), FIELDS),
    st.sampled_from([(E_RENAME, b"sa", b"sb"), (E_RENAME, b"hc", b"hd"), (E_RENAME, b"tb", b"ta")]),
    st.just((E_FLUSH,)),
)
# a step: a record of effects, or a control action
STEP = st.one_of(
    st.lists(EFFECT, min_size=1, max_size=4),
    st.lists(EFFECT, min_size=1, max_size=4),
    st.lists(EFFECT, min_size=1, max_size=4),
    st.sampled_from(["flush", "flush", "snapshot", "restart"]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(STEP, max_size=40), seg=st.sampled_from([150, 400, 1 << 20]),
       keep=st.sampled_from([0, 0, 1 << 30]), tear=st.integers(0, 200))
def test_random_history_recovers_same_digest(tmp_path_factory, steps, seg, keep, tear):
    """Random records, with snapshots and restarts in between, recover to the very keyspace
    that was written; a torn last write recovers to a prefix of the history."""
    d = str(tmp_path_factory.mktemp("h"))
    s = recovered(d, seg)
    history: list[list[tuple]] = []
    for step in steps:
        if step == "flush":
            flush(s, sync=False)
        elif step == "snapshot":
            snapshot(s, keep_log_bytes=keep)
        elif step == "restart":
            flush(s)
            want = digest(s.ks)
            s.close()
            s = recovered(d, seg)
            assert digest(s.ks) == want
        else:
            history.append(step)
            drive(s, [step])
    flush(s)
    want = digest(s.ks)
    last = s.last_seq
    s.close()
    r = recovered(d, seg)
    assert digest(r.ks) == want and r.last_seq == last
    r.close()
    # tear the last write: cut the newest segment somewhere in its last frame
    path = seg_files(os.path.join(d, "log"))[-1]
    frames = frame_offsets(path)
    if not frames or r.snapshot_seq >= last:
        return
    off, end = frames[-1]
    cut(path, off + 1 + tear % (end - off - 1))
    r = recovered(d, seg)
    assert r.last_seq == last - 1 and r.truncation_note
    # what was recovered is exactly the history minus its last record
    ks = Keyspace()
    for i, effects in enumerate(history[:-1]):
        for e in effects:
            ks.apply(e, i + 1)
    assert digest(r.ks) == digest(ks)


# ---------------------------------------------------------------------- split_records
def test_split_records_gives_every_record_and_its_frame():
    frames = [encode_record(s, 2, 1000 + s, [(0, b"k%d" % s, b"v", 0)]) for s in range(5, 9)]
    event = encode_frame(msgpack.packb([9, 3, 2000, "stmt", [b"SET", b"a", b"1"]], use_bin_type=True))
    with_images = encode_frame(Record(10, 3, 2001, [[0, b"b", b"2", 0]], ["r"], [["img"]]).to_payload())
    data = b"".join(frames) + event + with_images
    recs = split_records(data, 5)
    assert [r[0] for r in recs] == [5, 6, 7, 8, 9, 10]
    assert recs[0][1:3] == (2, 1005)
    assert recs[0][3] == [[0, b"k5", b"v", 0]]
    assert [r[4] for r in recs[:4]] == frames and recs[4][4] == event and recs[5][4] == with_images
    assert recs[4][3] == Event("stmt", [b"SET", b"a", b"1"])
    assert recs[5][3] == [[0, b"b", b"2", 0]]
    # the same records as the reader of the log files sees
    assert [(off, end) for off, end, _ in iter_frames(data)] == [
        (sum(len(r[4]) for r in recs[:i]), sum(len(r[4]) for r in recs[:i + 1])) for i in range(6)]


@pytest.mark.parametrize("damage", ["crc", "short", "order", "first"])
def test_split_records_refuses_a_bad_batch(damage):
    frames = [encode_record(s, 1, 0, []) for s in (1, 2, 3)]
    first = 1
    if damage == "crc":
        bad = bytearray(frames[1])
        bad[-1] ^= 0xFF
        frames[1] = bytes(bad)
    elif damage == "short":
        frames[2] = frames[2][:-1]
    elif damage == "order":
        frames[1], frames[2] = frames[2], frames[1]
    else:
        first = 2
    with pytest.raises(ValueError):
        split_records(b"".join(frames), first)


# ---------------------------------------------------------------------------- a follower's own log


def test_frames_from_a_leader_buffered_whole_or_written_directly_recover_alike(tmp_path):
    """A follower stores the leader's frames byte for byte: one by one (append_frame), a
    batch in one piece through the buffer (append_frames), or a batch it writes out itself
    (note_frames + write_out). All three give the same log; out-of-order or overlapping runs
    are refused, and note_frames refuses to run while records wait in the buffer (they would
    be written after later ones)."""
    leader = str(tmp_path / "leader")
    ls = Storage(leader, log=lambda m: None)
    ls.recover()
    ls.epoch = 3
    for i in range(1, 31):
        ls.append([(E_SET, b"k%d" % (i % 7), b"v%d" % i, 0)], 1000 + i)
    data, first, last = ls.take_buffer()
    ls.write_out(data, first, last, sync=True)
    frames = split_records(data, 1)
    ls.close()

    from replikv.core.keyspace import digest

    def follower(name: str, steps) -> Storage:
        st_ = Storage(str(tmp_path / name), log=lambda m: None)
        st_.recover()
        for step in steps:
            step(st_)
        # the in-memory bookkeeping of the three ways agrees with what was stored
        assert (st_.last_seq, st_.written_seq, st_.epoch) == (30, 30, 3)
        assert st_.records_since_snapshot == 30 and st_.bytes_since_snapshot == len(data)
        st_.close()
        return recovered(str(tmp_path / name))

    def one_by_one(st_):
        for seq, epoch, _ts, _eff, frame in frames[:10]:
            st_.append_frame(frame, seq, epoch)
        st_.write_out(*st_.take_buffer(), sync=False)

    def whole(st_):
        blob = b"".join(f[4] for f in frames[10:20])
        st_.append_frames(blob, 11, 20, 3, 10)
        st_.write_out(*st_.take_buffer(), sync=False)

    def direct(st_):
        blob = b"".join(f[4] for f in frames[20:30])
        st_.note_frames(21, 30, 3, 10, len(blob))
        st_.write_out(blob, 21, 30, sync=False)

    got = follower("f", [one_by_one, whole, direct])
    want = recovered(leader)
    assert got.last_seq == want.last_seq == 30 and got.epoch == want.epoch == 3
    assert digest(got.ks) == digest(want.ks) and len(got.ks) == 7
    got.close()
    want.close()
    with open(os.path.join(leader, "log", sorted(os.listdir(os.path.join(leader, "log")))[0]), "rb") as fh:
        leader_bytes = fh.read()
    with open(os.path.join(str(tmp_path / "f"), "log", sorted(os.listdir(os.path.join(str(tmp_path / "f"), "log")))[0]),
              "rb") as fh:
        assert fh.read() == leader_bytes

    st_ = Storage(str(tmp_path / "g"), log=lambda m: None)
    st_.recover()
    with pytest.raises(ValueError):
        st_.append_frames(frames[1][4], 2, 2, 0, 1)          # 1 is missing
    with pytest.raises(ValueError):
        st_.note_frames(2, 2, 0, 1, len(frames[1][4]))
    st_.append_frame(frames[0][4], 1, 0)
    with pytest.raises(ValueError):
        st_.note_frames(2, 2, 0, 1, len(frames[1][4]))      # record 1 still in the buffer
    assert st_.last_seq == 1
    st_.close()


def test_a_rollback_killed_between_its_steps_is_found_again(tmp_path, monkeypatch):
    """rollback() trims the epoch history before it truncates the log. Killed between the
    two steps, the node restarts with its old records and a history whose last epoch seems
    to reach past the rollback point: the next leader's divergence check finds the same
    point and rolls back again. (The other order left a history naming an epoch whose
    records were gone, and the next epoch's records were later counted in its range.)"""
    from replikv.core.election import divergence_point
    from replikv.storage import rollback as rb

    d = str(tmp_path / "n")
    s = recovered(d)
    s.meta["epochs"] = [[0, 1]]
    drive(s, [[(E_SET, b"a%d" % i, b"x", 0)] for i in range(5)])          # 1..5, epoch 0
    flush(s)
    s.epoch = 1
    s.meta["epochs"] = [[0, 1], [1, 6]]
    s.meta.save()
    drive(s, [[(E_SET, b"b%d" % i, b"y", 0)] for i in range(5)])          # 6..10, epoch 1
    flush(s)

    def killed(*_a, **_k):
        raise KeyboardInterrupt("kill -9")

    monkeypatch.setattr(rb, "truncate_after", killed)
    with pytest.raises(KeyboardInterrupt):
        rb.rollback(s, 5, 1, "the new leader of epoch 2 starts at 6")
    monkeypatch.undo()
    r = recovered(d)
    assert r.last_seq == 10 and r.meta["epochs"] == [[0, 1]]
    # the new leader: epoch 0 up to 5, then its own epoch 2
    assert divergence_point([[0, 1], [2, 6]], 8, r.meta["epochs"], r.last_seq) == 5
    assert rb.rollback(r, 5, 1, "again") == 5 and r.last_seq == 5
    r.close()


def test_a_full_resync_killed_before_it_finishes_is_wiped_at_restart(tmp_path):
    """Storage.install_snapshot replaces the data inside a window marked in meta
    (``resync``); the caller's part (the relay log reset) and the leader's epoch history
    are done inside it. Killed in the window, the node wipes everything at restart, relay
    log included, and resyncs again: no old relay or history is left next to the new data."""
    leader = recovered(str(tmp_path / "leader"))
    drive(leader, [[(E_SET, b"k%d" % i, b"v", 0)] for i in range(30)])
    flush(leader)
    snapshot(leader)
    [(seq, path)] = snap.list_snapshots(leader.snap_dir)
    with open(path, "rb") as fh:
        data = fh.read()
    hdr, chunks = snap.read_snapshot_bytes(data)

    d = str(tmp_path / "follower")
    f = recovered(d)
    drive(f, [[(E_SET, b"old", b"x", 0)]])
    flush(f)
    relay_dir = os.path.join(d, "relay")
    os.makedirs(relay_dir)
    with open(os.path.join(relay_dir, "00000000000000000001.log"), "wb") as fh:
        fh.write(b"an old relay segment")
    os.makedirs(f.snap_dir, exist_ok=True)
    incoming = os.path.join(f.snap_dir, "incoming.tmp")
    with open(incoming, "wb") as fh:
        fh.write(data)

    def killed():
        raise KeyboardInterrupt("kill -9 while the relay log is reset")

    with pytest.raises(KeyboardInterrupt):
        f.install_snapshot(incoming, hdr, chunks, epochs=[[0, 1]], also=killed)
    r = Storage(d, 1 << 20, log=lambda m: None)
    assert r.wipe_if_interrupted_resync()
    r.recover()
    assert r.last_seq == 0 and len(r.ks) == 0 and not os.path.exists(relay_dir)
    r.close()

    g = recovered(str(tmp_path / "follower2"))
    os.makedirs(g.snap_dir, exist_ok=True)
    incoming = os.path.join(g.snap_dir, "incoming.tmp")
    with open(incoming, "wb") as fh:
        fh.write(data)
    done = []
    g.install_snapshot(incoming, hdr, chunks, epochs=[[0, 1], [3, 20]], also=lambda: done.append(True))
    assert done and g.last_seq == seq == 30 and g.meta["epochs"] == [[0, 1], [3, 20]]
    assert not g.meta.data.get("resync")
    g.close()


# ---------------------------------------------------------------------------- commit point
def test_commit_point_survives_a_restart_and_deletions_after_it_are_remembered(tmp_path):
    """A leader's commit point (Storage.save_commit) is read back at recovery; a key deleted
    after it keeps the deletion's position (Keyspace.key_pos), so a read of it can wait until
    the deletion is confirmed, while deletions before it are not tracked."""
    d = str(tmp_path)
    s = recovered(d)
    drive(s, [[(E_SET, b"a", b"1", 0)], [(E_SET, b"b", b"1", 0)], [(E_DEL, b"b")]])   # seqs 1..3
    flush(s)
    s.save_commit(4, 3, sync=True)
    drive(s, [[(E_SET, b"c", b"1", 0)], [(E_DEL, b"a")]])                              # seqs 4..5
    flush(s)
    s.close()
    r = recovered(d)
    assert r.commit_point == (4, 3)
    assert r.last_seq == 5
    assert r.ks.key_pos(b"a") == 5        # deleted after the commit point: remembered
    assert r.ks.key_pos(b"b") == 0        # deleted before it: not tracked
    assert r.ks.key_pos(b"c") == 4
    r.close()


def test_an_unreadable_commit_point_is_reported_as_unknown(tmp_path):
    d = str(tmp_path)
    s = recovered(d)
    assert s.commit_point is None          # never led: no file
    s.close()
    with open(os.path.join(d, "commit.json"), "w") as fh:
        fh.write('{"epoch": ')
    said = []
    r = Storage(d, 1 << 20, log=said.append)
    r.recover()
    assert r.commit_point == (-1, 0)
    assert any("unreadable commit point" in m for m in said)
    r.close()
