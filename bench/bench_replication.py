#!/usr/bin/env python3
"""Replication benchmark: replikv next to Redis (master + 2 replicas) and PySyncObj, in one run.

    python bench/bench_replication.py [--rounds 3] [--json out.json]

Four measurements (PASS/MISS against the issue's targets is a report, not an assertion:
the script exits 0 whatever the numbers):

1. SET P1: ``redis-benchmark -t set -n 100000 -c 50 -d 100 -r 100000 -P 1`` against a replikv
   leader with 2 followers (3-node LocalCluster, ack async, fsync everysec) and against
   redis-server master + 2 ``--replicaof`` replicas (appendonly yes, appendfsync everysec on
   all three). Target: replikv >= 0.7x Redis.
2. SET + WAIT 1: one lean asyncio client (raw RESP over asyncio streams, uvloop when it is
   installed) for both systems: 16 connections, each sending ``SET k v`` and ``WAIT 1 1000``
   in one write and reading both replies before its next request; a fixed number of requests
   spread over the connections. requests/s, p50/p99 latency of the pair. Target >= 0.6x Redis.
3. Majority-acknowledged writes: replikv with ack semi-sync:1 on 3 nodes (the leader and one
   follower have the write: a majority) driven by the same lean client (16 connections, one
   SET in flight each), versus PySyncObj: 3 processes on loopback, each a SyncObj holding a
   ReplDict (journalFile and fullDumpFile in a temp dir, written through mmap and never
   fsynced, as replikv's everysec leaves the page cache unsynced); the leader's process runs
   the client itself: 16 writes in flight, each ``ReplDict.set(k, v, callback=...)`` re-issued
   from its callback, which PySyncObj calls once the entry is committed (a majority has it)
   and applied on the leader; failed callbacks are not counted. PySyncObj runs twice: its
   default SyncObjConf (appendEntriesUseBatch=True: new entries wait for the next
   appendEntriesPeriod, 100 ms) and appendEntriesUseBatch=False (entries are sent at once,
   its fastest setting here). Committed writes/s and p50. Targets: >= 5x PySyncObj, p50 < 5 ms.
4. Follower catch-up (replikv, after 1.): a burst of ``redis-benchmark -t set -n 100000 -P 16``
   (-c 50 -d 100 -r 100000) then one more SET and its position (LASTPOS); from that SET's
   reply, each follower is asked for its own applied position (POS) every millisecond until
   both have it. Target 50 ms. (Followers are asked, not the leader: an async leader with
   nobody waiting hears their acks only every heartbeat.)

Server CPU (from /proc, leader/master and the two others) and the client's CPU (this process,
for the lean client) are shown per request: on a small shared machine they say more than
requests/s, which move with the load of other work. 1., 2. and 4. run one after the other on
the same replikv cluster (2. sees the history of 1.; ``--only 2`` runs it on a fresh one).
Each round starts every system fresh in its own temp dir on free loopback ports; the order
of the systems alternates from round to round (3 rounds by default) and the table shows
medians. Every child runs in its own session, every run is bounded in time, and all children
are stopped (by pid) on exit, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _procs  # noqa: E402
from bench_single import redis_benchmark  # noqa: E402

from replikv.cluster.local import LocalCluster  # noqa: E402

TARGETS = {"set_p1_ratio": 0.7, "wait_ratio": 0.6, "majority_ratio": 5.0, "majority_p50_ms": 5.0,
           "catchup_ms": 50.0}
CONNS = 16
VALUE = b"x" * 100
KEYSPACE = 100000
STEP_TIMEOUT = 120.0   # seconds for one client run of the lean client / one PySyncObj run


# ---------------------------------------------------------------------------- lean client
def _resp(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(p), p))
    return b"".join(out)


WAIT_CMD = _resp(b"WAIT", b"1", b"1000")


async def _lean_conn(port: int, reqs: list[bytes], with_wait: bool, lat: list[float], bad: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        pc = time.perf_counter
        for req in reqs:
            t0 = pc()
            writer.write(req)
            await writer.drain()
            line = await reader.readline()
            if not line.startswith(b"+OK"):
                bad[0] += 1
            if with_wait:
                line = await reader.readline()
                if not line.startswith(b":") or int(line[1:]) < 1:
                    bad[1] += 1       # WAIT timed out (or an error)
            lat.append(pc() - t0)
    finally:
        writer.close()


async def _lean_run(port: int, n: int, with_wait: bool, seed: int) -> dict:
    rnd = random.Random(seed)
    per = [n // CONNS + (1 if i < n % CONNS else 0) for i in range(CONNS)]
    batches = []
    for cnt in per:
        reqs = []
        for _ in range(cnt):
            req = _resp(b"SET", b"key:%012d" % rnd.randrange(KEYSPACE), VALUE)
            reqs.append(req + WAIT_CMD if with_wait else req)
        batches.append(reqs)
    lats: list[list[float]] = [[] for _ in range(CONNS)]
    bad = [0, 0]
    t0 = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(_lean_conn(port, b, with_wait, lat, bad)
                                            for b, lat in zip(batches, lats, strict=True))), STEP_TIMEOUT)
    wall = time.perf_counter() - t0
    all_lat = sorted(x for lat in lats for x in lat)
    return {"ops": n / wall, "p50_ms": _pct(all_lat, 50) * 1e3, "p99_ms": _pct(all_lat, 99) * 1e3,
            "errors": bad[0], "wait_timeouts": bad[1], "n": n, "wall_s": wall}


def lean_client(port: int, n: int, with_wait: bool, pids: list[int], warmup: int = 500) -> dict:
    """Run the lean client: ``warmup`` untimed requests, then ``n`` timed ones; the CPU of
    ``pids`` (the servers) and of this process is measured over the timed ones."""
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(_lean_run(port, warmup, with_wait, seed=1))
    cm = CpuMeter(pids)
    res = runner(_lean_run(port, n, with_wait, seed=2))
    res.update(cm.per_request(n, client_here=True))
    return res


def _pct(sorted_xs: list[float], p: float) -> float:
    if not sorted_xs:
        return float("nan")
    i = min(len(sorted_xs) - 1, max(0, int(round(p / 100 * len(sorted_xs) + 0.5)) - 1))
    return sorted_xs[i]


# ---------------------------------------------------------------------------- helpers


def _cpu(pids: list[int]) -> float:
    return sum(_procs.cpu_seconds(p) for p in pids)


class CpuMeter:
    """CPU seconds of the servers (leader/master = pids[0], the others) and of this process
    (the client, where it runs here) over a measured step, as microseconds per request."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.s0 = [_procs.cpu_split(p) for p in pids]
        self.me0 = os.times()

    def per_request(self, n: int, client_here: bool = False) -> dict:
        """Per request: CPU µs in all (``cpu_us``), of the leader and of the others, and per
        process (``procs``, leader first): user µs, system µs, voluntary and involuntary
        context switches, µs runnable but waiting for a core; and the client's user /
        system µs when it runs in this process."""
        s1 = [_procs.cpu_split(p) for p in self.pids]
        procs = [[(b[i] - a[i]) / n * (1 if i in (2, 3) else 1e6) for i in range(5)]
                 for a, b in zip(self.s0, s1, strict=True)]
        d = [pr[0] + pr[1] for pr in procs]
        out = {"cpu_us": sum(d), "cpu_leader_us": d[0], "cpu_others_us": sum(d[1:]), "procs": procs}
        if client_here:
            me = os.times()
            out["client_user_us"] = (me.user - self.me0.user) / n * 1e6
            out["client_sys_us"] = (me.system - self.me0.system) / n * 1e6
            out["cpu_client_us"] = out["client_user_us"] + out["client_sys_us"]
        return out

    @staticmethod
    def detail(m: dict) -> str:
        """User / system µs, context switches and µs waiting for a core, per request and
        process."""
        names = ["leader"] + [f"other {i}" for i in range(1, len(m["procs"]))]
        s = "; ".join(f"{name} {u:.1f} user + {sy:.1f} sys µs, {v:.2f} vol / {iv:.3f} invol switches, "
                      f"{w:.1f} µs waiting for a core"
                      for name, (u, sy, v, iv, w) in zip(names, m["procs"], strict=True))
        if "client_user_us" in m:
            s += f"; client {m['client_user_us']:.1f} user + {m['client_sys_us']:.1f} sys µs"
        return s

    @staticmethod
    def show(m: dict) -> str:
        s = f"{m['cpu_us']:.0f} us cpu/req: {m['cpu_leader_us']:.0f} leader + {m['cpu_others_us']:.0f} others"
        if "cpu_client_us" in m:
            s += f", client {m['cpu_client_us']:.0f}"
        return s


