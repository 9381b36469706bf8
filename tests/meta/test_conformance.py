"""MetaStore conformance: every backend in ``conftest.BACKENDS`` must pass all of this, unchanged.

Tests make their own bucket names (``fresh``) so that they do not depend on an empty store, and look at the GC
queue and the intents only through chunk ids and intent ids they made themselves.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from trio_sos.meta.store import (
    ACTIVE,
    INACTIVE,
    AccessKey,
    Bucket,
    BucketAlreadyExists,
    BucketNotEmpty,
    ChunkRef,
    GcEntry,
    Intent,
    IntentLost,
    MetaStore,
    NoSuchBucket,
    NoSuchUpload,
    ObjectVersion,
    Part,
    PreconditionFailed,
    ReplicaReport,
    Upload,
    User,
    UserExists,
)

from .conftest import Backend

OWNER = "owner-1"
FAR = 1e12  # a "now" after every not_before / a threshold after every intent's creation


def fresh(stem: str = "b") -> str:
    return f"{stem}-{uuid.uuid4().hex[:12]}"


async def new_bucket(store: MetaStore, owner: str = OWNER) -> str:
    name = fresh()
    await store.create_bucket(Bucket(name, owner, time.time()))
    return name


def chunks(n: int = 2, agents: tuple[str, ...] = ("a1", "a2")) -> tuple[ChunkRef, ...]:
    return tuple(ChunkRef(os.urandom(16), 100 + i, random.getrandbits(32), agents) for i in range(n))


def version(bucket: str, key: str, *, manifest: tuple[ChunkRef, ...] | None = None, **kw: Any) -> ObjectVersion:
    manifest = chunks() if manifest is None else manifest
    fields: dict = {
        "version_id": "null", "size": sum(c.size for c in manifest), "etag": os.urandom(16).hex(),
        "last_modified": time.time(), "owner_id": OWNER, "manifest": manifest,
    }
    fields.update(kw)
    return ObjectVersion(bucket, key, **fields)


def ids(refs: tuple[ChunkRef, ...] | list[ChunkRef]) -> set[bytes]:
    return {r.chunk_id for r in refs}


async def gc_ids(store: MetaStore, now: float = FAR) -> Counter[bytes]:
    return Counter(e.chunk_id for e in await store.due_gc(now, limit=100_000))


async def intent_ids(store: MetaStore) -> set[bytes]:
    return {i.intent_id for i in await store.stale_intents(FAR, limit=100_000)}


async def new_intent(store: MetaStore, bucket: str = "", key: str = "", created: float | None = None) -> Intent:
    intent = Intent(os.urandom(12), time.time() if created is None else created, ("a1", "a2"), bucket, key)
    await store.add_intent(intent)
    return intent


# -- users --


def person(stem: str, display: str, secret: str, email: str = "") -> User:
    """A user with one Active key pair."""
    return User(fresh(stem), display, email, (AccessKey(fresh("AK"), secret, ACTIVE, 1700000000.5),),
                created=1700000000.25)


def ak(user: User) -> str:
    return user.keys[0].access_key


async def test_users(store: MetaStore) -> None:
    alice = person("alice", "Alice Ä", "secret-a", email="a@example.com")
    bob = person("bob", "Bob", "secret-b")
    await store.create_user(alice)
    await store.create_user(bob)
    assert await store.user_by_id(alice.id) == alice
    assert await store.user_by_access_key(ak(bob)) == bob
    assert await store.user_by_id("nobody-" + uuid.uuid4().hex) is None
    assert await store.user_by_access_key("no-such-key") is None
    assert await store.user_by_access_key("") is None
    listed = [u for u in await store.list_users() if u.id in (alice.id, bob.id)]
    assert listed == sorted([alice, bob], key=lambda u: u.id)

    assert await store.delete_user(alice.id) is True
    assert await store.delete_user(alice.id) is False
    assert await store.user_by_id(alice.id) is None
    assert await store.user_by_access_key(ak(alice)) is None


async def test_user_without_keys_and_with_policies(store: MetaStore) -> None:
    user = User(fresh("u"), "U", "", (), (("a-policy", '{"Version": "2012-10-17"}'), ("b", "{}")), 5.0)
    await store.create_user(user)
    assert await store.user_by_id(user.id) == user
    assert await store.user_by_access_key("") is None


async def test_create_user_duplicate_id_or_key(store: MetaStore) -> None:
    user = person("u", "U", "s")
    await store.create_user(user)
    with pytest.raises(UserExists):
        await store.create_user(attrs.evolve(person("x", "other", "s2"), id=user.id))
    with pytest.raises(UserExists):
        await store.create_user(User(fresh("u"), "other", "", (AccessKey(fresh("AK"), "s3"), user.keys[0])))
    assert await store.user_by_id(user.id) == user
    assert await store.user_by_access_key(ak(user)) == user
    assert len([u for u in await store.list_users() if u.display_name == "other"]) == 0
    # the refused user's first key was not left taken
    free = person("f", "F", "s4")
    await store.create_user(free)
    assert await store.user_by_access_key(ak(free)) == free


async def test_user_keys_rotate(store: MetaStore) -> None:
    user = person("u", "U", "old-secret")
    other = person("o", "O", "o-secret")
    await store.create_user(user)
    await store.create_user(other)
    assert await store.user_by_access_key(ak(user)) == user  # (cached, where a backend caches)
    assert await store.add_access_key(user.id, AccessKey(fresh("AK"), "second")) is True
    new_key = fresh("AK")
    assert await store.set_user_keys(user.id, new_key, "new-secret") is True
    assert await store.user_by_access_key(ak(user)) is None  # the old keys stop working at once
    rotated = await store.user_by_access_key(new_key)
    assert rotated is not None and [(k.access_key, k.secret_key, k.status) for k in rotated.keys] == [
        (new_key, "new-secret", ACTIVE)]
    assert await store.user_by_id(user.id) == rotated
    assert await store.set_user_keys(user.id, new_key, "newer-secret") is True  # same key, new secret
    assert (await store.user_by_access_key(new_key)).keys[0].secret_key == "newer-secret"
    with pytest.raises(UserExists):  # another user's key
        await store.set_user_keys(user.id, ak(other), "x-secret")
    assert await store.user_by_access_key(ak(other)) == other
    assert (await store.user_by_id(user.id)).keys[0].access_key == new_key
    assert await store.set_user_keys(fresh("nobody"), fresh("AK"), "s") is False
    # the old key is free again: a new user may take it
    await store.create_user(User(fresh("n"), "N", "", (AccessKey(ak(user), "n-secret"),)))


async def test_access_keys(store: MetaStore) -> None:
    user, other = person("u", "U", "first"), person("o", "O", "other")
    await store.create_user(user)
    await store.create_user(other)
    second = AccessKey(fresh("AK"), "second-secret", ACTIVE, 1700000001.0)
    assert await store.add_access_key(user.id, second) is True
    got = await store.user_by_access_key(second.access_key)
    assert got is not None and got.id == user.id and sorted(got.keys, key=lambda k: k.access_key) == list(got.keys)
    assert set(got.keys) == {user.keys[0], second}
    assert await store.user_by_access_key(ak(user)) == got
    with pytest.raises(UserExists):  # a key is one user's
        await store.add_access_key(user.id, AccessKey(ak(other), "x"))
    assert await store.add_access_key(fresh("nobody"), AccessKey(fresh("AK"), "x")) is False

    assert await store.set_access_key_status(user.id, second.access_key, INACTIVE) is True
    got = await store.user_by_id(user.id)
    assert got.key(second.access_key) == attrs.evolve(second, status=INACTIVE)
    assert (await store.user_by_access_key(second.access_key)).key(second.access_key).status == INACTIVE
    assert await store.set_access_key_status(other.id, second.access_key, ACTIVE) is False  # not its key
    assert await store.set_access_key_status(user.id, fresh("AK"), ACTIVE) is False
    assert await store.set_access_key_status(user.id, second.access_key, ACTIVE) is True

    assert await store.delete_access_key(other.id, second.access_key) is False
    assert await store.delete_access_key(user.id, second.access_key) is True
    assert await store.delete_access_key(user.id, second.access_key) is False
    assert await store.user_by_access_key(second.access_key) is None
    assert (await store.user_by_id(user.id)).keys == user.keys
    # a deleted key may be given again, to anyone
    assert await store.add_access_key(other.id, second) is True
    assert (await store.user_by_access_key(second.access_key)).id == other.id
    # deleting a user frees all its keys
    assert await store.delete_user(other.id) is True
    assert await store.user_by_access_key(second.access_key) is None
    assert await store.user_by_access_key(ak(other)) is None
    assert await store.add_access_key(user.id, second) is True


async def test_user_policies(store: MetaStore) -> None:
    user = person("u", "U", "s")
    await store.create_user(user)
    doc = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}'
    assert await store.put_user_policy(user.id, "read", doc) is True
    assert await store.put_user_policy(user.id, "all", "{}") is True
    assert await store.put_user_policy(user.id, "read", doc + " ") is True  # replaced
    got = await store.user_by_access_key(ak(user))
    assert got.policies == (("all", "{}"), ("read", doc + " ")) and got.policy("read") == doc + " "
    assert await store.user_by_id(user.id) == got
    assert await store.put_user_policy(fresh("nobody"), "p", doc) is False
    assert await store.delete_user_policy(user.id, "all") is True
    assert await store.delete_user_policy(user.id, "all") is False
    assert (await store.user_by_id(user.id)).policies == (("read", doc + " "),)
    # a user deleted and created again starts without the old policies
    assert await store.delete_user(user.id) is True
    await store.create_user(user)
    assert (await store.user_by_id(user.id)).policies == ()


async def test_concurrent_access_key_changes_lose_nothing(store: MetaStore) -> None:
    user = person("u", "U", "s")
    await store.create_user(user)
    keys = [AccessKey(fresh("AK"), f"secret-{i}", ACTIVE, float(i)) for i in range(6)]
    async with trio.open_nursery() as nursery:
        for key in keys:
            nursery.start_soon(store.add_access_key, user.id, key)
        for i in range(4):
            nursery.start_soon(store.put_user_policy, user.id, f"p{i}", "{}")
    got = await store.user_by_id(user.id)
    assert set(got.keys) == {user.keys[0], *keys}
    assert [n for n, _ in got.policies] == ["p0", "p1", "p2", "p3"]
    async with trio.open_nursery() as nursery:
        for key in keys[:3]:
            nursery.start_soon(store.delete_access_key, user.id, key.access_key)
        for key in keys[3:]:
            nursery.start_soon(store.set_access_key_status, user.id, key.access_key, INACTIVE)
    got = await store.user_by_id(user.id)
    assert set(got.keys) == {user.keys[0], *(attrs.evolve(k, status=INACTIVE) for k in keys[3:])}
    for key in keys[:3]:
        assert await store.user_by_access_key(key.access_key) is None


# -- buckets --


async def test_buckets(store: MetaStore) -> None:
    mine = fresh("mine")
    names = sorted([f"{mine}-b", f"{mine}-a", f"{mine}-c"])
    other = fresh("other")
    for n in [names[1], names[2], names[0]]:
        await store.create_bucket(Bucket(n, mine, 1000.5, region="eu-west-1", acl="acl-x"))
    await store.create_bucket(Bucket(f"{mine}-z", other, 2000.0))

    got = await store.get_bucket(names[0])
    assert got is not None and attrs.evolve(got, id="") == Bucket(names[0], mine, 1000.5, region="eu-west-1",
                                                                  acl="acl-x", id="")
    assert got.id and got.id != (await store.get_bucket(names[1])).id  # each bucket has an identity of its own
    assert await store.get_bucket(fresh()) is None
    assert [b.name for b in await store.list_buckets(mine)] == names
    assert [b.name for b in await store.list_buckets(other)] == [f"{mine}-z"]
    everyone = [b.name for b in await store.list_buckets()]
    assert everyone == sorted(everyone)
    assert set(names) | {f"{mine}-z"} <= set(everyone)


async def test_create_bucket_taken(store: MetaStore) -> None:
    name = await new_bucket(store, owner="first")
    current = await store.get_bucket(name)
    assert current is not None
    with pytest.raises(BucketAlreadyExists) as info:
        await store.create_bucket(Bucket(name, "second", time.time()))
    assert info.value.name == name and info.value.owner_id == "first"
    with pytest.raises(BucketAlreadyExists) as info:
        await store.create_bucket(Bucket(name, "first", time.time()))
    assert info.value.owner_id == "first"
    assert await store.get_bucket(name) == current  # unchanged, its identity included


async def test_update_bucket(store: MetaStore) -> None:
    name = await new_bucket(store)
    before = await store.get_bucket(name)
    assert before is not None
    await store.update_bucket(attrs.evolve(before, acl="public-read"))
    assert await store.get_bucket(name) == attrs.evolve(before, acl="public-read")
    tagged = attrs.evolve(before, tags=(("team", "ünï"), ("empty", "")), cors="[]")
    await store.update_bucket(tagged)
    assert await store.get_bucket(name) == tagged
    assert [b.tags for b in await store.list_buckets() if b.name == name] == [tagged.tags]
    await store.update_bucket(attrs.evolve(tagged, tags=()))
    assert (await store.get_bucket(name)).tags == ()
    guarded = attrs.evolve(tagged, tags=(), policy='{"Statement": []}', public_access='[true, false, true, true]',
                           ownership="BucketOwnerEnforced", encryption='{"alg": "AES256"}')
    await store.update_bucket(guarded)
    assert await store.get_bucket(name) == guarded
    assert [b for b in await store.list_buckets() if b.name == name] == [guarded]
    created = Bucket(fresh(), OWNER, time.time(), policy="{}", public_access="[]", ownership="ObjectWriter")
    await store.create_bucket(created)
    assert await store.get_bucket(created.name) == created
    with pytest.raises(NoSuchBucket):
        await store.update_bucket(Bucket(fresh(), OWNER, time.time(), acl="x"))


async def test_delete_bucket(store: MetaStore) -> None:
    with pytest.raises(NoSuchBucket):
        await store.delete_bucket(fresh())

    name = await new_bucket(store)
    await store.put_object(version(name, "k"))
    with pytest.raises(BucketNotEmpty):
        await store.delete_bucket(name)
    await store.delete_object(name, "k")

    upload_id = fresh("up")
    await store.create_upload(Upload(name, "k", upload_id, time.time(), OWNER))
    await store.delete_bucket(name)  # uploads in progress do not keep a bucket: they go with it
    assert await store.get_upload(name, upload_id) is None
    assert await store.get_bucket(name) is None
    with pytest.raises(NoSuchBucket):
        await store.delete_bucket(name)
    with pytest.raises(NoSuchBucket):
        await store.put_object(version(name, "k"))


# -- objects --


async def test_object_round_trip(store: MetaStore) -> None:
    bucket = await new_bucket(store)
    key = "dir/ünï©ødé 🦀/\U0010ffff key"
    obj = ObjectVersion(
        bucket, key, "null", 12345, "0123456789abcdef0123456789abcdef-3", 1700000000.123456, OWNER,
        manifest=(ChunkRef(b"\x00" * 16, 5, 0, ()), ChunkRef(b"\xff" * 16, 12340, 0xFFFFFFFF, ("a", "b", "c"))),
        content_type="text/plain; charset=utf-8",
        headers=(("content-encoding", "gzip"), ("cache-control", "no-cache")),
        user_meta=(("ñame", "välue 🦀"), ("empty", "")),
        checksums=(("CRC32", "AAAAAA=="),),
        acl="<acl/>",
        tags=(("t", "v"), ("t2", "")),
        parts=(5, 12340),
    )
    assert (await store.put_object(obj)).replaced is None
    assert await store.get_object(bucket, key) == obj
    assert await store.get_object(bucket, key + "x") is None
    assert await store.get_object(fresh(), key) is None
    assert (await store.scan_objects(bucket)).objects == (obj,)
    assert await store.count_objects(bucket) == 1


async def test_bucket_usage_follows_puts_overwrites_and_deletes(store: MetaStore) -> None:
    bucket, neighbour = await new_bucket(store), await new_bucket(store)
    assert await store.bucket_usage(bucket) == (0, 0)
    sizes = {f"k{i}": size for i, size in enumerate([0, 1, 100, 5 << 30])}  # a 5 GiB object counts in full
    for key, size in sizes.items():
        await store.put_object(version(bucket, key, manifest=(), size=size))
    await store.put_object(version(neighbour, "k0", manifest=(), size=7))
    assert await store.bucket_usage(bucket) == (4, sum(sizes.values()))
    await store.put_object(version(bucket, "k2", manifest=(), size=10))  # an overwrite replaces the size
    assert await store.bucket_usage(bucket) == (4, sum(sizes.values()) - 100 + 10)
    await store.delete_object(bucket, "k3")
    assert await store.bucket_usage(bucket) == (3, 11)
    assert await store.bucket_usage(neighbour) == (1, 7)
    await store.ping()  # reachable


async def test_put_object_replaces_and_queues_gc(store: MetaStore) -> None:
    bucket = await new_bucket(store)
    first = version(bucket, "k", manifest=chunks(3, ("x1", "x2")))
    second = version(bucket, "k")
    assert (await store.put_object(first)).replaced is None
    assert not (await gc_ids(store)).keys() & ids(first.manifest)

    t0 = time.time()
    assert (await store.put_object(second, gc_delay=1000.0)).replaced == first
    assert await store.get_object(bucket, "k") == second
    assert not (await gc_ids(store, now=t0 + 900)).keys() & ids(first.manifest)
    due = {e.chunk_id: e for e in await store.due_gc(t0 + 1100, limit=100_000)}
    for ref in first.manifest:
        assert due[ref.chunk_id].agents == ("x1", "x2")
        assert t0 + 999 <= due[ref.chunk_id].not_before <= time.time() + 1001
    assert not due.keys() & ids(second.manifest)


async def test_put_object_missing_bucket(store: MetaStore) -> None:
    intent = await new_intent(store)
    with pytest.raises(NoSuchBucket):
        await store.put_object(version(fresh(), "k"), intent_id=intent.intent_id)
    assert intent.intent_id in await intent_ids(store)


async def test_put_object_drops_intent_with_gc_in_one_step(store: MetaStore) -> None:
    bucket = await new_bucket(store)
    old = version(bucket, "k")
    await store.put_object(old)
    intent = await new_intent(store, bucket, "k")
    other = await new_intent(store, bucket, "k")
    new = version(bucket, "k", manifest=tuple(
        ChunkRef(intent.intent_id + i.to_bytes(4, "big"), 10, 0, ("a1",)) for i in range(3)))
    assert (await store.put_object(new, intent_id=intent.intent_id)).replaced == old
    # all three effects are visible together
    assert await store.get_object(bucket, "k") == new
    assert intent.intent_id not in await intent_ids(store)
    assert ids(old.manifest) <= (await gc_ids(store)).keys()
    assert other.intent_id in await intent_ids(store)  # only the named intent goes


async def test_if_none_match(store: MetaStore) -> None:
    bucket = await new_bucket(store)
    first = version(bucket, "k")
    assert (await store.put_object(first, if_none_match=("*",))).replaced is None
    intent = await new_intent(store, bucket, "k")
    with pytest.raises(PreconditionFailed):
        await store.put_object(version(bucket, "k"), if_none_match=("*",), intent_id=intent.intent_id)
    assert await store.get_object(bucket, "k") == first
    assert not (await gc_ids(store)).keys() & ids(first.manifest)
    assert intent.intent_id in await intent_ids(store)


async def test_if_match(store: MetaStore) -> None:
    bucket = await new_bucket(store)
    with pytest.raises(PreconditionFailed):
        await store.put_object(version(bucket, "k"), if_match=("0" * 32,))
    assert await store.get_object(bucket, "k") is None

    first = version(bucket, "k")
    await store.put_object(first)
    intent = await new_intent(store, bucket, "k")
    with pytest.raises(PreconditionFailed):
        await store.put_object(version(bucket, "k"), if_match=("f" * 32,), intent_id=intent.intent_id)
    assert await store.get_object(bucket, "k") == first
    assert not (await gc_ids(store)).keys() & ids(first.manifest)
    assert intent.intent_id in await intent_ids(store)

    second = version(bucket, "k")
    assert (await store.put_object(second, if_match=(first.etag,), intent_id=intent.intent_id)).replaced == first
    assert await store.get_object(bucket, "k") == second
    assert ids(first.manifest) <= (await gc_ids(store)).keys()
    assert intent.intent_id not in await intent_ids(store)
    # both conditions at once can never hold: a key cannot both exist and not exist
    with pytest.raises(PreconditionFailed):
        await store.put_object(version(bucket, "k"), if_match=(second.etag,), if_none_match=("*",))
    assert await store.get_object(bucket, "k") == second


async def test_condition_lists_and_wildcards(store: MetaStore) -> None:
    """If-Match / If-None-Match as HTTP has them: lists of ETags, and '*'."""
    bucket = await new_bucket(store)
    with pytest.raises(PreconditionFailed):  # If-Match: * needs the key to exist
        await store.put_object(version(bucket, "k"), if_match=("*",))
    first = version(bucket, "k")
    await store.put_object(first, if_none_match=("0" * 32,))  # an absent key matches no ETag: proceeds
    second = version(bucket, "k")
    assert (await store.put_object(second, if_match=("*",))).replaced == first  # exists: proceeds
    third = version(bucket, "k")
    assert (await store.put_object(third, if_match=("a" * 32, second.etag))).replaced == second  # one of the list
    with pytest.raises(PreconditionFailed):
        await store.put_object(version(bucket, "k"), if_none_match=("b" * 32, third.etag))
    fourth = version(bucket, "k")
    assert (await store.put_object(fourth, if_none_match=("b" * 32, second.etag))).replaced == third  # none matches
    assert await store.get_object(bucket, "k") == fourth


async def test_writes_are_tied_to_the_bucket_identity(store: MetaStore) -> None:
    """A write that read the bucket when it began does not land in a bucket of the same name made since."""
    name = fresh()
    old = Bucket(name, OWNER, time.time())
    await store.create_bucket(old)
    stale = await store.get_bucket(name)
    assert stale is not None
    await store.put_object(version(name, "k"), bucket_id=stale.id)
    await store.delete_object(name, "k")
    await store.delete_bucket(name)
    await store.create_bucket(Bucket(name, "someone-else", time.time()))
    with pytest.raises(NoSuchBucket):
        await store.put_object(version(name, "k"), bucket_id=stale.id)
    with pytest.raises(NoSuchBucket):
        await store.create_upload(upload(name, "k"), bucket_id=stale.id)
    with pytest.raises(NoSuchBucket):
        await store.update_bucket(attrs.evolve(stale, acl="stale"))
    current = await store.get_bucket(name)
    assert current is not None and current.owner_id == "someone-else" and current.acl == ""
    await store.put_object(version(name, "mine"), bucket_id=current.id)
    assert (await store.delete_object(name, "mine", bucket_id=stale.id)).removed is None  # not that bucket's key
    assert await store.get_object(name, "mine") is not None
    assert (await store.scan_objects(name)).objects[0].key == "mine"


async def test_delete_bucket_aborts_its_uploads(store: MetaStore) -> None:
    bucket = await new_bucket(store)
    up = upload(bucket, "k")
    await store.create_upload(up)
    p = part(up.upload_id, 1, 2)
    await store.put_part(p)
    await store.delete_bucket(bucket)
    assert await store.get_bucket(bucket) is None
    assert await store.get_upload(bucket, up.upload_id) is None
    assert ids(p.manifest) <= (await gc_ids(store)).keys()
    with pytest.raises(NoSuchUpload):
        await store.put_part(part(up.upload_id, 2))


async def test_completed_upload_record(store: MetaStore) -> None:
    bucket = await new_bucket(store)
    up = upload(bucket, "k", checksum_algorithm="CRC32:COMPOSITE")
    await store.create_upload(up)
    p = part(up.upload_id, 1)
    await store.put_part(p)
    obj = version(bucket, "k", manifest=p.manifest, etag="e" * 32 + "-1", checksums=(("CRC32", "AAAA-1"),))
    await store.complete_upload(up.upload_id, obj, [1])
    done = await store.completed_upload(bucket, up.upload_id)
    assert done is not None
    assert (done.upload_id, done.bucket, done.key, done.etag, done.checksums, done.checksum_algorithm) == (
        up.upload_id, bucket, "k", obj.etag, obj.checksums, "CRC32:COMPOSITE")
    assert await store.completed_upload(bucket + "x", up.upload_id) is None
    assert await store.get_upload(bucket, up.upload_id) is None
    assert await store.prune_completed(done.completed) == 0  # strictly older only
    assert await store.prune_completed(done.completed + 1) >= 1
    assert await store.completed_upload(bucket, up.upload_id) is None


async def test_conditional_writes_race(store: MetaStore) -> None:
    """Of many concurrent create-if-absent writes exactly one wins; of many if-match writes on one ETag, one wins."""
    bucket = await new_bucket(store)
    wins: list[ObjectVersion] = []

    async def create(i: int) -> None:
        obj = version(bucket, "k", etag=f"{i:032x}")
        try:
            await store.put_object(obj, if_none_match=("*",))
            wins.append(obj)
        except PreconditionFailed:
            pass

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(create, i)
    assert len(wins) == 1 and await store.get_object(bucket, "k") == wins[0]

    base = wins[0].etag
    wins.clear()

    async def swap(i: int) -> None:
        obj = version(bucket, "k", etag=f"{i + 100:032x}")
        try:
            assert (await store.put_object(obj, if_match=(base,))).replaced is not None
            wins.append(obj)
        except PreconditionFailed:
            pass

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(swap, i)
    assert len(wins) == 1 and await store.get_object(bucket, "k") == wins[0]


async def test_delete_object(store: MetaStore) -> None:
    bucket = await new_bucket(store)
    obj = version(bucket, "k")
    await store.put_object(obj)
    t0 = time.time()
    assert (await store.delete_object(bucket, "k", gc_delay=500.0)).removed == obj
    assert await store.get_object(bucket, "k") is None
    assert await store.count_objects(bucket) == 0
    assert not (await gc_ids(store, now=t0 + 400)).keys() & ids(obj.manifest)
    assert ids(obj.manifest) <= (await gc_ids(store, now=t0 + 600)).keys()
    assert (await store.delete_object(bucket, "k")).removed is None
    assert (await store.delete_object(bucket, "never")).removed is None


async def test_update_object(store: MetaStore) -> None:
    bucket = await new_bucket(store)
    obj = version(bucket, "k", acl="old", tags=(("a", "1"),))
    await store.put_object(obj)
    assert await store.update_object(attrs.evolve(obj, acl="new", tags=(("b", "2"),)))
    assert await store.get_object(bucket, "k") == attrs.evolve(obj, acl="new", tags=(("b", "2"),))
    # only the metadata changes, never the body
    assert await store.update_object(attrs.evolve(obj, acl="newer", manifest=chunks(1), size=1))
    got = await store.get_object(bucket, "k")
    assert got is not None and got.acl == "newer" and got.manifest == obj.manifest and got.size == obj.size

    assert not await store.update_object(attrs.evolve(obj, version_id="other", acl="x"))
    assert not await store.update_object(attrs.evolve(obj, key="missing", acl="x"))
    got = await store.get_object(bucket, "k")
    assert got is not None and got.acl == "newer"


async def test_update_object_after_replacement(store: MetaStore) -> None:
    """Unversioned keys all have version "null": a version read before a replacement is still not current."""
    bucket = await new_bucket(store)
    first = version(bucket, "k")
    await store.put_object(first)
    second = version(bucket, "k")
    await store.put_object(second)
    assert not await store.update_object(attrs.evolve(first, acl="stale"))
    assert await store.get_object(bucket, "k") == second


async def test_copy_onto_itself_keeps_chunks(store: MetaStore) -> None:
    """A new version sharing chunks with the one it replaces (copy onto itself) queues none of them."""
    bucket = await new_bucket(store)
    first = version(bucket, "k", manifest=chunks(3))
    await store.put_object(first)
    shared = first.manifest[:2] + chunks(1)
    second = version(bucket, "k", manifest=shared, user_meta=(("m", "2"),))
    assert (await store.put_object(second)).replaced == first
    gc = (await gc_ids(store)).keys()
    assert gc & ids(first.manifest) == {first.manifest[2].chunk_id}


async def test_commit_takes_chunks_out_of_gc(store: MetaStore) -> None:
    """A committed manifest references its chunks: a pending GC entry for one of them is cancelled."""
    bucket = await new_bucket(store)
    refs = chunks(2)
    await store.enqueue_gc([GcEntry(r.chunk_id, r.agents, time.time() + 1000) for r in refs])
    await store.put_object(version(bucket, "k", manifest=refs))
    assert not (await gc_ids(store)).keys() & ids(refs)


async def test_scan_objects(store: MetaStore) -> None:
    bucket = await new_bucket(store)
    neighbour = bucket + "x"
    await store.create_bucket(Bucket(neighbour, OWNER, time.time()))
    await store.put_object(version(neighbour, "a/1"))
    # UTF-16 (and so Java/JavaScript string) order would put U+FFFF after U+10000; UTF-8 byte order does not.
    keys = ["a/1", "a/2", "a/2/x", "a0", "a\x7f", "a\u00e9", "a\ud7ff", "a\ue000", "a\uffff", "a\U00010000",
            "a\U0010ffff", "a\U0010ffffz", "b", "\U0010ffff"]
    for k in random.sample(keys, len(keys)):
        await store.put_object(version(bucket, k))
    order = sorted(keys, key=lambda k: k.encode())
    assert order.index("a\uffff") < order.index("a\U00010000")

    async def scan(**kw: Any) -> tuple[list[str], bool]:
        page = await store.scan_objects(bucket, **kw)
        assert all(o.bucket == bucket for o in page.objects)
        return [o.key for o in page.objects], page.truncated

    assert await scan() == (order, False)
    assert await scan(limit=3) == (order[:3], True)
    assert await scan(limit=len(order)) == (order, False)
    assert await scan(limit=0) == ([], True)
    assert await scan(prefix="a/") == (["a/1", "a/2", "a/2/x"], False)
    assert await scan(prefix="a/", limit=2) == (["a/1", "a/2"], True)
    assert await scan(prefix="a/2") == (["a/2", "a/2/x"], False)
    assert await scan(prefix="a/2", start="a/2", inclusive=False) == (["a/2/x"], False)
    assert await scan(prefix="a/", start="a/2") == (["a/2", "a/2/x"], False)
    assert await scan(prefix="a/", start="a/2", inclusive=False) == (["a/2/x"], False)
    assert await scan(prefix="a/", start="a") == (["a/1", "a/2", "a/2/x"], False)
    assert await scan(prefix="a/", start="a0") == ([], False)
    assert await scan(prefix="a\ud7ff") == (["a\ud7ff"], False)
    assert await scan(prefix="a\U0010ffff") == (["a\U0010ffff", "a\U0010ffffz"], False)
    assert await scan(prefix="\U0010ffff") == (["\U0010ffff"], False)
    assert await scan(prefix="c") == ([], False)
    assert await scan(start="b") == (["b", "\U0010ffff"], False)
    assert await scan(start="b", inclusive=False) == (["\U0010ffff"], False)
    assert await scan(start="\U0010ffff", inclusive=False) == ([], False)

    # resuming after the last key of each page walks the whole bucket
    seen, start, inclusive = [], "", True
    while True:
        got, more = await scan(start=start, inclusive=inclusive, limit=4)
        seen += got
        if not more:
            break
        start, inclusive = got[-1], False
    assert seen == order
    assert await store.count_objects(bucket) == len(keys)
    assert await store.count_objects(neighbour) == 1


# -- multipart --


def upload(bucket: str, key: str, initiated: float | None = None, upload_id: str | None = None,
           **kw: Any) -> Upload:
    return Upload(bucket, key, upload_id or fresh("up"), time.time() if initiated is None else initiated, OWNER,
                  **kw)


def part(upload_id: str, number: int, n_chunks: int = 1) -> Part:
    manifest = chunks(n_chunks)
    return Part(upload_id, number, sum(c.size for c in manifest), os.urandom(16).hex(), time.time(), manifest)


async def test_create_and_get_upload(store: MetaStore) -> None:
    bucket = await new_bucket(store)
    up = upload(bucket, "dir/ключ", content_type="text/x", headers=(("cache-control", "x"),),
                user_meta=(("m", "v"),), acl="<acl/>", tags=(("t", "1"),), checksum_algorithm="CRC32C")
    await store.create_upload(up)
    assert await store.get_upload(bucket, up.upload_id) == up
    assert await store.get_upload(bucket + "-other", up.upload_id) is None
    assert await store.get_upload(bucket, "nope") is None
    with pytest.raises(NoSuchBucket):
        await store.create_upload(upload(fresh(), "k"))


async def test_list_uploads(store: MetaStore) -> None:
    bucket = await new_bucket(store)
    other = await new_bucket(store)
    await store.create_upload(upload(other, "a"))
    made = [
        upload(bucket, "a", 30.0, "u3"),
        upload(bucket, "a", 10.0, "u9"),
        upload(bucket, "a", 10.0, "u1"),
        upload(bucket, "a/x", 5.0, "u5"),
        upload(bucket, "b", 1.0, "u2"),
        upload(bucket, "\U00010000", 1.0, "u7"),
        upload(bucket, "\uffff", 1.0, "u8"),
    ]
    for up in made:
        await store.create_upload(up)
    order = sorted(made, key=lambda u: (u.key.encode(), u.initiated, u.upload_id))
    assert [u.upload_id for u in order] == ["u1", "u9", "u3", "u5", "u2", "u8", "u7"]

    async def ls(**kw: Any) -> tuple[list[str], bool]:
        found, more = await store.list_uploads(bucket, **kw)
        return [u.upload_id for u in found], more

    assert await ls() == (["u1", "u9", "u3", "u5", "u2", "u8", "u7"], False)
    assert (await store.list_uploads(bucket))[0] == order
    assert await ls(limit=2) == (["u1", "u9"], True)
    assert await ls(limit=7) == ([u.upload_id for u in order], False)
    assert await ls(prefix="a") == (["u1", "u9", "u3", "u5"], False)
    assert await ls(prefix="a/") == (["u5"], False)
    assert await ls(prefix="zz") == ([], False)
    assert await ls(key_marker="a") == (["u5", "u2", "u8", "u7"], False)
    assert await ls(key_marker="a", upload_id_marker="u1") == (["u9", "u3", "u5", "u2", "u8", "u7"], False)
    assert await ls(key_marker="a", upload_id_marker="u3") == (["u9", "u5", "u2", "u8", "u7"], False)
    assert await ls(key_marker="a", upload_id_marker="u9") == (["u5", "u2", "u8", "u7"], False)
    assert await ls(key_marker="a/x", limit=1) == (["u2"], True)
    assert await ls(key_marker="\uffff") == (["u7"], False)
    assert await ls(prefix="a", key_marker="a", upload_id_marker="u3", limit=1) == (["u9"], True)


async def test_parts(store: MetaStore) -> None:
    bucket = await new_bucket(store)
    up = upload(bucket, "k")
    await store.create_upload(up)
    p1, p2, p3 = part(up.upload_id, 1, 2), part(up.upload_id, 2), part(up.upload_id, 10000)
    for p in (p3, p1, p2):
        assert await store.put_part(p) is None
    assert await store.list_parts(up.upload_id) == ([p1, p2, p3], False)
    assert await store.list_parts(up.upload_id, limit=2) == ([p1, p2], True)
    assert await store.list_parts(up.upload_id, marker=1) == ([p2, p3], False)
    assert await store.list_parts(up.upload_id, marker=2, limit=1) == ([p3], False)
    assert await store.list_parts(up.upload_id, marker=10000) == ([], False)

    p1b = part(up.upload_id, 1)
    t0 = time.time()
    assert await store.put_part(p1b, gc_delay=100.0) == p1
    assert (await store.list_parts(up.upload_id))[0] == [p1b, p2, p3]
    assert not (await gc_ids(store, now=t0 + 50)).keys() & ids(p1.manifest)
    assert ids(p1.manifest) <= (await gc_ids(store, now=t0 + 150)).keys()
    assert not (await gc_ids(store)).keys() & ids(p1b.manifest + p2.manifest + p3.manifest)

    with pytest.raises(NoSuchUpload):
        await store.put_part(part("no-such-upload", 1))
    with pytest.raises(NoSuchUpload):
        await store.list_parts("no-such-upload")


async def test_put_part_drops_intent(store: MetaStore) -> None:
    bucket = await new_bucket(store)
    up = upload(bucket, "k")
    await store.create_upload(up)
    intent = await new_intent(store, bucket, "k")
    await store.put_part(part(up.upload_id, 1), intent_id=intent.intent_id)
    assert intent.intent_id not in await intent_ids(store)


async def test_complete_upload(store: MetaStore) -> None:
    bucket = await new_bucket(store)
    old = version(bucket, "k")
    await store.put_object(old)
    up = upload(bucket, "k")
    await store.create_upload(up)
    parts = [part(up.upload_id, n, 2) for n in (1, 2, 3, 4)]
    for p in parts:
        await store.put_part(p)
    used = [parts[0], parts[2]]
    obj = version(bucket, "k", manifest=used[0].manifest + used[1].manifest,
                  parts=tuple(p.size for p in used), etag="abc-2")
    t0 = time.time()
    assert (await store.complete_upload(up.upload_id, obj, [1, 3], gc_delay=100.0)).replaced == old
    assert await store.get_object(bucket, "k") == obj
    assert await store.get_upload(bucket, up.upload_id) is None
    assert await store.list_uploads(bucket) == ([], False)
    with pytest.raises(NoSuchUpload):
        await store.list_parts(up.upload_id)

    unused = ids(parts[1].manifest + parts[3].manifest)
    assert not (await gc_ids(store, now=t0 + 50)).keys() & (unused | ids(old.manifest))
    gc = await gc_ids(store, now=t0 + 150)
    assert unused | ids(old.manifest) <= gc.keys()
    assert not gc.keys() & ids(obj.manifest)
    assert all(gc[c] == 1 for c in unused | ids(old.manifest))

    with pytest.raises(NoSuchUpload):
        await store.complete_upload(up.upload_id, obj, [1, 3])


async def test_complete_upload_wrong_key_or_missing(store: MetaStore) -> None:
    bucket = await new_bucket(store)
    up = upload(bucket, "k")
    await store.create_upload(up)
    p = part(up.upload_id, 1)
    await store.put_part(p)
    with pytest.raises(NoSuchUpload):
        await store.complete_upload(up.upload_id, version(bucket, "other", manifest=p.manifest), [1])
    with pytest.raises(NoSuchUpload):
        await store.complete_upload("no-such-upload", version(bucket, "k", manifest=p.manifest), [1])
    assert await store.get_object(bucket, "other") is None
    assert await store.get_upload(bucket, up.upload_id) == up
    assert await store.list_parts(up.upload_id) == ([p], False)


async def test_complete_upload_after_part_replaced(store: MetaStore) -> None:
    """A used part replaced between reading it and completing: the committed chunks stay, the others go."""
    bucket = await new_bucket(store)
    up = upload(bucket, "k")
    await store.create_upload(up)
    v1 = part(up.upload_id, 1)
    await store.put_part(v1)
    read = (await store.list_parts(up.upload_id))[0]
    v2 = part(up.upload_id, 1)
    await store.put_part(v2)  # queues v1's chunks
    obj = version(bucket, "k", manifest=read[0].manifest)
    await store.complete_upload(up.upload_id, obj, [1])
    gc = (await gc_ids(store)).keys()
    assert not gc & ids(v1.manifest)
    assert ids(v2.manifest) <= gc


async def test_abort_upload(store: MetaStore) -> None:
    bucket = await new_bucket(store)
    up = upload(bucket, "k")
    await store.create_upload(up)
    parts = [part(up.upload_id, n, 2) for n in (1, 2)]
    for p in parts:
        await store.put_part(p)
    t0 = time.time()
    await store.abort_upload(up.upload_id, gc_delay=100.0)
    assert await store.get_upload(bucket, up.upload_id) is None
    all_chunks = ids(parts[0].manifest + parts[1].manifest)
    assert not (await gc_ids(store, now=t0 + 50)).keys() & all_chunks
    assert all_chunks <= (await gc_ids(store, now=t0 + 150)).keys()
    with pytest.raises(NoSuchUpload):
        await store.abort_upload(up.upload_id)
    with pytest.raises(NoSuchUpload):
        await store.put_part(part(up.upload_id, 3))
    assert await store.get_object(bucket, "k") is None
    await store.delete_bucket(bucket)


# -- intents --


async def test_intents(store: MetaStore) -> None:
    base = 1_000_000.0 + random.random()
    made = [await new_intent(store, "bkt", f"k{i}", created=base + i) for i in range(5)]
    made.append(await new_intent(store, created=base + 0.5))  # no bucket/key
    got = [i for i in await store.stale_intents(base + 3, limit=1000) if i in made]
    assert got == [made[0], made[5], made[1], made[2]]  # created < threshold, oldest first
    assert [i for i in await store.stale_intents(base + 1000) if i in made] == sorted(made, key=lambda i: i.created)
    assert not [i for i in await store.stale_intents(base, limit=1000) if i in made]  # strictly older
    assert len(await store.stale_intents(FAR, limit=2)) == 2

    await store.drop_intent(made[0].intent_id)
    await store.drop_intent(made[0].intent_id)  # dropping twice is fine
    await store.drop_intent(os.urandom(12))
    assert made[0].intent_id not in await intent_ids(store)
    assert {i.intent_id for i in made[1:]} <= await intent_ids(store)


async def test_intent_paging_cursor(store: MetaStore) -> None:
    base = 2_000_000.0 + random.random()
    made = [await new_intent(store, "bkt", f"k{i}", created=base + i // 2) for i in range(7)]  # renewed ties
    pages, after = [], None
    while True:
        page = await store.stale_intents(base + 100, limit=2, after=after)
        pages += [i for i in page if i in made]
        if len(page) < 2:
            break
        after = (page[-1].renewed, page[-1].intent_id)
    assert pages == sorted(made, key=lambda i: (i.renewed, i.intent_id))


async def test_renew_intent(store: MetaStore) -> None:
    intent = await new_intent(store, "bkt", "k", created=1000.0)
    assert intent.renewed == 1000.0 and intent.heartbeat == 0 and not intent.claimed
    assert await store.renew_intent(intent.intent_id, 5000.0)
    assert await store.renew_intent(intent.intent_id, 6000.0)
    (got,) = [i for i in await store.stale_intents(FAR, limit=100_000) if i.intent_id == intent.intent_id]
    assert (got.created, got.renewed, got.heartbeat, got.claimed) == (1000.0, 6000.0, 2, False)
    assert intent.intent_id not in {i.intent_id for i in await store.stale_intents(6000.0, limit=100_000)}
    assert not await store.renew_intent(os.urandom(12), 1.0)  # gone


async def test_claim_intent_against_renewal(store: MetaStore) -> None:
    intent = await new_intent(store, "bkt", "k", created=1000.0)
    assert await store.renew_intent(intent.intent_id, 2000.0)
    assert not await store.claim_intent(intent.intent_id, 0)  # renewed since heartbeat 0 was seen: alive
    assert await store.claim_intent(intent.intent_id, 1)
    assert await store.claim_intent(intent.intent_id, 1)  # already claimed: a collection that did not finish
    assert await store.claim_intent(intent.intent_id, 7)
    assert not await store.renew_intent(intent.intent_id, 3000.0)  # the upload learns it lost its intent
    (got,) = [i for i in await store.stale_intents(1.0, limit=100_000) if i.intent_id == intent.intent_id]
    assert got.claimed  # a candidate whatever the threshold
    assert not await store.claim_intent(os.urandom(12), 0)
    await store.drop_intent(intent.intent_id)
    assert not await store.claim_intent(intent.intent_id, 1)


async def test_commit_with_lost_or_claimed_intent_changes_nothing(store: MetaStore) -> None:
    bucket = await new_bucket(store)
    old = version(bucket, "k")
    await store.put_object(old)
    before = await gc_ids(store)
    claimed = await new_intent(store, bucket, "k")
    assert await store.claim_intent(claimed.intent_id, 0)
    for intent_id in (claimed.intent_id, os.urandom(12)):
        new = version(bucket, "k", manifest=(ChunkRef(intent_id + b"\0\0\0\0", 10, 0, ("a1",)),))
        with pytest.raises(IntentLost):
            await store.put_object(new, intent_id=intent_id)
        with pytest.raises(IntentLost):
            await store.put_object(version(bucket, "other"), intent_id=intent_id)
    assert await store.get_object(bucket, "k") == old
    assert await store.get_object(bucket, "other") is None
    assert await gc_ids(store) == before
    up = upload(bucket, "mp")
    await store.create_upload(up)
    with pytest.raises(IntentLost):
        await store.put_part(part(up.upload_id, 1), intent_id=claimed.intent_id)
    assert await store.list_parts(up.upload_id) == ([], False)
    assert claimed.intent_id in await intent_ids(store)  # still there for the collector to finish


# -- GC queue --


async def test_gc_queue(store: MetaStore) -> None:
    now = time.time()
    entries = [GcEntry(os.urandom(16), ("a1",), now - 10), GcEntry(os.urandom(16), ("a1", "a2"), now + 5),
               GcEntry(os.urandom(16), (), now + 100)]
    mine = {e.chunk_id for e in entries}
    await store.enqueue_gc(entries)
    await store.enqueue_gc(entries[:2])  # idempotent on chunk id
    await store.enqueue_gc([])

    def own(found: list[GcEntry]) -> list[GcEntry]:
        return [e for e in found if e.chunk_id in mine]

    assert own(await store.due_gc(now, limit=100_000)) == [entries[0]]
    assert own(await store.due_gc(now + 5, limit=100_000)) == entries[:2]  # not_before <= now, earliest first
    assert own(await store.due_gc(now + 1000, limit=100_000)) == entries
    assert len(await store.due_gc(FAR, limit=2)) == 2

    await store.done_gc([entries[0].chunk_id, os.urandom(16)])
    await store.done_gc([])
    assert own(await store.due_gc(now + 1000, limit=100_000)) == entries[1:]
    await store.done_gc([e.chunk_id for e in entries])
    assert own(await store.due_gc(FAR, limit=100_000)) == []


# -- atomicity, concurrency, durability --


async def test_cancelled_put_is_all_or_nothing(store: MetaStore) -> None:
    bucket = await new_bucket(store)
    outcomes: Counter[str] = Counter()
    for i, delay in enumerate([0.0, 0.0, 1e-6, 1e-5, 3e-5, 1e-4, 2e-4, 5e-4, 1e-3, 5e-3, 1.0] * 2):
        key = f"k{i}"
        old = version(bucket, key)
        await store.put_object(old)
        intent = await new_intent(store, bucket, key)
        new = version(bucket, key)
        with trio.move_on_after(delay):
            await store.put_object(new, intent_id=intent.intent_id)
        current = await store.get_object(bucket, key)
        gc = (await gc_ids(store)).keys()
        if current == new:
            outcomes["applied"] += 1
            assert intent.intent_id not in await intent_ids(store)
            assert ids(old.manifest) <= gc
        else:
            outcomes["not applied"] += 1
            assert current == old
            assert intent.intent_id in await intent_ids(store)
            assert not ids(old.manifest) & gc
    assert outcomes["applied"] and outcomes["not applied"]


async def _hammer(stores: list[MetaStore], bucket: str, keys: list[str], writers: int, rounds: int) -> tuple[
        list[ObjectVersion], list[ObjectVersion]]:
    """Concurrent put_object/delete_object from ``writers`` tasks over ``stores``; returns (written, replaced)."""
    written: list[ObjectVersion] = []
    replaced: list[ObjectVersion] = []

    async def writer(w: int) -> None:
        rnd = random.Random(w)
        store = stores[w % len(stores)]
        for _ in range(rounds):
            key = rnd.choice(keys)
            if rnd.random() < 0.1:
                old = (await store.delete_object(bucket, key)).removed
            else:
                obj = version(bucket, key, manifest=chunks(rnd.randint(0, 3)))
                written.append(obj)
                old = (await store.put_object(obj)).replaced
            if old is not None:
                replaced.append(old)
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        for w in range(writers):
            nursery.start_soon(writer, w)
    return written, replaced


async def _check_consistent(store: MetaStore, bucket: str, written: list[ObjectVersion],
                            replaced: list[ObjectVersion]) -> None:
    current = list((await store.scan_objects(bucket, limit=10_000)).objects)
    # every version written was either replaced exactly once or is current, never both, never lost
    by_etag = Counter(o.etag for o in replaced + current)
    assert by_etag == Counter(o.etag for o in written)
    assert {o.etag for o in replaced + current} == {o.etag for o in written}
    # and its chunks are either in the GC queue, exactly once, or referenced by a current version
    gc = await gc_ids(store)
    put_chunks = {c for o in written for c in ids(o.manifest)}
    live = {c for o in current for c in ids(o.manifest)}
    dead = {c for o in replaced for c in ids(o.manifest)}
    assert not live & dead
    assert live | dead == put_chunks
    assert {c: gc[c] for c in put_chunks if c in gc} == {c: 1 for c in dead}
    assert await store.count_objects(bucket) == len(current)


async def test_concurrent_writers(store: MetaStore) -> None:
    bucket = await new_bucket(store)
    keys = ["same"] * 4 + [f"k{i}" for i in range(6)]
    written, replaced = await _hammer([store], bucket, keys, writers=30, rounds=8)
    await _check_consistent(store, bucket, written, replaced)


async def test_two_instances_share_data(backend: Backend) -> None:
    """Two stores on the same data, as two node processes: writes of one are seen by the other at once."""
    one, two = await backend.open(), await backend.open()
    try:
        bucket = await new_bucket(one)
        assert await two.get_bucket(bucket) is not None
        with pytest.raises(BucketAlreadyExists):
            await two.create_bucket(Bucket(bucket, "someone", time.time()))
        obj = version(bucket, "k")
        await two.put_object(obj)
        assert await one.get_object(bucket, "k") == obj
        intent = await new_intent(one, bucket, "k2")
        await two.put_object(version(bucket, "k2"), intent_id=intent.intent_id)
        assert intent.intent_id not in await intent_ids(one)

        # both hammer the same keys at once; the history adds up, and both see the same final state
        hammered = await new_bucket(two)
        keys = ["same"] * 3 + [f"k{i}" for i in range(4)]
        written, replaced = await _hammer([one, two], hammered, keys, writers=20, rounds=8)
        await _check_consistent(one, hammered, written, replaced)
        assert await one.scan_objects(hammered, limit=10_000) == await two.scan_objects(hammered, limit=10_000)
    finally:
        await one.aclose()
        await two.aclose()


async def test_users_and_buckets_changed_by_another_instance_are_seen_at_once(backend: Backend) -> None:
    """What a node looks up on every request (the key's user, the bucket) may be cached, but never past a change
    another node acknowledged: read after write holds across instances."""
    one, two = await backend.open(), await backend.open()
    try:
        bucket = await new_bucket(one)
        user = person("u", "U", "secret-u")
        for _ in range(2):  # read twice: cached now, if the backend caches
            assert (await one.get_bucket(bucket)).acl == ""
            assert await one.user_by_access_key(ak(user)) is None
            assert await one.user_by_id(user.id) is None
        await two.create_user(user)
        assert await one.user_by_access_key(ak(user)) == user
        assert await one.user_by_id(user.id) == user
        # a key's status and a user's policies, changed by another instance, are seen at once too
        await two.set_access_key_status(user.id, ak(user), INACTIVE)
        assert (await one.user_by_access_key(ak(user))).keys[0].status == INACTIVE
        await two.put_user_policy(user.id, "p", "{}")
        assert (await one.user_by_id(user.id)).policies == (("p", "{}"),)
        current = await two.get_bucket(bucket)
        await two.update_bucket(attrs.evolve(current, acl="public-read-marker"))
        assert (await one.get_bucket(bucket)).acl == "public-read-marker"
        await two.delete_user(user.id)
        assert await one.user_by_access_key(ak(user)) is None
        await two.delete_bucket(bucket)
        assert await one.get_bucket(bucket) is None
        await two.create_bucket(Bucket(bucket, "another-owner", time.time()))
        again = await one.get_bucket(bucket)
        assert again is not None and again.owner_id == "another-owner" and again.id != current.id
    finally:
        await one.aclose()
        await two.aclose()


async def test_persistence_across_reopen(backend: Backend) -> None:
    store = await backend.open()
    user = attrs.evolve(person("u", "Ü", "sek", "e@x"), policies=(("p", '{"Version": "2012-10-17"}'),))
    try:
        await store.create_user(user)
        bucket = await new_bucket(store)
        obj = version(bucket, "ключ/🦀", user_meta=(("k", "v"),), tags=(("t", "v"),), parts=(1, 2))
        await store.put_object(obj)
        replaced = version(bucket, "gone")
        await store.put_object(replaced)
        await store.put_object(version(bucket, "gone"), gc_delay=50.0)
        up = upload(bucket, "mp")
        await store.create_upload(up)
        p = part(up.upload_id, 7, 3)
        await store.put_part(p)
        intent = await new_intent(store, bucket, "x")
        gc_entry = GcEntry(os.urandom(16), ("z",), 123.0)
        await store.enqueue_gc([gc_entry])
    finally:
        await store.aclose()

    store = await backend.open()
    try:
        assert await store.user_by_access_key(ak(user)) == user
        assert await store.get_bucket(bucket) is not None
        assert await store.get_object(bucket, obj.key) == obj
        assert await store.get_upload(bucket, up.upload_id) == up
        assert await store.list_parts(up.upload_id) == ([p], False)
        assert intent in await store.stale_intents(FAR, limit=100_000)
        due = await store.due_gc(FAR, limit=100_000)
        assert gc_entry in due
        assert ids(replaced.manifest) <= {e.chunk_id for e in due}
        assert [o.key for o in (await store.scan_objects(bucket)).objects] == ["gone", obj.key]
    finally:
        await store.aclose()


# -- listing order: property test against a model --

# Characters at the edges of UTF-8's 1/2/3/4-byte encodings and around the surrogate gap, mostly: random
# characters alone would rarely give keys that share prefixes or end in U+10FFFF.
EDGES = st.sampled_from(["a", "b", "/", "\x00", "\x7f", "\x80", "é", "\u07ff", "\u0800", "\ud7ff", "\ue000",
                         "\uffff", "\U00010000", "\U0010fffe", "\U0010ffff"])
CHAR = st.one_of(EDGES, EDGES, EDGES, st.characters(codec="utf-8"))

def text(min_size: int, max_size: int) -> st.SearchStrategy[str]:
    # not st.text(CHAR): that merges CHAR into one character set and loses the weighting towards EDGES
    return st.lists(CHAR, min_size=min_size, max_size=max_size).map("".join)


KEY = text(1, 5)


@st.composite
def scan_cases(draw: st.DrawFn) -> tuple[set[str], list[tuple[str, str, bool, int]]]:
    # keys share a few stems, so that prefixes and starts fall among them rather than before or after all of them
    stems = draw(st.lists(text(0, 3), min_size=1, max_size=3))
    keys = draw(st.sets(st.tuples(st.sampled_from(stems), text(0, 3)).map("".join).filter(bool), max_size=20))
    pool = sorted(keys)
    bound_choices = [st.just(""), text(0, 3), st.sampled_from(stems),
                     st.tuples(st.sampled_from(stems), CHAR).map("".join)]
    if pool:
        bound_choices.append(st.sampled_from(pool))
        key_prefix = st.sampled_from(pool).flatmap(lambda k: st.integers(0, len(k)).map(lambda n: k[:n]))
        bound_choices += [key_prefix, key_prefix]
    bound = st.one_of(bound_choices)
    queries = draw(st.lists(st.tuples(bound, bound, st.booleans(), st.integers(0, 22)), min_size=1, max_size=4))
    return keys, queries


def model(keys: set[str], prefix: str, start: str, inclusive: bool) -> list[str]:
    b = start.encode()
    return sorted(
        (k for k in keys if k.startswith(prefix) and (k.encode() >= b if inclusive else k.encode() > b)),
        key=lambda k: k.encode("utf-8"),
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=scan_cases())
@example(case=({"a\U0010ffff", "a\U0010ffff\x00", "a\U0010ffffb", "b"}, [("a\U0010ffff", "", True, 5)]))
@example(case=({"\U0010ffff", "\U0010ffff\U0010ffff", "\uffff"}, [("\U0010ffff", "\U0010ffff", False, 1)]))
@example(case=({"a\ud7ff", "a\ud7ffz", "a\ue000", "a\uffff", "a\U00010000"}, [("a\ud7ff", "", True, 9)]))
async def test_scan_matches_model(backend: Backend, case: tuple[set[str], list[tuple[str, str, bool, int]]]) -> None:
    # Trio fixtures do not survive from one example to the next (each runs in its own trio.run): open a store here.
    async with _opened(backend) as store:
        await _check_scan(store, *case)


@contextlib.asynccontextmanager
async def _opened(backend: Backend) -> AsyncIterator[MetaStore]:
    store = await backend.open()
    try:
        yield store
    finally:
        await store.aclose()


async def _check_scan(store: MetaStore, keys: set[str], queries: list[tuple[str, str, bool, int]]) -> None:
    bucket = await new_bucket(store)
    for k in keys:
        await store.put_object(version(bucket, k, manifest=()))
    for prefix, start, inclusive, limit in queries:
        expected = model(keys, prefix, start, inclusive)
        page = await store.scan_objects(bucket, prefix=prefix, start=start, inclusive=inclusive, limit=limit)
        assert [o.key for o in page.objects] == expected[:limit]
        assert page.truncated == (len(expected) > limit)
        # paging by the last key returned reaches exactly the same keys
        if limit:
            seen, s, inc, more = [], start, inclusive, True
            while more:
                page = await store.scan_objects(bucket, prefix=prefix, start=s, inclusive=inc, limit=limit)
                seen += [o.key for o in page.objects]
                more = page.truncated
                if more:
                    s, inc = page.objects[-1].key, False
            assert seen == expected


# -- listings with a delimiter: model, paging, and a cost that follows the page --


def listing_model(keys: set[str], prefix: str, delimiter: str, marker: str) -> list[tuple[str, str]]:
    """Entries ("key", k) / ("prefix", p) above ``marker``, S3's way: sort by UTF-8, keep those under the prefix,
    roll up at the first delimiter after it, drop entries at or below the marker."""
    out: list[tuple[str, str]] = []
    for key in sorted(keys, key=lambda k: k.encode("utf-8")):
        if not key.startswith(prefix):
            continue
        cut = key.find(delimiter, len(prefix)) if delimiter else -1
        entry = ("prefix", key[: cut + len(delimiter)]) if cut >= 0 else ("key", key)
        if entry[1].encode() > marker.encode() and entry not in out:
            out.append(entry)
    return out


def merged(objects: tuple[ObjectVersion, ...], prefixes: tuple[str, ...]) -> list[tuple[str, str]]:
    entries = [("key", o.key) for o in objects] + [("prefix", p) for p in prefixes]
    return sorted(entries, key=lambda e: e[1].encode())


@st.composite
def listing_cases(draw: st.DrawFn) -> tuple[set[str], list[tuple[str, str, str, int]]]:
    stems = draw(st.lists(text(0, 2), min_size=1, max_size=3))
    delim = st.sampled_from(["/", "a", "\U0010ffff", "ab"])
    keys = draw(st.sets(st.tuples(st.sampled_from(stems), text(0, 2), st.sampled_from(["", "/", "a"]), text(0, 2))
                        .map("".join).filter(bool), max_size=25))
    pool = sorted(keys) or [""]
    bound = st.one_of(st.just(""), text(0, 2), st.sampled_from(stems), st.sampled_from(pool),
                      st.sampled_from(pool).map(lambda k: k[: len(k) // 2]))
    queries = draw(st.lists(st.tuples(bound, st.one_of(st.just(""), delim), bound, st.integers(0, 9)),
                            min_size=1, max_size=4))
    return keys, queries


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=listing_cases())
@example(case=({"a/1", "a/2", "a/3", "b", "c/1"}, [("", "/", "", 1), ("", "/", "a/2", 5), ("a", "/", "", 2)]))
@example(case=({"\U0010ffff/x", "\U0010ffff\U0010ffff"}, [("", "\U0010ffff", "", 3)]))
async def test_list_objects_matches_model(backend: Backend, case) -> None:
    async with _opened(backend) as store:
        keys, queries = case
        bucket = await new_bucket(store)
        for k in keys:
            await store.put_object(version(bucket, k, manifest=()))
        for prefix, delimiter, marker, limit in queries:
            expected = listing_model(keys, prefix, delimiter, marker)
            page = await store.list_objects(bucket, prefix=prefix, delimiter=delimiter, marker=marker, limit=limit)
            assert merged(page.objects, page.prefixes) == expected[:limit]
            assert [o.key for o in page.objects] == sorted((o.key for o in page.objects), key=str.encode)
            assert page.truncated == (limit > 0 and len(expected) > limit)  # max-keys=0: not truncated, as S3
            # the cost follows the page: each returned key read twice (index, row), a prefix once, plus the entry
            # that shows truncation and the marker's own prefix
            assert page.rows_read <= 2 * len(page.objects) + len(page.prefixes) + 2
            if limit:  # paging by `last` visits every entry once
                seen, m, more = [], marker, True
                while more:
                    page = await store.list_objects(bucket, prefix=prefix, delimiter=delimiter, marker=m, limit=limit)
                    seen += merged(page.objects, page.prefixes)
                    more, m = page.truncated, page.last
                assert seen == expected


async def test_list_objects_skips_prefixes_whatever_they_hold(store: MetaStore) -> None:
    bucket = await new_bucket(store)
    for p in range(20):
        for k in range(30):
            await store.put_object(version(bucket, f"p{p:02d}/k{k:02d}", manifest=()))
    await store.put_object(version(bucket, "top", manifest=()))
    page = await store.list_objects(bucket, delimiter="/", limit=1000)
    assert page.prefixes == tuple(f"p{p:02d}/" for p in range(20)) and [o.key for o in page.objects] == ["top"]
    assert page.rows_read <= 20 + 2 + 1, page.rows_read  # not 601
    page = await store.list_objects(bucket, delimiter="/", marker="p05/k07", limit=3)
    assert page.prefixes == ("p06/", "p07/", "p08/") and page.truncated and page.last == "p08/"


def upload_model(ups: list[Upload], prefix: str, delimiter: str, key_marker: str, id_marker: str) -> list:
    out: list = []
    for u in sorted(ups, key=lambda u: (u.key.encode(), u.initiated, u.upload_id)):
        if not u.key.startswith(prefix):
            continue
        if id_marker and key_marker:
            if u.key.encode() < key_marker.encode() or (u.key == key_marker and u.upload_id <= id_marker):
                continue
        elif u.key.encode() <= key_marker.encode():
            continue
        cut = u.key.find(delimiter, len(prefix)) if delimiter else -1
        entry = ("prefix", u.key[: cut + len(delimiter)]) if cut >= 0 else ("upload", u.upload_id)
        if entry[0] == "prefix" and (entry[1].encode() <= key_marker.encode() or entry in out):
            continue
        out.append(entry)
    return out


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=st.lists(st.sampled_from(["a", "a/x", "a/y", "b", "b/z/q", "c/", "é/1", "\U00010000"]), max_size=12),
       prefix=st.sampled_from(["", "a", "b/", "é"]), delimiter=st.sampled_from(["", "/"]),
       marker=st.sampled_from([("", ""), ("a", ""), ("a/x", ""), ("b", "up-05"), ("a/x", "up-03")]),
       limit=st.integers(0, 6))
async def test_list_upload_entries_matches_model(backend: Backend, keys, prefix, delimiter, marker, limit) -> None:
    async with _opened(backend) as store:
        bucket = await new_bucket(store)
        token = uuid.uuid4().hex[:8]
        ups = [upload(bucket, k, 100.0 + i, f"up-{i:02d}-{token}") for i, k in enumerate(keys)]
        for u in ups:
            await store.create_upload(u)
        key_marker, id_marker = marker
        expected = upload_model(ups, prefix, delimiter, key_marker, id_marker)
        page = await store.list_upload_entries(bucket, prefix=prefix, delimiter=delimiter, key_marker=key_marker,
                                               upload_id_marker=id_marker, limit=limit)
        entries = [("upload", u.upload_id) for u in page.uploads] + [("prefix", p) for p in page.prefixes]
        assert sorted(entries) == sorted(expected[:limit])
        assert page.truncated == (limit > 0 and len(expected) > limit)
        assert page.rows_read <= len(page.uploads) + len(page.prefixes) + 2


# -- the chunk index --


async def all_index(store: MetaStore, agents: tuple[str, ...] = ("a1", "a2")) -> dict[bytes, Any]:
    """chunk id -> owner, for every chunk on any of ``agents`` (the tests' chunks are on a1 and a2)."""
    out = {}
    for agent in agents:
        after = None
        while True:
            page = await store.chunks_on_agent(agent, after=after, limit=50)
            out.update((o.chunk_id, o) for o in page)
            if len(page) < 50:
                break
            after = page[-1].chunk_id
    return out


async def test_chunk_index_follows_objects(store: MetaStore) -> None:
    bucket = await new_bucket(store)
    first = version(bucket, "k")
    await store.put_object(first)
    for ref in first.manifest:
        owner = await store.chunk_owner(ref.chunk_id)
        assert owner is not None
        assert (owner.bucket, owner.key, owner.upload_id, owner.size, owner.crc32c, owner.agents) == (
            bucket, "k", "", ref.size, ref.crc32c, ref.agents)
    assert await store.referenced([r.chunk_id for r in first.manifest] + [os.urandom(16)]) == ids(first.manifest)
    second = version(bucket, "k", manifest=(first.manifest[0], *chunks(1)))  # keeps one chunk, adds one
    await store.put_object(second)
    assert await store.chunk_owner(first.manifest[1].chunk_id) is None  # replaced: out of the index
    assert (await store.chunk_owner(first.manifest[0].chunk_id)) is not None
    assert ids(second.manifest) <= (await all_index(store)).keys()
    await store.delete_object(bucket, "k")
    assert not ids(second.manifest) & (await all_index(store)).keys()
    assert await store.referenced([r.chunk_id for r in second.manifest]) == set()


async def test_chunk_index_follows_parts_and_completion(store: MetaStore) -> None:
    bucket = await new_bucket(store)
    up = upload(bucket, "mp")
    await store.create_upload(up)
    used, unused = part(up.upload_id, 1, 2), part(up.upload_id, 2, 2)
    await store.put_part(used)
    await store.put_part(unused)
    owner = await store.chunk_owner(used.manifest[0].chunk_id)
    assert owner is not None and (owner.bucket, owner.key, owner.upload_id, owner.part) == (bucket, "mp",
                                                                                           up.upload_id, 1)
    replaced = part(up.upload_id, 2, 1)
    await store.put_part(replaced)
    assert not ids(unused.manifest) & (await all_index(store)).keys()
    obj = version(bucket, "mp", manifest=used.manifest)
    await store.complete_upload(up.upload_id, obj, [1])
    index = await all_index(store)
    for ref in used.manifest:
        assert (index[ref.chunk_id].upload_id, index[ref.chunk_id].key) == ("", "mp")
    assert not ids(replaced.manifest) & index.keys()
    other = upload(bucket, "ab")
    await store.create_upload(other)
    p = part(other.upload_id, 1)
    await store.put_part(p)
    await store.abort_upload(other.upload_id)
    assert not ids(p.manifest) & (await all_index(store)).keys()


async def test_slices_of_chunks_are_kept_as_written(store: MetaStore) -> None:
    """A copied range's manifest names slices of chunks (offset, length): kept exactly through objects, noncurrent
    versions, parts and their completion, and repair's rewrite; the index knows each chunk's own size."""
    bucket = await new_bucket(store)
    whole = ChunkRef(os.urandom(16), 8 << 20, 7, ("a1", "a2"))
    head = ChunkRef(os.urandom(16), 8 << 20, 8, ("a1", "a2"), offset=300_001)  # from inside a chunk to its end
    middle = ChunkRef(os.urandom(16), 8 << 20, 9, ("a1", "a2"), offset=5, length=1)  # one byte inside one
    start = ChunkRef(os.urandom(16), 100, 10, ("a1",), length=40)  # a chunk's first bytes
    manifest = (head, whole, middle, start)
    assert [r.used for r in manifest] == [(8 << 20) - 300_001, 8 << 20, 1, 40]
    obj = version(bucket, "k", manifest=manifest, size=sum(r.used for r in manifest))
    await store.put_object(obj)
    got = await store.get_object(bucket, "k")
    assert got is not None and got.manifest == manifest
    owner = await store.chunk_owner(middle.chunk_id)
    assert owner is not None and owner.size == 8 << 20  # the chunk's size, not the slice's: what repair copies
    assert await store.set_chunk_agents(middle.chunk_id, ("a1", "a2"), ("a1", "a3"))
    got = await store.get_object(bucket, "k")
    assert got is not None and got.manifest[2] == attrs.evolve(middle, agents=("a1", "a3"))
    up = upload(bucket, "mp")
    await store.create_upload(up)
    sliced = Part(up.upload_id, 1, 41, os.urandom(16).hex(), time.time(),
                  (attrs.evolve(middle, chunk_id=os.urandom(16)), attrs.evolve(start, chunk_id=os.urandom(16))))
    await store.put_part(sliced)
    parts, _ = await store.list_parts(up.upload_id)
    assert [p.manifest for p in parts] == [sliced.manifest]
    done = await store.complete_upload(up.upload_id, version(bucket, "mp", manifest=sliced.manifest, size=41,
                                                             parts=(41,), part_checksums=("AAAAAA==",)), [1])
    got = await store.get_object(bucket, "mp", done.version.version_id)
    assert got is not None and got.manifest == sliced.manifest
    assert (got.parts, got.part_checksums) == ((41,), ("AAAAAA==",))  # each part's checksum, kept with the object


async def test_set_chunk_agents_is_repairs_commit(store: MetaStore) -> None:
    bucket = await new_bucket(store)
    obj = version(bucket, "k", manifest=chunks(2, agents=("a1", "a2")))
    await store.put_object(obj)
    target = obj.manifest[1]
    assert not await store.set_chunk_agents(target.chunk_id, ("a2", "a1"), ("a1", "a3"))  # not what it is now
    assert await store.set_chunk_agents(target.chunk_id, ("a1", "a2"), ("a1", "a3"))
    got = await store.get_object(bucket, "k")
    assert got is not None and got.manifest[1].agents == ("a1", "a3") and got.manifest[0] == obj.manifest[0]
    assert target.chunk_id in {o.chunk_id for o in await store.chunks_on_agent("a3")}
    assert target.chunk_id not in (await all_index(store, ("a2",))).keys()
    assert await store.count_chunks_on_agent("a3") >= 1
    assert not await store.set_chunk_agents(os.urandom(16), (), ("a1",))  # not referenced
    # under-replicated: chunks with fewer agents than asked
    lone = version(bucket, "lone", manifest=chunks(1, agents=("a1",)))
    await store.put_object(lone)
    found = []
    after = None
    while True:
        page = await store.under_replicated(2, after=after, limit=100)
        found += [o.chunk_id for o in page]
        if len(page) < 100:
            break
        after = page[-1].chunk_id
    assert lone.manifest[0].chunk_id in found and target.chunk_id not in found
    # a part's chunk too
    up = upload(bucket, "mp")
    await store.create_upload(up)
    p = part(up.upload_id, 1)
    await store.put_part(p)
    ref = p.manifest[0]
    assert await store.set_chunk_agents(ref.chunk_id, ref.agents, ("a9",))
    (stored,), _ = await store.list_parts(up.upload_id)
    assert stored.manifest[0].agents == ("a9",)


async def test_replica_reports_and_gc_updates(store: MetaStore) -> None:
    cid = os.urandom(16)
    await store.report_replica(ReplicaReport(cid, "a1", "corrupt", 10.0))
    await store.report_replica(ReplicaReport(cid, "a1", "missing", 11.0))  # one per replica: the latest
    await store.report_replica(ReplicaReport(cid, "a2", "missing", 12.0))
    mine = [r for r in await store.replica_reports(10_000) if r.chunk_id == cid]
    assert mine == [ReplicaReport(cid, "a1", "missing", 11.0), ReplicaReport(cid, "a2", "missing", 12.0)]
    await store.drop_replica_report(cid, "a1")
    assert [r.agent_id for r in await store.replica_reports(10_000) if r.chunk_id == cid] == ["a2"]
    entry = GcEntry(os.urandom(16), ("a1", "a2"), 5.0)
    await store.enqueue_gc([entry])
    await store.update_gc(attrs.evolve(entry, agents=("a2",), not_before=50.0))
    assert [e for e in await store.due_gc(FAR, limit=100_000) if e.chunk_id == entry.chunk_id] == [
        attrs.evolve(entry, agents=("a2",), not_before=50.0)]
    await store.update_gc(attrs.evolve(entry, agents=()))
    assert entry.chunk_id not in (await gc_ids(store)).keys()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.sampled_from(["put", "delete", "part", "complete", "abort"]),
                                st.sampled_from(["k1", "k2", "k3"]), st.integers(0, 3)), max_size=25))
