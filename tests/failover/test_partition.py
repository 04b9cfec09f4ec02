"""The leader cut off from both followers (MISSION L5, must-show 3): by SIGSTOP, and by a real
link cut (its peer links dropped by proxies while it keeps running and clients still reach
it). The majority elects a new leader; the old one never acknowledges a write in its old
epoch once the new leader exists (its lease has run out: NOLEASE, then READONLY once it
learns the new epoch), becomes a follower when the partition ends, and converges. Every
acknowledged write is stamped with the epoch of the node that acknowledged it: no two nodes
acknowledged writes in the same epoch.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import pytest
import redis

from tests.conftest import client, wait_for
from tests.failover.conftest import (
    StaleClient,
    Writers,
    assert_one_leader_per_epoch,
    converged,
    error_kind,
    leader_among,
    role,
    status,
    try_status,
    wait_leader_among,
)

REFUSALS = {"NOLEASE", "READONLY", "LOADING"}   # LOADING: while it rolls back
MARGIN = 0.5     # seconds a reply may take to reach the test's threads (scheduling on a busy machine)


def probe_writes(cl, node_id: int, n: int, out: list) -> list[threading.Thread]:
    """``n`` writes on fresh connections to ``node_id``, each in its own thread (a paused node
    answers only when it resumes); appends (t_sent, outcome) to ``out``."""

    def one(i):
        r = client(cl.node(node_id).port, socket_timeout=60)
        t = time.monotonic()
        try:
            outcome = "OK" if r.set(f"probe:{i}", "x") is True else "?"
        except (redis.ResponseError, redis.ConnectionError, redis.TimeoutError) as e:
            outcome = error_kind(e)
        out.append((t, outcome))

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    return threads


def cut_off_with_an_unacked_write(cl, key: str) -> int:
    """Cut node 1 (the leader) off from both followers and send it a write that no follower
    can acknowledge: its client gets NOTACKED (outcome unknown) once the lease runs out.
    Returns the new leader elected among nodes 2 and 3."""
    cl.net.cut(1, 2)
    cl.net.cut(1, 3)
    with pytest.raises(redis.ResponseError) as e:
        client(cl.node(1).port, socket_timeout=30).set(key, "unacked")
    assert "NOTACKED" in str(e.value), str(e.value)
    return wait_leader_among(cl, [2, 3])


def read_on(cl, node_id: int, key: str):
    """GET with a 1 s timeout: the value, or the kind of error (a held read times out)."""
    try:
        return client(cl.node(node_id).port, socket_timeout=1.0).get(key)
    except (redis.TimeoutError, redis.ResponseError) as err:
        return error_kind(err)


@pytest.mark.parametrize("ack", ["async", "semi-sync:1"])
@pytest.mark.parametrize("how", ["sigstop", "link-cut"])
def test_isolated_leader_is_replaced_and_fenced(failover_cluster, how, ack):
    cl = failover_cluster(3, ack=ack, links=how == "link-cut")
    w = Writers(cl, threads=3, prefix="p", track_epoch=True)
    stale = StaleClient(cl, 1)
    probes: list = []
    with w:
        w.wait_acked_by(1, 50)
        stale.start()
        wait_for(lambda: any(r[4] == "OK" for r in stale.results), 10, what="the stale client writing")
        t_iso = time.monotonic()
        if how == "sigstop":
            cl.pause(1)
        else:
            cl.net.cut(1, 2)
            cl.net.cut(1, 3)
        new = wait_leader_among(cl, [2, 3])
        t_new = time.monotonic()
        new_epoch = status(cl, new)["epoch"]
        assert new_epoch >= 1
        w.wait_acked_by(new, 50)
        probe_threads = probe_writes(cl, 1, 5, probes)
        if how == "link-cut":
            # running but cut off: it cannot even learn the new epoch; it refuses (no lease)
            st1 = status(cl, 1)
            assert st1["epoch"] < new_epoch and not (st1["role"] == "leader" and st1["lease"]), st1
            wait_for(lambda: any(r[2] > t_new and r[4] != "OK" for r in stale.results), 10,
                     what="the old leader refusing the stale client")
            cl.net.heal(1, 2)
            cl.net.heal(1, 3)
        else:
            cl.resume(1)
        for t in probe_threads:
            t.join(60)
        wait_for(lambda: status(cl, 1)["role"] == "follower" and status(cl, 1)["leader_id"] == new
                 and role(cl, 1) == b"slave", 30, what="the old leader following the new one")
        w.wait_acked_by(new, w.acked_by(new) + 20)
    stale.stop()
    assert status(cl, 1)["epoch"] >= new_epoch
    wait_for(lambda: converged(cl, new, [1, 2, 3]), 30, what="DIGEST equal on all nodes")

    # the old leader refused everything sent to it once it had been cut off long enough for the
    # new leader to exist (sigstop: anything sent while paused is handled after SIGCONT)
    cutoff = t_iso + 0.1 if how == "sigstop" else t_new
    late = [r for r in stale.results if r[2] > cutoff]
    assert late, "the stale client sent nothing to the old leader while it was cut off"
    print(f"{how}/{ack}: stale client after the cut-off: "
          f"{sorted(set(r[4] for r in late))}; probes: {sorted(set(p[1] for p in probes))}; "
          f"writers: acked {len(w.acked)}, unknown {dict(w.errors)}")
    assert len(probes) == 5 and all(p[1] in REFUSALS for p in probes), probes
    bad = [r for r in late if r[4] not in REFUSALS | {"ConnectionError", "TimeoutError"}]
    assert not bad, bad[:5]
    bad = [a for a in w.acked.values() if a.node == 1 and a.t_sent > cutoff]
    assert not bad, bad[:5]
    # no acknowledgement from the old leader reached anyone after the new leader existed
    late_ok = [r for r in stale.results if r[4] == "OK" and r[3] > t_new + MARGIN]
    late_ok += [a for a in w.acked.values() if a.node == 1 and a.t > t_new + MARGIN]
    assert not late_ok, late_ok[:5]

    # one leader per epoch among all acknowledged writes
    owners = assert_one_leader_per_epoch(list(w.acked.values()))
    assert owners.get(0) == {1} and owners.get(new_epoch) == {new}, owners

    # every acknowledged write is in the converged data, or (async: acknowledged by the old
    # leader before it was cut off, never replicated) in its lost-writes.jsonl: never silently gone
    path = os.path.join(cl.node(1).data_dir, "lost-writes.jsonl")
    lost = {}
    if os.path.exists(path):
        with open(path) as fh:
            lost = {row["key"]: row for row in map(json.loads, fh)}
    acked = {k: (a.value, a.node, round(a.t_sent - t_iso, 3), round(a.t - t_iso, 3)) for k, a in w.acked.items()}
    acked.update({r[0]: (r[1], 1, round(r[2] - t_iso, 3), round(r[3] - t_iso, 3)) for r in stale.results
                  if r[4] == "OK"})
    r = client(cl.node(new).port)
    keys = sorted(acked)
    gone = [k for k, v in zip(keys, r.mget(keys), strict=True) if v is None or v.decode() != acked[k][0]]
    for k in gone:
        assert k in lost and lost[k]["value"] == acked[k][0] and acked[k][1] == 1, (k, acked[k], lost.get(k))
    if ack != "async":
        assert not gone, (f"{len(gone)} write(s) acknowledged under {ack} were lost (value, node, sent, acked, "
                          f"seconds after the cut; new leader seen at {t_new - t_iso:.3f}): "
                          f"{[(k, acked[k]) for k in gone[:5]]}")


def test_old_leader_rolled_back_reports_no_phantom_lag(failover_cluster):
    """The old leader, paused with writes its followers never received, resumes, steps down
    and rolls them back: as a follower it is caught up (streaming, no lag), although the new
    leader's log is shorter than the one it led with."""
    cl = failover_cluster(3, ack="async", election_timeout_ms=2000)
    r = client(cl.node(1).port)
    for i in range(10):
        assert r.set(f"pre:{i}", i) is True
    wait_for(lambda: converged(cl, 1, [1, 2, 3]), 20, what="followers caught up")
    for i in (2, 3):
        client(cl.node(i).port).execute_command("REPLICA", "STOP", "IO")
    for i in range(20):
        assert r.set(f"burst:{i}", i) is True
    cl.pause(1)
    for i in (2, 3):
        client(cl.node(i).port).execute_command("REPLICA", "START", "IO")
    new = wait_leader_among(cl, [2, 3])
    rn = client(cl.node(new).port)
    for i in range(5):
        assert rn.set(f"new:{i}", i) is True
    cl.resume(1)
    wait_for(lambda: converged(cl, new, [1, 2, 3]), 30, what="DIGEST equal on all nodes")
    last = rn.execute_command("ROLE")[1]
    st1 = status(cl, 1)
    assert st1["lost_records"] == 20 and st1["applied"] == last < 30, st1
    assert st1["leader_last"] == last and st1["state"] == "streaming", st1
    assert st1["lag"]["applied"]["entries"] == 0, st1


