"""The request headers handlers act on: one value per name, and exactly the values that were signed.

Two ways a request's headers could differ from what its signature covers, both closed here before any handler
runs:

- **Repeated headers.** SigV4 and SigV2 sign a header sent twice as its values joined with ``,``. A handler that
  read only the first would act on something else than what was signed: a captured request whose signed
  ``x-amz-copy-source: bucket/a,b`` is resent as two headers ``bucket/a`` and ``b`` keeps its signature. So a
  repeated single-valued header — every ``x-amz-*`` header but the list-valued ``x-amz-meta-*`` and
  ``x-amz-grant-*``, and the standard headers this server interprets — is refused with 400; the others are joined
  into the one value that was signed.
- **Headers carried in the query.** A V2 presigned URL signs ``x-amz-*``, Content-Type and Content-MD5 query
  parameters *instead of* the headers of the same names, and SigV4 presigned URLs may carry ``x-amz-*`` headers
  in their (signed) query. Those query values replace the headers of the same names (V2: a header the URL did not
  sign never counts; V4: a header that says something else than the signed query is refused).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .errors import S3Error

# Standard headers with one value that this server interprets (x-amz-* ones are single-valued by default).
SINGLE_VALUED = frozenset({
    "host", "authorization", "content-length", "content-type", "content-md5", "content-disposition",
    "content-language", "date", "expires", "expect", "range", "if-modified-since", "if-unmodified-since",
    "transfer-encoding", "origin", "access-control-request-method",
})
# x-amz-* headers whose value is a list, so that repeating them is joining them
LIST_VALUED_PREFIXES = ("x-amz-meta-", "x-amz-grant-")

Headers = list[tuple[str, str]]


def one_value_per_name(headers: Sequence[tuple[str, str]]) -> Headers:
    """Headers (names lower-case) with repeated ones joined by ``,`` — as signed — in first-seen order; a repeated
    single-valued header is InvalidArgument."""
    grouped: dict[str, list[str]] = {}
    for name, value in headers:
        grouped.setdefault(name, []).append(value)
    out: Headers = []
    for name, values in grouped.items():
        if len(values) > 1 and (name in SINGLE_VALUED or (name.startswith("x-amz-")
                                                         and not name.startswith(LIST_VALUED_PREFIXES))):
            raise S3Error("InvalidArgument", f"The header {name} may be given only once", ArgumentName=name,
                          ArgumentValue=",".join(v.strip() for v in values)[:256])
        out.append((name, values[0] if len(values) == 1 else ",".join(v.strip() for v in values)))
    return out


def replaced_by_query(headers: Sequence[tuple[str, str]], signed: Mapping[str, str]) -> Headers:
    """V2 presigned: the query's signed values stand in for the headers of the same names."""
    return [(n, v) for n, v in headers if n not in signed] + list(signed.items())


def merged_with_query(headers: Sequence[tuple[str, str]], signed: Mapping[str, str]) -> Headers:
    """V4 presigned: x-amz-* headers carried in the signed query are added; a header that is also sent must say
    the same (both are signed, but which should count would be ambiguous)."""
    present = dict(headers)
    for name, value in signed.items():
        if name in present and present[name].strip() != value.strip():
            raise S3Error("InvalidRequest", f"{name} is given as a header and as a query parameter, with different "
                                            "values")
    return [(n, v) for n, v in headers if n not in signed] + list(signed.items())
