"""The admin listener: a small h11 front that serves ``/health``, ``/ready``, ``/metrics`` and the dashboard's
static files, and hands an authenticated ``GET /ws`` upgrade to trio-websocket for the admin protocol. It never
serves S3.

Authentication happens before the upgrade (``docs/admin-protocol.md``): a SigV4 presigned URL for the service
``trio-sos-admin``, by a user named in ``admin_users``; anything else gets 401/403 and no WebSocket.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mimetypes
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Any, cast
from urllib.parse import parse_qsl

import h11
import trio
import trio_websocket

from ..auth import sigv4
from .events import EventHub, Subscriber
from .ops import AdminOps

log = logging.getLogger("trio_sos.admin")

ADMIN_SERVICE = "trio-sos-admin"
MAX_EXPIRES = 300
MAX_MESSAGE = 64 * 1024
MAX_SESSIONS = 64
MAX_CONNECTIONS = 256  # open connections of the admin listener (sessions included); more are closed at once
MAX_HEAD = 16 * 1024
HEAD_TIMEOUT = 10.0
IDLE_TIMEOUT = 60.0
SEND_TIMEOUT = 30.0
SEND_BUFFER = 64 * 1024
CSP = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; frame-ancestors 'none'"


class _Replay(trio.abc.Stream):
    """A stream whose first bytes are ``prefix`` (the request head h11 already read), then the wrapped stream's:
    trio-websocket reads the handshake itself."""

    def __init__(self, inner: trio.abc.Stream, prefix: bytes) -> None:
        self.inner = inner
        self.prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self.prefix:
            data, self.prefix = self.prefix, b""
            return data
        return cast(bytes, await self.inner.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.inner.aclose()


class AdminServer:
    def __init__(self, ops: AdminOps, hub: EventHub, *, users: Callable[[str], Awaitable[Any]],
                 admins: tuple[str, ...], render_metrics: Callable[[], bytes],
                 ready: Callable[[], Awaitable[tuple[bool, dict]]], metrics_token: str | None = None,
                 on_sessions: Callable[[int], None] | None = None) -> None:
        self.ops = ops
        self.hub = hub
        self.users = users
        self.admins = set(admins)
        self.render_metrics = render_metrics
        self.ready = ready
        self.metrics_token = metrics_token
        self.on_sessions = on_sessions
        self.sessions = 0
        self.connections = 0
        self.key_cache = sigv4.SigningKeyCache(64)

    async def serve(self, listeners: list[trio.abc.Listener], *,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(self._accept_loop, listener, nursery)
            task_status.started()

    async def _accept_loop(self, listener: trio.abc.Listener, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except trio.ClosedResourceError:
                return
            except OSError as exc:
                log.warning("admin: accept failed: %r", exc)
                await trio.sleep(0.1)
                continue
            if self.connections >= MAX_CONNECTIONS:
                await trio.aclose_forcefully(stream)
                continue
            self.connections += 1
            nursery.start_soon(self._connection, stream)

    async def _connection(self, stream: trio.abc.Stream) -> None:
        transport = getattr(stream, "transport_stream", stream)
        if isinstance(transport, trio.SocketStream):
            # what the kernel holds for a subscriber that does not read stays small: past it, events are dropped
            # (counted) in the node's bounded queue rather than buffered
            with contextlib.suppress(OSError):
                transport.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        try:
            while True:
                event = await self._next(conn, stream, IDLE_TIMEOUT)
                if type(event) is not h11.Request:
                    return
                request = event
                # the body (none expected) up to its end, or the pause of an upgrade request; all of it within
                # HEAD_TIMEOUT (a client dribbling bytes does not hold the connection longer)
                body = 0
                deadline = trio.current_time() + HEAD_TIMEOUT
                while True:
                    event = await self._next(conn, stream, max(0.0, deadline - trio.current_time()))
                    if type(event) is h11.Data:
                        body += len(event.data)
                        if body > MAX_HEAD:
                            await self._send(conn, stream, 413, _err("TooLarge", "request body too large"), close=True)
                            return
                        continue
                    break
                if type(event) is h11.ConnectionClosed:
                    return
                target = request.target.decode("latin-1")
                path, _, query = target.partition("?")
                if path == "/ws":
                    await self._websocket(conn, stream, request, target, query)
                    return
                if not await self._http(conn, stream, request, path):
                    return
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (h11.RemoteProtocolError, h11.LocalProtocolError) as exc:
            await self._send(conn, stream, 400, _err("BadRequest", f"bad request: {exc}"), close=True)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError) as exc:
            log.debug("admin connection ended: %r", exc)
        except Exception:  # a bug: this connection ends, never the listener or the node
            log.exception("admin connection failed")
        finally:
            self.connections -= 1
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)

    async def _next(self, conn: h11.Connection, stream: trio.abc.Stream, patience: float) -> Any:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event  # an event, or PAUSED (an upgrade request's end)
            with trio.fail_after(patience):
                data = await stream.receive_some(65536)
            conn.receive_data(bytes(data))

    async def _send(self, conn: h11.Connection, stream: trio.abc.Stream, status: int, body: Any, *,
                    content_type: str = "application/json", close: bool = False, head: bool = False,
                    headers: list[tuple[str, str]] | None = None) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        data = body if isinstance(body, bytes) else (json.dumps(body) + "\n").encode()
        hdrs = [("Content-Type", content_type), ("Content-Length", str(len(data))), ("Cache-Control", "no-store"),
                ("X-Content-Type-Options", "nosniff"), ("Server", "trio_sos-admin"), *(headers or [])]
        if close:
            hdrs.append(("Connection", "close"))
        out = conn.send(h11.Response(status_code=status, headers=hdrs, reason=_reason(status)))
        if not head:
            out += conn.send(h11.Data(data=data))
        out += conn.send(h11.EndOfMessage())
        with trio.fail_after(SEND_TIMEOUT):
            await stream.send_all(out)

    # -- plain HTTP --

    async def _http(self, conn: h11.Connection, stream: trio.abc.Stream, request: h11.Request, path: str) -> bool:
        method = request.method.decode("ascii", "replace")
        if method not in ("GET", "HEAD"):
            await self._send(conn, stream, 405, _err("MethodNotAllowed", "the admin listener answers GET and HEAD"),
                             headers=[("Allow", "GET, HEAD")])
            return True
        head = method == "HEAD"
        if path == "/health":
            await self._send(conn, stream, 200, b"ok\n", content_type="text/plain; charset=utf-8", head=head)
        elif path == "/ready":
            ok, why = await self.ready()
            await self._send(conn, stream, 200 if ok else 503, {"ready": ok, **why}, head=head)
        elif path == "/metrics":
            if self.metrics_token and not _bearer_ok(request, self.metrics_token):
                await self._send(conn, stream, 401, _err("Unauthorized", "a bearer token is required"),
                                 headers=[("WWW-Authenticate", 'Bearer realm="trio_sos metrics"')])
                return True
            from prometheus_client.exposition import CONTENT_TYPE_LATEST

            await self._send(conn, stream, 200, self.render_metrics(), content_type=CONTENT_TYPE_LATEST, head=head)
        else:
            static = _static(path)
            if static is None:
                await self._send(conn, stream, 404, _err("NotFound", "not found (the admin listener never serves S3)"),
                                 head=head)
            else:
                data, ctype = static
                await self._send(conn, stream, 200, data, content_type=ctype, head=head,
                                 headers=[("Content-Security-Policy", CSP), ("X-Frame-Options", "DENY"),
                                          ("Referrer-Policy", "no-referrer")])
        return True

    # -- the WebSocket --

    async def _websocket(self, conn: h11.Connection, stream: trio.abc.Stream, request: h11.Request, target: str,
                         query: str) -> None:
        headers = [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in request.headers]
        upgrade = any(n == "upgrade" and v.strip().lower() == "websocket" for n, v in headers)
        if request.method != b"GET" or not upgrade:
            await self._send(conn, stream, 400, _err("NotWebSocket", "/ws takes a WebSocket upgrade (GET)"),
                             close=True, head=request.method == b"HEAD")
            return
        refused = await self._authenticate(target, query, headers)
        if isinstance(refused, tuple):
            status, code, message = refused
            log.info("admin: refused a WebSocket session (%s: %s)", code, message)
            await self._send(conn, stream, status, _err(code, message), close=True)
            return
        user = refused
        if self.sessions >= MAX_SESSIONS:
            await self._send(conn, stream, 503, _err("TooManySessions", f"at most {MAX_SESSIONS} admin sessions"),
                             close=True)
            return
        # hand the connection to trio-websocket: it reads the handshake again (replayed), then the frames
        head = b"GET " + request.target + b" HTTP/1.1\r\n" + b"".join(
            n + b": " + v + b"\r\n" for n, v in request.headers) + b"\r\n"
        replay = _Replay(stream, head + conn.trailing_data[0])
        self.sessions += 1
        self._sessions_changed()
        try:
            async with trio.open_nursery() as nursery:
                ws_request = await trio_websocket.wrap_server_stream(nursery, replay, message_queue_size=4,
                                                                     max_message_size=MAX_MESSAGE)
                ws = await ws_request.accept()
                log.info("admin: session of %s opened", user.id)
                try:
                    await self._session(ws)
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(2):
                        await ws.aclose()
                    log.info("admin: session of %s closed", user.id)
                nursery.cancel_scope.cancel()
        except trio_websocket.ConnectionClosed:
            pass
        finally:
            self.sessions -= 1
            self._sessions_changed()

    def _sessions_changed(self) -> None:
        if self.on_sessions is not None:
            self.on_sessions(self.sessions)

    async def _authenticate(self, target: str, query: str, headers: list[tuple[str, str]]
                            ) -> Any | tuple[int, str, str]:
        pairs = parse_qsl(query, keep_blank_values=True)
        if not any(name == "X-Amz-Signature" for name, _ in pairs):
            return 401, "AccessDenied", ("sign the URL: a SigV4 presigned URL for the service trio-sos-admin "
                                         "(docs/admin-protocol.md)")
        try:
            parsed = sigv4.parse_presigned(pairs)
            if parsed.expires > MAX_EXPIRES:
                return 401, "AuthorizationQueryParametersError", f"X-Amz-Expires must be at most {MAX_EXPIRES}"
            found = await self.users(parsed.access_key)
            if found is None:
                return 401, "InvalidAccessKeyId", "the access key is not known (or is Inactive)"
            user, secret = found
            sigv4.verify_presigned("GET", target, headers, parsed, secret, now=datetime.now(UTC),
                                   key_cache=self.key_cache, service=ADMIN_SERVICE)
        except sigv4.AuthError as exc:
            return 401, exc.code, exc.message
        if user.id not in self.admins:
            return 403, "NotAdministrator", f"user {user.id!r} is not an administrator (setting admin_users)"
        return user

    async def _session(self, ws: trio_websocket.WebSocketConnection) -> None:
        sub = self.hub.subscriber()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._forward, ws, sub)
                while True:
                    try:
                        message = await ws.get_message()
                    except trio_websocket.ConnectionClosed:
                        break
                    reply = await self.ops.handle(message, sub)
                    try:
                        await ws.send_message(json.dumps(reply, default=str))
                    except trio_websocket.ConnectionClosed:
                        break
                nursery.cancel_scope.cancel()
        finally:
            self.hub.remove(sub)

    async def _forward(self, ws: trio_websocket.WebSocketConnection, sub: Subscriber) -> None:
        """This session's events, in order; a ``dropped`` notice first when some were lost."""
        try:
            async for message in sub.receive:
                if sub.dropped:
                    count, sub.dropped = sub.dropped, 0
                    await ws.send_message(json.dumps({"event": "dropped", "at": round(time.time(), 3),
                                                      "data": {"count": count}}))
                await ws.send_message(json.dumps(message, default=str))
        except trio_websocket.ConnectionClosed:
            pass


def _err(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def _bearer_ok(request: h11.Request, token: str) -> bool:
    import hmac

    for name, value in request.headers:
        if name.lower() == b"authorization":
            scheme, _, given = value.decode("latin-1").partition(" ")
            return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
    return False


_STATIC_CACHE: dict[str, tuple[bytes, str] | None] = {}


def _static(path: str) -> tuple[bytes, str] | None:
    """The dashboard's files: ``/`` is index.html; ``/NAME`` a file of the package's static directory (a plain
    name: no directories, nothing outside it)."""
    name = "index.html" if path in ("/", "/index.html") else path[1:]
    if name in _STATIC_CACHE:
        return _STATIC_CACHE[name]
    result = None
    if name and "/" not in name and "\\" not in name and not name.startswith(".") and len(name) < 64:
        try:
            data = resources.files("trio_sos.admin").joinpath("static", name).read_bytes()
        except (OSError, ValueError):
            data = None
        if data is not None:
            ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
            if ctype.startswith("text/") or ctype.endswith("javascript"):
                ctype += "; charset=utf-8"
            result = (data, ctype)
    if len(_STATIC_CACHE) < 64:
        _STATIC_CACHE[name] = result
    return result


def _reason(status: int) -> bytes:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Status"
