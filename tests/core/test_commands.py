"""Fast, socket-free tests of the data command handlers through a Ctx.

They check what the handlers emit as well as what they reply: effects are deterministic
(absolute expiry times, explicit members, resulting values, never "now" or a random pick),
a failing command emits nothing, and replaying the emitted effects into a fresh Keyspace
through Keyspace.apply gives the same keyspace (digest).
"""

from __future__ import annotations

import random
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replikv.core import commands as C
from replikv.core.keyspace import (
    E_DEL,
    E_EXPIRE,
    E_HSET,
    E_SADD,
    E_SET,
    E_SREM,
    T_HASH,
    T_SET,
    T_STRING,
    Keyspace,
    digest,
)
from replikv.core.resp import OK, Error, Map, SetReply, Simple

NOW = 1_700_000_000_000  # a fixed "now" (ms)


class Harness:
    """A keyspace plus everything every command emitted, to replay."""

    def __init__(self, seed: int = 1) -> None:
        self.ks = Keyspace()
        self.rng = random.Random(seed)
        self.pos = 0
        self.log: list[tuple] = []   # (pos, effects)
        self.last_effects: list[tuple] = []

    def __call__(self, *args, now: int = NOW, leader: bool = True):
        args = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        cmd = C.lookup(args)
        if cmd is None:
            raise AssertionError(f"unknown command {args[0]!r}")
        if not C.arity_ok(cmd, len(args)):
            return Error(C.arity_error(cmd.name))
        self.pos += 1
        ctx = C.Ctx(self.ks, now, self.pos, self.rng, expire_on_access=leader)
        try:
            reply = C.run(ctx, cmd, args)
        except C.CommandError as e:
            reply = Error(e.text)
        self.last_effects = ctx.effects
        if ctx.effects:
            self.log.append((self.pos, list(ctx.effects)))
        return reply

    def replay(self) -> Keyspace:
        ks = Keyspace()
        for pos, effects in self.log:
            for e in effects:
                ks.apply(e, pos)
        return ks


@pytest.fixture
def h():
    return Harness()


def err(text: str) -> Error:
    return Error(text)


# ---------------------------------------------------------------------------- determinism of effects

def test_set_ex_emits_an_absolute_expiry(h):
    assert h("SET", "k", "v", "EX", 10) == OK
    assert h.last_effects == [(E_SET, b"k", b"v", NOW + 10_000)]
    assert h("SET", "k", "v", "PX", 1500) == OK
    assert h.last_effects == [(E_SET, b"k", b"v", NOW + 1500)]
    assert h("SET", "k", "v", "EXAT", 2_000_000_000) == OK
    assert h.last_effects == [(E_SET, b"k", b"v", 2_000_000_000_000)]
    assert h("SET", "k", "v", "PXAT", NOW + 5) == OK
    assert h.last_effects == [(E_SET, b"k", b"v", NOW + 5)]
    assert h("SET", "k", "w", "KEEPTTL") == OK
    assert h.last_effects == [(E_SET, b"k", b"w", NOW + 5)]
    assert h("SET", "k", "x") == OK
    assert h.last_effects == [(E_SET, b"k", b"x", 0)]


def test_setex_psetex_expire_family_emit_absolute_times(h):
    assert h("SETEX", "k", 100, "v") == OK
    assert h.last_effects == [(E_SET, b"k", b"v", NOW + 100_000)]
    assert h("PSETEX", "k", 100, "v") == OK
    assert h.last_effects == [(E_SET, b"k", b"v", NOW + 100)]
    assert h("EXPIRE", "k", 50) == 1
    assert h.last_effects == [(E_EXPIRE, b"k", NOW + 50_000)]
    assert h("PEXPIRE", "k", 50) == 1
    assert h.last_effects == [(E_EXPIRE, b"k", NOW + 50)]
    assert h("EXPIREAT", "k", 2_000_000_000) == 1
    assert h.last_effects == [(E_EXPIRE, b"k", 2_000_000_000_000)]
    assert h("PEXPIREAT", "k", NOW + 7) == 1
    assert h.last_effects == [(E_EXPIRE, b"k", NOW + 7)]
    assert h("PERSIST", "k") == 1
    assert h.last_effects == [(E_EXPIRE, b"k", 0)]
    # a time already past deletes the key
    assert h("EXPIRE", "k", -1) == 1
    assert h.last_effects == [(E_DEL, b"k")]
    assert h("SET", "k", "v") == OK
    assert h("SET", "k", "v", "PXAT", NOW) == OK
    assert h.last_effects == [(E_DEL, b"k")]
    assert h("GET", "k") is None
    assert h("SET", "gone", "v", "EXAT", 1) == OK
    assert h.last_effects == []


