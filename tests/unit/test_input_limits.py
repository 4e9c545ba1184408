"""Input limits: records over a size, header, nesting or event-time limit become dead letters with a reason,
decided per record (a record's verdict is its verdict alone), in JSON and Avro; malformed traceparents are
replaced by null and counted. No Ray, no Kafka."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import fastavro
import msgspec
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import pipelines.decode.input_limits as input_limits
from pipelines.config.pipeline import GeneratorSourceConfig, SchemaConfig
from pipelines.decode import codecs
from pipelines.decode.binary_codecs import AvroDecoder, RawBytesDecoder
from pipelines.decode.codecs import DecodedBatch, Decoder, JsonDecoder
from pipelines.decode.input_limits import nesting_depths, screen_input
from pipelines.decode.schema import EventSchema
from pipelines.io.generator import generate_events
from pipelines.io.kafka_records import raw_batch_from_records, traceparent_of
from pipelines.io.records import RawBatch
from pipelines.io.trace_context import is_valid_traceparent, valid_traceparents
from tests.unit.test_kafka_records import FakeConsumerRecord

NOW_MS = 1_767_225_600_000
RECORD_TIME_MS = NOW_MS - 50_000_000  # far from NOW_MS: a verdict shows which reference it was taken against
FIRST_OFFSET = 500
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
LIMITS: dict[str, Any] = {
    "max_record_bytes": 300,
    "max_nesting_depth": 4,
    "max_future_ms": 1_000,
    "max_past_ms": 2_000,
    "max_header_count": 3,
    "max_header_bytes": 60,
}
FIELDS: dict[str, Any] = {"id": "string", "t": "int64", "note": "string"}
JSON_SCHEMA = EventSchema(SchemaConfig(fields=FIELDS, event_time_field="t", checks=['note != "bad"'], **LIMITS))
AVRO_WRITER = {
    "type": "record",
    "name": "Note",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "t", "type": ["null", "long"]},
        {"name": "note", "type": "string"},
    ],
}
AVRO_SCHEMA = EventSchema(
    SchemaConfig(
        format="avro",
        avro_schema=AVRO_WRITER,
        fields=FIELDS,
        event_time_field="t",
        checks=['note != "bad"'],
        **LIMITS,
    )
)
_PARSED_WRITER = fastavro.parse_schema(AVRO_WRITER)


@dataclass(frozen=True)
class Record:
    """One record of a fetch as a source hands it over (header columns: None means no header information)."""

    payload: bytes | None
    timestamp: int | None = RECORD_TIME_MS
    traceparent: str | None = None
    header_count: int | None = None
    header_bytes: int | None = None


def raw_of(records: list[Record], with_headers: bool = True) -> RawBatch:
    count = len(records)
    return RawBatch(
        topic="notes",
        partition=2,
        offsets=pa.array(np.arange(FIRST_OFFSET, FIRST_OFFSET + count), pa.int64()),
        payloads=pa.array([record.payload for record in records], pa.binary()),
        keys=pa.nulls(count, pa.binary()),
        timestamps=pa.array([record.timestamp for record in records], pa.int64()),
        traceparents=pa.array([record.traceparent for record in records], pa.string()),
        header_counts=pa.array([r.header_count for r in records], pa.int32()) if with_headers else None,
        header_bytes=pa.array([r.header_bytes for r in records], pa.int64()) if with_headers else None,
    )


def json_record(number: int, t: object = RECORD_TIME_MS, note: str = "", **extra: Any) -> bytes:
    return msgspec.json.encode({"id": f"n{number}", "t": t, "note": note, **extra})


def avro_record(number: int, t: int | None = RECORD_TIME_MS, note: str = "") -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, _PARSED_WRITER, {"id": f"n{number}", "t": t, "note": note})
    return buffer.getvalue()


def sized(make: Callable[[str], bytes], size: int) -> bytes:
    """A record of exactly ``size`` bytes, padded in its note (Avro's length prefix grows with the note)."""
    guess = size - len(make(""))
    for length in range(guess, max(guess - 4, -1), -1):
        payload = make("x" * length)
        if len(payload) == size:
            return payload
    raise AssertionError(f"no record of {size} bytes")


def nested_json(depth: int) -> bytes:
    """A JSON object whose deepest value is ``depth`` levels down (the object itself is level 1)."""
    inner = b"[" * (depth - 1) + b"]" * (depth - 1)
    return b'{"id":"deep","note":"","t":' + str(RECORD_TIME_MS).encode() + b',"ignored":' + inner + b"}"


DECODERS: dict[str, tuple[Decoder, Callable[..., bytes]]] = {
    "json": (JsonDecoder(JSON_SCHEMA), json_record),
    "avro": (AvroDecoder(AVRO_SCHEMA, AVRO_WRITER), avro_record),
}


def verdicts(decoded: DecodedBatch) -> list[tuple[int, str, str]]:
    """(offset, error type, reason) of every record: ``("event", "")`` for the valid ones."""
    found = [(offset, "event", "") for offset in decoded.events.column("_offset").to_pylist()]
    rows = [row for batch in decoded.dead_letters for row in batch.to_pylist()]
    found += [(row["offset"], row["error_type"], row["reason"]) for row in rows]
    return sorted(found)


def verdict_of(decoder: Decoder, record: Record, now_ms: int | None = NOW_MS) -> tuple[str, str]:
    [(_, kind, reason)] = verdicts(decoder.decode(raw_of([record]), now_ms=now_ms))
    return kind, reason


# --- config ---------------------------------------------------------------------------------------------------


def test_limits_have_sane_defaults() -> None:
    config = SchemaConfig(fields={"a": "string"})
    assert (config.max_record_bytes, config.max_nesting_depth) == (1_048_576, 64)
    assert (config.max_future_ms, config.max_past_ms) == (3_600_000, None)
    assert (config.max_header_count, config.max_header_bytes) == (64, 65_536)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_record_bytes", 0),
        ("max_nesting_depth", 0),
        ("max_nesting_depth", 513),  # msgspec cannot check records much deeper
        ("max_future_ms", -1),
        ("max_past_ms", -1),
        ("max_header_count", -1),
        ("max_header_bytes", None),
    ],
)
def test_limits_are_checked(field: str, value: int | None) -> None:
    with pytest.raises(ValidationError, match=field):
        SchemaConfig.model_validate({"fields": {"a": "string"}, field: value})


