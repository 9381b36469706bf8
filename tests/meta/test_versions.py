"""MetaStore conformance, object versions: every backend in ``conftest.BACKENDS`` must pass all of this.

The reference is S3's behaviour (what a versioned bucket keeps, what a delete does with and without a version id,
what Suspended means for the "null" version), checked through the interface only.
"""

from __future__ import annotations

import time
import uuid

import attrs
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_sos.meta.store import (
    BucketNotEmpty,
    MetaStore,
    ObjectVersion,
    Part,
    PreconditionFailed,
    Upload,
    VersionListing,
    valid_version_id,
)

from .conftest import Backend
from .test_conformance import OWNER, _opened, chunks, gc_ids, ids, new_bucket, version


async def versioned_bucket(store: MetaStore, state: str = "Enabled") -> str:
    name = await new_bucket(store)
    await set_versioning(store, name, state)
    return name


async def set_versioning(store: MetaStore, name: str, state: str) -> None:
    bucket = await store.get_bucket(name)
    assert bucket is not None
    await store.update_bucket(attrs.evolve(bucket, versioning=state))


async def all_versions(store: MetaStore, bucket: str, **kw) -> list[tuple[str, str, bool, bool]]:
    """(key, version id, is latest, is a delete marker) of every entry, paging 2 at a time."""
    out: list[tuple[str, str, bool, bool]] = []
    key_marker = id_marker = ""
    while True:
        page: VersionListing = await store.list_versions(bucket, key_marker=key_marker, version_id_marker=id_marker,
                                                         limit=2, **kw)
        out += [(v.key, v.version_id, v.is_latest, v.delete_marker) for v in page.versions]
        if not page.truncated:
            return out
        key_marker, id_marker = page.next_key_marker, page.next_version_id_marker


async def test_bucket_versioning_state_is_stored(store: MetaStore) -> None:
    name = await new_bucket(store)
    assert (await store.get_bucket(name)).versioning == ""
    await set_versioning(store, name, "Enabled")
    assert (await store.get_bucket(name)).versioning == "Enabled"
    await set_versioning(store, name, "Suspended")
    assert (await store.get_bucket(name)).versioning == "Suspended"
    assert [b.versioning for b in await store.list_buckets() if b.name == name] == ["Suspended"]


async def test_enabled_keeps_every_version(store: MetaStore) -> None:
    bucket = await versioned_bucket(store)
    written = []
    for _ in range(3):
        done = await store.put_object(version(bucket, "k"))
        assert done.replaced is None
        written.append(done.version)
    vids = [v.version_id for v in written]
    assert len(set(vids)) == 3 and "null" not in vids and all(valid_version_id(v) for v in vids)
    assert all(len(v) == 32 and v.isalnum() for v in vids)  # opaque, URL-safe
    assert await store.get_object(bucket, "k") == written[-1]
    for v in written:
        assert await store.get_object(bucket, "k", v.version_id) == v
    assert await store.get_object(bucket, "k", "null") is None
    assert await store.get_object(bucket, "k", "0" * 32) is None
    assert await store.get_object(bucket, "k", "not-an-id") is None
    # newest first, the newest latest; the listing shows the key once, as its latest version
    assert await all_versions(store, bucket) == [("k", vids[2], True, False), ("k", vids[1], False, False),
                                                 ("k", vids[0], False, False)]
    page = await store.list_objects(bucket)
    assert [(o.key, o.version_id, o.etag) for o in page.objects] == [("k", vids[2], written[2].etag)]
    # nothing was collected, and each chunk's owner names its version
    assert not (ids(written[0].manifest) | ids(written[1].manifest)) & (await gc_ids(store)).keys()
    for v in written:
        owner = await store.chunk_owner(v.manifest[0].chunk_id)
        assert owner is not None and (owner.key, owner.version_id) == ("k", v.version_id)
    assert await store.count_objects(bucket) == 1
    objects, size = await store.bucket_usage(bucket)
    assert (objects, size) == (1, sum(v.size for v in written))


