"""The Range header of GetObject/HeadObject (RFC 9110 byte ranges, as S3 reads them: one range only)."""

from __future__ import annotations

import re

_SPEC = re.compile(r"[ \t]*bytes[ \t]*=[ \t]*([0-9]*)[ \t]*-[ \t]*([0-9]*)[ \t]*\Z", re.IGNORECASE)
# A position with more digits than this is past the end of any object (and int() of 4,300+ digits would fail).
_MAX_DIGITS = 19
_HUGE = 10**_MAX_DIGITS


def _position(digits: str) -> int:
    return int(digits) if len(digits) <= _MAX_DIGITS else _HUGE


class Unsatisfiable(Exception):
    """A syntactically valid range that selects nothing of the object: 416 InvalidRange."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``[start, end)`` selected by ``header`` for an object of ``size`` bytes, or None for the whole object.

    A header that is not a single well-formed byte range is ignored (the whole object is served), as HTTP and S3
    do. Raises Unsatisfiable when the range starts at or past the end, or is an empty suffix.
    """
    if header is None:
        return None
    match = _SPEC.match(header)
    if not match:
        return None  # multiple ranges, other units, garbage: ignored
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":
        suffix = _position(last)
        if suffix == 0 or size == 0:  # RFC 9110: a suffix of an empty representation is unsatisfiable
            raise Unsatisfiable
        return max(0, size - suffix), size
    start = _position(first)
    if last != "" and _position(last) < start:
        return None  # an invalid range spec is ignored
    if start >= size:
        raise Unsatisfiable
    end = size if last == "" else min(size, _position(last) + 1)
    return start, end
