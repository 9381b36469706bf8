"""SigV4 presigned URLs (query-string authentication) against boto3's generate_presigned_url, AWS's documented
example, and the errors S3 returns."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import string
from datetime import UTC, datetime, timedelta
from functools import cache
from unittest import mock
from urllib.parse import parse_qsl, quote, urlsplit

import boto3
import botocore.auth
import pytest
from botocore.auth import S3SigV4QueryAuth
from botocore.compat import HAS_CRT
from botocore.config import Config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_sos.auth.sigv4 import (
    MAX_PRESIGNED_EXPIRES,
    UNSIGNED_PAYLOAD,
    AuthError,
    ParsedPresigned,
    SigningKeyCache,
    canonical_request,
    derive_signing_key,
    parse_presigned,
    string_to_sign,
    verify_presigned,
)

from .test_sigv4 import AK, DOC_HOST, DOC_TIME, KEY_CHARS, SK

# --------------------------------------------------------------------------------------------------------------
# Presigning with boto3


@cache
def s3_client(access_key: str, secret: str, region: str, style: str):
    endpoint = "http://localhost:9000" if style == "path" else "http://s3.example.com"
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret,
        region_name=region,
        config=Config(signature_version="s3v4", s3={"addressing_style": style}),
    )


SIGNERS = ["botocore", "crt"] if HAS_CRT else ["botocore"]


def presign(client_method: str, params: dict, *, when: datetime, expires: int = 3600, access_key=AK, secret=SK,
            region="us-east-1", style="path", signer="botocore") -> tuple[str, str, list[tuple[str, str]]]:
    """(target, host, decoded query pairs) of a URL made by boto3 at a frozen time, with botocore's own SigV4
    signer or with awscrt's (which botocore uses when awscrt is installed)."""
    client = s3_client(access_key, secret, region, style)
    aware = when.astimezone(UTC)

    def frozen_now(remove_tzinfo: bool = True) -> datetime:
        return aware.replace(tzinfo=None) if remove_tzinfo else aware

    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch("botocore.auth.get_current_datetime", frozen_now))
        if HAS_CRT:
            stack.enter_context(mock.patch("botocore.crt.auth.get_current_datetime", frozen_now))
        if signer == "botocore":
            stack.enter_context(mock.patch.dict(botocore.auth.AUTH_TYPE_MAPS, {"s3v4-query": S3SigV4QueryAuth}))
        url = client.generate_presigned_url(client_method, Params=params, ExpiresIn=expires)
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}", parts.netloc, parse_qsl(parts.query, keep_blank_values=True)


def verify(method, target, headers, pairs, *, secret=SK, now, **kwargs):
    return verify_presigned(
        method, target, headers, parse_presigned(pairs), secret, now=now, key_cache=SigningKeyCache(), **kwargs
    )


def expect(code: str, method, target, headers, pairs, *, now, **kwargs) -> AuthError:
    with pytest.raises(AuthError) as info:
        verify(method, target, headers, pairs, now=now, **kwargs)
    assert info.value.code == code, info.value
    return info.value


WHEN = datetime(2024, 2, 29, 23, 59, 30, tzinfo=UTC)
object_key = st.lists(st.one_of(KEY_CHARS, st.sampled_from(["/", "//", "..", "%", "+", " "])), min_size=1, max_size=12).map("".join)
METHODS = {"get_object": "GET", "put_object": "PUT", "head_object": "HEAD"}


@st.composite
def presigned_requests(draw):
    client_method = draw(st.sampled_from(sorted(METHODS)))
    style = draw(st.sampled_from(["path", "virtual"]))
    bucket = draw(st.from_regex(r"[a-z][a-z0-9\-]{2,10}[a-z0-9]", fullmatch=True))
    params = {"Bucket": bucket, "Key": draw(object_key)}
    headers: dict[str, str] = {}
    if client_method == "get_object":
        for name in draw(st.lists(st.sampled_from(
                ["ResponseContentType", "ResponseContentDisposition", "ResponseCacheControl", "ResponseContentLanguage",
                 "VersionId", "PartNumber"]), unique=True, max_size=4)):
            params[name] = 3 if name == "PartNumber" else draw(st.lists(KEY_CHARS, min_size=1, max_size=6).map("".join))
    if client_method == "put_object":
        if draw(st.booleans()):
            params["ContentType"] = "text/plain; charset=utf-8"
            headers["Content-Type"] = params["ContentType"]
        if draw(st.booleans()):
            params["Metadata"] = {"owner": "a  b"}
            headers["x-amz-meta-owner"] = "a  b"
    if client_method == "head_object" and draw(st.booleans()):
        params["Range"] = "bytes=0-9"
        headers["Range"] = "bytes=0-9"
    return {
        "client_method": client_method,
        "params": params,
        "headers": headers,
        "style": style,
        "region": draw(st.sampled_from(["us-east-1", "eu-west-3", "garage"])),
        "secret": draw(st.sampled_from([SK, "minio/+=secret", "s"])),
        "expires": draw(st.sampled_from([1, 60, 3600, MAX_PRESIGNED_EXPIRES])),
        "signer": draw(st.sampled_from(SIGNERS)),
        "when": draw(st.datetimes(datetime(2000, 1, 1), datetime(2099, 1, 1), timezones=st.just(UTC))).replace(microsecond=0),
    }


