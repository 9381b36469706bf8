"""Trio client of the storage agent: multiplexed connections and a per-agent pool.

Invariants this module keeps:

- Only a connection's writer task writes to its socket, and it writes whole frames. Requesters hand it frames
  through a *bounded* memory channel, so a slow or stuck agent blocks the producer instead of filling memory, and
  a requester cancelled while waiting for room has sent nothing.
- A request id stays registered until its RESULT arrives. A requester that goes away early (cancelled, timed out)
  leaves its request marked abandoned; the reader drops what arrives for it. A PUT stream abandoned midway is ended
  with PUT_ABORT, or, if even that cannot be queued in time, the connection is closed and the pool opens a new one:
  the framing of a pooled connection is never left half-written.
- GETs on a shared connection are issued in windows (``read_window`` bytes) so the reader buffers at most a window
  per request and never stalls the other requests of the connection.
"""

from __future__ import annotations

import itertools
import logging
import math
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import crc32c as _crc32c
import trio

from . import protocol as p
from .direct import DirectConnection, DirectConnectionError, DirectWindow, batch_blocks, blocks_spanned
from .protocol import AgentError, Op, ProtocolError

log = logging.getLogger("trio_sos.agent.client")

__all__ = [
    "AgentConnection",
    "AgentConnectionError",
    "AgentError",
    "AgentPool",
    "AgentTimeout",
    "PutStream",
    "open_agent_pool",
]


class AgentConnectionError(ConnectionError):
    """The agent could not be reached, or the connection to it broke while a request was in flight."""


class AgentTimeout(AgentConnectionError, TimeoutError):
    """A request got no answer within the pool's timeout; the connection it used was dropped."""


COALESCE_MAX = 64 * 1024  # frames up to this many bytes together are sent in one buffer (AgentConnection._writer)


