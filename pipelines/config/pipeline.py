"""Pipeline configuration: pydantic models loaded from YAML or built in Python.

Units are in field names (``_ms``, ``_s``). Unknown keys are rejected, so a typo fails before anything starts,
and :func:`load_config` turns validation errors into one :class:`ConfigError` that lists every field path with
what is allowed.
"""

from __future__ import annotations

import re
import types
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipelines.config.autoscale import AutoscaleConfig
from pipelines.config.base import VARIABLE_NAME, ConfigModel, KeyFromEnvironment
from pipelines.config.dead_letter import DeadLetterContent
from pipelines.config.field_types import FieldType, canonical_field_type, is_flat
from pipelines.config.kafka import (
    CircuitBreakerConfig,
    KafkaConnectionConfig,
    KafkaDeadLetterConfig,
    KafkaSinkConfig,
    KafkaSourceConfig,
)
from pipelines.config.query import QueryConfig, ServeConfig
from pipelines.config.registry import RegistryConfig
from pipelines.config.saga import SagaConfig, SagaMonitorConfig
from pipelines.config.stage_graph import StageGraph, stage_graph
from pipelines.config.state import (
    IMPORT_PATH,
    DedupConfig,
    EventSourcedConfig,
    JoinConfig,
    KeyedProcessConfig,
    UpsertConfig,
)
from pipelines.errors import ConfigError

__all__ = [
    "MASK_KEY_ENV",
    "MAX_UNRESPONSIVE_S",
    "MIN_UNRESPONSIVE_S",
    "SINGLE_INPUT",
    "AggregateConfig",
    "AggregationConfig",
    "BurstConfig",
    "CheckpointConfig",
    "CheckpointEncryptionConfig",
    "ConsoleSinkConfig",
    "DeadLetterConfig",
    "DeriveOp",
    "FieldType",
    "FieldTypeText",
    "FileSourceConfig",
    "FilterOp",
    "GeneratorSourceConfig",
    "HoppingWindowConfig",
    "InputConfig",
    "JsonlSinkConfig",
    "KeyedConfig",
    "KeyedStage",
    "MaskOp",
    "NamedInput",
    "OperatorConfig",
    "ParquetSinkConfig",
    "PipelineConfig",
    "RuntimeConfig",
    "SchemaConfig",
    "SelectOp",
    "SessionWindowConfig",
    "SinkConfig",
    "SlidingWindowConfig",
    "SourceConfig",
    "StageConfig",
    "TracingConfig",
    "TumblingWindowConfig",
    "WindowConfig",
    "format_validation_error",
    "load_config",
    "parse_config",
    "with_paths_resolved",
]

#: A column type of ``schema.fields``: a flat name (:data:`FieldType`) or a nested type, checked and written
#: canonically when the config loads (:mod:`pipelines.config.field_types`).
FieldTypeText = Annotated[str, AfterValidator(canonical_field_type)]
EVENT_TYPES = ("UserRegistered", "OrderCreated", "PaymentProcessed", "ShipmentDispatched", "InventoryUpdated")


_Model = ConfigModel
_MAX_INPUTS = 64
_MAX_NESTING_DEPTH = 512  # msgspec refuses depths near Python's recursion limit (about 1,000 frames)


_METADATA_COLUMNS = frozenset({"_partition", "_offset", "_timestamp", "_key", "_traceparent", "_event_id"})


class SchemaConfig(_Model):
    """The shape of decoded events and the rules that make an event valid.

    ``format`` is how payload bytes are read: ``json`` objects, ``avro`` records written with ``avro_schema``
    (schemaless, as most producers without a registry write them), or ``raw`` bytes kept as a ``value`` column.
    Avro with a ``registry``: records in the Confluent wire format (magic byte 0, a 4-byte schema id, the body),
    each read with the writer schema its id names and resolved to the reader schema (``avro_schema`` or
    ``registry.reader_schema_file``; with neither, read by field name into ``fields``). JSON with a
    ``registry``: JSON Schema producers' records, the bodies read as JSON once the registry knows their id.

    ``fields`` maps a column name to its type: a flat one (``string``, ``int64``, ``float64``, ``bool``,
    ``timestamp_ms``, ``binary``) or a nested one, written as text: ``struct<street: string, zip: string>``,
    ``list<int64>``, ``map<string, float64>`` (keys string or int64), nested in any way
    (``list<struct<sku: string, qty: int64>>``; grammar in :mod:`pipelines.config.field_types`). A value that
    does not fit its type, at any depth, makes the record an ``invalid`` dead letter; any nested value may be
    null. Expressions reach struct members by path (``customer.address.zip``); ``event_time_field``,
    ``event_id_field``, keys and ``registry.type_column`` are flat columns.

    The ``max_*`` limits make a record a dead letter (error type ``limit``, or ``timestamp`` for event times)
    instead of letting it stop or slow the pipeline; size, header and nesting limits are checked before the
    record is decoded. Null turns a limit off.
    """

    format: Literal["json", "avro", "raw"] = "json"
    avro_schema: dict[str, Any] | list[Any] | None = Field(
        default=None, description="the Avro writer schema (format: avro); with a registry, the reader schema"
    )
    registry: RegistryConfig | None = Field(
        default=None, description="format: avro in the Confluent wire format, writer schemas in this registry"
    )
    fields: dict[str, FieldTypeText] = Field(
        min_length=1,
        description=(
            "column name -> type: string, int64, float64, bool, timestamp_ms (int64 epoch ms), binary, or nested: "
            "struct<name: type, ...>, list<type>, map<string|int64, type>"
        ),
    )
    required: list[str] = Field(default_factory=list, description="columns that must not be null")
    checks: list[str] = Field(
        default_factory=list, description="expressions that must be true; a failing one is the DLQ reason"
    )
    event_time_field: str | None = Field(default=None, description="int64 epoch-ms column used as event time")
    event_id_field: str | None = Field(default=None, description="column that identifies an event uniquely")
    max_record_bytes: int | None = Field(
        default=1_048_576, ge=1, description="a larger payload is a dead letter, never parsed; null: no limit"
    )
    max_nesting_depth: int | None = Field(
        default=64,
        ge=1,
        le=_MAX_NESTING_DEPTH,
        description=(
            "JSON only: a record with objects/arrays nested deeper is a dead letter; at most "
            f"{_MAX_NESTING_DEPTH}, as msgspec, which reads the records pyarrow's reader refuses, cannot go much "
            "deeper; null: no limit (deeper records it reads are dead letters as undecodable)"
        ),
    )
    max_future_ms: int | None = Field(
        default=3_600_000,
        ge=0,
        description=(
            "an event time further ahead of the record's Kafka timestamp (else of the time it was read) is a "
            "dead letter; null: no limit"
        ),
    )
    max_past_ms: int | None = Field(
        default=None, ge=0, description="an event time further behind the same reference is a dead letter"
    )
    max_header_count: int = Field(default=64, ge=0, description="a record with more headers is a dead letter")
    max_header_bytes: int = Field(
        default=65_536, ge=0, description="a record whose header names and values total more is a dead letter"
    )
    max_decompressed_batch_bytes: int | None = Field(
        default=67_108_864,
        ge=1,
        description=(
            "Kafka: a compressed record batch that would decompress to more (a decompression bomb) is not "
            "decompressed past it; the batch is one dead letter naming its offsets, as a corrupt one is; null: "
            "no limit"
        ),
    )

    @model_validator(mode="after")
    def _format_fits(self) -> SchemaConfig:
        if self.registry is not None:
            if self.format == "raw":
                raise ValueError("registry goes with format: avro or json (records in the Confluent wire format)")
            avro_only = {
                "avro_schema": self.avro_schema,
                "registry.reader_schema_file": self.registry.reader_schema_file,
                "registry.upcasters": self.registry.upcasters,
                "registry.type_column": self.registry.type_column,
            }
            given = [name for name, value in avro_only.items() if value is not None]
            if self.format == "json" and given:
                raise ValueError(f"{given} go with format: avro; JSON records are read by field name into fields")
            if self.avro_schema is not None and self.registry.reader_schema_file is not None:
                raise ValueError("give the reader schema once: avro_schema or registry.reader_schema_file")
            type_column = self.registry.type_column
            if type_column is not None and self.fields.get(type_column) != "string":
                raise ValueError(f"registry.type_column {type_column!r} must be a string column of fields")
        elif (self.format == "avro") != (self.avro_schema is not None):
            raise ValueError(
                "avro_schema goes with format: avro (and only with it); records in the Confluent wire format "
                "need a registry instead"
            )
        if self.avro_schema is not None and self.registry is None and not isinstance(self.avro_schema, dict):
            raise ValueError("avro_schema: a writer schema without a registry is one record schema")
        if self.format == "raw" and self.fields != {"value": "binary"}:
            raise ValueError("format: raw decodes to one column: write fields: {value: binary}")
        return self

    @model_validator(mode="after")
    def _names_exist(self) -> SchemaConfig:
        reserved = sorted(name for name in self.fields if name in _METADATA_COLUMNS)
        if reserved and (reserved != ["_timestamp"] or self.event_time_field != "_timestamp"):
            raise ValueError(
                f"fields {reserved}: {', '.join(sorted(_METADATA_COLUMNS))} are the columns eventray adds to every "
                "event; only _timestamp may be a field, as the event_time_field (reading events eventray wrote). "
                "Name the others otherwise"
            )
        known = sorted(self.fields)
        for name in self.required:
            if name not in self.fields:
                raise ValueError(f"required column {name!r} is not in fields; fields are {known}")
        for label, optional in (
            ("event_time_field", self.event_time_field),
            ("event_id_field", self.event_id_field),
        ):
            if optional is not None and optional not in self.fields:
                raise ValueError(f"{label} {optional!r} is not in fields; fields are {known}")
        if self.event_time_field and self.fields[self.event_time_field] not in ("int64", "timestamp_ms"):
            raise ValueError(f"event_time_field {self.event_time_field!r} must be int64 or timestamp_ms (epoch ms)")
        if self.event_id_field and not is_flat(self.fields[self.event_id_field]):
            raise ValueError(
                f"event_id_field {self.event_id_field!r} is a {self.fields[self.event_id_field]}: an event id is a "
                "flat column (string or int64), read before any operator runs"
            )
        return self


