"""Bucket versioning (Put/GetBucketVersioning), ListObjectVersions, and how every object operation finds the
version a request names (``?versionId=``, or the latest).

The state machine is S3's: a bucket starts unversioned, and once Enabled it can only go Suspended and back. The
store reads the state in the same step as each write (``meta/store.py``), so a write racing a change of state is
either versioned or not, never half.
"""

from __future__ import annotations

from ..http.server import Response, http_date
from ..meta import store as m
from .buckets import iso8601, read_document
from .context import Ctx
from .errors import S3Error
from .listing import _encoder, _max_keys
from .xml import Tag, child_text, document, local, parse


def version_id_param(ctx: Ctx, name: str = "versionId") -> str | None:
    """The ``versionId`` the request names (None: the latest), checked: S3 answers a malformed one 400."""
    value = ctx.query.get(name)
    if value is None:
        return None
    if value == "":
        raise S3Error("InvalidArgument", "Version id cannot be the empty string", ArgumentName=name,
                      ArgumentValue=value)
    if not m.valid_version_id(value):
        raise S3Error("InvalidArgument", "Invalid version id specified", ArgumentName=name,
                      ArgumentValue=value[:256])
    return value


def marker_headers(obj: m.ObjectVersion) -> list[tuple[str, str]]:
    return [("x-amz-delete-marker", "true"), ("x-amz-version-id", obj.version_id)]


async def find_version(ctx: Ctx, bucket: str, key: str, version_id: str | None) -> m.ObjectVersion | None:
    """The version the request names — the latest if ``version_id`` is None — that is an object, not a delete
    marker; None when there is no such key or version (the caller decides what the caller may learn of it).
    A delete marker: 404 NoSuchKey when it is the latest (with ``x-amz-delete-marker``), 405 when named by its
    id, as S3 answers."""
    obj = await ctx.meta.get_object(bucket, key, version_id)
    if obj is not None and obj.delete_marker:
        if version_id is None:
            raise S3Error("NoSuchKey", Key=key).with_headers(marker_headers(obj))
        raise S3Error("MethodNotAllowed", "The specified method is not allowed against this resource.",
                      Method=ctx.request.method, ResourceType="DeleteMarker").with_headers(
            [*marker_headers(obj), ("Allow", "DELETE"), ("Last-Modified", http_date(obj.last_modified))])
    return obj


def missing(key: str, version_id: str | None) -> S3Error:
    if version_id is None:
        return S3Error("NoSuchKey", Key=key)
    return S3Error("NoSuchVersion", Key=key, VersionId=version_id)


def version_header(bucket: m.Bucket, version_id: str) -> list[tuple[str, str]]:
    """``x-amz-version-id`` of an answer about a version: in buckets that have versioning (Enabled or
    Suspended), as S3 sends it; never in a bucket whose versioning was never enabled."""
    return [("x-amz-version-id", version_id)] if bucket.versioning or version_id != "null" else []


# -- Put/GetBucketVersioning --


async def get_bucket_versioning(ctx: Ctx) -> Response:
    bucket = await ctx.bucket_for("OWNER")
    # never versioned: S3 answers an empty configuration (no Status element)
    body = document(Tag("VersioningConfiguration", Tag("Status", bucket.versioning) if bucket.versioning else None))
    return Response(200, [("Content-Type", "application/xml")], body)


