"""Background snapshots on a real node: taken (forked) while writes go on, tied to one exact
log position, surviving a clean restart and a kill -9, and removing the segments they cover.
"""

from __future__ import annotations

import os
import random
import threading

import pytest

from replikv.core.keyspace import Keyspace, digest
from replikv.storage import snapshot as snap
from replikv.storage.log import RecordLog
from tests.conftest import client, wait_for


class Load:
    """Threads issuing a mix of writes (strings, hashes, sets, counters, deletes, far-future
    TTLs) until stopped. Every reply is checked to be a reply, not an error."""

    def __init__(self, port: int, threads: int = 3, seed: int = 0) -> None:
        self.port = port
        self.stop_ev = threading.Event()
        self.count = 0
        self.errors: list = []
        self.threads = [threading.Thread(target=self._run, args=(seed + i,), daemon=True)
                        for i in range(threads)]

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        r = client(self.port)
        try:
            while not self.stop_ev.is_set():
                p = r.pipeline(transaction=False)
                for _ in range(20):
                    k = rng.randrange(3000)
                    op = rng.randrange(7)
                    if op == 0:
                        p.set(f"s:{k}", rng.randbytes(rng.randrange(1, 200)))
                    elif op == 1:
                        p.hset(f"h:{k % 300}", f"f{rng.randrange(20)}", rng.randrange(1000))
                    elif op == 2:
                        p.sadd(f"t:{k % 300}", rng.randrange(50))
                    elif op == 3:
                        p.incr(f"c:{k % 100}")
                    elif op == 4:
                        p.delete(f"s:{k}")
                    elif op == 5:
                        p.expire(f"s:{k}", 100_000)
                    else:
                        p.append(f"a:{k % 200}", b"xy")
                p.execute()
                self.count += 20
        except Exception as e:  # noqa: BLE001
            self.errors.append(e)
        finally:
            r.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_ev.set()
        for t in self.threads:
            t.join(20)
        assert not self.errors, self.errors


def status(cl):
    return cl.http_get(cl.nodes[0], "/status")


def seg_firsts(data_dir: str) -> list[int]:
    return sorted(int(f[:-4]) for f in os.listdir(os.path.join(data_dir, "log")) if f.endswith(".log"))


def children_of(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(d))
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def bgsave_and_wait(cl, r) -> int:
    before = status(cl)["snapshot_seq"]
    assert r.bgsave()
    wait_for(lambda: (s := status(cl))["snapshot_seq"] > before and not s["snapshot_in_progress"],
             timeout=30, what="the snapshot to finish")
    return status(cl)["snapshot_seq"]


@pytest.mark.parametrize("policy", ["always", "everysec"])
def test_snapshot_under_load_then_restarts(cluster_factory, policy):
    cl = cluster_factory(1, fsync=policy, segment_bytes=8192, snapshot_every_records=0,
                         log_retention_bytes=0)
    cl.start()
    spec = cl.nodes[0]
    r = client(spec.port)
    with Load(spec.port) as load:
        wait_for(lambda: len(seg_firsts(spec.data_dir)) >= 6, timeout=30, what="several segments")
        seq = bgsave_and_wait(cl, r)
        # writes went on while the child wrote: the log moved past the snapshot
        wait_for(lambda: status(cl)["last_seq"] > seq + 50, what="writes after the snapshot")
    assert load.count > 500
    # the snapshot file is there, alone, named after its position
    assert sorted(os.listdir(os.path.join(spec.data_dir, "snapshots"))) == [snap.snapshot_name(seq)]
    # every segment whose records are all covered by the snapshot is gone
    firsts = seg_firsts(spec.data_dir)
    assert firsts[0] <= seq + 1
    for nxt in firsts[1:]:
        assert nxt - 1 > seq, f"segment ending at {nxt - 1} <= snapshot {seq} was kept: {firsts}"

    want = r.execute_command("DEBUG", "DIGEST")
    keys = r.dbsize()
    assert keys > 200
    r.close()

    cl.stop_node(spec.node_id)             # clean restart: snapshot + log tail
    cl.start_node(spec)
    r = client(spec.port)
    assert r.execute_command("DEBUG", "DIGEST") == want
    assert r.execute_command("DIGEST") == want
    assert r.dbsize() == keys
    st = status(cl)
    assert st["snapshot_seq"] == seq

    # a quiet snapshot covers everything: the log shrinks to (about) one segment
    seq2 = bgsave_and_wait(cl, r)
    assert seq2 == st["last_seq"]
    assert len(seg_firsts(spec.data_dir)) <= 2
    assert sorted(os.listdir(os.path.join(spec.data_dir, "snapshots"))) == [snap.snapshot_name(seq2)]
    r.set("after-snapshot", "1")
    want2 = r.execute_command("DEBUG", "DIGEST")
    r.close()

    cl.kill(spec.node_id)                  # kill -9: snapshot + log tail again
    cl.start_node(spec)
    r = client(spec.port)
    assert r.execute_command("DEBUG", "DIGEST") == want2
    assert r.get("after-snapshot") == b"1"
    r.close()


