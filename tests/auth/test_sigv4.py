"""SigV4 Authorization-header verification against botocore's own signer, AWS's documented examples, and the
error codes S3 returns."""

from __future__ import annotations

import hashlib
import hmac
import string
from datetime import UTC, datetime, timedelta
from unittest import mock
from urllib.parse import quote, unquote_to_bytes, urlsplit

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.utils import percent_encode_sequence
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_sos.auth.sigv4 import (
    EMPTY_SHA256,
    STREAMING_PAYLOADS,
    UNSIGNED_PAYLOAD,
    AuthError,
    ParsedAuth,
    SigningKeyCache,
    canonical_headers,
    canonical_query,
    canonical_request,
    canonical_uri,
    check_payload_sha256,
    derive_signing_key,
    invalid_access_key_id,
    is_valid_payload_hash,
    parse_authorization,
    string_to_sign,
    verify_header_auth,
)

AK = "AKIAIOSFODNN7EXAMPLE"
SK = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DOC_HOST = "examplebucket.s3.amazonaws.com"
DOC_TIME = datetime(2013, 5, 24, tzinfo=UTC)

# --------------------------------------------------------------------------------------------------------------
# Signing requests with botocore


def botocore_sign(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    *,
    access_key: str,
    secret: str,
    region: str,
    when: datetime,
    unsigned_payload: bool,
) -> tuple[str, list[tuple[str, str]]]:
    """Sign with botocore's S3 signer at a frozen time; return the request-target and headers as they would go
    on the wire (the prepared request)."""
    request = AWSRequest(method=method, url=url, headers=headers, data=body)
    if unsigned_payload:
        # S3SigV4Auth recomputes x-amz-content-sha256 itself: this is how a client turns payload signing off.
        request.context["client_config"] = Config(s3={"payload_signing_enabled": False})
    naive_utc = when.astimezone(UTC).replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", return_value=naive_utc):
        S3SigV4Auth(Credentials(access_key, secret), "s3", region).add_auth(request)
    prepared = request.prepare()
    parts = urlsplit(prepared.url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    return target, list(prepared.headers.items())


def header(headers: list[tuple[str, str]], name: str) -> str:
    return next(v for n, v in headers if n.lower() == name)


def replace_header(headers: list[tuple[str, str]], name: str, value: str) -> list[tuple[str, str]]:
    return [(n, value if n.lower() == name else v) for n, v in headers]


def own_sign(
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    signed: list[str],
    *,
    secret: str = SK,
    region: str = "us-east-1",
    scope_date: str | None = None,
    amz_date: str,
) -> str:
    """An Authorization value computed with this module's own functions (for cases botocore cannot produce)."""
    path, _, query = target.partition("?")
    payload = (
        header(headers, "x-amz-content-sha256")
        if any(n.lower() == "x-amz-content-sha256" for n, _ in headers)
        else EMPTY_SHA256
    )
    date = scope_date or amz_date[:8]
    creq = canonical_request(method, path, query, headers, signed, payload)
    sts = string_to_sign(amz_date, f"{date}/{region}/s3/aws4_request", creq)
    sig = hmac.new(derive_signing_key(secret, date, region, "s3"), sts.encode(), hashlib.sha256).hexdigest()
    return f"AWS4-HMAC-SHA256 Credential={AK}/{date}/{region}/s3/aws4_request, SignedHeaders={';'.join(sorted(signed))}, Signature={sig}"


def verify(method, target, headers, *, secret=SK, now, **kwargs):
    parsed = parse_authorization(header(headers, "authorization"))
    return verify_header_auth(
        method, target, headers, parsed, secret, now=now, key_cache=SigningKeyCache(), **kwargs
    )


# --------------------------------------------------------------------------------------------------------------
# Random requests

KEY_CHARS = st.sampled_from(
    list(string.ascii_letters + string.digits + " +%~!*'()$&,;=:@?#[]-_.\"<>^`{|}\\\t")
    + ["é", "ü", "日本", "😀", "\u00a0", "ß", "Ω"]
)
segment = st.one_of(
    st.sampled_from(["", ".", "..", "~", "%", "+", "a b", "%2F", "%20"]),
    st.lists(KEY_CHARS, min_size=1, max_size=6).map("".join),
)
object_key = st.lists(segment, min_size=1, max_size=5).map("/".join)
bucket = st.from_regex(r"[a-z0-9][a-z0-9.\-]{1,12}[a-z0-9]", fullmatch=True)
query_name = st.one_of(
    st.sampled_from(
        ["prefix", "delimiter", "max-keys", "acl", "uploads", "partNumber", "a", "A", "z", "{", "_"]
    ),
    st.lists(KEY_CHARS, min_size=0, max_size=5).map("".join),
).filter(lambda n: n not in {"X-Amz-Signature", "X-Amz-Algorithm", "X-Amz-Credential", "Signature"})
query_value = st.one_of(
    st.sampled_from(["", "1", "a+b", "a b", "x=y", "&", "%", "~", "é/ü"]),
    st.lists(KEY_CHARS, max_size=6).map("".join),
)
header_text = st.text(alphabet=string.ascii_letters + string.digits + " \t,;:=+/-_.*'\"()", max_size=20)


@st.composite
def random_requests(draw):
    method = draw(st.sampled_from(["GET", "PUT", "POST", "DELETE", "HEAD"]))
    kind = draw(st.sampled_from(["service", "bucket", "object", "object"]))
    b = draw(bucket)
    if kind == "service":
        path = "/"
    elif kind == "bucket":
        path = f"/{b}"
    else:
        # botocore's S3 serializer quotes keys with safe='/~', so '//' and '..' go on the wire as they are.
        path = f"/{b}/{quote(draw(object_key), safe='/~')}"
    params = draw(st.lists(st.tuples(query_name, query_value), max_size=5))
    if params and draw(st.booleans()):
        params.append((params[0][0], draw(query_value)))  # a repeated name
    host = draw(
        st.sampled_from(["localhost:9000", "s3.example.com", f"{b}.s3.example.com", "127.0.0.1:8080"])
    )
    url = f"http://{host}{path}" + (f"?{percent_encode_sequence(params)}" if params else "")
    headers = {"Host": host}
    for name in draw(
        st.lists(st.from_regex(r"[a-z][a-z0-9\-]{0,8}", fullmatch=True), max_size=3, unique=True)
    ):
        headers[f"x-amz-meta-{name}"] = draw(header_text)
    if draw(st.booleans()):
        headers["Content-Type"] = draw(st.sampled_from(["text/plain", "application/xml;  charset=utf-8"]))
    if draw(st.booleans()):
        headers["x-amz-storage-class"] = "STANDARD"
    headers["User-Agent"] = "Boto3/1.0  test"  # botocore leaves User-Agent unsigned
    if method in ("PUT", "POST") and draw(st.booleans()):
        headers["Expect"] = "100-continue"  # ... and Expect
    body = draw(st.binary(max_size=64)) if method in ("PUT", "POST") else b""
    when = draw(st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 31), timezones=st.just(UTC)))
    return {
        "method": method,
        "url": url,
        "headers": headers,
        "body": body,
        "access_key": draw(st.sampled_from([AK, "GK31c2f218a2e44f485b94239e", "minioadmin", "ak+=_-"])),
        "secret": draw(
            st.text(alphabet=string.ascii_letters + string.digits + "/+=", min_size=1, max_size=40)
        ),
        "region": draw(st.sampled_from(["us-east-1", "eu-west-3", "garage", "auto", "local"])),
        "when": when.replace(microsecond=0),
        "unsigned_payload": draw(st.booleans()),
    }


