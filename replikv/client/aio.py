"""The asyncio client: the same decisions as client.Client (shared Session, classify,
leader_hint), over redis.asyncio, with retries just as deliberate."""

from __future__ import annotations

import asyncio

import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .client import (
    NoLeader,
    OutcomeUnknown,
    Topology,
    _addr,
    _key_of,
    classify,
    follower_order,
    leader_hint,
    observe_read,
    read_commands,
    write_commands,
    write_outcome,
)
from .session import Session


class AsyncClient:
    def __init__(self, nodes, session: Session | None = None, wait_timeout_ms: int = 1000,
                 socket_timeout: float = 5.0, max_redirects: int = 20) -> None:
        if isinstance(nodes, str):
            nodes = [nodes]
        self.topology = Topology([_addr(n) for n in nodes])
        self.session = session if session is not None else Session()
        self.wait_timeout_ms = wait_timeout_ms
        self.socket_timeout = socket_timeout
        self.max_redirects = max_redirects
        self._conns: dict = {}
        self._rr = 0

    def conn(self, addr):
        c = self._conns.get(addr)
        if c is None:
            c = aredis.Redis(host=addr[0], port=addr[1], socket_timeout=self.socket_timeout,
                             socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))
            self._conns[addr] = c
        return c

    async def refresh(self) -> None:
        t = self.topology
        for addr in t.candidates():
            try:
                t.learn_partitions(await self.conn(addr).execute_command("PARTITIONS"))
                break
            except (redis.RedisError, OSError):
                continue
        for p, addrs in t.partitions.items():
            for addr in addrs:
                try:
                    if t.learn_role(p, addr, await self.conn(addr).execute_command("ROLE")):
                        break
                except (redis.RedisError, OSError):
                    continue

    async def leader(self, p: int):
        if p not in self.topology.leaders:
            await self.refresh()
        if p not in self.topology.leaders:
            raise NoLeader(f"no leader known for partition {p}")
        return self.topology.leaders[p]

    async def write(self, *args):
        key = _key_of(args)
        p = self.topology.partition_of(key)
        for _ in range(self.max_redirects):
            addr = await self.leader(p)
            pipe = self.conn(addr).pipeline(transaction=False)
            for cmd in write_commands(self.session, p, args):
                pipe.execute_command(*cmd)
            try:
                res = await pipe.execute(raise_on_error=False)
            except (redis.ConnectionError, redis.TimeoutError) as e:
                raise OutcomeUnknown(f"{args[0]!r} to {addr}: {e}") from e
            done, out = write_outcome(self.session, p, res)
            if done:
                return out
            hint = leader_hint(out)
            if hint is not None:
                self.topology.leaders[p] = hint
            else:
                self.topology.leaders.pop(p, None)
                await asyncio.sleep(0.05)
        raise NoLeader(f"partition {p}: still redirected after {self.max_redirects} tries")

    async def read(self, *args):
        key = _key_of(args)
        p = self.topology.partition_of(key)
        plan = self.session.plan_read(p, key or b"")
        if plan.target == "follower":
            lead = self.topology.leaders.get(p)
            fl = [a for a in self.topology.partitions.get(p, []) if a != lead]
            if fl:
                self._rr += 1
                for addr in follower_order(fl, plan.sticky, self._rr):
                    res = await self._try(addr, plan.need_seq, args, key)
                    if res is not None:
                        observe_read(self.session, p, res, key)
                        return res[0]
        for _ in range(self.max_redirects):
            addr = await self.leader(p)
            res = await self._try(addr, 0, args, key, raw=True)
            if isinstance(res, list) and isinstance(res[0], Exception):
                if classify(res[0]) != "retry":
                    raise res[0]      # an ordinary error (WRONGTYPE ...): the caller's to see
                res = None
            if res is not None:
                observe_read(self.session, p, res, key)
                return res[0]
            self.topology.leaders.pop(p, None)
            await asyncio.sleep(0.05)
        raise NoLeader(f"partition {p}: no leader answered")

    async def _try(self, addr, need, args, key, raw: bool = False):
        pipe = self.conn(addr).pipeline(transaction=False)
        for cmd in read_commands(need, self.wait_timeout_ms, args, key):
            pipe.execute_command(*cmd)
        try:
            res = await pipe.execute(raise_on_error=False)
        except (redis.ConnectionError, redis.TimeoutError):
            return None
        res = res[1:] if need else res
        if raw and isinstance(res[0], Exception) and not any(isinstance(r, Exception) for r in res[1:]):
            return res
        if any(isinstance(r, Exception) for r in res):
            return None
        return res

    async def get(self, key):
        return await self.read("GET", key)

    async def set(self, key, value, *opts):
        return await self.write("SET", key, value, *opts)

    async def close(self) -> None:
        for c in self._conns.values():
            await c.aclose()
        self._conns.clear()
