"""The bucket policy language, without a server: what S3 refuses (MalformedPolicy and its messages), a table of
documents x requests x decisions, and a hypothesis model of the evaluation order (an explicit Deny wins; no Allow
means no decision)."""

from __future__ import annotations

import fnmatch
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_sos.s3 import policy as p
from trio_sos.s3.app import OPERATIONS

B = "photos"


def doc(*statements: dict, version: str = "2012-10-17") -> str:
    return json.dumps({"Version": version, "Statement": list(statements)})


def allow(**kw) -> dict:
    return {"Effect": "Allow", "Principal": "*", **kw}


def deny(**kw) -> dict:
    return {"Effect": "Deny", "Principal": "*", **kw}


def req(action: str, key: str | None = None, principal: str | None = "alice", **keys) -> p.RequestContext:
    return p.RequestContext(principal, action, p.bucket_arn(B, key),
                            {k.replace("__", ":").replace("_", "-").lower(): v for k, v in keys.items()})


def test_every_operation_names_a_known_action() -> None:
    for op in OPERATIONS.values():
        if op.name != "PreflightCors":
            assert op.action in p.ACTIONS, op.name
            assert not op.version_action or op.version_action in p.ACTIONS, op.name


@pytest.mark.parametrize(("document", "message"), [
    ("{not json", "This policy contains invalid Json"),
    ("[]", "Policies must be valid JSON and the first byte must be '{'"),
    (json.dumps({"Version": "2012-10-17"}), "Missing required field Statement"),
    (json.dumps({"Version": "2019-01-01", "Statement": []}), "The policy must contain a valid version string"),
    (json.dumps({"Version": "2012-10-17", "Statement": [], "Extra": 1}), "Unknown field Extra"),
    (doc({"Effect": "Maybe", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{B}/*"}),
     "Invalid effect: Maybe"),
    (doc(allow(Action="s3:GetObjekt", Resource=f"arn:aws:s3:::{B}/*")), "Policy has invalid action"),
    (doc(allow(Action="ec2:RunInstances", Resource=f"arn:aws:s3:::{B}/*")), "Policy has invalid action"),
    (doc(allow(Action="s3:Frobnicate*", Resource=f"arn:aws:s3:::{B}/*")), "Policy has invalid action"),
    (doc(allow(Action="s3:GetObject", Resource="arn:aws:s3:::other/*")), "Policy has invalid resource"),
    (doc(allow(Action="s3:GetObject", Resource="*")), "Policy has invalid resource"),
    (doc(allow(Action="s3:GetObject", Resource=f"arn:aws:s3:::{B}")),
     "Action does not apply to any resource(s) in statement"),
    (doc(allow(Action="s3:ListBucket", Resource=f"arn:aws:s3:::{B}/*")),
     "Action does not apply to any resource(s) in statement"),
    (doc({"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{B}/*"}),
     "Missing required field Principal"),
    (doc({"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:user/nobody"},
          "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{B}/*"}), "Invalid principal in policy"),
    (doc({"Effect": "Allow", "Principal": {"Federated": "x"}, "Action": "s3:GetObject",
          "Resource": f"arn:aws:s3:::{B}/*"}), "Invalid principal in policy"),
    (doc(allow(Action="s3:GetObject", Resource=f"arn:aws:s3:::{B}/*",
               Condition={"StringSorta": {"s3:prefix": "a"}})), "Invalid Condition type : StringSorta"),
    (doc(allow(Action="s3:GetObject", Resource=f"arn:aws:s3:::{B}/*",
               Condition={"StringEquals": {"s3:nonsense": "a"}})), "Policy has an invalid condition key"),
    (doc(allow(Action="s3:GetObject", Resource=f"arn:aws:s3:::{B}/*",
               Condition={"IpAddress": {"aws:SourceIp": "300.1.1.1/8"}})),
     "Invalid Condition value : 300.1.1.1/8 for IpAddress"),
    (doc(allow(Sid="a", Action="s3:GetObject", Resource=f"arn:aws:s3:::{B}/*"),
         allow(Sid="a", Action="s3:PutObject", Resource=f"arn:aws:s3:::{B}/*")),
     "Statement IDs (SID) in a single policy must be unique"),
    (doc(allow(Action="s3:GetObject", Resource=f"arn:aws:s3:::{B}/" + "x" * p.MAX_SIZE)),
     "Policy exceeds the maximum allowed document size."),
])
def test_what_s3_refuses(document: str, message: str) -> None:
    with pytest.raises(p.PolicyError) as info:
        p.parse(document, B, lambda user: user in ("alice", "bob"))
    assert str(info.value) == message


PUBLIC_READ = doc(allow(Sid="PublicRead", Action=["s3:GetObject", "s3:GetObjectVersion"],
                        Resource=f"arn:aws:s3:::{B}/public/*"))
HOMES = doc(
    {"Effect": "Allow", "Principal": {"AWS": ["arn:aws:iam::000000000000:user/bob"]},
     "Action": ["s3:PutObject", "s3:GetObject"], "Resource": f"arn:aws:s3:::{B}/home/${{aws:username}}/*"},
    {"Effect": "Allow", "Principal": {"CanonicalUser": "bob"}, "Action": "s3:ListBucket",
     "Resource": f"arn:aws:s3:::{B}", "Condition": {"StringLike": {"s3:prefix": ["home/${aws:username}/*"]}}},
)
GUARDED = doc(
    allow(Action="s3:*", Resource=[f"arn:aws:s3:::{B}", f"arn:aws:s3:::{B}/*"]),
    deny(Action="s3:*", Resource=f"arn:aws:s3:::{B}/*", Condition={"Bool": {"aws:SecureTransport": "false"}}),
    deny(Action="s3:DeleteObject*", Resource=f"arn:aws:s3:::{B}/*",
         Condition={"NotIpAddress": {"aws:SourceIp": ["10.0.0.0/8", "192.168.0.0/16"]}}),
)
TAGS = doc(
    allow(Action="s3:GetObject", Resource=f"arn:aws:s3:::{B}/*",
          Condition={"StringEquals": {"s3:ExistingObjectTag/class": "open"}}),
    deny(Action="s3:PutObject", Resource=f"arn:aws:s3:::{B}/*",
         Condition={"ForAnyValue:StringEquals": {"s3:RequestObjectTagKeys": ["secret", "Secret"]}}),
    allow(Action="s3:PutObject", Resource=f"arn:aws:s3:::{B}/*",
          Condition={"ForAllValues:StringLike": {"s3:RequestObjectTagKeys": ["team-*", "class"]},
                     "NumericLessThanEquals": {"s3:object-lock-remaining-retention-days": "30"}}),
)
DATES = doc(
    allow(Action="s3:GetObject", Resource=f"arn:aws:s3:::{B}/*",
          Condition={"DateGreaterThan": {"aws:CurrentTime": "2026-01-01T00:00:00Z"},
                     "DateLessThan": {"aws:EpochTime": "1893456000"}}),  # 2030-01-01
    deny(NotAction=["s3:GetObject", "s3:ListBucket"], NotResource=f"arn:aws:s3:::{B}/keep/*",
         Condition={"Null": {"aws:username": "true"}}),
    deny(Action="s3:GetObject", Resource=f"arn:aws:s3:::{B}/*",
         Condition={"StringNotLikeIfExists": {"aws:Referer": ["https://example.com/*"]}}),
)


@pytest.mark.parametrize(("document", "request_", "expected"), [
    (PUBLIC_READ, req("s3:GetObject", "public/cat.jpg", principal=None), "Allow"),
    (PUBLIC_READ, req("s3:getobjectversion", "public/a/b", principal="bob"), "Allow"),  # actions: any case
    (PUBLIC_READ, req("s3:GetObject", "private/cat.jpg", principal=None), None),
    (PUBLIC_READ, req("s3:GetObject", "Public/cat.jpg", principal=None), None),  # resources: exact case
    (PUBLIC_READ, req("s3:PutObject", "public/cat.jpg", principal=None), None),
    (HOMES, req("s3:PutObject", "home/bob/notes.txt", principal="bob", aws__username="bob"), "Allow"),
    (HOMES, req("s3:PutObject", "home/alice/notes.txt", principal="bob", aws__username="bob"), None),
    (HOMES, req("s3:PutObject", "home/bob/x", principal="alice", aws__username="alice"), None),
    (HOMES, req("s3:PutObject", "home//x", principal="bob"), None),  # no username: the variable matches nothing
    (HOMES, req("s3:ListBucket", principal="bob", aws__username="bob", s3__prefix="home/bob/2024/"), "Allow"),
    (HOMES, req("s3:ListBucket", principal="bob", aws__username="bob", s3__prefix="home/"), None),
    (HOMES, req("s3:ListBucket", principal="bob", aws__username="bob"), None),  # no prefix: not the condition's
    (GUARDED, req("s3:GetObject", "k", aws__SecureTransport="true", aws__SourceIp="127.0.0.1"), "Allow"),
    (GUARDED, req("s3:GetObject", "k", aws__SecureTransport="false", aws__SourceIp="10.1.2.3"), "Deny"),
    (GUARDED, req("s3:ListBucket", aws__SecureTransport="false"), "Allow"),  # the Deny names objects only
    (GUARDED, req("s3:DeleteObject", "k", aws__SecureTransport="true", aws__SourceIp="10.9.9.9"), "Allow"),
    (GUARDED, req("s3:DeleteObjectVersion", "k", aws__SecureTransport="true", aws__SourceIp="127.0.0.1"), "Deny"),
    (GUARDED, req("s3:DeleteObject", "k", aws__SecureTransport="true"), "Deny"),  # no address: NotIpAddress holds
    (TAGS, req("s3:GetObject", "k", **{"s3:existingobjecttag/class": "open"}), "Allow"),
    (TAGS, req("s3:GetObject", "k", **{"s3:existingobjecttag/class": "Open"}), None),
    (TAGS, req("s3:GetObject", "k"), None),
    (TAGS, req("s3:PutObject", "k", **{"s3:requestobjecttagkeys": ("team-a", "Secret")}), "Deny"),
    (TAGS, req("s3:PutObject", "k", **{"s3:requestobjecttagkeys": ("team-a", "class"),
                                       "s3:object-lock-remaining-retention-days": "7"}), "Allow"),
    (TAGS, req("s3:PutObject", "k", **{"s3:requestobjecttagkeys": ("team-a", "owner")}), None),
    (TAGS, req("s3:PutObject", "k", **{"s3:object-lock-remaining-retention-days": "30"}), "Allow"),  # no tags
    (TAGS, req("s3:PutObject", "k", **{"s3:object-lock-remaining-retention-days": "31"}), None),
    (DATES, req("s3:GetObject", "k", aws__CurrentTime="2026-12-02T10:00:00Z", aws__EpochTime="1796205600",
                aws__Referer="https://example.com/page"), "Allow"),
    (DATES, req("s3:GetObject", "k", aws__CurrentTime="2026-12-02T10:00:00Z", aws__EpochTime="1796205600"),
     "Deny"),  # no Referer: an ...IfExists condition holds, so the Deny applies
    (DATES, req("s3:GetObject", "k", aws__CurrentTime="2026-12-02T10:00:00Z", aws__EpochTime="1796205600",
                aws__Referer="https://evil.example/"), "Deny"),
    (DATES, req("s3:GetObject", "k", aws__CurrentTime="2025-06-01T00:00:00Z", aws__EpochTime="1748736000",
                aws__Referer="https://example.com/"), None),  # before the allowed dates
    (DATES, req("s3:PutObject", "other/k", principal=None), "Deny"),  # anonymous: aws:username is null
    (DATES, req("s3:PutObject", "keep/k", principal=None), None),
    (DATES, req("s3:PutObject", "other/k", aws__username="alice"), None),
])
def test_decisions(document: str, request_: p.RequestContext, expected: str | None) -> None:
    assert p.evaluate(p.parse(document, B), request_) == expected


def test_policy_variables_escape_and_version() -> None:
    literal = doc(allow(Action="s3:GetObject", Resource=f"arn:aws:s3:::{B}/a${{*}}b"))
    assert p.evaluate(p.parse(literal, B), req("s3:GetObject", "a*b")) == "Allow"
    assert p.evaluate(p.parse(literal, B), req("s3:GetObject", "axxb")) is None  # ${*} is a star, not a wildcard
    home = doc(allow(Action="s3:GetObject", Resource=f"arn:aws:s3:::{B}/home/${{aws:username}}/*"))
    assert p.evaluate(p.parse(home, B), req("s3:GetObject", "home/*/x", aws__username="*")) == "Allow"
    assert p.evaluate(p.parse(home, B), req("s3:GetObject", "home/bob/x", aws__username="*")) is None
    assert p.evaluate(p.parse(home, B), req("s3:GetObject", "home/ab/x", aws__username="a?")) is None
    old = doc(allow(Action="s3:GetObject", Resource=f"arn:aws:s3:::{B}/${{aws:username}}"), version="2008-10-17")
    assert p.evaluate(p.parse(old, B), req("s3:GetObject", "${aws:username}", aws__username="alice")) == "Allow"


@pytest.mark.parametrize(("statement", "public"), [
    (allow(Action="s3:GetObject", Resource=f"arn:aws:s3:::{B}/*"), True),
    ({"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{B}/*"},
     True),
    ({"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::000000000000:user/bob"}, "Action": "s3:GetObject",
      "Resource": f"arn:aws:s3:::{B}/*"}, False),
    (deny(Action="s3:GetObject", Resource=f"arn:aws:s3:::{B}/*"), False),
    (allow(Action="s3:GetObject", Resource=f"arn:aws:s3:::{B}/*",
           Condition={"IpAddress": {"aws:SourceIp": "192.0.2.0/24"}}), False),
    (allow(Action="s3:GetObject", Resource=f"arn:aws:s3:::{B}/*",
           Condition={"IpAddress": {"aws:SourceIp": "0.0.0.0/0"}}), True),
    (allow(Action="s3:GetObject", Resource=f"arn:aws:s3:::{B}/*",
           Condition={"StringEquals": {"aws:username": "bob"}}), False),
    (allow(Action="s3:GetObject", Resource=f"arn:aws:s3:::{B}/*",
           Condition={"StringLike": {"aws:username": "b*"}}), True),
    (allow(Action="s3:GetObject", Resource=f"arn:aws:s3:::{B}/*",
           Condition={"Bool": {"aws:SecureTransport": "true"}}), True),
])
def test_public_as_s3_judges_it(statement: dict, public: bool) -> None:
    assert p.is_public(p.parse(doc(statement), B)) == public


# -- the evaluation order, against a model written independently --

ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"]
KEYS = ["a/1", "a/2", "b/1"]
PRINCIPALS = [None, "alice", "bob"]
statements = st.fixed_dictionaries({
    "effect": st.sampled_from(["Allow", "Deny"]),
    "principal": st.sampled_from(["*", "alice", "bob"]),
    "not_principal": st.booleans(),
    "actions": st.lists(st.sampled_from(["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:Get*",
                                         "s3:*Object"]), min_size=1, max_size=3),
    "resources": st.lists(st.sampled_from([f"arn:aws:s3:::{B}/*", f"arn:aws:s3:::{B}/a/*",
                                           f"arn:aws:s3:::{B}/?/1", f"arn:aws:s3:::{B}/b*"]),
                          min_size=1, max_size=2),
    "prefix_is": st.none() | st.sampled_from(["x", "y"]),
})


def to_json(s: dict) -> dict:
    out = {"Effect": s["effect"], "Action": s["actions"], "Resource": s["resources"]}
    principal = "*" if s["principal"] == "*" else {"CanonicalUser": s["principal"]}
    out["NotPrincipal" if s["not_principal"] else "Principal"] = principal
    if s["prefix_is"]:
        out["Condition"] = {"StringEquals": {"s3:prefix": s["prefix_is"]}}
    return out


def model(stmts: list[dict], principal: str | None, action: str, key: str, prefix: str | None) -> str | None:
    def applies(s: dict) -> bool:
        named = s["principal"] == "*" or s["principal"] == principal
        if named == s["not_principal"]:
            return False
        if not any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in s["actions"]):
            return False
        if not any(fnmatch.fnmatchcase(f"arn:aws:s3:::{B}/{key}", r) for r in s["resources"]):
            return False
        return s["prefix_is"] is None or prefix == s["prefix_is"]

    hits = [s["effect"] for s in stmts if applies(s)]
    return "Deny" if "Deny" in hits else "Allow" if hits else None


@settings(max_examples=400, deadline=None)
@given(stmts=st.lists(statements, min_size=1, max_size=5), principal=st.sampled_from(PRINCIPALS),
       action=st.sampled_from(ACTIONS[:3]), key=st.sampled_from(KEYS), prefix=st.none() | st.sampled_from("xyz"))
def test_evaluation_matches_the_model(stmts, principal, action, key, prefix) -> None:
    parsed = p.parse(doc(*map(to_json, stmts)), B, lambda user: True)
    keys = {"s3:prefix": prefix} if prefix is not None else {}
    got = p.evaluate(parsed, p.RequestContext(principal, action, p.bucket_arn(B, key), keys))
    assert got == model(stmts, principal, action, key, prefix)


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                        st.sampled_from(["Version", "Statement", "Effect", "Principal", "Action", "Resource",
                                         "Condition", "AWS", "StringEquals", "s3:prefix", "Sid", "NotAction"]),
                        inner, max_size=4), max_leaves=20))
