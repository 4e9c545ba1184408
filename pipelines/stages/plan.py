"""A pipeline config compiled into the pieces that run: decoder, operator chain, keyed stage.

:func:`compile_pipeline` checks every name along the way (operators' columns, the keyed stage's key and
inputs, sort columns of sinks) so a wrong config fails before any actor starts, with the field path and the
choices.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import fastavro
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config.kafka import KafkaSinkConfig
from pipelines.config.pipeline import ConsoleSinkConfig, MaskOp, NamedInput, ParquetSinkConfig, PipelineConfig
from pipelines.config.saga import SagaConfig, SagaMonitorConfig
from pipelines.config.stage_graph import StageGraph
from pipelines.config.state import DedupConfig, EventSourcedConfig, JoinConfig, UpsertConfig
from pipelines.decode.binary_codecs import AvroDecoder, RawBytesDecoder
from pipelines.decode.codecs import DecodedBatch, Decoder, JsonDecoder
from pipelines.decode.registry_avro import RegistryAvroDecoder
from pipelines.decode.registry_json import RegistryJsonDecoder
from pipelines.decode.schema import EventSchema
from pipelines.errors import ConfigError, ExpressionError
from pipelines.io.avro_rows import missing_writer_fields
from pipelines.io.records import RawBatch, dead_letters
from pipelines.sagas.config_check import check_saga_stage
from pipelines.sagas.definition import load_saga
from pipelines.schemas.reader import reader_schema
from pipelines.stages.keyed_stage import open_keyed_operator
from pipelines.stages.topology import conform, input_of, stage_schema
from pipelines.state.event_sourced import result_schema as event_sourced_results
from pipelines.state.joins import LEFT, RIGHT, SIDE, WINDOW_COLUMNS, JoinColumns, side_column
from pipelines.state.keyed_operator import KeyedOperator
from pipelines.state.process_function import KeyedProcess
from pipelines.transform.operators import Operator, apply_all, apply_all_isolating_rows, build_operators
from pipelines.windows.tumbling import WINDOW_END, WINDOW_START, AggregationPlan

__all__ = [
    "CompiledInput",
    "CompiledPipeline",
    "CompiledStage",
    "Transformed",
    "as_next_stage_input",
    "compile_pipeline",
    "stage_input_schema",
]


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
class CompiledInput:
    """The per-batch work of one input before the keyed stage: decode, validate, then run its operators."""

    name: str
    written_name: str
    schema: EventSchema
    decoder: Decoder
    operators: tuple[Operator, ...]
    output_columns: tuple[str, ...]
    output_schema: pa.Schema

    async def prepare(self, raw: RawBatch) -> None:
        """What decoding ``raw`` needs from elsewhere, fetched (writer schemas from a registry); nothing for most
        decoders."""
        await self.decoder.prepare(raw)

    async def close(self) -> None:
        """Release what :meth:`prepare` opened (a registry's HTTP session)."""
        await self.decoder.close()

    def decode(self, raw: RawBatch) -> DecodedBatch:
        """Decoded, valid events with metadata columns, and dead letters for the rest (after :meth:`prepare`)."""
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


@dataclass(frozen=True)
class CompiledStage:
    """One keyed stage, checked: its view of the pipeline (``PipelineConfig.keyed_stages``), the schema of the rows
    it takes, and the schema of those it emits (None for a process function that declares no ``output_schema``:
    its rows are what user code returns, known only when it runs)."""

    config: PipelineConfig
    input_schema: pa.Schema
    output_schema: pa.Schema | None
    join_columns: JoinColumns | None = None

    def side_of(self, name: str) -> int | None:
        """For a join, the side (:data:`~pipelines.state.joins.LEFT` or ``RIGHT``) of the input or stage
        ``name`` it takes; None for any other stage, whose rows carry no side."""
        join = self.config.keyed
        if not isinstance(join, JoinConfig):
            return None
        return LEFT if name == join.left else RIGHT

    @property
    def carries_trace(self) -> bool:
        """Whether the stage's results keep the ``_traceparent`` of (their first contributing) rows."""
        return "_traceparent" in self.input_schema.names


_NO_STAGES = StageGraph((), ())


@dataclass(frozen=True)
class CompiledPipeline:
    """A pipeline's inputs compiled (:class:`CompiledInput`, in topology order), the schema their rows share
    after their operators (``stage_schema``: what a stateless pipeline's sinks receive, and in a chain the first
    keyed stage), its keyed stages (:class:`CompiledStage`, in order; none for a stateless pipeline) and which
    stage takes what (``graph``)."""

    config: PipelineConfig
    inputs: tuple[CompiledInput, ...]
    stage_schema: pa.Schema
    stages: tuple[CompiledStage, ...] = ()
    graph: StageGraph = _NO_STAGES

    def input_of(self, partition: int) -> CompiledInput:
        """The input that pipeline partition ``partition`` (a raw batch's) belongs to."""
        return self.inputs[input_of(partition)]

    async def prepare(self, raw: RawBatch) -> None:
        """What decoding ``raw`` needs from elsewhere, fetched (see :meth:`CompiledInput.prepare`)."""
        await self.input_of(raw.partition).prepare(raw)

    async def close(self) -> None:
        """Release what the inputs' :meth:`prepare` opened."""
        for compiled_input in self.inputs:
            await compiled_input.close()

    def decode(self, raw: RawBatch) -> DecodedBatch:
        """``raw`` decoded by the input it was read from (after :meth:`prepare`)."""
        return self.input_of(raw.partition).decode(raw)

    def transform(self, events: pa.RecordBatch, input_index: int = 0) -> Transformed:
        """Input ``input_index``'s operators run on its decoded ``events``, the survivors conformed to the stage
        schema (see :meth:`CompiledInput.transform`)."""
        compiled_input = self.inputs[input_index]
        transformed = compiled_input.transform(events)
        if len(self.inputs) == 1:
            return transformed
        rows = transformed.events
        side = (
            self.stages[self.graph.input_stage[input_index]].side_of(compiled_input.written_name)
            if self.stages
            else None
        )
        if side is not None:
            rows = rows.append_column(SIDE, side_column(rows.num_rows, side))
        return replace(transformed, events=conform(rows, self.schema_of_input(input_index)))

    def schema_of_input(self, input_index: int) -> pa.Schema:
        """The schema input ``input_index``'s rows are conformed to: that of the keyed stage it feeds (the inputs
        and stages that stage takes, in one), or ``stage_schema`` for a stateless pipeline."""
        if not self.stages:
            return self.stage_schema
        return self.stages[self.graph.input_stage[input_index]].input_schema

    @property
    def schema(self) -> EventSchema:
        """The event schema of the first input (the one, for a single-input pipeline)."""
        return self.inputs[0].schema

    @property
    def operators(self) -> tuple[Operator, ...]:
        """The operators of the first input (the one, for a single-input pipeline)."""
        return self.inputs[0].operators

    @property
    def output_columns(self) -> tuple[str, ...]:
        """The columns every input's rows have after the operators, conformed (:mod:`pipelines.stages.topology`)."""
        return tuple(self.stage_schema.names)

    @property
    def carries_trace(self) -> bool:
        """Whether results keep the ``_traceparent`` of (their first contributing) events."""
        return "_traceparent" in self.output_columns

    @property
    def result_columns(self) -> tuple[str, ...]:
        """Columns of what reaches the sinks: the last keyed stage's results (window results; input rows for an
        upsert table's changelog and for dedup), or the operators' output for a stateless pipeline.

        Empty for a process function that declares no ``output_schema``: its rows are whatever user code returns,
        known only when it runs, so sink columns are not checked at compile time for it.
        """
        if not self.stages:
            return self.output_columns
        last = self.stages[-1].output_schema
        return () if last is None else tuple(last.names)


def compile_pipeline(config: PipelineConfig) -> CompiledPipeline:
    """Build and check everything the config describes; raise :class:`ConfigError` naming what is wrong."""
    inputs = tuple(_compile_input(config, spec) for spec in config.all_inputs)
    compiled = CompiledPipeline(config, inputs, stage_schema((i.name, i.output_schema) for i in inputs))
    for spec, compiled_input in zip(config.all_inputs, inputs, strict=True):
        _check_input_has_key(config, spec, list(compiled_input.output_columns))
    compiled = replace(compiled, stages=_compile_stages(config, inputs), graph=config.stage_graph)
    if compiled.result_columns or not compiled.stages:
        _check_sinks(config, compiled.result_columns)
    results = _result_schema(compiled)
    if results is not None:
        _check_topic_columns(config, results)
    return compiled


def _result_schema(compiled: CompiledPipeline) -> pa.Schema | None:
    """The schema of the rows that reach the sinks: the last keyed stage's results, else the inputs' rows; None
    for a process function that declares no ``output_schema``, whose rows are known only when it runs."""
    return compiled.stages[-1].output_schema if compiled.stages else compiled.stage_schema


def _compile_stages(config: PipelineConfig, inputs: tuple[CompiledInput, ...]) -> tuple[CompiledStage, ...]:
    """Each keyed stage checked against the rows it takes: the results of the one stage it takes as they are;
    else in one schema (:func:`stage_schema`) those of the inputs it takes (after their operators), then the
    results of the stages it takes (with an event time)."""
    views = config.keyed_stages
    if not views:
        return ()
    graph = config.stage_graph
    names = config.stage_names or ("stage0",)
    taken: list[list[tuple[str, pa.Schema]]] = [[] for _ in views]
    by_name: list[dict[str, pa.Schema]] = [{} for _ in views]  # what each stage takes, by the name it is given
    for compiled_input, stage in zip(inputs, graph.input_stage, strict=True):
        taken[stage].append((f"input {compiled_input.name!r}", compiled_input.output_schema))
        by_name[stage].setdefault(compiled_input.written_name, compiled_input.output_schema)
    compiled: list[CompiledStage] = []
    for index, view in enumerate(views):
        path = f"stages.{index}." if config.stages is not None else ""
        try:
            schema = taken[index][0][1] if graph.takes_one_stage(index) else stage_schema(taken[index], "inputs")
            join = _join_columns(view, by_name[index])
            if join is not None:
                schema = schema.append(pa.field(SIDE, pa.int8()))
            last = graph.next_stage[index] is None
            output = _check_stage(view, schema, "_traceparent" in schema.names, last=last, join=join)
        except ConfigError as error:  # each error type takes one message: keep the type, add the stage
            raise type(error)(f"{path}{error}") from None
        compiled.append(CompiledStage(view, schema, output, join))
        following = graph.next_stage[index]
        if output is not None and following is not None:
            results = stage_input_schema(view, output)
            taken[following].append((f"stage {names[index]!r}", results))
            by_name[following][names[index]] = results
    return tuple(compiled)


def _join_columns(view: PipelineConfig, taken: dict[str, pa.Schema]) -> JoinColumns | None:
    """The columns of a join's results, from the schemas of the two things it takes; None for another stage."""
    join = view.keyed
    if not isinstance(join, JoinConfig):
        return None
    for side, name in (("left", join.left), ("right", join.right)):
        if name in taken and join.key not in taken[name].names:
            raise ConfigError(f"keyed.key: the rows of {name!r} (the {side} side) have no column {join.key!r}, so none "
                              f"would meet anything; derive it or rename a column to it; they have "
                              f"{[n for n in taken[name].names if n != SIDE]}")  # fmt: skip
        if name not in taken:  # PipelineConfig checks the names; a stage without results is a process function's
            raise ConfigError(f"keyed.{side}: {name!r} gives no rows whose columns are known before it runs (a process "
                              "function's that declares no output_schema); a join takes inputs and stages of known "
                              "columns")  # fmt: skip
        if SIDE in taken[name].names:
            raise ConfigError(f"keyed.{side}: the rows of {name!r} have a column {SIDE!r}, which a join uses to tell "
                              "its sides apart; rename it (op: select with rename)")  # fmt: skip
    columns = JoinColumns.of(taken[join.left], taken[join.right], windowed=join.mode == "window")
    taken_columns = (*columns.left, *columns.right)
    clash = [name for name in WINDOW_COLUMNS if columns.windowed and name in taken_columns]
    if clash:
        raise ConfigError(f"keyed: a window join adds {list(WINDOW_COLUMNS)}, and its sides already have {clash}; "
                          "rename them (op: select with rename)")  # fmt: skip
    return columns


def _check_stage(
    view: PipelineConfig, schema: pa.Schema, carry_trace: bool, last: bool, join: JoinColumns | None
) -> pa.Schema | None:
    """Check one stage's columns and types on an empty batch of ``schema``; return the schema of its results."""
    columns = list(schema.names)
    _check_aggregate(view, columns)
    _check_keyed(view, columns)
    output = _dry_run_stage(view, schema, carry_trace, join)
    if last:
        return output
    if output is None:
        raise ConfigError(
            "keyed: a process function's rows are known only when it runs, so no stage can follow it here; make "
            "it the last stage, or declare output_schema on the function (the pyarrow.Schema of the rows it emits)"
        )
    if isinstance(view.keyed, JoinConfig) and view.keyed.mode != "temporal":
        raise ConfigError(
            f"keyed: a join of mode {view.keyed.mode} emits a left row once the watermark is past its span, so its "
            "results (at the left row's time) would be late for the next stage; keep it the last stage"
        )
    if view.aggregate is not None and view.aggregate.emits_updates:
        raise ConfigError(
            "aggregate: allowed_lateness_ms or early_update_ms emits a window more than once, and the next stage "
            "would take every emission; keep them for the last stage"
        )
    return output


def stage_input_schema(stage: PipelineConfig, results: pa.Schema) -> pa.Schema:
    """What the stage after ``stage`` takes: its results, with an event time (``_timestamp``) when they have
    none; a window result's is the last millisecond of its window (see :func:`as_next_stage_input`)."""
    if "_timestamp" in results.names or stage.aggregate is None:
        return results
    return results.append(pa.field("_timestamp", pa.int64()))


def as_next_stage_input(stage: PipelineConfig, rows: pa.Table) -> pa.Table:
    """``stage``'s results as the next stage takes them: window results get ``_timestamp`` = window end - 1 (the
    event time of a window's result, as in Flink), so that the next stage's windows place them and its watermark
    (the forwarded one) judges them as it judges events."""
    if "_timestamp" in rows.column_names or stage.aggregate is None:
        return rows
    return rows.append_column("_timestamp", pc.subtract(rows.column(WINDOW_END), 1))


def _compile_input(config: PipelineConfig, spec: NamedInput) -> CompiledInput:
    """One input's decoder and operators, checked: its dead-letter rules, then its checks and operators run on
    an empty batch of its decoded schema, so that a type error (``amount > 'abc'``) fails here, naming the
    place, instead of in an actor at run time (where a check or an operator that cannot be computed for some
    rows' values dead-letters those rows instead)."""
    _check_dead_letter(config, spec)
    try:
        schema = EventSchema(spec.schema)
        decoder = _decoder(schema)
    except ConfigError as error:  # each error type takes one message: keep the type, add the input
        if not spec.path:
            raise
        raise type(error)(f"{spec.path}schema: {error}") from None
    try:
        operators, columns = build_operators(list(spec.operators), schema.batch_schema.names)
    except ConfigError as error:
        if not spec.path:
            raise
        raise type(error)(f"{spec.path}{error}") from None
    empty = pa.RecordBatch.from_pylist([], schema=schema.batch_schema)
    try:
        schema.validate(empty)
    except (ExpressionError, pa.ArrowException) as error:
        raise ConfigError(f"{spec.path}schema.checks: {error}") from None
    try:
        output = apply_all(operators, empty)
    except (ExpressionError, pa.ArrowException) as error:
        raise ConfigError(f"{spec.path}operators: {error}") from None
    return CompiledInput(spec.name, spec.written_name, schema, decoder, tuple(operators), tuple(columns), output.schema)


def _dry_run_stage(
    view: PipelineConfig, schema: pa.Schema, carry_trace: bool, join: JoinColumns | None
) -> pa.Schema | None:
    """Run the stage on an empty batch of ``schema``: a type error (``sum`` of a string column, a delete column
    that is no boolean) fails here, naming the place. Return the schema of its results (a process function's
    ``output_schema``; None when it declares none: its rows are known only when it runs)."""
    events = pa.RecordBatch.from_pylist([], schema=schema)
    if view.keyed is not None:
        operator = _dry_run_keyed(view, events, carry_trace, join)
        if join is not None:
            return join.schema(schema)
        if isinstance(view.keyed, EventSourcedConfig):
            return event_sourced_results(schema, view.keyed.key)
        return operator.output_schema if isinstance(operator, KeyedProcess) else schema
    aggregate = view.aggregate
    assert aggregate is not None  # a stage is aggregate or keyed
    plan = AggregationPlan(aggregate, carry_trace=carry_trace)
    rows = pa.table(
        {
            aggregate.key: events.column(aggregate.key),
            "_window_start": pa.array([], pa.int64()),
            **{name: events.column(name) for name in plan.source_columns},
        }
    )
    try:
        merged = plan.merge(plan.partial_aggregate(rows))
    except pa.ArrowException as error:
        raise ConfigError(f"aggregate.aggregations: {error} (check each aggregation's column type)") from None
    is_final = False if aggregate.emits_updates else None
    return plan.finalise(merged, pa.array([], pa.int64()), is_final).schema


def _dry_run_keyed(
    view: PipelineConfig, events: pa.RecordBatch, carry_trace: bool, join: JoinColumns | None
) -> KeyedOperator:
    """Build the keyed operator (a process function is imported here: a wrong path, or an ``output_schema`` that
    is no schema, fails now), feed it the empty batch, snapshot included, and return it."""
    keyed = view.keyed
    if isinstance(keyed, UpsertConfig) and keyed.delete_column is not None:
        kind = events.schema.field(keyed.delete_column).type
        if kind != pa.bool_():
            raise ConfigError(
                f"keyed.delete_column: column {keyed.delete_column!r} is {kind}, not bool (true deletes the key); "
                'derive a boolean column, e.g. op: derive, expr: event_type == "ItemDeleted"'
            )
    position = getattr(getattr(keyed, "query", None), "position", None)
    if position is not None and not pa.types.is_integer(kind := events.schema.field(position.version_column).type):
        raise ConfigError(
            f"keyed.query.position.version_column: column {position.version_column!r} is {kind}, not an integer "
            "(an event's version); declare it int64 in the schema"
        )
    if isinstance(keyed, EventSourcedConfig) and keyed.expected_version_column is not None:
        kind = events.schema.field(keyed.expected_version_column).type
        if not (pa.types.is_integer(kind) or pa.types.is_null(kind)):
            raise ConfigError(
                f"keyed.expected_version_column: column {keyed.expected_version_column!r} is {kind}, not an "
                "integer; declare it int64 in the schema, or set expected_version_column: null"
            )
    try:
        operator = open_keyed_operator(view, carry_trace=carry_trace, join_columns=join)
    except ConfigError as error:
        field = "keyed.function"
        if isinstance(keyed, EventSourcedConfig | SagaConfig):
            field = "keyed.aggregate" if isinstance(keyed, EventSourcedConfig) else "keyed.saga"
        raise ConfigError(f"{field}: {error}") from None
    if isinstance(keyed, SagaConfig):
        check_saga_stage(view, keyed, load_saga(keyed.saga, keyed.options), events.schema.names)
    try:
        operator.add(events)
        operator.snapshot()
    except pa.ArrowException as error:
        raise ConfigError(f"keyed: {error} (check the types of the key and id columns)") from None
    return operator


def _decoder(schema: EventSchema) -> Decoder:
    config = schema.config
    if config.registry is not None and config.format == "json":
        return RegistryJsonDecoder(schema, config.registry)
    if config.registry is not None:
        return RegistryAvroDecoder(schema, config.registry, reader_schema(config))
    if config.format == "avro":
        assert isinstance(config.avro_schema, dict)  # the config validator guarantees it
        return AvroDecoder(schema, config.avro_schema)
    if config.format == "raw":
        return RawBytesDecoder(schema)
    return JsonDecoder(schema)


def _check_dead_letter(config: PipelineConfig, spec: NamedInput) -> None:
    """``payload: masked`` masks JSON fields named by mask operators: every input needs both. A masked Kafka key
    (``_key``) is not kept raw in dead letters either."""
    key_masks = [i for i, op in enumerate(spec.operators) if isinstance(op, MaskOp) and op.column == "_key"]
    if key_masks and config.dead_letter.key == "raw":
        raise ConfigError(
            f"dead_letter.key: raw keeps the Kafka key that {spec.path}operators.{key_masks[0]} masks; set "
            "dead_letter.key to encrypted or omitted"
        )
    if config.dead_letter.payload != "masked":
        return
    if spec.schema.format != "json":
        raise ConfigError(
            f"dead_letter.payload: masked works on JSON payloads, and {spec.path}schema.format is "
            f"{spec.schema.format}; use payload: omitted to keep personal data out of dead letters"
        )
    if not any(isinstance(operator, MaskOp) for operator in spec.operators):
        raise ConfigError(
            f"dead_letter.payload: masked, but no mask operator {f'of input {spec.name} ' if spec.path else ''}"
            "names a field to mask; add mask operators, or use payload: raw (keep the bytes) or omitted (keep none)"
        )


def _check_input_has_key(config: PipelineConfig, spec: NamedInput, columns: list[str]) -> None:
    """With several inputs, each must give the keyed stage its key and event time: rows are routed by the key,
    and a row without them (nulls, had the input no such column) could be counted nowhere."""
    if config.keyed_stage is None or not spec.path:
        return
    stage = config.keyed_stages[config.stage_graph.input_stage[spec.index]].keyed_stage
    assert stage is not None  # a view is of a keyed stage
    if config.stages is not None:
        stage = replace(stage, key_field=f"stages.{config.stage_graph.input_stage[spec.index]}.{stage.key_field}")
    if stage.key not in columns:
        raise ConfigError(
            f"{stage.key_field}: input {spec.name!r} has no column {stage.key!r} after its operators; every input "
            f"routes its rows by it: derive it, or rename a column to it (op: select with rename); {spec.path}"
            f"operators give: {columns}"
        )
    if "_timestamp" not in columns:
        raise ConfigError(
            f"{spec.path}operators: the select drops _timestamp, which the keyed stage needs; keep it in select"
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
    if isinstance(keyed, SagaConfig | SagaMonitorConfig):
        named.append(("keyed.type_column", keyed.type_column))
    if isinstance(keyed, EventSourcedConfig):
        named.append(("keyed.command_id_column", keyed.command_id_column))
        if keyed.expected_version_column is not None:
            named.append(("keyed.expected_version_column", keyed.expected_version_column))
    position = getattr(getattr(keyed, "query", None), "position", None)
    if position is not None:  # a query: of a stage reading events (read-your-writes needs their envelope)
        named.append(("keyed.query.position.aggregate_column", position.aggregate_column))
        named.append(("keyed.query.position.version_column", position.version_column))
    for field, column in named:
        if column not in columns:
            raise ConfigError(f"{field}: unknown column {column!r}; available: {columns}")
    needs_time = UpsertConfig | DedupConfig | JoinConfig | EventSourcedConfig | SagaMonitorConfig
    if isinstance(keyed, needs_time) and "_timestamp" not in columns:
        raise ConfigError(
            f"keyed: the operators dropped _timestamp, which {keyed.type} needs (event time orders versions and "
            "expires ids); keep it in select"
        )


def _check_topic_columns(config: PipelineConfig, stage_schema: pa.Schema) -> None:
    """A column that names topics holds text (or numbers, named as text), not a nested value."""
    for position, sink in enumerate(config.sinks):
        column = sink.topic_column if isinstance(sink, KafkaSinkConfig) else None
        index = -1 if column is None else stage_schema.get_field_index(column)
        if index >= 0 and pa.types.is_nested(kind := stage_schema.field(index).type):
            raise ConfigError(
                f"sinks.{position}.topic_column: column {column!r} is {kind}, which names no topic; derive a text "
                "column (e.g. op: derive with concat)"
            )


def _check_avro_sink(position: int, sink: KafkaSinkConfig, available: list[str]) -> None:
    """An Avro sink's writer schema is a valid record schema whose fields without a default are all results
    (the results may be known only as they run, for a process function: ``available`` empty, not checked)."""
    if sink.avro_schema is None:
        return
    try:
        fastavro.parse_schema(sink.avro_schema)
    except (ValueError, TypeError, KeyError, fastavro.schema.SchemaParseException) as error:
        raise ConfigError(f"sinks.{position}.avro_schema is not a valid Avro schema: {error}") from None
    if sink.avro_schema.get("type") != "record":
        raise ConfigError(f"sinks.{position}.avro_schema: a sink writes records: give a record schema")
    missing = missing_writer_fields(sink.avro_schema, available) if available else []
    if missing:
        raise ConfigError(
            f"sinks.{position}.avro_schema: fields {missing} have no default and are not results; available: "
            f"{available} (give them a default, or derive the columns)"
        )


def _check_sinks(config: PipelineConfig, result_columns: tuple[str, ...]) -> None:
    available = list(result_columns)
    for position, sink in enumerate(config.sinks):
        if isinstance(sink, ConsoleSinkConfig) and sink.sort_by is not None and sink.sort_by not in result_columns:
            raise ConfigError(f"sinks.{position}.sort_by: unknown column {sink.sort_by!r}; available: {available}")
        if isinstance(sink, ParquetSinkConfig) and sink.bucket_by is not None and sink.bucket_by not in result_columns:
            raise ConfigError(f"sinks.{position}.bucket_by: unknown column {sink.bucket_by!r}; available: {available}")
        shown = sink.columns or [] if isinstance(sink, ConsoleSinkConfig) else []
        unknown = [name for name in shown if name not in result_columns]
        if unknown:
            raise ConfigError(f"sinks.{position}.columns: unknown column(s) {unknown}; available: {available}")
        if not isinstance(sink, KafkaSinkConfig):
            continue
        stores = [t for v in config.keyed_stages if isinstance(v.keyed, EventSourcedConfig)
                  for t in (v.keyed.events_topic, v.keyed.replies_topic)]  # fmt: skip
        if compacted := sorted(set(sink.compacted) & set(stores)):
            raise ConfigError(
                f"sinks.{position}.compacted: {compacted} hold events or replies keyed by aggregate id; compacting "
                "would keep one record per aggregate. Compact the snapshots topic only"
            )
        if sink.topic_column is not None and sink.topic_column not in result_columns:
            raise ConfigError(
                f"sinks.{position}.topic_column: unknown column {sink.topic_column!r}; available: {available}"
            )
        if sink.key_column is not None and sink.key_column not in result_columns:
            raise ConfigError(
                f"sinks.{position}.key_column: unknown column {sink.key_column!r}; available: {available}"
            )
        if sink.partition_by == "source_partition" and "_partition" not in result_columns:
            raise ConfigError(
                f"sinks.{position}.partition_by: source_partition needs a _partition column in the results "
                f"(aggregates have none; use partition_by: key with a key_column); available: {available}"
            )
        _check_avro_sink(position, sink, available)
