"""What only the Cassandra backend has: listing shards that split as they grow (while writers and readers go on),
the recovery of changes a dead node left half-done, and its settings. On the session's real Cassandra node."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter

import attrs
import pytest
import trio

from trio_sos.meta.cassandra import CassandraMetaStore, CassandraSettings, parse_hosts
from trio_sos.meta.store import Bucket, ChunkRef, Intent, ObjectVersion, Upload

OWNER = "owner-1"


@pytest.fixture
def small_shards(cassandra_session) -> CassandraMetaStore:
    settings, session = cassandra_session
    return CassandraMetaStore.on_session(attrs.evolve(settings, shard_rows=16), session)


def version(bucket: str, key: str, *, manifest: tuple[ChunkRef, ...] = ()) -> ObjectVersion:
    return ObjectVersion(bucket, key, "null", 10, uuid.uuid4().hex, time.time(), OWNER, manifest=manifest)


def chunk() -> ChunkRef:
    return ChunkRef(uuid.uuid4().bytes, 10, 0, ("a1", "a2"))


async def new_bucket(store) -> str:
    name = f"b-{uuid.uuid4().hex[:12]}"
    await store.create_bucket(Bucket(name, OWNER, time.time()))
    return name


def listing_partitions(session, bucket: str) -> Counter:
    """Rows per listing partition of ``bucket`` as Cassandra holds them (the shards in the map and any other)."""
    shards = {r.shard for r in session.execute("SELECT shard FROM shards WHERE bucket = %s", (bucket,))}
    return Counter({s: session.execute("SELECT count(*) FROM listing WHERE bucket = %s AND shard = %s",
                                       (bucket, s)).one()[0] for s in shards})


async def test_shards_split_while_writers_and_listers_go_on(small_shards, cassandra_session) -> None:
    store = small_shards
    _, session = cassandra_session
    bucket = await new_bucket(store)
    model: dict[str, str] = {}
    rnd = random.Random(7)
    keys = [f"{rnd.choice('abcdef')}/{rnd.randrange(10_000):05d}" for _ in range(400)]
    writing = True
    # slow writers: up to 30 ms between finding a key's shard and writing its entry, so that splits begin and end
    # in between (what the fence in _write_listing is for)
    lookup = store._targets

    def slow_lookup(bucket: str, key: str) -> set[str]:
        found = lookup(bucket, key)
        time.sleep(random.uniform(0, 0.03))
        return found

    store._targets = slow_lookup  # type: ignore[method-assign]

    uploads: dict[str, str] = {}  # upload id -> key

    async def writer(w: int) -> None:
        for key in keys[w::8]:
            obj = version(bucket, key)
            await store.put_object(obj)
            model[key] = obj.etag
            if rnd.random() < 0.15:  # some go again
                await store.delete_object(bucket, key)
                model.pop(key, None)
            if rnd.random() < 0.3:  # uploads in progress live in the same shards
                upload = Upload(bucket, key + "~mpu", uuid.uuid4().hex, time.time(), OWNER)
                await store.create_upload(upload)
                uploads[upload.upload_id] = upload.key
                if rnd.random() < 0.3:
                    await store.abort_upload(upload.upload_id)
                    del uploads[upload.upload_id]

    splits_meanwhile = 0

    async def splitter() -> None:
        nonlocal splits_meanwhile
        while writing:
            splits_meanwhile += await trio.to_thread.run_sync(store.split_shards, store.settings.shard_rows)

    async def lister() -> None:  # pages stay in key order, each key once, while shards split under them
        while writing:
            page = await store.list_objects(bucket, limit=1000)
            listed = [o.key for o in page.objects]
            assert listed == sorted(set(listed), key=str.encode)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(splitter)
        nursery.start_soon(lister)
        async with trio.open_nursery() as writers:
            for w in range(8):
                writers.start_soon(writer, w)
        writing = False
    assert splits_meanwhile >= 2, splits_meanwhile
    # finish splitting: every shard ends at most shard_rows keys. Counters are best effort (a split racing the
    # writers may leave one off by a few), so the last passes count every shard for real
    while await trio.to_thread.run_sync(lambda: store.split_shards(store.settings.shard_rows, recount_all=True)):
        pass
    expected = sorted(model, key=str.encode)
    listed, marker = [], ""
    while True:  # pages of 7 across shard boundaries
        page = await store.list_objects(bucket, marker=marker, limit=7)
        listed += [(o.key, o.etag) for o in page.objects]
        if not page.truncated:
            break
        marker = page.last
    assert listed == [(k, model[k]) for k in expected]
    assert await store.count_objects(bucket) == len(model)
    listed_uploads, key_marker, id_marker = [], "", ""
    while True:  # ListMultipartUploads pages of 5 across shard boundaries
        page = await store.list_upload_entries(bucket, key_marker=key_marker, upload_id_marker=id_marker, limit=5)
        listed_uploads += [(u.key, u.upload_id) for u in page.uploads]
        if not page.truncated:
            break
        key_marker, id_marker = page.next_key_marker, page.next_upload_id_marker
    assert sorted(listed_uploads, key=lambda e: e[0].encode()) == listed_uploads
    assert sorted(listed_uploads) == sorted((k, u) for u, k in uploads.items())
    shards = listing_partitions(session, bucket)
    upload_rows = Counter({s: session.execute("SELECT count(*) FROM uploads_by_key WHERE bucket = %s AND shard = %s",
                                              (bucket, s)).one()[0] for s in shards})
    assert max((shards + upload_rows).values()) <= 16  # a shard's listing entries and uploads together
    assert len(shards) > len(model) // 16  # it did split
    assert max(shards.values()) <= 16
    # a delimiter page reads about what it returns, whatever the shards: one seek per common prefix
    page = await store.list_objects(bucket, delimiter="/", limit=1000)
    assert list(page.prefixes) == sorted({k.split("/")[0] + "/" for k in model})
    assert page.rows_read <= 2 * len(page.prefixes) + 2
    # and a prefix inside one letter reads only its keys
    under = [k for k in expected if k.startswith("c/")]
    page = await store.list_objects(bucket, prefix="c/", limit=1000)
    assert [o.key for o in page.objects] == under
    assert page.rows_read <= len(under) + 1


@pytest.mark.parametrize("change", ["put", "overwrite", "delete", "create upload", "abort upload"])
async def test_a_write_that_found_its_shard_before_a_split_lands_in_the_new_shard(small_shards, change) -> None:
    """The worst schedule, made to happen: a writer finds the shard of its key, then a whole split of that shard
    runs (mark, copy, flip, the old range dropped), then the writer writes. The fence sends the entry (or its
    removal) to the shard that owns the key now."""
    store = small_shards
    bucket = await new_bucket(store)
    keys = [f"k{i:03d}" for i in range(40)]
    for key in keys:
        await store.put_object(version(bucket, key))
    target = "k039" if change not in ("put", "create upload") else "k0395"  # in the upper half: the part that moves
    upload = Upload(bucket, target, uuid.uuid4().hex, time.time(), OWNER)
    if change == "abort upload":
        await store.create_upload(upload)
    found, go = threading.Event(), threading.Event()
    lookup = store._targets

    def paused_lookup(bucket_: str, key: str) -> set[str]:
        shards = lookup(bucket_, key)
        if key == target and not go.is_set():
            found.set()
            go.wait(30)
        return shards

    store._targets = paused_lookup  # type: ignore[method-assign]
    obj = version(bucket, target)

    async def write() -> None:
        if change == "delete":
            await store.delete_object(bucket, target)
        elif change == "create upload":
            await store.create_upload(upload)
        elif change == "abort upload":
            await store.abort_upload(upload.upload_id)
        else:
            await store.put_object(obj)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write)
        await trio.to_thread.run_sync(found.wait, 30)
        assert await trio.to_thread.run_sync(store.split_shards, 16) >= 1  # the split runs to its end meanwhile
        go.set()
    uploads = [u.upload_id for u in (await store.list_uploads(bucket))[0]]
    assert uploads == ([upload.upload_id] if change == "create upload" else [])
    if change.endswith("upload"):
        return
    listed = {o.key: o.etag for o in (await store.list_objects(bucket, limit=1000)).objects}
    if change == "delete":
        assert target not in listed
    else:
        assert listed[target] == obj.etag
    assert len(listed) == len(keys) - (change == "delete") + (change == "put")


async def test_a_change_cut_short_after_its_record_is_recovered(cassandra_session) -> None:
    """A node dies between an object's record transaction and its follow-ups (listing entry, chunk index, GC of
    the replaced chunks, the intent's drop): ``recover`` writes them, and the GC never claims the intent."""
    settings, session = cassandra_session
    store = CassandraMetaStore.on_session(settings, session)
    bucket = await new_bucket(store)
    old = version(bucket, "k", manifest=(chunk(),))
    await store.put_object(old)
    intent_id = uuid.uuid4().bytes[:12]
    await store.add_intent(Intent(intent_id, time.time(), ("a1", "a2"), bucket, "k"))
    new = version(bucket, "k", manifest=(ChunkRef(intent_id + b"\0\0\0\0", 10, 0, ("a1", "a2")),))

    class NodeDied(BaseException):
        pass

    real = store._follow_up

    def die(*args, **kw):
        raise NodeDied

    store._follow_up = die  # type: ignore[method-assign]
    with pytest.raises(NodeDied):
        await store.put_object(new, intent_id=intent_id)
    store._follow_up = real  # type: ignore[method-assign]

    assert await store.get_object(bucket, "k") == new  # the record is committed...
    page = await store.list_objects(bucket)
    assert [o.etag for o in page.objects] == [old.etag]  # ...its follow-ups are not
    assert not await store.claim_intent(intent_id, 0)  # committing: the GC cannot take its chunks
    assert await store.recover(older_than=time.time() + 1) >= 1
    page = await store.list_objects(bucket)
    assert [o.etag for o in page.objects] == [new.etag]
    assert (await store.chunk_owner(new.manifest[0].chunk_id)).key == "k"
    assert await store.chunk_owner(old.manifest[0].chunk_id) is None
    assert old.manifest[0].chunk_id in {e.chunk_id for e in await store.due_gc(time.time() + 10, 100_000)}
    assert intent_id not in await store.open_intents([intent_id])
    assert await store.recover(older_than=time.time() + 1) == 0  # nothing left


