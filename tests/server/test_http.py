"""The node's HTTP side against a real node process: /health, /status (JSON) and /metrics
(Prometheus text format, parsed with prometheus_client's own parser)."""

from __future__ import annotations

import os
import urllib.error
import urllib.request

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import client, wait_for


def scrape(cl) -> dict:
    """name -> list of samples, from one /metrics scrape."""
    n = cl.nodes[0]
    with urllib.request.urlopen(f"http://{n.host}:{n.http_port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    return {fam.name: fam for fam in text_string_to_metric_families(text)}


def value(fams: dict, family: str, sample: str | None = None, **labels) -> float:
    fam = fams[family]
    for s in fam.samples:
        if (sample is None or s.name == sample) and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return 0.0


@pytest.fixture
def node_always(cluster_factory):
    cl = cluster_factory(1, fsync="always")
    cl.start()
    return cl


def test_health_and_status(node_always):
    cl = node_always
    n = cl.nodes[0]
    health = cl.http_get(n, "/health")
    assert health["ok"] is True and health["node_id"] == 1 and health["pid"] == cl.pid(n)
    r = client(n.port)
    for i in range(5):
        assert r.set(f"k{i}", i)
    st = cl.http_get(n, "/status")
    assert st["address"] == n.address
    assert st["http"] == f"{n.host}:{n.http_port}" and st["peer"] == f"{n.host}:{n.peer_port}"
    assert st["role"] == "leader"
    assert st["keys"] == 5
    assert st["last_seq"] >= 5 and st["synced_seq"] == st["last_seq"]   # fsync always: acked means synced
    assert st["fsync"] == "always"
    assert st["clients"] >= 1
    assert st["data_dir"] == os.path.abspath(n.data_dir)
    with pytest.raises(urllib.error.HTTPError) as e:
        cl.http_get(n, "/no-such-page")
    assert e.value.code == 404


def test_metrics_families_and_counters_move(node_always):
    cl = node_always
    n = cl.nodes[0]
    fams = scrape(cl)
    for family, kind in [("replikv_commands", "counter"), ("replikv_unknown_commands", "counter"),
                         ("replikv_connected_clients", "gauge"), ("replikv_log_position", "gauge"),
                         ("replikv_fsync_seconds", "histogram"), ("replikv_keys", "gauge"),
                         ("replikv_protocol_errors", "counter"), ("replikv_log_bytes", "gauge")]:
        assert family in fams, f"missing metric family {family}"
        assert fams[family].type == kind, (family, fams[family].type)
    sets0 = value(fams, "replikv_commands", command="set")
    gets0 = value(fams, "replikv_commands", command="get")
    fsyncs0 = value(fams, "replikv_fsync_seconds", "replikv_fsync_seconds_count")
    last0 = value(fams, "replikv_log_position", stage="last")

    r = client(n.port)
    for i in range(7):
        assert r.set(f"m{i}", "x")
    for i in range(3):
        assert r.get(f"m{i}") == b"x"
    others = [client(n.port) for _ in range(3)]
    for o in others:
        assert o.ping()
    for name in ("NOPE1", "NOPE2", "NOPE3"):
        with pytest.raises(redis.ResponseError, match="unknown command"):
            r.execute_command(name)

    fams = scrape(cl)
    assert value(fams, "replikv_commands", command="set") == sets0 + 7
    assert value(fams, "replikv_commands", command="get") == gets0 + 3
    assert value(fams, "replikv_unknown_commands") == 3
    # unknown names are not labels: a client cannot grow the metric set
    labels = {s.labels.get("command") for s in fams["replikv_commands"].samples}
    assert not any(lbl and lbl.startswith("nope") for lbl in labels)
    assert value(fams, "replikv_connected_clients") >= 4
    assert value(fams, "replikv_log_position", stage="last") >= last0 + 7
    assert value(fams, "replikv_log_position", stage="synced") == value(fams, "replikv_log_position", stage="last")
    assert value(fams, "replikv_keys") == 7
    # fsync always: every acknowledged write went through at least one timed fsync
    assert value(fams, "replikv_fsync_seconds", "replikv_fsync_seconds_count") > fsyncs0
    assert value(fams, "replikv_fsync_seconds", "replikv_fsync_seconds_sum") > 0

    for o in others:
        o.connection_pool.disconnect()
    wait_for(lambda: value(scrape(cl), "replikv_connected_clients") == 1, what="clients gauge to drop")


def test_protocol_error_counter(node):
    import socket

    n = node.nodes[0]
    before = value(scrape(node), "replikv_protocol_errors")
    with socket.create_connection(("127.0.0.1", n.port), timeout=10) as s:
        s.sendall(b"*x\r\n")
        assert s.recv(1024).startswith(b"-ERR Protocol error")
    assert value(scrape(node), "replikv_protocol_errors") == before + 1
