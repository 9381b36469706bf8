"""Placement properties (hypothesis): R distinct writable agents, zones spread, minimal movement when one agent
joins or leaves, capacity weighting."""

from __future__ import annotations

import os
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from trio_sos.cluster.placement import ACTIVE, DRAINING, GIB, AgentInfo, PlacementMap

CHUNKS = [os.urandom(16) for _ in range(3000)]


@st.composite
def clusters(draw, min_agents: int = 1, max_agents: int = 12):
    n = draw(st.integers(min_agents, max_agents))
    zones = draw(st.integers(1, 4))
    agents = []
    for i in range(n):
        agents.append(AgentInfo(f"{i:032x}", f"127.0.0.1:{7000 + i}", zone=f"z{draw(st.integers(0, zones - 1))}",
                                capacity=draw(st.sampled_from([0, GIB, 4 * GIB])),
                                state=draw(st.sampled_from([ACTIVE, ACTIVE, ACTIVE, DRAINING]))))
    return agents


@settings(max_examples=60, deadline=None)
@given(agents=clusters(), replicas=st.integers(1, 5))
def test_distinct_writable_replicas_spread_over_zones(agents, replicas: int) -> None:
    m = PlacementMap(agents, groups=256)
    writable = [a for a in agents if a.state == ACTIVE]
    zones = {a.zone for a in writable}
    for chunk in CHUNKS[:200]:
        chosen = m.place(chunk, replicas)
        assert len(chosen) == len(set(chosen)) == min(replicas, len(writable))
        assert all(m.agents[a].state == ACTIVE for a in chosen)
        first = [m.agents[a].zone for a in chosen[: min(replicas, len(zones))]]
        assert len(set(first)) == len(first)  # one per zone before a second from any
        assert m.place(chunk, replicas) == chosen  # deterministic


@settings(max_examples=25, deadline=None)
@given(agents=clusters(min_agents=3), replicas=st.integers(1, 3), data=st.data())
def test_one_agent_leaving_moves_only_its_chunks(agents, replicas: int, data) -> None:
    writable = [a for a in agents if a.state == ACTIVE]
    if len(writable) < 2:
        return
    gone = data.draw(st.sampled_from(writable))
    before = PlacementMap(agents, groups=512)
    after = PlacementMap([a for a in agents if a is not gone], groups=512)
    moved = 0
    for chunk in CHUNKS:
        old, new = before.place(chunk, replicas), after.place(chunk, replicas)
        if gone.agent_id not in old:
            assert new == old  # nothing else moves
        else:
            assert set(old) - {gone.agent_id} <= set(new)  # only the gone replica is replaced
            moved += 1
    share = replicas * 3 / len(writable) + 0.1
    zones = {a.zone for a in writable}
    if replicas > 1 and len(zones) > 1:
        # spreading over zones gives an agent of a small zone a replica of up to 1 in (agents of its zone) chunks:
        # the only active agent of a zone holds a replica of every chunk, and all of them move when it goes
        share = max(share, 1.5 * replicas / sum(1 for a in writable if a.zone == gone.zone) + 0.1)
    assert moved <= len(CHUNKS) * min(1.0, share)


@settings(max_examples=25, deadline=None)
@given(agents=clusters(min_agents=2), replicas=st.integers(1, 3), zone=st.sampled_from(["z0", "z1", "z9"]))
def test_one_agent_joining_takes_about_its_share(agents, replicas: int, zone: str) -> None:
    joining = AgentInfo("f" * 32, "127.0.0.1:9999", zone=zone)
    before = PlacementMap(agents, groups=512)
    after = PlacementMap([*agents, joining], groups=512)
    changed = 0
    for chunk in CHUNKS:
        old, new = before.place(chunk, replicas), after.place(chunk, replicas)
        if joining.agent_id not in new:
            assert new == old  # a chunk moves only to the agent that joined
        else:
            changed += 1
    writable = sum(1 for a in agents if a.state == ACTIVE) + 1
    if replicas > 1 and zone not in {a.zone for a in agents if a.state == ACTIVE}:
        return  # a new zone: spreading puts a replica of every chunk there, as it should
    assert changed <= len(CHUNKS) * min(1.0, 3 * replicas / writable + 0.1)


def test_equal_agents_share_evenly_and_a_join_moves_about_1_over_m() -> None:
    agents = [AgentInfo(f"{i:032x}", f"h:{i}") for i in range(10)]
    m = PlacementMap(agents)
    share = Counter(m.place(c, 1)[0] for c in CHUNKS)
    assert all(200 <= n <= 400 for n in share.values()), share  # 300 each, give or take
    joined = PlacementMap([*agents, AgentInfo("f" * 32, "h:new")])
    moved = sum(1 for c in CHUNKS if joined.place(c, 1) != m.place(c, 1))
    assert 150 <= moved <= 400, moved  # 3000 / 11 = 273


def test_capacity_weighting() -> None:
    agents = [AgentInfo("a" * 32, "h:1", capacity=1 * GIB), AgentInfo("b" * 32, "h:2", capacity=2 * GIB),
              AgentInfo("c" * 32, "h:3", capacity=3 * GIB)]
    m = PlacementMap(agents, groups=8192)
    share = Counter(m.place(c, 1)[0] for c in CHUNKS)
    total = sum(share.values())
    for agent, expected in zip(agents, (1 / 6, 2 / 6, 3 / 6), strict=True):
        assert abs(share[agent.agent_id] / total - expected) < 0.05, share


def test_replacement_prefers_an_uncovered_zone() -> None:
    agents = [AgentInfo(f"{i:032x}", f"h:{i}", zone=z) for i, z in enumerate(["a", "a", "b", "b", "c"])]
    m = PlacementMap(agents)
    for chunk in CHUNKS[:300]:
        holders = [agents[0].agent_id, agents[2].agent_id]  # zones a and b
        assert m.replacement(chunk, holders) == agents[4].agent_id  # the only agent in zone c
        everyone = [a.agent_id for a in agents]
        assert m.replacement(chunk, everyone) is None
