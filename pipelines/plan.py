"""A pipeline config compiled into the pieces that run: decoder, operator chain, keyed stage.

:func:`compile_pipeline` checks every name along the way (operators' columns, the keyed stage's key and
inputs, sort columns of sinks) so a wrong config fails before any actor starts, with the field path and the
choices.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.binary_codecs import AvroDecoder, RawBytesDecoder
from pipelines.codecs import DecodedBatch, Decoder, JsonDecoder
from pipelines.config import ConsoleSinkConfig, MaskOp, PipelineConfig
from pipelines.errors import ConfigError, ExpressionError
from pipelines.kafka_config import KafkaSinkConfig
from pipelines.keyed_stage import open_keyed_operator
from pipelines.operators import Operator, apply_all, apply_all_isolating_rows, build_operators
from pipelines.records import RawBatch, dead_letters
from pipelines.schema import EventSchema
from pipelines.state_config import DedupConfig, KeyedProcessConfig, UpsertConfig
from pipelines.windows import IS_FINAL, WINDOW_END, WINDOW_START, AggregationPlan

__all__ = ["CompiledPipeline", "Transformed", "compile_pipeline"]


@dataclass(frozen=True)
class Transformed:
    """What the operators made of decoded events: the events that passed them all (``events``), and the
    ``_offset`` of each event an operator could not compute, in the order of the events, with its reason (same
    order)."""

    events: pa.RecordBatch
    failed_offsets: pa.Array
    failed_reasons: pa.Array

    def failures_as_dead_letters(self, raw: RawBatch) -> list[pa.RecordBatch]:
        """The failed events as ``invalid`` dead letters of ``raw``, the fetch they were decoded from (one
        batch, or none when no event failed)."""
        if not len(self.failed_offsets):
            return []
        indices = pc.index_in(self.failed_offsets, value_set=raw.offsets)
        return [dead_letters(raw, indices, self.failed_reasons, "invalid")]


@dataclass(frozen=True)
class CompiledPipeline:
    """The per-batch work of a pipeline's source stage: decode, validate, then run the operators."""

    config: PipelineConfig
    schema: EventSchema
    decoder: Decoder
    operators: tuple[Operator, ...]
    output_columns: tuple[str, ...]

    def decode(self, raw: RawBatch) -> DecodedBatch:
        """Decoded, valid events with metadata columns, and dead letters for the rest."""
        return self.decoder.decode(raw)

    def transform(self, events: pa.RecordBatch) -> Transformed:
        """Run the stateless operators on decoded events (with their metadata columns, ``_offset`` included).

        An event on whose values an operator cannot be computed (a checked overflow, a failed cast) is taken
        out, with a reason naming the operator and its expression but not the value; the other events go on,
        as if the failed ones had not been there. Never blocks. Raises :class:`ExpressionError` (or a
        ``pyarrow`` error) only for an error that no single event causes, such as a type error, which
        :func:`compile_pipeline` rules out beforehand.
        """
        outcome = apply_all_isolating_rows(self.operators, events)
        failed_offsets = events.column("_offset").take(outcome.failed_positions)
        return Transformed(outcome.events, failed_offsets, outcome.failed_reasons)

    @property
    def carries_trace(self) -> bool:
        """Whether results keep the ``_traceparent`` of (their first contributing) events."""
        return "_traceparent" in self.output_columns

    @property
    def result_columns(self) -> tuple[str, ...]:
        """Columns of what reaches the sinks: window results, or the operators' output (also for an upsert
        table, whose changelog rows are input rows, and dedup, which passes input rows through).

        Empty for a process function: its rows are whatever user code returns, known only when it runs, so
        sink columns are not checked at compile time for it.
        """
        if isinstance(self.config.keyed, KeyedProcessConfig):
            return ()
        aggregate = self.config.aggregate
        if aggregate is None:
            return self.output_columns
        trace = ("_traceparent",) if self.carries_trace else ()
        updates = (IS_FINAL,) if aggregate.emits_updates else ()
        return (aggregate.key, WINDOW_START, WINDOW_END, *aggregate.aggregations, *updates, *trace)


def compile_pipeline(config: PipelineConfig) -> CompiledPipeline:
    """Build and check everything the config describes; raise :class:`ConfigError` naming what is wrong."""
    _check_dead_letter(config)
    schema = EventSchema(config.schema_)
    operators, columns = build_operators(config.operators, schema.batch_schema.names)
    compiled = CompiledPipeline(config, schema, _decoder(schema), tuple(operators), tuple(columns))
    _check_aggregate(config, columns)
    _check_keyed(config, columns)
    if not isinstance(config.keyed, KeyedProcessConfig):
        _check_sinks(config, compiled.result_columns)
    _dry_run(compiled)
    return compiled


def _dry_run(compiled: CompiledPipeline) -> None:
    """Run the schema checks, the operators and the keyed stage on an empty batch of the decoded schema: a type
    error (``amount > 'abc'``, ``sum`` of a string column, a delete column that is no boolean) fails here,
    naming the place, instead of in an actor at run time (where a check or an operator that cannot be computed
    for some rows' values dead-letters those rows instead)."""
    empty = pa.RecordBatch.from_pylist([], schema=compiled.schema.batch_schema)
    try:
        compiled.schema.validate(empty)
    except (ExpressionError, pa.ArrowException) as error:
        raise ConfigError(f"schema.checks: {error}") from None
    try:
        events = apply_all(compiled.operators, empty)
    except (ExpressionError, pa.ArrowException) as error:
        raise ConfigError(f"operators: {error}") from None
    if compiled.config.keyed is not None:
        _dry_run_keyed(compiled, events)
        return
    aggregate = compiled.config.aggregate
    if aggregate is None:
        return
    plan = AggregationPlan(aggregate, carry_trace=compiled.carries_trace)
    rows = pa.table(
        {
            aggregate.key: events.column(aggregate.key),
            "_window_start": pa.array([], pa.int64()),
            **{name: events.column(name) for name in plan.source_columns},
        }
    )
    try:
        plan.merge(plan.partial_aggregate(rows))
    except pa.ArrowException as error:
        raise ConfigError(f"aggregate.aggregations: {error} (check each aggregation's column type)") from None


