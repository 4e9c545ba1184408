"""eventray: the workloads as pipeline configs, run with ``cluster.control.runner.run_pipeline`` on an embedded Ray.

Timing: ``RunSummary.progress.elapsed_s`` counts from the Supervisor's start, so it includes starting the
source and aggregate actors (new Ray worker processes). The drain time reported is from "reading began" to the
end of the run instead: the progress callback is polled every ``POLL_S``; reading began halfway between the
last report in which no source had an open partition (no lag and no events yet) and the first in which one had
(error at most ``POLL_S / 2``), and the end is the Supervisor's own end of run (every source finished, every
window emitted, every sink flushed), both on the Supervisor's clock, mapped to wall-clock time from the
reports' (receipt time - elapsed). The first event is found the same way, for information.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchmarks.protocol import ChildReport, RunSpec
from benchmarks.workloads import ALLOWED_DISORDER_MS, LARGE_ORDER_CENTS, WINDOW_MS, generator_config, is_dirty_feed
from cluster.control.run_report import RunProgress
from cluster.control.runner import run_pipeline
from pipelines.config.pipeline import PipelineConfig, parse_config

__all__ = ["NON_NEGATIVE_AMOUNT", "pipeline_config", "run"]

POLL_S = 0.1
_METADATA = ["_partition", "_offset", "_timestamp", "_key", "_traceparent"]
# W1D's schema check. A null amount passes: UserRegistered, ShipmentDispatched and InventoryUpdated events have
# none, and W1's schema accepts them too (the filter drops them).
NON_NEGATIVE_AMOUNT = "is_null(amount_cents) or amount_cents >= 0"


def _orders_schema(extra_fields: dict[str, str], checks: list[str]) -> dict[str, Any]:
    return {
        "fields": {"event_type": "string", "event_time_ms": "int64", "customer_id": "string",
                   "amount_cents": "int64", **extra_fields},
        "required": ["event_type", "event_time_ms"],
        "checks": checks,
        "event_time_field": "event_time_ms",
    }  # fmt: skip


def _aggregate() -> dict[str, Any]:
    return {
        "key": "customer_id",
        "window": {"type": "tumbling", "size_ms": WINDOW_MS},
        "aggregations": {"orders": {"fn": "count"}, "revenue_cents": {"fn": "sum", "column": "amount_cents"}},
        "max_out_of_order_ms": ALLOWED_DISORDER_MS,
    }


def pipeline_config(spec: RunSpec) -> PipelineConfig:
    """The eventray pipeline of ``spec.workload`` (see :mod:`benchmarks.workloads` for the jobs)."""
    work = Path(spec.work_dir)
    data: dict[str, Any] = {
        "name": f"bench-{spec.workload.lower()}",
        "dead_letter": {"type": "jsonl", "path": str(work / "dead_letter")},
        **_input_and_output(spec),
        **(_enrich_job() if spec.workload == "W2" else _windowed_job(spec.workload)),
        "runtime": _runtime(spec),
    }
    return parse_config(data)


def _input_and_output(spec: RunSpec) -> dict[str, Any]:
    """W3: the generator to JSONL files; the others: the pre-filled (or, latency run, filling) topic to Kafka."""
    work = Path(spec.work_dir)
    if spec.workload == "W3":
        return {
            "source": {**generator_config().model_dump(mode="json"), "type": "generator"},
            "sinks": [{"type": "jsonl", "path": str(work / "windows")}],
        }
    return {
        "source": {"type": "kafka", "topic": spec.input_topic, "start": "earliest",
                   "group_id": f"bench-eventray-{work.name}"},
        "kafka": {"bootstrap_servers": spec.bootstrap},
        "sinks": [{"type": "kafka", "topic": spec.output_topic, "key_column": "customer_id"}],
    }  # fmt: skip


def _runtime(spec: RunSpec) -> dict[str, Any]:
    runtime: dict[str, Any] = {"source_actors": spec.source_actors, "aggregate_actors": spec.aggregate_actors}
    if spec.workload == "W3" or spec.rate_per_s:  # the generator, or a latency run whose topic fills as we read
        runtime.update(max_events=spec.events, duration_s=None)
    else:  # a drain: the sources freeze at 0.5 s and read what had arrived by then
        runtime["duration_s"] = 0.5
    return runtime


def _enrich_job() -> dict[str, Any]:
    """W2: filter and enrich each order."""
    return {
        "schema": _orders_schema({"event_id": "string", "order_id": "string", "sku": "string",
                                  "quantity": "int64"}, checks=[]),
        "operators": [
            {"op": "filter", "expr": 'event_type == "OrderCreated"'},
            {"op": "derive", "column": "total_cents", "expr": "amount_cents * quantity"},
            {"op": "derive", "column": "large", "expr": f"total_cents >= {LARGE_ORDER_CENTS}"},
            {"op": "select", "columns": ["event_id", "customer_id", "order_id", "sku", "total_cents", "large"]},
        ],
    }  # fmt: skip


def _windowed_job(workload: str) -> dict[str, Any]:
    """W1, W1D and W3: orders per customer in 10 s windows; W1D's schema also rejects negative amounts.

    On the dirty feed every invalid kind but one is a dead letter while decoding: truncated JSON is undecodable,
    a missing event time fails ``required``, ``"amount_cents":"n/a"`` does not fit int64 and a negative amount
    fails the check. An unknown event type decodes; the ``OrderCreated`` filter drops it.
    """
    checks = [NON_NEGATIVE_AMOUNT] if is_dirty_feed(workload) else []
    return {
        "schema": _orders_schema({}, checks),
        "operators": [
            {"op": "filter", "expr": 'event_type == "OrderCreated"'},
            {"op": "select", "columns": ["customer_id", "amount_cents", *_METADATA]},
        ],
        "aggregate": _aggregate(),
    }


class _ProgressClock:
    """Maps the Supervisor's elapsed seconds to wall-clock time and finds when the first event came in."""

    def __init__(self, ready_marker: Path) -> None:
        self._ready_marker = ready_marker
        self.offset_s: float | None = None  # wall clock at Supervisor elapsed 0 (the earliest estimate)
        self.first_event_elapsed_s: float | None = None
        self.reading_elapsed_s: float | None = None
        self._previous_elapsed_s = 0.0
        self.reports = 0

    def __call__(self, progress: RunProgress) -> None:
        now = time.time()
        self.reports += 1
        offset = now - progress.elapsed_s
        self.offset_s = offset if self.offset_s is None else min(self.offset_s, offset)
        if progress.sources and not self._ready_marker.exists():
            self._ready_marker.touch()
        midpoint = (self._previous_elapsed_s + progress.elapsed_s) / 2
        if self.reading_elapsed_s is None and (progress.lag_records > 0 or progress.events_in > 0):
            self.reading_elapsed_s = midpoint
        if self.first_event_elapsed_s is None and progress.events_in > 0:
            self.first_event_elapsed_s = midpoint
        self._previous_elapsed_s = progress.elapsed_s