def test_limits_can_be_turned_off() -> None:
    off = {"max_record_bytes": None, "max_nesting_depth": None, "max_future_ms": None, "max_past_ms": None}
    config = SchemaConfig.model_validate({"fields": {"a": "string"}, **off})
    assert config.model_dump(include=set(off)) == off


# --- record size ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", DECODERS)
def test_a_record_over_max_record_bytes_is_a_limit_dead_letter(kind: str) -> None:
    decoder, make = DECODERS[kind]
    at_limit = sized(lambda note: make(1, note=note), 300)
    over = sized(lambda note: make(2, note=note), 301)
    assert verdict_of(decoder, Record(at_limit)) == ("event", "")
    assert verdict_of(decoder, Record(over)) == ("limit", "record is 301 bytes, over schema.max_record_bytes (300)")


def test_a_huge_record_is_never_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    schema = EventSchema(SchemaConfig(fields=FIELDS))
    huge = sized(lambda note: json_record(1, note=note), 2_000_000)
    read_sizes: list[int] = []
    read = codecs._read_json

    def recorded(buffer: pa.Buffer, options: Any) -> Any:
        read_sizes.append(buffer.size)
        return read(buffer, options)

    monkeypatch.setattr(codecs, "_read_json", recorded)
    decoded = JsonDecoder(schema).decode(raw_of([Record(json_record(0)), Record(huge), Record(b"{")]))
    assert verdicts(decoded)[1] == (
        FIRST_OFFSET + 1,
        "limit",
        "record is 2,000,000 bytes, over schema.max_record_bytes (1,048,576)",
    )
    assert decoded.events.num_rows == 1
    assert max(read_sizes) < 1_000