class BurstConfig(_Model):
    """``factor`` times the base rate from ``start_s`` for ``duration_s`` seconds (seconds after the run start)."""

    start_s: float = Field(ge=0)
    duration_s: float = Field(gt=0)
    factor: float = Field(gt=0, description="e.g. 5: five times the base rate")


InvalidKind = Literal["truncated_json", "missing_event_time", "negative_amount", "unknown_event_type", "wrong_type"]
DEFAULT_INVALID_KINDS: tuple[InvalidKind, ...] = (
    "truncated_json",
    "missing_event_time",
    "negative_amount",
    "unknown_event_type",
)


class GeneratorSourceConfig(_Model):
    """The built-in, replayable event generator: event i of partition p is a pure function of (seed, p, i)."""

    type: Literal["generator"] = "generator"
    partitions: int = Field(default=8, ge=1, le=1024)
    seed: int = Field(default=42, ge=0)
    rate_per_s: float | None = Field(
        default=20_000, gt=0, description="events/s over all partitions; null: as fast as the pipeline reads"
    )
    event_time_rate_per_s: float = Field(
        default=20_000, gt=0, description="spacing of event time when rate_per_s is null"
    )
    invalid_fraction: float = Field(default=0.01, ge=0, le=1)
    invalid_kinds: list[InvalidKind] = Field(
        default_factory=lambda: list(DEFAULT_INVALID_KINDS),
        min_length=1,
        description="which kinds of invalid event to make, drawn equally; wrong_type: amount_cents is a string",
    )
    customers: int = Field(default=1_000, ge=1)
    skus: int = Field(default=500, ge=1)
    max_out_of_order_ms: int = Field(default=500, ge=0, description="event-time jitter, bounded")
    start_time_ms: int | None = Field(default=None, ge=0, description="event time of offset 0; null: run start")
    event_id_prefix: str = Field(
        default="", max_length=32, description="event ids are <prefix><partition>-<offset> (one per input if several)"
    )
    bursts: list[BurstConfig] = Field(default_factory=list, description="rate bursts (autoscaling demos)")

    @model_validator(mode="after")
    def _bursts_need_a_rate(self) -> GeneratorSourceConfig:
        if self.bursts and self.rate_per_s is None:
            raise ValueError("bursts multiply rate_per_s: set a rate_per_s (not null) or remove bursts")
        return self


class FileSourceConfig(_Model):
    """JSONL or Parquet files; each file is one partition, its row number the offset."""

    type: Literal["file"] = "file"
    paths: list[str] = Field(min_length=1, description="files or glob patterns")
    format: Literal["jsonl", "parquet"] = "jsonl"


SourceConfig = Annotated[GeneratorSourceConfig | FileSourceConfig | KafkaSourceConfig, Field(discriminator="type")]


class FilterOp(_Model):
    op: Literal["filter"]
    expr: str = Field(min_length=1)


class SelectOp(_Model):
    op: Literal["select"]
    columns: list[str] = Field(min_length=1)
    rename: dict[str, str] = Field(default_factory=dict)


class DeriveOp(_Model):
    op: Literal["derive"]
    column: str = Field(min_length=1)
    expr: str = Field(min_length=1)


MASK_KEY_ENV = "EVENTRAY_MASK_KEY"


