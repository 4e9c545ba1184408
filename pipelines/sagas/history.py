"""The lifecycle events of sagas folded back into each saga's story: what ``eventray saga show|list`` prints.

**In**: rows of a saga events topic (:mod:`pipelines.sagas.contract`, kind ``event``; a choreography monitor's
``SagaStuck`` and ``SagaRecovered`` too) as dicts, from whatever read them (a Kafka topic read committed, a JSONL
or Parquet sink), in any order, each possibly more than once.

**Out**: one :class:`SagaStory` per saga id (the value of the stage's ``key`` column, as text).

Guarantees of :func:`fold_stories`:

- a row is one event by (saga id, ``sequence``): a second copy (an at-least-once sink redelivers) is dropped and
  the first kept; a row without a sequence (not written by a saga stage) is one by its type, step, attempt and time;
- a story's events are in ``sequence`` order whatever order the rows came in; gaps between sequences are normal
  (the saga's commands take the numbers in between) and are not reported;
- rows of another kind (commands, dead letters) and rows without a saga id are ignored;
- a story's ``status`` is the ``status`` of its last event (the status after it), so a stuck saga a monitor later
  saw recover is no longer stuck.

The fold and the renderings are pure: no clock (``now_ms`` is passed in), no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from pipelines.sagas.contract import (
    ABORTED,
    COMPENSATED,
    COMPLETED,
    EVENT,
    SAGA_RECOVERED,
    SAGA_STARTED,
    SAGA_STUCK,
    STATUS_COMPLETED,
    STEP_COMPLETED,
    STEP_FAILED,
    TERMINAL_STATUSES,
)

__all__ = [
    "UNKNOWN_STATUS",
    "SagaStory",
    "StepFailure",
    "fold_stories",
    "format_duration",
    "select_stories",
    "stories_table",
    "story_dict",
    "story_lines",
    "trace_id_of",
]

Row = dict[str, Any]

#: the status of a story none of whose rows says one (not written by a saga stage)
UNKNOWN_STATUS = "unknown"

_ENDING_EVENTS = frozenset({COMPLETED, ABORTED, SAGA_STUCK})
_REASON_WIDTH = 60


@dataclass(frozen=True)
class StepFailure:
    """A ``StepFailed`` event: a failure reply, or a timeout (then ``deadline_ms`` is the deadline it fired for)."""

    step: str | None
    attempt: int | None
    reason: str | None
    time_ms: int | None
    deadline_ms: int | None


@dataclass(frozen=True)
class SagaStory:
    """One saga as its lifecycle events tell it. ``steps_completed`` and ``steps_compensated`` are in the order
    they happened (compensations newest step first, as the saga undoes them); ``attempts`` is the highest attempt
    seen per step; ``ended_ms`` is the time of the event that ended it (``Completed``, ``Aborted``, ``SagaStuck``)
    while its status is terminal, else None; ``started_ms`` the ``SagaStarted`` time, else the first event's (a
    monitor emits no start)."""

    saga_id: str
    saga: str | None
    status: str
    steps_completed: tuple[str, ...]
    steps_compensated: tuple[str, ...]
    attempts: Mapping[str, int]
    failures: tuple[StepFailure, ...]
    stuck_reason: str | None
    started_ms: int | None
    ended_ms: int | None
    trace_id: str | None
    events: tuple[Row, ...] = field(repr=False)

    @property
    def last_step(self) -> str | None:
        """The step of the newest event that names one."""
        return next((event["step"] for event in reversed(self.events) if event.get("step")), None)

    @property
    def last_time_ms(self) -> int | None:
        return next((event["time_ms"] for event in reversed(self.events) if event.get("time_ms") is not None), None)

    @property
    def duration_ms(self) -> int | None:
        """From start to end, for a saga that ended; None while it runs."""
        if self.started_ms is None or self.ended_ms is None:
            return None
        return max(0, self.ended_ms - self.started_ms)

    @property
    def reason(self) -> str | None:
        """Why it is where it is: the stuck reason, else (unless it completed) the newest reason an event gives
        (an abort's, a failure's)."""
        if self.stuck_reason is not None:
            return self.stuck_reason
        if self.status == STATUS_COMPLETED:
            return None
        return next((event["reason"] for event in reversed(self.events) if event.get("reason")), None)


def fold_stories(rows: Iterable[Mapping[str, Any]], key: str = "saga_id") -> dict[str, SagaStory]:
    """Each saga's story from its lifecycle event rows (``key``: the column of the saga id), by saga id."""
    by_saga: dict[str, dict[tuple[Any, ...], Row]] = {}
    for row in rows:
        saga_id = row.get(key)
        if saga_id is None or row.get("kind") not in {None, EVENT}:
            continue
        by_saga.setdefault(str(saga_id), {}).setdefault(_identity(row), dict(row))
    return {saga_id: _story(saga_id, sorted(events.values(), key=_order)) for saga_id, events in by_saga.items()}


