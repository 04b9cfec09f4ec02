"""The storage engine: keyspace + log + snapshots, and recovery.

Owns: the node's data directory (``meta.json``, ``log/``, ``snapshots/``), assigning log
positions, buffering framed records until the shell writes them out, the durability
watermarks, background snapshots (fork, as Redis BGSAVE: the child sees the keyspace frozen
at one exact position while the parent keeps serving), and recovery = newest valid
snapshot + log tail.

Does not know: sockets, asyncio, replication roles. Blocking calls (``write_out``,
``sync``, ``finish_snapshot``) are made by the shell on its single IO thread, in order.

Watermarks, each <= the previous:
  last_seq     assigned to a record and applied in memory
  written_seq  handed to the OS (survives kill -9, not power loss)
  synced_seq   fsynced (survives power loss)
"""

from __future__ import annotations

import json
import os
import secrets
import struct
import time
import zlib

import msgpack

from ..core.keyspace import Keyspace
from . import snapshot as snap
from .log import FORMAT_VERSION, CorruptLogError, RecordLog

_FRAME = struct.Struct("<II")
_packb = msgpack.Packer(use_bin_type=True).pack


class Meta:
    """Small node state kept in ``meta.json``, replaced atomically."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.data: dict = {}

    def load_or_create(self) -> None:
        if os.path.exists(self.path):
            try:
                with open(self.path) as fh:
                    self.data = json.load(fh)
            except (OSError, ValueError) as e:
                raise CorruptLogError(f"{self.path}: unreadable node metadata ({e})") from e
        else:
            self.data = {"history_id": secrets.token_hex(20), "epoch": 0, "format": FORMAT_VERSION}
            self.save()

    def save(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(self.data, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        fd = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def __getitem__(self, k):
        return self.data[k]

    def __setitem__(self, k, v):
        self.data[k] = v


class Storage:
    def __init__(self, data_dir: str, segment_bytes: int = 64 * 1024 * 1024, log=print) -> None:
        self.dir = data_dir
        self.ks = Keyspace()
        self.log = RecordLog(os.path.join(data_dir, "log"), segment_bytes)
        self.snap_dir = os.path.join(data_dir, "snapshots")
        self.meta = Meta(os.path.join(data_dir, "meta.json"))
        self._say = log
        self.last_seq = 0
        self.written_seq = 0
        self.synced_seq = 0
        self.epoch = 0
        self.snapshot_seq = 0
        self.snapshot_time = 0.0
        self.recovered_records = 0
        self.truncation_note = ""
        self._buf = bytearray()
        self._buf_first = 0
        self.records_since_snapshot = 0
        self.bytes_since_snapshot = 0

    @property
    def history_id(self) -> str:
        return self.meta["history_id"]

    # ------------------------------------------------------------------ recovery
    def recover(self) -> None:
        """Load the newest valid snapshot, replay the log after it, truncate a torn tail.
        Raises CorruptLogError if the data cannot be trusted."""
        os.makedirs(self.dir, exist_ok=True)
        self.meta.load_or_create()
        self.epoch = int(self.meta.data.get("epoch", 0))
        snap_seq = 0
        for header, chunks, path in snap.newest_valid(self.snap_dir, self._say):
            snap.load_into(self.ks, chunks)
            snap_seq = int(header["seq"])
            self.snapshot_time = float(header.get("created_ms", 0)) / 1000
            self._say(f"loaded snapshot {os.path.basename(path)} at seq {snap_seq} ({len(self.ks)} keys)")
            break
        self.snapshot_seq = snap_seq
        n = 0
        last = snap_seq
        apply = self.ks.apply
        for rec in self.log.open(after_seq=snap_seq):
            if rec.seq != last + 1:
                raise CorruptLogError(
                    f"{self.log.dir}: the log continues at seq {rec.seq} but the snapshot ends at "
                    f"{snap_seq}: records {last + 1}..{rec.seq - 1} are missing")
            for eff in rec.effects:
                apply(eff, rec.seq)
            if rec.epoch > self.epoch:
                self.epoch = rec.epoch
            last = rec.seq
            n += 1
        if self.log.truncation_note:
            self.truncation_note = self.log.truncation_note
            self._say("WARNING " + self.log.truncation_note)
        self.recovered_records = n
        self.last_seq = self.written_seq = self.synced_seq = max(last, snap_seq, self.log.last_seq)
        self.records_since_snapshot = n
        self.log.start(self.last_seq + 1) if self.log.last_seq == self.last_seq else self._restart_log()
        self._buf_first = self.last_seq + 1

    def _restart_log(self) -> None:
        # the snapshot is ahead of the log (older segments were removed): continue in a new segment
        self.log.segments = [s for s in self.log.segments]
        self.log._new_segment(self.last_seq + 1)
        self.log.last_seq = self.last_seq

    # ------------------------------------------------------------------ append (event loop)
    def append(self, effects: list, ts_ms: int, seq: int | None = None, epoch: int | None = None) -> int:
        """Frame and buffer one record; returns its seq. ``seq`` is given by a follower
        (the leader's position); otherwise the next one is assigned."""
        if seq is None:
            seq = self.last_seq + 1
        elif seq != self.last_seq + 1:
            raise ValueError(f"record seq {seq} does not follow {self.last_seq}")
        payload = _packb([seq, self.epoch if epoch is None else epoch, ts_ms, effects])
        buf = self._buf
        if not buf:
            self._buf_first = seq
        buf += _FRAME.pack(len(payload), zlib.crc32(payload))
        buf += payload
        self.last_seq = seq
        self.records_since_snapshot += 1
        self.bytes_since_snapshot += len(payload) + 8
        return seq

    def take_buffer(self) -> tuple[bytes, int, int] | None:
        """Hand the buffered records to the writer: (data, first_seq, last_seq)."""
        if not self._buf:
            return None
        data = bytes(self._buf)
        self._buf.clear()
        first = self._buf_first
        self._buf_first = self.last_seq + 1
        return data, first, self.last_seq

    # ------------------------------------------------------------------ IO thread
    def write_out(self, data: bytes, first: int, last: int, sync: bool) -> float:
        """Write (and optionally fsync) records; returns the fsync time in seconds."""
        self.log.write_out(data, last, first)
        self.written_seq = last
        if sync:
            t = time.perf_counter()
            self.log.sync()
            self.synced_seq = last
            return time.perf_counter() - t
        return 0.0

    def sync(self) -> float:
        target = self.written_seq
        t = time.perf_counter()
        self.log.sync()
        self.synced_seq = max(self.synced_seq, target)
        return time.perf_counter() - t

    def close(self) -> None:
        self.log.close()

    # ------------------------------------------------------------------ snapshots
    def fork_snapshot(self) -> tuple[int, int, tuple | None]:
        """Fork a child that writes a snapshot of the keyspace as of ``last_seq``.
        Returns (pid, seq, pending buffer). The caller must hand the pending buffer to the
        IO thread and then ``roll`` the log at seq + 1, in that order, before later writes."""
        seq = self.last_seq
        pending = self.take_buffer()
        header = {"seq": seq, "epoch": self.epoch, "history_id": self.history_id,
                  "created_ms": int(time.time() * 1000), "format": FORMAT_VERSION,
                  "keys": len(self.ks)}
        pid = os.fork()
        if pid == 0:  # child: write and leave without running any parent cleanup
            code = 1
            try:
                snap.write_snapshot(self.snap_dir, self.ks, header)
                code = 0
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        self.records_since_snapshot = 0
        self.bytes_since_snapshot = 0
        return pid, seq, pending

    def finish_snapshot(self, seq: int, keep_log_bytes: int = 0) -> int:
        """After the child succeeded: drop older snapshots and covered log segments
        (keeping ``keep_log_bytes`` of them for followers). IO thread."""
        self.snapshot_seq = max(self.snapshot_seq, seq)
        self.snapshot_time = time.time()
        for s, path in snap.list_snapshots(self.snap_dir):
            if s < seq:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
        for f in os.listdir(self.snap_dir):
            if f.endswith(".tmp") and not f.startswith(snap.snapshot_name(seq)):
                try:
                    os.unlink(os.path.join(self.snap_dir, f))
                except FileNotFoundError:
                    pass
        return self.log.remove_through(seq, keep_log_bytes)

    def snapshot_path(self, seq: int) -> str:
        return os.path.join(self.snap_dir, snap.snapshot_name(seq))
