"""The saga checker (pipelines.verify.saga_check): its sequential reference (simulate_saga) step by step on the
order saga's recovery rules, and check_sagas on hand-built lifecycle events and effect ledgers: clean completed
and aborted sagas, mixed terminal states, duplicates, timeouts and timer lateness, stuck sagas. Its participant
model is held to the real participant (pipelines.examples.order_saga.Inventory) over random commands."""

from __future__ import annotations

import ast
import inspect
import random
from typing import Any

import pyarrow as pa

from pipelines.examples.order_saga import ORDER_SAGA, Inventory
from pipelines.sagas.contract import command_id
from pipelines.sagas.definition import Command, Retry, Saga, Step
from pipelines.state.process_function import KeyedProcess
from pipelines.verify import saga_check
from pipelines.verify.saga_check import (
    FAILURE,
    SILENT_APPLIED,
    SILENT_NOT_APPLIED,
    SUCCESS,
    Decide,
    Decision,
    ExpectedSaga,
    check_sagas,
    observed_timeouts,
    simulate_saga,
)

RESERVE, CHARGE, DISPATCH = (step.name for step in ORDER_SAGA.steps)


def decider(decisions: dict[str, Decision]) -> Decide:
    """Success for every command id but those named."""
    return lambda step, cid: decisions.get(cid, SUCCESS)


def attempts(
    saga_id: str, step: str, numbers: range, decision: Decision, compensation: bool = False
) -> dict[str, Decision]:
    return {command_id(saga_id, step, n, compensation): decision for n in numbers}


def ev(message_type: str, step: str | None = None, attempt: int | None = None, status: str = "running",
       **extra: Any) -> dict[str, Any]:  # fmt: skip
    return {"message_type": message_type, "step": step, "attempt": attempt, "status": status, **extra}


def story(saga_id: str, *events: dict[str, Any]) -> list[dict[str, Any]]:
    """``events`` of ``saga_id`` as the events topic holds them: sequence from 1, a second apart."""
    base = {"kind": "event", "saga": "order", "reason": None, "deadline_ms": None, "command_id": None}
    rows = [{**base, "saga_id": saga_id, "sequence": n, "time_ms": n * 1_000, **event}
            for n, event in enumerate(events, start=1)]  # fmt: skip
    for row in rows:
        if "late_ms" in row:  # a timeout: its deadline that much before it fired
            row["deadline_ms"] = row["time_ms"] - row.pop("late_ms")
    return rows


def timeout(step: str, attempt: int, late_ms: int = 10, status: str = "running", **extra: Any) -> dict[str, Any]:
    return ev("StepFailed", step, attempt, status, reason=f"timeout after 20000 ms (attempt {attempt})",
              late_ms=late_ms, **extra)  # fmt: skip


def effect(saga_id: str, step: str, kind: str = "applied", attempt: int = 1) -> dict[str, Any]:
    return {"topic": "saga-effects", "kind": "effect", "saga_id": saga_id, "step": step, "effect": kind,
            "command_id": command_id(saga_id, step, attempt, kind == "compensated"), "service": "x"}  # fmt: skip


def completed_story(saga_id: str) -> list[dict[str, Any]]:
    return story(saga_id, ev("SagaStarted"), ev("StepCompleted", RESERVE, 1), ev("StepCompleted", CHARGE, 1),
                 ev("StepCompleted", DISPATCH, 1), ev("Completed", status="completed"))  # fmt: skip


def declined_story(saga_id: str) -> list[dict[str, Any]]:
    return story(saga_id, ev("SagaStarted"), ev("StepCompleted", RESERVE, 1),
                 ev("StepFailed", CHARGE, 1, reason="PaymentDeclined"), ev("Compensating", status="compensating"),
                 ev("Compensated", RESERVE, 1, status="compensating"), ev("Aborted", status="aborted"))  # fmt: skip


# simulate_saga: the reference, rule by rule


