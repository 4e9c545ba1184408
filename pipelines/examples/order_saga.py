"""An orchestrated order saga (:data:`ORDER_SAGA`) and its three participants, simulated services that fail, lose
replies and get killed on purpose, for tests and demos of :mod:`pipelines.sagas`.

**The saga**: ``OrderPlaced`` starts it; ``reserve_inventory`` (compensable), then ``charge_payment`` (the
pivot: once a payment is charged the order goes ahead), then ``dispatch_shipment`` (retried until it ships).

**The participants** (:class:`Inventory`, :class:`Payments`, :class:`Shipping`) are keyed process functions,
keyed by ``saga_id``, each reading its commands topic (the columns of :mod:`pipelines.sagas.contract`:
``saga_id``, ``command_id``, ``message_type``, ``payload``, ``reply_to``, ``_traceparent``, ``time_ms``,
``_timestamp``). Each command is decided by :func:`participant_decision`, a pure function of ``(seed, service,
command_id)``, so a participant restored from a checkpoint and fed the same commands decides the same again:

- ``success``: the effect is applied (once) and the success reply sent; ``failure``: nothing is applied and the
  failure reply is sent; ``silent_applied``: applied, the reply lost; ``silent_not_applied``: nothing at all.
- A participant is idempotent per ``(saga_id, step)`` (its state): a later attempt of a step already applied is
  answered with success and applies nothing; a retry of a step not applied decides afresh by its own command
  id. Only a command that would change something can fail; the silent decisions apply to every command.
- A compensation of a step never applied is a no-op answered as compensated; of an applied step, it applies
  once. Either way the step is then closed: a forward command arriving after its compensation (a retry that
  overtook nothing, a redelivery) is answered with the failure type and applies nothing.
- A compensation that fails (``compensation_failure_rate``) is answered with the **step's failure type** and
  the compensation's command id (``...:step.compensate:n``): the contract names no reply type of its own for a
  failed compensation, and the command id tells the saga which one failed.
- A command the participant cannot take (a type it does not handle, a command id that is not
  ``saga_id:step:attempt`` of this saga, no ``reply_to``) is not answered: no reply type would be true, and a
  reply the saga misread would be worse than a timeout. It is written to the effect ledger as ``rejected``
  with the reason, so a checker and an operator see a misrouted command.

**Out** (:data:`PARTICIPANT_OUTPUT`, one schema for both kinds; route with ``topic_column: topic``): a
``reply`` row to the command's ``reply_to`` (``message_type`` the reply type, ``reason`` for a failure, the
command's ``_traceparent`` so the saga stays one trace; ``time_ms`` when it was decided, the stage's processing
time; ``_timestamp`` the command's), and an ``effect`` row to ``effects_topic`` for every
effect applied (``effect``: ``applied`` or ``compensated``) or command rejected: the ledger
:mod:`pipelines.verify.saga_check` judges side effects by. A reply's ``step``, ``service``, ``kind`` and
``topic`` are not saga data: a saga stage should leave them out of what it merges.

:func:`order_starts` makes the ``OrderPlaced`` rows, a few written twice; :func:`order_decider` gives the checker
the participants' decisions.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar, NamedTuple

import pyarrow as pa

from pipelines.errors import ConfigError
from pipelines.sagas.contract import CommandId, parse_command_id
from pipelines.sagas.definition import Command, Retry, Saga, Step
from pipelines.state.process_function import Key, Output, ProcessContext, TimeDomain
from pipelines.verify.saga_check import (
    EFFECT_APPLIED,
    EFFECT_COMPENSATED,
    EFFECT_REJECTED,
    FAILURE,
    SILENT_APPLIED,
    SILENT_NOT_APPLIED,
    SUCCESS,
    Decide,
    Decision,
)

__all__ = [
    "COMPENSATION_RETRY",
    "ORDER_SAGA",
    "PARTICIPANT_OUTPUT",
    "STEP_TIMEOUT_MS",
    "Compensation",
    "DecisionRates",
    "Inventory",
    "Participant",
    "Payments",
    "Replies",
    "Shipping",
    "order_decider",
    "order_saga",
    "order_starts",
    "participant_decision",
]

#: How long an attempt waits for its reply. A killed participant is back in 5-15 s and then reads the command
#: again; 20 s covers one restart plus a slow batch on a loaded 2-core machine, so a timeout mostly means a reply
#: lost on purpose (``silent_rate``), not a slow one, and the retries still fit in a test of a few minutes
#: (a step before the pivot gives up after 3 x 20 s plus backoffs).
STEP_TIMEOUT_MS = 20_000
#: Compensations are retried more (they must end), from a short backoff: a failed compensation is transient.
COMPENSATION_RETRY = Retry(attempts=5, backoff_ms=500, max_backoff_ms=8_000)

ORDER_SAGA = Saga(
    name="order",
    start="OrderPlaced",
    steps=(
        Step("reserve_inventory", Command("inventory-commands", "ReserveInventory"),
             success="InventoryReserved", failure="InventoryRejected",
             compensation=Command("inventory-commands", "ReleaseInventory"), compensated="InventoryReleased",
             timeout_ms=STEP_TIMEOUT_MS, retry=Retry(attempts=3, backoff_ms=500)),
        # the pivot: a declined payment undoes the reservation; a charged one is never refunded by the saga
        # (its compensation is declared for completeness and for a saga without the pivot)
        Step("charge_payment", Command("payment-commands", "ChargePayment"),
             success="PaymentCharged", failure="PaymentDeclined",
             compensation=Command("payment-commands", "RefundPayment"), compensated="PaymentRefunded",
             timeout_ms=STEP_TIMEOUT_MS, retry=Retry(attempts=4, backoff_ms=500), pivot=True),
        Step("dispatch_shipment", Command("shipping-commands", "DispatchShipment"),
             success="ShipmentDispatched", failure="ShipmentFailed",
             timeout_ms=STEP_TIMEOUT_MS, retry=Retry(attempts=6, backoff_ms=500, max_backoff_ms=8_000)),
    ),
    compensation_retry=COMPENSATION_RETRY,
)  # fmt: skip

#: every row a participant emits: replies and effect-ledger rows, told apart by ``kind``
PARTICIPANT_OUTPUT = pa.schema([
    ("topic", pa.string()),
    ("kind", pa.string()),  # "reply" or "effect"
    ("saga_id", pa.string()),
    ("command_id", pa.string()),
    ("step", pa.string()),
    ("message_type", pa.string()),  # a reply's type; an effect's command type
    ("reason", pa.string()),  # why a reply is a failure, why a command was rejected
    ("service", pa.string()),
    ("effect", pa.string()),  # "applied", "compensated" or "rejected"; null on replies
    ("time_ms", pa.int64()),  # when the participant decided (its processing time)
    ("_traceparent", pa.string()),
    ("_timestamp", pa.int64()),
])  # fmt: skip

_REPLY = "reply"
_EFFECT = "effect"
_DONE = "done"  # what a command's reply says: it was done (success, compensated) ...
_FAILED = "failed"  # ... or not (the step's failure type)


def order_saga(timeout_ms: int = STEP_TIMEOUT_MS) -> Saga:
    """:data:`ORDER_SAGA`, for a config's ``saga: pipelines.examples.order_saga:order_saga``; with ``timeout_ms``
    (the config's ``options: {timeout_ms: 6000}``), the same saga with every step waiting that long (a test
    without kills need not wait for a restart). Raises :class:`ConfigError` unless it is a positive integer."""
    if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms <= 0:
        raise ConfigError(f"order saga option timeout_ms is {timeout_ms!r}: a positive number of milliseconds")
    if timeout_ms == STEP_TIMEOUT_MS:
        return ORDER_SAGA
    return replace(ORDER_SAGA, steps=tuple(replace(step, timeout_ms=timeout_ms) for step in ORDER_SAGA.steps))


@dataclass(frozen=True)
class DecisionRates:
    """How often a participant fails a command, fails a compensation, or stays silent (each a fraction of the
    commands it decides). Raises :class:`ConfigError` naming the option when one is out of range."""

    failure_rate: float = 0.1
    silent_rate: float = 0.02
    compensation_failure_rate: float = 0.05

    def __post_init__(self) -> None:
        for name in ("failure_rate", "silent_rate", "compensation_failure_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"participant option {name} is {value!r}: a fraction from 0 to 1")
        for name in ("failure_rate", "compensation_failure_rate"):
            if self.silent_rate + getattr(self, name) > 1.0:
                raise ConfigError(
                    f"participant options silent_rate {self.silent_rate} and {name} {getattr(self, name)} add up "
                    "to more than 1: they are shares of one draw"
                )


def participant_decision(service: str, command_id: str, seed: int, rates: DecisionRates) -> Decision:
    """What the participant ``service`` decides for ``command_id``: pure, the same for the same arguments.

    One uniform draw in [0, 1) from blake2b of ``"{seed}:{service}:{command_id}"``: below ``silent_rate / 2``
    silent with the effect applied, below ``silent_rate`` silent with nothing applied, below ``silent_rate`` plus
    the failure rate (``compensation_failure_rate`` for a ``.compensate`` command id) a failure, else success."""
    digest = hashlib.blake2b(f"{seed}:{service}:{command_id}".encode(), digest_size=8).digest()
    draw = int.from_bytes(digest, "big") / 2**64
    parsed = parse_command_id(command_id)
    failure = rates.compensation_failure_rate if parsed is not None and parsed.compensation else rates.failure_rate
    if draw < rates.silent_rate / 2:
        return SILENT_APPLIED
    if draw < rates.silent_rate:
        return SILENT_NOT_APPLIED
    return FAILURE if draw < rates.silent_rate + failure else SUCCESS


class Replies(NamedTuple):
    """The reply types of a forward command."""

    success: str
    failure: str


class Compensation(NamedTuple):
    """A compensation command: the forward command type it undoes, and the reply type that says it did."""

    undoes: str
    compensated: str


class Participant:
    """A simulated service as a keyed process function (keyed by ``saga_id``); see the module docstring.

    Subclasses name the ``service``, the ``forward`` command types it takes with their replies, and its
    ``compensations``. Options (keyword, from a config's ``options``): ``failure_rate``, ``silent_rate``,
    ``compensation_failure_rate`` (:class:`DecisionRates`), ``seed`` (an int: another seed, other decisions) and
    ``effects_topic`` (where effect-ledger rows go). Raises :class:`ConfigError` naming a wrong option.

    State per saga: ``{step: {"applied": bool, "compensated": bool, "outcome": str}}``, ``outcome`` the last
    thing done for the step (``applied``, ``failed``, ``compensated``, ``refused``, ``silent``).
    """

    service: ClassVar[str] = ""
    forward: ClassVar[Mapping[str, Replies]] = {}
    compensations: ClassVar[Mapping[str, Compensation]] = {}
    output_schema: ClassVar[pa.Schema] = PARTICIPANT_OUTPUT

    def __init__(
        self,
        *,
        failure_rate: float = 0.1,
        silent_rate: float = 0.02,
        compensation_failure_rate: float = 0.05,
        seed: int = 0,
        effects_topic: str = "saga-effects",
    ) -> None:
        self.rates = DecisionRates(failure_rate, silent_rate, compensation_failure_rate)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"participant option seed is {seed!r}: an integer")
        if not isinstance(effects_topic, str) or not effects_topic:
            raise ConfigError(f"participant option effects_topic is {effects_topic!r}: a topic name")
        self.seed = seed
        self.effects_topic = effects_topic

    def decision(self, command_id: str) -> Decision:
        """This participant's decision for ``command_id`` (:func:`participant_decision`)."""
        return participant_decision(self.service, command_id, self.seed, self.rates)

    def process(self, key: Key, rows: pa.Table, ctx: ProcessContext) -> Output:
        """Take the saga's commands in order; emit the replies and the effect-ledger rows."""
        steps: dict[str, dict[str, Any]] = ctx.state.get({})
        emitted: list[dict[str, Any]] = []
        for command in rows.to_pylist():
            # the stage's processing time; before its clock first ticks (a test driving the operator), the command's
            decided = (ctx.processing_time_ms, command.get("time_ms"), command.get("_timestamp"))
            decided_ms = next((ms for ms in decided if ms is not None), None)
            emitted.extend({**row, "time_ms": decided_ms} for row in self._take(str(key), command, steps))
        ctx.state.set(steps)
        return emitted

    def on_timer(self, key: Key, timer_ms: int, domain: TimeDomain, ctx: ProcessContext) -> Output:
        return None

    def _take(self, saga_id: str, command: dict[str, Any], steps: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        parsed, problem = self._parse(saga_id, command)
        if parsed is None:
            return [self._effect_row(saga_id, command, None, EFFECT_REJECTED, problem)]
        held = steps.setdefault(parsed.step, {"applied": False, "compensated": False, "outcome": None})
        decision = self.decision(command["command_id"])
        if parsed.compensation:
            effect, answered, reason = self._compensate(held, decision, parsed.step)
        else:
            effect, answered, reason = self._apply(held, decision, parsed.step)
        if decision in (SILENT_APPLIED, SILENT_NOT_APPLIED):
            answered = None
        rows = [] if effect is None else [self._effect_row(saga_id, command, parsed.step, effect, None)]
        if answered is not None:
            rows.append(self._reply_row(saga_id, command, parsed.step, answered, reason))
        return rows

    def _parse(self, saga_id: str, command: dict[str, Any]) -> tuple[CommandId | None, str]:
        """The command's id when this participant can take it; else None and why not."""
        kind, raw_id = command.get("message_type"), command.get("command_id")
        parsed = parse_command_id(raw_id) if isinstance(raw_id, str) else None
        if kind not in self.forward and kind not in self.compensations:
            return None, f"{self.service} takes no command of type {kind!r}"
        if parsed is None or parsed.saga_id != saga_id:
            return None, f"command id {raw_id!r} is not saga_id:step:attempt of saga {saga_id!r}"
        if parsed.compensation != (kind in self.compensations):
            return None, f"command id {raw_id!r} does not match the command type {kind!r}"
        if not command.get("reply_to"):
            return None, "the command has no reply_to"
        return parsed, ""

    def _apply(self, held: dict[str, Any], decision: Decision, step: str) -> tuple[str | None, str | None, str | None]:
        """(effect, reply kind, reason) of a forward command; ``held`` updated."""
        if held["compensated"]:
            held["outcome"] = "refused"
            return None, _FAILED, f"{step} was compensated before this command arrived"
        if held["applied"]:
            return None, _DONE, None
        if decision in (SUCCESS, SILENT_APPLIED):
            held["applied"], held["outcome"] = True, "applied"
            return EFFECT_APPLIED, _DONE, None
        held["outcome"] = "failed" if decision == FAILURE else "silent"
        return None, _FAILED, f"{self.service} declined {step} (simulated failure)"

    def _compensate(
        self, held: dict[str, Any], decision: Decision, step: str
    ) -> tuple[str | None, str | None, str | None]:
        """(effect, reply kind, reason) of a compensation; ``held`` updated. Compensating a step never applied
        closes it and applies nothing."""
        if held["compensated"]:
            return None, _DONE, None
        if decision in (SUCCESS, SILENT_APPLIED):
            effect = EFFECT_COMPENSATED if held["applied"] else None
            held["compensated"], held["outcome"] = True, "compensated"
            return effect, _DONE, None
        held["outcome"] = "failed" if decision == FAILURE else "silent"
        return None, _FAILED, f"{self.service} could not compensate {step} (simulated failure)"

    def _reply_type(self, command_type: str, answered: str) -> str:
        if command_type in self.compensations:
            undo = self.compensations[command_type]
            return undo.compensated if answered == _DONE else self.forward[undo.undoes].failure
        replies = self.forward[command_type]
        return replies.success if answered == _DONE else replies.failure

    def _reply_row(
        self, saga_id: str, command: dict[str, Any], step: str, answered: str, reason: str | None
    ) -> dict[str, Any]:
        return {"topic": command["reply_to"], "kind": _REPLY, "saga_id": saga_id, "command_id": command["command_id"],
                "step": step, "message_type": self._reply_type(command["message_type"], answered), "reason": reason,
                "service": self.service, "effect": None, "_traceparent": command.get("_traceparent"),
                "_timestamp": command.get("_timestamp")}  # fmt: skip

    def _effect_row(
        self, saga_id: str, command: dict[str, Any], step: str | None, effect: str, reason: str | None
    ) -> dict[str, Any]:
        command_id = command.get("command_id")
        return {"topic": self.effects_topic, "kind": _EFFECT, "saga_id": saga_id,
                "command_id": command_id if isinstance(command_id, str) else None, "step": step,
                "message_type": command.get("message_type"), "reason": reason, "service": self.service,
                "effect": effect, "_traceparent": command.get("_traceparent"),
                "_timestamp": command.get("_timestamp")}  # fmt: skip


class Inventory(Participant):
    """Reserves and releases stock (``inventory-commands``)."""

    service = "inventory"
    forward: ClassVar[Mapping[str, Replies]] = {"ReserveInventory": Replies("InventoryReserved", "InventoryRejected")}
    compensations: ClassVar[Mapping[str, Compensation]] = {
        "ReleaseInventory": Compensation("ReserveInventory", "InventoryReleased")
    }


class Payments(Participant):
    """Charges and refunds payments (``payment-commands``)."""

    service = "payments"
    forward: ClassVar[Mapping[str, Replies]] = {"ChargePayment": Replies("PaymentCharged", "PaymentDeclined")}
    compensations: ClassVar[Mapping[str, Compensation]] = {
        "RefundPayment": Compensation("ChargePayment", "PaymentRefunded")
    }


class Shipping(Participant):
    """Dispatches shipments (``shipping-commands``); nothing undoes a dispatch."""

    service = "shipping"
    forward: ClassVar[Mapping[str, Replies]] = {"DispatchShipment": Replies("ShipmentDispatched", "ShipmentFailed")}
    compensations: ClassVar[Mapping[str, Compensation]] = {}


def order_decider(participants: Iterable[Participant] | None = None) -> Decide:
    """The decisions of ``participants`` (by default :class:`Inventory`, :class:`Payments` and :class:`Shipping`
    with default options) for :func:`pipelines.verify.saga_check.check_sagas`: a step's command ids are decided
    by the participant that takes the step's command type. Raises :class:`ConfigError` for a step none takes."""
    chosen = list(participants) if participants is not None else [Inventory(), Payments(), Shipping()]
    by_type = {command_type: participant for participant in chosen for command_type in participant.forward}

    def decide(step: Step, command_id: str) -> Decision:
        participant = by_type.get(step.command.type)
        if participant is None:
            raise ConfigError(
                f"no participant takes {step.command.type!r} (step {step.name!r}); pass the one that does"
            )
        return participant.decision(command_id)

    return decide


def order_starts(
    count: int, seed: int, start_time_ms: int, step_ms: int, duplicate_fraction: float = 0.01
) -> list[dict[str, Any]]:
    """``count`` ``OrderPlaced`` rows (``ord-000001``...), one every ``step_ms`` from ``start_time_ms``
    (``placed_ms`` and ``_timestamp``), each with a customer, a SKU, a quantity and an amount; ``command_id`` is
    left out (a start has none). ``duplicate_fraction`` of them are written again, the same row 1 to 20 rows
    later (a producer's resend): a saga stage must start each saga once."""
    if count < 0 or step_ms < 0 or not 0.0 <= duplicate_fraction <= 1.0:
        raise ValueError(f"count {count}, step_ms {step_ms} >= 0 and duplicate_fraction {duplicate_fraction} in [0, 1]")
    rng = random.Random(seed)  # noqa: S311 - a reproducible workload, not a secret
    due: dict[int, list[dict[str, Any]]] = {}
    rows: list[dict[str, Any]] = []
    for index in range(count):
        placed_ms = start_time_ms + index * step_ms
        quantity = rng.randint(1, 5)
        row = {"saga_id": f"ord-{index + 1:06d}", "message_type": ORDER_SAGA.start,
               "customer_id": f"cust-{rng.randrange(1_000):05d}", "sku": f"sku-{rng.randrange(200):04d}",
               "quantity": quantity, "amount_cents": quantity * rng.randint(250, 10_000), "placed_ms": placed_ms,
               "_timestamp": placed_ms}  # fmt: skip
        rows.append(row)
        rows.extend(due.pop(index, []))
        if rng.random() < duplicate_fraction:
            due.setdefault(index + rng.randint(1, 20), []).append(dict(row))
    return rows + [row for index in sorted(due) for row in due[index]]
