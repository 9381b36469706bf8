"""Who may do what: ACL checks on buckets and objects, the ACLs of new resources, and the ACL operations
(Get/PutBucketAcl, Get/PutObjectAcl).

Rules (S3's, for buckets without policies): a bucket's owner may do everything to the bucket; anyone else needs
the bucket ACL's grant (READ to list, WRITE to create, overwrite or delete objects, READ_ACP / WRITE_ACP for the
ACL itself). Reading an object, or its ACL, is decided by the object's own ACL, with its owner always allowed.
Anonymous callers are the AllUsers group; signed-in callers also AuthenticatedUsers.
"""

from __future__ import annotations

import attrs

from ..http.server import Response
from ..meta import store as m
from . import acl
from .context import Ctx
from .errors import S3Error

OWNER = "OWNER"  # only the bucket's owner
ANONYMOUS_ID = "65a011a29cdf8ec533ec3d1ccaae921c"  # the canonical id S3 gives anonymous writers


def caller_id(ctx: Ctx) -> str | None:
    return ctx.user.id if ctx.user is not None else None


def bucket_policy(bucket: m.Bucket) -> acl.Policy:
    return acl.effective(bucket.acl, bucket.owner_id, "")


def object_policy(obj: m.ObjectVersion) -> acl.Policy:
    return acl.effective(obj.acl, obj.owner_id, "")


async def bucket_for(ctx: Ctx, permission: str | None, name: str | None = None) -> m.Bucket:
    """The named bucket (the request's by default), if the caller holds ``permission`` on it (None: only that it
    exists; object permissions are checked on the object)."""
    name = name or ctx.bucket
    assert name is not None
    bucket = await ctx.meta.get_bucket(name)
    if bucket is None:
        raise S3Error("NoSuchBucket", BucketName=name)
    if permission is None:
        return bucket
    user = caller_id(ctx)
    if user is not None and user == bucket.owner_id:
        return bucket
    if permission == OWNER or not acl.allows(bucket_policy(bucket), user, permission):
        raise S3Error("AccessDenied")
    return bucket


def check_object(ctx: Ctx, obj: m.ObjectVersion, permission: str) -> None:
    user = caller_id(ctx)
    if user is not None and user == obj.owner_id:
        return
    if not acl.allows(object_policy(obj), user, permission):
        raise S3Error("AccessDenied")


async def _users(ctx: Ctx) -> list[m.User]:
    users = {u.id: u for u in await ctx.meta.list_users()}
    for u in ctx.services.config.users:
        users[u.id] = m.User(u.id, u.display_name, u.access_key, u.secret_key, u.email)
    return list(users.values())


async def resolved(ctx: Ctx, policy: acl.Policy) -> acl.Policy:
    """Email grantees turned into users, display names filled in (unknown ids: InvalidArgument)."""
    users = await _users(ctx)
    by_email = {u.email.lower(): (u.id, u.display_name) for u in users if u.email}
    names = {u.id: u.display_name for u in users}
    names.setdefault(ANONYMOUS_ID, "anonymous")
    return acl.resolve(policy, lambda email: by_email.get(email.lower()), names.get)


async def new_resource_acl(ctx: Ctx, owner_id: str, bucket: m.Bucket | None = None) -> str:
    """The stored ACL for a bucket or object created by this request (x-amz-acl or x-amz-grant-*)."""
    headers = {n: v for n, v in ctx.request.headers if n == "x-amz-acl" or n.startswith("x-amz-grant-")}
    if not headers:
        return ""
    policy = acl.request_policy(headers, owner_id, "", None,
                                bucket_owner_id=bucket.owner_id if bucket is not None else None)
    return acl.dumps(await resolved(ctx, policy))


def owner_of_new_object(ctx: Ctx) -> str:
    return ctx.user.id if ctx.user is not None else ANONYMOUS_ID


async def _requested_policy(ctx: Ctx, owner_id: str, bucket: m.Bucket | None) -> acl.Policy:
    """The ACL a Put*Acl request sets: from its headers, or from its AccessControlPolicy document."""
    from .buckets import read_document

    headers = {n: v for n, v in ctx.request.headers if n == "x-amz-acl" or n.startswith("x-amz-grant-")}
    body = await read_document(ctx)
    if headers and body.strip():
        raise S3Error("UnexpectedContent", "This request does not support content", status=400)
    if headers:
        policy = acl.request_policy(headers, owner_id, "", None,
                                    bucket_owner_id=bucket.owner_id if bucket is not None else None)
    elif body.strip():
        policy = acl.parse_policy_xml(body, None)
        if policy.owner_id != owner_id:
            raise S3Error("AccessDenied", "The owner of an ACL cannot be changed")
    else:
        raise S3Error("MissingSecurityHeader", "Your request was missing a required header",
                      MissingHeaderName="x-amz-acl")
    return await resolved(ctx, policy)


async def get_bucket_acl(ctx: Ctx) -> Response:
    bucket = await bucket_for(ctx, "READ_ACP")
    policy = await resolved(ctx, bucket_policy(bucket))
    return Response(200, [("Content-Type", "application/xml")], acl.render_policy_xml(policy))


async def put_bucket_acl(ctx: Ctx) -> Response:
    bucket = await bucket_for(ctx, "WRITE_ACP")
    policy = await _requested_policy(ctx, bucket.owner_id, None)
    await ctx.meta.update_bucket(attrs.evolve(bucket, acl=acl.dumps(policy)))
    return Response(200, [], b"")


async def named_object(ctx: Ctx) -> tuple[m.Bucket, m.ObjectVersion]:
    """The request's bucket and the version of its key that ``?versionId=`` names (the latest by default), for the
    operations on an object's sub-resources (acl, tagging): NoSuchKey, NoSuchVersion, or 405 for a marker."""
    from .versioning import find_version, missing, version_id_param

    assert ctx.bucket is not None and ctx.key is not None
    version_id = version_id_param(ctx)
    bucket = await bucket_for(ctx, None)
    obj = await find_version(ctx, ctx.bucket, ctx.key, version_id)
    if obj is None:
        raise missing(ctx.key, version_id)
    return bucket, obj


async def get_object_acl(ctx: Ctx) -> Response:
    from .versioning import version_header

    bucket, obj = await named_object(ctx)
    check_object(ctx, obj, "READ_ACP")
    policy = await resolved(ctx, object_policy(obj))
    return Response(200, [("Content-Type", "application/xml"), *version_header(bucket, obj.version_id)],
                    acl.render_policy_xml(policy))


async def put_object_acl(ctx: Ctx) -> Response:
    from .versioning import version_header

    bucket, obj = await named_object(ctx)
    check_object(ctx, obj, "WRITE_ACP")
    policy = await _requested_policy(ctx, obj.owner_id, bucket)
    if not await ctx.meta.update_object(attrs.evolve(obj, acl=acl.dumps(policy))):
        raise S3Error("OperationAborted", status=409)
    return Response(200, version_header(bucket, obj.version_id), b"")
