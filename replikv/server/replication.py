"""The asyncio shell of single-leader replication: peer sockets, relay log, apply task.

Owns the IO of replication on the MySQL model:
- leader: a peer server; for each follower one *sender* task (the binlog dump thread)
  that streams log frames from the position the follower asks for, from an in-memory tail
  of recent batches or else from the log files, with heartbeats carrying the leader's clock
  when idle; and a reader of the follower's acknowledgements.
- follower: an *I/O task* that receives frames into the durable relay log and acknowledges
  "received" (written) and "flushed" (fsynced); an *apply task* (the SQL thread) that applies
  relay records to the keyspace and appends them, byte for byte, to the node's own log, so
  the applied position is the last record of that log: it is recovered with the data it
  describes, atomically, and a restart resumes with no gap and no duplicate.
Decisions (policies, fallback, lag, start mode) are made by core/replication.py.

Tricky cases:
- The leader streams only records that are locally durable under its fsync policy, so a
  leader restart can never "forget" a record a follower already has.
- A full resync replaces the follower's data crash-safely (Storage.install_snapshot).
- Acks for "applied" are sent only once the applied records are visible to reads on the
  follower, so "sync at applied" means a read there right after the ack sees the write.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque

import msgpack

from ..core.peerproto import PeerProtocolError, encode_message
from ..core.replication import AckPolicy, FollowerCore, LeaderCore
from ..logformats import apply_event
from ..storage import snapshot as snap
from ..storage.log import STORAGE_FORMAT_VERSION as FORMAT_VERSION
from ..storage.log import RecordLog, decode_payload, iter_frames, split_records
from .failover import FailoverMixin
from .peerlink import PeerConnection, open_peer

log = logging.getLogger("replikv.repl")

TAIL_BYTES = 64 * 1024 * 1024
SEND_BATCH_BYTES = 1 << 20
SNAP_CHUNK = 256 * 1024


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """``event.wait()`` bounded by ``timeout``; False on timeout. Cheaper than
    ``asyncio.wait_for``, which wraps the wait in a task of its own on every call (these
    waits run once per replication batch)."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


class _Stream:
    """One follower's stream, shared by its sender task and the push path (on_written)."""

    __slots__ = ("conn", "next_seq", "live", "last_sent")

    def __init__(self, conn, next_seq: int) -> None:
        self.conn = conn
        self.next_seq = next_seq   # the first record not yet sent
        self.live = False          # the sender task is idle and caught up: on_written pushes
        self.last_sent = 0.0       # time.monotonic() of the last message sent


PUSH_MAX_BUFFERED = 4 << 20    # bytes queued to a follower above which the sender task takes over
PUSH_DELAY = 0.002             # seconds: how long an async leader gathers writes per message
SPARE_DELAY = 0.005            # seconds: the same for followers no write waits on while others are (see _prompt_set)
INLINE_APPLY_MAX = 256         # records: a larger batch goes to the apply task (see _inline_ok)
PROMPT_GAP = 0.0002            # seconds: the least time between two pushes while acks are awaited


