"""Reading a log directory from a position, incrementally (``tail -f`` over the segments).

Used by ``replikv cdc`` (offline, on a data dir), the node's ``/cdc`` endpoint and the
trigger runners. It reads only complete, checksummed frames: a frame still being written is
left for the next call. It keeps a cursor (segment, byte offset, next seq) so following the
tail reads only new bytes; if the segment it was in is removed (retention) or cut (a
rollback), it finds its place again from the segment names. Any storage format version is
read (the frame format is the same).
"""

from __future__ import annotations

import os
import zlib

from ..storage.log import FRAME, MAX_RECORD_BYTES, Record, decode_payload

MAGIC_PREFIX = b"RKVLOG\x00"
MAGIC_LEN = 8


class PositionGone(Exception):
    """The position asked for is no longer in the log (removed after a snapshot)."""


class LogTailer:
    def __init__(self, log_dir: str, max_bytes: int = 4 << 20) -> None:
        self.dir = log_dir
        self.max_bytes = max_bytes
        self._cur: tuple[str, int, int] | None = None    # (segment path, offset, next seq)

    def segments(self) -> list[tuple[int, str]]:
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        out = []
        for f in names:
            if f.endswith(".log"):
                try:
                    out.append((int(f[:-4]), os.path.join(self.dir, f)))
                except ValueError:
                    continue
        out.sort()
        return out

    def first_seq(self) -> int:
        segs = self.segments()
        return segs[0][0] if segs else 0

    def _locate(self, seq: int) -> tuple[str, int, int] | None:
        segs = self.segments()
        if not segs:
            return None
        if seq < segs[0][0]:
            raise PositionGone(f"position {seq} is no longer in the log (it starts at {segs[0][0]}); "
                               f"resume from {segs[0][0]} or later")
        path = None
        first = 0
        for f, p in segs:
            if f <= seq:
                first, path = f, p
        return path, MAGIC_LEN, first

    def read(self, seq: int, limit: int | None = None, max_records: int = 1000) -> list[Record]:
        """Records ``seq``.. (at most up to ``limit``), as many as are complete on disk."""
        out: list[Record] = []
        relocations = 0
        while relocations < 3:
            cur = self._cur
            if cur is None or cur[2] > seq:
                cur = self._locate(seq)
                if cur is None:
                    return out
            path, off, nxt = cur
            try:
                got, cur = self._read_segment(path, off, nxt, seq, limit, max_records - len(out))
            except FileNotFoundError:
                self._cur = None
                relocations += 1
                continue
            self._cur = cur
            out += got
            if got:
                seq = got[-1].seq + 1
            if len(out) >= max_records or (limit is not None and seq > limit):
                return out
            if cur[1] > off:
                continue        # more of this segment may follow (reads are bounded)
            # at the end of this segment: is there a next one starting where we are?
            nxt_path = self._next_segment(path, cur[2])
            if nxt_path is None:
                return out
            self._cur = (nxt_path, MAGIC_LEN, cur[2])
        return out

    def _next_segment(self, path: str, seq: int) -> str | None:
        for f, p in self.segments():
            if f == seq and p != path:
                return p
        return None

    def _read_segment(self, path, off, nxt, want, limit, room):
        with open(path, "rb") as fh:
            if off == MAGIC_LEN:
                head = fh.read(MAGIC_LEN)
                if len(head) < MAGIC_LEN:
                    return [], (path, off, nxt)
                if head[:7] != MAGIC_PREFIX:
                    raise ValueError(f"{path}: not a replikv log segment")
            size = os.fstat(fh.fileno()).st_size
            if size < off:      # cut under us (rollback): find our place again
                raise FileNotFoundError(path)
            fh.seek(off)
            data = fh.read(self.max_bytes)
        out = []
        pos = 0
        n = len(data)
        while pos + FRAME.size <= n and len(out) < room:
            ln, crc = FRAME.unpack_from(data, pos)
            end = pos + FRAME.size + ln
            if ln > MAX_RECORD_BYTES:
                raise ValueError(f"{path}: damaged frame at byte offset {off + pos}")
            if end > n:
                if pos == 0 and ln + FRAME.size > self.max_bytes:
                    self.max_bytes = ln + FRAME.size     # a record larger than a read
                break
            payload = data[pos + FRAME.size:end]
            if zlib.crc32(payload) != crc:
                break       # being written (or a torn tail): not yet
            rec = decode_payload(payload)
            if rec.seq != nxt:
                # not the record expected here: the log was rolled back and rewritten
                raise FileNotFoundError(path)
            if rec.seq < want:
                pos = end
                nxt = rec.seq + 1
                continue
            if limit is not None and rec.seq > limit:
                break
            out.append(rec)
            pos = end
            nxt = rec.seq + 1
        return out, (path, off + pos, nxt)
