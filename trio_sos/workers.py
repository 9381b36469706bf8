"""``serve --workers N``: N node processes serving one listening socket, kept by one supervisor process.

The supervisor (the process ``serve`` started) opens the metadata, the listening sockets and — in embedded mode —
the local agent, runs the singleton background work (GC, repair, scrub; in cluster mode under ZooKeeper
leadership as before), and starts N worker processes. Workers inherit the listening sockets (``pass_fds``) and
accept from them: the kernel hands each new connection to whichever worker is waiting in ``accept``, so a busy
worker takes fewer and a worker's death loses no queued connection (the queue belongs to the shared socket, not
to the dead process, as it would with one ``SO_REUSEPORT`` socket per worker). Workers publish their connection
counts in shared memory (``Load``), and one holding more connections than another lets the other accept first, so
that a few long connections spread over the workers too. Every worker opens the same metadata (SQLite is shared
across processes: WAL, ``busy_timeout``) and talks to the same agents.

Lifecycle:
- Start: each worker writes its ``S3 endpoint:`` lines on its stdout once it serves; the supervisor announces the
  endpoint when all N have.
- A worker that exits while the node is not stopping is restarted, after a backoff that doubles from 0.1 s to 10 s
  and resets after 10 s of running. A worker that fails before it ever served fails the start.
- Stop (SIGTERM/SIGINT to the supervisor): SIGTERM to every worker (each stops gracefully within
  ``shutdown_grace``), then the supervisor's own tasks are cancelled: background work, then the agent.
- If the supervisor dies without that (kill -9), each worker's stdin — a pipe only the supervisor writes — reaches
  end-of-file and the worker stops: no worker outlives its supervisor.
"""

from __future__ import annotations

import logging
import math
import mmap
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

import attrs
import trio

log = logging.getLogger("trio_sos.workers")


class WorkerStartError(RuntimeError):
    """A worker exited before it served, on its first start."""


@attrs.define
class WorkerPool:
    count: int
    argv: Sequence[str]  # the serve command line, without the program: the workers get it again, plus theirs
    fds: str  # the listening sockets the workers inherit, as node.listener_fds writes them
    agent: str | None  # embedded mode: the local agent's address
    endpoints_per_worker: int = 1
    env: dict[str, str] | None = None  # the workers' environment (None: this process's)
    on_line: Callable[[bytes], None] | None = None  # each line a serving worker writes on its stdout
    on_exit: Callable[[int], None] | None = None  # a worker process (its pid) ended
    start_timeout: float = 60.0
    min_backoff: float = 0.1
    max_backoff: float = 10.0
    stable_after: float = 10.0
    stopping: bool = False
    procs: dict[int, trio.Process] = attrs.field(factory=dict)
    restarts: int = 0

    def command(self, index: int) -> list[str]:
        cmd = [sys.executable, "-m", "trio_sos", *self.argv, "--worker-fds", self.fds,
               "--worker-index", str(index)]
        if self.agent:
            cmd += ["--worker-agent", self.agent]
        return cmd

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            async with trio.open_nursery() as starting:  # all at once; each then lives in ``nursery``
                for index in range(self.count):
                    starting.start_soon(nursery.start, self._keep, index)
            task_status.started()

    def stop(self) -> None:
        """Ask every worker to stop gracefully; ``run`` returns once they all have."""
        self.stopping = True
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)

    async def _keep(self, index: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        backoff = self.min_backoff
        started = False
        while not self.stopping:
            began = time.monotonic()
            code = await self._run_one(index, task_status if not started else None)
            started = True
            if self.stopping:
                return
            ran = time.monotonic() - began
            if ran >= self.stable_after:
                backoff = self.min_backoff
            log.error("worker %d exited with code %s after %.1fs: restarting in %.1fs", index, code, ran, backoff)
            self.restarts += 1
            await trio.sleep(backoff)
            backoff = min(self.max_backoff, backoff * 2)

    async def _run_one(self, index: int, task_status: trio.TaskStatus[None] | None) -> int | None:
        proc = await trio.lowlevel.open_process(
            self.command(index), pass_fds=tuple(int(item.split(":")[0]) for item in self.fds.split(",")),
            stdin=subprocess.PIPE,  # never written: its end-of-file tells the worker this process is gone
            stdout=subprocess.PIPE, env=self.env)
        self.procs[index] = proc
        try:
            assert proc.stdout is not None
            buf = b""
            seen = 0
            with trio.move_on_after(self.start_timeout if task_status is not None else math.inf) as waiting:
                while seen < self.endpoints_per_worker:
                    data = await proc.stdout.receive_some(4096)
                    if not data:
                        break
                    buf += data
                    *lines, rest = buf.split(b"\n")
                    buf = rest
                    seen += sum(1 for line in lines if line.startswith(b"S3 endpoint: "))
            if seen < self.endpoints_per_worker:
                if waiting.cancelled_caught:
                    proc.kill()
                code = await proc.wait()
                if task_status is not None and not self.stopping:
                    raise WorkerStartError(f"worker {index} exited with code {code} before serving")
                return code
            log.info("worker %d serving (pid %d)", index, proc.pid)
            if task_status is not None:
                task_status.started()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_lines, proc.stdout, self.on_line, buf)
                code = await proc.wait()
                nursery.cancel_scope.cancel()
            return code
        finally:
            with trio.CancelScope(shield=True):
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
                    with trio.move_on_after(5):
                        await proc.wait()
                    if proc.returncode is None:
                        proc.kill()
                        await proc.wait()
                for stream in (proc.stdin, proc.stdout):
                    if stream is not None:
                        await stream.aclose()
                if self.on_exit is not None:
                    self.on_exit(proc.pid)


