"""The dashboard: one self-contained page (``static/dashboard.html``: vanilla JS, inline SVG
charts, no build step, nothing fetched from the internet) that every node serves at
``/dashboard``. Its server side (the ``/events`` feed, admin actions) is
``replikv/server/dashboard.py``; this package holds the page and the CLI's helpers."""

from __future__ import annotations

import os
import sys


def dashboard_url(cluster, node_id: int | None = None) -> str:
    """The dashboard of a LocalCluster, served by ``node_id`` (default: the first node)."""
    n = cluster.node(node_id) if node_id is not None else cluster.nodes[0]
    return f"http://{n.host}:{n.http_port}/dashboard"


def has_display() -> bool:
    """Is there a screen a browser could open on? (Not on a server or in CI.)"""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def announce(cluster, echo=print, open_browser: bool = True) -> str:
    """Print the dashboard's URL; open it in a browser when there is a display."""
    url = dashboard_url(cluster)
    echo(f"dashboard: {url}  (served by every node at /dashboard; follows the cluster if this node dies)")
    if open_browser and has_display():
        import webbrowser

        try:
            webbrowser.open(url, new=2)
        except Exception:  # noqa: BLE001 - no browser: the URL is printed anyway
            pass
    return url
