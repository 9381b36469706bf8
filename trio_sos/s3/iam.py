"""The IAM API subset on the S3 endpoint: users, their access keys and their inline policies, administered with
the standard tools (``aws iam --endpoint-url``, boto3's IAM client, Terraform-style clients).

IAM's Query protocol: ``POST /`` with a form-encoded body (``Action=CreateUser&Version=2010-05-08&UserName=...``),
signed with SigV4 for the service ``iam`` (any region: IAM clients sign for us-east-1); answers in IAM's XML and
IAM's error codes. Who may call it: the administrators (setting ``admin_users``) and the users whose own policies
allow the ``iam:`` action on the user it names (``arn:aws:iam::000000000000:user/NAME``). Users of the config
file (``[[users]]``) are listed and readable, but changed only in the file (UnmodifiableEntity).

The model is the store's (``meta.store.User``): a user owns its buckets; it has at most ``MAX_KEYS`` key pairs
through this API, each Active or Inactive; its inline policies limit it (``access.restricted``).
"""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime
from urllib.parse import parse_qsl, quote

from ..auth import sigv4
from ..http.server import ClientDisconnected, Response
from ..meta import store as m
from . import access, params, policy
from .context import Ctx
from .errors import S3Error
from .xml import Tag, document

log = logging.getLogger("trio_sos.s3.iam")

NS = "https://iam.amazonaws.com/doc/2010-05-08/"
SERVICE = "iam"
MAX_BODY = 256 * 1024  # a form with the largest policy document, percent-encoded, fits
MAX_KEYS = 2  # access keys per user (IAM's quota)
MAX_POLICY_SIZE = 10_240  # a user's inline policies together, whitespace aside (IAM's quota is 2,048)
_NAME = re.compile(r"[\w+=,.@-]+", re.ASCII)

STATUS = {
    "AccessDenied": 403, "DeleteConflict": 409, "EntityAlreadyExists": 409, "IncompleteSignature": 400,
    "InvalidAction": 400, "InvalidClientTokenId": 403, "InvalidInput": 400, "LimitExceeded": 409,
    "MalformedPolicyDocument": 400, "MissingAction": 400, "MissingAuthenticationToken": 403, "NoSuchEntity": 404,
    "ServiceFailure": 500, "ServiceUnavailable": 503, "SignatureDoesNotMatch": 403, "UnmodifiableEntity": 400,
    "ValidationError": 400, "RequestEntityTooLarge": 413,
}


class IamError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message

    @property
    def status(self) -> int:
        return STATUS[self.code]


def error_response(exc: IamError, request_id: str) -> Response:
    body = document(Tag("ErrorResponse", Tag("Error", Tag("Type", "Sender" if exc.status < 500 else "Receiver"),
                                             Tag("Code", exc.code), Tag("Message", exc.message)),
                        Tag("RequestId", request_id), attrs=f' xmlns="{NS}"'))
    return Response(exc.status, [("Content-Type", "text/xml")], body)


def _answer(ctx: Ctx, action: str, *result: Tag | None) -> Response:
    children: list[Tag] = [Tag(f"{action}Result", *result)] if result else []
    body = document(Tag(f"{action}Response", *children,
                        Tag("ResponseMetadata", Tag("RequestId", ctx.request_id)), attrs=f' xmlns="{NS}"'))
    return Response(200, [("Content-Type", "text/xml")], body)


def user_arn(name: str) -> str:
    return f"arn:aws:iam::{access.ACCOUNT}:user/{name}"


