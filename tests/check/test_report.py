"""Reports: text and JSON, and check_all choosing the checkers that apply."""

from __future__ import annotations

import json
from pathlib import Path

from replikv.check import History, Report, check_all, check_convergence, check_read_your_writes

from .helpers import history

HERE = Path(__file__).parent / "histories"


def test_check_all_picks_applicable_checkers():
    r = check_all(History.load(HERE / "lin_concurrent_ok.jsonl"))
    assert [c.checker for c in r.results] == ["linearizability", "read-your-writes", "monotonic-reads"]
    assert r.verdict == "ok" and r.valid is True
    r = check_all(History.load(HERE / "cp_answer_before_question.jsonl"), linearizable=False)
    assert [c.checker for c in r.results] == ["read-your-writes", "monotonic-reads", "consistent-prefix"]
    assert r.verdict == "violation"
    r = check_all(History.load(HERE / "lost_increment.jsonl"), digests={"n1": "a", "n2": "a"})
    assert [c.checker for c in r.results][-2:] == ["lost-writes", "convergence"]


def test_text_report():
    r = check_all(History.load(HERE / "ryw_lagging_follower.jsonl"))
    text = r.text()
    assert text.startswith("replikv check: VIOLATION\n")
    assert "history: 3 operations (3 ok, 0 fail, 0 info) from 1 processes on 1 keys" in text
    assert "  write              2       0       0" in text
    assert "  read-your-writes    violation" in text
    assert "  monotonic-reads     ok" in text
    assert "[2] read-your-writes: read-your-writes, key 'x'" in text
    assert "#2 p1 read x -> 'v1'  ok  [+40.000ms .. +50.000ms] node=n2" in text
    assert str(r) == text


def test_text_report_truncates():
    specs = [(1, "write", "x", "v1", 0, 10, "ok"), (1, "write", "x", "v2", 20, 30, "ok")]
    specs += [(1, "read", "x", None, 40 + 10 * i, 45 + 10 * i, "ok", "v1") for i in range(5)]
    rep = Report([check_read_your_writes(history(*specs))], history(*specs))
    text = rep.text(max_violations=2, max_ops=1)
    assert "... 3 more read-your-writes violations" in text and "... 2 more" in text


def test_json_report():
    r = check_all(History.load(HERE / "lost_set_member.jsonl"))
    d = json.loads(r.to_json())
    assert d["verdict"] == "violation" and d["valid"] is False
    assert d["history"]["ops"] == 4 and d["history"]["by_f"]["sadd"] == {"ok": 2, "fail": 0, "info": 1}
    lost = next(c for c in d["checks"] if c["checker"] == "lost-writes")
    (v,) = lost["violations"]
    assert v["kind"] == "lost-member" and v["details"]["missing"] == ["b"]
    assert [o["id"] for o in v["ops"]] == [1, 3]
    assert v["ops"][0]["call_ms"] == 20.0 and v["ops"][1]["value"] == ["a"]


def test_report_without_history_and_unknown_verdict():
    r = Report([check_convergence(digests={"n1": "x"})])
    assert r.verdict == "unknown" and r.valid is None
    assert "convergence" in r.text() and json.loads(r.to_json())["history"] is None
