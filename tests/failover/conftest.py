"""Fixtures and helpers for leader failover tests with real node processes (MISSION L5).

- ``failover_cluster(...)``: a leader-mode LocalCluster with automatic failover settings;
  every node is killed (and every link proxy stopped) at the end of the test.
- ``Writers``: writer threads that find the leader as a client would (READONLY redirects,
  ROLE), and record which writes were acknowledged. A write that errors or times out is
  *unknown* (it may or may not have happened), never counted as failed or as done.
- ``LinkNet``: every peer link (src -> dst) through its own TCP proxy, so a link can be cut
  for real (bytes silently dropped, connections kept, as in a network partition).
"""

from __future__ import annotations

import asyncio
import collections
import random
import re
import threading
import time
from dataclasses import dataclass

import pytest
import redis

from replikv.cluster.local import LocalCluster
from replikv.server.clusterconfig import cluster_from_dict, cluster_to_toml
from tests.conftest import client, free_base_port, kill_all, wait_for

LEADER_HINT = re.compile(r"The leader is node (\d+)")

# redis-py strips these error prefixes and raises a class of its own instead
_STRIPPED = {redis.ReadOnlyError: "READONLY", redis.exceptions.TryAgainError: "TRYAGAIN",
             redis.BusyLoadingError: "LOADING", redis.exceptions.MovedError: "MOVED",
             redis.exceptions.AskError: "ASK", redis.exceptions.ClusterDownError: "CLUSTERDOWN",
             redis.exceptions.MasterDownError: "MASTERDOWN"}


def error_kind(e: BaseException) -> str:
    """READONLY, NOLEASE, TRYAGAIN, ... for an error reply; the class name for a socket error."""
    if type(e) in _STRIPPED:
        return _STRIPPED[type(e)]
    if isinstance(e, redis.ResponseError):
        return str(e).split(" ", 1)[0]
    return type(e).__name__


# ---------------------------------------------------------------------------- cluster fixture
@pytest.fixture
def failover_cluster(tmp_path):
    """``failover_cluster(n=3, ack="semi-sync:1", ack_timeout_ms=1000, election_timeout_ms=1000,
    heartbeat_ms=100, auto_failover=True, max_lag_on_failover=0, links=False, start=True,
    **node_flags)`` -> LocalCluster (node 1 leads first). With ``links=True`` the cluster gets a
    ``LinkNet`` as ``cl.net``."""
    made: list[LocalCluster] = []
    nets: list[LinkNet] = []

    def make(n: int = 3, ack: str = "semi-sync:1", ack_timeout_ms: int = 1000, election_timeout_ms: int = 1000,
             heartbeat_ms: int = 100, auto_failover: bool = True, max_lag_on_failover: int = 0,
             links: bool = False, start: bool = True, **settings) -> LocalCluster:
        cl = LocalCluster.create(str(tmp_path / f"cluster{len(made)}"), n, free_base_port(n), mode="leader",
                                 settings=settings,
                                 cluster_settings={"ack": ack, "ack_timeout_ms": ack_timeout_ms,
                                                   "heartbeat_ms": heartbeat_ms,
                                                   "election_timeout_ms": election_timeout_ms,
                                                   "auto_failover": auto_failover,
                                                   "max_lag_on_failover": max_lag_on_failover})
        made.append(cl)
        cl.net = None
        if links:
            cl.save()
            cl.net = LinkNet(cl)
            nets.append(cl.net)
        if start:
            cl.start()
            wait_for(lambda: all_streaming(cl), 30, what="every follower streaming")
        return cl

    yield make
    for cl in made:
        kill_all(cl)
    for net in nets:
        net.close()


# ---------------------------------------------------------------------------- status helpers
def status(cl: LocalCluster, node_id: int, timeout: float = 2.0) -> dict:
    return cl.http_get(cl.node(node_id), "/status", timeout=timeout)["replication"]


