#!/usr/bin/env python3
"""Reads from followers, and what each session guarantee costs (MISSION G1-G3).

    python bench/bench_reads.py [--rounds 3] [--seconds 3] [--threads 8] [--iterations 100] [--lag-ms 20]

One leader-mode cluster of real node processes (LocalCluster, in a temp dir): two
partitions of a leader and two followers each, every node killed at exit (also on Ctrl-C
and SIGTERM).

A. Read throughput, partition 1, followers with no apply delay, leader only against both
   followers at once:
   - redis-benchmark (C, no client bottleneck): GET of 10,000 preloaded keys, -c 50, for
     about --seconds per side; "followers" runs one redis-benchmark per follower at the same
     time and adds their rates;
   - the replikv Client (Python, --threads threads, guarantees off): read_from_followers
     False against True (round robin over both followers), --seconds each.
   Medians over --rounds rounds, the order of the two sides alternating.
B. The latency of each guarantee: --threads sessions, each --iterations times: write its own
   key in partition 1 and one in partition 2 (the second write carries CAUSAL when consistent
   prefix is on), read both back (partition 2 first), and read one preloaded key of each
   partition. Settings: off, token read-your-writes, monotonic reads (sticky by user id),
   consistent prefix, all three. Run with the followers' apply delay at 0 and at --lag-ms,
   --rounds times in a rotating order (so drifts of the machine's load spread over all
   settings); the latencies of all rounds are pooled.
   "own-write misses" counts reads of the session's own just-written keys that returned
   something older: the anomaly the guarantee prevents.

Numbers depend on the machine's load; the loadavg before and after is printed with them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from replikv.client import Client, Session  # noqa: E402
from replikv.cluster.local import LocalCluster  # noqa: E402
from replikv.server.clusterconfig import key_slot, partition_of_slot  # noqa: E402

KEYS = 10_000
SETTINGS = {
    "off": dict(read_your_writes=None, monotonic_reads=False, consistent_prefix=False),
    "read-your-writes (token)": dict(read_your_writes="token", monotonic_reads=False, consistent_prefix=False),
    "monotonic reads": dict(read_your_writes=None, monotonic_reads=True, consistent_prefix=False),
    "consistent prefix": dict(read_your_writes=None, monotonic_reads=False, consistent_prefix=True),
    "all three": dict(read_your_writes="token", monotonic_reads=True, consistent_prefix=True),
}


def tag_for(partition: int) -> str:
    """A hash tag whose keys land in ``partition`` (of 2)."""
    return next(t for t in (f"p{i}" for i in range(100))
                if partition_of_slot(key_slot(t.encode()), 2) == partition)


def loadavg() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def free_base(span: int) -> int:
    import socket

    base = 30000 + (os.getpid() % 300) * 60
    while True:
        ok = True
        for off in (0, 100, 200, 399):   # RESP, peer, HTTP ports; the fault agent's port
            for i in range(span if off < 399 else 1):
                with socket.socket() as s:
                    try:
                        s.bind(("127.0.0.1", base + off + i))
                    except OSError:
                        ok = False
        if ok:
            return base
        base += 7


# ---------------------------------------------------------------------------- cluster
class Cluster:
    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="bench-reads-")
        self.cl = LocalCluster.create(self.root, 3, free_base(6), mode="leader", partitions=2,
                                      cluster_settings={"ack": "async", "heartbeat_ms": 100,
                                                        "election_timeout_ms": 3000, "auto_failover": False})

    def __enter__(self) -> Cluster:
        self.cl.start()
        self.wait_streaming()
        return self

    def __exit__(self, *exc) -> None:
        for n in self.cl.nodes:
            try:
                self.cl.kill(n.node_id)
            except Exception:  # noqa: BLE001 - already gone
                pass
        try:
            self.cl.stop_agent()
        except Exception:  # noqa: BLE001
            pass
        shutil.rmtree(self.root, ignore_errors=True)

    def wait_streaming(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._streaming(p) for p in (1, 2)):
                return
            time.sleep(0.1)
        raise RuntimeError("the followers did not start streaming")

    def _streaming(self, p: int) -> bool:
        lead = self.cl.leader(p)
        if lead is None:
            return False
        fl = self.cl.http_get(lead, "/status")["replication"]["followers"]
        return sum(1 for f in fl if f["link"] == "up" and f["state"] == "streaming") == 2

    def followers(self, p: int) -> list:
        lead = self.cl.leader(p)
        return [n for n in self.cl.partition_nodes(p) if n.node_id != lead.node_id]

    def set_delay(self, ms: int) -> None:
        import redis

        for p in (1, 2):
            for f in self.followers(p):
                redis.Redis(port=f.port).execute_command("REPLICA", "DELAY", ms)

    def client(self, session: Session | None = None, **kw) -> Client:
        return Client([n.address for n in self.cl.nodes], session=session, **kw)


# ---------------------------------------------------------------------------- A. throughput
def redis_benchmark(port: int, seconds: float, tag: str, out: list, n: int) -> None:
    cmd = ["redis-benchmark", "-p", str(port), "-c", "50", "-n", str(n), "-r", str(KEYS), "--csv",
           "GET", f"{{{tag}}}:key:__rand_int__"]
    t0 = time.monotonic()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * 6 + 30,
                           stdin=subprocess.DEVNULL, start_new_session=True)
    except subprocess.TimeoutExpired:
        out.append(float("nan"))
        return
    elapsed = time.monotonic() - t0
    rps = None
    for line in r.stdout.splitlines():
        cells = [c.strip('"') for c in line.split(",")]
        if len(cells) >= 2 and cells[0] != "test":
            try:
                rps = float(cells[1])
            except ValueError:
                pass
    out.append(rps if rps is not None else n / elapsed)


def bench_redis_benchmark(c: Cluster, seconds: float, side: str) -> float:
    tag = tag_for(1)
    lead, fl = c.cl.leader(1), c.followers(1)
    # size the request count to about ``seconds`` from a short probe of the leader
    probe: list = []
    redis_benchmark(lead.port, 1, tag, probe, 3000)
    n = max(int(probe[0] * seconds), 3000)
    out: list = []
    if side == "leader only":
        redis_benchmark(lead.port, seconds, tag, out, n)
        return out[0]
    threads = [threading.Thread(target=redis_benchmark, args=(f.port, seconds, tag, out, n // 2)) for f in fl]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(out)


def bench_client_reads(c: Cluster, threads: int, seconds: float, from_followers: bool) -> float:
    tag = tag_for(1)
    stop = threading.Event()
    counts = [0] * threads

    def run(k: int) -> None:
        cli = c.client(Session(**SETTINGS["off"]), read_from_followers=from_followers)
        i = k
        try:
            while not stop.is_set():
                cli.get(f"{{{tag}}}:key:{i % KEYS:012d}")
                counts[k] += 1
                i += threads
        finally:
            cli.close()

    ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    time.sleep(seconds)   # the measurement window (not a synchronisation)
    stop.set()
    for t in ts:
        t.join()
    return sum(counts) / seconds


# ---------------------------------------------------------------------------- B. guarantees
def bench_guarantee(c: Cluster, name: str, threads: int, iterations: int) -> dict:
    t1, t2 = tag_for(1), tag_for(2)
    reads: list = []
    writes: list = []
    misses = [0]
    lock = threading.Lock()

    def run(k: int) -> None:
        cli = c.client(Session(user_id=f"bench{k}", **SETTINGS[name]), wait_timeout_ms=5000)
        my_r, my_w, my_miss = [], [], 0
        pc = time.perf_counter
        try:
            for i in range(iterations):
                a, b = f"{{{t1}}}:own:{k}", f"{{{t2}}}:own:{k}"
                val = f"{name}:{k}:{i}".encode()
                t = pc()
                cli.set(a, val)
                my_w.append(pc() - t)
                t = pc()
                cli.set(b, val)
                my_w.append(pc() - t)
                for key, own in ((b, True), (a, True), (f"{{{t1}}}:key:{(k * 7919 + i) % KEYS:012d}", False),
                                 (f"{{{t2}}}:key:{(k * 7919 + i) % KEYS:012d}", False)):
                    t = pc()
                    v = cli.get(key)
                    my_r.append(pc() - t)
                    if own and v != val:
                        my_miss += 1
        finally:
            cli.close()
            with lock:
                reads.extend(my_r)
                writes.extend(my_w)
                misses[0] += my_miss

    t0 = time.monotonic()
    ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return {"reads": reads, "writes": writes, "secs": time.monotonic() - t0, "iters": threads * iterations,
            "misses": misses[0], "own": threads * iterations * 2}


def preload(c: Cluster) -> None:
    for p in (1, 2):
        tag = tag_for(p)
        r = c.client(Session(**SETTINGS["off"]))
        lead = r.conn(r.leader(p))
        for lo in range(0, KEYS, 1000):
            pipe = lead.pipeline(transaction=False)
            for i in range(lo, min(lo + 1000, KEYS)):
                pipe.set(f"{{{tag}}}:key:{i:012d}", b"x" * 100)
            pipe.execute()
        # measure only once every follower has applied the preload
        want = int(lead.execute_command("POS").decode().split(":")[1])
        deadline = time.monotonic() + 120
        for f in c.followers(p):
            fc = r.conn((f.host, f.port))
            while int(fc.execute_command("POS").decode().split(":")[1]) < want:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"follower {f.node_id} did not apply the preload")
                time.sleep(0.05)
        r.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each throughput measurement")
    ap.add_argument("--threads", type=int, default=8, help="client threads (sessions)")
    ap.add_argument("--iterations", type=int, default=100, help="iterations per session, setting and round")
    ap.add_argument("--lag-ms", type=int, default=20, help="the followers' apply delay of the second pass")
    args = ap.parse_args()
    if shutil.which("redis-benchmark") is None:
        sys.exit("redis-benchmark not found: install redis-tools (`make deps` does)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    load0 = loadavg()
    print(f"cpus {os.cpu_count()}, loadavg {load0}; python {sys.version.split()[0]}; "
          f"{' '.join(sys.argv[1:]) or 'defaults'}", flush=True)
    with Cluster() as c:
        preload(c)
        c.set_delay(0)
        print("\nA. read throughput, partition 1 (followers' apply delay 0)", flush=True)
        rb: dict = {"leader only": [], "two followers": []}
        cr: dict = {"leader only": [], "two followers": []}
        for rnd in range(args.rounds):
            for side in (("leader only", "two followers") if rnd % 2 == 0 else ("two followers", "leader only")):
                rb[side].append(bench_redis_benchmark(c, args.seconds, side))
                cr[side].append(bench_client_reads(c, args.threads, args.seconds, side == "two followers"))
        print(f"  {'':<32}{'leader only':>14}{'two followers':>16}{'ratio':>8}")
        for label, r in (("redis-benchmark GET -c 50", rb), (f"replikv Client, {args.threads} threads", cr)):
            lo, fo = statistics.median(r["leader only"]), statistics.median(r["two followers"])
            print(f"  {label:<32}{lo:>10.0f} r/s{fo:>12.0f} r/s{fo / lo:>7.2f}x", flush=True)

        print(f"\nB. session guarantees: {args.threads} sessions x {args.iterations} iterations x "
              f"{args.rounds} rounds (2 writes, 4 reads each)", flush=True)
        results: dict = {}
        names = list(SETTINGS)
        for lag in (0, args.lag_ms):
            c.set_delay(lag)
            for rnd in range(args.rounds):
                for name in names[rnd % len(names):] + names[:rnd % len(names)]:
                    r = bench_guarantee(c, name, args.threads, args.iterations)
                    acc = results.setdefault((lag, name), {"reads": [], "writes": [], "secs": 0.0,
                                                           "iters": 0, "misses": 0, "own": 0})
                    for k in ("reads", "writes", "secs", "iters", "misses", "own"):
                        acc[k] += r[k]
        print(f"  {'guarantee':<26}{'lag':>6}{'read p50':>10}{'mean':>9}{'p99':>9}{'write p50':>11}"
              f"{'iter/s':>8}{'own-write misses':>18}")
        for lag in (0, args.lag_ms):
            for name in SETTINGS:
                a = results[(lag, name)]
                p99 = statistics.quantiles(a["reads"], n=100)[98]
                print(f"  {name:<26}{lag:>4}ms{statistics.median(a['reads']) * 1000:>8.2f}ms"
                      f"{statistics.fmean(a['reads']) * 1000:>7.2f}ms{p99 * 1000:>7.1f}ms"
                      f"{statistics.median(a['writes']) * 1000:>9.2f}ms{a['iters'] / a['secs']:>8.0f}"
                      f"{a['misses']:>10} / {a['own']}", flush=True)
    print(f"\nloadavg before {load0}, after {loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
