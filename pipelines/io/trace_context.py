"""W3C trace context on record batches, column-wise (ARCHITECTURE.md section 6).

Every batch carries ``_traceparent`` (``00-<trace id>-<span id>-<flags>``, may be null). Events that arrive
without one get a new context at the source when they are sampled; the sampling decision is a pure function
of the trace id (OpenTelemetry's TraceIdRatioBased), so every process decides the same for a trace.

A traceparent that arrives from outside is validated before it is used or copied (:func:`is_valid_traceparent`,
:func:`valid_traceparents`), by the W3C rules: lowercase hex, trace and parent ids not all zeros, version ``ff``
refused, and a version other than ``00`` read as ``00`` when it has at least those 55 characters and a ``-``
after them (later versions may append fields). The extra fields are restricted to visible ASCII, as the value
is written back into record headers. No whitespace is trimmed: a Kafka header value is not an HTTP field.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "TraceParent",
    "assign_new_contexts",
    "format_traceparent",
    "is_valid_traceparent",
    "parse_traceparent",
    "sampled_contexts",
    "valid_traceparents",
]

_TRACE_ID_BYTES = 16
_SPAN_ID_BYTES = 8
_ID_LIMIT = 1 << 64
# One spelling for Python's re and Arrow's RE2. Version 00 is exactly 55 characters; another version (not ff)
# may go on after a "-".
_IDS = "-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}"
_WELL_FORMED = rf"^(?:00{_IDS}|(?:0[1-9a-f]|[1-9a-e][0-9a-f]|f[0-9a-e]){_IDS}(?:-[\x21-\x7e]*)?)$"
_WELL_FORMED_RE = re.compile(_WELL_FORMED)
_ZERO_ID_RE = re.compile(r"^(?:.{3}0{32}|.{36}0{16})")  # an all-zero trace id or parent id, in a well-formed value
_LENGTH = 55  # of a version 00 traceparent, and the least any version has
_DASH_COLUMNS = [2, 35, 52]
_TRACE_ID_COLUMNS = slice(3, 35)
_SPAN_ID_COLUMNS = slice(36, 52)

_Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class TraceParent:
    trace_id: int
    span_id: int
    sampled: bool


def parse_traceparent(value: str | None) -> TraceParent | None:
    """A W3C ``traceparent`` header value, or None when it is absent or malformed (never raises)."""
    if not value:
        return None
    parts = value.strip().split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) != 2:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    if trace_id == 0 or span_id == 0 or parts[0] == "ff":
        return None
    return TraceParent(trace_id, span_id, bool(flags & 1))


def is_valid_traceparent(value: str) -> bool:
    """Whether ``value`` is a traceparent to keep (see the module docstring)."""
    return _WELL_FORMED_RE.match(value) is not None and _ZERO_ID_RE.match(value) is None


def valid_traceparents(traceparents: pa.Array) -> tuple[pa.Array, int]:
    """The (string) column with every value :func:`is_valid_traceparent` refuses replaced by null, and how many
    were. Columnar; the column itself when none is refused."""
    if traceparents.null_count == len(traceparents):
        return traceparents, 0
    refused = _refused(traceparents)
    count = int(np.count_nonzero(refused))
    if not count:
        return traceparents, 0
    return pc.if_else(pa.array(refused), pa.scalar(None, pa.string()), traceparents), count


def _refused(traceparents: pa.Array) -> _Mask:
    """Per value, whether :func:`is_valid_traceparent` refuses it (a null: no). Values of version 00's length,
    nearly all of them, are checked together, column by column; a shorter one is refused unread; only a longer
    one (a later version's extra fields, or garbage) is matched on its own. Arrow's regex kernel would cost about
    0.25 us per value, more than the decoder's whole parse of a small event."""
    lengths = _byte_lengths(traceparents)
    fixed = lengths == _LENGTH
    if not traceparents.null_count and fixed.all():  # the usual batch
        return ~_valid_rows(_rows(traceparents))
    present: _Mask = pc.is_valid(traceparents).to_numpy(zero_copy_only=False)
    fixed &= present
    refused: _Mask = present & (lengths < _LENGTH)
    if fixed.any():
        refused[fixed] = ~_valid_rows(_rows(traceparents.filter(pa.array(fixed))))
    for index in np.flatnonzero(present & (lengths > _LENGTH)).tolist():
        refused[index] = not is_valid_traceparent(traceparents[index].as_py())
    return refused


def _byte_lengths(values: pa.Array) -> npt.NDArray[np.int32]:
    """Each string's length in bytes, from the offsets (a null's may be anything: mask it)."""
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int32)[values.offset : values.offset + len(values) + 1]
    return np.diff(offsets)


