"""The cluster file: one TOML file that every node of a cluster reads.

It names the mode, the replication settings and every node with its addresses, so the
same file runs nodes on one machine or on several hosts::

    mode = "leader"
    ack = "semi-sync:1"          # async | semi-sync:K[:strict] | sync:LEVEL:K | sync:LEVEL:first:K:IDS
    ack_timeout_ms = 1000
    heartbeat_ms = 100
    leader = 1                   # the node that leads at first

    [[nodes]]
    id = 1
    host = "10.0.0.1"
    port = 7100                  # RESP
    peer_port = 7200             # peer protocol
    http_port = 7300             # status, metrics

    log_format = "physical"      # physical | row | statement (see replikv/logformats/)
    statement_unsafe = false     # statement: log commands as issued (nondeterministic ones diverge)

    [[triggers]]                 # run on the leader for each committed change of matching keys
    pattern = "user:*"
    hook = "mymodule:transform"  # optional; module:function or /path/file.py:function
    sink = "sqlite"              # sqlite (path = ...) | postgres (dsn = ...)
    path = "/var/lib/users.db"
    table = "users"

A node picks its own entry by ``--node-id``. Errors name the bad field.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field

from ..core.replication import AckPolicy, PolicyError
from .config import ConfigError

MODES = ("leader",)
LOG_FORMATS = ("physical", "row", "statement")
SINKS = ("sqlite", "postgres")
DEFAULT_HOOK = "replikv.logformats.triggers:identity"


@dataclass
class TriggerSpec:
    """One ``[[triggers]]`` entry: a user hook for committed changes of keys matching
    ``pattern``, writing into a sink."""
    pattern: str
    sink: str
    name: str = ""
    hook: str = DEFAULT_HOOK
    path: str = ""               # sqlite: the database file
    dsn: str = ""                # postgres: a libpq connection string
    table: str = "replikv_kv"
    batch: int = 256             # records per sink transaction at most

    def to_toml(self) -> list[str]:
        lines = ["[[triggers]]"]
        for k in ("name", "pattern", "hook", "sink", "path", "dsn", "table"):
            if getattr(self, k):
                lines.append(f"{k} = {_toml_str(getattr(self, k))}")
        lines += [f"batch = {self.batch}", ""]
        return lines


def _toml_str(v: str) -> str:
    import json

    return json.dumps(v)   # a JSON string is a valid TOML basic string


def parse_trigger(i: int, raw) -> TriggerSpec:
    if not isinstance(raw, dict):
        raise ConfigError(f"triggers[{i}]: must be a table")
    known = {"name", "pattern", "hook", "sink", "path", "dsn", "table", "batch"}
    for k in raw:
        if k not in known:
            raise ConfigError(f"triggers[{i}].{k}: unknown setting (known: {', '.join(sorted(known))})")
    for k in known - {"batch"}:
        if k in raw and not isinstance(raw[k], str):
            raise ConfigError(f"triggers[{i}].{k}: must be a string, got {raw[k]!r}")
    if not raw.get("pattern"):
        raise ConfigError(f"triggers[{i}].pattern: required (a glob such as \"user:*\")")
    sink = raw.get("sink", "")
    if sink not in SINKS:
        raise ConfigError(f"triggers[{i}].sink: must be one of {', '.join(SINKS)}, got {sink!r}")
    if sink == "sqlite" and not raw.get("path"):
        raise ConfigError(f"triggers[{i}].path: the sqlite sink needs a database file path")
    if sink == "postgres" and not raw.get("dsn"):
        raise ConfigError(f"triggers[{i}].dsn: the postgres sink needs a connection string")
    hook = raw.get("hook") or DEFAULT_HOOK
    if ":" not in hook:
        raise ConfigError(f"triggers[{i}].hook: expected module:function, got {hook!r}")
    table = raw.get("table") or "replikv_kv"
    if not table.replace("_", "").isalnum():
        raise ConfigError(f"triggers[{i}].table: letters, digits and _ only, got {table!r}")
    batch = raw.get("batch", 256)
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ConfigError(f"triggers[{i}].batch: must be a positive integer, got {batch!r}")
    return TriggerSpec(pattern=raw["pattern"], sink=sink, name=raw.get("name") or f"{raw['pattern']}->{table}",
                       hook=hook, path=raw.get("path", ""), dsn=raw.get("dsn", ""), table=table, batch=batch)


@dataclass
class PeerSpec:
    node_id: int
    host: str
    port: int
    peer_port: int
    http_port: int


@dataclass
class ClusterConfig:
    mode: str = "leader"
    ack: str = "async"
    ack_timeout_ms: int = 1000
    heartbeat_ms: int = 100
    leader_id: int = 1
    resync_fresh_records: int = 50_000   # reuse the newest snapshot for a new follower if this recent
    relay_segment_bytes: int = 16 * 1024 * 1024
    election_timeout_ms: int = 1000      # a follower that hears nothing from the leader this long (to 2x) stands
    auto_failover: bool = True           # False: manual switchover only (`replikv failover`)
    max_lag_on_failover: int = 0         # a follower further behind (entries) is not eligible; 0 = no bound
    allow_stale_reads: bool = False      # a leader without its lease may still answer reads
    nodes: list = field(default_factory=list)
    links: dict = field(default_factory=dict)   # (src, dst) -> (host, port): a proxy on that link
    partition: int = 1                          # this file's partition (1-based)
    partitions: int = 1                         # how many partitions the keyspace is split into
    partition_map: dict = field(default_factory=dict)  # partition -> [(host, port), ...] of its nodes
    log_format: str = "physical"                # what the leader ships: physical | row | statement
    statement_unsafe: bool = False              # statement format: commands as issued, not made deterministic
    triggers: list = field(default_factory=list)  # [TriggerSpec]

    def node(self, node_id: int) -> PeerSpec:
        for n in self.nodes:
            if n.node_id == node_id:
                return n
        raise ConfigError(f"nodes: no node with id {node_id} in the cluster file")

    def peer_addr(self, src: int, dst: int) -> tuple[str, int]:
        """Where node ``src`` reaches node ``dst``'s peer port (through a link proxy if any)."""
        via = self.links.get((src, dst))
        if via is not None:
            return via
        spec = self.node(dst)
        return spec.host, spec.peer_port

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode: must be one of {', '.join(MODES)}, got {self.mode!r}")
        try:
            AckPolicy.parse(self.ack)
        except PolicyError as e:
            raise ConfigError(f"ack: {e}") from None
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"log_format: must be one of {', '.join(LOG_FORMATS)}, got {self.log_format!r}")
        for name in ("auto_failover", "allow_stale_reads", "statement_unsafe"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}: must be true or false, got {getattr(self, name)!r}")
        if self.election_timeout_ms < 4 * self.heartbeat_ms:
            raise ConfigError(f"election_timeout_ms: must be at least 4 heartbeats ({4 * self.heartbeat_ms} ms)")
        for name in ("ack_timeout_ms", "heartbeat_ms", "resync_fresh_records", "relay_segment_bytes",
                     "election_timeout_ms", "max_lag_on_failover"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"{name}: must be a non-negative integer, got {v!r}")
        if not (1 <= self.partition <= self.partitions):
            raise ConfigError(f"partition: must be between 1 and partitions ({self.partitions}), got {self.partition}")
        if self.heartbeat_ms <= 0:
            raise ConfigError("heartbeat_ms: must be positive")
        if not self.nodes:
            raise ConfigError("nodes: the cluster file lists no nodes")
        ids = [n.node_id for n in self.nodes]
        if len(set(ids)) != len(ids):
            raise ConfigError("nodes: duplicate node ids")
        self.node(self.leader_id)


