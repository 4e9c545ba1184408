"""The delivery checker's pure core (ARCHITECTURE.md section 4, "Verification is Jepsen-style"): no Ray, no Kafka.

Inputs are tables; the readers in ``cluster.commands.verify`` build them. The checker answers: did every input event
reach each output exactly once, in order per input partition, with nothing read from an aborted transaction,
every rejected record in the dead-letter output, and every window equal to a recomputation from the input?

Expected outputs come from the pipeline's own compiled decode + transform (:func:`expected_run`): the checker
verifies delivery and state, not decoding, so reusing the decoder is legitimate. Windows are recomputed
independently of ``pipelines.windows.tumbling`` with one ``pyarrow`` group-by over all valid transformed input.

Tables the checker reads (column names are the constants below):

- an observed output (:class:`ObservedOutput`): the rows as written, plus ``__stream`` (string: one ordered
  stream, e.g. one JSONL file, one writer's Parquet files, one Kafka partition), ``__position`` (int64: order
  inside the stream, e.g. line number or Kafka offset) and, for Kafka outputs, ``__slot`` (string) and
  ``__epoch`` (int64) from the ``eventray.slot``/``eventray.epoch`` headers (null when absent);
- dead letters: :data:`~pipelines.io.records.DEAD_LETTER_SCHEMA` columns ``error_type``, ``partition``, ``offset``;
- commit markers: ``slot`` (string) and ``epoch`` (int64), from ``<pipeline>.eventray-commits`` (read_committed).

Definitions (each count comes with up to ``max_examples`` example ids):

- **lost**: an expected event id observed fewer times than it is expected (normally: never observed).
- **duplicated**: an expected event id observed more times than expected (counted once per id).
- **unexpected**: an observed id that is not expected at all (e.g. a filtered event; null ids included).
- **out_of_order**: within one stream, keep only the first occurrence of each id; among those from one input
  partition, a row whose input position is lower than that of a row before it. Replays after a recovery
  (``0..100, 50..150``) are duplicates, not disorder.
- **aborted_read**: an observed row carrying ``(slot, epoch)`` with no commit marker for that pair. Rows
  without the headers are not judged. ``uncommitted_records`` (read_uncommitted minus read_committed) is
  reported for information only.
- dead letters: **missing** (a record the decoder rejects, or an aggregate input without event time, absent
  from the dead-letter output), **unexpected** (a dead letter that is none of these nor a late valid event),
  **duplicated** (one input record dead-lettered more than once), **unattributed_late** (a late dead letter
  without ``_partition``/``_offset``: the operators dropped them, so its window cannot be known),
  **wrong_type** (a dead letter of a record the decoder rejects, with another error type than the decoder's:
  e.g. ``invalid`` where the record is over a limit).
- joins (:mod:`pipelines.verify.join_check`): results are counted by the left row's id as events are (lost,
  duplicated, unexpected; an interval join expects an id once per pair), over the join recomputed without the
  rows dead-lettered as late; **wrong**: an id whose results carry other right-side values. Order is not judged.
- windows: ``E`` = windows over valid transformed events that have an event time, minus the events that are in
  the dead-letter output as ``late`` (matched by ``(partition, offset)``); ``E+`` = the same with the late
  events counted. **missing**: in ``E``, never emitted. **extra**: emitted, not in ``E``. **duplicated**:
  emitted more than once. **wrong**: in ``E`` and some emission's values differ from ``E`` (floats compared
  with a relative and absolute tolerance). **unmatched**: emitted, but no emission equals ``E`` nor ``E+``.

Verdicts (:meth:`DeliveryReport.ok_for`):

- ``exactly_once``: zero of every fault above.
- ``at_least_once``: zero lost, unexpected, out-of-order, missing/unexpected/unattributed/wrong-type dead letters,
  missing and unmatched windows. Duplicates (events, dead letters, windows) are allowed and reported. A window
  emitted more than once may have a partial or stale emission (the first attempt closed before a recovery
  replayed its events); it is accepted when one of its emissions equals ``E``, or ``E+`` (an event
  dead-lettered as late in one attempt may have been counted in another). Aborted reads are reported but only
  judged for exactly-once, whose sinks are the only ones writing ``(slot, epoch)`` headers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config.pipeline import AggregateConfig, PipelineConfig, TumblingWindowConfig
from pipelines.config.state import DedupConfig, JoinConfig
from pipelines.errors import ConfigError
from pipelines.io.records import RawBatch
from pipelines.stages.plan import CompiledPipeline
from pipelines.stages.topology import PARTITION_STRIDE, conform, input_of
from pipelines.state.joins import SIDE, JoinColumns, side_column
from pipelines.verify.join_check import check_join_verifiable, recompute_join, wrong_joins
from pipelines.windows.tumbling import WINDOW_END, WINDOW_START

__all__ = [
    "COMMITS_SCHEMA",
    "EPOCH",
    "INPUT_PARTITION",
    "INPUT_SEQUENCE",
    "POSITION",
    "SLOT",
    "STREAM",
    "DeadLetterReport",
    "Delivery",
    "DeliveryReport",
    "ExpectedRun",
    "Finding",
    "ObservedOutput",
    "OutputReport",
    "Tolerance",
    "WindowReport",
    "check_delivery",
    "check_verifiable",
    "default_id_column",
    "expected_run",
    "recompute_windows",
    "through_earlier_stages",
]

Delivery = Literal["at_least_once", "exactly_once"]

STREAM = "__stream"
POSITION = "__position"
SLOT = "__slot"
EPOCH = "__epoch"
INPUT_PARTITION = "__input_partition"
INPUT_SEQUENCE = "__input_sequence"
COMMITS_SCHEMA = pa.schema([pa.field("slot", pa.string()), pa.field("epoch", pa.int64())])
_NULL_ID = "<null>"
_LATE = "late"


@dataclass(frozen=True)
class Finding:
    """How many of one kind of fault, and up to N example ids (sorted, for stable reports)."""

    count: int = 0
    examples: tuple[str, ...] = ()

    @classmethod
    def of(cls, ids: Iterable[str], max_examples: int) -> Finding:
        unique = sorted(set(ids))
        return cls(len(unique), tuple(unique[:max_examples]))


@dataclass(frozen=True)
class Tolerance:
    """How close two floats must be to count as equal (``math.isclose``); integers and text compare exactly."""

    relative: float = 1e-9
    absolute: float = 1e-6


@dataclass(frozen=True)
class ExpectedRun:
    """What a correct run produces from the input.

    ``events``: the transformed valid events (the rows a stateless pipeline's sinks get, the rows an aggregate
    folds), plus ``__input_partition`` and ``__input_sequence`` (rank in the partition's input order).
    ``rejected``: ``partition``, ``offset``, ``error_type`` of the input records the decoder dead-letters.
    ``input_records``: how many input records were read.
    """

    events: pa.Table
    rejected: pa.Table
    input_records: int


@dataclass(frozen=True)
class ObservedOutput:
    """One sink's rows as a reader found them (columns: see the module docstring)."""

    name: str
    rows: pa.Table
    uncommitted_records: int | None = None


@dataclass(frozen=True)
class WindowReport:
    expected: int
    observed: int
    emissions: int
    missing: Finding = field(default_factory=Finding)
    extra: Finding = field(default_factory=Finding)
    duplicated: Finding = field(default_factory=Finding)
    wrong: Finding = field(default_factory=Finding)
    unmatched: Finding = field(default_factory=Finding)


@dataclass(frozen=True)
class OutputReport:
    """One sink. Event findings are empty for aggregate pipelines, whose rows are windows (``windows``)."""

    name: str
    rows: int
    lost: Finding = field(default_factory=Finding)
    duplicated: Finding = field(default_factory=Finding)
    unexpected: Finding = field(default_factory=Finding)
    out_of_order: Finding = field(default_factory=Finding)
    aborted_read: Finding = field(default_factory=Finding)
    uncommitted_records: int | None = None
    windows: WindowReport | None = None
    wrong: Finding = field(default_factory=Finding)  # a join's results: other right-side values than recomputed


@dataclass(frozen=True)
class DeadLetterReport:
    dead_lettered: Finding = field(default_factory=Finding)
    late: Finding = field(default_factory=Finding)
    missing: Finding = field(default_factory=Finding)
    unexpected: Finding = field(default_factory=Finding)
    duplicated: Finding = field(default_factory=Finding)
    unattributed_late: Finding = field(default_factory=Finding)
    wrong_type: Finding = field(default_factory=Finding)


@dataclass(frozen=True)
class DeliveryReport:
    """The checker's verdict material: per-output findings and the dead-letter findings."""

    pipeline: str
    input_records: int
    expected_events: int
    outputs: tuple[OutputReport, ...]
    dead_letters: DeadLetterReport

    def failures(self, delivery: Delivery) -> list[str]:
        """One line per fault that ``delivery`` does not allow (empty: the run is correct)."""
        problems: list[str] = []
        for output in self.outputs:
            problems += _output_failures(output, delivery)
        dead = self.dead_letters
        judged = [
            ("missing", dead.missing),
            ("unexpected", dead.unexpected),
            ("unattributed late", dead.unattributed_late),
            ("wrong type", dead.wrong_type),
        ]
        if delivery == "exactly_once":
            judged.append(("duplicated", dead.duplicated))
        problems += [_line("dead letters", kind, finding) for kind, finding in judged if finding.count]
        return problems

    def ok_for(self, delivery: Delivery) -> bool:
        """Whether the run meets ``delivery`` (see the module docstring for exactly what each allows)."""
        return not self.failures(delivery)


def _output_failures(output: OutputReport, delivery: Delivery) -> list[str]:
    judged = [
        ("lost", output.lost),
        ("unexpected", output.unexpected),
        ("out of order", output.out_of_order),
        ("wrongly joined", output.wrong),
    ]
    if delivery == "exactly_once":
        judged += [("duplicated", output.duplicated), ("aborted read", output.aborted_read)]
    windows = output.windows
    if windows is not None:
        judged += [("missing windows", windows.missing), ("unmatched windows", windows.unmatched)]
        if delivery == "exactly_once":
            judged += [
                ("extra windows", windows.extra),
                ("duplicated windows", windows.duplicated),
                ("wrong windows", windows.wrong),
            ]
    return [_line(output.name, kind, finding) for kind, finding in judged if finding.count]


def _line(where: str, kind: str, finding: Finding) -> str:
    return f"{where}: {finding.count} {kind} (e.g. {', '.join(finding.examples)})"


def default_id_column(compiled: CompiledPipeline) -> str:
    """``_event_id`` when the results keep it, else the schema's ``event_id_field`` when they keep that;
    raise ConfigError otherwise (the outputs cannot be told apart)."""
    columns = compiled.result_columns
    id_fields = {spec.schema.event_id_field for spec in compiled.config.all_inputs}
    if "_event_id" in columns and None not in id_fields:
        return "_event_id"
    id_field = id_fields.pop() if len(id_fields) == 1 else None  # every input names its id alike
    if id_field is not None and id_field in columns:
        return id_field
    raise ConfigError(
        f"verify: the outputs carry no event id: set schema.event_id_field and keep _event_id (or that field) in the "
        f"operators' output; output columns: {list(columns)}"
    )


def expected_run(compiled: CompiledPipeline, raws: Iterable[RawBatch]) -> ExpectedRun:
    """Run the pipeline's own decode and transform over ``raws`` (each partition's batches in offset order)."""
    tables: list[pa.Table] = []
    rejected: list[pa.RecordBatch] = []
    sequence: dict[int, int] = {}
    records = 0
    for raw in raws:
        records += len(raw)
        decoded = compiled.decode(raw)
        transformed = compiled.inputs[input_of(raw.partition)].transform(decoded.events)
        rejected += [*decoded.dead_letters, *transformed.failures_as_dead_letters(raw)]
        # every input's rows in one table: the inputs' columns, in the types they agree on (through_earlier_stages
        # gives each stage the rows it takes in its own schema)
        events = conform(transformed.events, compiled.stage_schema) if len(compiled.inputs) > 1 else transformed.events
        start = sequence.get(raw.partition, 0)
        sequence[raw.partition] = start + events.num_rows
        tables.append(_with_input_order(pa.Table.from_batches([events]), raw.partition, start))
    if not tables:
        tables.append(_with_input_order(compiled.stage_schema.empty_table(), 0, 0))
    rejected_rows = pa.Table.from_batches(rejected, schema=rejected[0].schema) if rejected else None
    return ExpectedRun(
        events=pa.concat_tables(tables),
        rejected=_rejected_keys(rejected_rows),
        input_records=records,
    )


def _with_input_order(table: pa.Table, partition: int, start: int) -> pa.Table:
    rows = table.num_rows
    table = table.append_column(INPUT_PARTITION, pa.array(np.full(rows, partition, dtype=np.int32)))
    return table.append_column(INPUT_SEQUENCE, pa.array(np.arange(start, start + rows, dtype=np.int64)))


def _rejected_keys(rows: pa.Table | None) -> pa.Table:
    schema = pa.schema([("partition", pa.int32()), ("offset", pa.int64()), ("error_type", pa.string())])
    if rows is None:
        return schema.empty_table()
    return rows.select(["partition", "offset", "error_type"]).cast(schema)


def check_verifiable(compiled: CompiledPipeline) -> None:
    """Raise :class:`ConfigError` for a pipeline whose output :func:`check_delivery` cannot recompute."""
    views = compiled.config.keyed_stages
    if len(views) > 1:
        kinds = [_kind(view) for view in views]
        if kinds[-1] not in ("windows", "join") or any(kind not in ("windows", "dedup", "join") for kind in kinds):
            raise ConfigError(
                f"verify recomputes a chain of stages of windows, dedup and joins that ends in windows or a join, and "
                f"this one is {' -> '.join(kinds)} (stages)"
            )
    for view in views:
        if isinstance(view.keyed, JoinConfig):
            check_join_verifiable(view.keyed)
    keyed = compiled.config.last_stage.keyed
    if keyed is not None and keyed.type == "event_sourced":
        raise ConfigError(
            "verify recomputes windows, dedup and joins; an event_sourced stage's events and replies are checked "
            "against its commands decided again in order by `eventray es check CONFIG`"
        )
    if keyed is not None and keyed.type not in ("dedup", "join"):
        raise ConfigError(
            f"verify checks stateless, windowed and dedup pipelines; a keyed {keyed.type} pipeline writes a "
            "changelog it does not recompute yet (its delivery is covered by the windowed checks of the same "
            "checkpoint and transaction machinery)"
        )


def _kind(view: PipelineConfig) -> str:
    stage = view.keyed_stage
    assert stage is not None  # a view is of a keyed stage
    return stage.kind


def through_earlier_stages(
    events: pa.Table, compiled: CompiledPipeline, on_time: Callable[[pa.Table], pa.Table] = lambda rows: rows
) -> pa.Table:
    """What the last keyed stage takes, recomputed: each input's ``events`` to the stage that takes them, and
    each stage's results, in stage order, to the stage that takes them (window results with the last millisecond
    of their window as event time; dedup: the first row of each id, in the order taken: inputs first, then the
    stages). ``on_time`` takes out, before each windows stage, the rows that stage dead-lettered as late."""
    graph = compiled.graph
    views = compiled.config.keyed_stages
    names = compiled.config.stage_names
    taken: list[list[pa.Table]] = [[] for _ in views]
    inputs = pc.divide(events.column(INPUT_PARTITION), PARTITION_STRIDE) if len(graph.input_stage) > 1 else None
    for index, stage in enumerate(graph.input_stage):
        if inputs is None:  # one input: its rows as they are (as the sources send them)
            taken[stage].append(events)
            continue
        rows = events.filter(pc.equal(inputs, index))
        side = compiled.stages[stage].side_of(compiled.inputs[index].written_name)
        taken[stage].append(_conformed(rows, compiled.stages[stage].input_schema, side))
    for index, view in enumerate(views[:-1]):
        rows = pa.concat_tables(taken[index])
        if view.aggregate is not None:
            results = recompute_windows(on_time(rows), view.aggregate)
            rows = results.append_column("_timestamp", pc.subtract(results.column(WINDOW_END), 1))
        elif isinstance(view.keyed, JoinConfig):
            columns = compiled.stages[index].join_columns
            assert columns is not None  # a compiled join has its columns
            rows = recompute_join(on_time(rows), view.keyed, columns)
        else:
            assert isinstance(view.keyed, DedupConfig)  # check_verifiable allows windows, joins and dedup only
            rows = _first_of_each_id(rows, view.keyed)
        following = graph.next_stage[index]
        assert following is not None  # only the last stage feeds none
        side = compiled.stages[following].side_of(names[index])
        one_stage = graph.takes_one_stage(following)
        taken[following].append(rows if one_stage else _conformed(rows, compiled.stages[following].input_schema, side))
    return pa.concat_tables(taken[-1])


def _conformed(rows: pa.Table, schema: pa.Schema, side: int | None = None) -> pa.Table:
    """``rows`` in ``schema``, as a stage takes them: its columns where it has them, nulls elsewhere; a join's
    on ``side``."""
    if side is not None:
        rows = rows.append_column(SIDE, side_column(rows.num_rows, side))
    columns = [
        rows.column(field.name) if field.name in rows.column_names
        else pa.chunked_array([pa.nulls(rows.num_rows, field.type)])
        for field in schema
    ]  # fmt: skip
    return pa.Table.from_arrays(columns, schema=schema)


def _first_of_each_id(events: pa.Table, dedup: DedupConfig) -> pa.Table:
    """The first row of each id, in input order (a row without an id is its own). Raises :class:`ConfigError`
    when an id repeats more than ``ttl_ms`` of event time after its first sighting: whether dedup still
    remembered it then depends on the watermark at that moment, which a recomputation cannot know."""
    order = pa.array(np.arange(events.num_rows), pa.int64())
    ids = events.column(dedup.id_column)
    numbered = pa.table({"id": ids, "row": order, "time": events.column("_timestamp")})
    spans = (
        numbered.filter(pc.is_valid(ids))
        .group_by("id", use_threads=False)
        .aggregate([("row", "min"), ("time", "min"), ("time", "max")])
    )
    spread = pc.subtract(spans.column("time_max"), spans.column("time_min"))
    beyond = spans.filter(pc.greater(spread, dedup.ttl_ms))
    if beyond.num_rows:
        example = beyond.slice(0, 1).to_pylist()[0]
        raise ConfigError(
            f"verify: {beyond.num_rows} event id(s) repeat more than keyed.ttl_ms ({dedup.ttl_ms} ms) of event "
            f"time apart (e.g. {example['id']!r}); whether dedup still remembered them depends on the watermark "
            "then, so the chain's windows cannot be recomputed exactly"
        )
    keep = pc.or_(pc.is_in(order, spans.column("row_min")), pc.is_null(ids))
    return events.filter(keep)


def check_delivery(
    compiled: CompiledPipeline,
    expected: ExpectedRun,
    outputs: Sequence[ObservedOutput],
    dead_letters: pa.Table,
    commits: pa.Table | None = None,
    *,
    id_column: str | None = None,
    max_examples: int = 10,
    tolerance: Tolerance = Tolerance(),
) -> DeliveryReport:
    """Compare what was observed with what ``expected`` says a correct run writes (definitions: module doc).

    ``id_column`` names the event id in stateless outputs (default: :func:`default_id_column`); it is unused
    for aggregate pipelines. ``commits`` (``slot``, ``epoch``) is required to judge rows carrying epoch
    headers; None means no marker was read, so every such row counts as an aborted read.
    """
    check_verifiable(compiled)
    aggregate = compiled.config.last_stage.aggregate
    join = compiled.config.last_stage.keyed
    committed = commits if commits is not None else COMMITS_SCHEMA.empty_table()
    keyed_input = aggregate is not None or len(compiled.stages) > 1 or isinstance(join, JoinConfig)
    late_keys, dead_report = _check_dead_letters(expected, dead_letters, keyed_input, max_examples)
    reports: list[OutputReport] = []
    if isinstance(join, JoinConfig):
        column = id_column or default_id_column(compiled)
        joined = _expected_joins(compiled, join, expected.events, late_keys, column)
        reports = [_check_joined(joined, output, column, committed, max_examples) for output in outputs]
    elif aggregate is None:
        column = id_column or default_id_column(compiled)
        reports = [_check_events(expected.events, output, column, committed, max_examples) for output in outputs]
    else:
        windows = _ExpectedWindows.of(
            expected.events, aggregate, late_keys, partial(through_earlier_stages, compiled=compiled)
        )
        reports = [_check_windows(windows, output, committed, max_examples, tolerance) for output in outputs]
    return DeliveryReport(
        pipeline=compiled.config.name,
        input_records=expected.input_records,
        expected_events=expected.events.num_rows,
        outputs=tuple(reports),
        dead_letters=dead_report,
    )


# --- dead letters ---------------------------------------------------------------------------------------------


def _check_dead_letters(
    expected: ExpectedRun, dead_letters: pa.Table, aggregates: bool, max_examples: int
) -> tuple[set[tuple[int, int]], DeadLetterReport]:
    """The ``(partition, offset)`` of late dead letters, and the dead-letter findings."""
    observed = [
        (str(row["error_type"]), int(row["partition"]), int(row["offset"]))
        for row in dead_letters.select(["error_type", "partition", "offset"]).to_pylist()
    ]
    expected_types = {
        (int(row["partition"]), int(row["offset"])): str(row["error_type"])
        for row in expected.rejected.select(["partition", "offset", "error_type"]).to_pylist()
    }
    rejected = set(expected_types)
    if aggregates:
        rejected |= _without_event_time(expected.events)
    valid = _input_keys(expected.events)
    late = {(p, o) for kind, p, o in observed if kind == _LATE and p >= 0 and o >= 0}
    unattributed = [
        f"late#{index}" for index, (kind, p, o) in enumerate(observed) if kind == _LATE and (p, o) not in late
    ]
    others = [(p, o) for kind, p, o in observed if kind != _LATE]
    seen: dict[tuple[int, int], int] = {}
    for kind, p, o in observed:
        if kind != _LATE or (p, o) in late:
            seen[(p, o)] = seen.get((p, o), 0) + 1
    unexpected = {key for key in others if key not in rejected} | {key for key in late if key not in valid}
    wrong_type = {(p, o) for kind, p, o in observed if kind != _LATE and expected_types.get((p, o), kind) != kind}
    return late, DeadLetterReport(
        dead_lettered=Finding.of(map(_label, seen), max_examples),
        late=Finding.of(map(_label, late), max_examples),
        missing=Finding.of(map(_label, rejected - set(others)), max_examples),
        unexpected=Finding.of(map(_label, unexpected), max_examples),
        duplicated=Finding.of((_label(key) for key, count in seen.items() if count > 1), max_examples),
        unattributed_late=Finding.of(unattributed, max_examples),
        wrong_type=Finding.of(map(_label, wrong_type), max_examples),
    )


def _label(key: tuple[int, int]) -> str:
    return f"{key[0]}:{key[1]}"


def _input_keys(events: pa.Table) -> set[tuple[int, int]]:
    """``(partition, offset)`` of the transformed events, when the operators kept both columns."""
    if "_partition" not in events.column_names or "_offset" not in events.column_names:
        return set()
    pairs = zip(events.column("_partition").to_pylist(), events.column("_offset").to_pylist(), strict=True)
    return {(int(p), int(o)) for p, o in pairs if p is not None and o is not None}


def _without_event_time(events: pa.Table) -> set[tuple[int, int]]:
    """Aggregate inputs with a null ``_timestamp``: the aggregate dead-letters them as ``invalid``."""
    timeless = events.filter(pc.is_null(events.column("_timestamp")))
    return _input_keys(timeless)


# --- stateless outputs ----------------------------------------------------------------------------------------


def _ids(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Ids as strings (JSON and Kafka readers may type them differently), null as ``<null>``."""
    text = pc.cast(column, pa.string())
    combined = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
    return pc.fill_null(combined, _NULL_ID)


def _check_events(
    expected: pa.Table, output: ObservedOutput, id_column: str, commits: pa.Table, max_examples: int
) -> OutputReport:
    if id_column not in output.rows.column_names:
        raise ConfigError(f"verify: {output.name}: no id column {id_column!r}; columns: {output.rows.column_names}")
    expected_ids = _ids(expected.column(id_column))
    observed_ids = _ids(output.rows.column(id_column))
    lost, duplicated, unexpected = _counted(expected_ids, observed_ids, max_examples)
    return OutputReport(
        name=output.name,
        rows=output.rows.num_rows,
        lost=lost,
        duplicated=duplicated,
        unexpected=unexpected,
        out_of_order=_out_of_order(expected, expected_ids, output.rows, observed_ids, max_examples),
        aborted_read=_aborted_read(output.rows, observed_ids, commits, max_examples),
        uncommitted_records=output.uncommitted_records,
    )


def _counted(expected_ids: pa.Array, observed_ids: pa.Array, max_examples: int) -> tuple[Finding, Finding, Finding]:
    """Lost, duplicated and unexpected ids (an id may be expected more than once: then as often)."""
    counts = _id_counts(expected_ids, "expected").join(
        _id_counts(observed_ids, "observed"), "id", join_type="full outer"
    )
    wanted = pc.fill_null(counts.column("expected"), 0)
    got = pc.fill_null(counts.column("observed"), 0)
    ids = counts.column("id")

    def finding(mask: pa.ChunkedArray) -> Finding:
        return Finding.of(ids.filter(mask).to_pylist(), max_examples)

    lost = finding(pc.less(got, wanted))
    return lost, finding(pc.and_(pc.greater(got, wanted), pc.greater(wanted, 0))), finding(pc.equal(wanted, 0))


# --- joins ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ExpectedJoins:
    """``strict``: the join recomputed without the rows dead-lettered as late; ``with_late``: with them (a row
    late in one attempt may have been joined in another, at least once)."""

    strict: pa.Table
    with_late: pa.Table
    columns: JoinColumns


def _expected_joins(
    compiled: CompiledPipeline, join: JoinConfig, events: pa.Table, late: set[tuple[int, int]], id_column: str
) -> _ExpectedJoins:
    """The last stage's join recomputed over what it takes, without and with the rows dead-lettered as late."""
    columns = compiled.stages[-1].join_columns
    assert columns is not None  # a compiled join has its columns
    if id_column not in columns.left:
        raise ConfigError(
            f"verify: a join's results are told apart by their left row's id, and the left side ({join.left!r}) has "
            f"no {id_column!r}; its columns: {list(columns.left)}"
        )

    def on_time(rows: pa.Table) -> pa.Table:
        if not late or not {"_partition", "_offset"} <= set(rows.column_names):
            return rows
        positions = zip(rows.column("_partition").to_pylist(), rows.column("_offset").to_pylist(), strict=True)
        return rows.filter(pa.array([key not in late for key in positions], pa.bool_()))

    strict = recompute_join(on_time(through_earlier_stages(events, compiled, on_time)), join, columns)
    with_late = recompute_join(through_earlier_stages(events, compiled), join, columns) if late else strict
    return _ExpectedJoins(strict, with_late, columns)


def _check_joined(
    expected: _ExpectedJoins, output: ObservedOutput, id_column: str, commits: pa.Table, max_examples: int
) -> OutputReport:
    """A join's results by the left row's id (once per pair for an interval join), and the right-side values
    each carries. An id only the recomputation with late rows expects is not unexpected (late in one attempt,
    joined in another). Order is not judged: a join emits in watermark order, not input order."""
    if id_column not in output.rows.column_names:
        raise ConfigError(f"verify: {output.name}: no id column {id_column!r}; columns: {output.rows.column_names}")
    observed_ids = _ids(output.rows.column(id_column))
    lost, duplicated, unexpected = _counted(_ids(expected.strict.column(id_column)), observed_ids, max_examples)
    if expected.with_late is not expected.strict and unexpected.count:
        known = set(_ids(expected.strict.column(id_column)).to_pylist())
        known |= set(_ids(expected.with_late.column(id_column)).to_pylist())
        unexpected = Finding.of((label for label in set(observed_ids.to_pylist()) if label not in known), max_examples)
    wrong = wrong_joins(expected.strict, output.rows, id_column, expected.columns)
    if expected.with_late is not expected.strict:
        wrong = sorted(set(wrong) & set(wrong_joins(expected.with_late, output.rows, id_column, expected.columns)))
    return OutputReport(
        name=output.name,
        rows=output.rows.num_rows,
        lost=lost,
        duplicated=duplicated,
        unexpected=unexpected,
        aborted_read=_aborted_read(output.rows, observed_ids, commits, max_examples),
        uncommitted_records=output.uncommitted_records,
        wrong=Finding.of(wrong, max_examples),
    )


def _id_counts(ids: pa.Array, name: str) -> pa.Table:
    counted = pa.table({"id": ids}).group_by("id", use_threads=False).aggregate([([], "count_all")])
    return counted.rename_columns(["id", name])


def _out_of_order(
    expected: pa.Table, expected_ids: pa.Array, rows: pa.Table, observed_ids: pa.Array, max_examples: int
) -> Finding:
    """See the module docstring: first occurrences per stream, input order per input partition."""
    origin = pa.table(
        {"id": expected_ids, "p": expected.column(INPUT_PARTITION), "seq": expected.column(INPUT_SEQUENCE)}
    )
    origin = origin.group_by("id", use_threads=False).aggregate([("p", "min"), ("seq", "min")])
    firsts = pa.table(
        {"id": observed_ids, "s": pc.cast(rows.column(STREAM), pa.string()), "pos": rows.column(POSITION)}
    )
    firsts = firsts.group_by(["s", "id"], use_threads=False).aggregate([("pos", "min")])
    placed = firsts.join(origin, "id", join_type="inner").sort_by(
        [("s", "ascending"), ("p_min", "ascending"), ("pos_min", "ascending")]
    )
    if placed.num_rows < 2:
        return Finding()
    streams = placed.column("s").to_numpy(zero_copy_only=False)
    partitions = placed.column("p_min").to_numpy()
    segment_starts = np.concatenate([[True], (streams[1:] != streams[:-1]) | (partitions[1:] != partitions[:-1])])
    # segments are numbered in sort order, so offsetting each by its number makes one running maximum restart
    # at every segment boundary (sequences stay below 2**40)
    ranked = np.cumsum(segment_starts).astype(np.int64) * (1 << 40) + placed.column("seq_min").to_numpy()
    before = np.maximum.accumulate(ranked)[:-1]
    late = np.concatenate([[False], ranked[1:] < before])
    return Finding.of(placed.column("id").filter(pa.array(late)).to_pylist(), max_examples)


def _aborted_read(rows: pa.Table, labels: pa.Array, commits: pa.Table, max_examples: int) -> Finding:
    """Rows with ``(slot, epoch)`` headers whose pair has no commit marker."""
    if SLOT not in rows.column_names or EPOCH not in rows.column_names:
        return Finding()
    marked = pa.table(
        {
            "slot": pc.cast(rows.column(SLOT), pa.string()),
            "epoch": pc.cast(rows.column(EPOCH), pa.int64()),
            "id": labels,
        }
    )
    marked = marked.filter(pc.and_(pc.is_valid(marked.column("slot")), pc.is_valid(marked.column("epoch"))))
    markers = commits.select(["slot", "epoch"]).cast(COMMITS_SCHEMA)
    markers = markers.group_by(["slot", "epoch"], use_threads=False).aggregate([])
    aborted = marked.join(markers, ["slot", "epoch"], join_type="left anti")
    return Finding.of(aborted.column("id").to_pylist(), max_examples)


# --- windows --------------------------------------------------------------------------------------------------

_WindowKey = tuple[Any, int]
_Values = dict[str, Any]


def recompute_windows(events: pa.Table, aggregate: AggregateConfig) -> pa.Table:
    """Every window's final values in one ``group_by`` over ``events`` (transformed rows with ``_timestamp``;
    rows without one are skipped): key, ``window_start_ms``, ``window_end_ms``, then each aggregation."""
    if not isinstance(aggregate.window, TumblingWindowConfig):
        raise ConfigError(f"verify recomputes tumbling windows only, not {aggregate.window.type!r} ones")
    timed = events.filter(pc.is_valid(events.column("_timestamp")))
    times = timed.column("_timestamp").to_numpy(zero_copy_only=False).astype(np.int64)
    size = aggregate.window.size_ms
    starts = times - np.mod(times, size)
    sources = sorted({a.column for a in aggregate.aggregations.values() if a.column is not None})
    rows = pa.table({"key": timed.column(aggregate.key), "start": pa.array(starts, pa.int64())})
    for index, name in enumerate(sources):
        rows = rows.append_column(f"c{index}", timed.column(name))
    wanted = {(None if a.fn == "count" else a.column, a.fn) for a in aggregate.aggregations.values()}
    specs = [
        ([], "count_all") if column is None else (f"c{sources.index(column)}", fn)
        for column, fn in sorted(wanted, key=str)
    ]
    grouped = rows.group_by(["key", "start"], use_threads=False).aggregate(specs)
    result: dict[str, Any] = {
        aggregate.key: grouped.column("key"),
        WINDOW_START: grouped.column("start"),
        WINDOW_END: pc.add(grouped.column("start"), size),
    }
    for name, aggregation in aggregate.aggregations.items():
        if aggregation.fn == "count":
            result[name] = grouped.column("count_all")
        else:
            assert aggregation.column is not None  # the config validator guarantees it
            result[name] = grouped.column(f"c{sources.index(aggregation.column)}_{aggregation.fn}")
    return pa.table(result)


@dataclass(frozen=True)
class _ExpectedWindows:
    """``E`` (late events excluded) and ``E+`` (late events counted), keyed by (key, window start)."""

    aggregate: AggregateConfig
    strict: dict[_WindowKey, _Values]
    with_late: dict[_WindowKey, _Values]

    @classmethod
    def of(
        cls,
        events: pa.Table,
        aggregate: AggregateConfig,
        late: set[tuple[int, int]],
        before: Callable[..., pa.Table] = lambda events, on_time=None: events,
    ) -> _ExpectedWindows:
        """``before(events, on_time)``: what the stages ahead of the windows make of the events, each windows
        stage among them leaving out the late ones with ``on_time`` (no stage: the events themselves). A late
        dead letter is taken out at the stage that judged it: the one whose input held its position."""
        with_late = _windows_by_key(recompute_windows(before(events), aggregate), aggregate)
        if not late:
            return cls(aggregate, with_late, with_late)

        def on_time(rows: pa.Table) -> pa.Table:
            """``rows`` without those dead-lettered as late (rows with no input position cannot be)."""
            if not {"_partition", "_offset"} <= set(rows.column_names):
                return rows
            positions = zip(rows.column("_partition").to_pylist(), rows.column("_offset").to_pylist(), strict=True)
            return rows.filter(pa.array([key not in late for key in positions], pa.bool_()))

        strict = _windows_by_key(recompute_windows(on_time(before(events, on_time=on_time)), aggregate), aggregate)
        return cls(aggregate, strict, with_late)


def _windows_by_key(windows: pa.Table, aggregate: AggregateConfig) -> dict[_WindowKey, _Values]:
    return {(row[aggregate.key], int(row[WINDOW_START])): row for row in windows.to_pylist()}


def _check_windows(
    expected: _ExpectedWindows, output: ObservedOutput, commits: pa.Table, max_examples: int, tolerance: Tolerance
) -> OutputReport:
    aggregate = expected.aggregate
    compared = [WINDOW_END, *aggregate.aggregations]
    emitted: dict[_WindowKey, list[_Values]] = {}
    for row in output.rows.to_pylist():
        emitted.setdefault((row.get(aggregate.key), int(row[WINDOW_START])), []).append(row)

    def equal(row: _Values, reference: _Values | None) -> bool:
        return reference is not None and all(_same(row.get(name), reference[name], tolerance) for name in compared)

    strict, loose = expected.strict, expected.with_late
    wrong = [key for key, rows in emitted.items() if key in strict and not all(equal(r, strict[key]) for r in rows)]
    unmatched = [
        key
        for key, rows in emitted.items()
        if not any(equal(r, strict.get(key)) or equal(r, loose.get(key)) for r in rows)
    ]
    labels = pa.array([f"{row.get(aggregate.key)}@{row[WINDOW_START]}" for row in output.rows.to_pylist()], pa.string())
    return OutputReport(
        name=output.name,
        rows=output.rows.num_rows,
        aborted_read=_aborted_read(output.rows, labels, commits, max_examples),
        uncommitted_records=output.uncommitted_records,
        windows=WindowReport(
            expected=len(strict),
            observed=len(emitted),
            emissions=output.rows.num_rows,
            missing=_window_finding((key for key in strict if key not in emitted), max_examples),
            extra=_window_finding((key for key in emitted if key not in strict), max_examples),
            duplicated=_window_finding((key for key, rows in emitted.items() if len(rows) > 1), max_examples),
            wrong=_window_finding(wrong, max_examples),
            unmatched=_window_finding(unmatched, max_examples),
        ),
    )


def _window_finding(keys: Iterable[_WindowKey], max_examples: int) -> Finding:
    return Finding.of((f"{key}@{start}" for key, start in keys), max_examples)


def _same(observed: Any, expected: Any, tolerance: Tolerance) -> bool:
    if observed is None or expected is None:
        return observed is None and expected is None
    numbers = (int, float)
    if isinstance(observed, numbers) and isinstance(expected, numbers) and not isinstance(observed, bool):
        return math.isclose(observed, expected, rel_tol=tolerance.relative, abs_tol=tolerance.absolute)
    return bool(observed == expected)
