"""SigV2 (header and query-string) verification against botocore's own V2 signers (HmacV1Auth, HmacV1QueryAuth),
the S3 developer guide's examples, and S3's errors."""

from __future__ import annotations

import base64
import hashlib
import hmac
import string
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
from botocore.auth import HmacV1Auth, HmacV1QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.utils import percent_encode_sequence
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_sos.auth.sigv2 import (
    SUBRESOURCES,
    ParsedV2Query,
    canonical_resource,
    parse_v2_header,
    parse_v2_query,
    string_to_sign_v2,
    verify_v2,
    verify_v2_query,
)
from trio_sos.auth.sigv4 import AuthError

from .test_sigv4 import AK, KEY_CHARS, SK

# --------------------------------------------------------------------------------------------------------------
# Signing with botocore


def botocore_v2(method, url, headers, *, when: datetime, secret=SK, auth_path=None, query_expires: int | None = None):
    """Sign with botocore's HmacV1Auth (or HmacV1QueryAuth when query_expires is given) at a fixed time; return
    the request-target and headers as sent."""
    request = AWSRequest(method=method, url=url, headers=headers, data=b"")
    if auth_path is not None:
        request.auth_path = auth_path
    if query_expires is None:
        signer = HmacV1Auth(Credentials(AK, secret))
        signer._get_date = lambda: format_datetime(when.astimezone(UTC), usegmt=True)
    else:
        signer = HmacV1QueryAuth(Credentials(AK, secret))
        signer._get_date = lambda: str(query_expires)
    signer.add_auth(request)
    prepared = request.prepare()
    parts = urlsplit(prepared.url)
    return parts.path + (f"?{parts.query}" if parts.query else ""), list(prepared.headers.items())


def auth_of(headers) -> tuple[str, str]:
    return parse_v2_header(next(v for n, v in headers if n.lower() == "authorization"))


WHEN = datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC)

segment = st.lists(KEY_CHARS, min_size=1, max_size=5).map("".join)
SUBRESOURCE_NAMES = sorted(SUBRESOURCES)


@st.composite
def v2_requests(draw):
    bucket = draw(st.from_regex(r"[a-z][a-z0-9\-]{2,10}[a-z0-9]", fullmatch=True))
    key = "/".join(draw(st.lists(segment, min_size=0, max_size=3)))
    virtual = draw(st.booleans())
    path = "/" + quote(key, safe="/~")
    params = draw(
        st.lists(
            st.tuples(
                st.one_of(st.sampled_from(SUBRESOURCE_NAMES), st.sampled_from(["prefix", "max-keys", "x", "Acl"])),
                st.one_of(st.none(), st.just(""), segment),
            ),
            max_size=4,
            unique_by=lambda p: p[0],
        )
    )
    query = "&".join(name if value is None else f"{name}={quote(value, safe='')}" for name, value in params)
    headers: dict[str, str] = {}
    for name in draw(st.lists(st.from_regex(r"[a-z][a-z0-9\-]{0,6}", fullmatch=True), max_size=3, unique=True)):
        headers[f"x-amz-meta-{name}"] = draw(st.text(string.ascii_letters + " ,;:=", max_size=10))
    if draw(st.booleans()):
        headers["Content-Type"] = draw(st.sampled_from(["text/plain", " application/xml; charset=utf-8 "]))
    if draw(st.booleans()):
        headers["Content-MD5"] = base64.b64encode(hashlib.md5(b"x").digest()).decode()
    if draw(st.booleans()):
        headers["x-amz-acl"] = "public-read"
    host = f"{bucket}.s3.example.com" if virtual else "localhost:9000"
    url_path = path if virtual else f"/{bucket}{path}"
    return {
        "method": draw(st.sampled_from(["GET", "PUT", "HEAD", "DELETE", "POST"])),
        "url": f"http://{host}{url_path}" + (f"?{query}" if query else ""),
        "headers": headers,
        "bucket": bucket if virtual else None,
        "auth_path": f"/{bucket}{path}" if virtual else None,
        "secret": draw(st.sampled_from([SK, "s", "minio+/="])),
        "when": draw(st.datetimes(datetime(2000, 1, 1), datetime(2099, 1, 1), timezones=st.just(UTC))).replace(
            microsecond=0
        ),
    }


