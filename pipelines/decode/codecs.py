"""Decoding raw payloads into Arrow record batches, columnar, with bad records split out.

The fast path hands a whole fetch to pyarrow's JSON reader as one newline-delimited buffer, but only after a
columnar guard (:func:`_one_object_per_line`) has shown that every payload is valid UTF-8 and one line shaped
like one JSON object. pyarrow's reader must not see anything else: it segfaults on a leading top-level ``null``
(apache/arrow#47409, pyarrow 26), reads a ``null`` line as a row of nulls, skips empty lines (shifting rows
onto the wrong offsets) and does not check UTF-8.

When the guard or the reader fails, bad records cost in proportion to their number, not to the fetch's size:

- the guard is evaluated per record, columnar (:func:`_approved_lines`); only the records it does not approve
  (null, not UTF-8, not one braced line) are looked at one by one, with msgspec (:func:`_check_record`);
- msgspec's typed reading (:mod:`pipelines.decode.json_verdicts`, about 0.4 µs a line for one column) names the bad
  lines among the JSON objects, with their reasons: only the column the reader's refusal named, from the row it
  named on, then every column. It accepts what the reader accepts, value for value; the lines it accepts are
  then read together once. A dirty feed stays dirty: after such a fetch, the next is checked in that column
  before it is read, which spares the read the reader would give up on. A fetch with 1 % type-mismatched
  records decodes at about 0.8x the clean rate (``python -m benchmarks.decode_dirty``), where bisecting with
  the reader cost 0.14x;
- if the reader still refuses some of those lines (a column given twice), it judges each line alone
  (:func:`_split`): a refusal names the row it stopped at, which is checked alone and skipped; a refusal that
  names no row is bisected, O(k log n) reads for k misfits.

Each pyarrow read costs about 0.25 ms however small its input (on a 2-core machine), which is why the reader
is not the judge of single lines unless it must be.

Every decoder runs the same three steps (:func:`decode_within_limits`): the input limits of
:mod:`pipelines.decode.input_limits` set aside records too large, with too many headers or (JSON) nested too deep,
before any parsing; the decoder reads the rest; :func:`validated` adds the metadata columns and applies the
schema's rules and the event-time limits.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import msgspec
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from pipelines.decode.input_limits import TIMESTAMP, event_time_rejections, screen_input
from pipelines.decode.json_maps import MapColumnReader, holds_map
from pipelines.decode.json_verdicts import TypedLines, json_value, undecodable_reason
from pipelines.decode.schema import METADATA_NAMES, EventSchema
from pipelines.io.records import RawBatch, dead_letters
from pipelines.transform.bisection import failing_positions

__all__ = [
    "DecodedBatch",
    "Decoder",
    "JsonDecoder",
    "PayloadReader",
    "SelfContainedDecoder",
    "decode_within_limits",
    "validated",
    "with_metadata",
]

_NEWLINE = b"\n"
_JSON_WHITESPACE = " \t\r\n"
_BLOCK_BYTES = 1 << 22
_ROW_IN_MESSAGE = re.compile(r"\bin row (\d+)\b")
_UNREADABLE = "the JSON reader refuses the record"
_COLUMN_IN_MESSAGE = re.compile(r"\bColumn\(/([^)/]+)[)/]")  # a nested value's path names its column first

_Rejection = tuple[int, str, str]  # record index, error type, reason
_Positions = npt.NDArray[np.int64]


@dataclass(frozen=True)
class DecodedBatch:
    """Valid events (payload + metadata columns) and dead letters (over a limit, undecodable, invalid or out of
    time, with reasons). ``dropped_traceparents``: how many records' malformed ``traceparent`` was replaced by
    null (the source's and the decoder's finds together), for a metric."""

    events: pa.RecordBatch
    dead_letters: list[pa.RecordBatch]
    dropped_traceparents: int = 0

    @property
    def dead_letter_count(self) -> int:
        return sum(batch.num_rows for batch in self.dead_letters)


class Decoder(Protocol):
    """Turns a fetch into valid events and dead letters. Contract: never raises for a bad record; a record's
    verdict does not depend on the other records of its fetch. ``now_ms`` is the time the fetch was read (epoch
    ms), the reference time of records without a timestamp of their own (None: those are not checked against
    the event-time limits); a decoder never reads a clock itself."""

    def decode(self, raw: RawBatch, now_ms: int | None = None) -> DecodedBatch: ...

    async def prepare(self, raw: RawBatch) -> None:
        """Fetch what decoding ``raw`` needs from elsewhere (writer schemas from a registry), before :meth:`decode`,
        which does no I/O."""

    async def close(self) -> None:
        """Release what :meth:`prepare` opened."""


class SelfContainedDecoder:
    """A decoder that needs nothing from elsewhere: :meth:`prepare` and :meth:`close` do nothing."""

    async def prepare(self, raw: RawBatch) -> None:
        return None

    async def close(self) -> None:
        return None


#: Reads the payloads of a fetch within the limits: the payload columns of the records it could read, their
#: positions in the fetch (int64, increasing; None: every record), and dead letters for the others.
PayloadReader = Callable[[RawBatch], tuple[pa.Table, pa.Array | None, list[pa.RecordBatch]]]


@dataclass(frozen=True)
class _Refusal:
    """pyarrow's reader refused a buffer of lines. ``row``: the 0-based row its message names, if it names one
    (it does for a value of the wrong JSON kind, not for one that fails to convert, such as ``12.5`` for int64);
    ``column``: the schema column it names, if it names one. Hints only: a line holding two objects (``{} {}``)
    shifts the rows after it, and the messages are pyarrow's to change."""

    row: int | None
    column: str | None = None


