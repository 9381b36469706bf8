"""Object operations: PutObject, GetObject, HeadObject, DeleteObject.

PutObject follows one recipe: validate the headers, authorize (done before the body is accepted, so a refused
upload never sends it), stream the body to the agents while hashing, verify every digest the client gave, then
commit the version in one metadata step. Until that commit nothing is visible and the previous version is intact.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import attrs

from ..agent.direct import DirectWindow
from ..data.checksums import SUPPORTED, b64, new_hasher
from ..data.objects import StorageUnavailable, Written
from ..http.server import Response, http_date
from ..meta import store as m
from . import params
from .context import Ctx
from .errors import S3Error
from .ranges import Unsatisfiable, parse_range
from . import lifecycle, objectlock, sse
from ..data import sse as crypto
from .versioning import find_version, missing, version_header, version_id_param

log = logging.getLogger("trio_sos.s3")

MAX_PUT_SIZE = 5 * 1024**3
DIGEST_SIZES = {"CRC32": 4, "CRC32C": 4, "CRC64NVME": 8, "SHA1": 20, "SHA256": 32}
MAX_USER_META = 2048
RESPONSE_OVERRIDES = {
    "response-content-type": "Content-Type", "response-content-language": "Content-Language",
    "response-expires": "Expires", "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition", "response-content-encoding": "Content-Encoding",
}
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
    try:
        digest = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != DIGEST_SIZES[algorithm]:  # refused before the body is accepted
        raise S3Error("InvalidRequest", f"Value for x-amz-checksum-{algorithm.lower()} header is invalid.")
    return algorithm, value


def header_value(text: str, name: str) -> str:
    """Text from the query or a form (decoded as UTF-8) made into a response header value: its UTF-8 bytes as a
    latin-1 string, the form every header value has here (request headers are decoded as latin-1, byte for byte).
    Control characters (CR, LF...) could split the response's head: InvalidArgument."""
    if any(ord(c) < 0x20 and c != "\t" or ord(c) == 0x7F for c in text):
        raise S3Error("InvalidArgument", f"{name} may not contain control characters", ArgumentName=name,
                      ArgumentValue=text.encode("unicode_escape").decode("ascii")[:256])
    return text.encode("utf-8", "surrogateescape").decode("latin-1")


