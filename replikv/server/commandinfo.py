"""COMMAND, COMMAND COUNT / LIST / INFO / DOCS / GETKEYS: what redis-cli and client libraries ask.

Owns: the metadata Redis 7.2 reports for every command replikv implements (flags, ACL
categories, tips, key specifications, summaries) and the shapes of the COMMAND replies.
Arity, flags and key positions of data commands come from core/commands.py; those of
connection-level commands from CONNECTION_COMMANDS (the replication layer adds its own).
"""

from __future__ import annotations

from ..core import commands as C
from ..core.resp import Map, SetReply, Simple

# connection-level commands: name -> (arity, flags), as Redis reports them
CONNECTION_COMMANDS = {
    "ping": (-1, ["fast"]),
    "echo": (2, ["loading", "stale", "fast"]),
    "hello": (-1, ["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"]),
    "select": (2, ["loading", "stale", "fast"]),
    "quit": (-1, ["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"]),
    "reset": (1, ["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"]),
    "multi": (1, ["noscript", "loading", "stale", "fast", "allow_busy"]),
    "exec": (1, ["noscript", "loading", "stale", "skip_slowlog"]),
    "discard": (1, ["noscript", "loading", "stale", "fast", "allow_busy"]),
    "watch": (-2, ["noscript", "loading", "stale", "fast", "allow_busy"]),
    "unwatch": (1, ["noscript", "loading", "stale", "fast", "allow_busy"]),
    "info": (-1, ["loading", "stale"]),
    "time": (1, ["loading", "stale", "fast"]),
    "lastsave": (1, ["loading", "stale", "fast"]),
    "bgsave": (-1, ["admin", "noscript", "no_async_loading"]),
    "save": (1, ["admin", "noscript", "no_async_loading", "no_multi"]),
    "wait": (3, ["noscript"]),
    "debug": (-2, ["admin", "noscript", "loading", "stale"]),
    "client": (-2, []),
    "config": (-2, []),
    "command": (-1, ["loading", "stale"]),
    "role": (1, ["noscript", "loading", "stale", "fast"]),
    "memory": (-2, []),
    "digest": (1, ["readonly"]),
}
# key positions of connection-level commands that take keys
_CONN_KEYS = {"watch": (1, -1, 1)}

