"""A local cluster of real node processes: used by ``replikv up/down/status`` and the tests.

Owns: the cluster directory (``cluster.json`` describing the nodes, one data dir and one
log file per node), starting node processes, stopping them (SIGTERM, then SIGKILL), killing
(SIGKILL), pausing (SIGSTOP / SIGCONT), waiting for them to answer, and reading status.
Does not know: replication internals; it talks to nodes through RESP and HTTP like any
operator would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field

PEER_OFFSET = 100
HTTP_OFFSET = 200


@dataclass
class NodeSpec:
    node_id: int
    host: str
    port: int
    peer_port: int
    http_port: int
    data_dir: str
    extra_args: list = field(default_factory=list)
    partition: int = 1

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def poll_until(cond, timeout: float, what: str, interval: float = 0.02, error: type = TimeoutError):
    """Call ``cond`` every ``interval`` s until it returns something true, and return that;
    an exception counts as "not yet" (a node may be starting or gone). After ``timeout`` s
    raise ``error`` naming ``what`` and the last result. (Tests and scenarios wait so.)"""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = cond()
            if last:
                return last
        except Exception as e:  # noqa: BLE001
            last = e
        time.sleep(interval)
    raise error(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


class ClusterError(Exception):
    pass


def _port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _check_ports(n: NodeSpec) -> None:
    for what, port in (("RESP", n.port), ("peer", n.peer_port), ("HTTP", n.http_port)):
        if not 1 <= port <= 65535:
            raise ClusterError(f"node {n.node_id} would need {what} port {port}, outside 1-65535; "
                               f"choose another base port")


class LocalCluster:
    def __init__(self, root: str, nodes: list[NodeSpec] | None = None, mode: str = "standalone",
                 settings: dict | None = None, cluster_settings: dict | None = None) -> None:
        self.root = os.path.abspath(root)
        self.nodes = nodes or []
        self.mode = mode
        self.settings = settings or {}                   # node flags for every node
        self.cluster_settings = cluster_settings or {}   # cluster file settings (ack, leader, ...)
        self.procs: dict[int, subprocess.Popen] = {}

    # ------------------------------------------------------------------ layout
    @classmethod
    def create(cls, root: str, n: int = 1, base_port: int = 7100, host: str = "127.0.0.1",
               mode: str = "standalone", settings: dict | None = None,
               cluster_settings: dict | None = None, partitions: int = 1) -> LocalCluster:
        """``n`` nodes, or ``n`` nodes per partition: partition p holds nodes (p-1)*n+1 .. p*n,
        each partition a leader and followers replicating independently."""
        root = os.path.abspath(root)
        nodes = [NodeSpec(i, host, base_port + i - 1, base_port + PEER_OFFSET + i - 1,
                          base_port + HTTP_OFFSET + i - 1, os.path.join(root, f"node{i}"),
                          partition=(i - 1) // n + 1)
                 for i in range(1, n * partitions + 1)]
        if partitions > 1:
            cluster_settings = dict(cluster_settings or {}, partitions=partitions)
        for spec in nodes:
            _check_ports(spec)
        return cls(root, nodes, mode, settings, cluster_settings)

    def add_node(self) -> NodeSpec:
        """Add one node to the cluster (a new follower in leader mode); not started yet."""
        last = max(self.nodes, key=lambda x: x.node_id)
        i = last.node_id + 1
        n = NodeSpec(i, last.host, last.port + 1, last.peer_port + 1, last.http_port + 1,
                     os.path.join(self.root, f"node{i}"))
        _check_ports(n)
        self.nodes.append(n)
        self.save()
        return n

    @property
    def partitions(self) -> int:
        return int(self.cluster_settings.get("partitions", 1))

    @property
    def cluster_file(self) -> str:
        return self.cluster_file_for(1)

    def cluster_file_for(self, partition: int) -> str:
        if self.partitions > 1:
            return os.path.join(self.root, f"cluster-p{partition}.toml")
        return os.path.join(self.root, "cluster.toml")

    def partition_nodes(self, partition: int) -> list[NodeSpec]:
        return [n for n in self.nodes if n.partition == partition]

    def write_cluster_file(self) -> None:
        """One cluster file per partition: its own nodes, and the partition map for MOVED."""
        from ..server.clusterconfig import cluster_from_dict, cluster_to_toml

        for p in range(1, self.partitions + 1):
            members = self.partition_nodes(p)
            raw = dict(self.cluster_settings)
            raw["mode"] = self.mode
            raw["nodes"] = [{"id": n.node_id, "host": n.host, "port": n.port, "peer_port": n.peer_port,
                             "http_port": n.http_port} for n in members]
            proxied = bool(raw.pop("net_faults", False))
            if self.partitions > 1:
                raw["partition"] = p
                raw["leader"] = members[0].node_id
                raw["partition_nodes"] = [{"partition": n.partition, "host": n.host, "port": n.port}
                                          for n in self.nodes]
            else:
                raw.pop("partitions", None)
            if proxied:
                from .agent import proxy_port

                base = self.nodes[0].port
                raw["links"] = {f"{a.node_id}->{b.node_id}": f"{b.host}:{proxy_port(base, a.node_id, b.node_id)}"
                                for a in members for b in members if a.node_id != b.node_id}
            text = cluster_to_toml(cluster_from_dict(raw))
            path = self.cluster_file_for(p)
            tmp = path + ".tmp"
            with open(tmp, "w") as fh:
                fh.write(text)
            os.replace(tmp, path)

    @property
    def leader_id(self) -> int:
        return int(self.cluster_settings.get("leader", self.cluster_settings.get("leader_id", 1)))

    @property
    def manifest(self) -> str:
        return os.path.join(self.root, "cluster.json")

    def save(self) -> None:
        os.makedirs(self.root, exist_ok=True)
        tmp = self.manifest + ".tmp"
        with open(tmp, "w") as fh:
            json.dump({"mode": self.mode, "settings": self.settings, "cluster_settings": self.cluster_settings,
                       "nodes": [asdict(n) for n in self.nodes]}, fh, indent=1)
        os.replace(tmp, self.manifest)
        if self.mode != "standalone":
            self.write_cluster_file()

    @classmethod
    def load(cls, root: str) -> LocalCluster:
        root = os.path.abspath(root)
        path = os.path.join(root, "cluster.json")
        try:
            with open(path) as fh:
                d = json.load(fh)
        except FileNotFoundError:
            raise ClusterError(f"no cluster in {root} (no cluster.json); start one with `replikv up`") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ClusterError(f"cannot read {path}: {e}") from None
        except ValueError as e:
            raise ClusterError(f"{path} is not valid JSON ({e}); fix or remove it") from None
        try:
            return cls(root, [NodeSpec(**n) for n in d["nodes"]], d.get("mode", "standalone"),
                       d.get("settings", {}), d.get("cluster_settings", {}))
        except (KeyError, TypeError, AttributeError) as e:
            raise ClusterError(f"{path} does not describe a cluster ({type(e).__name__}: {e}); fix or remove it") from None

    def node(self, node_id: int) -> NodeSpec:
        for n in self.nodes:
            if n.node_id == node_id:
                return n
        raise ClusterError(f"no node {node_id} in this cluster")

    # ------------------------------------------------------------------ processes
    def pid_file(self, n: NodeSpec) -> str:
        return os.path.join(n.data_dir, "node.pid")

    def log_file(self, n: NodeSpec) -> str:
        return os.path.join(n.data_dir, "node.log")

    def pid(self, n: NodeSpec) -> int | None:
        """The pid of node ``n`` if it runs, from our child or its pid file. A stale pid file
        (the node was killed) or a pid since reused by another program counts as not running."""
        p = self.procs.get(n.node_id)
        if p is not None and p.poll() is None:
            return p.pid
        try:
            with open(self.pid_file(n)) as fh:
                pid = int(fh.read().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        # a zombie (a child of ours, or of a process that does not reap) is not running
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return None
        except (OSError, IndexError):
            pass
        # the pid may have been reused by another program since the node died
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
            if b"node" not in argv or os.fsencode(n.data_dir) not in argv:
                return None
        except OSError:
            pass  # no /proc: trust the pid file
        return pid

    def _forget_pid(self, n: NodeSpec) -> None:
        try:
            os.unlink(self.pid_file(n))
        except OSError:
            pass

    def is_running(self, n: NodeSpec) -> bool:
        return self.pid(n) is not None

    def node_args(self, n: NodeSpec) -> list[str]:
        args = [sys.executable, "-m", "replikv", "node", "--node-id", str(n.node_id), "--host", n.host,
                "--port", str(n.port), "--peer-port", str(n.peer_port), "--http-port", str(n.http_port),
                "--data-dir", n.data_dir]
        if self.mode != "standalone":
            args += ["--cluster", self.cluster_file_for(n.partition)]
        for k, v in self.settings.items():
            args += [f"--{k.replace('_', '-')}", str(v)]
        return args + list(n.extra_args)

    def start_node(self, n: NodeSpec, wait: bool = True, timeout: float = 30.0) -> int:
        if self.is_running(n):
            return self.pid(n)
        os.makedirs(n.data_dir, exist_ok=True)
        logf = open(self.log_file(n), "ab")
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        p = subprocess.Popen(self.node_args(n), stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=env, start_new_session=True)
        logf.close()
        self.procs[n.node_id] = p
        with open(self.pid_file(n), "w") as fh:
            fh.write(str(p.pid))
        if wait:
            self.wait_ready(n, timeout)
        return p.pid

    def wait_ready(self, n: NodeSpec, timeout: float = 30.0) -> None:
        """Wait until node ``n`` answers: its RESP port accepts and its HTTP /health names
        the very process we know (not some other program holding the port)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            p = self.procs.get(n.node_id)
            if p is not None and p.poll() is not None:
                raise ClusterError(f"node {n.node_id} exited with code {p.returncode}; last log lines:\n"
                                   + self.tail_log(n))
            pid = self.pid(n)
            if pid is None and p is None:
                raise ClusterError(f"node {n.node_id} is not running; last log lines:\n" + self.tail_log(n))
            if _port_open(n.host, n.port) and self._health_pid(n) == pid:
                return
            time.sleep(0.05)
        raise ClusterError(f"node {n.node_id} did not answer on {n.address} within {timeout}s; log:\n"
                           + self.tail_log(n))

    def _health_pid(self, n: NodeSpec) -> int | None:
        try:
            return self.http_get(n, "/health", timeout=1.0).get("pid")
        except Exception:  # noqa: BLE001 - not answering (yet), or something else on the port
            return None

    def tail_log(self, n: NodeSpec, lines: int = 20) -> str:
        try:
            with open(self.log_file(n), "rb") as fh:
                return b"\n".join(fh.read().splitlines()[-lines:]).decode("utf-8", "replace")
        except OSError:
            return "(no log)"

    def start(self, wait: bool = True) -> list[int]:
        """Start every node that is not running; returns the ids started."""
        self.save()
        started = []
        for n in self.nodes:
            if not self.is_running(n):
                self.start_node(n, wait=False)
                started.append(n.node_id)
        if self.mode != "standalone":
            self.start_agent()
        if wait:
            for n in self.nodes:
                self.wait_ready(n)
            if self.mode == "leader":
                self.wait_leader()
        return started

    # ------------------------------------------------------------------ the fault agent
    @property
    def agent_pid_file(self) -> str:
        return os.path.join(self.root, "agent.pid")

    def agent_pid(self) -> int | None:
        try:
            with open(self.agent_pid_file) as fh:
                pid = int(fh.read().strip())
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().split()[2] == "Z":
                    return None
            return pid
        except (OSError, ValueError):
            return None

    def start_agent(self, timeout: float = 15.0) -> None:
        """The agent owns the link proxies (``net_faults``) and the fault HTTP API."""
        from .agent import agent_port

        if self.agent_pid() is not None:
            return
        logf = open(os.path.join(self.root, "agent.log"), "ab")
        p = subprocess.Popen([sys.executable, "-m", "replikv.cluster.agent", self.root], stdout=logf,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        logf.close()
        self.procs[0] = p
        with open(self.agent_pid_file, "w") as fh:
            fh.write(str(p.pid))
        port = agent_port(self.nodes[0].port)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if p.poll() is not None:
                raise ClusterError(f"the fault agent exited with code {p.returncode}; see {self.root}/agent.log")
            if _port_open(self.nodes[0].host, port):
                return
            time.sleep(0.05)
        raise ClusterError(f"the fault agent did not answer on port {port}")

    def stop_agent(self) -> None:
        pid = self.agent_pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        p = self.procs.get(0)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if (p is not None and p.poll() is not None) or (p is None and self.agent_pid() is None):
                return
            time.sleep(0.02)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def leader(self, partition: int = 1) -> NodeSpec | None:
        """The node that leads (partition ``partition``) now and holds its lease (None during
        an election)."""
        for n in self.partition_nodes(partition):
            if not self.is_running(n):
                continue
            try:
                rep = self.http_get(n, "/status", timeout=1.0).get("replication") or {}
            except Exception:  # noqa: BLE001 - a node may be paused or starting
                continue
            if rep.get("role") == "leader" and rep.get("lease"):
                return n
        return None

    def wait_leader(self, timeout: float = 30.0) -> NodeSpec:
        """Wait until a leader holds its lease (its followers answer it)."""
        deadline = time.monotonic() + timeout
        first = None
        for p in range(1, self.partitions + 1):
            while True:
                n = self.leader(p)
                if n is not None:
                    first = first or n
                    break
                if time.monotonic() > deadline:
                    raise ClusterError(f"no leader with a lease within {timeout}s (partition {p})")
                time.sleep(0.05)
        return first

    def signal(self, node_id: int, sig: int) -> None:
        n = self.node(node_id)
        pid = self.pid(n)
        if pid is None:
            raise ClusterError(f"node {node_id} is not running")
        os.kill(pid, sig)

    def kill(self, node_id: int) -> None:
        """SIGKILL: no shutdown, no flush, as a crash."""
        n = self.node(node_id)
        pid = self.pid(n)
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        os.kill(pid, signal.SIGKILL)
        if self._reap(n, 10):
            self._forget_pid(n)

    def pause(self, node_id: int) -> None:
        self.signal(node_id, signal.SIGSTOP)

    def resume(self, node_id: int) -> None:
        self.signal(node_id, signal.SIGCONT)

    def stop_node(self, node_id: int, timeout: float = 10.0) -> bool:
        """SIGTERM (the node drains and closes its log), SIGKILL after ``timeout``; True if
        the node was running."""
        n = self.node(node_id)
        pid = self.pid(n)
        if pid is None:
            self._forget_pid(n)
            return False
        try:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            self._forget_pid(n)
            return True
        if not self._reap(n, timeout):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._reap(n, 5)
        self._forget_pid(n)
        return True

    def _reap(self, n: NodeSpec, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        p = self.procs.get(n.node_id)
        while time.monotonic() < deadline:
            if p is not None:
                if p.poll() is not None:
                    return True
            elif self.pid(n) is None:
                return True
            time.sleep(0.02)
        return False

    def stop(self) -> list[int]:
        """Stop every running node (and the fault agent); returns the node ids that were running."""
        stopped = [n.node_id for n in self.nodes if self.stop_node(n.node_id)]
        self.stop_agent()
        return stopped

    # ------------------------------------------------------------------ status
    def http_get(self, n: NodeSpec, path: str, timeout: float = 2.0):
        with urllib.request.urlopen(f"http://{n.host}:{n.http_port}{path}", timeout=timeout) as r:
            body = r.read()
        return json.loads(body) if path != "/metrics" else body.decode()

    def status(self) -> list[dict]:
        out = []
        for n in self.nodes:
            row = {"node_id": n.node_id, "address": n.address, "http": f"{n.host}:{n.http_port}",
                   "peer": f"{n.host}:{n.peer_port}", "running": self.is_running(n)}
            try:
                row.update(self.http_get(n, "/status"))
                row["reachable"] = True
            except Exception as e:
                row["reachable"] = False
                row["error"] = str(e)
            out.append(row)
        return out
