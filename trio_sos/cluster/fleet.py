"""The agents a node talks to: one connection pool per known agent, and the placement map of the current
membership snapshot. Membership (static or ZooKeeper) calls :meth:`Fleet.apply` with each new snapshot."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import trio

from ..agent import AgentPool
from .placement import DEFAULT_GROUPS, AgentInfo, PlacementMap

log = logging.getLogger("trio_sos.cluster.fleet")


class StorageUnavailable(Exception):
    """No agent could take or give the data."""


class Fleet:
    """Pools and placement. ``replicas`` is the number of agents each new chunk goes to (capped by the writable
    agents there are); ``write_quorum`` how many must acknowledge it before the write counts as done."""

    def __init__(self, nursery: trio.Nursery, *, replicas: int = 1, write_quorum: int | None = None,
                 groups: int = DEFAULT_GROUPS, pool_options: Mapping | None = None) -> None:
        self._nursery = nursery
        self.replicas = replicas
        self._write_quorum = write_quorum
        self.groups = groups
        self.pool_options = dict(pool_options or {})
        self.pools: dict[str, AgentPool] = {}
        self.map = PlacementMap({}, groups=groups)
        self.changed = trio.Event()
        self.latency: dict[str, float] = {}  # seconds per read window, smoothed
        self.removed: set[str] = set()  # agents an operator removed (ZooKeeper ``removed/``): lost at once
        self._failed_at: dict[str, float] = {}

    @property
    def agents(self) -> dict[str, AgentInfo]:
        return self.map.agents

    def write_quorum(self, replicas: int) -> int:
        """Acknowledgements a chunk written to ``replicas`` agents needs: the setting, or a majority."""
        quorum = self._write_quorum if self._write_quorum is not None else replicas // 2 + 1
        return max(1, min(quorum, replicas))

    def set_removed(self, removed: set[str]) -> None:
        self.removed = set(removed)

    def apply(self, snapshot: Mapping[str, AgentInfo]) -> None:
        """A new membership snapshot: pools for new agents (and for agents that moved), the old pools of agents
        that left are closed, and a new placement map."""
        for agent_id, info in snapshot.items():
            pool = self.pools.get(agent_id)
            if pool is not None and pool.address != info.address:
                self._retire(agent_id)
                pool = None
            if pool is None:
                self.pools[agent_id] = AgentPool(self._nursery, info.address, **self.pool_options)
        for agent_id in [a for a in self.pools if a not in snapshot]:
            self._retire(agent_id)
        self.map = PlacementMap(snapshot, groups=self.groups)
        self.changed.set()
        self.changed = trio.Event()

    def add_static(self, info: AgentInfo, pool: AgentPool) -> None:
        """Embedded mode: the node's own agent, with the pool the node made for it."""
        self.pools[info.agent_id] = pool
        self.map = PlacementMap({**self.map.agents, info.agent_id: info}, groups=self.groups)

    def _retire(self, agent_id: str) -> None:
        pool = self.pools.pop(agent_id)
        self._nursery.start_soon(pool.aclose)  # requests in flight on it fail; readers turn to other replicas

    def pool(self, agent_id: str) -> AgentPool | None:
        return self.pools.get(agent_id)

    def place(self, chunk_id: bytes) -> list[str]:
        if not self.map.agents:
            raise StorageUnavailable("no storage agent available")
        chosen = self.map.place(chunk_id, self.replicas)
        if not chosen:
            raise StorageUnavailable("no storage agent accepts writes (all draining?)")
        return chosen

    def known(self) -> Iterable[str]:
        return self.pools.keys()

    # -- what reads learn about the agents, to prefer the healthy and fast ones --

    def observe(self, agent_id: str, seconds: float) -> None:
        old = self.latency.get(agent_id)
        self.latency[agent_id] = seconds if old is None else 0.8 * old + 0.2 * seconds

    def failed(self, agent_id: str) -> None:
        self._failed_at[agent_id] = trio.current_time()

    def recent_failure(self, agent_id: str, within: float = 10.0) -> bool:
        at = self._failed_at.get(agent_id)
        return at is not None and trio.current_time() - at < within
