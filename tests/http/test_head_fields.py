"""The response head's own field check (``head_fields``) refuses exactly what h11's validation refuses: it replaces
that validation on every response, so a header a handler got wrong (or a stranger smuggled in) never goes out."""

from __future__ import annotations

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_sos.http.server import _wire, head_fields

latin1 = st.characters(min_codepoint=0, max_codepoint=255)
names = st.one_of(st.sampled_from(["ETag", "x-amz-meta-a", "Content-Type", "bad name", "x:y", ""]),
                  st.text(latin1, max_size=12))
values = st.one_of(st.sampled_from(["plain", " padded\t", "a\r\nX-Injected: 1", "tab\tinside", "", "nul\x00"]),
                   st.text(latin1, max_size=20), st.text(max_size=8))


def h11_accepts(fields: list[tuple[str, str]]) -> bool:
    try:
        h11.Response(status_code=200, reason=b"OK",
                     headers=[(n.encode("latin-1"), _wire(v)) for n, v in fields])
    except h11.LocalProtocolError:
        return False
    return True


@given(st.lists(st.tuples(names, values), max_size=6))
def test_refuses_exactly_what_h11_refuses(fields) -> None:
    try:
        checked = head_fields([(b"Server", b"trio_sos")], fields)
    except h11.LocalProtocolError:
        assert not h11_accepts(fields)
    else:
        assert h11_accepts(fields)
        assert checked == [(b"Server", b"trio_sos")] + [(n.encode("latin-1"), _wire(v)) for n, v in fields]


@pytest.mark.parametrize("fields", [[("Location", "/k\r\nSet-Cookie: x=1")], [("X-A", "v\n")], [("X Bad", "v")],
                                    [("ok", "fine"), ("Content-Type", "text/plain\x0b")]])
def test_injection_is_refused(fields) -> None:
    with pytest.raises(h11.LocalProtocolError):
        head_fields([], fields)
