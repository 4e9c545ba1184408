"""JSON records with nested columns (struct, list, map): decoded as nested Arrow values, and every misfit at any
depth a dead letter with its reason, never a failed batch and never a silent null."""

from __future__ import annotations

import json
from typing import Any, cast

import msgspec
import pyarrow as pa
import pyarrow.json as pa_json
import pytest

from pipelines.config.field_types import arrow_type
from pipelines.config.pipeline import SchemaConfig
from pipelines.decode.codecs import JsonDecoder
from pipelines.decode.json_verdicts import TypedLines
from pipelines.decode.plain_values import plain_lines
from pipelines.decode.schema import EventSchema
from pipelines.io.records import RawBatch
from tests.raw_batches import payload_batch
from tests.unit.test_json_verdicts import VALUES

MISMATCH = "a value does not match the schema's column type"
FIELDS = {
    "id": "string",
    "customer": "struct<name: string, address: struct<street: string, zip: string>>",
    "items": "list<struct<sku: string, qty: int64>>",
    "scores": "map<string, float64>",
}
CUSTOMER = FIELDS["customer"]
ITEMS = FIELDS["items"]


def raw_batch(payloads: list[bytes]) -> RawBatch:
    return payload_batch(payloads)


def encoded(record: Any) -> bytes:
    return record if isinstance(record, bytes) else json.dumps(record, ensure_ascii=False).encode()


def decode(fields: dict[str, str], records: list[Any]) -> tuple[list[dict[str, Any]], dict[int, tuple[str, str]]]:
    """The decoded rows (payload columns, maps as dicts) and the dead letters by offset: (error type, reason)."""
    schema = EventSchema(SchemaConfig(fields=fields, max_future_ms=None))
    decoded = JsonDecoder(schema).decode(raw_batch([encoded(record) for record in records]))
    rows = decoded.events.select(list(fields)).to_pylist(maps_as_pydicts="strict")
    dead = {
        row["offset"]: (row["error_type"], row["reason"]) for batch in decoded.dead_letters for row in batch.to_pylist()
    }
    return rows, dead


def test_nested_values_decode_with_nulls_missing_and_extra_keys_as_pyarrow_reads_them() -> None:
    rows, dead = decode(
        FIELDS,
        [
            {
                "id": "full",
                "customer": {"name": "Ann", "address": {"street": "Main 1", "zip": "10115", "floor": 3}},
                "items": [{"sku": "a", "qty": 2, "note": "extra"}, None, {}],
                "scores": {"x": 1, "ü": 2.5, "": None},
                "unknown_column": [1, {"x": 2}],
            },
            {"id": "null struct", "customer": None, "items": [], "scores": {}},
            {"id": "missing keys", "customer": {}},
            {"id": "null member", "customer": {"name": None, "address": None}, "items": None, "scores": None},
        ],
    )
    assert dead == {}
    assert rows == [
        {
            "id": "full",
            "customer": {"name": "Ann", "address": {"street": "Main 1", "zip": "10115"}},
            "items": [{"sku": "a", "qty": 2}, None, {"sku": None, "qty": None}],
            "scores": {"x": 1.0, "ü": 2.5, "": None},
        },
        {"id": "null struct", "customer": None, "items": [], "scores": {}},
        {"id": "missing keys", "customer": {"name": None, "address": None}, "items": None, "scores": None},
        {"id": "null member", "customer": {"name": None, "address": None}, "items": None, "scores": None},
    ]


MISFITS: list[tuple[dict[str, Any], str]] = [
    ({"customer": {"address": {"zip": 10115}}}, f"'customer' must be {CUSTOMER} (at customer.address.zip)"),
    ({"customer": {"address": "Main 1"}}, f"'customer' must be {CUSTOMER} (at customer.address)"),
    ({"customer": "Ann"}, f"'customer' must be {CUSTOMER}"),
    ({"customer": [{"name": "Ann"}]}, f"'customer' must be {CUSTOMER}"),
    ({"items": {"sku": "a"}}, f"'items' must be {ITEMS}"),
    ({"items": [{"qty": 1}, {"qty": "2"}]}, f"'items' must be {ITEMS} (at items[1].qty)"),
    ({"items": [{"qty": 1.5}]}, f"'items' must be {ITEMS} (at items[0].qty)"),
    ({"items": [{"qty": 2**63}]}, f"'items' must be {ITEMS} (at items[0].qty)"),
    ({"items": [[{"qty": 1}]]}, f"'items' must be {ITEMS} (at items[0])"),
    ({"items": ["a"]}, f"'items' must be {ITEMS} (at items[0])"),
    ({"scores": {"secret@example.com": "high"}}, "'scores' must be map<string, float64> (at scores[...])"),
    ({"scores": [["x", 1.0]]}, "'scores' must be map<string, float64>"),
    ({"scores": {"x": {"y": 1}}}, "'scores' must be map<string, float64> (at scores[...])"),
    ({"scores": "x"}, "'scores' must be map<string, float64>"),
]


