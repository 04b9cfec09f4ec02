"""Shared fixtures: real node processes on loopback, through the same LocalCluster harness
that ``replikv up`` uses. Tests wait for conditions against deadlines, never fixed sleeps."""

from __future__ import annotations

import os
import socket

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from replikv.cluster.local import ClusterError, LocalCluster, poll_until


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# Node ports stay below the kernel's ephemeral range: a port in that range can be taken by any
# process's outgoing connection while a node is down, and the node could not restart on it.
_EPHEMERAL_LOW = _ephemeral_low()
_port_counter = [20000 + (os.getpid() % 100) * 110]
# a cluster uses base+i (RESP), +100+i (peer), +200+i (HTTP), +399 (fault agent), +400.. (link proxies)
_OFFSETS = (0, 100, 200)


def free_base_port(span: int = 3) -> int:
    """A base port whose RESP, peer, HTTP, fault-agent and link-proxy ports are all free."""
    top = min(_EPHEMERAL_LOW, 65536) - 500 - span
    for _ in range(5000):
        base = _port_counter[0]
        _port_counter[0] = base + 10 if base + 10 < top else 20000
        ports = [base + off + i for off in _OFFSETS for i in range(span)] + [base + 399]
        ports += [base + 400 + 10 * a + b for a in range(span) for b in range(span) if a != b]
        if all(_bindable(p) for p in ports):
            return base
    raise RuntimeError("no free ports below the ephemeral range")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def kill_all(cl: LocalCluster) -> None:
    """End of a test: SIGKILL every node of ``cl`` and stop its fault agent."""
    for n in cl.nodes:
        try:
            cl.kill(n.node_id)
        except Exception:  # noqa: BLE001 - already gone
            pass
    try:
        cl.stop_agent()
    except Exception:  # noqa: BLE001
        pass


def start_on_free_ports(create, attempts: int = 3) -> LocalCluster:
    """``create()`` makes a LocalCluster on newly chosen free ports; start it. Ports free when
    chosen may be taken meanwhile by another process's outgoing connection: then the cluster
    is killed and a new one, on other ports, is made (up to ``attempts`` times)."""
    for attempt in range(attempts):
        cl = create()
        try:
            cl.start()
            return cl
        except ClusterError as e:
            if "address already in use" not in str(e) or attempt == attempts - 1:
                raise
            kill_all(cl)
    raise AssertionError("unreachable")


def client(port: int, protocol: int = 3, **kw) -> redis.Redis:
    """A redis-py client that never retries (a retried write would hide a lost or doubled one)."""
    return redis.Redis(host="127.0.0.1", port=port, protocol=protocol, retry=Retry(NoBackoff(), 0),
                       socket_timeout=kw.pop("socket_timeout", 10), **kw)


def wait_for(cond, timeout: float = 15.0, interval: float = 0.02, what: str = "condition"):
    return poll_until(cond, timeout, what, interval, AssertionError)


@pytest.fixture
def cluster_factory(tmp_path):
    """Make LocalClusters in tmp dirs; every node is stopped at the end of the test."""
    made: list[LocalCluster] = []

    def make(n: int = 1, **settings) -> LocalCluster:
        cl = LocalCluster.create(str(tmp_path / f"cluster{len(made)}"), n, free_base_port(n),
                                 settings=settings)
        made.append(cl)
        return cl

    yield make
    for cl in made:
        kill_all(cl)


@pytest.fixture
def node(cluster_factory):
    """One running node (fsync everysec); yields its LocalCluster."""
    cl = cluster_factory(1)
    cl.start()
    return cl


@pytest.fixture
def bare_node(tmp_path):
    """A standalone Node in this process, not started: its storage open, an event loop for
    call_soon only (nothing runs it). For unit tests of the node's own steps."""
    import asyncio

    from replikv.server.config import NodeConfig
    from replikv.server.node import Node

    node = Node(NodeConfig(data_dir=str(tmp_path / "bare-node")))
    node.storage.recover()
    node._loop = asyncio.new_event_loop()
    yield node
    node._loop.close()
    node._io.shutdown(wait=False)
    node.storage.close()
