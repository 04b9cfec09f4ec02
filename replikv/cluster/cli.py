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
@click.option("--fsync-writer", type=str,
              help="fsync always: inline (fsync in the event loop, default) | thread (an IO thread).")
@click.option("--snapshot-every-records", type=int)
@click.option("--log-retention-bytes", type=str, help="Bytes (units allowed: 256mb).")
@click.option("--segment-bytes", type=str, help="Bytes (units allowed: 64mb).")
@click.option("--max-bulk-len", type=str, help="Largest bulk string a client may send (default 512mb).")
@click.option("--max-multibulk-len", type=int, help="Most arguments in one request (default 1048576).")
@click.option("--max-inline-len", type=str, help="Longest inline (telnet-style) request line (default 64kb).")
@click.option("--max-clients", type=int)
@click.option("--log-level", type=str)
@click.option("--cluster", type=click.Path(dir_okay=False), help="Cluster file (mode, ack, nodes).")
@click.option("--apply-delay-ms", type=int, help="Follower: apply records this long after the leader wrote them.")
@click.option("--max-lag-ms", type=int, help="Follower: refuse reads while further behind than this.")
@click.option("--no-uvloop", is_flag=True, help="Use the plain asyncio event loop.")
def node(config_path, no_uvloop, **flags) -> None:
    """Run one node in the foreground (settings from flags over a TOML file)."""
    cfg = _node_config_or_exit(config_path, flags)
    _setup_logging(cfg.log_level)
    lock = _lock_data_dir(cfg.data_dir)  # noqa: F841 - held (open) for the life of the process
    _raise_fd_limit(cfg.max_clients)
    from ..server.main import run_node

    sys.exit(run_node(cfg, use_uvloop=not no_uvloop))


def _node_config_or_exit(config_path, flags):
    """The node's validated config, or a one-line message naming the bad field and exit 2."""
    from ..server.config import ConfigError, load

    def refuse(msg: str):
        click.echo(f"replikv: invalid configuration: {msg}", err=True)
        sys.exit(2)

    try:
        cfg = load(config_path, flags)
    except ConfigError as e:
        refuse(str(e))
    if cfg.cluster:
        # checked here, before the node starts, so a bad cluster file is a message, not a traceback
        from ..server.clusterconfig import load_cluster

        try:
            load_cluster(cfg.cluster).node(cfg.node_id)
        except ConfigError as e:
            refuse(str(e))
        except (OSError, UnicodeDecodeError) as e:
            refuse(f"cluster file {cfg.cluster}: cannot be read ({e})")
    return cfg


def _lock_data_dir(data_dir: str):
    """One node per data dir: two processes appending to one log would corrupt it. An
    exclusive POSIX record lock (lockf) on ``DATA_DIR/node.lock``: the kernel drops it when
    the process dies, so a crash never leaves a stale lock, and a forked snapshot child does
    not inherit it, so a restart right after a kill -9 is not blocked by that child."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    path = os.path.join(data_dir, "node.lock")
    try:
        os.makedirs(data_dir, exist_ok=True)
        fh = open(path, "a+")
    except OSError as e:
        click.echo(f"replikv: cannot use data dir {data_dir}: {e}", err=True)
        sys.exit(1)
    try:
        fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.seek(0)
        holder = fh.read().strip() or "?"
        click.echo(f"replikv: data dir {os.path.abspath(data_dir)} is in use by another node (pid {holder}); "
                   f"one data dir serves one node", err=True)
        sys.exit(1)
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh


def _raise_fd_limit(max_clients: int) -> None:
    """Let the node hold max_clients connections plus its files: raise the soft fd limit
    toward the hard one, as Redis does, and say so when it is still too low."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return
    want = max_clients + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
        if soft < want:
            logging.getLogger("replikv.node").warning(
                "open file limit %d is below max-clients %d + 64: connections beyond it will fail", soft, max_clients)


def _console():
    from rich.console import Console

    # a pipe or a file gets a wide table rather than 80 cramped columns
    return Console() if sys.stdout.isatty() else Console(width=200)


def _status_table(rows: list[dict]):
    from .statusview import status_renderable

    return status_renderable(rows)


@main.command()
@click.option("--mode", type=click.Choice(["standalone", "leader"]), default=None,
              help="standalone nodes, or single-leader replication (node 1 leads at first).")
@click.option("--partitions", type=click.IntRange(1, 16), default=1, show_default=True,
              help="Leader mode: split the keyspace into this many partitions, each its own leader and followers.")
@click.option("--nodes", type=click.IntRange(1, 100), default=None, help="Number of nodes (default 1, or 3 in leader mode). "
              "More than a running cluster has adds nodes to it.")
