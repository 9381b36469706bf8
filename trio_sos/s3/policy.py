"""Bucket policies: the JSON policy language as S3 evaluates it — parsed and validated (``MalformedPolicy`` with
AWS's messages), then evaluated against a request's context. Pure functions: no I/O, no request objects (the
context is built by ``access.py``); tested without a server.

Evaluation of one policy gives ``"Deny"`` (a matching Deny statement: it wins over everything), ``"Allow"`` (a
matching Allow and no matching Deny) or None (no statement applies). A statement applies when its principal, its
action, its resource and every one of its conditions match. Within a condition block every operator and every key
must hold (AND); a key given several values holds if any does (OR) — for a negated operator (StringNotEquals,
NotIpAddress...) if none does. A key the request does not have makes a condition false, but true for a negated
operator and for the ``...IfExists`` forms; ``Null`` tests presence itself. ``ForAnyValue:`` / ``ForAllValues:``
compare a multi-valued key (s3:RequestObjectTagKeys) value by value; ``ForAllValues`` holds for an empty or absent
key, as in IAM.

Principals: ``"*"`` / ``{"AWS": "*"}`` (anyone, anonymous callers included), a user's ARN
(``arn:aws:iam::ACCOUNT:user/NAME``, NAME being the user's id; this store has one account, the 12 digits are not
compared) or ``{"CanonicalUser": ID}``; ``{"Service": ...}`` is accepted and matches no request here.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache

import attrs

MAX_SIZE = 20 * 1024
VERSIONS = ("2012-10-17", "2008-10-17")

# every action this store answers to (IAM's spelling), and whether it applies to a bucket or to an object
BUCKET_ACTIONS = frozenset({
    "s3:CreateBucket", "s3:DeleteBucket", "s3:ListBucket", "s3:ListBucketVersions", "s3:ListBucketMultipartUploads",
    "s3:GetBucketLocation", "s3:GetBucketAcl", "s3:PutBucketAcl", "s3:GetBucketCORS", "s3:PutBucketCORS",
    "s3:GetBucketVersioning", "s3:PutBucketVersioning", "s3:GetBucketTagging", "s3:PutBucketTagging",
    "s3:GetLifecycleConfiguration", "s3:PutLifecycleConfiguration", "s3:GetBucketObjectLockConfiguration",
    "s3:PutBucketObjectLockConfiguration", "s3:GetBucketPolicy", "s3:PutBucketPolicy", "s3:DeleteBucketPolicy",
    "s3:GetBucketPolicyStatus", "s3:GetBucketPublicAccessBlock", "s3:PutBucketPublicAccessBlock",
    "s3:GetBucketOwnershipControls", "s3:PutBucketOwnershipControls", "s3:GetEncryptionConfiguration",
    "s3:PutEncryptionConfiguration",
})
OBJECT_ACTIONS = frozenset({
    "s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion",
    "s3:GetObjectAcl", "s3:GetObjectVersionAcl", "s3:PutObjectAcl", "s3:PutObjectVersionAcl",
    "s3:GetObjectTagging", "s3:GetObjectVersionTagging", "s3:PutObjectTagging", "s3:PutObjectVersionTagging",
    "s3:DeleteObjectTagging", "s3:DeleteObjectVersionTagging", "s3:GetObjectAttributes",
    "s3:GetObjectVersionAttributes", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts",
    "s3:GetObjectRetention", "s3:PutObjectRetention", "s3:GetObjectLegalHold", "s3:PutObjectLegalHold",
    "s3:BypassGovernanceRetention",
})
SERVICE_ACTIONS = frozenset({"s3:ListAllMyBuckets"})
ACTIONS = BUCKET_ACTIONS | OBJECT_ACTIONS | SERVICE_ACTIONS
_ACTIONS_LOWER = {a.lower(): a for a in ACTIONS}

# condition keys a policy may name (lower-cased); those ending in "/" take a tag key after them
_GLOBAL_KEYS = {
    "aws:sourceip", "aws:securetransport", "aws:currenttime", "aws:epochtime", "aws:referer", "aws:useragent",
    "aws:username", "aws:userid", "aws:principaltype", "aws:principalarn", "aws:principalaccount",
    "aws:sourcearn", "aws:sourceaccount", "aws:sourcevpc", "aws:sourcevpce", "aws:principalorgid",
    "aws:requestedregion", "aws:multifactorauthpresent", "aws:multifactorauthage", "aws:tokenissuetime",
    "aws:viaawsservice", "aws:tagkeys", "aws:sourceowner",
}
_S3_KEYS = {
    "s3:prefix", "s3:delimiter", "s3:max-keys", "s3:x-amz-acl", "s3:x-amz-grant-read", "s3:x-amz-grant-write",
    "s3:x-amz-grant-read-acp", "s3:x-amz-grant-write-acp", "s3:x-amz-grant-full-control",
    "s3:x-amz-server-side-encryption", "s3:x-amz-server-side-encryption-aws-kms-key-id",
    "s3:x-amz-server-side-encryption-customer-algorithm", "s3:x-amz-copy-source", "s3:x-amz-metadata-directive",
    "s3:x-amz-content-sha256", "s3:x-amz-storage-class", "s3:x-amz-website-redirect-location",
    "s3:requestobjecttagkeys", "s3:versionid", "s3:signatureversion", "s3:authtype", "s3:signatureage",
    "s3:tlsversion", "s3:locationconstraint", "s3:object-lock-mode", "s3:object-lock-retain-until-date",
    "s3:object-lock-remaining-retention-days", "s3:object-lock-legal-hold", "s3:resourceaccount",
    "s3:object-ownership", "s3:x-amz-object-ownership",
}
_TAG_KEYS = ("s3:existingobjecttag/", "s3:requestobjecttag/", "aws:requesttag/", "aws:resourcetag/",
             "aws:principaltag/")
KEYS = frozenset(_GLOBAL_KEYS | _S3_KEYS)

_STRING = {"StringEquals", "StringNotEquals", "StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase", "StringLike",
           "StringNotLike"}
_NUMERIC = {"NumericEquals", "NumericNotEquals", "NumericLessThan", "NumericLessThanEquals", "NumericGreaterThan",
            "NumericGreaterThanEquals"}
_DATE = {"DateEquals", "DateNotEquals", "DateLessThan", "DateLessThanEquals", "DateGreaterThan",
         "DateGreaterThanEquals"}
_ARN = {"ArnEquals", "ArnLike", "ArnNotEquals", "ArnNotLike"}
OPERATORS = frozenset(_STRING | _NUMERIC | _DATE | _ARN | {"Bool", "BinaryEquals", "IpAddress", "NotIpAddress",
                                                           "Null"})
_NEGATED = {"StringNotEquals", "StringNotEqualsIgnoreCase", "StringNotLike", "NumericNotEquals", "DateNotEquals",
            "NotIpAddress", "ArnNotEquals", "ArnNotLike"}

_ANY_ACTION = re.compile(r"[a-z0-9-]+:[A-Za-z0-9*?]+", re.ASCII)  # a user policy's action: service:name
_ANY_KEY = re.compile(r"[A-Za-z0-9-]+:[A-Za-z0-9_.:/+=@*-]+", re.ASCII)  # a user policy's condition key
_USER_ARN = re.compile(r"arn:aws:iam::(\d{12})?:user/(?:[\w+=,.@-]+/)*([\w+=,.@-]+)\Z")
_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_MISSING = "\x00"  # what a policy variable without a value becomes: nothing a request sends contains it


class PolicyError(ValueError):
    """A policy S3 would refuse: MalformedPolicy, with this message."""


@attrs.frozen
class Condition:
    operator: str  # e.g. "StringLike" (without IfExists)
    qualifier: str  # "", "ForAnyValue" or "ForAllValues"
    if_exists: bool
    key: str  # lower-cased but for a tag key's own part
    values: tuple[str, ...]


@attrs.frozen
class Statement:
    sid: str
    effect: str  # "Allow" or "Deny"
    principals: tuple[tuple[str, str], ...]  # ("*", "*"), ("user", id), ("canonical", id), ("service", name)
    not_principal: bool
    actions: tuple[str, ...]  # lower-cased patterns
    not_action: bool
    resources: tuple[str, ...]
    not_resource: bool
    conditions: tuple[Condition, ...]


@attrs.frozen
class Policy:
    version: str
    statements: tuple[Statement, ...]


@attrs.frozen
class RequestContext:
    """What a policy is evaluated against: who (a user id, None for anonymous), the action, the resource's ARN,
    and the condition keys (lower-cased names: a string, or a tuple for a multi-valued key)."""

    principal: str | None
    action: str
    resource: str
    keys: Mapping[str, str | tuple[str, ...]] = attrs.field(factory=dict)


def bucket_arn(bucket: str, key: str | None = None) -> str:
    return f"arn:aws:s3:::{bucket}" + (f"/{key}" if key is not None else "")


# -- parsing --


def _list(value: object, what: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) for v in items):
        raise PolicyError(f"Policy has invalid {what}")
    return items  # type: ignore[return-value]


def _principals(value: object, user_exists: Callable[[str], bool]) -> tuple[tuple[str, str], ...]:
    if value == "*":
        return (("*", "*"),)
    if not isinstance(value, dict) or not value:
        raise PolicyError("Invalid principal in policy")
    out: list[tuple[str, str]] = []
    for kind, items in value.items():
        names = items if isinstance(items, list) else [items]
        if not names or not all(isinstance(n, str) for n in names):
            raise PolicyError("Invalid principal in policy")
        for name in names:
            if kind == "AWS":
                match = _USER_ARN.match(name)
                if name == "*":
                    out.append(("*", "*"))
                elif match and user_exists(match[2]):
                    out.append(("user", match[2]))
                else:
                    raise PolicyError("Invalid principal in policy")
            elif kind == "CanonicalUser" and user_exists(name):
                out.append(("canonical", name))
            elif kind == "Service" and name:
                out.append(("service", name))
            else:
                raise PolicyError("Invalid principal in policy")
    return tuple(out)


def _actions(value: object) -> tuple[str, ...]:
    out = []
    for action in _list(value, "action"):
        lower = action.lower()
        if lower == "*":
            out.append(lower)
            continue
        service, sep, name = lower.partition(":")
        if service != "s3" or not sep or not name:
            raise PolicyError("Policy has invalid action")
        if not any(_glob(lower, known) for known in _ACTIONS_LOWER):
            raise PolicyError("Policy has invalid action")
        out.append(lower)
    return tuple(out)


def _resources(value: object, bucket: str) -> tuple[str, ...]:
    out = []
    for resource in _list(value, "resource"):
        if not resource.startswith("arn:aws:s3:::"):
            raise PolicyError("Policy has invalid resource")
        bucket_part = resource[len("arn:aws:s3:::"):].split("/", 1)[0]
        if not _glob(_VARIABLE.sub("*", bucket_part), bucket):
            raise PolicyError("Policy has invalid resource")
        out.append(resource)
    return tuple(out)


def _known_key(key: str) -> bool:
    lower = key.lower()
    return lower in KEYS or any(lower.startswith(p) and len(lower) > len(p) for p in _TAG_KEYS)


def _norm_key(key: str) -> str:
    """Condition key names are case-insensitive; a tag key after the prefix is not."""
    head, sep, tag = key.partition("/")
    return head.lower() + sep + tag


def _check_value(operator: str, value: str) -> None:
    try:
        if operator in _NUMERIC:
            float(value)
        elif operator in _DATE:
            _date(value)
        elif operator in ("IpAddress", "NotIpAddress"):
            ipaddress.ip_network(value, strict=False)
        elif operator in ("Bool", "Null") and value.lower() not in ("true", "false"):
            raise ValueError(value)
    except ValueError:
        raise PolicyError(f"Invalid Condition value : {value[:64]} for {operator}") from None


def _conditions(value: object, any_key: bool = False) -> tuple[Condition, ...]:
    if not isinstance(value, dict):
        raise PolicyError("Policy has an invalid condition")
    out = []
    for raw_operator, block in value.items():
        qualifier, sep, operator = raw_operator.partition(":")
        if not sep:
            qualifier, operator = "", raw_operator
        if qualifier not in ("", "ForAnyValue", "ForAllValues"):
            raise PolicyError(f"Invalid Condition type : {raw_operator[:64]}")
        if_exists = operator.endswith("IfExists") and operator != "Null"
        base = operator[: -len("IfExists")] if if_exists else operator
        if base not in OPERATORS:
            raise PolicyError(f"Invalid Condition type : {raw_operator[:64]}")
        if not isinstance(block, dict) or not block:
            raise PolicyError("Policy has an invalid condition")
        for key, raw in block.items():
            if not (_known_key(key) or (any_key and _ANY_KEY.fullmatch(key))):
                raise PolicyError("Policy has an invalid condition key")
            items = raw if isinstance(raw, list) else [raw]
            values = []
            for item in items:
                if isinstance(item, bool):
                    item = "true" if item else "false"
                elif isinstance(item, (int, float)) and not isinstance(item, bool):
                    item = str(item)
                if not isinstance(item, str):
                    raise PolicyError("Policy has an invalid condition")
                _check_value(base, item)
                values.append(item)
            if not values:
                raise PolicyError("Policy has an invalid condition")
            out.append(Condition(base, qualifier, if_exists, _norm_key(key), tuple(values)))
    return tuple(out)


_STATEMENT_FIELDS = {"Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction", "Resource", "NotResource",
                     "Condition"}


def _statement(raw: object, bucket: str, user_exists: Callable[[str], bool]) -> Statement:
    if not isinstance(raw, dict):
        raise PolicyError("Policy has an invalid statement")
    unknown = set(raw) - _STATEMENT_FIELDS
    if unknown:
        raise PolicyError(f"Unknown field {sorted(unknown)[0][:64]}")
    sid = raw.get("Sid", "")
    if not isinstance(sid, str) or (sid and not re.fullmatch(r"[\w +=,.@-]*", sid)):
        raise PolicyError("Statement IDs (SID) must be alpha-numeric")
    effect = raw.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise PolicyError(f"Invalid effect: {str(effect)[:64]}" if effect is not None else
                          "Missing required field Effect")
    for a, b, name in (("Principal", "NotPrincipal", "Principal"), ("Action", "NotAction", "Action"),
                       ("Resource", "NotResource", "Resource")):
        if (a in raw) == (b in raw):
            raise PolicyError(f"Missing required field {name}" if a not in raw else
                              f"Policy has both {a} and {b}")
    not_principal = "NotPrincipal" in raw
    not_action = "NotAction" in raw
    not_resource = "NotResource" in raw
    principals = _principals(raw["NotPrincipal" if not_principal else "Principal"], user_exists)
    actions = _actions(raw["NotAction" if not_action else "Action"])
    resources = _resources(raw["NotResource" if not_resource else "Resource"], bucket)
    conditions = _conditions(raw["Condition"]) if "Condition" in raw else ()
    if not not_action and not not_resource:
        _check_applies(actions, resources, bucket)
    return Statement(sid, effect, principals, not_principal, actions, not_action, resources, not_resource,
                     conditions)


def _identity_statement(raw: object) -> Statement:
    """One statement of a user policy: no principal, any service's actions and resources."""
    if not isinstance(raw, dict):
        raise PolicyError("Syntax errors in policy: a statement is not an object.")
    unknown = set(raw) - _STATEMENT_FIELDS
    if unknown:
        raise PolicyError(f"Syntax errors in policy: unknown field {sorted(unknown)[0][:64]}")
    if "Principal" in raw or "NotPrincipal" in raw:
        raise PolicyError("Policy document should not specify a principal.")
    sid = raw.get("Sid", "")
    if not isinstance(sid, str) or (sid and not re.fullmatch(r"[A-Za-z0-9]*", sid)):
        raise PolicyError("Statement IDs (SID) must be alpha-numeric. Check that your input satisfies the "
                          "regular expression [0-9A-Za-z]*")
    effect = raw.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise PolicyError("Syntax errors in policy: Effect must be Allow or Deny")
    for a, b, what in (("Action", "NotAction", "actions"), ("Resource", "NotResource", "resources")):
        if (a in raw) == (b in raw):
            raise PolicyError(f"Policy statement must contain {what}." if a not in raw else
                              f"Syntax errors in policy: both {a} and {b}")
    not_action, not_resource = "NotAction" in raw, "NotResource" in raw
    actions = []
    for action in _list(raw["NotAction" if not_action else "Action"], "action"):
        if action != "*" and not _ANY_ACTION.fullmatch(action):
            raise PolicyError("Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc.")
        actions.append(action.lower())
    resources = []
    for resource in _list(raw["NotResource" if not_resource else "Resource"], "resource"):
        if resource != "*" and not (resource.startswith("arn:") and resource.count(":") >= 5):
            raise PolicyError(f'Resource {resource[:64]} must be in ARN format or "*".')
        # one account here: an IAM ARN's account digits are not compared
        resources.append(re.sub(r"^arn:aws:iam::\d{12}:", "arn:aws:iam::*:", resource))
    conditions = _conditions(raw["Condition"], any_key=True) if "Condition" in raw else ()
    return Statement(sid, effect, (("*", "*"),), False, tuple(actions), not_action, tuple(resources), not_resource,
                     conditions)