def test_any_document_is_parsed_or_refused_cleanly(document) -> None:
    """A stranger's JSON is a policy or a PolicyError — never another exception."""
    try:
        parsed = p.parse(json.dumps(document), B)
    except p.PolicyError:
        return
    for principal in PRINCIPALS:
        p.evaluate(parsed, p.RequestContext(principal, "s3:GetObject", p.bucket_arn(B, "k"), {"s3:prefix": "k"}))


# -- the whole decision (user policies, bucket policy, owner, ACL), against a model written independently --

bucket_statements = st.fixed_dictionaries({
    "effect": st.sampled_from(["Allow", "Deny"]),
    "principal": st.sampled_from(["*", "alice", "bob"]),
    "actions": st.lists(st.sampled_from(["s3:ListBucket", "s3:PutBucketPolicy", "s3:*", "s3:List*"]), min_size=1,
                        max_size=2),
})
user_statements = st.fixed_dictionaries({
    "effect": st.sampled_from(["Allow", "Deny"]),
    "actions": st.lists(st.sampled_from(["s3:ListBucket", "s3:PutBucketPolicy", "s3:*", "s3:Put*", "iam:*"]),
                        min_size=1, max_size=2),
    "resource": st.sampled_from(["*", f"arn:aws:s3:::{B}", "arn:aws:s3:::other", f"arn:aws:s3:::{B[:3]}*"]),
})


