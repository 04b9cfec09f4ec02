"""Every supported command through redis-py, in RESP3 and in RESP2, against a real node
process: replies, error texts (as Redis 7.2 words them), MULTI/EXEC/WATCH and pipelining.

One node serves the whole module (started with the same LocalCluster harness as the
``node`` fixture); each test starts from an empty keyspace.
"""

from __future__ import annotations

import socket

import pytest
import redis

from replikv.cluster.local import LocalCluster
from replikv.core.resp import Error, ReplyParser, Simple, encode_command
from tests.conftest import client, free_base_port, wait_for

WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"
NOT_INT = "ERR value is not an integer or out of range"
NOT_FLOAT = "ERR value is not a valid float"
SYNTAX = "ERR syntax error"


def arity(name: str) -> str:
    return f"ERR wrong number of arguments for '{name}' command"


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    cl = LocalCluster.create(str(tmp_path_factory.mktemp("redispy")), 1, free_base_port(1))
    cl.start()
    yield cl.nodes[0].port
    for n in cl.nodes:
        cl.kill(n.node_id)


@pytest.fixture(params=[3, 2], ids=["resp3", "resp2"])
def r(port, request):
    c = client(port, protocol=request.param)
    c.flushall()
    yield c
    c.close()


def error_of(fn) -> str:
    """The error text as the server sent it (redis-py drops a leading "ERR ", and turns
    WRONGPASS into an AuthenticationError without its code)."""
    with pytest.raises((redis.ResponseError, redis.AuthenticationError)) as ei:
        fn()
    text = str(ei.value)
    if isinstance(ei.value, redis.AuthenticationError) and text.startswith("invalid username-password"):
        return "WRONGPASS " + text
    known = ("WRONGTYPE", "EXECABORT", "NOPROTO", "WRONGPASS", "NOSCRIPT", "READONLY", "LOADING")
    return text if text.split(" ")[0] in known else "ERR " + text


class Session:
    """One raw connection, for what redis-py reshapes or hides (QUEUED, HELLO switching)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.parser = ReplyParser()

    def __call__(self, *args):
        self.sock.sendall(encode_command(*args))
        while True:
            done, value = self.parser.next_reply()
            if done:
                return value
            data = self.sock.recv(65536)
            assert data, "connection closed"
            self.parser.feed(data)

    def close(self) -> None:
        self.sock.close()


QUEUED = Simple("QUEUED")
OKS = Simple("OK")


def raw(r, *args):
    """Send a command without redis-py's reply callbacks (they would reshape the reply)."""
    conn = r.connection_pool.get_connection()
    try:
        conn.send_command(*args)
        return conn.read_response()
    finally:
        r.connection_pool.release(conn)


# ---------------------------------------------------------------------------- connection

def test_ping_echo_select(r):
    assert r.ping() is True
    assert raw(r, "PING", "hi") == b"hi"
    assert r.echo("héllo") == "héllo".encode()
    assert r.execute_command("SELECT", 0) in (True, b"OK", "OK")
    assert error_of(lambda: r.execute_command("PING", "a", "b")) == arity("ping")
    assert error_of(lambda: r.execute_command("ECHO")) == arity("echo")
    assert error_of(lambda: r.execute_command("SELECT", "x")) == NOT_INT
    assert error_of(lambda: r.execute_command("SELECT", 1)) == "ERR DB index is out of range"
    assert error_of(lambda: r.execute_command("NOSUCH", "a", "b")) == \
        "ERR unknown command 'NOSUCH', with args beginning with: 'a' 'b' "


def test_hello(r, port):
    h = r.execute_command("HELLO")
    h = {(k.decode() if isinstance(k, bytes) else k): v for k, v in h.items()} if isinstance(h, dict) else \
        {h[i].decode(): h[i + 1] for i in range(0, len(h), 2)}
    assert list(h) == ["server", "version", "proto", "id", "mode", "role", "modules"]
    assert h["server"] == b"redis" and h["version"] == b"7.2.4" and h["mode"] == b"standalone"
    assert h["role"] == b"master" and h["modules"] == [] and h["proto"] == r.get_connection_kwargs()["protocol"]
    assert h["id"] == r.client_id()
    assert error_of(lambda: r.execute_command("HELLO", 4)) == "NOPROTO unsupported protocol version"
    assert error_of(lambda: r.execute_command("HELLO", "03")) == \
        "ERR Protocol version is not an integer or out of range"
    assert error_of(lambda: r.execute_command("HELLO", 3, "FOO")) == "ERR Syntax error in HELLO option 'FOO'"
    assert error_of(lambda: r.execute_command("HELLO", 3, "AUTH", "u")) == "ERR Syntax error in HELLO option 'AUTH'"
    assert error_of(lambda: r.execute_command("HELLO", 3, "AUTH", "nobody", "pw")) == \
        "WRONGPASS invalid username-password pair or user is disabled."
    assert error_of(lambda: r.execute_command("HELLO", 3, "SETNAME", "a b")) == \
        "ERR Client names cannot contain spaces, newlines or special characters."
    # HELLO 3 / HELLO 2 switch the connection's protocol, with AUTH default and SETNAME
    c = Session(port)
    assert c("HELLO", 3, "AUTH", "default", "any", "SETNAME", "me")[b"proto"] == 3
    assert c("CLIENT", "GETNAME") == b"me"
    assert c("HGETALL", "nokey") == {}              # a RESP3 map
    assert c("HELLO", 2)[5] == 2                    # a RESP2 array again
    assert c("HGETALL", "nokey") == []
    c.close()


