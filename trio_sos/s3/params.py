"""Strict parsing of the numbers and dates a request carries, in one place.

Python's ``str.isdigit()`` accepts '²' and '٣', which ``int()`` then refuses or reads, and ``int()`` refuses
more than 4,300 digits: either way a stranger's header or query parameter became a 500. Every integer the node
reads from a request goes through `uint` (ASCII digits only, bounded length); each caller turns ``None`` into the
S3 error of its parameter.
"""

from __future__ import annotations

import re
from email.utils import parsedate_to_datetime

MAX_DIGITS = 19  # below 2**63: every count, size and offset S3 has fits
INT32_MAX = 2**31 - 1

_UINT = re.compile(r"[0-9]+\Z")  # explicit ASCII digits: \d would take any Unicode digit
_INT = re.compile(r"-?[0-9]+\Z")


def uint(text: str | None, max_digits: int = MAX_DIGITS) -> int | None:
    """``text`` as a non-negative integer: ASCII digits only, at most ``max_digits`` of them; else None."""
    if text is None or len(text) > max_digits or not _UINT.match(text):
        return None
    return int(text)


def sint(text: str | None, max_digits: int = MAX_DIGITS) -> int | None:
    """``text`` as an integer, with an optional leading '-'; else None (see `uint`)."""
    if text is None or len(text) > max_digits + 1 or not _INT.match(text):
        return None
    return int(text)


def http_date(value: str | None) -> float | None:
    """An HTTP date (If-Modified-Since and friends) as seconds since the epoch; None if it is not one (such a
    header is ignored, as HTTP says)."""
    if not value or len(value) > 64:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
