"""One chunk on R agents: written to all of them at once from the same buffers, read from whichever answers.

Writing (``ReplicatedChunk``): each replica has a feeder task that owns that agent's PUT stream and takes pieces
from a channel of its own, bounded to ``depth`` pieces. The writer hands each piece (a slice of one immutable
buffer: never copied per replica) to every live replica's channel. A replica whose channel stays full for
``lag_timeout`` is dropped — as long as enough replicas remain for the write quorum — so one slow agent can neither
stall the upload forever nor make memory grow; a replica that fails is dropped too. At the end of the chunk the
writer waits for the PUTs' acknowledgements: the chunk is durable once ``quorum`` agents acknowledged it; the
others get ``straggler_timeout`` more, then their streams are aborted. The agents that acknowledged are the
chunk's replicas in the manifest; a chunk with fewer than R is what repair looks for.

Reading (``read_chunk``): replicas in order of preference (those this node could reach lately, the local zone,
low latency), window by window. A window that has not arrived after ``hedge_delay`` is asked of the next replica
too, and the first answer wins: one slow agent costs a read the hedge delay, not its timeout. An error (the
agent down, the chunk missing or corrupt — the agent checks every block's CRC32C before sending it) moves the read
to the next replica at the byte it reached; a missing or corrupt replica is reported for repair.

Zero-copy reads (``direct=True``, for plain-HTTP responses): each window is one the agent verifies whole before
sending any of it (``direct.WINDOW_BLOCKS`` blocks of 64 KiB, aligned), and is yielded as a
:class:`~trio_sos.agent.direct.DirectWindow` for the HTTP layer to splice from the agent socket to the client
socket. Hedging and failover work as above up to the first byte of a window; a window whose agent connection breaks
while it moves sends what it took from the agent and reads the rest of itself the copying way (``_resumer``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Literal, overload

import attrs
import trio

from ..agent import AgentConnectionError, AgentError, AgentTimeout, Status
from ..agent.direct import DirectWindow, window_end
from ..agent.protocol import ProtocolError, PutResult
from ..cluster.fleet import Fleet, StorageUnavailable
from ..meta.store import ChunkRef

log = logging.getLogger("trio_sos.data.replicas")

ReportBad = Callable[[bytes, str, str], None]  # (chunk id, agent id, "missing" | "corrupt")


@attrs.define(eq=False)
class _Replica:
    agent: str
    send: trio.MemorySendChannel
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    done: bool = False
    result: PutResult | None = None
    error: BaseException | None = None
    dropped: str = ""  # why the writer gave up on it


class ReplicatedChunk:
    """One chunk being written to the agents ``placement`` chose. Its feeders run in ``nursery``."""

    def __init__(self, fleet: Fleet, nursery: trio.Nursery, chunk_id: bytes, placement: Sequence[str], *,
                 depth: int = 2, lag_timeout: float = 5.0, straggler_timeout: float = 2.0,
                 write_timeout: float = 60.0) -> None:
        self.fleet = fleet
        self.chunk_id = chunk_id
        self.placement = tuple(placement)
        self.quorum = fleet.write_quorum(len(self.placement))
        self.lag_timeout = lag_timeout
        self.straggler_timeout = straggler_timeout
        self.write_timeout = write_timeout
        self.length = 0
        self.replicas: list[_Replica] = []
        self._progress = trio.Event()
        for agent in self.placement:
            send, receive = trio.open_memory_channel[memoryview | bytes](depth)
            replica = _Replica(agent, send)
            self.replicas.append(replica)
            nursery.start_soon(self._feed, replica, receive)

    def _live(self) -> list[_Replica]:
        return [r for r in self.replicas if not r.dropped and r.error is None]

    def _drop(self, replica: _Replica, why: str) -> None:
        if not replica.dropped:
            replica.dropped = why
            replica.scope.cancel()  # its put stream ends with PUT_ABORT
            log.warning("chunk %s: replica on agent %s dropped: %s", self.chunk_id.hex(), replica.agent, why)

    async def _feed(self, replica: _Replica, pieces: trio.MemoryReceiveChannel) -> None:
        try:
            with replica.scope:
                pool = self.fleet.pool(replica.agent)
                if pool is None:
                    raise AgentConnectionError(f"agent {replica.agent} is not in the fleet")
                async with pieces, pool.put_stream(self.chunk_id) as stream:
                    async for piece in pieces:
                        await stream.write(piece)
                    replica.result = await stream.finish()
        except (AgentError, AgentConnectionError, ProtocolError) as exc:
            replica.error = exc
            log.warning("chunk %s: replica on agent %s failed: %s", self.chunk_id.hex(), replica.agent, exc)
        finally:
            replica.done = True
            self._progress.set()

    def _check_quorum(self) -> None:
        live = self._live()
        if len(live) < self.quorum:
            why = "; ".join(f"{r.agent}: {r.dropped or r.error}" for r in self.replicas if r not in live)
            raise StorageUnavailable(f"chunk {self.chunk_id.hex()}: {len(live)} of {len(self.replicas)} replicas "
                                     f"left, {self.quorum} needed ({why})")

    async def write(self, piece: memoryview | bytes) -> None:
        """Hand ``piece`` to every live replica (it must not change until the chunk is finished or aborted)."""
        self.length += len(piece)
        for replica in self._live():
            spare = len(self._live()) > self.quorum  # may this one be given up on without losing the quorum?
            try:
                if spare:
                    with trio.move_on_after(self.lag_timeout) as scope:
                        await replica.send.send(piece)
                    if scope.cancelled_caught:
                        self._drop(replica, f"took no data for {self.lag_timeout}s")
                else:
                    await replica.send.send(piece)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                if replica.error is None and not replica.dropped:
                    replica.dropped = "its stream ended early"
        self._check_quorum()

    async def finish(self) -> ChunkRef:
        """End the chunk: its ChunkRef once a quorum acknowledged; StorageUnavailable if that cannot be."""
        for replica in self.replicas:
            await replica.send.aclose()
        deadline = trio.current_time() + self.write_timeout
        while True:
            acked = [r for r in self.replicas if r.result is not None]
            pending = [r for r in self._live() if not r.done]
            if not pending:
                break
            if len(acked) >= self.quorum:
                deadline = min(deadline, trio.current_time() + self.straggler_timeout)
            with trio.move_on_at(deadline) as scope:
                await self._progress.wait()
            self._progress = trio.Event()
            if scope.cancelled_caught:
                for replica in pending:
                    self._drop(replica, "no acknowledgement in time")
                break
        acked = [r for r in self.replicas if r.result is not None and not r.dropped]
        if len(acked) < self.quorum:
            self._check_quorum()
            raise StorageUnavailable(f"chunk {self.chunk_id.hex()}: {len(acked)} acknowledgements, "
                                     f"{self.quorum} needed")
        first = acked[0].result
        assert first is not None
        for replica in acked[1:]:
            assert replica.result is not None
            if (replica.result.length, replica.result.crc32c) != (first.length, first.crc32c):
                raise StorageUnavailable(f"chunk {self.chunk_id.hex()}: replicas disagree on what they stored")
        if first.length != self.length:
            raise StorageUnavailable(f"chunk {self.chunk_id.hex()}: stored {first.length} of {self.length} bytes")
        if len(acked) < len(self.replicas):
            log.info("chunk %s stored on %d of %d agents; repair restores the rest", self.chunk_id.hex(),
                     len(acked), len(self.replicas))
        return ChunkRef(self.chunk_id, first.length, first.crc32c, tuple(r.agent for r in acked))

    def abort(self) -> None:
        """Give up on every replica (their streams end with PUT_ABORT as their feeders are cancelled)."""
        for replica in self.replicas:
            if not replica.done:
                self._drop(replica, "upload aborted")


# -- reading ---------------------------------------------------------------------------------------------------


@attrs.define
class ReadTuning:
    hedge_delay: float = 0.05  # a window not answered by then is asked of another replica too
    window: int = 1 << 20
    retries: int = 2  # fresh connections to one agent after its connection broke (an agent restart)


def preference(fleet: Fleet, agents: Sequence[str], zone: str) -> list[str]:
    """The replicas this node can reach, best first: no recent failure, the local zone, the lowest latency."""
    known = [a for a in agents if fleet.pool(a) is not None]

    def key(agent: str) -> tuple:
        info = fleet.agents.get(agent)
        return (fleet.recent_failure(agent), 0 if info is not None and info.zone == zone else 1,
                fleet.latency.get(agent, math.inf))

    return sorted(known, key=key)


async def _window(fleet: Fleet, agent: str, chunk_id: bytes, offset: int, length: int, direct: bool = False
                  ) -> bytes | DirectWindow:
    """One window from ``agent``, timed for the fleet's latency figures: bytes, or with ``direct`` a window for
    the kernel to move (bytes where the agent could only be read the copying way)."""
    pool = fleet.pool(agent)
    if pool is None:
        raise AgentConnectionError(f"agent {agent} is not in the fleet")
    started = trio.current_time()
    data = await (pool.open_direct if direct else pool.get)(chunk_id, offset, length)
    fleet.observe(agent, trio.current_time() - started)
    return data


@overload
def read_chunk(fleet: Fleet, ref: ChunkRef, offset: int, length: int, *, zone: str = "",
               tuning: ReadTuning | None = None, report: ReportBad | None = None,
               direct: Literal[False] = False) -> AsyncIterator[bytes]: ...


@overload
def read_chunk(fleet: Fleet, ref: ChunkRef, offset: int, length: int, *, zone: str = "",
               tuning: ReadTuning | None = None, report: ReportBad | None = None,
               direct: bool) -> AsyncIterator[bytes | DirectWindow]: ...


async def read_chunk(fleet: Fleet, ref: ChunkRef, offset: int, length: int, *, zone: str = "",
                     tuning: ReadTuning | None = None, report: ReportBad | None = None,
                     direct: bool = False) -> AsyncIterator[bytes | DirectWindow]:
    """Yield the bytes ``[offset, offset+length)`` of the chunk ``ref``, hedged and failing over (see above); with
    ``direct``, windows for the kernel to move (or bytes, where the agent could only be read the copying way)."""
    tuning = tuning or ReadTuning()
    candidates = preference(fleet, ref.agents, zone)
    if not candidates:
        raise StorageUnavailable(f"no replica of chunk {ref.chunk_id.hex()} is on a known agent ({ref.agents})")
    failures: dict[str, int] = {}
    errors: list[str] = []
    pos = offset
    end = offset + length
    while pos < end:
        usable = [a for a in candidates if failures.get(a, 0) <= tuning.retries]
        if not usable:
            raise StorageUnavailable(f"no replica of chunk {ref.chunk_id.hex()} could be read: {'; '.join(errors)}")
        want = window_end(pos, end) - pos if direct else min(tuning.window, end - pos)
        winner, data, failed = await _hedged(fleet, usable, ref.chunk_id, pos, want, tuning.hedge_delay, direct)
        for agent, exc in failed:
            errors.append(f"{agent}: {exc}")
            fleet.failed(agent)
            if isinstance(exc, AgentError) and exc.status in (Status.NOT_FOUND, Status.CORRUPT):
                failures[agent] = tuning.retries + 1  # this replica is bad: never again for this read
                if report is not None:
                    report(ref.chunk_id, agent, "missing" if exc.status == Status.NOT_FOUND else "corrupt")
            elif isinstance(exc, AgentTimeout):
                failures[agent] = tuning.retries + 1
            else:
                failures[agent] = failures.get(agent, 0) + 1
        if winner is None:
            continue
        if not data:
            raise StorageUnavailable(f"chunk {ref.chunk_id.hex()} on {winner} is shorter than its manifest says")
        if isinstance(data, DirectWindow):
            data.resume = _resumer(fleet, ref, pos, want, zone, tuning, report)
        pos += len(data)
        yield data


def _resumer(fleet: Fleet, ref: ChunkRef, pos: int, want: int, zone: str, tuning: ReadTuning,
             report: ReportBad | None) -> Callable[[int], Awaitable[bytes]]:
    """The rest of a direct window from ``done`` on, read the copying way (hedged, failing over), for a window
    whose agent connection broke while it moved."""
    async def rest(done: int) -> bytes:
        pieces = [piece async for piece in read_chunk(fleet, ref, pos + done, want - done, zone=zone, tuning=tuning,
                                                      report=report)]
        return b"".join(pieces)

    return rest


async def _hedged(fleet: Fleet, agents: Sequence[str], chunk_id: bytes, offset: int, length: int, delay: float,
                  direct: bool = False) -> tuple[str | None, bytes | DirectWindow, list[tuple[str, Exception]]]:
    """Ask ``agents[0]`` for a window; if it has not answered after ``delay`` (or failed), ask the next too, and so
    on; the first answer wins and the others are cancelled. Returns (winner, data, [(agent, error)...])."""
    failed: list[tuple[str, Exception]] = []
    result: list[tuple[str, bytes | DirectWindow]] = []
    async with trio.open_nursery() as nursery:
        progress = trio.Event()

        async def ask(agent: str) -> None:
            try:
                data = await _window(fleet, agent, chunk_id, offset, length, direct)
            except (AgentError, AgentConnectionError, ProtocolError) as exc:
                failed.append((agent, exc))
            else:
                if not result:
                    result.append((agent, data))
                    nursery.cancel_scope.cancel()
                elif isinstance(data, DirectWindow):
                    data.discard()  # a second answer: its bytes will not be read
            progress.set()

        for i, agent in enumerate(agents):
            nursery.start_soon(ask, agent)
            if i == len(agents) - 1:
                break
            with trio.move_on_after(delay):
                while len(failed) < i + 1 and not result:
                    await progress.wait()
                    progress = trio.Event()
            if result:
                break
    if result:
        return result[0][0], result[0][1], failed
    return None, b"", failed
