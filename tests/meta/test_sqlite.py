"""What is particular to the SQLite backend: its file settings, schema, query plans, migrations, locking between
processes and rollback. Its behaviour as a MetaStore is in test_conformance.py."""

from __future__ import annotations

import functools
import json
import sqlite3
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import trio

from trio_sos.meta import sqlite as sqlite_mod
from trio_sos.meta.sqlite import SchemaTooNew, SqliteMetaStore, prefix_successor, schema_version
from trio_sos.meta.store import ChunkRef, GcEntry, MetaUnavailable, ObjectVersion, Upload

from .test_conformance import (
    OWNER,
    _check_consistent,
    _hammer,
    chunks,
    gc_ids,
    ids,
    intent_ids,
    new_bucket,
    new_intent,
    version,
)
import trio.lowlevel


@pytest.fixture
async def db(tmp_path: Path):
    store = await SqliteMetaStore.open(tmp_path / "meta.sqlite3")
    try:
        yield store
    finally:
        await store.aclose()


def test_prefix_successor() -> None:
    assert prefix_successor("") is None
    assert prefix_successor("a") == "b"
    assert prefix_successor("a/") == "a0"
    assert prefix_successor("a\x7f") == "a\x80"
    assert prefix_successor("a\ud7ff") == "a\ue000"  # no surrogates in UTF-8
    assert prefix_successor("a\uffff") == "a\U00010000"
    assert prefix_successor("ab\U0010ffff") == "ac"
    assert prefix_successor("a\U0010ffff\U0010ffff") == "b"
    assert prefix_successor("\U0010ffff") is None
    assert prefix_successor("\U0010ffff" * 3) is None


async def test_file_settings_and_schema(db: SqliteMetaStore, tmp_path: Path) -> None:
    for conn in (db._writer, db._reader):
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 10_000
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema_version() == db.schema_version
        assert conn.execute("PRAGMA encoding").fetchone()[0] == "UTF-8"
    assert db._reader is not db._writer
    assert db._reader.execute("PRAGMA query_only").fetchone()[0] == 1
    tables = {name: strict for _, name, kind, _, _, strict in db._writer.execute("PRAGMA table_list")
              if kind == "table" and not name.startswith("sqlite_")}
    assert set(tables) == {"users", "access_keys", "user_policies", "buckets", "objects", "uploads", "parts", "intents", "gc", "completed_uploads",
                           "chunk_index", "chunk_replicas", "replica_reports", "versions", "state"}
    assert all(tables.values()), tables


def _plans(conn: sqlite3.Connection, statements: list[str]) -> list[str]:
    return [" / ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql))
            for sql in statements if sql.lstrip().upper().startswith("SELECT")]


async def test_listings_are_index_range_scans(db: SqliteMetaStore) -> None:
    bucket = await new_bucket(db)
    for key in ["a/1", "a/2", "b"]:
        await db.put_object(version(bucket, key))
    await db.create_upload(Upload(bucket, "a/1", "u1", 1.0, OWNER))
    statements: list[str] = []
    db._reader.set_trace_callback(statements.append)
    await db.scan_objects(bucket, prefix="a/", start="a/1", inclusive=False, limit=10)
    await db.scan_objects(bucket, prefix="a/")
    await db.scan_objects(bucket, start="a")
    await db.list_uploads(bucket, prefix="a/", key_marker="a/1", upload_id_marker="u0")
    await db.due_gc(time.time())
    await db.stale_intents(time.time())
    await db.stale_intents(time.time(), after=(12.5, b"x" * 12))
    db._reader.set_trace_callback(None)
    plans = _plans(db._writer, statements)
    assert len(plans) == 7, statements
    for plan in plans:
        assert "SCAN" not in plan and "TEMP B-TREE" not in plan, plan  # no full scan, no sort
    assert "(bucket=? AND key>? AND key<?)" in plans[0]
    assert "(bucket=? AND key>? AND key<?)" in plans[1] or "(bucket=? AND key>=? AND key<?)" in plans[1]
    assert "uploads_by_key (bucket=? AND key>? AND key<?)" in plans[3]


