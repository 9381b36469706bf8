"""The admin protocol's client side: presigned URLs, an :class:`AdminClient` session, and the
``python -m trio_sos admin`` command (tables and progress bars on a terminal, ``--json`` for scripts)."""

from __future__ import annotations

import hmac
import itertools
import json
import os
import ssl
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import trio
import trio_websocket

from ..background import WORKERS
from ..auth import sigv4

SERVICE = "trio-sos-admin"


class AdminError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def presign(endpoint: str, access_key: str, secret_key: str, *, region: str = "us-east-1", expires: int = 60,
            now: datetime | None = None, service: str = SERVICE) -> str:
    """The ``ws://``/``wss://`` URL of the admin protocol at ``endpoint`` (``http(s)://host:port``), presigned."""
    parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"{endpoint!r} is not an admin endpoint (http://HOST:PORT or https://HOST:PORT)")
    when = (now or datetime.now(UTC)).astimezone(UTC)
    amz_date, date = when.strftime("%Y%m%dT%H%M%SZ"), when.strftime("%Y%m%d")
    scope = f"{date}/{region}/{service}/aws4_request"
    params = {"X-Amz-Algorithm": "AWS4-HMAC-SHA256", "X-Amz-Credential": f"{access_key}/{scope}",
              "X-Amz-Date": amz_date, "X-Amz-Expires": str(expires), "X-Amz-SignedHeaders": "host"}
    query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params.items()))
    canonical = sigv4.canonical_request("GET", "/ws", query, [("host", parts.netloc)], ["host"],
                                        sigv4.UNSIGNED_PAYLOAD)
    key = sigv4.derive_signing_key(secret_key, date, region, service)
    signature = hmac.new(key, sigv4.string_to_sign(amz_date, scope, canonical).encode(), "sha256").hexdigest()
    return f"{scheme}://{parts.netloc}/ws?{query}&X-Amz-Signature={signature}"


