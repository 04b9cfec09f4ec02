"""A follower killed (SIGKILL) at random moments under continuous INCR load comes back with
no gap and no duplicate (MISSION L2)."""

from __future__ import annotations

import random
import threading

from tests.conftest import client, wait_for
from tests.replication.conftest import converged, digest, repl_status

COUNTERS = 64
ROUNDS = 20


class IncrWriter(threading.Thread):
    """INCRs random counters on the leader until stopped (about ``rate`` a second, in pipelines
    of 20); remembers every acknowledged INCR."""

    def __init__(self, port: int, seed: int, rate: int = 1500) -> None:
        super().__init__(daemon=True)
        self.r = client(port)
        self.rng = random.Random(seed)
        self.counts = [0] * COUNTERS
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.pace = 20 / rate

    def run(self) -> None:
        try:
            while not self.stop.wait(self.pace):     # pacing, not synchronisation
                pipe = self.r.pipeline(transaction=False)
                picks = [self.rng.randrange(COUNTERS) for _ in range(20)]
                for i in picks:
                    pipe.incr(f"c:{i}")
                for i, v in zip(picks, pipe.execute(), strict=True):
                    self.counts[i] += 1
                    assert v == self.counts[i], (i, v, self.counts[i])
        except BaseException as e:  # noqa: BLE001
            self.error = e


def test_follower_sigkill_20_rounds_under_incr_load(leader_cluster):
    # frequent snapshots (on the follower too) keep restarts short and are crashed into as well
    cl = leader_cluster(3, snapshot_every_records=5000)
    leader = client(cl.node(1).port)
    rng = random.Random(1234)
    w = IncrWriter(cl.node(1).port, 99)
    w.start()
    try:
        for rnd in range(ROUNDS):
            # a random moment: after the follower applied a random number of further records
            target = repl_status(cl, 3)["applied"] + rng.randrange(20, 600)
            wait_for(lambda t=target: repl_status(cl, 3)["applied"] >= t or w.error, 30,
                     what=f"round {rnd}: follower 3 applying up to {target}")
            cl.kill(3)
            assert w.error is None, w.error
            cl.start_node(cl.node(3))
            # catch up with what the leader had when the follower came back
            goal = leader.execute_command("ROLE")[1]
            wait_for(lambda g=goal: repl_status(cl, 3)["applied"] >= g, 30,
                     what=f"round {rnd}: follower 3 catching up to {goal}")
    finally:
        w.stop.set()
        w.join(10)
    assert w.error is None, w.error
    assert sum(w.counts) > 0
    wait_for(lambda: converged(cl), 30, what="final catch-up")
    assert digest(cl, 3) == digest(cl, 1)
    f3 = client(cl.node(3).port)
    names = [f"c:{i}" for i in range(COUNTERS)]
    want = [str(n).encode() if n else None for n in w.counts]
    assert leader.mget(names) == want
    assert f3.mget(names) == want
    assert repl_status(cl, 3)["full_resyncs"] == 0
