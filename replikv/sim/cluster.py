"""A simulated cluster: nodes, network, clock, faults and invariant checks, from one seed.

What is simulated, and what is real:
- real: ``Election`` (epochs, votes, stickiness, leases, elections by majority, the
  transfer elections of a switchover),
  ``LeaderCore`` with ``AckPolicy`` (when a write counts as acknowledged),
  ``plan_follower_start`` / ``divergence_point`` (where a rejoining node rolls back to);
- simulated: the log (a list of (epoch, value) per node, durable on append, as under
  ``fsync always``), the transport (messages with random delay, loss, duplication,
  reordering; partitions), the clock (integer milliseconds), crashes (a crashed node keeps
  its log, term and vote, loses everything else), clients (writes to whichever node
  claims to lead), and switchovers as the shell runs them (the leader stops serving once
  its handover leaves, and stands again in a new epoch if the target has not taken over
  within two election timeouts).

Invariants checked on every step:
- election safety: at most one leader per epoch;
- lease safety: at no instant do two nodes hold a leader lease;
- leader completeness / durability: every write acknowledged under the policy is in the
  log of every later leader, and in every log at the end;
- convergence: once faults heal, all logs become identical.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

from ..core.election import (
    LEADER,
    BecomeFollower,
    BecomeLeader,
    Election,
    Persist,
    RequestVotes,
    plan_follower_start,
)
from ..core.replication import AckPolicy, LeaderCore

TICK_MS = 10
HEARTBEAT_MS = 50
ELECTION_TIMEOUT_MS = 300


class Violation(Exception):
    pass


@dataclass
class SimNode:
    node_id: int
    election: Election
    log: list = field(default_factory=list)            # [(epoch, value)], seq = index + 1
    history: list = field(default_factory=lambda: [[0, 1]])
    up: bool = True
    leader_core: LeaderCore | None = None
    next_seq: dict = field(default_factory=dict)       # leader: follower -> next seq to send
    streaming_to: int | None = None                    # follower: the leader it streams from
    last_hello_ms: int = -10_000
    last_hb_ms: int = 0
    last_stamp: int = 0                                # follower: newest leader send-time seen
    last_probe_ms: int = 0
    streaming_epoch: int = -1
    pending: list = field(default_factory=list)        # leader: (seq, write id) awaiting ack
    switching_since: int | None = None                 # leader: a switchover pauses its writes
    handed_over_at: int | None = None                  # leader: when its switchover's handover left

    @property
    def last(self) -> int:
        return len(self.log)

    def last_epoch(self) -> int:
        return self.log[-1][0] if self.log else 0

    def epoch_at(self, seq: int) -> int:
        return self.log[seq - 1][0] if 0 < seq <= len(self.log) else 0


class SimCluster:
    def __init__(self, seed: int, n: int = 3, policy: str = "semi-sync:1:strict", planted_bug: str = "",
                 duration_ms: int = 6000, trace: bool = False) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.now = 0
        self.policy = AckPolicy.parse(policy)
        self.trace_on = trace
        self.lines: list[str] = []
        self.duration_ms = duration_ms
        ids = tuple(range(1, n + 1))
        self.nodes: dict[int, SimNode] = {}
        for i in ids:
            e = Election(i, ids, election_timeout_ms=ELECTION_TIMEOUT_MS, rng=random.Random(seed * 1000 + i),
                         ignore_log_freshness=(planted_bug == "ignore-log-freshness"))
            self.nodes[i] = SimNode(i, e)
        first = self.nodes[1]
        first.election.role = LEADER
        first.election.leader_id = 1
        for nd in self.nodes.values():
            nd.election.leader_id = 1
        self._start_leading(first)
        first.election.on_follower_ack(1, 0)
        self.queue: list = []           # (deliver_at, order, dst, msg)
        self._order = 0
        self.cut: set = set()           # (a, b) pairs that cannot talk
        self.bounces: list = []         # (restart at, node id): crashed for a moment (random_fault)
        self.drop_rate = 0.0
        self.dup_rate = 0.0
        self.max_delay = 5
        self.leaders_by_epoch: dict[int, int] = {0: 1}
        self.acked: dict[int, tuple] = {}    # write id -> (seq, epoch, value)
        self.next_write = 1
        self.stats = {"writes": 0, "acked": 0, "elections": 0, "crashes": 0, "partitions": 0, "rollbacks": 0,
                      "messages": 0, "dropped": 0, "lost_acked": 0, "switchovers": 0,
                      "switchovers_failed": 0}
        # a write acknowledged by the leader plus k followers survives any failover only if that
        # is a majority; weaker policies are simulated too, and their losses counted, not flagged
        majority = n // 2 + 1
        self.promises_durability = self.policy.kind != "async" and self.policy.k + 1 >= majority

    # ------------------------------------------------------------------ tracing
    def trace(self, msg: str) -> None:
        if self.trace_on:
            self.lines.append(f"{self.now:6d} ms  {msg}")

    # ------------------------------------------------------------------ network
    def send(self, src: int, dst: int, msg: dict) -> None:
        self.stats["messages"] += 1
        if (src, dst) in self.cut or not self.nodes[src].up:
            self.stats["dropped"] += 1
            return
        if self.rng.random() < self.drop_rate:
            self.stats["dropped"] += 1
            return
        copies = 2 if self.rng.random() < self.dup_rate else 1
        for _ in range(copies):
            delay = 1 + int(self.rng.random() * self.max_delay)
            self._order += 1
            heapq.heappush(self.queue, (self.now + delay, self._order, dst, dict(msg, src=src)))

    def deliver_due(self) -> None:
        while self.queue and self.queue[0][0] <= self.now:
            _, _, dst, msg = heapq.heappop(self.queue)
            node = self.nodes[dst]
            if not node.up or (msg["src"], dst) in self.cut:
                continue
            self.on_message(node, msg)

    # ------------------------------------------------------------------ core outputs
    def handle(self, node: SimNode, outs: list) -> None:
        for o in outs:
            if isinstance(o, Persist):
                pass    # term and vote survive crashes in this simulation (they are fsynced first)
            elif isinstance(o, RequestVotes):
                if not o.pre:
                    self.stats["elections"] += 1
                    node.streaming_to = None   # a candidate no longer follows anyone
                self.trace(f"node {node.node_id} {'asks for pre-votes' if o.pre else 'stands'} in epoch {o.epoch} "
                           f"with last {o.last_epoch}:{o.last_seq}")
                for other in self.nodes:
                    if other != node.node_id:
                        self.send(node.node_id, other, {"t": "vote_req", "epoch": o.epoch, "last_epoch": o.last_epoch,
                                                        "last_seq": o.last_seq, "transfer": o.transfer, "pre": o.pre,
                                                        "sent": self.now})
            elif isinstance(o, BecomeLeader):
                self.become_leader(node, o.epoch)
            elif isinstance(o, BecomeFollower):
                if node.leader_core is not None:
                    self.trace(f"node {node.node_id} steps down (epoch {o.epoch})")
                node.handed_over_at = node.switching_since = None
                node.leader_core = None
                node.pending.clear()
                node.streaming_to = None

    def _start_leading(self, node: SimNode) -> None:
        node.leader_core = LeaderCore(self.policy, 0)
        node.leader_core.last_seq = node.last
        node.next_seq = {}

    def become_leader(self, node: SimNode, epoch: int) -> None:
        prev = self.leaders_by_epoch.get(epoch)
        if prev is not None and prev != node.node_id:
            raise Violation(f"two leaders in epoch {epoch}: node {prev} and node {node.node_id}")
        self.leaders_by_epoch[epoch] = node.node_id
        # leader completeness: every acknowledged write must be in the new leader's log
        for wid, (seq, ep, val) in list(self.acked.items()):
            if seq > node.last or node.log[seq - 1] != (ep, val):
                if not self.promises_durability:
                    self.stats["lost_acked"] += 1
                    del self.acked[wid]
                    continue
                raise Violation(f"node {node.node_id} became leader of epoch {epoch} without acknowledged write "
                                f"#{wid} (seq {seq}, epoch {ep}); its log ends at {node.last}")
        if node.history[-1][0] != epoch:
            node.history.append([epoch, node.last + 1])
        self._start_leading(node)
        node.streaming_to = None
        node.handed_over_at = node.switching_since = None
        self.trace(f"node {node.node_id} leads epoch {epoch} from seq {node.last + 1}")
        for other in self.nodes:
            if other != node.node_id:
                self.send(node.node_id, other, {"t": "announce", "epoch": epoch})

    # ------------------------------------------------------------------ messages
    def on_message(self, node: SimNode, m: dict) -> None:
        e = node.election
        t = m["t"]
        src = m["src"]
        if t == "vote_req":
            granted, outs = e.on_vote_request(m["epoch"], src, m["last_epoch"], m["last_seq"], node.last_epoch(),
                                              node.last, self.now, m["transfer"], m["pre"])
            self.handle(node, outs)
            self.send(node.node_id, src, {"t": "vote", "epoch": m["epoch"] if m["pre"] else e.epoch,
                                          "granted": granted, "pre": m["pre"], "leader": e.leader_id, "term": e.epoch,
                                          "sent": m["sent"]})
        elif t == "vote":
            if not m["granted"]:
                if m["term"] > e.epoch and e.role != LEADER:
                    # the voter is in a newer epoch than ours: adopt it, follow its leader
                    self.handle(node, e.step_down(m["term"], m["leader"], self.now))
                    return
                self.learn_leader(node, m["leader"], m["epoch"])
            self.handle(node, e.on_vote(m["epoch"], src, m["granted"], self.now, m["pre"], m["sent"]))
        elif t == "refuse":
            self.learn_leader(node, m["leader"], m["epoch"])
        elif t == "whois":
            self.send(node.node_id, src, {"t": "info", "epoch": e.epoch, "leader": e.leader_id})
        elif t == "timeout_now":
            # a switchover's handover: only from the leader this node follows, in its epoch
            if e.role != LEADER and m["epoch"] == e.epoch and src == e.leader_id:
                self.trace(f"node {node.node_id} stands at once (handover from node {src})")
                self.handle(node, e.start_election(self.now, node.last_epoch(), node.last, transfer=True))
        elif t == "info":
            if e.role == LEADER and m["epoch"] > e.epoch:
                self.trace(f"node {node.node_id} (leader of epoch {e.epoch}) learns of epoch {m['epoch']}")
                self.handle(node, e.step_down(m["epoch"], m["leader"], self.now))
        elif t == "announce":
            if e.accepts(m["epoch"]):
                self.handle(node, e.on_leader_message(m["epoch"], src, self.now))
        elif t == "hello":
            if e.role != LEADER or node.leader_core is None:
                self.send(node.node_id, src, {"t": "refuse", "leader": e.leader_id, "epoch": e.epoch})
                return
            if m["epoch"] > e.epoch:
                self.handle(node, e.step_down(m["epoch"], None, self.now))
                return
            plan = plan_follower_start(node.history, node.last, m["history"], m["last"], m["last"], m["last_epoch"])
            start = plan["start_seq"]
            node.next_seq[src] = start
            f = node.leader_core.follower(src)
            f.connected = True
            f.received = f.flushed = f.applied = start - 1
            self.send(node.node_id, src, {"t": "welcome", "epoch": e.epoch, "rollback_to": plan["rollback_to"],
                                          "start": start})
        elif t == "welcome":
            if not e.accepts(m["epoch"]):
                return
            self.handle(node, e.on_leader_message(m["epoch"], src, self.now))
            if m["rollback_to"] is not None:
                d = m["rollback_to"]
                self.trace(f"node {node.node_id} rolls back {node.last - d} record(s) to seq {d}")
                self.stats["rollbacks"] += 1
                del node.log[d:]
                node.history = [h for h in node.history if h[1] <= d] or [[0, 1]]
            if m["start"] != node.last + 1:
                node.streaming_to = None
                return
            node.streaming_to = src
            node.streaming_epoch = m["epoch"]
            self.send(node.node_id, src, {"t": "ack", "epoch": e.epoch, "last": node.last, "echo": m.get("stamp", 0)})
        elif t == "records":
            if not e.accepts(m["epoch"]):
                return
            self.handle(node, e.on_leader_message(m["epoch"], src, self.now))
            node.last_stamp = max(node.last_stamp, m["stamp"])
            if node.streaming_to != src or node.streaming_epoch != m["epoch"]:
                return
            if m["first"] != node.last + 1:
                if m["first"] <= node.last and all(node.epoch_at(m["first"] + i) == r[0] for i, r in enumerate(m["recs"])
                                                    if m["first"] + i <= node.last):
                    pass  # a duplicate or reordered copy of what we have: ack our position
                else:
                    node.streaming_to = None   # a gap: reconnect (hello again)
                    return
            else:
                for ep, val in m["recs"]:
                    if ep != (node.history[-1][0] if node.history else 0):
                        node.history.append([ep, node.last + 1])
                    node.log.append((ep, val))
            self.send(node.node_id, src, {"t": "ack", "epoch": e.epoch, "last": node.last, "echo": node.last_stamp})
        elif t == "ack":
            if e.role != LEADER or node.leader_core is None or m["epoch"] > e.epoch:
                if m["epoch"] > e.epoch:
                    self.handle(node, e.step_down(m["epoch"], None, self.now))
                return
            e.on_follower_ack(src, m["echo"])
            node.leader_core.on_ack(src, m["last"], m["last"], m["last"], self.now)
            if m["last"] + 1 < node.next_seq.get(src, 1):
                node.next_seq[src] = m["last"] + 1    # it fell behind what we sent: resend
            self.check_acks(node)

    def learn_leader(self, node: SimNode, hint, epoch: int) -> None:
        """A hint from a peer about who leads (the shell does the same with refusals)."""
        e = node.election
        if e.role == LEADER or hint in (None, node.node_id):
            return
        if e.leader_id in (None, node.node_id) or epoch > e.epoch:
            e.leader_id = hint

    # ------------------------------------------------------------------ node steps
    def check_acks(self, node: SimNode) -> None:
        wm = node.leader_core.policy_watermark(self.policy, node.last)
        keep = []
        for seq, wid, val in node.pending:
            if seq <= wm:
                self.acked[wid] = (seq, node.log[seq - 1][0], val)
                self.stats["acked"] += 1
            else:
                keep.append((seq, wid, val))
        node.pending = keep

    def step_node(self, node: SimNode) -> None:
        e = node.election
        if e.role == LEADER and node.leader_core is not None:
            lc = node.leader_core
            lc.last_seq = node.last
            hb_due = self.now - node.last_hb_ms >= HEARTBEAT_MS
            for other in self.nodes:
                if other == node.node_id or other not in node.next_seq:
                    continue
                nxt = node.next_seq[other]
                recs = node.log[nxt - 1:nxt - 1 + 20]
                if recs or hb_due:
                    self.send(node.node_id, other, {"t": "records", "epoch": e.epoch, "first": nxt, "recs": recs,
                                                    "stamp": self.now})
                    node.next_seq[other] = nxt + len(recs)
            if not e.has_lease(self.now) and self.now - node.last_probe_ms >= ELECTION_TIMEOUT_MS // 2:
                # a leader without its lease asks whether a newer epoch exists (as the shell's whois)
                node.last_probe_ms = self.now
                for other in self.nodes:
                    if other != node.node_id:
                        self.send(node.node_id, other, {"t": "whois", "epoch": e.epoch})
            if node.switching_since is not None and node.handed_over_at is None:
                self.hand_over(node)
            if node.handed_over_at is not None and self.now - node.handed_over_at > 2 * ELECTION_TIMEOUT_MS:
                # the target did not take over: stand again in a new epoch (as the shell does)
                self.trace(f"node {node.node_id}: switchover failed; stands again")
                self.stats["switchovers_failed"] += 1
                node.handed_over_at = node.switching_since = None
                self.handle(node, e.step_down(e.epoch, None, self.now))
                self.handle(node, e.start_election(self.now, node.last_epoch(), node.last))
                return
            if hb_due:
                node.last_hb_ms = self.now
                if not node.next_seq:
                    for other in self.nodes:
                        if other != node.node_id:
                            self.send(node.node_id, other, {"t": "announce", "epoch": e.epoch})
            self.check_acks(node)
            return
        le, ls = node.last_epoch(), node.last
        self.handle(node, e.tick(self.now, le, ls))
        session_ok = node.streaming_to == e.leader_id and node.streaming_epoch == e.epoch
        if e.role != LEADER and not session_ok and self.now - node.last_hello_ms >= 100:
            node.last_hello_ms = self.now
            target = e.leader_id
            if target is None or target == node.node_id:
                # leader unknown: ask someone; a non-leader answers with its leader hint
                target = self.rng.choice([i for i in self.nodes if i != node.node_id])
            self.send(node.node_id, target, {"t": "hello", "epoch": e.epoch, "history": node.history,
                                             "last": node.last, "last_epoch": node.last_epoch()})

    def client_write(self) -> None:
        holders = [n for n in self.nodes.values() if n.up and n.election.role == LEADER and n.leader_core is not None
                   and n.switching_since is None and n.election.has_lease(self.now)]
        if not holders:
            return
        node = self.rng.choice(holders)
        wid = self.next_write
        self.next_write += 1
        val = f"w{wid}"
        node.log.append((node.election.epoch, val))
        node.pending.append((node.last, wid, val))
        self.stats["writes"] += 1

    def check_leases(self) -> None:
        # (a leader whose handover left serves nothing more: it is not a holder)
        holders = [n.node_id for n in self.nodes.values() if n.up and n.election.role == LEADER
                   and n.handed_over_at is None and n.election.has_lease(self.now)]
        if len(holders) > 1:
            raise Violation(f"nodes {holders} hold a leader lease at the same time")

    # ------------------------------------------------------------------ faults
    def crash(self, node: SimNode) -> None:
        self.stats["crashes"] += 1
        self.trace(f"crash node {node.node_id}")
        node.up = False
        node.leader_core = None
        node.handed_over_at = node.switching_since = None
        node.pending.clear()
        node.streaming_to = None
        node.next_seq = {}

    def restart(self, node: SimNode) -> None:
        self.trace(f"restart node {node.node_id}")
        e = node.election
        node.up = True
        e.role = "follower"
        e.leader_id = None if e.leader_id == node.node_id else e.leader_id
        e._votes = set()
        e._acks = {}
        e.last_leader_contact_ms = 0
        e.restarted(self.now)
        e.reset_timer(self.now)

    def random_fault(self) -> None:
        r = self.rng.random()
        ids = list(self.nodes)
        if r < 0.25:
            up = [n for n in self.nodes.values() if n.up]
            if len(up) > 1:
                self.crash(self.rng.choice(up))
        elif r < 0.45:
            down = [n for n in self.nodes.values() if not n.up]
            if down:
                self.restart(self.rng.choice(down))
        elif r < 0.65:
            victim = self.rng.choice(ids)
            self.stats["partitions"] += 1
            self.trace(f"partition node {victim} from the others")
            self.cut = {(a, b) for a in ids for b in ids if a != b and victim in (a, b)}
        elif r < 0.75:
            a, b = self.rng.sample(ids, 2)
            self.trace(f"cut link {a}<->{b}")
            self.cut |= {(a, b), (b, a)}
        elif r < 0.9:
            self.trace("heal the network")
            self.cut = set()
        elif r < 0.93:
            self.switchover()
        elif r < 0.96:
            # a bounce: crash a node and restart it a moment later, often inside the lease its
            # last ack (or vote) backs, while it has forgotten the stickiness it owed
            up = [n for n in self.nodes.values() if n.up]
            if len(up) > 1:
                victim = self.rng.choice(up)
                self.crash(victim)
                self.bounces.append((self.now + self.rng.randint(1, 150), victim.node_id))
                self.bounces.sort()
        else:
            self.drop_rate = self.rng.choice([0.0, 0.05, 0.2])
            self.dup_rate = self.rng.choice([0.0, 0.05])
            self.max_delay = self.rng.choice([2, 5, 20, 60])
            self.trace(f"network: drop {self.drop_rate}, dup {self.dup_rate}, delay <= {self.max_delay} ms")

    def switchover(self) -> None:
        """The shell's switchover: the leader pauses writes until a follower has all it
        wrote (given up after two election timeouts), then stops serving and tells that
        follower to stand at once (a transfer election, which voters grant despite
        stickiness); see hand_over."""
        leaders = [n for n in self.nodes.values() if n.up and n.election.role == LEADER and n.leader_core is not None
                   and n.switching_since is None]
        if leaders:
            self.trace(f"switchover from node {leaders[0].node_id}: writes paused")
            leaders[0].switching_since = self.now

    def hand_over(self, node: SimNode) -> None:
        caught_up = [f.node_id for f in node.leader_core.followers.values()
                     if f.connected and f.received >= node.last and self.nodes[f.node_id].up]
        if not caught_up:
            if self.now - node.switching_since > 2 * ELECTION_TIMEOUT_MS:
                self.trace(f"node {node.node_id}: no follower caught up; switchover abandoned")
                node.switching_since = None
            return
        target = self.rng.choice(sorted(caught_up))
        self.stats["switchovers"] += 1
        self.trace(f"switchover: node {node.node_id} hands over to node {target}")
        node.handed_over_at = self.now
        self.send(node.node_id, target, {"t": "timeout_now", "epoch": node.election.epoch})

    # ------------------------------------------------------------------ run
    def run(self) -> dict:
        fault_until = self.duration_ms
        next_fault = self.rng.randint(100, 400)
        while self.now < fault_until:
            self.now += TICK_MS
            if self.now >= next_fault:
                self.random_fault()
                next_fault = self.now + self.rng.randint(100, 600)
            if self.bounces and self.bounces[0][0] <= self.now:
                _, nid = self.bounces.pop(0)
                if not self.nodes[nid].up:
                    self.restart(self.nodes[nid])
            self.deliver_due()
            for node in self.nodes.values():
                if node.up:
                    self.step_node(node)
            if self.rng.random() < 0.5:
                self.client_write()
            self.check_leases()
        # heal everything and let the cluster settle
        self.trace("heal everything; settle")
        self.cut = set()
        self.drop_rate = self.dup_rate = 0.0
        self.max_delay = 5
        for node in self.nodes.values():
            if not node.up:
                self.restart(node)
        settle_until = self.now + 8000
        while self.now < settle_until:
            self.now += TICK_MS
            self.deliver_due()
            for node in self.nodes.values():
                self.step_node(node)
            self.check_leases()
            if self.now % 500 == 0 and self.converged():
                break
        if not self.converged():
            raise Violation("replicas did not converge after faults healed: " +
                            ", ".join(f"node {n.node_id} ends at {n.last} ({n.last_epoch()})" for n in self.nodes.values()))
        logs = {tuple(n.log) for n in self.nodes.values()}
        final = next(iter(logs))
        for wid, (seq, ep, val) in self.acked.items():
            if seq > len(final) or final[seq - 1] != (ep, val):
                if not self.promises_durability:
                    self.stats["lost_acked"] += 1
                    continue
                raise Violation(f"acknowledged write #{wid} (seq {seq}, epoch {ep}) is lost")
        return self.stats

    def converged(self) -> bool:
        leaders = [n for n in self.nodes.values() if n.election.role == LEADER]
        if len(leaders) != 1:
            return False
        logs = {tuple(n.log) for n in self.nodes.values()}
        return len(logs) == 1


def run_seed(seed: int, planted_bug: str = "", trace: bool = False, policy: str = "semi-sync:1:strict",
             nodes: int = 3) -> tuple[bool, str, SimCluster]:
    sim = SimCluster(seed, n=nodes, policy=policy, planted_bug=planted_bug, trace=trace)
    try:
        sim.run()
        return True, "ok", sim
    except Violation as v:
        return False, str(v), sim
