"""``python -m benchmarks.decode_dirty``: what bad records cost the decoders, measured on this machine.

Decode rate (records/s) of the JSON and the Avro decoder on fetches of 4,096 generator order events (the
orders pipeline's schema) with 0 %, 0.1 % and 1 % of the records type-mismatched: ``amount_cents`` is the
string ``"n/a"`` where the schema says int64, the kind of record that sends a fetch down the slow path. The
dirty positions are drawn at random (fixed seed), so every run decodes the same bytes. A rate is the median of
3 repetitions, each decoding the same fetches of every fraction in turn; the table shows each rate against
its decoder's clean rate.
No broker, no Ray: the decoders are called in this process.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fastavro
import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config.pipeline import GeneratorSourceConfig, SchemaConfig
from pipelines.decode.binary_codecs import AvroDecoder
from pipelines.decode.codecs import Decoder, JsonDecoder
from pipelines.decode.schema import EventSchema
from pipelines.examples.orders import orders_pipeline
from pipelines.io.generator import generate_events
from pipelines.io.records import RawBatch

__all__ = ["main"]

FETCH_RECORDS = 4_096
DIRTY_FRACTIONS = (0.0, 0.001, 0.01)
REPETITIONS = 3
SEED = 42
START_TIME_MS = 1_767_225_600_000  # the benchmark workloads' start, so the events look the same
MISMATCH = b'"amount_cents":"n/a"'
_AMOUNT = r'"amount_cents":[^,}]*'
_AVRO_TYPES: dict[str, str] = {  # the orders schema's flat column types
    "string": "string",
    "int64": "long",
    "float64": "double",
    "bool": "boolean",
    "timestamp_ms": "long",
    "binary": "bytes",
}


@dataclass(frozen=True)
class Row:
    decoder: str
    dirty_fraction: float
    bad_per_fetch: int
    records_per_s: float
    dead_letters_per_fetch: int


def generator_config() -> GeneratorSourceConfig:
    """The benchmark workloads' generator (``benchmarks.workloads``, which needs the bench extras to import)."""
    return GeneratorSourceConfig(seed=SEED, rate_per_s=None, invalid_fraction=0.0, customers=10_000)


def json_payloads(partition: int) -> pa.Array:
    """One fetch of generator events, as the orders pipeline reads them from Kafka."""
    generated = generate_events(generator_config(), partition, 0, FETCH_RECORDS, START_TIME_MS)
    return generated.payloads


def dirty_positions(partition: int, fraction: float) -> np.ndarray:
    count = round(fraction * FETCH_RECORDS)
    rng = np.random.default_rng([SEED, partition])
    return np.sort(rng.choice(FETCH_RECORDS, size=count, replace=False))


def with_mismatches(payloads: pa.Array, positions: np.ndarray) -> pa.Array:
    """``payloads`` with ``amount_cents`` replaced by a string in the records at ``positions``."""
    mask = np.zeros(len(payloads), dtype=bool)
    mask[positions] = True
    replaced = pc.replace_substring_regex(payloads, _AMOUNT, MISMATCH.decode(), max_replacements=1)
    return pc.if_else(pa.array(mask), replaced, payloads)


def raw_batch(partition: int, payloads: pa.Array) -> RawBatch:
    count = len(payloads)
    return RawBatch(
        topic="orders",
        partition=partition,
        offsets=pa.array(np.arange(count), pa.int64()),
        payloads=payloads,
        keys=pa.nulls(count, pa.binary()),
        timestamps=pa.nulls(count, pa.int64()),
        traceparents=pa.nulls(count, pa.string()),
    )


def avro_writer_schema(fields: dict[str, str]) -> dict[str, Any]:
    """Every field nullable; ``amount_cents`` may also be a string, as a sloppy producer's schema allows."""
    avro_fields = [{"name": name, "type": ["null", _AVRO_TYPES[kind]]} for name, kind in fields.items()]
    for field in avro_fields:
        if field["name"] == "amount_cents":
            field["type"] = ["null", "long", "string"]
    return {"type": "record", "name": "Order", "fields": avro_fields}


