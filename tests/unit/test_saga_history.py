"""Folding saga lifecycle events into stories (pipelines/sagas/history.py): redelivered and shuffled rows tell
the same story; compensations in the order they ran; stuck, recovered (a monitor's rows), and the renderings."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from pipelines.sagas.contract import saga_output_schema
from pipelines.sagas.history import (
    UNKNOWN_STATUS,
    SagaStory,
    StepFailure,
    fold_stories,
    format_duration,
    select_stories,
    stories_table,
    story_dict,
    story_lines,
    trace_id_of,
)

Row = dict[str, Any]

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


def row(saga_id: Any, sequence: int | None, message_type: str, status: str, **fields: Any) -> Row:
    """A row of a saga stage's output (kind event unless told), every column of the contract's schema."""
    base: Row = dict.fromkeys(saga_output_schema("saga_id").names)
    time_ms = START_MS + 100 * (sequence or 0)
    written = {"topic": "saga-events", "kind": "event", "saga_id": saga_id, "saga": "order", "status": status,
               "message_type": message_type, "sequence": sequence, "time_ms": time_ms, "_timestamp": time_ms,
               "_traceparent": TRACEPARENT}  # fmt: skip
    return {**base, **written, **fields}


def command(saga_id: str, sequence: int, step: str, attempt: int = 1) -> Row:
    return row(saga_id, sequence, "ChargeCard", "running", kind="command", topic="payments", step=step,
               attempt=attempt, command_id=f"{saga_id}:{step}:{attempt}")  # fmt: skip


def aborted(saga_id: str = "s-1") -> list[Row]:
    """reserve completes; charge times out, is retried and declined: charge (it may have been applied) and reserve
    are compensated, newest first. Commands interleave, so the events' sequences have gaps."""
    return [
        row(saga_id, 1, "SagaStarted", "running"),
        command(saga_id, 2, "reserve"),
        row(saga_id, 3, "StepCompleted", "running", step="reserve", attempt=1),
        command(saga_id, 4, "charge"),
        row(
            saga_id, 5, "StepFailed", "running", step="charge", attempt=1, reason="timeout", deadline_ms=START_MS + 450
        ),
        row(saga_id, 6, "StepRetried", "running", step="charge", attempt=2),
        command(saga_id, 7, "charge", attempt=2),
        row(saga_id, 8, "StepFailed", "compensating", step="charge", attempt=2, reason="card declined"),
        row(saga_id, 9, "Compensating", "compensating"),
        command(saga_id, 10, "charge.compensate"),
        row(saga_id, 11, "Compensated", "compensating", step="charge", attempt=1),
        command(saga_id, 12, "reserve.compensate"),
        row(saga_id, 13, "Compensated", "compensating", step="reserve", attempt=1),
        row(saga_id, 14, "Aborted", "aborted", reason="charge: card declined"),
    ]


def completed(saga_id: str = "s-2", start: int = 1) -> list[Row]:
    steps = ("reserve", "charge", "ship")
    rows = [row(saga_id, start, "SagaStarted", "running")]
    rows += [
        row(saga_id, start + 2 * (i + 1), "StepCompleted", "running", step=s, attempt=1) for i, s in enumerate(steps)
    ]
    return [*rows, row(saga_id, start + 8, "Completed", "completed")]


def stuck(saga_id: str = "s-3") -> list[Row]:
    return [
        row(saga_id, 1, "SagaStarted", "running"),
        row(saga_id, 3, "StepCompleted", "running", step="charge", attempt=1),
        row(saga_id, 5, "StepFailed", "running", step="ship", attempt=3, reason="timeout"),
        row(saga_id, 6, "SagaStuck", "stuck", step="ship", attempt=3, reason="ship: no reply after 3 attempts"),
    ]


def test_the_rows_here_are_the_contract_rows() -> None:
    assert all(set(r) == set(saga_output_schema("saga_id").names) for r in aborted())