BOTOCORE_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@BOTOCORE_SETTINGS
@given(req=random_requests(), skew=st.integers(-900, 900))
def test_botocore_signed_requests_verify(req, skew: int) -> None:
    target, headers = botocore_sign(**req)
    now = req["when"] + timedelta(seconds=skew)
    verified = verify(req["method"], target, headers, secret=req["secret"], now=now)
    assert verified.access_key == req["access_key"]
    assert verified.region == req["region"]
    assert verified.service == "s3"
    assert verified.request_time == req["when"]
    assert verified.amz_date == req["when"].strftime("%Y%m%dT%H%M%SZ")
    assert verified.scope == f"{verified.amz_date[:8]}/{req['region']}/s3/aws4_request"
    assert verified.signing_key == derive_signing_key(
        req["secret"], verified.amz_date[:8], req["region"], "s3"
    )
    assert verified.seed_signature == parse_authorization(header(headers, "authorization")).signature
    expected_hash = UNSIGNED_PAYLOAD if req["unsigned_payload"] else hashlib.sha256(req["body"]).hexdigest()
    assert verified.payload_hash == expected_hash


MUTATIONS = ["method", "path", "query", "header", "secret", "payload_hash"]


@BOTOCORE_SETTINGS
@given(req=random_requests(), mutation=st.sampled_from(MUTATIONS), data=st.data())
def test_mutated_botocore_requests_do_not_match(req, mutation: str, data) -> None:
    target, headers = botocore_sign(**req)
    method, secret = req["method"], req["secret"]
    path, _, query = target.partition("?")
    if mutation == "method":
        method = data.draw(
            st.sampled_from(["GET", "PUT", "POST", "DELETE", "HEAD"]).filter(lambda m: m != method)
        )
    elif mutation == "path":
        positions = [i for i, c in enumerate(path) if c.isascii() and c.isalnum()]
        if positions:
            i = data.draw(st.sampled_from(positions))
            new = data.draw(st.sampled_from("aZ7").filter(lambda c: c != path[i]))
            path = path[:i] + new + path[i + 1 :]
        else:
            path = "/x" + path
    elif mutation == "query":
        query = f"{query}x" if query else "x=1"
    elif mutation == "header":
        parsed = parse_authorization(header(headers, "authorization"))
        names = [n for n in parsed.signed_headers if n not in ("x-amz-date", "x-amz-content-sha256")]
        name = data.draw(st.sampled_from(names))
        headers = replace_header(headers, name, header(headers, name) + "x")
    elif mutation == "secret":
        secret = secret + "x"
    else:
        current = header(headers, "x-amz-content-sha256")
        headers = replace_header(
            headers, "x-amz-content-sha256", EMPTY_SHA256 if current == UNSIGNED_PAYLOAD else UNSIGNED_PAYLOAD
        )
    target = path + (f"?{query}" if query else "")
    with pytest.raises(AuthError) as info:
        verify(method, target, headers, secret=secret, now=req["when"])
    assert info.value.code == "SignatureDoesNotMatch"
    assert info.value.status == 403


