"""One hypothesis-generated workload replayed under the statement, row and physical log
formats: every follower ends with the leader's DIGEST. With ``statement_unsafe`` the same
kind of workload (SPOP, relative expiry) makes followers diverge, and the leader warns."""

from __future__ import annotations

import os

import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import client, wait_for

from .conftest import digests, kill_all, make_cluster, repl_status, wait_converged

KEYS = [b"k0", b"k1", b"k2", b"k3", b"k4"]
SETS = [b"s0", b"s1"]          # mostly sets (SPOP must replicate the members it popped)
HASHES = [b"h0", b"h1"]
FIELDS = [b"f0", b"f1", b"f2"]
MEMBERS = [b"m%d" % i for i in range(12)]

key = st.sampled_from(KEYS)
skey = st.sampled_from(SETS + KEYS[:1])
hkey = st.sampled_from(HASHES + KEYS[:1])
anykey = st.sampled_from(KEYS + SETS + HASHES)
val = st.sampled_from([b"1", b"2", b"10", b"x", b"-3", b"2.5"])
long_secs = st.sampled_from([b"1000", b"5000"])   # never expire during a test
short_ms = st.sampled_from([b"1", b"2", b"5"])     # expire at once: lazy and active expiry deletes


def _set():
    opts = st.sampled_from([[], [b"EX", b"1000"], [b"PX", b"5"], [b"NX"], [b"XX"], [b"KEEPTTL"], [b"GET"],
                            [b"PX", b"900000", b"NX"], [b"EXAT", b"4102444800"]])
    return st.builds(lambda k, v, o: [b"SET", k, v, *o], key, val, opts)


single = st.one_of(
    _set(),
    st.builds(lambda k, s, v: [b"SETEX", k, s, v], key, long_secs, val),
    st.builds(lambda k, ms, v: [b"PSETEX", k, ms, v], key, short_ms, val),
    st.builds(lambda k: [b"INCR", k], key),
    st.builds(lambda k, n: [b"INCRBY", k, n], key, st.sampled_from([b"5", b"-7"])),
    st.builds(lambda k, f: [b"INCRBYFLOAT", k, f], key, st.sampled_from([b"0.1", b"1.5", b"-2.25", b"1e3"])),
    st.builds(lambda k, f, v: [b"HSET", k, f, v], hkey, st.sampled_from(FIELDS), val),
    st.builds(lambda k, f: [b"HINCRBY", k, f, b"3"], hkey, st.sampled_from(FIELDS)),
    st.builds(lambda k, f, x: [b"HINCRBYFLOAT", k, f, x], hkey, st.sampled_from(FIELDS),
              st.sampled_from([b"0.5", b"3.14159", b"-1.1"])),
    st.builds(lambda k, f: [b"HDEL", k, f], hkey, st.sampled_from(FIELDS)),
    st.builds(lambda k, ms: [b"SADD", k, *ms], skey, st.lists(st.sampled_from(MEMBERS), min_size=3, max_size=12)),
    st.builds(lambda k, m: [b"SREM", k, m], skey, st.sampled_from(MEMBERS)),
    st.builds(lambda k: [b"SPOP", k], skey),
    st.builds(lambda k, c: [b"SPOP", k, c], skey, st.sampled_from([b"1", b"2", b"3"])),
    st.builds(lambda k, s, o: [b"EXPIRE", k, s, *o], anykey, long_secs, st.sampled_from([[], [b"NX"], [b"GT"]])),
    st.builds(lambda k, ms: [b"PEXPIRE", k, ms], anykey, short_ms),
    st.builds(lambda k: [b"PERSIST", k], key),
    st.builds(lambda k: [b"DEL", k], anykey),
    st.builds(lambda k: [b"GET", k], anykey),        # may expire a key lazily
    st.builds(lambda a, b: [b"RENAME", a, b], anykey, anykey),
    st.builds(lambda k, v: [b"APPEND", k, v], key, val),
)
op = st.one_of(single, st.builds(lambda ops: [b"MULTI", ops], st.lists(single, min_size=1, max_size=5)))
workload = st.lists(op, min_size=5, max_size=40)


def run_workload(r: redis.Redis, ops: list) -> None:
    for o in ops:
        if o[0] == b"MULTI":
            p = r.pipeline(transaction=True)
            for c in o[1]:
                p.execute_command(*c)
            try:
                p.execute(raise_on_error=False)
            except redis.ResponseError:
                pass
            continue
        try:
            r.execute_command(*o)
        except redis.ResponseError:
            pass        # WRONGTYPE, not an integer...: errors are part of the workload


FORMATS = ("physical", "row", "statement")


