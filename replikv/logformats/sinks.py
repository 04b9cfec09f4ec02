"""Trigger sinks: write committed changes into another database, exactly once.

Each sink keeps three tables:
  ``<table>``              the current image of each delivered key: key, type, value (JSON),
                           expire_at (ms, 0 = none), pos (the position of its last change)
  ``<table>_changes``      every delivered change, append-only: (pos, i) is the primary key,
                           so a change delivered twice could not be stored twice
  ``replikv_trigger_state`` per trigger name, the last delivered position

A batch of changes and the new position are written in one transaction: after a crash, a
hook error or a leader restart, delivery resumes from the position the sink holds, so no
change is lost and none is applied twice.

SQLite uses the standard library; PostgreSQL uses psycopg 3 (``pip install psycopg[binary]``).
"""

from __future__ import annotations

import json


def _json(v) -> str | None:
    return None if v is None else json.dumps(v, separators=(",", ":"), ensure_ascii=False)


class SqlSink:
    ph = "?"
    json_type = "TEXT"

    def __init__(self, spec) -> None:
        self.spec = spec
        self.name = spec.name
        self.table = spec.table
        self.db = None

    # subclasses: connect() -> a DB-API connection; begin(cur); wrap_json(v)
    def wrap_json(self, v):
        return _json(v)

    def open(self) -> None:
        self.db = self.connect()
        t, j = self.table, self.json_type
        cur = self.db.cursor()
        self.begin(cur)
        cur.execute(f"CREATE TABLE IF NOT EXISTS {t} (key TEXT PRIMARY KEY, type TEXT, value {j}, "
                    f"expire_at BIGINT NOT NULL DEFAULT 0, pos BIGINT NOT NULL)")
        cur.execute(f"CREATE TABLE IF NOT EXISTS {t}_changes (pos BIGINT NOT NULL, i INTEGER NOT NULL, "
                    f"op TEXT NOT NULL, key TEXT, value {j}, PRIMARY KEY (pos, i))")
        cur.execute("CREATE TABLE IF NOT EXISTS replikv_trigger_state (name TEXT PRIMARY KEY, pos BIGINT NOT NULL)")
        self.commit()

    def position(self) -> int | None:
        cur = self.db.cursor()
        self.begin(cur)
        cur.execute(f"SELECT pos FROM replikv_trigger_state WHERE name = {self.ph}", (self.name,))
        row = cur.fetchone()
        self.commit()
        return None if row is None else int(row[0])

    def deliver(self, batch: list, last_pos: int) -> None:
        """``batch``: [(pos, [Change, ...]), ...]; stores them and ``last_pos`` atomically."""
        t, p = self.table, self.ph
        cur = self.db.cursor()
        self.begin(cur)
        try:
            for pos, changes in batch:
                for i, c in enumerate(changes):
                    if c.op == "flush":
                        cur.execute(f"DELETE FROM {t}")
                    elif c.op == "del":
                        cur.execute(f"DELETE FROM {t} WHERE key = {p}", (c.key,))
                    else:
                        cur.execute(f"INSERT INTO {t} (key, type, value, expire_at, pos) VALUES ({p}, {p}, {p}, {p}, {p}) "
                                    f"ON CONFLICT (key) DO UPDATE SET type = excluded.type, value = excluded.value, "
                                    f"expire_at = excluded.expire_at, pos = excluded.pos",
                                    (c.key, c.type, self.wrap_json(c.value), int(c.expire_at or 0), pos))
                    cur.execute(f"INSERT INTO {t}_changes (pos, i, op, key, value) VALUES ({p}, {p}, {p}, {p}, {p})",
                                (pos, i, c.op, c.key, self.wrap_json(c.value)))
            cur.execute(f"INSERT INTO replikv_trigger_state (name, pos) VALUES ({p}, {p}) "
                        f"ON CONFLICT (name) DO UPDATE SET pos = excluded.pos", (self.name, last_pos))
            self.commit()
        except BaseException:
            self.rollback()
            raise

    def commit(self) -> None:
        self.db.commit()

    def rollback(self) -> None:
        try:
            self.db.rollback()
        except Exception:  # noqa: BLE001 - the connection may be gone; reopening follows
            pass

    def close(self) -> None:
        if self.db is not None:
            try:
                self.db.close()
            except Exception:  # noqa: BLE001
                pass
            self.db = None


class SQLiteSink(SqlSink):
    def connect(self):
        import sqlite3

        db = sqlite3.connect(self.spec.path, isolation_level=None, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        return db

    def begin(self, cur) -> None:
        cur.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.db.execute("COMMIT")

    def rollback(self) -> None:
        try:
            self.db.execute("ROLLBACK")
        except Exception:  # noqa: BLE001 - no transaction open
            pass


class PostgresSink(SqlSink):
    ph = "%s"
    json_type = "JSONB"

    def connect(self):
        try:
            import psycopg
        except ImportError as e:
            raise RuntimeError("the postgres sink needs psycopg 3: pip install 'psycopg[binary]'") from e
        return psycopg.connect(self.spec.dsn, connect_timeout=10)

    def begin(self, cur) -> None:
        pass        # psycopg opens a transaction with the first statement

    def wrap_json(self, v):
        from psycopg.types.json import Jsonb

        return None if v is None else Jsonb(v)


def make_sink(spec) -> SqlSink:
    if spec.sink == "sqlite":
        return SQLiteSink(spec)
    if spec.sink == "postgres":
        return PostgresSink(spec)
    raise ValueError(f"unknown sink {spec.sink!r}")
