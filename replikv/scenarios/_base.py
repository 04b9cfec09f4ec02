"""What every scenario uses: the registry, a ``Run`` (narrative output, fresh clusters of real
processes, teardown), the ``Result`` a scenario returns, and small client helpers.

A scenario never sleeps to synchronise: it waits for conditions against deadlines
(``wait_for``). ``Run.beat()`` pauses only when a person watches (``--dashboard``), so the
steps can be followed on the page; it is a no-op in tests.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..cluster.local import ClusterError, LocalCluster, poll_until

WIDTH = 96


class ScenarioError(Exception):
    """The scenario could not run its steps (a node did not start, a condition never came)."""


@dataclass
class Result:
    """What a scenario found. ``anomaly_seen_without``: the anomaly happened with the mechanism
    off; ``anomaly_seen_with``: it happened even with the mechanism on (it should not)."""
    name: str
    anomaly_seen_without: bool
    anomaly_seen_with: bool
    details: dict = field(default_factory=dict)

    @property
    def shown(self) -> bool:
        """The scenario made its point: the anomaly without the mechanism, none with it."""
        return self.anomaly_seen_without and not self.anomaly_seen_with


@dataclass
class Scenario:
    name: str
    title: str
    seeds: str           # what the seed notes say about it, in a few sentences
    mechanism: str       # the mechanism shown to prevent it, in one line
    order: int
    fn: Callable[[Run], Result]


SCENARIOS: dict[str, Scenario] = {}


def scenario(name: str, title: str, seeds: str, mechanism: str, order: int = 100):
    """Register ``fn(run) -> Result`` as ``replikv scenario run NAME``."""
    def deco(fn):
        if name in SCENARIOS and SCENARIOS[name].fn is not fn:
            raise ValueError(f"two scenarios are named {name!r}")
        SCENARIOS[name] = Scenario(name, title, " ".join(seeds.split()), mechanism, order, fn)
        return fn
    return deco


# ---------------------------------------------------------------------------- clients
def client(port: int, timeout: float = 5.0, host: str = "127.0.0.1") -> redis.Redis:
    """One connection (LASTPOS and ACKMODE belong to a connection), never retried: a retried
    write would hide a lost or doubled one."""
    return redis.Redis(host=host, port=port, retry=Retry(NoBackoff(), 0), socket_timeout=timeout,
                       socket_connect_timeout=timeout, single_connection_client=True)


def wait_for(cond, timeout: float, what: str, interval: float = 0.02):
    return poll_until(cond, timeout, what, interval, ScenarioError)


def repl(cl: LocalCluster, node_id: int, timeout: float = 1.0) -> dict | None:
    """The replication part of a node's /status, or None if it does not answer."""
    try:
        return cl.http_get(cl.node(node_id), "/status", timeout=timeout)["replication"]
    except Exception:  # noqa: BLE001 - killed, paused or starting
        return None


def leader_among(cl: LocalCluster, ids) -> int | None:
    for i in ids:
        st = repl(cl, i, 0.5)
        if st and st["role"] == "leader" and st.get("lease"):
            return i
    return None


def streaming(cl: LocalCluster, leader: int, ids) -> bool:
    st = repl(cl, leader)
    if not st or st["role"] != "leader":
        return False
    up = {f["node_id"] for f in st.get("followers", []) if f["link"] == "up" and f["state"] == "streaming"}
    return up >= set(ids) - {leader}


def caught_up(cl: LocalCluster, leader: int, ids) -> bool:
    """Every node of ``ids`` applied everything the leader has, with the leader's DIGEST."""
    r = client(cl.node(leader).port)
    last = r.execute_command("ROLE")[1]
    ref = r.execute_command("DIGEST")
    for i in ids:
        if i == leader:
            continue
        st = repl(cl, i)
        if not st or st.get("applied", -1) < last or client(cl.node(i).port).execute_command("DIGEST") != ref:
            return False
    return True


def seq_of(pos) -> int:
    """The seq of a position token ``epoch:seq``."""
    text = pos.decode() if isinstance(pos, bytes) else str(pos)
    return int(text.rsplit(":", 1)[-1])


class Loop(threading.Thread):
    """Calls ``fn()`` until stopped (``pace`` seconds apart: a load, not a synchronisation);
    ``stop()`` re-raises what ``fn`` raised."""

    def __init__(self, fn: Callable[[], None], pace: float = 0.0, name: str = "load") -> None:
        super().__init__(daemon=True, name=name)
        self.fn = fn
        self.pace = pace
        self.calls = 0
        self.error: BaseException | None = None
        self._stop_ev = threading.Event()

    def run(self) -> None:
        try:
            while not self._stop_ev.is_set():
                self.fn()
                self.calls += 1
                if self.pace:
                    self._stop_ev.wait(self.pace)
        except BaseException as e:  # noqa: BLE001 - re-raised by stop()
            self.error = e

    def stop(self) -> None:
        self._stop_ev.set()
        self.join(30)
        if self.error is not None:
            raise self.error


