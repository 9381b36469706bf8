"""Out of space — by the agent's capacity option or a really full filesystem: a clear error, nothing partial."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from trio_sos.agent import AgentError, Status, open_agent_pool

MiB = 1 << 20


async def test_capacity_limit(agent_factory) -> None:
    agent = agent_factory("--capacity", str(2 * MiB))
    async with open_agent_pool(agent.address) as pool:
        kept = os.urandom(MiB)
        await pool.put(b"k" * 16, kept)
        refused = os.urandom(MiB + MiB // 2)
        with pytest.raises(AgentError) as info:
            await pool.put(b"r" * 16, refused)
        assert info.value.status == Status.NO_SPACE
        assert agent.temp_files() == [] and not agent.chunk_path(b"r" * 16).exists()
        assert await pool.get(b"k" * 16) == kept  # reads are still served
        await pool.put(b"s" * 16, b"small enough")
        info_ = await pool.info()
        assert info_.capacity == 2 * MiB and info_.used <= 2 * MiB and info_.chunks == 2
        await pool.delete(b"k" * 16)  # freeing space makes room again
        await pool.put(b"r" * 16, refused)
        assert await pool.get(b"r" * 16) == refused


@pytest.fixture(params=["tmpfs", "ext4"])
def small_fs(tmp_path, request):
    """A small file system, really full after a few MiB: a 4 MiB tmpfs, or an 8 MiB ext4 on a loop device (the
    agent writes large chunks with O_DIRECT, which the two take differently)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if request.param == "tmpfs":
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True)
    else:
        image = tmp_path / "small.ext4"
        subprocess.run(["truncate", "-s", "8M", str(image)], check=True)
        done = subprocess.run(["mkfs.ext4", "-q", str(image)], capture_output=True)
        if done.returncode == 0:
            done = subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small {request.param} here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


async def test_real_enospc(small_fs, agent_factory) -> None:
    from tests.procs import AgentProcess

    agent = AgentProcess(small_fs / "agent").start()
    free = shutil.disk_usage(small_fs).free
    try:
        async with open_agent_pool(agent.address) as pool:
            stored = {}
            with pytest.raises(AgentError) as info:
                for i in range(10):
                    body = os.urandom(MiB)
                    await pool.put(bytes([i]) * 16, body)
                    stored[bytes([i]) * 16] = body
            assert info.value.status == Status.NO_SPACE, info.value
            assert 1 <= len(stored) <= free // MiB
            assert agent.temp_files() == []
            assert len(agent.chunk_files()) == len(stored)
            for chunk_id, body in stored.items():
                assert await pool.get(chunk_id) == body
            await pool.delete(next(iter(stored)))
            await pool.put(b"\xff" * 16, os.urandom(MiB // 2))
    finally:
        agent.stop()