BOTO = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------------------------------------------
# Header authentication


@BOTO
@given(req=v2_requests(), skew=st.integers(-900, 900))
def test_botocore_v2_header_requests_verify(req, skew: int) -> None:
    target, headers = botocore_v2(
        req["method"], req["url"], req["headers"], when=req["when"], secret=req["secret"], auth_path=req["auth_path"]
    )
    access_key, signature = auth_of(headers)
    assert access_key == AK
    verify_v2(
        req["method"], target, headers, access_key, signature, req["secret"],
        now=req["when"] + timedelta(seconds=skew), bucket_from_host=req["bucket"],
    )


@BOTO
@given(req=v2_requests(), data=st.data())
def test_tampered_v2_header_requests_do_not_match(req, data) -> None:
    target, headers = botocore_v2(
        req["method"], req["url"], req["headers"], when=req["when"], secret=req["secret"], auth_path=req["auth_path"]
    )
    access_key, signature = auth_of(headers)
    method, secret, bucket = req["method"], req["secret"], req["bucket"]
    path, _, query = target.partition("?")
    what = data.draw(st.sampled_from(["method", "path", "subresource", "header", "secret", "signature", "bucket"]))
    if what == "method":
        method = data.draw(st.sampled_from(["GET", "PUT", "HEAD", "DELETE", "POST"]).filter(lambda m: m != method))
    elif what == "path":
        path += data.draw(st.sampled_from(["x", "/", "%20", "~"]))
    elif what == "subresource":
        name = data.draw(st.sampled_from(["acl", "uploadId=1", "versionId=x", "response-content-type=a"]))
        if name.split("=")[0] in {p.split("=")[0] for p in query.split("&")}:
            return
        query = f"{query}&{name}" if query else name
    elif what == "header":
        name = data.draw(st.sampled_from(["x-amz-meta-new", "Content-Type", "Content-MD5", "Date"]))
        headers = [(n, v) for n, v in headers if n.lower() != name.lower()] + [(name, "Fri, 01 Mar 2024 00:00:00 GMT")]
    elif what == "secret":
        secret += "x"
    elif what == "signature":
        signature = base64.b64encode(bytes(20)).decode()
    elif bucket is not None:
        bucket = bucket + "x"
    else:
        bucket = "other"
    now = req["when"]
    if what == "header" and name == "Date":
        now = datetime(2024, 3, 1, tzinfo=UTC)
    with pytest.raises(AuthError) as info:
        verify_v2(method, f"{path}?{query}" if query else path, headers, access_key, signature, secret,
                  now=now, bucket_from_host=bucket)
    assert info.value.code == "SignatureDoesNotMatch", what
    assert info.value.status == 403


def test_other_query_parameters_are_not_signed() -> None:
    target, headers = botocore_v2("GET", "http://localhost/b/?prefix=a&acl", {}, when=WHEN)
    verify_v2("GET", target + "&max-keys=3&prefix=zzz", headers, *auth_of(headers), SK, now=WHEN)


def test_signature_mismatch_details() -> None:
    target, headers = botocore_v2("PUT", "http://localhost/b/k?acl", {"x-amz-meta-a": "1"}, when=WHEN)
    access_key, signature = auth_of(headers)
    with pytest.raises(AuthError) as info:
        verify_v2("PUT", target, headers, access_key, signature, "wrong", now=WHEN)
    error = info.value
    assert list(error.extra) == ["AWSAccessKeyId", "StringToSign", "SignatureProvided", "StringToSignBytes"]
    assert error.extra["StringToSign"] == "PUT\n\n\nThu, 29 Feb 2024 23:59:59 GMT\nx-amz-meta-a:1\n/b/k?acl"
    assert bytes.fromhex(error.extra["StringToSignBytes"]) == error.extra["StringToSign"].encode()
    assert error.extra["SignatureProvided"] == signature


# --------------------------------------------------------------------------------------------------------------
# S3 developer guide examples ("Signing and Authenticating REST Requests", credentials AKIAIOSFODNN7EXAMPLE)


