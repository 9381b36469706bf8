"""The lifecycle worker: applies buckets' lifecycle rules (``s3/lifecycle.py``), on one node at a time (the leader
of ``lifecycle`` in a cluster; the embedded node's own otherwise).

A pass walks each bucket that has rules: its uploads in progress (AbortIncompleteMultipartUpload), then its
versions in ListObjectVersions order, a page (``batch`` entries) at a time, and for each version:

- the latest, when a rule's Expiration (Days or Date) is due: expired through the store's delete *conditional on
  it still being the latest* (``delete_object(expected=…)``) — a delete marker in a versioned bucket, removed in an
  unversioned one — so a newer write is never hidden by a decision taken before it;
- a latest delete marker with no other version of its key (ExpiredObjectDeleteMarker): removed;
- a noncurrent version or marker (NoncurrentVersionExpiration): removed for good once it has been noncurrent for
  NoncurrentDays (since the version above it was written), keeping the NewerNoncurrentVersions newest ones.

Every removal is the store's own step, so object lock holds (a locked version is skipped: ``ObjectLocked``).
After each page the pass records its cursor (the last key it finished) with ``MetaStore.set_state``: a pass cut
short — a crash, a leader that changed — resumes there; each step is conditional, so one done twice changes
nothing.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

import trio

from ..background import Periodic
from ..meta.store import Bucket, ListedVersion, MetaStore, MetaUnavailable, ObjectLocked, ObjectVersion

log = logging.getLogger("trio_sos.data.lifecycle")

STATE = "lifecycle-cursor"

# -- what the rules say (pure; the S3 layer's x-amz-expiration uses them too) --

DAY = 86400.0


def rules(bucket: Bucket) -> list[dict[str, Any]]:
    return json.loads(bucket.lifecycle) if bucket.lifecycle else []


def day_length(seconds: float) -> float:
    """A lifecycle day: 86,400 s, or ``lifecycle_day_seconds`` when that setting shortens it."""
    return float(seconds) if seconds else DAY


def after_days(ts: float, days: int, day: float) -> float:
    """When something of time ``ts`` is ``days`` old by S3's rule: the next midnight UTC at least that far (with
    real days), exactly that far with a shortened day."""
    if day != DAY:
        return ts + days * day
    return math.ceil((ts + days * DAY) / DAY) * DAY


def matches(rule: dict[str, Any], key: str, size: int, tags: tuple[tuple[str, str], ...]) -> bool:
    f = rule.get("filter", {})
    if not key.startswith(f.get("prefix", "")):
        return False
    if f.get("tags") and not set(map(tuple, f["tags"])) <= set(tags):
        return False
    if f.get("gt") is not None and not size > f["gt"]:
        return False
    return f.get("lt") is None or size < f["lt"]



class _Key:
    """What the walk knows of the key whose versions it is reading (newest first): how many it has seen, the time
    of the last one (the next one became noncurrent then), how many noncurrent ones, a latest delete marker."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.count = 0
        self.noncurrent = 0
        self.newer_time: float | None = None
        self.marker: ListedVersion | None = None


