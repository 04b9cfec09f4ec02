"""The dashboard's server side: the page, a live feed of the whole cluster, admin actions.

Every node serves, on its HTTP port (routes added by ``add_dashboard_routes``, called from
http.py):

  GET  /dashboard                         the page (replikv/dashboard/static/dashboard.html:
                                          vanilla JS, inline SVG charts, no build step, no CDN)
  GET  /events                            server-sent events: about every 500 ms the cluster view
  GET  /cluster                           the same view once, as JSON
  POST /admin/replica-delay?ms=M[&node=N] REPLICA DELAY on this follower (or forwarded to node N)
  POST /admin/failover[?to=N]             switchover, run by the leader (forwarded to it by others)
  POST /admin/fault/OP?...                the fault agent's ``POST /fault/OP`` (kill, pause, link, ...)

The cluster view: every node of the cluster file with its /status (this node's own without a
round trip, the others' fetched with short timeouts; a node that does not answer is marked
down), the fault agent's /faults if it answers (agent port = first node's port + 399), and
*events* derived from the difference between successive views: a new leader or epoch, a
rollback into lost-writes.jsonl, a full resync, semi-sync falling back and recovering, an
apply delay, a node going down or coming back, faults the agent injected. One poller per
node serves all its open pages, and runs only while one is open.

Cross-origin: the page keeps following the cluster when the node that served it dies, so its
feed and its admin calls may go to another node's port. Those answers carry
Access-Control-Allow-Origin only for the cluster's own dashboard origins, and an admin POST
from any other origin is refused: a page elsewhere on the web cannot kill nodes.

Does not know: replication internals beyond what /status reports and the two calls a
follower and a leader offer to operators (``set_apply_delay``, ``switchover``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
from collections import deque
from importlib import resources

from aiohttp import ClientSession, ClientTimeout, web

log = logging.getLogger("replikv.dashboard")

FEED_INTERVAL_S = 0.5          # one view every 500 ms
PEER_TIMEOUT_S = 0.4           # a peer slower than this to answer /status counts as down
AGENT_OFFSET = 399             # the fault agent of a local cluster: first node's port + 399
MAX_EVENTS = 300
FAULT_TIMEOUT_S = 45           # /fault/restart waits for the node to answer (up to 30 s)


def command_counts(node) -> dict:
    """Commands this process has run: all, and the data commands split into reads and writes
    (what the dashboard turns into rates). Connection commands (PING, INFO ...) count in
    ``total`` only."""
    from ..core.commands import COMMANDS

    reads = writes = 0
    for name, n in node.metrics.ops.items():
        cmd = COMMANDS.get(name)
        if cmd is None:
            continue
        if cmd.is_write:
            writes += n
        else:
            reads += n
    return {"total": node.stats_commands, "reads": reads, "writes": writes}


def page_html() -> bytes:
    return resources.files("replikv.dashboard").joinpath("static", "dashboard.html").read_bytes()


# ---------------------------------------------------------------------------- the cluster view
class ClusterView:
    """Polls the cluster while at least one page listens; derives events from the changes."""

    def __init__(self, node) -> None:
        self.node = node
        self.subscribers: dict[asyncio.Queue, bool] = {}
        self.events: deque = deque(maxlen=MAX_EVENTS)
        self.latest: dict | None = None
        self._next_id = 1
        self._task: asyncio.Task | None = None
        self._session: ClientSession | None = None
        # what earlier views showed, to tell what changed
        self._first = True
        self._nodes: dict[int, dict] = {}      # node id -> {"reachable", "pid", counters ...}
        self._leader: tuple | None = None      # (node id, epoch) of the leader with a lease
        self._last_leader: tuple | None = None # the last one seen, through elections
        self._split: frozenset = frozenset()
        self._agent_seen: set = set()
        self._links_cut: set = set()

    # ---------------------------------------------------------------- peers
    def peers(self) -> list[dict]:
        """Every node this node knows: the cluster file's, or only itself when standalone."""
        cfg = self.node.config
        c = self.node.cluster
        if c is None:
            return [{"node_id": cfg.node_id, "host": cfg.host, "port": cfg.port,
                     "http_port": cfg.effective_http_port}]
        return [{"node_id": n.node_id, "host": n.host, "port": n.port, "http_port": n.http_port} for n in c.nodes]

    def peer(self, node_id: int) -> dict | None:
        return next((p for p in self.peers() if p["node_id"] == node_id), None)

    def agent_address(self) -> tuple[str, int] | None:
        """The fault agent of a local cluster answers on its first node's RESP port + 399 (with
        partitions: the first node of all, the lowest port of the partition map)."""
        c = self.node.cluster
        if c is None or not c.nodes:
            return None
        first = (c.nodes[0].host, c.nodes[0].port)
        for addrs in (getattr(c, "partition_map", None) or {}).values():
            for host, port in addrs:
                if port < first[1]:
                    first = (host, port)
        return first[0], first[1] + AGENT_OFFSET

    def session(self) -> ClientSession:
        if self._session is None or self._session.closed:
            self._session = ClientSession(timeout=ClientTimeout(total=PEER_TIMEOUT_S))
        return self._session

    async def _fetch(self, url: str, timeout: float = PEER_TIMEOUT_S) -> dict:
        async with self.session().get(url, timeout=ClientTimeout(total=timeout)) as r:
            if r.status != 200:
                raise RuntimeError(f"HTTP {r.status}")
            return await r.json()

    async def _node_row(self, p: dict) -> dict:
        row = dict(p)
        if p["node_id"] == self.node.config.node_id:
            row.update(reachable=True, status=self.node.status())
            return row
        try:
            row.update(reachable=True, status=await self._fetch(f"http://{p['host']}:{p['http_port']}/status"))
        except Exception as e:  # noqa: BLE001 - killed, paused, starting, partitioned from us
            row.update(reachable=False, status=None,
                       error="no answer within %d ms" % (PEER_TIMEOUT_S * 1000)
                       if isinstance(e, asyncio.TimeoutError) else (str(e) or type(e).__name__))
        return row

    async def _agent(self) -> dict | None:
        addr = self.agent_address()
        if addr is None:
            return None
        try:
            st = await self._fetch(f"http://{addr[0]}:{addr[1]}/faults")
            return {"reachable": True, "url": f"http://{addr[0]}:{addr[1]}", **st}
        except Exception:  # noqa: BLE001 - no agent (a cluster not started by `replikv up`)
            return {"reachable": False, "url": f"http://{addr[0]}:{addr[1]}"}

    async def collect(self) -> dict:
        rows = await asyncio.gather(*(self._node_row(p) for p in self.peers()))
        agent = await self._agent() if rows else None
        c = self.node.cluster
        view = {"type": "view", "t": int(time.time() * 1000), "source": self.node.config.node_id,
                "interval_ms": int(FEED_INTERVAL_S * 1000), "nodes": list(rows), "agent": agent,
                "partition": getattr(c, "partition", 1), "partitions": getattr(c, "partitions", 1)}
        view["summary"] = summarize(view)
        view["events"] = self.derive(view)
        return view

    # ---------------------------------------------------------------- events
    def record(self, kind: str, text: str, node: int | None = None, t: int | None = None, **extra) -> dict:
        ev = {"id": self._next_id, "t": t or int(time.time() * 1000), "kind": kind, "node": node, "text": text,
              **extra}
        self._next_id += 1
        self.events.append(ev)
        return ev

    def derive(self, view: dict) -> list[dict]:
        """The events between the previous view and this one (recorded, and returned)."""
        out: list[dict] = []

        def ev(kind, text, node=None, t=None, **extra):
            out.append(self.record(kind, text, node, t, **extra))

        first = self._first
        self._first = False
        for row in view["nodes"]:
            nid = row["node_id"]
            prev = self._nodes.get(nid)
            cur = self._nodes.setdefault(nid, {"reachable": None, "pid": None, "lost": None, "resyncs": 0,
                                               "delay": 0, "io": None, "apply": None, "degraded": None,
                                               "ack": None, "role": None, "in_role": 0})
            if not row["reachable"]:
                if cur["reachable"]:
                    ev("node", f"node {nid} stopped answering ({row.get('error')})", nid)
                cur["reachable"] = False
                continue
            st = row["status"]
            rep = st.get("replication") or {}
            pid = st.get("pid")
            if prev is not None and cur["reachable"] is False:
                ev("node", f"node {nid} answers again (pid {pid})", nid)
            elif cur["pid"] is not None and pid != cur["pid"]:
                ev("node", f"node {nid} restarted (pid {cur['pid']} -> {pid})", nid)
            new_process = pid != cur["pid"]
            cur["reachable"] = True
            cur["pid"] = pid
            role = rep.get("role")
            cur["in_role"] = cur["in_role"] + 1 if role == cur["role"] and not new_process else 0
            cur["role"] = role
            lost = int(rep.get("lost_records") or 0)
            if cur["lost"] is None:
                if lost:
                    ev("lost_writes", f"node {nid} has {lost} lost write(s) on record in lost-writes.jsonl", nid)
            elif lost > cur["lost"]:
                ev("lost_writes", f"node {nid} rolled back {lost - cur['lost']} write(s) the new leader never had "
                                  f"into lost-writes.jsonl ({lost} in all)", nid)
            cur["lost"] = lost
            if rep.get("role") == "follower":
                resyncs = int(rep.get("full_resyncs") or 0)
                base = 0 if new_process else cur["resyncs"]
                if resyncs > base:
                    why = rep.get("last_resync_reason") or "no usable log position"
                    ev("full_resync", f"node {nid} was rebuilt from a snapshot (full resync: {why})", nid)
                cur["resyncs"] = resyncs
                delay = int(rep.get("apply_delay_ms") or 0)
                if delay != cur["delay"] and not (first and not delay):
                    ev("delay", f"node {nid} applies {delay} ms behind the leader (REPLICA DELAY)" if delay
                       else f"node {nid} apply delay off", nid)
                cur["delay"] = delay
                for task, key in (("io_task", "io"), ("apply_task", "apply")):
                    # (a node that just changed role starts its tasks: not news)
                    state = rep.get(task)
                    if cur[key] is not None and state != cur[key] and cur["in_role"] >= 3:
                        ev("replica", f"node {nid} {task.replace('_', ' ')} {state}", nid)
                    cur[key] = state
            elif rep.get("role") == "leader":
                degraded = bool(rep.get("semi_sync_degraded"))
                if degraded and not cur["degraded"]:
                    ev("semi_sync", f"semi-sync fell back to async on node {nid}: no follower acknowledged "
                                    f"within {rep.get('ack_timeout_ms')} ms", nid)
                elif cur["degraded"] and not degraded:
                    ev("semi_sync", f"semi-sync restored on node {nid}: a follower caught up", nid)
                cur["degraded"] = degraded
                ack = rep.get("ack")
                if cur["ack"] is not None and ack != cur["ack"]:
                    ev("ack", f"ack mode {cur['ack']} -> {ack}", nid)
                cur["ack"] = ack
        # leadership: who holds a lease, in which epoch
        leaders = view["summary"]["leaders_with_lease"]
        if len(leaders) > 1:
            key = frozenset(leaders)
            if key != self._split:
                ev("split_brain", "SPLIT BRAIN: nodes " + ", ".join(map(str, sorted(leaders)))
                   + " all lead with a lease")
            self._split = key
        else:
            self._split = frozenset()
        lead = (view["summary"]["leader"], view["summary"]["epoch"]) if view["summary"]["leader"] else None
        if lead is not None and lead != self._leader:
            # (key: the same leadership seen by several nodes' feeds is one event on the page)
            key = f"leader:{lead[0]}:{lead[1]}"
            was = self._leader or self._last_leader
            if first:
                ev("leader", f"node {lead[0]} leads epoch {lead[1]}", lead[0], key=key, epoch=lead[1])
            elif was is None or was == lead:
                ev("failover", f"node {lead[0]} leads epoch {lead[1]}", lead[0], key=key, epoch=lead[1])
            else:
                ev("failover", f"node {lead[0]} leads epoch {lead[1]} (was node {was[0]}, epoch {was[1]})",
                   lead[0], key=key, epoch=lead[1])
            self._leader = self._last_leader = lead
        elif lead is None and self._leader is not None and self.node.cluster is not None:
            ev("election", f"no node leads with a lease now (node {self._leader[0]} of epoch "
                           f"{self._leader[1]} lost it): an election may be under way")
            self._leader = None
        # the fault agent: faults injected, links cut and restored
        agent = view.get("agent") or {}
        for e in agent.get("events") or []:
            key = json.dumps(e, sort_keys=True)
            if key in self._agent_seen:
                continue
            self._agent_seen.add(key)
            detail = " ".join(f"{k}={v}" for k, v in e.items() if k not in ("time_ms", "fault"))
            ev("fault", f"fault injected: {e.get('fault')} {detail}".strip(), e.get("node"), e.get("time_ms"))
        if len(self._agent_seen) > 2000:
            self._agent_seen = set(list(self._agent_seen)[-500:])
        cut = {k for k, v in (agent.get("links") or {}).items() if v.get("cut")}
        if agent.get("reachable"):
            for k in sorted(cut - self._links_cut):
                ev("link", f"link {k} cut")
            for k in sorted(self._links_cut - cut):
                ev("link", f"link {k} restored")
            self._links_cut = cut
        return out

    # ---------------------------------------------------------------- the poller
    def subscribe(self) -> asyncio.Queue:
        """A queue of encoded views for one page; its first one carries the event backlog."""
        q: asyncio.Queue = asyncio.Queue(maxsize=8)
        self.subscribers[q] = False          # False: the backlog has not been sent yet
        if self.latest is not None:
            q.put_nowait(self._message(self.latest, backlog=True))
            self.subscribers[q] = True
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        self.subscribers.pop(q, None)
        if not self.subscribers and self._task is not None:
            self._task.cancel()
            self._task = None

    def _message(self, view: dict, backlog: bool = False) -> bytes:
        if backlog:
            view = dict(view, events=list(self.events))
        return json.dumps(view, separators=(",", ":")).encode()

    async def _run(self) -> None:
        try:
            while self.subscribers:
                t0 = time.monotonic()
                try:
                    view = await self.collect()
                except Exception:  # noqa: BLE001 - a bad view must not end the feed
                    log.exception("dashboard: collecting the cluster view failed")
                    await asyncio.sleep(FEED_INTERVAL_S)
                    continue
                self.latest = view
                plain = self._message(view)
                for q, primed in list(self.subscribers.items()):
                    if q.full():          # a slow page: drop its oldest view, keep the newest
                        q.get_nowait()
                    q.put_nowait(plain if primed else self._message(view, backlog=True))
                    self.subscribers[q] = True
                await asyncio.sleep(max(0.05, FEED_INTERVAL_S - (time.monotonic() - t0)))
        finally:
            if self._session is not None:
                await self._session.close()
                self._session = None

    async def close(self) -> None:
        for q in list(self.subscribers):
            if q.full():
                q.get_nowait()
            q.put_nowait(None)            # the page's handler ends its response
        self.subscribers.clear()
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None


