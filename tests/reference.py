"""A plain-Python reference for the orders pipeline: json.loads, dicts and loops, nothing shared with the
columnar implementation except the generator (which is the input both read)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from pipelines.config.pipeline import GeneratorSourceConfig
from pipelines.io.generator import generate_events

KNOWN_TYPES = {"UserRegistered", "OrderCreated", "PaymentProcessed", "ShipmentDispatched", "InventoryUpdated"}
WindowKey = tuple[str, int]


def _valid(event: Any) -> bool:
    if not isinstance(event, dict):
        return False
    if any(event.get(name) is None for name in ("event_id", "event_type", "event_time_ms")):
        return False
    if event["event_type"] not in KNOWN_TYPES:
        return False
    amount = event.get("amount_cents")
    return amount is None or amount >= 0


def reference_orders(
    source: GeneratorSourceConfig, limits: dict[int, int | None], start_time_ms: int, window_ms: int
) -> tuple[dict[WindowKey, dict[str, Any]], int]:
    """Expected window results keyed by (customer, window start), and the number of invalid events."""
    sums: dict[WindowKey, list[int]] = defaultdict(lambda: [0, 0, -1])
    invalid = 0
    for partition, limit in limits.items():
        assert limit is not None
        for start in range(0, limit, 50_000):
            generated = generate_events(source, partition, start, min(50_000, limit - start), start_time_ms)
            for payload in generated.payloads.to_pylist():
                try:
                    event = json.loads(payload)
                except ValueError:
                    invalid += 1
                    continue
                if not _valid(event):
                    invalid += 1
                    continue
                if event["event_type"] != "OrderCreated":
                    continue
                window = event["event_time_ms"] - event["event_time_ms"] % window_ms
                entry = sums[(event["customer_id"], window)]
                entry[0] += 1
                entry[1] += event["amount_cents"]
                entry[2] = max(entry[2], event["amount_cents"])
    expected = {
        key: {
            "orders": count,
            "revenue_cents": total,
            "avg_order_cents": total / count,
            "max_order_cents": top,
        }
        for key, (count, total, top) in sums.items()
    }
    return expected, invalid


def read_jsonl_dir(directory: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for part in sorted(directory.glob("part-*.jsonl")):
        rows.extend(json.loads(line) for line in part.read_text().splitlines() if line)
    return rows


WindowsOfWindows = dict[WindowKey, tuple[int, int, int]]


def reference_windows_of_windows(
    source: GeneratorSourceConfig, limits: dict[int, int | None], start_time_ms: int, first_ms: int, second_ms: int
) -> WindowsOfWindows:
    """Two keyed stages of the orders pipeline: revenue per customer per ``first_ms`` window, then per customer
    per ``second_ms`` window (customer, start) -> (windows, revenue, the best first window's revenue). A window
    result's event time is the last millisecond of its window."""
    windows, _ = reference_orders(source, limits, start_time_ms, first_ms)
    second: dict[WindowKey, list[int]] = defaultdict(lambda: [0, 0, 0])
    for (customer, start), window in windows.items():
        event_time = start + first_ms - 1
        entry = second[(customer, event_time - event_time % second_ms)]
        entry[0] += 1
        entry[1] += window["revenue_cents"]
        entry[2] = max(entry[2], window["revenue_cents"])
    return {key: (count, total, best) for key, (count, total, best) in second.items()}


def written_windows_of_windows(rows: list[dict[str, Any]]) -> WindowsOfWindows:
    """What a run of those two stages wrote, as :func:`reference_windows_of_windows` gives it; each result once."""
    keys = [(row["customer_id"], row["window_start_ms"]) for row in rows]
    assert len(keys) == len(set(keys)), "no result is written twice"
    return {
        (row["customer_id"], row["window_start_ms"]): (row["windows"], row["revenue_cents"], row["best_window_cents"])
        for row in rows
    }


def windows_of_windows_stage(size_ms: int) -> dict[str, Any]:
    """The second keyed stage :func:`reference_windows_of_windows` recomputes, as a ``stages`` entry's aggregate."""
    return {
        "key": "customer_id",
        "window": {"type": "tumbling", "size_ms": size_ms},
        "aggregations": {
            "windows": {"fn": "count"},
            "revenue_cents": {"fn": "sum", "column": "revenue_cents"},
            "best_window_cents": {"fn": "max", "column": "revenue_cents"},
        },
    }
