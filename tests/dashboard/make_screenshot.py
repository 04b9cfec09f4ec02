"""Make docs/dashboard.png from a real run (not a test): a three-node cluster under load, a
follower given an apply delay and a switchover, both through the page's own buttons, in the
same headless Chromium the tests use.

    python -m tests.dashboard.make_screenshot [docs/dashboard.png]
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time

from playwright.sync_api import sync_playwright

from replikv.cluster.local import LocalCluster
from replikv.scenarios._base import client, free_base_port, streaming, wait_for
from tests.dashboard.test_dashboard import ARGS, CHROMIUM


def main(out: str = "docs/dashboard.png") -> None:
    root = tempfile.mkdtemp(prefix="replikv-shot-")
    cl = LocalCluster.create(root, 3, free_base_port(3, True, start=31000), mode="leader",
                             cluster_settings={"ack": "semi-sync:1", "net_faults": True})
    cl.start()
    stop = threading.Event()
    try:
        wait_for(lambda: streaming(cl, 1, [1, 2, 3]), 30, "followers streaming")

        def load():
            n = 0
            while not stop.is_set():
                try:
                    leader = cl.leader()
                    r = client(leader.port)
                    while not stop.wait(0.01):
                        p = r.pipeline(transaction=False)
                        for _ in range(8):
                            p.incr(f"page:{n % 50}:views")
                            n += 1
                        p.execute()
                        client(cl.nodes[n % 3].port).get(f"page:{n % 50}:views")
                except Exception:  # noqa: BLE001 - the leader changes during the switchover
                    time.sleep(0.05)

        threading.Thread(target=load, daemon=True).start()
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = b.new_page(viewport={"width": 1400, "height": 700})
            page.on("dialog", lambda d: d.accept())
            page.goto(f"http://127.0.0.1:{cl.node(1).http_port}/dashboard")
            page.wait_for_selector('[data-testid=node-card][data-node="3"][data-role=follower]')
            time.sleep(8)                                   # some history for the charts
            page.fill('[data-node="3"] [data-testid=delay-ms]', "1500")
            page.click('[data-node="3"] [data-testid=set-delay]')
            time.sleep(12)
            page.select_option("[data-testid=switchover-to]", "2")
            page.click("[data-testid=switchover]")
            page.wait_for_function("() => document.querySelector('[data-testid=leader]').dataset.leader === '2'")
            time.sleep(12)
            page.screenshot(path=out, full_page=True)
            b.close()
        print(f"wrote {out}")
    finally:
        stop.set()
        for n in cl.nodes:
            cl.kill(n.node_id)
        cl.stop_agent()


if __name__ == "__main__":
    main(*sys.argv[1:])
