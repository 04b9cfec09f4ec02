#!/usr/bin/env python3
"""Measure candidate optimisations (bench/patches.py) against the unpatched node.

    python bench/experiments.py [--rounds 5] [--requests 100000] [--variants a,b+c,...]
                                [--fsync everysec] [--check-only]

Each variant is a '+'-joined set of patches ('base' = none). Per round every variant runs
on a fresh node (fsync everysec by default) with
``redis-benchmark -t set,get -n N -c 50 -d 100 -r 100000`` at -P 1 and -P 16; the order of
the variants rotates each round. Reported: the median requests/s per variant and test,
and the median over rounds of the ratio variant/base measured in the same round (which
cancels most of the machine's load drift).

Before measuring, every variant is checked for the same replies as the unpatched node on
a small script of commands (pipelined, split frames, inline, MULTI, errors), so a patch
that breaks the protocol shows up instead of looking fast.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _procs  # noqa: E402
from bench_single import redis_benchmark  # noqa: E402

DEFAULT_VARIANTS = ["base", "hiredis", "parser", "direct_reply", "direct_reply+lean_dispatch",
                    "hiredis+direct_reply+lean_dispatch"]

# (bytes to send as separate chunks) — the replies of all must match the unpatched node
CHECK_SCRIPT = [
    [b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$3\r\none\r\n"],
    [b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n*2\r\n$3\r\nGET\r\n$1\r\nb\r\n*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n"],
    [bytes([c]) for c in b"*3\r\n$3\r\nSET\r\n$1\r\nb\r\n$5\r\nsplit\r\n"],
    [b"*2\r\n$3\r\nGET\r\n$1\r\nb\r\n"],
    [b"PING\r\n"],
    [b"*1\r\n$5\r\nMULTI\r\n*3\r\n$3\r\nSET\r\n$1\r\nc\r\n$1\r\n1\r\n*2\r\n$4\r\nINCR\r\n$1\r\nc\r\n*1\r\n$4\r\nEXEC\r\n"],
    [b"*2\r\n$3\r\nGET\r\n"],  # incomplete ...
    [b"$1\r\nc\r\n"],          # ... completed
    [b"*1\r\n$3\r\nGET\r\n", b"*3\r\n$3\r\nSET\r\n$1\r\nd\r\n$2\r\nxx\r\n*2\r\n$4\r\nINCR\r\n$1\r\nd\r\n"],
    [b"*3\r\n$3\r\nSET\r\n$1\r\nv\r\n$70000\r\n" + b"x" * 70000 + b"\r\n*2\r\n$6\r\nSTRLEN\r\n$1\r\nv\r\n"],
    [b"*2\r\n$3\r\nSET\r\n$1\r\nq\r\n*1\r\n$4\r\nPING\r\n"],
    [b"*1\r\n$4\r\nPING\r\n*1\r\n:5\r\n"],  # protocol error: the connection closes
]


def _exchange(port: int) -> list[bytes]:
    got = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        for chunks in CHECK_SCRIPT:
            note = b""
            for c in chunks:
                try:
                    s.sendall(c)
                except OSError as ex:
                    note = f"<send failed: {ex.__class__.__name__}>".encode()
                    break
                time.sleep(0.002 if len(chunks) > 1 else 0)
            time.sleep(0.1)
            s.settimeout(0.3)
            data = b""
            try:
                while True:
                    b = s.recv(1 << 20)
                    if not b:
                        data += b"<closed>"
                        break
                    data += b
            except socket.timeout:
                pass
            except OSError as ex:
                data += f"<recv failed: {ex.__class__.__name__}>".encode()
            got.append(data + note)
    return got


def _start(variant: str, fsync: str):
    d = _procs.tmpdir("exp-replikv-")
    port = _procs.free_port(also=(10000, 20000))
    patches = "" if variant == "base" else variant.replace("+", ",")
    env = dict(_procs.NODE_ENV, REPLIKV_BENCH_PATCHES=patches)
    entry = [os.path.join(HERE, "patched_node.py")] if patches else None
    cmd = _procs.replikv_cmd(port, os.path.join(d, "data"), fsync, entry=entry)
    return _procs.start(cmd, port, os.path.join(d, "node.log"), env=env), port


def check(variants: list[str], fsync: str) -> bool:
    ref = None
    ok = True
    for v in ["base"] + [x for x in variants if x != "base"]:
        proc, port = _start(v, fsync)
        try:
            got = _exchange(port)
        finally:
            _procs.stop(proc)
        if ref is None:
            ref = got
            continue
        bad = [i for i, (a, b) in enumerate(zip(ref, got, strict=True)) if a != b]
        if bad:
            ok = False
            for i in bad:
                print(f"  check {v}: step {i} differs: base {ref[i][:120]!r} vs {got[i][:120]!r}")
        else:
            print(f"  check {v}: same replies as base on {len(ref)} steps")
    return ok


def _fsync_stats(port: int) -> tuple[float, float]:
    """(fsync count, fsync seconds) so far, from the node's /metrics."""
    import urllib.request

    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port + 20000}/metrics", timeout=5).read().decode()
    except OSError:
        return float("nan"), float("nan")
    count = total = float("nan")
    for line in text.splitlines():
        if line.startswith("replikv_fsync_seconds_count"):
            count = float(line.split()[-1])
        elif line.startswith("replikv_fsync_seconds_sum"):
            total = float(line.split()[-1])
    return count, total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=100000)
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    ap.add_argument("--fsync", default="everysec")
    ap.add_argument("--check-only", action="store_true")
    ap.add_argument("--plan", default="set:1,get:1,set:16,get:16",
                    help="test:pipeline runs per variant, in order (GET after SET finds the keys)")
    ap.add_argument("--rev", help="measure `git archive REV` of replikv instead of the installed package")
    args = ap.parse_args()
    _procs.need("redis-benchmark")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if "base" not in variants:
        variants.insert(0, "base")
    print(f"replikv code: {_procs.use_source(args.rev)}")
    print(f"load average before: {_procs.loadavg()}")
    print("protocol check:")
    if not check(variants, args.fsync):
        print("some variants differ from base: their numbers below are not comparable")
    if args.check_only:
        return 0
    plan = [(p.split(":")[0], int(p.split(":")[1])) for p in args.plan.split(",")]
    res: dict[str, dict[str, list[float]]] = {v: {} for v in variants}
    cpu: dict[str, dict[str, list[float]]] = {v: {} for v in variants}
    ratios: dict[str, dict[str, list[float]]] = {v: {} for v in variants}
    fs: dict[str, list[tuple[float, float]]] = {}  # fsync always: (writes per fsync, ms per fsync)
    try:
        for r in range(args.rounds):
            order = variants[r % len(variants):] + variants[:r % len(variants)]
            print(f"round {r + 1}/{args.rounds} (load {_procs.loadavg()})", flush=True)
            this: dict[str, dict[str, float]] = {}
            for v in order:
                proc, port = _start(v, args.fsync)
                try:
                    for t, pl in plan:  # -t set then -t get = -t set,get, with CPU charged per test
                        c0 = _procs.cpu_seconds(proc.pid)
                        f0 = _fsync_stats(port) if args.fsync == "always" else None
                        got = redis_benchmark(port, t, args.requests, pl)
                        us = (_procs.cpu_seconds(proc.pid) - c0) / args.requests * 1e6
                        if f0 is not None:
                            f1 = _fsync_stats(port)
                            nf = f1[0] - f0[0]
                            if nf > 0:
                                fs.setdefault(v, []).append((args.requests / nf, (f1[1] - f0[1]) / nf * 1e3))
                        for test, rps in got.items():
                            key = f"{test} P{pl}"
                            this.setdefault(v, {})[key] = rps
                            res[v].setdefault(key, []).append(rps)
                            cpu[v].setdefault(key, []).append(us)
                finally:
                    _procs.stop(proc)
                print(f"  {v:<40} " + "  ".join(f"{k} {x:,.0f} ({cpu[v][k][-1]:.1f}us)"
                                                 for k, x in this.get(v, {}).items()), flush=True)
            for v in variants:
                for k, x in this.get(v, {}).items():
                    b = this.get("base", {}).get(k)
                    if b:
                        ratios[v].setdefault(k, []).append(x / b)
    except KeyboardInterrupt:
        print("\ninterrupted; partial results follow")
    keys = [f"{t.upper()} P{pl}" for t, pl in plan]

    def table(title, data, fmt_cell):
        print(f"\n{title}")
        print(f"{'variant':<40} " + " ".join(f"{k:>9}" for k in keys))
        for v in variants:
            print(f"{v:<40} " + " ".join(fmt_cell(data[v][k]) if data[v].get(k) else f"{'-':>9}" for k in keys))

    table(f"median requests/s over rounds (fsync {args.fsync}, -n {args.requests} -c 50 -d 100 -r 100000)",
          res, lambda xs: f"{statistics.median(xs):>9,.0f}")
    table("median of per-round ratio variant/base (same round)", ratios,
          lambda xs: f"{statistics.median(xs):>8.2f}x")
    table("median server CPU microseconds per request (all threads, user+sys)", cpu,
          lambda xs: f"{statistics.median(xs):>9.2f}")
    cbase = {k: statistics.median(cpu["base"][k]) for k in keys if cpu["base"].get(k)}
    print("\nserver CPU per request vs base (median)")
    print(f"{'variant':<40} " + " ".join(f"{k:>9}" for k in keys))
    for v in variants:
        print(f"{v:<40} " + " ".join(f"{100 * (statistics.median(cpu[v][k]) / cbase[k] - 1):>+8.0f}%"
                                     if cpu[v].get(k) and k in cbase else f"{'-':>9}" for k in keys))
    if fs:
        print("\nfsync always: median writes per fsync (group commit batch) and ms per fsync")
        for v in variants:
            if fs.get(v):
                print(f"{v:<40} {statistics.median(b for b, _ in fs[v]):>7.1f} writes/fsync "
                      f"{statistics.median(m for _, m in fs[v]):>7.2f} ms/fsync")
    print(f"\nload average after: {_procs.loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
