"""Which JSON lines plainly hold a value of a column's type: a columnar pre-check for the typed reading.

When pyarrow's reader refuses a fetch over one column, msgspec's typed reading of that column finds the bad
lines (:class:`pipelines.decode.json_verdicts.TypedLines`) at about 0.7 µs a line. :func:`plain_lines` clears, in a few
array passes over the fetch's bytes, the lines whose value for the column is plainly of its type, so only the
others are read typed. A line is plain when:

- it holds no backslash, so every ``"`` in it delimits a string and no key is written with escapes;
- the column's name occurs in it at most once, and only as the key ``"name":`` (no space before the colon);
- that key's value (after one space, if there is one, as Python's ``json.dumps`` writes) is a literal of the
  column's type followed by ``,`` or ``}``: ``null``; for int64 and timestamp_ms an integer of at most 18
  digits (within int64); for float64 such an integer, with a fraction of digits or without; for bool ``true``
  or ``false``; for string and binary a string (its bytes are UTF-8: the decoder checked the fetch before);
  for a nested type (struct, list, map) only ``null``: its other values are always read typed.

In a line that is one JSON object, such a key is a real key (a string followed by a colon), and no other key
of that name is in it, at any depth. So the top-level value for the column is that one, or the column is absent
(null): either way the typed reading of the column accepts it. (A line broken elsewhere may be cleared too.) A
line that is not plain may still be fine: it is simply read typed. The pre-check decides nothing on its own:
pyarrow's reading of the lines kept has the last word, and a line it refuses is judged on all columns then.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from pipelines.config.field_types import FieldType
from pipelines.decode.scratch import scratch

__all__ = ["plain_lines"]

_Bytes = npt.NDArray[np.uint8]
_Mask = npt.NDArray[np.bool_]
_Ints = npt.NDArray[np.int64]

_WINDOW = 24  # the bytes of a value looked at: the longest plain number and its terminator fit
_MAX_DIGITS = 18  # any integer of 18 digits is within int64
_QUOTE, _COLON, _BACKSLASH, _MINUS, _DOT, _SPACE = (ord(c) for c in '":\\-. ')
_COMMA, _BRACE, _ZERO = (ord(c) for c in ",}0")
_NUMBERS: set[FieldType] = {"int64", "timestamp_ms", "float64"}  # a nested type is none of these


def plain_lines(lines: pa.Array, column: str, kind: str) -> _Mask:
    """Per line of ``lines`` (binary; each a JSON object on one line followed by a newline), whether its value for
    ``column`` is plainly of type ``kind`` (a ``schema.fields`` type; see the module docstring). False for every
    line where the name is not written as itself in JSON (it holds a quote, a backslash or a control character)."""
    count = len(lines)
    name = column.encode()
    if count == 0 or not name or any(byte in (_QUOTE, _BACKSLASH) or byte < 0x20 for byte in name):
        return np.zeros(count, dtype=bool)
    starts, data = _values(lines)
    if len(data) < _WINDOW + len(name) + 3:
        return np.zeros(count, dtype=bool)  # too short to look around in: the typed reading is quick here
    mask, other = scratch("plain mask", len(data), np.bool_), scratch("plain other", len(data), np.bool_)
    plain = np.ones(count, dtype=bool)
    if np.count_nonzero(np.equal(data, _BACKSLASH, out=mask)):
        plain[_lines_of(starts, np.flatnonzero(mask))] = False
    found = _occurrences(data, name, mask, other)
    line_of = _lines_of(starts, found)
    occurrences = np.bincount(line_of, minlength=count)
    plain &= occurrences <= 1
    once = (occurrences[line_of] == 1) & plain[line_of]
    keys, key_lines = found[once], line_of[once]
    room = (keys >= 1) & (keys + len(name) + 3 + _WINDOW <= len(data))  # a look around it stays in the buffer
    plain[key_lines[~room]] = False
    keys, key_lines = keys[room], key_lines[room]
    colons = keys + len(name) + 1
    key = (data[keys - 1] == _QUOTE) & (data[colons - 1] == _QUOTE) & (data[colons] == _COLON)
    plain[key_lines[~key]] = False
    values = colons[key] + 1
    values += data[values] == _SPACE  # one space after the colon
    plain[key_lines[key][~_plain_literals(_windows(data, values), kind)]] = False
    return plain


def _values(lines: pa.Array) -> tuple[_Ints, _Bytes]:
    """Where each line starts (relative to the first, then where the last ends), and their bytes back to back,
    in place."""
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset : lines.offset + len(lines) + 1]
    starts: _Ints = offsets.astype(np.int64) - offsets[0]
    data = np.frombuffer(lines.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    return starts, data


def _lines_of(starts: _Ints, positions: _Ints) -> _Ints:
    """The line of each of ``positions``."""
    lines: _Ints = np.searchsorted(starts, positions, side="right") - 1
    return lines


def _words(data: _Bytes) -> npt.NDArray[np.uint64]:
    """The 8 bytes from each position of ``data`` on, as a little-endian integer (a view: they overlap)."""
    words: npt.NDArray[np.uint64] = np.ndarray(shape=(len(data) - 7,), dtype="<u8", buffer=data, strides=(1,))
    return words


def _occurrences(data: _Bytes, pattern: bytes, mask: _Mask, other: _Mask) -> _Ints:
    """The positions in ``data`` where ``pattern`` starts. Its first two bytes select the candidates in
    whole-array passes (in the scratch buffers ``mask`` and ``other``); its 8-byte pieces (or its bytes one by
    one, if shorter) narrow them."""
    size = len(data) - 1
    np.equal(data[:-1], pattern[0], out=mask[:size])
    if len(pattern) > 1:
        np.equal(data[1:], pattern[1], out=other[:size])
        np.logical_and(mask[:size], other[:size], out=mask[:size])
    candidates = np.flatnonzero(mask[:size])
    candidates = candidates[candidates + len(pattern) <= len(data)]  # where it fits (the 8-byte reads too)
    if len(pattern) < 8:
        for index in range(2, len(pattern)):
            candidates = candidates[data[candidates + index] == pattern[index]]
        return candidates
    words = _words(data)
    for at in sorted({*range(0, len(pattern) - 7, 8), len(pattern) - 8}):  # 8-byte pieces covering the pattern
        candidates = candidates[words[candidates + at] == np.uint64(int.from_bytes(pattern[at : at + 8], "little"))]
    return candidates


def _windows(data: _Bytes, positions: _Ints) -> _Bytes:
    """The ``_WINDOW`` bytes from each of ``positions`` on, one row each (gathered 8 bytes at a time)."""
    words = _words(data)
    gathered = np.stack([words[positions + at] for at in range(0, _WINDOW, 8)], axis=1)
    rows: _Bytes = gathered.view(np.uint8).reshape(len(positions), _WINDOW)
    return rows


def _plain_literals(window: _Bytes, kind: str) -> _Mask:
    """Whether each row of ``window`` (the bytes from a value's start) starts with a plain literal of ``kind``
    followed by ``,`` or ``}``."""
    plain: _Mask = _word(window, b"null")
    if kind == "bool":
        return plain | _word(window, b"true") | _word(window, b"false")
    if kind in ("string", "binary"):
        strings: _Mask = window[:, 0] == _QUOTE
        return plain | strings
    if kind in _NUMBERS:
        return plain | _plain_numbers(window, fraction=kind == "float64")
    return plain


def _word(window: _Bytes, word: bytes) -> _Mask:
    """Rows starting with ``word`` (at most 7 bytes) and a terminator: their first 8 bytes compared as one
    integer, the bytes past the word masked off."""
    head = window.view("<u8")[:, 0] & np.uint64((1 << (8 * len(word))) - 1)
    matched: _Mask = (head == np.uint64(int.from_bytes(word, "little"))) & _ends_value(window[:, len(word)])
    return matched


def _ends_value(byte: _Bytes) -> _Mask:
    ends: _Mask = (byte == _COMMA) | (byte == _BRACE)
    return ends


def _plain_numbers(window: _Bytes, fraction: bool) -> _Mask:
    """``-?(0|[1-9][0-9]*)`` of at most 18 digits, with ``.[0-9]+`` after it if ``fraction``, then a
    terminator, all within the window."""
    rows = np.arange(len(window))
    digit = (window - _ZERO) < 10  # bytes below "0" wrap around
    negative = window[:, 0] == _MINUS
    first = negative.astype(np.int64)
    digit[:, 0] |= negative  # so that the digits run from column 0 either way
    end = np.argmin(digit, axis=1)  # the first byte that is not a digit (0 if every byte is one: not plain)
    digits = end - first
    leading = np.where(negative, window[:, 1], window[:, 0])
    integer: _Mask = (digits >= 1) & (digits <= _MAX_DIGITS) & ((leading != _ZERO) | (digits == 1))
    terminator = window[rows, end]
    whole: _Mask = integer & _ends_value(terminator)
    if not fraction:
        return whole
    dotted = integer & (terminator == _DOT)
    digit[rows[dotted], end[dotted]] = True  # the digits now run on through the fraction
    fraction_end = np.argmin(digit, axis=1)
    fractional: _Mask = dotted & (fraction_end > end + 1) & _ends_value(window[rows, fraction_end])
    return whole | fractional
