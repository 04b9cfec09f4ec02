"""Recorded histories with known verdicts (tests/check/histories/*.jsonl).

Each file starts with comment lines: a description, ``# expect: checker=verdict[:kind] ...``
and optionally ``# slice: checker=id,id,...`` (the ops the first violation must show: op
ids, or positions in invocation order for files without ids)."""

from __future__ import annotations

from pathlib import Path

import pytest

from replikv.check import (
    History,
    check_consistent_prefix,
    check_convergence,
    check_linearizability,
    check_lost_writes,
    check_monotonic_reads,
    check_read_your_writes,
    wgl_search,
)
from replikv.check.history import key_kinds
from replikv.check.linearizability import model_for_kind

HERE = Path(__file__).parent / "histories"
FILES = sorted(HERE.glob("*.jsonl"))
CHECKERS = {
    "linearizability": check_linearizability,
    "read-your-writes": check_read_your_writes,
    "monotonic-reads": check_monotonic_reads,
    "consistent-prefix": check_consistent_prefix,
    "lost-writes": check_lost_writes,
    "convergence": check_convergence,
}


def header(path: Path, tag: str) -> dict[str, str]:
    for line in path.read_text().splitlines():
        if line.startswith(f"# {tag}:"):
            return dict(item.split("=", 1) for item in line.split(":", 1)[1].split())
    return {}


def test_there_are_fixtures_for_every_checker():
    covered = {name for f in FILES for name in header(f, "expect")}
    assert covered == set(CHECKERS)
    verdicts = {(name, v.split(":")[0]) for f in FILES for name, v in header(f, "expect").items()}
    for name in CHECKERS:
        assert (name, "ok") in verdicts and (name, "violation") in verdicts, name


CASES = [(f.stem, name, verdict) for f in FILES for name, verdict in header(f, "expect").items()]


@pytest.mark.parametrize("stem, checker, expected", CASES)
def test_fixture_verdict(stem, checker, expected):
    path = HERE / f"{stem}.jsonl"
    h = History.load(path)
    ops = h.ops()
    result = CHECKERS[checker](h)
    verdict, _, kind = expected.partition(":")
    assert result.verdict == verdict, (result.summary(), [v.explanation for v in result.violations], result.notes)
    if verdict == "violation":
        assert result.violations
        v = result.violations[0]
        assert v.explanation and v.ops
        if kind:
            assert v.kind == kind, v.explanation
        want = header(path, "slice").get(checker)
        if want:
            pos = {id(o): (o.id if o.id is not None else i) for i, o in enumerate(ops)}
            assert sorted(pos[id(o)] for o in v.ops) == sorted(int(x) for x in want.split(",")), v.explanation
    else:
        assert not result.violations


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_linearizability_slices_are_proofs(path):
    """Every slice reported for a linearizability violation cannot be linearized by itself."""
    h = History.load(path)
    kinds = key_kinds(h.ops())
    for v in check_linearizability(h).violations:
        model = model_for_kind(kinds[v.key])
        assert wgl_search(v.ops, model).status == "violation"
        assert v.details["stuck"] is not None


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_fixture_round_trip(path, tmp_path):
    h = History.load(path)
    out = tmp_path / "h.jsonl"
    h.save(out)
    again = History.load(out)
    assert list(again) == list(h)
    assert [(o.type, o.f, o.key, o.arg, o.value, o.call, o.ret) for o in again.ops()] == \
        [(o.type, o.f, o.key, o.arg, o.value, o.call, o.ret) for o in h.ops()]
