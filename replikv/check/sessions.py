"""Session guarantees, lost acknowledged writes, and replica convergence.

Every checker takes a history (``History``, ``Recorder``, list of ``Op`` / ``Event``, or a
path) and returns a ``CheckResult`` whose violations carry the few operations that show
them::

    check_read_your_writes(history)           # a process sees its own acknowledged writes
    check_monotonic_reads(history)            # a process never reads an older version
    check_consistent_prefix(history, pairs=)  # whoever sees an effect also sees its cause
    check_lost_writes(history)                # counters and sets keep acknowledged updates
    check_convergence(history, digests=)      # replicas agree after healing

Sessions. A process's session is its operations in invocation order; "after" means
invoked after the earlier op returned (``later.call > earlier.ret``). ``fail`` ops and
``info`` ops never count as acknowledged; ``info`` writes still give their value a place in
the version order. Reads are ``read``/``get`` (and ``mget``, one observation per key) for
registers and counters, ``smembers`` for sets.

Version order (``VersionOrder``): to say one value of a key is *older* than another.
``by``:

- ``"token"``: by the position token of the write that installed each value (``Op.token``
  parsed by ``token_key``: an int, ``"<history>:<seq>"`` -> seq, ``[epoch, seq]``). A total
  order, as the leader's log. A value written by a write with no token has no place.
- ``"value"``: by ``value_key(value)`` (default: an int, or the trailing digits of a string,
  ``"v17"`` -> 17). Only sound if the workload writes increasing values per key in the
  order the database applies them (one writer per key, or values from the log).
- ``"realtime"``: ``a`` is older than ``b`` when every write of ``a`` completed before any
  write of ``b`` began. A partial order, sound for any database that orders an acknowledged
  write before a later-invoked one (single-leader logs do); concurrent writes are
  incomparable, so no violation is ever claimed between them.
- ``"auto"`` (default): per key, ``token`` if every acknowledged write of the key carries a
  usable token, else ``realtime``.

Counters (keys with ``incr``) use their value as version when every delta is positive.
The initial value (absent, ``None``) is older than every written value. Deletes are not
modelled: a read of ``None`` after a write is "older". Values with no place in the order
(never written, no token...) are skipped and counted in ``notes``.

Sets (keys with ``sadd``/``smembers``) are grow-only for these checks: "older" means
missing a member; keys with ``srem`` are skipped with a note.

Consistent prefix. Causal pairs say "effect (key, value) was written because its writer
saw cause (key, value)", e.g. ``(("answer", "a1"), ("question", "q1"))``. Declare them
with ``pairs=``, or when recording: ``rec.invoke(p, "write", "answer", "a1",
causes=[["question", "q1"]])`` (the ``causes`` field of the invoke). An observer that reads
the effect (exactly that value, or that member) and later reads the cause key must see the
cause or a newer version; the two observations may also be one ``mget``.

Lost writes. Counters: every read invoked after all acknowledged and failed increments of
the key completed (``final_only=True``; ``False`` checks every read) must lie between
``initial + sum(acknowledged deltas that completed before the read)`` and that plus every
delta that may have applied (acknowledged-but-concurrent and ``info`` increments invoked
before the read returned); negative deltas widen the bounds the other way. Sets: a final
``smembers`` must hold every member of every acknowledged ``sadd`` that completed before it,
and nothing that no ``sadd`` (acknowledged or unknown) added. A counter or set key with no
final read is ``unknown``.

Convergence. ``digests``: {node: digest} (or pairs), or ``digest`` ops in the history (the
last per node, see ``Recorder.digest``). All must be equal. If digests are dicts (a
replica's key -> value), the differing keys are named.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .history import (
    CAS_FS,
    COUNTER,
    DIGEST_FS,
    INCR_FS,
    INF,
    REGISTER,
    SADD_FS,
    SET,
    SREAD_FS,
    SREM_FS,
    WRITE_FS,
    Op,
    _short,
    as_ops,
    freeze,
    incr_delta,
    key_kinds,
    members,
    observations,
)
from .result import OK_VERDICT, UNKNOWN, VIOLATION, CheckResult, Violation, fmt_time

NO_VERSION = object()


# --------------------------------------------------------------------------- version order
def default_token_key(token: Any) -> Any:
    """int -> int; ``"<anything>:<digits>"`` or ``"<digits>"`` -> int; list of ints -> tuple."""
    if isinstance(token, bool) or token is None:
        return None
    if isinstance(token, int):
        return token
    if isinstance(token, str):
        m = re.fullmatch(r"(?:.*[:/@])?(\d+)", token.strip())
        return int(m.group(1)) if m else None
    if isinstance(token, (list, tuple)) and token and all(isinstance(x, int) for x in token):
        return tuple(token)
    return None


def default_value_key(value: Any) -> Any:
    """int -> int; a string ending in digits -> those digits as an int (``"v17"`` -> 17)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = re.search(r"(\d+)$", value)
        return int(m.group(1)) if m else None
    return None


