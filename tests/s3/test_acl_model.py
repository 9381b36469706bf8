"""The pure ACL model (trio_sos.s3.acl): canned ACLs, grant headers, AccessControlPolicy documents, the metadata JSON
and the permission check. No server."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import boto3
import pytest
from botocore import xform_name
from botocore.parsers import RestXMLParser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_sos.s3 import acl
from trio_sos.s3.acl import ALL_USERS, AUTHENTICATED_USERS, LOG_DELIVERY, PERMISSIONS, Grant, Grantee, Policy
from trio_sos.s3.errors import S3Error
from trio_sos.s3.xml import NS

XSI = "http://www.w3.org/2001/XMLSchema-instance"
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

USERS = {"alice@example.com": ("alice-id", "Alice"), "bob@example.com": ("bob-id", "Bob")}
NAMES = {"owner-id": "Owner", "alice-id": "Alice", "bob-id": "Bob"}


def resolve_email(email: str) -> tuple[str, str] | None:
    return USERS.get(email)


def user(uid: str, name: str = "") -> Grantee:
    return Grantee.user(uid, name)


def group(uri: str) -> Grantee:
    return Grantee.group(uri)


def owner_full(owner: str = "owner-id", name: str = "Owner") -> Grant:
    return Grant(user(owner, name), "FULL_CONTROL")


def raises(code: str, fn, *args, **kwargs) -> S3Error:
    with pytest.raises(S3Error) as info:
        fn(*args, **kwargs)
    assert info.value.code == code, info.value
    assert info.value.status == 400
    return info.value


def boto_client():
    return boto3.client("s3", region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b")


class _Captured(Exception):
    pass


def capture(operation: str, **params) -> tuple[dict[str, str], bytes]:
    """What botocore sends for ``operation``: headers and body, caught in before-send (no network)."""
    client = boto_client()
    seen: dict = {}

    def grab(request, **_kwargs):
        seen["headers"] = {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        seen["body"] = request.body or b""
        raise _Captured

    client.meta.events.register(f"before-send.s3.{operation}", grab)
    with pytest.raises(_Captured):
        getattr(client, xform_name(operation))(**params)
    return seen["headers"], seen["body"]


# -- canned ACLs ------------------------------------------------------------------------------------------------------

BUCKET_OWNER = ("bucket-owner-id", "BucketOwner")

CANNED_TABLE = {
    "private": [],
    "public-read": [Grant(group(ALL_USERS), "READ")],
    "public-read-write": [Grant(group(ALL_USERS), "READ"), Grant(group(ALL_USERS), "WRITE")],
    "aws-exec-read": [],  # the EC2 account's READ has no counterpart here
    "authenticated-read": [Grant(group(AUTHENTICATED_USERS), "READ")],
    "bucket-owner-read": [Grant(user(*BUCKET_OWNER), "READ")],
    "bucket-owner-full-control": [Grant(user(*BUCKET_OWNER), "FULL_CONTROL")],
    "log-delivery-write": [Grant(group(LOG_DELIVERY), "WRITE"), Grant(group(LOG_DELIVERY), "READ_ACP")],
}


def test_canned_names():
    assert sorted(acl.CANNED) == sorted(CANNED_TABLE)


@pytest.mark.parametrize("name", sorted(CANNED_TABLE))
def test_canned_table(name):
    policy = acl.canned(name, "owner-id", "Owner", bucket_owner_id=BUCKET_OWNER[0], bucket_owner_name=BUCKET_OWNER[1])
    assert policy == Policy("owner-id", "Owner", (owner_full(), *CANNED_TABLE[name]))


@pytest.mark.parametrize("name", ["bucket-owner-read", "bucket-owner-full-control"])
def test_canned_bucket_owner_ignored_on_buckets_and_for_the_bucket_owner(name):
    # creating a bucket: no bucket owner, S3 ignores these
    assert acl.canned(name, "owner-id", "Owner") == acl.canned("private", "owner-id", "Owner")
    # the object's owner owns the bucket: already has FULL_CONTROL
    same = acl.canned(name, "owner-id", "Owner", bucket_owner_id="owner-id", bucket_owner_name="Owner")
    assert same.grants == (owner_full(),)


@pytest.mark.parametrize("name", ["", "Private", "PUBLIC-READ", "public_read", "public-read ", "bogus"])
def test_canned_unknown(name):
    error = raises("InvalidArgument", acl.canned, name, "owner-id", "Owner")
    assert error.extra == {"ArgumentName": "x-amz-acl", "ArgumentValue": name}


# -- grant headers ----------------------------------------------------------------------------------------------------

def test_no_grant_headers_is_none():
    assert acl.from_grant_headers({}, "owner-id", "Owner", resolve_email) is None
    assert acl.from_grant_headers({"x-amz-acl": "private", "content-type": "text/plain"}, "owner-id", "Owner",
                                  resolve_email) is None


@pytest.mark.parametrize("header,permission", [
    ("x-amz-grant-read", "READ"), ("x-amz-grant-write", "WRITE"), ("x-amz-grant-read-acp", "READ_ACP"),
    ("x-amz-grant-write-acp", "WRITE_ACP"), ("x-amz-grant-full-control", "FULL_CONTROL"),
    ("X-Amz-Grant-Full-Control", "FULL_CONTROL"),
])
def test_each_grant_header(header, permission):
    policy = acl.from_grant_headers({header: 'id="alice-id"'}, "owner-id", "Owner", resolve_email)
    # explicit grants replace the default ACL: the owner keeps no grant it was not given
    assert policy == Policy("owner-id", "Owner", (Grant(user("alice-id"), permission),))


@pytest.mark.parametrize("value", [
    'id="alice-id"', "id=alice-id", ' id = "alice-id" ', "id =alice-id", '\tid="alice-id"\t', "ID=alice-id",
    'id=" alice-id "',
])
def test_grant_header_spacing_and_quoting(value):
    policy = acl.from_grant_headers({"x-amz-grant-read": value}, "o", "O", resolve_email)
    assert policy.grants == (Grant(user("alice-id"), "READ"),)


def test_grant_header_several_grantees_and_headers():
    headers = {
        "x-amz-grant-read": f'emailAddress="alice@example.com", uri="{ALL_USERS}",id=carol-id',
        "x-amz-grant-write": f'uri={LOG_DELIVERY}',
        "x-amz-grant-full-control": 'id="owner-id"',
        "x-amz-grant-read-acp": f'emailaddress=bob@example.com ,  uri="{AUTHENTICATED_USERS}"',
    }
    policy = acl.from_grant_headers(headers, "owner-id", "Owner", resolve_email)
    assert policy == Policy("owner-id", "Owner", (
        Grant(user("owner-id"), "FULL_CONTROL"),
        Grant(group(LOG_DELIVERY), "WRITE"),
        Grant(user("alice-id", "Alice"), "READ"),  # emails resolve to canonical users
        Grant(group(ALL_USERS), "READ"),
        Grant(user("carol-id"), "READ"),
        Grant(user("bob-id", "Bob"), "READ_ACP"),
        Grant(group(AUTHENTICATED_USERS), "READ_ACP"),
    ))


def test_grant_header_as_boto3_sends_it():
    headers, _ = capture("PutObject", Bucket="b", Key="k", Body=b"x",
                         GrantRead=f'id="alice-id", uri="{ALL_USERS}"', GrantFullControl='emailAddress="bob@example.com"')
    policy = acl.from_grant_headers(headers, "owner-id", "Owner", resolve_email)
    assert policy.grants == (Grant(user("bob-id", "Bob"), "FULL_CONTROL"), Grant(user("alice-id"), "READ"),
                             Grant(group(ALL_USERS), "READ"))


def test_grant_header_email_resolution():
    error = raises("UnresolvableGrantByEmailAddress", acl.from_grant_headers,
                   {"x-amz-grant-read": "emailAddress=nobody@example.com"}, "o", "O", resolve_email)
    assert "does not match any account" in error.message
    # left unresolved for a caller that looks addresses up itself (async), then resolved
    pending = acl.from_grant_headers({"x-amz-grant-read": "emailAddress=alice@example.com, id=bob-id"}, "o", "O",
                                     None)
    assert pending.grants[0] == Grant(Grantee.by_email("alice@example.com"), "READ")
    assert acl.grantee_emails(pending) == ("alice@example.com",)
    assert acl.user_ids(pending) == ("o", "bob-id")
    assert acl.resolve(pending, resolve_email).grants == (Grant(user("alice-id", "Alice"), "READ"),
                                                          Grant(user("bob-id"), "READ"))


def test_grant_header_ids_checked_by_resolve_id():
    headers = {"x-amz-grant-read": "id=alice-id, emailAddress=bob@example.com"}
    # the owner (here an id the resolver does not know, e.g. anonymous) is not checked
    policy = acl.from_grant_headers(headers, "anon", "", resolve_email, resolve_id=NAMES.get)
    assert policy == Policy("anon", "", (Grant(user("alice-id", "Alice"), "READ"), Grant(user("bob-id", "Bob"), "READ")))
    error = raises("InvalidArgument", acl.from_grant_headers, {"x-amz-grant-read": "id=mallory"}, "owner-id", "Owner",
                   resolve_email, resolve_id=NAMES.get)
    assert (error.message, error.extra) == ("Invalid id", {"ArgumentName": "id", "ArgumentValue": "mallory"})


grantee_items = st.one_of(
    st.tuples(st.sampled_from(["id", "ID", "Id"]), st.from_regex(r"[A-Za-z0-9_.@:/+-]{1,12}", fullmatch=True)),
    st.tuples(st.sampled_from(["uri", "URI"]), st.sampled_from([ALL_USERS, AUTHENTICATED_USERS, LOG_DELIVERY])),
    st.tuples(st.sampled_from(["emailAddress", "emailaddress"]), st.sampled_from(sorted(USERS))),
)
blanks = st.sampled_from(["", " ", "  ", "\t", " \t "])


@FAST
@given(st.lists(st.tuples(grantee_items, st.booleans(), blanks, blanks, blanks, blanks), min_size=1, max_size=8))
def test_grant_header_any_spacing_and_quoting(items):
    parts, expected = [], []
    for (key, value), quoted, before, after_key, after_eq, after in items:
        text = f'"{value}"' if quoted else value
        parts.append(f"{before}{key}{after_key}={after_eq}{text}{after}")
        kind = key.lower()
        grantee = (user(value) if kind == "id" else group(value) if kind == "uri" else user(*USERS[value]))
        expected.append(Grant(grantee, "WRITE_ACP"))
    policy = acl.from_grant_headers({"x-amz-grant-write-acp": ",".join(parts)}, "o", "O", resolve_email)
    assert policy == Policy("o", "O", tuple(expected))


@FAST
@given(st.text(max_size=60))
def test_grant_header_random_text_never_crashes(value):
    try:
        policy = acl.from_grant_headers({"x-amz-grant-read": value}, "o", "O", resolve_email)
    except S3Error as exc:
        assert exc.status == 400 and exc.code in ("InvalidArgument", "UnresolvableGrantByEmailAddress")
    else:
        assert policy is not None and policy.grants and all(g.permission == "READ" for g in policy.grants)


@pytest.mark.parametrize("value", [
    "", "   ", "alice-id", "id", "id=", 'id=""', 'id="  "', "id=a,", ",id=a", "id=a,,id=b", "id=a b", 'id="a',
    'id=a"b', "name=alice", "id:alice", "id=a;id=b", "canonical=abc", 'id="a" id="b"', "id=a=b",
])
def test_grant_header_bad_format(value):
    error = raises("InvalidArgument", acl.from_grant_headers, {"x-amz-grant-write": value}, "o", "O", resolve_email)
    assert (error.message, error.extra) == ("Argument format not recognized",
                                            {"ArgumentName": "x-amz-grant-write", "ArgumentValue": value})


@pytest.mark.parametrize("uri", ["http://acs.amazonaws.com/groups/global/NOTAVALIDGROUP", ALL_USERS + "/",
                                 "http://acs.amazonaws.com/groups/global/allusers"])
def test_grant_header_bad_group(uri):
    error = raises("InvalidArgument", acl.from_grant_headers, {"x-amz-grant-read": f'uri="{uri}"'}, "o", "O",
                   resolve_email)
    assert (error.message, error.extra) == ("Invalid group uri", {"ArgumentName": "uri", "ArgumentValue": uri})


def test_grant_header_limit():
    ok = ",".join(f"id=u{i}" for i in range(100))
    assert len(acl.from_grant_headers({"x-amz-grant-read": ok}, "o", "O", resolve_email).grants) == 100
    raises("InvalidArgument", acl.from_grant_headers, {"x-amz-grant-read": ok, "x-amz-grant-write": "id=u"}, "o",
           "O", resolve_email)


# -- request_policy ---------------------------------------------------------------------------------------------------

def test_request_policy_default_is_private():
    assert acl.request_policy({}, "owner-id", "Owner", resolve_email) == Policy("owner-id", "Owner", (owner_full(),))


def test_request_policy_canned():
    policy = acl.request_policy({"X-Amz-Acl": "bucket-owner-full-control"}, "owner-id", "Owner", resolve_email,
                                bucket_owner_id=BUCKET_OWNER[0], bucket_owner_name=BUCKET_OWNER[1])
    assert policy.grants == (owner_full(), Grant(user(*BUCKET_OWNER), "FULL_CONTROL"))
    error = raises("InvalidArgument", acl.request_policy, {"x-amz-acl": "public"}, "o", "O", resolve_email)
    assert error.extra == {"ArgumentName": "x-amz-acl", "ArgumentValue": "public"}


def test_request_policy_grants():
    policy = acl.request_policy({"x-amz-grant-read": "id=alice-id"}, "owner-id", "Owner", resolve_email)
    assert policy.grants == (Grant(user("alice-id"), "READ"),)


def test_request_policy_canned_and_grants_conflict():
    # checked before the grants are even parsed (or their emails resolved)
    for grant in ("id=alice-id", "not a grant", "emailAddress=nobody@example.com"):
        error = raises("InvalidRequest", acl.request_policy, {"x-amz-acl": "private", "x-amz-grant-read-acp": grant},
                       "o", "O", resolve_email)
        assert error.message == "Specifying both Canned ACLs and Header Grants is not allowed"


# -- documents --------------------------------------------------------------------------------------------------------

# The "Sample ACL" of the S3 User Guide, "Access control list (ACL) overview" (awsdocs/amazon-s3-developer-guide,
# doc_source/acl-overview.md), as printed there (indentation and blank lines included).
AWS_SAMPLE_ACL = b"""<?xml version="1.0" encoding="UTF-8"?>
<AccessControlPolicy xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Owner>
    <ID>Owner-canonical-user-ID</ID>
    <DisplayName>display-name</DisplayName>
  </Owner>
  <AccessControlList>
    <Grant>
      <Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="CanonicalUser">
        <ID>Owner-canonical-user-ID</ID>
        <DisplayName>display-name</DisplayName>
      </Grantee>
      <Permission>FULL_CONTROL</Permission>
    </Grant>

    <Grant>
      <Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="CanonicalUser">
        <ID>user1-canonical-user-ID</ID>
        <DisplayName>display-name</DisplayName>
      </Grantee>
      <Permission>WRITE</Permission>
    </Grant>

    <Grant>
      <Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="CanonicalUser">
        <ID>user2-canonical-user-ID</ID>
        <DisplayName>display-name</DisplayName>
      </Grantee>
      <Permission>READ</Permission>
    </Grant>

    <Grant>
      <Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="Group">
        <URI>http://acs.amazonaws.com/groups/global/AllUsers</URI>
      </Grantee>
      <Permission>READ</Permission>
    </Grant>
    <Grant>
      <Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="Group">
        <URI>http://acs.amazonaws.com/groups/s3/LogDelivery</URI>
      </Grantee>
      <Permission>WRITE</Permission>
    </Grant>

  </AccessControlList>