class AdminClient:
    """One admin session. ``call`` sends a request and returns its result (or raises AdminError); events that
    arrive meanwhile are kept (at most 1,000) for ``events``."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._events: list[dict] = []
        self._lock = trio.Lock()

    async def call(self, op: str, args: dict | None = None) -> Any:
        async with self._lock:
            request_id = next(self._ids)
            await self.ws.send_message(json.dumps({"id": request_id, "op": op, "args": args or {}}))
            while True:
                message = json.loads(await self.ws.get_message())
                if "event" in message:
                    if len(self._events) < 1000:
                        self._events.append(message)
                    continue
                if message.get("id") != request_id:
                    continue
                if message.get("ok"):
                    return message["result"]
                error = message.get("error") or {}
                raise AdminError(str(error.get("code")), str(error.get("message")))

    async def events(self) -> AsyncIterator[dict]:
        while True:
            if self._events:
                yield self._events.pop(0)
                continue
            message = json.loads(await self.ws.get_message())
            if "event" in message:
                yield message


@asynccontextmanager
async def connect(endpoint: str, access_key: str, secret_key: str, *, region: str = "us-east-1",
                  cafile: str | None = None) -> AsyncIterator[AdminClient]:
    url = presign(endpoint, access_key, secret_key, region=region)
    context = None
    if url.startswith("wss://"):
        context = ssl.create_default_context(cafile=cafile)
    try:
        async with trio_websocket.open_websocket_url(url, ssl_context=context, connect_timeout=10,
                                                     disconnect_timeout=5) as ws:
            yield AdminClient(ws)
    except trio_websocket.ConnectionRejected as exc:
        try:
            error = json.loads(exc.body or b"{}").get("error") or {}
        except ValueError:
            error = {}
        if not isinstance(error, dict):
            error = {"code": "Refused", "message": str(error)}
        raise AdminError(str(error.get("code", exc.status_code)),
                         f"{error.get('message', 'refused')} (HTTP {exc.status_code})") from None
    except trio_websocket.HandshakeError as exc:
        raise AdminError("unreachable", f"cannot open an admin session at {endpoint}: {exc}") from None


# -- the command line --

def add_parser(sub: Any) -> None:

    admin = sub.add_parser("admin", help="operate a node through its admin endpoint (WebSocket)",
                           description="Speaks the admin protocol (docs/admin-protocol.md) to a node's admin "
                                       "listener, as an administrator (setting admin_users).")
    admin.add_argument("--endpoint", default=os.environ.get("TRIO_SOS_ADMIN_ENDPOINT", "http://127.0.0.1:9001"),
                       help="the node's admin listener (default $TRIO_SOS_ADMIN_ENDPOINT or http://127.0.0.1:9001)")
    admin.add_argument("--access-key", default=os.environ.get("AWS_ACCESS_KEY_ID"),
                       help="an administrator's access key (default $AWS_ACCESS_KEY_ID)")
    admin.add_argument("--secret-key", default=os.environ.get("AWS_SECRET_ACCESS_KEY"),
                       help="its secret key (default $AWS_SECRET_ACCESS_KEY)")
    admin.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    admin.add_argument("--cafile", help="CA certificate(s) for an https:// admin endpoint")
    admin.add_argument("--json", action="store_true", help="print results as JSON (for scripts)")
    verbs = admin.add_subparsers(dest="admin_command", required=True)
    verbs.add_parser("status", help="the node, the cluster's nodes and agents, the background workers")
    verbs.add_parser("agents", help="the agents: address, zone, fill, state, health, latency")
    for verb, text in (("drain", "stop placing chunks on an agent; repair moves its chunks elsewhere"),
                       ("undrain", "take an agent back into placement (also lifts a removal)"),
                       ("remove", "forget an agent: drained, or gone for good (its chunks are re-replicated now)")):
        p = verbs.add_parser(verb, help=text)
        p.add_argument("agent_id", help="the agent's id (32 hex digits)")
        if verb == "drain":
            p.add_argument("--wait", action="store_true", help="show the chunks left until the agent is drained")
    for worker in WORKERS:
        p = verbs.add_parser(worker, help=f"run a {worker} pass now, or pause/resume/cancel it")
        p.add_argument("action", nargs="?", default="start", choices=("start", "pause", "resume", "cancel",
                                                                      "status"))
        p.add_argument("--watch", action="store_true", help="show the progress until the pass ends")
    users = verbs.add_parser("users", help="users and their keys")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    users_sub.add_parser("list")
    create = users_sub.add_parser("create", help="create a user and print its key pair")
    create.add_argument("name")
    create.add_argument("--display-name")
    create.add_argument("--email")
    delete = users_sub.add_parser("delete")
    delete.add_argument("name")
    rotate = users_sub.add_parser("rotate", help="give a user a new key pair (the old one stops working at once)")
    rotate.add_argument("name")
    verbs.add_parser("buckets", help="the buckets")
    usage = verbs.add_parser("usage", help="a bucket's objects and bytes")
    usage.add_argument("bucket")
    verbs.add_parser("config", help="the node's settings (secrets hidden)")
    verbs.add_parser("version", help="the node's version")
    watch = verbs.add_parser("watch", help="print events as they come (^C to stop)")
    watch.add_argument("topics", nargs="*", default=["*"],
                       help="agents nodes leaders progress findings requests stats (default: all)")


def main(args: Any) -> int:
    if not args.access_key or not args.secret_key:
        print("trio_sos admin: an administrator's key is needed: --access-key/--secret-key or AWS_ACCESS_KEY_ID/"
              "AWS_SECRET_ACCESS_KEY", file=sys.stderr)
        return 2
    try:
        return trio.run(_run, args)
    except AdminError as exc:
        print(f"trio_sos admin: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except (OSError, trio_websocket.ConnectionClosed, ValueError) as exc:
        print(f"trio_sos admin: {args.endpoint}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


async def _run(args: Any) -> int:
    async with connect(args.endpoint, args.access_key, args.secret_key, region=args.region,
                       cafile=args.cafile) as client:
        cmd = args.admin_command
        out = _Output(args.json)
        if cmd == "status":
            out.status(await client.call("status"))
        elif cmd == "agents":
            out.agents((await client.call("agents.list"))["agents"])
        elif cmd in ("drain", "undrain", "remove"):
            result = await client.call(f"agents.{cmd}", {"agent": args.agent_id})
            out.line(result, f"agent {result['agent']}: {result['state']}")
            if cmd == "drain" and args.wait:
                return await _wait_drained(client, result["agent"], out)
        elif cmd in WORKERS:
            return await _worker(client, cmd, args.action, args.watch, out)
        elif cmd == "users":
            if args.users_command == "list":
                out.users((await client.call("users.list"))["users"])
            elif args.users_command == "create":
                req = {"id": args.name}
                if args.display_name:
                    req["display_name"] = args.display_name
                if args.email:
                    req["email"] = args.email
                u = await client.call("users.create", req)
                out.line(u, f"user {u['id']}\n  access key: {u['access_key']}\n  secret key: {u['secret_key']}")
            elif args.users_command == "rotate":
                u = await client.call("users.rotate", {"id": args.name})
                out.line(u, f"user {u['id']}\n  access key: {u['access_key']}\n  secret key: {u['secret_key']}")
            else:
                await client.call("users.delete", {"id": args.name})
                out.line({"id": args.name, "deleted": True}, f"deleted user {args.name}")
        elif cmd == "buckets":
            result = await client.call("buckets.list")
            out.table(result, result["buckets"], [("name", "name"), ("owner", "owner"), ("created", "created")])
        elif cmd == "usage":
            u = await client.call("buckets.usage", {"bucket": args.bucket})
            noun = "object" if u["objects"] == 1 else "objects"
            out.line(u, f"{u['bucket']}: {u['objects']} {noun}, {_bytes(u['bytes'])}")
        elif cmd in ("config", "version"):
            result = await client.call(cmd)
            out.line(result, "\n".join(f"{k} = {json.dumps(v)}" for k, v in result.items()))
        elif cmd == "watch":
            await client.call("subscribe", {"topics": args.topics})
            async for event in client.events():
                out.event(event)
    return 0


async def _worker(client: AdminClient, worker: str, action: str, watch: bool, out: _Output) -> int:
    progress = await client.call(f"{worker}.{action}")
    if not watch:
        out.progress(progress, final=True)
        return 0
    await client.call("subscribe", {"topics": ["progress"]})
    passes = progress.get("passes") or 0
    seen_running = progress.get("state") == "running"
    out.progress(progress)
    deadline = time.monotonic() + 24 * 3600
    async for event in client.events():
        if event.get("event") != "progress" or event["data"].get("worker") != worker:
            continue
        p = event["data"]
        out.progress(p)
        seen_running = seen_running or p.get("state") == "running"
        if (p.get("passes") or 0) > passes and p.get("state") == "idle":
            out.finish(p)
            return 0
        if not seen_running and action in ("pause", "cancel", "status") and p.get("state") != "running":
            out.finish(p)
            return 0
        if time.monotonic() > deadline:
            return 1
    return 0


async def _wait_drained(client: AdminClient, agent: str, out: _Output) -> int:
    """Poll the agent's drain progress (repair writes it into the drain mark) until it says drained."""
    last = None
    while True:
        rows = {a["id"]: a for a in (await client.call("agents.list"))["agents"]}
        row = rows.get(agent)
        if row is None or row["state"] != "draining":
            print(f"trio_sos admin: agent {agent} is no longer draining ({row['state'] if row else 'gone'})",
                  file=sys.stderr)
            return 1
        drain = row.get("drain") or {}
        if drain.get("left") != last or drain.get("drained"):
            last = drain.get("left")
            out.line({"agent": agent, **drain}, f"agent {agent}: "
                     + ("drained" if drain.get("drained") else f"{'?' if last is None else last} chunks left"))
        if drain.get("drained"):
            return 0
        await trio.sleep(1.0)


