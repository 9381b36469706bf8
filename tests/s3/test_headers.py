"""The header normalisation every request goes through before authentication (``s3/headers.py``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_sos.auth.sigv4 import canonical_headers
from trio_sos.s3.errors import S3Error
from trio_sos.s3.headers import merged_with_query, one_value_per_name, replaced_by_query

names = st.sampled_from(["x-amz-meta-a", "x-amz-grant-read", "accept", "user-agent", "if-match", "x-custom",
                         "cache-control"])
values = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), min_size=1, max_size=8)


@given(st.lists(st.tuples(names, values), max_size=12))
def test_joined_headers_are_what_sigv4_signs(headers) -> None:
    out = one_value_per_name(headers)
    assert len({n for n, _ in out}) == len(out)
    signed = [n for n, _ in out]
    assert canonical_headers(out, signed) == canonical_headers(headers, signed)


@pytest.mark.parametrize("name", ["x-amz-copy-source", "x-amz-acl", "range", "authorization", "host",
                                  "content-md5", "x-amz-checksum-crc32", "x-amz-date"])
def test_repeated_single_valued_header_is_refused(name: str) -> None:
    with pytest.raises(S3Error) as info:
        one_value_per_name([(name, "a"), ("other", "x"), (name, "b")])
    assert info.value.code == "InvalidArgument" and info.value.extra["ArgumentName"] == name


def test_query_values_stand_in_for_headers() -> None:
    headers = [("host", "h"), ("x-amz-acl", "public-read"), ("x-amz-meta-a", "evil")]
    assert sorted(replaced_by_query(headers, {"x-amz-acl": "private", "content-type": "text/plain"})) == [
        ("content-type", "text/plain"), ("host", "h"), ("x-amz-acl", "private"), ("x-amz-meta-a", "evil")]
    assert sorted(merged_with_query([("host", "h"), ("x-amz-acl", "private")], {"x-amz-acl": "private"})) == [
        ("host", "h"), ("x-amz-acl", "private")]
    with pytest.raises(S3Error):
        merged_with_query([("x-amz-acl", "public-read")], {"x-amz-acl": "private"})