def make(req) -> tuple[str, str, list[tuple[str, str]], list[tuple[str, str]]]:
    target, host, pairs = presign(
        req["client_method"], req["params"], when=req["when"], expires=req["expires"], secret=req["secret"],
        region=req["region"], style=req["style"], signer=req["signer"],
    )
    return METHODS[req["client_method"]], target, [("Host", host), *req["headers"].items()], pairs


BOTO = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@BOTO
@given(req=presigned_requests(), data=st.data())
def test_boto3_presigned_urls_verify(req, data) -> None:
    method, target, headers, pairs = make(req)
    now = req["when"] + timedelta(seconds=data.draw(st.integers(-900, req["expires"])))
    verified = verify(method, target, headers, pairs, secret=req["secret"], now=now)
    assert verified.access_key == AK
    assert verified.region == req["region"]
    assert verified.request_time == req["when"]
    assert verified.amz_date == req["when"].strftime("%Y%m%dT%H%M%SZ")
    assert verified.payload_hash == UNSIGNED_PAYLOAD
    assert verified.seed_signature == dict(pairs)["X-Amz-Signature"]
    assert verified.signing_key == derive_signing_key(req["secret"], verified.amz_date[:8], req["region"], "s3")


@BOTO
@given(req=presigned_requests(), data=st.data())
def test_tampered_presigned_urls_do_not_match(req, data) -> None:
    method, target, headers, pairs = make(req)
    path, _, query = target.partition("?")
    secret = req["secret"]
    what = data.draw(st.sampled_from(["method", "path", "query", "param", "signature", "secret", "header", "expires"]))
    if what == "method":
        method = data.draw(st.sampled_from(["GET", "PUT", "HEAD", "DELETE", "POST"]).filter(lambda m: m != method))
    elif what == "path":
        path = path + data.draw(st.sampled_from(["x", "/", "%20", "~"]))
    elif what == "query":
        query += "&" + data.draw(st.sampled_from(["acl", "x=1", "response-content-type=a", "X-Amz-Security-Token=t"]))
    elif what == "param":  # change the value of a signed parameter, say the expiry or a response override
        name = data.draw(st.sampled_from([n for n, _ in pairs if n not in ("X-Amz-Signature", "X-Amz-Expires",
                                                                          "X-Amz-Date", "X-Amz-Credential",
                                                                          "X-Amz-Algorithm", "X-Amz-SignedHeaders")]
                                         or ["extra"]))
        query += f"&{name}=1" if name == "extra" else ""
        if name != "extra":
            query = "&".join(p + "x" if p.startswith(quote(name, safe="") + "=") else p for p in query.split("&"))
            pairs = [(n, v + "x" if n == name else v) for n, v in pairs]
    elif what == "expires":  # a longer life than was signed
        new = str(min(req["expires"] * 2, MAX_PRESIGNED_EXPIRES - 1) if req["expires"] > 1 else 2)
        query = "&".join("X-Amz-Expires=" + new if p.startswith("X-Amz-Expires=") else p for p in query.split("&"))
        pairs = [(n, new if n == "X-Amz-Expires" else v) for n, v in pairs]
    elif what == "signature":
        sig = dict(pairs)["X-Amz-Signature"]
        i = data.draw(st.integers(0, 63))
        forged = sig[:i] + data.draw(st.sampled_from("0123456789abcdef").filter(lambda c: c != sig[i])) + sig[i + 1:]
        pairs = [(n, forged if n == "X-Amz-Signature" else v) for n, v in pairs]
    elif what == "secret":
        secret += "x"
    else:
        headers = [(n, "other" + v if n.lower() == "host" else v) for n, v in headers]
    with pytest.raises(AuthError) as info:
        verify(method, f"{path}?{query}", headers, pairs, secret=secret, now=req["when"])
    assert info.value.code == "SignatureDoesNotMatch", what
    assert info.value.status == 403