async def test_delete_marker_hides_the_key_until_removed(store: MetaStore) -> None:
    bucket = await versioned_bucket(store)
    first = (await store.put_object(version(bucket, "k"))).version
    second = (await store.put_object(version(bucket, "k"))).version
    gone = await store.delete_object(bucket, "k", owner_id="deleter")
    assert gone.removed is None and gone.marker is not None
    marker = gone.marker
    assert marker.delete_marker and valid_version_id(marker.version_id) and marker.owner_id == "deleter"
    latest = await store.get_object(bucket, "k")
    assert latest is not None and latest.delete_marker and latest.version_id == marker.version_id
    assert (await store.get_object(bucket, "k", marker.version_id)).delete_marker
    assert (await store.list_objects(bucket)).objects == ()
    assert await store.count_objects(bucket) == 0
    assert await all_versions(store, bucket) == [("k", marker.version_id, True, True),
                                                 ("k", second.version_id, False, False),
                                                 ("k", first.version_id, False, False)]
    # a second delete puts a second marker
    again = (await store.delete_object(bucket, "k")).marker
    assert again is not None and again.version_id != marker.version_id
    # a bucket holding only old versions and markers is not empty
    with pytest.raises(BucketNotEmpty):
        await store.delete_bucket(bucket)
    # removing the markers by id brings the newest version back
    for m in (again, marker):
        removed = await store.delete_object(bucket, "k", version_id=m.version_id)
        assert removed.removed is not None and removed.removed.delete_marker and removed.marker is None
    assert await store.get_object(bucket, "k") == second
    assert [o.key for o in (await store.list_objects(bucket)).objects] == ["k"]
    assert not ids(second.manifest) & (await gc_ids(store)).keys()


async def test_delete_by_version_id_removes_for_good(store: MetaStore) -> None:
    bucket = await versioned_bucket(store)
    v = [(await store.put_object(version(bucket, "k"))).version for _ in range(3)]
    # a noncurrent version
    assert (await store.delete_object(bucket, "k", version_id=v[1].version_id)).removed == v[1]
    assert ids(v[1].manifest) <= (await gc_ids(store)).keys()
    assert await store.chunk_owner(v[1].manifest[0].chunk_id) is None
    assert await store.get_object(bucket, "k", v[1].version_id) is None
    assert not await store.delete_object(bucket, "k", version_id=v[1].version_id)  # gone: nothing to do
    # the latest: the next newest becomes the latest
    assert (await store.delete_object(bucket, "k", version_id=v[2].version_id)).removed == v[2]
    assert await store.get_object(bucket, "k") == v[0]
    assert [(o.key, o.version_id) for o in (await store.list_objects(bucket)).objects] == [("k", v[0].version_id)]
    assert await all_versions(store, bucket) == [("k", v[0].version_id, True, False)]
    # the last one: the key is gone, and so may the bucket be
    assert (await store.delete_object(bucket, "k", version_id=v[0].version_id)).removed == v[0]
    assert await store.get_object(bucket, "k") is None
    assert await all_versions(store, bucket) == []
    await store.delete_bucket(bucket)


async def test_unversioned_bucket_has_null_versions_only(store: MetaStore) -> None:
    bucket = await new_bucket(store)
    first = (await store.put_object(version(bucket, "k"))).version
    assert first.version_id == "null"
    done = await store.put_object(version(bucket, "k"))
    assert done.replaced == first and done.version.version_id == "null"
    assert await store.get_object(bucket, "k", "null") == done.version
    assert await all_versions(store, bucket) == [("k", "null", True, False)]
    gone = await store.delete_object(bucket, "k")
    assert gone.removed == done.version and gone.marker is None  # no marker in an unversioned bucket
    assert await all_versions(store, bucket) == []


