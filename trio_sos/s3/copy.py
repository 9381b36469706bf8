"""CopyObject, and the copy source shared with UploadPartCopy.

A copy writes no byte of the body: the new version's manifest is made of the source's chunks under new names —
each LINKed on the agents that hold it, a slice of a chunk where a range starts or ends inside one
(``DataStore.share``; why names rather than shared references, in docs/metadata.md). Only a small body kept
inline in the source's record (or an empty one) is copied as bytes.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import attrs

from ..cluster.fleet import StorageUnavailable
from ..data.checksums import b64
from ..http.server import Response
from ..meta import store as m
from .buckets import iso8601
from .context import Ctx
from . import objectlock, sse
from ..data import sse as crypto
from .errors import S3Error
from .versioning import version_header
from .xml import Tag, document

if TYPE_CHECKING:
    from .objects import StoredBody

MAX_COPY_SIZE = 5 * 1024**3


def parse_copy_source(value: str) -> tuple[str, str, str | None]:
    """``bucket/key`` (URL-encoded, optional leading '/', optional ``?versionId=``) -> (bucket, key, version id or
    None: the latest)."""
    path, sep, query = value.partition("?")
    version_id = None
    if sep:
        version_id = query[len("versionId="):] if query.startswith("versionId=") else None
        if version_id is None or not m.valid_version_id(version_id):
            raise S3Error("InvalidArgument", "Invalid version id specified", ArgumentName="x-amz-copy-source",
                          ArgumentValue=value[:1100])
    try:
        decoded = unquote(path, errors="strict")
    except UnicodeDecodeError:
        decoded = ""
    bucket, _, key = decoded.lstrip("/").partition("/")
    if not bucket or not key:
        raise S3Error("InvalidArgument", "Copy Source must mention the source bucket and key: "
                                         "sourcebucket/sourcekey", ArgumentName="x-amz-copy-source",
                      ArgumentValue=value)
    return bucket, key, version_id


_COPY_RANGE = re.compile(r"bytes=([0-9]+)-([0-9]+)\Z")


def _offset(digits: str) -> int:
    return int(digits) if len(digits) <= 19 else 10**19  # past the end of any object; no int() of 5,000 digits


def copy_source_range(spec: str, size: int) -> tuple[int, int]:
    """``[start, end)`` of an UploadPartCopy's x-amz-copy-source-range ``bytes=first-last``. Unlike a GET's Range,
    both ends are required and must lie inside the source (S3: InvalidRange, 416); anything else is
    InvalidArgument."""
    match = _COPY_RANGE.match(spec.strip())
    if match is None or _offset(match[1]) > _offset(match[2]):
        raise S3Error("InvalidArgument", "The x-amz-copy-source-range value must be of the form bytes=first-last "
                                         "where first and last are the zero-based offsets of the first and last "
                                         "bytes to copy", ArgumentName="x-amz-copy-source-range",
                      ArgumentValue=spec[:256])
    first, last = _offset(match[1]), _offset(match[2])
    if last >= size:
        raise S3Error("InvalidRange", f"The requested range is not satisfiable: the source object is {size} bytes",
                      status=416, ActualObjectSize=str(size), RangeRequested=spec[:256])
    return first, last + 1


def check_copy_conditions(ctx: Ctx, source: m.ObjectVersion) -> None:
    """x-amz-copy-source-if-* -> 412 PreconditionFailed, with S3's precedence (match wins over unmodified-since,
    none-match over modified-since)."""
    from .objects import _etag_matches, _http_time

    modified = int(source.last_modified)
    if_match = ctx.header("x-amz-copy-source-if-match")
    if_none = ctx.header("x-amz-copy-source-if-none-match")
    unmodified = _http_time(ctx.header("x-amz-copy-source-if-unmodified-since"))
    modified_since = _http_time(ctx.header("x-amz-copy-source-if-modified-since"))
    if if_match is not None:
        if not _etag_matches(if_match, source.etag):
            raise S3Error("PreconditionFailed", Condition="x-amz-copy-source-If-Match")
    elif unmodified is not None and modified > unmodified:
        raise S3Error("PreconditionFailed", Condition="x-amz-copy-source-If-Unmodified-Since")
    if if_none is not None:
        if _etag_matches(if_none, source.etag):
            raise S3Error("PreconditionFailed", Condition="x-amz-copy-source-If-None-Match")
    elif modified_since is not None and modified <= modified_since:
        raise S3Error("PreconditionFailed", Condition="x-amz-copy-source-If-Modified-Since")


async def copy_source(ctx: Ctx, *, allow_range: bool, max_size: int) -> tuple[m.ObjectVersion, int, int]:
    """The source object named by x-amz-copy-source (which the caller must be allowed to read) — its latest
    version, or the one its ``?versionId=`` names —, after its conditions, and the ``[start, end)`` to copy
    (x-amz-copy-source-range, or all of it)."""
    bucket_name, key, version_id = parse_copy_source(ctx.header("x-amz-copy-source") or "")
    from .access import bucket_for, check_object
    from .versioning import find_version, missing

    await bucket_for(ctx, None, bucket_name)
    try:
        source = await find_version(ctx, bucket_name, key, version_id)
    except S3Error as exc:  # a delete marker: S3 answers a copy from it 404 (latest) or 400 (named)
        await bucket_for(ctx, "READ", bucket_name, action="s3:ListBucket")
        if exc.code == "MethodNotAllowed":
            raise S3Error("InvalidRequest", "The source of a copy request may not specifically refer to a delete "
                                            "marker by version id.") from None
        raise
    if source is None:
        await bucket_for(ctx, "READ", bucket_name, action="s3:ListBucket")
        raise missing(key, version_id)
    check_object(ctx, source, "READ", action="s3:GetObjectVersion" if version_id else "s3:GetObject")
    check_copy_conditions(ctx, source)
    start, end = 0, source.size
    spec = ctx.header("x-amz-copy-source-range")
    if spec is not None:
        if not allow_range:
            raise S3Error("InvalidArgument", "Range specified is not valid for CopyObject",
                          ArgumentName="x-amz-copy-source-range", ArgumentValue=spec[:256])
        start, end = copy_source_range(spec, source.size)
    if end - start > max_size:
        raise S3Error("InvalidRequest", f"The specified copy source is larger than the maximum allowable size "
                                        f"for a copy source: {max_size}")
    return source, start, end


_MD5 = re.compile(r"[0-9a-f]{32}\Z")


async def copied_body(ctx: Ctx, source: m.ObjectVersion, start: int, end: int, *, max_size: int,
                      algorithm: str | None = None, md5: bool = False, inline: bool = True,
                      source_key: bytes | None = None, envelope: crypto.Envelope | None = None,
                      data_key: bytes | None = None, same_key: bool = False) -> StoredBody:
    """The source's bytes ``[start, end)`` as a new body, not yet committed (commit or discard it as a
    ``store_body`` one). Its chunks are shared (``DataStore.share``): nothing is written, and the range is read
    only to compute what the copy must answer and the source does not tell — the MD5 (``md5``; an ETag of a
    single-part source covering the range is it) and the upload's checksum ``algorithm``. A body kept inline in
    the source's record, or an empty one, is copied as bytes.

    Encryption: ``source_key`` opens the source (its data key; None if it is plaintext), ``data_key`` (of
    ``envelope``) encrypts the copy. A whole copy under the source's own data key (``same_key``) shares the
    stored bytes as they are; any other copy of an encrypted source, or into an encrypted object, is decrypted
    and encrypted again on its way."""
    from .objects import StoredBody, store_body  # noqa: F811 (objects imports this module)

    assert ctx.bucket is not None and ctx.key is not None
    encrypted = source_key is not None or data_key is not None
    whole = (start, end) == (0, source.size)
    if not source.manifest or start >= end or (encrypted and not (same_key and whole)):
        pieces = sse.plaintext(ctx, source, source_key, start, end)

        async def receive() -> bytes:
            try:
                return await pieces.__anext__()
            except StopAsyncIteration:
                return b""

        return await store_body(ctx, receive, max_size=max_size, algorithm=algorithm, inline=inline,
                                envelope=envelope, data_key=data_key)
    if encrypted:  # the whole source under its own data key: its stored bytes, shared as they are
        stored_end = sum(crypto.stored_size(size) for size in source.parts or (source.size,))
        try:
            written = await ctx.services.data.share(source.manifest, 0, stored_end, bucket=ctx.bucket, key=ctx.key)
        except StorageUnavailable as exc:
            raise S3Error("ServiceUnavailable", str(exc)) from exc
        written = attrs.evolve(written, size=source.size)
        return StoredBody(written, (), shared=True)
    known = bytes.fromhex(source.etag) if (start, end) == (0, source.size) and _MD5.match(source.etag) else None
    try:
        written = await ctx.services.data.share(source.manifest, start, end, bucket=ctx.bucket, key=ctx.key,
                                                md5=md5 and known is None,
                                                checksums=[algorithm] if algorithm else [])
    except StorageUnavailable as exc:
        raise S3Error("ServiceUnavailable", str(exc)) from exc
    if known is not None:
        written = attrs.evolve(written, md5=known)
    checksums = ((algorithm, b64(written.checksums[algorithm])),) if algorithm else ()
    return StoredBody(written, checksums, shared=True)


async def copy_object(ctx: Ctx) -> Response:
    from .access import new_resource_acl, owner_of_new_object
    from .objects import committing, object_fields

    assert ctx.bucket is not None and ctx.key is not None
    bucket = await ctx.bucket_for("WRITE")
    owner = owner_of_new_object(ctx, bucket)
    directive = (ctx.header("x-amz-metadata-directive") or "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise S3Error("InvalidArgument", "Unknown metadata directive.", ArgumentName="x-amz-metadata-directive",
                      ArgumentValue=directive)
    source_bucket, source_key, source_version = parse_copy_source(ctx.header("x-amz-copy-source") or "")
    encrypting = any(n.startswith("x-amz-server-side-encryption") for n, _ in ctx.request.headers)
    if (source_bucket, source_key) == (ctx.bucket, ctx.key) and directive == "COPY" and source_version is None \
            and not encrypting:
        raise S3Error("InvalidRequest", "This copy request is illegal because it is trying to copy an object to "
                                        "itself without changing the object's metadata, storage class, website "
                                        "redirect location or encryption attributes.")
    source, start, end = await copy_source(ctx, allow_range=False, max_size=MAX_COPY_SIZE)
    requested = object_fields(ctx)
    if directive == "COPY":
        fields: dict[str, Any] = dict(content_type=source.content_type, headers=source.headers,
                                      user_meta=source.user_meta)
    else:
        fields = {k: v for k, v in requested.items() if k != "tags"}
    tagging_directive = (ctx.header("x-amz-tagging-directive") or "COPY").upper()
    if tagging_directive not in ("COPY", "REPLACE"):
        raise S3Error("InvalidArgument", "Unknown tagging directive.", ArgumentName="x-amz-tagging-directive",
                      ArgumentValue=tagging_directive)
    fields["tags"] = source.tags if tagging_directive == "COPY" else requested["tags"]
    fields["acl"] = await new_resource_acl(ctx, owner, bucket)
    fields.update(objectlock.lock_fields(ctx, bucket))  # the request's, or the bucket's default: not the source's
    source_envelope, source_data_key = sse.open_envelope(ctx, source.headers, prefix=sse.COPY_CUSTOMER)
    want = sse.wanted(ctx, bucket)
    same_key = sse.same_key(source_envelope, want)
    envelope, data_key = sse.seal(ctx, want, source_data_key if same_key else None)
    fields["headers"] = crypto.with_envelope(fields["headers"], envelope)
    stored = await copied_body(ctx, source, start, end, max_size=MAX_COPY_SIZE, source_key=source_data_key,
                               envelope=envelope, data_key=data_key, same_key=same_key)
    part_checksums: tuple[str, ...] = ()
    if stored.shared:  # the source's very chunks: its ETag, checksums and parts hold for the copy
        etag, checksums, parts = source.etag, source.checksums, source.parts
        part_checksums = source.part_checksums
    else:  # copied as bytes (inline or empty in the source, or encrypted anew): checked against it
        multipart = "-" in source.etag
        source_md5 = sse.etag(source_envelope, source_data_key, stored.written.md5)
        if not multipart and source_md5 != source.etag:
            await ctx.services.data.discard(stored.written)
            raise S3Error("InternalError", "the copy does not match its source; nothing was written")
        etag = stored.etag
        checksums, parts = ((), ()) if multipart else (source.checksums, ())
    obj = m.ObjectVersion(bucket=ctx.bucket, key=ctx.key, version_id="null", size=stored.written.size,
                          etag=etag, last_modified=time.time(), owner_id=owner, manifest=stored.written.manifest,
                          inline=stored.written.inline, checksums=checksums, parts=parts,
                          part_checksums=part_checksums, **fields)
    async with committing(ctx, stored):
        done = await ctx.meta.put_object(obj, intent_id=stored.written.intent_id,
                                         gc_delay=ctx.services.config.gc_delay, bucket_id=bucket.id,
                                         bypass_governance=objectlock.may_bypass(ctx, bucket))
    body = document(Tag("CopyObjectResult", Tag("LastModified", iso8601(obj.last_modified)),
                        Tag("ETag", f'"{obj.etag}"')))
    headers = [("Content-Type", "application/xml"), *await source_version_header(ctx, source_bucket, source),
               *version_header(bucket, done.version.version_id), *sse.response_headers(envelope)]
    return Response(200, headers, body)


async def source_version_header(ctx: Ctx, bucket_name: str, source: m.ObjectVersion) -> list[tuple[str, str]]:
    """``x-amz-copy-source-version-id``: the version copied, when its bucket has versioning."""
    from .access import bucket_for

    source_bucket = await bucket_for(ctx, None, bucket_name)
    return [("x-amz-copy-source-version-id", h[1]) for h in version_header(source_bucket, source.version_id)]