def _written(op: Op) -> Any:
    """The value an op installs in a register / counter key (NO_VERSION if none known)."""
    if op.f in WRITE_FS:
        return freeze(op.arg)
    if op.f in CAS_FS and isinstance(op.arg, (list, tuple)) and len(op.arg) == 2:
        return freeze(op.arg[1])
    if op.f in INCR_FS and op.ok and op.value is not None:
        return int(op.value)
    return NO_VERSION


class VersionOrder:
    """Which of two values of a register or counter key is older (see the module docstring).

    ``older(key, a, b)`` is True only when ``a`` is definitely an older version than ``b``;
    ``known(key, v)`` says whether ``v`` has a place in the order at all."""

    def __init__(self, history: Any, by: str = "auto", *, token_key: Callable[[Any], Any] = default_token_key,
                 value_key: Callable[[Any], Any] = default_value_key, initial: Any = None):
        if by not in ("auto", "token", "value", "realtime"):
            raise ValueError(f"by must be auto, token, value or realtime, not {by!r}")
        ops = as_ops(history)
        self.initial = freeze(initial)
        self.by = by
        self._method: dict[Any, str | None] = {}
        self._writers: dict[Any, dict[Any, list[Op]]] = {}
        self._rank: dict[Any, dict[Any, tuple[Any, Any]]] = {}
        self.notes: list[str] = []
        kinds = key_kinds(ops)
        nonpositive: set = set()
        for op in ops:
            if op.failed or op.key is None:
                continue
            if op.f in INCR_FS and incr_delta(op) <= 0:
                nonpositive.add(op.key)
            v = _written(op)
            if v is not NO_VERSION:
                self._writers.setdefault(op.key, {}).setdefault(v, []).append(op)
        for key, kind in kinds.items():
            writers = self._writers.get(key, {})
            if kind == COUNTER:
                if key not in nonpositive:
                    self._method[key] = "counter"
                else:
                    self._method[key] = None
                    self.notes.append(f"counter {key!r} has non-positive deltas: no version order")
                continue
            if kind != REGISTER:
                continue
            self._method[key] = self._register_method(key, writers, by, token_key, value_key)

    def _register_method(self, key, writers, by, token_key, value_key) -> str | None:
        if by in ("auto", "token"):
            ranks: dict[Any, tuple[Any, Any]] = {}
            usable = True
            for v, ws in writers.items():
                toks = [token_key(w.token) for w in ws if w.ok]
                toks = [t for t in toks if t is not None]
                if any(w.ok for w in ws) and len(toks) < sum(1 for w in ws if w.ok):
                    usable = False
                if toks:
                    ranks[v] = (min(toks), max(toks))
            try:
                sorted(r for pair in ranks.values() for r in pair)
            except TypeError:
                usable = False
            if ranks and (usable or by == "token"):
                self._rank[key] = ranks
                return "token"
            if by == "token":
                self.notes.append(f"key {key!r}: no usable position tokens")
                return None
            return "realtime"
        if by == "value":
            ranks = {}
            for v in writers:
                r = value_key(v)
                if r is not None:
                    ranks[v] = (r, r)
            self._rank[key] = ranks
            return "value"
        return "realtime"

    def method(self, key: Any) -> str | None:
        return self._method.get(key)

    def writers(self, key: Any, value: Any) -> list[Op]:
        return self._writers.get(key, {}).get(freeze(value), [])

    def known(self, key: Any, value: Any) -> bool:
        m = self._method.get(key)
        v = freeze(value)
        if m is None:
            return False
        if m == "counter":
            return v is None or isinstance(v, int)
        if v == self.initial:
            return True
        if m in ("token", "value"):
            return v in self._rank.get(key, {})
        return v in self._writers.get(key, {})

    def _bounds(self, key: Any, v: Any) -> tuple[Any, Any]:
        m = self._method[key]
        if m in ("token", "value"):
            return self._rank[key][v]
        ws = self._writers[key][v]
        return max(w.ret for w in ws), min(w.call for w in ws)   # (completed by, begun from)

    def older(self, key: Any, a: Any, b: Any) -> bool:
        """True if value ``a`` of ``key`` is definitely an older version than ``b``."""
        a, b = freeze(a), freeze(b)
        if a == b or not self.known(key, a) or not self.known(key, b):
            return False
        m = self._method[key]
        if m == "counter":
            return (a or 0) < (b or 0)
        if b == self.initial:
            return False
        if a == self.initial:
            return True
        if m in ("token", "value"):
            return self._rank[key][a][1] < self._rank[key][b][0]
        return self._bounds(key, a)[0] < self._bounds(key, b)[1]

    def why_older(self, key: Any, a: Any, b: Any, t0: int) -> str:
        """Why ``a`` is older than ``b``, in words (assumes ``older(key, a, b)``)."""
        a, b = freeze(a), freeze(b)
        m = self._method[key]
        if m == "counter":
            return f"the counter only grows, and {a or 0} < {b}"
        if a == self.initial:
            return f"{_short(a)} is the key's initial value, before any write"
        if m == "token":
            return (f"the write of {_short(a)} has position {self._rank[key][a][1]}, before "
                    f"{self._rank[key][b][0]}, that of {_short(b)}")
        if m == "value":
            return f"values are ordered by their number and {_short(a)} < {_short(b)}"
        done, _ = self._bounds(key, a)
        _, begun = self._bounds(key, b)
        return (f"every write of {_short(a)} had completed (by {fmt_time(done, t0)}) before any write "
                f"of {_short(b)} began ({fmt_time(begun, t0)})")


