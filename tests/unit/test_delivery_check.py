"""The delivery checker on crafted tables: each fault detected, clean runs pass, verdicts per delivery mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from cluster.commands.verify import _stream_of, fixed_end_offsets, verify_run
from pipelines.config.pipeline import PipelineConfig, load_config, parse_config
from pipelines.errors import ConfigError
from pipelines.io.records import DEAD_LETTER_SCHEMA, RawBatch
from pipelines.io.sinks import DeadLetterSink, JsonlSink
from pipelines.stages.plan import CompiledPipeline, compile_pipeline
from pipelines.verify.delivery_check import (
    COMMITS_SCHEMA,
    EPOCH,
    POSITION,
    SLOT,
    STREAM,
    DeliveryReport,
    ExpectedRun,
    ObservedOutput,
    check_delivery,
    expected_run,
    recompute_windows,
)

SCHEMA: dict[str, Any] = {
    "fields": {"event_id": "string", "t": "int64", "customer": "string", "amount": "int64", "kind": "string"},
    "required": ["event_id", "t"],
    "checks": ["amount >= 0"],
    "event_time_field": "t",
    "event_id_field": "event_id",
}
STATELESS: dict[str, Any] = {
    "name": "stateless",
    "source": {"type": "generator", "partitions": 2},
    "schema": SCHEMA,
    "operators": [{"op": "filter", "expr": 'kind == "keep"'}],
    "sinks": [{"type": "jsonl", "path": "unused"}],
}
AGGREGATE: dict[str, Any] = {
    **STATELESS,
    "name": "windows",
    "aggregate": {
        "key": "customer",
        "window": {"type": "tumbling", "size_ms": 10},
        "aggregations": {
            "n": {"fn": "count"},
            "total": {"fn": "sum", "column": "amount"},
            "avg": {"fn": "mean", "column": "amount"},
        },
    },
}


def _event(partition: int, offset: int, t: int, customer: str = "a", amount: int = 10, kind: str = "keep") -> bytes:
    body = {"event_id": f"{partition}-{offset}", "t": t, "customer": customer, "amount": amount, "kind": kind}
    return json.dumps(body).encode()


def _raw(partition: int, payloads: list[bytes]) -> RawBatch:
    count = len(payloads)
    return RawBatch(
        topic="test",
        partition=partition,
        offsets=pa.array(range(count), pa.int64()),
        payloads=pa.array(payloads, pa.binary()),
        keys=pa.nulls(count, pa.binary()),
        timestamps=pa.nulls(count, pa.int64()),
        traceparents=pa.nulls(count, pa.string()),
    )


def _input() -> list[RawBatch]:
    """Partition 0: 0-0..0-3 kept, 0-4 filtered, 0-5 undecodable. Partition 1: 1-0, 1-1 kept (customer b),
    1-2 invalid (negative amount), 1-3 kept in a later window."""
    return [
        _raw(
            0,
            [
                _event(0, 0, 1),
                _event(0, 1, 2, amount=20),
                _event(0, 2, 3),
                _event(0, 3, 12),
                _event(0, 4, 4, kind="drop"),
                b'{"event_id": "0-5",',
            ],
        ),
        _raw(1, [_event(1, 0, 5, "b"), _event(1, 1, 6, "b", 30), _event(1, 2, 7, "b", -1), _event(1, 3, 15, "b", 5)]),
    ]


def _compiled(data: dict[str, Any]) -> CompiledPipeline:
    config: PipelineConfig = parse_config(data)
    return compile_pipeline(config)


def _expected(compiled: CompiledPipeline) -> ExpectedRun:
    return expected_run(compiled, _input())


def _events(streams: dict[str, list[str]], marks: dict[str, tuple[str, int]] | None = None) -> pa.Table:
    rows: list[dict[str, Any]] = [
        {"_event_id": event_id, STREAM: stream, POSITION: position}
        for stream, ids in streams.items()
        for position, event_id in enumerate(ids)
    ]
    table = pa.Table.from_pylist(rows)
    if marks is not None:
        table = table.append_column(
            SLOT, pa.array([marks.get(row["_event_id"], (None, 0))[0] for row in rows], pa.string())
        )
        table = table.append_column(
            EPOCH, pa.array([marks.get(row["_event_id"], (None, 0))[1] for row in rows], pa.int64())
        )
    return table


def _dead(rows: list[tuple[str, int, int]]) -> pa.Table:
    return pa.Table.from_pylist([{"error_type": e, "partition": p, "offset": o} for e, p, o in rows])


CLEAN_DEAD = [("undecodable", 0, 5), ("invalid", 1, 2)]
CLEAN_STREAMS = {"part-source-0": ["0-0", "0-1", "1-0", "0-2", "1-1", "0-3", "1-3"]}


def _check_events(
    streams: dict[str, list[str]],
    dead: list[tuple[str, int, int]] = CLEAN_DEAD,
    marks: dict[str, tuple[str, int]] | None = None,
    commits: list[tuple[str, int]] | None = None,
) -> DeliveryReport:
    compiled = _compiled(STATELESS)
    committed = (
        None
        if commits is None
        else pa.Table.from_pylist([{"slot": s, "epoch": e} for s, e in commits], schema=COMMITS_SCHEMA)
    )
    output = ObservedOutput("out", _events(streams, marks))
    return check_delivery(compiled, _expected(compiled), [output], _dead(dead), committed)


# --- stateless ------------------------------------------------------------------------------------------------


def test_expected_run_applies_decode_and_operators() -> None:
    expected = _expected(_compiled(STATELESS))
    assert expected.input_records == 10
    assert sorted(expected.events.column("_event_id").to_pylist()) == ["0-0", "0-1", "0-2", "0-3", "1-0", "1-1", "1-3"]
    assert sorted(expected.rejected.select(["partition", "offset"]).to_pylist(), key=str) == [
        {"partition": 0, "offset": 5},
        {"partition": 1, "offset": 2},
    ]


def test_clean_run_reports_nothing_and_passes_both_modes() -> None:
    report = _check_events(CLEAN_STREAMS)
    output = report.outputs[0]
    assert (output.lost.count, output.duplicated.count, output.unexpected.count, output.out_of_order.count) == (
        0,
        0,
        0,
        0,
    )
    assert report.dead_letters.dead_lettered.count == 2
    assert report.failures("exactly_once") == []
    assert report.ok_for("at_least_once")


def test_lost_event_fails_both_modes() -> None:
    report = _check_events({"s": ["0-0", "0-1", "1-0", "0-2", "1-1", "1-3"]})
    assert report.outputs[0].lost.examples == ("0-3",)
    assert not report.ok_for("at_least_once")
    assert not report.ok_for("exactly_once")


def test_duplicate_is_allowed_at_least_once_only() -> None:
    report = _check_events({"a": CLEAN_STREAMS["part-source-0"], "b": ["1-1"]})
    assert report.outputs[0].duplicated.examples == ("1-1",)
    assert report.ok_for("at_least_once")
    assert not report.ok_for("exactly_once")


def test_filtered_event_in_output_is_unexpected() -> None:
    report = _check_events({"s": [*CLEAN_STREAMS["part-source-0"], "0-4"]})
    assert report.outputs[0].unexpected.examples == ("0-4",)
    assert not report.ok_for("at_least_once")


def test_out_of_order_within_a_stream_and_input_partition() -> None:
    report = _check_events({"s": ["0-1", "0-0", "1-0", "0-2", "1-1", "0-3", "1-3"]})
    assert report.outputs[0].out_of_order.examples == ("0-0",)
    assert not report.ok_for("at_least_once")


def test_interleaved_partitions_and_separate_streams_are_in_order() -> None:
    report = _check_events({"x": ["1-0", "0-2", "0-3", "1-3"], "y": ["0-0", "0-1", "1-1"]})
    assert report.outputs[0].out_of_order.count == 0
    assert report.ok_for("exactly_once")


def test_replay_after_recovery_is_duplication_not_disorder() -> None:
    report = _check_events({"s": ["0-0", "0-1", "0-2", "0-1", "0-2", "0-3", "1-0", "1-1", "1-3"]})
    assert report.outputs[0].out_of_order.count == 0
    assert report.outputs[0].duplicated.examples == ("0-1", "0-2")
    assert report.ok_for("at_least_once")


def test_aborted_read_is_a_row_whose_epoch_has_no_commit_marker() -> None:
    marks = {event_id: ("slot-0", 1) for event_id in CLEAN_STREAMS["part-source-0"]}
    marks["1-3"] = ("slot-0", 2)
    report = _check_events(CLEAN_STREAMS, marks=marks, commits=[("slot-0", 1)])
    assert report.outputs[0].aborted_read.examples == ("1-3",)
    assert report.ok_for("at_least_once")
    assert not report.ok_for("exactly_once")
    committed = _check_events(CLEAN_STREAMS, marks=marks, commits=[("slot-0", 1), ("slot-0", 2)])
    assert committed.ok_for("exactly_once")


def test_dead_letter_faults() -> None:
    missing = _check_events(CLEAN_STREAMS, dead=[("invalid", 1, 2)])
    assert missing.dead_letters.missing.examples == ("0:5",)
    assert not missing.ok_for("at_least_once")
    twice = _check_events(CLEAN_STREAMS, dead=[*CLEAN_DEAD, ("invalid", 1, 2)])
    assert twice.dead_letters.duplicated.examples == ("1:2",)
    assert twice.ok_for("at_least_once")
    assert not twice.ok_for("exactly_once")
    stray = _check_events(CLEAN_STREAMS, dead=[*CLEAN_DEAD, ("invalid", 0, 1)])
    assert stray.dead_letters.unexpected.examples == ("0:1",)
    assert not stray.ok_for("at_least_once")
    mistyped = _check_events(CLEAN_STREAMS, dead=[("limit", 0, 5), ("invalid", 1, 2)])
    assert mistyped.dead_letters.wrong_type.examples == ("0:5",)
    assert mistyped.dead_letters.missing.count == 0
    assert mistyped.failures("at_least_once") == ["dead letters: 1 wrong type (e.g. 0:5)"]


# --- windows --------------------------------------------------------------------------------------------------


def _windows(rows: list[tuple[str, int, int, int, float]]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "customer": k,
                "window_start_ms": s,
                "window_end_ms": s + 10,
                "n": n,
                "total": t,
                "avg": a,
                STREAM: "w",
                POSITION: i,
            }
            for i, (k, s, n, t, a) in enumerate(rows)
        ]
    )


CLEAN_WINDOWS = [("a", 0, 3, 40, 40 / 3), ("a", 10, 1, 10, 10.0), ("b", 0, 2, 40, 20.0), ("b", 10, 1, 5, 5.0)]


def _check_windows(
    rows: list[tuple[str, int, int, int, float]], dead: list[tuple[str, int, int]] = CLEAN_DEAD
) -> DeliveryReport:
    compiled = _compiled(AGGREGATE)
    output = ObservedOutput("windows", _windows(rows))
    return check_delivery(compiled, _expected(compiled), [output], _dead(dead))


def test_recompute_windows_groups_once_by_key_and_window() -> None:
    compiled = _compiled(AGGREGATE)
    assert compiled.config.aggregate is not None
    windows = recompute_windows(_expected(compiled).events, compiled.config.aggregate)
    rows = windows.sort_by([("customer", "ascending"), ("window_start_ms", "ascending")]).to_pylist()
    assert [(r["customer"], r["window_start_ms"], r["n"], r["total"], r["avg"]) for r in rows] == CLEAN_WINDOWS


def test_clean_windows_pass_with_float_tolerance() -> None:
    almost = [(k, s, n, t, a * (1 + 1e-12)) for k, s, n, t, a in CLEAN_WINDOWS]
    report = _check_windows(almost)
    windows = report.outputs[0].windows
    assert windows is not None
    assert (windows.expected, windows.observed) == (4, 4)
    assert report.failures("exactly_once") == []


def test_missing_window_fails_both_modes() -> None:
    report = _check_windows(CLEAN_WINDOWS[:-1])
    assert report.outputs[0].windows is not None
    assert report.outputs[0].windows.missing.examples == ("b@10",)
    assert not report.ok_for("at_least_once")


def test_extra_window_fails_both_modes() -> None:
    report = _check_windows([*CLEAN_WINDOWS, ("c", 0, 1, 1, 1.0)])
    assert report.outputs[0].windows is not None
    assert report.outputs[0].windows.extra.examples == ("c@0",)
    assert not report.ok_for("at_least_once")
    assert not report.ok_for("exactly_once")


def test_wrong_value_fails_both_modes() -> None:
    report = _check_windows([*CLEAN_WINDOWS[:3], ("b", 10, 1, 6, 5.0)])
    windows = report.outputs[0].windows
    assert windows is not None
    assert windows.wrong.examples == ("b@10",)
    assert windows.unmatched.examples == ("b@10",)
    assert not report.ok_for("at_least_once")


def test_duplicated_window_with_partial_first_emission_is_at_least_once() -> None:
    report = _check_windows([("a", 0, 2, 30, 15.0), *CLEAN_WINDOWS])
    windows = report.outputs[0].windows
    assert windows is not None
    assert windows.duplicated.examples == ("a@0",)
    assert windows.wrong.examples == ("a@0",)
    assert windows.unmatched.count == 0
    assert report.ok_for("at_least_once")
    assert not report.ok_for("exactly_once")


def test_late_events_are_taken_out_of_expected_windows() -> None:
    late = [*CLEAN_DEAD, ("late", 0, 1)]  # 0-1 (amount 20) missed window a@0
    without_late = [("a", 0, 2, 20, 10.0), *CLEAN_WINDOWS[1:]]
    report = _check_windows(without_late, dead=late)
    assert report.dead_letters.late.examples == ("0:1",)
    assert report.failures("exactly_once") == []
    counted_anyway = _check_windows(CLEAN_WINDOWS, dead=late)  # counted in one attempt, late in another
    assert counted_anyway.outputs[0].windows is not None
    assert counted_anyway.outputs[0].windows.wrong.examples == ("a@0",)
    assert counted_anyway.ok_for("at_least_once")
    assert not counted_anyway.ok_for("exactly_once")


def test_late_dead_letter_without_origin_cannot_be_attributed() -> None:
    report = _check_windows(CLEAN_WINDOWS, dead=[*CLEAN_DEAD, ("late", -1, -1)])
    assert report.dead_letters.unattributed_late.count == 1
    assert not report.ok_for("at_least_once")


def test_late_dead_letter_of_no_input_event_is_unexpected() -> None:
    report = _check_windows(CLEAN_WINDOWS, dead=[*CLEAN_DEAD, ("late", 1, 9)])
    assert report.dead_letters.unexpected.examples == ("1:9",)


# --- readers --------------------------------------------------------------------------------------------------


def test_a_writers_files_form_one_stream() -> None:
    assert _stream_of(Path("part-source-0.jsonl")) == "part-source-0"
    assert _stream_of(Path("part-source-0-s00003.jsonl")) == "part-source-0"
    assert _stream_of(Path("part-agg-1-s00002-00001.parquet")) == "part-agg-1"
    assert _stream_of(Path("part-agg-1-00004.parquet")) == "part-agg-1"


async def test_verify_run_reads_files_of_a_generator_run(tmp_path: Path) -> None:
    """Outputs written with the project's own sinks from the expected results: the readers find them clean."""
    data = {
        "name": "orders-files",
        "source": {"type": "generator", "partitions": 2, "rate_per_s": None, "invalid_fraction": 0.2},
        "schema": {
            "fields": {"event_id": "string", "event_type": "string", "event_time_ms": "int64", "amount_cents": "int64"},
            "required": ["event_id", "event_type", "event_time_ms"],
            "checks": ['event_type in ["OrderCreated", "PaymentProcessed", "UserRegistered", "InventoryUpdated"]'],
            "event_time_field": "event_time_ms",
            "event_id_field": "event_id",
        },
        "operators": [{"op": "filter", "expr": 'event_type == "OrderCreated"'}],
        "sinks": [{"type": "jsonl", "path": str(tmp_path / "out")}],
        "dead_letter": {"type": "jsonl", "path": str(tmp_path / "dead")},
    }
    config = parse_config(data)
    compiled = compile_pipeline(config)
    ends = {0: 300, 1: 250}
    from pipelines.io.generator import generate_events  # noqa: PLC0415

    sink, dead = JsonlSink(str(tmp_path / "out"), "source-0"), DeadLetterSink(str(tmp_path / "dead"), "source-0")
    for partition, end in ends.items():
        generated = generate_events(config.source, partition, 0, end, 0)  # type: ignore[arg-type]
        raw = _raw(partition, generated.payloads.to_pylist())
        decoded = compiled.decode(raw)
        sink.write(compiled.transform(decoded.events).events)
        for batch in decoded.dead_letters:
            dead.write(batch.cast(DEAD_LETTER_SCHEMA))
    sink.close()
    dead.close()
    report = await verify_run(config, fixed_end_offsets(ends))
    assert report.input_records == 550
    assert report.dead_letters.dead_lettered.count > 0
    assert report.failures("exactly_once") == []
    lines = (tmp_path / "out" / "part-source-0.jsonl").read_text().splitlines()
    (tmp_path / "out" / "part-source-0.jsonl").write_text("\n".join(lines[1:]) + "\n")
    broken = await verify_run(config, fixed_end_offsets(ends))
    assert broken.outputs[0].lost.count == 1
    assert not broken.ok_for("at_least_once")