DOC_HEADERS = {
    "get": ("GET", "/photos/puppy.jpg", [("Host", "johnsmith.s3.amazonaws.com"), ("Date", "Tue, 27 Mar 2007 19:36:42 +0000")],
            "johnsmith", "bWq2s1WEIj+Ydj0vQ697zp+IXMU="),
    "put": ("PUT", "/photos/puppy.jpg", [("Content-Type", "image/jpeg"), ("Content-Length", "94328"),
                                          ("Host", "johnsmith.s3.amazonaws.com"), ("Date", "Tue, 27 Mar 2007 21:15:45 +0000")],
            "johnsmith", "MyyxeRY7whkBe+bq8fHCL/2kKUg="),
    "list": ("GET", "/?prefix=photos&max-keys=50&marker=puppy",
             [("User-Agent", "Mozilla/5.0"), ("Host", "johnsmith.s3.amazonaws.com"), ("Date", "Tue, 27 Mar 2007 19:42:41 +0000")],
             "johnsmith", "htDYFYduRNen8P9ZfE/s9SuKy0U="),
    "acl": ("GET", "/?acl", [("Host", "johnsmith.s3.amazonaws.com"), ("Date", "Tue, 27 Mar 2007 19:44:46 +0000")],
            "johnsmith", "c2WLPFtWHVgbEmeEG93a4cG37dM="),
    # x-amz-date: the guide puts its value on the Date line and leaves it out of the amz headers
    "delete": ("DELETE", "/johnsmith/photos/puppy.jpg",
               [("User-Agent", "dotnet"), ("Host", "s3.amazonaws.com"), ("Date", "Tue, 27 Mar 2007 21:20:27 +0000"),
                ("x-amz-date", "Tue, 27 Mar 2007 21:20:26 +0000")],
               None, "lx3byBScXR6KzyMaifNkardMwNk="),
    "upload": ("PUT", "/db-backup.dat.gz",
               [("User-Agent", "curl/7.15.5"), ("Host", "static.johnsmith.net:8080"), ("Date", "Tue, 27 Mar 2007 21:06:08 +0000"),
                ("x-amz-acl", "public-read"), ("content-type", "application/x-download"),
                ("Content-MD5", "4gJE4saaMU4BqNR0kLY+lw=="), ("X-Amz-Meta-ReviewedBy", "joe@johnsmith.net"),
                ("X-Amz-Meta-ReviewedBy", "jane@johnsmith.net"), ("X-Amz-Meta-FileChecksum", "0x02661779"),
                ("X-Amz-Meta-ChecksumAlgorithm", "crc32"), ("Content-Disposition", "attachment; filename=database.dat"),
                ("Content-Encoding", "gzip"), ("Content-Length", "5913339")],
               "static.johnsmith.net", "ilyl83RwaSoYIEdixDQcA4OnAnc="),
}
DOC_NOW = datetime(2007, 3, 27, 20, 0, tzinfo=UTC)


@pytest.mark.parametrize("name", sorted(DOC_HEADERS))
def test_developer_guide_examples(name: str) -> None:
    method, target, headers, bucket, signature = DOC_HEADERS[name]
    verify_v2(method, target, headers, AK, signature, SK, now=DOC_NOW, max_skew=timedelta(hours=2),
              bucket_from_host=bucket)
    with pytest.raises(AuthError):
        verify_v2(method, target, headers, AK, signature, SK + "x", now=DOC_NOW, max_skew=timedelta(hours=2),
                  bucket_from_host=bucket)


def test_developer_guide_upload_string_to_sign() -> None:
    method, target, headers, bucket, _ = DOC_HEADERS["upload"]
    assert string_to_sign_v2(method, target, headers, date_line="Tue, 27 Mar 2007 21:06:08 +0000",
                             bucket_from_host=bucket) == (
        "PUT\n4gJE4saaMU4BqNR0kLY+lw==\napplication/x-download\nTue, 27 Mar 2007 21:06:08 +0000\n"
        "x-amz-acl:public-read\nx-amz-meta-checksumalgorithm:crc32\nx-amz-meta-filechecksum:0x02661779\n"
        "x-amz-meta-reviewedby:joe@johnsmith.net,jane@johnsmith.net\n/static.johnsmith.net/db-backup.dat.gz"
    )


