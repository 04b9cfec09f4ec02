"""Linearizability checking, per key: Wing & Gong's search with Lowe's memoisation (as in
porcupine), for a register (read / write / cas), a counter (incr / read) or a set
(sadd / srem / smembers).

Entry point::

    result = check_linearizability(history, time_limit=60.0)
    result.verdict          # "ok" | "violation" | "unknown"
    for v in result.violations:
        print(v.key, v.explanation)
        for op in v.ops: ...                  # the smallest slice found that shows it

What is checked. Operations are split by key and each key is checked independently (a
history is linearizable iff every key's sub-history is: linearizability is local). Within a
key, the history is linearizable iff there is a total order of its operations that (1)
respects real time: if ``a`` returned before ``b`` was invoked (``a.ret < b.call``,
strictly), ``a`` comes first, and (2) is a legal sequential history of the key's model
starting from the initial state (absent: ``None`` for a register, 0 for a counter, the
empty set for a set). ``ok`` ops must all be in the order; ``fail`` ops are left out;
``info`` ops (outcome unknown) may be placed anywhere after their invocation, or nowhere
(placing them last is the same as leaving them out); an ``info`` read is left out. An
``mget`` is checked as one read per key at the same interval (weaker than an atomic
multi-key read: it may miss a violation that needs atomicity, never report a false one).

How. The search is Wing & Gong / Lowe ("Testing for linearizability", 2017), as in
porcupine: a doubly linked list of call and return entries in time order (at equal times
a call comes before a return, so ops touching in time count as concurrent: the lenient
reading); it linearizes the first call it can, backtracks at a return whose op is not
linearized yet, and caches every (set of linearized ops, model state) configuration
reached, so none is explored twice. Exact refinements (see ``wgl_search``): a read that
fits the current state is taken at once without branching; a configuration is dropped as
soon as some op still needs a state that nothing left can produce (a register read of a
value whose writes are all used up); info writes nobody reads are dropped beforehand.
For registers, cheap tests run first and explain the common cases precisely: a read of a
value never written (fail ops do not count), a read of a value whose every write began
after the read returned, and a stale read (a write that began after every write of the
value read had completed, and itself completed before the read began). For sets, two: a
read of a member no add of it had begun by the read's return, and a read that lacks a
member whose acknowledged add completed before the read began, with no removal of it
invoked by the read's return (thousands of concurrent adds are beyond the search's time
when no order works).

Per key: a short search of the whole key (5% of its time share), which settles almost
every linearizable history; if it runs out, candidate proofs built around the op it got
stuck on (a few value groups, then growing time windows); then the whole key again with
the rest of its share. A proof is shrunk by delta debugging within ``minimize_time``.
Proofs and slices are sub-histories obtained by removing single reads or whole register
"value groups" (every write, read and cas of one value, joined through cas): such removals
keep a linearizable history linearizable, so a sub-history that cannot be linearized
proves the whole history cannot. The slice is searched again for its longest
linearizable prefix and the op that cannot be placed after it, which the explanation
states. For counters and sets only reads are removable, so their slices keep every update.

Limits. The search is exponential in the worst case: in the number of operations
concurrent at any instant, and in ``info`` operations (open to the end). Measured on
simulated register histories of 3000-5000 ops on one key: 5-20 concurrent clients with
some info ops, linearizable, in 0.2-2 s; a violation late in such a history proven with a
4-5 op slice in a few seconds. ``time_limit`` (whole check) and ``max_states`` (cached
configurations per search) bound the work: a key that runs out is ``unknown``, never
silently ok. Values unique per write give the most precise explanations and the smallest
slices; correctness does not depend on it. Reads of a multi-key ``mget`` are checked per
key (see above). Deletes and expiry are not modelled.
"""

from __future__ import annotations

import abc
import bisect
import gc
import math
import time as _time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from .history import (
    CAS_FS,
    COUNTER,
    DIGEST_FS,
    INCR_FS,
    INF,
    MIXED,
    MREAD_FS,
    READ_FS,
    SADD_FS,
    SET,
    SREAD_FS,
    SREM_FS,
    WRITE_FS,
    Op,
    _short,
    as_ops,
    freeze,
    key_kinds,
    members,
    observations,
)
from .result import (
    OK_VERDICT,
    UNKNOWN,
    VIOLATION,
    CheckResult,
    Violation,
    combine_verdicts,
    fmt_time,
    op_ref,
)

CHECKER = "linearizability"


class _Reject:
    def __repr__(self) -> str:
        return "REJECT"


#: What a step function returns when an op cannot take effect in a state.
REJECT: Any = _Reject()


