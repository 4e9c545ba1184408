"""What `eventray run` shows a person: a live progress line and a final summary with the results table."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from cluster.control.run_report import RunProgress, RunSummary

__all__ = ["ProgressView", "print_summary"]

_PLAIN_EVERY_S = 5.0


def _progress_text(progress: RunProgress, rate: float) -> Text:
    text = Text()
    text.append(f"{progress.elapsed_s:6.1f}s ", style="dim")
    text.append(f"in {progress.events_in:,}", style="bold")
    text.append(f" ({rate:,.0f}/s)  lag {progress.lag_records:,}  ")
    text.append(f"dead-lettered {progress.dead_lettered + progress.late_events:,}  ", style="yellow")
    text.append(f"results {progress.windows_emitted:,}", style="green")
    return text


class ProgressView:
    """A live line on a terminal; a plain line every few seconds elsewhere (CI logs, pipes)."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._live: Live | None = None
        self._last: RunProgress | None = None
        self._last_plain = 0.0

    def __enter__(self) -> ProgressView:
        if self._console.is_terminal:
            self._live = Live(Text("starting actors..."), console=self._console, refresh_per_second=4)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def update(self, progress: RunProgress) -> None:
        rate = progress.events_per_s
        if self._last is not None and progress.elapsed_s > self._last.elapsed_s:
            rate = (progress.events_in - self._last.events_in) / (progress.elapsed_s - self._last.elapsed_s)
        self._last = progress
        text = _progress_text(progress, rate)
        if self._live is not None:
            self._live.update(text)
        elif time.monotonic() - self._last_plain >= _PLAIN_EVERY_S:
            self._last_plain = time.monotonic()
            self._console.print(text)


def _is_window_time(column: str) -> bool:
    return column.endswith("_ms") and column.startswith("window")


def _cell(column: str, value: Any) -> str:
    if value is None:
        return "-"
    if _is_window_time(column) and isinstance(value, int):
        return datetime.fromtimestamp(value / 1000, tz=timezone.utc).strftime("%H:%M:%S")
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_summary(console: Console, summary: RunSummary) -> None:
    if summary.preview:
        columns = [column for column in summary.preview[0] if not column.startswith("_")]
        times = " (window times in UTC)" if any(_is_window_time(column) for column in columns) else ""
        table = Table(title=f"{summary.pipeline}: top {len(summary.preview)} results{times}")
        for column in columns:
            table.add_column(column, justify="left" if column == columns[0] else "right")
        for row in summary.preview:
            table.add_row(*(_cell(column, row[column]) for column in columns))
        console.print(table)
    progress = summary.progress
    state = "stopped by Ctrl-C after finishing in-flight batches" if summary.stopped_early else "finished"
    console.print(f"[bold]{summary.pipeline}[/] {state} in {progress.elapsed_s:.1f} s")
    console.print(
        f"  events read      {progress.events_in:>12,}  ({progress.events_per_s:,.0f} events/s)\n"
        f"  after operators  {progress.events_out:>12,}\n"
        f"  results emitted  {progress.windows_emitted:>12,}  (windows, changelog, joined rows, events and replies)\n"
        f"  dead-lettered    {progress.dead_lettered:>12,}  invalid, with reasons\n"
        f"  late events      {progress.late_events:>12,}  (in the dead-letter output too)\n"
        f"  lag at the end   {progress.lag_records:>12,}"
    )
    if progress.dropped_intended:
        console.print(f"  dropped          {progress.dropped_intended:>12,}  stale versions or duplicates, on purpose")
    outputs = ", ".join(output for output in summary.outputs if output != "console")
    if outputs:
        console.print(f"  results in       {outputs}")
    console.print(f"  dead letters in  {summary.dead_letter_path}")
    if summary.checkpoints:
        notes = [f"{summary.checkpoints} epochs completed"]
        if summary.resumed_from is not None:
            notes.append(f"resumed from checkpoint {summary.resumed_from} of an earlier run")
        if summary.recoveries_s:
            notes.append(
                f"recovered from {len(summary.recoveries_s)} actor failures (slowest {max(summary.recoveries_s):.1f} s)"
            )
        console.print(f"  checkpoints      {'; '.join(notes)}")
