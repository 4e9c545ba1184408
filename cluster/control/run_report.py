"""What a run reports while it runs (:class:`RunProgress`) and when it ends (:class:`RunSummary`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import msgspec

from actors.reports import AggregateProgress, SourceProgress
from cluster.control.autoscaler import AutoscalePoint, Rescale
from pipelines.config.pipeline import ConsoleSinkConfig
from pipelines.state.checkpoint_store import RunCounts
from pipelines.windows.tumbling import WINDOW_START

__all__ = ["RunProgress", "RunSummary", "merge_previews", "summary_json"]


@dataclass(frozen=True)
class RunProgress:
    elapsed_s: float
    events_in: int
    events_out: int
    dead_lettered: int
    late_events: int
    windows_emitted: int
    lag_records: int
    sources_done: int
    sources: int
    aggregates: int
    dropped_intended: int = 0  # an upsert's stale versions, dedup's duplicates: dropped on purpose, written nowhere
    autoscale: AutoscalePoint | None = None  # the latest autoscaling tick, when runtime.autoscale is on

    @classmethod
    def of(cls, sources: list[SourceProgress], aggregates: list[AggregateProgress], elapsed_s: float) -> RunProgress:
        return cls(
            elapsed_s=elapsed_s,
            events_in=sum(source.events_in for source in sources),
            events_out=sum(source.events_out for source in sources),
            dead_lettered=sum(source.dead_lettered for source in sources),
            late_events=sum(aggregate.late_events for aggregate in aggregates),
            windows_emitted=sum(aggregate.windows_emitted for aggregate in aggregates),
            lag_records=sum(source.lag_records for source in sources),
            sources_done=sum(source.done for source in sources),
            sources=len(sources),
            aggregates=len(aggregates),
            dropped_intended=sum(aggregate.dropped_intended for aggregate in aggregates),
        )

    def counts(self) -> RunCounts:
        return RunCounts(self.events_in, self.events_out, self.dead_lettered, self.late_events,
                         self.windows_emitted, self.dropped_intended)  # fmt: skip

    def plus_counts(self, earlier: RunCounts | None) -> RunProgress:
        """These counters plus ``earlier``: what topologies this run replaced counted up to the checkpoint the
        current one started from (after a recovery or a rescale, actors count from that checkpoint on)."""
        if earlier is None:
            return self
        total = self.counts().plus(earlier)
        return replace(
            self,
            events_in=total.events_in,
            events_out=total.events_out,
            dead_lettered=total.dead_lettered,
            late_events=total.late_events,
            windows_emitted=total.windows_emitted,
            dropped_intended=total.dropped_intended,
        )

    @property
    def events_per_s(self) -> float:
        return self.events_in / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(frozen=True)
class RunSummary:
    pipeline: str
    progress: RunProgress
    stopped_early: bool
    preview: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    dead_letter_path: str = ""
    recoveries_s: list[float] = field(default_factory=list)  # one per actor death survived
    checkpoints: int = 0  # epochs completed
    resumed_from: int | None = None  # the checkpoint of an earlier, unfinished run this one resumed from
    reemitted_rows: int = 0  # exactly-once rows of an epoch whose commit a crash interrupted, written again
    autoscale_timeline: list[AutoscalePoint] = field(default_factory=list)
    rescales: list[Rescale] = field(default_factory=list)


def summary_json(summary: RunSummary) -> str:
    """``eventray run --json``: the whole summary as one JSON object (counts under ``progress``, with
    ``events_per_s``), for scripts."""
    data = msgspec.to_builtins(summary)
    data["progress"]["events_per_s"] = summary.progress.events_per_s
    return msgspec.json.encode(data).decode()


def merge_previews(aggregates: list[AggregateProgress], console: ConsoleSinkConfig | None) -> list[dict[str, Any]]:
    """The console sink's rows over all aggregate actors: ranked by ``sort_by`` (else latest first), top N."""
    if console is None:
        return []
    rows = [row for aggregate in aggregates for row in aggregate.preview]
    if console.sort_by is None:
        rows.sort(key=lambda row: row.get(WINDOW_START) or 0, reverse=True)
    else:
        sort_by = console.sort_by
        rows.sort(key=lambda row: (row[sort_by] is None, -(row[sort_by] or 0)))
    return rows[: console.top]
