"""`eventray verify`: read a finished run's input, outputs and dead letters, and check delivery.

The readers here turn files and topics into the tables of :mod:`pipelines.verify.delivery_check` (which holds every
definition and verdict); nothing here judges. Everything is read after the run has ended:

- input: the generator is regenerated for offsets ``[0, end_p)`` of each partition; files are read again;
  a Kafka topic is read ``read_committed`` from its earliest offset to ``end_p``. ``end_p`` comes from an
  :data:`EndOffsets` function: by default the run's event budget (generator, files) or the pipeline group's
  committed offsets (Kafka); a checkpoint's offsets can be plugged in the same way.
- outputs: JSONL/Parquet ``part-*`` files (one ordered stream per writer: its files in name order), Kafka
  topics ``read_committed`` (one stream per partition, ``eventray.slot``/``eventray.epoch`` headers kept),
  plus a ``read_uncommitted`` count of what aborted transactions left in the log.
- dead letters: the JSONL directory or the Kafka topic (origin from the ``eventray.*`` headers); commit
  markers from ``<pipeline>.eventray-commits``.

The checker assumes one logical run: outputs of earlier runs removed, input read from its start.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
from aiokafka import TopicPartition
from rich.console import Console
from rich.table import Table

from actors.kafka.admin import committed_offsets, end_offsets, partition_count
from actors.kafka.batch_guard import BatchGuard
from actors.kafka.clients import started_consumer
from actors.kafka.commit_markers import commit_marker_topic
from pipelines.config.kafka import (
    KafkaConnectionConfig,
    KafkaSinkConfig,
    KafkaSourceConfig,
    resolve_kafka_secrets,
)
from pipelines.config.pipeline import (
    ConsoleSinkConfig,
    DeadLetterConfig,
    FileSourceConfig,
    GeneratorSourceConfig,
    JsonlSinkConfig,
    NamedInput,
    ParquetSinkConfig,
    PipelineConfig,
)
from pipelines.config.secrets import resolve_checkpoint_key, resolve_secrets
from pipelines.errors import ConfigError
from pipelines.io.kafka_records import DEAD_LETTER_HEADER_PREFIX, raw_batch_from_records
from pipelines.io.records import RawBatch
from pipelines.io.sources import FileReader, GeneratorReader, PartitionReader, file_partitions
from pipelines.stages.plan import compile_pipeline
from pipelines.stages.topology import input_of, local_partition, partition_ids, partition_limits, pipeline_partition
from pipelines.state.checkpoint_store import CheckpointStore, open_checkpoint_store
from pipelines.verify.delivery_check import (
    COMMITS_SCHEMA,
    EPOCH,
    POSITION,
    SLOT,
    STREAM,
    Delivery,
    DeliveryReport,
    Finding,
    ObservedOutput,
    check_delivery,
    check_verifiable,
    expected_run,
)

__all__ = [
    "EndOffsets",
    "budget_end_offsets",
    "delivery_of",
    "fixed_end_offsets",
    "print_report",
    "read_input",
    "report_dict",
    "verify_run",
]

#: End offset (exclusive) of each input partition the run is known to have read, from the config.
EndOffsets = Callable[[PipelineConfig], Awaitable[dict[int, int]]]

_CHUNK = 50_000
_READ_DEADLINE_S = 120.0
_SLOT_HEADER = "eventray.slot"
_EPOCH_HEADER = "eventray.epoch"
_LINEAGE_HEADER = "eventray.lineage"


def delivery_of(config: PipelineConfig) -> Delivery:
    """The config's delivery mode (``at_least_once`` when the config predates the field)."""
    mode: Delivery = getattr(config, "delivery", "at_least_once")
    return mode


def fixed_end_offsets(offsets: Mapping[int, int]) -> EndOffsets:
    """End offsets known in advance (a checkpoint's, a file written by a test)."""

    async def known(config: PipelineConfig) -> dict[int, int]:
        return dict(offsets)

    return known


