"""Replication commands a client or operator sends over RESP.

  REPLICA STOP|START IO|APPLY|ALL   stop / start the follower's I/O task or apply task
                                    (MySQL's STOP REPLICA IO_THREAD / SQL_THREAD)
  REPLICA DELAY <ms>                apply records this long after the leader wrote them
                                    (MySQL's SOURCE_DELAY); 0 turns it off
  REPLICA STATUS                    this node's replication status as a map
  ACKMODE [<policy>|DEFAULT]        this connection's acknowledgement policy for its writes
                                    (async, semi-sync:K[:strict], sync:LEVEL:K, ...)
"""

from __future__ import annotations

import json

from ..core import commands as C
from ..core.replication import AckPolicy, PolicyError
from ..core.resp import OK, Error, Map, encode
from .commandinfo import CONNECTION_COMMANDS, META
from .conncommands import _CONN_COMMANDS


def _reply(conn, r) -> None:
    conn.reply_now(encode(r, conn.proto))


def cmd_replica(node, conn, args):
    if len(args) < 2:
        raise C.CommandError(C.arity_error("replica"))
    sub = args[1].upper()
    r = node.repl
    if sub == b"STATUS":
        if r is None:
            _reply(conn, Map([(b"mode", b"standalone")]))
            return
        st = r.status()
        _reply(conn, Map([(k.encode(), v if isinstance(v, (int, str)) else json.dumps(v).encode())
                          for k, v in st.items() if v is not None]))
        return
    if r is None or node.role != "follower":
        raise C.CommandError("ERR this node is not a follower")
    if sub in (b"STOP", b"START") and len(args) == 3:
        what = args[2].lower().decode("utf-8", "replace")
        if what in ("io_thread", "io-thread"):
            what = "io"
        if what in ("sql_thread", "sql", "apply_thread"):
            what = "apply"
        if what not in ("io", "apply", "all"):
            raise C.CommandError("ERR REPLICA STOP|START takes IO, APPLY or ALL")
        r.control(sub.decode().lower(), what)
        _reply(conn, OK)
    elif sub == b"DELAY" and len(args) == 3:
        ms = C.parse_int(args[2])
        if ms < 0:
            raise C.CommandError("ERR delay must be >= 0 ms")
        r.set_apply_delay(ms)
        _reply(conn, OK)
    else:
        raise C.CommandError(
            f"ERR unknown REPLICA subcommand '{args[1].decode('utf-8', 'replace')}'; "
            "try STOP|START IO|APPLY|ALL, DELAY ms, STATUS")


def cmd_failover(node, conn, args):
    """FAILOVER [TO <node-id>] [TIMEOUT <ms>]: manual switchover from this leader. Writes pause,
    the target catches up, it takes over in a new epoch; nothing acknowledged is lost.

    FAILOVER FORCE [TIMEOUT <ms>], sent to a follower: stand for election now, for a cluster
    whose leader is down when automatic failover is off (nothing else elects one then). The
    usual rules hold: a pre-vote first (refused while the voters still hear from a leader,
    so a live leader's lease is never cut short), and votes only for a log at least as
    fresh as the voter's. The node keeps standing until some leader exists."""
    r = node.repl
    if r is None:
        raise C.CommandError("ERR FAILOVER needs a leader-mode cluster")
    to = None
    force = False
    timeout_ms = 10_000
    i = 1
    while i < len(args):
        opt = args[i].upper()
        if opt == b"TO" and i + 1 < len(args):
            to = C.parse_int(args[i + 1])
            i += 2
        elif opt == b"TIMEOUT" and i + 1 < len(args):
            timeout_ms = C.parse_int(args[i + 1])
            if timeout_ms <= 0:
                raise C.CommandError("ERR FAILOVER TIMEOUT must be a positive number of milliseconds")
            i += 2
        elif opt == b"FORCE":
            force = True
            i += 1
        else:
            raise C.CommandError(C.SYNTAX)
    if force:
        if to is not None:
            raise C.CommandError("ERR FAILOVER FORCE takes no TO: send it to the node that should stand")
        if node.role == "leader":
            raise C.CommandError("ERR this node already leads")
    elif node.role != "leader":
        raise C.CommandError("ERR FAILOVER must be sent to the leader (or FAILOVER FORCE to a follower, "
                             "when no node leads)")
    slot = conn.reply_slot()

    async def run():
        try:
            msg = await (r.stand(timeout_ms) if force else r.switchover(to, timeout_ms))
            conn.fill_slot(slot, encode(msg.encode(), conn.proto))
        except Exception as e:  # noqa: BLE001 - every failure is reported to the operator
            what = "forced election" if force else "switchover"
            conn.fill_slot(slot, encode(Error(f"ERR {what} failed: {e}"), conn.proto))

    import asyncio

    asyncio.ensure_future(run())


