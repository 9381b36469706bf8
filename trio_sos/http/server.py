"""HTTP/1.1 server on Trio + h11: connections, limits, streamed bodies, 100-continue on the handler's word.

Knows nothing of S3. A handler receives a :class:`Request` whose body it reads as a stream, and returns a
:class:`Response` whose body may be an async iterator. ``Expect: 100-continue`` is answered only when the handler
first reads the body (or calls :meth:`Request.accept_body`), so a handler that refuses a request after checking it
never makes the client send its body.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import select
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Protocol, cast

import attrs
import h11
import trio

log = logging.getLogger("trio_sos.http")

RECEIVE_SIZE = 256 * 1024
DIRECT_PIECE = 1 << 20  # a Content-Length body's bytes are read straight into pieces of this size
COALESCE_MAX = 64 * 1024  # a response head is sent in one piece with a first body piece up to this size
BALANCE_DELAY = 0.002  # how long a busier process lets a less busy one take a waiting connection first
BUSY_WINDOW = 5.0  # a connection counts towards a process's load while it was active this recently
LOAD_REFRESH = 0.5  # how often a process publishes its load as connections fall idle


@attrs.frozen
class Limits:
    max_head_bytes: int = 16 * 1024  # request line + headers
    max_headers: int = 100
    max_target_bytes: int = 8 * 1024
    head_timeout: float = 30.0  # a request's head must arrive within this, once its first byte has
    idle_timeout: float = 75.0  # keep-alive connection with no request
    body_timeout: float = 60.0  # no body bytes for this long while the handler waits for them
    send_timeout: float = 60.0  # a client not reading its response for this long is dropped
    zero_copy: bool = True  # handlers may yield pieces with ``move_to(socket)`` for plain-TCP clients
    max_connections: int = 4096


class ClientDisconnected(Exception):
    """The client went away or broke HTTP framing while its request body was being read."""


class BodyTimeout(ClientDisconnected):
    """The client stopped sending its body."""


class HttpError(Exception):
    """A request refused at the HTTP layer, before any handler runs."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class MovedPiece(Protocol):
    """A body piece the kernel moves to the client socket itself (``Request.zero_copy``), e.g. a spliced window."""

    def __len__(self) -> int: ...

    async def move_to(self, client: trio.socket.SocketType) -> None: ...


@attrs.define(eq=False)
class Response:
    status: int
    headers: list[tuple[str, str]] = attrs.field(factory=list)
    body: bytes | AsyncIterable[bytes | MovedPiece] = b""
    content_length: int | None = None  # for a streamed body; a bytes body sets its own
    note: Any = None  # what the handler tells the server's observer about the request (the access log's fields)

    def set_header(self, name: str, value: str) -> None:
        lname = name.lower()
        self.headers = [(n, v) for n, v in self.headers if n.lower() != lname]
        self.headers.append((name, value))