async def budget_end_offsets(config: PipelineConfig) -> dict[int, int]:
    """Per pipeline partition of every input: generator and files: ``runtime.max_events`` split as the runner
    splits it (files: also capped by their length); a generator run bounded by time instead: the offsets of its
    final checkpoint. Kafka: the pipeline group's committed offsets (0 where nothing was committed)."""
    counts = []
    for spec in config.all_inputs:
        source = spec.source
        if isinstance(source, KafkaSourceConfig):
            counts.append(await partition_count(_connection(config), source.topic))
        else:
            counts.append(
                source.partitions if isinstance(source, GeneratorSourceConfig) else len(file_partitions(source))
            )
    limits = partition_limits(partition_ids(counts), config.runtime.max_events)
    if any(limit is None for limit in limits.values()) and any(
        isinstance(spec.source, GeneratorSourceConfig) for spec in config.all_inputs
    ):
        final = _final_checkpoint_offsets(config)
        if final is not None:
            return final
        raise ConfigError(
            "verify: a generator run is unbounded without runtime.max_events and has no final "
            "checkpoint; pass --max-events N (as given to run) or --end-offsets-from FILE"
        )
    ends: dict[int, int] = {}
    for spec in config.all_inputs:
        source = spec.source
        if isinstance(source, GeneratorSourceConfig):
            ends.update({p: int(limit or 0) for p, limit in limits.items() if input_of(p) == spec.index})
        elif isinstance(source, FileSourceConfig):
            for local, path in enumerate(file_partitions(source)):
                p = pipeline_partition(spec.index, local)
                ends[p] = FileReader(path, source.format, local, 0, limits[p]).end_offset()
        else:
            committed = await committed_offsets(_connection(config), source.topic, config.group_id)
            ends.update({pipeline_partition(spec.index, p): offset or 0 for p, offset in committed.items()})
    return ends


def _final_checkpoint_offsets(config: PipelineConfig) -> dict[int, int] | None:
    """Where the last run stopped reading, if it ended cleanly with checkpoints on."""
    if config.checkpoint is None:
        return None
    latest = _checkpoints(config).latest()
    return dict(latest.positions) if latest is not None and latest.finished else None


async def verify_run(
    config: PipelineConfig,
    end_offsets_of: EndOffsets = budget_end_offsets,
    *,
    start_time_ms: int | None = None,
    id_column: str | None = None,
    max_examples: int = 10,
) -> DeliveryReport:
    """Read the run's input, outputs and dead letters and check them (async: Kafka reads are).

    ``start_time_ms``: event time of generator offset 0 when ``source.start_time_ms`` is null (the run chose
    it); windows cannot be recomputed without it. Raises ConfigError when something needed is unknown.
    """
    config = resolve_secrets(config, os.environ)  # mask and checkpoint keys: the recomputation needs them
    compiled = compile_pipeline(config)
    check_verifiable(compiled)  # before reading anything
    ends = await end_offsets_of(config)
    raws = await read_input(config, ends, start_time_ms)
    try:
        for raw in raws:  # writer schemas from a registry, learned before the synchronous decode
            await compiled.prepare(raw)
    finally:
        await compiled.close()
    expected = expected_run(compiled, raws)
    outputs = [
        await _read_output(config, index)
        for index, sink in enumerate(config.sinks)
        if not isinstance(sink, ConsoleSinkConfig)
    ]
    return check_delivery(
        compiled,
        expected,
        outputs,
        await _read_dead_letters(config),
        await _read_commits(config),
        id_column=id_column,
        max_examples=max_examples,
    )


# --- input ----------------------------------------------------------------------------------------------------


async def read_input(config: PipelineConfig, ends: Mapping[int, int], start_time_ms: int | None) -> list[RawBatch]:
    """Every input's records up to ``ends``, as batches labelled with their pipeline partitions."""
    raws: list[RawBatch] = []
    for spec in config.all_inputs:
        mine = {local_partition(p): end for p, end in sorted(ends.items()) if input_of(p) == spec.index}
        read = await _read_one_input(config, spec, mine, start_time_ms)
        raws += [replace(raw, partition=pipeline_partition(spec.index, raw.partition)) for raw in read]
    return raws