def _dry_run_keyed(compiled: CompiledPipeline, events: pa.RecordBatch) -> None:
    """Build the keyed operator (a process function is imported here: a wrong path fails now) and feed it the
    empty batch, snapshot included."""
    keyed = compiled.config.keyed
    if isinstance(keyed, UpsertConfig) and keyed.delete_column is not None:
        kind = events.schema.field(keyed.delete_column).type
        if kind != pa.bool_():
            raise ConfigError(
                f"keyed.delete_column: column {keyed.delete_column!r} is {kind}, not bool (true deletes the key); "
                'derive a boolean column, e.g. op: derive, expr: event_type == "ItemDeleted"'
            )
    try:
        operator = open_keyed_operator(compiled.config, carry_trace=compiled.carries_trace)
    except ConfigError as error:
        raise ConfigError(f"keyed.function: {error}") from None
    try:
        operator.add(events)
        operator.snapshot()
    except pa.ArrowException as error:
        raise ConfigError(f"keyed: {error} (check the types of the key and id columns)") from None


def _decoder(schema: EventSchema) -> Decoder:
    config = schema.config
    if config.format == "avro":
        assert config.avro_schema is not None  # the config validator guarantees it
        return AvroDecoder(schema, config.avro_schema)
    if config.format == "raw":
        return RawBytesDecoder(schema)
    return JsonDecoder(schema)


def _check_dead_letter(config: PipelineConfig) -> None:
    """``payload: masked`` masks JSON fields named by mask operators: it needs both. A masked Kafka key (``_key``)
    is not kept raw in dead letters either."""
    key_masks = [i for i, op in enumerate(config.operators) if isinstance(op, MaskOp) and op.column == "_key"]
    if key_masks and config.dead_letter.key == "raw":
        raise ConfigError(
            f"dead_letter.key: raw keeps the Kafka key that operators.{key_masks[0]} masks; set dead_letter.key to "
            "encrypted or omitted"
        )
    if config.dead_letter.payload != "masked":
        return
    if config.schema_.format != "json":
        raise ConfigError(
            f"dead_letter.payload: masked works on JSON payloads, and schema.format is {config.schema_.format}; "
            "use payload: omitted to keep personal data out of dead letters"
        )
    if not any(isinstance(operator, MaskOp) for operator in config.operators):
        raise ConfigError(
            "dead_letter.payload: masked, but no mask operator names a field to mask; add mask operators, or use "
            "payload: raw (keep the bytes) or omitted (keep none)"
        )


def _check_aggregate(config: PipelineConfig, columns: list[str]) -> None:
    aggregate = config.aggregate
    if aggregate is None:
        return
    if aggregate.key not in columns:
        raise ConfigError(f"aggregate.key: unknown column {aggregate.key!r}; available: {columns}")
    if "_timestamp" not in columns:
        raise ConfigError("aggregate: the operators dropped _timestamp, which windows need; keep it in select")
    reserved = {aggregate.key: "the aggregate key", WINDOW_START: "a window column", WINDOW_END: "a window column"}
    for name, aggregation in aggregate.aggregations.items():
        if name in reserved:
            raise ConfigError(
                f"aggregate.aggregations.{name}: the name is taken by {reserved[name]} of the results; "
                f"name the aggregation otherwise (result columns: {[aggregate.key, WINDOW_START, WINDOW_END]})"
            )
        if aggregation.column is not None and aggregation.column not in columns:
            raise ConfigError(
                f"aggregate.aggregations.{name}.column: unknown column {aggregation.column!r}; available: {columns}"
            )


def _check_keyed(config: PipelineConfig, columns: list[str]) -> None:
    """The keyed section's columns exist after the operators; upsert and dedup also need ``_timestamp``."""
    keyed = config.keyed
    stage = config.keyed_stage
    if keyed is None or stage is None:
        return
    named = [(stage.key_field, stage.key)]
    if isinstance(keyed, UpsertConfig) and keyed.delete_column is not None:
        named.append(("keyed.delete_column", keyed.delete_column))
    for field, column in named:
        if column not in columns:
            raise ConfigError(f"{field}: unknown column {column!r}; available: {columns}")
    if isinstance(keyed, UpsertConfig | DedupConfig) and "_timestamp" not in columns:
        raise ConfigError(
            f"keyed: the operators dropped _timestamp, which {keyed.type} needs (event time orders versions and "
            "expires ids); keep it in select"
        )


def _check_sinks(config: PipelineConfig, result_columns: tuple[str, ...]) -> None:
    available = list(result_columns)
    for position, sink in enumerate(config.sinks):
        if isinstance(sink, ConsoleSinkConfig) and sink.sort_by is not None and sink.sort_by not in result_columns:
            raise ConfigError(f"sinks.{position}.sort_by: unknown column {sink.sort_by!r}; available: {available}")
        if not isinstance(sink, KafkaSinkConfig):
            continue
        if sink.key_column is not None and sink.key_column not in result_columns:
            raise ConfigError(
                f"sinks.{position}.key_column: unknown column {sink.key_column!r}; available: {available}"
            )
        if sink.partition_by == "source_partition" and "_partition" not in result_columns:
            raise ConfigError(
                f"sinks.{position}.partition_by: source_partition needs a _partition column in the results "
                f"(aggregates have none; use partition_by: key with a key_column); available: {available}"
            )
