"""AggregateActor: owns a set of key groups and their window state; emits closed windows to its sinks."""

from __future__ import annotations

import time

import msgspec
import pyarrow as pa

from actors.metrics import PipelineMetrics
from actors.outputs import open_dead_letter, open_result_sinks
from actors.reports import AggregateProgress
from actors.source_actor import END_OF_INPUT, NO_WATERMARK
from actors.telemetry import Telemetry
from pipelines.config import PipelineConfig
from pipelines.plan import compile_pipeline
from pipelines.records import DEAD_LETTER_SCHEMA
from pipelines.sinks import ConsoleSink, Sink
from pipelines.windows import TumblingWindows

__all__ = ["AggregateActor"]

_NO_CONTEXTS = pa.nulls(0, pa.string())


class AggregateActor:
    """Keyed window state for the key groups it owns.

    Contract: calls are processed one at a time, in the order each sender sent them. The watermark is the
    minimum over senders; a window is emitted once, when that watermark passes its end, and rows that arrive
    for an emitted window go to the dead-letter output as ``late`` (never dropped). When every sender has
    finished, every open window is emitted and the sinks are flushed.
    """

    def __init__(self, config: PipelineConfig, actor_id: str, key_groups: list[int], senders: int) -> None:
        if config.aggregate is None:
            raise ValueError("AggregateActor needs a pipeline with an aggregate")
        self._actor_id = actor_id
        self.key_groups = key_groups
        self._pipeline = config.name
        self._carry_trace = compile_pipeline(config).carries_trace
        self._windows = TumblingWindows(config.aggregate, carry_trace=self._carry_trace)
        self._telemetry = Telemetry(config, actor_id)
        self._metrics = PipelineMetrics(config.name)
        self._sender_watermarks = [NO_WATERMARK] * senders
        self._idle_senders: set[int] = set()
        self._sinks: list[Sink] = open_result_sinks(config, actor_id, self._telemetry)
        self._late_output = open_dead_letter(config, f"{actor_id}-late")
        self._events_in = 0
        self._windows_emitted = 0
        self._late_events = 0

    def process(
        self, sender: int, batch: pa.RecordBatch | None, watermark_ms: int | None, trace_context: str | None = None
    ) -> int:
        """Fold a batch (or only a watermark, when ``batch`` is None) into state; return rows processed.

        ``trace_context`` is the sender's batch span: this batch's span is its child, in the same trace.
        """
        started = time.perf_counter()
        try:
            return self._process(sender, batch, watermark_ms, trace_context)
        finally:
            self._metrics.aggregate(time.perf_counter() - started)

    def _process(
        self, sender: int, batch: pa.RecordBatch | None, watermark_ms: int | None, trace_context: str | None
    ) -> int:
        if batch is None or batch.num_rows == 0:
            self._advance(sender, watermark_ms)
            return 0
        with self._telemetry.batch_span(
            f"aggregate {self._pipeline}", batch.column("_traceparent") if self._carry_trace else _NO_CONTEXTS,
            {"eventray.pipeline": self._pipeline, "eventray.stage": "aggregate",
             "messaging.batch.message_count": batch.num_rows},
            parent=trace_context,
        ) as batch_trace:  # fmt: skip
            if self._carry_trace:
                traces = batch.schema.get_field_index("_traceparent")
                batch = batch.set_column(traces, "_traceparent", batch_trace.carry(batch.column(traces)))
            self._events_in += batch.num_rows
            rejected = self._windows.add(batch)
            if rejected.late is not None:
                self._write_late(rejected.late)
            if rejected.no_event_time is not None:
                self._write_rejected(rejected.no_event_time, "event has no event time", "invalid")
            self._advance(sender, watermark_ms)
        rows: int = batch.num_rows
        return rows

    def _advance(self, sender: int, watermark_ms: int | None) -> None:
        """``None``: the sender is idle and left out of the minimum until it sends a watermark again."""
        if watermark_ms is None:
            self._idle_senders.add(sender)
        else:
            self._idle_senders.discard(sender)
            self._sender_watermarks[sender] = max(self._sender_watermarks[sender], watermark_ms)
        watermark = self._watermark()
        if watermark is not None:
            self._emit(self._windows.advance(watermark))

    def _watermark(self) -> int | None:
        """The minimum over active senders; when every sender is idle, the maximum they reached (as Flink's
        watermark valve: nothing is pending anywhere, so everything up to there is complete)."""
        active = [w for sender, w in enumerate(self._sender_watermarks) if sender not in self._idle_senders]
        if active:
            return min(active)
        reached = [w for w in self._sender_watermarks if w != NO_WATERMARK]
        return max(reached) if reached else None

    def finish(self, sender: int) -> AggregateProgress:
        """``sender`` has no more input. When it was the last one, emit everything and flush the sinks."""
        self._sender_watermarks[sender] = END_OF_INPUT
        self._idle_senders.discard(sender)
        if self.done:
            self._emit(self._windows.flush())
            for sink in self._sinks:
                sink.flush()
            self._late_output.flush()
        return self.progress()

    @property
    def done(self) -> bool:
        return all(watermark == END_OF_INPUT for watermark in self._sender_watermarks)

    def close(self) -> AggregateProgress:
        for sink in self._sinks:
            sink.close()
        self._late_output.close()
        self._telemetry.close()
        return self.progress()

    def progress(self) -> AggregateProgress:
        preview = [row for sink in self._sinks if isinstance(sink, ConsoleSink) for row in sink.preview()]
        return AggregateProgress(
            actor_id=self._actor_id,
            events_in=self._events_in,
            windows_emitted=self._windows_emitted,
            late_events=self._late_events,
            watermark_ms=NO_WATERMARK if (watermark := self._watermark()) is None else watermark,
            done=self.done,
            preview=preview,
        )

    def _emit(self, closed: pa.Table | None) -> None:
        if closed is None:
            return
        self._windows_emitted += closed.num_rows
        self._metrics.windows(closed.num_rows)
        for sink in self._sinks:
            sink.write(closed)

    def _write_late(self, late: pa.RecordBatch) -> None:
        self._late_events += late.num_rows
        reason = f"late event: its window had closed (watermark {self._windows.watermark_ms} ms)"
        self._write_rejected(late, reason, "late")

    def _write_rejected(self, late: pa.RecordBatch, reason: str, error_type: str) -> None:
        """Write rows the windows did not count to the dead-letter output, with their payload columns as JSON."""
        payload_columns = [name for name in late.column_names if not name.startswith("_")]
        encoder = msgspec.json.Encoder()
        rows = late.select(payload_columns).to_pylist()

        def metadata(name: str, kind: pa.DataType, missing: object = None) -> pa.Array:
            # a select may have dropped metadata columns: the dead letter still says what it can
            index = late.schema.get_field_index(name)
            return late.column(index) if index >= 0 else pa.array([missing] * late.num_rows, kind)

        self._late_output.write(
            pa.RecordBatch.from_arrays(
                [
                    pa.array([reason] * late.num_rows),
                    pa.array([error_type] * late.num_rows),
                    pa.array(["(aggregate input)"] * late.num_rows),
                    metadata("_partition", pa.int32(), -1),
                    metadata("_offset", pa.int64(), -1),
                    metadata("_key", pa.binary()),
                    pa.array([encoder.encode(row) for row in rows], pa.binary()),
                    metadata("_traceparent", pa.string()),
                ],
                schema=DEAD_LETTER_SCHEMA,
            )
        )
