#!/usr/bin/env python3
"""Single-node benchmark: replikv next to real Redis, with redis-benchmark as the client.

    python bench/bench_single.py [--rounds 3] [--quick] [--json out.json]

Per round, on free loopback ports, each server started fresh in its own temp dir:
  A. throughput, fsync everysec:  redis-benchmark -t set,get -n N -c 50 -d 100 -r 100000
     with -P 1 and -P 16, against replikv (--fsync everysec) and redis-server
     (--appendonly yes --appendfsync everysec --save '');
  B. uvloop: the same -t set,get -P 1 against replikv --no-uvloop;
  C. fsync on every write: -t set -P 1 against replikv --fsync always and
     redis-server --appendfsync always.
The order of the servers alternates from round to round, so slow drift of the machine's
load hits both sides alike. The table shows medians over the rounds, and the ratio
replikv/Redis against the targets of the issue (PASS/MISS is a report, not an assertion:
the script exits 0 whatever the numbers).

Every child process is started in its own session, every redis-benchmark run is bounded
by a timeout, and all children are stopped (by pid) on exit, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _procs  # noqa: E402

BENCH_TIMEOUT = 180.0   # seconds for one redis-benchmark run (at ~10k ops/s it needs ~20 s)

# (test label, replikv config, redis config, target ratio replikv/redis)
TARGETS = {
    "SET P1": 0.7,
    "GET P1": 0.7,
    "SET P16": 0.3,
    "fsync-always SET P1": 0.7,
}


def redis_benchmark(port: int, tests: str, n: int, pipeline: int, clients: int = 50,
                    size: int = 100, keyspace: int = 100000) -> dict[str, float]:
    """Run redis-benchmark once; return {"SET": rps, "GET": rps}."""
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", tests, "-n", str(n),
           "-c", str(clients), "-d", str(size), "-r", str(keyspace), "-P", str(pipeline), "--csv"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=BENCH_TIMEOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
    except subprocess.TimeoutExpired:
        # subprocess.run has already killed the child (only it)
        print(f"    ! redis-benchmark timed out after {BENCH_TIMEOUT:.0f}s: {' '.join(cmd)}", flush=True)
        return {}
    res: dict[str, float] = {}
    for row in csv.reader(io.StringIO(out.stdout)):
        if len(row) >= 2 and row[0] != "test":
            try:
                res[row[0].upper()] = float(row[1])
            except ValueError:
                pass
    if not res:
        print(f"    ! redis-benchmark gave no result (exit {out.returncode}): {out.stderr.strip()[:300]}",
              flush=True)
    return res


class Server:
    """One server configuration; ``run`` starts it fresh, benchmarks it, stops it."""

    def __init__(self, label: str, kind: str, fsync: str, uvloop: bool = True) -> None:
        self.label, self.kind, self.fsync, self.uvloop = label, kind, fsync, uvloop

    def start(self):
        d = _procs.tmpdir(f"bench-{self.kind}-")
        if self.kind == "replikv":
            port = _procs.free_port(also=(10000, 20000))
            cmd = _procs.replikv_cmd(port, os.path.join(d, "data"), self.fsync, self.uvloop)
        else:
            port = _procs.free_port()
            cmd = _procs.redis_cmd(port, d, self.fsync)
        proc = _procs.start(cmd, port, os.path.join(d, "server.log"))
        return proc, port


def run_case(server: Server, plan: list[tuple[str, int, str]], results: dict, cpu: dict, n: int,
             n_fsync: int) -> None:
    """plan: (tests, pipeline, key prefix) runs against one fresh instance of ``server``.
    The tests of "set,get" run as consecutive redis-benchmark invocations (-t set, then
    -t get: the same workload as -t set,get) so the server's CPU time can be charged to
    each test: CPU microseconds per request are far less sensitive than requests/s to the
    load that other processes put on the machine."""
    proc, port = server.start()
    try:
        for tests, pipeline, prefix in plan:
            reqs = n_fsync if prefix.startswith("fsync") else n
            shown = []
            t = time.monotonic()
            for test in tests.split(","):
                c0 = _procs.cpu_seconds(proc.pid)
                res = redis_benchmark(port, test, reqs, pipeline)
                c1 = _procs.cpu_seconds(proc.pid)
                for name, rps in res.items():
                    key = f"{prefix}{name} P{pipeline}"
                    results.setdefault(server.label, {}).setdefault(key, []).append(rps)
                    us = (c1 - c0) / reqs * 1e6
                    cpu.setdefault(server.label, {}).setdefault(key, []).append(us)
                    shown.append(f"{name} {rps:,.0f}/s ({us:.1f} us cpu/req)")
            print(f"    {server.label:<22} -P {pipeline:<2} {'  '.join(shown)}  ({time.monotonic() - t:.1f}s)",
                  flush=True)
    finally:
        _procs.stop(proc)


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def report(results: dict, cpu: dict, rounds: int) -> dict:
    med = {lab: {k: median(v) for k, v in tests.items()} for lab, tests in results.items()}
    cmed = {lab: {k: median(v) for k, v in tests.items()} for lab, tests in cpu.items()}
    rows = []

    def row(name, a_label, b_label, key, target=None):
        a = med.get(a_label, {}).get(key)
        b = med.get(b_label, {}).get(key)
        ratio = a / b if a and b else None
        verdict = ""
        if target is not None and ratio is not None:
            verdict = ("PASS" if ratio >= target else "MISS") + f" (target >= {target}x)"
        ca = cmed.get(a_label, {}).get(key)
        cb = cmed.get(b_label, {}).get(key)
        rows.append({"test": name, "a": a, "b": b, "ratio": ratio, "verdict": verdict,
                     "a_all": results.get(a_label, {}).get(key, []),
                     "b_all": results.get(b_label, {}).get(key, []),
                     "a_cpu_us": ca, "b_cpu_us": cb})
        cpu_cells = (f"{ca:>8.1f} {cb:>8.1f}" if ca is not None and cb is not None else f"{'-':>8} {'-':>8}")
        return (f"{name:<22} {fmt(a):>10} {fmt(b):>10} {('-' if ratio is None else f'{ratio:.2f}x'):>7}"
                f"  {cpu_cells}   {verdict}")

    print()
    print(f"medians of {rounds} round(s): requests/s, ratio = replikv / Redis; "
          f"server CPU microseconds per request")
    print(f"{'test':<22} {'replikv':>10} {'Redis':>10} {'ratio':>7}  {'cpu rkv':>8} {'cpu Redis':>8}")
    for key in ("SET P1", "GET P1", "SET P16", "GET P16"):
        print(row(key, "replikv everysec", "redis everysec", key, TARGETS.get(key)))
    print(row("fsync-always SET P1", "replikv always", "redis always", "fsync-always SET P1",
              TARGETS["fsync-always SET P1"]))
    print()
    print("uvloop (replikv everysec): ratio = default (uvloop) / --no-uvloop")
    print(f"{'test':<22} {'uvloop':>10} {'asyncio':>10} {'ratio':>7}  {'cpu uv':>8} {'cpu aio':>8}")
    for key in ("SET P1", "GET P1"):
        print(row("uvloop " + key, "replikv everysec", "replikv no-uvloop", key))
    print()
    print("all rounds (requests/s | server CPU us/request):")
    for lab, tests in results.items():
        for k, v in tests.items():
            c = cpu.get(lab, {}).get(k, [])
            print(f"  {lab:<22} {k:<22} " + "  ".join(f"{x:,.0f}" for x in v) + "  |  "
                  + "  ".join(f"{x:.1f}" for x in c))
    return {"medians": med, "cpu_medians": cmed, "rows": rows, "raw": results, "cpu_raw": cpu}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    ap.add_argument("--quick", action="store_true", help="a quarter of the requests per run")
    ap.add_argument("--requests", type=int, default=200000, help="-n for the everysec runs")
    ap.add_argument("--fsync-requests", type=int, default=100000, help="-n for the fsync-always runs")
    ap.add_argument("--skip-uvloop", action="store_true", help="skip the --no-uvloop runs")
    ap.add_argument("--skip-fsync-always", action="store_true", help="skip the fsync-always runs")
    ap.add_argument("--rev", help="benchmark `git archive REV` of replikv instead of the installed package")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    _procs.need("redis-server")
    _procs.need("redis-benchmark")
    n, n_fsync = args.requests, args.fsync_requests
    if args.quick:
        n, n_fsync = max(n // 4, 1000), max(n_fsync // 4, 1000)

    code = _procs.use_source(args.rev)
    info = _procs.machine()
    load_before = _procs.loadavg()
    bench_ver = subprocess.run(["redis-benchmark", "--version"], capture_output=True, text=True).stdout.strip()
    redis_ver = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()
    print(f"machine: {info['nproc']} cpu(s), {info['cpu']}, Python {info['python']}")
    print(f"{redis_ver}; {bench_ver}")
    print(f"replikv code: {code}")
    print(f"load average before: {load_before}")
    print(f"redis-benchmark -t set,get -n {n} -c 50 -d 100 -r 100000 -P 1|16 --csv; "
          f"fsync-always: -t set -n {n_fsync} -P 1; {args.rounds} round(s)", flush=True)

    everysec_plan = [("set,get", 1, ""), ("set,get", 16, "")]
    uvloop_plan = [("set,get", 1, "")]
    always_plan = [("set", 1, "fsync-always ")]
    groups = [[(Server("replikv everysec", "replikv", "everysec"), everysec_plan),
               (Server("redis everysec", "redis", "everysec"), everysec_plan)]]
    if not args.skip_uvloop:
        groups[0].append((Server("replikv no-uvloop", "replikv", "everysec", uvloop=False), uvloop_plan))
    if not args.skip_fsync_always:
        groups.append([(Server("replikv always", "replikv", "always"), always_plan),
                       (Server("redis always", "redis", "always"), always_plan)])

    results: dict = {}
    cpu: dict = {}
    t0 = time.monotonic()
    try:
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds} (load {_procs.loadavg()})", flush=True)
            for group in groups:
                order = group if r % 2 == 0 else list(reversed(group))
                for server, plan in order:
                    run_case(server, plan, results, cpu, n, n_fsync)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the servers; partial results follow", flush=True)
    out = report(results, cpu, args.rounds)
    load_after = _procs.loadavg()
    print(f"\nload average before: {load_before}; after: {load_after}; wall {time.monotonic() - t0:.0f}s")
    if args.json:
        out.update({"machine": info, "replikv_code": code, "redis": redis_ver, "redis_benchmark": bench_ver,
                    "load_before": load_before, "load_after": load_after, "rounds": args.rounds,
                    "requests": n, "fsync_requests": n_fsync})
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