async def test_an_intent_whose_commit_never_applied_becomes_collectable(cassandra_session) -> None:
    settings, session = cassandra_session
    store = CassandraMetaStore.on_session(settings, session)
    bucket = await new_bucket(store)
    intent_id = uuid.uuid4().bytes[:12]
    await store.add_intent(Intent(intent_id, time.time() - 10, ("a1",), bucket, "never"))

    class NodeDied(BaseException):
        pass

    original = store._lwt  # the node dies after marking the intent, before the record's transaction

    def lwt(cql, params=()):
        if cql.startswith("UPDATE objects"):
            raise NodeDied
        return original(cql, params)

    store._lwt = lwt  # type: ignore[method-assign]
    with pytest.raises(NodeDied):
        await store.put_object(version(bucket, "never"), intent_id=intent_id)
    store._lwt = original  # type: ignore[method-assign]
    assert not await store.claim_intent(intent_id, 0)
    await store.recover(older_than=time.time() + 1)
    assert await store.get_object(bucket, "never") is None
    assert await store.claim_intent(intent_id, 0)  # the GC may collect its chunks now


def test_settings() -> None:
    assert parse_hosts("h1, h2:9043,h3:9043") == (["h1", "h2", "h3"], 9043)
    assert parse_hosts("[::1]:9042") == (["::1"], 9042)
    with pytest.raises(ValueError):
        parse_hosts("h1:1,h2:2")
    with pytest.raises(ValueError):
        parse_hosts(" , ")
    with pytest.raises(ValueError, match="weaker level"):
        CassandraMetaStore.connect(CassandraSettings(("127.0.0.1",), consistency="ONE"))


