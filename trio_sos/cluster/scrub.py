"""Scrub: a slow background pass over every chunk of every agent, against the chunk index.

For each live agent (run by the leader of ``scrub``), the agent's ordered chunk LIST is walked beside the
index's chunks on that agent (both ordered by chunk id):

- a chunk both have is verified in full by the agent (``STAT`` with verify: every block's CRC32C and the footer);
  a corrupt one is reported for repair;
- a chunk the index places there but the agent lacks is reported missing;
- a chunk the agent holds but the index does not place there is an orphan — left by a node that crashed between
  its PUTs and its commit, a replica that answered after its write was already done, a copy of an interrupted
  repair, an agent that came back after its chunks were re-replicated. Unless an upload in progress (an open
  intent) may still commit it, it is deleted once it has been seen orphaned, again, ``orphan_grace`` seconds
  (monotonic) after it was first seen so.

Verification is throttled to ``rate`` bytes per second; a whole pass then waits ``interval`` seconds.
"""

from __future__ import annotations

import logging
import time

import attrs
import trio

from ..background import Periodic

from ..agent import AgentConnectionError, AgentError, Status
from ..agent.protocol import ProtocolError
from ..meta.store import GcEntry, MetaStore, ReplicaReport
from .fleet import Fleet
from .repair import Throttle

log = logging.getLogger("trio_sos.cluster.scrub")


@attrs.define
class ScrubStats:
    """What scrub found since it started in this process (chunks and bytes verified: ``Periodic.totals``)."""

    corrupt: int = 0
    missing: int = 0
    orphans_deleted: int = 0


class Scrubber(Periodic):
    log = log
    what = "scrub"
    name = "scrub"

    def __init__(self, meta: MetaStore, fleet: Fleet, *, rate: float = 16 << 20, interval: float = 86400.0,
                 orphan_grace: float = 3600.0, page: int = 500) -> None:
        self.meta = meta
        self.fleet = fleet
        self.throttle = Throttle(rate)
        self.interval = interval
        self.orphan_grace = orphan_grace
        self.page = page
        self.stats = ScrubStats()
        self._orphans: dict[tuple[str, bytes], float] = {}  # (agent, chunk) -> when first seen orphaned
        self.wake = trio.Event()

    async def run_once(self) -> None:
        seen: set[tuple[str, bytes]] = set()
        agents = sorted(self.fleet.known())
        self.left = sum([await self.meta.count_chunks_on_agent(a) for a in agents])
        for agent in agents:
            try:
                await self._scrub_agent(agent, seen)
            except (AgentConnectionError, AgentError, ProtocolError) as exc:
                log.warning("scrub: agent %s unavailable: %s; next pass", agent, exc)
        # an orphan not seen again in this pass is forgotten: it went (or was committed after all)
        self._orphans = {k: v for k, v in self._orphans.items() if k in seen}

    async def _scrub_agent(self, agent: str, seen: set[tuple[str, bytes]]) -> None:
        pool = self.fleet.pool(agent)
        if pool is None:
            return
        cursor: bytes | None = None
        while True:
            listed = await pool.list_page(cursor, self.page)
            if not listed.entries:
                if cursor is None:
                    await self._missing_beyond(agent, None, None)
                return
            low, high = listed.entries[0][0], listed.entries[-1][0]
            indexed = await self._indexed_between(agent, cursor, high if listed.more else None)
            on_agent = {cid: length for cid, length in listed.entries}
            orphans = [cid for cid in on_agent if cid not in indexed]
            referenced = await self.meta.referenced(orphans) if orphans else set()
            open_ = await self.meta.open_intents(list({cid[:12] for cid in orphans})) if orphans else set()
            for cid, length in listed.entries:
                if cid in indexed:
                    await self._verify(agent, pool, cid, length)
                elif cid[:12] not in open_:
                    await self._orphan(agent, cid, seen, elsewhere=cid in referenced)
            for cid in indexed:
                if cid not in on_agent:
                    await self._report(cid, agent, "missing")
            if not listed.more:
                return
            cursor = high
            del low

    async def _indexed_between(self, agent: str, after: bytes | None, upto: bytes | None) -> set[bytes]:
        """The index's chunks on ``agent`` above ``after`` and up to ``upto`` (None: to the end)."""
        out: set[bytes] = set()
        cursor = after
        while True:
            page = await self.meta.chunks_on_agent(agent, after=cursor, limit=1000)
            for owner in page:
                if upto is not None and owner.chunk_id > upto:
                    return out
                out.add(owner.chunk_id)
            if len(page) < 1000:
                return out
            cursor = page[-1].chunk_id

    async def _missing_beyond(self, agent: str, after: bytes | None, upto: bytes | None) -> None:
        for cid in await self._indexed_between(agent, after, upto):
            await self._report(cid, agent, "missing")

    async def _verify(self, agent: str, pool, cid: bytes, length: int) -> None:
        await self.checkpoint()
        await self.throttle.take(length)
        self.done += 1
        self.bytes += length
        if self.left:
            self.left -= 1
        try:
            stat = await pool.stat(cid, verify=True)
        except AgentError as exc:
            if exc.status == Status.CORRUPT:
                await self._report(cid, agent, "corrupt")
                return
            if exc.status == Status.NOT_FOUND:
                await self._report(cid, agent, "missing")
                return
            raise
        owner = await self.meta.chunk_owner(cid)
        if owner is not None and (stat.length, stat.crc32c) != (owner.size, owner.crc32c):
            await self._report(cid, agent, "corrupt")  # whole and self-consistent, but not the chunk indexed

    async def _report(self, cid: bytes, agent: str, reason: str) -> None:
        if reason == "corrupt":
            self.stats.corrupt += 1
        else:
            self.stats.missing += 1
        log.warning("scrub: chunk %s on agent %s is %s; reported for repair", cid.hex(), agent, reason)
        self.found(chunk=cid.hex(), agent=agent, reason=reason)
        await self.meta.report_replica(ReplicaReport(cid, agent, reason, time.time()))

    async def _orphan(self, agent: str, cid: bytes, seen: set[tuple[str, bytes]], *, elsewhere: bool) -> None:
        key = (agent, cid)
        seen.add(key)
        now = trio.current_time()
        first = self._orphans.setdefault(key, now)
        if now - first < self.orphan_grace:
            return
        # still unreferenced here after the grace (re-checked: committed meanwhile?)
        owner = await self.meta.chunk_owner(cid)
        if owner is not None and agent in owner.agents:
            self._orphans.pop(key, None)
            return
        log.info("scrub: deleting orphan chunk %s on agent %s (%s)", cid.hex(), agent,
                 "an extra replica" if elsewhere else "referenced by nothing")
        await self.meta.enqueue_gc([GcEntry(cid, (agent,), time.time())])
        self._orphans.pop(key, None)
        self.stats.orphans_deleted += 1