class MaskOp(KeyFromEnvironment):
    """``hash`` is a keyed HMAC-SHA256 under the key in ``key_env``: without the key nobody can recompute a
    hash from a guessed value, with the same key the hashes of two runs still join."""

    op: Literal["mask"]
    column: str = Field(min_length=1)
    method: Literal["redact", "hash", "keep_last"] = "redact"
    keep_last: int = Field(default=4, ge=0)
    key_env: str = Field(default=MASK_KEY_ENV, pattern=VARIABLE_NAME, description="method hash: the key's variable")

    @property
    def needs_key(self) -> bool:
        return self.method == "hash"


class UpcastOp(_Model):
    """Events of older schema versions (an events topic's ``event_type``, ``schema_version``, ``data``) brought to
    the versions the aggregate class names (its ``schema_versions`` and ``upcasters``)."""

    op: Literal["upcast"]
    aggregate: str = Field(pattern=IMPORT_PATH, description="import path 'package.module:ClassName'")


OperatorConfig = Annotated[FilterOp | SelectOp | DeriveOp | MaskOp | UpcastOp, Field(discriminator="op")]


class InputConfig(_Model):
    """One input of a pipeline with several (``inputs:``): a source, the schema of its events, and the stateless
    operators run on them before the keyed stage (or the sinks) take the rows of every input together."""

    source: SourceConfig
    schema_: SchemaConfig = Field(alias="schema")
    operators: list[OperatorConfig] = Field(default_factory=list)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# the bounds of the watchdog's patience by default (PipelineConfig.unresponsive_after_s)
MIN_UNRESPONSIVE_S, MAX_UNRESPONSIVE_S = 5.0, 60.0
_UNRESPONSIVE_WITHOUT_CHECKPOINTS_S = 10.0
SINGLE_INPUT = "input"  # the name of the one input of a config written with source/schema/operators


@dataclass(frozen=True)
class NamedInput:
    """One input as the rest of eventray sees it, whichever form the config is written in.

    ``index`` is its place in the topology (inputs in the order written), which lays out its partitions
    (:mod:`pipelines.stages.topology`); ``path`` prefixes its fields in error messages (``inputs.payments.`` or empty
    for the single-input form, whose fields are at the top).
    """

    name: str
    index: int
    source: SourceConfig
    schema: SchemaConfig
    operators: tuple[OperatorConfig, ...]
    path: str
    written_name: str  # the name the config gives it (an input of several topics is several, under one name)


class AggregationConfig(_Model):
    fn: Literal["count", "sum", "min", "max", "mean"]
    column: str | None = None

    @model_validator(mode="after")
    def _column_when_needed(self) -> AggregationConfig:
        if self.fn != "count" and self.column is None:
            raise ValueError(f"aggregation {self.fn!r} needs a column")
        return self


class TumblingWindowConfig(_Model):
    """Fixed, non-overlapping windows ``[n * size_ms, (n + 1) * size_ms)``: each row is in exactly one."""

    type: Literal["tumbling"] = "tumbling"
    size_ms: int = Field(gt=0)


class HoppingWindowConfig(_Model):
    """Fixed windows of ``size_ms`` starting every ``hop_ms``: each row is in ``size_ms / hop_ms`` windows."""

    type: Literal["hopping"]
    size_ms: int = Field(gt=0)
    hop_ms: int = Field(gt=0)

    @field_validator("hop_ms")
    @classmethod
    def _hop_divides_size(cls, hop_ms: int, info: ValidationInfo) -> int:
        size_ms = info.data.get("size_ms")
        if size_ms is None:  # size_ms itself is invalid and reported
            return hop_ms
        if hop_ms > size_ms:
            raise ValueError(
                f"hop_ms ({hop_ms}) exceeds size_ms ({size_ms}): rows between windows would be counted nowhere; "
                "make hop_ms at most size_ms (hop_ms equal to size_ms is a tumbling window)"
            )
        if size_ms % hop_ms:
            raise ValueError(
                f"size_ms ({size_ms}) is not a multiple of hop_ms ({hop_ms}); choose a hop_ms that divides size_ms "
                f"(e.g. {_largest_divisor_at_most(size_ms, hop_ms)})"
            )
        return hop_ms


class SlidingWindowConfig(_Model):
    """One window per key and distinct event time t: that key's rows with event time in ``(t - size_ms, t]``."""

    type: Literal["sliding"]
    size_ms: int = Field(gt=0)


class SessionWindowConfig(_Model):
    """Per key, a maximal run of events each less than ``gap_ms`` after the previous one."""

    type: Literal["session"]
    gap_ms: int = Field(gt=0)


def _largest_divisor_at_most(number: int, limit: int) -> int:
    return next(candidate for candidate in range(limit, 0, -1) if number % candidate == 0)


def _window_type(value: Any) -> str:
    """The union tag; a window without ``type`` is tumbling (configs written before other kinds existed)."""
    tag = value.get("type", "tumbling") if isinstance(value, dict) else getattr(value, "type", "tumbling")
    return str(tag)


WindowConfig = Annotated[
    Annotated[TumblingWindowConfig, Tag("tumbling")]
    | Annotated[HoppingWindowConfig, Tag("hopping")]
    | Annotated[SlidingWindowConfig, Tag("sliding")]
    | Annotated[SessionWindowConfig, Tag("session")],
    Discriminator(_window_type),
]


class AggregateConfig(_Model):
    """A keyed, event-time windowed aggregate, run in AggregateActors that own key groups.

    A window closes when the watermark reaches its end and stays in state until the watermark reaches its end
    plus ``allowed_lateness_ms``; a row for a closed window still in state updates it (and an updated result
    is emitted), a row for no window still in state is *late* (side output). ``early_update_ms`` emits the
    current result of still-open windows each time the watermark crosses a multiple of it. With either on,
    results have an ``is_final`` column and (key, window_start_ms) is an upsert key: every window ends with
    exactly one ``is_final`` true row, after zero or more false ones (see pipelines/windows/tumbling.py).
    """

    key: str = Field(min_length=1)
    window: WindowConfig
    aggregations: dict[str, AggregationConfig] = Field(min_length=1)
    max_out_of_order_ms: int = Field(default=1_000, ge=0, description="watermark = max event time - this")
    idle_timeout_ms: int = Field(
        default=5_000,
        ge=1,
        description=(
            "a partition with nothing left to read and no valid event this long stops holding the watermark; "
            "one with a backlog never does"
        ),
    )
    allowed_lateness_ms: int = Field(
        default=0, ge=0, description="closed windows keep taking rows (and emit updates) this long past their end"
    )
    early_update_ms: int | None = Field(
        default=None, gt=0, description="emit open windows' current results each time the watermark moves this much"
    )

    @property
    def emits_updates(self) -> bool:
        """Whether a window may emit more than one result, so results carry ``is_final``."""
        return self.allowed_lateness_ms > 0 or self.early_update_ms is not None

    @model_validator(mode="after")
    def _is_final_is_free(self) -> AggregateConfig:
        if self.emits_updates and "is_final" in self.aggregations:
            raise ValueError(
                "aggregations.is_final: the name is taken by the is_final result column (allowed_lateness_ms or "
                "early_update_ms is on); name the aggregation otherwise"
            )
        return self


