"""The result every checker returns: a verdict, violations with their history slices, notes.

``CheckResult.verdict`` is one of:

- ``"ok"``: the check passed on everything it looked at;
- ``"violation"``: at least one definite violation (each in ``violations``);
- ``"unknown"``: no violation found, but the check could not finish (time limit, no
  usable version order, nothing to compare...); ``notes`` say why.

A ``Violation`` carries the smallest slice of the history that shows it (``ops``, in
invocation order), a human-readable ``explanation``, and checker-specific ``details``
(JSON-able). ``valid`` is Jepsen's ``:valid?``: True, False, or None for unknown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .history import Op, _short

OK_VERDICT, VIOLATION, UNKNOWN = "ok", "violation", "unknown"
VERDICTS = (OK_VERDICT, VIOLATION, UNKNOWN)


@dataclass
class Violation:
    checker: str
    kind: str
    key: Any
    explanation: str
    ops: list[Op] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    def to_dict(self, t0: int | None = None) -> dict:
        return {"checker": self.checker, "kind": self.kind, "key": self.key,
                "explanation": self.explanation, "ops": [op_to_dict(o, t0) for o in self.ops],
                "details": self.details}


@dataclass
class CheckResult:
    checker: str
    verdict: str
    violations: list[Violation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.verdict == OK_VERDICT

    @property
    def valid(self) -> bool | None:
        return {OK_VERDICT: True, VIOLATION: False}.get(self.verdict)

    def summary(self) -> str:
        s = f"{self.checker}: {self.verdict}"
        if self.violations:
            s += f" ({len(self.violations)} violation{'s' if len(self.violations) != 1 else ''})"
        return s

    def to_dict(self, t0: int | None = None) -> dict:
        return {"checker": self.checker, "verdict": self.verdict, "valid": self.valid,
                "violations": [v.to_dict(t0) for v in self.violations], "notes": list(self.notes),
                "stats": self.stats}


def combine_verdicts(verdicts) -> str:
    """violation if any, else unknown if any, else ok."""
    vs = list(verdicts)
    if VIOLATION in vs:
        return VIOLATION
    if UNKNOWN in vs:
        return UNKNOWN
    return OK_VERDICT


def fmt_time(t: float | None, t0: int | None) -> str:
    if t is None:
        return "-"
    if t == math.inf:
        return "open"
    return f"+{(t - (t0 or 0)) / 1e6:.3f}ms"


def op_ref(op: Op) -> Any:
    """How reports name an op: its id, or ``"@<invoke index>"`` in a history without ids."""
    return op.id if op.id is not None else f"@{op.invoke_index}"


def format_op(op: Op, t0: int | None = None) -> str:
    """One line: ``#12 p3 write k1 'v7'  ok  [+1.234ms .. +2.001ms] node=n1``."""
    line = f"#{op.id if op.id is not None else '@' + str(op.invoke_index)} {op.describe()}  {op.type}"
    end = op.complete_time if op.unknown and op.complete_time is not None else op.ret
    line += f"  [{fmt_time(op.call, t0)} .. {fmt_time(op.ret, t0)}]"
    if op.unknown and op.complete_time is not None:
        line += f" (gave up {fmt_time(end, t0)})"
    if op.node is not None:
        line += f" node={op.node}"
    if op.token is not None:
        line += f" token={op.token}"
    if op.error:
        line += f" error={_short(op.error, 80)}"
    return line


def op_to_dict(op: Op, t0: int | None = None) -> dict:
    d = {"id": op.id, "process": op.process, "type": op.type, "f": op.f, "key": op.key,
         "arg": op.arg, "value": op.value, "call": op.call,
         "ret": None if op.ret == math.inf else op.ret}
    for name in ("node", "token", "error"):
        v = getattr(op, name)
        if v is not None:
            d[name] = v
    if t0 is not None:
        d["call_ms"] = (op.call - t0) / 1e6
        d["ret_ms"] = None if op.ret == math.inf else (op.ret - t0) / 1e6
    return d