# name -> (summary, since, group, ACL categories, tips, key specs: the flags of each spec, ";"-separated)
META = {
    "append": ('Append a value to a key', "2.0.0", "string", "write string fast", "", "RW insert"),
    "bgsave": ('Asynchronously save the dataset to disk', "1.0.0", "server", "admin slow dangerous", "", ""),
    "client": ('A container for client connection commands', "2.4.0", "connection", "slow", "", ""),
    "command": ('Get array of Redis command details', "2.8.13", "server", "slow connection",
             "nondeterministic_output_order", ""),
    "config": ('A container for server configuration commands', "2.0.0", "server", "slow", "", ""),
    "dbsize": ('Return the number of keys in the selected database', "1.0.0", "server", "keyspace read fast",
             "request_policy:all_shards response_policy:agg_sum", ""),
    "debug": ('A container for debugging commands', "1.0.0", "server", "admin slow dangerous", "", ""),
    "decr": ('Decrement the integer value of a key by one', "1.0.0", "string", "write string fast",
             "", "RW access update"),
    "decrby": ('Decrement the integer value of a key by the given number', "1.0.0", "string", "write string fast",
             "", "RW access update"),
    "del": ('Delete a key', "1.0.0", "generic", "keyspace write slow",
             "request_policy:multi_shard response_policy:agg_sum", "RM delete"),
    "discard": ('Discard all commands issued after MULTI', "2.0.0", "transactions", "fast transaction",
             "", ""),
    "echo": ('Echo the given string', "1.0.0", "connection", "fast connection", "", ""),
    "exec": ('Execute all commands issued after MULTI', "1.2.0", "transactions", "slow transaction", "", ""),
    "exists": ('Determine if a key exists', "1.0.0", "generic", "keyspace read fast",
             "request_policy:multi_shard response_policy:agg_sum", "RO"),
    "expire": ("Set a key's time to live in seconds", "1.0.0", "generic", "keyspace write fast",
             "", "RW update"),
    "expireat": ('Set the expiration for a key as a UNIX timestamp', "1.2.0", "generic", "keyspace write fast",
             "", "RW update"),
    "expiretime": ('Get the expiration Unix timestamp for a key', "7.0.0", "generic", "keyspace read fast",
             "", "RO access"),
    "flushall": ('Remove all keys from all databases', "1.0.0", "server", "keyspace write slow dangerous",
             "request_policy:all_shards response_policy:all_succeeded", ""),
    "flushdb": ('Remove all keys from the current database', "1.0.0", "server", "keyspace write slow dangerous",
             "request_policy:all_shards response_policy:all_succeeded", ""),
    "get": ('Get the value of a key', "1.0.0", "string", "read string fast", "", "RO access"),
    "getdel": ('Get the value of a key and delete the key', "6.2.0", "string", "write string fast",
             "", "RW access delete"),
    "getrange": ('Get a substring of the string stored at a key', "2.4.0", "string", "read string slow",
             "", "RO access"),
    "getset": ('Set the string value of a key and return its old value', "1.0.0", "string", "write string fast",
             "", "RW access update"),
    "hdel": ('Delete one or more hash fields', "2.0.0", "hash", "write hash fast", "", "RW delete"),
    "hello": ('Handshake with Redis', "6.0.0", "connection", "fast connection", "", ""),
    "hexists": ('Determine if a hash field exists', "2.0.0", "hash", "read hash fast", "", "RO"),
    "hget": ('Get the value of a hash field', "2.0.0", "hash", "read hash fast", "", "RO access"),
    "hgetall": ('Get all the fields and values in a hash', "2.0.0", "hash", "read hash slow",
             "nondeterministic_output_order", "RO access"),
    "hincrby": ('Increment the integer value of a hash field by the given number', "2.0.0", "hash", "write hash fast",
             "", "RW access update"),
    "hincrbyfloat": ('Increment the float value of a hash field by the given amount', "2.6.0", "hash", "write hash fast",
             "", "RW access update"),
    "hkeys": ('Get all the fields in a hash', "2.0.0", "hash", "read hash slow",
             "nondeterministic_output_order", "RO access"),
    "hlen": ('Get the number of fields in a hash', "2.0.0", "hash", "read hash fast", "", "RO"),
    "hmget": ('Get the values of all the given hash fields', "2.0.0", "hash", "read hash fast",
             "", "RO access"),
    "hmset": ('Set multiple hash fields to multiple values', "2.0.0", "hash", "write hash fast",
             "", "RW update"),
    "hset": ('Set the string value of a hash field', "2.0.0", "hash", "write hash fast", "", "RW update"),
    "hsetnx": ('Set the value of a hash field, only if the field does not exist', "2.0.0", "hash", "write hash fast",
             "", "RW insert"),
    "hstrlen": ('Get the length of the value of a hash field', "3.2.0", "hash", "read hash fast", "", "RO"),
    "hvals": ('Get all the values in a hash', "2.0.0", "hash", "read hash slow",
             "nondeterministic_output_order", "RO access"),
    "incr": ('Increment the integer value of a key by one', "1.0.0", "string", "write string fast",
             "", "RW access update"),
    "incrby": ('Increment the integer value of a key by the given amount', "1.0.0", "string", "write string fast",
             "", "RW access update"),
    "incrbyfloat": ('Increment the float value of a key by the given amount', "2.6.0", "string", "write string fast",
             "", "RW access update"),
    "info": ('Get information and statistics about the server', "1.0.0", "server", "slow dangerous",
             "nondeterministic_output request_policy:all_shards response_policy:special", ""),
    "keys": ('Find all keys matching the given pattern', "1.0.0", "generic", "keyspace read slow dangerous",
             "request_policy:all_shards nondeterministic_output_order", ""),
    "lastsave": ('Get the UNIX time stamp of the last successful save to disk', "1.0.0", "server", "admin fast dangerous",
             "nondeterministic_output", ""),
    "memory": ('A container for memory diagnostics commands', "4.0.0", "server", "slow", "", ""),
    "mget": ('Get the values of all the given keys', "1.0.0", "string", "read string fast",
             "request_policy:multi_shard", "RO access"),
    "mset": ('Set multiple keys to multiple values', "1.0.1", "string", "write string slow",
             "request_policy:multi_shard response_policy:all_succeeded", "OW update"),
    "msetnx": ('Set multiple keys to multiple values, only if none of the keys exist', "1.0.1", "string", "write string slow",
             "request_policy:multi_shard response_policy:agg_min", "OW insert"),
    "multi": ('Mark the start of a transaction block', "1.2.0", "transactions", "fast transaction", "", ""),
    "persist": ('Remove the expiration from a key', "2.2.0", "generic", "keyspace write fast",
             "", "RW update"),
    "pexpire": ("Set a key's time to live in milliseconds", "2.6.0", "generic", "keyspace write fast",
             "", "RW update"),
    "pexpireat": ('Set the expiration for a key as a UNIX timestamp specified in milliseconds', "2.6.0", "generic", "keyspace write fast",
             "", "RW update"),
    "ping": ('Ping the server', "1.0.0", "connection", "fast connection",
             "request_policy:all_shards response_policy:all_succeeded", ""),
    "psetex": ('Set the value and expiration in milliseconds of a key', "2.6.0", "string", "write string slow",
             "", "OW update"),
    "pttl": ('Get the time to live for a key in milliseconds', "2.6.0", "generic", "keyspace read fast",
             "nondeterministic_output", "RO access"),
    "quit": ('Close the connection', "1.0.0", "connection", "fast connection", "", ""),
    "randomkey": ('Return a random key from the keyspace', "1.0.0", "generic", "keyspace read slow",
             "request_policy:all_shards nondeterministic_output", ""),
    "rename": ('Rename a key', "1.0.0", "generic", "keyspace write slow", "", "RW access delete;OW update"),
    "renamenx": ('Rename a key, only if the new key does not exist', "1.0.0", "generic", "keyspace write fast",
             "", "RW access delete;OW insert"),
    "reset": ('Reset the connection', "6.2.0", "connection", "fast connection", "", ""),
    "role": ('Return the role of the instance in the context of replication', "2.8.12", "server", "admin fast dangerous",
             "", ""),
    "sadd": ('Add one or more members to a set', "1.0.0", "set", "write set fast", "", "RW insert"),
    "save": ('Synchronously save the dataset to disk', "1.0.0", "server", "admin slow dangerous", "", ""),
    "scan": ('Incrementally iterate the keys space', "2.8.0", "generic", "keyspace read slow",
             "nondeterministic_output request_policy:special", ""),
    "scard": ('Get the number of members in a set', "1.0.0", "set", "read set fast", "", "RO"),
    "sdiff": ('Subtract multiple sets', "1.0.0", "set", "read set slow",
             "nondeterministic_output_order", "RO access"),
    "sdiffstore": ('Subtract multiple sets and store the resulting set in a key', "1.0.0", "set", "write set slow",
             "", "OW update;RO access"),
    "select": ('Change the selected database for the current connection', "1.0.0", "connection", "fast connection",
             "", ""),
    "set": ('Set the string value of a key', "1.0.0", "string", "write string slow",
             "", "RW access update variable_flags"),
    "setex": ('Set the value and expiration of a key', "2.0.0", "string", "write string slow",
             "", "OW update"),
    "setnx": ('Set the value of a key, only if the key does not exist', "1.0.0", "string", "write string fast",
             "", "OW insert"),
    "setrange": ('Overwrite part of a string at key starting at the specified offset', "2.2.0", "string", "write string slow",
             "", "RW update"),
    "sinter": ('Intersect multiple sets', "1.0.0", "set", "read set slow",
             "nondeterministic_output_order", "RO access"),
    "sinterstore": ('Intersect multiple sets and store the resulting set in a key', "1.0.0", "set", "write set slow",
             "", "RW update;RO access"),
    "sismember": ('Determine if a given value is a member of a set', "1.0.0", "set", "read set fast",
             "", "RO"),
    "smembers": ('Get all the members in a set', "1.0.0", "set", "read set slow",
             "nondeterministic_output_order", "RO access"),
    "smismember": ('Returns the membership associated with the given elements for a set', "6.2.0", "set", "read set fast",
             "", "RO access"),
    "smove": ('Move a member from one set to another', "1.0.0", "set", "write set fast",
             "", "RW access delete;RW insert"),
    "spop": ('Remove and return one or multiple random members from a set', "1.0.0", "set", "write set fast",
             "nondeterministic_output", "RW access delete"),
    "srandmember": ('Get one or multiple random members from a set', "1.0.0", "set", "read set slow",
             "nondeterministic_output", "RO access"),
    "srem": ('Remove one or more members from a set', "1.0.0", "set", "write set fast", "", "RW delete"),
    "strlen": ('Get the length of the value stored in a key', "2.2.0", "string", "read string fast",
             "", "RO"),
    "sunion": ('Add multiple sets', "1.0.0", "set", "read set slow",
             "nondeterministic_output_order", "RO access"),
    "sunionstore": ('Add multiple sets and store the resulting set in a key', "1.0.0", "set", "write set slow",
             "", "OW update;RO access"),
    "time": ('Return the current server time', "2.6.0", "server", "fast", "nondeterministic_output", ""),
    "ttl": ('Get the time to live for a key in seconds', "1.0.0", "generic", "keyspace read fast",
             "nondeterministic_output", "RO access"),
    "type": ('Determine the type stored at key', "1.0.0", "generic", "keyspace read fast", "", "RO"),
    "unlink": ('Delete a key asynchronously in another thread. Otherwise it is just as DEL, but non blocking.', "4.0.0", "generic", "keyspace write fast",
             "request_policy:multi_shard response_policy:agg_sum", "RM delete"),
    "unwatch": ('Forget about all watched keys', "2.2.0", "transactions", "fast transaction", "", ""),
    "wait": ('Wait for the synchronous replication of all the write commands sent in the context of the current connection', "3.0.0", "generic", "slow connection",
             "request_policy:all_shards response_policy:agg_min", ""),
    "watch": ('Watch the given keys to determine execution of the MULTI/EXEC block', "2.2.0", "transactions", "fast transaction",
             "", "RO"),
    "digest": ("replikv: a digest of the whole keyspace (equal on replicas with equal data)", "1.0.0",
               "server", "keyspace read slow", "nondeterministic_output", ""),
}

