"""The dashboard in a real headless browser (Debian's Chromium driven by Playwright) against a
real three-node cluster (MISSION V4): the nodes and their roles, the lag chart moving when a
follower gets an apply delay from the page, and the kill button on the leader ending in a
failover the page shows. Plus the feed and the admin endpoints without a browser."""

from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request

import pytest

from replikv.cluster.local import LocalCluster
from replikv.scenarios._base import free_base_port
from tests.conftest import client, wait_for

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
WAIT_MS = 30_000


def repl(cl: LocalCluster, node_id: int) -> dict:
    return cl.http_get(cl.node(node_id), "/status", timeout=2)["replication"]


def streaming(cl: LocalCluster, leader: int = 1) -> bool:
    fl = repl(cl, leader)["followers"]
    want = {n.node_id for n in cl.nodes} - {leader}
    return {f["node_id"] for f in fl if f["link"] == "up" and f["state"] == "streaming"} >= want


@pytest.fixture
def cluster(tmp_path):
    """Three nodes (node 1 leads), links through the fault agent's proxies."""
    cl = LocalCluster.create(str(tmp_path / "cl"), 3, free_base_port(3, True, start=30000), mode="leader",
                             cluster_settings={"ack": "async", "net_faults": True})
    try:
        cl.start()
        wait_for(lambda: streaming(cl), 30, what="followers streaming")
        yield cl
    finally:
        for n in cl.nodes:
            try:
                cl.kill(n.node_id)
            except Exception:  # noqa: BLE001
                pass
        cl.stop_agent()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (make deps)")
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (make deps installs it)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.on("dialog", lambda d: d.accept())       # every action asks confirm() first
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    ctx.close()
    assert not errors, f"errors in the page: {errors}"


def url(cl: LocalCluster, node_id: int = 1) -> str:
    n = cl.node(node_id)
    return f"http://{n.host}:{n.http_port}/dashboard"


def card(node_id: int) -> str:
    return f'[data-testid=node-card][data-node="{node_id}"]'