def _identity(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """A redelivered row is the same row; a sequence number used again (a monitor's, once its state for the id
    was cleared; a saga id started again after its retention) with another event or time is another row."""
    return (row.get("sequence"), row.get("message_type"), row.get("step"), row.get("attempt"), row.get("time_ms"))


def _order(row: Mapping[str, Any]) -> tuple[bool, int, int]:
    """By the time it was decided, then its sequence (rows decided at one time, in the order decided); rows
    without a sequence (not written by a saga stage) last."""
    sequence, time_ms = row.get("sequence"), row.get("time_ms")
    return (sequence is None, int(time_ms or 0), int(sequence or 0))


def _story(saga_id: str, events: list[Row]) -> SagaStory:
    completed: list[str] = []
    compensated: list[str] = []
    attempts: dict[str, int] = {}
    failures: list[StepFailure] = []
    status, stuck_reason, started_ms, ended_ms = UNKNOWN_STATUS, None, None, None
    for event in events:
        kind, step, attempt = event.get("message_type"), event.get("step"), event.get("attempt")
        time_ms = event.get("time_ms")
        status = event.get("status") or status
        if step is not None and attempt is not None:
            attempts[step] = max(attempts.get(step, 0), int(attempt))
        if kind == SAGA_STARTED and started_ms is None:
            started_ms = time_ms
        elif kind == STEP_COMPLETED and step is not None and step not in completed:
            completed.append(step)
        elif kind == COMPENSATED and step is not None and step not in compensated:
            compensated.append(step)
        elif kind == STEP_FAILED:
            failures.append(StepFailure(step, attempt, event.get("reason"), time_ms, event.get("deadline_ms")))
        elif kind == SAGA_STUCK:
            stuck_reason = event.get("reason") or "(no reason given)"
        elif kind == SAGA_RECOVERED:
            stuck_reason = None
        if kind in _ENDING_EVENTS:
            ended_ms = time_ms
    first_ms = next((event["time_ms"] for event in events if event.get("time_ms") is not None), None)
    return SagaStory(
        saga_id=saga_id,
        saga=next((event["saga"] for event in events if event.get("saga")), None),
        status=status,
        steps_completed=tuple(completed),
        steps_compensated=tuple(compensated),
        attempts=attempts,
        failures=tuple(failures),
        stuck_reason=stuck_reason,
        started_ms=started_ms if started_ms is not None else first_ms,
        ended_ms=ended_ms if status in TERMINAL_STATUSES else None,
        trace_id=next((t for t in (trace_id_of(e.get("_traceparent")) for e in events) if t), None),
        events=tuple(events),
    )


def trace_id_of(traceparent: object) -> str | None:
    """The trace id of a W3C ``traceparent`` (``00-<32 hex>-<16 hex>-<2 hex>``); None for anything else."""
    if not isinstance(traceparent, str):
        return None
    parts = traceparent.strip().split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or set(parts[1]) - set("0123456789abcdef") or not parts[1].strip("0"):
        return None
    return parts[1]


def select_stories(stories: Iterable[SagaStory], status: str | None = None) -> list[SagaStory]:
    """The stories with ``status`` (None: any), newest start first (ties by saga id)."""
    chosen = [story for story in stories if status is None or story.status == status]
    chosen.sort(key=lambda story: story.saga_id)
    chosen.sort(key=lambda story: story.started_ms if story.started_ms is not None else -1, reverse=True)
    return chosen


# --- rendering ------------------------------------------------------------------------------------------------


def format_duration(ms: int) -> str:
    """``850 ms``, ``12.3 s``, ``4 min 5 s``, ``2 h 3 min``, ``3 d 4 h`` (a negative one, from clock skew, is 0)."""
    ms = max(0, ms)
    if ms < 1_000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1_000:.1f} s"
    seconds = ms // 1_000
    if seconds < 3_600:
        return f"{seconds // 60} min {seconds % 60} s"
    if seconds < 86_400:
        return f"{seconds // 3_600} h {seconds % 3_600 // 60} min"
    return f"{seconds // 86_400} d {seconds % 86_400 // 3_600} h"


