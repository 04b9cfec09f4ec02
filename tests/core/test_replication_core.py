"""Unit tests of the sans-IO replication cores (no sockets, no clock): ack policies,
watermarks, semi-sync fallback and recovery, how a follower starts, lag, apply delay."""

from __future__ import annotations

import pytest

from replikv.core.replication import AckPolicy, FollowerCore, LeaderCore, PolicyError


# ---------------------------------------------------------------------- AckPolicy.parse
@pytest.mark.parametrize("text, kind, level, k, names, first, strict, canon", [
    ("async", "async", "received", 0, (), False, False, "async"),
    ("  ASYNC ", "async", "received", 0, (), False, False, "async"),
    ("semi-sync", "semi-sync", "received", 1, (), False, False, "semi-sync:1"),
    ("semi-sync:2", "semi-sync", "received", 2, (), False, False, "semi-sync:2"),
    ("semi-sync:1:strict", "semi-sync", "received", 1, (), False, True, "semi-sync:1:strict"),
    ("sync", "sync", "applied", 1, (), False, True, "sync:applied:1"),
    ("sync:flushed", "sync", "flushed", 1, (), False, True, "sync:flushed:1"),
    ("sync:applied:2", "sync", "applied", 2, (), False, True, "sync:applied:2"),
    ("sync:received:1", "sync", "received", 1, (), False, True, "sync:received:1"),
    ("sync:applied:first:1:3,2", "sync", "applied", 1, (3, 2), True, True, "sync:applied:first:1:3,2"),
    ("sync:flushed:any:2:2,3,4", "sync", "flushed", 2, (2, 3, 4), False, True, "sync:flushed:any:2:2,3,4"),
])
def test_parse_valid(text, kind, level, k, names, first, strict, canon):
    p = AckPolicy.parse(text)
    assert (p.kind, p.level, p.k, p.names, p.first, p.strict) == (kind, level, k, names, first, strict)
    assert str(p) == canon
    assert AckPolicy.parse(str(p)) == p


@pytest.mark.parametrize("text", [
    "", "asink", "async:1", "semi-sync:0", "semi-sync:-1", "semi-sync:x", "semi-sync:", "semi-sync:1:lax",
    "semi-sync:1:strict:x", "sync:durable:1", "sync:applied:0", "sync:applied:x", "sync:applied:first:0:2",
    "sync:applied:some:1:2", "sync:applied:first:3:2,3", "sync:applied:any:1:2,x", "sync:applied:any:1:2,,3",
    "sync:applied:first:1:2:extra",
])
def test_parse_invalid(text):
    with pytest.raises(PolicyError) as ei:
        AckPolicy.parse(text)
    assert "expected async" in str(ei.value)


# ---------------------------------------------------------------------- watermarks
def leader(policy="async", timeout=500, **positions) -> LeaderCore:
    """A leader with followers ``f<id>=(received, flushed, applied)``, all connected."""
    lc = LeaderCore(AckPolicy.parse(policy), timeout)
    for name, (r, f, a) in positions.items():
        nid = int(name[1:])
        lc.on_connect(nid, 0)
        lc.on_ack(nid, r, f, a, 0)
    return lc


def wm(lc: LeaderCore, policy: str, local: int = 100) -> int:
    return lc.policy_watermark(AckPolicy.parse(policy), local)


def test_watermark_async_is_local_durability():
    lc = leader(f2=(0, 0, 0))
    assert wm(lc, "async", 42) == 42


def test_watermark_semisync_is_kth_best_received():
    lc = leader(f2=(50, 40, 30), f3=(70, 10, 5), f4=(20, 20, 20))
    assert wm(lc, "semi-sync:1") == 70
    assert wm(lc, "semi-sync:2") == 50
    assert wm(lc, "semi-sync:3") == 20
    assert wm(lc, "semi-sync:4") == 0          # not enough followers: nothing meets it
    assert wm(lc, "semi-sync:1", local=60) == 60   # never above the leader's own durability