def parse_user_policy(text: str | bytes) -> Policy:
    """An IAM user (identity) policy: PolicyError (IAM's MalformedPolicyDocument) unless IAM would take it. It
    names no principal (it is its user's); its actions and resources may be any service's (those of other
    services match nothing here), its condition keys any well-formed name."""
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise PolicyError("Syntax errors in policy.") from None
    if not isinstance(doc, dict):
        raise PolicyError("Syntax errors in policy.")
    unknown = set(doc) - {"Version", "Id", "Statement"}
    if unknown:
        raise PolicyError(f"Syntax errors in policy: unknown field {sorted(unknown)[0][:64]}")
    version = doc.get("Version", "2008-10-17")
    if version not in VERSIONS:
        raise PolicyError("The policy failed legacy parsing")
    raw = doc.get("Statement")
    raws = raw if isinstance(raw, list) else [raw] if raw is not None else []
    if not raws:
        raise PolicyError("Syntax errors in policy: it has no statement.")
    statements = tuple(_identity_statement(st) for st in raws)
    sids = [st.sid for st in statements if st.sid]
    if len(sids) != len(set(sids)):
        raise PolicyError("Statement IDs (SID) in a single policy must be unique.")
    return Policy(version, statements)


def _check_applies(actions: Sequence[str], resources: Sequence[str], bucket: str) -> None:
    """Every action must apply to one of the resources: an object action to an object ARN, a bucket action to the
    bucket's (S3: "Action does not apply to any resource(s) in statement")."""
    for pattern in actions:
        names = [known for lower, known in _ACTIONS_LOWER.items() if _glob(pattern, lower)]
        fits = False
        for name in names:
            for resource in resources:
                if name in OBJECT_ACTIONS and ("/" in resource or resource.endswith("*")):
                    fits = True
                elif name in BUCKET_ACTIONS and _glob(_VARIABLE.sub("*", resource), bucket_arn(bucket)):
                    fits = True
        if not fits and not all(n in SERVICE_ACTIONS for n in names):
            raise PolicyError("Action does not apply to any resource(s) in statement")


