"""The ``replikv`` command line: run a node, start / stop / inspect a local cluster."""

from __future__ import annotations

import json
import logging
import os
import sys
import time

import click

from .. import __version__
from .local import ClusterError, LocalCluster


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@click.group()
@click.version_option(__version__, prog_name="replikv")
def main() -> None:
    """replikv: a replicated key-value database speaking the Redis protocol."""


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--node-id", type=int)
@click.option("--host")
@click.option("--port", type=int, help="RESP port for clients (default 6390).")
@click.option("--peer-port", type=int, help="Peer protocol port (default port+10000).")
@click.option("--http-port", type=int, help="HTTP status/metrics port (default port+20000).")
@click.option("--data-dir", type=click.Path(file_okay=False))
@click.option("--fsync", type=str, help="always | everysec | no")
@click.option("--snapshot-every-records", type=int)
@click.option("--log-retention-bytes", type=int)
@click.option("--segment-bytes", type=int)
@click.option("--max-bulk-len", type=int)
@click.option("--max-clients", type=int)
@click.option("--log-level", type=str)
@click.option("--cluster", type=click.Path(dir_okay=False), help="Cluster file (mode, ack, nodes).")
@click.option("--apply-delay-ms", type=int, help="Follower: apply records this long after the leader wrote them.")
@click.option("--max-lag-ms", type=int, help="Follower: refuse reads while further behind than this.")
@click.option("--no-uvloop", is_flag=True, help="Use the plain asyncio event loop.")
def node(config_path, no_uvloop, **flags) -> None:
    """Run one node in the foreground."""
    from ..server.config import ConfigError, load

    try:
        cfg = load(config_path, flags)
    except ConfigError as e:
        click.echo(f"replikv: invalid configuration: {e}", err=True)
        sys.exit(2)
    _setup_logging(cfg.log_level)
    from ..server.main import run_node

    sys.exit(run_node(cfg, use_uvloop=not no_uvloop))


def _status_table(rows: list[dict]):
    from rich.table import Table

    t = Table(title="replikv cluster", expand=False)
    for col in ("node", "address", "role", "position (history:seq)", "keys", "fsync", "clients", "http", "state"):
        t.add_column(col)
    for r in rows:
        state = "up" if r.get("reachable") else ("running, not answering" if r.get("running") else "down")
        pos = f"{r.get('history_id', '?')[:8]}:{r.get('last_seq', '?')}" if r.get("reachable") else "-"
        t.add_row(str(r["node_id"]), r["address"], str(r.get("role", "-")), pos, str(r.get("keys", "-")),
                  str(r.get("fsync", "-")), str(r.get("clients", "-")), r["http"], state)
    return t


@main.command()
@click.option("--nodes", type=int, default=1, show_default=True)
@click.option("--base-port", type=int, default=7100, show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False), default=".replikv", show_default=True)
@click.option("--fsync", type=click.Choice(["always", "everysec", "no"]), default=None)
@click.option("--detach", is_flag=True, help="Return once the nodes answer; stop them with `replikv down`.")
def up(nodes, base_port, data_dir, fsync, detach) -> None:
    """Start a local cluster (or restart its stopped nodes) and show its status."""
    settings = {}
    if fsync:
        settings["fsync"] = fsync
    try:
        cl = LocalCluster.load(data_dir)
        if settings:
            cl.settings.update(settings)
    except ClusterError:
        cl = LocalCluster.create(data_dir, nodes, base_port, settings=settings)
    try:
        started = cl.start()
    except ClusterError as e:
        click.echo(f"replikv: {e}", err=True)
        sys.exit(1)
    from rich.console import Console

    con = Console()
    for n in cl.nodes:
        con.print(f"node {n.node_id}: RESP {n.address}  HTTP http://{n.host}:{n.http_port}/status  "
                  f"data {n.data_dir}" + ("  (started)" if n.node_id in started else "  (already running)"))
    if detach:
        con.print(_status_table(cl.status()))
        con.print(f"try: redis-cli -p {cl.nodes[0].port} set hello world")
        return
    from rich.live import Live

    con.print("Ctrl-C stops the cluster.")
    try:
        with Live(_status_table(cl.status()), console=con, refresh_per_second=2) as live:
            while True:
                time.sleep(1.0)
                live.update(_status_table(cl.status()))
    except KeyboardInterrupt:
        pass
    con.print("stopping ...")
    cl.stop()


@main.command()
@click.option("--data-dir", type=click.Path(file_okay=False), default=".replikv", show_default=True)
def down(data_dir) -> None:
    """Stop the nodes of a local cluster (graceful, then SIGKILL after a timeout)."""
    try:
        cl = LocalCluster.load(data_dir)
    except ClusterError as e:
        click.echo(f"replikv: {e}", err=True)
        sys.exit(1)
    cl.stop()
    click.echo(f"stopped {len(cl.nodes)} node(s)")


@main.command()
@click.option("--data-dir", type=click.Path(file_okay=False), default=".replikv", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def status(data_dir, as_json) -> None:
    """Show every node's address, role, log position and key count."""
    try:
        cl = LocalCluster.load(data_dir)
    except ClusterError as e:
        click.echo(f"replikv: {e}", err=True)
        sys.exit(1)
    rows = cl.status()
    if as_json:
        click.echo(json.dumps(rows, indent=1))
    else:
        from rich.console import Console

        Console().print(_status_table(rows))
    if not all(r.get("reachable") for r in rows):
        sys.exit(3)


if __name__ == "__main__":  # pragma: no cover
    main(prog_name=os.path.basename(sys.argv[0]))
