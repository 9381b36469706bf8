"""The S3 access-control-list model: canned ACLs, x-amz-grant-* headers, AccessControlPolicy documents, the compact
JSON kept in the metadata ``acl`` fields, and the permission check. Pure: no I/O and no metadata access; users are
looked up through callbacks passed in by the caller.

Decisions (sources: the S3 User Guide "Access control list (ACL) overview" and the PutBucketAcl/PutObjectAcl API
reference; Ceph's s3-tests and RGW; errors S3 was seen to answer, as quoted in issue threads):

- Canned ACLs follow the S3 table; the owner always gets FULL_CONTROL.
  ``aws-exec-read`` is accepted and gives the owner FULL_CONTROL only: its extra READ goes to an Amazon EC2 account
  that does not exist here. ``bucket-owner-read``/``bucket-owner-full-control`` without a bucket owner (creating a
  bucket) are ignored, as S3 documents, and so is the bucket-owner grant when the bucket owner is the owner (as RGW).
  Names are case-sensitive; an unknown one is InvalidArgument with ArgumentName ``x-amz-acl``.
- Grant headers replace the default ACL entirely: the owner gets FULL_CONTROL only if a header grants it (s3-tests
  ``test_object_header_acl_grants``/``test_bucket_header_acl_grants`` expect exactly the granted entries).
  Grantee keys are ``id``, ``uri``, ``emailAddress`` (matched case-insensitively), values quoted or bare.
  A value that is not such a list is InvalidArgument "Argument format not recognized" naming the header; a group URI
  other than the three S3 groups is InvalidArgument "Invalid group uri" (``uri``); an id the caller's ``resolve_id``
  does not know is InvalidArgument "Invalid id" (``id``): the messages S3 answers.
- Documents: anything S3's schema refuses (wrong root, missing Owner/ID or AccessControlList, unknown element,
  missing or unknown xsi:type or Permission, a grantee without the ID/URI/EmailAddress its type needs, over 100
  grants) is MalformedACLError; XML that does not parse (or uses a DTD or entities) is MalformedXML from
  ``s3.xml.parse``; an unknown group URI is InvalidArgument "Invalid group uri" (``Group/URI``) and an unknown id
  "Invalid id" (``CanonicalUser/ID``), as S3. An empty AccessControlList is valid (s3-tests
  ``test_bucket_acl_revoke_all``). DisplayName in a request is ignored (S3: "optional and ignored in the
  request"); names come from ``resolve_id``/``resolve_email``. Whether the document's Owner is the resource's owner
  is for the caller to check (RGW answers AccessDenied when it is not).
- Email grantees are resolved to canonical users ("The grantee is resolved to the CanonicalUser"); an unknown
  address is UnresolvableGrantByEmailAddress (400). With ``resolve_email=None`` they are kept unresolved, so an async
  caller can look them up (``user_ids``/``grantee_emails``) and then ``resolve`` the policy.
- At most 100 grants (S3: "An ACL can have up to 100 grants"): InvalidArgument in headers, MalformedACLError in a
  document.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from xml.etree.ElementTree import Element

import attrs

from .errors import S3Error
from .xml import Tag, document, local, parse

PERMISSIONS = ("FULL_CONTROL", "WRITE", "WRITE_ACP", "READ", "READ_ACP")
ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTHENTICATED_USERS = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"
LOG_DELIVERY = "http://acs.amazonaws.com/groups/s3/LogDelivery"
GROUPS = (ALL_USERS, AUTHENTICATED_USERS, LOG_DELIVERY)

CANONICAL_USER, GROUP, BY_EMAIL = "CanonicalUser", "Group", "AmazonCustomerByEmail"
KINDS = (CANONICAL_USER, GROUP, BY_EMAIL)

XSI = "http://www.w3.org/2001/XMLSchema-instance"
MAX_GRANTS = 100

CANNED = ("private", "public-read", "public-read-write", "aws-exec-read", "authenticated-read", "bucket-owner-read",
          "bucket-owner-full-control", "log-delivery-write")

# header -> permission, in the order of PERMISSIONS
GRANT_HEADERS = {"x-amz-grant-full-control": "FULL_CONTROL", "x-amz-grant-write": "WRITE",
                 "x-amz-grant-write-acp": "WRITE_ACP", "x-amz-grant-read": "READ", "x-amz-grant-read-acp": "READ_ACP"}

ResolveEmail = Callable[[str], tuple[str, str] | None]  # email -> (user id, display name), None if unknown
ResolveId = Callable[[str], str | None]  # user id -> display name, None if unknown


def _one_of(choices: tuple[str, ...]) -> Callable[[object, attrs.Attribute, str], None]:
    def check(_instance: object, attribute: attrs.Attribute, value: str) -> None:
        if value not in choices:
            raise ValueError(f"{attribute.name} must be one of {choices}, not {value!r}")
    return check


@attrs.frozen
class Grantee:
    kind: str = attrs.field(validator=_one_of(KINDS))  # "CanonicalUser" | "Group" | "AmazonCustomerByEmail"
    id: str = ""
    uri: str = ""
    email: str = ""
    display_name: str = ""

    @classmethod
    def user(cls, user_id: str, display_name: str = "") -> Grantee:
        return cls(CANONICAL_USER, id=user_id, display_name=display_name)

    @classmethod
    def group(cls, uri: str) -> Grantee:
        return cls(GROUP, uri=uri)

    @classmethod
    def by_email(cls, email: str) -> Grantee:
        return cls(BY_EMAIL, email=email)


@attrs.frozen
class Grant:
    grantee: Grantee
    permission: str = attrs.field(validator=_one_of(PERMISSIONS))


def _grants(grants: Iterable[Grant]) -> tuple[Grant, ...]:
    return tuple(grants)


@attrs.frozen
class Policy:
    owner_id: str
    owner_name: str
    grants: tuple[Grant, ...] = attrs.field(converter=_grants)


def _invalid_argument(message: str | None, name: str, value: str) -> S3Error:
    return S3Error("InvalidArgument", message, ArgumentName=name, ArgumentValue=value)


def _malformed(detail: str = "") -> S3Error:
    # the detail goes into the exception's text only (for logs); S3's message is fixed
    error = S3Error("MalformedACLError", "The XML you provided was not well-formed or did not validate against our "
                                         "published schema", status=400)
    if detail:
        error.add_note(detail)
    return error


def _unresolvable(email: str) -> S3Error:
    return S3Error("UnresolvableGrantByEmailAddress", "The e-mail address you provided does not match any account on "
                                                      "record.", status=400)


# -- canned ACLs ------------------------------------------------------------------------------------------------------

def canned(name: str, owner_id: str, owner_name: str, *, bucket_owner_id: str | None = None,
           bucket_owner_name: str = "") -> Policy:
    """The policy of canned ACL ``name`` (the x-amz-acl value) for a resource owned by ``owner_id``.

    ``bucket_owner_id`` is the owner of the bucket an object is written to; None when creating a bucket.
    """
    grants = [Grant(Grantee.user(owner_id, owner_name), "FULL_CONTROL")]
    other_bucket_owner = bucket_owner_id is not None and bucket_owner_id != owner_id
    if name in ("private", "aws-exec-read"):
        pass
    elif name == "public-read":
        grants.append(Grant(Grantee.group(ALL_USERS), "READ"))
    elif name == "public-read-write":
        grants += [Grant(Grantee.group(ALL_USERS), "READ"), Grant(Grantee.group(ALL_USERS), "WRITE")]
    elif name == "authenticated-read":
        grants.append(Grant(Grantee.group(AUTHENTICATED_USERS), "READ"))
    elif name in ("bucket-owner-read", "bucket-owner-full-control"):
        if other_bucket_owner:
            assert bucket_owner_id is not None
            grants.append(Grant(Grantee.user(bucket_owner_id, bucket_owner_name),
                                "READ" if name == "bucket-owner-read" else "FULL_CONTROL"))
    elif name == "log-delivery-write":
        grants += [Grant(Grantee.group(LOG_DELIVERY), "WRITE"), Grant(Grantee.group(LOG_DELIVERY), "READ_ACP")]
    else:
        raise _invalid_argument(None, "x-amz-acl", name)
    return Policy(owner_id, owner_name, tuple(grants))


# -- resolving users --------------------------------------------------------------------------------------------------

def user_ids(policy: Policy) -> tuple[str, ...]:
    """The owner's and the canonical-user grantees' ids, each once: what ``resolve(resolve_id=...)`` asks about."""
    ids = dict.fromkeys([policy.owner_id] + [g.grantee.id for g in policy.grants if g.grantee.kind == CANONICAL_USER])
    return tuple(ids)


def grantee_emails(policy: Policy) -> tuple[str, ...]:
    """The unresolved email grantees, each once: what ``resolve(resolve_email=...)`` asks about."""
    return tuple(dict.fromkeys(g.grantee.email for g in policy.grants if g.grantee.kind == BY_EMAIL))


def resolve(policy: Policy, resolve_email: ResolveEmail | None = None, resolve_id: ResolveId | None = None, *,
            id_argument: str = "CanonicalUser/ID") -> Policy:
    """Check the owner's and grantees' ids and fill in their display names with ``resolve_id`` (unknown id:
    InvalidArgument "Invalid id" naming ``id_argument``), then turn email grantees into canonical users with
    ``resolve_email`` (unknown address: UnresolvableGrantByEmailAddress). A callback left None leaves that part as
    it is."""
    return _resolve(policy, resolve_email, resolve_id, id_argument, owner=True)


def _resolve(policy: Policy, resolve_email: ResolveEmail | None, resolve_id: ResolveId | None, id_argument: str, *,
             owner: bool) -> Policy:
    def name_of(user_id: str) -> str:
        assert resolve_id is not None
        name = resolve_id(user_id)
        if name is None:
            raise _invalid_argument("Invalid id", id_argument, user_id)
        return name

    owner_name = name_of(policy.owner_id) if owner and resolve_id is not None else policy.owner_name
    grants = []
    for grant in policy.grants:
        grantee = grant.grantee
        if grantee.kind == CANONICAL_USER and resolve_id is not None:
            grantee = Grantee.user(grantee.id, name_of(grantee.id))
        elif grantee.kind == BY_EMAIL and resolve_email is not None:
            user = resolve_email(grantee.email)
            if user is None:
                raise _unresolvable(grantee.email)
            grantee = Grantee.user(*user)
        grants.append(Grant(grantee, grant.permission))
    return Policy(policy.owner_id, owner_name, tuple(grants))


# -- grant headers ----------------------------------------------------------------------------------------------------

_GRANTEE = re.compile(r'[ \t]*([A-Za-z]+)[ \t]*=[ \t]*(?:"([^"]*)"|([^",=\s]+))[ \t]*(,|\Z)')


def _parse_grantees(header: str, value: str) -> list[Grantee]:
    grantees: list[Grantee] = []
    pos = 0
    while True:
        match = _GRANTEE.match(value, pos)
        if match is None:
            raise _invalid_argument("Argument format not recognized", header, value)
        key = match.group(1).lower()
        text = (match.group(2) if match.group(2) is not None else match.group(3)).strip()
        if not text:
            raise _invalid_argument("Argument format not recognized", header, value)
        if key == "id":
            grantees.append(Grantee.user(text))
        elif key == "uri":
            if text not in GROUPS:
                raise _invalid_argument("Invalid group uri", "uri", text)
            grantees.append(Grantee.group(text))
        elif key == "emailaddress":
            grantees.append(Grantee.by_email(text))
        else:
            raise _invalid_argument("Argument format not recognized", header, value)
        pos = match.end()
        if not match.group(4):  # end of the value
            return grantees


def _lower_keys(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def from_grant_headers(headers: Mapping[str, str], owner_id: str, owner_name: str,
                       resolve_email: ResolveEmail | None, *, resolve_id: ResolveId | None = None) -> Policy | None:
    """The policy the x-amz-grant-* headers give, or None when there is none.

    Only the listed grantees get access: the owner too only if granted. ``resolve_email`` None keeps email grantees
    unresolved (see ``resolve``); ``resolve_id`` None accepts any id and leaves grantees' display names empty.
    """
    lowered = _lower_keys(headers)
    present = [(name, lowered[name]) for name in GRANT_HEADERS if name in lowered]
    if not present:
        return None
    grants = [Grant(grantee, GRANT_HEADERS[name]) for name, value in present
              for grantee in _parse_grantees(name, value)]
    if len(grants) > MAX_GRANTS:
        raise S3Error("InvalidArgument", f"An ACL can have up to {MAX_GRANTS} grants",
                      ArgumentName=present[-1][0], ArgumentValue=present[-1][1])
    # the owner is the caller's (maybe anonymous): only the grantees' ids are checked
    return _resolve(Policy(owner_id, owner_name, tuple(grants)), resolve_email, resolve_id, "id", owner=False)


def request_policy(headers: Mapping[str, str], owner_id: str, owner_name: str, resolve_email: ResolveEmail | None,
                   *, bucket_owner_id: str | None = None, bucket_owner_name: str = "",
                   resolve_id: ResolveId | None = None) -> Policy:
    """The ACL a request creating a bucket or object asks for: the canned x-amz-acl, or the x-amz-grant-* headers
    (both: InvalidRequest, as S3), or private."""
    lowered = _lower_keys(headers)
    acl = lowered.get("x-amz-acl")
    if acl is not None and any(name in lowered for name in GRANT_HEADERS):
        raise S3Error("InvalidRequest", "Specifying both Canned ACLs and Header Grants is not allowed")
    if acl is not None:
        return canned(acl.strip(), owner_id, owner_name, bucket_owner_id=bucket_owner_id,
                      bucket_owner_name=bucket_owner_name)
    granted = from_grant_headers(lowered, owner_id, owner_name, resolve_email, resolve_id=resolve_id)
    if granted is not None:
        return granted
    return canned("private", owner_id, owner_name)


# -- AccessControlPolicy documents ------------------------------------------------------------------------------------

def _children(node: Element, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict[str, Element]:
    """The child elements of ``node`` by local name: each allowed at most once, the required ones present."""
    found: dict[str, Element] = {}
    for child in node:
        name = local(child.tag)
        if name not in allowed or name in found:
            raise _malformed(f"unexpected <{name}> in <{local(node.tag)}>")
        if len(child):
            if name not in ("Owner", "AccessControlList", "Grant", "Grantee"):
                raise _malformed(f"<{name}> has child elements")
        found[name] = child
    for name in required:
        if name not in found:
            raise _malformed(f"<{local(node.tag)}> without <{name}>")
    return found


def _text(node: Element | None) -> str:
    return "" if node is None else "".join(node.itertext()).strip()


def _grantee(node: Element) -> Grantee:
    xsi_type = node.get(f"{{{XSI}}}type")
    if xsi_type is None:
        raise _malformed("<Grantee> without xsi:type")
    kind = xsi_type.strip().rsplit(":", 1)[-1]  # a QName: the prefix, if any, is the S3 namespace's
    fields = _children(node, ("ID", "DisplayName", "URI", "EmailAddress"))
    if kind == CANONICAL_USER:
        user_id = _text(fields.get("ID"))
        if not user_id:
            raise _malformed("CanonicalUser grantee without <ID>")
        return Grantee.user(user_id)  # DisplayName is ignored in a request
    if kind == GROUP:
        uri = _text(fields.get("URI"))
        if not uri:
            raise _malformed("Group grantee without <URI>")
        if uri not in GROUPS:
            raise _invalid_argument("Invalid group uri", "Group/URI", uri)
        return Grantee.group(uri)
    if kind == BY_EMAIL:
        email = _text(fields.get("EmailAddress"))
        if not email:
            raise _malformed("AmazonCustomerByEmail grantee without <EmailAddress>")
        return Grantee.by_email(email)
    raise _malformed(f"unknown grantee type {xsi_type!r}")


def parse_policy_xml(body: bytes, resolve_email: ResolveEmail | None, *,
                     resolve_id: ResolveId | None = None) -> Policy:
    """An AccessControlPolicy document (PutBucketAcl/PutObjectAcl body), parsed with the hardened parser.

    DisplayName elements are ignored: names come from ``resolve_id`` (None: names left empty, any id accepted) and
    ``resolve_email`` (None: email grantees kept unresolved, see ``resolve``).
    """
    try:
        root = parse(body)  # MalformedXML for anything that does not parse or uses a DTD/entities
    except LookupError as exc:  # an unknown encoding="..." (s3.xml.parse lets it through)
        raise S3Error("MalformedXML") from exc
    if local(root.tag) != "AccessControlPolicy":
        raise _malformed(f"root element <{local(root.tag)}>")
    top = _children(root, ("Owner", "AccessControlList"), ("Owner", "AccessControlList"))
    owner = _children(top["Owner"], ("ID", "DisplayName"))
    owner_id = _text(owner.get("ID"))
    if not owner_id:
        raise _malformed("<Owner> without <ID>")
    grants = []
    for node in top["AccessControlList"]:
        if local(node.tag) != "Grant":
            raise _malformed(f"unexpected <{local(node.tag)}> in <AccessControlList>")
        parts = _children(node, ("Grantee", "Permission"), ("Grantee", "Permission"))
        permission = _text(parts["Permission"])
        if permission not in PERMISSIONS:
            raise _malformed(f"unknown permission {permission!r}")
        grants.append(Grant(_grantee(parts["Grantee"]), permission))
        if len(grants) > MAX_GRANTS:
            raise _malformed(f"more than {MAX_GRANTS} grants")
    return resolve(Policy(owner_id, "", tuple(grants)), resolve_email, resolve_id)


def display_order(policy: Policy) -> Policy:
    """The policy with its group grants first, then the others, each kind in the order stored: the order RGW
    answers GetBucketAcl/GetObjectAcl in, which some tools compare position by position."""
    return attrs.evolve(policy, grants=sorted(policy.grants, key=lambda g: g.grantee.kind != GROUP))


def render_policy_xml(policy: Policy) -> bytes:
    """The AccessControlPolicy document GetBucketAcl/GetObjectAcl answer: group grants first, then the others,
    each kind in the order stored."""
    def grantee(g: Grantee) -> Tag:
        attrs_ = f' xmlns:xsi="{XSI}" xsi:type="{g.kind}"'
        if g.kind == CANONICAL_USER:
            return Tag("Grantee", Tag("ID", g.id), Tag("DisplayName", g.display_name) if g.display_name else None,
                       attrs=attrs_)
        if g.kind == GROUP:
            return Tag("Grantee", Tag("URI", g.uri), attrs=attrs_)
        return Tag("Grantee", Tag("EmailAddress", g.email), attrs=attrs_)

    return document(Tag(
        "AccessControlPolicy",
        Tag("Owner", Tag("ID", policy.owner_id),
            Tag("DisplayName", policy.owner_name) if policy.owner_name else None),
        Tag("AccessControlList", [Tag("Grant", grantee(g.grantee), Tag("Permission", g.permission))
                                  for g in display_order(policy).grants]),
    ))


# -- the metadata form ------------------------------------------------------------------------------------------------

_JSON_KINDS = {CANONICAL_USER: "id", GROUP: "uri", BY_EMAIL: "email"}
_KINDS_JSON = {v: k for k, v in _JSON_KINDS.items()}


def dumps(policy: Policy) -> str:
    """Compact JSON for the metadata ``acl`` field:
    ``{"v":1,"o":[owner id,owner name],"g":[[permission,"id"|"uri"|"email",value(,display name)],...]}``."""
    grants = []
    for grant in policy.grants:
        g = grant.grantee
        kind = _JSON_KINDS[g.kind]
        entry = [grant.permission, kind, {"id": g.id, "uri": g.uri, "email": g.email}[kind]]
        if g.display_name:
            entry.append(g.display_name)
        grants.append(entry)
    return json.dumps({"v": 1, "o": [policy.owner_id, policy.owner_name], "g": grants},
                      separators=(",", ":"))


def loads(text: str) -> Policy:
    """The policy ``dumps`` wrote; ValueError for anything else (including "", which callers read as private:
    see ``effective``)."""
    data = json.loads(text)
    try:
        if not isinstance(data, dict) or data.get("v") != 1 or set(data) != {"v", "o", "g"}:
            raise ValueError("not an ACL record")
        if not isinstance(data["o"], list) or len(data["o"]) != 2:
            raise ValueError("bad owner")
        owner_id, owner_name = data["o"]
        if not isinstance(owner_id, str) or not owner_id or not isinstance(owner_name, str):
            raise ValueError("bad owner")
        if not isinstance(data["g"], list):
            raise ValueError("bad grants")
        grants = []
        for entry in data["g"]:
            if not isinstance(entry, list) or len(entry) not in (3, 4) or not all(isinstance(x, str) for x in entry):
                raise ValueError(f"bad grant {entry!r}")
            permission, kind, value, *name = entry
            if kind not in _KINDS_JSON or not value:
                raise ValueError(f"bad grantee {entry!r}")
            grantee = Grantee(_KINDS_JSON[kind], display_name=name[0] if name else "", **{kind: value})
            grants.append(Grant(grantee, permission))  # ValueError for an unknown permission
    except (TypeError, KeyError) as exc:
        raise ValueError(f"not an ACL record: {exc}") from None
    return Policy(owner_id, owner_name, tuple(grants))


def effective(text: str, owner_id: str, owner_name: str) -> Policy:
    """The policy of a bucket or object from its metadata ``acl`` field: "" is private to ``owner_id``."""
    if not text:
        return canned("private", owner_id, owner_name)
    return loads(text)


# -- the check --------------------------------------------------------------------------------------------------------

def applies(grantee: Grantee, user_id: str | None) -> bool:
    """Whether a grant to ``grantee`` is one to ``user_id`` (None or "": anonymous)."""
    if grantee.kind == GROUP:
        if grantee.uri == ALL_USERS:
            return True
        if grantee.uri == AUTHENTICATED_USERS:
            return bool(user_id)
        return False  # LogDelivery: no user of this system is the log-delivery service
    if grantee.kind == CANONICAL_USER:
        return bool(user_id) and grantee.id == user_id
    return False  # an unresolved email grantee names nobody yet


def allows(policy: Policy, user_id: str | None, permission: str) -> bool:
    """Whether ``policy`` grants ``permission`` to ``user_id`` (None: anonymous): through AllUsers (everyone),
    AuthenticatedUsers (any signed-in user) or the user's own canonical id; FULL_CONTROL implies every permission.
    The owner's implicit rights are not this function's business."""
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")
    return any(grant.permission in (permission, "FULL_CONTROL") and applies(grant.grantee, user_id)
               for grant in policy.grants)


def is_public(policy: Policy) -> bool:
    """Whether the ACL grants anything to everyone or to every signed-in user (what a public access block's
    BlockPublicAcls refuses and IgnorePublicAcls ignores)."""
    return any(g.grantee.kind == GROUP and g.grantee.uri in (ALL_USERS, AUTHENTICATED_USERS) for g in policy.grants)


def without_public(policy: Policy) -> Policy:
    return attrs.evolve(policy, grants=[g for g in policy.grants if not (
        g.grantee.kind == GROUP and g.grantee.uri in (ALL_USERS, AUTHENTICATED_USERS))])
