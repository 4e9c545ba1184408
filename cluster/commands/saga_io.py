"""Reading a saga stage's lifecycle events back, for ``eventray saga``.

The stage is a keyed stage of type ``saga`` or ``saga_monitor`` (:func:`saga_stage`: the one the config has, or
the one ``--stage`` names). Its events are read from the first sink that holds them, as
:mod:`cluster.commands.event_store_io` reads an event-sourced stage's:

1. a Kafka sink writing the events topic (one of its routed topics, or its one topic when it has no
   ``topic_column``): the topic from the beginning, read committed (an exactly-once pipeline writes in
   transactions), with the config's ``kafka`` connection; one saga's events from the one partition its id is in
   when the sink keys records by the saga id (``key_column`` is the stage's key, the default partitioner);
2. else a Parquet sink, else a JSONL sink, whose directory exists: its files.

Only rows whose ``topic`` is the stage's events topic are kept (a sink holds the saga's commands too). On Kafka
the trace context travels in the ``traceparent`` header, not in the JSON value: it is put back as
``_traceparent``. A record whose value is not a JSON object is skipped and counted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from actors.kafka.admin import partition_count, read_topic
from actors.kafka.producer_sink import partition_for_key
from cluster.commands.event_store_io import events_sink, read_files
from pipelines.config.kafka import KafkaConnectionConfig, KafkaSinkConfig
from pipelines.config.pipeline import ParquetSinkConfig, PipelineConfig
from pipelines.config.saga import SagaConfig, SagaMonitorConfig
from pipelines.errors import ConfigError

__all__ = [
    "PROGRESS_AFTER_S",
    "SINGLE_STAGE_NAME",
    "SagaEvents",
    "SagaStage",
    "read_saga_events",
    "record_row",
    "saga_stage",
]

Row = dict[str, Any]
SagaStage = SagaConfig | SagaMonitorConfig
Progress = Callable[[str], None]

#: a read taking longer than this says so (on standard error): a big topic takes a while
PROGRESS_AFTER_S = 2.0
#: bounds on a Kafka read, should a transaction left open hold a read_committed reader short of the end
_ADD_A_SINK = (
    ". Operator action: add a Kafka sink writing it (topic_column: topic, topics: [{topic}, ...]) or a JSONL sink; "
    "a file sink's directory must exist (has the pipeline run?)"
)
_DEADLINE_ONE_PARTITION_S = 60.0
_DEADLINE_TOPIC_S = 900.0
#: the name of the one keyed stage of a pipeline written with ``keyed:`` (one with ``stages:`` names each)
SINGLE_STAGE_NAME = "keyed"


@dataclass(frozen=True)
class SagaEvents:
    """The lifecycle event rows read, and where from (for messages)."""

    rows: list[Row]
    source: str


def saga_stage(config: PipelineConfig, name: str | None = None) -> SagaStage:
    """The config's saga (or saga monitor) stage, the one named ``name`` when given; :class:`ConfigError` if it
    has none, or several and no ``name``."""
    names = config.stage_names if config.stages is not None else (SINGLE_STAGE_NAME,)
    found = {
        stage_name: view.keyed
        for stage_name, view in zip(names, config.keyed_stages, strict=True)
        if isinstance(view.keyed, SagaConfig | SagaMonitorConfig)
    }
    if not found:
        raise ConfigError(
            f"pipeline {config.name!r} has no saga stage: eventray saga reads the lifecycle events of a keyed stage "
            "of type saga or saga_monitor. Give the config of the pipeline that runs the saga, or add the stage "
            "(keyed: {type: saga, saga: module:factory})"
        )
    if name is not None:
        if name not in found:
            raise ConfigError(f"--stage {name!r}: the saga stages of pipeline {config.name!r} are {sorted(found)}")
        return found[name]
    if len(found) > 1:
        raise ConfigError(
            f"pipeline {config.name!r} has {len(found)} saga stages {sorted(found)}: pick one with --stage"
        )
    return next(iter(found.values()))


async def read_saga_events(
    config: PipelineConfig, stage: SagaStage, saga_id: str | None = None, progress: Progress | None = None
) -> SagaEvents:
    """The lifecycle event rows of saga ``saga_id`` (compared as text), or of every saga, from the first sink that
    holds them; ``config.kafka`` must have its secrets resolved. ``progress`` hears of a slow read."""
    report = progress or _silent
    sink = events_sink(config, stage.events_topic, _ADD_A_SINK.format(topic=stage.events_topic))
    if isinstance(sink, KafkaSinkConfig):
        assert config.kafka is not None  # a Kafka sink needs a kafka section
        topic = stage.events_topic if stage.events_topic in sink.all_topics else sink.topic
        keyed = sink.key_column == stage.key and sink.partition_by == "key"
        rows = await _read_kafka(config.kafka, topic, saga_id if keyed else None, report)
        source = f"Kafka topic {topic!r} at {config.kafka.bootstrap_servers}"
    else:
        rows = read_files(sink, stage.key, saga_id if isinstance(sink, ParquetSinkConfig) else None)
        source = f"the {sink.type} files in {sink.path}"
    rows = [
        row
        for row in rows
        if row.get("topic") == stage.events_topic and (saga_id is None or str(row.get(stage.key)) == saga_id)
    ]
    return SagaEvents(rows, source)


def _silent(_: str) -> None:
    return None


async def _read_kafka(
    connection: KafkaConnectionConfig, topic: str, saga_id: str | None, progress: Progress
) -> list[Row]:
    """Every committed record of ``topic``; with ``saga_id``, of the partition records keyed by it are in."""
    count = await partition_count(connection, topic, required=False)
    if not count:
        raise ConfigError(
            f"topic {topic!r} does not exist at {connection.bootstrap_servers}: has the pipeline run? (or is kafka "
            "the connection it writes to?)"
        )
    partitions = None if saga_id is None else [partition_for_key(saga_id.encode(), count)]
    deadline_s = _DEADLINE_TOPIC_S if partitions is None else _DEADLINE_ONE_PARTITION_S
    started_s = time.monotonic()
    reading = asyncio.ensure_future(read_topic(connection, topic, partitions=partitions, deadline_s=deadline_s))
    done, _ = await asyncio.wait({reading}, timeout=PROGRESS_AFTER_S)
    if not done:
        progress(f"reading {topic} from the beginning (read committed) ...")
    records = await reading
    elapsed_s = time.monotonic() - started_s
    if elapsed_s > PROGRESS_AFTER_S:
        progress(f"read {len(records):,} records of {topic} in {elapsed_s:.1f} s")
    if elapsed_s >= deadline_s:
        progress(f"warning: stopped after {deadline_s:.0f} s short of the end of {topic} (a transaction left open?)")
    rows = [row for row in map(record_row, records) if row is not None]
    if len(rows) < len(records):
        progress(f"skipped {len(records) - len(rows):,} records of {topic} whose value is not a JSON object")
    return rows


def record_row(record: Any) -> Row | None:
    """A Kafka record's JSON value as a row, its ``traceparent`` header as ``_traceparent``; None if the value is
    not a JSON object (a tombstone, or not written by a sink)."""
    try:
        value = None if record.value is None else msgspec.json.decode(record.value)
    except msgspec.DecodeError:
        return None
    if not isinstance(value, dict):
        return None
    if value.get("_traceparent") is None:
        for name, header in record.headers or ():
            if name == "traceparent" and isinstance(header, bytes):
                value["_traceparent"] = header.decode("ascii", "replace")
    return value