class LifecycleWorker(Periodic):
    log = log
    what = "lifecycle"
    name = "lifecycle"
    unit = "versions"

    def __init__(self, meta: MetaStore, *, interval: float = 3600.0, day_seconds: float = 0.0,
                 gc_delay: float = 0.0, batch: int = 1000) -> None:
        self.meta = meta
        self.interval = interval
        self.day = day_length(day_seconds)
        self.gc_delay = gc_delay
        self.batch = batch
        self.wake = trio.Event()
        self.expired = self.removed = self.markers_removed = self.aborted = self.locked_skipped = 0

    async def run_once(self) -> int:
        cursor = json.loads(await self.meta.get_state(STATE) or "{}")
        buckets = sorted((b for b in await self.meta.list_buckets() if b.lifecycle), key=lambda b: b.name.encode())
        start = cursor.get("bucket", "")
        for bucket in buckets:
            if bucket.name.encode() < start.encode():
                continue
            resume = cursor.get("key") if bucket.name == start else None
            try:
                await self._bucket(bucket, resume)
            except MetaUnavailable as exc:  # tried again next pass, from the cursor
                log.warning("lifecycle of bucket %s stopped: %s", bucket.name, exc)
                return self.done
        await self.meta.set_state(STATE, None)
        return self.done

    async def _save(self, bucket: str, key: str | None) -> None:
        await self.meta.set_state(STATE, json.dumps({"bucket": bucket, "key": key}))

    async def _bucket(self, bucket: Bucket, resume: str | None) -> None:
        enabled = [r for r in rules(bucket) if r["status"] == "Enabled"]
        now = time.time()
        if resume is None:
            await self._uploads(bucket, enabled, now)
        key_marker, id_marker = resume or "", ""
        walk: _Key | None = None  # the key being walked: its versions come newest first, maybe over pages
        while True:
            await self.checkpoint()
            page = await self.meta.list_versions(bucket.name, key_marker=key_marker, version_id_marker=id_marker,
                                                 limit=self.batch)
            finished = None
            for entry in page.versions:
                if walk is None or walk.key != entry.key:
                    if walk is not None:
                        await self._finish(bucket, enabled, walk)
                        finished = walk.key
                    walk = _Key(entry.key)
                await self._entry(bucket, enabled, walk, entry, now)
            if not page.truncated:
                break
            if finished is not None:
                await self._save(bucket.name, finished)
            key_marker, id_marker = page.next_key_marker, page.next_version_id_marker
        if walk is not None:
            await self._finish(bucket, enabled, walk)
        await self._save(bucket.name + "\0", None)  # this bucket is done: the next pass resumes after it

    async def _uploads(self, bucket: Bucket, rules: list[dict[str, Any]], now: float) -> None:
        aborts = [r for r in rules if r.get("abort")]
        if not aborts:
            return
        key_marker = id_marker = ""
        while True:
            await self.checkpoint()
            uploads, more = await self.meta.list_uploads(bucket.name, key_marker=key_marker,
                                                         upload_id_marker=id_marker, limit=self.batch)
            for u in uploads:
                due = [r for r in aborts if u.key.startswith(r["filter"].get("prefix", ""))
                       and now >= after_days(u.initiated, r["abort"]["days"], self.day)]
                if due:
                    try:
                        await self.meta.abort_upload(u.upload_id, gc_delay=self.gc_delay)
                        self.aborted += 1
                    except Exception as exc:  # completed or aborted meanwhile
                        log.debug("upload %s not aborted: %s", u.upload_id, exc)
            if not more or not uploads:
                return
            key_marker, id_marker = uploads[-1].key, uploads[-1].upload_id

    async def _matching(self, bucket: Bucket, rules: list[dict[str, Any]], entry: ListedVersion
                        ) -> list[dict[str, Any]]:
        """The rules whose filter takes this version (its tags read only when a rule filters on tags)."""
        candidates = [r for r in rules if matches(dict(r, filter=dict(r["filter"], tags=[])), entry.key,
                                                               entry.size, ())]
        if not any(r["filter"].get("tags") for r in candidates):
            return candidates
        obj = await self.meta.get_object(bucket.name, entry.key, entry.version_id)
        tags = obj.tags if obj is not None else ()
        return [r for r in candidates if matches(r, entry.key, entry.size, tags)]

    async def _entry(self, bucket: Bucket, rules: list[dict[str, Any]], walk: _Key, v: ListedVersion,
                     now: float) -> None:
        """One version of the key being walked (``walk``: what came before it, newer)."""
        self.done += 1
        first, since = walk.count == 0, walk.newer_time
        walk.count += 1
        walk.newer_time = v.last_modified
        matching = await self._matching(bucket, rules, v)
        if first and v.is_latest:
            if v.delete_marker:  # expired if it turns out to be the key's only version
                walk.marker = v if any((r.get("expiration") or {}).get("marker") for r in matching) else None
                return
            due = [r for r in matching if (when := _expiry(r, v, self.day)) is not None and now >= when]
            if due:
                seen = ObjectVersion(bucket.name, v.key, v.version_id, v.size, v.etag, v.last_modified, v.owner_id)
                try:
                    done = await self.meta.delete_object(bucket.name, v.key, gc_delay=self.gc_delay, expected=seen)
                    self.expired += bool(done)
                except ObjectLocked:
                    self.locked_skipped += 1
            return
        # noncurrent: for as long as the version above it has existed
        rank = walk.noncurrent
        walk.noncurrent += 1
        for r in matching:
            nc = r.get("noncurrent")
            if nc and since is not None and rank >= nc.get("newer", 0) and \
                    now >= after_days(since, nc["days"], self.day):
                await self._remove(bucket, v)
                return

    async def _finish(self, bucket: Bucket, rules: list[dict[str, Any]], walk: _Key) -> None:
        if walk.marker is not None and walk.count == 1:
            await self._remove(bucket, walk.marker, marker=True)

    async def _remove(self, bucket: Bucket, v: ListedVersion, marker: bool = False) -> None:
        try:
            done = await self.meta.delete_object(bucket.name, v.key, version_id=v.version_id,
                                                 gc_delay=self.gc_delay)
        except ObjectLocked:
            self.locked_skipped += 1
            return
        if done:
            if marker:
                self.markers_removed += 1
            else:
                self.removed += 1


def _expiry(rule: dict[str, Any], v: ListedVersion, day: float) -> float | None:
    exp = rule.get("expiration") or {}
    if "days" in exp:
        return after_days(v.last_modified, exp["days"], day)
    if "date" in exp:
        return float(exp["date"])
    return None
