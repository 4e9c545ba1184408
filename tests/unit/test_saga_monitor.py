"""Choreography monitor: waits, answers in and out of order, SagaStuck and SagaRecovered rows, bounded state,
restore, against a reference."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.config.saga import Expectation, SagaMonitorConfig
from pipelines.eventtime.watermarks import END_OF_TIME_MS, NO_WATERMARK
from pipelines.sagas.contract import saga_output_schema
from pipelines.sagas.monitor import ChoreographyMonitor
from pipelines.state.keyed_operator import StateFormatError
from pipelines.state.process_function import KeyedProcess

WITHIN_MS = 60_000
PAYMENT = Expectation(after="OrderPlaced", then=["PaymentProcessed", "PaymentFailed"], within_ms=WITHIN_MS)
SHIPMENT = Expectation(after="PaymentProcessed", then=["OrderShipped"], within_ms=30_000)
CONFIG = SagaMonitorConfig(key="order_id", expect=[PAYMENT])
STEP = "PaymentProcessed|PaymentFailed"

Event = tuple[Any, str | None, int | None]  # order id, event type, event time


def trace(order_id: Any, kind: str | None, time_ms: int | None) -> str:
    return f"00-{order_id}-{kind}-{time_ms}-01"


def batch(*events: Event, traces: bool = True, key_type: pa.DataType | None = None) -> pa.RecordBatch:
    columns = {
        "order_id": pa.array([event[0] for event in events], key_type or pa.string()),
        "event_type": pa.array([event[1] for event in events], pa.string()),
        "_timestamp": pa.array([event[2] for event in events], pa.int64()),
    }
    if traces:
        columns["_traceparent"] = pa.array([trace(*event) for event in events], pa.string())
    return pa.record_batch(columns)


def monitor(config: SagaMonitorConfig = CONFIG) -> KeyedProcess:
    return KeyedProcess(config.key, ChoreographyMonitor(config))


def added(operator: KeyedProcess, *events: Event) -> list[dict[str, Any]]:
    return rows_of(operator.add(batch(*events)).output)


def rows_of(table: pa.Table | None) -> list[dict[str, Any]]:
    return [] if table is None else table.to_pylist()


def brief(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str, int, int]]:
    """(order id, message type, deadline, sequence) of each row."""
    return [(row["order_id"], row["message_type"], row["deadline_ms"], row["sequence"]) for row in rows]


def stuck_row(
    order_id: str, after_ms: int, watermark_ms: int, sequence: int = 1, expectation: Expectation = PAYMENT
) -> dict[str, Any]:
    deadline_ms = after_ms + expectation.within_ms
    return {
        "topic": "saga-events",
        "kind": "event",
        "order_id": order_id,
        "saga": "choreography",
        "message_type": "SagaStuck",
        "command_id": None,
        "step": "|".join(expectation.then),
        "attempt": None,
        "status": "stuck",
        "reason": (
            f"expected {' or '.join(expectation.then)} within {expectation.within_ms} ms of {expectation.after} at "
            f"{after_ms}; none had arrived when the watermark passed {deadline_ms}"
        ),
        "payload": None,
        "idempotency_key": None,
        "reply_to": None,
        "deadline_ms": deadline_ms,
        "sequence": sequence,
        "time_ms": watermark_ms,
        "_traceparent": trace(order_id, expectation.after, after_ms),
        "_timestamp": deadline_ms,
    }


# --- the example, row by row ---------------------------------------------------------------------------------


def test_an_unanswered_after_is_reported_stuck_once_when_the_watermark_passes_its_deadline() -> None:
    operator = monitor()
    assert operator.output_schema == saga_output_schema("order_id")
    assert added(operator, ("o-1", "OrderPlaced", 1_000)) == []
    assert operator.state_rows == 2  # the wait and its deadline timer
    assert operator.advance(60_999) is None
    out = operator.advance(61_500)
    assert out is not None and out.schema == saga_output_schema("order_id")
    assert out.to_pylist() == [
        {
            "topic": "saga-events",
            "kind": "event",
            "order_id": "o-1",
            "saga": "choreography",
            "message_type": "SagaStuck",
            "command_id": None,
            "step": "PaymentProcessed|PaymentFailed",
            "attempt": None,
            "status": "stuck",
            "reason": (
                "expected PaymentProcessed or PaymentFailed within 60000 ms of OrderPlaced at 1000; none had "
                "arrived when the watermark passed 61000"
            ),
            "payload": None,
            "idempotency_key": None,
            "reply_to": None,
            "deadline_ms": 61_000,
            "sequence": 1,
            "time_ms": 61_500,
            "_traceparent": "00-o-1-OrderPlaced-1000-01",
            "_timestamp": 61_000,
        }
    ]
    assert operator.state_rows == 2  # kept, stuck, to report a late answer
    assert operator.advance(120_999) is None  # reported once
    assert operator.state_rows == 2
    assert operator.advance(121_000) is None  # forgotten one more within_ms after its deadline
    assert operator.state_rows == 0


def test_any_awaited_type_in_time_ends_the_wait_and_state_is_dropped_once_it_can_no_longer_matter() -> None:
    for answer in ("PaymentProcessed", "PaymentFailed"):
        operator = monitor()
        added(operator, ("o-1", "OrderPlaced", 1_000))
        assert added(operator, ("o-1", answer, 30_000)) == []
        assert operator.state_rows == 2  # no wait; the answer, remembered, and the timer that forgets it
        assert operator.advance(89_999) is None
        assert operator.state_rows == 2
        assert operator.advance(90_000) is None  # the answer's time + within_ms: nothing can use it any more
        assert operator.state_rows == 0
        assert operator.flush() is None


def test_a_then_arriving_after_its_after_ends_the_wait_whatever_its_event_time() -> None:
    operator = monitor()
    added(operator, ("o-1", "OrderPlaced", 10_000))
    assert added(operator, ("o-1", "PaymentProcessed", 9_000)) == []  # a producer's clock behind: still the answer
    assert operator.flush() is None
    assert operator.state_rows == 0


def test_rows_of_other_types_change_nothing() -> None:
    operator = monitor()
    assert added(operator, ("o-1", "CustomerRegistered", 1_000), ("o-2", "PaymentRefunded", 1_000)) == []
    assert operator.state_rows == 0
    added(operator, ("o-1", "OrderPlaced", 1_000))
    added(operator, ("o-1", "OrderViewed", 2_000))
    assert brief(rows_of(operator.advance(61_000))) == [("o-1", "SagaStuck", 61_000, 1)]


# --- out of order ----------------------------------------------------------------------------------------------


def test_a_then_that_arrives_before_its_after_answers_it_when_not_earlier_in_event_time() -> None:
    operator = monitor()
    added(operator, ("o-1", "PaymentProcessed", 5_000))
    assert operator.state_rows == 2
    assert added(operator, ("o-1", "OrderPlaced", 5_000)) == []  # same event time: answered
    assert added(operator, ("o-1", "OrderPlaced", 4_000)) == []  # earlier: answered
    assert operator.state_rows == 2  # no wait opened
    assert operator.flush() is None
    assert operator.state_rows == 0


def test_a_then_earlier_in_event_time_and_arrival_does_not_answer_a_later_after() -> None:
    operator = monitor()
    added(operator, ("o-1", "PaymentProcessed", 5_000))  # e.g. the answer to an earlier OrderPlaced
    added(operator, ("o-1", "OrderPlaced", 5_001))
    assert rows_of(operator.advance(65_001)) == [stuck_row("o-1", 5_001, 65_001)]


def test_then_before_after_in_one_batch_and_after_then_in_one_batch() -> None:
    operator = monitor()
    assert added(operator, ("a", "PaymentFailed", 2_000), ("a", "OrderPlaced", 1_000)) == []
    assert added(operator, ("b", "OrderPlaced", 1_000), ("b", "PaymentFailed", 500)) == []
    assert added(operator, ("c", "PaymentFailed", 500), ("c", "OrderPlaced", 1_000)) == []
    assert rows_of(operator.flush()) == [stuck_row("c", 1_000, END_OF_TIME_MS)]
    assert operator.state_rows == 0


def test_a_late_after_opens_a_wait_while_its_deadline_is_ahead_of_the_watermark() -> None:
    operator = monitor()
    operator.advance(50_000)
    assert added(operator, ("o-1", "OrderPlaced", 10_000)) == []  # behind the watermark, deadline 70_000 ahead
    assert rows_of(operator.advance(70_000)) == [stuck_row("o-1", 10_000, 70_000)]


def test_an_after_whose_deadline_has_passed_when_it_arrives_is_dropped_not_reported() -> None:
    operator = monitor()
    operator.advance(200_000)
    assert added(operator, ("o-1", "OrderPlaced", 140_000)) == []  # deadline 200_000: at the watermark
    assert operator.state_rows == 0
    assert operator.flush() is None


def test_a_remembered_then_is_forgotten_only_once_no_after_it_answers_can_open_a_wait() -> None:
    operator = monitor()
    added(operator, ("o-1", "PaymentProcessed", 10_000))
    operator.advance(69_999)
    assert added(operator, ("o-1", "OrderPlaced", 10_000)) == []  # deadline 70_000 still ahead: answered
    assert operator.advance(70_000) is None
    assert operator.state_rows == 0
    assert added(operator, ("o-1", "OrderPlaced", 10_000)) == []  # too late to judge: dropped, not a false alarm
    assert added(operator, ("o-1", "PaymentProcessed", 9_000)) == []  # too old to answer anything: not kept
    assert operator.state_rows == 0
    assert operator.flush() is None


def test_a_redelivered_after_is_one_wait_and_does_not_reopen_an_answered_one() -> None:
    operator = monitor()
    added(operator, ("o-1", "OrderPlaced", 1_000), ("o-1", "OrderPlaced", 1_000))
    assert brief(rows_of(operator.advance(61_000))) == [("o-1", "SagaStuck", 61_000, 1)]

    operator = monitor()
    added(operator, ("o-1", "OrderPlaced", 10_000))
    added(operator, ("o-1", "PaymentProcessed", 9_000))  # answers it despite the earlier event time
    assert added(operator, ("o-1", "OrderPlaced", 10_000)) == []  # the same OrderPlaced again
    assert operator.flush() is None


def test_afters_at_different_event_times_wait_each_and_one_then_ends_them_all() -> None:
    operator = monitor()
    added(operator, ("o-1", "OrderPlaced", 1_000), ("o-1", "OrderPlaced", 2_000))
    assert brief(rows_of(operator.advance(61_000))) == [("o-1", "SagaStuck", 61_000, 1)]
    assert brief(rows_of(operator.advance(62_000))) == [("o-1", "SagaStuck", 62_000, 2)]

    operator = monitor()
    added(operator, ("o-1", "OrderPlaced", 2_000), ("o-1", "OrderPlaced", 1_000))
    assert rows_of(operator.advance(62_000)) == [
        stuck_row("o-1", 1_000, 62_000, sequence=1),
        stuck_row("o-1", 2_000, 62_000, sequence=2),
    ]  # deadline order, not arrival order
    out = added(operator, ("o-1", "PaymentProcessed", 70_000))
    assert brief(out) == [("o-1", "SagaRecovered", 62_000, 3), ("o-1", "SagaRecovered", 61_000, 4)]  # waits' order
    assert operator.flush() is None


# --- SagaRecovered ---------------------------------------------------------------------------------------------


def test_a_then_after_the_stuck_report_emits_saga_recovered() -> None:
    operator = monitor()
    added(operator, ("o-1", "OrderPlaced", 1_000))
    operator.advance(61_000)
    assert added(operator, ("o-1", "PaymentFailed", 75_000)) == [
        {
            "topic": "saga-events",
            "kind": "event",
            "order_id": "o-1",
            "saga": "choreography",
            "message_type": "SagaRecovered",
            "command_id": None,
            "step": STEP,
            "attempt": None,
            "status": "running",
            "reason": (
                "PaymentFailed arrived late (at 75000) for OrderPlaced at 1000, after the wait was reported stuck "
                "at its deadline 61000; the wait is over"
            ),
            "payload": None,
            "idempotency_key": None,
            "reply_to": None,
            "deadline_ms": 61_000,
            "sequence": 2,
            "time_ms": 61_000,
            "_traceparent": "00-o-1-OrderPlaced-1000-01",
            "_timestamp": 75_000,
        }
    ]
    assert added(operator, ("o-1", "PaymentProcessed", 76_000)) == []  # recovered once
    assert operator.flush() is None
    assert operator.state_rows == 0


def test_saga_recovered_never_sorts_before_its_stuck_row_and_takes_a_then_without_event_time() -> None:
    operator = monitor()
    added(operator, ("o-1", "OrderPlaced", 1_000), ("o-2", "OrderPlaced", 1_000))
    operator.advance(61_000)
    (early,) = added(operator, ("o-1", "PaymentProcessed", 30_000))  # arrived late, stamped before the deadline
    assert (early["_timestamp"], early["reason"]) == (
        61_000,
        "PaymentProcessed arrived late (at 30000) for OrderPlaced at 1000, after the wait was reported stuck at its "
        "deadline 61000; the wait is over",
    )
    (untimed,) = added(operator, ("o-2", "PaymentProcessed", None))
    assert (untimed["_timestamp"], untimed["message_type"]) == (61_000, "SagaRecovered")
    assert "(with no event time)" in untimed["reason"]
    assert operator.state_rows == 2  # o-1's answer of 30_000 is remembered until 90_000; o-2's has no time
    operator.advance(90_000)
    assert operator.state_rows == 0


def test_a_stuck_wait_is_watched_for_a_late_answer_for_within_ms_after_its_deadline_only() -> None:
    operator = monitor()
    added(operator, ("o-1", "OrderPlaced", 1_000))
    operator.advance(121_000)  # stuck at 61_000, forgotten at 121_000
    assert operator.state_rows == 0
    assert added(operator, ("o-1", "PaymentProcessed", 125_000)) == []  # just remembered
    assert operator.state_rows == 2


# --- nulls -----------------------------------------------------------------------------------------------------


def test_an_after_without_event_time_sets_no_deadline() -> None:
    operator = monitor()
    assert added(operator, ("o-1", "OrderPlaced", None)) == []
    assert operator.state_rows == 0
    assert operator.flush() is None


def test_a_then_without_event_time_ends_open_waits_but_answers_no_later_after() -> None:
    operator = monitor()
    added(operator, ("o-1", "OrderPlaced", 1_000))
    assert added(operator, ("o-1", "PaymentProcessed", None)) == []
    assert operator.state_rows == 2  # the OrderPlaced it answered, remembered (a redelivery is no new wait)
    assert added(operator, ("o-1", "OrderPlaced", 1_000)) == []
    added(operator, ("o-1", "OrderPlaced", 2_000))
    assert brief(rows_of(operator.flush())) == [("o-1", "SagaStuck", 62_000, 1)]


def test_rows_with_a_null_key_or_type_are_ignored() -> None:
    operator = monitor()
    assert added(operator, (None, "OrderPlaced", 1_000), ("o-1", None, 1_000)) == []
    assert operator.state_rows == 0
    added(operator, ("o-1", "OrderPlaced", 1_000), (None, "PaymentProcessed", 2_000), ("o-1", None, 2_000))
    assert brief(rows_of(operator.flush())) == [("o-1", "SagaStuck", 61_000, 1)]


def test_without_a_traceparent_column_the_rows_carry_none() -> None:
    operator = monitor()
    operator.add(batch(("o-1", "OrderPlaced", 1_000), traces=False))
    (row,) = rows_of(operator.advance(61_000))
    assert row["_traceparent"] is None
    (recovered,) = rows_of(operator.add(batch(("o-1", "PaymentFailed", 70_000), traces=False)).output)
    assert recovered["_traceparent"] is None


# --- keys, expectations ----------------------------------------------------------------------------------------


def test_several_keys_wait_apart_and_are_reported_in_deadline_then_key_order() -> None:
    operator = monitor()
    added(
        operator,
        ("b", "OrderPlaced", 1_000),
        ("a", "OrderPlaced", 2_000),
        ("c", "OrderPlaced", 1_000),
        ("a", "PaymentProcessed", 2_500),
    )
    added(operator, ("d", "OrderPlaced", 1_000), ("c", "PaymentFailed", 1_000))
    assert operator.state_rows == 8  # b, d waiting; a, c remembering their answers: a value and a timer each
    assert rows_of(operator.advance(62_000)) == [stuck_row("b", 1_000, 62_000), stuck_row("d", 1_000, 62_000)]


def test_integer_keys_are_written_as_text() -> None:
    operator = monitor()
    operator.add(batch((42, "OrderPlaced", 1_000), (7, "OrderPlaced", 1_000), key_type=pa.int64()))
    out = operator.flush()
    assert out is not None and out.schema == saga_output_schema("order_id")
    assert brief(out.to_pylist()) == [("7", "SagaStuck", 61_000, 1), ("42", "SagaStuck", 61_000, 1)]
    assert out.column("_traceparent").to_pylist() == [trace(7, "OrderPlaced", 1_000), trace(42, "OrderPlaced", 1_000)]


def test_several_expectations_wait_apart_and_a_row_may_answer_one_and_start_another() -> None:
    delivery = Expectation(after="OrderPlaced", then=["OrderShipped", "OrderCancelled"], within_ms=120_000)
    config = SagaMonitorConfig(
        key="order_id", name="orders", events_topic="order-alerts", expect=[PAYMENT, delivery, SHIPMENT]
    )
    operator = monitor(config)
    added(operator, ("o-1", "OrderPlaced", 0), ("o-2", "OrderPlaced", 0))
    added(operator, ("o-1", "PaymentProcessed", 10_000))  # answers PAYMENT, starts SHIPMENT (due 40_000)
    out = rows_of(operator.advance(60_000))
    assert [(row["order_id"], row["step"], row["deadline_ms"]) for row in out] == [
        ("o-1", "OrderShipped", 40_000),
        ("o-2", STEP, 60_000),
    ]
    assert {(row["saga"], row["topic"]) for row in out} == {("orders", "order-alerts")}
    assert out[0]["reason"] == (
        "expected OrderShipped within 30000 ms of PaymentProcessed at 10000; none had arrived when the watermark "
        "passed 40000"
    )
    assert out[0]["_traceparent"] == trace("o-1", "PaymentProcessed", 10_000)
    shipped = added(operator, ("o-1", "OrderShipped", 70_000))  # answers SHIPMENT late and delivery in time
    assert [(row["message_type"], row["step"], row["sequence"]) for row in shipped] == [
        ("SagaRecovered", "OrderShipped", 2)
    ]
    assert brief(rows_of(operator.flush())) == [("o-2", "SagaStuck", 120_000, 2)]
    assert operator.state_rows == 0


def test_an_event_may_be_expected_after_itself() -> None:
    heartbeat = Expectation(after="Heartbeat", then=["Heartbeat"], within_ms=10_000)
    operator = monitor(SagaMonitorConfig(key="order_id", expect=[heartbeat]))
    added(operator, ("d-1", "Heartbeat", 0), ("d-1", "Heartbeat", 0))  # a row, and its copy, answer nothing
    assert [(row["deadline_ms"], row["step"]) for row in rows_of(operator.advance(10_000))] == [(10_000, "Heartbeat")]
    late = added(operator, ("d-1", "Heartbeat", 12_000))  # answers the first, late, and waits for the next
    assert [(row["message_type"], row["deadline_ms"]) for row in late] == [("SagaRecovered", 10_000)]
    assert added(operator, ("d-1", "Heartbeat", 20_000)) == []  # in time
    assert operator.advance(29_999) is None
    assert brief(rows_of(operator.advance(30_000))) == [("d-1", "SagaStuck", 30_000, 3)]


def test_flush_reports_every_open_wait_at_the_end_of_time_and_leaves_no_state() -> None:
    operator = monitor()
    added(operator, ("o-1", "OrderPlaced", 1_000), ("o-2", "PaymentFailed", 1_000))
    assert rows_of(operator.flush()) == [stuck_row("o-1", 1_000, END_OF_TIME_MS)]
    assert operator.state_rows == 0


# --- restore ---------------------------------------------------------------------------------------------------


def test_a_restored_monitor_reports_a_wait_opened_before_the_snapshot() -> None:
    operator = monitor()
    added(operator, ("o-1", "OrderPlaced", 1_000), ("o-2", "OrderPlaced", 2_000), ("o-3", "PaymentFailed", 3_000))
    added(operator, ("o-2", "PaymentFailed", 2_500))
    operator.advance(30_000)
    snapshot = operator.snapshot()
    assert snapshot.num_rows == 6  # o-1's wait, o-2's and o-3's answers: a value and a timer each

    restored = monitor()
    restored.restore(snapshot, 30_000)
    assert restored.state_rows == 6
    assert added(restored, ("o-3", "OrderPlaced", 2_000)) == []  # answered before the snapshot
    assert rows_of(restored.advance(61_000)) == [stuck_row("o-1", 1_000, 61_000)]
    assert brief(added(restored, ("o-1", "PaymentProcessed", 61_500))) == [("o-1", "SagaRecovered", 61_000, 2)]
    assert restored.flush() is None
    assert restored.state_rows == 0


def test_a_restored_stuck_wait_is_not_reported_again_and_still_recovers() -> None:
    operator = monitor()
    added(operator, ("o-1", "OrderPlaced", 1_000))
    operator.advance(61_000)
    restored = monitor()
    restored.restore(operator.snapshot(), 61_000)
    assert restored.advance(100_000) is None
    assert brief(added(restored, ("o-1", "PaymentProcessed", 100_000))) == [("o-1", "SagaRecovered", 61_000, 2)]


def test_a_due_timer_pending_at_restore_fires_at_the_next_advance() -> None:
    operator = monitor()
    added(operator, ("o-1", "OrderPlaced", 1_000))
    restored = monitor()
    restored.restore(operator.snapshot(), 70_000)  # the watermark restored is past the deadline
    assert rows_of(restored.advance(70_000)) == [stuck_row("o-1", 1_000, 70_000)]


def test_a_wait_of_an_expectation_removed_from_the_config_still_fires_after_a_restore() -> None:
    operator = monitor(SagaMonitorConfig(key="order_id", expect=[SHIPMENT]))
    added(operator, ("o-1", "PaymentProcessed", 0))
    restored = monitor(SagaMonitorConfig(key="order_id", expect=[PAYMENT]))
    restored.restore(operator.snapshot(), 0)
    assert rows_of(restored.advance(30_000)) == [stuck_row("o-1", 0, 30_000, expectation=SHIPMENT)]


def test_state_of_another_version_or_shape_is_refused() -> None:
    operator = monitor()
    added(operator, ("o-1", "OrderPlaced", 1_000))
    snapshot = operator.snapshot()
    values = snapshot.column("value").to_pylist()
    for bad in ({"version": 2, "sequence": 0, "waits": [], "answered": {}}, {"version": 1, "waits": "none"}, [1]):
        tampered = snapshot.set_column(
            snapshot.schema.get_field_index("value"),
            snapshot.schema.field("value"),
            pa.array([msgspec.msgpack.encode(bad) if value is not None else None for value in values], pa.binary()),
        )
        restored = monitor()
        restored.restore(tampered, 0)
        with pytest.raises(StateFormatError, match="Operator action"):
            restored.add(batch(("o-1", "PaymentProcessed", 2_000)))


# --- against a reference ---------------------------------------------------------------------------------------

REF_WITHIN_MS = 20
REF_CONFIG = SagaMonitorConfig(
    key="order_id", expect=[Expectation(after="A", then=["B"], within_ms=REF_WITHIN_MS)], events_topic="t"
)
Step = tuple[str, Any]  # ("batch", [(type, time)]) or ("advance", watermark_ms)


@dataclass
class RefWait:
    after_ms: int
    stuck: bool = False


@dataclass
class Reference:
    """The monitor's contract for one key and one expectation (A, then B, within REF_WITHIN_MS), written directly:
    unbounded memory, no timers. Rows are (message type, deadline, sequence, _timestamp, time_ms)."""

    waits: list[RefWait] = field(default_factory=list)
    answered_ms: int | None = None  # the latest event time answered: a B's, or an A's whose wait a B ended
    watermark_ms: int = NO_WATERMARK
    sequence: int = 0

    def add(self, rows: Sequence[tuple[str, int | None]]) -> list[tuple[str, int, int, int, int]]:
        out = []
        for kind, time_ms in rows:
            if kind == "B":
                out += self._answer(time_ms)
            elif kind == "A" and time_ms is not None and self._opens(time_ms):
                self.waits.append(RefWait(time_ms))
        self._drop_state_if_empty()
        return out

    def advance(self, watermark_ms: int) -> list[tuple[str, int, int, int, int]]:
        self.watermark_ms = max(self.watermark_ms, watermark_ms)
        due = sorted((w for w in self.waits if not w.stuck and w.after_ms + REF_WITHIN_MS <= self.watermark_ms),
                     key=lambda w: w.after_ms)  # fmt: skip
        out = []
        for wait in due:
            wait.stuck = True
            deadline_ms = wait.after_ms + REF_WITHIN_MS
            out.append(("SagaStuck", deadline_ms, self._next(), deadline_ms, self.watermark_ms))
        self.waits = [w for w in self.waits if not (w.stuck and w.after_ms + 2 * REF_WITHIN_MS <= self.watermark_ms)]
        self._drop_state_if_empty()
        return out

    def _opens(self, time_ms: int) -> bool:
        late = time_ms + REF_WITHIN_MS <= self.watermark_ms
        answered = self.answered_ms is not None and self.answered_ms >= time_ms
        return not late and not answered and all(w.after_ms != time_ms for w in self.waits)

    def _answer(self, time_ms: int | None) -> list[tuple[str, int, int, int, int]]:
        out = []
        for wait in self.waits:
            deadline_ms = wait.after_ms + REF_WITHIN_MS
            if wait.stuck:
                stamp_ms = deadline_ms if time_ms is None else max(time_ms, deadline_ms)
                out.append(("SagaRecovered", deadline_ms, self._next(), stamp_ms, self.watermark_ms))
            else:
                self._remember(wait.after_ms)
        self.waits = []
        if time_ms is not None:
            self._remember(time_ms)
        return out

    def _remember(self, time_ms: int) -> None:
        self.answered_ms = time_ms if self.answered_ms is None else max(self.answered_ms, time_ms)

    def _next(self) -> int:
        self.sequence += 1
        return self.sequence

    def holds_state(self) -> bool:
        remembering = self.answered_ms is not None and self.answered_ms + REF_WITHIN_MS > self.watermark_ms
        return bool(self.waits) or remembering

    def _drop_state_if_empty(self) -> None:
        if not self.holds_state():
            self.sequence = 0


def ref_batch(rows: Sequence[tuple[str, int | None]]) -> pa.RecordBatch:
    return batch(*[("k", kind, time_ms) for kind, time_ms in rows])


def ref_rows(table: pa.Table | None) -> list[tuple[str, int, int, int, int]]:
    return [
        (row["message_type"], row["deadline_ms"], row["sequence"], row["_timestamp"], row["time_ms"])
        for row in rows_of(table)
    ]


def ref_run(operator: KeyedProcess, steps: Sequence[Step]) -> list[tuple[str, int, int, int, int]]:
    out = []
    for kind, value in steps:
        out += ref_rows(operator.advance(value) if kind == "advance" else operator.add(ref_batch(value)).output)
    return out


ref_rows_strategy = st.lists(
    st.tuples(st.sampled_from(["A", "B", "C"]), st.one_of(st.none(), st.integers(0, 100))), min_size=1, max_size=6
)
ref_steps_strategy = st.lists(
    st.one_of(st.tuples(st.just("batch"), ref_rows_strategy), st.tuples(st.just("advance"), st.integers(0, 150))),
    max_size=14,
)


@settings(max_examples=300, deadline=None)
@given(ref_steps_strategy)
def test_the_monitor_matches_the_reference_and_leaves_no_state(steps: list[Step]) -> None:
    operator, reference = monitor(REF_CONFIG), Reference()
    for kind, value in steps:
        if kind == "advance":
            assert ref_rows(operator.advance(value)) == reference.advance(value)
        else:
            assert ref_rows(operator.add(ref_batch(value)).output) == reference.add(value)
        assert (operator.state_rows > 0) == reference.holds_state()
    assert ref_rows(operator.flush()) == reference.advance(END_OF_TIME_MS)
    assert operator.state_rows == 0


@settings(max_examples=150, deadline=None)
@given(ref_steps_strategy, ref_steps_strategy)
def test_snapshot_restore_continue_equals_an_uninterrupted_run(before: list[Step], after: list[Step]) -> None:
    uninterrupted = monitor(REF_CONFIG)
    ref_run(uninterrupted, before)
    snapshot = uninterrupted.snapshot()
    expected = ref_run(uninterrupted, [*after, ("advance", END_OF_TIME_MS)])

    restored = monitor(REF_CONFIG)
    restored.restore(snapshot, _watermark_after(before))
    assert ref_run(restored, [*after, ("advance", END_OF_TIME_MS)]) == expected


def _watermark_after(steps: Sequence[Step]) -> int:
    return max([value for kind, value in steps if kind == "advance"], default=NO_WATERMARK)