def test_spop_emits_the_members_it_picked(h):
    h("SADD", "s", *"abcdefgh")
    m = h("SPOP", "s")
    assert h.last_effects == [(E_SREM, b"s", [m])]
    got = h("SPOP", "s", 3)
    assert isinstance(got, SetReply) and len(got.items) == 3
    assert h.last_effects == [(E_SREM, b"s", got.items)]
    rest = h("SPOP", "s", 100)
    assert sorted(rest.items + got.items + [m]) == [c.encode() for c in "abcdefgh"]
    assert h("EXISTS", "s") == 0


def test_incrbyfloat_emits_the_resulting_value(h):
    assert h("SET", "f", "10.5") == OK
    assert h("INCRBYFLOAT", "f", "0.1") == b"10.6"
    assert h.last_effects == [(E_SET, b"f", b"10.6", 0)]
    h("EXPIRE", "f", 100)
    assert h("INCRBYFLOAT", "f", "1") == b"11.6"
    assert h.last_effects == [(E_SET, b"f", b"11.6", NOW + 100_000)]  # the TTL is kept
    assert h("HINCRBYFLOAT", "h", "x", "2.5") == b"2.5"
    assert h.last_effects == [(E_HSET, b"h", [b"x", b"2.5"])]
    assert h("INCRBY", "n", 5) == 5
    assert h.last_effects == [(E_SET, b"n", b"5", 0)]


def test_store_commands_emit_explicit_members(h):
    h("SADD", "a", 1, 2, 3)
    h("SADD", "b", 2, 3, 4)
    h("SET", "dst", "old")
    assert h("SINTERSTORE", "dst", "a", "b") == 2
    assert h.last_effects[0] == (E_DEL, b"dst")
    assert h.last_effects[1][0] == E_SADD and sorted(h.last_effects[1][2]) == [b"2", b"3"]
    assert h("SDIFFSTORE", "dst", "a", "a") == 0
    assert h.last_effects == [(E_DEL, b"dst")]


def test_a_failing_command_emits_nothing(h):
    h("SET", "s", "str")
    h("SADD", "set", "m")
    for args in (["SET", "k", "v", "EX", "0"], ["SET", "k", "v", "NX", "XX"], ["INCR", "s"],
                 ["HSET", "s", "f", "v"], ["SADD", "s", "m"], ["SETRANGE", "k", "-1", "x"],
                 ["MSETNX", "a", "1", "b"], ["INCRBYFLOAT", "s", "1"], ["HINCRBY", "h", "f", "x"],
                 ["SMOVE", "set", "s", "m"], ["EXPIRE", "s", "10", "NX", "XX"], ["RENAME", "nokey", "x"],
                 ["SPOP", "set", "-1"], ["SINTERSTORE", "d", "set", "s"], ["APPEND", "set", "x"]):
        r = h(*args)
        assert isinstance(r, Error), args
        assert h.last_effects == [], args


def test_lazy_expiry_on_a_leader_and_on_a_follower(h):
    h("SET", "k", "v", "PX", 10)
    assert h("GET", "k", now=NOW + 5) == b"v"
    # a follower hides the expired key but emits nothing: only the leader deletes
    assert h("GET", "k", now=NOW + 20, leader=False) is None
    assert h.last_effects == []
    assert h("EXISTS", "k", now=NOW + 20, leader=False) == 0
    assert h("GET", "k", now=NOW + 20) is None
    assert h.last_effects == [(E_DEL, b"k")]


