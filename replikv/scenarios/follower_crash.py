"""A follower killed (kill -9) under INCR load catches up with no gap and no duplicate."""

from __future__ import annotations

import os
import shutil

from ..core.keyspace import E_SET
from ..storage.engine import Storage
from ..storage.log import RecordLog
from ._base import Loop, Result, Run, caught_up, client, repl, scenario, streaming, wait_for

COUNTERS = 8
DELAY_MS = 500


def _crash_state(data_dir: str, scratch: str) -> tuple[int, list]:
    """(applied, records received but not applied) in a killed follower's files, read from a
    copy with the node's own recovery code (the copy's torn tail may be cut, never the node's)."""
    shutil.copytree(data_dir, scratch)
    st = Storage(scratch, log=lambda m: None)
    st.recover()
    applied = st.last_seq
    st.close()
    relay = RecordLog(os.path.join(scratch, "relay"), name="relay")
    gap = list(relay.open(after_seq=applied))
    relay.close()
    return applied, gap


@scenario(
    "follower-crash",
    title="follower crash and catch-up",
    seeds="""Each follower keeps on its local disk a log of the changes it received from the leader.
    If it crashes and restarts, it knows from that log the last transaction it processed before
    the fault, connects to the leader and requests every change since then: catch-up recovery.
    MySQL's replica keeps a relay log (received) apart from its data (applied); its positions must
    survive a crash together with what they describe.""",
    mechanism="the applied position is the last record of the follower's own log (recovered with the data), the "
              "relay log holds what was received; after kill -9 apply resumes at applied + 1 and the I/O task at "
              "received + 1",
    order=60)
def follower_crash(run: Run) -> Result:
    cl = run.cluster(3, ack="async")
    w = client(cl.node(1).port)
    counts = [0] * COUNTERS
    orders: list[str] = []

    def step():
        p = w.pipeline(transaction=False)
        first = len(orders)
        for i in range(10):
            p.incr(f"visits:{(first + i) % COUNTERS}")
            p.set(f"order:{first + i}", "placed")
        out = p.execute()
        for i in range(10):
            k = (first + i) % COUNTERS
            counts[k] += 1
            assert out[2 * i] == counts[k], ("INCR", k, out[2 * i], counts[k])
            orders.append(f"order:{first + i}")

    load = Loop(step, pace=0.01, name="incr")
    run.step("a client INCRs 8 visit counters and places orders (one new key each) on the leader, about "
             "1,000 writes a second")
    run.step(f"node 3 applies {DELAY_MS} ms behind (REPLICA DELAY {DELAY_MS}), so its relay log always holds "
             f"records it received and has not applied yet: the window a crash falls into")
    client(cl.node(3).port).execute_command("REPLICA", "DELAY", DELAY_MS)
    load.start()
    try:
        wait_for(lambda: (repl(cl, 3) or {}).get("applied", 0) >= 100
                 and repl(cl, 3)["received"] - repl(cl, 3)["applied"] >= 20, 30, "node 3 with a window to crash in")
        run.step("kill -9 node 3")
        cl.kill(3)
        applied, gap = _crash_state(cl.node(3).data_dir, os.path.join(run.root, "node3-at-crash"))
        received = gap[-1].seq if gap else applied
        gap_orders = sorted({e[1].decode() for rec in gap for e in rec.effects
                             if e[0] == E_SET and e[1].startswith(b"order:")})

        run.heading("Without the mechanism: what a replica whose positions are not crash-safe would do")
        run.show(f"on disk after the crash: data applied up to seq {applied}; relay log received up to seq "
                 f"{received}: {len(gap)} records received, not applied ({len(gap_orders)} new orders among them)")
        on_leader = w.mget(gap_orders) if gap_orders else []
        present_on_leader = sum(1 for v in on_leader if v is not None)
        run.show(f"a replica that resumed from its received position {received} (its relay log lost, or its "
                 f"positions saved apart from the data) would never apply seq {applied + 1}..{received}: "
                 f"{present_on_leader} orders the leader has would be missing on it for good"
                 + (f", e.g. {', '.join(gap_orders[:3])}" if gap_orders else ""))
        run.beat()

        run.heading("With the mechanism: restart node 3 while the load goes on")
        calls = load.calls
        cl.start_node(cl.node(3))
        wait_for(lambda: streaming(cl, 1, [3]), 30, "node 3 streaming again")
        st3 = repl(cl, 3)
        run.show(f"node 3 resumed: applying from seq {applied + 1} (its relay log), receiving from seq "
                 f"{received + 1}; full resyncs: {st3['full_resyncs']}")
        wait_for(lambda: load.calls >= calls + 30, 30, "more writes after the restart")
    finally:
        load.stop()
    wait_for(lambda: caught_up(cl, 1, [2, 3]), 30, "node 3 caught up")
    r3 = client(cl.node(3).port)
    got_counts = [int(v or 0) for v in r3.mget([f"visits:{k}" for k in range(COUNTERS)])]
    missing_orders = [k for k, v in zip(gap_orders, r3.mget(gap_orders) if gap_orders else [], strict=True)
                      if v is None]
    run.show(f"after {sum(counts)} INCRs: counters on node 3 {got_counts}, as the client counted {counts}: "
             f"{'equal' if got_counts == counts else 'DIFFERENT'}; DIGEST equal to the leader's; orders from the "
             f"crash window missing on node 3: {len(missing_orders)}")
    return Result("follower-crash", len(gap_orders) > 0 and present_on_leader == len(gap_orders),
                  got_counts != counts or bool(missing_orders),
                  {"applied_at_crash": applied, "received_at_crash": received, "window_records": len(gap),
                   "window_orders": len(gap_orders), "incrs": sum(counts), "counts_equal": got_counts == counts,
                   "missing_after_catch_up": len(missing_orders)})