def _rows(values: pa.Array) -> npt.NDArray[np.uint8]:
    """The bytes of string values that are all ``_LENGTH`` bytes long and not null, one row each, not copied."""
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int32)[values.offset : values.offset + len(values) + 1]
    data = np.frombuffer(values.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    return data.reshape(len(values), _LENGTH)


def _valid_rows(rows: npt.NDArray[np.uint8]) -> _Mask:
    """Per row of ``_LENGTH`` bytes, :func:`is_valid_traceparent`'s verdict: lowercase hex digits around three
    dashes, a version other than ``ff``, and ids not all zeros. The usual batch, all well formed, is settled by
    a count over all the bytes: numpy pays about 50 ns a row to reduce row by row."""
    hex_digits = _lowercase_hex(rows)
    dashes = np.logical_and.reduce([rows[:, column] == ord("-") for column in _DASH_COLUMNS])
    if dashes.all() and np.count_nonzero(hex_digits) == rows.size - len(_DASH_COLUMNS) * len(rows):
        well_formed = dashes
    else:  # a dash is not a hex digit: a row is well formed with its dashes and as many digits as the rest
        well_formed = dashes & (np.count_nonzero(hex_digits, axis=1) == _LENGTH - len(_DASH_COLUMNS))
    version_ff = (rows[:, 0] == ord("f")) & (rows[:, 1] == ord("f"))
    zero_id = _all_zeros(rows[:, _TRACE_ID_COLUMNS]) | _all_zeros(rows[:, _SPAN_ID_COLUMNS])
    valid: _Mask = well_formed & ~(version_ff | zero_id)
    return valid


def _all_zeros(ids: npt.NDArray[np.uint8]) -> _Mask:
    """Per row of hex digits, whether all are ``0``; only rows whose first and last digits are (about 1 in 256)
    are read whole."""
    maybe = np.flatnonzero((ids[:, 0] == ord("0")) & (ids[:, -1] == ord("0")))
    zeros = np.zeros(len(ids), dtype=bool)
    if len(maybe):
        zeros[maybe] = (ids[maybe] == ord("0")).all(axis=1)
    return zeros


def _lowercase_hex(rows: npt.NDArray[np.uint8]) -> _Mask:
    # unsigned bytes wrap below "0" and "a", so one comparison bounds each range; written in place, as each
    # large temporary alive at once can cost page faults (glibc returns freed memory to the system)
    digits = np.subtract(rows, ord("0"), dtype=np.uint8)
    is_digit = np.less(digits, 10, out=digits.view(np.bool_))
    letters = np.subtract(rows, ord("a"), dtype=np.uint8)
    is_letter = np.less(letters, 6, out=letters.view(np.bool_))
    hex_digit: _Mask = np.logical_or(is_digit, is_letter, out=is_digit)
    return hex_digit


def format_traceparent(trace_id: int, span_id: int, sampled: bool) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


def _hex_column(raw: bytes, width: int, count: int) -> pa.Array:
    """``count`` strings of ``2 * width`` hex digits from ``raw`` (``count * width`` bytes), no Python loop."""
    digits = raw.hex().encode("ascii")
    offsets = np.arange(0, (count + 1) * 2 * width, 2 * width, dtype=np.int32)
    return pa.StringArray.from_buffers(count, pa.py_buffer(offsets.tobytes()), pa.py_buffer(digits))


def assign_new_contexts(traceparents: pa.Array, sampling_ratio: float) -> pa.Array:
    """Give sampled events without a context a new one (flags 01); others keep theirs (or null).

    An event is sampled when its new trace id's lower 64 bits fall below ``ratio * 2**64``, OpenTelemetry's
    TraceIdRatioBased rule, so an exporter-side sampler agrees with the decision made here.
    """
    missing = pc.is_null(traceparents)
    count = len(traceparents)
    if sampling_ratio <= 0 or count == 0 or not pc.any(missing).as_py():
        return traceparents
    raw_ids = os.urandom(count * (_TRACE_ID_BYTES + _SPAN_ID_BYTES))
    trace_bytes = raw_ids[: count * _TRACE_ID_BYTES]
    low_bits = np.frombuffer(trace_bytes, dtype=">u8").reshape(count, 2)[:, 1]
    chosen = low_bits < np.uint64(min(int(sampling_ratio * _ID_LIMIT), _ID_LIMIT - 1))
    trace_ids = _hex_column(trace_bytes, _TRACE_ID_BYTES, count)
    span_ids = _hex_column(raw_ids[count * _TRACE_ID_BYTES :], _SPAN_ID_BYTES, count)
    fresh = pc.binary_join_element_wise("00", trace_ids, span_ids, "01", "-")
    take_fresh = pc.and_(missing, pa.array(chosen))
    return pc.if_else(take_fresh, fresh, traceparents)


def sampled_contexts(traceparents: pa.Array, limit: int) -> list[TraceParent]:
    """The first ``limit`` distinct sampled contexts of a column, in row order."""
    found: list[TraceParent] = []
    seen: set[tuple[int, int]] = set()
    candidates = pc.drop_null(traceparents)
    sampled = candidates.filter(pc.ends_with(candidates, "-01")) if len(candidates) else candidates
    for value in sampled.slice(0, limit * 4).to_pylist():
        parsed = parse_traceparent(value)
        if parsed is not None and (parsed.trace_id, parsed.span_id) not in seen:
            seen.add((parsed.trace_id, parsed.span_id))
            found.append(parsed)
            if len(found) == limit:
                break
    return found
