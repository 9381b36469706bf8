"""Writing an object body as chunks on the agents, and reading ranges of it back.

Invariants:
- An upload's intent is recorded before its first chunk is written; its chunks are named ``intent id + sequence``
  so that the garbage collector can find every chunk of an upload that never committed (see ``gc.py``). The
  intent is renewed on a timer for as long as the body streams, whatever the client's pace; if the renewal finds
  it claimed by the GC, the upload stops (``UploadLost``), and the commit itself fails (``IntentLost``) rather
  than name chunks that may be deleted.
- Memory per upload is bounded: the body is coalesced into buffers of ``piece_size`` bytes, each hashed (in a worker
  thread when large: hashlib releases the GIL, so this uses the second core) and then streamed to the agent, whose
  client queue is itself bounded. Nothing holds a whole chunk or a whole object.
- On any failure before the commit, chunks already written go to the GC queue at once; the caller commits the
  manifest in metadata only after every chunk is durable (acknowledged by the agent).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import attrs
import trio

from ..agent import AgentConnectionError, AgentError, AgentPool, AgentTimeout
from ..agent.client import PutStream
from ..meta.store import ChunkRef, GcEntry, Intent, MetaStore
from .checksums import Hasher, b64, new_hasher

THREAD_HASH_MIN = 256 * 1024  # below this a thread hop costs more than the hash


class StorageUnavailable(Exception):
    """No agent could take or give the data."""


class UploadLost(StorageUnavailable):
    """The upload's intent was claimed by the garbage collector (it looked abandoned): its chunks may be gone, so
    it must not commit."""


class AgentSet:
    """The agents this node uses, by agent id (hex), with rendezvous hashing to place chunks."""

    def __init__(self) -> None:
        self.pools: dict[str, AgentPool] = {}

    def add(self, agent_id: str, pool: AgentPool) -> None:
        self.pools[agent_id] = pool

    def choose(self, chunk_id: bytes, replicas: int = 1) -> list[str]:
        if not self.pools:
            raise StorageUnavailable("no storage agent available")
        ranked = sorted(self.pools, key=lambda a: hashlib.blake2b(chunk_id + a.encode(), digest_size=8).digest(),
                        reverse=True)
        return ranked[:replicas]

    def pool(self, agent_id: str) -> AgentPool | None:
        return self.pools.get(agent_id)


@attrs.frozen
class Written:
    manifest: tuple[ChunkRef, ...]
    size: int
    md5: bytes
    sha256: bytes | None
    checksums: dict[str, bytes]  # algorithm -> digest
    intent_id: bytes


class _ChunkSink:
    """Streams bytes into consecutive chunks of at most ``chunk_size`` bytes."""

    def __init__(self, data: DataStore, intent_id: bytes) -> None:
        self._data = data
        self._intent = intent_id
        self._seq = 0
        self._cm: AbstractAsyncContextManager[PutStream] | None = None
        self._stream: Any = None
        self._agent = ""
        self.manifest: list[ChunkRef] = []
        self.written: list[tuple[bytes, tuple[str, ...]]] = []  # every chunk started, for cleanup

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._stream is None:
                await self._open()
            room = self._data.chunk_size - self._stream.length
            piece, view = view[:room], view[room:]
            await self._stream.write(piece)
            if self._stream.length >= self._data.chunk_size:
                await self._close()

    async def _open(self) -> None:
        chunk_id = self._intent + self._seq.to_bytes(4, "big")
        self._seq += 1
        (agent,) = self._data.agents.choose(chunk_id, 1)
        pool = self._data.agents.pool(agent)
        assert pool is not None
        self.written.append((chunk_id, (agent,)))
        self._agent = agent
        cm = pool.put_stream(chunk_id)
        self._stream = await cm.__aenter__()
        self._cm = cm  # only once entered: a stream that never opened has nothing to abort

    async def _close(self) -> None:
        stream, cm = self._stream, self._cm
        self._stream = self._cm = None
        assert cm is not None
        try:
            result = await stream.finish()
        except BaseException as exc:
            await cm.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        await cm.__aexit__(None, None, None)
        chunk_id = self.written[-1][0]
        self.manifest.append(ChunkRef(chunk_id, result.length, result.crc32c, (self._agent,)))

    async def finish(self) -> None:
        if self._stream is not None:
            await self._close()

    async def abort(self) -> None:
        if self._cm is not None:
            cm, self._cm, self._stream = self._cm, None, None
            with trio.CancelScope(shield=True):
                err = RuntimeError("upload aborted")  # makes the put stream send PUT_ABORT
                await cm.__aexit__(RuntimeError, err, None)


def _update(hashers: Sequence[Hasher], data: bytes) -> None:
    for h in hashers:
        h.update(data)


async def _hash_worker(pieces: trio.MemoryReceiveChannel[bytes], hashers: Sequence[Hasher]) -> None:
    async with pieces:
        async for piece in pieces:
            if len(piece) >= THREAD_HASH_MIN:
                await trio.to_thread.run_sync(_update, hashers, piece)
            else:
                _update(hashers, piece)


class DataStore:
    def __init__(self, meta: MetaStore, agents: AgentSet, *, chunk_size: int = 8 << 20,
                 piece_size: int = 1 << 20, intent_refresh: float = 900.0, read_retries: int = 2) -> None:
        self.meta = meta
        self.agents = agents
        self.chunk_size = chunk_size
        self.piece_size = piece_size
        # An upload slower than the GC's intent grace must not have its chunks collected under it: it renews
        # its intent's time this often (a quarter of the grace, by the node's configuration).
        self.intent_refresh = intent_refresh
        # A read whose agent connection breaks (an agent restart) resumes on a new one this many times.
        self.read_retries = read_retries

    async def write(
        self,
        receive: Callable[[], Awaitable[bytes]],
        *,
        bucket: str,
        key: str,
        sha256: bool = False,
        checksums: Sequence[str] = (),
        max_size: int | None = None,
        on_too_large: Callable[[], BaseException] | None = None,
    ) -> Written:
        """Store the body ``receive()`` yields (b"" at its end) as chunks; return its manifest and digests.

        The caller commits the manifest (``MetaStore.put_object`` with ``intent_id``) or calls :meth:`discard`.
        """
        intent_id = os.urandom(12)
        md5 = hashlib.md5()
        sha = hashlib.sha256() if sha256 else None
        extra = {name: new_hasher(name) for name in checksums}
        hashers: list[Hasher] = [md5, *([sha] if sha else []), *extra.values()]
        sink = _ChunkSink(self, intent_id)
        intent = Intent(intent_id, time.time(), tuple(self.agents.pools), bucket=bucket, key=key)
        await self.meta.add_intent(intent)
        size = 0
        lost = False
        try:
            failure: BaseException | None = None
            async with trio.open_nursery() as nursery:
                renewing = trio.CancelScope()

                async def keep_intent() -> None:
                    # By time, for as long as the body streams, however slowly the client sends it: the GC
                    # collects an intent whose heartbeat stands still for intent_grace (4 renewals).
                    nonlocal lost
                    with renewing:
                        while True:
                            await trio.sleep(self.intent_refresh)
                            if not await self.meta.renew_intent(intent_id, time.time()):
                                lost = True
                                nursery.cancel_scope.cancel()
                                return

                nursery.start_soon(keep_intent)
                # Hashing runs in a worker thread beside the event loop (hashlib releases the GIL), piece N
                # being hashed while piece N goes to the agent and N+1 arrives from the client. The channel
                # holds one piece: memory stays bounded, and the hasher never falls more than a piece behind.
                to_hash, hash_queue = trio.open_memory_channel[bytes](1)
                nursery.start_soon(_hash_worker, hash_queue, hashers)
                try:
                    async with to_hash:
                        buf = bytearray()
                        while True:
                            data = await receive()
                            if data:
                                buf += data
                                size += len(data)
                                if max_size is not None and size > max_size:
                                    raise (on_too_large() if on_too_large else ValueError("body too large"))
                            if len(buf) >= self.piece_size or (not data and buf):
                                piece = bytes(buf)
                                buf.clear()
                                await to_hash.send(piece)
                                await sink.write(piece)
                            if not data:
                                break
                except BaseException as exc:
                    # kept aside so that it leaves the nursery as itself, not wrapped in an ExceptionGroup
                    failure = exc
                    nursery.cancel_scope.cancel()
                renewing.cancel()
            if lost:
                raise UploadLost(f"upload {intent_id.hex()} was taken for abandoned and its chunks collected")
            if failure is not None:
                raise failure
            await sink.finish()
        except BaseException as exc:
            await sink.abort()
            with trio.CancelScope(shield=True):
                await self._forget(intent_id, sink.written)
            if isinstance(exc, (AgentError, AgentConnectionError)):
                raise StorageUnavailable(f"storage agent failed: {exc}") from exc
            raise
        return Written(tuple(sink.manifest), size, md5.digest(), sha.digest() if sha else None,
                       {name: h.digest() for name, h in extra.items()}, intent_id)

    async def _forget(self, intent_id: bytes, chunks: Sequence[tuple[bytes, tuple[str, ...]]]) -> None:
        """Queue an uncommitted upload's chunks for deletion now, then drop its intent."""
        try:
            if chunks:
                now = time.time()
                await self.meta.enqueue_gc([GcEntry(cid, agents, now) for cid, agents in chunks])
            await self.meta.drop_intent(intent_id)
        except Exception:  # the intent stays; the GC finds the chunks through it later
            pass

    async def discard(self, written: Written) -> None:
        """Give up on a written body that will not be committed (e.g. a failed precondition or digest)."""
        with trio.CancelScope(shield=True):
            await self._forget(written.intent_id, [(c.chunk_id, c.agents) for c in written.manifest])

    async def read(self, manifest: Sequence[ChunkRef], start: int, end: int) -> AsyncIterator[bytes]:
        """Yield the bytes ``[start, end)`` of the object whose body is ``manifest``."""
        pos = 0
        for ref in manifest:
            chunk_start, chunk_end = pos, pos + ref.size
            pos = chunk_end
            if chunk_end <= start or ref.size == 0:
                continue
            if chunk_start >= end:
                break
            offset = max(start, chunk_start) - chunk_start
            length = min(end, chunk_end) - chunk_start - offset
            async for piece in self._read_chunk(ref, offset, length):
                yield piece

    async def _read_chunk(self, ref: ChunkRef, offset: int, length: int) -> AsyncIterator[bytes]:
        """The bytes ``[offset, offset+length)`` of one chunk, from the first replica that can give them.

        Chunks are immutable and their replicas byte-identical, so a read that breaks midway resumes where it
        stopped: on a fresh connection to the same agent when the connection was lost (an agent restart), or on
        the next replica when the agent answered with an error (missing or corrupt chunk) or did not answer.
        """
        last: Exception | None = None
        sent = 0
        for agent in ref.agents:
            pool = self.agents.pool(agent)
            if pool is None:
                continue
            attempts = 0
            while True:
                try:
                    async for piece in pool.read(ref.chunk_id, offset + sent, length - sent):
                        sent += len(piece)
                        yield piece
                    if sent != length:
                        raise StorageUnavailable(f"chunk {ref.chunk_id.hex()} is shorter than its manifest says")
                    return
                except AgentTimeout as exc:
                    last = exc
                    break
                except AgentConnectionError as exc:
                    last = exc
                    attempts += 1
                    if attempts > self.read_retries:
                        break
                except AgentError as exc:
                    last = exc
                    break
        raise StorageUnavailable(f"no replica of chunk {ref.chunk_id.hex()} could be read: {last}")


def content_md5_ok(header: str, md5: bytes) -> bool:
    return header.strip() == b64(md5)
