"""``replikv check``: a Jepsen-style run on a fresh local cluster.

Workload + nemesis + checker, in one command:

1. a fresh leader-mode cluster (3 nodes; link proxies when the nemesis partitions);
2. ``clients`` client threads, each one process of the history, issuing random operations
   on a few keys: register writes of unique values and reads, counter increments, set
   additions, each recorded as invoke then ok / fail / info (replikv/check/history.py);
   writes go to the leader through replikv's client, reads to the leader (linearizability
   is checked) or to followers (session guarantees are checked, on or off);
3. a nemesis thread that injects the chosen faults (kill, pause, partition, skew) and heals
   them, recorded in the history as process "nemesis";
4. heal everything, wait for one leader and for the replicas to converge, read the final
   counters and sets from the leader, record every replica's digest;
5. check: linearizability of leader reads per key, read-your-writes and monotonic reads of
   follower reads, lost acknowledged writes (counters and sets), convergence; print a
   report, keep the history file, exit non-zero on a violation.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import threading
import time
from dataclasses import dataclass, field

import redis

from ..client import Client, NoLeader, OutcomeUnknown, Session
from .local import LocalCluster

NEMESES = ("kill", "pause", "partition", "skew", "kill-lagging")


@dataclass
class CheckConfig:
    ack: str = "semi-sync:1"
    nemesis: tuple = ("kill", "partition", "pause")
    time_s: float = 60.0
    clients: int = 8
    keys: int = 5
    reads: str = "leader"                # leader | followers
    guarantees: bool = True              # session guarantees for follower reads
    seed: int = 0
    base_port: int = 7600
    data_dir: str | None = None
    nodes: int = 3
    interval_s: float = 4.0              # between faults
    fsync: str = "everysec"
    follower_delays_ms: tuple = ()       # apply delay per follower, to make lag on purpose
    extra: dict = field(default_factory=dict)


class Runner:
    def __init__(self, cfg: CheckConfig, say=print) -> None:
        from ..check.history import Recorder

        self.cfg = cfg
        self.say = say
        self.rng = random.Random(cfg.seed)
        self.rec = Recorder()
        self.stop = threading.Event()
        self.root = cfg.data_dir or tempfile.mkdtemp(prefix="replikv-check-")
        net = "partition" in cfg.nemesis
        self.cl = LocalCluster.create(self.root, cfg.nodes, cfg.base_port, mode="leader",
                                      settings={"fsync": cfg.fsync},
                                      cluster_settings={"ack": cfg.ack, "net_faults": net})
        self.addrs = [f"{n.host}:{n.port}" for n in self.cl.nodes]
        self.faults = None
        self.counter_keys = [f"c{i}" for i in range(cfg.keys)]
        self.register_keys = [f"r{i}" for i in range(cfg.keys)]
        self.set_key = "s0"
        self._last_client: dict = {}

    # ------------------------------------------------------------------ the run
    def run(self) -> dict:
        from .agent import FaultClient

        cfg = self.cfg
        self.say(f"starting a {cfg.nodes}-node cluster in {self.root} (ack {cfg.ack}, nemesis "
                 f"{','.join(cfg.nemesis) or 'none'}, seed {cfg.seed})")
        self.cl.start()
        self.faults = FaultClient.for_cluster(self.cl)
        for i, ms in enumerate(cfg.follower_delays_ms):
            n = self.cl.nodes[i + 1]
            redis.Redis(host=n.host, port=n.port).execute_command("REPLICA", "DELAY", ms)
        threads = [threading.Thread(target=self._client, args=(p,), daemon=True) for p in range(cfg.clients)]
        nem = threading.Thread(target=self._nemesis, daemon=True)
        for t in threads:
            t.start()
        nem.start()
        time.sleep(cfg.time_s)
        self.stop.set()
        for t in threads:
            t.join(30)
        nem.join(60)
        self.say("healing: every link restored, every node running, waiting for convergence")
        self._heal_all()
        digests = self._converge()
        self._final_reads()
        path = os.path.join(self.root, "history.jsonl")
        self.rec.save(path)
        return {"history": path, "digests": digests}

    def close(self) -> None:
        self.cl.stop()

    # ------------------------------------------------------------------ clients
    def _client(self, process: int) -> None:
        cfg = self.cfg
        rng = random.Random(cfg.seed * 1000 + process)
        if cfg.reads == "followers":
            sess = Session(user_id=f"p{process}") if cfg.guarantees else Session(
                user_id=f"p{process}", read_your_writes=None, monotonic_reads=False, consistent_prefix=False)
            c = Client(self.addrs, session=sess, socket_timeout=2.0, wait_timeout_ms=500)
        else:
            c = Client(self.addrs, socket_timeout=2.0, read_from_followers=False)
        n = 0
        while not self.stop.is_set():
            n += 1
            r = rng.random()
            if r < 0.35:
                key = rng.choice(self.register_keys)
                val = f"{process}-{n}"
                self._op(process, "write", key, val, lambda k=key, v=val: c.write("SET", k, v), c)
                self._last_client[process] = c
            elif r < 0.7:
                key = rng.choice(self.register_keys)
                self._op(process, "read", key, None, lambda k=key: _dec(c.read("GET", k)), c)
            elif r < 0.9:
                key = rng.choice(self.counter_keys)
                self._op(process, "incr", key, 1, lambda k=key: c.write("INCR", k), c)
            else:
                member = f"{process}-{n}"
                self._op(process, "sadd", self.set_key, member,
                         lambda m=member: c.write("SADD", self.set_key, m), c)

    def _op(self, process: int, f: str, key, value, fn, client) -> None:
        op = self.rec.invoke(process, f, key, value)
        try:
            out = fn()
        except OutcomeUnknown as e:
            self.rec.info(op, str(e)[:200])
            return
        except NoLeader as e:
            self.rec.fail(op, str(e)[:200])
            time.sleep(0.05)
            return
        except (redis.ConnectionError, redis.TimeoutError) as e:
            # a read whose connection failed: it changed nothing, so it did not happen
            self.rec.fail(op, str(e)[:200]) if f == "read" else self.rec.info(op, str(e)[:200])
            time.sleep(0.05)
            return
        except redis.ResponseError as e:
            self.rec.fail(op, str(e)[:200])
            time.sleep(0.02)
            return
        # the position token: for a write, the position it got (LASTPOS); for a read, the
        # position of the replica that answered (POS), so the checkers can order versions
        token = None
        sess = client.session
        if f in ("write", "incr", "sadd"):
            token = sess.written.get(1)
        elif f == "read" and client.read_from_followers:
            token = sess.seen.get(1)
        if f in ("read", "incr"):
            self.rec.ok(op, out, token=token)
        else:
            self.rec.ok(op, token=token)

    # ------------------------------------------------------------------ nemesis
    def _nemesis(self) -> None:
        cfg = self.cfg
        if not cfg.nemesis:
            return
        while not self.stop.wait(cfg.interval_s * (0.5 + self.rng.random())):
            kind = self.rng.choice(cfg.nemesis)
            leader = self.cl.leader()
            target = leader.node_id if leader is not None and self.rng.random() < 0.7 else \
                self.rng.choice(self.cl.nodes).node_id
            op = self.rec.invoke("nemesis", kind, None, target)
            try:
                if kind == "kill":
                    self.faults.kill(target)
                    self.rec.ok(op)
                    self.stop.wait(1.0 + self.rng.random() * 2)
                    self.faults.restart(target)
                elif kind == "pause":
                    self.faults.pause(target)
                    self.rec.ok(op)
                    self.stop.wait(1.0 + self.rng.random() * 2)
                    self.faults.resume(target)
                elif kind == "partition":
                    self.faults.partition([target])
                    self.rec.ok(op)
                    self.stop.wait(1.5 + self.rng.random() * 2)
                    self.faults.heal()
                elif kind == "kill-lagging":
                    # the followers stop fetching for a moment, then the leader dies: under async
                    # acknowledgement the writes only it had are lost (and must be reported)
                    lead = self.cl.leader()
                    if lead is None:
                        self.rec.fail(op, "no leader")
                        continue
                    target = lead.node_id
                    others = [n for n in self.cl.nodes if n.node_id != target]
                    for n in others:
                        redis.Redis(host=n.host, port=n.port, socket_timeout=2).execute_command("REPLICA", "STOP", "IO")
                    self.stop.wait(0.7)
                    self.faults.kill(target)
                    for n in others:
                        redis.Redis(host=n.host, port=n.port, socket_timeout=2).execute_command("REPLICA", "START", "IO")
                    self.rec.ok(op)
                    self.stop.wait(1.5 + self.rng.random())
                    self.faults.restart(target)
                elif kind == "skew":
                    self.faults.skew(target, self.rng.choice([-400, 300, 800]))
                    self.rec.ok(op)
                    self.stop.wait(2.0)
                    self.faults.skew(target, 0)
            except Exception as e:  # noqa: BLE001 - a failed fault is recorded, the run goes on
                self.rec.info(op, str(e)[:200])
            self.rec.info(self.rec.invoke("nemesis", "heal", None, target), "healed")

    # ------------------------------------------------------------------ the end
    def _heal_all(self) -> None:
        try:
            self.faults.heal()
        except Exception:  # noqa: BLE001 - links may not be proxied
            pass
        for n in self.cl.nodes:
            try:
                self.faults.resume(n.node_id)
            except Exception:  # noqa: BLE001 - not paused, or down
                pass
            if not self.cl.is_running(n):
                self.cl.start_node(n)
            try:
                redis.Redis(host=n.host, port=n.port, socket_timeout=2).execute_command("REPLICA", "DELAY", 0)
            except redis.RedisError:
                pass
        self.cl.wait_leader(60)

    def _converge(self, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        digests: dict = {}
        while time.monotonic() < deadline:
            digests, positions = {}, set()
            for n in self.cl.nodes:
                try:
                    r = redis.Redis(host=n.host, port=n.port, socket_timeout=2)
                    digests[n.node_id] = r.execute_command("DIGEST").decode()
                    positions.add(r.execute_command("POS"))
                except redis.RedisError:
                    digests[n.node_id] = None
            if len(set(digests.values())) == 1 and None not in digests.values() and len(positions) == 1:
                break
            time.sleep(0.2)
        for nid, d in digests.items():
            self.rec.digest(f"n{nid}", d)
        return digests

    def _final_reads(self) -> None:
        c = Client(self.addrs, socket_timeout=5.0, read_from_followers=False)
        for k in self.counter_keys:
            op = self.rec.invoke("final", "read", k, None)
            v = c.read("GET", k)
            self.rec.ok(op, int(v) if v is not None else 0)
        op = self.rec.invoke("final", "smembers", self.set_key, None)
        self.rec.ok(op, sorted(m.decode() for m in (c.read("SMEMBERS", self.set_key) or [])))


def _dec(v):
    return v.decode() if isinstance(v, bytes) else v


def summarize(history_path: str) -> dict:
    from ..check.history import History

    ops = History.load(history_path).ops()
    out = {"ok": 0, "fail": 0, "info": 0}
    for op in ops:
        if str(op.process) in ("nemesis", "checker", "final"):
            continue
        if op.ok:
            out["ok"] += 1
        elif op.failed:
            out["fail"] += 1
        else:
            out["info"] += 1
    return out


def dump_json(obj) -> str:
    return json.dumps(obj, indent=1, default=str)


def check_history(history_path: str, digests: dict, linearizable: bool):
    from ..check import History, check_all

    return check_all(History.load(history_path), digests={f"n{k}": v for k, v in digests.items()},
                     linearizable=linearizable, time_limit=60.0)
