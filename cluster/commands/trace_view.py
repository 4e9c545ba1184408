"""`eventray trace TRACE_ID`: an event's path through processes, actors and stages, from exported spans.

Reads the JSONL span files of the embedded default's exporter (``tracing.jsonl_path``, ``out/traces``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.tree import Tree

from pipelines.errors import ConfigError

__all__ = ["SpanRecord", "load_trace", "trace_tree"]


@dataclass(frozen=True)
class SpanRecord:
    span_id: str
    parent_span_id: str | None
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    linked_traces: int


def load_trace(directory: Path, trace_id: str) -> list[SpanRecord]:
    """Every span of ``trace_id`` in ``directory``'s ``spans-*.jsonl`` files, in start order."""
    files = sorted(directory.glob("spans-*.jsonl"))
    if not files:
        raise ConfigError(f"no span files (spans-*.jsonl) in {directory}: run a pipeline with tracing.enabled: true")
    wanted = trace_id.lower()
    spans = []
    for file in files:
        for line in file.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if record["trace_id"] == wanted:
                spans.append(
                    SpanRecord(
                        span_id=record["span_id"],
                        parent_span_id=record["parent_span_id"],
                        name=record["name"],
                        start_ns=record["start_ns"],
                        end_ns=record["end_ns"],
                        attributes=record["attributes"],
                        resource=record["resource"],
                        linked_traces=len(record["links"]),
                    )
                )
    return sorted(spans, key=lambda span: span.start_ns)


def _label(span: SpanRecord) -> str:
    duration_ms = (span.end_ns - span.start_ns) / 1e6
    where = f"{span.resource.get('eventray.actor', '?')} pid {span.resource.get('process.pid', '?')}"
    details = (
        [f"{span.attributes['messaging.batch.message_count']} events"]
        if "messaging.batch.message_count" in (span.attributes)
        else []
    )
    if "messaging.destination.partition.id" in span.attributes:
        details.append(f"partition {span.attributes['messaging.destination.partition.id']}")
    if span.linked_traces:
        details.append(f"{span.linked_traces} linked")
    stage = span.attributes.get("eventray.stage", "")
    pipeline = span.attributes.get("eventray.pipeline", "")
    return f"[bold]{span.name}[/] {pipeline}/{stage} [dim]{where}[/] {duration_ms:.1f} ms ({', '.join(details)})"


def trace_tree(trace_id: str, spans: list[SpanRecord]) -> Tree:
    """Spans as a tree by parent; spans whose parent is outside the files (the producer's) are roots."""
    tree = Tree(f"trace {trace_id}: {len(spans)} spans in {len({s.resource.get('process.pid') for s in spans})} "
                "processes")  # fmt: skip
    nodes: dict[str, Tree] = {}
    known = {span.span_id for span in spans}
    for span in spans:
        parent = nodes.get(span.parent_span_id or "") if span.parent_span_id in known else tree
        nodes[span.span_id] = (parent or tree).add(_label(span))
    return tree