def test_client_commands(r):
    assert r.client_setname("worker-1") is True
    assert r.client_getname() in (b"worker-1", "worker-1")
    assert isinstance(r.client_id(), int)
    assert error_of(lambda: r.execute_command("CLIENT", "SETNAME", "a b")) == \
        "ERR Client names cannot contain spaces, newlines or special characters."
    assert error_of(lambda: r.execute_command("CLIENT", "SETNAME")) == arity("client|setname")
    assert error_of(lambda: r.execute_command("CLIENT", "GETNAME", "x")) == arity("client|getname")
    assert error_of(lambda: r.execute_command("CLIENT", "ID", "x")) == arity("client|id")
    assert error_of(lambda: r.execute_command("CLIENT")) == arity("client")
    assert error_of(lambda: r.execute_command("CLIENT", "FOO")) == "ERR unknown subcommand 'FOO'. Try CLIENT HELP."
    assert error_of(lambda: r.execute_command("client", "foo")) == "ERR unknown subcommand 'foo'. Try CLIENT HELP."
    me = [c for c in r.client_list() if int(c["id"]) == r.client_id()]
    assert len(me) == 1
    # Redis 7.2's CLIENT LIST fields, in order
    assert list(me[0]) == ["id", "addr", "laddr", "fd", "name", "age", "idle", "flags", "db", "sub", "psub",
                           "ssub", "multi", "qbuf", "qbuf-free", "argv-mem", "multi-mem", "rbs", "rbp", "obl",
                           "oll", "omem", "tot-mem", "events", "cmd", "user", "redir", "resp", "lib-name",
                           "lib-ver"]
    assert me[0]["name"] == "worker-1" and me[0]["cmd"] == "client|list" and me[0]["flags"] == "N"
    assert me[0]["resp"] == str(r.get_connection_kwargs()["protocol"])
    info = r.client_info()
    assert int(info["id"]) == r.client_id() and info["cmd"] == "client|info"
    assert [int(c["id"]) for c in r.client_list(client_id=[r.client_id(), 999999])] == [r.client_id()]
    assert r.execute_command("CLIENT", "LIST", "TYPE", "normal")
    assert error_of(lambda: r.execute_command("CLIENT", "LIST", "TYPE", "foo")) == "ERR Unknown client type 'foo'"
    assert error_of(lambda: r.execute_command("CLIENT", "LIST", "x")) == SYNTAX
    assert error_of(lambda: r.execute_command("CLIENT", "LIST", "ID", "x")) == "ERR Invalid client ID"
    assert r.execute_command("CLIENT", "SETINFO", "LIB-NAME", "mylib") in (True, b"OK", "OK")
    assert r.client_info()["lib-name"] == "mylib"
    assert error_of(lambda: r.execute_command("CLIENT", "SETINFO", "FOO", "x")) == "ERR Unrecognized option 'FOO'"
    assert error_of(lambda: r.execute_command("CLIENT", "NO-EVICT", "maybe")) == SYNTAX
    assert r.execute_command("CLIENT", "KILL", "ID", 999999) == 0
    assert error_of(lambda: r.execute_command("CLIENT", "KILL", "1.2.3.4:5")) == "ERR No such client"
    assert error_of(lambda: r.execute_command("CLIENT", "KILL", "ID", 0)) == "ERR client-id should be greater than 0"
    assert error_of(lambda: r.execute_command("CLIENT", "KILL")) == arity("client|kill")


def test_client_kill_by_id(r, port):
    victim = Session(port)
    vid = victim("CLIENT", "ID")
    assert r.execute_command("CLIENT", "KILL", "ID", vid) == 1
    assert victim.sock.recv(1) == b""          # the server closed the connection
    victim.close()
    wait_for(lambda: vid not in [int(c["id"]) for c in r.client_list()], what="the killed client to go")


