"""PostObject: browser-form uploads (multipart/form-data), authorised by a policy signed with SigV4
(``x-amz-credential``, ``x-amz-signature``...) or SigV2 (``AWSAccessKeyId``, ``signature``: base64 HMAC-SHA1 of
the base64 policy), or anonymous (no policy, no signature) into a bucket whose ACL or policy lets anyone write.

The form's fields must come before its ``file`` part (as S3 requires); they are read and checked — signature,
expiry, every policy condition, no unlisted field — before a byte of the file is accepted, then the file streams
to the agents like any other body. Field names are case-insensitive, values case-sensitive. ``acl`` (a canned
ACL) and ``tagging`` (a Tagging document) fields apply to the object as the x-amz-acl and x-amz-tagging headers
of a PutObject would, policies and public access blocks included.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import time
from collections import deque
from datetime import UTC, datetime
from urllib.parse import quote

import attrs

from ..auth import sigv4
from ..http.formdata import Field, FileData, FileEnd, FileStart, FormError, FormParser, boundary_of
from ..http.server import Response
from ..meta import store as m
from . import params
from .context import Ctx
from .errors import S3Error
from . import objectlock, sse
from ..data import sse as crypto
from .versioning import version_header
from .access import new_resource_acl, owner_of_new_object
from .tagging import tags_from_header
from .objects import MAX_PUT_SIZE, STORED_HEADERS, check_user_meta, committing, header_value, store_body
from .xml import Tag, document

EXEMPT = {"policy", "x-amz-signature", "file", "awsaccesskeyid", "signature"}


def _malformed(message: str = "The body of your POST request is not well-formed multipart/form-data.") -> S3Error:
    return S3Error("MalformedPOSTRequest", message, status=400)


def _denied(message: str) -> S3Error:
    return S3Error("AccessDenied", f"Invalid according to Policy: {message}")


def _check_policy(policy: dict, fields: dict[str, str], bucket: str) -> tuple[int, int]:
    """Every condition against the form's fields; returns the content-length range (min, max)."""
    if not isinstance(policy, dict):
        raise _malformed("Invalid Policy: Invalid JSON.")
    expiration = policy.get("expiration")
    try:
        if not isinstance(expiration, str) or len(expiration) > 64:
            raise ValueError(expiration)
        expires = datetime.fromisoformat(expiration.replace("Z", "+00:00"))
        expires = expires.replace(tzinfo=UTC) if expires.tzinfo is None else expires.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: year 1 at a positive offset is no UTC time
        raise _malformed("Invalid Policy: Invalid 'expiration' value") from None
    if expires < datetime.now(UTC):
        raise _denied("Policy expired.")
    values = dict(fields, bucket=bucket)
    covered = {"bucket"}
    length = (0, MAX_PUT_SIZE)
    conditions = policy.get("conditions")
    if not isinstance(conditions, list):
        raise _malformed("Invalid Policy: conditions must be a list")
    for cond in conditions:
        if isinstance(cond, dict) and len(cond) == 1:
            ((name, expected),) = cond.items()
            op, name = "eq", name.lower()
        elif isinstance(cond, list) and len(cond) == 3 and isinstance(cond[0], str):
            op = cond[0].lower()
            if op == "content-length-range":
                low, high = _policy_length(cond[1]), _policy_length(cond[2])
                if low is None or high is None or low > high:
                    raise _malformed("Invalid Policy: Invalid content-length-range")
                length = (low, high)
                continue
            if not isinstance(cond[1], str) or not cond[1].startswith("$"):
                raise _malformed(f"Invalid Policy: bad condition {_short(cond)}")
            name, expected = cond[1][1:].lower(), cond[2]
        else:
            raise _malformed(f"Invalid Policy: bad condition {_short(cond)}")
        if not isinstance(expected, str):
            raise _malformed(f"Invalid Policy: bad condition {_short(cond)}")
        covered.add(name)
        actual = values.get(name, "")
        if op == "eq" and actual != expected:
            raise _denied(f'Policy Condition failed: ["eq", "${name}", "{expected}"]')
        if op == "starts-with" and not actual.startswith(expected):
            raise _denied(f'Policy Condition failed: ["starts-with", "${name}", "{expected}"]')
        if op not in ("eq", "starts-with"):
            raise _malformed(f"Invalid Policy: unknown operation {op}")
    extra = [n for n in fields if n not in covered and n not in EXEMPT and not n.startswith("x-ignore-")]
    if extra:
        raise _denied(f"Extra input fields: {extra[0]}")
    return length