def test_the_raw_decoder_applies_the_size_limit() -> None:
    schema = EventSchema(SchemaConfig(format="raw", fields={"value": "binary"}, max_record_bytes=4))
    decoded = RawBytesDecoder(schema).decode(raw_of([Record(b"1234"), Record(b"12345"), Record(None)]))
    assert [kind for _, kind, _ in verdicts(decoded)] == ["event", "limit", "event"]


# --- nesting --------------------------------------------------------------------------------------------------

JSON_DECODER = DECODERS["json"][0]


def test_a_record_nested_deeper_than_max_nesting_depth_is_a_limit_dead_letter() -> None:
    assert nesting_depths(pa.array([nested_json(4), nested_json(5)])).tolist() == [4, 5]
    assert verdict_of(JSON_DECODER, Record(nested_json(4))) == ("event", "")
    assert verdict_of(JSON_DECODER, Record(nested_json(5))) == (
        "limit",
        "JSON nesting depth 5 is over schema.max_nesting_depth (4)",
    )


@pytest.mark.parametrize(
    "payload",
    [
        json_record(1, note="[[[[[[{{{{{{"),  # brackets in a string
        json_record(1, note='\\"[[[[[[\\'),  # escaped quotes and backslashes around them
        json_record(1, rows=[[], [], {}, [1], {"a": []}]),  # many brackets, little depth
    ],
    ids=["in-a-string", "escapes", "wide"],
)
def test_brackets_that_do_not_nest_do_not_count(payload: bytes) -> None:
    assert payload.count(b"[") + payload.count(b"{") > 4
    assert verdict_of(JSON_DECODER, Record(payload)) == ("event", "")


def test_nesting_is_not_limited_in_avro() -> None:
    assert verdict_of(DECODERS["avro"][0], Record(avro_record(1, note="[" * 100))) == ("event", "")


def test_a_record_nested_100_000_deep_is_a_dead_letter_and_the_rest_decode() -> None:
    schema = EventSchema(SchemaConfig(fields=FIELDS))  # the default limit
    deep = nested_json(100_000)
    decoded = JsonDecoder(schema).decode(raw_of([Record(json_record(0)), Record(deep), Record(json_record(2))]))
    assert [kind for _, kind, _ in verdicts(decoded)] == ["event", "limit", "event"]
    assert verdicts(decoded)[1][2] == "JSON nesting depth 100,000 is over schema.max_nesting_depth (64)"


_WITHOUT_LIMIT = textwrap.dedent(
    """
    import pyarrow as pa, pyarrow.json as pa_json
    from pipelines.decode.codecs import JsonDecoder
    from pipelines.config.pipeline import SchemaConfig
    from pipelines.decode.schema import EventSchema
    from tests.unit.test_input_limits import FIELDS, Record, nested_json, raw_of, verdicts

    deep = nested_json(100_000)
    options = pa_json.ParseOptions(
        explicit_schema=pa.schema([pa.field("id", pa.string())]), unexpected_field_behavior="ignore"
    )
    print(pa_json.read_json(pa.BufferReader(deep), parse_options=options).to_pylist())
    schema = EventSchema(SchemaConfig(fields=FIELDS, max_nesting_depth=None))
    pretty = deep.replace(b'"t":', b'\\n"t":')  # not one line: msgspec reads it
    misfit = deep.replace(b'"deep"', b"7")  # a number for a string: msgspec explains it
    for _, kind, reason in verdicts(JsonDecoder(schema).decode(raw_of([Record(deep), Record(pretty), Record(misfit)]))):
        print(kind, reason)
    """
)


def test_without_a_nesting_limit_100_000_levels_do_not_crash_the_process() -> None:
    """In a subprocess: a crash of a parser must not take the test session with it. pyarrow's reader reads a
    deep value of an ignored field; msgspec refuses it with a RecursionError, which must not escape."""
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_LIMIT], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2_000:]
    assert done.stdout.splitlines() == [
        "[{'id': 'deep'}]",
        "event ",
        "undecodable undecodable JSON: nested too deeply to decode",
        "undecodable undecodable JSON: nested too deeply to decode",
    ]