</AccessControlPolicy>
"""


def test_parse_aws_sample_acl():
    policy = acl.parse_policy_xml(AWS_SAMPLE_ACL, resolve_email)
    # DisplayName is "optional and ignored in the request"
    assert policy == Policy("Owner-canonical-user-ID", "", (
        Grant(user("Owner-canonical-user-ID"), "FULL_CONTROL"),
        Grant(user("user1-canonical-user-ID"), "WRITE"),
        Grant(user("user2-canonical-user-ID"), "READ"),
        Grant(group(ALL_USERS), "READ"),
        Grant(group(LOG_DELIVERY), "WRITE"),
    ))
    names = {"Owner-canonical-user-ID": "owner", "user1-canonical-user-ID": "one", "user2-canonical-user-ID": "two"}
    named = acl.parse_policy_xml(AWS_SAMPLE_ACL, resolve_email, resolve_id=names.get)
    assert named.owner_name == "owner"
    assert [g.grantee.display_name for g in named.grants] == ["owner", "one", "two", "", ""]


def test_parse_aws_default_acl_typo_is_refused():
    # The same guide's first example writes xsi:type="Canonical User" (with a space): not a grantee type.
    doc = AWS_SAMPLE_ACL.replace(b'xsi:type="CanonicalUser"', b'xsi:type="Canonical User"', 1)
    raises("MalformedACLError", acl.parse_policy_xml, doc, resolve_email)


# The three grantee forms of the PutObjectAcl reference ("Grantee Values"), in one document without an XML
# declaration or the S3 namespace.
API_GRANTEE_FORMS = b"""<AccessControlPolicy><Owner><ID>owner-id</ID></Owner><AccessControlList>
<Grant><Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="CanonicalUser"><ID>bob-id</ID>
<DisplayName>GranteesEmail</DisplayName> </Grantee><Permission>READ</Permission></Grant>
<Grant><Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="Group">
<URI>http://acs.amazonaws.com/groups/global/AuthenticatedUsers</URI></Grantee><Permission>READ_ACP</Permission></Grant>
<Grant><Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="AmazonCustomerByEmail">
<EmailAddress>alice@example.com</EmailAddress></Grantee><Permission>WRITE_ACP</Permission></Grant>
</AccessControlList></AccessControlPolicy>"""


def test_parse_api_grantee_forms():
    policy = acl.parse_policy_xml(API_GRANTEE_FORMS, resolve_email, resolve_id=NAMES.get)
    assert policy == Policy("owner-id", "Owner", (
        Grant(user("bob-id", "Bob"), "READ"),
        Grant(group(AUTHENTICATED_USERS), "READ_ACP"),
        Grant(user("alice-id", "Alice"), "WRITE_ACP"),  # "resolved to the CanonicalUser"
    ))


def test_parse_what_boto3_sends():
    _, body = capture("PutBucketAcl", Bucket="b", AccessControlPolicy={
        "Owner": {"ID": "owner-id", "DisplayName": "Owner"},
        "Grants": [
            {"Grantee": {"Type": "CanonicalUser", "ID": "bob-id", "DisplayName": "spoofed"}, "Permission": "FULL_CONTROL"},
            {"Grantee": {"Type": "Group", "URI": ALL_USERS}, "Permission": "READ"},
            {"Grantee": {"Type": "AmazonCustomerByEmail", "EmailAddress": "alice@example.com"}, "Permission": "WRITE"},
            {"Grantee": {"Type": "Group", "URI": LOG_DELIVERY}, "Permission": "READ_ACP"},
        ]})
    assert b"xsi:type" in body
    policy = acl.parse_policy_xml(body, resolve_email, resolve_id=NAMES.get)
    assert policy == Policy("owner-id", "Owner", (
        Grant(user("bob-id", "Bob"), "FULL_CONTROL"),
        Grant(group(ALL_USERS), "READ"),
        Grant(user("alice-id", "Alice"), "WRITE"),
        Grant(group(LOG_DELIVERY), "READ_ACP"),
    ))
    # an empty list revokes everything, the owner's grant too (s3-tests test_bucket_acl_revoke_all)
    _, body = capture("PutObjectAcl", Bucket="b", Key="k",
                      AccessControlPolicy={"Owner": {"ID": "owner-id"}, "Grants": []})
    assert acl.parse_policy_xml(body, resolve_email) == Policy("owner-id", "", ())


def test_parse_xsi_namespace_not_prefix():
    doc = (b'<AccessControlPolicy xmlns="%s" xmlns:i="%s"><Owner><ID>o</ID></Owner><AccessControlList>'
           b'<Grant><Grantee i:type="Group"><URI>%s</URI></Grantee><Permission>READ</Permission></Grant>'
           b'</AccessControlList></AccessControlPolicy>') % (NS.encode(), XSI.encode(), ALL_USERS.encode())
    assert acl.parse_policy_xml(doc, resolve_email).grants == (Grant(group(ALL_USERS), "READ"),)
    # an "xsi" prefix bound to another namespace is no xsi:type
    wrong = doc.replace(b'xmlns:i="%s"' % XSI.encode(), b'xmlns:i="urn:not-xsi"')
    raises("MalformedACLError", acl.parse_policy_xml, wrong, resolve_email)
    # an unbound prefix does not parse at all
    unbound = doc.replace(b' xmlns:i="%s"' % XSI.encode(), b"")
    raises("MalformedXML", acl.parse_policy_xml, unbound, resolve_email)
    # no type attribute at all
    untyped = doc.replace(b' i:type="Group"', b"")
    raises("MalformedACLError", acl.parse_policy_xml, untyped, resolve_email)
    # a plain type attribute (no namespace) is not xsi:type either
    plain = doc.replace(b'i:type="Group"', b'type="Group"')
    raises("MalformedACLError", acl.parse_policy_xml, plain, resolve_email)


def _doc(acl_body: str = "", owner: str = "<Owner><ID>owner-id</ID></Owner>", root: str = "AccessControlPolicy",
         extra: str = "") -> bytes:
    return (f'<{root} xmlns="{NS}">{owner}<AccessControlList>{acl_body}</AccessControlList>{extra}</{root}>').encode()


def _grant(grantee: str, permission: str = "READ", kind: str = "CanonicalUser") -> str:
    return (f'<Grant><Grantee xmlns:xsi="{XSI}" xsi:type="{kind}">{grantee}</Grantee>'
            f'<Permission>{permission}</Permission></Grant>')


MALFORMED = {
    "no Owner": _doc(owner=""),
    "Owner without ID": _doc(owner="<Owner><DisplayName>x</DisplayName></Owner>"),
    "Owner with empty ID": _doc(owner="<Owner><ID> </ID></Owner>"),
    "two Owners": _doc(owner="<Owner><ID>a</ID></Owner><Owner><ID>b</ID></Owner>"),
    "no AccessControlList": f'<AccessControlPolicy xmlns="{NS}"><Owner><ID>o</ID></Owner></AccessControlPolicy>'.encode(),
    "wrong root": _doc(root="AccessControlList"),
    "unknown top element": _doc(extra="<Foo/>"),
    "unknown list element": _doc("<PowerGrant/>"),
    "unknown permission": _doc(_grant("<ID>a</ID>", "READ_WRITE")),
    "lower-case permission": _doc(_grant("<ID>a</ID>", "read")),
    "empty permission": _doc(_grant("<ID>a</ID>", "")),
    "unknown grantee type": _doc(_grant("<ID>a</ID>", kind="User")),
    "CanonicalUser without ID": _doc(_grant("<DisplayName>a</DisplayName>")),
    "CanonicalUser with a URI": _doc(_grant(f"<URI>{ALL_USERS}</URI>")),
    "Group without URI": _doc(_grant("<ID>a</ID>", kind="Group")),
    "email without address": _doc(_grant("<ID>a</ID>", kind="AmazonCustomerByEmail")),
    "unknown grantee element": _doc(_grant("<ID>a</ID><Name>x</Name>")),
    "nested element in ID": _doc(_grant("<ID><b>a</b></ID>")),
    "Grant without Permission": _doc(f'<Grant><Grantee xmlns:xsi="{XSI}" xsi:type="Group"><URI>{ALL_USERS}</URI>'
                                     f'</Grantee></Grant>'),
    "Grant without Grantee": _doc("<Grant><Permission>READ</Permission></Grant>"),
    "two Grantees": _doc(f'<Grant><Grantee xmlns:xsi="{XSI}" xsi:type="Group"><URI>{ALL_USERS}</URI></Grantee>'
                         f'<Grantee xmlns:xsi="{XSI}" xsi:type="Group"><URI>{ALL_USERS}</URI></Grantee>'
                         f'<Permission>READ</Permission></Grant>'),
    "101 grants": _doc(_grant("<ID>a</ID>") * 101),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_parse_malformed(name):
    raises("MalformedACLError", acl.parse_policy_xml, MALFORMED[name], resolve_email)


def test_parse_hundred_grants_is_fine():
    assert len(acl.parse_policy_xml(_doc(_grant("<ID>a</ID>") * 100), resolve_email).grants) == 100


def test_parse_invalid_group_and_id_and_email():
    error = raises("InvalidArgument", acl.parse_policy_xml,
                   _doc(_grant("<URI>http://acs.amazonaws.com/groups/global/NOTAVALIDGROUP</URI>", kind="Group")),
                   resolve_email)
    assert (error.message, error.extra["ArgumentName"]) == ("Invalid group uri", "Group/URI")
    error = raises("InvalidArgument", acl.parse_policy_xml, _doc(_grant("<ID>mallory</ID>")), resolve_email,
                   resolve_id=NAMES.get)
    assert (error.message, error.extra) == ("Invalid id", {"ArgumentName": "CanonicalUser/ID", "ArgumentValue": "mallory"})
    error = raises("InvalidArgument", acl.parse_policy_xml, _doc(owner="<Owner><ID>mallory</ID></Owner>"),
                   resolve_email, resolve_id=NAMES.get)
    assert error.extra["ArgumentValue"] == "mallory"
    raises("UnresolvableGrantByEmailAddress", acl.parse_policy_xml,
           _doc(_grant("<EmailAddress>nobody@example.com</EmailAddress>", kind="AmazonCustomerByEmail")),
           resolve_email)


HOSTILE = {
    "billion laughs": b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>
<AccessControlPolicy><Owner><ID>&lol4;</ID></Owner><AccessControlList/></AccessControlPolicy>""",
    "external entity": b"""<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<AccessControlPolicy><Owner><ID>&x;</ID></Owner><AccessControlList/></AccessControlPolicy>""",
    "parameter entity": b"""<?xml version="1.0"?><!DOCTYPE p [<!ENTITY % x SYSTEM "http://127.0.0.1:1/x.dtd"> %x;]>
<AccessControlPolicy><Owner><ID>o</ID></Owner><AccessControlList/></AccessControlPolicy>""",
    "internal entity": b"""<!DOCTYPE p [<!ENTITY me "owner-id">]>
<AccessControlPolicy><Owner><ID>&me;</ID></Owner><AccessControlList/></AccessControlPolicy>""",
    "bare doctype": b"""<!DOCTYPE AccessControlPolicy>
<AccessControlPolicy><Owner><ID>o</ID></Owner><AccessControlList/></AccessControlPolicy>""",
    "undefined entity": b"<AccessControlPolicy><Owner><ID>&x;</ID></Owner><AccessControlList/></AccessControlPolicy>",
    "empty": b"",
    "not xml": b"id=owner-id",
    "truncated": _doc(_grant("<ID>a</ID>"))[:-10],
    "unclosed grant": _doc("<Grant>"),
    "bad utf-8": b"<AccessControlPolicy><Owner><ID>\xff\xfe</ID></Owner><AccessControlList/></AccessControlPolicy>",
    "unknown encoding": b'<?xml version="1.0" encoding="x-bogus"?><AccessControlPolicy/>',
    "utf-16 mismatch": b'<?xml version="1.0" encoding="UTF-16"?><AccessControlPolicy/>',
    "text-to-bytes codec": b'<?xml version="1.0" encoding="base64"?><AccessControlPolicy/>',
    "deep nesting": b"<AccessControlPolicy>" + b"<a>" * 50_000 + b"</a>" * 50_000 + b"</AccessControlPolicy>",
    "nul": b"<AccessControlPolicy>\x00</AccessControlPolicy>",
    "two roots": _doc() + _doc(),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_parse_hostile(name):
    with pytest.raises(S3Error) as info:
        acl.parse_policy_xml(HOSTILE[name], resolve_email)
    assert info.value.code in ("MalformedXML", "MalformedACLError")
    assert info.value.status == 400


