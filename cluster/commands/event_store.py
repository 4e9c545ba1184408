"""``eventray es replay``: one event-sourced aggregate rebuilt from the events its pipeline stored.

The events are read from where the config's sinks put them: a Kafka topic (read committed; only the key's
partition when the sink keys records by the aggregate id, as the default partitioner places them), else Parquet
or JSONL output. They are folded through the aggregate class the config names, to a version (``--to-version``)
or a time (``--as-of``), printing the state after each event with ``--steps``; ``--json`` for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.dataset as ds
from aiokafka import TopicPartition
from aiokafka.partitioner import murmur2
from rich.console import Console
from rich.table import Table

from actors.kafka.admin import end_offsets
from actors.kafka.clients import started_consumer
from cluster.commands.run_config import parse_set
from pipelines.config.kafka import KafkaConnectionConfig, KafkaSinkConfig
from pipelines.config.pipeline import JsonlSinkConfig, ParquetSinkConfig, PipelineConfig, load_config
from pipelines.config.secrets import resolve_secrets
from pipelines.config.state import EventSourcedConfig
from pipelines.errors import ConfigError
from pipelines.state.event_sourced import load_aggregate
from pipelines.state.replay import Replayed, replay_history

__all__ = ["History", "add_event_store_commands", "event_sourced_stage", "read_history"]


def add_event_store_commands(commands: Any) -> None:
    event_store = commands.add_parser("es", help="event-sourced aggregates: rebuild one from its stored events")
    actions = event_store.add_subparsers(dest="action", required=True, metavar="ACTION")
    replay = actions.add_parser("replay", help="rebuild one aggregate from its events, to a version or a time")
    replay.add_argument("config", help="the pipeline config with the event_sourced stage")
    replay.add_argument("--key", required=True, help="the aggregate id (the stage's key column)")
    replay.add_argument("--to-version", type=int, default=None, metavar="N", help="stop after version N")
    replay.add_argument(
        "--as-of", default=None, metavar="TIME", help="stop at events after TIME (epoch ms, or ISO 8601 with a zone)"
    )
    replay.add_argument("--steps", action="store_true", help="print the state after each event")
    replay.add_argument("--no-snapshots", action="store_true", help="replay from the first event, not a snapshot")
    replay.add_argument("--json", action="store_true", help="print the result as JSON (for scripts)")
    replay.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="override a config field")
    replay.set_defaults(func=_replay)


def _replay(args: argparse.Namespace) -> int:
    if args.to_version is not None and args.to_version < 0:
        raise ConfigError(f"--to-version {args.to_version}: versions start at 1 (0: the initial state)")
    config = load_config(args.config, parse_set(args.set))
    stage = event_sourced_stage(config)
    config = resolve_secrets(config, os.environ)
    as_of_ms = None if args.as_of is None else parse_time_ms(args.as_of)
    history = asyncio.run(read_history(config, stage, args.key))
    aggregate = load_aggregate(stage.aggregate)
    snapshots = [] if args.no_snapshots else history.snapshots
    replayed = replay_history(aggregate, history.events, args.to_version, as_of_ms, args.steps, snapshots)
    if args.json:
        print(json.dumps(_as_dict(args.key, replayed, len(history.events)), default=str))
    else:
        _print(Console(), args.key, replayed, len(history.events))
    return 1 if replayed.problems else 0


def event_sourced_stage(config: PipelineConfig) -> EventSourcedConfig:
    """The config's event-sourced stage; :class:`ConfigError` if it has none."""
    for view in config.keyed_stages:
        if isinstance(view.keyed, EventSourcedConfig):
            return view.keyed
    raise ConfigError(f"pipeline {config.name!r} has no keyed stage of type event_sourced: nothing to replay")


def parse_time_ms(text: str) -> int:
    """Epoch milliseconds, or an ISO 8601 time with a zone (``2026-01-01T00:00:00Z``)."""
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ConfigError(f"--as-of {text!r}: give epoch milliseconds or an ISO 8601 time with a zone, e.g. "
                          "2026-01-01T12:00:00Z")  # fmt: skip
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True)
class History:
    """One aggregate's stored events and snapshots, as rows."""

    events: list[dict[str, Any]]
    snapshots: list[dict[str, Any]]