def reference_depth(payload: bytes) -> int:
    """Byte by byte, the rule :func:`nesting_depths` states."""
    depth = deepest = backslashes = 0
    in_string = False
    for byte in payload:
        if byte == ord('"') and backslashes % 2 == 0:
            in_string = not in_string
        elif not in_string and byte in b"{[":
            depth += 1
            deepest = max(deepest, depth)
        elif not in_string and byte in b"}]":
            depth -= 1
        backslashes = backslashes + 1 if byte == ord("\\") else 0
    return deepest


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.binary(max_size=40).map(lambda b: bytes(b'{}[]"\\ a'[x % 8] for x in b)))))
def test_nesting_depths_follow_their_rule_record_by_record(payloads: list[bytes | None]) -> None:
    expected = [0 if payload is None else reference_depth(payload) for payload in payloads]
    assert nesting_depths(pa.array(payloads, pa.binary())).tolist() == expected


json_values = st.recursive(
    st.none() | st.integers() | st.text(alphabet='{}[]"\\ab'),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet='{["\\k'), inner, max_size=3),
    max_leaves=20,
)


def true_depth(value: object) -> int:
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
    if children is None:
        return 0
    return 1 + max((true_depth(child) for child in children), default=0)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_nesting_depth_of_json_is_its_depth(value: object) -> None:
    assert nesting_depths(pa.array([msgspec.json.encode(value)])).tolist() == [true_depth(value)]


# --- event time -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", DECODERS)
@pytest.mark.parametrize(
    ("lead_ms", "expected"),
    [
        (1_000, ("event", "")),
        (1_001, ("timestamp", "event time is more than schema.max_future_ms (1,000) ahead of the record's timestamp")),
        (-2_000, ("event", "")),
        (-2_001, ("timestamp", "event time is more than schema.max_past_ms (2,000) behind the record's timestamp")),
    ],
)
def test_event_time_is_checked_against_the_record_timestamp(kind: str, lead_ms: int, expected: tuple[str, str]) -> None:
    decoder, make = DECODERS[kind]
    assert verdict_of(decoder, Record(make(1, t=RECORD_TIME_MS + lead_ms))) == expected


@pytest.mark.parametrize("kind", DECODERS)
@pytest.mark.parametrize("record_time_ms", [None, -1], ids=["none", "kafka-no-timestamp"])
@pytest.mark.parametrize(
    ("lead_ms", "expected"),
    [
        (1_000, ("event", "")),
        (
            1_001,
            ("timestamp", "event time is more than schema.max_future_ms (1,000) ahead of the time the record was read"),
        ),
        (
            -2_001,
            ("timestamp", "event time is more than schema.max_past_ms (2,000) behind the time the record was read"),
        ),
    ],
)
def test_without_a_record_timestamp_event_time_is_checked_against_the_injected_clock(
    kind: str, record_time_ms: int | None, lead_ms: int, expected: tuple[str, str]
) -> None:
    decoder, make = DECODERS[kind]
    assert verdict_of(decoder, Record(make(1, t=NOW_MS + lead_ms), timestamp=record_time_ms)) == expected


def test_without_a_clock_records_without_a_timestamp_are_not_checked() -> None:
    record = Record(json_record(1, t=NOW_MS + 10**9), timestamp=None)
    assert verdict_of(JSON_DECODER, record, now_ms=None) == ("event", "")


def test_the_record_timestamp_is_the_reference_when_there_is_one() -> None:
    assert verdict_of(JSON_DECODER, Record(json_record(1, t=RECORD_TIME_MS))) == ("event", "")  # 50,000 s ago


@pytest.mark.parametrize("t", [2**62, -(2**62)])
def test_an_absurd_event_time_is_rejected_without_overflow(t: int) -> None:
    assert verdict_of(JSON_DECODER, Record(json_record(1, t=t)))[0] == "timestamp"


def test_a_missing_event_time_falls_back_to_the_record_timestamp_and_passes() -> None:
    assert verdict_of(JSON_DECODER, Record(json_record(1, t=None))) == ("event", "")