def try_status(cl: LocalCluster, node_id: int, timeout: float = 1.0) -> dict | None:
    try:
        return status(cl, node_id, timeout)
    except Exception:  # noqa: BLE001 - killed, paused or starting
        return None


def leader_among(cl: LocalCluster, ids) -> int | None:
    """The node among ``ids`` that leads with a lease, or None."""
    for i in ids:
        st = try_status(cl, i, 0.5)
        if st and st["role"] == "leader" and st.get("lease"):
            return i
    return None


def wait_leader_among(cl: LocalCluster, ids, timeout: float = 30.0) -> int:
    return wait_for(lambda: leader_among(cl, ids), timeout, what=f"a leader among nodes {list(ids)}")


def all_streaming(cl: LocalCluster, leader: int | None = None, ids=None) -> bool:
    leader = leader if leader is not None else cl.leader_id
    ids = set(ids if ids is not None else (n.node_id for n in cl.nodes)) - {leader}
    fl = status(cl, leader)["followers"]
    return {f["node_id"] for f in fl if f["link"] == "up" and f["state"] == "streaming"} >= ids


def metric(cl: LocalCluster, node_id: int, name: str) -> float:
    """A label-less sample of /metrics (0 if absent)."""
    text = cl.http_get(cl.node(node_id), "/metrics")
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def digest(cl: LocalCluster, node_id: int) -> bytes:
    return client(cl.node(node_id).port).execute_command("DIGEST")


def converged(cl: LocalCluster, leader: int, ids) -> bool:
    """Every node of ``ids`` applied all of ``leader``'s records and has its DIGEST."""
    r = client(cl.node(leader).port)
    last = r.execute_command("ROLE")[1]
    ref = r.execute_command("DIGEST")
    for i in ids:
        if i == leader:
            continue
        st = status(cl, i)
        if st["role"] != "follower" or st["leader_id"] != leader or st["applied"] < last or digest(cl, i) != ref:
            return False
    # nothing was written meanwhile (the reference is still the leader's state)
    return r.execute_command("ROLE")[1] == last and r.execute_command("DIGEST") == ref


def role(cl: LocalCluster, node_id: int) -> bytes:
    return client(cl.node(node_id).port, socket_timeout=2).execute_command("ROLE")[0]


# ---------------------------------------------------------------------------- writers
@dataclass
class Ack:
    value: str
    node: int               # the node that answered OK
    epochs: tuple | None    # (epoch before, epoch after) of that node, when tracked
    t: float                # monotonic time the OK arrived
    t_sent: float = 0.0     # monotonic time the write was sent