async def read_history(config: PipelineConfig, stage: EventSourcedConfig, key: str) -> History:
    """The stored events and snapshots of aggregate ``key`` (compared as text), from the first sink that holds
    events (snapshots from the same sink: another topic it routes to, or the same files)."""
    sink = _events_sink(config, stage)
    if isinstance(sink, KafkaSinkConfig):
        assert config.kafka is not None  # a Kafka sink needs a kafka section
        keyed = stage.key == sink.key_column
        if sink.topic_column is None:
            rows = await _read_kafka(config.kafka, sink.topic, key, keyed)
        else:
            rows = await _read_kafka(config.kafka, stage.events_topic, key, keyed)
            if stage.snapshots_topic in sink.all_topics:
                rows += await _read_kafka(config.kafka, stage.snapshots_topic, key, keyed)
    else:
        rows = _read_files(sink)
    mine = [row for row in rows if str(row.get(stage.key)) == key]
    return History(
        [row for row in mine if row.get("topic") == stage.events_topic],
        [row for row in mine if row.get("topic") == stage.snapshots_topic],
    )


def _events_sink(
    config: PipelineConfig, stage: EventSourcedConfig
) -> KafkaSinkConfig | ParquetSinkConfig | JsonlSinkConfig:
    for sink in config.sinks:
        if isinstance(sink, KafkaSinkConfig) and _holds_events(sink, stage):
            return sink
        if isinstance(sink, ParquetSinkConfig | JsonlSinkConfig) and Path(sink.path).is_dir():
            return sink
    raise ConfigError(
        f"pipeline {config.name!r}: no sink holds the events topic {stage.events_topic!r} (a Kafka sink writing it, "
        "or a Parquet or JSONL sink whose directory exists)"
    )


def _holds_events(sink: KafkaSinkConfig, stage: EventSourcedConfig) -> bool:
    return stage.events_topic in sink.all_topics or sink.topic_column is None


async def _read_kafka(
    connection: KafkaConnectionConfig, topic: str, key: str, keyed_by_aggregate: bool
) -> list[dict[str, Any]]:
    """Every committed record of ``topic``, or of the partition ``key`` is in when records are keyed by it."""
    ends = await end_offsets(connection, topic)
    partitions = sorted(ends)
    if keyed_by_aggregate and partitions:
        partitions = [partitions[(murmur2(key.encode()) & 0x7FFFFFFF) % len(partitions)]]
    wanted = [TopicPartition(topic, partition) for partition in partitions if ends[partition] > 0]
    rows: list[dict[str, Any]] = []
    if not wanted:
        return rows
    options = {"enable_auto_commit": False, "isolation_level": "read_committed", "auto_offset_reset": "earliest"}
    async with started_consumer(connection, **options) as consumer:
        consumer.assign(wanted)
        await consumer.seek_to_beginning(*wanted)
        while [tp for tp in wanted if await consumer.position(tp) < ends[tp.partition]]:
            fetched = await consumer.getmany(timeout_ms=1_000, max_records=10_000)
            for records in fetched.values():
                rows += [msgspec.json.decode(record.value) for record in records]
    return rows


def _read_files(sink: ParquetSinkConfig | JsonlSinkConfig) -> list[dict[str, Any]]:
    if isinstance(sink, ParquetSinkConfig):
        table: pa.Table = ds.dataset(sink.path, format="parquet").to_table()
        return list(table.to_pylist())
    rows: list[dict[str, Any]] = []
    for path in sorted(Path(sink.path).glob("*.jsonl")):
        rows += [msgspec.json.decode(line) for line in path.read_bytes().splitlines() if line.strip()]
    return rows


def _as_dict(key: str, replayed: Replayed, stored: int) -> dict[str, Any]:
    return {
        "aggregate_id": key,
        "version": replayed.version,
        "state": replayed.state,
        "from_snapshot": replayed.from_snapshot,
        "events_stored": stored,
        "steps": [step.__dict__ for step in replayed.steps],
        "problems": list(replayed.problems),
    }


def _print(console: Console, key: str, replayed: Replayed, stored: int) -> None:
    if replayed.steps:
        table = Table(title=f"{key}: state after each event")
        for column in ("version", "event", "time (UTC)", "state after"):
            table.add_column(column)
        for step in replayed.steps:
            data = json.dumps(step.data, default=str)
            table.add_row(str(step.version), f"{step.event_type} {data}", _iso(step.time_ms),
                          json.dumps(step.state, default=str))  # fmt: skip
        console.print(table)
    start = "the first event" if replayed.from_snapshot is None else f"the snapshot at version {replayed.from_snapshot}"
    console.print(f"[bold]{key}[/] at version {replayed.version} ({stored} event(s) stored; replayed from {start}):")
    console.print(json.dumps(replayed.state, default=str, indent=2), markup=False)
    for problem in replayed.problems:
        console.print(f"[yellow]warning:[/] {problem}")


def _iso(time_ms: int | None) -> str:
    if time_ms is None:
        return "-"
    return datetime.fromtimestamp(time_ms / 1000, timezone.utc).isoformat(timespec="milliseconds")