def test_developer_guide_query_string_example() -> None:
    query = "AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Signature=NpgCjnDzrM%2BWFzoENXmpNDUsSn8%3D&Expires=1175139620"
    parsed = parse_v2_query(parse_qsl(query))
    assert parsed == ParsedV2Query(AK, "NpgCjnDzrM+WFzoENXmpNDUsSn8=", 1175139620, "1175139620")
    target = f"/photos/puppy.jpg?{query}"
    headers = [("Host", "johnsmith.s3.amazonaws.com")]
    verify_v2_query("GET", target, headers, parsed, SK, now=DOC_NOW, bucket_from_host="johnsmith")
    with pytest.raises(AuthError) as info:
        verify_v2_query("GET", target, headers, parsed, SK, now=datetime(2007, 3, 29, 4, 0, 21, tzinfo=UTC),
                        bucket_from_host="johnsmith")
    assert (info.value.code, info.value.message, info.value.extra) == (
        "AccessDenied",
        "Request has expired",
        {"Expires": "2007-03-29T03:40:20Z", "ServerTime": "2007-03-29T04:00:21Z"},
    )


def test_x_amz_date_spellings() -> None:
    """With x-amz-date: the documented empty Date line, the guide's example form, and botocore's (Date kept)."""
    headers = [("Host", "h"), ("Date", "Thu, 29 Feb 2024 23:59:59 GMT"), ("x-amz-date", "Thu, 29 Feb 2024 23:59:58 GMT")]

    def sign(sts: str) -> str:
        return base64.b64encode(hmac.digest(SK.encode(), sts.encode(), hashlib.sha1)).decode()

    for sts in [
        "GET\n\n\n\nx-amz-date:Thu, 29 Feb 2024 23:59:58 GMT\n/b/k",
        "GET\n\n\nThu, 29 Feb 2024 23:59:58 GMT\n/b/k",
        "GET\n\n\nThu, 29 Feb 2024 23:59:59 GMT\nx-amz-date:Thu, 29 Feb 2024 23:59:58 GMT\n/b/k",
    ]:
        verify_v2("GET", "/b/k", headers, AK, sign(sts), SK, now=WHEN)
    assert string_to_sign_v2("GET", "/b/k", headers, date_line="") == "GET\n\n\n\nx-amz-date:Thu, 29 Feb 2024 23:59:58 GMT\n/b/k"
    # the skew is the x-amz-date's, not the Date header's
    with pytest.raises(AuthError) as info:
        verify_v2("GET", "/b/k", [("Date", "Thu, 29 Feb 2024 23:59:59 GMT"), ("x-amz-date", "Thu, 28 Feb 2024 00:00:00 GMT")],
                  AK, "x", SK, now=WHEN)
    assert info.value.code == "RequestTimeTooSkewed"


# --------------------------------------------------------------------------------------------------------------
# Canonicalized resource


@pytest.mark.parametrize(
    ("target", "bucket", "resource"),
    [
        ("/", None, "/"),
        ("", "b", "/b/"),
        ("/", "b", "/b/"),
        ("/k%20x", "b", "/b/k%20x"),  # the path as sent, not re-encoded
        ("/b/k+x~%7E", None, "/b/k+x~%7E"),
        ("/b/k?uploads&prefix=a", None, "/b/k?uploads"),
        ("/b/k?versionId=a%2Fb&acl", None, "/b/k?acl&versionId=a/b"),  # sorted, values decoded
        ("/b/k?response-content-type=a+b", None, "/b/k?response-content-type=a+b"),  # '+' stays a plus
        ("/b/k?acl=", None, "/b/k?acl="),
        ("/b/k?Acl&ACL=1&x-amz-meta-a=1", None, "/b/k"),  # names are case-sensitive
        ("/b?uploadId=2&partNumber=1", None, "/b?partNumber=1&uploadId=2"),
    ],
)
def test_canonical_resource(target: str, bucket, resource: str) -> None:
    assert canonical_resource(target, bucket) == resource