def test_the_schema_rules_come_before_the_event_time_limits() -> None:
    bad_and_late = Record(json_record(1, t=RECORD_TIME_MS + 10**6, note="bad"))
    assert verdict_of(JSON_DECODER, bad_and_late) == ("invalid", 'check failed: note != "bad"')


def test_time_limits_can_be_off() -> None:
    schema = EventSchema(SchemaConfig(fields=FIELDS, event_time_field="t", max_future_ms=None))
    assert verdict_of(JsonDecoder(schema), Record(json_record(1, t=RECORD_TIME_MS + 10**9))) == ("event", "")


# --- headers --------------------------------------------------------------------------------------------------


def kafka_record(offset: int, headers: Sequence[tuple[str, bytes | None]]) -> FakeConsumerRecord:
    return FakeConsumerRecord(offset, json_record(offset), timestamp=RECORD_TIME_MS, headers=tuple(headers))


def test_the_kafka_edge_records_header_counts_and_bytes() -> None:
    records = [
        kafka_record(1, []),
        kafka_record(2, [("a", b"12"), ("é", None)]),  # a name counts in UTF-8, a null value as 0 bytes
        kafka_record(3, [("traceparent", TRACEPARENT.encode())]),
    ]
    raw = raw_batch_from_records("notes", 0, records)
    assert raw.header_counts is not None and raw.header_bytes is not None
    assert raw.header_counts.to_pylist() == [0, 2, 1]
    assert raw.header_bytes.to_pylist() == [0, 5, 11 + 55]
    taken = raw.take(pa.array([2, 0]))
    assert taken.header_counts is not None and taken.header_bytes is not None
    assert (taken.header_counts.to_pylist(), taken.header_bytes.to_pylist()) == ([1, 0], [66, 0])


@pytest.mark.parametrize("kind", DECODERS)
def test_header_limits(kind: str) -> None:
    decoder, make = DECODERS[kind]
    payload = make(1)
    assert verdict_of(decoder, Record(payload, header_count=3, header_bytes=60)) == ("event", "")
    assert verdict_of(decoder, Record(payload, header_count=4, header_bytes=10)) == (
        "limit",
        "record has 4 headers, over schema.max_header_count (3)",
    )
    assert verdict_of(decoder, Record(payload, header_count=1, header_bytes=61)) == (
        "limit",
        "record headers are 61 bytes, over schema.max_header_bytes (60)",
    )
    assert verdict_of(decoder, Record(payload, header_count=None, header_bytes=None)) == ("event", "")


def test_header_limits_through_the_kafka_edge() -> None:
    records = [
        kafka_record(1, [("h", b"")] * 3),
        kafka_record(2, [("h", b"")] * 4),
        kafka_record(3, [("h", b"x" * 59)]),
        kafka_record(4, [("h", b"x" * 60)]),
    ]
    decoded = JSON_DECODER.decode(raw_batch_from_records("notes", 0, records), now_ms=NOW_MS)
    assert [(offset, kind) for offset, kind, _ in verdicts(decoded)] == [
        (1, "event"),
        (2, "limit"),
        (3, "event"),
        (4, "limit"),
    ]


def test_a_batch_without_header_information_is_not_header_checked() -> None:
    decoded = JSON_DECODER.decode(raw_of([Record(json_record(1))], with_headers=False), now_ms=NOW_MS)
    assert decoded.events.num_rows == 1


# --- traceparent ----------------------------------------------------------------------------------------------

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT_CASES = {
    "valid": (TRACEPARENT, True),
    "not-sampled": (f"00-{TRACE_ID}-{SPAN_ID}-00", True),
    "uppercase-hex": (f"00-{TRACE_ID.upper()}-{SPAN_ID}-01", False),
    "zero-trace-id": (f"00-{'0' * 32}-{SPAN_ID}-01", False),
    "zero-span-id": (f"00-{TRACE_ID}-{'0' * 16}-01", False),
    "version-ff": (f"ff-{TRACE_ID}-{SPAN_ID}-01", False),
    "too-short": (TRACEPARENT[:-1], False),
    "non-ascii": (f"00-{TRACE_ID[:-1]}é-{SPAN_ID}-01", False),
    "future-version-extra-field": (f"cc-{TRACE_ID}-{SPAN_ID}-01-what-the-future-will-be-like", True),
    "future-version-exact": (f"01-{TRACE_ID}-{SPAN_ID}-01", True),
    "future-version-no-dash-after": (f"01-{TRACE_ID}-{SPAN_ID}-01x", False),
    "version-00-extra-field": (f"{TRACEPARENT}-extra", False),
    "whitespace": (f" {TRACEPARENT}", False),
    "empty": ("", False),
    "placeholder": ("tp0", False),
}


