"""The history format, the thread-safe Recorder, and pairing events into operations."""

from __future__ import annotations

import math
import threading

import pytest

from replikv.check import Event, History, HistoryError, Recorder, as_ops, pair_ops
from replikv.check.history import key_kinds, observations


def clock(start=0, step=10):
    t = [start - step]

    def now():
        t[0] += step
        return t[0]
    return now


def test_recorder_ok_fail_info():
    rec = Recorder(clock=clock())
    a = rec.invoke(1, "write", "k1", "v7", node="n1")
    b = rec.invoke(2, "read", "k1", node="n2")
    c = rec.invoke(3, "write", "k1", "v8", node="n1")
    d = rec.invoke(4, "write", "k1", "v9", node="n2")
    rec.ok(a, token="h:5")
    rec.ok(b, value="v7")
    rec.fail(d, "READONLY")
    rec.info(c, "timeout")
    assert (a, b, c, d) == (0, 1, 2, 3)
    ops = {o.id: o for o in rec.ops()}
    assert ops[a].ok and ops[a].value == "v7" and ops[a].arg == "v7" and ops[a].token == "h:5"
    assert (ops[a].call, ops[a].ret) == (0, 40)
    assert ops[b].value == "v7" and ops[b].arg is None and ops[b].node == "n2"
    assert ops[c].unknown and ops[c].ret == math.inf and ops[c].complete_time == 70 and ops[c].error == "timeout"
    assert ops[d].failed and ops[d].error == "READONLY" and ops[d].ret == 60
    assert [e.type for e in rec.events()] == ["invoke"] * 4 + ["ok", "ok", "fail", "info"]
    assert [e.index for e in rec.events()] == list(range(8))
    assert rec.in_flight() == []


def test_explicit_times_and_extra_fields():
    rec = Recorder()
    a = rec.invoke("c1", "write", "answer", "a1", time=100, causes=[["question", "q1"]])
    rec.ok(a, time=150, applied_at="n2")
    (op,) = rec.ops()
    assert (op.call, op.ret) == (100, 150)
    assert op.extra == {"causes": [["question", "q1"]], "applied_at": "n2"}
    line = rec.history().dumps().splitlines()[0]
    assert '"causes":[["question","q1"]]' in line


def test_one_op_in_flight_per_process():
    rec = Recorder(clock=clock())
    a = rec.invoke(1, "read", "k")
    with pytest.raises(HistoryError, match="in flight"):
        rec.invoke(1, "read", "k")
    rec.info(a, "timeout")
    rec.ok(rec.invoke(1, "read", "k"), value=None)      # after an info the process goes on
    with pytest.raises(HistoryError):
        rec.ok(a)                                       # already completed
    with pytest.raises(HistoryError):
        rec.fail(99)                                    # never invoked


