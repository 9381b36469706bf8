"""Server-side encryption as S3 speaks it: the request headers of SSE-S3 (``x-amz-server-side-encryption:
AES256``) and SSE-C (``x-amz-server-side-encryption-customer-*``, and ``x-amz-copy-source-…`` for a copy's
source), validated with S3's errors; a bucket's default encryption (Put/Get/DeleteBucketEncryption); the
envelope each encrypted object or upload keeps; and the headers S3 answers. The cryptography is
``trio_sos/data/sse.py``'s."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import AsyncIterator

import attrs

from ..data import sse as crypto
from ..http.server import Response
from ..meta import store as m
from .context import Ctx
from .errors import S3Error
from .xml import Tag, child_text, document, local, parse

CUSTOMER = "x-amz-server-side-encryption-customer-"
COPY_CUSTOMER = "x-amz-copy-source-server-side-encryption-customer-"
AES256 = "AES256"


@attrs.frozen
class Wanted:
    """What a write asks for: SSE-S3, or SSE-C with the customer's key."""

    mode: str
    customer_key: bytes = attrs.field(default=b"", repr=False)


def _argument(message: str, name: str, value: str = "") -> S3Error:
    return S3Error("InvalidArgument", message, ArgumentName=name, ArgumentValue=value[:64])


