"""Statement-based replication and nondeterministic commands: replicas that drift apart."""

from __future__ import annotations

from ._base import Result, Run, client, scenario, wait_for


def _workload(w) -> None:
    w.delete("deck", "session", "ttl-key")
    w.sadd("deck", *[f"card{i}" for i in range(40)])
    for _ in range(5):
        w.spop("deck")                          # a random pick
    w.execute_command("SET", "session", "abc", "EX", "100")   # expiry relative to *now*
    w.expire("ttl-key", 50)
    w.set("ttl-key", "x", ex=200)


def _digests(cl) -> dict:
    return {n.node_id: client(n.port).execute_command("DIGEST").decode() for n in cl.nodes}


def _converged_positions(cl) -> bool:
    pos = {client(n.port).execute_command("POS") for n in cl.nodes}
    return len(pos) == 1


@scenario(
    "statement-divergence",
    title="statement-based replication diverging on a nondeterministic command",
    seeds="""Statement-based replication sends every write statement to the followers, which run it
    again. A statement whose result depends on the moment or on chance (NOW(), RAND(), here SPOP
    and a relative expiry) gives a different result on each replica, and the replicas silently
    drift apart. The fix: the leader replaces each nondeterministic part by its value before
    logging it, or the log carries rows (after-images) rather than statements.""",
    mechanism="log_format = statement with the leader's rewriting (SPOP -> SREM of the members it popped, "
              "EX -> PXAT absolute time); statement_unsafe = true turns it off",
    order=80)
def statement_divergence(run: Run) -> Result:
    results = {}
    for unsafe in (True, False):
        run.heading("Without the mechanism: statements logged as issued (statement_unsafe = true)" if unsafe else
                    "With the mechanism: the leader rewrites nondeterministic statements before logging them")
        cl = run.cluster(3, ack="async", log_format="statement", statement_unsafe=unsafe)
        w = client(cl.node(1).port)
        _workload(w)
        w.set("marker", "done")
        wait_for(lambda cl=cl: _converged_positions(cl), 20, "every follower at the leader's position")
        d = _digests(cl)
        left = {n: len(client(cl.node(n).port).smembers("deck")) for n in d}
        same = len(set(d.values())) == 1
        run.show("DIGEST per node: " + ", ".join(f"node {n}: {v[:12]}" for n, v in d.items()))
        run.show(f"cards left in 'deck' per node: {left};  "
                 + ("replicas identical" if same else "replicas DIVERGED: each follower popped its own cards"))
        results[unsafe] = {"digests": d, "identical": same}
        run.beat()
    run.say("Without rewriting, SPOP picked different cards on each follower and the expiry times were "
            "computed from each follower's clock: same log, different data. With rewriting, the followers "
            "replay SREM of the exact members and PXAT of the exact time.")
    return Result("statement-divergence", not results[True]["identical"], not results[False]["identical"],
                  {"unsafe": results[True], "safe": results[False]})
