"""Peer links: the framed message stream between two nodes, as an asyncio Protocol.

The replication shell (replication.py) and the failover RPCs (failover.py) talk to other
nodes through ``PeerConnection``: ``recv()`` for the task that drives a link, a *handler*
that takes the frequent messages in ``data_received`` while that task waits, ``send`` /
``send_raw`` / ``drain`` with the transport's flow control, a silence watch, and a bound
on what one loop iteration reads. Framing and decoding are core/peerproto.py (pure).
"""

from __future__ import annotations

import asyncio
from collections import deque

from ..core.peerproto import PeerDecoder, encode_message

RX_TURN_BYTES = 128 * 1024     # bytes a peer link takes per loop iteration before it yields (see data_received)
RX_TURN_MARK = 16 * 1024       # bytes after which the link schedules the end of its turn


class PeerConnection(asyncio.Protocol):
    """A framed message stream between two nodes, as an asyncio Protocol.

    ``recv()`` returns the next message to the task that drives the link. A *handler*
    (``set_handler``) may take messages right in ``data_received`` instead: while that task
    is parked in ``recv()`` with nothing queued, each message goes to ``handler(msg)``, which
    handles it and returns True, or returns False to leave it (and every later one) to
    ``recv()``. The task would have done the same work next; it is spared the wake-up, a
    future and a task step per message (asyncio streams cost about 10 µs more per message
    here than a protocol callback: bench/micro_recv.py). An exception raised by the handler
    is raised by ``recv()``, as if the task had raised it, and closes the link."""

    def __init__(self, on_connect=None) -> None:
        self.transport: asyncio.Transport | None = None
        self.decoder = PeerDecoder()
        self._ready: deque = deque()
        self._waiter: asyncio.Future | None = None      # recv() parked on it
        self._exc: BaseException | None = None          # what recv() raises once the queue is empty
        self._paused = False                            # the transport's write buffer is full
        self._drain_waiter: asyncio.Future | None = None
        self._lost = False
        self.rx_paused = False      # reading stopped until the next loop iteration (RX_TURN_BYTES)
        self._rx_turn = 0           # bytes received since the last _next_turn
        self._turn_scheduled = False
        self.handler = None
        self.last_rx = 0.0          # loop time of the last read (see watch)
        self.silent_for = 0.0       # set when watch closed the link for silence
        self.address = "?"
        self._on_connect = on_connect
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ protocol callbacks
    def connection_made(self, transport) -> None:
        self.transport = transport
        self._loop = loop = asyncio.get_running_loop()
        self._loop_time = loop.time
        self.last_rx = loop.time()
        peer = transport.get_extra_info("peername")
        self.address = f"{peer[0]}:{peer[1]}" if peer else "?"
        if self._on_connect is not None:
            self._on_connect(self)

    def data_received(self, data: bytes) -> None:
        if self._exc is not None:
            return
        self.last_rx = self._loop_time()
        # At most about RX_TURN_BYTES per loop iteration: libuv reads a readable socket up
        # to 32 times (64 KB each) per iteration, and everything read is handled at once,
        # while other tasks (the follower's apply task) get one turn per iteration. A burst
        # then left the apply ten thousand records behind what was received (catch-up after
        # 100k writes 40-95 ms). asyncio streams bounded this with their 128 KB buffer.
        n = self._rx_turn + len(data)
        self._rx_turn = n
        if n >= RX_TURN_MARK:
            if not self._turn_scheduled:
                self._turn_scheduled = True
                self._loop.call_soon(self._next_turn)
            if n >= RX_TURN_BYTES and not self.rx_paused:
                self.transport.pause_reading()
                self.rx_paused = True
        ready = self._ready
        try:
            ready.extend(self.decoder.messages(data))
            h = self.handler
            if h is not None and self._waiter is not None:
                while ready:
                    m = ready.popleft()
                    if not h(m):
                        ready.appendleft(m)
                        break
        except Exception as e:  # noqa: BLE001 - a bad frame or a handler's error: the link's task raises it
            self._fail(e)
            return
        if ready:
            self._wake()

    def eof_received(self) -> bool:
        return False    # close our side too: connection_lost follows

    def connection_lost(self, exc) -> None:
        self._lost = True
        if self._exc is None:
            if self.silent_for:
                self._exc = ConnectionError(f"no message from the peer for {self.silent_for:.1f} s")
            elif isinstance(exc, OSError):
                self._exc = exc
            else:
                self._exc = ConnectionError("peer closed the connection")
        self._wake()
        w = self._drain_waiter
        if w is not None:
            self._drain_waiter = None
            if not w.done():
                w.set_exception(ConnectionResetError("Connection lost"))

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        w = self._drain_waiter
        if w is not None:
            self._drain_waiter = None
            if not w.done():
                w.set_result(None)

    def _wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self._exc is None:
            self._exc = exc
        self._ready.clear()
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def _next_turn(self) -> None:
        """The next loop iteration: the link may read again."""
        self._turn_scheduled = False
        self._rx_turn = 0
        if self.rx_paused:
            self.rx_paused = False
            t = self.transport
            if t is not None and not t.is_closing():
                t.resume_reading()

    # ------------------------------------------------------------------ API
    def set_handler(self, handler) -> None:
        """``handler(msg) -> bool`` takes messages while the link's task waits in recv()."""
        self.handler = handler

    async def recv(self) -> dict:
        while not self._ready:
            if self._exc is not None:
                raise self._exc
            w = self._waiter = self._loop.create_future()
            try:
                await w
            finally:
                if self._waiter is w:
                    self._waiter = None
        return self._ready.popleft()

    def watch(self, timeout: float) -> None:
        """Close the link if no byte arrives for ``timeout`` seconds (recv then raises
        ConnectionError). One timer for the connection's life, re-armed from the time of the
        last read, instead of a timeout around every recv (which cost a tenth of a follower's
        CPU when the leader sends many small batches)."""
        loop = self._loop
        self.last_rx = loop.time()

        def check() -> None:
            if self.transport is None or self.transport.is_closing():
                return
            idle = loop.time() - self.last_rx
            if idle >= timeout:
                self.silent_for = idle
                self.close()
            else:
                loop.call_at(self.last_rx + timeout, check)

        loop.call_at(self.last_rx + timeout, check)

    def send_raw(self, data: bytes) -> None:
        """Send a message already encoded (one encoding for every follower)."""
        t = self.transport
        if t is None or t.is_closing():
            raise ConnectionError("the peer connection is closed")
        t.write(data)

    def buffered(self) -> int:
        t = self.transport
        return t.get_write_buffer_size() if t is not None else 0

    def send(self, msg: dict) -> None:
        self.send_raw(encode_message(msg))

    async def drain(self) -> None:
        """Wait while the peer reads slower than we write (the transport paused us)."""
        t = self.transport
        if t is None or t.is_closing():
            await asyncio.sleep(0)      # (as StreamWriter.drain: let connection_lost run)
        if self._lost:
            raise ConnectionResetError("Connection lost")
        if not self._paused:
            return
        w = self._drain_waiter = self._loop.create_future()
        await w

    def close(self) -> None:
        t = self.transport
        if t is not None:
            try:
                t.close()
            except Exception:  # noqa: BLE001
                pass


async def open_peer(host: str, port: int, timeout: float) -> PeerConnection:
    """Connect to another node's peer port (within ``timeout`` seconds)."""
    loop = asyncio.get_running_loop()
    _, conn = await asyncio.wait_for(loop.create_connection(PeerConnection, host, port), timeout)
    return conn
