"""A real cluster on one machine: ZooKeeper (Debian's), supervised agents registered in it, S3 nodes that find them
there. Chunks on R agents, reads that survive the loss of one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

MiB = 1 << 20


def wait_for(condition, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def cluster_cli(zookeeper, cluster_name, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "trio_sos", "cluster", "--zk", zookeeper.hosts, "--cluster",
                           cluster_name, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture
def three(cluster_factory):
    agents = [cluster_factory("a1", zone="z1"), cluster_factory("a2", zone="z1"), cluster_factory("a3", zone="z2")]
    for a in agents:
        a.agent_id()
    return agents


def cluster_node(node_factory, zookeeper, cluster_name, name: str = "node", **settings):
    """A node of the cluster; the nodes of one test share one metadata file, as the nodes of one machine do. Every
    body goes to the agents (``inline_max`` 0): these tests are about the data plane."""
    settings.setdefault("inline_max", 0)
    return node_factory(name, zk=zookeeper.hosts, cluster=cluster_name, zk_session_timeout=2, metadata="shared",
                        **settings)


def test_agents_register_and_nodes_find_them(three, node_factory, zookeeper, cluster_name) -> None:
    listing = cluster_cli(zookeeper, cluster_name, "agents")
    for agent in three:
        assert agent.agent_id() in listing
    assert "z1" in listing and "z2" in listing
    node = cluster_node(node_factory, zookeeper, cluster_name)
    assert node.endpoint in cluster_cli(zookeeper, cluster_name, "nodes")
    s3 = node.client()
    s3.create_bucket(Bucket="replicated")
    bodies = {f"k{i}": os.urandom(100_000 + i) for i in range(10)}
    for key, body in bodies.items():
        s3.put_object(Bucket="replicated", Key=key, Body=body)
    # R = 3 on three agents: every chunk on every agent, byte for byte the same file
    files = [sorted(p.name for p in a.chunk_files()) for a in three]
    assert files[0] == files[1] == files[2] and len(files[0]) == 10
    for key, body in bodies.items():
        assert s3.get_object(Bucket="replicated", Key=key)["Body"].read() == body


def test_reads_and_writes_go_on_with_an_agent_lost(three, node_factory, zookeeper, cluster_name) -> None:
    node = cluster_node(node_factory, zookeeper, cluster_name)
    node.allow_log(r"replica on agent .* (failed|dropped)|connect to agent .* failed")
    s3 = node.client()
    s3.create_bucket(Bucket="survive")
    before = {f"old{i}": os.urandom(200_000) for i in range(5)}
    for key, body in before.items():
        s3.put_object(Bucket="survive", Key=key, Body=body)
    lost = three[0]
    lost.kill9()  # the machine is gone: the agent with it
    for key, body in before.items():  # at once, before its registration expires: reads fall back
        assert s3.get_object(Bucket="survive", Key=key)["Body"].read() == body
    after = {f"new{i}": os.urandom(150_000) for i in range(5)}
    for key, body in after.items():  # two of three acknowledge: a write quorum
        s3.put_object(Bucket="survive", Key=key, Body=body)
    for key, body in {**before, **after}.items():
        assert s3.get_object(Bucket="survive", Key=key)["Body"].read() == body
    # its session expires (2 s): it leaves the map, and new chunks go to the two that are left
    wait_for(lambda: lost.agent_id() not in cluster_cli(zookeeper, cluster_name, "agents"), what="deregistration")
    s3.put_object(Bucket="survive", Key="later", Body=b"x" * 1000)
    assert s3.get_object(Bucket="survive", Key="later")["Body"].read() == b"x" * 1000


def test_copies_link_on_every_replica_and_fall_back_to_bytes_for_a_lost_one(three, node_factory, zookeeper,
                                                                            cluster_name) -> None:
    node = cluster_node(node_factory, zookeeper, cluster_name, chunk_size=256 * 1024)
    node.allow_log(r"link of chunk .* failed")
    s3 = node.client()
    s3.create_bucket(Bucket="copies")
    body = os.urandom(MiB)  # four chunks, each on the three agents
    s3.put_object(Bucket="copies", Key="src", Body=body)

    def inodes(agent) -> set[int]:
        return {p.stat().st_ino for p in agent.chunk_files()}

    before = [inodes(a) for a in three]
    source_names = sorted(p.name for p in three[0].chunk_files())
    s3.copy_object(Bucket="copies", Key="c1", CopySource="copies/src")
    # linked on all three replicas: four names more on each agent, not one file more
    assert [inodes(a) for a in three] == before and all(len(a.chunk_files()) == 8 for a in three)
    # one chunk's replica is lost on two of the three agents: too few to link (a quorum is 2), so that chunk is
    # copied the byte way — into a new chunk on three agents — and the three others are linked
    lost = source_names[0]
    for agent in three[:2]:
        next(p for p in agent.chunk_files() if p.name == lost).unlink()
    s3.copy_object(Bucket="copies", Key="c2", CopySource="copies/src")
    assert s3.get_object(Bucket="copies", Key="c2")["Body"].read() == body
    # (the byte copy's read may report the lost replicas, and repair put them back: those files are not counted)
    fresh = [{p.stat().st_ino for p in a.chunk_files() if p.name != lost} - b for a, b in zip(three, before,
                                                                                             strict=True)]
    assert [len(f) for f in fresh] == [1, 1, 1]
    assert s3.get_object(Bucket="copies", Key="c1")["Body"].read() == body


def test_kill9_one_agent_during_concurrent_puts_and_gets(three, node_factory, zookeeper, cluster_name) -> None:
    """1,000 concurrent PUTs and GETs, one agent of three killed midway: every PUT that got a 200 reads back byte
    for byte, no GET fails."""
    node = cluster_node(node_factory, zookeeper, cluster_name)
    node.allow_log(r"replica on agent .* (failed|dropped)|connect to agent .* failed|agent .* unreachable")
    s3 = node.client(max_pool_connections=32)
    s3.create_bucket(Bucket="storm")
    seeded = {f"seed{i}": os.urandom(64 * 1024 + i) for i in range(50)}
    for key, body in seeded.items():
        s3.put_object(Bucket="storm", Key=key, Body=body)
    stored: dict[str, bytes] = {}
    put_failures: list[str] = []
    get_failures: list[str] = []
    lock = threading.Lock()
    done = [0]

    def op(i: int) -> None:
        try:
            if i % 2:
                key = f"seed{i % 50}"
                if s3.get_object(Bucket="storm", Key=key)["Body"].read() != seeded[key]:
                    get_failures.append(f"{key}: wrong bytes")
            else:
                body = os.urandom(32 * 1024 + i)
                s3.put_object(Bucket="storm", Key=f"w{i}", Body=body)
                stored[f"w{i}"] = body
        except ClientError as exc:
            (get_failures if i % 2 else put_failures).append(f"{i}: {exc}")
        finally:
            with lock:
                done[0] += 1

    with ThreadPoolExecutor(32) as pool:
        futures = [pool.submit(op, i) for i in range(1000)]
        wait_for(lambda: done[0] >= 300, timeout=120, what="the first 300 requests")
        three[1].agent_process().kill()  # the C agent, mid-storm (its supervisor restarts it)
        for f in futures:
            f.result()
    assert not get_failures, get_failures[:5]
    assert len(stored) + len(put_failures) == 500
    for key, body in stored.items():
        assert s3.get_object(Bucket="storm", Key=key)["Body"].read() == body, key


def test_zookeeper_restart_while_serving(zk_factory, tmp_path, node_factory, cluster_name) -> None:
    """ZooKeeper killed and restarted while clients work: no request fails (nodes keep their last map), agents stay
    registered across it, and an agent killed meanwhile leaves every map once its session expires."""
    from tests.procs import SupervisedAgent

    zk = zk_factory()
    agents = [SupervisedAgent(tmp_path / f"a{i}", zk.hosts, cluster_name, zone=f"z{i}").start() for i in range(3)]
    try:
        ids = [a.agent_id() for a in agents]
        node = node_factory("node", zk=zk.hosts, cluster=cluster_name, zk_session_timeout=2, inline_max=0)
        node.allow_log(r"replica on agent .* (failed|dropped)|connect to agent .* failed|agent .* unreachable|"
                       r"reading the agents from ZooKeeper failed|Connection dropped|Session has expired|"
                       r"cannot connect|Connection refused|competing for leadership")
        s3 = node.client()
        s3.create_bucket(Bucket="zk-restart")
        stop = threading.Event()
        failures: list[str] = []
        count = [0]

        def loop() -> None:
            c = node.client()
            i = 0
            while not stop.is_set():
                body = os.urandom(20_000 + i)
                try:
                    c.put_object(Bucket="zk-restart", Key=f"k{i}", Body=body)
                    assert c.get_object(Bucket="zk-restart", Key=f"k{i}")["Body"].read() == body
                except ClientError as exc:
                    failures.append(str(exc))
                i += 1
                count[0] += 1

        worker = threading.Thread(target=loop, daemon=True)
        worker.start()
        try:
            wait_for(lambda: count[0] >= 10, what="traffic")
            zk.kill9()
            mark = count[0]
            wait_for(lambda: count[0] >= mark + 10, what="traffic while ZooKeeper is down")
            agents[2].kill9()  # lost while ZooKeeper cannot notice
            zk.start()  # same port, same data: sessions resume
            mark = count[0]
            wait_for(lambda: count[0] >= mark + 20, timeout=60, what="traffic after the restart")
        finally:
            stop.set()
            worker.join(60)
        assert not failures, failures[:3]
        from kazoo.client import KazooClient

        def registered() -> set[str]:
            client = KazooClient(hosts=zk.hosts)
            client.start(timeout=10)
            try:
                return set(client.get_children(f"/trio_sos/{cluster_name}/agents"))
            finally:
                client.stop()
                client.close()

        wait_for(lambda: registered() == set(ids[:2]), timeout=60, what="the killed agent's session to expire")
        # it may leave in one snapshot with an agent that re-registered after the restart: "left ['a', 'b']"
        gone = re.compile(r"left \[[^\]]*'" + ids[2] + "'")
        wait_for(lambda: gone.search(node.log_path.read_text()) is not None, what="the node to drop it from its map")
    finally:
        for a in agents:
            a.stop()


HEDGE_MS = 50


def test_hedged_read_around_a_stopped_agent(cluster_factory, node_factory, zookeeper, cluster_name) -> None:
    """The replica a node prefers (its zone's) stops answering (SIGSTOP) and its supervisor is slow to notice:
    reads ask another replica after the hedge delay instead of waiting out the 30 s agent timeout."""
    import signal

    agents = [cluster_factory(f"h{i}", zone=f"z{i}", extra=("--health-interval", "60")) for i in range(3)]
    for a in agents:
        a.agent_id()
    node = cluster_node(node_factory, zookeeper, cluster_name, zone="z0", read_hedge_ms=HEDGE_MS)
    node.allow_log(r"replica on agent .* (failed|dropped)|no answer from agent")
    s3 = node.client()
    s3.create_bucket(Bucket="hedge")
    bodies = {f"k{i}": os.urandom(300_000) for i in range(10)}
    for key, body in bodies.items():
        s3.put_object(Bucket="hedge", Key=key, Body=body)
        assert s3.get_object(Bucket="hedge", Key=key)["Body"].read() == body  # connections to all three open
    stopped = agents[0].agent_process()  # in the node's zone: every read asks it first
    stopped.send_signal(signal.SIGSTOP)
    try:
        impatient = node.client(read_timeout=3)  # far below the agent timeout a read without hedging would wait
        for _ in range(2):
            for key, body in bodies.items():
                assert impatient.get_object(Bucket="hedge", Key=key)["Body"].read() == body
    finally:
        stopped.send_signal(signal.SIGCONT)


def registered_agents(hosts: str, cluster_name: str) -> set[str]:
    from kazoo.client import KazooClient

    client = KazooClient(hosts=hosts)
    client.start(timeout=10)
    try:
        path = f"/trio_sos/{cluster_name}/agents"
        return set(client.get_children(path)) if client.exists(path) else set()
    finally:
        client.stop()
        client.close()


def test_registration_is_held_only_while_healthy(cluster_factory, zookeeper, cluster_name) -> None:
    """A hung agent (SIGSTOP) fails its health checks: its supervisor withdraws the registration, replaces the
    agent, and registers the new one."""
    import signal

    agent = cluster_factory("solo")
    agent.allow_log(r"health check failed|unhealthy|restarting in")
    agent_id = agent.agent_id()
    assert registered_agents(zookeeper.hosts, cluster_name) == {agent_id}
    hung = agent.agent_process()
    hung.send_signal(signal.SIGSTOP)
    wait_for(lambda: "registration" in agent.log_path.read_text() and "withdrawn" in agent.log_path.read_text(),
             what="the registration withdrawn")
    wait_for(lambda: [p.pid for p in agent.agent_processes()] not in ([], [hung.pid]), what="the hung agent replaced")
    wait_for(lambda: registered_agents(zookeeper.hosts, cluster_name) == {agent_id}, what="registered again")


def test_fewer_than_w_acknowledgements_is_a_503_and_stores_nothing(three, node_factory, zookeeper,
                                                                  cluster_name) -> None:
    # scrub on: a stopped agent may still complete the write from its socket buffer after SIGCONT, later than
    # the GC's delete reached it; such a late replica is an orphan, which scrub hands to the GC
    node = cluster_node(node_factory, zookeeper, cluster_name, scrub_interval=0.5, scrub_rate="1G", orphan_grace=1)
    node.allow_log(r"replica on agent .* (failed|dropped)|connect to agent .* failed|agent .* unreachable")
    s3 = node.client()
    s3.create_bucket(Bucket="quorum")
    s3.put_object(Bucket="quorum", Key="k", Body=b"before")
    for agent in three[:2]:
        agent.agent_process().send_signal(__import__("signal").SIGSTOP)  # two of three stop answering
    try:
        slow = node.client(read_timeout=120)
        with pytest.raises(ClientError) as info:
            slow.put_object(Bucket="quorum", Key="k", Body=os.urandom(100_000))
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    finally:
        for agent in three[:2]:
            agent.agent_process().send_signal(__import__("signal").SIGCONT)
    assert s3.get_object(Bucket="quorum", Key="k")["Body"].read() == b"before"
    # the partial replicas go to the GC (or, written late, to scrub): every agent keeps only the chunk of "before"
    wait_for(lambda: [len(a.chunk_files()) for a in three] == [1, 1, 1], what="the partial replicas collected")


def test_agents_and_nodes_register_again_on_a_new_zookeeper(zk_factory, tmp_path, node_factory,
                                                            cluster_name) -> None:
    """ZooKeeper comes back empty (its data lost): every session is gone; supervisors and nodes open new ones and
    register again, and the nodes serve the same agents."""
    import shutil

    from tests.procs import SupervisedAgent

    zk = zk_factory()
    agents = [SupervisedAgent(tmp_path / f"r{i}", zk.hosts, cluster_name, zone=f"z{i}").start() for i in range(3)]
    try:
        ids = {a.agent_id() for a in agents}
        node = node_factory("node", zk=zk.hosts, cluster=cluster_name, zk_session_timeout=2, inline_max=0)
        node.allow_log(r"replica on agent|connect to agent|reading the agents from ZooKeeper failed|Connection|"
                       r"Session has expired|cannot connect|competing for leadership|registration")
        for a in agents:
            a.allowed_log.append(re.compile(r"registration|Connection|Session has expired"))
        s3 = node.client()
        s3.create_bucket(Bucket="again")
        s3.put_object(Bucket="again", Key="k", Body=b"kept on the agents")
        zk.kill9()
        shutil.rmtree(zk.base / "data")
        zk.start()
        wait_for(lambda: registered_agents(zk.hosts, cluster_name) == ids, timeout=60, what="agents registered again")
        wait_for(lambda: node.endpoint in cluster_cli_hosts(zk.hosts, cluster_name, "nodes"), timeout=60,
                 what="the node registered again")

        def served() -> bool:
            # on its new session the node registers itself and reads the agents again, in either order: until it
            # has read them, a GET is a 503 (never a wrong body)
            try:
                got = s3.get_object(Bucket="again", Key="k")["Body"].read()
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ServiceUnavailable":
                    raise
                return False
            assert got == b"kept on the agents"
            return True

        wait_for(served, timeout=60, what="the node serving the object from the agents again")
        assert s3.get_object(Bucket="again", Key="k")["Body"].read() == b"kept on the agents"
        s3.put_object(Bucket="again", Key="k2", Body=b"written after")
        assert s3.get_object(Bucket="again", Key="k2")["Body"].read() == b"written after"
    finally:
        for a in agents:
            a.stop()


def cluster_cli_hosts(hosts: str, cluster_name: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "trio_sos", "cluster", "--zk", hosts, "--cluster", cluster_name,
                           *args], capture_output=True, text=True, timeout=60)
    return done.stdout
