"""Durability under ``fsync always``, with a real node process killed by SIGKILL.

Many connections INCR many counters; each write is counted as *sent* before it leaves and
as *acknowledged* when its reply arrives. The node is killed at a random moment, restarted
on the same data directory, and every counter must satisfy
``base + acknowledged <= value <= base + sent`` (nothing acknowledged is lost, nothing is
invented). Twenty rounds on one data directory, with small segments, automatic snapshots
(and BGSAVEs racing the kill), so each recovery starts from what the previous recoveries
and snapshots left behind.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import time

import pytest

from tests.conftest import client

N_COUNTERS = 64
N_CONNS = 16
ROUNDS = 20


async def _writer(port: int, rng: random.Random, sent: list, acked: list, top: list, stop: asyncio.Event,
                  pipeline: int = 1) -> None:
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    try:
        while not stop.is_set():
            batch = [rng.randrange(N_COUNTERS) for _ in range(pipeline)]
            out = []
            for c in batch:
                key = b"ctr:%d" % c
                sent[c] += 1                      # counted before it can possibly be applied
                out.append(b"*2\r\n$4\r\nINCR\r\n$%d\r\n%s\r\n" % (len(key), key))
            w.write(b"".join(out))
            await w.drain()
            for c in batch:
                line = await r.readline()
                if not line.endswith(b"\r\n"):
                    return                        # the node died: the rest are not acknowledged
                assert line[:1] == b":", line
                acked[c] += 1
                v = int(line[1:-2])
                if v > top[c]:
                    top[c] = v
    except (ConnectionError, OSError, asyncio.IncompleteReadError):
        return
    finally:
        w.close()


def _read_counters(port: int) -> list[int]:
    r = client(port)
    vals = r.mget([f"ctr:{i}" for i in range(N_COUNTERS)])
    r.close()
    return [int(v) if v is not None else 0 for v in vals]


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def _fill(port: int, n: int) -> None:
    """Bulk that makes every snapshot take a while, so kills land in the middle of some."""
    r = client(port)
    for i in range(0, n, 2000):
        r.mset({f"fill:{j}": b"x" * 100 for j in range(i, min(i + 2000, n))})
    r.close()


def _kill_rounds(cl, rounds: int, seed: int) -> dict:
    """Run ``rounds`` write-then-SIGKILL rounds on one node and data dir; check the counters
    after each restart. Returns totals."""
    spec = cl.nodes[0]
    rng = random.Random(seed)
    base = _read_counters(spec.port)
    totals = {"acked": 0, "sent": 0, "rounds": 0}
    for rnd in range(rounds):
        sent = [0] * N_COUNTERS
        acked = [0] * N_COUNTERS
        top = [0] * N_COUNTERS
        # kill moments: just after the writers start, mid-flight, a while in; some rounds
        # race a BGSAVE (the snapshot child is then often killed, or just done)
        kill_after = rng.choice([rng.uniform(0.005, 0.05), rng.uniform(0.05, 0.3), rng.uniform(0.2, 0.6)])
        bgsave_at = rng.uniform(0.0, kill_after) if rng.random() < 0.4 else None

        async def round_(sent=sent, acked=acked, top=top, kill_after=kill_after, bgsave_at=bgsave_at):
            stop = asyncio.Event()
            tasks = [asyncio.create_task(_writer(spec.port, random.Random(rng.random()), sent, acked, top,
                                                 stop, pipeline=rng.choice([1, 1, 4])))
                     for _ in range(N_CONNS)]
            if bgsave_at is not None:
                await asyncio.sleep(bgsave_at)
                r, w = await asyncio.open_connection("127.0.0.1", spec.port)
                w.write(b"*1\r\n$6\r\nBGSAVE\r\n")
                await w.drain()
                await r.readline()
                w.close()
                await asyncio.sleep(kill_after - bgsave_at)
            else:
                await asyncio.sleep(kill_after)
            alive = cl.procs[spec.node_id].poll() is None
            cl.kill(spec.node_id)                 # SIGKILL: no shutdown, no flush
            stop.set()
            assert alive, "the node stopped by itself before the kill"
            await asyncio.wait_for(asyncio.gather(*tasks), 20)

        asyncio.run(round_())
        cl.start_node(spec)
        vals = _read_counters(spec.port)
        for c in range(N_COUNTERS):
            lo, hi = base[c] + acked[c], base[c] + sent[c]
            assert lo <= vals[c] <= hi, (
                f"round {rnd} (seed {seed}, kill after {kill_after:.3f}s, bgsave at {bgsave_at}): counter {c} "
                f"is {vals[c]}, expected between {lo} (acknowledged) and {hi} (sent)")
            assert vals[c] >= top[c], f"round {rnd}: counter {c} is {vals[c]} but a reply said {top[c]}"
        totals["acked"] += sum(acked)
        totals["sent"] += sum(sent)
        totals["rounds"] += 1
        base = vals
    # a clean stop after all that changes nothing
    cl.stop_node(spec.node_id)
    cl.start_node(spec)
    assert _read_counters(spec.port) == base
    with open(cl.log_file(spec), errors="replace") as fh:
        log_text = fh.read()
    assert "refusing to start" not in log_text and "Traceback" not in log_text
    totals["log"] = log_text
    return totals


def _seed() -> int:
    return int(os.environ.get("REPLIKV_TEST_SEED", "0")) or random.randrange(1 << 30)


def test_kill9_rounds_lose_no_acknowledged_write(cluster_factory):
    """fsync always: an acknowledged write has been fsynced; 20 SIGKILLs lose none."""
    t0 = time.monotonic()
    cl = cluster_factory(1, fsync="always", segment_bytes=16384, snapshot_every_records=2500,
                         log_retention_bytes=0)
    cl.start()
    spec = cl.nodes[0]
    _fill(spec.port, 20_000)
    totals = _kill_rounds(cl, ROUNDS, _seed())
    assert totals["acked"] > 20 * ROUNDS, totals
    # snapshots were taken (some while the node was killed) and their covered segments went
    assert "background snapshot at seq" in totals["log"]
    assert os.listdir(os.path.join(spec.data_dir, "snapshots"))
    assert len(os.listdir(os.path.join(spec.data_dir, "log"))) < 60
    assert time.monotonic() - t0 < 100


def test_kill9_rounds_with_the_fsync_thread(cluster_factory):
    """fsync always with ``fsync_writer = "thread"`` (the IO thread writes and fsyncs while
    the loop goes on; replies wait for it): no acknowledged write is lost either."""
    cl = cluster_factory(1, fsync="always", fsync_writer="thread", segment_bytes=16384,
                         snapshot_every_records=3000, log_retention_bytes=0)
    cl.start()
    _fill(cl.nodes[0].port, 5_000)
    totals = _kill_rounds(cl, 5, _seed())
    assert totals["acked"] > 20, totals


@pytest.mark.parametrize("policy", ["everysec", "no"])
def test_kill9_rounds_other_fsync_policies(cluster_factory, policy):
    """everysec / no: a reply leaves once its record was handed to the OS (written, not yet
    fsynced), so a process crash loses no acknowledged write (a power loss could: up to a
    second under everysec, whatever the OS had not flushed under no)."""
    cl = cluster_factory(1, fsync=policy, segment_bytes=16384, snapshot_every_records=3000,
                         log_retention_bytes=0)
    cl.start()
    _fill(cl.nodes[0].port, 5_000)
    totals = _kill_rounds(cl, 5, _seed())
    assert totals["acked"] > 20, totals


@pytest.mark.parametrize("writer", ["inline", "thread"])
def test_group_commit_under_concurrent_writers(cluster_factory, writer):
    """Under fsync always one fsync covers every write of a loop iteration (inline) or every
    write that arrived while the previous one ran (thread): with many writers the fsync
    count stays well below the acknowledged writes."""
    cl = cluster_factory(1, fsync="always", fsync_writer=writer)
    cl.start()
    spec = cl.nodes[0]
    sent = [0] * N_COUNTERS
    acked = [0] * N_COUNTERS
    top = [0] * N_COUNTERS

    async def run():
        stop = asyncio.Event()
        tasks = [asyncio.create_task(_writer(spec.port, random.Random(i), sent, acked, top, stop))
                 for i in range(32)]
        await asyncio.sleep(1.5)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 20)

    asyncio.run(run())
    metrics = cl.http_get(spec, "/metrics")
    fsyncs = _metric(metrics, "replikv_fsync_seconds_count")
    n = sum(acked)
    assert n == sum(sent) > 500
    assert fsyncs >= 1
    assert fsyncs * 4 < n, f"{fsyncs:.0f} fsyncs for {n} acknowledged writes: no group commit"
    # every acknowledged write is in memory and, the fsync policy being always, synced
    st = cl.http_get(spec, "/status")
    assert st["synced_seq"] == st["last_seq"] >= n
    assert sum(_read_counters(spec.port)) == n


def test_fsync_policy_switched_under_load(cluster_factory):
    """CONFIG SET fsync while writers run: a batch still on the IO thread must be written
    before the next one (records in order), and a kill -9 after that loses nothing."""
    cl = cluster_factory(1, fsync="always", segment_bytes=16384)
    cl.start()
    spec = cl.nodes[0]
    sent = [0] * N_COUNTERS
    acked = [0] * N_COUNTERS
    top = [0] * N_COUNTERS

    async def run():
        stop = asyncio.Event()
        tasks = [asyncio.create_task(_writer(spec.port, random.Random(i), sent, acked, top, stop))
                 for i in range(N_CONNS)]
        r, w = await asyncio.open_connection("127.0.0.1", spec.port)
        for policy in ["everysec", "always", "no", "always", "everysec", "always"] * 2:
            await asyncio.sleep(0.08)
            arg = policy.encode()
            w.write(b"*4\r\n$6\r\nCONFIG\r\n$3\r\nSET\r\n$5\r\nfsync\r\n$%d\r\n%s\r\n" % (len(arg), arg))
            await w.drain()
            assert await r.readline() == b"+OK\r\n"
        w.close()
        await asyncio.sleep(0.05)
        assert cl.procs[spec.node_id].poll() is None, "the node stopped by itself"
        cl.kill(spec.node_id)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 20)

    asyncio.run(run())
    cl.start_node(spec)
    vals = _read_counters(spec.port)
    assert sum(acked) > 100
    for c in range(N_COUNTERS):
        assert acked[c] <= vals[c] <= sent[c], (c, acked[c], vals[c], sent[c])
