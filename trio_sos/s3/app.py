"""The S3 request pipeline, one small step after another (as pithos does it):

request id -> routing (virtual host or path style) -> operation (the table below) -> authentication
-> handler -> response with the common headers; every failure is one S3Error rendered once.

The operation table maps every operation to its handler and to the S3 action it is (what bucket policies name:
the one auditable list of who-needs-what). Each handler names the permission it needs as its first step
(``ctx.bucket_for("WRITE")``, ``check_object(ctx, obj, "READ")``: rules in ``access.py``), before it reads a byte
of the body.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from urllib.parse import parse_qsl, unquote_to_bytes

import attrs

from ..auth import chunked, sigv2, sigv4
from ..http.server import ClientDisconnected, HttpError, Request, Response
from ..meta.store import MetaUnavailable, User
from . import (
    access,
    bucketaccess,
    buckets,
    copy,
    cors,
    headers,
    iam,
    lifecycle,
    listing,
    multipart,
    objectlock,
    objects,
    post,
    sse,
    tagging,
    versioning,
)
from .context import Ctx, Services, parse_query
from .errors import HTTP_STATUS_CODES, S3Error

log = logging.getLogger("trio_sos.s3")

Handler = Callable[[Ctx], Awaitable[Response]]


@attrs.frozen
class Operation:
    name: str
    handler: Handler
    scope: str  # "service", "bucket" or "object": what the URL must name
    action: str  # the S3 action it is, in policies (s3:GetObject...)
    version_action: str = ""  # the action instead when the request names a version (?versionId=)

    def action_for(self, query: dict[str, str]) -> str:
        return self.version_action if self.version_action and "versionId" in query else self.action


OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in [
        Operation("ListBuckets", buckets.list_buckets, "service", "s3:ListAllMyBuckets"),
        Operation("CreateBucket", buckets.create_bucket, "bucket", "s3:CreateBucket"),
        Operation("HeadBucket", buckets.head_bucket, "bucket", "s3:ListBucket"),
        Operation("DeleteBucket", buckets.delete_bucket, "bucket", "s3:DeleteBucket"),
        Operation("GetBucketLocation", buckets.get_bucket_location, "bucket", "s3:GetBucketLocation"),
        Operation("ListObjects", listing.list_objects_v1, "bucket", "s3:ListBucket"),
        Operation("ListObjectsV2", listing.list_objects_v2, "bucket", "s3:ListBucket"),
        Operation("PutObject", objects.put_object, "object", "s3:PutObject"),
        Operation("GetObject", objects.get_object, "object", "s3:GetObject", "s3:GetObjectVersion"),
        Operation("HeadObject", objects.head_object, "object", "s3:GetObject", "s3:GetObjectVersion"),
        Operation("DeleteObject", objects.delete_object, "object", "s3:DeleteObject", "s3:DeleteObjectVersion"),
        # each key is decided on its own (s3:DeleteObject or s3:DeleteObjectVersion)
        Operation("DeleteObjects", objects.delete_objects, "bucket", "s3:DeleteObject"),
        # and s3:GetObject(Version) of the source
        Operation("CopyObject", copy.copy_object, "object", "s3:PutObject"),
        Operation("CreateMultipartUpload", multipart.create_multipart_upload, "object", "s3:PutObject"),
        Operation("UploadPart", multipart.upload_part, "object", "s3:PutObject"),
        Operation("UploadPartCopy", multipart.upload_part_copy, "object", "s3:PutObject"),
        Operation("CompleteMultipartUpload", multipart.complete_multipart_upload, "object", "s3:PutObject"),
        Operation("AbortMultipartUpload", multipart.abort_multipart_upload, "object", "s3:AbortMultipartUpload"),
        Operation("ListParts", multipart.list_parts, "object", "s3:ListMultipartUploadParts"),
        Operation("ListMultipartUploads", multipart.list_multipart_uploads, "bucket",
                  "s3:ListBucketMultipartUploads"),
        Operation("GetObjectTagging", tagging.get_object_tagging, "object", "s3:GetObjectTagging",
                  "s3:GetObjectVersionTagging"),
        Operation("PutObjectTagging", tagging.put_object_tagging, "object", "s3:PutObjectTagging",
                  "s3:PutObjectVersionTagging"),
        Operation("DeleteObjectTagging", tagging.delete_object_tagging, "object", "s3:DeleteObjectTagging",
                  "s3:DeleteObjectVersionTagging"),
        Operation("PutBucketLifecycleConfiguration", lifecycle.put_bucket_lifecycle, "bucket",
                  "s3:PutLifecycleConfiguration"),
        Operation("GetBucketLifecycleConfiguration", lifecycle.get_bucket_lifecycle, "bucket",
                  "s3:GetLifecycleConfiguration"),
        Operation("DeleteBucketLifecycle", lifecycle.delete_bucket_lifecycle, "bucket",
                  "s3:PutLifecycleConfiguration"),
        Operation("PutBucketTagging", tagging.put_bucket_tagging, "bucket", "s3:PutBucketTagging"),
        Operation("GetBucketTagging", tagging.get_bucket_tagging, "bucket", "s3:GetBucketTagging"),
        Operation("DeleteBucketTagging", tagging.delete_bucket_tagging, "bucket", "s3:PutBucketTagging"),
        Operation("GetObjectAttributes", objects.get_object_attributes, "object", "s3:GetObjectAttributes",
                  "s3:GetObjectVersionAttributes"),
        Operation("GetBucketVersioning", versioning.get_bucket_versioning, "bucket", "s3:GetBucketVersioning"),
        Operation("PutBucketVersioning", versioning.put_bucket_versioning, "bucket", "s3:PutBucketVersioning"),
        Operation("ListObjectVersions", versioning.list_object_versions, "bucket", "s3:ListBucketVersions"),
        Operation("PutObjectLockConfiguration", objectlock.put_object_lock_configuration, "bucket",
                  "s3:PutBucketObjectLockConfiguration"),
        Operation("GetObjectLockConfiguration", objectlock.get_object_lock_configuration, "bucket",
                  "s3:GetBucketObjectLockConfiguration"),
        Operation("PutObjectRetention", objectlock.put_object_retention, "object", "s3:PutObjectRetention"),
        Operation("GetObjectRetention", objectlock.get_object_retention, "object", "s3:GetObjectRetention"),
        Operation("PutObjectLegalHold", objectlock.put_object_legal_hold, "object", "s3:PutObjectLegalHold"),
        Operation("GetObjectLegalHold", objectlock.get_object_legal_hold, "object", "s3:GetObjectLegalHold"),
        Operation("PutBucketCors", cors.put_bucket_cors, "bucket", "s3:PutBucketCORS"),
        Operation("GetBucketCors", cors.get_bucket_cors, "bucket", "s3:GetBucketCORS"),
        Operation("DeleteBucketCors", cors.delete_bucket_cors, "bucket", "s3:PutBucketCORS"),
        Operation("PreflightCors", cors.preflight, "bucket", ""),  # unauthenticated: the CORS rules decide
        Operation("PostObject", post.post_object, "bucket", "s3:PutObject"),
        Operation("GetBucketAcl", access.get_bucket_acl, "bucket", "s3:GetBucketAcl"),
        Operation("PutBucketAcl", access.put_bucket_acl, "bucket", "s3:PutBucketAcl"),
        Operation("GetObjectAcl", access.get_object_acl, "object", "s3:GetObjectAcl", "s3:GetObjectVersionAcl"),
        Operation("PutObjectAcl", access.put_object_acl, "object", "s3:PutObjectAcl", "s3:PutObjectVersionAcl"),
        Operation("PutBucketPolicy", bucketaccess.put_bucket_policy, "bucket", "s3:PutBucketPolicy"),
        Operation("GetBucketPolicy", bucketaccess.get_bucket_policy, "bucket", "s3:GetBucketPolicy"),
        Operation("DeleteBucketPolicy", bucketaccess.delete_bucket_policy, "bucket", "s3:DeleteBucketPolicy"),
        Operation("GetBucketPolicyStatus", bucketaccess.get_bucket_policy_status, "bucket",
                  "s3:GetBucketPolicyStatus"),
        Operation("PutPublicAccessBlock", bucketaccess.put_public_access_block, "bucket",
                  "s3:PutBucketPublicAccessBlock"),
        Operation("GetPublicAccessBlock", bucketaccess.get_public_access_block, "bucket",
                  "s3:GetBucketPublicAccessBlock"),
        Operation("DeletePublicAccessBlock", bucketaccess.delete_public_access_block, "bucket",
                  "s3:PutBucketPublicAccessBlock"),
        Operation("PutBucketOwnershipControls", bucketaccess.put_bucket_ownership_controls, "bucket",
                  "s3:PutBucketOwnershipControls"),
        Operation("GetBucketOwnershipControls", bucketaccess.get_bucket_ownership_controls, "bucket",
                  "s3:GetBucketOwnershipControls"),
        Operation("DeleteBucketOwnershipControls", bucketaccess.delete_bucket_ownership_controls, "bucket",
                  "s3:PutBucketOwnershipControls"),
        Operation("PutBucketEncryption", sse.put_bucket_encryption, "bucket", "s3:PutEncryptionConfiguration"),
        Operation("GetBucketEncryption", sse.get_bucket_encryption, "bucket", "s3:GetEncryptionConfiguration"),
        Operation("DeleteBucketEncryption", sse.delete_bucket_encryption, "bucket", "s3:PutEncryptionConfiguration"),
    ]
}

# Sub-resources that name operations this node does not implement yet (or, for those it does, on a URL of another
# scope: ?retention on a bucket): answered NotImplemented, never mistaken for the plain operation on the same URL
# (a PUT ?acl must not overwrite an object).
UNBUILT_SUBRESOURCES = (
    "lifecycle", "logging", "notification", "policy", "replication", "restore",
    "torrent", "website",
    "object-lock", "legal-hold", "retention", "accelerate", "requestPayment", "analytics", "inventory",
    "metrics", "ownershipControls", "publicAccessBlock", "policyStatus", "intelligent-tiering", "attributes",
    "select",
)


def operation_name(method: str, bucket: str | None, key: str | None, query: dict[str, str],
                   request: Request) -> str:
    if bucket is None:
        return "ListBuckets" if method == "GET" else "MethodNotAllowed"
    if "tagging" in query:
        kind = "Object" if key is not None else "Bucket"
        return {"GET": f"Get{kind}Tagging", "PUT": f"Put{kind}Tagging", "DELETE": f"Delete{kind}Tagging"}.get(
            method, "MethodNotAllowed")
    if key is not None and "attributes" in query:
        return "GetObjectAttributes" if method == "GET" else "MethodNotAllowed"
    if method == "OPTIONS":
        return "PreflightCors"
    if "acl" in query:
        kind = "Object" if key is not None else "Bucket"
        return {"GET": f"Get{kind}Acl", "PUT": f"Put{kind}Acl"}.get(method, "MethodNotAllowed")
    if key is None and "cors" in query:
        return {"GET": "GetBucketCors", "PUT": "PutBucketCors", "DELETE": "DeleteBucketCors"}.get(
            method, "MethodNotAllowed")
    if key is None and "lifecycle" in query:
        return {"GET": "GetBucketLifecycleConfiguration", "PUT": "PutBucketLifecycleConfiguration",
                "DELETE": "DeleteBucketLifecycle"}.get(method, "MethodNotAllowed")
    if key is None and "policy" in query:
        return {"GET": "GetBucketPolicy", "PUT": "PutBucketPolicy", "DELETE": "DeleteBucketPolicy"}.get(
            method, "MethodNotAllowed")
    if key is None and "policyStatus" in query:
        return "GetBucketPolicyStatus" if method == "GET" else "MethodNotAllowed"
    if key is None and "publicAccessBlock" in query:
        return {"GET": "GetPublicAccessBlock", "PUT": "PutPublicAccessBlock",
                "DELETE": "DeletePublicAccessBlock"}.get(method, "MethodNotAllowed")
    if key is None and "encryption" in query:
        return {"GET": "GetBucketEncryption", "PUT": "PutBucketEncryption",
                "DELETE": "DeleteBucketEncryption"}.get(method, "MethodNotAllowed")
    if key is None and "ownershipControls" in query:
        return {"GET": "GetBucketOwnershipControls", "PUT": "PutBucketOwnershipControls",
                "DELETE": "DeleteBucketOwnershipControls"}.get(method, "MethodNotAllowed")
    if key is None and "versioning" in query:
        return {"GET": "GetBucketVersioning", "PUT": "PutBucketVersioning"}.get(method, "MethodNotAllowed")
    if key is None and "versions" in query:
        return "ListObjectVersions" if method == "GET" else "MethodNotAllowed"
    if key is None and "object-lock" in query:
        return {"GET": "GetObjectLockConfiguration", "PUT": "PutObjectLockConfiguration"}.get(method,
                                                                                              "MethodNotAllowed")
    if key is not None and "retention" in query:
        return {"GET": "GetObjectRetention", "PUT": "PutObjectRetention"}.get(method, "MethodNotAllowed")
    if key is not None and "legal-hold" in query:
        return {"GET": "GetObjectLegalHold", "PUT": "PutObjectLegalHold"}.get(method, "MethodNotAllowed")
    unbuilt = [s for s in UNBUILT_SUBRESOURCES if s in query]
    if unbuilt:
        return "NotImplemented:" + unbuilt[0]
    if key is None:
        if method == "GET":
            if "location" in query:
                return "GetBucketLocation"
            if "uploads" in query:
                return "ListMultipartUploads"
            return "ListObjectsV2" if query.get("list-type") == "2" else "ListObjects"
        if method == "POST" and "delete" in query:
            return "DeleteObjects"
        if method == "POST" and not query:
            return "PostObject"
        return {"PUT": "CreateBucket", "HEAD": "HeadBucket", "DELETE": "DeleteBucket"}.get(method,
                                                                                          "MethodNotAllowed")
    copying = request.header("x-amz-copy-source") is not None
    if "uploadId" in query:
        if method == "PUT" and "partNumber" in query:
            return "UploadPartCopy" if copying else "UploadPart"
        return {"POST": "CompleteMultipartUpload", "DELETE": "AbortMultipartUpload", "GET": "ListParts"}.get(
            method, "MethodNotAllowed")
    if "uploads" in query:
        return "CreateMultipartUpload" if method == "POST" else "MethodNotAllowed"
    if method == "PUT" and copying:
        return "CopyObject"
    return {"PUT": "PutObject", "GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(
        method, "MethodNotAllowed")


def split_target(request: Request, base_domain: str | None) -> tuple[str | None, str | None, str | None]:
    """Bucket and key named by the request: virtual-host style under ``base_domain``, else path style; and the
    bucket again when the Host named it (SigV2 signs it apart)."""
    try:
        path = unquote_to_bytes(request.path).decode("utf-8")
    except UnicodeDecodeError:
        raise S3Error("InvalidURI", "the request path is not valid UTF-8") from None
    if not path.startswith("/"):
        raise S3Error("InvalidURI")
    host = (request.header("host") or "").lower()
    host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    vhost = None
    if base_domain and host.endswith("." + base_domain):
        bucket: str | None = host[: -len(base_domain) - 1]
        key: str | None = path[1:] or None
        vhost = bucket
    else:
        rest = path[1:]
        if not rest:
            return None, None, None
        bucket, _, key_part = rest.partition("/")
        key = key_part if key_part else None
    if key is not None and len(key.encode("utf-8")) > 1024:
        raise S3Error("KeyTooLongError")
    return bucket, key, vhost


class S3App:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.key_cache = sigv4.SigningKeyCache()

    async def handle(self, request: Request) -> Response:
        request_id = os.urandom(8).hex().upper()
        ctx = Ctx(request, request_id, self.services)
        try:
            response = await self._handle(ctx)
        except S3Error as exc:
            response = self.error_response(exc, ctx)
        except HttpError as exc:
            response = self.error_response(
                S3Error(HTTP_STATUS_CODES.get(exc.status, "InvalidRequest"), str(exc), status=exc.status), ctx)
        except ClientDisconnected:
            log.info("request %s %s %s: client gone", request_id, request.method, request.target)
            raise
        except MetaUnavailable as exc:
            log.warning("request %s %s: %s", request_id, ctx.operation or "-", exc)
            response = self.error_response(S3Error("ServiceUnavailable", "The metadata store is unavailable; please "
                                                                         "retry."), ctx)
        except Exception:
            # A bug, never a stranger's fault: the traceback for the developer, and below the same one-line access
            # log entry as every request, with its request id, for the operator.
            log.exception("request %s %s %s %s failed with an internal error", request_id, ctx.operation or "-",
                          request.method, request.target)
            response = self.error_response(S3Error("InternalError"), ctx)
        response.headers.append(("x-amz-request-id", request_id))
        response.headers.append(("x-amz-id-2", request_id))
        if request.header("origin") is not None and ctx.operation != "PreflightCors":
            try:
                response.headers += await cors.response_headers(ctx)
            except (S3Error, MetaUnavailable):
                pass  # no CORS headers: the browser refuses the answer, which is all a failure here can mean
        # for the access log and the metrics, written once the response is sent (trio_sos.admin.observe)
        response.note = (request_id, ctx.user.id if ctx.user is not None else None, ctx.operation or "-",
                         ctx.bucket, ctx.auth)
        return response

    def error_response(self, exc: S3Error, ctx: Ctx) -> Response:
        if not exc.resource:
            exc.resource = ctx.resource
        body = exc.to_xml(ctx.request_id) if ctx.request.method != "HEAD" and exc.status != 304 else b""
        return Response(exc.status, ([("Content-Type", "application/xml")] if body else []) + exc.headers, body)

    def render_http_error(self, status: int, message: str) -> Response:
        """Errors found by the HTTP layer before any handler (bad framing, oversized heads...)."""
        exc = S3Error(HTTP_STATUS_CODES.get(status, "InvalidRequest"), message, status=status)
        request_id = os.urandom(8).hex().upper()
        response = Response(status, [("Content-Type", "application/xml")], exc.to_xml(request_id))
        response.headers.append(("x-amz-request-id", request_id))
        return response

    async def _handle(self, ctx: Ctx) -> Response:
        request = ctx.request
        try:
            ctx.query = parse_query(request.query)
        except UnicodeDecodeError:
            raise S3Error("InvalidURI", "the query string is not valid UTF-8") from None
        request.headers = headers.one_value_per_name(request.headers)
        ctx.bucket, ctx.key, ctx.vhost_bucket = split_target(request, self.services.config.base_domain)
        if ctx.bucket is None and request.method == "POST":  # S3 has no POST on the service: IAM's Query API
            ctx.operation = "IAM"
            return await iam.handle(ctx)
        name = operation_name(request.method, ctx.bucket, ctx.key, ctx.query, request)
        ctx.operation = name
        if name == "PreflightCors":  # browsers send preflights without credentials
            return await cors.preflight(ctx)
        if name == "PostObject":  # authenticated by the signed policy inside the form
            ctx.auth = "post-policy"
            ctx.action = OPERATIONS[name].action
            return await post.post_object(ctx)
        await self._authenticate(ctx)
        # again, on the headers as signed (a V2 presigned URL may carry x-amz-copy-source in its query)
        name = ctx.operation = operation_name(request.method, ctx.bucket, ctx.key, ctx.query, request)
        if name == "MethodNotAllowed":
            raise S3Error("MethodNotAllowed", Method=request.method, ResourceType="OBJECT" if ctx.key else "BUCKET")
        if name.startswith("NotImplemented:"):
            raise S3Error("NotImplemented", f"{name.split(':', 1)[1]} is not implemented by this server yet")
        operation = OPERATIONS[name]
        ctx.action = operation.action_for(ctx.query)
        return await operation.handler(ctx)

    async def _user(self, access_key: str) -> tuple[User, str]:
        """The user and secret of an Active access key, else InvalidAccessKeyId (unknown and Inactive keys)."""
        found = await self.services.signing_key(access_key)
        if found is None:
            raise S3Error("InvalidAccessKeyId", AWSAccessKeyId=access_key)
        return found

    async def _authenticate(self, ctx: Ctx) -> None:
        """SigV4 (header or presigned URL), SigV2 (header or query), or anonymous; then the body decoder for
        aws-chunked payloads. Sets ``ctx.user`` (None: anonymous) and ``ctx.verified`` (SigV4 only)."""
        request = ctx.request
        auth = request.header("authorization")
        now = datetime.now(UTC)
        pairs = parse_qsl(request.query, keep_blank_values=True)
        try:
            if auth is None:
                if "X-Amz-Algorithm" in ctx.query or "X-Amz-Signature" in ctx.query:
                    presigned = sigv4.parse_presigned(pairs)
                    user, secret = await self._user(presigned.access_key)
                    ctx.verified = sigv4.verify_presigned(request.method, request.target, request.headers,
                                                          presigned, secret, now=now,
                                                          key_cache=self.key_cache)
                    request.headers = headers.merged_with_query(request.headers, sigv4.hoisted_headers(pairs))
                    ctx.auth = "sigv4-query"
                elif "Signature" in ctx.query and "AWSAccessKeyId" in ctx.query:
                    v2q = sigv2.parse_v2_query(pairs)
                    user, secret = await self._user(v2q.access_key)
                    sigv2.verify_v2_query(request.method, request.target, request.headers, v2q, secret,
                                          now=now, bucket_from_host=ctx.vhost_bucket)
                    # what the URL signed in its query is what the request does: never an unsigned header
                    request.headers = headers.replaced_by_query(request.headers,
                                                                sigv2.query_header_overrides(request.target))
                    ctx.auth = "sigv2-query"
                else:
                    return  # anonymous: the AllUsers group, as far as ACLs allow
            elif auth.startswith("AWS "):
                access_key, signature = sigv2.parse_v2_header(auth)
                user, secret = await self._user(access_key)
                sigv2.verify_v2(request.method, request.target, request.headers, access_key, signature,
                                secret, now=now, bucket_from_host=ctx.vhost_bucket)
                ctx.auth = "sigv2"
            elif auth.startswith("AWS4-HMAC-SHA256"):
                parsed = sigv4.parse_authorization(auth)
                user, secret = await self._user(parsed.access_key)
                ctx.verified = sigv4.verify_header_auth(request.method, request.target, request.headers, parsed,
                                                        secret, now=now, key_cache=self.key_cache)
                ctx.auth = "sigv4"
            else:
                raise S3Error("InvalidArgument", "Unsupported Authorization Type",
                              ArgumentName="Authorization", ArgumentValue=auth[:64])
            ctx.user = user
            payload = ctx.verified.payload_hash if ctx.verified is not None else ""
            if payload.startswith("STREAMING-"):
                ctx.decoder = chunked.AwsChunkedDecoder(
                    payload, verified=ctx.verified,
                    trailer_names=chunked.parse_trailer_header(request.header("x-amz-trailer")),
                    decoded_content_length=chunked.parse_decoded_content_length(
                        request.header("x-amz-decoded-content-length")),
                )
        except sigv4.AuthError as exc:
            raise S3Error(exc.code, exc.message, status=exc.status, **exc.extra) from None