def test_empty_subresource_value_is_accepted_in_both_spellings() -> None:
    def sign(resource: str) -> str:
        sts = f"GET\n\n\nThu, 29 Feb 2024 23:59:59 GMT\n{resource}"
        return base64.b64encode(hmac.digest(SK.encode(), sts.encode(), hashlib.sha1)).decode()

    headers = [("Date", "Thu, 29 Feb 2024 23:59:59 GMT")]
    verify_v2("GET", "/b?acl=", headers, AK, sign("/b?acl="), SK, now=WHEN)
    verify_v2("GET", "/b?acl=", headers, AK, sign("/b?acl"), SK, now=WHEN)
    with pytest.raises(AuthError):
        verify_v2("GET", "/b?acl", headers, AK, sign("/b?acl="), SK, now=WHEN)


# --------------------------------------------------------------------------------------------------------------
# Query-string authentication


@BOTO
@given(req=v2_requests(), lifetime=st.integers(0, 10**6), data=st.data())
def test_botocore_v2_presigned_urls_verify(req, lifetime: int, data) -> None:
    expires = int(req["when"].timestamp()) + lifetime
    target, _ = botocore_v2(
        req["method"], req["url"], req["headers"], when=req["when"], secret=req["secret"], auth_path=req["auth_path"],
        query_expires=expires,
    )
    host = urlsplit(req["url"]).netloc
    # the URL alone: botocore moved Content-Type, Content-MD5 and the x-amz-* headers into the query
    sent = [("Host", host)]
    if data.draw(st.booleans()):  # or the client sends them as headers as well
        sent += list(req["headers"].items())
    parsed = parse_v2_query(parse_qsl(urlsplit(target).query, keep_blank_values=True))
    assert (parsed.access_key, parsed.expires) == (AK, expires)
    now = datetime.fromtimestamp(expires - data.draw(st.integers(0, 10**6)), UTC)
    verify_v2_query(req["method"], target, sent, parsed, req["secret"], now=now, bucket_from_host=req["bucket"])
    # tampered
    with pytest.raises(AuthError) as info:
        verify_v2_query(req["method"], target + "&uploads", sent, parsed, req["secret"], now=now,
                        bucket_from_host=req["bucket"])
    assert info.value.code == "SignatureDoesNotMatch"
    forged = ParsedV2Query(parsed.access_key, parsed.signature, parsed.expires + 1, str(parsed.expires + 1))
    with pytest.raises(AuthError):
        verify_v2_query(req["method"], target, sent, forged, req["secret"], now=now, bucket_from_host=req["bucket"])


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("Expires=1&Signature=x", "Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters"),
        ("AWSAccessKeyId=a&Signature=x", "Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters"),
        ("AWSAccessKeyId=a&Expires=1", "Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters"),
        ("AWSAccessKeyId=a&Expires=1&Signature=", "Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters"),
        ("awsaccesskeyid=a&Expires=1&Signature=x", "Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters"),
        ("AWSAccessKeyId=a&Expires=soon&Signature=x", "Invalid date (should be seconds since epoch): soon"),
        ("AWSAccessKeyId=a&Expires=-1&Signature=x", "Invalid date (should be seconds since epoch): -1"),
        ("AWSAccessKeyId=a&Expires=1e9&Signature=x", "Invalid date (should be seconds since epoch): 1e9"),
    ],
)
def test_query_parameter_errors(query: str, message: str) -> None:
    with pytest.raises(AuthError) as info:
        parse_v2_query(parse_qsl(query, keep_blank_values=True))
    assert (info.value.code, info.value.message, info.value.status) == ("AccessDenied", message, 403)


def test_one_auth_mechanism_only() -> None:
    parsed = ParsedV2Query(AK, "sig", 2000000000, "2000000000")
    for target, headers in [
        ("/b/k?AWSAccessKeyId=a&Expires=2000000000&Signature=sig", [("Authorization", "AWS a:b")]),
        ("/b/k?AWSAccessKeyId=a&Expires=2000000000&Signature=sig&X-Amz-Credential=x", []),
    ]:
        with pytest.raises(AuthError) as info:
            verify_v2_query("GET", target, headers, parsed, SK, now=WHEN)
        assert info.value.code == "InvalidArgument"
        assert info.value.message.startswith("Only one auth mechanism allowed")
    for query in ["Signature=x", "X-Amz-Algorithm=AWS4-HMAC-SHA256", "AWSAccessKeyId=a"]:
        with pytest.raises(AuthError) as info:
            verify_v2("GET", f"/b/k?{query}", [("Date", "Thu, 29 Feb 2024 23:59:59 GMT"), ("Authorization", "AWS a:b")],
                      "a", "b", SK, now=WHEN)
        assert info.value.code == "InvalidArgument"
        assert info.value.extra == {"ArgumentName": "Authorization", "ArgumentValue": "AWS a:b"}


