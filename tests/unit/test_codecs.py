"""JsonDecoder: columnar decoding, metadata columns, and every kind of bad record ending as a dead letter."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pytest

from pipelines.config.pipeline import GeneratorSourceConfig, load_config
from pipelines.decode.codecs import DecodedBatch, JsonDecoder
from pipelines.decode.schema import METADATA_FIELDS, EventSchema
from pipelines.io.generator import generate_events
from pipelines.io.records import DEAD_LETTER_SCHEMA, RawBatch

REPO = Path(__file__).resolve().parents[2]
ORDERS_YAML = REPO / "configs" / "orders.yaml"
CONFIG = load_config(ORDERS_YAML)
SCHEMA = EventSchema(CONFIG.all_inputs[0].schema)
DECODER = JsonDecoder(SCHEMA)
PARTITION = 3
FIRST_OFFSET = 100
SECRET = "SECRET-7f3a"

CHECK_EVENT_TYPE = (
    'check failed: event_type in ["UserRegistered", "OrderCreated", "PaymentProcessed", '
    '"ShipmentDispatched", "InventoryUpdated"]'
)
CHECK_AMOUNT = "check failed: is_null(amount_cents) or amount_cents >= 0"
TYPE_MISMATCH = "a value does not match the schema's column type"


def event(number: int, **fields: object) -> bytes:
    record: dict[str, object] = {
        "event_id": f"e{number}",
        "event_type": "OrderCreated",
        "event_time_ms": 1_000 + number,
        "customer_id": f"c{number % 3}",
        "amount_cents": 100 * number,
        "currency": "EUR",
        "unused_extra_field": {"nested": [1, 2]},
    }
    record.update(fields)
    return msgspec.json.encode(record)


def traceparent(number: int) -> str:
    """A valid W3C traceparent, different per record (malformed ones are dropped by the decoders)."""
    return f"00-{number + 1:032x}-{number + 1:016x}-01"


def raw_batch(payloads: Sequence[bytes | None], timestamps: list[int | None] | None = None) -> RawBatch:
    count = len(payloads)
    return RawBatch(
        topic="orders",
        partition=PARTITION,
        offsets=pa.array(np.arange(FIRST_OFFSET, FIRST_OFFSET + count), pa.int64()),
        payloads=pa.array(payloads, pa.binary()),
        keys=pa.array([f"k{i}".encode() for i in range(count)], pa.binary()),
        timestamps=pa.nulls(count, pa.int64()) if timestamps is None else pa.array(timestamps, pa.int64()),
        traceparents=pa.array([traceparent(i) for i in range(count)], pa.string()),
    )


def dead_rows(decoded: DecodedBatch) -> list[dict[str, Any]]:
    rows = [row for batch in decoded.dead_letters for row in batch.to_pylist()]
    return sorted(rows, key=lambda row: row["offset"])


def decode(payloads: Sequence[bytes | None]) -> DecodedBatch:
    decoded = DECODER.decode(raw_batch(payloads))
    assert decoded.events.num_rows + decoded.dead_letter_count == len(payloads)
    for batch in decoded.dead_letters:
        assert batch.schema == DEAD_LETTER_SCHEMA
    return decoded


def test_clean_batch_decodes_fully_with_metadata() -> None:
    payloads = [event(i) for i in range(5)]
    decoded = decode(payloads)
    assert decoded.dead_letters == []
    assert decoded.dead_letter_count == 0
    events = decoded.events
    assert CONFIG.schema_ is not None
    assert events.schema.names == [*CONFIG.schema_.fields, *(f.name for f in METADATA_FIELDS)]
    assert events.column("event_id").to_pylist() == [f"e{i}" for i in range(5)]
    assert events.column("amount_cents").to_pylist() == [0, 100, 200, 300, 400]
    assert events.column("customer_id").to_pylist() == ["c0", "c1", "c2", "c0", "c1"]
    assert events.column("order_id").to_pylist() == [None] * 5  # absent in JSON: null
    assert events.column("_partition").to_pylist() == [PARTITION] * 5
    assert events.column("_offset").to_pylist() == list(range(FIRST_OFFSET, FIRST_OFFSET + 5))
    assert events.column("_timestamp").to_pylist() == [1_000 + i for i in range(5)]
    assert events.column("_event_id").to_pylist() == [f"e{i}" for i in range(5)]
    assert events.column("_key").to_pylist() == [f"k{i}".encode() for i in range(5)]
    assert events.column("_traceparent").to_pylist() == [traceparent(i) for i in range(5)]
    assert events.schema.field("_partition").type == pa.int32()
    assert events.schema.field("amount_cents").type == pa.int64()


def test_empty_batch_decodes_to_no_rows() -> None:
    decoded = decode([])
    assert decoded.events.num_rows == 0
    assert decoded.dead_letter_count == 0
    assert decoded.events.schema.names == SCHEMA.batch_schema.names


def test_event_time_falls_back_to_record_timestamp() -> None:
    schema = EventSchema(CONFIG.all_inputs[0].schema.model_copy(update={"required": []}))
    payloads = [event(0), event(1, event_time_ms=None)]
    decoded = JsonDecoder(schema).decode(raw_batch(payloads, timestamps=[5, 77]))
    assert decoded.events.column("_timestamp").to_pylist() == [1_000, 77]


def test_unicode_values_survive() -> None:
    decoded = decode([event(0, customer_id="Zoë 東京")])
    assert decoded.events.column("customer_id").to_pylist() == ["Zoë 東京"]


PRETTY = b'{\n  "event_id": "p1",\n  "event_type": "OrderCreated",\n  "event_time_ms": 7\n}'


@pytest.mark.parametrize("position", [0, 1, 2])
def test_pretty_printed_object_with_newlines_decodes(position: int) -> None:
    payloads: list[bytes | None] = [event(10), event(11)]
    payloads.insert(position, PRETTY)
    decoded = decode(payloads)
    assert decoded.dead_letter_count == 0
    ids = decoded.events.column("event_id").to_pylist()
    assert ids[position] == "p1"
    assert decoded.events.column("_offset").to_pylist() == [100, 101, 102]
    assert decoded.events.column("event_time_ms").to_pylist()[position] == 7


BAD_RECORDS = [
    pytest.param(
        b'{"event_id":"' + SECRET.encode() + b'","event_type":', "undecodable JSON:", "undecodable", id="truncated"
    ),
    pytest.param(b"", "empty or null payload", "undecodable", id="empty"),
    pytest.param(None, "empty or null payload", "undecodable", id="null"),
    pytest.param(b'["' + SECRET.encode() + b'", 2]', "JSON value is a list, not an object", "undecodable", id="array"),
    pytest.param(b'"' + SECRET.encode() + b'"', "JSON value is a str, not an object", "undecodable", id="string"),
    pytest.param(b"   ", "undecodable JSON:", "undecodable", id="whitespace"),
    pytest.param(event(1, amount_cents="12"), TYPE_MISMATCH, "invalid", id="string-for-int"),
    pytest.param(event(1, amount_cents=12.5), TYPE_MISMATCH, "invalid", id="float-for-int"),
    pytest.param(event(1, event_id=17), TYPE_MISMATCH, "invalid", id="int-for-string"),
    pytest.param(event(1, event_time_ms=10**30), TYPE_MISMATCH, "invalid", id="int-too-big"),
    pytest.param(event(1, email=SECRET, event_time_ms=SECRET), TYPE_MISMATCH, "invalid", id="secret-in-field"),
    pytest.param(event(1) + b" " + event(2), "undecodable JSON:", "undecodable", id="two-objects"),
    pytest.param(
        b'{"event_id":"e\xff","event_type":"OrderCreated","event_time_ms":1}',
        "payload is not valid UTF-8",
        "undecodable",
        id="invalid-utf8",
    ),
    pytest.param(
        event(1).replace(b'"nested"', b'"nest\xffed"'),  # in a field the schema ignores: still not JSON text
        "payload is not valid UTF-8",
        "undecodable",
        id="invalid-utf8-in-extra-field",
    ),
    pytest.param(
        event(1, event_time_ms=None), "required field 'event_time_ms' is missing or null", "invalid", id="null-required"
    ),
    pytest.param(
        b'{"event_id":"e1","event_type":"OrderCreated","email":"' + SECRET.encode() + b'"}',
        "required field 'event_time_ms' is missing or null",
        "invalid",
        id="missing-required",
    ),
    pytest.param(event(1, event_type=SECRET), CHECK_EVENT_TYPE, "invalid", id="unknown-event-type"),
    pytest.param(event(1, amount_cents=-5), CHECK_AMOUNT, "invalid", id="negative-amount"),
]


@pytest.mark.parametrize(("payload", "reason", "error_type"), BAD_RECORDS)
@pytest.mark.parametrize("position", [0, 2, 4])
def test_bad_record_becomes_a_dead_letter(payload: bytes | None, reason: str, error_type: str, position: int) -> None:
    payloads: list[bytes | None] = [event(i) for i in range(4)]
    payloads.insert(position, payload)
    decoded = decode(payloads)

    dead = dead_rows(decoded)
    assert len(dead) == 1
    row = dead[0]
    assert str(row["reason"]).startswith(reason)
    assert row["error_type"] == error_type
    assert row["payload"] == payload  # the original bytes, untouched
    assert row["offset"] == FIRST_OFFSET + position
    assert row["partition"] == PARTITION
    assert row["topic"] == "orders"
    assert row["key"] == f"k{position}".encode()
    assert row["traceparent"] == traceparent(position)
    assert SECRET not in str(row["reason"])

    # the valid rows keep their order and their own offsets
    expected_offsets = [FIRST_OFFSET + i for i in range(5) if i != position]
    assert decoded.events.column("_offset").to_pylist() == expected_offsets
    assert decoded.events.column("event_id").to_pylist() == [f"e{i}" for i in range(4)]


def test_many_bad_records_mixed_keep_counts_offsets_and_reasons() -> None:
    payloads: list[bytes | None] = [
        event(0),
        b'{"event_id":',
        None,
        PRETTY,
        event(1, amount_cents="x"),
        event(2),
        event(3, event_type="Nope"),
        b"[]",
        event(4, amount_cents=-1),
        event(5, event_time_ms=None),
        b"",
        event(6),
    ]
    decoded = decode(payloads)
    assert decoded.events.column("event_id").to_pylist() == ["e0", "p1", "e2", "e6"]
    assert decoded.events.column("_offset").to_pylist() == [100, 103, 105, 111]
    by_offset = {row["offset"]: row for row in dead_rows(decoded)}
    assert sorted(by_offset) == [101, 102, 104, 106, 107, 108, 109, 110]
    expected = {
        101: ("undecodable JSON:", "undecodable"),
        102: ("empty or null payload", "undecodable"),
        104: (TYPE_MISMATCH, "invalid"),
        106: (CHECK_EVENT_TYPE, "invalid"),
        107: ("JSON value is a list", "undecodable"),
        108: (CHECK_AMOUNT, "invalid"),
        109: ("required field 'event_time_ms'", "invalid"),
        110: ("empty or null payload", "undecodable"),
    }
    for offset, (reason, error_type) in expected.items():
        row = by_offset[offset]
        assert str(row["reason"]).startswith(reason), (offset, row["reason"])
        assert row["error_type"] == error_type
        assert row["payload"] == payloads[offset - FIRST_OFFSET]


def test_required_is_reported_before_checks() -> None:
    decoded = decode([event(1, event_time_ms=None, amount_cents=-5)])
    assert dead_rows(decoded)[0]["reason"] == "required field 'event_time_ms' is missing or null"


def test_first_failing_check_is_the_reason() -> None:
    decoded = decode([event(1, event_type="Nope", amount_cents=-5)])
    assert dead_rows(decoded)[0]["reason"] == CHECK_EVENT_TYPE


def test_all_bad_batch_gives_no_events() -> None:
    decoded = decode([None, b"", b"{"])
    assert decoded.events.num_rows == 0
    assert decoded.events.schema.names == SCHEMA.batch_schema.names
    assert [row["offset"] for row in dead_rows(decoded)] == [100, 101, 102]


@pytest.mark.parametrize("path", ["fast", "slow"])
def test_invalid_utf8_becomes_a_dead_letter(path: str) -> None:
    bad = b'{"event_id":"e\xff","event_type":"OrderCreated","event_time_ms":1}'
    payloads: list[bytes | None] = [event(0), bad]
    if path == "slow":
        payloads.append(b"")  # an empty payload sends the batch down the record-by-record path
    decoded = decode(payloads)
    decoded.events.validate(full=True)
    assert decoded.events.column("_offset").to_pylist() == [100]
    assert [row["offset"] for row in dead_rows(decoded)] == [101, 102][: len(payloads) - 1]


@pytest.mark.parametrize("empty", [None, b""])
def test_empty_payload_next_to_a_two_line_payload_is_not_misaligned(empty: bytes | None) -> None:
    two_lines = event(1) + b"\n" + event(2)
    decoded = decode([empty, two_lines])
    assert decoded.events.num_rows == 0
    assert [row["offset"] for row in dead_rows(decoded)] == [100, 101]


@pytest.mark.parametrize(
    ("payload", "column", "kind"),
    [
        (event(1, amount_cents="12"), "amount_cents", "int64"),
        (event(1, event_id=17), "event_id", "string"),
        (event(1, event_time_ms=10**30), "event_time_ms", "int64"),
        (event(1, currency=["EUR"]), "currency", "string"),
    ],
)
def test_type_mismatch_names_the_column(payload: bytes, column: str, kind: str) -> None:
    decoded = decode([event(0), payload])
    assert [row["reason"] for row in dead_rows(decoded)] == [f"{TYPE_MISMATCH}: {column!r} must be {kind}"]


def test_json_whitespace_around_payloads_is_fine() -> None:
    payloads: list[bytes | None] = [b"  " + event(0) + b"\r\n", event(1) + b"\n", b"\t" + event(2), event(3)]
    decoded = decode(payloads)
    assert decoded.dead_letters == []
    assert decoded.events.column("event_id").to_pylist() == ["e0", "e1", "e2", "e3"]
    assert decoded.events.column("_offset").to_pylist() == [100, 101, 102, 103]


def test_generated_events_decode_with_the_generator_invalid_kinds() -> None:
    config = GeneratorSourceConfig(invalid_fraction=0.2, seed=5)
    generated = generate_events(config, partition=2, start=1_000, count=2_000, start_ms=1_700_000_000_000)
    count = len(generated.offsets)
    raw = RawBatch(
        topic="generator",
        partition=2,
        offsets=pa.array(generated.offsets),
        payloads=generated.payloads,
        keys=pa.nulls(count, pa.binary()),
        timestamps=pa.nulls(count, pa.int64()),
        traceparents=pa.nulls(count, pa.string()),
    )
    decoded = DECODER.decode(raw)
    kinds = generated.invalid_kind
    valid_offsets = generated.offsets[kinds == ""].tolist()
    assert decoded.events.column("_offset").to_pylist() == valid_offsets
    assert decoded.events.column("_timestamp").to_pylist() == generated.event_time_ms[kinds == ""].tolist()

    dead = {row["offset"]: row for row in dead_rows(decoded)}
    assert sorted(dead) == generated.offsets[kinds != ""].tolist()
    expected_type = {
        "truncated_json": "undecodable",
        "missing_event_time": "invalid",
        "negative_amount": "invalid",
        "unknown_event_type": "invalid",
    }
    for offset, kind in zip(generated.offsets.tolist(), kinds.tolist(), strict=True):
        if kind:
            assert dead[offset]["error_type"] == expected_type[kind]


def test_json_null_payload_is_not_an_event() -> None:
    schema = EventSchema(CONFIG.all_inputs[0].schema.model_copy(update={"required": [], "checks": []}))
    decoded = JsonDecoder(schema).decode(raw_batch([event(0), b"null"]))
    assert decoded.events.column("_offset").to_pylist() == [100]
    assert [row["reason"] for row in dead_rows(decoded)] == ["JSON value is a NoneType, not an object"]


_DECODE_LEADING_NULL = """
from tests.unit.test_codecs import DECODER, dead_rows, event, raw_batch
decoded = DECODER.decode(raw_batch([b"null", event(1)]))
print(decoded.events.num_rows, [row["reason"] for row in dead_rows(decoded)])
"""


def test_json_null_as_first_payload_does_not_crash_the_process() -> None:
    # in a child process: the bug is a segmentation fault, which would take the test run down with it
    completed = subprocess.run(
        [sys.executable, "-c", _DECODE_LEADING_NULL], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr[-500:]
    assert completed.stdout.split()[0] == "1"
