"""Client histories: recording, the JSON-lines format, and pairing events into operations.

A history is what clients saw, Jepsen style. Each operation is recorded as an ``invoke``
event, taken just before the request is sent, then exactly one completion event, taken
just after the reply (or the failure) is known:

- ``ok``: the operation happened; for reads ``value`` is the value read;
- ``fail``: the operation definitely did not happen (e.g. ``READONLY``, a refused CAS);
- ``info``: the outcome is unknown (timeout, connection lost, ``NOTACKED``). The operation
  may or may not have taken effect, at any time from its invocation on, so it stays open
  until the end of the history: its return time is +infinity.

Event fields (one JSON object per line on disk, close to Jepsen's EDN)::

    {"index": 7, "type": "invoke", "id": 4, "process": 3, "f": "write", "key": "k1",
     "value": "v7", "time": 123456789, "node": "n1"}
    {"index": 9, "type": "ok", "id": 4, "process": 3, "f": "write", "key": "k1",
     "value": "v7", "time": 124000000, "node": "n1", "token": "9f..:42"}

``index`` position in the history; ``type`` invoke|ok|fail|info; ``id`` links a completion
to its invoke (if absent, a completion closes the open invoke of the same ``process``, as in
Jepsen); ``process`` the client (an int or a string such as ``"nemesis"``); ``f`` the
operation name; ``key``; ``value``; ``time`` monotonic nanoseconds; ``node`` the node the
request went to; ``token`` an optional session position token (e.g. ``history:seq``);
``error`` the error text of a fail / info. Any other field is kept in ``extra`` (e.g.
``causes`` for consistent prefix, see ``sessions``).

Operation names the checkers understand (``f`` is open: other names are kept and ignored):

====================  =====================================  ============================
``f``                 value at invoke (``Op.arg``)           value at ok (``Op.value``)
====================  =====================================  ============================
read, get             ``None``                               value read (``None``: absent)
write, set            value written                          (copied from invoke)
cas                   ``[expected, new]``                    (copied from invoke)
incr                  delta (``None`` means 1)               the counter after the incr
sadd / srem           a member or a list of members          (anything)
smembers              ``None``                               list of members
mget                  list of keys (``key`` is ``None``)     ``{key: value}``
digest                ``None`` (``node`` = the replica)       the replica's digest
====================  =====================================  ============================

A runner records from several client threads through one ``Recorder``::

    rec = Recorder()
    op = rec.invoke(process=3, f="write", key="k1", value="v7", node="n1")
    try:
        reply = client.set("k1", "v7")
    except ReadOnlyError as e:
        rec.fail(op, str(e))                 # refused: definitely not applied
    except (TimeoutError, ConnectionError) as e:
        rec.info(op, str(e))                 # unknown: may or may not have been applied
    else:
        rec.ok(op, token=reply_token)        # value defaults to the invoke's
    ...
    rec.save("history.jsonl")
    ops = History.load("history.jsonl").ops()    # or rec.ops()

A process issues one operation at a time (``invoke`` raises ``HistoryError`` otherwise);
a client that runs operations concurrently uses one process id per concurrent stream.
After an ``info`` the process may go on (its next operation is still in its session).
"""

from __future__ import annotations

import json
import math
import threading
import time as _time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

INVOKE, OK, FAIL, INFO = "invoke", "ok", "fail", "info"
COMPLETIONS = (OK, FAIL, INFO)
TYPES = (INVOKE, *COMPLETIONS)
INF = math.inf

READ_FS = frozenset({"read", "get"})
WRITE_FS = frozenset({"write", "set"})
CAS_FS = frozenset({"cas"})
INCR_FS = frozenset({"incr"})
SADD_FS = frozenset({"sadd"})
SREM_FS = frozenset({"srem"})
SREAD_FS = frozenset({"smembers"})
MREAD_FS = frozenset({"mget"})
DIGEST_FS = frozenset({"digest"})

REGISTER_FS = READ_FS | WRITE_FS | CAS_FS
COUNTER_FS = READ_FS | INCR_FS
SET_FS = SADD_FS | SREM_FS | SREAD_FS | READ_FS

