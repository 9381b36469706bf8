"""The admin interface of a real cluster — a ZooKeeper, four supervised agents in two zones, two nodes sharing
their metadata — driven through the CLI and raw WebSocket sessions: status from any node, a drain that really
drains (while progress events arrive), removal, steering the leader's repair from the other node, and the
events of an agent that dies."""

from __future__ import annotations

import json
import os

import pytest
import trio

from tests.admin.helpers import admin_settings, cli, cli_json, http_get, session
from tests.cluster.test_cluster import cluster_node, wait_for
from tests.cluster.test_repair import allow_repair_noise, chunk_names, holders

# repair copies 256 KiB/s: the drain below (about 20 chunks of 40 KB) takes seconds, so its progress shows
FAST = dict(repair_interval=0.3, repair_rate="256K", dead_grace=3600, gc_delay=0, gc_interval=0.2, scrub_rate=0,
            replicas=3)


@pytest.fixture
def cluster(cluster_factory, node_factory, zookeeper, cluster_name):
    agents = [cluster_factory(f"a{i}", zone=f"z{i % 2}") for i in range(4)]
    for agent in agents:
        agent.agent_id()
    nodes = [cluster_node(node_factory, zookeeper, cluster_name, name=f"n{i}", **admin_settings(**FAST))
             for i in range(2)]
    for node in nodes:
        allow_repair_noise(node)
    return agents, nodes


def agent_rows(node) -> dict[str, dict]:
    return {a["id"]: a for a in cli_json(node, "agents")["agents"]}


async def test_status_from_either_node(cluster) -> None:
    agents, nodes = cluster
    ids = {a.agent_id() for a in agents}

    def both_listed(node) -> bool:
        status = cli_json(node, "status")
        return ({n["endpoint"] for n in status["nodes"]} == {n.endpoint for n in nodes}
                and all(status["leaders"].get(w) for w in ("gc", "repair")))

    for node in nodes:  # each node reads the cluster from ZooKeeper every 2 s, from its start
        wait_for(lambda node=node: both_listed(node), what="both nodes and the leaders in each node's status")
    status = cli_json(nodes[1], "status")
    assert status["node"]["mode"] == "cluster" and status["node"]["endpoint"] == nodes[1].endpoint
    assert {n["admin"] for n in status["nodes"]} == {n.admin_endpoint for n in nodes}
    assert [n["self"] for n in status["nodes"] if n["endpoint"] == nodes[1].endpoint] == [True]
    assert {a["id"] for a in status["agents"]} == ids
    for row in status["agents"]:
        assert row["state"] == "active" and row["zone"] in ("z0", "z1") and row["address"].startswith("127.0.0.1:")
        assert row["version"]
    wait_for(lambda: all(r["health"] == "ok" and r["latency_ms"] for r in agent_rows(nodes[0]).values()),
             what="every agent probed healthy")
    table = cli(nodes[0], "agents").stdout
    assert all(agent_id in table for agent_id in ids) and "active" in table
    text = cli(nodes[0], "status").stdout
    assert "nodes (2)" in text and "agents (4)" in text and "repair" in text


async def test_a_drain_through_the_admin_interface_drains(cluster) -> None:
    agents, nodes = cluster
    s3 = nodes[0].client()
    s3.create_bucket(Bucket="drained")
    for i in range(24):
        s3.put_object(Bucket="drained", Key=f"k{i}", Body=os.urandom(40_000 + i))
    names = chunk_names(agents)
    wait_for(lambda: all(len(holders(agents, n)) == 3 for n in names), what="every chunk on three agents")
    target = max(agents, key=lambda a: len([n for n in names if a in holders(agents, n)]))
    target_id = target.agent_id()
    async with session(nodes[0]) as watcher:
        await watcher.ok("subscribe", {"topics": ["agents", "progress"]})
        # the drain is asked of the other node: it goes through ZooKeeper to every node and to repair's leader
        assert cli(nodes[1], "drain", target_id).stdout.strip() == f"agent {target_id}: draining"
        event = await watcher.event(lambda e: e["event"] == "agent.draining")
        assert event["data"] == {"agent": target_id}
        running = await watcher.event(lambda e: e["event"] == "progress" and e["data"]["worker"] == "repair"
                                      and e["data"]["state"] == "running" and e["data"]["done"] > 0)
        assert running["data"]["unit"] == "chunks" and running["data"]["left"] > 0
        assert running["data"]["leader"]
    wait_for(lambda: not any(target in holders(agents, n) for n in chunk_names(agents)), timeout=60,
             what="no chunk left on the drained agent (moved, then deleted)")
    assert all(len(holders(agents, n)) == 3 for n in names)
    for i in range(24):
        assert len(s3.get_object(Bucket="drained", Key=f"k{i}")["Body"].read()) == 40_000 + i
    waited = cli(nodes[0], "drain", target_id, "--wait")  # again: nothing changes, and it waits for the end
    assert waited.stdout.strip().splitlines()[-1] == f"agent {target_id}: drained", waited.stdout
    assert (agent_rows(nodes[0])[target_id]["drain"] or {}).get("drained") is True
    assert agent_rows(nodes[1])[target_id]["state"] == "draining"
    # removed once drained: left out of every node's placement and reads
    assert cli(nodes[0], "remove", target_id).stdout.strip() == f"agent {target_id}: removed"
    wait_for(lambda: all(agent_rows(n)[target_id]["state"] == "removed" for n in nodes),
             what="both nodes to show the agent removed")
    s3.put_object(Bucket="drained", Key="after", Body=os.urandom(50_000))
    new = chunk_names(agents) - names
    assert len(new) == 1 and target not in holders(agents, new.pop())
    cli(nodes[1], "undrain", target_id)
    wait_for(lambda: all(agent_rows(n)[target_id]["state"] == "active" for n in nodes),
             what="the agent back in placement on both nodes")


