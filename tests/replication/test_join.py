"""A new follower joins while the leader takes >= 1,000 writes/s: snapshot -> catching-up ->
streaming, and the same DIGEST at the end (MISSION L7)."""

from __future__ import annotations

import threading
import time

from tests.conftest import client, wait_for
from tests.replication.conftest import Writer, converged, digest, metric, repl_status

ORDER = ["snapshot", "catching-up", "streaming"]


def test_new_follower_joins_under_write_load(leader_cluster):
    # the leader snapshots and drops old log segments, as a long-running leader does, so a new
    # follower cannot stream from seq 1 and must start from a snapshot
    cl = leader_cluster(3, snapshot_every_records=10_000, log_retention_bytes=0, segment_bytes=256 * 1024)
    leader = client(cl.node(1).port)
    for start in range(0, 30_000, 2000):     # data for the snapshot, in modest pipelines
        pipe = leader.pipeline(transaction=False)
        for i in range(start, start + 2000):
            pipe.set(f"pre:{i}", "x" * 400)   # ~12 MB: a snapshot stage long enough to be seen by polling
        pipe.execute()

    wait_for(lambda: client(cl.node(1).port).info("replication")["repl_backlog_first_byte_offset"] > 1, 20,
             what="the leader's log no longer starting at seq 1")
    spec = cl.add_node()          # listed in the cluster file; the running leader learns of it on hello
    w = Writer(cl.node(1).port)
    w.start()
    try:
        wait_for(lambda: w.n >= 2000, 20, what="writer running")
        t0, n0 = time.monotonic(), w.n
        seen: list[str] = []          # the follower's own view
        seen_leader: list[str] = []   # the leader's view of it

        def note(states, s):
            if s in ORDER and (not states or states[-1] != s):
                states.append(s)

        def leader_view() -> None:
            for f in repl_status(cl, 1)["followers"]:
                if f["node_id"] == spec.node_id:
                    note(seen_leader, f["state"])

        # the leader's snapshot stage lasts as long as the transfer (tens of ms on loopback):
        # a thread of its own watches the leader's view from before the follower starts
        watching = threading.Event()

        def watch_leader() -> None:
            while not watching.is_set():
                try:
                    leader_view()
                except Exception:  # noqa: BLE001 - the cluster is going away (test failed)
                    return

        watcher = threading.Thread(target=watch_leader, daemon=True)
        watcher.start()
        cl.start_node(spec)

        def follower_state():
            s = repl_status(cl, spec.node_id)["state"]
            note(seen, s)
            return s == "streaming"

        wait_for(follower_state, 60, interval=0.005, what="node 4 streaming")
        # the leader sees it streaming too, while the writer keeps going
        wait_for(lambda: follower_state() and seen_leader and seen_leader[-1] == "streaming", 10,
                 what=f"the leader seeing node 4 streaming (seen {seen_leader})")
        watching.set()
        watcher.join(10)
        rate = (w.n - n0) / (time.monotonic() - t0)
        assert w.error is None, w.error
    finally:
        w.stop.set()
        w.join(10)
    assert w.error is None, w.error
    assert rate >= 1000, f"the writer sustained only {rate:.0f} writes/s during the join"
    # the follower's states came in order (a fast stage may be missed by polling) until it first
    # streamed (a burst of writes may briefly put it back to catching-up), and it ends streaming
    first = seen[: seen.index("streaming") + 1]
    assert [ORDER.index(s) for s in first] == sorted(ORDER.index(s) for s in first), seen
    assert seen[0] == "snapshot" and seen[-1] == "streaming", seen
    assert "snapshot" in seen_leader, seen_leader
    st4 = repl_status(cl, spec.node_id)
    assert st4["full_resyncs"] == 1 and "new follower" in st4["last_resync_reason"], st4
    f4 = [f for f in repl_status(cl, 1)["followers"] if f["node_id"] == spec.node_id][0]
    assert f4["full_resyncs"] == 1 and f4["link"] == "up"
    assert metric(cl, 1, "replikv_full_resyncs_total") == 1
    wait_for(lambda: converged(cl), 30, what="all four nodes converging")
    assert digest(cl, 4) == digest(cl, 1)
    assert client(spec.port).get("w:count") == leader.get("w:count") == str(w.n // 2).encode()
    assert client(spec.port).dbsize() == leader.dbsize()
