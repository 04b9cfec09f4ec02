"""The asyncio node: sockets, files and timers around the sans-IO core.

Owns: the node's lifecycle (recover, serve, drain, stop), command dispatch for client
connections, the log writer (group commit under ``fsync always``), background snapshots,
active expiry, and the watermark that decides when replies may leave (``visible_seq``).
Does not know: command semantics (core/commands.py), the on-disk format (storage/).

A write, step by step (see docs/architecture.md):
1. ClientConnection.data_received feeds the RESP parser; each command reaches ``execute``.
2. The command runs against the keyspace through a ``Ctx``; its effects are applied in
   memory and framed into one log record at position ``seq`` (Storage.append).
3. The reply is queued with ``needed = seq``.
4. At the end of this loop iteration ``_flush`` hands the buffered records to the log
   writer: under ``everysec``/``no`` an ``os.write`` in this thread (so a kill -9 loses
   nothing already answered); under ``always`` a write and an fsync here too, one for all
   records of the iteration (group commit; ``fsync_writer = "thread"`` moves them to the
   IO thread, and records arriving meanwhile ride on the next fsync).
5. When the records are durable as the policy demands, ``visible_seq`` advances and the
   waiting replies leave, in order. A read that observed a key written at a position not
   yet visible waits the same way, so no client ever sees a write that could still vanish.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import time
from concurrent.futures import ThreadPoolExecutor

from .. import __version__
from ..core import commands as C
from ..core.keyspace import E_DEL, E_META, E_SET, digest
from ..core.resp import (
    NULL_ARRAY,
    OK,
    QUEUED,
    Error,
    encode,
)
from ..storage.engine import Storage
from .config import NodeConfig
from .connection import ClientConnection
from .metrics import NodeMetrics

REDIS_COMPAT_VERSION = "7.2.4"
log = logging.getLogger("replikv.node")

_OK = b"+OK\r\n"


class Clock:
    """The node's only source of wall-clock time; fault injection can skew it."""

    def __init__(self) -> None:
        self.skew_ms = 0

    def now_ms(self) -> int:
        return int(time.time() * 1000) + self.skew_ms


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.log = log
        self.clock = Clock()
        self.storage = Storage(config.data_dir, config.segment_bytes, log=lambda m: log.info("%s", m))
        self.metrics = NodeMetrics(self)
        self.rng = random.Random()
        self._ctx = C.Ctx(None, 0, 0, self.rng)   # the hot path's Ctx, filled per command (_run_one)
        self.role = "leader"
        self.accepts_writes = True
        self.visible_seq = 0
        self.waiters: set[ClientConnection] = set()
        self.ackmode_used = False        # some connection set its own ACKMODE (see Replication.prompt_acks)
        self.clients: dict[int, ClientConnection] = {}
        self._next_client_id = 1
        self._dirty: list[ClientConnection] = []
        self._flush_scheduled = False
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replikv-io")
        self._writer_busy = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._servers: list = []
        self._tasks: list[asyncio.Task] = []
        self._stopping: asyncio.Event | None = None
        self.started_at = time.time()
        self.snapshot_pid = 0
        self.snapshot_in_progress = False
        self.last_snapshot_ok = True
        self.last_save_time = int(time.time())
        self.stats_protocol_errors = 0
        self.stats_commands = 0
        self.stats_connections = 0
        self.stats_rejected_connections = 0
        self.stats_expired = 0
        self.http = None
        self.repl = None                 # server/replication.Replication in a leader-mode cluster
        self.cluster = None
        self._wm_cache: dict = {}
        self.loading = False             # the data is being replaced (rollback, full resync)
        self.pos_waiters: list = []      # WAITPOS in progress: [seq, deadline, conn, slot]
        self.user_positions: dict = {}   # user id -> newest write position (SESSION USER)
        self.logfmt = None               # replikv/logformats: row / statement events, triggers (None: physical)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        t = time.perf_counter()
        if self.config.cluster:
            from .clusterconfig import load_cluster

            self.cluster = load_cluster(self.config.cluster)
            self.cluster.node(self.config.node_id)
            from ..logformats import attach

            self.logfmt = attach(self)
        self.storage.wipe_if_interrupted_resync()
        self.storage.recover()
        self.visible_seq = self.storage.last_seq
        log.info("node %d recovered %d keys at seq %d (%d log records replayed) in %.3fs; history %s",
                 self.config.node_id, len(self.storage.ks), self.storage.last_seq,
                 self.storage.recovered_records, time.perf_counter() - t, self.storage.history_id)
        cfg = self.config
        from .http import start_http

        self.http = await start_http(self, cfg.host, cfg.effective_http_port)
        if self.cluster is not None:
            from .replication import Replication

            self.repl = Replication(self, self.cluster)
            await self.repl.start()
            if self.logfmt is not None:
                from ..logformats import start_tasks

                start_tasks(self)
        # clients last: before the replication layer has started, a cluster's node would act
        # as a standalone one (a leader taking writes), so a follower restarting could
        # acknowledge a write that is not replicated (tests/replication/test_startup.py)
        srv = await self._loop.create_server(lambda: ClientConnection(self), cfg.host, cfg.port,
                                             reuse_address=True, backlog=1024)
        self._servers.append(srv)
        self._tasks.append(asyncio.create_task(self._cron(), name="cron"))
        if cfg.fsync == "everysec":
            self._tasks.append(asyncio.create_task(self._everysec(), name="everysec"))
        log.info("node %d serving RESP on %s:%d, HTTP on %s:%d, fsync=%s, data in %s",
                 cfg.node_id, cfg.host, cfg.port, cfg.host, cfg.effective_http_port, cfg.fsync,
                 os.path.abspath(cfg.data_dir))

    async def serve_forever(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._stopping.set)
            except (NotImplementedError, RuntimeError):
                pass
        await self._stopping.wait()
        await self.stop()

    async def stop(self, drain_timeout: float = 5.0) -> None:
        log.info("node %d shutting down", self.config.node_id)
        for s in self._servers:
            s.close()
        # drain: let waiting writes become durable, then close
        self._flush()
        deadline = time.monotonic() + drain_timeout
        while (self._writer_busy or self.storage._buf) and time.monotonic() < deadline:
            self._flush()
            await asyncio.sleep(0.01)
        for c in list(self.clients.values()):
            c.flush()
            if c.transport is not None:
                c.transport.close()
        for t in self._tasks:
            t.cancel()
        if self.repl is not None:
            self.repl.save_commit_point()
            await self.repl.stop()
        if self.http is not None:
            await self.http.cleanup()
        await self._loop.run_in_executor(self._io, self.storage.close)
        self._io.shutdown(wait=True)
        log.info("node %d stopped at seq %d", self.config.node_id, self.storage.last_seq)

    # ------------------------------------------------------------------ clients
    def client_connected(self, c: ClientConnection) -> None:
        if len(self.clients) >= self.config.max_clients:
            self.stats_rejected_connections += 1
            c.transport.write(b"-ERR max number of clients reached\r\n")
            c.transport.close()
            return
        c.id = self._next_client_id
        self._next_client_id += 1
        self.clients[c.id] = c
        self.stats_connections += 1

    def client_disconnected(self, c: ClientConnection) -> None:
        self.clients.pop(c.id, None)
        self.waiters.discard(c)
        c.unwatch()

    def schedule_flush(self, c: ClientConnection) -> None:
        if not c.flush_queued:
            c.flush_queued = True
            self._dirty.append(c)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """End of a loop iteration: write the log, then the replies (Redis's beforeSleep)."""
        self._flush_scheduled = False
        self.flush_log()
        dirty = self._dirty
        if dirty:
            self._dirty = []
            lapsed = None     # acks_lapsed(), asked once for all of them (see vet_acks)
            for c in dirty:
                c.flush_queued = False
                if c.acks and lapsed is None:
                    r = self.repl
                    lapsed = r is not None and r.acks_lapsed()
                c.flush(lapsed)

    def flush_log(self) -> None:
        """Hand the buffered records to the log: before any reply leaves (see direct replies).
        fsync always with ``fsync_writer = "inline"`` (the default) writes and fsyncs right
        here, once per loop iteration for every record of it, as Redis's beforeSleep;
        ``"thread"`` hands the batch to the IO thread and replies wait for it."""
        st = self.storage
        if st._buf:
            cfg = self.config
            if not self.log_write_inline():
                # (a batch still on the IO thread, e.g. just after CONFIG SET fsync, goes first)
                self._kick_writer()
            else:
                self._write_inline(st.take_buffer(), cfg.fsync == "always")

    def log_write_inline(self) -> bool:
        """Are log writes made right here on the loop thread (flush_log's ``_write_inline``)
        rather than on the IO thread?"""
        cfg = self.config
        return not self._writer_busy and (cfg.fsync != "always" or cfg.fsync_writer != "thread")

    def _write_inline(self, pending: tuple, sync: bool) -> None:
        """Write (and under fsync always, fsync) one batch on the loop thread."""
        if self.repl is not None:
            self.repl.on_appended(pending[1], pending[2], self.clock.now_ms())
        try:
            secs = self.storage.write_out(*pending, sync=sync)
        except Exception as e:  # noqa: BLE001 - never acknowledge what the log lacks
            self._fatal_io(e)
        if sync:
            self.metrics.fsync_seconds.observe(secs)
        if self.repl is not None:
            self.repl.on_written(*pending)
        self._advance_visible()

    # ------------------------------------------------------------------ log writer
    def _kick_writer(self) -> None:
        if self._writer_busy:
            return
        pending = self.storage.take_buffer()
        if pending is None:
            return
        self._submit_batch(pending)

    def _submit_batch(self, pending: tuple) -> None:
        """Write and fsync one batch on the IO thread (group commit under fsync=always)."""
        self._writer_busy = True
        if self.repl is not None:
            self.repl.on_appended(pending[1], pending[2], self.clock.now_ms())
        fut = self._loop.run_in_executor(self._io, self.storage.write_out, *pending, True)
        fut.add_done_callback(lambda f: self._writer_done(f, pending))

    def _writer_done(self, fut, pending=None) -> None:
        self._writer_busy = False
        exc = fut.exception()
        if exc is not None:
            self._fatal_io(exc)
            return
        self.metrics.fsync_seconds.observe(fut.result())
        if self.repl is not None and pending is not None:
            self.repl.on_written(*pending)
        self._advance_visible()
        if self.storage._buf:
            self._kick_writer()

    def _fatal_io(self, exc: BaseException) -> None:
        # a failed write or fsync leaves the log in an unknown state (the fsyncgate lesson):
        # never acknowledge anything more; stop, and let recovery decide from what is on disk.
        log.critical("log write/fsync failed: %r; stopping the node without acknowledging more writes", exc)
        self.accepts_writes = False
        os._exit(3)

    async def _everysec(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            st = self.storage
            if st.written_seq > st.synced_seq:
                try:
                    secs = await self._loop.run_in_executor(self._io, st.sync)
                except OSError as e:
                    self._fatal_io(e)
                    return
                self.metrics.fsync_seconds.observe(secs)
            if self.repl is not None:
                await self.repl.relay_sync_everysec()

    def durable_seq(self) -> int:
        """The highest position whose durability meets the local fsync policy."""
        st = self.storage
        if self.config.fsync == "always":
            return st.synced_seq
        return st.written_seq

    def _advance_visible(self) -> None:
        local = self.durable_seq()
        v = self.repl.visible(local) if self.repl is not None else local
        self._wm_cache.clear()
        advanced = v > self.visible_seq
        if advanced:
            self.visible_seq = v
            ks = self.storage.ks
            ks.track_deletes = v < self.storage.last_seq or self.repl is not None
            if (ks.deleted_pos or ks.deleted_floor) and v >= self.storage.last_seq:
                ks.deleted_pos.clear()
                ks.deleted_floor = 0
            if self.repl is not None:
                self.repl.on_visible(v)
        if self.pos_waiters:
            self.check_pos_waiters()
        if self.waiters and (advanced or self.ackmode_used):
            # replies held for the visible position can only leave when it moves; those held
            # for a connection's own ACKMODE policy follow that policy's watermark
            v = self.visible_seq
            am = self.ackmode_used
            # (a connection whose first held reply needs more than v, e.g. behind a WAIT, is
            # skipped without a call: this runs for every ack and every log write)
            done = [c for c in self.waiters if (am or not c.waiting or c.waiting[0][0] <= v) and c.release()]
            for c in done:
                self.waiters.discard(c)

    # ------------------------------------------------------------------ positions for sessions
    def position(self, seq: int | None = None) -> str:
        """A position token: ``epoch:seq`` of this node's visible data (or of ``seq``)."""
        seq = self.visible_seq if seq is None else seq
        epoch = self.repl._epoch_at(seq) if self.repl is not None else self.storage.epoch
        return f"{epoch}:{seq}"

    def wait_position(self, conn: ClientConnection, seq: int, timeout_ms: int) -> None:
        """WAITPOS: answer OK once this node has applied (and may show) ``seq``."""
        if self.visible_seq >= seq:
            conn.reply_now(encode(OK, conn.proto))
            return
        slot = conn.reply_slot(on_leadership_loss=None)
        self.pos_waiters.append([seq, time.monotonic() + timeout_ms / 1000, conn, slot])

    def check_pos_waiters(self) -> None:
        now = time.monotonic()
        keep = []
        for w in self.pos_waiters:
            seq, deadline, conn, slot = w
            if self.visible_seq >= seq:
                conn.fill_slot(slot, encode(OK, conn.proto))
            elif now >= deadline or conn.closing:
                conn.fill_slot(slot, encode(Error(
                    f"TIMEOUT position {seq} not reached within the timeout (this node has {self.visible_seq})"),
                    conn.proto))
            else:
                keep.append(w)
        self.pos_waiters = keep

    def watermark_for(self, policy) -> int:
        """The highest position that meets a connection's own acknowledgement policy."""
        wm = self._wm_cache.get(policy)
        if wm is None:
            wm = self.repl.watermark_for(policy, self.durable_seq()) if self.repl is not None else self.durable_seq()
            self._wm_cache[policy] = wm
        return wm

    def fail_held_reads(self, after: int, reason: str) -> None:
        """A rollback or a full resync replaced the data above position ``after``: a read
        held for such a position was encoded from data that may no longer exist, so it gets
        TRYAGAIN instead of its value (a write's held reply was already answered when this
        node stopped leading: fail_waiting)."""
        for c in list(self.waiters):
            for e in c.waiting:
                if e[3] == "r" and e[0] > after:
                    e[2] = encode(Error(f"TRYAGAIN {reason}; read again"), c.proto)
                    e[0] = 0
            if c.release():
                self.waiters.discard(c)

    def release_all_waiters(self) -> None:
        for c in list(self.waiters):
            for e in c.waiting:
                if e[3] != "s":
                    e[0] = 0
            if c.release():
                self.waiters.discard(c)

    def expire_waiting(self, timeout_ms: int) -> None:
        """Replies that waited longer than the acknowledgement timeout: under a strict or
        sync policy a write gets "outcome unknown", a read a TRYAGAIN; under non-strict
        semi-sync the write is released (the fallback to async)."""
        if not timeout_ms or not self.waiters:
            return
        now = time.monotonic()
        limit = timeout_ms / 1000
        cluster_policy = self.repl.policy if self.repl is not None else None
        for c in list(self.waiters):
            changed = False
            for e in c.waiting:
                needed, policy, _data, kind, t = e
                if kind == "s" or not needed or now - t < limit:
                    continue
                p = policy or cluster_policy
                if kind == "w":
                    if p is not None and (p.strict or p.kind == "sync"):
                        e[2] = encode(Error(
                            f"NOTACKED the write was applied on the leader at seq {needed} but not acknowledged "
                            f"under '{p}' within {timeout_ms} ms; its outcome is unknown (it may still become "
                            f"durable)"), c.proto)
                        self.metrics.ack_timeouts.inc()
                    e[0] = 0
                    changed = True
                elif kind == "r":
                    e[2] = encode(Error(
                        f"TRYAGAIN the value read depends on a write (seq {needed}) not yet acknowledged under "
                        f"'{p}' after {timeout_ms} ms"), c.proto)
                    e[0] = 0
                    changed = True
            if changed and c.release():
                self.waiters.discard(c)

    def schedule_log_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def encode_for(self, conn: ClientConnection, value) -> bytes:
        return encode(value, conn.proto)

    # ------------------------------------------------------------------ dispatch
    def execute(self, conn: ClientConnection, args: list[bytes]) -> None:
        self.stats_commands += 1
        name = args[0]
        cmd = _COMMANDS.get(name)   # clients send names in capitals: no upper() then
        if cmd is None:
            name = name.upper()
            cmd = _COMMANDS.get(name)
            if cmd is None and name in C.SUBCOMMAND_PARENTS and len(args) > 1:
                cmd = _COMMANDS.get(name + b"|" + args[1].upper())
        if conn.multi is not None and name not in _TX_CONTROL:
            self._queue_multi(conn, name, cmd, args)
            return
        if cmd is None:
            handler = _CONN_COMMANDS.get(name)
            if handler is None:
                self.metrics.count(name, error=True)
                conn.reply_now(encode(Error(_unknown(args)), conn.proto))
                return
            ops = self.metrics.ops      # metrics.count(name), inlined (WAIT is a hot one)
            ops[name] = ops.get(name, 0) + 1
            try:
                handler(self, conn, args)
            except C.CommandError as e:
                conn.reply_now(encode(Error(e.text), conn.proto))
            return
        ops = self.metrics.ops
        ops[name] = ops.get(name, 0) + 1
        n = len(args)
        if n != cmd.arity if cmd.arity >= 0 else n < -cmd.arity:
            conn.reply_now(encode(Error(C.arity_error(cmd.name)), conn.proto))
            return
        r = self.repl
        if r is not None:
            # _repl_gate, with its commonest answer first: a leader within its lease, no
            # switchover, nothing loading (the lease check of FailoverMixin.gate, inlined)
            if (self.role == "leader" and not self.loading and not r.switching
                    and (not self.cluster.auto_failover
                         or int(_time() * 1000) + self.clock.skew_ms < r.lease_until)):
                why = None
            else:
                why = self._repl_gate(cmd.write)
            if why is None and self.cluster.partitions > 1:
                why = self._partition_check(cmd, args)
            if why:
                conn.reply_now(encode(Error(why), conn.proto))
                return
        if cmd.write:
            if not self.accepts_writes:
                conn.reply_now(encode(Error(self.write_refusal()), conn.proto))
                return
        elif self.repl is not None and self.config.max_lag_ms:
            refusal = self.repl.lag_refusal()
            if refusal:
                conn.reply_now(encode(Error(refusal), conn.proto))
                return
        if self.logfmt is None and not conn.causal_deps:
            self._run_one(conn, cmd, args)
        else:
            self._run(conn, [(cmd, args)], single=True)

    def set_plain(self, conn: ClientConnection, args: list[bytes]) -> bool:
        """``SET key value`` (three arguments, the name in capitals), the commonest write:
        ``execute``, ``_run_one`` and ``cmd_set``'s plain case in one step, for a node that
        takes it as it is (a leader within its lease or a standalone node, physical log
        format, one partition, outside MULTI, no causal dependencies). False: not taken,
        nothing done; ``execute`` runs it (and gives any error). The same effect, record,
        counters and reply as that path: tests/server/test_set_plain.py compares the two."""
        if conn.multi is not None or conn.causal_deps or self.logfmt is not None or not self.accepts_writes:
            return False
        now = int(_time() * 1000) + self.clock.skew_ms   # Clock.now_ms, inlined
        r = self.repl
        if r is not None and (self.role != "leader" or self.loading or r.switching or self.cluster.partitions > 1
                              or (self.cluster.auto_failover and now >= r.lease_until)):
            return False
        value = args[2]
        if len(value) > self.config.max_bulk_len:
            return False
        self.stats_commands += 1
        ops = self.metrics.ops
        ops[b"SET"] = ops.get(b"SET", 0) + 1
        st = self.storage
        seq = st.last_seq + 1
        e = (E_SET, args[1], value, 0)
        st.ks.apply(e, seq)
        st.append([e], now)
        conn.last_write_seq = seq
        if conn.user_id is not None:
            self.user_positions[conn.user_id] = seq
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        if self._direct_replies(conn):
            conn.reply_now(_OK, "w" if r is not None else "r")
        else:
            conn.reply(_OK, seq, conn.ack_policy, "w")
        return True

    def _run_one(self, conn: ClientConnection, cmd, args: list[bytes]) -> None:
        """``_run`` for one command outside MULTI, with the physical log format and no causal
        dependencies: the same steps without the batch and reply lists (the hot path)."""
        st = self.storage
        now = int(_time() * 1000) + self.clock.skew_ms   # Clock.now_ms, inlined
        # one Ctx reused (filled in place): nothing keeps it past the command
        ctx = self._ctx
        ctx.ks = st.ks
        ctx.now_ms = now
        ctx.pos = st.last_seq + 1
        ctx.effects = effects = []
        ctx.expire_on_access = self.accepts_writes
        ctx.max_string = self.config.max_bulk_len
        try:
            r = cmd.fn(ctx, args)
        except C.CommandError as e:
            r = Error(e.text)
        needed = 0
        policy = None
        w = cmd.write
        if effects:
            seq = st.append(effects, now)
            if w:
                needed = seq
                conn.last_write_seq = seq       # _note_write, inlined
                if conn.user_id is not None:
                    self.user_positions[conn.user_id] = seq
                policy = conn.ack_policy
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush)
        data = _OK if r is OK else encode(r, conn.proto)
        if self._direct_replies(conn):
            conn.reply_now(data, "w" if w and self.repl is not None else "r")
            return
        if self.visible_seq < st.last_seq and needed < st.last_seq:
            # (a write that was just appended already waits for the newest position: no key
            # it touches can reveal anything later)
            needed = self._reveals(cmd, args, w, needed)
        conn.reply(data, needed, policy, "w" if w else "r")

    def _note_write(self, conn: ClientConnection, seq: int):
        """A connection's write got position ``seq``: remember it (LASTPOS, WAIT, SESSION
        USER); returns the ack policy its reply waits for (None: the cluster's)."""
        conn.last_write_seq = seq
        if conn.user_id is not None:
            self.user_positions[conn.user_id] = seq
        return conn.ack_policy

    def _reveals(self, cmd, args: list[bytes], wrote: bool, needed: int) -> int:
        """Something is not yet durable: the position a reply to this command must wait for,
        at least ``needed`` (the newest write to a key it touches; for a command over the
        whole keyspace, everything written so far)."""
        st = self.storage
        keys = cmd.keys(args)
        if keys:
            ks = st.ks
            for k in keys:
                p = ks.key_pos(k)
                if p > needed:
                    needed = p
        elif not wrote or cmd.first_key == 0:
            needed = max(needed, st.last_seq)
        return needed

    def vet_acks(self, conn: ClientConnection, lapsed: bool | None = None) -> None:
        """Write acknowledgements are about to leave (``conn.acks``: their places in
        ``conn.out``). If this node stopped leading, or its lease ran out, since they were
        decided (the process was frozen by SIGSTOP, or its loop starved between running the
        writes and sending the replies), a new leader may exist without these writes: they
        get NOTACKED (outcome unknown) instead of OK, so no acknowledgement from a replaced
        leader reaches a client."""
        if lapsed is None:
            r = self.repl
            lapsed = r is not None and r.acks_lapsed()
        if lapsed:
            err = encode(Error("NOTACKED this node lost its leader lease before the write was acknowledged; "
                               "its outcome is unknown"), conn.proto)
            out = conn.out
            for i in conn.acks:
                out[i] = err
            self.metrics.ack_timeouts.inc(len(conn.acks))
        conn.acks.clear()

    def _direct_replies(self, conn: ClientConnection) -> bool:
        """May replies skip the durability queue? Yes when visibility is just "written to the
        OS" (fsync everysec/no, and no replication policy to wait for) and the connection
        asks nothing stronger. The log is always written before replies are sent."""
        cfg = self.config
        if (cfg.fsync == "always" and cfg.fsync_writer == "thread") or conn.ack_policy is not None or self._writer_busy:
            # (a batch still on the IO thread, e.g. just after CONFIG SET fsync everysec, means
            # the log write is asynchronous for now: replies must wait for it)
            return False
        r = self.repl
        return r is None or (self.role == "leader" and r.policy.kind == "async" and not r.switching)

    def _repl_gate(self, is_write: bool) -> str | None:
        if self.loading:
            return "LOADING replikv is replacing its data (rollback or full resync); retry in a moment"
        if self.role == "leader":
            return self.repl.gate(is_write)
        return None

    def _exec_refusal(self, queued: list) -> str | None:
        """Why EXEC must discard this transaction, or None: the checks ``execute`` makes of a
        command (loading, role and lease, switchover, partitions, a read-only follower, max
        lag), made of the queued commands when EXEC runs. Queueing checked only the arity
        and ``accepts_writes``; the node may have stepped down since, and a write it ran then
        would sit in a follower's log where the leader's record belongs."""
        cmds = [(cmd, args) for cmd, args in queued if cmd is not None]
        if not cmds:
            return None
        write = any(cmd.write for cmd, _ in cmds)
        if self.repl is not None:
            why = self._repl_gate(write)
            if why:
                return why
            if self.cluster.partitions > 1:
                for cmd, args in cmds:
                    why = self._partition_check(cmd, args)
                    if why:
                        return why
        if write:
            if not self.accepts_writes:
                return self.write_refusal()
        elif self.repl is not None and self.config.max_lag_ms:
            return self.repl.lag_refusal()
        return None

    def _partition_check(self, cmd, args) -> str | None:
        """Keys of another partition get a MOVED redirect, as in Redis Cluster."""
        from .clusterconfig import key_slot, partition_of_slot

        c = self.cluster
        where = None
        for k in cmd.keys(args):
            slot = key_slot(k)
            p = partition_of_slot(slot, c.partitions)
            if where is not None and p != where[0]:
                return "CROSSSLOT Keys in request don't hash to the same partition"
            where = (p, slot)
        if where is None or where[0] == c.partition:
            return None
        addrs = c.partition_map.get(where[0]) or [("?", 0)]
        host, port = addrs[0]
        return f"MOVED {where[1]} {host}:{port}"

    def fail_waiting(self, reason: str) -> None:
        """Leadership was lost: replies still waiting for acknowledgement get an error saying
        the outcome is unknown (the write may survive on the new leader, or not)."""
        for c in list(self.waiters):
            for e in c.waiting:
                if e[3] == "w" and e[0]:
                    e[2] = encode(Error(f"NOTACKED {reason} before this write (seq {e[0]}) was acknowledged; "
                                        f"its outcome is unknown"), c.proto)
                    e[3] = "r"   # an error now, not an acknowledgement (vet_acks leaves it)
                    self.metrics.ack_timeouts.inc()
                elif e[3] == "r" and e[0]:
                    e[2] = encode(Error(f"TRYAGAIN {reason}; read again from the current leader"), c.proto)
                elif e[3] == "s" and e[0]:
                    if e[2] is None:
                        continue      # its owner (e.g. FAILOVER) answers it
                e[0] = 0
            if c.release():
                self.waiters.discard(c)

    def write_refusal(self) -> str:
        msg = "READONLY You can't write against a read only replica."
        if self.repl is not None and self.role == "follower":
            lid = self.repl.election.leader_id
            if lid is None:
                msg += " No leader is known right now (an election may be in progress)."
            else:
                spec = self.cluster.node(lid)
                msg += f" The leader is node {spec.node_id} at {spec.host}:{spec.port}"
        return msg

    def _run(self, conn: ClientConnection, batch: list, single: bool) -> None:
        st = self.storage
        ks = st.ks
        now = self.clock.now_ms()
        ctx = C.Ctx(ks, now, st.last_seq + 1, self.rng, self.accepts_writes, self.config.max_bulk_len)
        if self.logfmt is not None:
            batch = self.logfmt.begin(batch)
        replies = []
        wrote = False
        for cmd, args in batch:
            try:
                r = cmd.fn(ctx, args)
            except C.CommandError as e:
                r = Error(e.text)
            replies.append(r)
            if cmd.is_write:
                wrote = True
        needed = 0
        policy = None
        if wrote and conn.causal_deps and ctx.effects:
            # CAUSAL: the session that wrote this depends on these positions of other partitions;
            # readers learn them with DEPS and wait for them (consistent prefix reads)
            meta = {"deps": conn.causal_deps}
            for cmd, args in batch:
                if cmd.is_write:
                    for k in cmd.keys(args):
                        if k in ks.data:
                            ctx.emit((E_META, k, meta))
            conn.causal_deps = None
        if ctx.effects:
            seq = st.append(ctx.effects, now) if self.logfmt is None else self.logfmt.append(ctx.effects, now)
            if wrote:
                needed = seq
                policy = self._note_write(conn, seq)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush)
        elif wrote and conn.causal_deps:
            conn.causal_deps = None
        if self._direct_replies(conn):
            # fsync everysec/no and nothing to wait for but the log write itself: every reply
            # leaves after _flush (or flush_log) has written the log, so it goes straight out
            conn.reply_now(encode(replies[0] if single else replies, conn.proto),
                           "w" if wrote and self.repl is not None else "r")
            return
        if self.visible_seq < st.last_seq:
            # something is not yet durable: a reply that reveals it must wait for it
            for cmd, args in batch:
                needed = self._reveals(cmd, args, cmd.is_write, needed)
        proto = conn.proto
        data = encode(replies[0] if single else replies, proto)
        conn.reply(data, needed, policy, "w" if wrote else "r")

    # ------------------------------------------------------------------ MULTI
    def _queue_multi(self, conn, name, cmd, args) -> None:
        if cmd is None:
            if name in _CONN_COMMANDS and name not in _NOT_IN_MULTI:
                msg = _queue_error(args)  # arity, unknown subcommand: refused now, as Redis does
                if msg is None:
                    conn.multi.append((None, args))
                    conn.reply_now(encode(QUEUED, conn.proto))
                    return
            else:
                msg = _unknown(args) if name not in _CONN_COMMANDS else "ERR Command not allowed inside a transaction"
            conn.multi_error = True
            conn.reply_now(encode(Error(msg), conn.proto))
            return
        n = len(args)
        if n != cmd.arity if cmd.arity >= 0 else n < -cmd.arity:
            conn.multi_error = True
            conn.reply_now(encode(Error(C.arity_error(cmd.name)), conn.proto))
            return
        if cmd.is_write and not self.accepts_writes:
            conn.multi_error = True
            conn.reply_now(encode(Error(self.write_refusal()), conn.proto))
            return
        conn.multi.append((cmd, args))
        conn.reply_now(encode(QUEUED, conn.proto))

    def exec_multi(self, conn: ClientConnection) -> None:
        queued = conn.multi
        conn.multi = None
        if conn.multi_error:
            conn.multi_error = False
            conn.unwatch()
            conn.reply_now(encode(Error("EXECABORT Transaction discarded because of previous errors."), conn.proto))
            return
        why = self._exec_refusal(queued)
        if why:
            # as Redis's execCommandAbort: the transaction is discarded, with the reason
            conn.unwatch()
            conn.reply_now(encode(Error("EXECABORT Transaction discarded because of: " + why), conn.proto))
            return
        dirty = conn.watch.dirty
        if not dirty and conn.watched:
            now = self.clock.now_ms()
            dirty = any(self.storage.ks.is_expired(k, now) for k in conn.watched)
        conn.unwatch()
        if dirty:
            conn.reply_now(encode(NULL_ARRAY, conn.proto))
            return
        if any(cmd is None for cmd, _ in queued):
            # connection-level commands inside MULTI (PING, ECHO, ...): run them in order
            batch = [(cmd if cmd is not None else _ConnCmd(self, conn), args) for cmd, args in queued]
        else:
            batch = queued
        self._run(conn, batch, single=False)

    # ------------------------------------------------------------------ cron
    async def _cron(self) -> None:
        hz = max(self.config.active_expire_hz, 1)
        while True:
            await asyncio.sleep(1.0 / hz)
            try:
                self._active_expire()
                self._maybe_snapshot()
                if self.pos_waiters:
                    self.check_pos_waiters()
            except Exception:  # a cron failure must not kill the node
                log.exception("cron step failed")

    def _active_expire(self) -> None:
        if not self.accepts_writes or not self.config.active_expire_hz:
            return
        st = self.storage
        for _ in range(10):
            now = self.clock.now_ms()
            keys = st.ks.expired_keys(now, 20)
            if not keys:
                return
            ctx = C.Ctx(st.ks, now, st.last_seq + 1, self.rng, True)
            for k in keys:
                ctx.emit((E_DEL, k))
            if self.logfmt is None:
                st.append(ctx.effects, now)
            else:
                self.logfmt.append(ctx.effects, now, expiry=True)
            self.stats_expired += len(keys)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush)
            if len(keys) < 20:
                return

    def _maybe_snapshot(self) -> None:
        every = self.config.snapshot_every_records
        if every and not self.snapshot_in_progress and self.storage.records_since_snapshot >= every:
            self.start_snapshot()

    def start_snapshot(self) -> bool:
        if self.snapshot_in_progress:
            return False
        st = self.storage
        self.snapshot_in_progress = True
        pid, seq, pending = st.fork_snapshot()
        self.snapshot_pid = pid
        log.info("background snapshot at seq %d started by child %d", seq, pid)
        if pending is not None:
            if not self.log_write_inline():
                # the writer thread runs jobs in order: these records go before the roll
                self._submit_batch(pending)
            else:
                self._write_inline(pending, self.config.fsync == "always")
        self._loop.run_in_executor(self._io, st.log.roll, seq + 1)
        asyncio.ensure_future(self._wait_snapshot(pid, seq))
        return True

    async def _wait_snapshot(self, pid: int, seq: int) -> None:
        t = time.perf_counter()
        _, status = await self._loop.run_in_executor(None, os.waitpid, pid, 0)
        ok = os.waitstatus_to_exitcode(status) == 0
        removed = 0
        if ok:
            # the parent publishes the child's file (storage.finish_snapshot), unless the
            # data was replaced (rollback, resync) while the child wrote
            try:
                removed = await self._loop.run_in_executor(self._io, self.storage.finish_snapshot, seq,
                                                           self.config.log_retention_bytes)
            except OSError as e:
                log.error("publishing the snapshot at seq %d failed: %r", seq, e)
            ok = os.path.exists(self.storage.snapshot_path(seq))
        self.snapshot_in_progress = False
        self.snapshot_pid = 0
        self.last_snapshot_ok = ok
        if self.repl is not None:
            self.repl.snapshot_done(seq, ok)
        if not ok:
            log.error("background snapshot at seq %d failed or was discarded (child exit status %s)", seq, status)
            return
        self.last_save_time = int(time.time())
        self.metrics.snapshots.inc()
        log.info("snapshot at seq %d written in %.3fs; %d old log segment(s) removed",
                 seq, time.perf_counter() - t, removed)

    # ------------------------------------------------------------------ replication hooks
    def role_reply(self) -> list:
        st = self.storage
        if self.repl is None:
            return [b"master", st.last_seq, []]
        r = self.repl
        if self.role == "leader":
            rows = []
            for f in sorted(r.leader_core.followers.values(), key=lambda x: x.node_id):
                if f.connected:
                    spec = self.cluster.node(f.node_id)
                    rows.append([spec.host.encode(), str(spec.port).encode(), str(f.received).encode()])
            return [b"master", st.last_seq, rows]
        spec = r.leader_spec()
        state = {"connecting": b"connecting", "snapshot": b"sync"}.get(r.follower_core.state, b"connected")
        if not r.follower_core.link_up:
            state = b"connect"
        return [b"slave", spec.host.encode(), spec.port, state, r.follower_core.applied]

    def cmd_wait(self, conn: ClientConnection, n: int, timeout_ms: int) -> None:
        if self.repl is None:
            # standalone: no replicas, so WAIT answers 0 at once (as Redis does without replicas)
            conn.reply_now(encode(0, conn.proto))
            return
        if self.role != "leader":
            conn.reply_now(encode(Error("ERR WAIT cannot be used with replica instances."), conn.proto))
            return
        self.repl.wait_replicas(conn, n, timeout_ms)

    def extra_metrics(self) -> list:
        """Metric families added by the replication layer."""
        if self.repl is None:
            return []
        from .metrics import replication_families

        return replication_families(self)

    def http_routes(self) -> list:
        """(method, path, handler) routes added by the replication layer."""
        from ..logformats.cdc import http_routes

        return http_routes(self)     # GET /cdc?from=SEQ: change data capture

    def config_changed(self, old: dict) -> None:
        if "log_level" in old:
            logging.getLogger("replikv").setLevel(self.config.log_level.upper())
        if "fsync" in old and old["fsync"] != self.config.fsync:
            log.info("fsync policy changed from %s to %s", old["fsync"], self.config.fsync)
            if self.config.fsync == "everysec":
                self._tasks.append(asyncio.create_task(self._everysec(), name="everysec"))
            self._flush()

    # ------------------------------------------------------------------ status
    def digest(self) -> str:
        return digest(self.storage.ks, self.clock.now_ms())

    def status(self) -> dict:
        st = self.storage
        cfg = self.config
        return {
            "node_id": cfg.node_id,
            "version": __version__,
            "role": self.role,
            "address": f"{cfg.host}:{cfg.port}",
            "http": f"{cfg.host}:{cfg.effective_http_port}",
            "peer": f"{cfg.host}:{cfg.effective_peer_port}",
            "pid": os.getpid(),
            "history_id": st.history_id,
            "epoch": st.epoch,
            "last_seq": st.last_seq,
            "written_seq": st.written_seq,
            "synced_seq": st.synced_seq,
            "visible_seq": self.visible_seq,
            "position": f"{st.history_id}:{st.last_seq}",
            "keys": len(st.ks),
            "fsync": cfg.fsync,
            "clients": len(self.clients),
            "commands": command_counts(self),
            "snapshot_seq": st.snapshot_seq,
            "snapshot_in_progress": self.snapshot_in_progress,
            "log_bytes": st.log.total_bytes(),
            "log_first_seq": st.log.first_seq,
            "uptime_s": round(time.time() - self.started_at, 3),
            "truncation": st.truncation_note or None,
            "data_dir": os.path.abspath(cfg.data_dir),
            "replication": self.repl.status() if self.repl is not None else None,
        }

    def info(self, section: str | None) -> str:
        st = self.storage
        cfg = self.config
        now = time.time()
        sections: dict[str, list[tuple[str, object]]] = {}
        sections["server"] = [
            ("redis_version", REDIS_COMPAT_VERSION), ("replikv_version", __version__),
            ("redis_mode", "standalone"), ("os", os.uname().sysname + " " + os.uname().release),
            ("arch_bits", 64), ("multiplexing_api", "asyncio"), ("process_id", os.getpid()),
            ("run_id", st.history_id), ("tcp_port", cfg.port),
            ("uptime_in_seconds", int(now - self.started_at)),
            ("uptime_in_days", int((now - self.started_at) // 86400)), ("hz", cfg.active_expire_hz),
            ("executable", "replikv"), ("config_file", ""), ("node_id", cfg.node_id),
        ]
        blocked = sum(1 for c in self.clients.values() if c.waiting)
        sections["clients"] = [
            ("connected_clients", len(self.clients)), ("maxclients", cfg.max_clients),
            ("blocked_clients", 0), ("clients_waiting_for_durability", blocked),
        ]
        try:
            import resource

            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        except Exception:
            rss = 0
        sections["memory"] = [
            ("used_memory", rss), ("used_memory_human", f"{rss / 1048576:.2f}M"),
            ("used_memory_rss", rss), ("maxmemory", 0), ("maxmemory_policy", "noeviction"),
        ]
        sections["persistence"] = [
            ("loading", 0), ("rdb_bgsave_in_progress", int(self.snapshot_in_progress)),
            ("rdb_last_save_time", self.last_save_time),
            ("rdb_last_bgsave_status", "ok" if self.last_snapshot_ok else "err"),
            ("rdb_changes_since_last_save", st.records_since_snapshot),
            ("aof_enabled", 1), ("aof_rewrite_in_progress", 0),
            ("aof_last_write_status", "ok"), ("appendfsync", cfg.fsync),
            ("log_last_seq", st.last_seq), ("log_written_seq", st.written_seq),
            ("log_synced_seq", st.synced_seq), ("log_bytes", st.log.total_bytes()),
            ("snapshot_seq", st.snapshot_seq),
        ]
        sections["stats"] = [
            ("total_connections_received", self.stats_connections),
            ("total_commands_processed", self.stats_commands),
            ("rejected_connections", self.stats_rejected_connections),
            ("expired_keys", self.stats_expired), ("total_error_replies", self.metrics.error_total()),
            ("protocol_errors", self.stats_protocol_errors),
        ]
        sections["replication"] = self.replication_info()
        live = sum(1 for e in st.ks.data.values() if e.expire_at)
        sections["keyspace"] = [("db0", f"keys={len(st.ks)},expires={live},avg_ttl=0")] if len(st.ks) else []
        wanted = (section or "default").lower()
        if wanted in ("all", "everything", "default"):
            names = list(sections)
        else:
            names = [s for s in wanted.split() if s in sections]
        out = []
        for name in names:
            out.append(f"# {name.capitalize()}")
            for k, v in sections[name]:
                out.append(f"{k}:{v}")
            out.append("")
        return "\r\n".join(out)

    def replication_info(self) -> list:
        """INFO replication, in Redis's field format where the fields match."""
        st = self.storage
        r = self.repl
        if r is None:
            return [("role", "master"), ("connected_slaves", 0), ("master_replid", st.history_id),
                    ("master_repl_offset", st.last_seq), ("replikv_role", "standalone")]
        now = self.clock.now_ms()
        if self.role == "leader":
            fl = [f for f in sorted(r.leader_core.followers.values(), key=lambda x: x.node_id) if f.connected]
            rows = [("role", "master"), ("connected_slaves", len(fl))]
            for i, f in enumerate(fl):
                spec = self.cluster.node(f.node_id)
                lag = (now - f.last_ack_ms) // 1000 if f.last_ack_ms else -1
                state = "online" if f.state in ("streaming", "catching-up") else "wait_bgsave"
                rows.append((f"slave{i}", f"ip={spec.host},port={spec.port},state={state},offset={f.received},"
                                          f"lag={lag},node_id={f.node_id},flushed={f.flushed},applied={f.applied}"))
            rows += [("master_failover_state", "no-failover"), ("master_replid", st.history_id),
                     ("master_replid2", "0" * 40), ("master_repl_offset", st.last_seq),
                     ("second_repl_offset", -1), ("repl_backlog_active", 1),
                     ("repl_backlog_first_byte_offset", st.log.first_seq), ("replikv_role", "leader"),
                     ("replikv_ack", str(r.policy)), ("replikv_semi_sync_degraded", int(r.leader_core.degraded))]
            return rows
        fc = r.follower_core
        spec = r.leader_spec()
        lag = fc.apply_lag(now)
        return [("role", "slave"), ("master_host", spec.host), ("master_port", spec.port),
                ("master_link_status", "up" if fc.link_up else "down"),
                ("master_last_io_seconds_ago", (now - fc.last_message_ms) // 1000 if fc.last_message_ms else -1),
                ("master_sync_in_progress", int(fc.state == "snapshot")),
                ("slave_read_repl_offset", r.relay_written), ("slave_repl_offset", fc.applied),
                ("slave_priority", 100), ("slave_read_only", 1), ("replica_announced", 1),
                ("connected_slaves", 0), ("master_replid", st.history_id), ("master_repl_offset", fc.applied),
                ("replikv_role", "follower"), ("replikv_state", fc.state),
                ("replikv_io_task", "running" if r.io_running else "stopped"),
                ("replikv_apply_task", "running" if r.apply_running else "stopped"),
                ("replikv_received", r.relay_written), ("replikv_flushed", r.relay_synced),
                ("replikv_applied", fc.applied), ("replikv_apply_lag_seconds", lag["applied"]["seconds"]),
                ("replikv_apply_lag_entries", lag["applied"]["entries"]),
                ("replikv_apply_delay_ms", fc.apply_delay_ms), ("replikv_full_resyncs", r.full_resyncs)]


from . import replcommands  # noqa: E402,F401  (registers REPLICA, ACKMODE)
from .conncommands import _CONN_COMMANDS, _NOT_IN_MULTI, _TX_CONTROL, _ConnCmd, _unknown  # noqa: E402
from .conncommands import queue_error as _queue_error  # noqa: E402
from .dashboard import command_counts  # noqa: E402  (reads / writes in status(), for the dashboard)

_COMMANDS = C.COMMANDS
_time = time.time