def summarize(view: dict) -> dict:
    """Who leads (with a lease, highest epoch), the leader's ack mode and semi-sync state."""
    leaders = []
    epoch = 0
    for row in view["nodes"]:
        st = row.get("status") or {}
        rep = st.get("replication") or {}
        epoch = max(epoch, int(rep.get("epoch", st.get("epoch", 0)) or 0))
        if rep.get("role") == "leader" and rep.get("lease"):
            leaders.append((int(rep.get("epoch") or 0), row["node_id"], rep))
        elif not rep and row.get("reachable") and st.get("role") == "leader":
            leaders.append((int(st.get("epoch") or 0), row["node_id"], {}))     # standalone
    leaders.sort(key=lambda x: x[:2])
    top = leaders[-1] if leaders else None
    rep = top[2] if top else {}
    return {"leader": top[1] if top else None, "epoch": top[0] if top else epoch,
            "leaders_with_lease": [x[1] for x in leaders], "ack": rep.get("ack"),
            "semi_sync_degraded": rep.get("semi_sync_degraded"), "ack_timeout_ms": rep.get("ack_timeout_ms"),
            "up": sum(1 for r in view["nodes"] if r.get("reachable")), "nodes": len(view["nodes"])}


# ---------------------------------------------------------------------------- HTTP
def _allowed_origin(request: web.Request, view: ClusterView) -> str | None:
    """The Origin header if it is one of this cluster's dashboards, else None."""
    origin = request.headers.get("Origin")
    if not origin:
        return None
    u = urllib.parse.urlsplit(origin)
    hosts = {"127.0.0.1", "localhost", "::1", (request.host or "").rsplit(":", 1)[0].strip("[]")}
    hosts |= {p["host"] for p in view.peers()}
    ports = {p["http_port"] for p in view.peers()}
    if u.scheme == "http" and (u.hostname or "") in hosts and u.port in ports:
        return origin
    return None


