"""The append-only, segmented, checksummed record log (the binary log, and the relay log).

Owns: the on-disk format of log records and segment files, appending, reading back,
validation at open, truncation of a torn tail, removal of old segments.
Does not know: what effects mean, the keyspace, sockets, asyncio. The caller decides when
to ``write_out`` (hand bytes to the OS) and when to ``sync`` (fsync); both are blocking
calls the asyncio shell runs on its IO thread.

Format. A segment file ``<first_seq:020d>.log`` starts with an 8-byte magic that includes
the storage format version. Then frames: ``u32 length | u32 crc32(payload) | payload``,
payload = msgpack ``[seq, epoch, ts_ms, effects]``. ``seq`` is the record's log position:
consecutive, starting at 1, never reused within a history (see storage/engine.py).
Optional trailing elements (see replikv/logformats/): ``repl``, the replication event the
leader built when it wrote the record (the statements under ``log_format = "statement"``,
the row images under ``"row"``, None otherwise), and ``images``, the after-images of the
keys a trigger watches. A relay log may also hold *events* as shipped under the statement
and row formats: ``[seq, epoch, ts_ms, kind, payload]`` with ``kind`` a string.

Checked twice: the crc is computed before the write and verified after every read.

Tricky cases (recovery, ``open``):
- A frame cut short or failing its crc at the very end of the *last* segment is a torn
  tail (a crash in the middle of a write). It is truncated and reported, never applied.
- A bad frame followed by valid frames, or a bad frame in any earlier segment, is not a
  crash artefact but corruption: ``CorruptLogError`` stops the node with the file and
  offset, rather than serve data with a hole in it.
- Sequence numbers must be consecutive across frames and segments; a gap is corruption.
- "Valid frames after" means frames that decode to a record with a later seq: a user
  value that happens to contain frame-shaped bytes inside the torn record does not turn
  a torn tail into a refusal to start.

Threads. ``write_out`` may run on the event loop thread (fsync everysec/no) while ``sync``,
``roll`` and ``remove_through`` run on the IO thread: one lock serialises every change to
the open segment, ``sync`` fsyncs a duplicate of the descriptor (so a concurrent roll can
never make it fsync a closed or reused descriptor), and ``roll`` starts the new segment at
the next seq not yet written, whatever was written between the snapshot and the roll.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import msgpack

FORMAT_VERSION = 1
# the version this node writes and reads: FORMAT_VERSION, unless the (hidden, for tests of
# rolling upgrades) environment variable REPLIKV_STORAGE_FORMAT_VERSION says otherwise
STORAGE_FORMAT_VERSION = int(os.environ.get("REPLIKV_STORAGE_FORMAT_VERSION") or FORMAT_VERSION)
MAGIC = b"RKVLOG" + bytes([0, STORAGE_FORMAT_VERSION])
FRAME = struct.Struct("<II")
MAX_RECORD_BYTES = 1 << 30


class CorruptLogError(Exception):
    """The log is damaged somewhere other than its tail; the node must not start on it."""


class Event(NamedTuple):
    """A replication event as shipped under the statement / row formats (``kind`` "stmt",
    "row", or "eff" for a record that carries no event of its own): it stands where a
    record's effects list would be."""
    kind: str
    payload: list


@dataclass(slots=True)
class Record:
    seq: int
    epoch: int
    ts_ms: int
    effects: list            # or an Event, for a shipped statement / row event
    repl: list | None = None
    images: list | None = None

    def to_payload(self) -> bytes:
        items = [self.seq, self.epoch, self.ts_ms, self.effects]
        if self.images is not None:
            items += [self.repl, self.images]
        elif self.repl is not None:
            items.append(self.repl)
        return msgpack.packb(items, use_bin_type=True)


def encode_frame(payload: bytes) -> bytes:
    return FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def encode_record(seq: int, epoch: int, ts_ms: int, effects: list) -> bytes:
    payload = msgpack.packb([seq, epoch, ts_ms, effects], use_bin_type=True)
    return FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def decode_payload(payload: bytes) -> Record:
    """A record (4 elements, as every log before the log formats), one with its replication
    event and trigger images (5 or 6), or a shipped event (5, the 4th a string)."""
    items = msgpack.unpackb(payload, raw=False, use_list=True, strict_map_key=False)
    if len(items) == 4:
        return Record(*items)
    seq, epoch, ts_ms, x = items[:4]
    if len(items) == 5 and isinstance(x, str):
        return Record(seq, epoch, ts_ms, Event(x, items[4]))
    if len(items) > 6:
        raise ValueError(f"a log record has {len(items)} elements")
    return Record(seq, epoch, ts_ms, x, items[4], items[5] if len(items) == 6 else None)