def _verdict(hits: list[str]) -> str | None:
    return "Deny" if "Deny" in hits else "Allow" if hits else None


def whole_model(bucket_stmts, user_stmts, caller, action, acl_name) -> bool:
    bp = _verdict([s["effect"] for s in bucket_stmts if s["principal"] in ("*", caller)
                   and any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in s["actions"])])
    restricted = caller is not None and bool(user_stmts)
    up = _verdict([s["effect"] for s in user_stmts if fnmatch.fnmatchcase(f"arn:aws:s3:::{B}", s["resource"])
                   and any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in s["actions"])]) \
        if restricted else None
    owner = caller == "alice" and not restricted  # alice owns the bucket
    if "Deny" in (bp, up):
        return owner and action == "s3:PutBucketPolicy"  # the owner is never locked out of its policy
    if owner or "Allow" in (bp, up):
        return True
    if action == "s3:PutBucketPolicy":
        return False  # no ACL grants it
    if acl_name == "authenticated-read" and caller is not None:
        return True  # READ to every signed-in caller
    return False  # private: the owner's own grant, which a restricted owner does not get


@settings(max_examples=500, deadline=None)
@given(bucket_stmts=st.lists(bucket_statements, max_size=3), user_stmts=st.lists(user_statements, max_size=3),
       caller=st.sampled_from([None, "alice", "bob"]), action=st.sampled_from(["s3:ListBucket", "s3:PutBucketPolicy"]),
       acl_name=st.sampled_from(["private", "authenticated-read"]))
