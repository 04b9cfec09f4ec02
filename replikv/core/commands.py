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

import itertools
import re
import zlib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation, localcontext

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

    @property
    def is_write(self) -> bool:
        return "write" in self.flags

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


def arity_error(name: str) -> str:
    return f"ERR wrong number of arguments for '{name}' command"


# ---------------------------------------------------------------------------- parsing helpers

_INT_RE = re.compile(rb"-?(?:0|[1-9][0-9]*)\Z")


def parse_int(b: bytes, err: str = NOT_INT) -> int:
    """Parse a 64-bit signed integer exactly as Redis's string2ll: no sign '+', no spaces,
    no leading zeros."""
    if not _INT_RE.match(b) or b == b"-0":
        raise CommandError(err)
    v = int(b)
    if v < INT64_MIN or v > INT64_MAX:
        raise CommandError(err)
    return v


def parse_decimal(b: bytes, err: str = NOT_FLOAT) -> Decimal:
    s = b.decode("latin-1")
    if not s or s != s.strip() or "_" in s:
        raise CommandError(err)
    try:
        d = Decimal(s)
    except InvalidOperation:
        raise CommandError(err) from None
    if d.is_nan():
        raise CommandError(err)
    return d


def format_decimal(d: Decimal) -> bytes:
    """Like Redis's ``%.17Lg`` output for INCRBYFLOAT: 17 significant digits, plain notation,
    trailing zeros dropped."""
    with localcontext() as ctx:
        ctx.prec = 17
        d = +d
    s = format(d, "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    if s in ("-0", ""):
        s = "0"
    return s.encode()


def add_decimal(cur: Decimal, incr: Decimal, err: str) -> tuple[Decimal, bytes]:
    with localcontext() as ctx:
        ctx.prec = 40
        r = cur + incr
    if r.is_infinite() or r.is_nan():
        raise CommandError(err)
    out = format_decimal(r)
    return Decimal(out.decode()), out


_glob_cache: dict[bytes, re.Pattern] = {}


def glob_to_regex(pattern: bytes) -> re.Pattern:
    """Compile a Redis glob (``*``, ``?``, ``[a-z]``, ``[^a]``, ``\\x``) into a regex."""
    r = _glob_cache.get(pattern)
    if r is not None:
        return r
    out = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i:i + 1]
        if c == b"*":
            out.append(b".*")
        elif c == b"?":
            out.append(b".")
        elif c == b"\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i:i + 1]))
        elif c == b"[":
            j = i + 1
            neg = j < n and pattern[j:j + 1] == b"^"
            if neg:
                j += 1
            parts = []
            while j < n and pattern[j:j + 1] != b"]":
                if pattern[j:j + 1] == b"\\" and j + 1 < n:
                    parts.append(re.escape(pattern[j + 1:j + 2]))
                    j += 2
                elif j + 2 < n and pattern[j + 1:j + 2] == b"-" and pattern[j + 2:j + 3] != b"]":
                    a, b = pattern[j:j + 1], pattern[j + 2:j + 3]
                    if a > b:
                        a, b = b, a
                    parts.append(re.escape(a) + b"-" + re.escape(b))
                    j += 3
                else:
                    parts.append(re.escape(pattern[j:j + 1]))
                    j += 1
            if not parts:
                out.append(b"(?!)" if not neg else b".")
            else:
                out.append(b"[" + (b"^" if neg else b"") + b"".join(parts) + b"]")
            i = j  # at ']' (or end)
        else:
            out.append(re.escape(c))
        i += 1
    r = re.compile(b"".join(out) + b"\\Z", re.DOTALL)
    if len(_glob_cache) > 256:
        _glob_cache.clear()
    _glob_cache[pattern] = r
    return r


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


def _parse_expire_arg(b: bytes, unit_ms: int, absolute: bool, now_ms: int, cmd: str) -> int:
    v = parse_int(b)
    if v <= 0:
        raise CommandError(f"ERR invalid expire time in '{cmd}' command")
    ms = v * unit_ms
    if not absolute:
        ms += now_ms
    if ms > INT64_MAX or v > INT64_MAX // unit_ms:
        raise CommandError(f"ERR invalid expire time in '{cmd}' command")
    return ms


