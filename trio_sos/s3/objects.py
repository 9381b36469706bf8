"""Object operations: PutObject, GetObject, HeadObject, DeleteObject.

PutObject follows one recipe: validate the headers, authorize (done before the body is accepted, so a refused
upload never sends it), stream the body to the agents while hashing, verify every digest the client gave, then
commit the version in one metadata step. Until that commit nothing is visible and the previous version is intact.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime

from ..data.checksums import SUPPORTED, b64
from ..data.objects import StorageUnavailable
from ..http.server import Response, http_date
from ..meta import store as m
from .context import Ctx
from .errors import S3Error
from .ranges import Unsatisfiable, parse_range

MAX_PUT_SIZE = 5 * 1024**3
MAX_USER_META = 2048
STORED_HEADERS = ("cache-control", "content-disposition", "content-encoding", "content-language", "expires")


def _content_md5(ctx: Ctx) -> bytes | None:
    value = ctx.header("content-md5")
    if value is None:
        return None
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != 16:
        raise S3Error("InvalidDigest")
    return digest


def _checksum_header(ctx: Ctx) -> tuple[str, str] | None:
    found = [(n[len("x-amz-checksum-"):].upper(), v.strip()) for n, v in ctx.request.headers
             if n.startswith("x-amz-checksum-") and n != "x-amz-checksum-mode"]
    if not found:
        return None
    if len(found) > 1:
        raise S3Error("InvalidRequest", "Expecting a single x-amz-checksum- header. Multiple checksum Types are "
                                        "not allowed.")
    algorithm, value = found[0]
    if algorithm not in SUPPORTED:
        raise S3Error("NotImplemented", f"x-amz-checksum-{algorithm.lower()} is not implemented by this server "
                                        "yet")
    return algorithm, value


def _user_meta(ctx: Ctx) -> tuple[tuple[str, str], ...]:
    meta = tuple((n[len("x-amz-meta-"):], v) for n, v in ctx.request.headers if n.startswith("x-amz-meta-"))
    if sum(len(k) + len(v) for k, v in meta) > MAX_USER_META:
        raise S3Error("MetadataTooLarge", "Your metadata headers exceed the maximum allowed metadata size",
                      status=400, MaxSizeAllowed=str(MAX_USER_META))
    return meta


async def put_object(ctx: Ctx) -> Response:
    assert ctx.bucket is not None and ctx.key is not None and ctx.user is not None
    request = ctx.request
    await ctx.owned_bucket()
    length = request.content_length
    if length is None and not request.chunked:
        raise S3Error("MissingContentLength")
    if length is not None and length > MAX_PUT_SIZE:
        raise S3Error("EntityTooLarge", ProposedSize=str(length), MaxSizeAllowed=str(MAX_PUT_SIZE))
    md5_expected = _content_md5(ctx)
    checksum = _checksum_header(ctx)
    user_meta = _user_meta(ctx)
    payload_hash = ctx.verified.payload_hash if ctx.verified else "UNSIGNED-PAYLOAD"
    try:
        written = await ctx.services.data.write(
            request.receive, bucket=ctx.bucket, key=ctx.key, sha256=len(payload_hash) == 64,
            checksums=[checksum[0]] if checksum else [], max_size=MAX_PUT_SIZE,
            on_too_large=lambda: S3Error("EntityTooLarge", MaxSizeAllowed=str(MAX_PUT_SIZE)),
        )
    except StorageUnavailable as exc:
        raise S3Error("ServiceUnavailable", str(exc)) from exc
    try:
        if written.sha256 is not None and written.sha256.hex() != payload_hash:
            raise S3Error("XAmzContentSHA256Mismatch", ClientComputedContentSHA256=payload_hash,
                          S3ComputedContentSHA256=written.sha256.hex())
        if md5_expected is not None and not hmac.compare_digest(md5_expected, written.md5):
            raise S3Error("BadDigest", ExpectedDigest=base64.b64encode(md5_expected).decode(),
                          CalculatedDigest=b64(written.md5))
        checksums: tuple[tuple[str, str], ...] = ()
        if checksum is not None:
            algorithm, value = checksum
            computed = b64(written.checksums[algorithm])
            if not hmac.compare_digest(value.encode(), computed.encode()):
                raise S3Error("BadDigest", f"The {algorithm} you specified did not match the calculated checksum.")
            checksums = ((algorithm, computed),)
        obj = m.ObjectVersion(
            bucket=ctx.bucket, key=ctx.key, version_id="null", size=written.size, etag=written.md5.hex(),
            last_modified=time.time(), owner_id=ctx.user.id, manifest=written.manifest,
            content_type=ctx.header("content-type") or "binary/octet-stream",
            headers=tuple((h, v) for h in STORED_HEADERS if (v := ctx.header(h)) is not None),
            user_meta=user_meta, checksums=checksums,
        )
        await ctx.meta.put_object(obj, intent_id=written.intent_id, gc_delay=ctx.services.config.gc_delay)
    except m.NoSuchBucket:
        await ctx.services.data.discard(written)
        raise S3Error("NoSuchBucket", BucketName=ctx.bucket) from None
    except BaseException:
        await ctx.services.data.discard(written)
        raise
    headers = [("ETag", f'"{obj.etag}"')]
    headers += [(f"x-amz-checksum-{a.lower()}", v) for a, v in obj.checksums]
    return Response(200, headers, b"")


def _http_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _etag_matches(header: str, etag: str) -> bool:
    return any(t.strip() in ("*", f'"{etag}"', etag) for t in header.split(","))


def check_conditions(ctx: Ctx, obj: m.ObjectVersion) -> None:
    """If-Match / If-Unmodified-Since -> 412; If-None-Match / If-Modified-Since -> 304 (RFC 9110 order)."""
    modified = int(obj.last_modified)
    if_match = ctx.header("if-match")
    if if_match is not None:
        if not _etag_matches(if_match, obj.etag):
            raise S3Error("PreconditionFailed", Condition="If-Match")
    else:
        since = _http_time(ctx.header("if-unmodified-since"))
        if since is not None and modified > since:
            raise S3Error("PreconditionFailed", Condition="If-Unmodified-Since")
    if_none_match = ctx.header("if-none-match")
    if if_none_match is not None:
        if _etag_matches(if_none_match, obj.etag):
            raise S3Error("NotModified", status=304)
    else:
        since = _http_time(ctx.header("if-modified-since"))
        if since is not None and modified <= since:
            raise S3Error("NotModified", status=304)


def _object_headers(ctx: Ctx, obj: m.ObjectVersion, whole: bool) -> list[tuple[str, str]]:
    headers = [
        ("ETag", f'"{obj.etag}"'),
        ("Last-Modified", http_date(obj.last_modified)),
        ("Accept-Ranges", "bytes"),
        ("Content-Type", obj.content_type),
    ]
    headers += [(name.title(), value) for name, value in obj.headers]
    headers += [(f"x-amz-meta-{name}", value) for name, value in obj.user_meta]
    if whole and (ctx.header("x-amz-checksum-mode") or "").upper() == "ENABLED":
        headers += [(f"x-amz-checksum-{a.lower()}", v) for a, v in obj.checksums]
    return headers


async def _current(ctx: Ctx) -> m.ObjectVersion:
    assert ctx.bucket is not None and ctx.key is not None
    await ctx.owned_bucket()
    obj = await ctx.meta.get_object(ctx.bucket, ctx.key)
    if obj is None:
        raise S3Error("NoSuchKey", Key=ctx.key)
    return obj


def _304(exc: S3Error, obj: m.ObjectVersion) -> Response:
    return Response(304, [("ETag", f'"{obj.etag}"'), ("Last-Modified", http_date(obj.last_modified))], b"")


async def _get_or_head(ctx: Ctx, with_body: bool) -> Response:
    obj = await _current(ctx)
    try:
        check_conditions(ctx, obj)
    except S3Error as exc:
        if exc.status == 304:
            return _304(exc, obj)
        raise
    try:
        selected = parse_range(ctx.header("range"), obj.size)
    except Unsatisfiable:
        raise S3Error("InvalidRange", ActualObjectSize=str(obj.size),
                      RangeRequested=ctx.header("range") or "") from None
    start, end = selected if selected is not None else (0, obj.size)
    headers = _object_headers(ctx, obj, whole=selected is None)
    status = 200
    if selected is not None:
        status = 206
        headers.append(("Content-Range", f"bytes {start}-{end - 1}/{obj.size}"))
    body: bytes | AsyncIterator[bytes] = b""
    if with_body and end > start:
        body = await _started(ctx.services.data.read(obj.manifest, start, end))
    return Response(status, headers, body, content_length=end - start)


async def _started(pieces: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Fetch the first piece before the status line goes out: storage that cannot be read at all becomes a 503
    the client can retry, not a 200 cut short."""
    try:
        first = await pieces.__anext__()
    except StopAsyncIteration:
        first = b""
    except StorageUnavailable as exc:
        raise S3Error("ServiceUnavailable", f"object data unavailable: {exc}") from exc

    async def body() -> AsyncIterator[bytes]:
        yield first
        async for piece in pieces:
            yield piece

    return body()


async def get_object(ctx: Ctx) -> Response:
    return await _get_or_head(ctx, with_body=True)


async def head_object(ctx: Ctx) -> Response:
    return await _get_or_head(ctx, with_body=False)


async def delete_object(ctx: Ctx) -> Response:
    assert ctx.bucket is not None and ctx.key is not None
    await ctx.owned_bucket()
    await ctx.meta.delete_object(ctx.bucket, ctx.key, gc_delay=ctx.services.config.gc_delay)
    return Response(204, [], b"")