class Request:
    """One request. Header names are lower-cased; values are decoded as latin-1 (bytes preserved 1:1)."""

    def __init__(self, conn: _Connection, event: h11.Request, remote: str,
                 fields: Sequence[tuple[bytes, bytes]]) -> None:
        """``fields``: the head's (lower-cased name, value) pairs."""
        self._conn = conn
        self.method: str = event.method.decode("ascii", "replace").upper()
        self.target: str = event.target.decode("latin-1")
        self.http_version: str = event.http_version.decode("ascii", "replace")
        self.headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in fields]
        self.remote = remote
        self.body_done = False
        self.body_received = 0
        self.scheme = "https" if getattr(conn, "tls", False) else "http"

    @property
    def headers(self) -> list[tuple[str, str]]:
        return self._headers

    @headers.setter
    def headers(self, value: list[tuple[str, str]]) -> None:
        self._headers = value
        self._first: dict[str, str] | None = None  # name -> its first value, made on the first lookup

    def header(self, name: str, default: str | None = None) -> str | None:
        first = self._first
        if first is None:
            first = self._first = {}
            for n, v in self._headers:
                first.setdefault(n, v)
        return first.get(name.lower(), default)

    def header_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for n, v in self.headers if n == name]

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.target.split("?", 1)[1] if "?" in self.target else ""

    @property
    def content_length(self) -> int | None:
        value = self.header("content-length")
        # h11 has checked it already (ASCII digits); bounded here too, for int()'s sake
        return int(value) if value is not None and value.isascii() and value.isdigit() and len(value) < 20 else None

    @property
    def zero_copy(self) -> bool:
        """Whether the response body may be moved by the kernel (plain TCP, splice available, not turned off)."""
        return self._conn.zero_copy

    @property
    def chunked(self) -> bool:
        return "chunked" in (self.header("transfer-encoding") or "").lower()

    @property
    def has_body(self) -> bool:
        return self.chunked or (self.content_length or 0) > 0

    async def accept_body(self) -> None:
        """Tell a client waiting on ``Expect: 100-continue`` to send its body (once, and only if it waits)."""
        await self._conn.send_continue()

    async def receive(self) -> bytes:
        """The next piece of the body, or b"" at its end. Raises ClientDisconnected if the client goes away."""
        if self.body_done:
            return b""
        await self.accept_body()
        data = await self._conn.receive_body_piece()
        if not data:
            self.body_done = True
        self.body_received += len(data)
        return data

    async def iter_body(self) -> AsyncIterator[bytes]:
        while data := await self.receive():
            yield data

    async def read_all(self, limit: int) -> bytes:
        """The whole body, refusing more than ``limit`` bytes (for XML documents and other small bodies)."""
        out = bytearray()
        async for piece in self.iter_body():
            out += piece
            if len(out) > limit:
                raise HttpError(413, f"request body larger than {limit} bytes")
        return bytes(out)


Handler = Callable[[Request], Awaitable[Response]]
ErrorRenderer = Callable[[int, str], Response]


def http_date(ts: float | None = None) -> str:
    """An HTTP date (RFC 7231): whole seconds, so each second's text is formatted once."""
    return _http_date_of(math.floor(time.time() if ts is None else ts))


@functools.lru_cache(maxsize=4096)
def _http_date_of(second: int) -> str:
    return formatdate(second, usegmt=True)


@functools.cache
def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b"Unknown"


def _wire(value: str) -> bytes:
    """A header value as bytes. Values are latin-1 strings of their bytes (request headers are decoded that way);
    text that is not (a handler's bug) goes out as UTF-8 rather than break the response. Surrounding spaces are
    not part of a field value (RFC 9110), and h11 refuses them."""
    value = value.strip(" \t")
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape")


# What h11 checks of each response field (its ``field_name`` and ``field_value`` rules), checked here in one pass:
# h11 would run two full regular expressions per field for every response, which cost more than the rest of the
# head's rendering; the fields then go to h11 as already checked (its ``_parsed``), which still frames the message.
_TOKEN_RE = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_BAD_VALUE_RE = re.compile(rb"[\x00\n\r\f\v]")  # whitespace a value may not hold (spaces and tabs it may)
@functools.lru_cache(maxsize=1024)  # names found to be tokens (user metadata names vary: bounded)
def _field_name(name: str) -> bytes:
    wire = name.encode("latin-1", "replace")
    if _TOKEN_RE.fullmatch(wire) is None:
        raise h11.LocalProtocolError(f"Illegal header name {wire!r}")
    return wire