@pytest.fixture(scope="module")
def clusters(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    made = {}
    try:
        for fmt in FORMATS:
            made[fmt] = make_cluster(str(root / fmt), 3, log_format=fmt)
        yield made
    finally:
        for cl in made.values():
            kill_all(cl)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(ops=workload)
@example(ops=[[b"SADD", b"s0", *MEMBERS], [b"SPOP", b"s0"], [b"SPOP", b"s0", b"2"], [b"SET", b"k0", b"1", b"EX", b"1000"],
              [b"EXPIRE", b"k0", b"5000"], [b"INCRBYFLOAT", b"k1", b"0.1"], [b"PSETEX", b"k2", b"1", b"x"],
              [b"HINCRBYFLOAT", b"h0", b"f0", b"1.5"],
              [b"MULTI", [[b"SPOP", b"s0"], [b"SETEX", b"k3", b"1000", b"v"], [b"GET", b"k2"]]]])
def test_workload_converges_under_every_format(clusters, ops):
    for fmt in FORMATS:
        cl = clusters[fmt]
        r = client(cl.node(1).port, protocol=2)
        r.execute_command("FLUSHALL")
        run_workload(r, ops)
    for fmt in FORMATS:
        cl = clusters[fmt]
        wait_converged(cl)
        assert repl_status(cl, 1)["log_format"] == fmt


def test_statement_unsafe_diverges_and_warns(cluster_root):
    cl = cluster_root(3, log_format="statement", statement_unsafe=True)
    r = client(cl.node(1).port)
    r.sadd("s", *[f"m{i}" for i in range(200)])
    for _ in range(10):
        r.spop("s")
    r.spop("s", 5)
    for i in range(10):
        r.set(f"e{i}", "v", ex=1000)         # relative expiry: the follower's clock decides
        r.expire(f"e{i}", 2000)
    last = cl.http_get(cl.node(1), "/status")["last_seq"]
    wait_for(lambda: all(repl_status(cl, n.node_id)["applied"] >= last for n in cl.nodes[1:]), 20,
             what="followers applied everything")
    d = digests(cl)
    assert d[1] != d[0] and d[2] != d[0], "unsafe statements should make the followers diverge"
    s0 = client(cl.node(1).port).smembers("s")
    assert client(cl.node(2).port).smembers("s") != s0      # SPOP picked other members there
    st1 = repl_status(cl, 1)
    assert st1["statement_unsafe"] is True and st1["unsafe_statements"] >= 31
    with open(cl.log_file(cl.node(1))) as fh:
        text = fh.read()
    assert "Unsafe statement written to the replication log" in text
    assert "SPOP picks members at random" in text and "relative to the clock" in text


def test_statement_safe_is_deterministic_where_unsafe_is_not(cluster_root):
    """The same nondeterministic commands, rewritten by the leader: no divergence."""
    cl = cluster_root(3, log_format="statement")
    r = client(cl.node(1).port)
    r.sadd("s", *[f"m{i}" for i in range(200)])
    for _ in range(10):
        r.spop("s")
    r.spop("s", 5)
    for i in range(10):
        r.set(f"e{i}", "v", ex=1000)
        r.expire(f"e{i}", 2000)
        r.incrbyfloat(f"f{i}", "0.1")
        r.hincrbyfloat("h", f"x{i}", "1.5")
    wait_converged(cl)
    with open(cl.log_file(cl.node(1))) as fh:
        assert "Unsafe statement" not in fh.read()


def start_with_newer_follower(cluster_root, monkeypatch, fmt: str):
    """Nodes 1 and 3 on the storage format of this replikv, node 2 on a newer one (as in the
    middle of a rolling upgrade)."""
    cl = cluster_root(3, start=False, log_format=fmt, auto_failover=False)
    cl.save()
    cl.start_node(cl.node(1), wait=False)
    cl.start_node(cl.node(3), wait=False)
    monkeypatch.setenv("REPLIKV_STORAGE_FORMAT_VERSION", "2")
    cl.start_node(cl.node(2), wait=False)
    monkeypatch.delenv("REPLIKV_STORAGE_FORMAT_VERSION")
    for n in cl.nodes:
        cl.wait_ready(n)
    cl.wait_leader()
    r = client(cl.node(1).port)
    for i in range(20):
        r.set(f"k{i}", i)
    log_dir = os.path.join(cl.node(2).data_dir, "log")
    with open(os.path.join(log_dir, sorted(os.listdir(log_dir))[0]), "rb") as fh:
        assert fh.read(8)[7] == 2          # node 2's own log is in the newer format
    return cl


def test_storage_format_version_physical_refuses_clearly(cluster_root, monkeypatch):
    cl = start_with_newer_follower(cluster_root, monkeypatch, "physical")
    st2 = wait_for(lambda: repl_status(cl, 2) if repl_status(cl, 2).get("refused") else None, 20,
                   what="node 2 reports the refusal")
    why = st2["refused"]
    assert "storage format version 2" in why and "byte for byte" in why and 'log_format = "row"' in why
    with open(cl.log_file(cl.node(2))) as fh:
        assert "storage format version 2" in fh.read()
    assert client(cl.node(2).port).dbsize() == 0


def test_storage_format_version_row_works(cluster_root, monkeypatch):
    cl = start_with_newer_follower(cluster_root, monkeypatch, "row")
    wait_converged(cl)
    assert repl_status(cl, 2)["refused"] is None
    assert client(cl.node(2).port).get("k7") == b"7"


@pytest.mark.parametrize("fmt", ["row", "statement"])
def test_failover_and_rejoin_keep_positions_aligned(cluster_root, fmt):
    """A follower's own records sit at the leader's positions, carry the event, and can be shipped
    in turn: after the leader is killed, the new leader streams events to the others, and the
    old leader rejoins and converges."""
    cl = cluster_root(3, log_format=fmt, election_timeout_ms=600)
    r = client(cl.node(1).port)
    for i in range(50):
        r.set(f"a{i}", i, ex=10000)
        r.sadd("s", f"m{i}")
    r.spop("s", 3)
    wait_converged(cl)
    cl.kill(1)
    new = wait_for(lambda: cl.leader(), 30, what="a new leader")
    r2 = client(new.port)
    for i in range(50):
        r2.incrbyfloat(f"f{i % 5}", "0.5")
        r2.hset("h", f"x{i}", i)
    r2.spop("s")
    cl.start_node(cl.node(1))
    others = [n for n in cl.nodes if n.node_id != new.node_id]

    def converged():
        last = cl.http_get(new, "/status")["last_seq"]
        if any(repl_status(cl, n.node_id)["applied"] < last for n in others):
            return False
        return len(set(digests(cl))) == 1

    wait_for(converged, 30, what="all nodes converged after the failover")
    assert client(cl.node(1).port).hget("h", "x49") == b"49"
