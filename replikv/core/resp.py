"""RESP codec: bytes in, frames out; replies in, bytes out.

Owns: parsing client requests (RESP multibulk and inline commands), parsing replies
(for our own client and the tests), and encoding replies in RESP2 or RESP3.
Does not know: sockets, commands, the keyspace. It is sans-IO, like h11: the caller feeds
bytes with ``feed`` and pulls frames with ``next_command`` / ``next_reply``; ``None`` means
"need more data".

Tricky cases:
- A frame may arrive one byte at a time; every proper prefix of a frame yields ``None``.
- A huge declared bulk length must be refused *before* buffering the body
  (``max_bulk_len``), and so must a huge multibulk count (``max_multibulk_len``), or one
  client could exhaust memory. Such errors are not resynchronisable: the caller replies with
  the error and closes the connection, as Redis does.
- While a large bulk is arriving we remember how many bytes the frame needs, so a 100 MB
  value arriving in 64 KB chunks is parsed once, not re-scanned per chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

try:  # the C RESP reader that redis-py uses; optional: the pure-Python parser is complete
    import hiredis
except ImportError:  # pragma: no cover - hiredis is a dependency
    hiredis = None

CRLF = b"\r\n"


class ProtocolError(Exception):
    """The byte stream is not valid RESP; the connection cannot be resynchronised."""


@dataclass(frozen=True, slots=True)
class Simple:
    """A simple string reply (``+OK``)."""

    text: str


@dataclass(frozen=True, slots=True)
class Error:
    """An error reply; ``text`` starts with its code, e.g. ``ERR ...`` or ``WRONGTYPE ...``."""

    text: str


@dataclass(frozen=True, slots=True)
class Map:
    """A map reply: RESP3 ``%``, flattened to an array in RESP2. ``items`` is a list of pairs."""

    items: list


@dataclass(frozen=True, slots=True)
class SetReply:
    """A set reply: RESP3 ``~``, an array in RESP2."""

    items: list


@dataclass(frozen=True, slots=True)
class Verbatim:
    """A verbatim string: RESP3 ``=txt:``, a bulk string in RESP2 (INFO uses it)."""

    text: str


@dataclass(frozen=True, slots=True)
class Raw:
    """Bytes already encoded for this connection's protocol (a reply captured in MULTI)."""

    data: bytes


class _NullArray:
    """The null array (RESP2 ``*-1``, RESP3 ``_``): e.g. EXEC aborted by WATCH."""

    __slots__ = ()


NULL_ARRAY = _NullArray()

OK = Simple("OK")
QUEUED = Simple("QUEUED")
PONG = Simple("PONG")

_OK_BYTES = b"+OK\r\n"


_HDR_CACHE = 1024
_BULK_HDR = [b"$%d\r\n" % i for i in range(_HDR_CACHE)]
_MBULK_HDR = [b"*%d\r\n" % i for i in range(_HDR_CACHE)]


_FRAME2 = b"*2\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n"
_FRAME3 = b"*3\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n"


def _encode_frames(frames) -> bytes:
    """Requests as their canonical RESP multibulks; TypeError if an element is not bytes."""
    out = []
    ap = out.append
    for f in frames:
        ap(_MBULK_HDR[len(f)] if len(f) < _HDR_CACHE else b"*%d\r\n" % len(f))
        for a in f:
            n = len(a)
            ap(_BULK_HDR[n] if n < _HDR_CACHE else b"$%d\r\n" % n)
            ap(a)
            ap(CRLF)
    return b"".join(out)


def _encode_one(c: list) -> bytes:
    """One request as its canonical RESP multibulk (the common two- and three-argument
    requests through one format each); TypeError if an element is not bytes."""
    n = len(c)
    if n == 3:
        a, b, d = c
        return _FRAME3 % (len(a), a, len(b), b, len(d), d)
    if n == 2:
        a, b = c
        return _FRAME2 % (len(a), a, len(b), b)
    return _encode_frames((c,))


