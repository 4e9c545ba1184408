"""The rebuild peer of benchmarks/event_sourcing.py: the same accounts in the ``eventsourcing`` library (9.5,
SQLite through its ``eventsourcing.sqlite`` persistence module, the default JSON transcoder, no snapshots).

It is in the bench extra only (``make .venv/bin/.bench-installed``), imported where the benchmark runs.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

__all__ = ["open_bank", "store_history"]

_NAMESPACE = uuid.UUID("6f1c2d0e-5b7a-4c1e-9a51-0e7b5c4d3a21")


class BankAccount(Aggregate):
    """The account of pipelines/examples/accounts.py as an eventsourcing aggregate: the same three events."""

    @staticmethod
    def create_id(key: str) -> uuid.UUID:
        """A fixed id per account, so a rebuild looks each up as an application would."""
        return uuid.uuid5(_NAMESPACE, key)

    @event("Opened")
    def __init__(self, key: str) -> None:
        self.key = key
        self.balance_cents = 0

    @event("Deposited")
    def deposit(self, amount_cents: int, at_ms: int) -> None:
        self.balance_cents += amount_cents

    @event("Withdrawn")
    def withdraw(self, amount_cents: int, at_ms: int) -> None:
        self.balance_cents -= amount_cents


class Bank(Application[uuid.UUID]):
    pass


def open_bank(path: Path) -> Any:
    """An application storing its events in the SQLite file ``path``."""
    return Bank(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)})


def store_history(bank: Any, key: str, events: list[dict[str, Any]]) -> uuid.UUID:
    """Store one account's events (rows of the eventray archive, in version order) as that aggregate's, in one
    transaction; return its id."""
    account = BankAccount(key=key)
    for row in events[1:]:  # the first event is Opened: the creation above
        data = json.loads(row["data"])
        if row["event_type"] == "Deposited":
            account.deposit(amount_cents=data["amount_cents"], at_ms=data["at_ms"])
        else:
            account.withdraw(amount_cents=data["amount_cents"], at_ms=data["at_ms"])
    bank.save(account)
    stored: uuid.UUID = account.id
    return stored
