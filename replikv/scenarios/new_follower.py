"""A new follower under write load: a consistent snapshot tied to a log position, then catch-up."""

from __future__ import annotations

import random
import time

import redis

from ._base import Loop, Result, Run, caught_up, client, repl, scenario, wait_for

ACCOUNTS = 200
START = 100
TOTAL = ACCOUNTS * START


def _transfers(port: int, seed: int):
    r = client(port)
    rng = random.Random(seed)

    def step():
        p = r.pipeline(transaction=True)        # MULTI ... EXEC: 10 transfers, one log record
        for _ in range(10):
            a, b = rng.sample(range(ACCOUNTS), 2)
            amount = rng.randint(1, 9)
            p.decrby(f"acct:{a}", amount)
            p.incrby(f"acct:{b}", amount)
        p.execute()
    return step


def _naive_copy(r: redis.Redis) -> dict[str, int]:
    """What a program copying the data key by key gets while writes go on: no snapshot."""
    out = {}
    for k in r.scan_iter(match="acct:*", count=50):
        v = r.get(k)
        if v is not None:
            out[k.decode()] = int(v)
    return out


@scenario(
    "new-follower",
    title="a new follower from a snapshot, under write load",
    seeds="""A new follower is set up without downtime: take a consistent snapshot of the leader's
    database at some point, copy it to the new node, then have the follower request every change
    since that snapshot. The snapshot must be associated with an exact position in the leader's
    replication log (PostgreSQL's log sequence number, MySQL's binlog coordinates); once the
    backlog is processed, the follower has caught up.""",
    mechanism="the leader forks a snapshot at an exact seq, streams it, and the follower continues from seq + 1",
    order=50)
def new_follower(run: Run) -> Result:
    # the leader snapshots often and drops the log the snapshots cover, as a long-running leader does:
    # a new follower cannot stream from seq 1 and must start from a snapshot
    cl = run.cluster(3, ack="async", spare=1, settings={"snapshot_every_records": 300, "log_retention_bytes": 0,
                                                         "segment_bytes": 32 * 1024})
    w = client(cl.node(1).port)
    w.mset({f"acct:{i}": START for i in range(ACCOUNTS)})
    load = Loop(_transfers(cl.node(1).port, 7), pace=0.004, name="transfers")
    run.step(f"{ACCOUNTS} accounts of {START} each: the bank holds {TOTAL} in all. A client moves money between "
             f"accounts without pause, 10 transfers per MULTI/EXEC, so the total never changes. The leader "
             f"snapshots every 300 records and keeps no log older than its snapshot")
    load.start()
    try:
        wait_for(lambda: load.calls >= 50, 20, "transfers running")
        wait_for(lambda: cl.http_get(cl.node(1), "/status")["log_first_seq"] > 1, 60,
                 "the leader's log no longer starting at seq 1")

        run.heading("Without the mechanism: copy the leader's data key by key while the transfers go on")
        copies = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(copies) < 5:
            copy = _naive_copy(w)
            copies.append(sum(copy.values()))
            run.show(f"copy {len(copies)}: {len(copy)} accounts, total {copies[-1]}"
                     + ("   <- a state the leader was never in" if copies[-1] != TOTAL else ""))
            if copies[-1] != TOTAL:
                break
        bad_copies = sum(1 for t in copies if t != TOTAL)
        run.say("No log position fits such a copy: whatever position replication continued from, some "
                "transfers would count twice or never.")
        run.beat()

        run.heading("With the mechanism: node 4 joins; the leader snapshots at an exact position and streams from it")
        spec = cl.add_node()
        cl.start_node(spec)
        states, totals = [], []
        r4 = client(spec.port)

        def watch():
            st = repl(cl, 4) or {}
            if st.get("state") and (not states or states[-1] != st["state"]):
                states.append(st["state"])
            try:
                vals = r4.mget([f"acct:{i}" for i in range(ACCOUNTS)])   # one command: one position
            except redis.ResponseError:
                vals = [None]                                             # LOADING the snapshot
            if None not in vals:
                totals.append(sum(int(v) for v in vals))
            return st.get("state") == "streaming" and len(totals) >= 20
        wait_for(watch, 60, "node 4 streaming")
        run.show(f"node 4 went through: {' -> '.join(states)}; {len(totals)} reads of all {ACCOUNTS} accounts on "
                 f"node 4 while it caught up, totals seen: {sorted(set(totals))}")
    finally:
        load.stop()
    wait_for(lambda: caught_up(cl, 1, [2, 3, 4]), 30, "node 4 caught up")
    st4 = repl(cl, 4)
    run.show(f"transfers stopped after {load.calls * 10} of them; node 4 applied {st4['applied']} records, its DIGEST "
             f"equals the leader's; full resyncs: {st4['full_resyncs']} ({st4.get('last_resync_reason')})")
    bad_totals = [t for t in totals if t != TOTAL]
    return Result("new-follower", bad_copies > 0, bool(bad_totals) or st4["full_resyncs"] < 1,
                  {"naive_copy_totals": copies, "follower_states": states, "follower_totals": sorted(set(totals)),
                   "transfers": load.calls * 10, "full_resyncs": st4["full_resyncs"],
                   "resync_reason": st4.get("last_resync_reason")})
