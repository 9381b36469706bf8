"""Singleton background workers: each runs on exactly one node of the cluster at a time.

A worker (GC, repair, scrub) runs only while its node holds the ZooKeeper lock ``leaders/<name>`` (kazoo's Lock
recipe) *and* its session is connected: when the session is suspended the node can no longer know that it still
holds the lock, so it stops the worker at once and competes again once reconnected. A leader that dies loses the
lock when its session expires, and another node takes over within the session timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio
from kazoo.exceptions import KazooException, LockTimeout

from .zk import CONNECTED, ZkSession

log = logging.getLogger("trio_sos.cluster.leader")

Worker = Callable[[], Awaitable[None]]


class Leadership:
    """Runs ``worker`` whenever this node leads ``name``. ``leading`` says whether it does now."""

    def __init__(self, zk: ZkSession, name: str, worker: Worker, *, identifier: str, attempt: float = 1.0) -> None:
        self.zk = zk
        self.name = name
        self.worker = worker
        self.identifier = identifier
        self.attempt = attempt
        self.leading = False
        self.terms = 0
        self.changed = trio.Event()

    def _set(self, leading: bool) -> None:
        self.leading = leading
        self.changed.set()
        self.changed = trio.Event()

    async def run(self) -> None:
        lock = self.zk.client.Lock(self.zk.path("leaders", self.name), self.identifier)
        while True:
            await self.zk.wait_connected()
            try:
                # short attempts, so that a cancelled node (shutting down) stops waiting within `attempt` seconds
                await trio.to_thread.run_sync(lambda: lock.acquire(timeout=self.attempt))
            except LockTimeout:
                continue
            except KazooException as exc:
                log.warning("%s: competing for leadership failed: %r", self.name, exc)
                await trio.sleep(self.attempt)
                continue
            self.terms += 1
            log.info("%s: this node leads (term %d)", self.name, self.terms)
            self._set(True)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._work)
                    while self.zk.state == CONNECTED:
                        await self.zk.changed.wait()
                    log.warning("%s: ZooKeeper session %s: stepping down", self.name, self.zk.state)
                    nursery.cancel_scope.cancel()
            finally:
                self._set(False)
                with trio.CancelScope(shield=True):
                    try:
                        await trio.to_thread.run_sync(lock.release)
                    except KazooException:
                        pass  # the session is gone, and the lock with it

    async def _work(self) -> None:
        while True:  # a worker that fails is started again: leading means doing the work
            try:
                await self.worker()
                return
            except Exception:
                log.exception("%s: the worker failed; starting it again in 1 s", self.name)
                await trio.sleep(1.0)