def _order(history_ops: list[Op], order: VersionOrder | None, by: str) -> VersionOrder:
    return order if order is not None else VersionOrder(history_ops, by)


# --------------------------------------------------------------------------- helpers
class _Collector:
    def __init__(self, checker: str, max_violations: int):
        self.checker = checker
        self.max = max_violations
        self.violations: list[Violation] = []
        self.total = 0
        self.notes: list[str] = []
        self.unknown = False
        self.skipped = 0

    def add(self, kind: str, key: Any, text: str, ops: Iterable[Op], **details: Any) -> None:
        self.total += 1
        if len(self.violations) < self.max:
            uniq = {id(o): o for o in ops}.values()
            self.violations.append(Violation(self.checker, kind, key, text,
                                             sorted(uniq, key=lambda o: (o.call, str(o.id))), details))

    def result(self, stats: dict) -> CheckResult:
        if self.skipped:
            self.notes.append(f"{self.skipped} observations of values with no place in the version order "
                              "were skipped")
        if self.total > len(self.violations):
            self.notes.append(f"{self.total} violations, the first {len(self.violations)} shown")
        verdict = VIOLATION if self.total else (UNKNOWN if self.unknown else OK_VERDICT)
        stats = dict(stats, violations=self.total)
        return CheckResult(self.checker, verdict, self.violations, self.notes, stats)