def test_watermark_sync_any_k_per_level():
    lc = leader(f2=(50, 40, 30), f3=(70, 10, 5), f4=(20, 20, 20))
    assert wm(lc, "sync:received:2") == 50
    assert wm(lc, "sync:flushed:1") == 40
    assert wm(lc, "sync:flushed:2") == 20
    assert wm(lc, "sync:applied:1") == 30
    assert wm(lc, "sync:applied:3") == 5
    # named ANY k: only the named followers count
    assert wm(lc, "sync:received:any:1:2,4") == 50
    assert wm(lc, "sync:received:any:2:2,4") == 20


def test_watermark_sync_first_k_follows_priority_among_connected():
    lc = leader(f2=(10, 10, 10), f3=(90, 90, 90), f4=(60, 60, 60))
    # FIRST 1 of (2, 3): node 2 is the synchronous one while connected, even if node 3 is ahead
    assert wm(lc, "sync:applied:first:1:2,3") == 10
    assert wm(lc, "sync:applied:first:2:4,3,2") == 60
    lc.on_disconnect(2)
    assert wm(lc, "sync:applied:first:1:2,3") == 90    # the next in priority takes over
    assert wm(lc, "sync:applied:first:2:2,3,4") == 60
    lc.on_disconnect(3)
    lc.on_disconnect(4)
    # fewer connected than k: the k-th best of the named followers' known positions
    assert wm(lc, "sync:applied:first:2:2,3") == 10


def test_semisync_degraded_watermark_only_for_non_strict():
    lc = leader("semi-sync:1", f2=(0, 0, 0))
    lc.degraded = True
    assert wm(lc, "semi-sync:1", 30) == 30
    assert wm(lc, "semi-sync:1:strict", 30) == 0
    assert wm(lc, "sync:received:1", 30) == 0
    assert lc.policy_watermark(lc.policy, 30, apply_degraded=False) == 0


# ---------------------------------------------------------------------- fallback / recovery
def test_semisync_falls_back_after_timeout_and_recovers_when_caught_up():
    lc = leader("semi-sync:1", 500, f2=(0, 0, 0), f3=(0, 0, 0))
    lc.on_append(1, 5, now_ms=1000)
    assert lc.tick(1400, local_durable=5) == []
    assert lc.policy_watermark(lc.policy, 5) == 0          # the write still waits
    ev = lc.tick(1500, local_durable=5)
    assert [e.kind for e in ev] == ["degraded"]
    assert lc.degraded and lc.degradations == 1 and lc.degraded_since_ms == 1500
    assert lc.policy_watermark(lc.policy, 5) == 5          # released: async now
    lc.on_append(6, 6, now_ms=1600)
    assert lc.policy_watermark(lc.policy, 6) == 6          # later writes do not wait
    assert lc.tick(3000, local_durable=6) == []             # no second degradation event
    assert lc.degradations == 1
    # a follower that is behind does not end the fallback
    assert lc.on_ack(2, 5, 5, 5, 3100) == []
    assert lc.degraded
    # one caught up with the leader (k = 1) does
    ev = lc.on_ack(3, 6, 6, 6, 3200)
    assert [e.kind for e in ev] == ["recovered"]
    assert not lc.degraded
    lc.on_append(7, 7, now_ms=3300)
    assert lc.policy_watermark(lc.policy, 7) == 6          # semi-sync again: 7 waits


def test_semisync_k2_recovers_only_when_two_caught_up_and_connected():
    lc = leader("semi-sync:2", 100, f2=(0, 0, 0), f3=(0, 0, 0))
    lc.on_append(1, 1, 0)
    lc.tick(100, 1)
    assert lc.degraded
    lc.on_disconnect(3)
    lc.on_ack(3, 1, 1, 1, 150)      # a stale ack of a disconnected follower does not count
    assert lc.on_ack(2, 1, 1, 1, 160) == [] and lc.degraded
    lc.on_connect(3, 170)
    assert [e.kind for e in lc.on_ack(3, 1, 1, 1, 180)] == ["recovered"]


def test_no_fallback_when_acked_in_time():
    lc = leader("semi-sync:1", 500, f2=(0, 0, 0))
    lc.on_append(1, 3, 0)
    lc.on_ack(2, 3, 0, 0, 100)
    assert lc.tick(10_000, 3) == []
    assert not lc.degraded