def test_an_aborted_saga_tells_its_compensations_newest_first() -> None:
    story = fold_stories(aborted())["s-1"]
    assert story.status == "aborted" and story.saga == "order"
    assert story.steps_completed == ("reserve",)
    assert story.steps_compensated == ("charge", "reserve")
    assert dict(story.attempts) == {"reserve": 1, "charge": 2}
    assert story.failures == (
        StepFailure("charge", 1, "timeout", START_MS + 500, START_MS + 450),
        StepFailure("charge", 2, "card declined", START_MS + 800, None),
    )
    assert [event["sequence"] for event in story.events] == [1, 3, 5, 6, 8, 9, 11, 13, 14]  # commands left out
    assert (story.started_ms, story.ended_ms, story.duration_ms) == (START_MS + 100, START_MS + 1400, 1300)
    assert story.trace_id == TRACE and story.stuck_reason is None
    assert story.last_step == "reserve" and story.reason == "charge: card declined"  # the abort's


def test_redelivered_and_shuffled_rows_tell_the_same_stories() -> None:
    rows = aborted() + completed() + stuck()
    expected = fold_stories(rows)
    generator = random.Random(7)
    for _ in range(20):
        delivered = rows + generator.sample(rows, k=len(rows) // 2)  # an at-least-once sink redelivers
        generator.shuffle(delivered)
        assert fold_stories(delivered) == expected


def test_a_redelivery_keeps_the_first_copy_of_a_sequence() -> None:
    rows = completed()
    changed = {**rows[-1], "reason": "second copy"}
    story = fold_stories([*rows, changed])["s-2"]
    assert len(story.events) == len(rows) and story.events[-1]["reason"] is None


def test_rows_without_sequence_are_one_by_content_and_go_last() -> None:
    rows = [row("x", None, "SagaStuck", "stuck", reason="no reply")] * 2 + [row("x", 4, "SagaStarted", "running")]
    story = fold_stories(rows)["x"]
    assert [event["message_type"] for event in story.events] == ["SagaStarted", "SagaStuck"]
    assert story.status == "stuck"


def test_completed_and_stuck_sagas() -> None:
    stories = fold_stories(completed() + stuck())
    done, parked = stories["s-2"], stories["s-3"]
    assert done.status == "completed" and done.steps_completed == ("reserve", "charge", "ship")
    assert done.reason is None and done.ended_ms == START_MS + 900 and done.last_step == "ship"
    assert parked.status == "stuck" and parked.stuck_reason == "ship: no reply after 3 attempts"
    assert parked.reason == parked.stuck_reason and parked.ended_ms == START_MS + 600
    assert parked.steps_compensated == () and parked.attempts == {"charge": 1, "ship": 3}


def test_a_running_saga_has_no_end() -> None:
    story = fold_stories(aborted()[:8])["s-1"]
    assert story.status == "compensating" and story.ended_ms is None and story.duration_ms is None


def test_a_monitor_saga_stuck_then_recovered() -> None:
    def monitor_row(sequence: int, message_type: str, status: str, reason: str | None = None) -> Row:
        fields = row(None, sequence, message_type, status, saga="choreography", reason=reason, _traceparent=None)
        del fields["saga_id"]
        return {**fields, "order_id": "o-9"}

    rows = [monitor_row(1, "SagaStuck", "stuck", "OrderPlaced: no PaymentTaken within 60000 ms")]
    parked = fold_stories(rows, key="order_id")["o-9"]
    assert parked.status == "stuck" and parked.stuck_reason == "OrderPlaced: no PaymentTaken within 60000 ms"
    assert parked.started_ms == START_MS + 100  # no SagaStarted: the first event's time
    assert parked.saga == "choreography" and parked.trace_id is None
    recovered = fold_stories([*rows, monitor_row(2, "SagaRecovered", "running")], key="order_id")["o-9"]
    assert recovered.status == "running" and recovered.stuck_reason is None and recovered.ended_ms is None


def test_ids_as_text_other_kinds_and_rows_without_id_are_left_out() -> None:
    rows = [row(17, 1, "SagaStarted", "running"), row(None, 2, "SagaStarted", "running"),
            row("s-4", 1, "SagaStuck", "stuck", kind="dead_letter", topic="saga-stuck")]  # fmt: skip
    assert list(fold_stories(rows)) == ["17"]


def test_a_story_without_statuses_is_unknown() -> None:
    story = fold_stories([row("z", 1, "SagaStarted", None)])["z"]  # type: ignore[arg-type]
    assert story.status == UNKNOWN_STATUS


@pytest.mark.parametrize(
    ("traceparent", "trace_id"),
    [
        (TRACEPARENT, TRACE),
        (None, None),
        ("garbage", None),
        (f"00-{'0' * 32}-00f067aa0ba902b7-01", None),
        (f"00-{TRACE.upper()}-00f067aa0ba902b7-01", None),
        (12, None),
    ],
)
def test_trace_id_of(traceparent: object, trace_id: str | None) -> None:
    assert trace_id_of(traceparent) == trace_id


def test_select_stories_by_status_newest_first() -> None:
    stories = fold_stories(aborted() + completed("s-2", start=20) + completed("s-5", start=20) + stuck())
    assert [s.saga_id for s in select_stories(stories.values())] == ["s-2", "s-5", "s-1", "s-3"]
    assert [s.saga_id for s in select_stories(stories.values(), "completed")] == ["s-2", "s-5"]
    assert select_stories(stories.values(), "running") == []


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (-5, "0 ms"),
        (850, "850 ms"),
        (12_345, "12.3 s"),
        (245_000, "4 min 5 s"),
        (7_380_000, "2 h 3 min"),
        (3 * 86_400_000 + 4 * 3_600_000, "3 d 4 h"),
    ],
)
def test_format_duration(ms: int, text: str) -> None:
    assert format_duration(ms) == text


