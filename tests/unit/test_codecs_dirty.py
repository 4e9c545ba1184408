"""Dirty fetches: a bad record's verdict does not depend on its batch, and bad records cost in proportion to their
number (counted in pyarrow reader calls and Arrow conversions, never in wall-clock time)."""

from __future__ import annotations

import io
import math
from typing import Any

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.json as pa_json
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.config.pipeline import SchemaConfig
from pipelines.decode import binary_codecs, codecs
from pipelines.decode.binary_codecs import AvroDecoder
from pipelines.decode.codecs import DecodedBatch
from pipelines.decode.json_verdicts import TypedLines
from pipelines.decode.schema import EventSchema
from pipelines.io.records import RawBatch
from pipelines.transform.bisection import failing_positions
from tests.unit.test_codecs import (
    DECODER,
    FIRST_OFFSET,
    PRETTY,
    SCHEMA,
    TYPE_MISMATCH,
    dead_rows,
    event,
    raw_batch,
)

FETCH = 4_096
BOUND_FACTOR = 4  # the reader-call bound c * k * log2(n) + c

# Every kind of bad record, each with what makes it bad. Type mismatches that the reader refuses while parsing
# name their row ("changed from number to string in row 5"); those it refuses while converting do not.
BAD_JSON: dict[str, bytes | None] = {
    "string-for-int": event(1, amount_cents="n/a"),  # named row
    "int-for-string": event(1, event_id=17),  # named row
    "list-for-string": event(1, currency=["EUR"]),  # named row
    "float-for-int": event(1, amount_cents=12.5),  # no row named
    "int-too-big": event(1, event_time_ms=10**30),  # no row named
    "two-bad-columns": event(1, event_id=5, amount_cents="x"),
    "two-objects": event(1) + b" " + event(2, amount_cents="x"),  # shifts the rows the reader names after it
    "truncated": b'{"event_id":"e1","event_type":',
    "null": None,
    "empty": b"",
    "json-null": b"null",
    "array": b"[1, 2]",
    "invalid-utf8": event(1).replace(b'"nested"', b'"nest\xffed"'),
    "negative-amount": event(1, amount_cents=-5),
    "missing-required": event(1, event_time_ms=None),
    "column-twice": event(1)[:-1] + b',"amount_cents":5}',  # msgspec reads it, pyarrow refuses it
    "escaped-key-string-for-int": event(1).replace(b'"amount_cents":100', b'"\\u0061mount_cents":"x"'),
}
GOOD_JSON: dict[str, bytes] = {
    "plain": event(7),
    "pretty-printed": PRETTY,
    "padded": b" \t" + event(8) + b"\r\n",
    "escaped-key": event(9).replace(b'"currency"', b'"\\u0063urrency"'),
}


def alone(decoder: Any, raw: RawBatch) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Events and dead letters of ``raw`` when each record is decoded in a batch of its own."""
    events: list[dict[str, Any]] = []
    dead: list[dict[str, Any]] = []
    for index in range(len(raw)):
        decoded = decoder.decode(raw.take(pa.array([index], pa.int64())))
        events += decoded.events.to_pylist()
        dead += dead_rows(decoded)
    return events, dead


def together(decoded: DecodedBatch) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return decoded.events.to_pylist(), dead_rows(decoded)


def payloads_named(names: list[str]) -> list[bytes | None]:
    return [BAD_JSON[n] if n in BAD_JSON else GOOD_JSON[n] if n in GOOD_JSON else event(i) for i, n in enumerate(names)]


json_batches = st.lists(st.sampled_from([*BAD_JSON, *GOOD_JSON, "event", "event", "event"]), max_size=40).map(
    payloads_named
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_batches)
def test_json_batch_decodes_as_its_records_alone(payloads: list[bytes | None]) -> None:
    raw = raw_batch(payloads)
    assert together(DECODER.decode(raw)) == alone(DECODER, raw)


class _ReaderCalls:
    """Counts pyarrow reader calls through ``codecs._read_json``; optionally rewrites the rows refusals name."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, rows: str = "as read") -> None:
        self.count = 0
        self._read = codecs._read_json
        self._rows = rows
        monkeypatch.setattr(codecs, "_read_json", self)

    def __call__(self, buffer: pa.Buffer, options: pa_json.ParseOptions) -> pa.Table | codecs._Refusal:
        self.count += 1
        read = self._read(buffer, options)
        if not isinstance(read, codecs._Refusal) or read.row is None or self._rows == "as read":
            return read
        if self._rows == "none":  # as if Arrow's messages stopped naming rows
            return codecs._Refusal(row=None)
        return codecs._Refusal(row=read.row + 1 if read.row else 0)  # "shifted": a wrong row, except row 0


