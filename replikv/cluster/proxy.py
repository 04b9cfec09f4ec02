"""A TCP proxy per directed link between two nodes: the network faults of a local cluster.

Each node reaches each other node's peer port through its own proxy (``src -> dst``), so a
link can be cut, delayed, jittered or made lossy on its own, and restored. Explicit,
reversible faults (asyncpg's test proxy is the model):

- ``cut``: a partition. Bytes in flight and new bytes are dropped in both directions on that
  link (the connections stay open, as with a silent network partition: the peers notice
  only through missing heartbeats), and new connections are accepted but go nowhere.
- ``delay_ms`` / ``jitter_ms``: each chunk is held for delay + uniform(0, jitter) ms, in
  order.
- ``drop``: the probability that a chunk is lost; TCP cannot lose bytes silently, so a lost
  chunk resets the connection (the peers reconnect and resume from their positions).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field


@dataclass
class LinkState:
    cut: bool = False
    delay_ms: int = 0
    jitter_ms: int = 0
    drop: float = 0.0

    def healthy(self) -> bool:
        return not self.cut and not self.delay_ms and not self.jitter_ms and not self.drop


@dataclass
class LinkProxy:
    src: int
    dst: int
    listen_host: str
    listen_port: int
    target_host: str
    target_port: int
    state: LinkState = field(default_factory=LinkState)
    rng: random.Random = field(default_factory=random.Random)
    _server: asyncio.AbstractServer | None = None
    _conns: set = field(default_factory=set)
    bytes_forwarded: int = 0
    chunks_dropped: int = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.listen_host, self.listen_port,
                                                  reuse_address=True)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._conns):
            w.close()

    def reset_connections(self) -> None:
        for w in list(self._conns):
            w.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        try:
            if self.state.cut:
                # accepted, then silence: what a partition looks like from one side
                while self.state.cut:
                    if not await reader.read(65536):
                        return
                if reader.at_eof():
                    return
            try:
                ur, uw = await asyncio.wait_for(asyncio.open_connection(self.target_host, self.target_port), 2.0)
            except (OSError, asyncio.TimeoutError):
                return
            self._conns.add(uw)
            try:
                await asyncio.gather(self._pipe(reader, uw, writer), self._pipe(ur, writer, uw))
            finally:
                self._conns.discard(uw)
                uw.close()
        except (ConnectionError, OSError):
            pass
        finally:
            self._conns.discard(writer)
            writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    other: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                st = self.state
                if st.cut:
                    continue            # dropped on the floor
                if st.drop and self.rng.random() < st.drop:
                    self.chunks_dropped += 1
                    break               # a lost chunk: reset the connection
                wait = st.delay_ms + (self.rng.random() * st.jitter_ms if st.jitter_ms else 0)
                if wait:
                    await asyncio.sleep(wait / 1000)
                    if self.state.cut:
                        continue
                writer.write(data)
                self.bytes_forwarded += len(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            other.close()