def _bytes(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


class _Output:
    def __init__(self, as_json: bool) -> None:
        self.json = as_json
        self.tty = sys.stdout.isatty()
        self._bar = False

    def line(self, result: Any, text: str) -> None:
        print(json.dumps(result, indent=2) if self.json else text, flush=True)

    def table(self, result: Any, rows: list[dict], columns: list[tuple[str, str]]) -> None:
        if self.json:
            print(json.dumps(result, indent=2))
            return
        cells = [[_cell(row.get(key)) for _, key in columns] for row in rows]
        widths = [max([len(title)] + [len(r[i]) for r in cells]) for i, (title, _) in enumerate(columns)]
        print("  ".join(title.ljust(w) for (title, _), w in zip(columns, widths, strict=True)).rstrip())
        for r in cells:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())

    def agents(self, agents: list[dict], result: Any = None) -> None:
        rows = []
        for a in agents:
            fill = a.get("fill")
            rows.append({**a, "fill_": f"{_bar(fill, 10)} {fill * 100:5.1f}%" if fill is not None else "-",
                         "used_": _bytes(a.get("used")), "latency": f"{a['latency_ms']} ms"
                         if a.get("latency_ms") is not None else "-",
                         "drain_": "" if not a.get("drain") else
                         ("drained" if a["drain"].get("drained") else f"{a['drain'].get('left')} left")})
        self.table(result if result is not None else {"agents": agents}, rows,
                   [("agent", "id"), ("address", "address"), ("zone", "zone"), ("used", "used_"),
                    ("fill", "fill_"), ("state", "state"), ("drain", "drain_"), ("health", "health"),
                    ("latency", "latency")])

    def users(self, users: list[dict]) -> None:
        self.table({"users": users}, users, [("user", "id"), ("display name", "display_name"),
                                             ("access key", "access_key"), ("admin", "admin"),
                                             ("from", "source")])

    def status(self, s: dict) -> None:
        if self.json:
            print(json.dumps(s, indent=2))
            return
        n = s["node"]
        print(f"node {n['id']} ({n['mode']}, {n['role']}, version {n['version']}), S3 {n['endpoint']}, "
              f"admin {n['admin']}, up {n['uptime_s']:.0f}s")
        traffic = n.get("traffic") or {}
        if traffic:
            latency = traffic.get("latency_ms")
            print(f"traffic: {traffic.get('requests_per_s')} req/s, {traffic.get('errors_per_s')} errors/s, in "
                  f"{_bytes(traffic.get('bytes_in_per_s'))}/s, out {_bytes(traffic.get('bytes_out_per_s'))}/s, "
                  f"latency {'-' if latency is None else f'{latency} ms'}, {traffic.get('connections')} connections")
        print(f"\nnodes ({len(s['nodes'])}):")
        self.table(s, s["nodes"], [("node", "id"), ("endpoint", "endpoint"), ("admin", "admin"),
                                   ("version", "version"), ("zone", "zone"), ("self", "self")])
        print(f"\nagents ({len(s['agents'])}):")
        self.agents(s["agents"], s)
        print("\nbackground work:")
        for name, p in sorted(s["workers"].items()):
            print("  " + _progress_line(p) + f"  leader {s['leaders'].get(name) or '-'}")
        if s.get("under_replicated") is not None:
            print(f"\nchunks under-replicated: {s['under_replicated']}")

    def progress(self, p: dict, *, final: bool = False) -> None:
        if self.json:
            if final or not self.tty:
                print(json.dumps(p), flush=True)
            return
        text = _progress_line(p)
        if self.tty and not final:
            print("\r" + text.ljust(100), end="", flush=True)
            self._bar = True
        else:
            if self._bar:
                print("\r" + text.ljust(100), flush=True)
                self._bar = False
            else:
                print(text, flush=True)

    def finish(self, p: dict) -> None:
        """The last line of a watch: on a terminal, the bar's line made final (elsewhere every update was printed
        as a line already, the last one included)."""
        if self.tty:
            self.progress(p, final=True)

    def event(self, e: dict) -> None:
        if self.json:
            print(json.dumps(e), flush=True)
            return
        at = datetime.fromtimestamp(e.get("at", 0), UTC).strftime("%H:%M:%S")
        data = " ".join(f"{k}={_cell(v)}" for k, v in (e.get("data") or {}).items())
        print(f"{at} {e.get('event')} {data}", flush=True)


def _bar(fraction: float | None, width: int) -> str:
    if fraction is None:
        return " " * width
    full = max(0, min(width, round(fraction * width)))
    return "#" * full + "." * (width - full)


def _progress_line(p: dict) -> str:
    done, left = p.get("done") or 0, p.get("left")
    total = done + left if isinstance(left, int) else None
    fraction = done / total if total else (1.0 if total == 0 else None)
    bar = f"[{_bar(fraction, 20)}] " if fraction is not None else ""
    rate = f", {p['rate']:.1f} {p.get('unit', '')}/s" if p.get("rate") else ""
    eta = f", ETA {p['eta_s']:.0f}s" if p.get("eta_s") is not None else ""
    left_text = f" of {total}" if total is not None else ""
    return (f"{p.get('worker', '?'):7} {p.get('state', '?'):8} {bar}{done}{left_text} {p.get('unit', '')}"
            f"{rate}{eta}, passes {p.get('passes')}, failed {p.get('failed', 0)}, findings {p.get('findings', 0)}")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
