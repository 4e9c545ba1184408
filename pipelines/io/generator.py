"""The built-in event generator: partitioned, deterministic, replayable, rate-controlled.

Event ``i`` of partition ``p`` is a pure function of ``(seed, p, i)`` (and the config's shape parameters), so a
replay from any offset yields the same bytes, and a test can recompute every event without running a pipeline.
Events are JSON objects built column-wise (numpy for the random draws, ``pyarrow.compute`` for the text), one
of UserRegistered, OrderCreated, PaymentProcessed, ShipmentDispatched, InventoryUpdated.

A configurable fraction of events is invalid, by default in four kinds: truncated JSON (undecodable), no event
time (required field missing), a negative amount and an unknown event type (schema checks fail); a fifth,
``wrong_type`` (``"amount_cents": "n/a"``: a value that does not fit its column), is made when
``invalid_kinds`` names it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config.pipeline import DEFAULT_INVALID_KINDS, GeneratorSourceConfig
from pipelines.io.rate_profile import RateProfile

__all__ = [
    "EVENT_TYPE_WEIGHTS",
    "INVALID_KINDS",
    "GeneratedEvents",
    "generate_events",
]

EVENT_TYPE_WEIGHTS: dict[str, float] = {
    "UserRegistered": 0.05,
    "OrderCreated": 0.50,
    "PaymentProcessed": 0.20,
    "ShipmentDispatched": 0.10,
    "InventoryUpdated": 0.15,
}
INVALID_KINDS = DEFAULT_INVALID_KINDS
_WRONG_TYPE_AMOUNT = pa.scalar('"amount_cents":"n/a"')

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_TRUNCATE_AT = 24


@dataclass(frozen=True)
class GeneratedEvents:
    """Payloads (JSON bytes) of offsets ``[start, start + len)`` of one partition, and which kind of invalid
    each one is (empty string: valid). ``event_time_ms`` is the intended event time, also for invalid ones."""

    partition: int
    offsets: np.ndarray
    payloads: pa.Array
    invalid_kind: np.ndarray
    event_time_ms: np.ndarray


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijective, well-spread 64-bit hash."""
    values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    mixed: np.ndarray = values ^ (values >> np.uint64(31))
    return mixed


def _stream(seed: int, partition: int, offsets: np.ndarray, salt: int) -> np.ndarray:
    base = (seed * _GOLDEN + (partition + 1) * 0xC2B2AE3D27D4EB4F + salt * 0x165667B19E3779F9) & _MASK
    return _mix(offsets.astype(np.uint64) * np.uint64(_GOLDEN) + np.uint64(base))