class Writer(threading.Thread):
    """Writes to the leader until stopped, so that lag has something to measure."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.r = client(port, socket_timeout=5)
        self.stop_ev = threading.Event()
        self.n = 0

    def run(self) -> None:
        while not self.stop_ev.wait(0.01):           # pacing the load, not synchronising
            try:
                p = self.r.pipeline(transaction=False)
                for _ in range(10):
                    p.incr(f"ctr:{self.n % 16}")
                    self.n += 1
                p.execute()
            except Exception:  # noqa: BLE001 - a failover under way: keep trying
                pass

    def stop(self) -> None:
        self.stop_ev.set()
        self.join(10)


# ---------------------------------------------------------------------------- in the browser
def test_page_lists_three_nodes_with_their_roles(cluster, page):
    page.goto(url(cluster))
    page.wait_for_function(
        "() => { const cs = [...document.querySelectorAll('[data-testid=node-card]')];"
        " return cs.length === 3 && cs.every(c => c.dataset.role === 'leader' || c.dataset.role === 'follower'); }",
        timeout=WAIT_MS)
    roles = {c.get_attribute("data-node"): c.get_attribute("data-role")
             for c in page.query_selector_all("[data-testid=node-card]")}
    assert roles == {"1": "leader", "2": "follower", "3": "follower"}
    assert page.inner_text(f"{card(1)} [data-testid=role]") == "leader"
    assert page.inner_text(f"{card(2)} [data-testid=role]") == "follower"
    assert page.inner_text(f"{card(3)} [data-testid=health]") == "up"
    assert page.get_attribute("[data-testid=leader]", "data-leader") == "1"
    assert "ack: async" in page.inner_text("[data-testid=ack]")
    page.wait_for_selector("[data-testid=timeline] li[data-kind=leader]", timeout=WAIT_MS)


def test_lag_chart_moves_when_a_follower_gets_an_apply_delay(cluster, page):
    w = Writer(cluster.node(1).port)
    w.start()
    try:
        page.goto(url(cluster))
        chart = f"{card(3)} [data-testid=lag-seconds-chart]"
        # the rates chart and the lag charts have samples; node 3 keeps up (no apply lag yet)
        page.wait_for_function(f"() => (document.querySelector('{chart}') || {{dataset: {{}}}}).dataset.maxApplied"
                               " !== undefined && document.querySelector('[data-testid=rates-chart]')"
                               ".dataset.maxWrites > 0", timeout=WAIT_MS)
        assert float(page.get_attribute(chart, "data-max-applied")) < 1.0
        page.fill(f"{card(3)} [data-testid=delay-ms]", "1500")
        page.click(f"{card(3)} [data-testid=set-delay]")
        wait_for(lambda: repl(cluster, 3)["apply_delay_ms"] == 1500, 15, what="node 3's apply delay set")
        # the chart climbs toward the delay: applied lag of about 1.5 s, in seconds and in entries
        page.wait_for_function(f"() => Number(document.querySelector('{chart}').dataset.maxApplied) >= 1.0",
                               timeout=WAIT_MS)
        entries = f"{card(3)} [data-testid=lag-entries-chart]"
        assert float(page.get_attribute(entries, "data-max-applied")) > 0
        assert float(page.get_attribute(f"{card(2)} [data-testid=lag-seconds-chart]", "data-max-applied")) < 1.0
        page.wait_for_selector("[data-testid=timeline] li[data-kind=delay]", timeout=WAIT_MS)
        assert "delay 1500 ms" in page.inner_text(f"{card(3)} .facts")
    finally:
        w.stop()


def test_kill_button_on_the_leader_shows_the_failover(cluster, page):
    # the page comes from the leader itself: when it dies, the page follows the cluster
    page.goto(url(cluster, 1))
    page.wait_for_function("() => document.querySelector('[data-testid=leader]').dataset.leader === '1'",
                           timeout=WAIT_MS)
    page.wait_for_selector(f"{card(1)}[data-role=leader]", timeout=WAIT_MS)
    page.click(f"{card(1)} [data-testid=kill]")
    page.wait_for_function("() => ['2', '3'].includes(document.querySelector('[data-testid=leader]').dataset.leader)",
                           timeout=WAIT_MS)
    page.wait_for_selector("[data-testid=timeline] li[data-kind=failover]", timeout=WAIT_MS)
    page.wait_for_selector(f"{card(1)}[data-health=down]", timeout=WAIT_MS)
    new = page.get_attribute("[data-testid=leader]", "data-leader")
    assert page.get_attribute(f'{card(int(new))}', "data-role") == "leader"
    assert repl(cluster, int(new))["role"] == "leader"
    assert not cluster.is_running(cluster.node(1))
    failover = page.inner_text("[data-testid=timeline] li[data-kind=failover]")
    assert f"node {new} leads epoch" in failover and "was node 1" in failover
    assert page.get_attribute("[data-testid=feed]", "data-source") in ("2", "3")


def test_link_pause_and_switchover_buttons(cluster, page):
    page.goto(url(cluster, 3))
    page.wait_for_selector(f"{card(1)}[data-role=leader]", timeout=WAIT_MS)
    # cut the link between nodes 2 and 3 (followers: no election), then restore it
    page.wait_for_function("() => !document.querySelector('[data-testid=link-cut]').disabled", timeout=WAIT_MS)
    page.select_option("#ln-src", "2")
    page.select_option("#ln-dst", "3")
    page.click("[data-testid=link-cut]")
    page.wait_for_selector("[data-testid=timeline] li[data-kind=link]", timeout=WAIT_MS)
    faults = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{cluster.nodes[0].port + 399}/faults").read())
    assert faults["links"]["2->3"]["cut"] and faults["links"]["3->2"]["cut"]
    page.click("[data-testid=link-restore]")
    page.wait_for_function("() => document.querySelector('#links-note').textContent === 'all links up'",
                           timeout=WAIT_MS)
    # pause node 2 (sent through another node than the paused one), resume it
    page.click(f"{card(2)} [data-testid=pause]")
    page.wait_for_selector(f"{card(2)}[data-health=paused]", timeout=WAIT_MS)
    page.click(f"{card(2)} [data-testid=resume]")
    page.wait_for_selector(f"{card(2)}[data-health=up]", timeout=WAIT_MS)
    wait_for(lambda: streaming(cluster), 30, what="node 2 streaming again")
    # switchover to node 2 from the page
    page.select_option("[data-testid=switchover-to]", "2")
    page.click("[data-testid=switchover]")
    page.wait_for_function("() => document.querySelector('[data-testid=leader]').dataset.leader === '2'",
                           timeout=WAIT_MS)
    page.wait_for_selector("[data-testid=timeline] li[data-kind=failover]", timeout=WAIT_MS)
    assert "node 2 leads" in page.inner_text("[data-testid=message]")


# ---------------------------------------------------------------------------- without a browser
def post(cl, node_id: int, path: str, origin: str | None = None) -> tuple[int, dict]:
    n = cl.node(node_id)
    req = urllib.request.Request(f"http://{n.host}:{n.http_port}{path}", data=b"", method="POST")
    if origin:
        req.add_header("Origin", origin)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_feed_and_admin_endpoints(cluster):
    n1 = cluster.node(1)
    view = cluster.http_get(n1, "/cluster")
    assert [r["node_id"] for r in view["nodes"]] == [1, 2, 3]
    assert all(r["reachable"] for r in view["nodes"])
    assert view["summary"]["leader"] == 1 and view["summary"]["leaders_with_lease"] == [1]
    assert view["agent"]["reachable"] and "1->2" in view["agent"]["links"]
    assert {"total", "reads", "writes"} <= set(view["nodes"][0]["status"]["commands"])
    # the SSE feed: a first view at once
    with urllib.request.urlopen(f"http://{n1.host}:{n1.http_port}/events", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        line = b""
        while not line.startswith(b"data: "):
            line = r.readline()
        first = json.loads(line[6:])
    assert first["source"] == 1 and len(first["nodes"]) == 3
    # REPLICA DELAY through the leader's HTTP, forwarded to node 2; refused on the leader itself
    assert post(cluster, 1, "/admin/replica-delay?ms=250&node=2") == (200, {"ok": True, "node": 2,
                                                                           "apply_delay_ms": 250})
    assert repl(cluster, 2)["apply_delay_ms"] == 250
    code, body = post(cluster, 1, "/admin/replica-delay?ms=10")
    assert code == 409 and "not a follower" in body["error"]
    assert post(cluster, 1, "/admin/replica-delay?ms=-1")[0] == 400
    # another web site cannot drive the cluster; the cluster's own dashboards can
    code, body = post(cluster, 1, "/admin/fault/pause?node=2", origin="http://evil.example")
    assert code == 403
    assert cluster.is_running(cluster.node(2)) and repl(cluster, 2)["apply_delay_ms"] == 250
    code, body = post(cluster, 2, "/admin/replica-delay?ms=0", origin=f"http://127.0.0.1:{n1.http_port}")
    assert code == 200
    # switchover from a follower's HTTP: forwarded to the leader, which hands over
    code, body = post(cluster, 3, "/admin/failover?to=2")
    assert code == 200, body
    assert "node 2 leads" in body["message"]
    wait_for(lambda: repl(cluster, 2)["role"] == "leader" and repl(cluster, 2)["lease"], 20, what="node 2 leading")
