"""The fault agent of a local cluster: link proxies plus an HTTP admin API for faults.

``replikv up`` starts one agent per leader-mode cluster (``python -m replikv.cluster.agent
ROOT``). It owns one LinkProxy per directed pair of nodes (the cluster file routes each
node's peer traffic through them) and answers, on ``base_port + 399``:

  GET  /faults                          the state of every link and node
  POST /fault/kill?node=N               SIGKILL the node          POST /fault/restart?node=N
  POST /fault/pause?node=N              SIGSTOP                   POST /fault/resume?node=N
  POST /fault/partition?nodes=1,2       cut every link between {1,2} and the others
  POST /fault/link?src=1&dst=2&cut=1&delay_ms=50&jitter_ms=20&drop=0.1&both=1
  POST /fault/heal                      restore every link
  POST /fault/skew?node=N&ms=500        the node's clock runs 500 ms ahead (DEBUG SKEW)

The same operations are available to tests through ``FaultClient`` and to operators
through ``replikv fault ...``. Every fault is explicit and reversible.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import urllib.parse
import urllib.request

from aiohttp import web

from .local import LocalCluster
from .proxy import LinkProxy, LinkState

log = logging.getLogger("replikv.agent")

AGENT_OFFSET = 399
PROXY_OFFSET = 400


def proxy_port(base_port: int, src: int, dst: int) -> int:
    return base_port + PROXY_OFFSET + 10 * (src - 1) + (dst - 1)


def agent_port(base_port: int) -> int:
    return base_port + AGENT_OFFSET


class Agent:
    def __init__(self, cluster: LocalCluster) -> None:
        self.cl = cluster
        self.base = cluster.nodes[0].port
        self.proxies: dict[tuple[int, int], LinkProxy] = {}
        self.skews: dict[int, int] = {}
        self.events: list[dict] = []

    async def start(self) -> None:
        if not self.cl.cluster_settings.get("net_faults"):
            return      # links are direct: kill / pause / restart / skew only
        ids = [n.node_id for n in self.cl.nodes]
        for s in ids:
            for d in ids:
                if s == d or self.cl.node(s).partition != self.cl.node(d).partition:
                    continue
                dst = self.cl.node(d)
                p = LinkProxy(s, d, dst.host, proxy_port(self.base, s, d), dst.host, dst.peer_port)
                await p.start()
                self.proxies[(s, d)] = p

    def record(self, kind: str, **detail) -> None:
        import time

        self.events.append({"time_ms": int(time.time() * 1000), "fault": kind, **detail})
        self.events = self.events[-500:]
        log.info("fault %s %s", kind, detail)

    def set_link(self, s: int, d: int, **kw) -> None:
        if not self.proxies:
            raise ValueError("links are not proxied in this cluster; start it with --net-faults")
        p = self.proxies[(s, d)]
        was_cut = p.state.cut
        for k, v in kw.items():
            setattr(p.state, k, v)
        if was_cut and not p.state.cut:
            p.reset_connections()   # streams that lost bytes while cut start afresh

    def heal(self) -> None:
        for (s, d), p in self.proxies.items():
            if not p.state.healthy():
                self.set_link(s, d, cut=False, delay_ms=0, jitter_ms=0, drop=0.0)

    def partition(self, group: set[int]) -> None:
        for (s, d) in self.proxies:
            if (s in group) != (d in group):
                self.set_link(s, d, cut=True)

    def state(self) -> dict:
        links = {f"{s}->{d}": {"cut": p.state.cut, "delay_ms": p.state.delay_ms, "jitter_ms": p.state.jitter_ms,
                               "drop": p.state.drop, "bytes": p.bytes_forwarded}
                 for (s, d), p in sorted(self.proxies.items())}
        nodes = {}
        for n in self.cl.nodes:
            pid = self.cl.pid(n)
            st = "down"
            if pid is not None:
                try:
                    with open(f"/proc/{pid}/stat") as fh:
                        st = "paused" if fh.read().split()[2] == "T" else "running"
                except OSError:
                    st = "running"
            nodes[str(n.node_id)] = {"state": st, "pid": pid, "skew_ms": self.skews.get(n.node_id, 0)}
        return {"links": links, "nodes": nodes, "events": self.events[-50:]}


def build_app(agent: Agent) -> web.Application:
    app = web.Application()
    cl = agent.cl

    def ids(q: str) -> list[int]:
        return [int(x) for x in q.split(",") if x.strip()]

    async def faults(request):
        return web.json_response(agent.state())

    async def do(request):
        op = request.match_info["op"]
        q = request.query
        loop = asyncio.get_running_loop()
        try:
            if op in ("kill", "restart", "pause", "resume", "stop"):
                node = int(q["node"])
                if op == "kill":
                    await loop.run_in_executor(None, cl.kill, node)
                elif op == "restart":
                    await loop.run_in_executor(None, lambda: cl.start_node(cl.node(node), wait=True))
                elif op == "pause":
                    cl.pause(node)
                elif op == "resume":
                    cl.resume(node)
                else:
                    await loop.run_in_executor(None, cl.stop_node, node)
                agent.record(op, node=node)
            elif op == "partition":
                group = set(ids(q["nodes"]))
                agent.partition(group)
                agent.record("partition", nodes=sorted(group))
            elif op == "heal":
                agent.heal()
                agent.record("heal")
            elif op == "link":
                s, d = int(q["src"]), int(q["dst"])
                kw = {}
                if "cut" in q:
                    kw["cut"] = q["cut"] in ("1", "true", "yes")
                for k in ("delay_ms", "jitter_ms"):
                    if k in q:
                        kw[k] = int(q[k])
                if "drop" in q:
                    kw["drop"] = float(q["drop"])
                pairs = [(s, d), (d, s)] if q.get("both", "1") in ("1", "true") else [(s, d)]
                for a, b in pairs:
                    agent.set_link(a, b, **kw)
                agent.record("link", src=s, dst=d, **kw)
            elif op == "skew":
                node, ms = int(q["node"]), int(q["ms"])
                import redis

                spec = cl.node(node)
                redis.Redis(host=spec.host, port=spec.port, socket_timeout=2).execute_command("DEBUG", "SKEW", ms)
                agent.skews[node] = ms
                agent.record("skew", node=node, ms=ms)
            else:
                return web.json_response({"error": f"unknown fault {op}"}, status=404)
        except (KeyError, ValueError) as e:
            return web.json_response({"error": f"bad parameters: {e}"}, status=400)
        except Exception as e:  # noqa: BLE001 - reported to the caller
            return web.json_response({"error": str(e)}, status=500)
        return web.json_response(agent.state())

    app.router.add_get("/faults", faults)
    app.router.add_post("/fault/{op}", do)
    return app


async def serve(root: str) -> None:
    cl = LocalCluster.load(root)
    agent = Agent(cl)
    await agent.start()
    runner = web.AppRunner(build_app(agent), access_log=None)
    await runner.setup()
    host = cl.nodes[0].host
    await web.TCPSite(runner, host, agent_port(agent.base), reuse_address=True).start()
    log.info("fault agent for %s on http://%s:%d", root, host, agent_port(agent.base))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for p in agent.proxies.values():
        await p.stop()
    await runner.cleanup()


class FaultClient:
    """Faults from a test or the CLI, through the agent's HTTP API."""

    def __init__(self, host: str, port: int) -> None:
        self.url = f"http://{host}:{port}"

    @classmethod
    def for_cluster(cls, cl: LocalCluster) -> FaultClient:
        n = cl.nodes[0]
        return cls(n.host, agent_port(n.port))

    def _post(self, op: str, **params) -> dict:
        q = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        req = urllib.request.Request(f"{self.url}/fault/{op}?{q}", method="POST", data=b"")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise RuntimeError(json.loads(e.read()).get("error", str(e))) from None

    def state(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/faults", timeout=5) as r:
            return json.loads(r.read())

    def kill(self, node: int) -> dict:
        return self._post("kill", node=node)

    def restart(self, node: int) -> dict:
        return self._post("restart", node=node)

    def pause(self, node: int) -> dict:
        return self._post("pause", node=node)

    def resume(self, node: int) -> dict:
        return self._post("resume", node=node)

    def partition(self, nodes) -> dict:
        return self._post("partition", nodes=",".join(str(n) for n in nodes))

    def heal(self) -> dict:
        return self._post("heal")

    def link(self, src: int, dst: int, cut=None, delay_ms=None, jitter_ms=None, drop=None, both=True) -> dict:
        return self._post("link", src=src, dst=dst, cut=None if cut is None else int(cut), delay_ms=delay_ms,
                          jitter_ms=jitter_ms, drop=drop, both=int(both))

    def skew(self, node: int, ms: int) -> dict:
        return self._post("skew", node=node, ms=ms)


def main() -> None:
    logging.basicConfig(level="INFO", stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(sys.argv[1]))


if __name__ == "__main__":
    main()


__all__ = ["Agent", "FaultClient", "LinkState", "agent_port", "proxy_port"]