def test_every_step_succeeding_completes_with_each_step_applied_once() -> None:
    assert simulate_saga(ORDER_SAGA, "s", decider({})) == ExpectedSaga("completed", (RESERVE, CHARGE, DISPATCH))


def test_a_failure_reply_before_the_pivot_is_not_retried_and_compensates_what_completed() -> None:
    first = simulate_saga(ORDER_SAGA, "s", decider({"s:reserve_inventory:1": FAILURE}))
    assert first == ExpectedSaga("aborted"), "nothing completed before it: nothing to undo, no retry"
    pivot = simulate_saga(ORDER_SAGA, "s", decider({"s:charge_payment:1": FAILURE}))
    assert pivot == ExpectedSaga("aborted", (RESERVE,), (RESERVE,), (RESERVE,)), (
        "the pivot's own failure undoes before it"
    )


def test_a_timeout_before_the_pivot_is_retried_and_when_exhausted_the_step_itself_is_compensated_first() -> None:
    retried = simulate_saga(ORDER_SAGA, "s", decider({"s:reserve_inventory:1": SILENT_NOT_APPLIED}))
    assert retried == ExpectedSaga("completed", (RESERVE, CHARGE, DISPATCH))
    never = simulate_saga(ORDER_SAGA, "s", decider(attempts("s", RESERVE, range(1, 4), SILENT_NOT_APPLIED)))
    assert never == ExpectedSaga("aborted", (), (), (RESERVE,)), "a no-op compensation: nothing was applied"
    slow = [command_id("s", RESERVE, n) for n in (1, 2, 3)]  # observed timing out though the participant applied
    assert simulate_saga(ORDER_SAGA, "s", decider({}), slow) == ExpectedSaga(
        "aborted", (RESERVE,), (RESERVE,), (RESERVE,)
    )
    once = simulate_saga(ORDER_SAGA, "s", decider({}), slow[:1])
    assert once == ExpectedSaga("completed", (RESERVE, CHARGE, DISPATCH)), "the retry is answered: applied already"


def test_the_pivot_timing_out_on_its_last_attempt_parks_the_saga_and_after_the_pivot_everything_is_retried() -> None:
    silent_pivot = decider(attempts("s", CHARGE, range(1, 5), SILENT_NOT_APPLIED))
    assert simulate_saga(ORDER_SAGA, "s", silent_pivot) == ExpectedSaga("stuck", (RESERVE,), stuck_step=CHARGE)
    timed_out_then_declined: dict[str, Decision] = {
        command_id("s", CHARGE, 1): SILENT_NOT_APPLIED,
        command_id("s", CHARGE, 2): FAILURE,
    }
    assert simulate_saga(ORDER_SAGA, "s", decider(timed_out_then_declined)) == ExpectedSaga(
        "aborted", (RESERVE,), (RESERVE,), (RESERVE,)
    )
    shipped = decider(attempts("s", DISPATCH, range(1, 6), FAILURE))
    assert simulate_saga(ORDER_SAGA, "s", shipped).status == "completed", "the 6th attempt ships"
    never = decider(attempts("s", DISPATCH, range(1, 7), FAILURE))
    assert simulate_saga(ORDER_SAGA, "s", never) == ExpectedSaga("stuck", (RESERVE, CHARGE), stuck_step=DISPATCH)


def test_a_compensation_is_retried_on_failure_or_timeout_and_parks_the_saga_when_exhausted() -> None:
    declined: dict[str, Decision] = {command_id("s", CHARGE, 1): FAILURE}
    flaky: dict[str, Decision] = {**declined, command_id("s", RESERVE, 1, True): FAILURE}
    flaky[command_id("s", RESERVE, 2, True)] = SILENT_NOT_APPLIED
    assert simulate_saga(ORDER_SAGA, "s", decider(flaky)) == ExpectedSaga("aborted", (RESERVE,), (RESERVE,), (RESERVE,))
    broken: dict[str, Decision] = {**declined, **attempts("s", RESERVE, range(1, 6), FAILURE, compensation=True)}
    assert simulate_saga(ORDER_SAGA, "s", decider(broken)) == ExpectedSaga("stuck", (RESERVE,), stuck_step=RESERVE)
    lost: dict[str, Decision] = {
        **declined,
        command_id("s", RESERVE, 1, True): SILENT_APPLIED,
    }  # undone, the reply lost: the retry says so
    assert simulate_saga(ORDER_SAGA, "s", decider(lost)) == ExpectedSaga("aborted", (RESERVE,), (RESERVE,), (RESERVE,))