def test_the_whole_decision_matches_the_model(bucket_stmts, user_stmts, caller, action, acl_name) -> None:
    """User policies with the bucket policy, the owner's rights and the ACL, through access.allowed: an explicit
    Deny anywhere wins; a user with policies has no owner's rights; an Allow from either policy or an ACL grant
    grants; otherwise denied."""
    import h11

    from trio_sos.http.server import Request
    from trio_sos.meta.store import Bucket, User
    from trio_sos.s3 import access, acl
    from trio_sos.s3.context import Ctx

    bucket_doc = doc(*({"Effect": s["effect"], "Action": s["actions"], "Resource": f"arn:aws:s3:::{B}",
                        "Principal": "*" if s["principal"] == "*" else {"CanonicalUser": s["principal"]}}
                       for s in bucket_stmts)) if bucket_stmts else ""
    bucket = Bucket(B, "alice", 0.0, acl=acl.dumps(acl.canned(acl_name, "alice", "")), policy=bucket_doc)
    user_doc = doc(*({"Effect": s["effect"], "Action": s["actions"], "Resource": s["resource"]} for s in user_stmts))
    user = None if caller is None else User(caller, caller, policies=(("p", user_doc),) if user_stmts else ())
    request = Request(None, h11.Request(method="GET", target=f"/{B}", headers=[("host", "x")]),  # type: ignore
                      "127.0.0.1:4000", [(b"host", b"x")])
    ctx = Ctx(request, "id", None, bucket=B, user=user, auth="sigv4" if user else "anonymous")  # type: ignore
    permission = access.OWNER if action == "s3:PutBucketPolicy" else "READ"
    assert access.allowed(ctx, bucket, permission, action, None) == whole_model(bucket_stmts, user_stmts, caller,
                                                                                action, acl_name)


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                        st.sampled_from(["Version", "Statement", "Effect", "Principal", "Action", "Resource",
                                         "Condition", "StringEquals", "aws:username", "Sid", "NotAction",
                                         "NotResource"]), inner, max_size=4), max_leaves=20))
