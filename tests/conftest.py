"""Shared fixtures: real node processes on loopback, through the same LocalCluster harness
that ``replikv up`` uses. Tests wait for conditions against deadlines, never fixed sleeps."""

from __future__ import annotations

import os
import socket
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from replikv.cluster.local import LocalCluster

# below Linux's ephemeral port range (32768-60999), where outgoing connections would collide
_port_counter = [20000 + (os.getpid() % 100) * 110]


def free_base_port(span: int = 3) -> int:
    """A base port whose RESP, peer (+100) and HTTP (+200) ranges are all free."""
    while True:
        base = _port_counter[0]
        _port_counter[0] += 10
        if _port_counter[0] > 31400:
            _port_counter[0] = 20000
        ok = True
        for off in (0, 100, 200):
            for i in range(span):
                with socket.socket() as s:
                    try:
                        s.bind(("127.0.0.1", base + off + i))
                    except OSError:
                        ok = False
        if ok:
            return base


def client(port: int, protocol: int = 3, **kw) -> redis.Redis:
    """A redis-py client that never retries (a retried write would hide a lost or doubled one)."""
    return redis.Redis(host="127.0.0.1", port=port, protocol=protocol, retry=Retry(NoBackoff(), 0),
                       socket_timeout=kw.pop("socket_timeout", 10), **kw)


def wait_for(cond, timeout: float = 15.0, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = cond()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - the condition may raise while a node starts
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


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
        for n in cl.nodes:
            try:
                cl.kill(n.node_id)
            except Exception:  # noqa: BLE001
                pass


@pytest.fixture
def node(cluster_factory):
    """One running node (fsync everysec); yields its LocalCluster."""
    cl = cluster_factory(1)
    cl.start()
    return cl
