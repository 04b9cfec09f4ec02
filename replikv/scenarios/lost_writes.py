"""Acknowledged writes lost when an asynchronous leader dies before its followers had them."""

from __future__ import annotations

import json
import os
import threading

import redis

from ..storage.rollback import LOST_WRITES_FILE
from ._base import Result, Run, client, leader_among, repl, scenario, streaming, wait_for

BURST = 30


def _lost_rows(cl, node_id: int) -> list[dict]:
    path = os.path.join(cl.node(node_id).data_dir, LOST_WRITES_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _round(run: Run, cl, expect_acks: bool) -> dict:
    """Orders paid, followers cut off from the stream, a burst of orders, the leader killed."""
    r = client(cl.node(1).port)
    paid = {f"order:{i}": f"paid {i}" for i in range(20)}
    assert r.mset(paid) is True
    wait_for(lambda: all((repl(cl, i) or {}).get("applied", 0) >= 1 for i in (2, 3)), 15, "followers applying")
    run.step("20 orders are paid and replicated. Now both followers stop receiving (REPLICA STOP IO), as when "
             "their network is slow")
    for i in (2, 3):
        client(cl.node(i).port).execute_command("REPLICA", "STOP", "IO")
    base = cl.http_get(cl.node(1), "/status")["last_seq"]
    burst = {f"order:{i}": f"paid {i}" for i in range(20, 20 + BURST)}
    replies: list = []

    def send():
        # one pipeline: the whole burst is on the leader at once, whether or not replies wait
        p = client(cl.node(1).port, timeout=30).pipeline(transaction=False)
        for k, v in burst.items():
            p.set(k, v)
        try:
            replies.extend(zip(burst, p.execute(raise_on_error=False), strict=True))
        except (redis.ConnectionError, redis.TimeoutError) as e:
            replies.extend((k, e) for k in burst)

    t = threading.Thread(target=send, daemon=True)
    t.start()
    wait_for(lambda: cl.http_get(cl.node(1), "/status", timeout=1)["last_seq"] >= base + BURST, 15,
             "the leader holding the whole burst")
    if expect_acks:
        wait_for(lambda: not t.is_alive(), 15, "the burst acknowledged")
    acked_now = sum(1 for _, v in replies if v is True)
    run.step(f"a client sends {BURST} more orders to the leader; {acked_now} of them are acknowledged "
             + ("at once: the leader has them, that is enough under async" if acked_now else
                "so far: the replies wait, no follower has them"))
    run.step("kill -9 the leader (node 1) before the followers get them")
    cl.kill(1)
    t.join(30)
    acked = dict(paid, **{k: burst[k] for k, v in replies if v is True})
    unknown = [k for k, v in replies if v is not True]
    if unknown:
        run.show(f"{len(unknown)} writes got no reply (the connection died: their outcome is unknown to the "
                 f"client, which must not count them as done)")
    for i in (2, 3):
        client(cl.node(i).port).execute_command("REPLICA", "START", "IO")
    new = wait_for(lambda: leader_among(cl, [2, 3]), 30, "a new leader")
    rn = client(cl.node(new).port)
    keys = sorted(acked) or ["order:0"]
    got = dict(zip(keys, rn.mget(keys), strict=True))
    missing = [k for k in acked if got.get(k) != acked[k].encode()]
    run.show(f"node {new} leads epoch {repl(cl, new)['epoch']}. Of the {len(acked)} orders acknowledged to the "
             f"client, {len(missing)} are missing on it"
             + (f" (e.g. {', '.join(missing[:3])})" if missing else ""))
    run.step("restart node 1: it rejoins as a follower of the new leader and rolls back what the new leader "
             "never had")
    cl.start_node(cl.node(1))
    wait_for(lambda: (repl(cl, 1) or {}).get("leader_id") == new and streaming(cl, new, [1, 2, 3]), 30,
             "node 1 following the new leader")
    rows = _lost_rows(cl, 1)
    lost_keys = {row.get("key") for row in rows}
    lost_acked = sorted(k for k in lost_keys if k in acked)
    run.show(f"node 1's {LOST_WRITES_FILE}: {len(lost_keys)} write(s) rolled back, {len(lost_acked)} of them had "
             f"been acknowledged to the client")
    for row in rows[:2]:
        run.show("  " + json.dumps({k: row[k] for k in ("key", "value", "position", "epoch") if k in row}))
    return {"acknowledged": len(acked), "unknown": len(unknown), "missing_on_new_leader": len(missing),
            "new_leader": new, "lost_file_rows": len(rows), "lost_keys": len(lost_keys),
            "lost_acknowledged": len(lost_acked)}


@scenario(
    "lost-writes",
    title="acknowledged writes lost on failover (async replication)",
    seeds="""With asynchronous replication the leader confirms a write before any follower has it. If
    the leader fails, the new leader may lack the old leader's last writes; when the old leader
    comes back, the usual answer is to discard them, which breaks the client's expectation of
    durability (and is dangerous when other systems saw them, as in the GitHub incident).
    Semi-synchronous replication confirms a write only once a follower has received it.""",
    mechanism="ack semi-sync:1 (leader + one follower = a majority of 3; the election picks the freshest log): "
              "no acknowledged write lost",
    order=30)
def lost_writes(run: Run) -> Result:
    run.heading("Without the mechanism: ack async")
    without = _round(run, run.cluster(3, ack="async"), expect_acks=True)
    run.beat()
    run.heading("With the mechanism: ack semi-sync:1 (a follower must have the write before the client hears OK)")
    with_ = _round(run, run.cluster(3, ack="semi-sync:1", ack_timeout_ms=10_000), expect_acks=False)
    run.say(f"Async: {without['missing_on_new_leader']} acknowledged orders vanished with the failover; node 1 kept "
            f"them aside in {LOST_WRITES_FILE} ({without['lost_keys']} keys). Semi-sync: the burst was never "
            f"acknowledged ({with_['unknown']} replies cut off by the crash, outcome unknown); "
            f"{with_['missing_on_new_leader']} acknowledged writes missing, and the {with_['lost_keys']} writes "
            f"node 1 rolled back include {with_['lost_acknowledged']} acknowledged ones.")
    return Result("lost-writes", without["missing_on_new_leader"] > 0,
                  with_["missing_on_new_leader"] > 0 or with_["lost_acknowledged"] > 0,
                  {"async": without, "semi_sync": with_})
