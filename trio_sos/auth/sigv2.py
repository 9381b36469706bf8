"""AWS Signature Version 2 verification for S3: the ``Authorization: AWS AccessKey:Signature`` header and
query-string authentication (``AWSAccessKeyId``, ``Expires``, ``Signature``).

Pure functions, like `sigv4`: no I/O, no clock (``now`` is passed), no credential store. Errors are
`sigv4.AuthError` with S3's codes. Typical use::

    access_key, signature = parse_v2_header(authorization_value)    # AuthError on a malformed header
    secret = lookup(access_key)                                      # else raise sigv4.invalid_access_key_id
    verify_v2(method, target, headers, access_key, signature, secret, now=datetime.now(UTC))

    parsed = parse_v2_query(decoded_query_pairs)                     # when the query has Signature
    verify_v2_query(method, target, headers, parsed, secret, now=datetime.now(UTC))

The string to sign (S3 developer guide, "Signing and Authenticating REST Requests"; botocore's
``HmacV1Auth`` and ``HmacV1QueryAuth`` sign exactly this, and the tests check against them)::

    VERB \\n Content-MD5 \\n Content-Type \\n Date \\n CanonicalizedAmzHeaders CanonicalizedResource

- Date is the ``Date`` header, or empty when an ``x-amz-date`` header is present (which then appears among the
  amz headers), or the ``Expires`` parameter for query-string authentication. With x-amz-date, two other
  spellings clients use are accepted too (see `verify_v2`). Content-MD5 and Content-Type are
  the header values trimmed, empty when absent.
- CanonicalizedAmzHeaders: one ``name:value\\n`` line per ``x-amz-*`` header, names lowercase and sorted, values
  trimmed, repeated headers joined with ``,`` in the order received. No other whitespace is touched (h11 already
  refuses folded header lines).
- CanonicalizedResource: ``/bucket`` when the bucket came from a virtual-host ``Host`` (``bucket_from_host``),
  then the request path exactly as sent (still percent-encoded: V2 signs the bytes on the wire), then the
  sub-resources S3 signs (`SUBRESOURCES`) found in the query, sorted by name, values percent-decoded
  (``+`` stays a plus), ``name`` alone when the query has it without ``=``. A ``name=`` with an empty value is
  tried both as ``name=`` (what botocore signs) and as ``name`` (what S3 documents).

For query-string authentication, Content-Type, Content-MD5 and ``x-amz-*`` values may come from the query instead
of the headers (botocore's presigner moves them there, as S3 allows); a query value replaces the header of the
same name.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote_to_bytes

import attrs

from .sigv4 import (
    _ONE_MECHANISM_MESSAGE,
    _QUERY_AUTH_PARAMS,
    _SIGNATURE_MISMATCH_MESSAGE,
    MAX_SKEW,
    AuthError,
    _group_headers,
    _hex_bytes,
    _parse_request_time,
    _to_bytes,
)

__all__ = [
    "SUBRESOURCES",
    "ParsedV2Query",
    "canonical_resource",
    "parse_v2_header",
    "parse_v2_query",
    "query_header_overrides",
    "string_to_sign_v2",
    "verify_v2",
    "verify_v2_query",
]

# The query parameters that are part of the V2 canonicalized resource: botocore's HmacV1Auth list
# (QSAOfInterest), which includes every sub-resource of the S3 developer guide's list (acl, lifecycle, location,
# logging, notification, partNumber, policy, requestPayment, torrent, uploadId, uploads, versionId, versioning,
# versions, website, the response-* overrides, delete, cors, restore, tagging) and the later ones S3 signs.
SUBRESOURCES = frozenset(
    {
        "accelerate",
        "acl",
        "analytics",
        "cors",
        "defaultObjectAcl",
        "delete",
        "inventory",
        "lifecycle",
        "location",
        "logging",
        "metrics",
        "notification",
        "object-lock",
        "partNumber",
        "policy",
        "replication",
        "requestPayment",
        "response-cache-control",
        "response-content-disposition",
        "response-content-encoding",
        "response-content-language",
        "response-content-type",
        "response-expires",
        "restore",
        "select",
        "select-type",
        "storageClass",
        "tagging",
        "torrent",
        "uploadId",
        "uploads",
        "versionId",
        "versioning",
        "versions",
        "website",
    }
)

_V2_QUERY_PARAMS = ("AWSAccessKeyId", "Expires", "Signature")
_V4_QUERY_PARAMS = frozenset({"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature"})
_NO_DATE_MESSAGE = "AWS authentication requires a valid Date or x-amz-date header"
_EXPIRES_RE = re.compile(r"[0-9]{1,12}\Z")


def _invalid_header(value: str, message: str) -> AuthError:
    return AuthError("InvalidArgument", message, {"ArgumentName": "Authorization", "ArgumentValue": value})


def parse_v2_header(value: str) -> tuple[str, str]:
    """``AWS AccessKey:Signature`` -> ``(access_key, signature)``.

    Anything but ``AWS`` then exactly one space: InvalidArgument "Unsupported Authorization Type" or
    "Authorization header is invalid -- one and only one ' ' (space) required"; not exactly one ``:`` between a
    non-empty access key and a non-empty signature: InvalidArgument "AWS authorization header is invalid.
    Expected AwsAccessKeyId:signature". S3's messages, with ArgumentName/ArgumentValue.
    """
    keyword, sep, rest = value.partition(" ")
    if keyword != "AWS" or not sep:
        if keyword == "AWS":
            raise _invalid_header(value, "Authorization header is invalid -- one and only one ' ' (space) required")
        raise _invalid_header(value, "Unsupported Authorization Type")
    if " " in rest or not rest:
        raise _invalid_header(value, "Authorization header is invalid -- one and only one ' ' (space) required")
    access_key, colon, signature = rest.partition(":")
    if not colon or not access_key or not signature or ":" in signature:
        raise _invalid_header(value, "AWS authorization header is invalid.  Expected AwsAccessKeyId:signature")
    return access_key, signature


# --------------------------------------------------------------------------------------------------------------
# String to sign


def _decode(raw: str) -> str:
    return unquote_to_bytes(_to_bytes(raw)).decode("utf-8", "surrogateescape")


def _raw_query_parts(raw_query: str) -> list[tuple[str, str | None]]:
    """(decoded name, decoded value or None when the part has no ``=``) for each non-empty ``&`` part."""
    parts: list[tuple[str, str | None]] = []
    for part in raw_query.split("&"):
        if not part:
            continue
        name, eq, value = part.partition("=")
        parts.append((_decode(name), _decode(value) if eq else None))
    return parts


def _resource(raw_path: str, parts: Sequence[tuple[str, str | None]], bucket: str | None, *, bare: bool) -> str:
    resource = (f"/{bucket}" if bucket else "") + (raw_path or "/")
    subresources = sorted(
        ((name, value) for name, value in parts if name in SUBRESOURCES), key=lambda pair: pair[0]
    )
    if subresources:
        resource += "?" + "&".join(
            name if value is None or (bare and value == "") else f"{name}={value}" for name, value in subresources
        )
    return resource


def canonical_resource(raw_target: str, bucket_from_host: str | None = None) -> str:
    """The CanonicalizedResource of a request-target: ``[/bucket]`` + the path as sent + the sorted signed
    sub-resources with decoded values (``name=`` kept as botocore signs it)."""
    raw_path, _, raw_query = raw_target.partition("?")
    return _resource(raw_path, _raw_query_parts(raw_query), bucket_from_host, bare=False)


def _amz_lines(amz: Mapping[str, Sequence[str]]) -> str:
    return "".join(f"{name}:{','.join(v.strip() for v in amz[name])}\n" for name in sorted(amz))


def _string_to_sign(
    method: str,
    grouped: Mapping[str, list[str]],
    date_line: str,
    resource: str,
    overrides: Mapping[str, str] | None = None,
) -> str:
    overrides = overrides or {}

    def standard(name: str) -> str:
        if name in overrides:
            return overrides[name].strip()
        return ",".join(v.strip() for v in grouped.get(name, ()))

    amz: dict[str, list[str]] = {name: values for name, values in grouped.items() if name.startswith("x-amz-")}
    for name, value in overrides.items():
        if name.startswith("x-amz-"):
            amz[name] = [value]
    return (
        f"{method}\n{standard('content-md5')}\n{standard('content-type')}\n{date_line}\n"
        f"{_amz_lines(amz)}{resource}"
    )


def string_to_sign_v2(
    method: str,
    raw_target: str,
    headers: Sequence[tuple[str, str]],
    *,
    date_line: str,
    bucket_from_host: str | None = None,
) -> str:
    """The V2 string to sign of a request, with ``date_line`` as the Date line (the Date header, ``""`` when
    x-amz-date is present, or the Expires parameter)."""
    return _string_to_sign(method, _group_headers(headers), date_line, canonical_resource(raw_target, bucket_from_host))


def _sign(secret: str, text: str) -> str:
    return base64.b64encode(hmac.digest(_to_bytes(secret), _to_bytes(text), hashlib.sha1)).decode("ascii")


def _check(
    method: str,
    raw_target: str,
    variants: Sequence[tuple[str, Mapping[str, list[str]]]],
    access_key: str,
    signature: str,
    secret: str,
    bucket_from_host: str | None,
    overrides: Mapping[str, str] | None = None,
) -> None:
    """Accept the signature if it signs one of the (date line, headers) ``variants`` with one of the spellings of
    the resource; else SignatureDoesNotMatch reporting the first (the documented) string to sign."""
    raw_path, _, raw_query = raw_target.partition("?")
    parts = _raw_query_parts(raw_query)
    provided = _to_bytes(signature)
    paths = [raw_path]
    if not bucket_from_host and raw_path.count("/") == 1 and len(raw_path) > 1:
        # A path-style request naming a bucket only: S3 documents its resource as "/bucket/", which is what
        # botocore signs before sending "/bucket".
        paths.append(raw_path + "/")
    resources = [_resource(path, parts, bucket_from_host, bare=False) for path in paths]
    if any(value == "" and name in SUBRESOURCES for name, value in parts):
        resources += [_resource(path, parts, bucket_from_host, bare=True) for path in paths]
    first = ""
    for date_line, grouped in variants:
        for resource in resources:
            sts = _string_to_sign(method, grouped, date_line, resource, overrides)
            first = first or sts
            if hmac.compare_digest(_sign(secret, sts).encode("ascii"), provided):
                return
    raise AuthError(
        "SignatureDoesNotMatch",
        _SIGNATURE_MISMATCH_MESSAGE,
        {
            "AWSAccessKeyId": access_key,
            "StringToSign": first,
            "SignatureProvided": signature,
            "StringToSignBytes": _hex_bytes(first),
        },
    )


def _decoded_names(raw_query: str) -> set[str]:
    return {name for name, _ in _raw_query_parts(raw_query)}


# --------------------------------------------------------------------------------------------------------------
# Header authentication


def verify_v2(
    method: str,
    raw_target: str,
    headers: Sequence[tuple[str, str]],
    access_key: str,
    signature: str,
    secret: str,
    *,
    now: datetime,
    bucket_from_host: str | None = None,
    max_skew: timedelta = MAX_SKEW,
) -> None:
    """Verify an ``Authorization: AWS access_key:signature`` request, as S3 does. Checks, in order:

    1. no query-string auth parameters as well: InvalidArgument "Only one auth mechanism allowed";
    2. ``x-amz-date``, else ``Date``, present and valid (RFC 1123, or 20130524T000000Z): AccessDenied
       "AWS authentication requires a valid Date or x-amz-date header";
    3. within ``max_skew`` (15 minutes) of ``now``: RequestTimeTooSkewed (RequestTime, ServerTime,
       MaxAllowedSkewMilliseconds);
    4. the HMAC-SHA1 signature, base64, compared in constant time: SignatureDoesNotMatch (AWSAccessKeyId,
       StringToSign, SignatureProvided, StringToSignBytes, as S3 answers).

    ``raw_target`` is the request-target as received; ``bucket_from_host`` the bucket named by a virtual-host
    ``Host`` (None for path style, where the path already starts with it).
    """
    raw_path, _, raw_query = raw_target.partition("?")
    grouped = _group_headers(headers)
    if raw_query and _decoded_names(raw_query) & (_QUERY_AUTH_PARAMS | {"AWSAccessKeyId"}):
        raise AuthError(
            "InvalidArgument",
            _ONE_MECHANISM_MESSAGE,
            {"ArgumentName": "Authorization", "ArgumentValue": ",".join(grouped.get("authorization", ()))},
        )

    amz_date = grouped.get("x-amz-date")
    date_values = amz_date or grouped.get("date")
    if not date_values:
        raise AuthError("AccessDenied", _NO_DATE_MESSAGE)
    raw_date = ",".join(v.strip() for v in date_values)
    request_time = _parse_request_time(raw_date)
    if request_time is None:
        raise AuthError("AccessDenied", _NO_DATE_MESSAGE)
    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    if abs(now - request_time) > max_skew:
        raise AuthError(
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
            {
                "RequestTime": raw_date,
                "ServerTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "MaxAllowedSkewMilliseconds": str(int(max_skew / timedelta(milliseconds=1))),
            },
        )

    variants: list[tuple[str, Mapping[str, list[str]]]] = [("" if amz_date else raw_date, grouped)]
    if amz_date:
        # S3's own example (DELETE with x-amz-date in "Signing and Authenticating REST Requests") puts the
        # x-amz-date value on the Date line and leaves it out of the amz headers; botocore and MinIO keep the
        # Date header's value on the Date line. Both are accepted besides the documented empty Date line.
        variants.append((raw_date, {k: v for k, v in grouped.items() if k != "x-amz-date"}))
        if grouped.get("date"):
            variants.append((",".join(v.strip() for v in grouped["date"]), grouped))
    _check(method, raw_target, variants, access_key, signature, secret, bucket_from_host)


# --------------------------------------------------------------------------------------------------------------
# Query-string authentication


@attrs.frozen
class ParsedV2Query:
    """The V2 query-string authentication parameters."""

    access_key: str
    signature: str
    expires: int  # seconds since the epoch
    expires_text: str  # Expires as given: the Date line of the string to sign


def parse_v2_query(query_pairs: Iterable[tuple[str, str]] | Mapping[str, str]) -> ParsedV2Query:
    """Read ``AWSAccessKeyId``, ``Expires`` and ``Signature`` (decoded query pairs, names case-sensitive).

    One missing or empty: AccessDenied "Query-string authentication requires the Signature, Expires and
    AWSAccessKeyId parameters"; Expires not a number of seconds: AccessDenied "Invalid date (should be seconds
    since epoch): ..." (S3's messages).
    """
    pairs = list(query_pairs.items()) if isinstance(query_pairs, Mapping) else list(query_pairs)
    found: dict[str, str] = {}
    for name, value in pairs:
        if name in _V2_QUERY_PARAMS:
            found.setdefault(name, value)
    if not all(found.get(name) for name in _V2_QUERY_PARAMS):
        raise AuthError(
            "AccessDenied",
            "Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters",
        )
    expires = found["Expires"]
    if not _EXPIRES_RE.match(expires):
        raise AuthError("AccessDenied", f"Invalid date (should be seconds since epoch): {expires}")
    return ParsedV2Query(found["AWSAccessKeyId"], found["Signature"], int(expires), expires)


def query_header_overrides(raw_target: str) -> dict[str, str]:
    """The headers a V2 presigned URL carries in its query: ``x-amz-*``, Content-Type and Content-MD5 parameters
    (lower-cased name -> decoded value). They stand in for the headers of the same names in the string to sign —
    so the request must be *acted on* with these values too, never with headers the URL did not sign. A name given
    twice is InvalidArgument: which one was meant would be ambiguous.
    """
    _, _, raw_query = raw_target.partition("?")
    overrides: dict[str, str] = {}
    for name, value in _raw_query_parts(raw_query):
        lower = name.lower()
        if value is not None and (lower.startswith("x-amz-") or lower in ("content-type", "content-md5")):
            if lower in overrides:
                raise AuthError("InvalidArgument", f"The query parameter {name} was given more than once",
                                {"ArgumentName": name, "ArgumentValue": value})
            overrides[lower] = value
    return overrides


def verify_v2_query(
    method: str,
    raw_target: str,
    headers: Sequence[tuple[str, str]],
    parsed: ParsedV2Query,
    secret: str,
    *,
    now: datetime,
    bucket_from_host: str | None = None,
) -> None:
    """Verify a V2 presigned URL, as S3 does. Checks, in order:

    1. no Authorization header and no SigV4 query parameters: InvalidArgument "Only one auth mechanism allowed";
    2. ``now`` not after Expires: AccessDenied "Request has expired" (Expires, ServerTime);
    3. the signature, with Expires as the Date line: SignatureDoesNotMatch.
    """
    raw_path, _, raw_query = raw_target.partition("?")
    grouped = _group_headers(headers)
    parts = _raw_query_parts(raw_query)
    if "authorization" in grouped or {name for name, _ in parts} & _V4_QUERY_PARAMS:
        raise AuthError(
            "InvalidArgument",
            _ONE_MECHANISM_MESSAGE,
            {"ArgumentName": "Authorization", "ArgumentValue": ",".join(grouped.get("authorization", ()))},
        )

    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    if now.timestamp() > parsed.expires:  # compared as numbers: an Expires past year 9999 is no datetime
        expires_at = datetime.fromtimestamp(parsed.expires, UTC)
        raise AuthError(
            "AccessDenied",
            "Request has expired",
            {"Expires": expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"), "ServerTime": now.strftime("%Y-%m-%dT%H:%M:%SZ")},
        )

    overrides = query_header_overrides(raw_target)
    _check(
        method,
        raw_target,
        [(parsed.expires_text, grouped)],
        parsed.access_key,
        parsed.signature,
        secret,
        bucket_from_host,
        overrides,
    )