def _parse_pos(b: bytes) -> int:
    """A position token ``epoch:seq`` (or a bare ``seq``): replikv compares by seq."""
    text = b.decode("utf-8", "replace")
    try:
        seq = int(text.rsplit(":", 1)[-1])
        if seq < 0:
            raise ValueError
        return seq
    except ValueError:
        raise C.CommandError(f"ERR invalid position '{text}': expected EPOCH:SEQ or SEQ") from None


def cmd_lastpos(node, conn, args):
    """LASTPOS: the position of this connection's last write (MySQL's session GTID)."""
    if len(args) != 1:
        raise C.CommandError(C.arity_error("lastpos"))
    seq = conn.last_write_seq
    _reply(conn, node.position(seq).encode() if seq else b"0:0")


def cmd_pos(node, conn, args):
    """POS: the position this node has applied and may show to readers, and never less than
    what the replies before it on this connection show. A read of a key written past the
    visible position is held until that write is durable (node.reply ``needed``); a POS
    pipelined behind it leaves after it, so it reports at least that write's position:
    reporting the visible position of the moment would tell the session it saw less than
    it did, and a follower that has applied only that much could then serve it an older
    value (monotonic reads broken by one write)."""
    if len(args) != 1:
        raise C.CommandError(C.arity_error("pos"))
    _reply(conn, node.position(max(node.visible_seq, conn.held_position())).encode())


def cmd_waitpos(node, conn, args):
    """WAITPOS <position> <timeout-ms>: OK once this node has applied the position; an error
    after the timeout, so the client can go elsewhere (PostgreSQL's WAIT FOR LSN)."""
    if len(args) != 3:
        raise C.CommandError(C.arity_error("waitpos"))
    seq = _parse_pos(args[1])
    timeout_ms = C.parse_int(args[2])
    if timeout_ms < 0:
        raise C.CommandError("ERR timeout is negative")
    node.wait_position(conn, seq, timeout_ms)


def cmd_session(node, conn, args):
    """SESSION USER <id>: this connection's writes update the user's newest position, kept by
    the leader, so another device of the same user can read its writes without a token.
    SESSION USERPOS <id>: that newest position (0:0 if none)."""
    if len(args) == 3 and args[1].upper() == b"USER":
        conn.user_id = args[2]
        _reply(conn, OK)
    elif len(args) == 3 and args[1].upper() == b"USERPOS":
        seq = node.user_positions.get(args[2], 0)
        _reply(conn, node.position(seq).encode() if seq else b"0:0")
    else:
        raise C.CommandError("ERR usage: SESSION USER <id> | SESSION USERPOS <id>")


def cmd_causal(node, conn, args):
    """CAUSAL <partition>:<seq> ...: the next write on this connection depends on these
    positions (what the session wrote or read elsewhere); they are stored with the keys it
    writes and replicated, and DEPS returns them to readers."""
    deps = []
    for a in args[1:]:
        text = a.decode("utf-8", "replace")
        try:
            p, seq = text.split(":")
            deps.append([int(p), int(seq)])
        except ValueError:
            raise C.CommandError(f"ERR invalid dependency '{text}': expected PARTITION:SEQ") from None
    conn.causal_deps = deps or None
    _reply(conn, OK)