# --------------------------------------------------------------------------------------------------------------
# Equivalent encodings of the same request-target verify


def _reencode(raw: bytes, draw, *, in_query: bool) -> str:
    """Another spelling of the same decoded bytes: unreserved bytes sometimes escaped, escapes in random case,
    harmless visible characters sometimes left raw."""
    out = []
    for byte in raw:
        ch = chr(byte)
        escaped = "%" + format(byte, "02x" if draw(st.booleans()) else "02X")
        unreserved = ch.isascii() and (ch.isalnum() or ch in "-_.~")
        raw_ok = byte < 0x80 and ch in "!$'()*+,:;@~-_." + string.ascii_letters + string.digits
        if not in_query:
            raw_ok = raw_ok or ch in "=&/"
        if unreserved or raw_ok:
            out.append(ch if draw(st.booleans()) else escaped)
        else:
            out.append(escaped)
    return "".join(out)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(req=random_requests(), data=st.data())
def test_equivalent_target_spellings_verify(req, data) -> None:
    target, headers = botocore_sign(**req)
    path, _, query = target.partition("?")
    segments = path.split("/")  # keep '/' literal so the segment structure stays
    new_path = "/".join(_reencode(unquote_to_bytes(s), data.draw, in_query=False) for s in segments)
    pairs = [p.partition("=") for p in query.split("&")] if query else []
    new_pairs = [
        _reencode(unquote_to_bytes(n), data.draw, in_query=True)
        + "="
        + _reencode(unquote_to_bytes(v), data.draw, in_query=True)
        for n, _, v in pairs
    ]
    new_pairs = data.draw(st.permutations(new_pairs))
    new_target = new_path + ("?" + "&".join(new_pairs) if new_pairs else "")
    assert canonical_uri(new_path) == canonical_uri(path)
    assert canonical_query("&".join(new_pairs)) == canonical_query(query)
    verify(req["method"], new_target, headers, secret=req["secret"], now=req["when"])


# --------------------------------------------------------------------------------------------------------------
# AWS documentation examples (S3 API reference, "Signature Calculations for the Authorization Header:
# Transferring Payload in a Single Chunk")


def test_aws_doc_get_object() -> None:
    headers = [
        ("Host", DOC_HOST),
        ("Range", "bytes=0-9"),
        ("x-amz-content-sha256", EMPTY_SHA256),
        ("x-amz-date", "20130524T000000Z"),
        (
            "Authorization",
            (
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
                "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
                "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
            ),
        ),
    ]
    parsed = parse_authorization(header(headers, "authorization"))
    creq = canonical_request("GET", "/test.txt", "", headers, parsed.signed_headers, EMPTY_SHA256)
    assert creq == (
        "GET\n/test.txt\n\n"
        f"host:{DOC_HOST}\nrange:bytes=0-9\nx-amz-content-sha256:{EMPTY_SHA256}\nx-amz-date:20130524T000000Z\n\n"
        f"host;range;x-amz-content-sha256;x-amz-date\n{EMPTY_SHA256}"
    )
    assert string_to_sign("20130524T000000Z", "20130524/us-east-1/s3/aws4_request", creq) == (
        "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
        "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
    )
    verified = verify("GET", "/test.txt", headers, now=DOC_TIME)
    assert verified.seed_signature == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    assert verified.payload_hash == EMPTY_SHA256


def test_aws_doc_put_object() -> None:
    # The documented request-target has a raw '$', which the canonical URI encodes as %24.
    headers = [
        ("Host", DOC_HOST),
        ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
        ("Authorization", ""),
        ("x-amz-date", "20130524T000000Z"),
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ("x-amz-content-sha256", "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"),
    ]
    headers = replace_header(
        headers,
        "authorization",
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
        "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class,"
        "Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
    )
    assert canonical_uri("/test$file.text") == "/test%24file.text"
    verify("PUT", "/test$file.text", headers, now=DOC_TIME)
    check_payload_sha256(
        header(headers, "x-amz-content-sha256"), hashlib.sha256(b"Welcome to Amazon S3.").hexdigest()
    )


@pytest.mark.parametrize(
    ("target", "signature"),
    [
        ("/?lifecycle", "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"),
        ("/?max-keys=2&prefix=J", "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"),
        ("/?prefix=J&max-keys=2", "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"),
    ],
)
def test_aws_doc_bucket_requests(target: str, signature: str) -> None:
    headers = [
        ("Host", DOC_HOST),
        ("x-amz-date", "20130524T000000Z"),
        ("x-amz-content-sha256", EMPTY_SHA256),
        (
            "Authorization",
            (
                f"AWS4-HMAC-SHA256 Credential={AK}/20130524/us-east-1/s3/aws4_request,"
                f"SignedHeaders=host;x-amz-content-sha256;x-amz-date,Signature={signature}"
            ),
        ),
    ]
    verify("GET", target, headers, now=DOC_TIME)


def test_aws_doc_signing_key() -> None:
    # The IAM user guide's worked example of deriving a signing key.
    key = derive_signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam")
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