def _sessions(ops: list[Op]) -> dict[Any, list[Op]]:
    by_proc: dict[Any, list[Op]] = {}
    for op in ops:
        by_proc.setdefault(op.process, []).append(op)
    return {p: sorted(v, key=lambda o: o.call) for p, v in sorted(by_proc.items(), key=lambda kv: repr(kv[0]))}


def _set_keys(ops: list[Op], kinds: Mapping[Any, str]) -> tuple[set, set]:
    sets = {k for k, kind in kinds.items() if kind == SET}
    with_srem = {op.key for op in ops if op.f in SREM_FS and not op.failed}
    return sets - with_srem, sets & with_srem


def _t0(ops: list[Op]) -> int:
    return min((o.call for o in ops), default=0)


def _who(op: Op) -> str:
    return f"p{op.process}" if isinstance(op.process, int) else str(op.process)


def _at(op: Op, t0: int) -> str:
    node = f" on node {op.node}" if op.node is not None else ""
    return f"{fmt_time(op.call, t0)}{node}"


def _show_writer(order: VersionOrder, key: Any, value: Any, before: float = INF) -> list[Op]:
    """A writer of ``value`` worth showing (the one that completed first), if any."""
    ws = [w for w in order.writers(key, value) if w.call < before] or order.writers(key, value)
    return sorted(ws, key=lambda w: w.ret)[:1]


# --------------------------------------------------------------------------- read your writes
def check_read_your_writes(history: Any, *, order: VersionOrder | None = None, by: str = "auto",
                           max_violations: int = 50) -> CheckResult:
    """A read by process p of key k, invoked after p's own acknowledged write of k returned,
    must return that write's value or a newer one (for sets: contain the members p added)."""
    ops = as_ops(history)
    order = _order(ops, order, by)
    kinds = key_kinds(ops)
    grow_sets, srem_sets = _set_keys(ops, kinds)
    out = _Collector("read-your-writes", max_violations)
    out.notes.extend(order.notes)
    if srem_sets:
        out.notes.append(f"set keys with srem not checked: {sorted(map(repr, srem_sets))}")
    t0 = _t0(ops)
    checked = 0
    for proc, session in _sessions(ops).items():
        own: dict[Any, list[tuple[Any, Op]]] = {}       # key -> frontier of (value, write op)
        added: dict[Any, dict[Any, Op]] = {}            # set key -> member -> sadd op
        for op in session:
            for key, v in observations(op):
                if key in grow_sets and op.f in SREAD_FS:
                    got = members(v)
                    missing = [(m, w) for m, w in added.get(key, {}).items() if w.ret < op.call and m not in got]
                    checked += 1
                    if missing:
                        out.add("read-your-writes", key,
                                f"{_who(op)} read set {key!r} at {_at(op, t0)} without "
                                f"{_short(sorted((m for m, _ in missing), key=repr))}, which it had added "
                                f"itself and had been acknowledged.",
                                [*(w for _, w in missing[:10]), op], process=proc, missing=len(missing))
                    continue
                if order.method(key) is None:
                    continue
                if not order.known(key, v):
                    out.skipped += 1
                    continue
                checked += 1
                for wv, w in own.get(key, []):
                    if w.ret < op.call and order.older(key, v, wv):
                        did = (f"incremented {key!r} to {wv}" if w.f in INCR_FS
                               else f"wrote {_short(wv)} to {key!r}")
                        out.add("read-your-writes", key,
                                f"{_who(op)} {did} (acknowledged at "
                                f"{fmt_time(w.ret, t0)}{'' if w.node is None else ' by node ' + str(w.node)}), "
                                f"then read {_short(freeze(v))} at {_at(op, t0)}: an older version, since "
                                f"{order.why_older(key, v, wv, t0)}.",
                                [w, op, *_show_writer(order, key, v, w.call)], process=proc)
                        break
            if op.ok and op.key is not None:
                if op.key in grow_sets and op.f in SADD_FS:
                    for m in members(op.arg):
                        added.setdefault(op.key, {}).setdefault(m, op)
                    continue
                wv = _written(op)
                if wv is not NO_VERSION and order.known(op.key, wv):
                    front = [(x, o) for x, o in own.get(op.key, []) if not order.older(op.key, x, wv)]
                    own[op.key] = [*front, (wv, op)]
    return out.result({"reads_checked": checked})