# --------------------------------------------------------------------------------------------------------------
# AWS documentation example (S3 API reference, "Authenticating Requests: Using Query Parameters")

DOC_QUERY = (
    "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
    "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
)


def doc_args():
    return "GET", f"/test.txt?{DOC_QUERY}", [("Host", DOC_HOST)], parse_qsl(DOC_QUERY)


def test_aws_doc_presigned_url() -> None:
    verified = verify(*doc_args(), now=DOC_TIME + timedelta(hours=23))
    assert verified.seed_signature == "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    assert verified.scope == "20130524/us-east-1/s3/aws4_request"
    assert parse_presigned(parse_qsl(DOC_QUERY)) == ParsedPresigned(
        access_key=AK,
        date="20130524",
        region="us-east-1",
        service="s3",
        signed_headers=("host",),
        signature="aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404",
        amz_date="20130524T000000Z",
        request_time=DOC_TIME,
        expires=86400,
        content_sha256=None,
    )
    assert parse_presigned(dict(parse_qsl(DOC_QUERY))) == parse_presigned(parse_qsl(DOC_QUERY))


def test_expiry_boundaries_and_errors() -> None:
    verify(*doc_args(), now=DOC_TIME + timedelta(seconds=86400))  # the last valid instant
    error = expect("AccessDenied", *doc_args(), now=DOC_TIME + timedelta(seconds=86400, microseconds=1))
    assert error.message == "Request has expired"
    assert error.status == 403
    assert list(error.extra.items()) == [
        ("X-Amz-Expires", "86400"),
        ("Expires", "2013-05-25T00:00:00Z"),
        ("ServerTime", "2013-05-25T00:00:00Z"),
    ]
    error = expect("AccessDenied", *doc_args(), now=datetime(2014, 1, 1, tzinfo=UTC))
    assert error.extra["ServerTime"] == "2014-01-01T00:00:00Z"


def test_future_dated_urls() -> None:
    # up to 15 minutes ahead of the server clock is tolerated, like any request ...
    verify(*doc_args(), now=DOC_TIME - timedelta(minutes=15))
    # ... beyond, S3 answers AccessDenied "Request is not yet valid"
    error = expect("AccessDenied", *doc_args(), now=DOC_TIME - timedelta(minutes=15, seconds=1))
    assert error.message == "Request is not yet valid"
    assert error.extra == {
        "X-Amz-Date": str(int(DOC_TIME.timestamp()) * 1000),
        "Expires": "2013-05-25T00:00:00Z",
        "ServerTime": "2013-05-23T23:44:59Z",
    }
    verify(*doc_args(), now=DOC_TIME - timedelta(minutes=30), max_skew=timedelta(hours=1))


def test_zero_expires_has_expired() -> None:
    when = datetime(2024, 1, 1, tzinfo=UTC)
    method, target, headers, pairs = own_presigned(when=when, expires=0)
    error = expect("AccessDenied", method, target, headers, pairs, now=when + timedelta(milliseconds=1))
    assert error.message == "Request has expired"


def test_presigned_with_authorization_header_is_invalid_argument() -> None:
    method, target, headers, pairs = doc_args()
    headers = [*headers, ("Authorization", "AWS4-HMAC-SHA256 whatever")]
    error = expect("InvalidArgument", method, target, headers, pairs, now=DOC_TIME)
    assert error.message.startswith("Only one auth mechanism allowed")
    assert error.extra == {"ArgumentName": "Authorization", "ArgumentValue": "AWS4-HMAC-SHA256 whatever"}


