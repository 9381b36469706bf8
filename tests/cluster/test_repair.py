"""The work that keeps every chunk on R agents, on a real cluster: repair after a loss and after corruption,
drain, orphan collection, and each background worker on exactly one node."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from .test_cluster import cluster_cli, cluster_node, wait_for

FAST = dict(repair_interval=0.3, dead_grace=1, gc_delay=0, gc_interval=0.2, scrub_interval=0.5,
            scrub_rate="1G", orphan_grace=1, replicas=3)


@pytest.fixture
def four(cluster_factory):
    agents = [cluster_factory(f"a{i}", zone=f"z{i % 2}") for i in range(4)]
    for a in agents:
        a.agent_id()
    return agents


def holders(agents, chunk_name: str) -> list:
    return [a for a in agents if any(p.name == chunk_name for p in a.chunk_files())]


def chunk_names(agents) -> set[str]:
    return {p.name for a in agents for p in a.chunk_files()}


def allow_repair_noise(node) -> None:
    node.allow_log(r"replica on agent .* (failed|dropped)|connect to agent .* failed|agent .* unreachable|"
                   r"scrub: agent .* unavailable|is (corrupt|missing); reported|copy of chunk")


def test_flipped_byte_in_one_replica_is_read_around_and_replaced(four, node_factory, zookeeper,
                                                                 cluster_name) -> None:
    node = cluster_node(node_factory, zookeeper, cluster_name, **FAST)
    allow_repair_noise(node)
    s3 = node.client()
    s3.create_bucket(Bucket="rot")
    body = os.urandom(300_000)
    s3.put_object(Bucket="rot", Key="k", Body=body)
    (name,) = chunk_names(four)
    placed = holders(four, name)
    assert len(placed) == 3
    bad = placed[0]
    path = next(p for p in bad.chunk_files() if p.name == name)
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01  # one bit of the first block: its CRC32C no longer matches
    path.write_bytes(bytes(data))
    for _ in range(10):  # whichever replica a read tries first, the bytes are right
        assert s3.get_object(Bucket="rot", Key="k")["Body"].read() == body
    spare = next(a for a in four if a not in placed)

    def replaced() -> bool:
        return spare in holders(four, name) and bad not in holders(four, name)

    wait_for(replaced, what="the corrupt replica to be replaced (scrub finds it, repair copies, GC deletes)")
    for agent in holders(four, name):
        assert next(p for p in agent.chunk_files() if p.name == name).read_bytes() != bytes(data)
    assert s3.get_object(Bucket="rot", Key="k")["Body"].read() == body


def test_repair_restores_r_after_an_agent_is_lost(four, node_factory, zookeeper, cluster_name) -> None:
    node = cluster_node(node_factory, zookeeper, cluster_name, **FAST)
    allow_repair_noise(node)
    s3 = node.client()
    s3.create_bucket(Bucket="loss")
    bodies = {f"k{i}": os.urandom(70_000 + i) for i in range(30)}
    for key, body in bodies.items():
        s3.put_object(Bucket="loss", Key=key, Body=body)
    names = chunk_names(four)
    assert len(names) == 30 and all(len(holders(four, n)) == 3 for n in names)
    lost = four[1]
    lost.kill9()
    left = [a for a in four if a is not lost]
    # its session expires (2 s), it stays absent past dead_grace (1 s): repair copies its chunks elsewhere
    wait_for(lambda: all(len(holders(left, n)) == 3 for n in names), timeout=60,
             what="every chunk back on 3 agents")
    for key, body in bodies.items():
        assert s3.get_object(Bucket="loss", Key=key)["Body"].read() == body


def test_drain_moves_everything_off_and_undrain_takes_it_back(four, node_factory, zookeeper,
                                                              cluster_name) -> None:
    node = cluster_node(node_factory, zookeeper, cluster_name, **{**FAST, "replicas": 2})
    allow_repair_noise(node)
    s3 = node.client()
    s3.create_bucket(Bucket="drain")
    bodies = {f"k{i}": os.urandom(50_000 + i) for i in range(30)}
    for key, body in bodies.items():
        s3.put_object(Bucket="drain", Key=key, Body=body)
    target = max(four, key=lambda a: len(a.chunk_files()))
    assert target.chunk_files()
    agent_id = target.agent_id()
    cluster_cli(zookeeper, cluster_name, "drain", agent_id)
    wait_for(lambda: not target.chunk_files(), timeout=60, what="the drained agent to hold nothing")
    wait_for(lambda: re.search(rf"{agent_id} .*draining.*\"drained\": true",
                               cluster_cli(zookeeper, cluster_name, "agents")), what="drained reported")
    others = [a for a in four if a is not target]
    assert all(len(holders(others, n)) == 2 for n in chunk_names(others))
    s3.put_object(Bucket="drain", Key="while-draining", Body=b"new" * 1000)
    assert not target.chunk_files()  # it gets no new chunks
    for key, body in bodies.items():
        assert s3.get_object(Bucket="drain", Key=key)["Body"].read() == body
    cluster_cli(zookeeper, cluster_name, "undrain", agent_id)
    wait_for(lambda: "draining" not in cluster_cli(zookeeper, cluster_name, "agents"), what="undrained")

    def takes_new_chunks() -> bool:
        s3.put_object(Bucket="drain", Key=f"after-{time.monotonic_ns()}", Body=os.urandom(1000))
        return bool(target.chunk_files())

    wait_for(takes_new_chunks, what="new chunks on the undrained agent")


def test_orphans_are_collected_and_nothing_referenced(four, node_factory, zookeeper, cluster_name) -> None:
    """A node killed mid-upload leaves chunks that no manifest references; a chunk dropped straight on an agent is
    another orphan. The other node's workers collect both, and nothing an object references."""
    survivor = cluster_node(node_factory, zookeeper, cluster_name, "survivor", intent_grace=1, **FAST)
    allow_repair_noise(survivor)
    s3 = survivor.client()
    s3.create_bucket(Bucket="orphans")
    kept = {f"k{i}": os.urandom(40_000) for i in range(10)}
    for key, body in kept.items():
        s3.put_object(Bucket="orphans", Key=key, Body=body)
    referenced = chunk_names(four)
    doomed = cluster_node(node_factory, zookeeper, cluster_name, "doomed", chunk_size=64 * 1024, **FAST)
    from tests.s3.rawhttp import connect, head_bytes, sign

    headers = sign(doomed, "PUT", "/orphans/never", {"Content-Length": str(5_000_000)})
    sock = connect(doomed)
    sock.sendall(head_bytes("PUT", "/orphans/never", headers) + os.urandom(2_200_000))
    wait_for(lambda: len(chunk_names(four) - referenced) >= 16, what="the doomed upload's chunks on the agents")
    doomed.kill9()
    sock.close()
    # an orphan of another kind: a chunk on an agent that nothing references (an interrupted repair's copy)
    import trio

    from trio_sos.agent import open_agent_pool

    async def plant() -> None:
        address = cluster_cli(zookeeper, cluster_name, "agents").split(four[0].agent_id())[1].split()[0]
        async with open_agent_pool(address) as pool:
            await pool.put(os.urandom(16), b"nobody's")

    trio.run(plant)
    wait_for(lambda: chunk_names(four) == referenced, timeout=60, what="every orphan collected")
    for key, body in kept.items():
        assert s3.get_object(Bucket="orphans", Key=key)["Body"].read() == body


