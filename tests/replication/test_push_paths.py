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


class FakePeer:
    def __init__(self) -> None:
        self.rx_paused = False
        self._ready: deque = deque()

    def pause_reading(self) -> None:
        self.rx_paused = True

    def resume_reading(self) -> None:
        self.rx_paused = False


def make_follower() -> Replication:
    from replikv.core.replication import FollowerCore
    from replikv.server import replication as R

    r = object.__new__(Replication)
    r.role = "follower"
    r.follower_core = FollowerCore()
    r.apply_queue = deque()
    r.queue_overflow = False
    r._apply_wanted = True
    r._prompt = 0
    r._peer = FakePeer()
    r.relay_written = 0
    r.received_epoch = 0
    r._ack_scheduled = False
    r.node = types.SimpleNamespace(_loop=None)
    r._high, r._low = R.APPLY_BACKLOG_HIGH, R.APPLY_BACKLOG_LOW
    return r


def receive(r: Replication, first: int, n: int) -> None:
    recs = [(s, 7, 0, [], b"") for s in range(first, first + n)]
    r._relay_written(recs, first + n - 1, sync=False)


def test_a_follower_stops_reading_while_its_apply_backlog_is_high_and_reads_again_once_it_is_low():
    """Records are taken from the socket as they arrive; the apply task applies a slice per
    turn. Past APPLY_BACKLOG_HIGH unapplied records the follower stops reading from the
    leader (TCP then holds the rest back), and reads again at APPLY_BACKLOG_LOW."""
    r = make_follower()
    receive(r, 1, r._high)
    assert not r._peer.rx_paused                      # at the bound: still reading
    receive(r, r._high + 1, 10)
    assert r._peer.rx_paused
    r._rx_check()
    assert r._peer.rx_paused                          # nothing applied yet
    for _ in range(len(r.apply_queue) - r._low):
        r.apply_queue.popleft()                       # the apply task works through the backlog
    r._rx_check()
    assert not r._peer.rx_paused


def test_a_stopped_or_delayed_apply_never_stops_the_relay_log_from_receiving():
    r = make_follower()
    r._apply_wanted = False                           # STOP REPLICA SQL_THREAD
    receive(r, 1, r._high + 10)
    assert not r._peer.rx_paused
    r._apply_wanted = True
    receive(r, r._high + 11, 10)
    assert r._peer.rx_paused
    r.follower_core.apply_delay_ms = 1000             # REPLICA DELAY: records wait on purpose
    r._rx_check()
    assert not r._peer.rx_paused
    receive(r, r._high + 21, 10)
    assert not r._peer.rx_paused
