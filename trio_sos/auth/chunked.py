"""Decoding of ``Content-Encoding: aws-chunked`` request bodies (S3 "streaming" uploads), sans-IO.

The body of a request whose ``x-amz-content-sha256`` is one of the STREAMING-* values is a sequence of chunks
(S3 API reference, "Signature Calculations for the Authorization Header: Transferring Payload in Multiple Chunks"
and "... Including Trailing Headers")::

    STREAMING-AWS4-HMAC-SHA256-PAYLOAD          hex-size;chunk-signature=SIG\\r\\n <data> \\r\\n ...
                                                0;chunk-signature=SIG\\r\\n \\r\\n
    STREAMING-UNSIGNED-PAYLOAD-TRAILER          hex-size\\r\\n <data> \\r\\n ... 0\\r\\n
                                                [x-amz-checksum-crc32:BASE64\\r\\n] \\r\\n
    STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER  hex-size;chunk-signature=SIG\\r\\n <data> \\r\\n ...
                                                0;chunk-signature=SIG\\r\\n
                                                [x-amz-checksum-crc32:BASE64\\r\\n
                                                 x-amz-trailer-signature:SIG\\r\\n] \\r\\n

Each chunk signature is HMAC-SHA256(signing key, string to sign), chained from the seed signature (the request's
own signature) through every chunk, the final empty one included::

    AWS4-HMAC-SHA256-PAYLOAD \\n <x-amz-date> \\n <scope> \\n <previous signature> \\n sha256("") \\n sha256(chunk data)

and the trailer signature continues the chain from the final chunk's signature::

    AWS4-HMAC-SHA256-TRAILER \\n <x-amz-date> \\n <scope> \\n <previous signature> \\n sha256(trailer lines)

where the trailer lines are ``name:value\\n`` for each trailing header but x-amz-trailer-signature, names
lowercase and sorted, values trimmed: ``sha256("x-amz-checksum-crc32c:sOO8/Q==\\n")`` in AWS's example.

`AwsChunkedDecoder` takes the body as it arrives (`feed`) and hands the payload back as it goes, never holding
more than one chunk-header line (or the trailer section), both bounded: a 64 KiB chunk streams through, it is not
buffered. Chunk signatures are computed incrementally and checked when each chunk's data ends, so a chunk's data
has already been handed out when its signature turns out wrong: **the caller must treat the payload as
provisional until `finish` returns**, and discard what it wrote if any call raised.

Errors are `sigv4.AuthError` with what S3 answers (responses of S3 itself recorded in the versitygw project's
issues, numbers below):

- framing (bad size line, missing CRLF, missing or malformed ``chunk-signature``, body ending early, bytes after
  the end): IncompleteBody "The request body terminated unexpectedly" (400; #1660, #1666, #1685);
- a chunk or trailer signature that does not match: SignatureDoesNotMatch (403);
- a chunk other than the last smaller than 8 KiB: InvalidChunkSizeError "Only the last chunk is allowed to have a
  size less than 8192 bytes" (400) with Chunk (the number of the chunk whose header showed it) and BadChunkSize
  (#1683, #2085; AWS's JavaScript SDK documents the same error);
- a chunk larger than ``max_chunk_size`` (a limit of this server; S3 documents none): InvalidRequest (400);
- a trailing header not announced in ``x-amz-trailer``, or announced and missing, or a signed trailer section
  without its signature, or a trailer signature in an unsigned stream: MalformedTrailerError "The request
  contained trailing data that was not well-formed or did not conform to our published schema." (400; #1691);
- a trailing checksum that is not the base64 of a digest of the algorithm's size: InvalidRequest "Value for
  x-amz-checksum-crc32 trailing header is invalid." (400; #1652);
- ``x-amz-trailer`` naming something else than one ``x-amz-checksum-*`` header: InvalidRequest "The value
  specified in the x-amz-trailer header is not supported" (400).

Checksums themselves are not computed here: `finish` returns the trailing headers and the caller compares the
checksum it computed while storing the payload (BadDigest on a mismatch).

**No x-amz-trailer: CRC64NVME.** With a trailer mode but no ``x-amz-trailer`` header and no trailing checksum
in the body, S3 accepts the upload (it does not demand a trailer; versitygw #1632, #1664) and, as for any upload
that carries no checksum of the client's ("Checking object integrity" in the S3 user guide), computes a CRC64NVME
full-object checksum itself and returns it (x-amz-checksum-crc64nvme, x-amz-checksum-type FULL_OBJECT). That is
`AwsChunkedDecoder.checksum_algorithm`: the announced trailer's algorithm, else ``"CRC64NVME"``. A trailing
checksum that was *not* announced is not defaulted to anything: it is MalformedTrailerError.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Sequence

from .sigv4 import _SIGNATURE_MISMATCH_MESSAGE, EMPTY_SHA256, AuthError, Verified

__all__ = [
    "CHECKSUM_TRAILERS",
    "DEFAULT_CHECKSUM_ALGORITHM",
    "DEFAULT_MAX_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "STREAMING_SIGNED",
    "STREAMING_SIGNED_TRAILER",
    "STREAMING_UNSIGNED_TRAILER",
    "AwsChunkedDecoder",
    "decoded_length_ok",
    "parse_decoded_content_length",
    "parse_trailer_header",
]

STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
_ECDSA_MODES = frozenset(
    {"STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD", "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER"}
)

# The trailing checksum headers S3 accepts (the x-amz-checksum-* members of PutObject in the S3 API model) and
# the size of their digests in bytes.
CHECKSUM_TRAILERS: dict[str, int] = {
    "x-amz-checksum-crc32": 4,
    "x-amz-checksum-crc32c": 4,
    "x-amz-checksum-crc64nvme": 8,
    "x-amz-checksum-sha1": 20,
    "x-amz-checksum-sha256": 32,
    "x-amz-checksum-sha512": 64,
    "x-amz-checksum-md5": 16,
    "x-amz-checksum-xxhash64": 8,
    "x-amz-checksum-xxhash3": 8,
    "x-amz-checksum-xxhash128": 16,
}
DEFAULT_CHECKSUM_ALGORITHM = "CRC64NVME"
TRAILER_SIGNATURE = "x-amz-trailer-signature"

MIN_CHUNK_SIZE = 8192  # S3: only the last chunk may be smaller
DEFAULT_MAX_CHUNK_SIZE = 16 * 1024 * 1024
MAX_LINE = 4096  # a chunk header or trailer line, CRLF included
MAX_TRAILER_BYTES = 16 * 1024
MAX_TRAILER_LINES = 32

_PAYLOAD_ALGORITHM = "AWS4-HMAC-SHA256-PAYLOAD"
_TRAILER_ALGORITHM = "AWS4-HMAC-SHA256-TRAILER"
_SIGNED_HEADER_RE = re.compile(rb"([0-9a-fA-F]{1,16});chunk-signature=([^\r\n]*)\r\n\Z")
_UNSIGNED_HEADER_RE = re.compile(rb"([0-9a-fA-F]{1,16})\r\n\Z")
_TRAILER_NAME_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")

_HEADER, _DATA, _DATA_CRLF, _TRAILER, _DONE = range(5)


def _incomplete() -> AuthError:
    return AuthError("IncompleteBody", "The request body terminated unexpectedly")


def _malformed_trailer() -> AuthError:
    return AuthError(
        "MalformedTrailerError",
        "The request contained trailing data that was not well-formed or did not conform to our published schema.",
    )


def _unsupported_trailer() -> AuthError:
    return AuthError("InvalidRequest", "The value specified in the x-amz-trailer header is not supported")


def parse_trailer_header(value: str | None) -> list[str]:
    """The names listed in an ``x-amz-trailer`` header value (comma-separated), lowercase; [] when absent."""
    if not value:
        return []
    return [name.strip().lower() for name in value.split(",") if name.strip()]


def parse_decoded_content_length(value: str | None) -> int:
    """The ``x-amz-decoded-content-length`` of an aws-chunked request: MissingContentLength (411) when absent
    (S3 requires it with aws-chunked), InvalidArgument when not a non-negative decimal integer."""
    if value is None or not value.strip():
        raise AuthError("MissingContentLength", "You must provide the Content-Length HTTP header.")
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise AuthError(
            "InvalidArgument",
            "x-amz-decoded-content-length must be a non-negative integer",
            {"ArgumentName": "x-amz-decoded-content-length", "ArgumentValue": value},
        )
    return int(text)


def decoded_length_ok(expected: int, got: int) -> bool:
    """Whether a decoded payload of ``got`` bytes matches the declared x-amz-decoded-content-length."""
    return expected >= 0 and got == expected


class AwsChunkedDecoder:
    """Incremental decoder of one aws-chunked body.

    ``mode`` is the request's x-amz-content-sha256 (one of the STREAMING-* values; the ECDSA ones are
    NotImplemented). The signed modes need ``verified``, the `Verified` of the request's header signature: its
    signing key, scope, date and seed signature start the chunk-signature chain. ``trailer_names`` are the
    names announced by ``x-amz-trailer`` (see `parse_trailer_header`): at most one ``x-amz-checksum-*``.
    ``decoded_content_length``, when given, is checked as the payload arrives (more: IncompleteBody at once;
    fewer: IncompleteBody from `finish`). ``min_chunk_size`` is S3's 8 KiB rule for every chunk but the last
    (0 turns it off).

    `feed` returns the payload pieces the given bytes complete, in order (possibly none); `finish` checks that
    the body ended where it should and returns the trailing headers. After an error every further call raises
    the same error.
    """

    def __init__(
        self,
        mode: str,
        *,
        verified: Verified | None = None,
        trailer_names: Sequence[str] = (),
        max_chunk_size: int = DEFAULT_MAX_CHUNK_SIZE,
        min_chunk_size: int = MIN_CHUNK_SIZE,
        decoded_content_length: int | None = None,
    ) -> None:
        if mode in _ECDSA_MODES:
            raise AuthError("NotImplemented", f"The chunk encoding algorithm {mode} is not supported.")
        if mode not in (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER):
            raise ValueError(f"not an aws-chunked payload mode: {mode!r}")
        self.mode = mode
        self.signed = mode != STREAMING_UNSIGNED_TRAILER
        self.trailers_allowed = mode != STREAMING_SIGNED
        if self.signed:
            if verified is None:
                raise ValueError(f"{mode} needs the Verified of the request signature")
            if verified.payload_hash != mode:
                raise ValueError(f"the request was signed for {verified.payload_hash!r}, not {mode!r}")
        if max_chunk_size < 1 or min_chunk_size < 0:
            raise ValueError("bad chunk size limits")

        names = [name.strip().lower() for name in trailer_names if name.strip()]
        if any(name not in CHECKSUM_TRAILERS for name in names):
            raise _unsupported_trailer()
        if len(set(names)) > 1:
            raise AuthError(
                "InvalidRequest", "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed."
            )
        if names and not self.trailers_allowed:
            raise AuthError(
                "InvalidRequest",
                f"x-amz-trailer cannot be used with x-amz-content-sha256 {mode}; use a STREAMING-*-TRAILER value",
            )
        self.trailer_names: frozenset[str] = frozenset(names)

        self._verified = verified
        self._max_chunk = max_chunk_size
        self._min_chunk = min_chunk_size
        self._expected_length = decoded_content_length

        self._state = _HEADER
        self._buf = bytearray()  # the partial header / trailer line, or the partial CRLF after chunk data
        self._remaining = 0  # data bytes left in the current chunk
        self._chunks = 0  # chunk headers seen
        self._last_size = -1  # size of the previous data chunk
        self._hash = hashlib.sha256()
        self._signature = ""  # the chunk signature announced for the current chunk
        self._prev_signature = verified.seed_signature if verified is not None else ""
        self._trailer_bytes = 0
        self._trailer_lines: list[tuple[str, str]] = []
        self._trailers: dict[str, str] = {}
        self._decoded = 0
        self._error: AuthError | None = None

    # ----------------------------------------------------------------------------------------------------------

    @property
    def checksum_algorithm(self) -> str:
        """The checksum the stored object gets: the announced trailer's algorithm (``"CRC32"``, ``"CRC32C"``,
        ``"SHA256"``...), else S3's default ``"CRC64NVME"`` (computed by the server)."""
        name = next(iter(self.trailer_names), None)
        return DEFAULT_CHECKSUM_ALGORITHM if name is None else name.removeprefix("x-amz-checksum-").upper()

    @property
    def decoded_length(self) -> int:
        """Payload bytes handed out so far."""
        return self._decoded

    @property
    def complete(self) -> bool:
        """Whether the whole body (final chunk and trailer section) has been read."""
        return self._state == _DONE and self._error is None

    def feed(self, data: bytes) -> list[bytes]:
        """Take the next bytes of the body; return the payload pieces they complete (provisional until
        `finish`). Raises AuthError, and keeps raising it, once the body is found wrong."""
        if self._error is not None:
            raise self._error
        if not isinstance(data, bytes):
            data = bytes(data)
        try:
            return self._feed(data)
        except AuthError as exc:
            self._error = exc
            raise

    def finish(self) -> dict[str, str]:
        """The body has ended: check it ended after the trailer section (IncompleteBody otherwise) and had the
        declared decoded length; return the trailing headers, lowercase names (x-amz-trailer-signature left
        out), e.g. ``{"x-amz-checksum-crc32": "sOO8/Q=="}``; ``{}`` when there were none."""
        if self._error is not None:
            raise self._error
        if self._state != _DONE or (
            self._expected_length is not None and not decoded_length_ok(self._expected_length, self._decoded)
        ):
            self._error = _incomplete()
            raise self._error
        return dict(self._trailers)

    # ----------------------------------------------------------------------------------------------------------

    def _feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        pos, end = 0, len(data)
        while pos < end:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, end - pos)
                piece = data[pos : pos + take]
                pos += take
                self._remaining -= take
                self._decoded += take
                if self._expected_length is not None and self._decoded > self._expected_length:
                    raise _incomplete()
                if self.signed:
                    self._hash.update(piece)
                out.append(piece)
                if self._remaining == 0:
                    if self.signed:
                        self._check_chunk_signature(self._hash.hexdigest())
                    self._state = _DATA_CRLF
            elif state == _DATA_CRLF:
                take = min(2 - len(self._buf), end - pos)
                self._buf += data[pos : pos + take]
                pos += take
                if not b"\r\n".startswith(self._buf):
                    raise _incomplete()
                if len(self._buf) == 2:
                    self._buf.clear()
                    self._state = _HEADER
            elif state in (_HEADER, _TRAILER):
                limit = pos + MAX_LINE - len(self._buf)
                newline = data.find(b"\n", pos, limit)
                if newline < 0:
                    if end >= limit:  # no line end within MAX_LINE bytes
                        raise _incomplete() if state == _HEADER else _malformed_trailer()
                    self._buf += data[pos:]
                    pos = end
                    continue
                line = bytes(self._buf) + data[pos : newline + 1]
                self._buf.clear()
                pos = newline + 1
                if state == _HEADER:
                    self._header_line(line)
                else:
                    self._trailer_line(line)
            else:  # _DONE: nothing may follow the trailer section
                raise _incomplete()
        return out

    def _header_line(self, line: bytes) -> None:
        match = (_SIGNED_HEADER_RE if self.signed else _UNSIGNED_HEADER_RE).match(line)
        if match is None:
            raise _incomplete()
        size = int(match[1], 16)
        self._chunks += 1
        if size > self._max_chunk:
            raise AuthError(
                "InvalidRequest",
                f"Chunk {self._chunks} is {size} bytes; this server accepts chunks of at most {self._max_chunk} bytes",
            )
        if size > 0 and 0 <= self._last_size < self._min_chunk:
            raise AuthError(
                "InvalidChunkSizeError",
                f"Only the last chunk is allowed to have a size less than {self._min_chunk} bytes",
                {"Chunk": str(self._chunks), "BadChunkSize": str(self._last_size)},
            )
        if self.signed:
            self._signature = match[2].decode("latin-1")
        if size == 0:
            if self.signed:
                self._check_chunk_signature(EMPTY_SHA256)
            self._state = _TRAILER
            return
        self._last_size = size
        self._remaining = size
        self._hash = hashlib.sha256()
        self._state = _DATA

    def _check_chunk_signature(self, data_sha256: str) -> None:
        verified = self._verified
        assert verified is not None
        sts = "\n".join(
            (_PAYLOAD_ALGORITHM, verified.amz_date, verified.scope, self._prev_signature, EMPTY_SHA256, data_sha256)
        )
        self._prev_signature = self._expect_signature(sts, self._signature)

    def _expect_signature(self, sts: str, provided: str) -> str:
        verified = self._verified
        assert verified is not None
        expected = hmac.new(verified.signing_key, sts.encode("ascii"), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode("ascii"), provided.encode("utf-8", "replace")):
            raise AuthError("SignatureDoesNotMatch", _SIGNATURE_MISMATCH_MESSAGE)
        return expected

    def _trailer_line(self, line: bytes) -> None:
        if not line.endswith(b"\r\n"):
            raise _incomplete()
        if line == b"\r\n":
            self._end_of_trailers()
            return
        if not self.trailers_allowed:
            raise _incomplete()  # the final chunk of a STREAMING-AWS4-HMAC-SHA256-PAYLOAD body ends with CRLF
        self._trailer_bytes += len(line)
        if self._trailer_bytes > MAX_TRAILER_BYTES or len(self._trailer_lines) >= MAX_TRAILER_LINES:
            raise _malformed_trailer()
        text = line[:-2].decode("utf-8", "replace")
        name, colon, value = text.partition(":")
        name = name.strip().lower()
        if not colon or not _TRAILER_NAME_RE.match(name):
            raise _malformed_trailer()
        if any(existing == name for existing, _ in self._trailer_lines):
            raise _malformed_trailer()
        self._trailer_lines.append((name, value.strip()))

    def _end_of_trailers(self) -> None:
        trailers = {name: value for name, value in self._trailer_lines if name != TRAILER_SIGNATURE}
        signature = next((value for name, value in self._trailer_lines if name == TRAILER_SIGNATURE), None)
        if signature is not None and not self.signed:
            raise _malformed_trailer()
        if set(trailers) != self.trailer_names:
            raise _malformed_trailer()
        if self.signed and (trailers or signature is not None):
            if signature is None:
                raise _malformed_trailer()
            verified = self._verified
            assert verified is not None
            canonical = "".join(f"{name}:{trailers[name]}\n" for name in sorted(trailers))
            digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
            sts = "\n".join((_TRAILER_ALGORITHM, verified.amz_date, verified.scope, self._prev_signature, digest))
            self._prev_signature = self._expect_signature(sts, signature)
        for name, value in trailers.items():
            if not _is_digest(value, CHECKSUM_TRAILERS[name]):
                raise AuthError("InvalidRequest", f"Value for {name} trailing header is invalid.")
        self._trailers = trailers
        self._state = _DONE


def _is_digest(value: str, size: int) -> bool:
    try:
        return len(base64.b64decode(value.encode("ascii"), validate=True)) == size
    except (binascii.Error, UnicodeEncodeError):
        return False