def load_cluster(path: str) -> ClusterConfig:
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"cluster file {path}: not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"cluster file {path}: not valid TOML ({e})") from None
    return cluster_from_dict(raw, path)


def cluster_from_dict(raw: dict, where: str = "cluster file") -> ClusterConfig:
    c = ClusterConfig()
    raw = dict(raw)
    nodes = raw.pop("nodes", [])
    triggers = raw.pop("triggers", None) or []
    if not isinstance(triggers, list):
        raise ConfigError("triggers: must be an array of tables ([[triggers]])")
    c.triggers = [t if isinstance(t, TriggerSpec) else parse_trigger(i, t) for i, t in enumerate(triggers)]
    for i, pn in enumerate(raw.pop("partition_nodes", None) or []):
        try:
            c.partition_map.setdefault(int(pn["partition"]), []).append((str(pn.get("host", "127.0.0.1")),
                                                                        int(pn["port"])))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"partition_nodes[{i}]: needs partition and port: {e}") from None
    for k, v in (raw.pop("links", None) or {}).items():
        try:
            src, dst = (int(x) for x in str(k).split("->"))
            host, port = str(v).rsplit(":", 1)
            c.links[(src, dst)] = (host, int(port))
        except ValueError:
            raise ConfigError(f"links.{k}: expected \"SRC->DST\" = \"host:port\"") from None
    for k, v in raw.items():
        name = k.strip().lower().replace("-", "_")
        if name == "leader":
            name = "leader_id"
        if name not in ("mode", "ack", "ack_timeout_ms", "heartbeat_ms", "leader_id", "resync_fresh_records",
                        "relay_segment_bytes", "election_timeout_ms", "auto_failover", "max_lag_on_failover",
                        "allow_stale_reads", "partition", "partitions", "log_format", "statement_unsafe"):
            raise ConfigError(f"{k}: unknown setting in {where}")
        setattr(c, name, v)
    for i, n in enumerate(nodes):
        try:
            c.nodes.append(PeerSpec(int(n["id"]), str(n.get("host", "127.0.0.1")), int(n["port"]),
                                    int(n.get("peer_port", int(n["port"]) + 10000)),
                                    int(n.get("http_port", int(n["port"]) + 20000))))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"nodes[{i}]: needs id and port (integers): {e}") from None
    c.validate()
    return c


