"""Zero-copy reads: the bytes of a GET window go from the agent's socket to the client's socket through a pipe
(``splice(2)``), and never through Python's memory.

A :class:`DirectConnection` is not multiplexed: one window at a time, read by the task that asked for it, so that
the DATA payloads can be handed to the kernel as they arrive. The agent checks every block of a window of at most
:func:`batch_blocks` blocks before it sends the first DATA frame of it (docs/agent-protocol.md, GET), so by the time
:meth:`DirectConnection.open` returns a :class:`DirectWindow`, all of its bytes are verified; an error (NOT_FOUND,
CORRUPT) comes instead of any DATA and leaves the caller free to ask another replica.

What can still go wrong once bytes are moving is the agent connection breaking mid-window (the agent killed). The
bytes taken from the agent before that were verified and still go out; the rest of the window is read again the
copying way (``DirectWindow.resume``, from another connection or replica), so the response goes on whole. Only
when that fails too is the client connection cut: the client sees an incomplete body, never a wrong one.

Used only for plain-HTTP responses (TLS needs the bytes in user space to encrypt them) and only on Linux
(``os.splice``).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket as _socket
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from . import protocol as p
from .protocol import AgentError, Op, ProtocolError

log = logging.getLogger("trio_sos.agent.direct")

AVAILABLE = hasattr(os, "splice") and hasattr(os, "SPLICE_F_NONBLOCK")
PIPE_SIZE = 1 << 20
_FLAGS = (getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)) if AVAILABLE else 0
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_IDLE_PIPES = 16
_REQUEST = 1  # one request at a time on a direct connection: every GET uses the same id


class DirectConnectionError(ConnectionError):
    """The direct connection broke (or could not be made); what the caller does depends on whether bytes moved."""


BLOCK = 65536  # the agent's block size (HELLO's block_size; protocol version 1 has only this one)
WINDOW_BLOCKS = 16  # blocks per direct window: what an agent with the default max_frame (1 MiB) verifies at once


def window_end(pos: int, end: int) -> int:
    """Where the direct window starting at ``pos`` stops: at most WINDOW_BLOCKS blocks, aligned."""
    return min(end, (pos // BLOCK + WINDOW_BLOCKS) * BLOCK)


def blocks_spanned(offset: int, length: int, block_size: int) -> int:
    return 0 if length <= 0 else (offset + length - 1) // block_size - offset // block_size + 1


def batch_blocks(hello: p.Hello) -> int:
    """How many consecutive blocks the agent verifies before it sends the first byte of any of them."""
    if hello.block_size <= 0:
        return 1
    return max(1, min(hello.max_frame // hello.block_size, 16))


class _Pipes:
    """Idle pipes of this process, reused: a pipe is set up once (its size raised to 1 MiB where allowed)."""

    def __init__(self) -> None:
        self._idle: list[tuple[int, int, int]] = []

    def take(self) -> tuple[int, int, int]:
        if self._idle:
            return self._idle.pop()
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            size = fcntl.fcntl(w, _F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            size = 65536
        return r, w, size

    def give(self, pipe: tuple[int, int, int], empty: bool) -> None:
        if empty and len(self._idle) < _IDLE_PIPES:
            self._idle.append(pipe)
        else:
            os.close(pipe[0])
            os.close(pipe[1])


PIPES = _Pipes()


class DirectConnection:
    """One agent connection that serves one GET window at a time, its payloads moved by the kernel."""

    def __init__(self, sock: trio.socket.SocketType, hello: p.Hello) -> None:
        self.sock = sock
        self.hello = hello
        self.broken = False

    @classmethod
    async def connect(cls, address: str | tuple[str, int]) -> DirectConnection:
        from .client import parse_address

        if isinstance(address, str) and address.startswith("unix:"):
            sock = trio.socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            target: Any = address[5:]
        else:
            host, port = parse_address(address)
            family = _socket.AF_INET6 if ":" in host else _socket.AF_INET
            sock = trio.socket.socket(family, _socket.SOCK_STREAM)
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            target = (host, port)
        try:
            await sock.connect(target)
            conn = cls(sock, p.Hello(0, b"", p.DEFAULT_MAX_FRAME, 0, 65536))
            await conn._send(p.encode_frame(Op.HELLO, _REQUEST, p.hello_payload()))
            header = await conn._header()
            if header.op != Op.RESULT:
                raise ProtocolError(f"HELLO answered with op {header.op:#x}")
            conn.hello = p.parse_hello(p.raise_for_status(await conn._exactly(header.length)))
        except BaseException:
            sock.close()
            raise
        return conn

    def close(self) -> None:
        self.broken = True
        self.sock.close()

    async def _send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                sent = await self.sock.send(view)
            except OSError as exc:
                raise DirectConnectionError(f"send to agent failed: {exc!r}") from exc
            view = view[sent:]

    async def _exactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes, never more: what follows may be a payload for the kernel to move."""
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            try:
                k = await self.sock.recv_into(view[got:], n - got)
            except OSError as exc:
                raise DirectConnectionError(f"receive from agent failed: {exc!r}") from exc
            if k == 0:
                raise DirectConnectionError("agent closed the connection")
            got += k
        return bytes(buf)

    async def _header(self) -> p.FrameHeader:
        header = p.decode_header(await self._exactly(p.HEADER_SIZE), self.hello.max_frame)
        if header.request != _REQUEST:
            raise ProtocolError(f"frame for request {header.request} on a direct connection")
        return header

    async def open(self, chunk_id: bytes, offset: int, length: int) -> DirectWindow | None:
        """Ask for ``[offset, offset+length)`` and wait for the first frame of the answer. Returns the window,
        verified whole by the agent, or None when the range is empty at the chunk's end. Raises AgentError (the
        connection stays usable) or DirectConnectionError/ProtocolError (it does not)."""
        await self._send(p.encode_frame(Op.GET, _REQUEST, p.get_payload(chunk_id, offset, length)))
        header = await self._header()
        if header.op == Op.RESULT:
            p.parse_get(p.raise_for_status(await self._exactly(header.length)))
            return None
        if header.op != Op.DATA or header.length == 0 or header.length > length:
            raise ProtocolError(f"unexpected op {header.op:#x} (length {header.length}) answering a GET")
        return DirectWindow(self, length, header.length)


