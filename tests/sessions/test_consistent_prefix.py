"""G3 consistent prefix reads over two partitions that replicate independently, with the
seeds' question and answer (DDIA ch. 5, "consistent prefix reads").

Mr. Poons writes a question to a key of partition A. Mrs. Cake reads it (at A's leader: she
sees it at once) and writes her answer to a key of partition B. A's followers apply 600 ms
after their leader, B's 20 ms. An observer polls B's follower for the answer and then reads
the question from A's follower.

Off (G4): the observer sees the answer before the question exists. On: Mrs. Cake's write
carries what she had read (CAUSAL A:seq), the observer learns it with the answer (DEPS), and
its question read waits (WAITPOS) until A's follower has applied it: never an answer
without its question.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor

import pytest

from replikv.client import Session
from replikv.server.clusterconfig import key_slot, partition_of_slot
from tests.conftest import wait_for
from tests.sessions.conftest import followers, make_client, set_delay

A_LAG_MS, B_LAG_MS = 600, 20
ROUNDS_ON = 10


def question_key(i: str) -> str:
    return f"{{poons}}:question:{i}"


def answer_key(i: str) -> str:
    return f"{{answer}}:cake:{i}"


def partition(key: str) -> int:
    return partition_of_slot(key_slot(key.encode()), 2)


@pytest.fixture(scope="module")
def cl(two_partitions):
    """Two partitions, a leader and a follower each; A's follower lags much more than B's."""
    cl = two_partitions
    pa, pb = partition(question_key("x")), partition(answer_key("x"))
    assert pa != pb, "the question and the answer must live in different partitions"
    for f in followers(cl, pa):
        set_delay(cl, f.node_id, A_LAG_MS)
    for f in followers(cl, pb):
        set_delay(cl, f.node_id, B_LAG_MS)
    return cl


class Conversation:
    """Mr. Poons, Mrs. Cake and an observer, each a client with a session."""

    def __init__(self, cl, consistent_prefix: bool, name: str) -> None:
        self.name = name     # each conversation its own keys
        self.opts = dict(read_your_writes=None, monotonic_reads=False, consistent_prefix=consistent_prefix)
        self.poons = make_client(cl, Session(user_id="poons", **self.opts))
        self.cake = make_client(cl, Session(user_id="cake", **self.opts), read_from_followers=False)
        self.observer = make_client(cl, Session(**self.opts), wait_timeout_ms=5000)
        self.rounds = itertools.count()

    def round(self) -> tuple[bytes, bytes | None]:
        """One question and answer; returns (the answer the observer saw, the question it then read)."""
        i = f"{self.name}{next(self.rounds)}"
        q, a = f"Mrs. Cake, how far into the future can you see? ({i})", f"About ten seconds usually, Mr. Poons. ({i})"
        self.poons.set(question_key(i), q)
        wait_for(lambda: self.cake.get(question_key(i)) == q.encode(), 10, interval=0.001,
                 what="Mrs. Cake to see the question")
        self.cake.set(answer_key(i), a)
        self.observer.session = Session(**self.opts)     # a fresh observer every round
        wait_for(lambda: self.observer.get(answer_key(i)) == a.encode(), 10, interval=0.001,
                 what="the observer to see the answer")
        return a.encode(), self.observer.get(question_key(i))

    def close(self) -> None:
        for c in (self.poons, self.cake, self.observer):
            c.close()


def test_off_the_observer_sees_the_answer_before_the_question(cl):
    conv = Conversation(cl, consistent_prefix=False, name="off-")
    anomalies = []

    def anomaly() -> bool:
        answer, question = conv.round()
        if question is None:
            anomalies.append(answer)
        return bool(anomalies)

    wait_for(anomaly, 30, interval=0, what="an answer seen before its question")
    assert conv.cake.stats["follower_reads"] == 0
    print(f"\nsaw {anomalies[0]!r} and then no question")
    conv.close()


def test_on_the_observer_never_sees_an_answer_without_its_question(cl):
    """30 rounds: three conversations at once, ten rounds each."""
    convs = [Conversation(cl, consistent_prefix=True, name=f"on{k}-") for k in range(3)]
    with ThreadPoolExecutor(len(convs)) as ex:
        results = list(ex.map(lambda conv: [conv.round() for _ in range(ROUNDS_ON)], convs))
    for conv, seen in zip(convs, results, strict=True):
        assert [q for _, q in seen if q is None] == [], f"an answer without its question: {seen}"
        for i, (_, q) in enumerate(seen):
            assert q.endswith(f"({conv.name}{i})".encode())
        # the questions were read from A's delayed follower, which first waited for them
        assert conv.observer.stats["follower_reads"] >= 2 * ROUNDS_ON
        conv.close()
