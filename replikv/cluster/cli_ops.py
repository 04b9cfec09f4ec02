"""Operator commands on a running cluster: ``replikv failover``."""

from __future__ import annotations

import sys

import click

from .cli import main
from .local import ClusterError, LocalCluster


@main.command()
@click.option("--data-dir", type=click.Path(file_okay=False), default=".replikv", show_default=True)
@click.option("--to", "to", type=int, default=None, help="The follower to hand over to (default: the most up to date).")
@click.option("--timeout-ms", type=int, default=10_000, show_default=True)
@click.option("--force", is_flag=True, default=False,
              help="No node leads (the leader is down and automatic failover is off): make --to, or the "
                   "most up-to-date running follower, stand for election.")
def failover(data_dir, to, timeout_ms, force) -> None:
    """Manual switchover: pause writes, let the target catch up, hand leadership over.
    With --force and no leader: promote a follower by an election (its log must be at least
    as fresh as a majority's)."""
    import redis

    try:
        cl = LocalCluster.load(data_dir)
        leader = cl.leader()
        if leader is None and not force:
            raise ClusterError("no node currently leads with a lease (an election may be in progress; "
                               "if the leader is down and automatic failover is off, use --force)")
        if leader is not None and force:
            raise ClusterError(f"node {leader.node_id} leads: a switchover needs no --force")
        if force:
            target = _stand_target(cl, to)
    except ClusterError as e:
        click.echo(f"replikv: {e}", err=True)
        sys.exit(2)
    if force:
        node, args = target, ["FAILOVER", "FORCE", "TIMEOUT", str(timeout_ms)]
    else:
        node, args = leader, ["FAILOVER"] + (["TO", str(to)] if to is not None else []) + ["TIMEOUT", str(timeout_ms)]
    r = redis.Redis(host=node.host, port=node.port, socket_timeout=timeout_ms / 1000 + 5)
    try:
        out = r.execute_command(*args)
    except redis.ResponseError as e:
        click.echo(f"replikv: {e}", err=True)
        sys.exit(1)
    click.echo(out.decode() if isinstance(out, bytes) else str(out))


def _stand_target(cl: LocalCluster, to: int | None):
    """The node a forced election should make stand: ``to``, or the running node of the first
    partition whose last record (epoch, seq) is the freshest, the one the others can vote for
    (votes compare exactly that)."""
    ids = {n.node_id for n in cl.partition_nodes(1)}
    rows = [row for row in cl.status() if row.get("reachable") and row["node_id"] in ids]
    if to is not None:
        if to not in ids:
            raise ClusterError(f"node {to} is not a node of partition 1 (the one `replikv failover` acts on)")
        if not any(row["node_id"] == to for row in rows):
            raise ClusterError(f"node {to} is not running or does not answer")
        return cl.node(to)
    best = None
    for row in rows:
        last = tuple((row.get("replication") or {}).get("last_record") or (0, 0))
        if best is None or last > best[0]:
            best = (last, row["node_id"])
    if best is None:
        raise ClusterError("no running node answers")
    unreachable = sorted(ids - {row["node_id"] for row in rows})
    if unreachable:
        click.echo(f"replikv: node(s) {', '.join(map(str, unreachable))} do not answer: if one of them still "
                   f"leads behind a partition, it keeps taking writes until it reaches the others again "
                   f"(then it steps down, and what it took meanwhile goes to its lost-writes.jsonl)", err=True)
    return cl.node(best[1])


@main.command()
@click.option("--data-dir", type=click.Path(file_okay=False), default=".replikv", show_default=True)
@click.argument("action", type=click.Choice(["kill", "restart", "pause", "resume", "partition", "heal", "link",
                                             "skew", "show"]))
