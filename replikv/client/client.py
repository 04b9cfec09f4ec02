"""The replikv Python client: writes to the leader, reads spread over followers, sessions.

Built on redis-py (sync) and redis.asyncio (async), with redis-py's own retries turned off:
this client decides retries deliberately. A command refused *before* it ran (READONLY from
a follower, MOVED to another partition, NOLEASE / TRYAGAIN / LOADING during a failover)
is sent again to the right node. A write whose outcome is unknown (the connection dropped
or timed out after sending it, or NOTACKED: the leader lost its leadership before the
write was acknowledged) raises ``OutcomeUnknown`` and is never sent again silently.

Reads follow the session's plan (replikv/client/session.py): from the leader, or from a
follower that is first made to wait (``WAITPOS``) until it has applied what the session
depends on; a follower that cannot catch up in time, or fails, is skipped, and the leader
answers last.
"""

from __future__ import annotations

import itertools
import time

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..server.clusterconfig import key_slot, partition_of_slot
from .session import Session

REFUSED_BEFORE_RUNNING = ("READONLY", "NOLEASE", "TRYAGAIN", "LOADING", "MOVED", "CLUSTERDOWN")


class OutcomeUnknown(Exception):
    """The write may or may not have happened (it may still become durable)."""


class NoLeader(Exception):
    """No leader could be found for a partition within the retry budget."""


