"""Every S3 error code the node raises has its HTTP status: in the registry, or given where it is raised — an
unregistered code would otherwise be answered 500 (which a client retries, and which no stranger's input may
cause)."""

from __future__ import annotations

import re
from pathlib import Path

from trio_sos.s3.errors import CODES

SOURCES = Path(__file__).resolve().parents[2] / "trio_sos"
_RAISED = re.compile(r'S3Error\(\s*"(\w+)"')


def _call_text(source: str, start: int) -> str:
    """The text of the S3Error(...) call starting at ``start`` (to its closing parenthesis)."""
    depth = 0
    for i in range(start, len(source)):
        if source[i] == "(":
            depth += 1
        elif source[i] == ")":
            depth -= 1
            if depth == 0:
                return source[start:i]
    return source[start:]


def test_every_raised_code_has_a_status() -> None:
    unknown = []
    for path in SOURCES.rglob("*.py"):
        source = path.read_text()
        for match in _RAISED.finditer(source):
            if match[1] not in CODES and "status=" not in _call_text(source, match.start()):
                unknown.append(f"{path.relative_to(SOURCES)}: {match[1]}")
    assert not unknown, unknown