def test_snapshot_is_the_log_prefix_at_its_position(cluster_factory):
    """Keep the whole log; the snapshot taken under load must equal replaying exactly the
    log records up to its seq: consistent, and tied to that one position."""
    cl = cluster_factory(1, fsync="everysec", segment_bytes=16384, snapshot_every_records=0,
                         log_retention_bytes=1 << 30)
    cl.start()
    spec = cl.nodes[0]
    r = client(spec.port)
    with Load(spec.port, seed=100):
        wait_for(lambda: status(cl)["last_seq"] > 300, what="some writes")
        seq = bgsave_and_wait(cl, r)
        wait_for(lambda: status(cl)["last_seq"] > seq + 50, what="writes after the snapshot")
    r.close()
    cl.stop_node(spec.node_id)
    with open(os.path.join(spec.data_dir, "snapshots", snap.snapshot_name(seq)), "rb") as fh:
        header, chunks = snap.read_snapshot_bytes(fh.read())
    assert header["seq"] == seq
    from_snapshot = Keyspace()
    snap.load_into(from_snapshot, chunks)
    replayed = Keyspace()
    log = RecordLog(os.path.join(spec.data_dir, "log"))
    n = 0
    for rec in log.open():
        if rec.seq > seq:
            break
        for e in rec.effects:
            replayed.apply(e, rec.seq)
        n += 1
    assert n == seq
    assert digest(from_snapshot) == digest(replayed)
    assert len(from_snapshot) == len(replayed) > 100


def test_kill9_while_snapshot_child_writes(cluster_factory):
    """SIGKILL the node right after BGSAVE: the child dies with it (it must not finish an
    old life's snapshot into the next life's data dir), no temp file lingers after the
    restart, and the data is all there."""
    cl = cluster_factory(1, fsync="always", snapshot_every_records=0)
    cl.start()
    spec = cl.nodes[0]
    r = client(spec.port)
    for i in range(0, 60_000, 5000):
        r.mset({f"k:{j}": b"v" * 64 for j in range(i, i + 5000)})
    want = r.execute_command("DEBUG", "DIGEST")
    parent = cl.pid(spec)
    assert r.bgsave()
    children = children_of(parent)
    cl.kill(spec.node_id)
    r.close()
    assert children, "no snapshot child seen"
    for child in children:
        wait_for(lambda c=child: not alive(c), timeout=10, what=f"snapshot child {child} to end")
    # only the parent publishes a snapshot, and it is dead
    snap_dir = os.path.join(spec.data_dir, "snapshots")
    assert not snap.list_snapshots(snap_dir)
    # the child was killed with its parent (PR_SET_PDEATHSIG) half way through 60k keys
    # (about half a second of work): an orphan would have completed its temp file
    tmp = os.path.join(snap_dir, snap.snapshot_name(12) + ".tmp")
    if os.path.exists(tmp):
        with open(tmp, "rb") as fh, pytest.raises(snap.BadSnapshot):
            snap.read_snapshot_bytes(fh.read())
    cl.start_node(spec)
    r = client(spec.port)
    assert r.execute_command("DEBUG", "DIGEST") == want
    assert r.dbsize() == 60_000
    assert not [f for f in os.listdir(os.path.join(spec.data_dir, "snapshots")) if f.endswith(".tmp")]
    # and it can snapshot again
    r.set("one-more", "1")
    bgsave_and_wait(cl, r)
    r.close()