class Replication(FailoverMixin):
    """Replication for one node of a ``leader`` mode cluster (roles change on failover)."""

    def __init__(self, node, cluster) -> None:
        self.node = node
        self.cluster = cluster
        cfg = node.config
        self.policy = AckPolicy.parse(cluster.ack)
        self.leader_core = LeaderCore(self.policy, cluster.ack_timeout_ms)
        self.follower_core = FollowerCore(apply_delay_ms=cfg.apply_delay_ms)
        self.tail: deque = deque()      # (first_seq, last_seq, frames) recently written
        self.tail_bytes = 0
        self._data_event = asyncio.Event()
        self._ack_requests = 0      # bumped by request_acks: senders send a heartbeat at once
        self._lazy_timer = None     # a pending _lazy_fire (batches gathered for PUSH_DELAY)
        self._lazy_last = 0.0       # loop time of the last _lazy_fire
        self._gap_timer = None      # a pending _gap_fire (PROMPT_GAP between prompt pushes)
        self._last_push = 0.0       # loop time of the last push while acks are awaited
        self._chosen = frozenset()  # the followers that got the last prompt push (_prompt_set)
        self._prompt = 2            # follower: which acks the leader wants per batch (prompt_acks)
        self._lazy_sent = 0         # leader: the last seq sent with ack 0 (WAIT must then ask)
        self._senders: dict[int, asyncio.Task] = {}
        self._streams: dict[int, _Stream] = {}
        self._peer_server = None
        self._peer_tasks: set = set()  # one task per accepted peer connection (_handle_peer)
        self._tasks: list[asyncio.Task] = []
        self.io_running = False
        self.apply_running = False
        self._io_wanted = True
        self._apply_wanted = True
        self._apply_wake = asyncio.Event()
        self._apply_idle = False    # the apply task is parked, caught up (see _inline_ok)
        self.inline_batches = 0     # batches the I/O task applied itself (_apply_inline)
        self.task_records = 0       # records the apply task applied (_apply_ready)
        self.relay: RecordLog | None = None
        self.apply_queue: deque = deque()   # (seq, epoch, ts_ms, effects, frame)
        self.queue_overflow = False
        self._ack_scheduled = False
        self._peer: PeerConnection | None = None
        self.full_resyncs = 0
        self.last_resync_reason = ""
        self.snapshot_waiters: list[asyncio.Future] = []
        self.degraded_events = 0
        self.ack_timeouts = 0
        self.wait_list: list = []        # WAIT commands in progress: [conn, n, target, deadline, slot]
        self.relay_written = 0
        # a leader that stepped down shows no more than it did as leader until its start plan
        # with the next leader is done (see _become_follower); None: no cap
        self.visible_cap: int | None = None
        self.relay_synced = 0
        self.received_epoch = 0
        self._data_lock = asyncio.Lock()    # held while records are applied or the data is replaced
        self._peer_leader = None             # the leader our I/O task is connected to
        self._draining = False
        self.refusal = None                  # why the leader refuses us (e.g. another storage format)
        self._setup_election()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        node = self.node
        cfg = node.config
        node.role = self.role
        node.accepts_writes = self.role == "leader"
        self.leader_core.last_seq = node.storage.last_seq
        self._restore_commit_cap()
        self._commit_saved_ms = 0
        if self.role == "leader":
            # the first start of the first leader: its commit point exists before any record
            node.storage.save_commit(self.election.epoch, node.visible_seq, sync=True)
        self._peer_server = await node._loop.create_server(
            lambda: PeerConnection(on_connect=self._peer_accepted), cfg.host, cfg.effective_peer_port,
            reuse_address=True)
        self._tasks.append(asyncio.create_task(self._tick_loop(), name="repl-tick"))
        await self._open_relay()
        self._tasks.append(asyncio.create_task(self._io_task(), name="repl-io"))
        self._tasks.append(asyncio.create_task(self._apply_task(), name="repl-apply"))
        if self.role == "leader":
            self.election.on_follower_ack(cfg.node_id, 0)
        log.info("replication: node %d is %s in epoch %d (leader: node %s, ack %s, failover %s)", cfg.node_id,
                 self.role, self.election.epoch, self.election.leader_id, self.policy,
                 "automatic" if self.cluster.auto_failover else "manual")

    async def stop(self) -> None:
        if self._peer_server is not None:
            self._peer_server.close()
        for t in list(self._tasks) + list(self._senders.values()) + list(self._peer_tasks):
            t.cancel()
        if self._peer is not None:
            self._peer.close()
        if self.relay is not None:
            await asyncio.get_running_loop().run_in_executor(self.node._io, self.relay.close)

    # ------------------------------------------------------------------ node hooks
    def on_written(self, data: bytes, first: int, last: int) -> None:
        """The node wrote records first..last to its log (under its fsync policy)."""
        if self.role != "leader":
            return
        self.tail.append((first, last, data))
        self.tail_bytes += len(data)
        while self.tail_bytes > TAIL_BYTES and len(self.tail) > 1:
            f = self.tail.popleft()
            self.tail_bytes -= len(f[2])
        if not self._streams:
            return
        ack = self.prompt_acks()
        if not ack:
            # nobody waits for the followers (async, no WAIT / ACKMODE): at most one batch per
            # PUSH_DELAY instead of one per loop iteration (a write after a quiet spell goes
            # at once). Under load followers then read, write and apply a few large messages
            # instead of many small ones (fewer syscalls and wake-ups per write on both
            # sides); replication lag grows by at most PUSH_DELAY (2 ms: with 1 ms the
            # followers cost about 0.7 µs and the leader 1 µs more per write, SET P1 -5%).
            self._arm_lazy()
            return
        # acks are awaited: push now to the followers whose acks are needed (all, or the k
        # that prompt_followers picks; the others get gathered batches, as under async),
        # unless the last push was less than PROMPT_GAP ago; then the gap timer sends it,
        # with whatever was written meanwhile (under load the leader otherwise spent a third
        # of its time writing tiny batches to followers). uvloop runs a timer under 0.5 ms
        # as call_soon, so there the batch leaves on the next loop iteration; 0.5 ms (a
        # 1 ms uvloop timer) measured much worse, 0.1 ms a little worse (docs/benchmarks.md).
        chosen = self._prompt_set()
        loop = self.node._loop
        now = loop.time()
        if now - self._last_push < PROMPT_GAP:
            if self._gap_timer is None:
                self._gap_timer = loop.call_at(self._last_push + PROMPT_GAP, self._gap_fire)
        else:
            self._last_push = now
            if self._push(data, first, last, chosen):
                self._data_event.set()
        if chosen is not None:
            self._arm_lazy(SPARE_DELAY)    # the spare followers (after the chosen got theirs)

    def _prompt_set(self):
        """The followers that get each batch at once while acks are awaited: None for all,
        else a frozenset of node ids (LeaderCore.prompt_followers)."""
        streams = self._streams
        if len(streams) < 2:
            return None
        p = self.policy
        names = None
        if p.kind != "async":
            if p.first:
                return None      # FIRST k: the named order decides; every follower gets it at once
            k = p.k
            names = p.names or None
        elif self.switching or not self.wait_list or self._ackmode_waits():
            return None
        else:
            k = 0
            for item in self.wait_list:     # the most replicas a WAIT asks for
                if item[1] > k:
                    k = item[1]
        sent = {fid: s.next_seq - 1 for fid, s in streams.items() if names is None or fid in names}
        if k >= len(sent):
            return None
        chosen = self.leader_core.prompt_followers(sent, k, self._chosen, self.node.clock.now_ms())
        self._chosen = chosen
        return chosen

    def _sync_state(self, fid: int) -> str:
        """For the status, as PostgreSQL's sync_state: "async" (the cluster's writes do not
        wait for it), "sync" (each batch goes to it at once: writes wait for its ack), or
        "spare" (writes wait for k other followers; it gets gathered batches, and takes over
        when one of them stalls: see _prompt_set)."""
        p = self.policy
        if p.kind == "async" or (p.names and fid not in p.names):
            return "async"
        if fid not in self._streams:
            return "-"
        chosen = self._prompt_set()
        return "sync" if chosen is None or fid in chosen else "spare"

    def _arm_lazy(self, delay: float = PUSH_DELAY) -> None:
        """Gathered batches: a write leaves ``delay`` after it was written, with everything
        written meanwhile; at once if no batch left for ``delay`` (a write after a quiet
        spell is not held back). (Counting the delay from the last batch instead made
        batches smaller under load: uvloop runs a timer due in under 0.5 ms at once.)"""
        if self._lazy_timer is None:
            loop = self.node._loop
            now = loop.time()
            if now - self._lazy_last >= delay:
                self._lazy_fire()
            else:
                self._lazy_timer = loop.call_at(now + delay, self._lazy_fire)

    def _lazy_fire(self) -> None:
        """Everything written goes to every follower not sent it yet."""
        self._lazy_timer = None
        self._lazy_last = self.node._loop.time()
        if self._push_pending(self._streams):
            self._data_event.set()

    def _gap_fire(self) -> None:
        """PROMPT_GAP is over: what was written meanwhile goes to the followers acks are awaited from."""
        self._gap_timer = None
        self._last_push = self.node._loop.time()
        chosen = self._prompt_set() if self.prompt_acks() else None
        if self._push_pending(self._streams if chosen is None else chosen):
            self._data_event.set()

    def _wake_senders(self) -> None:
        """Every sender task wakes and ships its follower's tail (and a heartbeat if acks were requested)."""
        self._last_push = self.node._loop.time()
        self._data_event.set()

    def _push_pending(self, fids) -> bool:
        """Send each of these followers what it has not been sent yet, from the in-memory
        tail, one encoding per start position. Returns True if some sender task must still
        wake (not idle, a slow reader, records no longer in the tail, more than a message)."""
        node = self.node
        if self.role != "leader":
            return False    # a timer that outlived our leadership: never ship under a newer epoch
        if node.logfmt is not None and node.logfmt.kind is not None:
            return True
        limit = node.durable_seq()
        wake = False
        made: dict = {}
        for fid in fids:
            s = self._streams.get(fid)
            if s is None:
                continue
            first = s.next_seq
            if first > limit:
                continue
            if not s.live or s.conn.buffered() > PUSH_MAX_BUFFERED:
                wake = True
                continue
            got = made.get(first)
            if got is None:
                frames, last = self._tail_frames(first, limit)
                if frames is None:
                    wake = True
                    continue
                ack = self.prompt_acks()
                if not ack:
                    self._lazy_sent = max(self._lazy_sent, last)
                got = made[first] = (encode_message(
                    {"t": "records", "first": first, "last": last, "frames": frames, "leader_last": limit,
                     "leader_time_ms": node.clock.now_ms(), "epoch": self.election.epoch, "ack": ack}), last)
            try:
                s.conn.send_raw(got[0])
            except ConnectionError:
                wake = True     # its sender task notices the closed link
                continue
            s.next_seq = got[1] + 1
            s.last_sent = time.monotonic()
            if got[1] < limit:
                wake = True     # more than one message's worth: the sender task goes on
        return wake

    def _push(self, data: bytes, first: int, last: int, only=None) -> bool:
        """Send a batch just written straight to every follower (or those in ``only``) whose
        sender is idle and caught up (the common case while streaming): one encoding for all
        of them and no task switch. Returns True if some sender task must still wake up
        (behind, busy, a slow reader, or a log format that converts frames into events)."""
        wake = False
        msg = None
        node = self.node
        if node.logfmt is not None and node.logfmt.kind is not None:
            return True
        streams = self._streams
        behind = None
        for fid in (streams if only is None else only):
            s = streams.get(fid)
            if s is None:
                continue
            if s.next_seq > last:
                continue        # sent already (a gathered batch just went out)
            if not s.live or s.next_seq != first or s.conn.buffered() > PUSH_MAX_BUFFERED:
                if s.live and s.next_seq < first:
                    behind = [fid] if behind is None else behind + [fid]   # e.g. newly chosen
                else:
                    wake = True
                continue
            if msg is None:
                ack = self.prompt_acks()
                if not ack:
                    self._lazy_sent = last
                msg = encode_message({"t": "records", "first": first, "last": last, "frames": data,
                                      "leader_last": node.durable_seq(), "leader_time_ms": node.clock.now_ms(),
                                      "epoch": self.election.epoch, "ack": ack})
            try:
                s.conn.send_raw(msg)
            except ConnectionError:
                wake = True     # its sender task notices the closed link
                continue
            s.next_seq = last + 1
            s.last_sent = time.monotonic()
        if behind is not None and self._push_pending(behind):
            wake = True
        return wake

    def on_appended(self, first: int, last: int, now_ms: int) -> None:
        if self.role == "leader":
            self.leader_core.on_append(first, last, now_ms)

    def visible(self, local_durable: int) -> int:
        if self.role != "leader":
            cap = self.visible_cap
            return local_durable if cap is None else min(local_durable, cap)
        v = self.leader_core.policy_watermark(self.policy, local_durable)
        shown = self.node.visible_seq
        if v > shown and self.cluster.auto_failover and not self._lease_ok(self.node.clock.now_ms()):
            # a leader without its lease shows nothing new: what it could show now (e.g. after a
            # semi-sync fallback to async) may exist nowhere else, and a step-down's cap or the
            # saved commit point would carry it past a restart
            return shown
        return v

    def watermark_for(self, policy: AckPolicy, local_durable: int) -> int:
        if self.role != "leader":
            cap = self.visible_cap
            return local_durable if cap is None else min(local_durable, cap)
        return self.leader_core.policy_watermark(policy, local_durable)

    def _lift_visible_cap(self) -> None:
        """The start plan with a leader is done (rollback included) or a snapshot replaced the
        data: what this node holds is the leader's history again, visible as on any follower."""
        if self.visible_cap is not None:
            self.visible_cap = None
            self.node._advance_visible()

    def on_visible(self, seq: int) -> None:
        if self.role == "follower" and self._prompt == 2:
            self._schedule_ack()

    # ------------------------------------------------------------------ leader: peer server
    def _peer_accepted(self, conn: PeerConnection) -> None:
        t = asyncio.ensure_future(self._handle_peer(conn))
        self._peer_tasks.add(t)
        t.add_done_callback(self._peer_tasks.discard)

    async def _handle_peer(self, conn: PeerConnection) -> None:
        fid = None
        try:
            hello = await asyncio.wait_for(conn.recv(), 10)
            if hello.get("t") in ("vote_req", "announce", "timeout_now", "whois"):
                await self.handle_control(conn, hello)
                return
            if hello.get("t") != "hello":
                raise PeerProtocolError(f"expected hello, got {hello.get('t')}")
            if type(hello.get("node_id")) is not int:
                raise PeerProtocolError(f"hello without a node id (node_id: {hello.get('node_id')!r:.40})")
            fid = hello["node_id"]
            if not self._knows_node(fid):
                conn.send({"t": "refuse", "reason": f"node {fid} is not in the leader's cluster file"})
                await conn.drain()
                fid = None
                return
            f_epoch = int(hello.get("epoch", 0))
            if self.role == "leader" and f_epoch > self.election.epoch:
                log.warning("follower %d is in epoch %d, newer than ours (%d): stepping down", fid, f_epoch,
                            self.election.epoch)
                self._handle(self.election.step_down(f_epoch, None, self.node.clock.now_ms()))
            if self.role != "leader":
                conn.send({"t": "refuse", "reason": f"node {self.node.config.node_id} is not the leader; "
                           f"the leader is node {self.election.leader_id}", "leader_id": self.election.leader_id,
                           "epoch": self.election.epoch})
                await conn.drain()
                fid = None
                return
            if int(hello.get("format", FORMAT_VERSION)) != FORMAT_VERSION and self.cluster.log_format == "physical":
                conn.send({"t": "refuse", "code": "format", "reason": (
                    f"storage format version {hello.get('format')} of node {fid} differs from the leader's "
                    f"{FORMAT_VERSION}: with log_format = \"physical\" the leader ships its log frames byte for "
                    f"byte, which a node of another storage format cannot store; for a rolling upgrade set "
                    f"log_format = \"row\" (or \"statement\") in the cluster file, which ships logical events")})
                await conn.drain()
                return
            old = self._senders.pop(fid, None)
            if old is not None:
                old.cancel()
            st = self.node.storage
            now = self.node.clock.now_ms()
            f = self.leader_core.on_connect(fid, now, conn.address)
            f.received = f.flushed = int(hello.get("received", 0))
            f.applied = int(hello.get("applied", 0))
            plan = self.plan_start(hello)
            start_seq = plan["start_seq"]
            mode, reason = plan["mode"], plan["reason"]
            if mode == "stream":
                mode, why = self.leader_core.start_decision(
                    hello.get("history_id", ""), start_seq, st.history_id, await self._log_first_seq(),
                    self.node.durable_seq())
                reason = why or reason
            if mode == "snapshot":
                plan["rollback_to"] = None
            f.received = f.flushed = min(f.received, start_seq - 1)
            f.applied = min(f.applied, start_seq - 1)
            conn.sent_top = start_seq - 1     # what this follower may claim until records flow (_on_ack)
            log.info("follower %d connected from %s: %s%s", fid, conn.address, mode,
                     f" ({reason})" if reason else f" from seq {start_seq}")
            if mode == "snapshot":
                f.state = "snapshot"
                f.full_resyncs += 1
                f.last_resync_reason = reason
                self.node.metrics.full_resyncs.inc()
            conn.send({"t": "welcome", "leader_id": self.node.config.node_id, "history_id": st.history_id,
                       "epoch": self.election.epoch, "mode": mode, "reason": reason, "start_seq": start_seq,
                       "rollback_to": plan["rollback_to"], "discard_relay": plan["discard_relay"],
                       "leader_time_ms": self.node.clock.now_ms()})
            sender = asyncio.create_task(self._sender(conn, fid, mode, start_seq))
            self._senders[fid] = sender
            def on_message(msg: dict) -> bool:
                # acks are handled as they arrive (PeerConnection's handler); anything else,
                # and an ack once we no longer lead, goes to the loop below
                if msg.get("t") != "ack" or self.role != "leader":
                    return False
                self._on_ack(fid, msg, conn)
                return True

            conn.set_handler(on_message)
            while True:
                msg = await conn.recv()
                if msg.get("t") == "ack":
                    if self.role != "leader":
                        return
                    self._on_ack(fid, msg, conn)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError, PeerProtocolError, OSError) as e:
            if fid is not None:
                log.info("follower %d disconnected: %s", fid, e)
            elif isinstance(e, PeerProtocolError):
                # bad input from something that is not (yet) a known peer: say so, once
                log.warning("peer connection from %s closed: %s", conn.address, e)
            elif isinstance(e, asyncio.TimeoutError):
                log.info("peer connection from %s closed: no hello within 10 s", conn.address)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("peer connection from %s failed", conn.address)
        finally:
            if fid is not None:
                t = self._senders.get(fid)
                if t is not None and t is not asyncio.current_task():
                    t.cancel()
                    self._senders.pop(fid, None)
                if self._senders.get(fid) is None or self._senders.get(fid).done():
                    self.leader_core.on_disconnect(fid)
            conn.close()

    def _on_ack(self, fid: int, msg: dict, conn=None) -> None:
        """A follower's acknowledgement: its positions, the writes and WAITs it releases.
        A follower cannot hold more of this leader's history than this leader sent it on
        this connection: its claims are capped there. (While it carries out its start plan,
        a rollback that may take seconds, its tick acks still state its old relay position,
        records of another history at the positions this leader's new records take; counted
        as received, they acknowledged writes only the leader had.)"""
        self.election.on_follower_ack(fid, int(msg.get("echo_ms", 0)))
        s = self._streams.get(fid)
        top = s.next_seq - 1 if s is not None and s.conn is conn else getattr(conn, "sent_top", 0)
        received = min(int(msg["received"]), top)
        flushed = min(int(msg["flushed"]), top)
        applied = min(int(msg["applied"]), top)
        events = self.leader_core.on_ack(fid, received, flushed, applied,
                                         self.node.clock.now_ms(), int(msg.get("leader_last", 0)))
        if events:
            self._handle_events(events)
        self.node._advance_visible()
        self._check_waits()

    def _knows_node(self, node_id: int) -> bool:
        """Is ``node_id`` in the cluster? A node added to the cluster file after this one
        started (``replikv up --nodes N+1``) is learnt by re-reading the file, so ROLE, INFO
        and status can name it (they look its address up)."""
        c = self.cluster
        if any(n.node_id == node_id for n in c.nodes):
            return True
        path = self.node.config.cluster
        if not path:
            return False
        from .clusterconfig import load_cluster
        from .config import ConfigError

        try:
            fresh = load_cluster(path)
        except ConfigError as e:
            log.warning("node %d said hello but is not in the cluster; re-reading %s failed: %s", node_id, path, e)
            return False
        known = {n.node_id for n in c.nodes}
        for n in fresh.nodes:
            if n.node_id not in known:
                c.nodes.append(n)
                log.info("node %d (%s:%d) joined the cluster file", n.node_id, n.host, n.port)
        return any(n.node_id == node_id for n in c.nodes)

    def prompt_acks(self) -> int:
        """Which acks does anything on this leader wait for right now? Told to followers in
        every ``records`` / ``hb`` message (``ack``):
          0  nothing waits: followers ack only on their tick (every heartbeat, at most
             100 ms), for lag monitoring and leases, as Redis replicas send REPLCONF ACK
             once a second. Under async acks an ack per batch (two per follower, received
             and applied) was most of the leader's replication work;
          1  received / flushed (semi-sync, sync:received|flushed, WAIT): an ack as soon as
             a batch is in the relay log (and when fsynced);
          2  applied as well (sync:applied, a connection's own ACKMODE, a switchover)."""
        p = self.policy
        if p.kind != "async":
            return 2 if p.kind == "sync" and p.level == "applied" else 1
        if self.switching or self._ackmode_waits():
            return 2
        return 1 if self.wait_list else 0

    def _ackmode_waits(self) -> bool:
        """Replies held for a connection's own ACKMODE? (WAIT slots and the replies queued
        behind them are the wait list's business: they need "received" only.)"""
        node = self.node
        return node.ackmode_used and any(c.ack_policy is not None for c in node.waiters)

    def request_acks(self) -> None:
        """Something started waiting for acks (WAIT, switchover): every sender sends a
        heartbeat now, so each follower acks its positions at once."""
        self._ack_requests += 1
        self._wake_senders()

    async def _idle_wait(self, timeout: float) -> bool:
        self._data_event.clear()
        return await wait_event(self._data_event, timeout)

    async def _log_first_seq(self) -> int:
        st = self.node.storage
        return await asyncio.get_running_loop().run_in_executor(self.node._io, lambda: st.log.first_seq)

    async def _sender(self, conn: PeerConnection, fid: int, mode: str, next_seq: int) -> None:
        """The binlog dump thread for one follower. While the follower is caught up and this
        task idles, ``on_written`` pushes new batches itself (``_push``); this task catches
        up from the tail or the log files, keeps a slow reader in check (drain), and sends
        heartbeats."""
        node = self.node
        hb = self.cluster.heartbeat_ms / 1000
        s = None
        try:
            if mode == "snapshot":
                next_seq = await self._send_snapshot(conn, fid)
            s = self._streams[fid] = _Stream(conn, next_seq)
            asked = self._ack_requests
            while self.role == "leader":
                s.live = False
                limit = node.durable_seq()
                if s.next_seq <= limit:
                    first = s.next_seq
                    frames, last = await self._frames(first, limit)
                    if frames is None:
                        log.warning("follower %d needs seq %d which the leader no longer has; "
                                    "dropping it so it resyncs", fid, first)
                        return
                    if node.logfmt is not None and node.logfmt.kind is not None:
                        frames = node.logfmt.to_events(frames, first, last)   # row / statement events
                    if self.role != "leader":
                        break       # stepped down while reading: the epoch is no longer ours
                    ack = self.prompt_acks()
                    if not ack:
                        self._lazy_sent = max(self._lazy_sent, last)
                    conn.send({"t": "records", "first": first, "last": last, "frames": frames,
                               "leader_last": limit, "leader_time_ms": node.clock.now_ms(),
                               "epoch": self.election.epoch, "ack": ack})
                    s.next_seq = last + 1
                    s.last_sent = time.monotonic()
                    await conn.drain()
                    continue
                if asked == self._ack_requests:
                    s.live = True
                    if await self._idle_wait(hb) or time.monotonic() - s.last_sent < hb:
                        continue    # new records (maybe pushed already), or a push was recent
                # idle for a heartbeat, or acks wanted now (WAIT, switchover): a heartbeat,
                # which followers always answer with an ack
                s.live = False
                asked = self._ack_requests
                conn.send({"t": "hb", "leader_last": node.durable_seq(), "leader_time_ms": node.clock.now_ms(),
                           "commit": node.visible_seq, "epoch": self.election.epoch,
                           "ack": self.prompt_acks()})
                s.last_sent = time.monotonic()
                await conn.drain()
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sender to follower %d failed", fid)
        finally:
            if s is not None and self._streams.get(fid) is s:
                del self._streams[fid]
            conn.close()

    async def _frames(self, seq: int, limit: int) -> tuple[bytes | None, int]:
        """Frames seq..(<= limit), from the in-memory tail or the log files."""
        frames, last = self._tail_frames(seq, limit)
        if frames is not None:
            return frames, last
        st = self.node.storage
        loop = asyncio.get_running_loop()
        got = await loop.run_in_executor(self.node._io, st.log.read_from, seq, SEND_BATCH_BYTES)
        got = [(s, fr) for s, fr in got if s <= limit]
        if not got or got[0][0] != seq:
            return None, 0
        return b"".join(fr for _, fr in got), got[-1][0]

    def _tail_frames(self, seq: int, limit: int) -> tuple[bytes | None, int]:
        """Frames seq..(<= limit) from the in-memory tail; (None, 0) if it no longer has seq."""
        tail = self.tail
        if tail and tail[0][0] <= seq:
            parts = []
            size = 0
            last = seq - 1
            # a streaming follower needs the newest batches: find the first one from the right
            # (indexing a deque near its end is cheap), so a send costs what it ships, not
            # the length of the tail
            start = len(tail)
            while start > 0 and tail[start - 1][1] >= seq:
                start -= 1
            for i in range(start, len(tail)):   # (islice would walk the deque from its head)
                first, lst, data = tail[i]
                if lst < seq or first > limit:
                    continue
                if first < seq or lst > limit:
                    # split a batch at frame boundaries
                    chunk = []
                    for off, end, payload in iter_frames(data):
                        s = msgpack.unpackb(payload, raw=False)[0]
                        if seq <= s <= limit and s == last + 1:
                            chunk.append(data[off:end])
                            last = s
                    parts.append(b"".join(chunk))
                else:
                    if first != last + 1:
                        break
                    parts.append(data)
                    last = lst
                size += len(parts[-1])
                if size >= SEND_BATCH_BYTES:
                    break
            if last >= seq:
                return (parts[0] if len(parts) == 1 else b"".join(parts)), last
        return None, 0

    async def _send_snapshot(self, conn: PeerConnection, fid: int) -> int:
        node = self.node
        st = node.storage
        seq, path = await self._snapshot_for_transfer()
        size = os.path.getsize(path)
        log.info("sending snapshot at seq %d (%d bytes) to follower %d", seq, size, fid)
        conn.send({"t": "snap_begin", "seq": seq, "size": size, "history_id": st.history_id, "epoch": st.epoch,
                   "epochs": [h for h in self._history() if h[1] <= seq + 1]})
        loop = asyncio.get_running_loop()
        fh = await loop.run_in_executor(None, open, path, "rb")
        try:
            while True:
                chunk = await loop.run_in_executor(None, fh.read, SNAP_CHUNK)
                if not chunk:
                    break
                conn.send({"t": "snap_chunk", "data": chunk})
                await conn.drain()
        finally:
            fh.close()
        conn.send({"t": "snap_end", "seq": seq})
        await conn.drain()
        f = self.leader_core.follower(fid)
        f.state = "catching-up"
        return seq + 1

    async def _snapshot_for_transfer(self) -> tuple[int, str]:
        """A snapshot file to send: the newest one if recent enough, else a fresh fork."""
        node = self.node
        st = node.storage
        snaps = snap.list_snapshots(st.snap_dir)
        if snaps and st.records_since_snapshot < self.cluster.resync_fresh_records and not node.snapshot_in_progress:
            seq, path = snaps[-1]
            try:
                fh = open(path, "rb")  # keep it open: a later snapshot may unlink it meanwhile
                fh.close()
                return seq, path
            except FileNotFoundError:
                pass
        fut = asyncio.get_running_loop().create_future()
        self.snapshot_waiters.append(fut)
        if not node.snapshot_in_progress:
            node.start_snapshot()
        seq = await fut
        return seq, st.snapshot_path(seq)

    def snapshot_done(self, seq: int, ok: bool) -> None:
        waiters, self.snapshot_waiters = self.snapshot_waiters, []
        for fut in waiters:
            if fut.done():
                continue
            if ok:
                fut.set_result(seq)
            else:
                fut.set_exception(RuntimeError("snapshot for the follower failed"))

    # ------------------------------------------------------------------ leader: acks, WAIT, events
    def _handle_events(self, events) -> None:
        for ev in events:
            if ev.kind == "degraded":
                self.degraded_events += 1
                self.node.metrics.semisync_fallbacks.inc()
                log.warning("%s", ev.detail)
            elif ev.kind == "recovered":
                log.warning("%s", ev.detail)
            elif ev.kind == "ack-timeout":
                self.ack_timeouts += 1
                log.warning("%s (writes up to seq %d)", ev.detail, ev.upto_seq)

    def wait_replicas(self, conn, n: int, timeout_ms: int) -> None:
        """WAIT numreplicas timeout: Redis semantics (replicas that received the connection's
        last write), answered in order with the connection's other replies."""
        target = conn.last_write_seq
        if self.role != "leader":
            conn.reply_now(b":0\r\n")
            return
        count = 0       # LeaderCore.replicas_at(target), without a generator (once per WAIT)
        for f in self.leader_core.followers.values():
            if f.received >= target:
                count += 1
        if count >= n:
            conn.reply_now(b":%d\r\n" % count)
            return
        slot = conn.reply_slot(on_leadership_loss=b":0\r\n")   # (an integer reads the same in RESP2 and 3)
        deadline = time.monotonic() + timeout_ms / 1000 if timeout_ms else None
        self.wait_list.append([conn, n, target, deadline, slot])
        if self._lazy_timer is not None and self._gap_timer is None and target <= self.node.durable_seq():
            self._gap_fire()   # the write is gathering for an async batch: send it now (a write
            # not written yet goes out at once when it is, as the wait list is not empty)
        if target <= self._lazy_sent:
            # the write went out to followers that were told not to ack it yet: ask now (a
            # write not sent yet goes out asking for acks, as the wait list is not empty)
            self.request_acks()

    def _check_waits(self, now: float | None = None) -> None:
        if not self.wait_list:
            return
        # as LeaderCore.replicas_at(target, "received") per WAIT, with the positions read once
        # (this runs on every ack while WAITs are pending)
        pos = [f.received for f in self.leader_core.followers.values()]
        best = max(pos, default=0)
        if now is None:
            now = time.monotonic()
        keep = []
        for item in self.wait_list:
            conn, n, target, deadline, slot = item
            count = 0
            if target <= best:
                for p in pos:
                    if p >= target:
                        count += 1
            if count >= n or (deadline is not None and now >= deadline) or conn.closing:
                conn.fill_slot(slot, b":%d\r\n" % count)
            else:
                keep.append(item)
        self.wait_list = keep

    async def _tick_loop(self) -> None:
        node = self.node
        while True:
            await asyncio.sleep(min(self.cluster.heartbeat_ms, 100) / 1000)
            try:
                now = node.clock.now_ms()
                self._failover_tick()
                if self.role == "leader":
                    events = self.leader_core.tick(now, node.durable_seq())
                    self._handle_events(events)
                    node._advance_visible()
                    node.expire_waiting(self.cluster.ack_timeout_ms)
                    self._check_waits()
                    if now - self._commit_saved_ms >= 1000:
                        self._commit_saved_ms = now
                        self.save_commit_point()
                else:
                    self._schedule_ack()
                    await self._purge_relay()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("replication tick failed")

    # ------------------------------------------------------------------ follower: relay log
    async def _open_relay(self) -> None:
        node = self.node
        st = node.storage
        self.relay = RecordLog(os.path.join(node.config.data_dir, "relay"), self.cluster.relay_segment_bytes,
                               name="relay")
        loop = asyncio.get_running_loop()

        def open_relay():
            last_kept = 0
            for rec in self.relay.open(after_seq=0):
                last_kept = rec.seq
                self.received_epoch = rec.epoch
            if self.relay.truncation_note:
                log.warning("%s", self.relay.truncation_note)
            applied = st.last_seq
            if self.relay.last_seq < applied or (self.relay.segments and self.relay.first_seq > applied + 1):
                # the relay log is behind the data (or does not connect to it): restart it at applied + 1
                if self.relay.last_seq > applied:
                    log.warning("the relay log (from seq %d) does not connect to the data (applied %d): "
                                "records %d..%d it held are dropped and fetched again from the leader",
                                self.relay.first_seq, applied, applied + 1, self.relay.last_seq)
                for seg in list(self.relay.segments):
                    try:
                        os.unlink(seg.path)
                    except FileNotFoundError:
                        pass
                self.relay.segments = []
                self.relay.last_seq = applied
                self.relay._new_segment(applied + 1)
            else:
                self.relay.start(self.relay.last_seq + 1)
            return last_kept

        await loop.run_in_executor(node._io, open_relay)
        fc = self.follower_core
        fc.received = fc.flushed = self.relay_written = self.relay_synced = max(self.relay.last_seq, st.last_seq)
        fc.applied = st.last_seq
        fc.state = "connecting"
        log.info("relay log: received up to %d, applied up to %d", fc.received, fc.applied)

    async def _purge_relay(self) -> None:
        if self.relay is None or len(self.relay.segments) < 2:
            return
        # through what the own log holds, not what was applied: applied records may still wait
        # in the log buffer; a relay segment removed before they reach the own log would leave
        # a restart with a relay that no longer connects to the data (and it is then reset)
        upto = min(self.follower_core.applied, self.node.storage.written_seq)
        await asyncio.get_running_loop().run_in_executor(self.node._io, self.relay.remove_through, upto, 0)

    # ------------------------------------------------------------------ follower: I/O task
    def leader_spec(self):
        return self.cluster.node(self.leader_id)

    async def _io_task(self) -> None:
        backoff = 0.05
        while True:
            if not self._io_wanted or self.role == "leader":
                self.io_running = self._io_wanted and self.role != "leader"
                self.follower_core.link_up = False
                self._io_resume.clear()
                try:
                    await asyncio.wait_for(self._io_resume.wait(), 0.2)
                except asyncio.TimeoutError:
                    pass
                continue
            self.io_running = True
            target = self.election.leader_id
            if target is None or target == self.node.config.node_id:
                # leader unknown: ask the others (a non-leader answers with its leader hint)
                others = self._others()
                target = others[int(time.monotonic() * 10) % len(others)] if others else self.leader_id
            host, port = self.cluster.peer_addr(self.node.config.node_id, target)
            try:
                conn = await open_peer(host, port, 2.0)
            except (OSError, asyncio.TimeoutError) as e:
                self.follower_core.link_up = False
                log.debug("cannot reach node %d at %s:%d: %s", target, host, port, e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 0.5)
                continue
            self._peer = conn
            self._peer_leader = target
            try:
                await self._follow(conn, target)
                backoff = 0.05
            except (ConnectionError, asyncio.IncompleteReadError, PeerProtocolError, OSError,
                    asyncio.TimeoutError) as e:
                log.info("link to node %d lost: %s", target, e)
            except asyncio.CancelledError:
                conn.close()
                raise
            except _Refused as e:
                if e.code == "format":
                    if self.refusal != str(e):
                        log.error("node %d refuses us: %s", target, e)
                    self.refusal = str(e)
                hint, ep = e.hint
                if hint is not None and hint != target and ep >= self.election.epoch and hint != self.node.config.node_id:
                    if ep > self.election.epoch and self.role != "leader":
                        # a newer epoch than ours exists: adopt it (persisted) with its leader
                        self._handle(self.election.step_down(ep, hint, self.node.clock.now_ms()))
                    self.election.leader_id = hint
                    self.leader_id = hint
                    backoff = 0.02
                else:
                    log.debug("node %d refused: %s", target, e)
            finally:
                self.follower_core.link_up = False
                self._peer = None
                self._peer_leader = None
                conn.close()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 0.5)

    @property
    def _io_resume(self) -> asyncio.Event:
        ev = getattr(self, "_io_resume_ev", None)
        if ev is None:
            ev = self._io_resume_ev = asyncio.Event()
        return ev

    async def _follow(self, conn: PeerConnection, target: int) -> None:
        node = self.node
        st = node.storage
        fc = self.follower_core
        e = self.election
        if getattr(self, "_relay_stale", False) or self.relay_written < st.last_seq:
            # a former leader: its relay log ends where it stopped following, its own log later
            async with self._data_lock:
                await self._reset_relay(st.last_seq)
        conn.send({"t": "hello", "node_id": node.config.node_id, "history_id": st.history_id,
                   "received": self.relay_written, "received_epoch": self.received_epoch, "applied": st.last_seq,
                   "epoch": e.epoch, "history": self._history(), "snapshot_seq": st.snapshot_seq,
                   "format": FORMAT_VERSION})
        await conn.drain()
        welcome = await asyncio.wait_for(conn.recv(), 10)
        if welcome["t"] == "refuse":
            raise _Refused(welcome.get("reason", "refused"), (welcome.get("leader_id"), int(welcome.get("epoch", 0))),
                           welcome.get("code"))
        self.refusal = None
        if welcome["t"] != "welcome":
            raise PeerProtocolError(f"expected welcome, got {welcome['t']}")
        w_epoch = int(welcome.get("epoch", 0))
        if not e.accepts(w_epoch):
            raise PeerProtocolError(f"node {target} leads epoch {w_epoch}, older than ours ({e.epoch}): fenced off")
        now = node.clock.now_ms()
        self._handle(e.on_leader_message(w_epoch, int(welcome["leader_id"]), now))
        self.leader_id = int(welcome["leader_id"])
        self._last_leader_stamp = int(welcome.get("leader_time_ms", 0))
        fc.link_up = True
        fc.last_message_ms = now
        if welcome["mode"] == "snapshot":
            fc.state = "snapshot"
            self.full_resyncs += 1
            self.last_resync_reason = welcome.get("reason", "")
            log.warning("full resync from the leader: %s", self.last_resync_reason)
        else:
            fc.state = "catching-up"
            if welcome.get("rollback_to") is not None:
                await self.rollback_to(int(welcome["rollback_to"]), welcome.get("reason", ""))
            elif welcome.get("discard_relay"):
                async with self._data_lock:
                    await self._reset_relay(st.last_seq)
            if welcome["history_id"] != st.history_id:
                await asyncio.get_running_loop().run_in_executor(node._io, st.adopt_history, welcome["history_id"])
            if int(welcome["start_seq"]) != self.relay_written + 1:
                raise PeerProtocolError(f"the leader starts at {welcome['start_seq']}, we need {self.relay_written + 1}")
            self._lift_visible_cap()
        self._schedule_ack()
        incoming = None
        snap_header = None
        hb_timeout = max(self.cluster.election_timeout_ms * 2, 3000) / 1000
        conn.watch(hb_timeout)

        def following() -> bool:
            return self._io_wanted and self.role != "leader" and self.election.leader_id == target \
                and e.epoch == w_epoch

        def from_leader(msg: dict, now: int) -> None:
            m_epoch = int(msg.get("epoch", 0))
            if not e.accepts(m_epoch):
                raise PeerProtocolError(f"message from epoch {m_epoch} < ours ({e.epoch}): fenced off")
            self._handle(e.on_leader_message(m_epoch, target, now))
            self._last_leader_stamp = int(msg["leader_time_ms"])
            self._prompt = int(msg.get("ack", 2))

        def on_message(msg: dict) -> bool:
            # records and heartbeats are handled as they arrive (PeerConnection's handler), as
            # the loop below would; the rest (snapshots, a relay log written on the IO thread,
            # a change of leader or epoch) is left to the loop
            t = msg["t"]
            if t == "records":
                if not self._relay_inline() or not following():
                    return False
                now = node.clock.now_ms()
                from_leader(msg, now)
                self._on_records_now(msg)
                fc.on_leader_clock(int(msg["leader_last"]), int(msg["leader_time_ms"]), now)
                return True
            if t == "hb" and following():
                now = node.clock.now_ms()
                from_leader(msg, now)
                fc.on_leader_clock(int(msg["leader_last"]), int(msg["leader_time_ms"]), now)
                self._schedule_ack()
                return True
            return False

        conn.set_handler(on_message)
        while True:
            if not following():
                return   # the leader or the epoch changed: reconnect (a new session, a new hello)
            msg = await conn.recv()
            if not following():
                return   # (changed while we waited: the message belongs to the old session)
            t = msg["t"]
            now = node.clock.now_ms()
            if t in ("records", "hb"):
                from_leader(msg, now)
            if t == "records":
                await self._on_records(msg)
                fc.on_leader_clock(int(msg["leader_last"]), int(msg["leader_time_ms"]), now)
            elif t == "hb":
                fc.on_leader_clock(int(msg["leader_last"]), int(msg["leader_time_ms"]), now)
                self._schedule_ack()
            elif t == "snap_begin":
                snap_header = msg
                path = os.path.join(st.snap_dir, "incoming.tmp")
                os.makedirs(st.snap_dir, exist_ok=True)
                incoming = open(path, "wb")
            elif t == "snap_chunk":
                incoming.write(msg["data"])
            elif t == "snap_end":
                incoming.flush()
                os.fsync(incoming.fileno())
                incoming.close()
                incoming = None
                await self._install_snapshot(snap_header)
                fc.on_leader_clock(int(snap_header["seq"]), node.clock.now_ms(), now)
            else:
                raise PeerProtocolError(f"unexpected message {t} from the leader")

    async def _install_snapshot(self, header: dict) -> None:
        node = self.node
        st = node.storage
        path = os.path.join(st.snap_dir, "incoming.tmp")
        loop = asyncio.get_running_loop()

        def validate():
            with open(path, "rb") as fh:
                return snap.read_snapshot_bytes(fh.read())

        hdr, chunks = await loop.run_in_executor(None, validate)
        if int(hdr["seq"]) != int(header["seq"]):
            raise PeerProtocolError("snapshot header does not match snap_begin")
        # stop applying while the data is replaced
        await self._data_lock.acquire()
        node.loading = True
        self.apply_queue.clear()
        self.queue_overflow = False
        node._flush()  # write out whatever was applied before; it is about to be replaced
        while node._writer_busy:
            await asyncio.sleep(0.005)

        def reset_relay():
            relay = self.relay
            relay.close()
            for seg in list(relay.segments):
                try:
                    os.unlink(seg.path)
                except FileNotFoundError:
                    pass
            relay.segments = []
            relay.last_seq = st.last_seq
            relay._new_segment(st.last_seq + 1)

        def install():
            # the relay reset and the epoch history inside the resync window: a kill before
            # the window closes wipes everything at restart (no old relay or old history left
            # next to the new data)
            st.install_snapshot(path, hdr, chunks, epochs=header.get("epochs") or [[int(hdr.get("epoch", 0)), 1]],
                                also=reset_relay)

        try:
            await loop.run_in_executor(node._io, install)
        finally:
            node.loading = False
            self._data_lock.release()
        self._hist_last_epoch = self._history()[-1][0]
        self.received_epoch = self._epoch_at(st.last_seq)
        seq = st.last_seq
        fc = self.follower_core
        fc.received = fc.flushed = fc.applied = seq
        self.relay_written = self.relay_synced = seq
        fc.state = "catching-up"
        node.visible_seq = seq
        self.visible_cap = None
        node.fail_held_reads(0, "the data this read saw was replaced by a full resync")
        node.release_all_waiters()
        log.info("snapshot at seq %d installed (%d keys); catching up from %d", seq, len(st.ks), seq + 1)
        self._schedule_ack()

    def _split_batch(self, msg: dict) -> tuple:
        """Check a records message against what was received so far; its records."""
        fc = self.follower_core
        frames = msg["frames"]
        first, last = int(msg["first"]), int(msg["last"])
        if first != fc.received + 1:
            raise PeerProtocolError(f"records start at {first} but {fc.received + 1} was expected")
        try:
            recs = split_records(frames, first)
        except ValueError as e:
            raise PeerProtocolError(str(e)) from None
        if not recs or recs[-1][0] != last:
            raise PeerProtocolError("records message is inconsistent")
        return recs, frames, first, last

    def _relay_written(self, recs: list, last: int, sync: bool, queue: bool = True) -> None:
        """A batch is in the relay log (written to the OS): received; queue it for the apply
        (unless ``queue`` is False: the caller applies it right away, see _inline_ok)."""
        fc = self.follower_core
        self.relay_written = last
        self.received_epoch = recs[-1][1]
        fc.on_received(last)
        if queue:
            q = self.apply_queue
            if not self.queue_overflow and len(q) < 200_000:
                q.extend(recs)
            else:
                self.queue_overflow = True
        if self._prompt == 1 and not sync:
            self._send_ack()      # now: the leader waits for "received", not for the apply
        else:
            self._ack_soon()      # after this callback: it then carries "applied" too

    def _relay_synced(self, last: int) -> None:
        self.relay_synced = last
        self.follower_core.on_flushed(last)
        self._ack_soon()

    def _inline_ok(self, recs: list, first: int) -> bool:
        """May the I/O task apply this batch itself, right after writing it to the relay log?
        Yes when the apply task is parked and caught up (nothing queued, this batch is next),
        nothing delays the apply, the batch is small and no other message waits: as the
        leader pushes from on_written, this spares a task wake-up, a sleep(0) and a timer per
        batch, and the batch never enters the apply queue. A backlog (a burst, catching up)
        goes to the apply task, which lets the I/O task read on between its slices (applying
        it here made catch-up after a burst 5x slower: the reader stalled behind the applies)."""
        peer = self._peer
        return (self._apply_idle and self._apply_wanted and len(recs) <= INLINE_APPLY_MAX
                and not self.apply_queue and not self.queue_overflow and not self.follower_core.apply_delay_ms
                and (peer is None or not peer._ready) and not self._data_lock.locked()
                and self.node.storage.last_seq + 1 == first)

    def _apply_inline(self, recs: list, frames: bytes, first: int, last: int) -> None:
        """Apply a batch that _inline_ok accepted: each record's effects on the keyspace, then
        its frames, byte for byte, to the node's own log in one piece (the frames of records
        first..last are exactly the batch's ``frames``): written right here when nothing else
        waits in the log buffer, else appended to it. A record that carries a row / statement
        event (log formats) is applied by apply_event, which appends its own record; the
        frames before it go first, so the own log stays in order."""
        node = self.node
        st = node.storage
        apply = st.ks.apply
        hist_epoch = self._hist_last_epoch
        done = 0            # records whose frames are in the own log (buffer)
        i = ts = 0
        try:
            for i, (seq, epoch, ts, effects, _frame) in enumerate(recs):
                if epoch != hist_epoch:
                    hist_epoch = self._enter_epoch(epoch, seq)
                if type(effects) is list:
                    for eff in effects:
                        apply(eff, seq)
                else:
                    self._own_frames(recs, done, i)
                    done = i
                    apply_event(node, effects, seq, epoch, ts)   # row / statement: its own record at seq
                    done = i + 1
        except BaseException:
            # (a bug: as with _apply_ready, whose records reach the own log one by one, the
            # records applied before the failing one are in the own log; the link closes, and
            # the apply task goes on from the relay log)
            self._own_frames(recs, done, i)
            if i:
                self.follower_core.on_applied(recs[i - 1][0], recs[i - 1][2])
                node.schedule_log_flush()
            raise
        self.inline_batches += 1
        fc = self.follower_core
        fc.next_unapplied_ts = None
        fc.on_applied(last, ts)
        if done == 0 and not st._buf and node.config.fsync != "always" and node.log_write_inline():
            # the common case: the batch's frames are the own log's next bytes as they are.
            # Written now, in one piece, instead of through the buffer at the end of the loop
            # iteration (a copy into the buffer, one out of it, and a callback less). Not under
            # fsync always: there the "flushed" ack, scheduled by _relay_written, must not
            # wait for the own log's fsync; the end of the iteration writes it after the ack
            st.note_frames(first, last, hist_epoch, len(recs), len(frames))
            node._write_inline((frames, first, last), False)
            return
        if done == 0:
            st.append_frames(frames, first, last, hist_epoch, len(recs))
        else:
            self._own_frames(recs, done, len(recs))
        node.schedule_log_flush()

    def _enter_epoch(self, epoch: int, seq: int) -> int:
        """The record at ``seq`` is the first of ``epoch``: extend the epoch history (as a
        timeline file), durably, before the record is applied. Returns ``epoch``."""
        self._history().append([epoch, seq])
        self._hist_last_epoch = epoch
        self.node.storage.meta.save()
        return epoch

    def _own_frames(self, recs: list, start: int, end: int) -> None:
        """Append the frames of recs[start:end] (applied, in order) to the own log's buffer."""
        if end > start:
            self.node.storage.append_frames(b"".join(r[4] for r in recs[start:end]), recs[start][0],
                                            recs[end - 1][0], recs[end - 1][1], end - start)

    def _relay_inline(self) -> bool:
        """Is the relay log written (and fsynced) on the loop thread? Not when fsync always
        runs on the IO thread (fsync_writer = "thread")."""
        cfg = self.node.config
        return cfg.fsync != "always" or cfg.fsync_writer == "inline"

    def _on_records_now(self, msg: dict) -> None:
        """A records message, with the relay log written on the loop thread: no await, so it
        runs from PeerConnection's handler as the message arrives (see _follow)."""
        recs, frames, first, last = self._split_batch(msg)
        # received = in the relay log (written to the OS); flushed = fsynced. The write is
        # one os.write in this thread (as the leader's own log; a thread hop per batch cost
        # more than the write)
        relay = self.relay
        relay.write_out(frames, last, first)
        sync = self.node.config.fsync == "always"
        inline = self._inline_ok(recs, first)
        self._relay_written(recs, last, sync, queue=not inline)
        if sync:
            relay.sync()
            self._relay_synced(last)
        if inline:
            self._apply_inline(recs, frames, first, last)
        else:
            self._apply_wake.set()

    async def _on_records(self, msg: dict) -> None:
        if self._relay_inline():
            self._on_records_now(msg)
            return
        # fsync always on the IO thread: the relay write and its fsync go there
        recs, frames, first, last = self._split_batch(msg)
        loop = self.node._loop
        await loop.run_in_executor(self.node._io, self.relay.write_out, frames, last, first)
        self._relay_written(recs, last, True)
        await loop.run_in_executor(self.node._io, self.relay.sync)
        self._relay_synced(last)
        self._apply_wake.set()

    def save_commit_point(self) -> None:
        """Leader, about once a second (from the tick, under every fsync policy) and at
        shutdown: remember what readers were shown (see Storage.save_commit; a restarted node
        hides its own epoch's records beyond it)."""
        if self.role != "leader":
            return
        st = self.node.storage
        point = (self.election.epoch, self.node.visible_seq)
        if st.commit_point != point:
            try:
                st.save_commit(*point)
            except OSError as e:
                log.warning("could not save the commit point %s: %r (a restart would hide more)", point, e)

    async def relay_sync_everysec(self) -> None:
        if self.relay is None or self.relay_synced >= self.relay_written:
            return
        target = self.relay_written
        await asyncio.get_running_loop().run_in_executor(self.node._io, self.relay.sync)
        self.relay_synced = target
        self.follower_core.on_flushed(target)
        self._schedule_ack()

    # ------------------------------------------------------------------ follower: acks
    def _ack_soon(self) -> None:
        """An ack for a batch just received / flushed: now if the leader waits for such acks
        (``_prompt``), else the next tick's ack carries it."""
        if self._prompt:
            self._schedule_ack()

    def _schedule_ack(self) -> None:
        if self._ack_scheduled or self.role != "follower":
            return
        self._ack_scheduled = True
        self.node._loop.call_soon(self._send_ack)

    def _send_ack(self) -> None:
        self._ack_scheduled = False
        conn = self._peer
        if conn is None:
            return
        fc = self.follower_core
        node = self.node
        if node.config.fsync != "always" and node.config.fsync != "everysec":
            flushed = self.relay_written
        else:
            flushed = self.relay_synced
        applied = min(node.visible_seq, fc.applied)
        try:
            conn.send({"t": "ack", "received": self.relay_written, "flushed": flushed, "applied": applied,
                       "time_ms": node.clock.now_ms(), "echo_ms": getattr(self, "_last_leader_stamp", 0),
                       "leader_last": fc.leader_last,
                       "epoch": self.election.epoch})
        except Exception:  # noqa: BLE001 - a broken link is noticed by the I/O task
            pass

    # ------------------------------------------------------------------ follower: apply task
    async def _apply_task(self) -> None:
        node = self.node
        st = node.storage
        fc = self.follower_core
        loop = asyncio.get_running_loop()
        while True:
            if (not self._apply_wanted or self.role == "leader") and not self._draining:
                self.apply_running = self._apply_wanted and self.role != "leader"
                self._apply_wake.clear()
                await wait_event(self._apply_wake, 0.2)
                continue
            if self._data_lock.locked():
                await asyncio.sleep(0.005)
                continue
            self.apply_running = True
            nxt = st.last_seq + 1
            q = self.apply_queue
            while q and q[0][0] < nxt:
                q.popleft()
            if not q or q[0][0] != nxt:
                if self.relay_written >= nxt:
                    # not in memory (restart, overflow): read the relay log from disk
                    got = await loop.run_in_executor(node._io, self.relay.read_from, nxt, 4 << 20)
                    if got and got[0][0] == nxt:
                        recs = []
                        for s, fr in got:
                            rec = decode_payload(fr[8:])
                            recs.append((s, rec.epoch, rec.ts_ms, rec.effects, fr))
                        q.extendleft(reversed(recs))
                        if self.queue_overflow and q and q[-1][0] >= self.relay_written:
                            self.queue_overflow = False
                        continue
                fc.next_unapplied_ts = None
                self._apply_wake.clear()
                # parked and caught up: the I/O task may apply new batches itself meanwhile (_inline_ok)
                self._apply_idle = not fc.apply_delay_ms
                try:
                    await wait_event(self._apply_wake, 0.5)
                finally:
                    self._apply_idle = False
                continue
            # apply a batch without yielding, then let the loop breathe
            n = self._apply_ready(2000)
            if n:
                await asyncio.sleep(0)
            else:
                wait = fc.apply_wait_ms(q[0][2], node.clock.now_ms()) if q else 50
                self._apply_wake.clear()
                await wait_event(self._apply_wake, max(min(wait, 200), 1) / 1000)

    def _apply_ready(self, limit: int) -> int:
        """Apply up to ``limit`` queued records that are next in order and due (apply delay);
        returns how many. Runs without yielding, from the apply task (a batch that arrives
        while the apply task is parked and caught up is applied by _apply_inline instead)."""
        node = self.node
        st = node.storage
        fc = self.follower_core
        q = self.apply_queue
        n = 0
        apply = st.ks.apply
        append_frame = st.append_frame
        delay = fc.apply_delay_ms and not self._draining
        hist_epoch = self._hist_last_epoch
        applied_ts = 0
        while q and n < limit and (self._apply_wanted or self._draining):
            seq, epoch, ts, effects, frame = q[0]
            if seq != st.last_seq + 1:
                break
            if delay:
                wait = fc.apply_wait_ms(ts, node.clock.now_ms())
                if wait > 0:
                    fc.next_unapplied_ts = ts
                    break
            q.popleft()
            if epoch != hist_epoch:
                hist_epoch = self._enter_epoch(epoch, seq)
            if type(effects) is list:
                for eff in effects:
                    apply(eff, seq)
                append_frame(frame, seq, epoch)
            else:
                apply_event(node, effects, seq, epoch, ts)   # row / statement: its own record at seq
            applied_ts = ts
            n += 1
        fc.next_unapplied_ts = q[0][2] if q else None
        if n:
            self.task_records += n
            fc.on_applied(st.last_seq, applied_ts)   # once per batch: nothing reads it in between
            node.schedule_log_flush()
        return n

    # ------------------------------------------------------------------ operator controls
    def control(self, action: str, what: str) -> None:
        """STOP/START the IO task, the apply task, or both (MySQL's STOP REPLICA IO_THREAD)."""
        if self.role != "follower":
            raise ValueError("this node is not a follower")
        io = what in ("io", "all")
        ap = what in ("apply", "all")
        if action == "stop":
            if io:
                self._io_wanted = False
                self._io_resume.clear()
                if self._peer is not None:
                    self._peer.close()
                self.io_running = False
                self.follower_core.link_up = False
            if ap:
                self._apply_wanted = False
                self.apply_running = False
        else:
            if io:
                self._io_wanted = True
                self._io_resume.set()
            if ap:
                self._apply_wanted = True
                self._apply_wake.set()
        log.info("replication %s %s", action, what)

    def set_apply_delay(self, ms: int) -> None:
        self.follower_core.apply_delay_ms = ms
        self.node.config.apply_delay_ms = ms
        self._apply_wake.set()

    # ------------------------------------------------------------------ status
    def status(self) -> dict:
        node = self.node
        now = node.clock.now_ms()
        e = self.election
        out = {"mode": "leader", "role": self.role, "leader_id": e.leader_id, "epoch": e.epoch,
               "election_role": e.role, "ack": str(self.policy), "ack_timeout_ms": self.cluster.ack_timeout_ms,
               "auto_failover": self.cluster.auto_failover, "lost_records": self.lost_records,
               "last_record": list(self.last_epoch_seq()),
               "elections_won": self.elections_won, "epochs": self._history()[-5:]}
        if self.role == "leader":
            lc = self.leader_core
            out["semi_sync_degraded"] = lc.degraded
            out["semi_sync_fallbacks"] = lc.degradations
            out["ack_timeouts"] = self.ack_timeouts
            out["commit_seq"] = node.visible_seq
            out["lease"] = (not self.cluster.auto_failover) or now < max(self.lease_until, e.lease_until_ms(now))
            out["lease_ms"] = e.lease_ms
            out["switching"] = self.switching
            out["handed_over"] = self.handed_over
            fl = []
            for f in sorted(lc.followers.values(), key=lambda x: x.node_id):
                fl.append({"node_id": f.node_id, "state": f.state, "link": "up" if f.connected else "down",
                           "address": f.address, "received": f.received, "flushed": f.flushed,
                           "applied": f.applied, "lag": lc.lag(f, now),
                           "last_ack_ms_ago": (now - f.last_ack_ms) if f.last_ack_ms else None,
                           "full_resyncs": f.full_resyncs, "last_resync_reason": f.last_resync_reason,
                           "sync_state": self._sync_state(f.node_id)})
            out["followers"] = fl
        else:
            fc = self.follower_core
            spec = self.leader_spec()
            out.update({
                "leader": f"{spec.host}:{spec.port}", "state": fc.state,
                "link": "up" if fc.link_up else "down", "io_task": "running" if self.io_running else "stopped",
                "apply_task": "running" if self.apply_running else "stopped",
                "received": self.relay_written, "flushed": self.relay_synced, "applied": fc.applied,
                "leader_last": fc.leader_last, "lag": fc.apply_lag(now), "apply_delay_ms": fc.apply_delay_ms,
                "full_resyncs": self.full_resyncs, "last_resync_reason": self.last_resync_reason,
                "max_lag_ms": node.config.max_lag_ms, "refused": self.refusal,
                "applied_inline_batches": self.inline_batches, "applied_by_task_records": self.task_records,
            })
        out.update(node.logfmt.status() if node.logfmt is not None else {"log_format": "physical"})
        return out

    def lag_refusal(self) -> str | None:
        """On a follower with max_lag_ms set: why reads are refused now, or None."""
        bound = self.node.config.max_lag_ms
        if self.role != "follower" or not bound:
            return None
        lag = self.follower_core.apply_lag(self.node.clock.now_ms())["applied"]
        if lag["seconds"] * 1000 > bound:
            spec = self.leader_spec()
            return (f"LAGGING this replica is {lag['seconds']:.3f}s ({lag['entries']} entries) behind the leader, "
                    f"more than max-lag {bound} ms; read from the leader at {spec.host}:{spec.port}")
        return None


class _Refused(Exception):
    def __init__(self, reason: str, hint=(None, 0), code=None) -> None:
        super().__init__(reason)
        self.hint = hint
        self.code = code
