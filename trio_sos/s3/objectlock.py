"""Object lock (WORM): the bucket's configuration, each version's retention and legal hold, and the headers that set
them on writes and show them on reads.

What may not happen to a locked version is enforced by the metadata store, in the step that would remove or
replace it (``ObjectLocked``; see ``meta/store.py``): this module parses, validates and decides who may bypass.
Dates are compared on the node's clock and kept as UTC seconds.

Who may bypass GOVERNANCE retention (``x-amz-bypass-governance-retention: true``): the bucket's owner — until
bucket and user policies give ``s3:BypassGovernanceRetention`` to others.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import attrs

from ..http.server import Response
from ..meta import store as m
from . import params
from .buckets import read_document
from .context import Ctx
from .errors import S3Error
from .xml import Tag, child_text, document, local, parse

MODES = ("GOVERNANCE", "COMPLIANCE")
DAY = 86400.0
MAX_DAYS = 36500  # 100 years, AWS's bound for a default retention

# Multipart uploads carry the lock their object will get from CreateMultipartUpload to the completion among their
# stored header pairs, under these names (taken out of the headers again at completion).
UPLOAD_LOCK_HEADERS = ("x-amz-object-lock-mode", "x-amz-object-lock-retain-until-date",
                       "x-amz-object-lock-legal-hold")


def config(bucket: m.Bucket) -> dict | None:
    """The bucket's object lock configuration ({"mode", "days"} or {} without a default retention), or None when
    object lock is not enabled on it."""
    if not bucket.object_lock:
        return None
    value = json.loads(bucket.object_lock)
    return value if isinstance(value, dict) else {}


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ts * 1000) % 1000:03d}Z"


def parse_date(value: str, name: str) -> float:
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise S3Error("InvalidArgument", "The retain until date must be provided in ISO 8601 format",
                      ArgumentName=name, ArgumentValue=value[:64]) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def may_bypass(ctx: Ctx, bucket: m.Bucket) -> bool:
    """x-amz-bypass-governance-retention: true, from the bucket's owner or a caller the bucket policy allows
    s3:BypassGovernanceRetention (and does not deny it)."""
    from .access import decide, owner_rights

    asked = (ctx.header("x-amz-bypass-governance-retention") or "").strip().lower() == "true"
    if not asked:
        return False
    verdict = decide(ctx, bucket, "s3:BypassGovernanceRetention", ctx.key)
    if verdict == "Deny":
        return False
    return verdict == "Allow" or owner_rights(ctx, bucket.owner_id)


def lock_fields(ctx: Ctx, bucket: m.Bucket) -> dict:
    """The lock a write gives its new version: from its x-amz-object-lock-* headers (validated as S3 does), else
    the bucket's default retention; {} for a bucket without object lock."""
    mode = ctx.header("x-amz-object-lock-mode")
    until = ctx.header("x-amz-object-lock-retain-until-date")
    hold = ctx.header("x-amz-object-lock-legal-hold")
    cfg = config(bucket)
    if cfg is None:
        if mode is not None or until is not None or hold is not None:
            raise S3Error("InvalidRequest", "Bucket is missing Object Lock Configuration")
        return {}
    fields: dict = {}
    if hold is not None:
        if hold.strip() not in ("ON", "OFF"):
            raise S3Error("InvalidArgument", "Legal Hold must be either of 'ON' or 'OFF'",
                          ArgumentName="x-amz-object-lock-legal-hold", ArgumentValue=hold[:16])
        fields["legal_hold"] = hold.strip() == "ON"
    if (mode is None) != (until is None):
        raise S3Error("InvalidArgument", "x-amz-object-lock-retain-until-date and x-amz-object-lock-mode must both "
                                         "be supplied", ArgumentName="x-amz-object-lock-mode"
                      if mode is None else "x-amz-object-lock-retain-until-date", ArgumentValue="")
    if mode is not None and until is not None:
        if mode.strip() not in MODES:
            raise S3Error("InvalidArgument", "Unknown wormMode directive.", ArgumentName="x-amz-object-lock-mode",
                          ArgumentValue=mode[:32])
        retain = parse_date(until, "x-amz-object-lock-retain-until-date")
        if retain <= time.time():
            raise S3Error("InvalidArgument", "The retain until date must be in the future!",
                          ArgumentName="x-amz-object-lock-retain-until-date", ArgumentValue=until[:64])
        fields.update(lock_mode=mode.strip(), retain_until=retain)
    else:
        fields.update(default_lock(bucket))
    return fields


