"""Event-sourced aggregates of the seed's domain: a bank account and an order.

An account takes ``Open``, ``Deposit`` and ``Withdraw`` commands; its balance never goes negative (a withdrawal
beyond it is rejected, and the seed's "Current Balance = 500" is the state after Deposited 1000, Withdrawn 500).
An order goes placed -> paid -> shipped, or is cancelled before it ships; it is placed by a customer. Commands
are rows with ``aggregate_id``, ``command_id``, ``expected_version`` (or null), ``command_type`` and
``amount_cents`` (and ``customer_id`` for an order's ``Place``); ``configs/accounts.yaml`` and
``configs/orders-es.yaml`` run them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipelines.state.event_sourced import Rejected

__all__ = ["ACCOUNTS_YAML", "ORDERS_ES_YAML", "Account", "Order", "account_commands", "accounts_on_kafka",
           "order_commands"]  # fmt: skip

ACCOUNTS_YAML = Path(__file__).resolve().parents[2] / "configs" / "accounts.yaml"
ORDERS_ES_YAML = ACCOUNTS_YAML.with_name("orders-es.yaml")

Event = dict[str, Any]
Command = dict[str, Any]


class Account:
    """A bank account: ``{"open": bool, "balance_cents": int}``."""

    def initial(self) -> dict[str, Any]:
        return {"open": False, "balance_cents": 0}

    def decide(self, state: dict[str, Any], command: dict[str, Any], time_ms: int) -> list[Event] | Rejected:
        kind, amount = command.get("command_type"), command.get("amount_cents")
        if kind == "Open":
            return Rejected("the account is already open") if state["open"] else [{"event_type": "Opened"}]
        refusal = _account_refusal(state, kind, amount)
        if refusal is not None:
            return Rejected(refusal)
        event_type = "Deposited" if kind == "Deposit" else "Withdrawn"
        return [{"event_type": event_type, "amount_cents": amount, "at_ms": time_ms}]

    def evolve(self, state: dict[str, Any], event: Event) -> dict[str, Any]:
        kind = event["event_type"]
        if kind == "Opened":
            return {**state, "open": True}
        sign = 1 if kind == "Deposited" else -1
        return {**state, "balance_cents": state["balance_cents"] + sign * event["amount_cents"]}


def _account_refusal(state: dict[str, Any], kind: Any, amount: Any) -> str | None:
    """Why a deposit or withdrawal is refused (None: it is not)."""
    if not state["open"]:
        return "the account is not open"
    if kind not in ("Deposit", "Withdraw"):
        return f"unknown command type {kind!r}: Open, Deposit or Withdraw"
    if not isinstance(amount, int) or amount <= 0:
        return f"amount_cents must be a positive integer, not {amount!r}"
    if kind == "Withdraw" and amount > state["balance_cents"]:
        return f"insufficient funds: balance {state['balance_cents']}, withdrawal {amount}"
    return None


# command: (the status it needs, the event it makes); Place and Cancel are decided apart
_ORDER_STEPS = {"Pay": ("placed", "Paid"), "Ship": ("paid", "Shipped"), "Cancel": (None, "Cancelled")}
_STATUS_AFTER = {"Placed": "placed", "Paid": "paid", "Shipped": "shipped", "Cancelled": "cancelled"}


class Order:
    """An order: ``{"status": None | "placed" | "paid" | "shipped" | "cancelled", "customer_id": str | None,
    "amount_cents": int}``.

    ``Place`` needs a ``customer_id`` (text, not empty) and an ``amount_cents`` that is not negative (null: 0).
    Every event carries the order's ``customer_id`` and ``amount_cents``, not only ``Placed``: a projection
    (a customer's order history, say) reads each event on its own, never another event of the order.
    """

    def initial(self) -> dict[str, Any]:
        return {"status": None, "customer_id": None, "amount_cents": 0}

    def decide(self, state: dict[str, Any], command: dict[str, Any], time_ms: int) -> list[Event] | Rejected:
        kind, status = command.get("command_type"), state["status"]
        if kind == "Place":
            return _place(state, command, time_ms)
        if kind not in _ORDER_STEPS:
            return Rejected(f"unknown command type {kind!r}: Place, Pay, Ship or Cancel")
        needed, event_type = _ORDER_STEPS[kind]
        if status is None:
            return Rejected("no such order: place it first")
        if (kind == "Cancel" and status in ("shipped", "cancelled")) or (needed is not None and status != needed):
            return Rejected(f"the order is {status}: {kind} needs it {needed or 'placed or paid'}")
        return [{"event_type": event_type, "customer_id": state["customer_id"], "amount_cents": state["amount_cents"],
                 "at_ms": time_ms}]  # fmt: skip

    def evolve(self, state: dict[str, Any], event: Event) -> dict[str, Any]:
        return {
            "status": _STATUS_AFTER[event["event_type"]],
            "customer_id": event.get("customer_id", state["customer_id"]),
            "amount_cents": event.get("amount_cents", state["amount_cents"]),
        }


def _place(state: dict[str, Any], command: Command, time_ms: int) -> list[Event] | Rejected:
    """The ``Placed`` event of a Place command, or why it is refused."""
    customer_id, amount = command.get("customer_id"), command.get("amount_cents") or 0
    if state["status"] is not None:
        return Rejected(f"the order is already {state['status']}")
    if not isinstance(customer_id, str) or not customer_id:
        return Rejected(f"a Place needs a customer_id (the customer who orders), not {customer_id!r}")
    if not isinstance(amount, int) or amount < 0:
        return Rejected(f"amount_cents must be an integer of at least 0, not {amount!r}")
    return [{"event_type": "Placed", "customer_id": customer_id, "amount_cents": amount, "at_ms": time_ms}]


@dataclass
class _Simulated:
    """What a workload generator knows of an account: enough to aim commands at versions and balances."""

    open: bool = False
    balance_cents: int = 0
    version: int = 0


def account_commands(accounts: int, count: int, seed: int, start_time_ms: int, step_ms: int = 1) -> list[Command]:
    """``count`` commands to ``accounts`` accounts, as clients would send them, concurrency included: most carry
    no expected version, some the account's current one, some a stale one (rejected); some are a client's resend
    of an earlier command (same command id: answered again, decided once); and some come as a race of 3 to 5
    writers who read the same version (exactly one wins). Each has an ``issued_ms`` (its event time,
    ``step_ms`` apart) and a unique ``command_id`` (``race-<n>-<i>`` for a race's writers)."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible workload, not a secret
    simulated = [_Simulated() for _ in range(accounts)]
    commands: list[Command] = []
    races = 0
    while len(commands) < count:
        index = rng.randrange(accounts)
        account, roll = simulated[index], rng.random()
        issued_ms = start_time_ms + len(commands) * step_ms
        aggregate_id = f"acc-{index:05d}"
        if commands and roll < 0.05:
            commands.append(rng.choice(commands[-200:]))  # a resend: the very same command
            continue
        if account.open and roll < 0.10:
            amounts = [rng.randint(1, 500) for _ in range(rng.randint(3, 5))]
            for writer, amount in enumerate(amounts):
                commands.append(_command(aggregate_id, f"race-{races}-{writer}", account.version, "Deposit", amount,
                                         issued_ms + writer * step_ms))  # fmt: skip
            races += 1
            _apply(account, "Deposit", amounts[0])  # the first writer wins; the others expected a version gone
            continue
        kind, next_amount = _next_command(account, rng)
        expected = rng.choices([None, account.version, max(0, account.version - rng.randint(1, 3))], [6, 3, 1])[0]
        commands.append(_command(aggregate_id, f"cmd-{len(commands)}", expected, kind, next_amount, issued_ms))
        if expected is None or expected == account.version:
            _apply(account, kind, next_amount)
    return commands[:count]


def _next_command(account: _Simulated, rng: random.Random) -> tuple[str, int | None]:
    if not account.open:
        return "Open", None
    if rng.random() < 0.6:
        return "Deposit", rng.randint(1, 1_000)
    return "Withdraw", rng.randint(1, 1_200)


def _apply(account: _Simulated, kind: str, amount: int | None) -> None:
    """The simulated account after a command it accepts (one it rejects changes nothing)."""
    if kind == "Open" and not account.open:
        account.open, account.version = True, account.version + 1
    elif kind == "Deposit" and account.open and amount:
        account.balance_cents += amount
        account.version += 1
    elif kind == "Withdraw" and account.open and amount and amount <= account.balance_cents:
        account.balance_cents -= amount
        account.version += 1


def _command(
    aggregate_id: str, command_id: str, expected_version: int | None, kind: str, amount: int | None, issued_ms: int
) -> Command:
    return {"aggregate_id": aggregate_id, "command_id": command_id, "expected_version": expected_version,
            "command_type": kind, "amount_cents": amount, "issued_ms": issued_ms}  # fmt: skip


_FINISHED = ("shipped", "cancelled")
# the commands a shop sends an order in each status: mostly the next step; a finished order's are refused
_WORKLOAD_STEPS: dict[str | None, list[str]] = {
    None: ["Place"],
    "placed": ["Pay", "Pay", "Pay", "Cancel"],
    "paid": ["Ship", "Ship", "Ship", "Cancel"],
    "shipped": ["Cancel", "Pay"],
    "cancelled": ["Pay", "Ship", "Place"],
}


def order_commands(
    orders: int, customers: int, count: int, seed: int, start_time_ms: int, step_ms: int = 1
) -> list[Command]:
    """``count`` commands to ``orders`` orders (``ord-00000``...) of ``customers`` customers (``cust-00000``...),
    as a shop would send them: an order is placed first (by a customer drawn then), then paid and shipped, or
    cancelled; orders move on at random, so some are left placed or paid at the end. Mixed in, as for
    :func:`account_commands`: commands the order's status refuses (paying a cancelled order), a ``Place``
    without a ``customer_id`` (refused), stale expected versions (refused) and resends of an earlier command
    (the same command id: answered again, decided once). Each has an ``issued_ms`` ``step_ms`` apart and a
    unique ``command_id``; ``customer_id`` and ``amount_cents`` are set on ``Place`` only."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible workload, not a secret
    aggregate = Order()  # the generator aims commands at the states the aggregate will have
    states = [aggregate.initial() for _ in range(orders)]
    versions = [0] * orders
    commands: list[Command] = []
    while len(commands) < count:
        issued_ms = start_time_ms + len(commands) * step_ms
        if commands and rng.random() < 0.05:
            commands.append(rng.choice(commands[-100:]))  # a resend: the very same command
            continue
        index = _order_to_command(states, rng)
        command = _order_command(index, states[index], versions[index], customers, rng)
        command.update(command_id=f"cmd-{len(commands)}", issued_ms=issued_ms)
        commands.append(command)
        decided = aggregate.decide(states[index], command, issued_ms)
        if command["expected_version"] in (None, versions[index]) and not isinstance(decided, Rejected):
            for event in decided:
                states[index] = aggregate.evolve(states[index], event)
            versions[index] += len(decided)
    return commands


def _order_to_command(states: list[dict[str, Any]], rng: random.Random) -> int:
    """Mostly an order not finished yet (so that orders get somewhere), sometimes any order."""
    unfinished = [index for index, state in enumerate(states) if state["status"] not in _FINISHED]
    if unfinished and rng.random() < 0.9:
        return rng.choice(unfinished)
    return rng.randrange(len(states))


def _order_command(index: int, state: dict[str, Any], version: int, customers: int, rng: random.Random) -> Command:
    """The next command to order ``index`` (without its ``command_id`` and ``issued_ms``)."""
    kind = rng.choice(_WORKLOAD_STEPS[state["status"]])
    customer_id, amount = None, None
    if kind == "Place":
        customer_id = None if rng.random() < 0.05 else f"cust-{rng.randrange(customers):05d}"
        amount = rng.randint(500, 50_000)
    expected = rng.choices([None, version, max(0, version - rng.randint(1, 3))], [7, 2, 1])[0]
    return {"aggregate_id": f"ord-{index:05d}", "command_id": None, "expected_version": expected,
            "command_type": kind, "customer_id": customer_id, "amount_cents": amount, "issued_ms": None}  # fmt: skip


def accounts_on_kafka(name: str, bootstrap: str, commands_topic: str, work_dir: Path) -> dict[str, Any]:
    """The data of ``configs/accounts.yaml`` on Kafka, for tests and benchmarks to adjust: commands read from
    ``commands_topic`` from earliest; events, replies and snapshots (compacted) to ``<name>.events``,
    ``.replies``, ``.snapshots``, keyed by account; checkpoints and dead letters under ``work_dir``."""
    data: dict[str, Any] = yaml.safe_load(ACCOUNTS_YAML.read_text(encoding="utf-8"))
    topics = {kind: f"{name}.{kind}" for kind in ("events", "replies", "snapshots")}
    data["keyed"].update(events_topic=topics["events"], replies_topic=topics["replies"],
                         snapshots_topic=topics["snapshots"])  # fmt: skip
    data.update(
        name=name,
        source={"type": "kafka", "topic": commands_topic, "group_id": name, "start": "earliest"},
        sinks=[{"type": "kafka", "topic": topics["replies"], "topic_column": "topic", "key_column": "aggregate_id",
                "topics": [topics["events"], topics["snapshots"]], "compacted": [topics["snapshots"]]}],
        dead_letter={"type": "jsonl", "path": str(work_dir / "dead_letter")},
        kafka={"bootstrap_servers": bootstrap},
        checkpoint={"uri": str(work_dir / "checkpoints")},
        runtime={"source_actors": 2, "aggregate_actors": 2, "duration_s": None},
        tracing={"enabled": False},
    )  # fmt: skip
    return data
