"""The pure edge of the Kafka connector: consumer records to RawBatches, rows to producer records, dead letters
with their original bytes and where they came from."""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec
import pyarrow as pa
import pytest

from pipelines.at_rest import ValueCipher
from pipelines.config.kafka import KafkaSinkConfig
from pipelines.io.kafka_records import (
    DEAD_LETTER_HEADER_PREFIX,
    TRIMMED_HEADER,
    OutgoingRecord,
    dead_letter_records,
    encode_rows,
    raw_batch_from_records,
    route_rows,
    traceparent_of,
)
from pipelines.io.records import RawBatch, dead_letters, empty_dead_letters

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
OTHER_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@dataclass(frozen=True)
class FakeConsumerRecord:
    """The fields of aiokafka's ``ConsumerRecord`` that the connector reads."""

    offset: int
    value: bytes | None
    key: bytes | None = None
    timestamp: int | None = None
    headers: tuple[tuple[str, bytes | None], ...] = field(default_factory=tuple)


# --- traceparent_of -------------------------------------------------------------------------------------------


def test_traceparent_of_finds_the_header_among_others() -> None:
    headers = [("content-type", b"application/json"), ("traceparent", TRACEPARENT.encode())]
    assert traceparent_of(headers) == TRACEPARENT


@pytest.mark.parametrize(
    "headers",
    [None, [], [("content-type", b"application/json")], [("traceparent", b"")], [("Traceparent", b"00-x")]],
    ids=["none", "no-headers", "other-headers", "empty-value", "other-case"],
)
def test_traceparent_of_is_none_when_absent(headers: list[tuple[str, bytes]] | None) -> None:
    assert traceparent_of(headers) is None


@pytest.mark.parametrize("value", [b"\xff\xfe\x00", "00-café".encode()], ids=["binary", "non-ascii-utf8"])
def test_traceparent_of_is_none_when_undecodable(value: bytes) -> None:
    assert traceparent_of([("traceparent", value)]) is None


def test_traceparent_of_takes_the_first_readable_one() -> None:
    headers = [("traceparent", b""), ("traceparent", TRACEPARENT.encode()), ("traceparent", b"00-later")]
    assert traceparent_of(headers) == TRACEPARENT


# --- raw_batch_from_records -----------------------------------------------------------------------------------


def test_raw_batch_from_records_has_one_column_per_field() -> None:
    records = [
        FakeConsumerRecord(10, b'{"a":1}', b"k1", 1_700_000_000_000, (("traceparent", TRACEPARENT.encode()),)),
        FakeConsumerRecord(11, b'{"a":2}', None, 1_700_000_000_001),
        FakeConsumerRecord(13, None, b"k3", None, (("traceparent", b"\xff"),)),
    ]
    raw = raw_batch_from_records("orders", 5, records)
    assert isinstance(raw, RawBatch)
    assert (raw.topic, raw.partition, len(raw), raw.next_offset) == ("orders", 5, 3, 14)
    assert raw.offsets.type == pa.int64()
    assert raw.payloads.type == pa.binary()
    assert raw.keys.type == pa.binary()
    assert raw.timestamps.type == pa.int64()
    assert raw.traceparents.type == pa.string()
    assert raw.offsets.to_pylist() == [10, 11, 13]
    assert raw.payloads.to_pylist() == [b'{"a":1}', b'{"a":2}', None]
    assert raw.keys.to_pylist() == [b"k1", None, b"k3"]
    assert raw.timestamps.to_pylist() == [1_700_000_000_000, 1_700_000_000_001, None]
    assert raw.traceparents.to_pylist() == [TRACEPARENT, None, None]


def test_raw_batch_from_no_records_is_empty_and_typed() -> None:
    raw = raw_batch_from_records("orders", 0, [])
    assert len(raw) == 0
    assert [array.type for array in (raw.offsets, raw.payloads, raw.keys, raw.timestamps, raw.traceparents)] == [
        pa.int64(),
        pa.binary(),
        pa.binary(),
        pa.int64(),
        pa.string(),
    ]


# --- encode_rows ----------------------------------------------------------------------------------------------


def decoded(record: OutgoingRecord) -> object:
    assert record.value is not None
    return msgspec.json.decode(record.value)


def test_encode_rows_writes_json_without_key_and_traceparent_columns() -> None:
    rows = pa.table(
        {
            "customer_id": ["c1", "c2"],
            "revenue_cents": pa.array([1_250, None], pa.int64()),
            "ratio": [0.5, -1.25],
            "_key": pa.array([b"k1", b"k2"], pa.binary()),
            "_traceparent": [TRACEPARENT, None],
        }
    )
    records = encode_rows(rows, key_column=None, by_source_partition=False, partitions=4)
    assert [decoded(record) for record in records] == [
        {"customer_id": "c1", "revenue_cents": 1_250, "ratio": 0.5},
        {"customer_id": "c2", "revenue_cents": None, "ratio": -1.25},
    ]
    assert [record.key for record in records] == [b"k1", b"k2"]
    assert [record.partition for record in records] == [None, None]
    assert [record.headers for record in records] == [[("traceparent", TRACEPARENT.encode("ascii"))], []]


