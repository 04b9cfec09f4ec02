"""Bad input against a real node process (MISSION K4).

Every kind of bad input gets a Redis-style error reply; where the byte stream cannot be
resynchronised the node answers and closes that one connection. Throughout, one redis-py
connection opened at the start keeps working, every acknowledged write survives (checked
after a kill -9 and restart at the end), and the node log holds no traceback.
"""

from __future__ import annotations

import hashlib
import random
import socket

import hiredis
import pytest
from prometheus_client.parser import text_string_to_metric_families

from replikv.cluster.local import LocalCluster
from tests.conftest import client, free_base_port, wait_for

MAX_BULK = 64 * 1024 * 1024
MAX_MULTIBULK = 64
MAX_INLINE = 4096

# writes acknowledged to the long-lived client; all must survive the restart at the end
ACKED: dict[bytes, bytes] = {}


@pytest.fixture(scope="module")
def cl(tmp_path_factory):
    c = LocalCluster.create(str(tmp_path_factory.mktemp("badinput")), 1, free_base_port(1),
                            settings={"max_bulk_len": MAX_BULK, "max_multibulk_len": MAX_MULTIBULK,
                                      "max_inline_len": MAX_INLINE})
    c.start()
    yield c
    c.kill(1)


@pytest.fixture(scope="module")
def r(cl):
    """The long-lived redis-py connection that must keep working through everything."""
    r = client(cl.nodes[0].port)
    assert r.set(b"before", b"1")
    ACKED[b"before"] = b"1"
    return r


@pytest.fixture(autouse=True)
def still_serving(r):
    """After every test: the long-lived connection still answers and acknowledges writes."""
    yield
    assert r.ping()
    key = f"alive:{len(ACKED)}".encode()
    assert r.set(key, b"ok")
    ACKED[key] = b"ok"
    assert r.get(b"before") == b"1"


def connect(cl) -> socket.socket:
    return socket.create_connection(("127.0.0.1", cl.nodes[0].port), timeout=10)


def read_replies(s: socket.socket, n: int) -> list:
    """Read exactly n RESP replies (errors come back as hiredis.ReplyError objects)."""
    reader = hiredis.Reader()
    out = []
    while len(out) < n:
        while True:
            rep = reader.gets()
            if rep is False:
                break
            out.append(rep)
            if len(out) == n:
                return out
        data = s.recv(1 << 20)
        assert data, f"connection closed after {len(out)} of {n} replies: {out!r}"
        reader.feed(data)
    return out


def read_until_closed(s: socket.socket) -> bytes:
    """Everything the node sends until it closes the connection (fails on the socket timeout)."""
    chunks = []
    while True:
        try:
            data = s.recv(1 << 16)
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def assert_error_then_close(cl, payload: bytes, expect: bytes) -> None:
    s = connect(cl)
    try:
        s.sendall(payload)
        got = read_until_closed(s)
    finally:
        s.close()
    assert got.startswith(b"-ERR "), got[:200]
    assert expect in got, got[:200]
    assert got.endswith(b"\r\n") and got.count(b"\r\n") == 1, got[:200]


# ---------------------------------------------------------------------------- protocol errors

@pytest.mark.parametrize("payload, expect", [
    (b"*abc\r\n", b"invalid multibulk length"),
    (b"*1\r\n+PING\r\n", b"expected '$'"),
    (b"*2\r\n$3\r\nGET\r\n$x1\r\n", b"invalid bulk length"),
    (b"*1\r\n$-3\r\n", b"invalid bulk length"),
    (b"*1\r\n$4\r\nPINGxx\r\n", b"not terminated by CRLF"),
    (b'SET "unbalanced value\r\n', b"unbalanced quotes"),
    (b"*1\r\n" + b"$" + b"9" * 70_000, b"too big bulk count string"),
])
def test_protocol_garbage_gets_error_and_close(cl, payload, expect):
    assert_error_then_close(cl, payload, expect)


