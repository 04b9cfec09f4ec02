"""Semi-sync k=1: waits, visible fallback to async, recovery; strict mode; one follower down
(MISSION L3)."""

from __future__ import annotations

import statistics
import time

import pytest

from tests.conftest import client, wait_for
from tests.replication.conftest import all_streaming, metric, repl_status

TIMEOUT_MS = 500
LIMIT = TIMEOUT_MS / 1000
# Semi-sync on its own, as MySQL has it: no automatic failover, so no election can replace the
# leader while its followers are away (with 3 nodes, semi-sync:1 falls back only when both are).
MANUAL = {"auto_failover": False}


def timed(fn):
    t = time.monotonic()
    out = fn()
    return out, time.monotonic() - t


def pause_both(cl) -> float:
    cl.pause(2)
    cl.pause(3)
    return time.monotonic()


def resume_both(cl) -> None:
    cl.resume(2)
    cl.resume(3)


def test_semisync_fallback_and_recovery(leader_cluster):
    cl = leader_cluster(3, ack="semi-sync:1", ack_timeout_ms=TIMEOUT_MS, cluster_settings=MANUAL)
    r = client(cl.node(1).port)

    # one follower paused: the other acknowledges, promptly, with no fallback
    cl.pause(2)
    try:
        took = [timed(lambda i=i: r.set(f"one-down:{i}", i))[1] for i in range(10)]
        assert statistics.median(took) < LIMIT * 0.5, took
        st = repl_status(cl, 1)
        assert st["semi_sync_degraded"] is False and st["semi_sync_fallbacks"] == 0
        assert metric(cl, 1, "replikv_semisync_fallbacks_total") == 0

        # both paused: the write waits about the timeout, then is acknowledged (fallback)
        cl.pause(3)
        ok, took1 = timed(lambda: r.set("both-down", "1"))
        assert ok is True
        assert took1 >= LIMIT * 0.8, took1
        st = repl_status(cl, 1)
        assert st["semi_sync_degraded"] is True
        assert st["semi_sync_fallbacks"] >= 1
        assert metric(cl, 1, "replikv_semisync_fallbacks_total") >= 1
        assert r.info("replication")["replikv_semi_sync_degraded"] == 1
        # while degraded, writes no longer wait for the followers
        took = [timed(lambda: r.incr("degraded-ctr"))[1] for _ in range(10)]
        assert r.get("degraded-ctr") == b"10"
        assert statistics.median(took) < LIMIT * 0.5, took
        assert repl_status(cl, 1)["semi_sync_degraded"] is True
        fallbacks = metric(cl, 1, "replikv_semisync_fallbacks_total")
    finally:
        resume_both(cl)
    # a follower catches up: back to semi-sync
    wait_for(lambda: repl_status(cl, 1)["semi_sync_degraded"] is False, 15, what="semi-sync recovering")
    wait_for(lambda: all_streaming(cl), 15, what="followers streaming again")
    assert metric(cl, 1, "replikv_semisync_fallbacks_total") == fallbacks
    assert r.info("replication")["replikv_semi_sync_degraded"] == 0
    # semi-sync again: with both followers paused the next write waits the timeout once more
    pause_both(cl)
    try:
        _, took2 = timed(lambda: r.set("again", "1"))
        assert took2 >= LIMIT * 0.8, took2
        assert metric(cl, 1, "replikv_semisync_fallbacks_total") == fallbacks + 1
    finally:
        resume_both(cl)


