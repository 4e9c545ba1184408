"""A whole pipeline over nested events, in this process (pipelines.testing.run_stages): decoded, checked,
filtered, derived, aggregated, and written by the sinks as nested JSON (maps as objects), Parquet (nested types
kept) and Avro; Parquet files with maps read back as a file source."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import fastavro
import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.config.field_types import arrow_type
from pipelines.config.pipeline import PipelineConfig, parse_config
from pipelines.errors import ConfigError
from pipelines.io.avro_rows import AvroRowEncoder
from pipelines.io.kafka_records import encode_rows
from pipelines.io.sinks import JsonlSink, ParquetSink
from pipelines.stages.plan import compile_pipeline
from pipelines.testing import run_stages

FIELDS = {
    "id": "string",
    "t": "int64",
    "customer": "struct<name: string, address: struct<zip: string, city: string>>",
    "items": "list<struct<sku: string, qty: int64>>",
    "attrs": "map<string, string>",
}
EVENTS: list[dict[str, Any]] = [
    {
        "id": "a",
        "t": 1_000,
        "customer": {"name": "Ann", "address": {"zip": "10115", "city": "Berlin"}},
        "items": [{"sku": "s1", "qty": 2}],
        "attrs": {"color": "red", "größe": "L"},
    },
    {"id": "b", "t": 2_000, "customer": None, "items": [], "attrs": {}},
    {"id": "c", "t": 3_000, "customer": {"name": "Bo", "address": None}, "items": None},
    {"id": "d", "t": 4_000, "customer": {"name": "Cy", "address": {"zip": 10115}}},
    {"id": "e", "t": 5_000, "customer": {"name": "Di", "address": {"zip": "1011"}}},
    {"id": "f", "t": 6_000, "customer": {"name": "Ed", "address": {"zip": "10115"}}, "attrs": {"color": 5}},
    {
        "id": "g",
        "t": 7_000,
        "customer": {"name": "Fa", "address": {"zip": "20095", "city": "Hamburg"}},
        "items": [{"sku": "s2", "qty": 1}, {"sku": "s3", "qty": 3}],
        "attrs": {"color": "blue"},
    },
]


def config(tmp_path: Path, events: list[dict[str, Any]] = EVENTS, **changes: Any) -> PipelineConfig:
    source = tmp_path / "events.jsonl"
    source.write_text("".join(json.dumps(event, ensure_ascii=False) + "\n" for event in events), encoding="utf-8")
    data: dict[str, Any] = {
        "name": "nested",
        "source": {"type": "file", "paths": [str(source)]},
        "schema": {
            "fields": FIELDS,
            "required": ["id"],
            "checks": ["is_null(customer.address.zip) or length(customer.address.zip) == 5"],
            "event_time_field": "t",
        },
        "operators": [
            {"op": "filter", "expr": 'customer.address.zip == "10115" or list_size(items) > 1'},
            {"op": "derive", "column": "zip", "expr": "customer.address.zip"},
            {"op": "derive", "column": "color", "expr": 'map_get(attrs, "color")'},
            {"op": "select", "columns": ["id", "zip", "color", "customer", "items", "attrs"]},
        ],
        "sinks": [{"type": "jsonl", "path": str(tmp_path / "out")}],
        "dead_letter": {"type": "jsonl", "path": str(tmp_path / "dead")},
        "runtime": {"max_events": len(events)},
    }
    return parse_config({**data, **changes})


def test_a_stateless_pipeline_filters_derives_and_selects_nested_events(tmp_path: Path) -> None:
    run = run_stages(config(tmp_path))

    assert run.results.rows() == [
        {
            "id": "a",
            "zip": "10115",
            "color": "red",
            "customer": EVENTS[0]["customer"],
            "items": EVENTS[0]["items"],
            "attrs": EVENTS[0]["attrs"],
        },
        {
            "id": "g",
            "zip": "20095",
            "color": "blue",
            "customer": EVENTS[6]["customer"],
            "items": EVENTS[6]["items"],
            "attrs": EVENTS[6]["attrs"],
        },
    ]
    dead = {row["offset"]: row["reason"] for row in run.dead_letters.rows()}
    customer, attrs = FIELDS["customer"], FIELDS["attrs"]
    assert dead == {
        3: f"a value does not match the schema's column type: 'customer' must be {customer} (at customer.address.zip)",
        4: "check failed: is_null(customer.address.zip) or length(customer.address.zip) == 5",
        5: f"a value does not match the schema's column type: 'attrs' must be {attrs} (at attrs[...])",
    }


def test_an_aggregate_keyed_by_a_column_derived_from_a_path(tmp_path: Path) -> None:
    pipeline = config(
        tmp_path,
        operators=[{"op": "derive", "column": "city", "expr": 'coalesce(customer.address.city, "unknown")'}],
        aggregate={
            "key": "city",
            "window": {"type": "tumbling", "size_ms": 60_000},
            "aggregations": {"orders": {"fn": "count"}},
        },
    )
    run = run_stages(pipeline)
    assert sorted((row["city"], row["orders"]) for row in run.results.rows()) == [
        ("Berlin", 1),
        ("Hamburg", 1),
        ("unknown", 2),  # b (no customer) and c (no address); d, e, f are dead letters
    ]


def test_keying_by_a_member_path_is_refused_as_an_unknown_column(tmp_path: Path) -> None:
    """Keyed stages take a column: derive one from the path first (the test above)."""
    pipeline = config(
        tmp_path,
        operators=[],
        aggregate={
            "key": "customer.address.city",
            "window": {"type": "tumbling", "size_ms": 60_000},
            "aggregations": {"orders": {"fn": "count"}},
        },
    )
    with pytest.raises(ConfigError, match=r"aggregate.key: unknown column 'customer.address.city'"):
        compile_pipeline(pipeline)


def nested_rows() -> pa.Table:
    schema = pa.schema([pa.field(name, arrow_type(kind)) for name, kind in FIELDS.items()])
    return pa.Table.from_pylist([EVENTS[0], EVENTS[1], EVENTS[2], EVENTS[6]], schema=schema)


def test_the_jsonl_sink_and_kafka_records_write_nested_json_with_maps_as_objects(tmp_path: Path) -> None:
    sink = JsonlSink(str(tmp_path / "out"), "source-0")
    sink.write(nested_rows())
    sink.close()
    written = [json.loads(line) for line in sink.path.read_text(encoding="utf-8").splitlines()]
    expected = [{**event, "attrs": event.get("attrs")} for event in (EVENTS[0], EVENTS[1], EVENTS[2], EVENTS[6])]
    assert written == expected
    assert written[0]["attrs"] == {"color": "red", "größe": "L"}

    records = encode_rows(nested_rows(), key_column=None, by_source_partition=False, partitions=1)
    assert [msgspec.json.decode(record.value or b"") for record in records] == expected


def test_the_parquet_sink_keeps_nested_types_and_a_file_source_reads_them_back(tmp_path: Path) -> None:
    sink = ParquetSink(str(tmp_path / "parquet"), "source-0")
    sink.write(nested_rows())
    sink.close()
    (written,) = sorted((tmp_path / "parquet").glob("*.parquet"))
    table = pq.read_table(written)
    assert table.schema == nested_rows().schema
    assert table.equals(nested_rows())

    pipeline = config(tmp_path, operators=[], source={"type": "file", "paths": [str(written)], "format": "parquet"})
    run = run_stages(pipeline)
    assert run.dead_letters.rows() == []
    assert [{name: row[name] for name in FIELDS} for row in run.results.rows()] == nested_rows().to_pylist(
        maps_as_pydicts="strict"
    )


def avro_record(record_name: str, /, **fields: Any) -> dict[str, Any]:
    return {
        "type": "record",
        "name": record_name,
        "fields": [{"name": key, "type": kind} for key, kind in fields.items()],
    }


def test_the_avro_sink_writes_structs_lists_and_maps() -> None:
    address = avro_record("Address", zip=["null", "string"], city=["null", "string"])
    customer = avro_record("Customer", name=["null", "string"], address=["null", address])
    item = avro_record("Item", sku=["null", "string"], qty=["null", "long"])
    writer = {
        "type": "record",
        "name": "Order",
        "fields": [
            {"name": "id", "type": "string"},
            {"name": "customer", "type": ["null", customer]},
            {"name": "items", "type": ["null", {"type": "array", "items": item}]},
            {"name": "attrs", "type": ["null", {"type": "map", "values": "string"}]},
        ],
    }
    encoded = AvroRowEncoder(writer).encode(nested_rows(), schema_id=5)
    parsed = fastavro.parse_schema(writer)
    read = [fastavro.schemaless_reader(io.BytesIO(payload[5:]), parsed, None) for payload in encoded]
    assert read[0] == {name: EVENTS[0][name] for name in ("id", "customer", "items", "attrs")}
    assert [row["attrs"] if isinstance(row, dict) else None for row in read] == [
        {"color": "red", "größe": "L"},
        {},
        None,
        {"color": "blue"},
    ]
