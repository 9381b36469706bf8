"""Repair: every chunk back on R good agents — after an agent is lost, a replica is found missing or corrupt, a
write left a chunk short of R, or an operator drains an agent.

One pass (run by the leader of ``repair``) works from the chunk index:

1. replicas reported bad (by readers, by the scrubber);
2. chunks on agents that have been absent from the membership for ``dead_grace`` seconds, or that an operator
   removed (lost);
3. chunks on draining agents (moved off them);
4. chunks with fewer than R replicas (writes that met only their quorum).

For each chunk: the replicas to keep are those on live, writable agents not reported bad; new ones are placed
with the placement map (a zone the kept ones do not cover first) and filled by copying from a good replica (read
with the hedged, failing-over reader, so a bad source is skipped), their length and CRC32C checked against the
index. The new replica set is committed with ``set_chunk_agents``, conditional on the set it started from; only
then are the replaced replicas deleted, through the GC queue after ``gc_delay`` (reads in flight finish). A
replica that must go (draining, bad) is kept until enough copies exist elsewhere, so repair never lowers the
number of copies. Copies are throttled to ``rate`` bytes per second, so client traffic keeps priority.
"""

from __future__ import annotations

import logging
import time

import trio

from ..background import Periodic

from ..agent import AgentConnectionError, AgentError, Status
from ..agent.protocol import ProtocolError
from ..data.replicas import ReadTuning, read_chunk
from ..meta.store import ChunkOwner, ChunkRef, GcEntry, MetaStore
from .fleet import Fleet, StorageUnavailable
from .zk import CONNECTED, ZkSession

log = logging.getLogger("trio_sos.cluster.repair")


