"""Monotonic reads: reading alternately from two followers, one further behind, time goes backwards."""

from __future__ import annotations

import time

from ._base import Loop, Result, Run, client, scenario, seq_of, wait_for

FAR_DELAY_MS = 1000
READS = 6
RELOAD_S = 0.1      # the user reloads the page every 100 ms (pacing, not synchronisation)


@scenario(
    "time-backwards",
    title="time going backwards (monotonic reads)",
    seeds="""When each read of a user goes to a randomly chosen replica, the user may first see a
    recent value on one follower and then an older one on another that lags more: time seems
    to go backwards. Monotonic reads guarantee that a user never sees older data after newer
    data; one way is to send each user's reads always to the same replica (chosen by a hash of
    the user id, rerouted if it fails).""",
    mechanism="the session remembers the highest position it has seen (POS) and WAITPOS it before each read",
    order=20)
def time_backwards(run: Run) -> Result:
    cl = run.cluster(3, ack="async")
    run.step(f"node 3 applies {FAR_DELAY_MS} ms behind the leader (REPLICA DELAY {FAR_DELAY_MS}); node 2 keeps up")
    client(cl.node(3).port).execute_command("REPLICA", "DELAY", FAR_DELAY_MS)
    w = client(cl.node(1).port)
    w.set("post:7:likes", 0)
    writer = Loop(lambda: w.incr("post:7:likes"), pace=0.02, name="likes")
    run.step("a writer keeps adding likes to post 7 on the leader (INCR post:7:likes, 50 a second)")
    writer.start()
    readers = {2: client(cl.node(2).port), 3: client(cl.node(3).port)}
    try:
        wait_for(lambda: int(readers[2].get("post:7:likes") or 0) >= 20, 15, "node 2 showing 20 likes")

        run.heading("Without the mechanism: the user's page reloads, each time served by another follower")
        seen = []
        backwards = 0
        for i in range(READS):
            nid = 2 if i % 2 == 0 else 3
            time.sleep(RELOAD_S)
            v = int(readers[nid].get("post:7:likes") or 0)
            went_back = bool(seen) and v < seen[-1][1]
            backwards += went_back
            seen.append((nid, v))
            run.show(f"read {i + 1} from node {nid}: {v} likes" + ("   <- fewer than the read before: time went "
                                                                  "backwards" if went_back else ""))
        run.beat()

        run.heading("With the mechanism: the session keeps the highest position it has seen, each read waits for it")
        high = 0
        seen_with = []
        backwards_with = 0
        for i in range(READS):
            nid = 2 if i % 2 == 0 else 3
            r = readers[nid]
            time.sleep(RELOAD_S)
            r.execute_command("WAITPOS", high, 10_000)
            v = int(r.get("post:7:likes") or 0)
            pos = r.execute_command("POS").decode()   # at least the state that GET read
            high = max(high, seq_of(pos))
            went_back = bool(seen_with) and v < seen_with[-1][1]
            backwards_with += went_back
            seen_with.append((nid, v))
            run.show(f"read {i + 1} from node {nid}: {v} likes (session position now {high})"
                     + ("   <- BACKWARDS" if went_back else ""))
    finally:
        writer.stop()
    run.say(f"Without: the count went backwards {backwards} time(s) in {READS} reads. With the session position: "
            f"{backwards_with}; reads on node 3 waited for it to catch up to what the user had already seen.")
    return Result("time-backwards", backwards > 0, backwards_with > 0,
                  {"reads_without": seen, "reads_with": seen_with, "backwards_without": backwards,
                   "backwards_with": backwards_with, "far_delay_ms": FAR_DELAY_MS})