KeyedConfig = (
    UpsertConfig | DedupConfig | KeyedProcessConfig | JoinConfig | EventSourcedConfig | SagaConfig | SagaMonitorConfig
)

_MAX_STAGES = 8


class StageConfig(_Model):
    """One keyed stage of a pipeline with several (``stages:``): ``aggregate`` (event-time windows) or ``keyed``
    (upsert, dedup, process or join). It takes the rows of the inputs and the results of the earlier stages it names in
    ``inputs`` (by default: the first stage every input, each later one the stage before it), shuffled again by
    its own key (a window result's event time is the last millisecond of its window); see
    :mod:`pipelines.config.stage_graph`."""

    name: str | None = Field(
        default=None, pattern=r"^[a-z][a-z0-9_-]{0,62}$", description="how later stages name it; null: stage<k>"
    )
    inputs: list[str] | None = Field(
        default=None,
        min_length=1,
        description="inputs and earlier stages it takes, by name; null: all inputs (first stage), else the one before",
    )
    aggregate: AggregateConfig | None = None
    keyed: KeyedConfig | None = Field(
        default=None,
        discriminator="type",
        description="upsert, dedup, process, join, event_sourced, saga or saga_monitor",
    )
    actors: int | None = Field(
        default=None, ge=1, le=256, description="actors of this stage; null: runtime.aggregate_actors"
    )

    @model_validator(mode="after")
    def _one_operator(self) -> StageConfig:
        if (self.aggregate is None) == (self.keyed is None):
            raise ValueError(
                "a stage is either aggregate (event-time windows) or keyed (upsert, dedup, process or join): set one"
            )
        return self


@dataclass(frozen=True)
class KeyedStage:
    """What the actors need of a pipeline's keyed stage, whichever operator it is: the column that routes rows
    to key groups, and the watermark settings of the sources.

    ``key_field`` is where the key is configured (``aggregate.key``, ``keyed.key``, ``keyed.id_column``), for
    error messages; ``kind`` is ``windows``, ``upsert``, ``dedup`` or ``process``.
    """

    kind: Literal["windows", "upsert", "dedup", "process", "join", "event_sourced", "saga", "saga_monitor"]
    key: str
    key_field: str
    max_out_of_order_ms: int
    idle_timeout_ms: int


class ConsoleSinkConfig(_Model):
    type: Literal["console"] = "console"
    top: int = Field(default=10, ge=1, le=1_000, description="rows shown at the end, ranked by sort_by")
    sort_by: str | None = Field(default=None, description="column to rank rows by, descending")
    columns: list[str] | None = Field(default=None, min_length=1, description="the columns shown (default: all)")


class JsonlSinkConfig(_Model):
    type: Literal["jsonl"] = "jsonl"
    path: str = Field(min_length=1, description="directory; each writing actor writes part-<actor>.jsonl")


class ParquetSinkConfig(_Model):
    """Parquet files under ``path``. With ``bucket_by``, each file holds the rows of one bucket of that column's
    values (``crc32(value as text) % buckets``, in the file name ``...-b<bucket>.parquet``), sorted by it: reading
    one key's rows (an aggregate's history) opens only its bucket's files and skips row groups by statistics."""

    type: Literal["parquet"] = "parquet"
    path: str = Field(min_length=1, description="directory; each writing actor writes its own files")
    bucket_by: str | None = Field(default=None, min_length=1, description="column whose values pick the file")
    buckets: int = Field(default=16, ge=1, le=4096, description="with bucket_by: how many buckets")


SinkConfig = Annotated[
    ConsoleSinkConfig | JsonlSinkConfig | ParquetSinkConfig | KafkaSinkConfig, Field(discriminator="type")
]


class DeadLetterConfig(DeadLetterContent):
    """Where invalid events go (a JSONL directory), with their original bytes and the reason."""

    type: Literal["jsonl"] = "jsonl"
    path: str = Field(default="out/dead_letter", description="directory; each actor writes part-<actor>.jsonl")


class TracingConfig(_Model):
    """OpenTelemetry tracing: spans per batch and stage, W3C context carried per event (ARCHITECTURE.md section 6)."""

    enabled: bool = False
    sampling_ratio: float = Field(default=0.01, ge=0, le=1, description="share of new traces recorded")
    exporter: Literal["jsonl", "otlp_grpc", "otlp_http", "none"] = "jsonl"
    jsonl_path: str = Field(default="out/traces", description="directory; each process writes spans-<pid>.jsonl")
    otlp_endpoint: str | None = Field(default=None, description="e.g. http://collector:4317; default: OTEL env")
    otlp_headers: dict[str, SecretStr] = Field(default_factory=dict)
    otlp_insecure: bool = False
    max_links: int = Field(default=32, ge=0, le=1_000, description="links per batch span to sampled events")


class CheckpointEncryptionConfig(KeyFromEnvironment):
    """Checkpoint files encrypted at rest (pipelines/at_rest.py) under the 256-bit key in ``key_env``."""

    key_env: str = Field(default="EVENTRAY_CHECKPOINT_KEY", pattern=VARIABLE_NAME, description="64 hex digits")


class CheckpointConfig(_Model):
    """Aligned checkpoints of offsets and keyed state (ARCHITECTURE.md section 4); recovery restores the last
    complete one."""

    interval_ms: int = Field(default=5_000, ge=100, description="time between the starts of two checkpoints")
    uri: str = Field(
        default=".eventray/checkpoints",
        min_length=1,
        description="a directory or a pyarrow.fs URI (s3://, gs://); each pipeline writes under <uri>/<name>",
    )
    keep: int = Field(default=3, ge=1, le=1_000, description="complete checkpoints kept; older ones are deleted")
    max_recoveries: int = Field(
        default=20,
        ge=0,
        description="failures survived by restoring within recovery_window_s, and in a row without a completed "
        "epoch, before the run fails (the driver restarts a dead Supervisor under the same limit)",
    )
    recovery_window_s: float | None = Field(
        default=600,
        gt=0,
        description="max_recoveries counts the restorations of this many seconds (a failure rate: a long run "
        "survives failures spread over its life); null: of the whole run",
    )
    timeout_ms: int = Field(
        default=600_000,
        ge=1_000,
        description="an epoch not complete in this long (a barrier or commit that never returns) fails the "
        "topology, which is restored from the last checkpoint",
    )
    encryption: CheckpointEncryptionConfig | None = Field(
        default=None, description="AES-256-GCM of every checkpoint file (keyed state, write-ahead outputs)"
    )