# --------------------------------------------------------------------------------------------------------------
# Canonicalisation details


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("", "/"),
        ("/", "/"),
        ("/bucket/key", "/bucket/key"),
        ("/a%20b", "/a%20b"),
        ("/a+b", "/a%2Bb"),  # '+' in a path is a plus
        ("/a%2Bb", "/a%2Bb"),
        ("//a/../b/./c//", "//a/../b/./c//"),  # no normalisation
        ("/%7e%7E~", "/~~~"),
        ("/%41%2d%5F", "/A-_"),
        ("/a%2fb", "/a/b"),
        ("/%c3%a9", "/%C3%A9"),
        ("/é", "/%C3%A9"),
        ("/%", "/%25"),
        ("/%zz%4", "/%25zz%254"),
        ("/%25", "/%25"),
        ("/%2525", "/%2525"),  # decoded once only
        ("/!$&'()*,;=:@", "/%21%24%26%27%28%29%2A%2C%3B%3D%3A%40"),
        ("/%FF%00", "/%FF%00"),
    ],
)
def test_canonical_uri(raw: str, canonical: str) -> None:
    assert canonical_uri(raw) == canonical


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("", ""),
        ("acl", "acl="),
        ("uploads&prefix=", "prefix=&uploads="),
        ("b=2&a=1", "a=1&b=2"),
        ("a=2&a=1&a=10", "a=1&a=10&a=2"),
        ("a=b+c", "a=b%2Bc"),  # '+' is a literal plus
        ("a=b%20c", "a=b%20c"),
        ("a=b%2bc", "a=b%2Bc"),
        ("a=x=y", "a=x%3Dy"),
        ("a=1&&b=2&", "a=1&b=2"),
        ("=", "="),
        ("=v", "=v"),
        ("X-Amz-Signature=abc&a=1", "a=1"),
        ("k=%c3%a9&%7e=~", "k=%C3%A9&~=~"),
        ("z=&%7B=", "%7B=&z="),  # sorted by the encoded name
        ("a-b=1&a=1", "a=1&a-b=1"),  # by name, then value: not by the joined pair
        ("a=%&b=%4g", "a=%25&b=%254g"),
        ("a=/?:@", "a=%2F%3F%3A%40"),
    ],
)
def test_canonical_query(raw: str, canonical: str) -> None:
    assert canonical_query(raw) == canonical


def test_canonical_headers() -> None:
    headers = [
        ("Host", "example.com"),
        ("X-Amz-Meta-A", "  two  spaces\there  "),
        ("x-amz-meta-a", "second"),
        ("Content-Type", "text/plain"),
        ("X-Unsigned", "nope"),
    ]
    assert canonical_headers(headers, ["x-amz-meta-a", "host", "content-type", "x-amz-meta-missing"]) == (
        "content-type:text/plain\nhost:example.com\nx-amz-meta-a:two spaces here,second\nx-amz-meta-missing:\n"
    )


def test_canonical_headers_are_byte_exact_for_non_ascii() -> None:
    raw = b"caf\xc3\xa9 \xff  x"
    value = raw.decode("utf-8", "surrogateescape")
    block = canonical_headers([("x-amz-meta-n", value)], ["x-amz-meta-n"])
    assert block.encode("utf-8", "surrogateescape") == b"x-amz-meta-n:caf\xc3\xa9 \xff x\n"


def test_repeated_and_unsorted_headers_verify() -> None:
    amz_date = "20240229T235959Z"
    headers = [
        ("host", "h"),
        ("x-amz-date", amz_date),
        ("x-amz-content-sha256", UNSIGNED_PAYLOAD),
        ("X-Amz-Meta-List", "a"),
        ("x-amz-meta-list", " b  c "),
    ]
    signed = ["x-amz-meta-list", "host", "x-amz-date", "x-amz-content-sha256"]
    headers.append(("Authorization", own_sign("PUT", "/b/k", headers, signed, amz_date=amz_date)))
    now = datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC)
    verify("PUT", "/b/k", headers, now=now)
    swapped = headers[:3] + [headers[4], headers[3]] + headers[5:]  # order of repeated values matters
    with pytest.raises(AuthError) as info:
        verify("PUT", "/b/k", swapped, now=now)
    assert info.value.code == "SignatureDoesNotMatch"


# --------------------------------------------------------------------------------------------------------------
# Authorization header parsing


def test_parse_authorization_forms() -> None:
    expected = ParsedAuth(AK, "20130524", "us-east-1", "s3", ("host", "range", "x-amz-date"), "ab12")
    for value in [
        f"AWS4-HMAC-SHA256 Credential={AK}/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-date,Signature=ab12",
        f"AWS4-HMAC-SHA256 Credential={AK}/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-date, Signature=ab12",
        f"  AWS4-HMAC-SHA256   Credential = {AK}/20130524/us-east-1/s3/aws4_request ,\tSignedHeaders=host;range;x-amz-date ,Signature=ab12 ",
        f"AWS4-HMAC-SHA256 Signature=ab12, Credential={AK}/20130524/us-east-1/s3/aws4_request, SignedHeaders=Host;Range;X-Amz-Date,",
    ]:
        assert parse_authorization(value) == expected, value