def test_strict_times_out_writes_without_degrading():
    lc = leader("semi-sync:1:strict", 500, f2=(0, 0, 0))
    lc.on_append(1, 2, 0)
    lc.on_append(3, 3, 300)
    ev = lc.tick(500, 3)
    assert [(e.kind, e.upto_seq) for e in ev] == [("ack-timeout", 2)]
    assert not lc.degraded and lc.degradations == 0
    assert lc.policy_watermark(lc.policy, 3) == 0           # never made visible by the timeout
    assert lc.tick(700, 3) == []                             # the later write keeps its own clock
    assert lc.tick(800, 3)[0].upto_seq == 3
    assert lc.tick(5000, 3) == []


def test_sync_policy_times_out_like_strict():
    lc = leader("sync:applied:1", 200, f2=(0, 0, 0))
    lc.on_append(1, 1, 0)
    assert [e.kind for e in lc.tick(200, 1)] == ["ack-timeout"]
    assert not lc.degraded


def test_async_never_waits():
    lc = leader("async", 1, f2=(0, 0, 0))
    lc.on_append(1, 10, 0)
    assert lc.tick(10_000, 10) == []
    assert lc.policy_watermark(lc.policy, 10) == 10


def test_follower_state_seen_by_leader():
    lc = LeaderCore()
    lc.on_append(1, 10, 0)
    f = lc.on_connect(2, 0, "127.0.0.1:1")
    assert f.state == "catching-up" and f.connected
    lc.on_ack(2, 5, 5, 5, 1)
    assert f.state == "catching-up"
    lc.on_ack(2, 10, 10, 10, 2)
    assert f.state == "streaming"
    assert lc.replicas_at(10) == 1 and lc.replicas_at(11) == 0
    lc.on_disconnect(2)
    assert f.state == "down" and not f.connected


# ---------------------------------------------------------------------- start_decision
@pytest.mark.parametrize("fhist, fnext, first, last, mode, why", [
    ("h", 11, 1, 20, "stream", ""),                         # same history, in the log
    ("h", 21, 1, 20, "stream", ""),                         # up to date
    ("h", 5, 5, 20, "stream", ""),                          # exactly the oldest kept record
    ("other", 1, 1, 20, "stream", ""),                      # new and empty, the whole log kept
    ("other", 1, 6, 20, "snapshot", "new follower"),        # new and empty, log truncated
    ("other", 8, 1, 20, "snapshot", "history differs"),     # someone else's data
    ("h", 25, 1, 20, "snapshot", "ahead of the leader"),    # it has records the leader has not
    ("h", 3, 5, 20, "snapshot", "retention"),               # it needs records no longer kept
])
def test_start_decision(fhist, fnext, first, last, mode, why):
    got_mode, reason = LeaderCore().start_decision(fhist, fnext, "h", first, last)
    assert got_mode == mode
    assert why in reason
    if mode == "stream":
        assert reason == ""


# ---------------------------------------------------------------------- lag
def test_leader_lag_in_entries_and_seconds():
    lc = LeaderCore()
    lc.on_append(1, 5, now_ms=1000)
    lc.on_append(6, 10, now_ms=2000)
    f = lc.on_connect(2, 0)
    lc.on_ack(2, 10, 5, 4, 0)
    lag = lc.lag(f, now_ms=3500)
    assert lag["received"] == {"entries": 0, "seconds": 0.0}
    assert lag["flushed"] == {"entries": 5, "seconds": 1.5}   # oldest missing: seq 6, written at 2000
    assert lag["applied"] == {"entries": 6, "seconds": 2.5}   # oldest missing: seq 5, written at 1000
    lc.on_ack(2, 10, 10, 10, 0)
    assert all(v == {"entries": 0, "seconds": 0.0} for v in lc.lag(f, 9999).values())