async def test_under_replicated_beyond_the_tracked_counts(cassandra_session) -> None:
    """chunks_by_count indexes only chunks with fewer than 3 replicas; a cluster with R = 5 is answered by walking
    the agents' chunk lists, with the same result and order."""
    settings, session = cassandra_session
    store = CassandraMetaStore.on_session(settings, session)
    bucket = await new_bucket(store)
    agents = tuple(f"r5-{uuid.uuid4().hex[:6]}-{i}" for i in range(5))
    refs = [ChunkRef(uuid.uuid4().bytes, 10, 0, agents[:n]) for n in (1, 2, 3, 4, 5, 3, 5)]
    await store.put_object(version(bucket, "k", manifest=tuple(refs)))
    mine = {r.chunk_id for r in refs}
    for replicas in (2, 3, 4, 5, 6):
        found, after = [], None
        while True:
            page = await store.under_replicated(replicas, after=after, limit=2)
            found += [o.chunk_id for o in page if o.chunk_id in mine]
            if len(page) < 2:
                break
            after = page[-1].chunk_id
        assert found == sorted(r.chunk_id for r in refs if len(r.agents) < replicas), replicas


@pytest.mark.parametrize("applied", [True, False])
async def test_a_transaction_of_unknown_outcome_is_read_back(cassandra_session, applied) -> None:
    """The coordinator times out on the record's transaction (it may or may not have applied): a SERIAL read says
    which, so an If-None-Match: * put that did apply is not refused as a conflict with itself, and one that did not
    is tried again."""
    from cassandra import WriteTimeout

    settings, session = cassandra_session
    store = CassandraMetaStore.on_session(settings, session)
    bucket = await new_bucket(store)
    original = store._lwt
    timed_out = []

    def lwt(cql, params=()):
        if cql.startswith("UPDATE objects") and not timed_out:
            timed_out.append(cql)
            if applied:
                original(cql, params)
            raise WriteTimeout("timed out", consistency=None, required_responses=2, received_responses=1,
                               write_type=5)  # CAS
        return original(cql, params)

    store._lwt = lwt  # type: ignore[method-assign]
    obj = version(bucket, "once")
    assert (await store.put_object(obj, if_none_match=("*",))).replaced is None
    assert timed_out
    assert await store.get_object(bucket, "once") == obj
    assert [o.etag for o in (await store.list_objects(bucket)).objects] == [obj.etag]


