"""Which agents exist: static (embedded mode: the node's own agent) or watched in ZooKeeper.

Both publish snapshots (agent id -> AgentInfo) to a callback; the fleet turns each into connection pools and a
placement map. The ZooKeeper membership keeps the last snapshot it had while the session is suspended or lost
(ZooKeeper down, a network cut): an agent leaves the map only when its registration is really gone — it
deregistered, or its session expired — which a reconnected session's child list shows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import trio

from .placement import ACTIVE, DRAINING, AgentInfo
from .zk import CONNECTED, ZkSession

log = logging.getLogger("trio_sos.cluster.membership")

Snapshot = dict[str, AgentInfo]


def agent_record(info: AgentInfo, version: str) -> dict:
    """What an agent's supervisor writes into its ZooKeeper registration."""
    return {"agent_id": info.agent_id, "address": info.address, "zone": info.zone, "capacity": info.capacity,
            "used": info.used, "protocol": info.protocol, "version": version}


def parse_record(name: str, data: bytes, draining: bool) -> AgentInfo | None:
    try:
        rec = json.loads(data)
        info = AgentInfo(str(rec["agent_id"]), str(rec["address"]), zone=str(rec.get("zone", "")),
                         capacity=int(rec.get("capacity", 0)), used=int(rec.get("used", 0)),
                         state=DRAINING if draining else ACTIVE, protocol=int(rec.get("protocol", 1)),
                         version=str(rec.get("version", "")))
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring the unreadable registration of agent %s: %r", name, exc)
        return None
    if info.agent_id != name:
        log.warning("ignoring registration %s: it names agent %s", name, info.agent_id)
        return None
    return info


class ZkMembership:
    """Watches ``agents/`` and ``draining/``; publishes a snapshot whenever it changes, re-reading on every watch
    event and every ``refresh`` seconds (usage figures change without a watch event)."""

    def __init__(self, zk: ZkSession, on_change: Callable[[Snapshot], None], *, refresh: float = 2.0,
                 on_removed: Callable[[set[str]], None] | None = None) -> None:
        self.zk = zk
        self.on_change = on_change
        self.on_removed = on_removed
        self.removed: set[str] = set()
        self.refresh = refresh
        self.snapshot: Snapshot = {}
        self.updates = 0
        self._poke = trio.Event()

    def _poked(self, _children: list[str]) -> None:
        self._poke.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        for path in ("agents", "draining", "removed"):
            self.zk.watch_children(self.zk.path(path), self._poked)
        await self._read()
        task_status.started()
        watched_in = self.zk.session_id
        while True:
            if self.zk.state == CONNECTED and self.zk.session_id != watched_in:
                # a new session: watches of a ZooKeeper that came back empty are gone with its nodes
                watched_in = self.zk.session_id
                for path in ("agents", "draining", "removed"):
                    self.zk.watch_children(self.zk.path(path), self._poked)
            with trio.move_on_after(self.refresh):
                await self._poke.wait()
            self._poke = trio.Event()
            if self.zk.state != CONNECTED:
                continue  # keep serving with the last map: only a reconnected session can say who is gone
            try:
                await self._read()
            except Exception as exc:  # a call that failed as the session dropped: the next round retries
                log.warning("reading the agents from ZooKeeper failed: %r", exc)

    async def _read(self) -> None:
        from kazoo.exceptions import NoNodeError

        try:
            records = await self.zk.children_with_data(self.zk.path("agents"))
        except NoNodeError:
            records = {}
        try:
            draining = set(await self.zk.call(self.zk.client.get_children, self.zk.path("draining")))
        except NoNodeError:
            draining = set()
        try:
            removed = set(await self.zk.call(self.zk.client.get_children, self.zk.path("removed")))
        except NoNodeError:
            removed = set()
        if removed != self.removed:
            self.removed = removed
            if self.on_removed is not None:
                self.on_removed(removed)
        snapshot: Snapshot = {}
        for name, data in records.items():
            if name in removed:
                continue  # removed by an operator: neither placed on nor read from
            info = parse_record(name, data, name in draining)
            if info is not None:
                snapshot[name] = info
        if snapshot != self.snapshot:
            gone, new = set(self.snapshot) - set(snapshot), set(snapshot) - set(self.snapshot)
            if gone or new:
                log.info("agents: %d live%s%s", len(snapshot), f", joined {sorted(new)}" if new else "",
                         f", left {sorted(gone)}" if gone else "")
            self.snapshot = snapshot
            self.updates += 1
            self.on_change(snapshot)