def _addr(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


def classify(err: Exception) -> str:
    """'retry' (refused before running), 'unknown' (may have run), or 'error' (a plain error)."""
    if isinstance(err, (redis.ConnectionError, redis.TimeoutError)):
        return "unknown"
    text = str(err)
    if text.startswith("NOTACKED"):
        return "unknown"
    if text.split(" ", 1)[0] in REFUSED_BEFORE_RUNNING or text.startswith("You can't write against"):
        return "retry"
    return "error"


def leader_hint(err: Exception) -> tuple[str, int] | None:
    """The leader address named in a READONLY redirect, if any."""
    text = str(err)
    marker = " at "
    if "The leader is node" in text and marker in text:
        try:
            return _addr(text.rsplit(marker, 1)[1].strip().rstrip("."))
        except ValueError:
            return None
    return None


def _seq(pos: bytes) -> int:
    return int(pos.decode().rsplit(":", 1)[-1])


def write_commands(session: Session, partition: int, args) -> list[tuple]:
    """The pipeline of a write: its causal dependencies, the command, and LASTPOS."""
    cmds = []
    deps = session.write_deps(partition)
    if deps:
        cmds.append(("CAUSAL", *[f"{q}:{s}" for q, s in deps]))
    cmds.append(tuple(args))
    cmds.append(("LASTPOS",))
    return cmds


def write_outcome(session: Session, partition: int, res: list):
    """``(True, value)`` for a done write (its position recorded in the session), or
    ``(False, error)`` when it was refused before running and goes to another node; raises
    OutcomeUnknown when it may have run, or the plain error the command gave."""
    out, pos = res[-2], res[-1]
    if isinstance(out, Exception):
        kind = classify(out)
        if kind == "unknown":
            raise OutcomeUnknown(str(out)) from out
        if kind == "retry":
            return False, out
        raise out
    if isinstance(pos, bytes):
        session.after_write(partition, _seq(pos))
    return True, out


def read_commands(need: int, wait_timeout_ms: int, args, key) -> list[tuple]:
    """The pipeline of a read: WAITPOS (if the session depends on a position), the command,
    DEPS of its key, POS of the replica."""
    cmds = [("WAITPOS", need, wait_timeout_ms)] if need else []
    cmds.append(tuple(args))
    if key is not None:
        cmds.append(("DEPS", key))
    cmds.append(("POS",))
    return cmds


def observe_read(session: Session, partition: int, res: list, key) -> None:
    """Record in the session what a read's DEPS and POS replies taught it."""
    deps = []
    if key is not None and isinstance(res[1], list):
        deps = [tuple(int(x) for x in d.decode().split(":")) for d in res[1]]
    if isinstance(res[-1], bytes):
        session.after_read(partition, _seq(res[-1]), deps)


def follower_order(followers: list, sticky: int | None, rr: int) -> list:
    """The followers to try, starting at the sticky one (or round robin)."""
    start = (sticky if sticky is not None else rr) % len(followers)
    return followers[start:] + followers[:start]


class Topology:
    """Partitions, their nodes and their current leaders, learned from the nodes themselves."""

    def __init__(self, seeds: list[tuple[str, int]]) -> None:
        self.seeds = list(seeds)
        self.partitions: dict[int, list[tuple[str, int]]] = {1: list(seeds)}
        self.leaders: dict[int, tuple[str, int]] = {}
        self.count = 1

    def candidates(self) -> list[tuple[str, int]]:
        """Every address worth asking about the topology, known ones first."""
        return list(dict.fromkeys([a for addrs in self.partitions.values() for a in addrs] + self.seeds))

    def learn_partitions(self, pm: list) -> None:
        """From a PARTITIONS reply: [partition, first slot, last slot, [host:port, ...]]."""
        self.partitions = {int(p[0]): [_addr(a.decode()) for a in p[3]] for p in pm}
        self.count = len(self.partitions)
        if self.count == 1:
            # an older node names only itself: its followers are then the other seeds
            self.partitions[1] = list(dict.fromkeys(self.partitions[1] + self.seeds))

    def learn_role(self, partition: int, addr: tuple[str, int], role: list) -> bool:
        """From a ROLE reply of ``addr``: True once the partition's leader is known."""
        if role[0] == b"master":
            self.leaders[partition] = addr
            return True
        if role[0] == b"slave" and role[3] in (b"connected", b"sync"):
            self.leaders[partition] = (role[1].decode(), int(role[2]))
            return True
        return False

    def partition_of(self, key: bytes | None) -> int:
        if key is None or self.count == 1:
            return 1
        return partition_of_slot(key_slot(key), self.count)


class Client:
    """A synchronous client. ``nodes``: a few addresses of the cluster ("host:port")."""

    def __init__(self, nodes, session: Session | None = None, wait_timeout_ms: int = 1000,
                 socket_timeout: float = 5.0, read_from_followers: bool = True, max_redirects: int = 20) -> None:
        if isinstance(nodes, str):
            nodes = [nodes]
        self.topology = Topology([_addr(n) for n in nodes])
        self.session = session if session is not None else Session()
        self.wait_timeout_ms = wait_timeout_ms
        self.socket_timeout = socket_timeout
        self.read_from_followers = read_from_followers
        self.max_redirects = max_redirects
        self._conns: dict[tuple[str, int], redis.Redis] = {}
        self._rr = itertools.count()
        self.stats = {"leader_reads": 0, "follower_reads": 0, "follower_skips": 0, "redirects": 0}
        self.refresh()

    # ------------------------------------------------------------------ connections, topology
    def conn(self, addr: tuple[str, int]) -> redis.Redis:
        c = self._conns.get(addr)
        if c is None:
            c = redis.Redis(host=addr[0], port=addr[1], socket_timeout=self.socket_timeout,
                            socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))
            self._conns[addr] = c
        return c

    def refresh(self) -> None:
        """Ask the nodes for the partition map and each partition's leader."""
        t = self.topology
        for addr in t.candidates():
            try:
                t.learn_partitions(self.conn(addr).execute_command("PARTITIONS"))
                break
            except (redis.RedisError, OSError):
                continue
        for p, addrs in t.partitions.items():
            for addr in addrs:
                try:
                    if t.learn_role(p, addr, self.conn(addr).execute_command("ROLE")):
                        break
                except (redis.RedisError, OSError):
                    continue

    def leader(self, partition: int) -> tuple[str, int]:
        addr = self.topology.leaders.get(partition)
        if addr is None:
            self.refresh()
            addr = self.topology.leaders.get(partition)
        if addr is None:
            raise NoLeader(f"no leader known for partition {partition}")
        return addr

    def followers(self, partition: int) -> list[tuple[str, int]]:
        lead = self.topology.leaders.get(partition)
        return [a for a in self.topology.partitions.get(partition, []) if a != lead]

    # ------------------------------------------------------------------ writes
    def write(self, *args):
        """Run a write command on the leader of its key's partition."""
        key = _key_of(args)
        p = self.topology.partition_of(key)
        for _ in range(self.max_redirects):
            addr = self.leader(p)
            pipe = self.conn(addr).pipeline(transaction=False)
            for cmd in write_commands(self.session, p, args):
                pipe.execute_command(*cmd)
            try:
                res = pipe.execute(raise_on_error=False)
            except (redis.ConnectionError, redis.TimeoutError) as e:
                raise OutcomeUnknown(f"{args[0]!r} to {addr}: {e}") from e
            done, out = write_outcome(self.session, p, res)
            if done:
                return out
            self.stats["redirects"] += 1
            self._follow_redirect(p, out)
        raise NoLeader(f"partition {p}: still redirected after {self.max_redirects} tries")

    def _follow_redirect(self, partition: int, err: Exception) -> None:
        hint = leader_hint(err)
        if hint is not None:
            self.topology.leaders[partition] = hint
            return
        self.topology.leaders.pop(partition, None)
        time.sleep(0.05)
        self.refresh()

    # ------------------------------------------------------------------ reads
    def read(self, *args):
        """Run a read command where the session allows: a caught-up follower, else the leader."""
        key = _key_of(args)
        p = self.topology.partition_of(key)
        plan = self.session.plan_read(p, key or b"")
        if plan.target == "follower" and self.read_from_followers:
            fl = self.followers(p)
            if fl:
                for addr in follower_order(fl, plan.sticky, next(self._rr)):
                    ok, value = self._read_from_follower(addr, p, plan.need_seq, args, key)
                    if ok:
                        self.stats["follower_reads"] += 1
                        return value
                    self.stats["follower_skips"] += 1
        return self._read_from_leader(p, args, key)

    def _read_from_follower(self, addr, p: int, need: int, args, key):
        pipe = self.conn(addr).pipeline(transaction=False)
        for cmd in read_commands(need, self.wait_timeout_ms, args, key):
            pipe.execute_command(*cmd)
        try:
            res = pipe.execute(raise_on_error=False)
        except (redis.ConnectionError, redis.TimeoutError):
            return False, None
        if any(isinstance(r, Exception) for r in res):
            return False, None
        if need:
            res = res[1:]
        observe_read(self.session, p, res, key)
        return True, res[0]

    def _read_from_leader(self, p: int, args, key):
        for _ in range(self.max_redirects):
            addr = self.leader(p)
            pipe = self.conn(addr).pipeline(transaction=False)
            for cmd in read_commands(0, self.wait_timeout_ms, args, key):
                pipe.execute_command(*cmd)
            try:
                res = pipe.execute(raise_on_error=False)
            except (redis.ConnectionError, redis.TimeoutError):
                self.topology.leaders.pop(p, None)
                time.sleep(0.05)
                continue
            if isinstance(res[0], Exception):
                if classify(res[0]) == "retry":
                    self._follow_redirect(p, res[0])
                    continue
                raise res[0]
            observe_read(self.session, p, res, key)
            self.stats["leader_reads"] += 1
            return res[0]
        raise NoLeader(f"partition {p}: no leader answered")

    # ------------------------------------------------------------------ conveniences
    def get(self, key):
        return self.read("GET", key)

    def set(self, key, value, *opts):
        return self.write("SET", key, value, *opts)

    def incr(self, key):
        return self.write("INCR", key)

    def close(self) -> None:
        for c in self._conns.values():
            c.close()
        self._conns.clear()


def _key_of(args) -> bytes | None:
    if len(args) < 2:
        return None
    k = args[1]
    if isinstance(k, str):
        return k.encode()
    if isinstance(k, int):
        return str(k).encode()
    return k