def test_a_late_success_of_an_earlier_attempt_completes_the_step_only_as_observed_and_never_after_the_last() -> None:
    timed_out = [command_id("s", RESERVE, 1)]  # applied; its reply late
    later_silent = decider(attempts("s", RESERVE, range(2, 4), SILENT_NOT_APPLIED))
    unseen = simulate_saga(ORDER_SAGA, "s", later_silent, timed_out)
    assert unseen == ExpectedSaga("aborted", (RESERVE,), (RESERVE,), (RESERVE,))
    seen = simulate_saga(ORDER_SAGA, "s", later_silent, timed_out, completed={RESERVE})
    assert seen == ExpectedSaga("completed", (RESERVE, CHARGE, DISPATCH)), "the late success came during attempt 2"
    every = [command_id("s", RESERVE, n) for n in (1, 2, 3)]
    assert simulate_saga(ORDER_SAGA, "s", decider({}), every, completed={RESERVE}).status == "aborted", (
        "the last attempt timed out: a success after it is too late, whatever was observed"
    )


def test_a_saga_without_a_pivot_undoes_every_step_newest_first_and_a_step_without_timeout_waits() -> None:
    no_pivot = plain_saga()
    expected = ExpectedSaga("aborted", ("a", "b"), ("b", "a"), ("b", "a"))
    assert simulate_saga(no_pivot, "s", decider({"s:c:1": FAILURE})) == expected
    waiting = Saga("w", "Go", (step("a", pivot=True), step("b", timeout_ms=None, compensable=False)))
    assert simulate_saga(waiting, "s", decider({"s:b:1": SILENT_NOT_APPLIED})).status == "running"


def step(name: str, pivot: bool = False, timeout_ms: int | None = 1_000, compensable: bool = True) -> Step:
    return Step(name, Command("t", f"Do{name}"), f"{name}Done", f"{name}Failed",
                compensation=Command("t", f"Undo{name}") if compensable else None,
                compensated=f"{name}Undone" if compensable else None, timeout_ms=timeout_ms, retry=Retry(attempts=2),
                pivot=pivot)  # fmt: skip


def plain_saga() -> Saga:
    return Saga("plain", "Go", (step("a"), step("b"), step("c")))


# check_sagas: observed events and ledgers


def test_a_clean_completed_and_a_clean_aborted_saga_pass() -> None:
    events = completed_story("ok") + declined_story("no")
    effects = [effect("ok", s) for s in (RESERVE, CHARGE, DISPATCH)]
    effects += [effect("no", RESERVE), effect("no", RESERVE, "compensated")]
    report = check_sagas(ORDER_SAGA, decider({"no:charge_payment:1": FAILURE}), events, effects,
                         expected_sagas={"ok", "no"})  # fmt: skip
    assert report.ok, report.failures()
    assert (report.sagas, report.by_status) == (2, {"aborted": 1, "completed": 1})
    assert report.noop_compensations.count == report.stuck.count == report.lateness.timeouts == 0


def test_mixed_terminal_states_are_found_completed_with_a_step_missing_or_aborted_with_one_left_applied() -> None:
    events = completed_story("half") + declined_story("left")
    effects = [effect("half", RESERVE), effect("half", CHARGE), effect("left", RESERVE)]
    report = check_sagas(ORDER_SAGA, decider({"left:charge_payment:1": FAILURE}), events, effects)
    assert report.mixed.count == 2 and report.effect_mismatches.count == 2
    assert "half: completed, not applied ['dispatch_shipment']" in report.mixed.examples[0]
    assert "left: aborted, applied and not compensated ['reserve_inventory']" in report.mixed.examples[1]
    assert any("in a mixed terminal state" in line for line in report.failures())


