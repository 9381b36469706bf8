"""Server-side encryption of object data: what the node does before any byte reaches an agent, and after it
comes back. Pure functions and small classes over ``cryptography``'s AES-GCM; no request objects.

Every encrypted object (or multipart upload) has a random 256-bit **data key**. Its body is cut into segments of
``SEGMENT`` plaintext bytes, each stored as ``nonce (12) ‖ AES-256-GCM ciphertext ‖ tag (16)`` with a random
nonce and the segment's index within its part as associated data — so each segment is decrypted on its own (a
range read decrypts only the segments it touches), a segment moved, cut or altered fails its tag, and parts
uploaded again under the same data key never reuse a nonce. A multipart object's parts are encrypted one by one,
each from index 0; their plaintext sizes (``ObjectVersion.parts``) say where each starts in the stored bytes.

The data key is kept only **wrapped** (AES-256-GCM again) in the object's envelope, in the metadata: by the
node's master key for SSE-S3 (``MasterKeys``: the current key wraps, every listed key unwraps — rotation), by the
customer's own key for SSE-C, of which the envelope also keeps a salted HMAC (to tell a wrong key from a damaged
envelope) and the MD5 clients are answered with — never the key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SEGMENT = 64 * 1024  # plaintext bytes per segment
NONCE = 12
TAG = 16
OVERHEAD = NONCE + TAG  # stored bytes per segment beyond its plaintext
STORED_SEGMENT = SEGMENT + OVERHEAD
SSE_S3, SSE_C = "SSE-S3", "SSE-C"
ENVELOPE = "x-trio-sos-sse"  # the envelope's name among an object's stored header pairs (never answered)
_WRAP_AAD = b"trio-sos data key v1 "


class KeyMismatch(Exception):
    """The key given cannot open this envelope (a wrong SSE-C key, or a master key no longer configured)."""


class DataCorrupt(Exception):
    """Stored bytes that do not decrypt: a segment altered, cut or moved."""


def stored_size(size: int) -> int:
    """How many bytes ``size`` bytes of plaintext take encrypted."""
    return size + OVERHEAD * -(-size // SEGMENT)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@attrs.frozen
class Envelope:
    mode: str  # SSE_S3 or SSE_C
    wrapped: bytes = attrs.field(repr=False)  # nonce ‖ the data key encrypted ‖ tag
    key_id: str = ""  # SSE-S3: the master key that wrapped it
    customer_md5: str = ""  # SSE-C: base64 MD5 of the customer's key, as clients send and are answered
    salt: bytes = b""  # SSE-C: the HMAC's salt
    mac: bytes = attrs.field(default=b"", repr=False)  # SSE-C: HMAC-SHA256(salt, customer key)

    def dumps(self) -> str:
        out = {"v": 1, "mode": self.mode, "dk": b64(self.wrapped)}
        if self.mode == SSE_S3:
            out["kid"] = self.key_id
        else:
            out.update(md5=self.customer_md5, salt=b64(self.salt), mac=b64(self.mac))
        return json.dumps(out, separators=(",", ":"))

    @classmethod
    def loads(cls, text: str) -> Envelope:
        raw = json.loads(text)
        if raw.get("v") != 1 or raw.get("mode") not in (SSE_S3, SSE_C):
            raise ValueError("unknown encryption envelope")
        return cls(raw["mode"], base64.b64decode(raw["dk"]), raw.get("kid", ""), raw.get("md5", ""),
                   base64.b64decode(raw.get("salt", "")), base64.b64decode(raw.get("mac", "")))


def envelope_of(headers: Sequence[tuple[str, str]]) -> Envelope | None:
    for name, value in headers:
        if name == ENVELOPE:
            return Envelope.loads(value)
    return None


def without_envelope(headers: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple((n, v) for n, v in headers if n != ENVELOPE)


def with_envelope(headers: Sequence[tuple[str, str]], envelope: Envelope | None) -> tuple[tuple[str, str], ...]:
    kept = without_envelope(headers)
    return kept + ((ENVELOPE, envelope.dumps()),) if envelope is not None else kept


def _wrap(kek: bytes, data_key: bytes, mode: str) -> bytes:
    nonce = os.urandom(NONCE)
    return nonce + AESGCM(kek).encrypt(nonce, data_key, _WRAP_AAD + mode.encode())


def _unwrap(kek: bytes, wrapped: bytes, mode: str) -> bytes:
    try:
        return AESGCM(kek).decrypt(wrapped[:NONCE], wrapped[NONCE:], _WRAP_AAD + mode.encode())
    except (InvalidTag, ValueError):
        raise KeyMismatch("the data key does not open with this key") from None


def customer_mac(salt: bytes, customer_key: bytes) -> bytes:
    return hmac.new(salt, customer_key, "sha256").digest()


def seal_customer(customer_key: bytes, data_key: bytes | None = None) -> tuple[Envelope, bytes]:
    """A new SSE-C envelope (and its data key: ``data_key``, or a new random one)."""
    data_key = data_key or os.urandom(32)
    salt = os.urandom(16)
    return Envelope(SSE_C, _wrap(customer_key, data_key, SSE_C), "", b64(hashlib.md5(customer_key).digest()), salt,
                    customer_mac(salt, customer_key)), data_key


def open_customer(envelope: Envelope, customer_key: bytes) -> bytes:
    """The data key, or KeyMismatch for a key that is not the one the object was written with."""
    if not hmac.compare_digest(customer_mac(envelope.salt, customer_key), envelope.mac):
        raise KeyMismatch("not the object's customer key")
    return _unwrap(customer_key, envelope.wrapped, SSE_C)


@attrs.frozen
class MasterKeys:
    """The node's SSE-S3 master keys: the first wraps new data keys, all of them unwrap (rotation: put a new key
    first and keep the old ones listed while objects wrapped by them remain)."""

    keys: tuple[tuple[str, bytes], ...] = attrs.field(repr=False)  # (id, 32 bytes), current first

    @classmethod
    def parse(cls, text: str, source: str = "the master key file") -> MasterKeys:
        keys = []
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key_id, _, material = line.partition(" ")
            try:
                key = base64.b64decode(material.strip(), validate=True)
            except ValueError:
                key = b""
            if not key_id or len(key) != 32:
                raise ValueError(f"{source}, line {n}: expected 'ID BASE64' with a 32-byte key")
            keys.append((key_id, key))
        if not keys:
            raise ValueError(f"{source}: no key")
        if len({k for k, _ in keys}) != len(keys):
            raise ValueError(f"{source}: a key id appears twice")
        return cls(tuple(keys))

    @classmethod
    def load(cls, path: Path) -> MasterKeys:
        return cls.parse(path.read_text(), str(path))

    @classmethod
    def create(cls, path: Path) -> MasterKeys:
        """The file at ``path`` if it exists, else a new one with one random key — written whole, then linked
        into place, so processes starting together agree on one key and none reads a half-written file."""
        if path.exists():
            return cls.load(path)
        text = f"# trio_sos SSE-S3 master keys: 'ID BASE64', the first wraps new data keys\n" \
               f"k{os.urandom(4).hex()} {b64(os.urandom(32))}\n"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except FileExistsError:
            pass  # another process made it first: use its key
        finally:
            os.unlink(tmp)
        return cls.load(path)

    def seal(self, data_key: bytes | None = None) -> tuple[Envelope, bytes]:
        data_key = data_key or os.urandom(32)
        key_id, key = self.keys[0]
        return Envelope(SSE_S3, _wrap(key, data_key, SSE_S3), key_id), data_key

    def open(self, envelope: Envelope) -> bytes:
        for key_id, key in self.keys:
            if key_id == envelope.key_id:
                return _unwrap(key, envelope.wrapped, SSE_S3)
        raise KeyMismatch(f"master key {envelope.key_id!r} is not configured")


def etag(data_key: bytes, md5: bytes) -> str:
    """An SSE-C object's (or part's) ETag: not the plaintext's MD5, which would tell about the plaintext, but a
    digest keyed by the object's data key."""
    return hashlib.md5(data_key + md5).hexdigest()