class RequestParser:
    """Parses client requests. ``feed(data)`` then call ``next_command()`` until ``None``.

    Two parsers, one behaviour. The pure-Python one below is the reference: it handles
    every input (inline commands, frames split anywhere, limits, the exact Redis error
    texts). A chunk that arrives at a frame boundary and starts with ``*`` first goes to
    hiredis's C reader (``_fast``); its frames are kept only if the chunk was nothing but
    complete canonical multibulks of bulk strings: encoding them back must give the chunk,
    byte for byte (see ``_fast``). Anything else (a frame cut by the chunk's end, garbage, inline input,
    another RESP type inside the array) is discarded from hiredis and the whole chunk is
    parsed by the Python parser, so errors and limits are the reference's, byte for byte.
    Pipelined clients send whole frames, so the C reader takes almost all of the load.

    A multibulk is parsed incrementally: the arguments already complete are kept (and their
    bytes dropped from the buffer) while the rest arrives, so a request with a million
    arguments arriving in small chunks costs linear time, not quadratic."""

    __slots__ = ("_buf", "_pos", "_need", "_args", "_left", "max_bulk_len", "max_multibulk_len",
                 "max_inline_len", "_reader", "_ready", "_ready_bytes", "_fast_max", "fast_chunks", "slow_chunks")

    def __init__(self, max_bulk_len: int = 512 * 1024 * 1024, max_multibulk_len: int = 1024 * 1024,
                 max_inline_len: int = 64 * 1024, fast: bool = True) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._need = 0  # the parse cannot progress before this many bytes are buffered at _pos
        self._args: list[bytes] | None = None  # arguments of a multibulk being received
        self._left = 0                         # ... and how many are still to come
        self.max_bulk_len = max_bulk_len
        self.max_multibulk_len = max_multibulk_len
        self.max_inline_len = max_inline_len
        # hiredis: the commands of the last chunk it parsed, returned before anything newer
        self._reader = hiredis.Reader() if fast and hiredis is not None else None
        self._ready: list[list[bytes]] = []
        self._ready_bytes = 0
        # a chunk no longer than every limit cannot hold a frame over a limit (a bulk of L
        # bytes needs more than L bytes, a multibulk of N more than N bytes)
        self._fast_max = min(max_bulk_len, max_multibulk_len)
        self.fast_chunks = 0   # chunks taken by hiredis / by the Python parser (tests, profiling)
        self.slow_chunks = 0

    def feed(self, data: bytes) -> None:
        if (self._reader is not None and data[:1] == b"*" and self._pos >= len(self._buf)
                and self._args is None and len(data) <= self._fast_max and self._fast(data, False)):
            return
        self._buf += data

    def feed_one(self, data: bytes) -> list[bytes] | None:
        """``feed(data)``, except that a chunk holding exactly one whole command, with nothing
        else buffered, is returned at once instead of queued (a client that does not
        pipeline: the common case, without a trip through the queue and ``next_command``).
        None: the chunk was fed; take its commands with ``next_command()``."""
        if (self._reader is not None and data[:1] == b"*" and self._pos >= len(self._buf)
                and self._args is None and len(data) <= self._fast_max):
            got = self._fast(data, not self._ready)
            if got is True:
                return None
            if got is not False:
                return got
        self._buf += data
        return None

    def _fast(self, data: bytes, take: bool):
        """Parse a chunk with hiredis; keep its commands only if encoding them back gives
        exactly the chunk, i.e. the chunk is a run of complete canonical frames
        ``*N\r\n($L\r\n<L bytes>\r\n)*N``. (hiredis alone is more lenient than Redis: it
        takes ``+x``, ``(1`` or ``=5\r\ntxt:x`` as a string inside an array, and skips the
        two bytes after a bulk without looking at them.) The check costs one join and one
        comparison per chunk instead of Python work per byte field.

        Returns True (the chunk's commands are queued), False (not taken: the Python parser
        must take the chunk) or, with ``take`` and a chunk of one whole command, that
        command, not queued (``feed_one``)."""
        r = self._reader
        r.feed(data)
        try:
            c = r.gets()
            if type(c) is list and not r.has_data():
                # one whole frame (a client that does not pipeline): the cheapest check
                if _encode_one(c) == data:
                    self.fast_chunks += 1
                    if take:
                        return c
                    self._ready_bytes += len(data)
                    if self._ready:
                        self._ready.insert(0, c)   # popped from the end: after the older ones
                    else:
                        self._ready = [c]
                    return True
            elif type(c) is list:
                frames = [c]
                while r.has_data():
                    c = r.gets()
                    if type(c) is not list:   # False: cut by the chunk's end; or not an array
                        break
                    frames.append(c)
                else:
                    if b"".join(map(_encode_one, frames)) == data:
                        self.fast_chunks += 1
                        self._ready_bytes += len(data)
                        frames.reverse()   # popped from the end
                        if self._ready:    # older commands not yet taken go first
                            frames.extend(self._ready)
                        self._ready = frames
                        return True
        except (hiredis.ProtocolError, TypeError):
            # TypeError: an element that is not a string (an integer, nil, a nested array)
            pass
        # not a clean run of frames: forget hiredis's state, the Python parser takes the chunk
        self._reader = hiredis.Reader()
        self.slow_chunks += 1
        return False

    def buffered(self) -> int:
        """Bytes received and not yet taken as commands (those parsed ahead by hiredis count
        whole until the last of them is taken)."""
        return len(self._buf) - self._pos + self._ready_bytes

    def next_command(self) -> list[bytes] | None:
        """Return the next command as a list of arguments, ``[]`` for an empty inline line,
        or ``None`` if more data is needed. Raises ProtocolError on garbage."""
        ready = self._ready
        if ready:
            c = ready.pop()
            if not ready:
                self._ready_bytes = 0
            return c
        buf = self._buf
        pos = self._pos
        n = len(buf)
        if pos >= n:
            if pos:
                buf.clear()
                self._pos = 0
            return None
        if n - pos < self._need:
            return None
        args = self._args
        if args is None:
            if buf[pos] != 42:  # '*'
                return self._inline()
            eol = buf.find(CRLF, pos)
            if eol < 0:
                if n - pos > 64 * 1024:
                    raise ProtocolError("Protocol error: too big mbulk count string")
                return None
            try:
                count = int(buf[pos + 1:eol])
            except ValueError:
                raise ProtocolError("Protocol error: invalid multibulk length") from None
            if count > self.max_multibulk_len:
                raise ProtocolError("Protocol error: invalid multibulk length")
            p = eol + 2
            if count <= 0:
                self._consume(p)
                return []
            args = self._args = []
            self._left = count
        else:
            p = pos
        append = args.append
        left = self._left
        while left:
            if p >= n:
                return self._park(p, 1, left)
            if buf[p] != 36:  # '$'
                raise ProtocolError(f"Protocol error: expected '$', got '{chr(buf[p])}'")
            eol = buf.find(CRLF, p)
            if eol < 0:
                if n - p > 64 * 1024:
                    raise ProtocolError("Protocol error: too big bulk count string")
                return self._park(p, n - p + 1, left)
            try:
                ln = int(buf[p + 1:eol])
            except ValueError:
                raise ProtocolError("Protocol error: invalid bulk length") from None
            if ln < 0 or ln > self.max_bulk_len:
                raise ProtocolError("Protocol error: invalid bulk length")
            start = eol + 2
            end = start + ln
            if end + 2 > n:
                return self._park(p, end + 2 - p, left)
            if buf[end] != 13 or buf[end + 1] != 10:
                raise ProtocolError("Protocol error: bulk string not terminated by CRLF")
            append(bytes(buf[start:end]))
            p = end + 2
            left -= 1
        self._args = None
        self._left = 0
        self._consume(p)
        return args

    def _park(self, p: int, need: int, left: int) -> None:
        """A multibulk is incomplete: remember where its next argument starts and how many
        bytes it needs; drop the bytes of the arguments already parsed."""
        self._left = left
        self._need = need
        if p > 65536:
            del self._buf[:p]   # O(1) for a bytearray: it moves its start
            p = 0
        self._pos = p
        return None

    def _consume(self, p: int) -> None:
        self._need = 0
        if p >= len(self._buf):
            self._buf.clear()
            self._pos = 0
        elif p > 65536:
            del self._buf[:p]
            self._pos = 0
        else:
            self._pos = p

    def _inline(self) -> list[bytes] | None:
        buf = self._buf
        pos = self._pos
        eol = buf.find(b"\n", pos)
        if eol < 0:
            if len(buf) - pos > self.max_inline_len + 1:  # + 1: the line's "\r" may be here already
                raise ProtocolError("Protocol error: too big inline request")
            return None
        line = bytes(buf[pos:eol]).rstrip(b"\r")
        if len(line) > self.max_inline_len:  # the same limit however the line was split into reads
            raise ProtocolError("Protocol error: too big inline request")
        self._consume(eol + 1)
        try:
            return split_inline(line)
        except ValueError:
            raise ProtocolError("Protocol error: unbalanced quotes in request") from None


