"""Connection-level commands: HELLO, CLIENT, MULTI/EXEC/WATCH, INFO, CONFIG, COMMAND, ...

Owns: commands that concern the connection or the server rather than the data, with
Redis 7.2's replies and error texts (arity and unknown-subcommand errors included).
Data commands are in core/commands.py; the node dispatches both.

A handler here is ``fn(node, conn, args)`` and replies through ``conn.reply_now``. The ones
registered with ``@conn_command`` get Redis's generic checks first (arity, and for the
container commands CLIENT / CONFIG / COMMAND / MEMORY the subcommand and its arity), the
same checks ``queue_error`` applies when such a command is queued inside MULTI.
"""

from __future__ import annotations

import os
import time
from collections import deque

from ..core import commands as C
from ..core.resp import NULL_ARRAY, OK, PONG, Map, Raw, Simple, Verbatim, encode  # noqa: F401
from .commandinfo import CONNECTION_COMMANDS, CONTAINERS, command_reply, subcommand_arity, unknown_subcommand
from .config import coerce, normalise_key

REDIS_COMPAT_VERSION = "7.2.4"


# ---------------------------------------------------------------------------- helpers

def _unknown(args: list[bytes]) -> str:
    """Redis's text for an unknown command: the name and the first arguments, quoted, cut
    at 128 bytes (and each at a NUL byte, as C's %s does)."""
    name = C._cstr(args[0], 128)
    rest = ""
    for a in args[1:]:
        if len(rest.encode("utf-8", "surrogateescape")) >= 128:
            break
        room = 128 - len(rest.encode("utf-8", "surrogateescape"))
        rest += f"'{C._cstr(a, room)}' "
    return f"ERR unknown command '{name}', with args beginning with: {rest}"


def queue_error(args: list[bytes]) -> str | None:
    """The error Redis gives, before running or queueing it, to a connection-level command
    with the wrong number of arguments or an unknown subcommand; None if it is well formed."""
    name = args[0].lower().decode("utf-8", "surrogateescape")
    spec = CONNECTION_COMMANDS.get(name)
    if spec is None:
        return None
    n = len(args)
    if name in CONTAINERS and n >= 2:
        sub = args[1].lower().decode("utf-8", "surrogateescape")
        arity = subcommand_arity(name, sub)
        if arity is None:
            return unknown_subcommand(args)
        if not C.arity_ok_n(arity, n):
            return C.arity_error(f"{name}|{sub}")
        return None
    if not C.arity_ok_n(spec[0], n):
        return C.arity_error(name)
    return None


# (name as sent, argument count) of connection-level commands that queue_error passed: the
# same shape passes again, so WAIT and the like skip the lookup and arity work per call
_WELL_FORMED: set = set()
_CONTAINERS_B = frozenset(c.encode() for c in CONTAINERS)


def conn_command(fn):
    """Wrap a handler with queue_error's checks. An arity error of EXEC / DISCARD / MULTI /
    WATCH sent inside MULTI also dooms the transaction (EXECABORT), as in Redis."""

    def checked(node, conn, args):
        shape = (args[0], len(args))
        if shape in _WELL_FORMED:
            return fn(node, conn, args)
        err = queue_error(args)
        if err is None and args[0].lower() not in _CONTAINERS_B:
            # (a container's subcommand decides: those are checked every time)
            if len(_WELL_FORMED) >= 1024:
                _WELL_FORMED.clear()
            _WELL_FORMED.add(shape)
        if err is not None:
            if conn.multi is not None:
                conn.multi_error = True
            raise C.CommandError(err)
        return fn(node, conn, args)

    checked.__name__ = fn.__name__
    checked.__doc__ = fn.__doc__
    checked.unchecked = fn
    return checked


class _ConnCmd:
    """Adapter that runs a connection-level command inside EXEC and captures its reply."""

    is_write = False
    first_key = 0

    def __init__(self, node, conn) -> None:
        self.node = node
        self.conn = conn

    def keys(self, args):
        return []

    def fn(self, ctx, args):
        captured = []
        c = self.conn
        saved_out, saved_wait = c.out, c.waiting
        c.out = captured
        c.waiting = deque()
        try:
            _CONN_COMMANDS[args[0].upper()](self.node, c, args)
        finally:
            c.out, c.waiting = saved_out, saved_wait
        return Raw(b"".join(captured))