async def test_suspended_writes_replace_the_null_version(store: MetaStore) -> None:
    bucket = await versioned_bucket(store)
    v1 = (await store.put_object(version(bucket, "k"))).version
    await set_versioning(store, bucket, "Suspended")
    n1 = (await store.put_object(version(bucket, "k"))).version
    assert n1.version_id == "null"
    done = await store.put_object(version(bucket, "k"))
    n2 = done.version
    assert done.replaced == n1 and ids(n1.manifest) <= (await gc_ids(store)).keys()
    assert await all_versions(store, bucket) == [("k", "null", True, False), ("k", v1.version_id, False, False)]
    # enabled again: the null version stays as a noncurrent one; suspended again, a write replaces it where it is
    await set_versioning(store, bucket, "Enabled")
    v3 = (await store.put_object(version(bucket, "k"))).version
    await set_versioning(store, bucket, "Suspended")
    done = await store.put_object(version(bucket, "k"))
    assert done.replaced == n2
    n3 = done.version
    assert await store.get_object(bucket, "k") == n3
    assert await all_versions(store, bucket) == [("k", "null", True, False), ("k", v3.version_id, False, False),
                                                 ("k", v1.version_id, False, False)]
    # a delete while suspended: the null version goes for good, a null delete marker is the latest
    gone = await store.delete_object(bucket, "k")
    assert gone.removed == n3 and gone.marker is not None and gone.marker.version_id == "null"
    assert ids(n3.manifest) <= (await gc_ids(store)).keys()
    assert await all_versions(store, bucket) == [("k", "null", True, True), ("k", v3.version_id, False, False),
                                                 ("k", v1.version_id, False, False)]
    # and a write replaces that marker
    done = await store.put_object(version(bucket, "k"))
    assert done.replaced is not None and done.replaced.delete_marker
    assert await all_versions(store, bucket) == [("k", "null", True, False), ("k", v3.version_id, False, False),
                                                 ("k", v1.version_id, False, False)]


async def test_conditions_see_a_delete_marker_as_no_object(store: MetaStore) -> None:
    bucket = await versioned_bucket(store)
    first = (await store.put_object(version(bucket, "k"))).version
    await store.delete_object(bucket, "k")
    with pytest.raises(PreconditionFailed):
        await store.put_object(version(bucket, "k"), if_match=("*",))
    with pytest.raises(PreconditionFailed):
        await store.put_object(version(bucket, "k"), if_match=(first.etag,))
    done = await store.put_object(version(bucket, "k"), if_none_match=("*",))
    with pytest.raises(PreconditionFailed):
        await store.put_object(version(bucket, "k"), if_none_match=("*",))
    assert await store.get_object(bucket, "k") == done.version


async def test_update_object_of_a_noncurrent_version(store: MetaStore) -> None:
    bucket = await versioned_bucket(store)
    old = (await store.put_object(version(bucket, "k", tags=(("a", "1"),)))).version
    new = (await store.put_object(version(bucket, "k"))).version
    assert await store.update_object(attrs.evolve(old, tags=(("b", "2"),), acl="acl-x"))
    got = await store.get_object(bucket, "k", old.version_id)
    assert got.tags == (("b", "2"),) and got.acl == "acl-x"
    assert await store.get_object(bucket, "k") == new  # the latest untouched
    await store.delete_object(bucket, "k", version_id=old.version_id)
    assert not await store.update_object(attrs.evolve(old, tags=()))  # gone


async def test_versioned_multipart_completion(store: MetaStore) -> None:
    bucket = await versioned_bucket(store)
    first = (await store.put_object(version(bucket, "k"))).version
    up = Upload(bucket, "k", uuid.uuid4().hex, time.time(), OWNER)
    await store.create_upload(up)
    part = Part(up.upload_id, 1, 100, "e1", time.time(), chunks(1))
    await store.put_part(part)
    done = await store.complete_upload(up.upload_id, version(bucket, "k", manifest=part.manifest, parts=(100,)), [1])
    assert done.replaced is None and valid_version_id(done.version.version_id)
    assert done.version.version_id != first.version_id
    record = await store.completed_upload(bucket, up.upload_id)
    assert record is not None and record.version_id == done.version.version_id
    assert await store.get_object(bucket, "k", first.version_id) == first
    owner = await store.chunk_owner(part.manifest[0].chunk_id)
    assert owner is not None and (owner.upload_id, owner.version_id) == ("", done.version.version_id)


