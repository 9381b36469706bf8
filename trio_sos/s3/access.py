"""Who may do what: one decision per request for buckets and objects — the caller's user policies and the bucket
policy, then ownership and ACLs — the ACLs of new resources, and the ACL operations (Get/PutBucketAcl,
Get/PutObjectAcl).

The order is S3's: an explicit Deny in the caller's user policies or the bucket's policy wins over everything (the
bucket's owner too, but for managing the bucket policy itself, so that an owner is never locked out); then the
bucket's owner may do everything to the bucket, and an object's owner to the object — unless it has user
policies, which limit it as an IAM user is limited (``restricted``); then an Allow of either policy grants; then
the ACL's grants — the
bucket ACL's READ to list, WRITE to create, overwrite or delete objects, READ_ACP / WRITE_ACP for the ACL itself;
reading an object, or its ACL, by the object's own ACL. Anonymous callers are the AllUsers group; signed-in
callers also AuthenticatedUsers. A public access block's IgnorePublicAcls drops grants to those two groups, its
RestrictPublicBuckets the Allows of a public policy for anyone but the owner; ownership BucketOwnerEnforced turns
ACLs off (the bucket's owner owns every object; only the policy grants). Each handler names its permission
(``ctx.bucket_for("WRITE")``, ``check_object``) and the operation table its action (``ctx.action``).
"""

from __future__ import annotations

import functools
import logging
import time
from datetime import UTC, datetime

import attrs

from ..http.server import Response
from ..meta import store as m
from . import acl, bucketaccess, policy
from .context import Ctx
from .errors import S3Error

OWNER = "OWNER"  # only the bucket's owner
ANONYMOUS_ID = "65a011a29cdf8ec533ec3d1ccaae921c"  # the canonical id S3 gives anonymous writers


log = logging.getLogger("trio_sos.s3.access")

# the owner of a bucket may always read, replace and delete its policy, whatever the policy denies
POLICY_ACTIONS = frozenset({"s3:GetBucketPolicy", "s3:PutBucketPolicy", "s3:DeleteBucketPolicy"})
_REQUEST_KEY = object()  # bucket_for's default key: the request's own


def caller_id(ctx: Ctx) -> str | None:
    return ctx.user.id if ctx.user is not None else None


def restricted(ctx: Ctx) -> bool:
    """A caller with user policies is limited by them, as an IAM user is: it has no implicit right as an owner
    and no ACL grant to itself on what it owns — what it may do is what a policy (its own or the bucket's) or
    another's ACL grant allows."""
    return ctx.user is not None and bool(ctx.user.policies)


def owner_rights(ctx: Ctx, owner_id: str) -> bool:
    """Whether the caller has the owner's implicit rights over what ``owner_id`` owns."""
    return ctx.user is not None and ctx.user.id == owner_id and not ctx.user.policies


@functools.lru_cache(maxsize=1024)
def user_policies(documents: tuple[tuple[str, str], ...]) -> tuple[policy.Policy, ...]:
    out = []
    for name, text in documents:
        try:
            out.append(policy.parse_user_policy(text))
        except policy.PolicyError as exc:  # validated when put: a release that reads it otherwise fails closed
            log.error("user policy %s cannot be read (%s): it denies everything", name, exc)
            out.append(_DENY_ALL)
    return tuple(out)


def service_allowed(ctx: Ctx, action: str, resource: str) -> bool:
    """An action on no bucket of anyone's (ListBuckets, CreateBucket): any signed-in caller may, unless its user
    policies limit it — then only if they allow it."""
    return ctx.user is not None and (not restricted(ctx) or identity_verdict(ctx, action, resource) == "Allow")


_DENY_ALL = policy.Policy("2012-10-17", (policy.Statement("", "Deny", (("*", "*"),), False, ("*",), False,
                                                           ("*",), False, ()),))