@pytest.mark.parametrize(("fields", "reason"), MISFITS)
def test_a_misfit_at_any_depth_is_an_invalid_dead_letter_alone_and_among_good_records(
    fields: dict[str, Any], reason: str
) -> None:
    good = {"id": "g", "customer": {"name": "Ann"}, "items": [{"sku": "a", "qty": 1}], "scores": {"x": 1.0}}
    bad = {"id": "b", **fields}
    alone_rows, alone = decode(FIELDS, [bad])
    rows, dead = decode(FIELDS, [good, bad, good, good])
    assert alone_rows == []
    assert alone == {0: ("invalid", f"{MISMATCH}: {reason}")}
    assert dead == {1: alone[0]}, "the verdict does not depend on the other records"
    assert [row["id"] for row in rows] == ["g", "g", "g"]
    assert "secret@example.com" not in reason and "high" not in reason, "reasons never quote event data"


def test_a_struct_member_given_twice_is_a_dead_letter_as_a_column_given_twice_is() -> None:
    rows, dead = decode(FIELDS, [{"id": "g"}, b'{"id": "b", "customer": {"name": "a", "name": "b"}}'])
    assert [row["id"] for row in rows] == ["g"]
    assert dead == {1: ("invalid", "the JSON reader refuses the record: column 'customer' (given twice?)")}


def test_map_keys_of_int64_maps_are_integers_written_as_strings() -> None:
    fields = {"id": "string", "counts": "map<int64, int64>"}
    rows, dead = decode(fields, [{"id": "a", "counts": {"7": 1, "-3": None}}, {"id": "b", "counts": {"x": 1}}])
    assert rows == [{"id": "a", "counts": {7: 1, -3: None}}]
    assert dead == {1: ("invalid", f"{MISMATCH}: 'counts' must be map<int64, int64>")}


def test_a_schema_of_map_columns_only_and_a_pretty_printed_record() -> None:
    fields = {"tags": "map<string, list<string>>"}
    pretty = json.dumps({"tags": {"a": ["x", None], "b": []}}, indent=2).encode()
    rows, dead = decode(fields, [pretty, {"tags": None}, {}, {"tags": {"a": "x"}}])
    assert rows == [{"tags": {"a": ["x", None], "b": []}}, {"tags": None}, {"tags": None}]
    assert dead == {3: ("invalid", f"{MISMATCH}: 'tags' must be map<string, list<string>> (at tags[...])")}


def nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for level in reversed(range(depth)):
        value = {f"l{level}": [value]} if level % 2 else {f"l{level}": value}
    return value


def test_five_levels_deep_with_nulls_at_every_level() -> None:
    kind = "struct<l0: struct<l1: list<struct<l2: struct<l3: list<struct<l4: map<string, int64>>>>>>>>"
    deep = nested(5, {"k": 1})
    records = [
        {"v": deep},
        {"v": None},
        {"v": {"l0": None}},
        {"v": {"l0": {"l1": None}}},
        {"v": {"l0": {"l1": [None]}}},
        {"v": {"l0": {"l1": [{"l2": None}]}}},
        {"v": {"l0": {"l1": [{"l2": {"l3": [None]}}]}}},
        {"v": {"l0": {"l1": [{"l2": {"l3": [{"l4": None}]}}]}}},
        {"v": {"l0": {"l1": [{"l2": {"l3": [{"l4": {"k": None}}]}}]}}},
        {"v": nested(5, {"k": "deep misfit"})},
    ]
    rows, dead = decode({"v": kind}, records)
    assert [row["v"] for row in rows] == [record["v"] for record in records[:-1]]
    assert dead == {9: ("invalid", f"{MISMATCH}: 'v' must be {kind} (at v.l0.l1[0].l2.l3[0].l4[...])")}


