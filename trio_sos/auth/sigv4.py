"""AWS Signature Version 4 verification for S3 requests signed in the Authorization header.

Pure functions: no I/O, no clock (the caller passes ``now``), no credential store (the caller passes the
secret it looked up for ``ParsedAuth.access_key``).

Typical use by the HTTP layer::

    parsed = parse_authorization(authorization_value)          # AuthError on a malformed header
    secret = lookup(parsed.access_key)                         # else raise invalid_access_key_id(...)
    verified = verify_header_auth(method, target, headers, parsed, secret,
                                  now=datetime.now(UTC), key_cache=cache)

and for a presigned URL (query-string authentication, ``X-Amz-Algorithm`` in the query)::

    parsed = parse_presigned(decoded_query_pairs)               # AuthError on missing/malformed parameters
    secret = lookup(parsed.access_key)
    verified = verify_presigned(method, target, headers, parsed, secret,
                                now=datetime.now(UTC), key_cache=cache)

Inputs are the request exactly as received:

- ``raw_target`` is the HTTP request-target (path plus optional ``?query``), still percent-encoded. h11 only
  lets visible ASCII through, so it is ASCII in practice; other characters are taken as UTF-8.
- ``headers`` are ``(name, value)`` pairs in any case. The canonical request is hashed as UTF-8 (with
  surrogateescape), so only non-ASCII header bytes depend on how the caller decoded them: with
  ``"utf-8", "surrogateescape"`` the exact bytes received are hashed (what clients that sign and send the same
  bytes, like Go's, expect); with ``"latin-1"`` each byte is hashed as the UTF-8 of that character (what
  botocore expects, since it signs UTF-8 but http.client sends latin-1). S3 documents REST header values as
  US-ASCII, where both agree.

Canonicalisation (as botocore signs S3 requests; the tests check it against botocore and AWS's examples):

- The canonical URI is the request path percent-decoded then re-encoded byte by byte, everything but
  ``A-Z a-z 0-9 - _ . ~ /`` as ``%XX`` (uppercase). No normalisation: ``//``, ``.`` and ``..`` segments stay,
  no double encoding (S3 differs from other AWS services here). ``%2F`` therefore becomes ``/``.
- The canonical query decodes each ``name=value`` pair (``+`` is a literal plus, not a space), re-encodes it
  strictly (space is ``%20``), sorts the pairs by encoded name then encoded value, keeps repeated names and
  empty values (``acl`` becomes ``acl=``), drops empty pairs (``a=1&&b=2``) and ``X-Amz-Signature``.
- Canonical header values are trimmed and internal runs of whitespace collapse to one space; repeated
  headers are joined with ``,`` in the order received.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from urllib.parse import quote_from_bytes, unquote_to_bytes

import attrs

__all__ = [
    "ALGORITHM",
    "EMPTY_SHA256",
    "MAX_PRESIGNED_EXPIRES",
    "MAX_SKEW",
    "SERVICE",
    "TERMINATOR",
    "UNSIGNED_PAYLOAD",
    "AuthError",
    "ParsedAuth",
    "ParsedPresigned",
    "SigningKeyCache",
    "Verified",
    "canonical_headers",
    "canonical_query",
    "canonical_request",
    "canonical_uri",
    "check_payload_sha256",
    "derive_signing_key",
    "invalid_access_key_id",
    "is_valid_payload_hash",
    "parse_authorization",
    "parse_presigned",
    "string_to_sign",
    "verify_header_auth",
    "hoisted_headers",
    "verify_presigned",
]

ALGORITHM = "AWS4-HMAC-SHA256"
TERMINATOR = "aws4_request"
SERVICE = "s3"
MAX_SKEW = timedelta(minutes=15)
MAX_PRESIGNED_EXPIRES = 604800  # seconds: a week, S3's limit for X-Amz-Expires
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_PAYLOADS = frozenset(
    {
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD",
        "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER",
    }
)

# HTTP status S3 answers with for each error code this module raises.
_STATUS = {
    "AccessDenied": 403,
    "SignatureDoesNotMatch": 403,
    "InvalidAccessKeyId": 403,
    "RequestTimeTooSkewed": 403,
    "AuthorizationHeaderMalformed": 400,
    "AuthorizationQueryParametersError": 400,
    "MissingSecurityHeader": 400,
    "InvalidArgument": 400,
    "InvalidRequest": 400,
    "XAmzContentSHA256Mismatch": 400,
    # aws-chunked bodies (chunked.py)
    "IncompleteBody": 400,
    "InvalidChunkSizeError": 400,
    "MalformedTrailerError": 400,
    "MissingContentLength": 411,
    "NotImplemented": 501,
}

_SIGNATURE_MISMATCH_MESSAGE = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your key and signing method."
)
_INVALID_CONTENT_SHA256_MESSAGE = (
    "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, "
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER, "
    "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD, STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER "
    "or a valid sha256 value."
)
_NO_DATE_MESSAGE = "AWS authentication requires a valid Date or x-amz-date header"
_ONE_MECHANISM_MESSAGE = (
    "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string "
    "parameter or the Authorization header should be specified"
)
# Query parameters that mean query-string (presigned) authentication, which excludes the Authorization header.
_QUERY_AUTH_PARAMS = frozenset({"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature", "Signature"})
# x-amz-* headers S3 tolerates unsigned: the payload hash is part of the canonical request anyway.
_UNSIGNED_AMZ_HEADERS_ALLOWED = frozenset({"x-amz-content-sha256"})


class AuthError(Exception):
    """An authentication failure, carrying what an S3 error response needs.

    ``code`` is the S3 error code, ``message`` its message, ``extra`` the additional XML elements S3 puts in
    the ``<Error>`` document (in the order S3 writes them), ``status`` the HTTP status.
    """

    def __init__(self, code: str, message: str, extra: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.extra: dict[str, str] = dict(extra or {})

    @property
    def status(self) -> int:
        return _STATUS.get(self.code, 400)

    def __repr__(self) -> str:
        return f"AuthError({self.code!r}, {self.message!r}, {self.extra!r})"


def _malformed(detail: str, extra: Mapping[str, str] | None = None) -> AuthError:
    return AuthError(
        "AuthorizationHeaderMalformed", f"The authorization header is malformed; {detail}", extra
    )


def invalid_access_key_id(access_key: str) -> AuthError:
    """The error for an access key the credentials lookup does not know."""
    return AuthError(
        "InvalidAccessKeyId",
        "The AWS Access Key Id you provided does not exist in our records.",
        {"AWSAccessKeyId": access_key},
    )


# --------------------------------------------------------------------------------------------------------------
# Authorization header


@attrs.frozen
class ParsedAuth:
    """The parts of an ``AWS4-HMAC-SHA256`` Authorization header value."""

    access_key: str
    date: str  # YYYYMMDD, the credential scope date
    region: str
    service: str
    signed_headers: tuple[str, ...]  # lowercase, in the order given
    signature: str


_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_SCOPE_DATE_RE = re.compile(r"[0-9]{8}\Z")
_COMPONENTS = ("Credential", "SignedHeaders", "Signature")


def parse_authorization(value: str) -> ParsedAuth:
    """Parse ``AWS4-HMAC-SHA256 Credential=AK/YYYYMMDD/region/service/aws4_request, SignedHeaders=a;b,
    Signature=hex``.

    Whitespace around the components and around ``=`` is tolerated, with or without a space after the commas,
    in any order. An algorithm other than AWS4-HMAC-SHA256 raises InvalidArgument "Unsupported Authorization
    Type" as S3 does; anything else wrong raises AuthorizationHeaderMalformed. The service and the region are
    not checked here (see `verify_header_auth`); neither is the signature's form (a wrong one simply does not
    match, which S3 reports as SignatureDoesNotMatch).
    """
    text = value.strip()
    parts = text.split(None, 1)
    if not parts or parts[0] != ALGORITHM:
        raise AuthError(
            "InvalidArgument",
            "Unsupported Authorization Type",
            {"ArgumentName": "Authorization", "ArgumentValue": value},
        )
    found: dict[str, str] = {}
    for component in (parts[1] if len(parts) > 1 else "").split(","):
        component = component.strip()
        if not component:
            continue
        key, sep, val = component.partition("=")
        key, val = key.strip(), val.strip()
        if not sep or key not in _COMPONENTS or key in found or not val:
            raise _malformed(f'the authorization component "{component}" is malformed.')
        found[key] = val
    if len(found) != len(_COMPONENTS):
        raise _malformed(
            "the authorization header requires three components: Credential, SignedHeaders, and Signature."
        )

    access_key, date, region, service = _scope(found["Credential"])
    return ParsedAuth(
        access_key=access_key,
        date=date,
        region=region,
        service=service,
        signed_headers=_signed_names(found["SignedHeaders"]),
        signature=found["Signature"],
    )


# A client sends the same Credential and SignedHeaders with request after request: each text is checked once and
# its parts kept (an LRU cache keeps only what passed: an error is raised again each time). The signature is never
# cached.
@functools.lru_cache(maxsize=1024)
def _scope(credential: str) -> tuple[str, str, str, str]:
    """access key, date, region and service of a Credential component; AuthorizationHeaderMalformed."""
    scope = credential.split("/")
    if len(scope) != 5 or not all(scope):
        raise _malformed(
            'the Credential is mal-formed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'
        )
    access_key, date, region, service, terminator = scope
    if not _is_calendar_date(date):
        raise _malformed(
            f'incorrect date format "{date}". This date in the credential must be in the format "yyyyMMdd".'
        )
    if terminator != TERMINATOR:
        raise _malformed(f'incorrect terminal "{terminator}". This endpoint uses "{TERMINATOR}".')
    return access_key, date, region, service


@functools.lru_cache(maxsize=1024)
def _signed_names(text: str) -> tuple[str, ...]:
    """The SignedHeaders component's names, lower-cased, in the order given; AuthorizationHeaderMalformed."""
    names = text.split(";")
    if not all(_TOKEN_RE.match(name) for name in names):
        raise _malformed(f'the authorization component "SignedHeaders={text}" is malformed.')
    return tuple(name.lower() for name in names)


