"""An ``OrderPlaced`` event that evolved through three writer versions, and the reader that reads them all.

- v1: ``customerId``, an ``int`` amount, an optional ``note``.
- v2: adds ``currency`` (default ``EUR``) and widens ``amount_cents`` to ``long``.
- v3: drops ``note``, renames ``customerId`` to ``customer_id`` (with the old name as an alias: without it the
  registry refuses v3 under BACKWARD, as v3 could not read v2's records), adds ``channel`` (default ``web``).

The reader (``configs/schemas/order_placed.avsc``, :data:`READER`) is v3 with ``customerId`` as an alias of
``customer_id``: every version resolves to it (Avro's rules; each step was registered BACKWARD). Producers of
all three write to one topic during a rolling upgrade; :func:`records` makes such a topic's records.

What resolution cannot know: v1 was written by the store tills only, so a v1 order's channel is ``pos``, not
the reader's default ``web``. :data:`UPCASTERS` says so (``schema.registry.upcasters``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import fastavro
import pyarrow as pa

from pipelines.schemas.wire_format import framed

__all__ = [
    "READER",
    "READER_FILE",
    "UPCASTERS",
    "V1",
    "V2",
    "V3",
    "WRITERS",
    "encoded",
    "order",
    "records",
    "v1_from_the_tills",
]

READER_FILE = Path(__file__).resolve().parents[2] / "configs" / "schemas" / "order_placed.avsc"
READER: dict[str, Any] = json.loads(READER_FILE.read_text(encoding="utf-8"))

_PLACED_MS = {"name": "placed_ms", "type": {"type": "long", "logicalType": "timestamp-millis"}}
V1: dict[str, Any] = {
    "type": "record",
    "name": "OrderPlaced",
    "namespace": "shop.orders",
    "fields": [
        {"name": "order_id", "type": "string"},
        {"name": "customerId", "type": "string"},
        {"name": "amount_cents", "type": "int"},
        {"name": "note", "type": ["null", "string"], "default": None},
        _PLACED_MS,
    ],
}
V2: dict[str, Any] = {
    **V1,
    "fields": [
        {"name": "order_id", "type": "string"},
        {"name": "customerId", "type": "string"},
        {"name": "amount_cents", "type": "long"},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "currency", "type": "string", "default": "EUR"},
        _PLACED_MS,
    ],
}
V3: dict[str, Any] = {
    **V1,
    "fields": [
        {"name": "order_id", "type": "string"},
        {"name": "customer_id", "type": "string", "aliases": ["customerId"]},  # else v3 could not follow v2
        {"name": "amount_cents", "type": "long"},
        {"name": "currency", "type": "string", "default": "EUR"},
        {"name": "channel", "type": "string", "default": "web"},
        _PLACED_MS,
    ],
}
WRITERS: tuple[dict[str, Any], ...] = (V1, V2, V3)
_PARSED = [fastavro.parse_schema(writer) for writer in WRITERS]


def order(index: int, version: int) -> dict[str, Any]:
    """Order ``index`` as a producer of ``version`` (1-3) writes it."""
    customer = f"c{index % 97:03d}"
    placed_ms = 1_700_000_000_000 + index * 10
    body: dict[str, Any] = {"order_id": f"o{index:07d}", "amount_cents": 100 + index % 5_000, "placed_ms": placed_ms}
    if version == 1:
        return {**body, "customerId": customer, "note": None if index % 3 else f"gift {index}"}
    if version == 2:
        return {**body, "customerId": customer, "note": None, "currency": ("EUR", "USD")[index % 2]}
    return {
        **body,
        "customer_id": customer,
        "currency": ("EUR", "USD")[index % 2],
        "channel": ("web", "app")[index % 2],
    }


def encoded(record: dict[str, Any], version: int, schema_id: int) -> bytes:
    """``record`` in the Confluent wire format, written with version ``version`` registered as ``schema_id``."""
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, _PARSED[version - 1], record)
    return framed(schema_id, buffer.getvalue())


def records(count: int, schema_ids: tuple[int, int, int], start: int = 0) -> list[tuple[int, bytes]]:
    """``count`` orders as a rolling upgrade writes them: versions interleaved (order i by version i % 3 + 1),
    each framed with its version's id. Returns (version, payload) pairs."""
    out = []
    for index in range(start, start + count):
        version = index % 3 + 1
        out.append((version, encoded(order(index, version), version, schema_ids[version - 1])))
    return out


def v1_from_the_tills(orders: pa.Table) -> pa.Table:
    """v1 orders came from the store tills: their channel is ``pos``."""
    index = orders.schema.get_field_index("channel")
    return orders.set_column(index, "channel", pa.array(["pos"] * orders.num_rows, pa.string()))


UPCASTERS = {("OrderPlaced", 1): v1_from_the_tills}