@pytest.mark.parametrize(("value", "valid"), TRACEPARENT_CASES.values(), ids=TRACEPARENT_CASES.keys())
def test_traceparents_are_validated_by_the_w3c_rules(value: str, valid: bool) -> None:
    assert is_valid_traceparent(value) is valid
    column, dropped = valid_traceparents(pa.array([value, None], pa.string()))
    assert column.to_pylist() == [value if valid else None, None]
    assert dropped == (0 if valid else 1)


def test_a_column_of_valid_traceparents_is_kept_as_it_is() -> None:
    column = pa.array([TRACEPARENT, None], pa.string())
    assert valid_traceparents(column) == (column, 0)
    assert valid_traceparents(column)[0] is column


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([("traceparent", TRACEPARENT.encode())], TRACEPARENT),
        ([("traceparent", TRACEPARENT.upper().encode())], None),
        ([("traceparent", b"\xff" + TRACEPARENT.encode()[1:])], None),
        ([("traceparent", b""), ("traceparent", TRACEPARENT.encode())], TRACEPARENT),
        ([("traceparent", b"00-nope"), ("traceparent", TRACEPARENT.encode())], None),
    ],
    ids=["valid", "uppercase", "non-ascii-bytes", "first-non-empty", "the-first-decides"],
)
def test_traceparent_of_returns_only_a_valid_one(headers: list[tuple[str, bytes]], expected: str | None) -> None:
    assert traceparent_of(headers) == expected


def test_malformed_traceparents_become_null_and_are_counted_at_the_edge_and_in_the_decoder() -> None:
    records = [
        kafka_record(1, [("traceparent", TRACEPARENT.encode())]),
        kafka_record(2, [("traceparent", b"\xfe\xff")]),
        kafka_record(3, [("traceparent", b"")]),  # empty: no context, not malformed
        kafka_record(4, []),
    ]
    raw = raw_batch_from_records("notes", 0, records)
    assert raw.traceparents.to_pylist() == [TRACEPARENT, None, None, None]
    assert raw.dropped_traceparents == 1
    assert JSON_DECODER.decode(raw, now_ms=NOW_MS).dropped_traceparents == 1
    decoded = JSON_DECODER.decode(
        raw_of([Record(json_record(1), traceparent="00-bad"), Record(b"{", traceparent="00-bad")]), now_ms=NOW_MS
    )
    assert decoded.dropped_traceparents == 2
    assert decoded.events.column("_traceparent").to_pylist() == [None]
    assert decoded.dead_letters[0].column("traceparent").to_pylist() == [None]  # never copied into a dead letter


# --- per record, whatever the batch ---------------------------------------------------------------------------


def json_kinds() -> dict[str, Record]:
    return {
        "plain": Record(json_record(1)),
        "at-size": Record(sized(lambda note: json_record(2, note=note), 300)),
        "oversize": Record(sized(lambda note: json_record(3, note=note), 301)),
        "oversize-and-deep": Record(nested_json(200)),
        "at-depth": Record(nested_json(4)),
        "deep": Record(nested_json(5)),
        "brackets-in-string": Record(json_record(4, note="[[[[[[[[")),
        "deep-invalid-json": Record(b"[[[[[[[[[["),
        "undecodable": Record(b'{"id":'),
        "mismatch": Record(json_record(5, t="soon")),
        "check-fails": Record(json_record(6, note="bad")),
        "future": Record(json_record(7, t=RECORD_TIME_MS + 1_001)),
        "past": Record(json_record(8, t=RECORD_TIME_MS - 2_001)),
        "future-by-clock": Record(json_record(9, t=NOW_MS + 1_001), timestamp=None),
        "many-headers": Record(json_record(10), header_count=4, header_bytes=4),
        "big-headers": Record(json_record(11), header_count=1, header_bytes=61),
        "bad-traceparent": Record(json_record(12), traceparent="00-x"),
        "good-traceparent": Record(json_record(13), traceparent=TRACEPARENT),
        "null": Record(None),
        "pretty": Record(b'{\n "id": "p", "note": "", "t": ' + str(RECORD_TIME_MS).encode() + b"}"),
    }


