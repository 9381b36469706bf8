"""Bucket operations: ListBuckets, CreateBucket, HeadBucket, DeleteBucket, GetBucketLocation."""

from __future__ import annotations

import hashlib
import ipaddress
import re
import time

import attrs

from ..http.server import Response
from ..meta import store as m
from .context import Ctx
from .errors import S3Error
from .xml import Tag, child_text, document, local, parse

_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
MAX_XML_BODY = 64 * 1024


def iso8601(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def check_bucket_name(name: str) -> None:
    """S3's naming rules for new buckets (general purpose buckets)."""
    ok = bool(_NAME.match(name)) and ".." not in name and ".-" not in name and "-." not in name
    try:
        ipaddress.IPv4Address(name)
        ok = False
    except ValueError:
        pass
    for prefix in ("xn--", "sthree-"):
        ok = ok and not name.startswith(prefix)
    for suffix in ("-s3alias", "--ol-s3", ".mrap", "--x-s3"):
        ok = ok and not name.endswith(suffix)
    if not ok:
        raise S3Error("InvalidBucketName", BucketName=name)


async def read_document(ctx: Ctx, limit: int = MAX_XML_BODY) -> bytes:
    """A small request body (an XML document), checked against the signed payload hash."""
    body = await ctx.read_body(limit)
    if ctx.verified is not None and len(ctx.verified.payload_hash) == 64:
        if hashlib.sha256(body).hexdigest() != ctx.verified.payload_hash:
            raise S3Error("XAmzContentSHA256Mismatch",
                          ClientComputedContentSHA256=ctx.verified.payload_hash,
                          S3ComputedContentSHA256=hashlib.sha256(body).hexdigest())
    return body


def owner_tag(user_id: str, display_name: str) -> Tag:
    return Tag("Owner", Tag("ID", user_id), Tag("DisplayName", display_name))


async def list_buckets(ctx: Ctx) -> Response:
    from .access import service_allowed

    if ctx.user is None:
        raise S3Error("AccessDenied", "Anonymous users cannot list buckets")
    if not service_allowed(ctx, "s3:ListAllMyBuckets", "arn:aws:s3:::*"):
        raise S3Error("AccessDenied")
    owned = await ctx.meta.list_buckets(ctx.user.id)
    body = document(Tag(
        "ListAllMyBucketsResult",
        owner_tag(ctx.user.id, ctx.user.display_name),
        Tag("Buckets", [Tag("Bucket", Tag("Name", b.name), Tag("CreationDate", iso8601(b.created)))
                        for b in owned]),
    ))
    return Response(200, [("Content-Type", "application/xml")], body)


async def create_bucket(ctx: Ctx) -> Response:
    from .access import new_resource_acl, service_allowed

    assert ctx.bucket is not None
    if ctx.user is None:
        raise S3Error("AccessDenied", "Anonymous users cannot create buckets")
    check_bucket_name(ctx.bucket)
    if not service_allowed(ctx, "s3:CreateBucket", f"arn:aws:s3:::{ctx.bucket}"):
        raise S3Error("AccessDenied")
    region = ctx.services.config.region
    body = await read_document(ctx)
    if body.strip():
        root = parse(body)
        if local(root.tag) != "CreateBucketConfiguration":
            raise S3Error("MalformedXML")
        constraint = child_text(root, "LocationConstraint")
        if constraint and constraint != region:
            raise S3Error("InvalidLocationConstraint",
                          f"The {constraint} location constraint is incompatible with the region of this "
                          f"endpoint ({region}).", LocationConstraint=constraint)
    lock = (ctx.header("x-amz-bucket-object-lock-enabled") or "").strip().lower()
    if lock not in ("", "true", "false"):
        raise S3Error("InvalidArgument", "x-amz-bucket-object-lock-enabled must be true or false",
                      ArgumentName="x-amz-bucket-object-lock-enabled", ArgumentValue=lock[:16])
    # object lock enabled at creation: versioning Enabled with it, for good (it cannot be suspended)
    versioning, object_lock = ("Enabled", "{}") if lock == "true" else ("", "")
    from . import acl as acls
    from .bucketaccess import check_ownership

    ownership = ctx.header("x-amz-object-ownership")
    try:
        acl = await new_resource_acl(ctx, ctx.user.id)
        if ownership is not None:
            check_ownership(ownership.strip(), acls.effective(acl, ctx.user.id, ""), argument=True)
        await ctx.meta.create_bucket(m.Bucket(ctx.bucket, ctx.user.id, time.time(), region, acl=acl,
                                              versioning=versioning, object_lock=object_lock,
                                              ownership=(ownership or "").strip()))
    except m.BucketAlreadyExists as exc:
        if exc.owner_id != ctx.user.id:
            raise S3Error("BucketAlreadyExists", BucketName=ctx.bucket) from None
        if region != "us-east-1":
            raise S3Error("BucketAlreadyOwnedByYou", BucketName=ctx.bucket) from None
        # S3's legacy behaviour in us-east-1, which tools rely on ("create if missing"): 200 OK, and the bucket's
        # ACL is reset to what this request asks for (private by default).
        existing = await ctx.meta.get_bucket(ctx.bucket)
        if existing is not None and existing.owner_id == ctx.user.id and service_allowed(
                ctx, "s3:PutBucketAcl", f"arn:aws:s3:::{ctx.bucket}"):
            try:
                await ctx.meta.update_bucket(attrs.evolve(existing, acl=acl))
            except m.NoSuchBucket:
                pass  # deleted meanwhile: nothing to reset
    return Response(200, [("Location", f"/{ctx.bucket}")], b"")


async def head_bucket(ctx: Ctx) -> Response:
    bucket = await ctx.bucket_for("READ")
    return Response(200, [("x-amz-bucket-region", bucket.region)], b"")


async def delete_bucket(ctx: Ctx) -> Response:
    await ctx.bucket_for("OWNER")
    try:
        await ctx.meta.delete_bucket(ctx.bucket or "")
    except m.BucketNotEmpty:
        raise S3Error("BucketNotEmpty", BucketName=ctx.bucket or "") from None
    except m.NoSuchBucket:
        raise S3Error("NoSuchBucket", BucketName=ctx.bucket or "") from None
    return Response(204, [], b"")


async def get_bucket_location(ctx: Ctx) -> Response:
    bucket = await ctx.bucket_for("OWNER")
    # us-east-1 is reported as an empty LocationConstraint, as S3 does
    region = "" if bucket.region == "us-east-1" else bucket.region
    return Response(200, [("Content-Type", "application/xml")], document(Tag("LocationConstraint", region)))
