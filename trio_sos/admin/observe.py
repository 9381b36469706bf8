"""What the S3 server tells of each request once its response is sent: the access log (one line per request),
the Prometheus request figures, and ``request.slow`` / ``request.failed`` events for subscribed operators."""

from __future__ import annotations

import logging
import re
from typing import Any

from . import metrics

access_log = logging.getLogger("trio_sos.access")


_BARE_RE = re.compile(r'[!#-<>-\[\]-~]+')  # printable ASCII but space, '"', '=' and '\\'


def _value(text: object) -> str:
    """A logfmt value: bare when it is simple, else double-quoted with backslash escapes."""
    s = "-" if text is None or text == "" else str(text)
    if _BARE_RE.fullmatch(s):
        return s
    return '"' + s.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


class RequestObserver:
    """``HttpServer``'s observer for the S3 listener. ``events``: an EventHub or EventPipe (or None)."""

    def __init__(self, events: Any = None, *, slow_ms: float = 1000.0) -> None:
        self.events = events
        self.slow = slow_ms / 1000.0

    def connection(self, delta: int) -> None:
        metrics.CONNECTIONS.inc(delta)

    def request_done(self, request: Any, response: Any, sent: int, seconds: float, completed: bool) -> None:
        request_id, user, operation, bucket, auth = response.note or ("-", None, "-", None, "-")
        status = response.status
        metrics.observe_request(operation, status, seconds, request.body_received, sent)
        # the path only: a presigned URL's query holds a signature that must not end up in logs
        access_log.info(
            "access id=%s remote=%s user=%s auth=%s op=%s bucket=%s method=%s path=%s status=%d in=%d out=%d "
            "ms=%.1f%s", request_id, request.remote, _value(user), auth, operation, _value(bucket), request.method,
            _value(request.path), status, request.body_received, sent, seconds * 1000,
            "" if completed else " aborted=1")
        if self.events is not None and (status >= 500 or seconds >= self.slow or not completed):
            kind = "request.failed" if status >= 500 or not completed else "request.slow"
            self.events.publish(kind, {
                "request_id": request_id, "operation": operation, "bucket": bucket, "user": user,
                "status": status, "duration_ms": round(seconds * 1000, 1), "bytes_in": request.body_received,
                "bytes_out": sent, "completed": completed})
