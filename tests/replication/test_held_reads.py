"""Replies held for a position (a read of a value not yet visible) when a rollback or a full
resync replaces the data above some position: those held above it were encoded from data
that may no longer exist and get TRYAGAIN; those at or below it leave as they are, in
order (Node.fail_held_reads, called by rollback_to and the snapshot install)."""

from __future__ import annotations

from replikv.server.connection import ClientConnection


def test_reads_held_above_the_rollback_point_get_tryagain(bare_node):
    node = bare_node
    conn = ClientConnection(node)
    notacked = b"-NOTACKED the write's outcome is unknown\r\n"
    conn.waiting.append([2, None, b"$3\r\nold\r\n", "r", 0.0])    # below the rollback point
    conn.waiting.append([0, None, notacked, "r", 0.0])            # a write answered at step-down
    conn.waiting.append([5, None, b"$4\r\ngone\r\n", "r", 0.0])   # a value that was rolled back
    other = ClientConnection(node)
    other.waiting.append([4, None, b"$4\r\nlost\r\n", "r", 0.0])
    node.waiters.update((conn, other))
    node.visible_seq = 3
    node.fail_held_reads(3, "the value this read saw was rolled back after a failover")
    assert conn.out[:2] == [b"$3\r\nold\r\n", notacked]
    assert conn.out[2].startswith(b"-TRYAGAIN the value this read saw was rolled back")
    assert other.out[0].startswith(b"-TRYAGAIN") and b"lost" not in other.out[0]
    assert not conn.waiting and not other.waiting and not node.waiters


def test_slots_and_reads_within_the_kept_data_stay_held(bare_node):
    node = bare_node
    conn = ClientConnection(node)
    slot = conn.reply_slot(on_leadership_loss=b":0\r\n")           # a WAIT, answered by its owner
    conn.waiting.append([3, None, b"$2\r\nok\r\n", "r", 0.0])
    node.visible_seq = 2
    node.fail_held_reads(3, "rolled back")
    assert conn.waiting[0] is slot and conn.waiting[1][2] == b"$2\r\nok\r\n" and not conn.out
    assert conn in node.waiters
