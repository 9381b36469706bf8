"""Writing S3 XML responses, and parsing request documents with a hardened parser (defusedxml)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Union
from xml.etree.ElementTree import Element  # only for typing parsed documents

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from .errors import S3Error

NS = "http://s3.amazonaws.com/doc/2006-03-01/"

Node = Union["Tag", "Raw", str, int, None]


class Raw(str):
    """Markup rendered as it is (already escaped: built by code that escaped every value in it)."""

    __slots__ = ()

# Characters XML would not carry as they are: CR and LF would be normalised away by the reader (a key "a\rb"
# must not come back as "a\nb"), the other C0 controls are not XML 1.0 characters at all. They are written as
# character references, as S3 does; a client that cannot read those asks for encoding-type=url.
_REFERENCES = {c: f"&#x{ord(c):X};" for c in map(chr, range(0x20)) if c != "\t"}
_REFERENCES.update({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_NEEDS = re.compile("[\x00-\x08\x0a-\x1f&<>]")


def needs_escape(value: str) -> bool:
    """Whether ``value`` holds a character :func:`text` would write otherwise."""
    return _NEEDS.search(value) is not None


def text(value: str) -> str:
    """``value`` as XML character data."""
    if _NEEDS.search(value) is None:
        return value  # the usual case, at half the cost of a substitution that finds nothing
    return _NEEDS.sub(lambda m: _REFERENCES[m.group()], value)


class Tag:
    __slots__ = ("name", "children", "attrs")

    def __init__(self, name: str, *children: Node | Iterable[Node], attrs: str = "") -> None:
        self.name = name
        self.attrs = attrs
        flat: list[Node] = []
        for child in children:
            if isinstance(child, (Tag, str, int)) or child is None:  # (Raw is a str)
                flat.append(child)
            else:
                flat.extend(child)
        self.children = flat

    def render(self, out: list[str]) -> None:
        out.append(f"<{self.name}{self.attrs}>")
        for child in self.children:
            if child is None:
                continue
            if isinstance(child, Tag):
                child.render(out)
            elif type(child) is Raw:
                out.append(child)
            elif isinstance(child, bool):
                out.append("true" if child else "false")
            else:
                out.append(text(str(child)))
        out.append(f"</{self.name}>")


def document(root: Tag) -> bytes:
    root.attrs = root.attrs or f' xmlns="{NS}"'
    out = ['<?xml version="1.0" encoding="UTF-8"?>\n']
    root.render(out)
    return "".join(out).encode("utf-8")


def parse(body: bytes) -> Element:
    """Parse a request document; anything malformed or using entity tricks is MalformedXML."""
    try:
        root = SafeET.fromstring(body, forbid_dtd=True)
    except (SafeET.ParseError, DefusedXmlException, ValueError, LookupError) as exc:  # LookupError: bogus encoding
        raise S3Error("MalformedXML") from exc
    return root


def local(tag: str) -> str:
    """Element name without its namespace."""
    return tag.rsplit("}", 1)[-1]


def child_text(node: Element, name: str) -> str | None:
    for child in node:
        if local(child.tag) == name:
            return child.text or ""
    return None