def test_a_list_of_ten_thousand_items_in_one_record() -> None:
    items = [{"sku": f"s{index}", "qty": index} for index in range(10_000)]
    rows, dead = decode(FIELDS, [{"id": "big", "items": items}, {"id": "bad", "items": [*items, {"qty": "x"}]}])
    assert dead == {1: ("invalid", f"{MISMATCH}: 'items' must be {ITEMS} (at items[10000].qty)")}
    assert rows[0]["items"] == items


def test_unicode_member_names_and_keys() -> None:
    fields = {"straße": "struct<café: string, 名前: map<string, string>>"}
    record = {"straße": {"café": "☕", "名前": {"ключ": "значение", "🔑": None}}}
    rows, dead = decode(fields, [record, {"straße": {"名前": {"ключ": 1}}}])
    assert rows == [record]
    assert dead == {1: ("invalid", f"{MISMATCH}: 'straße' must be {fields['straße']} (at straße.名前[...])")}


def pyarrow_reads(line: bytes, kind: str) -> bool:
    options = pa_json.ParseOptions(
        explicit_schema=pa.schema([pa.field("v", arrow_type(kind))]), unexpected_field_behavior="ignore"
    )
    try:
        table = pa_json.read_json(pa.BufferReader(line + b"\n"), parse_options=options)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return False
    return cast(bool, table.num_rows == 1)


NESTED_SHAPES = {
    "struct<a: int64, b: string>": ['{"v":{"a":%s}}', '{"v":{"b":%s,"a":1}}', '{"v":%s}'],
    "list<float64>": ['{"v":[%s]}', '{"v":[1,%s,null]}', '{"v":%s}'],
    "list<struct<a: bool>>": ['{"v":[{"a":%s}]}', '{"v":[%s]}'],
    "struct<a: list<binary>>": ['{"v":{"a":[%s]}}', '{"v":{"a":%s}}'],
}


@pytest.mark.parametrize("kind", list(NESTED_SHAPES))
def test_the_typed_reading_accepts_what_pyarrow_accepts_in_nested_columns(kind: str) -> None:
    typed = TypedLines(SchemaConfig(fields={"v": kind}))
    disagreements = []
    for value in VALUES:
        for shape in NESTED_SHAPES[kind]:
            line = (shape % value).encode()
            if (typed.verdict(line) is None) != pyarrow_reads(line, kind):
                disagreements.append(line)
    assert disagreements == []


SHAPES_WITH_IGNORED_KEYS = {
    **NESTED_SHAPES,
    # pyarrow refuses a number beyond float64 (1E400) even where it ignores the key; msgspec skips it, as at the
    # top level (an ignored column): the decoder's general path gives pyarrow the last word
    "list<struct<a: bool>>": ['{"v":[{"x":%s}]}', '{"v":[{"a":true,"x":[%s]}]}'],
}


@pytest.mark.parametrize("kind", list(SHAPES_WITH_IGNORED_KEYS))
def test_the_decoder_keeps_exactly_the_lines_pyarrow_reads_alone(kind: str) -> None:
    """The whole fetch at once: its rows are exactly the lines pyarrow reads alone, the others dead letters."""
    lines = [(shape % value).encode() for value in VALUES for shape in SHAPES_WITH_IGNORED_KEYS[kind]]
    rows, dead = decode({"v": kind}, lines)
    readable = [index for index, line in enumerate(lines) if pyarrow_reads(line, kind)]
    assert len(rows) == len(readable)
    assert sorted(set(range(len(lines))) - set(dead)) == readable
    assert {error_type for error_type, _ in dead.values()} <= {"invalid", "undecodable"}


def test_msgspec_encoded_events_round_trip() -> None:
    record = {"id": "a", "customer": {"name": "n", "address": {"street": None, "zip": "z"}}, "items": [], "scores": {}}
    rows, _ = decode(FIELDS, [msgspec.json.encode(record)])
    assert rows == [record]


def test_the_plain_pre_check_clears_only_nulls_of_a_nested_column() -> None:
    """Only ``null`` is plainly of a nested type: every other value of the column is read typed."""
    lines = [b'{"id":"a","v":null,"pad":"%s"}' % (b"x" * 40), b'{"id":"b","v":{"a":1},"pad":"x"}', b'{"v":[1]}']
    terminated = pa.array([line + b"\n" for line in lines], pa.binary())
    assert plain_lines(terminated, "v", "struct<a: int64>").tolist() == [True, False, False]
    assert plain_lines(terminated, "v", "list<int64>").tolist() == [True, False, False]