async def test_objects_of_schema_1_get_their_versions_on_upgrade(cassandra_session) -> None:
    """A keyspace written before versions existed: its records have no vsort, and no version rows. Opening it
    with this release gives each its null version (listed, readable by id), and records the current schema version."""
    settings, session = cassandra_session
    store = CassandraMetaStore.on_session(settings, session)
    bucket = await new_bucket(store)
    old = version(bucket, "legacy", manifest=(chunk(),))
    await store.put_object(old)
    shard = session.execute("SELECT id FROM buckets WHERE name = %s", (bucket,)).one().id
    # as schema 1 left it
    session.execute("UPDATE objects SET vsort = null, marker = null, null_vsort = null WHERE bucket = %s AND "
                    "key = %s", (bucket, "legacy"))
    session.execute("DELETE FROM versions WHERE bucket = %s AND key = %s AND vsort = %s",
                    (bucket, "legacy", (await store.get_object(bucket, "legacy")).vsort or 0))
    session.execute("DELETE FROM version_listing WHERE bucket = %s AND shard = %s", (bucket, shard))
    session.execute("INSERT INTO meta_info (name, value) VALUES ('schema_version', '1')")
    assert (await store.list_versions(bucket)).versions == ()
    CassandraMetaStore.create_schema(session, settings)
    from trio_sos.meta.cassandra_schema import SCHEMA_VERSION

    assert session.execute("SELECT value FROM meta_info WHERE name = 'schema_version'").one().value == \
        str(SCHEMA_VERSION)
    (listed,) = (await store.list_versions(bucket)).versions
    assert (listed.key, listed.version_id, listed.is_latest, listed.etag) == ("legacy", "null", True, old.etag)
    assert await store.get_object(bucket, "legacy", "null") == old
    got = await store.get_object(bucket, "legacy")
    assert got == old and got.vsort > 0
    assert (await store.put_object(version(bucket, "legacy"))).replaced == old  # the null version, replaced