def identity_verdict(ctx: Ctx, action: str, resource: str,
                     extra: dict[str, str | tuple[str, ...]] | None = None) -> str | None:
    """What the caller's user policies say of ``action`` on ``resource`` (an ARN): "Deny", "Allow" or None."""
    if not restricted(ctx):
        return None
    assert ctx.user is not None
    keys = request_keys(ctx)
    if extra:
        keys = {**keys, **extra}
    req = policy.RequestContext(ctx.user.id, action, resource, keys)
    verdict = None
    for parsed in user_policies(ctx.user.policies):
        one = policy.evaluate(parsed, req)
        if one == "Deny":
            return "Deny"
        verdict = verdict or one
    return verdict


def enforced(bucket: m.Bucket) -> bool:
    """Object ownership BucketOwnerEnforced: ACLs are off, the bucket's owner owns every object."""
    return bucket.ownership == "BucketOwnerEnforced"


def bucket_policy(bucket: m.Bucket) -> acl.Policy:
    if enforced(bucket):
        return acl.canned("private", bucket.owner_id, "")
    return acl.effective(bucket.acl, bucket.owner_id, "")


def object_owner(bucket: m.Bucket | None, obj: m.ObjectVersion) -> str:
    return bucket.owner_id if bucket is not None and enforced(bucket) else obj.owner_id


def object_policy(obj: m.ObjectVersion, bucket: m.Bucket | None = None) -> acl.Policy:
    if bucket is not None and enforced(bucket):
        return acl.canned("private", bucket.owner_id, "")
    return acl.effective(obj.acl, obj.owner_id, "")


def _acl_allows(ctx: Ctx, bucket: m.Bucket, policy: acl.Policy, permission: str) -> bool:
    if enforced(bucket):
        return False  # ACLs are off: only owners and the bucket policy grant
    if bucketaccess.block(bucket).ignore_public_acls:
        policy = acl.without_public(policy)
    user = caller_id(ctx)
    if user is not None and user == policy.owner_id and restricted(ctx):
        user = _SIGNED_IN  # no grant to itself: only what the groups (AllUsers, AuthenticatedUsers) get
    return acl.allows(policy, user, permission)


_SIGNED_IN = "\x00signed-in"  # an authenticated caller that no grant names


def decide(ctx: Ctx, bucket: m.Bucket, action: str, key: str | None,
           extra: dict[str, str | tuple[str, ...]] | None = None) -> str | None:
    """What the bucket's policy and the caller's user policies say of ``action`` on the bucket (``key`` None) or
    one of its objects: "Deny" (either denies), "Allow" (either allows) or None."""
    mine = identity_verdict(ctx, action, policy.bucket_arn(bucket.name, key), extra)
    if mine == "Deny":
        return "Deny"
    theirs = _bucket_verdict(ctx, bucket, action, key, extra)
    return theirs if theirs == "Deny" else mine or theirs


def _bucket_verdict(ctx: Ctx, bucket: m.Bucket, action: str, key: str | None,
                    extra: dict[str, str | tuple[str, ...]] | None) -> str | None:
    if not bucket.policy:
        return None
    parsed = parsed_policy(bucket.policy, bucket.name)
    if parsed is None:
        return "Deny"  # a stored policy this release cannot read: closed to all (its owner can replace it)
    keys = request_keys(ctx)
    if extra:
        keys = {**keys, **extra}
    verdict = policy.evaluate(parsed, policy.RequestContext(caller_id(ctx), action,
                                                            policy.bucket_arn(bucket.name, key), keys))
    if verdict == "Allow" and caller_id(ctx) != bucket.owner_id and bucketaccess.block(bucket).restrict_public_buckets \
            and policy.is_public(parsed):
        return None  # a public policy grants nobody but the owner while RestrictPublicBuckets is on
    return verdict


@functools.lru_cache(maxsize=1024)
def parsed_policy(text: str, bucket: str) -> policy.Policy | None:
    # validated when it was put (principals included): only the language is checked again here
    try:
        return policy.parse(text, bucket)
    except policy.PolicyError as exc:
        log.error("the policy of bucket %s cannot be read (%s): every request but the owner's policy "
                  "operations is denied", bucket, exc)
        return None


