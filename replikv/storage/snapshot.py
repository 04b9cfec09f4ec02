"""Snapshots: the whole keyspace at one exact log position, in one checksummed file.

Owns: the snapshot file format, writing one (into a temp file, fsync, atomic rename),
finding the newest valid one, loading it.
Does not know: when snapshots are taken or how the process forks (storage/engine.py).

Format: magic ``RKVSNAP`` + version byte, then frames as in the log (``u32 length | u32
crc32 | msgpack payload``): first a header map (seq, epoch, history_id, created_ms, format),
then chunks of up to 1,000 entries (see keyspace.entry_to_wire), then ``["end", count]``.
A snapshot without its end frame, or with a bad frame, is invalid and ignored (an older
valid one, or the full log, is used instead).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import msgpack

from ..core.keyspace import Keyspace, entry_from_wire, entry_to_wire
from .log import encode_frame, iter_frames

SNAP_VERSION = 1
SNAP_MAGIC = b"RKVSNAP" + bytes([SNAP_VERSION])
CHUNK = 1000


class BadSnapshot(Exception):
    pass


def snapshot_name(seq: int) -> str:
    return f"snap-{seq:020d}.rks"


def write_snapshot_stream(write, ks: Keyspace, header: dict) -> int:
    """Write a snapshot through ``write(bytes)``; returns the number of entries."""
    write(SNAP_MAGIC)
    write(encode_frame(msgpack.packb(header, use_bin_type=True)))
    chunk = []
    count = 0
    for k, e in ks.data.items():
        chunk.append(entry_to_wire(k, e))
        if len(chunk) >= CHUNK:
            write(encode_frame(msgpack.packb(chunk, use_bin_type=True)))
            count += len(chunk)
            chunk = []
    if chunk:
        write(encode_frame(msgpack.packb(chunk, use_bin_type=True)))
        count += len(chunk)
    write(encode_frame(msgpack.packb(["end", count], use_bin_type=True)))
    return count


def write_snapshot(directory: str, ks: Keyspace, header: dict, publish: bool = True) -> str:
    """Write the snapshot file for ``header['seq']`` durably; returns its path. With
    ``publish`` False it is left as ``<name>.tmp`` (fsynced) for ``publish_snapshot``: the
    forked child writes, the parent decides whether the result may become the base."""
    os.makedirs(directory, exist_ok=True)
    final = os.path.join(directory, snapshot_name(header["seq"]))
    tmp = final + ".tmp"
    with open(tmp, "wb", buffering=1 << 20) as fh:
        write_snapshot_stream(fh.write, ks, header)
        fh.flush()
        os.fsync(fh.fileno())
    if not publish:
        return tmp
    return publish_snapshot(directory, header["seq"])


def publish_snapshot(directory: str, seq: int) -> str:
    """Atomically rename the written temp file into place (and make the rename durable)."""
    final = os.path.join(directory, snapshot_name(seq))
    os.replace(final + ".tmp", final)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return final


def read_snapshot_bytes(data: bytes) -> tuple[dict, list[list]]:
    """Validate a whole snapshot image; return its header and entry chunks."""
    if data[:len(SNAP_MAGIC)] != SNAP_MAGIC:
        raise BadSnapshot("bad magic or snapshot format version")
    header = None
    chunks = []
    ended = False
    for _off, _end, payload in iter_frames(data, len(SNAP_MAGIC)):
        if payload is None:
            raise BadSnapshot("bad frame (cut short or checksum mismatch)")
        obj = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        if header is None:
            if not isinstance(obj, dict):
                raise BadSnapshot("missing header")
            header = obj
        elif isinstance(obj, list) and len(obj) == 2 and obj[0] == "end":
            if obj[1] != sum(len(c) for c in chunks):
                raise BadSnapshot("entry count mismatch")
            ended = True
            break
        else:
            chunks.append(obj)
    if header is None or not ended:
        raise BadSnapshot("incomplete snapshot")
    return header, chunks


def load_into(ks: Keyspace, chunks: list[list]) -> None:
    ks.clear()
    for chunk in chunks:
        for item in chunk:
            entry_from_wire(ks, item)


def list_snapshots(directory: str) -> list[tuple[int, str]]:
    if not os.path.isdir(directory):
        return []
    out = []
    for f in os.listdir(directory):
        if f.startswith("snap-") and f.endswith(".rks"):
            try:
                out.append((int(f[5:-4]), os.path.join(directory, f)))
            except ValueError:
                continue
    return sorted(out)


def newest_valid(directory: str, log=None) -> Iterator[tuple[dict, list[list], str]]:
    """Yield valid snapshots newest first, each as (header, chunks, path); invalid ones are
    reported through ``log`` (a callable) and skipped."""
    for _seq, path in reversed(list_snapshots(directory)):
        try:
            with open(path, "rb") as fh:
                header, chunks = read_snapshot_bytes(fh.read())
        except (BadSnapshot, OSError, ValueError, msgpack.UnpackException) as e:
            if log:
                log(f"snapshot {path} is invalid ({e}); ignoring it")
            continue
        yield header, chunks, path
