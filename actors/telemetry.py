"""Tracing in an actor process: a tracer provider built from the pipeline's tracing config, batch spans that
continue the first sampled event's trace and link the others, and a JSONL span exporter for the embedded
default (OTLP gRPC/HTTP for real backends). Every process sets up its own provider and flushes it on close.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from pipelines.config.pipeline import PipelineConfig, TracingConfig
from pipelines.io.trace_context import (
    TraceParent,
    assign_new_contexts,
    format_traceparent,
    parse_traceparent,
    sampled_contexts,
)

__all__ = ["BatchTrace", "JsonlSpanExporter", "Telemetry"]


class JsonlSpanExporter(SpanExporter):
    """One JSON object per finished span, appended to ``<directory>/spans-<pid>.jsonl``."""

    def __init__(self, directory: str) -> None:
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = (folder / f"spans-{os.getpid()}.jsonl").open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = [json.dumps(_span_record(span), separators=(",", ":")) for span in spans]
        with self._lock:
            self._file.write("".join(line + "\n" for line in lines))
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()


def _span_record(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    assert context is not None
    return {
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_span_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "name": span.name,
        "kind": span.kind.name,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "attributes": dict(span.attributes or {}),
        "links": [
            {"trace_id": f"{link.context.trace_id:032x}", "span_id": f"{link.context.span_id:016x}"}
            for link in span.links
        ],
        "resource": {key: value for key, value in span.resource.attributes.items() if isinstance(value, str | int)},
    }


def _exporter(config: TracingConfig) -> SpanExporter:
    if config.exporter == "jsonl":
        return JsonlSpanExporter(config.jsonl_path)
    headers = {name: value.get_secret_value() for name, value in config.otlp_headers.items()}
    if config.exporter == "otlp_grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter  # noqa: PLC0415

        return OTLPSpanExporter(endpoint=config.otlp_endpoint, headers=headers, insecure=config.otlp_insecure)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter(endpoint=config.otlp_endpoint, headers=headers)


def _remote(parent: TraceParent) -> Any:
    flags = TraceFlags(TraceFlags.SAMPLED if parent.sampled else TraceFlags.DEFAULT)
    span_context = SpanContext(parent.trace_id, parent.span_id, is_remote=True, trace_flags=flags)
    return trace.set_span_in_context(NonRecordingSpan(span_context))


class Telemetry:
    """Spans for one actor. With tracing off (the default) every method is a cheap no-op."""

    def __init__(self, config: PipelineConfig, actor_id: str) -> None:
        self._config = config.tracing
        self._provider: TracerProvider | None = None
        self._tracer: trace.Tracer | None = None
        if self._config.enabled and self._config.exporter != "none":
            resource = Resource.create(
                {"service.name": f"eventray-{config.name}", "eventray.actor": actor_id, "process.pid": os.getpid()}
            )
            self._provider = TracerProvider(resource=resource, sampler=TraceIdRatioBased(self._config.sampling_ratio))
            self._provider.add_span_processor(BatchSpanProcessor(_exporter(self._config)))
            self._tracer = self._provider.get_tracer("eventray")

    def new_contexts(self, events: pa.RecordBatch) -> pa.RecordBatch:
        """Events without a context get one when sampled (tracing on); the rest are unchanged."""
        if not self._config.enabled:
            return events
        index = events.schema.get_field_index("_traceparent")
        column = assign_new_contexts(events.column(index), self._config.sampling_ratio)
        return events.set_column(index, "_traceparent", column)

    @contextmanager
    def batch_span(
        self,
        name: str,
        traceparents: pa.Array,
        attributes: Mapping[str, str | int],
        parent: str | None = None,
    ) -> Iterator[BatchTrace]:
        """A CONSUMER span around one batch's work; yields its context (``traceparent`` None: not recorded).

        Its parent is ``parent`` (the upstream batch span handed over with the batch) or else the first sampled
        event's context, so the span continues that event's trace; the other sampled events are linked.
        """
        if self._tracer is None:
            yield BatchTrace(None, None)
            return
        contexts = sampled_contexts(traceparents, self._config.max_links + 1)
        upstream = parse_traceparent(parent)
        first = upstream if upstream is not None else (contexts[0] if contexts else None)
        linked = contexts if upstream is not None else contexts[1:]
        links = [Link(SpanContext(c.trace_id, c.span_id, is_remote=True, trace_flags=TraceFlags(1)))
                 for c in linked[: self._config.max_links]]  # fmt: skip
        context = _remote(first) if first is not None else None
        with self._tracer.start_as_current_span(
            name, context=context, kind=SpanKind.CONSUMER, links=links, attributes=dict(attributes)
        ) as span:
            span_context = span.get_span_context()
            recorded = format_traceparent(span_context.trace_id, span_context.span_id, True)
            if upstream is not None:
                continued: str | None = parent
            else:
                continued = None if first is None else format_traceparent(first.trace_id, first.span_id, True)
            yield BatchTrace(recorded if span.is_recording() else None, continued)

    @contextmanager
    def producer_span(self, topic: str, count: int) -> Iterator[None]:
        """A PRODUCER span around handing ``count`` records to the producer, child of the current batch span."""
        if self._tracer is None:
            yield
            return
        attributes: dict[str, str | int] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.destination.name": topic,
            "messaging.batch.message_count": count,
        }
        with self._tracer.start_as_current_span(f"send {topic}", kind=SpanKind.PRODUCER, attributes=attributes):
            yield

    def close(self) -> None:
        if self._provider is not None:
            self._provider.force_flush()
            self._provider.shutdown()
            self._provider = None
            self._tracer = None


@dataclass(frozen=True)
class BatchTrace:
    """A batch span's context, and the context it continued (the upstream batch span, or the first sampled
    event's)."""

    traceparent: str | None
    continued: str | None

    def carry(self, traceparents: pa.Array) -> pa.Array:
        """Rows of the continued event now carry the batch span's context, so the next stage (or the next
        pipeline, through the Kafka header) becomes its child; other rows keep theirs."""
        if self.traceparent is None or self.continued is None or len(traceparents) == 0:
            return traceparents
        same = pc.fill_null(pc.equal(traceparents, self.continued), False)
        return pc.if_else(same, pa.scalar(self.traceparent), traceparents)