def parse(text: str | bytes, bucket: str, user_exists: Callable[[str], bool] = lambda _: True) -> Policy:
    """A bucket policy document for ``bucket``: PolicyError (MalformedPolicy) unless S3 would take it.
    ``user_exists(id)`` says whether a principal names a user of this store."""
    if len(text) > MAX_SIZE:
        raise PolicyError("Policy exceeds the maximum allowed document size.")
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise PolicyError("This policy contains invalid Json") from None
    if not isinstance(doc, dict):
        raise PolicyError("Policies must be valid JSON and the first byte must be '{'")
    unknown = set(doc) - {"Version", "Id", "Statement"}
    if unknown:
        raise PolicyError(f"Unknown field {sorted(unknown)[0][:64]}")
    version = doc.get("Version", "2008-10-17")
    if version not in VERSIONS:
        raise PolicyError("The policy must contain a valid version string")
    if "Id" in doc and not isinstance(doc["Id"], str):
        raise PolicyError("Policy has an invalid Id")
    raw = doc.get("Statement")
    if raw is None:
        raise PolicyError("Missing required field Statement")
    raws = raw if isinstance(raw, list) else [raw]
    if not raws:
        raise PolicyError("Could not parse the policy: Statement is empty!")
    statements = tuple(_statement(s, bucket, user_exists) for s in raws)
    sids = [s.sid for s in statements if s.sid]
    if len(sids) != len(set(sids)):
        raise PolicyError("Statement IDs (SID) in a single policy must be unique")
    return Policy(version, statements)


