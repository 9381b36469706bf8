"""Object tagging (Put/Get/DeleteObjectTagging of any version, x-amz-tagging on uploads)."""

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


def check_tags(tags: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    if len(tags) > MAX_TAGS:
        raise S3Error("BadRequest", "Object tags cannot be greater than 10", status=400)
    keys = [k for k, _ in tags]
    if len(set(keys)) != len(keys):
        raise S3Error("InvalidTag", "Cannot provide multiple Tags with the same key", status=400)
    for key, value in tags:
        if not key or len(key) > 128 or len(value) > 256:
            raise S3Error("InvalidTag", "The TagKey you have provided is invalid" if not key or len(key) > 128
                          else "The TagValue you have provided is invalid", status=400)
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
    body = document(Tag("Tagging", Tag("TagSet", [Tag("Tag", Tag("Key", k), Tag("Value", v))
                                                  for k, v in obj.tags])))
    return Response(200, [("Content-Type", "application/xml"), *version_header(bucket, obj.version_id)], body)


async def put_object_tagging(ctx: Ctx) -> Response:
    from .access import named_object

    await ctx.bucket_for("WRITE")
    bucket, obj = await named_object(ctx)
    root = parse(await read_document(ctx))
    if local(root.tag) != "Tagging":
        raise S3Error("MalformedXML")
    tags = []
    for tag_set in root:
        if local(tag_set.tag) != "TagSet":
            raise S3Error("MalformedXML")
        for node in tag_set:
            key, value = child_text(node, "Key"), child_text(node, "Value")
            if local(node.tag) != "Tag" or key is None or value is None:
                raise S3Error("MalformedXML")
            tags.append((key, value))
    await _update(ctx, obj, check_tags(tags))
    return Response(200, version_header(bucket, obj.version_id), b"")


async def delete_object_tagging(ctx: Ctx) -> Response:
    from .access import named_object

    await ctx.bucket_for("WRITE")
    bucket, obj = await named_object(ctx)
    await _update(ctx, obj, ())
    return Response(204, version_header(bucket, obj.version_id), b"")