def test_compensations_out_of_reverse_order_are_a_mixed_state() -> None:
    events = story("s", ev("SagaStarted"), ev("StepCompleted", "a", 1), ev("StepCompleted", "b", 1),
                   ev("StepFailed", "c", 1, reason="cFailed"), ev("Compensating", status="compensating"),
                   ev("Compensated", "a", 1, status="compensating"), ev("Compensated", "b", 1, status="compensating"),
                   ev("Aborted", status="aborted"))  # fmt: skip
    effects = [effect("s", "a"), effect("s", "b"), effect("s", "a", "compensated"), effect("s", "b", "compensated")]
    report = check_sagas(plain_saga(), decider({"s:c:1": FAILURE}), events, effects)
    assert report.mixed.examples == ("s: aborted, applied and not compensated [], Compensated events ['a', 'b']",)
    assert report.effect_mismatches.count == 1, "the simulation undoes b first"


def test_a_side_effect_twice_and_a_second_instance_are_duplicates_a_redelivered_event_row_is_not() -> None:
    twice = [effect("d", s) for s in (RESERVE, CHARGE, DISPATCH)] + [effect("d", RESERVE, attempt=2)]
    again = completed_story("d")
    events = again + again[:2]  # the same rows read twice
    report = check_sagas(ORDER_SAGA, decider({}), events, twice)
    assert report.duplicate_effects.examples == ("d: reserve_inventory applied x2",)
    assert report.duplicate_instances.count == 0 and report.effect_mismatches.count == 0
    second = [{**row, "time_ms": row["time_ms"] + 7} for row in completed_story("d")]  # a second start, later
    report = check_sagas(ORDER_SAGA, decider({}), completed_story("d") + second, twice[:3])
    assert report.duplicate_instances.examples == ("d: 2 SagaStarted",) and not report.ok
    undone_twice = declined_story("u")
    ledger = [effect("u", RESERVE), effect("u", RESERVE, "compensated"), effect("u", RESERVE, "compensated", 2)]
    report = check_sagas(ORDER_SAGA, decider({"u:charge_payment:1": FAILURE}), undone_twice, ledger)
    assert report.duplicate_effects.examples == ("u: reserve_inventory compensated x2",)


def test_timeouts_are_read_from_the_events_and_drive_the_simulation_and_their_lateness_is_reported() -> None:
    events = story("t", ev("SagaStarted"), timeout(RESERVE, 1, late_ms=50, command_id="t:reserve_inventory:1"),
                   ev("StepRetried", RESERVE, 2), ev("StepCompleted", RESERVE, 2), timeout(CHARGE, 1, late_ms=120),
                   ev("StepFailed", CHARGE, 2, reason="PaymentDeclined"), ev("Compensating", status="compensating"),
                   timeout(RESERVE, 1, late_ms=3_000, status="compensating"),
                   ev("Compensated", RESERVE, 2, status="compensating"), ev("Aborted", status="aborted"))  # fmt: skip
    assert observed_timeouts(events) == {
        "t:reserve_inventory:1",
        "t:charge_payment:1",
        "t:reserve_inventory.compensate:1",
    }
    # reserve's attempt 1 was applied, its reply too late; the compensation's too
    decisions: dict[str, Decision] = {"t:charge_payment:1": SILENT_NOT_APPLIED, "t:charge_payment:2": FAILURE}
    effects = [effect("t", RESERVE), effect("t", RESERVE, "compensated")]
    report = check_sagas(ORDER_SAGA, decider(decisions), events, effects, lateness_bound_ms=1_000)
    lateness = report.lateness
    assert (lateness.timeouts, lateness.max_ms, lateness.p50_ms, lateness.p99_ms) == (3, 3_000, 120, 3_000)
    assert lateness.late.examples == ("t:reserve_inventory#1 +3000 ms",)
    assert report.failures() == ["1 timeout timer(s) later than 1000 ms, e.g. t:reserve_inventory#1 +3000 ms"]