def _cors(request: web.Request, view: ClusterView) -> dict:
    origin = _allowed_origin(request, view)
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"} if origin else {}


def _json(request, view, data, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, headers=_cors(request, view))


def add_dashboard_routes(app: web.Application, node) -> ClusterView:
    view = ClusterView(node)

    def refuse_foreign(request) -> web.Response | None:
        if request.headers.get("Origin") and _allowed_origin(request, view) is None:
            return web.json_response({"error": "admin calls are accepted only from this cluster's dashboard"},
                                     status=403)
        return None

    async def dashboard(request):
        return web.Response(body=page_html(), content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    async def events(request):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no", **_cors(request, view)})
        await resp.prepare(request)
        q = view.subscribe()
        try:
            await resp.write(b"retry: 1000\n\n")
            while True:
                msg = await q.get()
                if msg is None:
                    break
                await resp.write(b"data: " + msg + b"\n\n")
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            view.unsubscribe(q)
        return resp

    async def cluster(request):
        data = view.latest if (view.latest and view.subscribers) else await view.collect()
        return _json(request, view, dict(data, events=list(view.events)))

    async def forward(request, p: dict, path: str, timeout: float = 30.0) -> web.Response:
        url = f"http://{p['host']}:{p['http_port']}{path}"
        try:
            # (a session of its own: the poller closes its session when the last page goes)
            async with ClientSession(timeout=ClientTimeout(total=timeout)) as sess, sess.post(url) as r:
                body = await r.json(content_type=None)
                return _json(request, view, body, r.status)
        except Exception as e:  # noqa: BLE001 - reported to the page
            return _json(request, view, {"error": f"node {p['node_id']} did not answer: {e or type(e).__name__}"},
                         502)

    async def replica_delay(request):
        if (bad := refuse_foreign(request)) is not None:
            return bad
        q = request.query
        try:
            ms = int(q["ms"])
            target = int(q["node"]) if q.get("node") else node.config.node_id
        except (KeyError, ValueError):
            return _json(request, view, {"error": "usage: POST /admin/replica-delay?ms=MS[&node=N]"}, 400)
        if ms < 0:
            return _json(request, view, {"error": "delay must be >= 0 ms"}, 400)
        if target != node.config.node_id:
            p = view.peer(target)
            if p is None:
                return _json(request, view, {"error": f"no node {target} in this cluster"}, 404)
            return await forward(request, p, f"/admin/replica-delay?ms={ms}", 5.0)
        if node.repl is None or node.role != "follower":
            return _json(request, view, {"error": f"node {target} is not a follower"}, 409)
        node.repl.set_apply_delay(ms)
        view.record("delay", f"apply delay of node {target} set to {ms} ms from the dashboard", target)
        return _json(request, view, {"ok": True, "node": target, "apply_delay_ms": ms})

    async def failover(request):
        if (bad := refuse_foreign(request)) is not None:
            return bad
        q = request.query
        try:
            to = int(q["to"]) if q.get("to") else None
            timeout_ms = int(q.get("timeout_ms", 10_000))
        except ValueError:
            return _json(request, view, {"error": "usage: POST /admin/failover[?to=N][&timeout_ms=MS]"}, 400)
        r = node.repl
        if r is None:
            return _json(request, view, {"error": "switchover needs a leader-mode cluster"}, 409)
        if node.role != "leader":
            lid = r.election.leader_id
            p = view.peer(lid) if lid is not None else None
            if p is None or lid == node.config.node_id:
                return _json(request, view, {"error": "no leader is known right now (an election may be "
                                                      "under way)"}, 409)
            qs = urllib.parse.urlencode({k: v for k, v in (("to", to), ("timeout_ms", timeout_ms)) if v is not None})
            return await forward(request, p, f"/admin/failover?{qs}", timeout_ms / 1000 + 5)
        try:
            msg = await r.switchover(to, timeout_ms)
        except Exception as e:  # noqa: BLE001 - every failure is reported to the operator
            return _json(request, view, {"error": f"switchover failed: {e}"}, 409)
        view.record("switchover", f"switchover from the dashboard: {msg}", node.config.node_id)
        return _json(request, view, {"ok": True, "message": msg})

    async def fault(request):
        if (bad := refuse_foreign(request)) is not None:
            return bad
        addr = view.agent_address()
        if addr is None:
            return _json(request, view, {"error": "no fault agent: this node is not part of a local cluster"}, 409)
        op = request.match_info["op"]
        url = f"http://{addr[0]}:{addr[1]}/fault/{urllib.parse.quote(op)}?{request.query_string}"
        try:
            async with ClientSession(timeout=ClientTimeout(total=FAULT_TIMEOUT_S)) as sess, sess.post(url) as r:
                body = await r.json(content_type=None)
                return _json(request, view, body, r.status)
        except Exception as e:  # noqa: BLE001 - reported to the page
            return _json(request, view, {"error": f"the fault agent at {addr[0]}:{addr[1]} did not answer "
                                                  f"({e or type(e).__name__}); it runs with `replikv up`"}, 502)

    async def preflight(request):
        headers = _cors(request, view)
        if headers:
            headers["Access-Control-Allow-Methods"] = "GET, POST"
        return web.Response(status=204, headers=headers)

    async def on_shutdown(app):
        await view.close()

    app.router.add_get("/dashboard", dashboard)
    app.router.add_get("/dashboard/", dashboard)
    app.router.add_get("/events", events)
    app.router.add_get("/cluster", cluster)
    app.router.add_post("/admin/replica-delay", replica_delay)
    app.router.add_post("/admin/failover", failover)
    app.router.add_post("/admin/fault/{op}", fault)
    app.router.add_route("OPTIONS", "/admin/{tail:.*}", preflight)
    app.on_shutdown.append(on_shutdown)
    return view