def _short(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 200 else text[:200] + "..."


def _policy_length(value: object) -> int | None:
    """A bound of content-length-range: a JSON integer or a string of digits (not a float, a bool or 1e400)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value < 10**18 else None
    if isinstance(value, str):
        return params.uint(value.strip(), 18)
    return None


async def _authenticate(ctx: Ctx, fields: dict[str, str]) -> m.User | None:
    """The form's signer (its policy's signature checked), or None: an anonymous form, with neither."""
    signed = "x-amz-signature" in fields or "signature" in fields or "awsaccesskeyid" in fields
    if not signed:
        if "policy" in fields:
            raise S3Error("AccessDenied", "Invalid according to Policy: a POST policy must be signed")
        return None
    if "policy" not in fields:
        raise _malformed("Invalid Policy: a signed POST form must have a policy field")
    if "x-amz-signature" not in fields:
        return await _authenticate_v2(ctx, fields)
    if fields.get("x-amz-algorithm") != "AWS4-HMAC-SHA256":
        raise S3Error("InvalidArgument", "Unsupported x-amz-algorithm", ArgumentName="x-amz-algorithm",
                      ArgumentValue=fields.get("x-amz-algorithm", ""))
    parts = fields.get("x-amz-credential", "").split("/")
    if len(parts) != 5 or parts[3] != "s3" or parts[4] != "aws4_request":
        raise S3Error("InvalidArgument", "Invalid x-amz-credential", ArgumentName="x-amz-credential",
                      ArgumentValue=fields.get("x-amz-credential", ""))
    access_key, date, region = parts[0], parts[1], parts[2]
    user, secret = await signing_key(ctx, access_key)
    key = sigv4.derive_signing_key(secret, date, region, "s3")
    expected = hmac.new(key, fields["policy"].encode(), "sha256").hexdigest()
    if not hmac.compare_digest(expected, fields["x-amz-signature"].strip().lower()):
        raise S3Error("SignatureDoesNotMatch", AWSAccessKeyId=access_key, StringToSign=fields["policy"])
    return user


async def signing_key(ctx: Ctx, access_key: str) -> tuple[m.User, str]:
    """The user and secret of an Active access key, else InvalidAccessKeyId (unknown and Inactive keys alike)."""
    found = await ctx.services.signing_key(access_key)
    if found is None:
        raise S3Error("InvalidAccessKeyId", AWSAccessKeyId=access_key)
    return found


async def _authenticate_v2(ctx: Ctx, fields: dict[str, str]) -> m.User:
    access_key, signature = fields.get("awsaccesskeyid", ""), fields.get("signature", "")
    if not access_key or not signature:
        raise S3Error("InvalidArgument", "A Signature Version 2 POST form needs both AWSAccessKeyId and signature",
                      ArgumentName="AWSAccessKeyId" if not access_key else "signature", ArgumentValue="")
    user, secret = await signing_key(ctx, access_key)
    expected = base64.b64encode(hmac.new(secret.encode(), fields["policy"].encode(), "sha1").digest())
    if not hmac.compare_digest(expected, signature.strip().encode("latin-1", "replace")):
        raise S3Error("SignatureDoesNotMatch", AWSAccessKeyId=access_key, StringToSign=fields["policy"])
    ctx.auth = "post-policy-v2"
    return user


def _form_headers(ctx: Ctx, fields: dict[str, str]) -> None:
    """The ``acl`` and ``tagging`` fields as the request's x-amz-acl and x-amz-tagging (what the ACL of the new
    object and the policy's condition keys are read from); headers of the POST request itself do not count."""
    from .tagging import check_tags, parse_tagging, tagging_header

    kept = [(n, v) for n, v in ctx.request.headers if n not in ("x-amz-acl", "x-amz-tagging")
            and not n.startswith(("x-amz-grant-", "x-amz-server-side-encryption"))]
    # server-side encryption (SSE-S3, SSE-C) is asked for by fields of the same names as PutObject's headers
    kept += [(n, v) for n, v in fields.items() if n.startswith("x-amz-server-side-encryption")]
    if "acl" in fields:
        kept.append(("x-amz-acl", fields["acl"]))
    if "tagging" in fields:
        tags = check_tags(parse_tagging(fields["tagging"].encode("utf-8")))
        kept.append(("x-amz-tagging", tagging_header(tags)))
    ctx.request.headers = kept


@attrs.define
class _FormState:
    start: FileStart | None = None  # the file part has begun
    done: bool = False  # the file part has ended


