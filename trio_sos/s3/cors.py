"""CORS: Put/Get/DeleteBucketCors, OPTIONS preflight, and the CORS headers of actual requests."""

from __future__ import annotations

import fnmatch
import json

import attrs

from ..http.server import Response
from ..meta import store as m
from . import params
from .buckets import read_document
from .context import Ctx
from .errors import S3Error
from .xml import Tag, document, local, parse

METHODS = ("GET", "PUT", "POST", "DELETE", "HEAD")
MAX_RULES = 100


@attrs.frozen
class Rule:
    origins: tuple[str, ...]
    methods: tuple[str, ...]
    headers: tuple[str, ...] = ()
    expose: tuple[str, ...] = ()
    max_age: int | None = None
    id: str = ""

    def matches(self, origin: str, method: str, request_headers: list[str]) -> bool:
        if method not in self.methods:
            return False
        if not any(fnmatch.fnmatchcase(origin, pattern) for pattern in self.origins):
            return False
        allowed = [h.lower() for h in self.headers]
        return all(any(fnmatch.fnmatchcase(h.lower(), pattern) for pattern in allowed) for h in request_headers)


def parse_rules(body: bytes) -> list[Rule]:
    root = parse(body)
    if local(root.tag) != "CORSConfiguration":
        raise S3Error("MalformedXML")
    rules = []
    for node in root:
        if local(node.tag) != "CORSRule":
            raise S3Error("MalformedXML")
        fields: dict[str, list[str]] = {}
        for child in node:
            fields.setdefault(local(child.tag), []).append((child.text or "").strip())
        methods = tuple(fields.get("AllowedMethod", []))
        origins = tuple(fields.get("AllowedOrigin", []))
        if not methods or not origins:
            raise S3Error("MalformedXML")
        for method in methods:
            if method not in METHODS:
                raise S3Error("InvalidRequest", f"Found unsupported HTTP method in CORS config. Unsupported "
                                                f"method is {method}")
        for origin in origins:
            if origin.count("*") > 1:
                raise S3Error("InvalidRequest", f'AllowedOrigin "{origin}" can not have more than one wildcard.')
        raw_age = fields.get("MaxAgeSeconds", [None])[0]
        max_age = params.sint(raw_age, 10) if raw_age is not None else None
        if raw_age is not None and (max_age is None or not -params.INT32_MAX - 1 <= max_age <= params.INT32_MAX):
            raise S3Error("MalformedXML")
        rules.append(Rule(origins, methods, tuple(fields.get("AllowedHeader", [])),
                          tuple(fields.get("ExposeHeader", [])), max_age, fields.get("ID", [""])[0]))
    if not rules or len(rules) > MAX_RULES:
        raise S3Error("MalformedXML")
    return rules


def dumps(rules: list[Rule]) -> str:
    return json.dumps([attrs.asdict(r) for r in rules])


def loads(text: str) -> list[Rule]:
    if not text:
        return []
    return [Rule(origins=tuple(r["origins"]), methods=tuple(r["methods"]), headers=tuple(r["headers"]),
                 expose=tuple(r["expose"]), max_age=r["max_age"], id=r["id"]) for r in json.loads(text)]


async def put_bucket_cors(ctx: Ctx) -> Response:
    bucket = await ctx.bucket_for("OWNER")
    rules = parse_rules(await read_document(ctx))
    try:
        await ctx.meta.update_bucket(attrs.evolve(bucket, cors=dumps(rules)))
    except m.NoSuchBucket:
        raise S3Error("NoSuchBucket", BucketName=bucket.name) from None
    return Response(200, [], b"")


async def get_bucket_cors(ctx: Ctx) -> Response:
    bucket = await ctx.bucket_for("OWNER")
    rules = loads(bucket.cors)
    if not rules:
        raise S3Error("NoSuchCORSConfiguration", "The CORS configuration does not exist", status=404,
                      BucketName=bucket.name)
    body = document(Tag("CORSConfiguration", [
        Tag("CORSRule", Tag("ID", r.id) if r.id else None,
            [Tag("AllowedHeader", h) for h in r.headers], [Tag("AllowedMethod", x) for x in r.methods],
            [Tag("AllowedOrigin", o) for o in r.origins], [Tag("ExposeHeader", e) for e in r.expose],
            Tag("MaxAgeSeconds", r.max_age) if r.max_age is not None else None)
        for r in rules]))
    return Response(200, [("Content-Type", "application/xml")], body)


async def delete_bucket_cors(ctx: Ctx) -> Response:
    bucket = await ctx.bucket_for("OWNER")
    await ctx.meta.update_bucket(attrs.evolve(bucket, cors=""))
    return Response(204, [], b"")


def _allow_headers(rule: Rule, origin: str) -> list[tuple[str, str]]:
    headers = [("Access-Control-Allow-Origin", "*" if "*" in rule.origins else origin),
               ("Access-Control-Allow-Methods", ", ".join(rule.methods)),
               ("Vary", "Origin, Access-Control-Request-Headers, Access-Control-Request-Method")]
    if "*" not in rule.origins:
        headers.append(("Access-Control-Allow-Credentials", "true"))
    if rule.expose:
        headers.append(("Access-Control-Expose-Headers", ", ".join(rule.expose)))
    if rule.max_age is not None:
        headers.append(("Access-Control-Max-Age", str(rule.max_age)))
    return headers


_FORBIDDEN = ("CORSResponse: This CORS request is not allowed. This is usually because the evalution of Origin, "
              "request method / Access-Control-Request-Method or Access-Control-Request-Headers are not "
              "whitelisted by the resource's CORS spec.")


async def preflight(ctx: Ctx) -> Response:
    """OPTIONS: unauthenticated, answered from the bucket's CORS rules."""
    origin = ctx.header("origin")
    method = ctx.header("access-control-request-method")
    if origin is None or method is None:
        raise S3Error("BadRequest", "Insufficient information. Origin request header needed.", status=400)
    bucket = await ctx.meta.get_bucket(ctx.bucket or "")
    if bucket is None:
        raise S3Error("NoSuchBucket", BucketName=ctx.bucket or "")
    wanted = [h.strip() for h in (ctx.header("access-control-request-headers") or "").split(",") if h.strip()]
    for rule in loads(bucket.cors):
        if rule.matches(origin, method, wanted):
            headers = _allow_headers(rule, origin)
            if wanted:
                headers.append(("Access-Control-Allow-Headers", ", ".join(wanted)))
            return Response(200, headers, b"")
    raise S3Error("AccessForbidden", _FORBIDDEN, status=403)


async def response_headers(ctx: Ctx) -> list[tuple[str, str]]:
    """CORS headers for an actual (non-preflight) request from a browser, if a rule allows it."""
    origin = ctx.header("origin")
    if origin is None or ctx.bucket is None:
        return []
    bucket = await ctx.meta.get_bucket(ctx.bucket)
    if bucket is None or not bucket.cors:
        return []
    for rule in loads(bucket.cors):
        if rule.matches(origin, ctx.request.method, []):
            return _allow_headers(rule, origin)
    return []