@pytest.mark.parametrize("ack", ["async", "semi-sync:1"])
def test_no_ok_from_a_leader_whose_lease_ran_out_before_replying(failover_cluster, ack):
    """A leader runs a write, then stops for longer than its lease before the reply leaves
    (here DEBUG SLEEP pipelined behind it; in life a SIGSTOP or a starved loop). Meanwhile
    the followers may elect a new leader that lacks the write, so the reply must not be OK:
    it is NOTACKED (outcome unknown). The sleep's own reply is not a write's and stays OK."""
    import socket

    cl = failover_cluster(3, ack=ack)
    port = cl.node(1).port
    assert client(port).set("before", "1")
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        s.sendall(b"*3\r\n$3\r\nSET\r\n$6\r\nfenced\r\n$1\r\n1\r\n"
                  b"*3\r\n$5\r\nDEBUG\r\n$5\r\nSLEEP\r\n$3\r\n2.5\r\n")
        got = b""
        while got.count(b"\r\n") < 2:
            chunk = s.recv(4096)
            assert chunk, got
            got += chunk
    finally:
        s.close()
    first, second = got.split(b"\r\n")[:2]
    if ack == "async":
        assert first.startswith(b"-NOTACKED "), got
    else:
        # semi-sync: the reply waited for a follower's ack; it came before the sleep ended
        # (the write reached a follower) or it did not (NOTACKED): never an OK decided late
        assert first == b"+OK" or first.startswith(b"-NOTACKED "), got
    assert second == b"+OK", got