@pytest.mark.parametrize(
    ("value", "code", "fragment"),
    [
        ("", "InvalidArgument", "Unsupported Authorization Type"),
        ("AWS4 HAHAHA", "InvalidArgument", "Unsupported Authorization Type"),
        ("AWS AKID:c2ln", "InvalidArgument", "Unsupported Authorization Type"),
        (
            f"AWS4-ECDSA-P256-SHA256 Credential={AK}/20130524/s3/aws4_request",
            "InvalidArgument",
            "Unsupported",
        ),
        ("AWS4-HMAC-SHA256", "AuthorizationHeaderMalformed", "three components"),
        ("AWS4-HMAC-SHA256 Credential=HAHAHA", "AuthorizationHeaderMalformed", "three components"),
        (
            "AWS4-HMAC-SHA256 Credential=HAHAHA, SignedHeaders=host, Signature=00",
            "AuthorizationHeaderMalformed",
            "Credential is mal-formed",
        ),
        (
            f"AWS4-HMAC-SHA256 Credential={AK}/2013052/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00",
            "AuthorizationHeaderMalformed",
            'incorrect date format "2013052"',
        ),
        (
            f"AWS4-HMAC-SHA256 Credential={AK}/20130231/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00",
            "AuthorizationHeaderMalformed",
            "incorrect date format",
        ),
        (
            f"AWS4-HMAC-SHA256 Credential={AK}/20130524/us-east-1/s3/aws4_reques, SignedHeaders=host, Signature=00",
            "AuthorizationHeaderMalformed",
            'incorrect terminal "aws4_reques"',
        ),
        (
            f"AWS4-HMAC-SHA256 Credential={AK}//us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00",
            "AuthorizationHeaderMalformed",
            "mal-formed",
        ),
        (
            f"AWS4-HMAC-SHA256 Credential={AK}/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;;x, Signature=0",
            "AuthorizationHeaderMalformed",
            "SignedHeaders",
        ),
        (
            f"AWS4-HMAC-SHA256 Credential={AK}/20130524/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=",
            "AuthorizationHeaderMalformed",
            "component",
        ),
        (
            f"AWS4-HMAC-SHA256 Credential={AK}/20130524/us-east-1/s3/aws4_request, Signature=0, Signature=0",
            "AuthorizationHeaderMalformed",
            "component",
        ),
        (
            f"AWS4-HMAC-SHA256 Credential={AK}/20130524/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0, X=1",
            "AuthorizationHeaderMalformed",
            "component",
        ),
        (
            f"AWS4-HMAC-SHA256 Credential={AK}/20130524/us-east-1/s3/aws4_request SignedHeaders=host Signature=0",
            "AuthorizationHeaderMalformed",
            "three components",
        ),
    ],
)
def test_parse_authorization_errors(value: str, code: str, fragment: str) -> None:
    with pytest.raises(AuthError) as info:
        parse_authorization(value)
    assert info.value.code == code
    assert fragment in info.value.message
    assert info.value.status == 400
    if code == "InvalidArgument":
        assert info.value.extra == {"ArgumentName": "Authorization", "ArgumentValue": value}


def test_parse_authorization_accepts_any_signature_text() -> None:
    # S3 answers 403 SignatureDoesNotMatch (not 400) for a signature that is not even hex.
    parsed = parse_authorization(
        f"AWS4-HMAC-SHA256 Credential={AK}/20150930/us-east-1/s3/aws4_request,SignedHeaders=host;user-agent,"
        "Signature=FWeDfwojDSdS2Ztmpfeubhd9isU="
    )
    assert parsed.signature == "FWeDfwojDSdS2Ztmpfeubhd9isU="


FRAGMENTS = [
    "AWS4-HMAC-SHA256",
    " ",
    ",",
    "=",
    ";",
    "/",
    "Credential",
    "SignedHeaders",
    "Signature",
    AK,
    "20130524",
    "20139999",
    "us-east-1",
    "s3",
    "aws4_request",
    "host",
    "x-amz-date",
    "deadbeef",
    "\t",
    "\x00",
    "é",
    "\udcff",
    "\ud800",
]


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.text(),
        st.lists(st.sampled_from(FRAGMENTS), max_size=25).map("".join),
        st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=3)), max_size=25).map(
            lambda parts: "AWS4-HMAC-SHA256 " + "".join(parts)
        ),
    )
)
def test_parse_authorization_only_raises_auth_error(value: str) -> None:
    try:
        parsed = parse_authorization(value)
    except AuthError as e:
        assert e.code in ("AuthorizationHeaderMalformed", "InvalidArgument")
        return
    assert (
        parsed.access_key and parsed.region and parsed.service and parsed.signature and parsed.signed_headers
    )
    assert len(parsed.date) == 8


header_names = st.sampled_from(
    ["host", "Host", "x-amz-date", "X-Amz-Date", "date", "x-amz-content-sha256", "x-amz-meta-a", "range", "ä"]
)
header_values = st.one_of(
    st.sampled_from(["20130524T000000Z", "Fri, 24 May 2013 00:00:00 GMT", EMPTY_SHA256, UNSIGNED_PAYLOAD]),
    st.text(max_size=12),
)


