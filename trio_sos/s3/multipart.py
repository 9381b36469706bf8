"""Multipart uploads: CreateMultipartUpload, UploadPart, UploadPartCopy, CompleteMultipartUpload,
AbortMultipartUpload, ListParts, ListMultipartUploads.

Completing an upload copies no byte: the object's manifest is the concatenation of its parts' chunk manifests,
committed in one metadata step that also queues the chunks of unused parts for garbage collection.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time

from awscrt import checksums as crt

from ..data.checksums import SUPPORTED, b64, new_hasher

from ..http.server import Response
from ..meta import store as m
from .buckets import iso8601, owner_tag, read_document
from . import params
from .context import Ctx
from .copy import copied_body, copy_source, parse_copy_source, source_version_header
from . import objectlock, sse
from ..data import sse as crypto
from .versioning import version_header
from .errors import S3Error
from .objects import check_upload_headers, committing, object_fields, store_body
from .xml import Tag, child_text, document, local, parse

MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PART_SIZE = 5 * 1024**3
MAX_PARTS = 10000
MAX_COMPLETE_BODY = 2 * 1024 * 1024


def new_upload_id() -> str:
    # Time first, so that upload ids of one key sort in creation order (ListMultipartUploads' upload-id-marker
    # compares ids, while uploads of a key are listed by initiation time).
    return f"{time.time_ns():016x}{os.urandom(12).hex()}"


def _part_number(ctx: Ctx) -> int:
    raw = ctx.query.get("partNumber", "")
    number = params.uint(raw, 5)
    if number is None or not 1 <= number <= MAX_PARTS:
        raise S3Error("InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive",
                      ArgumentName="partNumber", ArgumentValue=raw)
    return number


async def _upload(ctx: Ctx) -> m.Upload:
    assert ctx.bucket is not None
    upload_id = ctx.query.get("uploadId", "")
    upload = await ctx.meta.get_upload(ctx.bucket, upload_id) if upload_id else None
    if upload is None or upload.key != ctx.key:
        raise S3Error("NoSuchUpload", UploadId=upload_id)
    return upload


async def create_multipart_upload(ctx: Ctx) -> Response:
    from .access import new_resource_acl, owner_of_new_object

    assert ctx.bucket is not None and ctx.key is not None
    bucket = await ctx.bucket_for("WRITE")
    owner = owner_of_new_object(ctx, bucket)
    fields = object_fields(ctx)
    lock = objectlock.upload_lock_pairs(objectlock.lock_fields(ctx, bucket))
    # one data key for every part of the upload (each part's segments get their own random nonces)
    envelope, _ = sse.seal(ctx, sse.wanted(ctx, bucket))
    upload = m.Upload(bucket=ctx.bucket, key=ctx.key, upload_id=new_upload_id(), initiated=time.time(),
                      owner_id=owner, acl=await new_resource_acl(ctx, owner, bucket),
                      content_type=fields["content_type"],
                      headers=crypto.with_envelope(fields["headers"] + lock, envelope),
                      user_meta=fields["user_meta"], tags=fields["tags"],
                      checksum_algorithm=_checksum_spec(ctx))
    try:
        await ctx.meta.create_upload(upload, bucket_id=bucket.id)
    except m.NoSuchBucket:
        raise S3Error("NoSuchBucket", BucketName=ctx.bucket) from None
    body = document(Tag("InitiateMultipartUploadResult", Tag("Bucket", ctx.bucket), Tag("Key", ctx.key),
                        Tag("UploadId", upload.upload_id)))
    headers = [("Content-Type", "application/xml"), *sse.response_headers(envelope)]
    if upload.checksum_algorithm:
        algorithm, kind = upload.checksum_algorithm.split(":")
        headers += [("x-amz-checksum-algorithm", algorithm), ("x-amz-checksum-type", kind)]
    return Response(200, headers, body)


def _checksum_spec(ctx: Ctx) -> str:
    """``ALGORITHM:TYPE`` for an upload that asked for checksums (x-amz-checksum-algorithm, x-amz-checksum-type),
    or "". S3's defaults: FULL_OBJECT for CRC64NVME, COMPOSITE for the others; SHA digests cannot be combined
    into a full-object one."""
    algorithm = (ctx.header("x-amz-checksum-algorithm") or "").strip().upper()
    kind = (ctx.header("x-amz-checksum-type") or "").strip().upper()
    if not algorithm:
        if kind:
            raise S3Error("InvalidRequest", "The x-amz-checksum-type header can only be used with the "
                                            "x-amz-checksum-algorithm header.")
        return ""
    if algorithm not in SUPPORTED:
        raise S3Error("InvalidRequest", "Checksum algorithm provided is unsupported. Please try again with any of "
                                        "the valid types: [CRC32, CRC32C, CRC64NVME, SHA1, SHA256]")
    kind = kind or ("FULL_OBJECT" if algorithm == "CRC64NVME" else "COMPOSITE")
    if kind not in ("COMPOSITE", "FULL_OBJECT") or (kind == "FULL_OBJECT" and algorithm.startswith("SHA")) or \
            (kind == "COMPOSITE" and algorithm == "CRC64NVME"):
        raise S3Error("InvalidRequest", f"The {kind} checksum type cannot be used with the "
                                        f"{algorithm.lower()} checksum algorithm.")
    return f"{algorithm}:{kind}"


def _part_checksum_algorithm(upload: m.Upload) -> str | None:
    return upload.checksum_algorithm.split(":")[0] if upload.checksum_algorithm else None


def _part_checksums(upload: m.Upload, parts: list[m.Part]) -> tuple[str, ...]:
    """Each part's checksum of the upload's algorithm, kept with the object (GetObjectAttributes, partNumber
    reads); none unless every part has one."""
    algorithm = _part_checksum_algorithm(upload)
    sums = [dict(p.checksums).get(algorithm) for p in parts] if algorithm else []
    return tuple(s for s in sums if s is not None) if sums and all(sums) else ()


def combined_checksum(spec: str, parts: list[m.Part]) -> tuple[str, str] | None:
    """The object checksum of a completed upload: COMPOSITE = the algorithm over the parts' digests, "-N";
    FULL_OBJECT = the CRC of the whole object, combined from the parts' CRCs (awscrt's combine)."""
    if not spec:
        return None
    algorithm, kind = spec.split(":")
    digests = []
    for part in parts:
        value = dict(part.checksums).get(algorithm)
        if value is None:
            return None  # a part stored before the algorithm applied: no object checksum, rather than a wrong one
        digests.append(base64.b64decode(value))
    if kind == "COMPOSITE":
        hasher = new_hasher(algorithm)
        for digest in digests:
            hasher.update(digest)
        return algorithm, f"{b64(hasher.digest())}-{len(parts)}"
    combine = {"CRC32": crt.combine_crc32, "CRC32C": crt.combine_crc32c, "CRC64NVME": crt.combine_crc64nvme}[algorithm]
    width = len(digests[0])
    crc = int.from_bytes(digests[0], "big")
    for digest, part in zip(digests[1:], parts[1:], strict=True):
        crc = combine(crc, int.from_bytes(digest, "big"), part.size)
    return algorithm, b64(crc.to_bytes(width, "big"))


async def _commit_part(ctx: Ctx, upload: m.Upload, number: int, stored) -> m.Part:
    part = m.Part(upload.upload_id, number, stored.written.size, stored.etag, time.time(),
                  stored.written.manifest, stored.checksums)
    async with committing(ctx, stored):
        try:
            await ctx.meta.put_part(part, gc_delay=ctx.services.config.gc_delay,
                                    intent_id=stored.written.intent_id)
        except m.NoSuchUpload:
            raise S3Error("NoSuchUpload", UploadId=upload.upload_id) from None
    return part


async def upload_part(ctx: Ctx) -> Response:
    await ctx.bucket_for("WRITE")
    number = _part_number(ctx)
    upload = await _upload(ctx)
    check_upload_headers(ctx, MAX_PART_SIZE)
    envelope, data_key = sse.open_envelope(ctx, upload.headers)  # every part with the upload's SSE-C key
    stored = await store_body(ctx, max_size=MAX_PART_SIZE, algorithm=_part_checksum_algorithm(upload),
                              inline=False, envelope=envelope, data_key=data_key)
    part = await _commit_part(ctx, upload, number, stored)
    headers = [("ETag", f'"{part.etag}"'), *sse.response_headers(envelope)]
    headers += [(f"x-amz-checksum-{a.lower()}", v) for a, v in part.checksums]
    return Response(200, headers, b"")


async def upload_part_copy(ctx: Ctx) -> Response:
    await ctx.bucket_for("WRITE")
    number = _part_number(ctx)
    upload = await _upload(ctx)
    source, start, end = await copy_source(ctx, allow_range=True, max_size=MAX_PART_SIZE)
    source_envelope, source_key = sse.open_envelope(ctx, source.headers, prefix=sse.COPY_CUSTOMER)
    envelope, data_key = sse.open_envelope(ctx, upload.headers)
    stored = await copied_body(ctx, source, start, end, max_size=MAX_PART_SIZE,
                               algorithm=_part_checksum_algorithm(upload), md5=True, inline=False,
                               source_key=source_key, envelope=envelope, data_key=data_key)
    part = await _commit_part(ctx, upload, number, stored)
    body = document(Tag("CopyPartResult", Tag("LastModified", iso8601(part.last_modified)),
                        Tag("ETag", f'"{part.etag}"')))
    source_bucket = parse_copy_source(ctx.header("x-amz-copy-source") or "")[0]
    return Response(200, [("Content-Type", "application/xml"),
                          *await source_version_header(ctx, source_bucket, source),
                          *sse.response_headers(envelope)], body)


def _requested_parts(body: bytes) -> list[tuple[int, str, dict[str, str]]]:
    root = parse(body)
    if local(root.tag) != "CompleteMultipartUpload":
        raise S3Error("MalformedXML")
    parts = []
    for node in root:
        if local(node.tag) != "Part":
            continue
        raw, etag = child_text(node, "PartNumber"), child_text(node, "ETag")
        number = params.uint(raw.strip(), 10) if raw is not None else None
        if number is None or etag is None:
            raise S3Error("MalformedXML")
        sums = {local(c.tag)[len("Checksum"):].upper(): (c.text or "").strip() for c in node
                if local(c.tag).startswith("Checksum") and local(c.tag) != "ChecksumType"}
        parts.append((number, etag.strip().strip('"'), sums))
    if not parts:
        raise S3Error("MalformedXML", "You must specify at least one part")
    return parts


def _requested_etag(requested: list[tuple[int, str, dict[str, str]]]) -> str | None:
    """The ETag a completion of these parts gives (MD5 of the parts' MD5s, "-N"), from the request alone."""
    try:
        digests = b"".join(bytes.fromhex(etag) for _, etag, _ in requested)
    except ValueError:
        return None
    return hashlib.md5(digests).hexdigest() + f"-{len(requested)}"


async def _complete_result(ctx: Ctx, etag: str, checksums: tuple[tuple[str, str], ...], spec: str,
                           version_id: str, extra: list[tuple[str, str]] | None = None) -> Response:
    checksum_tags = [Tag(f"Checksum{a}", v) for a, v in checksums]
    if checksums and spec:
        checksum_tags.append(Tag("ChecksumType", spec.split(":")[1]))
    body = document(Tag("CompleteMultipartUploadResult", Tag("Location", f"/{ctx.bucket}/{ctx.key}"),
                        Tag("Bucket", ctx.bucket), Tag("Key", ctx.key), Tag("ETag", f'"{etag}"'), checksum_tags))
    bucket = await ctx.bucket_for(None)
    return Response(200, [("Content-Type", "application/xml"), *version_header(bucket, version_id), *(extra or [])],
                    body)


async def _completed_already(ctx: Ctx, upload_id: str, requested: list[tuple[int, str, dict[str, str]]]
                             ) -> Response:
    """A CompleteMultipartUpload for an upload that is no longer open: if it was completed with these very parts
    (a client retrying after a timeout), the same answer as the first time; else NoSuchUpload."""
    assert ctx.bucket is not None
    done = await ctx.meta.completed_upload(ctx.bucket, upload_id) if upload_id else None
    if done is not None and done.key == ctx.key and _requested_etag(requested) == done.etag:
        return await _complete_result(ctx, done.etag, done.checksums, done.checksum_algorithm, done.version_id)
    raise S3Error("NoSuchUpload", UploadId=upload_id)


async def complete_multipart_upload(ctx: Ctx) -> Response:
    assert ctx.bucket is not None and ctx.key is not None
    await ctx.bucket_for("WRITE")
    upload_id = ctx.query.get("uploadId", "")
    upload = await ctx.meta.get_upload(ctx.bucket, upload_id) if upload_id else None
    if upload is not None and upload.key != ctx.key:
        upload = None
    requested = _requested_parts(await read_document(ctx, MAX_COMPLETE_BODY))
    if upload is None:
        return await _completed_already(ctx, upload_id, requested)
    numbers = [n for n, _, _ in requested]
    # Strictly ascending, as AWS documents the list ("in ascending order by part number"): a part named twice is
    # out of order too. A number outside 1..10,000 names no uploaded part: InvalidPart below.
    if any(b <= a for a, b in zip(numbers, numbers[1:], strict=False)):
        raise S3Error("InvalidPartOrder", "The list of parts was not in ascending order. The parts list must be "
                                          "specified in order by part number.", UploadId=upload.upload_id)
    stored: dict[int, m.Part] = {}
    marker = 0
    while True:
        page, more = await ctx.meta.list_parts(upload.upload_id, marker=marker, limit=1000)
        stored.update((p.number, p) for p in page)
        if not more or not page:
            break
        marker = page[-1].number
    parts: list[m.Part] = []
    for i, (number, etag, sums) in enumerate(requested):
        part = stored.get(number)
        mismatch = part is not None and any(dict(part.checksums).get(a) != v for a, v in sums.items())
        if part is None or part.etag != etag or mismatch:
            raise S3Error("InvalidPart", "One or more of the specified parts could not be found. The part may not "
                                         "have been uploaded, or the specified entity tag may not match the part's "
                                         "entity tag.", UploadId=upload.upload_id, PartNumber=str(number),
                          ETag=etag)
        if i < len(requested) - 1 and part.size < MIN_PART_SIZE:
            raise S3Error("EntityTooSmall", "Your proposed upload is smaller than the minimum allowed object size.",
                          ProposedSize=str(part.size), MinSizeAllowed=str(MIN_PART_SIZE), PartNumber=str(number),
                          ETag=etag)
        parts.append(part)
    etag = hashlib.md5(b"".join(bytes.fromhex(p.etag) for p in parts)).hexdigest() + f"-{len(parts)}"
    stored_headers, lock = objectlock.from_upload_pairs(upload.headers)
    obj = m.ObjectVersion(
        bucket=ctx.bucket, key=ctx.key, version_id="null", size=sum(p.size for p in parts), etag=etag,
        last_modified=time.time(), owner_id=upload.owner_id,
        manifest=tuple(ref for p in parts for ref in p.manifest), content_type=upload.content_type,
        headers=stored_headers, user_meta=upload.user_meta, acl=upload.acl, tags=upload.tags,
        parts=tuple(p.size for p in parts), **lock,
        checksums=(combined,) if (combined := combined_checksum(upload.checksum_algorithm, parts)) else (),
        part_checksums=_part_checksums(upload, parts),
    )
    try:
        done = await ctx.meta.complete_upload(upload.upload_id, obj, numbers, gc_delay=ctx.services.config.gc_delay)
    except m.NoSuchUpload:  # completed (or aborted) by a concurrent request meanwhile
        return await _completed_already(ctx, upload.upload_id, requested)
    except m.ObjectLocked:  # it would replace a locked null version in place
        raise objectlock.locked_error() from None
    return await _complete_result(ctx, etag, obj.checksums, upload.checksum_algorithm, done.version.version_id,
                                  sse.response_headers(crypto.envelope_of(upload.headers)))


async def abort_multipart_upload(ctx: Ctx) -> Response:
    await ctx.bucket_for("WRITE")
    upload = await _upload(ctx)
    try:
        await ctx.meta.abort_upload(upload.upload_id, gc_delay=0.0)
    except m.NoSuchUpload:
        raise S3Error("NoSuchUpload", UploadId=upload.upload_id) from None
    return Response(204, [], b"")


def _int_param(ctx: Ctx, name: str, default: int, high: int) -> int:
    """A count or marker in the query: an integer 0..2**31-1 (S3's range), capped at ``high``."""
    raw = ctx.query.get(name)
    if raw is None:
        return default
    value = params.uint(raw)
    if value is None or value > params.INT32_MAX:
        raise S3Error("InvalidArgument", f"Provided {name} not an integer or within integer range",
                      ArgumentName=name, ArgumentValue=raw[:256])
    return min(value, high)


async def list_parts(ctx: Ctx) -> Response:
    await ctx.bucket_for("WRITE")
    upload = await _upload(ctx)
    marker = _int_param(ctx, "part-number-marker", 0, MAX_PARTS)
    limit = _int_param(ctx, "max-parts", 1000, 1000)
    parts, truncated = (await ctx.meta.list_parts(upload.upload_id, marker=marker, limit=limit)) if limit else \
        ([], False)
    owner = await ctx.services.user_by_id(upload.owner_id)
    name = owner.display_name if owner else upload.owner_id
    body = document(Tag(
        "ListPartsResult",
        Tag("Bucket", ctx.bucket), Tag("Key", ctx.key), Tag("UploadId", upload.upload_id),
        Tag("Initiator", Tag("ID", upload.owner_id), Tag("DisplayName", name)),
        owner_tag(upload.owner_id, name), Tag("StorageClass", "STANDARD"),
        Tag("PartNumberMarker", marker), Tag("NextPartNumberMarker", parts[-1].number if parts else marker),
        Tag("MaxParts", limit), Tag("IsTruncated", truncated),
        [Tag("Part", Tag("PartNumber", p.number), Tag("LastModified", iso8601(p.last_modified)),
             Tag("ETag", f'"{p.etag}"'), Tag("Size", p.size),
             [Tag(f"Checksum{a}", v) for a, v in p.checksums]) for p in parts],
    ))
    return Response(200, [("Content-Type", "application/xml")], body)


async def list_multipart_uploads(ctx: Ctx) -> Response:
    """A page of uploads and common prefixes; the backend skips a common prefix with one seek, so the cost follows
    the page. ``encoding-type=url`` encodes every key, prefix and marker (a key may hold any character, control
    characters included, which XML 1.0 cannot carry)."""
    from .listing import _encoder

    assert ctx.bucket is not None
    await ctx.bucket_for("READ")
    prefix, delimiter = ctx.query.get("prefix", ""), ctx.query.get("delimiter", "")
    key_marker, id_marker = ctx.query.get("key-marker", ""), ctx.query.get("upload-id-marker", "")
    limit = _int_param(ctx, "max-uploads", 1000, 1000)
    enc = _encoder(ctx)
    page = await ctx.meta.list_upload_entries(ctx.bucket, prefix=prefix, delimiter=delimiter, key_marker=key_marker,
                                              upload_id_marker=id_marker if key_marker else "", limit=limit)
    names: dict[str, str] = {}
    for upload in page.uploads:
        if upload.owner_id not in names:
            user = await ctx.services.user_by_id(upload.owner_id)
            names[upload.owner_id] = user.display_name if user else upload.owner_id
    body = document(Tag(
        "ListMultipartUploadsResult",
        Tag("Bucket", ctx.bucket), Tag("KeyMarker", enc(key_marker)), Tag("UploadIdMarker", id_marker),
        Tag("NextKeyMarker", enc(page.next_key_marker) if page.truncated else None),
        Tag("NextUploadIdMarker", page.next_upload_id_marker if page.truncated else None),
        Tag("Prefix", enc(prefix)), Tag("Delimiter", enc(delimiter)) if delimiter else None,
        Tag("MaxUploads", limit),
        Tag("EncodingType", "url") if "encoding-type" in ctx.query else None,
        Tag("IsTruncated", page.truncated),
        [Tag("Upload", Tag("Key", enc(u.key)), Tag("UploadId", u.upload_id),
             Tag("Initiator", Tag("ID", u.owner_id), Tag("DisplayName", names[u.owner_id])),
             owner_tag(u.owner_id, names[u.owner_id]), Tag("StorageClass", "STANDARD"),
             Tag("Initiated", iso8601(u.initiated))) for u in page.uploads],
        [Tag("CommonPrefixes", Tag("Prefix", enc(p))) for p in page.prefixes],
    ))
    return Response(200, [("Content-Type", "application/xml")], body)
