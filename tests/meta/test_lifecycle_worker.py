"""The lifecycle worker on each metadata backend: a pass resumes at the cursor a cut-short pass left, and each
step it takes is the store's conditional one (a newer write since it looked is never expired)."""

from __future__ import annotations

import json
import time

import attrs

from trio_sos.data.lifecycle import STATE, LifecycleWorker
from trio_sos.meta.store import MetaStore

from .test_conformance import new_bucket, version


async def with_rules(store: MetaStore, rules: list[dict]) -> str:
    name = await new_bucket(store)
    bucket = await store.get_bucket(name)
    await store.update_bucket(attrs.evolve(bucket, lifecycle=json.dumps(rules)))
    return name


EXPIRE = [{"id": "all", "status": "Enabled", "filter": {"prefix": "", "tags": [], "gt": None, "lt": None},
           "expiration": {"days": 1}}]


async def test_a_pass_resumes_at_its_cursor(store: MetaStore) -> None:
    bucket = await with_rules(store, EXPIRE)
    old = time.time() - 10
    for i in range(10):
        await store.put_object(version(bucket, f"k{i}", manifest=(), last_modified=old))
    worker = LifecycleWorker(store, day_seconds=1.0, batch=3)
    # a pass that stopped after k4 (a crash, a leader that went): the next one goes on from there
    await store.set_state(STATE, json.dumps({"bucket": bucket, "key": "k4"}))
    await worker.run_once()
    left = [o.key for o in (await store.list_objects(bucket)).objects]
    assert left == [f"k{i}" for i in range(5)]
    assert await store.get_state(STATE) is None  # the pass ended: the next one starts from the beginning
    await worker.run_once()
    assert (await store.list_objects(bucket)).objects == ()
    assert worker.expired == 10


async def test_a_newer_write_is_not_expired(store: MetaStore) -> None:
    bucket = await with_rules(store, EXPIRE)
    old = (await store.put_object(version(bucket, "k", manifest=(), last_modified=time.time() - 10))).version
    worker = LifecycleWorker(store, day_seconds=1.0)
    newer = (await store.put_object(version(bucket, "k", manifest=()))).version  # written after the listing
    assert not await store.delete_object(bucket, "k", expected=old)  # what the worker's step does
    await worker.run_once()  # and its own pass: the newer write is not a day old
    assert await store.get_object(bucket, "k") == newer
