"""The access log's logfmt values: bare only when nothing in them could be read as a separator or be lost."""

from __future__ import annotations

import ast

from hypothesis import given
from hypothesis import strategies as st

from trio_sos.admin.observe import _value


@given(st.one_of(st.none(), st.text(), st.text(st.characters(min_codepoint=0, max_codepoint=127))))
def test_a_value_is_bare_exactly_when_it_is_plain(text) -> None:
    out = _value(text)
    s = "-" if not text else text
    plain = s.isascii() and s.isprintable() and not any(c in s for c in ' "=\\')
    if plain:
        assert out == s
    else:
        assert out.startswith('"') and out.endswith('"')
        # a quoted value is unicode_escape text with its quotes escaped: it reads back as what was logged
        assert ast.literal_eval(out) == s