async def put_bucket_versioning(ctx: Ctx) -> Response:
    import attrs

    bucket = await ctx.bucket_for("OWNER")
    root = parse(await read_document(ctx))
    if local(root.tag) != "VersioningConfiguration":
        raise S3Error("MalformedXML")
    names = [local(node.tag) for node in root]
    if any(n not in ("Status", "MfaDelete") for n in names) or len(set(names)) != len(names):
        raise S3Error("MalformedXML")
    status = child_text(root, "Status")
    mfa = child_text(root, "MfaDelete")
    if mfa is not None and mfa.strip() not in ("Enabled", "Disabled"):
        raise S3Error("MalformedXML")
    if mfa is not None and mfa.strip() == "Enabled":
        raise S3Error("NotImplemented", "MFA Delete is not supported by this server")
    if status is None:  # nothing asked: S3 changes nothing
        return Response(200, [], b"")
    status = status.strip()
    if status not in ("Enabled", "Suspended"):
        raise S3Error("MalformedXML")
    if status == "Suspended" and bucket.object_lock:
        raise S3Error("InvalidBucketState", "An Object Lock configuration is present on this bucket, so the "
                                            "versioning state cannot be changed.", status=409)
    # "Suspended" on a bucket never enabled is accepted, as S3 does: its writes stay null versions
    if bucket.versioning != status:
        await ctx.meta.update_bucket(attrs.evolve(bucket, versioning=status))
    return Response(200, [], b"")


# -- ListObjectVersions --


async def list_object_versions(ctx: Ctx) -> Response:
    await ctx.bucket_for("READ")
    assert ctx.bucket is not None
    prefix, delimiter = ctx.query.get("prefix", ""), ctx.query.get("delimiter", "")
    key_marker = ctx.query.get("key-marker", "")
    id_marker = ctx.query.get("version-id-marker", "")
    if id_marker:
        if not key_marker:
            raise S3Error("InvalidArgument", "A version-id marker cannot be specified without a key marker.",
                          ArgumentName="version-id-marker", ArgumentValue=id_marker[:256])
        if not m.valid_version_id(id_marker):
            raise S3Error("InvalidArgument", "Invalid version id specified", ArgumentName="version-id-marker",
                          ArgumentValue=id_marker[:256])
    max_keys, enc = _max_keys(ctx), _encoder(ctx)
    page = await ctx.meta.list_versions(ctx.bucket, prefix=prefix, delimiter=delimiter, key_marker=key_marker,
                                        version_id_marker=id_marker, limit=max_keys)
    names: dict[str, str] = {}
    entries = []
    for v in page.versions:
        if v.owner_id not in names:
            user = await ctx.services.user_by_id(v.owner_id)
            names[v.owner_id] = user.display_name if user else v.owner_id
        owner = Tag("Owner", Tag("ID", v.owner_id), Tag("DisplayName", names[v.owner_id]))
        if v.delete_marker:
            entries.append(Tag("DeleteMarker", Tag("Key", enc(v.key)), Tag("VersionId", v.version_id),
                               Tag("IsLatest", v.is_latest), Tag("LastModified", iso8601(v.last_modified)), owner))
        else:
            entries.append(Tag("Version", Tag("Key", enc(v.key)), Tag("VersionId", v.version_id),
                               Tag("IsLatest", v.is_latest), Tag("LastModified", iso8601(v.last_modified)),
                               Tag("ETag", f'"{v.etag}"'), Tag("Size", v.size), Tag("StorageClass", "STANDARD"),
                               owner))
    truncated = page.truncated
    body = document(Tag(
        "ListVersionsResult",
        Tag("Name", ctx.bucket), Tag("Prefix", enc(prefix)), Tag("KeyMarker", enc(key_marker)),
        Tag("VersionIdMarker", id_marker),
        Tag("NextKeyMarker", enc(page.next_key_marker)) if truncated else None,
        Tag("NextVersionIdMarker", page.next_version_id_marker) if truncated and page.next_version_id_marker
        else None,
        Tag("MaxKeys", max_keys), Tag("Delimiter", enc(delimiter)) if delimiter else None,
        Tag("EncodingType", "url") if "encoding-type" in ctx.query else None,
        Tag("IsTruncated", truncated), entries,
        [Tag("CommonPrefixes", Tag("Prefix", enc(p))) for p in page.prefixes],
    ))
    return Response(200, [("Content-Type", "application/xml")], body)
