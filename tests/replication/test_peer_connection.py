"""PeerConnection over real loopback TCP: what ``recv()`` returns and what the handler takes
(only while the link's task waits in recv, in order, a declined message and all after it
going to recv), a handler's error raised by recv, and the per-turn read bound that lets
other tasks run during a burst."""

from __future__ import annotations

import asyncio

from replikv.core.peerproto import encode_message
from replikv.server import peerlink as R
from replikv.server.peerlink import PeerConnection, open_peer


async def link() -> tuple[PeerConnection, PeerConnection, asyncio.AbstractServer]:
    """Two ends of a real TCP connection on loopback: (client end, server end, server)."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future = loop.create_future()
    server = await loop.create_server(lambda: PeerConnection(on_connect=accepted.set_result), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    a = await open_peer("127.0.0.1", port, 5)
    b = await asyncio.wait_for(accepted, 5)
    return a, b, server


def run(coro):
    """On uvloop, as the node runs (plain asyncio when it is not installed)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(asyncio.wait_for(coro, 30))
    return uvloop.run(asyncio.wait_for(coro, 30))


def test_handler_takes_messages_only_while_the_task_waits_in_recv_and_declined_ones_keep_their_order():
    async def main():
        a, b, server = await link()
        taken: list[int] = []
        b.set_handler(lambda m: m["t"] == "ack" and (taken.append(m["n"]) or True))
        # nobody waits in recv yet: everything queues for recv, the handler takes nothing
        a.send({"t": "ack", "n": 1})
        await asyncio.sleep(0.05)
        assert taken == []
        assert (await b.recv())["n"] == 1
        # now the task waits in recv: acks are taken as they arrive; the first message the
        # handler declines ("hb") wakes recv, and the ack behind it stays queued behind it
        waiting = asyncio.ensure_future(b.recv())
        await asyncio.sleep(0.01)
        for n in (2, 3):
            a.send({"t": "ack", "n": n})
        await asyncio.sleep(0.05)
        assert taken == [2, 3] and not waiting.done()
        a.send_raw(encode_message({"t": "hb", "n": 4}) + encode_message({"t": "ack", "n": 5}))
        assert (await waiting)["n"] == 4
        assert (await b.recv())["n"] == 5 and taken == [2, 3]
        a.close()
        b.close()
        server.close()

    run(main())


def test_an_error_in_the_handler_is_raised_by_recv_and_closes_the_link():
    async def main():
        a, b, server = await link()

        def bad(m):
            raise ValueError(f"cannot handle {m['t']}")

        b.set_handler(bad)
        waiting = asyncio.ensure_future(b.recv())
        await asyncio.sleep(0.01)
        a.send({"t": "ack"})
        try:
            await waiting
            raise AssertionError("recv returned")
        except ValueError as e:
            assert "cannot handle ack" in str(e)
        # the other end sees the link close
        try:
            await a.recv()
            raise AssertionError("recv returned")
        except ConnectionError:
            pass
        server.close()

    run(main())


def test_a_burst_is_read_in_bounded_turns_so_other_tasks_run_in_between():
    """Megabytes waiting in the socket are taken about RX_TURN_BYTES per loop iteration
    (libuv alone would read up to 32 x 64 KB per iteration and the handler would apply all
    of it before any other task ran)."""
    async def main():
        loop = asyncio.get_running_loop()
        turns: list[int] = []
        other_ran = [0]

        class Counting(PeerConnection):
            def _next_turn(self) -> None:
                turns.append(self._rx_turn)
                super()._next_turn()

        accepted: asyncio.Future = loop.create_future()
        server = await loop.create_server(lambda: Counting(on_connect=accepted.set_result), "127.0.0.1", 0)
        a = await open_peer("127.0.0.1", server.sockets[0].getsockname()[1], 5)
        b = await asyncio.wait_for(accepted, 5)
        got = [0]
        b.set_handler(lambda m: got.__setitem__(0, got[0] + 1) or True)
        waiting = asyncio.ensure_future(b.recv())
        await asyncio.sleep(0.01)       # the link's task waits in recv: the handler takes the burst
        b.transport.pause_reading()     # let the burst pile up in the socket first
        msg = encode_message({"t": "records", "frames": b"x" * 10_000})
        a.send_raw(msg * 400)           # about 4 MB at once
        await asyncio.sleep(0.3)
        assert got[0] == 0

        async def other():
            while got[0] < 400:
                other_ran[0] += 1
                await asyncio.sleep(0)

        o = asyncio.ensure_future(other())
        b.transport.resume_reading()
        await asyncio.wait_for(o, 20)
        assert got[0] == 400
        # a turn may overshoot the bound by one read of the event loop (at most 256 KB)
        assert max(turns) <= R.RX_TURN_BYTES + 256 * 1024, turns
        assert len(turns) >= 4 and other_ran[0] >= len(turns) // 2, (turns, other_ran)
        waiting.cancel()
        a.close()
        b.close()
        server.close()

    run(main())