_HEX = b"0123456789abcdefABCDEF"


def split_inline(line: bytes) -> list[bytes]:
    """Split an inline command the way redis-cli / Redis do: spaces, "double" and 'single'
    quotes, backslash escapes inside double quotes."""
    if b'"' not in line and b"'" not in line:
        return line.split()
    args: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in b" \t":
            i += 1
        if i >= n:
            return args
        cur = bytearray()
        quote = 0
        while True:
            if i >= n:
                if quote:
                    raise ValueError("unbalanced quotes")
                break
            c = line[i]
            if quote == 34:  # inside "..."
                if c == 92 and i + 1 < n:  # backslash
                    nxt = line[i + 1]
                    if nxt == 120 and i + 3 < n and line[i + 2] in _HEX and line[i + 3] in _HEX:  # \xHH
                        cur.append(int(line[i + 2:i + 4], 16))
                        i += 4
                        continue
                    cur.append({110: 10, 114: 13, 116: 9, 98: 8, 97: 7}.get(nxt, nxt))
                    i += 2
                    continue
                if c == 34:
                    if i + 1 < n and line[i + 1] not in b" \t":
                        raise ValueError("closing quote must be followed by a space")
                    i += 1
                    break
                cur.append(c)
            elif quote == 39:  # inside '...'
                if c == 92 and i + 1 < n and line[i + 1] == 39:
                    cur.append(39)
                    i += 2
                    continue
                if c == 39:
                    if i + 1 < n and line[i + 1] not in b" \t":
                        raise ValueError("closing quote must be followed by a space")
                    i += 1
                    break
                cur.append(c)
            else:
                if c in b" \t":
                    break
                if c in (34, 39) and not cur:
                    quote = c
                    i += 1
                    continue
                cur.append(c)
            i += 1
        args.append(bytes(cur))


