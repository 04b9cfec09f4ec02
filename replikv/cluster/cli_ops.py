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