async def _read_one_input(
    config: PipelineConfig, spec: NamedInput, ends: Mapping[int, int], start_time_ms: int | None
) -> list[RawBatch]:
    source = spec.source
    if isinstance(source, GeneratorSourceConfig):
        start = _generator_start(config, spec, start_time_ms)
        readers: list[PartitionReader] = [
            GeneratorReader(source, p, 0, end, 0.0, start, clock=_all_arrived) for p, end in sorted(ends.items())
        ]
        return [raw for reader in readers for raw in await _drain(reader)]
    if isinstance(source, FileSourceConfig):
        files = file_partitions(source)
        readers = [FileReader(files[p], source.format, p, 0, end) for p, end in sorted(ends.items())]
        return [raw for reader in readers for raw in await _drain(reader)]
    guard = BatchGuard(spec.schema.max_decompressed_batch_bytes)  # the source's rule for unreadable batches
    records = await _read_topic(_connection(config), source.topic, "read_committed", ends, guard)
    raws = [
        raw_batch_from_records(source.topic, p, chunk, guard.take(TopicPartition(source.topic, p)), (0, ends[p]))
        for p, chunk in sorted(records.items())
    ]
    return [raw for raw in raws if len(raw)]


def _all_arrived() -> float:
    """A clock far enough ahead that a rate-limited generator has every offset up to its limit available (event
    times depend on the configured rate, so the rate itself must stay)."""
    return 1e15


def _generator_start(config: PipelineConfig, spec: NamedInput, start_time_ms: int | None) -> int:
    source = spec.source
    assert isinstance(source, GeneratorSourceConfig)
    start = source.start_time_ms if source.start_time_ms is not None else start_time_ms
    if start is not None:
        return start
    if config.checkpoint is not None:  # the run's clock is in its checkpoints
        latest = _checkpoints(config).latest()
        if latest is not None:
            return latest.start_time_ms
    if any(stage.aggregate is not None for stage in config.keyed_stages):
        raise ConfigError(
            f"verify: windows depend on the generator's start time; run with --set {spec.path}source.start_time_ms=N"
            " and verify with the same setting (or pass start_time_ms)"
        )
    return 0  # event ids do not depend on event time


async def _drain(reader: PartitionReader) -> list[RawBatch]:
    batches: list[RawBatch] = []
    while not reader.exhausted:
        raw = await reader.fetch(_CHUNK)
        if raw is None:
            break
        batches.append(raw)
    return batches


# --- outputs --------------------------------------------------------------------------------------------------


async def _read_output(config: PipelineConfig, index: int) -> ObservedOutput:
    sink = config.sinks[index]
    name = f"sinks.{index} {sink.type}"
    if isinstance(sink, JsonlSinkConfig):
        return ObservedOutput(f"{name} {sink.path}", _read_jsonl_dir(Path(sink.path)))
    if isinstance(sink, ParquetSinkConfig):
        return ObservedOutput(f"{name} {sink.path}", _read_parquet_dir(Path(sink.path)))
    if not isinstance(sink, KafkaSinkConfig):
        raise TypeError(f"{type(sink).__name__} has no readable output")
    connection = _connection(config)
    rows: list[dict[str, Any]] = []
    total = 0
    for topic in sink.all_topics:  # one output however its rows were routed: each topic partition a stream
        committed = await _read_topic(connection, topic, "read_committed")
        everything = await _read_topic(connection, topic, "read_uncommitted")
        total += sum(map(len, everything.values()))
        rows += [_kafka_row(topic, record) for records in committed.values() for record in records]
    table = _table(rows)
    return ObservedOutput(f"{name} {', '.join(sink.all_topics)}", table, uncommitted_records=total - table.num_rows)


def _stream_of(path: Path) -> str:
    """The writer a ``part-*`` file belongs to: its name without the per-file (``-00003``) and per-epoch
    (``-s00002``) sequence numbers, so one writer's files form one ordered stream."""
    stem = path.name.split(".", 1)[0]
    if path.suffix == ".parquet":
        stem = re.sub(r"-\d{5}$", "", stem)
    return re.sub(r"-s\d{5}$", "", stem)


def _read_jsonl_dir(directory: Path) -> pa.Table:
    rows: list[dict[str, Any]] = []
    positions: dict[str, int] = {}
    for part in sorted(directory.glob("part-*.jsonl")):
        stream = _stream_of(part)
        for line in part.read_bytes().splitlines():
            if line.strip():
                row = msgspec.json.decode(line)
                position = positions.get(stream, 0)
                positions[stream] = position + 1
                rows.append({**row, STREAM: stream, POSITION: position})
    return _table(rows)


