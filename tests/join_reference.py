"""A plain-Python reference for joins of generator orders with generator inventory updates: json.loads, dicts,
bisect and loops, nothing shared with the columnar join except the generator (the input both read).

Rows are dicts with ``sku``, ``_timestamp``, ``_partition`` (the pipeline partition) and ``_offset``; a left row
keeps its own columns and gains ``in_stock`` (and, for the interval join, ``stock_event``) from the right row
it meets.
"""

from __future__ import annotations

import bisect
import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from pipelines.config.pipeline import GeneratorSourceConfig
from pipelines.io.generator import generate_events
from tests.reference import _valid

Row = dict[str, Any]


def generated_rows(
    source: GeneratorSourceConfig, event_type: str, limits: dict[int, int], first_partition: int, start_time_ms: int
) -> list[Row]:
    """The valid events of ``event_type`` that the generator makes for partitions ``limits`` (local partition ->
    events), numbered as pipeline partitions from ``first_partition``."""
    rows: list[Row] = []
    for partition, limit in limits.items():
        generated = generate_events(source, partition, 0, limit, start_time_ms)
        for offset, payload in enumerate(generated.payloads.to_pylist()):
            try:
                event = json.loads(payload)
            except ValueError:
                continue
            if not _valid(event) or event["event_type"] != event_type:
                continue
            rows.append({**event, "_timestamp": event["event_time_ms"], "_partition": first_partition + partition,
                         "_offset": offset})  # fmt: skip
    return rows


def as_of_join(orders: Iterable[Row], inventory: Iterable[Row], how: str = "left") -> list[Row]:
    """Each order with ``in_stock`` of the inventory update of its SKU valid at its time: the newest at or before
    it, equal times ordered by partition and offset."""
    versions: dict[str, list[tuple[int, int, int, int]]] = defaultdict(list)
    for row in inventory:
        versions[row["sku"]].append((row["_timestamp"], row["_partition"], row["_offset"], row["quantity"]))
    for rows in versions.values():
        rows.sort()
    joined: list[Row] = []
    for order in orders:
        candidates = versions.get(order["sku"], [])
        position = bisect.bisect_right([version[0] for version in candidates], order["_timestamp"])
        if position == 0 and how == "inner":
            continue
        joined.append({**order, "in_stock": candidates[position - 1][3] if position else None})
    return joined


def interval_join(orders: Iterable[Row], inventory: Iterable[Row], lower_ms: int, upper_ms: int, how: str) -> list[Row]:
    """Each order with every inventory update of its SKU at ``t + lower_ms <= s <= t + upper_ms`` (a nested loop
    per SKU); ``how: left`` keeps an order that meets none once, its right columns None."""
    by_sku: dict[str, list[Row]] = defaultdict(list)
    for row in inventory:
        by_sku[row["sku"]].append(row)
    joined: list[Row] = []
    for order in orders:
        time_ms = order["_timestamp"]
        met = [
            row for row in by_sku.get(order["sku"], []) if time_ms + lower_ms <= row["_timestamp"] <= time_ms + upper_ms
        ]
        joined.extend({**order, "in_stock": row["quantity"], "stock_event": row["event_id"]} for row in met)
        if not met and how == "left":
            joined.append({**order, "in_stock": None, "stock_event": None})
    return joined


def identities(rows: Iterable[Row], *columns: str) -> list[tuple[Any, ...]]:
    """Each row as a sortable tuple of ``columns`` (None sorts first), sorted: a multiset to compare."""
    return sorted(tuple((value is not None, value) for value in (row.get(name) for name in columns)) for row in rows)


def window_join(orders: Iterable[Row], inventory: Iterable[Row], size_ms: int, how: str) -> list[Row]:
    """Each order with every inventory update of its SKU in the same tumbling window of ``size_ms``, with the
    window's bounds."""
    by_window: dict[tuple[str, int], list[Row]] = defaultdict(list)
    for row in inventory:
        by_window[(row["sku"], row["_timestamp"] // size_ms)].append(row)
    joined: list[Row] = []
    for order in orders:
        window = order["_timestamp"] // size_ms
        bounds = {"window_start_ms": window * size_ms, "window_end_ms": (window + 1) * size_ms}
        met = by_window.get((order["sku"], window), [])
        joined.extend({**order, **bounds, "in_stock": row["quantity"], "stock_event": row["event_id"]} for row in met)
        if not met and how == "left":
            joined.append({**order, **bounds, "in_stock": None, "stock_event": None})
    return joined
