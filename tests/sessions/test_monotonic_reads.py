"""G2 monotonic reads with real node processes: two followers with different apply delays
(0 and 1500 ms) while the leader increments a counter continuously.

Off, reads spread round robin over both followers go back in time (G4). On, no session's
reads ever do, over 10,000 reads (5 concurrent sessions of 2,000): a session sticks to the
follower chosen by a hash of its user id, and when that follower is killed (SIGKILL) it is
rerouted to the other, lagging one, which first waits (WAITPOS) until it has applied
everything the session has seen.
"""

from __future__ import annotations

import threading
import zlib

from replikv.client import Session
from tests.conftest import client, wait_for
from tests.sessions.conftest import followers, make_client, set_delay

READS = 10_000
SESSIONS = 5
FAST_MS, SLOW_MS = 0, 1500


class Counter:
    """A thread that increments ``counter`` on the leader until stopped."""

    def __init__(self, port: int) -> None:
        self.r = client(port)
        self.stop = threading.Event()
        self.errors: list = []
        self.n = 0
        self.t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self.n = self.r.incr("counter")
            except Exception as e:  # noqa: BLE001 - reported by the test
                self.errors.append(e)
                return
            self.stop.wait(0.001)   # pace it a little: the machine is shared

    def __enter__(self) -> Counter:
        self.t.start()
        wait_for(lambda: self.n >= 100, 10, what="the counter to start")
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.t.join(10)
        assert not self.errors, self.errors


def as_int(v) -> int:
    return int(v) if v is not None else 0


def test_off_round_robin_over_followers_goes_back_in_time(session_cluster):
    cl = session_cluster(3)
    f1, f2 = followers(cl)
    set_delay(cl, f1.node_id, FAST_MS)
    set_delay(cl, f2.node_id, SLOW_MS)
    c = make_client(cl, Session(read_your_writes=None, monotonic_reads=False, consistent_prefix=False))
    last, backwards = [0], []

    def went_back() -> bool:
        v = as_int(c.get("counter"))
        if 0 < v < last[0]:      # an older value of the counter (not merely no counter yet)
            backwards.append((last[0], v))
        last[0] = max(last[0], v)
        return bool(backwards)

    with Counter(cl.leader(1).port):
        wait_for(went_back, 30, interval=0, what="a read older than one before it")
    assert c.stats["leader_reads"] == 0
    print(f"\nsaw {backwards[0][0]}, then {backwards[0][1]}")


def test_on_never_goes_back_in_10000_reads_also_when_the_sticky_follower_is_killed(session_cluster):
    """10,000 reads by 5 concurrent sessions (2,000 each, to keep the run short), all sticking
    to the same follower by the hash of their user ids. Halfway, that follower is killed and
    every session is rerouted to the other follower, 1.5 s behind what the sessions have seen."""
    cl = session_cluster(3)
    probe = make_client(cl)
    fl = probe.followers(1)
    probe.close()
    users = [u for u in (f"user{i}" for i in range(100)) if zlib.crc32(u.encode()) % len(fl) == 0][:SESSIONS]
    sticky = fl[0]
    by_addr = {(n.host, n.port): n for n in cl.nodes}
    sticky_node, other_node = by_addr[fl[0]], by_addr[fl[1]]
    # the worst case: the sessions stick to the fresh follower and are rerouted to the stale one
    set_delay(cl, sticky_node.node_id, FAST_MS)
    set_delay(cl, other_node.node_id, SLOW_MS)
    clients = [make_client(cl, Session(user_id=u), wait_timeout_ms=5000) for u in users]
    per = READS // SESSIONS
    halfway = threading.Barrier(SESSIONS + 1)
    killed = threading.Event()
    values = {u: [] for u in users}
    backwards = []

    def run(c) -> None:
        vs = values[c.session.user_id]
        for i in range(per):
            if i == per // 2:
                halfway.wait(60)
                assert killed.wait(60)
            v = as_int(c.get("counter"))
            if vs and v < vs[-1]:
                backwards.append((c.session.user_id, i, vs[-1], v))
            vs.append(v)

    with Counter(cl.leader(1).port):
        threads = [threading.Thread(target=run, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        halfway.wait(120)
        before = {k: sum(c.stats[k] for c in clients) for k in clients[0].stats}
        cl.kill(sticky_node.node_id)
        killed.set()
        for t in threads:
            t.join(120)
    after = {k: sum(c.stats[k] for c in clients) - before[k] for k in before}
    print(f"\nbefore the kill: {before}; after: {after}")
    assert backwards == [], f"time went backwards: {backwards[:5]}"
    assert sum(len(v) for v in values.values()) == READS
    for u, vs in values.items():
        assert vs[-1] > vs[per // 2 - 1] > vs[0], u
    # before the kill every read was served by the sticky follower (never skipped)
    assert before["follower_skips"] == 0 and before["leader_reads"] == 0
    assert before["follower_reads"] == READS // 2
    # after: every read tried the dead sticky follower first, then was rerouted
    assert after["follower_skips"] >= READS // 2
    assert after["follower_reads"] + after["leader_reads"] == READS // 2
    assert after["follower_reads"] >= 1
    assert sticky not in (c.topology.leaders.get(1) for c in clients)
