"""The event generator: pure, replayable from any offset, with bounded jitter and the configured mix."""

from __future__ import annotations

import math
from collections import Counter

import msgspec
import numpy as np
import pyarrow as pa
import pytest

from pipelines.config.pipeline import EVENT_TYPES, GeneratorSourceConfig
from pipelines.decode.codecs import JsonDecoder
from pipelines.decode.schema import EventSchema
from pipelines.examples.orders import orders_pipeline
from pipelines.io.generator import EVENT_TYPE_WEIGHTS, INVALID_KINDS, GeneratedEvents, event_times, generate_events
from pipelines.io.records import RawBatch

START_MS = 1_700_000_000_000
CONFIG = GeneratorSourceConfig(partitions=4, seed=11, rate_per_s=8_000, invalid_fraction=0.01, max_out_of_order_ms=300)
BIG = 100_000


@pytest.fixture(scope="module")
def many() -> GeneratedEvents:
    return generate_events(CONFIG, partition=1, start=0, count=BIG, start_ms=START_MS)


@pytest.fixture(scope="module")
def decoded(many: GeneratedEvents) -> list[dict[str, object] | None]:
    """Each payload decoded, or None where it is not valid JSON."""
    return [_decode_or_none(payload) for payload in many.payloads.to_pylist()]


def _decode_or_none(payload: bytes) -> dict[str, object] | None:
    try:
        return msgspec.json.decode(payload)  # type: ignore[no-any-return]
    except msgspec.DecodeError:
        return None


def test_same_inputs_give_the_same_bytes() -> None:
    first = generate_events(CONFIG, 2, 500, 300, START_MS)
    second = generate_events(CONFIG, 2, 500, 300, START_MS)
    assert first.payloads.equals(second.payloads)
    assert first.invalid_kind.tolist() == second.invalid_kind.tolist()
    assert first.event_time_ms.tolist() == second.event_time_ms.tolist()
    assert first.offsets.tolist() == list(range(500, 800))
    assert first.partition == 2


@pytest.mark.parametrize(("start", "stop"), [(0, 1), (0, 700), (1, 2), (123, 456), (999, 1000), (250, 1000)])
def test_a_range_equals_the_slice_of_a_bigger_range(start: int, stop: int) -> None:
    whole = generate_events(CONFIG, 3, 0, 1_000, START_MS)
    part = generate_events(CONFIG, 3, start, stop - start, START_MS)
    assert part.payloads.to_pylist() == whole.payloads.to_pylist()[start:stop]
    assert part.invalid_kind.tolist() == whole.invalid_kind.tolist()[start:stop]
    assert part.event_time_ms.tolist() == whole.event_time_ms.tolist()[start:stop]
    assert part.offsets.tolist() == list(range(start, stop))


def test_replay_in_chunks_equals_one_read() -> None:
    whole = generate_events(CONFIG, 0, 40, 960, START_MS).payloads.to_pylist()
    chunks: list[bytes] = []
    position = 40
    for size in (1, 7, 100, 13, 839):
        chunks.extend(generate_events(CONFIG, 0, position, size, START_MS).payloads.to_pylist())
        position += size
    assert chunks == whole


def test_different_partitions_differ() -> None:
    events = [generate_events(CONFIG, p, 0, 2_000, START_MS) for p in range(4)]
    for a in range(4):
        for b in range(a + 1, 4):
            pairs = zip(events[a].payloads.to_pylist(), events[b].payloads.to_pylist(), strict=True)
            assert not any(x == y for x, y in pairs)  # event ids alone differ ("<partition>-<offset>")
            assert events[a].invalid_kind.tolist() != events[b].invalid_kind.tolist()
            assert events[a].event_time_ms.tolist() != events[b].event_time_ms.tolist()  # jitter differs


def test_different_seeds_differ_in_content() -> None:
    def bodies(seed: int) -> list[str]:
        config = CONFIG.model_copy(update={"seed": seed, "invalid_fraction": 0.0})
        events = generate_events(config, 0, 0, 200, START_MS)
        return [payload.split(b'"event_type"')[1].decode() for payload in events.payloads.to_pylist()]

    same = sum(x == y for x, y in zip(bodies(1), bodies(2), strict=True))
    assert same < 20