def default_lock(bucket: m.Bucket) -> dict:
    """The bucket's default retention for a new version (a browser-form upload takes only this: its headers are not
    covered by the signed policy)."""
    cfg = config(bucket)
    if not cfg or not cfg.get("mode"):
        return {}
    return {"lock_mode": cfg["mode"], "retain_until": time.time() + cfg["days"] * DAY}


def lock_headers(obj: m.ObjectVersion) -> list[tuple[str, str]]:
    out = []
    if obj.lock_mode:
        out += [("x-amz-object-lock-mode", obj.lock_mode),
                ("x-amz-object-lock-retain-until-date", iso(obj.retain_until))]
    if obj.legal_hold:
        out.append(("x-amz-object-lock-legal-hold", "ON"))
    return out


def upload_lock_pairs(fields: dict) -> tuple[tuple[str, str], ...]:
    """A multipart upload's lock, as header pairs it keeps until its completion."""
    pairs = []
    if fields.get("lock_mode"):
        pairs += [(UPLOAD_LOCK_HEADERS[0], fields["lock_mode"]), (UPLOAD_LOCK_HEADERS[1], repr(fields["retain_until"]))]
    if "legal_hold" in fields:
        pairs.append((UPLOAD_LOCK_HEADERS[2], "ON" if fields["legal_hold"] else "OFF"))
    return tuple(pairs)


def from_upload_pairs(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[tuple[str, str], ...], dict]:
    """(the upload's stored headers without its lock pairs, the lock fields its object gets)."""
    kept = tuple((n, v) for n, v in headers if n not in UPLOAD_LOCK_HEADERS)
    found = dict((n, v) for n, v in headers if n in UPLOAD_LOCK_HEADERS)
    fields: dict = {}
    if UPLOAD_LOCK_HEADERS[0] in found:
        fields.update(lock_mode=found[UPLOAD_LOCK_HEADERS[0]], retain_until=float(found[UPLOAD_LOCK_HEADERS[1]]))
    if UPLOAD_LOCK_HEADERS[2] in found:
        fields["legal_hold"] = found[UPLOAD_LOCK_HEADERS[2]] == "ON"
    return kept, fields


def locked_error() -> S3Error:
    return S3Error("AccessDenied", "Access Denied because object protected by object lock.")


# -- Put/GetObjectLockConfiguration --


def parse_configuration(raw: bytes) -> dict:
    root = parse(raw)
    if local(root.tag) != "ObjectLockConfiguration":
        raise S3Error("MalformedXML")
    names = [local(n.tag) for n in root]
    if any(n not in ("ObjectLockEnabled", "Rule") for n in names) or len(set(names)) != len(names):
        raise S3Error("MalformedXML")
    if (child_text(root, "ObjectLockEnabled") or "").strip() != "Enabled":
        raise S3Error("MalformedXML")
    rule = next((n for n in root if local(n.tag) == "Rule"), None)
    if rule is None:
        return {}
    retention = [n for n in rule if local(n.tag) == "DefaultRetention"]
    if len(retention) != 1 or len(list(rule)) != 1:
        raise S3Error("MalformedXML")
    node = retention[0]
    parts = [local(n.tag) for n in node]
    if any(p not in ("Mode", "Days", "Years") for p in parts) or len(set(parts)) != len(parts):
        raise S3Error("MalformedXML")
    mode = (child_text(node, "Mode") or "").strip()
    if mode not in MODES:
        raise S3Error("MalformedXML")
    days, years = child_text(node, "Days"), child_text(node, "Years")
    if (days is None) == (years is None):
        raise S3Error("MalformedXML")
    raw_value = (days if days is not None else years or "").strip()
    value = params.sint(raw_value) if len(raw_value) <= 6 else None
    if value is None:
        raise S3Error("MalformedXML")
    if value <= 0:
        raise S3Error("InvalidArgument", "Default retention period must be a positive integer value.",
                      ArgumentName="Days" if days is not None else "Years", ArgumentValue=raw_value)
    total = value if days is not None else value * 365
    if total > MAX_DAYS:
        raise S3Error("InvalidArgument", "Default retention period is too large.",
                      ArgumentName="Days" if days is not None else "Years", ArgumentValue=raw_value)
    out: dict = {"mode": mode, "days": total}
    out["unit"] = ["Days", value] if days is not None else ["Years", value]
    return out


async def put_object_lock_configuration(ctx: Ctx) -> Response:
    bucket = await ctx.bucket_for("OWNER")
    cfg = parse_configuration(await read_document(ctx))
    if config(bucket) is None and bucket.versioning != "Enabled":
        raise S3Error("InvalidBucketState", "Versioning must be 'Enabled' on the bucket to apply a Object Lock "
                                            "configuration", status=409)
    await ctx.meta.update_bucket(attrs.evolve(bucket, versioning="Enabled", object_lock=json.dumps(cfg)))
    return Response(200, [], b"")


