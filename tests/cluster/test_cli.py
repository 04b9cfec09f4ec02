"""The operator's command line, run as a user would: ``python -m replikv ...`` in subprocesses
starting real node processes (MISSION K3)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest

from replikv.cluster.local import LocalCluster
from tests.conftest import client, free_base_port, wait_for


def replikv(*args, timeout: float = 90, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "replikv", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kw)


def status_rows(data_dir) -> tuple[int, list[dict]]:
    p = replikv("status", "--json", "--data-dir", data_dir)
    assert "Traceback" not in p.stderr, p.stderr
    return p.returncode, json.loads(p.stdout)


@pytest.fixture
def cluster_dir(tmp_path):
    """A data dir for `replikv up`; whatever runs there is stopped at the end."""
    d = tmp_path / "rk"
    yield d
    if (d / "cluster.json").exists():
        cl = LocalCluster.load(str(d))
        for n in cl.nodes:
            try:
                cl.kill(n.node_id)
            except Exception:  # noqa: BLE001
                pass


# ---------------------------------------------------------------------------- up / status / down

def test_up_status_kill_up_again_down(cluster_dir):
    base = free_base_port(2)
    p = replikv("up", "--detach", "--nodes", 2, "--data-dir", cluster_dir, "--base-port", base)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"127.0.0.1:{base}" in p.stdout and f"127.0.0.1:{base + 1}" in p.stdout

    rc, rows = status_rows(cluster_dir)
    assert rc == 0
    assert [r["node_id"] for r in rows] == [1, 2]
    for i, row in enumerate(rows):
        assert row["reachable"] and row["running"]
        assert row["address"] == f"127.0.0.1:{base + i}"
        assert row["peer"] == f"127.0.0.1:{base + 100 + i}"
        assert row["http"] == f"127.0.0.1:{base + 200 + i}"
        assert row["role"] == "leader"
        assert row["keys"] == 0 and row["last_seq"] == 0

    r1 = client(base)
    for i in range(10):
        assert r1.set(f"k{i}", i)
    rc, rows = status_rows(cluster_dir)
    assert rows[0]["keys"] == 10 and rows[0]["last_seq"] >= 10 and rows[1]["keys"] == 0

    # the human table too
    p = replikv("status", "--data-dir", cluster_dir)
    assert p.returncode == 0 and f"127.0.0.1:{base + 1}" in p.stdout and "up" in p.stdout

    # kill -9 node 2: status says so (exit 3); `up` again restarts only that node
    pid1, pid2 = rows[0]["pid"], rows[1]["pid"]
    os.kill(pid2, signal.SIGKILL)
    wait_for(lambda: status_rows(cluster_dir)[1][1]["reachable"] is False, what="status to see node 2 down")
    rc, rows = status_rows(cluster_dir)
    assert rc == 3 and rows[0]["reachable"] and not rows[1]["running"]

    p = replikv("up", "--detach", "--data-dir", cluster_dir)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "node 1:" in p.stdout and "(already running)" in p.stdout.split("node 2:")[0]
    assert "(started)" in p.stdout.split("node 2:")[1]
    rc, rows = status_rows(cluster_dir)
    assert rc == 0 and rows[1]["pid"] != pid2 and rows[0]["pid"] == pid1
    assert r1.get("k9") == b"9"   # node 1 was untouched, its client connection too

    p = replikv("down", "--data-dir", cluster_dir)
    assert p.returncode == 0 and "stopped node(s) 1, 2" in p.stdout, p.stdout + p.stderr
    rc, rows = status_rows(cluster_dir)
    assert rc == 3 and not any(r["reachable"] or r["running"] for r in rows)
    assert replikv("down", "--data-dir", cluster_dir).stdout.strip() == "no node was running"

    # a graceful stop kept every acknowledged write
    p = replikv("up", "--detach", "--data-dir", cluster_dir)
    assert p.returncode == 0, p.stdout + p.stderr
    assert client(base).mget([f"k{i}" for i in range(10)]) == [str(i).encode() for i in range(10)]
    assert replikv("down", "--data-dir", cluster_dir).returncode == 0


def test_up_foreground_until_ctrl_c(cluster_dir):
    base = free_base_port(1)
    proc = subprocess.Popen([sys.executable, "-m", "replikv", "up", "--data-dir", str(cluster_dir),
                             "--base-port", str(base)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: client(base).ping(), timeout=30, what="the node to answer")
        rc, rows = status_rows(cluster_dir)
        assert rc == 0 and rows[0]["reachable"]
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert b"Traceback" not in out and b"stopping" in out
    rc, rows = status_rows(cluster_dir)
    assert rc == 3 and not rows[0]["running"]


def test_status_and_down_without_a_cluster(tmp_path):
    for cmd in ("status", "down"):
        p = replikv(cmd, "--data-dir", tmp_path / "nothing")
        assert p.returncode == 1 and "no cluster" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("manifest", [b"not json", b'{"nodes": [{"port": 1}]}', b"[]", b"\xff"])
def test_damaged_cluster_manifest_is_a_message(tmp_path, manifest):
    d = tmp_path / "c"
    d.mkdir()
    (d / "cluster.json").write_bytes(manifest)
    for cmd in (["up", "--detach"], ["status"], ["down"]):
        p = replikv(*cmd, "--data-dir", d)
        assert p.returncode in (1, 2) and "cluster.json" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert (d / "cluster.json").read_bytes() == manifest   # never overwritten


def test_up_refuses_ports_beyond_65535(tmp_path):
    p = replikv("up", "--detach", "--data-dir", tmp_path / "x", "--base-port", 65400)
    assert p.returncode == 2 and "65600" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "x" / "cluster.json").exists()


def test_up_reports_a_node_that_cannot_start(cluster_dir):
    base = free_base_port(1)
    # another program holds the node's RESP and HTTP ports: both answer, yet the node is not up
    with socket.socket() as resp_squatter, socket.socket() as http_squatter:
        for sq, port in ((resp_squatter, base), (http_squatter, base + 200)):
            sq.bind(("127.0.0.1", port))
            sq.listen()
        p = replikv("up", "--detach", "--data-dir", cluster_dir, "--base-port", base)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "node 1 exited" in p.stderr and "cannot start" in p.stderr and "Traceback" not in p.stderr


def test_stale_pid_file_of_another_program_is_not_a_node(tmp_path):
    """A node killed long ago leaves its pid file; if that pid now belongs to another program,
    the node counts as not running and `down` leaves that program alone."""
    cl = LocalCluster.create(str(tmp_path / "c"), 1, free_base_port(1))
    n = cl.nodes[0]
    os.makedirs(n.data_dir)
    other = subprocess.Popen(["sleep", "60"])
    try:
        with open(cl.pid_file(n), "w") as fh:
            fh.write(str(other.pid))
        assert not cl.is_running(n)
        cl.save()
        p = replikv("down", "--data-dir", cl.root)
        assert p.returncode == 0 and "no node was running" in p.stdout
        assert other.poll() is None
        assert not os.path.exists(cl.pid_file(n))
    finally:
        other.kill()
        other.wait()


# ---------------------------------------------------------------------------- replikv node

def _refused(p: subprocess.CompletedProcess, field: str) -> None:
    out = p.stdout + p.stderr
    assert p.returncode != 0, out
    assert "Traceback" not in out, out
    assert field in p.stderr, out


@pytest.mark.parametrize("flags, field", [
    (["--fsync", "sometimes"], "fsync"),
    (["--fsync-writer", "sideways"], "fsync_writer"),
    (["--port", "70000"], "port"),
    (["--port", "0"], "port"),
    (["--port", "65000"], "peer_port"),
    (["--max-clients", "-1"], "max_clients"),
    (["--max-bulk-len", "12zb"], "max_bulk_len"),
    (["--log-level", "loud"], "log_level"),
    (["--port", "7000", "--http-port", "7000"], "http_port"),
])
def test_node_bad_flags(tmp_path, flags, field):
    _refused(replikv("node", "--data-dir", tmp_path / "d", *flags), field)


@pytest.mark.parametrize("toml, field", [
    (b'fsync = "sometimes"\n', "fsync"),
    (b'fsync_writer = "later"\n', "fsync_writer"),
    (b"port = 123456\n", "port"),
    (b"bogus_setting = 1\n", "bogus_setting"),
    (b"[node]\nprot = 7000\n", "node.prot"),
    (b"[replication]\nx = 1\n", "replication"),
    (b'port = "7000"\n', "port"),
    (b"fsync = 1\n", "fsync"),
    (b"max_clients = 1.5\n", "max_clients"),
    (b"port = [\n", "not valid TOML"),
    (b"\xff\xfe port = 1\n", "not valid TOML"),
])
def test_node_bad_toml(tmp_path, toml, field):
    f = tmp_path / "node.toml"
    f.write_bytes(toml)
    _refused(replikv("node", "--config", f, "--data-dir", tmp_path / "d"), field)


def test_node_unreadable_or_missing_config(tmp_path):
    (tmp_path / "afile").write_text("")
    _refused(replikv("node", "--config", tmp_path / "afile" / "node.toml"), "cannot be read")
    _refused(replikv("node", "--config", tmp_path / "missing.toml"), "not found")
    _refused(replikv("node", "--config", tmp_path), "directory")
    (tmp_path / "cluster.toml").write_text('mode = "leader"\n')
    _refused(replikv("node", "--cluster", tmp_path / "cluster.toml", "--data-dir", tmp_path / "d"), "nodes")


def test_node_valid_toml_flags_override(tmp_path):
    base = free_base_port(1)
    data = tmp_path / "data"
    (tmp_path / "node.toml").write_text(
        f'[node]\nport = {base}\npeer-port = {base + 100}\nhttp_port = {base + 200}\n'
        f'data_dir = "{data}"\nfsync = "always"\nmax_bulk_len = "1mb"\nmax-clients = 50\n')
    proc = subprocess.Popen([sys.executable, "-m", "replikv", "node", "--config", str(tmp_path / "node.toml"),
                             "--fsync", "no"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        r = client(base)
        wait_for(r.ping, timeout=30, what="the node to answer")
        info = r.info()
        assert info["maxclients"] == 50
        assert info["appendfsync"] == "no"       # the flag wins over the file
        with urllib.request.urlopen(f"http://127.0.0.1:{base + 200}/status", timeout=5) as resp:
            assert json.loads(resp.read())["data_dir"] == str(data)
        with socket.create_connection(("127.0.0.1", base), timeout=10) as s:   # max_bulk_len = "1mb"
            s.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$%d\r\n" % (1024 * 1024 + 1))
            assert s.recv(1024).startswith(b"-ERR Protocol error: invalid bulk length")
        assert r.set("a", "b")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert b"Traceback" not in out and b"stopped at seq 1" in out
    assert (data / "log").exists() or any(data.iterdir())   # the node wrote where the file said


def test_one_node_per_data_dir(tmp_path):
    data = tmp_path / "data"
    a, b = free_base_port(1), free_base_port(1)

    def start(port):
        return subprocess.Popen([sys.executable, "-m", "replikv", "node", "--port", str(port), "--peer-port",
                                 str(port + 100), "--http-port", str(port + 200), "--data-dir", str(data)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    first = start(a)
    try:
        wait_for(client(a).ping, timeout=30, what="the first node to answer")
        assert client(a).set("k", "v")
        second = start(b)
        out, err = second.communicate(timeout=30)
        assert second.returncode == 1, out + err
        assert b"in use by another node" in err and str(first.pid).encode() in err and b"Traceback" not in err
        assert client(a).get("k") == b"v"
        # a crash leaves no stale lock: after kill -9 the data dir can be served again
        first.kill()
        first.wait()
        first = start(b)
        wait_for(client(b).ping, timeout=30, what="a node on the same data dir after the crash")
        assert client(b).get("k") == b"v"
    finally:
        first.kill()
        first.wait()
