"""Session guarantees, lost writes, convergence, and the version order they rely on."""

from __future__ import annotations

import pytest

from replikv.check import (
    VersionOrder,
    check_consistent_prefix,
    check_convergence,
    check_lost_writes,
    check_monotonic_reads,
    check_read_your_writes,
)
from replikv.check.history import Event, History
from replikv.check.sessions import default_token_key, default_value_key

from .helpers import history


def with_tokens(*specs):
    """Like ``history`` but each spec ends with a position token for its completion."""
    evs = []
    for i, (p, f, k, arg, call, ret, typ, value, token) in enumerate(specs):
        evs.append((call, 0, Event("invoke", p, f, k, arg, call, id=i)))
        evs.append((ret, 1, Event(typ, p, f, k, value, ret, id=i, token=token)))
    evs.sort(key=lambda e: (e[0], e[1]))
    return History(e[2] for e in evs)


# ---------------------------------------------------------------------- version order
@pytest.mark.parametrize("token, key", [(7, 7), ("7", 7), ("9f0c:42", 42), ("h/3", 3), ([2, 5], (2, 5)),
                                        ("abc", None), (True, None), (None, None), (1.5, None)])
def test_default_token_key(token, key):
    assert default_token_key(token) == key


@pytest.mark.parametrize("value, key", [(3, 3), ("v17", 17), ("p2-31", 31), ("x", None), (None, None)])
def test_default_value_key(value, key):
    assert default_value_key(value) == key


def test_version_order_methods():
    concurrent = history((0, "write", "x", "a", 0, 30, "ok"), (1, "write", "x", "b", 10, 40, "ok"),
                         (2, "write", "x", "c", 50, 60, "ok"), (3, "write", "x", "d", 70, 80, "info"))
    o = VersionOrder(concurrent)
    assert o.method("x") == "realtime"
    assert not o.older("x", "a", "b") and not o.older("x", "b", "a")      # concurrent: no claim
    assert o.older("x", "a", "c") and o.older("x", "b", "c") and o.older("x", None, "a")
    assert o.older("x", "c", "d") and not o.older("x", "d", "c")
    assert not o.known("x", "zzz") and not o.older("x", "zzz", "a")
    v = VersionOrder(concurrent, by="value", value_key=lambda s: "abcd".index(s))
    assert v.method("x") == "value" and v.older("x", "a", "b")
    toks = with_tokens((0, "write", "x", "a", 0, 30, "ok", "a", "h:9"), (1, "write", "x", "b", 10, 40, "ok", "b", "h:4"))
    t = VersionOrder(toks)
    assert t.method("x") == "token" and t.older("x", "b", "a") and not t.older("x", "a", "b")
    assert "position 4" in t.why_older("x", "b", "a", 0)
    assert VersionOrder(toks, by="realtime").method("x") == "realtime"
    with pytest.raises(ValueError):
        VersionOrder(toks, by="magic")


def test_version_order_falls_back_without_tokens():
    h = with_tokens((0, "write", "x", "a", 0, 10, "ok", "a", "h:1"), (1, "write", "x", "b", 20, 30, "ok", "b", None))
    assert VersionOrder(h).method("x") == "realtime"
    assert VersionOrder(h, by="token").method("x") == "token"      # asked for: b has no place
    assert not VersionOrder(h, by="token").known("x", "b")


def test_counter_versions():
    h = history((0, "incr", "c", None, 0, 10, "ok", 1), (1, "incr", "c", 2, 20, 30, "ok", 3))
    o = VersionOrder(h)
    assert o.method("c") == "counter" and o.older("c", 1, 3) and o.older("c", None, 1)
    h = history((0, "incr", "c", -1, 0, 10, "ok", -1))
    assert VersionOrder(h).method("c") is None


