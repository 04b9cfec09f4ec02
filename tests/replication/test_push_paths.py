"""The leader's push paths without sockets: what a gathered (lazy) push sends, to whom, and
that a push timer which outlives the node's leadership sends nothing (a deposed leader must
never ship records stamped with the epoch it learnt from its successor)."""

from __future__ import annotations

import types
from collections import deque

from replikv.core.peerproto import PeerDecoder
from replikv.core.replication import AckPolicy, LeaderCore
from replikv.server.replication import Replication, _Stream
from replikv.storage.log import encode_record, split_records


class FakeConn:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send_raw(self, data: bytes) -> None:
        self.sent.append(data)

    def buffered(self) -> int:
        return 0

    def messages(self) -> list[dict]:
        d = PeerDecoder()
        for b in self.sent:
            d.feed(b)
        out = []
        while (m := d.next_message()) is not None:
            out.append(m)
        return out


def make_leader(written: int, followers: dict[int, int]) -> Replication:
    """A Replication shell in role leader whose log holds records 1..written (all in the
    tail, one batch each) and whose followers were sent up to the given positions."""
    r = object.__new__(Replication)
    r.role = "leader"
    r.policy = AckPolicy.parse("semi-sync:1")
    r.leader_core = LeaderCore(r.policy)
    r.node = types.SimpleNamespace(logfmt=None, durable_seq=lambda: written,
                                   clock=types.SimpleNamespace(now_ms=lambda: 1000),
                                   waiters=set(), ackmode_used=False)
    r.election = types.SimpleNamespace(epoch=7)
    r.switching = False
    r.wait_list = []
    r._lazy_sent = 0
    r.tail = deque((s, s, encode_record(s, 7, 0, [])) for s in range(1, written + 1))
    r._streams = {}
    for fid, sent in followers.items():
        st = _Stream(FakeConn(), sent + 1)
        st.live = True
        r._streams[fid] = st
    return r


def test_lazy_push_sends_each_follower_what_it_lacks():
    r = make_leader(10, {2: 10, 3: 4, 4: 4})
    assert r._push_pending(r._streams) is False
    assert r._streams[2].conn.sent == []                      # had everything
    m3, m4 = r._streams[3].conn.messages(), r._streams[4].conn.messages()
    assert m3 == m4 and len(m3) == 1                          # one encoding for both
    msg = m3[0]
    assert (msg["t"], msg["first"], msg["last"], msg["epoch"], msg["ack"]) == ("records", 5, 10, 7, 1)
    assert [rec[0] for rec in split_records(msg["frames"], 5)] == [5, 6, 7, 8, 9, 10]
    assert r._streams[3].next_seq == r._streams[4].next_seq == 11


def test_a_push_timer_after_stepping_down_sends_nothing():
    r = make_leader(10, {2: 4, 3: 4})
    r.role = "follower"          # stepped down (and learnt a newer epoch) before the timer fired
    r.election.epoch = 8
    assert r._push_pending(r._streams) is False
    assert all(s.conn.sent == [] and s.next_seq == 5 for s in r._streams.values())


def test_prompt_set_picks_k_followers_and_status_names_them():
    r = make_leader(10, {2: 10, 3: 10})
    r._chosen = frozenset()
    for fid in (2, 3):
        r.leader_core.on_connect(fid, 1000)
        r.leader_core.on_ack(fid, 10, 10, 10, 1000)
    chosen = r._prompt_set()
    assert chosen is not None and len(chosen) == 1
    states = {fid: r._sync_state(fid) for fid in (2, 3)}
    assert sorted(states.values()) == ["spare", "sync"] and states[next(iter(chosen))] == "sync"
    # FIRST k and an async policy: no subset
    r.policy = AckPolicy.parse("sync:received:first:1:2,3")
    assert r._prompt_set() is None
    r.policy = AckPolicy.parse("async")
    assert r._prompt_set() is None and r._sync_state(2) == "async"

