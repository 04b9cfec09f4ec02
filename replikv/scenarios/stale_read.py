"""Read-your-writes: a write, then a read from a lagging follower that does not have it yet."""

from __future__ import annotations

import time

from ._base import Result, Run, client, scenario

DELAY_MS = 700
ROUNDS = 3


@scenario(
    "stale-read",
    title="stale read after write (read-your-writes)",
    seeds="""Reads may go to any follower, but an asynchronous follower can be behind the leader: a
    user who writes and then reads right away may not see their own write, as if it were lost.
    Read-after-write consistency fixes it for that user: read what the user may have changed
    from the leader, or remember the timestamp (position) of the user's last write and read
    from a replica only once it has caught up to it, waiting if need be.""",
    mechanism="LASTPOS after the write, WAITPOS <pos> on the follower before the read (or read from the leader)",
    order=10)
def stale_read(run: Run) -> Result:
    cl = run.cluster(3, ack="async")
    leader, follower = cl.node(1), cl.node(2)
    run.step(f"node 2 applies what it receives {DELAY_MS} ms after the leader wrote it (REPLICA DELAY {DELAY_MS}), "
             f"as a busy follower far away would")
    client(follower.port).execute_command("REPLICA", "DELAY", DELAY_MS)
    w, r = client(leader.port), client(follower.port)

    run.heading("Without the mechanism: write to the leader, read back at once from node 2")
    stale = 0
    for i in range(ROUNDS):
        value = f"bio, version {i + 1}"
        w.set("user:42:bio", value)
        got = r.get("user:42:bio")
        got_s = got.decode() if got is not None else None
        run.show(f"SET user:42:bio {value!r} on the leader: OK;  GET on node 2: {got_s!r}"
                 + ("   <- stale: the user's own write is missing" if got_s != value else ""))
        stale += got_s != value
    run.beat()

    run.heading("With the mechanism: remember the write's position, make the follower wait for it")
    stale_with = 0
    waits = []
    for i in range(ROUNDS, 2 * ROUNDS):
        value = f"bio, version {i + 1}"
        w.set("user:42:bio", value)
        pos = w.execute_command("LASTPOS").decode()
        t = time.monotonic()
        r.execute_command("WAITPOS", pos, 10_000)
        waited = (time.monotonic() - t) * 1000
        got = r.get("user:42:bio")
        got_s = got.decode() if got is not None else None
        waits.append(round(waited))
        run.show(f"SET {value!r}: OK, LASTPOS {pos};  WAITPOS {pos} on node 2 answered after {waited:.0f} ms;  "
                 f"GET: {got_s!r}" + ("   <- STALE" if got_s != value else ""))
        stale_with += got_s != value
    leader_read = w.get("user:42:bio").decode()
    run.show(f"(or read from the leader, which always has the user's writes: GET on node 1: {leader_read!r})")
    run.say(f"Without: {stale} of {ROUNDS} reads missed the user's own write. With positions: {stale_with} of "
            f"{ROUNDS}; each read waited until node 2 had applied the write (the price of the guarantee on a "
            f"lagging follower).")
    return Result("stale-read", stale > 0, stale_with > 0,
                  {"stale_reads_without": stale, "stale_reads_with": stale_with, "waitpos_ms": waits,
                   "rounds": ROUNDS, "apply_delay_ms": DELAY_MS})
