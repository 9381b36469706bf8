"""What every S3 operation receives: the request, its routing, its caller, and the node's services."""

from __future__ import annotations

from typing import TYPE_CHECKING
from collections import deque
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

import attrs

from ..http.server import Request
from ..meta.store import ACTIVE, AccessKey, Bucket, MetaStore, User
from .errors import S3Error

if TYPE_CHECKING:
    from ..auth.chunked import AwsChunkedDecoder
    from ..auth.sigv4 import Verified
    from ..config import Config, UserConfig
    from ..data.objects import DataStore
    from ..data.sse import MasterKeys


def config_user(u: UserConfig) -> User:
    """A user of the config file (``[[users]]``): one Active key pair, no policies (it is managed in the file)."""
    return User(u.id, u.display_name, u.email, (AccessKey(u.access_key, u.secret_key, ACTIVE),))


async def user_by_access_key(config: Config, meta: MetaStore, access_key: str) -> User | None:
    """Users of the config file first, then those of the metadata store (S3 and the admin listener alike): the
    user holding the key, whatever the key's status (``signing_key`` checks it)."""
    for u in config.users:
        if u.access_key == access_key:
            return config_user(u)
    if not access_key:
        return None
    return await meta.user_by_access_key(access_key)


async def signing_key(config: Config, meta: MetaStore, access_key: str) -> tuple[User, str] | None:
    """The user and the secret of an Active access key; None for a key that is unknown or Inactive (S3 says
    InvalidAccessKeyId to both, as AWS does)."""
    user = await user_by_access_key(config, meta, access_key)
    key = user.key(access_key) if user is not None else None
    if user is None or key is None or key.status != ACTIVE or not key.secret_key:
        return None
    return user, key.secret_key


@attrs.define
class Services:
    meta: MetaStore
    data: DataStore
    config: Config
    master_keys: MasterKeys | None = None  # SSE-S3's (None: SSE-S3 is refused)

    async def signing_key(self, access_key: str) -> tuple[User, str] | None:
        return await signing_key(self.config, self.meta, access_key)

    async def user_by_id(self, user_id: str) -> User | None:
        for u in self.config.users:
            if u.id == user_id:
                return config_user(u)
        return await self.meta.user_by_id(user_id)

    async def all_users(self) -> list[User]:
        """Every user, the config file's first (a config user hides a stored one of the same id)."""
        users = {u.id: config_user(u) for u in self.config.users}
        for u in await self.meta.list_users():
            users.setdefault(u.id, u)
        return sorted(users.values(), key=lambda u: u.id)


@attrs.define
class Ctx:
    request: Request
    request_id: str
    services: Services
    bucket: str | None = None
    key: str | None = None
    query: dict[str, str] = attrs.field(factory=dict)
    operation: str = ""
    user: User | None = None
    verified: Verified | None = None
    # how the request authenticated (the access log's auth=): anonymous, sigv4, sigv4-query (a presigned URL),
    # sigv2, sigv2-query, post-policy / post-policy-v2 / post-anonymous (a browser form)
    auth: str = "anonymous"
    vhost_bucket: str | None = None
    decoder: AwsChunkedDecoder | None = None  # aws-chunked body: decoded on the way in
    trailers: dict[str, str] = attrs.field(factory=dict)  # trailing headers of an aws-chunked body, once read
    action: str = ""  # the S3 action the operation is (s3:GetObject...): what policies are evaluated for
    buckets: dict[str, Bucket] = attrs.field(factory=dict)  # the buckets access.bucket_for read, by name
    policy_keys: dict[str, str | tuple[str, ...]] | None = None  # the request's condition keys, once built

    def body_receiver(self) -> Callable[[], Awaitable[bytes]]:
        """The request body's pieces, aws-chunked framing removed and verified when there is some."""
        decoder = self.decoder
        if decoder is None:
            return self.request.receive
        pending: deque[bytes] = deque()

        async def receive() -> bytes:
            from ..auth.sigv4 import AuthError

            while not pending:
                data = await self.request.receive()
                try:
                    if not data:
                        self.trailers.update(decoder.finish())
                        return b""
                    pending.extend(piece for piece in decoder.feed(data) if piece)
                except AuthError as exc:
                    raise S3Error(exc.code, exc.message, status=exc.status, **exc.extra) from None
            return pending.popleft()

        return receive

    async def read_body(self, limit: int) -> bytes:
        receive = self.body_receiver()
        out = bytearray()
        while piece := await receive():
            out += piece
            if len(out) > limit:
                raise S3Error("MaxMessageLengthExceeded", "Your request was too big.", status=400)
        return bytes(out)

    @property
    def meta(self) -> MetaStore:
        return self.services.meta

    @property
    def resource(self) -> str:
        if self.bucket is None:
            return "/"
        return f"/{self.bucket}" + (f"/{self.key}" if self.key is not None else "")

    def header(self, name: str) -> str | None:
        return self.request.header(name)

    async def bucket_for(self, permission: str | None, *, action: str | None = None) -> Bucket:
        """The request's bucket, if the caller may do ``action`` (the request's by default) with ``permission``
        ("OWNER": no ACL grants it; None: any caller, object permissions being checked on the object). See
        ``access.py``."""
        from .access import bucket_for

        return await bucket_for(self, permission, action=action)


def parse_query(raw: str) -> dict[str, str]:
    """Query parameters, form-decoded ('+' is a space, as S3 and MinIO read it). A name given twice is
    InvalidArgument: SigV4 signs the pairs sorted, so a reordered ``?versionId=a&versionId=b`` keeps its signature,
    and which value a handler took would be the attacker's choice."""
    out: dict[str, str] = {}
    for name, value in parse_qsl(raw, keep_blank_values=True, errors="strict"):
        if name in out:
            raise S3Error("InvalidArgument", f"The query parameter {name} may be given only once",
                          ArgumentName=name, ArgumentValue=value[:256])
        out[name] = value
    return out