def test_info_config_dbsize_flush_memory(r):
    info = r.info()
    assert info["redis_version"] == "7.2.4" and info["redis_mode"] == "standalone"
    assert "connected_clients" in info
    r.set("a", 1)
    r.expire("a", 1000)
    assert r.info("keyspace")["db0"]["keys"] == 1
    assert r.dbsize() == 1
    assert r.memory_usage("a") > 0
    assert r.memory_usage("nokey") is None
    assert error_of(lambda: r.execute_command("MEMORY", "USAGE", "a", "SAMPLES", -1)) == SYNTAX
    assert error_of(lambda: r.execute_command("MEMORY", "USAGE")) == arity("memory|usage")
    assert error_of(lambda: r.execute_command("MEMORY")) == arity("memory")
    assert error_of(lambda: r.execute_command("MEMORY", "FOO")) == "ERR unknown subcommand 'FOO'. Try MEMORY HELP."
    assert r.flushdb() is True
    assert r.dbsize() == 0
    r.set("b", 1)
    assert r.flushall(asynchronous=True) is True
    assert r.dbsize() == 0
    assert error_of(lambda: r.execute_command("FLUSHALL", "FOO")) == SYNTAX
    # CONFIG
    assert r.config_get("maxclients") == {"maxclients": "10000"}
    assert r.config_get("MaxClients") == {"MaxClients": "10000"}      # an exact name answers as asked
    assert r.config_get("appendfsync") == {"appendfsync": "everysec"}
    assert "proto-max-bulk-len" in r.config_get("*max-bulk*")
    assert r.config_get("nosuch") == {}
    assert r.config_set("appendfsync", "everysec") is True
    assert error_of(lambda: r.config_set("nosuch", 1)) == \
        "ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'"
    assert error_of(lambda: r.execute_command("CONFIG", "SET", "hz", 10, "hz", 10)) == \
        "ERR CONFIG SET failed (possibly related to argument 'hz') - duplicate parameter"
    assert error_of(lambda: r.execute_command("CONFIG", "SET", "port", 1)) == \
        "ERR CONFIG SET failed (possibly related to argument 'port') - can't set immutable config"
    assert error_of(lambda: r.execute_command("CONFIG", "GET")) == arity("config|get")
    assert error_of(lambda: r.execute_command("CONFIG", "SET", "hz")) == arity("config|set")
    assert error_of(lambda: r.execute_command("CONFIG", "FOO")) == "ERR unknown subcommand 'FOO'. Try CONFIG HELP."
    assert r.config_resetstat() is True


def test_command(r):
    cmds = r.command()
    assert cmds["get"]["arity"] == 2 and cmds["get"]["first_key_pos"] == 1
    assert "readonly" in cmds["get"]["flags"] and "@string" in [str(x) for x in cmds["get"]["acl_categories"]] \
        or b"@string" in cmds["get"]["acl_categories"] or "@string" in cmds["get"]["acl_categories"]
    assert cmds["mset"]["step_count"] == 2 and cmds["mset"]["last_key_pos"] == -1
    assert cmds["set"]["arity"] == -3 and "write" in cmds["set"]["flags"]
    assert cmds["ping"]["arity"] == -1
    assert r.command_count() == len(cmds)
    assert set(r.command_list()) >= {b"get", b"set", b"client|list", b"hincrbyfloat"} or \
        set(r.command_list()) >= {"get", "set", "client|list", "hincrbyfloat"}
    assert r.command_getkeys("MSET", "a", 1, "b", 2) in ([b"a", b"b"], ["a", "b"])
    assert error_of(lambda: r.command_getkeys("PING", "x")) == "ERR The command has no key arguments"
    assert error_of(lambda: r.command_getkeys("NOSUCH", "x")) == "ERR Invalid command specified"
    assert error_of(lambda: r.execute_command("COMMAND", "FOO")) == "ERR unknown subcommand 'FOO'. Try COMMAND HELP."
    assert error_of(lambda: r.execute_command("COMMAND", "COUNT", "x")) == arity("command|count")
    info = raw(r, "COMMAND", "INFO", "get", "nosuch")
    assert info[0][0] == b"get" and info[1] is None
    docs = raw(r, "COMMAND", "DOCS", "set", "nosuch")
    docs = docs if isinstance(docs, dict) else dict(zip(docs[::2], docs[1::2], strict=True))
    assert list(docs) == [b"set"]
    d = docs[b"set"]
    d = d if isinstance(d, dict) else dict(zip(d[::2], d[1::2], strict=True))
    assert d[b"summary"] and d[b"group"] == b"string"


# ---------------------------------------------------------------------------- strings