class Encryptor:
    """Plaintext pieces in, stored (encrypted) bytes out, segment by segment, for one part (or a whole object)."""

    def __init__(self, data_key: bytes) -> None:
        self._aead = AESGCM(data_key)
        self._buf = bytearray()
        self._index = 0

    def _segment(self, plain: bytes | bytearray | memoryview) -> tuple[bytes, bytes]:
        """One segment as it is stored: (nonce, ciphertext ‖ tag), joined by the caller with its neighbours."""
        nonce = os.urandom(NONCE)
        sealed = self._aead.encrypt(nonce, plain, self._index.to_bytes(8, "big"))
        self._index += 1
        return nonce, sealed

    def feed(self, data: bytes | memoryview) -> bytes:
        """The stored bytes of every segment ``data`` completes; what is left of a segment waits for more.

        Cheap enough to run on the event loop (AES-GCM with AES-NI: about 0.35 ms per MiB here), and the binding
        holds the GIL while it encrypts, so a worker thread would add its hop and nothing else. Whole segments
        are encrypted straight from ``data``; only a segment's start or end is buffered."""
        view = memoryview(data).cast("B")
        parts: list[bytes] = []
        if self._buf:
            take = SEGMENT - len(self._buf)
            self._buf += view[:take]
            view = view[take:]
            if len(self._buf) < SEGMENT:
                return b""
            parts += self._segment(self._buf)
            self._buf = bytearray()
        whole = len(view) - len(view) % SEGMENT
        for i in range(0, whole, SEGMENT):
            parts += self._segment(view[i:i + SEGMENT])
        self._buf += view[whole:]
        return b"".join(parts)

    def finish(self) -> bytes:
        if not self._buf:
            return b""
        out = b"".join(self._segment(self._buf))
        self._buf.clear()
        return out


