"""Recording and checking client histories, Jepsen / porcupine style. Pure Python, no I/O
besides reading and writing history files, deterministic.

Record (from any number of client threads)::

    from replikv.check import Recorder
    rec = Recorder()                                   # times from time.monotonic_ns
    op = rec.invoke(process=3, f="write", key="k1", value="v7", node="n1")
    ...                                                # send the request
    rec.ok(op)            # acknowledged (a read: rec.ok(op, value=what_was_read))
    rec.fail(op, "READONLY ...")                       # or: definitely not applied
    rec.info(op, "timeout")                            # or: outcome unknown
    rec.digest("n1", digest_of_node_1)                 # after healing, for convergence
    rec.save("history.jsonl")

Check::

    from replikv.check import History, check_all
    report = check_all(History.load("history.jsonl"))
    print(report.text()); report.to_json(); report.verdict   # "ok" | "violation" | "unknown"

or one checker at a time, each returning a ``CheckResult`` (``verdict``, ``violations``
with their history slices and explanations, ``notes``, ``stats``)::

    check_linearizability(h, time_limit=60)      # per key: register / counter / set
    check_read_your_writes(h)                    # session guarantees, by a VersionOrder
    check_monotonic_reads(h)
    check_consistent_prefix(h, pairs=[(("answer", "a1"), ("question", "q1"))])
    check_lost_writes(h)                         # counters and sets, final reads
    check_convergence(h, digests={"n1": d1, "n2": d2})

Modules: ``history`` (format, ``Recorder``, ``Op`` pairing), ``linearizability``,
``sessions`` (session guarantees, lost writes, convergence, ``VersionOrder``), ``result``
(``CheckResult``, ``Violation``), ``report`` (``Report``, ``check_all``). Each module's
docstring states what its checks guarantee and where they stop.
"""

from .history import (
    FAIL,
    INFO,
    INVOKE,
    OK,
    Event,
    History,
    HistoryError,
    Op,
    Recorder,
    as_ops,
    load_history,
    pair_ops,
)
from .linearizability import (
    CounterModel,
    Model,
    RegisterModel,
    SetModel,
    check_linearizability,
    wgl_search,
)
from .report import Report, check_all
from .result import OK_VERDICT, UNKNOWN, VIOLATION, CheckResult, Violation, format_op
from .sessions import (
    VersionOrder,
    check_consistent_prefix,
    check_convergence,
    check_lost_writes,
    check_monotonic_reads,
    check_read_your_writes,
)

__all__ = [
    "FAIL",
    "INFO",
    "INVOKE",
    "OK",
    "OK_VERDICT",
    "UNKNOWN",
    "VIOLATION",
    "CheckResult",
    "CounterModel",
    "Event",
    "History",
    "HistoryError",
    "Model",
    "Op",
    "Recorder",
    "RegisterModel",
    "Report",
    "SetModel",
    "VersionOrder",
    "Violation",
    "as_ops",
    "check_all",
    "check_consistent_prefix",
    "check_convergence",
    "check_linearizability",
    "check_lost_writes",
    "check_monotonic_reads",
    "check_read_your_writes",
    "format_op",
    "load_history",
    "pair_ops",
    "wgl_search",
]
