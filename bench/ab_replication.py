#!/usr/bin/env python3
"""A/B one replication change: two source trees, alternating runs on fresh 3-node clusters.

    python bench/ab_replication.py --base HEAD [--new WORKTREE|REV] [--mode setp1|wait|major]
                                   [--rounds 3] [--requests N]

Each run starts a 3-node leader-mode LocalCluster (fsync everysec) from one tree, loads it
and prints requests/s and the CPU microseconds per request of the leader and of each
follower (from /proc). Runs alternate base, new, base, new, ... so that the machine's load,
which drifts over minutes here, falls on both sides alike; the summary gives the mean of
each side and the ratio. Modes:
  setp1  redis-benchmark -t set -n N -c 50 -d 100 -r 100000 -P 1, ack async (N = 100000)
  wait   bench_replication's lean client, SET + WAIT 1 on 16 connections, ack async (N = 20000)
  major  the lean client, one SET in flight on 16 connections, ack semi-sync:1 (N = 20000)
``--base`` / ``--new`` take a git revision (measured from ``git archive``), ``WORKTREE``
(the files as they are now) or a directory holding a ``replikv`` package (a built copy). This is how each step in docs/benchmarks.md, "second session",
was measured. Benchmarks report; they never assert.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def child(mode: str, n: int) -> None:
    """One run, in a process whose PYTHONPATH starts with the tree under test."""
    sys.path.insert(1, HERE)
    import _procs
    from bench_replication import lean_client

    from replikv.cluster.local import LocalCluster

    ack = "semi-sync:1" if mode == "major" else "async"
    root = _procs.tmpdir("ab-repl-")
    base = _procs.free_port(also=(1, 2, 100, 101, 102, 200, 201, 202, 399))
    cl = LocalCluster.create(root, 3, base, mode="leader", settings={"fsync": "everysec"},
                             cluster_settings={"ack": ack})
    cl.start()
    try:
        leader = cl.leader()

        def streaming() -> bool:
            fl = cl.http_get(leader, "/status", timeout=2.0)["replication"]["followers"]
            return len(fl) == 2 and all(f["link"] == "up" for f in fl)

        _procs.wait_for(streaming, 30, "both followers streaming")
        pids = [cl.procs[leader.node_id].pid] + [p.pid for nid, p in sorted(cl.procs.items())
                                                 if nid not in (0, leader.node_id)]
        before = [_procs.cpu_seconds(p) for p in pids]
        if mode == "setp1":
            out = subprocess.run(["redis-benchmark", "-p", str(leader.port), "-t", "set", "-n", str(n), "-c", "50",
                                  "-d", "100", "-r", "100000", "-P", "1", "-q"], capture_output=True, text=True,
                                 timeout=600).stdout
            ops = float(re.findall(r"([\d.]+) requests per second", out)[-1])
        else:
            ops = lean_client(leader.port, n, mode == "wait", [pids[0]])["ops"]
        used = [(_procs.cpu_seconds(p) - b) / n * 1e6 for p, b in zip(pids, before, strict=True)]
    finally:
        cl.stop()
    print(json.dumps({"ops": ops, "cpu_us": used}))


def tree(spec: str) -> str:
    if spec == "WORKTREE":
        return REPO
    if os.path.isdir(spec):
        return os.path.abspath(spec)
    commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", spec], capture_output=True, text=True,
                            check=True).stdout.strip()
    d = tempfile.mkdtemp(prefix=f"ab-src-{commit}-")
    atexit.register(shutil.rmtree, d, True)
    archive = subprocess.run(["git", "-C", REPO, "archive", commit, "replikv"], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", d], input=archive, check=True)
    return d


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="git revision, WORKTREE, or a directory")
    ap.add_argument("--new", default="WORKTREE", help="git revision, WORKTREE (default), or a directory")
    ap.add_argument("--mode", choices=("setp1", "wait", "major"), default="setp1")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, help="requests per run (default 100000 for setp1, else 20000)")
    args = ap.parse_args()
    n = args.requests or (100000 if args.mode == "setp1" else 20000)
    sides = {"base": (args.base, tree(args.base)), "new": (args.new, tree(args.new))}
    got: dict[str, list[dict]] = {"base": [], "new": []}
    for r in range(args.rounds):
        for side, (spec, path) in sides.items():
            env = dict(os.environ, PYTHONPATH=path + os.pathsep + os.environ.get("PYTHONPATH", ""))
            p = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", args.mode, str(n)], cwd=path,
                               env=env, capture_output=True, text=True, timeout=900)
            if p.returncode != 0:
                print(f"round {r + 1} {side}: failed\n{p.stderr[-2000:]}", flush=True)
                continue
            res = json.loads(p.stdout.strip().splitlines()[-1])
            got[side].append(res)
            cpu = " ".join(f"{x:.1f}" for x in res["cpu_us"])
            print(f"round {r + 1} {side:<4} ({spec}): {res['ops']:>9,.0f} req/s   CPU µs/req leader + followers: "
                  f"{cpu}   total {sum(res['cpu_us']):.1f}", flush=True)
    if got["base"] and got["new"]:
        mb = statistics.mean(x["ops"] for x in got["base"])
        mn = statistics.mean(x["ops"] for x in got["new"])
        cb = statistics.mean(sum(x["cpu_us"]) for x in got["base"])
        cn = statistics.mean(sum(x["cpu_us"]) for x in got["new"])
        print(f"mean: base {mb:,.0f} req/s ({cb:.1f} µs CPU/req), new {mn:,.0f} req/s ({cn:.1f} µs); "
              f"new/base {mn / mb:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
