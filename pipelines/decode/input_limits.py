"""Limits on input: a record that would stop, poison or slow a pipeline becomes a dead letter with a reason.

Every limit is decided per record, so a record's verdict never depends on the other records of its fetch (a
refusal is the source's verdict on the record's own Kafka record batch), and columnar, so a batch within the
limits costs a few array passes and no Python per record:

- before decoding, for every decoder (:func:`screen_input`): records the source could not read (a compressed
  batch over ``schema.max_decompressed_batch_bytes``, or corrupt: see :mod:`actors.kafka.batch_guard`); the
  payload's size, read from the array's offsets
  (so a huge record is never parsed); the count and size of the record's headers; and for JSON the nesting
  depth. A record nests at most as deep as it has ``{`` and ``[`` bytes. A bound on that count (the densest
  64-byte block times the blocks a record spans) clears the usual fetch of small events in a few whole-array
  passes; otherwise the brackets are counted per record, and only the records with more than the limit get
  their exact depth (:func:`nesting_depths`, columnar too). These dead letters have error type ``limit``; a
  record over several limits gets the reason of the first, in that order.
- after decoding, from :func:`pipelines.decode.codecs.validated` (:func:`event_time_rejections`): an event time too
  far ahead of or behind the record's reference time. The reference is the record's own (Kafka) timestamp,
  which replays the same, else the reading clock the caller passes in as ``now_ms``. These dead letters have
  error type ``timestamp``.

Screening also replaces malformed ``traceparent`` values by null before anything uses or copies them (the
rules are in :mod:`pipelines.io.trace_context`), and counts them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config.pipeline import SchemaConfig
from pipelines.io.records import RawBatch, dead_letters
from pipelines.io.trace_context import valid_traceparents

__all__ = ["LIMIT", "TIMESTAMP", "Rejections", "Screening", "event_time_rejections", "nesting_depths", "screen_input"]

LIMIT = "limit"
TIMESTAMP = "timestamp"

_CASE_BIT = 0x20  # "[" and "]" are "{" and "}" with this bit clear: one comparison finds both kinds
_OPENING = ord("{")
_CLOSING = ord("}")
_QUOTE = ord('"')
_BACKSLASH = ord("\\")
_BLOCK_BYTES = 64  # 8 times a power of 2, below 256: a block's count is summed into one byte
_BYTE_SUM = np.uint64(0x0101010101010101)

_Ints = npt.NDArray[np.int64]
_Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Screening:
    """What :func:`screen_input` made of a fetch: the records within the limits, in offset order and with
    valid traceparents (``within``); ``limit`` dead letters for the others (no batch, or one in offset order);
    and how many traceparents were malformed and replaced by null, the source's own count included."""

    within: RawBatch
    dead_letters: list[pa.RecordBatch]
    dropped_traceparents: int


@dataclass(frozen=True)
class Rejections:
    """Rows of a batch set aside (``indices``, with ``reasons`` in the same order) and the rows kept
    (``kept``), both as int64 positions in increasing order."""

    indices: pa.Array
    reasons: pa.Array
    kept: pa.Array


def screen_input(config: SchemaConfig, raw: RawBatch, json_nesting: bool) -> Screening:
    """Split ``raw`` by the size, header and (with ``json_nesting``) nesting limits of ``config``, before any
    decoding. Never raises for a record; returns ``raw`` itself as ``within`` when every record is within."""
    dropped = 0
    if not raw.traceparents_checked:  # the Kafka edge validated its column already: not twice per fetch
        traceparents, dropped = valid_traceparents(raw.traceparents)
        if dropped:
            raw = replace(raw, traceparents=traceparents)
    verdicts = _Verdicts(len(raw))
    _check_refusals(raw, verdicts)
    payloads = _binary(raw.payloads)
    starts = _value_starts(payloads)
    sizes = _sizes(payloads, starts)
    if config.max_record_bytes is not None:
        _check_size(config.max_record_bytes, sizes, verdicts)
    _check_headers(config, raw, verdicts)
    if json_nesting and config.max_nesting_depth is not None:
        _check_nesting(config.max_nesting_depth, payloads, starts, sizes, verdicts)
    dropped += raw.dropped_traceparents
    if not verdicts.failed.any():
        return Screening(raw, [], dropped)
    failing = np.flatnonzero(verdicts.failed)
    reasons = pa.array([verdicts.reasons[index] for index in failing.tolist()], pa.string())
    rejected = dead_letters(raw, pa.array(failing, pa.int64()), reasons, LIMIT)
    return Screening(raw.take(pa.array(np.flatnonzero(~verdicts.failed), pa.int64())), [rejected], dropped)