_FIELDS = ("index", "type", "id", "process", "f", "key", "value", "time", "node", "token", "error")


class HistoryError(ValueError):
    """A malformed history: a completion without invoke, two completions, a bad type..."""


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


#: "no value given": a completion without a value takes its invoke's value (as in Jepsen).
MISSING: Any = _Missing()


# --------------------------------------------------------------------------- events
@dataclass(frozen=True)
class Event:
    """One line of a history."""

    type: str
    process: Any
    f: str | None = None
    key: Any = None
    value: Any = None
    time: int | None = None
    id: int | None = None
    index: int | None = None
    node: Any = None
    token: Any = None
    error: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json_dict(self) -> dict:
        d: dict[str, Any] = {}
        for name in _FIELDS:
            v = getattr(self, name)
            if name in ("type", "process", "f", "time") or (v is not None and v is not MISSING):
                d[name] = v
        if self.value is not MISSING and "value" not in d:
            d["value"] = None
        for k, v in self.extra.items():
            d.setdefault(k, v)
        return d

    @classmethod
    def from_json_dict(cls, d: Mapping[str, Any]) -> Event:
        if d.get("type") not in TYPES:
            raise HistoryError(f"event type must be one of {TYPES}: {dict(d)!r}")
        if "process" not in d:
            raise HistoryError(f"event without process: {dict(d)!r}")
        extra = {k: v for k, v in d.items() if k not in _FIELDS}
        return cls(type=d["type"], process=d["process"], f=d.get("f"), key=d.get("key"),
                   value=d["value"] if "value" in d else MISSING, time=d.get("time"),
                   id=d.get("id"), index=d.get("index"), node=d.get("node"),
                   token=d.get("token"), error=d.get("error"), extra=extra)


def _json_default(o: Any) -> Any:
    if isinstance(o, (set, frozenset)):
        try:
            return sorted(o)
        except TypeError:
            return sorted(o, key=repr)
    if isinstance(o, (bytes, bytearray)):
        return bytes(o).decode("utf-8", "backslashreplace")
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable in a history: {o!r}")


def dumps_event(e: Event) -> str:
    return json.dumps(e.to_json_dict(), default=_json_default, separators=(",", ":"))


# --------------------------------------------------------------------------- operations
@dataclass(frozen=True, eq=False)
class Op:
    """An invoke paired with its completion. Identity (``is``) equality, hashable.

    ``call`` is the invoke time; ``ret`` the completion time, +infinity for ``info`` (and for
    an invoke that never completed). ``complete_time`` is when the completion was recorded
    (also for ``info``; ``None`` if never). ``arg`` is the invoke's value; ``value`` the
    completion's value for ``ok`` ops, the invoke's otherwise."""

    id: Any
    process: Any
    f: str | None
    key: Any
    type: str
    arg: Any
    value: Any
    call: int
    ret: float
    complete_time: int | None = None
    node: Any = None
    token: Any = None
    error: str | None = None
    invoke_index: int | None = None
    complete_index: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.type == OK

    @property
    def failed(self) -> bool:
        return self.type == FAIL

    @property
    def unknown(self) -> bool:
        return self.type == INFO

    def describe(self) -> str:
        """``p3 write k1 'v7'`` / ``p3 read k1 -> 'v7'``: what the op did, without times."""
        who = f"p{self.process}" if isinstance(self.process, int) else str(self.process)
        key = "" if self.key is None else f" {self.key}"
        if self.f in READ_FS or self.f in SREAD_FS or self.f in MREAD_FS or self.f in DIGEST_FS:
            what = f" -> {_short(self.value)}" if self.ok else ""
            if self.f in MREAD_FS and self.arg is not None:
                key = f" {_short(self.arg)}"
        elif self.f in INCR_FS:
            d = 1 if self.arg is None else self.arg
            what = f" by {d}" + (f" -> {_short(self.value)}" if self.ok else "")
        else:
            what = "" if self.arg is None else f" {_short(self.arg)}"
        return f"{who} {self.f}{key}{what}"