def test_replies_before_garbage_are_sent_and_writes_kept(cl):
    s = connect(cl)
    try:
        s.sendall(b"SET pre-garbage yes\r\n*2\r\n$3\r\nGET\r\n$11\r\npre-garbage\r\n*zz\r\n")
        got = read_until_closed(s)
    finally:
        s.close()
    assert got.startswith(b"+OK\r\n$3\r\nyes\r\n-ERR Protocol error"), got
    ACKED[b"pre-garbage"] = b"yes"


def test_bulk_length_over_limit_refused_before_the_body(cl):
    # only the header is sent: the node must refuse on the declared length alone
    assert_error_then_close(cl, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n" % (MAX_BULK + 1), b"invalid bulk length")
    assert_error_then_close(cl, b"*2\r\n$%d\r\n" % (2**63), b"invalid bulk length")


def test_multibulk_length_over_limit(cl, r):
    assert_error_then_close(cl, b"*%d\r\n" % (MAX_MULTIBULK + 1), b"invalid multibulk length")
    assert_error_then_close(cl, b"*99999999999999999999999\r\n", b"invalid multibulk length")
    # exactly at the limit is fine
    values = [b"v%d" % i for i in range(MAX_MULTIBULK - 2)]
    assert r.sadd(b"at-limit", *values) == MAX_MULTIBULK - 2


def test_huge_inline_line(cl):
    # no newline: refused once the line exceeds the limit, without waiting for its end
    assert_error_then_close(cl, b"a" * (MAX_INLINE + 10), b"too big inline request")


def test_huge_inline_line_with_newline_in_one_write(cl, r):
    s = connect(cl)
    try:
        s.sendall(b"a" * (MAX_INLINE * 4) + b"\r\n")
        got = read_until_closed(s)
    finally:
        s.close()
    assert got.startswith(b"-ERR") and len(got) < 1024, got[:200]


def test_request_arriving_byte_by_byte(cl, r):
    # every proper prefix of a request means "need more", never an error
    s = connect(cl)
    try:
        for b in b"*3\r\n$3\r\nSET\r\n$8\r\nbytewise\r\n$2\r\nok\r\n":
            s.sendall(bytes([b]))
        assert read_replies(s, 1) == [b"OK"]
    finally:
        s.close()
    ACKED[b"bytewise"] = b"ok"


# ---------------------------------------------------------------------------- command errors

def test_command_errors_keep_the_connection(cl, r):
    s = connect(cl)
    try:
        s.sendall(b"NOSUCHCOMMAND a b\r\n"
                  b"*1\r\n$3\r\nGET\r\n"                       # wrong arity
                  b"SET only-key\r\n"                          # wrong arity
                  b"*3\r\n$4\r\nSADD\r\n$5\r\naset1\r\n$1\r\nx\r\n"
                  b"GET aset1\r\n"                             # wrong type
                  b"SET notnum abc\r\nINCR notnum\r\n"        # not an integer
                  b"EXPIRE notnum soon\r\n"                   # not an integer
                  b"SET k v EX -5\r\n"                         # invalid expire
                  b"INCRBYFLOAT fl notafloat\r\n"              # not a float
                  b"*2\r\n$4\r\nECHO\r\n$5\r\na\r\nb!\r\n"     # CRLF inside an argument is fine
                  b"*3\r\n$7\r\nNOTACMD\r\n$4\r\nx\r\ny\r\n$0\r\n\r\n"  # and echoed safely in the error
                  b"PING\r\n")
        replies = read_replies(s, 13)
    finally:
        s.close()
    errs = [str(x) for x in replies if isinstance(x, hiredis.ReplyError)]
    assert str(replies[0]).startswith("ERR unknown command 'NOSUCHCOMMAND'")
    assert "wrong number of arguments for 'get' command" in str(replies[1])
    assert "wrong number of arguments for 'set' command" in str(replies[2])
    assert replies[3] == 1
    assert str(replies[4]).startswith("WRONGTYPE")
    assert replies[5] == b"OK"
    assert "not an integer" in str(replies[6])
    assert "not an integer" in str(replies[7])
    assert str(replies[8]).startswith("ERR invalid expire time")
    assert "not a valid float" in str(replies[9])
    assert replies[10] == b"a\r\nb!"
    assert str(replies[11]).startswith("ERR unknown command 'NOTACMD'")
    assert replies[12] == b"PONG"
    assert len(errs) == 9
    ACKED[b"notnum"] = b"abc"


def test_every_command_with_bad_arguments_answers(cl, r):
    """Each known command, given arguments of the wrong kinds and counts, answers (a reply or
    an error) on the same connection: no command raises out of the node and drops it."""
    names = sorted({str(c).lower() for c in r.command()}
                   - {"shutdown", "debug", "quit", "reset", "save", "bgsave", "flushall", "flushdb",
                      "wait", "hello", "multi", "exec", "discard", "watch", "subscribe", "psubscribe",
                      "monitor", "sync", "psync", "replicaof", "slaveof", "failover", "replica"})
    rng = random.Random(4)
    junk = [b"", b"-1", b"0", b"abc", b"1e400", b"nan", b"\xff\xfe", b"9" * 30, b"-9223372036854775809",
            b"aset1", b"fl", b"*", b"[", b"(1"]   # never a key the test must keep
    s = connect(cl)
    try:
        for name in names:
            for n in range(0, 5):
                args = [name.encode()] + [rng.choice(junk) for _ in range(n)]
                s.sendall(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
                read_replies(s, 1)
    finally:
        s.close()


# ---------------------------------------------------------------------------- disconnects, big values

def test_client_disconnects_mid_command(cl, r):
    s = connect(cl)
    s.sendall(b"*3\r\n$3\r\nSET\r\n$7\r\nhalfway\r\n$100\r\nonly-part-of-the-value")
    s.close()
    s = connect(cl)   # and a transaction that never reaches EXEC
    s.sendall(b"MULTI\r\nSET in-multi 1\r\n")
    read_replies(s, 2)
    s.close()
    s = connect(cl)   # and a huge declared value, abandoned
    s.sendall(b"*3\r\n$3\r\nSET\r\n$4\r\nhuge\r\n$%d\r\n" % (MAX_BULK - 1) + b"x" * 100_000)
    s.close()
    assert r.exists(b"halfway", b"in-multi", b"huge") == 0
    wait_for(lambda: r.info("clients")["connected_clients"] == 1, what="the node to see the disconnects")


def test_50mb_value_in_small_chunks(cl, r):
    value = random.Random(50).randbytes(50 * 1024 * 1024)
    frame = b"*3\r\n$3\r\nSET\r\n$8\r\nbigvalue\r\n$%d\r\n" % len(value) + value + b"\r\n"
    s = connect(cl)
    try:
        chunk = 16 * 1024
        for i in range(0, len(frame), chunk):
            s.sendall(frame[i:i + chunk])
            if i % (256 * chunk) == 0:
                assert r.ping()   # other clients are served while the value arrives
        assert read_replies(s, 1) == [b"OK"]
    finally:
        s.close()
    got = r.get(b"bigvalue")
    assert len(got) == len(value) and hashlib.sha256(got).digest() == hashlib.sha256(value).digest()
    ACKED[b"bigvalue"] = value


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("first", [b"", b"SET slow-first x\r\n"], ids=["gets", "write-then-gets"])
def test_slow_reader_does_not_grow_memory(cl, r, first):
    """A client pipelines 400 GETs of a 1 MB value and reads nothing: the node must stop
    reading it (flow control) instead of building 400 MB of replies; once the client reads,
    every reply arrives, in order. With a write first, the GET replies queue behind the
    write's reply (which waits for the log): they must be bounded too."""
    value = b"v" * (1024 * 1024)
    assert r.set(b"onemb", value)
    ACKED[b"onemb"] = value
    pid = cl.pid(cl.nodes[0])
    base = _rss_kb(pid)
    gets_before = _get_calls(cl)
    n = 400
    s = connect(cl)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    try:
        s.sendall(first + b"*2\r\n$3\r\nGET\r\n$5\r\nonemb\r\n" * n)
        wait_for(lambda: _get_calls(cl) > gets_before, what="the node to start answering the pipeline")
        for _ in range(20):
            assert r.ping()
        assert _get_calls(cl) - gets_before < n, "every GET ran although the client read nothing"
        grown_mb = (_rss_kb(pid) - base) / 1024
        assert grown_mb < 100, f"node grew {grown_mb:.0f} MB for a client that does not read"
        expected = [b"OK"] * bool(first) + [value] * n
        reader = hiredis.Reader()
        got = 0
        while got < len(expected):
            data = s.recv(1 << 20)
            assert data, f"closed after {got} replies"
            reader.feed(data)
            while (rep := reader.gets()) is not False:
                assert rep == expected[got], got
                got += 1
        if first:
            ACKED[b"slow-first"] = b"x"
    finally:
        s.close()


def _get_calls(cl) -> int:
    """GETs the node has run, from its Prometheus counter."""
    for fam in text_string_to_metric_families(cl.http_get(cl.nodes[0], "/metrics")):
        if fam.name == "replikv_commands":
            return int(sum(s.value for s in fam.samples if s.labels.get("command") == "get"))
    return 0


# ---------------------------------------------------------------------------- fuzz

def test_random_garbage_fuzz(cl, r):
    rng = random.Random(1234)
    pieces = [b"*", b"$", b"\r\n", b"\n", b"-1", b"0", b"3", b"99999999999", b"SET", b"GET", b"PING", b"\x00",
              b'"', b"'", b"\\x4", b"MULTI", b"EXEC", b" ", b"abc"]
    for _ in range(150):
        if rng.random() < 0.5:
            blob = rng.randbytes(rng.randint(1, 300))
        else:
            blob = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 40)))
        s = connect(cl)
        try:
            s.sendall(blob)
        finally:
            s.close()
    assert r.ping()
    wait_for(lambda: r.info("clients")["connected_clients"] == 1, what="the fuzz connections to be gone")


