"""Failover time: from SIGKILL of the leader to the first write accepted by the new leader.

replikv: a 3-node leader-mode cluster at default settings (ack async, election timeout
1000 ms, heartbeat 100 ms) from ``LocalCluster``. Each trial SIGKILLs the current leader,
then a client tries ``SET`` on every surviving node in turn (0.25 s socket timeout, 2 ms
between rounds) until one answers OK (followers answer READONLY, a leader without its lease
NOLEASE). The killed node is restarted as a follower before the next trial.

Redis Sentinel, side by side: one redis-server master + 2 replicas + 3 sentinels on loopback
(quorum 2, ``down-after-milliseconds 1000``, ``failover-timeout 3000``). Each trial SIGKILLs
the master, then a client polls ``SENTINEL get-master-addr-by-name`` (rotating over the
sentinels) and, once it names another address, tries ``SET`` there until it answers OK. The
killed server is restarted (Sentinel turns it into a replica) before the next trial.

No write load during the trials, for either system. Prints every trial and the medians.

    python bench/bench_failover.py [--trials 10] [--only replikv|sentinel] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import redis  # noqa: E402
from redis.backoff import NoBackoff  # noqa: E402
from redis.retry import Retry  # noqa: E402

from bench import _procs as P  # noqa: E402
from replikv.cluster.local import ClusterError, LocalCluster  # noqa: E402


def rclient(port: int, timeout: float = 0.25) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=timeout, socket_connect_timeout=timeout,
                       retry=Retry(NoBackoff(), 0))




# ---------------------------------------------------------------------------- replikv
def replikv_trials(trials: int) -> list[float]:
    for attempt in range(3):      # another program may take a port between the check and the bind
        root = P.tmpdir("bench-failover-replikv-")
        base = P.free_port(also=(1, 2, 100, 101, 102, 200, 201, 202))
        cl = LocalCluster.create(root, 3, base, mode="leader")
        try:
            cl.start()
            break
        except ClusterError:
            for n in cl.nodes:
                cl.kill(n.node_id)
            if attempt == 2:
                raise
    out = []
    try:
        for t in range(trials):
            leader = cl.wait_leader(30)
            others = [n for n in cl.nodes if n.node_id != leader.node_id]
            P.wait_for(lambda lid=leader.node_id: _all_streaming(cl, lid), 30, "every follower streaming")
            rclient(leader.port, 2).set("before", str(t))
            time.sleep(1.0)        # a settled cluster: followers have heard heartbeats for a while
            clients = [rclient(n.port) for n in others]
            pid = cl.pid(leader)
            t0 = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            took, who = None, None
            while took is None:
                for n, c in zip(others, clients, strict=True):
                    try:
                        if c.set("after", str(t)) is True:
                            took, who = time.monotonic() - t0, n.node_id
                            break
                    except (redis.RedisError, OSError):
                        pass
                else:
                    time.sleep(0.002)
                if time.monotonic() - t0 > 60:
                    raise RuntimeError("no new leader within 60 s")
            out.append(took)
            print(f"  replikv  trial {t + 1:2d}: {took:.3f} s  (node {leader.node_id} killed, node {who} leads)",
                  flush=True)
            cl.kill(leader.node_id)
            cl.start_node(leader)
    finally:
        for n in cl.nodes:
            try:
                cl.kill(n.node_id)
            except Exception:  # noqa: BLE001
                pass
    return out


def _all_streaming(cl: LocalCluster, leader_id: int) -> bool:
    fl = cl.http_get(cl.node(leader_id), "/status")["replication"]["followers"]
    return sum(1 for f in fl if f["link"] == "up" and f["state"] == "streaming") == len(cl.nodes) - 1


# ---------------------------------------------------------------------------- Redis Sentinel
def _redis_conf(d: str, port: int, master: int | None) -> str:
    path = os.path.join(d, f"redis-{port}.conf")
    lines = [f"port {port}", "bind 127.0.0.1", "protected-mode no", f"dir {d}", 'save ""', "appendonly no",
             f"dbfilename dump-{port}.rdb", "daemonize no", 'logfile ""']
    if master is not None:
        lines.append(f"replicaof 127.0.0.1 {master}")
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def _sentinel_conf(d: str, port: int, master: int) -> str:
    path = os.path.join(d, f"sentinel-{port}.conf")
    with open(path, "w") as fh:
        fh.write("\n".join([
            f"port {port}", "bind 127.0.0.1", "protected-mode no", f"dir {d}", "daemonize no", 'logfile ""',
            f"sentinel monitor mymaster 127.0.0.1 {master} 2",
            "sentinel down-after-milliseconds mymaster 1000",
            "sentinel failover-timeout mymaster 3000",
            "sentinel parallel-syncs mymaster 1"]) + "\n")
    return path


def _master_port(sentinels: list[int]) -> int:
    for s in sentinels:
        try:
            addr = rclient(s, 0.5).execute_command("SENTINEL", "get-master-addr-by-name", "mymaster")
            if addr:
                return int(addr[1])
        except (redis.RedisError, OSError):
            continue
    raise RuntimeError("no sentinel answers")


class NotYet(Exception):
    pass


def _sentinels_settled(sentinels: list[int], master: int, servers: list[int]) -> bool:
    """Every sentinel names ``master``, sees the 2 replicas with their link up and the 2 other
    sentinels, and no failover is in progress; every replica is synced with ``master``.
    Raises NotYet (with what is missing) otherwise."""
    for s in sentinels:
        r = rclient(s, 0.5)
        addr = r.execute_command("SENTINEL", "get-master-addr-by-name", "mymaster")
        if int(addr[1]) != master:
            raise NotYet(f"sentinel :{s} names master :{int(addr[1])}")
        m = r.sentinel_master("mymaster")
        if not m.get("is_master") or m.get("is_sdown") or m.get("is_odown") or m.get("is_failover_in_progress"):
            raise NotYet(f"sentinel :{s}: master flags {m.get('flags')}")
        if int(m.get("num-slaves", 0)) != 2 or int(m.get("num-other-sentinels", 0)) != 2:
            raise NotYet(f"sentinel :{s}: {m.get('num-slaves')} replicas, {m.get('num-other-sentinels')} sentinels")
        for rep in r.sentinel_slaves("mymaster"):
            if rep.get("is_sdown") or rep.get("is_disconnected") or rep.get("master-link-status") != "ok":
                raise NotYet(f"sentinel :{s}: replica {rep.get('name')} {rep.get('flags')} "
                             f"link {rep.get('master-link-status')}")
    for port in servers:
        if port == master:
            continue
        info = rclient(port, 0.5).info("replication")
        if info.get("role") != "slave" or int(info.get("master_port", 0)) != master \
                or info.get("master_link_status") != "up":
            raise NotYet(f":{port} is {info.get('role')} of :{info.get('master_port')} "
                         f"link {info.get('master_link_status')}")
    return True


def sentinel_trials(trials: int) -> list[float]:
    P.need("redis-server")
    d = P.tmpdir("bench-failover-sentinel-")
    ports = [P.free_port() for _ in range(3)]
    sports = [P.free_port() for _ in range(3)]
    procs: dict[int, object] = {}
    confs = {p: _redis_conf(d, p, None if i == 0 else ports[0]) for i, p in enumerate(ports)}
    for p in ports:
        procs[p] = P.start(["redis-server", confs[p]], p, os.path.join(d, f"redis-{p}.log"))
    for s in sports:
        procs[s] = P.start(["redis-server", _sentinel_conf(d, s, ports[0]), "--sentinel"], s,
                           os.path.join(d, f"sentinel-{s}.log"))
    out = []
    try:
        for t in range(trials):
            master = _master_port(sports)
            P.wait_for(lambda m=master: _sentinels_settled(sports, m, ports), 120, "sentinels and replicas settled")
            rclient(master, 2).set("before", str(t))
            time.sleep(1.0)
            t0 = time.monotonic()
            procs[master].send_signal(signal.SIGKILL)
            took, new = None, None
            i = 0
            while took is None:
                s = sports[i % 3]
                i += 1
                try:
                    addr = rclient(s).execute_command("SENTINEL", "get-master-addr-by-name", "mymaster")
                    port = int(addr[1]) if addr else master
                    if port != master and rclient(port).set("after", str(t)) is True:
                        took, new = time.monotonic() - t0, port
                except (redis.RedisError, OSError, ValueError):
                    pass
                if took is None:
                    time.sleep(0.002)
                if time.monotonic() - t0 > 120:
                    raise RuntimeError("no promoted replica within 120 s")
            out.append(took)
            print(f"  sentinel trial {t + 1:2d}: {took:.3f} s  (master :{master} killed, :{new} promoted)",
                  flush=True)
            procs[master].wait(10)
            P.stop(procs[master])
            # restarted, it comes back as a master; Sentinel turns it into a replica of the new one
            procs[master] = P.start(["redis-server", confs[master]], master,
                                    os.path.join(d, f"redis-{master}.log"))
    finally:
        for p in list(procs.values()):
            P.stop(p)
    return out


def summary(name: str, vals: list[float]) -> dict:
    return {"system": name, "trials": len(vals), "median_s": round(statistics.median(vals), 3),
            "min_s": round(min(vals), 3), "max_s": round(max(vals), 3), "values_s": [round(v, 3) for v in vals]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--only", choices=["replikv", "sentinel"])
    ap.add_argument("--json", help="also write the results to this file")
    a = ap.parse_args()
    res = {"machine": P.machine(), "loadavg_before": P.loadavg(), "results": []}
    print(f"failover time, SIGKILL of the leader -> first write accepted by the new one; {a.trials} trials; "
          f"load average {res['loadavg_before']}")
    if a.only in (None, "replikv"):
        print("replikv: 3 nodes, default settings (ack async, election_timeout_ms 1000, heartbeat_ms 100)")
        res["results"].append(summary("replikv", replikv_trials(a.trials)))
    if a.only in (None, "sentinel"):
        print("Redis Sentinel: 1 master + 2 replicas + 3 sentinels (quorum 2, down-after-milliseconds 1000, "
              "failover-timeout 3000)")
        res["results"].append(summary("redis-sentinel", sentinel_trials(a.trials)))
    print()
    print(f"{'system':16} {'median':>8} {'min':>8} {'max':>8}  all values (s)")
    for r in res["results"]:
        print(f"{r['system']:16} {r['median_s']:8.3f} {r['min_s']:8.3f} {r['max_s']:8.3f}  "
              f"{', '.join(f'{v:.3f}' for v in r['values_s'])}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
