"""Fixtures for the log-format tests: leader-mode clusters of real node processes with a
``log_format``, helpers to wait for convergence, and a throwaway PostgreSQL server."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile

import pytest

from replikv.cluster.local import ClusterError, LocalCluster
from tests.conftest import client, free_base_port, kill_all, wait_for


def repl_status(cl: LocalCluster, node_id: int) -> dict:
    return cl.http_get(cl.node(node_id), "/status")["replication"]


def all_streaming(cl: LocalCluster, leader: int = 1) -> bool:
    fl = repl_status(cl, leader)["followers"]
    ids = {n.node_id for n in cl.nodes if n.node_id != leader}
    return {f["node_id"] for f in fl if f["link"] == "up" and f["state"] == "streaming"} >= ids


def make_cluster(root: str, n: int = 3, start: bool = True, settings: dict | None = None,
                 **cluster_settings) -> LocalCluster:
    cs = {"ack": "async", "heartbeat_ms": 100, **cluster_settings}
    for attempt in range(3):
        cl = LocalCluster.create(os.path.join(root, f"c{attempt}"), n, free_base_port(n + 1), mode="leader",
                                 settings=settings, cluster_settings=cs)
        if not start:
            return cl
        try:
            cl.start()
            break
        except ClusterError as e:
            kill_all(cl)
            if "address already in use" not in str(e) or attempt == 2:
                raise
    if n > 1:
        wait_for(lambda: all_streaming(cl), 20, what="all followers streaming")
    return cl


def digests(cl: LocalCluster) -> list[bytes]:
    return [client(n.port).execute_command("DIGEST") for n in cl.nodes]


def wait_converged(cl: LocalCluster, timeout: float = 20) -> bytes:
    """Every follower applied the leader's last record and all DIGESTs are equal."""
    def ok():
        last = cl.http_get(cl.node(1), "/status")["last_seq"]
        for n in cl.nodes[1:]:
            if repl_status(cl, n.node_id)["applied"] < last:
                return False
        d = digests(cl)
        return d[0] if len(set(d)) == 1 else False

    return wait_for(ok, timeout, what="followers converged to the leader's DIGEST")


@pytest.fixture
def cluster_root(tmp_path):
    made: list[LocalCluster] = []

    def make(n: int = 3, start: bool = True, settings: dict | None = None, **cluster_settings) -> LocalCluster:
        cl = make_cluster(str(tmp_path / f"cl{len(made)}"), n, start, settings, **cluster_settings)
        made.append(cl)
        return cl

    yield make
    for cl in made:
        kill_all(cl)


# ---------------------------------------------------------------------------- PostgreSQL

def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    cands = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return cands[-1] if cands else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL server (initdb + pg_ctl in a temp dir, as the postgres user when
    run as root); yields a libpq connection string. Skips only if PostgreSQL cannot start here."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg 3 is not installed (pip install 'psycopg[binary]')")
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL is not installed (initdb/pg_ctl not found; `make deps` installs it from apt)")
    d = tempfile.mkdtemp(prefix="replikv-pg-")
    as_user: list[str] = []
    if os.geteuid() == 0:
        try:
            import pwd

            pw = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(d, ignore_errors=True)
            pytest.skip("running as root and there is no postgres user to run PostgreSQL as")
        os.chown(d, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data = os.path.join(d, "data")
    port = _free_port()
    run = lambda args: subprocess.run(as_user + args, capture_output=True, text=True, timeout=120)  # noqa: E731
    r = run([initdb, "-D", data, "-A", "trust", "-U", "postgres", "--no-sync"])
    if r.returncode != 0:
        shutil.rmtree(d, ignore_errors=True)
        pytest.skip(f"initdb failed: {r.stderr.strip()[-500:]}")
    r = run([pg_ctl, "-D", data, "-l", os.path.join(d, "pg.log"), "-w", "-t", "60", "-o",
             f"-p {port} -k {d} -c listen_addresses=127.0.0.1 -c fsync=off", "start"])
    if r.returncode != 0:
        log = open(os.path.join(d, "pg.log")).read()[-800:] if os.path.exists(os.path.join(d, "pg.log")) else ""
        shutil.rmtree(d, ignore_errors=True)
        pytest.skip(f"PostgreSQL did not start: {r.stderr.strip()[-400:]} {log}")
    try:
        yield f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
    finally:
        run([pg_ctl, "-D", data, "-m", "immediate", "stop"])
        shutil.rmtree(d, ignore_errors=True)