@FAST
@given(st.binary(max_size=300))
def test_parse_random_bytes_never_crashes(body):
    try:
        acl.parse_policy_xml(body, resolve_email)
    except S3Error as exc:
        assert exc.status == 400


@FAST
@given(st.data())
def test_parse_mutated_documents_never_crash(data):
    body = bytearray(acl.render_policy_xml(acl.canned("log-delivery-write", "owner-id", "Owner")))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(body) - 1))
        action = data.draw(st.sampled_from(["delete", "replace", "insert"]))
        if action == "delete":
            del body[at:at + data.draw(st.integers(1, 20))]
        elif action == "replace":
            body[at] = data.draw(st.integers(0, 255))
        else:
            body[at:at] = data.draw(st.sampled_from([b"<", b">", b"&", b"<Grant>", b"</Grant>", b"xsi:", b'"',
                                                     b"<!DOCTYPE x>", b"&amp;", b"\xff"]))
    try:
        policy = acl.parse_policy_xml(bytes(body), resolve_email)
    except S3Error as exc:
        assert exc.status == 400
    else:
        assert isinstance(policy, Policy)


# -- rendering and round trips ----------------------------------------------------------------------------------------

# text an XML 1.0 document can carry, without the whitespace the parser trims
xml_text = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Cn", "Zs", "Zl", "Zp")), min_size=1, max_size=12)
ids = st.one_of(st.sampled_from(["owner-id", "alice-id", "bob-id", "65a011a29cdf8ec533ec3d1ccaae921c"]), xml_text)
emails = st.one_of(st.sampled_from(["alice@example.com", "x&y@<example>.com"]), xml_text)
names = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Cn")), max_size=12)