@click.option("--base-port", type=click.IntRange(1, 65535), default=7100, show_default=True,
              help="Node i serves RESP on base-port+i-1, peers on +100, HTTP on +200.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=".replikv", show_default=True)
@click.option("--fsync", type=click.Choice(["always", "everysec", "no"]), default=None)
@click.option("--ack", default=None, help="async | semi-sync:K[:strict] | sync:LEVEL:K | sync:LEVEL:first:K:IDS")
@click.option("--ack-timeout-ms", type=int, default=None)
@click.option("--heartbeat-ms", type=int, default=None)
@click.option("--net-faults", is_flag=True, default=None,
              help="Route peer traffic through link proxies so links can be cut, delayed or made lossy.")
@click.option("--log-format", type=click.Choice(["physical", "row", "statement"]), default=None,
              help="Leader mode: what the leader ships: log frames byte for byte (default), row images, or statements.")
@click.option("--statement-unsafe", is_flag=True, default=None,
              help="With --log-format statement: log commands as issued (nondeterministic ones make followers diverge).")
@click.option("--detach", is_flag=True, help="Return once the nodes answer; stop them with `replikv down`.")
@click.option("--dashboard", is_flag=True, help="Print the dashboard's URL (and open it when there is a display).")
def up(mode, partitions, nodes, base_port, data_dir, fsync, ack, ack_timeout_ms, heartbeat_ms, net_faults,
       detach, dashboard, log_format=None, statement_unsafe=None) -> None:
    """Start a local cluster (or restart its stopped nodes) and show its status."""
    from ..server.config import ConfigError

    settings = {}
    if fsync:
        settings["fsync"] = fsync
    cluster_settings = {k: v for k, v in (("ack", ack), ("ack_timeout_ms", ack_timeout_ms),
                                          ("heartbeat_ms", heartbeat_ms), ("net_faults", net_faults),
                                          ("log_format", log_format), ("statement_unsafe", statement_unsafe))
                        if v is not None}
    try:
        try:
            cl = LocalCluster.load(data_dir)
            if mode and mode != cl.mode:
                raise ClusterError(f"the cluster in {data_dir} runs in mode {cl.mode}, not {mode}; "
                                   f"use another --data-dir or `replikv down` and remove it")
            cl.settings.update(settings)
            cl.cluster_settings.update(cluster_settings)
            while nodes and len(cl.nodes) < nodes:
                cl.add_node()
        except ClusterError:
            if os.path.exists(os.path.join(data_dir, "cluster.json")):
                raise
            mode = mode or ("leader" if ack else "standalone")
            n = nodes or (3 if mode == "leader" else 1)
            if partitions > 1 and mode != "leader":
                raise ClusterError("--partitions needs --mode leader") from None
            cl = LocalCluster.create(data_dir, n, base_port, mode=mode, settings=settings,
                                     cluster_settings=cluster_settings, partitions=partitions)
        cl.save()
    except (ClusterError, ConfigError) as e:
        click.echo(f"replikv: {e}", err=True)
        sys.exit(2)
    _sigterm_as_interrupt()
    try:
        started = cl.start()
    except ClusterError as e:
        click.echo(f"replikv: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted while starting; stopping the cluster", err=True)
        cl.stop()
        sys.exit(130)
    con = _console()
    for n in cl.nodes:
        con.print(f"node {n.node_id}: RESP {n.address}  HTTP http://{n.host}:{n.http_port}/status  "
                  f"data {n.data_dir}" + ("  (started)" if n.node_id in started else "  (already running)"))
    if dashboard:
        from ..dashboard import announce

        announce(cl, con.print)
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


def _sigterm_as_interrupt() -> None:
    """``kill`` of a foreground ``replikv up`` stops its cluster as Ctrl-C does (the nodes run
    in their own sessions, so they never see the terminal's signals themselves)."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


@main.command()
@click.option("--data-dir", type=click.Path(file_okay=False), default=".replikv", show_default=True)
def down(data_dir) -> None:
    """Stop the nodes of a local cluster (graceful, then SIGKILL after a timeout)."""
    try:
        cl = LocalCluster.load(data_dir)
    except ClusterError as e:
        click.echo(f"replikv: {e}", err=True)
        sys.exit(1)
    stopped = cl.stop()
    if stopped:
        click.echo(f"stopped node(s) {', '.join(map(str, stopped))}")
    else:
        click.echo("no node was running")


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
        _console().print(_status_table(rows))
    if not all(r.get("reachable") for r in rows):
        sys.exit(3)


if __name__ == "__main__":  # pragma: no cover
    main(prog_name=os.path.basename(sys.argv[0]))


from ..logformats.cdc import register as _register_cdc  # noqa: E402
from ..scenarios import cli as _scenarios_cli  # noqa: E402,F401  (registers `replikv scenario`)
from . import cli_ops  # noqa: E402,F401  (registers `replikv failover`)

_register_cdc(main)   # `replikv cdc`