def crc32c(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    return _crc32c.crc32c(data, value)


@attrs.define(eq=False)
class _Request:
    id: int
    done: trio.Event = attrs.field(factory=trio.Event)
    result: bytes | None = None
    error: BaseException | None = None
    data: list[bytes] | None = None  # DATA frames of a GET, in order
    data_size: int = 0
    data_limit: int = 0
    abandoned: bool = False

    def finish(self, result: bytes | None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()

    def body(self) -> bytes:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return p.raise_for_status(self.result)


class AgentConnection:
    """One multiplexed connection. Its reader and writer run in the nursery given to :meth:`connect`."""

    def __init__(self, stream: trio.abc.Stream, queue_frames: int) -> None:
        self._stream = stream
        self._send, self._outgoing = trio.open_memory_channel[tuple[bytes, Any]](queue_frames)
        self._pending: dict[int, _Request] = {}
        self._ids = itertools.count(1)
        self._buf = bytearray()
        self._scope = trio.CancelScope()
        self._stopped = trio.Event()
        self.error: BaseException | None = None
        self.hello: p.Hello | None = None
        self.max_frame = p.DEFAULT_MAX_FRAME

    # -- lifecycle -----------------------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls, nursery: trio.Nursery, address: str | tuple[str, int], *, queue_frames: int = 8
    ) -> AgentConnection:
        if isinstance(address, str) and address.startswith("unix:"):
            stream: trio.abc.Stream = await trio.open_unix_socket(address[5:])
        else:
            host, port = parse_address(address)
            stream = await trio.open_tcp_stream(host, port)
        conn = cls(stream, queue_frames)
        nursery.start_soon(conn._run)
        try:
            hello = await conn._call(Op.HELLO, p.hello_payload())
            conn.hello = p.parse_hello(hello)
            conn.max_frame = conn.hello.max_frame
        except BaseException:
            conn.close()
            raise
        return conn

    @property
    def usable(self) -> bool:
        return not self._scope.cancel_called

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def close(self, error: BaseException | None = None) -> None:
        """Drop the connection; every request still in flight fails with ``AgentConnectionError``."""
        if self._scope.cancel_called:
            return
        self.error = error or AgentConnectionError("connection closed")
        log.debug("closing agent connection: %r", self.error)
        self._scope.cancel()  # stops the reader and writer even when blocked on a stuck socket
        self._send.close()
        for req in self._pending.values():
            if not req.done.is_set():
                req.finish(None, AgentConnectionError(f"agent connection lost: {self.error}"))
        self._pending.clear()

    async def aclose(self) -> None:
        self.close()
        await self._stopped.wait()

    async def _run(self) -> None:
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer)
                    nursery.start_soon(self._reader)
        finally:
            self.close()
            await trio.aclose_forcefully(self._stream)
            self._stopped.set()

    async def _writer(self) -> None:
        """Send the queued frames in order. Small ones go out together: each frame's header and payload, and the
        frames queued behind it up to ``COALESCE_MAX`` bytes, are copied into one buffer and sent at once — one
        system call (and one wake of the agent) instead of two per frame, which on loopback cost more than the
        copy. A payload above that size is sent from its own buffer, after what was gathered before it."""
        try:
            async for header, payload in self._outgoing:
                parts: list[Any] = [header]
                size = len(header)
                big = None
                while True:
                    if payload:
                        if len(payload) > COALESCE_MAX:
                            big = payload
                            break
                        parts.append(payload)
                        size += len(payload)
                    if size >= COALESCE_MAX:
                        break
                    try:
                        header, payload = self._outgoing.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    parts.append(header)
                    size += len(header)
                await self._stream.send_all(parts[0] if len(parts) == 1 else b"".join(parts))
                if big is not None:
                    await self._stream.send_all(big)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.close(AgentConnectionError(f"send failed: {exc!r}"))

    async def _read_exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            data = await self._stream.receive_some(max(65536, n - len(self._buf)))
            if not data:
                raise AgentConnectionError("agent closed the connection")
            self._buf += data
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    async def _reader(self) -> None:
        try:
            while True:
                header = p.decode_header(await self._read_exactly(p.HEADER_SIZE), self.max_frame)
                payload = await self._read_exactly(header.length) if header.length else b""
                self._dispatch(header, payload)
        except (AgentConnectionError, ProtocolError) as exc:
            self.close(exc)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.close(AgentConnectionError(f"receive failed: {exc!r}"))

    def _dispatch(self, header: p.FrameHeader, payload: bytes) -> None:
        req = self._pending.get(header.request)
        if req is None:
            raise ProtocolError(f"frame op {header.op:#x} for request {header.request} that is not in flight")
        if header.op == Op.DATA:
            if req.data is None:
                raise ProtocolError(f"DATA frame for request {header.request}, which is not a GET")
            req.data_size += len(payload)
            if req.data_size > req.data_limit:
                raise ProtocolError(f"agent sent more than the {req.data_limit} bytes asked for")
            if not req.abandoned:
                req.data.append(payload)
        elif header.op == Op.RESULT:
            del self._pending[header.request]
            req.finish(payload)
        else:
            raise ProtocolError(f"unexpected op {header.op:#x} from the agent")

    # -- requests ------------------------------------------------------------------------------------------

    def _register(self, data_limit: int | None = None) -> _Request:
        if not self.usable:
            raise AgentConnectionError(f"agent connection unusable: {self.error}")
        req = _Request(next(self._ids))
        if data_limit is not None:
            req.data, req.data_limit = [], data_limit
        self._pending[req.id] = req
        return req

    async def _enqueue(self, op: int, request: int, payload: Any = b"") -> None:
        header = p.encode_header(op, request, len(payload))
        try:
            # Queued at once when there is room: no yield to the scheduler per frame (the writer then finds several
            # frames to send together), but a cancellation is still delivered here; waited for when the queue is
            # full, as backpressure.
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                self._send.send_nowait((header, payload))
            except trio.WouldBlock:
                await self._send.send((header, payload))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise AgentConnectionError(f"agent connection unusable: {self.error}") from None

    async def _wait(self, req: _Request) -> bytes:
        try:
            await req.done.wait()
        finally:
            if not req.done.is_set():
                req.abandoned = True
                req.data = [] if req.data is not None else None
        return req.body()

    async def _start(self, req: _Request, op: int, payload: Any) -> None:
        """Queue the first frame of ``req``; on cancellation before it is queued, forget the request."""
        try:
            await self._enqueue(op, req.id, payload)
        except BaseException:
            self._pending.pop(req.id, None)
            raise

    async def _call(self, op: int, payload: bytes = b"", data_limit: int | None = None) -> bytes:
        req = self._register(data_limit)
        await self._start(req, op, payload)
        return await self._wait(req)

    async def ping(self) -> None:
        await self._call(Op.PING)

    async def info(self) -> p.Info:
        return p.parse_info(await self._call(Op.INFO))

    async def delete(self, chunk_id: bytes) -> None:
        await self._call(Op.DELETE, p.check_id(chunk_id))

    async def stat(self, chunk_id: bytes, *, verify: bool = False) -> p.Stat:
        return p.parse_stat(await self._call(Op.STAT, p.stat_payload(chunk_id, verify)))

    async def link(self, chunk_id: bytes, source: bytes) -> p.PutResult:
        """Store the chunk ``source`` also as ``chunk_id`` (the same bytes, none copied), durably."""
        return p.parse_link(await self._call(Op.LINK, p.link_payload(chunk_id, source)))

    async def list_page(self, cursor: bytes | None = None, limit: int = 1000) -> p.ListPage:
        return p.parse_list(await self._call(Op.LIST, p.list_payload(cursor, limit)))

    async def get(self, chunk_id: bytes, offset: int = 0, length: int | None = None) -> tuple[bytes, p.GetResult]:
        """One GET request. Its data is buffered whole: keep ``length`` to what may be held in memory."""
        limit = p.TO_END if length is None else length
        req = self._register(data_limit=limit)
        await self._start(req, Op.GET, p.get_payload(chunk_id, offset, length))
        result = p.parse_get(await self._wait(req))
        assert req.data is not None
        return b"".join(req.data), result

    @asynccontextmanager
    async def put_stream(self, chunk_id: bytes, *, abort_timeout: float = 5.0) -> AsyncIterator[PutStream]:
        req = self._register()
        await self._start(req, Op.PUT_BEGIN, p.check_id(chunk_id))
        stream = PutStream(self, req)
        try:
            yield stream
        finally:
            if not stream.ended:
                # Cancelled or failed midway: end the stream so the connection's framing stays whole.
                req.abandoned = True
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + abort_timeout
                    try:
                        await self._enqueue(Op.PUT_ABORT, req.id)
                        stream.ended = True
                    except AgentConnectionError:
                        pass
                if not stream.ended:
                    self.close(AgentConnectionError("could not end an interrupted PUT stream"))