def _read_parquet_dir(directory: Path) -> pa.Table:
    tables: list[pa.Table] = []
    positions: dict[str, int] = {}
    for part in sorted(directory.glob("part-*.parquet")):
        stream = _stream_of(part)
        table = pq.read_table(part)
        start = positions.get(stream, 0)
        positions[stream] = start + table.num_rows
        table = table.append_column(STREAM, pa.array([stream] * table.num_rows, pa.string()))
        tables.append(table.append_column(POSITION, pa.array(range(start, start + table.num_rows), pa.int64())))
    if not tables:
        return _table([])
    return pa.concat_tables(tables, promote_options="permissive")


def _kafka_row(topic: str, record: Any) -> dict[str, Any]:
    headers = dict(record.headers or ())
    value = msgspec.json.decode(record.value) if record.value else {}
    slot, epoch = headers.get(_SLOT_HEADER), headers.get(_EPOCH_HEADER)
    return {
        **value,
        STREAM: f"{topic}/{record.partition}",
        POSITION: record.offset,
        SLOT: None if slot is None else _slot_in_lineage(slot.decode(), headers.get(_LINEAGE_HEADER, b"").decode()),
        EPOCH: None if epoch is None else int(epoch),
    }


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    if not rows:
        return pa.table({STREAM: pa.array([], pa.string()), POSITION: pa.array([], pa.int64())})
    return pa.Table.from_pylist(rows)


# --- dead letters and commit markers --------------------------------------------------------------------------


async def _read_dead_letters(config: PipelineConfig) -> pa.Table:
    """``error_type``, ``partition``, ``offset`` of every dead letter."""
    dead_letter = config.dead_letter
    if isinstance(dead_letter, DeadLetterConfig):
        rows = _read_dead_letter_dir(Path(dead_letter.path))
    else:
        records = await _read_topic(_connection(config), dead_letter.topic, "read_committed")
        rows = [_dead_letter_origin(record) for chunk in records.values() for record in chunk]
    schema = pa.schema([("error_type", pa.string()), ("partition", pa.int32()), ("offset", pa.int64())])
    return pa.Table.from_pylist(rows, schema=schema)


def _read_dead_letter_dir(directory: Path) -> list[dict[str, Any]]:
    fields = ("error_type", "partition", "offset")
    rows: list[dict[str, Any]] = []
    for part in sorted(directory.glob("part-*.jsonl")):
        for line in part.read_bytes().splitlines():
            if line.strip():
                row = msgspec.json.decode(line)
                rows.append({key: row[key] for key in fields})
    return rows


def _dead_letter_origin(record: Any) -> dict[str, Any]:
    headers = {name: value.decode() for name, value in record.headers or ()}
    prefix = DEAD_LETTER_HEADER_PREFIX
    return {
        "error_type": headers.get(f"{prefix}error_type", ""),
        "partition": int(headers.get(f"{prefix}source.partition", "-1")),
        "offset": int(headers.get(f"{prefix}source.offset", "-1")),
    }


async def _read_commits(config: PipelineConfig) -> pa.Table:
    """Every committed ``(slot, epoch)`` marker (empty when the pipeline writes none)."""
    uses_kafka = any(isinstance(sink, KafkaSinkConfig) for sink in config.sinks)
    if not uses_kafka or config.kafka is None:
        return COMMITS_SCHEMA.empty_table()
    connection = _connection(config)
    topic = commit_marker_topic(config.name)
    if await partition_count(connection, topic, required=False) == 0:
        return COMMITS_SCHEMA.empty_table()
    records = await _read_topic(connection, topic, "read_committed")
    rows = [msgspec.json.decode(r.value) for chunk in records.values() for r in chunk if r.value]
    markers = [{"slot": _slot_in_lineage(row["slot"], row.get("lineage", "")), "epoch": row["epoch"]} for row in rows]
    return pa.Table.from_pylist(markers, schema=COMMITS_SCHEMA)


def _slot_in_lineage(slot: str, lineage: str) -> str:
    """A slot qualified by its checkpoint lineage, for records and markers alike: epoch numbers restart in a new
    checkpoint location, so (slot, epoch) alone could match a record to another location's marker."""
    return f"{lineage}/{slot}" if lineage else slot


# --- Kafka ----------------------------------------------------------------------------------------------------


def _connection(config: PipelineConfig) -> KafkaConnectionConfig:
    if config.kafka is None:
        raise ConfigError("verify: Kafka inputs and outputs need the config's kafka section")
    return resolve_kafka_secrets(config.kafka, os.environ)


