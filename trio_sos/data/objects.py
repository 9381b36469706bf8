"""Writing an object body as chunks on the agents, and reading ranges of it back.

Invariants:
- An upload's intent is recorded before its first chunk is written; its chunks are named ``intent id + sequence``
  so that the garbage collector can find every chunk of an upload that never committed (see ``gc.py``). The
  intent is renewed on a timer for as long as the body streams, whatever the client's pace; if the renewal finds
  it claimed by the GC, the upload stops (``UploadLost``), and the commit itself fails (``IntentLost``) rather
  than name chunks that may be deleted.
- Memory per upload is bounded: the body is coalesced into buffers of ``piece_size`` bytes (a piece that arrives
  whole, as the HTTP layer reads a Content-Length body, is taken as it is: no copy), each hashed (in a worker
  thread when large: hashlib releases the GIL, so this uses the second core) and then streamed to the chunk's R
  agents from that one buffer (``replicas.py``: per replica a channel of two pieces, and the agent connection's own
  bounded queue). Nothing holds a whole chunk or a whole object.
- On any failure before the commit, chunks already written (on every agent they were sent to) go to the GC queue
  at once; the caller commits the manifest in metadata only after every chunk is durable on its write quorum.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Literal, overload

import attrs
import trio

from .. import threads
from ..agent import AgentConnectionError, AgentError
from ..agent.direct import DirectWindow
from ..cluster.fleet import Fleet, StorageUnavailable
from ..meta.store import ChunkRef, GcEntry, Intent, MetaStore
from .checksums import Hasher, b64, new_hasher
from .sse import Encryptor
from .replicas import ReadTuning, ReplicatedChunk, ReportBad, read_chunk

log = logging.getLogger("trio_sos.data.objects")

THREAD_HASH_MIN = 256 * 1024  # below this a thread hop costs more than the hash


def _prepended(first: bytes, receive: Callable[[], Awaitable[bytes]]) -> Callable[[], Awaitable[bytes]]:
    """``receive`` with ``first`` handed out before what it yields."""
    pending = [first]

    async def again() -> bytes:
        return pending.pop() if pending else await receive()

    return again


class UploadLost(StorageUnavailable):
    """The upload's intent was claimed by the garbage collector (it looked abandoned): its chunks may be gone, so
    it must not commit."""


@attrs.frozen
class Written:
    manifest: tuple[ChunkRef, ...]
    size: int
    md5: bytes
    sha256: bytes | None
    checksums: dict[str, bytes]  # algorithm -> digest
    intent_id: bytes | None  # None: no chunk was written (an empty or inline body), so no intent either
    inline: bytes | None = None  # a body of at most ``inline_max`` bytes, for the metadata record itself


class _ChunkSink:
    """Streams bytes into consecutive chunks of at most ``chunk_size`` bytes, each on the agents placement picks,
    through a ReplicatedChunk whose feeders run in ``nursery``."""

    def __init__(self, data: DataStore, intent_id: bytes, nursery: trio.Nursery) -> None:
        self._data = data
        self._intent = intent_id
        self._nursery = nursery
        self._seq = 0
        self._chunk: ReplicatedChunk | None = None
        self.manifest: list[ChunkRef] = []
        self.written: list[tuple[bytes, tuple[str, ...]]] = []  # every chunk started and its agents, for cleanup

    async def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            if self._chunk is None:
                self._open()
            assert self._chunk is not None
            room = self._data.chunk_size - self._chunk.length
            piece, view = view[:room], view[room:]
            await self._chunk.write(piece)
            if self._chunk.length >= self._data.chunk_size:
                await self._close()

    def next_id(self) -> bytes:
        """The next name of this upload's intent (``intent id + sequence``)."""
        chunk_id = self._intent + self._seq.to_bytes(4, "big")
        self._seq += 1
        return chunk_id

    def _open(self) -> None:
        chunk_id = self.next_id()
        agents = self._data.fleet.place(chunk_id)
        self.written.append((chunk_id, tuple(agents)))
        t = self._data.tuning
        self._chunk = ReplicatedChunk(self._data.fleet, self._nursery, chunk_id, agents, lag_timeout=t.lag_timeout,
                                      straggler_timeout=t.straggler_timeout)

    async def _close(self) -> None:
        chunk, self._chunk = self._chunk, None
        assert chunk is not None
        try:
            self.manifest.append(await chunk.finish())
        except BaseException:
            chunk.abort()
            raise

    async def finish(self) -> None:
        if self._chunk is not None:
            await self._close()

    def abort(self) -> None:
        if self._chunk is not None:
            self._chunk.abort()
            self._chunk = None