# --------------------------------------------------------------------------- models
class Model(abc.ABC):
    """A sequential specification. States must be hashable and compared by equality.

    ``compile(op)`` returns a function ``state -> new state | REJECT`` for one op. For an op
    with unknown outcome (``info``) the function must never return ``REJECT``: the op either
    took effect here (with whatever output) or did not take effect at all."""

    name = "model"
    fs: frozenset = frozenset()

    @abc.abstractmethod
    def init(self) -> Any:
        """The state before any operation."""

    def keeps(self, op: Op) -> bool:
        """Whether ``op`` (ok or info; fail ops are already gone) takes part in the search."""
        return op.f in self.fs and (op.ok or not self.is_read(op))

    def is_read(self, op: Op) -> bool:
        return op.f in READ_FS

    @abc.abstractmethod
    def compile(self, op: Op) -> Callable[[Any], Any]:
        """The step function of ``op``: ``state -> new state | REJECT``."""

    def describe(self, state: Any) -> str:
        return _short(state)

    def why(self, state: Any, op: Op) -> str | None:
        """Why ``op`` cannot take effect in ``state`` (None if it could)."""
        return None

    def needs(self, op: Op) -> Any:
        """Optional pruning hook: the state ``op`` can only take effect in (REJECT: none).
        Together with ``produces`` it lets the search drop a configuration in which some op
        still needs a state that differs from the current one and that no remaining op can
        produce."""
        return REJECT

    def produces(self, op: Op) -> Any:
        """Optional pruning hook: the one state ``op`` may leave behind (REJECT: unknown)."""
        return REJECT

    def observes(self, op: Op) -> tuple:
        """Optional pruning hook, with ``optional_tokens``: the tokens whose presence in the
        state ``op`` looks at (a register read: the value it read; a cas: the value it
        expects; a set read: the members it returned). Every op that looks at a token an
        optional op adds must list it."""
        return ()

    def optional_tokens(self, op: Op) -> tuple | None:
        """Optional pruning hook: for an op whose only effect is to put these tokens in the
        state whatever it was (a register write: its value; a set add: its members), the
        tokens; None otherwise. An ``info`` op of this kind that no op left observes any
        token of can be left out of a linearization: whatever it put in the state is gone
        or unlooked-at before any op left looks."""
        return None


class RegisterModel(Model):
    """read / write / cas on one value; ``initial`` is the value of an absent key."""

    name = "register"
    fs = READ_FS | WRITE_FS | CAS_FS

    def __init__(self, initial: Any = None):
        self.initial = initial

    def init(self) -> Any:
        return self.initial

    def compile(self, op: Op):
        if op.f in READ_FS:
            v = freeze(op.value)
            return lambda s: s if s == v else REJECT
        if op.f in WRITE_FS:
            v = freeze(op.arg)
            return lambda s: v
        exp, new = _cas_arg(op)
        if op.ok:
            return lambda s: new if s == exp else REJECT
        return lambda s: new if s == exp else s

    def needs(self, op):
        if op.ok and op.f in READ_FS:
            return freeze(op.value)
        if op.ok and op.f in CAS_FS:
            return _cas_arg(op)[0]
        return REJECT

    def produces(self, op):
        if op.f in WRITE_FS:
            return freeze(op.arg)
        if op.f in CAS_FS:
            return _cas_arg(op)[1]
        return REJECT

    def observes(self, op):
        if op.f in READ_FS:
            return (freeze(op.value),)
        if op.f in CAS_FS:
            return (_cas_arg(op)[0],)   # an ok cas needs it; an info cas acts only in it
        return ()

    def optional_tokens(self, op):
        return (freeze(op.arg),) if op.f in WRITE_FS else None

    def why(self, state, op):
        if op.f in READ_FS and freeze(op.value) != state:
            return f"it read {_short(op.value)} but the register holds {_short(state)}"
        if op.f in CAS_FS and op.ok and _cas_arg(op)[0] != state:
            return f"it expected {_short(_cas_arg(op)[0])} but the register holds {_short(state)}"
        return None


def _cas_arg(op: Op) -> tuple[Any, Any]:
    a = op.arg
    if not isinstance(a, (list, tuple)) or len(a) != 2:
        raise ValueError(f"cas value must be [expected, new]: {op.describe()}")
    return freeze(a[0]), freeze(a[1])


class CounterModel(Model):
    """incr (arg: delta, default 1; ok value: the counter after it) and read (absent = 0)."""

    name = "counter"
    fs = READ_FS | INCR_FS

    def __init__(self, initial: int = 0):
        self.initial = initial

    def init(self):
        return self.initial

    def compile(self, op: Op):
        if op.f in READ_FS:
            v = 0 if op.value is None else int(op.value)
            return lambda s: s if s == v else REJECT
        d = 1 if op.arg is None else int(op.arg)
        if op.ok and op.value is not None:
            r = int(op.value)
            return lambda s: r if s + d == r else REJECT
        return lambda s: s + d

    def why(self, state, op):
        if op.f in READ_FS:
            v = 0 if op.value is None else int(op.value)
            if v != state:
                return f"it read {v} but the counter is {state}"
        elif op.ok and op.value is not None:
            d = 1 if op.arg is None else int(op.arg)
            if state + d != int(op.value):
                return f"it returned {op.value} but the counter would become {state + d}"
        return None


class SetModel(Model):
    """sadd / srem (a member or a list) and smembers (or read) returning all members."""

    name = "set"
    fs = SADD_FS | SREM_FS | SREAD_FS | READ_FS

    def init(self):
        return frozenset()

    def is_read(self, op):
        return op.f in SREAD_FS or op.f in READ_FS

    def compile(self, op: Op):
        if self.is_read(op):
            v = members(op.value)
            return lambda s: s if s == v else REJECT
        m = members(op.arg)
        if op.f in SADD_FS:
            return lambda s: s | m
        return lambda s: s - m

    def describe(self, state):
        return _short(state, 120)

    def observes(self, op):
        # a read looks at every member's presence; only the ones it returned can be what an
        # add put there (a member it did not return must be absent, which an add never helps)
        return tuple(members(op.value)) if self.is_read(op) else ()

    def optional_tokens(self, op):
        return tuple(members(op.arg)) if op.f in SADD_FS else None

    def why(self, state, op):
        if self.is_read(op):
            v = members(op.value)
            if v != state:
                parts = []
                if state - v:
                    parts.append(f"missing {_short(state - v)}")
                if v - state:
                    parts.append(f"with extra {_short(v - state)}")
                return f"it read {_short(v)} ({', '.join(parts)}) but the set holds {_short(state)}"
        return None