class Throttle:
    """At most ``rate`` bytes per second (0: no limit), as a token bucket of one second."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._next = 0.0

    async def take(self, n: int) -> None:
        if self.rate <= 0:
            return
        now = trio.current_time()
        self._next = max(self._next, now - 1.0) + n / self.rate
        if self._next > now:
            await trio.sleep(self._next - now)


class Repairer(Periodic):
    log = log
    what = "repair"
    name = "repair"

    def __init__(self, meta: MetaStore, fleet: Fleet, *, replicas: int, interval: float = 10.0,
                 dead_grace: float = 300.0, rate: float = 64 << 20, gc_delay: float = 300.0,
                 zk: ZkSession | None = None) -> None:
        self.meta = meta
        self.fleet = fleet
        self.replicas = replicas
        self.interval = interval
        self.dead_grace = dead_grace
        self.gc_delay = gc_delay
        self.throttle = Throttle(rate)
        self.zk = zk
        self._logged = time.monotonic()
        self._absent_since: dict[str, float] = {}
        self.wake = trio.Event()

    def target(self) -> int:
        """R, or as many as there are writable agents when there are fewer."""
        writable = sum(1 for a in self.fleet.agents.values() if a.writable)
        return max(1, min(self.replicas, writable))

    async def lost_agents(self) -> set[str]:
        """Agents the index names that have been absent from the membership for ``dead_grace`` seconds."""
        now = trio.current_time()
        indexed = await self.meta.indexed_agents()
        for agent in indexed:
            if agent in self.fleet.agents:
                self._absent_since.pop(agent, None)
            else:
                self._absent_since.setdefault(agent, now)
        for agent in [a for a in self._absent_since if a not in indexed]:
            del self._absent_since[agent]
        # an agent an operator removed is lost at once: no dead_grace wait
        return {a for a, since in self._absent_since.items()
                if now - since >= self.dead_grace or a in self.fleet.removed}

    async def run_once(self) -> int:
        """One pass; returns the number of chunks it repaired."""
        lost = await self.lost_agents()
        draining = {a for a, info in self.fleet.agents.items() if not info.writable}
        reports = await self.meta.replica_reports(1000)
        # estimated at the start of the pass, counted down as chunks are repaired
        self.left = len(reports) + sum([await self.meta.count_chunks_on_agent(a) for a in lost | draining])
        for report in reports:
            owner = await self.meta.chunk_owner(report.chunk_id)
            if owner is not None and report.agent_id in owner.agents:
                await self._fix(owner, bad={report.agent_id}, lost=lost)
            await self.meta.drop_replica_report(report.chunk_id, report.agent_id)
        for agent in sorted(lost | draining):
            await self._fix_all(self.meta.chunks_on_agent, agent, lost)
        target = self.target()
        after: bytes | None = None
        while True:
            page = await self.meta.under_replicated(target, after=after, limit=500)
            for owner in page:
                await self._fix(owner, bad=set(), lost=lost)
            if len(page) < 500:
                break
            after = page[-1].chunk_id
        await self._publish_drains(draining)
        if self.done:
            total = self.totals()[0]
            log.info("repair pass: %d chunks repaired (%d total, %.1f MiB/s), %d failed", self.done, total,
                     self._rate() / (1 << 20), self.failed)
        return self.done

    def _rate(self) -> float:
        """Bytes copied per second in the pass under way."""
        return self.bytes / max(1e-9, time.monotonic() - self._started_mono)

    async def _fix_all(self, query, agent: str, lost: set[str]) -> None:
        after: bytes | None = None
        failed = 0
        while True:
            page = await query(agent, after=after, limit=200)
            if not page:
                return
            for owner in page:
                if not await self._fix(owner, bad=set(), lost=lost):
                    failed += 1
            after = page[-1].chunk_id
            if failed >= 200:
                return  # nowhere to put them now (too few agents?): the next pass tries again

    async def _fix(self, owner: ChunkOwner, *, bad: set[str], lost: set[str]) -> bool:
        """Bring one chunk to R good replicas; True if it is (or already was) there."""
        await self.checkpoint()
        agents = self.fleet.agents
        keep = [a for a in owner.agents if a in agents and agents[a].writable and a not in bad]
        leaving = [a for a in owner.agents if a not in keep]
        target = self.target()
        if len(keep) >= target and not leaving:
            return True
        sources = [a for a in owner.agents if a in agents and a not in bad and a not in lost]
        copies: list[str] = []
        holders = list(owner.agents)
        while len(keep) + len(copies) < target:
            candidate = self.fleet.map.replacement(owner.chunk_id, holders)
            if candidate is None:
                break
            holders.append(candidate)
            if await self._copy(owner, sources, candidate):
                copies.append(candidate)
        final = keep + copies
        # a replica that must go stays until enough copies exist elsewhere: repair never lowers the count
        for agent in leaving:
            if len(final) >= target:
                break
            if agent in sources:
                final.append(agent)
        if not final:
            # No good copy anywhere and none could be made: keep the replicas there are. A corrupt one still serves
            # its healthy blocks, and a lost agent may come back; dropping the last replica would lose it all.
            final = list(owner.agents)
        if tuple(final) == owner.agents:
            if len(final) < target:
                self.failed += 1
                self.found(chunk=owner.chunk_id.hex(), agent=None,
                           reason=f"could not be repaired: {len(final)} of {target} replicas")
            return len(final) >= target
        if not await self.meta.set_chunk_agents(owner.chunk_id, owner.agents, final):
            # the chunk changed meanwhile (overwritten, deleted, repaired by another pass): the copies are garbage
            if copies:
                await self.meta.enqueue_gc([GcEntry(owner.chunk_id, tuple(copies), time.time())])
            return False
        dropped = tuple(a for a in owner.agents if a not in final and a not in lost)
        if dropped:
            await self.meta.enqueue_gc([GcEntry(owner.chunk_id, dropped, time.time() + self.gc_delay)])
        self.done += 1
        self.bytes += owner.size * len(copies)
        self.left = max(0, (self.left or 0) - 1)
        self._log_progress()
        return len(final) >= target

    def _log_progress(self, every: float = 10.0) -> None:
        """During a long pass, a progress line every ``every`` seconds."""
        now = time.monotonic()
        if now - self._logged < every:
            return
        self._logged = now
        log.info("repair: %d chunks (%.1f MiB) repaired in this pass, about %d left, %.1f MiB/s, %d failed",
                 self.done, self.bytes / (1 << 20), self.left or 0, self._rate() / (1 << 20), self.failed)

    async def _copy(self, owner: ChunkOwner, sources: list[str], target: str) -> bool:
        pool = self.fleet.pool(target)
        if pool is None or not sources:
            return False
        ref = ChunkRef(owner.chunk_id, owner.size, owner.crc32c, tuple(sources))
        try:
            async with pool.put_stream(owner.chunk_id) as stream:
                async for piece in read_chunk(self.fleet, ref, 0, owner.size, tuning=ReadTuning(hedge_delay=0.5)):
                    await self.throttle.take(len(piece))
                    await stream.write(piece)
                result = await stream.finish()
        except AgentError as exc:
            if exc.status == Status.EXISTS:  # an earlier, interrupted repair left it there: if it is whole, use it
                return await self._verify(pool, owner)
            log.warning("repair: copy of chunk %s to %s failed: %s", owner.chunk_id.hex(), target, exc)
            return False
        except (AgentConnectionError, ProtocolError, StorageUnavailable) as exc:
            log.warning("repair: copy of chunk %s to %s failed: %s", owner.chunk_id.hex(), target, exc)
            return False
        if (result.length, result.crc32c) != (owner.size, owner.crc32c):
            log.error("repair: the copy of chunk %s on %s is not the chunk (length/CRC); deleting it",
                      owner.chunk_id.hex(), target)
            await self.meta.enqueue_gc([GcEntry(owner.chunk_id, (target,), time.time())])
            return False
        return True

    async def _verify(self, pool, owner: ChunkOwner) -> bool:
        try:
            stat = await pool.stat(owner.chunk_id, verify=True)
        except (AgentError, AgentConnectionError, ProtocolError):
            return False
        return (stat.length, stat.crc32c) == (owner.size, owner.crc32c)

    async def _publish_drains(self, draining: set[str]) -> None:
        """Each drain mark in ZooKeeper says how many chunks are left on its agent, and whether it is drained."""
        if self.zk is None or self.zk.state != CONNECTED:
            return
        import json

        from kazoo.exceptions import KazooException, NoNodeError

        for agent in draining:
            left = await self.meta.count_chunks_on_agent(agent)
            body = json.dumps({"left": left, "drained": left == 0}).encode()
            try:
                await self.zk.call(self.zk.client.set, self.zk.path("draining", agent), body)
            except NoNodeError:
                pass  # undrained meanwhile
            except KazooException as exc:
                log.warning("could not publish the drain progress of %s: %r", agent, exc)
            if left == 0:
                log.info("agent %s is drained: no manifest references it any more", agent)