@attrs.frozen
class WriteTuning:
    lag_timeout: float = 5.0  # a replica that takes no data this long is dropped (if the quorum allows)
    straggler_timeout: float = 2.0  # how long replicas beyond the quorum get to acknowledge


def _update(hashers: Sequence[Hasher], data: bytes | memoryview) -> None:
    for h in hashers:
        h.update(data)


async def _hash_worker(pieces: trio.MemoryReceiveChannel[bytes | memoryview], hashers: Sequence[Hasher]) -> None:
    async with pieces:
        async for piece in pieces:
            if len(piece) >= THREAD_HASH_MIN:
                await threads.run_sync(_update, hashers, piece)
            else:
                _update(hashers, piece)


class DataStore:
    def __init__(self, meta: MetaStore, fleet: Fleet, *, chunk_size: int = 8 << 20,
                 piece_size: int = 1 << 20, intent_refresh: float = 900.0, read_retries: int = 2,
                 zone: str = "", read_tuning: ReadTuning | None = None, write_tuning: WriteTuning | None = None,
                 report_bad: ReportBad | None = None, inline_max: int = 0) -> None:
        self.meta = meta
        self.inline_max = inline_max  # bodies up to this size are returned inline, not written as chunks
        self.fleet = fleet
        self.zone = zone  # this node's zone: its reads prefer replicas there
        self.tuning = write_tuning or WriteTuning()
        self.read_tuning = read_tuning or ReadTuning(retries=read_retries)
        self.report_bad = report_bad
        self.chunk_size = chunk_size
        self.piece_size = piece_size
        # An upload slower than the GC's intent grace must not have its chunks collected under it: it renews
        # its intent's time this often (a quarter of the grace, by the node's configuration).
        self.intent_refresh = intent_refresh

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
        inline: bool = True,
        encryptor: Encryptor | None = None,
        size_hint: int | None = None,
    ) -> Written:
        """Store the body ``receive()`` yields (b"" at its end) as chunks; return its manifest and digests.

        The caller commits the manifest (``MetaStore.put_object`` with ``intent_id``) or calls :meth:`discard`.
        A body that ends within ``inline_max`` bytes (when ``inline``) is not written anywhere: it comes back as
        ``Written.inline``, for the caller to commit inside the metadata record (durable with it), and no intent
        is recorded for it — the intent is recorded only before the first chunk is written.

        ``encryptor``: the body is encrypted (``data/sse.py``) between the digests, which are the plaintext's,
        and the chunks (or the inline body), which hold only ciphertext; ``Written.size`` is the plaintext's.

        ``size_hint``: the length the request announced. A body announced small enough to be inline is read
        whole first and, when it is, stored without any of the streaming machinery (no tasks, channels or
        thread hops); one that turns out longer continues on the streaming path from the bytes already read.
        The hint only picks the path: what is stored is always what arrived.
        """
        if inline and size_hint is not None and size_hint <= self.inline_max:
            first = bytearray()
            while data := await receive():
                first += data
                if len(first) > self.inline_max:
                    break
            if not data:
                return self._inline(bytes(first), sha256, checksums, max_size, on_too_large, encryptor)
            receive = _prepended(bytes(first), receive)
        intent_id = os.urandom(12)
        md5 = hashlib.md5()
        sha = hashlib.sha256() if sha256 else None
        extra = {name: new_hasher(name) for name in checksums}
        hashers: list[Hasher] = [md5, *([sha] if sha else []), *extra.values()]
        intent = Intent(intent_id, time.time(), tuple(self.fleet.known()), bucket=bucket, key=key)
        intent_added = False
        inline_body: bytes | None = None
        inline_max = self.inline_max if inline else 0
        size = 0
        lost = False
        sink: _ChunkSink | None = None
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
                            try:
                                kept = await self.meta.renew_intent(intent_id, time.time())
                            except Exception as exc:  # metadata away for a moment: the grace spans 4 renewals
                                log.warning("renewing upload intent %s failed: %r", intent_id.hex(), exc)
                                continue
                            if not kept:
                                lost = True
                                nursery.cancel_scope.cancel()
                                return

                # Hashing runs in a worker thread beside the event loop (hashlib releases the GIL), piece N
                # being hashed while piece N goes to the agent and N+1 arrives from the client. The channel
                # holds one piece: memory stays bounded, and the hasher never falls more than a piece behind.
                # A body that ends within its first piece has nothing to overlap: that piece is hashed here (in
                # one thread hop when large), and no hash worker is started.
                to_hash: trio.MemorySendChannel[bytes | memoryview] | None = None
                sink = _ChunkSink(self, intent_id, nursery)
                try:
                    try:
                        buf = bytearray()
                        while True:
                            data = await receive()
                            whole = bool(data) and not buf and len(data) >= self.piece_size
                            if data:
                                if not whole:  # coalesced; a whole piece (receive() hands out a fresh buffer
                                    buf += data  # each time, never written to again) is taken as it is
                                size += len(data)
                                if max_size is not None and size > max_size:
                                    raise (on_too_large() if on_too_large else ValueError("body too large"))
                                if not intent_added and size > inline_max:
                                    # not inline: the intent, before any chunk is written
                                    await self.meta.add_intent(intent)
                                    intent_added = True
                                    nursery.start_soon(keep_intent)
                            piece: bytes | memoryview | None = None
                            if whole:  # read-only: the agent client queues it without a copy
                                piece = memoryview(data).toreadonly()
                            elif len(buf) >= self.piece_size or (not data and buf):
                                piece = bytes(buf)
                                buf.clear()
                            if piece is not None:
                                if to_hash is None and not data:  # the body's first and last piece
                                    if len(piece) >= THREAD_HASH_MIN:
                                        await threads.run_sync(_update, hashers, piece)
                                    else:
                                        _update(hashers, piece)
                                else:
                                    if to_hash is None:
                                        to_hash, hash_queue = trio.open_memory_channel[bytes | memoryview](1)
                                        nursery.start_soon(_hash_worker, hash_queue, hashers)
                                    await to_hash.send(piece)
                                if encryptor is not None:
                                    sealed = encryptor.feed(piece)
                                    piece = sealed + encryptor.finish() if not data else sealed
                                if not intent_added:  # the whole body, small: no chunk, no intent
                                    inline_body = bytes(piece)
                                    break
                                if piece:
                                    await sink.write(piece)
                            if not data:
                                break
                        if encryptor is not None and intent_added:
                            tail = encryptor.finish()  # what the last piece left of a segment
                            if tail:
                                await sink.write(tail)
                    finally:
                        if to_hash is not None:
                            to_hash.close()  # the hash worker ends once it has hashed what it was sent
                    await sink.finish()  # the last chunk, while its feeders' nursery is still open
                except BaseException as exc:
                    # kept aside so that it leaves the nursery as itself, not wrapped in an ExceptionGroup
                    failure = exc
                    sink.abort()
                    nursery.cancel_scope.cancel()
                renewing.cancel()
            if lost:
                raise UploadLost(f"upload {intent_id.hex()} was taken for abandoned and its chunks collected")
            if failure is not None:
                raise failure
        except BaseException as exc:
            if intent_added:
                with trio.CancelScope(shield=True):
                    await self._forget(intent_id, sink.written if sink is not None else [])
            if isinstance(exc, (AgentError, AgentConnectionError)):
                raise StorageUnavailable(f"storage agent failed: {exc}") from exc
            raise
        assert sink is not None
        return Written(tuple(sink.manifest), size, md5.digest(), sha.digest() if sha else None,
                       {name: h.digest() for name, h in extra.items()}, intent_id if intent_added else None,
                       inline_body)

    def _inline(self, body: bytes, sha256: bool, checksums: Sequence[str], max_size: int | None,
                on_too_large: Callable[[], BaseException] | None, encryptor: Encryptor | None) -> Written:
        """``write`` of a whole body of at most ``inline_max`` bytes, received already: digests, encryption."""
        if max_size is not None and len(body) > max_size:
            raise (on_too_large() if on_too_large else ValueError("body too large"))
        extra = {name: new_hasher(name) for name in checksums}
        for h in extra.values():
            h.update(body)
        stored: bytes | None = body if encryptor is None else encryptor.feed(body) + encryptor.finish()
        if not body:
            stored = None  # an empty body is stored as nothing at all, inline or not
        return Written((), len(body), hashlib.md5(body).digest(), hashlib.sha256(body).digest() if sha256 else None,
                       {name: h.digest() for name, h in extra.items()}, None, stored)

    async def share(self, manifest: Sequence[ChunkRef], start: int, end: int, *, bucket: str, key: str,
                    md5: bool = False, checksums: Sequence[str] = ()) -> Written:
        """The bytes ``[start, end)`` of a stored body as a new body made of the same chunks, no byte written.

        Each chunk the range touches is LINKed on each agent holding it under a new name of this write's intent
        (``intent id + sequence``, as a written body's chunks): a second name for the same file, counted once on
        disk and kept until its last name is deleted. The new manifest references those names, a slice of a
        chunk (offset, length) where the range starts or ends inside it. Each name has one owner in the metadata,
        as every chunk does, so the GC, repair and the chunk index work as for any body, and deleting one of the
        two objects never touches the other's bytes. The intent is recorded before the first LINK: a copy that
        crashes leaves names the GC collects, never a reference to a chunk that may go.

        A chunk that cannot be linked on enough of its agents (the write quorum of its replica count: agents
        down, a replica missing, an agent without LINK) is copied the byte way instead, alone. With ``md5`` or
        ``checksums`` the range is read once to compute them (an UploadPartCopy's part ETag is the MD5 of its
        bytes, as in S3); nothing is written either way.
        """
        intent_id = os.urandom(12)
        agents = sorted({a for ref in manifest for a in ref.agents} | set(self.fleet.known()))
        await self.meta.add_intent(Intent(intent_id, time.time(), tuple(agents), bucket=bucket, key=key))
        renewed = trio.current_time()
        shared: list[ChunkRef] = []
        made: list[tuple[bytes, tuple[str, ...]]] = []  # every name made or tried, for cleanup
        hashers: dict[str, Hasher] = {name: new_hasher(name) for name in checksums}
        md5_hash = hashlib.md5() if md5 else None
        sink: _ChunkSink | None = None
        try:
            failure: BaseException | None = None
            async with trio.open_nursery() as nursery:
                sink = _ChunkSink(self, intent_id, nursery)
                try:
                    for ref, offset, length in pieces(manifest, start, end):
                        if trio.current_time() - renewed >= self.intent_refresh:
                            if not await self.meta.renew_intent(intent_id, time.time()):
                                raise UploadLost(f"copy {intent_id.hex()} was taken for abandoned")
                            renewed = trio.current_time()
                        chunk_id = sink.next_id()
                        linked = await self._link(chunk_id, ref, made)
                        if len(linked) >= self.fleet.write_quorum(len(ref.agents)):
                            shared.append(attrs.evolve(ref, chunk_id=chunk_id, agents=linked,
                                                       offset=ref.offset + offset, length=length))
                            continue
                        # this piece the byte way, as a chunk of its own (its few names made go now)
                        await self._collect_now([(chunk_id, linked)])
                        async for data in self.read((ref,), offset, offset + length):
                            await sink.write(data)
                        await sink.finish()
                        shared.extend(sink.manifest)
                        sink.manifest.clear()
                    if md5_hash is not None or hashers:
                        wanted = [*([md5_hash] if md5_hash else []), *hashers.values()]
                        async for data in self.read(shared, 0, end - start):
                            if len(data) >= THREAD_HASH_MIN:
                                await threads.run_sync(_update, wanted, data)
                            else:
                                _update(wanted, data)
                except BaseException as exc:  # leaves the nursery as itself, not in an ExceptionGroup
                    failure = exc
                    sink.abort()
                    nursery.cancel_scope.cancel()
            if failure is not None:
                raise failure
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                await self._forget(intent_id, made + (sink.written if sink is not None else []))
            if isinstance(exc, (AgentError, AgentConnectionError)):
                raise StorageUnavailable(f"storage agent failed: {exc}") from exc
            raise
        return Written(tuple(shared), end - start, md5_hash.digest() if md5_hash else b"", None,
                       {name: h.digest() for name, h in hashers.items()}, intent_id)

    async def _link(self, chunk_id: bytes, ref: ChunkRef, made: list[tuple[bytes, tuple[str, ...]]]
                    ) -> tuple[str, ...]:
        """LINK ``ref``'s chunk as ``chunk_id`` on each of its agents at once; the agents where it worked (and the
        chunk found there is the one the manifest names: its length and CRC)."""
        done: list[str] = []
        made.append((chunk_id, ref.agents))

        async def one(agent: str) -> None:
            pool = self.fleet.pool(agent)
            if pool is None or agent in self.fleet.removed:
                return
            try:
                result = await pool.link(chunk_id, ref.chunk_id)
            except (AgentError, AgentConnectionError) as exc:
                log.warning("link of chunk %s on %s failed: %s", ref.chunk_id.hex(), agent, exc)
                return
            if (result.length, result.crc32c) != (ref.size, ref.crc32c):
                log.warning("chunk %s on %s is not the one its manifest names", ref.chunk_id.hex(), agent)
                return
            done.append(agent)

        async with trio.open_nursery() as nursery:
            for agent in ref.agents:
                nursery.start_soon(one, agent)
        return tuple(a for a in ref.agents if a in done)

    async def _collect_now(self, chunks: Sequence[tuple[bytes, tuple[str, ...]]]) -> None:
        """Queue chunks nothing will commit for deletion from their agents, due at once."""
        chunks = [(cid, agents) for cid, agents in chunks if agents]
        if chunks:
            now = time.time()
            await self.meta.enqueue_gc([GcEntry(cid, agents, now) for cid, agents in chunks])

    async def _forget(self, intent_id: bytes, chunks: Sequence[tuple[bytes, tuple[str, ...]]]) -> None:
        """Queue an uncommitted upload's chunks for deletion now, then drop its intent."""
        try:
            await self._collect_now(chunks)
            await self.meta.drop_intent(intent_id)
        except Exception as exc:  # the intent stays; the GC finds the chunks through it later
            log.info("upload %s: its chunks not queued for the GC now (%r); the GC collects them through its "
                     "intent once that is abandoned", intent_id.hex(), exc)

    async def discard(self, written: Written) -> None:
        """Give up on a written body that will not be committed (e.g. a failed precondition or digest)."""
        if written.intent_id is None:
            return  # nothing was written
        with trio.CancelScope(shield=True):
            await self._forget(written.intent_id, [(c.chunk_id, c.agents) for c in written.manifest])

    @overload
    def read(self, manifest: Sequence[ChunkRef], start: int, end: int, inline: bytes | None = None, *,
             direct: Literal[False] = False) -> AsyncIterator[bytes]: ...

    @overload
    def read(self, manifest: Sequence[ChunkRef], start: int, end: int, inline: bytes | None = None, *,
             direct: bool) -> AsyncIterator[bytes | DirectWindow]: ...

    async def read(self, manifest: Sequence[ChunkRef], start: int, end: int,
                   inline: bytes | None = None, *, direct: bool = False) -> AsyncIterator[bytes | DirectWindow]:
        """Yield the bytes ``[start, end)`` of the object whose body is ``manifest`` (or ``inline``); with
        ``direct``, chunk bytes come as windows for the HTTP layer to splice (see ``replicas.read_chunk``)."""
        if inline is not None:
            if start < end:
                yield inline[start:end]
            return
        for ref, offset, length in pieces(manifest, start, end):
            async for piece in self._read_chunk(ref, ref.offset + offset, length, direct):
                yield piece

    def _read_chunk(self, ref: ChunkRef, offset: int, length: int, direct: bool = False
                    ) -> AsyncIterator[bytes | DirectWindow]:
        return read_chunk(self.fleet, ref, offset, length, zone=self.zone, tuning=self.read_tuning,
                          report=self.report_bad, direct=direct)


def pieces(manifest: Sequence[ChunkRef], start: int, end: int) -> Iterator[tuple[ChunkRef, int, int]]:
    """The pieces of ``manifest`` that hold the body's bytes ``[start, end)``: (ref, offset in the piece,
    length), the offset counted from the start of the piece (``ref.offset`` of its chunk)."""
    pos = 0
    for ref in manifest:
        used = ref.used
        piece_start, piece_end = pos, pos + used
        pos = piece_end
        if piece_end <= start or used == 0:
            continue
        if piece_start >= end:
            break
        offset = max(start, piece_start) - piece_start
        yield ref, offset, min(end, piece_end) - piece_start - offset


def content_md5_ok(header: str, md5: bytes) -> bool:
    return header.strip() == b64(md5)
