"""``eventray_*`` metrics through ``ray.util.metrics``: every Ray node exports them on its Prometheus endpoint
(Ray prefixes application metrics with ``ray_``; counters get ``_total``).

Outside a Ray worker (unit tests run actors in-process) every method is a no-op.
"""

from __future__ import annotations

import time

__all__ = ["PipelineMetrics"]

_LATENCY_BOUNDARIES_S = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]


class PipelineMetrics:
    def __init__(self, pipeline: str) -> None:
        self._pipeline = pipeline
        self._on = False
        try:
            import ray  # noqa: PLC0415 - only inside a Ray worker
            from ray.util import metrics  # noqa: PLC0415
        except ImportError:  # pragma: no cover - ray is a dependency
            return
        if not ray.is_initialized():
            return
        topic = ("pipeline", "topic")
        partition = ("pipeline", "topic", "partition")
        self._events_in = metrics.Counter("eventray_events_in", "events read from the source", topic)
        self._events_out = metrics.Counter("eventray_events_out", "events after the stateless operators", topic)
        self._dead = metrics.Counter("eventray_dead_lettered", "events sent to the dead-letter output", topic)
        self._traceparents_dropped = metrics.Counter(
            "eventray_traceparents_dropped", "malformed traceparent headers dropped at the source", topic
        )
        self._windows = metrics.Counter("eventray_windows_emitted", "window results emitted", ("pipeline",))
        self._lag = metrics.Gauge("eventray_lag_records", "log end offset minus processed offset", partition)
        self._lag_s = metrics.Gauge("eventray_lag_seconds", "age of the newest processed event when lagging", partition)
        self._latency = metrics.Histogram(
            "eventray_batch_latency_s", "time to process one batch in a stage", _LATENCY_BOUNDARIES_S,
            ("pipeline", "stage"),
        )  # fmt: skip
        self._actors = metrics.Gauge("eventray_actors", "actors of a pipeline", ("pipeline", "role", "state"))
        self._input_rate = metrics.Gauge("eventray_input_rate", "log end offset growth, records/s", ("pipeline",))
        self._busy = metrics.Gauge(
            "eventray_busy_ratio", "share of time an actor kind is busy, summed", ("pipeline", "role")
        )
        self._checkpoint = metrics.Histogram(
            "eventray_checkpoint_duration_s", "barrier to commit of one epoch", _LATENCY_BOUNDARIES_S, ("pipeline",)
        )
        self._on = True

    def batch(self, topic: str, events_in: int, events_out: int, dead: int, seconds: float) -> None:
        if not self._on:
            return
        tags = {"pipeline": self._pipeline, "topic": topic}
        self._events_in.inc(events_in, tags)
        if events_out:
            self._events_out.inc(events_out, tags)
        if dead:
            self._dead.inc(dead, tags)
        self._latency.observe(seconds, {"pipeline": self._pipeline, "stage": "source"})

    def traceparents_dropped(self, topic: str, count: int) -> None:
        if self._on and count:
            self._traceparents_dropped.inc(count, {"pipeline": self._pipeline, "topic": topic})

    def aggregate(self, seconds: float) -> None:
        if self._on:
            self._latency.observe(seconds, {"pipeline": self._pipeline, "stage": "aggregate"})

    def windows(self, emitted: int) -> None:
        if self._on and emitted:
            self._windows.inc(emitted, {"pipeline": self._pipeline})

    def lag(self, topic: str, partition: int, records: int, newest_event_ms: int | None) -> None:
        if not self._on:
            return
        tags = {"pipeline": self._pipeline, "topic": topic, "partition": str(partition)}
        self._lag.set(records, tags)
        behind_s = 0.0 if records == 0 or newest_event_ms is None else max(0.0, time.time() - newest_event_ms / 1000)
        self._lag_s.set(behind_s, tags)

    def actors(self, role: str, current: int, desired: int) -> None:
        if not self._on:
            return
        self._actors.set(current, {"pipeline": self._pipeline, "role": role, "state": "current"})
        self._actors.set(desired, {"pipeline": self._pipeline, "role": role, "state": "desired"})

    def checkpoint(self, seconds: float) -> None:
        if self._on:
            self._checkpoint.observe(seconds, {"pipeline": self._pipeline})

    def load(self, input_rate_per_s: float | None, busy_by_role: dict[str, float | None]) -> None:
        """What the lag monitor measured at an autoscaling tick (input rate, busy ratios per actor kind)."""
        if not self._on:
            return
        if input_rate_per_s is not None:
            self._input_rate.set(input_rate_per_s, {"pipeline": self._pipeline})
        for role, busy in busy_by_role.items():
            if busy is not None:
                self._busy.set(busy, {"pipeline": self._pipeline, "role": role})