async def bucket_for(ctx: Ctx, permission: str | None, name: str | None = None, *, action: str | None = None,
                     key: object = _REQUEST_KEY) -> m.Bucket:
    """The named bucket (the request's by default), if the caller may do ``action`` (the request's by default)
    with ``permission`` ("OWNER": no ACL grants it) — on the bucket, or on the object ``key`` (the request's key
    by default, for an object action). ``permission`` None: only that the bucket exists; object permissions are
    then checked on the object (``check_object``)."""
    name = name or ctx.bucket
    assert name is not None
    bucket = await ctx.meta.get_bucket(name)
    if bucket is None:
        raise S3Error("NoSuchBucket", BucketName=name)
    ctx.buckets[bucket.name] = bucket
    if permission is None:
        return bucket
    action = action or ctx.action
    if key is _REQUEST_KEY:
        key = ctx.key if name == ctx.bucket and action in policy.OBJECT_ACTIONS else None
    assert key is None or isinstance(key, str)
    if not allowed(ctx, bucket, permission, action, key):
        raise S3Error("AccessDenied")
    return bucket


def allowed(ctx: Ctx, bucket: m.Bucket, permission: str, action: str, key: str | None) -> bool:
    """``bucket_for``'s decision, for a bucket read already (DeleteObjects decides each key on its own)."""
    verdict = decide(ctx, bucket, action, key)
    owner = owner_rights(ctx, bucket.owner_id)
    if verdict == "Deny" and not (owner and action in POLICY_ACTIONS):
        return False
    if owner or verdict == "Allow":
        return True
    return permission != OWNER and _acl_allows(ctx, bucket, bucket_policy(bucket), permission)


def check_object(ctx: Ctx, obj: m.ObjectVersion, permission: str, *, action: str | None = None) -> None:
    """Whether the caller may do ``action`` (the request's by default) to ``obj`` with ``permission``: the bucket
    policy (with the object's tags as s3:ExistingObjectTag), then the object's owner, then its ACL. The bucket
    must have been read through ``bucket_for`` by this request."""
    bucket = ctx.buckets.get(obj.bucket)
    if bucket is None:  # a handler that skipped bucket_for: refuse rather than decide without the policy
        raise RuntimeError(f"check_object of {obj.bucket}/{obj.key} before its bucket was read")
    tags: dict[str, str | tuple[str, ...]] = {f"s3:existingobjecttag/{k}": v for k, v in obj.tags}
    verdict = decide(ctx, bucket, action or ctx.action, obj.key, tags)
    if verdict == "Deny":
        raise S3Error("AccessDenied")
    if owner_rights(ctx, object_owner(bucket, obj)) or verdict == "Allow":
        return
    if not _acl_allows(ctx, bucket, object_policy(obj, bucket), permission):
        raise S3Error("AccessDenied")


