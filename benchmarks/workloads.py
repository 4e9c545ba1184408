"""The benchmark workloads: their input, the job each system must do, and the expected output.

Every system reads the same pre-filled topic of generator events (8 partitions, 10,000 customers, no invalid
events; W1D alone reads a dirty copy of it) and must produce the same records:

- **W1** (windowed aggregate): ``OrderCreated`` events only, 10 s tumbling windows on event time
  (``event_time_ms``), per ``customer_id``: ``orders`` (count) and ``revenue_cents`` (sum of
  ``amount_cents``); one JSON record per (customer, window) to a Kafka topic, keyed by customer id:
  ``{"customer_id", "window_start_ms", "window_end_ms", "orders", "revenue_cents"}``. A window is emitted
  once the watermark (minimum over input partitions of the newest event time, minus 1 s allowed disorder)
  passes its end; at the end of a bounded input every open window is emitted.
- **W1D** (W1 on a dirty feed): W1's job on a second topic of the same generator in which 1 % of the events are
  invalid, drawn equally from five kinds: truncated JSON, no event time, a negative amount, an unknown event
  type and ``"amount_cents":"n/a"`` (a value that does not fit the int64 column). Every other event is the same
  bytes as in W1's topic at the same offset. Only valid events count: the output is W1's aggregate over the
  valid ``OrderCreated`` events. The watermark is taken over the events a schema accepts, which includes the
  unknown event types (well-formed events of a type the job does not aggregate, like ``PaymentProcessed``) and
  leaves out the other four kinds (rejected before their event time is read: eventray dead-letters them).
- **W2** (stateless): ``OrderCreated`` events only, enriched with ``total_cents = amount_cents * quantity``
  and ``large = total_cents >= 100000``; one JSON record per order, keyed by customer id:
  ``{"event_id", "customer_id", "order_id", "sku", "total_cents", "large"}``.
- **W3** (embedded): W1's aggregate on the built-in generator, with no broker at all.

The expected output is computed here from the generator alone (its payloads decoded to plain dicts, summed in
dicts), never from a system's output, so a system is judged against the input, not against eventray. The
decoder is msgspec's, a core dependency, so that the unit tests import this module without the ``bench`` extra.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from cluster.commands.produce import ProduceReport, produce_events
from pipelines.config.kafka import KafkaConnectionConfig
from pipelines.config.pipeline import DEFAULT_INVALID_KINDS, GeneratorSourceConfig, InvalidKind
from pipelines.io.generator import GeneratedEvents, generate_events

__all__ = [
    "ALLOWED_DISORDER_MS",
    "CUSTOMERS",
    "DIRTY_INVALID_FRACTION",
    "DIRTY_INVALID_KINDS",
    "DIRTY_WORKLOADS",
    "EVENT_TIME_RATE_PER_S",
    "LARGE_ORDER_CENTS",
    "PARTITIONS",
    "SCHEMA_ACCEPTED_KINDS",
    "START_TIME_MS",
    "WINDOW_MS",
    "WORKLOADS",
    "Expected",
    "WindowKey",
    "enrich",
    "expected_output",
    "generator_config",
    "is_dirty_feed",
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
# W1D runs right after W1 so that `benchmarks.run` measures both on the same machine state
WORKLOADS = ("W1", "W1D", "W2", "W3")
DIRTY_WORKLOADS = frozenset({"W1D"})
DIRTY_INVALID_FRACTION = 0.01
# Spelled out, not "every kind the generator knows": a new kind must not change W1D's input unnoticed.
DIRTY_INVALID_KINDS: tuple[InvalidKind, ...] = (
    "truncated_json",
    "missing_event_time",
    "negative_amount",
    "unknown_event_type",
    "wrong_type",
)
# The events a W1D consumer decodes as valid ("": valid). An unknown event type is well-formed and passes the
# schema; only the OrderCreated filter drops it, after its event time moved the watermark. The other kinds are
# rejected while decoding (eventray dead-letters them), before the watermark sees their event time.
SCHEMA_ACCEPTED_KINDS = ("", "unknown_event_type")
_NO_EVENT_TIME = -(1 << 62)

WindowKey = tuple[str, int]  # (customer id, window start ms)


def is_dirty_feed(workload: str) -> bool:
    """Whether ``workload`` reads the dirty topic (:func:`generator_config` with ``dirty=True``)."""
    return workload in DIRTY_WORKLOADS


def generator_config(dirty: bool = False) -> GeneratorSourceConfig:
    """The generator of the pre-filled topics and of W3's embedded source.

    ``dirty``: W1D's feed, the same generator with ``DIRTY_INVALID_FRACTION`` of the events invalid, of the
    kinds ``DIRTY_INVALID_KINDS``; an event's validity is drawn apart from its fields, so every valid event is
    the same bytes as the clean feed's event at the same offset.
    """
    return GeneratorSourceConfig(
        partitions=PARTITIONS,
        seed=SEED,
        rate_per_s=None,
        event_time_rate_per_s=EVENT_TIME_RATE_PER_S,
        invalid_fraction=DIRTY_INVALID_FRACTION if dirty else 0.0,
        invalid_kinds=list(DIRTY_INVALID_KINDS if dirty else DEFAULT_INVALID_KINDS),
        customers=CUSTOMERS,
        start_time_ms=START_TIME_MS,
    )


def per_partition_events(events: int) -> list[int]:
    """How ``produce_events`` and eventray's ``max_events`` split a total over partitions (first take more)."""
    base, extra = divmod(events, PARTITIONS)
    return [base + (partition < extra) for partition in range(PARTITIONS)]