def test_event_ids_name_partition_and_offset(decoded: list[dict[str, object] | None]) -> None:
    for offset, record in enumerate(decoded):
        if record is not None:
            assert record["event_id"] == f"1-{offset}"


def test_invalid_fraction_matches_within_a_statistical_bound(many: GeneratedEvents) -> None:
    invalid = int((many.invalid_kind != "").sum())
    expected = BIG * CONFIG.invalid_fraction
    sigma = math.sqrt(BIG * CONFIG.invalid_fraction * (1 - CONFIG.invalid_fraction))
    assert abs(invalid - expected) < 5 * sigma


@pytest.mark.parametrize("fraction", [0.0, 0.3, 1.0])
def test_invalid_fraction_extremes(fraction: float) -> None:
    config = CONFIG.model_copy(update={"invalid_fraction": fraction})
    count = 20_000
    invalid = int((generate_events(config, 0, 0, count, START_MS).invalid_kind != "").sum())
    sigma = math.sqrt(count * fraction * (1 - fraction))
    assert abs(invalid - count * fraction) <= 5 * sigma


def test_every_invalid_kind_occurs_about_equally(many: GeneratedEvents) -> None:
    counts = Counter(kind for kind in many.invalid_kind.tolist() if kind)
    assert set(counts) == set(INVALID_KINDS)
    total = sum(counts.values())
    for kind in INVALID_KINDS:
        assert abs(counts[kind] - total / 4) < 5 * math.sqrt(total * 0.25 * 0.75), counts


def test_invalid_kinds_look_like_their_kind(many: GeneratedEvents, decoded: list[dict[str, object] | None]) -> None:
    for kind, record in zip(many.invalid_kind.tolist(), decoded, strict=True):
        if kind == "truncated_json":
            assert record is None
            continue
        assert record is not None
        if kind == "missing_event_time":
            assert record["event_time_ms"] is None
        elif kind == "negative_amount":
            assert isinstance(record["amount_cents"], int)
            assert record["amount_cents"] < 0
        elif kind == "unknown_event_type":
            assert record["event_type"] not in EVENT_TYPES
        else:
            assert record["event_type"] in EVENT_TYPES
            assert isinstance(record["event_time_ms"], int)
            assert isinstance(record["amount_cents"], int | None)
            assert record["amount_cents"] is None or record["amount_cents"] >= 100


def test_payloads_are_json_objects_except_truncated(
    many: GeneratedEvents, decoded: list[dict[str, object] | None]
) -> None:
    truncated = many.invalid_kind == "truncated_json"
    assert [record is None for record in decoded] == truncated.tolist()
    assert all(isinstance(record, dict) for record in decoded if record is not None)


def test_event_time_in_payload_is_the_intended_event_time(
    many: GeneratedEvents, decoded: list[dict[str, object] | None]
) -> None:
    for kind, time_ms, record in zip(many.invalid_kind.tolist(), many.event_time_ms.tolist(), decoded, strict=True):
        if record is not None and kind != "missing_event_time":
            assert record["event_time_ms"] == time_ms


def test_event_time_jitter_is_bounded(many: GeneratedEvents) -> None:
    per_partition = CONFIG.rate_per_s / CONFIG.partitions  # type: ignore[operator]
    spaced = START_MS + np.floor(many.offsets * (1000.0 / per_partition)).astype(np.int64)
    jitter = spaced - many.event_time_ms
    assert jitter.min() >= 0
    assert jitter.max() <= CONFIG.max_out_of_order_ms
    assert jitter.max() >= CONFIG.max_out_of_order_ms - 5  # the whole range is used, not a sliver