def _short(v: Any, limit: int = 60) -> str:
    if isinstance(v, (set, frozenset)):
        try:
            v = sorted(v)
        except TypeError:
            v = sorted(v, key=repr)
    s = repr(v)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def pair_ops(events: Iterable[Event]) -> list[Op]:
    """Pair invoke and completion events into ``Op``s, in invocation order.

    A completion is matched by ``id``, or (without ``id``) to the open invoke of its process.
    An invoke never completed becomes an ``info`` op open to the end (Jepsen does the same).
    Raises ``HistoryError`` on a completion without invoke or a second completion."""
    open_by_id: dict[Any, Event] = {}
    open_by_process: dict[Any, Any] = {}
    done: dict[int, Op] = {}
    order: list[Event] = []
    for pos, e in enumerate(events):
        if e.type == INVOKE:
            if e.time is None:
                raise HistoryError(f"invoke without time: {e!r}")
            ident = e.id if e.id is not None else ("process", e.process, pos)
            if ident in open_by_id:
                raise HistoryError(f"op id {e.id!r} invoked twice")
            if e.id is None and e.process in open_by_process:
                raise HistoryError(f"process {e.process!r} invoked twice without a completion "
                                   "(give events an id to run several ops per process)")
            open_by_id[ident] = e
            open_by_process[e.process] = ident
            order.append(e)
            continue
        if e.type not in COMPLETIONS:
            raise HistoryError(f"bad event type {e.type!r}")
        if e.id is not None:
            ident = e.id
        else:
            ident = open_by_process.get(e.process)
        inv = open_by_id.pop(ident, None) if ident is not None else None
        if inv is None:
            raise HistoryError(f"completion without an open invoke: {e!r}")
        if open_by_process.get(inv.process) == ident:
            del open_by_process[inv.process]
        if e.time is None and e.type != INFO:
            raise HistoryError(f"{e.type} completion without time: {e!r}")
        done[id(inv)] = _make_op(inv, e)
    ops = []
    for inv in order:
        op = done.get(id(inv))
        ops.append(op if op is not None else _make_op(inv, None))
    return ops


def _make_op(inv: Event, comp: Event | None) -> Op:
    arg = None if inv.value is MISSING else inv.value
    extra = dict(inv.extra)
    if comp is None:
        return Op(id=inv.id, process=inv.process, f=inv.f, key=inv.key, type=INFO, arg=arg, value=arg,
                  call=inv.time, ret=INF, node=inv.node, token=inv.token,
                  error="no completion recorded", invoke_index=inv.index, extra=extra)
    extra.update(comp.extra)
    if comp.type == OK:
        value = arg if comp.value is MISSING else comp.value
    else:
        value = arg
    ct = comp.time if comp.time is not None else inv.time
    if ct < inv.time:
        raise HistoryError(f"completion before its invoke: {inv!r} / {comp!r}")
    return Op(id=inv.id, process=inv.process, f=inv.f, key=inv.key, type=comp.type, arg=arg,
              value=value, call=inv.time, ret=INF if comp.type == INFO else ct, complete_time=ct,
              node=comp.node if comp.node is not None else inv.node,
              token=comp.token if comp.token is not None else inv.token,
              error=comp.error, invoke_index=inv.index, complete_index=comp.index, extra=extra)


# --------------------------------------------------------------------------- histories
class History(Sequence):
    """An immutable sequence of events (``index`` filled in from the position if absent)."""

    def __init__(self, events: Iterable[Event] = ()):
        evs = []
        for i, e in enumerate(events):
            if e.index is None:
                e = Event(**{**e.__dict__, "index": i})
            evs.append(e)
        self._events: tuple[Event, ...] = tuple(evs)
        self._ops: list[Op] | None = None

    def __getitem__(self, i):
        return self._events[i]

    def __len__(self) -> int:
        return len(self._events)

    def __repr__(self) -> str:
        return f"History({len(self._events)} events)"

    def ops(self) -> list[Op]:
        """The paired operations, in invocation order (cached)."""
        if self._ops is None:
            self._ops = pair_ops(self._events)
        return list(self._ops)

    def dumps(self) -> str:
        return "".join(dumps_event(e) + "\n" for e in self._events)

    @classmethod
    def loads(cls, text: str) -> History:
        events = []
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                raise HistoryError(f"line {n}: not JSON: {e}") from None
            if not isinstance(d, dict):
                raise HistoryError(f"line {n}: not a JSON object")
            events.append(Event.from_json_dict(d))
        return cls(events)

    def save(self, path) -> None:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(self.dumps())

    @classmethod
    def load(cls, path) -> History:
        with open(path, encoding="utf-8") as fh:
            return cls.loads(fh.read())