def check_user_meta(meta: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """User metadata (names without ``x-amz-meta-``, values as latin-1 strings of their bytes, like every header
    value here) within S3's 2 KiB: the bytes of every name and value."""
    if sum(len(k.encode("latin-1", "replace")) + len(v.encode("latin-1", "replace")) for k, v in meta) > MAX_USER_META:
        raise S3Error("MetadataTooLarge", "Your metadata headers exceed the maximum allowed metadata size",
                      status=400, MaxSizeAllowed=str(MAX_USER_META))
    return meta


def _user_meta(ctx: Ctx) -> tuple[tuple[str, str], ...]:
    return check_user_meta(tuple((n[len("x-amz-meta-"):], v) for n, v in ctx.request.headers
                                 if n.startswith("x-amz-meta-")))


@attrs.frozen
class StoredBody:
    """A body on the agents, verified, not yet committed: commit it with ``intent_id`` or ``discard`` it."""

    written: Written
    checksums: tuple[tuple[str, str], ...]
    etag_key: bytes | None = None  # SSE-C: the data key the ETag is keyed by (sse.etag)
    shared: bool = False  # a copy's: the source's very stored bytes (its ETag, checksums and parts hold)

    @property
    def etag(self) -> str:
        return crypto.etag(self.etag_key, self.written.md5) if self.etag_key else self.written.md5.hex()


def check_upload_headers(ctx: Ctx, max_size: int = MAX_PUT_SIZE) -> None:
    """What a body upload needs before its body is accepted (so a refused one never sends it)."""
    request = ctx.request
    length = request.content_length
    if length is None and not request.chunked:
        raise S3Error("MissingContentLength")
    if length is not None and length > max_size:
        raise S3Error("EntityTooLarge", ProposedSize=str(length), MaxSizeAllowed=str(max_size))


def _announced_size(ctx: Ctx) -> int | None:
    """The body length the request announced (aws-chunked: its decoded length), or None."""
    if ctx.decoder is not None:
        return params.uint(ctx.header("x-amz-decoded-content-length") or "", 19)
    return None if ctx.request.chunked else ctx.request.content_length


async def store_body(ctx: Ctx, receive: Callable[[], Awaitable[bytes]] | None = None, *,
                     max_size: int = MAX_PUT_SIZE, algorithm: str | None = None, inline: bool = True,
                     envelope: crypto.Envelope | None = None, data_key: bytes | None = None) -> StoredBody:
    """Stream a body to the agents and verify every digest the request announced (Content-MD5, the signed
    payload SHA-256, an x-amz-checksum-* header). ``receive`` defaults to the request's own body; a copy passes
    the source object's bytes instead, and then the request's digests do not apply. With ``data_key`` (of
    ``envelope``) the body is stored encrypted; the digests are the plaintext's."""
    assert ctx.bucket is not None and ctx.key is not None
    from_request = receive is None
    md5_expected = _content_md5(ctx) if from_request else None
    checksum = _checksum_header(ctx) if from_request else None
    payload_hash = ctx.verified.payload_hash if ctx.verified and from_request else "UNSIGNED-PAYLOAD"
    # aws-chunked: the trailing checksum's algorithm (or S3's default, CRC64NVME, computed for the object)
    trailer_algorithm = ctx.decoder.checksum_algorithm if from_request and ctx.decoder and not checksum else None
    if algorithm and (checksum or trailer_algorithm) and (checksum or (trailer_algorithm,))[0] != algorithm:
        if checksum or (ctx.decoder is not None and ctx.decoder.trailer_names):
            actual = checksum[0] if checksum else (trailer_algorithm or "")
            raise S3Error("InvalidRequest", f"Checksum Type mismatch occurred, expected checksum Type: "
                                            f"{algorithm.lower()}, actual checksum Type: {actual.lower()}")
        trailer_algorithm = algorithm  # no trailer announced: the upload's algorithm, not S3's default
    algorithms = ([checksum[0]] if checksum else [trailer_algorithm] if trailer_algorithm
                  else [algorithm] if algorithm else [])
    try:
        written = await ctx.services.data.write(
            receive or ctx.body_receiver(), bucket=ctx.bucket, key=ctx.key, sha256=len(payload_hash) == 64,
            checksums=algorithms, max_size=max_size, inline=inline,
            on_too_large=lambda: S3Error("EntityTooLarge", MaxSizeAllowed=str(max_size)),
            encryptor=sse.encryptor(data_key), size_hint=_announced_size(ctx) if from_request else None,
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
        elif trailer_algorithm is not None:
            computed = b64(written.checksums[trailer_algorithm])
            sent = ctx.trailers.get(f"x-amz-checksum-{trailer_algorithm.lower()}")
            if sent is not None and not hmac.compare_digest(sent.encode(), computed.encode()):
                raise S3Error("BadDigest", f"The {trailer_algorithm} you specified did not match the calculated "
                                           "checksum.")
            checksums = ((trailer_algorithm, computed),)
        elif algorithm is not None:
            checksums = ((algorithm, b64(written.checksums[algorithm])),)
    except BaseException:
        await ctx.services.data.discard(written)
        raise
    sse_c = envelope is not None and envelope.mode == crypto.SSE_C
    return StoredBody(written, checksums, data_key if sse_c else None)


class committing:
    """``async with committing(ctx, body):`` around the metadata step that commits ``body``: if it fails, the
    body's chunks are reclaimed and the failure becomes S3's error. (A class rather than an
    ``asynccontextmanager``: it wraps every upload, and skips the generator machinery.)"""

    def __init__(self, ctx: Ctx, body: StoredBody) -> None:
        self.ctx, self.body = ctx, body

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if exc is None:
            return False
        ctx, written = self.ctx, self.body.written
        if isinstance(exc, m.IntentLost):
            # The GC took this upload for abandoned (its intent stopped being renewed for intent_grace): its
            # chunks may be gone, so nothing is committed and the client is told to retry.
            log.warning("request %s: upload intent %s was collected before its commit; nothing committed",
                        ctx.request_id, (written.intent_id or b"").hex())
        await ctx.services.data.discard(written)
        if isinstance(exc, m.NoSuchBucket):
            raise S3Error("NoSuchBucket", BucketName=ctx.bucket or "") from None
        if isinstance(exc, m.PreconditionFailed):
            raise S3Error("PreconditionFailed",
                          Condition="If-Match" if ctx.header("if-match") else "If-None-Match") from None
        if isinstance(exc, m.ObjectLocked):  # it would replace a locked null version in place
            raise objectlock.locked_error() from None
        if isinstance(exc, m.IntentLost):
            raise S3Error("ServiceUnavailable", "The upload took too long to commit and was discarded; please "
                                                "retry.") from None
        return False


def object_fields(ctx: Ctx) -> dict:
    """Content headers, user metadata and tags of a new object, from the request."""
    from .tagging import tags_from_header

    stored = []
    for name in STORED_HEADERS:
        value = ctx.header(name)
        if name == "content-encoding" and value is not None:
            # aws-chunked is the transfer's framing, not the object's encoding: S3 drops it
            value = ", ".join(t.strip() for t in value.split(",") if t.strip().lower() != "aws-chunked") or None
        if value is not None:
            stored.append((name, value))
    return dict(
        content_type=ctx.header("content-type") or "binary/octet-stream",
        headers=tuple(stored),
        user_meta=_user_meta(ctx),
        tags=tags_from_header(ctx),
    )


def etag_list(header: str) -> tuple[str, ...]:
    """An If-Match / If-None-Match value: ``*``, or ETags (quoted or not, weak ``W/`` ones compared strongly, as
    S3 does), comma-separated."""
    tags = []
    for item in header.split(","):
        item = item.strip()
        if item.startswith("W/"):
            item = item[2:]
        item = item.strip('"')
        if item:
            tags.append(item)
    return tuple(tags)


def _put_conditions(ctx: Ctx) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    """If-Match and If-None-Match of a conditional PutObject, as RFC 9110 has them: ``If-Match: *`` proceeds when
    the key exists, an If-None-Match ETag that is not the current one proceeds."""
    if_match, if_none_match = ctx.header("if-match"), ctx.header("if-none-match")
    return (etag_list(if_match) if if_match is not None else None,
            etag_list(if_none_match) if if_none_match is not None else None)


async def put_object(ctx: Ctx) -> Response:
    from .access import new_resource_acl, owner_of_new_object

    assert ctx.bucket is not None and ctx.key is not None
    bucket = await ctx.bucket_for("WRITE")
    check_upload_headers(ctx)
    owner = owner_of_new_object(ctx, bucket)
    fields = object_fields(ctx)
    fields["acl"] = await new_resource_acl(ctx, owner, bucket)
    fields.update(objectlock.lock_fields(ctx, bucket))
    if_match, if_none_match = _put_conditions(ctx)
    envelope, data_key = sse.seal(ctx, sse.wanted(ctx, bucket))
    fields["headers"] = crypto.with_envelope(fields["headers"], envelope)
    body = await store_body(ctx, envelope=envelope, data_key=data_key)
    obj = m.ObjectVersion(bucket=ctx.bucket, key=ctx.key, version_id="null", size=body.written.size,
                          etag=body.etag, last_modified=time.time(), owner_id=owner,
                          manifest=body.written.manifest, inline=body.written.inline, checksums=body.checksums,
                          **fields)
    async with committing(ctx, body):
        done = await ctx.meta.put_object(obj, intent_id=body.written.intent_id,
                                         gc_delay=ctx.services.config.gc_delay, if_match=if_match,
                                         if_none_match=if_none_match, bucket_id=bucket.id,
                                         bypass_governance=objectlock.may_bypass(ctx, bucket))
    headers = [("ETag", f'"{obj.etag}"'), *version_header(bucket, done.version.version_id)]
    headers += lifecycle.expiration_header(ctx, bucket, done.version)
    headers += [(f"x-amz-checksum-{a.lower()}", v) for a, v in obj.checksums]
    headers += sse.response_headers(envelope)
    return Response(200, headers, b"")


def _http_time(value: str | None) -> float | None:
    return params.http_date(value)


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
    headers += [(name.title(), value) for name, value in obj.headers if name in STORED_HEADERS]
    headers += [(f"x-amz-meta-{name}", value) for name, value in obj.user_meta]
    if obj.tags:
        headers.append(("x-amz-tagging-count", str(len(obj.tags))))
    # response-* query parameters override the stored headers (S3 allows them on signed requests only)
    for param, name in RESPONSE_OVERRIDES.items():
        value = ctx.query.get(param)
        if value is not None and ctx.user is not None:
            headers = [(n, v) for n, v in headers if n.lower() != name.lower()] + [(name, header_value(value, param))]
    if whole and (ctx.header("x-amz-checksum-mode") or "").upper() == "ENABLED":
        for algorithm, value in obj.checksums:
            headers.append((f"x-amz-checksum-{algorithm.lower()}", value))
            headers.append(("x-amz-checksum-type", "COMPOSITE" if "-" in value else "FULL_OBJECT"))
    return headers


async def _current(ctx: Ctx) -> tuple[m.Bucket, m.ObjectVersion]:
    """The bucket and the version a GET or HEAD reads: the latest, or the one ``?versionId=`` names."""
    assert ctx.bucket is not None and ctx.key is not None
    from .access import check_object

    version_id = version_id_param(ctx)
    bucket = await ctx.bucket_for(None)
    try:
        obj = await find_version(ctx, ctx.bucket, ctx.key, version_id)
    except S3Error:
        # what a caller who may not list learns of a delete marker: AccessDenied
        await ctx.bucket_for("READ", action="s3:ListBucket")
        raise
    if obj is None:
        # without the right to list, a missing key is AccessDenied, as S3 does
        await ctx.bucket_for("READ", action="s3:ListBucket")
        raise missing(ctx.key, version_id)
    check_object(ctx, obj, "READ")
    return bucket, obj


def _304(exc: S3Error, obj: m.ObjectVersion) -> Response:
    return Response(304, [("ETag", f'"{obj.etag}"'), ("Last-Modified", http_date(obj.last_modified))], b"")


async def _get_or_head(ctx: Ctx, with_body: bool) -> Response:
    bucket, obj = await _current(ctx)
    try:
        check_conditions(ctx, obj)
    except S3Error as exc:
        if exc.status == 304:
            return _304(exc, obj)
        raise
    envelope, data_key = sse.open_envelope(ctx, obj.headers)
    if "partNumber" in ctx.query:
        response = await _get_part(ctx, obj, with_body, data_key)
        response.headers += version_header(bucket, obj.version_id) + objectlock.lock_headers(obj)
        response.headers += sse.response_headers(envelope)
        return response
    try:
        selected = parse_range(ctx.header("range"), obj.size)
    except Unsatisfiable:
        raise S3Error("InvalidRange", ActualObjectSize=str(obj.size),
                      RangeRequested=ctx.header("range") or "") from None
    start, end = selected if selected is not None else (0, obj.size)
    headers = _object_headers(ctx, obj, whole=selected is None) + version_header(bucket, obj.version_id)
    headers += objectlock.lock_headers(obj) + lifecycle.expiration_header(ctx, bucket, obj)
    headers += sse.response_headers(envelope)
    status = 200
    if selected is not None:
        status = 206
        headers.append(("Content-Range", f"bytes {start}-{end - 1}/{obj.size}"))
    body: bytes | AsyncIterator[bytes | DirectWindow] = b""
    if with_body and end > start:
        body = await _body(ctx, obj, data_key, start, end)
    return Response(status, headers, body, content_length=end - start)


async def _body(ctx: Ctx, obj: m.ObjectVersion, data_key: bytes | None, start: int, end: int
                ) -> bytes | AsyncIterator[bytes | DirectWindow]:
    """A response's body ``[start, end)``: a small body kept in its metadata record as its bytes (no streaming
    machinery), any other streamed, its first piece fetched already (``_started``)."""
    if obj.inline is not None and data_key is None:
        return obj.inline[start:end]
    return await _started(_stream(ctx, obj, data_key, start, end))


def _stream(ctx: Ctx, obj: m.ObjectVersion, data_key: bytes | None, start: int, end: int
          ) -> AsyncIterator[bytes | DirectWindow]:
    """The bytes a GET answers: straight from the agents (zero-copy where it can), or decrypted."""
    if data_key is not None:
        return sse.plaintext(ctx, obj, data_key, start, end)
    return ctx.services.data.read(obj.manifest, start, end, obj.inline, direct=ctx.request.zero_copy)


async def _get_part(ctx: Ctx, obj: m.ObjectVersion, with_body: bool, data_key: bytes | None) -> Response:
    """GetObject/HeadObject with partNumber: the bytes of one part of a multipart object (206), or the whole of a
    single-part object for part 1."""
    raw = ctx.query.get("partNumber", "")
    number = params.uint(raw, 5)
    if number is None or not 1 <= number <= 10000:
        raise S3Error("InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive",
                      ArgumentName="partNumber", ArgumentValue=raw)
    if ctx.header("range") is not None:
        raise S3Error("InvalidRequest", "Cannot specify both Range header and partNumber query parameter")
    sizes = obj.parts or (obj.size,)
    if number > len(sizes):
        raise S3Error("InvalidPartNumber", "The requested partnumber is not satisfiable", status=416,
                      PartNumberRequested=raw, ActualPartCount=str(len(sizes)))
    start = sum(sizes[: number - 1])
    end = start + sizes[number - 1]
    headers = _object_headers(ctx, obj, whole=not obj.parts)
    if obj.part_checksums and obj.checksums and (ctx.header("x-amz-checksum-mode") or "").upper() == "ENABLED":
        # the part's own checksum, as S3 answers a part of an object uploaded with checksums
        headers.append((f"x-amz-checksum-{obj.checksums[0][0].lower()}", obj.part_checksums[number - 1]))
    status = 200
    if obj.parts:
        status = 206
        headers.append(("x-amz-mp-parts-count", str(len(obj.parts))))
        headers.append(("Content-Range", f"bytes {start}-{end - 1}/{obj.size}" if end > start
                        else f"bytes */{obj.size}"))
    body: bytes | AsyncIterator[bytes | DirectWindow] = b""
    if with_body and end > start:
        body = await _body(ctx, obj, data_key, start, end)
    return Response(status, headers, body, content_length=end - start)


async def _started(pieces: AsyncIterator[bytes | DirectWindow]) -> AsyncIterator[bytes | DirectWindow]:
    """Fetch the first piece before the status line goes out: storage that cannot be read at all becomes a 503
    the client can retry, not a 200 cut short."""
    try:
        first = await pieces.__anext__()
    except StopAsyncIteration:
        first = b""
    except StorageUnavailable as exc:
        raise S3Error("ServiceUnavailable", f"object data unavailable: {exc}") from exc

    async def body() -> AsyncIterator[bytes | DirectWindow]:
        yield first
        async for piece in pieces:
            yield piece

    return body()


async def get_object(ctx: Ctx) -> Response:
    return await _get_or_head(ctx, with_body=True)


async def head_object(ctx: Ctx) -> Response:
    return await _get_or_head(ctx, with_body=False)


def _deleted_headers(bucket: m.Bucket, version_id: str | None, done: m.Removed) -> list[tuple[str, str]]:
    """What a DELETE answers: the delete marker it put, or the version it removed (a marker, said so)."""
    if done.marker is not None:
        return [("x-amz-delete-marker", "true"), ("x-amz-version-id", done.marker.version_id)]
    if version_id is None:
        return []
    headers = [("x-amz-version-id", version_id)]
    if done.removed is not None and done.removed.delete_marker:
        headers.insert(0, ("x-amz-delete-marker", "true"))
    return headers


async def delete_object(ctx: Ctx) -> Response:
    from .access import owner_of_new_object

    assert ctx.bucket is not None and ctx.key is not None
    version_id = version_id_param(ctx)
    bucket = await ctx.bucket_for("WRITE")
    try:
        done = await ctx.meta.delete_object(ctx.bucket, ctx.key, version_id=version_id,
                                            gc_delay=ctx.services.config.gc_delay, bucket_id=bucket.id,
                                            owner_id=owner_of_new_object(ctx, bucket),
                                            bypass_governance=objectlock.may_bypass(ctx, bucket))
    except m.ObjectLocked:
        raise objectlock.locked_error() from None
    return Response(204, _deleted_headers(bucket, version_id, done), b"")


MAX_DELETE_KEYS = 1000


async def delete_objects(ctx: Ctx) -> Response:
    """DeleteObjects: up to 1,000 keys (or versions); integrity from Content-MD5 or any x-amz-checksum-*
    header."""
    from .access import owner_of_new_object
    from .buckets import read_document
    from .xml import Tag, child_text, document, local, parse

    from .access import allowed

    assert ctx.bucket is not None
    bucket = await ctx.bucket_for(None)
    raw = await read_document(ctx, 2 * 1024 * 1024)
    md5 = _content_md5(ctx)
    checksum = _checksum_header(ctx)
    if md5 is None and checksum is None:
        raise S3Error("InvalidRequest", "Missing required header for this request: Content-MD5")
    if md5 is not None and not hmac.compare_digest(md5, hashlib.md5(raw).digest()):
        raise S3Error("BadDigest")
    if checksum is not None:
        hasher = new_hasher(checksum[0])
        hasher.update(raw)
        if not hmac.compare_digest(checksum[1].encode(), b64(hasher.digest()).encode()):
            raise S3Error("BadDigest", f"The {checksum[0]} you specified did not match the calculated checksum.")
    root = parse(raw)
    if local(root.tag) != "Delete":
        raise S3Error("MalformedXML")
    quiet = (child_text(root, "Quiet") or "false").strip().lower() == "true"
    entries: list[tuple[str, str | None]] = []
    for node in root:
        if local(node.tag) == "Object":
            key = child_text(node, "Key")
            if key is None:
                raise S3Error("MalformedXML")
            version_id = child_text(node, "VersionId")
            entries.append((key, version_id.strip() if version_id is not None else None))
    if not entries or len(entries) > MAX_DELETE_KEYS:
        raise S3Error("MalformedXML")

    def problem(key: str, version_id: str | None) -> tuple[str, str] | None:
        if len(key.encode("utf-8")) > 1024:
            return "KeyTooLongError", "Your key is too long"
        if version_id is not None and not m.valid_version_id(version_id):
            return "NoSuchVersion", "The specified version does not exist."
        # each key as its own DeleteObject (or DeleteObjectVersion) would be decided
        action = "s3:DeleteObjectVersion" if version_id is not None else "s3:DeleteObject"
        if not allowed(ctx, bucket, "WRITE", action, key):
            return "AccessDenied", "Access Denied"
        return None

    problems = [problem(k, v) for k, v in entries]
    valid = [entry for entry, error in zip(entries, problems, strict=True) if error is None]
    # one metadata step for all of them (and their chunks queued for the GC in it)
    done = iter(await ctx.meta.delete_objects(ctx.bucket, valid, gc_delay=ctx.services.config.gc_delay,
                                              bucket_id=bucket.id, owner_id=owner_of_new_object(ctx, bucket),
                                              bypass_governance=objectlock.may_bypass(ctx, bucket)))
    results = []
    for (key, version_id), error in zip(entries, problems, strict=True):
        if error is not None:
            results.append(Tag("Error", Tag("Key", key), Tag("VersionId", version_id) if version_id else None,
                               Tag("Code", error[0]), Tag("Message", error[1])))
            continue
        removed = next(done)
        if removed.locked:  # reported even when quiet: it is an error
            results.append(Tag("Error", Tag("Key", key), Tag("VersionId", version_id) if version_id else None,
                               Tag("Code", "AccessDenied"),
                               Tag("Message", "Access Denied because object protected by object lock.")))
            continue
        if quiet:
            continue
        fields = [Tag("Key", key), Tag("VersionId", version_id) if version_id is not None else None]
        if removed.marker is not None:
            fields += [Tag("DeleteMarker", True), Tag("DeleteMarkerVersionId", removed.marker.version_id)]
        elif removed.removed is not None and removed.removed.delete_marker:
            fields += [Tag("DeleteMarker", True), Tag("DeleteMarkerVersionId", removed.removed.version_id)]
        results.append(Tag("Deleted", fields))
    return Response(200, [("Content-Type", "application/xml")], document(Tag("DeleteResult", results)))


OBJECT_ATTRIBUTES = ("ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize")


async def get_object_attributes(ctx: Ctx) -> Response:
    """GetObjectAttributes: what ``x-amz-object-attributes`` asks of the version (the latest, or ``versionId``'s),
    without its body. ObjectParts lists the parts of a multipart object (number, size, and the part's checksum
    when the upload had a checksum algorithm), paged by ``x-amz-part-number-marker`` and ``x-amz-max-parts``."""
    from .xml import Tag, document

    raw = ctx.header("x-amz-object-attributes")
    asked = [a.strip() for a in (raw or "").split(",") if a.strip()]
    if not asked:
        raise S3Error("InvalidArgument", "The x-amz-object-attributes header specifying the attributes to be "
                                         "retrieved is either missing or empty",
                      ArgumentName="x-amz-object-attributes", ArgumentValue="")
    unknown = [a for a in asked if a not in OBJECT_ATTRIBUTES]
    if unknown:
        raise S3Error("InvalidArgument", "Invalid attribute name specified.",
                      ArgumentName="x-amz-object-attributes", ArgumentValue=unknown[0][:64])
    max_parts = params.uint(ctx.header("x-amz-max-parts") or "1000", 6)
    marker = params.uint(ctx.header("x-amz-part-number-marker") or "0", 6)
    if max_parts is None or marker is None:
        raise S3Error("InvalidArgument", "x-amz-max-parts and x-amz-part-number-marker must be integers")
    max_parts = min(max_parts, 1000)
    bucket, obj = await _current(ctx)
    envelope, _ = sse.open_envelope(ctx, obj.headers)  # an SSE-C object's attributes need its key too
    fields = []
    if "ETag" in asked:
        fields.append(Tag("ETag", obj.etag))
    if "Checksum" in asked and obj.checksums:
        fields.append(Tag("Checksum", [Tag(f"Checksum{a}", v) for a, v in obj.checksums]))
    if "ObjectParts" in asked and obj.parts:
        numbered = [(i + 1, size) for i, size in enumerate(obj.parts) if i + 1 > marker]
        page = numbered[:max_parts]
        truncated = len(numbered) > max_parts
        algorithm = obj.checksums[0][0] if obj.part_checksums and obj.checksums else None

        def part_tag(n: int, size: int) -> Tag:
            checksum = [Tag(f"Checksum{algorithm}", obj.part_checksums[n - 1])] if algorithm else []
            return Tag("Part", [Tag("PartNumber", n), Tag("Size", size), *checksum])

        fields.append(Tag("ObjectParts", Tag("PartsCount", len(obj.parts)), Tag("PartNumberMarker", marker),
                          Tag("NextPartNumberMarker", page[-1][0] if page else marker), Tag("MaxParts", max_parts),
                          Tag("IsTruncated", truncated), [part_tag(n, size) for n, size in page]))
    if "StorageClass" in asked:
        fields.append(Tag("StorageClass", "STANDARD"))
    if "ObjectSize" in asked:
        fields.append(Tag("ObjectSize", obj.size))
    headers = [("Content-Type", "application/xml"), ("Last-Modified", http_date(obj.last_modified)),
               *version_header(bucket, obj.version_id), *sse.response_headers(envelope)]
    return Response(200, headers, document(Tag("GetObjectAttributesResponse", fields)))