def cluster_to_toml(c: ClusterConfig) -> str:
    lines = [f'mode = "{c.mode}"', f'ack = "{c.ack}"', f"ack_timeout_ms = {c.ack_timeout_ms}",
             f"heartbeat_ms = {c.heartbeat_ms}", f"leader = {c.leader_id}",
             f"resync_fresh_records = {c.resync_fresh_records}", f"election_timeout_ms = {c.election_timeout_ms}",
             f"auto_failover = {'true' if c.auto_failover else 'false'}",
             f"max_lag_on_failover = {c.max_lag_on_failover}",
             f"allow_stale_reads = {'true' if c.allow_stale_reads else 'false'}",
             f'log_format = "{c.log_format}"', f"statement_unsafe = {'true' if c.statement_unsafe else 'false'}", ""]
    if c.partitions > 1:
        lines += [f"partition = {c.partition}", f"partitions = {c.partitions}", ""]
        for p, addrs in sorted(c.partition_map.items()):
            for host, port in addrs:
                lines += ["[[partition_nodes]]", f"partition = {p}", f'host = "{host}"', f"port = {port}", ""]
    if c.links:
        lines.append("[links]")
        for (src, dst), (host, port) in sorted(c.links.items()):
            lines.append(f'"{src}->{dst}" = "{host}:{port}"')
        lines.append("")
    for t in c.triggers:
        lines += t.to_toml()
    for n in c.nodes:
        lines += ["[[nodes]]", f"id = {n.node_id}", f'host = "{n.host}"', f"port = {n.port}",
                  f"peer_port = {n.peer_port}", f"http_port = {n.http_port}", ""]
    return "\n".join(lines)


SLOTS = 16384


def key_slot(key: bytes) -> int:
    """Redis Cluster's hash slot: CRC16 (XMODEM) of the key, or of its {hash tag} if it has a
    non-empty one, so ``{user42}:name`` and ``{user42}:email`` land together."""
    import binascii

    s = key.find(b"{")
    if s >= 0:
        e = key.find(b"}", s + 1)
        if e > s + 1:
            key = key[s + 1:e]
    return binascii.crc_hqx(key, 0) % SLOTS


def partition_of_slot(slot: int, partitions: int) -> int:
    """Partitions own contiguous slot ranges, in order (1-based)."""
    return slot * partitions // SLOTS + 1


def slot_range(partition: int, partitions: int) -> tuple[int, int]:
    lo = -(-((partition - 1) * SLOTS) // partitions)
    hi = -(-(partition * SLOTS) // partitions) - 1
    return lo, hi
