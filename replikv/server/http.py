"""HTTP for one node: /health, /status (JSON), /metrics (Prometheus text format).

Runs on the node's own event loop (aiohttp); later issues add the admin API and the
dashboard on the same server.
"""

from __future__ import annotations

import os

from aiohttp import web

PROM_TEXT = "text/plain; version=0.0.4; charset=utf-8"  # what generate_latest writes


async def start_http(node, host: str, port: int) -> web.AppRunner:
    app = web.Application()

    async def health(request):
        return web.json_response({"ok": True, "node_id": node.config.node_id, "role": node.role,
                                  "pid": os.getpid()})

    async def status(request):
        return web.json_response(node.status())

    async def metrics(request):
        return web.Response(body=node.metrics.render(), headers={"Content-Type": PROM_TEXT})

    app.router.add_get("/health", health)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    for route in node.http_routes():
        app.router.add_route(*route)
    from .dashboard import add_dashboard_routes

    add_dashboard_routes(app, node)   # /dashboard, /events, /cluster, /admin/...
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    return runner
