"""Bucket lifecycle configuration (Put/Get/DeleteBucketLifecycleConfiguration), validated as S3 validates it, and
what a rule says of one object (which rules apply, when its current version expires: ``x-amz-expiration``).

The rules are stored with the bucket as JSON (``Bucket.lifecycle``), one dict per rule:
``{"id", "status", "filter": {"prefix", "tags", "gt", "lt"}, "expiration": {"days"} | {"date"} | {"marker": true},
"noncurrent": {"days", "newer"}, "abort": {"days"}}`` (absent actions omitted). The worker that applies them is
``trio_sos/data/lifecycle.py``.

A day is 86,400 seconds, unless the ``lifecycle_day_seconds`` setting makes it shorter (for tests: rules fire in
seconds). As S3 does, an expiration after N days falls at the first midnight UTC at least N days after the
version's time (with a shortened day: exactly N days after).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import formatdate
from typing import Any

import attrs

from ..data.lifecycle import after_days, day_length, matches, rules
from ..http.server import Response
from ..meta import store as m
from . import params
from .buckets import read_document
from .context import Ctx
from .errors import S3Error
from .xml import Tag, child_text, document, local, parse

MAX_RULES = 1000


def expiry(bucket: m.Bucket, obj: m.ObjectVersion, day: float) -> tuple[float, str] | None:
    """(when, rule id) of the earliest expiration of ``obj`` as the current version, by the enabled rules."""
    best: tuple[float, str] | None = None
    for rule in rules(bucket):
        exp = rule.get("expiration") or {}
        if rule["status"] != "Enabled" or not ("days" in exp or "date" in exp):
            continue
        if not matches(rule, obj.key, obj.size, obj.tags):
            continue
        when = after_days(obj.last_modified, exp["days"], day) if "days" in exp else float(exp["date"])
        if best is None or when < best[0]:
            best = (when, rule["id"])
    return best


def expiration_header(ctx: Ctx, bucket: m.Bucket, obj: m.ObjectVersion) -> list[tuple[str, str]]:
    """``x-amz-expiration: expiry-date="…", rule-id="…"`` for an object a rule will expire."""
    if not bucket.lifecycle or obj.delete_marker:
        return []
    found = expiry(bucket, obj, day_length(ctx.services.config.lifecycle_day_seconds))
    if found is None:
        return []
    rule_id = found[1].replace("\\", "\\\\").replace('"', '\\"')
    return [("x-amz-expiration", f'expiry-date="{formatdate(found[0], usegmt=True)}", rule-id="{rule_id}"')]


# -- parsing and validation --


def _int(node: Any, name: str, what: str, low: int = 1, high: int = 2**31 - 1) -> int:
    text = (child_text(node, name) or "").strip()
    value = params.sint(text) if len(text) <= 11 else None
    if value is None:
        raise S3Error("MalformedXML")
    if not low <= value <= high:
        raise S3Error("InvalidArgument", what, ArgumentName=name, ArgumentValue=text)
    return value


def _children(node: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for child in node:
        out.setdefault(local(child.tag), []).append(child)
    return out


def _only(kids: dict[str, list[Any]], allowed: set[str]) -> None:
    if set(kids) - allowed or any(len(v) > 1 for k, v in kids.items() if k != "Tag"):
        raise S3Error("MalformedXML")


def _tag(node: Any) -> list[str]:
    key, value = child_text(node, "Key"), child_text(node, "Value")
    if key is None or value is None or len(node) != 2:
        raise S3Error("MalformedXML")
    return [key, value]


def _filter(node: Any) -> dict[str, Any]:
    kids = _children(node)
    _only(kids, {"Prefix", "Tag", "And", "ObjectSizeGreaterThan", "ObjectSizeLessThan"})
    if len(kids) > 1 or len(kids.get("Tag", [])) > 1:
        raise S3Error("MalformedXML")  # one condition, or several inside <And>
    out: dict[str, Any] = {"prefix": "", "tags": [], "gt": None, "lt": None}
    if "And" in kids:
        inner = _children(kids["And"][0])
        _only(inner, {"Prefix", "Tag", "ObjectSizeGreaterThan", "ObjectSizeLessThan"})
        node, kids = kids["And"][0], inner
    if "Prefix" in kids:
        out["prefix"] = kids["Prefix"][0].text or ""
    out["tags"] = [_tag(t) for t in kids.get("Tag", [])]
    if len({k for k, _ in out["tags"]}) != len(out["tags"]):
        raise S3Error("InvalidArgument", "Duplicate Tag Keys are not allowed.", ArgumentName="Tag",
                      ArgumentValue="")
    for name, field in (("ObjectSizeGreaterThan", "gt"), ("ObjectSizeLessThan", "lt")):
        if name in kids:
            out[field] = _int(node, name, f"'{name}' should be a non-negative integer", low=0, high=2**62)
    if out["gt"] is not None and out["lt"] is not None and out["gt"] >= out["lt"]:
        raise S3Error("InvalidRequest", "ObjectSizeGreaterThan must be less than ObjectSizeLessThan")
    return out


def _date(text: str) -> float:
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise S3Error("MalformedXML") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if (parsed.hour, parsed.minute, parsed.second, parsed.microsecond) != (0, 0, 0, 0) or \
            parsed.utcoffset() != UTC.utcoffset(None):
        raise S3Error("InvalidArgument", "'Date' must be at midnight GMT", ArgumentName="Date",
                      ArgumentValue=text[:64])
    return parsed.timestamp()


def _rule(node: Any) -> dict[str, Any]:
    kids = _children(node)
    _only(kids, {"ID", "Status", "Filter", "Prefix", "Expiration", "NoncurrentVersionExpiration",
                 "AbortIncompleteMultipartUpload", "Transition", "NoncurrentVersionTransition"})
    if "Transition" in kids or "NoncurrentVersionTransition" in kids:
        raise S3Error("InvalidStorageClass", "Transitions are not supported: this store has one storage class, "
                                             "STANDARD", status=400)
    rule_id = child_text(node, "ID") or ""
    if len(rule_id) > 255:
        raise S3Error("InvalidArgument", "ID length should not exceed allowed limit of 255", ArgumentName="ID",
                      ArgumentValue=rule_id[:64])
    status = (child_text(node, "Status") or "").strip()
    if status not in ("Enabled", "Disabled"):
        raise S3Error("MalformedXML")
    if "Filter" in kids and "Prefix" in kids:
        raise S3Error("MalformedXML")
    if "Filter" in kids:
        flt = _filter(kids["Filter"][0])
    else:  # the legacy form: a top-level Prefix (or nothing: every object)
        flt = {"prefix": kids["Prefix"][0].text or "" if "Prefix" in kids else "", "tags": [], "gt": None,
               "lt": None}
    rule: dict[str, Any] = {"id": rule_id, "status": status, "filter": flt}
    if "Expiration" in kids:
        exp = kids["Expiration"][0]
        parts = _children(exp)
        _only(parts, {"Days", "Date", "ExpiredObjectDeleteMarker"})
        if len(parts) != 1:
            raise S3Error("MalformedXML")
        if "Days" in parts:
            rule["expiration"] = {"days": _int(exp, "Days", "'Days' for Expiration action must be a positive "
                                                            "integer")}
        elif "Date" in parts:
            rule["expiration"] = {"date": _date(parts["Date"][0].text or "")}
        else:
            flag = (parts["ExpiredObjectDeleteMarker"][0].text or "").strip().lower()
            if flag not in ("true", "false"):
                raise S3Error("MalformedXML")
            if flt["tags"]:
                raise S3Error("InvalidRequest", "ExpiredObjectDeleteMarker cannot be specified with object tags")
            if flag == "true":
                rule["expiration"] = {"marker": True}
    if "NoncurrentVersionExpiration" in kids:
        nve = kids["NoncurrentVersionExpiration"][0]
        parts = _children(nve)
        _only(parts, {"NoncurrentDays", "NewerNoncurrentVersions"})
        if "NoncurrentDays" not in parts:
            raise S3Error("MalformedXML")
        rule["noncurrent"] = {"days": _int(nve, "NoncurrentDays", "'NoncurrentDays' for NoncurrentVersionExpiration "
                                                                  "action must be a positive integer")}
        if "NewerNoncurrentVersions" in parts:
            rule["noncurrent"]["newer"] = _int(nve, "NewerNoncurrentVersions", "'NewerNoncurrentVersions' for "
                                               "NoncurrentVersionExpiration action must be a positive integer less "
                                               "than or equal to 100", high=100)
    if "AbortIncompleteMultipartUpload" in kids:
        abort = kids["AbortIncompleteMultipartUpload"][0]
        _only(_children(abort), {"DaysAfterInitiation"})
        if flt["tags"]:
            raise S3Error("InvalidRequest", "AbortIncompleteMultipartUpload cannot be specified with Tags.")
        rule["abort"] = {"days": _int(abort, "DaysAfterInitiation", "'DaysAfterInitiation' for "
                                      "AbortIncompleteMultipartUpload action must be a positive integer")}
    if not {"Expiration", "NoncurrentVersionExpiration", "AbortIncompleteMultipartUpload"} & set(kids):
        raise S3Error("InvalidRequest", "At least one action needs to be specified in a rule")
    return rule


def parse_configuration(raw: bytes) -> list[dict[str, Any]]:
    root = parse(raw)
    if local(root.tag) != "LifecycleConfiguration":
        raise S3Error("MalformedXML")
    nodes = list(root)
    if not nodes or any(local(n.tag) != "Rule" for n in nodes) or len(nodes) > MAX_RULES:
        raise S3Error("MalformedXML")
    out = [_rule(n) for n in nodes]
    for i, rule in enumerate(out):  # S3 gives rules without an ID one of its own
        if not rule["id"]:
            rule["id"] = f"rule-{i + 1}"
    ids = [r["id"] for r in out]
    if len(set(ids)) != len(ids):
        raise S3Error("InvalidArgument", "Rule ID must be unique. Found same ID for more than one rule",
                      ArgumentName="ID", ArgumentValue=next(i for i in ids if ids.count(i) > 1)[:64])
    return out


def render(rules_: list[dict[str, Any]]) -> bytes:
    out = []
    for r in rules_:
        f = r["filter"]
        conditions = ([Tag("Prefix", f["prefix"])] if f["prefix"] or not (f["tags"] or f["gt"] is not None
                                                                          or f["lt"] is not None) else [])
        conditions += [Tag("Tag", Tag("Key", k), Tag("Value", v)) for k, v in f["tags"]]
        if f["gt"] is not None:
            conditions.append(Tag("ObjectSizeGreaterThan", f["gt"]))
        if f["lt"] is not None:
            conditions.append(Tag("ObjectSizeLessThan", f["lt"]))
        flt = Tag("Filter", Tag("And", conditions) if len(conditions) > 1 else conditions)
        actions = []
        exp = r.get("expiration")
        if exp:
            if "days" in exp:
                actions.append(Tag("Expiration", Tag("Days", exp["days"])))
            elif "date" in exp:
                stamp = datetime.fromtimestamp(exp["date"], UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
                actions.append(Tag("Expiration", Tag("Date", stamp)))
            else:
                actions.append(Tag("Expiration", Tag("ExpiredObjectDeleteMarker", True)))
        if r.get("noncurrent"):
            n = r["noncurrent"]
            actions.append(Tag("NoncurrentVersionExpiration", Tag("NoncurrentDays", n["days"]),
                               Tag("NewerNoncurrentVersions", n["newer"]) if "newer" in n else None))
        if r.get("abort"):
            actions.append(Tag("AbortIncompleteMultipartUpload", Tag("DaysAfterInitiation", r["abort"]["days"])))
        out.append(Tag("Rule", Tag("ID", r["id"]), flt, Tag("Status", r["status"]), actions))
    return document(Tag("LifecycleConfiguration", out))


# -- the operations --


async def put_bucket_lifecycle(ctx: Ctx) -> Response:
    bucket = await ctx.bucket_for("OWNER")
    parsed = parse_configuration(await read_document(ctx))
    await ctx.meta.update_bucket(attrs.evolve(bucket, lifecycle=json.dumps(parsed)))
    return Response(200, [], b"")


async def get_bucket_lifecycle(ctx: Ctx) -> Response:
    bucket = await ctx.bucket_for("OWNER")
    if not bucket.lifecycle:
        raise S3Error("NoSuchLifecycleConfiguration", "The lifecycle configuration does not exist", status=404,
                      BucketName=bucket.name)
    return Response(200, [("Content-Type", "application/xml")], render(rules(bucket)))


async def delete_bucket_lifecycle(ctx: Ctx) -> Response:
    bucket = await ctx.bucket_for("OWNER")
    if bucket.lifecycle:
        await ctx.meta.update_bucket(attrs.evolve(bucket, lifecycle=""))
    return Response(204, [], b"")