def avro_kinds() -> dict[str, Record]:
    return {
        "plain": Record(avro_record(1)),
        "at-size": Record(sized(lambda note: avro_record(2, note=note), 300)),
        "oversize": Record(sized(lambda note: avro_record(3, note=note), 301)),
        "undecodable": Record(b"\x02"),
        "check-fails": Record(avro_record(6, note="bad")),
        "future": Record(avro_record(7, t=RECORD_TIME_MS + 1_001)),
        "past-by-clock": Record(avro_record(8, t=NOW_MS - 2_001), timestamp=None),
        "many-headers": Record(avro_record(10), header_count=4, header_bytes=4),
        "bad-traceparent": Record(avro_record(12), traceparent="01-x"),
        "null": Record(None),
    }


def together_and_alone(decoder: Decoder, records: list[Record]) -> tuple[Any, Any]:
    raw = raw_of(records)
    together = decoder.decode(raw, now_ms=NOW_MS)
    alone = [decoder.decode(raw.take(pa.array([index])), now_ms=NOW_MS) for index in range(len(raw))]
    events_alone = [event for decoded in alone for event in decoded.events.to_pylist()]
    return (
        (together.events.to_pylist(), verdicts(together), together.dropped_traceparents),
        (
            events_alone,
            sorted(v for decoded in alone for v in verdicts(decoded)),
            sum(d.dropped_traceparents for d in alone),
        ),
    )


def in_offset_order(decoded: DecodedBatch) -> bool:
    return all(
        batch.column("offset").to_pylist() == sorted(batch.column("offset").to_pylist())
        for batch in decoded.dead_letters
    )


JSON_KINDS = json_kinds()
AVRO_KINDS = avro_kinds()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(list(JSON_KINDS)), max_size=30))
def test_json_verdicts_are_the_records_verdicts_alone(kinds: list[str]) -> None:
    records = [JSON_KINDS[kind] for kind in kinds]
    together, alone = together_and_alone(JSON_DECODER, records)
    assert together == alone
    assert in_offset_order(JSON_DECODER.decode(raw_of(records), now_ms=NOW_MS))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(list(AVRO_KINDS)), max_size=30))
def test_avro_verdicts_are_the_records_verdicts_alone(kinds: list[str]) -> None:
    records = [AVRO_KINDS[kind] for kind in kinds]
    together, alone = together_and_alone(DECODERS["avro"][0], records)
    assert together == alone


def test_each_kind_gets_the_verdict_it_is_named_for() -> None:
    expected = {
        "oversize": "limit",
        "oversize-and-deep": "limit",
        "deep": "limit",
        "deep-invalid-json": "limit",
        "undecodable": "undecodable",
        "null": "undecodable",
        "mismatch": "invalid",
        "check-fails": "invalid",
        "future": "timestamp",
        "past": "timestamp",
        "future-by-clock": "timestamp",
        "past-by-clock": "timestamp",
        "many-headers": "limit",
        "big-headers": "limit",
    }
    for kinds, decoder in ((JSON_KINDS, JSON_DECODER), (AVRO_KINDS, DECODERS["avro"][0])):
        for name, record in kinds.items():
            assert verdict_of(decoder, record)[0] == expected.get(name, "event"), name
    assert verdict_of(JSON_DECODER, JSON_KINDS["oversize-and-deep"])[1].startswith("record is")  # size first


