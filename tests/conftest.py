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
