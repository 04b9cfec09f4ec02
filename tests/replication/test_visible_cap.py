"""A leader that steps down keeps its own log, possibly ending in records no follower
acknowledged. As a follower it would show readers its whole own log; until its start plan
with the next leader is done (the rollback of what that leader lacks), it shows no more
than it showed as leader (``Replication.visible_cap``, set by ``_become_follower``, lifted
by the welcome or a snapshot install)."""

from __future__ import annotations

import types

from replikv.server.replication import Replication


def shell(role: str, cap):
    r = object.__new__(Replication)
    r.role = role
    r.visible_cap = cap
    r.node = types.SimpleNamespace(advanced=0)
    r.node._advance_visible = lambda: setattr(r.node, "advanced", r.node.advanced + 1)
    return r


def test_a_capped_follower_shows_no_more_than_the_cap():
    r = shell("follower", 7)
    assert r.visible(12) == 7 and r.watermark_for(None, 12) == 7
    assert r.visible(5) == 5              # (below the cap: its own durable position)


def test_lifting_the_cap_shows_the_whole_log_and_moves_visibility_on():
    r = shell("follower", 7)
    r._lift_visible_cap()
    assert r.visible_cap is None and r.visible(12) == 12 and r.node.advanced == 1
    r._lift_visible_cap()                 # nothing to lift: no extra work
    assert r.node.advanced == 1


def test_no_cap_is_the_local_durable_position():
    r = shell("follower", None)
    assert r.visible(12) == 12


# ---------------------------------------------------------------------------- across a restart
def restarted(tmp_path, history: list, build) -> tuple:
    """A node's data dir built by ``build(storage)``, recovered, then ``_restore_commit_cap``
    run as Replication.start runs it (a follower at start); returns (shell, storage)."""
    from tests.storage.test_log import recovered

    d = str(tmp_path)
    st = recovered(d)
    build(st)
    st.close()
    st = recovered(d)
    st.meta["epochs"] = history
    r = object.__new__(Replication)
    r.role = "follower"
    r.visible_cap = None
    r.node = types.SimpleNamespace(storage=st, visible_seq=st.last_seq, config=types.SimpleNamespace(node_id=1))
    r._restore_commit_cap()
    return r, st


def _sets(st, keys):
    from tests.storage.test_log import drive, flush

    drive(st, [[(0, k, b"v", 0)] for k in keys])    # E_SET
    flush(st)


def test_a_restarted_leader_hides_its_tail_beyond_its_commit_point(tmp_path):
    def build(st):
        st.epoch = 4
        _sets(st, [b"k%d" % i for i in range(10)])          # seqs 1..10 in epoch 4
        st.save_commit(4, 6)
    r, st = restarted(tmp_path, [[0, 1], [4, 1]], build)
    assert r.visible_cap == 6 and r.node.visible_seq == 6


def test_a_leader_promoted_again_and_stopped_before_writing_still_hides_its_old_tail(tmp_path):
    """It led epoch 4 (seqs 6..10 unconfirmed), stepped down, won epoch 6 with that tail and
    was stopped before writing in epoch 6: the last record's epoch (4) is older than the
    epoch of the commit point (6), and the tail is still unconfirmed."""
    def build(st):
        st.epoch = 4
        _sets(st, [b"k%d" % i for i in range(10)])
        st.save_commit(6, 5, sync=True)                     # the promotion to epoch 6
    r, st = restarted(tmp_path, [[0, 1], [4, 1], [6, 11]], build)
    assert r.visible_cap == 5 and r.node.visible_seq == 5


def test_a_node_that_followed_a_later_leader_shows_its_whole_log(tmp_path):
    def build(st):
        st.epoch = 4
        _sets(st, [b"a", b"b"])
        st.save_commit(4, 1)
        st.epoch = 5
        _sets(st, [b"c"])                                    # received from epoch 5's leader
    r, st = restarted(tmp_path, [[0, 1], [4, 1], [5, 3]], build)
    assert r.visible_cap is None and r.node.visible_seq == 3
    assert st.ks.deleted_floor == 0 and not st.ks.deleted_pos


def test_a_deletion_inside_a_snapshot_past_the_commit_point_still_waits(tmp_path):
    """The snapshot covers an unconfirmed DEL: it is not known one by one, so every absent
    key reads as possibly deleted at the snapshot's position (a read of it waits)."""
    from tests.storage.test_log import drive, flush, snapshot

    def build(st):
        st.epoch = 4
        _sets(st, [b"a", b"b"])                              # 1..2
        st.save_commit(4, 2)
        drive(st, [[(1, b"a")]])                             # 3: E_DEL, unconfirmed
        flush(st)
        snapshot(st)                                         # at 3
        _sets(st, [b"c"])                                    # 4
    r, st = restarted(tmp_path, [[0, 1], [4, 1]], build)
    assert st.snapshot_seq == 3
    assert r.visible_cap == 2
    assert st.ks.key_pos(b"a") >= 3 and st.ks.key_pos(b"never") >= 3
    assert st.ks.key_pos(b"b") == 2 and st.ks.key_pos(b"c") == 4
