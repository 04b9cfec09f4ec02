"""The storage engine: keyspace + log + snapshots, and recovery.

Owns: the node's data directory (``meta.json``, ``log/``, ``snapshots/``), assigning log
positions, buffering framed records until the shell writes them out, the durability
watermarks, background snapshots (fork, as Redis BGSAVE: the child sees the keyspace frozen
at one exact position while the parent keeps serving), and recovery = newest valid
snapshot + log tail.

Does not know: sockets, asyncio, replication roles. Blocking calls (``write_out``,
``sync``, ``finish_snapshot``, the log's ``roll``) are made by the shell on its single IO
thread, in order; except that under fsync everysec/no ``write_out`` runs on the event loop
thread (a reply leaves once its record reached the OS), which RecordLog's lock makes safe
against a concurrent ``sync`` / ``roll`` / ``remove_through``.

What survives what (a write is acknowledged once its record reached ``durable_seq``):
  fsync always    acknowledged = fsynced: survives kill -9 and power loss
  fsync everysec  acknowledged = written: survives kill -9; a power loss can lose ~1 s
  fsync no        acknowledged = written: survives kill -9; a power loss loses what the OS
                  had not flushed yet

Recovery refuses (CorruptLogError) rather than serve a keyspace with a hole in it: the log
must continue exactly where the snapshot it starts from ends, so if the newest snapshot is
invalid and the log it would need was removed after it was taken, the node stops with a
message naming both. A snapshot ahead of the log (its child finished before the parent's
records reached the disk, then a crash) is fine: the covered segments are removed and the
log continues after the snapshot.

The snapshot child only writes (and fsyncs) a temp file; the parent publishes it in
``finish_snapshot`` unless the data was replaced meanwhile (rollback, installed snapshot).
The child also dies with its parent (PR_SET_PDEATHSIG on Linux): an orphan of a kill -9
would only waste the next life's CPU (its temp file is removed at start).

Watermarks, each <= the previous:
  last_seq     assigned to a record and applied in memory
  written_seq  handed to the OS (survives kill -9, not power loss)
  synced_seq   fsynced (survives power loss)
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import struct
import sys
import time
import zlib

import msgpack

from ..core.keyspace import Keyspace
from . import snapshot as snap
from .log import STORAGE_FORMAT_VERSION as FORMAT_VERSION
from .log import CorruptLogError, RecordLog

_FRAME = struct.Struct("<II")
_packb = msgpack.Packer(use_bin_type=True).pack
_PR_SET_PDEATHSIG = 1
_prctl = None  # resolved in the parent before the first fork (no imports in the child)


def _resolve_prctl():
    global _prctl
    if _prctl is None:
        _prctl = False
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                _prctl = ctypes.CDLL(None, use_errno=True).prctl
            except (OSError, AttributeError):
                _prctl = False
    return _prctl


def _snapshot_child_setup(parent_pid: int) -> None:
    """In the forked child: die with the parent, and do not share its signal handling."""
    if _prctl:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    try:
        signal.set_wakeup_fd(-1)   # the parent's event loop reads that fd; not ours
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
    except (ValueError, OSError):
        pass


def replace_file(path: str, text: str, sync: bool) -> None:
    """Replace ``path`` by ``text`` atomically (a temporary file renamed over it): a reader,
    or a restart after a crash, sees the old content or the new one, never a mix. ``sync``:
    the file and the rename are fsynced first (durable across a power loss, not only a kill)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
        if sync:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)
    if sync:
        fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


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
        replace_file(self.path, json.dumps(self.data, indent=1, sort_keys=True), sync=True)

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
        self.commit_path = os.path.join(data_dir, "commit.json")
        # (epoch, seq): the last position this node showed readers while it led ``epoch``
        # (see save_commit), read at recovery; None if it never led or the file is unreadable
        self.commit_point: tuple[int, int] | None = None
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
        # bumped whenever the data is replaced wholesale (recovery, rollback, installed
        # snapshot): a snapshot forked before that describes data that no longer exists
        self.generation = 0
        self._forked: tuple[int, int] | None = None   # (seq, generation) of the running child

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
        invalid: list[str] = []

        def say_invalid(msg: str) -> None:
            invalid.append(msg)
            self._say("WARNING " + msg)

        for header, chunks, path in snap.newest_valid(self.snap_dir, say_invalid):
            snap.load_into(self.ks, chunks)
            snap_seq = int(header["seq"])
            self.epoch = max(self.epoch, int(header.get("epoch", 0)))
            self.snapshot_time = float(header.get("created_ms", 0)) / 1000
            if header.get("history_id") not in (None, self.history_id):
                self._say(f"WARNING snapshot {os.path.basename(path)} was written by history "
                          f"{header.get('history_id')}, this node is {self.history_id}")
            self._say(f"loaded snapshot {os.path.basename(path)} at seq {snap_seq} ({len(self.ks)} keys)")
            break
        if self.generation == 0:
            self._remove_stale_tmp()    # at start only: later a live child may be writing one
        self.snapshot_seq = snap_seq
        why_missing = (" (a newer snapshot was invalid: " + "; ".join(invalid) + ")") if invalid else ""
        self.commit_point = self.load_commit()
        # deletions after the commit point are remembered (Keyspace.deleted_pos): if the node
        # led the epoch of its last records, they stay hidden until a leader confirms them,
        # and a read of a key deleted among them must wait as well. Those inside the snapshot
        # are not known one by one: any absent key may have been deleted up to its position.
        track_after = self.commit_point[1] if self.commit_point is not None else None
        if track_after is not None and track_after < snap_seq:
            self.ks.deleted_floor = snap_seq
        n = 0
        last = snap_seq
        apply = self.ks.apply
        for rec in self.log.open(after_seq=snap_seq):
            if track_after is not None and rec.seq > track_after:
                self.ks.track_deletes = True
                track_after = None
            if rec.seq != last + 1:
                raise CorruptLogError(
                    f"{self.log.dir}: the log continues at seq {rec.seq} but the snapshot ends at "
                    f"{snap_seq}: records {last + 1}..{rec.seq - 1} are missing{why_missing}")
            for eff in rec.effects:
                apply(eff, rec.seq)
            if rec.epoch > self.epoch:
                self.epoch = rec.epoch
            last = rec.seq
            n += 1
        segs = self.log.segments
        if segs and segs[0].first_seq > snap_seq + 1:
            # the log holds no record after the snapshot, but it starts later than the snapshot
            # ends: whatever lay in between is gone (and with it, possibly, acknowledged writes)
            raise CorruptLogError(
                f"{self.log.dir}: the log starts at seq {segs[0].first_seq} but the snapshot ends at "
                f"{snap_seq}: records {snap_seq + 1}..{segs[0].first_seq - 1} are missing{why_missing}")
        if self.log.truncation_note:
            self.truncation_note = self.log.truncation_note
            self._say("WARNING " + self.log.truncation_note)
        self.recovered_records = n
        self.last_seq = self.written_seq = self.synced_seq = max(last, snap_seq, self.log.last_seq)
        self.records_since_snapshot = n
        if self.log.last_seq == self.last_seq:
            self.log.start(self.last_seq + 1)
        else:
            self._restart_log()
        self._buf_first = self.last_seq + 1
        self.generation += 1

    # ------------------------------------------------------------------ commit point
    def save_commit(self, epoch: int, seq: int, sync: bool = False) -> None:
        """Remember that this node, leading ``epoch``, showed readers everything through
        ``seq``. After a restart, records of that epoch beyond it were never confirmed by a
        follower (and may be rolled back by the next leader): the node keeps them hidden
        until a leader's welcome. Written at every promotion before the epoch's first record
        (``sync``: fsynced, so the file never names an older epoch than the log's records),
        then about once a second and at shutdown without fsync: a stale value only hides
        more, and an unreadable one hides the whole last epoch (see load_commit)."""
        replace_file(self.commit_path, json.dumps({"epoch": int(epoch), "seq": int(seq)}), sync)
        self.commit_point = (int(epoch), int(seq))

    def load_commit(self) -> tuple[int, int] | None:
        """The saved commit point; None if this node never led (no file); ``(-1, 0)`` if the
        file is unreadable: the caller then cannot tell whether it led its last epoch and
        hides that epoch's records until a leader's welcome."""
        try:
            with open(self.commit_path) as fh:
                d = json.load(fh)
            return int(d["epoch"]), int(d["seq"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            self._say(f"WARNING {self.commit_path}: unreadable commit point ({e}); the last epoch's "
                      f"records stay hidden until a leader confirms them")
            return -1, 0

    def _restart_log(self) -> None:
        """The snapshot is ahead of the log: every segment holds only records the snapshot
        covers. Remove them and continue in a new segment right after the snapshot (leaving
        them would put a gap between them and the new segment)."""
        self._say(f"the snapshot at seq {self.last_seq} is ahead of the log (which ends at "
                  f"{self.log.last_seq}); continuing the log after the snapshot")
        for seg in list(self.log.segments):
            try:
                os.unlink(seg.path)
            except FileNotFoundError:
                pass
        self.log.segments = []
        self.log.start(self.last_seq + 1)

    def _remove_stale_tmp(self) -> None:
        # a snapshot child that died (or whose parent did) leaves a temp file behind
        if not os.path.isdir(self.snap_dir):
            return
        for f in os.listdir(self.snap_dir):
            if f.endswith(".tmp"):
                try:
                    os.unlink(os.path.join(self.snap_dir, f))
                except FileNotFoundError:
                    pass

    # ------------------------------------------------------------------ append (event loop)
    def append(self, effects: list, ts_ms: int, seq: int | None = None, epoch: int | None = None,
               extra: list | None = None) -> int:
        """Frame and buffer one record; returns its seq. ``seq`` is given by a follower
        (the leader's position); otherwise the next one is assigned. ``extra``: the optional
        trailing elements ``[repl]`` or ``[repl, images]`` (see replikv/logformats/)."""
        if seq is None:
            seq = self.last_seq + 1
        elif seq != self.last_seq + 1:
            raise ValueError(f"record seq {seq} does not follow {self.last_seq}")
        if extra is None:
            payload = _packb([seq, self.epoch if epoch is None else epoch, ts_ms, effects])
        else:
            payload = _packb([seq, self.epoch if epoch is None else epoch, ts_ms, effects, *extra])
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
        self._forked = (seq, self.generation)
        _resolve_prctl()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # child: write and leave without running any parent cleanup
            code = 1
            try:
                _snapshot_child_setup(parent)
                snap.write_snapshot(self.snap_dir, self.ks, header, publish=False)
                code = 0
            except BaseException as e:
                try:
                    os.write(2, f"snapshot child {os.getpid()} failed: {e!r}\n".encode())
                except OSError:
                    pass
                code = 1
            finally:
                os._exit(code)
        self.records_since_snapshot = 0
        self.bytes_since_snapshot = 0
        return pid, seq, pending

    def finish_snapshot(self, seq: int, keep_log_bytes: int = 0) -> int:
        """After the child succeeded: publish its snapshot (rename it into place), then drop
        older snapshots and covered log segments (keeping ``keep_log_bytes`` of them for
        followers). IO thread.

        If the data was replaced while the child wrote (a rollback, an installed snapshot),
        the child's snapshot describes a state this node no longer has: it is deleted
        unpublished and nothing else is touched (``snapshot_path(seq)`` then does not exist).
        The child never publishes itself, so no recovery (not even the one a rollback runs
        while the child writes) can ever load such a snapshot."""
        forked = self._forked
        if forked is not None and forked[0] == seq:
            self._forked = None
            if forked[1] != self.generation:
                self._discard_snapshot(seq)
                return 0
        if not os.path.exists(self.snapshot_path(seq) + ".tmp"):
            self._say(f"WARNING the snapshot at seq {seq} is missing its written file; not published")
            return 0
        snap.publish_snapshot(self.snap_dir, seq)
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

    def _discard_snapshot(self, seq: int) -> None:
        try:
            os.unlink(self.snapshot_path(seq) + ".tmp")
        except FileNotFoundError:
            pass
        self._say(f"WARNING the snapshot at seq {seq} was discarded: the data it was taken from was "
                  f"replaced (rollback or resync) while it was being written")

    # ------------------------------------------------------------------ replication (follower side)
    def append_frame(self, frame: bytes, seq: int, epoch: int) -> None:
        """Buffer a record received from the leader, byte for byte (its crc was verified);
        the follower's log is then identical to the leader's, position for position."""
        self.append_frames(frame, seq, seq, epoch, 1)

    def append_frames(self, frames: bytes, first: int, last: int, epoch: int, count: int) -> None:
        """``append_frame`` for a run of ``count`` frames holding records first..last in
        order, in one piece (a batch from the leader applied as a whole); ``epoch``: that of
        the last record."""
        if first != self.last_seq + 1:
            raise ValueError(f"record seq {first} does not follow {self.last_seq}")
        if not self._buf:
            self._buf_first = first
        self._buf += frames
        self._took(last, epoch, count, len(frames))

    def note_frames(self, first: int, last: int, epoch: int, count: int, size: int) -> None:
        """Records first..last (``count`` frames, ``size`` bytes) follow the last one, and
        the caller hands them to ``write_out`` itself instead of through the buffer, which
        must then be empty (nothing may be written ahead of what it holds)."""
        if first != self.last_seq + 1 or self._buf:
            raise ValueError(f"record seq {first} does not follow {self.last_seq} (or records are buffered)")
        self._took(last, epoch, count, size)

    def _took(self, last: int, epoch: int, count: int, size: int) -> None:
        self.last_seq = last
        if epoch > self.epoch:
            self.epoch = epoch
        self.records_since_snapshot += count
        self.bytes_since_snapshot += size

    def install_snapshot(self, incoming_path: str, header: dict, chunks: list, epochs: list | None = None,
                         also=None) -> None:
        """Replace everything with a snapshot received from the leader (full resync).
        Crash-safe: ``meta.resync`` marks the window in which the data dir is being replaced;
        a node that finds it set at start wipes its data (relay log included) and resyncs
        again. ``epochs`` (the leader's epoch history) and ``also`` (the caller's part, e.g.
        resetting the relay log) are done inside that window, before the flag is cleared.
        IO thread."""
        self.meta["resync"] = True
        self.meta.save()
        self.log.close()
        self._buf.clear()
        for seg in list(self.log.segments):
            try:
                os.unlink(seg.path)
            except FileNotFoundError:
                pass
        self.log.segments = []
        for _s, path in snap.list_snapshots(self.snap_dir):
            os.unlink(path)
        seq = int(header["seq"])
        os.replace(incoming_path, self.snapshot_path(seq))
        snap.load_into(self.ks, chunks)
        self.snapshot_seq = seq
        self.last_seq = self.written_seq = self.synced_seq = seq
        self.epoch = int(header.get("epoch", 0))
        self.log.last_seq = seq
        self.log._new_segment(seq + 1)
        self._buf_first = seq + 1
        self.records_since_snapshot = 0
        self.meta["history_id"] = header["history_id"]
        self.meta["epoch"] = self.epoch
        if also is not None:
            also()
        if epochs is not None:
            self.meta["epochs"] = epochs
        self.meta["resync"] = False
        self.meta.save()
        self.generation += 1

    def adopt_history(self, history_id: str) -> None:
        if self.meta["history_id"] != history_id:
            self.meta["history_id"] = history_id
            self.meta.save()

    def wipe_if_interrupted_resync(self) -> bool:
        """Called before recovery: a full resync that did not finish leaves unusable data."""
        if not os.path.exists(self.meta.path):
            return False
        self.meta.load_or_create()
        if not self.meta.data.get("resync"):
            return False
        import shutil

        for sub in ("log", "snapshots", "relay"):
            shutil.rmtree(os.path.join(self.dir, sub), ignore_errors=True)
        self.meta["resync"] = False
        self.meta["history_id"] = secrets.token_hex(20)
        self.meta.save()
        self._say("an interrupted full resync was found: local data discarded; it will be fetched again")
        return True
