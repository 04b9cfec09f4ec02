"""Leader election, epochs and leases: who leads, in which epoch, and for how long.

Owns: a node's view of the epoch (term), its vote in that epoch, the leader it follows,
failure detection by timeout, elections by majority, the leader's lease, and the divergence
point between two histories. Pure: no sockets, no clock (``now_ms`` arguments), randomness
from the seeded ``rng`` given at construction. The asyncio shell (server/failover.py) and
the simulator (sim/) drive the same object.

Rules (Raft's election safety, adapted to replikv's log):
- Epochs only grow. A node persists ``(epoch, voted_for)`` before it answers a vote or
  starts an election (``Persist`` output): at most one vote per node per epoch, hence at
  most one leader per epoch.
- A vote is granted only to a candidate whose last record ``(epoch, seq)`` is at least as
  up to date as the voter's, so a new leader has every write a majority had received.
- Stickiness: a node that heard from a live leader within the minimum election timeout does
  not vote for anyone else (unless the leader itself hands over: ``transfer``). Likewise for
  an election timeout after it granted a vote (the winner counts the grant as its first
  lease acknowledgement) and after it (re)started (``restarted``: a lease may rest on an
  acknowledgement it sent before it went down).
- Lease: a leader may accept writes and serve reads as leader only while a majority
  (itself included) has acknowledged a message it *sent* less than ``lease_ms`` ago. The
  lease is shorter than the minimum election timeout by a margin for clock drift, so by the
  time any follower may vote for a new leader, the old leader's lease has run out.
- A candidate further behind than ``max_lag_on_failover`` entries is not eligible.
- Pre-vote (Raft section 9.6): a node whose leader went silent first asks whether it *could*
  win (``pre`` requests change no state anywhere); only then does it raise the epoch. A node
  that was cut off therefore cannot inflate the epoch and depose a healthy leader when it
  comes back.

Timing assumption (also in docs/architecture.md): clocks may drift by at most
``drift_ratio`` (default 5 %) over one election timeout, and message delays are not relied
upon for safety (only for liveness).
"""

from __future__ import annotations

from dataclasses import dataclass, field

FOLLOWER = "follower"
CANDIDATE = "candidate"
LEADER = "leader"


@dataclass(frozen=True)
class Persist:
    """Save (epoch, voted_for) durably BEFORE sending anything else from this step."""

    epoch: int
    voted_for: int | None


@dataclass(frozen=True)
class RequestVotes:
    """Ask every other node for its vote in ``epoch``."""

    epoch: int
    last_epoch: int
    last_seq: int
    transfer: bool = False
    pre: bool = False


@dataclass(frozen=True)
class BecomeLeader:
    epoch: int


@dataclass(frozen=True)
class BecomeFollower:
    epoch: int
    leader_id: int | None