def model_for_kind(kind: str) -> Model | None:
    if kind == COUNTER:
        return CounterModel()
    if kind == SET:
        return SetModel()
    if kind == MIXED:
        return None
    return RegisterModel()


# --------------------------------------------------------------------------- the search
@dataclass
class Search:
    """Outcome of one Wing-Gong-Lowe search over a list of ops.

    ``status``: ok / violation / unknown. On ok, ``linearization`` is a witness order (ops,
    including the ``info`` ops it placed). On violation, ``prefix`` is the longest
    linearizable prefix found (in order), ``state`` the model state after it, ``stuck`` the
    op that had to take effect next and could not."""

    status: str
    linearization: list[Op] = field(default_factory=list)
    prefix: list[Op] = field(default_factory=list)
    state: Any = None
    stuck: Op | None = None
    states: int = 0
    reason: str = ""


def wgl_search(ops: list[Op], model: Model, deadline: float = INF, max_states: int = 1_000_000) -> Search:
    """Search for a linearization of ``ops`` (ok and info ops of one key; see ``Model``).

    Refinements over the plain algorithm, all exact (they never change the verdict):
    (1) a read-only op that can take effect in the current configuration is taken at once
    and never branched on (it leaves the state as it is and is minimal in real time, so a
    linearization that places it later can place it now); when it is backtracked its
    configuration is abandoned too; (2) a configuration is abandoned as soon as some op not
    yet linearized needs a state (``Model.needs``) other than the current one that no op
    left can produce (``Model.produces``); (3) the cache key is (index below which every ok
    op is linearized, the bits above it, the bits of info ops, state), which keeps cached
    sets small on long histories; (4) an info op that only adds tokens to the state (a
    register write, a set add) which no op left observes is never placed, and
    configurations that differ only in such ops are one in the cache (see ``_wgl``)."""
    was_enabled = gc.isenabled()
    gc.disable()      # millions of small tuples: full collections would dominate
    try:
        return _wgl(sorted(ops, key=lambda o: o.call), model, deadline, max_states)
    finally:
        if was_enabled:
            gc.enable()