async def test_chunk_index_is_exactly_what_manifests_reference(backend: Backend, steps) -> None:
    async with _opened(backend) as store:
        bucket = await new_bucket(store)
        uploads: dict[str, str] = {}
        for op, key, n in steps:
            if op == "put":
                await store.put_object(version(bucket, key, manifest=chunks(n)))
            elif op == "delete":
                await store.delete_object(bucket, key)
            elif op == "part":
                if key not in uploads:
                    uploads[key] = fresh("up")
                    await store.create_upload(upload(bucket, key, upload_id=uploads[key]))
                await store.put_part(part(uploads[key], 1 + n % 2, n))
            elif key in uploads:
                upload_id = uploads.pop(key)
                if op == "complete":
                    stored, _ = await store.list_parts(upload_id)
                    used = [p for p in stored if p.number == 1]
                    await store.complete_upload(upload_id, version(
                        bucket, key, manifest=tuple(r for p in used for r in p.manifest)), [p.number for p in used])
                else:
                    await store.abort_upload(upload_id)
        expected: dict[bytes, tuple[str, str]] = {}
        for obj in (await store.scan_objects(bucket, limit=10_000)).objects:
            expected.update((r.chunk_id, (obj.key, "")) for r in obj.manifest)
        for key, upload_id in uploads.items():
            for p in (await store.list_parts(upload_id))[0]:
                expected.update((r.chunk_id, (key, upload_id)) for r in p.manifest)
        index = {cid: o for cid, o in (await all_index(store)).items() if o.bucket == bucket}
        assert {cid: (o.key, o.upload_id) for cid, o in index.items()} == expected