# ---------------------------------------------------------------------------- encoding

def _fmt_double(v: float) -> bytes:
    if v != v:
        return b"nan"
    if v == float("inf"):
        return b"inf"
    if v == float("-inf"):
        return b"-inf"
    return format_float(v).encode()


def format_float(v: float) -> str:
    """Format a float as Redis does for INCRBYFLOAT / HINCRBYFLOAT (%.17Lg, trimmed)."""
    if v == int(v) and abs(v) < 1e17:
        return str(int(v))
    s = repr(v)
    if "e" in s or "E" in s:
        s = "%.17g" % v
        if "e" in s:
            # Redis prints long doubles in plain notation
            s = format(v, ".17f").rstrip("0").rstrip(".")
    return s


def encode(reply, proto: int = 2) -> bytes:
    """Encode one reply. ``bytes`` -> bulk, ``int`` -> integer, ``None`` -> null,
    ``list``/``tuple`` -> array, ``float`` -> double (RESP3) or bulk (RESP2), plus the reply
    classes above. ``str`` is accepted as a bulk string (utf-8)."""
    t = type(reply)   # the replies of almost every command first, without the list and join
    if t is bytes:
        return b"$%d\r\n%s\r\n" % (len(reply), reply)
    if reply is OK:
        return _OK_BYTES
    if t is int:
        return b":%d\r\n" % reply
    out: list[bytes] = []
    _encode(reply, proto, out)
    return b"".join(out)