# --------------------------------------------------------------------------- monotonic reads
def check_monotonic_reads(history: Any, *, order: VersionOrder | None = None, by: str = "auto",
                          max_violations: int = 50) -> CheckResult:
    """A process's read of key k never returns an older version than a read of k it made
    earlier (for sets: never misses a member an earlier read showed)."""
    ops = as_ops(history)
    order = _order(ops, order, by)
    kinds = key_kinds(ops)
    grow_sets, srem_sets = _set_keys(ops, kinds)
    out = _Collector("monotonic-reads", max_violations)
    out.notes.extend(order.notes)
    if srem_sets:
        out.notes.append(f"set keys with srem not checked: {sorted(map(repr, srem_sets))}")
    t0 = _t0(ops)
    checked = 0
    for proc, session in _sessions(ops).items():
        seen: dict[Any, list[tuple[Any, Op]]] = {}      # key -> frontier of (value, read op)
        seen_members: dict[Any, dict[Any, Op]] = {}     # set key -> member -> first read showing it
        for op in session:
            obs = observations(op)
            for key, v in obs:
                if key in grow_sets and op.f in SREAD_FS:
                    got = members(v)
                    checked += 1
                    missing = [(m, r) for m, r in seen_members.get(key, {}).items() if r.ret < op.call and m not in got]
                    if missing:
                        out.add("monotonic-reads", key,
                                f"{_who(op)} read set {key!r} at {_at(op, t0)} without "
                                f"{_short(sorted((m for m, _ in missing), key=repr))}, which an earlier read "
                                f"of its own ({_at(missing[0][1], t0)}) had shown.",
                                [missing[0][1], op], process=proc, missing=len(missing))
                    continue
                if order.method(key) is None:
                    continue
                if not order.known(key, v):
                    out.skipped += 1
                    continue
                checked += 1
                for pv, r in seen.get(key, []):
                    if r.ret < op.call and order.older(key, v, pv):
                        out.add("monotonic-reads", key,
                                f"{_who(op)} read {_short(pv)} from {key!r} at {_at(r, t0)}, then "
                                f"{_short(freeze(v))} at {_at(op, t0)}: an older version, since "
                                f"{order.why_older(key, v, pv, t0)}.",
                                [r, op, *_show_writer(order, key, v), *_show_writer(order, key, pv)],
                                process=proc)
                        break
            for key, v in obs:
                if key in grow_sets and op.f in SREAD_FS:
                    for m in members(v):
                        seen_members.setdefault(key, {}).setdefault(m, op)
                elif order.method(key) is not None and order.known(key, v):
                    fv = freeze(v)
                    front = [(x, o) for x, o in seen.get(key, []) if not order.older(key, x, fv) and x != fv]
                    seen[key] = [*front, (fv, op)]
    return out.result({"reads_checked": checked})


# --------------------------------------------------------------------------- consistent prefix
def _declared_pairs(ops: list[Op]) -> list[tuple[tuple[Any, Any], tuple[Any, Any], Op | None]]:
    out = []
    for op in ops:
        causes = op.extra.get("causes")
        if not causes or op.failed or op.key is None:
            continue
        if op.f in SADD_FS:
            effects = sorted(members(op.arg), key=repr)
        else:
            v = _written(op)
            effects = [] if v is NO_VERSION else [v]
        for c in causes:
            if isinstance(c, Mapping):
                ck, cv = c.get("key"), c.get("value")
            else:
                ck, cv = c
            for ev in effects:
                out.append(((op.key, ev), (ck, freeze(cv)), op))
    return out