def run(spec: RunSpec, report: ChildReport) -> None:
    config = pipeline_config(spec)
    clock = _ProgressClock(spec.ready_marker)
    summary = run_pipeline(config, on_progress=clock, poll_s=POLL_S)
    returned_s = time.time()
    progress = summary.progress
    offset = clock.offset_s if clock.offset_s is not None else returned_s - progress.elapsed_s
    reading = clock.reading_elapsed_s
    if reading is None:
        reading = 0.0
        report.notes.append("no progress report showed reading before the end: drain time counts from start-up")
    report.ready_s = offset + reading
    report.first_event_s = offset + (clock.first_event_elapsed_s or reading)
    report.done_s = offset + progress.elapsed_s
    report.events_in = progress.events_in
    report.outputs = progress.windows_emitted if config.aggregate is not None else progress.events_out
    report.extra.update(
        supervisor_elapsed_s=progress.elapsed_s,
        progress_reports=clock.reports,
        dead_lettered=progress.dead_lettered,
        late_events=progress.late_events,
        run_pipeline_returned_s=returned_s,
        source_actors=config.runtime.source_actors,
        aggregate_actors=config.runtime.aggregate_actors,
    )
    if progress.late_events or progress.dead_lettered:
        report.notes.append(f"{progress.late_events} late, {progress.dead_lettered} dead-lettered events")
