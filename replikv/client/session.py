"""Session guarantees against replication lag, as a pure state machine (no sockets).

Owns: what a session remembers (its writes' positions, the highest positions it has read,
the causal dependencies it has learned, per partition), and the decision for each read:
leader or follower, and the position the follower must have applied first.

The three guarantees of the seeds (DDIA ch. 5, "problems with replication lag"), each
switchable so the anomaly can be shown:

- read-your-writes, by one of the seeds' three methods:
  ``token`` (default): a follower serves the read only once it has applied the session's
  last write position (``WAITPOS``), else the leader does;
  ``leader-window``: read from the leader for ``leader_window_s`` after the last write;
  ``leader-own-data``: keys that are the user's own (``own_data(key)``) always from the leader.
- monotonic reads: a sticky follower chosen by a hash of the user id (rerouted when it
  fails), and never a follower behind the highest position this session has seen.
- consistent prefix: dependencies learned from what the session reads (``DEPS``: the
  positions the writer of a key depended on, in other partitions) and writes are tracked
  per partition, and a read waits until the partition it touches has caught up with them.

The session token (``export`` / ``resume``) carries all of it to another device.
"""

from __future__ import annotations

import base64
import json
import time
import zlib
from dataclasses import dataclass, field

RYW_METHODS = ("token", "leader-window", "leader-own-data")


@dataclass
class ReadPlan:
    target: str               # "leader" | "follower"
    need_seq: int             # the follower must have applied at least this
    sticky: int | None        # index hint for the sticky follower (hash of the user id)


@dataclass
class Session:
    user_id: str | None = None
    read_your_writes: str | None = "token"
    monotonic_reads: bool = True
    consistent_prefix: bool = True
    leader_window_s: float = 5.0
    own_data: object = None                      # callable(key: bytes) -> bool, for leader-own-data
    written: dict = field(default_factory=dict)  # partition -> seq of the session's last write there
    seen: dict = field(default_factory=dict)     # partition -> highest position read there
    deps: dict = field(default_factory=dict)     # partition -> position the session depends on
    last_write_at: float = 0.0

    def __post_init__(self) -> None:
        if self.read_your_writes not in (None, *RYW_METHODS):
            raise ValueError(f"read_your_writes must be one of {RYW_METHODS} or None")

    # ------------------------------------------------------------------ decisions
    def plan_read(self, partition: int, key: bytes, now: float | None = None) -> ReadPlan:
        now = time.monotonic() if now is None else now
        ryw = self.read_your_writes
        if ryw == "leader-window" and self.last_write_at and now - self.last_write_at < self.leader_window_s:
            return ReadPlan("leader", 0, None)
        if ryw == "leader-own-data" and self._is_own(key):
            return ReadPlan("leader", 0, None)
        need = 0
        if ryw == "token":
            need = max(need, self.written.get(partition, 0))
        if self.monotonic_reads:
            need = max(need, self.seen.get(partition, 0))
        if self.consistent_prefix:
            need = max(need, self.deps.get(partition, 0))
        sticky = None
        if self.monotonic_reads and self.user_id is not None:
            sticky = zlib.crc32(str(self.user_id).encode())
        return ReadPlan("follower", need, sticky)

    def _is_own(self, key: bytes) -> bool:
        if self.own_data is not None:
            return bool(self.own_data(key))
        if self.user_id is None:
            return False
        uid = str(self.user_id).encode()
        return key.startswith(b"user:" + uid + b":") or (b"{" + uid + b"}") in key

    def write_deps(self, partition: int) -> list[tuple[int, int]]:
        """What the session's next write in ``partition`` depends on elsewhere (CAUSAL)."""
        if not self.consistent_prefix:
            return []
        out = {}
        for d in (self.written, self.seen, self.deps):
            for p, seq in d.items():
                if p != partition and seq > out.get(p, 0):
                    out[p] = seq
        return sorted(out.items())

    # ------------------------------------------------------------------ observations
    def after_write(self, partition: int, seq: int, now: float | None = None) -> None:
        if seq > self.written.get(partition, 0):
            self.written[partition] = seq
        self.last_write_at = time.monotonic() if now is None else now

    def after_read(self, partition: int, pos_seq: int, deps: list[tuple[int, int]] = ()) -> None:
        if pos_seq > self.seen.get(partition, 0):
            self.seen[partition] = pos_seq
        for p, seq in deps:
            if seq > self.deps.get(p, 0):
                self.deps[p] = seq

    # ------------------------------------------------------------------ the token
    def export(self) -> str:
        """The session as a string another client (another device) can ``resume``."""
        d = {"u": self.user_id, "w": self.written, "s": self.seen, "d": self.deps}
        return base64.urlsafe_b64encode(json.dumps(d, separators=(",", ":")).encode()).decode()

    @classmethod
    def resume(cls, token: str, **options) -> Session:
        d = json.loads(base64.urlsafe_b64decode(token.encode()))
        s = cls(user_id=d.get("u"), **options)
        s.written = {int(k): v for k, v in d.get("w", {}).items()}
        s.seen = {int(k): v for k, v in d.get("s", {}).items()}
        s.deps = {int(k): v for k, v in d.get("d", {}).items()}
        return s