class JsonDecoder(SelfContainedDecoder):
    """Decodes JSON object payloads to the schema's columns; extra JSON fields are ignored.

    A record is a dead letter of error type ``undecodable`` when it is not one JSON object in valid UTF-8, and
    ``invalid`` when a value does not fit its column's type or the schema's rules (required, checks) reject it.
    The verdict on a record does not depend on the other records of its batch: a line is a misfit exactly when
    pyarrow's reader, reading it alone, refuses it or reads other than one row, or (for the columns whose type
    holds a map, which pyarrow's reader cannot read) when msgspec's typed reading refuses it
    (:mod:`pipelines.decode.json_maps`). Before that, a record over an
    input limit is a dead letter of error type ``limit``; after it, a valid event whose event time is out of
    the schema's limits is one of error type ``timestamp`` (:func:`decode_within_limits`).
    """

    def __init__(self, schema: EventSchema) -> None:
        self._schema = schema
        # pyarrow's reader reads every column but those holding a map, which msgspec reads (json_maps)
        read_by_arrow = pa.schema([field for field in schema.payload_schema if not holds_map(field.type)])
        self._arrow_names = read_by_arrow.names
        self._parse_options = _parse_options(read_by_arrow)
        self._column_parse_options = {field.name: _parse_options(pa.schema([field])) for field in read_by_arrow}
        self._typed = TypedLines(schema.config)
        map_columns = [field for field in schema.payload_schema if holds_map(field.type)]
        self._maps = MapColumnReader(map_columns, self._typed) if map_columns else None
        # a column the last fetch had values of the wrong type in: the next fetch is checked there first,
        # which spares the read pyarrow would give up on (a hint: verdicts are the same either way)
        self._suspect: str | None = None

    def decode(self, raw: RawBatch, now_ms: int | None = None) -> DecodedBatch:
        """Screen, decode, attach metadata columns, validate. Never raises for bad records: they become dead
        letters."""
        return decode_within_limits(self._schema, raw, now_ms, self._read, json_nesting=True)

    def _read(self, raw: RawBatch) -> tuple[pa.Table, pa.Array | None, list[pa.RecordBatch]]:
        """The payload columns of the decodable records, their indices in ``raw`` (None: all), dead letters."""
        table, positions, dead = self._read_with_arrow(raw)
        return (table, positions, dead) if self._maps is None else self._with_maps(raw, table, positions, dead)

    def _with_maps(
        self, raw: RawBatch, table: pa.Table, positions: pa.Array | None, dead: list[pa.RecordBatch]
    ) -> tuple[pa.Table, pa.Array | None, list[pa.RecordBatch]]:
        """``table`` (the columns pyarrow read, of the records at ``positions``) with the map-holding columns,
        read by msgspec; a record whose map-holding value does not fit is a dead letter too."""
        assert self._maps is not None
        payloads = _binary(raw.payloads)
        columns, bad = self._maps.read(payloads if positions is None else payloads.take(positions))
        if bad:
            keep = np.ones(table.num_rows, dtype=bool)
            keep[[index for index, _, _ in bad]] = False
            kept = np.arange(len(raw), dtype=np.int64) if positions is None else positions.to_numpy()
            rejected = [(int(kept[index]), error_type, reason) for index, error_type, reason in bad]
            dead = [*dead, *_dead_letter_batches(raw, rejected)]
            table, positions = table.filter(pa.array(keep)), pa.array(kept[keep], pa.int64())
        names = self._schema.payload_schema.names
        arrays = [columns[name] if name in columns else table.column(name) for name in names]
        return pa.Table.from_arrays(arrays, schema=self._schema.payload_schema), positions, dead

    def _read_with_arrow(self, raw: RawBatch) -> tuple[pa.Table, pa.Array | None, list[pa.RecordBatch]]:
        """:meth:`_read` of the columns pyarrow's reader reads."""
        payloads = _binary(raw.payloads)
        lines = _one_object_per_line(payloads)
        if lines is None:
            positions, lines, rejected = _candidate_lines(payloads)
            return self._read_dirty(raw, positions, _terminated(lines), rejected, _Refusal(row=None))
        lines = _terminated(lines)
        everything = np.arange(len(lines), dtype=np.int64)
        if self._suspect is not None:  # the last fetch had values of the wrong type here: check them first
            return self._read_dirty(raw, everything, lines, [], _Refusal(row=0, column=self._suspect))
        table = _read_lines(lines, self._parse_options)
        if not isinstance(table, _Refusal):
            return table.select(self._arrow_names), None, []
        return self._read_dirty(raw, everything, lines, [], table)

    def _read_dirty(
        self, raw: RawBatch, positions: _Positions, lines: pa.Array, rejected: list[_Rejection], refusal: _Refusal
    ) -> tuple[pa.Table, pa.Array, list[pa.RecordBatch]]:
        """The slow path, for the JSON object ``lines`` (from :func:`_terminated`) of the records at ``positions``
        (``rejected``: the others), given pyarrow's ``refusal`` of all of them.

        msgspec's typed reading names the bad lines, pyarrow reads the others together. A refusal's column and
        row are hints: the typed reading checks only the column a refusal names (about 0.4 µs a line), and only
        from its row on; when the read of the accepted lines is refused again, it checks the column that refusal
        names, then every column of every line, and last pyarrow judges each line alone (:func:`_split`).
        """
        checked: set[str] = set()
        self._suspect = None
        while True:
            named = refusal.column if refusal.column in self._arrow_names else None
            columns = [named] if named and named not in checked else None
            if columns is None and len(checked) == len(self._schema.payload_schema):
                break  # every column of every line checked: pyarrow has the last word
            bad = self._typed.bad_lines(lines, refusal.row or 0, columns)
            checked.update(columns or self._schema.payload_schema.names)
            if bad and named and self._suspect is None:
                self._suspect = named  # dirty feeds stay dirty: the next fetch checks this column before reading
            rejected += [(int(positions[line]), error_type, reason) for line, error_type, reason in bad]
            refused = [line for line, _, _ in bad]
            read = _read_all_but(lines, refused, self._parse_options)
            positions = np.delete(positions, refused)
            if not isinstance(read, _Refusal):
                return self._accepted(raw, read, positions, rejected)
            lines, refusal = _without(lines, refused), read
        misfits, table = _split(lines, self._parse_options)
        rejected += self._misfit_rejections(positions, lines, misfits)
        return self._accepted(raw, table, np.delete(positions, misfits), rejected)

    def _accepted(
        self, raw: RawBatch, table: pa.Table, positions: _Positions, rejected: list[_Rejection]
    ) -> tuple[pa.Table, pa.Array, list[pa.RecordBatch]]:
        return (
            table.select(self._arrow_names),
            pa.array(positions, pa.int64()),
            _dead_letter_batches(raw, rejected),
        )

    def _misfit_rejections(self, positions: _Positions, lines: pa.Array, misfits: list[int]) -> list[_Rejection]:
        """Why each line pyarrow refuses alone is a misfit: msgspec's verdict (for a line presumed to fit before
        the row a refusal named, say one holding two objects, or one too deep for the typed reading), else the
        first column whose value pyarrow refuses when it reads that column alone (a column given twice, say)."""
        picked = lines.take(pa.array(misfits, pa.int64()))
        verdicts = [self._misfit_verdict(line.rstrip(_NEWLINE)) for line in picked.to_pylist()]
        unexplained = [index for index, verdict in enumerate(verdicts) if verdict is None]
        reasons = iter(self._reasons(picked.take(pa.array(unexplained, pa.int64()))))
        return [
            (int(positions[misfit]), *(verdict or ("invalid", next(reasons))))
            for misfit, verdict in zip(misfits, verdicts, strict=True)
        ]

    def _misfit_verdict(self, line: bytes) -> tuple[str, str] | None:
        undecodable = undecodable_reason(line)  # msgspec's verdict on a line too deep for its typed reading
        return ("undecodable", undecodable) if undecodable else self._typed.verdict(line)

    def _reasons(self, lines: pa.Array) -> list[str]:
        """For lines the reader refuses but msgspec's typed reading does not (each one JSON object): the first
        column, in schema order, that the reader refuses when it reads that column alone. Every value fits its
        type (msgspec says so), so the key is likely given twice. Arrow's messages are not part of reasons: some
        quote the value, and reasons never quote payloads."""
        reasons = [_UNREADABLE] * len(lines)
        unexplained = np.arange(len(lines), dtype=np.int64)
        for name, options in self._column_parse_options.items():
            if not len(unexplained):
                break
            misfits, _ = _split(lines.take(pa.array(unexplained)), options)
            for misfit in misfits:
                reasons[int(unexplained[misfit])] = f"{_UNREADABLE}: column {name!r} (given twice?)"
            unexplained = np.delete(unexplained, misfits)
        return reasons