def test_unsigned_amz_headers_are_access_denied() -> None:
    method, target, headers, pairs = doc_args()
    headers = [*headers, ("x-amz-meta-a", "1"), ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"), ("Range", "bytes=0-1")]
    error = expect("AccessDenied", method, target, headers, pairs, now=DOC_TIME)
    assert error.extra == {"HeadersNotSigned": "x-amz-meta-a"}


def test_service_and_region() -> None:
    method, target, headers, pairs = doc_args()
    verify(method, target, headers, pairs, now=DOC_TIME, expected_region="us-east-1")
    error = expect("AuthorizationQueryParametersError", method, target, headers, pairs, now=DOC_TIME,
                   expected_region="eu-west-1")
    assert error.extra == {"Region": "eu-west-1"}
    assert 'the region "us-east-1" is wrong; expecting "eu-west-1"' in error.message
    pairs = [(n, v.replace("/s3/", "/iam/") if n == "X-Amz-Credential" else v) for n, v in pairs]
    error = expect("AuthorizationQueryParametersError", method, target, headers, pairs, now=DOC_TIME)
    assert 'incorrect service "iam"' in error.message


# --------------------------------------------------------------------------------------------------------------
# X-Amz-Content-Sha256 in the query, signed with this module's functions


def own_presigned(*, when: datetime, expires: int = 60, content_sha256: str | None = None, extra: str = ""):
    amz_date = when.strftime("%Y%m%dT%H%M%SZ")
    params = [
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
        ("X-Amz-Credential", f"{AK}/{amz_date[:8]}/us-east-1/s3/aws4_request"),
        ("X-Amz-Date", amz_date),
        ("X-Amz-Expires", str(expires)),
        ("X-Amz-SignedHeaders", "host"),
    ]
    if content_sha256 is not None:
        params.append(("X-Amz-Content-Sha256", content_sha256))
    query = "&".join(f"{quote(n, safe='')}={quote(v, safe='')}" for n, v in params) + extra
    headers = [("Host", "h")]
    creq = canonical_request("PUT", "/b/k", query, headers, ["host"], content_sha256 or UNSIGNED_PAYLOAD)
    sts = string_to_sign(amz_date, f"{amz_date[:8]}/us-east-1/s3/aws4_request", creq)
    sig = hmac.new(derive_signing_key(SK, amz_date[:8], "us-east-1", "s3"), sts.encode(), hashlib.sha256).hexdigest()
    query += f"&X-Amz-Signature={sig}"
    return "PUT", f"/b/k?{query}", headers, parse_qsl(query, keep_blank_values=True)


def test_content_sha256_in_the_query_is_the_payload_hash() -> None:
    body_hash = hashlib.sha256(b"body").hexdigest()
    verified = verify(*own_presigned(when=WHEN, content_sha256=body_hash), now=WHEN)
    assert verified.payload_hash == body_hash
    verified = verify(*own_presigned(when=WHEN, content_sha256=UNSIGNED_PAYLOAD), now=WHEN)
    assert verified.payload_hash == UNSIGNED_PAYLOAD
    error = expect("InvalidArgument", *own_presigned(when=WHEN, content_sha256="nope"), now=WHEN)
    assert error.extra == {"ArgumentName": "X-Amz-Content-Sha256", "ArgumentValue": "nope"}
    # without it in the query, a digest the URL did not sign does not match
    method, target, headers, pairs = own_presigned(when=WHEN)
    pairs.append(("X-Amz-Content-Sha256", body_hash))
    expect("SignatureDoesNotMatch", method, target, headers, pairs, now=WHEN)


def test_other_query_parameters_are_signed() -> None:
    verify(*own_presigned(when=WHEN, extra="&acl&uploadId=a%2Bb&response-content-type=text%2Fplain"), now=WHEN)


# --------------------------------------------------------------------------------------------------------------
# Parameter errors (AuthorizationQueryParametersError, 400)

MISSING = "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters."


def _replace(pairs, name, value):
    return [(n, value if n == name else v) for n, v in pairs if not (n == name and value is None)]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("X-Amz-Algorithm", None, MISSING),
        ("X-Amz-Credential", None, MISSING),
        ("X-Amz-Signature", None, MISSING),
        ("X-Amz-Date", None, MISSING),
        ("X-Amz-SignedHeaders", None, MISSING),
        ("X-Amz-Expires", None, MISSING),
        ("X-Amz-Signature", "", MISSING),
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA512", 'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"'),
        ("X-Amz-Algorithm", "AWS4-ECDSA-P256-SHA256", 'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"'),
        ("X-Amz-Credential", "AK/20130524/us-east-1/s3", "the Credential is mal-formed"),
        ("X-Amz-Credential", "AK//us-east-1/s3/aws4_request", "the Credential is mal-formed"),
        ("X-Amz-Credential", "AK/2013052/us-east-1/s3/aws4_request", 'incorrect date format "2013052"'),
        ("X-Amz-Credential", "AK/20130524/us-east-1/s3/aws4", 'incorrect terminal "aws4"'),
        ("X-Amz-Credential", "AK/20130525/us-east-1/s3/aws4_request",
         'Invalid credential date "20130525". This date is not the same as X-Amz-Date: "20130524".'),
        ("X-Amz-Date", "20130524", "X-Amz-Date must be in the ISO8601 Long Format"),
        ("X-Amz-Date", "Fri, 24 May 2013 00:00:00 GMT", "X-Amz-Date must be in the ISO8601 Long Format"),
        ("X-Amz-Date", "20130532T000000Z", "X-Amz-Date must be in the ISO8601 Long Format"),
        ("X-Amz-Expires", "1h", "X-Amz-Expires should be a number"),
        ("X-Amz-Expires", "1.5", "X-Amz-Expires should be a number"),
        ("X-Amz-Expires", "٣", "X-Amz-Expires should be a number"),
        ("X-Amz-Expires", "9" * 40, "X-Amz-Expires should be a number"),
        ("X-Amz-SignedHeaders", "host;;x", "X-Amz-SignedHeaders"),
    ],
)
def test_parameter_errors(name: str, value: str | None, message: str) -> None:
    pairs = _replace(parse_qsl(DOC_QUERY), name, value)
    with pytest.raises(AuthError) as info:
        parse_presigned(pairs)
    assert info.value.code == "AuthorizationQueryParametersError"
    assert info.value.status == 400
    assert message in info.value.message


