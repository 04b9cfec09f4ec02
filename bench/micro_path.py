#!/usr/bin/env python3
"""CPU cost of replikv's command path in-process, without sockets: microseconds of CPU
per command, for the baseline and for the candidate optimisations in bench/patches.py.

    python bench/micro_path.py [--variants base,hiredis,...] [--repeat 5] [--commands 200000] [--rev REV]

Why: on a shared 2-core machine, end-to-end throughput swings by 2x with other people's
load; CPU time (time.process_time) of the same in-process work hardly does. This drives
the real classes (ClientConnection.data_received -> RequestParser -> Node.execute ->
command -> Storage.append -> reply; Node._flush -> log os.write -> replies) with a fake
transport and a fake loop, the way uvloop does under redis-benchmark -c 50:
  P1:  50 connections each deliver one command, then the loop's end-of-iteration _flush;
  P16: 50 connections each deliver 16 pipelined commands, then _flush.
Commands mimic redis-benchmark -d 100 -r 100000 (key:<12 digits>, 100-byte values); GET
runs after SET on the same keys. The socket read/write syscalls are not in these numbers
(see bench/profile_node.py for them); the log os.write under fsync everysec is.

Each variant runs in its own subprocess (patches change classes globally); variants are
interleaved and repeated, and the minimum of the repeats is reported (the usual choice for
CPU microbenchmarks: noise only ever adds time).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


class FakeTransport:
    def __init__(self) -> None:
        self.bytes = 0
        self.writes = 0

    def write(self, data) -> None:
        self.bytes += len(data)
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name, default=None):
        return default

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class FakeLoop:
    def __init__(self) -> None:
        self.q: list = []

    def call_soon(self, fn, *args):
        self.q.append((fn, args))

    def run_ready(self) -> None:
        while self.q:
            q, self.q = self.q, []
            for fn, args in q:
                fn(*args)

    def time(self) -> float:
        return time.monotonic()


def _cmd(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def _preload(conns, loop, reqs) -> None:
    for i in range(0, len(reqs), 16):
        conns[(i // 16) % 50].data_received(b"".join(reqs[i:i + 16]))
        loop.run_ready()


def child(patch_names: str, n: int, fsync: str, only: str = "") -> dict:
    sys.path.insert(0, HERE)
    import patches

    patches.apply(patch_names)
    from replikv.server.config import NodeConfig
    from replikv.server.connection import ClientConnection
    from replikv.server.node import Node

    rnd = random.Random(42)
    value = b"x" * 100
    keys = [b"key:%012d" % rnd.randrange(100000) for _ in range(n)]
    sets = [_cmd(b"SET", k, value) for k in keys]
    gets = [_cmd(b"GET", k) for k in keys]
    out = {}
    with tempfile.TemporaryDirectory(prefix="micro-replikv-") as d:
        node = Node(NodeConfig(data_dir=os.path.join(d, "data"), fsync=fsync))
        node.storage.recover()
        node.visible_seq = node.storage.last_seq
        loop = FakeLoop()
        node._loop = loop
        conns = []
        for _ in range(50):
            c = ClientConnection(node)
            c.connection_made(FakeTransport())
            conns.append(c)
        for name, reqs in (("SET", sets), ("GET", gets)):
            for pipeline in (1, 16):
                if only and f"{name} P{pipeline}" not in only.split(","):
                    if name == "SET" and pipeline == 16 and "GET" in only:
                        _preload(conns, loop, reqs)  # GET needs the keys (a distinct frame for profiles)
                    continue
                batches = [b"".join(reqs[i:i + pipeline]) for i in range(0, len(reqs), pipeline)]
                t0 = time.process_time()
                for i, data in enumerate(batches):
                    conns[i % 50].data_received(data)
                    if i % 50 == 49:
                        loop.run_ready()
                loop.run_ready()
                dt = time.process_time() - t0
                out[f"{name} P{pipeline}"] = dt / len(reqs) * 1e6
        replies = sum(c.transport.writes for c in conns)
        node.storage.close()
        node._io.shutdown(wait=False)
    out["_writes"] = replies
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="base,hiredis,parser,direct_reply,direct_reply+lean_dispatch,"
                                          "hiredis+direct_reply+lean_dispatch")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--commands", type=int, default=200000)
    ap.add_argument("--fsync", default="everysec")
    ap.add_argument("--rev", help="measure `git archive REV` of replikv instead of the installed package")
    ap.add_argument("--only", default="", help='child only: e.g. "SET P1" (for profiling one test)')
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child("" if args.child == "base" else args.child.replace("+", ","),
                               args.commands, args.fsync, args.only)))
        return 0
    sys.path.insert(0, HERE)
    import _procs

    print(f"replikv code: {_procs.use_source(args.rev)}; load average {_procs.loadavg()}")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if "base" not in variants:
        variants.insert(0, "base")
    res: dict[str, dict[str, list[float]]] = {v: {} for v in variants}
    for r in range(args.repeat):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for v in order:
            p = subprocess.run([sys.executable, __file__, "--child", v, "--commands", str(args.commands),
                                "--fsync", args.fsync], capture_output=True, text=True, timeout=600,
                               env=_procs.NODE_ENV)
            if p.returncode != 0:
                print(f"{v}: failed\n{p.stderr[-2000:]}")
                continue
            for k, x in json.loads(p.stdout.strip().splitlines()[-1]).items():
                if not k.startswith("_"):
                    res[v].setdefault(k, []).append(x)
        print(f"  repeat {r + 1}/{args.repeat} done (load {_procs.loadavg()})", flush=True)
    keys = ["SET P1", "GET P1", "SET P16", "GET P16"]
    print(f"\nCPU microseconds per command, in-process, min of {args.repeat} (fsync {args.fsync}; "
          f"no socket syscalls); in brackets: change vs base")
    print(f"{'variant':<40} " + " ".join(f"{k:>16}" for k in keys))
    base = {k: min(res["base"][k]) for k in keys if res["base"].get(k)}
    for v in variants:
        cells = []
        for k in keys:
            if not res[v].get(k):
                cells.append(f"{'-':>16}")
                continue
            x = min(res[v][k])
            cells.append(f"{x:>7.2f} ({100 * (x / base[k] - 1):+5.0f}%)" if k in base else f"{x:>16.2f}")
        print(f"{v:<40} " + " ".join(cells))
    print(f"\nload average after: {_procs.loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