def test_a_clean_fetch_is_screened_without_a_copy() -> None:
    raw = raw_of([Record(json_record(number)) for number in range(100)])
    screening = screen_input(JSON_SCHEMA.config, raw, json_nesting=True)
    assert screening.within is raw
    assert (screening.dead_letters, screening.dropped_traceparents) == ([], 0)


header_values = st.sampled_from([b"", TRACEPARENT.encode(), TRACEPARENT.upper().encode(), b"\xff", b"00-x"])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.tuples(st.sampled_from(["traceparent", "other"]), header_values), max_size=3), max_size=8))
def test_the_edge_keeps_what_traceparent_of_keeps(headers: list[list[tuple[str, bytes]]]) -> None:
    raw = raw_batch_from_records("notes", 0, [kafka_record(offset, h) for offset, h in enumerate(headers)])
    kept = [traceparent_of(h) for h in headers]
    assert raw.traceparents.to_pylist() == kept
    had_one = [any(name == "traceparent" and value for name, value in h) for h in headers]
    assert raw.dropped_traceparents == sum(1 for one, k in zip(had_one, kept, strict=True) if one and k is None)


# --- nesting in large fetches: the cheap bound never lets a deep record through ---------------------------------

NESTING_ONLY = SchemaConfig(fields=FIELDS, max_nesting_depth=4, max_record_bytes=None, max_future_ms=None)
bracket_heavy = st.binary(max_size=300).map(lambda data: bytes(b'{}[]"\\ a{['[byte % 10] for byte in data))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.none(), bracket_heavy), max_size=40))
def test_screening_flags_exactly_the_records_nested_too_deep(payloads: list[bytes | None]) -> None:
    raw = raw_of([Record(payload) for payload in payloads])
    screening = screen_input(NESTING_ONLY, raw, json_nesting=True)
    flagged = [
        offset - FIRST_OFFSET for batch in screening.dead_letters for offset in batch.column("offset").to_pylist()
    ]
    depths = nesting_depths(pa.array(payloads, pa.binary())).tolist()
    assert flagged == [index for index, depth in enumerate(depths) if depth > 4]


@pytest.mark.parametrize("position", [0, 1_000, 4_095])
def test_one_deep_record_in_a_fetch_of_generator_events(position: int) -> None:
    generated = generate_events(GeneratorSourceConfig(invalid_fraction=0), 0, 0, 4_096, RECORD_TIME_MS)
    payloads = generated.payloads.to_pylist()
    payloads[position] = nested_json(65)
    payloads[(position + 7) % 4_096] = json_record(1, rows=[[{"a": [1]}] for _ in range(200)])  # wide, 3 deep
    raw = raw_of([Record(payload) for payload in payloads])
    schema = EventSchema(SchemaConfig(fields={"event_id": "string", "event_time_ms": "int64"}))
    decoded = JsonDecoder(schema).decode(raw, now_ms=NOW_MS)
    assert [(offset - FIRST_OFFSET, kind) for offset, kind, _ in verdicts(decoded) if kind != "event"] == [
        (position, "limit")
    ]


def test_traceparents_the_kafka_edge_checked_are_not_checked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    records = [
        FakeConsumerRecord(offset=0, value=b"{}", headers=(("traceparent", good.encode()),)),
        FakeConsumerRecord(offset=1, value=b"{}", headers=(("traceparent", b"00-forged"),)),
    ]
    raw = raw_batch_from_records("t", 0, records)
    calls: list[int] = []

    def counted(column: pa.Array) -> tuple[pa.Array, int]:
        calls.append(len(column))
        return valid_traceparents(column)

    monkeypatch.setattr(input_limits, "valid_traceparents", counted)
    screening = screen_input(SchemaConfig(fields={"a": "string"}), raw, json_nesting=True)

    assert calls == [], "checked once, at the edge"
    assert screening.within.traceparents.to_pylist() == [good, None]
    assert screening.dropped_traceparents == 1
    unchecked = RawBatch("t", 0, raw.offsets, raw.payloads, raw.keys, raw.timestamps, pa.array([good, "00-forged"]))
    assert screen_input(SchemaConfig(fields={"a": "string"}), unchecked, json_nesting=True).dropped_traceparents == 1
    assert calls == [2]
