"""Helpers for the checker tests: compact history building and a brute-force reference
linearizability checker ("dumb" in porcupine's dumb-vs-clever cross-check)."""

from __future__ import annotations

from replikv.check.history import FAIL, INFO, OK, Event, History, Op
from replikv.check.linearizability import REJECT, Model

COPY = object()


def history(*specs) -> History:
    """Each spec: (process, f, key, arg, call, ret, type[, value]); times in any unit.
    The value defaults to the invoke's (Jepsen's copy); ids are positions in ``specs``."""
    evs = []
    for i, spec in enumerate(specs):
        p, f, k, arg, call, ret, typ = spec[:7]
        value = spec[7] if len(spec) > 7 else COPY
        evs.append((call, 0, i, Event("invoke", p, f, k, arg, call, id=i)))
        evs.append((ret, 1, i, Event(typ, p, f, k, arg if value is COPY else value, ret, id=i)))
    evs.sort(key=lambda e: (e[0], e[1], e[2]))
    return History(e[3] for e in evs)


def ops_of(*specs) -> list[Op]:
    return sorted(history(*specs).ops(), key=lambda o: o.id)


def brute_force_linearizable(ops: list[Op], model: Model) -> bool:
    """Is there an order of the ok ops plus any subset of the info ops (an info op that is
    left out never happened) that respects real time and is legal for ``model``? Plain
    enumeration of every such order: no caching, no linked lists, no pruning."""
    ops = [o for o in ops if o.type != FAIL and model.keeps(o)]
    steps = [model.compile(o) for o in ops]
    n = len(ops)

    def extend(placed: frozenset, state) -> bool:
        if all(i in placed or ops[i].type == INFO for i in range(n)):
            return True
        for i in range(n):
            if i in placed:
                continue
            # i can go next only if no op left out of the order so far had to precede it
            if any(j not in placed and j != i and ops[j].ret < ops[i].call and ops[j].type != INFO
                   for j in range(n)):
                continue
            ns = steps[i](state)
            if ns is not REJECT and extend(placed | {i}, ns):
                return True
        return False

    return extend(frozenset(), model.init())


def is_linearization(order: list[Op], ops: list[Op], model: Model) -> bool:
    """Is ``order`` a legal linearization of ``ops`` (all ok ops, info ops optional)?"""
    ids = {id(o) for o in order}
    if any(o.type == OK and id(o) not in ids for o in ops if model.keeps(o)):
        return False
    pos = {id(o): i for i, o in enumerate(order)}
    for a in order:
        for b in order:
            if a.ret < b.call and pos[id(a)] > pos[id(b)]:
                return False
    # an info op that was left out cannot have had to precede a placed op... it may be
    # left out entirely, which is the same as placing it last
    state = model.init()
    for o in order:
        state = model.compile(o)(state)
        if state is REJECT:
            return False
    return True



def simulate_register(n_ops: int, processes: int, seed: int, *, keys=("k",), info_rate: float = 0.0,
                      cas_rate: float = 0.0, read_rate: float = 0.5) -> History:
    """A linearizable history from a sequential register: each process runs one op at a time
    with random latency; each op takes effect at a random point inside its interval (an
    info write takes effect, or not, at random)."""
    import random

    rnd = random.Random(seed)
    free = {p: rnd.randrange(0, 1000) for p in range(processes)}
    planned = []
    vid = 0
    for i in range(n_ops):
        p = min(free, key=lambda q: (free[q], q))
        call = free[p]
        ret = call + rnd.randrange(100, 3000)
        key = rnd.choice(keys)
        r = rnd.random()
        if r < read_rate:
            f, arg = "read", None
        elif r < read_rate + cas_rate:
            f, arg = "cas", [f"v{rnd.randrange(max(vid, 1))}", f"v{vid}"]
            vid += 1
        else:
            f, arg = "write", f"v{vid}"
            vid += 1
        planned.append({"i": i, "p": p, "f": f, "k": key, "arg": arg, "call": call, "ret": ret,
                        "at": rnd.uniform(call, ret)})
        free[p] = ret + rnd.randrange(0, 200)
    reg = dict.fromkeys(keys)
    for o in sorted(planned, key=lambda o: o["at"]):
        info = o["f"] != "read" and rnd.random() < info_rate
        if o["f"] == "read":
            o["type"], o["value"] = "ok", reg[o["k"]]
        elif o["f"] == "write":
            o["type"] = "info" if info else "ok"
            if not info or rnd.random() < 0.5:
                reg[o["k"]] = o["arg"]
        else:
            applies = reg[o["k"]] == o["arg"][0] and (not info or rnd.random() < 0.5)
            if applies:
                reg[o["k"]] = o["arg"][1]
            o["type"] = "info" if info else ("ok" if applies else "fail")
    specs = [(o["p"], o["f"], o["k"], o["arg"], o["call"], o["ret"], o["type"], o.get("value", COPY))
             for o in planned]
    return history(*specs)


def inject_aba(h: History, at: float = 0.5) -> History:
    """Add two long concurrent writes A and B and three quick reads A, B, A in a row (new
    processes): no linearization exists, and no cheap test sees it."""
    evs = list(h)
    times = sorted(e.time for e in evs)
    t = times[int(len(times) * at)]
    span = (times[-1] - times[0]) // 10
    extra = [("wa", "write", "A", t - span, t + span, "A"), ("wb", "write", "B", t - span, t + span, "B"),
             ("r", "read", None, t, t + 5, "A"), ("r", "read", None, t + 10, t + 15, "B"),
             ("r", "read", None, t + 20, t + 25, "A")]
    for n, (p, f, arg, call, ret, value) in enumerate(extra):
        evs.append(Event("invoke", p, f, "k", arg, call, id=f"x{n}"))
        evs.append(Event("ok", p, f, "k", value, ret, id=f"x{n}"))
    evs.sort(key=lambda e: (e.time, e.type != "invoke"))
    return History(Event(**{**e.__dict__, "index": None}) for e in evs)


def random_tiny(rnd, kind: str, max_ops: int = 7) -> list[tuple]:
    """A random tiny history spec (same shapes as the hypothesis strategy)."""
    values = [None, "a", "b", "c"]
    specs = []
    for i in range(rnd.randint(1, max_ops)):
        call = rnd.randint(0, 20)
        ret = call + rnd.randint(0, 10)
        outcome = rnd.choice(["ok", "ok", "ok", "info", "fail"])
        if kind == "register":
            f = rnd.choice(["read", "write", "write", "cas"])
            if f == "read":
                specs.append((i, f, "k", None, call, ret, outcome, rnd.choice(values)))
            elif f == "write":
                specs.append((i, f, "k", rnd.choice(values[1:]), call, ret, outcome))
            else:
                specs.append((i, f, "k", [rnd.choice(values), rnd.choice(values[1:])], call, ret, outcome))
        elif kind == "counter":
            if rnd.random() < 0.5:
                specs.append((i, "read", "c", None, call, ret, outcome, rnd.randint(0, 4)))
            else:
                res = rnd.choice([None, 1, 2, 3, 4])
                specs.append((i, "incr", "c", rnd.randint(1, 2), call, ret, outcome, res))
        else:
            f = rnd.choice(["sadd", "sadd", "srem", "smembers"])
            if f == "smembers":
                specs.append((i, f, "s", None, call, ret, outcome, rnd.sample("xy", rnd.randint(0, 2))))
            else:
                specs.append((i, f, "s", rnd.choice("xy"), call, ret, outcome))
    return specs