def test_follower_apply_wait_uses_the_leaders_clock():
    fc = FollowerCore(apply_delay_ms=1000)
    # the leader's clock reads 50_000 when ours reads 1_000 (clocks need not agree)
    fc.on_leader_clock(leader_last=10, leader_time_ms=50_000, now_ms=1_000)
    assert fc.leader_now_ms(1_200) == 50_200
    assert fc.apply_wait_ms(record_ts_ms=49_800, now_ms=1_200) == 600
    assert fc.apply_wait_ms(record_ts_ms=49_000, now_ms=1_200) == 0     # old enough
    assert fc.apply_wait_ms(record_ts_ms=50_200, now_ms=1_200) == 1000  # just written
    fc.apply_delay_ms = 0
    assert fc.apply_wait_ms(record_ts_ms=50_200, now_ms=1_200) == 0


def test_follower_apply_lag():
    fc = FollowerCore(state="catching-up", link_up=True)
    fc.on_leader_clock(leader_last=10, leader_time_ms=10_000, now_ms=500)
    fc.on_received(10)
    fc.on_flushed(8)
    fc.on_applied(6, ts_ms=9_000)
    fc.next_unapplied_ts = 9_200
    lag = fc.apply_lag(now_ms=1_000)     # leader clock now: 10_500
    assert lag["received"]["entries"] == 0 and lag["received"]["seconds"] == 0.0
    assert lag["flushed"]["entries"] == 2 and lag["flushed"]["seconds"] > 0
    assert lag["applied"] == {"entries": 4, "seconds": 1.3}
    assert fc.state == "catching-up"
    fc.on_applied(10, ts_ms=10_400)
    fc.on_flushed(10)
    fc.next_unapplied_ts = None
    assert all(v == {"entries": 0, "seconds": 0.0} for v in fc.apply_lag(1_000).values())
    assert fc.state == "streaming"
    # the link is down and the leader wrote more meanwhile: the silence counts as lag
    fc.on_leader_clock(leader_last=12, leader_time_ms=10_500, now_ms=1_000)
    fc.link_up = False
    lag = fc.apply_lag(now_ms=4_000)
    assert lag["applied"]["entries"] == 2 and lag["applied"]["seconds"] >= 3.0


def test_follower_streaming_under_sustained_writes():
    """The leader is always a little further on when an ack arrives; a follower that had all
    the leader had sent it (the ack echoes the leader_last it saw) is streaming, not catching up."""
    lc = LeaderCore(AckPolicy.parse("semi-sync:1"), 500)
    f = lc.on_connect(2, 0)
    lc.on_append(1, 100, 0)
    lc.on_append(101, 120, 1)                  # more writes while the ack is on its way
    lc.on_ack(2, 100, 100, 100, 2, leader_last=100)
    assert f.state == "streaming" and f.current
    # a capped batch: the leader had up to 120 when it sent records up to 110
    lc.on_ack(2, 110, 110, 110, 3, leader_last=120)
    assert f.state == "catching-up" and not f.current
    lc.on_ack(2, 110, 110, 110, 3)             # no echo: compared with the leader's last
    assert f.state == "catching-up"
    lc.on_ack(2, 120, 120, 120, 4)
    assert f.state == "streaming"


def test_semisync_recovers_under_sustained_writes():
    lc = leader("semi-sync:1", 100, f2=(0, 0, 0))
    lc.on_append(1, 10, 0)
    lc.tick(100, 10)
    assert lc.degraded
    lc.on_append(11, 20, 150)                  # writes keep coming while the follower catches up
    ev = lc.on_ack(2, 10, 10, 10, 160, leader_last=10)
    assert [e.kind for e in ev] == ["recovered"]    # it had everything the leader had sent it
    lc2 = leader("semi-sync:1", 100, f2=(0, 0, 0))
    lc2.on_append(1, 10, 0)
    lc2.tick(100, 10)
    lc2.on_append(11, 20, 150)
    lc2.on_ack(2, 5, 5, 5, 160, leader_last=10)  # still behind what it was sent
    assert lc2.degraded