# ---------------------------------------------------------------------------- too many clients

def test_max_clients(cluster_factory):
    c = cluster_factory(1, max_clients=10)
    c.start()
    port = c.nodes[0].port
    keep = client(port)
    assert keep.ping()
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(100)]
    try:
        for s in socks:
            s.sendall(b"PING\r\n")
        # accepted in order: 9 more fit beside `keep`, the other 91 are refused
        answers = [read_until_closed(s) if i >= 9 else read_replies(s, 1)[0] for i, s in enumerate(socks)]
        assert answers[:9] == [b"PONG"] * 9
        assert all(a == b"-ERR max number of clients reached\r\n" for a in answers[9:]), answers
        assert keep.set(b"k", b"v") and keep.get(b"k") == b"v"
    finally:
        for s in socks:
            s.close()

    def fresh_client_served():
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"PING\r\n")
            return read_replies(s, 1) == [b"PONG"]

    wait_for(fresh_client_served, what="a new client to be served once the others left")
    assert int(keep.info("stats")["rejected_connections"]) >= 91


# ---------------------------------------------------------------------------- nothing lost

def test_no_traceback_and_acknowledged_writes_survive_restart(cl, r):
    log = open(cl.log_file(cl.nodes[0]), encoding="utf-8", errors="replace").read()
    assert "Traceback" not in log and "Fatal error" not in log, log[-3000:]
    cl.kill(1)
    cl.start()
    r2 = client(cl.nodes[0].port)
    for k, v in ACKED.items():
        assert r2.get(k) == v, k
    r.connection_pool.disconnect()