class Writers:
    """``threads`` writer threads, each writing unique keys ``{prefix}{tid}:{i}`` to the node it
    believes leads. Client behaviour: follow a READONLY redirect to the leader it names; on
    any other error or a timeout ask every node ROLE and use the one that says master.

    ``track_epoch``: for every write, read the target's /status epoch before and after; an
    acknowledged write is stamped with both (equal means the write was acknowledged in that
    epoch, since a node cannot lead twice in one epoch)."""

    def __init__(self, cl: LocalCluster, threads: int = 4, prefix: str = "w", first: int | None = None,
                 socket_timeout: float = 2.0, track_epoch: bool = False, pace: float = 0.0) -> None:
        self.cl = cl
        self.prefix = prefix
        self.first = first if first is not None else cl.leader_id
        self.socket_timeout = socket_timeout
        self.track_epoch = track_epoch
        self.pace = pace
        self.lock = threading.Lock()
        self.acked: dict[str, Ack] = {}
        self.unknown: dict[str, tuple[str, str]] = {}
        self.errors: collections.Counter = collections.Counter()
        self.samples: dict[str, str] = {}     # error kind -> one full message
        self._stop = threading.Event()
        self.failures: list[BaseException] = []
        self._threads = [threading.Thread(target=self._run, args=(t,), daemon=True, name=f"writer-{t}")
                         for t in range(threads)]

    def __enter__(self) -> Writers:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.stop()
        else:                    # the test failed inside the block: report that, not a writer
            self._stop.set()
            for t in self._threads:
                t.join(60)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)
        assert not any(t.is_alive() for t in self._threads), "a writer thread did not stop"
        assert not self.failures, self.failures

    # --------------------------------------------------------------- what happened
    def acked_by(self, node_id: int) -> int:
        with self.lock:
            return sum(1 for a in self.acked.values() if a.node == node_id)

    def wait_acked_by(self, node_id: int, n: int, timeout: float = 30.0) -> None:
        wait_for(lambda: self.acked_by(node_id) >= n, timeout, 0.05,
                 what=f"{n} writes acknowledged by node {node_id}")

    def count(self) -> int:
        with self.lock:
            return len(self.acked)

    # --------------------------------------------------------------- the client
    def _client(self, conns: dict, node_id: int, timeout: float) -> redis.Redis:
        c = conns.get((node_id, timeout))
        if c is None:
            c = conns[(node_id, timeout)] = client(self.cl.node(node_id).port, socket_timeout=timeout,
                                                   socket_connect_timeout=timeout)
        return c

    def _discover(self, conns: dict) -> int | None:
        ids = [n.node_id for n in self.cl.nodes]
        random.shuffle(ids)
        for i in ids:
            try:
                if self._client(conns, i, 0.5).execute_command("ROLE")[0] == b"master":
                    return i
            except (redis.RedisError, OSError):
                conns.pop((i, 0.5), None)
        return None

    def _epoch(self, node_id: int) -> int | None:
        st = try_status(self.cl, node_id, 1.0)
        return st["epoch"] if st and st["role"] == "leader" else None

    def _run(self, tid: int) -> None:
        try:
            self._loop(tid)
        except BaseException as e:  # noqa: BLE001 - reported by stop()
            self.failures.append(e)

    def _loop(self, tid: int) -> None:
        conns: dict = {}
        target = self.first
        i = 0
        while not self._stop.is_set():
            if target is None:
                target = self._discover(conns)
                if target is None:
                    time.sleep(0.02)
                    continue
            key = f"{self.prefix}{tid}:{i}"
            value = f"{tid}:{i}:{time.monotonic_ns()}"
            i += 1
            before = self._epoch(target) if self.track_epoch else None
            t_sent = time.monotonic()
            try:
                ok = self._client(conns, target, self.socket_timeout).set(key, value)
            except redis.ResponseError as e:
                msg = str(e)
                kind = error_kind(e)
                self._unknown(key, value, kind, msg)
                hint = LEADER_HINT.search(msg)
                if kind == "READONLY" and hint and int(hint.group(1)) != target:
                    target = int(hint.group(1))
                else:
                    target = None
                    time.sleep(0.02)
                continue
            except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
                self._unknown(key, value, error_kind(e), str(e))
                conns.pop((target, self.socket_timeout), None)
                target = None
                continue
            t = time.monotonic()
            assert ok is True, ok
            after = self._epoch(target) if self.track_epoch else None
            with self.lock:
                self.acked[key] = Ack(value, target, (before, after) if self.track_epoch else None, t, t_sent)
            if self.pace:
                time.sleep(self.pace)

    def _unknown(self, key: str, value: str, kind: str, msg: str) -> None:
        with self.lock:
            self.unknown[key] = (value, kind)
            self.errors[kind] += 1
            self.samples.setdefault(kind, msg)


