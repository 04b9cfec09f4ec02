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


# ---------------------------------------------------------------------------- follower: a batch applied inline


def _follower_shell(tmp_path):
    """A Replication shell in role follower over a real Storage, as _on_records_now sees it."""
    from replikv.core.replication import FollowerCore
    from replikv.storage.engine import Storage

    st = Storage(str(tmp_path / "f"), log=lambda m: None)
    st.recover()
    calls = {"flush": 0, "direct": 0}

    def write_inline(pending, sync):
        calls["direct"] += 1
        st.write_out(*pending, sync=sync)

    def schedule_log_flush():
        calls["flush"] += 1

    node = types.SimpleNamespace(storage=st, logfmt=None, config=types.SimpleNamespace(fsync="everysec"),
                                 log_write_inline=lambda: True, _write_inline=write_inline,
                                 schedule_log_flush=schedule_log_flush)
    r = object.__new__(Replication)
    r.node = node
    r.follower_core = FollowerCore()
    r.inline_batches = 0
    hist = [[1, 1]]
    r._history = lambda: hist
    r._hist_last_epoch = 1
    st.meta.save = lambda: None
    return r, st, calls, hist


def _frame(items: list) -> bytes:
    import zlib

    import msgpack

    from replikv.storage.log import FRAME

    payload = msgpack.packb(items, use_bin_type=True)
    return FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def test_inline_batch_goes_to_the_own_log_in_one_piece(tmp_path):
    from replikv.core.keyspace import E_SET

    r, st, calls, hist = _follower_shell(tmp_path)
    frames = b"".join(encode_record(s, 1 if s < 4 else 2, 100 + s, [[E_SET, b"k%d" % s, b"v%d" % s, 0]])
                      for s in range(1, 7))
    recs = split_records(frames, 1)
    r._apply_inline(recs, frames, 1, 6)
    assert calls == {"flush": 0, "direct": 1}           # written at once, not through the buffer
    assert r.inline_batches == 1
    assert st.last_seq == st.written_seq == 6 and not st._buf
    assert hist == [[1, 1], [2, 4]] and st.epoch == 2     # the epoch change at 4 is in the history
    assert r.follower_core.applied == 6
    assert st.ks.data[b"k5"].value == b"v5"
    assert [f for _, f in st.log.read_from(1, 1 << 20)] == [rec[4] for rec in recs]


def test_inline_batch_with_a_shipped_event_keeps_the_own_log_in_order(tmp_path):
    """A record carrying a row / statement event (here an "eff" event) is appended by
    apply_event as this node's own record; the frames before it must be buffered first and
    those after it after, so the own log holds seqs 1..6 in order."""
    from replikv.core.keyspace import E_SET

    r, st, calls, hist = _follower_shell(tmp_path)
    parts = []
    for s in range(1, 7):
        eff = [[E_SET, b"k%d" % s, b"v%d" % s, 0]]
        epoch = 1 if s < 3 else 2            # the event starts a new epoch
        parts.append(_frame([s, epoch, 100 + s, "eff", eff]) if s == 3 else encode_record(s, epoch, 100 + s, eff))
    frames = b"".join(parts)
    recs = split_records(frames, 1)
    assert type(recs[2][3]) is not list and all(type(rec[3]) is list for i, rec in enumerate(recs) if i != 2)
    r._apply_inline(recs, frames, 1, 6)
    assert calls == {"flush": 1, "direct": 0}            # through the buffer, flushed at the end of the iteration
    data, first, last = st.take_buffer()
    assert (first, last) == (1, 6)
    st.write_out(data, first, last, sync=False)
    got = [f for _, f in st.log.read_from(1, 1 << 20)]
    assert [rec[0] for rec in split_records(b"".join(got), 1)] == [1, 2, 3, 4, 5, 6]
    assert got[:2] == [recs[0][4], recs[1][4]] and got[3:] == [rec[4] for rec in recs[3:]]
    assert all(st.ks.data[b"k%d" % s].value == b"v%d" % s for s in range(1, 7))
    assert hist == [[1, 1], [2, 3]] and st.epoch == 2 and r.follower_core.applied == 6
    assert r.inline_batches == 1


def test_inline_batch_that_fails_midway_leaves_the_own_log_at_what_was_applied(tmp_path):
    """An error applying record 4 (a bug) must not leave records 1..3 applied to the keyspace
    but missing from the own log (the apply task would apply them again from the relay
    log): they are in the log buffer, the applied position says 3, and the error goes up
    (the link closes; the apply task goes on from the relay log)."""
    import pytest

    from replikv.core.keyspace import E_SET

    r, st, calls, hist = _follower_shell(tmp_path)
    frames = b"".join(encode_record(s, 1, 100 + s, [[E_SET if s != 4 else 250, b"k%d" % s, b"v%d" % s, 0]])
                      for s in range(1, 7))
    recs = split_records(frames, 1)
    with pytest.raises(ValueError, match="unknown effect opcode"):
        r._apply_inline(recs, frames, 1, 6)
    assert st.last_seq == 3 and r.follower_core.applied == 3 and calls["flush"] == 1 and r.inline_batches == 0
    data, first, last = st.take_buffer()
    assert (first, last) == (1, 3) and data == b"".join(rec[4] for rec in recs[:3])