async def test_users_of_schema_6_get_their_keys_moved_on_upgrade(cassandra_session) -> None:
    """Schema 6 kept one key pair in the user's row (access_key, secret_key) and its index entry: after the
    upgrade it is the user's one Active key, the old columns are emptied, and a row without a key gets none."""
    from trio_sos.meta.store import ACTIVE, AccessKey

    settings, session = cassandra_session
    store = CassandraMetaStore.on_session(settings, session)
    uid, ghost, key = f"old-{uuid.uuid4().hex[:8]}", f"ghost-{uuid.uuid4().hex[:8]}", f"AK{uuid.uuid4().hex[:10]}"
    session.execute("INSERT INTO users (id, display_name, access_key, secret_key, email) VALUES "
                    "(%s, 'Old', %s, 'old-secret', 'o@x')", (uid, key))
    session.execute("INSERT INTO users_by_key (access_key, id) VALUES (%s, %s)", (key, uid))
    session.execute("INSERT INTO users (id, display_name, access_key, secret_key, email) VALUES "
                    "(%s, 'G', '', '', '')", (ghost,))
    session.execute("INSERT INTO meta_info (name, value) VALUES ('schema_version', '6')")
    assert await store.user_by_access_key(key) is None  # schema 6's row, unreadable as keys until the upgrade
    CassandraMetaStore.create_schema(session, settings)
    user = await store.user_by_access_key(key)
    assert user is not None and (user.id, user.display_name, user.email) == (uid, "Old", "o@x")
    assert user.keys == (AccessKey(key, "old-secret", ACTIVE, 0.0),)
    row = session.execute("SELECT access_key, secret_key FROM users WHERE id = %s", (uid,)).one()
    assert row.access_key is None and row.secret_key is None
    assert (await store.user_by_id(ghost)).keys == ()
    CassandraMetaStore.create_schema(session, settings)  # another node of the new release: nothing changes
    assert await store.user_by_access_key(key) == user


async def test_version_listing_moves_with_split_shards(small_shards) -> None:
    """A versioned bucket's version entries live in the listing shards, and move with a split: every version is
    listed once, in order, before and after; a shard holding one key's versions only is never cut inside it."""
    store = small_shards
    bucket = await new_bucket(store)
    b = await store.get_bucket(bucket)
    await store.update_bucket(attrs.evolve(b, versioning="Enabled"))
    expected: list[tuple[str, str]] = []
    for i in range(12):
        key = f"k{i:02d}"
        ids = [(await store.put_object(version(bucket, key))).version.version_id for _ in range(3)]
        expected += [(key, v) for v in reversed(ids)]

    async def listed() -> list[tuple[str, str]]:
        out, km, vm = [], "", ""
        while True:
            page = await store.list_versions(bucket, key_marker=km, version_id_marker=vm, limit=5)
            out += [(v.key, v.version_id) for v in page.versions]
            if not page.truncated:
                return out
            km, vm = page.next_key_marker, page.next_version_id_marker

    assert await listed() == expected
    splits = await trio.to_thread.run_sync(lambda: store.split_shards(16, recount_all=True))
    assert splits >= 1
    assert len(await trio.to_thread.run_sync(store._shard_ranges, bucket)) >= 2
    assert await listed() == expected
    # one key with more versions than a shard may hold: it stays in one shard
    hot = await new_bucket(store)
    await store.update_bucket(attrs.evolve(await store.get_bucket(hot), versioning="Enabled"))
    for _ in range(40):
        await store.put_object(version(hot, "only"))
    await trio.to_thread.run_sync(lambda: store.split_shards(16, recount_all=True))
    assert len(await trio.to_thread.run_sync(store._shard_ranges, hot)) == 1
    assert len((await store.list_versions(hot)).versions) == 40