def test_semisync_degraded_lasts_while_followers_are_away(leader_cluster):
    cl = leader_cluster(3, ack="semi-sync:1", ack_timeout_ms=TIMEOUT_MS, cluster_settings=MANUAL)
    r = client(cl.node(1).port)
    lease_s = repl_status(cl, 1)["lease_ms"] / 1000
    paused_at = pause_both(cl)
    try:
        assert r.set("both-down", "1") is True
        assert repl_status(cl, 1)["semi_sync_degraded"] is True
        # the followers stay away for longer than the leader's lease: writes go on, unwaited
        errors, n = [], 0
        while time.monotonic() < paused_at + lease_s + 1.0:
            try:
                r.incr("degraded-ctr")
                n += 1
            except Exception as e:  # noqa: BLE001
                errors.append(str(e))
        assert not errors, f"{len(errors)} of {n + len(errors)} writes refused while degraded: {errors[0]}"
    finally:
        resume_both(cl)


def test_semisync_strict_fails_with_notacked(leader_cluster):
    cl = leader_cluster(3, ack="semi-sync:1:strict", ack_timeout_ms=TIMEOUT_MS, cluster_settings=MANUAL)
    r = client(cl.node(1).port)
    assert r.set("before", "1") is True
    pause_both(cl)
    try:
        t = time.monotonic()
        with pytest.raises(Exception) as ei:
            r.set("k", "v")
        assert time.monotonic() - t >= LIMIT * 0.8
        assert str(ei.value).startswith("NOTACKED"), ei.value
        st = repl_status(cl, 1)
        assert st["semi_sync_degraded"] is False and st["semi_sync_fallbacks"] == 0
        assert metric(cl, 1, "replikv_ack_timeouts_total") >= 1
        # strict never degrades: the next write fails the same way
        with pytest.raises(Exception) as ei:
            r.incr("n")
        assert str(ei.value).startswith("NOTACKED"), ei.value
    finally:
        resume_both(cl)
    wait_for(lambda: all_streaming(cl), 15, what="followers streaming again")
    assert r.set("after", "1") is True          # acknowledged again (not NOTACKED)
    # the unacknowledged writes were applied on the leader ("outcome unknown", not "failed")
    assert r.get("k") == b"v"
    wait_for(lambda: client(cl.node(2).port).get("k") == b"v", 10, what="the NOTACKED write replicated")


def sync_states(cl) -> dict:
    return {f["node_id"]: f["sync_state"] for f in repl_status(cl, 1)["followers"]}


def test_semisync_k1_pushes_to_one_follower_and_switches_when_it_stalls(leader_cluster):
    """With semi-sync:1 and two followers, each batch goes at once to one of them (status
    "sync"); the other (status "spare") gets gathered batches. Pausing the "sync" one costs
    writes a few milliseconds once: the spare acknowledges them and takes over. No fallback."""
    cl = leader_cluster(3, ack="semi-sync:1", ack_timeout_ms=TIMEOUT_MS, cluster_settings=MANUAL)
    r = client(cl.node(1).port)
    for i in range(50):
        r.set(f"warm:{i}", i)
    states = sync_states(cl)
    assert sorted(states.values()) == ["spare", "sync"], states
    prompt = next(fid for fid, s in states.items() if s == "sync")
    spare = next(fid for fid, s in states.items() if s == "spare")
    cl.pause(prompt)
    try:
        took = [timed(lambda i=i: r.incr("ctr"))[1] for i in range(200)]
        assert r.get("ctr") == b"200"
        # the first write waits for the stall to be noticed (PROMPT_STALL_MS) and a gathered
        # batch (SPARE_DELAY); the others go at once to the follower that took over
        assert statistics.median(took) < LIMIT * 0.1, sorted(took)[-5:]
        assert max(took) < LIMIT * 0.8, max(took)
        assert sync_states(cl)[spare] == "sync"
        st = repl_status(cl, 1)
        assert st["semi_sync_degraded"] is False and st["semi_sync_fallbacks"] == 0
    finally:
        cl.resume(prompt)
    wait_for(lambda: all_streaming(cl), 15, what="followers streaming again")
    # every write reached both followers
    for fid in (prompt, spare):
        wait_for(lambda fid=fid: client(cl.node(fid).port).get("ctr") == b"200", 10,
                 what=f"node {fid} has every write")