async def test_indexed_agents_and_open_intents(store: MetaStore) -> None:
    bucket = await new_bucket(store)
    await store.put_object(version(bucket, "k", manifest=chunks(2, agents=("ax", "ay"))))
    assert {"ax", "ay"} <= await store.indexed_agents()
    intent = await new_intent(store)
    assert await store.open_intents([intent.intent_id, os.urandom(12)]) == {intent.intent_id}


async def test_inline_bodies(store: MetaStore) -> None:
    """A body kept in the record comes back byte for byte, with no chunk to collect when it is replaced or
    deleted; a chunked version replacing it, and the other way round, queues only real chunks."""
    bucket = await new_bucket(store)
    body = bytes(range(256)) * 3 + b"\x00"
    small = version(bucket, "k", manifest=(), inline=body, size=len(body))
    assert (await store.put_object(small)).replaced is None
    assert (await store.get_object(bucket, "k")).inline == body
    big = version(bucket, "k")
    replaced = (await store.put_object(big)).replaced
    assert replaced is not None and replaced.inline == body
    assert (await store.get_object(bucket, "k")).inline is None
    again = (await store.put_object(version(bucket, "k", manifest=(), inline=b"x", size=1))).replaced
    assert again == big and ids(big.manifest) <= (await gc_ids(store)).keys()
    listed = (await store.scan_objects(bucket)).objects
    assert [o.key for o in listed] == ["k"]
    deleted = (await store.delete_object(bucket, "k")).removed
    assert deleted is not None and deleted.inline == b"x"
    assert await store.get_object(bucket, "k") is None


