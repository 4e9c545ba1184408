"""The order saga example (pipelines.examples.order_saga): its definition, its starts, and its participants driven
as keyed process functions (KeyedProcess, RecordBatch in, rows out) without Ray or Kafka: deterministic
decisions per command id, one effect per (saga, step) whatever the attempts, no-op compensations, rejected
commands, options checked, and decisions that survive a restore."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import replace
from typing import Any

import pyarrow as pa
import pytest

from pipelines.errors import ConfigError
from pipelines.examples.order_saga import (
    ORDER_SAGA,
    PARTICIPANT_OUTPUT,
    STEP_TIMEOUT_MS,
    DecisionRates,
    Inventory,
    Participant,
    Payments,
    Shipping,
    order_decider,
    order_saga,
    order_starts,
    participant_decision,
)
from pipelines.sagas.contract import command_id
from pipelines.sagas.definition import Command, Step, load_saga
from pipelines.state.process_function import KeyedProcess, load_process_function
from pipelines.verify.saga_check import FAILURE, SILENT_APPLIED, SILENT_NOT_APPLIED, SUCCESS, Decision

COMMANDS = pa.schema([
    ("saga_id", pa.string()),
    ("command_id", pa.string()),
    ("message_type", pa.string()),
    ("payload", pa.string()),
    ("reply_to", pa.string()),
    ("_traceparent", pa.string()),
    ("time_ms", pa.int64()),
    ("_timestamp", pa.int64()),
])  # fmt: skip
STEP = "reserve_inventory"
TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def cmd(saga_id: str, attempt: int, compensation: bool = False, **changes: Any) -> dict[str, Any]:
    """An inventory command of ``saga_id`` as the saga stage writes it."""
    row = {"saga_id": saga_id, "command_id": command_id(saga_id, STEP, attempt, compensation),
           "message_type": "ReleaseInventory" if compensation else "ReserveInventory", "payload": '{"sku": "x"}',
           "reply_to": "saga-replies", "_traceparent": TRACE, "time_ms": 1_000 + attempt,
           "_timestamp": 500}  # fmt: skip
    return {**row, **changes}


def run(function: Participant, *commands: dict[str, Any]) -> list[dict[str, Any]]:
    """Each command in a batch of its own through one operator; every row emitted, in order."""
    operator = KeyedProcess("saga_id", function)
    return drive(operator, *commands)


def drive(operator: KeyedProcess, *commands: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for command in commands:
        output = operator.add(pa.RecordBatch.from_pylist([command], schema=COMMANDS)).output
        if output is not None:
            assert output.schema == PARTICIPANT_OUTPUT
            rows += output.to_pylist()
    return rows


def kinds(rows: list[dict[str, Any]]) -> list[tuple[str, str | None, str | None]]:
    """(kind, message_type of a reply / effect of an effect row, command id) per row."""
    return [(r["kind"], r["message_type"] if r["kind"] == "reply" else r["effect"], r["command_id"]) for r in rows]


def saga_where(participant: Participant, wanted: dict[tuple[int, bool], Decision]) -> str:
    """A saga id whose commands (attempt, compensation) get the ``wanted`` decisions from ``participant``."""
    for number in range(100_000):
        saga_id = f"s-{number}"
        if all(participant.decision(command_id(saga_id, STEP, attempt, compensation)) == decision
               for (attempt, compensation), decision in wanted.items()):  # fmt: skip
            return saga_id
    raise AssertionError(f"no saga id gets {wanted}")


def test_the_order_saga_reserves_then_charges_at_the_pivot_then_ships_with_timeouts_that_outlast_a_restart() -> None:
    assert order_saga() is ORDER_SAGA
    assert load_saga("pipelines.examples.order_saga:order_saga") is ORDER_SAGA
    assert [step.name for step in ORDER_SAGA.steps] == ["reserve_inventory", "charge_payment", "dispatch_shipment"]
    assert ORDER_SAGA.start == "OrderPlaced" and ORDER_SAGA.pivot_index == 1
    assert [step.retry.attempts for step in ORDER_SAGA.steps] == [3, 4, 6]
    assert all(step.timeout_ms == STEP_TIMEOUT_MS for step in ORDER_SAGA.steps)
    assert STEP_TIMEOUT_MS > 15_000, "a participant back from a kill (5-15 s) still answers in time"
    assert ORDER_SAGA.steps[2].compensation is None


def test_the_saga_factory_takes_a_timeout_from_the_config_s_options() -> None:
    quick = load_saga("pipelines.examples.order_saga:order_saga", {"timeout_ms": 6_000})
    assert [step.timeout_ms for step in quick.steps] == [6_000] * 3
    assert quick.steps == tuple(replace(step, timeout_ms=6_000) for step in ORDER_SAGA.steps)
    with pytest.raises(ConfigError, match="timeout_ms"):
        order_saga(timeout_ms=0)


def test_each_step_is_taken_by_one_participant_with_the_saga_s_reply_types() -> None:
    participants: list[Participant] = [Inventory(), Payments(), Shipping()]
    for step in ORDER_SAGA.steps:
        (taker,) = [p for p in participants if step.command.type in p.forward]
        assert taker.forward[step.command.type] == (step.success, step.failure)
        if step.compensation is not None:
            undo = taker.compensations[step.compensation.type]
            assert (undo.undoes, undo.compensated) == (step.command.type, step.compensated)
    assert {p.service for p in participants} == {"inventory", "payments", "shipping"}


def test_a_decision_is_a_pure_function_of_seed_service_and_command_id_in_the_configured_shares() -> None:
    rates = DecisionRates()
    ids = [command_id(f"ord-{n:06d}", "charge_payment", 1) for n in range(20_000)]
    decided = [participant_decision("payments", cid, 7, rates) for cid in ids]
    assert decided == [participant_decision("payments", cid, 7, rates) for cid in ids]
    assert decided != [participant_decision("payments", cid, 8, rates) for cid in ids], "the seed matters"
    assert decided != [participant_decision("shipping", cid, 7, rates) for cid in ids], "the service matters"
    shares = {decision: count / len(ids) for decision, count in Counter(decided).items()}
    assert shares[FAILURE] == pytest.approx(0.1, abs=0.01)
    assert shares[SILENT_APPLIED] == pytest.approx(0.01, abs=0.004)
    assert shares[SILENT_NOT_APPLIED] == pytest.approx(0.01, abs=0.004)
    undo_ids = [command_id(f"ord-{n:06d}", STEP, 1, compensation=True) for n in range(20_000)]
    undo_failures = sum(participant_decision("inventory", cid, 7, rates) == FAILURE for cid in undo_ids)
    assert undo_failures / len(undo_ids) == pytest.approx(0.05, abs=0.008), "compensation_failure_rate"
    never = DecisionRates(failure_rate=0.0, silent_rate=0.0, compensation_failure_rate=0.0)
    assert {participant_decision("payments", cid, 7, never) for cid in ids[:500]} == {SUCCESS}
    mute = DecisionRates(failure_rate=0.0, silent_rate=1.0, compensation_failure_rate=0.0)
    assert {participant_decision("payments", cid, 7, mute) for cid in ids[:500]} == {SILENT_APPLIED, SILENT_NOT_APPLIED}


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"failure_rate": 1.5}, "failure_rate"),
        ({"silent_rate": -0.1}, "silent_rate"),
        ({"compensation_failure_rate": True}, "compensation_failure_rate"),
        ({"failure_rate": 0.7, "silent_rate": 0.5}, "silent_rate"),
        ({"seed": "7"}, "seed"),
        ({"effects_topic": ""}, "effects_topic"),
    ],
)
def test_an_option_out_of_range_is_a_config_error_naming_it(options: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Inventory(**options)
    with pytest.raises(ConfigError, match=named):  # as a config's options reach it
        load_process_function("pipelines.examples.order_saga:Inventory", options)


def test_options_from_a_config_are_kept() -> None:
    made = load_process_function("pipelines.examples.order_saga:Payments", {"failure_rate": 0.3, "seed": 4})
    assert isinstance(made, Payments)
    assert (made.rates.failure_rate, made.seed, made.effects_topic) == (0.3, 4, "saga-effects")


def test_a_command_applied_writes_one_effect_and_replies_success_with_the_command_s_trace() -> None:
    rows = run(Inventory(failure_rate=0.0, silent_rate=0.0, effects_topic="ledger"), cmd("s-1", 1))
    effect, reply = rows
    assert effect == {"topic": "ledger", "kind": "effect", "saga_id": "s-1", "command_id": "s-1:reserve_inventory:1",
                      "step": STEP, "message_type": "ReserveInventory", "reason": None, "service": "inventory",
                      "effect": "applied", "time_ms": 1_001, "_traceparent": TRACE, "_timestamp": 500}  # fmt: skip
    assert reply == {"topic": "saga-replies", "kind": "reply", "saga_id": "s-1",
                     "command_id": "s-1:reserve_inventory:1", "step": STEP, "message_type": "InventoryReserved",
                     "reason": None, "service": "inventory", "effect": None, "time_ms": 1_001, "_traceparent": TRACE,
                     "_timestamp": 500}  # fmt: skip


def test_time_ms_is_the_stage_s_processing_time_once_it_has_one() -> None:
    operator = KeyedProcess("saga_id", Shipping(failure_rate=0.0, silent_rate=0.0))
    operator.advance_processing_time(9_000)
    command = cmd("s-1", 1, message_type="DispatchShipment", command_id="s-1:dispatch_shipment:1")
    assert {row["time_ms"] for row in drive(operator, command)} == {9_000}


def test_every_later_attempt_of_an_applied_step_replies_success_and_applies_nothing_again() -> None:
    inventory = Inventory(failure_rate=0.5, silent_rate=0.0)
    saga_id = saga_where(inventory, {(1, False): SUCCESS, (2, False): FAILURE})
    rows = run(inventory, cmd(saga_id, 1), cmd(saga_id, 1), cmd(saga_id, 2))
    assert kinds(rows) == [
        ("effect", "applied", f"{saga_id}:{STEP}:1"),
        ("reply", "InventoryReserved", f"{saga_id}:{STEP}:1"),
        ("reply", "InventoryReserved", f"{saga_id}:{STEP}:1"),  # a redelivery: the same answer
        ("reply", "InventoryReserved", f"{saga_id}:{STEP}:2"),  # would fail on its own: applied already
    ]


def test_a_failed_attempt_replies_the_failure_with_a_reason_and_a_retry_decides_afresh() -> None:
    inventory = Inventory(failure_rate=0.5, silent_rate=0.0)
    saga_id = saga_where(inventory, {(1, False): FAILURE, (2, False): SUCCESS})
    failed, *rest = run(inventory, cmd(saga_id, 1), cmd(saga_id, 2))
    assert (failed["message_type"], failed["effect"], failed["kind"]) == ("InventoryRejected", None, "reply")
    assert "inventory declined reserve_inventory" in failed["reason"]
    assert kinds(rest) == [
        ("effect", "applied", f"{saga_id}:{STEP}:2"),
        ("reply", "InventoryReserved", f"{saga_id}:{STEP}:2"),
    ]


def test_a_silent_participant_applies_half_the_time_without_a_reply_and_the_next_attempt_is_answered() -> None:
    inventory = Inventory(failure_rate=0.0, silent_rate=0.5)
    applied = saga_where(inventory, {(1, False): SILENT_APPLIED, (2, False): SUCCESS})
    assert kinds(run(inventory, cmd(applied, 1), cmd(applied, 2))) == [
        ("effect", "applied", f"{applied}:{STEP}:1"),
        ("reply", "InventoryReserved", f"{applied}:{STEP}:2"),
    ]
    lost = saga_where(inventory, {(1, False): SILENT_NOT_APPLIED, (2, False): SUCCESS})
    assert kinds(run(inventory, cmd(lost, 1), cmd(lost, 2))) == [
        ("effect", "applied", f"{lost}:{STEP}:2"),
        ("reply", "InventoryReserved", f"{lost}:{STEP}:2"),
    ]
    mute = saga_where(inventory, {(1, False): SUCCESS, (2, False): SILENT_NOT_APPLIED})
    assert kinds(run(inventory, cmd(mute, 1), cmd(mute, 2)))[2:] == [], "a repeat's silence still holds"


def test_compensating_a_step_never_applied_is_a_no_op_answered_and_closes_the_step() -> None:
    inventory = Inventory(failure_rate=0.0, silent_rate=0.0, compensation_failure_rate=0.0)
    rows = run(inventory, cmd("s-1", 1, compensation=True), cmd("s-1", 1))
    assert kinds(rows) == [
        ("reply", "InventoryReleased", f"s-1:{STEP}.compensate:1"),
        ("reply", "InventoryRejected", f"s-1:{STEP}:1"),  # the command that came after its compensation
    ]
    assert "compensated before" in rows[1]["reason"]


def test_compensating_an_applied_step_undoes_it_once_whatever_the_attempts() -> None:
    inventory = Inventory(failure_rate=0.0, silent_rate=0.0, compensation_failure_rate=0.0)
    rows = run(inventory, cmd("s-1", 1), cmd("s-1", 1, compensation=True), cmd("s-1", 2, compensation=True))
    assert kinds(rows) == [
        ("effect", "applied", f"s-1:{STEP}:1"),
        ("reply", "InventoryReserved", f"s-1:{STEP}:1"),
        ("effect", "compensated", f"s-1:{STEP}.compensate:1"),
        ("reply", "InventoryReleased", f"s-1:{STEP}.compensate:1"),
        ("reply", "InventoryReleased", f"s-1:{STEP}.compensate:2"),
    ]


def test_a_failed_compensation_replies_the_step_s_failure_type_on_the_compensation_s_id_and_is_retried() -> None:
    inventory = Inventory(failure_rate=0.0, silent_rate=0.0, compensation_failure_rate=0.5)
    saga_id = saga_where(inventory, {(1, True): FAILURE, (2, True): SUCCESS})
    rows = run(inventory, cmd(saga_id, 1), cmd(saga_id, 1, compensation=True), cmd(saga_id, 2, compensation=True))
    assert kinds(rows)[2:] == [
        ("reply", "InventoryRejected", f"{saga_id}:{STEP}.compensate:1"),
        ("effect", "compensated", f"{saga_id}:{STEP}.compensate:2"),
        ("reply", "InventoryReleased", f"{saga_id}:{STEP}.compensate:2"),
    ]
    assert "could not compensate" in rows[2]["reason"]


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"message_type": "DispatchShipment"}, "takes no command of type"),
        ({"command_id": "not-an-id"}, "is not saga_id:step:attempt"),
        ({"command_id": "other:reserve_inventory:1"}, "is not saga_id:step:attempt"),
        ({"message_type": "ReleaseInventory"}, "does not match the command type"),
        ({"reply_to": None}, "no reply_to"),
    ],
)
def test_a_command_it_cannot_take_is_not_answered_but_written_to_the_ledger_as_rejected(
    changes: dict[str, Any], why: str
) -> None:
    (row,) = run(Inventory(failure_rate=0.0, silent_rate=0.0), cmd("s-1", 1, **changes))
    assert (row["kind"], row["effect"], row["topic"], row["service"]) == (
        "effect",
        "rejected",
        "saga-effects",
        "inventory",
    )
    assert why in row["reason"]


def random_commands(rng: random.Random, sagas: int) -> list[dict[str, Any]]:
    """Attempts and compensations of one step per saga, in a random order per saga, sagas interleaved."""
    per_saga = [[cmd(f"s-{n}", attempt, compensation) for attempt in range(1, 4) for compensation in (False, True)]
                for n in range(sagas)]  # fmt: skip
    for commands in per_saga:
        rng.shuffle(commands)
    mixed = [c for group in itertools.zip_longest(*per_saga) for c in group if c is not None]
    return [*mixed, *rng.sample(mixed, len(mixed) // 4)]  # and some redelivered


def test_a_participant_restored_from_a_snapshot_and_fed_the_rest_emits_what_the_uninterrupted_one_did() -> None:
    commands = random_commands(random.Random(5), 40)
    first, second = commands[: len(commands) // 2], commands[len(commands) // 2 :]
    uninterrupted = KeyedProcess("saga_id", Inventory(seed=3))
    drive(uninterrupted, *first)
    rest = drive(uninterrupted, *second)

    crashed = KeyedProcess("saga_id", Inventory(seed=3))
    drive(crashed, *first)
    restored = KeyedProcess("saga_id", Inventory(seed=3))
    restored.restore(crashed.snapshot(), crashed.watermark_ms)
    assert rest and drive(restored, *second) == rest


def test_whatever_the_order_of_commands_a_step_is_applied_and_compensated_at_most_once() -> None:
    rows = drive(
        KeyedProcess("saga_id", Inventory(failure_rate=0.3, silent_rate=0.2)), *random_commands(random.Random(9), 200)
    )
    effects = Counter((r["saga_id"], r["effect"]) for r in rows if r["kind"] == "effect")
    assert effects and max(effects.values()) == 1
    assert {effect for _, effect in effects} == {"applied", "compensated"}


def test_order_decider_decides_a_step_by_the_participant_that_takes_its_command() -> None:
    payments = Payments(seed=11)
    decide = order_decider([Inventory(seed=11), payments, Shipping(seed=11)])
    charge = ORDER_SAGA.steps[1]
    ids = [command_id(f"o-{n}", charge.name, 1) for n in range(200)]
    assert [decide(charge, cid) for cid in ids] == [payments.decision(cid) for cid in ids]
    assert [order_decider()(charge, cid) for cid in ids] == [Payments().decision(cid) for cid in ids]
    with pytest.raises(ConfigError, match="no participant takes 'Gift'"):
        decide(Step("gift", Command("gifts", "Gift"), "Given", "NotGiven", timeout_ms=1), "o-1:gift:1")


def test_order_starts_place_each_order_once_plus_a_few_resent_rows_deterministically() -> None:
    starts = order_starts(2_000, seed=1, start_time_ms=10_000, step_ms=5, duplicate_fraction=0.01)
    assert starts == order_starts(2_000, seed=1, start_time_ms=10_000, step_ms=5, duplicate_fraction=0.01)
    ids = [row["saga_id"] for row in starts]
    assert sorted(set(ids)) == [f"ord-{n:06d}" for n in range(1, 2_001)]
    resent = [saga for saga, count in Counter(ids).items() if count > 1]
    assert 5 <= len(resent) <= 40 and len(starts) == 2_000 + len(resent)
    first = {row["saga_id"]: row for row in reversed(starts)}
    assert all(row == first[row["saga_id"]] for row in starts), "a resent row is the same row"
    assert first["ord-000003"]["placed_ms"] == first["ord-000003"]["_timestamp"] == 10_010
    row = first["ord-000001"]
    assert row["message_type"] == "OrderPlaced" and "command_id" not in row
    assert set(row) == {"saga_id", "message_type", "customer_id", "sku", "quantity", "amount_cents", "placed_ms",
                        "_timestamp"}  # fmt: skip
    assert 1 <= row["quantity"] <= 5 and row["amount_cents"] > 0
    assert len(order_starts(50, seed=1, start_time_ms=0, step_ms=1, duplicate_fraction=0.0)) == 50