@st.composite
def policies(draw, with_emails: bool = True) -> tuple[Policy, dict[str, str]]:
    """A policy whose display names all come from one id -> name table (as resolve_id gives them), and the table."""
    table: dict[str, str] = {}

    def name_of(uid: str) -> str:
        return table.setdefault(uid, draw(names))

    owner = draw(ids)
    kinds = ["user", "group", "email"] if with_emails else ["user", "group"]
    grants = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(kinds))
        if kind == "user":
            uid = draw(ids)
            grantee = user(uid, name_of(uid))
        elif kind == "group":
            grantee = group(draw(st.sampled_from([ALL_USERS, AUTHENTICATED_USERS, LOG_DELIVERY])))
        else:
            grantee = Grantee.by_email(draw(emails))
        grants.append(Grant(grantee, draw(st.sampled_from(PERMISSIONS))))
    return Policy(owner, name_of(owner), tuple(grants)), table


@FAST
@given(policies())
def test_xml_round_trip(drawn):
    policy, table = drawn
    body = acl.render_policy_xml(policy)
    shown = acl.display_order(policy)  # rendered groups first, then users
    assert [g.grantee.kind == "Group" for g in shown.grants] == sorted(
        (g.grantee.kind == "Group" for g in policy.grants), reverse=True)
    assert sorted(shown.grants, key=repr) == sorted(policy.grants, key=repr)
    assert acl.parse_policy_xml(body, None, resolve_id=table.get) == shown
    # without a resolver the names (ignored in requests) are empty
    unnamed = acl.parse_policy_xml(body, None)
    assert unnamed.owner_name == "" and all(g.grantee.display_name == "" for g in unnamed.grants)
    assert acl.resolve(unnamed, None, table.get) == shown


