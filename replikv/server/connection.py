"""One client connection: bytes in through the RESP parser, replies out in order.

Owns: the per-connection state (protocol version, name, MULTI queue, WATCHed keys), the
ordered reply queue, and flow control.
Does not know: what commands do (the node dispatches them).

Replies leave in request order. A reply may have to wait until the log position it depends
on is durable (``needed``): a write's own position, or the position of a not-yet-durable
write that a read observed. Such a reply, and every reply after it on this connection,
waits in ``waiting`` until the node's visible position reaches it (see node.py).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from ..core.resp import Error, ProtocolError, RequestParser, encode

OUT_HIGH = 256 * 1024  # bytes of replies queued before they are handed to the transport early
_UNFILLED = float("inf")   # the position a reply slot waits for until it is filled
HELD_READ_MAX = 64 * 1024  # bytes of requests buffered behind held replies before reading stops


class WatchState:
    __slots__ = ("dirty",)

    def __init__(self) -> None:
        self.dirty = False


class ClientConnection(asyncio.Protocol):
    def __init__(self, node) -> None:
        self.node = node
        cfg = node.config
        self.parser = RequestParser(cfg.max_bulk_len, cfg.max_multibulk_len, cfg.max_inline_len)
        self.transport: asyncio.Transport | None = None
        self.proto = 2
        self.name = b""
        self.lib_name = b""
        self.lib_ver = b""
        self.id = 0
        self.addr = ""
        self.laddr = ""
        self.created = time.time()
        self.last_cmd_time = self.created
        self.last_cmd = "NULL"
        self.out: list[bytes] = []
        self.flush_queued = False       # in the node's list of connections to flush (schedule_flush)
        self.acks: list[int] = []       # indices in ``out`` of write acknowledgements (vet_acks)
        # replies held back: [needed_seq, ack policy or None, bytes, kind, enqueued_at]
        # kind: "w" a write's reply, "r" a read's, "s" a slot filled later (WAIT)
        self.waiting: deque = deque()
        self.multi: list | None = None  # queued commands while in MULTI
        self.multi_error = False
        self.watch = WatchState()
        self.watched: list[bytes] = []
        self.closing = False
        self.paused = False             # the transport's buffer is full: the client reads slowly
        self.held = False               # a pipeline's held replies (``waiting``) must leave first
        self._reading = True
        self.ack_policy = None          # per-connection acknowledgement policy (ACKMODE), None = cluster's
        self.last_write_seq = 0
        self.user_id = None             # SESSION USER: writes update the user's newest position
        self.causal_deps = None         # CAUSAL: positions the next write depends on

    # ------------------------------------------------------------------ asyncio callbacks
    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        self.addr = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.laddr = f"{sock[0]}:{sock[1]}" if sock else "?"
        self.node.client_connected(self)

    def connection_lost(self, exc) -> None:
        self.closing = True
        self.node.client_disconnected(self)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return  # a protocol error closes this connection: buffer nothing more
        self.last_cmd_time = time.time()   # once per read, not per command (CLIENT LIST idle=)
        if self.held:
            # nothing runs until the held replies leave; stop reading once enough is buffered
            self.parser.feed(data)
            self._update_reading()
            return
        if self.paused:
            self.parser.feed(data)
            self._process()     # (runs nothing: resume_writing does, once the client reads)
            return
        args = self.parser.feed_one(data)
        if args is None:
            self._process()
        elif args:
            self._run_single(args)

    def _run_single(self, args: list[bytes]) -> None:
        """``_process`` for a chunk that held exactly one command, with nothing else
        buffered (a client that does not pipeline): the same steps for one command."""
        out = self.out
        waiting = self.waiting
        nw = len(waiting)
        node = self.node
        try:
            if not (len(args) == 3 and args[0] == b"SET" and node.set_plain(self, args)):
                node.execute(self, args)
        except Exception:  # a bug in a command: an error reply and a log line, not a bare drop
            self._command_crashed(args)
        else:
            # the bytes of the replies queued in ``out`` and of those it held in ``waiting``
            n = len(out)
            size = len(out[0]) if n == 1 else sum(map(len, out))
            for i in range(nw, len(waiting)):
                size += len(waiting[i][2] or b"")
            if size >= OUT_HIGH:
                node.flush_log()  # the log is written before any reply leaves
                self.flush()  # may call pause_writing
                if waiting:
                    self.held = True
                    self._update_reading()
        if out and not self._blocked():
            node.schedule_flush(self)

    def _process(self) -> None:
        """Run the buffered commands. A pipeline whose replies pile up faster than the client
        reads them is cut short: once OUT_HIGH bytes of replies are queued they are handed to
        the transport, and if that pauses writing (the client is a slow reader), the rest of
        the commands stay in the parser until resume_writing. Replies still held for
        durability (``waiting``) count too: then reading stops until they have left (``held``).
        So one connection's memory stays bounded, however much it pipelines."""
        parser = self.parser
        execute = self.node.execute
        set_plain = self.node.set_plain
        out = self.out
        waiting = self.waiting
        counted = 0   # replies in ``out`` already measured
        size = 0
        budget = 2000   # commands per turn: a huge pipeline must not starve the loop (acks, leases)
        try:
            while not self.closing and not self.paused and not self.held:
                budget -= 1
                if budget < 0:
                    self.node._loop.call_soon(self._resume_process)
                    break
                args = parser.next_command()
                if args is None:
                    break
                if args:
                    nw = len(waiting)
                    try:
                        if not (len(args) == 3 and args[0] == b"SET" and set_plain(self, args)):
                            execute(self, args)
                    except Exception:  # a bug in a command: an error reply and a log line, not a bare drop
                        self._command_crashed(args)
                        break
                    n = len(out)
                    if n > counted:
                        size += len(out[counted]) if n == counted + 1 else sum(map(len, out[counted:n]))
                        counted = n
                    if len(waiting) > nw:
                        for i in range(nw, len(waiting)):
                            size += len(waiting[i][2] or b"")
                    if size >= OUT_HIGH:
                        self.node.flush_log()  # the log is written before any reply leaves
                        self.flush()  # may call pause_writing
                        counted = size = 0
                        if waiting:
                            self.held = True
                            self._update_reading()
        except ProtocolError as e:
            self.reply_now(encode(Error("ERR " + str(e)), self.proto))
            self.node.stats_protocol_errors += 1
            self.node.log.info("client %s: %s; closing the connection", self.addr, e)
            self.close_after_flush()
        if self.out and not self._blocked():
            self.node.schedule_flush(self)

    def _blocked(self) -> bool:
        """Do the queued replies wait for a blocking command's answer (WAIT, FAILOVER)? Then
        they leave together with it, in one write (the client reads them in order anyway),
        and flush() would send nothing now; filling the slot schedules the flush."""
        w = self.waiting
        return bool(w) and w[0][0] == _UNFILLED and len(self.out) < 64 and not self.closing

    def _command_crashed(self, args: list[bytes]) -> None:
        """A command raised: answer with an error and close this connection (whether the
        command already queued a reply is unknown, so the stream cannot be trusted)."""
        name = args[0][:64].decode("utf-8", "replace")
        self.node.log.exception("client %s: command %r failed; closing the connection", self.addr, name)
        self.reply_now(encode(Error(f"ERR internal error running '{name}'; see the node log"), self.proto))
        self.close_after_flush()

    def _update_reading(self) -> None:
        """Read from the client unless its replies pile up (paused), or held replies wait and
        more than HELD_READ_MAX bytes of its requests are buffered meanwhile. (Reading goes on
        while a WAIT blocks a connection, as in Redis: stopping and restarting the socket
        for every WAIT cost two epoll updates.)"""
        t = self.transport
        if t is None or t.is_closing():
            return
        want = not (self.paused or (self.held and self.parser.buffered() > HELD_READ_MAX))
        if want != self._reading:
            self._reading = want
            if want:
                t.resume_reading()
                # commands already buffered meanwhile run now (not inside a transport callback)
                self.node._loop.call_soon(self._resume_process)
            else:
                t.pause_reading()

    def pause_writing(self) -> None:
        # the client reads slower than we answer: stop reading (and running) its requests
        self.paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.paused = False
        self._update_reading()

    def _resume_process(self) -> None:
        if not self.paused and not self.held and not self.closing and self.parser.buffered():
            self._process()

    # ------------------------------------------------------------------ replies
    def reply(self, data: bytes, needed: int = 0, policy=None, kind: str = "r") -> None:
        """Queue a reply; it leaves once position ``needed`` meets ``policy`` (None: the
        cluster's policy, i.e. the node's visible position)."""
        node = self.node
        if self.waiting or (needed > node.visible_seq if policy is None else needed > node.watermark_for(policy)):
            self.waiting.append([needed, policy, data, kind, time.monotonic()])
            node.waiters.add(self)
        else:
            self.out.append(data)
            if kind == "w":
                self.acks.append(len(self.out) - 1)

    def reply_now(self, data: bytes, kind: str = "r") -> None:
        """Queue a reply that needs nothing more (``kind`` "w": a write's acknowledgement)."""
        if self.waiting:
            self.waiting.append([0, None, data, kind, time.monotonic()])
        else:
            self.out.append(data)
            if kind == "w":
                self.acks.append(len(self.out) - 1)

    def reply_slot(self, on_leadership_loss: bytes | None = None) -> list:
        """Reserve the place of a reply that is decided later (WAIT, FAILOVER); see fill_slot.
        ``on_leadership_loss``: the reply to give if this node stops leading meanwhile (None:
        the owner of the slot fills it itself)."""
        e = [_UNFILLED, None, on_leadership_loss, "s", time.monotonic()]
        self.waiting.append(e)
        self.node.waiters.add(self)
        # a blocking command (as Redis's WAIT): the commands after it run only once it is answered
        self.held = True
        if not self._reading or self.paused or self.parser.buffered() > HELD_READ_MAX:
            self._update_reading()      # (else reading goes on: nothing to change)
        return e

    def fill_slot(self, slot: list, data: bytes) -> None:
        slot[0] = 0
        slot[2] = data
        if self.release():
            self.node.waiters.discard(self)

    def held_position(self) -> int:
        """The highest position a reply queued on this connection still waits for (0 if
        none; reply slots of blocking commands do not count)."""
        top = 0
        for e in self.waiting:
            if e[0] > top and e[0] != _UNFILLED:
                top = e[0]
        return top

    def release(self) -> bool:
        """Move replies that may now leave to the output; True when none wait."""
        w = self.waiting
        node = self.node
        visible = node.visible_seq
        moved = False
        while w:
            e = w[0]
            if e[0] > (visible if e[1] is None else node.watermark_for(e[1])):
                break
            if e[3] == "w":
                self.acks.append(len(self.out))
            self.out.append(e[2])
            w.popleft()
            moved = True
        if moved:
            node.schedule_flush(self)   # (replies already in out were scheduled when they got there)
        return not w

    def flush(self, lapsed: bool | None = None) -> None:
        """Hand the queued replies to the transport. ``lapsed``: the node's ``acks_lapsed()``
        if the caller asked it already (one question per end of loop iteration)."""
        w = self.waiting
        if w and w[0][0] == _UNFILLED and len(self.out) < 64 and not self.closing:
            return      # self._blocked(), inlined (once per reply that leaves)
        if self.acks:
            if lapsed is False:
                self.acks.clear()
            else:
                self.node.vet_acks(self, lapsed)   # a leader that lost its lease must not say OK now
        if self.out and self.transport is not None and not self.transport.is_closing():
            out = self.out
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()
        elif self.out:
            self.out.clear()
        if self.closing and not self.waiting and self.transport is not None:
            self.transport.close()
        elif self.held and not self.waiting:
            self.held = False
            was = self._reading
            if not was or self.paused:
                self._update_reading()  # (reading on and not paused: nothing to change)
            if was and self.parser.buffered():
                # requests that arrived while held (reading never stopped): run them now
                self.node._loop.call_soon(self._resume_process)

    def close_after_flush(self) -> None:
        self.closing = True
        self.node.schedule_flush(self)

    # ------------------------------------------------------------------ watch
    def unwatch(self) -> None:
        ks = self.node.storage.ks
        for k in self.watched:
            ws = ks.watchers.get(k)
            if ws is not None:
                ws.discard(self.watch)
                if not ws:
                    del ks.watchers[k]
        self.watched.clear()
        self.watch = WatchState()