def test_strings(r):
    assert r.get("nokey") is None
    assert r.set("k", "v") is True
    assert r.get("k") == b"v"
    assert r.set("k", "w", nx=True) is None
    assert r.set("k", "w", xx=True) is True
    assert r.set("new", "x", xx=True) is None
    assert r.set("k", "z", get=True) == b"w"
    assert r.set("k", "y", nx=True, get=True) == b"z"
    assert r.set("k", "v", ex=100) is True
    assert 0 < r.ttl("k") <= 100
    assert r.set("k", "v2", keepttl=True) is True
    assert r.ttl("k") > 0
    assert r.set("k", "v3") is True and r.ttl("k") == -1
    assert r.set("k", "v", px=100_000) and 0 < r.pttl("k") <= 100_000
    assert r.set("k", "v", exat=4102444800) and r.ttl("k") > 100_000
    assert r.set("k", "v", pxat=4102444800000) and r.pttl("k") > 100_000_000
    assert r.set("k", "v", exat=1) is True and r.get("k") is None    # a time already past
    assert error_of(lambda: r.set("k", "v", ex=0)) == "ERR invalid expire time in 'set' command"
    assert error_of(lambda: r.execute_command("SET", "k", "v", "EX", "x")) == NOT_INT
    assert error_of(lambda: r.execute_command("SET", "k", "v", "NX", "XX")) == SYNTAX
    assert error_of(lambda: r.execute_command("SET", "k", "v", "EX", 1, "PX", 1)) == SYNTAX
    assert error_of(lambda: r.execute_command("SET", "k")) == arity("set")
    assert r.setnx("n", 1) is True and r.setnx("n", 2) is False
    assert raw(r, "SETEX", "e", 100, "v") in (b"OK", "OK") and 0 < r.ttl("e") <= 100
    assert r.psetex("p", 100_000, "v") is True and 0 < r.pttl("p") <= 100_000
    assert error_of(lambda: r.execute_command("SETEX", "e", 0, "v")) == "ERR invalid expire time in 'setex' command"
    assert error_of(lambda: r.psetex("e", -1, "v")) == "ERR invalid expire time in 'psetex' command"
    assert r.getset("n", "3") == b"1"
    assert r.getdel("n") == b"3" and r.getdel("n") is None
    r.set("s", "Hello World")
    assert r.getrange("s", 0, 4) == b"Hello" and r.getrange("s", -5, -1) == b"World"
    assert r.getrange("s", 5, 3) == b"" and r.getrange("nokey", 0, 10) == b""
    assert r.setrange("s", 6, "Redis") == 11 and r.get("s") == b"Hello Redis"
    assert r.setrange("z", 2, "x") == 3 and r.get("z") == b"\x00\x00x"
    assert error_of(lambda: r.setrange("s", -1, "x")) == "ERR offset is out of range"
    assert r.mset({"a": 1, "b": "é"}) is True
    assert r.mget("a", "b", "nokey") == [b"1", "é".encode(), None]
    assert r.msetnx({"a": 5, "c": 3}) is False and r.get("c") is None
    assert r.msetnx({"c": 3, "d": 4}) is True
    assert error_of(lambda: r.execute_command("MSET", "a", 1, "b")) == arity("mset")
    assert r.append("a", "23") == 3 and r.get("a") == b"123"
    assert r.strlen("a") == 3 and r.strlen("nokey") == 0
    r.set("bin", b"\x00\xff\xfe")
    assert r.get("bin") == b"\x00\xff\xfe" and r.strlen("bin") == 3


def test_counters(r):
    assert r.incr("n") == 1
    assert r.decr("n") == 0
    assert r.incrby("n", 10) == 10
    assert r.decrby("n", 3) == 7
    assert r.get("n") == b"7"
    r.set("big", 9223372036854775807)
    assert error_of(lambda: r.incr("big")) == "ERR increment or decrement would overflow"
    assert error_of(lambda: r.decrby("n", -9223372036854775808)) == "ERR decrement would overflow"
    for bad in ("1.5", " 1", "01", "abc", ""):
        r.set("b", bad)
        assert error_of(lambda: r.incr("b")) == NOT_INT, bad
    assert error_of(lambda: r.incrby("n", "x")) == NOT_INT
    # INCRBYFLOAT: Redis's long double digits
    r.set("f", "5000")
    assert raw(r, "INCRBYFLOAT", "f", "1e-5") == b"5000.00001000000000007"
    assert r.get("f") == b"5000.00001000000000007"
    r.set("f", "3.0")
    assert raw(r, "INCRBYFLOAT", "f", "1.23456789012345678") == b"4.23456789012345678"
    r.set("f", "0x10")
    assert r.incrbyfloat("f", 1) == 17.0
    assert raw(r, "INCRBYFLOAT", "g", "0.1") == b"0.1" and raw(r, "INCRBYFLOAT", "g", "0.2") == b"0.3"
    assert raw(r, "INCRBYFLOAT", "t", "1e-20") == b"0"
    assert error_of(lambda: r.incrbyfloat("f", "abc")) == NOT_FLOAT
    assert error_of(lambda: r.incrbyfloat("f", "inf")) == "ERR increment would produce NaN or Infinity"
    r.expire("f", 1000)
    r.incrbyfloat("f", 1)
    assert r.ttl("f") > 0        # INCR* keep the TTL