def test_no_jitter_when_max_out_of_order_is_zero() -> None:
    config = CONFIG.model_copy(update={"max_out_of_order_ms": 0})
    times = event_times(config, 0, np.arange(0, 10, dtype=np.int64), START_MS)
    # 2,000 events/s per partition: one event every 0.5 ms
    assert times.tolist() == [START_MS + offset // 2 for offset in range(10)]


def test_event_time_rate_is_used_when_rate_is_unbounded() -> None:
    config = CONFIG.model_copy(update={"rate_per_s": None, "event_time_rate_per_s": 400, "max_out_of_order_ms": 0})
    times = event_times(config, 0, np.arange(0, 5, dtype=np.int64), 0)
    assert times.tolist() == [0, 10, 20, 30, 40]  # 100 events/s per partition


def test_event_type_mix_matches_the_weights(decoded: list[dict[str, object] | None], many: GeneratedEvents) -> None:
    types = Counter(
        record["event_type"]
        for kind, record in zip(many.invalid_kind.tolist(), decoded, strict=True)
        if record is not None and kind != "unknown_event_type"
    )
    total = sum(types.values())
    assert set(types) == set(EVENT_TYPE_WEIGHTS)
    for name, weight in EVENT_TYPE_WEIGHTS.items():
        assert abs(types[name] / total - weight) < 0.01, (name, types[name] / total)


def test_fields_follow_the_event_type(decoded: list[dict[str, object] | None], many: GeneratedEvents) -> None:
    for kind, record in zip(many.invalid_kind.tolist(), decoded, strict=True):
        if record is None or kind:
            continue
        kind_of_event = record["event_type"]
        assert (record["email"] is not None) == (kind_of_event == "UserRegistered")
        assert (record["amount_cents"] is not None) == (kind_of_event in ("OrderCreated", "PaymentProcessed"))
        assert (record["customer_id"] is None) == (kind_of_event == "InventoryUpdated")
        if kind_of_event == "OrderCreated":
            assert 1 <= record["quantity"] <= 5  # type: ignore[operator]


def test_customers_stay_in_range() -> None:
    config = CONFIG.model_copy(update={"customers": 7, "invalid_fraction": 0.0})
    records = [msgspec.json.decode(p) for p in generate_events(config, 0, 0, 2_000, START_MS).payloads.to_pylist()]
    customers = {record["customer_id"] for record in records if record["customer_id"] is not None}
    assert customers == {f"c{number:05d}" for number in range(7)}


def test_wrong_type_is_made_only_when_named_and_is_a_type_mismatch_dead_letter() -> None:
    """``wrong_type`` (a string where amount_cents is int64) is opt-in: the default mix, and so every seeded
    run's bytes, stay as they were; named, it is an ``invalid`` dead letter that names the column."""
    assert "wrong_type" not in CONFIG.invalid_kinds
    dirty = CONFIG.model_copy(update={"invalid_fraction": 0.05, "invalid_kinds": [*INVALID_KINDS, "wrong_type"]})
    events = generate_events(dirty, 0, 0, 4_096, START_MS)
    wrong = events.invalid_kind == "wrong_type"
    assert wrong.sum() > 0
    assert all(b'"amount_cents":"n/a"' in p for p in np.array(events.payloads.to_pylist(), dtype=object)[wrong])
    clean_kinds = generate_events(CONFIG.model_copy(update={"invalid_fraction": 0.05}), 0, 0, 4_096, START_MS)
    assert "wrong_type" not in set(clean_kinds.invalid_kind.tolist())

    count = len(events.offsets)
    raw = RawBatch("t", 0, pa.array(events.offsets), events.payloads, pa.nulls(count, pa.binary()),
                   pa.nulls(count, pa.int64()), pa.nulls(count, pa.string()))  # fmt: skip
    decoded = JsonDecoder(EventSchema(orders_pipeline().all_inputs[0].schema)).decode(raw)
    reasons = {
        offset: reason
        for batch in decoded.dead_letters
        for offset, reason in zip(batch.column("offset").to_pylist(), batch.column("reason").to_pylist(), strict=True)
    }
    for offset in np.flatnonzero(wrong).tolist():
        assert "'amount_cents' must be int64" in reasons[offset]
