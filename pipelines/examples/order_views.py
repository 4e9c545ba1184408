"""CQRS read side of the orders (:class:`pipelines.examples.accounts.Order`, ``configs/orders-es.yaml``): three
views of the order events, each kept by a keyed process stage that feeds the next (``configs/order-views.yaml``).

1. :class:`OrderStatus`, keyed by order (``aggregate_id``): the view ``orders``, each order's ``{"status",
   "customer_id", "amount_cents", "version"}`` (:func:`order_after`). An event at or below the version applied
   is a redelivery and changes nothing, and is not emitted. Emits a row per event applied (:data:`ORDER_CHANGES`).
2. :class:`CustomerOrders`, keyed by ``customer_id``: the view ``order_history``, the customer's orders as a
   list of ``{"order_id", "status", "amount_cents", "version"}`` sorted by ``order_id`` (so the list is the same
   whatever order the events of different orders arrive in). A row of an order at or below the version held
   changes nothing. Emits a status delta per change (:data:`STATUS_DELTAS`): -1 for the status the order left,
   +1 for the one it entered.
3. :class:`StatusCounts`, keyed by ``status``: the view ``dashboard``, the number of orders in the status; a
   batch lookup of ``placed``, ``paid``, ``shipped`` and ``cancelled`` is the dashboard. Emits the count after
   each batch (:data:`STATUS_COUNTS`).

Each function declares its ``output_schema``, which is what lets a stage follow it. The views are right whether
the events topic is read once or again: every redelivery is recognised by its version.
:func:`order_views_reference` recomputes the three views from the events in plain Python, for checkers;
:func:`order_events` makes events as the orders pipeline stores them.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.examples.account_views import views_on_kafka
from pipelines.examples.accounts import Order
from pipelines.state.event_sourced import Rejected
from pipelines.state.process_function import Key, Output, ProcessContext, TimeDomain

__all__ = [
    "ORDER_CHANGES",
    "ORDER_VIEWS_YAML",
    "STATUSES",
    "STATUS_COUNTS",
    "STATUS_DELTAS",
    "CustomerOrders",
    "OrderStatus",
    "StatusCounts",
    "order_after",
    "order_events",
    "order_views_on_kafka",
    "order_views_reference",
]

ORDER_VIEWS_YAML = Path(__file__).resolve().parents[2] / "configs" / "order-views.yaml"
STATUSES = ("placed", "paid", "shipped", "cancelled")
_STATUS_OF_EVENT = {"Placed": "placed", "Paid": "paid", "Shipped": "shipped", "Cancelled": "cancelled"}

#: what OrderStatus emits: one row per event applied, keyed on by the customer for the next stage
ORDER_CHANGES = pa.schema([
    ("customer_id", pa.string()),
    ("order_id", pa.string()),
    ("status", pa.string()),
    ("previous_status", pa.string()),  # null for the order's first event
    ("amount_cents", pa.int64()),
    ("version", pa.int64()),
    ("_timestamp", pa.int64()),
])  # fmt: skip
#: what CustomerOrders emits: a change of the number of orders in a status
STATUS_DELTAS = pa.schema([("status", pa.string()), ("delta", pa.int64()), ("_timestamp", pa.int64())])
#: what StatusCounts emits: the number of orders in a status after a batch
STATUS_COUNTS = pa.schema([("status", pa.string()), ("orders", pa.int64())])


def order_after(view: dict[str, Any] | None, event: dict[str, Any]) -> dict[str, Any]:
    """The ``orders`` view of an order after ``event`` (a row of the events topic: ``version``, ``event_type``,
    ``data`` as JSON text); the fold :class:`OrderStatus` runs and the reference a checker recomputes with. An
    event at or below the view's version changes nothing; one of a type the view does not know moves the version
    only (an event kind added later)."""
    view = dict(view) if view is not None else {"status": None, "customer_id": None, "amount_cents": 0, "version": 0}
    if event["version"] <= view["version"]:
        return view
    data = json.loads(event.get("data") or "{}")
    view["status"] = _STATUS_OF_EVENT.get(event["event_type"], view["status"])
    view["customer_id"] = data.get("customer_id", view["customer_id"])
    view["amount_cents"] = int(data.get("amount_cents", view["amount_cents"]))
    view["version"] = int(event["version"])
    return view


class OrderStatus:
    """The ``orders`` view: a keyed process function over the order events, keyed by order."""

    output_schema = ORDER_CHANGES

    def process(self, key: Key, rows: pa.Table, ctx: ProcessContext) -> Output:
        """Fold the order's events; emit a row per event applied (none for a redelivery)."""
        view = ctx.state.get()
        changes = []
        for event in rows.select(["version", "event_type", "data", "_timestamp"]).to_pylist():
            before = view
            view = order_after(before, event)
            if before is not None and view["version"] == before["version"]:
                continue
            changes.append({"customer_id": view["customer_id"], "order_id": key, "status": view["status"],
                            "previous_status": None if before is None else before["status"],
                            "amount_cents": view["amount_cents"], "version": view["version"],
                            "_timestamp": event["_timestamp"]})  # fmt: skip
        ctx.state.set(view)
        return changes

    def on_timer(self, key: Key, timer_ms: int, domain: TimeDomain, ctx: ProcessContext) -> Output:
        return None