def _wgl(ops: list[Op], model: Model, deadline: float, max_states: int) -> Search:
    n = len(ops)
    steps = [model.compile(op) for op in ops]
    readonly = [model.is_read(op) for op in ops]
    required = [not op.unknown for op in ops]
    remaining = sum(required)
    if remaining == 0:
        return Search(OK_VERDICT, linearization=[])
    needs = [model.needs(op) for op in ops]
    prods = [model.produces(op) for op in ops]
    needers: dict[Any, int] = {}
    producers: dict[Any, int] = {}
    for i in range(n):
        if needs[i] is not REJECT:
            needers[needs[i]] = needers.get(needs[i], 0) + 1
        if prods[i] is not REJECT:
            producers[prods[i]] = producers.get(prods[i], 0) + 1
    starving = {v for v, c in needers.items() if c and not producers.get(v)}
    # ok ops and info ops get bits in separate sets, each in invocation order
    okbit = [0] * n
    infobit = [0] * n
    nok = ninfo = 0
    for i in range(n):
        if required[i]:
            okbit[i] = 1 << nok
            nok += 1
        else:
            infobit[i] = 1 << ninfo
            ninfo += 1
    # (4) an info op whose only effect is to put some tokens in the state (a register
    # write's value, a set add's members: Model.optional_tokens) is "useless" once no op
    # left observes any of them (Model.observes): it can only be left out (what it put in
    # the state is overwritten or never looked at before any op left looks). Useless ops
    # (their bits in ``umask``) are never taken, and configurations that differ only in
    # them are one in the cache. An observer goes away only when it is taken, so a useless
    # op stays useless below in the search.
    obs = [model.observes(op) for op in ops]
    watchers: dict[Any, int] = {}
    for i in range(n):
        for t in obs[i]:
            watchers[t] = watchers.get(t, 0) + 1
    opt: list = [None] * n
    opt_by: dict[Any, list[int]] = {}
    for i in range(n):
        if not required[i]:
            ts = model.optional_tokens(ops[i])
            if ts:
                opt[i] = ts
                for t in ts:
                    opt_by.setdefault(t, []).append(i)
    umask = 0
    for i in range(n):
        if opt[i] and not any(watchers.get(t) for t in opt[i]):
            umask |= infobit[i]

    def rewatch(t: Any) -> None:
        """Token t's watchers went to or from zero: recompute the ops that add it."""
        nonlocal umask
        for i in opt_by.get(t, ()):
            if any(watchers.get(u) for u in opt[i]):
                umask &= ~infobit[i]
            else:
                umask |= infobit[i]

    ents = []
    for i, op in enumerate(ops):
        ents.append((op.call, 0, i))
        if op.ret != INF:
            ents.append((op.ret, 1, i))
    ents.sort()
    m = len(ents)
    END = -1
    HEAD = m
    nxt = list(range(1, m + 1))
    nxt[m - 1] = END
    nxt.append(0)
    prv = [HEAD, *range(0, m - 1), END]
    is_call = [k == 0 for _, k, _ in ents]
    eop = [i for _, _, i in ents]
    ret_of = [-1] * n
    for j, (_, k, i) in enumerate(ents):
        if k == 1:
            ret_of[i] = j
    match = [ret_of[i] if k == 0 else -1 for _, k, i in ents]

    def take(e: int) -> None:
        """Lift call entry e (and its return) out of the list; update the pruning counts."""
        p, q = prv[e], nxt[e]
        nxt[p] = q
        if q != END:
            prv[q] = p
        r = match[e]
        if r != -1:
            p, q = prv[r], nxt[r]
            nxt[p] = q
            if q != END:
                prv[q] = p
        i = eop[e]
        v = needs[i]
        if v is not REJECT:
            needers[v] -= 1
            if not needers[v]:
                starving.discard(v)
        v = prods[i]
        if v is not REJECT:
            producers[v] -= 1
            if not producers[v] and needers.get(v):
                starving.add(v)
        for t in obs[i]:
            watchers[t] -= 1
            if not watchers[t] and t in opt_by:
                rewatch(t)

    def untake(e: int) -> None:
        i = eop[e]
        for t in obs[i]:
            watchers[t] += 1
            if watchers[t] == 1 and t in opt_by:
                rewatch(t)
        v = prods[i]
        if v is not REJECT:
            producers[v] += 1
            starving.discard(v)
        v = needs[i]
        if v is not REJECT:
            needers[v] += 1
            if not producers.get(v):
                starving.add(v)
        r = match[e]
        if r != -1:
            nxt[prv[r]] = r
            if nxt[r] != END:
                prv[nxt[r]] = r
        nxt[prv[e]] = e
        if nxt[e] != END:
            prv[nxt[e]] = e

    state = model.init()
    oks = 0        # bits of linearized ok ops
    infos = 0      # bits of linearized info ops
    cache: set = set()
    # the stack is a persistent linked list of frames (call entry, state before, forced,
    # parent, depth), so the deepest configuration is remembered in O(1)
    top: tuple | None = None
    best: tuple = (-1, None, state, -1, frozenset())   # depth, frame, state, return entry, starving
    iterations = 0
    fresh = True          # a new configuration: check it, and look for a read to force first
    e = nxt[HEAD]
    while remaining:
        iterations += 1
        if not iterations & 1023:
            if _time.monotonic() > deadline:
                return _failed(ops, eop, needs, best, len(cache), UNKNOWN, "time limit")
            if len(cache) > max_states:
                return _failed(ops, eop, needs, best, len(cache), UNKNOWN, f"more than {max_states} states")
        dead = False
        if fresh:
            fresh = False
            j = nxt[HEAD]
            while j != END and is_call[j]:
                i = eop[j]
                if readonly[i] and steps[i](state) is not REJECT:
                    no, ni = oks | okbit[i], infos | infobit[i]
                    tz = ((~no) & (no + 1)).bit_length() - 1
                    k = (tz, no >> tz, ni | umask, state)
                    if k in cache:
                        dead = True          # explored before and failed: so does this one
                    else:
                        cache.add(k)
                        top = (j, state, True, top, top[4] + 1 if top else 1)
                        oks, infos = no, ni
                        if required[i]:
                            remaining -= 1
                        take(j)
                        fresh = True
                        e = nxt[HEAD]
                    break
                j = nxt[j]
            if fresh:
                continue
            if starving and (len(starving) > 1 or state not in starving):
                dead = True
        if not dead and e != END and is_call[e]:
            i = eop[e]
            if not readonly[i] and not infobit[i] & umask:
                ns = steps[i](state)
                if ns is not REJECT:
                    no, ni = oks | okbit[i], infos | infobit[i]
                    tz = ((~no) & (no + 1)).bit_length() - 1
                    k = (tz, no >> tz, ni | umask, ns)
                    if k not in cache:
                        cache.add(k)
                        top = (e, state, False, top, top[4] + 1 if top else 1)
                        state = ns
                        oks, infos = no, ni
                        if required[i]:
                            remaining -= 1
                        take(e)
                        fresh = True
                        e = nxt[HEAD]
                        continue
            e = nxt[e]
            continue
        # a return entry (or the end, or a dead configuration): backtrack
        depth = top[4] if top else 0
        if depth > best[0]:
            best = (depth, top, state, e if not dead else -1, frozenset(starving) if dead else frozenset())
        while True:
            if top is None:
                return _failed(ops, eop, needs, best, len(cache))
            e, state, forced, top = top[0], top[1], top[2], top[3]
            i = eop[e]
            oks &= ~okbit[i]
            infos &= ~infobit[i]
            if required[i]:
                remaining += 1
            untake(e)
            if not forced:
                break
        e = nxt[e]
    return Search(OK_VERDICT, linearization=[ops[eop[j]] for j in _frames(top)], states=len(cache))


def _frames(top: tuple | None) -> list[int]:
    out = []
    while top is not None:
        out.append(top[0])
        top = top[3]
    out.reverse()
    return out


def _failed(ops, eop, needs, best, states, status=VIOLATION, reason="") -> Search:
    """A violation (or a search given up), from the deepest configuration reached: its
    prefix, its state, and the op stuck after it: the op whose return forced backtracking
    or, in a dead configuration, the first-returning op that needs a state nothing left can
    produce."""
    depth, frame, state, e, starving = best
    if depth < 0:
        return Search(status, states=states, reason=reason)
    prefix = [eop[j] for j in _frames(frame)]
    if e >= 0:
        stuck = eop[e]
    else:
        done = set(prefix)
        cands = [i for i in range(len(ops))
                 if i not in done and needs[i] in starving and needs[i] != state]
        stuck = min(cands, key=lambda i: ops[i].ret) if cands else -1
    return Search(status, prefix=[ops[i] for i in prefix], state=state,
                  stuck=ops[stuck] if stuck >= 0 else None, states=states, reason=reason)


# --------------------------------------------------------------------------- register pruning
def _writes_value(op: Op) -> Any:
    """The value a register op installs (write arg, cas new), or REJECT for reads."""
    if op.f in WRITE_FS:
        return freeze(op.arg)
    if op.f in CAS_FS:
        return _cas_arg(op)[1]
    return REJECT


