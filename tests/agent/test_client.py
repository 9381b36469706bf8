"""The Trio client: cancellation keeps pooled connections usable, a stuck agent applies backpressure,
timeouts drop the connection, and the pool reconnects after the agent comes back."""

from __future__ import annotations

import os
import random
import signal

import pytest
import trio

from trio_sos.agent import AgentConnectionError, AgentTimeout, open_agent_pool

MiB = 1 << 20


async def test_cancel_mid_put_keeps_the_connection(agent) -> None:
    chunk_id, body = os.urandom(16), os.urandom(3 * MiB)
    async with open_agent_pool(agent.address, size=1) as pool:
        await pool.ping()
        with trio.CancelScope() as scope:
            async with pool.put_stream(chunk_id) as w:
                await w.write(body[: 2 * MiB])
                scope.cancel()
                await w.write(body[2 * MiB :])
        assert scope.cancelled_caught
        # same connection, and the aborted PUT stored nothing: the id is still free
        await pool.put(chunk_id, body)
        assert await pool.get(chunk_id) == body
        assert pool.connects == 1
        assert agent.temp_files() == []


async def test_cancel_mid_get_keeps_the_connection(agent) -> None:
    chunk_id, body = os.urandom(16), os.urandom(16 * MiB)
    async with open_agent_pool(agent.address, size=1, read_window=16 * MiB) as pool:
        await pool.put(chunk_id, body)
        for _ in range(5):
            with trio.move_on_after(0.001):
                await pool.get(chunk_id)
        await pool.ping()
        assert await pool.get(chunk_id, 5, 10) == body[5:15]
        assert pool.connects == 1


async def test_random_cancellations_under_load(agent) -> None:
    """Tasks cancelled at arbitrary points never corrupt a shared connection's framing."""
    rng = random.Random(1234)
    acknowledged: dict[bytes, bytes] = {}
    async with open_agent_pool(agent.address, size=2) as pool:

        async def worker(i: int) -> None:
            for _ in range(10):
                chunk_id, body = os.urandom(16), os.urandom(rng.choice([10, 70_000, 1_500_000]))
                with trio.move_on_after(rng.uniform(0, 0.02)):
                    await pool.put(chunk_id, body)
                    acknowledged[chunk_id] = body
                if acknowledged:
                    with trio.move_on_after(rng.uniform(0, 0.02)):
                        some = rng.choice(list(acknowledged))
                        assert await pool.get(some) == acknowledged[some]

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(worker, i)
            for chunk_id, body in acknowledged.items():
                assert await pool.get(chunk_id) == body
        assert pool.connects <= 2  # nothing had to be replaced


async def test_frames_queued_together_keep_their_order_and_bytes(agent) -> None:
    """Many requests at once on one connection: the writer sends the small frames queued behind one another in one
    buffer (payloads around ``COALESCE_MAX`` on both sides, empty ones, pings between them) and every chunk comes
    back as written."""
    from trio_sos.agent.client import COALESCE_MAX

    sizes = [0, 1, 100, COALESCE_MAX - 40, COALESCE_MAX - 24, COALESCE_MAX, COALESCE_MAX + 1, 3 * COALESCE_MAX]
    stored: dict[bytes, bytes] = {}
    async with open_agent_pool(agent.address, size=1) as pool:

        async def writer(i: int) -> None:
            rng = random.Random(i)
            for _ in range(3):
                chunk_id, body = os.urandom(16), os.urandom(rng.choice(sizes))
                async with pool.put_stream(chunk_id) as stream:
                    cut = rng.randrange(len(body) + 1)
                    await stream.write(body[:cut])  # an empty write sends no frame
                    await stream.write(body[cut:])
                    await stream.finish()
                stored[chunk_id] = body
                await pool.ping()

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for i in range(16):
                    nursery.start_soon(writer, i)
            for chunk_id, body in stored.items():
                assert await pool.get(chunk_id) == body
        assert pool.connects == 1


async def test_stuck_agent_blocks_the_producer(agent) -> None:
    async with open_agent_pool(agent.address, size=1, queue_frames=4, timeout=60) as pool:
        await pool.ping()
        accepted = 0
        os.kill(agent.pid, signal.SIGSTOP)
        try:
            with trio.move_on_after(2):
                async with pool.put_stream(os.urandom(16)) as w:
                    piece = bytes(MiB)
                    while accepted < 1024 * MiB:
                        await w.write(piece)
                        accepted += len(piece)
        finally:
            os.kill(agent.pid, signal.SIGCONT)
        # the queue (4 frames) plus the kernel's socket buffers, not the gigabyte we offered
        assert 0 < accepted <= 32 * MiB, accepted
        # that PUT could not even be aborted while the agent was stopped: its connection was replaced
        await pool.ping()
        assert pool.connects == 2


async def stopped(pid: int) -> None:
    """Wait until ``pid`` is really stopped: SIGSTOP takes effect asynchronously, and a thread of the agent could
    still answer a request sent at once."""
    with trio.fail_after(10):
        while True:
            stat = await trio.Path(f"/proc/{pid}/stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] == "T":
                return
            await trio.sleep(0.005)


async def test_timeout_drops_connection_then_recovers(agent) -> None:
    async with open_agent_pool(agent.address, timeout=0.5) as pool:
        await pool.ping()
        os.kill(agent.pid, signal.SIGSTOP)
        try:
            await stopped(agent.pid)
            with pytest.raises(AgentTimeout):
                await pool.ping()
        finally:
            os.kill(agent.pid, signal.SIGCONT)
        await pool.ping()
        assert pool.connects == 2


async def test_reconnect_with_backoff_after_agent_restart(agent) -> None:
    chunk_id = os.urandom(16)
    async with open_agent_pool(agent.address, min_backoff=0.05, max_backoff=0.2) as pool:
        await pool.put(chunk_id, b"survives")
        agent.kill9()
        with pytest.raises(AgentConnectionError):
            await pool.get(chunk_id)
        with pytest.raises(AgentConnectionError):  # refused at once: the agent is down
            await pool.ping()
        agent.start()
        with trio.fail_after(10):
            while True:
                try:
                    assert await pool.get(chunk_id) == b"survives"
                    break
                except AgentConnectionError:
                    await trio.sleep(0.05)  # waiting out the pool's backoff, by design
