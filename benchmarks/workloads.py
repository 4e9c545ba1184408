"""The benchmark workloads: their input, the job each system must do, and the expected output.

Every system reads the same pre-filled topic of generator events (8 partitions, 10,000 customers, no invalid
events) and must produce the same records:

- **W1** (windowed aggregate): ``OrderCreated`` events only, 10 s tumbling windows on event time
  (``event_time_ms``), per ``customer_id``: ``orders`` (count) and ``revenue_cents`` (sum of
  ``amount_cents``); one JSON record per (customer, window) to a Kafka topic, keyed by customer id:
  ``{"customer_id", "window_start_ms", "window_end_ms", "orders", "revenue_cents"}``. A window is emitted
  once the watermark (minimum over input partitions of the newest event time, minus 1 s allowed disorder)
  passes its end; at the end of a bounded input every open window is emitted.
- **W2** (stateless): ``OrderCreated`` events only, enriched with ``total_cents = amount_cents * quantity``
  and ``large = total_cents >= 100000``; one JSON record per order, keyed by customer id:
  ``{"event_id", "customer_id", "order_id", "sku", "total_cents", "large"}``.
- **W3** (embedded): W1's aggregate on the built-in generator, with no broker at all.

The expected output is computed here from the generator alone (orjson and dicts), never from a system's
output, so a system is judged against the input, not against eventray.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import orjson

from cluster.produce import ProduceReport, produce_events
from pipelines.config import GeneratorSourceConfig
from pipelines.generator import generate_events
from pipelines.kafka_config import KafkaConnectionConfig

__all__ = [
    "ALLOWED_DISORDER_MS",
    "CUSTOMERS",
    "EVENT_TIME_RATE_PER_S",
    "LARGE_ORDER_CENTS",
    "PARTITIONS",
    "START_TIME_MS",
    "WINDOW_MS",
    "WORKLOADS",
    "Expected",
    "WindowKey",
    "enrich",
    "expected_output",
    "generator_config",
    "order_tuple",
    "per_partition_events",
    "prefill_topic",
    "window_record",
]

PARTITIONS = 8
CUSTOMERS = 10_000
SEED = 42
START_TIME_MS = 1_767_225_600_000  # fixed, so every run and the expected output see the same events
# Event-time density of the input: 10,000 events per second of event time, so 200,000 events span 20 s
# (two 10 s windows and a sliver) and 1,000,000 span 100 s; each customer has ~5 orders per window.
EVENT_TIME_RATE_PER_S = 10_000
WINDOW_MS = 10_000
ALLOWED_DISORDER_MS = 1_000
LARGE_ORDER_CENTS = 100_000
WORKLOADS = ("W1", "W2", "W3")

WindowKey = tuple[str, int]  # (customer id, window start ms)


def generator_config() -> GeneratorSourceConfig:
    """The generator both the pre-filled topics and W3's embedded source use."""
    return GeneratorSourceConfig(
        partitions=PARTITIONS,
        seed=SEED,
        rate_per_s=None,
        event_time_rate_per_s=EVENT_TIME_RATE_PER_S,
        invalid_fraction=0.0,
        customers=CUSTOMERS,
        start_time_ms=START_TIME_MS,
    )


def per_partition_events(events: int) -> list[int]:
    """How ``produce_events`` and eventray's ``max_events`` split a total over partitions (first take more)."""
    base, extra = divmod(events, PARTITIONS)
    return [base + (partition < extra) for partition in range(PARTITIONS)]


async def prefill_topic(bootstrap: str, topic: str, events: int) -> ProduceReport:
    """Create ``topic`` (8 partitions) and fill it with ``events`` generator events, as ``eventray produce``."""
    connection = KafkaConnectionConfig(bootstrap_servers=bootstrap)
    return await produce_events(connection, topic, events, generator_config(), None, START_TIME_MS)


def window_record(customer_id: str, window_start_ms: int, orders: int, revenue_cents: int) -> dict[str, object]:
    """W1's output record."""
    return {
        "customer_id": customer_id,
        "window_start_ms": window_start_ms,
        "window_end_ms": window_start_ms + WINDOW_MS,
        "orders": orders,
        "revenue_cents": revenue_cents,
    }


def enrich(event: dict[str, object]) -> dict[str, object]:
    """W2's output record for one ``OrderCreated`` event (plain Python: what the peers run per event)."""
    total = int(event["amount_cents"]) * int(event["quantity"])  # type: ignore[call-overload]
    return {
        "event_id": event["event_id"],
        "customer_id": event["customer_id"],
        "order_id": event["order_id"],
        "sku": event["sku"],
        "total_cents": total,
        "large": total >= LARGE_ORDER_CENTS,
    }


@dataclass
class Expected:
    """What a correct system outputs for ``events`` input events.

    ``windows``: W1/W3 results by (customer, window start) -> (orders, revenue). ``final_watermark_ms``: the
    watermark once every event was read and before the end-of-input flush; windows ending at or before it
    close in any system that closes windows on event time, the others only in systems that flush at the end.
    ``orders``: W2 results by event id -> (customer, order, sku, total, large).
    """

    events: int
    order_events: int = 0
    windows: dict[WindowKey, tuple[int, int]] = field(default_factory=dict)
    final_watermark_ms: int = 0
    orders: dict[str, tuple[object, ...]] = field(default_factory=dict)


def expected_output(events: int, chunk: int = 50_000) -> Expected:
    """Recompute every workload's output from the generator (independent of every system under test)."""
    expected = Expected(events=events)
    sums: dict[WindowKey, list[int]] = defaultdict(lambda: [0, 0])
    newest: list[int] = []
    for partition, limit in enumerate(per_partition_events(events)):
        partition_newest = -(1 << 62)
        for start in range(0, limit, chunk):
            generated = generate_events(generator_config(), partition, start, min(chunk, limit - start), START_TIME_MS)
            for payload in generated.payloads.to_pylist():
                event = orjson.loads(payload)
                time_ms = event["event_time_ms"]
                partition_newest = max(partition_newest, time_ms)
                if event["event_type"] != "OrderCreated":
                    continue
                expected.order_events += 1
                entry = sums[(event["customer_id"], time_ms - time_ms % WINDOW_MS)]
                entry[0] += 1
                entry[1] += event["amount_cents"]
                record = enrich(event)
                expected.orders[str(record["event_id"])] = order_tuple(record)
        newest.append(partition_newest)
    expected.windows = {key: (count, total) for key, (count, total) in sums.items()}
    expected.final_watermark_ms = min(newest) - ALLOWED_DISORDER_MS
    return expected


def order_tuple(record: dict[str, object]) -> tuple[object, ...]:
    """The compared fields of one W2 output record."""
    return (record["customer_id"], record["order_id"], record["sku"], record["total_cents"], record["large"])