@pytest.mark.parametrize(("value", "message"), [
    ("-1", "X-Amz-Expires must be non-negative"),
    ("-604801", "X-Amz-Expires must be non-negative"),
    ("604801", "X-Amz-Expires must be less than a week (in seconds); that is, the given X-Amz-Expires must be less "
               "than 604800 seconds"),
    ("9" * 20, "X-Amz-Expires must be less than a week"),
])
def test_expires_out_of_range_is_access_denied(value: str, message: str) -> None:
    """A URL that can never be valid is refused as S3 refuses a URL it will not honour: 403 AccessDenied."""
    with pytest.raises(AuthError) as info:
        parse_presigned(_replace(parse_qsl(DOC_QUERY), "X-Amz-Expires", value))
    assert (info.value.code, info.value.status) == ("AccessDenied", 403)
    assert message in info.value.message


def test_hoisted_headers() -> None:
    from trio_sos.auth.sigv4 import hoisted_headers

    pairs = parse_qsl(DOC_QUERY) + [("x-amz-acl", "private"), ("X-Amz-Meta-Colour", "blue"), ("x-id", "GetObject"),
                                    ("X-Amz-Security-Token", "t")]
    assert hoisted_headers(pairs) == {"x-amz-acl": "private", "x-amz-meta-colour": "blue"}
    with pytest.raises(AuthError) as info:
        hoisted_headers(pairs + [("X-AMZ-ACL", "public-read")])
    assert info.value.code == "AuthorizationQueryParametersError"


def test_repeated_parameters_are_rejected() -> None:
    pairs = parse_qsl(DOC_QUERY) + [("X-Amz-Signature", "00")]
    with pytest.raises(AuthError) as info:
        parse_presigned(pairs)
    assert info.value.code == "AuthorizationQueryParametersError"


def test_expires_limits_parse() -> None:
    for value in ("0", "1", "604800", "007"):
        assert parse_presigned(_replace(parse_qsl(DOC_QUERY), "X-Amz-Expires", value)).expires == int(value)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature", "X-Amz-Date", "X-Amz-SignedHeaders",
                         "X-Amz-Expires", "X-Amz-Content-Sha256", "other"]),
        st.one_of(st.text(max_size=30), st.sampled_from(["AWS4-HMAC-SHA256", "20130524T000000Z", "86400", "host",
                                                         "AK/20130524/us-east-1/s3/aws4_request"])),
    ),
    st.text(alphabet=string.printable, max_size=20),
)
def test_parse_and_verify_only_raise_auth_error(params: dict[str, str], path: str) -> None:
    try:
        parsed = parse_presigned(params)
        verify_presigned("GET", "/" + path, [("Host", "h")], parsed, SK, now=DOC_TIME, key_cache=SigningKeyCache())
    except AuthError:
        pass
