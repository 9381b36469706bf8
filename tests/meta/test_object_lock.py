"""MetaStore conformance, object lock: no step of the store removes or replaces a version under retention or legal
hold (a delete by version id, a batch delete, a Suspended write or delete over the null version), on every
backend; GOVERNANCE yields to a bypass, COMPLIANCE and legal holds to nobody; retention changes are conditional on
what was read."""

from __future__ import annotations

import time

import attrs
import pytest

from trio_sos.meta.store import MetaStore, ObjectLocked, ObjectVersion

from .test_conformance import gc_ids, ids, new_bucket, version
from .test_versions import versioned_bucket

HOUR = 3600.0


def locked(bucket: str, key: str, mode: str = "GOVERNANCE", until: float | None = None, hold: bool = False,
           **kw) -> ObjectVersion:
    return version(bucket, key, lock_mode=mode, retain_until=time.time() + HOUR if until is None else until,
                   legal_hold=hold, **kw)


async def test_lock_fields_round_trip(store: MetaStore) -> None:
    bucket = await versioned_bucket(store)
    until = time.time() + 86400.5
    done = await store.put_object(locked(bucket, "k", "COMPLIANCE", until, hold=True))
    got = await store.get_object(bucket, "k", done.version.version_id)
    assert (got.lock_mode, got.retain_until, got.legal_hold) == ("COMPLIANCE", until, True)
    name = await new_bucket(store)
    b = await store.get_bucket(name)
    await store.update_bucket(attrs.evolve(b, versioning="Enabled", object_lock='{"mode":"GOVERNANCE","days":3}'))
    assert (await store.get_bucket(name)).object_lock == '{"mode":"GOVERNANCE","days":3}'


@pytest.mark.parametrize("mode", ["GOVERNANCE", "COMPLIANCE"])
async def test_a_retained_version_is_not_deleted(store: MetaStore, mode: str) -> None:
    bucket = await versioned_bucket(store)
    v = (await store.put_object(locked(bucket, "k", mode))).version
    with pytest.raises(ObjectLocked):
        await store.delete_object(bucket, "k", version_id=v.version_id)
    gone = await store.delete_objects(bucket, [("k", v.version_id), ("other", None)])
    assert gone[0].locked and not gone[0].removed and gone[1].marker is not None  # the rest of the batch goes on
    # a delete without a version id only puts a marker: allowed
    assert (await store.delete_object(bucket, "k")).marker is not None
    assert await store.get_object(bucket, "k", v.version_id) == v
    assert not ids(v.manifest) & (await gc_ids(store)).keys()
    bypassed = store.delete_object(bucket, "k", version_id=v.version_id, bypass_governance=True)
    if mode == "GOVERNANCE":
        assert (await bypassed).removed == v
    else:
        with pytest.raises(ObjectLocked):
            await bypassed
        assert await store.get_object(bucket, "k", v.version_id) == v


async def test_retention_that_has_passed_no_longer_holds(store: MetaStore) -> None:
    bucket = await versioned_bucket(store)
    v = (await store.put_object(locked(bucket, "k", "COMPLIANCE", until=time.time() - 1))).version
    assert (await store.delete_object(bucket, "k", version_id=v.version_id)).removed == v


async def test_a_legal_hold_yields_to_nobody(store: MetaStore) -> None:
    bucket = await versioned_bucket(store)
    v = (await store.put_object(version(bucket, "k", legal_hold=True))).version
    for bypass in (False, True):
        with pytest.raises(ObjectLocked):
            await store.delete_object(bucket, "k", version_id=v.version_id, bypass_governance=bypass)
    released = attrs.evolve(v, legal_hold=False)
    assert await store.update_object(released, read=v)
    assert (await store.delete_object(bucket, "k", version_id=v.version_id)).removed == released


async def test_suspended_writes_do_not_replace_a_locked_null_version(store: MetaStore) -> None:
    bucket = await versioned_bucket(store, "Suspended")
    v = (await store.put_object(locked(bucket, "k", "GOVERNANCE"))).version
    assert v.version_id == "null"
    with pytest.raises(ObjectLocked):
        await store.put_object(version(bucket, "k"))
    with pytest.raises(ObjectLocked):
        await store.delete_object(bucket, "k")  # would remove the null version
    assert await store.get_object(bucket, "k") == v
    done = await store.put_object(version(bucket, "k"), bypass_governance=True)
    assert done.replaced == v


async def test_lock_changes_are_conditional_on_what_was_read(store: MetaStore) -> None:
    bucket = await versioned_bucket(store)
    v = (await store.put_object(locked(bucket, "k", "COMPLIANCE"))).version
    longer = attrs.evolve(v, retain_until=v.retain_until + HOUR)
    assert await store.update_object(longer, read=v)
    # a change decided from the old state (say, a shorter extension) does not land over the newer one
    stale = attrs.evolve(v, retain_until=v.retain_until + 60)
    assert not await store.update_object(stale, read=v)
    assert (await store.get_object(bucket, "k", v.version_id)).retain_until == longer.retain_until
