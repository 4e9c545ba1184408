"""The partitions of a pipeline's inputs in one space, and the rows of its inputs in one schema.

**Partitions.** The Supervisor assigns, checkpoints and rescales partitions as plain integers. With several
inputs, partition ``p`` of input ``i`` is the pipeline partition ``i * PARTITION_STRIDE + p``: input 0's
partitions keep their numbers (so the checkpoints of a single-input pipeline are those it always wrote), and a
Kafka input that gains partitions never renumbers another input's. A pipeline partition is what ``_partition``
holds, what dead letters name and what checkpoints key offsets by.

**Rows.** Each input decodes and transforms its events with its own schema and operators; what leaves them is
conformed to the pipeline's *stage schema*: the columns of every input, in the order first met (input by
input), each with the one type the inputs agree on. An input without a column gets nulls in it. Two inputs
giving one column two types is a config error (:func:`stage_schema`), found at compile time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

import pyarrow as pa

from pipelines.config.kafka import KafkaSourceConfig
from pipelines.config.pipeline import GeneratorSourceConfig, NamedInput, PipelineConfig
from pipelines.errors import ConfigError
from pipelines.io.records import RawBatch
from pipelines.io.sources import PartitionReader

__all__ = [
    "PARTITION_STRIDE",
    "InputPartitionReader",
    "check_input_layout",
    "conform",
    "input_layout",
    "input_of",
    "local_partition",
    "partition_ids",
    "partition_limits",
    "pipeline_partition",
    "stage_schema",
]

PARTITION_STRIDE = 1 << 16  # partitions per input; `_partition` is int32, so up to 32,767 inputs fit


def pipeline_partition(input_index: int, partition: int) -> int:
    """The pipeline partition of ``partition`` of input ``input_index`` (the first input's are its own, however
    many it has)."""
    if input_index == 0:
        return partition
    if not 0 <= partition < PARTITION_STRIDE:
        raise ConfigError(f"input {input_index} has a partition {partition}; at most {PARTITION_STRIDE} are supported")
    return input_index * PARTITION_STRIDE + partition


def input_of(partition: int) -> int:
    """The index of the input that pipeline partition ``partition`` belongs to."""
    return partition // PARTITION_STRIDE


def local_partition(partition: int) -> int:
    """The partition number of pipeline partition ``partition`` in its own input (its Kafka partition, file)."""
    return partition % PARTITION_STRIDE


def partition_ids(counts: Sequence[int]) -> list[int]:
    """Every pipeline partition of inputs with ``counts`` partitions each, in order."""
    if len(counts) > 1 and counts[0] > PARTITION_STRIDE:
        raise ConfigError(f"the first input has {counts[0]} partitions; with several inputs each has at most "
                          f"{PARTITION_STRIDE}")  # fmt: skip
    return [pipeline_partition(index, p) for index, count in enumerate(counts) for p in range(count)]


def partition_limits(partitions: int | Sequence[int], max_events: int | None) -> dict[int, int | None]:
    """Split a total event budget over partitions (``0..n-1``, or the pipeline partitions given; the first ones
    take the remainder); None: unbounded."""
    ids = list(range(partitions)) if isinstance(partitions, int) else list(partitions)
    if max_events is None:
        return dict.fromkeys(ids)
    base, extra = divmod(max_events, len(ids))
    return {partition: base + (1 if position < extra else 0) for position, partition in enumerate(ids)}


def input_layout(config: PipelineConfig) -> list[str]:
    """What the partition numbers of ``config`` mean, input by input (``orders: kafka orders``), as checkpoints
    record it: a checkpoint restores only under the same layout."""
    return [
        f"{spec.name}: kafka {spec.source.topic}" if isinstance(spec.source, KafkaSourceConfig)
        else f"{spec.name}: {spec.source.type}"  # files and generators are numbered alike wherever they are
        for spec in config.all_inputs
    ]  # fmt: skip


def check_input_layout(config: PipelineConfig, recorded: Sequence[str], checkpoint: str) -> None:
    """Raise ConfigError if ``checkpoint`` numbered its partitions by another input layout than ``config``'s
    (an input added, removed, moved, renamed or pointed at another topic): its offsets would go to the wrong
    input. A checkpoint that recorded none was written by a single-input pipeline before layouts were."""
    current = input_layout(config)
    if (not recorded and len(current) == 1) or list(recorded) == current:
        return
    written = list(recorded) or ["(a single input; the checkpoint predates input layouts)"]
    raise ConfigError(
        f"{checkpoint} was written with the inputs {written}, and the config has {current}: its offsets are "
        "numbered by that layout and would go to the wrong inputs. Keep the inputs as they were (names, order, "
        "sources), or start afresh under another checkpoint.uri or pipeline name"
    )


def stage_schema(inputs: Iterable[tuple[str, pa.Schema]], path: str | None = None) -> pa.Schema:
    """The schema every input's rows are conformed to; ConfigError naming both inputs when they disagree on a
    column's type. With ``path`` (a stage's ``inputs``), the names are labels of what the stage takes (``input
    'orders'``, ``stage 'paid_once'``) and the error names that field."""
    fields: dict[str, pa.Field] = {}
    owner: dict[str, str] = {}
    for name, schema in inputs:
        for field in schema:
            known = fields.get(field.name)
            if known is None:
                fields[field.name] = field.with_nullable(True)
                owner[field.name] = name
            elif known.type != field.type and path is not None:
                raise ConfigError(
                    f"{path}: column {field.name!r} is {field.type} in the rows of {name}, and {known.type} in those "
                    f"of {owner[field.name]}; the stage takes both in one column: derive one type (e.g. op: derive "
                    "with a cast, in an input), or rename one of them (op: select with rename, or the aggregation)"
                )
            elif known.type != field.type:
                raise ConfigError(
                    f"inputs.{name}: column {field.name!r} is {field.type} after its operators, and {known.type} in "
                    f"input {owner[field.name]!r}; the keyed stage and the sinks take both in one column: derive "
                    "one type (e.g. op: derive with a cast), or rename one of them (op: select with rename)"
                )
    return pa.schema(list(fields.values()))


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` with the columns of ``schema`` in its order: its own where it has them, nulls elsewhere."""
    if batch.schema.equals(schema):
        return batch
    columns = [
        batch.column(index) if (index := batch.schema.get_field_index(field.name)) >= 0
        else pa.nulls(batch.num_rows, field.type)
        for field in schema
    ]  # fmt: skip
    return pa.RecordBatch.from_arrays(columns, schema=schema)


class InputPartitionReader:
    """A reader of partition ``reader.partition`` of input ``spec``, seen as its pipeline partition."""

    def __init__(self, reader: PartitionReader, spec: NamedInput) -> None:
        self.partition = pipeline_partition(spec.index, reader.partition)
        self._reader = reader
        # generator inputs all name their batches "generator": the input's name tells them apart (dead letters,
        # metrics); Kafka topics and file paths name themselves
        self._topic = f"generator:{spec.name}" if isinstance(spec.source, GeneratorSourceConfig) else None

    @property
    def position(self) -> int:
        return self._reader.position

    async def fetch(self, max_records: int) -> RawBatch | None:
        raw = await self._reader.fetch(max_records)
        if raw is None:
            return None
        return replace(raw, partition=self.partition, topic=self._topic or raw.topic)

    def end_offset(self) -> int:
        return self._reader.end_offset()

    def backlog(self) -> int | None:
        return self._reader.backlog()

    @property
    def limit_end(self) -> int | None:
        return self._reader.limit_end

    async def freeze(self) -> None:
        await self._reader.freeze()

    @property
    def exhausted(self) -> bool:
        return self._reader.exhausted

    async def close(self) -> None:
        await self._reader.close()
