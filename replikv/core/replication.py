"""Single-leader replication as pure state machines (leader side and follower side).

Owns the decisions of replication: what each follower has (received / flushed / applied),
which log position a write must reach before it is acknowledged under each acknowledgement
policy (async, semi-sync k, sync at a level for ANY k or FIRST k named followers), when
semi-sync falls back to async and when it returns, how a new or returning follower starts
(stream from a position, or a snapshot first), lag per follower and stage, and on the
follower side which positions to acknowledge and when a record may be applied (apply
delay).

Does not know: sockets, files, asyncio, the clock. Time arrives as ``now_ms`` arguments;
everything returns values or small event objects for the shell (server/replication.py) to
act on. The same objects run under the deterministic simulator.

Tricky cases:
- A write is visible to other clients only once it meets the cluster policy
  (``watermark``); that is MySQL's AFTER_SYNC, so no client reads a write that a failover
  could still lose. A timed-out wait never makes a write visible by itself.
- Semi-sync fallback: when the oldest write waiting for followers has waited
  ``ack_timeout_ms``, the leader degrades to async (visibly: an event, a metric, the
  status) unless the policy is strict, in which case waiting writes fail with "outcome
  unknown". It returns to semi-sync when k followers have caught up with the leader.
- FIRST k (PostgreSQL's synchronous_standby_names): the first k *connected* followers in
  the listed priority order are the synchronous ones.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

LEVELS = ("received", "flushed", "applied")
PROMPT_STALL_MS = 3     # see LeaderCore.prompt_followers


class PolicyError(ValueError):
    pass


@dataclass(frozen=True)
class AckPolicy:
    """When is a write acknowledged? ``kind`` async | semi-sync | sync."""

    kind: str = "async"
    level: str = "received"
    k: int = 0
    names: tuple = ()         # node ids for FIRST k / named ANY k
    first: bool = False
    strict: bool = False

    @classmethod
    def parse(cls, text: str) -> AckPolicy:
        """``async`` | ``semi-sync:K[:strict]`` | ``sync:LEVEL:K`` | ``sync:LEVEL:first:K:ID,ID``
        | ``sync:LEVEL:any:K:ID,ID``."""
        s = text.strip().lower()
        parts = s.split(":")
        try:
            if parts == ["async"]:
                return cls()
            if parts[0] == "semi-sync":
                k = int(parts[1]) if len(parts) > 1 else 1
                strict = len(parts) > 2 and parts[2] == "strict"
                if len(parts) > 3 or (len(parts) == 3 and not strict) or k < 1:
                    raise PolicyError
                return cls("semi-sync", "received", k, (), False, strict)
            if parts[0] == "sync":
                level = parts[1] if len(parts) > 1 else "applied"
                if level not in LEVELS:
                    raise PolicyError
                if len(parts) <= 3:
                    k = int(parts[2]) if len(parts) == 3 else 1
                    if k < 1:
                        raise PolicyError
                    return cls("sync", level, k, (), False, True)
                mode, k = parts[2], int(parts[3])
                names = tuple(int(x) for x in parts[4].split(",")) if len(parts) > 4 and parts[4] else ()
                if mode not in ("first", "any") or k < 1 or len(parts) > 5 or (names and k > len(names)):
                    raise PolicyError
                return cls("sync", level, k, names, mode == "first", True)
        except (ValueError, IndexError):
            pass
        raise PolicyError(
            f"invalid ack policy {text!r}: expected async, semi-sync:K[:strict], sync:LEVEL:K or "
            f"sync:LEVEL:first:K:ID,ID (LEVEL is received, flushed or applied)")

    def __str__(self) -> str:
        if self.kind == "async":
            return "async"
        if self.kind == "semi-sync":
            return f"semi-sync:{self.k}" + (":strict" if self.strict else "")
        if self.names:
            return f"sync:{self.level}:{'first' if self.first else 'any'}:{self.k}:" + ",".join(map(str, self.names))
        return f"sync:{self.level}:{self.k}"


@dataclass
class FollowerProgress:
    """What the leader knows of one follower."""

    node_id: int
    received: int = 0
    flushed: int = 0
    applied: int = 0
    connected: bool = False
    state: str = "down"          # down | snapshot | catching-up | streaming
    last_ack_ms: int = 0
    connected_since_ms: int = 0
    address: str = ""
    full_resyncs: int = 0
    last_resync_reason: str = ""
    current: bool = False        # at the last ack it had all the leader had sent it (see on_ack)

    def pos(self, level: str) -> int:
        return getattr(self, level)


@dataclass
class Event:
    """Something the shell must make visible (log line, metric, status)."""

    kind: str        # degraded | recovered | ack-timeout
    detail: str
    upto_seq: int = 0


@dataclass
class LeaderCore:
    policy: AckPolicy = field(default_factory=AckPolicy)
    ack_timeout_ms: int = 1000
    followers: dict = field(default_factory=dict)
    degraded: bool = False
    degraded_since_ms: int = 0
    degradations: int = 0
    last_seq: int = 0
    _pending: deque = field(default_factory=deque)     # (seq, appended_at_ms) awaiting the policy
    _batches: deque = field(default_factory=deque)     # (first_seq, last_seq, ts_ms) for lag in seconds
    _timed_out_upto: int = 0

    # ------------------------------------------------------------------ inputs
    def follower(self, node_id: int) -> FollowerProgress:
        f = self.followers.get(node_id)
        if f is None:
            f = self.followers[node_id] = FollowerProgress(node_id)
        return f

    def on_connect(self, node_id: int, now_ms: int, address: str = "") -> FollowerProgress:
        f = self.follower(node_id)
        f.connected = True
        f.connected_since_ms = now_ms
        f.last_ack_ms = now_ms
        f.address = address
        f.state = "catching-up"
        f.current = False
        return f

    def prompt_followers(self, sent: dict, k: int, current: frozenset, now_ms: int,
                         stall_ms: int = PROMPT_STALL_MS) -> frozenset:
        """Which ``k`` of the followers in ``sent`` (node id -> the last position sent to it)
        get each batch at once while writes wait for k acks. The others are fed like async
        followers, a gathered batch per push delay, which they ack too: a write waits for k
        acks, and pushing every small batch to every follower made each of them wake, read,
        write and ack per batch for acks nobody needed (with 2 followers and k = 1 that
        follower work and its acks were a third of the cluster's CPU).

        The current choice stays while its members keep up. A member is stalled when it has
        records it has not acknowledged and its last ack is more than ``stall_ms`` old; it is
        then replaced by the most advanced other follower. Meanwhile the writes waiting on it
        are acknowledged by the others' gathered batches, so a paused or slow follower costs
        writes at most about ``stall_ms`` plus a push delay, once."""
        if k >= len(sent):
            return frozenset(sent)
        fl = self.followers

        def ok(fid: int) -> bool:
            f = fl.get(fid)
            return f is not None and f.connected and (f.received >= sent[fid] or now_ms - f.last_ack_ms <= stall_ms)

        keep = [fid for fid in current if fid in sent and ok(fid)]
        if len(keep) == k == len(current):
            return current

        def rank(fid: int) -> tuple:
            f = fl.get(fid)
            return (not ok(fid), -(f.received if f is not None else 0), fid)

        keep = sorted(keep, key=rank)[:k]
        others = sorted((fid for fid in sent if fid not in keep), key=rank)
        return frozenset(keep + others[:k - len(keep)])

    def on_disconnect(self, node_id: int) -> None:
        f = self.followers.get(node_id)
        if f is not None:
            f.connected = False
            f.state = "down"

    def on_ack(self, node_id: int, received: int, flushed: int, applied: int, now_ms: int,
               leader_last: int = 0) -> list[Event]:
        """``leader_last``: the leader's last position as stated in the newest message the
        follower had received (0 = unknown). A follower that has everything the leader had
        then is current (streaming), though under sustained writes the leader is already
        further on when the ack arrives."""
        f = self.follower(node_id)
        # positions only move forward within one connection; a reconnect may restart lower
        f.received, f.flushed, f.applied = received, flushed, applied
        f.last_ack_ms = now_ms
        f.current = received >= self.last_seq or (leader_last > 0 and received >= leader_last)
        if f.state in ("catching-up", "streaming"):
            f.state = "streaming" if f.current else "catching-up"
        return self._maybe_recover(now_ms)

    def on_append(self, first_seq: int, last_seq: int, now_ms: int, ts_ms: int | None = None) -> None:
        """Records first..last were appended (and handed to the writer) at ``now_ms``."""
        self.last_seq = last_seq
        if self.policy.kind != "async":
            self._pending.append((last_seq, now_ms))
        self._batches.append((first_seq, last_seq, ts_ms if ts_ms is not None else now_ms))
        if len(self._batches) > 200_000:
            self._batches.popleft()

    def tick(self, now_ms: int, local_durable: int) -> list[Event]:
        """Detect writes that waited too long for followers."""
        events: list[Event] = []
        wm = self.policy_watermark(self.policy, local_durable, apply_degraded=False)
        pend = self._pending
        while pend and pend[0][0] <= wm:
            pend.popleft()
        if not pend or not self.ack_timeout_ms:
            return events
        oldest_seq, since = pend[0]
        if now_ms - since < self.ack_timeout_ms:
            return events
        if self.policy.kind == "semi-sync" and not self.policy.strict:
            if not self.degraded:
                self.degraded = True
                self.degraded_since_ms = now_ms
                self.degradations += 1
                events.append(Event("degraded", (
                    f"semi-sync: no acknowledgement from {self.policy.k} follower(s) within "
                    f"{self.ack_timeout_ms} ms; falling back to async replication until a follower catches up")))
            pend.clear()
        else:
            # strict: the waiting writes fail with "outcome unknown"; later ones keep their own clock
            upto = oldest_seq
            while pend and now_ms - pend[0][1] >= self.ack_timeout_ms:
                upto = pend.popleft()[0]
            self._timed_out_upto = max(self._timed_out_upto, upto)
            events.append(Event("ack-timeout", (
                f"{self.policy}: not acknowledged within {self.ack_timeout_ms} ms"), upto))
        return events

    def _maybe_recover(self, now_ms: int) -> list[Event]:
        if not self.degraded:
            return []
        p = self.policy
        # caught up: has the leader's last record, or had all it was sent as of a recent ack
        # (a paused follower's old "current" does not count)
        caught_up = sum(1 for f in self.followers.values()
                        if f.connected and (f.received >= self.last_seq
                                            or (f.current and now_ms - f.last_ack_ms < self.ack_timeout_ms)))
        if caught_up >= p.k:
            self.degraded = False
            self._pending.clear()
            return [Event("recovered", f"semi-sync: {caught_up} follower(s) caught up; back to semi-sync")]
        return []

    # ------------------------------------------------------------------ outputs
    def policy_watermark(self, policy: AckPolicy, local_durable: int, apply_degraded: bool = True) -> int:
        """The highest position that meets ``policy`` (never above ``local_durable``)."""
        if policy.kind == "async":
            return local_durable
        if apply_degraded and self.degraded and policy.kind == "semi-sync" and not policy.strict:
            return local_durable
        level = policy.level
        if policy.first and policy.names:
            chosen = [self.followers[n] for n in policy.names
                      if n in self.followers and self.followers[n].connected][:policy.k]
            if len(chosen) < policy.k:
                return min(local_durable, self._k_best(level, policy.k, policy.names))
            return min(local_durable, min(f.pos(level) for f in chosen))
        return min(local_durable, self._k_best(level, policy.k, policy.names))

    def _k_best(self, level: str, k: int, names: tuple) -> int:
        if k == 1 and not names:
            # (the common case, e.g. semi-sync:1, checked on every ack: a max, not a sort)
            best = 0
            for f in self.followers.values():
                p = getattr(f, level)
                if p > best:
                    best = p
            return best
        ps = sorted((f.pos(level) for f in self.followers.values() if not names or f.node_id in names),
                    reverse=True)
        return ps[k - 1] if len(ps) >= k else 0

    def replicas_at(self, seq: int, level: str = "received") -> int:
        """How many followers have ``seq`` at ``level`` (WAIT's answer)."""
        return sum(1 for f in self.followers.values() if f.pos(level) >= seq)

    def lag(self, f: FollowerProgress, now_ms: int) -> dict:
        """Lag of one follower per stage, in entries and seconds (from record timestamps)."""
        out = {}
        for level in LEVELS:
            pos = f.pos(level)
            entries = max(self.last_seq - pos, 0)
            seconds = 0.0
            if entries:
                ts = self._ts_after(pos)
                seconds = max(now_ms - ts, 0) / 1000 if ts is not None else 0.0
            out[level] = {"entries": entries, "seconds": round(seconds, 3)}
        return out

    def _ts_after(self, pos: int) -> int | None:
        """Timestamp of the oldest record after ``pos`` that we still remember."""
        b = self._batches
        if not b:
            return None
        lo, hi = 0, len(b) - 1
        if b[hi][1] <= pos:
            return None
        while lo < hi:  # first batch whose last_seq > pos
            mid = (lo + hi) // 2
            if b[mid][1] > pos:
                hi = mid
            else:
                lo = mid + 1
        return b[lo][2]

    def start_decision(self, follower_history: str, follower_next_seq: int, leader_history: str,
                       log_first_seq: int, leader_last_seq: int) -> tuple[str, str]:
        """How does a follower start? ('stream', '') or ('snapshot', reason)."""
        if follower_history != leader_history:
            if follower_next_seq == 1 and log_first_seq <= 1:
                return "stream", ""
            return "snapshot", ("new follower (empty data)" if follower_next_seq == 1
                                else "follower's history differs from the leader's")
        if follower_next_seq > leader_last_seq + 1:
            return "snapshot", (f"follower is ahead of the leader ({follower_next_seq - 1} > "
                                f"{leader_last_seq}): its extra records are not in the leader's history")
        if follower_next_seq < log_first_seq:
            return "snapshot", (f"the leader no longer keeps the log from seq {follower_next_seq} "
                                f"(oldest kept: {log_first_seq}); retention exceeded")
        return "stream", ""


@dataclass
class FollowerCore:
    """What a follower knows: its positions per stage, the leader's progress and clock."""

    received: int = 0
    flushed: int = 0
    applied: int = 0
    leader_last: int = 0
    leader_time_ms: int = 0         # leader clock at the last message
    local_at_leader_time_ms: int = 0  # our clock when that message arrived
    state: str = "connecting"       # connecting | snapshot | catching-up | streaming | stopped
    link_up: bool = False
    last_message_ms: int = 0
    next_unapplied_ts: int | None = None
    last_applied_ts: int = 0
    apply_delay_ms: int = 0

    def on_leader_clock(self, leader_last: int, leader_time_ms: int, now_ms: int) -> None:
        self.leader_last = max(self.leader_last, leader_last)
        self.leader_time_ms = leader_time_ms
        self.local_at_leader_time_ms = now_ms
        self.last_message_ms = now_ms
        self._update_state()

    def on_received(self, last_seq: int) -> None:
        self.received = last_seq
        if last_seq > self.leader_last:
            self.leader_last = last_seq
        self._update_state()

    def on_flushed(self, seq: int) -> None:
        self.flushed = max(self.flushed, seq)

    def on_applied(self, seq: int, ts_ms: int) -> None:
        self.applied = seq
        self.last_applied_ts = ts_ms
        self._update_state()

    def _update_state(self) -> None:
        if self.state in ("catching-up", "streaming"):
            caught = self.received >= self.leader_last and self.applied >= self.received
            self.state = "streaming" if caught else "catching-up"

    def leader_now_ms(self, now_ms: int) -> int:
        """Our estimate of the leader's clock now (its last stamp + time elapsed here)."""
        if not self.leader_time_ms:
            return now_ms
        return self.leader_time_ms + (now_ms - self.local_at_leader_time_ms)

    def apply_wait_ms(self, record_ts_ms: int, now_ms: int) -> int:
        """How long the applier must still wait before applying a record (apply delay),
        measured on the leader's clock as MySQL's SOURCE_DELAY is."""
        if not self.apply_delay_ms:
            return 0
        return max(record_ts_ms + self.apply_delay_ms - self.leader_now_ms(now_ms), 0)

    def apply_lag(self, now_ms: int) -> dict:
        """Lag of this follower as it sees it: entries and seconds for each stage."""
        leader_now = self.leader_now_ms(now_ms)
        silent = (now_ms - self.last_message_ms) / 1000 if self.last_message_ms else 0.0
        out = {}
        for level in LEVELS:
            pos = getattr(self, level)
            entries = max(self.leader_last - pos, 0)
            if not entries:
                seconds = 0.0
            elif level == "applied" and self.next_unapplied_ts is not None:
                seconds = max(leader_now - self.next_unapplied_ts, 0) / 1000
            else:
                seconds = max(leader_now - (self.last_applied_ts or leader_now), 0) / 1000
            if not self.link_up:
                seconds = max(seconds, silent)
            out[level] = {"entries": entries, "seconds": round(seconds, 3)}
        return out