def check_consistent_prefix(history: Any, *, pairs: Iterable[tuple[tuple[Any, Any], tuple[Any, Any]]] = (),
                            order: VersionOrder | None = None, by: str = "auto",
                            max_violations: int = 50) -> CheckResult:
    """Whoever reads an effect and then the cause's key sees the cause (or newer).

    ``pairs``: ((effect key, effect value), (cause key, cause value)); pairs declared in the
    history (``causes`` on a write's invoke) are added."""
    ops = as_ops(history)
    order = _order(ops, order, by)
    kinds = key_kinds(ops)
    t0 = _t0(ops)
    out = _Collector("consistent-prefix", max_violations)
    out.notes.extend(order.notes)
    all_pairs = [((ek, freeze(ev)), (ck, freeze(cv)), None) for (ek, ev), (ck, cv) in pairs]
    all_pairs += _declared_pairs(ops)
    if not all_pairs:
        out.notes.append("no causal pairs declared: nothing to check")
        return out.result({"pairs": 0})
    by_effect: dict[Any, list[tuple[Any, tuple[Any, Any], Op | None]]] = {}
    for (ek, ev), cause, wop in all_pairs:
        by_effect.setdefault(ek, []).append((ev, cause, wop))

    def sees(key: Any, observed: Any, value: Any, exact: bool) -> bool | None:
        """Does an observation include ``value``? None: cannot tell."""
        if kinds.get(key) == SET:
            return value in members(observed)
        o = freeze(observed)
        if o == value:
            return True
        if exact:
            return False
        if not order.known(key, o) or not order.known(key, value):
            return None
        return not order.older(key, o, value)

    checked = 0
    for proc, session in _sessions(ops).items():
        # (effect, cause) -> (writer, the first read that saw the effect)
        pending: dict[tuple, tuple[Op | None, Op]] = {}
        for op in session:
            obs = observations(op)
            new: dict[tuple, tuple[Op | None, Op]] = {}
            for key, v in obs:
                for ev, cause, wop in by_effect.get(key, []):
                    if (key, ev, cause) not in pending and sees(key, v, ev, exact=True):
                        new.setdefault((key, ev, cause), (wop, op))
            for (ek, ev, (ck, cv)), (wop, eread) in [*pending.items(), *new.items()]:
                if eread is not op and not eread.ret < op.call:
                    continue
                for key, v in obs:
                    if key != ck:
                        continue
                    ok = sees(key, v, cv, exact=False)
                    checked += 1
                    if ok is None:
                        out.skipped += 1
                    elif not ok:
                        cause_writer = _show_writer(order, ck, cv) if kinds.get(ck) != SET else \
                            [o for o in ops if o.key == ck and o.f in SADD_FS and cv in members(o.arg)][:1]
                        then = ("the same read returned" if eread is op
                                else f"then, at {_at(op, t0)}, it read")
                        out.add("consistent-prefix", ck,
                                f"{_who(op)} saw {ek}={_short(ev)} at {_at(eread, t0)}, which was written "
                                f"after {ck}={_short(cv)} was seen, and {then} {ck} as "
                                f"{_short(freeze(v))}: it saw the effect without its cause.",
                                [*([wop] if wop else []), *cause_writer, eread, op],
                                process=proc, effect=[ek, ev], cause=[ck, cv])
            pending.update(new)
    return out.result({"pairs": len(all_pairs), "cause_reads_checked": checked})