def test_wrongtype_errors(r):
    r.set("str", "x")
    r.hset("hash", "f", "v")
    r.sadd("set", "m")
    calls = [
        lambda: r.get("hash"), lambda: r.incr("set"), lambda: r.append("set", "x"), lambda: r.strlen("hash"),
        lambda: r.getrange("set", 0, 1), lambda: r.setrange("hash", 0, "x"), lambda: r.getset("set", "x"),
        lambda: r.getdel("hash"), lambda: r.incrbyfloat("set", 1), lambda: r.set("set", "v", get=True),
        lambda: r.hset("str", "f", "v"), lambda: r.hget("set", "f"), lambda: r.hgetall("str"),
        lambda: r.hincrby("str", "f", 1), lambda: r.hincrbyfloat("set", "f", 1), lambda: r.hkeys("str"),
        lambda: r.hlen("set"), lambda: r.hdel("str", "f"), lambda: r.hexists("str", "f"),
        lambda: r.hstrlen("str", "f"), lambda: r.hmget("str", "f"), lambda: r.hvals("str"),
        lambda: r.hsetnx("str", "f", "v"),
        lambda: r.sadd("str", "m"), lambda: r.srem("hash", "m"), lambda: r.smembers("str"),
        lambda: r.sismember("hash", "m"), lambda: r.scard("str"), lambda: r.spop("hash"),
        lambda: r.srandmember("str"), lambda: r.sinter("set", "str"), lambda: r.sunion("str"),
        lambda: r.sdiff("set", "hash"), lambda: r.smove("set", "str", "m"), lambda: r.smismember("str", ["m"]),
        lambda: r.sinterstore("d", ["set", "hash"]),
    ]
    for i, call in enumerate(calls):
        assert error_of(call) == WRONGTYPE, i
    # the argument is parsed before the type is checked where Redis does so
    assert error_of(lambda: r.hincrby("str", "f", "x")) == NOT_INT
    assert error_of(lambda: r.hincrbyfloat("str", "f", "x")) == NOT_FLOAT
    assert error_of(lambda: r.execute_command("HINCRBYFLOAT", "str", "f", "inf")) == "ERR value is NaN or Infinity"
    assert error_of(lambda: r.srandmember("str", "x")) == NOT_INT
    assert error_of(lambda: r.incrbyfloat("set", "x")) == WRONGTYPE
    assert r.mget("str", "hash") == [b"x", None]


def test_arity_errors(r):
    for cmd in (["GET"], ["GET", "a", "b"], ["SET", "a"], ["HSET", "h", "f"], ["HGET", "h"], ["SADD", "s"],
                ["EXPIRE", "k"], ["TTL"], ["DEL"], ["SMOVE", "a", "b"], ["SINTERSTORE", "d"], ["GETRANGE", "k", 1],
                ["INCRBYFLOAT", "k"], ["RENAME", "a"], ["SCAN"], ["KEYS"], ["DBSIZE", "x"], ["RANDOMKEY", "x"]):
        name = cmd[0].lower()
        assert error_of(lambda cmd=cmd: r.execute_command(*cmd)) == arity(name), cmd
    assert error_of(lambda: r.execute_command("HMSET", "h", "a", 1, "b")) == arity("hmset")


# ---------------------------------------------------------------------------- keys and expiry

def test_keys_and_expiry(r):
    r.mset({"a": 1, "b": 2, "c": 3})
    assert r.delete("a", "nokey", "a") == 1
    assert r.unlink("b") == 1
    assert r.exists("c", "c", "nokey") == 2
    r.hset("h", "f", "v")
    r.sadd("s", "m")
    assert r.type("c") == b"string" and r.type("h") == b"hash" and r.type("s") == b"set"
    assert r.type("nokey") == b"none"
    assert error_of(lambda: r.rename("nokey", "x")) == "ERR no such key"
    assert r.rename("c", "c") is True and r.renamenx("c", "c") is False
    r.expire("c", 1000)
    assert r.rename("c", "d") is True and r.ttl("d") > 0 and r.get("d") == b"3"
    assert r.renamenx("d", "h") is False
    assert r.renamenx("d", "e") is True
    assert set(r.keys("*")) == {b"e", b"h", b"s"}
    assert set(r.keys("[eh]")) == {b"e", b"h"}
    assert r.randomkey() in (b"e", b"h", b"s")
    assert r.expire("e", 100) is True and r.expire("nokey", 100) is False
    assert r.expire("e", 100, nx=True) is False and r.expire("e", 50, lt=True) is True
    assert r.expire("e", 40, gt=True) is False and r.expire("e", 500, gt=True) is True
    assert r.expire("h", 100, xx=True) is False
    assert error_of(lambda: r.execute_command("EXPIRE", "e", 10, "NX", "XX")) == \
        "ERR NX and XX, GT or LT options at the same time are not compatible"
    assert error_of(lambda: r.execute_command("EXPIRE", "e", 10, "GT", "LT")) == \
        "ERR GT and LT options at the same time are not compatible"
    assert error_of(lambda: r.execute_command("EXPIRE", "e", 10, "FOO")) == "ERR Unsupported option FOO"
    assert error_of(lambda: r.execute_command("EXPIRE", "e", "x")) == NOT_INT
    assert error_of(lambda: r.execute_command("EXPIRE", "e", 9223372036854775807)) == \
        "ERR invalid expire time in 'expire' command"
    assert 0 < r.ttl("e") <= 500 and 0 < r.pttl("e") <= 500_000
    assert r.ttl("h") == -1 and r.ttl("nokey") == -2 and r.pttl("nokey") == -2
    assert r.pexpire("h", 100_000) is True and 0 < r.pttl("h") <= 100_000
    assert r.expireat("s", 4102444800) is True and r.ttl("s") > 100_000
    assert r.pexpireat("s", 4102444800000) is True
    assert r.persist("s") is True and r.persist("s") is False and r.ttl("s") == -1
    assert r.expire("s", -1) is True and r.exists("s") == 0      # a time in the past deletes
    assert r.pexpireat("h", 1) is True and r.exists("h") == 0