class _Verdicts:
    """The first limit each record is over, as its reason. Limits are checked in order; a record already over
    one (``failed``) keeps that reason, and is never scanned for its depth."""

    def __init__(self, count: int) -> None:
        self.failed: _Mask = np.zeros(count, dtype=bool)
        self.reasons: dict[int, str] = {}

    def over(self, failing: _Mask, reason_of: Callable[[int], str]) -> None:
        """Mark the records where ``failing`` holds (and no earlier limit failed) with ``reason_of(index)``."""
        newly = failing & ~self.failed
        if not newly.any():
            return
        for index in np.flatnonzero(newly).tolist():
            self.reasons[index] = reason_of(index)
        self.failed |= newly


def _check_refusals(raw: RawBatch, verdicts: _Verdicts) -> None:
    """Records the source could not read (their reason is the source's)."""
    if raw.refusals is None or raw.refusals.null_count == len(raw.refusals):
        return
    reasons = raw.refusals
    verdicts.over(pc.is_valid(reasons).to_numpy(zero_copy_only=False), lambda index: str(reasons[index].as_py()))


def _check_size(limit: int, sizes: _Ints, verdicts: _Verdicts) -> None:
    if not len(sizes) or sizes.max() <= limit:
        return
    verdicts.over(
        sizes > limit, lambda index: f"record is {sizes[index]:,} bytes, over schema.max_record_bytes ({limit:,})"
    )


def _check_headers(config: SchemaConfig, raw: RawBatch, verdicts: _Verdicts) -> None:
    if raw.header_counts is not None and _exceeds(raw.header_counts, config.max_header_count):
        counts, count_limit = _filled(raw.header_counts), config.max_header_count
        verdicts.over(
            counts > count_limit,
            lambda index: f"record has {counts[index]:,} headers, over schema.max_header_count ({count_limit:,})",
        )
    if raw.header_bytes is not None and _exceeds(raw.header_bytes, config.max_header_bytes):
        sizes, size_limit = _filled(raw.header_bytes), config.max_header_bytes
        verdicts.over(
            sizes > size_limit,
            lambda index: f"record headers are {sizes[index]:,} bytes, over schema.max_header_bytes ({size_limit:,})",
        )


