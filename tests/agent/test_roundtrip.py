"""Chunks of random sizes go in and come back out, whole and by range, many at once on one connection."""

from __future__ import annotations

import os
import shutil

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_sos.agent import AgentError, Status, open_agent_pool
from trio_sos.agent.client import AgentConnection, crc32c

BLOCK = 64 * 1024
# Sizes around the block and frame boundaries are where off-by-one errors live.
sizes = st.one_of(
    st.integers(0, 300),
    st.sampled_from([BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK, (1 << 20) - 1, 1 << 20, (1 << 20) + 1]),
    st.integers(0, 3 << 20),
)
fixture_ok = settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])


def new_id() -> bytes:
    return os.urandom(16)


@fixture_ok
@given(size=sizes, data=st.data(), write_step=st.integers(1, 3 << 20))
async def test_put_get_random_sizes_and_ranges(agent, size: int, data, write_step: int) -> None:
    body = os.urandom(size)
    chunk_id = new_id()
    with trio.fail_after(30):
        async with open_agent_pool(agent.address, read_window=256 * 1024) as pool:
            # at most ~256 writes: tiny steps over megabytes would test patience, not framing
            step = max(write_step, size // 256 + 1)
            async with pool.put_stream(chunk_id) as w:
                for i in range(0, size, step):
                    await w.write(body[i : i + step])
                result = await w.finish()
            assert (result.length, result.crc32c) == (size, crc32c(body))
            assert await pool.get(chunk_id) == body
            for _ in range(3):
                offset = data.draw(st.integers(0, size), label="offset")
                length = data.draw(st.one_of(st.none(), st.integers(0, size - offset + 10)), label="length")
                expected = body[offset:] if length is None else body[offset : offset + length]
                assert await pool.get(chunk_id, offset, length) == expected
            stat = await pool.stat(chunk_id, verify=True)
            assert (stat.length, stat.crc32c) == (size, crc32c(body))


MiB = 1 << 20
# Every boundary the agent has: its 64 KiB checksummed blocks, its 16-block read batches, the 1 MiB frame —
# reached on purpose, not by the chance of the random test above.
# The agent gathers a chunk's file bytes (each block followed by its 4-byte CRC, then a 32-byte footer) in 1 MiB
# pieces for its direct writes: data of MiB - 64 bytes fills the first piece exactly, MiB - 74 puts the footer
# across the boundary, and the last piece of a chunk is padded to 4 KiB and cut back.
STAGE_EDGES = [MiB - 64 - 1, MiB - 64, MiB - 64 + 1, MiB - 74, 2 * MiB - 128, 3 * MiB - 192 + 4095]
BOUNDARY_SIZES = [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK, 16 * BLOCK - 1, 16 * BLOCK, 16 * BLOCK + 1,
                  MiB - 1, MiB, MiB + 1, 2 * MiB + BLOCK, *STAGE_EDGES]


def evict(path) -> None:
    """Drop a file's (clean) pages from the page cache, as memory pressure would."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


MODES = {  # how chunks are written, then read
    # O_DIRECT from the staging buffer; the first GET of a chunk reads it with O_DIRECT (it is not cached), the
    # next through the page cache (a second GET: cache admission), filling it, and the others from the cache
    "direct writes": [],
    # written O_DIRECT, never admitted to the cache: every read is an O_DIRECT one
    "direct writes, read cold": ["--no-read-cache-admission"],
    "page cache": ["--no-direct"],  # written and read through the page cache
    # evicted before each read, never admitted: every read is an O_DIRECT one
    "page cache, read cold": ["--no-direct", "--no-read-cache-admission"],
    "no direct reads": ["--no-direct-reads"],  # written O_DIRECT, read cold through the page cache
}


@pytest.mark.parametrize("size", BOUNDARY_SIZES)
@pytest.mark.parametrize("mode", MODES)
async def test_boundary_sizes_steps_and_ranges(agent_factory, size: int, mode: str) -> None:
    """Every write mode of the agent: O_DIRECT from its staging buffer (the default for chunks of a MiB and more),
    and through the page cache (--no-direct; also what chunks starting with a frame under a block get); and every
    read mode: O_DIRECT for blocks mostly not in the page cache (rounded out to 4 KiB around blocks of 64 KiB + 4),
    through the page cache for the others or with --no-direct-reads."""
    agent = agent_factory(*MODES[mode])
    cold = mode == "page cache, read cold"

    async def get(chunk_id: bytes, *args):
        if cold:
            evict(agent.chunk_path(chunk_id))
        return await pool.get(chunk_id, *args)

    body = os.urandom(size)
    with trio.fail_after(60):
        async with open_agent_pool(agent.address, read_window=BLOCK + 1) as pool:
            for n, step in enumerate([max(size, 1), BLOCK, BLOCK + 1, MiB - 1]):
                chunk_id = new_id()
                async with pool.put_stream(chunk_id) as w:
                    for i in range(0, size, step):
                        await w.write(body[i : i + step])
                    result = await w.finish()
                assert (result.length, result.crc32c) == (size, crc32c(body)), step
                if n:
                    assert await get(chunk_id) == body
                    continue
                edges = {0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 16 * BLOCK, MiB, size - 1, size}
                for offset in sorted(o for o in edges if 0 <= o <= size):
                    for length in (None, 0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 16 * BLOCK + 1):
                        expected = body[offset:] if length is None else body[offset : offset + length]
                        assert await get(chunk_id, offset, length) == expected, (offset, length)
                if cold:
                    evict(agent.chunk_path(chunk_id))
                stat = await pool.stat(chunk_id, verify=True)
                assert (stat.length, stat.crc32c) == (size, crc32c(body))


async def test_range_past_end_is_an_error(agent) -> None:
    async with open_agent_pool(agent.address) as pool:
        chunk_id = new_id()
        await pool.put(chunk_id, b"0123456789")
        assert await pool.get(chunk_id, 10) == b""
        with pytest.raises(AgentError) as info:
            await pool.get(chunk_id, 11)
        assert info.value.status == Status.RANGE


async def test_pipelined_requests_on_one_connection(agent) -> None:
    """200 mixed requests in flight at once on a single connection, each answered correctly."""
    bodies = {new_id(): os.urandom(n) for n in [0, 1, 5000, BLOCK + 3, 300_000] * 8}
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            conn = await AgentConnection.connect(nursery, agent.address, queue_frames=4)

            async def put(chunk_id: bytes, body: bytes) -> None:
                async with conn.put_stream(chunk_id) as w:
                    await w.write(body)
                    assert (await w.finish()).length == len(body)

            async with trio.open_nursery() as puts:
                for chunk_id, body in bodies.items():
                    puts.start_soon(put, chunk_id, body)
            seen_in_flight = 0

            async def check(chunk_id: bytes, body: bytes) -> None:
                nonlocal seen_in_flight
                seen_in_flight = max(seen_in_flight, conn.in_flight)
                got, result = await conn.get(chunk_id)
                assert got == body and result.chunk_length == len(body)
                stat = await conn.stat(chunk_id)
                assert stat.crc32c == crc32c(body)
                await conn.ping()

            async with trio.open_nursery() as gets:
                for chunk_id, body in bodies.items():
                    gets.start_soon(check, chunk_id, body)
            assert seen_in_flight > 10  # they really were pipelined, not one after another
            assert conn.usable
            await conn.aclose()


async def test_exists_delete_not_found_and_info(agent) -> None:
    async with open_agent_pool(agent.address) as pool:
        before = await pool.info()
        chunk_id = new_id()
        await pool.put(chunk_id, b"x" * 1000)
        with pytest.raises(AgentError) as info:
            await pool.put(chunk_id, b"other bytes")
        assert info.value.status == Status.EXISTS
        assert await pool.get(chunk_id) == b"x" * 1000  # the first version stays
        after = await pool.info()
        assert after.chunks == before.chunks + 1 and after.used > before.used
        assert after.agent_id == (await pool.hello()).agent_id
        await pool.delete(chunk_id)
        for call in (pool.delete(chunk_id), pool.stat(chunk_id), pool.get(chunk_id)):
            with pytest.raises(AgentError) as info:
                await call
            assert info.value.status == Status.NOT_FOUND
        assert (await pool.info()).chunks == before.chunks


async def test_list_pages_in_id_order(agent) -> None:
    ids = sorted(new_id() for _ in range(237))
    async with open_agent_pool(agent.address) as pool:
        async with trio.open_nursery() as nursery:
            for i, chunk_id in enumerate(ids):
                nursery.start_soon(pool.put, chunk_id, bytes([i % 256]) * i)
        listed = [entry async for entry in pool.list_all(page=50)]
        assert listed == [(chunk_id, i) for i, chunk_id in enumerate(ids)]
        page = await pool.list_page(ids[100], 10)
        assert [e[0] for e in page.entries] == ids[101:111] and page.more
        with pytest.raises(AgentError) as info:
            await pool.list_page(None, 0)
        assert info.value.status == Status.BAD_REQUEST


async def test_restart_keeps_chunks_and_agent_id(agent) -> None:
    chunk_id, body = new_id(), os.urandom(200_000)
    async with open_agent_pool(agent.address) as pool:
        await pool.put(chunk_id, body)
        agent_id = (await pool.info()).agent_id
    agent.restart()
    async with open_agent_pool(agent.address) as pool:
        assert await pool.get(chunk_id) == body
        info = await pool.info()
        assert info.agent_id == agent_id and info.chunks == 1


async def test_verbose_agent_logs_each_request(agent_factory) -> None:
    """``--verbose`` (its --help lists it) is taken, and logs the requests and chunks it serves."""
    agent = agent_factory("--verbose")
    chunk_id = new_id()
    with trio.fail_after(30):
        async with open_agent_pool(agent.address) as pool:
            async with pool.put_stream(chunk_id) as w:
                await w.write(b"logged")
                await w.finish()
            assert await pool.get(chunk_id) == b"logged"
    log = agent.log_path.read_text()
    assert "DEBUG request" in log and "op=GET" in log, log


async def _cached_bytes(path) -> int:
    out = await trio.run_process(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                                 capture_stdout=True)
    return int(out.stdout.split()[0])


@pytest.mark.skipif(shutil.which("fincore") is None, reason="util-linux's fincore is not installed")
async def test_large_chunks_are_written_past_the_page_cache(agent_factory) -> None:
    """A chunk of a MiB or more is written with O_DIRECT (its bytes do not stay in the page cache, which holds
    what is read instead); with --no-direct, or for a small chunk, through the page cache."""
    body = os.urandom(4 * MiB + 12345)
    seen = {}
    for writes in ("direct", "page cache"):
        agent = agent_factory(*(["--no-direct"] if writes == "page cache" else []), name=writes)
        chunk_id, small_id = new_id(), new_id()
        async with open_agent_pool(agent.address) as pool:
            await pool.put(chunk_id, body)
            await pool.put(small_id, b"small")
            seen[writes] = await _cached_bytes(agent.chunk_path(chunk_id))
            assert await _cached_bytes(agent.chunk_path(small_id)) > 0  # small chunks: through the page cache
            assert await pool.get(chunk_id) == body
    fs = (await trio.run_process(["stat", "-f", "-c", "%T", str(agent.data_dir)], capture_stdout=True)).stdout
    if fs.strip() == b"tmpfs":  # pragma: no cover - its pages are the file, O_DIRECT or not
        pytest.skip("the data dir is on tmpfs")
    assert seen["direct"] <= 64 * 1024, seen  # at most the padded last page's neighbourhood
    assert seen["page cache"] >= 4 * MiB, seen


@pytest.mark.skipif(shutil.which("fincore") is None, reason="util-linux's fincore is not installed")
async def test_cold_chunks_are_read_past_the_page_cache(agent_factory) -> None:
    """A chunk not in the page cache is read (GET and STAT verify) with O_DIRECT: serving it leaves it uncached,
    instead of filling the cache at a page fault per 4 KiB, even when one pass over it comes in several GETs out
    of order. A second pass reads it through the cache, which keeps it for the next (not with
    --no-read-cache-admission); scrubbing never does. With --no-direct-reads the first pass fills the cache. A
    chunk that is cached is read from the cache."""
    body = os.urandom(3 * MiB + 777)
    first, second = {}, {}
    for reads, args in {"direct": [], "never admitted": ["--no-read-cache-admission"],
                        "page cache": ["--no-direct-reads"]}.items():
        agent = agent_factory(*args, name=reads.replace(" ", "-"))
        cold, warm = new_id(), new_id()
        async with open_agent_pool(agent.address) as pool:
            await pool.put(cold, body)
            await pool.put(warm, body)
            evict(agent.chunk_path(cold))
            agent.chunk_path(warm).read_bytes()  # the whole file in the page cache
            for _ in range(2):
                assert (await pool.stat(cold, verify=True)).length == len(body)
            # one pass in windows, in any order (as a node streams a large object): not a read again
            window = len(body) // 4 + 1

            async def get_window(start: int, chunk_id: bytes = cold, window: int = window) -> None:
                assert await pool.get(chunk_id, start, window) == body[start : start + window]

            async with trio.open_nursery() as nursery:
                for start in reversed(range(0, len(body), window)):
                    nursery.start_soon(get_window, start)
                    await trio.lowlevel.checkpoint()
            first[reads] = await _cached_bytes(agent.chunk_path(cold))
            assert await pool.get(cold) == body
            second[reads] = await _cached_bytes(agent.chunk_path(cold))
            assert await pool.get(warm) == body
            assert await _cached_bytes(agent.chunk_path(warm)) >= 3 * MiB
    fs = (await trio.run_process(["stat", "-f", "-c", "%T", str(agent.data_dir)], capture_stdout=True)).stdout
    if fs.strip() == b"tmpfs":  # pragma: no cover - its pages are the file, O_DIRECT or not
        pytest.skip("the data dir is on tmpfs")
    assert first["direct"] <= 64 * 1024, first  # the footer's page, read at open
    assert first["never admitted"] <= 64 * 1024, first
    assert first["page cache"] >= 3 * MiB, first
    assert second["direct"] >= 3 * MiB, second  # the second GET was admitted
    assert second["never admitted"] <= 64 * 1024, second