def test_encode_rows_writes_no_traceparent_an_operator_made_invalid() -> None:
    """An operator can compute ``_traceparent`` (say, with a non-ASCII string): it is not copied onto outputs,
    and it does not stop the write."""
    rows = pa.table({"n": [1, 2, 3], "_traceparent": ["00-tráce", "not one", TRACEPARENT]})
    records = encode_rows(rows, key_column=None, by_source_partition=False, partitions=1)
    assert [record.headers for record in records] == [[], [], [("traceparent", TRACEPARENT.encode())]]


def test_encode_rows_takes_the_key_from_the_key_column_as_utf8() -> None:
    rows = pa.table({"customer_id": ["cüstomer-1", None], "_key": pa.array([b"ignored", b"ignored"], pa.binary())})
    records = encode_rows(rows, key_column="customer_id", by_source_partition=False, partitions=1)
    assert [record.key for record in records] == ["cüstomer-1".encode(), None]
    assert decoded(records[0]) == {"customer_id": "cüstomer-1"}  # the key column stays in the value


def test_encode_rows_key_column_of_other_types() -> None:
    rows = pa.table({"id": pa.array([7, -1], pa.int64()), "raw": pa.array([b"\x00\xff", b"b"], pa.binary())})
    assert [r.key for r in encode_rows(rows, "id", False, 1)] == [b"7", b"-1"]
    assert [r.key for r in encode_rows(rows.select(["raw"]), "raw", False, 1)] == [b"\x00\xff", b"b"]


def test_encode_rows_without_any_key_leaves_the_key_null() -> None:
    rows = pa.table({"n": [1, 2]})
    records = encode_rows(rows, key_column=None, by_source_partition=False, partitions=3)
    assert records == [
        OutgoingRecord(value=b'{"n":1}', key=None, partition=None, headers=[]),
        OutgoingRecord(value=b'{"n":2}', key=None, partition=None, headers=[]),
    ]


def test_encode_rows_by_source_partition_maps_the_source_partition_onto_the_sink_topic() -> None:
    rows = pa.table({"n": [1, 2, 3, 4], "_partition": pa.array([0, 5, 9, 3], pa.int32())})
    records = encode_rows(rows, key_column=None, by_source_partition=True, partitions=4)
    assert [record.partition for record in records] == [0, 1, 1, 3]


def test_encode_rows_by_key_leaves_the_partition_to_the_producer() -> None:
    rows = pa.table({"n": [1, 2], "_partition": pa.array([0, 5], pa.int32())})
    records = encode_rows(rows, key_column="n", by_source_partition=False, partitions=4)
    assert [record.partition for record in records] == [None, None]


def test_encode_rows_accepts_a_record_batch_and_no_rows() -> None:
    batch = pa.record_batch({"n": pa.array([1], pa.int64()), "_traceparent": pa.array([TRACEPARENT])})
    [record] = encode_rows(batch, key_column=None, by_source_partition=False, partitions=1)
    assert (decoded(record), record.headers) == ({"n": 1}, [("traceparent", TRACEPARENT.encode())])
    assert encode_rows(batch.slice(0, 0), key_column=None, by_source_partition=False, partitions=1) == []


# --- dead_letter_records --------------------------------------------------------------------------------------


def raw_batch() -> RawBatch:
    return RawBatch(
        topic="orders",
        partition=7,
        offsets=pa.array([100, 101, 102], pa.int64()),
        payloads=pa.array([b"not json \xff", b'{"ok":1}', b'{"event_type":"Nope"}'], pa.binary()),
        keys=pa.array([b"\x00key", b"k", None], pa.binary()),
        timestamps=pa.array([1, 2, 3], pa.int64()),
        traceparents=pa.array([TRACEPARENT, None, None], pa.string()),
    )


def test_dead_letter_records_keep_the_original_bytes_and_say_where_and_why() -> None:
    dead = dead_letters(
        raw_batch(), pa.array([0, 2]), pa.array(["not valid JSON", "check failed: event_type in [...]"]), "decode"
    )
    first, second = dead_letter_records(dead, "orders-kafka")
    assert (first.value, first.key, first.partition) == (b"not json \xff", b"\x00key", None)
    assert (second.value, second.key, second.partition) == (b'{"event_type":"Nope"}', None, None)
    assert first.headers == [
        ("eventray.reason", b"not valid JSON"),
        ("eventray.error_type", b"decode"),
        ("eventray.source.topic", b"orders"),
        ("eventray.source.partition", b"7"),
        ("eventray.source.offset", b"100"),
        ("eventray.pipeline", b"orders-kafka"),
        ("traceparent", TRACEPARENT.encode("ascii")),
    ]
    assert dict(second.headers) == {
        "eventray.reason": b"check failed: event_type in [...]",
        "eventray.error_type": b"decode",
        "eventray.source.topic": b"orders",
        "eventray.source.partition": b"7",
        "eventray.source.offset": b"102",
        "eventray.pipeline": b"orders-kafka",
    }
    assert all(name.startswith(DEAD_LETTER_HEADER_PREFIX) for name, _ in second.headers), (
        "no traceparent header when the record had none"
    )