@settings(max_examples=300, deadline=None)
@given(
    method=st.text(max_size=6),
    target=st.one_of(st.text(max_size=20), st.sampled_from(["/", "/b/k?acl", "/b?X-Amz-Signature=1", "?"])),
    headers=st.lists(st.tuples(header_names, header_values), max_size=8),
    signed=st.lists(st.one_of(header_names, st.text(max_size=4)), min_size=1, max_size=5),
    scope=st.tuples(st.text(max_size=4), st.sampled_from(["20130524", "20130523"]), st.text(max_size=4)),
    service=st.sampled_from(["s3", "S3", "iam"]),
    signature=st.text(max_size=70),
    secret=st.text(max_size=10),
    skew=st.integers(-2000, 2000),
)
def test_verify_only_raises_auth_error(
    method, target, headers, signed, scope, service, signature, secret, skew
):
    access_key, date, region = scope
    parsed = ParsedAuth(access_key, date, region, service, tuple(signed), signature)
    now = DOC_TIME + timedelta(seconds=skew)
    try:
        verified = verify_header_auth(
            method, target, headers, parsed, secret, now=now, key_cache=SigningKeyCache()
        )
    except AuthError as e:
        assert e.code in {
            "AccessDenied",
            "AuthorizationHeaderMalformed",
            "InvalidArgument",
            "InvalidRequest",
            "RequestTimeTooSkewed",
            "SignatureDoesNotMatch",
        }
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in e.extra.items())
        return
    assert verified.seed_signature == signature  # only a real signature gets here


# --------------------------------------------------------------------------------------------------------------
# verify_header_auth: each check and its S3 error


def signed_request(
    *,
    when: datetime = DOC_TIME,
    extra: list[tuple[str, str]] = (),
    signed: list[str] | None = None,
    date_header: str = "x-amz-date",
    scope_date: str | None = None,
    region: str = "us-east-1",
    target: str = "/b/k",
    payload: str | None = EMPTY_SHA256,
) -> list[tuple[str, str]]:
    amz_date = when.strftime("%Y%m%dT%H%M%SZ")
    date_value = amz_date if date_header == "x-amz-date" else when.strftime("%a, %d %b %Y %H:%M:%S GMT")
    headers = [("Host", "s3.example.com"), (date_header, date_value)]
    if payload is not None:
        headers.append(("x-amz-content-sha256", payload))
    headers += list(extra)
    if signed is None:
        signed = sorted({n.lower() for n, _ in headers})
    auth = own_sign("GET", target, headers, signed, amz_date=amz_date, scope_date=scope_date, region=region)
    return headers + [("Authorization", auth)]


def expect_error(code: str, headers, *, now=DOC_TIME, target="/b/k", **kwargs) -> AuthError:
    with pytest.raises(AuthError) as info:
        verify("GET", target, headers, now=now, **kwargs)
    assert info.value.code == code, info.value
    return info.value


def test_own_signer_agrees() -> None:
    verify("GET", "/b/k", signed_request(), now=DOC_TIME)


@pytest.mark.parametrize("direction", [1, -1])
def test_skew_limit_both_ways(direction: int) -> None:
    headers = signed_request()
    verify("GET", "/b/k", headers, now=DOC_TIME + direction * timedelta(minutes=15))
    now = DOC_TIME + direction * timedelta(minutes=15, seconds=1)
    error = expect_error("RequestTimeTooSkewed", headers, now=now)
    assert error.status == 403
    assert error.extra == {
        "RequestTime": "20130524T000000Z",
        "ServerTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "MaxAllowedSkewMilliseconds": "900000",
    }
    assert error.message == "The difference between the request time and the current time is too large."


def test_skew_is_checked_before_the_scope_date() -> None:
    # ceph s3-tests (bad x-amz-date 2010 on a request signed today) expect RequestTimeTooSkewed, not a 400.
    headers = replace_header(signed_request(), "x-amz-date", "20100707T215304Z")
    expect_error("RequestTimeTooSkewed", headers)


def test_naive_now_is_utc() -> None:
    verify("GET", "/b/k", signed_request(), now=DOC_TIME.replace(tzinfo=None))


@pytest.mark.parametrize(
    "bad", ["", "Bad Date", "2013-05-24T00:00:00Z", "20130524T000000", "19500707T215304Z"]
)
def test_invalid_x_amz_date_is_access_denied(bad: str) -> None:
    headers = replace_header(
        signed_request(extra=[("Date", "Fri, 24 May 2013 00:00:00 GMT")]), "x-amz-date", bad
    )
    error = expect_error("AccessDenied", headers)
    assert error.message == "AWS authentication requires a valid Date or x-amz-date header"
    assert error.status == 403


def test_missing_date_is_access_denied() -> None:
    headers = [(n, v) for n, v in signed_request() if n != "x-amz-date"]
    expect_error("AccessDenied", headers)


def test_date_header_when_no_x_amz_date() -> None:
    headers = signed_request(date_header="Date")
    verified = verify("GET", "/b/k", headers, now=DOC_TIME)
    assert verified.amz_date == "20130524T000000Z"
    assert verified.request_time == DOC_TIME


def test_x_amz_date_wins_over_a_bad_date_header() -> None:
    verify("GET", "/b/k", signed_request(extra=[("Date", "Bad Date")]), now=DOC_TIME)


def test_scope_date_must_match_request_date() -> None:
    when = datetime(2013, 5, 24, 0, 5, tzinfo=UTC)
    headers = signed_request(when=when, scope_date="20130523")
    error = expect_error("AuthorizationHeaderMalformed", headers, now=when)
    assert "Date is not the same as X-Amz-Date" in error.message


