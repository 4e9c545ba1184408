"""The keyed stage's work on what its senders send, as a pure object: watermark valve -> keyed operator -> emit.

An :class:`~actors.AggregateActor` hosts one and keeps the checkpoint files, spans, metrics and recovery; a unit
test drives one with plain objects and a :class:`~pipelines.eventtime.clock.ManualClock` (ARCHITECTURE.md
section 3, the stage chain).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import pyarrow as pa

from pipelines.config.pipeline import PipelineConfig
from pipelines.eventtime.clock import SYSTEM_CLOCK, Clock
from pipelines.eventtime.watermark_tracking import WatermarkValve
from pipelines.io.records import DEAD_LETTER_SCHEMA, rows_as_dicts
from pipelines.io.sinks import RowWriter
from pipelines.stages.chain import StageLink
from pipelines.stages.dead_letter_policy import DeadLetterPolicy
from pipelines.stages.keyed_stage import open_keyed_operator
from pipelines.state.joins import JoinColumns
from pipelines.state.keyed_operator import KeyedOperator
from pipelines.state.process_function import KeyedProcess

__all__ = ["KeyedStageRunner"]


class KeyedStageRunner:
    """The keyed operator of the key groups one actor owns, fed by ``senders`` source stages.

    Contract:

    - **Blocks** never: :meth:`add` and :meth:`advance` fold in, emit to ``sinks`` and return. In an actor the
      sinks are epoch outputs: staged for the epoch's barrier (exactly-once) or written through.
    - **Raises** only what the operator raises for a bug or a user function's error (a process function that
      raises); rows the data makes unusable never raise: rows with no event time go to ``late_output`` as
      ``invalid``, rows for a window that already closed as ``late``, each with its reason.
    - **Watermark**: the minimum over active senders
      (:class:`~pipelines.eventtime.watermark_tracking.WatermarkValve`); a window is emitted once, when it passes the
      window's end; when every sender finished, everything is (:meth:`finish`). Processing-time timers fire at the
      first batch or watermark after ``clock.now_ms()`` passed them.
    - **State** is the operator's (:attr:`operator`: snapshot and restore); what it holds becomes durable at the
      hosting actor's checkpoint, not here.
    - **Backpressure** is the caller's: a sender waits while its batches here are unprocessed; with a next
      stage, :meth:`add` and :meth:`advance` wait while that stage's owners push back.
    - **Next stage** (``next_stage``): results go to the next keyed stage's owners instead of the sinks, and the
      watermark follows them (:mod:`pipelines.stages.chain`).
    """

    def __init__(
        self,
        config: PipelineConfig,
        senders: int,
        *,
        sinks: Sequence[RowWriter],
        late_output: RowWriter,
        carry_trace: bool,
        clock: Clock = SYSTEM_CLOCK,
        next_stage: StageLink | None = None,
        join_columns: JoinColumns | None = None,
    ) -> None:
        """``config``: the view of this stage (``PipelineConfig.keyed_stages``); ``next_stage``: where its results
        go when another keyed stage follows (they go there instead of to ``sinks``, with the watermark);
        ``join_columns``: a join's result columns (``CompiledStage.join_columns``)."""
        self.operator: KeyedOperator = open_keyed_operator(config, carry_trace=carry_trace, join_columns=join_columns)
        self._valve = WatermarkValve(senders)
        self._next = next_stage
        self._sinks: list[RowWriter] = [next_stage] if next_stage is not None else list(sinks)
        self._late_output = late_output
        self._policy = DeadLetterPolicy.of_pipeline(config)
        self._clock = clock
        self.events_in = 0
        self.windows_emitted = 0
        self.late_events = 0
        self.dropped_intended = 0

    def add(self, sender: int, batch: pa.RecordBatch, watermark_ms: int | None) -> None:
        """Fold ``sender``'s rows into state, emit what that emits, then move to the watermark it sent with them."""
        self.events_in += batch.num_rows
        if isinstance(self.operator, KeyedProcess):  # what the rows decide is decided at the time they arrive
            self._emit(self.operator.advance_processing_time(self._clock.now_ms()))
        added = self.operator.add(batch)
        self.dropped_intended += added.intended_drops
        self._emit(added.output)
        if added.late is not None:
            self.late_events += added.late.num_rows
            reason = f"{added.late_reason} (watermark {self.operator.watermark_ms} ms)"
            self._write_rejected(added.late, reason, "late")
        if added.no_event_time is not None:
            self._write_rejected(added.no_event_time, "event has no event time", "invalid")
        self.advance(sender, watermark_ms)

    def advance(self, sender: int, watermark_ms: int | None) -> None:
        """``sender`` sent ``watermark_ms`` (None: it is idle and left out of the minimum until it sends one)."""
        self._valve.advance(sender, watermark_ms)
        watermark = self._valve.current
        if watermark is not None:
            self._emit(self.operator.advance(watermark))
        if isinstance(self.operator, KeyedProcess):
            self._emit(self.operator.advance_processing_time(self._clock.now_ms()))
        if self._next is not None:
            self._next.advance(watermark)

    def finish(self, sender: int) -> None:
        """``sender`` has no more input; when it was the last one, emit everything (and tell the next stage)."""
        self._valve.finish(sender)
        if self.done:
            self._emit(self.operator.flush())
            if self._next is not None:
                self._next.finish()

    def regroup(self, senders: int, next_stage: StageLink | None = None) -> None:
        """A rescale: from now on ``senders`` senders feed this stage, each starting from no watermark, and its
        results go to ``next_stage`` (the next stage's owners after their rescale), when a stage follows."""
        self._valve = WatermarkValve(senders)
        if next_stage is not None:
            self._next = next_stage
            self._sinks = [next_stage]

    @property
    def done(self) -> bool:
        """Whether every sender finished."""
        return self._valve.done

    @property
    def watermark(self) -> int | None:
        """The stage's watermark now (None: none yet)."""
        return self._valve.current

    def _emit(self, rows: pa.Table | None) -> None:
        if rows is None:
            return
        self.windows_emitted += rows.num_rows
        for sink in self._sinks:
            sink.write(rows)

    def _write_rejected(self, rows: pa.RecordBatch, reason: str, error_type: str) -> None:
        """Write rows the operator did not take to the late output, their payload columns as JSON."""
        payload_columns = [name for name in rows.column_names if not name.startswith("_")]
        encoder = msgspec.json.Encoder()
        payloads = rows_as_dicts(rows.select(payload_columns))

        def metadata(name: str, kind: pa.DataType, missing: object = None) -> pa.Array:
            # a select may have dropped metadata columns: the dead letter still says what it can
            index = rows.schema.get_field_index(name)
            return rows.column(index) if index >= 0 else pa.array([missing] * rows.num_rows, kind)

        dead_letters = pa.RecordBatch.from_arrays(
            [
                pa.array([reason] * rows.num_rows),
                pa.array([error_type] * rows.num_rows),
                pa.array(["(aggregate input)"] * rows.num_rows),
                metadata("_partition", pa.int32(), -1),
                metadata("_offset", pa.int64(), -1),
                metadata("_key", pa.binary()),
                pa.array([encoder.encode(row) for row in payloads], pa.binary()),
                metadata("_traceparent", pa.string()),
            ],
            schema=DEAD_LETTER_SCHEMA,
        )
        self._late_output.write(self._policy.apply_to_late(dead_letters))
