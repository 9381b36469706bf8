"""Garbage collection of chunks: the GC queue (chunks of overwritten and deleted objects, of failed uploads) and
stale upload intents (uploads that crashed before committing or cleaning up).

A chunk is deleted only when it is in the GC queue — put there in the same metadata step that stopped referencing
it — or when it belongs to a stale intent whose object was never committed. Nothing referenced is deleted.
"""

from __future__ import annotations

import logging
import time

import trio

from ..agent import AgentConnectionError, AgentError, Status
from ..meta.store import Intent, MetaStore
from .objects import AgentSet

log = logging.getLogger("trio_sos.gc")


class GarbageCollector:
    def __init__(self, meta: MetaStore, agents: AgentSet, *, interval: float = 10.0,
                 intent_grace: float = 3600.0, batch: int = 100) -> None:
        self.meta = meta
        self.agents = agents
        self.interval = interval
        self.intent_grace = intent_grace
        self.batch = batch
        self.deleted = 0
        self.passes = 0
        self.wake = trio.Event()

    async def run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("garbage collection pass failed")
            with trio.move_on_after(self.interval):
                await self.wake.wait()
            self.wake = trio.Event()

    async def run_once(self) -> int:
        """One pass: the due GC queue, then stale intents. Returns the number of chunks deleted."""
        deleted = 0
        while True:
            due = await self.meta.due_gc(time.time(), self.batch)
            if not due:
                break
            done = []
            for entry in due:
                if await self._delete_everywhere(entry.chunk_id, entry.agents):
                    done.append(entry.chunk_id)
                    deleted += 1
            await self.meta.done_gc(done)
            if len(done) < len(due):
                break  # some agent is unreachable: retry on the next pass
        for intent in await self.meta.stale_intents(time.time() - self.intent_grace, self.batch):
            deleted += await self._collect_intent(intent)
        self.deleted += deleted
        self.passes += 1
        return deleted

    async def _delete_everywhere(self, chunk_id: bytes, agents: tuple[str, ...]) -> bool:
        ok = True
        for agent in agents:
            pool = self.agents.pool(agent)
            if pool is None:
                log.warning("chunk %s is on unknown agent %s; keeping it queued", chunk_id.hex(), agent)
                ok = False
                continue
            try:
                await pool.delete(chunk_id)
            except AgentError as exc:
                if exc.status != Status.NOT_FOUND:
                    log.warning("delete of chunk %s on %s failed: %s", chunk_id.hex(), agent, exc)
                    ok = False
            except AgentConnectionError as exc:
                log.warning("agent %s unreachable for GC: %s", agent, exc)
                ok = False
        return ok

    async def _collect_intent(self, intent: Intent) -> int:
        """Delete the chunks of an upload that never committed, unless the object it wrote is current."""
        obj = await self.meta.get_object(intent.bucket, intent.key) if intent.bucket else None
        if obj is not None and any(ref.chunk_id[:12] == intent.intent_id for ref in obj.manifest):
            await self.meta.drop_intent(intent.intent_id)  # committed; only the intent's removal was lost
            return 0
        deleted = 0
        # The chunks are named intent_id + sequence: an ordered LIST from just before intent_id + 0 finds them all.
        start = int.from_bytes(intent.intent_id + b"\0\0\0\0", "big")
        cursor = (start - 1).to_bytes(16, "big") if start else None
        for agent in intent.agents:
            pool = self.agents.pool(agent)
            if pool is None:
                return deleted  # keep the intent until that agent is known again
            try:
                page = await pool.list_page(cursor, 1000)
                while True:
                    mine = [cid for cid, _ in page.entries if cid[:12] == intent.intent_id]
                    for cid in mine:
                        if await self._delete_everywhere(cid, (agent,)):
                            deleted += 1
                    if len(mine) < len(page.entries) or not page.more or not page.entries:
                        break
                    page = await pool.list_page(page.entries[-1][0], 1000)
            except (AgentError, AgentConnectionError) as exc:
                log.warning("cannot list agent %s for intent %s: %s", agent, intent.intent_id.hex(), exc)
                return deleted
        await self.meta.drop_intent(intent.intent_id)
        log.info("collected %d chunks of abandoned upload %s (%s/%s)", deleted, intent.intent_id.hex(),
                 intent.bucket, intent.key)
        return deleted