@pytest.mark.parametrize("rows", ["none", "shifted"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payloads=json_batches)
def test_rows_named_by_refusals_are_only_hints(
    monkeypatch: pytest.MonkeyPatch, rows: str, payloads: list[bytes | None]
) -> None:
    raw = raw_batch(payloads)
    expected = together(DECODER.decode(raw))
    with monkeypatch.context() as patched:
        _ReaderCalls(patched, rows)
        assert together(DECODER.decode(raw)) == expected


def _fetch(bad_positions: list[int], kinds: list[str]) -> RawBatch:
    payloads: list[bytes | None] = [event(number) for number in range(FETCH)]
    for position, kind in zip(bad_positions, kinds, strict=True):
        payloads[position] = BAD_JSON[kind]
    return raw_batch(payloads)


def dead_positions(decoded: DecodedBatch) -> list[int]:
    """The positions in their fetch of the dead letters, in order."""
    offsets = [offset for batch in decoded.dead_letters for offset in batch.column("offset").to_pylist()]
    return sorted(offset - FIRST_OFFSET for offset in offsets)


def _bound(bad: int) -> float:
    return BOUND_FACTOR * bad * math.log2(FETCH) + BOUND_FACTOR


def test_a_clean_fetch_is_one_reader_call(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _ReaderCalls(monkeypatch)
    assert DECODER.decode(_fetch([], [])).dead_letter_count == 0
    assert calls.count == 1


TYPE_MISMATCHES = ["string-for-int", "int-for-string", "float-for-int", "int-too-big", "two-bad-columns"]


@pytest.mark.parametrize("rows", ["as read", "none"])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    bad=st.lists(
        st.tuples(st.integers(0, FETCH - 1), st.sampled_from([*TYPE_MISMATCHES, "two-objects", "null"])),
        min_size=1,
        max_size=48,
        unique_by=lambda pair: pair[0],
    )
)
def test_reader_calls_grow_with_bad_records_not_with_the_fetch(
    monkeypatch: pytest.MonkeyPatch, rows: str, bad: list[tuple[int, str]]
) -> None:
    raw = _fetch([position for position, _ in bad], [kind for _, kind in bad])
    with monkeypatch.context() as patched:
        calls = _ReaderCalls(patched, rows)
        decoded = DECODER.decode(raw)
    assert decoded.dead_letter_count == len(bad)
    assert calls.count <= _bound(len(bad)), (calls.count, len(bad))


def test_named_rows_make_string_mismatches_cost_a_few_calls_each(monkeypatch: pytest.MonkeyPatch) -> None:
    positions = np.linspace(10, FETCH - 10, 41).astype(int).tolist()
    calls = _ReaderCalls(monkeypatch)
    decoded = DECODER.decode(_fetch(positions, ["string-for-int"] * len(positions)))
    assert dead_positions(decoded) == positions
    # locate (a refusal and a check of the named line), then find the column (a refusal at row 0), per record
    assert calls.count <= 3 * len(positions) + len(SCHEMA.payload_schema) + 3


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (event(1, amount_cents="n/a"), f"{TYPE_MISMATCH}: 'amount_cents' must be int64"),
        (event(1, event_id=5, amount_cents="x"), f"{TYPE_MISMATCH}: 'event_id' must be string"),
        (event(1, amount_cents=12.5), f"{TYPE_MISMATCH}: 'amount_cents' must be int64"),
        (event(1) + b" " + event(2), "undecodable JSON:"),
    ],
)
def test_reasons_are_the_same_in_a_large_dirty_fetch(payload: bytes, reason: str) -> None:
    raw = _fetch([], [])
    payloads = raw.payloads.to_pylist()
    for position in (0, 777, FETCH - 1):
        payloads[position] = payload
    decoded = DECODER.decode(raw_batch(payloads))
    assert dead_positions(decoded) == [0, 777, FETCH - 1]
    assert all(str(row["reason"]).startswith(reason) for row in dead_rows(decoded))
    assert decoded.events.num_rows == FETCH - 3


def test_a_fetch_with_a_newline_payload_keeps_the_rest_columnar(monkeypatch: pytest.MonkeyPatch) -> None:
    payloads = _fetch([], []).payloads.to_pylist()
    payloads[5] = PRETTY
    payloads[6] = None
    calls = _ReaderCalls(monkeypatch)
    decoded = DECODER.decode(raw_batch(payloads))
    assert decoded.events.num_rows == FETCH - 1
    assert decoded.events.column("event_id").to_pylist()[5] == "p1"
    assert calls.count == 1  # the guard fails without a read; then one read of every JSON object