@dataclass
class Election:
    node_id: int
    peers: tuple                       # every node id of the cluster, self included
    epoch: int = 0
    voted_for: int | None = None
    leader_id: int | None = None
    role: str = FOLLOWER
    election_timeout_ms: int = 1000    # minimum; each round draws in [t, 2t)
    drift_ratio: float = 0.05
    auto_failover: bool = True
    max_lag_on_failover: int = 0       # 0 = no bound
    rng: object = None
    ignore_log_freshness: bool = False  # a planted bug for the simulator's self-test; never set in production
    last_leader_contact_ms: int = 0
    _deadline_ms: int = 0
    _votes: set = field(default_factory=set)
    _acks: dict = field(default_factory=dict)   # follower id -> leader send-time it echoed
    _grants: dict = field(default_factory=dict)  # voter id -> send time of the vote request it granted
    _quiet_until_ms: int = 0          # voter side: back no candidate but _quiet_for until then
    _quiet_for: int | None = None
    standing: bool = False            # told to stand (manual failover): until it hears of a leader
    _prevotes: set = field(default_factory=set)
    _prevote_for: tuple = ()                     # (epoch, last_epoch, last_seq) being pre-voted
    elections_started: int = 0

    def __post_init__(self) -> None:
        if self.rng is None:
            import random

            self.rng = random.Random(self.node_id)

    # ------------------------------------------------------------------ derived
    @property
    def majority(self) -> int:
        return len(self.peers) // 2 + 1

    @property
    def lease_ms(self) -> int:
        return int(self.election_timeout_ms * (1 - 2 * self.drift_ratio)) - 50

    def restarted(self, now_ms: int) -> None:
        """The node (re)started: it may have acknowledged a leader's message, or granted a
        vote, just before it went down, and a leader's lease may rest on that (the stickiness
        it promised is not persisted). It backs no candidate for one election timeout."""
        self._quiet_until_ms = now_ms + self.election_timeout_ms
        self._quiet_for = None

    def reset_timer(self, now_ms: int) -> None:
        t = self.election_timeout_ms
        self._deadline_ms = now_ms + t + int(self.rng.random() * t)

    # ------------------------------------------------------------------ leader side
    def on_follower_ack(self, follower_id: int, echoed_send_ms: int) -> None:
        """A follower acknowledged a message the leader sent at ``echoed_send_ms``."""
        if echoed_send_ms > self._acks.get(follower_id, 0):
            self._acks[follower_id] = echoed_send_ms

    def lease_until_ms(self, now_ms: int) -> int:
        """Until when (leader clock) this leader may act as leader, from majority acks."""
        if self.role != LEADER:
            return 0
        if len(self.peers) == 1:
            return now_ms + self.lease_ms
        sends = sorted(self._acks.values(), reverse=True)
        need = self.majority - 1        # the leader counts itself
        if len(sends) < need:
            return 0
        return sends[need - 1] + self.lease_ms

    def has_lease(self, now_ms: int) -> bool:
        return self.lease_until_ms(now_ms) > now_ms

    # ------------------------------------------------------------------ follower side
    def on_leader_message(self, epoch: int, leader_id: int, now_ms: int) -> list:
        """A heartbeat / records / announce from a leader of ``epoch``. Returns outputs;
        a stale epoch's message is to be rejected by the caller (``accepts`` False)."""
        out: list = []
        if epoch < self.epoch:
            return out
        if epoch > self.epoch or self.role != FOLLOWER or self.leader_id != leader_id:
            if epoch > self.epoch:
                self.epoch = epoch
                self.voted_for = None
                out.append(Persist(self.epoch, self.voted_for))
            self.role = FOLLOWER
            self.leader_id = leader_id
            self._votes.clear()
            out.append(BecomeFollower(epoch, leader_id))
        self.last_leader_contact_ms = now_ms
        self.reset_timer(now_ms)
        self.standing = False
        # a pre-vote round still open is abandoned: this node now backs the leader's lease (its
        # ack), so it must not stand (and vote for itself) while that lease can hold
        self._prevotes = set()
        self._prevote_for = ()
        return out

    def accepts(self, epoch: int) -> bool:
        """Fencing: is a message stamped with ``epoch`` acceptable?"""
        return epoch >= self.epoch

    def tick(self, now_ms: int, last_epoch: int, last_seq: int, behind_entries: int = 0) -> list:
        """Advance time: start an election when the leader has been silent too long."""
        if self.role == LEADER:
            return []
        if not self._deadline_ms:
            self.reset_timer(now_ms)
            return []
        if now_ms < self._deadline_ms:
            return []
        if not self.auto_failover and not self.standing:
            # manual failover: nobody stands by itself; a node told to stand (an operator's
            # FAILOVER FORCE, an old leader whose switchover failed or that could not take
            # office) goes on until a leader exists, or a lost vote would leave the cluster
            # without one for good. (A switchover's target stands once: if it then kept
            # standing, cut off from a leader that lives on, it could later win beside it.)
            self.reset_timer(now_ms)
            return []
        if self.max_lag_on_failover and behind_entries > self.max_lag_on_failover:
            self.reset_timer(now_ms)   # not eligible; someone fresher may stand
            return []
        return self.start_prevote(now_ms, last_epoch, last_seq)

    def start_prevote(self, now_ms: int, last_epoch: int, last_seq: int) -> list:
        self.reset_timer(now_ms)
        self.role = FOLLOWER        # a candidate whose election timed out goes back to pre-voting
        self._prevotes = {self.node_id}
        self._prevote_for = (self.epoch + 1, last_epoch, last_seq)
        if len(self._prevotes) >= self.majority:
            return self.start_election(now_ms, last_epoch, last_seq)
        return [RequestVotes(self.epoch + 1, last_epoch, last_seq, False, True)]

    def start_election(self, now_ms: int, last_epoch: int, last_seq: int, transfer: bool = False) -> list:
        self.epoch += 1
        self.role = CANDIDATE
        self.voted_for = self.node_id
        self.leader_id = None
        self._votes = {self.node_id}
        self._grants = {}
        self.elections_started += 1
        self.reset_timer(now_ms)
        out: list = [Persist(self.epoch, self.voted_for)]
        if len(self._votes) >= self.majority:
            out += self._win(now_ms)
        else:
            out.append(RequestVotes(self.epoch, last_epoch, last_seq, transfer))
        return out

    def on_vote_request(self, epoch: int, candidate: int, last_epoch: int, last_seq: int, my_last_epoch: int,
                        my_last_seq: int, now_ms: int, transfer: bool = False,
                        pre: bool = False) -> tuple[bool, list]:
        """Answer a candidate. Returns (granted, outputs); persist before replying.
        A ``pre`` request is answered as a real one would be, but changes nothing."""
        promised = now_ms < self._quiet_until_ms and candidate != self._quiet_for and not transfer
        if pre:
            recently = (self.leader_id is not None and self.leader_id != candidate
                        and now_ms - self.last_leader_contact_ms < self.election_timeout_ms)
            if self.role == LEADER:
                recently = self.has_lease(now_ms)
            recently = recently or promised
            up_to_date = (last_epoch, last_seq) >= (my_last_epoch, my_last_seq) or self.ignore_log_freshness
            return (epoch > self.epoch and not recently and up_to_date), []
        out: list = []
        if epoch < self.epoch:
            return False, out
        recently = (self.leader_id is not None and self.leader_id != candidate and self.role == FOLLOWER
                    and now_ms - self.last_leader_contact_ms < self.election_timeout_ms)
        if self.role == LEADER and epoch > self.epoch and not transfer:
            # a leader with a valid lease refuses to be deposed by a partitioned node's election
            if self.has_lease(now_ms):
                return False, out
        if (recently or promised) and not transfer:
            return False, out
        if epoch > self.epoch:
            self.epoch = epoch
            self.voted_for = None
            if self.role != FOLLOWER:
                self.role = FOLLOWER
                out.append(BecomeFollower(epoch, None))
            self.leader_id = None
            out.append(Persist(self.epoch, None))
        up_to_date = (last_epoch, last_seq) >= (my_last_epoch, my_last_seq) or self.ignore_log_freshness
        if self.voted_for in (None, candidate) and up_to_date:
            self.voted_for = candidate
            # the candidate counts this grant as a lease acknowledgement if it wins (on_vote):
            # back no other candidate for an election timeout, as after a leader's message
            self._quiet_until_ms = now_ms + self.election_timeout_ms
            self._quiet_for = candidate
            self._prevotes = set()      # nor stand itself meanwhile (an open pre-vote round ends)
            self._prevote_for = ()
            self.reset_timer(now_ms)
            out.append(Persist(self.epoch, candidate))
            return True, out
        return False, out

    def on_vote(self, epoch: int, voter: int, granted: bool, now_ms: int, pre: bool = False,
                sent_ms: int | None = None) -> list:
        """A vote (or pre-vote) came back. ``sent_ms``: when the request was sent (candidate's
        clock); a granted vote counts as the voter's first lease acknowledgement if this
        candidate wins (the voter promised to back no one else for an election timeout
        after granting it: see on_vote_request)."""
        if pre:
            if (self.role == FOLLOWER and self._prevote_for and epoch == self._prevote_for[0]
                    and epoch == self.epoch + 1 and granted):
                self._prevotes.add(voter)
                if len(self._prevotes) >= self.majority:
                    _, le, ls = self._prevote_for
                    self._prevote_for = ()
                    return self.start_election(now_ms, le, ls)
            return []
        if self.role != CANDIDATE or epoch != self.epoch:
            if epoch > self.epoch:
                self.epoch = epoch
                self.voted_for = None
                self.role = FOLLOWER
                self.leader_id = None
                return [Persist(epoch, None), BecomeFollower(epoch, None)]
            return []
        if granted:
            self._votes.add(voter)
            if sent_ms is not None and sent_ms > self._grants.get(voter, 0):
                self._grants[voter] = sent_ms
            if len(self._votes) >= self.majority:
                return self._win(now_ms)
        return []

    def _win(self, now_ms: int) -> list:
        self.role = LEADER
        self.leader_id = self.node_id
        self.standing = False
        self._acks = dict(self._grants)
        self._grants = {}
        return [BecomeLeader(self.epoch)]

    def step_down(self, epoch: int, leader_id: int | None, now_ms: int) -> list:
        out: list = []
        if epoch > self.epoch:
            self.epoch = epoch
            self.voted_for = None
            out.append(Persist(epoch, None))
        self.role = FOLLOWER
        self.leader_id = leader_id
        self.reset_timer(now_ms)
        out.append(BecomeFollower(self.epoch, leader_id))
        return out


