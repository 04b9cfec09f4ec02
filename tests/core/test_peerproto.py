"""The peer protocol's codec without sockets: frames split anywhere and frames packed
together decode to the same messages through both ways of using the decoder, and every
kind of bad frame raises PeerProtocolError (the link then closes and the peer resumes from
its positions), never another exception and never a wrong message."""

from __future__ import annotations

import struct
import zlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replikv.core.peerproto import MAX_MESSAGE, PeerDecoder, PeerProtocolError, encode_message

MSGS = [
    {"t": "records", "first": 1, "last": 3, "frames": b"\x00\x01" * 300, "leader_last": 3,
     "leader_time_ms": 1_700_000_000_000, "epoch": 2, "ack": 1},
    {"t": "ack", "received": 3, "flushed": 3, "applied": 2, "time_ms": 5, "echo_ms": 4, "leader_last": 3,
     "epoch": 2},
    {"t": "hb", "leader_last": 3, "leader_time_ms": 7, "epoch": 2, "ack": 0},
    {"t": "hello", "node_id": 2, "history": "ab" * 20, "received": 0, "applied": 0},
]
STREAM = b"".join(encode_message(m) for m in MSGS)


def by_next_message(chunks: list[bytes]) -> list[dict]:
    d = PeerDecoder()
    out = []
    for c in chunks:
        d.feed(c)
        while (m := d.next_message()) is not None:
            out.append(m)
    return out


def by_messages(chunks: list[bytes]) -> list[dict]:
    d = PeerDecoder()
    out = []
    for c in chunks:
        out.extend(d.messages(c))
    assert d.messages(b"") == []
    return out


def test_every_split_point_and_one_chunk_give_the_same_messages():
    assert by_messages([STREAM]) == by_next_message([STREAM]) == MSGS
    for i in range(len(STREAM) + 1):
        parts = [STREAM[:i], STREAM[i:]]
        assert by_messages(parts) == MSGS, i
        assert by_next_message(parts) == MSGS, i


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(STREAM)), max_size=12))
def test_any_chunking_gives_the_same_messages(cuts):
    bounds = sorted(set(cuts))
    chunks = [STREAM[a:b] for a, b in zip([0] + bounds, bounds + [len(STREAM)], strict=True)]
    assert by_messages(chunks) == MSGS
    assert by_next_message(chunks) == MSGS


def frame(payload: bytes, crc: int | None = None, length: int | None = None) -> bytes:
    return struct.pack("<II", len(payload) if length is None else length,
                       zlib.crc32(payload) if crc is None else crc) + payload


BAD = {
    "checksum": frame(msgpack.packb({"t": "hb"}), crc=1),
    "not msgpack": frame(b"\xc1\xc1\xc1"),
    "not a map": frame(msgpack.packb([1, 2, 3])),
    "unknown type": frame(msgpack.packb({"t": "format_c"})),
    "no type": frame(msgpack.packb({"x": 1})),
    "unhashable type": frame(msgpack.packb({"t": [1]})),
    "bytes type": frame(msgpack.packb({"t": b"ack"})),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_a_bad_frame_raises_a_protocol_error_after_the_good_ones_before_it(kind):
    good = encode_message(MSGS[1])
    d = PeerDecoder()
    with pytest.raises(PeerProtocolError):
        d.messages(good + BAD[kind])
    d = PeerDecoder()
    d.feed(good + BAD[kind])
    assert d.next_message() == MSGS[1]
    with pytest.raises(PeerProtocolError):
        d.next_message()


def test_an_oversized_length_is_refused_before_its_bytes_arrive():
    head = struct.pack("<II", MAX_MESSAGE + 1, 0)
    with pytest.raises(PeerProtocolError, match="exceeds the limit"):
        PeerDecoder().messages(head)
    d = PeerDecoder()
    d.feed(head)
    with pytest.raises(PeerProtocolError, match="exceeds the limit"):
        d.next_message()
