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
