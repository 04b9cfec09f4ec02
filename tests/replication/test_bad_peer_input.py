"""Bad input on the peer port of real nodes (MISSION K4 for the replication protocol):
random bytes, an HTTP request, a frame with a wrong checksum, a length over the limit, a
well-formed frame of an unknown message type, a hello that is not one, and control messages
(a vote request, an announcement, a switchover's timeout_now) that are malformed or come from a node id outside the
cluster file, which must not move the epoch. Each such link is
closed by the node (at once for a complete bad frame; after the hello timeout at the latest
for bytes that announce a long frame) with a warning in its log that says what was wrong,
and the node goes on serving clients and replicating: the followers' own links to the
leader are untouched."""

from __future__ import annotations

import os
import socket
import struct
import time
import zlib

import msgpack

from replikv.core.peerproto import MAX_MESSAGE, encode_message
from tests.conftest import client, wait_for
from tests.replication.conftest import all_streaming, converged, repl_status


def _frame(payload: bytes, crc: int | None = None) -> bytes:
    return struct.pack("<II", len(payload), zlib.crc32(payload) if crc is None else crc) + payload


BAD = {
    "random bytes": os.urandom(4096),
    "http": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "checksum": _frame(msgpack.packb({"t": "hello", "node_id": 2}), crc=7),
    "too long": struct.pack("<II", MAX_MESSAGE + 1, 0) + b"x" * 64,
    "unknown type": _frame(msgpack.packb({"t": "format_c", "node_id": 2})),
    "hello without a node id": encode_message({"t": "hello", "node_id": "two"}),
    "not a hello first": encode_message({"t": "ack", "received": 1, "flushed": 1, "applied": 1}),
    # control messages: a stranger asking for votes in a far epoch must not depose the leader
    "vote from a stranger": encode_message({"t": "vote_req", "epoch": 999, "candidate": 42, "last_epoch": 999,
                                             "last_seq": 10**9}),
    "malformed vote": encode_message({"t": "vote_req", "epoch": "soon", "candidate": 2}),
    "announce from a stranger": encode_message({"t": "announce", "epoch": 999, "leader_id": 42}),
    "malformed timeout_now": encode_message({"t": "timeout_now", "epoch": "now"}),
}


def _closed_by_peer(s: socket.socket, deadline: float) -> bool:
    """Reads until the node closes the connection (True) or the deadline passes (False)."""
    while time.monotonic() < deadline:
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            if s.recv(65536) == b"":
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False


def test_garbage_on_every_peer_port_closes_that_link_and_replication_goes_on(leader_cluster):
    cl = leader_cluster(3)
    r = client(cl.node(1).port)
    r.set("before", "1")
    epoch = repl_status(cl, 1)["epoch"]
    socks = []
    for node in cl.nodes:
        for kind, data in BAD.items():
            s = socket.create_connection((node.host, node.peer_port), timeout=5)
            s.sendall(data)
            socks.append((node.node_id, kind, s))
    deadline = time.monotonic() + 20      # the hello timeout is 10 s
    try:
        still_open = [(nid, kind) for nid, kind, s in socks if not _closed_by_peer(s, deadline)]
    finally:
        for _, _, s in socks:
            s.close()
    assert still_open == []
    # each is named in the node's log as what it was, not as a crash
    text = open(cl.log_file(cl.node(1))).read()
    assert "peer connection from" in text and "exceeds the limit" in text and "checksum mismatch" in text
    assert "unknown peer message" in text and "hello without a node id" in text and "expected hello, got ack" in text
    assert "malformed vote_req message" in text and "vote_req from node 42, which is not in the cluster file" in text
    assert "announce from node 42" in text and "malformed timeout_now message" in text
    assert "Traceback" not in text
    for nid in (1, 2, 3):
        st = repl_status(cl, nid)
        assert st["epoch"] == epoch and st["leader_id"] == 1, (nid, st["epoch"], st["leader_id"])

    # every node still serves, the followers still stream from the leader, and new writes arrive
    for node in cl.nodes:
        assert client(node.port).ping()
    assert all_streaming(cl)
    pipe = r.pipeline(transaction=False)
    for i in range(500):
        pipe.set(f"after:{i}", i)
    pipe.execute()
    wait_for(lambda: converged(cl), 30, what="the followers applying the writes made after the garbage")
    for nid in (2, 3):
        assert client(cl.node(nid).port).get("after:499") == b"499"
