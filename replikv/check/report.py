"""Reports: the results of several checkers over one history, as text and as JSON.

::

    report = check_all(history, digests={"n1": d1, "n2": d2, "n3": d3})
    print(report.text())          # or str(report)
    report.verdict                # "ok" | "violation" | "unknown" (violation wins over unknown)
    json_text = report.to_json()  # {"verdict", "valid", "history": {...}, "checks": [...]}

or, with results computed separately: ``Report([r1, r2, ...], history)``.

``check_all`` runs every checker that applies to the history: linearizability (unless
``linearizable=False``, e.g. for follower reads, which are not meant to be linearizable),
read-your-writes, monotonic reads, consistent prefix (when causal pairs are declared), lost
writes (when there are counter or set keys) and convergence (when digests are given or
recorded). The text report lists operations by outcome, each check with its verdict, and
each violation with its explanation and its slice of the history (times in ms from the
first invoke).
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable, Mapping
from typing import Any

from .history import (
    COUNTER,
    DIGEST_FS,
    FAIL,
    INFO,
    OK,
    SET,
    Op,
    _json_default,
    as_ops,
    key_kinds,
)
from .linearizability import check_linearizability
from .result import CheckResult, combine_verdicts, format_op
from .sessions import (
    VersionOrder,
    check_consistent_prefix,
    check_convergence,
    check_lost_writes,
    check_monotonic_reads,
    check_read_your_writes,
)


class Report:
    def __init__(self, results: Iterable[CheckResult], history: Any = None, *, title: str = "replikv check"):
        self.results = list(results)
        self.ops: list[Op] = as_ops(history) if history is not None else []
        self.title = title
        self.t0 = min((o.call for o in self.ops), default=None)

    @property
    def verdict(self) -> str:
        return combine_verdicts(r.verdict for r in self.results)

    @property
    def valid(self) -> bool | None:
        return {"ok": True, "violation": False}.get(self.verdict)

    def history_summary(self) -> dict:
        by_f: dict[str, dict[str, int]] = {}
        for op in self.ops:
            row = by_f.setdefault(str(op.f), {OK: 0, FAIL: 0, INFO: 0})
            row[op.type] += 1
        ends = [o.complete_time for o in self.ops if o.complete_time is not None]
        span = (max(ends) - self.t0) / 1e9 if ends and self.t0 is not None else 0.0
        return {
            "ops": len(self.ops),
            OK: sum(1 for o in self.ops if o.ok),
            FAIL: sum(1 for o in self.ops if o.failed),
            INFO: sum(1 for o in self.ops if o.unknown),
            "processes": len({repr(o.process) for o in self.ops}),
            "keys": len({repr(o.key) for o in self.ops if o.key is not None}),
            "seconds": round(span, 3),
            "by_f": dict(sorted(by_f.items())),
        }

    def text(self, max_violations: int = 10, max_ops: int = 30, width: int = 100) -> str:
        """The printable report; at most ``max_violations`` per check and ``max_ops`` ops per slice."""
        lines = [f"{self.title}: {self.verdict.upper()}"]
        if self.ops:
            h = self.history_summary()
            lines.append(f"history: {h['ops']} operations ({h['ok']} ok, {h['fail']} fail, {h['info']} info) "
                         f"from {h['processes']} processes on {h['keys']} keys over {h['seconds']} s")
            lines.append(f"  {'f':<12}{'ok':>8}{'fail':>8}{'info':>8}")
            for f, row in h["by_f"].items():
                lines.append(f"  {f:<12}{row[OK]:>8}{row[FAIL]:>8}{row[INFO]:>8}")
        lines.append("checks:")
        for r in self.results:
            stats = ", ".join(f"{k}={v}" for k, v in r.stats.items() if isinstance(v, (int, float, str)))
            lines.append(f"  {r.checker:<20}{r.verdict:<11}{stats}")
            for n in r.notes:
                lines.extend(textwrap.wrap(n, width, initial_indent="      note: ", subsequent_indent="            "))
        count = 0
        for r in self.results:
            for v in r.violations[:max_violations]:
                count += 1
                if count == 1:
                    lines.append("violations:")
                key = "" if v.key is None else f", key {v.key!r}"
                lines.append(f"  [{count}] {r.checker}: {v.kind}{key}")
                lines.extend(textwrap.wrap(v.explanation, width, initial_indent="      ",
                                           subsequent_indent="      "))
                for op in v.ops[:max_ops]:
                    lines.append(f"        {format_op(op, self.t0)}")
                if len(v.ops) > max_ops:
                    lines.append(f"        ... {len(v.ops) - max_ops} more")
            if len(r.violations) > max_violations:
                lines.append(f"  ... {len(r.violations) - max_violations} more {r.checker} violations")
        return "\n".join(lines) + "\n"

    def __str__(self) -> str:
        return self.text()

    def to_dict(self) -> dict:
        return {"title": self.title, "verdict": self.verdict, "valid": self.valid,
                "history": self.history_summary() if self.ops else None,
                "checks": [r.to_dict(self.t0) for r in self.results]}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=_json_default, sort_keys=False)


def check_all(history: Any, *, digests: Mapping[Any, Any] | Iterable[tuple[Any, Any]] | None = None,
              pairs: Iterable[tuple[tuple[Any, Any], tuple[Any, Any]]] = (), by: str = "auto",
              linearizable: bool = True, time_limit: float = 60.0, final_only: bool = True,
              title: str = "replikv check") -> Report:
    """Run every checker that applies to ``history`` (see the module docstring)."""
    ops = as_ops(history)
    order = VersionOrder(ops, by)
    results = []
    if linearizable:
        results.append(check_linearizability(ops, time_limit=time_limit))
    results.append(check_read_your_writes(ops, order=order))
    results.append(check_monotonic_reads(ops, order=order))
    pairs = list(pairs)
    if pairs or any(o.extra.get("causes") for o in ops):
        results.append(check_consistent_prefix(ops, pairs=pairs, order=order))
    kinds = key_kinds(ops)
    if any(k in (COUNTER, SET) for k in kinds.values()):
        results.append(check_lost_writes(ops, final_only=final_only))
    if digests is not None or any(o.f in DIGEST_FS for o in ops):
        results.append(check_convergence(ops, digests=digests))
    return Report(results, ops, title=title)