def test_any_user_policy_is_parsed_or_refused_cleanly(document) -> None:
    """A user policy document is an identity policy or a PolicyError (MalformedPolicyDocument), nothing else;
    one that parses evaluates without error."""
    try:
        parsed = p.parse_user_policy(json.dumps(document))
    except p.PolicyError:
        return
    assert all(st.principals == (("*", "*"),) for st in parsed.statements)
    p.evaluate(parsed, p.RequestContext("alice", "s3:GetObject", p.bucket_arn(B, "k"), {"aws:username": "alice"}))


@pytest.mark.parametrize("document, message", [
    ("[]", "Syntax errors in policy."),
    ('{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:*", "Resource": "*"}]}',
     "Policy document should not specify a principal."),
    ('{"Statement": [{"Effect": "Allow", "Resource": "*"}]}', "Policy statement must contain actions."),
    ('{"Statement": [{"Effect": "Allow", "Action": "s3:*"}]}', "Policy statement must contain resources."),
    ('{"Statement": [{"Effect": "Allow", "Action": "GetObject", "Resource": "*"}]}',
     "Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc."),
    ('{"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "photos"}]}',
     'Resource photos must be in ARN format or "*".'),
    ('{"Version": "2001-01-01", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}',
     "The policy failed legacy parsing"),
    ('{"Statement": [{"Sid": "a b", "Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}',
     "Statement IDs (SID) must be alpha-numeric. Check that your input satisfies the regular expression "
     "[0-9A-Za-z]*"),
])
def test_what_iam_refuses(document: str, message: str) -> None:
    with pytest.raises(p.PolicyError) as info:
        p.parse_user_policy(document)
    assert str(info.value) == message