def _log(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------------------- replikv
class Replikv:
    """A 3-node leader-mode LocalCluster on free ports, stopped by ``close`` (also at exit)."""

    def __init__(self, ack: str) -> None:
        root = _procs.tmpdir("bench-repl-rkv-")
        base = _procs.free_port(also=(1, 2, 100, 101, 102, 200, 201, 202, 399))
        self.cl = LocalCluster.create(root, 3, base, mode="leader", settings={"fsync": "everysec"},
                                      cluster_settings={"ack": ack})
        _CLUSTERS.append(self.cl)
        self.cl.start()
        self.leader = self.cl.leader()
        _procs.wait_for(lambda: self._followers_up(), 30, "both followers streaming")
        self.port = self.leader.port
        # the leader's pid first, then the followers'
        self.pids = [self.cl.procs[self.leader.node_id].pid] + [
            p.pid for nid, p in sorted(self.cl.procs.items()) if nid not in (0, self.leader.node_id)]

    def _followers_up(self) -> bool:
        fl = self.status()["replication"]["followers"]
        return len(fl) == 2 and all(f["link"] == "up" for f in fl)

    def status(self) -> dict:
        return self.cl.http_get(self.leader, "/status", timeout=2.0)


    def close(self) -> None:
        self.cl.stop()
        if self.cl in _CLUSTERS:
            _CLUSTERS.remove(self.cl)


_CLUSTERS: list[LocalCluster] = []


def _stop_clusters() -> None:
    while _CLUSTERS:
        cl = _CLUSTERS.pop()
        try:
            cl.stop()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def catch_up(rk: Replikv, burst: int) -> dict:
    """Burst of SETs (-P 16), one final SET and its position (LASTPOS on the same
    connection); then ask each follower for its applied position (POS, over a connection
    opened beforehand) every millisecond until both reached it. Milliseconds from the
    final SET's reply to the answer that showed the second follower there."""
    followers = [n for n in rk.cl.nodes if n.node_id != rk.leader.node_id]
    fs = [socket.create_connection(("127.0.0.1", n.port), timeout=10) for n in followers]
    try:
        t_b = time.monotonic()
        res = redis_benchmark(rk.port, "set", burst, 16)
        burst_s = time.monotonic() - t_b
        with socket.create_connection(("127.0.0.1", rk.port), timeout=10) as s:
            s.sendall(_resp(b"SET", b"catchup:last", VALUE))
            reply = s.recv(64)
            t_ack = time.perf_counter()
            if not reply.startswith(b"+OK"):
                return {"error": f"final SET answered {reply!r}"}
            s.sendall(_resp(b"LASTPOS"))
            target = int(s.recv(64).split(b"\r\n")[1].split(b":")[1])

        def applied(sock) -> int:
            sock.sendall(_resp(b"POS"))
            return int(sock.recv(64).split(b"\r\n")[1].split(b":")[1])

        first_lag = None
        polls = 0
        deadline = t_ack + 30
        while True:
            got = [applied(f) for f in fs]
            polls += 1
            if first_lag is None:
                first_lag = [target - a for a in got]
            if min(got) >= target:
                t_done = time.perf_counter()
                break
            if time.perf_counter() > deadline:
                return {"error": f"followers did not catch up within 30 s (behind at the last ack: {first_lag})"}
            time.sleep(0.001)
    finally:
        for f in fs:
            f.close()
    return {"catchup_ms": (t_done - t_ack) * 1e3, "burst_rps": res.get("SET"), "burst_s": burst_s,
            "behind_at_ack": first_lag, "polls": polls}


def _set_p1(system: str, port: int, pids: list[int], args, R: dict) -> None:
    cm = CpuMeter(pids)
    res = redis_benchmark(port, "set", args.requests, 1)
    c = cm.per_request(args.requests)
    if res.get("SET"):
        R["set_p1"][system].append(res["SET"])
        R["cpu_set_p1"][system].append(c)
    _log(f"    {system:<8} SET P1      {res.get('SET', float('nan')):>8,.0f}/s   ({CpuMeter.show(c)})")


def _wait_step(system: str, port: int, pids: list[int], args, R: dict) -> None:
    w = lean_client(port, args.wait_requests, with_wait=True, pids=pids)
    R["wait"][system].append(w)
    _log(f"    {system:<8} SET+WAIT 1  {w['ops']:>8,.0f}/s   p50 {w['p50_ms']:.2f} ms  p99 {w['p99_ms']:.2f} ms"
         f"  (WAIT timeouts {w['wait_timeouts']}, errors {w['errors']}; {CpuMeter.show(w)})")


def run_replikv_async(args, R: dict) -> None:
    rk = Replikv("async")
    try:
        if "1" in args.only:
            _set_p1("replikv", rk.port, rk.pids, args, R)
        if "2" in args.only:
            _wait_step("replikv", rk.port, rk.pids, args, R)
        if "4" in args.only:
            c = catch_up(rk, args.burst)
            R["catchup"].append(c)
            if "error" in c:
                _log(f"    replikv  catch-up: {c['error']}")
            else:
                _log(f"    replikv  catch-up    {c['catchup_ms']:.1f} ms after a burst of {args.burst} SETs "
                     f"({c['burst_rps'] or 0:,.0f}/s, -P 16); followers behind at the last ack: "
                     f"{c['behind_at_ack']} records, {c['polls']} polls")
    finally:
        rk.close()


def run_replikv_majority(args, R: dict) -> None:
    rk = Replikv("semi-sync:1")
    try:
        st0 = rk.status()["replication"]
        m = lean_client(rk.port, args.majority_requests, with_wait=False, pids=rk.pids)
        st1 = rk.status()["replication"]
        m["ack"] = st1["ack"]
        m["degraded_during_run"] = (st1.get("semi_sync_fallbacks", 0) - st0.get("semi_sync_fallbacks", 0)
                                    + st1.get("ack_timeouts", 0) - st0.get("ack_timeouts", 0))
        R["majority"]["replikv"].append(m)
        _log(f"    replikv semi-sync:1   {m['ops']:>8,.0f} committed writes/s  p50 {m['p50_ms']:.2f} ms  "
             f"p99 {m['p99_ms']:.2f} ms  (fallbacks + ack timeouts during the run: {m['degraded_during_run']}; "
             f"{CpuMeter.show(m)})")
    finally:
        rk.close()


# ---------------------------------------------------------------------------- Redis
def run_redis(args, R: dict) -> None:
    import redis as redispy

    procs = []
    try:
        mport = _procs.free_port()
        d = _procs.tmpdir("bench-repl-redis-m-")
        procs.append(_procs.start(_procs.redis_cmd(mport, d, "everysec"), mport, os.path.join(d, "server.log")))
        for _ in range(2):
            port = _procs.free_port()
            d = _procs.tmpdir("bench-repl-redis-r-")
            procs.append(_procs.start(_procs.redis_cmd(port, d, "everysec") + ["--replicaof", "127.0.0.1", str(mport)],
                                      port, os.path.join(d, "server.log")))
        m = redispy.Redis(port=mport, socket_timeout=5)

        def online():
            info = m.info("replication")
            return info.get("connected_slaves") == 2 and all(
                info.get(f"slave{i}", {}).get("state") == "online" for i in range(2))
        _procs.wait_for(online, 30, "both Redis replicas online")
        m.close()
        pids = [p.pid for p in procs]
        if "1" in args.only:
            _set_p1("redis", mport, pids, args, R)
        if "2" in args.only:
            _wait_step("redis", mport, pids, args, R)
    finally:
        for p in reversed(procs):
            _procs.stop(p)


# ---------------------------------------------------------------------------- PySyncObj
def pysyncobj_node(argv: list[str]) -> int:
    """One PySyncObj node (run as a child: ``--pysyncobj-node SELF PARTNERS DIR N BATCH CONNS``).
    The node that is leader once the cluster is ready drives N committed writes and writes
    result.json into DIR; the others serve until they are stopped."""
    import threading

    from pysyncobj import SyncObj, SyncObjConf
    from pysyncobj.batteries import ReplDict

    me, partners, d, n, batch = argv[0], argv[1].split(","), argv[2], int(argv[3]), argv[4] == "1"
    inflight = int(argv[5]) if len(argv) > 5 else CONNS
    conf = SyncObjConf(journalFile=os.path.join(d, me.replace(":", "_") + ".journal"),
                       fullDumpFile=os.path.join(d, me.replace(":", "_") + ".dump"),
                       appendEntriesUseBatch=batch)
    kv = ReplDict()
    obj = SyncObj(me, partners, conf=conf, consumers=[kv])
    deadline = time.monotonic() + 60
    while not (obj._getLeader() is not None and obj.isReady()):
        if time.monotonic() > deadline:
            return 3
        time.sleep(0.02)
    time.sleep(0.3)
    if not obj._isLeader():
        while True:      # a follower: serve until SIGTERM
            time.sleep(1)

    rnd = random.Random(2)
    keys = [b"key:%012d" % rnd.randrange(KEYSPACE) for _ in range(n + 600)]

    def drive(count: int, inflight: int) -> dict:
        lat: list[float] = []
        errors = [0]
        done = threading.Event()
        state = {"next": 0, "finished": 0}
        lock = threading.Lock()
        pc = time.perf_counter

        def issue():
            with lock:
                i = state["next"]
                if i >= count:
                    return
                state["next"] = i + 1
            t0 = pc()

            def cb(result, err):
                if err:
                    errors[0] += 1      # not committed (e.g. the leader changed): not counted
                else:
                    lat.append(pc() - t0)
                with lock:
                    state["finished"] += 1
                    fin = state["finished"] >= count
                if fin:
                    done.set()
                else:
                    issue()
            kv.set(keys[i], VALUE, callback=cb)

        t0 = pc()
        for _ in range(inflight):
            issue()
        done.wait(STEP_TIMEOUT)
        wall = pc() - t0
        lat.sort()
        return {"ops": len(lat) / wall, "p50_ms": _pct(lat, 50) * 1e3, "p99_ms": _pct(lat, 99) * 1e3,
                "errors": errors[0], "n": len(lat), "wall_s": wall}

    with open(os.path.join(d, "pids.json")) as fh:      # written by the parent once all 3 run
        pids = json.load(fh)
    mypid = os.getpid()
    pids = [mypid] + [p for p in pids if p != mypid]   # the leader first
    drive(500, inflight)    # warm-up
    cm = CpuMeter(pids)
    res = drive(n, inflight)
    res["inflight"] = inflight
    res.update(cm.per_request(n))
    res["still_leader"] = obj._isLeader()
    res["batch"] = batch
    tmp = os.path.join(d, "result.json.tmp")
    with open(tmp, "w") as fh:
        json.dump(res, fh)
    os.replace(tmp, os.path.join(d, "result.json"))
    while True:
        time.sleep(1)


def run_pysyncobj(args, R: dict, batch: bool) -> dict | None:
    d = _procs.tmpdir("bench-repl-pso-")
    ports = []
    while len(ports) < 3:
        p = _procs.free_port()
        if p not in ports:
            ports.append(p)
    addrs = [f"127.0.0.1:{p}" for p in ports]
    procs = []
    try:
        for i, a in enumerate(addrs):
            partners = ",".join(x for x in addrs if x != a)
            log = open(os.path.join(d, f"node{i}.log"), "wb")
            p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--pysyncobj-node", a, partners, d,
                                  str(args.majority_requests if not batch else args.batch_requests),
                                  "1" if batch else "0", str(CONNS)],
                                 stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
            log.close()
            _procs._children.append(p)
            procs.append(p)
        with open(os.path.join(d, "pids.json.tmp"), "w") as fh:
            json.dump([p.pid for p in procs], fh)
        os.replace(os.path.join(d, "pids.json.tmp"), os.path.join(d, "pids.json"))
        path = os.path.join(d, "result.json")
        deadline = time.monotonic() + STEP_TIMEOUT + 60
        while not os.path.exists(path):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                tail = b"".join(open(os.path.join(d, f"node{i}.log"), "rb").read()[-800:] for i in range(3))
                _log(f"    ! PySyncObj run failed: {tail.decode(errors='replace')}")
                return None
            time.sleep(0.05)
        with open(path) as fh:
            res = json.load(fh)
        label = "batch" if batch else "no-batch"
        R["majority"][f"pysyncobj {label}"].append(res)
        _log(f"    PySyncObj {label:<11} {res['ops']:>8,.0f} committed writes/s  p50 {res['p50_ms']:.2f} ms  "
             f"p99 {res['p99_ms']:.2f} ms  (errors {res['errors']}, still leader: {res['still_leader']}; "
             f"{CpuMeter.show(res)}, the client is in the leader)")
        return res
    finally:
        for p in reversed(procs):
            _procs.stop(p)