# ---------------------------------------------------------------------------- replay property

_keys = st.sampled_from([b"a", b"b", b"c"])
_vals = st.sampled_from([b"1", b"2.5", b"x", b"", b"-7", b"\xc3\xa9"])
_cmds = st.one_of(
    st.tuples(st.just(b"SET"), _keys, _vals), st.tuples(st.just(b"SET"), _keys, _vals, st.just(b"EX"),
                                                      st.sampled_from([b"1", b"100"])),
    st.tuples(st.just(b"INCR"), _keys), st.tuples(st.just(b"INCRBYFLOAT"), _keys, st.sampled_from([b"0.1", b"-3"])),
    st.tuples(st.just(b"APPEND"), _keys, _vals), st.tuples(st.just(b"SETRANGE"), _keys, st.sampled_from([b"0", b"3"]),
                                                            _vals),
    st.tuples(st.just(b"DEL"), _keys), st.tuples(st.just(b"RENAME"), _keys, _keys),
    st.tuples(st.just(b"EXPIRE"), _keys, st.sampled_from([b"-1", b"1", b"50"])),
    st.tuples(st.just(b"PERSIST"), _keys),
    st.tuples(st.just(b"HSET"), _keys, _vals, _vals), st.tuples(st.just(b"HDEL"), _keys, _vals),
    st.tuples(st.just(b"HINCRBY"), _keys, _vals, st.just(b"3")),
    st.tuples(st.just(b"SADD"), _keys, _vals, _vals), st.tuples(st.just(b"SREM"), _keys, _vals),
    st.tuples(st.just(b"SPOP"), _keys), st.tuples(st.just(b"SPOP"), _keys, st.sampled_from([b"1", b"2", b"9"])),
    st.tuples(st.just(b"SMOVE"), _keys, _keys, _vals),
    st.tuples(st.sampled_from([b"SINTERSTORE", b"SUNIONSTORE", b"SDIFFSTORE"]), _keys, _keys, _keys),
    st.tuples(st.just(b"GETDEL"), _keys), st.tuples(st.just(b"GETSET"), _keys, _vals),
    st.tuples(st.just(b"FLUSHALL")), st.tuples(st.just(b"GET"), _keys),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_cmds, st.integers(0, 3000)), max_size=30), st.integers(0, 1000))
def test_replaying_the_effects_rebuilds_the_same_keyspace(steps, seed):
    h = Harness(seed)
    now = NOW
    for cmd, dt in steps:
        now += dt  # time moves forward: keys with a 1 s TTL expire along the way
        r = h(*cmd, now=now)
        if isinstance(r, Error):
            # a failed command emits nothing but the deletion of keys found expired
            assert all(e[0] == E_DEL for e in h.last_effects), (cmd, h.last_effects)
    assert digest(h.replay()) == digest(h.ks)


# ---------------------------------------------------------------------------- replies and errors

def test_set_options_like_redis(h):
    assert h("SET", "k", "v", "EX", 10, "EX", 20) == OK          # repeated: the last wins
    assert h.last_effects == [(E_SET, b"k", b"v", NOW + 20_000)]
    assert h("SET", "k", "v", "NX", "NX") is None
    assert h("SET", "k", "v", "EX", 10, "PX", 10) == err(C.SYNTAX)
    assert h("SET", "k", "v", "KEEPTTL", "EX", 10) == err(C.SYNTAX)
    assert h("SET", "k", "v", "EX") == err(C.SYNTAX)
    # the option list is checked before the expire value
    assert h("SET", "k", "v", "EX", 0, "FOO") == err(C.SYNTAX)
    assert h("SET", "k", "v", "EX", 0) == err("ERR invalid expire time in 'set' command")
    assert h("SET", "k", "v", "EX", "x") == err(C.NOT_INT)
    assert h("SET", "k", "v", "EX", 9223372036854775807) == err("ERR invalid expire time in 'set' command")
    assert h("SET", "k", "new", "GET") == b"v"
    assert h("SET", "k", "newer", "NX", "GET") == b"new"
    assert h("GET", "k") == b"new"
    h("SADD", "s", "m")
    assert h("SET", "s", "v", "GET") == err(C.WRONGTYPE)
    assert h("SETEX", "k", 0, "v") == err("ERR invalid expire time in 'setex' command")
    assert h("PSETEX", "k", -1, "v") == err("ERR invalid expire time in 'psetex' command")