def test_a_user_policy_takes_any_service_and_any_account() -> None:
    """Terraform-written policies name other services' actions and real account numbers: accepted, the former
    matching nothing here, the latter matching this store's one account."""
    parsed = p.parse_user_policy(doc({"Effect": "Allow", "Action": ["kms:Decrypt", "iam:GetUser"],
                                      "Resource": "arn:aws:iam::123456789012:user/${aws:username}",
                                      "Condition": {"StringEquals": {"aws:RequestedRegion": "eu-west-1",
                                                                     "kms:ViaService": "s3.x"}}}))
    keys = {"aws:username": "carol"}
    resource = "arn:aws:iam::000000000000:user/carol"
    assert p.evaluate(parsed, p.RequestContext("carol", "iam:GetUser", resource, keys)) is None  # region absent
    parsed = p.parse_user_policy(doc({"Effect": "Allow", "Action": ["kms:Decrypt", "iam:GetUser"],
                                      "Resource": "arn:aws:iam::123456789012:user/${aws:username}"}))
    assert p.evaluate(parsed, p.RequestContext("carol", "iam:GetUser", resource, keys)) == "Allow"
    assert p.evaluate(parsed, p.RequestContext("carol", "iam:GetUser", resource.replace("carol", "dave"),
                                               keys)) is None