@FAST
@given(policies())
def test_json_round_trip(drawn):
    policy, _ = drawn
    text = acl.dumps(policy)
    assert "\n" not in text and ": " not in text
    assert acl.loads(text) == policy
    assert acl.effective(text, "someone-else", "Else") == policy


@FAST
@given(policies(with_emails=False))
def test_rendered_xml_is_what_botocore_reads(drawn):
    policy, _ = drawn
    body = acl.render_policy_xml(policy)
    root = ET.fromstring(body)
    assert root.tag == f"{{{NS}}}AccessControlPolicy"
    for grantee in root.iter(f"{{{NS}}}Grantee"):
        assert grantee.get(f"{{{XSI}}}type") in ("CanonicalUser", "Group")
    operation = boto_client().meta.service_model.operation_model("GetBucketAcl")
    parsed = RestXMLParser().parse({"body": body, "headers": {}, "status_code": 200}, operation.output_shape)
    owner = {"ID": policy.owner_id, **({"DisplayName": policy.owner_name} if policy.owner_name else {})}
    assert parsed["Owner"] == owner
    expected = []
    for grant in acl.display_order(policy).grants:
        g = grant.grantee
        if g.kind == "Group":
            fields = {"Type": "Group", "URI": g.uri}
        else:
            fields = {"Type": "CanonicalUser", "ID": g.id, **({"DisplayName": g.display_name} if g.display_name else {})}
        expected.append({"Grantee": fields, "Permission": grant.permission})
    assert parsed.get("Grants", []) == expected