class StaleClient(threading.Thread):
    """A client that keeps writing to one node only, whatever happens (the client on the old
    leader's side of a partition), recording for each write when it was sent, when its answer
    came, and what it was: ``(key, value, t_sent, t_reply, outcome)``, outcome "OK" or the
    error kind."""

    def __init__(self, cl: LocalCluster, node_id: int, prefix: str = "stale", socket_timeout: float = 60.0,
                 pace: float = 0.01) -> None:
        super().__init__(daemon=True, name=f"stale-client-{node_id}")
        self.cl, self.node_id, self.prefix = cl, node_id, prefix
        self.socket_timeout, self.pace = socket_timeout, pace
        self.results: list[tuple] = []
        self._halt = threading.Event()

    def run(self) -> None:
        r = None
        i = 0
        while not self._halt.is_set():
            if r is None:
                r = client(self.cl.node(self.node_id).port, socket_timeout=self.socket_timeout)
            key, value = f"{self.prefix}:{i}", f"s{i}:{time.monotonic_ns()}"
            i += 1
            t = time.monotonic()
            try:
                out = r.set(key, value)
                outcome = "OK" if out is True else repr(out)
            except redis.ResponseError as e:
                outcome = error_kind(e)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
                outcome = error_kind(e)
                r = None
                time.sleep(0.05)
            self.results.append((key, value, t, time.monotonic(), outcome))
            time.sleep(self.pace)

    def stop(self) -> None:
        self._halt.set()
        self.join(self.socket_timeout + 10)
        assert not self.is_alive()


def assert_one_leader_per_epoch(acks) -> dict[int, set]:
    """No two nodes acknowledged writes in the same epoch. Returns {epoch: {node}}.

    A write whose epoch is pinned down (the node led in the same epoch just before and just
    after it) counts for that epoch. One that is not (the epoch changed around it, or the
    status did not answer) was acknowledged in some epoch between the two readings: at least
    one of those must belong to no other node."""
    owners: dict[int, set] = collections.defaultdict(set)
    loose = []
    for a in acks:
        before, after = a.epochs
        if before is not None and before == after:
            owners[before].add(a.node)
        else:
            loose.append(a)
    split = {ep: nodes for ep, nodes in owners.items() if len(nodes) > 1}
    assert not split, f"writes acknowledged by more than one node in the same epoch: {split}"
    top = max(owners, default=0)
    for a in loose:
        before, after = a.epochs
        lo = before if before is not None else 0
        hi = after if after is not None else top + 1
        assert any(owners.get(ep, {a.node}) == {a.node} for ep in range(lo, hi + 1)), (
            f"a write acknowledged by node {a.node} between epochs {before} and {after}, all of which "
            f"other nodes led: {a}")
    return dict(owners)


def assert_all_acked_present(cl: LocalCluster, node_id: int, acked: dict[str, Ack]) -> None:
    """Read every acknowledged key back from ``node_id``: each has the acknowledged value."""
    r = client(cl.node(node_id).port)
    keys = sorted(acked)
    missing = []
    for k0 in range(0, len(keys), 500):
        chunk = keys[k0:k0 + 500]
        for k, v in zip(chunk, r.mget(chunk), strict=True):
            if v is None or v.decode() != acked[k].value:
                missing.append((k, acked[k], v))
    assert not missing, f"{len(missing)} acknowledged write(s) lost or changed, e.g. {missing[:5]}"


# ---------------------------------------------------------------------------- link proxies
class _Link:
    def __init__(self, src: int, dst: int, target_port: int) -> None:
        self.src, self.dst, self.target_port = src, dst, target_port
        self.cut = False
        self.budget: int | None = None    # bytes still let through dst -> src; None = no limit
        self.port = 0
        self.conns: set = set()