def _observed_value(op: Op) -> Any:
    """The value an ok register op observed (read value, cas expected), or REJECT."""
    if not op.ok:
        return REJECT
    if op.f in READ_FS:
        return freeze(op.value)
    if op.f in CAS_FS:
        return _cas_arg(op)[0]
    return REJECT


def _drop_unread_info_writes(ops: list[Op]) -> list[Op]:
    """Drop info writes / cas whose value nothing observes (no ok read of it, no cas, ok or
    info, expecting it): placing such an op last, i.e. never, is always as good. Repeated,
    since dropping an info cas can leave the value it expected unobserved in turn."""
    while True:
        seen = {v for v in map(_observed_value, ops) if v is not REJECT}
        seen |= {_cas_arg(op)[0] for op in ops if op.f in CAS_FS}
        kept = [op for op in ops if not (op.unknown and _writes_value(op) not in seen)]
        if len(kept) == len(ops):
            return kept
        ops = kept


def _set_quick(key: Any, ops: list[Op], t0: int) -> _Quick | None:
    """Cheap, sound set tests, as the register ones: a read that returned a member no add of
    it began before the read returned; a read that lacks a member whose add had completed
    before the read began, with no removal of that member that could come in between. (The
    search finds these too, but on a set key of thousands of adds proving that no order
    works can take longer than the time limit.)"""
    adds: dict[Any, list[Op]] = {}
    first_rem: dict[Any, float] = {}      # member -> the earliest invocation of a removal of it
    for op in ops:
        if op.f in SADD_FS:
            for m in members(op.arg):
                adds.setdefault(m, []).append(op)
        elif op.f in SREM_FS:
            for m in members(op.arg):
                first_rem[m] = min(first_rem.get(m, INF), op.call)
    done: list[tuple[float, Any, Op]] = []   # (return, member, add) of acknowledged adds, by return
    for m, al in adds.items():
        oks = [a for a in al if a.ok]
        if oks:
            a = min(oks, key=lambda o: o.ret)
            done.append((a.ret, m, a))
    done.sort(key=lambda d: d[0])
    rets = [d[0] for d in done]
    for r in ops:                       # in invocation order: the first violation found is reported
        if not (r.ok and (r.f in SREAD_FS or r.f in READ_FS)):
            continue
        got = members(r.value)
        for _ret, m, a in done[:bisect.bisect_left(rets, r.call)]:
            if m not in got and first_rem.get(m, INF) > r.ret:
                return _Quick("lost-member", [a, r],
                              f"{r.describe()} (invoked at {fmt_time(r.call, t0)}) did not return {_short(m)}, "
                              f"but {a.describe()} had completed at {fmt_time(a.ret, t0)}, before the read "
                              f"began, and nothing removes {_short(m)}: an acknowledged add is missing.")
        for m in sorted(got, key=repr):
            if not any(a.call <= r.ret for a in adds.get(m, ())):
                return _Quick("never-added", [r],
                              f"{r.describe()} returned {_short(m)}, which no operation had begun to add "
                              f"to {key!r} when the read returned.")
    return None


@dataclass
class _Quick:
    kind: str
    ops: list[Op]
    text: str


def _register_quick(key: Any, ops: list[Op], initial: Any, t0: int) -> _Quick | None:
    """Cheap, sound register tests; returns the earliest (by invoke) violation found."""
    writers: dict[Any, list[Op]] = {}
    for op in ops:
        v = _writes_value(op)
        if v is not REJECT:
            writers.setdefault(v, []).append(op)
    fin = sorted((op for op in ops if op.ok and _writes_value(op) is not REJECT), key=lambda o: o.ret)
    rets = [o.ret for o in fin]
    # best[k]: among fin[:k+1], the writer invoked last (b1) and the writer invoked last
    # among those whose value differs from b1's (b2)
    best: list[tuple[Op, Op | None]] = []
    b1: Op | None = None
    b2: Op | None = None
    for o in fin:
        if b1 is None or o.call > b1.call:
            if b1 is not None and _writes_value(b1) != _writes_value(o):
                b2 = b1
            b1 = o
        elif _writes_value(o) != _writes_value(b1) and (b2 is None or o.call > b2.call):
            b2 = o
        best.append((b1, b2))

    for op in ops:                      # in invocation order: the first violation found is reported
        x = _observed_value(op)
        if x is REJECT:
            continue
        ws = writers.get(x, [])
        what = "read" if op.f in READ_FS else "cas"
        if not ws and x != initial:
            return _Quick("never-written", [op],
                          f"{op.describe()} observed {_short(x)}, a value no operation ever wrote to "
                          f"{key!r} (and not its initial value {_short(initial)}).")
        if x != initial and min(w.call for w in ws) > op.ret:
            first = min(ws, key=lambda w: w.call)
            return _Quick("future-read", [op, first],
                          f"{op.describe()} returned at {fmt_time(op.ret, t0)} with {_short(x)}, but the "
                          f"first write of {_short(x)} ({first.describe()}) was only invoked at "
                          f"{fmt_time(first.call, t0)}, after the {what} had returned.")
        last_x = max((w.ret for w in ws), default=-INF)
        k = bisect.bisect_left(rets, op.call)
        if last_x == INF or k == 0:
            continue
        c1, c2 = best[k - 1]
        cand = c1 if _writes_value(c1) != x else c2
        if cand is None or not cand.call > last_x:
            continue
        if ws:
            prior = f"after every write of {_short(x)} had completed (the last at {fmt_time(last_x, t0)})"
        else:
            prior = f"and {_short(x)} is only the initial value"
        text = (f"{op.describe()} (invoked at {fmt_time(op.call, t0)}) observed {_short(x)}, "
                f"but {cand.describe()} had already completed at {fmt_time(cand.ret, t0)}, "
                f"before the {what} began; that write was invoked at {fmt_time(cand.call, t0)}, "
                f"{prior}: the {what} saw a value that had already been overwritten.")
        if len(ws) > 5:
            text += f" ({len(ws)} writes of {_short(x)}; the last 5 to complete are shown.)"
        shown = sorted(ws, key=lambda w: w.ret)[-5:]
        return _Quick("stale-read", [*shown, cand, op], text)
    return None


