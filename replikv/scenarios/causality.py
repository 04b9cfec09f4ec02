"""Consistent prefix reads across partitions: the answer seen before the question."""

from __future__ import annotations

import os

from ..client import Client, Session
from ..cluster.local import ClusterError, LocalCluster
from ..server.clusterconfig import key_slot, partition_of_slot
from ._base import Result, Run, ScenarioError, client, scenario, streaming, wait_for

DELAY_MS = 800
ROUNDS = 4


def _key_in(partition: int, stem: str) -> str:
    for i in range(10_000):
        k = f"{stem}:{i}"
        if partition_of_slot(key_slot(k.encode()), 2) == partition:
            return k
    raise ScenarioError("no key found for the partition")


@scenario(
    "causality",
    title="causality violated across partitions (consistent prefix reads)",
    seeds="""Mr. Poons asks a question, Mrs. Cake answers it. If the question and the answer live in
    different partitions that replicate independently, an observer reading from followers can see
    the answer before the question, as if Mrs. Cake could see the future. Consistent prefix reads:
    writes that are causally related are seen in order, by tracking what each write depends on.""",
    mechanism="the client session sends the positions a write depends on (CAUSAL p:seq), stored with the key; "
              "a reader learns them (DEPS) and its next read of that partition waits for them (WAITPOS)",
    order=70)
def causality(run: Run) -> Result:
    for cl in list(run.clusters):
        run.stop_cluster(cl)
    root = os.path.join(run.root, "partitioned")
    cl = LocalCluster.create(root, 3, run.base_port, mode="leader", partitions=2, cluster_settings={"ack": "async"})
    run.clusters.append(cl)
    try:
        cl.start()
    except ClusterError as e:
        raise ScenarioError(str(e)) from None
    for p in (1, 2):
        ids = [n.node_id for n in cl.partition_nodes(p)]
        wait_for(lambda ids=ids, p=p: streaming(cl, ids[0], ids), 30, f"partition {p} streaming")
    q_part, a_part = 1, 2
    run.step(f"two partitions; the followers of partition {q_part} (the question's) apply {DELAY_MS} ms late, "
             f"those of partition {a_part} (the answer's) at once")
    for n in cl.partition_nodes(q_part)[1:]:
        client(n.port).execute_command("REPLICA", "DELAY", DELAY_MS)
    seeds = [f"{n.host}:{n.port}" for n in cl.nodes]
    seen = {}
    for guarded in (False, True):
        run.heading("With the mechanism: causal dependencies travel with the answer" if guarded else
                    "Without the mechanism: the observer reads followers with no causal tracking")
        anomalies = 0
        for i in range(ROUNDS):
            q_key, a_key = _key_in(q_part, f"question{int(guarded)}{i}"), _key_in(a_part, f"answer{int(guarded)}{i}")
            opts = {} if guarded else {"read_your_writes": None, "monotonic_reads": False, "consistent_prefix": False}
            poons = Client(seeds, session=Session(user_id="poons", **opts))
            cake = Client(seeds, session=Session(user_id="cake", **opts), read_from_followers=False)
            observer = Client(seeds, session=Session(user_id=f"observer{i}", **opts))
            poons.write("SET", q_key, "how far into the future can you see, Mrs. Cake?")
            cake.read("GET", q_key)                     # she reads the question (at the leader) ...
            cake.write("SET", a_key, "about ten seconds usually, Mr. Poons")   # ... and answers it
            answer = observer.read("GET", a_key)
            question = observer.read("GET", q_key)
            bad = answer is not None and question is None
            anomalies += bad
            run.show(f"observer reads the answer: {answer is not None}, then the question: {question is not None}"
                     + ("   <- the answer without its question" if bad else ""))
            for c in (poons, cake, observer):
                c.close()
        seen[guarded] = anomalies
        run.beat()
    run.say(f"Without causal tracking the observer saw {seen[False]} answer(s) before their question; with it, "
            f"{seen[True]}: reading the answer taught the session that partition {q_part} must reach the "
            f"question's position first.")
    return Result("causality", seen[False] > 0, seen[True] > 0,
                  {"anomalies_without": seen[False], "anomalies_with": seen[True], "rounds": ROUNDS})