def _is_calendar_date(text: str) -> bool:
    if not _SCOPE_DATE_RE.match(text):
        return False
    try:
        datetime(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------------------------------
# Canonical request


def _to_bytes(text: str) -> bytes:
    """UTF-8, giving back the original bytes of text decoded with errors="surrogateescape"."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no decoder produced: keep it deterministic rather than fail
        return text.encode("utf-8", "surrogatepass")


def _encode_component(raw: str, safe: str) -> str:
    # unquote_to_bytes leaves a '%' not followed by two hex digits as it is, so it is re-encoded as %25.
    return quote_from_bytes(unquote_to_bytes(_to_bytes(raw)), safe=safe)


# Text that decoding and encoding give back unchanged (no ``%``, only what is never encoded): most paths and query
# parameters, which then skip urllib's two passes.
_PLAIN_PATH_RE = re.compile(r"[A-Za-z0-9\-_.~/]*")
_PLAIN_COMPONENT_RE = re.compile(r"[A-Za-z0-9\-_.~]*")


def canonical_uri(raw_path: str) -> str:
    """The canonical URI of a request path as received (percent-encoded), the S3 way: percent-decode, then
    encode every byte but the unreserved ``A-Z a-z 0-9 - _ . ~`` and ``/``. No dot-segment removal, no
    merging of ``//``, no double encoding. An empty path is ``/``.
    """
    if not raw_path:
        return "/"
    if _PLAIN_PATH_RE.fullmatch(raw_path):
        return raw_path
    return _encode_component(raw_path, safe="/")


def _query_pairs(raw_query: str) -> list[tuple[str, str]]:
    pairs = []
    for part in raw_query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((name if _PLAIN_COMPONENT_RE.fullmatch(name) else _encode_component(name, safe=""),
                      value if _PLAIN_COMPONENT_RE.fullmatch(value) else _encode_component(value, safe="")))
    return pairs


def canonical_query(raw_query: str) -> str:
    """The canonical query string of a raw query (without the ``?``).

    Each pair is decoded and re-encoded strictly (``+`` stays a literal plus: ``%2B``; space is ``%20``); a
    name without ``=`` gets an empty value; pairs are sorted by encoded name, then encoded value; repeated
    names are all kept; empty pairs are dropped; ``X-Amz-Signature`` is left out (it cannot sign itself).
    """
    pairs = [pair for pair in _query_pairs(raw_query) if pair[0] != "X-Amz-Signature"]
    pairs.sort()
    return "&".join(f"{name}={value}" for name, value in pairs)


_WHITESPACE_RUN_RE = re.compile(r"[ \t\r\n\v\f]+")


def _trimall(value: str) -> str:
    return _WHITESPACE_RUN_RE.sub(" ", value).strip(" ")


def _group_headers(headers: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, value in headers:
        grouped.setdefault(name.strip().lower(), []).append(value)
    return grouped


def _canonical_headers(grouped: Mapping[str, list[str]], names: Sequence[str]) -> str:
    return "".join(f"{name}:{','.join(_trimall(v) for v in grouped.get(name, ()))}\n" for name in names)


def _sorted_names(signed_headers: Iterable[str]) -> list[str]:
    return sorted({name.lower() for name in signed_headers})


def canonical_headers(headers: Iterable[tuple[str, str]], signed_headers: Iterable[str]) -> str:
    """The canonical headers block: one ``name:value\\n`` line per signed header, names lowercase and sorted,
    values trimmed with internal whitespace runs collapsed to one space, repeated headers joined by ``,`` in the
    order received. A signed header absent from the request gets an empty value. Ends with a newline.
    """
    return _canonical_headers(_group_headers(headers), _sorted_names(signed_headers))


def _canonical_request(
    method: str,
    raw_path: str,
    raw_query: str,
    grouped: Mapping[str, list[str]],
    signed_headers: Iterable[str],
    payload_hash: str,
) -> str:
    names = _sorted_names(signed_headers)
    return "\n".join(
        (
            method,
            canonical_uri(raw_path),
            canonical_query(raw_query),
            _canonical_headers(grouped, names),
            ";".join(names),
            payload_hash,
        )
    )


def canonical_request(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Sequence[tuple[str, str]],
    signed_headers: Iterable[str],
    payload_hash: str,
) -> str:
    """The SigV4 canonical request: method, canonical URI, canonical query, canonical headers, signed header
    names (sorted, ``;``-joined) and the payload hash, newline-separated.
    """
    return _canonical_request(
        method, raw_path, raw_query, _group_headers(headers), signed_headers, payload_hash
    )


def string_to_sign(amz_date: str, scope: str, canonical_request: str) -> str:
    """``AWS4-HMAC-SHA256\\n<amz_date>\\n<scope>\\n<hex sha256 of the canonical request>``, where scope is
    ``YYYYMMDD/region/service/aws4_request``.
    """
    digest = hashlib.sha256(_to_bytes(canonical_request)).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


# --------------------------------------------------------------------------------------------------------------
# Signing keys


def derive_signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")."""
    key = hmac.digest(_to_bytes("AWS4" + secret), _to_bytes(date), "sha256")
    for part in (region, service, TERMINATOR):
        key = hmac.digest(key, _to_bytes(part), "sha256")
    return key


class SigningKeyCache:
    """A bounded LRU of derived signing keys, keyed by (secret, date, region, service).

    A key is valid for one day, so a busy node derives each key once a day instead of four HMACs per request.
    Safe to share between tasks of one event loop and between threads (a lock guards the dict).
    """

    def __init__(self, maxsize: int = 1024) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._keys: OrderedDict[tuple[str, str, str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._keys)

    def get(self, secret: str, date: str, region: str, service: str) -> bytes:
        cache_key = (secret, date, region, service)
        with self._lock:
            key = self._keys.get(cache_key)
            if key is not None:
                self._keys.move_to_end(cache_key)
                return key
        key = derive_signing_key(secret, date, region, service)
        with self._lock:
            self._keys[cache_key] = key
            self._keys.move_to_end(cache_key)
            while len(self._keys) > self.maxsize:
                self._keys.popitem(last=False)
        return key


# --------------------------------------------------------------------------------------------------------------
# Payload hash


_SHA256_HEX_RE = re.compile(r"[0-9a-f]{64}\Z")


def is_valid_payload_hash(value: object) -> bool:
    """True for 64 lowercase hex digits, UNSIGNED-PAYLOAD, or one of the STREAMING-* values S3 accepts."""
    if not isinstance(value, str):
        return False
    return value == UNSIGNED_PAYLOAD or value in STREAMING_PAYLOADS or bool(_SHA256_HEX_RE.match(value))


def check_payload_sha256(declared: str, computed_hex: str) -> None:
    """For a body whose declared x-amz-content-sha256 is a hex digest: raise XAmzContentSHA256Mismatch (with
    S3's ClientComputedContentSHA256 / S3ComputedContentSHA256 elements) if the body hashed to something else.
    UNSIGNED-PAYLOAD and STREAMING-* values are not digests and pass.
    """
    if not _SHA256_HEX_RE.match(declared) or hmac.compare_digest(declared, computed_hex):
        return
    raise AuthError(
        "XAmzContentSHA256Mismatch",
        "The provided 'x-amz-content-sha256' header does not match what was computed.",
        {"ClientComputedContentSHA256": declared, "S3ComputedContentSHA256": computed_hex},
    )


# --------------------------------------------------------------------------------------------------------------
# Dates


_AMZ_DATE_RE = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})T([0-9]{2})([0-9]{2})([0-9]{2})Z\Z")
_MONTHS = {
    m: i
    for i, m in enumerate(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], start=1
    )
}
_RFC1123_RE = re.compile(
    r"(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?([0-9]{1,2}) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) (?:GMT|UTC|\+0000)\Z"
)