@pytest.mark.parametrize("failing", [[], [0], [7], [0, 1, 2], [3, 500, 1_023], list(range(0, 1_024, 97))])
def test_failing_positions_bisects_only_failing_ranges(failing: list[int]) -> None:
    calls: list[tuple[int, int]] = []

    def passes(start: int, stop: int) -> bool:
        calls.append((start, stop))
        return not any(start <= position < stop for position in failing)

    assert failing_positions(1_024, passes) == failing
    assert len(calls) <= 2 * len(failing) * (math.log2(1_024) + 1) + 1


# Avro: a sloppy producer's schema lets amount_cents be a string or a double, where the column is int64.
AVRO_WRITER = {
    "type": "record",
    "name": "Order",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "amount_cents", "type": ["null", "long", "string", "double"]},
        {"name": "event_time_ms", "type": "long"},
    ],
}
AVRO_SCHEMA = EventSchema(
    SchemaConfig(
        format="avro",
        avro_schema=AVRO_WRITER,
        fields={"event_id": "string", "amount_cents": "int64", "event_time_ms": "int64"},
        required=["event_id"],
        checks=["is_null(amount_cents) or amount_cents >= 0"],
    )
)
AVRO_DECODER = AvroDecoder(AVRO_SCHEMA, AVRO_WRITER)
_PARSED_WRITER = fastavro.parse_schema(AVRO_WRITER)


def avro(number: int, amount: object) -> bytes:
    buffer = io.BytesIO()
    record = {"event_id": f"e{number}", "amount_cents": amount, "event_time_ms": 1_000 + number}
    fastavro.schemaless_writer(buffer, _PARSED_WRITER, record)
    return buffer.getvalue()


AVRO_AMOUNTS = [5, None, "n/a", 1e30, -3, 7.0, 12.5]  # pyarrow truncates 12.5 into int64: it fits


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(AVRO_AMOUNTS), st.just(b"\x02")), max_size=40))
def test_avro_batch_decodes_as_its_records_alone(amounts: list[object]) -> None:
    payloads = [amount if isinstance(amount, bytes) else avro(number, amount) for number, amount in enumerate(amounts)]
    raw = raw_batch(payloads)
    assert together(AVRO_DECODER.decode(raw)) == alone(AVRO_DECODER, raw)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    bad=st.lists(
        st.tuples(st.integers(0, FETCH - 1), st.sampled_from(["n/a", 1e30])),
        min_size=1,
        max_size=48,
        unique_by=lambda pair: pair[0],
    )
)
def test_avro_conversions_grow_with_misfits_not_with_the_fetch(
    monkeypatch: pytest.MonkeyPatch, bad: list[tuple[int, object]]
) -> None:
    amounts: list[object] = [100] * FETCH
    for position, amount in bad:
        amounts[position] = amount
    raw = raw_batch([avro(number, amount) for number, amount in enumerate(amounts)])
    conversions = 0
    converted = binary_codecs._converted

    def counted(values: list[Any], data_type: pa.DataType) -> pa.Array | None:
        nonlocal conversions
        conversions += 1
        return converted(values, data_type)

    with monkeypatch.context() as patched:
        patched.setattr(binary_codecs, "_converted", counted)
        decoded = AVRO_DECODER.decode(raw)
    assert decoded.dead_letter_count == len(bad)
    assert conversions <= _bound(len(bad)) + len(AVRO_SCHEMA.payload_schema)


def test_a_dirty_feed_is_checked_before_it_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a fetch with values of the wrong type, the next fetch is checked in that column first: one read
    instead of a refused read and a second one. Verdicts are the same; a clean fetch ends it."""
    decoder = codecs.JsonDecoder(SCHEMA)
    dirty = _fetch([10, 2_000], ["string-for-int", "string-for-int"])
    clean = _fetch([], [])
    first, reference = together(decoder.decode(dirty)), together(DECODER.decode(clean))
    passes: list[object] = []
    bad_lines = TypedLines.bad_lines

    def counted_bad_lines(*args: Any) -> Any:
        passes.append(args)
        return bad_lines(*args)

    with monkeypatch.context() as patched:
        patched.setattr(TypedLines, "bad_lines", counted_bad_lines)
        calls = _ReaderCalls(patched)
        assert together(decoder.decode(dirty)) == first
        assert (calls.count, len(passes)) == (1, 1), "checked, then read once"
        assert together(decoder.decode(clean)) == reference
        assert (calls.count, len(passes)) == (2, 2), "checked (nothing found), then read"
        decoder.decode(clean)
        assert (calls.count, len(passes)) == (3, 2), "a clean fetch is read at once again"
