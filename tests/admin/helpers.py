"""What the admin tests share: a raw protocol session on a real node's admin listener, the CLI, /metrics."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from contextlib import asynccontextmanager
from datetime import datetime

import trio
import trio_websocket
from prometheus_client.parser import text_string_to_metric_families

from tests.procs import TEST_USERS
from trio_sos.admin.client import presign

ADMIN = TEST_USERS[0]  # alice: the tests' nodes name her in admin_users
OTHER = TEST_USERS[1]  # bob: a user, not an administrator


def admin_settings(**settings) -> dict:
    return {"admin_users": [ADMIN["id"]], **settings}


def signed_url(node, user=ADMIN, **kw) -> str:
    return presign(node.admin_endpoint, user["access_key"], user["secret_key"], **kw)


@asynccontextmanager
async def session(node, user=ADMIN, **kw):
    async with trio_websocket.open_websocket_url(signed_url(node, user, **kw), connect_timeout=10,
                                                 disconnect_timeout=5) as ws:
        yield Session(ws)


class Session:
    """Requests with ids; events kept apart from replies."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.events: list[dict] = []
        self._next = 0

    async def send(self, op: str, args: dict | None = None) -> int:
        self._next += 1
        await self.ws.send_message(json.dumps({"id": self._next, "op": op, "args": args or {}}))
        return self._next

    async def reply(self, request_id) -> dict:
        while True:
            message = json.loads(await self.ws.get_message())
            if "event" in message:
                self.events.append(message)
                continue
            assert message["id"] == request_id, message
            return message

    async def call(self, op: str, args: dict | None = None) -> dict:
        with trio.fail_after(30):
            return await self.reply(await self.send(op, args))

    async def ok(self, op: str, args: dict | None = None):
        reply = await self.call(op, args)
        assert reply["ok"], reply
        return reply["result"]

    async def event(self, predicate, timeout: float = 30.0) -> dict:
        """The first event (kept or new) for which ``predicate(event)`` holds."""
        with trio.fail_after(timeout):
            while True:
                for i, event in enumerate(self.events):
                    if predicate(event):
                        return self.events.pop(i)
                message = json.loads(await self.ws.get_message())
                if "event" in message:
                    self.events.append(message)


def cli(node, *args: str, user=ADMIN, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "trio_sos", "admin", "--endpoint", node.admin_endpoint,
                           "--access-key", user["access_key"], "--secret-key", user["secret_key"], *args],
                          capture_output=True, text=True, timeout=120)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def cli_json(node, *args: str):
    return json.loads(cli(node, "--json", *args).stdout)


def http_get(node, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(node.admin_endpoint + path, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def metrics(node) -> dict[tuple[str, tuple], float]:
    """/metrics, parsed by prometheus_client's own parser: (sample name, sorted labels) -> value."""
    status, _, body = http_get(node, "/metrics")
    assert status == 200
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def metric(samples: dict, name: str, **labels) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items()
               if n == name and all((k, str(val)) in ls for k, val in labels.items()))


def old_date() -> datetime:
    from datetime import UTC, timedelta

    return datetime.now(UTC) - timedelta(minutes=10)