async def test_delete_objects(store: MetaStore) -> None:
    bucket = await new_bucket(store)
    stored = [version(bucket, f"k{i}") for i in range(5)]
    for obj in stored:
        await store.put_object(obj)
    gone = await store.delete_objects(bucket, [(k, None) for k in ["k0", "missing", "k3", "k0", "k4"]])
    assert [bool(r) for r in gone] == [True, False, True, False, True]
    assert [o.key for o in (await store.scan_objects(bucket)).objects] == ["k1", "k2"]
    queued = (await gc_ids(store)).keys()
    assert ids(stored[0].manifest) | ids(stored[3].manifest) | ids(stored[4].manifest) <= queued
    assert not ids(stored[1].manifest) & queued
    assert [bool(r) for r in await store.delete_objects(bucket, [("k1", None)], bucket_id="another-bucket-id")] \
        == [False]
    assert await store.get_object(bucket, "k1") == stored[1]


async def test_delete_objects_by_null_version(store: MetaStore) -> None:
    """In a bucket that never had versioning, "null" names each key's one version; any other id finds nothing."""
    bucket = await new_bucket(store)
    await store.put_object(version(bucket, "inline", manifest=(), size=3, inline=b"abc"))
    kept = version(bucket, "kept")
    await store.put_object(kept)
    gone = await store.delete_objects(bucket, [("inline", "null"), ("kept", "0" * 32), ("inline", "null")])
    assert [bool(r) for r in gone] == [True, False, False]
    assert gone[0].removed is not None and (gone[0].removed.key, gone[0].removed.size) == ("inline", 3)
    assert [o.key for o in (await store.scan_objects(bucket)).objects] == ["kept"]
    assert await store.get_object(bucket, "kept") == kept
