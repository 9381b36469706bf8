"""Garbage collection of chunks: the GC queue (chunks of overwritten and deleted objects, of failed uploads) and
abandoned upload intents (uploads that crashed before committing or cleaning up).

A chunk is deleted only when it is in the GC queue — put there in the same metadata step that stopped referencing
it — or when it belongs to an abandoned intent, which can then no longer be committed. Nothing referenced is
deleted.

Abandoned is decided without trusting the wall clock: an intent renewed (by wall time) more than ``intent_grace``
ago is only a *candidate*. The collector remembers each candidate's heartbeat and when — on its own monotonic
clock — it first saw that heartbeat; a running upload renews its intent every quarter of the grace, so its
heartbeat moves. Only an intent whose heartbeat stood still for ``intent_grace`` seconds of monotonic time is
abandoned; the collector claims it in the metadata, conditional on that heartbeat (so an upload renewing at that
very moment wins), and only then deletes its chunks. A claimed intent cannot be renewed or committed: the upload,
if it was alive after all, fails (5xx) instead of committing a manifest of deleted chunks. A forward jump of the
wall clock therefore collects nothing early; after a restart of the collector, an intent waits a full grace again.
"""

from __future__ import annotations

import logging
import time

import trio

from ..background import Periodic

from ..agent import AgentConnectionError, AgentError, Status
from ..meta.store import GcEntry, Intent, MetaStore, MetaUnavailable
from ..cluster.fleet import Fleet

log = logging.getLogger("trio_sos.gc")

# How long the answer of a completed multipart upload is kept for clients that retry CompleteMultipartUpload.
COMPLETED_RETENTION = 24 * 3600.0


