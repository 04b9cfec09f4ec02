"""The asyncio shell of leader failover: elections over the peer port, role changes,
fencing, the leader's lease, rollback of a diverged node, and manual switchover.

Decisions are made by core/election.py (epochs, votes, timeouts, lease, divergence point);
this module carries its messages and applies its outputs:

- ``Persist``        meta.json gets (term, voted_for), fsynced, before any reply or request
- ``RequestVotes``   one short connection per peer (vote_req -> vote)
- ``BecomeLeader``   stop following, apply everything received, start a new epoch in the
                     epoch history, announce it to every peer
- ``BecomeFollower`` stop leading (waiting writes get "outcome unknown"), follow the leader

Fencing: every replication message carries its sender's epoch; a node drops messages from
an older epoch, a leader that meets a newer epoch steps down, and a leader without a lease
(no majority heard from within ``lease_ms``) refuses writes and leader reads, so a
partitioned old leader cannot acknowledge anything beside the new one. A leader without a
lease also probes its peers (``whois``) and steps down when one knows a newer epoch.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ..core.election import (
    LEADER,
    BecomeFollower,
    BecomeLeader,
    Election,
    Persist,
    RequestVotes,
    plan_follower_start,
)
from ..core.peerproto import PeerProtocolError
from ..core.replication import LeaderCore
from .peerlink import open_peer

log = logging.getLogger("replikv.failover")


class FailoverMixin:
    """Mixed into server/replication.Replication."""

    # ------------------------------------------------------------------ setup
    def _setup_election(self) -> None:
        import random

        node = self.node
        st = node.storage
        c = self.cluster
        ids = tuple(sorted(n.node_id for n in c.nodes))
        meta = st.meta.data
        self.election = Election(node.config.node_id, ids, election_timeout_ms=c.election_timeout_ms,
                                 auto_failover=c.auto_failover, max_lag_on_failover=c.max_lag_on_failover,
                                 rng=random.Random())
        e = self.election
        if "term" not in meta:
            # the very first start of this node: the cluster file names the first leader (epoch 0)
            meta["term"] = 0
            meta["voted_for"] = None
            meta.setdefault("epochs", [[0, 1]])
            st.meta.save()
            e.epoch = 0
            e.leader_id = c.leader_id
            if c.leader_id == node.config.node_id and st.last_seq == 0:
                e.role = LEADER
        else:
            e.epoch = int(meta["term"])
            e.voted_for = meta.get("voted_for")
            lid = meta.get("leader_id")
            # a restarted node never resumes as leader: someone may have taken over meanwhile
            e.leader_id = None if lid == node.config.node_id else lid
        # a lease may rest on an ack or a vote this node gave before it went down
        e.restarted(node.clock.now_ms())
        self.leader_id = e.leader_id if e.leader_id is not None else c.leader_id
        self.role = "leader" if e.role == LEADER else "follower"
        self.lease_until = 0
        self.switching = False
        self.handed_over = False     # a switchover's timeout_now may have left (see switchover)
        self.lost_records = int(meta.get("lost_records", 0))
        self.elections_won = 0
        self.failovers_seen = 0
        self._last_probe = 0.0
        self._probing = False
        self._hist_last_epoch = self._history()[-1][0] if self._history() else 0

    def _restore_commit_cap(self) -> None:
        """At start: if this node led the epoch of its last records (or a later one, and was
        stopped before writing in it), those beyond the commit point it saved then
        (Storage.save_commit) were never shown to readers, and no follower may have them:
        the next leader may roll them back. They stay hidden (``visible_cap``, the same cap a
        step-down sets) until a leader's welcome says what survives, or this node wins an
        epoch itself. A node that only followed shows its whole log, as before."""
        node = self.node
        st = node.storage
        cp = st.commit_point
        last = st.last_seq
        cap = None
        if cp is not None and self.role != "leader":
            led, seq = cp
            last_epoch = self._epoch_at(last)
            if led == -1:
                # unreadable: whether this node led its last epoch is unknown; hide that epoch
                cap = max([first - 1 for ep, first in self._history() if ep == last_epoch] or [last])
            elif led >= last_epoch and seq < last:
                # (led > last_epoch: it won a later epoch and was stopped before writing in it;
                # its tail of the earlier epoch it led may still be unconfirmed)
                cap = seq
        if cap is None or cap >= last:
            st.ks.deleted_pos.clear()     # (remembered during recovery in case of a cap)
            st.ks.deleted_floor = 0
            return
        self.visible_cap = cap
        node.visible_seq = min(node.visible_seq, cap)
        log.warning("node %d restarts with records %d..%d of epoch %d, which it wrote as leader and no "
                    "follower confirmed: hidden from readers until a leader's welcome", node.config.node_id,
                    cap + 1, last, self._epoch_at(last))

    def _history(self) -> list:
        h = self.node.storage.meta.data.get("epochs")
        if not h:
            h = [[0, 1]]
            self.node.storage.meta["epochs"] = h
        return h

    def last_epoch_seq(self) -> tuple[int, int]:
        """(epoch, seq) of the last record this node has received: what votes compare."""
        st = self.node.storage
        if self.relay_written > st.last_seq and self.received_epoch:
            return self.received_epoch, self.relay_written
        return self._epoch_at(st.last_seq), st.last_seq

    def _epoch_at(self, seq: int) -> int:
        ep = 0
        for e, first in self._history():
            if first <= seq:
                ep = e
        return ep

    def _persist(self, term: int, voted_for) -> None:
        st = self.node.storage
        st.meta["term"] = term
        st.meta["voted_for"] = voted_for
        st.meta["leader_id"] = self.election.leader_id
        st.meta.save()

    # ------------------------------------------------------------------ outputs of the core
    def _handle(self, outputs: list) -> None:
        for o in outputs:
            if isinstance(o, Persist):
                self._persist(o.epoch, o.voted_for)
            elif isinstance(o, RequestVotes):
                asyncio.ensure_future(self._request_votes(o))
            elif isinstance(o, BecomeLeader):
                asyncio.ensure_future(self._become_leader(o.epoch))
            elif isinstance(o, BecomeFollower):
                self._become_follower(o.leader_id, o.epoch)

    # ------------------------------------------------------------------ ticking
    def _failover_tick(self) -> None:
        node = self.node
        now = node.clock.now_ms()
        e = self.election
        if self.role == "leader":
            self.lease_until = e.lease_until_ms(now)
            if not self.cluster.auto_failover:
                # manual failover: no lease (as MySQL's semi-sync source, it leads until told
                # otherwise); but an operator may have forced an election while this node was
                # cut off: ask now and then whether a newer epoch exists, and step down if so
                if time.monotonic() - self._last_probe > self.cluster.election_timeout_ms / 1000:
                    self._last_probe = time.monotonic()
                    asyncio.ensure_future(self._probe())
                return
            if now >= self.lease_until and node.waiters:
                # Without its lease this leader may already have been replaced: it must not
                # acknowledge anything any more, so no write still waiting for its followers
                # may be released later by the semi-sync fallback (expire_waiting, or the
                # leader core's ack timeout, both after this in the same tick). Its outcome
                # is unknown (NOTACKED), as at a step-down.
                node.fail_waiting(f"the lease of epoch {e.epoch} ran out")
            if now >= self.lease_until and time.monotonic() - self._last_probe > self.cluster.election_timeout_ms / 2000:
                self._last_probe = time.monotonic()
                asyncio.ensure_future(self._probe())
            return
        if getattr(self, "_promoting", False):
            return
        le, ls = self.last_epoch_seq()
        behind = max(self.follower_core.leader_last - ls, 0)
        self._handle(e.tick(now, le, ls, behind))

    # ------------------------------------------------------------------ RPC
    async def _rpc(self, node_id: int, msg: dict, timeout: float) -> dict | None:
        host, port = self.cluster.peer_addr(self.node.config.node_id, node_id)
        try:
            conn = await open_peer(host, port, timeout)
        except (OSError, asyncio.TimeoutError):
            return None
        try:
            conn.send(msg)
            await conn.drain()
            return await asyncio.wait_for(conn.recv(), timeout)
        except (OSError, ConnectionError, asyncio.TimeoutError, PeerProtocolError):
            return None
        finally:
            conn.close()

    def _others(self) -> list[int]:
        me = self.node.config.node_id
        return [n.node_id for n in self.cluster.nodes if n.node_id != me]

    async def _request_votes(self, req: RequestVotes) -> None:
        e = self.election
        sent = self.node.clock.now_ms()
        msg = {"t": "vote_req", "epoch": req.epoch, "candidate": self.node.config.node_id,
               "last_epoch": req.last_epoch, "last_seq": req.last_seq, "transfer": req.transfer, "pre": req.pre}
        log.info("%s in epoch %d (last record %d:%d)%s", "asking for pre-votes" if req.pre else "standing for election",
                 req.epoch, req.last_epoch, req.last_seq, " (switchover)" if req.transfer else "")
        timeout = self.cluster.election_timeout_ms / 2000

        async def ask(nid):
            reply = await self._rpc(nid, msg, timeout)
            if reply is None or reply.get("t") != "vote":
                return
            granted = bool(reply.get("granted"))
            hint = reply.get("leader")
            term = int(reply.get("term", 0))
            if not granted and term > e.epoch and e.role != LEADER:
                # the voter is in a newer epoch than ours: adopt it and follow its leader
                self._handle(e.step_down(term, hint, self.node.clock.now_ms()))
                return
            if (not granted and hint not in (None, self.node.config.node_id) and e.role != LEADER
                    and (e.leader_id in (None, self.node.config.node_id) or int(reply.get("epoch", 0)) > e.epoch)):
                e.leader_id = int(hint)
                self.leader_id = int(hint)
            self._handle(e.on_vote(int(reply.get("epoch", req.epoch)), nid, granted, self.node.clock.now_ms(),
                                   req.pre, sent))

        await asyncio.gather(*(ask(n) for n in self._others()))

    async def _probe(self) -> None:
        """A leader without its lease (or any leader, with manual failover) asks its peers,
        all at once, whether a newer epoch exists; one probe at a time."""
        if self._probing:
            return
        self._probing = True
        e = self.election
        me = self.node.config.node_id
        try:
            peers = self._others()
            replies = await asyncio.gather(*(self._rpc(nid, {"t": "whois", "epoch": e.epoch, "from": me}, 0.5)
                                             for nid in peers))
            for nid, reply in zip(peers, replies, strict=True):
                try:
                    newer = reply is not None and int(reply.get("epoch", 0)) > e.epoch
                    hint = reply.get("leader_id") if newer else None
                    hint = None if hint in (None, me) else int(hint)
                except (TypeError, ValueError, AttributeError):
                    continue     # a malformed reply says nothing
                if newer and self.role == "leader":
                    log.warning("node %d knows epoch %s (leader %s); this leader of epoch %d steps down", nid,
                                reply.get("epoch"), hint, e.epoch)
                    self._handle(e.step_down(int(reply["epoch"]), hint, self.node.clock.now_ms()))
                    if hint is None:
                        e.standing = True     # (with manual failover nobody else might stand)
                    return
        finally:
            self._probing = False

    async def handle_control(self, conn, msg: dict) -> None:
        """Control messages on the peer port: votes, announcements, switchover, probes."""
        e = self.election
        node = self.node
        now = node.clock.now_ms()
        t = msg["t"]
        try:
            sender = int(msg["candidate"] if t == "vote_req" else msg["leader_id"] if t == "announce" else 0)
            if t in ("vote_req", "announce"):
                int(msg["epoch"])
            if t == "vote_req":
                int(msg["last_epoch"]), int(msg["last_seq"])
            if t == "timeout_now":
                int(msg.get("epoch", 0)), int(msg.get("leader_id", -1))
        except (KeyError, TypeError, ValueError) as e:
            raise PeerProtocolError(f"malformed {t} message (bad or missing {e})") from None
        if sender and not self._knows_node(sender):
            # a node id outside the cluster file must not move the epoch (and depose the leader)
            raise PeerProtocolError(f"{t} from node {sender}, which is not in the cluster file")
        if t == "vote_req":
            le, ls = self.last_epoch_seq()
            pre = bool(msg.get("pre"))
            granted, outs = e.on_vote_request(int(msg["epoch"]), int(msg["candidate"]), int(msg["last_epoch"]),
                                              int(msg["last_seq"]), le, ls, now, bool(msg.get("transfer")), pre)
            self._handle(outs)   # Persist happens here, before the reply leaves
            log.info("%svote for node %s in epoch %s: %s (our last record %d:%d, theirs %s:%s)", "pre-" if pre else "",
                     msg["candidate"], msg["epoch"], "granted" if granted else "refused", le, ls, msg["last_epoch"],
                     msg["last_seq"])
            conn.send({"t": "vote", "epoch": int(msg["epoch"]) if pre else e.epoch, "granted": granted,
                       "voter": node.config.node_id, "pre": pre, "leader": e.leader_id, "term": e.epoch})
        elif t == "announce":
            ep, lid = int(msg["epoch"]), int(msg["leader_id"])
            if e.accepts(ep):
                self._handle(e.on_leader_message(ep, lid, now))
            conn.send({"t": "info", "epoch": e.epoch, "leader_id": e.leader_id})
        elif t == "timeout_now":
            # only from the leader this node follows, in its epoch (an old or deposed leader's
            # handover would let this node skip the voters' stickiness while a lease holds)
            if (self.role != "leader" and int(msg.get("epoch", 0)) == e.epoch
                    and int(msg.get("leader_id", -1)) == e.leader_id):
                le, ls = self.last_epoch_seq()
                self._handle(e.start_election(now, le, ls, transfer=True))
            conn.send({"t": "info", "epoch": e.epoch, "leader_id": e.leader_id})
        elif t == "whois":
            conn.send({"t": "info", "epoch": e.epoch, "leader_id": e.leader_id, "role": self.role})
        await conn.drain()

    # ------------------------------------------------------------------ role changes
    async def _become_leader(self, epoch: int) -> None:
        node = self.node
        st = node.storage
        e = self.election
        if e.role != LEADER or e.epoch != epoch:
            return
        self._promoting = True
        try:
            # stop following and apply everything already received (ignoring any apply delay)
            if self._peer is not None:
                self._peer.close()
            deadline = time.monotonic() + 10
            while st.last_seq < self.relay_written and time.monotonic() < deadline:
                self._draining = True
                self._apply_wake.set()
                await asyncio.sleep(0.005)
            self._draining = False
            if e.role != LEADER or e.epoch != epoch:
                return
            if st.last_seq < self.relay_written:
                # records it received (a semi-sync leader may have acknowledged them on the
                # strength of this relay log) are not applied yet: starting the new epoch
                # after its own log would drop them. Step down instead; the apply goes on and
                # the next election (this node still has the most) drains it further.
                log.error("node %d won epoch %d but %d received record(s) are still to apply after 10 s; "
                          "not taking writes: stepping down to try again", node.config.node_id, epoch,
                          self.relay_written - st.last_seq)
                self._handle(e.step_down(epoch, None, node.clock.now_ms()))
                e.standing = True     # (with manual failover nobody else would stand)
                return
            node._flush()
            hist = self._history()
            if hist[-1][0] != epoch:
                hist.append([epoch, st.last_seq + 1])
            self._hist_last_epoch = epoch
            st.epoch = epoch
            st.meta["leader_id"] = node.config.node_id
            st.meta.save()
            # before the epoch's first record: a restart hides what no follower confirmed
            try:
                st.save_commit(epoch, node.visible_seq, sync=True)
            except OSError as exc:
                log.error("node %d won epoch %d but cannot save its commit point (%r): not taking writes; "
                          "stepping down", node.config.node_id, epoch, exc)
                self._handle(e.step_down(epoch, None, node.clock.now_ms()))
                e.standing = True
                return
            self.handed_over = False
            self.leader_core = LeaderCore(self.policy, self.cluster.ack_timeout_ms)
            self.leader_core.last_seq = st.last_seq
            self.tail.clear()
            self.tail_bytes = 0
            self.leader_id = node.config.node_id
            self.visible_cap = None
            self.role = "leader"
            node.role = "leader"
            node.accepts_writes = True
            self.follower_core.state = "leading"
            self.lease_until = e.lease_until_ms(node.clock.now_ms())
            self.elections_won += 1
            node.metrics.leader_changes.inc()
            log.warning("node %d is the leader of epoch %d from seq %d", node.config.node_id, epoch, st.last_seq + 1)
            e.standing = False     # (a FAILOVER FORCE may have come in during the drain)
        finally:
            self._promoting = False
        await asyncio.gather(*(self._rpc(n, {"t": "announce", "epoch": epoch, "leader_id": node.config.node_id}, 1.0)
                               for n in self._others()))

    def _become_follower(self, leader_id, epoch: int) -> None:
        node = self.node
        was_leader = self.role == "leader"
        if not was_leader and leader_id is not None and leader_id != self.leader_id:
            # a new leader: the old one's last position (learnt from its messages) says nothing
            # about the new history; keeping it would show this follower lagging (and, with
            # max_lag_on_failover, not eligible) until the new leader writes past it
            self.follower_core.leader_last = self.relay_written
        if leader_id is not None:
            self.leader_id = leader_id
        node.storage.meta["leader_id"] = leader_id
        if was_leader:
            log.warning("node %d steps down in epoch %d (leader: %s)", node.config.node_id, epoch, leader_id)
            # its log may end in records no follower acknowledged (never visible here): they
            # stay hidden from readers until the start plan with the next leader (which rolls
            # back what that leader lacks) is done; as a follower, visibility would otherwise
            # be its whole own log (Replication.visible)
            self.visible_cap = node.visible_seq
            self.role = "follower"
            node.role = "follower"
            node.accepts_writes = False
            for t in list(self._senders.values()):
                t.cancel()
            self._senders.clear()
            for timer in (self._lazy_timer, self._gap_timer):   # pending pushes (see on_written)
                if timer is not None:
                    timer.cancel()
            self._lazy_timer = self._gap_timer = None
            for f in self.leader_core.followers.values():
                f.connected = False
            node.fail_waiting(f"leadership lost in epoch {epoch}")
            self.wait_list.clear()
            self.switching = False
            self.follower_core.state = "connecting"
            self.follower_core.leader_last = node.storage.last_seq
            # its relay log stopped when it became leader; its own log went on: the relay
            # restarts after the own log before the I/O task says hello (see _follow)
            self._relay_stale = True
            self._io_resume.set()
        elif self._peer is not None and self._peer_leader != self.leader_id:
            self._peer.close()   # reconnect to the new leader
        self.failovers_seen += 1

    # ------------------------------------------------------------------ the leader's gate
    def acks_lapsed(self) -> bool:
        """May write acknowledgements decided as leader still leave? No once this node no
        longer leads, or (with automatic failover) its lease has run out."""
        if self.role != "leader":
            return True
        return self.cluster.auto_failover and not self._lease_ok(self.node.clock.now_ms())

    def _lease_ok(self, now: int) -> bool:
        """Does this leader hold its lease at ``now``? (recomputed from acks once the cached
        end has passed)"""
        if now < self.lease_until:
            return True
        self.lease_until = self.election.lease_until_ms(now)
        return now < self.lease_until

    def gate(self, is_write: bool) -> str | None:
        """Why this leader must refuse a command now (no lease, switchover), or None."""
        if self.role != "leader":
            return None
        if self.switching and is_write:
            return "TRYAGAIN a switchover is in progress; retry against the new leader in a moment"
        # (Node.execute and Node.set_plain take their fast path only without ``switching``,
        # which ``handed_over`` implies while this node leads: they always come here then)
        if self.handed_over and not (self.cluster.allow_stale_reads and not is_write):
            # the target may be elected at once (its voters skip stickiness for a handover),
            # while this node's lease still stands on their earlier acks: no leader reads
            return "TRYAGAIN a switchover is in progress; retry against the new leader in a moment"
        if not self.cluster.auto_failover:
            # with automatic failover off, a new leader can only come from this leader's own
            # switchover, so no lease is needed to know that it still leads
            return None
        now = int(time.time() * 1000) + self.node.clock.skew_ms     # Clock.now_ms, inlined (every command)
        if now < self.lease_until or self._lease_ok(now):
            return None
        if not is_write and self.cluster.allow_stale_reads:
            return None
        return (f"NOLEASE this leader (epoch {self.election.epoch}) has not heard from a majority of the cluster "
                f"within its {self.election.lease_ms} ms lease; it may have been replaced, so it refuses "
                f"{'writes' if is_write else 'leader reads'}")

    # ------------------------------------------------------------------ divergence (leader side)
    def plan_start(self, hello: dict) -> dict:
        """Where does a (re)joining follower start? Checks its history against ours."""
        st = self.node.storage
        if hello.get("history_id") != st.history_id:
            # another history altogether: start_decision sends a snapshot
            return {"mode": "stream", "start_seq": int(hello.get("received", 0)) + 1, "rollback_to": None,
                    "discard_relay": False, "reason": ""}
        return plan_follower_start(self._history(), st.last_seq, hello.get("history") or [[0, 1]],
                                   int(hello.get("applied", 0)), int(hello.get("received", 0)),
                                   int(hello.get("received_epoch", 0)), int(hello.get("snapshot_seq", 0)))

    # ------------------------------------------------------------------ rollback (follower side)
    async def rollback_to(self, seq: int, reason: str) -> int:
        from ..storage.rollback import rollback

        node = self.node
        st = node.storage
        loop = asyncio.get_running_loop()
        async with self._data_lock:
            node.loading = True
            try:
                node._flush()
                while node._writer_busy:
                    await asyncio.sleep(0.002)
                self.apply_queue.clear()
                n = await loop.run_in_executor(node._io, rollback, st, seq, node.config.node_id, reason)
                await self._reset_relay(seq)
                self.lost_records += n
                node.metrics.lost_writes.inc(n)
                node.visible_seq = st.last_seq
                node.fail_held_reads(seq, "the value this read saw was rolled back after a failover")
                self._hist_last_epoch = self._history()[-1][0]
                fc = self.follower_core
                fc.received = fc.flushed = fc.applied = fc.leader_last = st.last_seq
                log.warning("rolled back to seq %d: %d record(s) that the new leader does not have were removed "
                            "and written to %s/lost-writes.jsonl (%s)", seq, n, st.dir, reason)
            finally:
                node.loading = False
        return n

    async def _reset_relay(self, seq: int) -> None:
        relay = self.relay
        loop = asyncio.get_running_loop()

        def reset():
            import os

            relay.close()
            for s in list(relay.segments):
                try:
                    os.unlink(s.path)
                except FileNotFoundError:
                    pass
            relay.segments = []
            relay.last_seq = seq
            relay._new_segment(seq + 1)

        await loop.run_in_executor(self.node._io, reset)
        self.apply_queue.clear()
        self.queue_overflow = False
        self.relay_written = self.relay_synced = seq
        self.received_epoch = self._epoch_at(seq)
        fc = self.follower_core
        fc.received = fc.flushed = fc.applied = seq
        self._relay_stale = False

    # ------------------------------------------------------------------ manual switchover
    async def stand(self, timeout_ms: int = 10_000) -> str:
        """FAILOVER FORCE: this follower stands for election (at its next election deadline,
        a pre-vote first, the usual rules) and keeps standing until some leader exists
        (Election.standing); the reply says who leads once one does, within ``timeout_ms``."""
        node = self.node
        e = self.election
        if self.role == "leader":
            return f"node {node.config.node_id} already leads epoch {e.epoch}"
        log.warning("node %d stands for election on an operator's request", node.config.node_id)
        # at its election deadline, not at once: one election timeout after it last heard
        # from a leader, granted a vote or started (its ack or vote may back a live lease)
        e.standing = True
        deadline = time.monotonic() + timeout_ms / 1000
        me = node.config.node_id
        while time.monotonic() < deadline:
            if self.role == "leader":
                return f"node {me} leads epoch {e.epoch}"
            if not e.standing and self.leader_id not in (None, me):
                return f"node {self.leader_id} leads epoch {e.epoch}"
            await asyncio.sleep(0.01)
        lag = ""
        mx = self.cluster.max_lag_on_failover
        if mx and self.follower_core.leader_last - self.last_epoch_seq()[1] > mx:
            lag = (f"; it is {self.follower_core.leader_last - self.last_epoch_seq()[1]} records behind the last "
                   f"leader it knew, more than max_lag_on_failover = {mx}, so it may not stand")
        raise RuntimeError(f"no leader within {timeout_ms} ms (a live leader, or a voter with a fresher log, "
                           f"refuses{lag}; this node {'goes on standing' if e.standing else 'stopped standing'})")

    async def switchover(self, to: int | None, timeout_ms: int = 10_000) -> str:
        node = self.node
        st = node.storage
        if self.role != "leader":
            raise RuntimeError("this node is not the leader")
        if self.switching:
            raise RuntimeError("a switchover is already in progress")
        epoch = self.election.epoch
        lc = self.leader_core
        candidates = [f for f in lc.followers.values() if f.connected]
        if to is not None:
            if to == node.config.node_id:
                return f"node {to} already leads"
            target = lc.followers.get(to)
            if target is None or not target.connected:
                raise RuntimeError(f"node {to} is not a connected follower")
        else:
            if not candidates:
                raise RuntimeError("no connected follower to hand over to")
            target = max(candidates, key=lambda f: f.received)
        self.switching = True
        self.request_acks()   # followers ack every batch while the target catches up
        deadline = time.monotonic() + timeout_ms / 1000
        try:
            log.warning("switchover to node %d: writes paused, waiting for it to catch up to seq %d",
                        target.node_id, st.last_seq)
            while target.received < st.last_seq or target.applied < st.last_seq:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"node {target.node_id} did not catch up within {timeout_ms} ms")
                if self.role != "leader" or self.election.epoch != epoch:
                    raise RuntimeError("this node stopped leading during the switchover")
                await asyncio.sleep(0.005)
            if self.role != "leader" or self.election.epoch != epoch:
                # (a handover from a node that no longer leads would let the target skip the
                # voters' stickiness while the real leader's lease holds)
                raise RuntimeError("this node stopped leading during the switchover")
            self.handed_over = True
            reply = await self._rpc(target.node_id, {"t": "timeout_now", "epoch": epoch,
                                                     "leader_id": node.config.node_id}, 2.0)
            if reply is None:
                raise RuntimeError(f"node {target.node_id} did not answer the handover")
            while self.role == "leader" and self.election.epoch == epoch:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"node {target.node_id} did not take over within {timeout_ms} ms")
                await asyncio.sleep(0.005)
            me = node.config.node_id
            while self.role != "leader" and self.leader_id in (None, me) and time.monotonic() < deadline:
                await asyncio.sleep(0.005)     # stepped down on the target's vote: learn who won
            lid = self.leader_id if self.role != "leader" and self.leader_id != me else None
            if lid == target.node_id:
                return f"node {target.node_id} leads epoch {self.election.epoch}"
            return (f"this node no longer leads (epoch {self.election.epoch}, leader: "
                    f"{'not known yet' if lid is None else f'node {lid}'})")
        finally:
            self.switching = False
            if self.handed_over:
                self.handed_over = False
                if self.role == "leader" and self.election.epoch == epoch:
                    # the handover may still happen (a late timeout_now) and elect the target
                    # while this node's lease stands on the voters' acks: it stops leading and
                    # stands at once in the next epoch (at once, also with automatic failover
                    # off, where nothing else would ever start an election). If it wins, a
                    # late timeout_now of the old epoch is fenced; if the target won, it follows.
                    log.warning("switchover failed after the handover was sent: node %d stands again in a new "
                                "epoch", node.config.node_id)
                    e = self.election
                    now = node.clock.now_ms()
                    self._handle(e.step_down(e.epoch, None, now))
                    e.standing = True
                    self._handle(e.start_election(now, *self.last_epoch_seq()))
                elif self.role != "leader" and self.leader_id in (None, node.config.node_id):
                    # it stepped down (the target's transfer vote, or a probe) but knows of no
                    # leader: the target may have lost its one election, and with manual
                    # failover nobody else would stand (an announce from a winner clears it)
                    self.election.standing = True
