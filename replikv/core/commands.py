"""Data commands: parse arguments, read the keyspace, emit effects, build the reply.

Owns: the table of data commands (name, arity, flags, key positions: what COMMAND reports),
their argument parsing and their Redis-compatible replies and error texts.
Does not know: connections, MULTI queues, the log, replication. Connection-level commands
(HELLO, CLIENT, MULTI, WAIT, INFO ...) live in the server shell.

A handler gets a ``Ctx`` and the argument list (``args[0]`` is the command name) and
returns a reply value for core/resp.py to encode. It never mutates an entry directly: it
calls ``ctx.emit(effect)`` (see core/keyspace.py), which applies the effect and records it
for the log. A handler validates everything *before* its first emit, so a command that
fails leaves no partial change (MULTI/EXEC relies on that).

Nondeterminism is resolved here, on the node that accepts the write: relative expiry
becomes an absolute time, SPOP's random pick becomes explicit members, INCRBYFLOAT becomes
the resulting value. Effects never contain "now" or a random choice.
"""

from __future__ import annotations

import bisect
import itertools
import re
import sys
import zlib
from dataclasses import dataclass

from .keyspace import (
    E_APPEND,
    E_DEL,
    E_EXPIRE,
    E_FLUSH,
    E_HDEL,
    E_HSET,
    E_RENAME,
    E_SADD,
    E_SET,
    E_SREM,
    T_HASH,
    T_SET,
    T_STRING,
    TYPE_NAMES,
    Entry,
    Keyspace,
)
from .resp import NULL_ARRAY, OK, Map, SetReply, Simple

WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"
NOT_INT = "ERR value is not an integer or out of range"
NOT_FLOAT = "ERR value is not a valid float"
SYNTAX = "ERR syntax error"
OVERFLOW = "ERR increment or decrement would overflow"
MAX_STRING = 512 * 1024 * 1024
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