# --------------------------------------------------------------------------------------------------------------
# Dates


def test_date_is_required_and_checked() -> None:
    for headers in ([], [("Date", "yesterday")], [("x-amz-date", "")], [("Date", "Thu, 29 Feb 2024 25:00:00 GMT")]):
        with pytest.raises(AuthError) as info:
            verify_v2("GET", "/b/k", headers, AK, "sig", SK, now=WHEN)
        assert (info.value.code, info.value.message) == (
            "AccessDenied",
            "AWS authentication requires a valid Date or x-amz-date header",
        )
    target, headers = botocore_v2("GET", "http://localhost/b/k", {}, when=WHEN)
    for skew in (-901, 901):
        with pytest.raises(AuthError) as info:
            verify_v2("GET", target, headers, *auth_of(headers), SK, now=WHEN + timedelta(seconds=skew))
        assert info.value.code == "RequestTimeTooSkewed"
        assert info.value.status == 403
        assert info.value.extra["RequestTime"] == "Thu, 29 Feb 2024 23:59:59 GMT"
        assert info.value.extra["MaxAllowedSkewMilliseconds"] == "900000"
    verify_v2("GET", target, headers, *auth_of(headers), SK, now=WHEN + timedelta(hours=1), max_skew=timedelta(hours=2))


# --------------------------------------------------------------------------------------------------------------
# Authorization header parsing


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("AWS", "Authorization header is invalid -- one and only one ' ' (space) required"),
        ("AWS  AK:sig", "Authorization header is invalid -- one and only one ' ' (space) required"),
        ("AWS AK:sig extra", "Authorization header is invalid -- one and only one ' ' (space) required"),
        ("AWS AKsig", "AWS authorization header is invalid.  Expected AwsAccessKeyId:signature"),
        ("AWS AK:", "AWS authorization header is invalid.  Expected AwsAccessKeyId:signature"),
        ("AWS :sig", "AWS authorization header is invalid.  Expected AwsAccessKeyId:signature"),
        ("AWS AK:sig=:more", "AWS authorization header is invalid.  Expected AwsAccessKeyId:signature"),
        ("aws AK:sig", "Unsupported Authorization Type"),
        ("AWS4 AK:sig", "Unsupported Authorization Type"),
        ("", "Unsupported Authorization Type"),
    ],
)
def test_parse_v2_header_errors(value: str, message: str) -> None:
    with pytest.raises(AuthError) as info:
        parse_v2_header(value)
    assert (info.value.code, info.value.message, info.value.status) == ("InvalidArgument", message, 400)
    assert info.value.extra == {"ArgumentName": "Authorization", "ArgumentValue": value}


def test_parse_v2_header() -> None:
    assert parse_v2_header("AWS AKIAIOSFODNN7EXAMPLE:bWq2s1WEIj+Ydj0vQ697zp+IXMU=") == (
        AK,
        "bWq2s1WEIj+Ydj0vQ697zp+IXMU=",
    )


@settings(max_examples=300, deadline=None)
@given(
    value=st.one_of(st.text(), st.text().map(lambda t: "AWS " + t)),
    target=st.text(alphabet=string.printable + "é", max_size=30),
    headers=st.lists(st.tuples(st.sampled_from(["Date", "x-amz-date", "x-amz-meta-a", "Content-Type", "Authorization"]),
                               st.text(max_size=30)), max_size=4),
    query=st.dictionaries(st.sampled_from(["AWSAccessKeyId", "Expires", "Signature", "x"]), st.text(max_size=12)),
)
def test_only_auth_errors(value: str, target: str, headers, query) -> None:
    try:
        access_key, signature = parse_v2_header(value)
        verify_v2("GET", "/" + target, headers, access_key, signature, SK, now=WHEN)
    except AuthError:
        pass
    try:
        parsed = parse_v2_query(query)
        verify_v2_query("GET", "/" + target + "?" + percent_encode_sequence(query), headers, parsed, SK, now=WHEN)
    except AuthError:
        pass