# subcommands of the container commands: "parent|sub" -> (arity, flags, summary, since, ACL categories, tips)
SUBCOMMANDS = {
    "client|list": (-2, "admin noscript loading stale", 'Get the list of client connections', "2.4.0",
             "admin slow dangerous connection", "nondeterministic_output"),
    "client|info": (2, "noscript loading stale", 'Returns information about the current client connection.', "6.2.0",
             "slow connection", "nondeterministic_output"),
    "client|id": (2, "noscript loading stale", 'Returns the client ID for the current connection', "5.0.0",
             "slow connection", ""),
    "client|kill": (-3, "admin noscript loading stale", 'Kill the connection of a client', "2.4.0",
             "admin slow dangerous connection", ""),
    "client|no-evict": (3, "admin noscript loading stale", 'Set client eviction mode for the current connection', "7.0.0",
             "admin slow dangerous connection", ""),
    "client|setname": (3, "noscript loading stale", 'Set the current connection name', "2.6.9",
             "slow connection", ""),
    "client|help": (2, "loading stale", 'Show helpful text about the different subcommands', "5.0.0",
             "slow connection", ""),
    "client|getname": (2, "noscript loading stale", 'Get the current connection name', "2.6.9",
             "slow connection", ""),
    "config|get": (-3, "admin noscript loading stale", 'Get the values of configuration parameters', "2.0.0",
             "admin slow dangerous", ""),
    "config|rewrite": (2, "admin noscript loading stale", 'Rewrite the configuration file with the in memory configuration', "2.8.0",
             "admin slow dangerous", ""),
    "config|set": (-4, "admin noscript loading stale", 'Set configuration parameters to the given values', "2.0.0",
             "admin slow dangerous", "request_policy:all_nodes response_policy:all_succeeded"),
    "config|help": (2, "loading stale", 'Show helpful text about the different subcommands', "5.0.0",
             "slow", ""),
    "config|resetstat": (2, "admin noscript loading stale", 'Reset the stats returned by INFO', "2.0.0",
             "admin slow dangerous", ""),
    "command|docs": (-2, "loading stale", 'Get array of specific Redis command documentation', "7.0.0",
             "slow connection", "nondeterministic_output_order"),
    "command|list": (-2, "loading stale", 'Get an array of Redis command names', "7.0.0",
             "slow connection", "nondeterministic_output_order"),
    "command|count": (2, "loading stale", 'Get total number of Redis commands', "2.8.13",
             "slow connection", ""),
    "command|getkeys": (-4, "loading stale", 'Extract keys given a full Redis command', "2.8.13",
             "slow connection", ""),
    "command|info": (-2, "loading stale", 'Get array of specific Redis command details, or all when no argument is given.', "2.8.13",
             "slow connection", "nondeterministic_output_order"),
    "command|help": (2, "loading stale", 'Show helpful text about the different subcommands', "5.0.0",
             "slow connection", ""),
    "memory|usage": (-3, "readonly", 'Estimate the memory usage of a key', "4.0.0", "read slow", ""),
    "memory|help": (2, "loading stale", 'Show helpful text about the different subcommands', "4.0.0",
             "slow", ""),
    "client|setinfo": (4, "noscript loading stale", 'Set client or connection specific info', "7.2.0",
             "slow connection", "request_policy:all_nodes response_policy:all_succeeded"),
    "client|no-touch": (3, "noscript loading stale",
                        'Controls whether commands sent by the client affect the LRU/LFU of accessed keys',
                        "7.2.0", "slow connection", ""),
}

