"""ZooKeeper for Trio (kazoo): blocking calls in worker threads; connection states and watches delivered into Trio.

kazoo runs its own connection thread and calls watch and state callbacks on it. Those callbacks must not block,
so they only schedule a function in Trio (``TrioToken.run_sync_soon``), which records the news and wakes whoever
waits. A watch's news is a snapshot (the whole child list), and fast changes merge, so consumers re-read the
state they need rather than apply deltas.

Layout under ``/trio_sos/<cluster>`` (the cluster name is the setting ``cluster``, so clusters can share one
ZooKeeper):

- ``agents/<agent id>``: ephemeral, one per healthy agent, JSON (address, zone, capacity, used, protocol);
- ``draining/<agent id>``: persistent, an operator's drain mark;
- ``nodes/<node id>``: ephemeral, one per S3 node;
- ``leaders/<worker>``: kazoo Lock recipes, one per singleton background worker (gc, repair, scrub, lifecycle).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import trio
from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import NodeExistsError, NoNodeError
from kazoo.retry import KazooRetry

log = logging.getLogger("trio_sos.cluster.zk")

T = TypeVar("T")

CONNECTED, SUSPENDED, LOST = "connected", "suspended", "lost"


def cluster_root(cluster: str) -> str:
    if not cluster or "/" in cluster or cluster in (".", ".."):
        raise ValueError(f"cluster name {cluster!r}: not empty, no '/'")
    return f"/trio_sos/{cluster}"


class ZkSession:
    """One ZooKeeper session, owned by the task that runs :meth:`run` (which connects, and closes the session —
    dropping this process's ephemeral nodes at once — when cancelled)."""

    def __init__(self, hosts: str, cluster: str, *, session_timeout: float = 10.0, start_timeout: float = 30.0
                 ) -> None:
        self.hosts = hosts
        self.root = cluster_root(cluster)
        self.start_timeout = start_timeout
        self.client = KazooClient(hosts=hosts, timeout=session_timeout,
                                  connection_retry=KazooRetry(max_tries=-1, delay=0.1, max_delay=2.0),
                                  command_retry=KazooRetry(max_tries=3, delay=0.1, max_delay=1.0))
        self.state = LOST
        self.session_id: int | None = None
        self.changed = trio.Event()  # set, and replaced, at each state change
        self._token: trio.lowlevel.TrioToken | None = None

    # -- lifecycle --

    async def run(self, *, task_status: trio.TaskStatus[ZkSession] = trio.TASK_STATUS_IGNORED) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self.client.add_listener(self._listener)
        try:
            await trio.to_thread.run_sync(self.client.start, self.start_timeout)
        except Exception as exc:  # kazoo's timeout_exception, or a bad host string
            raise ConnectionError(f"cannot connect to ZooKeeper {self.hosts}: {exc}") from None
        self._set_state(CONNECTED)
        await self._ensure_paths()
        task_status.started(self)
        try:
            seen = self.session_id
            while True:  # a new session (ZooKeeper came back empty?): the cluster's paths are made again
                await self.changed.wait()
                if self.state == CONNECTED and self.session_id != seen:
                    seen = self.session_id
                    try:
                        await self._ensure_paths()
                    except Exception as exc:  # the session dropped again: the next one retries
                        log.warning("ZooKeeper: could not make the cluster's paths: %r", exc)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._close)

    async def _ensure_paths(self) -> None:
        for path in ("agents", "draining", "removed", "nodes", "leaders", "control", "progress"):
            await self.call(self.client.ensure_path, f"{self.root}/{path}")

    def _close(self) -> None:
        try:
            self.client.stop()
        finally:
            self.client.close()

    def _listener(self, state: str) -> None:  # kazoo's thread: must not block
        name = {KazooState.CONNECTED: CONNECTED, KazooState.SUSPENDED: SUSPENDED, KazooState.LOST: LOST}[state]
        self.soon(self._set_state, name)

    def _set_state(self, state: str) -> None:
        if state == CONNECTED:
            client_id = self.client.client_id
            self.session_id = client_id[0] if client_id else None
        if state != self.state:
            log.info("ZooKeeper session %s: %s", hex(self.session_id or 0), state)
        self.state = state
        self.changed.set()
        self.changed = trio.Event()

    def soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """From any thread: run ``fn(*args)`` in Trio, without waiting (for kazoo's callbacks)."""
        if self._token is not None:
            try:
                self._token.run_sync_soon(fn, *args)
            except trio.RunFinishedError:
                pass

    async def wait_connected(self) -> None:
        while self.state != CONNECTED:
            await self.changed.wait()

    # -- calls --

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A blocking kazoo call in a worker thread (never abandoned: a write the caller gave up on still
        completes or fails before this returns)."""
        return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs))

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    async def children_with_data(self, path: str) -> dict[str, bytes]:
        """The children of ``path`` and their data, read in one worker thread (children that vanish meanwhile are
        left out)."""
        def read() -> dict[str, bytes]:
            out = {}
            for child in self.client.get_children(path):
                try:
                    out[child] = self.client.get(f"{path}/{child}")[0]
                except NoNodeError:
                    pass
            return out

        return await trio.to_thread.run_sync(read)

    def watch_children(self, path: str, on_change: Callable[[list[str]], None]) -> None:
        """``on_change(children)`` in Trio whenever the child list of ``path`` changes (and once at once)."""
        def func(children: list[str]) -> None:  # kazoo's thread
            self.soon(on_change, list(children))

        self.client.ChildrenWatch(path, func)

    async def register_ephemeral(self, path: str, data: dict) -> None:
        """Create (or take over) this session's ephemeral node at ``path`` with ``data`` as JSON.

        A node of a previous session of ours (a restarted process whose old session has not expired yet) is
        replaced; one of this session is updated."""
        body = json.dumps(data, sort_keys=True).encode()

        def run() -> None:
            try:
                self.client.create(path, body, ephemeral=True, makepath=True)
            except NodeExistsError:
                _, stat = self.client.get(path)
                if stat.ephemeralOwner == self.client.client_id[0]:
                    self.client.set(path, body)
                else:
                    self.client.delete(path)
                    self.client.create(path, body, ephemeral=True, makepath=True)

        await trio.to_thread.run_sync(run)

    async def keep_ephemeral(self, path: str, data: dict) -> None:
        """Hold an ephemeral registration for as long as this task runs: written again in every new session (the
        old one vanished with the old session)."""
        registered_in: int | None = None
        while True:
            if self.state == CONNECTED and self.session_id != registered_in:
                try:
                    await self.register_ephemeral(path, data)
                    registered_in = self.session_id
                except Exception as exc:
                    log.warning("ZooKeeper: registering %s failed: %r; retrying", path, exc)
                    await trio.sleep(0.5)
                    continue
            await self.changed.wait()

    async def unregister(self, path: str) -> None:
        def run() -> None:
            try:
                self.client.delete(path)
            except NoNodeError:
                pass

        await trio.to_thread.run_sync(run)
