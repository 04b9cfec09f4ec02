"""Prometheus metrics for one node.

Hot-path counters (commands by name) are plain dict increments; a custom collector turns
them into Prometheus samples only when ``/metrics`` is scraped, so counting costs the
command path next to nothing.
"""

from __future__ import annotations

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

# no ``*_created`` timestamp series beside every counter and histogram: noise in a node's scrape
getattr(prometheus_client, "disable_created_metrics", lambda: None)()


class NodeMetrics:
    def __init__(self, node) -> None:
        self.node = node
        self.registry = CollectorRegistry()
        self.ops: dict[bytes, int] = {}   # known commands only: a bounded set of labels
        self.unknown = 0                  # unknown commands: one number, whatever names clients send
        self.fsync_seconds = Histogram(
            "replikv_fsync_seconds", "Time spent in fsync of the log", registry=self.registry,
            buckets=(0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5))
        self.snapshots = Counter("replikv_snapshots", "Snapshots written", registry=self.registry)
        self.full_resyncs = Counter("replikv_full_resyncs", "Followers (re)started from a full snapshot",
                                    registry=self.registry)
        self.semisync_fallbacks = Counter("replikv_semisync_fallbacks",
                                          "Times semi-sync fell back to async after the ack timeout",
                                          registry=self.registry)
        self.leader_changes = Counter("replikv_leader_elections_won",
                                      "Times this node became the leader by election", registry=self.registry)
        self.lost_writes = Counter("replikv_lost_writes",
                                   "Records removed by a rollback after failover (see lost-writes.jsonl)",
                                   registry=self.registry)
        self.ack_timeouts = Counter("replikv_ack_timeouts",
                                    "Writes answered 'outcome unknown' after the ack timeout (strict/sync)",
                                    registry=self.registry)
        self.registry.register(_Collector(self))

    def count(self, name: bytes, error: bool = False) -> None:
        """Count a command; ``error`` marks an unknown one, whose name is not kept (a label per
        garbage name would let any client grow this node's memory and every scrape)."""
        if error:
            self.unknown += 1
        else:
            self.ops[name] = self.ops.get(name, 0) + 1

    def error_total(self) -> int:
        return self.unknown

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Collector:
    def __init__(self, m: NodeMetrics) -> None:
        self.m = m

    def collect(self):
        node = self.m.node
        ops = CounterMetricFamily("replikv_commands", "Commands processed, by command", labels=["command"])
        for name, n in sorted(self.m.ops.items()):
            ops.add_metric([name.decode("utf-8", "replace").lower()[:64]], n)
        yield ops
        unknown = CounterMetricFamily("replikv_unknown_commands", "Unknown commands received")
        unknown.add_metric([], self.m.unknown)
        yield unknown
        st = node.storage
        g = GaugeMetricFamily("replikv_log_position", "Log positions (seq) by stage", labels=["stage"])
        g.add_metric(["last"], st.last_seq)
        g.add_metric(["written"], st.written_seq)
        g.add_metric(["synced"], st.synced_seq)
        g.add_metric(["visible"], node.visible_seq)
        yield g
        yield GaugeMetricFamily("replikv_connected_clients", "Connected clients", value=len(node.clients))
        yield GaugeMetricFamily("replikv_keys", "Keys in the keyspace", value=len(st.ks))
        yield GaugeMetricFamily("replikv_log_bytes", "Bytes in log segments on disk", value=st.log.total_bytes())
        yield GaugeMetricFamily("replikv_epoch", "Current epoch (term)",
                                value=node.repl.election.epoch if node.repl is not None else st.epoch)
        yield GaugeMetricFamily("replikv_is_leader", "1 if this node is the leader",
                                value=1 if node.role == "leader" else 0)
        pe = CounterMetricFamily("replikv_protocol_errors", "Connections closed for protocol errors")
        pe.add_metric([], node.stats_protocol_errors)
        yield pe
        for fam in node.extra_metrics():
            yield fam


def replication_families(node):
    """Per-follower positions and lag (leader), own positions and lag (follower)."""
    r = node.repl
    now = node.clock.now_ms()
    if node.role == "leader":
        pos = GaugeMetricFamily("replikv_follower_position", "Follower positions seen by the leader",
                                labels=["follower", "stage"])
        lag_e = GaugeMetricFamily("replikv_follower_lag_entries", "Follower lag in log entries",
                                  labels=["follower", "stage"])
        lag_s = GaugeMetricFamily("replikv_follower_lag_seconds", "Follower lag in seconds",
                                  labels=["follower", "stage"])
        up = GaugeMetricFamily("replikv_follower_connected", "Follower link up (1) or down (0)",
                               labels=["follower"])
        for f in r.leader_core.followers.values():
            fid = str(f.node_id)
            up.add_metric([fid], 1 if f.connected else 0)
            lag = r.leader_core.lag(f, now)
            for stage in ("received", "flushed", "applied"):
                pos.add_metric([fid, stage], f.pos(stage))
                lag_e.add_metric([fid, stage], lag[stage]["entries"])
                lag_s.add_metric([fid, stage], lag[stage]["seconds"])
        yield pos
        yield lag_e
        yield lag_s
        yield up
        yield GaugeMetricFamily("replikv_semisync_degraded", "1 while semi-sync has fallen back to async",
                                value=1 if r.leader_core.degraded else 0)
    else:
        fc = r.follower_core
        lag = fc.apply_lag(now)
        pos = GaugeMetricFamily("replikv_replica_position", "This follower's positions", labels=["stage"])
        lag_e = GaugeMetricFamily("replikv_replica_lag_entries", "This follower's lag in entries", labels=["stage"])
        lag_s = GaugeMetricFamily("replikv_replica_lag_seconds", "This follower's lag in seconds", labels=["stage"])
        for stage, v in (("received", r.relay_written), ("flushed", r.relay_synced), ("applied", fc.applied)):
            pos.add_metric([stage], v)
            lag_e.add_metric([stage], lag[stage]["entries"])
            lag_s.add_metric([stage], lag[stage]["seconds"])
        yield pos
        yield lag_e
        yield lag_s
        yield GaugeMetricFamily("replikv_replica_link_up", "Link to the leader up", value=1 if fc.link_up else 0)
