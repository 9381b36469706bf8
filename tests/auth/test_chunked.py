"""aws-chunked decoding: a reference encoder written from the AWS documentation, AWS's published examples,
botocore's own unsigned-trailer encoder, tampering, and fuzzing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import os
import random
import zlib

import attrs
import crc32c
import pytest
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum, Sha1Checksum, Sha256Checksum
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_sos.auth.chunked import (
    DEFAULT_CHECKSUM_ALGORITHM,
    MAX_LINE,
    MIN_CHUNK_SIZE,
    STREAMING_SIGNED,
    STREAMING_SIGNED_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
    AwsChunkedDecoder,
    decoded_length_ok,
    parse_decoded_content_length,
    parse_trailer_header,
)
from trio_sos.auth.sigv4 import (
    EMPTY_SHA256,
    AuthError,
    SigningKeyCache,
    Verified,
    derive_signing_key,
    parse_authorization,
    verify_header_auth,
)

from .test_sigv4 import AK, DOC_TIME, SK

MODES = [STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER]
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------------------------------------------
# A reference encoder, written from the AWS documentation


def make_verified(mode: str, *, seed: str | None = None, region: str = "us-east-1") -> Verified:
    amz_date = "20240229T120000Z"
    return Verified(
        access_key=AK,
        region=region,
        service="s3",
        amz_date=amz_date,
        request_time=DOC_TIME,
        scope=f"{amz_date[:8]}/{region}/s3/aws4_request",
        signing_key=derive_signing_key(SK, amz_date[:8], region, "s3"),
        seed_signature=seed or hashlib.sha256(mode.encode()).hexdigest(),
        payload_hash=mode,
    )


def _hmac(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def encode(
    payload: bytes,
    sizes: list[int],
    mode: str,
    verified: Verified | None = None,
    trailers: dict[str, str] | None = None,
) -> bytes:
    """The aws-chunked body of ``payload`` cut into chunks of ``sizes`` (the last takes the rest)."""
    assert sum(sizes) <= len(payload)
    chunks, at = [], 0
    for size in sizes:
        chunks.append(payload[at : at + size])
        at += size
    if at < len(payload):
        chunks.append(payload[at:])
    chunks = [c for c in chunks if c]
    signed = mode != STREAMING_UNSIGNED_TRAILER
    out = bytearray()
    prev = verified.seed_signature if verified else ""

    def chunk_sig(data: bytes) -> str:
        sts = "\n".join(
            [
                "AWS4-HMAC-SHA256-PAYLOAD",
                verified.amz_date,
                verified.scope,
                prev,
                EMPTY_SHA256,
                hashlib.sha256(data).hexdigest(),
            ]
        )
        return _hmac(verified.signing_key, sts)

    for data in [*chunks, b""]:
        if signed:
            prev = chunk_sig(data)
            out += b"%x;chunk-signature=%s\r\n" % (len(data), prev.encode())
        else:
            out += b"%x\r\n" % len(data)
        if data:
            out += data + b"\r\n"
    for name, value in (trailers or {}).items():
        out += f"{name}:{value}\r\n".encode()
    if trailers and mode == STREAMING_SIGNED_TRAILER:
        canonical = "".join(f"{name}:{trailers[name]}\n" for name in sorted(trailers))
        sts = "\n".join(
            [
                "AWS4-HMAC-SHA256-TRAILER",
                verified.amz_date,
                verified.scope,
                prev,
                hashlib.sha256(canonical.encode()).hexdigest(),
            ]
        )
        out += f"x-amz-trailer-signature:{_hmac(verified.signing_key, sts)}\r\n".encode()
    out += b"\r\n"
    return bytes(out)


def decode(
    body: bytes, cuts: list[int], decoder: AwsChunkedDecoder, *, check_streaming: bool = True
) -> tuple[bytes, dict[str, str]]:
    """Feed ``body`` cut at ``cuts``; check that nothing is held back beyond a header line."""
    out = bytearray()
    fed = 0
    bounds = sorted({c for c in cuts if 0 < c < len(body)})
    for start, stop in zip([0, *bounds], [*bounds, len(body)], strict=True):
        pieces = decoder.feed(body[start:stop])
        fed += stop - start
        for piece in pieces:
            assert isinstance(piece, bytes)
            out += piece
        if check_streaming:
            assert len(decoder._buf) < MAX_LINE
            assert len(out) <= fed
    return bytes(out), decoder.finish()


def random_bytes(n: int) -> bytes:
    return random.Random(n).randbytes(n)


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


@st.composite
def chunked_cases(draw, modes=MODES):
    mode = draw(st.sampled_from(modes))
    payload = draw(
        st.one_of(
            st.binary(max_size=300),
            st.integers(0, 40000).map(random_bytes),
            st.integers(0, 20000).map(lambda n: b"\r\n0;" * (n // 4)),
        )
    )
    chunk = draw(st.integers(1, 20000))
    sizes = [chunk] * (len(payload) // chunk)
    trailers = None
    if mode != STREAMING_SIGNED and draw(st.booleans()):
        trailers = {"x-amz-checksum-crc32": crc32_b64(payload)}
    cuts = draw(st.lists(st.integers(0, max(len(payload) + 2000, 1)), max_size=30))
    return mode, payload, sizes, trailers, cuts, chunk


# --------------------------------------------------------------------------------------------------------------
# Round trips


@SETTINGS
@given(case=chunked_cases())
def test_round_trip_with_random_splits(case) -> None:
    mode, payload, sizes, trailers, cuts, chunk = case
    verified = make_verified(mode) if mode != STREAMING_UNSIGNED_TRAILER else None
    body = encode(payload, sizes, mode, verified, trailers)
    decoder = AwsChunkedDecoder(
        mode,
        verified=verified,
        trailer_names=list(trailers or ()),
        min_chunk_size=MIN_CHUNK_SIZE if chunk >= MIN_CHUNK_SIZE else 0,
        decoded_content_length=len(payload),
    )
    got, got_trailers = decode(body, cuts, decoder)
    assert got == payload
    assert got_trailers == (trailers or {})
    assert decoder.decoded_length == len(payload)
    assert decoder.complete
    assert decoder.checksum_algorithm == ("CRC32" if trailers else "CRC64NVME")


def test_one_byte_at_a_time() -> None:
    payload = os.urandom(20000)
    for mode in MODES:
        verified = make_verified(mode) if mode != STREAMING_UNSIGNED_TRAILER else None
        trailers = None if mode == STREAMING_SIGNED else {"x-amz-checksum-crc32": crc32_b64(payload)}
        body = encode(payload, [8192, 8192], mode, verified, trailers)
        decoder = AwsChunkedDecoder(mode, verified=verified, trailer_names=list(trailers or ()))
        got, got_trailers = decode(body, list(range(len(body))), decoder)
        assert got == payload
        assert got_trailers == (trailers or {})


def test_data_streams_through_without_waiting_for_the_chunk_end() -> None:
    payload = os.urandom(200_000)
    mode = STREAMING_SIGNED
    verified = make_verified(mode)
    body = encode(payload, [150_000], mode, verified)
    decoder = AwsChunkedDecoder(mode, verified=verified)
    header_end = body.index(b"\r\n") + 2
    assert decoder.feed(body[:header_end]) == []
    # each piece of a 150 000-byte chunk is handed back as soon as it arrives
    at = header_end
    for size in (1, 999, 65536, 10000):
        assert decoder.feed(body[at : at + size]) == [payload[at - header_end : at - header_end + size]]
        at += size
    rest = b"".join(decoder.feed(body[at:]))
    assert rest == payload[at - header_end :]
    assert decoder.finish() == {}


# --------------------------------------------------------------------------------------------------------------
# AWS documentation examples (S3 API reference, "Signature Calculations for the Authorization Header: Transferring
# Payload in Multiple Chunks" and "... Including Trailing Headers")

DOC_SIGNATURES = [
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
]
DOC_TRAILER_SIGNATURES = [
    "b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2",
    "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7",
    "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992",
]
DOC_TRAILER_SIGNATURE = "d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435"


def doc_request(trailer: bool) -> Verified:
    mode = STREAMING_SIGNED_TRAILER if trailer else STREAMING_SIGNED
    signed = (
        "content-encoding;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class;x-amz-trailer"
        if trailer
        else "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class"
    )
    seed = (
        "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e"
        if trailer
        else "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
    )
    headers = [
        ("Host", "s3.amazonaws.com"),
        ("x-amz-date", "20130524T000000Z"),
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        (
            "Authorization",
            f"AWS4-HMAC-SHA256 Credential={AK}/20130524/us-east-1/s3/aws4_request,SignedHeaders={signed},Signature={seed}",
        ),
        ("x-amz-content-sha256", mode),
        ("Content-Encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", "66560"),
        ("Content-Length", "66824"),
    ]
    if trailer:
        headers.append(("x-amz-trailer", "x-amz-checksum-crc32c"))
    parsed = parse_authorization(dict(headers)["Authorization"])
    verified = verify_header_auth(
        "PUT", "/examplebucket/chunkObject.txt", headers, parsed, SK, now=DOC_TIME, key_cache=SigningKeyCache()
    )
    assert verified.seed_signature == seed
    return verified


def doc_body(signatures: list[str], trailer: str = "") -> bytes:
    return (
        f"10000;chunk-signature={signatures[0]}\r\n".encode()
        + b"a" * 65536
        + f"\r\n400;chunk-signature={signatures[1]}\r\n".encode()
        + b"a" * 1024
        + f"\r\n0;chunk-signature={signatures[2]}\r\n".encode()
        + trailer.encode()
        + b"\r\n"
    )


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(0, 66824), max_size=20))
def test_aws_doc_chunked_put(cuts) -> None:
    verified = doc_request(trailer=False)
    body = doc_body(DOC_SIGNATURES)
    assert len(body) == 66824  # the documented Content-Length
    decoder = AwsChunkedDecoder(verified.payload_hash, verified=verified, decoded_content_length=66560)
    assert decode(body, cuts, decoder) == (b"a" * 66560, {})
    # the reference encoder produces the documented body
    assert encode(b"a" * 66560, [65536, 1024], STREAMING_SIGNED, verified) == body


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(0, 67000), max_size=20))
def test_aws_doc_chunked_put_with_trailer(cuts) -> None:
    verified = doc_request(trailer=True)
    trailer = f"x-amz-checksum-crc32c:sOO8/Q==\r\nx-amz-trailer-signature:{DOC_TRAILER_SIGNATURE}\r\n"
    body = doc_body(DOC_TRAILER_SIGNATURES, trailer)
    decoder = AwsChunkedDecoder(
        verified.payload_hash,
        verified=verified,
        trailer_names=parse_trailer_header("x-amz-checksum-crc32c"),
        decoded_content_length=66560,
    )
    assert decode(body, cuts, decoder) == (b"a" * 66560, {"x-amz-checksum-crc32c": "sOO8/Q=="})
    assert decoder.checksum_algorithm == "CRC32C"
    # the documented checksum is the payload's CRC32C, and the reference encoder produces the documented body
    assert base64.b64encode(crc32c.crc32c(b"a" * 66560).to_bytes(4, "big")).decode() == "sOO8/Q=="
    assert encode(b"a" * 66560, [65536, 1024], STREAMING_SIGNED_TRAILER, verified, {"x-amz-checksum-crc32c": "sOO8/Q=="}) == body


def test_aws_doc_tampered() -> None:
    verified = doc_request(trailer=True)
    good_trailer = f"x-amz-checksum-crc32c:sOO8/Q==\r\nx-amz-trailer-signature:{DOC_TRAILER_SIGNATURE}\r\n"
    cases = {
        "data": doc_body(DOC_TRAILER_SIGNATURES, good_trailer).replace(b"aaaa\r\n400", b"aaab\r\n400"),
        "chunk signature": doc_body([DOC_TRAILER_SIGNATURES[1], *DOC_TRAILER_SIGNATURES[1:]], good_trailer),
        "final signature": doc_body([*DOC_TRAILER_SIGNATURES[:2], DOC_SIGNATURES[2]], good_trailer),
        "trailer value": doc_body(DOC_TRAILER_SIGNATURES, good_trailer.replace("sOO8/Q==", "sOO8/Q=A")),
        "trailer signature": doc_body(DOC_TRAILER_SIGNATURES, good_trailer.replace("d81f", "d81e")),
    }
    for what, body in cases.items():
        decoder = AwsChunkedDecoder(verified.payload_hash, verified=verified, trailer_names=["x-amz-checksum-crc32c"])
        with pytest.raises(AuthError) as info:
            decode(body, [1000, 66000], decoder)
        assert info.value.code == "SignatureDoesNotMatch", what
        assert info.value.status == 403


# --------------------------------------------------------------------------------------------------------------
# botocore's unsigned-trailer encoder


@SETTINGS
@given(
    payload=st.one_of(st.binary(max_size=200), st.integers(0, 30000).map(random_bytes)),
    chunk_size=st.integers(1, 20000),
    checksum=st.sampled_from([None, "crc32", "sha1", "sha256"]),
    cuts=st.lists(st.integers(0, 32000), max_size=20),
)
def test_botocore_aws_chunked_wrapper(payload: bytes, chunk_size: int, checksum, cuts) -> None:
    classes = {"crc32": Crc32Checksum, "sha1": Sha1Checksum, "sha256": Sha256Checksum}
    name = f"x-amz-checksum-{checksum}" if checksum else "x-amz-checksum"
    wrapper = AwsChunkedWrapper(
        io.BytesIO(payload), checksum_cls=classes.get(checksum), checksum_name=name, chunk_size=chunk_size
    )
    body = wrapper.read()
    decoder = AwsChunkedDecoder(
        STREAMING_UNSIGNED_TRAILER,
        trailer_names=[name] if checksum else [],
        min_chunk_size=min(chunk_size, MIN_CHUNK_SIZE),
    )
    got, trailers = decode(body, cuts, decoder)
    assert got == payload
    if checksum:
        reference = classes[checksum]()
        reference.update(payload)
        assert trailers == {name: reference.b64digest()}
        assert decoder.checksum_algorithm == checksum.upper()
    else:
        # no x-amz-trailer and no trailing checksum: accepted, and the object gets S3's default CRC64NVME
        assert trailers == {}
        assert decoder.checksum_algorithm == DEFAULT_CHECKSUM_ALGORITHM == "CRC64NVME"


# --------------------------------------------------------------------------------------------------------------
# Tampering


def _errors(mode: str, body: bytes, *, trailer_names=(), verified=None, **kwargs) -> AuthError:
    decoder = AwsChunkedDecoder(
        mode,
        verified=verified if verified is not None else (make_verified(mode) if mode != STREAMING_UNSIGNED_TRAILER else None),
        trailer_names=list(trailer_names),
        **kwargs,
    )
    with pytest.raises(AuthError) as info:
        decoder.feed(body)
        decoder.finish()
    # errors stick
    with pytest.raises(AuthError) as again:
        decoder.feed(b"")
    assert again.value is info.value
    with pytest.raises(AuthError):
        decoder.finish()
    return info.value


PAYLOAD = bytes(range(256)) * 80  # 20 480 bytes: chunks of 8192, 8192, 4096


@pytest.mark.parametrize("mode", MODES)
def test_truncated_bodies_are_incomplete(mode: str) -> None:
    verified = make_verified(mode) if mode != STREAMING_UNSIGNED_TRAILER else None
    trailers = None if mode == STREAMING_SIGNED else {"x-amz-checksum-crc32": crc32_b64(PAYLOAD)}
    body = encode(PAYLOAD, [8192, 8192], mode, verified, trailers)
    for cut in sorted({0, 1, 5, 8192, 8300, len(body) // 2, len(body) - 3, len(body) - 2, len(body) - 1}):
        decoder = AwsChunkedDecoder(mode, verified=verified, trailer_names=list(trailers or ()))
        decoder.feed(body[:cut])
        with pytest.raises(AuthError) as info:
            decoder.finish()
        assert info.value.code == "IncompleteBody", cut
        assert info.value.message == "The request body terminated unexpectedly"
        assert info.value.status == 400


@pytest.mark.parametrize("mode", MODES)
def test_bytes_after_the_end_are_incomplete(mode: str) -> None:
    verified = make_verified(mode) if mode != STREAMING_UNSIGNED_TRAILER else None
    body = encode(PAYLOAD, [8192], mode, verified)
    assert _errors(mode, body + b"0\r\n", verified=verified).code == "IncompleteBody"


@pytest.mark.parametrize(
    ("mode", "body"),
    [
        (STREAMING_UNSIGNED_TRAILER, b"zz\r\nab\r\n0\r\n\r\n"),  # not hex
        (STREAMING_UNSIGNED_TRAILER, b"2\nab\r\n0\r\n\r\n"),  # LF only
        (STREAMING_UNSIGNED_TRAILER, b" 2\r\nab\r\n0\r\n\r\n"),
        (STREAMING_UNSIGNED_TRAILER, b"-2\r\nab\r\n0\r\n\r\n"),
        (STREAMING_UNSIGNED_TRAILER, b"2\r\nabX\n0\r\n\r\n"),  # data not followed by CRLF
        (STREAMING_UNSIGNED_TRAILER, b"2;chunk-signature=00\r\nab\r\n0\r\n\r\n"),  # signature in unsigned mode
        (STREAMING_UNSIGNED_TRAILER, b"11111111111111111\r\n"),  # 17 hex digits
        (STREAMING_UNSIGNED_TRAILER, b"0\r\n\r"),  # no final LF
        (STREAMING_UNSIGNED_TRAILER, b"0\r\nx-amz-checksum-crc32:AAAAAA==\n\r\n"),
        (STREAMING_SIGNED, b"2\r\nab\r\n0\r\n\r\n"),  # no chunk-signature
        (STREAMING_SIGNED, b"2;chunk-signatur=00\r\nab\r\n"),
        (STREAMING_SIGNED, b"2,chunk-signature=00\r\nab\r\n"),
        (STREAMING_SIGNED, b"0;chunk-signature=%s\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n"),  # trailer in a non-trailer mode
        (STREAMING_UNSIGNED_TRAILER, b"1" * (MAX_LINE + 10)),  # endless size line
    ],
)
def test_bad_framing_is_incomplete_body(mode: str, body: bytes) -> None:
    verified = make_verified(mode) if mode != STREAMING_UNSIGNED_TRAILER else None
    if b"%s" in body:  # a valid final chunk signature, so that only the framing is wrong
        sig = _hmac(
            verified.signing_key,
            "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", verified.amz_date, verified.scope, verified.seed_signature, EMPTY_SHA256, EMPTY_SHA256]),
        )
        body = body.replace(b"%s", sig.encode())
    assert _errors(mode, body, verified=verified, min_chunk_size=0).code == "IncompleteBody"


def test_long_lines_fail_without_buffering_everything() -> None:
    decoder = AwsChunkedDecoder(STREAMING_UNSIGNED_TRAILER)
    for _ in range(MAX_LINE // 100 - 1):
        decoder.feed(b"0" * 100)
        assert len(decoder._buf) < MAX_LINE
    with pytest.raises(AuthError) as info:
        decoder.feed(b"0" * 10_000_000)
    assert info.value.code == "IncompleteBody"


@SETTINGS
@given(data=st.data(), mode=st.sampled_from([STREAMING_SIGNED, STREAMING_SIGNED_TRAILER]))
def test_tampered_signed_streams_do_not_match(data, mode: str) -> None:
    verified = make_verified(mode)
    trailers = {"x-amz-checksum-sha256": base64.b64encode(hashlib.sha256(PAYLOAD).digest()).decode()}
    names = list(trailers) if mode == STREAMING_SIGNED_TRAILER else []
    body = encode(PAYLOAD, [8192, 8192], mode, verified, trailers if names else None)
    what = data.draw(st.sampled_from(["data", "signature", "swap", "seed", "key", "date", "trailer"]))
    if what == "data":
        data_starts = [body.index(b"\r\n") + 2]
        i = data.draw(st.integers(data_starts[0], data_starts[0] + 8191))
        body = body[:i] + bytes([body[i] ^ data.draw(st.integers(1, 255))]) + body[i + 1 :]
    elif what == "signature":
        starts = [i + len(b"chunk-signature=") for i in range(len(body)) if body.startswith(b"chunk-signature=", i)]
        i = data.draw(st.sampled_from(starts)) + data.draw(st.integers(0, 63))
        new = data.draw(st.sampled_from(b"0123456789abcdef").filter(lambda c: c != body[i]))
        body = body[:i] + bytes([new]) + body[i + 1 :]
    elif what == "swap":  # two full-size chunks exchanged: same framing, wrong chain
        first = body.index(b"2000;")
        second = body.index(b"2000;", first + 1)
        third = body.index(b"1000;")
        body = body[:first] + body[second:third] + body[first:second] + body[third:]
    elif what == "seed":
        verified = make_verified(mode, seed="0" * 64)
    elif what == "key":
        verified = make_verified(mode, region="eu-west-1")
    elif what == "date":
        verified = attrs.evolve(verified, amz_date="20240229T120001Z")
    else:
        if mode == STREAMING_SIGNED:
            return
        body = body.replace(trailers["x-amz-checksum-sha256"].encode(), base64.b64encode(b"\x01" * 32))
    error = _errors(mode, body, trailer_names=names, verified=verified)
    assert error.code == "SignatureDoesNotMatch", what


def test_signature_is_checked_at_each_chunk_end() -> None:
    mode = STREAMING_SIGNED
    verified = make_verified(mode)
    body = bytearray(encode(PAYLOAD, [8192, 8192], mode, verified))
    first_data = body.index(b"\r\n") + 2
    body[first_data + 100] ^= 1
    decoder = AwsChunkedDecoder(mode, verified=verified)
    pieces = decoder.feed(bytes(body[: first_data + 8000]))  # data is handed out before the chunk ends ...
    assert sum(map(len, pieces)) == 8000
    with pytest.raises(AuthError) as info:  # ... and the chunk's end reveals the tampering
        decoder.feed(bytes(body[first_data + 8000 : first_data + 8192]))
    assert info.value.code == "SignatureDoesNotMatch"


# --------------------------------------------------------------------------------------------------------------
# Chunk sizes


@pytest.mark.parametrize("mode", MODES)
def test_only_the_last_chunk_may_be_small(mode: str) -> None:
    verified = make_verified(mode) if mode != STREAMING_UNSIGNED_TRAILER else None
    # S3's answer to chunks of 3, 2 and the final 0: the second header reveals that the first was too small
    error = _errors(mode, encode(b"hello", [3], mode, verified), verified=verified)
    assert (error.code, error.status) == ("InvalidChunkSizeError", 400)
    assert error.message == "Only the last chunk is allowed to have a size less than 8192 bytes"
    assert error.extra == {"Chunk": "2", "BadChunkSize": "3"}
    error = _errors(mode, encode(PAYLOAD, [8192, 8191], mode, verified), verified=verified)
    assert error.extra == {"Chunk": "3", "BadChunkSize": "8191"}
    # a small last chunk, a single small chunk, an empty payload: all fine
    for payload, sizes in [(PAYLOAD, [8192, 8192]), (b"hello", []), (b"", [])]:
        decoder = AwsChunkedDecoder(mode, verified=verified)
        assert decode(encode(payload, sizes, mode, verified), [7, 9000], decoder) == (payload, {})


@pytest.mark.parametrize("mode", MODES)
def test_chunk_size_limit(mode: str) -> None:
    verified = make_verified(mode) if mode != STREAMING_UNSIGNED_TRAILER else None
    body = encode(PAYLOAD, [10000, 10000], mode, verified)
    decoder = AwsChunkedDecoder(mode, verified=verified, max_chunk_size=10000)
    assert decode(body, [], decoder)[0] == PAYLOAD
    error = _errors(mode, body, verified=verified, max_chunk_size=9999)
    assert (error.code, error.status) == ("InvalidRequest", 400)
    error = _errors(mode, b"ffffffffffffffff" + (b";chunk-signature=0" if verified else b"") + b"\r\n", verified=verified)
    assert error.code == "InvalidRequest"


# --------------------------------------------------------------------------------------------------------------
# Trailers


def _trailer_body(mode: str, trailers: dict[str, str] | None, verified=None) -> bytes:
    return encode(PAYLOAD, [8192, 8192], mode, verified, trailers)


@pytest.mark.parametrize("mode", [STREAMING_UNSIGNED_TRAILER, STREAMING_SIGNED_TRAILER])
def test_trailer_announcements(mode: str) -> None:
    verified = make_verified(mode) if mode == STREAMING_SIGNED_TRAILER else None
    crc = {"x-amz-checksum-crc32": crc32_b64(PAYLOAD)}

    def error(trailers, names) -> AuthError:
        return _errors(mode, _trailer_body(mode, trailers, verified), trailer_names=names, verified=verified)

    malformed = "The request contained trailing data that was not well-formed or did not conform to our published schema."
    # announced and missing
    assert (error(None, ["x-amz-checksum-crc32"]).code, error(None, ["x-amz-checksum-crc32"]).message) == (
        "MalformedTrailerError",
        malformed,
    )
    # sent and not announced (no default applies to an unannounced trailer)
    assert error(crc, []).code == "MalformedTrailerError"
    # announced one, sent another
    assert error(crc, ["x-amz-checksum-crc32c"]).code == "MalformedTrailerError"
    # sent twice
    body = _trailer_body(mode, crc, verified).replace(b"x-amz-checksum-crc32:", b"x-amz-checksum-crc32:AAAAAA==\r\nx-amz-checksum-crc32:", 1)
    assert _errors(mode, body, trailer_names=list(crc), verified=verified).code in ("MalformedTrailerError", "SignatureDoesNotMatch")
    # not a header line
    body = _trailer_body(mode, None, verified)[:-2] + b"no colon here\r\n\r\n"
    assert _errors(mode, body, verified=verified).code == "MalformedTrailerError"
    # announced, sent, but not a CRC32 (4 bytes, base64)
    for bad in ["AAAA", "AAAAAAA=", "!!!!!!==", "sOO8/Q", "é"]:
        e = error({"x-amz-checksum-crc32": bad}, ["x-amz-checksum-crc32"])
        assert (e.code, e.message) == ("InvalidRequest", "Value for x-amz-checksum-crc32 trailing header is invalid.")
    # announced in another case, with spaces: fine
    decoder = AwsChunkedDecoder(mode, verified=verified, trailer_names=parse_trailer_header(" X-Amz-Checksum-CRC32 "))
    assert decode(_trailer_body(mode, crc, verified), [], decoder)[1] == crc


def test_trailer_signature_rules() -> None:
    crc = {"x-amz-checksum-crc32": crc32_b64(PAYLOAD)}
    verified = make_verified(STREAMING_SIGNED_TRAILER)
    signed = _trailer_body(STREAMING_SIGNED_TRAILER, crc, verified)
    without_signature = signed[: signed.index(b"x-amz-trailer-signature")] + b"\r\n"
    error = _errors(STREAMING_SIGNED_TRAILER, without_signature, trailer_names=list(crc), verified=verified)
    assert error.code == "MalformedTrailerError"
    unsigned = _trailer_body(STREAMING_UNSIGNED_TRAILER, crc)
    with_signature = unsigned[:-2] + b"x-amz-trailer-signature:" + b"0" * 64 + b"\r\n\r\n"
    assert _errors(STREAMING_UNSIGNED_TRAILER, with_signature, trailer_names=list(crc)).code == "MalformedTrailerError"


def test_trailer_section_is_bounded() -> None:
    body = _trailer_body(STREAMING_UNSIGNED_TRAILER, None)[:-2] + b"x-amz-meta-a:b\r\n" * 100
    assert _errors(STREAMING_UNSIGNED_TRAILER, body).code == "MalformedTrailerError"


# --------------------------------------------------------------------------------------------------------------
# Declared lengths, construction


def test_decoded_content_length() -> None:
    body = encode(PAYLOAD, [8192, 8192], STREAMING_UNSIGNED_TRAILER)
    assert _errors(STREAMING_UNSIGNED_TRAILER, body, decoded_content_length=len(PAYLOAD) - 1).code == "IncompleteBody"
    assert _errors(STREAMING_UNSIGNED_TRAILER, body, decoded_content_length=len(PAYLOAD) + 1).code == "IncompleteBody"
    decoder = AwsChunkedDecoder(STREAMING_UNSIGNED_TRAILER, decoded_content_length=len(PAYLOAD) - 1)
    with pytest.raises(AuthError):  # more than declared fails as soon as it arrives
        decoder.feed(body[: body.index(b"\r\n1000\r\n") + 5000])
    assert decoded_length_ok(5, 5)
    assert not decoded_length_ok(5, 4)
    assert not decoded_length_ok(5, 6)
    assert not decoded_length_ok(-1, -1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("66560", 66560), (" 0 ", 0), (None, "MissingContentLength"), ("", "MissingContentLength"), ("-1", "InvalidArgument"),
     ("1e3", "InvalidArgument"), ("٣", "InvalidArgument"), ("9" * 20, "InvalidArgument")],
)
def test_parse_decoded_content_length(value, expected) -> None:
    if isinstance(expected, int):
        assert parse_decoded_content_length(value) == expected
    else:
        with pytest.raises(AuthError) as info:
            parse_decoded_content_length(value)
        assert info.value.code == expected
        assert info.value.status == (411 if expected == "MissingContentLength" else 400)


def test_parse_trailer_header() -> None:
    assert parse_trailer_header(None) == []
    assert parse_trailer_header("") == []
    assert parse_trailer_header("X-Amz-Checksum-Crc32") == ["x-amz-checksum-crc32"]
    assert parse_trailer_header(" a , ,B") == ["a", "b"]


def test_construction_errors() -> None:
    for mode in ["STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD", "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER"]:
        with pytest.raises(AuthError) as info:
            AwsChunkedDecoder(mode)
        assert (info.value.code, info.value.status) == ("NotImplemented", 501)
    for mode in ["UNSIGNED-PAYLOAD", EMPTY_SHA256, "STREAMING-UNSIGNED-PAYLOAD"]:
        with pytest.raises(ValueError):
            AwsChunkedDecoder(mode)
    with pytest.raises(ValueError):
        AwsChunkedDecoder(STREAMING_SIGNED)  # needs the request's Verified
    with pytest.raises(ValueError):
        AwsChunkedDecoder(STREAMING_SIGNED, verified=make_verified(STREAMING_SIGNED_TRAILER))
    with pytest.raises(AuthError) as info:
        AwsChunkedDecoder(STREAMING_UNSIGNED_TRAILER, trailer_names=["x-amz-meta-foo"])
    assert (info.value.code, info.value.message) == (
        "InvalidRequest",
        "The value specified in the x-amz-trailer header is not supported",
    )
    with pytest.raises(AuthError) as info:
        AwsChunkedDecoder(STREAMING_UNSIGNED_TRAILER, trailer_names=["x-amz-checksum-crc32", "x-amz-checksum-sha1"])
    assert info.value.code == "InvalidRequest"
    with pytest.raises(AuthError) as info:
        AwsChunkedDecoder(STREAMING_SIGNED, verified=make_verified(STREAMING_SIGNED), trailer_names=["x-amz-checksum-crc32"])
    assert info.value.code == "InvalidRequest"


# --------------------------------------------------------------------------------------------------------------
# Fuzzing: whatever the bytes, only AuthError


FRAGMENTS = [b"0", b"1", b"a", b"2000", b"ffff", b";", b"chunk-signature=", b"\r\n", b"\r", b"\n", b":", b"x-amz-checksum-crc32",
             b"x-amz-trailer-signature", b"AAAAAA==", b"\xff", b"\x00", b" ", b"=" * 3, b"e3b0c442" * 8]


@settings(max_examples=300, deadline=None)
@given(
    mode=st.sampled_from(MODES),
    body=st.one_of(st.binary(max_size=400), st.lists(st.sampled_from(FRAGMENTS), max_size=40).map(b"".join)),
    cuts=st.lists(st.integers(0, 400), max_size=10),
    names=st.sampled_from([[], ["x-amz-checksum-crc32"]]),
)
def test_random_bytes_only_raise_auth_error(mode: str, body: bytes, cuts, names) -> None:
    verified = make_verified(mode) if mode != STREAMING_UNSIGNED_TRAILER else None
    decoder = AwsChunkedDecoder(
        mode, verified=verified, trailer_names=names if mode != STREAMING_SIGNED else [], min_chunk_size=0
    )
    try:
        decode(body, cuts, decoder)
    except AuthError:
        pass


@SETTINGS
@given(case=chunked_cases(), data=st.data())
def test_mutated_streams_only_raise_auth_error(case, data) -> None:
    mode, payload, _, trailers, cuts, _ = case
    payload = payload[:3000]
    chunk = data.draw(st.integers(50, 1000))
    verified = make_verified(mode) if mode != STREAMING_UNSIGNED_TRAILER else None
    body = bytearray(encode(payload, [chunk] * (len(payload) // chunk), mode, verified, trailers))
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        i = data.draw(st.integers(0, len(body)))
        if action == "flip" and i < len(body):
            body[i] ^= data.draw(st.integers(1, 255))
        elif action == "delete":
            del body[i : i + data.draw(st.integers(1, 5))]
        else:
            body[i:i] = data.draw(st.sampled_from(FRAGMENTS))
    decoder = AwsChunkedDecoder(mode, verified=verified, trailer_names=list(trailers or ()), min_chunk_size=0)
    try:
        got, _ = decode(bytes(body), cuts, decoder)
    except AuthError:
        return
    if mode != STREAMING_UNSIGNED_TRAILER:  # a signed stream that decodes is the signed payload
        assert got == payload