def test_scan(r):
    keys = {f"key:{i}".encode() for i in range(120)}
    r.mset({k: 1 for k in keys})
    r.sadd("set:1", "m")
    r.hset("hash:1", "f", "v")
    got = list(r.scan_iter(count=7))
    assert len(got) == len(set(got)) and set(got) == keys | {b"set:1", b"hash:1"}
    assert set(r.scan_iter(match="key:1?")) == {f"key:1{i}".encode() for i in range(10)}
    assert list(r.scan_iter(_type="set")) == [b"set:1"]
    assert list(r.scan_iter(_type="HASH")) == [b"hash:1"]
    # keys deleted and added during a scan: every key present throughout is returned
    seen = []
    cursor = 0
    n = 0
    while True:
        cursor, page = r.scan(cursor, count=10)
        seen.extend(page)
        n += 1
        r.delete(f"key:{n}")
        r.set(f"added:{n}", 1)
        if cursor == 0:
            break
    stayed = keys - {f"key:{i}".encode() for i in range(1, n + 1)}
    assert stayed <= set(seen) and len(seen) == len(set(seen))
    assert error_of(lambda: r.execute_command("SCAN", "x")) == "ERR invalid cursor"
    assert error_of(lambda: r.execute_command("SCAN", "18446744073709551616")) == "ERR invalid cursor"
    assert error_of(lambda: r.execute_command("SCAN", 0, "COUNT", 0)) == SYNTAX
    assert error_of(lambda: r.execute_command("SCAN", 0, "COUNT", "x")) == NOT_INT
    assert error_of(lambda: r.execute_command("SCAN", 0, "MATCH")) == SYNTAX


# ---------------------------------------------------------------------------- hashes

def test_hashes(r):
    assert r.hset("h", mapping={"a": 1, "b": 2}) == 2
    assert r.hset("h", "a", 3) == 0
    assert r.hsetnx("h", "a", 9) in (0, False) and r.hsetnx("h", "c", "é") in (1, True)
    assert r.hget("h", "a") == b"3" and r.hget("h", "zz") is None and r.hget("nokey", "a") is None
    assert r.hmget("h", ["a", "zz", "c"]) == [b"3", None, "é".encode()]
    assert r.hgetall("h") == {b"a": b"3", b"b": b"2", b"c": "é".encode()}
    assert r.hgetall("nokey") == {}
    assert sorted(r.hkeys("h")) == [b"a", b"b", b"c"] and sorted(r.hvals("h")) == sorted([b"3", b"2", "é".encode()])
    assert r.hlen("h") == 3 and r.hlen("nokey") == 0
    assert r.hexists("h", "a") is True and r.hexists("h", "zz") is False
    assert r.hstrlen("h", "c") == 2 and r.hstrlen("h", "zz") == 0
    assert r.hincrby("h", "a", 10) == 13 and r.hincrby("h", "new", -2) == -2
    assert error_of(lambda: r.hincrby("h", "c", 1)) == "ERR hash value is not an integer"
    assert error_of(lambda: r.hincrby("h", "a", 9223372036854775807)) == "ERR increment or decrement would overflow"
    assert raw(r, "HINCRBYFLOAT", "h", "fl", "10.5") == b"10.5"
    assert raw(r, "HINCRBYFLOAT", "h", "fl", "0.1") == b"10.6"
    assert error_of(lambda: r.hincrbyfloat("h", "c", 1)) == "ERR hash value is not a float"
    assert r.hdel("h", "a", "a", "zz") == 1
    assert r.hdel("h", "b", "c", "new", "fl") == 4 and r.exists("h") == 0
    assert r.execute_command("HMSET", "h2", "x", 1) in (True, b"OK", "OK")
    assert error_of(lambda: r.execute_command("HSET", "h", "f")) == arity("hset")


# ---------------------------------------------------------------------------- sets