def load_history(path) -> History:
    return History.load(path)


def as_ops(history: Any) -> list[Op]:
    """Accept a ``History``, a ``Recorder``, a list of ``Op`` or ``Event``, or a path."""
    if isinstance(history, (History, Recorder)):
        return history.ops()
    if isinstance(history, (str, bytes)) or hasattr(history, "__fspath__"):
        return History.load(history).ops()
    items = list(history)
    if all(isinstance(x, Op) for x in items):
        return sorted(items, key=lambda o: (o.call, -1 if o.invoke_index is None else o.invoke_index))
    if all(isinstance(x, Event) for x in items):
        return History(items).ops()
    raise TypeError("expected a History, Recorder, path, or a list of Op or Event")


# --------------------------------------------------------------------------- recorder
class Recorder:
    """Thread-safe history recorder. Times are read under the lock from ``clock``
    (``time.monotonic_ns`` by default), so event order and time order agree.

    ``invoke`` returns an op id; exactly one of ``ok`` / ``fail`` / ``info`` must follow.
    Pass ``time=`` to any call to supply the time yourself (tests, replays)."""

    def __init__(self, clock=_time.monotonic_ns, events: Iterable[Event] = ()):
        self._clock = clock
        self._lock = threading.Lock()
        self._events: list[Event] = []
        self._open: dict[int, Event] = {}
        self._busy: dict[Any, int] = {}
        self._next_id = 0
        for e in events:
            self._append_loaded(e)

    def _append_loaded(self, e: Event) -> None:
        e = Event(**{**e.__dict__, "index": len(self._events)})
        if isinstance(e.id, int):
            self._next_id = max(self._next_id, e.id + 1)
        if e.type == INVOKE and e.id is not None:
            self._open[e.id] = e
            self._busy[e.process] = e.id
        elif e.id in self._open:
            inv = self._open.pop(e.id)
            if self._busy.get(inv.process) == e.id:
                del self._busy[inv.process]
        self._events.append(e)

    def _now(self, t: int | None) -> int:
        return self._clock() if t is None else t

    def invoke(self, process: Any, f: str, key: Any = None, value: Any = None, *, node: Any = None,
               token: Any = None, time: int | None = None, **extra: Any) -> int:
        """Record the start of an operation; returns its id."""
        with self._lock:
            if process in self._busy:
                raise HistoryError(f"process {process!r} already has op {self._busy[process]} in flight; "
                                   "complete it first or use another process id")
            op_id = self._next_id
            self._next_id += 1
            e = Event(type=INVOKE, process=process, f=f, key=key, value=value, time=self._now(time),
                      id=op_id, index=len(self._events), node=node, token=token, extra=extra)
            self._events.append(e)
            self._open[op_id] = e
            self._busy[process] = op_id
            return op_id

    def _complete(self, typ: str, op_id: int, value: Any, error: str | None, node: Any, token: Any,
                  time: int | None, extra: dict) -> None:
        with self._lock:
            inv = self._open.pop(op_id, None)
            if inv is None:
                raise HistoryError(f"op {op_id!r} is not in flight (never invoked, or already completed)")
            del self._busy[inv.process]
            if value is MISSING:
                value = inv.value
            self._events.append(Event(type=typ, process=inv.process, f=inv.f, key=inv.key, value=value,
                                      time=self._now(time), id=op_id, index=len(self._events),
                                      node=node, token=token, error=error, extra=extra))

    def ok(self, op_id: int, value: Any = MISSING, *, token: Any = None, node: Any = None,
           time: int | None = None, **extra: Any) -> None:
        """The op happened. ``value``: what a read returned (default: the invoke's value)."""
        self._complete(OK, op_id, value, None, node, token, time, extra)

    def fail(self, op_id: int, error: str | None = None, *, node: Any = None, time: int | None = None,
             **extra: Any) -> None:
        """The op definitely did not happen."""
        self._complete(FAIL, op_id, MISSING, error, node, None, time, extra)

    def info(self, op_id: int, error: str | None = None, *, node: Any = None, time: int | None = None,
             **extra: Any) -> None:
        """The outcome is unknown: the op may or may not take effect, now or later."""
        self._complete(INFO, op_id, MISSING, error, node, None, time, extra)

    def digest(self, node: Any, digest: Any, *, process: Any = "checker", time: int | None = None) -> None:
        """Record a replica's state digest (for ``check_convergence``) as an ok ``digest`` op."""
        op_id = self.invoke(process, "digest", node=node, time=time)
        self.ok(op_id, digest, time=time)

    def in_flight(self) -> list[int]:
        with self._lock:
            return sorted(self._open)

    def history(self) -> History:
        with self._lock:
            return History(list(self._events))

    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)

    def ops(self) -> list[Op]:
        return self.history().ops()

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)

    def save(self, path) -> None:
        """Write the history as JSON lines (ops still in flight appear as bare invokes)."""
        self.history().save(path)

    @classmethod
    def load(cls, path, clock=_time.monotonic_ns) -> Recorder:
        """A recorder holding a saved history; recording can continue after it."""
        return cls(clock=clock, events=History.load(path))


