"""A streaming multipart/form-data parser (RFC 7578), sans-IO: bytes in, events out.

Ordinary fields are collected whole (bounded); the part named ``file`` is passed through as it arrives, never
held: only a boundary's length of look-behind is kept, so memory does not follow the file's size.
"""

from __future__ import annotations

import re

import attrs


class FormError(Exception):
    """The body is not well-formed multipart/form-data (or exceeds a limit)."""


@attrs.frozen
class Field:
    name: str
    value: bytes


@attrs.frozen
class FileStart:
    name: str
    filename: str
    content_type: str


@attrs.frozen
class FileData:
    data: bytes


@attrs.frozen
class FileEnd:
    pass


_DISPOSITION_PARAM = re.compile(r';\s*([A-Za-z0-9_*-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))')


def boundary_of(content_type: str) -> bytes:
    match = re.search(r'boundary\s*=\s*(?:"([^"]+)"|([^;\s]+))', content_type, re.IGNORECASE)
    if not content_type.lower().startswith("multipart/form-data") or not match:
        raise FormError("not multipart/form-data with a boundary")
    boundary = (match.group(1) or match.group(2)).encode("latin-1")
    if not 1 <= len(boundary) <= 70:
        raise FormError("bad boundary")
    return boundary


class FormParser:
    def __init__(self, boundary: bytes, *, file_field: str = "file", max_field: int = 64 * 1024,
                 max_fields_total: int = 256 * 1024, max_head: int = 8 * 1024) -> None:
        self._delim = b"\r\n--" + boundary
        self._buf = b"\r\n"  # so that the first boundary looks like every other one
        self._state = "preamble"
        self._file_field = file_field
        self._max_field, self._max_total, self._max_head = max_field, max_fields_total, max_head
        self._total = 0
        self._name = ""
        self._value = bytearray()
        self._in_file = False

    def feed(self, data: bytes) -> list[object]:
        self._buf += data
        events: list[object] = []
        while True:
            if self._state == "preamble":
                at = self._buf.find(self._delim)
                if at < 0:
                    self._buf = self._buf[-len(self._delim):]  # discard the preamble
                    return events
                self._buf = self._buf[at + len(self._delim):]
                self._state = "after-boundary"
            elif self._state == "after-boundary":
                if len(self._buf) < 2:
                    return events
                if self._buf.startswith(b"--"):
                    self._state = "done"
                    return events
                if not self._buf.startswith(b"\r\n"):
                    # transport padding (spaces/tabs) may follow a boundary
                    stripped = self._buf.lstrip(b" \t")
                    if len(stripped) < 2:
                        return events
                    if not stripped.startswith(b"\r\n"):
                        raise FormError("garbage after a boundary")
                    self._buf = stripped
                self._buf = self._buf[2:]
                self._state = "head"
            elif self._state == "head":
                end = self._buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buf) > self._max_head:
                        raise FormError("part headers too large")
                    return events
                head, self._buf = self._buf[:end], self._buf[end + 4:]
                events.extend(self._start_part(head))
                self._state = "body"
            elif self._state == "body":
                at = self._buf.find(self._delim)
                if at < 0:
                    keep = len(self._delim) - 1  # a boundary may be split across feeds
                    if len(self._buf) > keep:
                        events.extend(self._data(self._buf[:-keep]))
                        self._buf = self._buf[-keep:]
                    return events
                events.extend(self._data(self._buf[:at]))
                self._buf = self._buf[at + len(self._delim):]
                events.extend(self._end_part())
                self._state = "after-boundary"
            else:  # done: the epilogue is ignored
                self._buf = b""
                return events

    def finish(self) -> None:
        if self._state != "done":
            raise FormError("the form ended before its closing boundary")

    def _start_part(self, head: bytes) -> list[object]:
        headers: dict[str, str] = {}
        for line in head.split(b"\r\n"):
            name, sep, value = line.decode("utf-8", "replace").partition(":")
            if not sep:
                raise FormError("malformed part header")
            headers[name.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        if not disposition.lower().startswith("form-data"):
            raise FormError("part without Content-Disposition: form-data")
        params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
                  for m in _DISPOSITION_PARAM.finditer(disposition)}
        if "name" not in params:
            raise FormError("part without a name")
        self._name = params["name"]
        self._value = bytearray()
        if self._name.lower() == self._file_field:
            self._in_file = True
            return [FileStart(self._name, params.get("filename", ""),
                              headers.get("content-type", "binary/octet-stream"))]
        self._in_file = False
        return []

    def _data(self, data: bytes) -> list[object]:
        if not data:
            return []
        if self._in_file:
            return [FileData(data)]
        self._value += data
        self._total += len(data)
        if len(self._value) > self._max_field or self._total > self._max_total:
            raise FormError("form field too large")
        return []

    def _end_part(self) -> list[object]:
        if self._in_file:
            self._in_file = False
            return [FileEnd()]
        return [Field(self._name, bytes(self._value))]
