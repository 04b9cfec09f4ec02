"""A follower cannot hold more of the leader's history than the leader sent it on the
current connection, so the leader caps what an ack claims there. While a follower carries
out its start plan (a rollback that may take seconds), its tick acks still state its old
relay position: records of another history at the positions the new leader's records take.
Counted as received, they would let semi-sync acknowledge writes only the leader has."""

from __future__ import annotations

import types

from replikv.core.replication import AckPolicy, LeaderCore
from replikv.server.replication import Replication, _Stream


class Conn:
    def __init__(self, sent_top: int = 0) -> None:
        self.sent_top = sent_top


def leader(streams: dict) -> Replication:
    r = object.__new__(Replication)
    r.role = "leader"
    r.policy = AckPolicy.parse("semi-sync:1")
    r.leader_core = LeaderCore(r.policy)
    r.leader_core.on_connect(2, 0, "x")
    r.election = types.SimpleNamespace(on_follower_ack=lambda fid, echo: None)
    r.node = types.SimpleNamespace(clock=types.SimpleNamespace(now_ms=lambda: 1000), _advance_visible=lambda: None)
    r._check_waits = lambda: None
    r._handle_events = lambda events: None
    r._streams = streams
    return r


def ack(received: int, flushed: int | None = None, applied: int | None = None) -> dict:
    return {"t": "ack", "received": received, "flushed": received if flushed is None else flushed,
            "applied": received if applied is None else applied}


def test_claims_above_what_was_sent_on_this_connection_are_capped():
    conn = Conn(sent_top=4)
    r = leader({2: _Stream(conn, 11)})          # records up to 10 sent on this connection
    r._on_ack(2, ack(50, 50, 40), conn)
    f = r.leader_core.followers[2]
    assert (f.received, f.flushed, f.applied) == (10, 10, 10)
    r._on_ack(2, ack(8, 7, 6), conn)            # what it really has: taken as it is
    assert (f.received, f.flushed, f.applied) == (8, 7, 6)


def test_before_records_flow_the_start_position_is_the_cap():
    conn = Conn(sent_top=4)                     # start plan: streaming from 5
    r = leader({})                              # no stream yet (snapshot, or the plan running)
    r._on_ack(2, ack(50), conn)
    assert r.leader_core.followers[2].received == 4
    old = Conn(sent_top=90)
    r = leader({2: _Stream(old, 91)})           # the stream of an older connection
    r._on_ack(2, ack(50), conn)
    assert r.leader_core.followers[2].received == 4