def _check_nesting(limit: int, payloads: pa.Array, starts: _Ints, sizes: _Ints, verdicts: _Verdicts) -> None:
    """Records nested deeper than ``limit``. Nesting takes a bracket byte per level, so only the records with
    more than ``limit`` brackets (and not already over a limit: a huge record is never scanned) are scanned."""
    if not len(sizes) or sizes.max() <= limit:
        return
    brackets = _bracket_mask(_values(payloads, starts))
    if _densest_block(brackets) * (int(sizes.max()) // _BLOCK_BYTES + 2) <= limit:
        return  # no record can hold more brackets than the limit: the usual fetch of small events
    counts = _bracket_counts(brackets, starts - starts[0])
    suspects = np.flatnonzero((counts > limit) & (sizes > 0) & ~verdicts.failed)
    if not len(suspects):
        return
    depths = nesting_depths(payloads.take(pa.array(suspects, pa.int64())))
    depth_of = dict(zip(suspects.tolist(), depths.tolist(), strict=True))
    deep = np.zeros(len(sizes), dtype=bool)
    deep[suspects[depths > limit]] = True
    verdicts.over(
        deep, lambda index: f"JSON nesting depth {depth_of[index]:,} is over schema.max_nesting_depth ({limit:,})"
    )


def _bracket_mask(values: npt.NDArray[np.uint8]) -> _Mask:
    """Where ``values`` holds ``{`` or ``[``. Built in place in one buffer: a second temporary as large as the
    fetch, alive at once, can cost page faults (glibc gives freed memory back to the system)."""
    folded = np.bitwise_or(values, _CASE_BIT)
    mask: _Mask = np.equal(folded, _OPENING, out=folded.view(np.bool_))
    return mask


def _densest_block(mask: _Mask) -> int:
    """The most brackets in one block of ``_BLOCK_BYTES`` of ``mask`` (the last block may be shorter). Whole-array
    additions only: numpy finds nonzero bytes, or reduces row by row, several times slower than it adds arrays."""
    whole = len(mask) // _BLOCK_BYTES * _BLOCK_BYTES
    sums = mask[:whole].view(np.uint64)  # 8 byte lanes of 0 or 1 per word
    blocks = whole // _BLOCK_BYTES
    while len(sums) > blocks:  # neighbours added, pair by pair, until one word per block
        sums = sums[0::2] + sums[1::2]
    per_block = (sums * _BYTE_SUM) >> np.uint64(56)  # the sum of a word's 8 lanes lands in its top byte
    return max(int(per_block.max(initial=0)), int(np.count_nonzero(mask[whole:])))


def _bracket_counts(mask: _Mask, starts: _Ints) -> _Ints:
    """Per record (record i is ``mask[starts[i]:starts[i + 1]]``), its count of brackets.

    From the positions of the brackets, not a running sum over every byte: a record usually holds a few
    brackets in hundreds of bytes, and numpy's cumsum over all of them costs more than the decoder's parse."""
    positions = np.flatnonzero(mask)
    records = np.searchsorted(starts, positions, side="right") - 1  # "right": an empty record owns no byte
    counts: _Ints = np.bincount(records, minlength=len(starts) - 1).astype(np.int64)
    return counts


def nesting_depths(payloads: pa.Array) -> _Ints:
    """Per (binary) payload, how deep JSON objects and arrays nest in it: ``{`` and ``[`` open a level, ``}``
    and ``]`` close one, except inside string literals; a ``"`` after an odd run of ``\\`` neither opens nor
    closes one. For JSON that is its depth. For other bytes it is a number decided by those bytes alone, at
    least the depth a parser reaches before it stops at the first byte that is not JSON (the two agree up to
    there: a ``\\`` outside a string is such a byte). Columnar over all payloads at once: no Python per record
    or per byte; a null payload is 0."""
    binary = _binary(payloads)
    starts = _value_starts(binary)
    values = _values(binary, starts)
    sizes = _sizes(binary, starts)
    relative = starts - starts[0]
    record = np.repeat(np.arange(len(sizes)), np.diff(relative))  # the record of each byte
    quotes = _unescaped_quotes(values, relative)
    in_string = (_running_sums(quotes.astype(np.int64), relative, record) & 1).astype(bool)
    folded = values | _CASE_BIT
    steps = (folded == _OPENING).astype(np.int64) - (folded == _CLOSING)
    steps[in_string] = 0
    levels = _running_sums(steps, relative, record)
    depths = np.zeros(len(sizes), dtype=np.int64)
    filled = np.flatnonzero(np.diff(relative) > 0)
    if len(filled):
        depths[filled] = np.maximum.reduceat(levels, relative[filled])
    return np.where(sizes > 0, np.maximum(depths, 0), 0)


def _unescaped_quotes(values: npt.NDArray[np.uint8], starts: _Ints) -> _Mask:
    """Where ``values`` holds a ``"`` that does not follow an odd run of backslashes of its own record."""
    quotes: _Mask = values == _QUOTE
    positions = np.flatnonzero(quotes)
    if not len(positions):
        return quotes
    indices = np.arange(len(values), dtype=np.int64)
    backslash = values == _BACKSLASH
    barrier = np.where(backslash, -1, indices)  # the last non-backslash at or before a byte ends the run there
    record_starts = starts[:-1][starts[:-1] < len(values)]
    barrier[record_starts] = np.where(backslash[record_starts], record_starts - 1, record_starts)  # no run across
    last = np.maximum.accumulate(barrier)
    first_of_record = np.zeros(len(values), dtype=bool)
    first_of_record[record_starts] = True
    previous = np.maximum(positions - 1, 0)
    escaped = ~first_of_record[positions] & ((previous - last[previous]) % 2 == 1)
    quotes[positions[escaped]] = False
    return quotes


def _running_sums(steps: _Ints, starts: _Ints, record: _Ints) -> _Ints:
    """The running sum of ``steps`` from the start of each byte's own record."""
    totals = np.cumsum(steps)
    before = np.concatenate(([0], totals))[starts[:-1]]  # the sum up to each record's first byte
    sums: _Ints = totals - before[record]
    return sums


def event_time_rejections(
    config: SchemaConfig, event_times_ms: pa.Array, record_times_ms: pa.Array, now_ms: int | None
) -> Rejections | None:
    """The rows whose event time is more than ``config.max_future_ms`` ahead of, or ``config.max_past_ms``
    behind, their reference time: ``record_times_ms`` (a record's own timestamp; a negative one, Kafka's "no
    timestamp", counts as none), else ``now_ms``, the time the batch was read (None: such rows are not
    checked). A null event time is never rejected. None when no row is rejected (the usual case, cheaply)."""
    if config.max_future_ms is None and config.max_past_ms is None:
        return None
    if now_ms is None and record_times_ms.null_count == len(record_times_ms):
        return None
    own = _reference_times(record_times_ms)
    reference = own if now_ms is None or not np.isnan(own).any() else np.where(np.isnan(own), now_ms, own)
    lead = _floats(event_times_ms) - reference  # NaN, never out of range, where either time is missing
    failing = np.zeros(len(lead), dtype=bool)
    if config.max_future_ms is not None:
        failing |= lead > config.max_future_ms
    if config.max_past_ms is not None:
        failing |= lead < -config.max_past_ms
    if not failing.any():
        return None
    indices = np.flatnonzero(failing)
    reasons = [_time_reason(config, bool(lead[index] > 0), not np.isnan(own[index])) for index in indices.tolist()]
    return Rejections(
        indices=pa.array(indices, pa.int64()),
        reasons=pa.array(reasons, pa.string()),
        kept=pa.array(np.flatnonzero(~failing), pa.int64()),
    )


def _reference_times(times_ms: pa.Array) -> npt.NDArray[np.float64]:
    """Record times as float64, NaN where a record has none: null, or negative (Kafka's "no timestamp", -1).
    In float64 so that an absurd int64 on either side cannot wrap around and pass (or fail) the check."""
    floats = _floats(times_ms)
    if times_ms.null_count == len(times_ms) or not (floats < 0).any():
        return floats
    return np.where(floats < 0, np.nan, floats)


def _floats(times_ms: pa.Array) -> npt.NDArray[np.float64]:
    """As float64, NaN for null."""
    floats: npt.NDArray[np.float64] = (
        times_ms.to_numpy().astype(np.float64)
        if not times_ms.null_count
        else pc.cast(times_ms, pa.float64(), safe=False).to_numpy(zero_copy_only=False)
    )
    return floats


def _time_reason(config: SchemaConfig, ahead: bool, has_own_time: bool) -> str:
    reference = "the record's timestamp" if has_own_time else "the time the record was read"
    if ahead:
        return f"event time is more than schema.max_future_ms ({config.max_future_ms:,}) ahead of {reference}"
    return f"event time is more than schema.max_past_ms ({config.max_past_ms:,}) behind {reference}"


def _binary(payloads: pa.Array) -> pa.Array:
    return payloads if payloads.type == pa.binary() else pc.cast(payloads, pa.binary())


def _value_starts(binary: pa.Array) -> _Ints:
    """Where each value of a binary array starts in its data buffer, and where the last one ends (len + 1)."""
    offsets = np.frombuffer(binary.buffers()[1], dtype=np.int32)
    return offsets[binary.offset : binary.offset + len(binary) + 1].astype(np.int64)


def _sizes(binary: pa.Array, starts: _Ints) -> _Ints:
    """Each value's length in bytes; 0 for a null (whose slot Arrow allows to span bytes)."""
    sizes = np.diff(starts)
    if binary.null_count:
        sizes[pc.is_null(binary).to_numpy(zero_copy_only=False)] = 0
    return sizes


def _values(binary: pa.Array, starts: _Ints) -> npt.NDArray[np.uint8]:
    """The bytes of all values, back to back, without copying."""
    data = binary.buffers()[2]
    if data is None or starts[-1] == starts[0]:
        return np.zeros(0, dtype=np.uint8)
    return np.frombuffer(data, dtype=np.uint8)[starts[0] : starts[-1]]


def _exceeds(counts: pa.Array, limit: int) -> bool:
    """Whether any count is over ``limit``: one pass, before any per-record mask is made."""
    return bool((pc.max(counts).as_py() or 0) > limit)


def _filled(counts: pa.Array) -> _Ints:
    filled: _Ints = pc.fill_null(counts, 0).to_numpy(zero_copy_only=False).astype(np.int64)
    return filled
