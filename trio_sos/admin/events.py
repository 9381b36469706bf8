"""Events for the operators who subscribed (admin WebSocket sessions), with bounded queues.

Each subscriber has a queue of ``QUEUE`` events. :meth:`EventHub.publish` never waits: an event that finds a
subscriber's queue full is dropped for that subscriber and counted; the subscriber's session sends a ``dropped``
notice with the count before its next event. Nothing in the node grows with a subscriber that does not read.

In ``serve --workers N``, the workers' events (slow and failed requests, their reads' findings) reach the
supervisor's hub as lines on their stdout (:class:`EventPipe`), which the supervisor already reads.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import trio

from . import metrics

log = logging.getLogger("trio_sos.admin")

QUEUE = 256
TOPICS = ("agents", "nodes", "leaders", "progress", "findings", "requests", "stats")
EVENT_LINE = b"trio_sos-event "  # a worker's event line on its stdout: this prefix, then the event as JSON
MAX_EVENT_LINE = 16 * 1024


def topic_of(event: str) -> str:
    head = event.split(".", 1)[0]
    return {"agent": "agents", "node": "nodes", "leader": "leaders", "finding": "findings",
            "request": "requests"}.get(head, head)


class Subscriber:
    def __init__(self, size: int = QUEUE) -> None:
        self.send, self.receive = trio.open_memory_channel[dict](size)
        self.topics: set[str] = set()
        self.dropped = 0

    def wants(self, topic: str) -> bool:
        return topic in self.topics or "*" in self.topics


class EventHub:
    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()
        self.dropped = 0

    def subscriber(self, size: int = QUEUE) -> Subscriber:
        sub = Subscriber(size)
        self.subscribers.add(sub)
        return sub

    def remove(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        sub.send.close()

    def publish(self, event: str, data: dict[str, Any], *, at: float | None = None) -> None:
        topic = topic_of(event)
        message = {"event": event, "at": round(at if at is not None else time.time(), 3), "data": data}
        for sub in self.subscribers:
            if not sub.wants(topic):
                continue
            try:
                sub.send.send_nowait(message)
            except trio.WouldBlock:
                sub.dropped += 1
                self.dropped += 1
                metrics.ADMIN_DROPPED.inc()
            except trio.ClosedResourceError:
                pass

    def publish_line(self, line: bytes) -> None:
        """An event line a worker wrote (``EVENT_LINE`` + JSON): published here; anything else is ignored."""
        if not line.startswith(EVENT_LINE) or len(line) > MAX_EVENT_LINE:
            return
        try:
            message = json.loads(line[len(EVENT_LINE):])
            event, data, at = message["event"], message["data"], float(message["at"])
        except (ValueError, KeyError, TypeError):
            return
        if isinstance(event, str) and isinstance(data, dict):
            self.publish(event, data, at=at)


class EventPipe:
    """A worker's events, written as lines to its stdout (the supervisor's pipe) by one task; ``publish`` never
    waits (an event that finds the queue full is dropped and counted)."""

    def __init__(self, size: int = QUEUE) -> None:
        self._send, self._receive = trio.open_memory_channel[bytes](size)

    def publish(self, event: str, data: dict[str, Any], *, at: float | None = None) -> None:
        line = EVENT_LINE + json.dumps({"event": event, "at": at or time.time(), "data": data},
                                       separators=(",", ":")).encode() + b"\n"
        if len(line) > MAX_EVENT_LINE:
            return
        try:
            self._send.send_nowait(line)
        except trio.WouldBlock:
            metrics.ADMIN_DROPPED.inc()

    async def run(self) -> None:
        # Blocking writes in a thread: an FdStream would make the shared stdout non-blocking for print() as well.
        async for line in self._receive:
            batch = [line]
            while len(batch) < 64:
                try:
                    batch.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            await trio.to_thread.run_sync(_write_all, 1, b"".join(batch))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
