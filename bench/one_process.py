#!/usr/bin/env python3
"""A whole replicated cluster in one process: three real replikv Nodes (a leader and two
followers, leader mode, fsync everysec) and a lean client (16 connections, one request in
flight each) on one uvloop, talking over real loopback sockets. Reports the CPU the whole
cluster and its client spend per write, and with ``--profile`` the Python function calls per
write (cProfile) and where they go.

    python bench/one_process.py [--mode major|wait|async] [--requests 20000] [--reps 3] [--profile]

Why: the multi-process benchmarks (bench_replication.py, ab_replication.py) move by 10-20%
from run to run on this shared 2-core VM, mostly with how the four processes meet on the two
cores, which hides changes of a few percent. Here nothing is scheduled between processes;
the CPU per write still moves by about 5% between runs (take the minimum over ``--reps``),
and the call count per write under ``--profile`` is exact: a change that removes Python
work shows there at once. The batches differ from the real deployment (one thread
interleaves the client, the leader and the followers, so about 12 writes share a message
instead of about 6), so absolute numbers are this harness's own: compare one tree against
another, never against the multi-process runs. Modes: ``major`` is the majority
measurement (ack semi-sync:1), ``wait`` SET + WAIT 1 under async acks, ``async`` SET alone.
Before the CPU is measured the cluster converges; at the end the three keyspace digests are
compared. Benchmarks report; they never assert.

To compare two trees: ``--compare BASE [NEW]`` (a git revision, ``WORKTREE`` or a directory
holding a ``replikv`` package, as bench/ab_replication.py takes; NEW defaults to WORKTREE)
runs each in its own process, alternating, ``--rounds`` times, with ``--profile``, and prints
both sides' Python calls per write and least CPU per write:

    python bench/one_process.py --compare 9cc4ea7 --mode wait --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

VALUE = b"x" * 100
WAIT_CMD = b"*3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$4\r\n1000\r\n"


class _Client(asyncio.Protocol):
    """One connection: the next request leaves as soon as the last one's replies are in."""

    def __init__(self, reqs: list[bytes], lines: int, done: asyncio.Future) -> None:
        self.reqs = reqs
        self.i = 0
        self.lines = lines
        self.got = 0
        self.buf = b""
        self.done = done
        self.bad = 0

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._send()

    def _send(self) -> None:
        if self.i >= len(self.reqs):
            self.transport.close()
            if not self.done.done():
                self.done.set_result(self.bad)
            return
        self.transport.write(self.reqs[self.i])
        self.i += 1

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        start = 0
        while True:
            end = buf.find(b"\r\n", start)
            if end < 0:
                break
            if buf[start:start + 1] == b"-":
                self.bad += 1
            start = end + 2
            self.got += 1
            if self.got == self.lines:
                self.got = 0
                self._send()
        self.buf = buf[start:]

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"connection lost after {self.i} requests"))


async def _load(port: int, n: int, mode: str, seed: int, conns: int = 16) -> int:
    rnd = random.Random(seed)
    loop = asyncio.get_running_loop()
    futs = []
    for _ in range(conns):
        reqs = []
        for _ in range(n // conns):
            key = b"key:%012d" % rnd.randrange(100000)
            req = b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(VALUE), VALUE)
            reqs.append(req + WAIT_CMD if mode == "wait" else req)
        fut = loop.create_future()
        futs.append(fut)
        await loop.create_connection(lambda r=reqs, f=fut: _Client(r, 2 if mode == "wait" else 1, f),
                                     "127.0.0.1", port)
    return sum(await asyncio.gather(*futs))


async def _run(args) -> dict:
    import _procs

    from replikv.cluster.local import LocalCluster
    from replikv.server.config import load
    from replikv.server.node import Node

    root = _procs.tmpdir("one-process-")
    base = _procs.free_port(also=(1, 2, 100, 101, 102, 200, 201, 202, 399))
    ack = "semi-sync:1" if args.mode == "major" else "async"
    cl = LocalCluster.create(root, 3, base, mode="leader", settings={"fsync": "everysec"},
                             cluster_settings={"ack": ack})
    cl.save()
    nodes = []
    for spec in cl.nodes:
        os.makedirs(spec.data_dir, exist_ok=True)
        cfg = load(None, {"node_id": spec.node_id, "host": spec.host, "port": spec.port, "peer_port": spec.peer_port,
                          "http_port": spec.http_port, "data_dir": spec.data_dir, "cluster": cl.cluster_file,
                          "fsync": "everysec"})
        node = Node(cfg)
        await node.start()
        nodes.append(node)
    leader = nodes[0]
    try:
        for _ in range(400):
            r = leader.repl
            if r.role == "leader" and len(r._streams) == 2 and all(s.live for s in r._streams.values()):
                break
            await asyncio.sleep(0.05)
        else:
            raise SystemExit("the followers did not start streaming")
        await _load(leader.config.port, 2000, args.mode, 1)      # warm-up
        out = {"cpu_us": [], "ops": [], "errors": 0}
        prof = None
        if args.profile:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        for rep in range(args.reps):
            t0, w0 = time.process_time(), time.perf_counter()
            out["errors"] += await _load(leader.config.port, args.requests, args.mode, 2 + rep)
            cpu, wall = time.process_time() - t0, time.perf_counter() - w0
            out["cpu_us"].append(cpu / args.requests * 1e6)
            out["ops"].append(args.requests / wall)
            print(f"  rep {rep + 1}: {out['cpu_us'][-1]:.2f} µs CPU per write (cluster and client), "
                  f"{out['ops'][-1]:,.0f} writes/s", flush=True)
        if prof is not None:
            prof.disable()
            out["profile"] = prof
        for _ in range(100):
            if len({n.digest() for n in nodes}) == 1:
                break
            await asyncio.sleep(0.05)
        out["converged"] = len({n.digest() for n in nodes}) == 1
        return out
    finally:
        for node in reversed(nodes):
            await node.stop()