# --------------------------------------------------------------------------- lost writes
def check_lost_writes(history: Any, *, final_only: bool = True, max_violations: int = 50) -> CheckResult:
    """Counters keep every acknowledged increment (and gain no phantom ones); sets keep
    every acknowledged member (and hold none never added). See the module docstring."""
    ops = as_ops(history)
    kinds = key_kinds(ops)
    t0 = _t0(ops)
    out = _Collector("lost-writes", max_violations)
    grow_sets, srem_sets = _set_keys(ops, kinds)
    if srem_sets:
        out.notes.append(f"set keys with srem not checked: {sorted(map(repr, srem_sets))}")
        out.unknown = True
    reads_by_key: dict[Any, list[tuple[Op, Any]]] = {}
    for op in ops:
        for k, v in observations(op):
            reads_by_key.setdefault(k, []).append((op, v))
    counters = sorted((k for k, kind in kinds.items() if kind == COUNTER), key=repr)
    by_key: dict[Any, list[Op]] = {}
    for op in ops:
        if op.key is not None:
            by_key.setdefault(op.key, []).append(op)
    checked = 0
    for key in counters:
        incrs = [o for o in by_key.get(key, []) if o.f in INCR_FS and not o.failed]
        settled = max((o.ret for o in by_key.get(key, []) if o.f in INCR_FS and o.ret != INF), default=-INF)
        reads = [(r, v) for r, v in reads_by_key.get(key, []) if r.f not in INCR_FS]
        if final_only:
            reads = [(r, v) for r, v in reads if r.call > settled]
        if not reads:
            out.notes.append(f"counter {key!r}: no read after the last acknowledged increment: not checked")
            out.unknown = True
            continue
        for r, v in reads:
            checked += 1
            value = 0 if v is None else int(v)
            definite = [o for o in incrs if o.ok and o.ret < r.call]
            maybe = [o for o in incrs if not (o.ok and o.ret < r.call) and o.call < r.ret]
            base = sum(incr_delta(o) for o in definite)
            lo = base + sum(min(0, incr_delta(o)) for o in maybe)
            hi = base + sum(max(0, incr_delta(o)) for o in maybe)
            if lo <= value <= hi:
                continue
            n_unknown = sum(1 for o in maybe if o.unknown)
            if value < lo:
                seen = [o for o in definite if o.value is not None and int(o.value) > value]
                if all(incr_delta(o) > 0 for o in incrs) and seen:
                    top = max(seen, key=lambda o: int(o.value))
                    out.add("lost-increment", key,
                            f"{_who(top)}'s increment of {key!r} returned {top.value} (acknowledged at "
                            f"{fmt_time(top.ret, t0)}), yet {_who(r)}'s read at {_at(r, t0)} returned {value}: "
                            f"the counter went backwards, so acknowledged increments were lost "
                            f"({len(definite)} acknowledged before the read, expected at least {lo}).",
                            [top, r], read=value, lower=lo, upper=hi, acknowledged=len(definite))
                    continue
                out.add("lost-increment", key,
                        f"{_who(r)} read {key!r} = {value} at {_at(r, t0)}, but {len(definite)} acknowledged "
                        f"increments had completed before it (at least {lo}, at most {hi} with the "
                        f"{len(maybe)} that may also have applied, {n_unknown} of unknown outcome): "
                        f"{lo - value} lost.",
                        [*sorted(definite, key=lambda o: o.ret)[-10:], r],
                        read=value, lower=lo, upper=hi, acknowledged=len(definite), maybe=len(maybe))
            else:
                out.add("phantom-increment", key,
                        f"{_who(r)} read {key!r} = {value} at {_at(r, t0)}, more than the {hi} that "
                        f"every increment invoked before it could give ({len(definite)} acknowledged, "
                        f"{len(maybe)} maybe).", [r], read=value, lower=lo, upper=hi)
    for key in sorted(grow_sets, key=repr):
        adds = [o for o in by_key.get(key, []) if o.f in SADD_FS and not o.failed]
        settled = max((o.ret for o in adds if o.ret != INF), default=-INF)
        reads = [(r, v) for r, v in reads_by_key.get(key, []) if r.f in SREAD_FS]
        if final_only:
            reads = [(r, v) for r, v in reads if r.call > settled]
        if not reads:
            out.notes.append(f"set {key!r}: no smembers after the last acknowledged sadd: not checked")
            out.unknown = True
            continue
        for r, v in reads:
            checked += 1
            got = members(v)
            acked: dict[Any, Op] = {}
            possible: set = set()
            for o in adds:
                for m in members(o.arg):
                    if o.ok and o.ret < r.call:
                        acked.setdefault(m, o)
                    if o.call < r.ret:
                        possible.add(m)
            missing = sorted((m for m in acked if m not in got), key=repr)
            extra = sorted((m for m in got if m not in possible), key=repr)
            if missing:
                out.add("lost-member", key,
                        f"{_who(r)} read set {key!r} at {_at(r, t0)} without {len(missing)} acknowledged "
                        f"member{'s' if len(missing) != 1 else ''}: {_short(missing, 200)}.",
                        [*(acked[m] for m in missing[:10]), r], missing=[_jsonable(m) for m in missing])
            if extra:
                out.add("phantom-member", key,
                        f"{_who(r)} read set {key!r} at {_at(r, t0)} with member"
                        f"{'s' if len(extra) != 1 else ''} {_short(extra, 200)} that no sadd added.",
                        [r], extra=[_jsonable(m) for m in extra])
    return out.result({"counters": len(counters), "sets": len(grow_sets), "reads_checked": checked})


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, frozenset):
        return sorted((_jsonable(x) for x in v), key=repr)
    return v


