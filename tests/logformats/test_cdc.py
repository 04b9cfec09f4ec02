"""Change data capture: a ``replikv cdc`` consumer killed mid-stream and resumed from its last
complete position sees every change exactly once, in order (from a data dir and from a node)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import client, wait_for

from .conftest import wait_converged


def _consumer(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "replikv", "cdc", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)


def complete_records(raw: bytes) -> list[dict]:
    """The changes of the records printed whole (a killed consumer may leave a cut line, or a
    record with only some of its changes)."""
    lines = raw.split(b"\n")
    if lines and lines[-1]:
        lines = lines[:-1]          # a line cut short by the kill
    out = [json.loads(x) for x in lines if x]
    while out and out[-1]["i"] != out[-1]["n"] - 1:
        pos = out[-1]["pos"]
        while out and out[-1]["pos"] == pos:
            out.pop()
    return out


def read_some(p: subprocess.Popen, nbytes: int) -> bytes:
    """Read at least ``nbytes`` of the consumer's output (it blocks when the pipe is full, so
    it is in the middle of the stream when killed)."""
    buf = b""
    while len(buf) < nbytes:
        chunk = os.read(p.stdout.fileno(), 65536)
        if not chunk:
            break
        buf += chunk
    return buf


def kill_and_drain(p: subprocess.Popen, buf: bytes) -> bytes:
    p.send_signal(signal.SIGKILL)
    rest = p.stdout.read()
    p.wait(10)
    return buf + rest


def write_batch(r, start: int, n: int) -> list[tuple]:
    """Writes, and the changes they must produce: one SET per record, and every 7th an MSET
    (one record, three changes) so that a kill can fall inside a record."""
    expect = []
    for i in range(start, start + n):
        if i % 7 == 0:
            r.mset({f"a{i}": f"x{i}" * 20, f"b{i}": "y", f"c{i}": "z"})
            expect += [("set", f"a{i}", f"x{i}" * 20), ("set", f"b{i}", "y"), ("set", f"c{i}", "z")]
        else:
            r.set(f"k{i}", f"v{i}" * 30)
            expect.append(("set", f"k{i}", f"v{i}" * 30))
    return expect


def check_exactly_once(changes: list[dict], expect: list[tuple]) -> None:
    # "set" from effects, "put" (an after-image) under the row format
    got = [("set" if c["op"] == "put" else c["op"], c["key"], c["value"]) for c in changes]
    assert got == expect
    ids = [(c["pos"], c["i"]) for c in changes]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


@pytest.mark.parametrize("source", ["data-dir", "node"])
def test_cdc_consumer_killed_and_resumed_sees_each_change_once(cluster_root, source):
    cl = cluster_root(3, log_format="row" if source == "node" else "physical")
    leader = cl.node(1)
    r = client(leader.port)
    expect = write_batch(r, 0, 1500)
    if source == "data-dir":
        where = ["--data-dir", leader.data_dir, "--follow"]
    else:
        where = ["--node", f"{leader.host}:{leader.http_port}"]
    p = _consumer([*where, "--from", "1"])
    first = complete_records(kill_and_drain(p, read_some(p, 70_000)))
    assert 0 < len(first) < len(expect), "the consumer should be killed in the middle of the stream"
    last = first[-1]["pos"]
    expect += write_batch(r, 1500, 300)       # more changes while no consumer runs
    wait_converged(cl)
    # resume from the last position handled completely + 1
    p = _consumer([*where, "--from", str(last + 1)])
    rest = b""
    want = len(expect) - len(first)
    while True:
        chunk = os.read(p.stdout.fileno(), 65536)
        rest += chunk
        if not chunk or rest.count(b"\n") >= want:
            break
    p.kill()
    p.wait(10)
    second = complete_records(rest)
    check_exactly_once(first + second, expect)
    # the follower's own log gives the same changes (row images under "row", effects otherwise)
    out = subprocess.run([sys.executable, "-m", "replikv", "cdc", "--data-dir", cl.node(2).data_dir, "--from",
                          str(last + 1)], capture_output=True, timeout=60)
    assert out.returncode == 0
    follower = complete_records(out.stdout)
    assert [(c["key"], c["value"]) for c in follower] == [(c["key"], c["value"]) for c in second]
    if source == "node":
        assert {c["op"] for c in follower} == {"put"}


def test_cdc_reports_a_position_no_longer_in_the_log(cluster_root):
    cl = cluster_root(1, log_format="physical", settings={"log_retention_bytes": 0})
    r = client(cl.node(1).port)
    r.set("a", "1")
    r.execute_command("BGSAVE")
    log_dir = os.path.join(cl.node(1).data_dir, "log")
    wait_for(lambda: not os.path.exists(os.path.join(log_dir, "%020d.log" % 1)), 20,
             what="the first segment removed after the snapshot")
    r.set("b", "2")
    out = subprocess.run([sys.executable, "-m", "replikv", "cdc", "--data-dir", cl.node(1).data_dir, "--from", "1"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 3 and "no longer in the log" in out.stderr
    leader = cl.node(1)
    out = subprocess.run([sys.executable, "-m", "replikv", "cdc", "--node", f"{leader.host}:{leader.http_port}",
                          "--from", "1"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 3 and "no longer in the log" in out.stderr
    out = subprocess.run([sys.executable, "-m", "replikv", "cdc", "--node", f"{leader.host}:{leader.http_port}",
                          "--from", "2", "--no-follow"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and json.loads(out.stdout)["key"] == "b"
