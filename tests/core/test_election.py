"""Lease safety in core/election.py, step by step (no sockets, no clock): a leader's lease
rests on acknowledgements, and a node whose acknowledgement (or vote) backs a lease must not
help another candidate win while that lease can still hold. The simulator (tests/sim/)
checks the same property over random fault schedules; these cases pin down the two ways a
backing node used to be able to vote again at once: right after granting its vote (the
winner counts the grant as a lease acknowledgement) and right after a restart.
"""

from __future__ import annotations

import random

from replikv.core.election import LEADER, BecomeLeader, Election

T = 1000    # election timeout (ms)


def node(i: int, epoch: int = 5) -> Election:
    e = Election(i, (1, 2, 3), epoch=epoch, election_timeout_ms=T, rng=random.Random(i))
    e.reset_timer(0)
    return e


def win(candidate: Election, voter: Election, now: int, last=(5, 10)) -> int:
    """``candidate`` stands and wins with ``voter``'s vote (requests sent at ``now``)."""
    candidate.start_election(now, *last)
    granted, _ = voter.on_vote_request(candidate.epoch, candidate.node_id, *last, *last, now)
    assert granted
    outs = candidate.on_vote(candidate.epoch, voter.node_id, True, now + 1, sent_ms=now)
    assert any(isinstance(o, BecomeLeader) for o in outs)
    assert candidate.role == LEADER
    return candidate.epoch


def test_a_granted_vote_backs_the_winners_lease_and_the_voter_backs_no_one_else_meanwhile():
    a, b, c = node(1), node(2), node(3)
    win(b, c, 10_000)
    assert b.has_lease(10_002)                     # the grant is its first lease acknowledgement
    assert b.lease_until_ms(10_002) == 10_000 + b.lease_ms
    # before any message from b reaches c, a stands in the next epoch and asks c
    a.epoch = b.epoch
    ok, _ = c.on_vote_request(b.epoch + 1, 1, 5, 10, 5, 10, 10_005, pre=True)
    assert not ok, "pre-vote granted while the vote just given backs a lease"
    ok, _ = c.on_vote_request(b.epoch + 1, 1, 5, 10, 5, 10, 10_005)
    assert not ok, "vote granted while the vote just given backs a lease"
    assert c.epoch == b.epoch and c.voted_for == 2
    # once b's lease cannot hold any more, c may back a's candidacy
    later = 10_000 + T
    assert not b.has_lease(later)
    ok, _ = c.on_vote_request(b.epoch + 1, 1, 5, 10, 5, 10, later, pre=True)
    assert ok
    ok, _ = c.on_vote_request(b.epoch + 1, 1, 5, 10, 5, 10, later)
    assert ok


def test_the_voter_may_grant_its_vote_again_to_the_same_candidate():
    b, c = node(2), node(3)
    b.start_election(10_000, 5, 10)
    assert c.on_vote_request(b.epoch, 2, 5, 10, 5, 10, 10_000)[0]
    assert c.on_vote_request(b.epoch, 2, 5, 10, 5, 10, 10_050)[0]      # a retried request


def test_a_restarted_node_backs_no_candidate_for_an_election_timeout():
    """c acknowledged leader b's heartbeat (b's lease rests on it), crashed and came back at
    once, having lost everything but its epoch and vote."""
    a, b, c = node(1), node(2), node(3)
    win(b, a, 10_000)
    c.on_leader_message(b.epoch, 2, 10_010)
    b.on_follower_ack(3, 10_008)
    # c restarts: a fresh Election from what it persisted
    c2 = Election(3, (1, 2, 3), epoch=c.epoch, voted_for=c.voted_for, election_timeout_ms=T,
                  rng=random.Random(3))
    c2.restarted(10_020)
    a.epoch = b.epoch
    ok, _ = c2.on_vote_request(b.epoch + 1, 1, 5, 10, 5, 10, 10_030, pre=True)
    assert not ok
    ok, _ = c2.on_vote_request(b.epoch + 1, 1, 5, 10, 5, 10, 10_030)
    assert not ok
    assert b.has_lease(10_030)
    later = 10_020 + T
    assert not b.has_lease(later)
    assert c2.on_vote_request(b.epoch + 1, 1, 5, 10, 5, 10, later)[0]


def test_a_switchover_vote_is_granted_at_once():
    """``transfer``: the leader itself hands over (and stops serving as leader first)."""
    b, c = node(2), node(3)
    win(b, c, 10_000)
    ok, _ = c.on_vote_request(b.epoch + 1, 1, 5, 10, 5, 10, 10_005, transfer=True)
    assert ok


def manual(i: int) -> Election:
    e = Election(i, (1, 2, 3), epoch=5, election_timeout_ms=T, auto_failover=False, rng=random.Random(i))
    e.reset_timer(0)
    return e


def test_with_manual_failover_no_node_stands_by_itself():
    e = manual(2)
    for now in range(0, 20 * T, T // 2):
        assert e.tick(now, 5, 10) == []
    assert e.elections_started == 0


def test_with_manual_failover_a_node_told_to_stand_goes_on_until_a_leader_exists():
    """An operator's FAILOVER FORCE, or an old leader whose switchover failed: if the first
    election is lost (a vote refused, a reply lost), nothing else would ever elect a leader."""
    e = manual(1)
    e.standing = True                        # as the shell sets it
    e.start_election(1000, 5, 10)            # the first try: no majority
    outs = []
    now = 1000
    while not outs and now < 1000 + 5 * T:
        now += 50
        outs = e.tick(now, 5, 10)
    assert outs, "a node that stood gave up after one try"
    # a leader of a newer epoch appears: it stops
    e.on_leader_message(e.epoch + 1, 3, now)
    assert not e.standing
    for t in range(now, now + 10 * T, T // 2):
        assert e.tick(t, 5, 10) == []


def test_a_node_told_to_stand_waits_for_its_deadline_after_a_leaders_message():
    """FAILOVER FORCE right after the node acked a leader: its ack may back that leader's
    lease, so it stands only at its election deadline, as any candidate."""
    e = manual(2)
    e.on_leader_message(5, 1, 10_000)
    e.standing = True
    for now in range(10_000, 10_000 + T, 10):
        assert e.tick(now, 5, 10) == [], now
    outs = []
    now = 10_000
    while not outs and now < 10_000 + 3 * T:
        now += 10
        outs = e.tick(now, 5, 10)
    assert outs and now >= 10_000 + T


def test_a_switchover_target_stands_once():
    """Cut off from a leader that lives on, a target that kept standing could later win beside
    it (with manual failover the old leader needs no lease)."""
    e = manual(2)
    e.start_election(1000, 5, 10, transfer=True)
    assert not e.standing
    for now in range(1000, 1000 + 10 * T, T // 2):
        assert e.tick(now, 5, 10) == []
