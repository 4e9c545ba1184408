"""benchmarks/workloads.py and eventray's W1D pipeline: the dirty feed, its expected output, what eventray does
with each invalid kind, and which systems run W1D.

No broker, no Ray: the generator, and eventray's decode and operators called in this process (the same
``compile_pipeline`` a source actor runs), on a few thousand events.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa

from benchmarks.protocol import RunSpec
from benchmarks.report import WORKLOAD_TITLES
from benchmarks.systems import NOT_RUN_REASONS, SUPPORTED, SYSTEMS, not_run_reason
from benchmarks.systems.eventray_system import NON_NEGATIVE_AMOUNT, pipeline_config
from benchmarks.workloads import (
    ALLOWED_DISORDER_MS,
    DIRTY_INVALID_FRACTION,
    DIRTY_INVALID_KINDS,
    START_TIME_MS,
    WINDOW_MS,
    WORKLOADS,
    WindowKey,
    expected_output,
    generator_config,
    per_partition_events,
)
from pipelines.io.generator import GeneratedEvents, generate_events
from pipelines.io.records import RawBatch
from pipelines.stages.plan import compile_pipeline

EVENTS = 8_000  # 1,000 per partition: ~80 invalid events, each kind several times
REJECTED_KINDS = {"truncated_json", "missing_event_time", "negative_amount", "wrong_type"}


def _generated(dirty: bool) -> list[GeneratedEvents]:
    limits = per_partition_events(EVENTS)
    return [generate_events(generator_config(dirty), p, 0, n, START_TIME_MS) for p, n in enumerate(limits)]


def _recomputed_w1d() -> tuple[dict[WindowKey, tuple[int, int]], int]:
    """W1D's windows and final watermark straight from the dirty generator, with the standard library's json:
    valid OrderCreated events count; the watermark is over valid and unknown-type events (what decodes)."""
    sums: dict[WindowKey, list[int]] = defaultdict(lambda: [0, 0])
    newest = []
    for generated in _generated(dirty=True):
        times = []
        for payload, kind in zip(generated.payloads.to_pylist(), generated.invalid_kind.tolist(), strict=True):
            if kind not in ("", "unknown_event_type"):
                continue
            event = json.loads(payload)
            times.append(event["event_time_ms"])
            if kind == "" and event["event_type"] == "OrderCreated":
                entry = sums[(event["customer_id"], event["event_time_ms"] // WINDOW_MS * WINDOW_MS)]
                entry[0] += 1
                entry[1] += event["amount_cents"]
        newest.append(max(times))
    return {key: (count, total) for key, (count, total) in sums.items()}, min(newest) - ALLOWED_DISORDER_MS


def test_the_dirty_feed_is_the_clean_feed_with_one_percent_invalid_events_of_all_five_kinds() -> None:
    invalid = 0
    kinds: Counter[str] = Counter()
    for clean, dirty in zip(_generated(dirty=False), _generated(dirty=True), strict=True):
        valid = dirty.invalid_kind == ""
        assert (clean.invalid_kind == "").all()
        assert np.array_equal(clean.event_time_ms, dirty.event_time_ms)
        clean_payloads = np.array(clean.payloads.to_pylist(), dtype=object)
        dirty_payloads = np.array(dirty.payloads.to_pylist(), dtype=object)
        assert (clean_payloads[valid] == dirty_payloads[valid]).all()
        assert (clean_payloads[~valid] != dirty_payloads[~valid]).all()
        invalid += int((~valid).sum())
        kinds.update(dirty.invalid_kind[~valid].tolist())
    assert set(kinds) == set(DIRTY_INVALID_KINDS)
    assert 0.5 * DIRTY_INVALID_FRACTION * EVENTS < invalid < 1.5 * DIRTY_INVALID_FRACTION * EVENTS


def test_w1d_expected_output_counts_only_valid_events() -> None:
    windows, final_watermark_ms = _recomputed_w1d()

    expected = expected_output(EVENTS, dirty=True)

    assert expected.dirty
    assert expected.windows == windows
    assert expected.final_watermark_ms == final_watermark_ms
    assert expected.order_events == sum(count for count, _ in windows.values())
    rejected = sum(int(np.isin(g.invalid_kind, list(REJECTED_KINDS)).sum()) for g in _generated(dirty=True))
    assert expected.rejected_events == rejected > 0


def test_w1d_windows_are_w1s_less_exactly_the_orders_made_invalid() -> None:
    """Every (count, revenue) difference from W1 is an OrderCreated event of the clean feed that is invalid in
    the dirty one, and every such event makes one."""
    clean, dirty = expected_output(EVENTS), expected_output(EVENTS, dirty=True)
    lost: dict[WindowKey, list[int]] = defaultdict(lambda: [0, 0])
    for clean_events, dirty_events in zip(_generated(dirty=False), _generated(dirty=True), strict=True):
        payloads = clean_events.payloads.to_pylist()
        for index in np.flatnonzero(dirty_events.invalid_kind != "").tolist():
            event = json.loads(payloads[index])
            if event["event_type"] == "OrderCreated":
                entry = lost[(event["customer_id"], event["event_time_ms"] // WINDOW_MS * WINDOW_MS)]
                entry[0] += 1
                entry[1] += event["amount_cents"]
    assert lost

    difference = {
        key: (count - dirty.windows.get(key, (0, 0))[0], total - dirty.windows.get(key, (0, 0))[1])
        for key, (count, total) in clean.windows.items()
    }

    assert {key: value for key, value in difference.items() if value != (0, 0)} == {
        key: (count, total) for key, (count, total) in lost.items()
    }
    assert dirty.windows.keys() <= clean.windows.keys()
    assert clean.order_events - dirty.order_events == sum(count for count, _ in lost.values())
    assert clean.rejected_events == 0


def _spec(workload: str, tmp_path: Path) -> RunSpec:
    return RunSpec(
        system="eventray", workload=workload, events=EVENTS, order_events=0, work_dir=str(tmp_path / "run"),
        bootstrap="localhost:9092", input_topic="bench-input", output_topic="bench-out",
    )  # fmt: skip


def test_eventray_w1d_is_w1_plus_the_non_negative_amount_check(tmp_path: Path) -> None:
    w1 = pipeline_config(_spec("W1", tmp_path)).model_dump(mode="json", by_alias=True)
    w1d = pipeline_config(_spec("W1D", tmp_path)).model_dump(mode="json", by_alias=True)

    assert w1["schema"]["checks"] == []
    assert w1d["schema"]["checks"] == [NON_NEGATIVE_AMOUNT]
    w1d["schema"]["checks"] = []
    assert {key: value for key, value in w1d.items() if key != "name"} == {
        key: value for key, value in w1.items() if key != "name"
    }


def test_eventray_w1d_sets_aside_exactly_the_invalid_events_and_times_only_what_it_decodes(tmp_path: Path) -> None:
    """What the expected output assumes of eventray: the four rejected kinds are dead letters (before the source
    actor reads the newest event time off the decoded events), unknown types decode and the filter drops them,
    and every valid OrderCreated event reaches the aggregate."""
    compiled = compile_pipeline(pipeline_config(_spec("W1D", tmp_path)))
    for generated in _generated(dirty=True):
        count = len(generated.offsets)
        # no record timestamps: the event-time limits are not checked (produced now, the events are months old)
        raw = RawBatch(
            "bench-input",
            generated.partition,
            pa.array(generated.offsets),
            generated.payloads,
            keys=pa.nulls(count, pa.binary()),
            timestamps=pa.nulls(count, pa.int64()),
            traceparents=pa.nulls(count, pa.string()),
        )
        kinds = generated.invalid_kind

        decoded = compiled.decode(raw)
        transformed = compiled.transform(decoded.events)

        dead = sorted(offset for batch in decoded.dead_letters for offset in batch.column("offset").to_pylist())
        assert dead == generated.offsets[np.isin(kinds, list(REJECTED_KINDS))].tolist()
        accepted = np.isin(kinds, ["", "unknown_event_type"])
        assert decoded.events.column("_offset").to_pylist() == generated.offsets[accepted].tolist()
        assert max(decoded.events.column("_timestamp").to_pylist()) == generated.event_time_ms[accepted].max()
        assert len(transformed.failed_offsets) == 0
        orders = np.array([b'"event_type":"OrderCreated"' in p for p in generated.payloads.to_pylist()])
        assert transformed.events.column("_offset").to_pylist() == generated.offsets[(kinds == "") & orders].tolist()


def test_only_eventray_runs_w1d_right_after_w1_and_the_others_say_why() -> None:
    assert WORKLOADS.index("W1D") == WORKLOADS.index("W1") + 1
    assert set(SUPPORTED) == set(WORKLOADS) == set(WORKLOAD_TITLES)
    assert SUPPORTED["W1D"] == ("eventray",)
    assert not_run_reason("W1D", "eventray") is None
    for system in SYSTEMS:
        for workload in WORKLOADS:
            if system not in SUPPORTED[workload]:
                assert not_run_reason(workload, system) == NOT_RUN_REASONS[workload]
    assert not_run_reason("W1D", "quix") == "no dead-letter path for invalid events"
    assert not_run_reason("W3", "faust") == "needs a Kafka broker (W3 has none)"


def test_the_report_names_the_dirty_fraction_the_workload_uses() -> None:
    """report.py spells out "1 %" (it imports nothing of the benchmark): it must follow the workload."""
    assert f"{DIRTY_INVALID_FRACTION * 100:g} % invalid events" in WORKLOAD_TITLES["W1D"]
