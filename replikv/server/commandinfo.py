"""COMMAND, COMMAND COUNT / INFO / LIST / DOCS: what redis-cli and client libraries ask."""

from __future__ import annotations

from ..core import commands as C
from ..core.resp import Map

# connection-level commands: name -> (arity, flags)
CONNECTION_COMMANDS = {
    "ping": (-1, ["fast"]), "echo": (2, ["fast"]), "hello": (-1, ["noscript", "loading", "stale", "fast"]),
    "select": (2, ["loading", "stale", "fast"]), "quit": (-1, ["fast"]), "reset": (1, ["fast"]),
    "multi": (1, ["noscript", "loading", "stale", "fast"]), "exec": (1, ["noscript", "loading", "stale"]),
    "discard": (1, ["noscript", "loading", "stale", "fast"]), "watch": (-2, ["noscript", "loading", "stale", "fast"]),
    "unwatch": (1, ["noscript", "loading", "stale", "fast"]), "info": (-1, ["loading", "stale"]),
    "time": (1, ["loading", "stale", "fast"]), "lastsave": (1, ["loading", "stale", "fast"]),
    "bgsave": (-1, ["admin", "noscript"]), "save": (1, ["admin", "noscript"]), "wait": (3, ["noscript"]),
    "debug": (-2, ["admin", "noscript"]), "client": (-2, []), "config": (-2, []), "command": (-1, ["loading", "stale"]),
    "role": (1, ["noscript", "loading", "stale", "fast"]), "digest": (1, ["readonly"]),
}

GROUPS = {"get": "string", "set": "string", "hset": "hash", "sadd": "set"}


def _group(name: str) -> str:
    if name in CONNECTION_COMMANDS:
        return "connection" if name in ("ping", "echo", "hello", "select", "quit", "reset", "client") else "server"
    if name.startswith("h"):
        return "hash"
    if name.startswith("s") and name not in ("set", "setnx", "setex", "setrange", "strlen", "scan"):
        return "set"
    if name in ("del", "unlink", "exists", "type", "rename", "renamenx", "randomkey", "keys", "scan", "expire",
                "pexpire", "expireat", "pexpireat", "ttl", "pttl", "persist", "expiretime"):
        return "generic"
    if name in ("dbsize", "flushdb", "flushall"):
        return "server"
    return "string"


def _info(name: str):
    cmd = C.COMMANDS.get(name.upper().encode())
    if cmd is not None:
        return [cmd.name.encode(), cmd.arity, [f.encode() for f in sorted(cmd.flags)], cmd.first_key,
                cmd.last_key, cmd.step, [b"@" + _group(cmd.name).encode()], [], [], []]
    if name in CONNECTION_COMMANDS:
        arity, flags = CONNECTION_COMMANDS[name]
        return [name.encode(), arity, [f.encode() for f in flags], 0, 0, 0,
                [b"@" + _group(name).encode()], [], [], []]
    return None


def all_names() -> list[str]:
    names = [c.name for c in C.COMMANDS.values() if "|" not in c.name]
    names += list(CONNECTION_COMMANDS)
    names.append("memory")
    return sorted(set(names))


def command_reply(args: list[bytes]):
    if len(args) == 1:
        return [x for x in (_info(n) for n in all_names()) if x is not None]
    sub = args[1].upper()
    if sub == b"COUNT":
        return len(all_names())
    if sub == b"LIST":
        return [n.encode() for n in all_names()]
    if sub == b"INFO":
        return [_info(a.decode("utf-8", "replace").lower()) for a in args[2:]]
    if sub == b"DOCS":
        names = [a.decode("utf-8", "replace").lower() for a in args[2:]] or all_names()
        items = []
        for n in names:
            if _info(n) is None and n != "memory":
                continue
            items.append((n.encode(), Map([(b"summary", f"replikv implementation of {n.upper()}".encode()),
                                           (b"since", b"1.0.0"), (b"group", _group(n).encode())])))
        return Map(items)
    if sub == b"GETKEYS":
        cmd = C.lookup(args[2:]) if len(args) > 2 else None
        if cmd is None:
            raise C.CommandError("ERR Invalid command specified")
        keys = cmd.keys(args[2:])
        if not keys:
            raise C.CommandError("ERR The command has no key arguments")
        return keys
    raise C.CommandError(f"ERR unknown subcommand '{args[1].decode('utf-8', 'replace')}'. Try COMMAND HELP.")