# --------------------------------------------------------------------------- windows and shrinking
# A sub-history obtained by removing (a) single reads, or (b) a whole register "value group"
# (every op writing, reading or cas-ing the value, joined through cas), is linearizable
# whenever the history is. So if such a sub-history cannot be linearized, neither can the
# history: the sub-history is a proof, and a small one is the slice a violation reports.

def _groups(ops: list[Op], model: Model) -> list[tuple[list[int], list[int]]]:
    """Removal units: (ops removable only with the whole group, reads removable alone)."""
    if not isinstance(model, RegisterModel):
        reads = [i for i, op in enumerate(ops) if model.is_read(op)]
        rs = set(reads)
        return [([i for i in range(len(ops)) if i not in rs], reads)]
    return list(_value_groups(ops)[0].values())


def _value_groups(ops: list[Op]) -> tuple[dict[Any, tuple[list[int], list[int]]], Callable[[Any], Any]]:
    """Register ops by value group: {root value: (writer indices, read indices)}, and the
    function from a value to its group's root (values joined through cas)."""
    parent: dict[Any, Any] = {}

    def find(v):
        while parent.setdefault(v, v) != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v

    for op in ops:
        if op.f in CAS_FS:
            a, b = _cas_arg(op)
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[ra] = rb
    groups: dict[Any, tuple[list[int], list[int]]] = {}
    for i, op in enumerate(ops):
        if op.f in READ_FS:
            groups.setdefault(find(freeze(op.value)), ([], []))[1].append(i)
        else:
            groups.setdefault(find(_writes_value(op)), ([], []))[0].append(i)
    return groups, find


def _focused_proof(ops: list[Op], s: Search, deadline: float,
                   max_states: int) -> tuple[list[Op], Search] | None:
    """Register only: candidate proofs made of few value groups: those of the stuck op, of
    the state it met, and of the last m ops of the deepest prefix (m = 0, 1, 2, 4, ...),
    with their reads that overlap the time from the first of those ops to the stuck op's
    return. Far cheaper than a time window when many writes run concurrently."""
    if s.stuck is None or not ops:
        return None
    groups, find = _value_groups(ops)
    index = {id(o): i for i, o in enumerate(ops)}
    if id(s.stuck) not in index:
        return None

    def group_of(op: Op) -> Any:
        return find(freeze(op.value) if op.f in READ_FS else _writes_value(op))

    hi = s.stuck.ret
    m = 0
    tried: set = set()
    while _time.monotonic() < deadline:
        tail = s.prefix[len(s.prefix) - m:] if m else []
        chosen = {group_of(s.stuck), find(freeze(s.state))} | {group_of(o) for o in tail}
        lo = min([s.stuck.call, *(o.call for o in tail)])
        key = (frozenset(chosen), lo)
        if key not in tried:
            tried.add(key)
            keep = {index[id(s.stuck)]}
            for g in chosen:
                writers, reads = groups.get(g, ([], []))
                keep.update(writers)
                keep.update(i for i in reads if ops[i].call <= hi and ops[i].ret >= lo)
            sub = _drop_unread_info_writes([ops[i] for i in sorted(keep)])
            r = wgl_search(sub, RegisterModel(), deadline, max_states)
            if r.status == VIOLATION:
                return sub, r
        if m >= len(s.prefix):
            return None
        m = max(1, 2 * m)
    return None


def _ddmin(units: list[list[int]], fixed: list[int], fails: Callable[[list[int]], bool],
           deadline: float) -> list[list[int]]:
    """Delta debugging by complement removal: a list of units that still fails, 1-minimal
    if time allows (removing any single unit would make it pass)."""
    n = 2
    while len(units) >= 2 and _time.monotonic() < deadline:
        size = math.ceil(len(units) / n)
        chunks = [units[i:i + size] for i in range(0, len(units), size)]
        for c in range(len(chunks)):
            cand = [u for j, ch in enumerate(chunks) if j != c for u in ch]
            if fails(fixed + [i for u in cand for i in u]):
                units = cand
                n = max(n - 1, 2)
                break
            if _time.monotonic() >= deadline:
                return units
        else:
            if n >= len(units):
                break
            n = min(len(units), 2 * n)
    return units


def _shrink(ops: list[Op], model: Model, deadline: float, max_states: int) -> list[Op]:
    """ddmin over value groups, then over single reads; every step keeps a proof."""
    def fails(idx: list[int]) -> bool:
        sub = [ops[i] for i in sorted(idx)]
        return wgl_search(sub, model, deadline, max_states).status == VIOLATION

    groups = _groups(ops, model)
    if isinstance(model, RegisterModel):
        kept = _ddmin([g[0] + g[1] for g in groups], [], fails, deadline)
        keep = {i for u in kept for i in u}
    else:
        keep = set(range(len(ops)))
    reads = [i for g in groups for i in g[1] if i in keep]
    rs = set(reads)
    others = [i for i in sorted(keep) if i not in rs]
    kept_reads = _ddmin([[i] for i in reads], others, fails, deadline)
    return [ops[i] for i in sorted(others + [u[0] for u in kept_reads])]