def decode_within_limits(
    schema: EventSchema, raw: RawBatch, now_ms: int | None, read: PayloadReader, json_nesting: bool
) -> DecodedBatch:
    """The steps every decoder takes (see the module docstring): :func:`~pipelines.decode.input_limits.screen_input`,
    then ``read`` on the records within the limits, then :func:`validated`. Dead letters are identified by
    offset, so those of the records read are in offset order per error type as ``read`` gives them."""
    screening = screen_input(schema.config, raw, json_nesting)
    payload, positions, rejected = read(screening.within)
    decoded = validated(schema, payload, screening.within, [*screening.dead_letters, *rejected], now_ms, positions)
    return replace(decoded, dropped_traceparents=screening.dropped_traceparents)


def validated(
    schema: EventSchema,
    payload: pa.Table,
    raw: RawBatch,
    rejected: list[pa.RecordBatch],
    now_ms: int | None = None,
    positions: pa.Array | None = None,
) -> DecodedBatch:
    """Attach the metadata columns to decoded payload columns (row i of ``payload`` is record ``positions[i]``
    of ``raw``; None: record i), then split off the rows the schema's rules reject as ``invalid`` dead letters,
    then those of the others whose event time (``_timestamp``) is out of the schema's limits as ``timestamp``
    dead letters (see :func:`~pipelines.decode.input_limits.event_time_rejections` for ``now_ms``). Shared by every
    decoder. Only the columns an event keeps are taken from ``raw``, never its payloads."""
    events = with_metadata(schema, payload, raw, positions)
    outcome = schema.validate(events)
    kept = positions  # positions in raw of the rows in events; None: all
    if len(outcome.invalid_indices):
        invalid = outcome.invalid_indices if kept is None else kept.take(outcome.invalid_indices)
        rejected = [*rejected, dead_letters(raw, invalid, outcome.invalid_reasons, "invalid")]
        valid = outcome.valid_indices
        events, kept = events.take(valid), valid if kept is None else kept.take(valid)
    record_times = raw.timestamps if kept is None else raw.timestamps.take(kept)
    untimely = event_time_rejections(schema.config, events.column("_timestamp"), record_times, now_ms)
    if untimely is not None:
        indices = untimely.indices if kept is None else kept.take(untimely.indices)
        rejected = [*rejected, dead_letters(raw, indices, untimely.reasons, TIMESTAMP)]
        events = events.take(untimely.kept)
    return DecodedBatch(events=events, dead_letters=rejected)


