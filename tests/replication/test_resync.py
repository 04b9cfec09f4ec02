"""A follower kept down past the leader's log retention gets a full resync, counted and
explained (MISSION L7)."""

from __future__ import annotations

from tests.conftest import client, wait_for
from tests.replication.conftest import converged, digest, metric, repl_status


def test_follower_down_past_retention_gets_full_resync(leader_cluster):
    cl = leader_cluster(3, segment_bytes=32 * 1024, snapshot_every_records=500, log_retention_bytes=0)
    leader = client(cl.node(1).port)
    leader.set("before", "1")
    wait_for(lambda: repl_status(cl, 3)["applied"] >= leader.execute_command("ROLE")[1], 10,
             what="follower 3 up to date")
    cl.kill(3)
    down_at = leader.execute_command("ROLE")[1]
    for start in range(0, 5000, 500):
        pipe = leader.pipeline(transaction=False)
        for i in range(start, start + 500):
            pipe.set(f"k:{i % 1000}", i)
        pipe.execute()
    # the leader no longer keeps the records follower 3 needs next
    wait_for(lambda: leader.info("replication")["repl_backlog_first_byte_offset"] > down_at + 1, 20,
             what="the leader dropping the log after follower 3's position")
    assert metric(cl, 1, "replikv_full_resyncs_total") == 0
    cl.start_node(cl.node(3))
    wait_for(lambda: repl_status(cl, 3)["full_resyncs"] == 1, 20, what="follower 3 resynced from a snapshot")
    st3 = repl_status(cl, 3)
    assert "retention" in st3["last_resync_reason"], st3["last_resync_reason"]
    f3 = [f for f in repl_status(cl, 1)["followers"] if f["node_id"] == 3][0]
    assert f3["full_resyncs"] == 1 and "retention" in f3["last_resync_reason"], f3
    assert metric(cl, 1, "replikv_full_resyncs_total") == 1
    assert client(cl.node(3).port).info("replication")["replikv_full_resyncs"] == 1
    wait_for(lambda: converged(cl), 20, what="follower 3 converging after the resync")
    assert digest(cl, 3) == digest(cl, 1)
    assert client(cl.node(3).port).get("before") == b"1"
    # follower 2 never needed one
    assert repl_status(cl, 2)["full_resyncs"] == 0
