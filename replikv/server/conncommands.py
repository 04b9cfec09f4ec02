"""Connection-level commands: HELLO, CLIENT, MULTI/EXEC/WATCH, INFO, CONFIG, COMMAND, ...

Owns: commands that concern the connection or the server rather than the data.
Data commands are in core/commands.py; the node dispatches both.
"""

from __future__ import annotations

import os
import time

from ..core import commands as C
from ..core.resp import NULL_ARRAY, OK, PONG, Map, Raw, Simple, Verbatim, encode  # noqa: F401
from .config import coerce, normalise_key

REDIS_COMPAT_VERSION = "7.2.4"


# ---------------------------------------------------------------------------- helpers

def _unknown(args: list[bytes]) -> str:
    name = args[0].decode("utf-8", "replace")
    rest = " ".join(f"'{a.decode('utf-8', 'replace')[:128]}'" for a in args[1:])
    return f"ERR unknown command '{name[:128]}', with args beginning with: {rest}" + (" " if rest else "")


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
        from collections import deque

        c.waiting = deque()
        try:
            _CONN_COMMANDS[args[0].upper()](self.node, c, args)
        finally:
            c.out, c.waiting = saved_out, saved_wait
        return Raw(b"".join(captured))




# ---------------------------------------------------------------------------- connection commands

def _reply(conn, r) -> None:
    conn.reply_now(encode(r, conn.proto))


def cmd_ping(node, conn, args):
    if len(args) > 2:
        raise C.CommandError(C.arity_error("ping"))
    _reply(conn, PONG if len(args) == 1 else args[1])


def cmd_echo(node, conn, args):
    if len(args) != 2:
        raise C.CommandError(C.arity_error("echo"))
    _reply(conn, args[1])


def cmd_hello(node, conn, args):
    proto = conn.proto
    i = 1
    if len(args) > 1:
        try:
            proto = int(args[1])
        except ValueError:
            raise C.CommandError("ERR Protocol version is not an integer or out of range") from None
        if proto not in (2, 3):
            raise C.CommandError("NOPROTO unsupported protocol version")
        i = 2
    while i < len(args):
        opt = args[i].upper()
        if opt == b"AUTH" and i + 2 < len(args):
            i += 3
        elif opt == b"SETNAME" and i + 1 < len(args):
            conn.name = args[i + 1]
            i += 2
        else:
            raise C.CommandError(f"ERR Syntax error in HELLO option '{args[i].decode('utf-8', 'replace')}'")
    conn.proto = proto
    _reply(conn, Map([
        ("server", "redis"), ("version", REDIS_COMPAT_VERSION), ("proto", proto), ("id", conn.id),
        ("mode", "standalone"), ("role", "master" if node.role == "leader" else "replica"),
        ("modules", []),
    ]))


def cmd_select(node, conn, args):
    if len(args) != 2:
        raise C.CommandError(C.arity_error("select"))
    try:
        db = int(args[1])
    except ValueError:
        raise C.CommandError("ERR value is not an integer or out of range") from None
    if db != 0:
        raise C.CommandError("ERR DB index is out of range")
    _reply(conn, OK)


def cmd_quit(node, conn, args):
    _reply(conn, OK)
    conn.close_after_flush()


def cmd_reset(node, conn, args):
    conn.multi = None
    conn.multi_error = False
    conn.unwatch()
    conn.proto = 2
    conn.name = b""
    _reply(conn, Simple("RESET"))


def cmd_multi(node, conn, args):
    if len(args) != 1:
        raise C.CommandError(C.arity_error("multi"))
    if conn.multi is not None:
        raise C.CommandError("ERR MULTI calls can not be nested")
    conn.multi = []
    conn.multi_error = False
    _reply(conn, OK)


def cmd_exec(node, conn, args):
    if len(args) != 1:
        raise C.CommandError(C.arity_error("exec"))
    if conn.multi is None:
        raise C.CommandError("ERR EXEC without MULTI")
    node.exec_multi(conn)


def cmd_discard(node, conn, args):
    if len(args) != 1:
        raise C.CommandError(C.arity_error("discard"))
    if conn.multi is None:
        raise C.CommandError("ERR DISCARD without MULTI")
    conn.multi = None
    conn.multi_error = False
    conn.unwatch()
    _reply(conn, OK)