def iter_frames(data: bytes | memoryview, start: int = 0) -> Iterator[tuple[int, int, bytes | None]]:
    """Yield ``(offset, end, payload)`` for each frame; ``payload`` None marks the first bad
    frame (cut short or crc mismatch), after which iteration stops."""
    n = len(data)
    off = start
    while off < n:
        if off + FRAME.size > n:
            yield off, n, None
            return
        ln, crc = FRAME.unpack_from(data, off)
        end = off + FRAME.size + ln
        if ln > MAX_RECORD_BYTES or end > n:
            yield off, n, None
            return
        payload = bytes(data[off + FRAME.size:end])
        if zlib.crc32(payload) != crc:
            yield off, end, None
            return
        yield off, end, payload
        off = end


def split_records(data: bytes, first: int) -> list[tuple]:
    """The records of a run of frames that must hold seq ``first``, ``first + 1``, ... in
    order (a batch shipped by the leader): ``(seq, epoch, ts_ms, effects, frame)`` each,
    ``effects`` a list of effects or, for a shipped row / statement event, an Event.
    Raises ValueError on a bad frame (cut short, crc mismatch) or a seq out of order. One
    loop instead of iter_frames + decode_payload per record: this runs for every record
    every follower receives."""
    out = []
    n = len(data)
    off = 0
    hdr = FRAME.size
    unpack_from = FRAME.unpack_from
    crc32 = zlib.crc32
    unpackb = msgpack.unpackb
    expect = first
    while off < n:
        if off + hdr > n:
            raise ValueError("a frame is cut short")
        ln, crc = unpack_from(data, off)
        end = off + hdr + ln
        if ln > MAX_RECORD_BYTES or end > n:
            raise ValueError("a frame is cut short")
        payload = data[off + hdr:end]
        if crc32(payload) != crc:
            raise ValueError("a replicated record failed its checksum")
        items = unpackb(payload, raw=False, use_list=True, strict_map_key=False)
        if len(items) == 4:
            seq, epoch, ts_ms, effects = items
        else:
            rec = decode_payload(payload)
            seq, epoch, ts_ms, effects = rec.seq, rec.epoch, rec.ts_ms, rec.effects
        if seq != expect:
            raise ValueError(f"replicated record seq {seq} where {expect} was expected")
        out.append((seq, epoch, ts_ms, effects, data[off:end]))
        expect += 1
        off = end
    return out


def _has_valid_frame_after(data: bytes, start: int, min_seq: int = 0) -> bool:
    """Is there a well-formed record (seq > ``min_seq``) starting after ``start``?
    (corruption vs torn tail)"""
    n = len(data)
    if not data[start + 1:].strip(b"\0"):
        return False            # a zero-filled tail (blocks allocated, never written)
    mv = memoryview(data)
    for off in range(start + 1, n - FRAME.size):
        ln, crc = FRAME.unpack_from(data, off)
        if 0 < ln <= n - off - FRAME.size and zlib.crc32(mv[off + FRAME.size:off + FRAME.size + ln]) == crc:
            try:
                rec = decode_payload(bytes(mv[off + FRAME.size:off + FRAME.size + ln]))
            except Exception:
                continue
            if isinstance(rec.seq, int) and rec.seq > min_seq and isinstance(rec.effects, (list, Event)):
                return True
    return False


@dataclass(slots=True)
class Segment:
    first_seq: int
    path: str
    last_seq: int = 0   # 0 when empty
    size: int = 0
    mtime: float = 0.0