class GarbageCollector(Periodic):
    log = log
    what = "garbage collection"
    name = "gc"

    def __init__(self, meta: MetaStore, agents: Fleet, *, interval: float = 10.0,
                 intent_grace: float = 3600.0, batch: int = 100, retry: float = 30.0,
                 dead_grace: float = 3600.0) -> None:
        self.meta = meta
        self.agents = agents
        self.interval = interval
        self.intent_grace = intent_grace
        self.batch = batch
        self.wake = trio.Event()
        # intent id -> (heartbeat seen, monotonic time it was first seen with that heartbeat); candidates only
        self._watched: dict[bytes, tuple[int, float]] = {}
        self._unreachable: set[str] = set()
        self.retry = retry  # seconds before an entry whose agent was unreachable is tried again
        self.dead_grace = dead_grace
        self._absent: dict[str, float] = {}  # agent -> when it was first found gone from the membership

    async def run_once(self) -> int:
        """One pass: the due GC queue, then stale intents. Returns the number of chunks deleted."""
        # An agent found unreachable is not asked again in this pass: each attempt would wait out the pool's
        # patience (agent_wait) while the agent is down.
        self._unreachable = set()
        try:
            await self.meta.maintain()  # the backend's upkeep (Cassandra: half-done changes, shard splits)
        except MetaUnavailable as exc:  # the metadata is down: so is the rest of this pass (tried again next one)
            log.warning("metadata upkeep failed: %s", exc)
        now = time.time()
        while True:
            due = await self.meta.due_gc(now, self.batch)
            if not due:
                break
            done: list[bytes] = []
            for entry in due:
                await self.checkpoint()
                left = await self._delete_everywhere(entry.chunk_id, entry.agents)
                if not left:
                    done.append(entry.chunk_id)
                    self.done += 1
                else:  # the agents still to delete from, tried again later; the queue moves on meanwhile
                    await self.meta.update_gc(GcEntry(entry.chunk_id, left, time.time() + self.retry))
            await self.meta.done_gc(done)
        await self._abandoned_intents()
        await self.meta.prune_completed(time.time() - COMPLETED_RETENTION)
        return self.done  # this pass's (Periodic.run resets it before each pass)

    async def _delete_everywhere(self, chunk_id: bytes, agents: tuple[str, ...]) -> tuple[str, ...]:
        """Delete the chunk from ``agents``; returns those it could not be deleted from yet.

        Never from an agent the chunk index places it on (a repair may have placed it there again since it was
        queued): nothing referenced is deleted. An agent that is gone from the membership for good — longer than
        ``dead_grace`` — is given up on; if it ever comes back, the scrubber finds its leftovers as orphans.
        """
        owner = await self.meta.chunk_owner(chunk_id)
        placed = set(owner.agents) if owner is not None else set()
        left = []
        for agent in agents:
            if agent in placed:
                continue
            pool = self.agents.pool(agent)
            if pool is None:
                since = self._absent.setdefault(agent, trio.current_time())
                if trio.current_time() - since < self.dead_grace and agent not in self.agents.removed:
                    left.append(agent)
                continue
            self._absent.pop(agent, None)
            if agent in self._unreachable:
                left.append(agent)
                continue
            try:
                await pool.delete(chunk_id)
            except AgentError as exc:
                if exc.status != Status.NOT_FOUND:
                    log.warning("delete of chunk %s on %s failed: %s", chunk_id.hex(), agent, exc)
                    left.append(agent)
            except AgentConnectionError as exc:
                log.warning("agent %s unreachable for GC: %s", agent, exc)
                self._unreachable.add(agent)
                left.append(agent)
        return tuple(left)

    async def _abandoned_intents(self) -> None:
        """Watch the candidate intents' heartbeats; claim and collect those that stood still for the grace."""
        watched: dict[bytes, tuple[int, float]] = {}
        after: tuple[float, bytes] | None = None
        while True:
            page = await self.meta.stale_intents(time.time() - self.intent_grace, self.batch, after=after)
            now = trio.current_time()
            for intent in page:
                if intent.claimed:  # an earlier collection of it did not finish
                    await self._collect_intent(intent)
                    continue
                seen = self._watched.get(intent.intent_id)
                if seen is None or seen[0] != intent.heartbeat:
                    watched[intent.intent_id] = (intent.heartbeat, now)
                    continue
                if now - seen[1] < self.intent_grace:
                    watched[intent.intent_id] = seen
                    continue
                if await self.meta.claim_intent(intent.intent_id, intent.heartbeat):
                    await self._collect_intent(intent)
            if len(page) < self.batch:
                break
            after = (page[-1].renewed, page[-1].intent_id)
        self._watched = watched  # intents no longer candidates (committed, dropped, renewed) are forgotten

    async def _collect_intent(self, intent: Intent) -> int:
        """Delete the chunks of a claimed intent's upload (it can no longer commit), then drop the intent."""
        deleted = 0
        # The chunks are named intent_id + sequence: an ordered LIST from just before intent_id + 0 finds them all.
        start = int.from_bytes(intent.intent_id + b"\0\0\0\0", "big")
        cursor = (start - 1).to_bytes(16, "big") if start else None
        for agent in intent.agents:
            pool = self.agents.pool(agent)
            if pool is None or agent in self._unreachable:
                return deleted  # keep the intent until that agent is known (and reachable) again
            try:
                page = await pool.list_page(cursor, 1000)
                while True:
                    mine = [cid for cid, _ in page.entries if cid[:12] == intent.intent_id]
                    for cid in mine:
                        if await self._delete_everywhere(cid, (agent,)):
                            return deleted  # keep the (claimed) intent: the next pass retries
                        deleted += 1
                        self.done += 1
                    if len(mine) < len(page.entries) or not page.more or not page.entries:
                        break
                    page = await pool.list_page(page.entries[-1][0], 1000)
            except (AgentError, AgentConnectionError) as exc:
                log.warning("cannot list agent %s for intent %s: %s", agent, intent.intent_id.hex(), exc)
                if isinstance(exc, AgentConnectionError):
                    self._unreachable.add(agent)
                return deleted
        await self.meta.drop_intent(intent.intent_id)
        log.info("collected %d chunks of abandoned upload %s (%s/%s)", deleted, intent.intent_id.hex(),
                 intent.bucket, intent.key)
        return deleted