CONTAINERS = ("client", "config", "command", "memory")


def subcommand_arity(parent: str, sub: str) -> int | None:
    """The arity of ``parent|sub`` (None if there is no such subcommand)."""
    name = f"{parent}|{sub}"
    if not name.isascii():
        return None   # every command name is ASCII (and this one may hold undecodable bytes)
    s = SUBCOMMANDS.get(name)
    if s is not None:
        return s[0]
    cmd = C.COMMANDS.get(name.upper().encode())
    return cmd.arity if cmd is not None else None


def _subcommand_names(parent: str) -> list[str]:
    return [n for n in SUBCOMMANDS if n.startswith(parent + "|")]


def all_names() -> list[str]:
    """Top-level command names (what COMMAND COUNT counts)."""
    names = {c.name for c in C.COMMANDS.values() if "|" not in c.name}
    names.update(CONNECTION_COMMANDS)
    return sorted(names)


def _status(words) -> SetReply:
    """Flags, ACL categories: status strings in a set (RESP3), as Redis sends them."""
    if isinstance(words, str):
        words = words.split()
    return SetReply([Simple(w) for w in words])


def _bulks(words: str) -> SetReply:
    return SetReply([w.encode() for w in words.split()])


# the notes Redis attaches to a key specification
_KEYSPEC_NOTES = {"set": b"RW and ACCESS due to the optional `GET` argument"}


