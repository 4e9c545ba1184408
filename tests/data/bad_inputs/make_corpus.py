"""Writes the bad-input corpus beside this file: one class of bad record per file, one record per line (JSONL as
a file source reads it), each line's record bad in that class's way, for the orders schema
(``pipelines.examples.orders``). ``python tests/data/bad_inputs/make_corpus.py`` rewrites the files; they are committed,
so tests read real bytes, not bytes built in the test.

``manifest.json`` maps each file to the error type every record of it must get in the dead-letter output
(``null``: the records are valid and must come through unchanged, such as added fields).
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
BASE_TIME_MS = 1_767_225_600_000


def order(number: int, **fields: object) -> dict[str, object]:
    record: dict[str, object] = {
        "event_id": f"bad-{number}",
        "event_type": "OrderCreated",
        "event_time_ms": BASE_TIME_MS + number,
        "customer_id": f"c{number % 7:05d}",
        "order_id": f"o-{number}",
        "amount_cents": 100 + number,
        "currency": "EUR",
        "sku": "sku-0001",
        "quantity": 1,
    }
    record.update(fields)
    return record


def line(record: object) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode()


def without(number: int, name: str) -> bytes:
    record = order(number)
    del record[name]
    return line(record)


def renamed(number: int, old: str, new: str) -> bytes:
    record = order(number)
    record[new] = record.pop(old)
    return line(record)


def deep(number: int, depth: int) -> bytes:
    """An order with an ignored field nested ``depth`` levels deep (written as text: encoders recurse)."""
    return line(order(number, extra=0)).replace(b'"extra":0', b'"extra":' + b"[" * depth + b"1" + b"]" * depth)


CLASSES: dict[str, tuple[str | None, list[bytes]]] = {
    "undecodable_bytes": ("undecodable", [b"\x00\x01\x02binary", b"\x89PNG\r\x1a\x1b", b"}{", b"not json at all"]),
    "bad_utf8": ("undecodable", [line(order(1)).replace(b"EUR", b"E\xffR"), b'{"event_id":"\xc3\x28"}']),
    "truncated_json": ("undecodable", [line(order(2))[:30], line(order(3))[:-1], b'{"event_id":']),
    "not_an_object": ("undecodable", [b"null", b"[1,2,3]", b'"a string"', b"42"]),
    "wrong_types": (
        "invalid",
        [
            line(order(4, amount_cents="n/a")),
            line(order(5, event_id=17)),
            line(order(6, quantity=[1])),
            line(order(7, event_time_ms="yesterday")),
        ],
    ),
    "nulls_in_required": (
        "invalid",
        [line(order(8, event_id=None)), line(order(9, event_time_ms=None)), line(order(10, event_type=None))],
    ),
    "fields_removed": ("invalid", [without(11, "event_time_ms"), without(12, "event_type")]),
    "fields_renamed": ("invalid", [renamed(13, "event_time_ms", "eventTime"), renamed(14, "event_id", "id")]),
    "fields_added": (None, [line(order(15, coupon="SAVE10", device={"os": "ios"})), line(order(16, tags=[1, 2]))]),
    # 1e400 has no float64: the JSON is not readable as numbers at all; the others parse but do not fit int64
    "number_out_of_range": ("undecodable", [line(order(17)).replace(b'"amount_cents":117', b'"amount_cents":1e400')]),
    "number_overflow": ("invalid", [line(order(18, amount_cents=2**64)), line(order(19, quantity=12.5))]),
    "deep_nesting": ("limit", [deep(20, 65), deep(21, 100_000)]),
    "oversize": ("limit", [line(order(22, note="x" * 1_100_000))]),
    "failed_checks": ("invalid", [line(order(23, amount_cents=-5)), line(order(24, event_type="OrderCancelledV0"))]),
}


def main() -> None:
    manifest = {}
    for name, (error_type, records) in CLASSES.items():
        assert all(b"\n" not in record for record in records), name
        (HERE / f"{name}.jsonl").write_bytes(b"\n".join(records) + b"\n")
        manifest[f"{name}.jsonl"] = error_type
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