def test_render_layout():
    policy = Policy("owner-id", "O&<Owner>", (
        Grant(user("owner-id", "O&<Owner>"), "FULL_CONTROL"), Grant(user("nameless"), "READ"),
        Grant(group(ALL_USERS), "READ"), Grant(Grantee.by_email("a@b.c"), "WRITE")))
    body = acl.render_policy_xml(policy)
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<AccessControlPolicy xmlns="%s">' % NS.encode())
    assert b"<Owner><ID>owner-id</ID><DisplayName>O&amp;&lt;Owner&gt;</DisplayName></Owner>" in body
    assert (b'<Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="CanonicalUser">'
            b"<ID>nameless</ID></Grantee><Permission>READ</Permission>") in body  # no empty DisplayName
    assert b'xsi:type="Group"><URI>http://acs.amazonaws.com/groups/global/AllUsers</URI></Grantee>' in body
    assert b'xsi:type="AmazonCustomerByEmail"><EmailAddress>a@b.c</EmailAddress></Grantee>' in body
    assert acl.render_policy_xml(Policy("o", "", ())).endswith(
        b"<Owner><ID>o</ID></Owner><AccessControlList></AccessControlList></AccessControlPolicy>")


# -- the metadata form ------------------------------------------------------------------------------------------------

def test_json_is_compact():
    text = acl.dumps(acl.canned("public-read", "owner-id", "Owner"))
    assert text == ('{"v":1,"o":["owner-id","Owner"],"g":[["FULL_CONTROL","id","owner-id","Owner"],'
                    '["READ","uri","http://acs.amazonaws.com/groups/global/AllUsers"]]}')