def _iso(time_ms: int | None) -> str:
    if time_ms is None:
        return "-"
    return datetime.fromtimestamp(time_ms / 1000, timezone.utc).isoformat(timespec="milliseconds")


def story_lines(story: SagaStory) -> list[str]:
    """One saga as a timeline: a header, then one line per event (sequence, time since the start, type, step
    and attempt, status after it, reason), then what was completed, compensated and retried."""
    took = "" if story.duration_ms is None else f" after {format_duration(story.duration_ms)}"
    lines = [f"saga {story.saga_id} ({story.saga or 'unnamed'}): {story.status}{took}"]
    lines.append(f"  started  {_iso(story.started_ms)}")
    if story.trace_id is not None:
        lines.append(f"  trace    {story.trace_id}  (eventray trace {story.trace_id})")
    lines.append("")
    lines += [_event_line(event, story.started_ms) for event in story.events]
    lines.append("")
    lines.append(f"  completed    {', '.join(story.steps_completed) or '-'}")
    if story.steps_compensated:
        lines.append(f"  compensated  {', '.join(story.steps_compensated)}")
    retried = {step: attempts for step, attempts in story.attempts.items() if attempts > 1}
    if retried:
        lines.append("  attempts     " + ", ".join(f"{step} x{attempts}" for step, attempts in retried.items()))
    if story.stuck_reason is not None:
        lines.append(f"  stuck        {story.stuck_reason}")
    return lines


def _event_line(event: Mapping[str, Any], started_ms: int | None) -> str:
    sequence = event.get("sequence")
    time_ms = event.get("time_ms")
    since = "" if time_ms is None or started_ms is None else f"+{format_duration(time_ms - started_ms)}"
    what = event.get("step") or ""
    if event.get("attempt") is not None and what:
        what += f" (attempt {event['attempt']})"
    number = "?" if sequence is None else str(sequence)
    kind = event.get("message_type") or "?"
    line = f"  #{number:<5} {since:>11}  {kind:<14} {what:<28} -> {event.get('status') or '?'}"
    if event.get("reason"):
        line += f"  {event['reason']}"
    if event.get("deadline_ms") is not None:
        line += f"  (deadline {_iso(event['deadline_ms'])})"
    return line.rstrip()


def stories_table(stories: Sequence[SagaStory], now_ms: int) -> list[str]:
    """Many sagas, one line each: saga id, status, last step, duration (ended) or age (open), reason."""
    header = ("SAGA ID", "STATUS", "LAST STEP", "AGE/DURATION", "REASON")
    rows = [header] + [
        (story.saga_id, story.status, story.last_step or "-", _age_or_duration(story, now_ms), _short(story.reason))
        for story in stories
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header) - 1)]
    return [
        "  ".join([*(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)), row[-1]]).rstrip()
        for row in rows
    ]


def _age_or_duration(story: SagaStory, now_ms: int) -> str:
    if story.duration_ms is not None:
        return f"took {format_duration(story.duration_ms)}"
    if story.started_ms is None:
        return "-"
    return f"age {format_duration(now_ms - story.started_ms)}"


def _short(reason: str | None) -> str:
    if not reason:
        return "-"
    reason = " ".join(reason.split())
    return reason if len(reason) <= _REASON_WIDTH else reason[: _REASON_WIDTH - 3] + "..."


def story_dict(story: SagaStory, with_events: bool = True) -> dict[str, Any]:
    """The story as JSON-ready values (the events as read, in sequence order, when ``with_events``)."""
    answer: dict[str, Any] = {
        "saga_id": story.saga_id,
        "saga": story.saga,
        "status": story.status,
        "last_step": story.last_step,
        "steps_completed": list(story.steps_completed),
        "steps_compensated": list(story.steps_compensated),
        "attempts": dict(story.attempts),
        "failures": [asdict(failure) for failure in story.failures],
        "stuck_reason": story.stuck_reason,
        "reason": story.reason,
        "started_ms": story.started_ms,
        "ended_ms": story.ended_ms,
        "duration_ms": story.duration_ms,
        "trace_id": story.trace_id,
    }
    if with_events:
        answer["events"] = list(story.events)
    return answer
