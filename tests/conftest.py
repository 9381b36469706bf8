from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import AgentProcess, ZooKeeperProcess, zookeeper_installed

os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
# every node a test starts (they inherit this) gets its admin listener on a free port, not the default 9001
os.environ.setdefault("TRIO_SOS_ADMIN_LISTEN", "127.0.0.1:0")


def stop_all(processes: list) -> None:
    """Stop every process a test started, even when stopping one fails (it exited badly, say): the failure is
    reported after the others are stopped, and none is left running."""
    errors: list[BaseException] = []
    for proc in processes:
        try:
            proc.stop()
        except Exception as exc:  # noqa: BLE001  (reported below, once all are stopped)
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator:
    started: list[AgentProcess] = []

    def make(*args: str, name: str = "agent") -> AgentProcess:
        agent = AgentProcess(tmp_path / name, tuple(args)).start()
        started.append(agent)
        return agent

    yield make
    stop_all(started)


@pytest.fixture
def agent(agent_factory) -> AgentProcess:
    return agent_factory()


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator:
    from tests.procs import NodeProcess

    started: list[NodeProcess] = []

    def make(name: str = "node", **settings) -> NodeProcess:
        """``metadata="shared"``: one SQLite file for every node of the test that asks for it."""
        if settings.get("metadata") == "shared":
            settings["metadata"] = str(tmp_path / "shared-meta.sqlite3")
        # one process per node unless a test asks for workers (tests/node/test_workers.py does): these tests
        # are about S3 behaviour, and a supervisor with a worker per core triples every node's start-up cost
        defaults = {"gc_delay": 0, "gc_interval": 0.2, "workers": 1}
        node = NodeProcess(tmp_path / name, {**defaults, **settings}).start()
        started.append(node)
        return node

    yield make
    stop_all(started)


@pytest.fixture
def node(node_factory):
    return node_factory()


@pytest.fixture
def s3(node):
    return node.client()


@pytest.fixture(scope="session")
def zookeeper(tmp_path_factory) -> Iterator[ZooKeeperProcess]:
    """One real ZooKeeper for the session (synchronous: Trio fixtures are function-scoped). Tests keep apart by
    cluster name (a chroot of their own)."""
    if not zookeeper_installed():
        pytest.skip("ZooKeeper is not installed (Debian package zookeeper; scripts/install-test-deps.sh installs it)")
    zk = ZooKeeperProcess(tmp_path_factory.mktemp("zookeeper")).start()
    yield zk
    zk.stop()


@pytest.fixture
def zk_factory(tmp_path: Path) -> Iterator:
    """ZooKeepers of a test's own, for tests that kill or restart them."""
    if not zookeeper_installed():
        pytest.skip("ZooKeeper is not installed (Debian package zookeeper; scripts/install-test-deps.sh installs it)")
    started: list[ZooKeeperProcess] = []

    def make(name: str = "zk") -> ZooKeeperProcess:
        zk = ZooKeeperProcess(tmp_path / name).start()
        started.append(zk)
        return zk

    yield make
    for zk in started:
        zk.stop()


@pytest.fixture
def cluster_name() -> str:
    import uuid

    return "test-" + uuid.uuid4().hex[:10]


@pytest.fixture
def cluster_factory(tmp_path: Path, zookeeper, cluster_name) -> Iterator:
    """Supervised agents registered in the session's ZooKeeper under a cluster of the test's own."""
    from tests.procs import SupervisedAgent

    started: list[SupervisedAgent] = []

    def make(name: str, zone: str = "", **kw) -> SupervisedAgent:
        agent = SupervisedAgent(tmp_path / name, zookeeper.hosts, cluster_name, zone=zone, **kw).start()
        started.append(agent)
        return agent

    yield make
    stop_all(started)


@pytest.fixture(scope="session")
def cassandra(tmp_path_factory) -> Iterator:
    """One real Apache Cassandra 5.0 node for the session (scripts/fetch-cassandra.sh resolves it from Maven
    Central). Without it the Cassandra tests are skipped — except in CI (or with TRIO_SOS_REQUIRE_CASSANDRA=1),
    where they fail: they never pass without having run."""
    from tests.procs import CassandraProcess, cassandra_home, cassandra_required

    home = cassandra_home()
    if home is None:
        message = "Cassandra is not fetched (bash scripts/fetch-cassandra.sh; scripts/test.sh runs it)"
        if cassandra_required():
            pytest.fail(message)
        pytest.skip(message)
    server = CassandraProcess(tmp_path_factory.mktemp("cassandra"), home).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cassandra_session(cassandra) -> Iterator:
    """A driver session on the session's Cassandra, with the schema created in keyspace ``trio_sos_test``, and
    the settings to reach it: tests keep apart by bucket names and ids of their own."""
    from trio_sos.meta.cassandra import CassandraMetaStore, CassandraSettings

    settings = CassandraSettings((cassandra.contact,), keyspace="trio_sos_test")
    cluster, session = CassandraMetaStore.connect(settings)
    CassandraMetaStore.create_schema(session, settings)
    session.set_keyspace(settings.keyspace)
    yield settings, session
    cluster.shutdown()