class RuntimeConfig(_Model):
    source_actors: int = Field(default=2, ge=1, le=256)
    aggregate_actors: int = Field(default=2, ge=1, le=256)
    max_key_groups: int = Field(default=128, ge=1, le=32_768, description="fixed for the life of the state")
    batch_size: int = Field(default=4_096, ge=1, le=1_000_000)
    max_in_flight_batches: int = Field(default=8, ge=1, description="per source actor, before it waits")
    idle_poll_ms: int = Field(default=20, ge=1)
    timer_tick_ms: int = Field(
        default=200,
        ge=1,
        description="a stage with processing-time timers (a saga's timeouts) is ticked at least this often, input "
        "or not: a timer fires at most this late while its owner runs",
    )
    actor_resources: dict[str, float] = Field(
        default_factory=dict,
        description="custom Ray resources per source/aggregate actor, e.g. {eventray_slot: 1} under KubeRay, so "
        "that a pending actor makes the Ray autoscaler add a node",
    )
    cpus_per_actor: float = Field(
        default=0.25,
        ge=0,
        description="Ray CPU reservation per source/aggregate actor (scheduling, not a limit)",
    )
    autoscale: AutoscaleConfig | None = Field(
        default=None, description="lag-driven rescaling of source/aggregate actors (needs checkpoints)"
    )
    unresponsive_after_s: float | None = Field(
        default=None,
        gt=0,
        description="an actor that answered before and then does not answer its ping this long is killed and the "
        "topology recovered from the last checkpoint (a stopped process, a deadlock); null: twice "
        "checkpoint.interval_ms, from 5 s to 60 s (10 s at the default interval and without checkpoints)",
    )
    duration_s: float | None = Field(default=30.0, gt=0, description="stop reading after this; null: unbounded")
    max_events: int | None = Field(default=None, ge=1, description="stop after this many events")
    secrets: Literal["environment", "driver"] = Field(
        default="environment",
        description="who reads the secrets (Kafka password, mask, checkpoint and dead-letter keys): each actor from "
        "its own process environment, so that no secret travels through Ray (the Ray nodes have them: an embedded "
        "Ray inherits the driver's, `ray start` the shell's, KubeRay pods their Secrets); or the driver, which "
        "hands them to the actors inside their creation arguments, held by Ray's GCS (pipelines/config/secrets.py)",
    )