async def _read_topic(
    connection: KafkaConnectionConfig,
    topic: str,
    isolation_level: str,
    ends: Mapping[int, int] | None = None,
    guard: BatchGuard | None = None,
) -> dict[int, list[Any]]:
    """Records of ``topic`` per partition from the earliest offset to ``ends`` (default: the current end);
    with ``guard``, its batches are read within its cap (it keeps the unreadable ones)."""
    limits = dict(ends) if ends is not None else await end_offsets(connection, topic)
    records: dict[int, list[Any]] = {p: [] for p in limits}
    tps = [TopicPartition(topic, p) for p in limits]
    options = {"enable_auto_commit": False, "isolation_level": isolation_level, "auto_offset_reset": "earliest"}
    try:
        if guard is not None:
            guard.watch(tps)
        async with started_consumer(connection, **options) as consumer:
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + _READ_DEADLINE_S
            while [tp for tp in tps if await consumer.position(tp) < limits[tp.partition]] and loop.time() < deadline:
                fetched = await consumer.getmany(timeout_ms=1_000, max_records=10_000)
                for tp, chunk in fetched.items():
                    records[tp.partition] += [r for r in chunk if r.offset < limits[tp.partition]]
    finally:
        if guard is not None:
            guard.forget(tps)
    return records


# --- reporting ------------------------------------------------------------------------------------------------


def report_dict(report: DeliveryReport, delivery: Delivery) -> dict[str, Any]:
    """The report as JSON-ready data, with the verdict and its reasons."""
    return {
        **asdict(report),
        "delivery": delivery,
        "ok": report.ok_for(delivery),
        "failures": report.failures(delivery),
    }


def print_report(console: Console, report: DeliveryReport, delivery: Delivery) -> None:
    """A table per output and one for dead letters, then the verdict for ``delivery``."""
    console.print(
        f"[bold]{report.pipeline}[/]: {report.input_records:,} input records, "
        f"{report.expected_events:,} valid events after the operators"
    )
    for output in report.outputs:
        rows: list[tuple[str, Finding]] = [
            ("lost", output.lost),
            ("duplicated", output.duplicated),
            ("unexpected", output.unexpected),
            ("out of order", output.out_of_order),
            ("aborted read", output.aborted_read),
            ("wrongly joined", output.wrong),
        ]
        title = f"{output.name}: {output.rows:,} rows"
        if output.uncommitted_records is not None:
            title += f", {output.uncommitted_records:,} records of aborted transactions (not read)"
        windows = output.windows
        if windows is not None:
            title += f", windows expected {windows.expected:,}, observed {windows.observed:,}"
            rows = [
                ("aborted read", output.aborted_read),
                ("windows missing", windows.missing),
                ("windows extra", windows.extra),
                ("windows duplicated", windows.duplicated),
                ("windows wrong", windows.wrong),
                ("windows unmatched", windows.unmatched),
            ]
        console.print(_findings_table(title, rows))
    dead = report.dead_letters
    console.print(
        _findings_table(
            "dead letters",
            [
                ("dead-lettered", dead.dead_lettered),
                ("of which late", dead.late),
                ("missing", dead.missing),
                ("unexpected", dead.unexpected),
                ("duplicated", dead.duplicated),
                ("late, unattributed", dead.unattributed_late),
                ("of another error type", dead.wrong_type),
            ],
        )
    )
    failures = report.failures(delivery)
    verdict = "[green]OK[/]" if not failures else "[red]FAILED[/]"
    console.print(f"{verdict} for delivery {delivery}")
    for failure in failures:
        console.print(f"  {failure}")


def _findings_table(title: str, rows: list[tuple[str, Finding]]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("check")
    table.add_column("count", justify="right")
    table.add_column("examples")
    for label, finding in rows:
        table.add_row(label, f"{finding.count:,}", ", ".join(finding.examples))
    return table


def _checkpoints(config: PipelineConfig) -> CheckpointStore:
    """The run's checkpoint store, with its encryption key (if any) read from the environment."""
    resolved = resolve_checkpoint_key(config, os.environ)
    store = open_checkpoint_store(resolved.checkpoint, config.name)
    assert store is not None  # callers ask only for pipelines with checkpoints
    return store