def leaders(zookeeper, cluster_name) -> dict[str, str]:
    out = {}
    for line in cluster_cli(zookeeper, cluster_name, "leaders").splitlines():
        worker, holder = line.split()[:2]
        out[worker] = holder
    return out


def test_each_worker_runs_on_exactly_one_node(four, node_factory, zookeeper, cluster_name) -> None:
    one = cluster_node(node_factory, zookeeper, cluster_name, "one", **FAST)
    two = cluster_node(node_factory, zookeeper, cluster_name, "two", **FAST)
    for n in (one, two):
        allow_repair_noise(n)
    wait_for(lambda: set(leaders(zookeeper, cluster_name)) >= {"gc", "repair", "scrub"}, what="three leaders")
    held = leaders(zookeeper, cluster_name)

    def node_of(holder: str):
        lines = cluster_cli(zookeeper, cluster_name, "nodes")
        endpoint = next(line for line in lines.splitlines() if line.startswith(holder)).split('"endpoint": "')[1]
        return one if endpoint.startswith(one.endpoint) else two

    for worker, holder in held.items():
        leader = node_of(holder)
        log = leader.log_path.read_text()
        assert f"{worker}: this node leads" in log
        other = two if leader is one else one
        assert f"{worker}: this node leads" not in other.log_path.read_text()
    # kill -9 the leader of gc: the other node takes over within the session timeout (2 s)
    gc_leader = node_of(held["gc"])
    other = two if gc_leader is one else one
    gc_leader.kill9()
    wait_for(lambda: "gc: this node leads" in other.log_path.read_text(), timeout=30, what="a new gc leader")
    assert leaders(zookeeper, cluster_name)["gc"] != held["gc"]


__all__ = ["Path"]