class PipelineConfig(_Model):
    """One pipeline: inputs -> decode/validate -> operators -> optional keyed stage -> sinks.

    An input is a source with the schema of its events and its operators: written at the top (``source``,
    ``schema``, ``operators``) for a pipeline with one, or under ``inputs`` by name for several (orders and
    payments). The keyed stage (or the sinks) takes the rows of every input together; each input must have the
    stage's key column after its operators, and rows of an input lacking a column another has get nulls there
    (:mod:`pipelines.stages.topology`). :attr:`all_inputs` is the view of either form.

    The keyed stage is either ``aggregate`` (event-time windows) or ``keyed`` (an upsert table, dedup or a
    process function, told apart by ``type``), never both; :attr:`keyed_stage` is the view of either one.
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")
    source: SourceConfig | None = Field(default=None, description="the one input (or several under inputs)")
    schema_: SchemaConfig | None = Field(default=None, alias="schema")
    operators: list[OperatorConfig] = Field(default_factory=list)
    inputs: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")], InputConfig] | None = Field(
        default=None,
        min_length=1,
        max_length=_MAX_INPUTS,
        description="named inputs, each with its source, schema and operators, instead of source/schema/operators",
    )
    aggregate: AggregateConfig | None = None
    keyed: KeyedConfig | None = Field(
        default=None,
        discriminator="type",
        description="upsert, dedup, process, join, event_sourced, saga or saga_monitor; instead of aggregate",
    )
    stages: list[StageConfig] | None = Field(
        default=None,
        min_length=1,
        max_length=_MAX_STAGES,
        description="keyed stages in order, each taking inputs and earlier stages (instead of aggregate or keyed)",
    )
    sinks: list[SinkConfig] = Field(default_factory=lambda: [ConsoleSinkConfig()])  # type: ignore[arg-type]
    dead_letter: Annotated[DeadLetterConfig | KafkaDeadLetterConfig, Field(discriminator="type")] = Field(
        default_factory=DeadLetterConfig
    )
    circuit_breaker: CircuitBreakerConfig | None = Field(default_factory=CircuitBreakerConfig)
    kafka: KafkaConnectionConfig | None = None
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    checkpoint: CheckpointConfig | None = Field(
        default_factory=CheckpointConfig, description="null: no checkpoints, a crash re-reads from the last commit"
    )
    delivery: Literal["at_least_once", "exactly_once"] = Field(
        default="at_least_once",
        description="exactly_once: Kafka sinks write in one transaction per epoch, file sinks rename on commit",
    )
    serve: ServeConfig = Field(
        default_factory=ServeConfig, description="the query router's HTTP endpoint (when a keyed stage has query)"
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("sinks")
    @classmethod
    def _at_least_one_sink(cls, sinks: list[Any]) -> list[Any]:
        if not sinks:
            raise ValueError("at least one sink is needed (console, jsonl or parquet)")
        return sinks

    @model_validator(mode="after")
    def _one_form_of_input(self) -> PipelineConfig:
        if self.inputs is None:
            missing = [name for name, value in (("source", self.source), ("schema", self.schema_)) if value is None]
            if missing:
                raise ValueError(
                    f"{' and '.join(missing)} missing: a pipeline reads source with schema (and optional operators), "
                    "or several named inputs, each with its source, schema and operators"
                )
            return self
        written = [name for name, value in (("source", self.source), ("schema", self.schema_)) if value is not None]
        written += ["operators"] if self.operators else []
        if written:
            raise ValueError(
                f"inputs is set, and so is {', '.join(written)}: with inputs, each input has its own source, schema "
                "and operators; move them into an input"
            )
        topics = [i.source.topic for i in self.all_inputs if isinstance(i.source, KafkaSourceConfig)]
        repeated = sorted({topic for topic in topics if topics.count(topic) > 1})
        if repeated:
            raise ValueError(
                f"several inputs read the topic(s) {repeated}: they would commit offsets of the same partitions "
                "under the pipeline's one consumer group; read each topic in one input (two schemas of one topic: "
                "one input whose schema has the fields of both, and filter or derive by type)"
            )
        prefixes = [i.source.event_id_prefix for i in self.all_inputs if isinstance(i.source, GeneratorSourceConfig)]
        if len(prefixes) != len(set(prefixes)):
            raise ValueError(
                "several generator inputs give event ids <partition>-<offset> with one event_id_prefix: set "
                "source.event_id_prefix on each (e.g. o and p) so that their ids stay unique"
            )
        group_ids = {i.source.group_id for i in self.all_inputs if isinstance(i.source, KafkaSourceConfig)} - {None}
        if len(group_ids) > 1:
            raise ValueError(
                f"the Kafka inputs name different group_ids ({sorted(map(str, group_ids))}): a pipeline commits "
                "the offsets of all its inputs under one consumer group; set the same group_id on each, or on one"
            )
        return self

    @model_validator(mode="after")
    def _one_keyed_stage(self) -> PipelineConfig:
        if self.stages is not None:
            written = [name for name, value in (("aggregate", self.aggregate), ("keyed", self.keyed)) if value]
            if written:
                raise ValueError(
                    f"stages is set, and so is {' and '.join(written)}: with stages, each keyed stage is an entry of "
                    "stages; move it there"
                )
            sized = [index for index, stage in enumerate(self.stages) if stage.actors is not None]
            if sized and self.runtime.autoscale is not None:
                raise ValueError(
                    f"stages.{sized[0]}.actors is set, and runtime.autoscale sizes every stage alike: remove the "
                    "stages' actors, or runtime.autoscale"
                )
            for index, stage in enumerate(self.stages[1:], start=1):
                operator = stage.aggregate if stage.aggregate is not None else stage.keyed
                assert operator is not None  # StageConfig holds one
                defaults = type(operator).model_fields
                settings = ("idle_timeout_ms", "max_out_of_order_ms")
                # defaults pass: a config written out in full (to_yaml) holds them
                written = [name for name in settings if getattr(operator, name) != defaults[name].default]
                if written:
                    kind = "aggregate" if stage.aggregate is not None else "keyed"
                    raise ValueError(
                        f"stages.{index}.{kind}.{written[0]}: a later stage takes the watermark of what feeds it "
                        "(the sources judge every input by stages.0's settings), so its own would do nothing; set "
                        "them on stages.0"
                    )
            self._graph_of_stages()  # raises ValueError naming stages.<k>.inputs when they cannot run
            self._check_join_sides()
            return self
        if self.aggregate is not None and self.keyed is not None:
            raise ValueError(
                "aggregate and keyed are both set, but a pipeline has one keyed stage: keep aggregate for "
                f"event-time windows or keyed ({self.keyed.type}) for the {self.keyed.type} operator, and remove "
                "the other"
            )
        self._check_join_sides()
        return self

    def _check_join_sides(self) -> None:
        """A join takes exactly the two things it names as ``left`` and ``right``."""
        for index, view in enumerate(self.keyed_stages):
            join = view.keyed
            if not isinstance(join, JoinConfig):
                continue
            taken = self.taken_by(index)
            path = f"stages.{index}.keyed" if self.stages is not None else "keyed"
            for side, name in (("left", join.left), ("right", join.right)):
                if name not in taken:
                    raise ValueError(f"{path}.{side}: {name!r} is not what the join takes; it takes {taken}")
            if len(taken) != 2:
                where = f"stages.{index}.inputs" if self.stages is not None else "inputs"
                raise ValueError(
                    f"{where}: a join takes two inputs or stages, its left and right, and this one takes {taken}; "
                    "send the others to another stage"
                )

    @model_validator(mode="after")
    def _views_named_once(self) -> PipelineConfig:
        names = [view.view for view in self.query_views.values()]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(
                f"query.view {twice[0]!r} is served by two keyed stages: give each stage's view a name of its own"
            )
        return self

    @property
    def query_views(self) -> dict[int, QueryConfig]:
        """The keyed stages whose state is served (their ``query``), by stage index."""
        views: dict[int, QueryConfig] = {}
        for index, view in enumerate(self.keyed_stages):
            query = getattr(view.keyed, "query", None)
            if isinstance(query, QueryConfig):
                views[index] = query
        return views

    def taken_by(self, stage: int) -> list[str]:
        """The names of the inputs (as written) and earlier stages that keyed stage ``stage`` takes, in order."""
        graph = self.stage_graph
        inputs = [spec.written_name for spec in self.all_inputs if graph.input_stage[spec.index] == stage]
        return list(dict.fromkeys(inputs)) + [self.stage_names[feeder] for feeder in graph.feeders(stage)]

    @model_validator(mode="after")
    def _capacity(self) -> PipelineConfig:
        stage = self.keyed_stage
        for index, sized in enumerate(self.stages or []):
            if sized.actors is not None and sized.actors > self.runtime.max_key_groups:
                raise ValueError(
                    f"stages.{index}.actors ({sized.actors}) exceeds runtime.max_key_groups "
                    f"({self.runtime.max_key_groups}): an actor would own no key group"
                )
        uses_default = self.stages is None or any(sized.actors is None for sized in self.stages)
        if stage is not None and uses_default and self.runtime.aggregate_actors > self.runtime.max_key_groups:
            raise ValueError(
                f"runtime.aggregate_actors ({self.runtime.aggregate_actors}) exceeds runtime.max_key_groups "
                f"({self.runtime.max_key_groups}): an actor would own no key group"
            )
        uses_kafka = any(isinstance(i.source, KafkaSourceConfig) for i in self.all_inputs)
        uses_kafka = uses_kafka or isinstance(self.dead_letter, KafkaDeadLetterConfig)
        uses_kafka = uses_kafka or any(isinstance(sink, KafkaSinkConfig) for sink in self.sinks)
        if uses_kafka and self.kafka is None:
            raise ValueError("Kafka sources and sinks need a kafka section (at least: kafka: {})")
        if self.runtime.autoscale is not None and self.checkpoint is None:
            raise ValueError("runtime.autoscale rescales at checkpoints: remove checkpoint: null")
        if self.delivery == "exactly_once" and self.checkpoint is None:
            raise ValueError("delivery: exactly_once needs checkpoints (remove checkpoint: null)")
        _check_sagas(self)
        without_time = [i for i in self.all_inputs if i.schema.event_time_field is None]
        if stage is not None and without_time:
            fed = self.stage_graph.input_stage[without_time[0].index]  # the stage that takes the input
            stage = self.keyed_stages[fed].keyed_stage
            assert stage is not None  # a view is of a keyed stage
            why = {
                "windows": "windows are on event time",
                "upsert": "versions are ordered by event time",
                "dedup": "ids expire by event time",
                "process": "timers fire on the event-time watermark",
                "join": "a row meets the versions valid at its event time",
                "event_sourced": "a command's time is passed to decide, and command ids expire by it",
                "saga": "the stage's watermark passes its rows on in time order",
                "saga_monitor": "a deadline is an event time the watermark passes",
            }[stage.kind]
            section = "aggregate" if stage.kind == "windows" else f"keyed ({stage.kind})"
            section = f"stages.{fed}.{section}" if self.stages is not None else section
            raise ValueError(f"{section} needs {without_time[0].path}schema.event_time_field ({why})")
        return self

    @property
    def unresponsive_after_s(self) -> float:
        """How long an actor's ping may wait before the Supervisor's watchdog kills the actor: as set in
        ``runtime``, or twice the checkpoint interval within [:data:`MIN_UNRESPONSIVE_S`,
        :data:`MAX_UNRESPONSIVE_S`]. A pipeline that checkpoints often has its hangs noticed sooner (a stall of
        three intervals, from a 2.5 s interval up); one that checkpoints rarely tolerates longer pauses anyway.
        The floor is there because a false kill is dear: an answer also waits for its process to be scheduled
        on a busy machine or to leave a long garbage collection, and a recovery starts every actor process
        again. The ceiling: the ping runs in a concurrency group of its own, so its wait does not grow with
        the work of an epoch, and a hang of minutes is not worth waiting out."""
        if self.runtime.unresponsive_after_s is not None:
            return self.runtime.unresponsive_after_s
        if self.checkpoint is None:
            return _UNRESPONSIVE_WITHOUT_CHECKPOINTS_S
        return min(MAX_UNRESPONSIVE_S, max(MIN_UNRESPONSIVE_S, 2 * self.checkpoint.interval_ms / 1000))

    @property
    def all_inputs(self) -> tuple[NamedInput, ...]:
        """The inputs in topology order: the one of a config written with ``source``/``schema``/``operators``
        (named :data:`SINGLE_INPUT`), or those under ``inputs``, in the order written."""
        if self.inputs is None:
            assert self.source is not None and self.schema_ is not None  # _one_form_of_input guarantees it
            written = [(SINGLE_INPUT, self.source, self.schema_, tuple(self.operators), "")]
        else:
            written = [(name, spec.source, spec.schema_, tuple(spec.operators), f"inputs.{name}.")
                       for name, spec in self.inputs.items()]  # fmt: skip
        named: list[NamedInput] = []
        for name, source, schema, operators, path in written:
            # a Kafka source of several topics is an input per topic, named <input>[<topic>]
            sources = source.each_topic() if isinstance(source, KafkaSourceConfig) else [source]
            for one in sources:
                label = f"{name}[{one.topic}]" if len(sources) > 1 and isinstance(one, KafkaSourceConfig) else name
                named.append(NamedInput(label, len(named), one, schema, operators, path, name))
        return tuple(named)

    @property
    def keyed_stages(self) -> tuple[PipelineConfig, ...]:
        """Each keyed stage, in order, as this pipeline with that stage's ``aggregate`` or ``keyed`` (and no
        ``stages``): the view an actor of the stage, or a check of it, works with. Empty for a stateless pipeline;
        this pipeline itself when it is written with ``aggregate`` or ``keyed``."""
        if self.stages is None:
            return () if self.aggregate is None and self.keyed is None else (self,)
        return tuple(
            self.model_copy(update={"stages": None, "aggregate": stage.aggregate, "keyed": stage.keyed})
            for stage in self.stages
        )

    @property
    def stage_names(self) -> tuple[str, ...]:
        """Each keyed stage's name (``stage<k>`` unless it names itself)."""
        return tuple(stage.name or f"stage{index}" for index, stage in enumerate(self.stages or []))

    @property
    def stage_graph(self) -> StageGraph:
        """Which stage takes each input and each stage's results (:mod:`pipelines.config.stage_graph`); for a
        pipeline written with ``aggregate`` or ``keyed``, every input feeds the one stage; a stateless one has none."""
        return self._graph_of_stages()

    def _graph_of_stages(self) -> StageGraph:
        names = [spec.written_name for spec in self.all_inputs]
        if self.stages is None:
            return StageGraph((0,) * len(names), (None,)) if self.keyed_stages else StageGraph((), ())
        return stage_graph(names, self.stage_names, [stage.inputs for stage in self.stages])

    @property
    def stage_actors(self) -> tuple[int, ...]:
        """How many actors each keyed stage runs: its own ``actors``, else ``runtime.aggregate_actors``."""
        if self.stages is None:
            return (self.runtime.aggregate_actors,) * len(self.keyed_stages)
        return tuple(stage.actors or self.runtime.aggregate_actors for stage in self.stages)

    @property
    def last_stage(self) -> PipelineConfig:
        """The view of the keyed stage whose rows reach the sinks (this pipeline when it has one or none)."""
        return self.keyed_stages[-1] if self.stages is not None else self

    @property
    def keyed_stage(self) -> KeyedStage | None:
        """The (first) keyed stage, ``aggregate`` or ``keyed``, as the actors see it; None for a stateless pipeline.
        The sources judge every input's lateness by its watermark settings (each input's rows go by the key of
        the stage that takes them: :attr:`stage_graph`)."""
        if self.stages is not None:
            first = self.keyed_stages[0].keyed_stage
            assert first is not None  # every stage is aggregate or keyed
            return replace(first, key_field=f"stages.0.{first.key_field}")
        if self.aggregate is not None:
            aggregate = self.aggregate
            return KeyedStage(
                "windows", aggregate.key, "aggregate.key", aggregate.max_out_of_order_ms, aggregate.idle_timeout_ms
            )
        keyed = self.keyed
        if keyed is None:
            return None
        if isinstance(keyed, DedupConfig):
            return KeyedStage("dedup", keyed.id_column, "keyed.id_column", keyed.max_out_of_order_ms,
                              keyed.idle_timeout_ms)  # fmt: skip
        return KeyedStage(keyed.type, keyed.key, "keyed.key", keyed.max_out_of_order_ms, keyed.idle_timeout_ms)

    @property
    def group_id(self) -> str:
        """The consumer group under which offsets are committed."""
        configured = [i.source.group_id for i in self.all_inputs if isinstance(i.source, KafkaSourceConfig)]
        return next((group for group in configured if group), f"eventray-{self.name}")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", by_alias=True), sort_keys=False)