def test_service_must_be_s3() -> None:
    headers = signed_request()
    parsed = parse_authorization(header(headers, "authorization"))
    wrong = ParsedAuth(
        parsed.access_key, parsed.date, parsed.region, "iam", parsed.signed_headers, parsed.signature
    )
    with pytest.raises(AuthError) as info:
        verify_header_auth("GET", "/b/k", headers, wrong, SK, now=DOC_TIME, key_cache=SigningKeyCache())
    assert info.value.code == "AuthorizationHeaderMalformed"
    assert 'incorrect service "iam"' in info.value.message


def test_any_region_unless_one_is_expected() -> None:
    headers = signed_request(region="moon-1")
    assert verify("GET", "/b/k", headers, now=DOC_TIME).region == "moon-1"
    verify("GET", "/b/k", headers, now=DOC_TIME, expected_region="moon-1")
    error = expect_error("AuthorizationHeaderMalformed", headers, expected_region="us-east-1")
    assert error.extra == {"Region": "us-east-1"}
    assert "the region 'moon-1' is wrong; expecting 'us-east-1'" in error.message


def test_missing_content_sha256_is_invalid_request() -> None:
    error = expect_error("InvalidRequest", signed_request(payload=None))
    assert error.message == "Missing required header for this request: x-amz-content-sha256"
    assert error.status == 400


@pytest.mark.parametrize(
    "bad", ["wrong_sha256_hash_value_12345", EMPTY_SHA256.upper(), EMPTY_SHA256[:-1], ""]
)
def test_invalid_content_sha256_is_invalid_argument(bad: str) -> None:
    error = expect_error("InvalidArgument", signed_request(payload=bad))
    assert error.extra == {"ArgumentName": "x-amz-content-sha256", "ArgumentValue": bad}
    assert error.message.startswith("x-amz-content-sha256 must be UNSIGNED-PAYLOAD")


def test_repeated_content_sha256_is_invalid_argument() -> None:
    error = expect_error("InvalidArgument", signed_request(extra=[("x-amz-content-sha256", EMPTY_SHA256)]))
    assert error.extra["ArgumentValue"] == f"{EMPTY_SHA256},{EMPTY_SHA256}"


@pytest.mark.parametrize("payload", sorted(STREAMING_PAYLOADS) + [UNSIGNED_PAYLOAD])
def test_streaming_and_unsigned_payload_values_verify(payload: str) -> None:
    verified = verify("GET", "/b/k", signed_request(payload=payload), now=DOC_TIME)
    assert verified.payload_hash == payload


def test_unsigned_amz_headers_are_access_denied() -> None:
    headers = signed_request(
        extra=[("x-amz-meta-b", "1"), ("X-Amz-Tagging", "a=b")],
        signed=["host", "x-amz-date", "x-amz-content-sha256"],
    )
    error = expect_error("AccessDenied", headers)
    assert error.message == "There were headers present in the request which were not signed"
    assert error.extra == {"HeadersNotSigned": "x-amz-meta-b, x-amz-tagging"}


def test_unsigned_content_sha256_and_other_headers_are_tolerated() -> None:
    # S3 tolerates x-amz-content-sha256 unsigned (its value is in the canonical request anyway) and any
    # non-x-amz header; x-amzn-trace-id is not an x-amz- header.
    headers = signed_request(
        extra=[("Content-Type", "text/plain"), ("X-Amzn-Trace-Id", "Root=1"), ("User-Agent", "x")],
        signed=["host", "x-amz-date"],
    )
    verified = verify("GET", "/b/k", headers, now=DOC_TIME)
    assert verified.payload_hash == EMPTY_SHA256


def test_host_must_be_signed() -> None:
    headers = signed_request(signed=["x-amz-date", "x-amz-content-sha256"])
    assert expect_error("AccessDenied", headers).extra == {"HeadersNotSigned": "host"}


@pytest.mark.parametrize(
    "query", ["X-Amz-Algorithm=AWS4-HMAC-SHA256", "X-Amz-Signature=00", "Signature=x&a=1"]
)
def test_query_auth_with_header_auth_is_invalid_argument(query: str) -> None:
    target = f"/b/k?{query}"
    headers = signed_request(target=target)
    error = expect_error("InvalidArgument", headers, target=target)
    assert error.message.startswith("Only one auth mechanism allowed")
    assert error.extra == {"ArgumentName": "Authorization", "ArgumentValue": header(headers, "authorization")}


def test_signature_mismatch_details_like_s3() -> None:
    headers = signed_request()
    error = expect_error("SignatureDoesNotMatch", headers, secret="other")
    assert list(error.extra) == [
        "AWSAccessKeyId",
        "StringToSign",
        "SignatureProvided",
        "StringToSignBytes",
        "CanonicalRequest",
        "CanonicalRequestBytes",
    ]
    assert error.extra["AWSAccessKeyId"] == AK
    assert error.extra["SignatureProvided"] == parse_authorization(header(headers, "authorization")).signature
    sts, creq = error.extra["StringToSign"], error.extra["CanonicalRequest"]
    assert sts.startswith("AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n")
    assert sts.endswith(hashlib.sha256(creq.encode()).hexdigest())
    assert error.extra["StringToSignBytes"].startswith("41 57 53 34 2d 48 4d 41 43")
    assert bytes.fromhex(error.extra["StringToSignBytes"]) == sts.encode()
    assert bytes.fromhex(error.extra["CanonicalRequestBytes"]) == creq.encode()
    assert error.status == 403