def cmd_watch(node, conn, args):
    if len(args) < 2:
        raise C.CommandError(C.arity_error("watch"))
    if conn.multi is not None:
        raise C.CommandError("ERR WATCH inside MULTI is not allowed")
    ks = node.storage.ks
    for k in args[1:]:
        if k in conn.watched:
            continue
        conn.watched.append(k)
        ks.watchers.setdefault(k, set()).add(conn.watch)
    _reply(conn, OK)


def cmd_unwatch(node, conn, args):
    if len(args) != 1:
        raise C.CommandError(C.arity_error("unwatch"))
    conn.unwatch()
    _reply(conn, OK)


def cmd_info(node, conn, args):
    section = " ".join(a.decode("utf-8", "replace") for a in args[1:]) or None
    _reply(conn, Verbatim(node.info(section)))


def cmd_dbsize_conn(node, conn, args):  # pragma: no cover - DBSIZE is a data command
    raise C.CommandError("ERR internal")


def cmd_time(node, conn, args):
    ms = node.clock.now_ms()
    _reply(conn, [b"%d" % (ms // 1000), b"%d" % ((ms % 1000) * 1000)])


def cmd_lastsave(node, conn, args):
    _reply(conn, node.last_save_time)


def cmd_bgsave(node, conn, args):
    if node.start_snapshot():
        _reply(conn, Simple("Background saving started"))
    else:
        raise C.CommandError("ERR Background save already in progress")


def cmd_save(node, conn, args):
    # SAVE would block every client; replikv's snapshot is always a background fork
    if node.start_snapshot():
        _reply(conn, OK)
    else:
        raise C.CommandError("ERR Background save already in progress")


def cmd_wait(node, conn, args):
    if len(args) != 3:
        raise C.CommandError(C.arity_error("wait"))
    C.parse_int(args[1])
    t = C.parse_int(args[2])
    if t < 0:
        raise C.CommandError("ERR timeout is negative")
    node.cmd_wait(conn, args)


def cmd_debug(node, conn, args):
    if len(args) >= 2 and args[1].upper() == b"DIGEST":
        _reply(conn, node.digest().encode())
    elif len(args) >= 2 and args[1].upper() == b"SLEEP" and len(args) == 3:
        time.sleep(min(float(args[2]), 10.0))
        _reply(conn, OK)
    else:
        raise C.CommandError("ERR DEBUG subcommand not supported (try DEBUG DIGEST)")


def cmd_digest(node, conn, args):
    _reply(conn, node.digest().encode())


def cmd_client(node, conn, args):
    if len(args) < 2:
        raise C.CommandError(C.arity_error("client"))
    sub = args[1].upper()
    if sub == b"SETNAME" and len(args) == 3:
        if any(c <= 32 or c > 126 for c in args[2]):
            raise C.CommandError("ERR Client names cannot contain spaces, newlines or special characters.")
        conn.name = args[2]
        _reply(conn, OK)
    elif sub == b"GETNAME" and len(args) == 2:
        _reply(conn, conn.name or None)
    elif sub == b"ID" and len(args) == 2:
        _reply(conn, conn.id)
    elif sub == b"SETINFO" and len(args) == 4:
        attr = args[2].upper()
        if attr == b"LIB-NAME":
            conn.lib_name = args[3]
        elif attr == b"LIB-VER":
            conn.lib_ver = args[3]
        else:
            raise C.CommandError(f"ERR Unrecognized option '{args[2].decode('utf-8', 'replace')}'")
        _reply(conn, OK)
    elif sub in (b"LIST", b"INFO"):
        clients = [conn] if sub == b"INFO" else list(node.clients.values())
        now = time.time()
        lines = []
        for c in clients:
            lines.append(
                f"id={c.id} addr={c.addr} laddr={c.laddr} fd=-1 name={c.name.decode('utf-8', 'replace')} "
                f"age={int(now - c.created)} idle={int(now - c.last_cmd_time)} flags=N db=0 sub=0 psub=0 "
                f"ssub=0 multi={-1 if c.multi is None else len(c.multi)} watch={len(c.watched)} "
                f"qbuf={c.parser.buffered()} omem=0 events=r cmd=client|{sub.decode().lower()} user=default "
                f"lib-name={c.lib_name.decode('utf-8', 'replace')} lib-ver={c.lib_ver.decode('utf-8', 'replace')} "
                f"resp={c.proto}")
        _reply(conn, ("\n".join(lines) + "\n").encode())
    elif sub == b"KILL":
        # CLIENT KILL ID n | CLIENT KILL addr
        target = None
        if len(args) == 3:
            target = next((c for c in node.clients.values() if c.addr == args[2].decode()), None)
            if target is None:
                raise C.CommandError("ERR No such client")
            target.close_after_flush()
            _reply(conn, OK)
            return
        if len(args) == 4 and args[2].upper() == b"ID":
            target = node.clients.get(C.parse_int(args[3]))
        n = 0
        if target is not None:
            target.close_after_flush()
            n = 1
        _reply(conn, n)
    elif sub == b"NO-EVICT" or sub == b"NO-TOUCH":
        _reply(conn, OK)
    else:
        raise C.CommandError(
            f"ERR unknown subcommand '{args[1].decode('utf-8', 'replace')}'. Try CLIENT HELP.")


def cmd_config(node, conn, args):
    if len(args) < 2:
        raise C.CommandError(C.arity_error("config"))
    sub = args[1].upper()
    cfg = node.config
    if sub == b"GET":
        if len(args) < 3:
            raise C.CommandError(C.arity_error("config|get"))
        values = _config_view(node)
        items = []
        seen = set()
        for pat in args[2:]:
            rx = C.glob_to_regex(pat.lower())
            for k, v in values.items():
                if k not in seen and rx.match(k.encode()):
                    seen.add(k)
                    items.append((k.encode(), str(v).encode()))
        _reply(conn, Map(items))
    elif sub == b"SET":
        if len(args) < 4 or len(args) % 2 != 0:
            raise C.CommandError(C.arity_error("config|set"))
        changes = {}
        for i in range(2, len(args), 2):
            raw = args[i].decode("utf-8", "replace")
            name = normalise_key(raw)
            if name == "appendfsync":
                name = "fsync"
            if name not in cfg.RUNTIME:
                raise C.CommandError(f"ERR Unknown option or number of arguments for CONFIG SET - '{raw}'")
            try:
                changes[name] = coerce(name, args[i + 1].decode("utf-8", "replace"))
            except Exception as e:
                raise C.CommandError(f"ERR CONFIG SET failed (possibly related to argument '{raw}') - {e}") from None
        old = {k: getattr(cfg, k) for k in changes}
        for k, v in changes.items():
            setattr(cfg, k, v)
        try:
            cfg.validate()
        except Exception as e:
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
    else:
        raise C.CommandError(f"ERR unknown subcommand '{args[1].decode('utf-8', 'replace')}'. Try CONFIG HELP.")


def _config_view(node) -> dict:
    cfg = node.config
    v = {k.replace("_", "-"): val for k, val in cfg.to_dict().items()}
    v.update({"appendonly": "yes", "appendfsync": cfg.fsync, "save": "", "databases": 1,
              "maxmemory": 0, "port": cfg.port, "bind": cfg.host, "dir": os.path.abspath(cfg.data_dir)})
    return v


def cmd_command(node, conn, args):
    from .commandinfo import command_reply

    _reply(conn, command_reply(args))


def cmd_role(node, conn, args):
    _reply(conn, node.role_reply())


_CONN_COMMANDS = {
    b"PING": cmd_ping, b"ECHO": cmd_echo, b"HELLO": cmd_hello, b"SELECT": cmd_select,
    b"QUIT": cmd_quit, b"RESET": cmd_reset, b"MULTI": cmd_multi, b"EXEC": cmd_exec,
    b"DISCARD": cmd_discard, b"WATCH": cmd_watch, b"UNWATCH": cmd_unwatch, b"INFO": cmd_info,
    b"TIME": cmd_time, b"LASTSAVE": cmd_lastsave, b"BGSAVE": cmd_bgsave, b"SAVE": cmd_save,
    b"WAIT": cmd_wait, b"DEBUG": cmd_debug, b"CLIENT": cmd_client, b"CONFIG": cmd_config,
    b"COMMAND": cmd_command, b"ROLE": cmd_role, b"DIGEST": cmd_digest,
}
_TX_CONTROL = {b"EXEC", b"DISCARD", b"MULTI", b"WATCH", b"QUIT", b"RESET"}
_NOT_IN_MULTI = {b"SUBSCRIBE", b"WAIT", b"SAVE", b"BGSAVE", b"HELLO"}