# --------------------------------------------------------------------------- convergence
def check_convergence(history: Any = None, *, digests: Mapping[Any, Any] | Iterable[tuple[Any, Any]] | None = None,
                      max_keys_shown: int = 10) -> CheckResult:
    """All replica digests (taken after healing) must be equal."""
    ops = as_ops(history) if history is not None else []
    out = _Collector("convergence", 1)
    found: dict[Any, tuple[Any, Op | None]] = {}
    for op in ops:
        if op.f in DIGEST_FS and op.ok:
            found[op.node] = (op.value, op)              # ops are in invocation order: last wins
    if digests is not None:
        items = digests.items() if isinstance(digests, Mapping) else digests
        for node, d in items:
            found[node] = (d, None)
    if len(found) < 2:
        out.notes.append(f"{len(found)} replica digest{'s' if len(found) != 1 else ''}: nothing to compare")
        out.unknown = True
        return out.result({"replicas": len(found)})
    groups: dict[Any, list[Any]] = {}
    for node, (d, _) in found.items():
        groups.setdefault(repr(freeze(d)), []).append(node)
    if len(groups) > 1:
        parts = []
        for nodes in sorted(groups.values(), key=lambda ns: (-len(ns), repr(ns))):
            d = found[nodes[0]][0]
            shown = _short(d, 40) if not isinstance(d, Mapping) else f"{len(d)} key{'s' if len(d) != 1 else ''}"
            parts.append(f"{', '.join(map(str, nodes))}: {shown}")
        text = f"replicas disagree after healing ({len(groups)} different states): " + "; ".join(parts) + "."
        details: dict[str, Any] = {"groups": [[str(n) for n in ns] for ns in groups.values()]}
        states = [d for d, _ in found.values()]
        if all(isinstance(d, Mapping) for d in states):
            keys = sorted({k for d in states for k in d}, key=repr)
            diff = [k for k in keys if len({repr(freeze(d.get(k))) for d in states}) > 1]
            details["differing_keys"] = len(diff)
            shown = []
            for k in diff[:max_keys_shown]:
                per = ", ".join(f"{n}={_short(found[n][0].get(k), 30)}" for n in found)
                shown.append(f"{k!r} ({per})")
            text += f" {len(diff)} key{'s differ' if len(diff) != 1 else ' differs'}: " + "; ".join(shown) + ("; ..." if len(diff) > max_keys_shown else "")
        out.add("divergence", None, text, [op for _, op in found.values() if op is not None], **details)
    return out.result({"replicas": len(found), "distinct": len(groups)})


__all__ = [
    "VersionOrder",
    "check_consistent_prefix",
    "check_convergence",
    "check_lost_writes",
    "check_monotonic_reads",
    "check_read_your_writes",
    "default_token_key",
    "default_value_key",
]