async def prefill_topic(bootstrap: str, topic: str, events: int, dirty: bool = False) -> ProduceReport:
    """Create ``topic`` (8 partitions) and fill it with ``events`` generator events, as ``eventray produce``;
    ``dirty``: W1D's feed (see :func:`generator_config`)."""
    connection = KafkaConnectionConfig(bootstrap_servers=bootstrap)
    return await produce_events(connection, topic, events, generator_config(dirty), None, START_TIME_MS)


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
    """What a correct system outputs for ``events`` input events (of the dirty feed when ``dirty``).

    ``windows``: W1/W1D/W3 results by (customer, window start) -> (orders, revenue), over valid events only.
    ``final_watermark_ms``: the watermark once every event was read and before the end-of-input flush; windows
    ending at or before it close in any system that closes windows on event time, the others only in systems
    that flush at the end. ``orders``: W2 results by event id -> (customer, order, sku, total, large).
    ``order_events``: valid ``OrderCreated`` events. ``rejected_events``: invalid events a schema rejects (every
    kind but ``unknown_event_type``), which eventray dead-letters; 0 for the clean feed.
    """

    events: int
    dirty: bool = False
    order_events: int = 0
    rejected_events: int = 0
    windows: dict[WindowKey, tuple[int, int]] = field(default_factory=dict)
    final_watermark_ms: int = 0
    orders: dict[str, tuple[object, ...]] = field(default_factory=dict)


def expected_output(events: int, *, dirty: bool = False, chunk: int = 50_000) -> Expected:
    """Recompute every workload's output from the generator (independent of every system under test).

    ``dirty``: of W1D's feed, where only valid events count and the watermark comes from the events a schema
    accepts (``SCHEMA_ACCEPTED_KINDS``); the payloads of the other invalid events are never decoded.
    """
    expected = Expected(events=events, dirty=dirty)
    config = generator_config(dirty)
    sums: dict[WindowKey, list[int]] = defaultdict(lambda: [0, 0])
    newest: list[int] = []
    for partition, limit in enumerate(per_partition_events(events)):
        partition_newest = _NO_EVENT_TIME
        for start in range(0, limit, chunk):
            generated = generate_events(config, partition, start, min(chunk, limit - start), START_TIME_MS)
            expected.rejected_events += int(np.count_nonzero(~np.isin(generated.invalid_kind, SCHEMA_ACCEPTED_KINDS)))
            for event, valid in _accepted_events(generated):
                partition_newest = max(partition_newest, event["event_time_ms"])
                if valid and event["event_type"] == "OrderCreated":
                    _add_order(expected, sums, event)
        newest.append(partition_newest)
    expected.windows = {key: (count, total) for key, (count, total) in sums.items()}
    expected.final_watermark_ms = min(newest) - ALLOWED_DISORDER_MS
    return expected


def _accepted_events(generated: GeneratedEvents) -> Iterator[tuple[dict[str, Any], bool]]:
    """The events of ``generated`` a schema accepts, decoded, in offset order, each with whether it is valid."""
    payloads = generated.payloads.to_pylist()
    for index, kind in enumerate(generated.invalid_kind.tolist()):
        if kind in SCHEMA_ACCEPTED_KINDS:
            yield msgspec.json.decode(payloads[index]), not kind


def _add_order(expected: Expected, sums: dict[WindowKey, list[int]], event: dict[str, Any]) -> None:
    """Count one valid ``OrderCreated`` event into W1's windows and W2's orders."""
    time_ms = event["event_time_ms"]
    expected.order_events += 1
    entry = sums[(event["customer_id"], time_ms - time_ms % WINDOW_MS)]
    entry[0] += 1
    entry[1] += event["amount_cents"]
    record = enrich(event)
    expected.orders[str(record["event_id"])] = order_tuple(record)


def order_tuple(record: dict[str, object]) -> tuple[object, ...]:
    """The compared fields of one W2 output record."""
    return (record["customer_id"], record["order_id"], record["sku"], record["total_cents"], record["large"])
