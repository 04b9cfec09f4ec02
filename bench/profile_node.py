#!/usr/bin/env python3
"""Profile one replikv node under redis-benchmark load with py-spy.

    python bench/profile_node.py --test set [--pipeline 1] [--seconds 10] [--patches a,b]
                                 [--fsync everysec] [--out DIR] [--no-native]

Starts a node (optionally with experimental monkeypatches from bench/patches.py, applied
by bench/patched_node.py, never touching replikv/), puts it under
``redis-benchmark -t TEST -P N -c 50 -d 100 -r 100000`` for longer than the sampling
window, samples it with ``py-spy record --native --threads -f raw`` and prints:
  - the main (event loop) thread's time split: syscalls (read / write / epoll), Python
    by function (self and inclusive), C extensions;
  - the IO thread's busy share.
The raw collapsed stacks are kept in --out for flamegraph.pl or speedscope.

Needs py-spy (``pip install py-spy``) and root or ptrace permission.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _procs  # noqa: E402

_LINE = re.compile(r":\d+\)$")

# functions of the command path whose inclusive share is always reported
COMMAND_PATH = [
    "ClientConnection.data_received", "RequestParser.next_command", "Node.execute", "Node._run",
    "cmd_set", "cmd_get", "Ctx.lookup", "Ctx.emit", "Keyspace.apply", "Storage.append",
    "encode", "ClientConnection.reply", "Node._flush", "ClientConnection.flush",
    "Node._advance_visible", "ClientConnection.release", "Storage.write_out", "NodeMetrics.count",
    "Clock.now_ms", "Command.keys", "Command.is_write",
]


def _fname(frame: str) -> str:
    f = _LINE.sub(")", frame)
    return f.split(" (", 1)[0]


def analyse(path: str, top: int = 20) -> str:
    threads: dict[str, list[tuple[list[str], int]]] = collections.defaultdict(list)
    for line in open(path):
        line = line.rstrip("\n")
        if not line:
            continue
        stack, n = line.rsplit(" ", 1)
        frames = stack.split(";")
        tid = frames[0] if frames[0].startswith("thread (") or frames[0].startswith("process ") else "?"
        threads[tid].append((frames, int(n)))
    out = []
    # the event loop thread is the one running Runner.run
    def is_main(stacks):
        return any("Runner.run" in f for fr, _ in stacks[:200] for f in fr)

    for tid, stacks in sorted(threads.items(), key=lambda kv: -sum(n for _, n in kv[1])):
        total = sum(n for _, n in stacks)
        main = is_main(stacks)
        if not main:
            idle = sum(n for fr, n in stacks if any("SimpleQueue_get" in f or "acquire_lock" in f for f in fr))
            out.append(f"\n[other thread {tid}] samples {total}, waiting for work {100 * idle / max(total, 1):.0f}%")
            continue
        selfc: collections.Counter = collections.Counter()
        incl: collections.Counter = collections.Counter()
        sysc: collections.Counter = collections.Counter()
        for frames, n in stacks:
            names = [_fname(f) for f in frames]
            leaf = names[-1]
            selfc[leaf] += n
            for f in set(names):
                incl[f] += n
            # which syscall, attributed to the innermost Python function above it
            if leaf in ("read", "write", "epoll_pwait", "epoll_wait", "writev", "recv", "send", "fsync",
                        "fdatasync", "sendmsg", "recvmsg"):
                py = next((x for x in reversed(names) if "." in x or x.startswith("cmd_")), "?")
                sysc[f"{leaf} <- {py}"] += n
        def pct(n: int, total: int = total) -> str:
            return f"{100 * n / total:5.1f}%"

        out.append(f"\n[event loop thread {tid}] samples {total} (100% = this thread's sampled time)")
        out.append("  syscalls (leaf) <- innermost Python caller:")
        for k, n in sysc.most_common(10):
            out.append(f"    {pct(n)}  {k}")
        out.append(f"  self time, top {top}:")
        for k, n in selfc.most_common(top):
            out.append(f"    {pct(n)}  {k}")
        out.append("  inclusive time, command path:")
        for k in COMMAND_PATH:
            if incl.get(k):
                out.append(f"    {pct(incl[k])}  {k}")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--test", default="set", help="redis-benchmark -t (set, get, ...)")
    ap.add_argument("--pipeline", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--fsync", default="everysec")
    ap.add_argument("--patches", default="", help="comma-separated names from bench/patches.py")
    ap.add_argument("--no-uvloop", action="store_true")
    ap.add_argument("--no-native", action="store_true", help="Python frames only")
    ap.add_argument("--out", default="bench/profiles", help="where the raw stacks go")
    ap.add_argument("--rev", help="profile `git archive REV` of replikv instead of the installed package")
    args = ap.parse_args()
    if shutil.which("py-spy") is None:
        sys.exit("py-spy not found: pip install py-spy")
    _procs.need("redis-benchmark")
    os.makedirs(args.out, exist_ok=True)

    d = _procs.tmpdir("profile-replikv-")
    port = _procs.free_port(also=(10000, 20000))
    code = _procs.use_source(args.rev)
    env = dict(_procs.NODE_ENV, REPLIKV_BENCH_PATCHES=args.patches)
    entry = [os.path.join(HERE, "patched_node.py")] if args.patches else None
    cmd = _procs.replikv_cmd(port, os.path.join(d, "data"), args.fsync, not args.no_uvloop, entry=entry)
    node = _procs.start(cmd, port, os.path.join(d, "node.log"), env=env)
    # preload the keyspace so GET finds values (as redis-benchmark -t set,get does)
    if args.test != "set":
        subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", "set", "-n", "200000",
                        "-c", "50", "-d", "100", "-r", "100000", "-P", "16", "-q"],
                       capture_output=True, timeout=120, start_new_session=True)
    load = subprocess.Popen(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", args.test,
                             "-n", "100000000", "-c", "50", "-d", "100", "-r", "100000", "-P",
                             str(args.pipeline), "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    _procs._children.append(load)
    try:
        time.sleep(1.0)  # let the connections settle
        tag = f"{args.test}-P{args.pipeline}-{args.fsync}" + (f"-{args.patches.replace(',', '+')}" if args.patches else "")
        raw = os.path.join(args.out, f"{tag}.txt")
        spy = ["py-spy", "record", "-p", str(node.pid), "-d", str(int(args.seconds)), "-r", str(args.rate),
               "--threads", "-f", "raw", "-o", raw]
        if not args.no_native:
            spy.append("--native")
        subprocess.run(spy, capture_output=True, timeout=args.seconds + 60)
    finally:
        load_rc = load.poll()
        _procs.stop(load, timeout=2)
        _procs.stop(node)
    print(f"profile of replikv under redis-benchmark -t {args.test} -P {args.pipeline} -c 50 -d 100, "
          f"fsync {args.fsync}, patches: {args.patches or 'none'}; code: {code}; raw stacks in {raw}")
    if load_rc is not None:
        print(f"WARNING: the load generator exited early (status {load_rc}): the profile is of an idle node")
    print(analyse(raw))
    return 0


if __name__ == "__main__":
    sys.exit(main())
