"""A bucket's access settings beside its ACL: the bucket policy (Put/Get/DeleteBucketPolicy,
GetBucketPolicyStatus; the language is ``policy.py``), the public access block (Put/Get/DeletePublicAccessBlock)
and object ownership (Put/Get/DeleteBucketOwnershipControls). What they do to each request is ``access.py``'s."""

from __future__ import annotations

import json

import attrs

from ..http.server import Response
from ..meta import store as m
from . import acl, policy
from .buckets import read_document
from .context import Ctx
from .errors import S3Error
from .xml import Tag, child_text, document, local, parse

OWNERSHIP = ("BucketOwnerEnforced", "BucketOwnerPreferred", "ObjectWriter")


@attrs.frozen
class PublicAccessBlock:
    block_public_acls: bool = False
    ignore_public_acls: bool = False
    block_public_policy: bool = False
    restrict_public_buckets: bool = False


_NAMES = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
_NONE = PublicAccessBlock()


def block(bucket: m.Bucket) -> PublicAccessBlock:
    """The bucket's public access block (all off when it has none)."""
    if not bucket.public_access:
        return _NONE
    return PublicAccessBlock(*json.loads(bucket.public_access))


async def _owned(ctx: Ctx) -> m.Bucket:
    """The request's bucket, for an operation only its owner may do (S3: 403 without the permission, 405 with it
    from outside the owner's account — which every other user is here)."""
    from .access import OWNER, allowed, bucket_for, caller_id, decide

    bucket = await bucket_for(ctx, None)
    if caller_id(ctx) == bucket.owner_id:
        if not allowed(ctx, bucket, OWNER, ctx.action, None):  # the policy's Deny (but of its own actions)
            raise S3Error("AccessDenied")
        return bucket
    if decide(ctx, bucket, ctx.action, None) == "Allow":
        raise S3Error("MethodNotAllowed", "The specified method is not allowed against this resource.",
                      Method=ctx.request.method, ResourceType="BUCKET")
    raise S3Error("AccessDenied")


async def _users(ctx: Ctx) -> set[str]:
    ids = {u.id for u in await ctx.meta.list_users()}
    return ids | {u.id for u in ctx.services.config.users}


# -- the bucket policy --

async def put_bucket_policy(ctx: Ctx) -> Response:
    bucket = await _owned(ctx)
    body = await read_document(ctx, 4 * policy.MAX_SIZE)
    users = await _users(ctx)
    try:
        parsed = policy.parse(body, bucket.name, users.__contains__)
    except policy.PolicyError as exc:
        raise S3Error("MalformedPolicy", str(exc)) from None
    if block(bucket).block_public_policy and policy.is_public(parsed):
        raise S3Error("AccessDenied", "User is not authorized to perform this action: the bucket's public access "
                                      "block (BlockPublicPolicy) refuses a public policy")
    await ctx.meta.update_bucket(attrs.evolve(bucket, policy=body.decode("utf-8")))
    return Response(204, [], b"")


async def get_bucket_policy(ctx: Ctx) -> Response:
    bucket = await _owned(ctx)
    if not bucket.policy:
        raise S3Error("NoSuchBucketPolicy", "The bucket policy does not exist", BucketName=bucket.name)
    return Response(200, [("Content-Type", "application/json")], bucket.policy.encode("utf-8"))


async def delete_bucket_policy(ctx: Ctx) -> Response:
    bucket = await _owned(ctx)
    if bucket.policy:
        await ctx.meta.update_bucket(attrs.evolve(bucket, policy=""))
    return Response(204, [], b"")


async def get_bucket_policy_status(ctx: Ctx) -> Response:
    from .access import OWNER, parsed_policy

    bucket = await ctx.bucket_for(OWNER)
    parsed = parsed_policy(bucket.policy, bucket.name) if bucket.policy else None
    if parsed is None:
        raise S3Error("NoSuchBucketPolicy", "The bucket policy does not exist", BucketName=bucket.name)
    public = policy.is_public(parsed)
    return Response(200, [("Content-Type", "application/xml")],
                    document(Tag("PolicyStatus", Tag("IsPublic", public))))


# -- the public access block --