def _date(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the request --


async def handle(ctx: Ctx) -> Response:
    """One IAM request: its own errors are IAM's, never S3's."""
    try:
        return await _handle(ctx)
    except IamError as exc:
        return error_response(exc, ctx.request_id)
    except S3Error as exc:  # from the shared parts (reading the body...)
        code = "RequestEntityTooLarge" if exc.code == "MaxMessageLengthExceeded" else "InvalidInput"
        return error_response(IamError(code, exc.message), ctx.request_id)
    except m.MetaUnavailable as exc:
        log.warning("request %s %s: %s", ctx.request_id, ctx.operation, exc)
        return error_response(IamError("ServiceUnavailable", "The metadata store is unavailable; please retry."),
                              ctx.request_id)
    except ClientDisconnected:
        raise
    except Exception:
        log.exception("request %s %s failed with an internal error", ctx.request_id, ctx.operation)
        return error_response(IamError("ServiceFailure", "Internal error (the node's log has the details)."),
                              ctx.request_id)


async def _handle(ctx: Ctx) -> Response:
    body = await ctx.read_body(MAX_BODY)
    form = _form(ctx, body)
    action = form.get("Action", "")
    ctx.operation = f"IAM:{action}" if action in ACTIONS else "IAM"
    await _authenticate(ctx, body)
    if not action:
        raise IamError("MissingAction", "Missing Action")
    handler = ACTIONS.get(action)
    if handler is None:
        raise IamError("InvalidAction", f"The action {action[:64]} is not valid for this web service.")
    if form.get("Version", "2010-05-08") != "2010-05-08":
        raise IamError("InvalidAction", f"Could not find operation {action} for version {form['Version'][:32]}")
    return await handler(ctx, form)


def _form(ctx: Ctx, body: bytes) -> dict[str, str]:
    """The request's parameters: the form body's, and the query's (both signed)."""
    content_type = (ctx.header("content-type") or "").split(";")[0].strip().lower()
    if body and content_type not in ("application/x-www-form-urlencoded", ""):
        raise IamError("InvalidInput", "The request body must be application/x-www-form-urlencoded")
    try:
        pairs = parse_qsl(ctx.request.query, keep_blank_values=True) + parse_qsl(
            body.decode("utf-8", "strict"), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise IamError("InvalidInput", "The request's parameters are not valid UTF-8") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form and form[name] != value:
            raise IamError("InvalidInput", f"Parameter {name[:64]} given twice")
        form[name] = value
    return form


_AUTH_CODES = {"InvalidAccessKeyId": "InvalidClientTokenId", "SignatureDoesNotMatch": "SignatureDoesNotMatch",
               "RequestTimeTooSkewed": "SignatureDoesNotMatch", "AccessDenied": "IncompleteSignature",
               "XAmzContentSHA256Mismatch": "SignatureDoesNotMatch"}


async def _authenticate(ctx: Ctx, body: bytes) -> None:
    request = ctx.request
    auth = request.header("authorization")
    if auth is None:
        raise IamError("MissingAuthenticationToken", "Request is missing Authentication Token")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        raise IamError("IncompleteSignature", "Only AWS4-HMAC-SHA256 signatures are accepted")
    try:
        parsed = sigv4.parse_authorization(auth)
        found = await ctx.services.signing_key(parsed.access_key)
        if found is None:
            raise IamError("InvalidClientTokenId", "The security token included in the request is invalid.")
        user, secret = found
        ctx.verified = sigv4.verify_header_auth(request.method, request.target, request.headers, parsed, secret,
                                                now=datetime.now(UTC), key_cache=_KEYS, service=SERVICE,
                                                payload=body)
    except sigv4.AuthError as exc:
        if exc.code == "RequestTimeTooSkewed":
            raise IamError("SignatureDoesNotMatch", "Signature expired: the request time is too far from the "
                                                    "server's time.") from None
        raise IamError(_AUTH_CODES.get(exc.code, "IncompleteSignature"), exc.message) from None
    ctx.user, ctx.auth = user, "sigv4"


_KEYS = sigv4.SigningKeyCache(256)


def _authorize(ctx: Ctx, action: str, target: str | None) -> None:
    """Administrators may do everything here; other users what their own policies allow (an explicit Deny
    wins) on the user the request names (``target``; None: every user, for ListUsers)."""
    assert ctx.user is not None
    if ctx.user.id in ctx.services.config.admin_users:
        return
    resource = user_arn(target) if target is not None else user_arn("")
    if access.identity_verdict(ctx, f"iam:{action}", resource) != "Allow":
        raise IamError("AccessDenied", f"User: {user_arn(ctx.user.id)} is not authorized to perform: "
                                       f"iam:{action} on resource: {resource}")


# -- parameters --


def _name(form: dict[str, str], param: str, *, max_len: int = 64, default: str | None = None) -> str:
    value = form.get(param, default)
    if value is None:
        raise IamError("ValidationError", f"1 validation error detected: Value null at '{_camel(param)}' failed to "
                                          "satisfy constraint: Member must not be null")
    if not 1 <= len(value) <= max_len or not _NAME.fullmatch(value):
        raise IamError("ValidationError", f"1 validation error detected: Value '{value[:128]}' at "
                                          f"'{_camel(param)}' failed to satisfy constraint: Member must satisfy "
                                          f"regular expression pattern: [\\w+=,.@-]+ and have length between 1 and "
                                          f"{max_len}")
    return value


def _camel(param: str) -> str:
    return param[0].lower() + param[1:]


def _target(ctx: Ctx, form: dict[str, str]) -> str:
    """UserName, by default the caller (as IAM does for the key operations and GetUser)."""
    assert ctx.user is not None
    return _name(form, "UserName", default=ctx.user.id)


def _no_extras(form: dict[str, str], *names: str) -> None:
    """Parameters this store does not act on are refused rather than ignored (what is signed is what is done)."""
    for name in names:
        if form.get(name) not in (None, "", "/"):
            raise IamError("InvalidInput", f"{name} is not supported by this server")
    for name in form:
        if name.startswith(("Tags.", "PermissionsBoundary")):
            raise IamError("InvalidInput", f"{name.split('.', 1)[0]} is not supported by this server")


def _page(form: dict[str, str]) -> tuple[str, int]:
    marker = form.get("Marker", "")
    raw = form.get("MaxItems", "100")
    count = params.uint(raw, 4)
    if count is None or not 1 <= count <= 1000:
        raise IamError("ValidationError", f"1 validation error detected: Value '{raw[:16]}' at 'maxItems' failed "
                                          "to satisfy constraint: Member must have value between 1 and 1000")
    return marker, count


async def _user(ctx: Ctx, name: str) -> m.User:
    user = await ctx.services.user_by_id(name)
    if user is None:
        raise IamError("NoSuchEntity", f"The user with name {name} cannot be found.")
    return user


def _stored(ctx: Ctx, name: str) -> None:
    """A change to a user: not to one of the config file's."""
    if any(u.id == name for u in ctx.services.config.users):
        raise IamError("UnmodifiableEntity", f"The user {name} is defined in the node's configuration file "
                                             "([[users]]): change it there.")


def _user_tag(user: m.User) -> Tag:
    return Tag("User", Tag("Path", "/"), Tag("UserName", user.id), Tag("UserId", user.id),
               Tag("Arn", user_arn(user.id)), Tag("CreateDate", _date(user.created)))


# -- the actions --


async def create_user(ctx: Ctx, form: dict[str, str]) -> Response:
    name = _name(form, "UserName")
    _no_extras(form, "Path")
    _authorize(ctx, "CreateUser", name)
    if await ctx.services.user_by_id(name) is not None:
        raise IamError("EntityAlreadyExists", f"User with name {name} already exists.")
    user = m.User(name, name, created=time.time())
    try:
        await ctx.meta.create_user(user)
    except m.UserExists:
        raise IamError("EntityAlreadyExists", f"User with name {name} already exists.") from None
    return _answer(ctx, "CreateUser", _user_tag(user))


async def get_user(ctx: Ctx, form: dict[str, str]) -> Response:
    name = _target(ctx, form)
    _authorize(ctx, "GetUser", name)
    return _answer(ctx, "GetUser", _user_tag(await _user(ctx, name)))


async def list_users(ctx: Ctx, form: dict[str, str]) -> Response:
    _authorize(ctx, "ListUsers", None)
    prefix = form.get("PathPrefix", "/")
    if not prefix.startswith("/"):
        raise IamError("ValidationError", "PathPrefix must begin with /")
    marker, limit = _page(form)
    users = [u for u in await ctx.services.all_users() if u.id > marker] if prefix == "/" else []
    page = users[:limit]
    truncated = len(users) > limit
    return _answer(ctx, "ListUsers", Tag("Users", [Tag("member", _user_tag(u).children) for u in page]),
                   Tag("IsTruncated", truncated), Tag("Marker", page[-1].id) if truncated else None)


async def delete_user(ctx: Ctx, form: dict[str, str]) -> Response:
    name = _name(form, "UserName")
    _authorize(ctx, "DeleteUser", name)
    _stored(ctx, name)
    user = await _user(ctx, name)
    if user.keys:
        raise IamError("DeleteConflict", "Cannot delete entity, must delete access keys first.")
    if user.policies:
        raise IamError("DeleteConflict", "Cannot delete entity, must delete policies first.")
    if await ctx.meta.list_buckets(name):
        # a user created again under this name would own them: they go first, or to another owner
        raise IamError("DeleteConflict", "Cannot delete entity, must delete the buckets it owns first.")
    if not await ctx.meta.delete_user(name):
        raise IamError("NoSuchEntity", f"The user with name {name} cannot be found.")
    return _answer(ctx, "DeleteUser")


async def create_access_key(ctx: Ctx, form: dict[str, str]) -> Response:
    from ..node import new_access_key, new_secret_key

    name = _target(ctx, form)
    _authorize(ctx, "CreateAccessKey", name)
    _stored(ctx, name)
    user = await _user(ctx, name)
    if len(user.keys) >= MAX_KEYS:
        raise IamError("LimitExceeded", f"Cannot exceed quota for AccessKeysPerUser: {MAX_KEYS}")
    key = m.AccessKey("AKIA" + new_access_key()[4:], new_secret_key(), m.ACTIVE, time.time())
    if any(u.access_key == key.access_key for u in ctx.services.config.users) or \
            not await ctx.meta.add_access_key(name, key):
        raise IamError("NoSuchEntity", f"The user with name {name} cannot be found.")
    return _answer(ctx, "CreateAccessKey", Tag(
        "AccessKey", Tag("UserName", name), Tag("AccessKeyId", key.access_key), Tag("Status", key.status),
        Tag("SecretAccessKey", key.secret_key), Tag("CreateDate", _date(key.created))))


async def list_access_keys(ctx: Ctx, form: dict[str, str]) -> Response:
    name = _target(ctx, form)
    _authorize(ctx, "ListAccessKeys", name)
    marker, limit = _page(form)
    keys = [k for k in (await _user(ctx, name)).keys if k.access_key > marker]
    page, truncated = keys[:limit], len(keys) > limit
    return _answer(ctx, "ListAccessKeys", Tag("UserName", name), Tag("AccessKeyMetadata", [Tag(
        "member", Tag("UserName", name), Tag("AccessKeyId", k.access_key), Tag("Status", k.status),
        Tag("CreateDate", _date(k.created))) for k in page]), Tag("IsTruncated", truncated),
        Tag("Marker", page[-1].access_key) if truncated else None)


def _key_id(form: dict[str, str]) -> str:
    key_id = form.get("AccessKeyId")
    if not key_id or not 16 <= len(key_id) <= 128 or not key_id.isalnum():
        raise IamError("ValidationError", f"1 validation error detected: Value '{(key_id or '')[:128]}' at "
                                          "'accessKeyId' failed to satisfy constraint: Member must satisfy "
                                          "regular expression pattern: [\\w]+ and have length between 16 and 128")
    return key_id


async def update_access_key(ctx: Ctx, form: dict[str, str]) -> Response:
    name = _target(ctx, form)
    key_id = _key_id(form)
    status = form.get("Status", "")
    if status not in (m.ACTIVE, m.INACTIVE):
        raise IamError("ValidationError", f"1 validation error detected: Value '{status[:32]}' at 'status' failed "
                                          "to satisfy constraint: Member must satisfy enum value set: "
                                          "[Active, Inactive]")
    _authorize(ctx, "UpdateAccessKey", name)
    _stored(ctx, name)
    await _user(ctx, name)
    if not await ctx.meta.set_access_key_status(name, key_id, status):
        raise IamError("NoSuchEntity", f"The Access Key with id {key_id} cannot be found.")
    return _answer(ctx, "UpdateAccessKey")


async def delete_access_key(ctx: Ctx, form: dict[str, str]) -> Response:
    name = _target(ctx, form)
    key_id = _key_id(form)
    _authorize(ctx, "DeleteAccessKey", name)
    _stored(ctx, name)
    await _user(ctx, name)
    if not await ctx.meta.delete_access_key(name, key_id):
        raise IamError("NoSuchEntity", f"The Access Key with id {key_id} cannot be found.")
    return _answer(ctx, "DeleteAccessKey")


def _size(text: str) -> int:
    return len(re.sub(r"\s", "", text))


async def put_user_policy(ctx: Ctx, form: dict[str, str]) -> Response:
    name = _name(form, "UserName")
    policy_name = _name(form, "PolicyName", max_len=128)
    document_text = form.get("PolicyDocument")
    if not document_text:
        raise IamError("ValidationError", "1 validation error detected: Value null at 'policyDocument' failed to "
                                          "satisfy constraint: Member must not be null")
    _authorize(ctx, "PutUserPolicy", name)
    _stored(ctx, name)
    user = await _user(ctx, name)
    try:
        policy.parse_user_policy(document_text)
    except policy.PolicyError as exc:
        raise IamError("MalformedPolicyDocument", str(exc)) from None
    total = _size(document_text) + sum(_size(d) for n, d in user.policies if n != policy_name)
    if total > MAX_POLICY_SIZE:
        raise IamError("LimitExceeded", f"Maximum policy size of {MAX_POLICY_SIZE} bytes exceeded for user {name}")
    if not await ctx.meta.put_user_policy(name, policy_name, document_text):
        raise IamError("NoSuchEntity", f"The user with name {name} cannot be found.")
    return _answer(ctx, "PutUserPolicy")


async def get_user_policy(ctx: Ctx, form: dict[str, str]) -> Response:
    name = _name(form, "UserName")
    policy_name = _name(form, "PolicyName", max_len=128)
    _authorize(ctx, "GetUserPolicy", name)
    text = (await _user(ctx, name)).policy(policy_name)
    if text is None:
        raise IamError("NoSuchEntity", f"The user policy with name {policy_name} cannot be found.")
    # IAM returns the document URL-encoded (RFC 3986); SDKs decode it
    return _answer(ctx, "GetUserPolicy", Tag("UserName", name), Tag("PolicyName", policy_name),
                   Tag("PolicyDocument", quote(text, safe="-_.~")))


async def list_user_policies(ctx: Ctx, form: dict[str, str]) -> Response:
    name = _name(form, "UserName")
    _authorize(ctx, "ListUserPolicies", name)
    marker, limit = _page(form)
    names = [n for n, _ in (await _user(ctx, name)).policies if n > marker]
    page, truncated = names[:limit], len(names) > limit
    return _answer(ctx, "ListUserPolicies", Tag("PolicyNames", [Tag("member", n) for n in page]),
                   Tag("IsTruncated", truncated), Tag("Marker", page[-1]) if truncated else None)


async def delete_user_policy(ctx: Ctx, form: dict[str, str]) -> Response:
    name = _name(form, "UserName")
    policy_name = _name(form, "PolicyName", max_len=128)
    _authorize(ctx, "DeleteUserPolicy", name)
    _stored(ctx, name)
    await _user(ctx, name)
    if not await ctx.meta.delete_user_policy(name, policy_name):
        raise IamError("NoSuchEntity", f"The user policy with name {policy_name} cannot be found.")
    return _answer(ctx, "DeleteUserPolicy")


ACTIONS = {
    "CreateUser": create_user, "GetUser": get_user, "ListUsers": list_users, "DeleteUser": delete_user,
    "CreateAccessKey": create_access_key, "ListAccessKeys": list_access_keys,
    "UpdateAccessKey": update_access_key, "DeleteAccessKey": delete_access_key,
    "PutUserPolicy": put_user_policy, "GetUserPolicy": get_user_policy, "ListUserPolicies": list_user_policies,
    "DeleteUserPolicy": delete_user_policy,
}