def test_the_timeline_of_one_saga() -> None:
    lines = story_lines(fold_stories(aborted())["s-1"])
    assert lines[0] == "saga s-1 (order): aborted after 1.3 s"
    assert lines[1] == "  started  2026-01-01T00:00:00.100+00:00"
    assert lines[2] == f"  trace    {TRACE}  (eventray trace {TRACE})"
    events = [line for line in lines if line.startswith("  #")]
    assert [line.split()[0] for line in events] == ["#1", "#3", "#5", "#6", "#8", "#9", "#11", "#13", "#14"]
    failed = events[2]
    assert "+400 ms" in failed and "StepFailed" in failed and "charge (attempt 1)" in failed
    assert failed.endswith("-> running  timeout  (deadline 2026-01-01T00:00:00.450+00:00)")
    assert "  completed    reserve" in lines and "  compensated  charge, reserve" in lines
    assert "  attempts     charge x2" in lines


def test_the_timeline_of_a_stuck_saga_says_why() -> None:
    lines = story_lines(fold_stories(stuck())["s-3"])
    assert (
        lines[0] == "saga s-3 (order): stuck after 500 ms"
        and lines[-1] == "  stuck        ship: no reply after 3 attempts"
    )


def test_the_table_of_many_sagas() -> None:
    stories = fold_stories(aborted() + completed() + stuck() + aborted("s-6")[:4] + aborted("s-8")[:5])
    long_reason = row("s-7", 1, "SagaStuck", "stuck", reason="x " * 100)
    chosen = select_stories([*stories.values(), *fold_stories([long_reason]).values()])
    lines = stories_table(chosen, now_ms=START_MS + 60_000)
    assert lines[0].split() == ["SAGA", "ID", "STATUS", "LAST", "STEP", "AGE/DURATION", "REASON"]
    by_id = {line.split()[0]: line for line in lines[1:]}
    assert by_id["s-6"].split()[1:] == ["running", "reserve", "age", "59.9", "s", "-"]
    assert by_id["s-8"].split()[1:] == ["running", "charge", "age", "59.9", "s", "timeout"]  # why it waits
    assert by_id["s-1"].split()[1:5] == ["aborted", "reserve", "took", "1.3"]
    assert by_id["s-1"].split()[6:] == ["charge:", "card", "declined"]  # the abort's reason
    assert by_id["s-3"].endswith("ship: no reply after 3 attempts")
    assert by_id["s-7"].endswith("...") and len(by_id["s-7"].split("took 0 ms")[1].strip()) == 60
    status_at = lines[0].index("STATUS")
    assert all(line[status_at - 2 : status_at] == "  " and line[status_at] != " " for line in lines)


def test_story_dict_is_json() -> None:
    story: SagaStory = fold_stories(aborted())["s-1"]
    answer = json.loads(json.dumps(story_dict(story)))
    assert answer["status"] == "aborted" and answer["steps_compensated"] == ["charge", "reserve"]
    assert answer["failures"][1] == {"step": "charge", "attempt": 2, "reason": "card declined",
                                     "time_ms": START_MS + 800, "deadline_ms": None}  # fmt: skip
    assert answer["duration_ms"] == 1300 and len(answer["events"]) == 9
    assert "events" not in story_dict(story, with_events=False)
