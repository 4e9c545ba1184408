"""msgspec's typed reading of JSON object lines, for the dirty path of :class:`pipelines.decode.codecs.JsonDecoder`.

A fetch that pyarrow's reader refuses holds a few bad lines among many good ones. Reading every line with a
msgspec decoder typed like the schema costs about 1 µs a line and names each bad line and its reason, so a
fetch with k bad lines costs one typed pass and one more pyarrow read of the rest, whatever k is.

The typed reading accepts what pyarrow's reader accepts, value for value (tests/unit/test_json_verdicts.py
compares the two on every JSON kind and the edge numbers): int64 columns take integers within int64 only,
float64 columns integers and decimals, string and binary columns strings, bool columns ``true``/``false``, and
every column ``null`` or no key; nested columns (struct, list, map) as :mod:`pipelines.decode.typed_json` says.
It accepts one thing pyarrow refuses, a column (or a struct member) given twice in one object; the pyarrow read
of the accepted lines then refuses, and the decoder judges those lines with pyarrow alone (its general path).
Map columns, which pyarrow's reader cannot read, are read by msgspec alone: its verdict is the only one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from pipelines.config.field_types import arrow_type, is_flat
from pipelines.config.pipeline import SchemaConfig
from pipelines.decode.plain_values import plain_lines
from pipelines.decode.typed_json import row_struct

__all__ = ["TYPE_MISMATCH", "LineVerdict", "TypedLines", "json_value", "undecodable_reason"]

TYPE_MISMATCH = "a value does not match the schema's column type"
_CHUNK_LINES = 64  # lines read by one typed call; a call that stops at a bad line reads the rest again

_FIELD_IN_PATH = re.compile(r"`\$\.([^`.\[]+)[`.\[]")  # the column, at the path's root
_ELEMENT_IN_PATH = re.compile(r"`\$\[(\d+)\]")
_MISFIT_PATH = re.compile(r" - at `\$(\.[^`]+)`$")  # where a value is that msgspec refuses

#: A bad line: its index in the lines given, error type (``undecodable`` or ``invalid``) and reason.
LineVerdict = tuple[int, str, str]


class TypedLines:
    """Typed decoders for a schema's columns: all of them, each on its own (for reasons in schema order), and
    any subset (to check only the columns a refusal named)."""

    def __init__(self, config: SchemaConfig) -> None:
        self._config = config
        self._names = tuple(config.fields)
        self._decoders: dict[tuple[str, ...], msgspec.json.Decoder[Any]] = {}

    def bad_lines(self, lines: pa.Array, first: int = 0, columns: Iterable[str] | None = None) -> list[LineVerdict]:
        """The ``lines`` from ``first`` on that the typed reading of ``columns`` (None: all) refuses, in order,
        with why (judged on all columns). ``lines``: binary, each a braced JSON text on one line followed by a
        newline (as pyarrow's reader reads them)."""
        if first >= len(lines):
            return []
        names = self._names if columns is None else tuple(columns)
        rest = lines.slice(first)
        positions = np.arange(first, len(lines))
        if len(names) == 1:  # the lines that plainly hold a value of the column's type need no typed reading
            suspects = np.flatnonzero(~plain_lines(rest, names[0], self._config.fields[names[0]]))
            if len(suspects) <= len(rest) // _CHUNK_LINES:  # likely all bad: each is judged alone, at once
                picked = _Lines(rest.take(pa.array(suspects, pa.int64())))
                judged = ((int(at), self.verdict(picked.line(index))) for index, at in enumerate(positions[suspects]))
                return [(at, *why) for at, why in judged if why is not None]
            if len(suspects) < len(rest):
                rest, positions = rest.take(pa.array(suspects, pa.int64())), positions[suspects]
        array = _Lines(rest)
        decoder = self._decoder(names)
        bad: list[LineVerdict] = []
        for start in range(0, len(array), _CHUNK_LINES):
            stop = min(start + _CHUNK_LINES, len(array))
            bad += [
                (int(positions[at]), kind, reason) for at, kind, reason in self._bad_in(array, start, stop, decoder)
            ]
        return bad

    def _bad_in(self, array: _Lines, start: int, stop: int, decoder: msgspec.json.Decoder[Any]) -> list[LineVerdict]:
        """Lines ``start`` to ``stop`` read together; a refusal names the line it stopped at (``$[i]``): that
        line is judged alone and the rest read again. Without a usable name, every line left is judged alone."""
        bad: list[LineVerdict] = []
        while start < stop:
            named: int | None = None
            try:  # a line holding two objects reads as two: the count shows it
                if len(array.decode(decoder, start, stop)) == stop - start:
                    return bad
            except msgspec.ValidationError as error:
                named = _named_element(str(error), stop - start)
            except (msgspec.DecodeError, RecursionError):
                pass
            why = self.verdict(array.line(start + named)) if named is not None else None
            if named is None or why is None:  # no element named, or a wrong name (a line of two objects shifts them)
                left = range(start, stop)
                return bad + [(index, *why) for index in left if (why := self.verdict(array.line(index)))]
            bad.append((start + named, *why))
            start += named + 1
        return bad

    def _decoder(self, columns: tuple[str, ...]) -> msgspec.json.Decoder[Any]:
        """A decoder typed like ``columns`` (made once): the schema's, one column's, or the columns before one."""
        if columns not in self._decoders:
            fields = {name: arrow_type(self._config.fields[name]) for name in columns}
            self._decoders[columns] = msgspec.json.Decoder(row_struct("Row", fields))
        return self._decoders[columns]

    def _reason(self, line: bytes, failing: str | None) -> str:
        """Why a line holding one JSON object does not fit the schema: the first column, in schema order, whose
        value does not fit its type (msgspec's detail is not part of it: it may quote the value). ``failing``:
        the column msgspec's error on the schema's typed reading named: a hint, checked with two reads (it fails
        alone, the columns before it fit; a name holding a backtick can make the hint another column's)."""
        if failing in self._names:
            before = self._names[: self._names.index(failing)]
            if not _fits(self._decoder((failing,)), line) and _fits(self._decoder(before), line):
                return self._mismatch(failing, line)
        for name in self._names:
            if not _fits(self._decoder((name,)), line):
                return self._mismatch(name, line)
        return TYPE_MISMATCH

    def verdict(self, line: bytes) -> tuple[str, str] | None:
        """The error type and reason if the typed reading refuses ``line``; None if it accepts it, or if the line
        is nested deeper than msgspec reads (pyarrow's reader, which reads it, judges it then)."""
        try:
            self._decoder(self._names).decode(line)
        except msgspec.ValidationError as error:
            undecodable = undecodable_reason(line)  # a syntax error after the first wrong value
            return ("undecodable", undecodable) if undecodable else ("invalid", self._reason(line, _named_field(error)))
        except msgspec.DecodeError:
            return "undecodable", undecodable_reason(line) or "undecodable JSON"
        except RecursionError:  # only without a schema nesting limit (pipelines.decode.input_limits)
            return None
        return None

    def _mismatch(self, column: str, line: bytes) -> str:
        """The reason naming ``column`` (whose value in ``line`` does not fit) and its type; for a nested column,
        also where in it the misfit is (``customer.address.zip``, ``items[3].qty``, ``attrs[...]``: msgspec names
        struct members and list positions, never map keys, so the path holds no event data)."""
        kind = self._config.fields[column]
        reason = f"{TYPE_MISMATCH}: {column!r} must be {kind}"
        if is_flat(kind):
            return reason
        try:
            self._decoder((column,)).decode(line)
        except msgspec.ValidationError as error:
            at = _MISFIT_PATH.search(str(error))
            if at and at.group(1) != f".{column}":
                return f"{reason} (at {at.group(1).removeprefix('.')})"
        return reason


class _Lines:
    """Lines back to back, each ending in a newline, in one buffer (read in place), so that any run of them
    reads as newline-delimited JSON (``decode_lines``)."""

    def __init__(self, terminated: pa.Array) -> None:
        offsets = np.frombuffer(terminated.buffers()[1], dtype=np.int32)
        self._offsets = offsets[terminated.offset : terminated.offset + len(terminated) + 1].tolist()
        data = terminated.buffers()[2]
        self._view = memoryview(data if data is not None else b"")

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def line(self, index: int) -> bytes:
        return bytes(self._view[self._offsets[index] : self._offsets[index + 1] - 1])

    def decode(self, decoder: msgspec.json.Decoder[Any], start: int, stop: int) -> list[Any]:
        return decoder.decode_lines(self._view[self._offsets[start] : self._offsets[stop]])


def json_value(payload: bytes) -> tuple[object, str | None]:
    """msgspec's reading of a JSON text, or why it cannot read it (the library's detail only as a suffix)."""
    try:
        return msgspec.json.decode(payload), None
    except (msgspec.DecodeError, UnicodeDecodeError) as error:
        return None, f"undecodable JSON: {error}"
    except RecursionError:  # deeper than msgspec goes (about 1,000 levels): only without a schema nesting limit
        return None, "undecodable JSON: nested too deeply to decode"


def undecodable_reason(payload: bytes) -> str | None:
    """Why msgspec cannot read ``payload`` as JSON (None if it can)."""
    return json_value(payload)[1]


def _named_element(message: str, count: int) -> int | None:
    """The array element a msgspec validation error names (``… - at `$[12].amount_cents```), if any."""
    named = _ELEMENT_IN_PATH.search(message)
    return int(named.group(1)) if named and int(named.group(1)) < count else None


def _named_field(error: msgspec.ValidationError) -> str | None:
    """The top-level field a msgspec validation error names (``… - at `$.amount_cents``` or, in a nested column,
    ``… - at `$.customer.address.zip```), if any."""
    named = _FIELD_IN_PATH.search(str(error))
    return named.group(1) if named else None


def _fits(decoder: msgspec.json.Decoder[Any], line: bytes) -> bool:
    try:
        decoder.decode(line)
    except msgspec.ValidationError:
        return False
    return True
