"""max_lag_on_failover (MISSION L5, must-show 5): a follower further behind the leader than
the bound (in entries, as far as it knows the leader's last position) does not stand, so it
does not become leader, even when it is the most up to date survivor; the same cluster
without the bound elects it (and loses the tail it never received, as async allows).

How a follower comes to lag *knowingly*: both followers stop their I/O task, the leader takes
a backlog of large values, then one follower (node 3) restarts its I/O through a link proxy
that lets only about one replication batch (1 MB) through: it has received part of the
backlog and knows the leader's last position from that batch. Node 2 has received nothing
of the backlog (so node 3 is the only node node 2 would vote for). Then the leader is killed.
"""

from __future__ import annotations

import time

import pytest

from tests.conftest import client, wait_for
from tests.failover.conftest import converged, leader_among, status, try_status, wait_leader_among

BOUND = 10
ELECTION_MS = 2000     # lease 1.75 s: the backlog is taken well within it once the followers stop


def make_lagging_cluster(failover_cluster, bound: int, budget3: int = 1_500_000, budget2: int | None = None):
    """Node 3 receives ``budget3`` bytes of the backlog; node 2 none, or ``budget2`` bytes."""
    cl = failover_cluster(3, ack="async", election_timeout_ms=ELECTION_MS, max_lag_on_failover=bound, links=True)
    r = client(cl.node(1).port)
    for i in range(10):
        assert r.set(f"pre:{i}", f"p{i}") is True
    wait_for(lambda: converged(cl, 1, [1, 2, 3]), 20, what="followers caught up")
    base = client(cl.node(1).port).execute_command("ROLE")[1]
    for i in (2, 3):
        client(cl.node(i).port).execute_command("REPLICA", "STOP", "IO")
    big = "x" * 100_000
    for i in range(60):     # one by one: one record per log batch (a pipeline would be one batch)
        assert r.set(f"big:{i}", big) is True
    last = base + 60
    cl.net.budget(3, 1, budget3)           # node 1 -> node 3: that many bytes, then nothing
    client(cl.node(3).port).execute_command("REPLICA", "START", "IO")
    wait_for(lambda: (s := status(cl, 3))["received"] > base and s["leader_last"] == last, 5,
             what="node 3 receiving the first batch of the backlog")
    if budget2 is not None:
        cl.net.budget(2, 1, budget2)
        client(cl.node(2).port).execute_command("REPLICA", "START", "IO")
        wait_for(lambda: (s := status(cl, 2))["received"] > base and s["leader_last"] == last, 5,
                 what="node 2 receiving the first batch of the backlog")
    time.sleep(0.2)
    st3 = status(cl, 3)
    assert base < st3["received"] < last - BOUND, st3        # it lags (beyond BOUND), and knows it
    assert st3["leader_last"] == last
    if budget2 is None:
        assert status(cl, 2)["received"] == base             # node 2 has none of the backlog
    else:
        assert base < status(cl, 2)["received"] < st3["received"]
    cl.kill(1)
    if budget2 is None:
        client(cl.node(2).port).execute_command("REPLICA", "START", "IO")
    return cl, base, last, st3["received"]


def test_follower_beyond_max_lag_does_not_become_leader(failover_cluster):
    cl, base, last, received3 = make_lagging_cluster(failover_cluster, BOUND)
    # three of the longest election timeouts: node 3 never stands (epoch unchanged), node 2
    # stands in vain (node 3, more up to date, refuses it): no leader
    end = time.monotonic() + 3 * 2 * ELECTION_MS / 1000
    while time.monotonic() < end:
        st3 = try_status(cl, 3)
        assert st3 is not None and st3["role"] == "follower" and st3["election_role"] == "follower", st3
        assert st3["epoch"] == 0, st3
        assert (try_status(cl, 2) or {}).get("role") != "leader"
        time.sleep(0.1)
    assert leader_among(cl, [2, 3]) is None
    assert status(cl, 3)["received"] == received3

    # the old leader, back with the whole backlog, is the one that leads again: nothing lost
    cl.net.heal(3, 1)
    cl.start_node(cl.node(1))
    assert wait_leader_among(cl, [1, 2, 3]) == 1
    wait_for(lambda: converged(cl, 1, [1, 2, 3]), 30, what="DIGEST equal on all nodes")
    assert client(cl.node(3).port).mget([f"big:{i}" for i in range(60)]) == [b"x" * 100_000] * 60


@pytest.mark.parametrize("bound", [0, 1000])
def test_follower_within_max_lag_or_without_bound_becomes_leader(failover_cluster, bound):
    cl, base, last, received3 = make_lagging_cluster(failover_cluster, bound)
    assert wait_leader_among(cl, [2, 3]) == 3
    # the tail it never received is gone (async): the price the bound is there to cap
    st = status(cl, 3)
    assert st["epochs"][-1] == [st["epoch"], received3 + 1]
    assert client(cl.node(3).port).get(f"big:{received3 - base}") is None


def test_follower_of_the_new_leader_forgets_the_old_leaders_position(failover_cluster):
    """Node 2 knew the old leader's last position (beyond what anyone else has); once it follows
    the new leader (node 3) and has all of its records it is caught up: streaming, no lag."""
    cl, base, last, received3 = make_lagging_cluster(failover_cluster, 0, budget3=4_200_000, budget2=1_500_000)
    assert wait_leader_among(cl, [2, 3]) == 3
    wait_for(lambda: converged(cl, 3, [2, 3]), 30, what="node 2 caught up with node 3")
    st2 = status(cl, 2)
    assert st2["leader_id"] == 3 and st2["received"] == st2["applied"] == received3, st2
    assert st2["leader_last"] == received3 < last, st2
    assert st2["state"] == "streaming" and st2["lag"]["applied"]["entries"] == 0, st2