@pytest.mark.parametrize("text", [
    "", " ", "null", "[]", "{}", '{"v":2,"o":["o",""],"g":[]}', '{"v":1,"o":["o",""]}',
    '{"v":1,"o":"ox","g":[]}', '{"v":1,"o":["",""],"g":[]}', '{"v":1,"o":["o",""],"g":[],"x":1}',
    '{"v":1,"o":["o",""],"g":{}}', '{"v":1,"o":["o",""],"g":[["READ","id"]]}',
    '{"v":1,"o":["o",""],"g":[["READ","id",""]]}', '{"v":1,"o":["o",""],"g":[["READ","arn","x"]]}',
    '{"v":1,"o":["o",""],"g":[["read","id","x"]]}', '{"v":1,"o":["o",""],"g":[["READ","id",3]]}',
    '{"v":1,"o":["o",""],"g":[["READ","id","x","n","extra"]]}', '{"v":1,"o":["o",null],"g":[]}',
])
def test_loads_refuses(text):
    with pytest.raises(ValueError):
        acl.loads(text)


def test_effective():
    assert acl.effective("", "owner-id", "Owner") == Policy("owner-id", "Owner", (owner_full(),))
    stored = acl.dumps(acl.canned("authenticated-read", "owner-id", "Owner"))
    assert acl.effective(stored, "owner-id", "Owner") == acl.canned("authenticated-read", "owner-id", "Owner")
    with pytest.raises(ValueError):
        acl.effective("garbage", "owner-id", "Owner")