MAX_LINE = 64 * 1024


async def _lines(stream: trio.abc.ReceiveStream, on_line: Callable[[bytes], None] | None, buf: bytes) -> None:
    """Read a worker's stdout to its end (it must never block on a full pipe), handing each line to ``on_line``;
    a line longer than MAX_LINE is skipped."""
    skipping = False
    while data := await stream.receive_some(65536):
        buf += data
        while True:
            end = buf.find(b"\n")
            if end < 0:
                break
            line, buf = buf[:end], buf[end + 1:]
            if not skipping and on_line is not None:
                on_line(line)
            skipping = False
        if len(buf) > MAX_LINE:
            buf, skipping = b"", True


async def exit_with_parent(on_gone) -> None:
    """In a worker: wait for end-of-file on stdin (the supervisor's pipe), then call ``on_gone``."""
    stdin = trio.lowlevel.FdStream(os.dup(0))
    try:
        while await stdin.receive_some(4096):
            pass
    finally:
        await stdin.aclose()
    log.warning("the supervisor is gone: stopping")
    on_gone()



class Load:
    """The connection count of every worker, in shared memory (a memfd the supervisor makes and every worker
    inherits: one 8-byte slot per worker). A worker that holds more connections than the least loaded one lets
    that one take the next connection from the shared accept queue first (``HttpServer``'s ``balance``): with a
    handful of long keep-alive connections, the workers share them instead of one worker getting them all."""

    SLOT = 8

    def __init__(self, fd: int, count: int, index: int | None = None) -> None:
        self.fd, self.count, self.index = fd, count, index
        self._map = mmap.mmap(fd, self.SLOT * count)

    @classmethod
    def create(cls, count: int) -> Load:
        fd = os.memfd_create("trio_sos-worker-load", 0)  # not MFD_CLOEXEC: workers inherit it through pass_fds
        os.ftruncate(fd, cls.SLOT * count)
        return cls(fd, count)

    def set(self, connections: int) -> None:
        assert self.index is not None
        at = self.SLOT * self.index
        self._map[at:at + self.SLOT] = max(0, connections).to_bytes(self.SLOT, "little")

    def least_other(self) -> int:
        """The fewest connections any other worker holds."""
        counts = [int.from_bytes(self._map[i * self.SLOT:(i + 1) * self.SLOT], "little")
                  for i in range(self.count) if i != self.index]
        return min(counts, default=1 << 62)

    def close(self) -> None:
        self._map.close()
        os.close(self.fd)