@command("set", -3, "write denyoom", 1, 1, 1)
def cmd_set(ctx: Ctx, args):
    key, value = args[1], args[2]
    nx = xx = get = keepttl = False
    expire_at = 0
    seen_expire = False
    i = 3
    n = len(args)
    while i < n:
        opt = args[i].upper()
        if opt == b"NX" and not xx:
            nx = True
        elif opt == b"XX" and not nx:
            xx = True
        elif opt == b"GET":
            get = True
        elif opt == b"KEEPTTL" and not seen_expire:
            keepttl = True
            seen_expire = True
        elif opt in (b"EX", b"PX", b"EXAT", b"PXAT") and not seen_expire and i + 1 < n:
            seen_expire = True
            unit = 1000 if opt in (b"EX", b"EXAT") else 1
            expire_at = _parse_expire_arg(args[i + 1], unit, opt.endswith(b"AT"), ctx.now_ms, "set")
            i += 1
        else:
            raise CommandError(SYNTAX)
        i += 1
    if len(value) > ctx.max_string:
        raise CommandError("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
    e = ctx.lookup(key)
    old = None
    if get and e is not None:
        if e.type != T_STRING:
            raise CommandError(WRONGTYPE)
        old = e.value
    if (nx and e is not None) or (xx and e is None):
        return old if get else None
    if keepttl and e is not None:
        expire_at = e.expire_at
    if expire_at and expire_at <= ctx.now_ms:
        if e is not None:
            ctx.emit((E_DEL, key))
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
    at = _parse_expire_arg(args[2], unit, False, ctx.now_ms, name)
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
    incr = parse_decimal(args[2])
    cur = parse_decimal(e.value) if e is not None else Decimal(0)
    _, out = add_decimal(cur, incr, "ERR increment would produce NaN or Infinity")
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
    rx = glob_to_regex(pat)
    return [k for k in live if rx.match(k)]


def _scan_hash(k: bytes) -> int:
    return (zlib.crc32(k) << 32) | zlib.crc32(k, 0x5EED)


@command("scan", -2, "readonly", 0, 0, 0)
def cmd_scan(ctx: Ctx, args):
    """Cursor = the 64-bit hash of the last key returned. Keys are visited in hash order, so
    a key present for the whole scan is returned (at least once) whatever changes meanwhile."""
    try:
        cursor = int(args[1])
        if cursor < 0 or str(cursor).encode() != args[1]:
            raise ValueError
    except ValueError:
        raise CommandError("ERR invalid cursor") from None
    count = 10
    pat = None
    want_type = None
    i = 2
    while i < len(args):
        opt = args[i].upper()
        if i + 1 >= len(args):
            raise CommandError(SYNTAX)
        if opt == b"COUNT":
            count = parse_int(args[i + 1])
            if count < 1:
                raise CommandError(SYNTAX)
        elif opt == b"MATCH":
            pat = None if args[i + 1] == b"*" else glob_to_regex(args[i + 1])
        elif opt == b"TYPE":
            want_type = args[i + 1].lower().decode("latin-1")
        else:
            raise CommandError(SYNTAX)
        i += 2
    import heapq

    now = ctx.now_ms
    # cursor 0 starts; a returned cursor c means "keys whose hash is >= c"
    page = heapq.nsmallest(count, ((h, k) for k in ctx.ks.data if (h := _scan_hash(k)) >= cursor))
    out = []
    for _h, k in page:
        e = ctx.ks.data[k]
        if e.expire_at and e.expire_at <= now:
            continue
        if pat is not None and not pat.match(k):
            continue
        if want_type is not None and TYPE_NAMES[e.type] != want_type:
            continue
        out.append(k)
    if len(page) < count:
        nxt = 0
    else:
        nxt = page[-1][0] + 1
    return [b"%d" % nxt, out]


def _expire(ctx: Ctx, args, unit: int, absolute: bool, name: str):
    key = args[1]
    try:
        v = parse_int(args[2])
    except CommandError:
        raise
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
            raise CommandError(f"ERR Unsupported option {opt.decode('latin-1')}")
    if nx and (xx or gt or lt):
        raise CommandError("ERR NX and XX, GT or LT options at the same time are not compatible")
    if gt and lt:
        raise CommandError("ERR GT and LT options at the same time are not compatible")
    if v > INT64_MAX // unit or v < INT64_MIN // unit:
        raise CommandError(f"ERR invalid expire time in '{name}' command")
    at = v * unit
    if not absolute:
        at += ctx.now_ms
    if at > INT64_MAX or at < INT64_MIN:
        raise CommandError(f"ERR invalid expire time in '{name}' command")
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
    if at <= ctx.now_ms:
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


def entry_memory_usage(key: bytes, e: Entry) -> int:
    """An estimate in bytes of what the entry costs (key, value, per-element overhead)."""
    base = 56 + len(key) + 72
    if e.type == T_STRING:
        return base + len(e.value)
    if e.type == T_HASH:
        return base + sum(len(f) + len(v) + 80 for f, v in e.value.items())
    return base + sum(len(m) + 60 for m in e.value)


@command("memory|usage", -3, "readonly", 2, 2, 1)
def cmd_memory_usage(ctx: Ctx, args):
    if len(args) > 3:
        if len(args) != 5 or args[3].upper() != b"SAMPLES":
            raise CommandError(SYNTAX)
        parse_int(args[4])
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
    e = ctx.lookup_type(args[1], T_HASH)
    delta = parse_int(args[3])
    cur_b = e.value.get(args[2]) if e is not None else None
    cur = 0 if cur_b is None else parse_int(cur_b, "ERR hash value is not an integer")
    new = cur + delta
    if new < INT64_MIN or new > INT64_MAX:
        raise CommandError(OVERFLOW)
    ctx.emit((E_HSET, args[1], [args[2], b"%d" % new]))
    return new


@command("hincrbyfloat", 4, "write denyoom fast", 1, 1, 1)
def cmd_hincrbyfloat(ctx: Ctx, args):
    e = ctx.lookup_type(args[1], T_HASH)
    incr = parse_decimal(args[3])
    cur_b = e.value.get(args[2]) if e is not None else None
    cur = Decimal(0) if cur_b is None else parse_decimal(cur_b, "ERR hash value is not a float")
    _, out = add_decimal(cur, incr, "ERR increment would produce NaN or Infinity")
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
    s = _set_of(ctx, args[1])
    if len(args) == 2:
        if not s:
            return None
        return _sample(ctx, s, 1)[0]
    count = parse_int(args[2], "ERR value is out of range")
    if not s or count == 0:
        return []
    if count > 0:
        return list(s) if count >= len(s) else _sample(ctx, s, count)
    members = sorted(s)
    return [ctx.rng.choice(members) for _ in range(-count)]


@command("smove", 4, "write fast", 1, 2, 1)
def cmd_smove(ctx: Ctx, args):
    src, dst, m = args[1], args[2], args[3]
    s = _set_of(ctx, src)
    _set_of(ctx, dst)  # type check first, as Redis does
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
