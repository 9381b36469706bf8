"""Zero-copy GET windows (trio_sos.agent.direct) against the real agent: the bytes a window moves are the chunk's,
verified before the first one leaves, and no failure leaves a connection or a pipe to be reused with stray bytes."""

from __future__ import annotations

import os
import socket

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_sos.agent import AgentError, Status, open_agent_pool
from trio_sos.agent.direct import PIPES, DirectConnectionError, DirectWindow, window_end

from .test_corruption import flip

BLOCK = 64 * 1024

pytestmark = pytest.mark.skipif(not hasattr(os, "splice"), reason="zero-copy reads need os.splice (Linux)")


def client_pair(rcvbuf: int | None = None) -> tuple[trio.socket.SocketType, socket.socket]:
    """A connected pair: the Trio end the window is moved to, and a plain end the test reads from."""
    a, b = socket.socketpair()
    if rcvbuf is not None:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, rcvbuf)
        b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    a.setblocking(False)
    return trio.socket.from_stdlib_socket(a), b


async def receive(sock: socket.socket, n: int) -> bytes:
    def run() -> bytes:
        out = bytearray()
        while len(out) < n:
            piece = sock.recv(n - len(out))
            if not piece:
                break
            out += piece
        return bytes(out)

    return await trio.to_thread.run_sync(run)


async def move(window: DirectWindow, n: int) -> bytes:
    """Move ``window`` to a fresh socket pair and return what came out at the other end."""
    dst, src = client_pair()
    got = b""
    try:
        async with trio.open_nursery() as nursery:
            async def reader() -> None:
                nonlocal got
                got = await receive(src, n)

            nursery.start_soon(reader)
            try:
                await window.move_to(dst)
            finally:
                dst.close()  # the reader gets what was sent, then EOF
    finally:
        src.close()
    return got


async def test_windows_move_the_chunk_bytes_and_reuse_one_connection(agent) -> None:
    chunk_id, body = os.urandom(16), os.urandom(3 * (1 << 20) + 12345)
    async with open_agent_pool(agent.address) as pool:
        await pool.put(chunk_id, body)
        # windows as the node cuts them: aligned runs of 16 blocks, the first one starting anywhere
        for start, end in [(0, len(body)), (BLOCK - 1, len(body)), (1 << 20, 2 * (1 << 20) + 1), (5, 6),
                           (len(body) - 1, len(body))]:
            pos, out = start, b""
            while pos < end:
                want = window_end(pos, end) - pos
                window = await pool.open_direct(chunk_id, pos, want)
                assert isinstance(window, DirectWindow), "the agent verified this window: it is moved, not copied"
                assert len(window) == want
                out += await move(window, want)
                pos += want
            assert out == body[start:end]
        assert len(pool._direct) == 1  # one connection served every window, one after the other
        # the empty range at the chunk's end
        assert await pool.open_direct(chunk_id, len(body), 0) == b""


async def test_a_corrupt_block_is_an_error_before_any_byte_moves(agent) -> None:
    chunk_id, body = os.urandom(16), os.urandom(40 * BLOCK)
    async with open_agent_pool(agent.address) as pool:
        await pool.put(chunk_id, body)
        flip(agent.chunk_path(chunk_id), 20 * (BLOCK + 4) + 7)  # block 20: the second window of 16 blocks
        window = await pool.open_direct(chunk_id, 0, 16 * BLOCK)
        assert await move(window, 16 * BLOCK) == body[: 16 * BLOCK]
        with pytest.raises(AgentError) as info:
            await pool.open_direct(chunk_id, 16 * BLOCK, 16 * BLOCK)
        assert info.value.status == Status.CORRUPT
        # the connection answered in frame and serves the next window
        window = await pool.open_direct(chunk_id, 32 * BLOCK, 8 * BLOCK)
        assert isinstance(window, DirectWindow)
        assert await move(window, 8 * BLOCK) == body[32 * BLOCK :]
        with pytest.raises(AgentError) as info:
            await pool.open_direct(os.urandom(16), 0, 10)
        assert info.value.status == Status.NOT_FOUND


async def test_an_agent_verifying_fewer_blocks_at_once_is_read_the_copying_way(agent_factory) -> None:
    agent = agent_factory("--max-frame", str(BLOCK))  # verifies one block before sending it
    chunk_id, body = os.urandom(16), os.urandom(4 * BLOCK)
    async with open_agent_pool(agent.address) as pool:
        await pool.put(chunk_id, body)
        got = await pool.open_direct(chunk_id, 10, 3 * BLOCK)
        assert got == body[10 : 10 + 3 * BLOCK]  # bytes, read and checked whole before anything is sent
        window = await pool.open_direct(chunk_id, BLOCK, BLOCK)  # within one block: it may move
        assert isinstance(window, DirectWindow)
        assert await move(window, BLOCK) == body[BLOCK : 2 * BLOCK]