def _window_proof(ops: list[Op], model: Model, around: Op | None, deadline: float,
                  max_states: int) -> tuple[list[Op], Search] | None:
    """Search growing time windows that end where ``around`` (the op the search got stuck
    on) returned; a window keeps every group with an op overlapping it (its reads only
    those overlapping). Returns the first window that cannot be linearized, with its search."""
    if around is None or not ops:
        return None
    ops = sorted(ops, key=lambda o: o.call)
    hi = around.ret if around.ret != INF else max(o.call for o in ops)
    upto = bisect.bisect_right([o.call for o in ops], hi)
    groups = _groups(ops, model)
    k = 16
    while _time.monotonic() < deadline:
        lo = ops[max(0, upto - k)].call
        keep: list[int] = []
        for fixed, reads in groups:
            near = [i for i in reads if ops[i].call <= hi and ops[i].ret >= lo]
            if near or any(ops[i].call <= hi and ops[i].ret >= lo for i in fixed) \
                    or not isinstance(model, RegisterModel):
                keep.extend(fixed)
                keep.extend(near)
        sub = [ops[i] for i in sorted(keep)]
        if isinstance(model, RegisterModel):
            sub = _drop_unread_info_writes(sub)
        s = wgl_search(sub, model, deadline, max_states)
        if s.status == VIOLATION:
            return sub, s
        if k >= upto:
            return None
        k *= 2
    return None


def _split_by_key(ops: Iterable[Op]) -> tuple[dict[Any, list[Op]], int]:
    per: dict[Any, list[Op]] = {}
    expanded = 0
    for op in ops:
        if op.failed or op.f in DIGEST_FS:
            continue
        if op.f in MREAD_FS:
            if op.ok:
                for k, v in observations(op):
                    per.setdefault(k, []).append(replace(op, f="read", key=k, value=v, arg=None))
                    expanded += 1
            continue
        if op.key is None:
            continue
        per.setdefault(op.key, []).append(op)
    return per, expanded


def _explain(key: Any, model: Model, n: int, s: Search, t0: int, lead: str = "") -> str:
    if lead:
        parts = [lead, f"(These {n} operations alone cannot be linearized.)"]
    else:
        parts = [f"The {n} operations below on key {key!r} cannot be linearized: no order of them that "
                 f"respects real time (an op that returned before another was invoked comes first) "
                 f"is a legal {model.name} history from {model.describe(model.init())}."]
    if s.prefix:
        parts.append(f"Longest linearizable prefix: {'; '.join(o.describe() for o in s.prefix)}; "
                     f"after it the {model.name} holds {model.describe(s.state)}.")
    else:
        parts.append(f"No operation can even go first from {model.describe(s.state)}.")
    if s.stuck is not None:
        why = model.why(s.state, s.stuck)
        parts.append(f"Then {s.stuck.describe()} (invoked {fmt_time(s.stuck.call, t0)}, returned "
                     f"{fmt_time(s.stuck.ret, t0)}) must take effect before it returns, and cannot"
                     + (f": {why}" if why else "")
                     + "; no other order of the operations that may precede it does better.")
    return " ".join(parts)


def check_linearizability(history: Any, *, keys: Iterable[Any] | None = None,
                          model: Model | Callable[[Any], Model | None] | None = None,
                          time_limit: float = 60.0, max_states: int = 2_000_000,
                          minimize: bool = True, minimize_time: float = 10.0) -> CheckResult:
    """Check each key's sub-history for linearizability (see the module docstring).

    ``model``: None picks one per key from the operations on it (register / counter / set;
    a key mixing kinds is reported unknown), or a ``Model`` for every key, or a function
    ``key -> Model | None`` (None skips the key). ``time_limit`` bounds the searches of the
    whole check; each key gets an equal share of what is left when its turn comes.
    ``minimize_time`` is spent per violation shrinking its slice, on top of ``time_limit``.
    ``max_states`` caps the configurations cached by one search (memory). A key that ran
    out of its share is searched once more at the end, with the time the other keys left
    (they usually need a fraction of theirs): one hard key among easy ones then gets most
    of the budget instead of 1/n of it."""
    started = _time.monotonic()
    deadline = started + time_limit
    ops = as_ops(history)
    per_key, expanded = _split_by_key(ops)
    kinds = key_kinds(ops)
    wanted = None if keys is None else set(keys)
    todo = [k for k in sorted(per_key, key=repr) if wanted is None or k in wanted]
    violations: list[Violation] = []
    notes: list[str] = []
    verdicts: list[str] = []
    per_key_stats: dict[str, dict] = {}
    gave_up: list = []     # (index in verdicts, key, model) of keys that ran out of their share
    t0 = min((o.call for o in ops), default=0)

    def search(key, mdl: Model, sharing: int) -> tuple[str, Violation | None, dict]:
        """One key's search, with an equal share of the time left among ``sharing`` keys."""
        now = _time.monotonic()
        key_deadline = now + max(0.0, deadline - now) / sharing
        out = _check_key(key, [op for op in per_key[key] if mdl.keeps(op)], mdl, key_deadline, max_states,
                         minimize, minimize_time, t0)
        out[2]["budget_s"] = round(key_deadline - now, 3)
        return out

    if expanded:
        notes.append(f"{expanded} mget results checked as independent single-key reads")
    for n_done, key in enumerate(todo):
        if model is None:
            mdl = model_for_kind(kinds.get(key, "register"))
            if mdl is None:
                notes.append(f"key {key!r} mixes register, counter and set operations: not checked")
                verdicts.append(UNKNOWN)
                continue
        elif isinstance(model, Model):
            mdl = model
        else:
            mdl = model(key)
            if mdl is None:
                continue
        skipped = sum(1 for op in per_key[key] if op.f not in mdl.fs)
        if skipped:
            notes.append(f"key {key!r}: {skipped} operations the {mdl.name} model does not know were ignored")
        verdict, violation, stat = search(key, mdl, len(todo) - n_done)
        per_key_stats[repr(key)] = stat
        verdicts.append(verdict)
        if violation is not None:
            violations.append(violation)
        if verdict == UNKNOWN and stat.get("reason") == "time limit":
            gave_up.append((len(verdicts) - 1, key, mdl))
        elif verdict == UNKNOWN:
            notes.append(f"key {key!r}: search gave up ({stat.get('reason')}) after {stat.get('states')} "
                         "states; verdict unknown")
    # the keys that ran out of time, again, sharing what the others left
    for j, (vi, key, mdl) in enumerate(gave_up):
        first = per_key_stats[repr(key)]
        if max(0.0, deadline - _time.monotonic()) / (len(gave_up) - j) > 1.5 * first["budget_s"]:
            verdict, violation, stat = search(key, mdl, len(gave_up) - j)
            stat["first_pass"] = {k: first.get(k) for k in ("budget_s", "states", "reason")}
            per_key_stats[repr(key)] = stat
            verdicts[vi] = verdict
            if violation is not None:
                violations.append(violation)
        else:
            stat = first
        if verdicts[vi] == UNKNOWN:
            notes.append(f"key {key!r}: search gave up ({stat.get('reason')}) after {stat.get('states')} "
                         "states; verdict unknown")
    return CheckResult(CHECKER, combine_verdicts(verdicts), violations, notes,
                       {"keys": len(per_key_stats), "ops": sum(v["ops"] for v in per_key_stats.values()),
                        "seconds": round(_time.monotonic() - started, 4), "per_key": per_key_stats})


