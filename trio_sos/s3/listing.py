"""ListObjects (v1) and ListObjectsV2, on top of the MetaStore's ``list_objects``.

Common prefixes are skipped whole: once a key rolls up into prefix P, the backend seeks to the smallest key above
every key starting with P (``meta/keys.py``), so a page costs about as many rows as it has entries, whatever the
bucket holds — one anonymous listing of a public bucket cannot make the node read it all.
"""

from __future__ import annotations

import base64
import binascii
import time
from urllib.parse import quote

from ..http.server import Response
from ..meta.store import ListedObject, ObjectListing
from . import params
from .context import Ctx
from .errors import S3Error
from .xml import Raw, Tag, document, needs_escape, text

MAX_KEYS = 1000


async def collect(ctx: Ctx, *, prefix: str, delimiter: str, marker: str, max_keys: int) -> ObjectListing:
    """Entries (keys and common prefixes) strictly above ``marker``, in order, at most ``max_keys``: the
    MetaStore's ``list_objects``, whose cost follows the page (a common prefix costs one seek)."""
    assert ctx.bucket is not None
    return await ctx.meta.list_objects(ctx.bucket, prefix=prefix, delimiter=delimiter, marker=marker,
                                       limit=max_keys)


def _max_keys(ctx: Ctx) -> int:
    raw = ctx.query.get("max-keys", str(MAX_KEYS))
    value = params.sint(raw)
    if value is None or value > params.INT32_MAX:
        raise S3Error("InvalidArgument", "Provided max-keys not an integer or within integer range",
                      ArgumentName="max-keys", ArgumentValue=raw[:256])
    if value < 0:
        raise S3Error("InvalidArgument", "Argument maxKeys must be an integer between 0 and 2147483647",
                      ArgumentName="max-keys", ArgumentValue=raw)
    return min(value, MAX_KEYS)


def _same(value: str) -> str:
    return value


def _encoder(ctx: Ctx):
    encoding = ctx.query.get("encoding-type")
    if encoding is None:
        return _same
    if encoding != "url":
        raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request",
                      ArgumentName="encoding-type", ArgumentValue=encoding)
    return lambda s: quote(s, safe="/")


async def _contents(ctx: Ctx, objs: tuple[ListedObject, ...], enc, owner: bool) -> Raw:
    """The page's <Contents> elements, rendered in one pass (a listing's cost is mostly here: one f-string per
    key; the timestamps of one second share their formatting). Keys and ETags are escaped one by one only when the
    page's keys (or ETags) hold a character that needs it: one search over the page finds out."""
    names: dict[str, str] = {}
    seconds: dict[int, str] = {}
    out = []
    keys = [obj.key for obj in objs] if enc is _same else [enc(obj.key) for obj in objs]
    if needs_escape("".join(keys)):
        keys = [text(key) for key in keys]
    etag_text = text if needs_escape("".join([obj.etag for obj in objs])) else _same
    for key, (_bucket, _key, _version, size, etag, ts, owner_id) in zip(keys, objs, strict=True):
        owner_xml = ""
        if owner:
            if owner_id not in names:
                user = await ctx.services.user_by_id(owner_id)
                names[owner_id] = user.display_name if user else owner_id
            owner_xml = (f"<Owner><ID>{text(owner_id)}</ID>"
                         f"<DisplayName>{text(names[owner_id])}</DisplayName></Owner>")
        whole = int(ts)
        stamp = seconds.get(whole)
        if stamp is None:
            stamp = seconds[whole] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        out.append(f"<Contents><Key>{key}</Key><LastModified>{stamp}.{int(ts * 1000) % 1000:03d}Z"
                   f"</LastModified><ETag>\"{etag_text(etag)}\"</ETag><Size>{size}</Size>{owner_xml}"
                   f"<StorageClass>STANDARD</StorageClass></Contents>")
    return Raw("".join(out))


def _prefix_tags(prefixes: tuple[str, ...], enc) -> list[Tag]:
    return [Tag("CommonPrefixes", Tag("Prefix", enc(p))) for p in prefixes]


async def list_objects_v1(ctx: Ctx) -> Response:
    await ctx.bucket_for("READ")
    prefix, delimiter = ctx.query.get("prefix", ""), ctx.query.get("delimiter", "")
    marker, max_keys, enc = ctx.query.get("marker", ""), _max_keys(ctx), _encoder(ctx)
    listed = await collect(ctx, prefix=prefix, delimiter=delimiter, marker=marker, max_keys=max_keys)
    body = document(Tag(
        "ListBucketResult",
        Tag("Name", ctx.bucket), Tag("Prefix", enc(prefix)), Tag("Marker", enc(marker)),
        Tag("MaxKeys", max_keys),
        Tag("Delimiter", enc(delimiter)) if delimiter else None,
        Tag("EncodingType", "url") if "encoding-type" in ctx.query else None,
        Tag("IsTruncated", listed.truncated),
        Tag("NextMarker", enc(listed.last)) if listed.truncated and delimiter else None,
        await _contents(ctx, listed.objects, enc, owner=True),
        _prefix_tags(listed.prefixes, enc),
    ))
    return Response(200, [("Content-Type", "application/xml")], body)


def _token(last: str) -> str:
    return base64.urlsafe_b64encode(last.encode("utf-8")).decode("ascii")


def _untoken(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode("ascii")).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        raise S3Error("InvalidArgument", "The continuation token provided is incorrect",
                      ArgumentName="continuation-token", ArgumentValue=token) from None


async def list_objects_v2(ctx: Ctx) -> Response:
    await ctx.bucket_for("READ")
    prefix, delimiter = ctx.query.get("prefix", ""), ctx.query.get("delimiter", "")
    max_keys, enc = _max_keys(ctx), _encoder(ctx)
    token = ctx.query.get("continuation-token")
    start_after = ctx.query.get("start-after", "")
    marker = _untoken(token) if token is not None else start_after
    if token is not None and start_after > marker:
        marker = start_after
    fetch_owner = ctx.query.get("fetch-owner", "false").lower() == "true"
    listed = await collect(ctx, prefix=prefix, delimiter=delimiter, marker=marker, max_keys=max_keys)
    body = document(Tag(
        "ListBucketResult",
        Tag("Name", ctx.bucket), Tag("Prefix", enc(prefix)),
        Tag("Delimiter", enc(delimiter)) if delimiter else None,
        Tag("MaxKeys", max_keys),
        Tag("EncodingType", "url") if "encoding-type" in ctx.query else None,
        Tag("KeyCount", len(listed.objects) + len(listed.prefixes)),
        Tag("IsTruncated", listed.truncated),
        Tag("ContinuationToken", token) if token is not None else None,
        Tag("NextContinuationToken", _token(listed.last)) if listed.truncated else None,
        Tag("StartAfter", enc(start_after)) if "start-after" in ctx.query else None,
        await _contents(ctx, listed.objects, enc, owner=fetch_owner),
        _prefix_tags(listed.prefixes, enc),
    ))
    return Response(200, [("Content-Type", "application/xml")], body)