# ---------------------------------------------------------------------------- ports
def ports_needed(base: int, n: int, net_faults: bool) -> list[int]:
    from ..cluster.agent import AGENT_OFFSET, proxy_port
    from ..cluster.local import HTTP_OFFSET, PEER_OFFSET

    ports = [base + off + i for off in (0, PEER_OFFSET, HTTP_OFFSET) for i in range(n)]
    ports.append(base + AGENT_OFFSET)
    if net_faults:
        ports += [proxy_port(base, a, b) for a in range(1, n + 1) for b in range(1, n + 1) if a != b]
    return ports


def busy_ports(ports) -> list[int]:
    busy = []
    for p in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                busy.append(p)
    return busy


LOW_PORT, HIGH_PORT = 21000, 32000   # below Linux's ephemeral range (32768-60999), where the
                                     # kernel picks client ports that could take ours meanwhile


def free_base_port(n: int = 4, net_faults: bool = True, start: int | None = None, step: int = 500) -> int:
    """A base port whose whole span (RESP, peer, HTTP, agent, link proxies) is free now."""
    span = (HIGH_PORT - LOW_PORT) // step
    k = (start - LOW_PORT) // step if start is not None else os.getpid()
    for i in range(span):
        base = LOW_PORT + ((k + i) % span) * step
        if not busy_ports(ports_needed(base, n, net_faults)):
            return base
    raise ScenarioError("no free port range found")


# ---------------------------------------------------------------------------- a run
class Run:
    """One run of a scenario: where it prints, where its clusters live, what a person sees.

    Clusters are made with ``cluster(...)``: each one fresh, in its own folder under a temp
    dir, on the same ports (``base_port``), replacing the previous one, so a dashboard left
    open follows from one to the next. ``close()`` kills every node and removes the folder."""

    def __init__(self, base_port: int = 7500, out: Callable[[str], None] | None = None, dashboard: bool = False,
                 pace: float = 0.0, open_browser: bool = True, root: str | None = None) -> None:
        self.base_port = base_port
        self._out = out or (lambda s: print(s, flush=True))
        self.dashboard = dashboard
        self.pace = pace
        self.open_browser = open_browser
        self._own_root = root is None
        self.root = root or tempfile.mkdtemp(prefix="replikv-scenario-")
        self.clusters: list[LocalCluster] = []
        self.transcript: list[str] = []
        self._announced = False
        self._made = 0

    # ---------------------------------------------------------------- narrative
    def _emit(self, text: str) -> None:
        self.transcript.append(text)
        self._out(text)

    def heading(self, text: str) -> None:
        self._emit("")
        self._emit(text)

    def say(self, text: str) -> None:
        """A paragraph of narrative, wrapped."""
        self._emit(textwrap.fill(" ".join(text.split()), WIDTH))

    def step(self, text: str) -> None:
        """Something the scenario does now."""
        self._emit(textwrap.fill(" ".join(text.split()), WIDTH, initial_indent="  > ", subsequent_indent="    "))
        self.beat()

    def show(self, text: str) -> None:
        """Something observed."""
        self._emit(textwrap.fill(" ".join(text.split()), WIDTH, initial_indent="    ", subsequent_indent="      "))

    def beat(self) -> None:
        """A pause for a person following on the dashboard; nothing when no one watches."""
        if self.pace:
            time.sleep(self.pace)

    # ---------------------------------------------------------------- clusters
    def cluster(self, n: int = 3, ack: str = "async", spare: int = 0, net_faults: bool = False,
                settings: dict | None = None, **cluster_settings) -> LocalCluster:
        """A fresh leader-mode cluster of ``n`` nodes (node 1 leads), started, every follower
        streaming. ``spare`` reserves ports for nodes added later."""
        for cl in list(self.clusters):
            self.stop_cluster(cl)
        busy = busy_ports(ports_needed(self.base_port, n + spare, net_faults))
        if busy:
            raise ScenarioError(f"port(s) {', '.join(map(str, busy[:5]))} already in use; choose another "
                                f"--base-port (the scenario needs {self.base_port}..{self.base_port + 433})")
        cs = {"ack": ack, **cluster_settings}
        if net_faults:
            cs["net_faults"] = True
        self._made += 1
        root = os.path.join(self.root, f"cluster{self._made}")
        cl = LocalCluster.create(root, n, self.base_port, mode="leader", settings=settings or {},
                                 cluster_settings=cs)
        self.clusters.append(cl)
        try:
            cl.start()
        except ClusterError as e:
            raise ScenarioError(str(e)) from None
        ids = [x.node_id for x in cl.nodes]
        wait_for(lambda: streaming(cl, 1, ids), 30, "every follower streaming")
        if self.dashboard:
            from ..dashboard import announce

            if not self._announced:
                announce(cl, self._emit, open_browser=self.open_browser)
                self._announced = True
            else:
                self._emit("    (a fresh cluster on the same ports: the dashboard page follows it)")
            self.beat()
        return cl

    def stop_cluster(self, cl: LocalCluster) -> None:
        for n in cl.nodes:
            try:
                cl.kill(n.node_id)
            except Exception:  # noqa: BLE001 - already gone
                pass
        try:
            cl.stop_agent()
        except Exception:  # noqa: BLE001
            pass
        if cl in self.clusters:
            self.clusters.remove(cl)

    def close(self) -> None:
        for cl in list(self.clusters):
            self.stop_cluster(cl)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)