def test_non_hex_signature_does_not_match() -> None:
    headers = signed_request()
    auth = header(headers, "authorization")
    for bad in ["FWeDfwojDSdS2Ztmpfeubhd9isU=", "é", "\udcff", auth.rsplit("=", 1)[1].upper()]:
        forged = replace_header(headers, "authorization", auth.rsplit("=", 1)[0] + "=" + bad)
        expect_error("SignatureDoesNotMatch", forged)


def test_invalid_access_key_id_error() -> None:
    error = invalid_access_key_id("AKIDONTKNOW")
    assert (error.code, error.status, error.extra) == (
        "InvalidAccessKeyId",
        403,
        {"AWSAccessKeyId": "AKIDONTKNOW"},
    )


# --------------------------------------------------------------------------------------------------------------
# Payload hash values


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (EMPTY_SHA256, True),
        ("0" * 64, True),
        (UNSIGNED_PAYLOAD, True),
        ("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", True),
        ("STREAMING-UNSIGNED-PAYLOAD-TRAILER", True),
        ("STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER", True),
        ("STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD", True),
        ("STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER", True),
        ("STREAMING-UNSIGNED-PAYLOAD", False),
        ("unsigned-payload", False),
        (EMPTY_SHA256.upper(), False),
        (EMPTY_SHA256 + "\n", False),
        ("0" * 63, False),
        ("0" * 65, False),
        ("g" * 64, False),
        ("٠" * 64, False),  # non-ASCII digits
        ("", False),
        (None, False),
        (b"0" * 64, False),
    ],
)
def test_is_valid_payload_hash(value, valid: bool) -> None:
    assert is_valid_payload_hash(value) is valid


def test_check_payload_sha256() -> None:
    body_hash = hashlib.sha256(b"body").hexdigest()
    check_payload_sha256(body_hash, body_hash)
    check_payload_sha256(UNSIGNED_PAYLOAD, body_hash)
    check_payload_sha256("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", body_hash)
    with pytest.raises(AuthError) as info:
        check_payload_sha256(EMPTY_SHA256, body_hash)
    assert info.value.code == "XAmzContentSHA256Mismatch"
    assert info.value.status == 400
    assert info.value.extra == {
        "ClientComputedContentSHA256": EMPTY_SHA256,
        "S3ComputedContentSHA256": body_hash,
    }


# --------------------------------------------------------------------------------------------------------------
# Signing-key cache


def test_signing_key_cache_is_bounded_lru() -> None:
    cache = SigningKeyCache(maxsize=3)
    for day in range(1, 11):
        date = f"201301{day:02d}"
        assert cache.get(SK, date, "us-east-1", "s3") == derive_signing_key(SK, date, "us-east-1", "s3")
        assert len(cache) <= 3
    assert len(cache) == 3
    cache.get(SK, "20130108", "us-east-1", "s3")  # touch the oldest: it survives the next insertion
    cache.get(SK, "20130111", "us-east-1", "s3")
    keys = list(cache._keys)
    assert (SK, "20130108", "us-east-1", "s3") in keys
    assert (SK, "20130109", "us-east-1", "s3") not in keys


def test_signing_key_cache_distinguishes_every_part() -> None:
    cache = SigningKeyCache()
    base = cache.get(SK, "20130524", "us-east-1", "s3")
    assert cache.get(SK, "20130524", "us-east-1", "s3") is base
    for args in [
        ("x", "20130524", "us-east-1", "s3"),
        (SK, "20130525", "us-east-1", "s3"),
        (SK, "20130524", "eu-west-1", "s3"),
        (SK, "20130524", "us-east-1", "iam"),
    ]:
        assert cache.get(*args) != base
    with pytest.raises(ValueError):
        SigningKeyCache(maxsize=0)


def test_cached_key_is_used_for_verification() -> None:
    cache = SigningKeyCache(maxsize=2)
    headers = signed_request()
    parsed = parse_authorization(header(headers, "authorization"))
    for _ in range(3):
        verified = verify_header_auth("GET", "/b/k", headers, parsed, SK, now=DOC_TIME, key_cache=cache)
    assert len(cache) == 1
    assert verified.signing_key == derive_signing_key(SK, "20130524", "us-east-1", "s3")


@given(st.text(alphabet=st.sampled_from(string.ascii_letters + string.digits + "-_.~/%+ =&?é$") | st.characters(),
               min_size=1, max_size=40))
def test_plain_text_shortcut_matches_the_full_encoding(raw: str) -> None:
    # canonical_uri and canonical_query hand back unchanged text that has nothing to decode or encode; the full
    # decode-then-encode path must agree on all text
    from trio_sos.auth.sigv4 import _encode_component

    assert canonical_uri(raw) == _encode_component(raw, safe="/")
    expected = [(_encode_component(n, safe=""), _encode_component(v, safe=""))
                for n, _, v in (part.partition("=") for part in raw.split("&") if part)]
    expected = [pair for pair in expected if pair[0] != "X-Amz-Signature"]
    assert canonical_query(raw) == "&".join(f"{n}={v}" for n, v in sorted(expected))