def test_a_saga_parked_as_simulated_is_reported_with_its_reason_but_is_no_fault() -> None:
    parked = story("p", ev("SagaStarted"), ev("StepCompleted", RESERVE, 1),
                   *(timeout(CHARGE, n) for n in range(1, 5)),
                   ev("SagaStuck", CHARGE, 4, status="stuck", reason="timeout on the pivot's last attempt"),
                   )  # fmt: skip
    unanswered = decider(attempts("p", CHARGE, range(1, 5), SILENT_NOT_APPLIED))
    report = check_sagas(ORDER_SAGA, unanswered, parked, [effect("p", RESERVE)])
    assert report.ok, report.failures()
    assert report.stuck.examples == ("p: at charge_payment: timeout on the pivot's last attempt",)
    assert (report.stuck_by_step, report.by_status) == ({CHARGE: 1}, {"stuck": 1})


def test_a_saga_parked_where_the_simulation_completes_it_is_a_status_mismatch() -> None:
    parked = story("p", ev("SagaStarted"), ev("StepCompleted", RESERVE, 1), ev("StepCompleted", CHARGE, 1),
                   *(ev("StepFailed", DISPATCH, n, reason="ShipmentFailed") for n in range(1, 7)),
                   ev("SagaStuck", DISPATCH, 6, status="stuck", reason="failed 6 times"))  # fmt: skip
    report = check_sagas(ORDER_SAGA, decider({}), parked, [effect("p", RESERVE), effect("p", CHARGE)])
    assert report.status_mismatches.examples == (
        "p: stuck (parked at dispatch_shipment), simulated completed (parked at None)",
    )
    assert report.effect_mismatches.count == 1, "the simulation ships"


def test_a_compensation_of_a_step_never_applied_is_counted_apart_and_allowed() -> None:
    events = story("n", ev("SagaStarted"), *(timeout(RESERVE, n) for n in (1, 2, 3)),
                   ev("Compensating", status="compensating"), ev("Compensated", RESERVE, 1, status="compensating"),
                   ev("Aborted", status="aborted"))  # fmt: skip
    report = check_sagas(ORDER_SAGA, decider(attempts("n", RESERVE, range(1, 4), SILENT_NOT_APPLIED)), events, [])
    assert report.ok, report.failures()
    assert report.noop_compensations.examples == ("n: ['reserve_inventory'] compensated, never applied",)


def test_sagas_unfinished_never_started_unknown_or_with_rejected_commands_are_faults() -> None:
    unfinished = story("a", ev("SagaStarted"), ev("StepCompleted", RESERVE, 1))
    rejected = {"kind": "effect", "saga_id": "a", "effect": "rejected", "command_id": "a:x:1", "reason": "unknown"}
    report = check_sagas(ORDER_SAGA, decider({}), unfinished, [effect("a", RESERVE), effect("c", RESERVE), rejected],
                         expected_sagas={"a", "b"})  # fmt: skip
    assert report.not_terminal.examples == ("a: last status running",)
    assert report.never_started.examples == ("b: no SagaStarted",)
    assert report.effects_without_saga.examples == ("c: effects, no SagaStarted",)
    assert report.rejected_commands.examples == ("a: a:x:1 (unknown)",)
    assert len(report.failures()) == 4 and report.by_status == {"running": 1}