# ---------------------------------------------------------------------- read your writes
def test_ryw_lagging_follower_and_other_processes():
    h = history((1, "write", "x", "v1", 0, 10, "ok"), (1, "write", "x", "v2", 20, 30, "ok"),
                (1, "read", "x", None, 40, 50, "ok", "v1"),      # own write missing
                (2, "read", "x", None, 40, 50, "ok", "v1"),      # not p2's write: fine
                (1, "read", "x", None, 60, 70, "ok", None))      # missing again (initial value)
    r = check_read_your_writes(h)
    assert r.verdict == "violation" and r.stats["violations"] == 2
    v = r.violations[0]
    assert v.details["process"] == 1 and [o.id for o in v.ops] == [0, 1, 2]
    assert "every write of 'v1' had completed" in v.explanation


def test_ryw_concurrent_write_of_another_process_is_fine():
    h = history((1, "write", "x", "mine", 0, 10, "ok"), (2, "write", "x", "theirs", 5, 30, "ok"),
                (1, "read", "x", None, 40, 50, "ok", "theirs"))
    assert check_read_your_writes(h).ok


def test_ryw_unacknowledged_writes_are_not_required():
    h = history((1, "write", "x", "v1", 0, 10, "ok"), (1, "write", "x", "v2", 20, 30, "info"),
                (1, "write", "x", "v3", 40, 50, "fail"), (1, "read", "x", None, 60, 70, "ok", "v1"))
    assert check_read_your_writes(h).ok


def test_ryw_by_value_and_counters_and_sets():
    h = history((1, "write", "x", "v5", 0, 10, "ok"), (2, "write", "x", "v3", 0, 10, "ok"),
                (1, "read", "x", None, 20, 30, "ok", "v3"))
    assert check_read_your_writes(h).ok                          # concurrent writes: no claim
    assert check_read_your_writes(h, by="value").verdict == "violation"
    c = history((1, "incr", "c", None, 0, 10, "ok", 7), (1, "read", "c", None, 20, 30, "ok", 6))
    (v,) = check_read_your_writes(c).violations
    assert "incremented 'c' to 7" in v.explanation
    s = history((1, "sadd", "s", ["a", "b"], 0, 10, "ok"), (1, "smembers", "s", None, 20, 30, "ok", ["a"]),
                (2, "smembers", "s", None, 20, 30, "ok", []))
    (v,) = check_read_your_writes(s).violations
    assert v.key == "s" and "['b']" in v.explanation


def test_ryw_skips_unknown_values_with_a_note():
    h = history((1, "write", "x", "v1", 0, 10, "ok"), (1, "read", "x", None, 20, 30, "ok", "zz"))
    r = check_read_your_writes(h)
    assert r.ok and "1 observations" in r.notes[-1]


def test_max_violations():
    specs = [(1, "write", "x", "v1", 0, 10, "ok"), (1, "write", "x", "v2", 20, 30, "ok")]
    specs += [(1, "read", "x", None, 40 + 10 * i, 45 + 10 * i, "ok", "v1") for i in range(20)]
    r = check_read_your_writes(history(*specs), max_violations=3)
    assert len(r.violations) == 3 and r.stats["violations"] == 20 and "first 3 shown" in r.notes[-1]


# ---------------------------------------------------------------------- monotonic reads
def test_monotonic_reads():
    h = history((1, "write", "x", "v1", 0, 10, "ok"), (1, "write", "x", "v2", 20, 30, "ok"),
                (3, "read", "x", None, 40, 50, "ok", "v2"), (3, "read", "x", None, 60, 70, "ok", "v2"),
                (3, "read", "x", None, 80, 90, "ok", "v1"), (4, "read", "x", None, 40, 50, "ok", "v1"),
                (4, "read", "x", None, 60, 70, "ok", "v2"))
    (v,) = check_monotonic_reads(h).violations
    assert v.details["process"] == 3 and [o.id for o in v.ops] == [0, 1, 3, 4]