def _keyspecs(name: str, first: int, last: int, step: int) -> list:
    meta = META.get(name)
    if meta is None or not meta[5]:
        if not first:
            return SetReply([])
        specs = ["RO" if name not in C.COMMANDS or not C.COMMANDS[name.upper().encode()].is_write else "RW"]
    else:
        specs = meta[5].split(";")
    out = []
    for i, flags in enumerate(specs):
        index = first + i
        if len(specs) == 1:
            lastkey = last - first if last >= 0 else last
            keystep = step
        else:
            lastkey = last if (i == len(specs) - 1 and last < 0) else 0
            keystep = 1
        notes = [(b"notes", _KEYSPEC_NOTES[name])] if name in _KEYSPEC_NOTES else []
        out.append(Map(notes + [
            (b"flags", _status(flags)),
            (b"begin_search", Map([(b"type", b"index"), (b"spec", Map([(b"index", index)]))])),
            (b"find_keys", Map([(b"type", b"range"),
                                (b"spec", Map([(b"lastkey", lastkey), (b"keystep", keystep), (b"limit", 0)]))])),
        ]))
    return SetReply(out)


def command_info(name: str):
    """One command's entry in COMMAND / COMMAND INFO, or None if unknown. ``name`` may be a
    subcommand ("client|list")."""
    name = name.lower()
    if not name.isascii():
        return None
    cmd = C.COMMANDS.get(name.upper().encode())
    if "|" in name:
        s = SUBCOMMANDS.get(name)
        if s is None:
            return None
        arity, flags, _summary, _since, cats, tips = s
        first = last = step = 0
        if cmd is not None:   # a data command (MEMORY USAGE): its table has the key positions
            arity, flags, first, last, step = cmd.arity, sorted(cmd.flags, key=_flag_order), cmd.first_key, \
                cmd.last_key, cmd.step
        return [name.encode(), arity, _status(flags), first, last, step, _status(["@" + c for c in cats.split()]),
                _bulks(tips), _keyspecs(name, first, last, step), SetReply([])]
    meta = META.get(name)
    cats = meta[3].split() if meta else []
    tips = meta[4].split() if meta else []
    if cmd is not None:
        arity, flags, first, last, step = cmd.arity, sorted(cmd.flags, key=_flag_order), cmd.first_key, \
            cmd.last_key, cmd.step
    elif name in CONNECTION_COMMANDS:
        arity, flags = CONNECTION_COMMANDS[name]
        first, last, step = _CONN_KEYS.get(name, (0, 0, 0))
    else:
        return None
    subs = [command_info(s) for s in _subcommand_names(name)] if name in CONTAINERS else []
    return [name.encode(), arity, _status(flags), first, last, step, _status(["@" + c for c in cats]),
            _bulks(" ".join(tips)), _keyspecs(name, first, last, step), subs if subs else SetReply([])]


