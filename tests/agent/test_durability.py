"""kill -9 at any moment of a PUT leaves no chunk or the whole chunk, and no temporary file after restart."""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_sos.agent import AgentError, Status, open_agent_pool
from trio_sos.agent import protocol as p
from trio_sos.agent.client import crc32c

from .raw import RawConn, put_frames


def test_kill_mid_put_leaves_nothing(agent) -> None:
    conn = RawConn(agent.address)
    chunk_id, body = os.urandom(16), os.urandom(8 << 20)
    frame = 1 << 20
    # PUT_BEGIN and half of the PUT_DATA frames, cut at a frame boundary
    conn.sock.sendall(put_frames(9, chunk_id, body, None, frame)[: p.HEADER_SIZE + 16 + 4 * (p.HEADER_SIZE + frame)])
    # The agent has had part of the data: prove it by a request answered after those frames on the same socket.
    assert conn.request(p.Op.PING, 10)[0] == Status.OK
    assert agent.temp_files(), "half a PUT should be sitting in tmp/"
    agent.kill9()
    conn.close()
    agent.start()
    assert agent.temp_files() == []
    assert not agent.chunk_path(chunk_id).exists()
    assert RawConn(agent.address).request(p.Op.STAT, 1, p.stat_payload(chunk_id, False))[0] == Status.NOT_FOUND


settings_ = settings(deadline=None, max_examples=12, suppress_health_check=[HealthCheck.function_scoped_fixture])

# The agent's crash points in a PUT's commit, in order, and whether the chunk must exist after a crash there:
# before link() nothing of it may be visible, from link() on all of it must be, verified (the data was fsynced
# before the link). kill -9 at each, exactly: TRIO_SOS_AGENT_CRASH_AT makes the agent SIGKILL itself there.
CRASH_POINTS = [("commit-begin", False), ("commit-fsynced", False), ("commit-linked", True),
                ("commit-tmp-removed", True), ("commit-durable", True)]


@pytest.mark.parametrize(("point", "present"), CRASH_POINTS)
@pytest.mark.parametrize("size", [0, 1, 65536, 65537, 3 << 20])
def test_kill_at_each_commit_step_is_all_or_nothing(agent, point: str, present: bool, size: int) -> None:
    agent.stop()
    agent.start(crash_at=point)
    conn = RawConn(agent.address)
    chunk_id, body = os.urandom(16), os.urandom(size)
    conn.sock.sendall(put_frames(3, chunk_id, body, crc32c(body)))
    with pytest.raises((EOFError, ConnectionResetError)):
        conn.result(3)  # it died at the point: no answer
    assert agent.reap() == -9
    conn.close()
    agent.start()
    assert agent.temp_files() == []
    check = RawConn(agent.address)
    status, body_stat = check.request(p.Op.STAT, 1, p.stat_payload(chunk_id, True))
    if present:
        assert status == Status.OK
        stat = p.parse_stat(body_stat)
        assert (stat.length, stat.crc32c) == (size, crc32c(body))
        check.send(p.Op.GET, 2, p.get_payload(chunk_id, 0, None))
        status, _, data = check.result(2)
        assert status == Status.OK and data == body
    else:
        assert status == Status.NOT_FOUND
        assert not agent.chunk_path(chunk_id).exists()
    check.close()


@settings_
@given(delay_us=st.integers(0, 4000), size=st.sampled_from([1, 70_000, 3 << 20]))
def test_kill_around_commit_is_all_or_nothing(agent, delay_us: int, size: int) -> None:
    """SIGKILL from outside at a random moment just after PUT_END was sent (the crash points above cover each step
    of the commit exactly; this covers the moments between them and the kernel's own timing)."""
    conn = RawConn(agent.address)
    chunk_id, body = os.urandom(16), os.urandom(size)
    conn.sock.sendall(put_frames(3, chunk_id, body, crc32c(body)))
    until = time.perf_counter_ns() + delay_us * 1000
    while time.perf_counter_ns() < until:  # a busy wait to pick the moment (perf_counter: ns, not 10 ms ticks)
        pass
    agent.kill9()
    conn.close()
    agent.start()
    assert agent.temp_files() == []
    check = RawConn(agent.address)
    status, body_stat = check.request(p.Op.STAT, 1, p.stat_payload(chunk_id, True))
    if status == Status.OK:
        stat = p.parse_stat(body_stat)
        assert (stat.length, stat.crc32c) == (size, crc32c(body))
        check.send(p.Op.GET, 2, p.get_payload(chunk_id, 0, None))
        status, _, data = check.result(2)
        assert status == Status.OK and data == body
    else:
        assert status == Status.NOT_FOUND
        assert not agent.chunk_path(chunk_id).exists()
    check.close()


async def test_acknowledged_put_survives_kill(agent) -> None:
    chunk_id, body = os.urandom(16), os.urandom(1 << 20)
    async with open_agent_pool(agent.address) as pool:
        await pool.put(chunk_id, body)
    agent.kill9()
    agent.start()
    async with open_agent_pool(agent.address) as pool:
        assert await pool.get(chunk_id) == body


async def test_checksum_mismatch_stores_nothing(agent) -> None:
    chunk_id, body = os.urandom(16), os.urandom(100_000)
    conn = RawConn(agent.address)
    conn.sock.sendall(put_frames(5, chunk_id, body, crc32c(body) ^ 1))
    assert conn.result(5)[0] == Status.CHECKSUM_MISMATCH
    conn.sock.sendall(put_frames(6, chunk_id, body, None)[:-p.HEADER_SIZE - 13]
                      + p.encode_frame(p.Op.PUT_END, 6, p.put_end_payload(len(body) + 1, None)))
    assert conn.result(6)[0] == Status.CHECKSUM_MISMATCH
    assert not agent.chunk_path(chunk_id).exists() and agent.temp_files() == []
    # the same id can then be stored properly
    async with open_agent_pool(agent.address) as pool:
        await pool.put(chunk_id, body)
        assert await pool.get(chunk_id) == body


async def test_max_chunk_is_enforced(agent_factory) -> None:
    agent = agent_factory("--max-chunk", str(1 << 20))
    async with open_agent_pool(agent.address) as pool:
        with pytest.raises(AgentError) as info:
            await pool.put(os.urandom(16), os.urandom((1 << 20) + 1))
        assert info.value.status == Status.TOO_LARGE
        await pool.put(os.urandom(16), os.urandom(1 << 20))
        # a failed PUT removes its temporary file before it answers
        assert agent.temp_files() == [] and len(agent.chunk_files()) == 1