def cmd_deps(node, conn, args):
    """DEPS <key>: the positions of other partitions that the key's last write depends on."""
    if len(args) != 2:
        raise C.CommandError(C.arity_error("deps"))
    e = node.storage.ks.data.get(args[1])
    deps = (e.meta or {}).get("deps", []) if e is not None and isinstance(e.meta, dict) else []
    _reply(conn, [f"{p}:{seq}".encode() for p, seq in deps])


def cmd_partitions(node, conn, args):
    """PARTITIONS: the partition map: [partition, first slot, last slot, [host:port, ...]]."""
    from .clusterconfig import slot_range

    c = node.cluster
    if c is None:
        me = node.config
        _reply(conn, [[1, 0, 16383, [f"{me.host}:{me.port}".encode()]]])
        return
    if c.partitions <= 1:
        _reply(conn, [[1, 0, 16383, [f"{n.host}:{n.port}".encode() for n in c.nodes]]])
        return
    out = []
    for p in range(1, c.partitions + 1):
        lo, hi = slot_range(p, c.partitions)
        out.append([p, lo, hi, [f"{h}:{port}".encode() for h, port in c.partition_map.get(p, [])]])
    _reply(conn, out)


def cmd_ackmode(node, conn, args):
    if len(args) == 1:
        p = conn.ack_policy or (node.repl.policy if node.repl is not None else None)
        _reply(conn, str(p or "async").encode())
        return
    if len(args) != 2:
        raise C.CommandError(C.arity_error("ackmode"))
    text = args[1].decode("utf-8", "replace")
    if text.lower() == "default":
        conn.ack_policy = None
    else:
        try:
            conn.ack_policy = AckPolicy.parse(text)
        except PolicyError as e:
            raise C.CommandError(f"ERR {e}") from None
        node.ackmode_used = True
    _reply(conn, OK)


_plain_debug = _CONN_COMMANDS[b"DEBUG"]


def cmd_debug(node, conn, args):
    """DEBUG SKEW <ms>: this node's clock runs <ms> ahead (negative: behind). Fault injection."""
    if len(args) == 3 and args[1].upper() == b"SKEW":
        try:
            node.clock.skew_ms = int(args[2])
        except ValueError:
            raise C.CommandError(C.NOT_INT) from None
        _reply(conn, OK)
        return
    _plain_debug(node, conn, args)


_CONN_COMMANDS[b"DEBUG"] = cmd_debug
_CONN_COMMANDS[b"REPLICA"] = cmd_replica
_CONN_COMMANDS[b"ACKMODE"] = cmd_ackmode
_CONN_COMMANDS[b"FAILOVER"] = cmd_failover
_CONN_COMMANDS[b"LASTPOS"] = cmd_lastpos
_CONN_COMMANDS[b"POS"] = cmd_pos
_CONN_COMMANDS[b"WAITPOS"] = cmd_waitpos
_CONN_COMMANDS[b"SESSION"] = cmd_session
_CONN_COMMANDS[b"CAUSAL"] = cmd_causal
_CONN_COMMANDS[b"DEPS"] = cmd_deps
_CONN_COMMANDS[b"PARTITIONS"] = cmd_partitions
CONNECTION_COMMANDS.setdefault("replica", (-2, ["admin", "noscript"]))
CONNECTION_COMMANDS.setdefault("ackmode", (-1, ["fast"]))
# FAILOVER exists in Redis too: COMMAND INFO gives Redis's flags and ACL categories
CONNECTION_COMMANDS.setdefault("failover", (-1, ["admin", "noscript", "stale"]))
META.setdefault("failover", ("Hand leadership to a follower (a switchover with fencing)", "6.2.0", "server",
                             "admin slow dangerous", "", ""))
CONNECTION_COMMANDS.setdefault("lastpos", (1, ["fast"]))
CONNECTION_COMMANDS.setdefault("pos", (1, ["fast"]))
CONNECTION_COMMANDS.setdefault("waitpos", (3, ["noscript"]))
CONNECTION_COMMANDS.setdefault("session", (-3, ["fast"]))
CONNECTION_COMMANDS.setdefault("causal", (-1, ["fast"]))
CONNECTION_COMMANDS.setdefault("deps", (2, ["readonly", "fast"]))
CONNECTION_COMMANDS.setdefault("partitions", (1, ["fast"]))
