"""A pipeline config compiled into the pieces that run: decoder, operator chain, window aggregate.

:func:`compile_pipeline` checks every name along the way (operators' columns, the aggregate key and inputs,
sort columns of sinks) so a wrong config fails before any actor starts, with the field path and the choices.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from pipelines.binary_codecs import AvroDecoder, RawBytesDecoder
from pipelines.codecs import DecodedBatch, Decoder, JsonDecoder
from pipelines.config import ConsoleSinkConfig, PipelineConfig
from pipelines.errors import ConfigError, ExpressionError
from pipelines.kafka_config import KafkaSinkConfig
from pipelines.operators import Operator, apply_all, build_operators
from pipelines.records import RawBatch
from pipelines.schema import EventSchema
from pipelines.windows import IS_FINAL, WINDOW_END, WINDOW_START, AggregationPlan

__all__ = ["CompiledPipeline", "compile_pipeline"]


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

    def transform(self, events: pa.RecordBatch) -> pa.RecordBatch:
        """Run the stateless operators on decoded events."""
        return apply_all(self.operators, events)

    @property
    def carries_trace(self) -> bool:
        """Whether results keep the ``_traceparent`` of (their first contributing) events."""
        return "_traceparent" in self.output_columns

    @property
    def result_columns(self) -> tuple[str, ...]:
        """Columns of what reaches the sinks: window results, or the operators' output."""
        aggregate = self.config.aggregate
        if aggregate is None:
            return self.output_columns
        trace = ("_traceparent",) if self.carries_trace else ()
        updates = (IS_FINAL,) if aggregate.emits_updates else ()
        return (aggregate.key, WINDOW_START, WINDOW_END, *aggregate.aggregations, *updates, *trace)


def compile_pipeline(config: PipelineConfig) -> CompiledPipeline:
    """Build and check everything the config describes; raise :class:`ConfigError` naming what is wrong."""
    schema = EventSchema(config.schema_)
    operators, columns = build_operators(config.operators, schema.batch_schema.names)
    compiled = CompiledPipeline(config, schema, _decoder(schema), tuple(operators), tuple(columns))
    _check_aggregate(config, columns)
    _check_sinks(config, compiled.result_columns)
    _dry_run(compiled)
    return compiled


def _dry_run(compiled: CompiledPipeline) -> None:
    """Run the operators and the aggregation on an empty batch of the decoded schema: a type error (``amount >
    'abc'``, ``sum`` of a string column) fails here, naming the place, instead of in an actor at run time."""
    empty = pa.RecordBatch.from_pylist([], schema=compiled.schema.batch_schema)
    try:
        events = apply_all(compiled.operators, empty)
    except (ExpressionError, pa.ArrowException) as error:
        raise ConfigError(f"operators: {error}") from None
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


def _decoder(schema: EventSchema) -> Decoder:
    config = schema.config
    if config.format == "avro":
        assert config.avro_schema is not None  # the config validator guarantees it
        return AvroDecoder(schema, config.avro_schema)
    if config.format == "raw":
        return RawBytesDecoder(schema)
    return JsonDecoder(schema)


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
