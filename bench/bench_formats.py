#!/usr/bin/env python3
"""Replication log formats side by side: physical, row, statement, and physical / row with a
trigger writing into SQLite.

    python bench/bench_formats.py [--ops 20000] [--rounds 1] [--pipeline 64] [--json out.json]

For each configuration a fresh 3-node leader-mode cluster (ack async, fsync everysec) on free
loopback ports; one client writes a mixed workload through pipelines (SET, SET EX, INCR,
INCRBYFLOAT, HSET, SADD, SPOP, EXPIRE, a MULTI/EXEC every 50 commands) against the leader.
Measured per configuration (medians over rounds):
  - leader ops/s: commands acknowledged by the leader per second;
  - replicated ops/s: the same commands over the time until both followers applied them all;
  - wire B/write: bytes the leader shipped per record (the growth of a follower's relay log,
    which stores what came over the wire as it came);
  - log B/write: bytes per record in the leader's own log (records carry the replication
    event under row / statement, and trigger images with a trigger);
  - trigger s: with a trigger, seconds until its sink held every change (after the writes).
The machine is small and shared (2 cores for three nodes and the client): compare the columns
with each other, not with other machines. The script exits 0 whatever the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import redis  # noqa: E402

from replikv.cluster.local import LocalCluster  # noqa: E402
from tests.conftest import free_base_port  # noqa: E402

CONFIGS = [
    ("physical", "physical", False),
    ("row", "row", False),
    ("statement", "statement", False),
    ("physical + sqlite trigger", "physical", True),
    ("row + sqlite trigger", "row", True),
]


def dir_bytes(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            if f.endswith(".log"):
                total += os.path.getsize(os.path.join(root, f))
    return total


def workload(n: int, seed: int = 1) -> list[list]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        x = rnd.random()
        k = f"user:{rnd.randrange(5000)}"
        if x < 0.35:
            out.append(["SET", k, "v" * 64])
        elif x < 0.45:
            out.append(["SET", k, "v" * 64, "EX", "3600"])
        elif x < 0.55:
            out.append(["INCR", f"ctr:{rnd.randrange(100)}"])
        elif x < 0.60:
            out.append(["INCRBYFLOAT", f"f:{rnd.randrange(100)}", "0.5"])
        elif x < 0.80:
            out.append(["HSET", f"user:h{rnd.randrange(2000)}", f"f{rnd.randrange(10)}", "x" * 32])
        elif x < 0.90:
            out.append(["SADD", f"set:{rnd.randrange(200)}", f"m{i}"])
        elif x < 0.95:
            out.append(["SPOP", f"set:{rnd.randrange(200)}"])
        else:
            out.append(["EXPIRE", k, "7200"])
        if i % 50 == 49:
            out.append(["MULTI"])
    return out


def run_one(label: str, fmt: str, trigger: bool, ops: int, pipeline: int, tmp: str) -> dict:
    root = os.path.join(tmp, label.replace(" ", "_").replace("+", "p"))
    cs = {"ack": "async", "log_format": fmt, "heartbeat_ms": 100}
    if trigger:
        cs["triggers"] = [{"pattern": "user:*", "sink": "sqlite", "path": os.path.join(root, "sink.db"),
                           "table": "users", "batch": 512}]
    cl = LocalCluster.create(root, 3, free_base_port(4), mode="leader", cluster_settings=cs,
                             settings={"fsync": "everysec"})
    try:
        cl.start()
        leader = cl.node(1)
        r = redis.Redis(port=leader.port, protocol=2)
        relay = os.path.join(cl.node(2).data_dir, "relay")
        base_seq = cl.http_get(leader, "/status")["last_seq"]
        relay0, log0 = dir_bytes(relay), dir_bytes(os.path.join(leader.data_dir, "log"))
        cmds = workload(ops)
        t0 = time.perf_counter()
        i = 0
        while i < len(cmds):
            p = r.pipeline(transaction=False)
            n = 0
            while i < len(cmds) and n < pipeline:
                c = cmds[i]
                i += 1
                if c[0] == "MULTI":
                    p.execute()
                    tx = r.pipeline(transaction=True)
                    tx.incr("tx:count")
                    tx.set("user:tx", "t")
                    tx.execute()
                    p = r.pipeline(transaction=False)
                    continue
                p.execute_command(*c)
                n += 1
            p.execute(raise_on_error=False)
        t_leader = time.perf_counter() - t0
        last = cl.http_get(leader, "/status")["last_seq"]
        while True:
            reps = [cl.http_get(cl.node(j), "/status")["replication"]["applied"] for j in (2, 3)]
            if min(reps) >= last:
                break
            time.sleep(0.01)
        t_repl = time.perf_counter() - t0
        t_trig = None
        if trigger:
            while True:
                trig = cl.http_get(leader, "/status")["replication"]["triggers"][0]
                if trig["position"] is not None and trig["position"] >= last:
                    break
                time.sleep(0.01)
            t_trig = time.perf_counter() - t0 - t_leader
        records = last - base_seq
        n_cmds = sum(1 for c in cmds if c[0] != "MULTI") + 2 * sum(1 for c in cmds if c[0] == "MULTI")
        time.sleep(1.2)   # the relay and log are written at once; make sure sizes are final
        return {"config": label, "leader_ops_s": n_cmds / t_leader, "replicated_ops_s": n_cmds / t_repl,
                "wire_bytes_per_write": (dir_bytes(relay) - relay0) / records,
                "log_bytes_per_write": (dir_bytes(os.path.join(leader.data_dir, "log")) - log0) / records,
                "trigger_s": t_trig, "records": records}
    finally:
        cl.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ops", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--pipeline", type=int, default=64)
    ap.add_argument("--json", dest="json_out")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="replikv-bench-formats-")
    results: dict[str, list[dict]] = {c[0]: [] for c in CONFIGS}
    try:
        for rnd in range(a.rounds):
            order = CONFIGS if rnd % 2 == 0 else list(reversed(CONFIGS))
            for label, fmt, trig in order:
                res = run_one(label, fmt, trig, a.ops, a.pipeline, os.path.join(tmp, f"r{rnd}"))
                results[label].append(res)
                print(f"round {rnd + 1}: {label}: {res['leader_ops_s']:.0f} ops/s leader, "
                      f"{res['replicated_ops_s']:.0f} replicated, {res['wire_bytes_per_write']:.1f} B/write wire",
                      file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def med(label, k):
        xs = [r[k] for r in results[label] if r[k] is not None]
        return statistics.median(xs) if xs else None

    print(f"\n{a.ops} mixed writes, pipeline {a.pipeline}, 3 nodes (ack async, fsync everysec), "
          f"medians of {a.rounds} round(s)\n")
    print("| configuration | leader ops/s | replicated ops/s | wire B/write | log B/write | trigger catch-up s |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, _f, _t in CONFIGS:
        tr = med(label, "trigger_s")
        print(f"| {label} | {med(label, 'leader_ops_s'):.0f} | {med(label, 'replicated_ops_s'):.0f} | "
              f"{med(label, 'wire_bytes_per_write'):.1f} | {med(label, 'log_bytes_per_write'):.1f} | "
              f"{'-' if tr is None else f'{tr:.2f}'} |")
    if a.json_out:
        with open(a.json_out, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