def test_sets(r):
    assert r.sadd("s", "a", "b", "a", "é") == 3
    assert r.smembers("s") == {b"a", b"b", "é".encode()}
    assert r.smembers("nokey") == set()
    assert r.sismember("s", "a") is True or r.sismember("s", "a") == 1
    assert r.smismember("s", ["a", "z"]) in ([1, 0], [True, False])
    assert r.scard("s") == 3 and r.scard("nokey") == 0
    assert r.srem("s", "é", "é", "zz") == 1
    m = r.spop("s")
    assert m in (b"a", b"b") and r.scard("s") == 1
    assert r.spop("nokey") is None
    r.sadd("s", "c", "d", "e")
    popped = r.spop("s", 2)
    assert len(popped) == 2 and r.scard("s") == 2
    assert len(r.spop("s", 10)) == 2 and r.exists("s") == 0
    assert r.spop("nokey", 3) in ([], set())
    assert error_of(lambda: r.spop("s", -1)) == "ERR value is out of range, must be positive"
    assert error_of(lambda: r.execute_command("SPOP", "s", 1, 2)) == SYNTAX
    r.sadd("s", "x", "y", "z")
    assert r.srandmember("s") in (b"x", b"y", b"z")
    two = r.srandmember("s", 2)
    assert len(two) == 2 and len(set(two)) == 2 and set(two) <= {b"x", b"y", b"z"}
    assert sorted(r.srandmember("s", 10)) == [b"x", b"y", b"z"]
    assert len(r.srandmember("s", -5)) == 5
    assert r.srandmember("nokey") is None and r.srandmember("nokey", 3) == []
    assert error_of(lambda: r.srandmember("s", "x")) == NOT_INT
    assert r.smove("s", "t", "x") is True and r.smove("s", "t", "nope") is False
    assert r.smove("nokey", "t", "x") is False
    assert r.smembers("t") == {b"x"}
    r.sadd("a", 1, 2, 3)
    r.sadd("b", 2, 3, 4)
    assert r.sinter("a", "b") == {b"2", b"3"}
    assert r.sunion("a", "b") == {b"1", b"2", b"3", b"4"}
    assert r.sdiff("a", "b") == {b"1"}
    assert r.sinter("a", "nokey") == set()
    assert r.sinterstore("dst", ["a", "b"]) == 2 and r.smembers("dst") == {b"2", b"3"}
    assert r.sunionstore("dst", ["a", "b"]) == 4
    assert r.sdiffstore("dst", ["a", "a"]) == 0 and r.exists("dst") == 0
    r.set("str", "x")
    assert r.sunionstore("str", ["a"]) == 3 and r.type("str") == b"set"   # the destination is replaced


# ---------------------------------------------------------------------------- transactions

def test_multi_exec(r):
    p = r.pipeline(transaction=True)
    p.set("a", 1).incr("a").get("a").ping().echo("hi").hset("h", "f", "v").sadd("s", "m").smembers("s")
    res = p.execute()
    assert res[:4] == [True, 2, b"2", True] and res[4] == b"hi" and res[5:7] == [1, 1] and res[7] == {b"m"}
    # a runtime error inside EXEC does not stop the other commands
    p = r.pipeline(transaction=True)
    p.set("x", "abc").incr("x").set("y", 1)
    res = p.execute(raise_on_error=False)
    assert res[0] is True and isinstance(res[1], redis.ResponseError) and res[2] is True
    assert str(res[1]) == NOT_INT[4:]
    assert r.get("y") == b"1"


def test_multi_errors_queue_time(port):
    c = Session(port)
    assert c("EXEC") == Error("ERR EXEC without MULTI")
    assert c("DISCARD") == Error("ERR DISCARD without MULTI")
    # a command refused when queued (unknown, wrong arity, unknown subcommand, or an
    # EXEC/DISCARD with arguments) dooms the transaction
    for bad, text in ((["GET"], arity("get")),
                      (["NOSUCH", "x"], "ERR unknown command 'NOSUCH', with args beginning with: 'x' "),
                      (["CLIENT", "FOO"], "ERR unknown subcommand 'FOO'. Try CLIENT HELP."),
                      (["CLIENT", "GETNAME", "x"], arity("client|getname")),
                      (["CONFIG", "GET"], arity("config|get")),
                      (["MEMORY"], arity("memory")),
                      (["EXEC", "x"], arity("exec"))):
        assert c("MULTI") == OKS
        assert c("SET", "q", 1) == QUEUED
        assert c(*bad) == Error(text)
        assert c("EXEC") == Error("EXECABORT Transaction discarded because of previous errors."), bad
        assert c("GET", "q") is None
    assert c("MULTI") == OKS
    assert c("MULTI") == Error("ERR MULTI calls can not be nested")            # not fatal
    assert c("WATCH", "a") == Error("ERR WATCH inside MULTI is not allowed")    # not fatal
    assert c("PING") == QUEUED
    assert c("PING", "a", "b") == QUEUED         # PING checks its arguments when it runs, as in Redis
    assert c("ECHO", "e") == QUEUED
    assert c("CLIENT", "ID") == QUEUED
    assert c("HELLO") == QUEUED
    assert c("SET", "q", 1) == QUEUED
    assert c("INCR", "q") == QUEUED
    assert c("HSET", "q", "f", "v") == QUEUED       # fails when run, not when queued
    res = c("EXEC")
    assert res[:4] == [Simple("PONG"), Error(arity("ping")), b"e", c("CLIENT", "ID")]
    assert res[5:] == [OKS, 2, Error("WRONGTYPE Operation against a key holding the wrong kind of value")]
    assert c("MULTI") == OKS
    assert c("SET", "q", 5) == QUEUED
    assert c("DISCARD") == OKS
    assert c("GET", "q") == b"2"
    c.close()