class CustomerOrders:
    """The ``order_history`` view: a keyed process function over :class:`OrderStatus`'s rows, keyed by customer."""

    output_schema = STATUS_DELTAS

    def process(self, key: Key, rows: pa.Table, ctx: ProcessContext) -> Output:
        """Put each order's newest version in the customer's history; emit the status deltas it makes."""
        history = {entry["order_id"]: entry for entry in ctx.state.get([])}
        deltas = []
        for row in rows.select(["order_id", "status", "amount_cents", "version", "_timestamp"]).to_pylist():
            held = history.get(row["order_id"])
            if held is not None and row["version"] <= held["version"]:
                continue  # an older version of the order than the one held
            history[row["order_id"]] = {name: row[name] for name in ("order_id", "status", "amount_cents", "version")}
            left = None if held is None else held["status"]
            if left != row["status"]:  # an order with no status yet (no event it knows) is counted nowhere
                deltas += [{"status": status, "delta": delta, "_timestamp": row["_timestamp"]}
                           for status, delta in ((left, -1), (row["status"], 1)) if status is not None]  # fmt: skip
        ctx.state.set([history[order] for order in sorted(history)])
        return deltas

    def on_timer(self, key: Key, timer_ms: int, domain: TimeDomain, ctx: ProcessContext) -> Output:
        return None


class StatusCounts:
    """The ``dashboard`` view: a keyed process function over :class:`CustomerOrders`' deltas, keyed by status."""

    output_schema = STATUS_COUNTS

    def process(self, key: Key, rows: pa.Table, ctx: ProcessContext) -> Output:
        """Add the deltas to the status's count; emit the count."""
        count = int(ctx.state.get(0)) + (pc.sum(rows.column("delta")).as_py() or 0)  # columnar: a hot key
        ctx.state.set(count)
        return [{"status": key, "orders": count}]

    def on_timer(self, key: Key, timer_ms: int, domain: TimeDomain, ctx: ProcessContext) -> Output:
        return None


def order_views_reference(
    events: list[dict[str, Any]],
) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]], dict[str, int]]:
    """The three views recomputed from ``events`` (rows of the events topic; each order's in the order its
    partition holds them, redeliveries included): ``orders`` by order id, ``order_history`` by customer (each
    list sorted by order id), and ``dashboard`` by status (every status an order ever had, 0 when none has it
    now). Written without the stages' deltas: a customer's history holds the newest version of each of its
    orders, and the dashboard counts the statuses in the histories."""
    orders: dict[str, dict[str, Any]] = {}
    latest: dict[Any, dict[str, dict[str, Any]]] = defaultdict(dict)  # customer -> order -> newest entry
    statuses: set[str] = set()
    for event in events:
        order = event["aggregate_id"]
        before = orders.get(order)
        orders[order] = view = order_after(before, event)
        if before is None or view["version"] != before["version"]:
            entry = {"order_id": order, **{name: view[name] for name in ("status", "amount_cents", "version")}}
            latest[view["customer_id"]][order] = entry
            statuses.add(view["status"])
    histories = {customer: [held[order] for order in sorted(held)] for customer, held in latest.items()}
    counted = Counter(entry["status"] for held in latest.values() for entry in held.values())
    dashboard = {status: counted[status] for status in sorted(statuses - {None})}
    return orders, histories, dashboard


