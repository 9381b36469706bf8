from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import AgentProcess

os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator:
    started: list[AgentProcess] = []

    def make(*args: str, name: str = "agent") -> AgentProcess:
        agent = AgentProcess(tmp_path / name, tuple(args)).start()
        started.append(agent)
        return agent

    yield make
    for agent in started:
        agent.stop()


@pytest.fixture
def agent(agent_factory) -> AgentProcess:
    return agent_factory()


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator:
    from tests.procs import NodeProcess

    started: list[NodeProcess] = []

    def make(name: str = "node", **settings) -> NodeProcess:
        defaults = {"gc_delay": 0, "gc_interval": 0.2}
        node = NodeProcess(tmp_path / name, {**defaults, **settings}).start()
        started.append(node)
        return node

    yield make
    for node in started:
        node.stop()


@pytest.fixture
def node(node_factory):
    return node_factory()


@pytest.fixture
def s3(node):
    return node.client()