class DirectWindow:
    """``length`` verified bytes waiting on the agent socket; :meth:`move_to` hands them to a client socket.

    ``len()`` is the window's length, so that h11 can account for it (``send_with_data_passthrough``)."""

    def __init__(self, conn: DirectConnection, length: int, first_frame: int) -> None:
        self.conn = conn
        self.length = length
        self._frame_left = first_frame
        self.done = False
        self.on_done: Any = None  # called with the connection once the window is fully moved and its RESULT read
        self.resume: Callable[[int], Awaitable[bytes]] | None = None  # the window's bytes from an offset on
        self._in_pipe = 0

    def __len__(self) -> int:
        return self.length

    def discard(self) -> None:
        """The window will not be moved: its connection has unread bytes and is closed."""
        if not self.done:
            self.done = True
            self.conn.close()

    async def move_to(self, client: trio.socket.SocketType) -> None:
        """Move the window's bytes to ``client``.

        If the agent connection breaks midway (the agent killed), the bytes already taken from it still go out,
        and ``resume(done)`` — set by whoever knows the chunk's other replicas — supplies the rest of the window
        from ``done`` on, sent the ordinary way: the response goes on whole. Any other failure (the client gone,
        no resume, the rest unreadable) closes the agent connection and raises; the client's response is then
        incomplete and the caller must close it."""
        try:
            await self._move(client)
        except BaseException:
            self.discard()
            raise
        self.done = True
        if self.on_done is not None:
            self.on_done(self.conn)

    async def _move(self, client: trio.socket.SocketType) -> None:
        conn = self.conn
        agent_fd, client_fd = conn.sock.fileno(), client.fileno()
        pipe = PIPES.take()
        r, w, cap = pipe
        self._in_pipe = 0
        received = 0  # payload bytes taken from the agent socket (in the pipe or gone to the client)
        try:
            try:
                while True:
                    left = self._frame_left
                    while left or self._in_pipe:
                        progressed = False
                        while left and self._in_pipe < cap:
                            try:
                                k = os.splice(agent_fd, w, min(left, cap - self._in_pipe), flags=_FLAGS)
                            except BlockingIOError:
                                break
                            except OSError as exc:
                                raise DirectConnectionError(f"splice from agent failed: {exc!r}") from exc
                            if k == 0:
                                raise DirectConnectionError("agent closed the connection mid-window")
                            left -= k
                            received += k
                            self._in_pipe += k
                            progressed = True
                        if self._in_pipe:
                            k = self._to_client(r, client_fd)
                            if k:
                                progressed = True
                            elif not left or self._in_pipe >= cap:
                                await trio.lowlevel.wait_writable(client)
                                continue
                        if not progressed:
                            await trio.lowlevel.wait_readable(conn.sock)
                        else:
                            await trio.lowlevel.checkpoint_if_cancelled()
                    self._frame_left = 0
                    header = await conn._header()
                    if header.op == Op.DATA:
                        if received + header.length > self.length:
                            raise ProtocolError(f"agent sent more than the {self.length} bytes asked for")
                        self._frame_left = header.length
                        continue
                    if header.op != Op.RESULT:
                        raise ProtocolError(f"unexpected op {header.op:#x} answering a GET")
                    result = p.parse_get(p.raise_for_status(await conn._exactly(header.length)))
                    if received != self.length:
                        raise AgentError(p.Status.RANGE, f"chunk of {result.chunk_length} bytes gave {received} of "
                                         f"the {self.length} bytes asked for")
                    return
            except DirectConnectionError as exc:
                if received < self.length and self.resume is None:
                    raise
                conn.close()
                while self._in_pipe:  # what the agent sent before it went is good: it was verified
                    if not self._to_client(r, client_fd):
                        await trio.lowlevel.wait_writable(client)
                if received >= self.length:
                    return  # every byte came (only the RESULT is missing, which adds nothing to verified data)
                log.info("agent connection broke %d bytes into a %d-byte window (%s): the rest comes from "
                         "another read", received, self.length, exc)
                assert self.resume is not None
                rest = await self.resume(received)
                if len(rest) != self.length - received:
                    raise DirectConnectionError(f"resumed read gave {len(rest)} of {self.length - received} "
                                                "bytes") from exc
                view = memoryview(rest)
                while view:
                    try:
                        sent = await client.send(view)
                    except OSError as send_exc:
                        raise trio.BrokenResourceError(f"client went away: {send_exc!r}") from send_exc
                    view = view[sent:]
        finally:
            PIPES.give(pipe, empty=self._in_pipe == 0)

    def _to_client(self, r: int, client_fd: int) -> int:
        """Splice what the pipe holds to the client: the bytes moved (0 when the client cannot take more now)."""
        try:
            k = os.splice(r, client_fd, self._in_pipe, flags=_FLAGS)
        except BlockingIOError:
            return 0
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.ECONNRESET):
                raise trio.BrokenResourceError(f"client went away: {exc!r}") from exc
            raise
        self._in_pipe -= k
        return k