class RecordLog:
    """A directory of segments. ``open`` / ``start`` come first, alone. After that
    ``write_out``, ``sync``, ``roll``, ``remove_through``, ``read_from`` and ``close`` may be
    called from different threads (see the module docstring); records must be written out
    in seq order, once each (``write_out`` refuses anything else)."""

    def __init__(self, directory: str, segment_bytes: int = 64 * 1024 * 1024, name: str = "log") -> None:
        self.dir = directory
        self.segment_bytes = segment_bytes
        self.name = name
        self.segments: list[Segment] = []
        self._fd: int | None = None
        self.last_seq = 0              # the last seq in the log (written out, or recovered)
        self.truncated_bytes = 0       # reported by open() when a torn tail was cut
        self.truncation_note = ""
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ open / recovery
    def open(self, after_seq: int = 0) -> Iterator[Record]:
        """Validate every segment, truncate a torn tail, and yield the records with
        ``seq > after_seq`` in order. Must be consumed fully before appending."""
        os.makedirs(self.dir, exist_ok=True)
        names = sorted(f for f in os.listdir(self.dir) if f.endswith(".log"))
        self.segments = []
        self.last_seq = 0
        self.truncated_bytes = 0
        self.truncation_note = ""
        for f in names:
            try:
                first = int(f[:-4])
            except ValueError:
                continue
            self.segments.append(Segment(first, os.path.join(self.dir, f)))
        prev_last = None
        for i, seg in enumerate(self.segments):
            is_last = i == len(self.segments) - 1
            with open(seg.path, "rb") as fh:
                data = fh.read()
            if len(data) < len(MAGIC):
                if is_last and MAGIC.startswith(data):
                    self._truncate(seg, 0, len(data), "segment header cut short")
                    data = b""
                else:
                    raise CorruptLogError(f"{seg.path}: not a replikv log segment (bad header)")
            elif data[:len(MAGIC)] != MAGIC:
                if data[:6] == MAGIC[:6]:
                    raise CorruptLogError(
                        f"{seg.path}: log format version {data[7]} but this replikv reads version "
                        f"{STORAGE_FORMAT_VERSION}")
                raise CorruptLogError(f"{seg.path}: not a replikv log segment (bad magic)")
            expect = seg.first_seq
            if prev_last is not None and prev_last + 1 != seg.first_seq and prev_last != 0:
                raise CorruptLogError(
                    f"{seg.path}: starts at seq {seg.first_seq} but the previous segment ends at {prev_last}")
            last = 0
            good_end = len(MAGIC) if data else 0
            for off, end, payload in iter_frames(data, len(MAGIC)) if data else ():
                rec = None
                if payload is not None:
                    try:
                        rec = decode_payload(payload)
                    except Exception:
                        rec = None
                if rec is None or rec.seq != expect:
                    why = ("bad record" if payload is None or rec is None
                           else f"seq {rec.seq} where {expect} was expected")
                    if is_last and not _has_valid_frame_after(data, off, expect - 1):
                        self._truncate(seg, off, len(data) - off, why)
                        break
                    where = ("with valid records after it" if is_last else
                             "in a segment that is not the last one, so records after it exist")
                    raise CorruptLogError(
                        f"{seg.path}: corrupt record at byte offset {off} ({why}) {where}; refusing "
                        f"to start rather than serve data with a hole in it. Restore this node from a "
                        f"replica or a snapshot, or move the damaged segment away knowingly.")
                last = rec.seq
                expect += 1
                good_end = end
                if rec.seq > after_seq:
                    yield rec
            seg.last_seq = last
            seg.size = good_end
            seg.mtime = os.path.getmtime(seg.path)
            if last:
                prev_last = last
                self.last_seq = last
            elif prev_last is None:
                prev_last = 0
        if not self.last_seq and self.segments:
            self.last_seq = self.segments[-1].first_seq - 1
        self._fsync_dir()

    def _truncate(self, seg: Segment, off: int, nbytes: int, why: str) -> None:
        with open(seg.path, "r+b") as fh:
            fh.truncate(off if off >= len(MAGIC) else 0)
            if off < len(MAGIC):
                fh.seek(0)
                fh.write(MAGIC)
            fh.flush()
            os.fsync(fh.fileno())
        self.truncated_bytes += nbytes
        self.truncation_note = (f"{self.name}: torn tail in {os.path.basename(seg.path)} at byte offset "
                                f"{off} ({why}); truncated {nbytes} bytes, which were never acknowledged "
                                f"under fsync=always")

    def start(self, next_seq: int) -> None:
        """Open the last segment for appending (or create the first at ``next_seq``)."""
        with self._lock:
            self._start(next_seq)

    def _start(self, next_seq: int) -> None:
        if self.segments and (self.segments[-1].last_seq or self.segments[-1].first_seq == next_seq):
            seg = self.segments[-1]
            if seg.last_seq and seg.last_seq + 1 != next_seq:
                raise CorruptLogError(f"{self.name}: log ends at {seg.last_seq}, expected to continue at {next_seq}")
            self._fd = os.open(seg.path, os.O_WRONLY | os.O_APPEND)
            if seg.size == 0:
                seg.size = os.fstat(self._fd).st_size
        else:
            self._new_segment(next_seq)
        self.last_seq = next_seq - 1

    def _new_segment(self, first_seq: int) -> None:
        path = os.path.join(self.dir, f"{first_seq:020d}.log")
        if any(s.path == path and s.last_seq for s in self.segments):
            raise CorruptLogError(f"{path}: refusing to overwrite a segment that holds records")
        # the old segment is made durable before the new one exists: a segment is never
        # followed by another while its own tail may still be lost
        if self._fd is not None:
            os.fsync(self._fd)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        try:
            if os.write(fd, MAGIC) != len(MAGIC):
                raise OSError(f"{path}: short write of the segment header")
            os.fsync(fd)
            self._fsync_dir()
        except BaseException:
            # (disk full...) leave no empty segment named after records that go elsewhere
            os.close(fd)
            try:
                os.unlink(path)
            except OSError:
                pass
            raise
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd
        # an empty trailing segment that never got a record is replaced
        if self.segments and not self.segments[-1].last_seq and self.segments[-1].path != path:
            try:
                os.unlink(self.segments[-1].path)
            except FileNotFoundError:
                pass
            self.segments.pop()
        self.segments = [s for s in self.segments if s.path != path]
        self.segments.append(Segment(first_seq, path, 0, len(MAGIC)))

    # ------------------------------------------------------------------ append (IO thread)
    def write_out(self, data: bytes, last_seq: int, first_seq: int) -> None:
        """Write already-framed records ``first_seq..last_seq`` to the current segment,
        rolling to a new segment first if the current one is full."""
        with self._lock:
            if first_seq != self.last_seq + 1:
                # never write records out of order or twice: that would be a log with a hole
                raise CorruptLogError(f"{self.name}: write of records {first_seq}..{last_seq} does not "
                                      f"follow the last written record {self.last_seq}")
            seg = self.segments[-1]
            if seg.size >= self.segment_bytes and seg.last_seq:
                self._new_segment(first_seq)
                seg = self.segments[-1]
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
            seg.size += len(data)
            seg.last_seq = last_seq
            self.last_seq = last_seq

    def sync(self) -> None:
        """fsync what has been written out so far. May run concurrently with ``write_out``."""
        with self._lock:
            if self._fd is None:
                return
            fd = os.dup(self._fd)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def roll(self, next_seq: int | None = None) -> None:
        """Start a new segment (snapshots roll so older segments can go). It starts at the
        next seq not yet written: normally ``next_seq`` (the snapshot position + 1); later if
        records past the snapshot were written before the roll ran."""
        with self._lock:
            if self.segments and self.segments[-1].last_seq:
                self._new_segment(self.segments[-1].last_seq + 1)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                try:
                    os.fsync(self._fd)
                finally:
                    os.close(self._fd)
                    self._fd = None

    def _fsync_dir(self) -> None:
        try:
            fd = os.open(self.dir, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ reading back
    @property
    def first_seq(self) -> int:
        """The oldest seq still in the log (``last_seq + 1`` when it holds none)."""
        for s in self.segments:
            if s.last_seq:
                return s.first_seq
        return self.last_seq + 1

    def read_from(self, seq: int, max_bytes: int = 1 << 20) -> list[tuple[int, bytes]]:
        """Frames (seq, framed bytes) starting at ``seq``, about ``max_bytes`` of them, from
        what has been written out. Used by replication senders (issue: catch-up)."""
        out: list[tuple[int, bytes]] = []
        total = 0
        with self._lock:
            segs = [(s.first_seq, s.path, s.last_seq, s.size) for s in self.segments]
        for i, (_first, path, seg_last, size) in enumerate(segs):
            nxt_first = segs[i + 1][0] if i + 1 < len(segs) else None
            if not seg_last or seg_last < seq or (nxt_first is not None and nxt_first <= seq):
                continue
            with open(path, "rb") as fh:
                data = fh.read(size)
            for _off, end, payload in iter_frames(data, len(MAGIC)):
                if payload is None:
                    break
                rec_seq = msgpack.unpackb(payload, raw=False)[0]
                if rec_seq < seq:
                    continue
                if rec_seq > seg_last:
                    break
                out.append((rec_seq, data[_off:end]))
                total += end - _off
                seq = rec_seq + 1
                if total >= max_bytes:
                    return out
        return out

    def remove_through(self, seq: int, keep_bytes: int = 0) -> int:
        """Remove whole segments whose records are all ``<= seq`` (never the current one),
        keeping at least ``keep_bytes`` of the newest removable segments. Returns how many."""
        with self._lock:
            return self._remove_through(seq, keep_bytes)

    def _remove_through(self, seq: int, keep_bytes: int) -> int:
        removable = []
        for i, seg in enumerate(self.segments[:-1]):
            nxt = self.segments[i + 1]
            if nxt.first_seq - 1 <= seq:
                removable.append(seg)
        kept = 0
        while removable and keep_bytes and kept + removable[-1].size <= keep_bytes:
            kept += removable.pop().size
        for seg in removable:
            try:
                os.unlink(seg.path)
            except FileNotFoundError:
                pass
            self.segments.remove(seg)
        if removable:
            self._fsync_dir()
        return len(removable)

    def total_bytes(self) -> int:
        return sum(s.size for s in self.segments)