def test_stale_current_follower_does_not_end_the_fallback():
    """Follower 3 was current at its last ack, then went silent (paused): when follower 2 acks
    later, still behind, semi-sync stays degraded."""
    lc = leader("semi-sync:1", 500, f2=(0, 0, 0), f3=(0, 0, 0))
    lc.on_append(1, 10, 0)
    lc.on_ack(3, 10, 10, 10, 10, leader_last=10)
    assert lc.followers[3].current
    lc.on_append(11, 20, 20)
    lc.tick(520, 20)
    assert lc.degraded
    assert lc.on_ack(2, 15, 15, 15, 2000, leader_last=20) == []
    assert lc.degraded


# ---------------------------------------------------------------------- prompt followers
def test_prompt_followers_all_when_k_covers_them():
    lc = leader("semi-sync:2", f2=(10, 10, 10), f3=(10, 10, 10))
    assert lc.prompt_followers({2: 10, 3: 10}, 2, frozenset(), 0) == {2, 3}
    assert lc.prompt_followers({2: 10, 3: 10}, 3, frozenset(), 0) == {2, 3}


def test_prompt_followers_picks_the_most_advanced_then_keeps_it():
    lc = leader("semi-sync:1", f2=(8, 8, 8), f3=(10, 10, 10), f4=(9, 9, 9))
    sent = {2: 10, 3: 10, 4: 10}
    chosen = lc.prompt_followers(sent, 1, frozenset(), 0)
    assert chosen == {3}
    # another follower overtakes it (a gathered batch acked first): the choice stays,
    # as long as the chosen one keeps acking
    lc.on_ack(2, 20, 20, 20, 2)
    sent = {2: 20, 3: 25, 4: 20}
    assert lc.prompt_followers(sent, 1, chosen, 2) is chosen
    # two of three
    assert lc.prompt_followers(sent, 2, frozenset(), 2) == {2, 3}


def test_prompt_followers_replaces_a_stalled_one():
    lc = leader("semi-sync:1", f2=(10, 10, 10), f3=(10, 10, 10))
    chosen = frozenset({2})
    # f2 was sent 30 and has not acked it; within the stall bound it stays
    assert lc.prompt_followers({2: 30, 3: 10}, 1, chosen, 2) == {2}
    # past the bound (no ack since t=0): the other follower takes over
    assert lc.prompt_followers({2: 30, 3: 10}, 1, chosen, 4) == {3}
    # a follower with nothing unacknowledged is not stalled, however long ago it acked
    assert lc.prompt_followers({2: 10, 3: 10}, 1, chosen, 1000) == {2}


def test_prompt_followers_skips_disconnected_ones():
    lc = leader("semi-sync:1", f2=(50, 50, 50), f3=(10, 10, 10))
    lc.on_disconnect(2)
    assert lc.prompt_followers({2: 50, 3: 10}, 1, frozenset({2}), 0) == {3}
    assert lc.prompt_followers({2: 50, 3: 10}, 1, frozenset(), 0) == {3}


def test_watermark_is_the_kth_best_position_of_the_named_followers():
    """policy_watermark against its definition (the k-th highest position at the policy's
    level among the followers it names, capped by local durability), on random positions:
    the k = 1 shortcut and the general sort must agree with it."""
    import random

    rnd = random.Random(5)
    for _ in range(2000):
        n = rnd.randint(0, 4)
        pos = {f"f{i + 2}": tuple(sorted((rnd.randint(0, 50) for _ in range(3)), reverse=True)) for i in range(n)}
        lc = leader("async", **pos)
        level = rnd.choice(["received", "flushed", "applied"])
        k = rnd.randint(1, 3)
        names = tuple(sorted(rnd.sample(range(2, 2 + n), rnd.randint(0, n)))) if n else ()
        local = rnd.randint(0, 60)
        spec = f"sync:{level}:any:{k}:{','.join(map(str, names))}" if names and k <= len(names) else f"sync:{level}:{k}"
        p = AckPolicy.parse(spec)
        idx = {"received": 0, "flushed": 1, "applied": 2}[level]
        cands = sorted((v[idx] for name, v in pos.items() if not p.names or int(name[1:]) in p.names), reverse=True)
        want = min(local, cands[p.k - 1] if len(cands) >= p.k else 0)
        assert lc.policy_watermark(p, local) == want, (spec, pos, local)