def test_removal_is_refused_for_an_agent_still_in_service(cluster) -> None:
    agents, nodes = cluster
    live = agents[0].agent_id()
    done = cli(nodes[0], "remove", live, check=False)
    assert done.returncode == 1 and "not_drained" in done.stderr
    unknown = "0" * 32
    for verb in ("remove", "drain"):
        done = cli(nodes[0], verb, unknown, check=False)
        assert done.returncode == 1 and "no_such_agent" in done.stderr, done.stderr
    done = cli(nodes[0], "drain", "not-an-id", check=False)
    assert done.returncode == 1 and "bad_args" in done.stderr
    assert agent_rows(nodes[0])[live]["state"] == "active"


async def test_repair_is_steered_from_the_node_that_does_not_lead_it(cluster) -> None:
    agents, nodes = cluster

    def leader() -> str | None:
        return cli_json(nodes[0], "status")["leaders"].get("repair")

    wait_for(lambda: leader() is not None and len(cli_json(nodes[0], "status")["nodes"]) == 2,
             what="a repair leader, and both nodes listed")
    status = cli_json(nodes[0], "status")
    lead_id = status["leaders"]["repair"]
    ids = {n["endpoint"]: n["id"] for n in status["nodes"]}
    lead = next(n for n in nodes if ids[n.endpoint] == lead_id)
    other = next(n for n in nodes if n is not lead)
    paused = cli_json(other, "repair", "pause")
    assert paused["paused"] is True
    wait_for(lambda: cli_json(lead, "repair", "status")["state"] == "paused", what="the leader to pause repair")
    assert cli_json(other, "repair", "status")["paused"] is True
    async with session(lead) as s:
        await s.ok("subscribe", {"topics": ["progress"]})
        before = (await s.ok("repair.status"))["passes"]
        resumed = cli_json(other, "repair", "start")
        assert resumed["paused"] is False
        with trio.fail_after(30):
            await s.event(lambda e: e["data"].get("worker") == "repair" and e["data"]["passes"] > before)
    assert cli_json(lead, "repair", "status")["state"] in ("idle", "running")
    seen_from_other = cli_json(other, "repair", "status")
    assert seen_from_other["standby"] is True and seen_from_other["leader"] == lead_id


async def test_an_agent_that_dies_is_reported(cluster) -> None:
    agents, nodes = cluster
    for node in nodes:
        node.allow_log(r"agent \S+ unhealthy")
    victim = agents[3]
    victim_id = victim.agent_id()
    async with session(nodes[1]) as s:
        await s.ok("subscribe", {"topics": ["agents"]})
        victim.kill9()
        # its probe fails (unhealthy) and its registration goes with its ZooKeeper session (left), in either order
        first = await s.event(lambda e: e["event"] in ("agent.unhealthy", "agent.left")
                              and e["data"]["agent"] == victim_id)
        if first["event"] != "agent.left":
            assert first["data"]["error"]
            await s.event(lambda e: e["event"] == "agent.left" and e["data"]["agent"] == victim_id)
    rows = agent_rows(nodes[1])
    assert victim_id not in rows
    status, _, body = http_get(nodes[1], "/ready")  # three agents left: writes still make their quorum of 2
    assert status == 200 and json.loads(body)["agents"] == {"writable": 3, "writable_healthy": 3, "write_quorum": 2}
    # the node that leads repair counts the chunks short of R (the other says null)
    def counted_once() -> bool:
        counts = [json.loads(cli(n, "--json", "status").stdout)["under_replicated"] for n in nodes]
        return sum(c is not None for c in counts) == 1

    wait_for(counted_once, what="the repair leader's count of chunks short of R")


async def test_nodes_joining_and_leaving_are_events(cluster, node_factory, zookeeper, cluster_name) -> None:
    agents, nodes = cluster
    async with session(nodes[0]) as s:
        await s.ok("subscribe", {"topics": ["nodes"]})
        third = cluster_node(node_factory, zookeeper, cluster_name, name="n2", **admin_settings(**FAST))
        joined = await s.event(lambda e: e["event"] == "node.joined" and e["data"]["endpoint"] == third.endpoint)
        assert joined["data"]["admin"] == third.admin_endpoint and joined["data"]["self"] is False
        third.stop()
        left = await s.event(lambda e: e["event"] == "node.left")
        assert left["data"]["node"] == joined["data"]["id"]


async def test_a_leader_change_is_an_event(cluster) -> None:
    agents, nodes = cluster
    def ready() -> bool:
        status = cli_json(nodes[0], "status")
        return status["leaders"].get("gc") is not None and len(status["nodes"]) == 2

    wait_for(ready, what="both nodes listed, and a gc leader")
    status = cli_json(nodes[0], "status")
    ids = {n["endpoint"]: n["id"] for n in status["nodes"]}
    leader = next(n for n in nodes if ids.get(n.endpoint) == status["leaders"]["gc"])
    other = next(n for n in nodes if n is not leader)
    async with session(other) as s:
        await s.ok("subscribe", {"topics": ["leaders"]})
        leader.stop()
        event = await s.event(lambda e: e["event"] == "leader.changed" and e["data"]["worker"] == "gc"
                              and e["data"]["leader"] == ids[other.endpoint])
        assert event["data"]["leader"] == ids[other.endpoint]
    assert "gc" in cli_json(other, "status")["node"]["leads"]
