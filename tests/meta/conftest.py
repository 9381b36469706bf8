"""The metadata backends the conformance suite runs against.

``BACKENDS`` holds one pytest param per backend; its value is a factory ``(request, tmp_path) -> Backend``. A
backend that needs a server (Cassandra) is added by appending one param whose factory calls ``pytest.skip`` when
the server is not reachable, opens its store on a fresh keyspace, and drops it with ``request.addfinalizer``:

    pytest.param(cassandra_backend, id="cassandra"),

Every test of ``test_conformance.py`` then runs against it, through the ``store`` and ``backend`` fixtures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import attrs
import pytest

from trio_sos.meta.sqlite import SqliteMetaStore
from trio_sos.meta.store import MetaStore


@attrs.frozen
class Backend:
    name: str
    open: Callable[[], Awaitable[MetaStore]]  # a new, independent instance on the same data (another node process)


def sqlite_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    path = tmp_path / "meta.sqlite3"
    return Backend("sqlite", lambda: SqliteMetaStore.open(path))


def cassandra_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    from trio_sos.meta.cassandra import CassandraMetaStore

    settings, session = request.getfixturevalue("cassandra_session")

    async def open_store() -> MetaStore:
        return CassandraMetaStore.on_session(settings, session)

    return Backend("cassandra", open_store)


BACKENDS = [
    pytest.param(sqlite_backend, id="sqlite"),
    pytest.param(cassandra_backend, id="cassandra"),
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return request.param(request, tmp_path)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[MetaStore]:
    s = await backend.open()
    try:
        yield s
    finally:
        await s.aclose()
