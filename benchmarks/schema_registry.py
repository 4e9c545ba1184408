"""``python -m benchmarks.schema_registry``: Avro in the Confluent wire format with three writer versions against
today's schemaless Avro decoder, on this machine (benchmarks/SCHEMA_REGISTRY.md).

Both decode the same orders (``pipelines.examples.order_versions``) in fetches of 4,096 records into the same
six columns:

- **baseline**: schemaless Avro, every record written with v3 (one writer schema, from the config), read by
  :class:`~pipelines.decode.binary_codecs.AvroDecoder`;
- **wire, 1 version**: every record written with v3 and framed with its schema id, read by
  :class:`~pipelines.decode.registry_avro.RegistryAvroDecoder` against the reader schema;
- **wire, 3 versions**: v1, v2 and v3 interleaved record by record (a rolling upgrade), each framed with its
  id, resolved to the reader (a rename, two defaults, a widened int);
- **wire, 3 versions, 1 % dirty**: the same with 1 % of the records under an unknown id (dead letters).

The writer schemas are learned once before timing (the registry is asked once per id and cached; what a fetch
costs afterwards is what is measured); with ``--registry URL`` they are registered in and fetched from that
registry first, so the ids are a real registry's (``--registry dev``, the default: the dev registry, started for
the run in a temporary directory and stopped after; ``--registry none``: ids made up locally). A rate is the
median of 3 repetitions; ratios are against
the baseline measured in the same run. The machine's load average is printed with the table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from cluster.schema_registry import DevRegistryConfig, start_registry, stop_registry
from pipelines.config.pipeline import SchemaConfig
from pipelines.config.registry import RegistryConfig
from pipelines.decode.binary_codecs import AvroDecoder
from pipelines.decode.codecs import Decoder
from pipelines.decode.registry_avro import RegistryAvroDecoder
from pipelines.decode.schema import EventSchema
from pipelines.examples import order_versions
from pipelines.examples.order_versions import READER, V3, WRITERS
from pipelines.io.records import RawBatch
from pipelines.schemas.registry_client import RegisteredSchema, RegistryClient
from pipelines.schemas.resolution import plan_reading

__all__ = ["main"]

FETCH_RECORDS = 4_096
REPETITIONS = 3
FIELDS = {
    "order_id": "string",
    "customer_id": "string",
    "amount_cents": "int64",
    "currency": "string",
    "channel": "string",
    "placed_ms": "timestamp_ms",
}
LOCAL_IDS = (1, 2, 3)
UNKNOWN_ID = 999_999


@dataclass(frozen=True)
class Row:
    case: str
    records_per_s: float
    dead_letters: int


def fetches(payloads: list[bytes], size: int = FETCH_RECORDS) -> list[RawBatch]:
    batches = []
    for start in range(0, len(payloads), size):
        part = payloads[start : start + size]
        count = len(part)
        batches.append(
            RawBatch(
                topic="orders",
                partition=0,
                offsets=pa.array(range(start, start + count), pa.int64()),
                payloads=pa.array(part, pa.binary()),
                keys=pa.nulls(count, pa.binary()),
                timestamps=pa.nulls(count, pa.int64()),
                traceparents=pa.nulls(count, pa.string()),
            )
        )
    return batches


def schemaless_v3(count: int) -> list[bytes]:
    """The orders written with v3 without the wire-format header (the framed ones minus their 5 bytes)."""
    return [order_versions.encoded(order_versions.order(index, 3), 3, 0)[5:] for index in range(count)]


def measure(decoder: Decoder, batches: list[RawBatch]) -> tuple[float, int]:
    """Records/s decoding ``batches`` once, and the dead letters."""
    started = time.perf_counter()
    dead = sum(decoder.decode(batch).dead_letter_count for batch in batches)
    elapsed = time.perf_counter() - started
    return sum(len(batch) for batch in batches) / elapsed, dead


def registry_decoder(ids: tuple[int, int, int]) -> RegistryAvroDecoder:
    config = SchemaConfig(
        format="avro",
        avro_schema=READER,
        registry=RegistryConfig(url="http://127.0.0.1:1"),
        fields=FIELDS,
        max_future_ms=None,
    )
    assert config.registry is not None
    decoder = RegistryAvroDecoder(EventSchema(config), config.registry, READER)
    for schema_id, writer in zip(ids, WRITERS, strict=True):
        decoder.learn(
            schema_id, plan_reading(RegisteredSchema(schema_id, json.dumps(writer)), READER, list(FIELDS), None)
        )
    decoder.learn(UNKNOWN_ID, None)
    return decoder


async def registered_ids(url: str) -> tuple[int, int, int]:
    """v1-v3 registered under a new subject of the registry at ``url``; their ids as it gives them."""
    subject = f"bench-orders-{uuid.uuid4().hex[:8]}-value"
    async with RegistryClient(RegistryConfig(url=url)) as registry:
        ids = [await registry.register(subject, json.dumps(writer)) for writer in WRITERS]
        fetched = [await registry.schema_by_id(schema_id) for schema_id in ids]
    assert [json.loads(s.schema)["fields"] for s in fetched] == [w["fields"] for w in WRITERS], "the registry's copy"
    return ids[0], ids[1], ids[2]


def cases(records: int, ids: tuple[int, int, int]) -> dict[str, tuple[Decoder, list[RawBatch]]]:
    baseline_config = SchemaConfig(format="avro", avro_schema=V3, fields=FIELDS, max_future_ms=None)
    mixed = [payload for _, payload in order_versions.records(records, ids)]
    dirty = list(mixed)
    for position in range(50, records, 100):
        dirty[position] = order_versions.encoded(order_versions.order(position, 2), 2, UNKNOWN_ID)
    one_version = [order_versions.encoded(order_versions.order(i, 3), 3, ids[2]) for i in range(records)]
    decoder = registry_decoder(ids)
    return {
        "baseline: schemaless Avro, 1 writer": (
            AvroDecoder(EventSchema(baseline_config), V3),
            fetches(schemaless_v3(records)),
        ),
        "wire format, 1 version": (decoder, fetches(one_version)),
        "wire format, 3 versions": (decoder, fetches(mixed)),
        "wire format, 3 versions, 1 % unknown ids": (decoder, fetches(dirty)),
    }


def run(records: int, ids: tuple[int, int, int], repetitions: int = REPETITIONS) -> list[Row]:
    measured = cases(records, ids)
    rates: dict[str, list[float]] = {name: [] for name in measured}
    dead: dict[str, int] = {}
    for _ in range(repetitions):  # each repetition runs every case in turn, so load drifts hit them alike
        for name, (decoder, batches) in measured.items():
            rate, dead[name] = measure(decoder, batches)
            rates[name].append(rate)
    return [Row(name, statistics.median(values), dead[name]) for name, values in rates.items()]


def table(rows: list[Row]) -> str:
    baseline = rows[0].records_per_s
    head = ["| case | records/s (median of 3) | vs baseline | dead letters |", "|---|---:|---:|---:|"]
    body = [
        f"| {row.case} | {row.records_per_s:,.0f} | {row.records_per_s / baseline:.2f}x | {row.dead_letters} |"
        for row in rows
    ]
    return "\n".join(head + body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.schema_registry", description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=60_000, help="records per case (default 60,000)")
    parser.add_argument(
        "--registry",
        default=os.environ.get("SCHEMA_REGISTRY_URL", "dev"),
        help="a registry URL to register in and fetch from; dev (default): start the dev registry; none: local ids",
    )
    args = parser.parse_args(argv)
    if args.registry == "none":
        ids = LOCAL_IDS
    elif args.registry == "dev":
        with tempfile.TemporaryDirectory() as state_dir:
            registry = start_registry(DevRegistryConfig(state_dir=Path(state_dir), port=0))
            try:
                args.registry = f"the dev registry ({registry.url})"
                ids = asyncio.run(registered_ids(registry.url))
            finally:
                stop_registry(registry.state_dir)
    else:
        ids = asyncio.run(registered_ids(args.registry))
    rows = run(args.records, ids)
    print(table(rows))
    load = os.getloadavg()
    where = "local" if args.registry == "none" else f"from {args.registry}"
    print(f"\n{args.records:,} records per case, fetches of {FETCH_RECORDS:,}; schema ids {ids} ({where}); load "
          f"average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
