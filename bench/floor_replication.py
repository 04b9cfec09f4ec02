#!/usr/bin/env python3
"""A floor for replicated writes in Python on this machine: the least a Python leader and
followers can do per majority-acknowledged write, with the same tools replikv uses (asyncio
on uvloop, hiredis, msgpack), measured with the same lean client as bench_replication.py.

    python bench/floor_replication.py [--rounds 3] [--requests 20000] [--files]

Each run also prints, per write and per process, user and system CPU and voluntary /
involuntary context switches (from /proc).

Three processes on loopback, none of them replikv:
  - a leader that parses RESP with hiredis, keeps SET in a dict, frames each write as a
    record (msgpack + crc32 + length, as replikv's log does, but writes no file), and at
    the end of each loop iteration sends the iteration's records to one follower at once
    and to the other every 5 ms (as replikv's chosen and spare followers); the SET's +OK
    leaves when the chosen follower acknowledges its record (semi-sync:1, a majority of 3);
  - two followers that split the frames, check the crc, decode and apply each record to a
    dict and (the chosen one) acknowledge each message with the last position received.
No log files (``--files`` adds them: the leader's log write per push, the followers' relay
log and own log writes per message, with os.write as replikv makes them), no fsync, leases,
epochs, fencing, metrics, WAIT bookkeeping or status: everything replikv does on top of this
is left out. So what this skeleton reaches is about the most a Python implementation with
the same processes and messages can do for the majority measurement of bench_replication.py
on this machine, and its CPU per write a floor to compare replikv's against. Benchmarks
report; they never assert.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import struct
import subprocess
import sys
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

FRAME = struct.Struct("<II")      # length, crc32 (as replikv's log frames)
ACK = struct.Struct("<Q")
SPARE_DELAY = 0.005


def _loop():
    try:
        import uvloop
        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


# ---------------------------------------------------------------------------- follower
def follower(port: int, acks: bool, files: str | None) -> None:
    import msgpack

    kv: dict = {}
    unpackb = msgpack.unpackb
    relay = own = None
    if files:
        relay = os.open(os.path.join(files, f"relay-{port}"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        own = os.open(os.path.join(files, f"log-{port}"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    class Leader(asyncio.Protocol):
        def connection_made(self, t):
            self.t = t
            self.buf = b""

        def data_received(self, data):
            buf = self.buf + data if self.buf else data
            if relay is not None:
                os.write(relay, data)
            off, n, last = 0, len(buf), 0
            while off + 8 <= n:
                ln, crc = FRAME.unpack_from(buf, off)
                end = off + 8 + ln
                if end > n:
                    break
                payload = buf[off + 8:end]
                if zlib.crc32(payload) != crc:
                    raise SystemExit("crc")
                seq, ts, effects = unpackb(payload)
                for _op, k, v, _exp in effects:
                    kv[k] = v
                last = seq
                off = end
            self.buf = buf[off:]
            if own is not None and off:
                os.write(own, buf[:off])
            if acks and last:
                self.t.write(ACK.pack(last))

    loop = _loop()
    asyncio.set_event_loop(loop)
    srv = loop.run_until_complete(loop.create_server(Leader, "127.0.0.1", port))
    loop.run_until_complete(srv.serve_forever())


# ---------------------------------------------------------------------------- leader
def leader(port: int, f_ports: list[int], files: str | None) -> None:
    import hiredis
    import msgpack

    packb = msgpack.packb
    loop = _loop()
    asyncio.set_event_loop(loop)
    kv: dict = {}
    state = {"seq": 0, "flush": False, "spare_at": 0.0}
    recs: list[bytes] = []           # this iteration's records, for the chosen follower
    spare: list[bytes] = []          # gathered for the spare follower
    pending: list = []               # (seq, client) waiting for the chosen follower's ack
    logfd = os.open(os.path.join(files, "log-leader"), os.O_WRONLY | os.O_CREAT | os.O_APPEND) if files else None

    class Ack(asyncio.Protocol):
        def data_received(self, data):
            acked = ACK.unpack_from(data, len(data) - 8)[0]
            i = 0
            while i < len(pending) and pending[i][0] <= acked:
                pending[i][1].t.write(b"+OK\r\n")
                i += 1
            del pending[:i]

    def flush():
        state["flush"] = False
        if recs:
            data = b"".join(recs)
            if logfd is not None:
                os.write(logfd, data)
            chosen.write(data)
            spare.append(data)
            recs.clear()
        now = loop.time()
        if spare and now - state["spare_at"] >= SPARE_DELAY:
            state["spare_at"] = now
            other.write(b"".join(spare))
            spare.clear()
        elif spare:
            loop.call_later(SPARE_DELAY, kick)

    def kick():
        if not state["flush"]:
            state["flush"] = True
            loop.call_soon(flush)

    class Client(asyncio.Protocol):
        def connection_made(self, t):
            self.t = t
            self.r = hiredis.Reader()

        def data_received(self, data):
            r = self.r
            r.feed(data)
            while True:
                c = r.gets()
                if c is False:
                    break
                if c[0].upper() == b"SET":
                    seq = state["seq"] = state["seq"] + 1
                    kv[c[1]] = c[2]
                    p = packb([seq, int(time.time() * 1000), [[0, c[1], c[2], 0]]])
                    recs.append(FRAME.pack(len(p), zlib.crc32(p)) + p)
                    pending.append((seq, self))
                    kick()
                elif c[0].upper() == b"PING":
                    self.t.write(b"+PONG\r\n")
                else:
                    self.t.write(b"-ERR only SET and PING here\r\n")

    async def main():
        global chosen, other
        t1, _ = await loop.create_connection(Ack, "127.0.0.1", f_ports[0])
        t2, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", f_ports[1])
        for t in (t1, t2):
            t.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        globals()["chosen"], globals()["other"] = t1, t2
        srv = await loop.create_server(Client, "127.0.0.1", port)
        await srv.serve_forever()

    loop.run_until_complete(main())


# ---------------------------------------------------------------------------- driver
def run_floor(n: int, files: bool) -> dict:
    import _procs
    from bench_replication import lean_client

    fdir = _procs.tmpdir("floor-") if files else "-"

    ports = [_procs.free_port() for _ in range(3)]
    while len(set(ports)) < 3:
        ports = [_procs.free_port() for _ in range(3)]
    procs = []
    try:
        for i, acks in ((1, "1"), (2, "0")):
            procs.append(subprocess.Popen([sys.executable, __file__, "--follower", str(ports[i]), acks, fdir],
                                          start_new_session=True))
        for p in ports[1:]:
            _procs.wait_for(lambda p=p: _can_connect(p), 20, "floor follower")
        lp = subprocess.Popen([sys.executable, __file__, "--leader", str(ports[0]), str(ports[1]), str(ports[2]), fdir],
                              start_new_session=True)
        procs.insert(0, lp)
        _procs.wait_for(lambda: _can_connect(ports[0]), 20, "floor leader")
        return lean_client(ports[0], n, with_wait=False, pids=[p.pid for p in procs])
    finally:
        for p in procs:
            p.kill()
            p.wait()


def _can_connect(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def run_replikv(n: int) -> dict:
    from bench_replication import Replikv, lean_client

    rk = Replikv("semi-sync:1")
    try:
        return lean_client(rk.port, n, with_wait=False, pids=rk.pids)
    finally:
        rk.close()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--follower":
        follower(int(sys.argv[2]), sys.argv[3] == "1", None if sys.argv[4] == "-" else sys.argv[4])
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--leader":
        leader(int(sys.argv[2]), [int(sys.argv[3]), int(sys.argv[4])], None if sys.argv[5] == "-" else sys.argv[5])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--files", action="store_true",
                    help="the floor also writes files as replikv does: the leader its log once per push, each "
                         "follower a relay log and its own log per message (os.write, no fsync, as fsync everysec "
                         "between its syncs)")
    args = ap.parse_args()
    from bench_replication import CpuMeter

    got: dict[str, list[dict]] = {"floor": [], "replikv": []}
    for r in range(args.rounds):
        def floor(n):
            return run_floor(n, args.files)
        for name, fn in (("floor", floor), ("replikv", run_replikv)) if r % 2 == 0 else \
                (("replikv", run_replikv), ("floor", floor)):
            m = fn(args.requests)
            got[name].append(m)
            print(f"round {r + 1} {name:<8} {m['ops']:>8,.0f} writes/s  p50 {m['p50_ms']:.2f} ms  "
                  f"CPU µs/write: servers {m['cpu_us']:.1f} "
                  f"(leader {m['cpu_leader_us']:.1f}), client {m.get('cpu_client_us', 0):.1f}", flush=True)
            print(f"    per write: {CpuMeter.detail(m)}", flush=True)
    for name, ms in got.items():
        print(f"median {name:<8} {statistics.median(m['ops'] for m in ms):>8,.0f} writes/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