def compare(args) -> int:
    """Run BASE and NEW alternately in child processes (see the module docstring)."""
    import json
    import statistics
    import subprocess

    from ab_replication import tree

    specs = list(args.compare) + ["WORKTREE"] * (2 - len(args.compare))
    sides = [(spec, tree(spec)) for spec in specs[:2]]
    got: dict[str, list[dict]] = {spec: [] for spec, _ in sides}
    for r in range(args.rounds):
        for spec, path in sides:
            env = dict(os.environ, PYTHONPATH=path + os.pathsep + os.environ.get("PYTHONPATH", ""),
                       PYTHONHASHSEED="0")
            p = subprocess.run([sys.executable, os.path.abspath(__file__), "--mode", args.mode, "--requests",
                                str(args.requests), "--reps", str(args.reps), "--profile", "--top", "0", "--json"],
                               cwd=path, env=env, capture_output=True, text=True, timeout=1800)
            if p.returncode != 0:
                print(f"round {r + 1} {spec}: failed\n{p.stderr[-2000:]}", flush=True)
                continue
            res = json.loads(p.stdout.strip().splitlines()[-1])
            got[spec].append(res)
            print(f"round {r + 1} {spec:<12} {res['calls']:7.1f} Python calls per write   "
                  f"{res['cpu_us']:6.2f} µs CPU per write (under cProfile)", flush=True)
    if all(got.values()):
        (a, ra), (b, rb) = got.items()
        ca, cb = statistics.mean(x["calls"] for x in ra), statistics.mean(x["calls"] for x in rb)
        ua, ub = min(x["cpu_us"] for x in ra), min(x["cpu_us"] for x in rb)
        print(f"{args.mode}: {a} {ca:.1f} -> {b} {cb:.1f} calls per write ({cb / ca - 1:+.1%}); "
              f"least CPU {ua:.2f} -> {ub:.2f} µs ({ub / ua - 1:+.1%})")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("major", "wait", "async"), default="major")
    ap.add_argument("--requests", type=int, default=20000, help="writes per rep")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="cProfile the reps: Python calls per write, top functions")
    ap.add_argument("--top", type=int, default=30, help="functions listed with --profile")
    ap.add_argument("--compare", nargs="+", metavar="TREE", help="BASE [NEW]: compare two trees (see above)")
    ap.add_argument("--rounds", type=int, default=2, help="with --compare: runs of each tree")
    ap.add_argument("--json", action="store_true", help="also print the result as one JSON line")
    args = ap.parse_args()
    if args.compare:
        if len(args.compare) > 2:
            ap.error("--compare takes BASE and optionally NEW")
        if args.reps == 3:
            args.reps = 1
        return compare(args)
    logging.basicConfig(level=logging.WARNING)
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    import replikv

    print(f"replikv from {os.path.dirname(replikv.__file__)}; mode {args.mode}, {args.requests} writes x {args.reps}")
    out = runner(_run(args))
    print(f"min {min(out['cpu_us']):.2f} µs CPU per write; best {max(out['ops']):,.0f} writes/s; "
          f"error replies {out['errors']}; the three keyspaces equal: {out['converged']}")
    prof = out.get("profile")
    calls = None
    if prof is not None:
        import pstats

        st = pstats.Stats(prof)
        w = args.requests * args.reps
        calls = sum(v[1] for v in st.stats.values())
        print(f"Python calls per write (cProfile, whole cluster and client): {calls / w:.1f}")
        rows = sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:args.top]
        print(f"{'calls/write':>11} {'own µs/write':>12} {'cum µs/write':>12}  function (times inflated by cProfile)")
        for (fn, ln, name), (_cc, nc, tt, ct, _callers) in rows:
            print(f"{nc / w:11.3f} {tt / w * 1e6:12.2f} {ct / w * 1e6:12.2f}  {os.path.basename(fn)}:{ln} {name}")
    if args.json:
        import json

        print(json.dumps({"cpu_us": min(out["cpu_us"]), "ops": max(out["ops"]), "converged": out["converged"],
                          "calls": None if calls is None else calls / (args.requests * args.reps)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
