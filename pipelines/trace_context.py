"""W3C trace context on record batches, column-wise (ARCHITECTURE.md section 6).

Every batch carries ``_traceparent`` (``00-<trace id>-<span id>-<flags>``, may be null). Events that arrive
without one get a new context at the source when they are sampled; the sampling decision is a pure function
of the trace id (OpenTelemetry's TraceIdRatioBased), so every process decides the same for a trace.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["TraceParent", "assign_new_contexts", "format_traceparent", "parse_traceparent", "sampled_contexts"]

_TRACE_ID_BYTES = 16
_SPAN_ID_BYTES = 8
_ID_LIMIT = 1 << 64


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