class CommandError(Exception):
    """Raised by a handler; becomes an error reply. ``text`` starts with the error code."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class Ctx:
    """Everything a handler may use: the keyspace, the time, a random source, and ``emit``.

    ``expire_on_access``: True on a node that owns writes (it deletes an expired key it
    touches and logs the delete); False on a follower, which only hides expired keys.
    """

    __slots__ = ("ks", "now_ms", "effects", "pos", "rng", "expire_on_access", "max_string")
    # True in a follower replaying the leader's statements (log_format "statement"): a time
    # already past is not a delete there (the leader logs its deletes), as on Redis replicas
    replica = False

    def __init__(self, ks: Keyspace, now_ms: int, pos: int, rng, expire_on_access: bool = True,
                 max_string: int = MAX_STRING) -> None:
        self.ks = ks
        self.now_ms = now_ms
        self.pos = pos
        self.effects: list[tuple] = []
        self.rng = rng
        self.expire_on_access = expire_on_access
        self.max_string = max_string

    def emit(self, effect: tuple) -> None:
        self.effects.append(effect)
        self.ks.apply(effect, self.pos)

    def lookup(self, key: bytes) -> Entry | None:
        e = self.ks.data.get(key)
        if e is not None and e.expire_at and e.expire_at <= self.now_ms:
            if self.expire_on_access:
                self.emit((E_DEL, key))
            return None
        return e

    def lookup_type(self, key: bytes, type_: int) -> Entry | None:
        e = self.lookup(key)
        if e is not None and e.type != type_:
            raise CommandError(WRONGTYPE)
        return e


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    fn: object
    arity: int              # Redis convention: N exact, -N at least N (name included)
    flags: frozenset
    first_key: int = 0
    last_key: int = 0
    step: int = 0
    write: bool = False     # "write" in flags (set from them), a field: read on every command

    def __post_init__(self) -> None:
        object.__setattr__(self, "write", "write" in self.flags)

    @property
    def is_write(self) -> bool:
        return self.write

    def keys(self, args: list[bytes]) -> list[bytes]:
        if not self.first_key:
            return []
        last = self.last_key if self.last_key >= 0 else len(args) + self.last_key
        return args[self.first_key:last + 1:self.step]


COMMANDS: dict[bytes, Command] = {}


def command(name: str, arity: int, flags: str, first: int = 0, last: int = 0, step: int = 0):
    def register(fn):
        COMMANDS[name.upper().encode()] = Command(name.lower(), fn, arity, frozenset(flags.split()),
                                                  first, last, step)
        return fn

    return register


def arity_ok(cmd: Command, n: int) -> bool:
    return n == cmd.arity if cmd.arity >= 0 else n >= -cmd.arity


def arity_ok_n(arity: int, n: int) -> bool:
    return n == arity if arity >= 0 else n >= -arity


def arity_error(name: str) -> str:
    return f"ERR wrong number of arguments for '{name}' command"


# ---------------------------------------------------------------------------- parsing helpers

_INT_RE = re.compile(rb"-?(?:0|[1-9][0-9]*)\Z")


def parse_int(b: bytes, err: str = NOT_INT) -> int:
    """Parse a 64-bit signed integer exactly as Redis's string2ll: no sign '+', no spaces,
    no leading zeros."""
    if b.isdigit() and len(b) < 19 and (b[0] != 48 or len(b) == 1):
        return int(b)     # the common case (a plain non-negative number) without the regex
    if not _INT_RE.match(b) or b == b"-0":
        raise CommandError(err)
    v = int(b)
    if v < INT64_MIN or v > INT64_MAX:
        raise CommandError(err)
    return v


# ---------------------------------------------------------------------------- INCRBYFLOAT arithmetic
#
# Redis does INCRBYFLOAT / HINCRBYFLOAT in C ``long double`` (x87 80-bit extended precision on
# x86-64: a 64-bit mantissa, exponents -16382..16383, subnormals below), parses with
# ``strtold`` (decimal, hex "0x1p3", "inf"; a result that overflows or underflows to zero is
# refused) and prints with ``%.17Lf`` then drops trailing zeros. Python floats (53 bits) or
# Decimal give different digits (e.g. 5000 + 1e-5 is "5000.00001000000000007" in Redis), so
# the arithmetic is emulated exactly here with integers: a finite value is (neg, m, e)
# meaning (-1)**neg * m * 2**e, an infinite one (neg, None, 0). Every operation rounds to
# nearest, ties to even, like the FPU and glibc.

_LD_MANT = 64
_LD_EMIN = -16382                 # exponent of the leading bit of the smallest normal
_LD_EMAX = 16383
_LD_MAX_CHARS = 5 * 1024          # Redis's MAX_LONG_DOUBLE_CHARS: longer input is refused
_LD_DEC_RE = re.compile(rb"([+-]?)(?:([0-9]+)(?:\.([0-9]*))?|\.([0-9]+))(?:[eE]([+-]?[0-9]+))?\Z")
_LD_HEX_RE = re.compile(rb"([+-]?)0[xX](?:([0-9a-fA-F]+)(?:\.([0-9a-fA-F]*))?|\.([0-9a-fA-F]+))"
                        rb"(?:[pP]([+-]?[0-9]+))?\Z")
_LD_INF_RE = re.compile(rb"([+-]?)(?:inf|infinity)\Z", re.IGNORECASE)
_CHUNK = 4000                     # Python refuses str<->int conversions beyond 4300 digits
_CHUNK_POW = 10 ** _CHUNK


def _dec_to_int(s: bytes) -> int:
    if len(s) <= _CHUNK:
        return int(s)
    return _dec_to_int(s[:-_CHUNK]) * _CHUNK_POW + int(s[-_CHUNK:])


def _int_to_dec(n: int) -> str:
    if n < _CHUNK_POW:
        return str(n)
    hi, lo = divmod(n, _CHUNK_POW)
    return _int_to_dec(hi) + str(lo).rjust(_CHUNK, "0")


def _ld_round(num: int, den: int):
    """The long double nearest to num/den (>= 0) as (m, e), or None if it overflows."""
    if num == 0:
        return 0, 0
    e = num.bit_length() - den.bit_length()
    if e >= 0:
        if num < (den << e):
            e -= 1
    elif (num << -e) < den:
        e -= 1
    shift = max(e, _LD_EMIN) - (_LD_MANT - 1)
    if shift >= 0:
        n, d = num, den << shift
    else:
        n, d = num << -shift, den
    m, r = divmod(n, d)
    r2 = 2 * r
    if r2 > d or (r2 == d and m & 1):
        m += 1
    if m == 0:
        return 0, 0
    if m.bit_length() - 1 + shift > _LD_EMAX:
        return None
    return m, shift


def ld_parse(b: bytes):
    """Redis's string2ld: strtold over the whole string, no leading space, no NaN, and a
    value that overflows (or a nonzero one that underflows to 0) is refused. Returns
    (neg, m, e), (neg, None, 0) for infinity, or None if the string is not a valid float."""
    if not b or len(b) >= _LD_MAX_CHARS:
        return None
    hexa = False
    mt = _LD_DEC_RE.match(b)
    if mt is None:
        mt = _LD_HEX_RE.match(b)
        hexa = True
        if mt is None:
            mt = _LD_INF_RE.match(b)
            return None if mt is None else (mt.group(1) == b"-", None, 0)
    sign, ip, fp, fp2, ex = mt.groups()
    if fp2 is not None:
        ip, fp = b"", fp2
    fp = fp or b""
    digits = (ip + fp).lstrip(b"0")
    neg = sign == b"-"
    if not digits:
        return neg, 0, 0
    if hexa:
        v = int(digits, 16)
        x = (int(ex) if ex else 0) - 4 * len(fp)
        top = x + v.bit_length()          # 2**(top-1) <= value < 2**top
        if top - 1 > _LD_EMAX + 1 or top < _LD_EMIN - _LD_MANT - 2:
            return None
        r = _ld_round(v << x, 1) if x >= 0 else _ld_round(v, 1 << -x)
    else:
        x = (int(ex) if ex else 0) - len(fp)
        top = x + len(digits)             # 10**(top-1) <= value < 10**top
        if top - 1 > 4933 or top < -4952:
            return None
        v = _dec_to_int(digits)
        r = _ld_round(v * 10 ** x, 1) if x >= 0 else _ld_round(v, 10 ** -x)
    if r is None or r[0] == 0:
        return None                       # ERANGE: overflow, or underflow to zero
    return neg, r[0], r[1]


def ld_add(a, b):
    """a + b rounded to a long double; None if the result is infinite or NaN."""
    if a[1] is None or b[1] is None:
        return None
    e = min(a[2], b[2])
    va = a[1] << (a[2] - e)
    vb = b[1] << (b[2] - e)
    s = (-va if a[0] else va) + (-vb if b[0] else vb)
    neg = s < 0
    s = -s if neg else s
    r = _ld_round(s << e, 1) if e >= 0 else _ld_round(s, 1 << -e)
    if r is None:
        return None
    return neg, r[0], r[1]


def ld_format(v) -> bytes:
    """Redis's ld2string(LD_STR_HUMAN): ``%.17Lf``, trailing zeros and a bare '.' dropped,
    "-0" printed as "0"."""
    neg, m, e = v
    scaled = m * 10 ** 17
    if e >= 0:
        n = scaled << e
    else:
        n, r = divmod(scaled, 1 << -e)
        r2 = 2 * r
        if r2 > (1 << -e) or (r2 == (1 << -e) and n & 1):
            n += 1
    s = _int_to_dec(n).rjust(18, "0")
    ip, fp = s[:-17], s[-17:].rstrip("0")
    out = ip + "." + fp if fp else ip
    if neg and out != "0":
        out = "-" + out
    return out.encode()


def parse_long_double(b: bytes, err: str = NOT_FLOAT):
    v = ld_parse(b)
    if v is None:
        raise CommandError(err)
    return v


# ---------------------------------------------------------------------------- glob patterns

class GlobMatcher:
    """Redis's ``stringmatchlen`` (KEYS, SCAN MATCH, CONFIG GET), compiled to a regex.

    Quirks kept: an unterminated ``[...`` class ends at the end of the pattern; ``[a-]``
    is the range a..']'; ranges compare C ``char`` values, which are signed, so a byte
    >= 0x80 sorts below 'a'; a lone trailing backslash matches itself; and the empty
    string matches only the empty pattern (Redis's loop never runs for it, so even ``*``
    does not match it).
    """

    __slots__ = ("pattern", "_rx", "_nocase")

    def __init__(self, pattern: bytes, nocase: bool = False) -> None:
        self.pattern = pattern
        self._nocase = nocase
        self._rx = re.compile(_glob_regex(pattern, nocase), re.DOTALL)

    def match(self, s: bytes) -> bool:
        if not s:
            return not self.pattern
        return self._rx.fullmatch(s) is not None


def _signed(c: int) -> int:
    return c - 256 if c >= 128 else c


def _glob_regex(p: bytes, nocase: bool) -> bytes:
    out = []
    i, n = 0, len(p)

    def lit(c: int) -> bytes:
        if nocase and 65 <= c <= 90 or nocase and 97 <= c <= 122:
            return b"[" + re.escape(bytes([c | 32])) + re.escape(bytes([c & ~32])) + b"]"
        return re.escape(bytes([c]))

    while i < n:
        c = p[i]
        if c == 42:  # '*'
            while i + 1 < n and p[i + 1] == 42:
                i += 1
            out.append(b".*")
        elif c == 63:  # '?'
            out.append(b".")
        elif c == 91:  # '['
            i += 1
            neg = i < n and p[i] == 94  # '^'
            if neg:
                i += 1
            members: set[int] = set()
            while True:
                if i < n and p[i] == 92 and n - i >= 2:  # backslash escape
                    i += 1
                    members.add(p[i])
                elif i < n and p[i] == 93:  # ']'
                    break
                elif i >= n:
                    i = n - 1
                    break
                elif n - i >= 3 and p[i + 1] == 45:  # 'a-z'
                    lo, hi = _signed(p[i]), _signed(p[i + 2])
                    if lo > hi:
                        lo, hi = hi, lo
                    if nocase:
                        lo, hi = _lower_signed(lo), _lower_signed(hi)
                        members.update(b for b in range(256) if lo <= _lower_signed(_signed(b)) <= hi)
                    else:
                        members.update(b for b in range(256) if lo <= _signed(b) <= hi)
                    i += 2
                else:
                    members.add(p[i])
                    if nocase:
                        members.update(b for b in range(256) if _lower(b) == _lower(p[i]))
                i += 1
            if not members:
                out.append(b"[\\x00-\\xff]" if neg else b"(?!)")
            else:
                cls = b"".join(re.escape(bytes([b])) for b in sorted(members))
                out.append(b"[" + (b"^" if neg else b"") + cls + b"]")
        elif c == 92 and n - i >= 2:  # '\x': x literally
            i += 1
            out.append(lit(p[i]))
        else:
            out.append(lit(c))
        i += 1
    return b"".join(out)


def _lower(b: int) -> int:
    return b | 32 if 65 <= b <= 90 else b


def _lower_signed(c: int) -> int:
    return c | 32 if 65 <= c <= 90 else c


_glob_cache: dict[tuple, GlobMatcher] = {}


def glob_matcher(pattern: bytes, nocase: bool = False) -> GlobMatcher:
    m = _glob_cache.get((pattern, nocase))
    if m is None:
        if len(_glob_cache) > 256:
            _glob_cache.clear()
        m = _glob_cache[(pattern, nocase)] = GlobMatcher(pattern, nocase)
    return m


def _cstr(b: bytes, limit: int | None = None) -> str:
    """An argument as Redis prints it with %s in an error: up to the first NUL byte."""
    i = b.find(b"\x00")
    if i >= 0:
        b = b[:i]
    if limit is not None:
        b = b[:limit]
    return b.decode("utf-8", "surrogateescape")


def _get_string(ctx: Ctx, key: bytes) -> bytes | None:
    e = ctx.lookup(key)
    if e is None:
        return None
    if e.type != T_STRING:
        raise CommandError(WRONGTYPE)
    return e.value


# ---------------------------------------------------------------------------- strings

@command("get", 2, "readonly fast", 1, 1, 1)
def cmd_get(ctx: Ctx, args):
    e = ctx.ks.data.get(args[1])
    if e is None:
        return None
    if e.expire_at and e.expire_at <= ctx.now_ms:
        ctx.lookup(args[1])
        return None
    if e.type != T_STRING:
        raise CommandError(WRONGTYPE)
    return e.value


def _expire_ms(b: bytes, unit_ms: int, absolute: bool, now_ms: int, cmd: str) -> int:
    """Redis's getExpireMillisecondsOrReply (SET EX/PX/EXAT/PXAT, SETEX, PSETEX): a positive
    integer, and an absolute time in ms that does not overflow."""
    v = parse_int(b)
    if v <= 0 or (unit_ms == 1000 and v > INT64_MAX // 1000):
        raise CommandError(f"ERR invalid expire time in '{cmd}' command")
    ms = v * unit_ms
    if not absolute:
        ms += now_ms
    if ms > INT64_MAX:
        raise CommandError(f"ERR invalid expire time in '{cmd}' command")
    return ms


_SET_NX, _SET_XX, _SET_GET, _SET_KEEPTTL, _SET_EX, _SET_PX, _SET_EXAT, _SET_PXAT = (1 << i for i in range(8))
_SET_EXPIRY = _SET_EX | _SET_PX | _SET_EXAT | _SET_PXAT
_SET_TOKENS = {b"EX": _SET_EX, b"PX": _SET_PX, b"EXAT": _SET_EXAT, b"PXAT": _SET_PXAT}


@command("set", -3, "write denyoom", 1, 1, 1)
def cmd_set(ctx: Ctx, args):
    key, value = args[1], args[2]
    n = len(args)
    if n == 3:
        # the common case, no options (an expired old entry is simply replaced)
        if len(value) > ctx.max_string:
            raise CommandError("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
        e = (E_SET, key, value, 0)
        ctx.effects.append(e)           # ctx.emit(e), inlined
        ctx.ks.apply(e, ctx.pos)
        return OK
    # Redis's parseExtendedStringArgumentsOrReply: a repeated option is accepted (the last
    # expiry wins), conflicting ones are a syntax error; the expiry value is checked after.
    flags = 0
    expire = None
    i = 3
    while i < n:
        opt = args[i].upper()
        if opt == b"NX" and not flags & _SET_XX:
            flags |= _SET_NX
        elif opt == b"XX" and not flags & _SET_NX:
            flags |= _SET_XX
        elif opt == b"GET":
            flags |= _SET_GET
        elif opt == b"KEEPTTL" and not flags & _SET_EXPIRY:
            flags |= _SET_KEEPTTL
        elif opt in _SET_TOKENS and i + 1 < n and not flags & ((_SET_EXPIRY | _SET_KEEPTTL) & ~_SET_TOKENS[opt]):
            flags |= _SET_TOKENS[opt]
            expire = (opt, args[i + 1])
            i += 1
        else:
            raise CommandError(SYNTAX)
        i += 1
    expire_at = 0
    if expire is not None:
        opt, b = expire
        expire_at = _expire_ms(b, 1000 if opt in (b"EX", b"EXAT") else 1, opt.endswith(b"AT"), ctx.now_ms, "set")
    if len(value) > ctx.max_string:
        raise CommandError("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
    e = ctx.lookup(key)
    get = flags & _SET_GET
    old = None
    if get and e is not None:
        if e.type != T_STRING:
            raise CommandError(WRONGTYPE)
        old = e.value
    if (flags & _SET_NX and e is not None) or (flags & _SET_XX and e is None):
        return old
    if flags & _SET_KEEPTTL and e is not None:
        expire_at = e.expire_at
    if expire_at and expire_at <= ctx.now_ms and not ctx.replica:
        # set with a time already past: the key is gone at once (Redis deletes it on access)
        if e is not None:
            ctx.emit((E_DEL, key))
        else:
            ctx.ks.touch(key)   # Redis sets, then expires: a WATCH on the key still fires
    else:
        ctx.emit((E_SET, key, value, expire_at))
    return old if get else OK


@command("setnx", 3, "write denyoom fast", 1, 1, 1)
def cmd_setnx(ctx: Ctx, args):
    if ctx.lookup(args[1]) is not None:
        return 0
    ctx.emit((E_SET, args[1], args[2], 0))
    return 1


def _setex(ctx: Ctx, args, unit: int, name: str):
    at = _expire_ms(args[2], unit, False, ctx.now_ms, name)
    if len(args[3]) > ctx.max_string:
        raise CommandError("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
    ctx.lookup(args[1])
    ctx.emit((E_SET, args[1], args[3], at))
    return OK


@command("setex", 4, "write denyoom", 1, 1, 1)
def cmd_setex(ctx, args):
    return _setex(ctx, args, 1000, "setex")


@command("psetex", 4, "write denyoom", 1, 1, 1)
def cmd_psetex(ctx, args):
    return _setex(ctx, args, 1, "psetex")


@command("getset", 3, "write denyoom fast", 1, 1, 1)
def cmd_getset(ctx: Ctx, args):
    old = _get_string(ctx, args[1])
    ctx.emit((E_SET, args[1], args[2], 0))
    return old


@command("getdel", 2, "write fast", 1, 1, 1)
def cmd_getdel(ctx: Ctx, args):
    old = _get_string(ctx, args[1])
    if old is not None:
        ctx.emit((E_DEL, args[1]))
    return old


@command("getrange", 4, "readonly", 1, 1, 1)
def cmd_getrange(ctx: Ctx, args):
    start = parse_int(args[2])
    end = parse_int(args[3])
    v = _get_string(ctx, args[1])
    if v is None:
        return b""
    n = len(v)
    if start < 0 and end < 0 and start > end:
        return b""
    if start < 0:
        start = max(n + start, 0)
    if end < 0:
        end = max(n + end, 0)
    if end >= n:
        end = n - 1
    if n == 0 or start > end:
        return b""
    return v[start:end + 1]


@command("setrange", 4, "write denyoom", 1, 1, 1)
def cmd_setrange(ctx: Ctx, args):
    offset = parse_int(args[2])
    if offset < 0:
        raise CommandError("ERR offset is out of range")
    piece = args[3]
    e = ctx.lookup_type(args[1], T_STRING)
    cur = e.value if e is not None else b""
    if not piece:
        return len(cur)
    if offset + len(piece) > ctx.max_string:
        raise CommandError("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
    if len(cur) < offset:
        cur = cur + b"\x00" * (offset - len(cur))
    new = cur[:offset] + piece + cur[offset + len(piece):]
    ctx.emit((E_SET, args[1], new, e.expire_at if e is not None else 0))
    return len(new)


@command("mget", -2, "readonly fast", 1, -1, 1)
def cmd_mget(ctx: Ctx, args):
    out = []
    for k in args[1:]:
        e = ctx.lookup(k)
        out.append(e.value if e is not None and e.type == T_STRING else None)
    return out


@command("mset", -3, "write denyoom", 1, -1, 2)
def cmd_mset(ctx: Ctx, args):
    if len(args) % 2 == 0:
        raise CommandError(arity_error("mset"))
    for i in range(1, len(args), 2):
        ctx.lookup(args[i])
        ctx.emit((E_SET, args[i], args[i + 1], 0))
    return OK


@command("msetnx", -3, "write denyoom", 1, -1, 2)
def cmd_msetnx(ctx: Ctx, args):
    if len(args) % 2 == 0:
        raise CommandError(arity_error("msetnx"))
    for i in range(1, len(args), 2):
        if ctx.lookup(args[i]) is not None:
            return 0
    for i in range(1, len(args), 2):
        ctx.emit((E_SET, args[i], args[i + 1], 0))
    return 1


@command("append", 3, "write denyoom fast", 1, 1, 1)
def cmd_append(ctx: Ctx, args):
    e = ctx.lookup_type(args[1], T_STRING)
    cur = len(e.value) if e is not None else 0
    if cur + len(args[2]) > ctx.max_string:
        raise CommandError("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
    ctx.emit((E_APPEND, args[1], args[2]))
    return cur + len(args[2])


@command("strlen", 2, "readonly fast", 1, 1, 1)
def cmd_strlen(ctx: Ctx, args):
    v = _get_string(ctx, args[1])
    return 0 if v is None else len(v)


def _incrby(ctx: Ctx, key: bytes, delta: int):
    e = ctx.lookup_type(key, T_STRING)
    if e is None:
        cur = 0
    else:
        v = e.value
        if len(v) > 20:
            raise CommandError(NOT_INT)
        cur = parse_int(v)
    new = cur + delta
    if new < INT64_MIN or new > INT64_MAX:
        raise CommandError(OVERFLOW)
    ctx.emit((E_SET, key, b"%d" % new, e.expire_at if e is not None else 0))
    return new


@command("incr", 2, "write denyoom fast", 1, 1, 1)
def cmd_incr(ctx, args):
    return _incrby(ctx, args[1], 1)


@command("decr", 2, "write denyoom fast", 1, 1, 1)
def cmd_decr(ctx, args):
    return _incrby(ctx, args[1], -1)


@command("incrby", 3, "write denyoom fast", 1, 1, 1)
def cmd_incrby(ctx, args):
    return _incrby(ctx, args[1], parse_int(args[2]))


@command("decrby", 3, "write denyoom fast", 1, 1, 1)
def cmd_decrby(ctx, args):
    d = parse_int(args[2])
    if d == INT64_MIN:
        raise CommandError("ERR decrement would overflow")
    return _incrby(ctx, args[1], -d)


@command("incrbyfloat", 3, "write denyoom fast", 1, 1, 1)
def cmd_incrbyfloat(ctx: Ctx, args):
    e = ctx.lookup_type(args[1], T_STRING)
    cur = parse_long_double(e.value) if e is not None else (False, 0, 0)
    incr = parse_long_double(args[2])
    r = ld_add(cur, incr)
    if r is None:
        raise CommandError("ERR increment would produce NaN or Infinity")
    out = ld_format(r)
    # the effect carries the resulting string, never the increment
    ctx.emit((E_SET, args[1], out, e.expire_at if e is not None else 0))
    return out


# ---------------------------------------------------------------------------- keys

@command("del", -2, "write", 1, -1, 1)
def cmd_del(ctx: Ctx, args):
    n = 0
    for k in args[1:]:
        if ctx.lookup(k) is not None:
            ctx.emit((E_DEL, k))
            n += 1
    return n


COMMANDS[b"UNLINK"] = Command("unlink", cmd_del, -2, frozenset({"write", "fast"}), 1, -1, 1)


@command("exists", -2, "readonly fast", 1, -1, 1)
def cmd_exists(ctx: Ctx, args):
    return sum(1 for k in args[1:] if ctx.lookup(k) is not None)


@command("type", 2, "readonly fast", 1, 1, 1)
def cmd_type(ctx: Ctx, args):
    e = ctx.lookup(args[1])
    return Simple("none" if e is None else TYPE_NAMES[e.type])


def _rename(ctx: Ctx, args, nx: bool):
    src, dst = args[1], args[2]
    e = ctx.lookup(src)
    if e is None:
        raise CommandError("ERR no such key")
    if src == dst:
        return 0 if nx else OK
    d = ctx.lookup(dst)
    if nx and d is not None:
        return 0
    ctx.emit((E_RENAME, src, dst))
    return 1 if nx else OK


@command("rename", 3, "write", 1, 2, 1)
def cmd_rename(ctx, args):
    return _rename(ctx, args, False)


@command("renamenx", 3, "write fast", 1, 2, 1)
def cmd_renamenx(ctx, args):
    return _rename(ctx, args, True)


@command("randomkey", 1, "readonly", 0, 0, 0)
def cmd_randomkey(ctx: Ctx, args):
    data = ctx.ks.data
    for _ in range(100):
        if not data:
            return None
        # dict views cannot be indexed: O(n) in the worst case, as KEYS
        k = next(itertools.islice(data, ctx.rng.randrange(len(data)), None))
        if ctx.lookup(k) is not None:
            return k
    return None


@command("keys", 2, "readonly", 0, 0, 0)
def cmd_keys(ctx: Ctx, args):
    pat = args[1]
    now = ctx.now_ms
    live = [k for k, e in ctx.ks.data.items() if not (e.expire_at and e.expire_at <= now)]
    if pat == b"*":
        return live
    m = glob_matcher(pat).match
    return [k for k in live if m(k)]


def _scan_hash(k: bytes) -> int:
    # deterministic (the same on every node and after a restart), cheap, 64 bits
    return (zlib.crc32(k) << 32) | zlib.adler32(k)


_ULONG_MAX = 2**64 - 1
# id(keyspace) -> (keyspace, ctx.pos and key count when built, sorted hashes, keys in that order)
_SCAN_INDEX: dict[int, tuple] = {}


def parse_scan_cursor(b: bytes) -> int:
    """Redis parses the cursor with strtoul: no leading space, an optional sign ("-1" wraps to
    2**64-1), decimal digits up to 2**64-1, and the C string ends at a NUL byte (so "" is 0)."""
    i = b.find(b"\x00")
    if i >= 0:
        b = b[:i]
    if not b:
        return 0
    neg = b[:1] == b"-"
    digits = b[1:] if b[:1] in (b"-", b"+") else b
    if not digits or not digits.isdigit() or not digits.isascii():
        raise CommandError("ERR invalid cursor")
    v = int(digits)
    if v > _ULONG_MAX:
        raise CommandError("ERR invalid cursor")
    return (-v) & _ULONG_MAX if neg else v


def _scan_index(ctx: Ctx, start: bool) -> tuple:
    """Every key sorted by its scan hash. Built when a scan starts (cursor 0) unless nothing
    was written since the cached one was built, or when none is cached; dropped when a scan
    ends. A key present for a whole scan was present when the index in use was built (each
    index is built after that scan started, or is unchanged since), so it is returned; a key
    added meanwhile may or may not be."""
    ks = ctx.ks
    idx = _SCAN_INDEX.get(id(ks))
    if idx is None or idx[0] is not ks or (start and (idx[1] != ctx.pos or idx[2] != len(ks.data))):
        keys = list(ks.data)
        hashes = list(map(_scan_hash, keys))
        order = sorted(range(len(keys)), key=hashes.__getitem__)
        idx = (ks, ctx.pos, len(keys), [hashes[i] for i in order], [keys[i] for i in order])
        if len(_SCAN_INDEX) >= 8:
            _SCAN_INDEX.clear()
        _SCAN_INDEX[id(ks)] = idx
    return idx


@command("scan", -2, "readonly", 0, 0, 0)
def cmd_scan(ctx: Ctx, args):
    """The cursor is a position in the space of 64-bit key hashes: keys are visited in hash
    order and a cursor c means "keys whose hash is >= c". Keys sharing a hash are never split
    across two pages. So, as in Redis, a key present during the whole scan is returned, a
    key is never returned twice, and COUNT is a hint (fewer come back when keys were deleted,
    expired or filtered out by MATCH/TYPE)."""
    cursor = parse_scan_cursor(args[1])
    count = 10
    pat = None
    want_type = None
    i = 2
    n = len(args)
    while i < n:
        opt = args[i].upper()
        if opt == b"COUNT" and i + 1 < n:
            count = parse_int(args[i + 1])
            if count < 1:
                raise CommandError(SYNTAX)
        elif opt == b"MATCH" and i + 1 < n:
            pat = None if args[i + 1] == b"*" else glob_matcher(args[i + 1])
        elif opt == b"TYPE" and i + 1 < n:
            want_type = _cstr(args[i + 1]).lower()
        else:
            raise CommandError(SYNTAX)
        i += 2
    ks = ctx.ks
    hashes, keys = _scan_index(ctx, cursor == 0)[3:]
    lo = bisect.bisect_left(hashes, cursor)
    hi = min(lo + count, len(keys))
    while hi < len(keys) and hashes[hi] == hashes[hi - 1]:
        hi += 1
    if hi < len(keys):
        nxt = hashes[hi - 1] + 1
    else:
        nxt = 0
        _SCAN_INDEX.pop(id(ks), None)
    now = ctx.now_ms
    data = ks.data
    out = []
    for k in keys[lo:hi]:
        e = data.get(k)
        if e is None or (e.expire_at and e.expire_at <= now):
            continue
        if pat is not None and not pat.match(k):
            continue
        if want_type is not None and TYPE_NAMES[e.type] != want_type:
            continue
        out.append(k)
    return [b"%d" % nxt, out]


def _expire(ctx: Ctx, args, unit: int, absolute: bool, name: str):
    """Redis's expireGenericCommand: the NX/XX/GT/LT options are checked first, then the
    time; a time in the past deletes the key."""
    key = args[1]
    nx = xx = gt = lt = False
    for opt in args[3:]:
        o = opt.upper()
        if o == b"NX":
            nx = True
        elif o == b"XX":
            xx = True
        elif o == b"GT":
            gt = True
        elif o == b"LT":
            lt = True
        else:
            raise CommandError(f"ERR Unsupported option {_cstr(opt)}")
    if nx and (xx or gt or lt):
        raise CommandError("ERR NX and XX, GT or LT options at the same time are not compatible")
    if gt and lt:
        raise CommandError("ERR GT and LT options at the same time are not compatible")
    v = parse_int(args[2])
    if unit != 1 and (v > INT64_MAX // unit or v < INT64_MIN // unit):
        raise CommandError(f"ERR invalid expire time in '{name}' command")
    at = v * unit
    if not absolute:
        if at > INT64_MAX - ctx.now_ms:
            raise CommandError(f"ERR invalid expire time in '{name}' command")
        at += ctx.now_ms
    e = ctx.lookup(key)
    if e is None:
        return 0
    cur = e.expire_at
    if nx and cur:
        return 0
    if xx and not cur:
        return 0
    if gt and (not cur or at <= cur):
        return 0
    if lt and cur and at >= cur:
        return 0
    if at <= ctx.now_ms and not ctx.replica:
        ctx.emit((E_DEL, key))
    else:
        ctx.emit((E_EXPIRE, key, at))
    return 1


@command("expire", -3, "write fast", 1, 1, 1)
def cmd_expire(ctx, args):
    return _expire(ctx, args, 1000, False, "expire")


@command("pexpire", -3, "write fast", 1, 1, 1)
def cmd_pexpire(ctx, args):
    return _expire(ctx, args, 1, False, "pexpire")


@command("expireat", -3, "write fast", 1, 1, 1)
def cmd_expireat(ctx, args):
    return _expire(ctx, args, 1000, True, "expireat")


@command("pexpireat", -3, "write fast", 1, 1, 1)
def cmd_pexpireat(ctx, args):
    return _expire(ctx, args, 1, True, "pexpireat")


def _ttl(ctx: Ctx, key: bytes, ms: bool):
    e = ctx.lookup(key)
    if e is None:
        return -2
    if not e.expire_at:
        return -1
    left = max(e.expire_at - ctx.now_ms, 0)
    return left if ms else (left + 500) // 1000


@command("ttl", 2, "readonly fast", 1, 1, 1)
def cmd_ttl(ctx, args):
    return _ttl(ctx, args[1], False)


@command("pttl", 2, "readonly fast", 1, 1, 1)
def cmd_pttl(ctx, args):
    return _ttl(ctx, args[1], True)


@command("expiretime", 2, "readonly fast", 1, 1, 1)
def cmd_expiretime(ctx, args):
    e = ctx.lookup(args[1])
    if e is None:
        return -2
    return (e.expire_at // 1000) if e.expire_at else -1


@command("persist", 2, "write fast", 1, 1, 1)
def cmd_persist(ctx: Ctx, args):
    e = ctx.lookup(args[1])
    if e is None or not e.expire_at:
        return 0
    ctx.emit((E_EXPIRE, args[1], 0))
    return 1


@command("dbsize", 1, "readonly fast", 0, 0, 0)
def cmd_dbsize(ctx: Ctx, args):
    now = ctx.now_ms
    return sum(1 for e in ctx.ks.data.values() if not (e.expire_at and e.expire_at <= now))


def _flush(ctx: Ctx, args):
    for opt in args[1:]:
        if opt.upper() not in (b"ASYNC", b"SYNC"):
            raise CommandError(SYNTAX)
    if len(args) > 2:
        raise CommandError(SYNTAX)
    ctx.emit((E_FLUSH,))
    return OK


@command("flushdb", -1, "write", 0, 0, 0)
def cmd_flushdb(ctx, args):
    return _flush(ctx, args)


@command("flushall", -1, "write", 0, 0, 0)
def cmd_flushall(ctx, args):
    return _flush(ctx, args)


_ENTRY_BYTES = sys.getsizeof(Entry(T_STRING, b""))   # the record object itself (56 or 72 bytes)


def entry_memory_usage(key: bytes, e: Entry) -> int:
    """An estimate in bytes of what the entry costs (key, value, per-element overhead)."""
    base = 56 + len(key) + _ENTRY_BYTES
    if e.type == T_STRING:
        return base + len(e.value)
    if e.type == T_HASH:
        return base + sum(len(f) + len(v) + 80 for f, v in e.value.items())
    return base + sum(len(m) + 60 for m in e.value)


@command("memory|usage", -3, "readonly", 2, 2, 1)
def cmd_memory_usage(ctx: Ctx, args):
    j = 3
    while j < len(args):
        if args[j].upper() == b"SAMPLES" and j + 1 < len(args):
            if parse_int(args[j + 1]) < 0:
                raise CommandError(SYNTAX)
            j += 2
        else:
            raise CommandError(SYNTAX)
    e = ctx.lookup(args[2])
    if e is None:
        return None
    return entry_memory_usage(args[2], e)


# ---------------------------------------------------------------------------- hashes

@command("hset", -4, "write denyoom fast", 1, 1, 1)
def cmd_hset(ctx: Ctx, args):
    if len(args) % 2 != 0:
        raise CommandError(arity_error(args[0].decode("latin-1").lower()))
    e = ctx.lookup_type(args[1], T_HASH)
    h = e.value if e is not None else {}
    new = len({f for f in args[2::2] if f not in h})
    ctx.emit((E_HSET, args[1], list(args[2:])))
    return new


@command("hmset", -4, "write denyoom fast", 1, 1, 1)
def cmd_hmset(ctx: Ctx, args):
    cmd_hset(ctx, args)
    return OK


@command("hsetnx", 4, "write denyoom fast", 1, 1, 1)
def cmd_hsetnx(ctx: Ctx, args):
    e = ctx.lookup_type(args[1], T_HASH)
    if e is not None and args[2] in e.value:
        return 0
    ctx.emit((E_HSET, args[1], [args[2], args[3]]))
    return 1


@command("hget", 3, "readonly fast", 1, 1, 1)
def cmd_hget(ctx: Ctx, args):
    e = ctx.lookup_type(args[1], T_HASH)
    return None if e is None else e.value.get(args[2])


@command("hmget", -3, "readonly fast", 1, 1, 1)
def cmd_hmget(ctx: Ctx, args):
    e = ctx.lookup_type(args[1], T_HASH)
    h = e.value if e is not None else {}
    return [h.get(f) for f in args[2:]]


@command("hdel", -3, "write fast", 1, 1, 1)
def cmd_hdel(ctx: Ctx, args):
    e = ctx.lookup_type(args[1], T_HASH)
    if e is None:
        return 0
    gone = list(dict.fromkeys(f for f in args[2:] if f in e.value))
    if gone:
        ctx.emit((E_HDEL, args[1], gone))
    return len(gone)


@command("hgetall", 2, "readonly", 1, 1, 1)
def cmd_hgetall(ctx: Ctx, args):
    e = ctx.lookup_type(args[1], T_HASH)
    return Map(list(e.value.items()) if e is not None else [])


@command("hkeys", 2, "readonly", 1, 1, 1)
def cmd_hkeys(ctx: Ctx, args):
    e = ctx.lookup_type(args[1], T_HASH)
    return list(e.value) if e is not None else []


@command("hvals", 2, "readonly", 1, 1, 1)
def cmd_hvals(ctx: Ctx, args):
    e = ctx.lookup_type(args[1], T_HASH)
    return list(e.value.values()) if e is not None else []


@command("hlen", 2, "readonly fast", 1, 1, 1)
def cmd_hlen(ctx: Ctx, args):
    e = ctx.lookup_type(args[1], T_HASH)
    return len(e.value) if e is not None else 0


@command("hexists", 3, "readonly fast", 1, 1, 1)
def cmd_hexists(ctx: Ctx, args):
    e = ctx.lookup_type(args[1], T_HASH)
    return 1 if e is not None and args[2] in e.value else 0


@command("hstrlen", 3, "readonly fast", 1, 1, 1)
def cmd_hstrlen(ctx: Ctx, args):
    e = ctx.lookup_type(args[1], T_HASH)
    v = e.value.get(args[2]) if e is not None else None
    return len(v) if v is not None else 0


@command("hincrby", 4, "write denyoom fast", 1, 1, 1)
def cmd_hincrby(ctx: Ctx, args):
    delta = parse_int(args[3])
    e = ctx.lookup_type(args[1], T_HASH)
    cur_b = e.value.get(args[2]) if e is not None else None
    cur = 0 if cur_b is None else parse_int(cur_b, "ERR hash value is not an integer")
    new = cur + delta
    if new < INT64_MIN or new > INT64_MAX:
        raise CommandError(OVERFLOW)
    ctx.emit((E_HSET, args[1], [args[2], b"%d" % new]))
    return new


@command("hincrbyfloat", 4, "write denyoom fast", 1, 1, 1)
def cmd_hincrbyfloat(ctx: Ctx, args):
    incr = parse_long_double(args[3])
    if incr[1] is None:
        raise CommandError("ERR value is NaN or Infinity")
    e = ctx.lookup_type(args[1], T_HASH)
    cur_b = e.value.get(args[2]) if e is not None else None
    cur = (False, 0, 0) if cur_b is None else parse_long_double(cur_b, "ERR hash value is not a float")
    r = ld_add(cur, incr)
    if r is None:
        raise CommandError("ERR increment would produce NaN or Infinity")
    out = ld_format(r)
    ctx.emit((E_HSET, args[1], [args[2], out]))
    return out


# ---------------------------------------------------------------------------- sets

def _set_of(ctx: Ctx, key: bytes) -> set:
    e = ctx.lookup_type(key, T_SET)
    return e.value if e is not None else set()


@command("sadd", -3, "write denyoom fast", 1, 1, 1)
def cmd_sadd(ctx: Ctx, args):
    cur = _set_of(ctx, args[1])
    new = list(dict.fromkeys(m for m in args[2:] if m not in cur))
    if new:
        ctx.emit((E_SADD, args[1], new))
    return len(new)


@command("srem", -3, "write fast", 1, 1, 1)
def cmd_srem(ctx: Ctx, args):
    cur = _set_of(ctx, args[1])
    gone = list(dict.fromkeys(m for m in args[2:] if m in cur))
    if gone:
        ctx.emit((E_SREM, args[1], gone))
    return len(gone)


@command("smembers", 2, "readonly", 1, 1, 1)
def cmd_smembers(ctx: Ctx, args):
    return SetReply(list(_set_of(ctx, args[1])))


@command("sismember", 3, "readonly fast", 1, 1, 1)
def cmd_sismember(ctx: Ctx, args):
    return 1 if args[2] in _set_of(ctx, args[1]) else 0


@command("smismember", -3, "readonly fast", 1, 1, 1)
def cmd_smismember(ctx: Ctx, args):
    s = _set_of(ctx, args[1])
    return [1 if m in s else 0 for m in args[2:]]


@command("scard", 2, "readonly fast", 1, 1, 1)
def cmd_scard(ctx: Ctx, args):
    return len(_set_of(ctx, args[1]))


def _parse_count(b: bytes) -> int:
    n = parse_int(b, "ERR value is out of range, must be positive")
    return n


@command("spop", -2, "write fast", 1, 1, 1)
def cmd_spop(ctx: Ctx, args):
    if len(args) > 3:
        raise CommandError(SYNTAX)
    count = None
    if len(args) == 3:
        count = _parse_count(args[2])
        if count < 0:
            raise CommandError("ERR value is out of range, must be positive")
    s = _set_of(ctx, args[1])
    if count is None:
        if not s:
            return None
        m = ctx.rng.choice(sorted(s)) if len(s) < 64 else _sample(ctx, s, 1)[0]
        ctx.emit((E_SREM, args[1], [m]))
        return m
    if not s or count == 0:
        return SetReply([]) if count is not None else None
    picked = list(s) if count >= len(s) else _sample(ctx, s, count)
    ctx.emit((E_SREM, args[1], picked))
    return SetReply(picked)


def _sample(ctx: Ctx, s: set, k: int) -> list:
    return ctx.rng.sample(sorted(s), k)


@command("srandmember", -2, "readonly", 1, 1, 1)
def cmd_srandmember(ctx: Ctx, args):
    if len(args) > 3:
        raise CommandError(SYNTAX)
    if len(args) == 2:
        s = _set_of(ctx, args[1])
        if not s:
            return None
        return _sample(ctx, s, 1)[0]
    count = parse_int(args[2])
    if count == INT64_MIN:
        raise CommandError(f"ERR value is out of range, value must between {-INT64_MAX} and {INT64_MAX}")
    s = _set_of(ctx, args[1])
    if not s or count == 0:
        return []
    if count > 0:
        return list(s) if count >= len(s) else _sample(ctx, s, count)
    members = sorted(s)
    return [ctx.rng.choice(members) for _ in range(-count)]


@command("smove", 4, "write fast", 1, 2, 1)
def cmd_smove(ctx: Ctx, args):
    src, dst, m = args[1], args[2], args[3]
    se = ctx.lookup(src)
    de = ctx.lookup(dst)
    if se is None:
        return 0
    if se.type != T_SET or (de is not None and de.type != T_SET):
        raise CommandError(WRONGTYPE)
    s = se.value
    if m not in s:
        return 0
    if src == dst:
        return 1
    ctx.emit((E_SREM, src, [m]))
    ctx.emit((E_SADD, dst, [m]))
    return 1


def _setop(ctx: Ctx, keys: list[bytes], op: str) -> set:
    sets = [_set_of(ctx, k) for k in keys]
    if op == "inter":
        if any(not s for s in sets):
            return set()
        return set.intersection(*sorted(sets, key=len))
    if op == "union":
        return set().union(*sets)
    return sets[0].difference(*sets[1:])


def _setop_cmd(op):
    def read(ctx: Ctx, args):
        return SetReply(list(_setop(ctx, args[1:], op)))

    def store(ctx: Ctx, args):
        dst = args[1]
        result = _setop(ctx, args[2:], op)
        if ctx.lookup(dst) is not None:
            ctx.emit((E_DEL, dst))
        if result:
            ctx.emit((E_SADD, dst, list(result)))
        return len(result)

    return read, store


for _op in ("inter", "union", "diff"):
    _read, _store = _setop_cmd(_op)
    COMMANDS[b"S" + _op.upper().encode()] = Command("s" + _op, _read, -2, frozenset({"readonly"}), 1, -1, 1)
    COMMANDS[b"S" + _op.upper().encode() + b"STORE"] = Command(
        "s" + _op + "store", _store, -3, frozenset({"write", "denyoom"}), 1, -1, 1)


# ---------------------------------------------------------------------------- subcommand lookup

SUBCOMMAND_PARENTS = {b"MEMORY"}


def lookup(args: list[bytes]) -> Command | None:
    name = args[0].upper()
    cmd = COMMANDS.get(name)
    if cmd is None and name in SUBCOMMAND_PARENTS and len(args) > 1:
        cmd = COMMANDS.get(name + b"|" + args[1].upper())
    return cmd


def run(ctx: Ctx, cmd: Command, args: list[bytes]):
    """Execute one data command; a CommandError becomes an error reply by the caller."""
    return cmd.fn(ctx, args)


__all__ = ["COMMANDS", "Command", "CommandError", "Ctx", "lookup", "run", "arity_ok", "arity_error",
           "NULL_ARRAY"]