def _reply(conn, r) -> None:
    conn.reply_now(encode(r, conn.proto))


def _valid_name(b: bytes) -> bool:
    """Client names and CLIENT SETINFO values: printable ASCII without spaces."""
    return all(33 <= c <= 126 for c in b)


# ---------------------------------------------------------------------------- connection commands

@conn_command
def cmd_ping(node, conn, args):
    if len(args) > 2:
        raise C.CommandError(C.arity_error("ping"))
    _reply(conn, PONG if len(args) == 1 else args[1])


@conn_command
def cmd_echo(node, conn, args):
    _reply(conn, args[1])


@conn_command
def cmd_hello(node, conn, args):
    proto = 0
    i = 1
    if len(args) > 1:
        proto = C.parse_int(args[1], "ERR Protocol version is not an integer or out of range")
        if proto not in (2, 3):
            raise C.CommandError("NOPROTO unsupported protocol version")
        i = 2
    user = name = None
    while i < len(args):
        opt = args[i].upper()
        more = len(args) - 1 - i
        if opt == b"AUTH" and more >= 2:
            user = args[i + 1]
            i += 3
        elif opt == b"SETNAME" and more >= 1:
            name = args[i + 1]
            if not _valid_name(name):
                raise C.CommandError("ERR Client names cannot contain spaces, newlines or special characters.")
            i += 2
        else:
            raise C.CommandError(f"ERR Syntax error in HELLO option '{C._cstr(args[i])}'")
    if user is not None and user != b"default":
        # the only user is "default", with no password (Redis's default: "on nopass")
        raise C.CommandError("WRONGPASS invalid username-password pair or user is disabled.")
    if name is not None:
        conn.name = name
    if proto:
        conn.proto = proto
    _reply(conn, Map([
        (b"server", b"redis"), (b"version", REDIS_COMPAT_VERSION.encode()), (b"proto", conn.proto),
        (b"id", conn.id), (b"mode", b"standalone"),
        (b"role", b"master" if node.role == "leader" else b"replica"), (b"modules", []),
    ]))


@conn_command
def cmd_select(node, conn, args):
    db = C.parse_int(args[1])
    if db != 0:
        # replikv has one database (Redis with ``databases 1`` answers the same)
        raise C.CommandError("ERR DB index is out of range")
    _reply(conn, OK)


@conn_command
def cmd_quit(node, conn, args):
    _reply(conn, OK)
    conn.close_after_flush()


@conn_command
def cmd_reset(node, conn, args):
    conn.multi = None
    conn.multi_error = False
    conn.unwatch()
    conn.proto = 2
    conn.name = b""
    conn.no_evict = conn.no_touch = False
    _reply(conn, Simple("RESET"))


@conn_command
def cmd_multi(node, conn, args):
    if conn.multi is not None:
        raise C.CommandError("ERR MULTI calls can not be nested")
    conn.multi = []
    conn.multi_error = False
    _reply(conn, OK)


@conn_command
def cmd_exec(node, conn, args):
    if conn.multi is None:
        raise C.CommandError("ERR EXEC without MULTI")
    node.exec_multi(conn)


@conn_command
def cmd_discard(node, conn, args):
    if conn.multi is None:
        raise C.CommandError("ERR DISCARD without MULTI")
    conn.multi = None
    conn.multi_error = False
    conn.unwatch()
    _reply(conn, OK)


@conn_command
def cmd_watch(node, conn, args):
    if conn.multi is not None:
        raise C.CommandError("ERR WATCH inside MULTI is not allowed")
    ks = node.storage.ks
    for k in args[1:]:
        if k in conn.watched:
            continue
        conn.watched.append(k)
        ks.watchers.setdefault(k, set()).add(conn.watch)
    _reply(conn, OK)


@conn_command
def cmd_unwatch(node, conn, args):
    conn.unwatch()
    _reply(conn, OK)


