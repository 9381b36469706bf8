"""Listings against a model: random key sets x prefixes x delimiters x page sizes, through boto3 and a real node.

The model is S3's documented behaviour written the slow, obvious way: sort keys by their UTF-8 bytes, keep those
under the prefix, roll up at the first delimiter after the prefix, and page the resulting entries.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_sos.meta.keys import prefix_successor

alphabet = st.sampled_from(["a", "b", "/", "-", "é", "z", "\U0001f600", " ", "+", "%", "\uffff", "~", "0"])
keys = st.lists(st.text(alphabet, min_size=1, max_size=6), min_size=0, max_size=25, unique=True)
short = st.text(alphabet, max_size=2)
counter = itertools.count()


def model(all_keys: list[str], prefix: str, delimiter: str) -> list[tuple[str, str]]:
    """Entries in listing order: ("key", k) or ("prefix", p)."""
    out: list[tuple[str, str]] = []
    for key in sorted(all_keys, key=lambda k: k.encode("utf-8")):
        if not key.startswith(prefix):
            continue
        cut = key.find(delimiter, len(prefix)) if delimiter else -1
        entry = ("prefix", key[: cut + len(delimiter)]) if cut >= 0 else ("key", key)
        if entry not in out:
            out.append(entry)
    return out


def check_page(expected: list[tuple[str, str]], seen: int, contents: list[str], prefixes: list[str]) -> int:
    """A page is the next slice of the model: its Contents in the model's order, its CommonPrefixes too (S3 returns
    them as two lists, so only their interleaving is lost). Returns how many entries the page held."""
    n = len(contents) + len(prefixes)
    page = expected[seen:seen + n]
    assert contents == [v for kind, v in page if kind == "key"], (contents, page)
    assert prefixes == [v for kind, v in page if kind == "prefix"], (prefixes, page)
    return n


def listing_v2(s3, bucket: str, prefix: str, delimiter: str, page: int, expected) -> None:
    kwargs = dict(Bucket=bucket, Prefix=prefix, MaxKeys=page)
    if delimiter:
        kwargs["Delimiter"] = delimiter
    seen = pages = 0
    while True:
        got = s3.list_objects_v2(**kwargs)
        contents = [o["Key"] for o in got.get("Contents", [])]
        prefixes = [p["Prefix"] for p in got.get("CommonPrefixes", [])]
        assert got["KeyCount"] == len(contents) + len(prefixes) <= page
        seen += check_page(expected, seen, contents, prefixes)
        pages += 1
        assert pages < 200
        if not got["IsTruncated"]:
            assert seen == len(expected)
            return
        kwargs["ContinuationToken"] = got["NextContinuationToken"]


def listing_v1(s3, bucket: str, prefix: str, delimiter: str, page: int, expected) -> None:
    kwargs = dict(Bucket=bucket, Prefix=prefix, MaxKeys=page)
    if delimiter:
        kwargs["Delimiter"] = delimiter
    seen = 0
    while True:
        got = s3.list_objects(**kwargs)
        contents = [o["Key"] for o in got.get("Contents", [])]
        prefixes = [p["Prefix"] for p in got.get("CommonPrefixes", [])]
        seen += check_page(expected, seen, contents, prefixes)
        if not got["IsTruncated"]:
            assert seen == len(expected)
            return
        # without a delimiter S3 gives no NextMarker: the last key is the marker
        kwargs["Marker"] = got.get("NextMarker") or expected[seen - 1][1]


@settings(deadline=None, max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(all_keys=keys, prefix=short, delimiter=st.sampled_from(["", "/", "a", "é/"]), page=st.integers(1, 7))
def test_listing_matches_model(s3, all_keys: list[str], prefix: str, delimiter: str, page: int) -> None:
    bucket = f"list-{next(counter)}"
    s3.create_bucket(Bucket=bucket)
    for key in all_keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"")
    expected = model(all_keys, prefix, delimiter)
    listing_v2(s3, bucket, prefix, delimiter, page, expected)
    listing_v1(s3, bucket, prefix, delimiter, page, expected)
    for key in all_keys:
        s3.delete_object(Bucket=bucket, Key=key)
    s3.delete_bucket(Bucket=bucket)


def test_start_after_and_more_than_a_thousand_keys(s3) -> None:
    s3.create_bucket(Bucket="many")
    names = [f"k{i:05d}" for i in range(1100)]
    for name in names:
        s3.put_object(Bucket="many", Key=name, Body=b"")
    paginator = s3.get_paginator("list_objects_v2")
    pages = list(paginator.paginate(Bucket="many"))
    assert [len(p["Contents"]) for p in pages] == [1000, 100]
    assert [o["Key"] for p in pages for o in p["Contents"]] == names
    got = s3.list_objects_v2(Bucket="many", StartAfter="k01050", MaxKeys=5)
    assert [o["Key"] for o in got["Contents"]] == names[1051:1056]
    got = s3.list_objects_v2(Bucket="many", MaxKeys=1, FetchOwner=True)
    assert got["Contents"][0]["Owner"]["DisplayName"] == "Alice" and got["IsTruncated"]
    assert "Owner" not in s3.list_objects_v2(Bucket="many", MaxKeys=1)["Contents"][0]


def test_bad_listing_arguments(s3) -> None:
    from botocore.exceptions import ClientError

    s3.create_bucket(Bucket="args")
    with pytest.raises(ClientError) as info:
        s3.list_objects_v2(Bucket="args", ContinuationToken="%%%not-a-token")
    assert info.value.response["Error"]["Code"] == "InvalidArgument"
    assert s3.list_objects_v2(Bucket="args", MaxKeys=0)["KeyCount"] == 0


@given(st.text(max_size=5))
def test_prefix_successor_bounds_every_extension(prefix: str) -> None:
    succ = prefix_successor(prefix)
    if succ is None:
        assert all(ord(c) == 0x10FFFF for c in prefix)
        return
    assert succ.encode("utf-8", "surrogatepass") > prefix.encode("utf-8", "surrogatepass")
    for tail in ["", "\x00", "\U0010ffff\U0010ffff", "zzz"]:
        assert (prefix + tail).encode("utf-8", "surrogatepass") < succ.encode("utf-8", "surrogatepass")