# ---------------------------------------------------------------------------- report
def _med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _f(v, spec=",.0f"):
    return "-" if v is None else format(v, spec)


def _verdict(ok):
    return "-" if ok is None else ("PASS" if ok else "MISS")


def report(R: dict, rounds: int) -> list[dict]:
    rows = []

    def row(name, rkv, other, ratio, target, verdict):
        rows.append({"measure": name, "replikv": rkv, "other": other, "ratio": ratio, "target": target,
                     "verdict": verdict})
        print(f"{name:<44} {rkv:>10} {other:>10} {ratio:>7}  {target:<16} {verdict}")

    def ratio(a, b):
        return a / b if a and b else None

    def meds(xs: list[dict]) -> dict:
        keys = ("ops", "p50_ms", "p99_ms", "cpu_us")
        return {k: _med([x.get(k) for x in xs]) for k in keys}

    set_r, set_o = _med(R["set_p1"]["replikv"]), _med(R["set_p1"]["redis"])
    sr = ratio(set_r, set_o)
    w_r, w_o = meds(R["wait"]["replikv"]), meds(R["wait"]["redis"])
    wr = ratio(w_r["ops"], w_o["ops"])
    m_r = meds(R["majority"]["replikv"])
    pso = {k: meds(R["majority"][k]) for k in ("pysyncobj no-batch", "pysyncobj batch")}
    cu = _med([c.get("catchup_ms") for c in R["catchup"]])

    print()
    print(f"medians of {rounds} round(s); ratio = replikv / other")
    print(f"{'measure':<44} {'replikv':>10} {'other':>10} {'ratio':>7}  {'target':<16} verdict")
    row("1. SET P1 req/s (other: Redis + 2 replicas)", _f(set_r), _f(set_o), _f(sr, ".2f"), ">= 0.7x",
        _verdict(None if sr is None else sr >= TARGETS["set_p1_ratio"]))
    row("2. SET+WAIT 1, 16 conns, req/s (Redis)", _f(w_r["ops"]), _f(w_o["ops"]), _f(wr, ".2f"), ">= 0.6x",
        _verdict(None if wr is None else wr >= TARGETS["wait_ratio"]))
    row("   SET+WAIT 1 p50 ms", _f(w_r["p50_ms"], ".2f"), _f(w_o["p50_ms"], ".2f"), "", "", "")
    row("   SET+WAIT 1 p99 ms", _f(w_r["p99_ms"], ".2f"), _f(w_o["p99_ms"], ".2f"), "", "", "")
    for label, o in pso.items():
        cfg = "appendEntriesUseBatch=False" if label.endswith("no-batch") else "default conf, batching"
        mr = ratio(m_r["ops"], o["ops"])
        row(f"3. majority writes/s (PySyncObj {cfg})", _f(m_r["ops"]), _f(o["ops"]), _f(mr, ".2f"), ">= 5x",
            _verdict(None if mr is None else mr >= TARGETS["majority_ratio"]))
        row("   majority p50 ms", _f(m_r["p50_ms"], ".2f"), _f(o["p50_ms"], ".2f"), "", "replikv < 5 ms",
            _verdict(None if m_r["p50_ms"] is None else m_r["p50_ms"] < TARGETS["majority_p50_ms"]))
        row("   majority p99 ms", _f(m_r["p99_ms"], ".2f"), _f(o["p99_ms"], ".2f"), "", "", "")
    row("4. follower catch-up ms (replikv only)", _f(cu, ".1f"), "", "", "<= 50 ms",
        _verdict(None if cu is None else cu <= TARGETS["catchup_ms"]))

    print()
    print("all rounds (server CPU us per request: leader/master + the two others; client: this process):")

    def cpu(x):
        return CpuMeter.show(x) if "cpu_us" in x else "-"
    for sysname in ("replikv", "redis"):
        print(f"  SET P1 {sysname:<8} " + "  ".join(
            f"{v:,.0f}/s ({cpu(c)})" for v, c in zip(R["set_p1"][sysname], R["cpu_set_p1"][sysname], strict=True)))
    for sysname in ("replikv", "redis"):
        print(f"  SET+WAIT {sysname:<8} " + "  ".join(
            f"{x['ops']:,.0f}/s p50 {x['p50_ms']:.2f} p99 {x['p99_ms']:.2f} ({cpu(x)})" for x in R["wait"][sysname]))
    for label in ("replikv", "pysyncobj no-batch", "pysyncobj batch"):
        print(f"  majority {label:<19} " + "  ".join(
            f"{x['ops']:,.0f}/s p50 {x['p50_ms']:.2f} p99 {x['p99_ms']:.2f} ({cpu(x)})" for x in R["majority"][label]))
    # each round runs the systems back to back, so a ratio within one round is less exposed
    # to the machine's load drifting over the run than the ratio of medians above
    def per_round(a: list, b: list) -> str:
        if len(a) != len(b):
            return "- (a run failed)"
        return " ".join(f"{x / y:.2f}" if x and y else "-" for x, y in zip(a, b, strict=True))
    print("  ratio per round: SET P1 " + per_round(R["set_p1"]["replikv"], R["set_p1"]["redis"])
          + "; SET+WAIT " + per_round([x["ops"] for x in R["wait"]["replikv"]], [x["ops"] for x in R["wait"]["redis"]])
          + "; majority / PySyncObj no-batch " + per_round([x["ops"] for x in R["majority"]["replikv"]],
                                                         [x["ops"] for x in R["majority"]["pysyncobj no-batch"]]))
    print("  catch-up ms " + "  ".join(
        f"{c['catchup_ms']:.1f} (behind {c['behind_at_ack']}, burst {c['burst_rps'] or 0:,.0f}/s)"
        if "catchup_ms" in c else c.get("error", "?") for c in R["catchup"]))
    return rows


