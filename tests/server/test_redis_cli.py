"""The real ``redis-cli`` binary against a real node: one-shot commands (raw output when
stdout is not a terminal), ``--no-raw`` and ``-3`` formatting, a session fed on stdin,
``--scan``, ``--pipe`` (pipelined mass insertion), ``-x``, and an interactive session on a
pseudo-terminal, where redis-cli starts by sending COMMAND DOCS and builds its ``help``
from the reply (the expected outputs are what redis-cli prints against Redis itself).
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import time

import pytest

from replikv.cluster.local import LocalCluster
from tests.conftest import free_base_port

pytestmark = pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli not installed")


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    cl = LocalCluster.create(str(tmp_path_factory.mktemp("cli")), 1, free_base_port(1))
    cl.start()
    yield cl.nodes[0].port
    for n in cl.nodes:
        cl.kill(n.node_id)


@pytest.fixture
def cli(port):
    def run(*args, stdin: bytes | None = None, opts=()) -> str:
        p = subprocess.run(["redis-cli", "-p", str(port), *opts, *map(str, args)], input=stdin,
                           capture_output=True, timeout=30)
        assert p.stderr == b"", p.stderr
        return p.stdout.decode("utf-8", "replace")

    run("FLUSHALL")
    return run


def test_one_shot_commands_raw_output(cli):
    assert cli("SET", "k", "v") == "OK\n"
    assert cli("GET", "k") == "v\n"
    assert cli("GET", "nokey") == "\n"
    assert cli("INCR", "n") == "1\n"
    assert cli("INCRBYFLOAT", "f", "1e-5") == "0.00001\n"
    # (in raw mode redis-cli ends an error with an empty line)
    assert cli("INCR", "k") == "ERR value is not an integer or out of range\n\n"
    assert cli("HSET", "h", "f", "v", "g", "a b") == "2\n"
    assert cli("HGETALL", "h") == "f\nv\ng\na b\n"
    assert cli("SADD", "s", "m") == "1\n"
    assert cli("SMEMBERS", "s") == "m\n"
    assert cli("TYPE", "s") == "set\n"
    assert cli("EXPIRE", "k", 1000) == "1\n"
    assert cli("PERSIST", "k") == "1\n"
    assert cli("TTL", "k") == "-1\n"
    assert cli("PING") == "PONG\n"
    assert cli("ECHO", "héllo") == "héllo\n"
    assert cli("DBSIZE") == "5\n"
    assert cli("nosuch", "a") == "ERR unknown command 'nosuch', with args beginning with: 'a' \n\n"
    assert cli("GET") == "ERR wrong number of arguments for 'get' command\n\n"
    assert cli("CLIENT", "FOO") == "ERR unknown subcommand 'FOO'. Try CLIENT HELP.\n\n"
    assert cli("SET", "bin", "a\\x00b") == "OK\n"      # redis-cli passes the argument as typed
    assert "redis_version:7.2.4" in cli("INFO", "server")
    assert cli("CONFIG", "GET", "appendfsync") == "appendfsync\neverysec\n"
    assert "cmd=client|list" in cli("CLIENT", "LIST")


def test_no_raw_formatting(cli):
    cli("HSET", "h", "f", "v", "g", "a b")
    assert cli("HGETALL", "h", opts=["--no-raw"]) == '1) "f"\n2) "v"\n3) "g"\n4) "a b"\n'
    assert cli("GET", "nokey", opts=["--no-raw"]) == "(nil)\n"
    assert cli("INCR", "n", opts=["--no-raw"]) == "(integer) 1\n"
    cli("SET", "k", "v")
    assert cli("INCR", "k", opts=["--no-raw"]) == "(error) ERR value is not an integer or out of range\n"
    assert cli("SMEMBERS", "nokey", opts=["--no-raw"]) == "(empty array)\n"
    assert cli("SET", "k", "v", opts=["--no-raw"]) == "OK\n"
    assert cli("SCAN", "0", "MATCH", "k", opts=["--no-raw"]) == '1) "0"\n2) 1) "k"\n'


def test_resp3_formatting(cli):
    cli("HSET", "h", "f", "v")
    assert cli("HGETALL", "h", opts=["-3"]) == "f v\n"
    assert cli("HGETALL", "h", opts=["-3", "--no-raw"]) == '1# "f" => "v"\n'
    cli("SADD", "s", "m")
    assert cli("SMEMBERS", "s", opts=["-3", "--no-raw"]) == '1~ "m"\n'
    assert cli("GET", "nokey", opts=["-3", "--no-raw"]) == "(nil)\n"


def test_session_on_stdin(cli):
    session = b"\n".join([
        b"SET a 1",
        b"GET a",
        b"MULTI",
        b"INCR a",
        b"PING",
        b"GET",
        b"EXEC",
        b"MULTI",
        b"INCR a",
        b"ECHO hi",
        b"EXEC",
        b"WATCH a",
        b"UNWATCH",
        b'SET "key with spaces" "value with \\"quotes\\""',
        b'GET "key with spaces"',
        b"HSET h f v",
        b"HGETALL h",
        b"SELECT 0",
        b"DBSIZE",
    ]) + b"\n"
    assert cli(stdin=session) == "\n".join([
        "OK", "1", "OK", "QUEUED", "QUEUED", "ERR wrong number of arguments for 'get' command", "",
        "EXECABORT Transaction discarded because of previous errors.", "",
        "OK", "QUEUED", "QUEUED", "2", "hi",
        "OK", "OK", "OK", 'value with "quotes"', "1", "f", "v", "OK", "3"]) + "\n"
    session3 = b"MULTI\nSET x 1\nINCR x\nEXEC\n"
    assert cli(stdin=session3, opts=["--no-raw"]) == "OK\nQUEUED\nQUEUED\n1) OK\n2) (integer) 2\n"


def test_scan_pipe_and_x(cli, port):
    cli("MSET", *[x for i in range(50) for x in (f"key:{i}", i)])
    cli("SET", "other", 1)
    keys = cli(opts=["--scan", "--pattern", "key:*"]).split()
    assert sorted(keys) == sorted(f"key:{i}" for i in range(50))
    # --pipe: mass insertion of raw RESP, pipelined; redis-cli checks the replies with ECHO
    proto = b"".join(b"*3\r\n$3\r\nSET\r\n$%d\r\np:%d\r\n$1\r\n%d\r\n" % (len(b"p:%d" % i), i, i % 10)
                     for i in range(2000))
    out = cli(opts=["--pipe"], stdin=proto)
    assert "errors: 0, replies: 2000" in out
    assert cli("GET", "p:1999") == "9\n"
    # -x: the last argument is read from stdin
    assert cli("SET", "fromstdin", opts=["-x"], stdin=b"line1\nline2\n") == "OK\n"
    assert cli("GET", "fromstdin") == "line1\nline2\n\n"


class Terminal:
    """redis-cli on a pseudo-terminal, so it runs interactively (it then asks COMMAND DOCS
    at startup, and prints through its prompt)."""

    def __init__(self, port: int, home: str) -> None:
        self.master, slave = pty.openpty()
        env = dict(os.environ, TERM="dumb", HOME=home, REDISCLI_HISTFILE="/dev/null")
        self.proc = subprocess.Popen(["redis-cli", "-p", str(port)], stdin=slave, stdout=slave, stderr=slave,
                                     env=env, close_fds=True)
        os.close(slave)
        self.buf = b""
        self.prompt = f"127.0.0.1:{port}> ".encode()

    def read_until_prompt(self, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while self.prompt not in self.buf:
            left = deadline - time.monotonic()
            assert left > 0, f"no prompt; got {self.buf!r}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:
                    raise AssertionError(f"redis-cli exited; got {self.buf!r}") from None
                self.buf += data
        i = self.buf.index(self.prompt) + len(self.prompt)
        out, self.buf = self.buf[:i], self.buf[i:]
        text = out.decode("utf-8", "replace").replace("\r", "")
        for esc in ("\x1b[0m", "\x1b[1m", "\x1b[33m", "\x1b[90m"):
            text = text.replace(esc, "")
        return text

    def run(self, line: str) -> str:
        os.write(self.master, line.encode() + b"\r")
        out = self.read_until_prompt()
        # drop the echoed command line and the next prompt
        return out.split("\n", 1)[1].rsplit("\n", 1)[0]

    def close(self) -> None:
        os.write(self.master, b"quit\r")
        try:
            self.proc.wait(10)
        finally:
            os.close(self.master)


def test_interactive_startup_uses_command_docs(port, tmp_path):
    t = Terminal(port, str(tmp_path))
    try:
        t.read_until_prompt()
        # DIGEST exists only in replikv: its help can only come from our COMMAND DOCS
        assert "summary: replikv: a digest of the whole keyspace" in t.run("help digest")
        # argument syntax built from COMMAND DOCS "arguments", as Redis's own is shown
        out = t.run("help set")
        assert ("SET key value [NX|XX] [GET] [EX seconds|PX milliseconds|EXAT unix-time-seconds"
                "|PXAT unix-time-milliseconds|KEEPTTL]") in out
        assert "summary: Set the string value of a key" in out and "group: string" in out
        assert "HSET key field value [field value ...]" in t.run("help hset")
        assert "CLIENT LIST [TYPE NORMAL|MASTER|REPLICA|PUBSUB] [ID client-id [client-id ...]]" in \
            t.run("help client list")
        assert "SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]" in t.run("help scan")
        assert "MEMORY USAGE key [SAMPLES count]" in t.run("help memory usage")
        assert "HINCRBYFLOAT" in t.run("help @hash")
        assert t.run("set k v") == "OK"
        assert t.run("get k") == '"v"'
        assert t.run("hset h f v") == "(integer) 1"
        assert t.run("hgetall h") == '1) "f"\n2) "v"'
        assert t.run("incr k") == "(error) ERR value is not an integer or out of range"
    finally:
        t.close()
