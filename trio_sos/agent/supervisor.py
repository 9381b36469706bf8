"""Runs the C agent as a child process, checks its health over the protocol, restarts it when it dies or hangs.

The supervisor is one Trio task (``AgentSupervisor.run``) owned by its caller's nursery. Cancelling that task
stops the agent: SIGTERM, a shielded wait, then SIGKILL, so no child outlives its owner.

If the supervising *process* dies without that (kill -9, a crash), the agent still goes with it: its stdin is a
pipe whose write end only this process holds (``--exit-with-parent``), and the kernel closes it when the process
ends, however it ends. (``PR_SET_PDEATHSIG`` would not do: it follows the thread that forked, and Trio forks from
worker threads it retires after a few idle seconds, which killed healthy agents every 10–20 s.)

Restarts: an agent that exits with code 0 stopped cleanly (someone sent it SIGTERM): it is started again at once,
logged as such, not as a crash. A crash (any other exit, or failed health checks) waits a backoff that doubles up
to ``max_backoff``, and returns to ``min_backoff`` once a run has stayed healthy for ``stable_after`` seconds.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from pathlib import Path

import attrs
import trio

from .binary import agent_binary
from .client import AgentConnectionError, open_agent_pool
from .protocol import AgentError, ProtocolError

log = logging.getLogger("trio_sos.agent.supervisor")


class AgentStartError(RuntimeError):
    """The agent program exited or stayed silent before it was ready, on its first start."""


@attrs.frozen
class AgentOptions:
    data_dir: Path
    listen: str = "127.0.0.1:0"
    unix: str | None = None
    capacity: int | None = None
    max_chunk: int | None = None
    direct_writes: bool = True  # False: --no-direct (chunks written through the page cache)
    direct_reads: bool = True  # False: --no-direct-reads (chunks read through the page cache, even cold ones)
    extra_args: tuple[str, ...] = ()
    binary: Path | None = None

    def command(self, listen: str) -> list[str]:
        cmd = [str(self.binary or agent_binary()), "--data-dir", str(self.data_dir), "--listen", listen,
               "--exit-with-parent"]
        if self.unix:
            cmd += ["--unix", self.unix]
        if self.capacity is not None:
            cmd += ["--capacity", str(self.capacity)]
        if self.max_chunk is not None:
            cmd += ["--max-chunk", str(self.max_chunk)]
        if not self.direct_writes:
            cmd.append("--no-direct")
        if not self.direct_reads:
            cmd.append("--no-direct-reads")
        return cmd + list(self.extra_args)


@attrs.define
class AgentSupervisor:
    options: AgentOptions
    health_interval: float = 1.0
    health_timeout: float = 2.0
    health_failures: int = 3
    start_timeout: float = 10.0
    stop_timeout: float = 5.0
    min_backoff: float = 0.1
    max_backoff: float = 10.0
    stable_after: float = 10.0

    address: str | None = None
    pid: int | None = None
    healthy: bool = False
    restarts: int = 0
    changed: trio.Event = attrs.field(factory=trio.Event)  # set (and replaced) whenever pid/health change

    def _changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        listen = self.options.listen
        backoff = self.min_backoff
        started = False
        while True:
            outcome = await self._run_once(listen, task_status if not started else None)
            started = True
            if self.address and listen.endswith(":0"):
                listen = self.address  # keep the port the clients know across restarts
            self.restarts += 1
            if outcome.clean:
                backoff = self.min_backoff
                log.info("agent %s; starting it again (restart %d)", outcome.reason, self.restarts)
                continue
            if outcome.healthy_for >= self.stable_after:
                backoff = self.min_backoff
            log.warning("agent %s; restarting in %.2fs (restart %d)", outcome.reason, backoff, self.restarts)
            await trio.sleep(backoff)
            backoff = min(self.max_backoff, backoff * 2)

    async def _run_once(self, listen: str, task_status: trio.TaskStatus[str] | None) -> _Outcome:
        os.makedirs(self.options.data_dir, exist_ok=True)
        proc = await trio.lowlevel.open_process(
            self.options.command(listen), stdout=subprocess.PIPE,
            stdin=subprocess.PIPE,  # never written: its end-of-file tells the agent this process is gone
            start_new_session=True,  # ^C in a terminal reaches the supervisor only; it stops the agent in order
        )
        try:
            self.pid = proc.pid
            try:
                address = await self._await_ready(proc)
            except AgentStartError:
                if task_status is not None:
                    raise
                return _Outcome(f"pid {proc.pid} failed to start", clean=False)
            self.address = address
            log.info("agent pid %d ready at %s", proc.pid, address)
            if task_status is not None:
                task_status.started(address)
            return await self._monitor(proc, address)
        finally:
            self.healthy = False
            self.pid = None
            self._changed()
            with trio.CancelScope(shield=True):
                await self._stop(proc)

    async def _await_ready(self, proc: trio.Process) -> str:
        assert proc.stdout is not None
        buf = b""
        with trio.move_on_after(self.start_timeout):
            while b"\n" not in buf:
                data = await proc.stdout.receive_some(4096)
                if not data:
                    break
                buf += data
        line = buf.split(b"\n", 1)[0].decode(errors="replace")
        if not line.startswith("READY "):
            code = proc.poll()
            raise AgentStartError(
                f"agent program {self.options.command('…')[0]} did not become ready "
                f"({'exit code %s' % code if code is not None else 'no READY line in %ss' % self.start_timeout})"
            )
        return line.split(" ", 1)[1].strip()

    async def _monitor(self, proc: trio.Process, address: str) -> _Outcome:
        outcome = _Outcome("exited", clean=False)
        healthy_since: float | None = None
        async with trio.open_nursery() as nursery:

            async def wait_exit() -> None:
                nonlocal outcome
                code = await proc.wait()
                if code == 0:
                    outcome = _Outcome(f"pid {proc.pid} stopped cleanly (exit code 0)", clean=True)
                elif code < 0:
                    outcome = _Outcome(f"pid {proc.pid} killed by {_signal_name(-code)}", clean=False)
                else:
                    outcome = _Outcome(f"pid {proc.pid} exited with code {code}", clean=False)
                nursery.cancel_scope.cancel()

            nursery.start_soon(wait_exit)
            async with open_agent_pool(address, size=1, timeout=self.health_timeout, max_backoff=0) as pool:
                failures = 0
                while True:
                    try:
                        await pool.ping()
                        failures = 0
                        if not self.healthy:
                            self.healthy = True
                            healthy_since = trio.current_time()
                            self._changed()
                    except (AgentConnectionError, AgentError, ProtocolError, OSError) as exc:
                        failures += 1
                        log.warning("agent pid %d health check failed (%d/%d): %s",
                                    proc.pid, failures, self.health_failures, exc)
                        if failures >= self.health_failures:
                            outcome = _Outcome(f"pid {proc.pid} unhealthy after {failures} failed checks",
                                               clean=False)
                            if self.healthy:
                                self.healthy = False
                                self._changed()
                            nursery.cancel_scope.cancel()
                    await trio.sleep(self.health_interval)
        if healthy_since is not None:
            outcome = attrs.evolve(outcome, healthy_for=trio.current_time() - healthy_since)
        return outcome

    async def _stop(self, proc: trio.Process) -> None:
        if proc.returncode is None:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            with trio.move_on_after(self.stop_timeout):
                await proc.wait()
            if proc.returncode is None:
                log.warning("agent pid %d ignored SIGTERM for %ss; killing it", proc.pid, self.stop_timeout)
                proc.kill()
                await proc.wait()
        for stream in (proc.stdout, proc.stdin):
            if stream is not None:
                await stream.aclose()


@attrs.frozen
class _Outcome:
    """How one run of the agent ended."""

    reason: str
    clean: bool  # exit code 0: stopped on request, not a crash
    healthy_for: float = 0.0  # seconds from its first passed health check to its end


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