async def test_a_window_cut_short_leaves_nothing_behind(agent) -> None:
    """A client that stops reading (the send timeout) or goes away mid-window: the agent connection is closed,
    the pipe with bytes in it is not reused, and the next window is exact."""
    chunk_id, body = os.urandom(16), os.urandom(16 * BLOCK)
    async with open_agent_pool(agent.address) as pool:
        await pool.put(chunk_id, body)
        # a client that reads nothing: the move blocks with bytes in the pipe, until cancelled
        window = await pool.open_direct(chunk_id, 0, len(body))
        dst, src = client_pair(rcvbuf=4096)
        with trio.move_on_after(0.5) as scope:
            await window.move_to(dst)
        assert scope.cancelled_caught
        assert window.conn.broken and pool._direct == []
        dst.close()
        src.close()
        # a client that hangs up after a few bytes
        window = await pool.open_direct(chunk_id, 0, len(body))
        dst, src = client_pair(rcvbuf=4096)
        failure: list[BaseException] = []

        async def mover() -> None:
            try:
                await window.move_to(dst)
            except (trio.BrokenResourceError, OSError) as exc:
                failure.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(mover)
            assert len(await receive(src, 1000)) == 1000
            src.close()
        assert failure, "the move went on to a client that had gone"
        dst.close()
        assert window.conn.broken and pool._direct == []
        idle_pipes = len(PIPES._idle)
        for start in (0, 3 * BLOCK + 1):
            window = await pool.open_direct(chunk_id, start, len(body) - start)
            assert await move(window, len(body) - start) == body[start:]
        assert len(pool._direct) == 1
        assert len(PIPES._idle) <= idle_pipes + 1


async def test_an_agent_dying_mid_window_hands_the_rest_to_another_read(agent_factory) -> None:
    """The agent is killed having sent half a DATA frame (crash point ``get-mid-frame``): the half that came goes
    out, and ``resume`` supplies the rest of the window (here from a second agent holding the same chunk)."""
    dying, replica = agent_factory(name="dying"), agent_factory(name="replica")
    chunk_id, body = os.urandom(16), os.urandom(16 * BLOCK)
    async with open_agent_pool(dying.address) as pool, open_agent_pool(replica.address) as other:
        await pool.put(chunk_id, body)
        await other.put(chunk_id, body)
        dying.stop()
        dying.start(crash_at="get-mid-frame")
        asked: list[int] = []

        async def resume(done: int) -> bytes:
            asked.append(done)
            return await other.get(chunk_id, 5 + done, len(body) - 5 - done)

        window = await pool.open_direct(chunk_id, 5, len(body) - 5)
        assert isinstance(window, DirectWindow)
        window.resume = resume
        assert await move(window, len(body) - 5) == body[5:]
        assert asked and 0 < asked[0] < len(body) - 5, asked
        assert window.conn.broken and pool._direct == []
        # without a resume, the same break is an error (and the caller cuts the client connection); the crashed
        # agent is reaped first: until it has exited, its listening socket may still hold the port
        dying.reap()
        dying.start(crash_at="get-mid-frame")
        window = await pool.open_direct(chunk_id, 0, len(body))
        assert isinstance(window, DirectWindow)
        with pytest.RaisesGroup(DirectConnectionError):
            await move(window, len(body))
        dying.reap()
        dying.start()  # a clean stop at teardown


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(1, 3 * (1 << 20)), data=st.data())
async def test_any_range_in_windows_is_the_chunks_bytes(agent, size: int, data) -> None:
    """Property: whatever the chunk's length and the range asked, cutting it into windows as the node does and
    moving each one gives exactly the chunk's bytes (windows that fit the agent's check batch, never more)."""
    body = os.urandom(size)
    start = data.draw(st.integers(0, size - 1), label="start")
    end = data.draw(st.integers(start + 1, size), label="end")
    chunk_id = os.urandom(16)
    async with open_agent_pool(agent.address) as pool:
        await pool.put(chunk_id, body)
        pos, out = start, b""
        while pos < end:
            want = window_end(pos, end) - pos
            assert 0 < want <= 16 * BLOCK
            assert (pos + want) % BLOCK == 0 or pos + want == end  # windows after the first start aligned
            window = await pool.open_direct(chunk_id, pos, want)
            assert isinstance(window, DirectWindow)
            out += await move(window, want)
            pos += want
        assert out == body[start:end]
        await pool.delete(chunk_id)


async def test_direct_connections_are_bounded(agent) -> None:
    """However many windows are open at once, a pool holds at most ``direct_max`` direct connections (each one is
    an agent thread with a 1 MiB buffer): beyond that, windows are read the copying way, through the pool's own
    bounded connections."""
    chunk_id, body = os.urandom(16), os.urandom(4 * BLOCK)
    async with open_agent_pool(agent.address, size=1) as pool:
        await pool.put(chunk_id, body)
        assert pool.direct_max == 4
        windows = [await pool.open_direct(chunk_id, i * BLOCK, BLOCK) for i in range(4)]
        assert all(isinstance(w, DirectWindow) for w in windows) and pool.direct_in_use == 4
        assert await pool.open_direct(chunk_id, 0, 10) == body[:10]  # the fifth, copied
        windows[0].discard()  # given up: its connection is closed, and a place is free again
        fifth = await pool.open_direct(chunk_id, 0, BLOCK)
        assert isinstance(fifth, DirectWindow)
        assert await move(fifth, BLOCK) == body[:BLOCK]
        del windows[1]  # dropped without a word: collected, its place comes back too
        assert pool.direct_in_use == 2  # windows[2] and windows[3]; the moved fifth went back idle
        for i, window in enumerate(windows[1:], start=2):
            assert await move(window, BLOCK) == body[i * BLOCK:(i + 1) * BLOCK]
        assert pool.direct_in_use == 0 and len(pool._direct) == 1  # at most ``size`` are kept idle