def test_an_upsert_pipeline_is_refused_rather_than_misjudged() -> None:
    compiled = compile_pipeline(load_config(Path(__file__).parents[2] / "configs" / "inventory_upsert.yaml"))

    with pytest.raises(ConfigError, match="keyed upsert pipeline writes a changelog"):
        check_delivery(compiled, expected_run(compiled, []), [], DEAD_LETTER_SCHEMA.empty_table())


# --- a chain: dedup, then windows ------------------------------------------------------------------------------

DEDUP_THEN_WINDOWS: dict[str, Any] = {
    **{key: value for key, value in AGGREGATE.items() if key != "aggregate"},
    "name": "dedup-windows",
    "stages": [
        {"keyed": {"type": "dedup", "id_column": "event_id", "ttl_ms": 100}},
        {"aggregate": AGGREGATE["aggregate"]},
    ],
}


def _with_a_repeat(t: int) -> list[RawBatch]:
    """The clean input, and partition 2 delivering event 0-1 (amount 20, t 2) again, at event time ``t``."""
    again = json.dumps({"event_id": "0-1", "t": t, "customer": "a", "amount": 20, "kind": "keep"}).encode()
    return [*_input(), _raw(2, [again])]


def test_a_chain_counts_a_repeated_event_once_and_takes_a_late_first_copy_out_after_dedup() -> None:
    compiled = _compiled(DEDUP_THEN_WINDOWS)
    expected = expected_run(compiled, _with_a_repeat(t=2))
    clean = check_delivery(compiled, expected, [ObservedOutput("w", _windows(CLEAN_WINDOWS))], _dead(CLEAN_DEAD))
    assert clean.failures("exactly_once") == [], "the repeat of 0-1 counted once, as dedup passes it once"

    # the windows stage judged the first copy of 0-1 late: its repeat, dropped by dedup, does not stand in for it
    late = [*CLEAN_DEAD, ("late", 0, 1)]
    without = [("a", 0, 2, 20, 10.0), *CLEAN_WINDOWS[1:]]
    report = check_delivery(compiled, expected, [ObservedOutput("w", _windows(without))], _dead(late))
    assert report.failures("exactly_once") == []


def test_a_chain_with_a_repeat_beyond_the_dedup_ttl_is_not_recomputed_and_says_why() -> None:
    compiled = _compiled(DEDUP_THEN_WINDOWS)
    expected = expected_run(compiled, _with_a_repeat(t=500))  # 498 ms after its first sighting; ttl 100 ms
    with pytest.raises(ConfigError, match=r"1 event id\(s\) repeat more than keyed.ttl_ms \(100 ms\)"):
        check_delivery(compiled, expected, [ObservedOutput("w", _windows(CLEAN_WINDOWS))], _dead(CLEAN_DEAD))
