"""Experimental monkeypatches for the profiling experiments (bench/experiments.py).

They are NOT part of replikv and never edit replikv/: bench/patched_node.py applies the
ones named in $REPLIKV_BENCH_PATCHES to the imported modules, then runs the normal CLI.
Each patch is a candidate optimisation whose gain is measured, not guessed; the findings
are in docs/benchmarks.md. They keep the behaviour the benchmark exercises (SET/GET,
RESP2, single commands, no MULTI, standalone) and fall back to the original code for
everything else; the caveats a production version must handle are noted on each.

Since 2026-11-22 replikv itself does what ``hiredis``, ``direct_reply`` and
``lean_dispatch`` try (RequestParser._fast, Node._direct_replies, Node._run_one), with
those caveats handled; ``inline_fsync`` became ``fsync_writer = "inline"``. These patches
stay as the record of the experiments: on today's code they patch over the production
versions, so a new measurement should start from base.

  hiredis        hiredis.Reader as the request parser (C), Python parser for inline input.
                 Caveats: hiredis accepts any RESP type inside the array (ints, nested
                 arrays) which Redis refuses, and does not refuse a huge declared $len
                 before buffering: both need a check of their own (done here for the first).
  parser         a faster pure-Python RequestParser.next_command: one memoryview slice
                 copy per argument instead of bytearray slice + bytes() (two copies), and a
                 fast path for the common "*N\\r\\n$L\\r\\n..." frame.
  direct_reply   under fsync everysec/no, put replies straight into ``out`` instead of the
                 ``waiting`` queue: ``Node._flush`` writes the log before it writes any reply,
                 so a reply can never overtake its record. (Not for fsync always, nor for
                 replication acknowledgement modes that wait for followers.)
  fdatasync      RecordLog.sync with os.fdatasync instead of os.fsync (Redis does so on Linux).
  inline_fsync   fsync always: write + fsync in the loop thread at the end of the iteration
                 (Redis's beforeSleep) instead of a ThreadPoolExecutor job per batch.
  gc_threshold   gc.set_threshold(7000, 10, 10): fewer young-generation collections.
  lean_dispatch  a leaner Node.execute for a single (non-MULTI) data command: the write flag
                 looked up once per command in a dict instead of the ``is_write`` property
                 (twice), no ``time.time()`` per command (once per read callback), no
                 ``replies`` list, an encode fast path for +OK / bulk / nil / int, and
                 no key scan for the read-your-write wait under everysec/no (direct_reply
                 makes it unnecessary; applied only together with it).
"""

from __future__ import annotations

import time

from replikv.core import commands as C
from replikv.core import resp
from replikv.core.resp import OK, Error, ProtocolError, RequestParser, encode
from replikv.server import connection as connmod
from replikv.server import node as nodemod

APPLIED: list[str] = []


# ---------------------------------------------------------------------------- hiredis
def patch_hiredis() -> None:
    import hiredis

    class HiredisRequestParser:
        __slots__ = ("_r", "_py", "_use_py", "_mid")

        def __init__(self, max_bulk_len=512 * 1024 * 1024, max_multibulk_len=1024 * 1024,
                     max_inline_len=64 * 1024) -> None:
            self._r = hiredis.Reader()
            self._py = RequestParser(max_bulk_len, max_multibulk_len, max_inline_len)
            self._use_py = False
            self._mid = False  # hiredis holds part of a frame (or more than one frame)

        def feed(self, data: bytes) -> None:
            if not self._use_py and (self._mid or data[:1] == b"*"):
                self._r.feed(data)
                self._mid = True
            else:
                # inline input (telnet style) at a frame boundary: for this experiment the
                # Python parser takes over the connection for good
                self._use_py = True
                self._py.feed(data)

        def buffered(self) -> int:
            return self._py.buffered() + self._r.len()

        def next_command(self):
            if self._use_py:
                return self._py.next_command()
            try:
                cmd = self._r.gets()
            except hiredis.ProtocolError as e:
                raise ProtocolError(f"Protocol error: {e}") from None
            if cmd is False:
                return None
            self._mid = self._r.has_data()
            if type(cmd) is not list:
                raise ProtocolError("Protocol error: expected '*'")
            for a in cmd:
                if type(a) is not bytes:
                    raise ProtocolError("Protocol error: expected '$'")
            return cmd

    connmod.RequestParser = HiredisRequestParser