def format_validation_error(error: ValidationError, source: str) -> str:
    """One line per error: the path as written in the YAML (``sinks.2.top``), then what is wrong or allowed."""
    lines = [f"invalid pipeline config {source}:"]
    for item in error.errors():
        path = ".".join(str(part) for part in _without_union_tags(item["loc"])) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown field (check the spelling; see configs/ for examples)"
        if item["type"] == "union_tag_not_found":
            tags = ", ".join(_tagged_members(_annotation_at(item["loc"])))
            message = f"{message}: write type: one of {tags}" if tags else message
        if item["type"] == "value_error":
            message = message.removeprefix("Value error, ")  # our own words (the validators' ValueErrors)
            if path == "(top level)" and _NAMES_ITS_FIELD.match(message):
                lines.append(f"  {message}")  # a check of the whole config that names the field itself
                continue
        lines.append(f"  {path}: {message}")
    return "\n".join(lines)


_NAMES_ITS_FIELD = re.compile(r"^[a-z_]+(\.[a-z0-9_\[\]-]+)*: ")


def _without_union_tags(loc: tuple[int | str, ...]) -> list[int | str]:
    """``loc`` without the tags pydantic adds after a discriminated-union field (``source.generator.rate_per_s``
    is ``source.rate_per_s`` in the YAML). A segment is a tag only where the models have a union of models
    tagged by ``type``/``op``, so a user's key that happens to equal a tag (an aggregation named ``file``) stays."""
    path: list[int | str] = []
    annotation: Any = PipelineConfig
    for part in loc:
        members = _tagged_members(annotation)
        if isinstance(part, str) and part in members:
            annotation = members[part]
            continue
        path.append(part)
        annotation = _child_annotation(annotation, part)
    return path


