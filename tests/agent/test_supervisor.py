"""`python -m trio_sos agent`: the supervisor restarts a dead or hung agent and stops it with itself."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import psutil
import trio

from tests.procs import check_log_file
from trio_sos.agent import AgentConnectionError, open_agent_pool
from trio_sos.agent.supervisor import AgentOptions, AgentSupervisor


def start_cli(tmp_path, *args: str) -> subprocess.Popen:
    """``python -m trio_sos agent ...`` with its stderr (the supervisor's and the agent's) in a log file that
    ``stop_cli`` checks for tracebacks, errors and sanitizer reports."""
    log = open(tmp_path / "supervisor.log", "ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "trio_sos", "agent", "--data-dir", str(tmp_path / "d"), *args],
                                stderr=log, stdin=subprocess.DEVNULL)
    finally:
        log.close()


def check_cli_log(tmp_path, *allowed: str) -> None:
    import re

    check_log_file(tmp_path / "supervisor.log", [re.compile(a) for a in allowed], "supervisor")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_serving(address: str, timeout: float = 20) -> None:
    with trio.fail_after(timeout):
        while True:
            try:
                async with open_agent_pool(address, timeout=1) as pool:
                    await pool.ping()
                return
            except AgentConnectionError:
                await trio.sleep(0.05)


async def wait_new_child(sup: psutil.Process, old: set[int], timeout: float = 20) -> psutil.Process:
    with trio.fail_after(timeout):
        while True:
            children = [c for c in sup.children() if c.pid not in old and c.status() != psutil.STATUS_ZOMBIE]
            if children:
                return children[0]
            await trio.sleep(0.05)


async def test_cli_restarts_killed_agent_and_stops_it(tmp_path) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    proc = start_cli(tmp_path, "--listen", address, "--health-interval", "0.2")
    try:
        sup = psutil.Process(proc.pid)
        await wait_serving(address)
        first = await wait_new_child(sup, set())
        async with open_agent_pool(address, min_backoff=0.05, max_backoff=0.2) as pool:
            await pool.put(b"c" * 16, b"kept across restarts")
        first.send_signal(signal.SIGKILL)
        second = await wait_new_child(sup, {first.pid})
        await wait_serving(address)
        async with open_agent_pool(address) as pool:
            assert await pool.get(b"c" * 16) == b"kept across restarts"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert not psutil.pid_exists(second.pid) or second.status() == psutil.STATUS_ZOMBIE
        check_cli_log(tmp_path)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_hung_agent_is_replaced(tmp_path) -> None:
    sup = AgentSupervisor(AgentOptions(data_dir=tmp_path / "d"), health_interval=0.1, health_timeout=0.3,
                          health_failures=2, min_backoff=0.01)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            address = await nursery.start(sup.run)
            while not sup.healthy:
                await sup.changed.wait()
            hung = sup.pid
            assert hung is not None
            os.kill(hung, signal.SIGSTOP)
            while sup.pid in (hung, None) or not sup.healthy:
                await sup.changed.wait()
            assert sup.restarts == 1 and sup.address == address
            assert not psutil.pid_exists(hung) or psutil.Process(hung).status() == psutil.STATUS_ZOMBIE
            current = sup.pid
            nursery.cancel_scope.cancel()
        assert sup.pid is None and not psutil.pid_exists(current)


async def test_first_start_failure_is_reported(tmp_path) -> None:
    import pytest

    from trio_sos.agent.supervisor import AgentStartError

    sup = AgentSupervisor(AgentOptions(data_dir=tmp_path / "d", extra_args=("--no-such-option",)))
    with trio.fail_after(20), pytest.RaisesGroup(AgentStartError, allow_unwrapped=True, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
    assert sup.pid is None


async def test_agent_exits_when_its_supervisor_is_killed(tmp_path) -> None:
    port = free_port()
    proc = start_cli(tmp_path, "--listen", f"127.0.0.1:{port}")
    try:
        await wait_serving(f"127.0.0.1:{port}")
        child = await wait_new_child(psutil.Process(proc.pid), set())
        proc.kill()  # SIGKILL: the supervisor gets no chance to stop its agent
        proc.wait()
        gone, alive = psutil.wait_procs([child], timeout=10)
        assert child in gone and not alive
        check_cli_log(tmp_path)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_backoff_clean_exits_crashes_and_reset(tmp_path, caplog) -> None:
    """A clean exit (code 0) restarts at once; crashes back off, doubling; a run healthy for ``stable_after``
    resets the backoff."""
    import logging

    caplog.set_level(logging.INFO, logger="trio_sos.agent.supervisor")
    sup = AgentSupervisor(AgentOptions(data_dir=tmp_path / "d"), health_interval=0.05, min_backoff=0.05,
                          max_backoff=1.0, stable_after=1.0)

    async def replace(sig: int) -> None:
        while not sup.healthy:
            await sup.changed.wait()
        old = sup.pid
        assert old is not None
        os.kill(old, sig)
        while sup.pid in (old, None) or not sup.healthy:
            await sup.changed.wait()

    def restart_lines() -> list[str]:
        return [r.getMessage().split("; ", 1)[1] for r in caplog.records if "; " in r.getMessage()
                and ("restarting in" in r.getMessage() or "starting it again" in r.getMessage())]

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await replace(signal.SIGTERM)
            await replace(signal.SIGTERM)
            await replace(signal.SIGKILL)
            await replace(signal.SIGKILL)
            await replace(signal.SIGKILL)
            await trio.sleep(1.2)  # the run under test: healthy past stable_after
            await replace(signal.SIGKILL)
            nursery.cancel_scope.cancel()
    assert restart_lines() == [
        "starting it again (restart 1)", "starting it again (restart 2)",
        "restarting in 0.05s (restart 3)", "restarting in 0.10s (restart 4)", "restarting in 0.20s (restart 5)",
        "restarting in 0.05s (restart 6)",
    ]
