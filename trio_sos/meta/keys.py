"""Key order and the delimiter walk that every backend's listing shares (pure: no I/O).

Keys are ordered by their UTF-8 bytes, which is code point order for Python strings. A listing with a delimiter
rolls keys up into common prefixes; its cost must follow the page, not the bucket: once a key rolls up into
prefix P, the walk *seeks* past every key starting with P (to ``prefix_successor(P)``) instead of reading them.
A page of N entries therefore reads about N + 1 keys and N seeks, whatever the bucket holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

import attrs

_MAX_CHAR = "\U0010ffff"

T = TypeVar("T")

# seek(start, inclusive, upper): the items whose key is >= start (> if not inclusive) and < upper (None: no
# bound), in key order, produced lazily (only what the walk consumes is read)
Seek = Callable[[str, bool, str | None], Iterable[T]]


def prefix_successor(prefix: str) -> str | None:
    """The least string above every string that starts with ``prefix`` (None: no such string, no upper bound).

    Code point order is UTF-8 byte order, so this is the exclusive upper bound of an index range scan. U+10FFFF
    cannot be incremented: drop it and increment the character before. Surrogates are not valid in UTF-8 text, so
    U+D7FF is followed by U+E000.
    """
    stem = prefix.rstrip(_MAX_CHAR)
    if not stem:
        return None
    nxt = ord(stem[-1]) + 1
    if 0xD800 <= nxt <= 0xDFFF:
        nxt = 0xE000
    return stem[:-1] + chr(nxt)


@attrs.frozen
class Walk(Generic[T]):
    """One page of a listing: the items (keys, or rows) to return, the common prefixes, whether entries follow,
    the last entry returned (an item, or a prefix: the next marker), and how many items were read to find them."""

    items: tuple[T, ...]
    prefixes: tuple[str, ...]
    truncated: bool
    last: Any  # an item or a prefix (str); None for an empty page
    read: int
    seeks: int


def _identity(item: Any) -> str:
    return item


def walk(seek: Seek, *, prefix: str, delimiter: str, marker: str, limit: int,
         key_of: Callable[[Any], str] = _identity, marker_inclusive: bool = False) -> Walk:
    """Entries (items and common prefixes) above ``marker`` under ``prefix``, at most ``limit`` of them. The first
    seek is ``seek(marker, marker_inclusive, ...)`` when the marker is above the prefix (a caller with a finer
    marker, such as ListMultipartUploads' key + upload id, starts at the key and applies the rest in its seek);
    later seeks jump past a common prefix.

    A common prefix at or below the marker is not returned again (the marker was inside it), and is skipped whole
    like any other. ``limit`` 0 is an empty page that is not truncated (as S3 answers max-keys=0).
    """
    keys: list[Any] = []
    prefixes: list[str] = []
    upper = prefix_successor(prefix) if prefix else None
    if marker > prefix or (marker and marker == prefix):
        start, inclusive = marker, marker_inclusive
    else:  # every key under the prefix sorts above the marker
        start, inclusive = prefix, True
    read = seeks = 0
    last: Any = None
    if limit <= 0:
        return Walk((), (), False, None, 0, 0)
    while True:
        seeks += 1
        rolled = None
        for item in seek(start, inclusive, upper):
            read += 1
            key = key_of(item)
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            if cut >= 0:
                rolled = key[: cut + len(delimiter)]
                if rolled > marker:
                    if len(keys) + len(prefixes) == limit:
                        return Walk(tuple(keys), tuple(prefixes), True, last, read, seeks)
                    prefixes.append(rolled)
                    last = rolled
                break  # seek past everything under it
            if len(keys) + len(prefixes) == limit:
                return Walk(tuple(keys), tuple(prefixes), True, last, read, seeks)
            keys.append(item)
            last = item
        if rolled is None:
            return Walk(tuple(keys), tuple(prefixes), False, last, read, seeks)
        successor = prefix_successor(rolled)
        if successor is None or (upper is not None and successor >= upper):
            return Walk(tuple(keys), tuple(prefixes), False, last, read, seeks)
        start, inclusive = successor, True