def test_dead_letter_records_of_no_dead_letters() -> None:
    assert dead_letter_records(empty_dead_letters(), "orders-kafka") == []


def _one_dead_letter(payload: bytes, key: bytes | None) -> pa.RecordBatch:
    raw = RawBatch(
        topic="orders",
        partition=0,
        offsets=pa.array([5], pa.int64()),
        payloads=pa.array([payload], pa.binary()),
        keys=pa.array([key], pa.binary()),
        timestamps=pa.array([1], pa.int64()),
        traceparents=pa.array([TRACEPARENT], pa.string()),
    )
    return dead_letters(raw, pa.array([0]), pa.array(["record is too large"]), "limit")


def _size(record: OutgoingRecord) -> int:
    return len(record.value or b"") + len(record.key or b"") + sum(len(n) + len(v) for n, v in record.headers)


@pytest.mark.parametrize("key", [None, b"k" * 10, b"K" * 50_000])
def test_an_oversize_dead_letter_is_trimmed_to_fit_and_says_so(key: bytes | None) -> None:
    payload = b"x" * 2_000_000
    (record,) = dead_letter_records(_one_dead_letter(payload, key), "p", max_record_bytes=100_000)
    assert _size(record) <= 100_000
    headers = dict(record.headers)
    assert headers[TRIMMED_HEADER] == str(len(payload) + len(key or b"")).encode()
    assert record.value and payload.startswith(record.value) and len(record.value) > 40_000
    assert record.key == (None if key is None else key[: len(record.key or b"")])
    assert headers[f"{DEAD_LETTER_HEADER_PREFIX}error_type"] == b"limit"
    assert headers["traceparent"] == TRACEPARENT.encode()


def test_an_oversize_encrypted_dead_letter_leaves_its_sealed_value_out_whole() -> None:
    """A sealed value cut short could never be decrypted: it is dropped, the headers say where the event is."""
    cipher = ValueCipher(bytes(32))
    sealed_payload, sealed_key = cipher.seal(b"x" * 200_000, "orders/0/5/payload"), cipher.seal(b"k", "orders/0/5/key")
    (record,) = dead_letter_records(_one_dead_letter(sealed_payload, sealed_key), "p", max_record_bytes=100_000)
    headers = dict(record.headers)
    assert record.value is None and record.key is None
    assert headers[TRIMMED_HEADER] == str(len(sealed_payload) + len(sealed_key)).encode()
    assert headers[f"{DEAD_LETTER_HEADER_PREFIX}source.offset"] == b"5"


def test_a_dead_letter_that_fits_is_not_trimmed() -> None:
    payload = b"y" * 99_000
    (record,) = dead_letter_records(_one_dead_letter(payload, b"k"), "p", max_record_bytes=100_000)
    assert record.value == payload and record.key == b"k"
    assert TRIMMED_HEADER not in dict(record.headers)


def test_rows_are_routed_to_the_topic_their_column_names_and_the_rest_to_the_default_with_what_they_named() -> None:
    rows = pa.table({"id": [1, 2, 3, 4, 5, 6], "route": ["a", "b", "a", None, "elsewhere", "b"]})

    parts = route_rows(rows, "default", "route", ["a", "b"])

    assert [(topic, part.column("id").to_pylist(), unrouted) for topic, part, unrouted in parts] == [
        ("a", [1, 3], None),
        ("b", [2, 6], None),
        ("default", [4, 5], [None, "elsewhere"]),
    ]
    assert route_rows(rows, "default", None, []) == [("default", rows, None)], "no topic column: one topic"
    numbered = pa.table({"route": [7, 8]})
    assert [(t, u) for t, _, u in route_rows(numbered, "d", "route", ["7"])] == [("7", None), ("d", ["8"])]


def test_a_sink_routing_by_column_lists_its_topics() -> None:
    sink = KafkaSinkConfig(topic="commands.unrouted", topic_column="route", topics=["commands.a", "commands.b"])
    assert sink.all_topics == ["commands.unrouted", "commands.a", "commands.b"]
    with pytest.raises(ValueError, match="topic_column and topics go together"):
        KafkaSinkConfig(topic="t", topic_column="route")
    with pytest.raises(ValueError, match="topic_column and topics go together"):
        KafkaSinkConfig(topic="t", topics=["a"])
