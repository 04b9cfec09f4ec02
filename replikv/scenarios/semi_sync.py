"""Semi-sync falling back to async when no follower answers in time; strict mode refuses instead."""

from __future__ import annotations

import time

import redis

from ._base import Result, Run, client, repl, scenario, streaming, wait_for

TIMEOUT_MS = 600


def _paused(cl, fn):
    cl.pause(2)
    cl.pause(3)
    try:
        return fn()
    finally:
        cl.resume(2)
        cl.resume(3)


@scenario(
    "semi-sync-fallback",
    title="semi-sync silently falling back to async",
    seeds="""Semi-synchronous replication waits until a follower has the event before the leader
    commits; if the synchronous follower becomes unavailable or slow, writes cannot proceed, so
    in practice one waits only for a while. MySQL's semi-sync then falls back to asynchronous
    replication after a timeout: the write is confirmed though no replica has it.""",
    mechanism="semi-sync:1:strict (here per connection: ACKMODE semi-sync:1:strict): after the timeout the write "
              "gets NOTACKED, outcome unknown, instead of a false OK",
    order=70)
def semi_sync_fallback(run: Run) -> Result:
    cl = run.cluster(3, ack="semi-sync:1", ack_timeout_ms=TIMEOUT_MS)
    r = client(cl.node(1).port, timeout=10)
    t = time.monotonic()
    r.set("payment:0", "10 EUR")
    run.step(f"ack semi-sync:1, timeout {TIMEOUT_MS} ms. A first payment is acknowledged once a follower has it "
             f"({(time.monotonic() - t) * 1000:.0f} ms)")
    run.step("both followers freeze (SIGSTOP: a long GC pause, a stalled disk)")

    run.heading("Without the mechanism: plain semi-sync:1")

    def write_plain():
        t0 = time.monotonic()
        ok = r.set("payment:1", "100 EUR")
        took = (time.monotonic() - t0) * 1000
        seq = int(r.execute_command("LASTPOS").decode().rsplit(":", 1)[1])
        st = repl(cl, 1)
        have = [f["node_id"] for f in st["followers"] if f["received"] >= seq]
        return ok, took, seq, st, have
    ok, took, seq, st, have = _paused(cl, write_plain)
    run.show(f"SET payment:1: {ok} after {took:.0f} ms; followers holding it: {have or 'none'}; status "
             f"semi_sync_degraded: {st['semi_sync_degraded']} (fallbacks: {st['semi_sync_fallbacks']})"
             + ("   <- acknowledged while only the leader has it: a leader crash now would lose it"
                if ok is True and not have else ""))
    wait_for(lambda: repl(cl, 1)["semi_sync_degraded"] is False and streaming(cl, 1, [2, 3]), 20,
             "semi-sync restored")
    run.show("the followers wake up and catch up: semi-sync is restored (semi_sync_degraded: false)")
    run.beat()

    run.heading("With the mechanism: ACKMODE semi-sync:1:strict on the writing connection")
    rs = client(cl.node(1).port, timeout=10)
    rs.execute_command("ACKMODE", "semi-sync:1:strict")

    def write_strict():
        t0 = time.monotonic()
        try:
            out = rs.set("payment:2", "200 EUR")
        except redis.ResponseError as e:
            out = e
        return out, (time.monotonic() - t0) * 1000
    out, took2 = _paused(cl, write_strict)
    acked_strict = out is True
    run.show(f"SET payment:2: {out} after {took2:.0f} ms" + ("   <- ACKNOWLEDGED WITHOUT A FOLLOWER" if acked_strict
                                                            else ""))
    wait_for(lambda: streaming(cl, 1, [2, 3]), 20, "followers back")
    later = wait_for(lambda: r.get("payment:2"), 20, "payment:2 readable once a follower has it")
    run.show(f"outcome unknown means unknown: once the followers caught up the write became durable and "
             f"readable (GET payment:2: {later.decode()!r}); the client must check, not assume either way")
    return Result("semi-sync-fallback", ok is True and not have, acked_strict,
                  {"plain_ok_after_ms": round(took), "plain_followers_with_it": have,
                   "degraded": st["semi_sync_degraded"], "strict_reply": str(out), "strict_after_ms": round(took2)})