@conn_command
def cmd_info(node, conn, args):
    section = " ".join(a.decode("utf-8", "replace") for a in args[1:]) or None
    _reply(conn, Verbatim(node.info(section)))


@conn_command
def cmd_time(node, conn, args):
    ms = node.clock.now_ms()
    _reply(conn, [b"%d" % (ms // 1000), b"%d" % ((ms % 1000) * 1000)])


@conn_command
def cmd_lastsave(node, conn, args):
    _reply(conn, node.last_save_time)


@conn_command
def cmd_bgsave(node, conn, args):
    if len(args) > 2 or (len(args) == 2 and args[1].upper() != b"SCHEDULE"):
        raise C.CommandError(C.SYNTAX)
    if node.start_snapshot():
        _reply(conn, Simple("Background saving started"))
    else:
        raise C.CommandError("ERR Background save already in progress")


@conn_command
def cmd_save(node, conn, args):
    # SAVE would block every client; replikv's snapshot is always a background fork
    if node.start_snapshot():
        _reply(conn, OK)
    else:
        raise C.CommandError("ERR Background save already in progress")


@conn_command
def cmd_wait(node, conn, args):
    n = C.parse_int(args[1])
    t = C.parse_int(args[2])
    if t < 0:
        raise C.CommandError("ERR timeout is negative")
    r = node.repl
    if r is not None and node.role == "leader":
        r.wait_replicas(conn, n, t)     # Node.cmd_wait's common case, without the extra call
    else:
        node.cmd_wait(conn, n, t)


@conn_command
def cmd_debug(node, conn, args):
    if args[1].upper() == b"DIGEST" and len(args) == 2:
        _reply(conn, node.digest().encode())
    elif args[1].upper() == b"SLEEP" and len(args) == 3:
        try:
            secs = float(args[2])
        except ValueError:
            raise C.CommandError("ERR value is not a valid float") from None
        time.sleep(min(max(secs, 0.0), 10.0))
        _reply(conn, OK)
    else:
        raise C.CommandError("ERR DEBUG subcommand not supported (try DEBUG DIGEST)")


@conn_command
def cmd_digest(node, conn, args):
    _reply(conn, node.digest().encode())


@conn_command
def cmd_role(node, conn, args):
    _reply(conn, node.role_reply())


@conn_command
def cmd_command(node, conn, args):
    _reply(conn, command_reply(args))


_MEMORY_HELP = [
    "MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "USAGE <key> [SAMPLES <count>]",
    "    Return memory in bytes used by <key> and its value. Nested values are",
    "    sampled up to <count> times (default: 5, 0 means sample all).",
    "HELP",
    "    Print this help.",
]


@conn_command
def cmd_memory(node, conn, args):
    # MEMORY USAGE is a data command (core/commands.py); what reaches here is HELP
    _reply(conn, [Simple(line) for line in _MEMORY_HELP])


# ---------------------------------------------------------------------------- CLIENT

_CLIENT_HELP = [
    "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GETNAME",
    "    Return the name of the current connection.",
    "ID",
    "    Return the ID of the current connection.",
    "INFO",
    "    Return information about the current client connection.",
    "KILL <ip:port>",
    "    Kill connection made from <ip:port>.",
    "KILL <option> <value> [<option> <value> [...]]",
    "    Kill connections. Options are:",
    "    * ADDR (<ip:port>|<unixsocket>:0)",
    "      Kill connections made from the specified address",
    "    * LADDR (<ip:port>|<unixsocket>:0)",
    "      Kill connections made to specified local address",
    "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
    "      Kill connections by type.",
    "    * USER <username>",
    "      Kill connections authenticated by <username>.",
    "    * SKIPME (YES|NO)",
    "      Skip killing current connection (default: yes).",
    "    * ID <client-id>",
    "      Kill connections by client id.",
    "LIST [options ...]",
    "    Return information about client connections. Options:",
    "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
    "      Return clients of specified type.",
    "NO-EVICT (ON|OFF)",
    "    Protect current client connection from eviction.",
    "NO-TOUCH (ON|OFF)",
    "    Will not touch LRU/LFU stats when this mode is on.",
    "SETNAME <name>",
    "    Assign the name <name> to the current connection.",
    "SETINFO <option> <value>",
    "    Set client meta attr. Options are:",
    "    * LIB-NAME: the client lib name.",
    "    * LIB-VER: the client lib version.",
    "HELP",
    "    Print this help.",
]

_CLIENT_TYPES = {b"normal": "normal", b"slave": "replica", b"replica": "replica", b"master": "master",
                 b"pubsub": "pubsub"}


def _client_type(b: bytes) -> str:
    t = _CLIENT_TYPES.get(b.lower())
    if t is None:
        raise C.CommandError(f"ERR Unknown client type '{C._cstr(b)}'")
    return t


def client_info_line(c, me, cur_cmd: str, now: float | None = None) -> str:
    """One line of CLIENT LIST / CLIENT INFO, with Redis 7.2's fields in Redis's order."""
    now = time.time() if now is None else now
    flags = ""
    if c.multi is not None:
        flags += "x"
    if c.watched and c.watch.dirty:
        flags += "d"
    if c.closing:
        flags += "c"
    if getattr(c, "no_evict", False):
        flags += "e"
    if getattr(c, "no_touch", False):
        flags += "T"
    fd = -1
    if c.transport is not None:
        sock = c.transport.get_extra_info("socket")
        if sock is not None:
            try:
                fd = sock.fileno()
            except (OSError, ValueError):
                fd = -1
    qbuf = c.parser.buffered()
    omem = sum(len(x) for x in c.out)
    cmd = getattr(c, "last_cmd", "NULL") if c is not me else cur_cmd
    name = c.name.decode("utf-8", "replace")
    return (f"id={c.id} addr={c.addr} laddr={c.laddr} fd={fd} name={name} age={int(now - c.created)} "
            f"idle={0 if c is me else int(now - c.last_cmd_time)} flags={flags or 'N'} db=0 sub=0 psub=0 "
            f"ssub=0 multi={-1 if c.multi is None else len(c.multi)} qbuf={qbuf} qbuf-free=0 argv-mem=0 "
            f"multi-mem=0 rbs=0 rbp=0 obl=0 oll={len(c.out)} omem={omem} tot-mem={qbuf + omem} "
            f"events={'rw' if c.out else 'r'} cmd={cmd} user=default redir=-1 resp={c.proto} "
            f"lib-name={c.lib_name.decode('utf-8', 'replace')} lib-ver={c.lib_ver.decode('utf-8', 'replace')}")


@conn_command
def cmd_client(node, conn, args):
    sub = args[1].upper()
    n = len(args)
    if sub == b"SETNAME":
        if not _valid_name(args[2]):
            raise C.CommandError("ERR Client names cannot contain spaces, newlines or special characters.")
        conn.name = args[2]
        _reply(conn, OK)
    elif sub == b"GETNAME":
        _reply(conn, conn.name or None)
    elif sub == b"ID":
        _reply(conn, conn.id)
    elif sub == b"SETINFO":
        attr = args[2].upper()
        if attr not in (b"LIB-NAME", b"LIB-VER"):
            raise C.CommandError(f"ERR Unrecognized option '{C._cstr(args[2])}'")
        if not _valid_name(args[3]):
            raise C.CommandError(f"ERR {C._cstr(args[2])} cannot contain spaces, newlines or special characters.")
        if attr == b"LIB-NAME":
            conn.lib_name = args[3]
        else:
            conn.lib_ver = args[3]
        _reply(conn, OK)
    elif sub == b"LIST":
        clients = list(node.clients.values())
        if n == 2:
            pass
        elif n == 4 and args[2].upper() == b"TYPE":
            t = _client_type(args[3])
            clients = clients if t == "normal" else []
        elif n > 3 and args[2].upper() == b"ID":
            picked = []
            for a in args[3:]:
                cid = C.parse_int(a, "ERR Invalid client ID")
                c = node.clients.get(cid)
                if c is not None:
                    picked.append(c)
            clients = picked
        else:
            raise C.CommandError(C.SYNTAX)
        now = time.time()
        _reply(conn, Verbatim("".join(client_info_line(c, conn, "client|list", now) + "\n" for c in clients)))
    elif sub == b"INFO":
        _reply(conn, Verbatim(client_info_line(conn, conn, "client|info") + "\n"))
    elif sub == b"KILL":
        _client_kill(node, conn, args)
    elif sub in (b"NO-EVICT", b"NO-TOUCH"):
        v = args[2].upper()
        if v not in (b"ON", b"OFF"):
            raise C.CommandError(C.SYNTAX)
        setattr(conn, "no_evict" if sub == b"NO-EVICT" else "no_touch", v == b"ON")
        _reply(conn, OK)
    elif sub == b"HELP":
        _reply(conn, [Simple(line) for line in _CLIENT_HELP])
    else:  # pragma: no cover - queue_error refuses every other subcommand
        raise C.CommandError(unknown_subcommand(args))


def _client_kill(node, conn, args) -> None:
    n = len(args)
    if n == 3:
        # old form: CLIENT KILL addr (may kill the caller); replies OK or an error
        addr = C._cstr(args[2])
        targets = [c for c in node.clients.values() if c.addr == addr]
        if not targets:
            raise C.CommandError("ERR No such client")
        for c in targets:
            c.close_after_flush()
        _reply(conn, OK)
        return
    cid = addr = laddr = ctype = None
    skipme = True
    i = 2
    while i < n:
        opt = args[i].upper()
        if i + 1 >= n:
            raise C.CommandError(C.SYNTAX)
        val = args[i + 1]
        if opt == b"ID":
            cid = C.parse_int(val, "ERR client-id should be greater than 0")
            if cid < 1:
                raise C.CommandError("ERR client-id should be greater than 0")
        elif opt == b"TYPE":
            ctype = _client_type(val)
        elif opt == b"ADDR":
            addr = C._cstr(val)
        elif opt == b"LADDR":
            laddr = C._cstr(val)
        elif opt == b"USER":
            if val != b"default":
                raise C.CommandError(f"ERR No such user '{C._cstr(val)}'")
        elif opt == b"SKIPME":
            if val.lower() not in (b"yes", b"no"):
                raise C.CommandError(C.SYNTAX)
            skipme = val.lower() == b"yes"
        else:
            raise C.CommandError(C.SYNTAX)
        i += 2
    killed = 0
    for c in list(node.clients.values()):
        if (cid is not None and c.id != cid) or (addr is not None and c.addr != addr) or \
                (laddr is not None and c.laddr != laddr) or (ctype is not None and ctype != "normal") or \
                (skipme and c is conn):
            continue
        c.close_after_flush()
        killed += 1
    _reply(conn, killed)


# ---------------------------------------------------------------------------- CONFIG

# Redis parameter names that map onto replikv settings
_CONFIG_ALIASES = {"appendfsync": "fsync", "maxclients": "max_clients", "proto-max-bulk-len": "max_bulk_len",
                   "hz": "active_expire_hz"}
_CONFIG_FIXED = ("appendonly", "save", "databases", "maxmemory", "port", "bind", "dir")

_CONFIG_HELP = [
    "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GET <pattern>",
    "    Return parameters matching the glob-like <pattern> and their values.",
    "SET <directive> <value>",
    "    Set the configuration <directive> to <value>.",
    "RESETSTAT",
    "    Reset statistics reported by the INFO command.",
    "REWRITE",
    "    Rewrite the configuration file.",
    "HELP",
    "    Print this help.",
]


def _config_view(node) -> dict:
    """Every parameter CONFIG GET knows, name -> value: replikv's settings (dashed names),
    the Redis names aliased to them, and a few fixed Redis ones."""
    cfg = node.config
    v = {k.replace("_", "-"): val for k, val in cfg.to_dict().items()}
    for alias, field in _CONFIG_ALIASES.items():
        v[alias] = getattr(cfg, field)
    v.update({"appendonly": "yes", "save": "", "databases": 1, "maxmemory": 0, "port": cfg.port,
              "bind": cfg.host, "dir": os.path.abspath(cfg.data_dir)})
    return v


def _config_value(v) -> bytes:
    if isinstance(v, bool):
        return b"yes" if v else b"no"
    return str(v).encode()


@conn_command
def cmd_config(node, conn, args):
    sub = args[1].upper()
    cfg = node.config
    if sub == b"GET":
        values = _config_view(node)
        items = []
        seen = set()
        for pat in args[2:]:
            if not any(ch in pat for ch in b"[*?"):
                # an exact name answers under the name as given (Redis's case-insensitive lookup)
                k = pat.decode("utf-8", "surrogateescape").lower()
                if k in values and k not in seen:
                    seen.add(k)
                    items.append((pat, _config_value(values[k])))
                continue
            m = C.glob_matcher(pat, nocase=True).match
            for k, v in values.items():
                if k not in seen and m(k.encode()):
                    seen.add(k)
                    items.append((k.encode(), _config_value(v)))
        _reply(conn, Map(items))
    elif sub == b"SET":
        if len(args) % 2 != 0:
            raise C.CommandError(C.arity_error("config|set"))
        changes = {}
        for i in range(2, len(args), 2):
            raw = C._cstr(args[i])
            low = raw.lower()
            name = _CONFIG_ALIASES.get(low) or normalise_key(low)
            if name not in cfg.RUNTIME:
                if low in _CONFIG_FIXED or normalise_key(low) in cfg.to_dict():
                    raise C.CommandError(
                        f"ERR CONFIG SET failed (possibly related to argument '{raw}') - can't set immutable config")
                raise C.CommandError(f"ERR Unknown option or number of arguments for CONFIG SET - '{raw}'")
            if name in changes:
                raise C.CommandError(f"ERR CONFIG SET failed (possibly related to argument '{raw}') - duplicate parameter")
            try:
                changes[name] = coerce(name, args[i + 1].decode("utf-8", "replace"))
            except Exception as e:  # noqa: BLE001 - any conversion failure is the client's
                raise C.CommandError(f"ERR CONFIG SET failed (possibly related to argument '{raw}') - {e}") from None
        old = {k: getattr(cfg, k) for k in changes}
        for k, v in changes.items():
            setattr(cfg, k, v)
        try:
            cfg.validate()
        except Exception as e:  # noqa: BLE001
            for k, v in old.items():
                setattr(cfg, k, v)
            raise C.CommandError(f"ERR CONFIG SET failed - {e}") from None
        node.config_changed(old)
        _reply(conn, OK)
    elif sub == b"RESETSTAT":
        node.stats_commands = 0
        _reply(conn, OK)
    elif sub == b"REWRITE":
        raise C.CommandError("ERR The server is running without a config file")
    elif sub == b"HELP":
        _reply(conn, [Simple(line) for line in _CONFIG_HELP])
    else:  # pragma: no cover - queue_error refuses every other subcommand
        raise C.CommandError(unknown_subcommand(args))


_CONN_COMMANDS = {
    b"PING": cmd_ping, b"ECHO": cmd_echo, b"HELLO": cmd_hello, b"SELECT": cmd_select,
    b"QUIT": cmd_quit, b"RESET": cmd_reset, b"MULTI": cmd_multi, b"EXEC": cmd_exec,
    b"DISCARD": cmd_discard, b"WATCH": cmd_watch, b"UNWATCH": cmd_unwatch, b"INFO": cmd_info,
    b"TIME": cmd_time, b"LASTSAVE": cmd_lastsave, b"BGSAVE": cmd_bgsave, b"SAVE": cmd_save,
    b"WAIT": cmd_wait, b"DEBUG": cmd_debug, b"CLIENT": cmd_client, b"CONFIG": cmd_config,
    b"COMMAND": cmd_command, b"ROLE": cmd_role, b"DIGEST": cmd_digest, b"MEMORY": cmd_memory,
}
# run at once even inside MULTI (not queued)
_TX_CONTROL = {b"EXEC", b"DISCARD", b"MULTI", b"WATCH", b"QUIT", b"RESET"}
# refused inside MULTI ("Command not allowed inside a transaction")
_NOT_IN_MULTI = {b"SUBSCRIBE", b"WAIT", b"SAVE", b"BGSAVE"}