def customer_key(ctx: Ctx, prefix: str = CUSTOMER) -> bytes | None:
    """The SSE-C key the request gives (under ``prefix``), checked as S3 checks it; None if it gives none."""
    algorithm, key, md5 = (ctx.header(prefix + "algorithm"), ctx.header(prefix + "key"),
                           ctx.header(prefix + "key-md5"))
    if algorithm is None and key is None and md5 is None:
        return None
    if algorithm is None:
        raise _argument("Requests specifying Server Side Encryption with Customer provided keys must provide a "
                        "valid encryption algorithm.", prefix + "algorithm")
    if algorithm != AES256:
        raise S3Error("InvalidEncryptionAlgorithmError", "The Encryption request you specified is not valid. "
                                                         "Supported value: AES256.", ArgumentName=prefix + "algorithm",
                      ArgumentValue=algorithm[:64])
    if key is None:
        raise _argument("Requests specifying Server Side Encryption with Customer provided keys must provide an "
                        "appropriate secret key.", prefix + "key")
    try:
        raw = base64.b64decode(key.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise _argument("The secret key was invalid for the specified algorithm.", prefix + "key")
    if md5 is None:
        raise _argument("Requests specifying Server Side Encryption with Customer provided keys must provide the "
                        "client calculated MD5 of the secret key.", prefix + "key-MD5")
    if not hmac.compare_digest(md5.strip().encode(), crypto.b64(hashlib.md5(raw).digest()).encode()):
        raise _argument("The calculated MD5 hash of the key did not match the hash that was provided.",
                        prefix + "key-MD5")
    if ctx.request.scheme != "https" and not ctx.services.config.sse_c_over_http:
        raise S3Error("InvalidRequest", "Requests specifying Server Side Encryption with Customer provided keys "
                                        "must be made over a secure connection.")
    return raw


def default_of(bucket: m.Bucket) -> str | None:
    """The bucket's default encryption algorithm ("AES256"), or None."""
    return json.loads(bucket.encryption)["alg"] if bucket.encryption else None


def wanted(ctx: Ctx, bucket: m.Bucket) -> Wanted | None:
    """What a write (PutObject, CopyObject's destination, CreateMultipartUpload, PostObject) asks for: its own
    headers, else the bucket's default encryption, else nothing."""
    algorithm = ctx.header("x-amz-server-side-encryption")
    key = customer_key(ctx)
    if key is not None:
        if algorithm is not None:
            raise _argument("Server Side Encryption with Customer provided key is incompatible with the encryption "
                            "method specified", "x-amz-server-side-encryption", algorithm)
        return Wanted(crypto.SSE_C, key)
    kms = [n for n in ("x-amz-server-side-encryption-aws-kms-key-id", "x-amz-server-side-encryption-context",
                       "x-amz-server-side-encryption-bucket-key-enabled") if ctx.header(n) is not None]
    if algorithm is not None:
        if algorithm.startswith("aws:kms"):
            raise S3Error("NotImplemented", "SSE-KMS needs a key management service, which this server does not "
                                            "have: use AES256 (SSE-S3) or SSE-C")
        if algorithm != AES256:
            raise _argument("The encryption method specified is not supported", "x-amz-server-side-encryption",
                            algorithm)
        if any(n != "x-amz-server-side-encryption-bucket-key-enabled" for n in kms):
            raise _argument("Server Side Encryption with AWS KMS managed key requires HTTP header "
                            "x-amz-server-side-encryption : aws:kms", kms[0])
        return Wanted(crypto.SSE_S3)
    if kms:
        raise _argument("Server Side Encryption with AWS KMS managed key requires HTTP header "
                        "x-amz-server-side-encryption : aws:kms", kms[0])
    return Wanted(crypto.SSE_S3) if default_of(bucket) else None


def _master(ctx: Ctx) -> crypto.MasterKeys:
    keys = ctx.services.master_keys
    if keys is None:
        raise S3Error("NotImplemented", "SSE-S3 needs a master key on this node: setting sse_master_key_file "
                                        "(docs/encryption.md)")
    return keys


def seal(ctx: Ctx, want: Wanted | None, data_key: bytes | None = None
         ) -> tuple[crypto.Envelope | None, bytes | None]:
    """A new envelope and its data key (``data_key``: keep that one, for a copy that shares the source's bytes)."""
    if want is None:
        return None, None
    if want.mode == crypto.SSE_C:
        return crypto.seal_customer(want.customer_key, data_key)
    return _master(ctx).seal(data_key)


def open_envelope(ctx: Ctx, headers: tuple[tuple[str, str], ...], *, prefix: str = CUSTOMER
                  ) -> tuple[crypto.Envelope | None, bytes | None]:
    """The envelope of a stored object (or upload) and its data key, with the key the request gives under
    ``prefix`` — S3's errors for a missing, needless or wrong one."""
    envelope = crypto.envelope_of(headers)
    key = customer_key(ctx, prefix)
    if envelope is None:
        if key is not None:
            raise S3Error("InvalidRequest", "The encryption parameters are not applicable to this object.")
        return None, None
    if envelope.mode == crypto.SSE_C:
        if key is None:
            raise S3Error("InvalidRequest", "The object was stored using a form of Server Side Encryption. The "
                                            "correct parameters must be provided to retrieve the object.")
        try:
            return envelope, crypto.open_customer(envelope, key)
        except crypto.KeyMismatch:
            raise S3Error("AccessDenied", "The SSE-C key given is not the one the object was stored with") from None
    if key is not None:
        raise S3Error("InvalidRequest", "The encryption parameters are not applicable to this object.")
    try:
        return envelope, _master(ctx).open(envelope)
    except crypto.KeyMismatch as exc:
        raise S3Error("ServiceUnavailable", f"the object's master key is not configured on this node ({exc})"
                      ) from None


def same_key(source: crypto.Envelope | None, want: Wanted | None) -> bool:
    """Whether a copy may keep the source's data key (and share its stored bytes): both unencrypted, both SSE-S3,
    or both SSE-C with one customer key."""
    if source is None or want is None:
        return source is None and want is None
    if source.mode != want.mode:
        return False
    return want.mode == crypto.SSE_S3 or hmac.compare_digest(
        crypto.customer_mac(source.salt, want.customer_key), source.mac)


def response_headers(envelope: crypto.Envelope | None) -> list[tuple[str, str]]:
    if envelope is None:
        return []
    if envelope.mode == crypto.SSE_S3:
        return [("x-amz-server-side-encryption", AES256)]
    return [("x-amz-server-side-encryption-customer-algorithm", AES256),
            ("x-amz-server-side-encryption-customer-key-MD5", envelope.customer_md5)]


def etag(envelope: crypto.Envelope | None, data_key: bytes | None, md5: bytes) -> str:
    """The ETag of a body (or a part) written: its MD5 — but for SSE-C, which must not tell the plaintext's."""
    if envelope is not None and envelope.mode == crypto.SSE_C and data_key is not None:
        return crypto.etag(data_key, md5)
    return md5.hex()


def encryptor(data_key: bytes | None) -> crypto.Encryptor | None:
    return crypto.Encryptor(data_key) if data_key is not None else None


def plaintext(ctx: Ctx, obj: m.ObjectVersion, data_key: bytes | None, start: int, end: int
              ) -> AsyncIterator[bytes]:
    """The object's bytes [start, end) as the client wrote them: decrypted, segment by segment, if they are
    encrypted; else as stored."""
    data = ctx.services.data
    if data_key is None:
        return data.read(obj.manifest, start, end, obj.inline)

    def pieces(stored_start: int, stored_end: int) -> AsyncIterator[bytes]:
        return data.read(obj.manifest, stored_start, stored_end, obj.inline)

    return crypto.decrypted(pieces, data_key, obj.parts or (obj.size,), start, end)


# -- default bucket encryption --

async def put_bucket_encryption(ctx: Ctx) -> Response:
    from .buckets import read_document

    bucket = await ctx.bucket_for("OWNER")
    body = await read_document(ctx)
    root = parse(body)
    if local(root.tag) != "ServerSideEncryptionConfiguration":
        raise S3Error("MalformedXML")
    rules = [r for r in root if local(r.tag) == "Rule"]
    if len(rules) != 1:
        raise S3Error("MalformedXML", "ServerSideEncryptionConfiguration takes exactly one Rule")
    default = [d for d in rules[0] if local(d.tag) == "ApplyServerSideEncryptionByDefault"]
    if len(default) != 1:
        raise S3Error("MalformedXML", "The Rule needs one ApplyServerSideEncryptionByDefault")
    algorithm = child_text(default[0], "SSEAlgorithm")
    if algorithm is not None and algorithm.startswith("aws:kms"):
        raise S3Error("NotImplemented", "SSE-KMS needs a key management service, which this server does not have: "
                                        "use AES256 (SSE-S3)")
    if algorithm != AES256:
        raise S3Error("MalformedXML", "SSEAlgorithm must be AES256")
    if child_text(default[0], "KMSMasterKeyID") is not None:
        raise _argument("KMSMasterKeyID is not applicable if the default sse algorithm is not aws:kms or "
                        "aws:kms:dsse", "ApplyServerSideEncryptionByDefault")
    _master(ctx)  # a default this node could not apply is refused now, not at the first write
    bucket_key = (child_text(rules[0], "BucketKeyEnabled") or "false").strip().lower() == "true"
    await ctx.meta.update_bucket(attrs.evolve(bucket, encryption=json.dumps({"alg": AES256,
                                                                            "bucket_key": bucket_key})))
    return Response(200, [], b"")


async def get_bucket_encryption(ctx: Ctx) -> Response:
    bucket = await ctx.bucket_for("OWNER")
    if not bucket.encryption:
        raise S3Error("ServerSideEncryptionConfigurationNotFoundError",
                      "The server side encryption configuration was not found", BucketName=bucket.name)
    config = json.loads(bucket.encryption)
    body = document(Tag("ServerSideEncryptionConfiguration", Tag(
        "Rule", Tag("ApplyServerSideEncryptionByDefault", Tag("SSEAlgorithm", config["alg"])),
        Tag("BucketKeyEnabled", bool(config.get("bucket_key"))))))
    return Response(200, [("Content-Type", "application/xml")], body)


async def delete_bucket_encryption(ctx: Ctx) -> Response:
    bucket = await ctx.bucket_for("OWNER")
    if bucket.encryption:
        await ctx.meta.update_bucket(attrs.evolve(bucket, encryption=""))
    return Response(204, [], b"")