def request_keys(ctx: Ctx) -> dict[str, str | tuple[str, ...]]:
    """The request's condition keys (lower-cased names), built once per request."""
    if ctx.policy_keys is not None:
        return ctx.policy_keys
    from .tagging import request_tags

    request = ctx.request
    now = time.time()
    keys: dict[str, str | tuple[str, ...]] = {
        "aws:sourceip": request.remote.rsplit(":", 1)[0].strip("[]"),
        "aws:securetransport": "true" if request.scheme == "https" else "false",
        "aws:currenttime": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "aws:epochtime": str(int(now)),
        "aws:principaltype": "User" if ctx.user is not None else "Anonymous",
    }
    if ctx.user is not None:
        keys["aws:username"] = keys["aws:userid"] = ctx.user.id
        keys["aws:principalarn"] = f"arn:aws:iam::{ACCOUNT}:user/{ctx.user.id}"
    for header, key in (("referer", "aws:referer"), ("user-agent", "aws:useragent")):
        value = ctx.header(header)
        if value is not None:
            keys[key] = value
    for param in ("prefix", "delimiter", "max-keys"):
        if param in ctx.query:
            keys[f"s3:{param}"] = ctx.query[param]
    if "versionId" in ctx.query:
        keys["s3:versionid"] = ctx.query["versionId"]
    for name, value in request.headers:
        if name in _HEADER_KEYS:
            keys[f"s3:{name}"] = value
    lock = {"x-amz-object-lock-mode": "s3:object-lock-mode", "x-amz-object-lock-legal-hold":
            "s3:object-lock-legal-hold", "x-amz-object-lock-retain-until-date": "s3:object-lock-retain-until-date"}
    for header, key in lock.items():
        value = ctx.header(header)
        if value is not None:
            keys[key] = value
    until = ctx.header("x-amz-object-lock-retain-until-date")
    if until is not None:
        try:
            keys["s3:object-lock-remaining-retention-days"] = str(max(0, int((policy.date_seconds(until) - now)
                                                                             // 86400)))
        except ValueError:
            pass
    tags = request_tags(ctx)
    if tags is not None:
        keys.update({f"s3:requestobjecttag/{k}": v for k, v in tags})
        keys["s3:requestobjecttagkeys"] = tuple(k for k, _ in tags)
    keys["s3:authtype"] = ("POST" if ctx.auth.startswith("post") else "REST-QUERY-STRING"
                           if ctx.auth.endswith("-query") else "REST-HEADER")
    if ctx.auth.startswith("sigv4") or ctx.auth == "post-policy":
        keys["s3:signatureversion"] = "AWS4-HMAC-SHA256"
    elif ctx.auth.startswith("sigv2") or ctx.auth == "post-policy-v2":
        keys["s3:signatureversion"] = "AWS"
    ctx.policy_keys = keys
    return keys


ACCOUNT = "000000000000"  # the one account of this store, in the ARNs it shows (the digits are never compared)
_HEADER_KEYS = frozenset({
    "x-amz-acl", "x-amz-grant-read", "x-amz-grant-write", "x-amz-grant-read-acp", "x-amz-grant-write-acp",
    "x-amz-grant-full-control", "x-amz-server-side-encryption", "x-amz-server-side-encryption-aws-kms-key-id",
    "x-amz-server-side-encryption-customer-algorithm", "x-amz-copy-source", "x-amz-metadata-directive",
    "x-amz-content-sha256", "x-amz-storage-class", "x-amz-website-redirect-location", "x-amz-object-ownership",
})


async def resolved(ctx: Ctx, policy: acl.Policy) -> acl.Policy:
    """Email grantees turned into users, display names filled in (unknown ids: InvalidArgument)."""
    users = await ctx.services.all_users()
    by_email = {u.email.lower(): (u.id, u.display_name) for u in users if u.email}
    names = {u.id: u.display_name for u in users}
    names.setdefault(ANONYMOUS_ID, "anonymous")
    return acl.resolve(policy, lambda email: by_email.get(email.lower()), names.get)


def _acl_headers(ctx: Ctx) -> dict[str, str]:
    return {n: v for n, v in ctx.request.headers if n == "x-amz-acl" or n.startswith("x-amz-grant-")}


def acls_not_supported() -> S3Error:
    return S3Error("AccessControlListNotSupported", "The bucket does not allow ACLs")


async def new_resource_acl(ctx: Ctx, owner_id: str, bucket: m.Bucket | None = None) -> str:
    """The stored ACL for a bucket or object created by this request (x-amz-acl or x-amz-grant-*); into a bucket
    whose ACLs are off (BucketOwnerEnforced), only none or bucket-owner-full-control; into a bucket whose public
    access block has BlockPublicAcls, none that is public (AccessDenied)."""
    headers = _acl_headers(ctx)
    if bucket is not None and enforced(bucket):
        if headers and headers != {"x-amz-acl": "bucket-owner-full-control"}:
            raise acls_not_supported()
        return ""
    if not headers:
        return ""
    policy = acl.request_policy(headers, owner_id, "", None,
                                bucket_owner_id=bucket.owner_id if bucket is not None else None)
    if bucket is not None and bucketaccess.block(bucket).block_public_acls and acl.is_public(policy):
        raise S3Error("AccessDenied", "The bucket's public access block (BlockPublicAcls) refuses a public ACL")
    return acl.dumps(await resolved(ctx, policy))


def owner_of_new_object(ctx: Ctx, bucket: m.Bucket | None = None) -> str:
    """Who owns what this request writes: the writer (anonymous writers have S3's anonymous id) — or the
    bucket's owner when its ownership is BucketOwnerEnforced, or BucketOwnerPreferred and the writer gives it
    bucket-owner-full-control."""
    if bucket is not None and (enforced(bucket) or (
            bucket.ownership == "BucketOwnerPreferred" and ctx.header("x-amz-acl") == "bucket-owner-full-control")):
        return bucket.owner_id
    return ctx.user.id if ctx.user is not None else ANONYMOUS_ID


async def _requested_policy(ctx: Ctx, owner_id: str, bucket: m.Bucket, *, of_object: bool) -> acl.Policy:
    """The ACL a Put*Acl request sets: from its headers, or from its AccessControlPolicy document. In a bucket
    whose ACLs are off, AccessControlListNotSupported (but for bucket-owner-full-control, which they already are);
    with BlockPublicAcls, AccessDenied for a public one."""
    if enforced(bucket):
        if _acl_headers(ctx) != {"x-amz-acl": "bucket-owner-full-control"}:
            raise acls_not_supported()
        return acl.canned("private", bucket.owner_id, "")
    from .buckets import read_document

    headers = _acl_headers(ctx)
    body = await read_document(ctx)
    if headers and body.strip():
        raise S3Error("UnexpectedContent", "This request does not support content", status=400)
    if headers:
        policy = acl.request_policy(headers, owner_id, "", None,
                                    bucket_owner_id=bucket.owner_id if of_object else None)
    elif body.strip():
        policy = acl.parse_policy_xml(body, None)
        if policy.owner_id != owner_id:
            raise S3Error("AccessDenied", "The owner of an ACL cannot be changed")
    else:
        raise S3Error("MissingSecurityHeader", "Your request was missing a required header",
                      MissingHeaderName="x-amz-acl")
    if bucketaccess.block(bucket).block_public_acls and acl.is_public(policy):
        raise S3Error("AccessDenied", "The bucket's public access block (BlockPublicAcls) refuses a public ACL")
    return await resolved(ctx, policy)


async def get_bucket_acl(ctx: Ctx) -> Response:
    bucket = await bucket_for(ctx, "READ_ACP")
    policy = await resolved(ctx, bucket_policy(bucket))
    return Response(200, [("Content-Type", "application/xml")], acl.render_policy_xml(policy))


async def put_bucket_acl(ctx: Ctx) -> Response:
    bucket = await bucket_for(ctx, "WRITE_ACP")
    policy = await _requested_policy(ctx, bucket.owner_id, bucket, of_object=False)
    await ctx.meta.update_bucket(attrs.evolve(bucket, acl="" if enforced(bucket) else acl.dumps(policy)))
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
    policy = await resolved(ctx, object_policy(obj, bucket))
    return Response(200, [("Content-Type", "application/xml"), *version_header(bucket, obj.version_id)],
                    acl.render_policy_xml(policy))


async def put_object_acl(ctx: Ctx) -> Response:
    from .versioning import version_header

    bucket, obj = await named_object(ctx)
    check_object(ctx, obj, "WRITE_ACP")
    policy = await _requested_policy(ctx, obj.owner_id, bucket, of_object=True)
    if enforced(bucket):
        return Response(200, version_header(bucket, obj.version_id), b"")  # ACLs are off: nothing to change
    if not await ctx.meta.update_object(attrs.evolve(obj, acl=acl.dumps(policy))):
        raise S3Error("OperationAborted", status=409)
    return Response(200, version_header(bucket, obj.version_id), b"")
