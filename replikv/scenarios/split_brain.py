"""Split brain: the leader is partitioned away, the majority elects another; two leaders?"""

from __future__ import annotations

import redis

from ..cluster.agent import FaultClient
from ._base import Result, Run, caught_up, client, leader_among, repl, scenario, streaming, wait_for


def _attempt(fn):
    """(answer, error text): what a client of the old leader gets."""
    try:
        return fn(), None
    except redis.ResponseError as e:
        return None, str(e)


def _round(run: Run, allow_stale_reads: bool) -> dict:
    cl = run.cluster(3, ack="async", net_faults=True, allow_stale_reads=allow_stale_reads)
    fc = FaultClient.for_cluster(cl)
    r1 = client(cl.node(1).port)
    acks: list[tuple[int, int, str]] = []        # (node, epoch, value) of every acknowledged write
    assert r1.set("balance", "100") is True
    acks.append((1, repl(cl, 1)["epoch"], "100"))
    r1.execute_command("WAIT", 2, 5000)
    run.step("balance = 100, on every node. Now the network partitions: node 1 (the leader) is cut off from "
             "nodes 2 and 3 (their links silently drop everything); clients can still reach node 1")
    fc.partition([1])
    new = wait_for(lambda: leader_among(cl, [2, 3]), 30, "the majority electing a leader")
    rn = client(cl.node(new).port)
    assert rn.set("balance", "50") is True
    epoch_new = repl(cl, new)["epoch"]
    acks.append((new, epoch_new, "50"))
    run.show(f"the majority side elected node {new} (epoch {epoch_new}); a client sets balance = 50 there: OK")
    role1 = r1.execute_command("ROLE")[0].decode()
    st1 = repl(cl, 1) or {}
    run.show(f"node 1 has heard of no new epoch; it still says ROLE {role1!r} (epoch {st1.get('epoch')}, "
             f"lease: {st1.get('lease')})")
    read, read_err = _attempt(lambda: r1.get("balance"))
    wrote, write_err = _attempt(lambda: r1.set("balance", "70"))
    if read is not None:
        run.show(f"GET balance on node 1: {read.decode()!r}   <- a second 'leader' answering with data the real "
                 f"leader has already changed")
    else:
        run.show(f"GET balance on node 1: {read_err}")
    if wrote:
        acks.append((1, (repl(cl, 1) or {}).get("epoch"), "70"))
        run.show("SET balance 70 on node 1: OK   <- TWO LEADERS ACKNOWLEDGING WRITES")
    else:
        run.show(f"SET balance 70 on node 1: {write_err}")
    run.step("the partition heals")
    fc.heal()
    wait_for(lambda: (repl(cl, 1) or {}).get("role") == "follower" and streaming(cl, new, [1, 2, 3]), 30,
             "node 1 stepping down and following the new leader")
    wait_for(lambda: caught_up(cl, new, [1, 2, 3]), 30, "every node converged")
    final = {i: client(cl.node(i).port).get("balance").decode() for i in (1, 2, 3)}
    run.show(f"node 1 saw epoch {epoch_new}, stepped down and follows node {new}; balance everywhere: {final}")
    by_epoch: dict = {}
    for nid, ep, _ in acks:
        by_epoch.setdefault(ep, set()).add(nid)
    return {"new_leader": new, "epoch": epoch_new, "old_leader_role": role1,
            "old_leader_read": read.decode() if read is not None else read_err,
            "old_leader_write": "OK" if wrote else write_err, "acks_by_epoch": {k: sorted(v) for k, v in by_epoch.items()},
            "final": final, "stale_read": read is not None, "two_writers": bool(wrote)}


@scenario(
    "split-brain",
    title="split brain: two nodes acting as leader (fencing)",
    seeds="""After a failover the old leader may not know it was replaced: two nodes then believe
    they are the leader (split brain), and if both accept writes with no way to resolve the
    conflicts, data is lost or corrupted. Failure detection by timeout cannot tell a dead leader
    from a slow or cut-off one; systems fence the old leader off.""",
    mechanism="epochs and leases: a leader acts only while a majority answered it within its lease (which ends "
              "before anyone can be elected), so the cut-off one answers NOLEASE; every message carries the epoch",
    order=40)
def split_brain(run: Run) -> Result:
    run.say("replikv has no switch that turns write fencing off. The run without the mechanism relaxes the one "
            "part that can be relaxed, the lease check on reads (allow_stale_reads = true), to show what a "
            "second leader looks like to its clients.")
    run.heading("Without the mechanism: allow_stale_reads = true (the old leader answers reads without its lease)")
    without = _round(run, allow_stale_reads=True)
    run.beat()
    run.heading("With the mechanism: leases fence reads and writes")
    with_ = _round(run, allow_stale_reads=False)
    one_per_epoch = all(len(v) == 1 for v in with_["acks_by_epoch"].values())
    run.say(f"Without: node 1 still served balance = {without['old_leader_read']!r} while node "
            f"{without['new_leader']} led with 50 (writes to it: {str(without['old_leader_write']).split(' ')[0]}). With leases: node 1 "
            f"answered {str(with_['old_leader_read']).split(' ')[0]} to reads and writes; acknowledged writes by "
            f"epoch: {with_['acks_by_epoch']} (one node per epoch: {one_per_epoch}).")
    return Result("split-brain", without["stale_read"] or without["two_writers"],
                  with_["stale_read"] or with_["two_writers"] or not one_per_epoch,
                  {"without": without, "with": with_})
