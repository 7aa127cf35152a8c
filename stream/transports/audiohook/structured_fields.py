"""RFC 8941 structured fields, the part HTTP message signatures use: a Dictionary whose
members are Items or Inner Lists with Parameters, and the exact serialization of an Inner
List (the ``@signature-params`` line of the signature base is re-serialized from what was
parsed, so the signer must have serialized it canonically: RFC 9421, section 2.3).

Decimals are not read (no signature parameter is one); anything else malformed raises
``ValueError`` saying where.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

BareItem = int | str | bytes | bool
Params = list[tuple[str, BareItem]]

_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~:/0-9A-Za-z]*")
_INTEGER = re.compile(r"-?[0-9]{1,15}")
_BYTES = re.compile(r":([A-Za-z0-9+/=]*):")


class Token(str):
    """A bare token (``hmac-sha256`` unquoted), serialized without quotes."""


@dataclass(frozen=True)
class Item:
    value: BareItem
    params: Params = field(default_factory=list)


@dataclass(frozen=True)
class InnerList:
    items: list[Item]
    params: Params = field(default_factory=list)


Member = Item | InnerList


class _Parser:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def fail(self, what: str) -> ValueError:
        return ValueError(f"{what} at character {self.i}")

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def spaces(self, chars: str = " ") -> None:
        while self.peek() and self.peek() in chars:
            self.i += 1

    def match(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        m = pattern.match(self.s, self.i)
        if m is not None:
            self.i = m.end()
        return m

    def key(self) -> str:
        m = self.match(_KEY)
        if m is None:
            raise self.fail("a key was expected")
        return m[0]

    def bare(self) -> BareItem:
        c = self.peek()
        if c == '"':
            return self.string()
        if c == ":":
            m = self.match(_BYTES)
            if m is None:
                raise self.fail("an unterminated byte sequence")
            try:
                return base64.b64decode(m[1], validate=True)
            except (binascii.Error, ValueError):
                raise self.fail("a byte sequence that is not base64") from None
        if c == "?":
            self.i += 1
            if self.peek() not in ("0", "1"):
                raise self.fail("a boolean must be ?0 or ?1")
            self.i += 1
            return self.s[self.i - 1] == "1"
        if c == "-" or c.isdigit():
            m = self.match(_INTEGER)
            if m is None or self.peek() == "." or self.peek().isdigit():
                raise self.fail("an integer of at most 15 digits was expected")
            return int(m[0])
        m = self.match(_TOKEN)
        if m is None:
            raise self.fail("an item was expected")
        return Token(m[0])

    def string(self) -> str:
        self.i += 1  # the opening quote
        out: list[str] = []
        while True:
            c = self.peek()
            if not c:
                raise self.fail("an unterminated string")
            self.i += 1
            if c == "\\":
                nxt = self.peek()
                if nxt not in ('"', "\\"):
                    raise self.fail("a string escapes only quote and backslash")
                out.append(nxt)
                self.i += 1
            elif c == '"':
                return "".join(out)
            elif not " " <= c <= "~":
                raise self.fail("a string holds printable ASCII only")
            else:
                out.append(c)

    def params(self) -> Params:
        out: Params = []
        while self.peek() == ";":
            self.i += 1
            self.spaces()
            name = self.key()
            value: BareItem = True
            if self.peek() == "=":
                self.i += 1
                value = self.bare()
            out = [(k, v) for k, v in out if k != name] + [(name, value)]
        return out

    def item(self) -> Item:
        return Item(self.bare(), self.params())

    def member(self) -> Member:
        if self.peek() != "(":
            return self.item()
        self.i += 1
        items: list[Item] = []
        while True:
            self.spaces()
            if self.peek() == ")":
                self.i += 1
                return InnerList(items, self.params())
            items.append(self.item())
            if self.peek() not in (" ", ")"):
                raise self.fail("an inner list's items are separated by spaces")

    def dictionary(self) -> dict[str, Member]:
        out: dict[str, Member] = {}
        self.spaces()
        while self.i < len(self.s):
            name = self.key()
            if self.peek() == "=":
                self.i += 1
                out[name] = self.member()
            else:
                out[name] = Item(True, self.params())
            self.spaces(" \t")
            if self.i >= len(self.s):
                break
            if self.peek() != ",":
                raise self.fail("dictionary members are separated by commas")
            self.i += 1
            self.spaces(" \t")
            if self.i >= len(self.s):
                raise self.fail("a trailing comma")
        return out


def parse_dictionary(text: str) -> dict[str, Member]:
    """An RFC 8941 Dictionary (``sig1=("@authority" ...);created=1``); ``ValueError``
    when it is not one."""
    parser = _Parser(text.strip(" \t"))
    return parser.dictionary()


def serialize_bare(value: BareItem) -> str:
    if isinstance(value, bool):
        return "?1" if value else "?0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes):
        return ":" + base64.b64encode(value).decode() + ":"
    if isinstance(value, Token):
        return str(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def serialize_params(params: Params) -> str:
    return "".join(f";{k}" if v is True else f";{k}={serialize_bare(v)}" for k, v in params)


def serialize_item(item: Item) -> str:
    return serialize_bare(item.value) + serialize_params(item.params)


def serialize_inner_list(inner: InnerList) -> str:
    return (
        "("
        + " ".join(serialize_item(i) for i in inner.items)
        + ")"
        + serialize_params(inner.params)
    )
