"""Damaged data directories, with a real node: a torn tail is cut, reported in node.log, and
the valid prefix is served; corruption anywhere else stops the node (exit code 2) with a
clear message. Expiry reaches the log as a delete.
"""

from __future__ import annotations

import os

import pytest

from replikv.core.keyspace import E_DEL
from replikv.storage.log import MAGIC, RecordLog, iter_frames
from tests.conftest import client, wait_for

EXIT_CORRUPT = 2


def segments(data_dir: str) -> list[str]:
    d = os.path.join(data_dir, "log")
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".log"))


def frames(path: str) -> list[tuple[int, int]]:
    with open(path, "rb") as fh:
        data = fh.read()
    return [(off, end) for off, end, p in iter_frames(data, len(MAGIC)) if p is not None]


def flip(path: str, offset: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0xFF]))


def node_log(cl) -> str:
    with open(cl.log_file(cl.nodes[0]), errors="replace") as fh:
        return fh.read()


def write_keys(port: int, n: int) -> None:
    r = client(port)
    for i in range(n):
        assert r.set(f"k{i}", f"v{i}")
    r.close()


@pytest.mark.parametrize("damage", ["flip-payload", "flip-length", "cut-mid-frame", "cut-header"])
def test_torn_tail_truncated_reported_and_prefix_served(cluster_factory, damage):
    cl = cluster_factory(1, fsync="always")
    cl.start()
    spec = cl.nodes[0]
    write_keys(spec.port, 50)
    cl.stop_node(spec.node_id)
    last = segments(spec.data_dir)[-1]
    off, end = frames(last)[-1]
    if damage == "flip-payload":
        flip(last, (off + 8 + end) // 2)
    elif damage == "flip-length":
        flip(last, off + 2)
    else:
        with open(last, "r+b") as fh:
            fh.truncate((off + end) // 2 if damage == "cut-mid-frame" else off + 5)

    cl.start_node(spec)
    text = node_log(cl)
    assert "torn tail" in text and f"byte offset {off}" in text
    st = cl.http_get(spec, "/status")
    assert st["truncation"] and "torn tail" in st["truncation"]
    assert st["last_seq"] == 49
    r = client(spec.port)
    assert r.get("k49") is None                       # the damaged record is gone ...
    assert r.mget([f"k{i}" for i in range(49)]) == [f"v{i}".encode() for i in range(49)]  # ... nothing else
    assert r.dbsize() == 49
    # the log goes on cleanly from there
    r.set("k49", "again")
    r.close()
    cl.stop_node(spec.node_id)
    cl.start_node(spec)
    r = client(spec.port)
    assert r.get("k49") == b"again" and r.dbsize() == 50
    r.close()
    assert node_log(cl).count("torn tail") == 1
    assert cl.http_get(spec, "/status")["truncation"] is None


@pytest.mark.parametrize("where", ["earlier-segment", "mid-last-segment", "segment-header"])
def test_corruption_before_the_tail_refuses_to_start(cluster_factory, where):
    cl = cluster_factory(1, fsync="everysec", segment_bytes=1024)
    cl.start()
    spec = cl.nodes[0]
    write_keys(spec.port, 200)
    cl.stop_node(spec.node_id)
    segs = segments(spec.data_dir)
    assert len(segs) >= 4
    if where == "earlier-segment":
        victim = segs[1]
        off, end = frames(victim)[len(frames(victim)) // 2]
        flip(victim, off + 10)
    elif where == "mid-last-segment":
        victim = segs[-1]
        fr = frames(victim)
        assert len(fr) >= 3
        off, end = fr[0]
        flip(victim, off + 10)
    else:
        victim = segs[2]
        flip(victim, 3)
    size_before = os.path.getsize(victim)

    cl.start_node(spec, wait=False)
    proc = cl.procs[spec.node_id]
    assert proc.wait(timeout=30) == EXIT_CORRUPT
    text = node_log(cl)
    assert "refusing to start" in text and os.path.basename(victim) in text
    if where != "segment-header":
        assert f"corrupt record at byte offset {off}" in text
    else:
        assert "not a replikv log segment" in text
    # nothing was "repaired" behind the operator's back
    assert os.path.getsize(victim) == size_before
    assert len(segments(spec.data_dir)) == len(segs)


def test_expired_keys_are_logged_as_deletes(cluster_factory):
    cl = cluster_factory(1, fsync="always")
    cl.start()
    spec = cl.nodes[0]
    r = client(spec.port)
    r.set("keep", "1")
    r.set("active", "1", px=150)              # removed by the active expiry cycle
    wait_for(lambda: cl.http_get(spec, "/status")["keys"] == 1, timeout=10, what="active expiry")
    r.config_set("active-expire-hz", 0)        # from now on only an access expires a key
    r.set("lazy", "1", px=100)
    wait_for(lambda: r.pttl("lazy") == -2 or r.get("lazy") is None, what="lazy to expire")
    assert r.get("lazy") is None
    assert r.exists("active", "lazy") == 0
    r.close()
    cl.stop_node(spec.node_id)

    deletes = set()
    log = RecordLog(os.path.join(spec.data_dir, "log"))
    for rec in log.open():
        for eff in rec.effects:
            if eff[0] == E_DEL:
                deletes.add(eff[1])
    assert {b"active", b"lazy"} <= deletes
    assert b"keep" not in deletes

    cl.start_node(spec)
    r = client(spec.port)
    assert r.exists("active", "lazy") == 0 and r.get("keep") == b"1"
    assert cl.http_get(spec, "/status")["keys"] == 1
    r.close()