_FLAG_ORDER = ["write", "readonly", "denyoom", "module", "admin", "pubsub", "noscript", "blocking", "loading",
               "stale", "skip_monitor", "skip_slowlog", "asking", "fast", "no_auth", "may_replicate",
               "no_mandatory_keys", "no_async_loading", "no_multi", "movablekeys", "allow_busy"]


def _flag_order(f: str) -> int:
    return _FLAG_ORDER.index(f) if f in _FLAG_ORDER else len(_FLAG_ORDER)

# Argument syntax, for COMMAND DOCS ("arguments"): redis-cli shows it in ``help`` and as
# hints while typing. Written in a small notation: [optional], (group), a|b (one of),
# UPPER a token (alone: a pure token; before an argument or a group: that argument's
# token), "..." repeats what precedes, name:type an argument (default type: key for "key",
# string otherwise).
SYNTAX = {
    "append": "key value", "bgsave": "[SCHEDULE]", "dbsize": "", "decr": "key",
    "decrby": "key decrement:integer", "del": "key ...", "digest": "", "discard": "", "echo": "message",
    "exec": "", "exists": "key ...", "expire": "key seconds:integer [NX|XX|GT|LT]",
    "expireat": "key unix-time-seconds:unix-time [NX|XX|GT|LT]", "expiretime": "key",
    "flushall": "[ASYNC|SYNC]", "flushdb": "[ASYNC|SYNC]", "get": "key", "getdel": "key",
    "getrange": "key start:integer end:integer", "getset": "key value", "hdel": "key field ...",
    "hello": "[protover:integer [AUTH username password] [SETNAME clientname]]", "hexists": "key field",
    "hget": "key field", "hgetall": "key", "hincrby": "key field increment:integer",
    "hincrbyfloat": "key field increment:double", "hkeys": "key", "hlen": "key", "hmget": "key field ...",
    "hmset": "key (field value) ...", "hset": "key (field value) ...", "hsetnx": "key field value",
    "hstrlen": "key field", "hvals": "key", "incr": "key", "incrby": "key increment:integer",
    "incrbyfloat": "key increment:double", "info": "[section ...]", "keys": "pattern:pattern", "lastsave": "",
    "mget": "key ...", "mset": "(key value) ...", "msetnx": "(key value) ...", "multi": "", "persist": "key",
    "pexpire": "key milliseconds:integer [NX|XX|GT|LT]",
    "pexpireat": "key unix-time-milliseconds:unix-time [NX|XX|GT|LT]", "ping": "[message]",
    "psetex": "key milliseconds:integer value", "pttl": "key", "quit": "", "randomkey": "",
    "rename": "key newkey:key", "renamenx": "key newkey:key", "reset": "", "role": "", "sadd": "key member ...",
    "save": "", "scan": "cursor:integer [MATCH pattern:pattern] [COUNT count:integer] [TYPE type]",
    "scard": "key", "sdiff": "key ...", "sdiffstore": "destination:key key ...", "select": "index:integer",
    "set": "key value [NX|XX] [GET] [EX seconds:integer|PX milliseconds:integer"
           "|EXAT unix-time-seconds:unix-time|PXAT unix-time-milliseconds:unix-time|KEEPTTL]",
    "setex": "key seconds:integer value", "setnx": "key value", "setrange": "key offset:integer value",
    "sinter": "key ...", "sinterstore": "destination:key key ...", "sismember": "key member",
    "smembers": "key", "smismember": "key member ...", "smove": "source:key destination:key member",
    "spop": "key [count:integer]", "srandmember": "key [count:integer]", "srem": "key member ...",
    "strlen": "key", "sunion": "key ...", "sunionstore": "destination:key key ...", "time": "", "ttl": "key",
    "type": "key", "unlink": "key ...", "unwatch": "", "wait": "numreplicas:integer timeout:integer",
    "watch": "key ...", "debug": "subcommand [argument ...]",
    "client|list": "[TYPE (NORMAL|MASTER|REPLICA|PUBSUB)] [ID client-id:integer ...]", "client|info": "",
    "client|id": "", "client|getname": "", "client|setname": "connection-name", "client|help": "",
    "client|kill": "(ip:port|[ID client-id:integer] [TYPE (NORMAL|MASTER|SLAVE|REPLICA|PUBSUB)] "
                   "[USER username] [ADDR ip:port] [LADDR ip:port] [SKIPME (YES|NO)])",
    "client|no-evict": "(ON|OFF)", "client|no-touch": "(ON|OFF)",
    "client|setinfo": "(LIB-NAME libname|LIB-VER libver)",
    "command|count": "", "command|docs": "[command-name ...]", "command|info": "[command-name ...]",
    "command|list": "[FILTERBY (MODULE module-name|ACLCAT category|PATTERN pattern:pattern)]",
    "command|getkeys": "command arg ...", "command|help": "",
    "config|get": "parameter ...", "config|set": "(parameter value) ...", "config|resetstat": "",
    "config|rewrite": "", "config|help": "", "memory|usage": "key [SAMPLES count:integer]", "memory|help": "",
}


