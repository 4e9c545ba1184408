"""Reading what an event-sourced pipeline stored and took: its events, snapshots and replies (from the first sink
that holds them: Kafka topics read committed, else Parquet or JSONL output) and its commands (the pipeline's own
inputs, decoded and transformed as the run did, each partition in offset order).

One aggregate's history is a cheap read: from Kafka, only the partition its id is in when the sink keys records
by it (the default partitioner, murmur2); from a Parquet archive with ``bucket_by`` the aggregate id, only the
files of its bucket, row groups skipped by statistics.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from actors.kafka.admin import partition_count, read_topic
from actors.kafka.producer_sink import partition_for_key
from cluster.commands.verify import budget_end_offsets, read_input
from pipelines.config.kafka import KafkaConnectionConfig, KafkaSinkConfig
from pipelines.config.pipeline import JsonlSinkConfig, ParquetSinkConfig, PipelineConfig
from pipelines.config.state import EventSourcedConfig
from pipelines.errors import ConfigError
from pipelines.io.sinks import bucket_file_suffix
from pipelines.stages.plan import compile_pipeline
from pipelines.verify.delivery_check import INPUT_PARTITION, INPUT_SEQUENCE, expected_run

__all__ = [
    "REPLAY_COLUMNS",
    "ParquetArchive",
    "Stored",
    "event_sourced_stage",
    "read_commands",
    "read_files",
    "read_stored",
]

StoredSink = KafkaSinkConfig | ParquetSinkConfig | JsonlSinkConfig


@dataclass(frozen=True)
class Stored:
    """Rows an event-sourced stage wrote, by kind (each as the sink holds it, ``topic`` column included)."""

    events: list[dict[str, Any]]
    snapshots: list[dict[str, Any]]
    replies: list[dict[str, Any]]
    in_partition_order: bool = False  # read from Kafka: each partition's rows in offset order (files: not)


def event_sourced_stage(config: PipelineConfig) -> EventSourcedConfig:
    """The config's event-sourced stage; :class:`ConfigError` if it has none."""
    for view in config.keyed_stages:
        if isinstance(view.keyed, EventSourcedConfig):
            return view.keyed
    raise ConfigError(f"pipeline {config.name!r} has no keyed stage of type event_sourced")


async def read_stored(config: PipelineConfig, stage: EventSourcedConfig, key: str | None = None) -> Stored:
    """The stored events, snapshots and replies, of aggregate ``key`` (compared as text) or of every aggregate,
    from the first sink that holds events; rows are renamed so the aggregate id is ``aggregate_id``."""
    sink = events_sink(config, stage.events_topic)
    if isinstance(sink, KafkaSinkConfig):
        assert config.kafka is not None  # a Kafka sink needs a kafka section
        keyed = stage.key == sink.key_column and sink.partition_by == "key"  # else any partition may hold a key
        topics = (
            [sink.topic]
            if sink.topic_column is None
            else [t for t in (stage.events_topic, stage.snapshots_topic, stage.replies_topic) if t in sink.all_topics]
        )
        rows = [row for topic in topics for row in await _read_kafka(config.kafka, topic, key if keyed else None)]
    else:
        rows = read_files(sink, stage.key, key)
    if key is not None:
        rows = [row for row in rows if str(row.get(stage.key)) == key]
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_topic.setdefault(row.get("topic") or "", []).append({**row, "aggregate_id": row.get(stage.key)})
    return Stored(
        by_topic.get(stage.events_topic, []),
        by_topic.get(stage.snapshots_topic, []),
        by_topic.get(stage.replies_topic, []),
        in_partition_order=isinstance(sink, KafkaSinkConfig),
    )


async def read_commands(config: PipelineConfig) -> list[dict[str, Any]]:
    """The rows the event-sourced stage took, as the run decoded and transformed them (each partition in offset
    order, up to the pipeline group's committed offsets or the files' ends); ``_timestamp`` included."""
    compiled = compile_pipeline(config)
    if len(compiled.stages) != 1:
        raise ConfigError("the commands are read from the inputs of a pipeline whose one keyed stage is event_sourced")
    raws = await read_input(config, await budget_end_offsets(config), None)
    events = expected_run(compiled, raws).events
    ordered = events.sort_by([(INPUT_PARTITION, "ascending"), (INPUT_SEQUENCE, "ascending")])
    return list(ordered.drop_columns([INPUT_PARTITION, INPUT_SEQUENCE]).to_pylist())


