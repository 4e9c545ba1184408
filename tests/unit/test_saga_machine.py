"""The saga state machine (pipelines/sagas/machine.py) and its definition checks, input by input, no Arrow."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.errors import ConfigError
from pipelines.sagas import contract as c
from pipelines.sagas.definition import Command, Retry, Saga, Step
from pipelines.sagas.machine import Deadline, SagaRun, Topics

TOPICS = Topics("saga-events", "saga-replies", "saga-stuck", {"inventory": "t.inventory"})


def step(name: str, timeout_ms: int | None = 1_000, attempts: int = 2, pivot: bool = False,
         compensable: bool = True) -> Step:  # fmt: skip
    title = name.title()
    return Step(
        name, Command(name, f"Do{title}"), success=f"{title}Done", failure=f"{title}Failed",
        compensation=Command(name, f"Undo{title}") if compensable else None,
        compensated=f"{title}Undone" if compensable else None, timeout_ms=timeout_ms,
        retry=Retry(attempts=attempts, backoff_ms=100, multiplier=2.0, max_backoff_ms=1_000), pivot=pivot,
    )  # fmt: skip


SAGA = Saga(
    "order", "OrderPlaced",
    (step("inventory"), step("payment", pivot=True, compensable=False), step("shipping", timeout_ms=None)),
    compensation_retry=Retry(attempts=2, backoff_ms=50), retention_ms=10_000,
)  # fmt: skip


class Saga1:
    """One saga driven input by input, its state carried over as the keyed stage carries it."""

    def __init__(self, saga: Saga = SAGA, saga_id: str = "s1") -> None:
        self.saga = saga
        self.id = saga_id
        self.state: dict[str, Any] | None = None
        self.rows: list[dict[str, Any]] = []
        self.deadline: Deadline | None = None

    def _run(self, now: int) -> SagaRun:
        return SagaRun(self.saga, TOPICS, "saga_id", self.id, self.state, now)

    def _keep(self, run: SagaRun) -> bool:
        self.state, self.deadline = run.state, run.deadline
        self.rows += run.rows
        return True

    def start(self, now: int = 0, **data: Any) -> bool:
        run = self._run(now)
        moved = run.start(data, "00-" + "a" * 32 + "-" + "b" * 16 + "-01")
        return self._keep(run) and moved

    def reply(self, reply_type: str, command: str, now: int = 10, reason: str | None = None, **data: Any) -> bool:
        run = self._run(now)
        moved = run.reply(reply_type, command, reason, data)
        return self._keep(run) and moved

    def fire(self, now: int | None = None) -> bool:
        assert self.deadline is not None
        run = self._run(now if now is not None else self.deadline.time_ms)
        moved = run.deadline_reached(self.deadline.time_ms)
        return self._keep(run) and moved

    def events(self) -> list[tuple[str, str | None]]:
        return [(r["message_type"], r["step"]) for r in self.rows if r["kind"] == c.EVENT]

    def commands(self) -> list[str]:
        return [r["command_id"] for r in self.rows if r["kind"] == c.COMMAND]


def test_a_saga_whose_steps_succeed_completes_and_is_forgotten_after_its_retention() -> None:
    saga = Saga1()
    assert saga.start(now=0, amount_cents=500)
    assert saga.commands() == ["s1:inventory:1"]
    assert saga.deadline == Deadline(1_000, "timeout")
    assert saga.reply("InventoryDone", "s1:inventory:1", reservation="r-7")
    assert saga.deadline == Deadline(1_010, "timeout")
    assert saga.reply("PaymentDone", "s1:payment:1")
    assert saga.deadline is None  # shipping waits for ever
    assert saga.reply("ShippingDone", "s1:shipping:1", now=5_000)
    assert saga.events() == [
        ("SagaStarted", None), ("StepCompleted", "inventory"), ("StepCompleted", "payment"),
        ("StepCompleted", "shipping"), ("Completed", None),
    ]  # fmt: skip
    assert saga.commands() == ["s1:inventory:1", "s1:payment:1", "s1:shipping:1"]
    command = saga.rows[1]
    assert command["topic"] == "t.inventory" and command["message_type"] == "DoInventory"
    assert command["reply_to"] == "saga-replies" and command["payload"] == '{"amount_cents": 500}'
    assert '"reservation": "r-7"' in saga.rows[3]["payload"]  # a reply's payload joins the saga's data
    assert [r["sequence"] for r in saga.rows] == list(range(1, len(saga.rows) + 1))
    assert {r["_traceparent"] for r in saga.rows} == {"00-" + "a" * 32 + "-" + "b" * 16 + "-01"}
    assert saga.rows[-1]["status"] == "completed" and saga.deadline == Deadline(15_000, "retention")
    assert not saga.start(now=6_000)  # a duplicate start while it is remembered: no second instance
    assert saga.fire() and saga.state is None


def test_a_failure_before_the_pivot_aborts_without_compensating_what_did_not_happen() -> None:
    saga = Saga1()
    saga.start()
    assert saga.reply("InventoryFailed", "s1:inventory:1", reason="out of stock")
    assert saga.events() == [("SagaStarted", None), ("StepFailed", "inventory"), ("Aborted", None)]
    assert saga.rows[-1]["reason"] == "out of stock" and saga.state is not None
    assert saga.state["status"] == "aborted"


def test_a_failing_pivot_compensates_the_steps_before_it_newest_first() -> None:
    three = Saga("three", "Go", (step("a"), step("b"), step("p", pivot=True, compensable=False)))
    saga = Saga1(three)
    saga.start()
    saga.reply("ADone", "s1:a:1")
    saga.reply("BDone", "s1:b:1")
    assert saga.reply("PFailed", "s1:p:1", reason="declined")
    assert saga.commands()[-1] == "s1:b.compensate:1"
    assert not saga.reply("AUndone", "s1:a.compensate:1")  # not what it waits for
    assert saga.reply("BUndone", "s1:b.compensate:1")
    assert saga.commands()[-1] == "s1:a.compensate:1"
    assert saga.reply("AUndone", "s1:a.compensate:1")
    assert saga.events()[-5:] == [
        ("StepFailed", "p"), ("Compensating", None), ("Compensated", "b"), ("Compensated", "a"), ("Aborted", None),
    ]  # fmt: skip
    assert saga.rows[-1]["reason"] == "declined"


def test_a_timeout_is_retried_with_backoff_and_a_late_success_of_the_older_attempt_counts() -> None:
    saga = Saga1()
    saga.start(now=0)
    assert saga.fire()  # no reply within 1 s
    failed = saga.rows[-1]
    assert failed["message_type"] == "StepFailed" and failed["reason"].startswith("timeout")
    assert failed["deadline_ms"] == 1_000 and failed["attempt"] == 1
    assert saga.deadline == Deadline(1_100, "retry")
    assert not saga.reply("InventoryFailed", "s1:inventory:1")  # the older attempt's failure: retried since
    assert saga.fire()
    assert saga.commands() == ["s1:inventory:1", "s1:inventory:2"]
    assert saga.events()[-1] == ("StepRetried", "inventory")
    assert saga.reply("InventoryDone", "s1:inventory:1")  # applied after all: the step is done
    assert saga.commands()[-1] == "s1:payment:1"


def test_a_step_that_times_out_on_its_last_attempt_is_compensated_too() -> None:
    saga = Saga1()
    saga.start()
    saga.fire()
    saga.fire()  # the retry is sent
    saga.fire()  # and times out: attempts exhausted
    assert saga.commands()[-1] == "s1:inventory.compensate:1"  # its command may have been applied
    assert saga.reply("InventoryUndone", "s1:inventory.compensate:1")
    assert saga.state is not None and saga.state["status"] == "aborted"
    assert saga.state["compensated"] == [0]


def test_a_compensation_that_keeps_failing_parks_the_saga_with_a_dead_letter() -> None:
    saga = Saga1()
    saga.start()
    saga.reply("InventoryDone", "s1:inventory:1")
    saga.reply("PaymentFailed", "s1:payment:1", reason="card declined")
    assert saga.reply("InventoryFailed", "s1:inventory.compensate:1", reason="warehouse offline")
    assert saga.deadline is not None and saga.deadline.kind == "retry"
    saga.fire()
    assert saga.commands()[-1] == "s1:inventory.compensate:2"
    saga.fire()  # no reply to the second attempt
    assert saga.state is not None and saga.state["status"] == "stuck" and saga.deadline is None
    stuck, dead_letter = saga.rows[-2:]
    assert stuck["message_type"] == dead_letter["message_type"] == "SagaStuck"
    assert (stuck["topic"], dead_letter["topic"], dead_letter["kind"]) == ("saga-events", "saga-stuck", "dead_letter")
    assert "compensation of inventory failed after 2 attempt(s)" in stuck["reason"]
    assert not saga.reply("InventoryUndone", "s1:inventory.compensate:2")  # parked: an operator decides


def test_after_the_pivot_failures_are_retried_forward_then_parked() -> None:
    saga = Saga1()
    saga.start()
    saga.reply("InventoryDone", "s1:inventory:1")
    saga.reply("PaymentDone", "s1:payment:1")
    assert saga.deadline is None  # shipping waits for ever
    assert saga.reply("ShippingFailed", "s1:shipping:1", reason="no courier")
    assert saga.deadline is not None and saga.deadline.kind == "retry"
    saga.fire()
    assert saga.reply("ShippingFailed", "s1:shipping:2", reason="no courier")
    assert saga.state is not None and saga.state["status"] == "stuck"
    assert "shipping (a step after the pivot) failed after 2 attempt(s)" in saga.state["reason"]
    assert not any(cmd.endswith(".compensate:1") for cmd in saga.commands())  # past the pivot nothing is undone


def test_replies_that_answer_nothing_it_waits_for_change_nothing() -> None:
    saga = Saga1()
    assert not saga.reply("InventoryDone", "s1:inventory:1")  # no saga yet
    saga.start()
    before = dict(saga.state or {})
    assert not saga.reply("InventoryDone", "s2:inventory:1")  # another saga
    assert not saga.reply("PaymentDone", "s1:payment:1")  # a step it has not reached
    assert not saga.reply("InventoryDone", "not-a-command-id")
    assert not saga.reply("InventoryUndone", "s1:inventory.compensate:1")  # not compensating
    assert saga.state == before
    assert saga.reply("Surprise", "s1:inventory:1")  # an unexpected type to the command it waits for: a failure
    assert "unexpected reply 'Surprise'" in saga.rows[-2]["reason"]


def test_a_deadline_that_moved_since_its_timer_was_set_changes_nothing() -> None:
    saga = Saga1()
    saga.start(now=0)
    run = SagaRun(SAGA, TOPICS, "saga_id", "s1", saga.state, 5_000)
    assert not run.deadline_reached(999) and run.rows == []


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ((), "has no steps"),
        ((step("a"), step("a")), "used twice"),
        ((step("a", compensable=False), step("p", pivot=True)), "comes before the pivot, so it needs a compensation"),
        ((step("a", timeout_ms=None), step("p", pivot=True)), "needs a compensation and a timeout_ms"),
        ((step("a", pivot=True), step("b", pivot=True)), "mark at most one"),
        ((step("a", compensable=False),), "comes before the pivot"),  # no pivot: every step is compensable
    ],
)
def test_a_definition_that_cannot_recover_is_refused_when_it_is_made(steps: tuple[Step, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Saga("bad", "Go", steps)


def test_steps_and_retries_refuse_what_would_break_command_ids_or_waits() -> None:
    with pytest.raises(ConfigError, match=r"without ':' or '\.'"):
        step("a:b")
    with pytest.raises(ConfigError, match="attempts is 0"):
        Retry(attempts=0)
    with pytest.raises(ConfigError, match="compensation and compensated together"):
        Step("a", Command("t", "Do"), "Ok", "No", compensation=Command("t", "Undo"))
    assert Retry(attempts=5, backoff_ms=100, multiplier=3.0, max_backoff_ms=500).backoff_before(4) == 500


def test_command_ids_round_trip_and_saga_ids_may_hold_colons() -> None:
    made = c.command_id("tenant:7:ord-1", "charge", 3, compensation=True)
    assert made == "tenant:7:ord-1:charge.compensate:3"
    assert c.parse_command_id(made) == c.CommandId("tenant:7:ord-1", "charge", True, 3)
    assert c.parse_command_id("ord-1:charge:x") is None and c.parse_command_id("charge:1") is None