async def test_repair_of_a_noncurrent_versions_chunk(store: MetaStore) -> None:
    bucket = await versioned_bucket(store)
    old = (await store.put_object(version(bucket, "k"))).version
    await store.put_object(version(bucket, "k"))
    target = old.manifest[0]
    assert await store.set_chunk_agents(target.chunk_id, ("a1", "a2"), ("a1", "a3"))
    got = await store.get_object(bucket, "k", old.version_id)
    assert got.manifest[0].agents == ("a1", "a3") and got.manifest[1] == old.manifest[1]
    assert (await store.chunk_owner(target.chunk_id)).agents == ("a1", "a3")


async def test_concurrent_writes_of_one_key_each_get_a_version(backend: Backend) -> None:
    """Writers on two instances (two nodes) write and delete one key at once: every write is a version of its
    own, the versions are in the order the store committed them, exactly one is the latest."""
    one, two = await backend.open(), await backend.open()
    try:
        bucket = await versioned_bucket(one)
        results: list[ObjectVersion] = []

        async def writer(store: MetaStore, n: int) -> None:
            for i in range(n):
                if i % 4 == 3:
                    marker = (await store.delete_object(bucket, "k")).marker
                    assert marker is not None
                    results.append(marker)
                else:
                    results.append((await store.put_object(version(bucket, "k", manifest=()))).version)

        async with trio.open_nursery() as nursery:
            for s in (one, two, one, two):
                nursery.start_soon(writer, s, 6)
        listed = await all_versions(two, bucket)
        assert sorted(v[1] for v in listed) == sorted(r.version_id for r in results)
        assert len({v[1] for v in listed}) == len(results) == 24
        assert [v[2] for v in listed] == [True] + [False] * 23
        latest = await one.get_object(bucket, "k")
        assert latest is not None and latest.version_id == listed[0][1]
        # the order is the commit order: the vsorts the store gave, smallest (newest) first
        by_id = {r.version_id: r for r in results}
        order = [by_id[v[1]].vsort for v in listed]
        assert order == sorted(order) and len(set(order)) == len(order)
    finally:
        await one.aclose()
        await two.aclose()


# -- ListObjectVersions against a model --

OPS = st.lists(st.tuples(st.sampled_from(["put", "put", "delete", "delete-version", "suspend", "enable"]),
                         st.sampled_from(["a", "a/x", "a/y", "b", "b/z/q", "é/1", "\U00010000"]),
                         st.integers(0, 5)), max_size=25)


def model_listing(model: dict[str, list[tuple[str, bool]]], prefix: str, delimiter: str) -> list[tuple]:
    """Entries in S3's order: keys by UTF-8, each key's versions newest first, keys under a common prefix rolled
    up into it."""
    out: list[tuple] = []
    for key in sorted(model, key=str.encode):
        if not key.startswith(prefix) or not model[key]:
            continue
        cut = key.find(delimiter, len(prefix)) if delimiter else -1
        if cut >= 0:
            rolled = ("prefix", key[:cut + len(delimiter)])
            if rolled not in out:
                out.append(rolled)
            continue
        for i, (vid, marker) in enumerate(model[key]):
            out.append(("version", key, vid, i == 0, marker))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS, prefix=st.sampled_from(["", "a", "b/", "é"]), delimiter=st.sampled_from(["", "/"]),
       limit=st.integers(1, 4))