def test_expire_options_are_checked_before_the_time(h):
    h("SET", "k", "v")
    assert h("EXPIRE", "k", "abc", "FOO") == err("ERR Unsupported option FOO")
    assert h("EXPIRE", "k", "abc", "NX", "XX") == err(
        "ERR NX and XX, GT or LT options at the same time are not compatible")
    assert h("EXPIRE", "k", 10, "GT", "LT") == err("ERR GT and LT options at the same time are not compatible")
    assert h("EXPIRE", "k", "abc") == err(C.NOT_INT)
    assert h("EXPIRE", "k", 9223372036854775807) == err("ERR invalid expire time in 'expire' command")
    assert h("EXPIRE", "k", 100, "XX") == 0
    assert h("EXPIRE", "k", 100, "GT") == 0          # no TTL counts as infinite
    assert h("EXPIRE", "k", 100, "LT") == 1
    assert h("EXPIRE", "k", 200, "LT") == 0
    assert h("EXPIRE", "k", 200, "GT") == 1
    assert h("EXPIRE", "k", 300, "NX") == 0
    assert h("TTL", "k") == 200
    assert h("PTTL", "k", now=NOW + 1) == 199_999
    assert h("TTL", "k", now=NOW + 500) == 200       # rounded, as Redis does
    assert h("TTL", "k", now=NOW + 501) == 199
    assert h("TTL", "nokey") == -2
    assert h("PERSIST", "k") == 1
    assert h("TTL", "k") == -1


def test_incr_family_errors(h):
    h("SET", "n", "9223372036854775807")
    assert h("INCR", "n") == err("ERR increment or decrement would overflow")
    assert h("DECRBY", "n", "-9223372036854775808") == err("ERR decrement would overflow")
    for bad in ("01", "+1", " 1", "1.0", "", "abc", "-0"):
        h("SET", "b", bad)
        assert h("INCR", "b") == err(C.NOT_INT), bad
    h("HSET", "h", "f", "1.5")
    assert h("HINCRBY", "h", "f", 1) == err("ERR hash value is not an integer")
    # the increment is parsed before the key's type is checked (HINCRBY, HINCRBYFLOAT)
    assert h("HINCRBY", "n", "f", "x") == err(C.NOT_INT)
    assert h("HINCRBYFLOAT", "n", "f", "x") == err("ERR value is not a valid float")
    assert h("HINCRBYFLOAT", "n", "f", "inf") == err("ERR value is NaN or Infinity")
    assert h("HINCRBYFLOAT", "n", "f", "1") == err(C.WRONGTYPE)
    # INCRBYFLOAT checks the type first
    h("SADD", "s", "m")
    assert h("INCRBYFLOAT", "s", "x") == err(C.WRONGTYPE)
    assert h("INCRBYFLOAT", "new", "inf") == err("ERR increment would produce NaN or Infinity")
    h("HSET", "h", "s", "abc")
    assert h("HINCRBYFLOAT", "h", "s", 1) == err("ERR hash value is not a float")


# Redis 7.x (x86-64, long double) replies, checked against a real redis-server
INCRBYFLOAT_CASES = [
    ("1.5", "0.1", b"1.6"),
    ("3.0", "1.23456789012345678", b"4.23456789012345678"),
    ("5000", "1e-5", b"5000.00001000000000007"),
    ("5000.00001000000000007", "10.1234567890123456789", b"5010.12346678901234576"),
    ("0x10", "1", b"17"),
    ("0", "1e17", b"100000000000000000"),
    ("0", "1.5e20", b"150000000000000000000"),
    ("0.1", "0.2", b"0.3"),
    ("0", "1e-20", b"0"),
    ("0", "-0", b"0"),
    ("0", ".5", b"0.5"),
    ("0", "5.", b"5"),
    ("0", "+5", b"5"),
    ("0", "3.0e-400", b"0"),
    ("0", "0.000003814697265625", b"0.00000381469726562"),   # a tie at the 18th digit: to even
    ("1.5", "-1.5", b"0"),
    ("-1e-18", "0", b"0"),
]


