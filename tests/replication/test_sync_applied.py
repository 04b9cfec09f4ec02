"""Sync at level "applied": a read on a follower right after the acknowledgement is never
stale (MISSION L4)."""

from __future__ import annotations

import pytest

from tests.conftest import client

TRIES = 1000


@pytest.mark.parametrize("how", ["cluster", "ackmode"])
def test_read_your_write_on_followers_after_applied_ack(leader_cluster, how):
    ack = "sync:applied:2" if how == "cluster" else "async"
    cl = leader_cluster(3, ack=ack, ack_timeout_ms=5000)
    w = client(cl.node(1).port)
    if how == "ackmode":
        assert w.execute_command("ACKMODE", "sync:applied:2") == b"OK"
        assert w.execute_command("ACKMODE") == b"sync:applied:2"
    readers = [client(cl.node(2).port), client(cl.node(3).port)]
    stale = []
    for i in range(TRIES):
        assert w.set("k", i) is True
        got = readers[i % 2].get("k")
        if got != str(i).encode():
            stale.append((i, got))
        if i % 50 == 0:      # an INCR too: the new value is visible on both followers
            n = w.incr("n")
            for rd in readers:
                if rd.get("n") != str(n).encode():
                    stale.append(("n", n, rd.get("n")))
    assert not stale, stale[:10]
