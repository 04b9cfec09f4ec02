"""Manual switchover and manual-only failover (MISSION L5, must-show 4).

- ``replikv failover --to 2`` and then the FAILOVER command, both under write load: no
  acknowledged write is lost; writes during the handover wait or get TRYAGAIN (or a
  READONLY redirect once it is done), never vanish silently; nothing is rolled back.
- ``auto_failover = false``: the leader killed, no node becomes leader by itself (several
  election timeouts), the followers still serve reads, and ``replikv failover`` says that no
  node leads; ``replikv failover --force`` then promotes a follower by an election.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
import redis

from tests.conftest import client, wait_for
from tests.failover.conftest import (
    Writers,
    assert_all_acked_present,
    converged,
    leader_among,
    metric,
    role,
    status,
    try_status,
)

HANDOVER_ERRORS = {"TRYAGAIN", "READONLY", "NOTACKED", "NOLEASE"}


def replikv(*args, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "replikv", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_switchover_under_load_loses_no_acknowledged_write(failover_cluster):
    cl = failover_cluster(3, ack="semi-sync:1", ack_timeout_ms=5000)
    with Writers(cl, threads=4, prefix="s") as w:
        w.wait_acked_by(1, 200)
        out = replikv("failover", "--data-dir", cl.root, "--to", "2")
        assert out.returncode == 0, out.stderr
        assert "node 2 leads epoch 1" in out.stdout, out.stdout
        assert leader_among(cl, [2]) == 2
        w.wait_acked_by(2, 200)

        # and once more, with the FAILOVER command (no target: the most up to date follower)
        reply = client(cl.node(2).port, socket_timeout=30).execute_command("FAILOVER", "TIMEOUT", "10000")
        third = int(reply.decode().split()[1])
        assert third in (1, 3) and "leads epoch 2" in reply.decode(), reply
        w.wait_acked_by(third, 200)
    print(f"acked {len(w.acked)} (node 1: {w.acked_by(1)}, node 2: {w.acked_by(2)}, node {third}: "
          f"{w.acked_by(third)}), unknown {len(w.unknown)} {dict(w.errors)}")
    assert set(w.errors) <= HANDOVER_ERRORS, w.samples
    assert status(cl, third)["role"] == "leader" and status(cl, third)["epoch"] == 2
    for i in (1, 2, 3):
        if i != third:
            assert role(cl, i) == b"slave"
    wait_for(lambda: converged(cl, third, [1, 2, 3]), 30, what="DIGEST equal on all nodes")
    for i in (1, 2, 3):
        assert_all_acked_present(cl, i, w.acked)
        # a switchover rolls nothing back
        assert status(cl, i)["lost_records"] == 0
        assert metric(cl, i, "replikv_lost_writes_total") == 0


def test_no_failover_by_itself_when_auto_failover_is_off(failover_cluster):
    cl = failover_cluster(3, ack="semi-sync:1", auto_failover=False, election_timeout_ms=500)
    assert status(cl, 2)["auto_failover"] is False
    r = client(cl.node(1).port)
    for i in range(20):
        assert r.set(f"m:{i}", f"v{i}") is True
    wait_for(lambda: converged(cl, 1, [1, 2, 3]), 20, what="followers caught up")
    cl.kill(1)

    # several election timeouts (drawn in [500, 1000) ms): no one stands, no one leads
    end = time.monotonic() + 3 * 2 * 0.5 + 1
    while time.monotonic() < end:
        for i in (2, 3):
            st = try_status(cl, i)
            assert st is not None
            assert st["role"] == "follower" and st["election_role"] == "follower", st
            assert st["epoch"] == 0 and st["leader_id"] == 1, st
        time.sleep(0.1)
    assert leader_among(cl, [2, 3]) is None
    for i in (2, 3):
        assert metric(cl, i, "replikv_is_leader") == 0
        assert metric(cl, i, "replikv_leader_elections_won_total") == 0
        ri = client(cl.node(i).port)
        assert role(cl, i) == b"slave"
        # the followers still serve reads, and refuse writes
        assert ri.mget([f"m:{j}" for j in range(20)]) == [f"v{j}".encode() for j in range(20)]
        with pytest.raises(redis.ReadOnlyError):
            ri.set("m:new", "x")
    # a manual switchover needs a leader to hand over from
    out = replikv("failover", "--data-dir", cl.root, "--to", "2")
    assert out.returncode == 2 and "no node currently leads" in out.stderr, (out.returncode, out.stderr)
    assert "--force" in out.stderr

    # bad FAILOVER input gets a clear error and starts nothing
    r2 = client(cl.node(2).port)
    for bad, says in ((["FORCE", "TIMEOUT", "0"], "positive"), (["FORCE", "TIMEOUT", "-5"], "positive"),
                      (["FORCE", "TO", "3"], "takes no to"), (["TIMEOUT", "x"], "not an integer"),
                      (["SOON"], "syntax"), (["TO", "3"], "must be sent to the leader")):
        with pytest.raises(redis.ResponseError) as e:
            r2.execute_command("FAILOVER", *bad)
        assert says in str(e.value).lower(), (bad, str(e.value))
    assert leader_among(cl, [2, 3]) is None

    # the operator promotes a follower: an election all the same (pre-vote, log freshness)
    out = replikv("failover", "--data-dir", cl.root, "--force")
    assert out.returncode == 0, (out.stdout, out.stderr)
    lead = leader_among(cl, [2, 3])
    assert lead is not None and f"node {lead} leads epoch 1" in out.stdout, (lead, out.stdout)
    rl = client(cl.node(lead).port)
    assert rl.mget([f"m:{j}" for j in range(20)]) == [f"v{j}".encode() for j in range(20)]
    assert rl.set("m:new", "x") is True
    # the old leader comes back as a follower of the new one
    cl.start_node(cl.node(1))
    wait_for(lambda: converged(cl, lead, [1, 2, 3]), 30, what="DIGEST equal on all nodes")
    assert role(cl, 1) == b"slave"
    # with a leader, --force is refused
    out = replikv("failover", "--data-dir", cl.root, "--force")
    assert out.returncode == 2 and "needs no --force" in out.stderr, (out.returncode, out.stderr)


def test_exec_after_the_leader_stepped_down_runs_nothing(failover_cluster):
    """MULTI and a write queued on the leader, EXEC sent once it has handed over (a
    switchover): EXECABORT with the READONLY reason, as Redis answers EXEC with a write on a
    read-only replica, and the write is nowhere. (EXEC ran the queued commands without the
    role and lease checks: the write landed in the old leader's log, now a follower's,
    where the new leader's record of the same position belongs.)"""
    cl = failover_cluster(3, ack="semi-sync:1")
    assert client(cl.node(1).port).set("before", "1")
    sock = socket.create_connection(("127.0.0.1", cl.node(1).port), timeout=30)
    f = sock.makefile("rb")

    def call(*args: bytes) -> bytes:
        sock.sendall(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
        return f.readline()

    assert call(b"MULTI") == b"+OK\r\n"
    assert call(b"SET", b"tx", b"1") == b"+QUEUED\r\n"
    out = replikv("failover", "--data-dir", cl.root, "--to", "2")
    assert out.returncode == 0, out.stderr
    assert leader_among(cl, [2]) == 2
    reply = call(b"EXEC")
    assert reply.startswith(b"-EXECABORT Transaction discarded because of: READONLY"), reply
    assert call(b"GET", b"before") == b"$1\r\n" and f.readline() == b"1\r\n"   # out of MULTI
    sock.close()
    assert client(cl.node(2).port).set("after", "2")
    wait_for(lambda: converged(cl, 2, [1, 2, 3]), 30, what="DIGEST equal on all nodes")
    for i in (1, 2, 3):
        assert client(cl.node(i).port).get("tx") is None
        assert status(cl, i)["lost_records"] == 0


@pytest.mark.parametrize("auto_failover", [True, False])
def test_a_leader_that_handed_over_serves_no_leader_reads(failover_cluster, auto_failover):
    """Once a switchover's handover (timeout_now) may have reached the target, the target can
    be elected at once: its voters skip stickiness for a handover, while the old leader's
    lease still stands on their earlier acks. From then on the old leader must not answer
    leader reads as if it still led. Here the target is frozen, so the handover hangs
    (2 s, then the switchover fails): reads on the old leader meanwhile get TRYAGAIN; after
    the failure it stops leading and stands again at once in a new epoch, also with
    automatic failover off (where nothing else would ever elect a leader again)."""
    import threading

    cl = failover_cluster(3, ack="async", auto_failover=auto_failover)
    r = client(cl.node(1).port)
    assert r.set("k", "v") is True
    wait_for(lambda: converged(cl, 1, [1, 2, 3]), 20, what="followers caught up")
    last = int(r.execute_command("ROLE")[1])

    def target_acked():
        f2 = [f for f in status(cl, 1)["followers"] if f["node_id"] == 2]
        return f2 and f2[0]["received"] >= last and f2[0]["applied"] >= last

    # the switchover waits for the target to catch up first: let it be caught up as the
    # leader sees it, so the handover itself is what hangs
    wait_for(target_acked, 20, what="the leader seeing node 2 caught up")
    cl.pause(2)
    try:
        result = {}

        def failover():
            try:
                result["reply"] = client(cl.node(1).port, socket_timeout=30).execute_command(
                    "FAILOVER", "TO", "2", "TIMEOUT", "5000")
            except redis.ResponseError as e:
                result["error"] = str(e)

        t = threading.Thread(target=failover, daemon=True)
        t.start()
        # the handover waits up to 2 s for the frozen target: read while it is out
        wait_for(lambda: status(cl, 1).get("handed_over"), 10, interval=0.01, what="the handover sent")
        with pytest.raises(redis.ResponseError) as e:
            client(cl.node(1).port).get("k")
        assert "TRYAGAIN" in str(e.value) or isinstance(e.value, redis.exceptions.TryAgainError), e.value
        with pytest.raises(redis.ResponseError) as e:     # one switchover at a time
            client(cl.node(1).port).execute_command("FAILOVER", "TO", "3")
        # (unless the 2 s handover window closed meanwhile on a loaded machine: it stood again)
        assert "already in progress" in str(e.value) or not status(cl, 1).get("switching"), e.value
        t.join(30)
        assert "switchover failed" in result.get("error", ""), result
    finally:
        # the target dies frozen: no late handover ever elects it
        cl.kill(2)
    lead = wait_for(lambda: leader_among(cl, [1, 3]), 30, what="a leader after the failed switchover")
    assert status(cl, lead)["epoch"] >= 1        # a new epoch: a late handover of epoch 0 is fenced
    cl.start_node(cl.node(2))
    wait_for(lambda: converged(cl, lead, [1, 2, 3]), 30, what="DIGEST equal on all nodes")
    assert client(cl.node(lead).port).get("k") == b"v"
    assert client(cl.node(lead).port).set("k", "after") is True


def test_a_forced_election_beside_a_leader_cut_off_ends_when_the_partition_heals(failover_cluster):
    """Automatic failover off; the leader is cut off from both followers but lives on (with
    manual failover it needs no lease, as a MySQL semi-sync source, so it goes on taking
    writes). The operator forces an election on the other side: ``replikv failover --force``
    warns that node 1 does not answer, and a follower wins. Once the partition heals, the
    old leader learns of the newer epoch by itself (it asks now and then), steps down, and
    what it took meanwhile goes to its lost-writes.jsonl."""
    cl = failover_cluster(3, ack="async", auto_failover=False, election_timeout_ms=500, links=True)
    r1 = client(cl.node(1).port)
    assert r1.set("k", "before") is True
    wait_for(lambda: converged(cl, 1, [1, 2, 3]), 20, what="followers caught up")
    cl.net.cut(1, 2)
    cl.net.cut(1, 3)
    # the CLI reaches node 1 over HTTP: it would refuse --force while node 1 answers as
    # leader, so the operator names the node to promote on the majority side directly
    out = client(cl.node(2).port, socket_timeout=30).execute_command("FAILOVER", "FORCE", "TIMEOUT", "20000")
    assert out.startswith(b"node ") and b" leads epoch 1" in out, out
    lead = leader_among(cl, [2, 3])
    assert lead is not None
    assert r1.set("k", "cut off") is True          # manual mode: the old leader still takes writes
    assert client(cl.node(lead).port).set("k", "after") is True
    cl.net.heal(1, 2)
    cl.net.heal(1, 3)
    wait_for(lambda: converged(cl, lead, [1, 2, 3]), 30, what="the old leader following the new one")
    assert client(cl.node(1).port).get("k") == b"after"
    assert status(cl, 1)["lost_records"] >= 1