def _annotation_at(loc: tuple[int | str, ...]) -> Any:
    """The annotation of the field at ``loc`` (tags included, as pydantic reports them); None when unknown."""
    annotation: Any = PipelineConfig
    for part in loc:
        members = _tagged_members(annotation)
        annotation = members[part] if isinstance(part, str) and part in members else _child_annotation(annotation, part)
    return annotation


def _tagged_members(annotation: Any) -> dict[str, type[BaseModel]]:
    """The models of a union by their ``type``/``op`` literal; empty when ``annotation`` is no such union."""
    annotation = _strip_annotated(annotation)
    if get_origin(annotation) not in (Union, types.UnionType):
        return {}
    members: dict[str, type[BaseModel]] = {}
    for choice in get_args(annotation):
        member = _strip_annotated(choice)
        if get_origin(member) in (Union, types.UnionType):  # an optional union: ``source: SourceConfig | None``
            members.update(_tagged_members(member))
        elif isinstance(member, type) and issubclass(member, BaseModel):
            for tag in ("type", "op"):
                field = member.model_fields.get(tag)
                if field is not None and get_origin(field.annotation) is Literal:
                    members.update(dict.fromkeys(get_args(field.annotation), member))
    return members


def _child_annotation(annotation: Any, part: int | str) -> Any:
    """The annotation of field, item or value ``part`` of ``annotation``; None when unknown."""
    annotation = _strip_annotated(annotation)
    if get_origin(annotation) in (Union, types.UnionType):  # Optional[Model]: look into the model
        present = [member for member in get_args(annotation) if member is not type(None)]
        annotation = _strip_annotated(present[0]) if len(present) == 1 else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        fields = annotation.model_fields
        return next((f.annotation for name, f in fields.items() if part in (name, f.alias)), None)
    if get_origin(annotation) in (list, dict):
        return get_args(annotation)[-1]
    return None


def _strip_annotated(annotation: Any) -> Any:
    return get_args(annotation)[0] if get_origin(annotation) is Annotated else annotation


def parse_config(data: Any, source: str = "<dict>") -> PipelineConfig:
    """Validate ``data`` (a mapping, e.g. from YAML) into a config, or raise :class:`ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(f"invalid pipeline config {source}: the top level must be a mapping")
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source)) from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Load a YAML config; ``overrides`` maps dotted paths (``runtime.max_events``) to values."""
    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {file} does not exist") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {file} is not valid YAML: {error}") from None
    if isinstance(data, dict):
        for dotted, value in (overrides or {}).items():
            _set_dotted(data, dotted, value)
    return parse_config(data, str(file))


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``value`` at ``dotted`` in ``data``, creating missing (or null) sections; raise ConfigError if the
    path goes through a value that is not a section (``runtime.max_events.x``, or into a list)."""
    *parents, leaf = dotted.split(".")
    node = data
    for depth, part in enumerate(parents):
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            through = ".".join(parents[: depth + 1])
            raise ConfigError(
                f"override {dotted!r}: {through} is a {type(node).__name__}, not a section with fields; "
                "overrides can only set fields of sections"
            )
    node[leaf] = value


def with_paths_resolved(config: PipelineConfig, base: Path) -> PipelineConfig:
    """Relative file paths (file source, file sinks, dead-letter directory, reader schema files) made absolute
    against ``base``.

    Actors run in worker processes with their own working directories, so the driver resolves paths once,
    against the directory the user ran the command in.
    """

    def resolved(path: str) -> str:
        return str(base / path) if not Path(path).is_absolute() else path

    def with_path(sink: Any) -> Any:
        if isinstance(sink, JsonlSinkConfig | ParquetSinkConfig):
            return sink.model_copy(update={"path": resolved(sink.path)})
        return sink

    update: dict[str, Any] = {"sinks": [with_path(sink) for sink in config.sinks]}
    if isinstance(config.dead_letter, DeadLetterConfig):
        update["dead_letter"] = config.dead_letter.model_copy(update={"path": resolved(config.dead_letter.path)})
    if config.tracing.enabled and config.tracing.exporter == "jsonl":
        update["tracing"] = config.tracing.model_copy(update={"jsonl_path": resolved(config.tracing.jsonl_path)})

    def with_files(source: SourceConfig) -> SourceConfig:
        if isinstance(source, FileSourceConfig):
            return source.model_copy(update={"paths": [resolved(p) for p in source.paths]})
        return source

    def with_reader_file(schema: SchemaConfig) -> SchemaConfig:
        registry = schema.registry
        if registry is None or registry.reader_schema_file is None:
            return schema
        reader = registry.model_copy(update={"reader_schema_file": resolved(registry.reader_schema_file)})
        return schema.model_copy(update={"registry": reader})

    if config.source is not None:
        update["source"] = with_files(config.source)
    if config.schema_ is not None:
        update["schema_"] = with_reader_file(config.schema_)
    if config.inputs is not None:
        update["inputs"] = {
            name: spec.model_copy(update={"source": with_files(spec.source), "schema_": with_reader_file(spec.schema_)})
            for name, spec in config.inputs.items()
        }
    if config.checkpoint is not None and "://" not in config.checkpoint.uri:
        update["checkpoint"] = config.checkpoint.model_copy(update={"uri": resolved(config.checkpoint.uri)})
    return config.model_copy(update=update)


def _check_sagas(config: PipelineConfig) -> None:
    """A saga stage commits its state, timers and the commands it sends together, and its commands to a
    participant stay in order: exactly once, and Kafka sinks keyed by the saga id (the default partitioner)."""
    for view in config.keyed_stages:
        saga = view.keyed
        if not isinstance(saga, SagaConfig):
            continue
        if config.delivery != "exactly_once":
            raise ValueError(
                "keyed (saga) needs delivery: exactly_once: the saga's state, its timers and the commands it sends "
                "commit in one checkpoint epoch; at least once, a crash would resend commands and fire restored "
                "timeouts for replies already sent"
            )
        for index, sink in enumerate(config.sinks):
            if isinstance(sink, KafkaSinkConfig) and (sink.key_column != saga.key or sink.partition_by != "key"):
                raise ValueError(
                    f"sinks.{index}: a saga's Kafka sink must be keyed by the saga id (key_column: {saga.key}, "
                    "partition_by: key): a saga's commands to a participant must stay in one partition, in order, "
                    "so that a retry never overtakes its earlier attempt"
                )
