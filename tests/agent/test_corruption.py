"""A stored chunk whose bytes changed on disk is reported CORRUPT, never served as good data."""

from __future__ import annotations

import os

import pytest

from trio_sos.agent import AgentError, Status, open_agent_pool

BLOCK = 64 * 1024


def flip(path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


async def expect_corrupt(call) -> None:
    with pytest.raises(AgentError) as info:
        await call
    assert info.value.status == Status.CORRUPT


async def test_flipped_data_byte(agent) -> None:
    chunk_id, body = os.urandom(16), os.urandom(5 * BLOCK + 123)
    async with open_agent_pool(agent.address) as pool:
        await pool.put(chunk_id, body)
        # data byte 10 of block 2: file offset counts the 4-byte checksum after each earlier block
        flip(agent.chunk_path(chunk_id), 2 * (BLOCK + 4) + 10)
        await expect_corrupt(pool.get(chunk_id))
        await expect_corrupt(pool.get(chunk_id, 2 * BLOCK, 100))
        await expect_corrupt(pool.stat(chunk_id, verify=True))
        # blocks that were not touched still read, and a plain STAT does not read the data
        assert await pool.get(chunk_id, 0, 2 * BLOCK) == body[: 2 * BLOCK]
        assert await pool.get(chunk_id, 3 * BLOCK) == body[3 * BLOCK :]
        assert (await pool.stat(chunk_id)).length == len(body)


async def test_flipped_data_byte_of_a_chunk_not_in_the_page_cache(agent) -> None:
    """Read past the page cache (O_DIRECT, the 4 KiB-aligned span around the blocks), a changed byte on disk is
    found as well: in the first block, the last block and one in between."""
    from tests.agent.test_roundtrip import evict

    chunk_id, body = os.urandom(16), os.urandom(40 * BLOCK + 999)
    async with open_agent_pool(agent.address) as pool:
        await pool.put(chunk_id, body)
        path = agent.chunk_path(chunk_id)
        for block in (0, 17, 40):
            offset = block * (BLOCK + 4) + 7
            flip(path, offset)
            os.sync()
            evict(path)
            await expect_corrupt(pool.get(chunk_id))
            await expect_corrupt(pool.get(chunk_id, block * BLOCK, 10))
            evict(path)
            await expect_corrupt(pool.stat(chunk_id, verify=True))
            flip(path, offset)  # back as it was: the chunk reads whole again, cold
            os.sync()
            evict(path)
            assert await pool.get(chunk_id) == body


async def test_flipped_block_checksum_and_footer(agent) -> None:
    async with open_agent_pool(agent.address) as pool:
        a, b = os.urandom(16), os.urandom(16)
        await pool.put(a, os.urandom(BLOCK * 2))
        await pool.put(b, os.urandom(1000))
        flip(agent.chunk_path(a), BLOCK + 1)  # inside the checksum of block 0
        await expect_corrupt(pool.get(a, 0, 10))
        size = agent.chunk_path(b).stat().st_size
        flip(agent.chunk_path(b), size - 20)  # the footer's length field
        await expect_corrupt(pool.get(b))
        await expect_corrupt(pool.stat(b))


async def test_truncated_chunk(agent) -> None:
    async with open_agent_pool(agent.address) as pool:
        chunk_id = os.urandom(16)
        await pool.put(chunk_id, os.urandom(3 * BLOCK))
        path = agent.chunk_path(chunk_id)
        os.truncate(path, path.stat().st_size - 1)
        await expect_corrupt(pool.get(chunk_id))
        os.truncate(path, 0)
        await expect_corrupt(pool.get(chunk_id))
        await expect_corrupt(pool.stat(chunk_id))
        await pool.ping()  # the agent keeps serving