_ARG_TYPES = ("integer", "double", "unix-time", "pattern", "key", "string")


def _syntax_tokens(text: str) -> list[str]:
    for ch in "[]()|":
        text = text.replace(ch, f" {ch} ")
    return text.split()


def _is_token(word: str) -> bool:
    return word.upper() == word and any(c.isalpha() for c in word)


def _parse_syntax(tokens: list[str], i: int, close: str | None) -> tuple[list, int]:
    """Parse until ``close``: a list of alternatives, each a list of argument dicts."""
    alts: list[list] = [[]]
    token = None
    while i < len(tokens):
        t = tokens[i]
        if t == close:
            return alts, i + 1
        if t in "[(":
            inner, i = _parse_syntax(tokens, i + 1, "]" if t == "[" else ")")
            item = _group(inner)
            if t == "[":
                item.setdefault("flags", []).append("optional")
        elif t == "|":
            alts.append([])
            i += 1
            continue
        elif t == "...":
            alts[-1][-1].setdefault("flags", []).append("multiple")
            i += 1
            continue
        elif _is_token(t):
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            if nxt is not None and (nxt in "[(" or not _is_token(nxt)) and nxt not in ("|", "]", ")", "..."):
                token = t
                i += 1
                continue
            item = {"name": t.lower(), "type": "pure-token", "token": t}
            i += 1
        else:
            name, _, type_ = t.rpartition(":")
            if not name or type_ not in _ARG_TYPES:
                name, type_ = t, ""
            item = {"name": name, "type": type_ or ("key" if name == "key" else "string")}
            i += 1
        if token is not None:
            item["token"] = token
            token = None
        alts[-1].append(item)
        if t in "[(":
            continue
    return alts, i


def _group(alts: list) -> dict:
    if len(alts) == 1:
        if len(alts[0]) == 1:
            return alts[0][0]
        return {"name": "_".join(a["name"] for a in alts[0]), "type": "block", "arguments": alts[0]}
    members = [a[0] if len(a) == 1 else {"name": "_".join(x["name"] for x in a), "type": "block", "arguments": a}
               for a in alts]
    return {"name": "_".join(m["name"] for m in members), "type": "oneof", "arguments": members}


def _arguments(name: str) -> list | None:
    text = SYNTAX.get(name)
    if not text:
        return None
    alts, _ = _parse_syntax(_syntax_tokens(text), 0, None)
    args = alts[0]
    nkeys = len(_keyspecs(name, *_key_positions(name)).items) or 1
    counter = [0]

    def to_map(a: dict) -> Map:
        items = [(b"name", a["name"].encode()), (b"type", a["type"].encode())]
        if a["type"] == "key":
            items.append((b"key_spec_index", min(counter[0], nkeys - 1)))
            counter[0] += 1
        if "token" in a:
            items.append((b"token", a["token"].encode()))
        if a.get("flags"):
            items.append((b"flags", _status(sorted(a["flags"], key=("optional", "multiple").index))))
        if "arguments" in a:
            items.append((b"arguments", [to_map(x) for x in a["arguments"]]))
        return Map(items)

    return [to_map(a) for a in args]


def _key_positions(name: str) -> tuple[int, int, int]:
    cmd = C.COMMANDS.get(name.upper().encode())
    if cmd is not None:
        return cmd.first_key, cmd.last_key, cmd.step
    return _CONN_KEYS.get(name, (0, 0, 0))