def with_metadata(
    schema: EventSchema, table: pa.Table, raw: RawBatch, positions: pa.Array | None = None
) -> pa.RecordBatch:
    """The payload columns followed by ``_partition``, ``_offset``, ``_timestamp``, ``_key``, ``_traceparent``,
    ``_event_id`` (DESIGN section 2); row i is record ``positions[i]`` of ``raw`` (None: record i)."""
    config = schema.config

    def picked(column: pa.Array) -> pa.Array:
        return column if positions is None else column.take(positions)

    count = len(raw) if positions is None else len(positions)
    columns = [table.column(name).combine_chunks() for name in table.column_names if name not in METADATA_NAMES]
    record_times = picked(raw.timestamps)
    timestamps = record_times
    if config.event_time_field is not None:
        timestamps = pc.coalesce(table.column(config.event_time_field).combine_chunks(), record_times)
    event_ids = pa.nulls(count, pa.string())
    if config.event_id_field is not None:
        event_ids = pc.cast(table.column(config.event_id_field).combine_chunks(), pa.string())
    metadata = [
        pa.array(np.full(count, raw.partition, dtype=np.int32)),
        picked(raw.offsets),
        timestamps,
        picked(raw.keys),
        picked(raw.traceparents),
        event_ids,
    ]
    return pa.RecordBatch.from_arrays(columns + metadata, schema=schema.batch_schema.remove_metadata())