# ---------------------------------------------------------------------------- parser
def patch_parser() -> None:
    CRLF = b"\r\n"
    orig = RequestParser.next_command

    def fast(buf, mv, pos, n, max_mb, max_bulk):
        """Parse one complete "*N\\r\\n($L\\r\\n<L bytes>\\r\\n)*N" frame, else None."""
        eol = buf.find(CRLF, pos, pos + 14)
        if eol < 0:
            return None
        count = int(buf[pos + 1:eol])
        if count <= 0 or count > max_mb:
            return None
        p = eol + 2
        args = []
        find = buf.find
        for _ in range(count):
            if p >= n or buf[p] != 36:
                return None
            eol = find(CRLF, p, p + 14)
            if eol < 0:
                return None
            ln = int(buf[p + 1:eol])
            start = eol + 2
            end = start + ln
            if ln < 0 or ln > max_bulk or end + 2 > n or buf[end] != 13 or buf[end + 1] != 10:
                return None
            args.append(mv[start:end].tobytes())
            p = end + 2
        return args, p

    def next_command(self):
        buf = self._buf
        pos = self._pos
        n = len(buf)
        if pos >= n or n - pos < self._need or buf[pos] != 42 or getattr(self, "_args", None) is not None:
            return orig(self)
        mv = memoryview(buf)
        try:
            res = fast(buf, mv, pos, n, self.max_multibulk_len, self.max_bulk_len)
        except ValueError:
            res = None
        finally:
            mv.release()
        if res is None:  # incomplete or unusual: the original parser decides (and reports errors)
            return orig(self)
        self._consume(res[1])
        return res[0]

    RequestParser.next_command = next_command


# ---------------------------------------------------------------------------- direct_reply
def patch_direct_reply() -> None:
    orig_reply = connmod.ClientConnection.reply

    def reply(self, data: bytes, needed: int = 0, policy=None, kind: str = "r") -> None:
        node = self.node
        if not self.waiting and policy is None and node.repl is None and node.config.fsync != "always":
            # standalone, everysec/no: _flush writes the log before any reply leaves
            self.out.append(data)
        else:
            orig_reply(self, data, needed, policy, kind)

    connmod.ClientConnection.reply = reply


# ---------------------------------------------------------------------------- lean dispatch
_NOW = [0.0]


def _patch_data_received() -> None:
    orig = connmod.ClientConnection.data_received

    def data_received(self, data: bytes) -> None:
        _NOW[0] = time.time()
        orig(self, data)

    connmod.ClientConnection.data_received = data_received


