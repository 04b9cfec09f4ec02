"""Replication basics on 3 real nodes: convergence under load, read-only followers, INFO/ROLE,
WAIT with Redis semantics (MISSION L1)."""

from __future__ import annotations

import subprocess
import time

from tests.conftest import client, wait_for
from tests.replication.conftest import converged, digest, repl_status


def test_20k_writes_converge_followers_read_only_info_and_role(leader_cluster):
    cl = leader_cluster(3)
    leader, f2, f3 = (cl.node(i) for i in (1, 2, 3))
    out = subprocess.run(["redis-benchmark", "-h", leader.host, "-p", str(leader.port), "-t", "set",
                          "-n", "20000", "-r", "10000", "-q"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    r = client(leader.port)
    pipe = r.pipeline(transaction=False)
    for i in range(200):
        pipe.incr(f"ctr:{i % 20}")
        pipe.hset(f"h:{i % 10}", f"f{i}", i)
        pipe.sadd(f"s:{i % 7}", i)
        pipe.expire(f"h:{i % 10}", 3600)
    pipe.set("short", "lived", px=150)       # expired by the leader, the delete replicated
    pipe.execute()
    wait_for(lambda: r.exists("short") == 0, 10, what="leader expiring 'short'")
    assert r.dbsize() > 8_000          # ~8,650 distinct of 10,000 after 20,000 random draws

    wait_for(lambda: converged(cl), 60, what="all three nodes converging to one DIGEST")
    assert digest(cl, 2) == digest(cl, 3) == digest(cl, 1)

    # reads on followers work and see the leader's data
    for f in (f2, f3):
        fc = client(f.port)
        assert fc.get("ctr:3") == r.get("ctr:3") == b"10"
        assert fc.hgetall("h:4") == r.hgetall("h:4")
        assert fc.smembers("s:2") == r.smembers("s:2")
        assert 0 < fc.ttl("h:4") <= 3600
        assert fc.exists("short") == 0
        assert fc.dbsize() == r.dbsize()
        # writes are refused, naming the leader's address
        for cmd in (("SET", "x", "1"), ("INCR", "ctr:1"), ("DEL", "ctr:1")):
            try:
                fc.execute_command(*cmd)
            except Exception as e:  # noqa: BLE001
                assert "READONLY" in str(e) or type(e).__name__ == "ReadOnlyError", e
                assert leader.address in str(e), e
            else:
                raise AssertionError("a follower accepted a write")
        assert fc.exists("x") == 0

    # INFO replication and ROLE as Redis shapes them
    li = r.info("replication")
    assert li["role"] == "master" and li["connected_slaves"] == 2
    assert {li["slave0"]["port"], li["slave1"]["port"]} == {f2.port, f3.port}
    role = r.execute_command("ROLE")
    assert role[0] == b"master" and isinstance(role[1], int) and len(role[2]) == 2
    assert sorted(int(x[1]) for x in role[2]) == [f2.port, f3.port]
    for f in (f2, f3):
        fi = client(f.port).info("replication")
        assert fi["role"] == "slave"
        assert (fi["master_host"], fi["master_port"]) == (leader.host, leader.port)
        assert fi["master_link_status"] == "up"
        assert fi["slave_repl_offset"] == li["master_repl_offset"]
        frole = client(f.port).execute_command("ROLE")
        assert frole[:4] == [b"slave", leader.host.encode(), leader.port, b"connected"]
        assert frole[4] == role[1]


def test_wait_blocks_the_commands_pipelined_behind_it(leader_cluster):
    """As in Redis, a blocked WAIT holds the connection's later commands: they run, in order,
    only once it is answered (the socket keeps being read meanwhile, up to a bound)."""
    import socket

    cl = leader_cluster(3, ack_timeout_ms=1000)
    port = cl.node(1).port
    other = client(port)
    other.delete("behind")
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        # 3 replicas do not exist: the WAIT runs out its 800 ms
        s.sendall(b"*3\r\n$4\r\nWAIT\r\n$1\r\n3\r\n$3\r\n800\r\n")
        time.sleep(0.2)
        s.sendall(b"*3\r\n$3\r\nSET\r\n$6\r\nbehind\r\n$1\r\n1\r\n"
                  b"*2\r\n$4\r\nINCR\r\n$6\r\nbehind\r\n")
        time.sleep(0.2)
        assert other.get("behind") is None       # still held behind the WAIT
        got = b""
        while got.count(b"\r\n") < 3:
            chunk = s.recv(1024)
            assert chunk, got
            got += chunk
        assert got == b":2\r\n+OK\r\n:2\r\n", got
        assert other.get("behind") == b"2"
    finally:
        s.close()


def test_wait_right_behind_pipelined_writes(leader_cluster):
    """WAIT in the same pipeline as a burst of writes (under async acks the leader is then
    still gathering them for its next message to the followers) and on many connections at
    once: every WAIT is answered with both followers, no connection is dropped."""
    cl = leader_cluster(3, ack_timeout_ms=1000)
    port = cl.node(1).port
    for round_ in range(20):
        rs = [client(port) for _ in range(4)]
        pipes = []
        for i, r in enumerate(rs):
            p = r.pipeline(transaction=False)
            for j in range(50):
                p.set(f"burst:{round_}:{i}:{j}", j)
            p.wait(2, 5000)
            pipes.append(p)
        for p in pipes:
            out = p.execute()
            assert out[-1] == 2, out[-1]
        for r in rs:
            r.close()


def test_wait_numreplicas(leader_cluster):
    cl = leader_cluster(3, ack_timeout_ms=1000)
    r = client(cl.node(1).port)
    r.set("k", "1")
    t = time.monotonic()
    assert r.wait(2, 10_000) == 2
    assert time.monotonic() - t < 5          # did not wait out its 10 s timeout
    assert r.wait(1, 0) >= 1                 # already satisfied: answers at once
    assert r.wait(0, 0) == 2                 # Redis: the number of replicas that have it

    cl.pause(2)
    try:
        r.set("k", "2")
        t = time.monotonic()
        assert r.wait(2, 600) == 1           # one follower up, one paused: 1 after the timeout
        assert time.monotonic() - t >= 0.6 * 0.8
        assert r.wait(1, 10_000) == 1
        cl.pause(3)
        r.set("k", "3")
        t = time.monotonic()
        assert r.wait(1, 500) == 0
        assert time.monotonic() - t >= 0.5 * 0.8
    finally:
        cl.resume(2)
        cl.resume(3)
    assert r.wait(2, 10_000) == 2
    try:
        client(cl.node(2).port).wait(0, 0)
    except Exception as e:  # noqa: BLE001
        assert "replica" in str(e)
    else:
        raise AssertionError("WAIT on a follower did not fail")


def _log_frames(data_dir: str) -> list[tuple[int, bytes]]:
    """Every record frame in a stopped node's own log, with its seq."""
    import os

    from replikv.storage.log import RecordLog

    rl = RecordLog(os.path.join(data_dir, "log"))
    for _ in rl.open():
        pass
    try:
        return rl.read_from(rl.first_seq, 1 << 40)
    finally:
        rl.close()


def test_followers_own_logs_hold_the_leaders_frames_byte_for_byte(leader_cluster):
    """Under semi-sync (each batch pushed at once and applied by the follower's I/O task as it
    arrives, its frames written to the own log in one piece) and under a burst (batches that
    go through the apply task), every follower's own log holds the leader's records, frame
    for frame, at the same positions: what a promoted follower would serve from."""
    cl = leader_cluster(3, ack="semi-sync:1")
    leader = cl.node(1)
    out = subprocess.run(["redis-benchmark", "-h", leader.host, "-p", str(leader.port), "-t", "set,incr,sadd,hset",
                          "-n", "3000", "-r", "1000", "-c", "16", "-q"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    r = client(leader.port)
    out = subprocess.run(["redis-benchmark", "-h", leader.host, "-p", str(leader.port), "-t", "set",
                          "-n", "20000", "-r", "5000", "-P", "32", "-q"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    pipe = r.pipeline(transaction=False)
    for i in range(300):
        pipe.hset(f"h:{i % 10}", f"f{i}", i)
        pipe.expire(f"h:{i % 10}", 3600)
        pipe.delete(f"key:{i:012d}")
    pipe.execute()
    wait_for(lambda: converged(cl), 60, what="all three nodes converging to one DIGEST")
    # both ways of applying ran: batches the I/O task applied itself (and wrote to the own
    # log at once) and the apply task's backlog (the pipelined burst)
    st = [repl_status(cl, nid) for nid in (2, 3)]
    assert all(s["applied_inline_batches"] > 0 for s in st), st
    assert sum(s["applied_by_task_records"] for s in st) > 0, st
    cl.stop()
    frames = {n.node_id: _log_frames(n.data_dir) for n in cl.nodes}
    assert len(frames[1]) > 20000
    assert [s for s, _ in frames[1]] == list(range(frames[1][0][0], frames[1][-1][0] + 1))
    for nid in (2, 3):
        assert frames[nid] == frames[1], f"node {nid}'s log differs from the leader's"