def test_monotonic_reads_with_tokens_orders_concurrent_writes():
    h = with_tokens((1, "write", "x", "v1", 0, 30, "ok", "v1", "h:5"), (2, "write", "x", "v2", 0, 30, "ok", "v2", "h:6"),
                    (3, "read", "x", None, 40, 50, "ok", "v2", None), (3, "read", "x", None, 60, 70, "ok", "v1", None))
    assert check_monotonic_reads(h, by="realtime").ok
    (v,) = check_monotonic_reads(h).violations
    assert "position 5, before 6" in v.explanation


def test_monotonic_reads_sets_and_counters():
    s = history((1, "sadd", "s", "a", 0, 10, "ok"), (2, "smembers", "s", None, 20, 30, "ok", ["a"]),
                (2, "smembers", "s", None, 40, 50, "ok", []))
    assert check_monotonic_reads(s).violations[0].kind == "monotonic-reads"
    c = history((1, "incr", "c", None, 0, 10, "ok", 1), (1, "incr", "c", None, 0, 10, "ok", 2),
                (2, "read", "c", None, 20, 30, "ok", 2), (2, "read", "c", None, 40, 50, "ok", 1))
    assert check_monotonic_reads(c).verdict == "violation"


def test_set_with_srem_is_skipped():
    s = history((1, "sadd", "s", "a", 0, 10, "ok"), (1, "srem", "s", "a", 20, 30, "ok"),
                (2, "smembers", "s", None, 40, 50, "ok", []))
    r = check_read_your_writes(s)
    assert r.ok and "srem" in r.notes[-1]
    assert check_lost_writes(s).verdict == "unknown"


# ---------------------------------------------------------------------- consistent prefix
def qa(answer_seen, question_seen):
    return history((1, "write", "question", "q1", 0, 10, "ok"),
                   (2, "write", "answer", "a1", 20, 30, "ok"),
                   (3, "read", "answer", None, 40, 50, "ok", answer_seen),
                   (3, "read", "question", None, 60, 70, "ok", question_seen))


def test_consistent_prefix_with_declared_pairs():
    pairs = [(("answer", "a1"), ("question", "q1"))]
    r = check_consistent_prefix(qa("a1", None), pairs=pairs)
    (v,) = r.violations
    assert v.key == "question" and "effect without its cause" in v.explanation
    assert [o.id for o in v.ops] == [0, 2, 3]
    assert check_consistent_prefix(qa("a1", "q1"), pairs=pairs).ok
    assert check_consistent_prefix(qa(None, None), pairs=pairs).ok          # saw neither
    r = check_consistent_prefix(qa("a1", None))
    assert r.ok and "no causal pairs" in r.notes[0]


def test_consistent_prefix_newer_cause_is_fine():
    h = history((1, "write", "question", "q1", 0, 10, "ok"), (1, "write", "question", "q2", 12, 15, "ok"),
                (2, "write", "answer", "a1", 20, 30, "ok"),
                (3, "read", "answer", None, 40, 50, "ok", "a1"), (3, "read", "question", None, 60, 70, "ok", "q2"))
    assert check_consistent_prefix(h, pairs=[(("answer", "a1"), ("question", "q1"))]).ok


def test_consistent_prefix_on_sets():
    h = history((1, "sadd", "log", "cause", 0, 10, "ok"), (2, "sadd", "feed", "effect", 20, 30, "ok"),
                (3, "smembers", "feed", None, 40, 50, "ok", ["effect"]),
                (3, "smembers", "log", None, 60, 70, "ok", []))
    r = check_consistent_prefix(h, pairs=[(("feed", "effect"), ("log", "cause"))])
    assert r.verdict == "violation" and r.violations[0].ops[0].id == 0


# ---------------------------------------------------------------------- lost writes
def counter(final, *extra):
    specs = [(1, "incr", "c", None, 0, 10, "ok", 1), (2, "incr", "c", None, 20, 30, "ok", 2),
             (3, "incr", "c", None, 40, 1000, "info"), *extra,
             (9, "read", "c", None, 2000, 2010, "ok", final)]
    return history(*specs)