def _parse_options(schema: pa.Schema) -> pa_json.ParseOptions:
    return pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")


def _split(lines: pa.Array, options: pa_json.ParseOptions) -> tuple[list[int], pa.Table]:
    """The positions of the lines (see :func:`_terminated`) the reader refuses alone, and the others read
    together."""
    whole = _read_lines(lines, options)
    if not isinstance(whole, _Refusal):
        return [], whole
    misfits = _misfits(lines, options, whole, use_hints=True)
    table = _read_lines(_without(lines, misfits), options)
    if isinstance(table, _Refusal):  # a wrong row hint let a misfit through before it: now read every line
        misfits = _misfits(lines, options, whole, use_hints=False)
        table = _read_lines(_without(lines, misfits), options)
        assert not isinstance(table, _Refusal), "lines that read on their own read together"
    return misfits, table


def _misfits(lines: pa.Array, options: pa_json.ParseOptions, refusal: _Refusal, use_hints: bool) -> list[int]:
    """Positions of the lines the reader refuses alone, in order, given its ``refusal`` of all of them.

    With hints, a named row is checked alone and the search goes on after it; the lines before it are presumed
    to fit (the reader got past them), so :func:`_split` reads them again to make sure. Row 0 needs no check:
    the reader reads lines in order, so it refused the first line before it looked at any other. Without a
    usable hint, what is left is bisected.
    """
    misfits: list[int] = []
    start = 0
    while True:
        line = start + refusal.row if use_hints and refusal.row is not None else len(lines)
        if line >= len(lines) or (line > start and _refusal(lines.slice(line, 1), options) is None):
            return misfits + [start + position for position in _bisect(lines.slice(start), options)]
        misfits.append(line)
        start = line + 1
        rest = _refusal(lines.slice(start), options) if start < len(lines) else None
        if rest is None:
            return misfits
        refusal = rest


def _bisect(lines: pa.Array, options: pa_json.ParseOptions) -> list[int]:
    def fits(start: int, stop: int) -> bool:
        return _refusal(lines.slice(start, stop - start), options) is None

    return failing_positions(len(lines), fits)