def _parse_request_time(value: str) -> datetime | None:
    """20130524T000000Z or an RFC 1123 date (GMT) as a UTC datetime; None if it is neither or before 1970."""
    try:
        if m := _AMZ_DATE_RE.match(value):
            year, month, day, hour, minute, second = map(int, m.groups())
        elif m := _RFC1123_RE.match(value):
            day, month, year = int(m[1]), _MONTHS[m[2]], int(m[3])
            hour, minute, second = int(m[4]), int(m[5]), int(m[6])
        else:
            return None
        when = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        return None
    return when if when.year >= 1970 else None


def _iso_basic(when: datetime) -> str:
    return f"{when.year:04d}{when.month:02d}{when.day:02d}T{when.hour:02d}{when.minute:02d}{when.second:02d}Z"


@functools.lru_cache(maxsize=256)
def _request_time_text(value: str) -> tuple[datetime, str] | None:
    """``_parse_request_time`` of a header's date text, with the time's ISO 8601 basic text: cached (bounded) by
    that text, which the requests of one second share (a datetime and a str are immutable)."""
    when = _parse_request_time(value)
    return None if when is None else (when, _iso_basic(when))


# --------------------------------------------------------------------------------------------------------------
# Verification


@attrs.frozen
class Verified:
    """A request whose Authorization header signature checked out.

    ``signing_key``, ``seed_signature`` and ``payload_hash`` are what aws-chunked (STREAMING-*) verification
    needs: each chunk signature chains from the seed signature with the same key and scope.
    """

    access_key: str
    region: str
    service: str
    amz_date: str  # the ISO 8601 basic timestamp of the string to sign, e.g. 20130524T000000Z
    request_time: datetime  # UTC
    scope: str  # YYYYMMDD/region/service/aws4_request
    signing_key: bytes = attrs.field(repr=False)
    seed_signature: str
    payload_hash: str  # the x-amz-content-sha256 value


