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
def failover(data_dir, to, timeout_ms) -> None:
    """Manual switchover: pause writes, let the target catch up, hand leadership over."""
    import redis

    try:
        cl = LocalCluster.load(data_dir)
        leader = cl.leader()
        if leader is None:
            raise ClusterError("no node currently leads with a lease (an election may be in progress)")
    except ClusterError as e:
        click.echo(f"replikv: {e}", err=True)
        sys.exit(2)
    r = redis.Redis(host=leader.host, port=leader.port, socket_timeout=timeout_ms / 1000 + 5)
    args = ["FAILOVER"]
    if to is not None:
        args += ["TO", str(to)]
    args += ["TIMEOUT", str(timeout_ms)]
    try:
        out = r.execute_command(*args)
    except redis.ResponseError as e:
        click.echo(f"replikv: {e}", err=True)
        sys.exit(1)
    click.echo(out.decode() if isinstance(out, bytes) else str(out))


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