def _read_all_but(lines: pa.Array, refused: list[int], options: pa_json.ParseOptions) -> pa.Table | _Refusal:
    """:func:`_read_lines` of ``lines`` without those at ``refused``, read in place: a copy of the buffer with
    the refused lines blanked (the reader skips a line of spaces), not a new array of the others. Rows a
    refusal names count the other lines only."""
    if not refused:
        return _read_lines(lines, options)
    data = np.frombuffer(_values(lines), dtype=np.uint8).copy()
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset : lines.offset + len(lines) + 1]
    starts, ends = offsets[refused] - offsets[0], offsets[np.asarray(refused) + 1] - offsets[0] - 1
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        data[start:end] = ord(" ")  # the newline stays
    read = _read_json(pa.py_buffer(data), options)
    if isinstance(read, _Refusal) or read.num_rows == len(lines) - len(refused):
        return read
    return _Refusal(row=None)


def _refusal(lines: pa.Array, options: pa_json.ParseOptions) -> _Refusal | None:
    """None if the reader reads ``lines`` one row each."""
    read = _read_lines(lines, options)
    return read if isinstance(read, _Refusal) else None


def _read_lines(lines: pa.Array, options: pa_json.ParseOptions) -> pa.Table | _Refusal:
    """The table of ``lines`` (from :func:`_terminated`, each approved: see the module docstring), one row per
    line, or why not."""
    if len(lines) == 0:
        return options.explicit_schema.empty_table()
    read = _read_json(_values(lines), options)
    if isinstance(read, _Refusal) or read.num_rows == len(lines):
        return read
    return _Refusal(row=None)  # with the guard, a line yields at least one row, so an equal count means one each


def _read_json(buffer: pa.Buffer, options: pa_json.ParseOptions) -> pa.Table | _Refusal:
    """pyarrow's JSON reader on ``buffer``, or its refusal of invalid input."""
    # one block for the whole buffer, so that the row a refusal names counts from the buffer's first line
    read_options = pa_json.ReadOptions(use_threads=False, block_size=max(_BLOCK_BYTES, buffer.size + 1))
    try:
        return pa_json.read_json(pa.BufferReader(buffer), read_options=read_options, parse_options=options)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        row, column = _ROW_IN_MESSAGE.search(str(error)), _COLUMN_IN_MESSAGE.search(str(error))
        return _Refusal(row=int(row.group(1)) if row else None, column=column.group(1) if column else None)


def _binary(payloads: pa.Array) -> pa.Array:
    return payloads if payloads.type == pa.binary() else pc.cast(payloads, pa.binary())


def _one_object_per_line(binary: pa.Array) -> pa.Array | None:
    """The (binary) payloads, each one line starting with ``{`` and ending with ``}`` (JSON whitespace around
    it trimmed), or None if a payload is null, not valid UTF-8, not shaped so, or spans lines.

    Columnar and cheap (about 0.1 ms for 4096 payloads of 200 bytes). It does not prove that a line holds
    exactly one object (``{} {}`` passes): the reader's row count shows that, as no such line yields zero rows.
    """
    text = binary.view(pa.string())
    if binary.null_count or not _valid_utf8(text):  # checked here: pyarrow's reader does not check UTF-8
        return None
    if _each_is_one_braced_line(text):
        return binary
    trimmed = pc.ascii_trim(text, characters=_JSON_WHITESPACE)
    return trimmed.view(pa.binary()) if _each_is_one_braced_line(trimmed) else None


def _each_is_one_braced_line(text: pa.Array) -> bool:
    braced = pc.all(pc.and_(pc.starts_with(text, "{"), pc.ends_with(text, "}")), min_count=0).as_py()
    return bool(braced) and not bool((np.frombuffer(_values(text), dtype=np.uint8) == ord(_NEWLINE)).any())


def _candidate_lines(binary: pa.Array) -> tuple[_Positions, pa.Array, list[_Rejection]]:
    """The records that are JSON objects: their indices and their single-line JSON (binary), in record order;
    and the rejections of the rest. Only the records the guard does not approve are looked at one by one."""
    approved, trimmed = _approved_lines(binary)
    suspects = np.flatnonzero(~approved)
    rejected: list[_Rejection] = []
    rescued: list[int] = []
    rescued_lines: list[bytes] = []
    for index, payload in zip(suspects.tolist(), binary.take(pa.array(suspects, pa.int64())).to_pylist(), strict=True):
        reason, line = _check_record(payload)
        if reason is None:  # e.g. pretty-printed: msgspec wrote it again on one line
            rescued.append(index)
            rescued_lines.append(line)
        else:
            rejected.append((index, "undecodable", reason))
    positions = np.concatenate([np.flatnonzero(approved), np.array(rescued, dtype=np.int64)])
    lines = pa.concat_arrays([trimmed.filter(pa.array(approved)), pa.array(rescued_lines, pa.binary())])
    order = np.argsort(positions, kind="stable")
    return positions[order], lines.take(pa.array(order)), rejected