def _hex_bytes(text: str) -> str:
    return " ".join(f"{b:02x}" for b in _to_bytes(text))


def _utc(now: datetime) -> datetime:
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def _iso_extended(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _one_mechanism_error(grouped: Mapping[str, list[str]]) -> AuthError:
    return AuthError(
        "InvalidArgument",
        _ONE_MECHANISM_MESSAGE,
        {"ArgumentName": "Authorization", "ArgumentValue": ",".join(grouped.get("authorization", ()))},
    )


def _check_headers_signed(grouped: Mapping[str, list[str]], signed_headers: Iterable[str]) -> None:
    """``host`` and every ``x-amz-*`` header present (x-amz-content-sha256 aside) must be signed."""
    signed = set(signed_headers)
    required = {"host"} | {
        name for name in grouped if name.startswith("x-amz-") and name not in _UNSIGNED_AMZ_HEADERS_ALLOWED
    }
    if unsigned := sorted(required - signed):
        raise AuthError(
            "AccessDenied",
            "There were headers present in the request which were not signed",
            {"HeadersNotSigned": ", ".join(unsigned)},
        )


def _check_signature(
    method: str,
    raw_target: str,
    grouped: Mapping[str, list[str]],
    *,
    access_key: str,
    date: str,
    region: str,
    service: str,
    signed_headers: Sequence[str],
    signature: str,
    payload_hash: str,
    amz_date: str,
    secret: str,
    key_cache: SigningKeyCache,
) -> tuple[str, bytes]:
    """Compute the expected signature and compare it in constant time; return (scope, signing key)."""
    raw_path, _, raw_query = raw_target.partition("?")
    scope = f"{date}/{region}/{service}/{TERMINATOR}"
    creq = _canonical_request(method, raw_path, raw_query, grouped, signed_headers, payload_hash)
    sts = string_to_sign(amz_date, scope, creq)
    signing_key = key_cache.get(secret, date, region, service)
    expected = hmac.digest(signing_key, _to_bytes(sts), "sha256").hex()
    if not hmac.compare_digest(expected.encode("ascii"), _to_bytes(signature)):
        raise AuthError(
            "SignatureDoesNotMatch",
            _SIGNATURE_MISMATCH_MESSAGE,
            {
                "AWSAccessKeyId": access_key,
                "StringToSign": sts,
                "SignatureProvided": signature,
                "StringToSignBytes": _hex_bytes(sts),
                "CanonicalRequest": creq,
                "CanonicalRequestBytes": _hex_bytes(creq),
            },
        )
    return scope, signing_key


def _verified(method: str, raw_target: str, grouped: Mapping[str, list[str]], parsed: ParsedAuth | ParsedPresigned,
              *, payload_hash: str, amz_date: str, request_time: datetime, secret: str,
              key_cache: SigningKeyCache) -> Verified:
    """Check the signature (header or presigned: the same canonical request) and describe the verified request."""
    scope, signing_key = _check_signature(
        method,
        raw_target,
        grouped,
        access_key=parsed.access_key,
        date=parsed.date,
        region=parsed.region,
        service=parsed.service,
        signed_headers=parsed.signed_headers,
        signature=parsed.signature,
        payload_hash=payload_hash,
        amz_date=amz_date,
        secret=secret,
        key_cache=key_cache,
    )
    return Verified(
        access_key=parsed.access_key,
        region=parsed.region,
        service=parsed.service,
        amz_date=amz_date,
        request_time=request_time,
        scope=scope,
        signing_key=signing_key,
        seed_signature=parsed.signature,
        payload_hash=payload_hash,
    )


def verify_header_auth(
    method: str,
    raw_target: str,
    headers: Sequence[tuple[str, str]],
    parsed: ParsedAuth,
    secret: str,
    *,
    now: datetime,
    key_cache: SigningKeyCache,
    max_skew: timedelta = MAX_SKEW,
    expected_region: str | None = None,
    service: str = SERVICE,
    payload: bytes | None = None,
) -> Verified:
    """Verify the SigV4 Authorization-header signature of a request, as S3 does.

    ``service`` is the credential scope's service (``s3``; ``iam`` for the IAM API). ``payload``: the whole body,
    read already (the IAM API's form): its SHA-256 is the payload hash — SDKs of other services than S3 send no
    x-amz-content-sha256 — and an x-amz-content-sha256 header that says otherwise is XAmzContentSHA256Mismatch.

    Checks, in this order, each failing with S3's error:

    1. no query-string auth parameters alongside the header: InvalidArgument "Only one auth mechanism allowed";
    2. credential scope service is ``s3`` (and the region is ``expected_region`` when one is configured; by
       default any region is accepted): AuthorizationHeaderMalformed;
    3. ``x-amz-date``, else ``Date``, present and valid (20130524T000000Z or RFC 1123): AccessDenied
       "AWS authentication requires a valid Date or x-amz-date header";
    4. request time within ``max_skew`` of ``now`` either way: RequestTimeTooSkewed (RequestTime, ServerTime,
       MaxAllowedSkewMilliseconds);
    5. credential scope date is the date of the request time: AuthorizationHeaderMalformed;
    6. ``x-amz-content-sha256`` present: InvalidRequest "Missing required header for this request"; and valid:
       InvalidArgument (ArgumentName, ArgumentValue);
    7. ``host`` and every ``x-amz-*`` header present (but x-amz-content-sha256) signed: AccessDenied
       "There were headers present in the request which were not signed" (HeadersNotSigned);
    8. the signature, compared in constant time: SignatureDoesNotMatch (AWSAccessKeyId, StringToSign,
       SignatureProvided, StringToSignBytes, CanonicalRequest, CanonicalRequestBytes).
    """
    _, _, raw_query = raw_target.partition("?")
    grouped = _group_headers(headers)

    if raw_query and any(name in _QUERY_AUTH_PARAMS for name in _decoded_query_names(raw_query)):
        raise _one_mechanism_error(grouped)

    if parsed.service != service:
        raise _malformed(f'incorrect service "{parsed.service}". This endpoint belongs to "{service}".')
    if expected_region is not None and parsed.region != expected_region:
        raise _malformed(
            f"the region '{parsed.region}' is wrong; expecting '{expected_region}'",
            {"Region": expected_region},
        )

    date_values = grouped.get("x-amz-date") or grouped.get("date")
    if not date_values:
        raise AuthError("AccessDenied", _NO_DATE_MESSAGE)
    raw_date = ",".join(v.strip() for v in date_values)
    parsed_time = _request_time_text(raw_date)
    if parsed_time is None:
        raise AuthError("AccessDenied", _NO_DATE_MESSAGE)
    request_time, amz_date = parsed_time

    now = _utc(now)
    if abs(now - request_time) > max_skew:
        raise AuthError(
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
            {
                "RequestTime": raw_date,
                "ServerTime": _iso_extended(now),
                "MaxAllowedSkewMilliseconds": str(int(max_skew / timedelta(milliseconds=1))),
            },
        )

    if parsed.date != amz_date[:8]:
        raise _malformed("Invalid credential date. Date is not the same as X-Amz-Date.")

    sha_values = grouped.get("x-amz-content-sha256")
    if payload is not None:
        payload_hash = hashlib.sha256(payload).hexdigest()
        if sha_values and ",".join(v.strip() for v in sha_values).lower() != payload_hash:
            raise AuthError("XAmzContentSHA256Mismatch",
                            "The provided 'x-amz-content-sha256' header does not match what was computed.",
                            {"ClientComputedContentSHA256": ",".join(sha_values)[:64],
                             "S3ComputedContentSHA256": payload_hash})
        sha_values = [payload_hash]
    if not sha_values:
        raise AuthError("InvalidRequest", "Missing required header for this request: x-amz-content-sha256")
    payload_hash = ",".join(v.strip() for v in sha_values)
    if not is_valid_payload_hash(payload_hash):
        raise AuthError(
            "InvalidArgument",
            _INVALID_CONTENT_SHA256_MESSAGE,
            {"ArgumentName": "x-amz-content-sha256", "ArgumentValue": payload_hash},
        )

    _check_headers_signed(grouped, parsed.signed_headers)

    return _verified(method, raw_target, grouped, parsed, payload_hash=payload_hash, amz_date=amz_date,
                     request_time=request_time, secret=secret, key_cache=key_cache)


def _decoded_query_names(raw_query: str) -> Iterable[str]:
    for part in raw_query.split("&"):
        if part:
            yield unquote_to_bytes(_to_bytes(part.partition("=")[0])).decode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------------------------------------------
# Presigned URLs (query-string authentication)


@attrs.frozen
class ParsedPresigned:
    """The ``X-Amz-*`` authentication parameters of a presigned URL, checked for form (see `parse_presigned`).

    The first six fields mean what they mean in `ParsedAuth`.
    """

    access_key: str
    date: str  # YYYYMMDD, the credential scope date
    region: str
    service: str
    signed_headers: tuple[str, ...]  # lowercase, in the order given
    signature: str
    amz_date: str  # X-Amz-Date, e.g. 20130524T000000Z
    request_time: datetime  # X-Amz-Date as a UTC datetime
    expires: int  # X-Amz-Expires, seconds after request_time
    content_sha256: str | None  # X-Amz-Content-Sha256 when the query has one (the payload hash then)


_PRESIGNED_REQUIRED = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Signature",
    "X-Amz-Date",
    "X-Amz-SignedHeaders",
    "X-Amz-Expires",
)
_PRESIGNED_PARAMS = frozenset(_PRESIGNED_REQUIRED) | {"X-Amz-Content-Sha256"}
_PRESIGNED_MISSING_MESSAGE = (
    "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, "
    "X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters."
)
_CREDENTIAL_ERROR = "Error parsing the X-Amz-Credential parameter; "
_EXPIRES_RE = re.compile(r"-?[0-9]+\Z")