def patch_lean_dispatch(direct: bool) -> None:
    _patch_data_received()
    orig_execute = nodemod.Node.execute
    COMMANDS = C.COMMANDS
    Ctx = C.Ctx
    CommandError = C.CommandError
    IS_WRITE = {id(c): c.is_write for c in COMMANDS.values()}
    OK_BYTES = b"+OK\r\n"
    arity_error = C.arity_error

    def fast_encode(r, proto):
        if r is OK:
            return OK_BYTES
        t = type(r)
        if t is bytes:
            return b"$%d\r\n%s\r\n" % (len(r), r)
        if r is None and proto == 2:
            return b"$-1\r\n"
        if t is int:
            return b":%d\r\n" % r
        return encode(r, proto)

    def execute(self, conn, args):
        name = args[0].upper()
        cmd = COMMANDS.get(name)
        if cmd is None or conn.multi is not None or self.repl is not None:
            return orig_execute(self, conn, args)
        self.stats_commands += 1
        conn.last_cmd_time = _NOW[0]
        ops = self.metrics.ops
        ops[name] = ops.get(name, 0) + 1
        n = len(args)
        ar = cmd.arity
        if (n != ar) if ar >= 0 else (n < -ar):
            conn.reply_now(encode(Error(arity_error(cmd.name)), conn.proto))
            return
        w = IS_WRITE[id(cmd)]
        if w and not self.accepts_writes:
            conn.reply_now(encode(Error(self.write_refusal()), conn.proto))
            return
        st = self.storage
        now = int(_NOW[0] * 1000) + self.clock.skew_ms
        ctx = Ctx(st.ks, now, st.last_seq + 1, self.rng, self.accepts_writes, self.config.max_bulk_len)
        try:
            r = cmd.fn(ctx, args)
        except CommandError as e:
            r = Error(e.text)
        needed = 0
        policy = None
        if ctx.effects:
            seq = st.append(ctx.effects, now)
            if w:
                needed = seq
                conn.last_write_seq = seq
                policy = conn.ack_policy
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush)
        if self.visible_seq < st.last_seq and not (direct and self.config.fsync != "always"):
            ks = st.ks
            keys = cmd.keys(args)
            if keys:
                for k in keys:
                    p = ks.key_pos(k)
                    if p > needed:
                        needed = p
            elif not w or cmd.first_key == 0:
                needed = max(needed, st.last_seq)
        conn.reply(fast_encode(r, conn.proto), needed, policy, "w" if w else "r")

    nodemod.Node.execute = execute


# ---------------------------------------------------------------------------- fsync always
def patch_fdatasync() -> None:
    """RecordLog.sync with fdatasync (what Redis uses on Linux): appended data and the file
    size reach the disk, the mtime does not need to."""
    import os
    import threading

    from replikv.storage import log as logmod

    def sync(self) -> None:
        lock = getattr(self, "_lock", None) or threading.Lock()
        with lock:
            if self._fd is None:
                return
            fd = os.dup(self._fd)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)

    logmod.RecordLog.sync = sync


def patch_inline_fsync() -> None:
    """fsync always: write + fsync in the event loop thread at the end of the iteration (as
    Redis's beforeSleep does), instead of handing each batch to the IO thread."""
    orig_flush = nodemod.Node._flush

    def _flush(self) -> None:
        st = self.storage
        if st._buf and self.config.fsync == "always" and not self._writer_busy and self.repl is None:
            self._flush_scheduled = False
            pending = st.take_buffer()
            try:
                secs = st.write_out(*pending, sync=True)
            except Exception as e:  # noqa: BLE001
                self._fatal_io(e)
            self.metrics.fsync_seconds.observe(secs)
            self._advance_visible()
            dirty = self._dirty
            if dirty:
                self._dirty = []
                for c in dirty:
                    c.flush()
            return
        orig_flush(self)

    nodemod.Node._flush = _flush


# ---------------------------------------------------------------------------- gc
def patch_gc_threshold() -> None:
    """Raise the young-generation threshold 10x (700 -> 7000) so the allocation-heavy
    command path triggers fewer collections (and gen-2 passes over the whole keyspace)."""
    import gc

    gc.set_threshold(7000, 10, 10)


def apply(names: str) -> list[str]:
    wanted = [x.strip() for x in names.split(",") if x.strip()]
    for name in wanted:
        if name == "hiredis":
            patch_hiredis()
        elif name == "parser":
            patch_parser()
        elif name == "direct_reply":
            patch_direct_reply()
        elif name == "gc_threshold":
            patch_gc_threshold()
        elif name == "fdatasync":
            patch_fdatasync()
        elif name == "inline_fsync":
            patch_inline_fsync()
        elif name == "lean_dispatch":
            patch_lean_dispatch(direct="direct_reply" in wanted)
        else:
            raise SystemExit(f"unknown patch {name!r}")
        APPLIED.append(name)
    return APPLIED


__all__ = ["apply", "resp"]