async def test_error_inside_a_write_rolls_it_all_back(db: SqliteMetaStore, monkeypatch) -> None:
    bucket = await new_bucket(db)
    old = version(bucket, "k")
    await db.put_object(old)
    intent = await new_intent(db, bucket, "k")

    def boom(c, chunks, owner):  # after the object row is replaced and the old chunks are queued
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(SqliteMetaStore, "_index", staticmethod(boom))
    with pytest.raises(RuntimeError):
        await db.put_object(version(bucket, "k"), intent_id=intent.intent_id)
    monkeypatch.undo()
    assert await db.get_object(bucket, "k") == old
    assert not (await gc_ids(db)).keys() & ids(old.manifest)
    assert intent.intent_id in await intent_ids(db)
    assert not db._writer.in_transaction
    await db.put_object(version(bucket, "k2"))  # the connection is still usable


async def test_reads_do_not_wait_for_a_held_write_lock(tmp_path: Path) -> None:
    """Another process holds the write lock: reads go on; a write waits for it (busy_timeout), then applies after
    the other's transaction — shown by order, not by timing."""
    import trio.testing

    from trio_sos.meta.store import User, UserExists

    path = tmp_path / "meta.sqlite3"
    store = await SqliteMetaStore.open(path, busy_timeout=30)
    try:
        bucket = await new_bucket(store)
        await store.put_object(version(bucket, "k"))
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO users (id, display_name, email, created) VALUES ('held', 'H', '', 0)")
        with trio.fail_after(20):  # a read that waited for the lock would hang: it is released only below
            assert await store.get_object(bucket, "k") is not None
            assert (await store.scan_objects(bucket)).objects
        outcome: list[BaseException | None] = []

        async def write() -> None:
            try:
                await store.create_user(User("held", "mine"))
                outcome.append(None)
            except UserExists as exc:
                outcome.append(exc)

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(write)
                while store._write_limiter.borrowed_tokens == 0:  # the write is in its thread, at the lock
                    await trio.testing.wait_all_tasks_blocked()
                    await trio.lowlevel.checkpoint()
                assert not outcome
                other.execute("COMMIT")
        assert len(outcome) == 1 and isinstance(outcome[0], UserExists)  # it ran after the other's commit
        other.close()
    finally:
        await store.aclose()


async def test_busy_timeout_expires_without_change(tmp_path: Path) -> None:
    path = tmp_path / "meta.sqlite3"
    store = await SqliteMetaStore.open(path, busy_timeout=0.1)
    try:
        bucket = await new_bucket(store)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(MetaUnavailable, match="locked"):  # "not now", which the node answers with 503
            await store.put_object(version(bucket, "k"))
        other.execute("ROLLBACK")
        other.close()
        assert await store.get_object(bucket, "k") is None
        await store.put_object(version(bucket, "k"))
    finally:
        await store.aclose()


def _ov(data: dict, bucket: str) -> ObjectVersion:
    return ObjectVersion(bucket, data["key"], "null", 0, data["etag"], 0.0, OWNER,
                         tuple(ChunkRef(bytes.fromhex(c), 0, 0, ()) for c in data["chunks"]))


CHILD = textwrap.dedent("""
    import json, os, random, sys, time
    import trio
    from trio_sos.meta.sqlite import SqliteMetaStore
    from trio_sos.meta.store import ChunkRef, ObjectVersion

    async def main(path, bucket, rounds):
        store = await SqliteMetaStore.open(path)
        rnd = random.Random(7)
        for i in range(rounds):
            key = rnd.choice(["same", "same", "k1", "k2"])
            manifest = tuple(ChunkRef(os.urandom(16), 1, 0, ("a",)) for _ in range(rnd.randint(0, 2)))
            obj = ObjectVersion(bucket, key, "null", 1, "child-%d" % i, time.time(), "o", manifest)
            old = (await store.put_object(obj)).replaced
            out = {"written": {"key": key, "etag": obj.etag, "chunks": [c.chunk_id.hex() for c in manifest]}}
            if old is not None:
                out["replaced"] = {"key": key, "etag": old.etag, "chunks": [c.chunk_id.hex() for c in old.manifest]}
            print(json.dumps(out), flush=True)
        await store.aclose()

    trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
""")