# -- allows -----------------------------------------------------------------------------------------------------------

TABLE_POLICY = Policy("owner-id", "Owner", (
    Grant(group(ALL_USERS), "READ"),
    Grant(group(AUTHENTICATED_USERS), "WRITE"),
    Grant(group(LOG_DELIVERY), "WRITE_ACP"),
    Grant(user("alice-id"), "READ_ACP"),
    Grant(user("bob-id"), "FULL_CONTROL"),
    Grant(Grantee.by_email("carol@example.com"), "FULL_CONTROL"),  # unresolved: nobody
))

# who -> the permissions TABLE_POLICY gives them (the owner has no grant in it: its rights are the caller's)
ALLOWED = {
    None: {"READ"},
    "": {"READ"},
    "carol-id": {"READ", "WRITE"},
    "owner-id": {"READ", "WRITE"},
    "alice-id": {"READ", "WRITE", "READ_ACP"},
    "bob-id": set(PERMISSIONS),
    "ALICE-ID": {"READ", "WRITE"},
}


@pytest.mark.parametrize("who", list(ALLOWED))
@pytest.mark.parametrize("permission", PERMISSIONS)
def test_allows_truth_table(who, permission):
    assert acl.allows(TABLE_POLICY, who, permission) is (permission in ALLOWED[who])


@pytest.mark.parametrize("permission", PERMISSIONS)
def test_allows_per_grantee(permission):
    for granted in PERMISSIONS:
        implied = granted in (permission, "FULL_CONTROL")
        only = Policy("o", "", (Grant(user("u"), granted),))
        assert acl.allows(only, "u", permission) is implied
        assert not acl.allows(only, "v", permission)
        assert not acl.allows(only, None, permission)
        everyone = Policy("o", "", (Grant(group(ALL_USERS), granted),))
        assert acl.allows(everyone, None, permission) is implied
        assert acl.allows(everyone, "v", permission) is implied
        signed_in = Policy("o", "", (Grant(group(AUTHENTICATED_USERS), granted),))
        assert acl.allows(signed_in, "v", permission) is implied
        assert not acl.allows(signed_in, None, permission)
    assert not acl.allows(Policy("o", "", ()), "o", permission)  # not even the owner, from the ACL alone


def test_allows_unknown_permission():
    with pytest.raises(ValueError):
        acl.allows(TABLE_POLICY, "bob-id", "DELETE")


def test_model_validation():
    with pytest.raises(ValueError):
        Grantee("User", id="x")
    with pytest.raises(ValueError):
        Grant(user("x"), "READ_WRITE")
    assert Policy("o", "", [owner_full()]).grants == (owner_full(),)  # lists become tuples: hashable, comparable
