"""Prometheus metrics for one node.

Hot-path counters (commands by name) are plain dict increments; a custom collector turns
them into Prometheus samples only when ``/metrics`` is scraped, so counting costs the
command path next to nothing.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class NodeMetrics:
    def __init__(self, node) -> None:
        self.node = node
        self.registry = CollectorRegistry()
        self.ops: dict[bytes, int] = {}
        self.errors: dict[bytes, int] = {}
        self.fsync_seconds = Histogram(
            "replikv_fsync_seconds", "Time spent in fsync of the log", registry=self.registry,
            buckets=(0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5))
        self.snapshots = Counter("replikv_snapshots", "Snapshots written", registry=self.registry)
        self.registry.register(_Collector(self))

    def count(self, name: bytes, error: bool = False) -> None:
        d = self.errors if error else self.ops
        d[name] = d.get(name, 0) + 1

    def error_total(self) -> int:
        return sum(self.errors.values())

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
        unknown.add_metric([], sum(self.m.errors.values()))
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
        yield GaugeMetricFamily("replikv_epoch", "Current epoch (term)", value=st.epoch)
        pe = CounterMetricFamily("replikv_protocol_errors", "Connections closed for protocol errors")
        pe.add_metric([], node.stats_protocol_errors)
        yield pe
        for fam in node.extra_metrics():
            yield fam