def test_watch_aborts_exec_when_another_client_changes_the_key(r, port):
    other = client(port)
    with r.pipeline() as p:
        p.watch("w")
        other.set("w", "changed")
        p.multi()
        p.set("w", "mine")
        with pytest.raises(redis.WatchError):
            p.execute()
    assert r.get("w") == b"changed"
    # unchanged watched keys: EXEC runs
    with r.pipeline() as p:
        p.watch("w")
        p.multi()
        p.set("w", "mine")
        assert p.execute() == [True]
    assert r.get("w") == b"mine"
    # a watched key deleted, expired by EXPIRE with a past time, or flushed also aborts
    for change in (lambda: other.delete("w"), lambda: other.expire("w", -1), lambda: other.flushall()):
        r.set("w", 1)
        with r.pipeline() as p:
            p.watch("w")
            change()
            p.multi()
            p.incr("w")
            with pytest.raises(redis.WatchError):
                p.execute()
    # UNWATCH forgets the watch
    with r.pipeline() as p:
        p.watch("w")
        other.set("w", 5)
        p.unwatch()
        p.multi()
        p.incr("w")
        assert p.execute() == [6]
    other.close()


def test_watch_with_the_node_fixture(node):
    """The same check on a fresh node from the shared ``node`` fixture, with raw commands."""
    port = node.nodes[0].port
    a = redis.Redis(host="127.0.0.1", port=port, single_connection_client=True)
    b = client(port)
    a.execute_command("WATCH", "k")
    b.set("k", "1")
    a.execute_command("MULTI")
    a.execute_command("SET", "k", "2")
    assert a.execute_command("EXEC") is None
    assert b.get("k") == b"1"
    a.close()
    b.close()


def test_pipelining(r):
    p = r.pipeline(transaction=False)
    for i in range(500):
        p.set(f"k{i}", i)
        p.incr(f"k{i}")
    p.get("k499")
    p.hset("k0", "f", "v")          # WRONGTYPE in the middle of a pipeline
    p.get("k0")
    res = p.execute(raise_on_error=False)
    assert res[:1000] == [x for i in range(500) for x in (True, i + 1)]
    assert res[1000] == b"500"
    assert isinstance(res[1001], redis.ResponseError) and str(res[1001]) == WRONGTYPE
    assert res[1002] == b"1"
    assert r.dbsize() == 500


# ---------------------------------------------------------------------------- odd arguments

_NAMES = [b"CLIENT", b"CONFIG", b"COMMAND", b"MEMORY", b"HELLO", b"SELECT", b"PING", b"ECHO", b"INFO", b"SCAN",
          b"SET", b"EXPIRE", b"INCRBYFLOAT", b"HINCRBYFLOAT", b"SRANDMEMBER", b"SPOP", b"KEYS", b"GETRANGE",
          b"SETRANGE", b"MSET", b"HSET", b"SMOVE", b"RENAME", b"TYPE", b"DEL", b"WATCH", b"UNWATCH", b"MULTI",
          b"EXEC", b"DISCARD", b"\xff", b"GET"]
_SUBS = [b"LIST", b"INFO", b"ID", b"GETNAME", b"SETNAME", b"KILL", b"SETINFO", b"NO-EVICT", b"GET", b"SET",
         b"DOCS", b"COUNT", b"GETKEYS", b"USAGE", b"HELP", b"TYPE", b"ID", b"3", b"2", b"AUTH", b"SAMPLES"]


def test_no_internal_errors_on_odd_arguments(port):
    """Whatever the arguments (binary, non-UTF-8, out of range), every command answers with
    a reply or a Redis error, never an internal error, and the connection stays usable."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    arg = st.sampled_from(_SUBS) | st.binary(max_size=6) | st.sampled_from(
        [b"-1", b"0", b"9223372036854775808", b"1e400", b"inf", b"\xff\xfe", b"*", b"[", b"k"])
    cmd = st.tuples(st.sampled_from(_NAMES), st.lists(arg, max_size=5)).map(lambda t: [t[0], *t[1]])

    s = Session(port)

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(cmd, min_size=1, max_size=8))
    def check(cmds):
        s("RESET")
        for c in cmds:
            if c[0] == b"CLIENT" and len(c) > 1 and c[1] == b"KILL":
                continue  # could close this very connection
            reply = s(*c)
            if isinstance(reply, Error):
                assert "internal error" not in reply.text, (c, reply)
        assert s("PING") in (Simple("PONG"), Simple("QUEUED"))

    try:
        check()
    finally:
        s.close()