def main() -> int:
    global CONNS
    if len(sys.argv) > 1 and sys.argv[1] == "--pysyncobj-node":
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        return pysyncobj_node(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=100000, help="-n of the SET P1 runs (1.)")
    ap.add_argument("--wait-requests", type=int, default=20000, help="SET+WAIT pairs per run (2.)")
    ap.add_argument("--majority-requests", type=int, default=20000,
                    help="committed writes per run (3.), replikv and PySyncObj without batching")
    ap.add_argument("--batch-requests", type=int, default=1500,
                    help="committed writes per run of PySyncObj with its default batching (~150/s)")
    ap.add_argument("--burst", type=int, default=100000, help="-n of the catch-up burst (4.)")
    ap.add_argument("--only", default="1234", help="which parts to run, e.g. 3 or 124 (default 1234)")
    ap.add_argument("--conns", type=int, default=CONNS,
                    help="connections of the lean client (2., 3.) and writes in flight in PySyncObj (3.); "
                         f"default {CONNS}, the setting the targets are measured at")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    CONNS = args.conns
    _procs.need("redis-server")
    _procs.need("redis-benchmark")
    try:
        import pysyncobj  # noqa: F401
    except ImportError:
        sys.exit("pysyncobj is not installed: pip install -e '.[bench]'")
    import atexit
    atexit.register(_stop_clusters)

    info = _procs.machine()
    load_before = _procs.loadavg()
    redis_ver = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()
    bench_ver = subprocess.run(["redis-benchmark", "--version"], capture_output=True, text=True).stdout.strip()
    import pysyncobj
    pso_ver = getattr(pysyncobj, "__version__", None) or _pkg_version("pysyncobj")
    _log(f"machine: {info['nproc']} cpu(s), {info['cpu']}, Python {info['python']}")
    _log(f"{redis_ver}; {bench_ver}; pysyncobj {pso_ver}")
    _log(f"replikv code: {_procs.use_source(None)}")
    _log(f"load average before: {load_before}")
    R = {"set_p1": {"replikv": [], "redis": []}, "cpu_set_p1": {"replikv": [], "redis": []},
         "wait": {"replikv": [], "redis": []},
         "majority": {"replikv": [], "pysyncobj batch": [], "pysyncobj no-batch": []}, "catchup": []}
    t0 = time.monotonic()
    try:
        for r in range(args.rounds):
            _log(f"round {r + 1}/{args.rounds} (load {_procs.loadavg()}, {time.monotonic() - t0:.0f}s)")
            if set(args.only) & set("124"):
                steps = [lambda: run_replikv_async(args, R)]
                if set(args.only) & set("12"):
                    steps.append(lambda: run_redis(args, R))
                for f in (steps if r % 2 == 0 else reversed(steps)):
                    f()
            if "3" in args.only:
                steps = [lambda: run_replikv_majority(args, R), lambda: run_pysyncobj(args, R, batch=False),
                         lambda: run_pysyncobj(args, R, batch=True)]
                for f in (steps if r % 2 == 0 else reversed(steps)):
                    f()
    except KeyboardInterrupt:
        _log("\ninterrupted: stopping the servers; partial results follow")
    finally:
        _stop_clusters()
    rows = report(R, args.rounds)
    load_after = _procs.loadavg()
    print(f"\nload average before: {load_before}; after: {load_after}; wall {time.monotonic() - t0:.0f}s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": info, "load_before": load_before, "load_after": load_after, "redis": redis_ver,
                       "pysyncobj": pso_ver, "rounds": args.rounds, "rows": rows, "raw": R, "args": vars(args)},
                      fh, indent=1)
    return 0


def _pkg_version(name: str) -> str:
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:  # noqa: BLE001
        return "?"


if __name__ == "__main__":
    sys.exit(main())
