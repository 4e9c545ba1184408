"""Quix Streams: the workloads as a StreamingDataFrame, written the way its documentation shows.

W1: event time from ``event_time_ms`` (a topic timestamp extractor), ``filter`` -> ``group_by("customer_id")``
(Quix re-keys through a repartition topic, as aggregations need the key to be the message key) ->
``tumbling_window(10 s, grace 1 s).agg(Count, Sum).final(closing_strategy="key")`` -> ``to_topic``.
Windows close when the newest timestamp seen in *their* repartition partition passes their end plus the grace
(there is no watermark over the input partitions), and a window still open when the input ends is never
emitted (an unbounded-stream design: there is no end-of-input flush). Late events are counted with ``on_late``.

W2: ``filter`` -> ``apply(enrich)`` -> ``to_topic``.

The run stops (``Application.stop``) once every ``OrderCreated`` event has reached the last step; ``run``
then commits its checkpoint, which flushes the producer, and returns.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from quixstreams import Application
from quixstreams.dataframe.windows import Count, Sum

from benchmarks.protocol import ChildReport, RunSpec
from benchmarks.workloads import ALLOWED_DISORDER_MS, WINDOW_MS, enrich, window_record

__all__ = ["run"]


class _TimedApplication(Application):
    """An Application that notes when it was first assigned partitions (reading can begin from there)."""

    assigned_s: float = 0.0
    ready_marker: Path | None = None

    def _on_assign(self, _: Any, topic_partitions: list[Any]) -> None:
        super()._on_assign(_, topic_partitions)
        if topic_partitions and not self.assigned_s:
            self.assigned_s = time.time()
            if self.ready_marker is not None:
                self.ready_marker.touch()


class _Counters:
    def __init__(self, app: Application, report: ChildReport, stop_after: int) -> None:
        self._app = app
        self._report = report
        self._stop_after = stop_after
        self.orders = 0
        self.late = 0

    def is_order(self, value: dict[str, Any]) -> bool:
        self._report.events_in += 1
        if not self._report.first_event_s:
            self._report.first_event_s = time.time()
        return bool(value["event_type"] == "OrderCreated")

    def order_reached_last_step(self, _: Any) -> None:
        self.orders += 1
        if self.orders == self._stop_after:
            self._app.stop()

    def on_late(  # the signature of quixstreams' WindowOnLateCallback
        self, value: Any, key: Any, timestamp_ms: int, late_by_ms: int, start: int, end: int,
        store_name: str, topic: str, partition: int, offset: int,
    ) -> bool:  # fmt: skip
        self.late += 1
        return False  # counted here instead of a warning per event


def _window_output(value: dict[str, Any], key: Any, *_: Any) -> dict[str, Any]:
    return window_record(str(key), value["start"], value["orders"], value["revenue_cents"])


def run(spec: RunSpec, report: ChildReport) -> None:
    assert spec.bootstrap is not None and spec.input_topic is not None and spec.output_topic is not None
    app = _TimedApplication(
        broker_address=spec.bootstrap,
        consumer_group=f"bench-quix-{spec.workload.lower()}-{time.time_ns()}",
        auto_offset_reset="earliest",
        state_dir=f"{spec.work_dir}/state",
        loglevel="WARNING",
        producer_extra_config={"enable.idempotence": True},  # as eventray's sink: acks=all, idempotent
    )
    app.ready_marker = spec.ready_marker
    source = app.topic(
        spec.input_topic,
        value_deserializer="json",
        key_deserializer="bytes",
        timestamp_extractor=lambda value, _headers, _timestamp, _type: int(value["event_time_ms"]),
    )
    output = app.topic(spec.output_topic, value_serializer="json", key_serializer="str")
    counters = _Counters(app, report, spec.order_events)
    sdf = app.dataframe(source).filter(counters.is_order)
    if spec.workload == "W1":
        sdf = sdf.group_by("customer_id")
        sdf = sdf.update(counters.order_reached_last_step)
        windows = sdf.tumbling_window(duration_ms=WINDOW_MS, grace_ms=ALLOWED_DISORDER_MS, on_late=counters.on_late)
        sdf = windows.agg(orders=Count(), revenue_cents=Sum("amount_cents")).final(closing_strategy="key")
        sdf = sdf.apply(_window_output, metadata=True)
    else:
        sdf = sdf.apply(enrich).update(counters.order_reached_last_step)
    sdf = sdf.update(lambda _: _count_output(report))
    sdf.to_topic(output, key=lambda value: value["customer_id"])
    app.run()
    report.done_s = time.time()
    report.ready_s = app.assigned_s or report.first_event_s
    report.extra.update(orders_processed=counters.orders, late_events=counters.late)
    if counters.late:
        report.notes.append(f"{counters.late} late events dropped")


def _count_output(report: ChildReport) -> None:
    report.outputs += 1
