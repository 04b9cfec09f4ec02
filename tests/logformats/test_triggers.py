"""Trigger-based replication: a subset of keys (user:*) lands in SQLite and PostgreSQL,
transformed by a hook, and matches the leader's keyspace for that subset, exactly once and
in order: also after a hook that fails for a while, and after a leader restart."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest

from replikv.core.commands import glob_matcher
from replikv.logformats.changes import record_images
from replikv.logformats.reader import LogTailer
from tests.conftest import client, wait_for

from .conftest import repl_status

HOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hooks.py")


def leader_subset(r, transform=None) -> dict:
    """The leader's user:* keys as the sink stores them: key -> (type, value, expire_at)."""
    out = {}
    for k in r.scan_iter(match="user:*", count=1000):
        t = r.type(k).decode()
        if t == "string":
            v = r.get(k).decode()
        elif t == "hash":
            v = {f.decode(): x.decode() for f, x in r.hgetall(k).items()}
        elif t == "set":
            v = sorted(m.decode() for m in r.smembers(k))
        else:
            continue
        exp = r.execute_command("EXPIRETIME", k)      # seconds
        out[k.decode()] = (t, transform(t, v) if transform else v, exp if exp > 0 else 0)
    return out


def sink_rows(fetch) -> dict:
    out = {}
    for key, t, value, exp in fetch("SELECT key, type, value, expire_at FROM users"):
        out[key] = (t, value, int(exp) // 1000)
    return out


def upper(t, v):
    if t == "string":
        return v.upper()
    if t == "hash":
        return {k: x for k, x in v.items() if k in ("name", "email")}
    return v


def workload(r, rnd: int) -> None:
    for i in range(30):
        r.hset(f"user:{i}", mapping={"name": f"n{i}-{rnd}", "email": f"e{i}@x", "age": str(i)})
        r.set(f"other:{i}", "not replicated")
        if i % 3 == 0:
            r.set(f"user:{i}:nick", f"nick{i}-{rnd}", ex=100000)
        if i % 4 == 0:
            r.sadd(f"user:{i}:tags", "a", "b", f"t{rnd}")
            r.srem(f"user:{i}:tags", "a")
        if i % 5 == 0:
            r.hdel(f"user:{i}", "age")
        if i % 7 == 0:
            r.delete(f"user:{i}:nick")
    p = r.pipeline(transaction=True)
    p.incr("user:counter")
    p.rename("user:1", "user:1:renamed")
    p.set("other:x", "y")
    p.execute()
    r.rename("other:0", "user:from-other")     # a key entering the subset by RENAME


def delivered_positions(fetch) -> list[tuple[int, int]]:
    return [(int(p), int(i)) for p, i in fetch("SELECT pos, i FROM users_changes ORDER BY pos, i")]


def expected_positions(cl) -> list[int]:
    """Positions of the leader's records that change a user:* key (from its log's images)."""
    m = glob_matcher(b"user:*")
    out = []
    t = LogTailer(os.path.join(cl.node(1).data_dir, "log"))
    nxt = 1
    while True:
        recs = t.read(nxt, None, 1000)
        if not recs:
            return out
        for rec in recs:
            imgs = record_images(rec) or []
            if any(len(x) == 1 or m.match(x[0]) for x in imgs):
                out.append(rec.seq)
        nxt = recs[-1].seq + 1


def run_trigger_scenario(cluster_root, tmp_path, monkeypatch, sink: dict, fetch, transform, log_format):
    flag = str(tmp_path / "hook-fails")
    monkeypatch.setenv("REPLIKV_TEST_HOOK_FAIL", flag)
    open(flag, "w").close()                        # the hook raises until the flag goes
    trig = {"pattern": "user:*", "table": "users", "batch": 50, **sink}
    cl = cluster_root(1, log_format=log_format, triggers=[trig])
    r = client(cl.node(1).port, protocol=2)
    workload(r, 1)
    wait_for(lambda: repl_status(cl, 1)["triggers"][0]["errors"] >= 2, 20, what="the hook failing")
    with open(cl.log_file(cl.node(1))) as fh:
        assert "the test hook fails on purpose" in fh.read()
    os.unlink(flag)
    wait_for(lambda: sink_rows(fetch) == leader_subset(r, transform), 30, what="the sink to match the leader")
    # a leader restart (kill -9) with changes not yet delivered: the hook fails again meanwhile
    open(flag, "w").close()
    workload(r, 2)
    cl.kill(1)
    cl.start_node(cl.node(1))
    cl.wait_leader()
    r = client(cl.node(1).port, protocol=2)
    workload(r, 3)
    os.unlink(flag)
    wait_for(lambda: sink_rows(fetch) == leader_subset(r, transform), 30, what="the sink to match after a restart")
    assert "other:1" not in sink_rows(fetch)
    # exactly once: the change table's positions are the leader's records that touch the subset
    got = delivered_positions(fetch)
    assert len(set(got)) == len(got)
    assert sorted({p for p, _ in got}) == expected_positions(cl)
    st = repl_status(cl, 1)["triggers"][0]
    assert st["state"] == "caught-up" and st["position"] == cl.http_get(cl.node(1), "/status")["last_seq"]


@pytest.mark.parametrize("log_format", ["physical", "row"])
def test_trigger_sqlite_sink(cluster_root, tmp_path, monkeypatch, log_format):
    db = str(tmp_path / "users.db")

    def fetch(q):
        if not os.path.exists(db):
            return []
        con = sqlite3.connect(db, timeout=30)
        try:
            rows = con.execute(q).fetchall()
            if q.startswith("SELECT key, type, value"):     # SQLite stores JSON as text
                rows = [(k, t, json.loads(v), e) for k, t, v, e in rows]
            return rows
        except sqlite3.OperationalError:
            return []
        finally:
            con.close()

    run_trigger_scenario(cluster_root, tmp_path, monkeypatch, {"sink": "sqlite", "path": db, "hook": f"{HOOKS}:flaky"},
                         fetch, None, log_format)


def test_trigger_postgres_sink(cluster_root, tmp_path, monkeypatch, postgres):
    import psycopg

    with psycopg.connect(postgres, autocommit=True) as con:
        con.execute("DROP TABLE IF EXISTS users, users_changes, replikv_trigger_state")

    def fetch(q):
        try:
            with psycopg.connect(postgres) as con:
                return con.execute(q).fetchall()
        except psycopg.errors.UndefinedTable:
            return []

    # a transforming hook (upper-cased strings, two hash fields kept) that fails for a while
    run_trigger_scenario(cluster_root, tmp_path, monkeypatch,
                         {"sink": "postgres", "dsn": postgres, "hook": f"{HOOKS}:flaky_upper"},
                         fetch, upper, "statement")