def avro_payloads(json_fetch: pa.Array, writer: dict[str, Any]) -> pa.Array:
    """The same events (dirty ones included) written as schemaless Avro records."""
    parsed = fastavro.parse_schema(writer)
    names = [field["name"] for field in writer["fields"]]
    encoded = []
    for payload in json_fetch.to_pylist():
        record = msgspec.json.decode(payload)
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, parsed, {name: record.get(name) for name in names})
        encoded.append(buffer.getvalue())
    return pa.array(encoded, pa.binary())


def one_pass(decode: Callable[[RawBatch], object], fetches: list[RawBatch]) -> float:
    """Records/s decoding every fetch once."""
    started = time.perf_counter()
    for fetch in fetches:
        decode(fetch)
    return sum(len(fetch) for fetch in fetches) / (time.perf_counter() - started)


def measure(name: str, decoder: Decoder, fetches_by_fraction: dict[float, list[RawBatch]]) -> list[Row]:
    """Each repetition decodes every fraction's fetches in turn, so that a change in the machine's load falls on
    all of them alike; a row's rate is the median over the repetitions (after one warm-up pass)."""
    for fetches in fetches_by_fraction.values():
        one_pass(decoder.decode, fetches[:1])
    rates: dict[float, list[float]] = {fraction: [] for fraction in fetches_by_fraction}
    for _ in range(REPETITIONS):
        for fraction, fetches in fetches_by_fraction.items():
            rates[fraction].append(one_pass(decoder.decode, fetches))
    rows = []
    for fraction, fetches in fetches_by_fraction.items():
        dead = decoder.decode(fetches[0]).dead_letter_count
        bad = round(fraction * FETCH_RECORDS)
        rows.append(Row(name, fraction, bad, statistics.median(rates[fraction]), dead))
        print(f"  {name} at {fraction:.1%}: {rows[-1].records_per_s:,.0f} records/s", flush=True)
    return rows


def fetches(fetch_count: int) -> tuple[dict[float, list[RawBatch]], dict[float, list[RawBatch]], dict[str, Any]]:
    """JSON and Avro fetches per dirty fraction, and the Avro writer schema."""
    writer = avro_writer_schema(orders_pipeline().all_inputs[0].schema.fields)
    json_by_fraction: dict[float, list[RawBatch]] = {}
    avro_by_fraction: dict[float, list[RawBatch]] = {}
    for fraction in DIRTY_FRACTIONS:
        for partition in range(fetch_count):
            dirty = with_mismatches(json_payloads(partition), dirty_positions(partition, fraction))
            json_by_fraction.setdefault(fraction, []).append(raw_batch(partition, dirty))
            avro_by_fraction.setdefault(fraction, []).append(raw_batch(partition, avro_payloads(dirty, writer)))
    return json_by_fraction, avro_by_fraction, writer


def table(rows: list[Row]) -> list[str]:
    clean = {row.decoder: row.records_per_s for row in rows if row.dirty_fraction == 0}
    lines = [
        f"| decoder | dirty | bad / fetch of {FETCH_RECORDS:,} | dead letters / fetch | records/s | vs clean |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {row.decoder} | {row.dirty_fraction:.1%} | {row.bad_per_fetch} | {row.dead_letters_per_fetch} "
        f"| {row.records_per_s:,.0f} | {row.records_per_s / clean[row.decoder]:.2f}x |"
        for row in rows
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decode_dirty", description=__doc__)
    parser.add_argument("--fetches", type=int, default=8, help="fetches per dirty fraction (each 4,096 records)")
    options = parser.parse_args(argv)
    json_fetches, avro_fetches, writer = fetches(options.fetches)
    schema_config = orders_pipeline().all_inputs[0].schema
    avro_config = SchemaConfig.model_validate({**schema_config.model_dump(), "format": "avro", "avro_schema": writer})
    load_before = os.getloadavg()[0]  # others' work on the machine, for reading the figures
    rows = measure("json", JsonDecoder(EventSchema(schema_config)), json_fetches)
    rows += measure("avro", AvroDecoder(EventSchema(avro_config), writer), avro_fetches)
    load_after = os.getloadavg()[0]
    print()
    print(f"Machine: {os.cpu_count()} cores; 1-minute load average {load_before:.2f} before, {load_after:.2f} after.")
    print(f"{options.fetches} fetches per row, median of {REPETITIONS} repetitions.")
    print()
    print("\n".join(table(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