def head_fields(first: list[tuple[bytes, bytes]], headers: Sequence[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """``first`` and then ``headers`` as h11 fields, refusing what h11 itself would refuse to send (a name that is
    not a token; a value holding a NUL, CR, LF, FF or VT): ``h11.LocalProtocolError``, nothing sent."""
    fields = first + [(_field_name(n), _wire(v)) for n, v in headers]
    if _BAD_VALUE_RE.search(b"\t".join([v for _, v in fields])) is not None:
        bad = next(v for _, v in fields if _BAD_VALUE_RE.search(v) is not None)
        raise h11.LocalProtocolError(f"Illegal header value {bad!r}")
    return fields


def _plain_error(status: int, message: str) -> Response:
    body = (message + "\n").encode()
    return Response(status, [("Content-Type", "text/plain; charset=utf-8")], body)


class _Connection:
    def __init__(self, stream: trio.abc.Stream, limits: Limits, server: HttpServer) -> None:
        self.stream = stream
        self.limits = limits
        self.server = server
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_head_bytes)
        try:
            transport = getattr(stream, "transport_stream", stream)  # under TLS, the socket is one level down
            sock = getattr(transport, "socket")  # noqa: B009  (a SocketStream; absent on other streams)
            host, port = sock.getpeername()[:2]
            self.remote = f"{host}:{port}"
        except (AttributeError, OSError):
            self.remote = "?"
        self.zero_copy = limits.zero_copy and hasattr(os, "splice") and isinstance(stream, trio.SocketStream)
        self.tls = isinstance(stream, trio.SSLStream)
        self.last_active = trio.current_time()  # accepted, or a request started or answered
        self.sent = 0  # body bytes of the current response sent so far
        self.sent_all = False  # the current response went out whole

    async def _send(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if data:
            with trio.fail_after(self.limits.send_timeout):
                await self.stream.send_all(data)

    async def send_continue(self) -> None:
        # h11 clears the flag once the 100 is sent, and sets it again for the next request that asks
        if self.h11.they_are_waiting_for_100_continue:
            await self._send(h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue"))

    async def _next_event(self, patience: float) -> h11.Event:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return cast(h11.Event, event)  # PAUSED cannot happen mid-request
            with trio.move_on_after(patience) as scope:
                data = await self.stream.receive_some(RECEIVE_SIZE)
            if scope.cancelled_caught:
                raise BodyTimeout(f"no data from {self.remote} for {patience}s")
            self.h11.receive_data(cast(bytes, data))  # bytes-like: h11 copies it into its buffer

    def _direct_left(self) -> tuple[Any, int] | None:
        """(h11's reader, bytes left) when the rest of a Content-Length body can be read straight from the
        stream: h11 holds none of it in its buffer. None leaves the body to h11: chunked framing, bytes
        buffered already, the body's end, or an h11 without the reader this relies on (then it is never used)."""
        reader = getattr(self.h11, "_reader", None)
        left = getattr(reader, "_remaining", None)
        if type(reader).__name__ != "ContentLengthReader" or type(left) is not int or left <= 0:
            return None
        if len(getattr(self.h11, "_receive_buffer", b"?")):
            return None
        return reader, left

    async def _receive_direct(self, reader: Any, left: int) -> bytearray:
        """The next piece of a Content-Length body, up to ``DIRECT_PIECE`` bytes, read into a fresh buffer of
        its own: no pass through h11's buffer and no copy but the kernel's. h11's count of what remains is kept
        true, so its state follows as if it had parsed these bytes (the body's end is its EndOfMessage)."""
        piece = bytearray(min(left, DIRECT_PIECE))
        view = memoryview(piece)
        sock = self.stream.socket if isinstance(self.stream, trio.SocketStream) else None
        filled = 0
        try:
            while filled < len(piece):
                with trio.move_on_after(self.limits.body_timeout) as scope:
                    if sock is not None:
                        n = await sock.recv_into(view[filled:])
                    else:
                        data = await self.stream.receive_some(len(piece) - filled)
                        n = len(data)
                        view[filled:filled + n] = data
                if scope.cancelled_caught:
                    raise BodyTimeout(f"no data from {self.remote} for {self.limits.body_timeout}s")
                if not n:
                    raise ClientDisconnected("client closed the connection mid-body")
                filled += n
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ClientDisconnected(str(exc)) from exc
        finally:
            reader._remaining -= filled
        return piece

    async def receive_body_piece(self) -> bytes:
        direct = self._direct_left()
        if direct is not None:
            # bytes-like, and never written to once handed out
            return await self._receive_direct(*direct)  # type: ignore[return-value]
        try:
            event = await self._next_event(self.limits.body_timeout)
        except h11.RemoteProtocolError as exc:
            raise ClientDisconnected(f"bad body framing: {exc}") from exc
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ClientDisconnected(str(exc)) from exc
        if type(event) is h11.Data:
            return event.data  # bytes-like (h11 hands out a fresh buffer): no extra copy
        if type(event) is h11.EndOfMessage:
            return b""
        if type(event) is h11.ConnectionClosed:
            raise ClientDisconnected("client closed the connection mid-body")
        raise ClientDisconnected(f"unexpected {type(event).__name__} in a request body")

    async def run(self) -> None:
        try:
            while True:
                if not await self._one_request():
                    break
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError) as exc:
            log.debug("connection %s ended: %r", self.remote, exc)
        finally:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self.stream)

    async def _read_head(self) -> h11.Request | None:
        """The next request's head; None when the client is done with this connection."""
        with trio.move_on_after(self.limits.idle_timeout) as idle:
            self.server.waiting_heads.add(idle)  # a stopping server ends connections that wait for a request
            if self.server.stopping:
                idle.cancel()
            started = shortened = False
            while True:
                event = self.h11.next_event()
                if event is not h11.NEED_DATA:
                    break
                if started and not shortened:
                    # once part of a head has arrived, the rest must follow within head_timeout (set only when
                    # it has to be waited for: most heads arrive whole, in one read)
                    idle.deadline = min(idle.deadline, trio.current_time() + self.limits.head_timeout)
                    shortened = True
                data = await self.stream.receive_some(RECEIVE_SIZE)
                self.h11.receive_data(cast(bytes, data))  # bytes-like: h11 copies it into its buffer
                started = started or bool(data)
        self.server.waiting_heads.discard(idle)
        if idle.cancelled_caught:
            if self.h11.trailing_data[0] and not self.server.stopping:
                raise HttpError(408, "request head not received in time")
            return None
        if type(event) is h11.ConnectionClosed:
            return None
        if type(event) is not h11.Request:
            raise HttpError(400, f"unexpected {type(event).__name__}")
        return event

    async def _one_request(self) -> bool:
        if self.server.stopping:
            return False
        try:
            event = await self._read_head()
        except h11.RemoteProtocolError as exc:
            await self._send_error(exc.error_status_hint, f"bad request: {exc}")
            return False
        except HttpError as exc:
            await self._send_error(exc.status, str(exc))
            return False
        if event is None:
            return False
        fields = [(name.lower(), value) for name, value in event.headers.raw_items()]
        problem = self._check_head(event, fields)
        if problem is not None:
            await self._send_error(*problem)
            return False
        request = Request(self, event, self.remote, fields)
        self.server.in_flight += 1
        self.last_active = trio.current_time()
        started = time.perf_counter()
        try:
            response = await self.server.call_handler(request)
        finally:
            self.server.in_flight -= 1
            if self.server.in_flight == 0:
                self.server.idle.set()
        self.sent = 0
        completed = False
        try:
            keep = await self._respond(request, response)
            completed = self.sent_all
            return keep
        finally:
            self.last_active = trio.current_time()
            observer = self.server.observer
            if observer is not None:
                observer.request_done(request, response, self.sent, time.perf_counter() - started, completed)

    def _check_head(self, event: h11.Request, fields: Sequence[tuple[bytes, bytes]]) -> tuple[int, str] | None:
        """``fields``: the head's (lower-cased name, value) pairs."""
        # h11 bounds a head that arrives in pieces; one that arrives whole in a single read is measured here.
        if len(event.target) > self.limits.max_target_bytes:
            return 414, f"request target longer than {self.limits.max_target_bytes} bytes"
        if len(fields) > self.limits.max_headers:
            return 431, f"more than {self.limits.max_headers} header fields"
        if sum(len(n) + len(v) + 4 for n, v in fields) > self.limits.max_head_bytes:
            return 431, f"request headers larger than {self.limits.max_head_bytes} bytes"
        te = [v.lower() for n, v in fields if n == b"transfer-encoding"]
        if te:
            if any(n == b"content-length" for n, _ in fields):
                return 400, "both Transfer-Encoding and Content-Length"
            if te != [b"chunked"]:
                return 501, "only chunked transfer-encoding is supported"
        return None

    async def _send_error(self, status: int, message: str) -> None:
        log.info("http error %d from %s: %s", status, self.remote, message)
        response = self.server.render_error(status, message)
        response.set_header("Connection", "close")
        try:
            if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await self._send_response(response)
        except (h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            pass

    async def _send_response(self, response: Response, head: bool = False) -> None:
        headers = head_fields([(b"Date", http_date().encode()), (b"Server", b"trio_sos")], response.headers)
        body = response.body
        if response.content_length is not None:
            headers.append((b"Content-Length", str(response.content_length).encode()))
        elif isinstance(body, (bytes, bytearray)) and response.status != 304:
            headers.append((b"Content-Length", str(len(body)).encode()))
        # A reason phrase, always: botocore's 100-continue handling reads a status line of three parts.
        # The head goes out with the body's first piece when that is small (one send, not two, for most answers).
        pending: bytes | None = self.h11.send(h11.Response(status_code=response.status, headers=headers,
                                                           reason=_reason(response.status), _parsed=True))
        self.sent_all = False
        if head or response.status == 304:
            pass  # no body, whatever Content-Length says (it describes the GET's body)
        elif isinstance(body, (bytes, bytearray)):
            if body:
                await self._send_with(pending, self.h11.send(h11.Data(data=body)))
                self.sent += len(body)
                pending = None
        else:
            async for piece in body:
                if not isinstance(piece, (bytes, bytearray, memoryview)):
                    # A piece the kernel moves to the socket (``move_to``, e.g. a spliced agent window, offered
                    # only when ``Request.zero_copy``): h11 only counts its length against Content-Length.
                    self.h11.send_with_data_passthrough(h11.Data(data=piece))  # type: ignore[arg-type]
                    with trio.fail_after(self.limits.send_timeout):
                        if pending:
                            await self.stream.send_all(pending)
                            pending = None
                        await piece.move_to(self.stream.socket)  # type: ignore[attr-defined]
                    self.sent += len(piece)
                elif piece:
                    await self._send_with(pending, self.h11.send(h11.Data(data=piece)))
                    self.sent += len(piece)
                    pending = None
        await self._send_with(pending, self.h11.send(h11.EndOfMessage()) or b"")
        self.sent_all = True

    async def _send_with(self, pending: bytes | None, data: bytes) -> None:
        """Send ``data`` after the bytes still ``pending`` (the response head), together when both are small."""
        if pending:
            if len(data) <= COALESCE_MAX:
                data = pending + data
            else:
                await self._send_bytes(pending)
        if data:
            await self._send_bytes(data)

    async def _send_bytes(self, data: bytes) -> None:
        """``send_all`` within the send timeout (``trio.fail_after``'s behaviour, without its generator-based
        context manager: this runs for every response)."""
        with trio.CancelScope(deadline=trio.current_time() + self.limits.send_timeout) as scope:
            await self.stream.send_all(data)
        if scope.cancelled_caught:
            raise trio.TooSlowError

    async def _respond(self, request: Request, response: Response) -> bool:
        """Send the response; True if the connection can serve another request."""
        keep_alive = not self.server.stopping
        if not request.body_done and request.has_body:
            # The handler did not read the body (it refused the request). A client that waited for
            # 100-continue never sent it; any other may be sending it now. Either way this connection's
            # framing cannot be trusted for another request: answer and close.
            keep_alive = False
        if keep_alive and not request.body_done:
            # A bodiless request still has to be read up to its end of message before the next one.
            try:
                while await self.receive_body_piece():
                    keep_alive = False  # a body after all (cannot happen without framing headers); stop here
                    break
                request.body_done = True
            except ClientDisconnected:
                keep_alive = False
        if not keep_alive:
            response.set_header("Connection", "close")
        try:
            await self._send_response(response, head=request.method == "HEAD")
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            raise
        except Exception as exc:
            # A streamed body that failed midway (agent lost, chunk corrupt) or did not match its
            # Content-Length: the status line is gone already, so the only honest signal left is to cut the
            # connection, which the client sees as an incomplete response.
            log.warning("response to %s %s aborted: %r", request.method, request.target, exc)
            return False
        if self.h11.our_state is h11.MUST_CLOSE or not keep_alive:
            return False
        try:
            self.h11.start_next_cycle()
        except h11.LocalProtocolError:
            return False
        return True


def _readable_now(sock: trio.socket.SocketType) -> bool:
    poller = select.poll()  # not select(): a descriptor above FD_SETSIZE is fine here
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


class Observer(Protocol):
    """Told of every connection opened or closed and of every request once its response is sent (or aborted):
    metrics and the access log."""

    def connection(self, delta: int) -> None: ...

    def request_done(self, request: Request, response: Response, sent: int, seconds: float,
                     completed: bool) -> None: ...


class Balance(Protocol):
    """The connection counts of the processes that share the listening sockets (``workers.Load``)."""

    def set(self, connections: int) -> None: ...

    def least_other(self) -> int: ...


class HttpServer:
    """Serves ``handler`` on the given listeners until cancelled or :meth:`stop` is called."""

    def __init__(self, handler: Handler, *, limits: Limits | None = None,
                 render_error: ErrorRenderer = _plain_error, balance: Balance | None = None,
                 observer: Observer | None = None) -> None:
        self.handler = handler
        self.observer = observer
        self.balance = balance  # processes sharing the listening sockets: their loads
        self._open: set[_Connection] = set()
        self.limits = limits or Limits()
        self.render_error = render_error
        self.stopping = False
        self.in_flight = 0
        self.idle = trio.Event()
        self.connections = 0
        self.waiting_heads: set[trio.CancelScope] = set()
        self._accepting = trio.CancelScope()

    async def call_handler(self, request: Request) -> Response:
        try:
            return await self.handler(request)
        except ClientDisconnected:
            raise
        except HttpError as exc:
            return self.render_error(exc.status, str(exc))
        except Exception:
            log.exception("handler failed for %s %s", request.method, request.target)
            return self.render_error(500, "internal error")

    async def serve(
        self,
        listeners: Sequence[trio.abc.Listener],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with trio.open_nursery() as nursery:
            with self._accepting:
                for listener in listeners:
                    nursery.start_soon(self._accept_loop, listener, nursery)
                if self.balance is not None:
                    nursery.start_soon(self._publish_load)
                task_status.started()
                await trio.sleep_forever()
            for listener in listeners:
                await listener.aclose()

    async def _accept_loop(self, listener: trio.abc.Listener, nursery: trio.Nursery) -> None:
        plain = getattr(listener, "transport_listener", listener)  # under TLS, the socket is one level down
        sock = getattr(plain, "socket", None)
        while True:
            if self.balance is not None and sock is not None:
                # Processes share this socket: once a connection is waiting, one with more busy connections than
                # another gives the other a moment to take it, then takes it if it is still there.
                await trio.lowlevel.wait_readable(sock)
                if self.load() > self.balance.least_other():
                    await trio.sleep(BALANCE_DELAY)
                    if not _readable_now(sock):
                        continue  # it was taken: wait for the next one, and look at the counts again
            try:
                stream = await listener.accept()
            except (OSError, trio.ClosedResourceError) as exc:
                if isinstance(exc, trio.ClosedResourceError):
                    return
                log.warning("accept failed: %r", exc)
                await trio.sleep(0.1)  # EMFILE and friends: let connections drain before retrying
                continue
            if self.connections >= self.limits.max_connections:
                await trio.aclose_forcefully(stream)
                continue
            self.connections += 1
            if self.observer is not None:
                self.observer.connection(1)
            conn = _Connection(stream, self.limits, self)
            self._open.add(conn)
            if self.balance is not None:
                self.balance.set(self.load())  # at once: the next accept decision, here or elsewhere, sees it
            nursery.start_soon(self._serve_connection, conn)

    def load(self) -> int:
        """Connections that are busy: accepted, or with a request started or answered, within BUSY_WINDOW."""
        since = trio.current_time() - BUSY_WINDOW
        return sum(1 for conn in self._open if conn.last_active >= since)

    async def _publish_load(self) -> None:
        """Keep the published load current as connections fall idle (``balance`` only)."""
        assert self.balance is not None
        while True:
            self.balance.set(self.load())
            await trio.sleep(LOAD_REFRESH)

    async def _serve_connection(self, conn: _Connection) -> None:
        """Serve one accepted connection (already counted in ``connections``)."""
        try:
            await conn.run()
        except ClientDisconnected as exc:
            log.info("client gone: %s", exc)
        finally:
            self.connections -= 1
            if self.observer is not None:
                self.observer.connection(-1)
            self._open.discard(conn)
            if self.balance is not None:
                self.balance.set(self.load())

    def stop_accepting(self) -> None:
        """Stop taking connections and requests; requests in flight go on, idle connections end."""
        self.stopping = True
        self._accepting.cancel()
        for scope in self.waiting_heads:
            scope.cancel()
        if self.in_flight == 0:
            self.idle.set()


async def graceful_stop(server: HttpServer, scope: trio.CancelScope, grace: float) -> None:
    """Stop accepting, give requests in flight ``grace`` seconds, then cancel whatever is left."""
    server.stop_accepting()
    with trio.move_on_after(grace):
        while server.in_flight:
            await server.idle.wait()
            server.idle = trio.Event()
    scope.cancel()

