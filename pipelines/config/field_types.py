"""The column types of ``schema.fields``: the flat names, and nested types written as text.

Grammar (whitespace between tokens is free)::

    type   := flat | "list<" type ">" | "map<" key "," type ">" | "struct<" member ("," member)* ">"
    flat   := string | int64 | float64 | bool | timestamp_ms | binary
    key    := string | int64
    member := name ":" type          (name: a Python identifier, so expressions reach it as a.b)

e.g. ``struct<street: string, zip: string>``, ``list<struct<sku: string, qty: int64>>``,
``map<string, float64>``. :func:`canonical_field_type` checks a text and writes it one way (one space after each
comma and colon), so a config holds each type under one spelling; :func:`arrow_type` gives its Arrow type. Every
value of a nested type may be null, at every level (a struct, a member, a list element, a map value); map keys
may not. A type is nested at most :data:`MAX_TYPE_DEPTH` levels deep.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, NoReturn, get_args

import pyarrow as pa

__all__ = ["MAX_TYPE_DEPTH", "FieldType", "arrow_type", "canonical_field_type", "is_flat"]

#: The flat column types (their names are what ``schema.fields`` held before nested types).
FieldType = Literal["string", "int64", "float64", "bool", "timestamp_ms", "binary"]
MAX_TYPE_DEPTH = 32  # far deeper than any event; bounds the parser's recursion

_FLAT: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int64": pa.int64(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "timestamp_ms": pa.int64(),  # epoch milliseconds, as the event-time column holds them
    "binary": pa.binary(),
}
_MAP_KEYS = ("string", "int64")
_SYMBOLS = ("<", ">", ",", ":")
_TOKEN = re.compile(r"\s*(?:([<>,:])|([^\s<>,:]+))")
_EXAMPLES = "e.g. struct<street: string, zip: string>, list<int64>, map<string, float64>"


def is_flat(text: str) -> bool:
    """Whether ``text`` is one of the flat type names (:data:`FieldType`)."""
    return text in get_args(FieldType)


def canonical_field_type(text: str) -> str:
    """``text`` written the one canonical way; raise ValueError naming what is wrong and how to write it."""
    return _Parser(text).parse().text


@lru_cache(maxsize=1024)
def arrow_type(text: str) -> pa.DataType:
    """The Arrow type of a field type (``timestamp_ms`` is int64 epoch ms); raise ValueError if it is not one."""
    return _Parser(text).parse().arrow


@dataclass(frozen=True)
class _Parsed:
    text: str
    arrow: pa.DataType


class _Parser:
    """Recursive descent over the tokens of one type text (see the module docstring)."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._tokens = _tokens(text)
        self._at = 0

    def parse(self) -> _Parsed:
        if not self._tokens:
            self._fail("the type is empty")
        parsed = self._type(depth=1)
        if self._at < len(self._tokens):
            self._fail(f"unexpected {self._tokens[self._at]!r} after the type {parsed.text!r}")
        return parsed

    def _type(self, depth: int) -> _Parsed:
        if depth > MAX_TYPE_DEPTH:
            self._fail(f"nested more than {MAX_TYPE_DEPTH} levels deep")
        name = self._next("a type name")
        if name in _FLAT:
            return _Parsed(name, _FLAT[name])
        if name not in ("list", "map", "struct"):
            self._fail(f"unknown type {name!r}; types are {', '.join(_FLAT)}, list<…>, map<…, …>, struct<…>")
        self._expect("<", f"{name} takes its types in <>")
        if name == "list":
            parsed = self._list(depth)
        elif name == "map":
            parsed = self._map(depth)
        else:
            parsed = self._struct(depth)
        self._expect(">", f"{name}<…> must end with >")
        return parsed

    def _list(self, depth: int) -> _Parsed:
        item = self._type(depth + 1)
        return _Parsed(f"list<{item.text}>", pa.list_(item.arrow))

    def _map(self, depth: int) -> _Parsed:
        key = self._next("a map key type")
        if key not in _MAP_KEYS:
            self._fail(f"map keys are string or int64, not {key!r}")
        self._expect(",", "write map<key, value>")
        value = self._type(depth + 1)
        return _Parsed(f"map<{key}, {value.text}>", pa.map_(_FLAT[key], value.arrow))

    def _struct(self, depth: int) -> _Parsed:
        members: list[tuple[str, _Parsed]] = []
        while True:
            name = self._next("a member name")
            if not name.isidentifier():
                self._fail(f"struct member {name!r} is not a name (letters, digits, _; not starting with a digit)")
            if any(name == known for known, _ in members):
                self._fail(f"struct member {name!r} is given twice")
            self._expect(":", f"write the member as {name}: <type>")
            members.append((name, self._type(depth + 1)))
            if self._peek() != ",":
                break
            self._at += 1
        text = ", ".join(f"{name}: {member.text}" for name, member in members)
        return _Parsed(f"struct<{text}>", pa.struct([pa.field(name, member.arrow) for name, member in members]))

    def _peek(self) -> str | None:
        return self._tokens[self._at] if self._at < len(self._tokens) else None

    def _next(self, what: str) -> str:
        token = self._peek()
        if token is None or token in _SYMBOLS:
            self._fail(f"expected {what}, found {'the end' if token is None else repr(token)}")
        self._at += 1
        return token

    def _expect(self, symbol: str, hint: str) -> None:
        token = self._peek()
        if token != symbol:
            self._fail(f"expected {symbol!r}, found {'the end' if token is None else repr(token)} ({hint})")
        self._at += 1

    def _fail(self, problem: str) -> NoReturn:
        raise ValueError(f"field type {self._text!r}: {problem}; {_EXAMPLES}")


def _tokens(text: str) -> list[str]:
    tokens: list[str] = []
    position = 0
    while position < len(text):
        matched = _TOKEN.match(text, position)
        if matched is None:  # only whitespace is left
            break
        tokens.append(matched.group(1) or matched.group(2))
        position = matched.end()
    return tokens
