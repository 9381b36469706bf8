"""Real clients run against a node in its default shape: a supervisor and a worker process per core (at least
two), so every client's sequences of requests cross worker processes."""

from __future__ import annotations

import pytest


@pytest.fixture
def node_factory(node_factory):
    def make(name: str = "node", **settings):
        settings.setdefault("workers", 2)
        return node_factory(name, **settings)

    return make
