"""Tagging: of objects (Put/Get/DeleteObjectTagging of any version, x-amz-tagging on uploads) and of buckets
(Put/Get/DeleteBucketTagging), with S3's limits: 10 tags on an object, 50 on a bucket, keys of 1–128 and values
of up to 256 characters, from S3's character set; no key twice; no ``aws:`` key (those are the system's)."""

from __future__ import annotations

from urllib.parse import parse_qsl, quote

from ..http.server import Response
from ..meta import store as m
from .buckets import read_document
from .context import Ctx
from .errors import S3Error
from .versioning import version_header
from .xml import Tag, child_text, document, local, parse

MAX_TAGS = 10
MAX_BUCKET_TAGS = 50
_TAG_PUNCTUATION = set(" _.:/=+-@")


def _allowed(text: str) -> bool:
    """S3's tag character set: letters, digits and white space of any script, and _ . : / = + - @."""
    return all(c.isalnum() or c.isspace() or c in _TAG_PUNCTUATION for c in text)


def check_tags(tags: list[tuple[str, str]], limit: int = MAX_TAGS) -> tuple[tuple[str, str], ...]:
    if len(tags) > limit:
        if limit == MAX_TAGS:
            raise S3Error("BadRequest", "Object tags cannot be greater than 10", status=400)
        raise S3Error("InvalidTag", "Bucket tag count cannot be greater than 50", status=400)
    keys = [k for k, _ in tags]
    if len(set(keys)) != len(keys):
        raise S3Error("InvalidTag", "Cannot provide multiple Tags with the same key", status=400)
    for key, value in tags:
        if not key or len(key) > 128 or not _allowed(key):
            raise S3Error("InvalidTag", "The TagKey you have provided is invalid", status=400, TagKey=key[:128])
        if len(value) > 256 or not _allowed(value):
            raise S3Error("InvalidTag", "The TagValue you have provided is invalid", status=400, TagKey=key)
        if key.lower().startswith("aws:"):
            raise S3Error("InvalidTag", "System tags cannot be added/updated by requester", status=400,
                          TagKey=key)
    return tuple(tags)


def tags_from_header(ctx: Ctx) -> tuple[tuple[str, str], ...]:
    """x-amz-tagging: a URL-encoded query string of tags."""
    raw = ctx.header("x-amz-tagging")
    if raw is None:
        return ()
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, strict_parsing=bool(raw), errors="strict")
    except (ValueError, UnicodeDecodeError):
        raise S3Error("InvalidArgument", "The header 'x-amz-tagging' shall be encoded as UTF-8 then URLEncoded URL "
                                         "query parameters without tag name duplicates.",
                      ArgumentName="x-amz-tagging", ArgumentValue=raw) from None
    return check_tags(pairs)


def request_tags(ctx: Ctx) -> tuple[tuple[str, str], ...] | None:
    """The tags a request asks for in x-amz-tagging (None without the header): policies' s3:RequestObjectTag."""
    if ctx.header("x-amz-tagging") is None:
        return None
    return tags_from_header(ctx)


def tagging_header(tags: tuple[tuple[str, str], ...]) -> str:
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in tags)


async def _update(ctx: Ctx, obj: m.ObjectVersion, tags: tuple[tuple[str, str], ...]) -> None:
    import attrs

    if not await ctx.meta.update_object(attrs.evolve(obj, tags=tags)):
        # the object changed under us: S3 would have applied it to the version it found; ask to retry
        raise S3Error("OperationAborted", "A conflicting conditional operation is currently in progress against "
                                          "this resource. Please try again.", status=409)


async def get_object_tagging(ctx: Ctx) -> Response:
    from .access import check_object, named_object

    bucket, obj = await named_object(ctx)
    check_object(ctx, obj, "READ")
    body = tagging_document(obj.tags)
    return Response(200, [("Content-Type", "application/xml"), *version_header(bucket, obj.version_id)], body)


def parse_tagging(raw: bytes) -> list[tuple[str, str]]:
    """A ``<Tagging><TagSet><Tag><Key/><Value/></Tag>...</TagSet></Tagging>`` document's pairs, in order."""
    root = parse(raw)
    if local(root.tag) != "Tagging" or len(root) != 1:
        raise S3Error("MalformedXML")
    tags = []
    for tag_set in root:
        if local(tag_set.tag) != "TagSet":
            raise S3Error("MalformedXML")
        for node in tag_set:
            key, value = child_text(node, "Key"), child_text(node, "Value")
            if local(node.tag) != "Tag" or key is None or value is None or len(node) != 2:
                raise S3Error("MalformedXML")
            tags.append((key, value))
    return tags


def tagging_document(tags: tuple[tuple[str, str], ...]) -> bytes:
    return document(Tag("Tagging", Tag("TagSet", [Tag("Tag", Tag("Key", k), Tag("Value", v)) for k, v in tags])))


async def put_object_tagging(ctx: Ctx) -> Response:
    from .access import named_object, request_keys

    await ctx.bucket_for("WRITE")
    bucket, obj = await named_object(ctx)
    tags = check_tags(parse_tagging(await read_document(ctx)))
    # decided again with the tags asked for (s3:RequestObjectTag/K, s3:RequestObjectTagKeys) and the object's own
    keys = request_keys(ctx)
    keys.update({f"s3:requestobjecttag/{k}": v for k, v in tags})
    keys["s3:requestobjecttagkeys"] = tuple(k for k, _ in tags)
    keys.update({f"s3:existingobjecttag/{k}": v for k, v in obj.tags})
    await ctx.bucket_for("WRITE")
    await _update(ctx, obj, tags)
    return Response(200, version_header(bucket, obj.version_id), b"")


async def delete_object_tagging(ctx: Ctx) -> Response:
    from .access import named_object

    await ctx.bucket_for("WRITE")
    bucket, obj = await named_object(ctx)
    await _update(ctx, obj, ())
    return Response(204, version_header(bucket, obj.version_id), b"")


# -- bucket tagging --


async def put_bucket_tagging(ctx: Ctx) -> Response:
    import attrs

    bucket = await ctx.bucket_for("OWNER")
    tags = check_tags(parse_tagging(await read_document(ctx)), MAX_BUCKET_TAGS)
    await ctx.meta.update_bucket(attrs.evolve(bucket, tags=tags))
    return Response(204, [], b"")


async def get_bucket_tagging(ctx: Ctx) -> Response:
    bucket = await ctx.bucket_for("OWNER")
    if not bucket.tags:
        raise S3Error("NoSuchTagSet", "The TagSet does not exist", status=404, BucketName=bucket.name)
    return Response(200, [("Content-Type", "application/xml")], tagging_document(bucket.tags))


async def delete_bucket_tagging(ctx: Ctx) -> Response:
    import attrs

    bucket = await ctx.bucket_for("OWNER")
    if bucket.tags:
        await ctx.meta.update_bucket(attrs.evolve(bucket, tags=()))
    return Response(204, [], b"")
