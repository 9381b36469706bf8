"""LINK: a stored chunk under a second name (the same file, no byte copied) — what metadata-only copies are built
on. Each name lives on its own: deleting one never touches the other's bytes, the space is counted once and given
back with the last name, and kill -9 around a LINK leaves the new name whole or absent."""

from __future__ import annotations

import os

import pytest

from trio_sos.agent import AgentError, Status, open_agent_pool
from trio_sos.agent import protocol as p
from trio_sos.agent.client import crc32c

from .raw import RawConn

MiB = 1 << 20


async def test_link_shares_the_bytes_and_each_name_lives_on_its_own(agent) -> None:
    source, copy, body = os.urandom(16), os.urandom(16), os.urandom(3 * MiB + 5)
    async with open_agent_pool(agent.address) as pool:
        await pool.put(source, body)
        before = await pool.info()
        linked = await pool.link(copy, source)
        assert (linked.length, linked.crc32c) == (len(body), crc32c(body))
        after = await pool.info()
        assert after.chunks == before.chunks + 1 and after.used == before.used  # a name more, not a byte more
        assert agent.chunk_path(copy).stat().st_ino == agent.chunk_path(source).stat().st_ino
        assert await pool.get(copy) == body
        stat = await pool.stat(copy, verify=True)
        assert (stat.length, stat.crc32c) == (len(body), crc32c(body))
        await pool.delete(source)
        assert (await pool.info()).used == before.used  # the bytes are still held by the other name
        assert await pool.get(copy) == body
        with pytest.raises(AgentError) as info:
            await pool.get(source)
        assert info.value.status == Status.NOT_FOUND
        await pool.delete(copy)
        gone = await pool.info()
        assert gone.used == before.used - p_stored(len(body)) and gone.chunks == before.chunks - 1


def p_stored(length: int) -> int:
    """A chunk file's size on disk: data, a CRC per 64 KiB block, the footer (docs/agent-protocol.md)."""
    return length + 4 * -(-length // 65536) + 32


async def test_link_errors(agent) -> None:
    async with open_agent_pool(agent.address) as pool:
        a, b, c = os.urandom(16), os.urandom(16), os.urandom(16)
        await pool.put(a, b"first")
        await pool.put(b, b"second")
        for new, source, status in [(c, os.urandom(16), Status.NOT_FOUND),  # no such chunk
                                    (b, a, Status.EXISTS),  # never replaces a stored chunk
                                    (a, a, Status.EXISTS)]:
            with pytest.raises(AgentError) as info:
                await pool.link(new, source)
            assert info.value.status == status
        assert await pool.get(b) == b"second" and await pool.get(a) == b"first"
        assert not agent.chunk_path(c).exists()
    raw = RawConn(agent.address)
    for payload in [b"", a, a + b + b"x"]:
        status, _ = raw.request(p.Op.LINK, 7, payload)
        assert status == Status.BAD_REQUEST, payload
    # ids are bytes, never paths: a path-like id is only a name that is not stored
    assert raw.request(p.Op.LINK, 8, b"../../etc/passwd" + b"/" * 16)[0] == Status.NOT_FOUND
    raw.close()


async def test_link_of_a_corrupt_chunk_is_refused(agent) -> None:
    source, copy = os.urandom(16), os.urandom(16)
    async with open_agent_pool(agent.address) as pool:
        await pool.put(source, os.urandom(100_000))
        path = agent.chunk_path(source)
        data = bytearray(path.read_bytes())
        data[-3] ^= 0xFF  # the footer's own checksum no longer matches
        path.write_bytes(bytes(data))
        with pytest.raises(AgentError) as info:
            await pool.link(copy, source)
        assert info.value.status == Status.CORRUPT
        assert not agent.chunk_path(copy).exists()


async def test_used_space_is_counted_once_per_file_after_a_restart(agent) -> None:
    source, body = os.urandom(16), os.urandom(2 * MiB)
    async with open_agent_pool(agent.address) as pool:
        await pool.put(source, body)
        alone = await pool.info()
        names = [os.urandom(16) for _ in range(3)]
        for name in names:
            await pool.link(name, source)
    agent.stop()
    agent.start()  # the start-up scan sees one file with four names
    async with open_agent_pool(agent.address) as pool:
        info = await pool.info()
        assert info.used == alone.used and info.chunks == alone.chunks + 3
        for name in [source, *names[:2]]:
            await pool.delete(name)
        assert (await pool.info()).used == alone.used
        await pool.delete(names[2])
        assert (await pool.info()).used == alone.used - p_stored(len(body))


@pytest.mark.parametrize(("point", "present"), [("link-begin", False), ("link-linked", None),
                                                ("link-durable", True)])
async def test_kill_at_each_link_step_leaves_the_name_whole_or_absent(agent, point: str, present: bool | None
                                                                      ) -> None:
    source, copy, body = os.urandom(16), os.urandom(16), os.urandom(MiB + 1)
    async with open_agent_pool(agent.address) as pool:
        await pool.put(source, body)
    agent.stop()
    agent.start(crash_at=point)
    conn = RawConn(agent.address)
    conn.send(p.Op.LINK, 3, p.link_payload(copy, source))
    with pytest.raises((EOFError, ConnectionResetError)):
        conn.result(3)  # it died at the point: no answer
    assert agent.reap() == -9
    conn.close()
    agent.start()
    async with open_agent_pool(agent.address) as pool:
        assert await pool.get(source) == body  # the source is never touched
        try:
            copied = await pool.get(copy)
        except AgentError as exc:
            assert exc.status == Status.NOT_FOUND and present is not True
        else:
            assert copied == body and present is not False
        # the accounting stays exact whatever happened: one file's bytes
        info = await pool.info()
        assert info.used == p_stored(len(body))


@pytest.fixture
def agent(agent_factory):
    return agent_factory()