def events_sink(config: PipelineConfig, events_topic: str, fix: str = "") -> StoredSink:
    """Where ``events_topic``'s rows are read from: a Kafka sink writing it (the store of record), else a Parquet
    sink (the archive), else a JSONL sink, whose directory exists. Raises :class:`ConfigError` naming the topic
    (and ``fix``, what the operator should do) when there is none."""
    kafka = [s for s in config.sinks if isinstance(s, KafkaSinkConfig) and (events_topic in s.all_topics
                                                                           or s.topic_column is None)]  # fmt: skip
    files = [s for s in config.sinks if isinstance(s, ParquetSinkConfig | JsonlSinkConfig) and Path(s.path).is_dir()]
    for sink in [*kafka, *(s for s in files if isinstance(s, ParquetSinkConfig)), *files]:
        return sink
    raise ConfigError(
        f"pipeline {config.name!r}: no sink holds the events topic {events_topic!r} (a Kafka sink writing it, "
        f"or a Parquet or JSONL sink whose directory exists){fix}"
    )


async def _read_kafka(connection: KafkaConnectionConfig, topic: str, key: str | None) -> list[dict[str, Any]]:
    """Every committed record of ``topic``; with ``key``, of the partition records keyed by it are in."""
    partitions = None
    if key is not None:
        count = await partition_count(connection, topic, required=False)
        partitions = [partition_for_key(key.encode(), count)] if count else []
    # a bound, should a transaction left open hold a read_committed reader short of the end
    records = await read_topic(connection, topic, partitions=partitions, deadline_s=60 if key else 900)
    return [msgspec.json.decode(record.value) for record in records]


def read_files(sink: ParquetSinkConfig | JsonlSinkConfig, key_column: str, key: str | None) -> list[dict[str, Any]]:
    """The rows a JSONL or Parquet sink wrote; with ``key``, only those of it where the files allow (a Parquet
    archive bucketed by ``key_column``: its bucket's files, row groups filtered by statistics)."""
    if isinstance(sink, JsonlSinkConfig):
        rows: list[dict[str, Any]] = []
        for path in sorted(Path(sink.path).glob("*.jsonl")):
            rows += [msgspec.json.decode(line) for line in path.read_bytes().splitlines() if line.strip()]
        return rows
    archive = ParquetArchive(sink, key_column)
    return archive.rows_of(key) if key is not None else archive.all_rows()


#: what a replay reads of a stored event or snapshot
REPLAY_COLUMNS = ["topic", "version", "event_type", "schema_version", "data", "_timestamp"]


class ParquetArchive:
    """A Parquet sink's files opened once (footers read, kept): one key's rows are read from the files of its
    bucket (with ``bucket_by`` the key column) and, in them, only the row groups whose statistics may hold it,
    and only ``columns`` (None: all)."""

    def __init__(self, sink: ParquetSinkConfig, key_column: str, columns: list[str] | None = None) -> None:
        self._sink = sink
        self._key_column = key_column
        self._columns = None if columns is None else list(dict.fromkeys([key_column, *columns]))
        self._files = sorted(Path(sink.path).glob("part-*.parquet"))
        self._opened: dict[Path, pq.ParquetFile] = {}

    def all_rows(self) -> list[dict[str, Any]]:
        if not self._files:
            return []
        return list(ds.dataset([str(path) for path in self._files], format="parquet").to_table().to_pylist())

    def rows_of(self, key: str) -> list[dict[str, Any]]:
        files = self._files
        if self._sink.bucket_by == self._key_column:
            suffix = bucket_file_suffix(zlib.crc32(key.encode()) % self._sink.buckets)
            files = [path for path in files if path.name.endswith(suffix)]
        rows: list[dict[str, Any]] = []
        for path in files:
            parquet = self._opened.get(path) or self._opened.setdefault(path, pq.ParquetFile(path))
            column = parquet.schema_arrow.get_field_index(self._key_column)
            value: Any = key
            if pa.types.is_integer(parquet.schema_arrow.field(column).type):
                value = int(key) if key.lstrip("-").isdigit() else None
            groups = [
                g for g in range(parquet.num_row_groups) if _may_hold(parquet.metadata.row_group(g), column, value)
            ]
            if value is None or not groups:
                continue
            table = parquet.read_row_groups(groups, columns=self._columns)
            rows += table.filter(pc.equal(table.column(self._key_column), value)).to_pylist()
        return rows


def _may_hold(group: Any, column: int, value: Any) -> bool:
    """Whether a row group's statistics (if it has any) allow ``value`` in ``column``."""
    statistics = group.column(column).statistics
    if value is None or statistics is None or not statistics.has_min_max:
        return True
    return bool(statistics.min <= value <= statistics.max)