def _check_key(key: Any, kops: list[Op], mdl: Model, deadline: float, max_states: int, minimize: bool,
               minimize_time: float, t0: int) -> tuple[str, Violation | None, dict]:
    started = _time.monotonic()
    stat: dict[str, Any] = {"model": mdl.name, "ops": len(kops)}
    quick = None
    if isinstance(mdl, RegisterModel):
        quick = _register_quick(key, kops, mdl.initial, t0)
    elif isinstance(mdl, SetModel):
        quick = _set_quick(key, kops, t0)
    if quick is not None:
        s = wgl_search(quick.ops, mdl)
        stat.update(verdict=VIOLATION, detector=quick.kind, slice=len(quick.ops),
                    seconds=round(_time.monotonic() - started, 4))
        return VIOLATION, _violation(key, mdl, quick.kind, quick.text, quick.ops, s, len(kops), t0), stat
    if isinstance(mdl, RegisterModel):
        kops = _drop_unread_info_writes(kops)
    stat["searched"] = len(kops)
    budget = max(0.0, deadline - started)
    # 1. the whole key, briefly: enough for almost every linearizable history
    s = wgl_search(kops, mdl, started + budget * 0.05, max_states)
    states = s.states
    proof: tuple[list[Op], Search] | None = (kops, s) if s.status == VIOLATION else None
    if s.status == UNKNOWN:
        # 2. a violation late in a long history makes the search exhaust everything before
        # it; a few value groups, or a time window, around where it got stuck can prove it
        # far more cheaply (each is a sub-history that is linearizable if the history is)
        if isinstance(mdl, RegisterModel):
            proof = _focused_proof(kops, s, started + budget * 0.15, max_states)
        if proof is None:
            proof = _window_proof(kops, mdl, s.stuck, started + budget * 0.3, max_states)
        if proof is None:
            # 3. the whole key again, with the rest of the budget
            s = wgl_search(kops, mdl, deadline, max_states)
            states = max(states, s.states)
            if s.status == VIOLATION:
                proof = (kops, s)
    stat.update(states=states)
    if proof is None:
        stat.update(verdict=s.status, seconds=round(_time.monotonic() - started, 4))
        if s.status == UNKNOWN:
            stat["reason"] = s.reason
        return s.status, None, stat
    sub, ps = proof
    if minimize:
        mdeadline = _time.monotonic() + minimize_time
        if len(sub) > 32 and isinstance(mdl, RegisterModel):
            w = _focused_proof(sub, ps, mdeadline, max_states)
            if w is not None:
                sub, ps = w
        if len(sub) > 32:
            w = _window_proof(sub, mdl, ps.stuck, mdeadline, max_states)
            if w is not None:
                sub, ps = w
        small = _shrink(sub, mdl, mdeadline, max_states)
        s2 = wgl_search(small, mdl, _time.monotonic() + max(1.0, minimize_time), max_states)
        if s2.status == VIOLATION:
            sub, ps = small, s2
    stat.update(verdict=VIOLATION, detector="search", slice=len(sub),
                seconds=round(_time.monotonic() - started, 4))
    return VIOLATION, _violation(key, mdl, "not-linearizable", "", sub, ps, len(kops), t0), stat


def _violation(key: Any, mdl: Model, kind: str, lead: str, sub: list[Op], s: Search, key_ops: int,
               t0: int) -> Violation:
    return Violation(
        CHECKER, kind, key, _explain(key, mdl, len(sub), s, t0, lead), sorted(sub, key=lambda o: o.call),
        {"prefix": [op_ref(o) for o in s.prefix], "stuck": op_ref(s.stuck) if s.stuck else None,
         "state": mdl.describe(s.state), "key_ops": key_ops, "slice_ops": len(sub)})
