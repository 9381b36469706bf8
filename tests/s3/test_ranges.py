"""Range header parsing against a model of RFC 9110 single byte ranges as S3 applies them."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_sos.s3.ranges import Unsatisfiable, parse_range


def model(first: int | None, last: int | None, size: int):
    """Reference semantics for 'bytes=first-last' (either side may be absent)."""
    if first is None and last is None:
        return "whole"
    if first is None:
        if last == 0 or size == 0:
            return "416"
        return (max(0, size - last), size)
    if last is not None and last < first:
        return "whole"
    if first >= size:
        return "416"
    return (first, size if last is None else min(size, last + 1))


@given(first=st.one_of(st.none(), st.integers(0, 2000)), last=st.one_of(st.none(), st.integers(0, 2000)),
       size=st.integers(0, 1500), spaces=st.booleans())
def test_single_ranges(first, last, size, spaces) -> None:
    sp = " " if spaces else ""
    header = f"bytes{sp}={sp}{'' if first is None else first}{sp}-{sp}{'' if last is None else last}"
    expected = model(first, last, size)
    if expected == "416":
        with pytest.raises(Unsatisfiable):
            parse_range(header, size)
        return
    got = parse_range(header, size)
    if expected == "whole":
        assert got is None
    else:
        assert got == expected
        start, end = got
        assert 0 <= start < end <= size


@given(header=st.text(max_size=40), size=st.integers(0, 10**12))
def test_anything_else_is_whole_or_valid(header, size) -> None:
    try:
        got = parse_range(header, size)
    except Unsatisfiable:
        assert re.match(r"^\s*bytes\s*=", header, re.I)
        return
    if got is not None:
        start, end = got
        assert 0 <= start < end <= size


def test_multiple_ranges_and_other_units_are_ignored() -> None:
    assert parse_range("bytes=0-1,4-5", 10) is None
    assert parse_range("items=0-1", 10) is None
    assert parse_range(None, 10) is None
