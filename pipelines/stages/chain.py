"""From one keyed stage to the next: a stage's results, shuffled again by the next stage's key, with its watermark.

A pipeline with several keyed stages (``stages:``) runs each stage in its own set of owners (actors, or runners
in process); every owner of stage ``k`` is a sender of the stage that takes its results, the *next stage*
(:class:`~pipelines.config.stage_graph.StageGraph`: in a chain, ``k + 1``). :class:`StageLink` is the output
through which one owner's :class:`~pipelines.stages.keyed_runner.KeyedStageRunner` hands its results on:

- **Rows**: each result goes to the owner of its key group under the next stage's key (the same stable hash as
  the sources use, so nothing needs to be co-partitioned). Window results get an event time first: the last
  millisecond of their window (:func:`~pipelines.stages.plan.as_next_stage_input`). A next stage that takes
  inputs or other stages too gets them in its one schema (:func:`~pipelines.stages.topology.conform`).
- **Watermark**: the stage's own (the minimum over its senders), forwarded after the rows it released, so a
  window result is never late for the next stage's windows because of the watermark that closed it; a stage
  whose senders are all idle forwards "idle" (None), as a source does.
- **End**: when every sender of the stage finished, it emits everything, then tells every next owner that it
  has no more input.
- **Checkpoints**: :meth:`StageLink.drain` returns once every row sent was processed; a checkpoint takes stage
  ``k``'s snapshot after that and before the next stage's (stages go in order, and a stage takes only earlier
  ones), so together they hold each row's effect once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa

from pipelines.config.pipeline import PipelineConfig
from pipelines.eventtime.watermarks import NO_WATERMARK
from pipelines.stages.plan import CompiledPipeline, as_next_stage_input
from pipelines.stages.topology import conform
from pipelines.state.joins import SIDE, side_column
from pipelines.state.keygroups import KeyGroupRouter

__all__ = ["NextStage", "StageLink", "StageOwners"]


class StageOwners(Protocol):
    """The owners of the next keyed stage as seen by one owner of the stage before it.

    Contract: batches sent to one owner are processed in the order sent; ``send`` may wait while too many are
    unprocessed (backpressure) and raises the owner's error if an earlier batch failed; ``drain`` waits until
    every batch sent was processed; ``finish`` drains, then tells every owner that ``sender`` has no more input.
    """

    @property
    def owners(self) -> int: ...

    @property
    def waited_s(self) -> float:
        """Seconds spent waiting on the owners so far (backpressure, drains): not the sender's own work."""
        ...

    def send(self, owner: int, sender: int, batch: pa.RecordBatch | None, watermark_ms: int | None) -> None: ...

    def drain(self) -> None: ...

    def finish(self, sender: int) -> None: ...


@dataclass(frozen=True)
class NextStage:
    """What an owner of a keyed stage needs to feed the next one: its owners, the owner of each of its key groups,
    and this owner's place among its senders."""

    owners: StageOwners
    owner_of_group: list[int]
    sender: int


class StageLink:
    """The output of one owner of a keyed stage that feeds the next stage (see the module docstring).

    ``stage`` is the view of the stage whose results these are, ``next_stage`` the view of the one that takes
    them (``PipelineConfig.keyed_stages``); ``owner_of_group`` maps each key group of the next stage to its
    owner; ``sender`` is this owner's place among the next stage's senders; ``schema``: the one the next stage
    takes rows in, when it takes more than these results (None: the results as they are); ``side``: the side
    these results are on when the next stage is a join (:mod:`pipelines.state.joins`).
    """

    def __init__(
        self,
        stage: PipelineConfig,
        next_stage: PipelineConfig,
        owners: StageOwners,
        owner_of_group: Sequence[int],
        sender: int,
        schema: pa.Schema | None = None,
        side: int | None = None,
    ) -> None:
        key = next_stage.keyed_stage
        if key is None:
            raise ValueError("the next stage of a StageLink must be a keyed stage (aggregate or keyed)")
        self._stage = stage
        self._owners = owners
        self._router = KeyGroupRouter(key.key, next_stage.runtime.max_key_groups, owner_of_group)
        self._sender = sender
        self._schema = schema
        self._side = side
        self._watermark: int | None = NO_WATERMARK
        self._sent: list[int | None] = [NO_WATERMARK] * owners.owners
        self.rows_sent = 0

    @classmethod
    def after(cls, compiled: CompiledPipeline, stage: int, next_stage: NextStage) -> StageLink:
        """The link from keyed stage ``stage`` of ``compiled`` to the stage that takes its results."""
        config = compiled.config
        graph = compiled.graph
        following = graph.next_stage[stage]
        if following is None:
            raise ValueError(f"keyed stage {stage} of pipeline {config.name!r} is its last: nothing follows it")
        schema = None if graph.takes_one_stage(following) else compiled.stages[following].input_schema
        side = compiled.stages[following].side_of(config.stage_names[stage])
        views = config.keyed_stages
        owners, owner_of_group, sender = next_stage.owners, next_stage.owner_of_group, next_stage.sender
        return cls(views[stage], views[following], owners, owner_of_group, sender, schema, side)

    def write(self, rows: pa.Table | pa.RecordBatch) -> None:
        """Send ``rows`` (results of the stage) to their owners, with the watermark last forwarded."""
        table = pa.Table.from_batches([rows]) if isinstance(rows, pa.RecordBatch) else rows
        if table.num_rows == 0:
            return
        batch = as_next_stage_input(self._stage, table).combine_chunks().to_batches()[0]
        if self._side is not None:
            batch = batch.append_column(SIDE, side_column(batch.num_rows, self._side))
        if self._schema is not None:
            batch = conform(batch, self._schema)
        for owner, part in self._router.split(batch).items():
            self._owners.send(owner, self._sender, part, self._watermark)
            self._sent[owner] = self._watermark
            self.rows_sent += part.num_rows

    def advance(self, watermark_ms: int | None) -> None:
        """The stage's watermark is now ``watermark_ms`` (None: its senders are all idle): forward it to each
        owner it changed for."""
        self._watermark = watermark_ms
        for owner, sent in enumerate(self._sent):
            if watermark_ms == sent or (watermark_ms is not None and sent is not None and watermark_ms <= sent):
                continue
            self._owners.send(owner, self._sender, None, watermark_ms)
            self._sent[owner] = watermark_ms

    def drain(self) -> None:
        """Wait until every row sent was processed (a checkpoint barrier)."""
        self._owners.drain()

    @property
    def waited_s(self) -> float:
        """Seconds spent waiting on the next stage's owners so far (not this stage's work)."""
        return self._owners.waited_s

    def finish(self) -> None:
        """The stage emitted everything: the next stage gets no more input from this owner."""
        self._owners.finish(self._sender)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None
