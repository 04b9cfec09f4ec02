"""Fuzzing the request parser (core/resp.py RequestParser) with hypothesis.

Valid requests, however the bytes are split, give back exactly the commands sent, and no
proper prefix of a request yields one; garbage only ever raises ProtocolError, and always
terminates; oversized lengths are refused before their body is buffered; inline commands
split the way redis-cli quotes them.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from replikv.core.resp import ProtocolError, RequestParser, encode_command, split_inline

ARG = st.one_of(st.binary(max_size=20), st.binary(min_size=100, max_size=3000),
                st.sampled_from([b"", b"\r\n", b"$3\r\n", b"*1\r\n", b"\n", b"\r", b"\x00"]))
COMMAND = st.lists(ARG, min_size=1, max_size=8)


def drain(p: RequestParser, limit: int) -> list:
    """Every command the parser can produce now (bounded: a parser that never stops
    returning commands without consuming bytes would be a hang)."""
    out = []
    for _ in range(limit + 2):
        c = p.next_command()
        if c is None:
            return out
        out.append(c)
    raise AssertionError("next_command kept returning commands: the parser does not make progress")


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


# ---------------------------------------------------------------------------- valid input


@settings(max_examples=150, deadline=None)
@given(cmd=COMMAND)
def test_one_byte_at_a_time_every_prefix_is_none(cmd):
    data = encode_command(*cmd)
    p = RequestParser()
    for i in range(len(data) - 1):
        p.feed(data[i:i + 1])
        assert p.next_command() is None, f"a command from a {i + 1}-byte prefix of {len(data)}"
        assert p.next_command() is None    # asking twice changes nothing
    p.feed(data[-1:])
    assert p.next_command() == cmd
    assert p.next_command() is None
    assert p.buffered() == 0


@settings(max_examples=150, deadline=None)
@given(cmds=st.lists(COMMAND, min_size=1, max_size=6), cuts=st.lists(st.integers(0, 1 << 16), max_size=12))
def test_random_chunkings_give_exactly_the_commands(cmds, cuts):
    data = b"".join(encode_command(*c) for c in cmds)
    p = RequestParser()
    got = []
    for chunk in chunked(data, cuts):
        p.feed(chunk)
        got += drain(p, len(data))
    assert got == cmds
    assert p.buffered() == 0


@settings(max_examples=100, deadline=None)
@given(cmds=st.lists(COMMAND, min_size=1, max_size=4))
def test_whole_stream_at_once_and_byte_by_byte_agree(cmds):
    data = b"".join(encode_command(*c) for c in cmds)
    p = RequestParser()
    p.feed(data)
    assert drain(p, len(data)) == cmds
    p = RequestParser()
    got = []
    bounds = set()
    acc = 0
    for c in cmds:
        acc += len(encode_command(*c))
        bounds.add(acc)
    for i in range(len(data)):
        p.feed(data[i:i + 1])
        out = drain(p, len(data))
        # a command appears exactly when its last byte arrives
        assert bool(out) == (i + 1 in bounds)
        got += out
    assert got == cmds


def test_many_arguments_in_small_chunks_is_linear():
    """A million-argument request arriving 16 KB at a time must not be re-parsed from its
    first argument on every chunk (that was quadratic: one client could stall the node)."""
    n = 300_000
    data = encode_command(b"MSET", *[b"k%d" % i for i in range(n)])
    p = RequestParser()
    t = time.perf_counter()
    got = None
    for i in range(0, len(data), 16384):
        p.feed(data[i:i + 16384])
        r = p.next_command()
        if r is not None:
            got = r
    elapsed = time.perf_counter() - t
    assert got is not None and len(got) == n + 1 and got[-1] == b"k%d" % (n - 1)
    assert elapsed < 3.0, elapsed


def test_large_bulk_in_chunks_is_parsed_once():
    value = b"x" * (8 << 20)
    data = encode_command(b"SET", b"k", value)
    p = RequestParser()
    t = time.perf_counter()
    for i in range(0, len(data) - 1, 4096):
        p.feed(data[i:min(i + 4096, len(data) - 1)])
        assert p.next_command() is None
    p.feed(data[-1:])
    assert p.next_command() == [b"SET", b"k", value]
    assert time.perf_counter() - t < 3.0


# ---------------------------------------------------------------------------- garbage

GARBAGE_ATOMS = st.sampled_from([b"*", b"$", b"\r\n", b"\n", b"\r", b"-1", b"0", b"3", b"99999999999",
                                 b"*2\r\n", b"$3\r\n", b"abc", b'"', b"'", b"\\", b"\\x4", b" ",
                                 b"*-5\r\n", b"$-1\r\n", b"+OK\r\n", b"\x00", b"1_0", b"+3", b" 2"])
GARBAGE = st.one_of(st.binary(max_size=300),
                    st.lists(GARBAGE_ATOMS, max_size=40).map(b"".join),
                    st.lists(st.one_of(GARBAGE_ATOMS, st.binary(max_size=5)), max_size=40).map(b"".join))


def feed_all(data: bytes, cuts: list[int], **limits) -> list:
    p = RequestParser(**limits)
    got = []
    try:
        for chunk in chunked(data, cuts):
            p.feed(chunk)
            got += drain(p, len(data))
    except ProtocolError:
        pass
    return got


@settings(max_examples=400, deadline=2000)
@given(data=GARBAGE, cuts=st.lists(st.integers(0, 400), max_size=8))
@example(data=b"*1\r\n$3\r\nabcXY", cuts=[])
@example(data=b"*3\r\n$-2\r\n", cuts=[])
@example(data=b'"unbalanced\r\n', cuts=[])
@example(data=b"*" + b"9" * 5000 + b"\r\n", cuts=[])
@example(data=b"*1\r\n$" + b"9" * 5000 + b"\r\n", cuts=[])
def test_garbage_only_raises_protocol_error(data, cuts):
    for got in (feed_all(data, cuts), feed_all(data, cuts, max_bulk_len=16, max_multibulk_len=4,
                                                 max_inline_len=32)):
        for c in got:
            assert isinstance(c, list) and all(isinstance(a, bytes) for a in c)


@settings(max_examples=200, deadline=2000)
@given(cmds=st.lists(COMMAND, min_size=1, max_size=3), pos=st.integers(0, 1 << 16),
       byte=st.integers(0, 255), cuts=st.lists(st.integers(0, 1 << 16), max_size=6))
def test_mutated_valid_stream_only_raises_protocol_error(cmds, pos, byte, cuts):
    data = bytearray(b"".join(encode_command(*c) for c in cmds))
    data[pos % len(data)] = byte
    feed_all(bytes(data), cuts)


# ---------------------------------------------------------------------------- limits


def test_oversized_multibulk_count_refused_before_buffering():
    p = RequestParser(max_multibulk_len=1000)
    p.feed(b"*1001\r\n")
    with pytest.raises(ProtocolError, match="multibulk length"):
        p.next_command()
    p = RequestParser(max_multibulk_len=1000)
    p.feed(b"*1000\r\n")
    assert p.next_command() is None


@pytest.mark.parametrize("declared", [1025, 1 << 40, 10**30])
def test_oversized_bulk_refused_before_buffering(declared):
    p = RequestParser(max_bulk_len=1024)
    p.feed(b"*2\r\n$3\r\nSET\r\n$%d\r\n" % declared)
    with pytest.raises(ProtocolError, match="bulk length"):
        p.next_command()
    # the limit itself is fine, and waits for its body
    p = RequestParser(max_bulk_len=1024)
    p.feed(b"*1\r\n$1024\r\n" + b"x" * 10)
    assert p.next_command() is None


def test_endless_length_lines_refused():
    p = RequestParser()
    p.feed(b"*" + b"1" * (70 * 1024))
    with pytest.raises(ProtocolError):
        p.next_command()
    p = RequestParser()
    p.feed(b"*1\r\n$" + b"1" * (70 * 1024))
    with pytest.raises(ProtocolError):
        p.next_command()
    p = RequestParser(max_inline_len=100)
    p.feed(b"GET " + b"k" * 200)
    with pytest.raises(ProtocolError, match="inline"):
        p.next_command()


@pytest.mark.parametrize("bad", [b"*2\r\n$3\r\nabc\r\n:1\r\n", b"*1\r\n$3\r\nabcd\r\n", b"*x\r\n",
                                 b"*1\r\n$x\r\n", b"*1\r\n$-1\r\n"])
def test_malformed_multibulk(bad):
    p = RequestParser()
    p.feed(bad)
    with pytest.raises(ProtocolError):
        p.next_command()


def test_empty_multibulk_and_empty_lines():
    p = RequestParser()
    p.feed(b"*0\r\n*-1\r\n\r\n\n*1\r\n$4\r\nPING\r\n")
    assert drain(p, 100) == [[], [], [], [], [b"PING"]]


# ---------------------------------------------------------------------------- inline

_ESC = {ord("\\"): b"\\\\", ord('"'): b'\\"', ord("\n"): b"\\n", ord("\r"): b"\\r", ord("\t"): b"\\t",
        7: b"\\a", 8: b"\\b"}


def dquote(arg: bytes) -> bytes:
    out = bytearray(b'"')
    for c in arg:
        if c in _ESC:
            out += _ESC[c]
        elif 32 <= c < 127:
            out.append(c)
        else:
            out += b"\\x%02x" % c
    return bytes(out + b'"')


def squote(arg: bytes) -> bytes:
    return b"'" + arg.replace(b"'", b"\\'") + b"'"


PLAIN = st.lists(st.sampled_from([c for c in range(33, 127) if c not in b"\"'"]), min_size=1,
                 max_size=12).map(bytes)
SQ_SAFE = st.lists(st.sampled_from([c for c in range(256) if c not in b"\\\n"]), max_size=12).map(bytes)


@settings(max_examples=300, deadline=None)
@given(args=st.lists(st.one_of(PLAIN.map(lambda a: (a, a)),
                               st.binary(max_size=16).map(lambda a: (a, dquote(a))),
                               SQ_SAFE.map(lambda a: (a, squote(a)))), min_size=1, max_size=6),
       sep=st.sampled_from([b" ", b"  ", b"\t", b" \t "]), crlf=st.sampled_from([b"\r\n", b"\n"]),
       cuts=st.lists(st.integers(0, 500), max_size=5))
def test_inline_with_quotes(args, sep, crlf, cuts):
    want = [a for a, _ in args]
    line = sep.join(q for _, q in args)
    assume(not line.startswith(b"*"))
    data = b"  " + line + b" " + crlf
    assert split_inline(line) == want
    p = RequestParser()
    got = []
    for chunk in chunked(data, cuts):
        p.feed(chunk)
        got += drain(p, 10)
    assert got == [want]


@pytest.mark.parametrize("line,want", [
    (b'SET k "hello world"', [b"SET", b"k", b"hello world"]),
    (b"SET k 'it\\'s'", [b"SET", b"k", b"it's"]),
    (b'SET k "\\x41\\x4a\\n"', [b"SET", b"k", b"AJ\n"]),
    (b'SET k "\\x4g"', [b"SET", b"k", b"x4g"]),           # not a hex escape
    (b'SET k "\\x+1"', [b"SET", b"k", b"x+1"]),           # nor is this
    (b'SET k ""', [b"SET", b"k", b""]),
    (b"  PING  ", [b"PING"]),
])
def test_inline_examples(line, want):
    p = RequestParser()
    p.feed(line + b"\r\n")
    assert p.next_command() == want


@pytest.mark.parametrize("line", [b'SET k "abc', b"SET k 'abc", b'SET k "a"b', b"SET k 'a'b"])
def test_inline_bad_quotes(line):
    p = RequestParser()
    p.feed(line + b"\r\n")
    with pytest.raises(ProtocolError, match="quotes"):
        p.next_command()


# ---------------------------------------------------------------------------- hiredis fast path
# RequestParser hands chunks that start at a frame boundary to hiredis and keeps its result
# only if the chunk re-encodes to itself; otherwise the Python parser (fast=False, the
# reference) takes the chunk. Whatever the input and however it is cut, both must give the
# same commands and the same error.


def outcome(data: bytes, cuts: list[int], fast: bool, **limits):
    p = RequestParser(fast=fast, **limits)
    got = []
    try:
        for chunk in chunked(data, cuts):
            p.feed(chunk)
            got += drain(p, len(data))
    except ProtocolError as e:
        return got, str(e), p
    return got, None, p


def assert_same_as_reference(data: bytes, cuts: list[int], **limits):
    fast = outcome(data, cuts, True, **limits)
    ref = outcome(data, cuts, False, **limits)
    assert fast[:2] == ref[:2]
    return fast[2]


LENIENT_IN_HIREDIS = [
    b"*1\r\n+PING\r\n",                     # a simple string inside the array
    b"*1\r\n(123\r\n",                      # a big number
    b"*1\r\n=8\r\ntxt:PING\r\n",            # a verbatim string
    b"*2\r\n$3\r\nGET\r\n:5\r\n",           # an integer
    b"*1\r\n$4\r\nPINGxx\r\n",              # a bulk not terminated by CRLF
    b"*1\r\n$3\r\nabcXY",                   # ... and the two bytes hiredis skips
    b"*1\r\n$3\r\nabcXY*1\r\n$4\r\nPING\r\n",
    b"*1\r\n+PING\r\n*1\r\n=8\r\ntxt:PING\r\n",  # two leniencies whose sizes could cancel out
    b"*1\r\n%1\r\n$1\r\na\r\n$1\r\nb\r\n",  # a map
    b"*1\r\n*1\r\n$1\r\na\r\n",             # a nested array
    b"*-1\r\n",                             # the null array
    b"*0\r\n*1\r\n$4\r\nPING\r\n",
    b"*1\r\n$03\r\nabc\r\n",                # a non-canonical length
    b"*1\r\n$4\r\nPING\r\n$4\r\nPING\r\n",  # a bulk outside an array
    b"*1\r\n$4\r\nPING\r\nPING\r\n",        # an inline command after a frame
]


@pytest.mark.parametrize("data", LENIENT_IN_HIREDIS)
def test_fast_path_is_as_strict_as_the_reference(data):
    assert_same_as_reference(data, [])
    for i in range(1, len(data)):
        assert_same_as_reference(data, [i])


def test_fast_path_takes_whole_frames_and_falls_back_on_a_cut():
    data = b"".join(encode_command(b"SET", b"k%d" % i, b"v" * 100) for i in range(16))
    p = assert_same_as_reference(data, [])
    assert (p.fast_chunks, p.slow_chunks) == (1, 0)
    p = assert_same_as_reference(data, [len(data) // 2])
    assert p.slow_chunks >= 1
    p = assert_same_as_reference(data + data, [len(data)])   # two chunks, each whole frames
    assert (p.fast_chunks, p.slow_chunks) == (2, 0)


def test_fast_path_keeps_order_with_commands_not_yet_taken():
    p = RequestParser()
    p.feed(encode_command(b"A") + encode_command(b"B"))
    assert p.next_command() == [b"A"]
    p.feed(encode_command(b"C"))        # arrives while B is still waiting
    assert [p.next_command(), p.next_command(), p.next_command()] == [[b"B"], [b"C"], None]
    assert p.buffered() == 0


def test_fast_path_respects_small_limits():
    data = encode_command(b"SET", b"k", b"v" * 100)
    assert_same_as_reference(data, [], max_bulk_len=16)
    assert_same_as_reference(encode_command(*[b"a"] * 10), [], max_multibulk_len=4)


@settings(max_examples=300, deadline=None)
@given(cmds=st.lists(COMMAND, min_size=1, max_size=6), cuts=st.lists(st.integers(0, 1 << 16), max_size=6))
def test_fast_path_valid_streams_match_the_reference(cmds, cuts):
    data = b"".join(encode_command(*c) for c in cmds)
    assert_same_as_reference(data, cuts)


@settings(max_examples=500, deadline=None)
@given(cmds=st.lists(COMMAND, min_size=1, max_size=4), edits=st.lists(
    st.tuples(st.integers(0, 1 << 16), st.sampled_from([b"", b"+", b"(", b"=", b":", b"*", b"$", b"\r", b"\n",
                                                          b"\r\n", b"0", b"9", b"-", b"x", b"_", b"%"])),
    min_size=1, max_size=3), cuts=st.lists(st.integers(0, 1 << 16), max_size=4))
def test_fast_path_mutated_streams_match_the_reference(cmds, edits, cuts):
    data = bytearray(b"".join(encode_command(*c) for c in cmds))
    for pos, b in edits:       # replace one byte (or delete it, or insert a CRLF)
        i = pos % len(data)
        data[i:i + (0 if b == b"\r\n" else 1)] = b
        if not data:
            return
    assert_same_as_reference(bytes(data), cuts)


@settings(max_examples=300, deadline=None)
@given(data=GARBAGE, cuts=st.lists(st.integers(0, 400), max_size=8))
def test_fast_path_garbage_matches_the_reference(data, cuts):
    assert_same_as_reference(b"*" + data, cuts)
    assert_same_as_reference(b"*1\r\n$4\r\nPING\r\n" + data, cuts)