def _flag(node, name: str) -> bool:
    text = child_text(node, name)
    if text is None:
        return False
    value = text.strip().lower()
    if value not in ("true", "false"):
        raise S3Error("MalformedXML")
    return value == "true"


async def put_public_access_block(ctx: Ctx) -> Response:
    bucket = await _owned(ctx)  # a safeguard of the owner's: never granted to others by the policy it guards
    root = parse(await read_document(ctx))
    if local(root.tag) != "PublicAccessBlockConfiguration" or any(local(c.tag) not in _NAMES for c in root):
        raise S3Error("MalformedXML")
    config = PublicAccessBlock(*(_flag(root, name) for name in _NAMES))
    await ctx.meta.update_bucket(attrs.evolve(bucket, public_access=json.dumps(list(attrs.astuple(config)))))
    return Response(200, [], b"")


async def get_public_access_block(ctx: Ctx) -> Response:
    bucket = await _owned(ctx)  # a safeguard of the owner's: never granted to others by the policy it guards
    if not bucket.public_access:
        raise S3Error("NoSuchPublicAccessBlockConfiguration", "The public access block configuration was not found",
                      BucketName=bucket.name)
    config = attrs.astuple(block(bucket))
    return Response(200, [("Content-Type", "application/xml")], document(Tag(
        "PublicAccessBlockConfiguration", [Tag(name, value) for name, value in zip(_NAMES, config, strict=True)])))


async def delete_public_access_block(ctx: Ctx) -> Response:
    bucket = await _owned(ctx)  # a safeguard of the owner's: never granted to others by the policy it guards
    if bucket.public_access:
        await ctx.meta.update_bucket(attrs.evolve(bucket, public_access=""))
    return Response(204, [], b"")


# -- object ownership --

def check_ownership(value: str, bucket_acl: acl.Policy | None, argument: bool = False) -> str:
    """A valid ObjectOwnership value; BucketOwnerEnforced refuses an ACL that grants anyone but the owner (S3:
    InvalidBucketAclWithObjectOwnership)."""
    if value not in OWNERSHIP:
        if argument:
            raise S3Error("InvalidArgument", "Invalid x-amz-object-ownership header", ArgumentName=
                          "x-amz-object-ownership", ArgumentValue=value[:64])
        raise S3Error("MalformedXML")
    if value == "BucketOwnerEnforced" and bucket_acl is not None and any(
            not (g.grantee.kind == acl.CANONICAL_USER and g.grantee.id == bucket_acl.owner_id)
            for g in bucket_acl.grants):
        raise S3Error("InvalidBucketAclWithObjectOwnership", "Bucket cannot have ACLs set with ObjectOwnership's "
                                                             "BucketOwnerEnforced setting")
    return value


async def put_bucket_ownership_controls(ctx: Ctx) -> Response:
    from .access import OWNER

    bucket = await ctx.bucket_for(OWNER)
    root = parse(await read_document(ctx))
    rules = [c for c in root if local(c.tag) == "Rule"]
    if local(root.tag) != "OwnershipControls" or len(rules) != 1 or len(list(root)) != 1:
        raise S3Error("MalformedXML")
    value = (child_text(rules[0], "ObjectOwnership") or "").strip()
    check_ownership(value, acl.effective(bucket.acl, bucket.owner_id, ""))
    await ctx.meta.update_bucket(attrs.evolve(bucket, ownership=value))
    return Response(200, [], b"")


async def get_bucket_ownership_controls(ctx: Ctx) -> Response:
    from .access import OWNER

    bucket = await ctx.bucket_for(OWNER)
    if not bucket.ownership:
        raise S3Error("OwnershipControlsNotFoundError", "The bucket ownership controls were not found",
                      BucketName=bucket.name)
    return Response(200, [("Content-Type", "application/xml")], document(Tag(
        "OwnershipControls", Tag("Rule", Tag("ObjectOwnership", bucket.ownership)))))


async def delete_bucket_ownership_controls(ctx: Ctx) -> Response:
    from .access import OWNER

    bucket = await ctx.bucket_for(OWNER)
    if bucket.ownership:
        await ctx.meta.update_bucket(attrs.evolve(bucket, ownership=""))
    return Response(204, [], b"")
