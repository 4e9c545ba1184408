"""What dead letters keep of invalid events: raw, masked (as the mask operators mask) or omitted payloads."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import SecretStr

from pipelines.config import MaskOp, load_config, parse_config
from pipelines.dead_letter_policy import WITHHELD, DeadLetterPolicy
from pipelines.errors import ConfigError
from pipelines.plan import compile_pipeline
from pipelines.records import DEAD_LETTER_SCHEMA

KEY = "dead-letter-test-key-0123456789abcdef"
ORDERS = Path(__file__).resolve().parents[2] / "configs" / "orders.yaml"
CANARY = "canary.person@example.com"

MASKS = [
    MaskOp(op="mask", column="email", method="hash").model_copy(update={"key": SecretStr(KEY)}),
    MaskOp(op="mask", column="card", method="keep_last", keep_last=4),
    MaskOp(op="mask", column="name", method="redact"),
]


def dead_letters(payloads: list[bytes | None]) -> pa.RecordBatch:
    count = len(payloads)
    return pa.RecordBatch.from_pydict(
        {
            "reason": ["failed check: amount_cents >= 0"] * count,
            "error_type": ["invalid"] * count,
            "topic": ["orders"] * count,
            "partition": pa.array([3] * count, pa.int32()),
            "offset": pa.array(range(100, 100 + count), pa.int64()),
            "key": [b"customer-7"] * count,
            "payload": pa.array(payloads, pa.binary()),
            "traceparent": [None] * count,
        },
        schema=DEAD_LETTER_SCHEMA,
    )


def hmac32(text: str) -> str:
    return hmac.new(KEY.encode(), text.encode(), hashlib.sha256).hexdigest()[:32]


def event(**fields: object) -> bytes:
    return json.dumps({"event_id": "e1", "amount_cents": -5, **fields}).encode()


def test_raw_keeps_the_bytes_as_they_arrived() -> None:
    batch = dead_letters([event(email=CANARY)])
    assert DeadLetterPolicy.of("raw", "raw", MASKS).apply(batch) is batch


def test_masked_masks_each_named_field_as_its_operator_does_and_keeps_the_rest() -> None:
    batch = dead_letters([event(email=CANARY, card="4111111111111111", name="Ann Lee"), event(email=None)])
    out = DeadLetterPolicy.of("masked", "raw", MASKS).apply(batch)
    first, second = (json.loads(payload) for payload in out.column("payload").to_pylist())
    assert first == {"event_id": "e1", "amount_cents": -5, "email": hmac32(CANARY), "card": "***1111", "name": "***"}
    assert second == {"event_id": "e1", "amount_cents": -5, "email": None}
    assert CANARY.encode() not in b"".join(out.column("payload").to_pylist())
    assert out.column("reason").to_pylist() == batch.column("reason").to_pylist()
    assert out.column("offset").to_pylist() == [100, 101] and out.column("key").to_pylist() == [b"customer-7"] * 2


def test_a_payload_that_cannot_be_masked_field_by_field_is_withheld_and_the_reason_says_so() -> None:
    unmaskable = [b"\xff\xfe" + CANARY.encode(), b'["' + CANARY.encode() + b'"]', b"not json " + CANARY.encode()]
    out = DeadLetterPolicy.of("masked", "raw", MASKS).apply(dead_letters([*unmaskable, None]))
    assert out.column("payload").to_pylist() == [None, None, None, None]
    reasons = out.column("reason").to_pylist()
    assert reasons[:3] == [f"failed check: amount_cents >= 0{WITHHELD}"] * 3
    assert reasons[3] == "failed check: amount_cents >= 0", "a missing payload was not withheld"
    assert out.column("offset").to_pylist() == [100, 101, 102, 103], "every dead letter is still there"


def test_a_payload_nested_past_the_parsers_depth_is_withheld_not_a_crash() -> None:
    """The bad-input corpus's deep nesting (a ``limit`` dead letter) must not stop the actor that masks it."""
    deep = b'{"email": "' + CANARY.encode() + b'", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    out = DeadLetterPolicy.of("masked", "raw", MASKS).apply(dead_letters([deep, event(email=CANARY)]))
    assert out.column("payload").to_pylist()[0] is None
    assert json.loads(out.column("payload").to_pylist()[1])["email"] == hmac32(CANARY)


def test_omitted_keeps_no_payload_and_the_key_policy_drops_keys() -> None:
    out = DeadLetterPolicy.of("omitted", "omitted", MASKS).apply(dead_letters([event(email=CANARY)]))
    assert out.column("payload").to_pylist() == [None] and out.column("key").to_pylist() == [None]
    assert out.column("offset").to_pylist() == [100]


def test_late_events_are_rows_masked_already_so_masked_is_not_applied_twice() -> None:
    already = event(email=hmac32(CANARY))
    out = DeadLetterPolicy.of("masked", "omitted", MASKS).apply_to_late(dead_letters([already]))
    assert out.column("payload").to_pylist() == [already] and out.column("key").to_pylist() == [None]


def test_masked_needs_json_payloads_and_mask_operators() -> None:
    with pytest.raises(ConfigError, match=r"dead_letter\.payload: masked works on JSON payloads"):
        compile_pipeline(parse_config({
            "name": "raw-dead-letters", "source": {"type": "generator"},
            "schema": {"format": "raw", "fields": {"value": "binary"}},
            "sinks": [{"type": "console"}], "dead_letter": {"type": "jsonl", "payload": "masked"},
        }))  # fmt: skip
    with pytest.raises(ConfigError, match=r"no mask operator names a field to mask"):
        compile_pipeline(load_config(ORDERS, {"dead_letter.payload": "masked", "operators": []}))
    compile_pipeline(load_config(ORDERS, {"dead_letter.payload": "masked"}))