@pytest.mark.parametrize("start,incr,expected", INCRBYFLOAT_CASES)
def test_incrbyfloat_digits_match_redis(h, start, incr, expected):
    h("SET", "f", start)
    assert h("INCRBYFLOAT", "f", incr) == expected
    assert h("GET", "f") == expected
    h("HSET", "h", "f", start)
    assert h("HINCRBYFLOAT", "h", "f", incr) == expected


def test_incrbyfloat_huge_values_print_every_digit(h):
    out = h("INCRBYFLOAT", "f", "1e400")
    assert out.startswith(b"10000000000000000000281880683947586514586453433629052038625910693539685534008629862")
    assert len(out) == 401 and b"." not in out


@pytest.mark.parametrize("bad", ["abc", " 1", "1 ", "", "nan", "1e5000", "-1e5000", "1e-5000", "0x", "1e",
                                 "infin", "1\x00", "1" * 5200])
def test_incrbyfloat_refuses_what_strtold_refuses(h, bad):
    assert h("INCRBYFLOAT", "f", bad) == err("ERR value is not a valid float")
    assert h.last_effects == []


@pytest.mark.parametrize("ok,expected", [("inf", None), ("-Infinity", None), ("1e-4940", b"0"), ("0e99999", b"0"),
                                         ("0X1P-2", b"0.25"), ("1E2", b"100")])
def test_incrbyfloat_accepts_what_strtold_accepts(h, ok, expected):
    r = h("INCRBYFLOAT", "f", ok)
    if expected is None:
        assert r == err("ERR increment would produce NaN or Infinity")
    else:
        assert r == expected


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_long_double_parse_and_format_of_doubles_is_exact(f):
    """A double is a long double exactly (given as its exact decimal or hex value); %.17Lf of
    it is that exact decimal value rounded half-even to 17 places (an independent oracle:
    Decimal)."""
    v = C.ld_parse(str(Decimal(f)).encode())   # the exact decimal value of f
    neg, m, e = v
    assert (-1 if neg else 1) * Fraction(m) * Fraction(2) ** e == Fraction(f)
    assert C.ld_parse(f.hex().encode()) == v or (f == 0 and C.ld_parse(f.hex().encode())[1] == 0)
    with localcontext() as dc:
        dc.prec = 1000
        d = Decimal(f).quantize(Decimal("1e-17"), rounding=ROUND_HALF_EVEN)
    s = format(d, "f")
    s = s.rstrip("0").rstrip(".") if "." in s else s
    if s in ("-0", ""):
        s = "0"
    assert C.ld_format(v) == s.encode()


@settings(max_examples=100, deadline=None)
@given(st.integers(-2**60, 2**60), st.integers(-2**60, 2**60))
def test_long_double_sum_of_integers_is_exact(a, b):
    """Integers below 2**64 are exact long doubles, and so is their sum while it fits."""
    r = C.ld_add(C.ld_parse(b"%d" % a), C.ld_parse(b"%d" % b))
    assert C.ld_format(r) == b"%d" % (a + b)