def command_docs(name: str):
    name = name.lower()
    if not name.isascii():
        return None
    if "|" in name:
        s = SUBCOMMANDS.get(name)
        if s is None:
            return None
        summary, since, group = s[2], s[3], META[name.split("|")[0]][2]
        items = [(b"summary", summary.encode()), (b"since", since.encode()), (b"group", group.encode())]
        args = _arguments(name)
        if args:
            items.append((b"arguments", args))
        return Map(items)
    meta = META.get(name)
    if meta is None:
        if command_info(name) is None:
            return None
        meta = (f"replikv command {name.upper()}", "1.0.0", "server", "", "", "")
    items = [(b"summary", meta[0].encode()), (b"since", meta[1].encode()), (b"group", meta[2].encode())]
    args = _arguments(name)
    if args:
        items.append((b"arguments", args))
    if name in CONTAINERS:
        subs = _subcommand_names(name)
        items.append((b"subcommands", Map([(s.encode(), command_docs(s)) for s in subs])))
    return Map(items)


def _all_with_subcommands() -> list[str]:
    out = []
    for n in all_names():
        out.append(n)
        if n in CONTAINERS:
            out.extend(_subcommand_names(n))
    return out


_HELP = [
    "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "(no subcommand)",
    "    Return details about all Redis commands.",
    "COUNT",
    "    Return the total number of commands in this Redis server.",
    "LIST",
    "    Return a list of all commands in this Redis server.",
    "INFO [<command-name> ...]",
    "    Return details about multiple Redis commands.",
    "    If no command names are given, documentation details for all",
    "    commands are returned.",
    "DOCS [<command-name> ...]",
    "    Return documentation details about multiple Redis commands.",
    "    If no command names are given, documentation details for all",
    "    commands are returned.",
    "GETKEYS <full-command>",
    "    Return the keys from a full Redis command.",
    "HELP",
    "    Print this help.",
]


def command_reply(args: list[bytes]):
    """The reply to COMMAND [subcommand ...]; raises CommandError like Redis."""
    if len(args) == 1:
        return [command_info(n) for n in all_names()]
    sub = args[1].lower().decode("utf-8", "surrogateescape")
    arity = subcommand_arity("command", sub)
    if arity is None:
        raise C.CommandError(unknown_subcommand(args))
    if not C.arity_ok_n(arity, len(args)):
        raise C.CommandError(C.arity_error(f"command|{sub}"))
    if sub == "count":
        return len(all_names())
    if sub == "list":
        names = _all_with_subcommands()
        if len(args) == 2:
            return [n.encode() for n in names]
        if len(args) != 5 or args[2].upper() != b"FILTERBY":
            raise C.CommandError(C.SYNTAX)
        what, arg = args[3].upper(), args[4]
        if what == b"MODULE":
            return []
        if what == b"ACLCAT":
            cat = arg.lower()
            return [n.encode() for n in names
                    if (i := command_info(n)) is not None and Simple("@" + cat.decode("latin-1")) in i[6].items]
        if what == b"PATTERN":
            m = C.glob_matcher(arg, nocase=True).match
            return [n.encode() for n in names if m(n.encode())]
        raise C.CommandError(C.SYNTAX)
    if sub == "info":
        if len(args) == 2:
            return [command_info(n) for n in all_names()]
        return [command_info(a.decode("utf-8", "surrogateescape")) for a in args[2:]]
    if sub == "docs":
        names = [a.decode("utf-8", "surrogateescape").lower() for a in args[2:]] or all_names()
        items = []
        for n in names:
            d = command_docs(n)
            if d is not None:
                items.append((n.encode(), d))
        return Map(items)
    if sub == "getkeys":
        target = args[2:]
        tname = target[0].lower().decode("latin-1")
        cmd = C.lookup(target)
        if cmd is not None:
            arity, first, last, step = cmd.arity, cmd.first_key, cmd.last_key, cmd.step
        elif tname in CONNECTION_COMMANDS:
            arity = CONNECTION_COMMANDS[tname][0]
            first, last, step = _CONN_KEYS.get(tname, (0, 0, 0))
        else:
            raise C.CommandError("ERR Invalid command specified")
        if not first:
            raise C.CommandError("ERR The command has no key arguments")
        if not C.arity_ok_n(arity, len(target)):
            raise C.CommandError("ERR Invalid number of arguments specified for command")
        end = len(target) + last if last < 0 else last
        return target[first:end + 1:step]
    if sub == "help":
        return [Simple(line) for line in _HELP]
    raise C.CommandError(unknown_subcommand(args))  # pragma: no cover - every subcommand is handled


def unknown_subcommand(args: list[bytes]) -> str:
    """Redis's reply to an unknown subcommand of a container command."""
    sub = C._cstr(args[1], 128)
    return f"ERR unknown subcommand '{sub}'. Try {C._cstr(args[0]).upper()} HELP."
