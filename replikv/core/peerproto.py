"""The peer protocol between nodes: message types and a sans-IO codec.

Owns: the wire form of every replication message (a msgpack map with a type tag ``t``,
framed as ``u32 length | u32 crc32 | payload`` exactly like log records) and the codec
that turns bytes into messages and back.
Does not know: sockets, what a node does with a message.

Messages (one line each, used alike in logs, traces and tests):
  hello       follower -> leader: who I am, my history, what I have received and applied
  welcome     leader -> follower: stream from ``start_seq``, or a snapshot comes first
  refuse      leader -> follower: the connection is refused, with the reason
  records     leader -> follower: log frames ``first..last`` byte for byte, + leader clock
  hb          leader -> follower: heartbeat when idle: leader's last seq and clock
  snap_begin  leader -> follower: a snapshot at ``seq`` follows, ``size`` bytes
  snap_chunk  leader -> follower: a piece of the snapshot file
  snap_end    leader -> follower: the snapshot is complete; records from seq+1 follow
  ack         follower -> leader: received / flushed / applied positions + follower clock
  vote_req    candidate -> node: vote for me in ``epoch``; my last record is (last_epoch, last_seq)
  vote        node -> candidate: granted or not, and the voter's epoch
  announce    new leader -> node: I lead ``epoch``; follow me
  timeout_now leader -> chosen follower (switchover): start an election now
  whois       node -> node: which epoch and leader do you know? (a stale leader's probe)
  info        node -> node: the answer to whois / announce / timeout_now
"""

from __future__ import annotations

import struct
import zlib

import msgpack

FRAME = struct.Struct("<II")
MAX_MESSAGE = 256 * 1024 * 1024
PROTOCOL_VERSION = 1

MESSAGE_TYPES = ("hello", "welcome", "refuse", "records", "hb", "snap_begin", "snap_chunk", "snap_end", "ack",
                 "vote_req", "vote", "announce", "timeout_now", "whois", "info")


class PeerProtocolError(Exception):
    pass


def encode_message(msg: dict) -> bytes:
    payload = msgpack.packb(msg, use_bin_type=True)
    return FRAME.pack(len(payload), zlib.crc32(payload)) + payload


_TYPES = frozenset(MESSAGE_TYPES)


def _decode(payload, crc: int) -> dict:
    """One frame's payload as a message, checked: its crc, msgpack, a map with a known ``t``."""
    if zlib.crc32(payload) != crc:
        raise PeerProtocolError("peer message checksum mismatch")
    try:
        msg = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as e:
        raise PeerProtocolError(f"undecodable peer message: {e}") from None
    t = msg.get("t") if type(msg) is dict else None
    if type(t) is not str or t not in _TYPES:
        raise PeerProtocolError(f"unknown peer message {str(msg)[:80]}")
    return msg


class PeerDecoder:
    """Feed bytes, take messages. Raises PeerProtocolError on a bad frame (the caller drops
    the connection: the peer will reconnect and resume from its positions).

    Two ways to use it, one result: ``feed`` + ``next_message`` until None, or
    ``messages(data)``, which returns every message complete after ``data`` at once. The
    latter decodes straight from the bytes just received when nothing was left over (the
    common case: a read holds whole messages), without copying them into the buffer and out
    again, and drops what it consumed from the buffer once per call instead of per message."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def messages(self, data: bytes) -> list:
        buf = self._buf
        if buf:
            buf += data
            src = buf
        else:
            src = data
        out = []
        n = len(src)
        off = 0
        hdr = FRAME.size
        while n - off >= hdr:
            ln, crc = FRAME.unpack_from(src, off)
            if ln > MAX_MESSAGE:
                raise PeerProtocolError(f"peer message of {ln} bytes exceeds the limit")
            end = off + hdr + ln
            if end > n:
                break
            out.append(_decode(src[off + hdr:end], crc))
            off = end
        if src is buf:
            if off:
                del buf[:off]
        elif off < n:
            buf += data[off:]
        return out

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_message(self) -> dict | None:
        buf = self._buf
        if len(buf) < FRAME.size:
            return None
        ln, crc = FRAME.unpack_from(buf, 0)
        if ln > MAX_MESSAGE:
            raise PeerProtocolError(f"peer message of {ln} bytes exceeds the limit")
        end = FRAME.size + ln
        if len(buf) < end:
            return None
        payload = bytes(buf[FRAME.size:end])
        del buf[:end]
        return _decode(payload, crc)
