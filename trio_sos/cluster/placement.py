"""Where chunks go: weighted rendezvous hashing over placement groups, spread over zones. Pure: no I/O.

A chunk id hashes to one of ``groups`` placement groups. Each group ranks the agents by weighted rendezvous
(highest random weight) score: ``capacity / -ln(u)`` with ``u`` a uniform hash of (group, agent), so an agent
gets a share of groups proportional to its capacity, and adding or removing one agent of M changes only the
groups whose ranking it enters or leaves — about R/M of them. The replicas of a chunk are the first R agents of
its group's ranking that accept writes, taking one agent per zone before a second from any zone.

Why groups: ranking M agents costs O(M) hashes; doing it per chunk would cost every upload O(M) with thousands of
agents. Per group it is done once per membership change, lazily, and cached: a chunk's placement is then a dict
lookup, whatever M is. (Groups must outnumber agents several times over for an even spread: the default, 8,192,
suits clusters up to about a thousand agents with R = 3.)
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence

import attrs

ACTIVE = "active"
DRAINING = "draining"
STATES = (ACTIVE, DRAINING)

DEFAULT_GROUPS = 8192
GIB = 1 << 30


@attrs.frozen
class AgentInfo:
    """What the cluster knows of one agent (its ZooKeeper registration, or the local agent in embedded mode)."""

    agent_id: str  # hex, as the agent's HELLO gives it
    address: str  # HOST:PORT
    zone: str = ""
    capacity: int = 0  # bytes; 0 = unknown (weighted as 1 GiB)
    used: int = 0
    state: str = ACTIVE  # active | draining: a draining agent gets no new chunks but is still read
    protocol: int = 1
    version: str = ""  # trio_sos version of the agent's supervisor, as it registered

    @property
    def writable(self) -> bool:
        return self.state == ACTIVE

    @property
    def weight(self) -> float:
        return max(self.capacity, GIB) / GIB


def group_of(chunk_id: bytes, groups: int = DEFAULT_GROUPS) -> int:
    return int.from_bytes(hashlib.blake2b(chunk_id, digest_size=8).digest(), "big") % groups


def _score(group: int, agent: AgentInfo) -> float:
    digest = hashlib.blake2b(group.to_bytes(4, "big") + agent.agent_id.encode(), digest_size=8).digest()
    u = (int.from_bytes(digest, "big") + 0.5) / 2.0**64  # in (0, 1): never 0 or 1
    return agent.weight / -math.log(u)


def rank(group: int, agents: Iterable[AgentInfo]) -> list[AgentInfo]:
    """The agents in the group's order of preference: by score, but the best of each zone before the second of
    any zone (zone by zone, round robin down the scores)."""
    scored = sorted(((_score(group, a), a.agent_id, a) for a in agents), reverse=True)
    zones: dict[str, list[tuple[float, str, AgentInfo]]] = {}
    for entry in scored:
        zones.setdefault(entry[2].zone, []).append(entry)
    out: list[AgentInfo] = []
    depth = 0
    while len(out) < len(scored):
        # each round takes the next best agent of every zone, in the order of those agents' scores
        layer = sorted((q[depth] for q in zones.values() if depth < len(q)), reverse=True)
        out += [entry[2] for entry in layer]
        depth += 1
    return out


class PlacementMap:
    """One membership snapshot's placements. Build a new one when the membership changes; it is immutable."""

    def __init__(self, agents: Mapping[str, AgentInfo] | Sequence[AgentInfo], *, groups: int = DEFAULT_GROUPS
                 ) -> None:
        values = agents.values() if isinstance(agents, Mapping) else agents
        self.agents: dict[str, AgentInfo] = {a.agent_id: a for a in values}
        self.groups = groups
        self._writable = [a for a in self.agents.values() if a.writable]
        self._cache: dict[int, list[str]] = {}

    def __len__(self) -> int:
        return len(self.agents)

    def order(self, chunk_id: bytes) -> list[str]:
        """Every writable agent, in the chunk's order of preference (the first R are its replicas)."""
        group = group_of(chunk_id, self.groups)
        cached = self._cache.get(group)
        if cached is None:
            cached = self._cache[group] = [a.agent_id for a in rank(group, self._writable)]
        return cached

    def place(self, chunk_id: bytes, replicas: int) -> list[str]:
        """The R agents a new chunk goes to (fewer when fewer agents accept writes)."""
        return self.order(chunk_id)[:replicas]

    def replacement(self, chunk_id: bytes, holders: Iterable[str]) -> str | None:
        """The best writable agent that does not hold the chunk yet (for repair and drain), from a zone the
        holders do not cover if there is one; None if every writable agent holds it."""
        have = set(holders)
        covered = {self.agents[a].zone for a in have if a in self.agents}
        candidates = [a for a in self.order(chunk_id) if a not in have]
        return next((a for a in candidates if self.agents[a].zone not in covered), None) or next(iter(candidates),
                                                                                             None)

    def zones(self) -> set[str]:
        return {a.zone for a in self._writable}
