"""Lag, apply delay, stopping and starting the I/O and apply tasks, and max-lag reads
(MISSION L4 operator controls)."""

from __future__ import annotations

import pytest

from tests.conftest import client, wait_for
from tests.replication.conftest import Writer, repl_status


def leader_pos(cl) -> int:
    return client(cl.node(1).port).execute_command("ROLE")[1]


def test_apply_delay_shows_lag_and_catches_up(leader_cluster):
    cl = leader_cluster(3)
    f2 = client(cl.node(2).port)
    assert f2.execute_command("REPLICA", "DELAY", "1500") == b"OK"
    assert repl_status(cl, 2)["apply_delay_ms"] == 1500
    with Writer(cl.node(1).port, rate=500):
        def lagging():
            lag = repl_status(cl, 2)["lag"]["applied"]
            return lag["entries"] > 0 and lag["seconds"] >= 1.0
        wait_for(lagging, 15, what="follower 2 lagging by about its apply delay (entries and seconds)")
        st = repl_status(cl, 2)
        assert st["received"] > st["applied"] and st["lag"]["received"]["entries"] < st["lag"]["applied"]["entries"]
        # the leader sees it too
        wait_for(lambda: [f for f in repl_status(cl, 1)["followers"] if f["node_id"] == 2][0]["lag"]["applied"]
                 ["seconds"] >= 1.0, 10, what="the leader seeing follower 2's apply lag")
    assert f2.execute_command("REPLICA", "DELAY", "0") == b"OK"
    pos = leader_pos(cl)
    wait_for(lambda: repl_status(cl, 2)["applied"] >= pos, 15, what="follower 2 catching up")
    assert repl_status(cl, 2)["lag"]["applied"] == {"entries": 0, "seconds": 0.0}
    assert f2.get("w:count") == client(cl.node(1).port).get("w:count")


def test_stop_start_apply_and_io(leader_cluster):
    cl = leader_cluster(3)
    leader = client(cl.node(1).port)
    f2 = client(cl.node(2).port)

    # STOP APPLY: records still arrive in the relay log, but are not applied
    assert f2.execute_command("REPLICA", "STOP", "APPLY") == b"OK"
    wait_for(lambda: repl_status(cl, 2)["apply_task"] == "stopped", 5, what="apply task stopped")
    leader.set("a", "1")
    pos = leader_pos(cl)
    wait_for(lambda: repl_status(cl, 2)["received"] >= pos, 10, what="follower 2 receiving while apply stopped")
    st = repl_status(cl, 2)
    assert st["applied"] < pos and st["io_task"] == "running" and st["link"] == "up"
    assert st["lag"]["applied"]["entries"] >= 1
    assert f2.get("a") is None
    assert leader.wait(2, 5000) == 2          # received counts for WAIT
    assert f2.execute_command("REPLICA", "START", "APPLY") == b"OK"
    wait_for(lambda: repl_status(cl, 2)["apply_task"] == "running", 5, what="apply task running")
    wait_for(lambda: repl_status(cl, 2)["applied"] >= pos and f2.get("a") == b"1", 10,
             what="follower 2 applying after START APPLY")

    # STOP IO: nothing more arrives
    assert f2.execute_command("REPLICA", "STOP", "IO") == b"OK"
    wait_for(lambda: repl_status(cl, 2)["io_task"] == "stopped" and repl_status(cl, 2)["link"] == "down", 5,
             what="I/O task stopped")
    wait_for(lambda: [f for f in repl_status(cl, 1)["followers"] if f["node_id"] == 2][0]["link"] == "down", 5,
             what="the leader seeing follower 2 disconnected")
    assert client(cl.node(2).port).info("replication")["master_link_status"] == "down"
    received = repl_status(cl, 2)["received"]
    leader.set("b", "2")
    assert leader.wait(2, 500) == 1            # only follower 3 gets it
    assert repl_status(cl, 2)["received"] == received
    assert f2.get("b") is None
    assert f2.execute_command("REPLICA", "START", "IO") == b"OK"
    wait_for(lambda: repl_status(cl, 2)["io_task"] == "running" and repl_status(cl, 2)["link"] == "up", 10,
             what="I/O task running again")
    pos = leader_pos(cl)
    wait_for(lambda: repl_status(cl, 2)["applied"] >= pos and f2.get("b") == b"2", 10,
             what="follower 2 catching up after START IO")
    assert leader.wait(2, 5000) == 2

    # STOP ALL / START ALL
    assert f2.execute_command("REPLICA", "STOP", "ALL") == b"OK"
    wait_for(lambda: (lambda s: s["io_task"] == s["apply_task"] == "stopped")(repl_status(cl, 2)), 5,
             what="both tasks stopped")
    leader.set("c", "3")
    assert f2.execute_command("REPLICA", "START", "ALL") == b"OK"
    wait_for(lambda: f2.get("c") == b"3", 10, what="follower 2 catching up after START ALL")
    assert repl_status(cl, 2)["full_resyncs"] == 0
    # bad arguments, and the commands on the leader
    with pytest.raises(Exception, match="IO, APPLY or ALL"):
        f2.execute_command("REPLICA", "STOP", "EVERYTHING")
    with pytest.raises(Exception, match="not a follower"):
        leader.execute_command("REPLICA", "STOP", "IO")


def test_max_lag_refuses_reads_while_behind(leader_cluster):
    cl = leader_cluster(3, extra_args={3: ["--max-lag-ms", "500"]})
    leader = client(cl.node(1).port)
    f3 = client(cl.node(3).port)
    leader.set("k", "v")
    wait_for(lambda: f3.get("k") == b"v", 10, what="reads served on follower 3")
    assert repl_status(cl, 3)["max_lag_ms"] == 500
    f3.execute_command("REPLICA", "DELAY", "1500")
    with Writer(cl.node(1).port, rate=300):
        def refused():
            try:
                f3.get("k")
            except Exception as e:  # noqa: BLE001
                return str(e)
            return None
        msg = wait_for(refused, 15, what="follower 3 refusing reads while lagging")
        assert msg.startswith("LAGGING"), msg
        assert cl.node(1).address in msg
        with pytest.raises(Exception, match="^LAGGING"):
            f3.mget("w:1", "w:2")
        # follower 2 has no bound: it keeps serving
        assert client(cl.node(2).port).get("k") == b"v"
    f3.execute_command("REPLICA", "DELAY", "0")
    pos = leader_pos(cl)
    wait_for(lambda: f3.get("w:count") == leader.get("w:count"), 15, what="follower 3 serving reads again")
    assert repl_status(cl, 3)["applied"] >= pos