async def get_object_lock_configuration(ctx: Ctx) -> Response:
    bucket = await ctx.bucket_for("OWNER")
    cfg = config(bucket)
    if cfg is None:
        raise S3Error("ObjectLockConfigurationNotFoundError", "Object Lock configuration does not exist for this "
                                                              "bucket", status=404, BucketName=bucket.name)
    rule = None
    if cfg.get("mode"):
        unit, value = cfg.get("unit", ["Days", cfg["days"]])
        rule = Tag("Rule", Tag("DefaultRetention", Tag("Mode", cfg["mode"]), Tag(unit, value)))
    body = document(Tag("ObjectLockConfiguration", Tag("ObjectLockEnabled", "Enabled"), rule))
    return Response(200, [("Content-Type", "application/xml")], body)


# -- Put/GetObjectRetention, Put/GetObjectLegalHold --


async def _version(ctx: Ctx, permission: str) -> tuple[m.Bucket, m.ObjectVersion]:
    from .access import check_object, named_object

    bucket, obj = await named_object(ctx)
    check_object(ctx, obj, permission)
    if config(bucket) is None:
        raise S3Error("InvalidRequest", "Bucket is missing Object Lock Configuration")
    return bucket, obj


async def _update(ctx: Ctx, new: m.ObjectVersion, read: m.ObjectVersion) -> None:
    if not await ctx.meta.update_object(new, read=read):
        raise S3Error("OperationAborted", "A conflicting conditional operation is currently in progress against "
                                          "this resource. Please try again.", status=409)


async def get_object_retention(ctx: Ctx) -> Response:
    _, obj = await _version(ctx, "READ")
    if not obj.lock_mode:
        raise S3Error("NoSuchObjectLockConfiguration", "The specified object does not have a ObjectLock "
                                                       "configuration", status=404)
    body = document(Tag("Retention", Tag("Mode", obj.lock_mode), Tag("RetainUntilDate", iso(obj.retain_until))))
    return Response(200, [("Content-Type", "application/xml")], body)


async def put_object_retention(ctx: Ctx) -> Response:
    from .versioning import version_header

    bucket, obj = await _version(ctx, "WRITE")
    root = parse(await read_document(ctx))
    names = [local(n.tag) for n in root]
    if local(root.tag) != "Retention" or any(n not in ("Mode", "RetainUntilDate") for n in names) \
            or len(set(names)) != len(names):
        raise S3Error("MalformedXML")
    mode, until = child_text(root, "Mode"), child_text(root, "RetainUntilDate")
    if (mode is None) != (until is None):
        raise S3Error("MalformedXML")
    now = time.time()
    new_mode, new_until = "", 0.0
    if mode is not None and until is not None:
        new_mode = mode.strip()
        if new_mode not in MODES:
            raise S3Error("MalformedXML")
        new_until = parse_date(until, "RetainUntilDate")
        if new_until <= now:
            raise S3Error("InvalidArgument", "The retain until date must be in the future!",
                          ArgumentName="RetainUntilDate", ArgumentValue=until[:64])
    active = bool(obj.lock_mode) and obj.retain_until > now
    weaker = new_until < obj.retain_until or (obj.lock_mode == "COMPLIANCE" and new_mode != "COMPLIANCE")
    if active and weaker:
        # COMPLIANCE retention is only ever extended; GOVERNANCE is shortened or removed only with the bypass
        if obj.lock_mode == "COMPLIANCE" or not may_bypass(ctx, bucket):
            raise locked_error()
    await _update(ctx, attrs.evolve(obj, lock_mode=new_mode, retain_until=new_until), obj)
    return Response(200, version_header(bucket, obj.version_id), b"")


async def get_object_legal_hold(ctx: Ctx) -> Response:
    _, obj = await _version(ctx, "READ")
    body = document(Tag("LegalHold", Tag("Status", "ON" if obj.legal_hold else "OFF")))
    return Response(200, [("Content-Type", "application/xml")], body)


async def put_object_legal_hold(ctx: Ctx) -> Response:
    from .versioning import version_header

    bucket, obj = await _version(ctx, "WRITE")
    root = parse(await read_document(ctx))
    if local(root.tag) != "LegalHold" or [local(n.tag) for n in root] != ["Status"]:
        raise S3Error("MalformedXML")
    status = (child_text(root, "Status") or "").strip()
    if status not in ("ON", "OFF"):
        raise S3Error("MalformedXML")
    await _update(ctx, attrs.evolve(obj, legal_hold=status == "ON"), obj)
    return Response(200, version_header(bucket, obj.version_id), b"")