@click.argument("nodes", nargs=-1, type=int)
@click.option("--cut/--restore", default=None, help="link: cut or restore the link(s).")
@click.option("--delay-ms", type=int, default=None, help="link: add this delay to each chunk.")
@click.option("--jitter-ms", type=int, default=None, help="link: add up to this much random delay.")
@click.option("--drop", type=float, default=None, help="link: probability that a chunk is lost (resets the link).")
@click.option("--ms", type=int, default=None, help="skew: clock offset in ms.")
def fault(data_dir, action, nodes, cut, delay_ms, jitter_ms, drop, ms) -> None:
    """Inject a fault into a running local cluster; every fault is reversible.

    \b
    replikv fault kill 1            SIGKILL node 1         replikv fault restart 1
    replikv fault pause 2           SIGSTOP node 2         replikv fault resume 2
    replikv fault partition 1       cut node 1 off from the others (needs --net-faults)
    replikv fault link 1 2 --delay-ms 200 --jitter-ms 50     replikv fault link 1 2 --cut
    replikv fault heal              restore every link
    replikv fault skew 3 --ms 2000  node 3's clock runs 2 s ahead
    replikv fault show              the state of links and nodes
    """
    import json

    from .agent import FaultClient

    try:
        fc = FaultClient.for_cluster(LocalCluster.load(data_dir))
        if action == "show":
            out = fc.state()
        elif action in ("kill", "restart", "pause", "resume"):
            if len(nodes) != 1:
                raise click.UsageError(f"{action} takes one node id")
            out = getattr(fc, action)(nodes[0])
        elif action == "partition":
            if not nodes:
                raise click.UsageError("partition takes the node ids of one side")
            out = fc.partition(nodes)
        elif action == "heal":
            out = fc.heal()
        elif action == "link":
            if len(nodes) != 2:
                raise click.UsageError("link takes two node ids")
            out = fc.link(nodes[0], nodes[1], cut=cut, delay_ms=delay_ms, jitter_ms=jitter_ms, drop=drop)
        else:
            if len(nodes) != 1 or ms is None:
                raise click.UsageError("skew takes one node id and --ms")
            out = fc.skew(nodes[0], ms)
    except (ClusterError, RuntimeError, OSError) as e:
        click.echo(f"replikv: {e}", err=True)
        sys.exit(1)
    click.echo(json.dumps({k: v for k, v in out.items() if k != "events"}, indent=1))


@main.command()
@click.option("--mode", type=click.Choice(["leader"]), default="leader", show_default=True)
@click.option("--ack", default="semi-sync:1", show_default=True)
@click.option("--nemesis", default="kill,partition,pause", show_default=True,
              help="Comma-separated: kill, pause, partition, skew (empty: none).")
@click.option("--time", "time_s", type=float, default=60.0, show_default=True, help="Seconds of workload.")
@click.option("--clients", type=int, default=8, show_default=True)
@click.option("--keys", type=int, default=5, show_default=True)
@click.option("--reads", type=click.Choice(["leader", "followers"]), default="leader", show_default=True,
              help="leader: check linearizability; followers: check session guarantees.")
@click.option("--guarantees/--no-guarantees", default=True, help="Session guarantees for follower reads.")
@click.option("--follower-delay-ms", default="", help="Apply delays for the followers, e.g. 0,800.")
@click.option("--seed", type=int, default=None)
@click.option("--base-port", type=int, default=7600, show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Default: a new temp dir.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check(mode, ack, nemesis, time_s, clients, keys, reads, guarantees, follower_delay_ms, seed, base_port,
          data_dir, as_json) -> None:
    """Jepsen-style: fresh cluster, workload + nemesis, heal, check the recorded history."""
    import random

    from .checkrun import NEMESES, CheckConfig, Runner, check_history, summarize

    kinds = tuple(k for k in nemesis.split(",") if k)
    bad = [k for k in kinds if k not in NEMESES]
    if bad:
        raise click.UsageError(f"unknown nemesis {bad}; choose from {', '.join(NEMESES)}")
    seed = seed if seed is not None else random.randrange(1_000_000)
    delays = tuple(int(x) for x in follower_delay_ms.split(",") if x)
    cfg = CheckConfig(ack=ack, nemesis=kinds, time_s=time_s, clients=clients, keys=keys, reads=reads,
                      guarantees=guarantees, seed=seed, base_port=base_port, data_dir=data_dir,
                      follower_delays_ms=delays)
    runner = Runner(cfg, say=lambda m: click.echo(m, err=as_json))
    try:
        out = runner.run()
    finally:
        runner.close()
    report = check_history(out["history"], out["digests"], linearizable=(reads == "leader"))
    counts = summarize(out["history"])
    if as_json:
        click.echo(report.to_json())
    else:
        click.echo(f"operations: {counts['ok']} ok, {counts['fail']} failed, {counts['info']} unknown")
        click.echo(report.text())
        click.echo(f"history: {out['history']}")
        click.echo(f"rerun: replikv check --ack {ack} --nemesis {nemesis} --time {time_s:g} --clients {clients} "
                   f"--reads {reads} {'--guarantees' if guarantees else '--no-guarantees'}"
                   + (f" --follower-delay-ms {follower_delay_ms}" if follower_delay_ms else "") + f" --seed {seed}")
    sys.exit(0 if report.verdict == "ok" else 1)