async def post_object(ctx: Ctx) -> Response:
    assert ctx.bucket is not None
    bucket = await ctx.meta.get_bucket(ctx.bucket)
    if bucket is None:
        raise S3Error("NoSuchBucket", BucketName=ctx.bucket)
    try:
        parser = FormParser(boundary_of(ctx.header("content-type") or ""))
    except FormError as exc:
        raise _malformed() from exc
    fields: dict[str, str] = {}
    pending: deque[bytes] = deque()
    state = _FormState()

    def absorb(events: list[object]) -> None:
        for event in events:
            if isinstance(event, Field) and state.start is None:
                fields[event.name.lower()] = event.value.decode("utf-8", "replace")
            elif isinstance(event, FileStart) and state.start is None:
                state.start = event
            elif isinstance(event, FileData) and not state.done:
                pending.append(event.data)
            elif isinstance(event, FileEnd):
                state.done = True

    async def feed_more() -> bool:
        data = await ctx.request.receive()
        try:
            if data:
                absorb(parser.feed(data))
                return True
            parser.finish()
        except FormError as exc:
            raise _malformed(str(exc)) from exc
        return False

    while state.start is None:
        if not await feed_more():
            raise _malformed("POST requires exactly one file upload per request.")
    user = await _authenticate(ctx, fields)
    ctx.user = user
    if user is None:
        ctx.auth = "post-anonymous"
    low, high = 0, MAX_PUT_SIZE
    if user is not None:
        try:
            policy = json.loads(base64.b64decode(fields["policy"], validate=True))
        except (binascii.Error, ValueError, RecursionError):  # RecursionError: nesting deeper than json can go
            raise _malformed("Invalid Policy: Invalid JSON.") from None
        low, high = _check_policy(policy, fields, ctx.bucket)
    assert state.start is not None
    filename = state.start.filename
    key = fields.get("key", "").replace("${filename}", filename)
    if not key:
        raise S3Error("InvalidArgument", "Bucket POST must contain a field named 'key'.", ArgumentName="key")
    if len(key.encode("utf-8")) > 1024:
        raise S3Error("KeyTooLongError")
    ctx.key, ctx.user = key, user
    _form_headers(ctx, fields)
    bucket = await ctx.bucket_for("WRITE")  # s3:PutObject on the form's key
    owner = owner_of_new_object(ctx, bucket)
    object_acl = await new_resource_acl(ctx, owner, bucket)
    tags = tags_from_header(ctx)
    # Fields that become response headers, in the form every header value has here (the bytes as latin-1), and
    # the same 2 KiB limit as the x-amz-meta-* headers of a PutObject, checked before the file is read.
    user_meta = check_user_meta(tuple((n[len("x-amz-meta-"):], header_value(v, n)) for n, v in fields.items()
                                      if n.startswith("x-amz-meta-")))
    stored_headers = tuple((h, header_value(fields[h], h)) for h in STORED_HEADERS if h in fields)
    content_type = header_value(fields.get("content-type") or "binary/octet-stream", "Content-Type")

    async def receive() -> bytes:
        while not pending:
            if state.done:
                return b""
            if not await feed_more():
                raise _malformed("the file part has no closing boundary")
        return pending.popleft()

    envelope, data_key = sse.seal(ctx, sse.wanted(ctx, bucket))
    stored = await store_body(ctx, receive, max_size=min(high, MAX_PUT_SIZE), envelope=envelope, data_key=data_key)
    while await feed_more():  # the rest of the form (fields after the file are ignored, as S3 does)
        pass
    size = stored.written.size
    if size < low or size > high:
        await ctx.services.data.discard(stored.written)
        code = "EntityTooSmall" if size < low else "EntityTooLarge"
        raise S3Error(code, "Your proposed upload is " + ("smaller" if size < low else "larger")
                      + " than the allowed size range of the policy.", ProposedSize=str(size))
    obj = m.ObjectVersion(
        bucket=ctx.bucket, key=key, version_id="null", size=size, etag=stored.etag, last_modified=time.time(),
        owner_id=owner, acl=object_acl, tags=tags, manifest=stored.written.manifest, inline=stored.written.inline,
        content_type=content_type,
        headers=crypto.with_envelope(stored_headers, envelope),
        user_meta=user_meta,
        **objectlock.default_lock(bucket),
    )
    async with committing(ctx, stored):
        done = await ctx.meta.put_object(obj, intent_id=stored.written.intent_id,
                                         gc_delay=ctx.services.config.gc_delay, bucket_id=bucket.id)
    etag = f'"{obj.etag}"'
    location = f"/{ctx.bucket}/{quote(key)}"
    versioned = version_header(bucket, done.version.version_id) + sse.response_headers(envelope)
    redirect = fields.get("success_action_redirect")
    if redirect:
        sep = "&" if "?" in redirect else "?"
        target = f"{redirect}{sep}bucket={quote(ctx.bucket)}&key={quote(key)}&etag={quote(etag)}"
        return Response(303, [("Location", target), ("ETag", etag), *versioned], b"")
    status = fields.get("success_action_status", "204")
    headers = [("ETag", etag), ("Location", location), *versioned]
    if status == "201":
        body = document(Tag("PostResponse", Tag("Location", location), Tag("Bucket", ctx.bucket),
                            Tag("Key", key), Tag("ETag", etag)))
        return Response(201, headers + [("Content-Type", "application/xml")], body)
    return Response(200 if status == "200" else 204, headers, b"")