# -- evaluation --


@lru_cache(maxsize=4096)
def _glob_re(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern]
    return re.compile("".join(parts) + r"\Z", re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def _glob(pattern: str, value: str, ignore_case: bool = False) -> bool:
    """IAM's wildcards: ``*`` any run of characters (``/`` too), ``?`` any one."""
    return _glob_re(pattern, ignore_case).match(value) is not None


def _substitute(text: str, keys: Mapping[str, str | tuple[str, ...]], version: str) -> str:
    """Policy variables (``${aws:username}``; ``${*}``, ``${?}``, ``${$}`` for the characters themselves) — in
    2012-10-17 policies only."""
    if version != "2012-10-17" or "${" not in text:
        return text

    def one(match: re.Match[str]) -> str:
        name = match[1]
        if name in ("*", "?", "$"):
            return "\x01" + name  # a literal, not a wildcard (see _literal)
        value = keys.get(_norm_key(name))
        if not isinstance(value, str):
            return _MISSING
        # a value's own * and ? are characters, not wildcards (a user named "*" matches only "*")
        return value.replace("\x01", "").replace("*", "\x01*").replace("?", "\x01?")

    return _VARIABLE.sub(one, text)


def _match_substituted(pattern: str, value: str, ignore_case: bool = False) -> bool:
    if "\x01" not in pattern:
        return _glob(pattern, value, ignore_case)
    parts, i = [], 0
    while i < len(pattern):
        if pattern[i] == "\x01":
            parts.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        c = pattern[i]
        parts.append(".*" if c == "*" else "." if c == "?" else re.escape(c))
        i += 1
    return re.fullmatch("".join(parts), value, re.DOTALL | (re.IGNORECASE if ignore_case else 0)) is not None


def date_seconds(value: str) -> float:
    """An IAM date (ISO 8601, or seconds since the epoch) as seconds since the epoch; ValueError if it is none."""
    return _date(value)


def _date(value: str) -> float:
    value = value.strip()
    if re.fullmatch(r"-?\d+(\.\d+)?", value):
        return float(value)
    text = value[:-1] + "+00:00" if value.endswith("Z") else value
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _compare(operator: str, have: str, want: str, version: str, keys: Mapping[str, str | tuple[str, ...]]) -> bool:
    """One request value against one policy value, for a non-negated operator (negations are applied outside)."""
    base = {"StringNotEquals": "StringEquals", "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
            "StringNotLike": "StringLike", "NumericNotEquals": "NumericEquals", "DateNotEquals": "DateEquals",
            "NotIpAddress": "IpAddress", "ArnNotEquals": "ArnEquals", "ArnNotLike": "ArnLike"}.get(operator, operator)
    want = _substitute(want, keys, version)
    if base == "StringEquals":
        return have == want.replace("\x01", "")
    if base == "StringEqualsIgnoreCase":
        return have.casefold() == want.replace("\x01", "").casefold()
    if base in ("StringLike", "ArnLike"):
        return _match_substituted(want, have)
    if base == "ArnEquals":
        return have == want.replace("\x01", "")
    if base in _NUMERIC:
        a, b = _number(have), _number(want)
        if a is None or b is None:
            return False
        return {"NumericEquals": a == b, "NumericLessThan": a < b, "NumericLessThanEquals": a <= b,
                "NumericGreaterThan": a > b, "NumericGreaterThanEquals": a >= b}[base]
    if base in _DATE:
        try:
            a, b = _date(have), _date(want)
        except ValueError:
            return False
        return {"DateEquals": a == b, "DateLessThan": a < b, "DateLessThanEquals": a <= b,
                "DateGreaterThan": a > b, "DateGreaterThanEquals": a >= b}[base]
    if base == "Bool":
        return have.lower() == want.lower()
    if base == "BinaryEquals":
        return have == want
    if base == "IpAddress":
        try:
            return ipaddress.ip_address(have) in ipaddress.ip_network(want, strict=False)
        except ValueError:
            return False
    raise AssertionError(base)


def _condition_holds(c: Condition, keys: Mapping[str, str | tuple[str, ...]], version: str) -> bool:
    present = c.key in keys
    if c.operator == "Null":
        return any((v.lower() == "true") != present for v in c.values)
    negated = c.operator in _NEGATED
    if not present:
        return c.if_exists or negated or c.qualifier == "ForAllValues"
    have = keys[c.key]
    haves = list(have) if isinstance(have, tuple) else [have]

    def one(value: str) -> bool:
        hit = any(_compare(c.operator, value, want, version, keys) for want in c.values)
        return not hit if negated else hit

    if c.qualifier == "ForAllValues":
        return all(one(v) for v in haves)
    return any(one(v) for v in haves)


def _principal_matches(st: Statement, principal: str | None) -> bool:
    hit = any(kind == "*" or (principal is not None and kind in ("user", "canonical") and name == principal)
              for kind, name in st.principals)
    return not hit if st.not_principal else hit


def statement_applies(st: Statement, req: RequestContext, version: str) -> bool:
    if not _principal_matches(st, req.principal):
        return False
    action = req.action.lower()
    hit = any(_glob(pattern, action) for pattern in st.actions)
    if hit == st.not_action:
        return False
    hit = any(_match_substituted(_substitute(r, req.keys, version), req.resource) for r in st.resources)
    if hit == st.not_resource:
        return False
    return all(_condition_holds(c, req.keys, version) for c in st.conditions)


def evaluate(policy: Policy, req: RequestContext) -> str | None:
    """"Deny", "Allow" or None (no statement applies)."""
    allowed = False
    for st in policy.statements:
        if statement_applies(st, req, policy.version):
            if st.effect == "Deny":
                return "Deny"
            allowed = True
    return "Allow" if allowed else None


# -- "public", as S3 judges it for GetBucketPolicyStatus and the public access block --

# conditions that pin a wildcard principal to known callers: with a fixed value, an Allow is not public
_FIXING_KEYS = {"aws:sourcearn", "aws:sourcevpc", "aws:sourcevpce", "aws:sourceaccount", "aws:sourceowner",
                "aws:principalaccount", "aws:principalorgid", "aws:principalarn", "aws:userid", "aws:username",
                "s3:x-amz-server-side-encryption-aws-kms-key-id", "s3:resourceaccount", "aws:sourceip"}


def _fixes(c: Condition) -> bool:
    if c.key not in _FIXING_KEYS or c.if_exists or c.qualifier == "ForAllValues":
        return False
    if c.key == "aws:sourceip":
        if c.operator != "IpAddress":
            return False
        for value in c.values:
            net = ipaddress.ip_network(value, strict=False)
            if net.prefixlen < (8 if net.version == 4 else 32):
                return False
        return True
    return c.operator in ("StringEquals", "StringEqualsIgnoreCase", "ArnEquals") or (
        c.operator in ("StringLike", "ArnLike") and not any("*" in v or "?" in v for v in c.values))


def is_public(policy: Policy) -> bool:
    """An Allow statement whose principal is anyone (``*``, or NotPrincipal), not pinned by a condition with a
    fixed value on who calls or from where (AWS's rules for "public")."""
    for st in policy.statements:
        if st.effect != "Allow":
            continue
        anyone = st.not_principal or any(kind == "*" for kind, _ in st.principals)
        if anyone and not any(_fixes(c) for c in st.conditions):
            return True
    return False