def test_dead_letter_rows_and_commands_in_the_events_are_not_read_as_events() -> None:
    events = completed_story("ok")
    noise = [{**events[-1], "kind": "dead_letter", "message_type": "SagaStuck", "status": "stuck"},
             {"kind": "command", "saga_id": "ok", "message_type": "ReserveInventory", "sequence": 2}]  # fmt: skip
    report = check_sagas(
        ORDER_SAGA, decider({}), events + noise, [effect("ok", s) for s in (RESERVE, CHARGE, DISPATCH)]
    )
    assert report.ok and report.by_status == {"completed": 1}


def test_the_reference_s_participant_model_answers_as_the_real_participant_does() -> None:
    rng = random.Random(3)
    inventory = Inventory(failure_rate=0.3, silent_rate=0.2, compensation_failure_rate=0.3, seed=1)
    operator = KeyedProcess("saga_id", inventory)
    for saga in range(300):
        saga_id = f"m-{saga}"
        model = saga_check._Participants()
        for _ in range(6):
            attempt, compensation = rng.randint(1, 3), rng.random() < 0.4
            cid = command_id(saga_id, RESERVE, attempt, compensation)
            row = {"saga_id": saga_id, "command_id": cid, "reply_to": "r", "_timestamp": 1,
                   "message_type": "ReleaseInventory" if compensation else "ReserveInventory"}  # fmt: skip
            output = operator.add(pa.RecordBatch.from_pylist([row])).output
            rows = [] if output is None else output.to_pylist()
            done = len(model.applied) + len(model.compensated)
            answer = model.answer(RESERVE, compensation, inventory.decision(cid))
            replies = [r["message_type"] for r in rows if r["kind"] == "reply"]
            expected = {None: [], "done": ["InventoryReleased" if compensation else "InventoryReserved"],
                        "failed": ["InventoryRejected"]}[answer]  # fmt: skip
            assert replies == expected, (cid, rows)
            assert sum(r["kind"] == "effect" for r in rows) == len(model.applied) + len(model.compensated) - done


def test_the_checker_shares_no_code_with_the_saga_machine() -> None:
    tree = ast.parse(inspect.getsource(saga_check))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {name for name in imported if name and name.startswith("pipelines.sagas.")} - {
        "pipelines.sagas.contract",
        "pipelines.sagas.definition",
    }


def test_timeouts_are_checked_against_the_commands_sent_when_they_are_given() -> None:
    """With the commands the saga sent: a timeout's deadline must be its command's send time plus the step's
    timeout_ms, and it must not fire before it; a timeout of a command never sent is a fault too."""
    sent = command_id("s", RESERVE, 1)
    events = story("s", ev("SagaStarted"), timeout(RESERVE, 1, command_id=sent),
                   ev("StepRetried", RESERVE, 2), ev("StepCompleted", RESERVE, 2), ev("StepCompleted", CHARGE, 1),
                   ev("StepCompleted", DISPATCH, 1), ev("Completed", status="completed"))  # fmt: skip
    deadline = events[1]["deadline_ms"]
    timeout_ms = ORDER_SAGA.steps[0].timeout_ms
    assert timeout_ms is not None
    effects = [effect("s", RESERVE, attempt=2), effect("s", CHARGE), effect("s", DISPATCH)]
    decide = decider({sent: SILENT_NOT_APPLIED})
    right = [{"command_id": sent, "time_ms": deadline - timeout_ms}]
    assert check_sagas(ORDER_SAGA, decide, events, effects, commands=right).ok
    early = [{"command_id": sent, "time_ms": deadline - timeout_ms + 5}]
    report = check_sagas(ORDER_SAGA, decide, events, effects, commands=early)
    assert report.wrong_deadlines.count == 1 and "with timeout_ms" in report.wrong_deadlines.examples[0]
    never = check_sagas(ORDER_SAGA, decide, events, effects, commands=[])
    assert never.failures() and "never sent" in never.wrong_deadlines.examples[0]
    fired_early = [{**event, "time_ms": deadline - 1} if event is events[1] else event for event in events]
    report = check_sagas(ORDER_SAGA, decide, fired_early, effects, commands=right)
    assert "before its deadline" in report.wrong_deadlines.examples[0]
