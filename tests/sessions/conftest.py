"""Fixtures for the session-guarantee tests (MISSION G1-G4): leader-mode clusters of real
node processes, one or several partitions, lag made with the follower apply delay
(``REPLICA DELAY ms``), and the replikv Client on top.

- ``session_cluster(n=3, partitions=1, **cluster_settings)`` -> LocalCluster, started, every
  follower streaming; every node (and the fault agent) is killed at the end of the test;
  ``module_cluster_factory`` the same for a cluster that the tests of one module share.
- ``followers(cl, partition)``: the follower specs of a partition, in id order.
- ``set_delay(cl, node_id, ms)``: the follower applies records ``ms`` after the leader wrote them.
"""

from __future__ import annotations

import pytest

from replikv.client import Client
from replikv.cluster.local import LocalCluster
from tests.conftest import client, free_base_port, kill_all, start_on_free_ports, wait_for


def repl_status(cl: LocalCluster, node_id: int) -> dict:
    return cl.http_get(cl.node(node_id), "/status")["replication"]


def all_streaming(cl: LocalCluster) -> bool:
    for p in range(1, cl.partitions + 1):
        lead = cl.leader(p)
        if lead is None:
            return False
        fl = repl_status(cl, lead.node_id)["followers"]
        want = {n.node_id for n in cl.partition_nodes(p) if n.node_id != lead.node_id}
        got = {f["node_id"] for f in fl if f["link"] == "up" and f["state"] == "streaming"}
        if not got >= want:
            return False
    return True


class ClusterFactory:
    """Makes leader-mode LocalClusters under ``root``; ``close()`` kills every node it made."""

    def __init__(self, root) -> None:
        self.root = root
        self.made: list[LocalCluster] = []

    def __call__(self, n: int = 3, partitions: int = 1, **cluster_settings) -> LocalCluster:
        # automatic failover is off unless asked for: these tests kill followers, never
        # leaders, and a loaded machine must not start elections of its own
        cs = {"ack": "async", "heartbeat_ms": 100, "election_timeout_ms": 3000, "auto_failover": False,
              **cluster_settings}
        def create() -> LocalCluster:
            cl = LocalCluster.create(str(self.root / f"cluster{len(self.made)}"), n, free_base_port(n * partitions),
                                     mode="leader", partitions=partitions, cluster_settings=cs)
            self.made.append(cl)
            return cl

        cl = start_on_free_ports(create)
        wait_for(lambda: all_streaming(cl), 30, what="every follower streaming")
        return cl

    def close(self) -> None:
        for cl in self.made:
            kill_all(cl)


@pytest.fixture
def session_cluster(tmp_path):
    """``session_cluster(n=3, partitions=1, **cluster_settings)``: n nodes per partition (the
    first of each leads), killed at the end of the test."""
    f = ClusterFactory(tmp_path)
    yield f
    f.close()


@pytest.fixture(scope="module")
def module_cluster_factory(tmp_path_factory):
    """The same factory, for a cluster shared by the tests of one module (each test sets the
    delays it needs and uses its own keys); killed at the end of the module."""
    f = ClusterFactory(tmp_path_factory.mktemp("sessions"))
    yield f
    f.close()


@pytest.fixture(scope="package")
def two_partitions(tmp_path_factory):
    """Two partitions of a leader and a follower each, shared by the tests of this package
    that need partitions; every node is killed at the end."""
    f = ClusterFactory(tmp_path_factory.mktemp("partitions"))
    yield f(2, partitions=2)
    f.close()


def followers(cl: LocalCluster, partition: int = 1) -> list:
    lead = cl.leader(partition)
    return [n for n in cl.partition_nodes(partition) if lead is None or n.node_id != lead.node_id]


def set_delay(cl: LocalCluster, node_id: int, ms: int) -> None:
    assert client(cl.node(node_id).port).execute_command("REPLICA", "DELAY", ms) == b"OK"


def make_client(cl: LocalCluster, session=None, **kw) -> Client:
    return Client([n.address for n in cl.nodes], session=session, **kw)