class PutStream:
    """Frames written here go to the agent as PUT_DATA, split at ``max_frame``; ``finish`` commits the chunk."""

    def __init__(self, conn: AgentConnection, req: _Request) -> None:
        self._conn = conn
        self._req = req
        self.length = 0
        self.crc32c = 0
        self.ended = False

    def _check_early_failure(self) -> None:
        if self._req.done.is_set():
            self._req.body()  # raises the early error (EXISTS, NO_SPACE...) or the connection error
            raise ProtocolError("agent answered a PUT before its end")

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data``. Once it returns the bytes are queued: the caller may reuse a mutable buffer. A read-only
        view counts as immutable bytes: whoever made it promises that the bytes behind it never change."""
        self._check_early_failure()
        view = memoryview(data).cast("B")
        immutable = view.readonly
        step = self._conn.max_frame
        for start in range(0, len(view), step):
            # A slice of immutable bytes can be queued as it is; a mutable buffer is copied, since the caller
            # may refill it as soon as this returns.
            piece = view[start : start + step] if immutable else bytes(view[start : start + step])
            self.crc32c = crc32c(piece, self.crc32c)
            self.length += len(piece)
            await self._conn._enqueue(Op.PUT_DATA, self._req.id, piece)

    async def finish(self, *, announce_crc: bool = True) -> p.PutResult:
        self._check_early_failure()
        payload = p.put_end_payload(self.length, self.crc32c if announce_crc else None)
        await self._conn._enqueue(Op.PUT_END, self._req.id, payload)
        self.ended = True
        return p.parse_put(await self._conn._wait(self._req))

    async def abort(self) -> None:
        await self._conn._enqueue(Op.PUT_ABORT, self._req.id)
        self.ended = True
        try:
            await self._conn._wait(self._req)
        except AgentError:
            pass  # the PUT had already failed early: that was its one RESULT


def parse_address(address: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(address, tuple):
        return address
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"agent address {address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


class AgentPool:
    """Connections to one agent, opened on demand (at most ``size``) and replaced when they break.

    Every operation runs under ``timeout``; a timed-out operation drops its connection, since an agent that does
    not answer one request is unlikely to answer the next on the same socket. After a failed connect the pool
    refuses new connections for a backoff delay (doubling up to ``max_backoff``), so callers fail fast and can
    turn to another replica.

    ``patience`` (seconds, default 0) is how long a request that needs a new connection keeps trying to connect,
    at that backoff, before it fails. A node whose only copy of the data is its local agent uses it to ride out
    the agent's restart (a fraction of a second) instead of failing requests within milliseconds.
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        address: str | tuple[str, int],
        *,
        size: int = 4,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        queue_frames: int = 8,
        read_window: int = 1 << 20,
        min_backoff: float = 0.05,
        max_backoff: float = 5.0,
        patience: float = 0.0,
    ) -> None:
        self._nursery = nursery
        self.address = address
        self.size = size
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.queue_frames = queue_frames
        self.read_window = read_window
        self._conns: list[AgentConnection] = []
        self._connect_lock = trio.Lock()
        self._min_backoff, self._max_backoff = min_backoff, max_backoff
        self._backoff = 0.0
        self._retry_at = -math.inf
        self.patience = patience
        self.connects = 0
        self.closed = False
        self._direct: list[DirectConnection] = []  # idle connections for zero-copy GET windows
        # direct connections serving a window now (weak: one whose window was dropped unmoved is closed by its
        # collection and leaves the set); at most ``direct_max``, beyond which windows are read the copying way
        self._direct_busy: weakref.WeakSet[DirectConnection] = weakref.WeakSet()
        self.direct_max = 4 * size

    def _least_busy(self) -> tuple[AgentConnection | None, bool]:
        """The usable connection with the fewest requests in flight, and whether it will do (idle, or pool full)."""
        self._conns = [c for c in self._conns if c.usable]
        idle = min(self._conns, key=lambda c: c.in_flight, default=None)
        return idle, idle is not None and (idle.in_flight == 0 or len(self._conns) >= self.size)

    async def _connection(self) -> AgentConnection:
        if self.closed:
            raise AgentConnectionError("pool is closed")
        idle, enough = self._least_busy()
        if enough:
            return idle  # type: ignore[return-value]
        async with self._connect_lock:
            idle, enough = self._least_busy()  # others may have connected while this task waited
            if enough:
                return idle  # type: ignore[return-value]
            give_up = trio.current_time() + self.patience
            while True:
                now = trio.current_time()
                if now < self._retry_at:
                    if idle is not None:
                        return idle
                    if self._retry_at > give_up:
                        raise AgentConnectionError(
                            f"agent {self.address} unreachable, next attempt in {self._retry_at - now:.2f}s"
                        )
                    await trio.sleep_until(self._retry_at)
                try:
                    with trio.fail_after(self.connect_timeout):
                        conn = await AgentConnection.connect(self._nursery, self.address,
                                                             queue_frames=self.queue_frames)
                except (OSError, trio.TooSlowError, AgentConnectionError, ProtocolError, AgentError) as exc:
                    self._backoff = min(self._max_backoff, max(self._min_backoff, self._backoff * 2))
                    self._retry_at = trio.current_time() + self._backoff
                    log.warning("connect to agent %s failed: %r; backing off %.2fs", self.address, exc,
                                self._backoff)
                    if idle is not None:
                        return idle
                    if self._retry_at > give_up:
                        raise AgentConnectionError(f"cannot connect to agent {self.address}: {exc!r}") from exc
                    continue
                self._backoff, self._retry_at = 0.0, -math.inf
                self.connects += 1
                self._conns.append(conn)
                return conn

    def _deadline(self, conn_box: list[AgentConnection]) -> _Deadline:
        return _Deadline(self, conn_box)

    async def _run(self, fn: Callable[[AgentConnection], Any]) -> Any:
        box: list[AgentConnection] = []
        async with self._deadline(box):
            conn = await self._connection()
            box.append(conn)
            return await fn(conn)
        raise AssertionError("unreachable")  # pragma: no cover  (the deadline raises)

    async def ping(self) -> None:
        await self._run(lambda c: c.ping())

    async def info(self) -> p.Info:
        return await self._run(lambda c: c.info())

    async def hello(self) -> p.Hello:
        async def fn(c: AgentConnection) -> p.Hello:
            assert c.hello is not None
            return c.hello

        return await self._run(fn)

    async def delete(self, chunk_id: bytes) -> None:
        await self._run(lambda c: c.delete(chunk_id))

    async def stat(self, chunk_id: bytes, *, verify: bool = False) -> p.Stat:
        return await self._run(lambda c: c.stat(chunk_id, verify=verify))

    async def link(self, chunk_id: bytes, source: bytes) -> p.PutResult:
        return await self._run(lambda c: c.link(chunk_id, source))

    async def list_page(self, cursor: bytes | None = None, limit: int = 1000) -> p.ListPage:
        return await self._run(lambda c: c.list_page(cursor, limit))

    async def list_all(self, page: int = 1000) -> AsyncIterator[tuple[bytes, int]]:
        cursor = None
        while True:
            result = await self.list_page(cursor, page)
            for entry in result.entries:
                yield entry
            if not result.more or not result.entries:
                return
            cursor = result.entries[-1][0]

    async def put(self, chunk_id: bytes, data: bytes | bytearray | memoryview) -> p.PutResult:
        async def fn(conn: AgentConnection) -> p.PutResult:
            async with conn.put_stream(chunk_id) as w:
                await w.write(data)
                return await w.finish()

        return await self._run(fn)

    @asynccontextmanager
    async def put_stream(self, chunk_id: bytes) -> AsyncIterator[PutStream]:
        """A PUT whose data is written piecewise; each write and the finish are bounded by the pool timeout."""
        box: list[AgentConnection] = []
        async with self._deadline(box):
            conn = await self._connection()
            box.append(conn)
        async with conn.put_stream(chunk_id) as w:
            yield _TimedPutStream(self, conn, w)  # type: ignore[misc]

    async def get(self, chunk_id: bytes, offset: int = 0, length: int | None = None) -> bytes:
        """The bytes of a range, read window by window and joined: for ranges that fit in memory."""
        return b"".join([piece async for piece in self.read(chunk_id, offset, length)])

    async def read(self, chunk_id: bytes, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Yield the bytes of ``[offset, offset+length)`` (to the end when ``length`` is None) window by window."""
        end = None if length is None else offset + length
        pos = offset
        first = True
        while first or end is None or pos < end:
            want = self.read_window if end is None else min(self.read_window, end - pos)
            async def window(c: AgentConnection, pos: int = pos, want: int = want) -> tuple[bytes, p.GetResult]:
                return await c.get(chunk_id, pos, want)

            data, result = await self._run(window)
            if end is None:
                end = result.chunk_length
            elif end > result.chunk_length:
                end = result.chunk_length
            first = False
            if data:
                yield data
            pos += len(data)
            if not data:
                break

    async def open_direct(self, chunk_id: bytes, offset: int, length: int) -> DirectWindow | bytes:
        """The window ``[offset, offset+length)`` for the kernel to move (see :mod:`.direct`): the agent has
        verified it whole when this returns. ``length`` must span at most :func:`.direct.batch_blocks` blocks.

        When no direct connection can be made, the window is read through the ordinary (copying) path instead,
        with its patience and backoff, and returned as bytes; b"" is the empty range at the chunk's end."""
        if self.closed:
            raise AgentConnectionError("pool is closed")
        conn = self._direct.pop() if self._direct else None
        if conn is None:
            if trio.current_time() < self._retry_at or self.direct_in_use >= self.direct_max:
                return await self.get(chunk_id, offset, length)
            try:
                with trio.fail_after(self.connect_timeout):
                    conn = await DirectConnection.connect(self.address)
            except (OSError, trio.TooSlowError, DirectConnectionError, ProtocolError, AgentError) as exc:
                log.debug("direct connection to agent %s failed: %r; reading through the pool", self.address, exc)
                return await self.get(chunk_id, offset, length)
        self._direct_busy.add(conn)
        if blocks_spanned(offset, length, conn.hello.block_size) > batch_blocks(conn.hello):
            # this agent verifies fewer blocks at once than the window holds: it could fail midway
            self._give_direct(conn)
            return await self.get(chunk_id, offset, length)
        try:
            with trio.fail_after(self.timeout):
                window = await conn.open(chunk_id, offset, length)
        except AgentError:
            self._give_direct(conn)
            raise
        except trio.TooSlowError:
            conn.close()
            raise AgentTimeout(f"no answer from agent {self.address} within {self.timeout}s") from None
        except DirectConnectionError as exc:
            # Broken before any byte of the window moved: most likely the agent restarted, and every idle
            # direct connection is as dead as this one. Drop them all; the copying path reconnects (waiting up
            # to ``patience`` for the agent to come back) and fails over as usual.
            conn.close()
            self._drop_direct()
            log.debug("direct connection to agent %s broke: %r; reading through the pool", self.address, exc)
            return await self.get(chunk_id, offset, length)
        except ProtocolError as exc:
            conn.close()
            raise AgentConnectionError(f"direct connection to agent {self.address}: {exc}") from exc
        except BaseException:
            conn.close()  # cancelled mid-answer: the framing is lost
            raise
        if window is None:
            self._give_direct(conn)
            return b""
        window.on_done = self._give_direct
        return window

    def _drop_direct(self) -> None:
        for idle in self._direct:
            idle.close()
        self._direct.clear()

    @property
    def direct_in_use(self) -> int:
        """Direct connections serving a window now."""
        return sum(1 for conn in self._direct_busy if not conn.broken)

    def _give_direct(self, conn: DirectConnection) -> None:
        self._direct_busy.discard(conn)
        if self.closed or conn.broken or len(self._direct) >= self.size:
            conn.close()
        else:
            self._direct.append(conn)

    async def aclose(self) -> None:
        self.closed = True
        self._drop_direct()
        for conn in self._conns:
            await conn.aclose()
        self._conns.clear()


class _Deadline:
    """``async with pool._deadline(conns):`` bounds what it wraps by the pool's timeout; past it, the connections
    in ``conns`` (those the wrapped code was using: filled in as it goes) are closed and AgentTimeout is raised.
    (A class rather than an ``asynccontextmanager``: it wraps every agent call, and skips the generator
    machinery.)"""

    __slots__ = ("_pool", "_conns", "_scope")

    def __init__(self, pool: AgentPool, conns: list[AgentConnection]) -> None:
        self._pool, self._conns = pool, conns
        self._scope = trio.move_on_after(pool.timeout)

    async def __aenter__(self) -> None:
        self._scope.__enter__()

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        # the scope swallows only a cancellation of its own, and then this raises AgentTimeout instead: nothing
        # else is ever suppressed
        self._scope.__exit__(kind, exc, tb)
        if self._scope.cancelled_caught:
            pool = self._pool
            for conn in self._conns:
                conn.close(AgentTimeout(f"no answer from agent {pool.address} within {pool.timeout}s"))
            raise AgentTimeout(f"no answer from agent {pool.address} within {pool.timeout}s") from None


class _TimedPutStream:
    def __init__(self, pool: AgentPool, conn: AgentConnection, inner: PutStream) -> None:
        self._pool, self._conn, self._inner = pool, conn, inner

    @property
    def length(self) -> int:
        return self._inner.length

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        async with self._pool._deadline([self._conn]):
            await self._inner.write(data)

    async def finish(self, *, announce_crc: bool = True) -> p.PutResult:
        async with self._pool._deadline([self._conn]):
            return await self._inner.finish(announce_crc=announce_crc)

    async def abort(self) -> None:
        async with self._pool._deadline([self._conn]):
            await self._inner.abort()


@asynccontextmanager
async def open_agent_pool(address: str | tuple[str, int], **kwargs: Any) -> AsyncIterator[AgentPool]:
    """A pool whose connection tasks live in a nursery owned by this context; leaving it closes them all.

    An exception from the body comes out as itself, not wrapped in an ExceptionGroup by the inner nursery: the
    pool's own tasks never raise, so the body's error is the only one there can be.
    """
    raised: BaseException | None = None
    async with trio.open_nursery() as nursery:
        pool = AgentPool(nursery, address, **kwargs)
        try:
            yield pool
        except BaseException as exc:
            raised = exc
        finally:
            await pool.aclose()
    if raised is not None:
        try:
            raise raised
        finally:
            raised = None  # break the reference cycle through the traceback