def test_a_stepped_down_leader_hides_its_unacknowledged_tail(failover_cluster):
    """The old leader logged a write no follower acknowledged (its client got NOTACKED: the
    outcome is unknown). Once it learns the new epoch it steps down; until its start plan
    with the next leader is done, a read on it must not show that write unless the write
    survives in the end (the old leader may itself win a later epoch with it, and then it
    is committed). The new leader is kept frozen meanwhile, so the old one knows of it
    (from the other follower) but cannot follow it yet. (Today nothing moves a follower's
    visibility in that window unless a log write lands in it, e.g. records appended in the
    very loop iteration of the step-down; the cap, Replication.visible_cap, makes the rule
    hold whatever runs: tests/replication/test_visible_cap.py checks the cap itself.)"""
    cl = failover_cluster(3, ack="semi-sync:1", ack_timeout_ms=5000, links=True)
    assert client(cl.node(1).port).set("k", "old")
    wait_for(lambda: converged(cl, 1, [1, 2, 3]), 30, what="DIGEST equal on all nodes")
    new = cut_off_with_an_unacked_write(cl, "k")
    cl.pause(new)
    try:
        cl.net.heal(1, 2)
        cl.net.heal(1, 3)
        wait_for(lambda: status(cl, 1)["role"] == "follower", 30, what="the old leader stepping down")
        got = read_on(cl, 1, "k")     # held (it waits for the start plan), refused, or a value
    finally:
        cl.resume(new)

    def settled():
        # whoever leads now (the other follower may have won while the new leader was frozen,
        # or the old leader itself, with its unacknowledged write)
        lead = leader_among(cl, [1, 2, 3])
        return lead if lead and converged(cl, lead, [1, 2, 3]) else None

    lead = wait_for(settled, 30, what="one leader, DIGEST equal on all nodes")
    final = client(cl.node(lead).port).get("k")
    assert final in (b"old", b"unacked"), final
    assert all(client(cl.node(i).port).get("k") == final for i in (1, 2, 3))
    # a read never showed a value that did not survive
    assert got != b"unacked" or final == b"unacked", (got, final)
    if final == b"old":
        assert status(cl, 1)["lost_records"] >= 1


