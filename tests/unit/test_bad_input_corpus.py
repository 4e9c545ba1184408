"""The bad-input corpus (tests/data/bad_inputs, one class of bad record per file) through the orders pipeline's
decoder and operators, mixed into a fetch of valid generator events: every bad record is dead-lettered exactly
once with its class's error type, every valid event comes through as it does in a clean fetch, and a record's
verdict is the same in the fetch as alone. (Runs through the file source and Kafka are still to come.)"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from pipelines.config.pipeline import GeneratorSourceConfig
from pipelines.config.secrets import resolve_secrets
from pipelines.examples.orders import orders_pipeline
from pipelines.io.generator import generate_events
from pipelines.io.records import RawBatch
from pipelines.stages.plan import compile_pipeline

CORPUS = Path(__file__).resolve().parents[1] / "data" / "bad_inputs"
MANIFEST: dict[str, str | None] = json.loads((CORPUS / "manifest.json").read_text())
COMPILED = compile_pipeline(resolve_secrets(orders_pipeline(), os.environ))  # the mask key, as the driver does
GENERATOR = GeneratorSourceConfig(seed=3, rate_per_s=None, invalid_fraction=0.0)
START_MS = 1_767_225_600_000
FETCH = 2_000


def corpus_records(name: str) -> list[bytes]:
    return (CORPUS / name).read_bytes().split(b"\n")[:-1]


def raw_batch(payloads: list[bytes], timestamps: list[int | None] | None = None) -> RawBatch:
    count = len(payloads)
    return RawBatch(
        topic="orders",
        partition=0,
        offsets=pa.array(np.arange(count), pa.int64()),
        payloads=pa.array(payloads, pa.binary()),
        keys=pa.nulls(count, pa.binary()),
        timestamps=pa.array(timestamps or [None] * count, pa.int64()),
        traceparents=pa.nulls(count, pa.string()),
    )


def outcome(raw: RawBatch) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """Events after the operators, and the error type of each dead-lettered offset (each offset once)."""
    decoded = COMPILED.decode(raw)
    transformed = COMPILED.transform(decoded.events)
    dead: dict[int, str] = {}
    for batch in [*decoded.dead_letters, *transformed.failures_as_dead_letters(raw)]:
        for offset, error_type in zip(batch.column("offset").to_pylist(), batch.column("error_type").to_pylist(),
                                      strict=True):  # fmt: skip
            assert offset not in dead, f"offset {offset} dead-lettered twice"
            dead[offset] = error_type
    return transformed.events.to_pylist(), dead


def mixed(bad: list[bytes]) -> tuple[RawBatch, list[int]]:
    """A fetch of valid generator events with ``bad`` spread through it, and the positions of ``bad``."""
    valid = generate_events(GENERATOR, 0, 0, FETCH, START_MS).payloads.to_pylist()
    positions = np.linspace(0, FETCH + len(bad) - 1, len(bad)).astype(int).tolist()
    payloads = [bad[positions.index(p)] if p in positions else valid.pop(0) for p in range(FETCH + len(bad))]
    return raw_batch(payloads), positions


def without_offsets(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in event.items() if k not in ("_offset", "_partition")} for event in events]


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_every_corpus_record_is_dead_lettered_once_with_its_error_type(name: str) -> None:
    bad = corpus_records(name)
    assert bad, f"{name} holds no records"
    raw, positions = mixed(bad)
    clean_events, clean_dead = outcome(
        raw_batch(generate_events(GENERATOR, 0, 0, FETCH, START_MS).payloads.to_pylist())
    )
    assert clean_dead == {}

    events, dead = outcome(raw)

    expected_type = MANIFEST[name]
    if expected_type is None:  # valid after all (added fields are ignored)
        assert dead == {}
        assert len(events) == len(clean_events) + len(bad), "both orders pass the operators"
        return
    assert dead == dict.fromkeys(positions, expected_type)
    assert without_offsets(events) == without_offsets(clean_events), "the valid events are untouched"
    for position, record in zip(positions, bad, strict=True):  # the same verdict alone
        assert outcome(raw_batch([record]))[1] == {0: expected_type}, (name, position)


@pytest.mark.parametrize(
    ("offset_ms", "error_type"),
    [(2 * 3_600_000, "timestamp"), (3_600_000, None), (-365 * 86_400_000, None)],
)
def test_event_times_far_ahead_of_their_kafka_timestamp_are_dead_lettered(
    offset_ms: int, error_type: str | None
) -> None:
    """max_future_ms (1 h by default) against the record's own Kafka timestamp; the past is open by default, so a
    replay of last year's events is not dead-lettered."""
    payloads = generate_events(GENERATOR, 0, 0, 100, START_MS).payloads.to_pylist()
    event_times = [json.loads(payload)["event_time_ms"] for payload in payloads]
    kafka_times = [time - offset_ms for time in event_times]
    kafka_times[50] = event_times[50]  # one record whose event time is its Kafka time

    _, dead = outcome(raw_batch(payloads, kafka_times))

    expected = {} if error_type is None else {i: error_type for i in range(100) if i != 50}
    assert dead == expected