@pytest.mark.parametrize("final, verdict, kind", [(2, "ok", None), (3, "ok", None), (1, "violation", "lost-increment"),
                                                  (None, "violation", "lost-increment"),
                                                  (4, "violation", "phantom-increment")])
def test_counter_bounds(final, verdict, kind):
    r = check_lost_writes(counter(final))
    assert r.verdict == verdict, [v.explanation for v in r.violations]
    if kind:
        assert r.violations[0].kind == kind


def test_counter_lost_without_incr_results():
    h = history((1, "incr", "c", 5, 0, 10, "ok", None), (2, "incr", "c", 5, 20, 30, "ok", None),
                (9, "read", "c", None, 40, 50, "ok", 5))
    (v,) = check_lost_writes(h).violations
    assert v.details == {"read": 5, "lower": 10, "upper": 10, "acknowledged": 2, "maybe": 0}
    assert "5 lost" in v.explanation


def test_counter_negative_deltas_widen_bounds():
    h = history((1, "incr", "c", 5, 0, 10, "ok"), (2, "incr", "c", -3, 20, 1000, "info"),
                (9, "read", "c", None, 2000, 2010, "ok", 2))
    assert check_lost_writes(h).ok


def test_final_only_and_all_reads():
    h = history((1, "incr", "c", None, 0, 10, "ok", 1), (9, "read", "c", None, 20, 30, "ok", 0),
                (1, "incr", "c", None, 40, 50, "ok", 2), (9, "read", "c", None, 60, 70, "ok", 2))
    assert check_lost_writes(h).ok                  # the early read is a follower's lag, not a loss
    assert check_lost_writes(h, final_only=False).verdict == "violation"
    no_final = history((1, "incr", "c", None, 0, 10, "ok", 1), (9, "read", "c", None, 5, 8, "ok", 0))
    r = check_lost_writes(no_final)
    assert r.verdict == "unknown" and "no read after" in r.notes[-1]


def test_lost_and_phantom_set_members():
    h = history((1, "sadd", "s", "a", 0, 10, "ok"), (2, "sadd", "s", ["b", "c"], 20, 30, "ok"),
                (3, "sadd", "s", "d", 40, 1000, "info"), (3, "sadd", "s", "e", 40, 50, "fail"),
                (9, "smembers", "s", None, 2000, 2010, "ok", ["a", "c", "d", "e", "zz"]))
    r = check_lost_writes(h)
    kinds = {v.kind: v for v in r.violations}
    assert set(kinds) == {"lost-member", "phantom-member"}
    assert kinds["lost-member"].details["missing"] == ["b"] and [o.id for o in kinds["lost-member"].ops] == [1, 4]
    assert kinds["phantom-member"].details["extra"] == ["e", "zz"]


def test_nothing_to_check_is_ok():
    h = history((1, "write", "x", "v1", 0, 10, "ok"))
    assert check_lost_writes(h).ok


# ---------------------------------------------------------------------- convergence
def test_convergence_from_argument():
    assert check_convergence(digests={"n1": "abc", "n2": "abc", "n3": "abc"}).ok
    r = check_convergence(digests=[("n1", "abc"), ("n2", "abd"), ("n3", "abc")])
    (v,) = r.violations
    assert v.kind == "divergence" and "n1, n3: 'abc'; n2: 'abd'" in v.explanation
    assert check_convergence(digests={"n1": "abc"}).verdict == "unknown"


def test_convergence_names_differing_keys():
    r = check_convergence(digests={"n1": {"x": 1, "y": 2}, "n2": {"x": 1, "y": 3}, "n3": {"x": 1}})
    (v,) = r.violations
    assert v.details["differing_keys"] == 1 and "'y' (n1=2, n2=3, n3=None)" in v.explanation


def test_convergence_from_recorded_digests_last_wins():
    from replikv.check import Recorder
    rec = Recorder()
    rec.digest("n1", "old", time=0)
    rec.digest("n2", "new", time=2)
    rec.digest("n1", "new", time=4)
    assert check_convergence(rec).ok
