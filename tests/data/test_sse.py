"""The encryption of object data, without a server: segments, windows of a range, envelopes, master keys —
with hypothesis over sizes, part layouts, ranges and the way pieces arrive."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_sos.data import sse

S = sse.SEGMENT


def encrypt(key: bytes, plain: bytes, cuts: list[int]) -> bytes:
    """``plain`` fed to an Encryptor in pieces cut at ``cuts``."""
    enc = sse.Encryptor(key)
    out, at = [], 0
    for cut in sorted(set(c for c in cuts if 0 < c < len(plain))) + [len(plain)]:
        out.append(enc.feed(plain[at:cut]))
        at = cut
    out.append(enc.finish())
    return b"".join(out)


@settings(max_examples=60, deadline=None)
@given(size=st.integers(0, 3 * S + 100), cuts=st.lists(st.integers(0, 3 * S + 100), max_size=6))
def test_segments_whatever_the_pieces(size: int, cuts: list[int]) -> None:
    key = os.urandom(32)
    plain = os.urandom(size)
    stored = encrypt(key, plain, cuts)
    assert len(stored) == sse.stored_size(size)
    assert plain[:64] not in stored or size < 16  # (the first bytes are not there as they are)
    assert sse.decrypt(key, stored, 0) == plain


def test_tampering_is_detected() -> None:
    key = os.urandom(32)
    stored = encrypt(key, os.urandom(2 * S + 5), [])
    flipped = bytearray(stored)
    flipped[sse.STORED_SEGMENT + 40] ^= 1
    with pytest.raises(sse.DataCorrupt):
        sse.decrypt(key, bytes(flipped), 0)
    swapped = stored[sse.STORED_SEGMENT:2 * sse.STORED_SEGMENT] + stored[:sse.STORED_SEGMENT] + \
        stored[2 * sse.STORED_SEGMENT:]
    with pytest.raises(sse.DataCorrupt):  # segments are bound to their place
        sse.decrypt(key, swapped, 0)
    with pytest.raises(sse.DataCorrupt):  # and to their key
        sse.decrypt(os.urandom(32), stored, 0)
    with pytest.raises(sse.DataCorrupt):
        sse.decrypt(key, stored[:-30], 0)


def test_nonces_never_repeat_for_one_data_key() -> None:
    """A part uploaded again under the upload's data key gets new nonces: no two segments share one."""
    key = os.urandom(32)
    plain = b"\0" * (4 * S)
    nonces = set()
    for _ in range(3):
        stored = encrypt(key, plain, [])
        nonces |= {stored[i:i + sse.NONCE] for i in range(0, len(stored), sse.STORED_SEGMENT)}
    assert len(nonces) == 12


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(st.integers(0, 3 * S + 7), min_size=1, max_size=4), data=st.data(),
       piece=st.integers(1, 2 * sse.STORED_SEGMENT))
def test_any_range_of_any_layout_decrypts_only_what_it_needs(parts: list[int], data, piece: int) -> None:
    total = sum(parts)
    start = data.draw(st.integers(0, max(0, total - 1)))
    end = data.draw(st.integers(start, total))
    key = os.urandom(32)
    plains = [os.urandom(n) for n in parts]
    stored = b"".join(encrypt(key, p, []) for p in plains)
    whole = b"".join(plains)
    read: list[tuple[int, int]] = []

    async def pieces(lo: int, hi: int):
        read.append((lo, hi))
        for i in range(lo, hi, piece):
            yield stored[i:min(hi, i + piece)]

    async def run() -> bytes:
        return b"".join([p async for p in sse.decrypted(pieces, key, parts, start, end)])

    assert trio.run(run) == whole[start:end]
    # only whole segments around the range are read: never more than one segment either side
    for window, (lo, hi) in zip(sse.windows(parts, start, end), read, strict=True):
        assert (window.stored_start, window.stored_end) == (lo, hi)
    assert sum(hi - lo for lo, hi in read) <= (end - start) + len(read) * 2 * sse.STORED_SEGMENT


def test_envelopes_and_keys() -> None:
    customer = os.urandom(32)
    envelope, data_key = sse.seal_customer(customer)
    again = sse.Envelope.loads(envelope.dumps())
    assert again == envelope and sse.open_customer(again, customer) == data_key
    assert customer.hex() not in envelope.dumps() and sse.b64(customer) not in envelope.dumps()
    with pytest.raises(sse.KeyMismatch):
        sse.open_customer(again, os.urandom(32))
    keys = sse.MasterKeys.parse(f"new {sse.b64(os.urandom(32))}\nold {sse.b64(os.urandom(32))}\n")
    old_only = sse.MasterKeys((keys.keys[1],))
    sealed_old, dk_old = old_only.seal()
    assert keys.open(sealed_old) == dk_old  # rotation: an old key still opens what it wrapped
    sealed, dk = keys.seal()
    assert sealed.key_id == "new" and keys.open(sealed) == dk
    with pytest.raises(sse.KeyMismatch):
        old_only.open(sealed)
    headers = sse.with_envelope((("cache-control", "no"),), sealed)
    assert sse.envelope_of(headers) == sealed and sse.without_envelope(headers) == (("cache-control", "no"),)
    assert sse.etag(dk, b"m" * 16) != sse.etag(dk_old, b"m" * 16)


@pytest.mark.parametrize("text", ["", "# only a comment\n", "k1 short\n", f"k1 {sse.b64(b'x' * 31)}\n",
                                  f"k1 {sse.b64(b'x' * 32)}\nk1 {sse.b64(b'y' * 32)}\n", "nokey\n"])
def test_bad_master_key_files_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        sse.MasterKeys.parse(text)


def test_master_key_file_made_once_by_processes_starting_together(tmp_path: Path) -> None:
    path = tmp_path / "sse-master.key"
    found: list[sse.MasterKeys] = []
    threads = [threading.Thread(target=lambda: found.append(sse.MasterKeys.create(path))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({k.keys for k in found}) == 1 and len(found) == 8
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in tmp_path.iterdir()] == ["sse-master.key"]  # no temporary file left