def decrypt(data_key: bytes, stored: bytes, first_index: int) -> bytes:
    """Whole stored segments (the last one may be short: a part's end) back to plaintext."""
    aead = AESGCM(data_key)
    out = []
    index = first_index
    view = memoryview(stored)  # slices of it are not copies
    for i in range(0, len(stored), STORED_SEGMENT):
        segment = view[i:i + STORED_SEGMENT]
        if len(segment) <= OVERHEAD:
            raise DataCorrupt(f"segment {index} is cut short")
        try:
            out.append(aead.decrypt(segment[:NONCE], segment[NONCE:], index.to_bytes(8, "big")))
        except InvalidTag:
            raise DataCorrupt(f"segment {index} does not decrypt") from None
        index += 1
    return b"".join(out)


@attrs.frozen
class Window:
    """What a plaintext range needs of one part: the stored bytes [stored_start, stored_end) — whole segments,
    the first being number ``first_index`` of the part — and, of their plaintext, ``take`` bytes after
    ``skip``."""

    stored_start: int
    stored_end: int
    first_index: int
    skip: int
    take: int


def windows(part_sizes: Sequence[int], start: int, end: int) -> list[Window]:
    """The plaintext range [start, end) of an object whose parts have these plaintext sizes, as stored windows."""
    out = []
    plain_at = stored_at = 0
    for size in part_sizes:
        lo, hi = max(start, plain_at), min(end, plain_at + size)
        if lo < hi:
            first, last = (lo - plain_at) // SEGMENT, (hi - 1 - plain_at) // SEGMENT
            stored_end = min(stored_at + (last + 1) * STORED_SEGMENT, stored_at + stored_size(size))
            out.append(Window(stored_at + first * STORED_SEGMENT, stored_end, first,
                              lo - plain_at - first * SEGMENT, hi - lo))
        plain_at += size
        stored_at += stored_size(size)
        if plain_at >= end:
            break
    return out


BATCH = 16  # segments decrypted at once (1 MiB of plaintext)


async def decrypted(pieces_of: Callable[[int, int], AsyncIterator[bytes]], data_key: bytes,
                    part_sizes: Sequence[int], start: int, end: int) -> AsyncIterator[bytes]:
    """The plaintext [start, end): for each window, its stored bytes (``pieces_of(stored_start, stored_end)``,
    an async iterator) decrypted a batch of segments at a time, then trimmed."""
    for window in windows(part_sizes, start, end):
        buf = bytearray()
        index, skip, left = window.first_index, window.skip, window.take

        async def emit(stored: bytes) -> AsyncIterator[bytes]:
            nonlocal index, skip, left
            plain = decrypt(data_key, stored, index)  # on the loop: see Encryptor.feed
            index += -(-len(stored) // STORED_SEGMENT)
            if skip:
                cut = min(skip, len(plain))
                plain, skip = plain[cut:], skip - cut
            plain = plain[:left]
            left -= len(plain)
            if plain:
                yield plain

        async for piece in pieces_of(window.stored_start, window.stored_end):
            buf += piece
            while len(buf) >= BATCH * STORED_SEGMENT:
                batch = bytes(buf[:BATCH * STORED_SEGMENT])
                del buf[:BATCH * STORED_SEGMENT]
                async for plain in emit(batch):
                    yield plain
        if buf:
            async for plain in emit(bytes(buf)):
                yield plain
        if left:
            raise DataCorrupt(f"{left} bytes of the range are missing from the stored data")
