"""A node of a leader-mode cluster takes no client command before its replication layer has
started: until then it would act as a standalone node (role leader, writes accepted), so a
follower restarting could acknowledge a write that is not replicated and that its leader
later rolls back. The node runs in this process with a slow HTTP start (the await between
the two servers), while a client keeps trying SET on its RESP port."""

from __future__ import annotations

import asyncio

from replikv.cluster.local import LocalCluster
from replikv.server import http
from replikv.server.config import NodeConfig
from replikv.server.node import Node
from tests.conftest import free_base_port

SET = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"


async def _set_once(host: str, port: int) -> bytes | None:
    """One SET on a fresh connection: its reply line, or None if the port is closed."""
    try:
        r, w = await asyncio.open_connection(host, port)
    except OSError:
        return None
    try:
        w.write(SET)
        return await asyncio.wait_for(r.readline(), 5)
    finally:
        w.close()


def test_a_follower_takes_no_write_while_it_starts(tmp_path, monkeypatch):
    cl = LocalCluster.create(str(tmp_path), 3, free_base_port(3), mode="leader")
    cl.save()                   # the cluster file, as `replikv up` writes it; no node process runs
    spec = cl.nodes[1]          # node 2: a follower (node 1 leads at first); the others stay down
    cfg = NodeConfig(node_id=spec.node_id, host=spec.host, port=spec.port, peer_port=spec.peer_port,
                     http_port=spec.http_port, data_dir=spec.data_dir, cluster=cl.cluster_file)
    real = http.start_http

    async def slow_start_http(node, host, port):
        runner = await real(node, host, port)
        await asyncio.sleep(0.5)     # clients may connect meanwhile, if the RESP port is open
        return runner

    monkeypatch.setattr(http, "start_http", slow_start_http)

    async def main() -> tuple[list, bytes | None]:
        node = Node(cfg)
        start = asyncio.create_task(node.start())
        during: list = []
        while not start.done():
            got = await _set_once(spec.host, spec.port)
            if got is not None:
                during.append(got)
            await asyncio.sleep(0.01)
        await start
        after = await _set_once(spec.host, spec.port)
        await node.stop()
        return during, after

    during, after = asyncio.run(main())
    assert not [r for r in during if r.startswith(b"+OK")], during
    assert after is not None and after.startswith(b"-READONLY"), after


import json  # noqa: E402
import os  # noqa: E402

import pytest  # noqa: E402

from tests.conftest import client, wait_for  # noqa: E402


@pytest.mark.parametrize("fsync", ["always", "everysec", "no"])
def test_the_leader_keeps_its_commit_point_current_under_every_fsync_policy(leader_cluster, fsync):
    """``DATA_DIR/commit.json`` follows what the leader shows readers, about once a second,
    whatever the fsync policy (a restarted ex-leader hides its records beyond it: a stale
    point hides acknowledged writes until a leader's welcome)."""
    cl = leader_cluster(3, ack="semi-sync:1", fsync=fsync)
    r = client(cl.node(1).port)
    for i in range(50):
        assert r.set(f"c:{i}", "v") is True
    last = int(r.execute_command("ROLE")[1])
    path = os.path.join(cl.node(1).data_dir, "commit.json")

    def saved():
        with open(path) as fh:
            return json.load(fh)

    wait_for(lambda: saved()["seq"] >= last, 10, what=f"commit.json at {last} (it says {saved()})")
    assert saved()["epoch"] == 0