class LinkNet:
    """One TCP proxy per directed peer link ``src -> dst`` (node ``src`` connects to node
    ``dst``'s peer port), through a cluster file per node that names the proxies as the other
    nodes' peer ports. The proxies run on an asyncio loop in a thread.

    ``cut(a, b)`` cuts both directions between a and b: bytes are dropped silently, open
    connections stay open and new ones are accepted but lead nowhere, as in a partition.
    ``heal(a, b)`` restores them and resets the connections that lost bytes.
    ``budget(src, dst, n)``: on link src -> dst let ``n`` more bytes through from dst to
    src, then drop the rest (a stalled transfer)."""

    def __init__(self, cl: LocalCluster) -> None:
        self.cl = cl
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="linknet")
        self.thread.start()
        self.links: dict[tuple[int, int], _Link] = {}
        self.servers = []
        for a in cl.nodes:
            for b in cl.nodes:
                if a.node_id != b.node_id:
                    link = _Link(a.node_id, b.node_id, b.peer_port)
                    self.links[(a.node_id, b.node_id)] = link
                    self._call(self._serve(link))
        for a in cl.nodes:
            raw = dict(cl.cluster_settings)
            raw["mode"] = cl.mode
            raw["nodes"] = [{"id": b.node_id, "host": b.host, "port": b.port,
                             "peer_port": b.peer_port if b.node_id == a.node_id
                             else self.links[(a.node_id, b.node_id)].port,
                             "http_port": b.http_port} for b in cl.nodes]
            path = f"{cl.root}/cluster-node{a.node_id}.toml"
            with open(path, "w") as fh:
                fh.write(cluster_to_toml(cluster_from_dict(raw)))
            a.extra_args = list(a.extra_args) + ["--cluster", path]

    def _call(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _serve(self, link: _Link) -> None:
        taken = {p for n in self.cl.nodes for p in (n.port, n.peer_port, n.http_port)}
        while True:
            srv = await asyncio.start_server(lambda r, w: self._accept(link, r, w), "127.0.0.1", 0)
            link.port = srv.sockets[0].getsockname()[1]
            if link.port not in taken:      # an ephemeral port may be one the nodes will bind
                break
            srv.close()
        self.servers.append(srv)

    async def _accept(self, link: _Link, reader, writer) -> None:
        up_w = None
        try:
            if not link.cut:
                try:
                    up_r, up_w = await asyncio.open_connection("127.0.0.1", link.target_port)
                except OSError:
                    writer.close()
                    return
            entry = (writer, up_w)
            link.conns.add(entry)
            if up_w is None:
                await self._pump(link, reader, None, False)      # cut: swallow everything
                return
            await asyncio.gather(self._pump(link, reader, up_w, False), self._pump(link, up_r, writer, True))
        finally:
            link.conns = {c for c in link.conns if c[0] is not writer}
            for w in (writer, up_w):
                if w is not None:
                    w.close()

    async def _pump(self, link: _Link, r, w, downstream: bool) -> None:
        while True:
            try:
                data = await r.read(65536)
            except (ConnectionError, OSError):
                data = b""
            if not data:
                while link.cut:                   # a partition does not carry the close either
                    await asyncio.sleep(0.05)
                if w is not None:
                    w.close()
                return
            if link.cut or w is None:
                continue
            if downstream and link.budget is not None:
                n = min(len(data), link.budget)
                link.budget -= n
                data = data[:n]
                if not data:
                    continue
            try:
                w.write(data)
                await w.drain()
            except (ConnectionError, OSError):
                return

    def _reset(self, link: _Link) -> None:
        for c in list(link.conns):
            for w in c:
                if w is not None:
                    w.close()
        link.conns = set()

    def cut(self, a: int, b: int) -> None:
        for k in ((a, b), (b, a)):
            self.links[k].cut = True

    def heal(self, a: int, b: int) -> None:
        for k in ((a, b), (b, a)):
            link = self.links[k]
            link.cut = False
            link.budget = None
            self.loop.call_soon_threadsafe(self._reset, link)

    def budget(self, src: int, dst: int, n: int | None) -> None:
        self.links[(src, dst)].budget = n

    def close(self) -> None:
        async def stop():
            for s in self.servers:
                s.close()
            for link in self.links.values():
                self._reset(link)

        try:
            self._call(stop(), 5)
        except Exception:  # noqa: BLE001
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