async def test_two_processes_on_one_file(db: SqliteMetaStore, tmp_path: Path) -> None:
    bucket = await new_bucket(db)
    child_done = trio.Event()
    result: list = []

    async def child() -> None:
        proc = await trio.run_process([sys.executable, "-c", CHILD, db.path, bucket, "150"], capture_stdout=True)
        result.append(proc.stdout.decode())
        child_done.set()

    written, replaced = [], []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(child)
        while not child_done.is_set():
            w, r = await _hammer([db], bucket, ["same", "k1", "k3"], writers=4, rounds=3)
            written += w
            replaced += r
    lines = [json.loads(line) for line in result[0].splitlines()]
    assert len(lines) == 150
    child_replaced = [_ov(line["replaced"], bucket) for line in lines if "replaced" in line]
    # the two histories interleaved on the same keys: each process replaced versions the other wrote
    assert any(o.etag.startswith("child-") for o in replaced)
    assert any(not o.etag.startswith("child-") for o in child_replaced)
    written += [_ov(line["written"], bucket) for line in lines]
    replaced += child_replaced
    await _check_consistent(db, bucket, written, replaced)


async def test_migration_hook(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "meta.sqlite3"
    store = await SqliteMetaStore.open(path)
    bucket = await new_bucket(store)
    await store.aclose()

    calls = []

    def backfill(conn: sqlite3.Connection) -> None:
        calls.append(1)
        conn.execute("UPDATE buckets SET acl = 'migrated'")

    migrations = [*sqlite_mod.MIGRATIONS, ["CREATE TABLE extra (x INTEGER) STRICT"], backfill]
    monkeypatch.setattr(sqlite_mod, "MIGRATIONS", migrations)
    one, two = await SqliteMetaStore.open(path), await SqliteMetaStore.open(path)  # migrates once
    assert one.schema_version == two.schema_version == len(migrations)
    assert calls == [1]
    migrated = await two.get_bucket(bucket)
    assert migrated is not None and migrated.acl == "migrated"
    assert one._writer.execute("PRAGMA user_version").fetchone()[0] == len(migrations)
    await one.aclose()
    await two.aclose()

    monkeypatch.undo()
    with pytest.raises(SchemaTooNew):
        await SqliteMetaStore.open(path)


async def test_failed_migration_changes_nothing(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "meta.sqlite3"
    await (await SqliteMetaStore.open(path)).aclose()

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half (x INTEGER) STRICT")
        raise RuntimeError("bad migration")

    monkeypatch.setattr(sqlite_mod, "MIGRATIONS", [*sqlite_mod.MIGRATIONS, broken])
    with pytest.raises(RuntimeError):
        await SqliteMetaStore.open(path)
    monkeypatch.undo()
    store = await SqliteMetaStore.open(path)
    assert store.schema_version == schema_version()
    assert not store._writer.execute("SELECT 1 FROM sqlite_schema WHERE name = 'half'").fetchone()
    await store.aclose()


async def test_aclose_when_cancelled_and_twice(tmp_path: Path) -> None:
    store = await SqliteMetaStore.open(tmp_path / "meta.sqlite3")
    with trio.CancelScope() as scope:
        scope.cancel()
        await store.aclose()
    await store.aclose()
    with pytest.raises(sqlite3.ProgrammingError):
        store._writer.execute("SELECT 1")


async def test_gc_merge_keeps_later_time_and_all_agents(db: SqliteMetaStore) -> None:
    cid = b"\x01" * 16
    await db.enqueue_gc([GcEntry(cid, ("a", "b"), 100.0)])
    await db.enqueue_gc([GcEntry(cid, ("b", "c"), 50.0)])
    assert await db.due_gc(1e12) == [GcEntry(cid, ("a", "b", "c"), 100.0)]


async def test_single_connection_mode(tmp_path: Path) -> None:
    store = await SqliteMetaStore.open(tmp_path / "meta.sqlite3", separate_reader=False)
    try:
        assert store._reader is store._writer
        name = await new_bucket(store)
        await store.put_object(version(name, "k"))
        assert (await store.scan_objects(name)).objects[0].key == "k"
    finally:
        await store.aclose()


async def test_concurrent_first_open(tmp_path: Path) -> None:
    """Node processes starting together on a new file: one creates the schema, none fails."""
    path = tmp_path / "meta.sqlite3"
    stores: list[SqliteMetaStore] = []

    async def open_one() -> None:
        stores.append(await SqliteMetaStore.open(path))

    async with trio.open_nursery() as nursery:
        for _ in range(6):
            nursery.start_soon(open_one)
    try:
        assert {s.schema_version for s in stores} == {schema_version()}
        bucket = await new_bucket(stores[0])
        assert all([await s.get_bucket(bucket) is not None for s in stores])
    finally:
        for s in stores:
            await s.aclose()


async def test_a_schema_2_file_is_migrated_with_its_data(tmp_path: Path) -> None:
    """A file written by the release before intents had heartbeats and buckets identities (schema 2) opens:
    its rows are kept, each bucket gets an identity of its own, each intent's renewal time is its creation."""
    path = tmp_path / "meta.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    for step in sqlite_mod.MIGRATIONS[:2]:
        for statement in step:
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 2")
    for name in ("old-a", "old-b"):
        conn.execute("INSERT INTO buckets (name, owner_id, created, region, acl, cors) VALUES (?, 'o', 1.0, "
                     "'us-east-1', '', '')", (name,))
    conn.execute("INSERT INTO intents (intent_id, created, agents, bucket, key) VALUES (?, 123.5, '[\"a\"]', "
                 "'old-a', 'k')", (b"i" * 12,))
    old = version("old-b", "stored", manifest=chunks(2))
    columns = sqlite_mod._OBJECT_COLS.removesuffix(", inline, vsort, lock")  # as schema 2 had them
    conn.execute(f"INSERT INTO objects ({columns}) VALUES ({', '.join('?' * 15)})",
                 sqlite_mod._object_params(old)[:15])
    conn.close()
    store = await SqliteMetaStore.open(path)
    try:
        a, b = await store.get_bucket("old-a"), await store.get_bucket("old-b")
        assert a is not None and b is not None and a.id and b.id and a.id != b.id
        (intent,) = await store.stale_intents(1e12)
        assert (intent.intent_id, intent.created, intent.renewed, intent.heartbeat, intent.claimed) == (
            b"i" * 12, 123.5, 123.5, 0, False)
        assert await store.renew_intent(intent.intent_id, 200.0)
        assert await store.completed_upload("old-a", "nope") is None
        await store.put_object(version("old-a", "k"), bucket_id=a.id)
        for ref in old.manifest:  # the chunk index is filled from the manifests already there
            owner = await store.chunk_owner(ref.chunk_id)
            assert owner is not None and (owner.bucket, owner.key, owner.agents) == ("old-b", "stored", ref.agents)
            assert owner.version_id == "null"
        # the object is the key's one version, ordered by its modification time, and stays readable
        assert await store.get_object("old-b", "stored") == old
        (listed,) = (await store.list_versions("old-b")).versions
        assert (listed.key, listed.version_id, listed.is_latest, listed.etag) == ("stored", "null", True, old.etag)
    finally:
        await store.aclose()


async def test_a_schema_12_file_gets_its_users_keys_moved(tmp_path: Path) -> None:
    """Schema 12 held one key pair per user in the users row: after the upgrade each is the user's one Active key,
    the old columns are gone (no secret left behind), and a user row with an empty key gets no key (an empty
    access key must never authenticate)."""
    from trio_sos.meta.store import ACTIVE, AccessKey

    path = tmp_path / "meta.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    for step in sqlite_mod.MIGRATIONS[:12]:
        if callable(step):
            step(conn)
        else:
            for statement in step:
                conn.execute(statement)
    conn.execute("PRAGMA user_version = 12")
    conn.execute("INSERT INTO users (id, display_name, access_key, secret_key, email) VALUES "
                 "('alice', 'Alice', 'AKALICE', 'secret-alice', 'a@x'), ('ghost', 'G', '', '', '')")
    conn.close()
    store = await SqliteMetaStore.open(path)
    try:
        alice = await store.user_by_access_key("AKALICE")
        assert alice is not None and (alice.id, alice.display_name, alice.email) == ("alice", "Alice", "a@x")
        assert alice.keys == (AccessKey("AKALICE", "secret-alice", ACTIVE, 0.0),) and alice.policies == ()
        ghost = await store.user_by_id("ghost")
        assert ghost is not None and ghost.keys == ()
        assert await store.user_by_access_key("") is None
        columns = {r[1] for r in store._writer.execute("PRAGMA table_info(users)")}
        assert columns == {"id", "display_name", "email", "created"}
        assert await store.add_access_key("ghost", AccessKey("AKGHOST", "secret-ghost"))
    finally:
        await store.aclose()


async def test_concurrent_writes_share_commits_and_fail_alone(db: SqliteMetaStore, monkeypatch) -> None:
    """Writes issued together are committed together (fewer transactions than writes), and each keeps its own
    outcome: a failed condition or an error half-way through one write undoes that write only."""
    from trio_sos.meta.store import PreconditionFailed

    bucket = await new_bucket(db)
    await db.put_object(version(bucket, "taken"))
    real_index = SqliteMetaStore._index

    def index(c, chunks, owner):  # fails after the "broken" key's object row was written and old chunks queued
        row = c.execute("SELECT key FROM objects WHERE key = 'broken'").fetchone()
        if row is not None:
            raise RuntimeError("disk on fire")
        return real_index(c, chunks, owner)

    monkeypatch.setattr(SqliteMetaStore, "_index", staticmethod(index))
    outcomes: dict[str, object] = {}
    before = db.commits

    async def put(key: str, **kw) -> None:
        try:
            await db.put_object(version(bucket, key), **kw)
            outcomes[key] = "ok"
        except (PreconditionFailed, RuntimeError) as exc:
            outcomes[key] = type(exc).__name__

    async with trio.open_nursery() as nursery:
        for i in range(60):
            nursery.start_soon(put, f"k{i:02d}")
        nursery.start_soon(functools.partial(put, "taken", if_none_match=("*",)))
        nursery.start_soon(put, "broken")
    monkeypatch.undo()
    assert outcomes.pop("taken") == "PreconditionFailed"
    assert outcomes.pop("broken") == "RuntimeError"
    assert set(outcomes.values()) == {"ok"} and len(outcomes) == 60
    assert db.commits - before < 62 / 4, "concurrent writes were not grouped"
    listing = await db.scan_objects(bucket, limit=1000)
    assert [o.key for o in listing.objects] == sorted([f"k{i:02d}" for i in range(60)] + ["taken"])
    assert await db.get_object(bucket, "broken") is None
    assert not db._writer.in_transaction


async def test_a_cancelled_write_in_the_queue_changes_nothing(tmp_path: Path) -> None:
    """Writes queued behind a running group commit and cancelled there are withdrawn: nothing of theirs is
    written; the running one commits in full."""
    import trio.testing

    path = tmp_path / "meta.sqlite3"
    db = await SqliteMetaStore.open(path, busy_timeout=30)
    try:
        bucket = await new_bucket(db)
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")  # the first batch waits for this lock, in its thread
        async with trio.open_nursery() as nursery:
            nursery.start_soon(db.put_object, version(bucket, "first"))
            while db._write_limiter.borrowed_tokens == 0:
                await trio.testing.wait_all_tasks_blocked()
                await trio.lowlevel.checkpoint()
            queued = trio.CancelScope()

            async def queue_more() -> None:
                with queued:
                    async with trio.open_nursery() as inner:
                        for i in range(20):
                            inner.start_soon(db.put_object, version(bucket, f"k{i}"))

            nursery.start_soon(queue_more)
            await trio.testing.wait_all_tasks_blocked()
            assert len(db._pending) == 20
            queued.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert not db._pending
            other.execute("COMMIT")
        other.close()
        assert [o.key for o in (await db.scan_objects(bucket)).objects] == ["first"]
        await db.put_object(version(bucket, "after"))
        assert await db.get_object(bucket, "after") is not None
    finally:
        await db.aclose()


async def test_a_listing_reads_only_the_covering_index(db: SqliteMetaStore) -> None:
    """The seek of a listing is answered from ``objects_listed`` alone: no row (manifest, headers, inline body) is
    read for a listed key."""
    plans = [db._reader.execute(
        "EXPLAIN QUERY PLAN SELECT key, version_id, size, etag, last_modified, owner_id FROM objects "
        f"WHERE bucket = ? AND key {op} ?{upper} ORDER BY key", args).fetchall()
        for op, upper, args in ((">=", "", ("b", "")), (">", " AND key < ?", ("b", "a", "b")))]
    for plan in plans:
        details = " ".join(row[-1] for row in plan)
        assert "COVERING INDEX objects_listed" in details, details
        assert "TEMP B-TREE" not in details, details  # no sort: the index is in key order



async def test_a_batch_runs_in_full_when_its_leader_is_cancelled_before_the_hop(db: SqliteMetaStore) -> None:
    """The task that takes a group commit from the queue may be cancelled before the batch's thread starts: here
    while Trio's default thread limiter is exhausted (as by 40 other blocking calls), or in the one scheduling
    step between getting the write lock and taking the queue. Every write in the batch still runs: the others,
    whose callers were not cancelled, must never be acknowledged when nothing was written, nor fail. (With
    ``trio.to_thread.run_sync`` as the hop, its limiter wait raised Cancelled and "second" was acknowledged but
    absent.)"""
    import collections.abc

    import trio.testing

    bucket = await new_bucket(db)

    async def race(key: str, cancel_when: collections.abc.Callable[[], bool] | None) -> bool:
        """put "first-KEY" in a task cancelled once ``cancel_when()`` holds (or when all tasks are blocked) and
        "KEY" beside it; True if the cancellation came while the first write was still queued"""
        leader, acknowledged, hit = trio.CancelScope(), [], [False]

        async def first() -> None:
            with leader:
                await db.put_object(version(bucket, f"first-{key}"))

        async def second() -> None:
            await db.put_object(version(bucket, key))
            acknowledged.append(key)

        async def canceller() -> None:
            if cancel_when is None:
                await trio.testing.wait_all_tasks_blocked()
                hit[0] = True
            else:
                while db._write_limiter.borrowed_tokens == 0:
                    await trio.lowlevel.checkpoint()
                hit[0] = cancel_when()
            leader.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(first)
            nursery.start_soon(second)
            nursery.start_soon(canceller)
        assert acknowledged == [key]
        assert await db.get_object(bucket, key) is not None
        assert not db._writer.in_transaction
        return hit[0]

    limiter = trio.to_thread.current_default_thread_limiter()
    saved, holder = limiter.total_tokens, object()
    limiter.total_tokens = 1
    await limiter.acquire_on_behalf_of(holder)
    try:
        assert await race("second", None)
    finally:
        limiter.release_on_behalf_of(holder)
        limiter.total_tokens = saved
    # the write lock got and the first write still in the queue: its task is between the two
    in_window = lambda: db._write_limiter.borrowed_tokens == 1 and bool(db._pending)  # noqa: E731
    hits = [await race(f"k{i}", in_window) for i in range(40)]
    assert any(hits), "the cancellation never came between the write lock and the batch"


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(_JSON_VALUES)
def test_stored_json_is_json_dumps_compact(value: object) -> None:
    """Both backends store this text: the encoder made once writes exactly what json.dumps writes."""
    assert sqlite_mod._json(value) == json.dumps(value, separators=(",", ":"))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.text(), st.text()), max_size=5))
def test_pairs_round_trip(pairs: list[tuple[str, str]]) -> None:
    text = sqlite_mod._enc_pairs(pairs)
    assert text == json.dumps([[k, v] for k, v in pairs], separators=(",", ":"))
    assert sqlite_mod._dec_pairs(text) == tuple(pairs)