async def test_list_versions_matches_model(backend: Backend, ops, prefix, delimiter, limit) -> None:
    async with _opened(backend) as store:
        bucket = await versioned_bucket(store)
        state = "Enabled"
        model: dict[str, list[tuple[str, bool]]] = {}  # key -> [(version id, is marker)], newest first
        for op, key, n in ops:
            versions = model.setdefault(key, [])
            if op in ("suspend", "enable"):
                state = "Suspended" if op == "suspend" else "Enabled"
                await set_versioning(store, bucket, state)
            elif op == "put":
                vid = (await store.put_object(version(bucket, key, manifest=()))).version.version_id
                if state == "Suspended":
                    versions[:] = [v for v in versions if v[0] != "null"]
                versions.insert(0, (vid, False))
            elif op == "delete":
                marker = (await store.delete_object(bucket, key)).marker
                assert marker is not None
                if state == "Suspended":
                    versions[:] = [v for v in versions if v[0] != "null"]
                versions.insert(0, (marker.version_id, True))
            elif versions:
                vid = versions[n % len(versions)][0]
                assert (await store.delete_object(bucket, key, version_id=vid)).removed is not None
                versions[:] = [v for v in versions if v[0] != vid]
        expected = model_listing(model, prefix, delimiter)
        # paged by the markers the store gives, every entry comes once, in order
        seen: list[tuple] = []
        key_marker = id_marker = ""
        while True:
            page = await store.list_versions(bucket, prefix=prefix, delimiter=delimiter, key_marker=key_marker,
                                             version_id_marker=id_marker, limit=limit)
            entries = [("version", v.key, v.version_id, v.is_latest, v.delete_marker) for v in page.versions]
            entries += [("prefix", p) for p in page.prefixes]
            entries.sort(key=lambda e: e[1].encode())  # stable: a key's versions keep the page's order
            assert len(page.versions) + len(page.prefixes) <= limit
            assert page.rows_read <= 2 * limit + 4  # the cost follows the page
            seen += entries
            if not page.truncated:
                break
            key_marker, id_marker = page.next_key_marker, page.next_version_id_marker
        assert seen == expected
        # ListObjects shows each key's latest version when it is not a marker
        listed = await store.list_objects(bucket, limit=1000)
        assert [(o.key, o.version_id) for o in listed.objects] == [
            (k, model[k][0][0]) for k in sorted(model, key=str.encode) if model[k] and not model[k][0][1]]


async def test_list_versions_cost_does_not_grow_with_old_versions(store: MetaStore) -> None:
    """A key with many versions costs ListObjects one entry, and a version page only its own entries."""
    bucket = await versioned_bucket(store)
    for _ in range(60):
        await store.put_object(version(bucket, "many", manifest=()))
    await store.put_object(version(bucket, "next", manifest=()))
    page = await store.list_objects(bucket, limit=2)
    assert [o.key for o in page.objects] == ["many", "next"] and page.rows_read <= 2 * 2 + 2
    page = await store.list_versions(bucket, limit=5)
    assert len(page.versions) == 5 and page.truncated and page.rows_read <= 5 + 2
    later = await store.list_versions(bucket, key_marker="many", version_id_marker=page.next_version_id_marker,
                                      limit=100)
    assert len(later.versions) == 56 and [v.key for v in later.versions][-1] == "next"
    assert not any(v.is_latest for v in later.versions[:-1]) and later.versions[-1].is_latest


async def test_expected_latest_guards_a_delete(store: MetaStore) -> None:
    """The lifecycle's expiration names the version it looked at: a newer write since is never hidden."""
    bucket = await versioned_bucket(store)
    seen = (await store.put_object(version(bucket, "k"))).version
    newer = (await store.put_object(version(bucket, "k"))).version
    assert not await store.delete_object(bucket, "k", expected=seen)
    assert await store.get_object(bucket, "k") == newer
    assert (await store.delete_object(bucket, "k", expected=newer)).marker is not None
    plain = await new_bucket(store)
    old = (await store.put_object(version(plain, "k"))).version
    again = (await store.put_object(version(plain, "k"))).version  # null again, another ETag and time
    assert not await store.delete_object(plain, "k", expected=old)
    assert (await store.delete_object(plain, "k", expected=again)).removed == again


async def test_worker_state_is_shared(backend: Backend) -> None:
    one, two = await backend.open(), await backend.open()
    try:
        name = "test-" + uuid.uuid4().hex
        assert await one.get_state(name) is None
        await one.set_state(name, '{"bucket": "b", "key": "é"}')
        assert await two.get_state(name) == '{"bucket": "b", "key": "é"}'
        await two.set_state(name, None)
        assert await one.get_state(name) is None
        b = await new_bucket(one)
        bucket = await one.get_bucket(b)
        await one.update_bucket(attrs.evolve(bucket, lifecycle='[{"id": "r"}]'))
        assert (await two.get_bucket(b)).lifecycle == '[{"id": "r"}]'
    finally:
        await one.aclose()
        await two.aclose()