# --------------------------------------------------------------------------- helpers for checkers
def freeze(v: Any) -> Any:
    """A hashable, comparable-by-equality form of a JSON value (lists -> tuples, ...)."""
    if isinstance(v, (list, tuple)):
        return tuple(freeze(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted(((k, freeze(x)) for k, x in v.items()), key=lambda kv: repr(kv[0])))
    if isinstance(v, (set, frozenset)):
        return frozenset(freeze(x) for x in v)
    if isinstance(v, bytearray):
        return bytes(v)
    return v


def members(v: Any) -> frozenset:
    """The members named by an sadd/srem argument or an smembers result."""
    if v is None:
        return frozenset()
    if isinstance(v, (list, tuple, set, frozenset)):
        return frozenset(freeze(x) for x in v)
    return frozenset((freeze(v),))


def incr_delta(op: Op) -> int:
    return 1 if op.arg is None else int(op.arg)


def observations(op: Op) -> list[tuple[Any, Any]]:
    """(key, value) pairs an ok read-like op observed: read/get/smembers, and mget expanded."""
    if not op.ok:
        return []
    if op.f in MREAD_FS:
        if isinstance(op.value, Mapping):
            return list(op.value.items())
        if isinstance(op.arg, (list, tuple)) and isinstance(op.value, (list, tuple)):
            return list(zip(op.arg, op.value, strict=False))
        return []
    if (op.f in READ_FS or op.f in SREAD_FS) and op.key is not None:
        return [(op.key, op.value)]
    return []


REGISTER, COUNTER, SET, MIXED = "register", "counter", "set", "mixed"


def key_kinds(ops: Iterable[Op]) -> dict[Any, str]:
    """What each key holds, judged from the operations on it: ``register`` (read / write /
    cas), ``counter`` (incr and reads), ``set`` (sadd / srem / smembers) or ``mixed``."""
    fs: dict[Any, set] = {}
    for op in ops:
        if op.f in MREAD_FS:
            for k, _ in observations(op):
                fs.setdefault(k, set()).add("read")
            continue
        if op.key is None or op.f in DIGEST_FS:
            continue
        fs.setdefault(op.key, set()).add(op.f)
    kinds = {}
    for k, s in fs.items():
        writes = s & (WRITE_FS | CAS_FS)
        incrs = s & INCR_FS
        sets = s & (SADD_FS | SREM_FS | SREAD_FS)
        if sum(1 for x in (writes, incrs, sets) if x) > 1:
            kinds[k] = MIXED
        elif incrs:
            kinds[k] = COUNTER
        elif sets:
            kinds[k] = SET
        elif s <= REGISTER_FS:
            kinds[k] = REGISTER
        else:
            kinds[k] = MIXED
    return kinds