def _encode(r, proto: int, out: list) -> None:
    t = type(r)
    if t is bytes:
        out.append(b"$%d\r\n%s\r\n" % (len(r), r))
    elif t is Simple:
        if r is OK:
            out.append(_OK_BYTES)
        else:
            out.append(b"+" + r.text.encode("utf-8", "surrogateescape") + CRLF)
    elif t is int:
        out.append(b":%d\r\n" % r)
    elif r is None:
        out.append(b"_\r\n" if proto == 3 else b"$-1\r\n")
    elif t is list or t is tuple:
        out.append(b"*%d\r\n" % len(r))
        for x in r:
            _encode(x, proto, out)
    elif t is Error:
        # as Redis: trim CR/LF at both ends, turn the ones inside into spaces; bytes that are
        # not UTF-8 (kept as surrogates by the error's author) go out unchanged
        text = r.text.strip("\r\n").replace("\r", " ").replace("\n", " ")
        out.append(b"-" + text.encode("utf-8", "surrogateescape") + CRLF)
    elif t is bool:
        if proto == 3:
            out.append(b"#t\r\n" if r else b"#f\r\n")
        else:
            out.append(b":1\r\n" if r else b":0\r\n")
    elif t is float:
        s = _fmt_double(r)
        if proto == 3:
            out.append(b"," + s + CRLF)
        else:
            out.append(b"$%d\r\n%s\r\n" % (len(s), s))
    elif t is str:
        b = r.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    elif t is bytearray:
        _encode(bytes(r), proto, out)
    elif t is Map:
        if proto == 3:
            out.append(b"%%%d\r\n" % len(r.items))
        else:
            out.append(b"*%d\r\n" % (2 * len(r.items)))
        for k, v in r.items:
            _encode(k, proto, out)
            _encode(v, proto, out)
    elif t is SetReply:
        out.append((b"~%d\r\n" if proto == 3 else b"*%d\r\n") % len(r.items))
        for x in r.items:
            _encode(x, proto, out)
    elif t is Verbatim:
        b = r.text.encode()
        if proto == 3:
            out.append(b"=%d\r\ntxt:%s\r\n" % (len(b) + 4, b))
        else:
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    elif t is Raw:
        out.append(r.data)
    elif r is NULL_ARRAY:
        out.append(b"_\r\n" if proto == 3 else b"*-1\r\n")
    else:
        raise TypeError(f"cannot encode reply of type {t.__name__}")


def encode_command(*args) -> bytes:
    """Encode a command as a RESP multibulk (client side)."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = str(a).encode()
        elif isinstance(a, float):
            a = repr(a).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(parts)


class ReplyParser:
    """Parses replies (RESP2 and RESP3) into Python values; errors become ``Error``.
    Used by our client, the peer tests and the CLI. Sans-IO like RequestParser."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_reply(self):
        """Return ``(True, value)`` for a complete reply or ``(False, None)``."""
        res = self._parse(self._pos)
        if res is None:
            return False, None
        value, p = res
        if p >= len(self._buf):
            self._buf.clear()
            self._pos = 0
        else:
            self._pos = p
        return True, value

    def _line(self, p: int):
        eol = self._buf.find(CRLF, p)
        if eol < 0:
            return None
        return bytes(self._buf[p + 1:eol]), eol + 2

    def _parse(self, p: int):
        buf = self._buf
        if p >= len(buf):
            return None
        t = buf[p]
        got = self._line(p)
        if got is None:
            return None
        line, q = got
        if t in (43,):  # +
            return Simple(line.decode()), q
        if t == 45:  # -
            return Error(line.decode(errors="replace")), q
        if t == 58:  # :
            return int(line), q
        if t in (36, 61):  # $ or =
            ln = int(line)
            if ln < 0:
                return None, q
            if len(buf) < q + ln + 2:
                return None
            data = bytes(buf[q:q + ln])
            if t == 61:
                data = data[4:]
            return data, q + ln + 2
        if t in (42, 126, 62):  # * ~ >
            ln = int(line)
            if ln < 0:
                return None, q
            items = []
            for _ in range(ln):
                r = self._parse(q)
                if r is None:
                    return None
                items.append(r[0])
                q = r[1]
            return items, q
        if t == 37:  # %
            ln = int(line)
            items = []
            for _ in range(2 * ln):
                r = self._parse(q)
                if r is None:
                    return None
                items.append(r[0])
                q = r[1]
            return dict(zip(items[::2], items[1::2], strict=True)), q
        if t == 95:  # _
            return None, q
        if t == 44:  # ,
            return float(line), q
        if t == 35:  # #
            return line == b"t", q
        if t == 40:  # ( big number
            return int(line), q
        raise ProtocolError(f"unknown reply type byte {chr(t)!r}")