def _approved_lines(binary: pa.Array) -> tuple[npt.NDArray[np.bool_], pa.Array]:
    """Which records pass :func:`_one_object_per_line`'s guard each on their own, and all of them trimmed of
    JSON whitespace (binary; meaningful where approved)."""
    checkable = pc.and_(pc.is_valid(binary), pa.array(_utf8_mask(binary)))
    # the string kernels below only ever see valid UTF-8: the others are replaced by an empty, unapproved line
    text = pc.if_else(checkable, binary, pa.scalar(b"", pa.binary())).view(pa.string())
    trimmed = pc.ascii_trim(text, characters=_JSON_WHITESPACE)
    braced = pc.and_(pc.starts_with(trimmed, "{"), pc.ends_with(trimmed, "}"))
    one_line = pc.invert(pc.match_substring(trimmed, _NEWLINE.decode()))
    approved = pc.and_(checkable, pc.and_(braced, one_line)).to_numpy(zero_copy_only=False)
    return approved, trimmed.view(pa.binary())


def _utf8_mask(binary: pa.Array) -> npt.NDArray[np.bool_]:
    """Per record: is it valid UTF-8 (a null is)? Bisected with pyarrow's validation, so a few bad records cost
    a few scans of the batch instead of a Python decode of each record."""
    text = binary.view(pa.string())
    mask = np.ones(len(binary), dtype=bool)
    invalid = failing_positions(len(text), lambda start, stop: _valid_utf8(text.slice(start, stop - start)))
    mask[invalid] = False
    return mask


def _valid_utf8(text: pa.Array) -> bool:
    try:
        text.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _values(array: pa.Array) -> pa.Buffer:
    """The bytes of all values of a (non-large) string or binary array, back to back, without copying."""
    data = array.buffers()[2]
    if data is None:
        return pa.py_buffer(b"")
    start, end = np.frombuffer(array.buffers()[1], dtype=np.int32)[[array.offset, array.offset + len(array)]]
    return data.slice(int(start), int(end - start))


def _terminated(payloads: pa.Array) -> pa.Array:
    """Each (binary) payload followed by a newline, without a per-record Python loop: the values of any slice of
    the result, back to back, are the slice's lines as newline-delimited JSON, without copying."""
    return pc.binary_join_element_wise(payloads, pa.scalar(b""), _NEWLINE)


def _without(lines: pa.Array, positions: list[int]) -> pa.Array:
    if not positions:
        return lines
    keep = np.ones(len(lines), dtype=bool)
    keep[positions] = False
    return lines.filter(pa.array(keep))


def _check_record(payload: bytes | None) -> tuple[str | None, bytes]:
    """Why one record cannot be decoded (None if it can), and the record as a single JSON line."""
    if not payload:
        return "empty or null payload", b""
    if not _is_utf8(payload):  # checked here: the reason is eventray's, whatever msgspec's version says
        return "payload is not valid UTF-8", b""
    decoded, reason = json_value(payload)
    if reason is not None:
        return reason, b""
    if not isinstance(decoded, dict):
        return f"JSON value is a {type(decoded).__name__}, not an object", b""
    if _NEWLINE in payload:
        return None, msgspec.json.encode(decoded)
    return None, payload


def _is_utf8(payload: bytes) -> bool:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _dead_letter_batches(raw: RawBatch, rejected: list[_Rejection]) -> list[pa.RecordBatch]:
    """One dead-letter batch per error type, its rows in offset order."""
    batches = []
    for error_type in sorted({error_type for _, error_type, _ in rejected}):
        picked = sorted((index, reason) for index, kind, reason in rejected if kind == error_type)
        indices = pa.array([index for index, _ in picked], pa.int64())
        batches.append(dead_letters(raw, indices, pa.array([reason for _, reason in picked], pa.string()), error_type))
    return batches