def _unit(values: np.ndarray) -> np.ndarray:
    """Uniform floats in [0, 1) from 64-bit hashes."""
    unit: np.ndarray = (values >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return unit


def _text(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    digits = pc.utf8_lpad(pc.cast(pa.array(numbers), pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _json_field(name: str, values: pa.Array, quoted: bool) -> pa.Array:
    """``"name":value`` per row, ``"name":null`` where the value is null."""
    present = (
        pc.binary_join_element_wise(f'"{name}":"', values, '"', "")
        if quoted
        else pc.binary_join_element_wise(f'"{name}":', pc.cast(values, pa.string()), "")
    )
    return pc.if_else(pc.is_valid(values), present, pa.scalar(f'"{name}":null'))


def event_times(config: GeneratorSourceConfig, partition: int, offsets: np.ndarray, start_ms: int) -> np.ndarray:
    """Intended event time of each offset: evenly spaced at the per-partition rate, minus bounded jitter."""
    rate = config.rate_per_s if config.rate_per_s is not None else config.event_time_rate_per_s
    per_partition = rate / config.partitions
    if config.bursts:
        arrival_s = RateProfile(per_partition, config.bursts).arrival_s(offsets)
        spaced = start_ms + np.floor(arrival_s * 1000.0).astype(np.int64)
    else:
        spaced = start_ms + np.floor(offsets * (1000.0 / per_partition)).astype(np.int64)
    jitter = _stream(config.seed, partition, offsets, salt=7) % np.uint64(config.max_out_of_order_ms + 1)
    times: np.ndarray = spaced - jitter.astype(np.int64)
    return times


def generate_events(
    config: GeneratorSourceConfig, partition: int, start: int, count: int, start_ms: int
) -> GeneratedEvents:
    """The events at offsets ``[start, start + count)`` of ``partition`` (pure: same inputs, same bytes)."""
    offsets = np.arange(start, start + count, dtype=np.int64)
    seed = config.seed
    types = np.array(list(EVENT_TYPE_WEIGHTS), dtype=object)
    cumulative = np.cumsum(list(EVENT_TYPE_WEIGHTS.values()))
    type_index = np.minimum(np.searchsorted(cumulative, _unit(_stream(seed, partition, offsets, 1)), side="right"), 4)
    event_type = types[type_index]
    times = event_times(config, partition, offsets, start_ms)

    invalid = _unit(_stream(seed, partition, offsets, 9)) < config.invalid_fraction
    kinds = config.invalid_kinds
    kind_index = (_stream(seed, partition, offsets, 10) % np.uint64(len(kinds))).astype(np.int64)
    invalid_kind = np.where(invalid, np.array(kinds, dtype=object)[kind_index], "")

    customer = (_stream(seed, partition, offsets, 2) % np.uint64(config.customers)).astype(np.int64)
    amount = 100 + (_stream(seed, partition, offsets, 3) % np.uint64(49_901)).astype(np.int64)
    sku = (_stream(seed, partition, offsets, 4) % np.uint64(config.skus)).astype(np.int64)
    quantity_draw = (_stream(seed, partition, offsets, 5) % np.uint64(1_000)).astype(np.int64)
    currency = np.array(["EUR", "USD", "GBP"], dtype=object)[
        (_stream(seed, partition, offsets, 6) % np.uint64(3)).astype(np.int64)
    ]

    is_order = event_type == "OrderCreated"
    has_amount = is_order | (event_type == "PaymentProcessed")
    has_order = has_amount | (event_type == "ShipmentDispatched")
    has_sku = is_order | (event_type == "InventoryUpdated")
    has_customer = event_type != "InventoryUpdated"

    amount = np.where(invalid_kind == "negative_amount", -amount, amount)
    quantity = np.where(is_order, 1 + quantity_draw % 5, quantity_draw)
    event_type = np.where(invalid_kind == "unknown_event_type", "OrderCancelledV0", event_type)
    has_time = invalid_kind != "missing_event_time"

    customer_text = _text("c", customer, 5)
    amounts = pa.array(amount, mask=~(has_amount | (invalid_kind == "negative_amount")))
    wrong_type = pa.array(invalid_kind == "wrong_type")
    fields = [
        _json_field(
            "event_id",
            pc.binary_join_element_wise(
                f"{config.event_id_prefix}{partition}", pc.cast(pa.array(offsets), pa.string()), "-"
            ),
            True,
        ),
        _json_field("event_type", pa.array(event_type, pa.string()), True),
        _json_field("event_time_ms", pa.array(times, mask=~has_time), False),
        _json_field(
            "customer_id",
            pc.if_else(pa.array(has_customer), customer_text, pa.scalar(None, pa.string())),
            True,
        ),
        _json_field(
            "order_id",
            pc.if_else(pa.array(has_order), _text(f"o{partition}-", offsets, 1), pa.scalar(None, pa.string())),
            True,
        ),
        pc.if_else(wrong_type, _WRONG_TYPE_AMOUNT, _json_field("amount_cents", amounts, False)),
        _json_field("currency", pa.array(currency, pa.string(), mask=~has_amount), True),
        _json_field("sku", pc.if_else(pa.array(has_sku), _text("sku-", sku, 4), pa.scalar(None, pa.string())), True),
        _json_field("quantity", pa.array(quantity, mask=~has_sku), False),
        _json_field(
            "email",
            pc.if_else(
                pa.array(event_type == "UserRegistered"),
                pc.binary_join_element_wise("user-", customer_text, "@example.com", ""),
                pa.scalar(None, pa.string()),
            ),
            True,
        ),
    ]
    body = pc.binary_join_element_wise(*fields, ",")
    payloads = pc.binary_join_element_wise("{", body, "}", "")
    truncated = pc.utf8_slice_codeunits(payloads, 0, _TRUNCATE_AT)
    payloads = pc.if_else(pa.array(invalid_kind == "truncated_json"), truncated, payloads)
    return GeneratedEvents(
        partition=partition,
        offsets=offsets,
        payloads=pc.cast(payloads, pa.binary()),
        invalid_kind=invalid_kind,
        event_time_ms=times,
    )
