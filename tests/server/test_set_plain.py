"""``SET key value`` has a lane of its own (``Node.set_plain``: dispatch, command and reply in
one step). It must be indistinguishable from the general path (``Node.execute`` ->
``cmd_set``), which a lower-case ``set`` still takes: the same replies, keyspace, counters and
log records, on real node processes; and it must decline whatever it does not handle as is."""

from __future__ import annotations

import os
import re
import time
import urllib.request

import redis

from replikv.core.keyspace import E_SET
from replikv.server.connection import ClientConnection
from replikv.storage.log import RecordLog, split_records
from tests.conftest import client


def _set_calls(http_port: int) -> int:
    """SETs counted by the node (``replikv_commands_total{command="set"}`` on /metrics)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5).read().decode()
    m = re.search(r'^replikv_commands_total\{command="set"\} ([0-9.e+]+)$', text, re.M)
    return int(float(m.group(1))) if m else 0


def _steps(at_ms: int) -> list:
    """Requests as (connection 0 or 1, args), SET spelt ``"SET?"``; a float: sleep until
    that time (ms). Expiry times are absolute (``at_ms``): both nodes log the same records."""
    return [
        (0, ["SET?", "k", "v"]),                         # a new key
        (0, ["SET?", "k", "w"]),                         # over a string
        (0, ["HSET", "h", "f", "1"]),
        (0, ["SET?", "h", "now a string"]),              # over another type
        (0, ["TYPE", "h"]),
        (0, ["SET", "t", "x", "PXAT", str(at_ms + 100_000)]),
        (0, ["SET?", "t", "y"]),                         # clears the TTL
        (0, ["TTL", "t"]),
        (0, ["SET", "gone", "x", "PXAT", str(at_ms)]),
        float(at_ms + 5),
        (0, ["SET?", "gone", "back"]),                   # over an expired key
        (0, ["GET", "gone"]),
        (0, ["TTL", "gone"]),
        (0, ["SET?", "", ""]),                           # empty key and value
        (0, ["SET?", b"\x00\xff\r\n", b"\r\n$3\r\n"]),   # bytes that look like RESP
        # WATCH: a SET from another connection aborts the transaction
        (1, ["WATCH", "w"]),
        (0, ["SET?", "w", "1"]),
        (1, ["MULTI"]),
        (1, ["GET", "w"]),
        (1, ["EXEC"]),
        # inside MULTI the SET is queued, then runs
        (1, ["MULTI"]),
        (1, ["SET?", "m", "1"]),
        (1, ["EXEC"]),
        # a value over proto-max-bulk-len: the error of the general path
        (0, ["CONFIG", "SET", "proto-max-bulk-len", "1000"]),
        (0, ["SET?", "big", "x" * 2000]),
        (0, ["SET?", "small", "x" * 1000]),
        (0, ["CONFIG", "SET", "proto-max-bulk-len", str(512 * 1024 * 1024)]),
        # wrong arity is not the lane's: the same error either way
        (0, ["SET?", "only-key"]),
        *[(0, ["GET", k]) for k in ("k", "h", "t", "gone", "", "w", "m", "big", "small")],
        (0, ["DEBUG", "DIGEST"]),
        (0, ["DBSIZE"]),
    ]


def _records(data_dir: str) -> list:
    log = RecordLog(os.path.join(data_dir, "log"))
    recs = [(r.seq, r.epoch, r.effects) for r in log.open()]
    log.close()
    return recs


def test_set_plain_matches_the_general_path_on_real_nodes(cluster_factory):
    a = cluster_factory(1)
    b = cluster_factory(1)
    a.start()
    b.start()
    ra, ra2 = client(a.nodes[0].port, protocol=2), client(a.nodes[0].port, protocol=2)
    rb, rb2 = client(b.nodes[0].port, protocol=2), client(b.nodes[0].port, protocol=2)
    for r in (ra, rb):
        # no active expiry: its cycle would log the expired key's delete on one node and not
        # on the other, depending on when it runs
        r.execute_command("CONFIG", "SET", "hz", "0")
    at_ms = int(time.time() * 1000) + 300
    got_a, got_b = [], []
    for step in _steps(at_ms):      # in step on both nodes: the same times fall alike
        if isinstance(step, float):
            while time.time() * 1000 <= step:
                time.sleep(0.005)
            continue
        i, args = step
        for conns, name, got in (((ra, ra2), "SET", got_a), ((rb, rb2), "set", got_b)):
            try:
                got.append(conns[i].execute_command(*[name if x == "SET?" else x for x in args]))
            except redis.ResponseError as e:
                got.append(("error", str(e)))
    got_a.append(ra.info("stats")["total_commands_processed"])
    got_b.append(rb.info("stats")["total_commands_processed"])
    assert got_a == got_b
    sets_a, sets_b = _set_calls(a.nodes[0].http_port), _set_calls(b.nodes[0].http_port)
    assert sets_a == sets_b and sets_a >= 10
    for c in (ra, ra2, rb, rb2):
        c.close()
    a.stop()
    b.stop()
    recs_a = _records(a.nodes[0].data_dir)
    recs_b = _records(b.nodes[0].data_dir)
    assert recs_a and recs_a == recs_b   # the same records at the same positions (timestamps aside)


def test_set_plain_takes_a_plain_set_and_declines_the_rest(bare_node):
    node = bare_node
    conn = ClientConnection(node)
    assert node.set_plain(conn, [b"SET", b"k", b"v"])
    assert conn.out == [b"+OK\r\n"]
    assert node.storage.last_seq == 1 and conn.last_write_seq == 1
    assert node.storage.ks.data[b"k"].value == b"v"
    assert node.metrics.ops[b"SET"] == 1 and node.stats_commands == 1
    # the record waits in the log buffer for the end of the loop iteration
    [(seq, epoch, _ts, effects, _frame)] = split_records(bytes(node.storage._buf), 1)
    assert (seq, epoch, effects) == (1, node.storage.epoch, [[E_SET, b"k", b"v", 0]])
    conn.out.clear()

    def declines() -> None:
        seq, ops = node.storage.last_seq, dict(node.metrics.ops)
        assert not node.set_plain(conn, [b"SET", b"k", b"x" * 64])
        assert node.storage.last_seq == seq and node.metrics.ops == ops and not conn.out
        assert node.storage.ks.data[b"k"].value == b"v"

    conn.multi = []                      # inside MULTI: queued by execute
    declines()
    conn.multi = None
    node.accepts_writes = False          # a follower / a node that refuses writes
    declines()
    node.accepts_writes = True
    node.config.max_bulk_len = 10        # too long: execute gives the error
    declines()
    node.config.max_bulk_len = 512 * 1024 * 1024
    conn.causal_deps = [(1, 1)]          # CAUSAL: execute records the dependencies
    declines()
    conn.causal_deps = None
    node.logfmt = object()               # row / statement log formats: execute builds the event
    declines()
    node.logfmt = None
    assert node.set_plain(conn, [b"SET", b"k", b"v2"])
    assert node.storage.ks.data[b"k"].value == b"v2" and node.storage.last_seq == 2