def test_a_rejoining_old_leader_is_never_counted_past_what_it_was_sent(failover_cluster):
    """The old leader rejoins with an unacknowledged tail and rolls it back; the rollback
    rebuilds its keyspace from its log (100k records here: it takes a while). Meanwhile its
    tick acks still state its old position, one record past the new leader's log. The new
    leader must never count it further than what it sent it (ROLE, read in one reply: no
    follower beyond the leader's own last position), or semi-sync would acknowledge the
    next write on the strength of a record of another history."""
    cl = failover_cluster(3, ack="semi-sync:1", ack_timeout_ms=5000, links=True)
    out = subprocess.run(["redis-benchmark", "-p", str(cl.node(1).port), "-t", "set", "-n", "100000",
                          "-P", "16", "-c", "10", "-d", "10", "-r", "100000", "-q"],
                         capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    wait_for(lambda: converged(cl, 1, [1, 2, 3]), 60, what="DIGEST equal on all nodes")
    new = cut_off_with_an_unacked_write(cl, "tail")
    r = client(cl.node(new).port, protocol=2)
    cl.net.heal(1, 2)
    cl.net.heal(1, 3)
    beyond = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        role_reply = r.execute_command("ROLE")
        last = int(role_reply[1])
        for _host, port, received in role_reply[2]:
            if int(received) > last:
                beyond.append((int(port), int(received), last))
        st1 = try_status(cl, 1)
        if st1 and st1["role"] == "follower" and st1["lost_records"] >= 1 and st1["leader_id"] == new \
                and any(int(p) == cl.node(1).port for _, p, _ in role_reply[2]):
            break
        time.sleep(0.005)
    assert status(cl, 1)["lost_records"] >= 1
    assert not beyond, beyond[:5]


def test_a_restarted_old_leader_hides_its_unacknowledged_tail(failover_cluster):
    """The leader logs a write no follower acknowledged (NOTACKED: the outcome is unknown),
    is killed with SIGKILL and restarted while still cut off. Its log holds the write; until
    a leader's welcome tells it what survives, a read on it must not show that write unless
    the write survives in the end. The new leader writes in its own epoch first, so the old
    one cannot win a later election with its tail: the write is rolled back, and a read
    that showed it would have shown a value no other node ever had. The old leader lives on
    past its semi-sync timeout (2 s, after its lease ran out at 0.85 s) and the saving of
    its commit point: the fallback to async must not make the write count as shown."""
    cl = failover_cluster(3, ack="semi-sync:1", ack_timeout_ms=2000, links=True)
    assert client(cl.node(1).port).set("k", "old")
    wait_for(lambda: converged(cl, 1, [1, 2, 3]), 30, what="DIGEST equal on all nodes")
    new = cut_off_with_an_unacked_write(cl, "k")
    assert client(cl.node(new).port).set("other", "new epoch")
    time.sleep(3.5)     # past the ack timeout, and a commit-point save after it
    cl.kill(1)
    cl.start_node(cl.node(1))
    got = read_on(cl, 1, "k")     # held until a leader says what survives, refused, or a value
    cl.net.heal(1, 2)
    cl.net.heal(1, 3)
    wait_for(lambda: converged(cl, new, [1, 2, 3]), 60, what="DIGEST equal on all nodes")
    final = client(cl.node(new).port).get("k")
    assert final == b"old", final
    assert client(cl.node(1).port).get("k") == b"old"
    assert status(cl, 1)["lost_records"] >= 1
    # a read never showed a value that did not survive
    assert got != b"unacked", got