def test_getrange_setrange_append_strlen(h):
    h("SET", "s", "Hello World")
    assert h("GETRANGE", "s", 0, 4) == b"Hello"
    assert h("GETRANGE", "s", -5, -1) == b"World"
    assert h("GETRANGE", "s", -1, -5) == b""
    assert h("GETRANGE", "s", 5, 3) == b""
    assert h("GETRANGE", "s", 0, 100) == b"Hello World"
    assert h("GETRANGE", "s", -100, 2) == b"Hel"
    assert h("GETRANGE", "nokey", 0, 1) == b""
    assert h("GETRANGE", "s", "a", 1) == err(C.NOT_INT)
    assert h("SETRANGE", "s", 6, "Redis") == 11
    assert h("GET", "s") == b"Hello Redis"
    assert h("SETRANGE", "new", 3, "x") == 4
    assert h("GET", "new") == b"\x00\x00\x00x"
    assert h("SETRANGE", "none", 3, "") == 0
    assert h("EXISTS", "none") == 0
    assert h("SETRANGE", "s", -1, "x") == err("ERR offset is out of range")
    assert h("SETRANGE", "s", 536870912, "x") == err("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
    assert h("APPEND", "s", "!") == 12
    assert h("STRLEN", "s") == 12
    assert h("STRLEN", "nokey") == 0


def test_multi_key_string_commands(h):
    assert h("MSET", "a", 1, "b") == err("ERR wrong number of arguments for 'mset' command")
    assert h("MSET", "a", 1, "b", 2) == OK
    h("SADD", "s", "m")
    assert h("MGET", "a", "s", "nokey", "b") == [b"1", None, None, b"2"]
    assert h("MSETNX", "a", 9, "c", 3) == 0
    assert h("GET", "c") is None
    assert h("MSETNX", "c", 3, "d", 4) == 1
    assert h("GETSET", "a", "x") == b"1"
    assert h("GETSET", "s", "x") == err(C.WRONGTYPE)
    assert h("GETDEL", "a") == b"x"
    assert h("GETDEL", "a") is None
    assert h("SETNX", "c", 5) == 0
    assert h("DEL", "c", "d", "nokey", "c") == 2
    assert h("EXISTS", "b", "b", "nokey") == 2
    assert h("UNLINK", "b") == 1


def test_keys_commands(h):
    h("SET", "a", 1)
    h("HSET", "h", "f", "v")
    h("SADD", "s", "m")
    assert h("TYPE", "a") == Simple("string")
    assert h("TYPE", "h") == Simple("hash")
    assert h("TYPE", "s") == Simple("set")
    assert h("TYPE", "nokey") == Simple("none")
    assert h("RENAME", "nokey", "x") == err("ERR no such key")
    assert h("RENAME", "a", "a") == OK
    assert h("RENAMENX", "a", "a") == 0
    h("EXPIRE", "a", 100)
    assert h("RENAME", "a", "b") == OK
    assert h("TTL", "b") == 100
    assert h("RENAMENX", "b", "h") == 0
    assert sorted(h("KEYS", "*")) == [b"b", b"h", b"s"]
    assert h("KEYS", "[bh]") == [b"b", b"h"] or sorted(h("KEYS", "[bh]")) == [b"b", b"h"]
    assert h("DBSIZE") == 3
    assert h("RANDOMKEY") in (b"b", b"h", b"s")
    assert h("MEMORY", "USAGE", "b") > 0
    assert h("MEMORY", "USAGE", "nokey") is None
    assert h("MEMORY", "USAGE", "b", "SAMPLES", -1) == err(C.SYNTAX)
    assert h("MEMORY", "USAGE", "b", "SAMPLES", 5, "SAMPLES", 0) > 0
    assert h("FLUSHDB", "FOO") == err(C.SYNTAX)
    assert h("FLUSHALL", "ASYNC") == OK
    assert h("DBSIZE") == 0
    assert h("RANDOMKEY") is None


# stringmatchlen quirks (each checked against redis-server with KEYS)
GLOB_CASES = [
    (b"*", b"", False), (b"", b"", True), (b"h*llo", b"hello", True), (b"h?llo", b"hallo", True),
    (b"h[ae]llo", b"hillo", False), (b"h[^e]llo", b"hallo", True), (b"h[a-b]llo", b"hbllo", True),
    (b"[c-a]", b"b", True), (b"[a-]", b"]", True), (b"[a-]", b"-", False), (b"[abc", b"c", True),
    (b"[", b"[", False), (b"\\", b"\\", True), (b"a\\*", b"a*", True), (b"a\\*", b"ab", False),
    (b"[\\]]", b"]", True), (b"[a-\xff]", b"b", False), (b"[\xff-a]", b"\xc3", False), (b"[\x80-\xff]", b"\x90", True),
    (b"**a", b"a", True), (b"a**", b"a", True), (b"*\xa9", b"h\xc3\xa9", True),
]


@pytest.mark.parametrize("pattern,s,expected", GLOB_CASES)
def test_glob_matches_like_redis(pattern, s, expected):
    assert C.glob_matcher(pattern).match(s) is expected


def test_scan_cursor_parsing_like_strtoul():
    assert C.parse_scan_cursor(b"0") == 0
    assert C.parse_scan_cursor(b"") == 0
    assert C.parse_scan_cursor(b"-1") == 2**64 - 1
    assert C.parse_scan_cursor(b"+5") == 5
    assert C.parse_scan_cursor(b"007") == 7
    assert C.parse_scan_cursor(b"5\x00junk") == 5
    assert C.parse_scan_cursor(b"18446744073709551615") == 2**64 - 1
    for bad in (b"18446744073709551616", b" 1", b"1 ", b"x", b"+", b"-", b"0x10", b"1.0"):
        with pytest.raises(C.CommandError, match="ERR invalid cursor"):
            C.parse_scan_cursor(bad)


def _full_scan(h, *opts, count=3, mutate=None):
    seen = []
    cursor = b"0"
    rounds = 0
    while True:
        cursor, keys = h("SCAN", cursor, "COUNT", count, *opts)
        seen.extend(keys)
        rounds += 1
        if mutate is not None:
            mutate(rounds)
        if cursor == b"0":
            return seen


def test_scan_returns_every_key_present_throughout_once(h):
    for i in range(200):
        h("SET", f"k{i}", i)
    gone = {f"k{i}".encode() for i in range(0, 200, 7)}

    def mutate(r):
        # keys come and go during the scan; k<i> for i not multiple of 7 stay all along
        h("SET", f"new{r}", 1)
        for k in list(gone)[r % 5::5][:3]:
            h("DEL", k)

    seen = _full_scan(h, mutate=mutate)
    assert len(seen) == len(set(seen)), "a key was returned twice"
    stayed = {f"k{i}".encode() for i in range(200)} - gone
    assert stayed <= set(seen)


def test_scan_never_splits_keys_that_share_a_hash(h, monkeypatch):
    monkeypatch.setattr(C, "_scan_hash", lambda k: len(k))   # many collisions
    C._SCAN_INDEX.clear()
    for i in range(50):
        h("SET", "x" * (i % 4 + 1) + str(i % 10), i)
    seen = _full_scan(h, count=2)
    assert sorted(seen) == sorted(h("KEYS", "*"))
    C._SCAN_INDEX.clear()


def test_scan_match_type_and_errors(h):
    h("SET", "s1", 1)
    h("SADD", "set1", "m")
    h("HSET", "h1", "f", "v")
    assert sorted(_full_scan(h, "MATCH", "s*")) == [b"s1", b"set1"]
    assert _full_scan(h, "TYPE", "HASH") == [b"h1"]
    assert _full_scan(h, "TYPE", "nosuchtype") == []
    assert h("SCAN", 0, "COUNT", 0) == err(C.SYNTAX)
    assert h("SCAN", 0, "COUNT", "x") == err(C.NOT_INT)
    assert h("SCAN", 0, "MATCH") == err(C.SYNTAX)
    assert h("SCAN", 0, "FOO", "bar") == err(C.SYNTAX)
    assert h("SCAN", "x") == err("ERR invalid cursor")


def test_hash_commands(h):
    assert h("HSET", "h", "f") == err("ERR wrong number of arguments for 'hset' command")
    assert h("HMSET", "h", "a", 1, "b") == err("ERR wrong number of arguments for 'hmset' command")
    assert h("HSET", "h", "a", 1, "b", 2, "a", 3) == 2
    assert h("HGET", "h", "a") == b"3"
    assert h("HMSET", "h", "c", 3) == OK
    assert h("HSETNX", "h", "c", 9) == 0
    assert h("HSETNX", "h", "d", 4) == 1
    assert h("HMGET", "h", "a", "zz", "d") == [b"3", None, b"4"]
    assert h("HGETALL", "h") == Map([(b"a", b"3"), (b"b", b"2"), (b"c", b"3"), (b"d", b"4")])
    assert h("HKEYS", "h") == [b"a", b"b", b"c", b"d"]
    assert h("HVALS", "h") == [b"3", b"2", b"3", b"4"]
    assert h("HLEN", "h") == 4
    assert h("HEXISTS", "h", "a") == 1 and h("HEXISTS", "h", "z") == 0
    assert h("HSTRLEN", "h", "a") == 1 and h("HSTRLEN", "h", "z") == 0
    assert h("HDEL", "h", "a", "a", "z") == 1
    assert h("HINCRBY", "h", "b", 10) == 12
    assert h("HINCRBY", "h", "b", 9223372036854775807) == err("ERR increment or decrement would overflow")
    assert h("HDEL", "h", "b", "c", "d") == 3
    assert h("EXISTS", "h") == 0
    assert h("HGETALL", "nokey") == Map([])
    h("SET", "s", "x")
    for args in (["HGET", "s", "f"], ["HSET", "s", "f", "v"], ["HGETALL", "s"], ["HLEN", "s"], ["HDEL", "s", "f"]):
        assert h(*args) == err(C.WRONGTYPE), args


def test_set_commands(h):
    assert h("SADD", "s", "a", "b", "a") == 2
    assert sorted(h("SMEMBERS", "s").items) == [b"a", b"b"]
    assert h("SISMEMBER", "s", "a") == 1
    assert h("SMISMEMBER", "s", "a", "z") == [1, 0]
    assert h("SCARD", "s") == 2
    assert h("SREM", "s", "a", "a", "z") == 1
    assert h("SPOP", "nokey") is None
    assert h("SPOP", "nokey", 2) == SetReply([])
    assert h("SPOP", "s", -1) == err("ERR value is out of range, must be positive")
    assert h("SPOP", "s", 1, 2) == err(C.SYNTAX)
    assert h("SRANDMEMBER", "s", "x") == err(C.NOT_INT)
    assert h("SRANDMEMBER", "s", -9223372036854775808) == err(
        "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807")
    assert h("SRANDMEMBER", "s", -3) == [b"b", b"b", b"b"]
    assert h("SRANDMEMBER", "nokey", 3) == []
    h("SET", "str", "x")
    assert h("SRANDMEMBER", "str", "x") == err(C.NOT_INT)   # the count is parsed first
    assert h("SMOVE", "nokey", "str", "m") == 0                # no source: 0 before any type check
    assert h("SMOVE", "s", "str", "b") == err(C.WRONGTYPE)
    assert h("SMOVE", "s", "s", "b") == 1
    assert h("SMOVE", "s", "d", "b") == 1
    assert h("EXISTS", "s") == 0 and h("SMEMBERS", "d") == SetReply([b"b"])
    h("SADD", "x", 1, 2, 3)
    h("SADD", "y", 2, 3, 4)
    assert sorted(h("SINTER", "x", "y").items) == [b"2", b"3"]
    assert sorted(h("SUNION", "x", "y").items) == [b"1", b"2", b"3", b"4"]
    assert h("SDIFF", "x", "y").items == [b"1"]
    assert h("SINTER", "x", "nokey").items == []
    assert h("SINTER", "nokey", "str") == err(C.WRONGTYPE)
    assert h("SUNIONSTORE", "str", "x", "y") == 4
    assert h("TYPE", "str") == Simple("set")


def test_unknown_and_subcommand_lookup():
    assert C.lookup([b"get", b"k"]).name == "get"
    assert C.lookup([b"MEMORY", b"usage", b"k"]).name == "memory|usage"
    assert C.lookup([b"MEMORY", b"foo"]) is None
    assert C.lookup([b"nosuch"]) is None


def test_entry_types_are_preserved_by_replay(h):
    h("SET", "s", "v")
    h("HSET", "h", "f", "v")
    h("SADD", "t", "m")
    ks = h.replay()
    assert {k: e.type for k, e in ks.data.items()} == {b"s": T_STRING, b"h": T_HASH, b"t": T_SET}