def test_recorder_is_thread_safe():
    rec = Recorder()
    n_threads, per = 8, 300

    def client(p):
        for i in range(per):
            op = rec.invoke(p, "write", f"k{i % 3}", f"{p}-{i}")
            if i % 10 == 0:
                rec.info(op, "timeout")
            else:
                rec.ok(op)

    threads = [threading.Thread(target=client, args=(p,)) for p in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = rec.events()
    assert len(events) == 2 * n_threads * per
    assert [e.index for e in events] == list(range(len(events)))
    assert all(a.time <= b.time for a, b in zip(events, events[1:], strict=False))   # times read under the lock
    ops = rec.ops()
    assert len({o.id for o in ops}) == n_threads * per
    for p in range(n_threads):
        mine = [o for o in ops if o.process == p]
        assert len(mine) == per
        assert all(a.complete_time <= b.call for a, b in zip(mine, mine[1:], strict=False))


def test_save_load_and_continue(tmp_path):
    rec = Recorder(clock=clock())
    a = rec.invoke(1, "sadd", "s", ["m1", "m2"])
    rec.ok(a, value=2)
    b = rec.invoke(2, "smembers", "s")
    rec.ok(b, value={"m2", "m1"})                     # a set is written as a sorted list
    c = rec.invoke(3, "write", "k", "v1")              # still in flight when saved
    path = tmp_path / "h.jsonl"
    rec.save(path)
    text = path.read_text()
    assert '"value":["m1","m2"]' in text
    again = Recorder.load(path, clock=clock(1000))
    assert again.in_flight() == [c]
    again.ok(c)
    d = again.invoke(4, "read", "k")
    assert d == 3
    again.ok(d, value="v1")
    ops = {o.id: o for o in again.ops()}
    assert ops[b].value == ["m1", "m2"]
    assert ops[c].ok and ops[c].ret == 1000
    assert History.load(path).ops()[-1].unknown       # the saved file: c never completed


def test_pair_by_process_like_jepsen():
    text = "\n".join([
        '{"type":"invoke","process":0,"f":"write","key":"x","value":1,"time":0}',
        '{"type":"invoke","process":1,"f":"read","key":"x","value":null,"time":5}',
        '{"type":"ok","process":1,"f":"read","key":"x","value":1,"time":8}',
        '{"type":"info","process":0,"f":"write","key":"x","value":1,"time":9,"error":"timeout"}',
        '{"type":"invoke","process":1,"f":"write","key":"x","time":10,"value":2}',
        '{"type":"ok","process":1,"f":"write","key":"x","time":12}',
        '# a comment line, then a blank one',
        '',
        '{"type":"invoke","process":2,"f":"read","key":"x","value":null,"time":20}',
    ])
    ops = History.loads(text).ops()
    assert [(o.process, o.type) for o in ops] == [(0, "info"), (1, "ok"), (1, "ok"), (2, "info")]
    assert ops[0].ret == math.inf and ops[0].complete_time == 9
    assert ops[2].value == 2                              # ok without value: the invoke's value
    assert ops[3].error == "no completion recorded" and ops[3].complete_time is None
    assert [o.invoke_index for o in ops] == [0, 1, 4, 6]


@pytest.mark.parametrize("lines, match", [
    (['{"type":"ok","process":0,"f":"read","time":1}'], "without an open invoke"),
    (['{"type":"invoke","process":0,"f":"read","time":1}',
      '{"type":"invoke","process":0,"f":"read","time":2}'], "invoked twice"),
    (['{"type":"invoke","id":1,"process":0,"f":"read","time":1}',
      '{"type":"ok","id":1,"process":0,"f":"read","time":2}',
      '{"type":"ok","id":1,"process":0,"f":"read","time":3}'], "without an open invoke"),
    (['{"type":"invoke","id":1,"process":0,"f":"read","time":5}',
      '{"type":"ok","id":1,"process":0,"f":"read","time":2}'], "before its invoke"),
    (['{"type":"done","process":0}'], "event type"),
    (['[1, 2]'], "not a JSON object"),
    (['{"type":"invoke"'], "not JSON"),
])
def test_malformed_histories(lines, match):
    with pytest.raises(HistoryError, match=match):
        History.loads("\n".join(lines)).ops()


def test_ids_allow_concurrent_ops_of_one_process():
    evs = [Event("invoke", 0, "write", "x", 1, 0, id="a"), Event("invoke", 0, "write", "x", 2, 1, id="b"),
           Event("ok", 0, "write", "x", 2, 3, id="b"), Event("ok", 0, "write", "x", 1, 4, id="a")]
    ops = pair_ops(evs)
    assert [(o.id, o.call, o.ret) for o in ops] == [("a", 0, 4), ("b", 1, 3)]


def test_as_ops_accepts_many_forms(tmp_path):
    rec = Recorder(clock=clock())
    rec.ok(rec.invoke(0, "write", "x", 1))
    path = tmp_path / "h.jsonl"
    rec.save(path)
    forms = [rec, rec.history(), rec.events(), rec.ops(), str(path), path]
    assert {len(as_ops(f)) for f in forms} == {1}
    with pytest.raises(TypeError):
        as_ops([1, 2])


def test_observations_and_key_kinds():
    h = History.loads("\n".join([
        '{"type":"invoke","id":1,"process":0,"f":"mget","key":null,"value":["a","b"],"time":0}',
        '{"type":"ok","id":1,"process":0,"f":"mget","key":null,"value":{"a":1,"b":null},"time":1}',
        '{"type":"invoke","id":2,"process":0,"f":"incr","key":"c","value":null,"time":2}',
        '{"type":"ok","id":2,"process":0,"f":"incr","key":"c","value":1,"time":3}',
        '{"type":"invoke","id":3,"process":0,"f":"sadd","key":"s","value":"m","time":4}',
        '{"type":"ok","id":3,"process":0,"f":"sadd","key":"s","value":1,"time":5}',
        '{"type":"invoke","id":4,"process":0,"f":"write","key":"c","value":5,"time":6}',
        '{"type":"ok","id":4,"process":0,"f":"write","key":"c","value":5,"time":7}',
    ]))
    ops = h.ops()
    assert observations(ops[0]) == [("a", 1), ("b", None)]
    assert key_kinds(ops) == {"a": "register", "b": "register", "c": "mixed", "s": "set"}
    assert ops[1].describe() == "p0 incr c by 1 -> 1"
