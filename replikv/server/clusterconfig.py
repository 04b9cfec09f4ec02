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

A node picks its own entry by ``--node-id``. Errors name the bad field.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field

from ..core.replication import AckPolicy, PolicyError
from .config import ConfigError

MODES = ("leader",)


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
        for name in ("auto_failover", "allow_stale_reads"):
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
                        "allow_stale_reads", "partition", "partitions"):
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
             f"allow_stale_reads = {'true' if c.allow_stale_reads else 'false'}", ""]
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