# what a shop does next to an order in each status, and how often
_NEXT_STEP: dict[str, tuple[list[str], list[int]]] = {
    "placed": (["Pay", "Cancel"], [3, 1]),
    "paid": (["Ship", "Cancel"], [4, 1]),
}


def order_events(
    count: int, orders: int, customers: int, seed: int, start_time_ms: int, redelivered_fraction: float = 0.0
) -> list[dict[str, Any]]:
    """``count`` events (fewer when every one of ``orders`` orders, ``ord-00000``..., finished before) as the
    orders pipeline stores them: versions from 1 per order, a ``Placed`` first (by a customer drawn from
    ``customers``, ``cust-00000``...), then ``Paid`` and ``Shipped``, or ``Cancelled`` before it ships; orders
    are placed and moved on at random, so some are left placed or paid at the end. Each event's ``data`` is the
    JSON text :class:`~pipelines.examples.accounts.Order` decides (``customer_id``, ``amount_cents``,
    ``at_ms``), its ``_timestamp`` 1 ms after the one before. With ``redelivered_fraction``, that fraction of the
    events is written again a little later (as an at-least-once producer resends), after the order's next
    events sometimes: the views must count each once."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible workload, not a secret
    aggregate = Order()
    states: dict[str, dict[str, Any]] = {}
    versions: Counter[str] = Counter()
    unfinished: list[str] = []
    events: list[dict[str, Any]] = []
    while len(events) < count and (len(states) < orders or unfinished):
        if len(states) < orders and (not unfinished or rng.random() < 0.5):
            order = f"ord-{len(states):05d}"
            states[order] = aggregate.initial()
            unfinished.append(order)
            command = {"command_type": "Place", "customer_id": f"cust-{rng.randrange(customers):05d}",
                       "amount_cents": rng.randint(500, 50_000)}  # fmt: skip
        else:
            order = rng.choice(unfinished)
            steps, weights = _NEXT_STEP[states[order]["status"]]
            command = {"command_type": rng.choices(steps, weights)[0]}
        time_ms = start_time_ms + len(events)
        decided = aggregate.decide(states[order], command, time_ms)
        assert not isinstance(decided, Rejected), decided  # the workload sends only what the order's status allows
        (event,) = decided
        states[order] = aggregate.evolve(states[order], event)
        versions[order] += 1
        if states[order]["status"] in ("shipped", "cancelled"):
            unfinished.remove(order)
        data = msgspec.json.encode({name: value for name, value in event.items() if name != "event_type"}).decode()
        events.append({"aggregate_id": order, "version": versions[order], "event_type": event["event_type"],
                       "schema_version": 1, "data": data, "command_id": f"cmd-{len(events)}",
                       "_timestamp": time_ms})  # fmt: skip
    return _with_redeliveries(events, redelivered_fraction, rng)


def _with_redeliveries(events: list[dict[str, Any]], fraction: float, rng: random.Random) -> list[dict[str, Any]]:
    """``events`` with ``fraction`` of them written again 1 to 40 events later (the same row)."""
    if fraction <= 0:
        return events
    due: dict[int, list[dict[str, Any]]] = defaultdict(list)
    written: list[dict[str, Any]] = []
    for index, event in enumerate(events):
        written.append(event)
        written.extend(due.pop(index, []))
        if rng.random() < fraction:
            due[index + rng.randint(1, 40)].append(dict(event))
    return written + [event for index in sorted(due) for event in due[index]]


def order_views_on_kafka(name: str, bootstrap: str, events_topic: str, work_dir: Path) -> dict[str, Any]:
    """``configs/order-views.yaml`` reading ``events_topic`` (an orders pipeline's events) on Kafka, for tests and
    benchmarks to adjust; checkpoints and dead letters under ``work_dir``."""
    return views_on_kafka(ORDER_VIEWS_YAML, name, bootstrap, events_topic, work_dir)
