"""The position commands from redis-cli (a plain Redis client, no replikv code): LASTPOS
after a write on the same connection, POS, WAITPOS (OK, and the TIMEOUT error), and MOVED
for a key of the other partition."""

from __future__ import annotations

import re
import subprocess
import threading
import time

from replikv.server.clusterconfig import key_slot, partition_of_slot
from tests.conftest import client, wait_for
from tests.sessions.conftest import followers, set_delay

POSITION = re.compile(rb"^\d+:\d+$")


def cli(port: int, *commands: str) -> list[str]:
    """Run commands in one redis-cli session (one connection), one reply line each (redis-cli
    follows an error with an empty line: dropped; no command here replies an empty string)."""
    out = subprocess.run(["redis-cli", "-p", str(port)], input="\n".join(commands) + "\n",
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.splitlines() if line]


def key_in(partition: int, prefix: str) -> str:
    return next(k for k in (f"{prefix}{i}" for i in range(1000))
                if partition_of_slot(key_slot(k.encode()), 2) == partition)


def test_lastpos_pos_waitpos_and_moved_from_redis_cli(two_partitions):
    cl = two_partitions
    leader, follower = cl.leader(1), followers(cl, 1)[0]
    set_delay(cl, follower.node_id, 300)
    key, other = key_in(1, "cli:"), key_in(2, "cli:")

    # a fresh connection has written nothing: LASTPOS is 0:0
    assert cli(leader.port, "LASTPOS") == ["0:0"]
    set_reply, lastpos, pos = cli(leader.port, f"SET {key} hello", "LASTPOS", "POS")
    assert set_reply == "OK"
    assert POSITION.match(lastpos.encode()) and POSITION.match(pos.encode())
    epoch, seq = (int(x) for x in lastpos.split(":"))
    assert seq >= 1 and int(pos.split(":")[1]) >= seq       # the leader shows what it wrote
    # another write on the same connection moves LASTPOS on
    replies = cli(leader.port, f"SET {key} again", "LASTPOS")
    assert replies[0] == "OK" and int(replies[1].split(":")[1]) > seq

    # the delayed follower: WAITPOS returns OK once it has applied the position, then the
    # read there sees the write; a position it will not reach in time is a TIMEOUT error
    assert cli(follower.port, f"WAITPOS {replies[1]} 10000", f"GET {key}", "POS")[:2] == ["OK", "again"]
    assert int(cli(follower.port, "POS")[0].split(":")[1]) >= int(replies[1].split(":")[1])
    timeout = cli(follower.port, f"WAITPOS {epoch}:{seq + 1_000_000} 50")
    assert len(timeout) == 1 and "TIMEOUT" in timeout[0], timeout
    assert cli(follower.port, f"WAITPOS {seq} 0") == ["OK"]          # a bare seq, reached already
    assert "ERR" in cli(follower.port, "WAITPOS nonsense 10")[0]

    # a key of partition 2 on a node of partition 1: MOVED <slot> <leader of partition 2>
    moved = cli(leader.port, f"GET {other}")
    lead2 = cl.leader(2)
    assert len(moved) == 1 and f"MOVED {key_slot(other.encode())} {lead2.host}:{lead2.port}" in moved[0], moved
    assert cli(lead2.port, f"SET {other} there", f"GET {other}") == ["OK", "there"]
    wait_for(lambda: cli(followers(cl, 2)[0].port, f"GET {other}") == ["there"], 10,
             what="partition 2's follower to apply the write")


def test_pos_behind_a_held_read_reports_the_write_that_read_shows(session_cluster):
    """A read of a key whose newest write is not yet acknowledged is held until it is; a POS
    pipelined behind that read leaves after it and must report at least that write's
    position. (It once reported the visible position of the moment it ran, one write short:
    the session then trusted a follower that had not applied the write it had already seen,
    and a monotonic read went back by one.) Semi-sync with both followers paused holds the
    write and the read deterministically, for the whole ack timeout."""
    cl = session_cluster(3, ack="semi-sync:1", ack_timeout_ms=60_000)
    leader = cl.leader(1)
    writer, reader = client(leader.port), client(leader.port)
    writer.set("held", "old")
    cl.pause(2)
    cl.pause(3)
    try:
        out: dict = {}
        t = threading.Thread(target=lambda: out.update(set=writer.set("held", "new"), lastpos=writer.execute_command("LASTPOS")))
        t.start()
        def held() -> bool:
            st = cl.http_get(leader, "/status")
            return st["last_seq"] > st["visible_seq"]

        wait_for(held, 10, what="the SET to wait for a follower's ack")
        pipe = reader.pipeline(transaction=False)
        pipe.get("held")
        pipe.execute_command("POS")
        got: dict = {}
        r = threading.Thread(target=lambda: got.update(res=pipe.execute()))
        r.start()
        time.sleep(0.3)
        assert t.is_alive() and r.is_alive(), "the write and the read wait for a follower's ack"
    finally:
        cl.resume(2)
        cl.resume(3)
    t.join(30)
    r.join(30)
    assert out["set"] is True and got["res"][0] == b"new"
    write_seq = int(out["lastpos"].decode().split(":")[1])
    pos_seq = int(got["res"][1].decode().split(":")[1])
    assert pos_seq >= write_seq, (pos_seq, write_seq)