def _query_error(message: str, extra: Mapping[str, str] | None = None) -> AuthError:
    return AuthError("AuthorizationQueryParametersError", message, extra)


def parse_presigned(query_pairs: Iterable[tuple[str, str]] | Mapping[str, str]) -> ParsedPresigned:
    """Read the SigV4 query-string authentication parameters of a presigned URL.

    ``query_pairs`` are the request's query parameters, percent-decoded, in order (a mapping works too; only the
    ``X-Amz-*`` authentication parameters are read, names are case-sensitive as in S3). Every failure is S3's
    AuthorizationQueryParametersError (400), with S3's messages:

    - a missing (or empty) X-Amz-Algorithm, -Credential, -Signature, -Date, -SignedHeaders or -Expires, or one
      given twice: "Query-string authentication version 4 requires ...";
    - X-Amz-Algorithm other than AWS4-HMAC-SHA256: 'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"';
    - X-Amz-Credential not ``AK/YYYYMMDD/region/service/aws4_request``: "Error parsing the X-Amz-Credential
      parameter; ..." (mal-formed, incorrect date format, incorrect terminal);
    - X-Amz-Date not ``yyyyMMdd'T'HHmmss'Z'``; the credential date not the date of X-Amz-Date;
    - X-Amz-Expires not an integer: "X-Amz-Expires should be a number". Negative, or more than 604800 (a week),
      is AccessDenied (403) instead, with S3's messages: such a URL can never be honoured. 0 is well-formed: such
      a URL has expired as soon as it is made (`verify_presigned` answers AccessDenied "Request has expired",
      403, which is what S3 compatibility suites expect);
    - X-Amz-SignedHeaders not a ``;``-separated list of header names.

    The service, the region, the times and the signature are `verify_presigned`'s business.
    """
    pairs = list(query_pairs.items()) if isinstance(query_pairs, Mapping) else list(query_pairs)
    found: dict[str, str] = {}
    for name, value in pairs:
        if name in _PRESIGNED_PARAMS:
            if name in found:
                raise _query_error(_PRESIGNED_MISSING_MESSAGE)
            found[name] = value

    algorithm = found.get("X-Amz-Algorithm")
    if algorithm and algorithm != ALGORITHM:
        raise _query_error(f'X-Amz-Algorithm only supports "{ALGORITHM}"')
    if not all(found.get(name) for name in _PRESIGNED_REQUIRED):
        raise _query_error(_PRESIGNED_MISSING_MESSAGE)

    scope = found["X-Amz-Credential"].split("/")
    if len(scope) != 5 or not all(scope):
        raise _query_error(
            _CREDENTIAL_ERROR
            + 'the Credential is mal-formed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'
        )
    access_key, date, region, service, terminator = scope
    if not _is_calendar_date(date):
        raise _query_error(
            _CREDENTIAL_ERROR
            + f'incorrect date format "{date}". This date in the credential must be in the format "yyyyMMdd".'
        )
    if terminator != TERMINATOR:
        raise _query_error(_CREDENTIAL_ERROR + f'incorrect terminal "{terminator}". This endpoint uses "{TERMINATOR}".')

    amz_date = found["X-Amz-Date"]
    request_time = _parse_request_time(amz_date) if _AMZ_DATE_RE.match(amz_date) else None
    if request_time is None:
        raise _query_error("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    if date != amz_date[:8]:
        raise _query_error(
            f'Invalid credential date "{date}". This date is not the same as X-Amz-Date: "{amz_date[:8]}".'
        )

    raw_expires = found["X-Amz-Expires"]
    if not _EXPIRES_RE.match(raw_expires) or len(raw_expires) > 20:
        raise _query_error("X-Amz-Expires should be a number")
    expires = int(raw_expires)
    # Outside 0..604800 the URL can never be valid: refused as S3 refuses a URL it will not honour, 403
    # AccessDenied (with S3's messages), not as a malformed request. 0 is well-formed and expired at once.
    if expires < 0:
        raise AuthError("AccessDenied", "X-Amz-Expires must be non-negative")
    if expires > MAX_PRESIGNED_EXPIRES:
        raise AuthError(
            "AccessDenied",
            "X-Amz-Expires must be less than a week (in seconds); that is, the given X-Amz-Expires must be less "
            f"than {MAX_PRESIGNED_EXPIRES} seconds",
        )

    names = found["X-Amz-SignedHeaders"].split(";")
    if not all(_TOKEN_RE.match(name) for name in names):
        raise _query_error(f"Error parsing the X-Amz-SignedHeaders parameter: {found['X-Amz-SignedHeaders']}")

    return ParsedPresigned(
        access_key=access_key,
        date=date,
        region=region,
        service=service,
        signed_headers=tuple(name.lower() for name in names),
        signature=found["X-Amz-Signature"],
        amz_date=amz_date,
        request_time=request_time,
        expires=expires,
        content_sha256=found.get("X-Amz-Content-Sha256"),
    )


# X-Amz-* query parameters of a presigned URL that are its authentication, not request headers moved into the query.
_PRESIGNED_AUTH_NAMES = frozenset(name.lower() for name in _PRESIGNED_PARAMS) | {"x-amz-security-token"}


def hoisted_headers(query_pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The ``x-amz-*`` request headers a presigned URL carries as query parameters (lower-cased name -> value).

    SDKs move such headers into the query when presigning (the AWS SDK for JavaScript hoists every x-amz-* header
    it can), and S3 applies them as headers. They are covered by the signature like the rest of the query, so
    the caller may act on them; the authentication parameters themselves are not headers. A name given twice is
    AuthorizationQueryParametersError: which one counts would be ambiguous.
    """
    found: dict[str, str] = {}
    for name, value in query_pairs:
        lower = name.lower()
        if lower.startswith("x-amz-") and lower not in _PRESIGNED_AUTH_NAMES:
            if lower in found:
                raise _query_error(f"The query parameter {name} was given more than once")
            found[lower] = value
    return found


def verify_presigned(
    method: str,
    raw_target: str,
    headers: Sequence[tuple[str, str]],
    parsed: ParsedPresigned,
    secret: str,
    *,
    now: datetime,
    key_cache: SigningKeyCache,
    max_skew: timedelta = MAX_SKEW,
    expected_region: str | None = None,
    service: str = SERVICE,
) -> Verified:
    """Verify the signature of a presigned URL (SigV4 query-string authentication), as S3 does (``service``: the
    credential scope's service, ``s3`` unless another endpoint, such as the admin listener, verifies).

    The canonical request is the one of `verify_header_auth`, with the query string as received (every
    parameter but X-Amz-Signature, the X-Amz-* ones included) and the payload hash ``UNSIGNED-PAYLOAD`` unless
    the query has an X-Amz-Content-Sha256 (then that value, which the caller checks against the body with
    `check_payload_sha256` when it is a digest). Checks, in this order:

    1. no Authorization header: InvalidArgument "Only one auth mechanism allowed";
    2. credential service ``s3`` (and region ``expected_region`` if given): AuthorizationQueryParametersError;
    3. X-Amz-Date not more than ``max_skew`` in the future: AccessDenied "Request is not yet valid" (403) with
       S3's X-Amz-Date (as S3 writes it: milliseconds since the epoch), Expires and ServerTime elements;
    4. now not after X-Amz-Date + X-Amz-Expires: AccessDenied "Request has expired" (403) with S3's
       X-Amz-Expires, Expires and ServerTime elements. A presigned URL is not subject to the 15-minute skew
       otherwise: it is valid for its whole X-Amz-Expires window;
    5. X-Amz-Content-Sha256, if given, a valid payload hash: InvalidArgument;
    6. ``host`` and every ``x-amz-*`` header present signed: AccessDenied (HeadersNotSigned);
    7. the signature: SignatureDoesNotMatch, with the same elements as `verify_header_auth`.

    The `Verified` returned has ``seed_signature`` set to the URL's signature and ``payload_hash`` to the hash
    used (``UNSIGNED-PAYLOAD`` or X-Amz-Content-Sha256).
    """
    grouped = _group_headers(headers)
    if "authorization" in grouped:
        raise _one_mechanism_error(grouped)

    if parsed.service != service:
        raise _query_error(
            _CREDENTIAL_ERROR + f'incorrect service "{parsed.service}". This endpoint belongs to "{service}".'
        )
    if expected_region is not None and parsed.region != expected_region:
        raise _query_error(
            _CREDENTIAL_ERROR + f'the region "{parsed.region}" is wrong; expecting "{expected_region}"',
            {"Region": expected_region},
        )

    now = _utc(now)
    request_time = parsed.request_time
    expires_at = request_time + timedelta(seconds=parsed.expires)
    if request_time - now > max_skew:
        raise AuthError(
            "AccessDenied",
            "Request is not yet valid",
            {
                "X-Amz-Date": str(int(request_time.timestamp()) * 1000),
                "Expires": _iso_extended(expires_at),
                "ServerTime": _iso_extended(now),
            },
        )
    if now > expires_at:
        raise AuthError(
            "AccessDenied",
            "Request has expired",
            {
                "X-Amz-Expires": str(parsed.expires),
                "Expires": _iso_extended(expires_at),
                "ServerTime": _iso_extended(now),
            },
        )

    payload_hash = UNSIGNED_PAYLOAD if parsed.content_sha256 is None else parsed.content_sha256
    if not is_valid_payload_hash(payload_hash):
        raise AuthError(
            "InvalidArgument",
            _INVALID_CONTENT_SHA256_MESSAGE,
            {"ArgumentName": "X-Amz-Content-Sha256", "ArgumentValue": payload_hash},
        )

    _check_headers_signed(grouped, parsed.signed_headers)

    amz_date = _iso_basic(request_time)
    return _verified(method, raw_target, grouped, parsed, payload_hash=payload_hash, amz_date=amz_date,
                     request_time=request_time, secret=secret, key_cache=key_cache)
