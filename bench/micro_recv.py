#!/usr/bin/env python3
"""What receiving one small message costs a process, by the way the bytes reach Python.

    python bench/micro_recv.py [--messages 30000] [--rounds 2]

A sender process writes ``--messages`` 60-byte messages to a socket pair, pausing 50 µs
after each so that nearly every message wakes the receiver (as replication batches and
acks do). The receiver, under uvloop when installed, takes them three ways and prints its
own CPU time per message:

  streams   asyncio StreamReader: ``await reader.read()`` in a task
  future    an asyncio.Protocol that queues the bytes and wakes a task parked on a future
  callback  an asyncio.Protocol that handles the bytes in data_received

This is why PeerConnection (replikv/server/replication.py) is a Protocol whose handler
takes acks and records as they arrive. A benchmark reports; it never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import time
from collections import deque
from multiprocessing import Process

MSG = b"x" * 60


def sender(fd: int, n: int) -> None:
    s = socket.socket(fileno=fd)
    for _ in range(n):
        s.sendall(MSG)
        time.sleep(0.00005)
    s.close()


async def recv_streams(sock: socket.socket) -> int:
    r, _w = await asyncio.open_connection(sock=sock)
    n = 0
    while True:
        d = await r.read(1 << 20)
        if not d:
            return n
        n += len(d)


async def recv_future(sock: socket.socket) -> int:
    loop = asyncio.get_running_loop()

    class P(asyncio.Protocol):
        def __init__(self) -> None:
            self.q: deque = deque()
            self.w = None
            self.eof = False

        def _wake(self) -> None:
            w, self.w = self.w, None
            if w is not None and not w.done():
                w.set_result(None)

        def data_received(self, d: bytes) -> None:
            self.q.append(d)
            self._wake()

        def connection_lost(self, exc) -> None:
            self.eof = True
            self._wake()

    _t, p = await loop.create_connection(P, sock=sock)
    n = 0
    while True:
        while not p.q:
            if p.eof:
                return n
            p.w = loop.create_future()
            await p.w
        n += len(p.q.popleft())


async def recv_callback(sock: socket.socket) -> int:
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    class P(asyncio.Protocol):
        n = 0

        def data_received(self, d: bytes) -> None:
            self.n += len(d)

        def connection_lost(self, exc) -> None:
            done.set_result(self.n)

    await loop.create_connection(P, sock=sock)
    return await done


WAYS = {"streams": recv_streams, "future": recv_future, "callback": recv_callback}


def run(way: str, n: int) -> float:
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    a, b = socket.socketpair()
    fd = a.detach()
    p = Process(target=sender, args=(fd, n))
    p.start()
    os.close(fd)
    t0 = time.process_time()
    got = runner(WAYS[way](b))
    p.join()
    if got != n * len(MSG):
        raise SystemExit(f"{way}: received {got} bytes, expected {n * len(MSG)}")
    return (time.process_time() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=30000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    for r in range(args.rounds):
        print(f"round {r + 1}: " + "   ".join(f"{w} {run(w, args.messages):.1f} µs" for w in WAYS), flush=True)


if __name__ == "__main__":
    main()