def epoch_ranges(history: list, last_seq: int) -> dict:
    """``{epoch: (first_seq, last_seq)}`` from an epoch history ``[(epoch, first_seq), ...]``
    (ascending, as a PostgreSQL timeline history) and the log's last seq."""
    out = {}
    for i, (ep, first) in enumerate(history):
        end = history[i + 1][1] - 1 if i + 1 < len(history) else last_seq
        out[int(ep)] = (int(first), int(end))
    return out


def divergence_point(leader_history: list, leader_last: int, follower_history: list, follower_last: int) -> int:
    """The last seq at which a follower's log and the leader's agree.

    One leader per epoch assigns seqs in order, so two records with the same seq and the
    same epoch are the same record, and everything before them agrees too (Raft's log
    matching). The agreement point is therefore the highest seq covered by the *same* epoch
    in both histories.
    """
    lr = epoch_ranges(leader_history, leader_last)
    best = 0
    for ep, (f_first, f_end) in epoch_ranges(follower_history, follower_last).items():
        if ep not in lr:
            continue
        l_first, l_end = lr[ep]
        lo, hi = max(f_first, l_first), min(f_end, l_end)
        if hi >= lo:
            best = max(best, hi)
    return best


def plan_follower_start(leader_history: list, leader_last: int, f_history: list, f_applied: int,
                        f_received: int, f_received_epoch: int, f_snapshot_seq: int = 0) -> dict:
    """Where a (re)joining follower starts, given both histories (same history id assumed).

    Returns ``{"mode": "stream"|"snapshot", "start_seq", "rollback_to", "discard_relay", "reason"}``:
    - its applied log diverged after ``d``: roll back to ``d`` (or a snapshot if ``d`` is before
      the follower's own snapshot, which it could not rebuild from);
    - its relay log (received, not applied) holds records of another history: discard it;
    - otherwise stream from ``received + 1``.
    """
    plan = {"mode": "stream", "start_seq": f_received + 1, "rollback_to": None, "discard_relay": False,
            "reason": ""}
    d = divergence_point(leader_history, leader_last, f_history or [[0, 1]], f_applied)
    if d < f_applied:
        if d < f_snapshot_seq:
            plan.update(mode="snapshot", reason=(
                f"diverged from the leader's history at seq {d}, before its snapshot at {f_snapshot_seq}"))
            return plan
        plan.update(rollback_to=d, start_seq=d + 1, discard_relay=True,
                    reason=f"history diverged after seq {d}: {f_applied - d} record(s) to roll back")
        return plan
    if f_received > f_applied:
        rng = epoch_ranges(leader_history, leader_last).get(f_received_epoch)
        if rng is None or not (rng[0] <= f_received <= rng[1]):
            plan.update(start_seq=f_applied + 1, discard_relay=True,
                        reason="its relay log holds records of another history")
    return plan
